//! The app's WeChat access token, shared by every gateway instance.
//!
//! The token comes from `stable_token` and is cached in the session store
//! (`kv:wechat_access_token`), so all instances use the same one. Only one
//! instance refreshes at a time: it holds the store lock
//! `wechat_access_token_refresh`; the others poll the store briefly and use
//! what it wrote. Within one process a single task talks to the store (an
//! async mutex) and the current token is kept in memory until its refresh
//! time, so a hot instance does not read the store on every call.
//!
//! A token is refreshed `refresh_margin` before it expires (at most half its
//! lifetime early, so a short-lived token is not refreshed on every call). A
//! call that WeChat rejects as an invalid or expired token (40001, 40014,
//! 42001) force-refreshes the token — once for all the calls that saw the same
//! bad token — and is retried once.
//!
//! The `try_*` calls keep two failures apart: the access token's (it could
//! not be obtained — a wrong AppSecret 40125, a server IP missing from the
//! whitelist 40164, WeChat down — or WeChat rejected even a fresh one), which
//! is the server's problem whatever the request was, and the call's own (a
//! spent phone code 40029), which is the request's.
//!
//! If the store cannot be reached, an instance falls back to asking WeChat
//! itself in normal (non-forcing) mode, which returns the token WeChat
//! currently holds rather than invalidating the other instances' one.
//!
//! Tokens never appear in logs or error texts.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::{StableToken, WeChatClient, WeChatError};
use weapp_session::store::SharedStore;

/// Store name (under `kv:`) of the shared access token.
pub const ACCESS_TOKEN_KV: &str = "wechat_access_token";
/// Store lock held by the one instance refreshing the token.
pub const ACCESS_TOKEN_LOCK: &str = "wechat_access_token_refresh";

/// WeChat's errcodes for an access token that is invalid, malformed or expired.
const STALE_TOKEN_ERRCODES: [i64; 3] = [40001, 40014, 42001];

/// Timing of [`AccessTokens`]: start from `AccessTokenConfig::default()`.
///
/// ```
/// use std::time::Duration;
/// let timing = weapp_wechat::AccessTokenConfig::default()
///     .with_refresh_margin(Duration::from_secs(600))
///     .with_lock_ttl(Duration::from_secs(20));
/// assert_eq!(timing.refresh_margin, Duration::from_secs(600));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AccessTokenConfig {
    /// Refresh this long before the token expires (capped at half its lifetime).
    pub refresh_margin: Duration,
    /// How long the refresh lock lives if its holder dies mid-refresh.
    pub lock_ttl: Duration,
    /// How often an instance waiting for another's refresh re-reads the store.
    pub wait_step: Duration,
    /// The longest a call waits for another instance's refresh before failing.
    pub max_wait: Duration,
}

impl Default for AccessTokenConfig {
    /// 5 min margin, 15 s lock (longer than a WeChat call and its busy retry),
    /// 50 ms polling, 16 s longest wait (an abandoned lock expires first).
    fn default() -> Self {
        Self {
            refresh_margin: Duration::from_secs(5 * 60),
            lock_ttl: Duration::from_secs(15),
            wait_step: Duration::from_millis(50),
            max_wait: Duration::from_secs(16),
        }
    }
}

impl AccessTokenConfig {
    /// Refresh this long before the token expires (capped at half its
    /// lifetime; default 5 min).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let timing = weapp_wechat::AccessTokenConfig::default()
    ///     .with_refresh_margin(Duration::from_secs(60));
    /// assert_eq!(timing.refresh_margin, Duration::from_secs(60));
    /// ```
    pub fn with_refresh_margin(mut self, refresh_margin: Duration) -> Self {
        self.refresh_margin = refresh_margin;
        self
    }

    /// How long the refresh lock lives if its holder dies mid-refresh
    /// (default 15 s; keep it longer than a WeChat call and its retry).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let timing = weapp_wechat::AccessTokenConfig::default()
    ///     .with_lock_ttl(Duration::from_secs(30));
    /// assert_eq!(timing.lock_ttl, Duration::from_secs(30));
    /// ```
    pub fn with_lock_ttl(mut self, lock_ttl: Duration) -> Self {
        self.lock_ttl = lock_ttl;
        self
    }

    /// How often an instance waiting for another's refresh re-reads the
    /// store (default 50 ms).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let timing = weapp_wechat::AccessTokenConfig::default()
    ///     .with_wait_step(Duration::from_millis(20));
    /// assert_eq!(timing.wait_step, Duration::from_millis(20));
    /// ```
    pub fn with_wait_step(mut self, wait_step: Duration) -> Self {
        self.wait_step = wait_step;
        self
    }

    /// The longest a call waits for another instance's refresh before it
    /// fails (default 16 s: an abandoned lock expires first).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let timing = weapp_wechat::AccessTokenConfig::default()
    ///     .with_max_wait(Duration::from_secs(5));
    /// assert_eq!(timing.max_wait, Duration::from_secs(5));
    /// ```
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }
}

/// The shared WeChat access token and the calls that need it. Cheap to clone.
#[derive(Clone)]
pub struct AccessTokens {
    inner: Arc<Inner>,
}

struct Inner {
    client: WeChatClient,
    store: Arc<dyn SharedStore>,
    cfg: AccessTokenConfig,
    /// The in-process fast path: the current token until its refresh time.
    current: RwLock<Option<Cached>>,
    /// One refresh attempt per process at a time; holds the last attempt's error.
    refresh: tokio::sync::Mutex<Option<WeChatError>>,
    /// Refresh attempts finished so far (to share a failure with the waiters).
    attempts: AtomicU64,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("client", &self.inner.client)
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

/// A token as cached in memory and in the store (times in Unix milliseconds).
#[derive(Clone, Serialize, Deserialize)]
struct Cached {
    token: String,
    expires_at: u64,
    refresh_at: u64,
}

impl Cached {
    fn new(issued: &StableToken, margin: Duration, now: u64) -> Self {
        use secrecy::ExposeSecret;
        let lifetime = millis(issued.expires_in);
        let early = millis(margin).min(lifetime / 2);
        let expires_at = now.saturating_add(lifetime);
        Self {
            token: issued.access_token.expose_secret().to_owned(),
            expires_at,
            refresh_at: expires_at - early,
        }
    }

    /// Fresh (before its refresh time) and not the token known to be bad.
    fn usable(&self, stale: Option<&str>, now: u64) -> bool {
        now < self.refresh_at && stale != Some(self.token.as_str())
    }
}

/// What WeChat's text check (`msg_sec_check` v2) advises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecCheckSuggest {
    /// Nothing wrong found.
    Pass,
    /// Uncertain: a human should review.
    Review,
    /// Violates WeChat's content rules.
    Risky,
}

/// WeChat's verdict on one text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecCheckVerdict {
    /// The advice (`result.suggest`).
    pub suggest: SecCheckSuggest,
    /// WeChat's category label (`result.label`; 100 = normal, 20001 = politics, ...).
    pub label: i64,
    /// WeChat's trace id for this check, when it sent one.
    pub trace_id: Option<String>,
}

impl SecCheckVerdict {
    /// Whether the text may be published as is.
    pub fn is_pass(&self) -> bool {
        self.suggest == SecCheckSuggest::Pass
    }
}

impl AccessTokens {
    /// A manager with the default timing, sharing the token through `store`
    /// (every instance of the service on the same store shares one token).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weapp_session::MemoryStore;
    /// use weapp_wechat::{AccessTokens, WeChatClient, WeChatConfig};
    ///
    /// let client = WeChatClient::new(WeChatConfig::new("wx1234567890abcdef", "secret".to_owned()))?;
    /// // One instance: a MemoryStore; several: the RedisStore they share.
    /// let tokens = AccessTokens::new(client, Arc::new(MemoryStore::new(1_000)));
    /// assert_eq!(tokens.client().app_id(), "wx1234567890abcdef");
    /// # Ok::<(), weapp_wechat::WeChatError>(())
    /// ```
    pub fn new(client: WeChatClient, store: Arc<dyn SharedStore>) -> Self {
        Self::with_config(client, store, AccessTokenConfig::default())
    }

    /// A manager with custom timing.
    pub fn with_config(
        client: WeChatClient,
        store: Arc<dyn SharedStore>,
        cfg: AccessTokenConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                store,
                cfg,
                current: RwLock::new(None),
                refresh: tokio::sync::Mutex::new(None),
                attempts: AtomicU64::new(0),
            }),
        }
    }

    /// The WeChat client the calls go through.
    pub fn client(&self) -> &WeChatClient {
        &self.inner.client
    }

    /// A currently valid access token (from memory, the store, or a refresh).
    pub async fn access_token(&self) -> Result<SecretString, WeChatError> {
        self.token(None).await.map(SecretString::from)
    }

    /// `POST {api_base}{path}?access_token=…` with a JSON body, errcode-checked;
    /// retried once with a refreshed token when WeChat rejects the token.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, WeChatError> {
        self.try_post_json(path, body).await?
    }

    /// [`AccessTokens::post_json`] with the failures apart: `Err` when the
    /// access token could not be obtained or WeChat rejected even a freshly
    /// refreshed one (the server's problem), `Ok(Err)` when the call itself
    /// failed.
    pub async fn try_post_json(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<Result<Value, WeChatError>, WeChatError> {
        let client = &self.inner.client;
        self.call_with_token(|token| async move {
            client.post_json(path, &[("access_token", token.as_str())], body).await
        })
        .await
    }

    /// `GET {api_base}{path}?query&access_token=…`, errcode-checked; retried
    /// once with a refreshed token when WeChat rejects the token.
    pub async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, WeChatError> {
        let client = &self.inner.client;
        self.call_with_token(|token| async move {
            let mut full: Vec<(&str, &str)> = query.to_vec();
            full.push(("access_token", token.as_str()));
            client.get_json(path, &full).await
        })
        .await?
    }

    /// The user's phone number for a `getPhoneNumber` button code: WeChat's `phone_info` object.
    pub async fn phone_number(&self, code: &str) -> Result<Value, WeChatError> {
        self.try_phone_number(code).await?
    }

    /// [`AccessTokens::phone_number`] with the failures apart: `Err` is the
    /// access token's (see [`AccessTokens::try_post_json`]), `Ok(Err)` the
    /// call's own (e.g. 40029 for a spent or unknown code).
    #[tracing::instrument(name = "wechat_phone_number", skip_all)]
    pub async fn try_phone_number(
        &self,
        code: &str,
    ) -> Result<Result<Value, WeChatError>, WeChatError> {
        let body = json!({ "code": code });
        let answer = self.try_post_json("/wxa/business/getuserphonenumber", &body).await?;
        Ok(answer.and_then(|a| match a.get("phone_info") {
            Some(info) if info.is_object() => Ok(info.clone()),
            _ => Err(WeChatError::BadResponse("the answer has no phone_info object".into())),
        }))
    }

    /// Checks a user's text with `msg_sec_check` v2 (scene 2: comments/posts).
    pub async fn msg_sec_check(
        &self,
        openid: &str,
        content: &str,
    ) -> Result<SecCheckVerdict, WeChatError> {
        self.try_msg_sec_check(openid, content).await?
    }

    /// [`AccessTokens::msg_sec_check`] with the failures apart: `Err` is the
    /// access token's (see [`AccessTokens::try_post_json`]), `Ok(Err)` the
    /// call's own.
    #[tracing::instrument(name = "wechat_msg_sec_check", skip_all)]
    pub async fn try_msg_sec_check(
        &self,
        openid: &str,
        content: &str,
    ) -> Result<Result<SecCheckVerdict, WeChatError>, WeChatError> {
        let body = json!({"content": content, "version": 2, "scene": 2, "openid": openid});
        Ok(self.try_post_json("/wxa/msg_sec_check", &body).await?.and_then(|a| sec_verdict(&a)))
    }

    /// Runs `call` with the current token; if WeChat rejects the token, refreshes
    /// it (single refresher) and runs `call` once more with the new one.
    ///
    /// The outer error is the token's: it could not be obtained, or WeChat
    /// rejected the refreshed one too. The inner result is the call's.
    async fn call_with_token<F, Fut>(
        &self,
        call: F,
    ) -> Result<Result<Value, WeChatError>, WeChatError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<Value, WeChatError>>,
    {
        let token = self.token(None).await?;
        match call(token.clone()).await {
            Err(WeChatError::Api { errcode, .. }) if STALE_TOKEN_ERRCODES.contains(&errcode) => {
                tracing::info!(
                    errcode,
                    "WeChat rejected the access token; refreshing and retrying"
                );
                let fresh = self.token(Some(&token)).await?;
                match call(fresh).await {
                    Err(e @ WeChatError::Api { errcode, .. })
                        if STALE_TOKEN_ERRCODES.contains(&errcode) =>
                    {
                        tracing::warn!(errcode, "WeChat rejected a freshly refreshed access token");
                        Err(e)
                    }
                    other => Ok(other),
                }
            }
            other => Ok(other),
        }
    }

    /// A usable token; `stale` is a token WeChat just rejected (forces a refresh
    /// unless someone already replaced it).
    async fn token(&self, stale: Option<&str>) -> Result<String, WeChatError> {
        if let Some(token) = self.local(stale) {
            return Ok(token);
        }
        let seen_attempts = self.inner.attempts.load(Ordering::Acquire);
        let mut last_error = self.inner.refresh.lock().await;
        // Whoever held the lock may have refreshed (or failed to) meanwhile.
        if let Some(token) = self.local(stale) {
            return Ok(token);
        }
        if self.inner.attempts.load(Ordering::Acquire) != seen_attempts
            && let Some(err) = last_error.as_ref()
        {
            return Err(err.clone());
        }
        let result = self.fetch_shared(stale).await;
        *last_error = result.as_ref().err().cloned();
        self.inner.attempts.fetch_add(1, Ordering::Release);
        let cached = result?;
        let token = cached.token.clone();
        self.set_local(cached);
        Ok(token)
    }

    fn local(&self, stale: Option<&str>) -> Option<String> {
        let current = self.inner.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|c| c.usable(stale, now_ms())).map(|c| c.token.clone())
    }

    fn set_local(&self, cached: Cached) {
        *self.inner.current.write().unwrap_or_else(|p| p.into_inner()) = Some(cached);
    }

    /// Takes the token from the store, or refreshes it holding the store lock,
    /// or waits for the instance that holds the lock.
    async fn fetch_shared(&self, stale: Option<&str>) -> Result<Cached, WeChatError> {
        let store = &self.inner.store;
        let cfg = &self.inner.cfg;
        let deadline = Instant::now() + cfg.max_wait;
        loop {
            match self.read_shared(stale).await {
                Ok(Some(cached)) => return Ok(cached),
                Ok(None) => {}
                Err(e) => return self.refresh_without_store(e).await,
            }
            match store.try_lock(ACCESS_TOKEN_LOCK, cfg.lock_ttl).await {
                Ok(Some(lock)) => {
                    let result = self.refresh_locked(stale).await;
                    if let Err(e) = store.unlock(ACCESS_TOKEN_LOCK, &lock).await {
                        tracing::warn!(error = %e, "could not release the access token lock");
                    }
                    return result;
                }
                Ok(None) => {}
                Err(e) => return self.refresh_without_store(e).await,
            }
            if Instant::now() >= deadline {
                tracing::warn!("gave up waiting for another instance to refresh the access token");
                return Err(WeChatError::Timeout);
            }
            tokio::time::sleep(cfg.wait_step).await;
        }
    }

    /// The store's token if it is usable; a corrupt entry counts as absent.
    async fn read_shared(
        &self,
        stale: Option<&str>,
    ) -> Result<Option<Cached>, weapp_session::store::StoreError> {
        let Some(text) = self.inner.store.kv_get(ACCESS_TOKEN_KV).await? else {
            return Ok(None);
        };
        match serde_json::from_str::<Cached>(&text) {
            Ok(cached) if cached.usable(stale, now_ms()) => Ok(Some(cached)),
            Ok(_) => Ok(None),
            Err(_) => {
                tracing::warn!("the stored access token is unreadable; refreshing it");
                Ok(None)
            }
        }
    }

    /// Holding the store lock: refresh from WeChat and publish the new token.
    async fn refresh_locked(&self, stale: Option<&str>) -> Result<Cached, WeChatError> {
        // Another instance may have published between our read and our lock.
        if let Ok(Some(cached)) = self.read_shared(stale).await {
            return Ok(cached);
        }
        let force = stale.is_some();
        let issued = self.inner.client.stable_token(force).await?;
        let cached = Cached::new(&issued, self.inner.cfg.refresh_margin, now_ms());
        tracing::info!(
            force_refresh = force,
            expires_in_s = issued.expires_in.as_secs(),
            "refreshed the WeChat access token"
        );
        match serde_json::to_string(&cached) {
            Ok(text) => {
                if let Err(e) =
                    self.inner.store.kv_set(ACCESS_TOKEN_KV, &text, issued.expires_in).await
                {
                    tracing::warn!(error = %e, "could not publish the access token to the store");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not serialise the access token"),
        }
        Ok(cached)
    }

    /// The store is unreachable: ask WeChat directly, in normal mode (which does
    /// not invalidate the token other instances may be using).
    async fn refresh_without_store(
        &self,
        err: weapp_session::store::StoreError,
    ) -> Result<Cached, WeChatError> {
        tracing::warn!(error = %err, "session store unavailable; fetching the access token directly");
        let issued = self.inner.client.stable_token(false).await?;
        Ok(Cached::new(&issued, self.inner.cfg.refresh_margin, now_ms()))
    }
}

/// The verdict in a `msg_sec_check` v2 answer.
fn sec_verdict(answer: &Value) -> Result<SecCheckVerdict, WeChatError> {
    let result = answer
        .get("result")
        .ok_or_else(|| WeChatError::BadResponse("the answer has no result".into()))?;
    let suggest = result
        .get("suggest")
        .cloned()
        .and_then(|s| serde_json::from_value::<SecCheckSuggest>(s).ok())
        .ok_or_else(|| {
            WeChatError::BadResponse("result.suggest is not pass/review/risky".into())
        })?;
    Ok(SecCheckVerdict {
        suggest,
        label: result.get("label").and_then(Value::as_i64).unwrap_or(0),
        trace_id: answer.get("trace_id").and_then(Value::as_str).map(str::to_owned),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(secs: u64) -> StableToken {
        StableToken {
            access_token: SecretString::from("tok"),
            expires_in: Duration::from_secs(secs),
        }
    }

    #[test]
    fn refresh_time_is_margin_capped_at_half_the_lifetime() {
        let margin = Duration::from_secs(300);
        let c = Cached::new(&issued(7200), margin, 1_000);
        assert_eq!(c.expires_at, 1_000 + 7_200_000);
        assert_eq!(c.refresh_at, 1_000 + 6_900_000);
        let short = Cached::new(&issued(3), Duration::from_secs(2), 0);
        assert_eq!(short.refresh_at, 1_500);
    }

    #[test]
    fn usable_excludes_stale_and_late() {
        let c = Cached::new(&issued(10), Duration::from_secs(2), 0);
        assert!(c.usable(None, 7_999));
        assert!(!c.usable(None, 8_000));
        assert!(!c.usable(Some("tok"), 0));
        assert!(c.usable(Some("other"), 0));
    }

    #[test]
    fn suggest_parses_lowercase() {
        let s: SecCheckSuggest = serde_json::from_value(json!("risky")).expect("parses");
        assert_eq!(s, SecCheckSuggest::Risky);
        assert!(serde_json::from_value::<SecCheckSuggest>(json!("RISKY")).is_err());
    }
}
