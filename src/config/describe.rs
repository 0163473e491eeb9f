//! figment's errors as an operator reads them: the dotted key and what is
//! wrong with it, never the value.

/// One figment error as "key `a.b`: what is wrong", without the value (it
/// may be a secret).
pub(super) fn describe(e: figment::Error) -> String {
    use figment::error::Kind;
    let key = if e.path.is_empty() { "(top level)".to_owned() } else { e.path.join(".") };
    let what = match &e.kind {
        Kind::UnknownField(field, _) => {
            return format!("unknown config key `{}`", full_key(&e.path, field));
        }
        Kind::MissingField(field) => {
            return format!("missing config key `{}`", full_key(&e.path, field));
        }
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::InvalidValue(_, expected) => format!("invalid value, expected {expected}"),
        Kind::UnknownVariant(v, expected) => {
            format!("unknown value `{v}`, expected one of {}", expected.join(", "))
        }
        Kind::Message(m) => m.clone(),
        other => other.to_string(),
    };
    format!("config key `{key}`: {what}")
}

/// The dotted key of `field` under `path`. figment's path of an unknown or
/// missing field sometimes already ends with the field itself (e.g. for a
/// key from a nested table): it is named once, as the operator wrote it.
fn full_key(path: &[String], field: &str) -> String {
    match path.split_last() {
        Some((last, parent)) if last == field => {
            parent.iter().map(String::as_str).chain([field]).collect::<Vec<_>>().join(".")
        }
        Some(_) => format!("{}.{field}", path.join(".")),
        None => field.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::testing::base;
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};

    #[test]
    fn unknown_key_is_named() {
        let f = base().merge(Toml::string("[session]\nstroe = \"redis\"\n"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("session.stroe"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_named_once_as_written() {
        for (toml, key) in [
            ("[message]\nencoding_aes_key = \"k\"\n", "message.encoding_aes_key"),
            ("[session]\nstroe = \"redis\"\n", "session.stroe"),
            ("[server.tls]\ncert = \"c\"\nkey = \"k\"\nchain = \"x\"\n", "server.tls.chain"),
            ("mdoe = \"dev\"\n", "mdoe"),
        ] {
            let e = Config::from_figment(base().merge(Toml::string(toml))).unwrap_err().to_string();
            assert_eq!(e, format!("unknown config key `{key}`"), "{toml}");
        }
        let e = Config::from_figment(Figment::new().merge(Toml::string("[wechat]\nfake = true\n")))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "missing config key `wechat.app_id`");
    }

    #[test]
    fn bad_value_is_named() {
        let f = base().merge(Serialized::default("session.store", "mongo"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("session.store"), "{e}");
        let f = base().merge(Serialized::default("server.listen", "nope"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("server.listen"), "{e}");
    }
}
