//! The token dialect's login and logout, as routes a service chooses to mount.
//!
//! The layer never answers them by itself: mount [`token_routes`] (axum) at
//! the paths of your choice, or call [`token_login`] / [`token_logout`] from
//! any other server.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use super::error::{EnvelopeBody, SessionError};
use super::layer::client_ip;
use super::login::{SessionEngine, TokenLoginRequest};

/// `POST` token login: reads `{code, rawData?, signature?}` (bounded by the
/// engine's `max_login_body`), exchanges the code once and answers
/// `{token, expiresIn, user}` or the error envelope. Works with any server:
///
/// ```
/// # async fn demo(engine: &weapp_session::SessionEngine) {
/// let request = http::Request::post("/login").body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}"))).unwrap();
/// let response = weapp_session::token_login(engine, request).await;
/// assert_eq!(response.status(), 400); // no code in the body
/// # }
/// ```
pub async fn token_login<B>(engine: &SessionEngine, req: Request<B>) -> http::Response<EnvelopeBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    let client = client_ip(&req);
    let limit = engine.config().max_login_body();
    let bytes = match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return SessionError::BodyTooLarge(limit).to_response();
        }
        Err(e) if is_deadline(&*e, engine.config().body_timeout_error) => {
            return SessionError::RequestTimeout.to_response();
        }
        Err(_) => {
            return SessionError::InvalidRequest("the login body could not be read".into())
                .to_response();
        }
    };
    let request: TokenLoginRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("expected {{\"code\", \"rawData\"?, \"signature\"?}}: {e}");
            return SessionError::InvalidRequest(why).to_response();
        }
    };
    match engine.token_login(request, client).await {
        Ok(answer) => match serde_json::to_vec(&*answer) {
            Ok(body) => json_response(body),
            Err(_) => SessionError::InvalidRequest("unanswerable login".into()).to_response(),
        },
        Err(e) => e.to_response(),
    }
}

/// `POST` token logout: revokes the token in `X-WX-Skey` /
/// `Authorization: Bearer` and answers `{"ok": true}`, or
/// `401 ERR_NOT_LOGGED_IN` when there is no live token.
///
/// ```
/// # async fn demo(engine: &weapp_session::SessionEngine) {
/// let response = weapp_session::token_logout(engine, &http::HeaderMap::new()).await;
/// assert_eq!(response.status(), 401);
/// # }
/// ```
pub async fn token_logout(
    engine: &SessionEngine,
    headers: &http::HeaderMap,
) -> http::Response<EnvelopeBody> {
    match engine.logout(headers).await {
        Ok(true) => json_response(b"{\"ok\":true}".to_vec()),
        Ok(false) => SessionError::NotLoggedIn.to_response(),
        Err(e) => e.to_response(),
    }
}

/// Token login at `login_path` and logout at `logout_path` (both `POST`;
/// other methods answer `405 ERR_METHOD_NOT_ALLOWED` in the envelope), as an
/// axum router to merge beside the routes the layer wraps. Merge it *after*
/// `.layer(WxSessionLayer)`, so a login that still carries an old token is
/// not rejected by the layer first:
///
/// ```
/// use axum::{Router, routing::get};
/// use weapp_session::{MemoryStore, WxSession, WxSessionLayer, token_routes};
/// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged};
/// # struct WeChat;
/// # #[async_trait::async_trait]
/// # impl CodeExchanger for WeChat {
/// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
/// # }
/// let layer = WxSessionLayer::builder(MemoryStore::new(10_000), WeChat).build();
/// let app: Router = Router::new()
///     .route("/api/me", get(|user: WxSession| async move { user.openid().to_owned() }))
///     .layer(layer.clone())
///     .merge(token_routes(layer.engine().clone(), "/api/login", "/api/logout"));
/// # let _ = app;
/// ```
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub fn token_routes(
    engine: std::sync::Arc<SessionEngine>,
    login_path: &str,
    logout_path: &str,
) -> axum::Router {
    use axum::response::IntoResponse;
    use axum::routing::post;
    let not_allowed = || async { SessionError::MethodNotAllowed.into_response() };
    let login_engine = engine.clone();
    axum::Router::new()
        .route(
            login_path,
            post(move |req: axum::extract::Request| async move {
                token_login(&login_engine, req).await.into_response()
            })
            .fallback(not_allowed),
        )
        .route(
            logout_path,
            post(move |headers: http::HeaderMap| async move {
                token_logout(&engine, &headers).await.into_response()
            })
            .fallback(not_allowed),
        )
}

fn json_response(body: Vec<u8>) -> http::Response<EnvelopeBody> {
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// Whether a body-read error (or anything in its source chain) is a deadline
/// running out: an `io::Error` of kind `TimedOut`, or what `custom` says.
fn is_deadline(
    e: &(dyn std::error::Error + 'static),
    custom: fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        let timed_out = err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if timed_out || custom(err) {
            return true;
        }
        next = err.source();
    }
    false
}
