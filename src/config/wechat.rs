//! `[wechat]`: the mini-program and the WeChat API.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// `[wechat]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeChatSection {
    /// The mini-program's AppID.
    pub app_id: String,
    /// The AppSecret (or use `app_secret_file`). Never printed.
    #[serde(default)]
    pub app_secret: Option<SecretString>,
    /// A file holding the AppSecret (e.g. a systemd credential).
    #[serde(default)]
    pub app_secret_file: Option<PathBuf>,
    /// Base URL of the WeChat API.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Serve the fake WeChat API under `/__wechat` and use it (dev only).
    #[serde(default)]
    pub fake: bool,
    /// With `fake`: texts containing any of these words are judged "risky"
    /// by the fake's msgSecCheck (also settable at `/__wechat/dev/risky-words`).
    #[serde(default)]
    pub fake_risky_words: Vec<String>,
    /// Connect timeout for WeChat calls.
    #[serde(default = "secs::<2>", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Total timeout for one WeChat call.
    #[serde(default = "secs::<5>", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_api_base() -> String {
    "https://api.weixin.qq.com".into()
}

fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}
