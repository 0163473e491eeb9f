//! The WeChat side: the client against the fake WeChat, the shared access
//! token, open data and its crypto, message push. One test binary (one link)
//! for all of them; each file below was a test binary of its own.

#[path = "../support/mod.rs"]
mod support;

mod access_token;
mod message_push;
mod open_data;
mod wechat_crypto;
mod wechat_fake;
