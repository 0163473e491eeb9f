//! Redis session store: one shared, multiplexed, self-reconnecting connection.
//!
//! Keys (every one starts with the configured prefix):
//!
//! | key | value |
//! | --- | --- |
//! | `{prefix}code:{code}` / `{prefix}token:{sha256}` | the session record (JSON) |
//! | `{prefix}openid:{openid}` | the key suffix of the user's current session, e.g. `code:abc` |
//! | `{prefix}kv:{name}` | a shared value |
//! | `{prefix}lock:{name}` | a lock's fencing token |
//!
//! The store connects lazily: [`RedisStore::new`] never touches the network, so
//! the process starts (and answers 503) while Redis is down, and recovers by
//! itself when Redis comes back. Every operation is bounded by
//! [`RedisStoreConfig::op_timeout`], reconnect included.
//!
//! Needs Redis 6.2 or later (`GETEX`, `SET … KEEPTTL`).

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisError, RedisResult, Script, ScriptInvocation};

use super::{Expiry, SessionId, SessionRecord, SessionStore, StoreError, random_token, unix_now};

/// Settings for [`RedisStore`].
#[derive(Clone)]
pub struct RedisStoreConfig {
    /// `redis://host:port/db` (may carry a password; never logged).
    pub url: String,
    /// Prefix for every key, e.g. `weapp:`.
    pub prefix: String,
    /// Bound on one store operation, including a reconnect.
    pub op_timeout: Duration,
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

/// The URL with its password replaced, for logs and `Debug`.
fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                // Only fails for URLs that cannot carry credentials at all.
                let _ = u.set_password(Some("redacted"));
            }
            u.to_string()
        }
        Err(_) => "[unparseable url]".to_owned(),
    }
}

/// Create a session atomically: revoke the session the openid index points at
/// (when it is another one), write the new session and repoint the index.
///
/// KEYS: new session key, index key. ARGV: prefix, new key suffix, record JSON,
/// session TTL (ms), index TTL (ms).
const CREATE_LUA: &str = r"
local old = redis.call('GET', KEYS[2])
if old and old ~= ARGV[2]
   and (string.sub(old, 1, 5) == 'code:' or string.sub(old, 1, 6) == 'token:') then
  redis.call('DEL', ARGV[1] .. old)
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5])
return 1
";

/// Delete a session and the openid index entry if it points at this session.
///
/// KEYS: session key. ARGV: prefix, key suffix.
const DELETE_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
local ok, rec = pcall(cjson.decode, v)
if ok and type(rec) == 'table' and type(rec.openid) == 'string' then
  local index = ARGV[1] .. 'openid:' .. rec.openid
  if redis.call('GET', index) == ARGV[2] then
    redis.call('DEL', index)
  end
end
redis.call('DEL', KEYS[1])
return 1
";

/// Release a lock only if the caller's token still holds it.
///
/// KEYS: lock key. ARGV: token.
const UNLOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Longest TTL handed to Redis (about 1000 years); Redis rejects expiries that
/// overflow its clock.
const MAX_TTL_MS: u64 = 1 << 45;

/// A TTL in whole milliseconds, at least 1 so a short TTL never becomes "no expiry"
/// or an invalid `PX 0`.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(MAX_TTL_MS).clamp(1, MAX_TTL_MS)
}

/// A description of a Redis error that carries neither the URL nor any key or value.
fn describe(e: &RedisError) -> String {
    if let Some(code) = e.code() {
        return format!("server answered {code}");
    }
    let cause = if e.is_timeout() {
        "timed out"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_connection_dropped() {
        "connection lost"
    } else {
        "failed"
    };
    format!("{cause} ({:?})", e.kind())
}

fn unavailable(op: &str, e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis {op}: {}", describe(e)))
}

/// The connection slot: created on first use, dropped (and recreated on the
/// next call) if it fails in a way the manager does not recover from itself.
#[derive(Default)]
struct Slot {
    generation: u64,
    manager: Option<ConnectionManager>,
}

struct Scripts {
    create: Script,
    delete: Script,
    unlock: Script,
}

/// A [`super::SessionStore`] backed by Redis.
pub struct RedisStore {
    client: redis::Client,
    redacted_url: String,
    prefix: String,
    op_timeout: Duration,
    slot: Mutex<Slot>,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.redacted_url)
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `cfg`. Checks the URL but does not connect: the first
    /// operation does, and a failed connection is retried by later operations.
    pub fn new(cfg: RedisStoreConfig) -> Result<Self, StoreError> {
        // The parse error may quote the URL, which may carry a password: drop it.
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|_| StoreError::Unavailable("invalid redis URL".to_owned()))?;
        Ok(Self {
            client,
            redacted_url: redact_url(&cfg.url),
            prefix: cfg.prefix,
            op_timeout: cfg.op_timeout,
            slot: Mutex::new(Slot::default()),
            scripts: Scripts {
                create: Script::new(CREATE_LUA),
                delete: Script::new(DELETE_LUA),
                unlock: Script::new(UNLOCK_LUA),
            },
        })
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}{}", self.prefix, id.key_suffix())
    }

    fn index_key(&self, openid: &str) -> String {
        format!("{}openid:{openid}", self.prefix)
    }

    fn kv_key(&self, name: &str) -> String {
        format!("{}kv:{name}", self.prefix)
    }

    fn lock_key(&self, name: &str) -> String {
        format!("{}lock:{name}", self.prefix)
    }

    /// The shared connection manager, created on first use. Creating it does
    /// not connect; the manager connects (and reconnects) on demand.
    fn connection(&self) -> Result<(u64, ConnectionManager), StoreError> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(manager) = &slot.manager {
            return Ok((slot.generation, manager.clone()));
        }
        // The manager spawns its driver on the current Tokio runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Unavailable("redis store used outside a Tokio runtime".into()));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(self.op_timeout))
            // Fail fast while Redis is down (requests get a quick 503); the
            // next operation starts a fresh attempt.
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| unavailable("connect", &e))?;
        slot.generation += 1;
        slot.manager = Some(manager.clone());
        tracing::debug!(url = %self.redacted_url, "redis connection manager created");
        Ok((slot.generation, manager))
    }

    /// Forget the manager of `generation` so the next call builds a new one.
    fn discard(&self, generation: u64) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.generation == generation {
            slot.manager = None;
        }
    }

    /// Run one Redis round trip. An idempotent request is retried once after a
    /// connection error (the first request after a Redis restart meets the
    /// dead connection; the retry goes over the fresh one).
    async fn exec<T, F, Fut>(
        &self,
        op: &'static str,
        idempotent: bool,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            let (generation, conn) = self.connection()?;
            let err = match f(conn).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            // The manager reconnects by itself after I/O errors; a connection
            // that failed any other unrecoverable way (auth, protocol) would
            // stay failed, so start over with a new manager.
            if !err.is_io_error() && err.is_unrecoverable_error() {
                self.discard(generation);
            }
            let connection_problem = err.is_io_error() || err.is_unrecoverable_error();
            if idempotent && connection_problem && !retried {
                tracing::debug!(op, error = %describe(&err), "redis request failed; retrying once");
                retried = true;
                continue;
            }
            tracing::debug!(op, error = %describe(&err), "redis request failed");
            return Err(unavailable(op, &err));
        }
    }

    async fn query<T>(&self, op: &'static str, idempotent: bool, cmd: &Cmd) -> Result<T, StoreError>
    where
        T: FromRedisValue,
    {
        self.exec(op, idempotent, move |mut c| async move { cmd.query_async::<T>(&mut c).await })
            .await
    }

    async fn invoke<T>(
        &self,
        op: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError>
    where
        T: FromRedisValue,
    {
        // Every script here is idempotent: running it twice leaves the same state.
        self.exec(op, true, move |mut c| async move { invocation.invoke_async::<T>(&mut c).await })
            .await
    }

    /// Bound a whole store operation (all its round trips and reconnects).
    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(result) => result,
            Err(_) => {
                tracing::debug!(op, timeout = ?self.op_timeout, "redis operation timed out");
                Err(StoreError::Unavailable(format!(
                    "redis {op}: no answer within {:?}",
                    self.op_timeout
                )))
            }
        }
    }

    async fn delete_unbounded(&self, id: &SessionId) -> Result<(), StoreError> {
        let mut inv = self.scripts.delete.prepare_invoke();
        inv.key(self.session_key(id)).arg(&self.prefix).arg(id.key_suffix());
        self.invoke::<i64>("delete", &inv).await.map(|_| ())
    }

    async fn load_and_touch_unbounded(
        &self,
        id: &SessionId,
        expiry: Expiry,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let key = self.session_key(id);
        // Slide to the idle TTL first (one round trip in the common case) ...
        let mut getex = redis::cmd("GETEX");
        getex.arg(&key).arg("PX").arg(ttl_ms(expiry.idle));
        let Some(json) = self.query::<Option<String>>("load_and_touch", true, &getex).await? else {
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
                    self.query::<i64>("load_and_touch", true, &pexpire).await?;
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
        cmd.arg(self.session_key(id));
        self.bounded("load", async {
            match self.query::<Option<String>>("load", true, &cmd).await? {
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
        self.bounded("load_and_touch", self.load_and_touch_unbounded(id, expiry)).await
    }

    #[tracing::instrument(name = "redis_store.create", skip_all, fields(kind = id.kind.namespace()))]
    async fn create(
        &self,
        id: &SessionId,
        record: &SessionRecord,
        ttl: Duration,
        index_ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = record.to_json()?;
        let mut inv = self.scripts.create.prepare_invoke();
        inv.key(self.session_key(id))
            .key(self.index_key(&record.openid))
            .arg(&self.prefix)
            .arg(id.key_suffix())
            .arg(json)
            .arg(ttl_ms(ttl))
            .arg(ttl_ms(index_ttl));
        self.bounded("create", self.invoke::<i64>("create", &inv)).await.map(|_| ())
    }

    #[tracing::instrument(name = "redis_store.update", skip_all, fields(kind = id.kind.namespace()))]
    async fn update(&self, id: &SessionId, record: &SessionRecord) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.session_key(id)).arg(record.to_json()?).arg("XX").arg("KEEPTTL");
        self.bounded("update", self.query::<Option<String>>("update", true, &cmd))
            .await
            .map(|reply| reply.is_some())
    }

    #[tracing::instrument(name = "redis_store.delete", skip_all, fields(kind = id.kind.namespace()))]
    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.bounded("delete", self.delete_unbounded(id)).await
    }

    #[tracing::instrument(name = "redis_store.current_for_openid", skip_all)]
    async fn current_for_openid(&self, openid: &str) -> Result<Option<SessionId>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.index_key(openid));
        self.bounded(
            "current_for_openid",
            self.query::<Option<String>>("current_for_openid", true, &cmd),
        )
        .await
        .map(|suffix| suffix.and_then(|s| SessionId::from_key_suffix(&s)))
    }

    #[tracing::instrument(name = "redis_store.kv_get", skip_all, fields(name = %name))]
    async fn kv_get(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.kv_key(name));
        self.bounded("kv_get", self.query::<Option<String>>("kv_get", true, &cmd)).await
    }

    #[tracing::instrument(name = "redis_store.kv_set", skip_all, fields(name = %name))]
    async fn kv_set(&self, name: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.kv_key(name)).arg(value).arg("PX").arg(ttl_ms(ttl));
        self.bounded("kv_set", self.query::<()>("kv_set", true, &cmd)).await
    }

    #[tracing::instrument(name = "redis_store.try_lock", skip_all, fields(name = %name))]
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        let token = random_token(16)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.lock_key(name)).arg(&token).arg("NX").arg("PX").arg(ttl_ms(ttl));
        // Not retried: if a first attempt took the lock but its answer was
        // lost, a retry would report the lock as held by someone else.
        self.bounded("try_lock", self.query::<Option<String>>("try_lock", false, &cmd))
            .await
            .map(|taken| taken.map(|_| token))
    }

    #[tracing::instrument(name = "redis_store.unlock", skip_all, fields(name = %name))]
    async fn unlock(&self, name: &str, token: &str) -> Result<(), StoreError> {
        let mut inv = self.scripts.unlock.prepare_invoke();
        inv.key(self.lock_key(name)).arg(token);
        self.bounded("unlock", self.invoke::<i64>("unlock", &inv)).await.map(|_| ())
    }

    #[tracing::instrument(name = "redis_store.ping", skip_all)]
    async fn ping(&self) -> Result<(), StoreError> {
        let cmd = redis::cmd("PING");
        self.bounded("ping", self.query::<String>("ping", true, &cmd)).await.map(|_| ())
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
    fn ttls_never_round_to_zero() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(1)), 1000);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
    }
}
