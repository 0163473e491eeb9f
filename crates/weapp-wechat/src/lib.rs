//! The WeChat mini-program server API, for a backend behind
//! `weapp-session`:
//!
//! - [`WeChatClient`]: `jscode2session` (it implements
//!   `weapp_session::CodeExchanger`, so it is what the session layer
//!   exchanges `wx.login()` codes with), `stable_token`, raw calls. It never
//!   installs a process-wide TLS provider: it uses the one the application
//!   installed, else its own `ring` provider for its own connections.
//! - [`AccessTokens`]: the app's access token shared by every instance
//!   through a `weapp_session::SharedStore`, refreshed by one instance at a
//!   time; phone numbers and the text security check ride on it.
//! - Open data: [`decrypt_open_data`] (AES-128-CBC under the user's
//!   session_key, watermark checked) and message-push signatures
//!   ([`check_push_signature`]).
//! - `FakeWeChat` (feature `fake`): WeChat's endpoints with WeChat's
//!   errcodes, minted codes and injected faults, for a team's own tests.
//!
//! A code exchange against the fake, as a team's test does it:
//!
//! ```
//! # #[cfg(feature = "fake")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use weapp_session::CodeExchanger as _;
//! use weapp_wechat::{FakeWeChat, WeChatClient, WeChatConfig};
//!
//! let (fake, addr) = FakeWeChat::spawn("wx_app", "app-secret").await?;
//! // In production: WeChatConfig::new(app_id, app_secret), nothing more.
//! let config = WeChatConfig::new("wx_app", "app-secret".to_owned())
//!     .with_api_base(format!("http://{addr}"));
//! let client = WeChatClient::new(config)?;
//!
//! let minted = fake.mint_code("o_alice", None, None);
//! let session = client.code2session(&minted.code).await?;
//! assert_eq!(session.openid, "o_alice");
//! // A code is single use, as on WeChat.
//! assert!(client.code2session(&minted.code).await.is_err());
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "fake"))]
//! # fn main() {}
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod crypto;
#[cfg(feature = "fake")]
#[cfg_attr(docsrs, doc(cfg(feature = "fake")))]
mod fake;
mod token;

pub use client::{
    DEFAULT_API_BASE, ERRCODE_BUSY, StableToken, WeChatClient, WeChatConfig, WeChatError,
};
pub use crypto::{
    DecryptError, Freshness, check_push_signature, decrypt_open_data, decrypt_open_data_fresh,
    encrypt_open_data,
};
#[cfg(feature = "fake")]
pub use fake::{
    EncryptedOpenData, FakeStats, FakeWeChat, Faults, GET_PHONE_NUMBER, JSCODE2SESSION,
    MSG_SEC_CHECK, MintedCode, STABLE_TOKEN,
};
pub use token::{
    ACCESS_TOKEN_KV, ACCESS_TOKEN_LOCK, AccessTokenConfig, AccessTokens, SecCheckSuggest,
    SecCheckVerdict,
};
