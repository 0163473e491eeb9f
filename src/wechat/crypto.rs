//! WeChat open-data decryption and message-push signatures (PROTOCOL §3, §4).
//!
//! Nothing here panics on any input, and no error text carries key, IV or
//! data bytes: a [`DecryptError`] only names what was wrong.

use aes::Aes128;
use aes::cipher::block_padding::{NoPadding, Pkcs7};
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// AES block size, key size and IV size (AES-128-CBC): 16 bytes each.
const BLOCK: usize = 16;

/// Standard alphabet (`+`, `/`); encodes with padding, decodes with or without it.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why open data could not be decrypted (or encrypted). Texts never carry key or data bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// A field is not valid base64 (standard alphabet).
    #[error("{field} is not valid base64")]
    BadBase64 {
        /// Which input: `session_key`, `encryptedData` or `iv`.
        field: &'static str,
    },
    /// The session_key does not decode to 16 bytes.
    #[error("the session_key decodes to {0} bytes, expected 16")]
    BadKeyLength(usize),
    /// The iv does not decode to 16 bytes.
    #[error("the iv decodes to {0} bytes, expected 16")]
    BadIvLength(usize),
    /// The ciphertext is empty or not a whole number of 16-byte blocks.
    #[error("the encrypted data is {0} bytes, expected a non-zero multiple of 16")]
    BadCiphertextLength(usize),
    /// The decrypted data does not end in valid PKCS#7 padding (usually a stale session_key).
    #[error("the decrypted data has invalid padding (wrong session_key or iv?)")]
    BadPadding,
    /// The decrypted data is not a JSON object.
    #[error("the decrypted data is not a JSON object")]
    NotJson,
    /// The data's `watermark.appid` is missing or is another mini-program's.
    #[error("the data's watermark does not name this mini-program")]
    WatermarkMismatch,
}

/// Decrypts WeChat open data (`encryptedData` + `iv`) with the user's `session_key`.
///
/// AES-128-CBC with PKCS#7 padding; the plaintext must be a JSON object whose
/// `watermark.appid` equals `app_id`. Returns that object.
pub fn decrypt_open_data(
    session_key_b64: &str,
    encrypted_b64: &str,
    iv_b64: &str,
    app_id: &str,
) -> Result<Value, DecryptError> {
    let key = decode_key(session_key_b64)?;
    let iv = decode_iv(iv_b64)?;
    let mut buf = decode(encrypted_b64, "encryptedData")?;
    if buf.is_empty() || buf.len() % BLOCK != 0 {
        return Err(DecryptError::BadCiphertextLength(buf.len()));
    }
    let cipher_len = buf.len();
    let plain_len = {
        let decrypted = cbc::Decryptor::<Aes128>::new(&key.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| DecryptError::BadCiphertextLength(cipher_len))?;
        strict_pkcs7_len(decrypted)?
    };
    buf.truncate(plain_len);
    let value: Value = serde_json::from_slice(&buf).map_err(|_| DecryptError::NotJson)?;
    if !value.is_object() {
        return Err(DecryptError::NotJson);
    }
    let watermark_appid = value.pointer("/watermark/appid").and_then(Value::as_str);
    if watermark_appid != Some(app_id) {
        return Err(DecryptError::WatermarkMismatch);
    }
    Ok(value)
}

/// Encrypts `plaintext_json` as WeChat does (the inverse of [`decrypt_open_data`]); returns base64.
///
/// For the fake WeChat server and tests. The JSON is written as compact text;
/// no watermark is added here.
pub fn encrypt_open_data(
    session_key_b64: &str,
    plaintext_json: &Value,
    iv_b64: &str,
) -> Result<String, DecryptError> {
    let key = decode_key(session_key_b64)?;
    let iv = decode_iv(iv_b64)?;
    let plain = plaintext_json.to_string().into_bytes();
    let msg_len = plain.len();
    // PKCS#7 always adds 1..=16 bytes.
    let mut buf = plain;
    buf.resize(msg_len + BLOCK - msg_len % BLOCK, 0);
    let encrypted = cbc::Encryptor::<Aes128>::new(&key.into(), &iv.into())
        .encrypt_padded_mut::<Pkcs7>(&mut buf, msg_len)
        .map_err(|_| DecryptError::BadCiphertextLength(msg_len))?;
    Ok(B64.encode(encrypted))
}

/// Message-push URL verification: `sha1_hex(sorted [token, timestamp, nonce] concatenated)`
/// compared with `signature` (hex, any case) in constant time.
pub fn check_push_signature(token: &str, timestamp: &str, nonce: &str, signature: &str) -> bool {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    let expected = sha1_hex(&parts);
    let given = signature.to_ascii_lowercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Lowercase hex SHA-1 of the concatenation of `parts`.
fn sha1_hex(parts: &[&str]) -> String {
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn decode(input: &str, field: &'static str) -> Result<Vec<u8>, DecryptError> {
    B64.decode(input.trim()).map_err(|_| DecryptError::BadBase64 { field })
}

fn decode_key(session_key_b64: &str) -> Result<[u8; BLOCK], DecryptError> {
    let bytes = decode(session_key_b64, "session_key")?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| DecryptError::BadKeyLength(len))
}

fn decode_iv(iv_b64: &str) -> Result<[u8; BLOCK], DecryptError> {
    let bytes = decode(iv_b64, "iv")?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| DecryptError::BadIvLength(len))
}

/// The unpadded length of a decrypted buffer, checking every PKCS#7 padding byte.
///
/// (`block-padding`'s `Pkcs7` only checks the last byte when unpadding; a
/// stale session_key then often passes as "valid padding" and fails later as
/// "not JSON". Checking them all gives the clearer error.)
fn strict_pkcs7_len(decrypted: &[u8]) -> Result<usize, DecryptError> {
    let Some(&last) = decrypted.last() else {
        return Err(DecryptError::BadPadding);
    };
    let n = usize::from(last);
    if n == 0 || n > BLOCK || n > decrypted.len() {
        return Err(DecryptError::BadPadding);
    }
    let start = decrypted.len() - n;
    if decrypted[start..].iter().any(|&b| b != last) {
        return Err(DecryptError::BadPadding);
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZg=="; // "0123456789abcdef"
    const IV: &str = "ZmVkY2JhOTg3NjU0MzIxMA=="; // "fedcba9876543210"
    const APP: &str = "wx_test_appid";

    /// `printf '%s' "$PLAIN" | openssl enc -aes-128-cbc -K 30313233343536373839616263646566
    ///  -iv 66656463626139383736353433323130 | base64 -w0`, computed outside this crate.
    const KAT_PLAIN: &str =
        r#"{"openId":"oTest","watermark":{"appid":"wx_test_appid","timestamp":1700000000}}"#;
    const KAT_CIPHER: &str = "YAgrV4QaQhLc1L4WK1ahJLUDrQxGPaPg6Dz0P1nw6ia0Su/ZnThsGjSnXVHudy3VJoCmktN2/ui/fBZu13+v9jPaYTFLlcdZnBGSWU4Hp+s=";

    fn sample() -> Value {
        json!({"openId": "oTest", "stepInfoList": [{"timestamp": 1, "step": 42}],
               "watermark": {"appid": APP, "timestamp": 1_700_000_000}})
    }

    #[test]
    fn known_answer_vector_decrypts() {
        let value = decrypt_open_data(KEY, KAT_CIPHER, IV, APP).expect("decrypts");
        let expected: Value = serde_json::from_str(KAT_PLAIN).expect("json");
        assert_eq!(value, expected);
        // And our encryption produces the same bytes as openssl's.
        assert_eq!(encrypt_open_data(KEY, &expected, IV).expect("encrypts"), KAT_CIPHER);
    }

    #[test]
    fn roundtrip() {
        let data = sample();
        let enc = encrypt_open_data(KEY, &data, IV).expect("encrypts");
        assert_eq!(decrypt_open_data(KEY, &enc, IV, APP).expect("decrypts"), data);
        // Unpadded base64 is accepted too.
        let unpadded = enc.trim_end_matches('=');
        assert_eq!(
            decrypt_open_data(KEY.trim_end_matches('='), unpadded, IV, APP).expect("decrypts"),
            data
        );
    }

    #[test]
    fn bad_base64_names_the_field() {
        let enc = encrypt_open_data(KEY, &sample(), IV).expect("encrypts");
        assert_eq!(
            decrypt_open_data("not base64!", &enc, IV, APP),
            Err(DecryptError::BadBase64 { field: "session_key" })
        );
        assert_eq!(
            decrypt_open_data(KEY, "%%%", IV, APP),
            Err(DecryptError::BadBase64 { field: "encryptedData" })
        );
        assert_eq!(
            decrypt_open_data(KEY, &enc, "a-b_", APP),
            Err(DecryptError::BadBase64 { field: "iv" })
        );
    }

    #[test]
    fn lengths_are_checked_before_use() {
        let enc = encrypt_open_data(KEY, &sample(), IV).expect("encrypts");
        let b15 = B64.encode([7u8; 15]);
        let b32 = B64.encode([7u8; 32]);
        assert_eq!(decrypt_open_data(&b15, &enc, IV, APP), Err(DecryptError::BadKeyLength(15)));
        assert_eq!(decrypt_open_data(&b32, &enc, IV, APP), Err(DecryptError::BadKeyLength(32)));
        assert_eq!(decrypt_open_data("", &enc, IV, APP), Err(DecryptError::BadKeyLength(0)));
        assert_eq!(decrypt_open_data(KEY, &enc, &b15, APP), Err(DecryptError::BadIvLength(15)));
        assert_eq!(decrypt_open_data(KEY, "", IV, APP), Err(DecryptError::BadCiphertextLength(0)));
        assert_eq!(
            decrypt_open_data(KEY, &B64.encode([1u8; 17]), IV, APP),
            Err(DecryptError::BadCiphertextLength(17))
        );
        assert_eq!(encrypt_open_data(&b15, &sample(), IV), Err(DecryptError::BadKeyLength(15)));
        assert_eq!(encrypt_open_data(KEY, &sample(), &b32), Err(DecryptError::BadIvLength(32)));
    }

    #[test]
    fn wrong_key_is_bad_padding_or_not_json() {
        let enc = encrypt_open_data(KEY, &sample(), IV).expect("encrypts");
        let other = B64.encode([9u8; 16]);
        let err = decrypt_open_data(&other, &enc, IV, APP).expect_err("must fail");
        assert!(matches!(err, DecryptError::BadPadding | DecryptError::NotJson), "{err:?}");
    }

    #[test]
    fn bad_padding_is_detected() {
        // A block whose plaintext ends in 0x00 (never valid PKCS#7).
        let mut block = [0u8; 16];
        let key = [0x30u8; 16];
        let iv = [0x31u8; 16];
        cbc::Encryptor::<Aes128>::new(&key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut block, 16)
            .expect("one block");
        let err = decrypt_open_data(&B64.encode(key), &B64.encode(block), &B64.encode(iv), APP);
        assert_eq!(err, Err(DecryptError::BadPadding));
        // Last byte valid (0x02) but the one before is not.
        let mut plain = [b'x'; 16];
        plain[15] = 2;
        cbc::Encryptor::<Aes128>::new(&key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, 16)
            .expect("one block");
        let err = decrypt_open_data(&B64.encode(key), &B64.encode(plain), &B64.encode(iv), APP);
        assert_eq!(err, Err(DecryptError::BadPadding));
    }

    #[test]
    fn non_object_or_non_json_is_not_json() {
        let enc = encrypt_open_data(KEY, &json!([1, 2, 3]), IV).expect("encrypts");
        assert_eq!(decrypt_open_data(KEY, &enc, IV, APP), Err(DecryptError::NotJson));
        let enc = encrypt_open_data(KEY, &json!("just a string"), IV).expect("encrypts");
        assert_eq!(decrypt_open_data(KEY, &enc, IV, APP), Err(DecryptError::NotJson));
    }

    #[test]
    fn watermark_must_name_this_app() {
        let enc = encrypt_open_data(KEY, &sample(), IV).expect("encrypts");
        assert_eq!(
            decrypt_open_data(KEY, &enc, IV, "wx_other"),
            Err(DecryptError::WatermarkMismatch)
        );
        let enc = encrypt_open_data(KEY, &json!({"openId": "o"}), IV).expect("encrypts");
        assert_eq!(decrypt_open_data(KEY, &enc, IV, APP), Err(DecryptError::WatermarkMismatch));
        let enc =
            encrypt_open_data(KEY, &json!({"watermark": {"appid": 5}}), IV).expect("encrypts");
        assert_eq!(decrypt_open_data(KEY, &enc, IV, APP), Err(DecryptError::WatermarkMismatch));
    }

    #[test]
    fn errors_never_echo_inputs() {
        let key = B64.encode(*b"SECRETKEYBYTES!!");
        let errors = [
            decrypt_open_data(&key, "AAAA", "QUJD", APP),
            decrypt_open_data(&key, "c2VjcmV0ZGF0YQ", KEY, APP),
            decrypt_open_data("c2VjcmV0", "x", "y", APP),
        ];
        for err in errors {
            let text = err.expect_err("fails").to_string();
            for needle in ["SECRET", &key, "c2VjcmV0", "AAAA", "QUJD"] {
                assert!(!text.contains(needle), "{text}");
            }
        }
    }

    #[test]
    fn push_signature() {
        // printf '%s' 1700000000nonce123tok | sha1sum (sorted: "1700000000" < "nonce123" < "tok").
        let sig = "9248ec9f6410495fa2ef4008cc3f9b3a25342d17";
        assert!(check_push_signature("tok", "1700000000", "nonce123", sig));
        assert!(check_push_signature("tok", "1700000000", "nonce123", &sig.to_ascii_uppercase()));
        assert!(!check_push_signature("tok2", "1700000000", "nonce123", sig));
        assert!(!check_push_signature("tok", "1700000000", "nonce123", &sig[..39]));
        assert!(!check_push_signature("tok", "1700000000", "nonce123", ""));
    }
}
