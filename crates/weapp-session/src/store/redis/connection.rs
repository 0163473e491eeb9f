//! The connection behind [`super::RedisStore`]: one Redis or a Redis Cluster,
//! created lazily, shared by every operation, every operation bounded.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

#[cfg(feature = "redis-cluster")]
use redis::IntoConnectionInfo;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
#[cfg(feature = "redis-cluster")]
use redis::cluster::{ClusterClient, ClusterConfig};
#[cfg(feature = "redis-cluster")]
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, ScriptInvocation, Value,
};

use super::super::StoreError;

/// How often the cluster client retries one request itself (redirects after a
/// resharding, a failover in progress), each retry after a short backoff. The
/// whole operation stays bounded by the op timeout.
#[cfg(feature = "redis-cluster")]
const CLUSTER_RETRIES: u32 = 4;
/// Shortest backoff between two cluster retries, in milliseconds.
#[cfg(feature = "redis-cluster")]
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 20;

/// The URL with its password replaced, for logs and `Debug`.
pub(super) fn redact_url(raw: &str) -> String {
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

/// A description of a Redis error that carries neither a URL nor any key or value.
pub(super) fn describe(e: &RedisError) -> String {
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

pub(super) fn unavailable(op: &str, e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis {op}: {}", describe(e)))
}

/// What the store talks to.
enum Target {
    /// One Redis server (or a proxy in front of many).
    Single(redis::Client),
    /// A Redis Cluster, found from these seed nodes (boxed: it is large).
    #[cfg(feature = "redis-cluster")]
    Cluster(Box<ClusterClient>),
    /// A connection the caller built (its own `ConnectionManager` or cluster
    /// connection): used as is, never replaced.
    Given(Conn),
}

/// A live connection of either kind; both multiplex and reconnect by themselves.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    fn is_cluster(&self) -> bool {
        match self {
            Conn::Single(_) => false,
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(_) => true,
        }
    }
}

/// The connection slot: created on first use, dropped (and recreated on the
/// next call) if it fails in a way the connection does not recover from itself.
#[derive(Default)]
struct Slot {
    generation: u64,
    conn: Option<Conn>,
}

/// Creates the connection on first use and runs bounded round trips over it.
pub(super) struct Connector {
    target: Target,
    /// What to show in logs and `Debug`: the URL(s) without passwords.
    redacted: String,
    op_timeout: Duration,
    slot: Mutex<Slot>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.is_cluster() { "cluster" } else { "single" };
        f.debug_struct("Connector")
            .field("mode", &mode)
            .field("nodes", &self.redacted)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// One Redis at `url`. Checks the URL, does not connect.
    pub(super) fn single(url: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        // The parse error may quote the URL, which may carry a password: drop it.
        let client = redis::Client::open(url)
            .map_err(|_| StoreError::Unavailable("invalid redis URL".to_owned()))?;
        Ok(Self::with(Target::Single(client), redact_url(url), op_timeout))
    }

    /// A Redis Cluster seeded by `nodes`. Checks the URLs, does not connect.
    #[cfg(feature = "redis-cluster")]
    pub(super) fn cluster(nodes: &[String], op_timeout: Duration) -> Result<Self, StoreError> {
        if nodes.is_empty() {
            return Err(StoreError::Unavailable("no redis cluster nodes given".to_owned()));
        }
        let mut infos = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            // As above: never quote the URL.
            let info = node.as_str().into_connection_info().map_err(|_| {
                StoreError::Unavailable(format!("redis cluster node #{} is not a redis URL", i + 1))
            })?;
            infos.push(info);
        }
        let max_wait = u64::try_from(op_timeout.as_millis() / 4)
            .unwrap_or(u64::MAX)
            .max(CLUSTER_MIN_RETRY_WAIT_MS + 1);
        let client = ClusterClient::builder(infos)
            .connection_timeout(op_timeout)
            .response_timeout(op_timeout)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
            .max_retry_wait(max_wait)
            .build()
            .map_err(|_| {
                StoreError::Unavailable(
                    "redis cluster nodes must share one password, user name, TLS mode and \
                     database (0), and be TCP addresses"
                        .to_owned(),
                )
            })?;
        let redacted = nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>().join(", ");
        Ok(Self::with(Target::Cluster(Box::new(client)), format!("[{redacted}]"), op_timeout))
    }

    fn with(target: Target, redacted: String, op_timeout: Duration) -> Self {
        Self { target, redacted, op_timeout, slot: Mutex::new(Slot::default()) }
    }

    /// A connection the caller made: one Redis through its `ConnectionManager`.
    pub(super) fn given_single(conn: ConnectionManager, op_timeout: Duration) -> Self {
        Self::with(Target::Given(Conn::Single(conn)), "[caller's connection]".into(), op_timeout)
    }

    /// A connection the caller made: its Redis Cluster connection.
    #[cfg(feature = "redis-cluster")]
    pub(super) fn given_cluster(conn: ClusterConnection, op_timeout: Duration) -> Self {
        let redacted = "[caller's cluster connection]".into();
        Self::with(Target::Given(Conn::Cluster(conn)), redacted, op_timeout)
    }

    /// Whether this is a Redis Cluster (keys of one script must share a slot).
    pub(super) fn is_cluster(&self) -> bool {
        match &self.target {
            Target::Single(_) => false,
            #[cfg(feature = "redis-cluster")]
            Target::Cluster(_) => true,
            Target::Given(conn) => conn.is_cluster(),
        }
    }

    /// The URL(s) without passwords.
    pub(super) fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The bound on one store operation.
    pub(super) fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// The shared connection, created on first use. Creating it does not
    /// connect; it connects (and reconnects) on demand.
    fn connection(&self) -> Result<(u64, Conn), StoreError> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = &slot.conn {
            return Ok((slot.generation, conn.clone()));
        }
        // Both kinds spawn their driver on the current Tokio runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Unavailable("redis store used outside a Tokio runtime".into()));
        }
        let conn = match &self.target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.op_timeout))
                    .set_response_timeout(Some(self.op_timeout))
                    // Fail fast while Redis is down (requests get a quick 503);
                    // the next operation starts a fresh attempt.
                    .set_number_of_retries(0);
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map_err(|e| unavailable("connect", &e))?;
                Conn::Single(manager)
            }
            Target::Given(conn) => conn.clone(),
            #[cfg(feature = "redis-cluster")]
            Target::Cluster(client) => {
                // Connects to the seed nodes and reads the slot map in the
                // background; requests wait for it (within the op timeout).
                let config = ClusterConfig::new()
                    .set_connection_timeout(self.op_timeout)
                    .set_response_timeout(self.op_timeout);
                Conn::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        slot.generation += 1;
        slot.conn = Some(conn.clone());
        tracing::debug!(nodes = %self.redacted, "redis connection created");
        Ok((slot.generation, conn))
    }

    /// Forget the connection of `generation` so the next call builds a new one.
    fn discard(&self, generation: u64) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.generation == generation {
            slot.conn = None;
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
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            let (generation, conn) = self.connection()?;
            let err = match f(conn).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            // Both connection kinds reconnect by themselves after I/O errors;
            // one that failed any other unrecoverable way (auth, protocol)
            // would stay failed, so start over with a new one.
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

    /// Send one command.
    pub(super) async fn query<T>(
        &self,
        op: &'static str,
        idempotent: bool,
        cmd: &Cmd,
    ) -> Result<T, StoreError>
    where
        T: FromRedisValue,
    {
        self.exec(op, idempotent, move |mut c| async move { cmd.query_async::<T>(&mut c).await })
            .await
    }

    /// Run a script (`EVALSHA`, loading it first where the server lacks it).
    /// Retried once like an idempotent command: every script of the store
    /// leaves the same state when run twice. (A login script whose first run
    /// took effect answers nil the second time, so in a cluster a previous
    /// session in another slot is then not deleted: it ends with its TTL.)
    pub(super) async fn invoke<T>(
        &self,
        op: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError>
    where
        T: FromRedisValue,
    {
        self.exec(op, true, move |mut c| async move { invocation.invoke_async::<T>(&mut c).await })
            .await
    }

    /// Bound a whole store operation (all its round trips and reconnects).
    pub(super) async fn bounded<T>(
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
}
