//! The WeChat API: a reqwest client, the shared access token, open-data crypto
//! and a fake server.
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
