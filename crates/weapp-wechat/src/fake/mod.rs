//! A fake WeChat API server for dev mode and tests.
//!
//! Serves WeChat's endpoints (`/sns/jscode2session`, `/cgi-bin/stable_token`,
//! `/wxa/business/getuserphonenumber`, `/wxa/msg_sec_check`) with WeChat's
//! errcodes, plus dev-only endpoints to mint login and phone codes, encrypt
//! open data, set risky words, read call counters and inject faults. The
//! gateway nests [`FakeWeChat::router`] under `/__wechat` in dev mode; tests
//! run it over real HTTP with [`FakeWeChat::spawn`].
//!
//! `state`: what the fake remembers (codes, tokens, counters, faults);
//! `wechat`: WeChat's endpoints; `dev`: the `/dev/*` endpoints.

mod dev;
mod state;
mod wechat;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::crypto::{DecryptError, encrypt_open_data};

use self::dev::{
    encrypt_http, get_faults_http, get_risky_words_http, mint_code_http, mint_phone_code_http,
    set_faults_http, set_risky_words_http, stats_http,
};
use self::state::{Inner, Shared, unix_seconds};
use self::wechat::{jscode2session, msg_sec_check_http, phone_number_http, stable_token_http};

pub use self::state::{EncryptedOpenData, FakeStats, Faults, MintedCode};

/// Endpoint name of `jscode2session` in the call counters.
pub const JSCODE2SESSION: &str = "/sns/jscode2session";

/// Endpoint name of `stable_token` in the call counters.
pub const STABLE_TOKEN: &str = "/cgi-bin/stable_token";
/// Endpoint name of `getuserphonenumber` in the call counters.
pub const GET_PHONE_NUMBER: &str = "/wxa/business/getuserphonenumber";
/// Endpoint name of `msg_sec_check` in the call counters.
pub const MSG_SEC_CHECK: &str = "/wxa/msg_sec_check";

/// A fake WeChat API server; cheap to clone (shared state).
#[derive(Clone)]
pub struct FakeWeChat {
    state: Arc<Shared>,
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let (fake, addr) = weapp_wechat::FakeWeChat::spawn("wx_app", "app-secret").await?;
    /// // Point a WeChatClient at `http://{addr}` (WeChatConfig::with_api_base).
    /// assert!(addr.ip().is_loopback());
    /// assert_eq!(fake.stats().jscode2session_calls, 0);
    /// # Ok(())
    /// # }
    /// ```
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
    /// ```
    /// let fake = weapp_wechat::FakeWeChat::new("wx_app", "app-secret");
    /// let minted = fake.mint_code("o_alice", Some("HyVFkGl5F5OQWJZZaNzBBg==".into()), None);
    /// // `minted.code` goes to the gateway as a wx.login() code; WeChat (the fake)
    /// // answers it with this openid and session_key, once.
    /// assert_eq!((minted.openid.as_str(), minted.session_key.as_str()),
    ///            ("o_alice", "HyVFkGl5F5OQWJZZaNzBBg=="));
    /// ```
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
}
