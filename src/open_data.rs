//! Open data: the user's encrypted data decrypted with the server-held
//! session_key (PROTOCOL.md §3), and the phone number both ways.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{AppError, AppJson};
use crate::session::WxSession;
use crate::wechat::decrypt_open_data;

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

impl AppState {
    /// Decrypt `data` with the caller's session_key and check the watermark.
    pub fn decrypt(&self, session: &WxSession, data: &Encrypted) -> Result<Value, AppError> {
        Ok(decrypt_open_data(session.session_key(), &data.encrypted_data, &data.iv, &self.app_id)?)
    }
}

/// `POST {base}/open-data/decrypt`: `{"data": {...}}`. A `unionId` in the
/// data is saved onto the caller's session.
#[tracing::instrument(skip_all)]
pub async fn decrypt(
    State(state): State<AppState>,
    session: WxSession,
    AppJson(body): AppJson<Encrypted>,
) -> Result<Json<Value>, AppError> {
    let data = state.decrypt(&session, &body)?;
    if let Some(unionid) = data.get("unionId").and_then(Value::as_str)
        && session.unionid() != Some(unionid)
    {
        let mut record = session.record().clone();
        record.unionid = Some(unionid.to_owned());
        state.sessions.save(&session, record).await?;
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
    State(state): State<AppState>,
    session: WxSession,
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
        PhoneRequest::Encrypted(data) => state.decrypt(&session, &data)?,
    };
    Ok(Json(json!({ "phoneInfo": info })))
}
