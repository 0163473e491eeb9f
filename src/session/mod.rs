//! `WxSessionLayer`: the tower middleware that recognises WeChat mini-program users.
//!
//! This module depends only on tower/http/axum and its stores, never on the
//! gateway's routes or business code. A backend team mounts it like this:
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use weapp_gateway::session::{MemoryStore, SessionConfig, WxSession, WxSessionLayer, WxSessions};
//! # fn exchanger() -> Arc<dyn weapp_gateway::session::CodeExchanger> { unimplemented!() }
//!
//! let sessions = WxSessions::new(Arc::new(MemoryStore::new(100_000)), exchanger(), SessionConfig::default());
//! let app: Router = Router::new()
//!     .route("/applet/hello", get(|user: WxSession| async move { format!("hi {}", user.openid()) }))
//!     .layer(WxSessionLayer::new(Arc::new(sessions)));
//! ```

mod error;
mod exchange;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod identity;
mod l1;
mod layer;
mod login;
pub mod store;

pub use error::{ERROR_MAGIC, SessionError, error_response};
pub(crate) use error::{WarnBudget, error_limited, warn_limited};
pub use exchange::{CodeExchanger, ExchangeError, Exchanged};
pub use headers::{HEADER_CODE, HEADER_RAW_DATA, HEADER_SIGNATURE, HEADER_SKEY, signature_matches};
pub use identity::{Dialect, UserTag, WxSession, require_login};
pub use l1::L1Config;
pub use layer::{ClientIp, ResponseFuture, WxSessionLayer, WxSessionService};
pub use login::{
    ExchangeBudget, LoginRateLimit, SessionConfig, TokenLoginRequest, TokenLoginResponse,
    WxSessions,
};
pub use store::{MemoryStore, SessionStore};
