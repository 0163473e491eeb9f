//! Entry points for the coverage-guided fuzz targets in `fuzz/` (see the
//! README, "Fuzzing"). Not an API: thin wrappers that expose the layer's
//! private parsers unchanged, so the fuzzers exercise exactly the code the
//! gateway runs on every request.

use http::HeaderMap;

use super::error::SessionError;

/// `decode_uri_component`: how the
/// layer decodes `X-WX-RawData`.
pub fn decode_uri_component(input: &str) -> Result<String, &'static str> {
    super::headers::decode_uri_component(input)
}

/// The `X-WX-Signature` shape check (40 hex chars).
pub fn signature_shape_ok(sig: &str) -> bool {
    super::headers::signature_shape_ok(sig)
}

/// The constant-time signature comparison.
pub fn signature_matches(raw_data: &str, session_key: &str, signature: &str) -> bool {
    super::headers::signature_matches(raw_data, session_key, signature)
}

/// Whether the layer would look a code or token up at all.
pub fn plausible_id(s: &str) -> bool {
    super::headers::plausible_id(s)
}

/// The token the layer reads from `X-WX-Skey` / `Authorization: Bearer`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    super::headers::bearer_token(headers)
}

/// The rawData checks of a first request or a token login, before any code
/// is spent: the signature's shape, then rawData as a JSON object.
pub fn parse_signed(text: &str, signature: Option<&str>) -> Result<(), SessionError> {
    super::login::parse_signed(text.to_owned(), signature).map(|_| ())
}
