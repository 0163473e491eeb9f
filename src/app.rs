//! Router assembly: each business module's router (with its own state), the
//! session layer over the user routes, the routes beside it, and the layers
//! around everything. `router()` is separate from serving so tests can drive
//! it.
//!
//! # State
//!
//! Every business module owns its state type, one `Arc` each, so the clone
//! axum makes per request stays a reference-count bump:
//! [`OpenDataState`], [`PkState`], [`NoticesState`], [`MessageState`],
//! [`HealthState`]. [`AppState`] only holds them; it hands each module its
//! own through [`FromRef`], and no module knows about it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::middleware;
use secrecy::SecretString;
use tower_http::timeout::RequestBodyDeadlineLayer;

use crate::clock::Clock;
use crate::config::{OpenDataSection, ServerConfig};
use crate::error::{method_not_allowed, not_found};
use crate::health::{Health, HealthState};
use crate::limits::Limits;
use crate::message::{Message, MessageState};
use crate::middleware::{access_log, catch_panic, request_timeout};
use crate::notices::{NoticeStore, Notices, NoticesState};
use crate::open_data::{OpenData, OpenDataState};
use crate::pk::{Pk, PkState, PkStore};
use crate::session::{SessionEngine, WxSessionLayer, token_routes};
use crate::wechat::{AccessTokens, FakeWeChat};
use crate::{health, me, message, notices, open_data, pk};

/// Where the embedded fake WeChat API is served in dev mode.
pub const FAKE_WECHAT_PATH: &str = "/__wechat";

/// The parts the business modules are built from, as the server assembles
/// them; [`AppState::from`] hands each module the ones it needs.
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
    /// Oldest ranking day: today minus this many days.
    pub pk_retention_days: u32,
    /// Run msgSecCheck on notice text.
    pub content_security: bool,
    /// Bearer token of the moderation routes.
    pub admin_token: Option<SecretString>,
    /// Message-push token.
    pub message_token: Option<SecretString>,
    /// How far a message push `timestamp` may be from now.
    pub message_max_clock_skew: Duration,
    /// "Now".
    pub clock: Clock,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[IpAddr]>,
    /// The notice routes' write limits and request rules.
    pub limits: Limits,
    /// Open-data rules: the decryption-failure budget and freshness.
    pub open_data: OpenDataSection,
}

/// The gateway's state: each module's own state, handed out by [`FromRef`].
#[derive(Clone, Debug, FromRef)]
pub struct AppState {
    open_data: OpenDataState,
    pk: PkState,
    notices: NoticesState,
    message: MessageState,
    health: HealthState,
    /// Peers whose `X-Forwarded-For` the access log believes.
    trusted_proxies: Arc<[IpAddr]>,
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        let Shared {
            sessions,
            tokens,
            app_id,
            pk,
            notices,
            pk_tz,
            pk_ranking_limit,
            pk_retention_days,
            content_security,
            admin_token,
            message_token,
            message_max_clock_skew,
            clock,
            trusted_proxies,
            limits,
            open_data,
        } = shared;
        let health = HealthState::from(Health {
            sessions: sessions.store().clone(),
            pk: pk.clone(),
            notices: notices.clone(),
        });
        let open_data = OpenDataState::from(OpenData {
            sessions,
            tokens: tokens.clone(),
            app_id,
            rules: open_data,
            clock: clock.clone(),
        });
        Self {
            pk: PkState::from(Pk {
                store: pk,
                open_data: open_data.clone(),
                tz: pk_tz,
                ranking_limit: pk_ranking_limit,
                retention_days: pk_retention_days,
                clock: clock.clone(),
            }),
            notices: NoticesState::from(Notices {
                store: notices,
                tokens,
                content_security,
                admin_token,
                limits,
                clock: clock.clone(),
            }),
            message: MessageState::from(Message {
                token: message_token,
                max_clock_skew: message_max_clock_skew,
                clock,
            }),
            open_data,
            health,
            trusted_proxies,
        }
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
    // Full paths rather than `nest(base_path, …)`: nesting costs every
    // request a URI rewrite and a second routing pass.
    let base_path = server.base_path.as_str();
    let engine = layer.engine().clone();
    let users = Router::new()
        .merge(me::router(base_path))
        .merge(open_data::router(FromRef::from_ref(&state), base_path))
        .merge(pk::routes::router(FromRef::from_ref(&state), base_path))
        .merge(notices::routes::router(FromRef::from_ref(&state), base_path))
        .merge(message::router(FromRef::from_ref(&state), base_path))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(layer);
    // Outside the session layer: a login may still carry an old token, the
    // admin routes carry their own bearer token, probes carry nothing.
    let outside = Router::new()
        .merge(health::router(FromRef::from_ref(&state)))
        .merge(notices::routes::admin_router(FromRef::from_ref(&state)))
        .method_not_allowed_fallback(method_not_allowed);
    let at = |path: &str| format!("{base_path}{path}");
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
        .layer(middleware::from_fn_with_state(state.trusted_proxies, access_log))
}
