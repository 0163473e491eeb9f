//! `WxSessionLayer` and its service.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use tower::{Layer, Service};

use super::error::SessionError;
use super::identity::{LayerSeen, UserTag};
use super::login::{TokenLoginRequest, WxSessions};

/// The client address a trusted front (e.g. the gateway's proxy handling) has
/// established; the layer prefers it over the socket peer for rate limits.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

/// Tower layer that recognises WeChat mini-program users (both dialects) and
/// puts a [`WxSession`] into the request extensions.
///
/// Rejections are `Ok` responses in the error envelope; the service's error
/// type is the inner service's.
#[derive(Clone, Debug)]
pub struct WxSessionLayer {
    sessions: Arc<WxSessions>,
}

impl WxSessionLayer {
    /// A layer over a session engine.
    pub fn new(sessions: Arc<WxSessions>) -> Self {
        Self { sessions }
    }
}

impl<S> Layer<S> for WxSessionLayer {
    type Service = WxSessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WxSessionService { inner, sessions: self.sessions.clone() }
    }
}

/// The service [`WxSessionLayer`] produces.
#[derive(Clone, Debug)]
pub struct WxSessionService<S> {
    inner: S,
    sessions: Arc<WxSessions>,
}

impl<S> WxSessionService<S> {
    /// Wrap `inner` directly.
    pub fn new(inner: S, sessions: Arc<WxSessions>) -> Self {
        Self { inner, sessions }
    }

    /// A layer producing this service.
    pub fn layer(sessions: Arc<WxSessions>) -> WxSessionLayer {
        WxSessionLayer::new(sessions)
    }
}

/// The response future of [`WxSessionService`].
pub type ResponseFuture<E> = BoxFuture<'static, Result<Response, E>>;

fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    if let Some(ClientIp(ip)) = req.extensions().get::<ClientIp>() {
        return Some(*ip);
    }
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

enum Route {
    Login,
    Logout,
    Other,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WxSessionService<S>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<axum::BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone may not be ready; swap so the one we polled is the one we call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let sessions = self.sessions.clone();
        let path = req.uri().path();
        if sessions.is_ignored(path) {
            return Box::pin(async move { Ok(inner.call(req).await?.map(Body::new)) });
        }
        let cfg = sessions.config();
        let is_session_route = |p: &Option<String>| p.as_deref() == Some(path);
        let route = match *req.method() {
            Method::POST if is_session_route(&cfg.login_path) => Route::Login,
            Method::POST if is_session_route(&cfg.logout_path) => Route::Logout,
            _ if is_session_route(&cfg.login_path) || is_session_route(&cfg.logout_path) => {
                return Box::pin(async { Ok(SessionError::MethodNotAllowed.into_response()) });
            }
            _ => Route::Other,
        };
        Box::pin(async move {
            match route {
                Route::Login => return Ok(token_login(&sessions, req).await),
                Route::Logout => return Ok(logout(&sessions, req.into_parts().0.headers).await),
                Route::Other => {}
            }
            let client = client_ip(&req);
            let session = match sessions.authenticate(req.headers(), client).await {
                Ok(session) => session,
                Err(e) => return Ok(e.into_response()),
            };
            let tag = session.as_ref().map(|s| UserTag(s.clone()));
            req.extensions_mut().insert(LayerSeen);
            if let Some(session) = session {
                req.extensions_mut().insert(session);
            }
            let mut response = inner.call(req).await?.map(Body::new);
            if let Some(tag) = tag {
                response.extensions_mut().insert(tag);
            }
            Ok(response)
        })
    }
}

async fn token_login<B>(sessions: &WxSessions, req: Request<B>) -> Response
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let client = client_ip(&req);
    let limit = sessions.config().max_login_body;
    let bytes = match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return SessionError::BodyTooLarge(limit).into_response();
        }
        Err(e) if crate::error::is_body_timeout(&*e) => {
            return crate::error::AppError::RequestTimeout.into_response();
        }
        Err(_) => {
            return SessionError::InvalidRequest("the login body could not be read".into())
                .into_response();
        }
    };
    let request: TokenLoginRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("expected {{\"code\", \"rawData\"?, \"signature\"?}}: {e}");
            return SessionError::InvalidRequest(why).into_response();
        }
    };
    match sessions.token_login(request, client).await {
        Ok(answer) => axum::Json(&*answer).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn logout(sessions: &WxSessions, headers: http::HeaderMap) -> Response {
    match sessions.logout(&headers).await {
        Ok(true) => (StatusCode::OK, axum::Json(serde_json::json!({"ok": true}))).into_response(),
        Ok(false) => SessionError::NotLoggedIn.into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    //! The layer driven as a tower service, no network: a mock exchanger and
    //! the memory store.
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use axum::Router;
    use axum::routing::get;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::session::{
        CodeExchanger, ExchangeError, Exchanged, MemoryStore, SessionConfig, WxSession,
    };

    /// A session_key shaped like WeChat's (base64 of 16 bytes).
    const KEY: &str = "HyVFkGl5F5OQWJZZaNzBBg==";

    struct Mock {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl CodeExchanger for Mock {
        async fn code2session(&self, code: &str) -> Result<Exchanged, ExchangeError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if code == "good" {
                Ok(Exchanged { openid: "o1".into(), session_key: KEY.into(), unionid: None })
            } else {
                Err(ExchangeError::WeChat { errcode: 40029, errmsg: "invalid code".into() })
            }
        }
    }

    fn sessions() -> (Arc<WxSessions>, Arc<Mock>) {
        let mock = Arc::new(Mock { calls: AtomicUsize::new(0) });
        let store = Arc::new(MemoryStore::new(100));
        (Arc::new(WxSessions::new(store, mock.clone(), SessionConfig::default())), mock)
    }

    async fn echo(req: Request<Body>) -> Result<Response, std::convert::Infallible> {
        let who = req.extensions().get::<WxSession>().map(|s| s.openid().to_owned());
        Ok(Response::new(Body::from(who.unwrap_or_else(|| "anonymous".into()))))
    }

    async fn text(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn logs_in_and_hands_the_identity_to_the_inner_service() {
        let (sessions, mock) = sessions();
        let svc = ServiceBuilder::new().layer(WxSessionLayer::new(sessions)).service_fn(echo);
        let raw = "{\"nickName\":\"n\"}";
        let sig = {
            use sha1::Digest;
            hex::encode(sha1::Sha1::digest(format!("{raw}{KEY}").as_bytes()))
        };
        let req = Request::get("/x")
            .header("x-wx-code", "good")
            .header("x-wx-rawdata", "%7B%22nickName%22%3A%22n%22%7D")
            .header("x-wx-signature", sig)
            .body(Body::empty())
            .unwrap();
        let (status, body) = text(svc.clone().oneshot(req).await.unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "o1"));
        let req = Request::get("/x").header("x-wx-code", "good").body(Body::empty()).unwrap();
        let (_, body) = text(svc.clone().oneshot(req).await.unwrap()).await;
        assert_eq!(body, "o1");
        assert_eq!(mock.calls.load(Ordering::SeqCst), 1);
        let req = Request::get("/x").body(Body::empty()).unwrap();
        let (status, body) = text(svc.oneshot(req).await.unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "anonymous"));
    }

    #[tokio::test]
    async fn rejections_are_ok_responses_in_the_envelope() {
        let (sessions, mock) = sessions();
        let svc = ServiceBuilder::new().layer(WxSessionLayer::new(sessions)).service_fn(echo);
        let req = Request::get("/x").header("x-wx-code", "unknown").body(Body::empty()).unwrap();
        let (status, body) = text(svc.oneshot(req).await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["reason"], "ERR_SESSION_EXPIRED");
        assert_eq!(v[crate::session::ERROR_MAGIC], 1);
        assert_eq!(mock.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn extractor_without_the_layer_says_so() {
        let app: Router =
            Router::new().route("/me", get(|s: WxSession| async move { s.openid().to_owned() }));
        let response = app.oneshot(Request::get("/me").body(Body::empty()).unwrap()).await.unwrap();
        let (status, body) = text(response).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("is WxSessionLayer enabled"), "{body}");
    }

    #[tokio::test]
    async fn require_login_guards_routes_and_ignored_paths_are_untouched() {
        let (sessions, _) = sessions();
        let app: Router = Router::new()
            .route("/private", get(|| async { "secret" }))
            .route_layer(axum::middleware::from_fn(crate::session::require_login))
            .route("/healthz", get(|| async { "ok" }))
            .layer(WxSessionLayer::new(sessions));
        let r = app.clone().oneshot(Request::get("/private").body(Body::empty()).unwrap()).await;
        let (status, body) = text(r.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("ERR_NOT_LOGGED_IN"));
        let req = Request::get("/healthz").header("x-wx-code", "unknown").body(Body::empty());
        let (status, body) = text(app.oneshot(req.unwrap()).await.unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
}
