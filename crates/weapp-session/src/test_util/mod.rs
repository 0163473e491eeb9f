//! Test helpers for teams building on this crate (feature `test-util`).
//!
//! - **The store contract.** [`check_session_store`] runs every case the
//!   session layer relies on against a [`SessionStore`](crate::SessionStore)
//!   of yours; [`check_shared_store`] does the same for a
//!   [`SharedStore`](crate::SharedStore), and [`check_store`] runs both plus
//!   the cases that need one backend implementing the two. `MemoryStore` and
//!   `RedisStore` (on Redis and on a Redis Cluster) pass exactly these cases.
//! - **The client's side of the compat dialect.** [`sign_raw_data`],
//!   [`encode_uri_component`], [`compat_login_headers`] and
//!   [`token_login_body`] build what a mini-program sends, so a test can log
//!   a user in through the layer without re-implementing the protocol.
//!
//! ```
//! use weapp_session::MemoryStore;
//! use weapp_session::test_util::check_store;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Each case gets a store of its own; the case name can key a prefix.
//! if let Err(failure) = check_store(|_case| async { MemoryStore::new(10_000) }).await {
//!     panic!("{failure}"); // names every failing case and why it failed
//! }
//! # }
//! ```

mod contract;
mod session_cases;
mod shared_cases;

use http::header::InvalidHeaderValue;
use http::{HeaderMap, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::{Digest, Sha1};

pub use self::contract::{
    CASE_BOUND, ContractFailure, FailedCase, check_session_store, check_shared_store, check_store,
};

use crate::{HEADER_CODE, HEADER_RAW_DATA, HEADER_SIGNATURE};

/// What JavaScript's `encodeURIComponent` leaves alone.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The signature WeChat gives a user's profile, and that the compat dialect
/// sends as `X-WX-Signature`: `sha1(raw_data + session_key)`, lowercase hex.
///
/// ```
/// use weapp_session::test_util::sign_raw_data;
/// // `printf '{}key' | sha1sum`
/// assert_eq!(sign_raw_data("{}", "key"), "8c08a3948bb65361ca63a847ff71f1e19ee7aa74");
/// ```
pub fn sign_raw_data(raw_data: &str, session_key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(raw_data.as_bytes());
    hasher.update(session_key.as_bytes());
    hex::encode(hasher.finalize())
}

/// JavaScript's `encodeURIComponent`, as the mini-program client encodes
/// `X-WX-RawData` (UTF-8 bytes as `%XX`, `A-Za-z0-9-_.!~*'()` unchanged).
///
/// ```
/// use weapp_session::test_util::encode_uri_component;
/// assert_eq!(encode_uri_component(r#"{"nickName":"小明"}"#),
///            "%7B%22nickName%22%3A%22%E5%B0%8F%E6%98%8E%22%7D");
/// ```
pub fn encode_uri_component(text: &str) -> String {
    utf8_percent_encode(text, URI_COMPONENT).to_string()
}

/// The headers of a compat (weapp-session) first request: `X-WX-Code`,
/// `X-WX-RawData` (`raw_data` encoded like `encodeURIComponent`) and
/// `X-WX-Signature` (`raw_data` signed with `session_key`). Later requests
/// send `X-WX-Code` alone.
///
/// Errs only when `code` cannot be a header value.
///
/// ```
/// use weapp_session::test_util::{compat_login_headers, sign_raw_data};
/// let headers = compat_login_headers("0a1b2c", r#"{"nickName":"Tom"}"#, "key").unwrap();
/// assert_eq!(headers["x-wx-code"], "0a1b2c");
/// assert_eq!(headers["x-wx-rawdata"], "%7B%22nickName%22%3A%22Tom%22%7D");
/// assert_eq!(headers["x-wx-signature"], sign_raw_data(r#"{"nickName":"Tom"}"#, "key").as_str());
/// ```
pub fn compat_login_headers(
    code: &str,
    raw_data: &str,
    session_key: &str,
) -> Result<HeaderMap, InvalidHeaderValue> {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_CODE, HeaderValue::from_str(code)?);
    headers.insert(HEADER_RAW_DATA, HeaderValue::from_str(&encode_uri_component(raw_data))?);
    headers.insert(HEADER_SIGNATURE, HeaderValue::from_str(&sign_raw_data(raw_data, session_key))?);
    Ok(headers)
}

/// The JSON body of a token-dialect login with a signed profile:
/// `{"code", "rawData", "signature"}`. (Without a profile the body is just
/// `{"code": …}`.)
///
/// ```
/// use weapp_session::test_util::{sign_raw_data, token_login_body};
/// let body: serde_json::Value =
///     serde_json::from_str(&token_login_body("0a1b2c", "{}", "key")).unwrap();
/// assert_eq!(body["code"], "0a1b2c");
/// assert_eq!(body["rawData"], "{}");
/// assert_eq!(body["signature"], sign_raw_data("{}", "key"));
/// ```
pub fn token_login_body(code: &str, raw_data: &str, session_key: &str) -> String {
    serde_json::json!({
        "code": code,
        "rawData": raw_data,
        "signature": sign_raw_data(raw_data, session_key),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_client_signs_is_what_the_layer_checks() {
        let raw = r#"{"nickName":"小明","gender":1}"#;
        let sig = sign_raw_data(raw, "HyVFkGl5F5OQWJZZaNzBBg==");
        assert!(crate::headers::signature_matches(raw, "HyVFkGl5F5OQWJZZaNzBBg==", &sig));
        let encoded = encode_uri_component(raw);
        assert_eq!(crate::headers::decode_uri_component(&encoded).as_deref(), Ok(raw));
        assert_eq!(encode_uri_component("a+b c!~*'()"), "a%2Bb%20c!~*'()");
    }

    #[test]
    fn a_code_that_is_no_header_value_is_an_error() {
        assert!(compat_login_headers("bad\ncode", "{}", "key").is_err());
    }
}
