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
        let route = match *req.method() {
            Method::POST if cfg.login_path.as_deref() == Some(path) => Route::Login,
            Method::POST if cfg.logout_path.as_deref() == Some(path) => Route::Logout,
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
            let tag = session.as_ref().map(|s| UserTag(s.log_tag()));
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
        Err(_) => {
            let why = format!("the login body must be JSON of at most {limit} bytes");
            return SessionError::InvalidRequest(why).into_response();
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
