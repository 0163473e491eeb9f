//! A fake WeChat API server for dev mode and tests.
//!
//! Serves WeChat's endpoints (`/sns/jscode2session`) with WeChat's errcodes,
//! plus dev-only endpoints to mint codes, read call counters and inject
//! faults. The gateway nests [`FakeWeChat::router`] under `/__wechat` in dev
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

/// Endpoint name of `jscode2session` in the call counters.
pub const JSCODE2SESSION: &str = "/sns/jscode2session";

/// How long a minted code stays valid, like WeChat's.
const DEFAULT_CODE_TTL: Duration = Duration::from_secs(5 * 60);

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
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Sleep this long before answering.
    pub delay_ms: u64,
    /// Answer HTTP 500 with a non-JSON body.
    pub http_500: bool,
    /// The next N calls answer errcode -1 "system error" (decremented per call).
    pub busy: u32,
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
            .route("/dev/codes", post(mint_code_http))
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

    /// Counts a call of a WeChat endpoint and applies the faults in effect.
    ///
    /// Every WeChat endpoint calls this first (so new endpoints get counters
    /// and faults for free). The lock is released before sleeping.
    async fn enter(&self, endpoint: &str) -> FaultOutcome {
        let (delay_ms, http_500, busy) = {
            let mut inner = self.lock();
            *inner.calls.entry(endpoint.to_owned()).or_insert(0) += 1;
            let busy = inner.faults.busy > 0;
            if busy {
                inner.faults.busy -= 1;
            }
            (inner.faults.delay_ms, inner.faults.http_500, busy)
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

fn errcode(code: i64, msg: &str) -> Value {
    json!({"errcode": code, "errmsg": msg})
}

/// WeChat answers 200 with JSON labelled `text/plain`; so does the fake.
fn wechat_json(body: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body.to_string()).into_response()
}

/// Parses a `/dev/*` request body, which must be a JSON object.
fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    let bad = |msg: String| dev_error(StatusCode::BAD_REQUEST, &msg);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(bad("the body must be a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| bad(format!("invalid body: {e}")))
}

fn dev_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

async fn jscode2session(State(fake): State<FakeWeChat>, RawQuery(query): RawQuery) -> Response {
    if let FaultOutcome::Answer(resp) = fake.enter(JSCODE2SESSION).await {
        return resp;
    }
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    wechat_json(fake.exchange(&params))
}

async fn mint_code_http(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    let req: MintRequest = match parse_object(&body) {
        Ok(req) => req,
        Err(resp) => return resp,
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
        Err(resp) => resp,
    }
}
