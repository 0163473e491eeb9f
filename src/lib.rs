//! weapp-gateway: the session gateway for WeChat mini-program backends.
//!
//! - [`session`]: `WxSessionLayer`, the tower middleware (usable on its own);
//! - [`wechat`]: the WeChat API client and a fake WeChat server;
//! - [`config`], [`app`], [`server`]: the gateway binary's parts.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
/// The injectable clock.
pub mod clock;
pub mod config;
/// What the business data stores share (their error type).
pub mod data;
/// `AppError`, the handlers' error envelope, and envelope-speaking extractors.
pub mod error;
pub mod health;
pub mod limits;
pub mod me;
/// WeChat message push verification.
pub mod message;
mod middleware;
/// MongoDB connection, config and indexes for the business data stores.
pub mod mongo;
/// Notices: users' posts, a public feed, private and banned states.
pub mod notices;
/// Open data decryption and phone numbers.
pub mod open_data;
/// Group step-count PK: daily leaderboards per WeChat group.
pub mod pk;
pub mod server;
pub mod snapshot;
pub mod text;
/// Native HTTPS: certificates, ALPN, reload on SIGHUP.
pub mod tls;

/// The session layer, re-exported from the `weapp-session` crate under its old
/// path (kept for one release; depend on `weapp-session` directly).
pub use weapp_session as session;
/// The WeChat API client, re-exported from the `weapp-wechat` crate under its
/// old path (kept for one release; depend on `weapp-wechat` directly).
pub use weapp_wechat as wechat;
