//! The error envelope every rejection leaves in, and the session errors.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::exchange::ExchangeError;

/// The key whose value `1` tells the `weapp-session-client` a body is an error.
pub const ERROR_MAGIC: &str = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A";

/// The body of every answer this crate writes itself (error envelopes, the
/// token routes' JSON).
pub type EnvelopeBody = Full<Bytes>;

/// Build an error response in the session error envelope (docs/protocol.md §3).
///
/// ```
/// use http::StatusCode;
/// let response = weapp_session::error_response(
///     StatusCode::NOT_FOUND, "ERR_NOT_FOUND", "no such route", serde_json::json!({}));
/// assert_eq!(response.status(), 404);
/// ```
pub fn error_response(
    status: StatusCode,
    reason: &str,
    message: &str,
    detail: Value,
) -> http::Response<EnvelopeBody> {
    let body = json!({
        ERROR_MAGIC: 1,
        "reason": reason,
        "error": {"name": "SessionError", "message": message, "detail": detail},
    });
    let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

/// Why the session layer rejected a request (or why an extractor could not run).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A code-only or token request whose session is gone.
    #[error("the session has expired or does not exist; log in again")]
    SessionExpired,
    /// The WeChat code exchange failed.
    #[error("exchanging the login code with WeChat failed: {0}")]
    KeyExchangeFailed(ExchangeError),
    /// The signature is missing, malformed or does not match.
    #[error("the user info signature is {0}")]
    UntrustedRawData(&'static str),
    /// rawData could not be decoded or is not a JSON object.
    #[error("invalid rawData: {0}")]
    InvalidRawData(String),
    /// The session store did not answer within its bound.
    #[error("the session store is unavailable; try again later")]
    StoreUnavailable,
    /// A protected route was called without an identity.
    #[error("this route needs a logged-in WeChat user")]
    NotLoggedIn,
    /// A rate limit was hit.
    #[error("too many login attempts; slow down")]
    TooManyRequests,
    /// The instance-wide budget of code exchanges per second is spent.
    #[error("the gateway is handling too many logins right now; try again in a moment")]
    ExchangeBudgetSpent,
    /// A login body larger than the configured limit.
    #[error("the login body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// Login/logout called with a method other than POST.
    #[error("use POST for this route")]
    MethodNotAllowed,
    /// A malformed login/logout request body.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The login body did not arrive within the server's body-read deadline.
    #[error("the request body arrived too slowly")]
    RequestTimeout,
    /// The extractor ran on a route the layer does not cover.
    #[error("can't extract the WeChat session: is WxSessionLayer enabled for this route?")]
    LayerMissing,
}

impl SessionError {
    /// The `reason` string of the envelope.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SessionExpired => "ERR_SESSION_EXPIRED",
            Self::KeyExchangeFailed(_) => "ERR_SESSION_KEY_EXCHANGE_FAILED",
            Self::UntrustedRawData(_) => "ERR_UNTRUSTED_RAW_DATA",
            Self::InvalidRawData(_) => "ERR_INVALID_RAW_DATA",
            Self::StoreUnavailable => "ERR_SESSION_STORE_UNAVAILABLE",
            Self::NotLoggedIn => "ERR_NOT_LOGGED_IN",
            Self::TooManyRequests | Self::ExchangeBudgetSpent => "ERR_TOO_MANY_REQUESTS",
            Self::InvalidRequest(_) => "ERR_INVALID_REQUEST",
            Self::BodyTooLarge(_) => "ERR_PAYLOAD_TOO_LARGE",
            Self::MethodNotAllowed => "ERR_METHOD_NOT_ALLOWED",
            Self::RequestTimeout => "ERR_REQUEST_TIMEOUT",
            Self::LayerMissing => "ERR_SESSION_LAYER_MISSING",
        }
    }

    /// The honest HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::SessionExpired | Self::UntrustedRawData(_) | Self::NotLoggedIn => {
                StatusCode::UNAUTHORIZED
            }
            Self::KeyExchangeFailed(e) => match e {
                // -1 "system busy" (still, after the one retry) is WeChat's
                // trouble, not a bad code.
                ExchangeError::WeChat { errcode: -1, .. } => StatusCode::SERVICE_UNAVAILABLE,
                ExchangeError::WeChat { .. } => StatusCode::UNAUTHORIZED,
                ExchangeError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                ExchangeError::Unreachable(_) | ExchangeError::BadResponse(_) => {
                    StatusCode::BAD_GATEWAY
                }
            },
            Self::InvalidRawData(_) | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests | Self::ExchangeBudgetSpent => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::LayerMissing => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The text sent to the client. Transport and parse failures keep their
    /// cause for the log only: the client learns that WeChat failed, not how.
    fn client_message(&self) -> String {
        match self {
            Self::KeyExchangeFailed(ExchangeError::Unreachable(_)) => {
                "exchanging the login code with WeChat failed: WeChat could not be reached; try \
                 again later"
                    .into()
            }
            Self::KeyExchangeFailed(ExchangeError::BadResponse(_)) => {
                "exchanging the login code with WeChat failed: WeChat answered something \
                 unexpected; try again later"
                    .into()
            }
            _ => self.to_string(),
        }
    }

    fn detail(&self) -> Value {
        match self {
            Self::KeyExchangeFailed(ExchangeError::WeChat { errcode, errmsg }) => {
                json!({"errcode": errcode, "errmsg": errmsg})
            }
            _ => json!({}),
        }
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for SessionError {
    fn into_response(self) -> axum::response::Response {
        self.to_response().map(axum::body::Body::new)
    }
}

impl SessionError {
    /// This error as an HTTP answer in the envelope (with `Retry-After` where
    /// it applies); logs what the client is not told.
    pub fn to_response(&self) -> http::Response<EnvelopeBody> {
        match &self {
            Self::LayerMissing => tracing::error!("{self}"),
            Self::KeyExchangeFailed(ExchangeError::WeChat { .. }) => {}
            Self::KeyExchangeFailed(_) => {
                crate::warn_limited!(error = %self, "code exchange failed")
            }
            _ => {}
        }
        let mut response =
            error_response(self.status(), self.reason(), &self.client_message(), self.detail());
        let retry_after = match *self {
            Self::TooManyRequests => Some("60"),
            // The budget refills every 1/per_second.
            Self::ExchangeBudgetSpent => Some("1"),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        response
    }
}

/// A budget of one WARN line per second for one call site, so an outage
/// (every request failing the same way) logs a line a second, not a line a
/// request. `admit` says whether to log now and how many lines it suppressed
/// since the last one. Use one `static` per call site.
#[doc(hidden)]
pub struct WarnBudget {
    /// Milliseconds since [`log_epoch`] of the last admitted line, plus one (0: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

/// `tracing::warn!` through a [`WarnBudget`] of its own call site: at most
/// one line a second, each with `suppressed` = the lines held back before it.
#[doc(hidden)]
#[macro_export]
macro_rules! warn_limited {
    ($($field:tt)+) => {{
        static BUDGET: $crate::WarnBudget = $crate::WarnBudget::new();
        if let Some(suppressed) = BUDGET.admit() {
            $crate::__private::tracing::warn!(suppressed, $($field)+);
        }
    }};
}

/// [`warn_limited!`] at ERROR level: one line a second per call site.
#[doc(hidden)]
#[macro_export]
macro_rules! error_limited {
    ($($field:tt)+) => {{
        static BUDGET: $crate::WarnBudget = $crate::WarnBudget::new();
        if let Some(suppressed) = BUDGET.admit() {
            $crate::__private::tracing::error!(suppressed, $($field)+);
        }
    }};
}

/// The time origin of every [`WarnBudget`].
fn log_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Default for WarnBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl WarnBudget {
    /// At most one line per this interval.
    const INTERVAL_MS: u64 = 1_000;

    /// A fresh budget (const, for a `static`).
    pub const fn new() -> Self {
        Self { last_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(lines suppressed since the last admitted one)` when a line may be
    /// logged now, else `None` (and the line is counted as suppressed).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(u64::try_from(log_epoch().elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn admit_at(&self, now_ms: u64) -> Option<u64> {
        let stamp = now_ms.saturating_add(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || stamp.saturating_sub(last) >= Self::INTERVAL_MS;
        if due
            && self
                .last_ms
                .compare_exchange(last, stamp, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: SessionError) -> (StatusCode, Value) {
        use http_body_util::BodyExt;
        let response = e.to_response();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn transport_causes_stay_in_the_log() {
        let cause = "error sending request: tcp connect error 10.1.2.3:443";
        let (status, body) =
            body_of(SessionError::KeyExchangeFailed(ExchangeError::Unreachable(cause.into())))
                .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("WeChat could not be reached"), "{message}");
        assert!(!message.contains("10.1.2.3"), "{message}");
        assert_eq!(body[ERROR_MAGIC], 1);
        assert_eq!(body["reason"], "ERR_SESSION_KEY_EXCHANGE_FAILED");
    }

    #[test]
    fn warn_budget_admits_one_line_per_second_and_counts_the_rest() {
        let budget = WarnBudget::new();
        assert_eq!(budget.admit_at(0), Some(0));
        for ms in 1..1_000 {
            assert_eq!(budget.admit_at(ms), None, "{ms}");
        }
        assert_eq!(budget.admit_at(1_000), Some(999));
        assert_eq!(budget.admit_at(1_500), None);
        assert_eq!(budget.admit_at(2_000), Some(1));
    }

    #[tokio::test]
    async fn the_exchange_budget_is_a_429_with_retry_after() {
        let response = SessionError::ExchangeBudgetSpent.to_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let (_, body) = body_of(SessionError::ExchangeBudgetSpent).await;
        assert_eq!(body["reason"], "ERR_TOO_MANY_REQUESTS");
        let response = SessionError::TooManyRequests.to_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "60");
    }

    #[tokio::test]
    async fn wechat_errcodes_reach_the_client_in_detail() {
        let e = ExchangeError::WeChat { errcode: 40029, errmsg: "invalid code".into() };
        let (status, body) = body_of(SessionError::KeyExchangeFailed(e)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["detail"], json!({"errcode": 40029, "errmsg": "invalid code"}));
    }
}
