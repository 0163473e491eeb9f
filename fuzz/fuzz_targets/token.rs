//! The token format: `SessionId::token` (SHA-256 of the token, with the
//! user's slot tag as a Redis hash tag when the token starts with one),
//! key suffixes and their parsing.
//!
//! Properties: the id is `<64 hex>` or `{u:<tag>}:<64 hex>` where `<tag>` is
//! the token's own prefix of `USER_TAG_LEN` lowercase hex digits before a
//! `.`; a token built like `new_token` (`user_tag(openid)` + `.` + anything
//! non-empty) lands in its user's tag; `from_key_suffix(key_suffix())` is the
//! identity; any text `from_key_suffix` accepts prints back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weapp_gateway::session::store::{SessionId, SessionKind, USER_TAG_LEN, user_tag};

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_token(token: &str) -> SessionId {
    let id = SessionId::token(token);
    assert_eq!(id.kind, SessionKind::Token);
    assert_eq!(SessionId::token(token), id, "not deterministic");
    match id.id.strip_prefix("{u:") {
        Some(rest) => {
            let (tag, digest) = rest.split_once("}:").unwrap();
            assert!(is_hex64(digest), "{}", id.id);
            assert_eq!(tag.len(), USER_TAG_LEN);
            assert!(tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            let (prefix, after) = token.split_once('.').unwrap();
            assert_eq!(prefix, tag);
            assert!(!after.is_empty());
        }
        None => assert!(is_hex64(&id.id), "{}", id.id),
    }
    let suffix = id.key_suffix();
    assert_eq!(SessionId::from_key_suffix(&suffix).as_ref(), Some(&id));
    id
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    check_token(s);
    // A token as the gateway issues it, for an openid taken from the input.
    let (openid, rest) = s.split_once('\0').unwrap_or((s, "r"));
    let tag = user_tag(openid);
    if !rest.is_empty() {
        let issued = check_token(&format!("{tag}.{rest}"));
        assert!(issued.id.starts_with(&format!("{{u:{tag}}}:")), "{}", issued.id);
    }
    if let Some(parsed) = SessionId::from_key_suffix(s) {
        assert_eq!(parsed.key_suffix(), s);
    }
    let code = SessionId::code(s);
    assert_eq!(SessionId::from_key_suffix(&code.key_suffix()).as_ref(), Some(&code));
});
