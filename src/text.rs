//! What the gateway stores of users' text and links, made safe first.
//!
//! - **Notice content**: `\r\n` becomes `\n`; any other control character
//!   (C0 such as `\t`, NUL, ESC, lone `\r`; DEL; C1) and every bidi control
//!   are refused; BOM, zero-width space and word joiner are stripped.
//!   Zero-width (non-)joiners U+200C/U+200D are kept: emoji sequences and
//!   Persian/Indic scripts need them.
//! - **Profile text** copied into PK records and notices (`nickName`): control,
//!   bidi and the stripped invisible characters are removed, the rest trimmed
//!   and capped at [`MAX_NICK_CHARS`] characters (it comes from the user's
//!   signed rawData; refusing it would lock the user out of PK and notices).
//! - **Photo and avatar URLs**: see [`photo_url`]; only the normalised
//!   serialisation of the `url` crate is stored.

use url::{Host, Url};

/// Longest photo or avatar URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest nickname stored, in characters.
pub const MAX_NICK_CHARS: usize = 64;

/// Bidi embedding, override, isolate and mark characters.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Invisible characters stripped from stored text: BOM, zero-width space,
/// word joiner.
fn is_stripped_invisible(c: char) -> bool {
    matches!(c, '\u{FEFF}' | '\u{200B}' | '\u{2060}')
}

/// Characters never accepted in a URL: whitespace, controls, bidi controls,
/// BOM and zero-width characters, backslashes and HTML-breaking punctuation.
fn is_bad_url_char(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || is_bidi_control(c)
        || matches!(c, '\u{FEFF}' | '\u{200B}'..='\u{200D}' | '\u{2060}')
        || matches!(c, '\\' | '"' | '<' | '>' | '`')
}

/// Notice text as stored (see the module docs), or why it is refused.
pub fn content(raw: &str) -> Result<String, String> {
    let text = raw.replace("\r\n", "\n");
    if let Some(c) = text.chars().find(|&c| (c.is_control() && c != '\n') || is_bidi_control(c)) {
        let what = if is_bidi_control(c) { "bidi control" } else { "control character" };
        return Err(format!(
            "content must not contain the {what} U+{:04X} (line breaks are `\\n`)",
            u32::from(c)
        ));
    }
    Ok(text.chars().filter(|&c| !is_stripped_invisible(c)).collect())
}

/// One line of profile text (a nickname) as stored: controls, bidi and
/// invisible characters removed, trimmed, at most [`MAX_NICK_CHARS`].
pub fn profile_line(raw: &str) -> String {
    let kept: String = raw
        .chars()
        .filter(|&c| !c.is_control() && !is_bidi_control(c) && !is_stripped_invisible(c))
        .collect();
    kept.trim().chars().take(MAX_NICK_CHARS).collect()
}

/// A profile's avatar URL as stored: the normalised URL (http or https, a
/// DNS host, no userinfo or port), or empty when it is anything else.
pub fn avatar_url(raw: &str) -> String {
    if raw.is_empty() {
        return String::new();
    }
    checked_url(raw, &["https", "http"], &[]).unwrap_or_default()
}

/// A photo URL as stored, or why it is refused: `https://` followed by a DNS
/// host name (not an IP literal in any notation), no userinfo, the default
/// port, no whitespace, control, bidi, BOM or zero-width character, no
/// backslash or `"<>` and a backtick, at most [`MAX_URL_BYTES`]. With `hosts`
/// not empty the host must be one of them (an entry `.example.com` admits
/// every subdomain of example.com). The answer is the `url` crate's
/// normalised serialisation (lower-case scheme and host, percent-encoded
/// path).
pub fn photo_url(raw: &str, hosts: &[String]) -> Result<String, String> {
    checked_url(raw, &["https"], hosts)
}

fn checked_url(raw: &str, schemes: &[&str], hosts: &[String]) -> Result<String, String> {
    if raw.is_empty() || raw.len() > MAX_URL_BYTES {
        return Err(format!("a URL is 1–{MAX_URL_BYTES} bytes"));
    }
    if let Some(c) = raw.chars().find(|&c| is_bad_url_char(c)) {
        return Err(format!("a URL must not contain U+{:04X}", u32::from(c)));
    }
    // `url` reads `https:///a.png` and `https:a.png` as host `a.png`: the
    // scheme must be followed by `//` and a host, as written.
    let after_scheme = schemes.iter().find_map(|s| {
        let prefix = raw.get(..s.len() + 3)?;
        prefix.eq_ignore_ascii_case(&format!("{s}://")).then(|| &raw[s.len() + 3..])
    });
    match after_scheme {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
        _ => return Err(format!("a URL must start with {}://host/", schemes.join(":// or "))),
    }
    let url = Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a URL must not carry a user name or password".into());
    }
    if url.port().is_some() {
        return Err("a URL must use the default port".into());
    }
    let host = match url.host() {
        Some(Host::Domain(d)) if is_dns_name(d) => d,
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => {
            return Err("a URL's host must be a DNS name, not an IP address".into());
        }
        _ => return Err("a URL's host must be a DNS name such as img.example.com".into()),
    };
    if !hosts.is_empty() && !hosts.iter().any(|h| host_matches(host, h)) {
        return Err(format!("photos are accepted from {} only", hosts.join(", ")));
    }
    Ok(url.into())
}

/// `host` is `entry`, or a subdomain of it when `entry` starts with a dot.
fn host_matches(host: &str, entry: &str) -> bool {
    match entry.strip_prefix('.') {
        Some(_) => host.ends_with(entry),
        None => host == entry,
    }
}

/// A lower-case DNS name of at least two labels of `[a-z0-9-]` (IDNs arrive
/// as punycode), not ending in a numeric label.
pub fn is_dns_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels.last().is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photo_urls_are_normalised_or_refused() {
        assert_eq!(
            photo_url("HTTPS://Example.COM/a.png", &[]).unwrap(),
            "https://example.com/a.png"
        );
        assert_eq!(
            photo_url("https://example.com:443/a.png", &[]).unwrap(),
            "https://example.com/a.png"
        );
        assert_eq!(
            photo_url("https://例子.测试/a.png", &[]).unwrap(),
            "https://xn--fsqu00a.xn--0zwm56d/a.png"
        );
        for bad in [
            "https:///a.png",
            "https:a.png",
            "https:\\\\evil.com\\a.png",
            " https://example.com/a.png",
            "https://example.com/a.png ",
            "https://example.com/a\t.png",
            "https://example.com/a\n.png",
            "https://example.com/a\0.png",
            "https://example.com/a\u{1b}.png",
            "https://example.com/\u{202e}gnp.a",
            "https://example.com/\u{200b}a.png",
            "\u{feff}https://example.com/a.png",
            "https://example.com/a.png\"><script>",
            "https://user@example.com/a.png",
            "https://:pw@example.com/a.png",
            "https://169.254.169.254/a.png",
            "https://[::1]/a.png",
            "https://2130706433/a.png",
            "https://0x7f000001/a.png",
            "https://127.1/a.png",
            "https://example.com:8443/a.png",
            "https://localhost/a.png",
            "http://example.com/a.png",
            "ftp://example.com/a.png",
        ] {
            assert!(photo_url(bad, &[]).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_allow_list_admits_exact_hosts_and_dot_suffixes() {
        let hosts = vec!["img.example.com".to_owned(), ".cdn.example.net".to_owned()];
        assert!(photo_url("https://img.example.com/a.png", &hosts).is_ok());
        assert!(photo_url("https://a.cdn.example.net/a.png", &hosts).is_ok());
        assert!(photo_url("https://cdn.example.net/a.png", &hosts).is_err());
        assert!(photo_url("https://evilimg.example.com/a.png", &hosts).is_err());
        assert!(photo_url("https://a.evilcdn.example.net/a.png", &hosts).is_err());
    }

    #[test]
    fn content_refuses_controls_and_bidi_and_strips_invisibles() {
        assert_eq!(content("a\r\nb\n").unwrap(), "a\nb\n");
        assert_eq!(content("\u{feff}a\u{200b}b\u{2060}").unwrap(), "ab");
        assert_eq!(content("👨\u{200d}👩").unwrap(), "👨\u{200d}👩");
        for bad in [
            "a\0b",
            "a\u{1b}[31m",
            "a\tb",
            "a\rb",
            "a\u{7f}",
            "a\u{85}",
            "a\u{202e}b",
            "a\u{2066}b",
            "a\u{200f}",
        ] {
            assert!(content(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn profile_text_is_cleaned() {
        assert_eq!(profile_line(" a\u{202e}b\n\0c\u{feff} "), "abc");
        assert_eq!(profile_line(&"好".repeat(100)).chars().count(), MAX_NICK_CHARS);
        assert_eq!(avatar_url("http://wx.qlogo.cn/mmopen/x/0"), "http://wx.qlogo.cn/mmopen/x/0");
        assert_eq!(avatar_url("https://169.254.169.254/a"), "");
        assert_eq!(avatar_url("javascript:alert(1)"), "");
    }
}
