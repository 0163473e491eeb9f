//! The identity the layer hands to handlers, and the axum extractor for it.

use std::sync::Arc;

#[cfg(feature = "axum")]
use http::request::Parts;
use serde_json::value::RawValue;

#[cfg(feature = "axum")]
use super::error::SessionError;
use super::store::{SessionId, SessionKind, SessionRecord};

/// Which dialect authenticated the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `X-WX-Code` headers (weapp-session compatible).
    Compat,
    /// `X-WX-Skey` / `Authorization: Bearer` token.
    Token,
}

/// The logged-in WeChat user of a request.
///
/// Put into request extensions by [`super::WxSessionLayer`]; extract it in an
/// axum handler as `session: WxSession` (answers `ERR_NOT_LOGGED_IN` when the
/// request carries no identity) or `session: Option<WxSession>` (open routes).
/// Only the layer makes one: holding a `WxSession` means the request was
/// authenticated.
///
/// ```
/// use axum::{Router, routing::get};
/// use weapp_session::WxSession;
///
/// async fn me(user: WxSession) -> String {
///     format!("{} ({:?} dialect)", user.openid(), user.dialect())
/// }
/// async fn greeting(user: Option<WxSession>) -> String {
///     user.map_or("hello, guest".to_owned(), |u| format!("hello, {}", u.openid()))
/// }
/// let routes: Router = Router::new().route("/me", get(me)).route("/hello", get(greeting));
/// // …then `.layer(WxSessionLayer)` over them.
/// # let _ = routes;
/// ```
#[derive(Clone)]
pub struct WxSession {
    inner: Arc<Inner>,
}

struct Inner {
    id: SessionId,
    record: SessionRecord,
    /// Computed on first use, then shared by every request of this session
    /// (with the L1 cache, across requests).
    tag: std::sync::OnceLock<Arc<str>>,
}

impl std::fmt::Debug for WxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WxSession")
            .field("dialect", &self.dialect())
            .field("openid", &self.openid())
            .finish_non_exhaustive()
    }
}

impl WxSession {
    /// Wrap a loaded record. Only the engine does: a `WxSession` is proof
    /// that the layer authenticated the request.
    pub(crate) fn new(id: SessionId, record: SessionRecord) -> Self {
        Self { inner: Arc::new(Inner { id, record, tag: std::sync::OnceLock::new() }) }
    }

    /// The user's openid.
    pub fn openid(&self) -> &str {
        &self.inner.record.openid
    }

    /// The user's unionid, when known.
    pub fn unionid(&self) -> Option<&str> {
        self.inner.record.unionid.as_deref()
    }

    /// The user info as JSON text: the signed rawData object plus `openId`.
    pub fn user_info(&self) -> &RawValue {
        &self.inner.record.user
    }

    /// WeChat's session_key, for server-side decryption only. Never send it.
    pub fn session_key(&self) -> &str {
        &self.inner.record.session_key
    }

    /// The dialect that authenticated this request.
    pub fn dialect(&self) -> Dialect {
        match self.inner.id.kind {
            SessionKind::Code => Dialect::Compat,
            SessionKind::Token => Dialect::Token,
        }
    }

    /// Where the session lives in the store.
    pub fn id(&self) -> &SessionId {
        &self.inner.id
    }

    /// The stored record (server side; holds the session_key).
    pub fn record(&self) -> &SessionRecord {
        &self.inner.record
    }

    /// A short, non-reversible tag for logs: 12 hex chars of SHA-256(openid).
    pub fn log_tag(&self) -> Arc<str> {
        self.inner.tag.get_or_init(|| super::login::hash_tag(self.openid()).into()).clone()
    }
}

/// Marks a request the layer has seen, so extractors can tell "not logged in"
/// from "the layer is not mounted on this route".
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayerSeen;

/// The user a response was produced for (response extension), for the
/// access log. The tag itself is hashed only when a log line asks for it.
#[derive(Clone, Debug)]
pub struct UserTag(pub(crate) WxSession);

impl UserTag {
    /// The session the response was produced for.
    pub fn session(&self) -> &WxSession {
        &self.0
    }

    /// The user's log tag (see [`WxSession::log_tag`]).
    pub fn tag(&self) -> Arc<str> {
        self.0.log_tag()
    }
}

#[cfg(feature = "axum")]
fn from_extensions(parts: &Parts) -> Result<Option<WxSession>, SessionError> {
    if let Some(session) = parts.extensions.get::<WxSession>() {
        return Ok(Some(session.clone()));
    }
    if parts.extensions.get::<LayerSeen>().is_some() {
        Ok(None)
    } else {
        Err(SessionError::LayerMissing)
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for WxSession {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        from_extensions(parts)?.ok_or(SessionError::NotLoggedIn)
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for WxSession {
    type Rejection = SessionError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        from_extensions(parts)
    }
}

/// Middleware that answers `ERR_NOT_LOGGED_IN` unless the request has an
/// identity. Use with `axum::middleware::from_fn(require_login)` on the
/// routes that need one (inside `WxSessionLayer`).
///
/// ```
/// use axum::{Router, middleware, routing::get};
/// use weapp_session::{MemoryStore, WxSessionLayer, require_login};
/// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged};
/// # struct WeChat;
/// # #[async_trait::async_trait]
/// # impl CodeExchanger for WeChat {
/// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
/// # }
/// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat).build();
/// let app: Router = Router::new()
///     .route("/orders", get(|| async { "only for logged-in users" }))
///     .route_layer(middleware::from_fn(require_login))
///     .route("/catalogue", get(|| async { "for everyone" }))
///     .layer(layer);
/// # let _ = app;
/// ```
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub async fn require_login(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if request.extensions().get::<WxSession>().is_some() {
        return next.run(request).await;
    }
    if request.extensions().get::<LayerSeen>().is_some() {
        SessionError::NotLoggedIn.into_response()
    } else {
        SessionError::LayerMissing.into_response()
    }
}
