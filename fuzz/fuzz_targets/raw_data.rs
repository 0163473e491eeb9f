//! rawData parsing: `X-WX-RawData` decoded, then the checks a first request
//! or a token login runs before any code is spent (signature shape, rawData
//! a JSON object).
//!
//! Input: `<signature> \0 <rawData header value>` (no `\0`: no signature).
//! Properties: accepted only with a well-shaped signature and a rawData that
//! decodes to a JSON object; never accepted without a signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use weapp_gateway::session::fuzzing::{decode_uri_component, parse_signed, signature_shape_ok};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (signature, header) = match s.split_once('\0') {
        Some((sig, raw)) => (Some(sig), raw),
        None => (None, s),
    };
    // The header form (percent-encoded) and the token login's body form (plain JSON).
    let decoded = decode_uri_component(header).ok();
    for text in decoded.iter().map(String::as_str).chain([header]) {
        let parsed = parse_signed(text, signature);
        if parsed.is_ok() {
            let sig = signature.map(str::trim).unwrap_or_default();
            assert!(signature_shape_ok(sig), "{sig:?}");
            assert!(
                matches!(serde_json::from_str::<Value>(text), Ok(Value::Object(_))),
                "{text:?}"
            );
        }
        assert!(parse_signed(text, None).is_err());
    }
});
