//! `[session]` and `[redis]`: the session layer and its store.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::session::SessionConfig;

/// Which session store to use.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In process, bounded; one instance only.
    #[default]
    Memory,
    /// Redis (shared by all instances).
    Redis,
}

/// `[session]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSection {
    /// `memory` or `redis`.
    pub store: StoreKind,
    /// Lifetime of a compat (code) session.
    #[serde(with = "humantime_serde")]
    pub compat_ttl: Duration,
    /// Sliding idle TTL of a token.
    #[serde(with = "humantime_serde")]
    pub token_idle_ttl: Duration,
    /// Absolute lifetime of a token.
    #[serde(with = "humantime_serde")]
    pub token_max_lifetime: Duration,
    /// Paths the session layer leaves alone (exact, or prefix ending in `*`).
    pub ignore: Vec<String>,
    /// Bound on the memory store's entries.
    pub memory_max_entries: u64,
    /// Login attempts per client address (IPv6 per /64); omit to disable.
    pub login_rate_limit: Option<LoginRateLimitSection>,
    /// Code exchanges per second that may reach WeChat, for the whole
    /// instance (beyond it: 429 `ERR_TOO_MANY_REQUESTS`, `Retry-After: 1`).
    pub exchanges_per_second: u32,
    /// How many exchanges may start at once within that budget.
    pub exchanges_burst: u32,
    /// Put the in-process L1 session cache in front of the store.
    pub l1: bool,
    /// TTL of an L1 entry (default 1 s): revocations on other instances are
    /// seen at most this late.
    #[serde(with = "humantime_serde")]
    pub l1_ttl: Duration,
    /// Most sessions the L1 cache keeps.
    pub l1_max_entries: u64,
}

/// `[session.login_rate_limit]`: login attempts per client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRateLimitSection {
    /// Sustained login attempts per minute per client address.
    pub per_minute: u32,
    /// How many attempts may arrive at once (0 counts as 1).
    pub burst: u32,
}

impl Default for SessionSection {
    /// The session library's own defaults, so the two cannot drift.
    fn default() -> Self {
        let d = SessionConfig::default();
        let budget = d.exchange_budget();
        Self {
            store: StoreKind::Memory,
            compat_ttl: d.compat_ttl(),
            token_idle_ttl: d.token_idle_ttl(),
            token_max_lifetime: d.token_max_lifetime(),
            ignore: d.ignore().to_vec(),
            memory_max_entries: 100_000,
            login_rate_limit: d.login_rate_limit().map(|l| LoginRateLimitSection {
                per_minute: l.per_minute.get(),
                burst: l.burst.get(),
            }),
            exchanges_per_second: budget.map_or(50, |b| b.per_second.get()),
            exchanges_burst: budget.map_or(100, |b| b.burst.get()),
            l1: false,
            l1_ttl: Duration::from_secs(1),
            l1_max_entries: 100_000,
        }
    }
}

/// `[redis]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// `redis://[:password@]host:port/db`. May carry a password: never printed.
    /// Ignored when `cluster_nodes` is set.
    pub url: SecretString,
    /// Redis Cluster seed nodes, `redis://[:password@]host:port` each. When
    /// not empty the store runs in cluster mode. May carry passwords: never
    /// printed.
    pub cluster_nodes: Vec<SecretString>,
    /// Prefix of every key.
    pub prefix: String,
    /// Bound on one store operation; past it the layer answers 503.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSection")
            .field("url", &"[redacted]")
            .field("cluster_nodes", &format_args!("[{} redacted]", self.cluster_nodes.len()))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379"),
            cluster_nodes: Vec::new(),
            prefix: "weapp:".into(),
            timeout: Duration::from_secs(2),
        }
    }
}

impl RedisSection {
    /// Whether the store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }
}
