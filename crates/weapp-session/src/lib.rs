//! `WxSessionLayer`: the tower middleware that recognises WeChat mini-program
//! users from request headers.
//!
//! A mini-program cannot keep cookies, so its backend exchanges the
//! `wx.login()` code with WeChat for `openid` + `session_key`, checks the
//! signed profile (`sha1(rawData + session_key)`) and keeps the session_key
//! on the server. The layer does this once for every route behind it and
//! puts a [`WxSession`] into the request's extensions. It speaks two
//! dialects: the Node `weapp-session` headers (`X-WX-Code`, `X-WX-RawData`,
//! `X-WX-Signature`) and a token (`X-WX-Skey` or `Authorization: Bearer`)
//! issued by the token login you mount with [`token_routes`].
//!
//! ```
//! use axum::{Router, routing::get};
//! use weapp_session::{MemoryStore, WxSession, WxSessionLayer, token_routes};
//! # use weapp_session::{CodeExchanger, ExchangeError, Exchanged};
//! # struct WeChatClient;
//! # #[async_trait::async_trait]
//! # impl CodeExchanger for WeChatClient {
//! #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> {
//! #         Err(ExchangeError::Timeout)
//! #     }
//! # }
//! // `WeChatClient` is `weapp_wechat::WeChatClient` in a real service.
//! let layer = WxSessionLayer::builder(MemoryStore::new(100_000), WeChatClient).build();
//! let app: Router = Router::new()
//!     .route("/applet/hello", get(|user: WxSession| async move { format!("hi {}", user.openid()) }))
//!     .route("/applet/open", get(|user: Option<WxSession>| async move { user.is_some().to_string() }))
//!     .layer(layer.clone())
//!     .merge(token_routes(layer.engine().clone(), "/applet/session/login", "/applet/session/logout"));
//! # let _ = app;
//! ```
//!
//! # Features
//! - `axum` (default): the [`WxSession`] extractor, `IntoResponse` for
//!   [`SessionError`], `require_login`, `token_routes`. Without it the layer
//!   is a plain tower layer over any `http` service.
//! - `redis`: [`store::RedisStore`] on one Redis; `redis-cluster`: on a Redis
//!   Cluster too.
//! - `test-util`: `test_util`, the store contract suite that a store of your
//!   own runs against itself, and helpers that sign logins like the client.
//!
//! The protocol, every reason and its status: `docs/protocol.md` in the
//! repository.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client_addr;
mod error;
mod exchange;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod identity;
mod l1;
mod layer;
mod login;
mod routes;
pub mod store;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

pub use client_addr::{ClientAddr, ClientAddrLayer, PeerFn, client_ip};
#[doc(hidden)]
pub use error::WarnBudget;
pub use error::{ERROR_MAGIC, EnvelopeBody, SessionError, error_response};

/// What this crate's macros need at their call sites; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use tracing;
}
pub use exchange::{CodeExchanger, ExchangeError, Exchanged};
pub use headers::{HEADER_CODE, HEADER_RAW_DATA, HEADER_SIGNATURE, HEADER_SKEY};
#[cfg(feature = "axum")]
pub use identity::require_login;
pub use identity::{Dialect, UserTag, WxSession};
pub use l1::L1Config;
pub use layer::{
    ClientIp, LayerBody, ResponseFuture, WxSessionLayer, WxSessionLayerBuilder, WxSessionService,
};
pub use login::{
    ExchangeBudget, LoginRateLimit, SessionConfig, SessionEngine, TokenLoginRequest,
    TokenLoginResponse,
};
#[cfg(feature = "axum")]
pub use routes::token_routes;
pub use routes::{token_login, token_logout};
pub use store::{MemoryStore, SessionStore, SharedStore};

/// The `redis` crate this crate's [`store::RedisStore`] speaks, so a team
/// builds its own connection with the very same version.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis;

/// A boxed error, as bodies and services report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
