//! The session engine: authenticate a request, log a user in (both
//! dialects), log out, revoke.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::error::SessionError;
use crate::exchange::{CodeExchanger, ExchangeError, Exchanged};
use crate::headers::{
    HEADER_CODE, HEADER_RAW_DATA, HEADER_SIGNATURE, bearer_token, header_str, header_text,
    plausible_id,
};
use crate::identity::WxSession;
use crate::l1::L1;
use crate::store::{
    Expiry, SessionId, SessionKind, SessionRecord, SessionStore, StoreError, unix_now,
};

use super::config::SessionConfig;
use super::single_flight::{
    CODE_LIFETIME, ERRCODE_CODE_USED, Flight, LoginError, MAX_CODES, code_cache, code_used,
};
use super::wire::{
    SignedRawData, TokenLoginRequest, TokenLoginResponse, decode_raw_header, parse_signed,
};

/// The session engine behind [`crate::WxSessionLayer`], reached through
/// [`WxSessionLayer::engine`](crate::WxSessionLayer::engine): what the layer
/// does on every request, and what a service calls itself (token login from
/// its own server, logout, revoking a session).
///
/// ```
/// use weapp_session::{MemoryStore, WxSessionLayer};
/// # use weapp_session::{CodeExchanger, ExchangeError, Exchanged};
/// # struct WeChat;
/// # #[async_trait::async_trait]
/// # impl CodeExchanger for WeChat {
/// #     async fn code2session(&self, _: &str) -> Result<Exchanged, ExchangeError> { Err(ExchangeError::Timeout) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = WxSessionLayer::builder(MemoryStore::new(100), WeChat).build();
/// let engine = layer.engine();
/// // A request without credentials has no identity (and is no error).
/// let user = engine.authenticate(&http::HeaderMap::new(), None).await.unwrap();
/// assert!(user.is_none());
/// # }
/// ```
pub struct SessionEngine {
    store: Arc<dyn SessionStore>,
    pub(super) exchanger: Arc<dyn CodeExchanger>,
    config: SessionConfig,
    /// code → its exchange: one per code (single-flight), run by a task of its
    /// own so the answer lands here even when every caller has gone; a retry
    /// of the same code never reaches WeChat again. Failed exchanges remove
    /// their entry when they finish.
    pub(super) exchanges: moka::sync::Cache<String, Flight>,
    /// code → the token issued for it, so concurrent token logins with one
    /// code share one session.
    token_logins: moka::future::Cache<String, Arc<TokenLoginResponse>>,
    /// Codes that produced a session. A code is single use: a later attempt
    /// is served only from its live session, else answered like WeChat
    /// (40163), so a logged-out session cannot be brought back with a
    /// resent first request, nor a compat code turned into a token.
    spent: moka::sync::Cache<String, ()>,
    pub(super) rate_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Instance-wide budget of exchanges that reach WeChat.
    pub(super) exchange_budget: Option<DefaultDirectRateLimiter>,
    /// Recently served sessions (optional; see [`L1Config`]).
    l1: Option<L1>,
    pub(super) logins_seen: AtomicU64,
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
        let token = crate::store::new_token(&exchanged.openid).map_err(store_error)?;
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
