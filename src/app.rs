//! Router assembly: the session layer, the gateway's routes, health and the
//! access log. `router()` is separate from serving so tests can drive it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use tower_http::timeout::RequestBodyDeadlineLayer;

use secrecy::SecretString;

use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::error::AppError;
use crate::notices::{NoticeStore, routes as notices};
use crate::pk::{PkStore, routes as pk};
use crate::session::{
    ClientIp, SessionEngine, SessionError, UserTag, WxSession, WxSessionLayer, client_ip,
    error_response, token_routes,
};
use crate::wechat::{AccessTokens, FakeWeChat};
use crate::{message, open_data};

/// Where the embedded fake WeChat API is served in dev mode.
pub const FAKE_WECHAT_PATH: &str = "/__wechat";

/// What the handlers share: one allocation, so the per-request clone axum
/// makes of the state is a reference-count bump (it used to copy the AppID
/// and both secrets, and wipe the copies, several times per request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    /// The session engine (also behind the layer).
    pub sessions: Arc<SessionEngine>,
    /// The shared access token and the WeChat calls that need it.
    pub tokens: AccessTokens,
    /// The mini-program's AppID (the open-data watermark must match it).
    pub app_id: String,
    /// PK records and memberships.
    pub pk: Arc<dyn PkStore>,
    /// Notices.
    pub notices: Arc<dyn NoticeStore>,
    /// The timezone whose midnight starts a PK day.
    pub pk_tz: chrono_tz::Tz,
    /// Most entries in a ranking answer.
    pub pk_ranking_limit: u32,
    /// Run msgSecCheck on notice text.
    pub content_security: bool,
    /// Bearer token of the moderation routes.
    pub admin_token: Option<SecretString>,
    /// Message-push token.
    pub message_token: Option<SecretString>,
    /// "Now".
    pub clock: Clock,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[IpAddr]>,
    /// Write limits and request rules of the business routes.
    pub limits: crate::limits::Limits,
    /// Open-data rules: the decryption-failure budget and freshness.
    pub open_data: crate::config::OpenDataSection,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("app_id", &self.0.app_id).finish_non_exhaustive()
    }
}

/// The gateway's router: the user routes under `server.base_path` behind the
/// session `layer`; the token login and logout, health checks, the admin
/// routes and the fake WeChat (when given, under [`FAKE_WECHAT_PATH`]) beside
/// it, outside the layer; all of it behind `server.max_body`,
/// `server.body_timeout`, `server.request_timeout` and the access log.
pub fn router(
    state: AppState,
    layer: WxSessionLayer,
    server: &ServerConfig,
    fake: Option<FakeWeChat>,
) -> Router {
    let base_path = server.base_path.as_str();
    let engine = layer.engine().clone();
    let trusted = state.trusted_proxies.clone();
    // Full paths rather than `nest(base_path, …)`: nesting costs every
    // request a URI rewrite and a second routing pass.
    let at = |path: &str| format!("{base_path}{path}");
    let users = Router::new()
        .route(&at("/session/me"), get(me))
        .route(&at("/open-data/decrypt"), post(open_data::decrypt))
        .route(&at("/open-data/phone"), post(open_data::phone))
        .route(&at("/pk/checkin"), post(pk::checkin))
        .route(&at("/pk/groups"), get(pk::groups))
        .route(&at("/pk/groups/{open_gid}/ranking"), get(pk::ranking))
        .route(&at("/notices"), post(notices::create).get(notices::feed))
        .route(&at("/notices/mine"), get(notices::mine))
        .route(&at("/notices/{id}"), patch(notices::update).delete(notices::delete))
        .route(&at("/message/check"), get(message::check).post(message::push))
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .with_state(state.clone())
        .layer(layer);
    // Outside the session layer: a login may still carry an old token, the
    // admin routes carry their own bearer token, probes carry nothing.
    let outside = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/notices/{id}/ban", post(notices::ban))
        .route("/admin/notices/{id}/unban", post(notices::unban))
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .with_state(state);
    let mut app = users
        .merge(token_routes(engine, &at("/session/login"), &at("/session/logout")))
        .merge(outside)
        .fallback(not_found);
    if let Some(fake) = fake {
        app = app.nest(FAKE_WECHAT_PATH, fake.router());
    }
    app.layer(DefaultBodyLimit::max(server.max_body))
        .layer(catch_panic())
        .layer(middleware::from_fn_with_state(server.request_timeout, request_timeout))
        .layer(RequestBodyDeadlineLayer::new(server.body_timeout))
        .layer(middleware::from_fn_with_state(trusted, access_log))
}

/// Answers `504 ERR_GATEWAY_TIMEOUT` in the envelope when the request takes
/// longer than `server.request_timeout` (the work below is dropped).
async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::debug!(?limit, "request timed out");
            AppError::GatewayTimeout.into_response()
        }
    }
}

/// A panic anywhere below becomes a logged 500 in the error envelope (and an
/// access-log line) instead of a dropped connection.
fn catch_panic() -> tower_http::catch_panic::CatchPanicLayer<fn(PanicPayload) -> Response> {
    tower_http::catch_panic::CatchPanicLayer::custom(panic_response as fn(PanicPayload) -> Response)
}

type PanicPayload = Box<dyn std::any::Any + Send + 'static>;

fn panic_response(payload: PanicPayload) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "a request handler panicked");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ERR_INTERNAL",
        "internal error; the gateway logged it",
        json!({}),
    )
    .into_response()
}

/// `GET {base}/session/me`: the current user's info, the stored JSON as is.
async fn me(session: WxSession) -> Response {
    let mut response = Response::new(Body::from(Bytes::from_owner(UserJson(session))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A session's user-info JSON as response bytes, without copying it.
struct UserJson(WxSession);

impl AsRef<[u8]> for UserJson {
    fn as_ref(&self) -> &[u8] {
        self.0.user_info().get().as_bytes()
    }
}

/// `GET /healthz`: the process is alive.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the session store answers (the data store's state is
/// reported too, but session routes work without it, so it does not gate).
async fn readyz(State(state): State<AppState>) -> Response {
    let (pk, notices) = tokio::join!(state.pk.ping(), state.notices.ping());
    let data = if pk.is_ok() && notices.is_ok() { "ok" } else { "unavailable" };
    match state.sessions.store().ping().await {
        Ok(()) => Json(json!({"status": "ready", "data": data})).into_response(),
        Err(e) => {
            crate::session::warn_limited!(error = %e, "readiness check failed");
            SessionError::StoreUnavailable.into_response()
        }
    }
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "ERR_NOT_FOUND", "no such route", json!({}))
        .into_response()
}

/// One log line per request: method, path (never the query), status,
/// latency, client address and a hashed user tag. Never codes, tokens or
/// keys. Also establishes the [`ClientIp`] the session layer rate-limits by
/// (the library's [`client_ip`] rule: trusted proxies, right-most hop).
async fn access_log(
    State(trusted): State<Arc<[IpAddr]>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = client_ip(peer, request.headers(), &trusted);
    if let Some(ip) = client {
        request.extensions_mut().insert(ClientIp(ip));
    }
    if !tracing::enabled!(target: "weapp_gateway::access", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let tag = response.extensions().get::<UserTag>().map(UserTag::tag);
    let user = tag.as_deref().unwrap_or("-");
    tracing::info!(
        target: "weapp_gateway::access",
        %method,
        path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        client = %client.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into()),
        user,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_500_envelope() {
        use tower::ServiceExt;
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app: Router = Router::new().route("/boom", get(boom)).layer(catch_panic());
        let req = Request::builder().uri("/boom").body(Body::empty()).unwrap();
        let response = app.oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body[crate::session::ERROR_MAGIC], 1);
        assert_eq!(body["reason"], "ERR_INTERNAL");
    }
}
