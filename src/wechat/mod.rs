//! The WeChat API: a reqwest client, the shared access token, open-data crypto
//! and a fake server.

mod client;
mod crypto;
mod fake;
mod token;

pub use client::{
    DEFAULT_API_BASE, ERRCODE_BUSY, StableToken, WeChatClient, WeChatConfig, WeChatError,
    check_errcode,
};
pub use crypto::{
    DecryptError, Freshness, check_push_signature, decrypt_open_data, decrypt_open_data_fresh,
    encrypt_open_data,
};
pub use fake::{
    EncryptedOpenData, FakeStats, FakeWeChat, Faults, GET_PHONE_NUMBER, JSCODE2SESSION,
    MSG_SEC_CHECK, MintedCode, STABLE_TOKEN,
};
pub use token::{
    ACCESS_TOKEN_KV, ACCESS_TOKEN_LOCK, AccessTokenConfig, AccessTokens, SecCheckSuggest,
    SecCheckVerdict,
};

/// Installs rustls' ring crypto provider as the process default (idempotent).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
