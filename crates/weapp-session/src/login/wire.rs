//! What travels: the token login's body and answer, and the signed rawData
//! of a first request or a token login, checked before any code is spent.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::SessionError;
use crate::headers::{decode_uri_component, signature_matches, signature_shape_ok};

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

/// A rawData value whose signature still has to be checked.
pub(crate) struct SignedRawData {
    text: String,
    pub(super) object: Map<String, Value>,
    signature: String,
}

impl SignedRawData {
    /// Constant-time check of the signature against `session_key`.
    pub(super) fn verify(&self, session_key: &str) -> Result<(), SessionError> {
        if signature_matches(&self.text, session_key, &self.signature) {
            Ok(())
        } else {
            Err(SessionError::UntrustedRawData("wrong"))
        }
    }
}

pub(super) fn decode_raw_header(raw: &str) -> Result<String, SessionError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
