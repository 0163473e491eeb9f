//! The optional L1 cache: recently served sessions kept in process for a
//! short TTL, so a hit costs no session-store round trip.
//!
//! Staleness is bounded by the TTL alone: a logout or revocation on another
//! instance (or a record update such as a saved unionid) is seen here at most
//! one TTL later. A logout on this instance, and a new login of the same user
//! on this instance (which revokes the user's previous session), evict at
//! once. Token expiry still slides: a miss reloads with `load_and_touch`, so a
//! busy session's idle TTL is refreshed at most once per L1 window.

use std::time::Duration;

use super::identity::WxSession;
use super::store::SessionKind;

/// Settings of the L1 cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct L1Config {
    /// How long an entry is served without asking the store.
    pub ttl: Duration,
    /// Most sessions kept.
    pub max_entries: u64,
}

impl L1Config {
    /// Entries served for `ttl` without asking the store, at most `max_entries`.
    ///
    /// ```
    /// let l1 = weapp_session::L1Config::new(std::time::Duration::from_secs(1), 10_000);
    /// assert_eq!(l1.max_entries, 10_000);
    /// ```
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        Self { ttl, max_entries }
    }
}

/// Sessions by the credential the client sent (code or token), per dialect.
///
/// `current` maps an openid to the one credential of that user this L1 may
/// serve: the store keeps one live session per user (a login revokes the
/// previous one), so an entry whose credential is not its user's current one
/// is never served. A new login here repoints `current` at once; a missing
/// `current` entry (evicted under pressure) only costs a store read.
pub(crate) struct L1 {
    codes: moka::sync::Cache<String, WxSession>,
    tokens: moka::sync::Cache<String, WxSession>,
    current: moka::sync::Cache<String, Current>,
}

/// The credential of a user's newest session seen here, and when it was created.
#[derive(Clone)]
struct Current {
    kind: SessionKind,
    credential: String,
    created_at: u64,
}

impl L1 {
    pub(crate) fn new(cfg: L1Config) -> Self {
        Self { codes: cache(cfg), tokens: cache(cfg), current: cache(cfg) }
    }

    fn cache(&self, kind: SessionKind) -> &moka::sync::Cache<String, WxSession> {
        match kind {
            SessionKind::Code => &self.codes,
            SessionKind::Token => &self.tokens,
        }
    }

    pub(crate) fn get(&self, kind: SessionKind, credential: &str) -> Option<WxSession> {
        let session = self.cache(kind).get(credential)?;
        match self.current.get(session.openid()) {
            Some(c) if c.kind == kind && c.credential == credential => Some(session),
            _ => {
                // Superseded by a newer login of this user (or its marker was
                // evicted): ask the store.
                self.cache(kind).invalidate(credential);
                None
            }
        }
    }

    pub(crate) fn put(&self, kind: SessionKind, credential: &str, session: &WxSession) {
        use moka::ops::compute::{CompResult, Op};
        let created_at = session.record().created_at;
        let fresh = Current { kind, credential: credential.to_owned(), created_at };
        // A session created before the user's current one here was revoked by
        // it (a load that raced a new login): never let it take over.
        let result = self.current.entry_by_ref(session.openid()).and_compute_with(|entry| {
            match entry.map(|e| e.into_value()) {
                // `>=`: created_at is in whole seconds, so a login and the
                // revoked session it raced can share one; refusing a tie
                // only costs a cache miss, never a stale hit.
                Some(c) if c.created_at >= created_at && c.credential != credential => Op::Nop,
                _ => Op::Put(fresh),
            }
        });
        if !matches!(result, CompResult::Unchanged(_)) {
            self.cache(kind).insert(credential.to_owned(), session.clone());
        }
    }

    pub(crate) fn evict(&self, kind: SessionKind, credential: &str) {
        self.cache(kind).invalidate(credential);
    }

    /// A new session `credential` was created for `openid` on this instance,
    /// revoking the user's previous one: stop serving that one at once.
    pub(crate) fn replaced(
        &self,
        openid: &str,
        kind: SessionKind,
        credential: &str,
        created_at: u64,
    ) {
        let fresh = Current { kind, credential: credential.to_owned(), created_at };
        if let Some(old) = self.current.get(openid) {
            self.cache(old.kind).invalidate(&old.credential);
        }
        self.current.insert(openid.to_owned(), fresh);
    }
}

fn cache<V: Clone + Send + Sync + 'static>(cfg: L1Config) -> moka::sync::Cache<String, V> {
    moka::sync::Cache::builder().max_capacity(cfg.max_entries).time_to_live(cfg.ttl).build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::value::RawValue;

    use super::*;
    use crate::store::{SessionId, SessionRecord};

    fn session(kind: SessionKind, credential: &str, openid: &str) -> WxSession {
        session_at(kind, credential, openid, 0)
    }

    fn session_at(kind: SessionKind, credential: &str, openid: &str, created_at: u64) -> WxSession {
        let id = match kind {
            SessionKind::Code => SessionId::code(credential),
            SessionKind::Token => SessionId::token(credential),
        };
        let user: Arc<RawValue> = Arc::from(RawValue::from_string("{}".into()).unwrap());
        let record = SessionRecord {
            openid: openid.into(),
            session_key: "AAAAAAAAAAAAAAAAAAAAAA==".into(),
            unionid: None,
            user,
            created_at,
        };
        WxSession::new(id, record)
    }

    #[test]
    fn a_new_login_of_the_user_evicts_the_previous_credential_at_once() {
        let l1 = L1::new(L1Config { ttl: Duration::from_secs(60), max_entries: 100 });
        l1.put(SessionKind::Code, "code-a", &session(SessionKind::Code, "code-a", "o_1"));
        l1.put(SessionKind::Token, "tok-x", &session(SessionKind::Token, "tok-x", "o_2"));
        assert!(l1.get(SessionKind::Code, "code-a").is_some());
        l1.replaced("o_1", SessionKind::Token, "tok-b", 0);
        assert!(l1.get(SessionKind::Code, "code-a").is_none(), "revoked session still served");
        assert!(l1.get(SessionKind::Token, "tok-x").is_some(), "another user is untouched");
        // The new session is served once loaded.
        l1.put(SessionKind::Token, "tok-b", &session(SessionKind::Token, "tok-b", "o_1"));
        assert!(l1.get(SessionKind::Token, "tok-b").is_some());
    }

    #[test]
    fn a_load_that_raced_a_newer_login_never_takes_over() {
        let l1 = L1::new(L1Config { ttl: Duration::from_secs(60), max_entries: 100 });
        l1.replaced("o_1", SessionKind::Token, "tok-new", 200);
        // The old session was read from the store just before it was revoked.
        l1.put(
            SessionKind::Token,
            "tok-old",
            &session_at(SessionKind::Token, "tok-old", "o_1", 100),
        );
        assert!(l1.get(SessionKind::Token, "tok-old").is_none());
        l1.put(
            SessionKind::Token,
            "tok-new",
            &session_at(SessionKind::Token, "tok-new", "o_1", 200),
        );
        assert!(l1.get(SessionKind::Token, "tok-new").is_some());
        // The same race within one second (created_at is in whole seconds).
        l1.replaced("o_2", SessionKind::Token, "tok-b", 300);
        l1.put(SessionKind::Token, "tok-a", &session_at(SessionKind::Token, "tok-a", "o_2", 300));
        assert!(l1.get(SessionKind::Token, "tok-a").is_none(), "a same-second race took over");
        assert!(l1.get(SessionKind::Token, "tok-b").is_none(), "tok-b was never put");
        l1.put(SessionKind::Token, "tok-b", &session_at(SessionKind::Token, "tok-b", "o_2", 300));
        assert!(l1.get(SessionKind::Token, "tok-b").is_some());
    }
}
