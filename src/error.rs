//! `AppError`: every handler error leaves in the session error envelope.
//! Internal causes are logged, not sent.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::data::DataError;
use crate::session::{SessionError, error_response};
use crate::session::{error_limited, warn_limited};
use crate::wechat::{DecryptError, WeChatError};

/// Why a gateway handler failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A session-layer error (not logged in, store down…).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The request is malformed or a value is out of range.
    #[error("{0}")]
    InvalidRequest(String),
    /// Encrypted data did not decrypt with the session's key, or is malformed.
    ///
    /// Every key-dependent failure ([`DecryptError::is_key_dependent`]: bad
    /// padding, not a JSON object, another app's watermark, stale data)
    /// answers byte for byte the same: one message, `detail: {}`. Telling
    /// them apart would be a CBC padding oracle. The kind is logged at debug
    /// level only.
    #[error("{}", decrypt_message(.0))]
    Decrypt(DecryptError),
    /// The request body is larger than the route accepts.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// The client did not send the body within `server.body_timeout`.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// The request did not finish within `server.request_timeout`.
    #[error("the request took too long; try again later")]
    GatewayTimeout,
    /// The route exists but not for this method.
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    /// The caller is not a proven member of the group.
    #[error("you are not a member of this group's PK; open the group's share card first")]
    NotAMember,
    /// The caller is not the notice's author.
    #[error("only the author can change this notice")]
    NotAuthor,
    /// No such resource.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Content security judged the text risky.
    #[error("the content did not pass WeChat's content security check")]
    ContentRisky,
    /// The admin token is missing or wrong.
    #[error("this route needs the admin bearer token")]
    AdminUnauthorized,
    /// Message-push signature mismatch, or a signed push whose `timestamp` is
    /// too far from now (a replay): one answer for both.
    #[error("the WeChat signature does not match")]
    BadPushSignature,
    /// A per-user or per-address limit is used up; retry after the delay.
    #[error("too many {what}; try again in {} s", retry_after.as_secs())]
    TooManyRequests {
        /// What was counted ("notice posts today", …).
        what: &'static str,
        /// When the caller may try again (sent as `Retry-After`).
        retry_after: std::time::Duration,
    },
    /// The data store did not answer within its bound (or, for the memory
    /// store, is full).
    #[error("{}", storage_message(.0))]
    Storage(DataError),
    /// A WeChat server API call failed.
    #[error("a WeChat API call failed")]
    WeChat(WeChatError),
    /// The access token for a server-side WeChat call could not be obtained
    /// (`stable_token` failed: a wrong AppSecret 40125, a server IP missing
    /// from the whitelist 40164, …) or WeChat rejected even a freshly
    /// refreshed one: the gateway's problem, never the request's.
    #[error("a WeChat API call failed: the gateway could not get a usable access token")]
    AccessToken(WeChatError),
}

impl AppError {
    /// The envelope's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Session(e) => e.reason(),
            Self::InvalidRequest(_) => "ERR_INVALID_REQUEST",
            Self::Decrypt(_) => "ERR_DECRYPT_FAILED",
            Self::PayloadTooLarge => "ERR_PAYLOAD_TOO_LARGE",
            Self::RequestTimeout => "ERR_REQUEST_TIMEOUT",
            Self::GatewayTimeout => "ERR_GATEWAY_TIMEOUT",
            Self::MethodNotAllowed => "ERR_METHOD_NOT_ALLOWED",
            Self::NotAMember => "ERR_NOT_A_MEMBER",
            Self::NotAuthor => "ERR_FORBIDDEN",
            Self::NotFound(_) => "ERR_NOT_FOUND",
            Self::ContentRisky => "ERR_CONTENT_RISKY",
            Self::AdminUnauthorized => "ERR_ADMIN_UNAUTHORIZED",
            Self::BadPushSignature => "ERR_BAD_SIGNATURE",
            Self::TooManyRequests { .. } => "ERR_TOO_MANY_REQUESTS",
            Self::Storage(DataError::Full(_)) => "ERR_STORAGE_FULL",
            Self::Storage(_) => "ERR_STORAGE_UNAVAILABLE",
            Self::WeChat(_) | Self::AccessToken(_) => "ERR_WECHAT_API_FAILED",
        }
    }

    /// The honest status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Session(e) => e.status(),
            Self::InvalidRequest(_) | Self::Decrypt(_) => StatusCode::BAD_REQUEST,
            Self::NotAMember | Self::NotAuthor | Self::BadPushSignature => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Storage(DataError::Full(_)) => StatusCode::INSUFFICIENT_STORAGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::ContentRisky => StatusCode::UNPROCESSABLE_ENTITY,
            Self::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            Self::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::WeChat(WeChatError::Timeout) | Self::AccessToken(WeChatError::Timeout) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            // Still "system busy" after the one retry: WeChat's trouble, not the request's.
            Self::WeChat(WeChatError::Api { errcode: -1, .. })
            | Self::AccessToken(WeChatError::Api { errcode: -1, .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // The errcode is about this request (e.g. 40029: a bad phone code).
            Self::WeChat(WeChatError::Api { .. }) => StatusCode::BAD_REQUEST,
            // Unreachable, garbage, or any errcode while getting the token.
            Self::WeChat(_) | Self::AccessToken(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn detail(&self) -> Value {
        match self {
            Self::WeChat(WeChatError::Api { errcode, errmsg })
            | Self::AccessToken(WeChatError::Api { errcode, errmsg }) => {
                json!({"errcode": errcode, "errmsg": errmsg})
            }
            _ => json!({}),
        }
    }
}

/// The one message of every key-dependent decryption failure.
pub const DECRYPT_FAILED_MESSAGE: &str = "the encrypted data could not be decrypted with this \
     session; call wx.login again, log in, and fetch the data again";

/// Key-dependent failures share one message ([`DECRYPT_FAILED_MESSAGE`]); a
/// malformed input (base64, lengths: the same whatever the key) is the
/// client's bug and may say what is wrong.
fn decrypt_message(e: &DecryptError) -> String {
    match e {
        _ if e.is_key_dependent() => DECRYPT_FAILED_MESSAGE.to_owned(),
        DecryptError::BadKeyLength(_) | DecryptError::BadBase64 { field: "session_key" } => {
            format!("the session's key is unusable ({e}); log in again")
        }
        _ => format!(
            "the encrypted data is malformed ({e}); send encryptedData and iv as WeChat gave them"
        ),
    }
}

fn storage_message(e: &DataError) -> &'static str {
    match e {
        DataError::Full(_) => "the data store is full; delete something or try again later",
        _ => "the data store is unavailable; try again later",
    }
}

/// Answers `ERR_METHOD_NOT_ALLOWED` in the envelope (the router's 405 fallback).
pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// Answers `404 ERR_NOT_FOUND` "no such route" in the envelope (the router's
/// fallback).
pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "ERR_NOT_FOUND", "no such route", json!({}))
        .into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            Self::Session(e) => return e.clone().into_response(),
            // One line a second per site: an outage fails every request.
            Self::Storage(e) => warn_limited!(error = %e, "data store failed"),
            Self::WeChat(e) => warn_limited!(error = %e, "WeChat API call failed"),
            Self::AccessToken(e) => error_limited!(
                error = %e,
                "no usable WeChat access token (check wechat.app_id, the AppSecret and the \
                 API IP whitelist)"
            ),
            _ => {}
        }
        let mut response =
            error_response(self.status(), self.reason(), &self.to_string(), self.detail())
                .map(axum::body::Body::new);
        if let Self::TooManyRequests { retry_after, .. } = &self {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after.as_secs().max(1)),
            );
        }
        response
    }
}

impl From<DataError> for AppError {
    fn from(e: DataError) -> Self {
        Self::Storage(e)
    }
}

impl From<DecryptError> for AppError {
    fn from(e: DecryptError) -> Self {
        Self::Decrypt(e)
    }
}

impl From<WeChatError> for AppError {
    fn from(e: WeChatError) -> Self {
        Self::WeChat(e)
    }
}

impl AppError {
    /// The answer of an [`crate::wechat::AccessTokens`] `try_*` call as a
    /// handler result: the outer error is the access token's
    /// ([`AppError::AccessToken`], 502), the inner one the call's
    /// ([`AppError::WeChat`]).
    pub fn wechat_call<T>(answer: Result<Result<T, WeChatError>, WeChatError>) -> Result<T, Self> {
        answer.map_err(Self::AccessToken)?.map_err(Self::WeChat)
    }
}

/// `Json<T>` whose rejection is an [`AppError`] envelope (400), not axum's text.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(AppError::PayloadTooLarge),
            Err(e) if is_body_timeout(&e) => Err(AppError::RequestTimeout),
            Err(e) => Err(AppError::InvalidRequest(json_rejection(&e))),
        }
    }
}

/// Whether `e` (or anything in its source chain) is the body-read deadline
/// of `server.body_timeout` running out, or shutdown cutting a body that was
/// still arriving.
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if is_body_deadline(err) {
            return true;
        }
        next = err.source();
    }
    false
}

/// Whether `err` itself (not its sources) is one of the gateway's body
/// deadlines; the session layer walks the source chain with it.
pub fn is_body_deadline(err: &(dyn std::error::Error + 'static)) -> bool {
    err.is::<tower_http::timeout::TimeoutError>() || err.is::<crate::server::DrainCut>()
}

fn json_rejection(e: &JsonRejection) -> String {
    format!("invalid JSON body: {}", e.body_text())
}

/// `Query<T>` whose rejection is an [`AppError`] envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for AppQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| AppError::InvalidRequest(e.body_text()))
    }
}

/// `Path<T>` whose rejection is an [`AppError`] envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for AppPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| AppError::InvalidRequest(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(errcode: i64) -> WeChatError {
        WeChatError::Api { errcode, errmsg: "x".into() }
    }

    #[test]
    fn access_token_failures_are_the_gateways_and_call_errcodes_the_requests() {
        let cases = [
            (AppError::WeChat(api(40029)), StatusCode::BAD_REQUEST),
            (AppError::WeChat(api(-1)), StatusCode::SERVICE_UNAVAILABLE),
            (AppError::WeChat(WeChatError::Timeout), StatusCode::GATEWAY_TIMEOUT),
            (
                AppError::WeChat(WeChatError::Unreachable("HTTP 500".into())),
                StatusCode::BAD_GATEWAY,
            ),
            (AppError::AccessToken(api(40125)), StatusCode::BAD_GATEWAY),
            (AppError::AccessToken(api(40164)), StatusCode::BAD_GATEWAY),
            (AppError::AccessToken(api(40001)), StatusCode::BAD_GATEWAY),
            (AppError::AccessToken(api(-1)), StatusCode::SERVICE_UNAVAILABLE),
            (AppError::AccessToken(WeChatError::Timeout), StatusCode::GATEWAY_TIMEOUT),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err:?}");
            assert_eq!(err.reason(), "ERR_WECHAT_API_FAILED");
        }
        let detail = AppError::AccessToken(api(40125)).detail();
        assert_eq!(detail, json!({"errcode": 40125, "errmsg": "x"}));
    }

    #[test]
    fn key_dependent_decrypt_failures_answer_alike() {
        let answers: Vec<(StatusCode, &str, String, Value)> = [
            DecryptError::BadPadding,
            DecryptError::NotJson,
            DecryptError::WatermarkMismatch,
            DecryptError::Stale,
        ]
        .into_iter()
        .map(AppError::Decrypt)
        .map(|e| (e.status(), e.reason(), e.to_string(), e.detail()))
        .collect();
        let first = (
            StatusCode::BAD_REQUEST,
            "ERR_DECRYPT_FAILED",
            DECRYPT_FAILED_MESSAGE.to_owned(),
            json!({}),
        );
        assert!(answers.iter().all(|a| *a == first), "{answers:?}");
        // Malformed input may say what is wrong, still without a detail.
        let malformed = AppError::Decrypt(DecryptError::BadIvLength(3));
        assert!(malformed.to_string().contains("malformed"), "{malformed}");
        assert_eq!(malformed.detail(), json!({}));
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn wechat_call_puts_the_outer_error_on_the_token() {
        let token: Result<Result<(), _>, _> = Err(api(40125));
        assert!(matches!(AppError::wechat_call(token), Err(AppError::AccessToken(_))));
        let call: Result<Result<(), _>, _> = Ok(Err(api(40029)));
        assert!(matches!(AppError::wechat_call(call), Err(AppError::WeChat(_))));
        assert!(AppError::wechat_call::<u8>(Ok(Ok(7))).is_ok_and(|v| v == 7));
    }
}
