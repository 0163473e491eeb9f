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
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use tower_http::timeout::RequestBodyDeadlineLayer;

use secrecy::SecretString;

use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::error::AppError;
use crate::notices::{NoticeStore, routes as notices};
use crate::pk::{PkStore, routes as pk};
use crate::session::{
    ClientIp, SessionError, UserTag, WxSession, WxSessionLayer, WxSessions, error_response,
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

/// The gateway's router: session routes under `server.base_path`, health
/// checks, the fake WeChat (when given) under [`FAKE_WECHAT_PATH`], all behind
/// the session layer, `server.max_body`, `server.body_timeout`,
/// `server.request_timeout` and the access log.
pub fn router(state: AppState, server: &ServerConfig, fake: Option<FakeWeChat>) -> Router {
    let base_path = server.base_path.as_str();
    let layer = WxSessionLayer::new(state.sessions.clone());
    let trusted = state.trusted_proxies.clone();
    // Full paths rather than `nest(base_path, …)`: nesting costs every
    // request a URI rewrite and a second routing pass.
    let at = |path: &str| format!("{base_path}{path}");
    let mut app = Router::new()
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
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/notices/{id}/ban", post(notices::ban))
        .route("/admin/notices/{id}/unban", post(notices::unban))
        .fallback(not_found)
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .with_state(state);
    if let Some(fake) = fake {
        app = app.nest(FAKE_WECHAT_PATH, fake.router());
    }
    app.layer(layer)
        .layer(DefaultBodyLimit::max(server.max_body))
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
}

/// The client's address: the socket peer, or — only when the peer is a
/// trusted proxy — the right-most `X-Forwarded-For` entry that is not itself
/// a trusted proxy (entries further left are client-controlled).
///
/// Addresses are compared and returned canonicalised
/// ([`IpAddr::to_canonical`]): on a dual-stack listener (`[::]:port`) an IPv4
/// peer arrives as `::ffff:127.0.0.1`, which must match a trusted
/// `127.0.0.1` and share its rate-limit bucket.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.to_canonical() == ip);
    let peer = peer?.to_canonical();
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else { return Some(client) };
        for hop in text.rsplit(',') {
            match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) if is_trusted(ip) => client = ip,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(client),
            }
        }
    }
    Some(client)
}

/// One log line per request: method, path (never the query), status,
/// latency, client address and a hashed user tag. Never codes, tokens or
/// keys. Also establishes the [`ClientIp`] the session layer rate-limits by.
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

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let nginx: IpAddr = "127.0.0.1".parse().unwrap();
        let trusted = [nginx];
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let spoofed = xff("198.51.100.1, 203.0.113.7");
        // From nginx: the right-most untrusted hop is the client.
        assert_eq!(client_ip(Some(nginx), &spoofed, &trusted), Some(client));
        // From anyone else: the header is ignored.
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(client_ip(Some(other), &spoofed, &trusted), Some(other));
        // Trusted peer without the header, or with garbage: the peer.
        assert_eq!(client_ip(Some(nginx), &HeaderMap::new(), &trusted), Some(nginx));
        assert_eq!(client_ip(Some(nginx), &xff("nonsense"), &trusted), Some(nginx));
        // Chains of trusted proxies are skipped.
        assert_eq!(client_ip(Some(nginx), &xff("203.0.113.7, 127.0.0.1"), &trusted), Some(client));
    }

    #[test]
    fn ipv4_mapped_addresses_are_canonicalised() {
        let nginx: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        // nginx seen through a dual-stack listener is still the trusted proxy.
        assert_eq!(client_ip(Some(mapped), &xff("203.0.113.7"), &[nginx]), Some(client));
        // A mapped trusted entry matches a plain IPv4 peer too.
        assert_eq!(client_ip(Some(nginx), &xff("203.0.113.7"), &[mapped]), Some(client));
        // Mapped hops and untrusted mapped peers come out as IPv4: one bucket.
        assert_eq!(client_ip(Some(nginx), &xff("::ffff:203.0.113.7"), &[nginx]), Some(client));
        let other: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(
            client_ip(Some(other), &xff("203.0.113.7"), &[nginx]),
            Some(other.to_canonical())
        );
        // Real IPv6 addresses are left alone.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(client_ip(Some(v6), &HeaderMap::new(), &[nginx]), Some(v6));
    }
}
