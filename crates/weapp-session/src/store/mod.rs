//! Session storage: one small async trait and its backends.
//!
//! Keys live in separate namespaces so that a lookup by code can never read a
//! token or the openid index (the original `weapp-session` kept them in one
//! keyspace, so an openid sent as a code returned the victim's live code).

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

pub use self::memory::MemoryStore;
#[cfg(feature = "redis-cluster")]
pub use self::redis::RedisClusterConfig;
#[cfg(feature = "redis")]
pub use self::redis::{RedisStore, RedisStoreConfig};

/// Which namespace a session lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// compat dialect: the session is found by the `wx.login()` code.
    Code,
    /// token dialect: the session is found by a server-issued opaque token.
    Token,
}

impl SessionKind {
    /// The namespace segment used in store keys.
    pub fn namespace(self) -> &'static str {
        match self {
            SessionKind::Code => "code",
            SessionKind::Token => "token",
        }
    }
}

/// The address of one session: its namespace plus its id in that namespace.
///
/// For tokens the id is the SHA-256 of the token (hex), so a dump of the store
/// does not hand out live bearer tokens.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    /// The namespace.
    pub kind: SessionKind,
    /// The id within the namespace.
    pub id: String,
}

/// A compat id is the client's live code, so `Debug` shows only its first
/// four characters; a token id is already a digest.
impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            SessionKind::Code => {
                let head: String = self.id.chars().take(4).collect();
                write!(f, "SessionId(code:{head}…)")
            }
            SessionKind::Token => write!(f, "SessionId(token:{})", self.id),
        }
    }
}

impl SessionId {
    /// A compat session addressed by its code.
    pub fn code(code: &str) -> Self {
        Self { kind: SessionKind::Code, id: code.to_owned() }
    }

    /// A token session addressed by the token the client holds.
    ///
    /// The id is the SHA-256 of the whole token (hex). A token the token
    /// login issues starts with its user's slot tag (`<tag>.<random>`); the
    /// id then carries that tag as a Redis hash tag, `{u:<tag>}:<sha256>`, so
    /// the session lives in the same Redis Cluster slot as its user's openid
    /// index (see [`user_tag`]). Any other token (e.g. one issued before
    /// tags) keeps the plain `<sha256>` id.
    pub fn token(token: &str) -> Self {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        let id = match token_tag(token) {
            Some(tag) => format!("{{u:{tag}}}:{digest}"),
            None => digest,
        };
        Self { kind: SessionKind::Token, id }
    }

    /// Where the open-data decryption failures made with one user's
    /// session_key are counted ([`SessionStore::count_failure`]):
    /// `{u:<tag>}:key:<sha256(openid NUL session_key)>` in the token
    /// namespace, so in the user's Redis Cluster slot.
    ///
    /// Keyed by the key, not by the session: what must never meet thousands
    /// of probes is one session_key, and a new login that WeChat answers
    /// with the same session_key keeps the budget its predecessor used up.
    /// (A digest of a 128-bit random key names nothing an attacker can use.)
    pub fn failure_budget(openid: &str, session_key: &str) -> Self {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(openid.as_bytes());
        hasher.update([0u8]);
        hasher.update(session_key.as_bytes());
        let digest = hex::encode(hasher.finalize());
        Self { kind: SessionKind::Token, id: format!("{{u:{}}}:key:{digest}", user_tag(openid)) }
    }

    /// The key suffix (`code:…` / `token:…`) without the store prefix.
    pub fn key_suffix(&self) -> String {
        format!("{}:{}", self.kind.namespace(), self.id)
    }

    /// Parse a key suffix written by [`SessionId::key_suffix`].
    pub fn from_key_suffix(s: &str) -> Option<Self> {
        let (ns, id) = s.split_once(':')?;
        let kind = match ns {
            "code" => SessionKind::Code,
            "token" => SessionKind::Token,
            _ => return None,
        };
        Some(Self { kind, id: id.to_owned() })
    }
}

/// What the store keeps for one logged-in user.
///
/// `session_key` is WeChat's per-user key; it never leaves the server and is
/// redacted from `Debug`. A store keeps it as it is (for example as the JSON
/// of [`SessionRecord::to_json`]) and hands it back unchanged.
#[derive(Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionRecord {
    /// The user's openid within this mini-program.
    pub openid: String,
    /// WeChat's session_key (base64 text, as WeChat returns it).
    pub session_key: String,
    /// The unionid, when WeChat returned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    /// The user info as JSON text: the rawData object plus `openId`.
    pub user: Arc<RawValue>,
    /// Unix seconds when the session was created (for the absolute lifetime).
    pub created_at: u64,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("openid", &self.openid)
            .field("session_key", &"[redacted]")
            .field("unionid", &self.unionid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl SessionRecord {
    /// A record of `openid` created now, with no unionid.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use serde_json::value::RawValue;
    /// use weapp_session::store::SessionRecord;
    ///
    /// let user: Arc<RawValue> = Arc::from(RawValue::from_string(r#"{"openId":"o_1"}"#.into())?);
    /// let record = SessionRecord::new("o_1", "HyVFkGl5F5OQWJZZaNzBBg==", user);
    /// assert_eq!(record.openid, "o_1");
    /// assert!(record.created_at > 0);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn new(
        openid: impl Into<String>,
        session_key: impl Into<String>,
        user: Arc<RawValue>,
    ) -> Self {
        Self {
            openid: openid.into(),
            session_key: session_key.into(),
            unionid: None,
            user,
            created_at: unix_now(),
        }
    }

    /// Serialise for a backend that stores bytes.
    pub fn to_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Parse what [`SessionRecord::to_json`] wrote.
    pub fn from_json(s: &str) -> Result<Self, StoreError> {
        serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// Errors every backend converts into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend did not answer (down, refused, or slower than the bound).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with something this crate did not write.
    #[error("session store holds a corrupt record: {0}")]
    Corrupt(String),
}

/// Expiry rules applied when a session is loaded.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Expiry {
    /// Sliding idle TTL: each load extends the session to `now + idle`.
    pub idle: Duration,
    /// Absolute maximum lifetime counted from `created_at`.
    pub max_lifetime: Duration,
}

impl Expiry {
    /// Slide to `idle` on every load, never past `max_lifetime` after creation.
    ///
    /// ```
    /// use std::time::Duration;
    /// let expiry = weapp_session::store::Expiry::new(Duration::from_secs(60), Duration::from_secs(100));
    /// assert_eq!(expiry.remaining(1_000, 1_050), Some(Duration::from_secs(50)));
    /// assert_eq!(expiry.remaining(1_000, 1_100), None);
    /// ```
    pub fn new(idle: Duration, max_lifetime: Duration) -> Self {
        Self { idle, max_lifetime }
    }

    /// The TTL to give a session created at `created_at`, seen at `now`:
    /// `min(idle, created_at + max_lifetime - now)`, or `None` when it is past
    /// its absolute lifetime.
    pub fn remaining(&self, created_at: u64, now: u64) -> Option<Duration> {
        let end = created_at.saturating_add(self.max_lifetime.as_secs());
        if now >= end {
            return None;
        }
        Some(self.idle.min(Duration::from_secs(end - now)))
    }
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Shared values and locks beside the sessions, in the same backend: what a
/// cache shared by every instance (the WeChat access token) needs. Not used
/// by the session layer itself. Object safe.
#[async_trait]
pub trait SharedStore: Send + Sync + 'static {
    /// A shared value (e.g. the WeChat access token) under `{prefix}kv:{name}`.
    async fn kv_get(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Set a shared value with a TTL.
    async fn kv_set(&self, name: &str, value: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Try to take a named lock for `ttl`; `Some(fencing token)` when taken.
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<String>, StoreError>;

    /// Release a lock if `token` still holds it.
    async fn unlock(&self, name: &str, token: &str) -> Result<(), StoreError>;
}

/// The storage contract the session layer needs. Object safe.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Load a session; `None` when absent or expired.
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Load a session and slide its expiry per `expiry` (token dialect).
    /// A session past its absolute lifetime is deleted and reported absent.
    async fn load_and_touch(
        &self,
        id: &SessionId,
        expiry: Expiry,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Create a session atomically: write it with `ttl`, point the openid
    /// index at it (the index lives `index_ttl`), and delete the session the
    /// index pointed at before, if it was a different one.
    async fn create(
        &self,
        id: &SessionId,
        record: &SessionRecord,
        ttl: Duration,
        index_ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Replace a live session's record keeping its TTL. `false` if it is gone.
    async fn update(&self, id: &SessionId, record: &SessionRecord) -> Result<bool, StoreError>;

    /// Delete a session (logout), and the openid index entry if it points at it.
    async fn delete(&self, id: &SessionId) -> Result<(), StoreError>;

    /// The session the openid index points at, if any.
    async fn current_for_openid(&self, openid: &str) -> Result<Option<SessionId>, StoreError>;

    /// Liveness of the backend (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Count one open-data decryption failure under `id` and answer how many
    /// it has had in its current window, this one included. The gateway
    /// counts under [`SessionId::failure_budget`] (per user and session_key).
    ///
    /// The window starts with the first failure counted and lasts `window`;
    /// later failures do not extend it. The count lives in its own namespace
    /// (`fail:<key suffix>`, in the id's Redis Cluster slot for a tagged id),
    /// shared by every instance on the store, and is never a session. A
    /// count that cannot be recorded is an error: callers then refuse to
    /// answer (fail closed).
    async fn count_failure(&self, id: &SessionId, window: Duration) -> Result<u64, StoreError>;
}

/// Length of a user slot tag: hex digits of SHA-1(openid).
pub const USER_TAG_LEN: usize = 8;

/// The slot tag of a user: the first [`USER_TAG_LEN`] hex digits of
/// SHA-1(openid).
///
/// A user's openid index and token sessions carry it as the Redis hash tag
/// `{u:<tag>}`, so a Redis Cluster keeps them in one slot and a login stays
/// one atomic script. SHA-1 only because Redis scripts can compute it
/// (`redis.sha1hex`), which lets a logout script find the index of the record
/// it just read; it partitions keys and hides the raw openid from key names,
/// nothing here relies on it being collision resistant.
pub fn user_tag(openid: &str) -> String {
    use sha1::Digest;
    let mut tag = hex::encode(sha1::Sha1::digest(openid.as_bytes()));
    tag.truncate(USER_TAG_LEN);
    tag
}

/// The user slot tag a token starts with (`<tag>.<rest>`), if it has one.
fn token_tag(token: &str) -> Option<&str> {
    let (tag, rest) = token.split_once('.')?;
    let is_tag = tag.len() == USER_TAG_LEN
        && tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_tag && !rest.is_empty()).then_some(tag)
}

/// A new opaque token for `openid`'s session: `<user tag>.<256 random bits,
/// base64url>`. URL-safe (`[A-Za-z0-9_.-]`); the tag routes the token to its
/// user's Redis Cluster slot and says nothing more than which slot that is.
pub(crate) fn new_token(openid: &str) -> Result<String, StoreError> {
    Ok(format!("{}.{}", user_tag(openid), random_token(32)?))
}

/// A random URL-safe string of `bytes` random bytes from the OS CSPRNG.
pub(crate) fn random_token(bytes: usize) -> Result<String, StoreError> {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| StoreError::Unavailable(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_live_credential() {
        let code = format!("{:?}", SessionId::code("0a1b2c3d4e5f60718293a4b5c6d7e8f9"));
        assert_eq!(code, "SessionId(code:0a1b…)");
        let token = new_token("o_tom").unwrap();
        let printed = format!("{:?}", SessionId::token(&token));
        assert!(!printed.contains(&token), "{printed}");
    }

    #[test]
    fn issued_tokens_carry_their_users_tag() {
        let token = new_token("o_tom").unwrap();
        let (tag, random) = token.split_once('.').unwrap();
        assert_eq!(tag, user_tag("o_tom"));
        assert_eq!(tag.len(), USER_TAG_LEN);
        assert_eq!(random.len(), 43, "256 bits, base64url without padding");
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_ne!(new_token("o_tom").unwrap(), token);

        let id = SessionId::token(&token);
        assert!(id.id.starts_with(&format!("{{u:{tag}}}:")), "{}", id.id);
        assert_eq!(SessionId::from_key_suffix(&id.key_suffix()), Some(id));
    }

    #[test]
    fn failure_budgets_follow_the_users_key_in_the_users_slot() {
        let a = SessionId::failure_budget("o_tom", "a2V5LW9uZS0xMjM0NTY3OA==");
        assert_eq!(a, SessionId::failure_budget("o_tom", "a2V5LW9uZS0xMjM0NTY3OA=="));
        assert_ne!(a, SessionId::failure_budget("o_tom", "a2V5LXR3by0xMjM0NTY3OA=="));
        assert_ne!(a, SessionId::failure_budget("o_tim", "a2V5LW9uZS0xMjM0NTY3OA=="));
        let tag = format!("{{u:{}}}:key:", user_tag("o_tom"));
        assert!(a.id.starts_with(&tag), "{}", a.id);
        assert!(!a.id.contains("a2V5") && !a.id.contains("o_tom"), "{}", a.id);
        let token = SessionId::token(&new_token("o_tom").unwrap());
        assert_ne!(a, token, "never a session's address");
    }

    #[test]
    fn other_tokens_keep_the_plain_digest() {
        for token in
            ["legacy-token", "ABCDEF12.x", "abcdef1.x", "abcdef12.", "{u:x}.y", "g0000000.y"]
        {
            let id = SessionId::token(token);
            assert_eq!(id.id.len(), 64, "{token}: {}", id.id);
            assert!(id.id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        // The digest covers the whole token, tag included.
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(b"abcdef12.x"));
        assert_eq!(SessionId::token("abcdef12.x").id, format!("{{u:abcdef12}}:{digest}"));
    }
}
