//! Open data: the user's encrypted data decrypted with the server-held
//! session_key (docs/protocol.md §5), and the phone number both ways.
//!
//! # No padding oracle
//!
//! Every failure that depends on the key (bad padding, not a JSON object,
//! another app's watermark, stale data) answers alike, and each one counts
//! against a budget (`open_data.max_decrypt_failures` per
//! `open_data.failure_window`, counted in the session store so every
//! instance shares it, per user and session_key:
//! [`SessionId::failure_budget`]). The failure past the budget revokes the
//! session and answers `ERR_SESSION_EXPIRED`: the client logs in again and
//! gets a new session_key (should WeChat hand out the same key again, the
//! used-up budget stays with it), and no key ever meets the thousands of
//! probes a CBC padding oracle attack needs. A budget that cannot be checked (store down) answers
//! 503, never the failure itself.
//!
//! [`SessionId::failure_budget`]: crate::session::store::SessionId::failure_budget

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::config::OpenDataSection;
use crate::error::{AppError, AppJson};
use crate::session::store::SessionId;
use crate::session::{SessionEngine, SessionError, WxSession};
use crate::wechat::{AccessTokens, Freshness, decrypt_open_data_fresh};

/// What the open-data routes need, and what [`OpenDataState::decrypt`] needs
/// wherever a route decrypts (the PK check-in too).
pub struct OpenData {
    /// The session engine: counts decryption failures in its store, revokes
    /// a session past the budget, saves a unionId.
    pub sessions: Arc<SessionEngine>,
    /// The shared access token and the WeChat calls that need it (the phone
    /// number by code).
    pub tokens: AccessTokens,
    /// The mini-program's AppID (the open-data watermark must match it).
    pub app_id: String,
    /// Open-data rules: the decryption-failure budget and freshness.
    pub rules: OpenDataSection,
    /// "Now" (the freshness check).
    pub clock: Clock,
}

/// The open-data routes' state: one allocation, so the clone axum makes per
/// request is a reference-count bump.
#[derive(Clone)]
pub struct OpenDataState(Arc<OpenData>);

impl From<OpenData> for OpenDataState {
    fn from(open_data: OpenData) -> Self {
        Self(Arc::new(open_data))
    }
}

impl std::ops::Deref for OpenDataState {
    type Target = OpenData;

    fn deref(&self) -> &OpenData {
        &self.0
    }
}

impl std::fmt::Debug for OpenDataState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenDataState").field("app_id", &self.app_id).finish_non_exhaustive()
    }
}

/// `POST {base}/open-data/decrypt` and `POST {base}/open-data/phone`, for
/// the caller to put behind the session layer.
pub fn router(state: OpenDataState, base_path: &str) -> Router {
    Router::new()
        .route(&format!("{base_path}/open-data/decrypt"), post(decrypt))
        .route(&format!("{base_path}/open-data/phone"), post(phone))
        .with_state(state)
}

/// `{encryptedData, iv}` as the mini-program API hands them out.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Encrypted {
    /// Base64 ciphertext.
    pub encrypted_data: String,
    /// Base64 IV.
    pub iv: String,
}

/// The caller's `(nickName, avatarUrl)` from the session's user info, as
/// PK records and notices store them (empty strings when the user never
/// shared a profile): the nickname without control, bidi or invisible
/// characters and at most 64 characters ([`crate::text::profile_line`]), the
/// avatar as a normalised http(s) URL or empty ([`crate::text::avatar_url`]).
pub fn profile(session: &WxSession) -> (String, String) {
    let user: Value = serde_json::from_str(session.user_info().get()).unwrap_or(Value::Null);
    let field = |k: &str| user.get(k).and_then(Value::as_str).unwrap_or_default();
    (crate::text::profile_line(field("nickName")), crate::text::avatar_url(field("avatarUrl")))
}

impl OpenDataState {
    /// Decrypt `data` with the caller's session_key and check the watermark
    /// (and its age, when `open_data.max_age` is set).
    ///
    /// A key-dependent failure is logged at debug level (its kind only) and
    /// counted; past the budget the session is revoked (`headers` are the
    /// request's, for the L1 eviction) and the answer is
    /// `ERR_SESSION_EXPIRED`.
    pub async fn decrypt(
        &self,
        session: &WxSession,
        headers: &HeaderMap,
        data: &Encrypted,
    ) -> Result<Value, AppError> {
        let rules = &self.rules;
        let freshness = rules
            .max_age
            .map(|max_age| Freshness::new(self.clock.now().timestamp(), max_age, rules.clock_skew));
        let err = match decrypt_open_data_fresh(
            session.session_key(),
            &data.encrypted_data,
            &data.iv,
            &self.app_id,
            freshness.as_ref(),
        ) {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        tracing::debug!(kind = err.kind(), user = %session.log_tag(), "open data refused");
        if !err.is_key_dependent() {
            return Err(AppError::Decrypt(err));
        }
        let budget = SessionId::failure_budget(session.openid(), session.session_key());
        let failures =
            self.sessions.store().count_failure(&budget, rules.failure_window).await.map_err(
                |e| {
                    tracing::debug!(error = %e, "could not count a decryption failure");
                    SessionError::StoreUnavailable
                },
            )?;
        if failures > rules.max_decrypt_failures {
            self.sessions.revoke(session, headers).await?;
            tracing::info!(
                user = %session.log_tag(),
                failures,
                "session revoked: too many open-data decryption failures"
            );
            return Err(SessionError::SessionExpired.into());
        }
        Err(AppError::Decrypt(err))
    }
}

/// Longest unionId saved onto a session (WeChat's are 28 characters).
const MAX_UNIONID_LEN: usize = 64;

/// The unionId to save onto `session` from decrypted `data`, if any: only
/// when the session has none yet (jscode2session's is never overwritten) and
/// the data is about this very user (its `openId` is the session's).
fn union_id_to_save<'a>(session: &WxSession, data: &'a Value) -> Option<&'a str> {
    let unionid = data.get("unionId").and_then(Value::as_str)?;
    let plausible = !unionid.is_empty()
        && unionid.len() <= MAX_UNIONID_LEN
        && unionid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let own = data.get("openId").and_then(Value::as_str) == Some(session.openid());
    (plausible && own && session.unionid().is_none()).then_some(unionid)
}

/// `POST {base}/open-data/decrypt`: `{"data": {...}}`. A `unionId` in the
/// data is saved onto the caller's session when the session has none yet and
/// the data's `openId` is the caller's.
#[tracing::instrument(skip_all)]
pub async fn decrypt(
    State(state): State<OpenDataState>,
    session: WxSession,
    headers: HeaderMap,
    AppJson(body): AppJson<Encrypted>,
) -> Result<Json<Value>, AppError> {
    let data = state.decrypt(&session, &headers, &body).await?;
    if let Some(unionid) = union_id_to_save(&session, &data) {
        // Re-checked against the stored record, so a stale copy (the L1's,
        // or a concurrent request's) can never overwrite a saved unionid.
        state.sessions.save_unionid(&session, unionid).await?;
    }
    Ok(Json(json!({ "data": data })))
}

/// Body of `POST {base}/open-data/phone`: the new `code` or the old encrypted pair.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PhoneRequest {
    /// `{"code"}` from the getPhoneNumber button (new API).
    Code {
        /// The button's code.
        code: String,
    },
    /// `{"encryptedData", "iv"}` from the getPhoneNumber button (old API).
    Encrypted(Encrypted),
}

/// `POST {base}/open-data/phone`: `{"phoneInfo": {phoneNumber, purePhoneNumber, countryCode, ...}}`.
#[tracing::instrument(skip_all)]
pub async fn phone(
    State(state): State<OpenDataState>,
    session: WxSession,
    headers: HeaderMap,
    body: Result<AppJson<PhoneRequest>, AppError>,
) -> Result<Json<Value>, AppError> {
    let AppJson(body) = body.map_err(|e| match e {
        AppError::InvalidRequest(_) => AppError::InvalidRequest(
            "send {\"code\"} (getPhoneNumber's code) or {\"encryptedData\", \"iv\"}".into(),
        ),
        other => other,
    })?;
    let info = match body {
        PhoneRequest::Code { code } => {
            if code.trim().is_empty() || code.len() > 512 {
                return Err(AppError::InvalidRequest(
                    "`code` must be a getPhoneNumber code".into(),
                ));
            }
            AppError::wechat_call(state.tokens.try_phone_number(code.trim()).await)?
        }
        PhoneRequest::Encrypted(data) => state.decrypt(&session, &headers, &data).await?,
    };
    Ok(Json(json!({ "phoneInfo": info })))
}
