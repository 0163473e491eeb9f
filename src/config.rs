//! Typed configuration: a TOML file (`config/default.toml` unless told
//! otherwise), then environment variables `WEAPP__SECTION__KEY`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::mongo::MongoConfig;
use crate::pk::BoardCacheConfig;
use std::num::NonZeroU32;

use crate::session::{L1Config, SessionConfig, WxSessionLayerBuilder};

/// The config file used when none is given.
pub const DEFAULT_CONFIG_FILE: &str = "config/default.toml";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or parsed; the
    /// message names the key.
    #[error("{0}")]
    Invalid(String),
    /// The values parse but do not make a runnable gateway.
    #[error("config: {0}")]
    Rejected(String),
}

/// dev (embedded defaults allowed) or production (real stores and WeChat only).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Embedded defaults: memory store, fake WeChat.
    #[default]
    Dev,
    /// Refuses the memory store and the fake WeChat.
    Production,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// dev or production.
    #[serde(default)]
    pub mode: Mode,
    /// Listening and HTTP behaviour.
    #[serde(default)]
    pub server: ServerConfig,
    /// The WeChat app and API.
    pub wechat: WeChatSection,
    /// Session behaviour and store choice.
    #[serde(default)]
    pub session: SessionSection,
    /// Redis, when `session.store = "redis"`.
    #[serde(default)]
    pub redis: RedisSection,
    /// Which data store holds PK records and notices.
    #[serde(default)]
    pub data: DataSection,
    /// MongoDB, when `data.store = "mongodb"`.
    #[serde(default)]
    pub mongodb: MongoConfig,
    /// Group step PK.
    #[serde(default)]
    pub pk: PkSection,
    /// Notices.
    #[serde(default)]
    pub notices: NoticesSection,
    /// WeChat message push.
    #[serde(default)]
    pub message: MessageSection,
    /// Open-data decryption: the failure budget and freshness.
    #[serde(default)]
    pub open_data: OpenDataSection,
}

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

/// Fewest characters of an admin or message-push token in production mode.
pub const MIN_PRODUCTION_TOKEN_CHARS: usize = 32;

/// Why `token` is too weak for production, if it is: shorter than
/// [`MIN_PRODUCTION_TOKEN_CHARS`], or fewer than 8 different characters.
fn weak_token(token: &SecretString) -> Option<&'static str> {
    let t = token.expose_secret();
    if t.chars().count() < MIN_PRODUCTION_TOKEN_CHARS {
        return Some("must have at least 32 characters");
    }
    let mut distinct: Vec<char> = t.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    (distinct.len() < 8).then_some("must be random (it repeats too few characters)")
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on (`WEAPP__SERVER__LISTEN`).
    pub listen: SocketAddr,
    /// Base path of the gateway's routes.
    pub base_path: String,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// How long in-flight requests may take to finish on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-For` is believed (e.g. nginx on 127.0.0.1).
    pub trusted_proxies: Vec<IpAddr>,
    /// Serve HTTPS natively (no nginx in front): `[server.tls]`.
    pub tls: Option<TlsConfig>,
    /// How long a client may take to send a request's headers (and, with
    /// `[server.tls]`, the TLS handshake). An HTTP/1.1 connection waiting for
    /// its next request is bound by it too.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// h2: how often the gateway pings an otherwise quiet connection.
    #[serde(with = "humantime_serde")]
    pub h2_keepalive_interval: Duration,
    /// h2: how long a ping may go unanswered before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub h2_keepalive_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; a larger
    /// one is refused (431 on HTTP/1.1), never buffered. At least 8192.
    pub max_header_bytes: usize,
    /// Largest request body on every route, in bytes (413 `ERR_PAYLOAD_TOO_LARGE`).
    pub max_body: usize,
    /// How long a client may take to send a request's body (408 `ERR_REQUEST_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a whole request may take (504 `ERR_GATEWAY_TIMEOUT`); keep it
    /// above `wechat.timeout` so a slow login is not cut.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most connections served at once; further ones wait in the listen queue.
    pub max_connections: usize,
}

impl ServerConfig {
    /// Refuse values that would silently switch a protection off.
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, d) in [
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.idle_timeout", self.idle_timeout),
            ("server.h2_keepalive_interval", self.h2_keepalive_interval),
            ("server.h2_keepalive_timeout", self.h2_keepalive_timeout),
            ("server.body_timeout", self.body_timeout),
            ("server.request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Rejected(format!("{key} must be greater than zero")));
            }
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::Rejected(format!(
                "server.max_header_bytes must be at least {MIN_HEADER_BYTES}"
            )));
        }
        if self.max_body == 0 {
            return Err(ConfigError::Rejected("server.max_body must be greater than zero".into()));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return Err(ConfigError::Rejected(format!(
                "server.max_connections must be 1–{MAX_CONNECTIONS}"
            )));
        }
        Ok(())
    }
}

/// The smallest `server.max_header_bytes` (hyper's minimum read buffer).
pub const MIN_HEADER_BYTES: usize = 8192;

/// The largest `server.max_connections` (far above any file-descriptor limit).
pub const MAX_CONNECTIONS: usize = 1 << 24;

/// `[server.tls]`: PEM files for native HTTPS (`WEAPP__SERVER__TLS__CERT` / `__KEY`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5757)),
            base_path: "/applet".into(),
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            h2_keepalive_interval: Duration::from_secs(20),
            h2_keepalive_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_body: 32 * 1024,
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(25),
            max_connections: 10_000,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[wechat]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeChatSection {
    /// The mini-program's AppID.
    pub app_id: String,
    /// The AppSecret (or use `app_secret_file`). Never printed.
    #[serde(default)]
    pub app_secret: Option<SecretString>,
    /// A file holding the AppSecret (e.g. a systemd credential).
    #[serde(default)]
    pub app_secret_file: Option<PathBuf>,
    /// Base URL of the WeChat API.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Serve the fake WeChat API under `/__wechat` and use it (dev only).
    #[serde(default)]
    pub fake: bool,
    /// With `fake`: texts containing any of these words are judged "risky"
    /// by the fake's msgSecCheck (also settable at `/__wechat/dev/risky-words`).
    #[serde(default)]
    pub fake_risky_words: Vec<String>,
    /// Connect timeout for WeChat calls.
    #[serde(default = "secs::<2>", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Total timeout for one WeChat call.
    #[serde(default = "secs::<5>", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_api_base() -> String {
    "https://api.weixin.qq.com".into()
}

fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

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

    /// The URL(s) are usable; messages name the key, never the value.
    fn validate(&self) -> Result<(), ConfigError> {
        let reject = |m: String| Err(ConfigError::Rejected(m));
        if !self.is_cluster() {
            if url::Url::parse(self.url.expose_secret()).is_err() {
                return reject("redis.url is not a redis:// URL".into());
            }
            return Ok(());
        }
        for (i, node) in self.cluster_nodes.iter().enumerate() {
            let key = format!("redis.cluster_nodes[{i}]");
            let Ok(url) = url::Url::parse(node.expose_secret()) else {
                return reject(format!("{key} is not a redis:// URL"));
            };
            if url.scheme() != "redis" || url.host_str().is_none() {
                return reject(format!("{key} must be redis://[:password@]host:port"));
            }
            if !matches!(url.path(), "" | "/" | "/0") {
                return reject(format!("{key}: a Redis Cluster only has database 0"));
            }
        }
        Ok(())
    }
}

/// The `WEAPP__…` environment variables (`__` between levels), with every
/// number- or boolean-looking value kept as text.
///
/// figment's `Env` turns `WEAPP__WECHAT__APP_SECRET=0123456789` into a
/// number that a string key then refuses; kept as text, it loads, and
/// [`Config::from_figment`]'s lossy extraction still reads
/// `WEAPP__SESSION__MEMORY_MAX_ENTRIES=5000` as a number where a key wants one.
/// Arrays and tables (`WEAPP__SERVER__TRUSTED_PROXIES='["127.0.0.1"]'`) are
/// parsed as `Env` parses them.
pub struct EnvText(Env);

impl EnvText {
    /// The gateway's variables: prefix `WEAPP__`, levels split on `__`.
    pub fn weapp() -> Self {
        Self(Env::prefixed("WEAPP__").split("__"))
    }
}

impl Provider for EnvText {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut figment = Figment::new();
        for (key, text) in self.0.iter() {
            let value = match text.parse::<Value>() {
                Ok(Value::Num(..) | Value::Bool(..)) | Err(_) => Value::from(text),
                Ok(parsed) => parsed,
            };
            figment = figment.merge(figment::providers::Serialized::default(key.as_str(), value));
        }
        let dict = figment.data()?.remove(&Profile::Default).unwrap_or_default();
        Ok(Profile::Default.collect(dict))
    }
}

impl Config {
    /// Load `file` (or the default file), then `WEAPP__…` environment overrides.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let path =
            file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        if !path.exists() {
            return Err(ConfigError::Invalid(format!("config file {} not found", path.display())));
        }
        let figment = Figment::new().merge(Toml::file_exact(&path)).merge(EnvText::weapp());
        Self::from_figment(figment)
    }

    /// Extract and validate from any figment (tests build their own).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        // Lossy: text from the environment becomes a number or a boolean
        // where a key wants one (see [`EnvText`]).
        let config: Config = figment.extract_lossy().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(describe).collect();
            ConfigError::Invalid(messages.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let reject = |m: &str| Err(ConfigError::Rejected(m.to_owned()));
        if self.mode == Mode::Production {
            if self.session.store == StoreKind::Memory {
                return reject(
                    "mode = \"production\" refuses session.store = \"memory\": sessions would \
                     be lost on restart and not shared between instances; use \"redis\"",
                );
            }
            if self.data.store == DataStoreKind::Memory {
                return reject(
                    "mode = \"production\" refuses data.store = \"memory\": PK records and \
                     notices would be lost on restart; use \"mongodb\"",
                );
            }
            if self.wechat.fake {
                return reject(
                    "mode = \"production\" refuses wechat.fake = true: logins would be checked \
                     against the built-in fake WeChat, not the real one",
                );
            }
            for (key, token) in [
                ("notices.admin_token", &self.notices.admin_token),
                ("message.token", &self.message.token),
            ] {
                if let Some(why) = token.as_ref().and_then(weak_token) {
                    return Err(ConfigError::Rejected(format!(
                        "mode = \"production\": {key} {why}; generate one with \
                         `openssl rand -hex 16`"
                    )));
                }
            }
        }
        if self.wechat.fake && self.server.tls.is_some() {
            return reject(
                "wechat.fake = true cannot be combined with [server.tls]: the gateway would call \
                 its own HTTPS port without trusting its certificate; run `weapp-gateway \
                 fake-wechat` separately and point wechat.api_base at it",
            );
        }
        self.server.validate()?;
        if self.wechat.app_id.trim().is_empty() {
            return reject("wechat.app_id is empty");
        }
        if self.wechat.app_secret.is_some() && self.wechat.app_secret_file.is_some() {
            return reject("set wechat.app_secret or wechat.app_secret_file, not both");
        }
        if self.wechat.app_secret.is_none() && self.wechat.app_secret_file.is_none() {
            return reject("wechat.app_secret (or wechat.app_secret_file) is required");
        }
        if !self.server.base_path.starts_with('/') || self.server.base_path.ends_with('/') {
            return reject(
                "server.base_path must start with '/' and not end with '/' (e.g. \"/applet\")",
            );
        }
        if !self.wechat.fake && url::Url::parse(&self.wechat.api_base).is_err() {
            return reject("wechat.api_base is not a URL");
        }
        for (key, d) in [
            ("session.compat_ttl", self.session.compat_ttl),
            ("session.token_idle_ttl", self.session.token_idle_ttl),
            ("session.token_max_lifetime", self.session.token_max_lifetime),
            ("session.l1_ttl", self.session.l1_ttl),
            ("redis.timeout", self.redis.timeout),
            ("wechat.timeout", self.wechat.timeout),
            ("wechat.connect_timeout", self.wechat.connect_timeout),
            ("mongodb.op_timeout", self.mongodb.op_timeout),
            ("mongodb.connect_timeout", self.mongodb.connect_timeout),
            ("message.max_clock_skew", self.message.max_clock_skew),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Rejected(format!("{key} must be greater than zero")));
            }
        }
        // Zero would not mean "off" but "keep nothing" / "no logins": refuse it.
        for (key, n) in [
            ("session.memory_max_entries", self.session.memory_max_entries),
            ("session.l1_max_entries", self.session.l1_max_entries),
            (
                "session.login_rate_limit.per_minute",
                self.session.login_rate_limit.map_or(1, |l| u64::from(l.per_minute)),
            ),
            ("data.memory_max_notices", self.data.memory_max_notices),
            ("data.memory_max_pk_records", self.data.memory_max_pk_records),
            ("notices.posts_per_minute", u64::from(self.notices.posts_per_minute)),
            ("notices.posts_per_day", u64::from(self.notices.posts_per_day)),
            ("notices.edits_per_minute", u64::from(self.notices.edits_per_minute)),
            ("notices.edits_per_day", u64::from(self.notices.edits_per_day)),
            (
                "notices.admin_failures_per_minute",
                u64::from(self.notices.admin_failures_per_minute),
            ),
            ("session.exchanges_per_second", u64::from(self.session.exchanges_per_second)),
            ("session.exchanges_burst", u64::from(self.session.exchanges_burst)),
        ] {
            if n == 0 {
                return Err(ConfigError::Rejected(format!(
                    "{key} must be greater than zero (remove the setting to use the default)"
                )));
            }
        }
        if self.open_data.max_decrypt_failures == 0
            || self.open_data.max_decrypt_failures > MAX_DECRYPT_FAILURES_LIMIT
        {
            return Err(ConfigError::Rejected(format!(
                "open_data.max_decrypt_failures must be between 1 and \
                 {MAX_DECRYPT_FAILURES_LIMIT} (the budget cannot be turned off)"
            )));
        }
        if self.open_data.failure_window < MIN_FAILURE_WINDOW {
            // A short window renews the budget: 1000 failures a second
            // would make a padding oracle practical again.
            return reject("open_data.failure_window must be at least 1h");
        }
        if self.open_data.max_age.is_some_and(|d| d.is_zero()) {
            return reject(
                "open_data.max_age must be greater than zero (remove it to accept any age)",
            );
        }
        self.pk.tz()?;
        for (i, host) in self.notices.photo_hosts.iter().enumerate() {
            if !crate::text::is_dns_name(host.strip_prefix('.').unwrap_or(host)) {
                return Err(ConfigError::Rejected(format!(
                    "notices.photo_hosts[{i}] must be a lower-case DNS name (`img.example.com`) \
                     or a suffix starting with a dot (`.example.com`)"
                )));
            }
        }
        if self.pk.retention_days == 0 || self.pk.ranking_limit == 0 {
            return reject("pk.retention_days and pk.ranking_limit must be greater than zero");
        }
        // MongoDB keeps expireAfterSeconds in a 32-bit integer.
        if u64::from(self.pk.retention_days) * 86_400 > u64::from(i32::MAX as u32) {
            return reject("pk.retention_days must be at most 24855 (MongoDB's TTL limit)");
        }
        if self.data.store == DataStoreKind::Mongodb && self.mongodb.database.trim().is_empty() {
            return reject("mongodb.database is empty");
        }
        if self.session.store == StoreKind::Redis {
            self.redis.validate()?;
        }
        Ok(())
    }

    /// The AppSecret, read from `app_secret` or `app_secret_file`.
    pub fn app_secret(&self) -> Result<SecretString, ConfigError> {
        if let Some(secret) = &self.wechat.app_secret {
            return Ok(secret.clone());
        }
        let Some(path) = &self.wechat.app_secret_file else {
            return Err(ConfigError::Rejected("wechat.app_secret is required".into()));
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Rejected(format!("wechat.app_secret_file {}: {e}", path.display()))
        })?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ConfigError::Rejected(format!(
                "wechat.app_secret_file {} is empty",
                path.display()
            )));
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    /// The session layer's settings from this config, applied to `builder`.
    /// Zeros were refused by [`Config::validate`]; they fall back to one here.
    pub fn session_layer(&self, builder: WxSessionLayerBuilder) -> WxSessionLayerBuilder {
        let nz = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let mut builder = builder
            .with_compat_ttl(self.session.compat_ttl)
            .with_token_idle_ttl(self.session.token_idle_ttl)
            .with_token_max_lifetime(self.session.token_max_lifetime)
            .with_ignore(self.session.ignore.iter().cloned())
            .with_exchange_budget(
                nz(self.session.exchanges_per_second),
                nz(self.session.exchanges_burst),
            )
            // One body limit for every route, the token login included.
            .with_max_login_body(self.server.max_body)
            .with_body_timeout_error(crate::error::is_body_deadline);
        builder = match self.session.login_rate_limit {
            Some(l) => builder.with_login_rate_limit(nz(l.per_minute), nz(l.burst)),
            None => builder.without_login_rate_limit(),
        };
        if self.session.l1 {
            builder =
                builder.with_l1(L1Config::new(self.session.l1_ttl, self.session.l1_max_entries));
        }
        builder
    }
}

/// One figment error as "key `a.b`: what is wrong", without the value (it
/// may be a secret).
fn describe(e: figment::Error) -> String {
    use figment::error::Kind;
    let key = if e.path.is_empty() { "(top level)".to_owned() } else { e.path.join(".") };
    let what = match &e.kind {
        Kind::UnknownField(field, _) => {
            return format!("unknown config key `{}`", full_key(&e.path, field));
        }
        Kind::MissingField(field) => {
            return format!("missing config key `{}`", full_key(&e.path, field));
        }
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::InvalidValue(_, expected) => format!("invalid value, expected {expected}"),
        Kind::UnknownVariant(v, expected) => {
            format!("unknown value `{v}`, expected one of {}", expected.join(", "))
        }
        Kind::Message(m) => m.clone(),
        other => other.to_string(),
    };
    format!("config key `{key}`: {what}")
}

/// The dotted key of `field` under `path`. figment's path of an unknown or
/// missing field sometimes already ends with the field itself (e.g. for a
/// key from a nested table): it is named once, as the operator wrote it.
fn full_key(path: &[String], field: &str) -> String {
    match path.split_last() {
        Some((last, parent)) if last == field => {
            parent.iter().map(String::as_str).chain([field]).collect::<Vec<_>>().join(".")
        }
        Some(_) => format!("{}.{field}", path.join(".")),
        None => field.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    struct NoWeChat;

    #[async_trait::async_trait]
    impl crate::session::CodeExchanger for NoWeChat {
        async fn code2session(
            &self,
            _: &str,
        ) -> Result<crate::session::Exchanged, crate::session::ExchangeError> {
            Err(crate::session::ExchangeError::Timeout)
        }
    }

    /// The session layer `c` configures, over a memory store.
    fn layer_of(c: &Config) -> crate::session::WxSessionLayer {
        let builder =
            crate::session::WxSessionLayer::builder(crate::session::MemoryStore::new(10), NoWeChat);
        c.session_layer(builder).build()
    }

    fn base() -> Figment {
        Figment::new().merge(Toml::string(
            "[wechat]\napp_id = \"wxapp\"\napp_secret = \"s3cret\"\nfake = true\n",
        ))
    }

    #[test]
    fn defaults_are_dev() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!(c.mode, Mode::Dev);
        assert_eq!(c.server.listen.port(), 5757);
        assert_eq!(c.session.store, StoreKind::Memory);
    }

    #[test]
    fn server_limits_have_defaults_and_refuse_values_that_switch_them_off() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.request_timeout, Duration::from_secs(25));
        assert!(c.server.request_timeout > c.wechat.timeout);
        assert_eq!(c.server.max_body, 32 * 1024);
        assert_eq!(c.server.max_connections, 10_000);
        for (key, value) in [
            ("server.header_read_timeout", Value::from("0s")),
            ("server.idle_timeout", Value::from("0s")),
            ("server.h2_keepalive_interval", Value::from("0s")),
            ("server.h2_keepalive_timeout", Value::from("0s")),
            ("server.body_timeout", Value::from("0s")),
            ("server.request_timeout", Value::from("0s")),
            ("server.max_body", Value::from(0)),
            ("server.max_connections", Value::from(0)),
            ("server.max_header_bytes", Value::from(4096)),
        ] {
            let e = Config::from_figment(base().merge(Serialized::default(key, value)))
                .expect_err(key)
                .to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn open_data_budget_defaults_and_refusals() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!(c.open_data, OpenDataSection::default());
        assert_eq!(c.open_data.max_decrypt_failures, 5);
        assert_eq!(c.open_data.failure_window, Duration::from_secs(3600));
        assert_eq!(c.open_data.max_age, None);
        assert_eq!(c.open_data.clock_skew, Duration::from_secs(300));
        let with = |k: &str, v: &str| {
            let text = format!("[open_data]\n{k} = {v}\n");
            Config::from_figment(base().merge(Toml::string(&text)))
        };
        let on = with("max_age", "\"10m\"").unwrap();
        assert_eq!(on.open_data.max_age, Some(Duration::from_secs(600)));
        for (k, v) in [
            ("max_decrypt_failures", "0"),
            ("max_decrypt_failures", "1001"),
            ("failure_window", "\"0s\""),
            ("failure_window", "\"59m\""),
            ("max_age", "\"0s\""),
        ] {
            let err = with(k, v).unwrap_err().to_string();
            assert!(err.contains(&format!("open_data.{k}")), "{k} = {v}: {err}");
        }
        assert!(with("max_decrypt_failures", "1000").is_ok());
        assert!(with("failure_window", "\"1h\"").is_ok());
    }

    #[test]
    fn the_exchange_budget_defaults_to_50_per_second_and_is_configurable() {
        let budget = |c: &Config| {
            let b = layer_of(c).engine().config().exchange_budget().unwrap();
            (b.per_second.get(), b.burst.get())
        };
        assert_eq!(budget(&Config::from_figment(base()).unwrap()), (50, 100));
        let set = Toml::string("[session]\nexchanges_per_second = 5\nexchanges_burst = 7\n");
        assert_eq!(budget(&Config::from_figment(base().merge(set)).unwrap()), (5, 7));
    }

    #[test]
    fn l1_is_off_by_default_and_one_second_when_on() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!(layer_of(&c).engine().config().l1(), None);
        let on = base().merge(Serialized::default("session.l1", true));
        let on_config = Config::from_figment(on.clone()).unwrap();
        let l1 = layer_of(&on_config).engine().config().l1().unwrap();
        assert_eq!(l1.ttl, Duration::from_secs(1));
        assert_eq!(l1.max_entries, 100_000);
        let zero = on.merge(Serialized::default("session.l1_ttl", "0s"));
        let e = Config::from_figment(zero).unwrap_err().to_string();
        assert!(e.contains("session.l1_ttl must be greater than zero"), "{e}");
    }

    #[test]
    fn zero_sizes_and_timeouts_are_refused_by_name() {
        for (key, toml) in [
            ("session.memory_max_entries", "[session]\nmemory_max_entries = 0\n"),
            ("session.l1_max_entries", "[session]\nl1_max_entries = 0\n"),
            ("session.exchanges_per_second", "[session]\nexchanges_per_second = 0\n"),
            ("session.exchanges_burst", "[session]\nexchanges_burst = 0\n"),
            ("mongodb.op_timeout", "[mongodb]\nop_timeout = \"0s\"\n"),
            ("mongodb.connect_timeout", "[mongodb]\nconnect_timeout = \"0s\"\n"),
        ] {
            let e = Config::from_figment(base().merge(Toml::string(toml))).unwrap_err().to_string();
            assert!(e.contains(&format!("{key} must be greater than zero")), "{e}");
        }
        let long = Toml::string("[pk]\nretention_days = 30000\n");
        let e = Config::from_figment(base().merge(long)).unwrap_err().to_string();
        assert!(e.contains("pk.retention_days must be at most 24855"), "{e}");
        let limit = Toml::string("[session.login_rate_limit]\nper_minute = 0\nburst = 5\n");
        let e = Config::from_figment(base().merge(limit)).unwrap_err().to_string();
        assert!(e.contains("session.login_rate_limit.per_minute must be greater than zero"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's own large error
    fn numeric_looking_secrets_from_the_environment_stay_strings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WEAPP__NOTICES__ADMIN_TOKEN", "12345678901234567890");
            jail.set_env("WEAPP__WECHAT__APP_SECRET", "0123456789");
            jail.set_env("WEAPP__WECHAT__APP_ID", "12345");
            // Numbers and booleans still load where a key wants one.
            jail.set_env("WEAPP__SESSION__MEMORY_MAX_ENTRIES", "5000");
            jail.set_env("WEAPP__SESSION__L1", "true");
            jail.set_env("WEAPP__SERVER__TRUSTED_PROXIES", "[\"10.0.0.1\"]");
            let f = base().merge(EnvText::weapp());
            let c = Config::from_figment(f).map_err(|e| e.to_string())?;
            assert_eq!(c.wechat.app_id, "12345");
            assert_eq!(c.session.memory_max_entries, 5000);
            assert!(c.session.l1);
            assert_eq!(c.server.trusted_proxies, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
            let admin = c.notices.admin_token.as_ref().map(|t| t.expose_secret().to_owned());
            assert_eq!(admin.as_deref(), Some("12345678901234567890"));
            assert_eq!(c.app_secret().map_err(|e| e.to_string())?.expose_secret(), "0123456789");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        let f = base().merge(Toml::string("[session]\nstroe = \"redis\"\n"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("session.stroe"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_named_once_as_written() {
        for (toml, key) in [
            ("[message]\nencoding_aes_key = \"k\"\n", "message.encoding_aes_key"),
            ("[session]\nstroe = \"redis\"\n", "session.stroe"),
            ("[server.tls]\ncert = \"c\"\nkey = \"k\"\nchain = \"x\"\n", "server.tls.chain"),
            ("mdoe = \"dev\"\n", "mdoe"),
        ] {
            let e = Config::from_figment(base().merge(Toml::string(toml))).unwrap_err().to_string();
            assert_eq!(e, format!("unknown config key `{key}`"), "{toml}");
        }
        let e = Config::from_figment(Figment::new().merge(Toml::string("[wechat]\nfake = true\n")))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "missing config key `wechat.app_id`");
    }

    #[test]
    fn production_tokens_need_32_random_characters_named_never_shown() {
        let production = || {
            base()
                .merge(Serialized::default("mode", "production"))
                .merge(Serialized::default("session.store", "redis"))
                .merge(Serialized::default("data.store", "mongodb"))
                .merge(Serialized::default("wechat.fake", false))
        };
        let strong = "7f3a9c1e5b2d8406f1e2d3c4b5a69788";
        assert!(Config::from_figment(production()).is_ok());
        let both = production()
            .merge(Serialized::default("notices.admin_token", strong))
            .merge(Serialized::default("message.token", strong));
        assert!(Config::from_figment(both).is_ok());
        for key in ["notices.admin_token", "message.token"] {
            for weak in ["", "hunter2", "7f3a9c1e5b2d8406f1e2d3c4b5a6978", &"ab".repeat(20)] {
                let f = production().merge(Serialized::default(key, weak));
                let e = Config::from_figment(f).unwrap_err().to_string();
                assert!(e.contains(key), "{e}");
                assert!(weak.is_empty() || !e.contains(weak), "{e}");
            }
            // Dev mode keeps accepting short tokens (tests, local runs).
            assert!(Config::from_figment(base().merge(Serialized::default(key, "adm"))).is_ok());
        }
    }

    #[test]
    fn business_limits_have_defaults_and_refuse_zero_and_bad_hosts() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!((c.notices.posts_per_minute, c.notices.posts_per_day), (5, 50), "post limits");
        assert_eq!((c.notices.edits_per_minute, c.notices.edits_per_day), (5, 50));
        assert_eq!(c.notices.admin_failures_per_minute, 5);
        assert!(c.notices.photo_hosts.is_empty());
        assert_eq!((c.data.memory_max_notices, c.data.memory_max_pk_records), (10_000, 100_000));
        assert_eq!(c.message.max_clock_skew, Duration::from_secs(300));
        for (key, value) in [
            ("notices.posts_per_minute", Value::from(0)),
            ("notices.posts_per_day", Value::from(0)),
            ("notices.edits_per_minute", Value::from(0)),
            ("notices.edits_per_day", Value::from(0)),
            ("notices.admin_failures_per_minute", Value::from(0)),
            ("data.memory_max_notices", Value::from(0)),
            ("data.memory_max_pk_records", Value::from(0)),
            ("message.max_clock_skew", Value::from("0s")),
        ] {
            let e = Config::from_figment(base().merge(Serialized::default(key, value)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{key} must be greater than zero")), "{e}");
        }
        let hosts = ["img.example.com", ".cdn.example.net"];
        let c =
            Config::from_figment(base().merge(Serialized::default("notices.photo_hosts", hosts)))
                .unwrap();
        assert_eq!(c.notices.photo_hosts, hosts);
        for bad in
            ["", ".", "*.example.com", "Img.Example.com", "127.0.0.1", "https://a.com", "localhost"]
        {
            let f = base().merge(Serialized::default("notices.photo_hosts", [hosts[0], bad]));
            let e = Config::from_figment(f).unwrap_err().to_string();
            assert!(e.contains("notices.photo_hosts[1]"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_value_is_named() {
        let f = base().merge(Serialized::default("session.store", "mongo"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("session.store"), "{e}");
        let f = base().merge(Serialized::default("server.listen", "nope"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("server.listen"), "{e}");
    }

    #[test]
    fn production_refuses_memory_and_fake() {
        let f = base().merge(Serialized::default("mode", "production"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("memory"), "{e}");
        let f = base()
            .merge(Serialized::default("mode", "production"))
            .merge(Serialized::default("session.store", "redis"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("data.store"), "{e}");
        let f = base()
            .merge(Serialized::default("mode", "production"))
            .merge(Serialized::default("session.store", "redis"))
            .merge(Serialized::default("data.store", "mongodb"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("fake"), "{e}");
    }

    #[test]
    fn redis_cluster_nodes_are_validated_and_never_printed() {
        let redis = || base().merge(Serialized::default("session.store", "redis"));
        let c = Config::from_figment(redis()).unwrap();
        assert!(!c.redis.is_cluster());

        let nodes = ["redis://:hunter2@10.0.0.1:7000", "redis://:hunter2@10.0.0.2:7000"];
        let c =
            Config::from_figment(redis().merge(Serialized::default("redis.cluster_nodes", nodes)))
                .unwrap();
        assert!(c.redis.is_cluster());
        assert_eq!(c.redis.cluster_nodes[1].expose_secret(), nodes[1]);
        assert!(!format!("{c:?}").contains("hunter2"));

        for bad in [
            "not a url hunter2",
            "http://:hunter2@10.0.0.1:7000",
            "rediss://:hunter2@10.0.0.1:7000",
            "redis+unix:///tmp/hunter2.sock",
            "redis://:hunter2@10.0.0.1:7000/3",
        ] {
            let f = redis().merge(Serialized::default("redis.cluster_nodes", [nodes[0], bad]));
            let e = Config::from_figment(f).unwrap_err().to_string();
            assert!(e.contains("redis.cluster_nodes[1]"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn redis_cluster_nodes_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[wechat]\napp_id = \"wxapp\"\napp_secret = \"x\"\nfake = true\n\
                 [session]\nstore = \"redis\"\n",
            )?;
            jail.set_env(
                "WEAPP__REDIS__CLUSTER_NODES",
                r#"["redis://:pw@10.0.0.1:7000","redis://:pw@10.0.0.2:7000"]"#,
            );
            let c = Config::load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.redis.cluster_nodes.len(), 2);
            assert_eq!(c.redis.cluster_nodes[0].expose_secret(), "redis://:pw@10.0.0.1:7000");
            Ok(())
        });
    }

    #[test]
    fn secret_never_debug_printed() {
        let c = Config::from_figment(base()).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn secret_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "filesecret\n").unwrap();
        let f = Figment::new()
            .merge(Toml::string("[wechat]\napp_id = \"wxapp\"\nfake = true\n"))
            .merge(Serialized::default(
                "wechat.app_secret_file",
                path.to_string_lossy().to_string(),
            ));
        let c = Config::from_figment(f).unwrap();
        assert_eq!(c.app_secret().unwrap().expose_secret(), "filesecret");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn env_overrides_with_double_underscore() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[wechat]\napp_id = \"wxapp\"\napp_secret = \"x\"\nfake = true\n",
            )?;
            jail.set_env("WEAPP__SERVER__LISTEN", "127.0.0.1:9999");
            jail.set_env("WEAPP__WECHAT__APP_ID", "wxenv");
            let c = Config::load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.server.listen.port(), 9999);
            assert_eq!(c.wechat.app_id, "wxenv");
            Ok(())
        });
    }
}
