//! Reading the compat and token headers: decoding and cheap shape checks.

use http::HeaderMap;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// `X-WX-Code`: the `wx.login()` code (compat dialect).
pub const HEADER_CODE: &str = "x-wx-code";
/// `X-WX-RawData`: `encodeURIComponent(rawData)` (compat dialect, first request).
pub const HEADER_RAW_DATA: &str = "x-wx-rawdata";
/// `X-WX-Signature`: `sha1(rawData + session_key)` in hex (compat dialect).
pub const HEADER_SIGNATURE: &str = "x-wx-signature";
/// `X-WX-Skey`: the opaque token (token dialect).
pub const HEADER_SKEY: &str = "x-wx-skey";

/// The longest code or token the layer will look at; WeChat codes are 32
/// chars, tokens 52. Anything longer is not ours and is never sent to a store.
const MAX_ID_LEN: usize = 256;

/// A header's value as text when present and non-empty.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    header_text(headers, name).ok().flatten()
}

/// A header's value as text when present and non-empty; `Err(())` when it is
/// present but not visible ASCII (so it cannot be what the protocol sends).
pub(crate) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim()).filter(|s| !s.is_empty())).map_err(|_| ()),
    }
}

/// Whether `s` can be a code or token: printable ASCII without spaces, bounded.
pub(crate) fn plausible_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The token from `X-WX-Skey` or `Authorization: Bearer`.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, HEADER_SKEY).or_else(|| {
        let auth = header_str(headers, http::header::AUTHORIZATION.as_str())?;
        let (scheme, token) = auth.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
    })
}

/// Decode like JavaScript's `decodeURIComponent`: `%XX` are UTF-8 bytes, `+`
/// stays `+`, a malformed escape or invalid UTF-8 is an error.
pub(crate) fn decode_uri_component(input: &str) -> Result<String, &'static str> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("truncated % escape")?;
            let hi = (hex[0] as char).to_digit(16).ok_or("malformed % escape")?;
            let lo = (hex[1] as char).to_digit(16).ok_or("malformed % escape")?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "escapes do not form valid UTF-8")
}

/// Whether `sig` has the shape of a SHA-1 hex digest (40 hex chars).
pub(crate) fn signature_shape_ok(sig: &str) -> bool {
    sig.len() == 40 && sig.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `sha1_hex(raw_data + session_key)` compared with `signature` in constant time.
pub(crate) fn signature_matches(raw_data: &str, session_key: &str, signature: &str) -> bool {
    let mut hasher = Sha1::new();
    hasher.update(raw_data.as_bytes());
    hasher.update(session_key.as_bytes());
    let expected = hex::encode(hasher.finalize());
    let given = signature.to_ascii_lowercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_decode_uri_component() {
        assert_eq!(decode_uri_component("%7B%22a%22%3A1%7D").as_deref(), Ok("{\"a\":1}"));
        assert_eq!(decode_uri_component("a+b").as_deref(), Ok("a+b"));
        assert_eq!(decode_uri_component("%E5%BC%A0%E4%B8%89").as_deref(), Ok("张三"));
        assert!(decode_uri_component("%E5%BC").is_err());
        assert!(decode_uri_component("%zz").is_err());
        assert!(decode_uri_component("abc%4").is_err());
        assert!(decode_uri_component("%").is_err());
    }

    #[test]
    fn signature_is_sha1_of_raw_plus_key() {
        // `printf '{}key' | sha1sum`, computed outside this crate.
        let sig = "8c08a3948bb65361ca63a847ff71f1e19ee7aa74";
        assert!(signature_matches("{}", "key", sig));
        assert!(signature_matches("{}", "key", &sig.to_ascii_uppercase()));
        assert!(!signature_matches("{}", "other", sig));
        assert!(!signature_matches("{}", "key", &sig[..39]));
    }

    #[test]
    fn shape_and_bearer() {
        assert!(signature_shape_ok(&"a".repeat(40)));
        assert!(!signature_shape_ok(&"g".repeat(40)));
        assert!(!signature_shape_ok(&"a".repeat(39)));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert("x-wx-skey", "def".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("def"));
        assert!(!plausible_id("a b"));
        assert!(!plausible_id(&"a".repeat(300)));
    }
}
