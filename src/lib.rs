//! weapp-gateway: the session gateway for WeChat mini-program backends.
//!
//! - [`session`]: `WxSessionLayer`, the tower middleware (usable on its own);
//! - [`wechat`]: the WeChat API client and a fake WeChat server;
//! - [`config`], [`app`], [`server`]: the gateway binary's parts.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod config;
pub mod server;
pub mod session;
pub mod wechat;
