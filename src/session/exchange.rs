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

/// Why a code exchange failed. Texts never contain the AppSecret or the URL.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ExchangeError {
    /// WeChat answered with a non-zero errcode (bad, used or expired code…).
    #[error("WeChat answered errcode {errcode}: {errmsg}")]
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
/// `wechat::WeChatClient`; tests may plug in their own.
#[async_trait]
pub trait CodeExchanger: Send + Sync + 'static {
    /// Call `jscode2session` for `code`.
    async fn code2session(&self, code: &str) -> Result<Exchanged, ExchangeError>;
}
