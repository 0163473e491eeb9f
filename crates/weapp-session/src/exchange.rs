//! The one thing the session layer needs from WeChat: `code2session`.
//!
//! Defined here (not in `wechat/`) so the layer depends on a trait, and a
//! backend team can plug in its own client.

use async_trait::async_trait;

/// What WeChat's `jscode2session` returns on success.
#[derive(Clone)]
pub struct Exchanged {
    /// The user's openid.
    pub openid: String,
    /// WeChat's session_key (base64 text). Never logged, never sent to clients.
    pub session_key: String,
    /// The unionid, when the app is bound to an open platform account.
    pub unionid: Option<String>,
}

impl std::fmt::Debug for Exchanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchanged")
            .field("openid", &self.openid)
            .field("session_key", &"[redacted]")
            .field("unionid", &self.unionid)
            .finish()
    }
}

/// Longest openid / unionid accepted from WeChat (real ones are 28 chars).
pub(crate) const MAX_ID_LEN: usize = 64;

/// Whether `id` looks like a WeChat openid or unionid: 1–[`MAX_ID_LEN`] chars
/// of `[A-Za-z0-9_-]`.
pub(crate) fn plausible_wechat_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `key` is a usable session_key: standard base64 of exactly 16 bytes
/// (the AES-128 key open data is encrypted with).
pub(crate) fn plausible_session_key(key: &str) -> bool {
    use base64::Engine as _;
    key.len() == 24
        && base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|k| k.len() == 16)
}

impl Exchanged {
    /// `self` if WeChat's answer has the shape WeChat documents (see
    /// `plausible_wechat_id`, `plausible_session_key`), else
    /// [`ExchangeError::BadResponse`]: nothing else may become a session.
    pub(crate) fn checked(self) -> Result<Self, ExchangeError> {
        if !plausible_wechat_id(&self.openid) {
            return Err(ExchangeError::BadResponse("the openid is malformed".into()));
        }
        if !plausible_session_key(&self.session_key) {
            return Err(ExchangeError::BadResponse(
                "the session_key is not the base64 of 16 bytes".into(),
            ));
        }
        if self.unionid.as_deref().is_some_and(|u| !plausible_wechat_id(u)) {
            return Err(ExchangeError::BadResponse("the unionid is malformed".into()));
        }
        Ok(self)
    }
}

/// Why a code exchange failed. Texts never contain the AppSecret or the URL.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// WeChat answered with a non-zero errcode (bad, used or expired code…).
    /// The errmsg is escaped when displayed, so it cannot forge a log line.
    #[error("WeChat answered errcode {errcode}: {}", errmsg.escape_debug())]
    WeChat {
        /// WeChat's errcode.
        errcode: i64,
        /// WeChat's errmsg.
        errmsg: String,
    },
    /// WeChat did not answer within the configured timeout.
    #[error("WeChat did not answer in time")]
    Timeout,
    /// WeChat could not be reached (connect error, TLS, HTTP 5xx…).
    #[error("WeChat could not be reached: {0}")]
    Unreachable(String),
    /// WeChat answered 200 with a body that is not a session.
    #[error("WeChat answered something unexpected: {0}")]
    BadResponse(String),
}

/// Exchanges a `wx.login()` code for a session. Implemented by
/// `weapp_wechat::WeChatClient`; a team may plug in its own (another WeChat
/// client, a stub in tests). The engine checks every answer's shape before
/// it becomes a session, and calls this at most once per code.
///
/// ```
/// use weapp_session::{CodeExchanger, ExchangeError, Exchanged};
///
/// /// Every code `code-<openid>` logs `<openid>` in.
/// struct Stub;
///
/// #[async_trait::async_trait]
/// impl CodeExchanger for Stub {
///     async fn code2session(&self, code: &str) -> Result<Exchanged, ExchangeError> {
///         match code.strip_prefix("code-") {
///             Some(openid) => Ok(Exchanged {
///                 openid: openid.to_owned(),
///                 session_key: "HyVFkGl5F5OQWJZZaNzBBg==".to_owned(),
///                 unionid: None,
///             }),
///             None => Err(ExchangeError::WeChat { errcode: 40029, errmsg: "invalid code".into() }),
///         }
///     }
/// }
///
/// let layer = weapp_session::WxSessionLayer::builder(weapp_session::MemoryStore::new(100), Stub)
///     .build();
/// # let _ = layer;
/// ```
#[async_trait]
pub trait CodeExchanger: Send + Sync + 'static {
    /// Call `jscode2session` for `code`.
    async fn code2session(&self, code: &str) -> Result<Exchanged, ExchangeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(openid: &str, session_key: &str, unionid: Option<&str>) -> Exchanged {
        Exchanged {
            openid: openid.into(),
            session_key: session_key.into(),
            unionid: unionid.map(Into::into),
        }
    }

    const KEY: &str = "HyVFkGl5F5OQWJZZaNzBBg==";

    #[test]
    fn only_answers_shaped_like_wechats_become_sessions() {
        assert!(answer("oGZUI0egBJY1zhBYw2KhdUfwVJJE", KEY, None).checked().is_ok());
        assert!(answer("o_a-1", KEY, Some("ocMvos6NjeKLIBqg5Mr9QjxrP1FA")).checked().is_ok());
        let long = "o".repeat(MAX_ID_LEN + 1);
        for bad_openid in ["", "o\nforged", "o\0", "o x", "o/../x", long.as_str()] {
            assert!(answer(bad_openid, KEY, None).checked().is_err(), "{bad_openid:?}");
        }
        for bad_key in
            ["not*base64!", "", "AAAA", "AAAAAAAAAAAAAAAAAAAAAAAA", "HyVFkGl5F5OQWJZZaNzBBg"]
        {
            assert!(answer("o_1", bad_key, None).checked().is_err(), "{bad_key:?}");
        }
        assert!(answer("o_1", KEY, Some("u\n1")).checked().is_err());
        assert!(answer("o_1", KEY, Some("")).checked().is_err());
    }
}
