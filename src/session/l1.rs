//! The optional L1 cache: recently served sessions kept in process for a
//! short TTL, so a hit costs no session-store round trip.
//!
//! Staleness is bounded by the TTL alone: a logout or revocation on another
//! instance (or a record update such as a saved unionid) is seen here at most
//! one TTL later. A logout on this instance evicts its entry at once. Token
//! expiry still slides: a miss reloads with `load_and_touch`, so a busy
//! session's idle TTL is refreshed at most once per L1 window.

use std::time::Duration;

use super::identity::WxSession;
use super::store::SessionKind;

/// Settings of the L1 cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Config {
    /// How long an entry is served without asking the store.
    pub ttl: Duration,
    /// Most sessions kept.
    pub max_entries: u64,
}

/// Sessions by the credential the client sent (code or token), per dialect.
pub(crate) struct L1 {
    codes: moka::sync::Cache<String, WxSession>,
    tokens: moka::sync::Cache<String, WxSession>,
}

impl L1 {
    pub(crate) fn new(cfg: L1Config) -> Self {
        let cache = || {
            moka::sync::Cache::builder().max_capacity(cfg.max_entries).time_to_live(cfg.ttl).build()
        };
        Self { codes: cache(), tokens: cache() }
    }

    fn cache(&self, kind: SessionKind) -> &moka::sync::Cache<String, WxSession> {
        match kind {
            SessionKind::Code => &self.codes,
            SessionKind::Token => &self.tokens,
        }
    }

    pub(crate) fn get(&self, kind: SessionKind, credential: &str) -> Option<WxSession> {
        self.cache(kind).get(credential)
    }

    pub(crate) fn put(&self, kind: SessionKind, credential: &str, session: &WxSession) {
        self.cache(kind).insert(credential.to_owned(), session.clone());
    }

    pub(crate) fn evict(&self, kind: SessionKind, credential: &str) {
        self.cache(kind).invalidate(credential);
    }
}
