//! `[data]`, `[pk]`, `[notices]`, `[message]` and `[open_data]`: the
//! business modules' sections.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::ConfigError;
use crate::pk::BoardCacheConfig;

/// Most decryption failures `open_data.max_decrypt_failures` may allow per
/// window: thousands against one key would make a padding oracle practical
/// again, even with every answer alike.
pub const MAX_DECRYPT_FAILURES_LIMIT: u64 = 1_000;

/// Shortest `open_data.failure_window`: the budget must not renew quickly.
pub const MIN_FAILURE_WINDOW: Duration = Duration::from_secs(3600);

/// `[open_data]`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OpenDataSection {
    /// Key-dependent decryption failures one user's session_key may meet per
    /// `failure_window`; the next one revokes the session
    /// (`ERR_SESSION_EXPIRED`). 1 to [`MAX_DECRYPT_FAILURES_LIMIT`].
    pub max_decrypt_failures: u64,
    /// The budget's window, counted from its first failure (at least 1 h).
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// When set, `watermark.timestamp` may be at most this old; unset (the
    /// default) accepts any age, as WeChat's published sample needs.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// With `max_age`: how far in the future a watermark may be.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
}

impl Default for OpenDataSection {
    fn default() -> Self {
        Self {
            max_decrypt_failures: 5,
            failure_window: Duration::from_secs(3600),
            max_age: None,
            clock_skew: Duration::from_secs(300),
        }
    }
}

/// Which data store to use.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataStoreKind {
    /// In process; lost on restart (dev only).
    #[default]
    Memory,
    /// MongoDB (`[mongodb]`).
    Mongodb,
}

/// `[data]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// `memory` or `mongodb`.
    pub store: DataStoreKind,
    /// Most notices the memory store holds; a post past it answers 507.
    pub memory_max_notices: u64,
    /// Most PK step records plus memberships the memory store holds; a new
    /// one past it answers 507.
    pub memory_max_pk_records: u64,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            store: DataStoreKind::Memory,
            memory_max_notices: 10_000,
            memory_max_pk_records: 100_000,
        }
    }
}

/// `[pk]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PkSection {
    /// IANA timezone whose midnight starts a new PK day.
    pub timezone: String,
    /// Days PK records are kept (a TTL index in MongoDB).
    pub retention_days: u32,
    /// Most entries a ranking answer lists (the caller's own entry is always added).
    pub ranking_limit: u32,
    /// How long a group's day is served from memory before it is reloaded
    /// (see [`crate::pk::CachedPkStore`]); zero turns the cache off.
    #[serde(with = "humantime_serde")]
    pub board_cache_ttl: Duration,
    /// Most step records the board cache keeps over all groups.
    pub board_cache_max_records: u64,
}

impl Default for PkSection {
    fn default() -> Self {
        Self {
            timezone: "Asia/Shanghai".into(),
            retention_days: 30,
            ranking_limit: 100,
            board_cache_ttl: Duration::from_secs(1),
            board_cache_max_records: 1_000_000,
        }
    }
}

impl PkSection {
    /// Settings of the PK board cache; `None` when it is turned off.
    pub fn board_cache(&self) -> Option<BoardCacheConfig> {
        (!self.board_cache_ttl.is_zero()).then_some(BoardCacheConfig {
            ttl: self.board_cache_ttl,
            max_records: self.board_cache_max_records,
        })
    }

    /// The parsed timezone.
    pub fn tz(&self) -> Result<chrono_tz::Tz, ConfigError> {
        self.timezone.parse().map_err(|_| {
            ConfigError::Rejected(format!(
                "pk.timezone `{}` is not an IANA timezone",
                self.timezone
            ))
        })
    }
}

/// `[notices]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoticesSection {
    /// Check new and edited text with WeChat's msgSecCheck v2 first.
    pub content_security: bool,
    /// Bearer token of the moderation routes (`/admin/...`); unset disables them.
    pub admin_token: Option<SecretString>,
    /// How long the feed's first page is served from memory before it is
    /// reloaded (see [`crate::notices::CachedNoticeStore`]); zero turns it off.
    #[serde(with = "humantime_serde")]
    pub feed_cache_ttl: Duration,
    /// Notice posts per user in any rolling minute (this instance).
    pub posts_per_minute: u32,
    /// Notice posts per user per day in `pk.timezone` (counted in the store).
    pub posts_per_day: u32,
    /// Notice edits per user in any rolling minute (this instance).
    pub edits_per_minute: u32,
    /// Notice edits per user per day in `pk.timezone` (this instance).
    pub edits_per_day: u32,
    /// Failed admin-token attempts per client address in a rolling minute;
    /// past it the address gets 429, even with the right token, until the
    /// minute is over.
    pub admin_failures_per_minute: u32,
    /// Hosts photos may come from: `img.example.com` (exactly that host) or
    /// `.example.com` (any subdomain). Empty: any DNS host.
    pub photo_hosts: Vec<String>,
}

impl Default for NoticesSection {
    fn default() -> Self {
        Self {
            content_security: false,
            admin_token: None,
            feed_cache_ttl: Duration::from_secs(1),
            posts_per_minute: 5,
            posts_per_day: 50,
            edits_per_minute: 5,
            edits_per_day: 50,
            admin_failures_per_minute: 5,
            photo_hosts: Vec::new(),
        }
    }
}

/// `[message]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageSection {
    /// The Token set in the mini-program's message-push settings; unset
    /// disables `{base}/message/check`.
    pub token: Option<SecretString>,
    /// How far a push's `timestamp` may lie from the gateway's clock, either
    /// way; older or later pushes are refused (replays).
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
}

impl Default for MessageSection {
    fn default() -> Self {
        Self { token: None, max_clock_skew: Duration::from_secs(300) }
    }
}
