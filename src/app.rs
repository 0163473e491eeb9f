//! Router assembly: the session layer, the gateway's routes, health and the
//! access log. `router()` is separate from serving so tests can drive it.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use secrecy::SecretString;

use crate::clock::Clock;
use crate::notices::{NoticeStore, routes as notices};
use crate::pk::{PkStore, routes as pk};
use crate::session::{
    SessionError, UserTag, WxSession, WxSessionLayer, WxSessions, error_response,
};
use crate::wechat::{AccessTokens, FakeWeChat};
use crate::{message, open_data};

/// Where the embedded fake WeChat API is served in dev mode.
pub const FAKE_WECHAT_PATH: &str = "/__wechat";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The session engine (also behind the layer).
    pub sessions: Arc<WxSessions>,
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
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("app_id", &self.app_id).finish_non_exhaustive()
    }
}

/// The gateway's router: session routes under `base_path`, health checks,
/// the fake WeChat (when given) under [`FAKE_WECHAT_PATH`], all behind the
/// session layer and the access log.
pub fn router(state: AppState, base_path: &str, fake: Option<FakeWeChat>) -> Router {
    let layer = WxSessionLayer::new(state.sessions.clone());
    let routes = Router::new()
        .route("/session/me", get(me))
        .route("/open-data/decrypt", post(open_data::decrypt))
        .route("/open-data/phone", post(open_data::phone))
        .route("/pk/checkin", post(pk::checkin))
        .route("/pk/groups", get(pk::groups))
        .route("/pk/groups/{open_gid}/ranking", get(pk::ranking))
        .route("/notices", post(notices::create).get(notices::feed))
        .route("/notices/mine", get(notices::mine))
        .route("/notices/{id}", patch(notices::update).delete(notices::delete))
        .route("/message/check", get(message::check).post(message::push));
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/notices/{id}/ban", post(notices::ban))
        .route("/admin/notices/{id}/unban", post(notices::unban))
        .nest(base_path, routes)
        .fallback(not_found)
        .with_state(state);
    if let Some(fake) = fake {
        app = app.nest(FAKE_WECHAT_PATH, fake.router());
    }
    app.layer(layer).layer(middleware::from_fn(access_log))
}

/// `GET {base}/session/me`: the current user's info.
async fn me(session: WxSession) -> Response {
    let mut response = Response::new(Body::from(session.user_info().get().to_owned()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
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
            tracing::warn!(error = %e, "readiness check failed");
            SessionError::StoreUnavailable.into_response()
        }
    }
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "ERR_NOT_FOUND", "no such route", json!({}))
}

/// One log line per request: method, path (never the query), status,
/// latency and a hashed user tag. Never codes, tokens or keys.
async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let user = response.extensions().get::<UserTag>().map(|t| t.0.as_str()).unwrap_or("-");
    tracing::info!(
        target: "weapp_gateway::access",
        %method,
        path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        user,
        "request"
    );
    response
}
