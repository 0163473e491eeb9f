//! The WeChat API: a reqwest client, open-data crypto and a fake server.

mod client;
mod fake;

pub use client::{
    DEFAULT_API_BASE, ERRCODE_BUSY, WeChatClient, WeChatConfig, WeChatError, check_errcode,
};
pub use fake::{FakeStats, FakeWeChat, Faults, JSCODE2SESSION, MintedCode};

/// Installs rustls' ring crypto provider as the process default (idempotent).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
