//! Header decoding: `decodeURIComponent` of `X-WX-RawData`, the signature
//! shape check, the token header readers.
//!
//! Properties beyond "no panic":
//! - on input whose every `%` starts a well-formed `%XX` escape, the result
//!   agrees with `percent_encoding`'s decoder (Ok exactly when the bytes are
//!   UTF-8); any malformed escape is an error;
//! - a decoded text percent-encodes and decodes back to itself;
//! - the shape check accepts exactly 40 ASCII hex digits.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use weapp_gateway::session::fuzzing::{
    bearer_token, decode_uri_component, plausible_id, signature_matches, signature_shape_ok,
};

fn escapes_well_formed(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match b.get(i + 1..i + 3) {
                Some(h) if h.iter().all(u8::is_ascii_hexdigit) => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert("x-wx-skey", header.clone());
        headers.insert(http::header::AUTHORIZATION, header);
        if let Some(token) = bearer_token(&headers) {
            assert!(!token.is_empty() && token.trim() == token, "{token:?}");
        }
        headers.remove("x-wx-skey");
        if let Some(token) = bearer_token(&headers) {
            assert!(!token.is_empty() && token.trim() == token, "{token:?}");
        }
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = decode_uri_component(s);
    if escapes_well_formed(s) {
        let reference = percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned());
        assert_eq!(decoded.as_ref().ok(), reference.as_ref(), "{s:?}");
    } else {
        assert!(decoded.is_err(), "malformed escape accepted: {s:?}");
    }
    if let Ok(text) = &decoded {
        let encoded = utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        assert_eq!(decode_uri_component(&encoded).as_ref(), Ok(text), "{encoded:?}");
    }

    let shaped = s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
    assert_eq!(signature_shape_ok(s), shaped, "{s:?}");
    let middle = s.char_indices().nth(s.chars().count() / 2).map_or(s.len(), |(i, _)| i);
    let (raw, key) = s.split_at(middle);
    assert!(!signature_matches(raw, key, s) || shaped, "{s:?}");
    if plausible_id(s) {
        assert!(s.len() <= 256 && !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()));
    }
});
