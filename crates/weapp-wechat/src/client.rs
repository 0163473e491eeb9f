//! The reqwest client for WeChat's server API.
//!
//! Secrets travel in query strings (`secret=` for `jscode2session`,
//! `access_token=` for most other calls), so this module never logs a URL,
//! strips the URL from every reqwest error (`without_url`) and scrubs the
//! AppSecret from every error text it builds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use weapp_session::{CodeExchanger, ExchangeError, Exchanged, warn_limited};

/// WeChat's production API base URL.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";

/// The errcode WeChat answers when it is busy ("system error"); retried once.
pub const ERRCODE_BUSY: i64 = -1;

/// How long to wait before the one retry of a busy answer.
const BUSY_BACKOFF: Duration = Duration::from_millis(200);

/// The largest answer body accepted from WeChat.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest `errmsg` kept from a WeChat answer, in characters (WeChat's own
/// are well under 100; the rest is cut and marked with `…`).
pub(crate) const MAX_ERRMSG_CHARS: usize = 200;

/// How to reach WeChat and who the mini-program is. `Debug` redacts the secret.
///
/// ```
/// use std::time::Duration;
/// use weapp_wechat::WeChatConfig;
///
/// let config = WeChatConfig::new("wx1234567890abcdef", "app-secret".to_owned())
///     .with_timeout(Duration::from_secs(3));
/// assert_eq!(config.api_base, "https://api.weixin.qq.com");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WeChatConfig {
    /// API base URL without a trailing path, e.g. `https://api.weixin.qq.com`.
    pub api_base: String,
    /// The mini-program's AppID.
    pub app_id: String,
    /// The mini-program's AppSecret.
    pub app_secret: SecretString,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for a whole call (connect, send, read the answer), including
    /// the one retry of a busy answer.
    pub timeout: Duration,
}

impl WeChatConfig {
    /// A config for the production API with the default timeouts (2 s connect, 5 s total).
    pub fn new(app_id: impl Into<String>, app_secret: impl Into<SecretString>) -> Self {
        Self {
            api_base: DEFAULT_API_BASE.to_owned(),
            app_id: app_id.into(),
            app_secret: app_secret.into(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
        }
    }

    /// Talk to `api_base` instead of WeChat's production API (a fake WeChat
    /// in tests, a proxy), e.g. `http://127.0.0.1:8081`.
    ///
    /// ```
    /// let config = weapp_wechat::WeChatConfig::new("wx1234567890abcdef", "secret".to_owned())
    ///     .with_api_base("http://127.0.0.1:8081");
    /// assert_eq!(config.api_base, "http://127.0.0.1:8081");
    /// ```
    pub fn with_api_base(mut self, api_base: impl Into<String>) -> Self {
        self.api_base = api_base.into();
        self
    }

    /// The TCP/TLS connect timeout (default 2 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = weapp_wechat::WeChatConfig::new("wx1234567890abcdef", "secret".to_owned())
    ///     .with_connect_timeout(Duration::from_millis(500));
    /// assert_eq!(config.connect_timeout, Duration::from_millis(500));
    /// ```
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// The bound on a whole call, the one retry of a busy answer included
    /// (default 5 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = weapp_wechat::WeChatConfig::new("wx1234567890abcdef", "secret".to_owned())
    ///     .with_timeout(Duration::from_secs(3));
    /// assert_eq!(config.timeout, Duration::from_secs(3));
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Why a WeChat API call failed. Texts never contain the URL or the AppSecret.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeChatError {
    /// WeChat answered with a non-zero errcode. The errmsg is escaped when
    /// displayed, so it cannot forge a log line.
    #[error("WeChat answered errcode {errcode}: {}", errmsg.escape_debug())]
    Api {
        /// WeChat's errcode.
        errcode: i64,
        /// WeChat's errmsg.
        errmsg: String,
    },
    /// WeChat did not answer within the configured timeout.
    #[error("WeChat did not answer in time")]
    Timeout,
    /// WeChat could not be reached (connect error, TLS, HTTP non-2xx…).
    #[error("WeChat could not be reached: {0}")]
    Unreachable(String),
    /// WeChat answered with a body that could not be understood.
    #[error("WeChat answered something unexpected: {0}")]
    BadResponse(String),
    /// The client configuration is unusable (bad api_base…).
    #[error("invalid WeChat client configuration: {0}")]
    Config(String),
}

impl From<WeChatError> for ExchangeError {
    fn from(err: WeChatError) -> Self {
        match err {
            WeChatError::Api { errcode, errmsg } => ExchangeError::WeChat { errcode, errmsg },
            WeChatError::Timeout => ExchangeError::Timeout,
            WeChatError::Unreachable(msg) => ExchangeError::Unreachable(msg),
            WeChatError::BadResponse(msg) => ExchangeError::BadResponse(msg),
            WeChatError::Config(msg) => ExchangeError::Unreachable(msg),
        }
    }
}

/// Turns a WeChat answer body into `Ok(body)` or `Err(Api{..})`.
///
/// The one place errcodes are interpreted: a JSON object without `errcode`
/// or with `errcode: 0` is a success; anything else is an error.
pub(crate) fn check_errcode(body: Value) -> Result<Value, WeChatError> {
    let Some(obj) = body.as_object() else {
        return Err(WeChatError::BadResponse("the answer is not a JSON object".into()));
    };
    match obj.get("errcode") {
        None | Some(Value::Null) => Ok(body),
        Some(code) => {
            let Some(errcode) = code.as_i64() else {
                return Err(WeChatError::BadResponse("errcode is not an integer".into()));
            };
            if errcode == 0 {
                return Ok(body);
            }
            let errmsg = obj.get("errmsg").and_then(Value::as_str).unwrap_or_default().to_owned();
            Err(WeChatError::Api { errcode, errmsg })
        }
    }
}

/// An access token issued by `stable_token`. `Debug` redacts the token.
#[derive(Clone, Debug)]
pub struct StableToken {
    /// The access token.
    pub access_token: SecretString,
    /// How long WeChat says it stays valid, counted from its answer.
    pub expires_in: Duration,
}

/// A cheap-to-clone client for WeChat's server API.
#[derive(Clone)]
pub struct WeChatClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `api_base` without trailing slashes.
    base: String,
    cfg: WeChatConfig,
}

impl std::fmt::Debug for WeChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeChatClient")
            .field("api_base", &self.inner.base)
            .field("app_id", &self.inner.cfg.app_id)
            .finish_non_exhaustive()
    }
}

/// TLS for WeChat's API: the process-default crypto provider when the
/// application installed one (aws-lc-rs, say), else this crate's `ring`
/// provider, used for this client only; certificates checked by the
/// platform's verifier.
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth())
}

impl WeChatClient {
    /// Builds the client. It never installs a process-wide rustls crypto
    /// provider: it uses the one the application installed, or else its own
    /// `ring` provider for its own connections only. It does not connect
    /// until the first call.
    ///
    /// ```
    /// use weapp_wechat::{WeChatClient, WeChatConfig};
    ///
    /// let client = WeChatClient::new(WeChatConfig::new("wx1234567890abcdef", "secret".to_owned()))?;
    /// assert_eq!(client.app_id(), "wx1234567890abcdef");
    /// // An unusable configuration is refused up front.
    /// let bad = WeChatConfig::new("wx1234567890abcdef", "secret".to_owned()).with_api_base("ftp://x");
    /// assert!(WeChatClient::new(bad).is_err());
    /// # Ok::<(), weapp_wechat::WeChatError>(())
    /// ```
    pub fn new(cfg: WeChatConfig) -> Result<Self, WeChatError> {
        let parsed = url::Url::parse(&cfg.api_base)
            .map_err(|e| WeChatError::Config(format!("api_base is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(WeChatError::Config("api_base must be an http(s) URL".into()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(WeChatError::Config("api_base must not have a query or fragment".into()));
        }
        if cfg.app_id.is_empty() {
            return Err(WeChatError::Config("app_id is empty".into()));
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(
                tls_config().map_err(|e| WeChatError::Config(e.to_string()))?,
            )
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            // A redirect would carry the secret-bearing query elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("weapp-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WeChatError::Config(describe(&e.without_url(), &cfg)))?;
        let base = cfg.api_base.trim_end_matches('/').to_owned();
        Ok(Self { inner: Arc::new(Inner { http, base, cfg }) })
    }

    /// The configured AppID.
    pub fn app_id(&self) -> &str {
        &self.inner.cfg.app_id
    }

    /// `GET {api_base}{path}?query`, errcode-checked (one retry when WeChat is busy).
    pub async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, WeChatError> {
        self.call(Method::GET, path, query, None).await
    }

    /// `POST {api_base}{path}?query` with a JSON body, errcode-checked (one retry when busy).
    pub async fn post_json(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: &Value,
    ) -> Result<Value, WeChatError> {
        self.call(Method::POST, path, query, Some(body)).await
    }

    /// `POST /cgi-bin/stable_token`: the app's access token (AppID and AppSecret from the config).
    ///
    /// `force_refresh` asks WeChat for a new token, which invalidates the
    /// previous one (WeChat limits how often this may be done). The AppSecret
    /// travels in the body and never leaves this client otherwise.
    pub async fn stable_token(&self, force_refresh: bool) -> Result<StableToken, WeChatError> {
        let cfg = &self.inner.cfg;
        let body = serde_json::json!({
            "grant_type": "client_credential",
            "appid": cfg.app_id,
            "secret": cfg.app_secret.expose_secret(),
            "force_refresh": force_refresh,
        });
        let answer = self.post_json("/cgi-bin/stable_token", &[], &body).await?;
        // Never echo the answer: it holds the token.
        let access_token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| WeChatError::BadResponse("the answer has no access_token".into()))?;
        let expires_in =
            answer.get("expires_in").and_then(Value::as_u64).filter(|&secs| secs > 0).ok_or_else(
                || WeChatError::BadResponse("the answer has no valid expires_in".into()),
            )?;
        Ok(StableToken {
            access_token: SecretString::from(access_token),
            expires_in: Duration::from_secs(expires_in),
        })
    }

    /// Sends one request, retrying once after a short backoff on errcode -1.
    ///
    /// Timeouts and transport errors are not retried: the request may have
    /// reached WeChat (and spent a single-use code).
    #[tracing::instrument(name = "wechat_call", skip_all, fields(%method, path = %path))]
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, WeChatError> {
        // `timeout` bounds the whole call, the retry included, so a caller
        // (and every single-flight waiter behind it) waits at most that long.
        let deadline = tokio::time::Instant::now() + self.inner.cfg.timeout;
        match self.call_once(method.clone(), path, query, body).await {
            Err(WeChatError::Api { errcode, errmsg }) if errcode == ERRCODE_BUSY => {
                if deadline.saturating_duration_since(tokio::time::Instant::now()) <= BUSY_BACKOFF {
                    return Err(WeChatError::Api { errcode, errmsg });
                }
                warn_limited!("WeChat is busy (errcode -1), retrying once");
                tokio::time::sleep(BUSY_BACKOFF).await;
                tokio::time::timeout_at(deadline, self.call_once(method, path, query, body))
                    .await
                    .unwrap_or(Err(WeChatError::Timeout))
            }
            other => other,
        }
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, WeChatError> {
        let cfg = &self.inner.cfg;
        let url = format!("{}{}", self.inner.base, path);
        let mut req = self.inner.http.request(method, url).query(query);
        if let Some(body) = body {
            req = req.json(body);
        }
        let started = std::time::Instant::now();
        let mut resp = req.send().await.map_err(|e| transport_error(e, cfg))?;
        let status = resp.status();
        if !status.is_success() {
            let elapsed_ms = started.elapsed().as_millis() as u64;
            warn_limited!(%status, elapsed_ms, "WeChat answered a non-2xx status");
            return Err(WeChatError::Unreachable(format!("HTTP {status}")));
        }
        if resp.content_length().is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err(WeChatError::BadResponse("the answer is too large".into()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(e, cfg))? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(WeChatError::BadResponse("the answer is too large".into()));
            }
            bytes.extend_from_slice(&chunk);
        }
        // WeChat often labels JSON as text/plain: parse regardless of Content-Type.
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| WeChatError::BadResponse(format!("the answer is not JSON ({e})")))?;
        let checked = check_errcode(value).map_err(|e| match e {
            WeChatError::Api { errcode, errmsg } => {
                WeChatError::Api { errcode, errmsg: clean_errmsg(&errmsg, cfg) }
            }
            other => other,
        });
        match &checked {
            Ok(_) => tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "WeChat call succeeded"
            ),
            Err(WeChatError::Api { errcode, errmsg }) => tracing::info!(
                errcode,
                errmsg = %errmsg.escape_debug(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "WeChat answered an errcode"
            ),
            Err(e) => warn_limited!(error = %e, "WeChat answered something unexpected"),
        }
        checked
    }
}

#[async_trait]
impl CodeExchanger for WeChatClient {
    #[tracing::instrument(name = "jscode2session", skip_all)]
    async fn code2session(&self, code: &str) -> Result<Exchanged, ExchangeError> {
        let cfg = &self.inner.cfg;
        let body = self
            .get_json(
                "/sns/jscode2session",
                &[
                    ("appid", cfg.app_id.as_str()),
                    ("secret", cfg.app_secret.expose_secret()),
                    ("js_code", code),
                    ("grant_type", "authorization_code"),
                ],
            )
            .await?;
        let field = |name: &str| {
            body.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
        };
        // Never echo the body: it holds the session_key.
        let openid = field("openid")
            .ok_or_else(|| ExchangeError::BadResponse("the answer has no openid".into()))?;
        let session_key = field("session_key")
            .ok_or_else(|| ExchangeError::BadResponse("the answer has no session_key".into()))?;
        Ok(Exchanged { openid, session_key, unionid: field("unionid") })
    }
}

/// WeChat's `errmsg` as it may travel on (to clients in `detail`, to logs):
/// the AppSecret scrubbed out, control characters replaced, at most
/// [`MAX_ERRMSG_CHARS`] characters. Logs still escape it.
pub(crate) fn clean_errmsg(errmsg: &str, cfg: &WeChatConfig) -> String {
    let secret = cfg.app_secret.expose_secret();
    let scrubbed =
        if secret.is_empty() { errmsg.to_owned() } else { errmsg.replace(secret, "[redacted]") };
    let mut out: String = scrubbed
        .chars()
        .take(MAX_ERRMSG_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if scrubbed.chars().nth(MAX_ERRMSG_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Classifies a reqwest error, with the URL stripped.
fn transport_error(err: reqwest::Error, cfg: &WeChatConfig) -> WeChatError {
    let err = err.without_url();
    if err.is_timeout() {
        warn_limited!("WeChat did not answer in time");
        WeChatError::Timeout
    } else {
        let text = describe(&err, cfg);
        warn_limited!(error = %text, "WeChat could not be reached");
        WeChatError::Unreachable(text)
    }
}

/// The error and its sources as one line, with the AppSecret scrubbed out.
fn describe(err: &(dyn std::error::Error + 'static), cfg: &WeChatConfig) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    let secret = cfg.app_secret.expose_secret();
    if !secret.is_empty() {
        text = text.replace(secret, "[redacted]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errcode_zero_or_absent_is_success() {
        assert!(check_errcode(json!({"openid": "o"})).is_ok());
        assert!(check_errcode(json!({"errcode": 0, "errmsg": "ok"})).is_ok());
    }

    #[test]
    fn errcode_nonzero_is_api_error() {
        match check_errcode(json!({"errcode": 40029, "errmsg": "invalid code"})) {
            Err(WeChatError::Api { errcode, errmsg }) => {
                assert_eq!(errcode, 40029);
                assert_eq!(errmsg, "invalid code");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn non_object_or_bad_errcode_is_bad_response() {
        assert!(matches!(check_errcode(json!([1, 2])), Err(WeChatError::BadResponse(_))));
        assert!(matches!(check_errcode(json!({"errcode": "x"})), Err(WeChatError::BadResponse(_))));
    }

    #[test]
    fn errmsg_loses_the_secret_control_characters_and_excess_length() {
        let cfg = WeChatConfig::new("wxapp", "topsecret-value");
        let msg = clean_errmsg("invalid appsecret topsecret-value\nFAKE log line\0", &cfg);
        assert_eq!(msg, "invalid appsecret [redacted] FAKE log line ");
        let long = clean_errmsg(&"x".repeat(10_000), &cfg);
        assert_eq!(long.chars().count(), MAX_ERRMSG_CHARS + 1);
        assert!(long.ends_with('…'));
        assert_eq!(clean_errmsg("invalid code", &cfg), "invalid code");
        let e = WeChatError::Api { errcode: 1, errmsg: "a\nb".into() };
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn config_debug_redacts_secret() {
        let cfg = WeChatConfig::new("wxapp", "topsecret-value");
        assert!(!format!("{cfg:?}").contains("topsecret-value"));
    }

    #[test]
    fn rejects_bad_api_base() {
        let mut cfg = WeChatConfig::new("wxapp", "s");
        cfg.api_base = "ftp://example.com".into();
        assert!(matches!(WeChatClient::new(cfg), Err(WeChatError::Config(_))));
    }
}
