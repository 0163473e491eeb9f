//! A fake WeChat API server for dev mode and tests.
//!
//! Serves WeChat's endpoints (`/sns/jscode2session`, `/cgi-bin/stable_token`,
//! `/wxa/business/getuserphonenumber`, `/wxa/msg_sec_check`) with WeChat's
//! errcodes, plus dev-only endpoints to mint login and phone codes, encrypt
//! open data, set risky words, read call counters and inject faults. The gateway nests [`FakeWeChat::router`] under `/__wechat` in dev
//! mode; tests run it over real HTTP with [`FakeWeChat::spawn`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::crypto::{DecryptError, encrypt_open_data};

/// Endpoint name of `jscode2session` in the call counters.
pub const JSCODE2SESSION: &str = "/sns/jscode2session";

/// Endpoint name of `stable_token` in the call counters.
pub const STABLE_TOKEN: &str = "/cgi-bin/stable_token";
/// Endpoint name of `getuserphonenumber` in the call counters.
pub const GET_PHONE_NUMBER: &str = "/wxa/business/getuserphonenumber";
/// Endpoint name of `msg_sec_check` in the call counters.
pub const MSG_SEC_CHECK: &str = "/wxa/msg_sec_check";

/// How long a minted code (login or phone) stays valid, like WeChat's.
const DEFAULT_CODE_TTL: Duration = Duration::from_secs(5 * 60);
/// How long an access token stays valid, like WeChat's.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(7200);
/// In normal mode WeChat hands out a new token this long before the old one expires.
const TOKEN_EARLY_RENEWAL: Duration = Duration::from_secs(5 * 60);
/// Expired tokens are remembered this long (so they answer 42001, not 40001).
const EXPIRED_TOKEN_MEMORY: Duration = Duration::from_secs(3600);

/// A fake WeChat API server; cheap to clone (shared state).
#[derive(Clone)]
pub struct FakeWeChat {
    state: Arc<Shared>,
}

struct Shared {
    app_id: String,
    secret: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    codes: HashMap<String, CodeEntry>,
    code_ttl: Option<Duration>,
    faults: Faults,
    /// Calls per WeChat endpoint (including failed ones).
    calls: BTreeMap<String, u64>,
    codes_minted: u64,
    /// Access tokens issued by `stable_token`.
    tokens: HashMap<String, TokenEntry>,
    /// The token `stable_token` hands out in normal mode while it is fresh.
    newest_token: Option<String>,
    token_ttl: Option<Duration>,
    /// Codes for `getuserphonenumber`.
    phone_codes: HashMap<String, PhoneEntry>,
    /// Texts containing any of these are "risky" for `msg_sec_check`.
    risky_words: Vec<String>,
}

struct TokenEntry {
    expires_at: Instant,
    /// Invalidated by a forced refresh (answers 40001).
    revoked: bool,
}

struct PhoneEntry {
    phone_number: String,
    country_code: String,
    minted_at: Instant,
    used: bool,
}

/// Open data encrypted by the fake, as a mini-program receives it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptedOpenData {
    /// The `encryptedData` (base64).
    #[serde(rename = "encryptedData")]
    pub encrypted_data: String,
    /// The `iv` (base64 of 16 bytes).
    pub iv: String,
}

struct CodeEntry {
    openid: String,
    session_key: String,
    unionid: Option<String>,
    minted_at: Instant,
    used: bool,
}

/// A code minted by the fake, with the session it exchanges for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MintedCode {
    /// The code to send as `X-WX-Code` / `js_code`.
    pub code: String,
    /// The openid `jscode2session` will answer.
    pub openid: String,
    /// The session_key (base64 of 16 bytes) `jscode2session` will answer.
    pub session_key: String,
}

/// Call counters of the fake.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FakeStats {
    /// Calls of `/sns/jscode2session`, failed ones included.
    pub jscode2session_calls: u64,
    /// Codes minted so far.
    pub codes_minted: u64,
    /// Calls per WeChat endpoint path, failed ones included.
    pub calls: BTreeMap<String, u64>,
}

impl FakeStats {
    /// Calls of one endpoint (e.g. [`JSCODE2SESSION`]).
    pub fn calls_to(&self, endpoint: &str) -> u64 {
        self.calls.get(endpoint).copied().unwrap_or(0)
    }
}

/// Faults the fake injects into its WeChat endpoints (not into `/dev/*`).
/// Start from `Faults::default()` (none):
///
/// ```
/// let faults = weapp_wechat::Faults::default().with_busy(2).with_delay_ms(300);
/// assert_eq!((faults.busy, faults.delay_ms), (2, 300));
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Faults {
    /// Sleep this long before answering.
    pub delay_ms: u64,
    /// Answer HTTP 500 with a non-JSON body.
    pub http_500: bool,
    /// The next N calls answer errcode -1 "system error" (decremented per call).
    pub busy: u32,
    /// `jscode2session` only: consume the code first (mark it used), then
    /// sleep this long before answering, as a slow upstream does. A client
    /// that gives up meanwhile has lost the code.
    pub answer_delay_ms: u64,
    /// Answer this errcode with [`Faults::errmsg`] instead of the endpoint's
    /// answer (0: off), e.g. to see what the gateway does with a hostile errmsg.
    pub errcode: i64,
    /// The errmsg sent with [`Faults::errcode`].
    pub errmsg: String,
}

impl Faults {
    /// Sleep `ms` milliseconds before answering.
    ///
    /// ```
    /// let faults = weapp_wechat::Faults::default().with_delay_ms(1_500);
    /// assert_eq!(faults.delay_ms, 1_500);
    /// ```
    pub fn with_delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }

    /// Answer HTTP 500 with a non-JSON body.
    ///
    /// ```
    /// let faults = weapp_wechat::Faults::default().with_http_500();
    /// assert!(faults.http_500);
    /// ```
    pub fn with_http_500(mut self) -> Self {
        self.http_500 = true;
        self
    }

    /// The next `calls` calls answer errcode -1 "system error".
    ///
    /// ```
    /// let faults = weapp_wechat::Faults::default().with_busy(3);
    /// assert_eq!(faults.busy, 3);
    /// ```
    pub fn with_busy(mut self, calls: u32) -> Self {
        self.busy = calls;
        self
    }

    /// `jscode2session` only: spend the code, then sleep `ms` milliseconds
    /// before answering, as a slow upstream does.
    ///
    /// ```
    /// let faults = weapp_wechat::Faults::default().with_answer_delay_ms(1_200);
    /// assert_eq!(faults.answer_delay_ms, 1_200);
    /// ```
    pub fn with_answer_delay_ms(mut self, ms: u64) -> Self {
        self.answer_delay_ms = ms;
        self
    }

    /// Answer `errcode` with `errmsg` instead of the endpoint's answer.
    ///
    /// ```
    /// let faults = weapp_wechat::Faults::default().with_errcode(40029, "invalid code");
    /// assert_eq!((faults.errcode, faults.errmsg.as_str()), (40029, "invalid code"));
    /// ```
    pub fn with_errcode(mut self, errcode: i64, errmsg: impl Into<String>) -> Self {
        self.errcode = errcode;
        self.errmsg = errmsg.into();
        self
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    openid: String,
    #[serde(default)]
    session_key: Option<String>,
    #[serde(default)]
    unionid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneCodeRequest {
    #[serde(rename = "phoneNumber")]
    phone_number: String,
    #[serde(default = "default_country_code", rename = "countryCode")]
    country_code: String,
}

fn default_country_code() -> String {
    "86".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskyWordsRequest {
    words: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptRequest {
    session_key: String,
    data: Value,
    #[serde(default)]
    iv: Option<String>,
}

/// What a WeChat endpoint should do after faults were applied.
enum FaultOutcome {
    Proceed,
    Answer(Response),
}

impl FakeWeChat {
    /// A fake for the mini-program `app_id` with AppSecret `secret`.
    pub fn new(app_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            state: Arc::new(Shared {
                app_id: app_id.into(),
                secret: secret.into(),
                inner: Mutex::new(Inner::default()),
            }),
        }
    }

    /// Binds `127.0.0.1:0`, serves the fake in a tokio task, returns it and its address.
    pub async fn spawn(
        app_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> std::io::Result<(FakeWeChat, SocketAddr)> {
        let fake = FakeWeChat::new(app_id, secret);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let server = fake.clone();
        tokio::spawn(async move {
            if let Err(e) = server.serve(listener).await {
                tracing::error!(error = %e, "fake WeChat server stopped");
            }
        });
        Ok((fake, addr))
    }

    /// Serves the fake's router on `listener` until the server fails.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// The fake's routes, relative to the root (nest it anywhere).
    pub fn router(&self) -> Router {
        Router::new()
            .route(JSCODE2SESSION, get(jscode2session))
            .route(STABLE_TOKEN, post(stable_token_http))
            .route(GET_PHONE_NUMBER, post(phone_number_http))
            .route(MSG_SEC_CHECK, post(msg_sec_check_http))
            .route("/dev/codes", post(mint_code_http))
            .route("/dev/phone-codes", post(mint_phone_code_http))
            .route("/dev/risky-words", get(get_risky_words_http).post(set_risky_words_http))
            .route("/dev/encrypt", post(encrypt_http))
            .route("/dev/stats", get(stats_http))
            .route("/dev/faults", get(get_faults_http).post(set_faults_http))
            .with_state(self.clone())
    }

    /// Mints a code for `openid` (random session_key when `None`). Not validated.
    ///
    /// # Panics
    /// When the OS random number generator fails.
    pub fn mint_code(
        &self,
        openid: impl Into<String>,
        session_key: Option<String>,
        unionid: Option<String>,
    ) -> MintedCode {
        match self.try_mint(openid.into(), session_key, unionid) {
            Ok(minted) => minted,
            Err(e) => panic!("fake WeChat: OS random number generator failed: {e}"),
        }
    }

    /// The call counters.
    pub fn stats(&self) -> FakeStats {
        let inner = self.lock();
        FakeStats {
            jscode2session_calls: inner.calls.get(JSCODE2SESSION).copied().unwrap_or(0),
            codes_minted: inner.codes_minted,
            calls: inner.calls.clone(),
        }
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// The injected faults currently in effect.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Changes how long codes stay valid (default 5 minutes), e.g. to test expiry.
    pub fn set_code_ttl(&self, ttl: Duration) {
        self.lock().code_ttl = Some(ttl);
    }

    /// Changes how long new access tokens stay valid (default 7200 s; advertised
    /// as whole seconds, at least 1), e.g. to test refresh before expiry.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().token_ttl = Some(ttl);
    }

    /// Expires every access token issued so far: using one now answers 42001.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        for entry in inner.tokens.values_mut() {
            entry.expires_at = entry.expires_at.min(now);
        }
    }

    /// Mints a single-use `getPhoneNumber` code for `phone_number` (as WeChat's
    /// `phoneNumber`; `purePhoneNumber` drops a leading `+{country_code}`).
    ///
    /// # Panics
    /// When the OS random number generator fails.
    pub fn mint_phone_code(
        &self,
        phone_number: impl Into<String>,
        country_code: impl Into<String>,
    ) -> String {
        match self.try_mint_phone(phone_number.into(), country_code.into()) {
            Ok(code) => code,
            Err(e) => panic!("fake WeChat: OS random number generator failed: {e}"),
        }
    }

    /// Replaces the words that make `msg_sec_check` answer "risky" (default: none).
    pub fn set_risky_words(&self, words: Vec<String>) {
        self.lock().risky_words = words.into_iter().filter(|w| !w.is_empty()).collect();
    }

    /// The words that make `msg_sec_check` answer "risky".
    pub fn risky_words(&self) -> Vec<String> {
        self.lock().risky_words.clone()
    }

    /// Encrypts `data` (a JSON object) for a user with `session_key` as WeChat
    /// does, adding `watermark: {appid, timestamp}` with this fake's AppID if absent.
    pub fn encrypt_user_data(
        &self,
        session_key: &str,
        mut data: Value,
        iv: &str,
    ) -> Result<EncryptedOpenData, DecryptError> {
        let Some(obj) = data.as_object_mut() else {
            return Err(DecryptError::NotJson);
        };
        if !obj.contains_key("watermark") {
            obj.insert(
                "watermark".into(),
                json!({"appid": self.state.app_id, "timestamp": unix_seconds()}),
            );
        }
        let encrypted_data = encrypt_open_data(session_key, &data, iv)?;
        Ok(EncryptedOpenData { encrypted_data, iv: iv.to_owned() })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent.
        self.state.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn try_mint(
        &self,
        openid: String,
        session_key: Option<String>,
        unionid: Option<String>,
    ) -> Result<MintedCode, getrandom::Error> {
        let session_key = match session_key {
            Some(key) => key,
            None => STANDARD.encode(random_bytes::<16>()?),
        };
        let code = URL_SAFE_NO_PAD.encode(random_bytes::<24>()?);
        let mut inner = self.lock();
        let ttl = inner.code_ttl.unwrap_or(DEFAULT_CODE_TTL);
        // Forget codes that can only answer 40029 anyway.
        inner.codes.retain(|_, e| e.minted_at.elapsed() <= ttl);
        inner.codes.insert(
            code.clone(),
            CodeEntry {
                openid: openid.clone(),
                session_key: session_key.clone(),
                unionid,
                minted_at: Instant::now(),
                used: false,
            },
        );
        inner.codes_minted += 1;
        Ok(MintedCode { code, openid, session_key })
    }

    fn try_mint_phone(
        &self,
        phone_number: String,
        country_code: String,
    ) -> Result<String, getrandom::Error> {
        let code = URL_SAFE_NO_PAD.encode(random_bytes::<24>()?);
        let mut inner = self.lock();
        let ttl = inner.code_ttl.unwrap_or(DEFAULT_CODE_TTL);
        inner.phone_codes.retain(|_, e| e.minted_at.elapsed() <= ttl);
        inner.phone_codes.insert(
            code.clone(),
            PhoneEntry { phone_number, country_code, minted_at: Instant::now(), used: false },
        );
        Ok(code)
    }

    /// The answer of `stable_token` for this request body.
    fn stable_token(&self, body: &Value) -> Value {
        let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or("");
        if field("grant_type") != "client_credential" {
            return errcode(40002, "invalid grant_type");
        }
        let (appid, secret) = (field("appid"), field("secret"));
        if appid.is_empty() {
            return errcode(41002, "appid missing");
        }
        if appid != self.state.app_id {
            return errcode(40013, "invalid appid");
        }
        if secret.is_empty() {
            return errcode(41004, "appsecret missing");
        }
        if secret != self.state.secret {
            return errcode(40125, "invalid appsecret");
        }
        let force = body.get("force_refresh").and_then(Value::as_bool).unwrap_or(false);
        let Ok(bytes) = random_bytes::<32>() else {
            return errcode(-1, "system error");
        };
        let fresh_token = URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut inner = self.lock();
        let ttl = inner.token_ttl.unwrap_or(DEFAULT_TOKEN_TTL);
        if !force {
            // Normal mode: the current token while it is not about to expire.
            let early = TOKEN_EARLY_RENEWAL.min(ttl / 2);
            let current = inner.newest_token.as_ref().and_then(|t| {
                let entry = inner.tokens.get(t)?;
                let left = entry.expires_at.checked_duration_since(now)?;
                (!entry.revoked && left > early).then(|| (t.clone(), left))
            });
            if let Some((token, left)) = current {
                return json!({"access_token": token, "expires_in": left.as_secs().max(1)});
            }
        } else {
            // A forced refresh invalidates the tokens handed out before.
            for entry in inner.tokens.values_mut() {
                entry.revoked = true;
            }
        }
        inner
            .tokens
            .retain(|_, e| now.saturating_duration_since(e.expires_at) < EXPIRED_TOKEN_MEMORY);
        inner
            .tokens
            .insert(fresh_token.clone(), TokenEntry { expires_at: now + ttl, revoked: false });
        inner.newest_token = Some(fresh_token.clone());
        json!({"access_token": fresh_token, "expires_in": ttl.as_secs().max(1)})
    }

    /// Checks the `access_token` query parameter like WeChat: `Err(answer)` when unusable.
    fn check_access_token(&self, params: &HashMap<String, String>) -> Result<(), Value> {
        let token = params.get("access_token").map(String::as_str).unwrap_or("");
        if token.is_empty() {
            return Err(errcode(41001, "access_token missing"));
        }
        let inner = self.lock();
        match inner.tokens.get(token) {
            None => {
                Err(errcode(40001, "invalid credential, access_token is invalid or not latest"))
            }
            Some(entry) if entry.revoked => {
                Err(errcode(40001, "invalid credential, access_token is invalid or not latest"))
            }
            Some(entry) if Instant::now() >= entry.expires_at => {
                Err(errcode(42001, "access_token expired"))
            }
            Some(_) => Ok(()),
        }
    }

    /// The answer of `getuserphonenumber` for this body (consumes the code).
    fn phone_number(&self, body: &Value) -> Value {
        let Some(code) = body.get("code").and_then(Value::as_str).filter(|c| !c.is_empty()) else {
            return errcode(47001, "data format error");
        };
        let mut inner = self.lock();
        let ttl = inner.code_ttl.unwrap_or(DEFAULT_CODE_TTL);
        let Some(entry) = inner.phone_codes.get_mut(code) else {
            return errcode(40029, "invalid code");
        };
        if entry.used || entry.minted_at.elapsed() > ttl {
            return errcode(40029, "invalid code");
        }
        entry.used = true;
        let prefix = format!("+{}", entry.country_code);
        let pure = entry.phone_number.strip_prefix(&prefix).unwrap_or(&entry.phone_number).trim();
        json!({
            "errcode": 0,
            "errmsg": "ok",
            "phone_info": {
                "phoneNumber": entry.phone_number,
                "purePhoneNumber": pure,
                "countryCode": entry.country_code,
                "watermark": {"timestamp": unix_seconds(), "appid": self.state.app_id},
            },
        })
    }

    /// The answer of `msg_sec_check` (v2) for this body.
    fn msg_sec_check(&self, body: &Value) -> Value {
        let content = body.get("content").and_then(Value::as_str);
        let version = body.get("version").and_then(Value::as_i64);
        let scene = body.get("scene").and_then(Value::as_i64);
        let openid = body.get("openid").and_then(Value::as_str).unwrap_or("");
        let (Some(content), Some(2), Some(1..=4)) = (content, version, scene) else {
            return errcode(47001, "data format error");
        };
        if openid.is_empty() {
            return errcode(40003, "invalid openid");
        }
        let hit = self.lock().risky_words.iter().find(|w| content.contains(w.as_str())).cloned();
        let model = json!({"strategy": "content_model", "errcode": 0, "suggest": "pass",
                           "label": 100, "prob": 0});
        let trace_id = random_bytes::<12>().map(|b| URL_SAFE_NO_PAD.encode(b)).unwrap_or_default();
        match hit {
            Some(word) => json!({
                "errcode": 0,
                "errmsg": "ok",
                "result": {"suggest": "risky", "label": 20001},
                "detail": [model, {"strategy": "keyword", "errcode": 0, "suggest": "risky",
                                   "label": 20001, "level": 90, "keyword": word}],
                "trace_id": trace_id,
            }),
            None => json!({
                "errcode": 0,
                "errmsg": "ok",
                "result": {"suggest": "pass", "label": 100},
                "detail": [model],
                "trace_id": trace_id,
            }),
        }
    }

    /// Counts a call of a WeChat endpoint and applies the faults in effect.
    ///
    /// Every WeChat endpoint calls this first (so new endpoints get counters
    /// and faults for free). The lock is released before sleeping.
    async fn enter(&self, endpoint: &str) -> FaultOutcome {
        let (delay_ms, http_500, busy, forced) = {
            let mut inner = self.lock();
            *inner.calls.entry(endpoint.to_owned()).or_insert(0) += 1;
            let busy = inner.faults.busy > 0;
            if busy {
                inner.faults.busy -= 1;
            }
            let forced = (inner.faults.errcode != 0)
                .then(|| errcode(inner.faults.errcode, &inner.faults.errmsg));
            (inner.faults.delay_ms, inner.faults.http_500, busy, forced)
        };
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        if http_500 {
            return FaultOutcome::Answer(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body>500 Internal Server Error</body></html>",
                )
                    .into_response(),
            );
        }
        if busy {
            return FaultOutcome::Answer(wechat_json(errcode(-1, "system error")));
        }
        if let Some(answer) = forced {
            return FaultOutcome::Answer(wechat_json(answer));
        }
        FaultOutcome::Proceed
    }

    /// The answer of `jscode2session` for these query parameters (consumes the code).
    fn exchange(&self, params: &HashMap<String, String>) -> Value {
        let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
        let (appid, secret, code, grant_type) =
            (param("appid"), param("secret"), param("js_code"), param("grant_type"));
        if appid.is_empty() {
            return errcode(41002, "appid missing");
        }
        if appid != self.state.app_id {
            return errcode(40013, "invalid appid");
        }
        if secret.is_empty() {
            return errcode(41004, "appsecret missing");
        }
        if secret != self.state.secret {
            return errcode(40125, "invalid appsecret");
        }
        if code.is_empty() {
            return errcode(41008, "missing code");
        }
        if grant_type != "authorization_code" {
            return errcode(40002, "invalid grant_type");
        }
        let mut inner = self.lock();
        let ttl = inner.code_ttl.unwrap_or(DEFAULT_CODE_TTL);
        let Some(entry) = inner.codes.get_mut(code) else {
            return errcode(40029, "invalid code");
        };
        if entry.minted_at.elapsed() > ttl {
            return errcode(40029, "invalid code");
        }
        if entry.used {
            return errcode(40163, "code been used");
        }
        entry.used = true;
        let mut body = json!({"openid": entry.openid, "session_key": entry.session_key});
        if let Some(unionid) = &entry.unionid {
            body["unionid"] = Value::String(unionid.clone());
        }
        body
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)?;
    Ok(buf)
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn query_params(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect()
}

/// A WeChat POST body: a JSON object whatever the Content-Type, else `Err(47001)`.
fn wechat_body(body: &[u8]) -> Result<Value, Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        _ => Err(errcode(47001, "data format error")),
    }
}

fn errcode(code: i64, msg: &str) -> Value {
    json!({"errcode": code, "errmsg": msg})
}

/// WeChat answers 200 with JSON labelled `text/plain`; so does the fake.
fn wechat_json(body: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body.to_string()).into_response()
}

/// Parses a `/dev/*` request body, which must be a JSON object.
fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    if !value.is_object() {
        return Err("the body must be a JSON object".into());
    }
    serde_json::from_value(value).map_err(|e| format!("invalid body: {e}"))
}

fn dev_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

async fn jscode2session(State(fake): State<FakeWeChat>, RawQuery(query): RawQuery) -> Response {
    if let FaultOutcome::Answer(resp) = fake.enter(JSCODE2SESSION).await {
        return resp;
    }
    let answer = fake.exchange(&query_params(query.as_deref()));
    let answer_delay_ms = fake.lock().faults.answer_delay_ms;
    if answer_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(answer_delay_ms)).await;
    }
    wechat_json(answer)
}

async fn stable_token_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    if let FaultOutcome::Answer(resp) = fake.enter(STABLE_TOKEN).await {
        return resp;
    }
    wechat_json(match wechat_body(&body) {
        Ok(body) => fake.stable_token(&body),
        Err(answer) => answer,
    })
}

async fn phone_number_http(
    State(fake): State<FakeWeChat>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let FaultOutcome::Answer(resp) = fake.enter(GET_PHONE_NUMBER).await {
        return resp;
    }
    let answer = fake
        .check_access_token(&query_params(query.as_deref()))
        .and_then(|()| wechat_body(&body))
        .map(|body| fake.phone_number(&body));
    wechat_json(answer.unwrap_or_else(|err| err))
}

async fn msg_sec_check_http(
    State(fake): State<FakeWeChat>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let FaultOutcome::Answer(resp) = fake.enter(MSG_SEC_CHECK).await {
        return resp;
    }
    let answer = fake
        .check_access_token(&query_params(query.as_deref()))
        .and_then(|()| wechat_body(&body))
        .map(|body| fake.msg_sec_check(&body));
    wechat_json(answer.unwrap_or_else(|err| err))
}

async fn mint_phone_code_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    let req: PhoneCodeRequest = match parse_object(&body) {
        Ok(req) => req,
        Err(msg) => return dev_error(StatusCode::BAD_REQUEST, &msg),
    };
    if req.phone_number.is_empty() || req.country_code.is_empty() {
        return dev_error(StatusCode::BAD_REQUEST, "phoneNumber and countryCode must not be empty");
    }
    match fake.try_mint_phone(req.phone_number, req.country_code) {
        Ok(code) => axum::Json(json!({ "code": code })).into_response(),
        Err(e) => dev_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("random number generator failed: {e}"),
        ),
    }
}

async fn get_risky_words_http(State(fake): State<FakeWeChat>) -> Response {
    axum::Json(json!({ "words": fake.risky_words() })).into_response()
}

async fn set_risky_words_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    match parse_object::<RiskyWordsRequest>(&body) {
        Ok(req) => {
            fake.set_risky_words(req.words);
            axum::Json(json!({ "words": fake.risky_words() })).into_response()
        }
        Err(msg) => dev_error(StatusCode::BAD_REQUEST, &msg),
    }
}

async fn encrypt_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    let req: EncryptRequest = match parse_object(&body) {
        Ok(req) => req,
        Err(msg) => return dev_error(StatusCode::BAD_REQUEST, &msg),
    };
    let iv = match req.iv {
        Some(iv) => iv,
        None => match random_bytes::<16>() {
            Ok(bytes) => STANDARD.encode(bytes),
            Err(e) => {
                return dev_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("random number generator failed: {e}"),
                );
            }
        },
    };
    match fake.encrypt_user_data(&req.session_key, req.data, &iv) {
        Ok(sealed) => axum::Json(sealed).into_response(),
        Err(DecryptError::NotJson) => {
            dev_error(StatusCode::BAD_REQUEST, "data must be a JSON object")
        }
        Err(e) => dev_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn mint_code_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    let req: MintRequest = match parse_object(&body) {
        Ok(req) => req,
        Err(msg) => return dev_error(StatusCode::BAD_REQUEST, &msg),
    };
    if req.openid.is_empty() {
        return dev_error(StatusCode::BAD_REQUEST, "openid must not be empty");
    }
    if let Some(key) = &req.session_key {
        match STANDARD.decode(key) {
            Ok(bytes) if bytes.len() == 16 => {}
            _ => {
                return dev_error(
                    StatusCode::BAD_REQUEST,
                    "session_key must be the base64 of 16 bytes",
                );
            }
        }
    }
    match fake.try_mint(req.openid, req.session_key, req.unionid) {
        Ok(minted) => axum::Json(minted).into_response(),
        Err(e) => dev_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("random number generator failed: {e}"),
        ),
    }
}

async fn stats_http(State(fake): State<FakeWeChat>) -> Response {
    axum::Json(fake.stats()).into_response()
}

async fn get_faults_http(State(fake): State<FakeWeChat>) -> Response {
    axum::Json(fake.faults()).into_response()
}

async fn set_faults_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    match parse_object::<Faults>(&body) {
        Ok(faults) => {
            fake.set_faults(faults.clone());
            axum::Json(faults).into_response()
        }
        Err(msg) => dev_error(StatusCode::BAD_REQUEST, &msg),
    }
}
