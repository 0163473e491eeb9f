//! Open-data decryption (AES-128-CBC, PKCS#7, JSON, watermark).
//!
//! Each input is used three ways:
//! 1. as four arbitrary texts (session_key, encryptedData, iv, appid);
//! 2. as raw key, iv and ciphertext bytes, base64-encoded, so the fuzzer
//!    reaches the padding, JSON and watermark checks;
//! 3. as a round trip: a JSON object with the input as a field and a
//!    watermark, encrypted under the input's key and iv, decrypts to itself.
//!
//! Properties: no panic; a decrypted value is an object whose
//! `watermark.appid` is the expected one; the round trip is exact.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use weapp_gateway::wechat::{decrypt_open_data, encrypt_open_data};

const APPID: &str = "wx4f4bc4dec97d474b";

fn check(value: &Value, appid: &str) {
    assert!(value.is_object());
    assert_eq!(value.pointer("/watermark/appid").and_then(Value::as_str), Some(appid));
}

fuzz_target!(|data: &[u8]| {
    // 1. Four texts separated by NUL.
    if let Ok(s) = std::str::from_utf8(data) {
        let mut parts = s.splitn(4, '\0');
        let (key, enc, iv) =
            (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let appid = parts.next().unwrap_or(APPID);
        if let Ok(v) = decrypt_open_data(key, enc, iv, appid) {
            check(&v, appid);
        }
    }
    if data.len() < 32 {
        return;
    }
    let (key, rest) = data.split_at(16);
    let (iv, tail) = rest.split_at(16);
    let (key_b64, iv_b64) = (STANDARD.encode(key), STANDARD.encode(iv));
    // 2. Raw ciphertext bytes.
    if let Ok(v) = decrypt_open_data(&key_b64, &STANDARD.encode(tail), &iv_b64, APPID) {
        check(&v, APPID);
    }
    // 3. Round trip.
    let payload = String::from_utf8_lossy(tail);
    let plain = json!({
        "openId": payload,
        "nickName": payload.chars().rev().collect::<String>(),
        "stepInfoList": [{ "timestamp": tail.len(), "step": tail.first().copied().unwrap_or(0) }],
        "watermark": { "appid": APPID, "timestamp": 1_700_000_000u64 },
    });
    let enc = encrypt_open_data(&key_b64, &plain, &iv_b64).unwrap();
    let back = decrypt_open_data(&key_b64, &enc, &iv_b64, APPID).unwrap();
    assert_eq!(back, plain);
    // The same ciphertext with another mini-program's appid never decrypts.
    assert!(decrypt_open_data(&key_b64, &enc, &iv_b64, "wx0000000000000000").is_err());
});
