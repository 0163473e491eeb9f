//! Redis session store, on one Redis or on a Redis Cluster.
//!
//! # Keys
//!
//! Every key starts with the configured prefix. `<tag>` is a user's slot tag,
//! [`super::user_tag`]: 8 hex digits of SHA-1(openid).
//!
//! | key | value |
//! | --- | --- |
//! | `{prefix}openid:{u:<tag>}:<sha1(openid)>` | the key suffix of the user's current session, e.g. `code:abc` |
//! | `{prefix}token:{u:<tag>}:<sha256(token)>` | a token session (JSON record) |
//! | `{prefix}code:<code>` | a compat session (JSON record) |
//! | `{prefix}kv:<name>` | a shared value |
//! | `{prefix}lock:<name>` | a lock's fencing token |
//! | `{prefix}fail:token:{u:<tag>}:key:<sha256>` | open-data decryption failures of one user's session_key in the current window (a count; see [`super::SessionId::failure_budget`]) |
//!
//! `{u:<tag>}` is a Redis Cluster hash tag: a user's openid index and all of
//! their token sessions live in one slot. A token is `<tag>.<256 random bits>`
//! (as the token login issues it), so a request's token alone names its slot. A token
//! without a tag (issued before tags existed) lives at `{prefix}token:<sha256>`
//! and is served like any other; on a cluster it is handled like a compat
//! session below. No key name holds a raw openid or a raw token.
//!
//! # Atomicity
//!
//! On one Redis every login and every logout is one Lua script: writing the
//! new session, repointing the openid index and deleting the previous session
//! happen all at once or not at all.
//!
//! On a Redis Cluster a script may only touch one slot:
//!
//! * **token login** (the session shares its user's slot): one script writes
//!   the session, repoints the index and deletes a previous *token* session,
//!   all at once. A previous *compat* session (another slot) is deleted right
//!   after, as a second step.
//! * **compat login**: the session's key is the WeChat code, which the
//!   gateway does not choose, so it lives in the code's slot. Three steps:
//!   (1) write the session in the code's slot; (2) one script in the user's
//!   slot repoints the index and hands back the previous session (deleting it
//!   there when it is a token session of that slot); (3) delete the previous
//!   session in its own slot. Step 2 is the commit point: concurrent logins of
//!   one user are ordered by it, each previous session is handed to exactly
//!   one successor, and the index never points at a session not yet written.
//!   If step 2 fails the new session is deleted again (best effort) and the
//!   login fails. If the operation fails or times out between step 2 and
//!   step 3 (or step 2's reply is lost and its retry finds the work done),
//!   the previous session stays usable until its own TTL
//!   (`session.compat_ttl` or the token lifetimes). Fail-closed corner: a
//!   duplicate request re-writing the same code session while another login
//!   of that user revokes it can leave the user with no live session (they
//!   log in again).
//! * **logout**: the session is deleted first (one script); when its index
//!   lives in another slot, the index entry is cleared next, only if it still
//!   points at the deleted session. A failure in between leaves an index entry
//!   pointing at nothing, which the next login simply replaces.
//!
//! A prefix that itself holds a hash tag (e.g. `{weapp}:`) puts every key in
//! one slot: fully atomic, but not spread over the cluster.
//!
//! # Upgrading from the untagged layout
//!
//! Existing sessions keep working (their keys did not change), but the openid
//! index moved: the first login after the upgrade does not revoke a session
//! created before it (that one still ends with its TTL). Instances of the old
//! layout cannot serve tokens issued by this one: upgrade all instances
//! together, or expect some clients to log in again during the roll-out.
//!
//! # Connections
//!
//! The store connects lazily: [`RedisStore::new`] and [`RedisStore::new_cluster`]
//! never touch the network, so the process starts (and answers 503) while Redis
//! is down, and recovers by itself when Redis comes back. Every operation is
//! bounded by the op timeout, reconnects, cluster redirects and every step of
//! a login included. Errors never carry a URL, a key or a value.
//!
//! Needs Redis 6.2 or later (`GETEX`, `SET … KEEPTTL`), alone or in a cluster.

mod connection;
mod keys;

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use self::connection::{Connector, redact_url};
use self::keys::{
    COUNT_FAILURE_LUA, CREATE_LUA, DELETE_LUA, Keys, UNINDEX_LUA, UNLOCK_LUA, same_slot,
};
use super::{
    Expiry, SessionId, SessionRecord, SessionStore, SharedStore, StoreError, random_token, unix_now,
};

/// The key prefix unless one is set.
const DEFAULT_PREFIX: &str = "weapp:";
/// The bound on one store operation unless one is set.
const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings for [`RedisStore::new`]: one Redis server.
///
/// ```
/// use std::time::Duration;
/// use weapp_session::store::{RedisStore, RedisStoreConfig};
///
/// let config = RedisStoreConfig::new("redis://127.0.0.1:6379/0")
///     .with_prefix("myapp:")
///     .with_op_timeout(Duration::from_millis(500));
/// let store = RedisStore::new(config)?; // connects on first use
/// # let _ = store;
/// # Ok::<(), weapp_session::store::StoreError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisStoreConfig {
    /// `redis://host:port/db` (may carry a password; never logged).
    pub url: String,
    /// Prefix for every key, e.g. `weapp:`.
    pub prefix: String,
    /// Bound on one store operation, including a reconnect.
    pub op_timeout: Duration,
}

impl RedisStoreConfig {
    /// One Redis at `url` (`redis://[:password@]host:port/db`), keys under
    /// `weapp:`, every operation bounded by 2 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), prefix: DEFAULT_PREFIX.to_owned(), op_timeout: DEFAULT_OP_TIMEOUT }
    }

    /// Prefix every key with `prefix` (several services can share a Redis).
    ///
    /// ```
    /// let config = weapp_session::store::RedisStoreConfig::new("redis://127.0.0.1")
    ///     .with_prefix("shop:");
    /// assert_eq!(config.prefix, "shop:");
    /// ```
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Bound every store operation, a reconnect included, by `op_timeout`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = weapp_session::store::RedisStoreConfig::new("redis://127.0.0.1")
    ///     .with_op_timeout(Duration::from_millis(300));
    /// assert_eq!(config.op_timeout, Duration::from_millis(300));
    /// ```
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }
}

impl std::fmt::Debug for RedisStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

/// Settings for [`RedisStore::new_cluster`]: a Redis Cluster.
///
/// ```
/// use weapp_session::store::{RedisClusterConfig, RedisStore};
///
/// let config = RedisClusterConfig::new(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
///     .with_prefix("myapp:");
/// let store = RedisStore::new_cluster(config)?; // connects on first use
/// # let _ = store;
/// # Ok::<(), weapp_session::store::StoreError>(())
/// ```
#[cfg(feature = "redis-cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisClusterConfig {
    /// Some of the cluster's nodes, `redis://[:password@]host:port` each (the
    /// rest are discovered). May carry passwords; never logged.
    pub nodes: Vec<String>,
    /// Prefix for every key, e.g. `weapp:`.
    pub prefix: String,
    /// Bound on one store operation, including reconnects and redirects.
    pub op_timeout: Duration,
}

#[cfg(feature = "redis-cluster")]
impl RedisClusterConfig {
    /// A Redis Cluster reached through `nodes` (some of its nodes,
    /// `redis://[:password@]host:port` each), keys under `weapp:`, every
    /// operation bounded by 2 s.
    pub fn new<I, N>(nodes: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        Self {
            nodes: nodes.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_owned(),
            op_timeout: DEFAULT_OP_TIMEOUT,
        }
    }

    /// Prefix every key with `prefix`. A prefix holding a hash tag (e.g.
    /// `{myapp}:`) puts every key in one slot: fully atomic, not spread.
    ///
    /// ```
    /// let config = weapp_session::store::RedisClusterConfig::new(["redis://10.0.0.1:7000"])
    ///     .with_prefix("shop:");
    /// assert_eq!(config.prefix, "shop:");
    /// ```
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Bound every store operation, reconnects and redirects included, by
    /// `op_timeout`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = weapp_session::store::RedisClusterConfig::new(["redis://10.0.0.1:7000"])
    ///     .with_op_timeout(Duration::from_secs(1));
    /// assert_eq!(config.op_timeout, Duration::from_secs(1));
    /// ```
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }
}

#[cfg(feature = "redis-cluster")]
impl std::fmt::Debug for RedisClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| redact_url(n)).collect();
        f.debug_struct("RedisClusterConfig")
            .field("nodes", &nodes)
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

/// A longest TTL handed to Redis (about 1000 years); Redis rejects expiries
/// that overflow its clock.
const MAX_TTL_MS: u64 = 1 << 45;

/// A TTL in whole milliseconds, at least 1 so a short TTL never becomes "no expiry"
/// or an invalid `PX 0`.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(MAX_TTL_MS).clamp(1, MAX_TTL_MS)
}

struct Scripts {
    count_failure: Script,
    create: Script,
    delete: Script,
    unindex: Script,
    unlock: Script,
}

/// A [`super::SessionStore`] backed by Redis or a Redis Cluster.
pub struct RedisStore {
    conn: Connector,
    keys: Keys,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.conn.is_cluster())
            .field("url", &self.conn.redacted())
            .field("prefix", &self.keys.prefix())
            .field("op_timeout", &self.conn.op_timeout())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on one Redis. Checks the URL but does not connect: the first
    /// operation does, and a failed connection is retried by later operations.
    pub fn new(cfg: RedisStoreConfig) -> Result<Self, StoreError> {
        Ok(Self::with(Connector::single(&cfg.url, cfg.op_timeout)?, cfg.prefix))
    }

    /// A store on a Redis Cluster. Checks the node URLs but does not connect:
    /// the first operation does, and the cluster client reconnects and follows
    /// slot moves by itself.
    #[cfg(feature = "redis-cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub fn new_cluster(cfg: RedisClusterConfig) -> Result<Self, StoreError> {
        Ok(Self::with(Connector::cluster(&cfg.nodes, cfg.op_timeout)?, cfg.prefix))
    }

    /// A store on the caller's own connection to one Redis (a
    /// [`redis::aio::ConnectionManager`] it configured: TLS, ACL user,
    /// timeouts). Each store operation is still bounded by `op_timeout`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use weapp_session::redis; // the `redis` version this crate speaks
    /// use weapp_session::store::RedisStore;
    ///
    /// # async fn demo() -> Result<(), redis::RedisError> {
    /// let client = redis::Client::open("redis://127.0.0.1:6379/0")?;
    /// let conn = redis::aio::ConnectionManager::new(client).await?;
    /// let store = RedisStore::from_connection_manager(conn, "myapp:", Duration::from_secs(2));
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_connection_manager(
        conn: redis::aio::ConnectionManager,
        prefix: impl Into<String>,
        op_timeout: Duration,
    ) -> Self {
        Self::with(Connector::given_single(conn, op_timeout), prefix.into())
    }

    /// A store on the caller's own Redis Cluster connection. Each store
    /// operation is still bounded by `op_timeout`.
    #[cfg(feature = "redis-cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub fn from_cluster_connection(
        conn: redis::cluster_async::ClusterConnection,
        prefix: impl Into<String>,
        op_timeout: Duration,
    ) -> Self {
        Self::with(Connector::given_cluster(conn, op_timeout), prefix.into())
    }

    fn with(conn: Connector, prefix: String) -> Self {
        Self {
            conn,
            keys: Keys::new(prefix),
            scripts: Scripts {
                count_failure: Script::new(COUNT_FAILURE_LUA),
                create: Script::new(CREATE_LUA),
                delete: Script::new(DELETE_LUA),
                unindex: Script::new(UNINDEX_LUA),
                unlock: Script::new(UNLOCK_LUA),
            },
        }
    }

    /// `'1'` when scripts must stay within one cluster slot.
    fn cluster_flag(&self) -> &'static str {
        if self.conn.is_cluster() { "1" } else { "0" }
    }

    /// Whether two keys may be written by one script.
    fn together(&self, a: &str, b: &str) -> bool {
        !self.conn.is_cluster() || same_slot(a, b)
    }

    /// Delete one key (in whatever slot it is).
    async fn del(&self, op: &'static str, key: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        self.conn.query::<i64>(op, true, &cmd).await.map(|_| ())
    }

    async fn create_unbounded(
        &self,
        id: &SessionId,
        record: &SessionRecord,
        ttl: Duration,
        index_ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = record.to_json()?;
        let session = self.keys.session(id);
        let index = self.keys.index(&record.openid);
        let mut inv = self.scripts.create.prepare_invoke();
        inv.key(&index)
            .arg(self.keys.prefix())
            .arg(id.key_suffix())
            .arg(ttl_ms(index_ttl))
            .arg(self.cluster_flag());
        let previous = if self.together(&session, &index) {
            // One script: session, index and (same-slot) revocation at once.
            inv.key(&session).arg(json).arg(ttl_ms(ttl));
            self.conn.invoke::<Option<String>>("create", &inv).await?
        } else {
            // Step 1: the session, in its own slot.
            let mut set = redis::cmd("SET");
            set.arg(&session).arg(json).arg("PX").arg(ttl_ms(ttl));
            self.conn.query::<()>("create", true, &set).await?;
            // Step 2 (the commit point): repoint the index.
            match self.conn.invoke::<Option<String>>("create", &inv).await {
                Ok(previous) => previous,
                Err(e) => {
                    // Fail closed: the login failed, so its session must not
                    // linger unindexed (where no later login would revoke it).
                    if self.del("create", &session).await.is_err() {
                        crate::warn_limited!(
                            "redis create: could not remove an uncommitted session"
                        );
                    }
                    return Err(e);
                }
            }
        };
        // Step 3 where needed: the previous session, in its own slot.
        if let Some(previous) = previous {
            self.del("create", &previous).await?;
        }
        Ok(())
    }

    async fn delete_unbounded(&self, id: &SessionId) -> Result<(), StoreError> {
        let suffix = id.key_suffix();
        let mut inv = self.scripts.delete.prepare_invoke();
        inv.key(self.keys.session(id))
            .arg(self.keys.prefix())
            .arg(&suffix)
            .arg(self.cluster_flag());
        // In a cluster the index may live in another slot: clear it next.
        if let Some(index) = self.conn.invoke::<Option<String>>("delete", &inv).await? {
            let mut inv = self.scripts.unindex.prepare_invoke();
            inv.key(index).arg(&suffix);
            self.conn.invoke::<i64>("delete", &inv).await?;
        }
        Ok(())
    }

    async fn load_and_touch_unbounded(
        &self,
        id: &SessionId,
        expiry: Expiry,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let key = self.keys.session(id);
        // Slide to the idle TTL first (one round trip in the common case) ...
        let mut getex = redis::cmd("GETEX");
        getex.arg(&key).arg("PX").arg(ttl_ms(expiry.idle));
        let Some(json) = self.conn.query::<Option<String>>("load_and_touch", true, &getex).await?
        else {
            return Ok(None);
        };
        let record = SessionRecord::from_json(&json)?;
        // ... then apply the absolute lifetime.
        match expiry.remaining(record.created_at, unix_now()) {
            None => {
                self.delete_unbounded(id).await?;
                Ok(None)
            }
            Some(ttl) => {
                if ttl < expiry.idle {
                    let mut pexpire = redis::cmd("PEXPIRE");
                    pexpire.arg(&key).arg(ttl_ms(ttl));
                    self.conn.query::<i64>("load_and_touch", true, &pexpire).await?;
                }
                Ok(Some(record))
            }
        }
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    #[tracing::instrument(name = "redis_store.load", skip_all, fields(kind = id.kind.namespace()))]
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.keys.session(id));
        self.conn
            .bounded("load", async {
                match self.conn.query::<Option<String>>("load", true, &cmd).await? {
                    Some(json) => SessionRecord::from_json(&json).map(Some),
                    None => Ok(None),
                }
            })
            .await
    }

    #[tracing::instrument(
        name = "redis_store.load_and_touch",
        skip_all,
        fields(kind = id.kind.namespace())
    )]
    async fn load_and_touch(
        &self,
        id: &SessionId,
        expiry: Expiry,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.conn.bounded("load_and_touch", self.load_and_touch_unbounded(id, expiry)).await
    }

    #[tracing::instrument(name = "redis_store.create", skip_all, fields(kind = id.kind.namespace()))]
    async fn create(
        &self,
        id: &SessionId,
        record: &SessionRecord,
        ttl: Duration,
        index_ttl: Duration,
    ) -> Result<(), StoreError> {
        self.conn.bounded("create", self.create_unbounded(id, record, ttl, index_ttl)).await
    }

    #[tracing::instrument(name = "redis_store.update", skip_all, fields(kind = id.kind.namespace()))]
    async fn update(&self, id: &SessionId, record: &SessionRecord) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.session(id)).arg(record.to_json()?).arg("XX").arg("KEEPTTL");
        self.conn
            .bounded("update", self.conn.query::<Option<String>>("update", true, &cmd))
            .await
            .map(|reply| reply.is_some())
    }

    #[tracing::instrument(name = "redis_store.delete", skip_all, fields(kind = id.kind.namespace()))]
    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.conn.bounded("delete", self.delete_unbounded(id)).await
    }

    #[tracing::instrument(name = "redis_store.current_for_openid", skip_all)]
    async fn current_for_openid(&self, openid: &str) -> Result<Option<SessionId>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.keys.index(openid));
        self.conn
            .bounded(
                "current_for_openid",
                self.conn.query::<Option<String>>("current_for_openid", true, &cmd),
            )
            .await
            .map(|suffix| suffix.and_then(|s| SessionId::from_key_suffix(&s)))
    }

    #[tracing::instrument(name = "redis_store.ping", skip_all)]
    async fn ping(&self) -> Result<(), StoreError> {
        if !self.conn.is_cluster() {
            let cmd = redis::cmd("PING");
            return self
                .conn
                .bounded("ping", self.conn.query::<String>("ping", true, &cmd))
                .await
                .map(|_| ());
        }
        // A cluster is ready when it serves every slot, as one of its nodes
        // sees it (a master down longer than the node timeout makes it `fail`).
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("INFO");
        let info = self.conn.bounded("ping", self.conn.query::<String>("ping", true, &cmd)).await?;
        if info.lines().any(|l| l.trim() == "cluster_state:ok") {
            Ok(())
        } else {
            Err(StoreError::Unavailable("redis ping: the cluster does not serve every slot".into()))
        }
    }

    /// One script (`INCR`, then `PEXPIRE` on a new counter). Retried once
    /// like every script: if a first run took effect but its reply was lost,
    /// the failure counts twice (fail closed: the budget only runs out sooner).
    #[tracing::instrument(name = "redis_store.count_failure", skip_all, fields(kind = id.kind.namespace()))]
    async fn count_failure(&self, id: &SessionId, window: Duration) -> Result<u64, StoreError> {
        let mut inv = self.scripts.count_failure.prepare_invoke();
        inv.key(self.keys.failures(id)).arg(ttl_ms(window));
        self.conn.bounded("count_failure", self.conn.invoke::<u64>("count_failure", &inv)).await
    }
}

#[async_trait]
impl SharedStore for RedisStore {
    #[tracing::instrument(name = "redis_store.kv_get", skip_all, fields(name = %name))]
    async fn kv_get(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.keys.kv(name));
        self.conn.bounded("kv_get", self.conn.query::<Option<String>>("kv_get", true, &cmd)).await
    }

    #[tracing::instrument(name = "redis_store.kv_set", skip_all, fields(name = %name))]
    async fn kv_set(&self, name: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.kv(name)).arg(value).arg("PX").arg(ttl_ms(ttl));
        self.conn.bounded("kv_set", self.conn.query::<()>("kv_set", true, &cmd)).await
    }

    #[tracing::instrument(name = "redis_store.try_lock", skip_all, fields(name = %name))]
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        let token = random_token(16)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.lock(name)).arg(&token).arg("NX").arg("PX").arg(ttl_ms(ttl));
        // Not retried here: if a first attempt took the lock but its answer
        // was lost, a retry would report the lock as held by someone else (the
        // lock then just expires). The cluster client may still retry a
        // request it saw fail, with the same harmless outcome.
        self.conn
            .bounded("try_lock", self.conn.query::<Option<String>>("try_lock", false, &cmd))
            .await
            .map(|taken| taken.map(|_| token))
    }

    #[tracing::instrument(name = "redis_store.unlock", skip_all, fields(name = %name))]
    async fn unlock(&self, name: &str, token: &str) -> Result<(), StoreError> {
        let mut inv = self.scripts.unlock.prepare_invoke();
        inv.key(self.keys.lock(name)).arg(token);
        self.conn.bounded("unlock", self.conn.invoke::<i64>("unlock", &inv)).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let cfg = RedisStoreConfig {
            url: "redis://user:hunter2@localhost:6379/0".into(),
            prefix: "p:".into(),
            op_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let store = RedisStore::new(cfg).unwrap();
        assert!(!format!("{store:?}").contains("hunter2"));

        let cfg = RedisClusterConfig {
            nodes: vec![
                "redis://:hunter2@10.0.0.1:7000".into(),
                "redis://:hunter2@10.0.0.2:7000".into(),
            ],
            prefix: "p:".into(),
            op_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let store = RedisStore::new_cluster(cfg).unwrap();
        let printed = format!("{store:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("10.0.0.2"), "{printed}");
    }

    #[test]
    fn invalid_url_error_does_not_quote_it() {
        let cfg = RedisStoreConfig {
            url: "http://user:hunter2@localhost/".into(),
            prefix: "p:".into(),
            op_timeout: Duration::from_secs(1),
        };
        let err = RedisStore::new(cfg).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn invalid_cluster_nodes_are_refused_without_quoting_them() {
        let cluster = |nodes: &[&str]| {
            RedisStore::new_cluster(RedisClusterConfig {
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
                prefix: "p:".into(),
                op_timeout: Duration::from_secs(1),
            })
        };
        for nodes in [
            &[][..],
            &["redis://:hunter2@10.0.0.1:7000", "http://:hunter2@10.0.0.2/"][..],
            &["redis://:hunter2@10.0.0.1:7000", "redis://:other@10.0.0.2:7000"][..],
        ] {
            let err = cluster(nodes).unwrap_err().to_string();
            assert!(!err.contains("hunter2") && !err.contains("10.0.0"), "{err}");
        }
        assert!(cluster(&["redis://a:7000", "http://b"]).unwrap_err().to_string().contains("#2"));
    }

    #[test]
    fn ttls_never_round_to_zero() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(1)), 1000);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
    }
}
