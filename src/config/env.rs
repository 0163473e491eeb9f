//! The `WEAPP__…` environment provider.

use figment::providers::Env;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

/// The `WEAPP__…` environment variables (`__` between levels), with every
/// number- or boolean-looking value kept as text.
///
/// figment's `Env` turns `WEAPP__WECHAT__APP_SECRET=0123456789` into a
/// number that a string key then refuses; kept as text, it loads, and
/// [`Config::from_figment`](super::Config::from_figment)'s lossy extraction still reads
/// `WEAPP__SESSION__MEMORY_MAX_ENTRIES=5000` as a number where a key wants one.
/// Arrays and tables (`WEAPP__SERVER__TRUSTED_PROXIES='["127.0.0.1"]'`) are
/// parsed as `Env` parses them.
pub struct EnvText(Env);

impl EnvText {
    /// The gateway's variables: prefix `WEAPP__`, levels split on `__`.
    pub fn weapp() -> Self {
        Self(Env::prefixed("WEAPP__").split("__"))
    }
}

impl Provider for EnvText {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut figment = Figment::new();
        for (key, text) in self.0.iter() {
            let value = match text.parse::<Value>() {
                Ok(Value::Num(..) | Value::Bool(..)) | Err(_) => Value::from(text),
                Ok(parsed) => parsed,
            };
            figment = figment.merge(figment::providers::Serialized::default(key.as_str(), value));
        }
        let dict = figment.data()?.remove(&Profile::Default).unwrap_or_default();
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::testing::base;
    use super::EnvText;
    use secrecy::ExposeSecret;
    use std::net::IpAddr;
    use std::path::Path;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's own large error
    fn numeric_looking_secrets_from_the_environment_stay_strings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WEAPP__NOTICES__ADMIN_TOKEN", "12345678901234567890");
            jail.set_env("WEAPP__WECHAT__APP_SECRET", "0123456789");
            jail.set_env("WEAPP__WECHAT__APP_ID", "12345");
            // Numbers and booleans still load where a key wants one.
            jail.set_env("WEAPP__SESSION__MEMORY_MAX_ENTRIES", "5000");
            jail.set_env("WEAPP__SESSION__L1", "true");
            jail.set_env("WEAPP__SERVER__TRUSTED_PROXIES", "[\"10.0.0.1\"]");
            let f = base().merge(EnvText::weapp());
            let c = Config::from_figment(f).map_err(|e| e.to_string())?;
            assert_eq!(c.wechat.app_id, "12345");
            assert_eq!(c.session.memory_max_entries, 5000);
            assert!(c.session.l1);
            assert_eq!(c.server.trusted_proxies, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
            let admin = c.notices.admin_token.as_ref().map(|t| t.expose_secret().to_owned());
            assert_eq!(admin.as_deref(), Some("12345678901234567890"));
            assert_eq!(c.app_secret().map_err(|e| e.to_string())?.expose_secret(), "0123456789");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn redis_cluster_nodes_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[wechat]\napp_id = \"wxapp\"\napp_secret = \"x\"\nfake = true\n\
                 [session]\nstore = \"redis\"\n",
            )?;
            jail.set_env(
                "WEAPP__REDIS__CLUSTER_NODES",
                r#"["redis://:pw@10.0.0.1:7000","redis://:pw@10.0.0.2:7000"]"#,
            );
            let c = Config::load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.redis.cluster_nodes.len(), 2);
            assert_eq!(c.redis.cluster_nodes[0].expose_secret(), "redis://:pw@10.0.0.1:7000");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn env_overrides_with_double_underscore() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[wechat]\napp_id = \"wxapp\"\napp_secret = \"x\"\nfake = true\n",
            )?;
            jail.set_env("WEAPP__SERVER__LISTEN", "127.0.0.1:9999");
            jail.set_env("WEAPP__WECHAT__APP_ID", "wxenv");
            let c = Config::load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.server.listen.port(), 9999);
            assert_eq!(c.wechat.app_id, "wxenv");
            Ok(())
        });
    }
}
