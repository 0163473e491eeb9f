//! `[server]` and `[server.tls]`: listening, HTTP limits and timers.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
