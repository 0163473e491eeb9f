//! The session engine: authenticate a request, log a user in (both dialects),
//! log out. Shared by the layer's service clones through an `Arc`.
//!
//! - `config`: the settings [`crate::WxSessionLayerBuilder`] fills in;
//! - `wire`: the token login's body and answer, and the signed rawData;
//! - `engine`: the engine (authenticate, log in, log out, revoke);
//! - `single_flight`: one exchange per code, in a task of its own;
//! - `rate_limit`: the per-client-address login limit.

mod config;
mod engine;
mod rate_limit;
mod single_flight;
mod wire;

pub use self::config::{ExchangeBudget, LoginRateLimit, SessionConfig};
pub use self::engine::SessionEngine;
pub(crate) use self::engine::hash_tag;
#[cfg(feature = "fuzzing")]
pub(crate) use self::wire::parse_signed;
pub use self::wire::{TokenLoginRequest, TokenLoginResponse};
