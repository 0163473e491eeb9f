//! Typed configuration: a TOML file (`config/default.toml` unless told
//! otherwise), then environment variables `WEAPP__SECTION__KEY`.
//!
//! The sections' types live in one file per area (`server`, `wechat`,
//! `session`, `business`), the `WEAPP__…` provider in `env`, the checks a
//! loaded config must pass in `validate`, and the operator-facing wording of
//! figment's errors in `describe`; every public item is re-exported here.

mod business;
mod describe;
mod env;
mod server;
mod session;
mod validate;
mod wechat;

pub use business::{
    DataSection, DataStoreKind, MAX_DECRYPT_FAILURES_LIMIT, MIN_FAILURE_WINDOW, MessageSection,
    NoticesSection, OpenDataSection, PkSection,
};
pub use env::EnvText;
pub use server::{LogFormat, MAX_CONNECTIONS, MIN_HEADER_BYTES, ServerConfig, TlsConfig};
pub use session::{LoginRateLimitSection, RedisSection, SessionSection, StoreKind};
pub use validate::MIN_PRODUCTION_TOKEN_CHARS;
pub use wechat::WeChatSection;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

use self::describe::describe;
use crate::mongo::MongoConfig;
use crate::session::{L1Config, WxSessionLayerBuilder};

/// The config file used when none is given.
pub const DEFAULT_CONFIG_FILE: &str = "config/default.toml";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or parsed; the
    /// message names the key.
    #[error("{0}")]
    Invalid(String),
    /// The values parse but do not make a runnable gateway.
    #[error("config: {0}")]
    Rejected(String),
}

/// dev (embedded defaults allowed) or production (real stores and WeChat only).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Embedded defaults: memory store, fake WeChat.
    #[default]
    Dev,
    /// Refuses the memory store and the fake WeChat.
    Production,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// dev or production.
    #[serde(default)]
    pub mode: Mode,
    /// Listening and HTTP behaviour.
    #[serde(default)]
    pub server: ServerConfig,
    /// The WeChat app and API.
    pub wechat: WeChatSection,
    /// Session behaviour and store choice.
    #[serde(default)]
    pub session: SessionSection,
    /// Redis, when `session.store = "redis"`.
    #[serde(default)]
    pub redis: RedisSection,
    /// Which data store holds PK records and notices.
    #[serde(default)]
    pub data: DataSection,
    /// MongoDB, when `data.store = "mongodb"`.
    #[serde(default)]
    pub mongodb: MongoConfig,
    /// Group step PK.
    #[serde(default)]
    pub pk: PkSection,
    /// Notices.
    #[serde(default)]
    pub notices: NoticesSection,
    /// WeChat message push.
    #[serde(default)]
    pub message: MessageSection,
    /// Open-data decryption: the failure budget and freshness.
    #[serde(default)]
    pub open_data: OpenDataSection,
}

impl Config {
    /// Load `file` (or the default file), then `WEAPP__…` environment overrides.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let path =
            file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        if !path.exists() {
            return Err(ConfigError::Invalid(format!("config file {} not found", path.display())));
        }
        let figment = Figment::new().merge(Toml::file_exact(&path)).merge(EnvText::weapp());
        Self::from_figment(figment)
    }

    /// Extract and validate from any figment (tests build their own).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        // Lossy: text from the environment becomes a number or a boolean
        // where a key wants one (see [`EnvText`]).
        let config: Config = figment.extract_lossy().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(describe).collect();
            ConfigError::Invalid(messages.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The AppSecret, read from `app_secret` or `app_secret_file`.
    pub fn app_secret(&self) -> Result<SecretString, ConfigError> {
        if let Some(secret) = &self.wechat.app_secret {
            return Ok(secret.clone());
        }
        let Some(path) = &self.wechat.app_secret_file else {
            return Err(ConfigError::Rejected("wechat.app_secret is required".into()));
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Rejected(format!("wechat.app_secret_file {}: {e}", path.display()))
        })?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ConfigError::Rejected(format!(
                "wechat.app_secret_file {} is empty",
                path.display()
            )));
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    /// The session layer's settings from this config, applied to `builder`.
    /// Zeros were refused when the config was loaded; they fall back to one here.
    pub fn session_layer(&self, builder: WxSessionLayerBuilder) -> WxSessionLayerBuilder {
        let nz = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let mut builder = builder
            .with_compat_ttl(self.session.compat_ttl)
            .with_token_idle_ttl(self.session.token_idle_ttl)
            .with_token_max_lifetime(self.session.token_max_lifetime)
            .with_ignore(self.session.ignore.iter().cloned())
            .with_exchange_budget(
                nz(self.session.exchanges_per_second),
                nz(self.session.exchanges_burst),
            )
            // One body limit for every route, the token login included.
            .with_max_login_body(self.server.max_body)
            .with_body_timeout_error(crate::error::is_body_deadline);
        builder = match self.session.login_rate_limit {
            Some(l) => builder.with_login_rate_limit(nz(l.per_minute), nz(l.burst)),
            None => builder.without_login_rate_limit(),
        };
        if self.session.l1 {
            builder =
                builder.with_l1(L1Config::new(self.session.l1_ttl, self.session.l1_max_entries));
        }
        builder
    }
}

/// What the config tests share.
#[cfg(test)]
mod testing {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    /// The least a config needs: an app, its secret, the fake WeChat.
    pub(super) fn base() -> Figment {
        Figment::new().merge(Toml::string(
            "[wechat]\napp_id = \"wxapp\"\napp_secret = \"s3cret\"\nfake = true\n",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::base;
    use super::*;
    use figment::providers::Serialized;
    use secrecy::ExposeSecret;
    use std::time::Duration;

    struct NoWeChat;

    #[async_trait::async_trait]
    impl crate::session::CodeExchanger for NoWeChat {
        async fn code2session(
            &self,
            _: &str,
        ) -> Result<crate::session::Exchanged, crate::session::ExchangeError> {
            Err(crate::session::ExchangeError::Timeout)
        }
    }

    /// The session layer `c` configures, over a memory store.
    fn layer_of(c: &Config) -> crate::session::WxSessionLayer {
        let builder =
            crate::session::WxSessionLayer::builder(crate::session::MemoryStore::new(10), NoWeChat);
        c.session_layer(builder).build()
    }

    #[test]
    fn defaults_are_dev() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!(c.mode, Mode::Dev);
        assert_eq!(c.server.listen.port(), 5757);
        assert_eq!(c.session.store, StoreKind::Memory);
    }

    #[test]
    fn the_exchange_budget_defaults_to_50_per_second_and_is_configurable() {
        let budget = |c: &Config| {
            let b = layer_of(c).engine().config().exchange_budget().unwrap();
            (b.per_second.get(), b.burst.get())
        };
        assert_eq!(budget(&Config::from_figment(base()).unwrap()), (50, 100));
        let set = Toml::string("[session]\nexchanges_per_second = 5\nexchanges_burst = 7\n");
        assert_eq!(budget(&Config::from_figment(base().merge(set)).unwrap()), (5, 7));
    }

    #[test]
    fn l1_is_off_by_default_and_one_second_when_on() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!(layer_of(&c).engine().config().l1(), None);
        let on = base().merge(Serialized::default("session.l1", true));
        let on_config = Config::from_figment(on.clone()).unwrap();
        let l1 = layer_of(&on_config).engine().config().l1().unwrap();
        assert_eq!(l1.ttl, Duration::from_secs(1));
        assert_eq!(l1.max_entries, 100_000);
        let zero = on.merge(Serialized::default("session.l1_ttl", "0s"));
        let e = Config::from_figment(zero).unwrap_err().to_string();
        assert!(e.contains("session.l1_ttl must be greater than zero"), "{e}");
    }

    #[test]
    fn secret_never_debug_printed() {
        let c = Config::from_figment(base()).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn secret_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "filesecret\n").unwrap();
        let f = Figment::new()
            .merge(Toml::string("[wechat]\napp_id = \"wxapp\"\nfake = true\n"))
            .merge(Serialized::default(
                "wechat.app_secret_file",
                path.to_string_lossy().to_string(),
            ));
        let c = Config::from_figment(f).unwrap();
        assert_eq!(c.app_secret().unwrap().expose_secret(), "filesecret");
    }
}
