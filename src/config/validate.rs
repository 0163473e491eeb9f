//! The checks a loaded config must pass: values that parse but would not
//! make a runnable gateway, or would silently switch a protection off, are
//! refused by key name (never by value: it may be a secret).

use secrecy::{ExposeSecret, SecretString};

use super::{
    Config, ConfigError, DataStoreKind, MAX_CONNECTIONS, MAX_DECRYPT_FAILURES_LIMIT,
    MIN_FAILURE_WINDOW, MIN_HEADER_BYTES, Mode, RedisSection, ServerConfig, StoreKind,
};

/// Fewest characters of an admin or message-push token in production mode.
pub const MIN_PRODUCTION_TOKEN_CHARS: usize = 32;

/// Why `token` is too weak for production, if it is: shorter than
/// [`MIN_PRODUCTION_TOKEN_CHARS`], or fewer than 8 different characters.
fn weak_token(token: &SecretString) -> Option<&'static str> {
    let t = token.expose_secret();
    if t.chars().count() < MIN_PRODUCTION_TOKEN_CHARS {
        return Some("must have at least 32 characters");
    }
    let mut distinct: Vec<char> = t.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    (distinct.len() < 8).then_some("must be random (it repeats too few characters)")
}

impl Config {
    /// Refuse values that parse but do not make a runnable gateway.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let reject = |m: &str| Err(ConfigError::Rejected(m.to_owned()));
        if self.mode == Mode::Production {
            if self.session.store == StoreKind::Memory {
                return reject(
                    "mode = \"production\" refuses session.store = \"memory\": sessions would \
                     be lost on restart and not shared between instances; use \"redis\"",
                );
            }
            if self.data.store == DataStoreKind::Memory {
                return reject(
                    "mode = \"production\" refuses data.store = \"memory\": PK records and \
                     notices would be lost on restart; use \"mongodb\"",
                );
            }
            if self.wechat.fake {
                return reject(
                    "mode = \"production\" refuses wechat.fake = true: logins would be checked \
                     against the built-in fake WeChat, not the real one",
                );
            }
            for (key, token) in [
                ("notices.admin_token", &self.notices.admin_token),
                ("message.token", &self.message.token),
            ] {
                if let Some(why) = token.as_ref().and_then(weak_token) {
                    return Err(ConfigError::Rejected(format!(
                        "mode = \"production\": {key} {why}; generate one with \
                         `openssl rand -hex 16`"
                    )));
                }
            }
        }
        if self.wechat.fake && self.server.tls.is_some() {
            return reject(
                "wechat.fake = true cannot be combined with [server.tls]: the gateway would call \
                 its own HTTPS port without trusting its certificate; run `weapp-gateway \
                 fake-wechat` separately and point wechat.api_base at it",
            );
        }
        self.server.validate()?;
        if self.wechat.app_id.trim().is_empty() {
            return reject("wechat.app_id is empty");
        }
        if self.wechat.app_secret.is_some() && self.wechat.app_secret_file.is_some() {
            return reject("set wechat.app_secret or wechat.app_secret_file, not both");
        }
        if self.wechat.app_secret.is_none() && self.wechat.app_secret_file.is_none() {
            return reject("wechat.app_secret (or wechat.app_secret_file) is required");
        }
        if !self.server.base_path.starts_with('/') || self.server.base_path.ends_with('/') {
            return reject(
                "server.base_path must start with '/' and not end with '/' (e.g. \"/applet\")",
            );
        }
        if !self.wechat.fake && url::Url::parse(&self.wechat.api_base).is_err() {
            return reject("wechat.api_base is not a URL");
        }
        for (key, d) in [
            ("session.compat_ttl", self.session.compat_ttl),
            ("session.token_idle_ttl", self.session.token_idle_ttl),
            ("session.token_max_lifetime", self.session.token_max_lifetime),
            ("session.l1_ttl", self.session.l1_ttl),
            ("redis.timeout", self.redis.timeout),
            ("wechat.timeout", self.wechat.timeout),
            ("wechat.connect_timeout", self.wechat.connect_timeout),
            ("mongodb.op_timeout", self.mongodb.op_timeout),
            ("mongodb.connect_timeout", self.mongodb.connect_timeout),
            ("message.max_clock_skew", self.message.max_clock_skew),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Rejected(format!("{key} must be greater than zero")));
            }
        }
        // Zero would not mean "off" but "keep nothing" / "no logins": refuse it.
        for (key, n) in [
            ("session.memory_max_entries", self.session.memory_max_entries),
            ("session.l1_max_entries", self.session.l1_max_entries),
            (
                "session.login_rate_limit.per_minute",
                self.session.login_rate_limit.map_or(1, |l| u64::from(l.per_minute)),
            ),
            ("data.memory_max_notices", self.data.memory_max_notices),
            ("data.memory_max_pk_records", self.data.memory_max_pk_records),
            ("notices.posts_per_minute", u64::from(self.notices.posts_per_minute)),
            ("notices.posts_per_day", u64::from(self.notices.posts_per_day)),
            ("notices.edits_per_minute", u64::from(self.notices.edits_per_minute)),
            ("notices.edits_per_day", u64::from(self.notices.edits_per_day)),
            (
                "notices.admin_failures_per_minute",
                u64::from(self.notices.admin_failures_per_minute),
            ),
            ("session.exchanges_per_second", u64::from(self.session.exchanges_per_second)),
            ("session.exchanges_burst", u64::from(self.session.exchanges_burst)),
        ] {
            if n == 0 {
                return Err(ConfigError::Rejected(format!(
                    "{key} must be greater than zero (remove the setting to use the default)"
                )));
            }
        }
        if self.open_data.max_decrypt_failures == 0
            || self.open_data.max_decrypt_failures > MAX_DECRYPT_FAILURES_LIMIT
        {
            return Err(ConfigError::Rejected(format!(
                "open_data.max_decrypt_failures must be between 1 and \
                 {MAX_DECRYPT_FAILURES_LIMIT} (the budget cannot be turned off)"
            )));
        }
        if self.open_data.failure_window < MIN_FAILURE_WINDOW {
            // A short window renews the budget: 1000 failures a second
            // would make a padding oracle practical again.
            return reject("open_data.failure_window must be at least 1h");
        }
        if self.open_data.max_age.is_some_and(|d| d.is_zero()) {
            return reject(
                "open_data.max_age must be greater than zero (remove it to accept any age)",
            );
        }
        self.pk.tz()?;
        for (i, host) in self.notices.photo_hosts.iter().enumerate() {
            if !crate::text::is_dns_name(host.strip_prefix('.').unwrap_or(host)) {
                return Err(ConfigError::Rejected(format!(
                    "notices.photo_hosts[{i}] must be a lower-case DNS name (`img.example.com`) \
                     or a suffix starting with a dot (`.example.com`)"
                )));
            }
        }
        if self.pk.retention_days == 0 || self.pk.ranking_limit == 0 {
            return reject("pk.retention_days and pk.ranking_limit must be greater than zero");
        }
        // MongoDB keeps expireAfterSeconds in a 32-bit integer.
        if u64::from(self.pk.retention_days) * 86_400 > u64::from(i32::MAX as u32) {
            return reject("pk.retention_days must be at most 24855 (MongoDB's TTL limit)");
        }
        if self.data.store == DataStoreKind::Mongodb && self.mongodb.database.trim().is_empty() {
            return reject("mongodb.database is empty");
        }
        if self.session.store == StoreKind::Redis {
            self.redis.validate()?;
        }
        Ok(())
    }
}

impl ServerConfig {
    /// Refuse values that would silently switch a protection off.
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, d) in [
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.idle_timeout", self.idle_timeout),
            ("server.h2_keepalive_interval", self.h2_keepalive_interval),
            ("server.h2_keepalive_timeout", self.h2_keepalive_timeout),
            ("server.body_timeout", self.body_timeout),
            ("server.request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Rejected(format!("{key} must be greater than zero")));
            }
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::Rejected(format!(
                "server.max_header_bytes must be at least {MIN_HEADER_BYTES}"
            )));
        }
        if self.max_body == 0 {
            return Err(ConfigError::Rejected("server.max_body must be greater than zero".into()));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return Err(ConfigError::Rejected(format!(
                "server.max_connections must be 1–{MAX_CONNECTIONS}"
            )));
        }
        Ok(())
    }
}

impl RedisSection {
    /// The URL(s) are usable; messages name the key, never the value.
    fn validate(&self) -> Result<(), ConfigError> {
        let reject = |m: String| Err(ConfigError::Rejected(m));
        if !self.is_cluster() {
            if url::Url::parse(self.url.expose_secret()).is_err() {
                return reject("redis.url is not a redis:// URL".into());
            }
            return Ok(());
        }
        for (i, node) in self.cluster_nodes.iter().enumerate() {
            let key = format!("redis.cluster_nodes[{i}]");
            let Ok(url) = url::Url::parse(node.expose_secret()) else {
                return reject(format!("{key} is not a redis:// URL"));
            };
            if url.scheme() != "redis" || url.host_str().is_none() {
                return reject(format!("{key} must be redis://[:password@]host:port"));
            }
            if !matches!(url.path(), "" | "/" | "/0") {
                return reject(format!("{key}: a Redis Cluster only has database 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::base;
    use super::super::{Config, OpenDataSection};
    use figment::providers::{Format, Serialized, Toml};
    use figment::value::Value;
    use secrecy::ExposeSecret;
    use std::time::Duration;

    #[test]
    fn server_limits_have_defaults_and_refuse_values_that_switch_them_off() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.request_timeout, Duration::from_secs(25));
        assert!(c.server.request_timeout > c.wechat.timeout);
        assert_eq!(c.server.max_body, 32 * 1024);
        assert_eq!(c.server.max_connections, 10_000);
        for (key, value) in [
            ("server.header_read_timeout", Value::from("0s")),
            ("server.idle_timeout", Value::from("0s")),
            ("server.h2_keepalive_interval", Value::from("0s")),
            ("server.h2_keepalive_timeout", Value::from("0s")),
            ("server.body_timeout", Value::from("0s")),
            ("server.request_timeout", Value::from("0s")),
            ("server.max_body", Value::from(0)),
            ("server.max_connections", Value::from(0)),
            ("server.max_header_bytes", Value::from(4096)),
        ] {
            let e = Config::from_figment(base().merge(Serialized::default(key, value)))
                .expect_err(key)
                .to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn open_data_budget_defaults_and_refusals() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!(c.open_data, OpenDataSection::default());
        assert_eq!(c.open_data.max_decrypt_failures, 5);
        assert_eq!(c.open_data.failure_window, Duration::from_secs(3600));
        assert_eq!(c.open_data.max_age, None);
        assert_eq!(c.open_data.clock_skew, Duration::from_secs(300));
        let with = |k: &str, v: &str| {
            let text = format!("[open_data]\n{k} = {v}\n");
            Config::from_figment(base().merge(Toml::string(&text)))
        };
        let on = with("max_age", "\"10m\"").unwrap();
        assert_eq!(on.open_data.max_age, Some(Duration::from_secs(600)));
        for (k, v) in [
            ("max_decrypt_failures", "0"),
            ("max_decrypt_failures", "1001"),
            ("failure_window", "\"0s\""),
            ("failure_window", "\"59m\""),
            ("max_age", "\"0s\""),
        ] {
            let err = with(k, v).unwrap_err().to_string();
            assert!(err.contains(&format!("open_data.{k}")), "{k} = {v}: {err}");
        }
        assert!(with("max_decrypt_failures", "1000").is_ok());
        assert!(with("failure_window", "\"1h\"").is_ok());
    }

    #[test]
    fn zero_sizes_and_timeouts_are_refused_by_name() {
        for (key, toml) in [
            ("session.memory_max_entries", "[session]\nmemory_max_entries = 0\n"),
            ("session.l1_max_entries", "[session]\nl1_max_entries = 0\n"),
            ("session.exchanges_per_second", "[session]\nexchanges_per_second = 0\n"),
            ("session.exchanges_burst", "[session]\nexchanges_burst = 0\n"),
            ("mongodb.op_timeout", "[mongodb]\nop_timeout = \"0s\"\n"),
            ("mongodb.connect_timeout", "[mongodb]\nconnect_timeout = \"0s\"\n"),
        ] {
            let e = Config::from_figment(base().merge(Toml::string(toml))).unwrap_err().to_string();
            assert!(e.contains(&format!("{key} must be greater than zero")), "{e}");
        }
        let long = Toml::string("[pk]\nretention_days = 30000\n");
        let e = Config::from_figment(base().merge(long)).unwrap_err().to_string();
        assert!(e.contains("pk.retention_days must be at most 24855"), "{e}");
        let limit = Toml::string("[session.login_rate_limit]\nper_minute = 0\nburst = 5\n");
        let e = Config::from_figment(base().merge(limit)).unwrap_err().to_string();
        assert!(e.contains("session.login_rate_limit.per_minute must be greater than zero"), "{e}");
    }

    #[test]
    fn production_tokens_need_32_random_characters_named_never_shown() {
        let production = || {
            base()
                .merge(Serialized::default("mode", "production"))
                .merge(Serialized::default("session.store", "redis"))
                .merge(Serialized::default("data.store", "mongodb"))
                .merge(Serialized::default("wechat.fake", false))
        };
        let strong = "7f3a9c1e5b2d8406f1e2d3c4b5a69788";
        assert!(Config::from_figment(production()).is_ok());
        let both = production()
            .merge(Serialized::default("notices.admin_token", strong))
            .merge(Serialized::default("message.token", strong));
        assert!(Config::from_figment(both).is_ok());
        for key in ["notices.admin_token", "message.token"] {
            for weak in ["", "hunter2", "7f3a9c1e5b2d8406f1e2d3c4b5a6978", &"ab".repeat(20)] {
                let f = production().merge(Serialized::default(key, weak));
                let e = Config::from_figment(f).unwrap_err().to_string();
                assert!(e.contains(key), "{e}");
                assert!(weak.is_empty() || !e.contains(weak), "{e}");
            }
            // Dev mode keeps accepting short tokens (tests, local runs).
            assert!(Config::from_figment(base().merge(Serialized::default(key, "adm"))).is_ok());
        }
    }

    #[test]
    fn business_limits_have_defaults_and_refuse_zero_and_bad_hosts() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!((c.notices.posts_per_minute, c.notices.posts_per_day), (5, 50), "post limits");
        assert_eq!((c.notices.edits_per_minute, c.notices.edits_per_day), (5, 50));
        assert_eq!(c.notices.admin_failures_per_minute, 5);
        assert!(c.notices.photo_hosts.is_empty());
        assert_eq!((c.data.memory_max_notices, c.data.memory_max_pk_records), (10_000, 100_000));
        assert_eq!(c.message.max_clock_skew, Duration::from_secs(300));
        for (key, value) in [
            ("notices.posts_per_minute", Value::from(0)),
            ("notices.posts_per_day", Value::from(0)),
            ("notices.edits_per_minute", Value::from(0)),
            ("notices.edits_per_day", Value::from(0)),
            ("notices.admin_failures_per_minute", Value::from(0)),
            ("data.memory_max_notices", Value::from(0)),
            ("data.memory_max_pk_records", Value::from(0)),
            ("message.max_clock_skew", Value::from("0s")),
        ] {
            let e = Config::from_figment(base().merge(Serialized::default(key, value)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{key} must be greater than zero")), "{e}");
        }
        let hosts = ["img.example.com", ".cdn.example.net"];
        let c =
            Config::from_figment(base().merge(Serialized::default("notices.photo_hosts", hosts)))
                .unwrap();
        assert_eq!(c.notices.photo_hosts, hosts);
        for bad in
            ["", ".", "*.example.com", "Img.Example.com", "127.0.0.1", "https://a.com", "localhost"]
        {
            let f = base().merge(Serialized::default("notices.photo_hosts", [hosts[0], bad]));
            let e = Config::from_figment(f).unwrap_err().to_string();
            assert!(e.contains("notices.photo_hosts[1]"), "{bad}: {e}");
        }
    }

    #[test]
    fn production_refuses_memory_and_fake() {
        let f = base().merge(Serialized::default("mode", "production"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("memory"), "{e}");
        let f = base()
            .merge(Serialized::default("mode", "production"))
            .merge(Serialized::default("session.store", "redis"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("data.store"), "{e}");
        let f = base()
            .merge(Serialized::default("mode", "production"))
            .merge(Serialized::default("session.store", "redis"))
            .merge(Serialized::default("data.store", "mongodb"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("fake"), "{e}");
    }

    #[test]
    fn redis_cluster_nodes_are_validated_and_never_printed() {
        let redis = || base().merge(Serialized::default("session.store", "redis"));
        let c = Config::from_figment(redis()).unwrap();
        assert!(!c.redis.is_cluster());

        let nodes = ["redis://:hunter2@10.0.0.1:7000", "redis://:hunter2@10.0.0.2:7000"];
        let c =
            Config::from_figment(redis().merge(Serialized::default("redis.cluster_nodes", nodes)))
                .unwrap();
        assert!(c.redis.is_cluster());
        assert_eq!(c.redis.cluster_nodes[1].expose_secret(), nodes[1]);
        assert!(!format!("{c:?}").contains("hunter2"));

        for bad in [
            "not a url hunter2",
            "http://:hunter2@10.0.0.1:7000",
            "rediss://:hunter2@10.0.0.1:7000",
            "redis+unix:///tmp/hunter2.sock",
            "redis://:hunter2@10.0.0.1:7000/3",
        ] {
            let f = redis().merge(Serialized::default("redis.cluster_nodes", [nodes[0], bad]));
            let e = Config::from_figment(f).unwrap_err().to_string();
            assert!(e.contains("redis.cluster_nodes[1]"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
