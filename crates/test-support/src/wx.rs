//! The mini-program client's side of the compat dialect: how weapp-session's
//! client encodes rawData and signs it. Shared by the tests and the bench.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::{Digest, Sha1};

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

/// JavaScript's `encodeURIComponent`.
pub fn encode_uri_component(s: &str) -> String {
    utf8_percent_encode(s, URI_COMPONENT).to_string()
}

/// `sha1_hex(raw + session_key)`, as WeChat signs user info.
pub fn sign(raw: &str, session_key: &str) -> String {
    let mut h = Sha1::new();
    h.update(raw.as_bytes());
    h.update(session_key.as_bytes());
    hex::encode(h.finalize())
}
