//! The session engine: authenticate a request, log a user in (both dialects),
//! log out. Shared by the layer's service clones through an `Arc`.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::SessionError;
use super::exchange::{CodeExchanger, ExchangeError, Exchanged};
use super::headers::{
    HEADER_CODE, HEADER_RAW_DATA, HEADER_SIGNATURE, bearer_token, decode_uri_component, header_str,
    header_text, plausible_id, signature_matches, signature_shape_ok,
};
use super::identity::WxSession;
use super::l1::{L1, L1Config};
use super::store::{
    Expiry, SessionId, SessionKind, SessionRecord, SessionStore, StoreError, unix_now,
};

/// WeChat's errcode for a code that was already exchanged.
const ERRCODE_CODE_USED: i64 = 40163;
/// A WeChat code is valid for five minutes; exchanges are remembered as long.
const CODE_LIFETIME: Duration = Duration::from_secs(300);
/// Upper bound on one exchange task, whatever the exchanger does (the WeChat
/// client's own `wechat.timeout` is far shorter), so a stuck exchanger cannot
/// hold a flight forever.
const EXCHANGE_TASK_BOUND: Duration = Duration::from_secs(60);
/// Most codes in flight or remembered at once.
const MAX_CODES: u64 = 100_000;

/// Login rate limit: attempts per minute per client address, with a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LoginRateLimit {
    /// Sustained login attempts per minute per client address.
    pub per_minute: NonZeroU32,
    /// How many attempts may arrive at once.
    pub burst: NonZeroU32,
}

impl LoginRateLimit {
    /// `per_minute` attempts a minute per client address, `burst` at once.
    ///
    /// ```
    /// # use std::num::NonZeroU32;
    /// let limit = weapp_session::LoginRateLimit::new(NonZeroU32::MIN, NonZeroU32::MIN);
    /// assert_eq!(limit.per_minute.get(), 1);
    /// ```
    pub fn new(per_minute: NonZeroU32, burst: NonZeroU32) -> Self {
        Self { per_minute, burst }
    }
}

/// The instance-wide budget of code exchanges that reach WeChat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExchangeBudget {
    /// Sustained exchanges per second for the whole instance.
    pub per_second: NonZeroU32,
    /// How many exchanges may start at once.
    pub burst: NonZeroU32,
}

impl ExchangeBudget {
    /// `per_second` exchanges a second for the instance, `burst` at once.
    ///
    /// ```
    /// # use std::num::NonZeroU32;
    /// let budget = weapp_session::ExchangeBudget::new(NonZeroU32::MIN, NonZeroU32::MIN);
    /// assert_eq!(budget.burst.get(), 1);
    /// ```
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self { per_second, burst }
    }
}

const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// Behaviour of the session layer, as [`crate::WxSessionLayerBuilder`] set
/// it. Read it through [`SessionEngine::config`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionConfig {
    pub(crate) compat_ttl: Duration,
    pub(crate) token_idle_ttl: Duration,
    pub(crate) token_max_lifetime: Duration,
    pub(crate) ignore: Vec<String>,
    pub(crate) login_rate_limit: Option<LoginRateLimit>,
    pub(crate) exchange_budget: Option<ExchangeBudget>,
    pub(crate) max_login_body: usize,
    pub(crate) l1: Option<L1Config>,
    pub(crate) body_timeout_error: fn(&(dyn std::error::Error + 'static)) -> bool,
}

impl SessionConfig {
    /// TTL of a compat (code) session.
    pub fn compat_ttl(&self) -> Duration {
        self.compat_ttl
    }

    /// Sliding idle TTL of a token session.
    pub fn token_idle_ttl(&self) -> Duration {
        self.token_idle_ttl
    }

    /// Absolute lifetime of a token session.
    pub fn token_max_lifetime(&self) -> Duration {
        self.token_max_lifetime
    }

    /// Paths the layer does not touch: exact paths, or prefixes ending in `*`.
    pub fn ignore(&self) -> &[String] {
        &self.ignore
    }

    /// Per-client-address limit on login attempts that reach WeChat.
    pub fn login_rate_limit(&self) -> Option<LoginRateLimit> {
        self.login_rate_limit
    }

    /// Instance-wide limit on code exchanges that reach WeChat.
    pub fn exchange_budget(&self) -> Option<ExchangeBudget> {
        self.exchange_budget
    }

    /// Largest accepted token-login body, in bytes.
    pub fn max_login_body(&self) -> usize {
        self.max_login_body
    }

    /// The L1 cache's settings, when it is on.
    pub fn l1(&self) -> Option<L1Config> {
        self.l1
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            compat_ttl: Duration::from_secs(24 * 3600),
            token_idle_ttl: Duration::from_secs(7 * 24 * 3600),
            token_max_lifetime: Duration::from_secs(30 * 24 * 3600),
            ignore: vec!["/healthz".into(), "/readyz".into()],
            login_rate_limit: Some(LoginRateLimit { per_minute: nz(60), burst: nz(20) }),
            exchange_budget: Some(ExchangeBudget { per_second: nz(50), burst: nz(100) }),
            max_login_body: 16 * 1024,
            l1: None,
            body_timeout_error: |_| false,
        }
    }
}

/// The body of a token-dialect login.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenLoginRequest {
    /// The `wx.login()` code.
    pub code: String,
    /// The rawData text from `wx.getUserInfo()` (optional).
    #[serde(default)]
    pub raw_data: Option<String>,
    /// The signature from the same call (required with rawData).
    #[serde(default)]
    pub signature: Option<String>,
}

/// The answer to a token-dialect login.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenLoginResponse {
    /// The opaque token the client sends as `X-WX-Skey` from now on.
    pub token: String,
    /// Seconds until the token expires if unused.
    pub expires_in: u64,
    /// The user info.
    pub user: Arc<RawValue>,
}

// Credentials never print: a backend that logs these with `{:?}` leaks nothing.
impl std::fmt::Debug for TokenLoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenLoginRequest")
            .field("code", &"[redacted]")
            .field("raw_data", &self.raw_data)
            .field("signature", &self.signature.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl std::fmt::Debug for TokenLoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenLoginResponse")
            .field("token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .field("user", &self.user)
            .finish()
    }
}

/// Why a single-flight exchange failed: refused before WeChat, or by it.
#[derive(Clone, Debug)]
enum LoginError {
    Session(SessionError),
    Exchange(ExchangeError),
}

/// The outcome of one code's exchange, `None` while WeChat is answering.
type FlightResult = Option<Result<Arc<Exchanged>, ExchangeError>>;

/// One code's exchange: a spawned task owns the sender and publishes the
/// outcome; every caller of that code waits on a receiver. Dropping callers
/// never cancels the task.
type Flight = tokio::sync::watch::Receiver<FlightResult>;

impl SignedRawData {
    /// Constant-time check of the signature against `session_key`.
    fn verify(&self, session_key: &str) -> Result<(), SessionError> {
        if signature_matches(&self.text, session_key, &self.signature) {
            Ok(())
        } else {
            Err(SessionError::UntrustedRawData("wrong"))
        }
    }
}

impl From<LoginError> for SessionError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Session(e) => e,
            LoginError::Exchange(e) => SessionError::KeyExchangeFailed(e),
        }
    }
}

/// A rawData value whose signature still has to be checked.
pub(crate) struct SignedRawData {
    text: String,
    object: Map<String, Value>,
    signature: String,
}

/// The session engine behind [`super::WxSessionLayer`].
pub struct SessionEngine {
    store: Arc<dyn SessionStore>,
    exchanger: Arc<dyn CodeExchanger>,
    config: SessionConfig,
    /// code → its exchange: one per code (single-flight), run by a task of its
    /// own so the answer lands here even when every caller has gone; a retry
    /// of the same code never reaches WeChat again. Failed exchanges remove
    /// their entry when they finish.
    exchanges: moka::sync::Cache<String, Flight>,
    /// code → the token issued for it, so concurrent token logins with one
    /// code share one session.
    token_logins: moka::future::Cache<String, Arc<TokenLoginResponse>>,
    /// Codes that produced a session. A code is single use: a later attempt
    /// is served only from its live session, else answered like WeChat
    /// (40163), so a logged-out session cannot be brought back with a
    /// resent first request, nor a compat code turned into a token.
    spent: moka::sync::Cache<String, ()>,
    rate_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Instance-wide budget of exchanges that reach WeChat.
    exchange_budget: Option<DefaultDirectRateLimiter>,
    /// Recently served sessions (optional; see [`L1Config`]).
    l1: Option<L1>,
    logins_seen: AtomicU64,
}

impl std::fmt::Debug for SessionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEngine").field("config", &self.config).finish_non_exhaustive()
    }
}

fn store_error(e: StoreError) -> SessionError {
    crate::warn_limited!(error = %e, "session store failed");
    SessionError::StoreUnavailable
}

impl SessionEngine {
    /// An engine over `store`, exchanging codes with `exchanger`.
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        exchanger: Arc<dyn CodeExchanger>,
        config: SessionConfig,
    ) -> Self {
        let rate_limiter = config
            .login_rate_limit
            .map(|l| RateLimiter::keyed(Quota::per_minute(l.per_minute).allow_burst(l.burst)));
        let exchange_budget = config
            .exchange_budget
            .map(|b| RateLimiter::direct(Quota::per_second(b.per_second).allow_burst(b.burst)));
        let l1 = config.l1.map(L1::new);
        Self {
            store,
            exchanger,
            config,
            exchanges: moka::sync::Cache::builder()
                .max_capacity(MAX_CODES)
                .time_to_live(CODE_LIFETIME)
                .build(),
            token_logins: code_cache(),
            spent: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(CODE_LIFETIME)
                .build(),
            rate_limiter,
            exchange_budget,
            logins_seen: AtomicU64::new(0),
            l1,
        }
    }

    /// The engine's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The session store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// Whether the layer leaves `path` alone.
    pub fn is_ignored(&self, path: &str) -> bool {
        self.config.ignore.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == p,
        })
    }

    fn token_expiry(&self) -> Expiry {
        Expiry { idle: self.config.token_idle_ttl, max_lifetime: self.config.token_max_lifetime }
    }

    /// How long the openid index must live: as long as any session can.
    fn index_ttl(&self) -> Duration {
        self.config.compat_ttl.max(self.config.token_max_lifetime)
    }

    /// Recognise the user of a request from its headers.
    ///
    /// `Ok(None)`: no credentials, the request proceeds without identity.
    /// A token (`X-WX-Skey` / `Authorization: Bearer`) wins over `X-WX-Code`.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Option<WxSession>, SessionError> {
        if let Some(token) = bearer_token(headers) {
            return self.by_token(token).await.map(Some);
        }
        let Some(code) =
            header_text(headers, HEADER_CODE).map_err(|()| SessionError::SessionExpired)?
        else {
            return Ok(None);
        };
        if !plausible_id(code) {
            return Err(SessionError::SessionExpired);
        }
        let raw = header_text(headers, HEADER_RAW_DATA).map_err(|()| {
            SessionError::InvalidRawData(
                "X-WX-RawData must be encodeURIComponent(rawData), not raw bytes".into(),
            )
        })?;
        match raw {
            None => self.by_code(code).await.map(Some),
            Some(raw) => {
                let signature = header_str(headers, HEADER_SIGNATURE);
                let signed = parse_signed(decode_raw_header(raw)?, signature)?;
                self.compat_login(code, signed, client).await.map(Some)
            }
        }
    }

    async fn by_token(&self, token: &str) -> Result<WxSession, SessionError> {
        if !plausible_id(token) {
            return Err(SessionError::SessionExpired);
        }
        if let Some(hit) = self.l1.as_ref().and_then(|l1| l1.get(SessionKind::Token, token)) {
            return Ok(hit);
        }
        let id = SessionId::token(token);
        match self.store.load_and_touch(&id, self.token_expiry()).await.map_err(store_error)? {
            Some(record) => {
                Ok(self.remember(SessionKind::Token, token, WxSession::new(id, record)))
            }
            None => Err(SessionError::SessionExpired),
        }
    }

    async fn by_code(&self, code: &str) -> Result<WxSession, SessionError> {
        if let Some(hit) = self.l1.as_ref().and_then(|l1| l1.get(SessionKind::Code, code)) {
            return Ok(hit);
        }
        let id = SessionId::code(code);
        match self.store.load(&id).await.map_err(store_error)? {
            Some(record) => Ok(self.remember(SessionKind::Code, code, WxSession::new(id, record))),
            None => Err(SessionError::SessionExpired),
        }
    }

    /// A new session of `record`'s user was created here: the store revoked
    /// the previous one, so this instance's L1 must stop serving it now.
    fn replaced_in_l1(&self, record: &SessionRecord, kind: SessionKind, credential: &str) {
        if let Some(l1) = &self.l1 {
            l1.replaced(&record.openid, kind, credential, record.created_at);
        }
    }

    /// Keep a session loaded from the store in the L1 cache, if enabled.
    fn remember(&self, kind: SessionKind, credential: &str, session: WxSession) -> WxSession {
        if let Some(l1) = &self.l1 {
            l1.put(kind, credential, &session);
        }
        session
    }

    /// compat login: serve an existing session for this code when the
    /// signature verifies against its stored key, else exchange (once).
    async fn compat_login(
        &self,
        code: &str,
        signed: SignedRawData,
        client: Option<IpAddr>,
    ) -> Result<WxSession, SessionError> {
        let id = SessionId::code(code);
        if let Some(session) = self.existing_verified(&id, &signed).await? {
            return Ok(session);
        }
        if self.spent.contains_key(code) {
            // Its session is gone (logged out, revoked) or was a token: the
            // code is used up, as WeChat would say. Re-check once, in case the
            // session was written between the lookup above and the mark.
            return match self.existing_verified(&id, &signed).await? {
                Some(session) => Ok(session),
                None => Err(code_used()),
            };
        }
        let exchanged = match self.exchange(code, client).await {
            Ok(e) => e,
            Err(LoginError::Exchange(ExchangeError::WeChat {
                errcode: ERRCODE_CODE_USED,
                errmsg,
            })) => {
                // Another instance may have spent this code and stored the
                // session a moment ago: serve that one if it verifies.
                if let Some(session) = self.existing_verified(&id, &signed).await? {
                    return Ok(session);
                }
                let err = ExchangeError::WeChat { errcode: ERRCODE_CODE_USED, errmsg };
                return Err(SessionError::KeyExchangeFailed(err));
            }
            Err(e) => return Err(e.into()),
        };
        signed.verify(&exchanged.session_key)?;
        let record = new_record(&exchanged, Some(signed.object))?;
        self.store
            .create(&id, &record, self.config.compat_ttl, self.index_ttl())
            .await
            .map_err(store_error)?;
        self.replaced_in_l1(&record, SessionKind::Code, code);
        self.spent.insert(code.to_owned(), ());
        tracing::info!(user = %hash_tag(&record.openid), "compat login");
        Ok(WxSession::new(id, record))
    }

    async fn existing_verified(
        &self,
        id: &SessionId,
        signed: &SignedRawData,
    ) -> Result<Option<WxSession>, SessionError> {
        let Some(record) = self.store.load(id).await.map_err(store_error)? else {
            return Ok(None);
        };
        signed.verify(&record.session_key)?;
        Ok(Some(WxSession::new(id.clone(), record)))
    }

    /// Exchange `code` with WeChat at most once per instance: concurrent
    /// callers share one call, later callers get the remembered answer. The
    /// call runs in a task of its own, so a caller that goes away (the
    /// mini-program went to the background) neither loses the spent code's
    /// answer nor makes a waiter start a second exchange. Only the call that
    /// reaches WeChat counts against the rate limits.
    async fn exchange(
        &self,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<Arc<Exchanged>, LoginError> {
        let mut flight = self
            .exchanges
            .try_get_with_by_ref(code, || self.start_exchange(code, client))
            .map_err(|e| LoginError::Session((*e).clone()))?;
        let outcome = flight.wait_for(Option::is_some).await.map(|o| o.clone());
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // The task ended without an answer (it panicked): forget it so a
            // retry may exchange again.
            Err(_) => {
                forget_flight(&self.exchanges, code, &flight);
                None
            }
        };
        match outcome {
            Some(result) => result.map_err(LoginError::Exchange),
            None => Err(LoginError::Exchange(ExchangeError::Unreachable(
                "the exchange ended without an answer".into(),
            ))),
        }
    }

    /// Check the limits, then spawn the task that exchanges `code`.
    fn start_exchange(&self, code: &str, client: Option<IpAddr>) -> Result<Flight, SessionError> {
        self.check_rate(client)?;
        if let Some(budget) = &self.exchange_budget
            && budget.check().is_err()
        {
            return Err(SessionError::ExchangeBudgetSpent);
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        let exchanger = Arc::clone(&self.exchanger);
        let exchanges = self.exchanges.clone();
        let code = code.to_owned();
        let flight = rx.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(
                EXCHANGE_TASK_BOUND,
                exchanger.code2session(&code),
            )
            .await
            {
                Ok(Ok(exchanged)) => exchanged.checked().map(Arc::new),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ExchangeError::Timeout),
            };
            let failed = result.is_err();
            tx.send_replace(Some(result));
            if failed {
                // Not cached: a retry may exchange again (WeChat answers
                // 40163 if the code was spent after all).
                forget_flight(&exchanges, &code, &flight);
            }
        });
        Ok(rx)
    }

    fn check_rate(&self, client: Option<IpAddr>) -> Result<(), SessionError> {
        let Some(limiter) = &self.rate_limiter else {
            return Ok(());
        };
        let Some(ip) = client else {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "login_rate_limit is set but requests carry no client address; serve with \
                     into_make_service_with_connect_info::<SocketAddr>() to enable it"
                )
            });
            return Ok(());
        };
        if self.logins_seen.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            limiter.retain_recent();
        }
        limiter.check_key(&rate_key(ip)).map_err(|_| SessionError::TooManyRequests)
    }

    /// token login: exchange the code (once), verify the optional rawData,
    /// issue a token. Concurrent logins with one code get the same token.
    pub async fn token_login(
        &self,
        request: TokenLoginRequest,
        client: Option<IpAddr>,
    ) -> Result<Arc<TokenLoginResponse>, SessionError> {
        let code = request.code.trim();
        if !plausible_id(code) {
            return Err(SessionError::InvalidRequest("`code` must be a wx.login() code".into()));
        }
        let signed = match request.raw_data {
            Some(text) => Some(parse_signed(text, request.signature.as_deref())?),
            None => None,
        };
        if let Some(previous) = self.token_logins.get(code).await {
            return self.reuse_token_login(previous, signed.as_ref()).await;
        }
        if self.spent.contains_key(code) {
            // Used by a compat login (or a token login that just finished).
            return match self.token_logins.get(code).await {
                Some(previous) => self.reuse_token_login(previous, signed.as_ref()).await,
                None => Err(code_used()),
            };
        }
        let exchanged = self.exchange(code, client).await?;
        if let Some(s) = &signed {
            s.verify(&exchanged.session_key)?;
        }
        let object = signed.map(|s| s.object);
        let entry = self
            .token_logins
            .entry(code.to_owned())
            .or_try_insert_with(self.issue_token(&exchanged, object))
            .await
            .map_err(|e| (*e).clone())?;
        self.spent.insert(code.to_owned(), ());
        Ok(entry.into_value())
    }

    /// A repeated token login with a code already used: serve the same token
    /// if it is still live and the signature (when sent) verifies.
    async fn reuse_token_login(
        &self,
        previous: Arc<TokenLoginResponse>,
        signed: Option<&SignedRawData>,
    ) -> Result<Arc<TokenLoginResponse>, SessionError> {
        let id = SessionId::token(&previous.token);
        let Some(record) = self.store.load(&id).await.map_err(store_error)? else {
            return Err(code_used());
        };
        if let Some(s) = signed {
            s.verify(&record.session_key)?;
        }
        Ok(previous)
    }

    async fn issue_token(
        &self,
        exchanged: &Exchanged,
        object: Option<Map<String, Value>>,
    ) -> Result<Arc<TokenLoginResponse>, SessionError> {
        // `<user slot tag>.<256 random bits>`: the tag keeps the session in its
        // user's Redis Cluster slot, so the login below is one atomic script.
        let token = super::store::new_token(&exchanged.openid).map_err(store_error)?;
        let record = new_record(exchanged, object)?;
        let id = SessionId::token(&token);
        let ttl = self.config.token_idle_ttl.min(self.config.token_max_lifetime);
        self.store.create(&id, &record, ttl, self.index_ttl()).await.map_err(store_error)?;
        self.replaced_in_l1(&record, SessionKind::Token, &token);
        tracing::info!(user = %hash_tag(&record.openid), "token login");
        Ok(Arc::new(TokenLoginResponse { token, expires_in: ttl.as_secs(), user: record.user }))
    }

    /// Revoke the session the request carries (token or compat code).
    /// `Ok(false)` when the request carried no credentials.
    pub async fn logout(&self, headers: &HeaderMap) -> Result<bool, SessionError> {
        let (id, kind, credential) = if let Some(token) = bearer_token(headers) {
            (SessionId::token(token), SessionKind::Token, token)
        } else if let Some(code) = header_str(headers, HEADER_CODE) {
            (SessionId::code(code), SessionKind::Code, code)
        } else {
            return Ok(false);
        };
        if !plausible_id(credential) {
            // No session can have this id; never send it to the store.
            return Ok(true);
        }
        self.store.delete(&id).await.map_err(store_error)?;
        if let Some(l1) = &self.l1 {
            l1.evict(kind, credential);
        }
        Ok(true)
    }

    /// Record `unionid` on a live session that has none yet, for example one
    /// read from open data that decrypted under this session's key and names
    /// this user's openid. Never overwrites one: the record is read again from
    /// the store (not the L1) first. `Ok(false)` when the session is gone or
    /// already has a unionid.
    pub async fn save_unionid(
        &self,
        session: &WxSession,
        unionid: &str,
    ) -> Result<bool, SessionError> {
        let stored = self.store.load(session.id()).await.map_err(store_error)?;
        let Some(mut record) = stored else { return Ok(false) };
        if record.unionid.is_some() || record.openid != session.openid() {
            return Ok(false);
        }
        record.unionid = Some(unionid.to_owned());
        self.store.update(session.id(), &record).await.map_err(store_error)
    }

    /// Revoke `session` at once: delete it from the store and evict it from
    /// this instance's L1 cache. `headers` are the request's that `session`
    /// was authenticated from (the L1 is keyed by the credential they carry;
    /// it is evicted only when it names this session).
    pub async fn revoke(
        &self,
        session: &WxSession,
        headers: &HeaderMap,
    ) -> Result<(), SessionError> {
        self.store.delete(session.id()).await.map_err(store_error)?;
        if let Some(l1) = &self.l1 {
            if let Some(token) = bearer_token(headers)
                && SessionId::token(token) == *session.id()
            {
                l1.evict(SessionKind::Token, token);
            }
            if let Some(code) = header_str(headers, HEADER_CODE)
                && SessionId::code(code) == *session.id()
            {
                l1.evict(SessionKind::Code, code);
            }
        }
        Ok(())
    }
}

/// The answer for a code that was already used, as WeChat gives it.
fn code_used() -> SessionError {
    SessionError::KeyExchangeFailed(ExchangeError::WeChat {
        errcode: ERRCODE_CODE_USED,
        errmsg: "code been used".into(),
    })
}

/// A bounded cache whose entries live as long as a WeChat code.
fn code_cache<V: Clone + Send + Sync + 'static>() -> moka::future::Cache<String, V> {
    moka::future::Cache::builder().max_capacity(MAX_CODES).time_to_live(CODE_LIFETIME).build()
}

/// Remove `code`'s exchange entry if it is still `flight` (not a newer one).
fn forget_flight(exchanges: &moka::sync::Cache<String, Flight>, code: &str, flight: &Flight) {
    use moka::ops::compute::Op;
    exchanges.entry_by_ref(code).and_compute_with(|entry| match entry {
        Some(e) if e.value().same_channel(flight) => Op::Remove,
        _ => Op::Nop,
    });
}

/// The login rate limit's bucket of a client address: IPv4 as is (also when
/// it arrives IPv4-mapped), IPv6 by its /64, the smallest block a host is
/// normally given, so one host cannot rotate addresses for fresh buckets.
pub(crate) fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

fn decode_raw_header(raw: &str) -> Result<String, SessionError> {
    decode_uri_component(raw).map_err(|why| SessionError::InvalidRawData(why.into()))
}

/// Check the signature's shape and parse rawData into an object, before any
/// code is spent.
pub(crate) fn parse_signed(
    text: String,
    signature: Option<&str>,
) -> Result<SignedRawData, SessionError> {
    let signature = signature.map(str::trim).filter(|s| !s.is_empty());
    let Some(signature) = signature else {
        return Err(SessionError::UntrustedRawData("missing"));
    };
    if !signature_shape_ok(signature) {
        return Err(SessionError::UntrustedRawData("malformed (want 40 hex chars)"));
    }
    let object = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(SessionError::InvalidRawData("rawData must be a JSON object".into()));
        }
        Err(e) => {
            return Err(SessionError::InvalidRawData(format!("rawData is not JSON: {e}")));
        }
    };
    Ok(SignedRawData { text, object, signature: signature.to_owned() })
}

fn new_record(
    exchanged: &Exchanged,
    object: Option<Map<String, Value>>,
) -> Result<SessionRecord, SessionError> {
    let mut user = object.unwrap_or_default();
    user.insert("openId".into(), Value::String(exchanged.openid.clone()));
    let user = serde_json::value::to_raw_value(&user)
        .map_err(|e| SessionError::InvalidRawData(e.to_string()))?;
    Ok(SessionRecord {
        openid: exchanged.openid.clone(),
        session_key: exchanged.session_key.clone(),
        unionid: exchanged.unionid.clone(),
        user: Arc::from(user),
        created_at: unix_now(),
    })
}

/// A short non-reversible tag of an openid, for logs.
pub(crate) fn hash_tag(openid: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(openid.as_bytes())[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_mapped_ipv4_is_canonical() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(rate_key(ip("2001:db8:1:2:aaaa::1")), rate_key(ip("2001:db8:1:2:ffff:1:2:3")));
        assert_eq!(rate_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(rate_key(ip("2001:db8:1:2::1")), rate_key(ip("2001:db8:1:3::1")));
        assert_eq!(rate_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(rate_key(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_ne!(rate_key(ip("203.0.113.7")), rate_key(ip("203.0.113.8")));
    }

    /// Fails the first call, then answers; counts calls.
    struct Flaky {
        calls: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl CodeExchanger for Flaky {
        async fn code2session(&self, _code: &str) -> Result<Exchanged, ExchangeError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(ExchangeError::Unreachable("connection reset".into()));
            }
            Ok(Exchanged {
                openid: "o_flaky".into(),
                session_key: "HyVFkGl5F5OQWJZZaNzBBg==".into(),
                unionid: None,
            })
        }
    }

    #[tokio::test]
    async fn a_failed_exchange_is_forgotten_and_a_success_remembered() {
        let flaky = Arc::new(Flaky { calls: std::sync::atomic::AtomicUsize::new(0) });
        let store = Arc::new(super::super::MemoryStore::new(100));
        let sessions = SessionEngine::new(store, flaky.clone(), SessionConfig::default());
        assert!(sessions.exchange("code-1", None).await.is_err());
        // The failure is not cached: the retry reaches WeChat again.
        let got = sessions.exchange("code-1", None).await.map_err(SessionError::from).unwrap();
        assert_eq!(got.openid, "o_flaky");
        // The success is: no third call.
        sessions.exchange("code-1", None).await.map_err(SessionError::from).unwrap();
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_exchange_budget_refuses_before_wechat() {
        let flaky = Arc::new(Flaky { calls: std::sync::atomic::AtomicUsize::new(1) });
        let store = Arc::new(super::super::MemoryStore::new(100));
        let config = SessionConfig {
            exchange_budget: Some(ExchangeBudget { per_second: nz(1), burst: nz(2) }),
            ..SessionConfig::default()
        };
        let sessions = SessionEngine::new(store, flaky.clone(), config);
        for code in ["c-1", "c-2"] {
            sessions.exchange(code, None).await.map_err(SessionError::from).unwrap();
        }
        let refused = sessions.exchange("c-3", None).await.map_err(SessionError::from);
        assert!(matches!(refused, Err(SessionError::ExchangeBudgetSpent)), "{refused:?}");
        // A code already exchanged costs nothing.
        sessions.exchange("c-1", None).await.map_err(SessionError::from).unwrap();
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn login_bodies_print_without_credentials() {
        let req: TokenLoginRequest = serde_json::from_str(
            r#"{"code":"0a1b2c3d4e5f6071","rawData":"{}","signature":"ffeeddccbbaa"}"#,
        )
        .unwrap();
        let printed = format!("{req:?}");
        assert!(!printed.contains("0a1b2c3d4e5f6071") && !printed.contains("ffeedd"), "{printed}");
        let resp = TokenLoginResponse {
            token: "secret-token-value".into(),
            expires_in: 60,
            user: Arc::from(RawValue::from_string("{}".into()).unwrap()),
        };
        assert!(!format!("{resp:?}").contains("secret-token-value"));
    }
}
