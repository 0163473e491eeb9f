//! WeChat open-data decryption and message-push signatures (docs/protocol.md §5, §6).
//!
//! Nothing here panics on any input, and no error text carries key, IV or
//! data bytes: a [`DecryptError`] only names what was wrong.
//!
//! Everything after the ciphertext is decrypted (padding, JSON, watermark,
//! freshness) runs as one path: every check is evaluated whatever the
//! others found, the PKCS#7 check is constant-time, and only then is one
//! error picked. The kinds stay apart for server-side logs; what a client
//! is told must not tell them apart ([`DecryptError::is_key_dependent`]), or
//! the route becomes a CBC padding oracle.

use aes::Aes128;
use aes::cipher::block_padding::{NoPadding, Pkcs7};
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::time::Duration;

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeLess};

/// AES block size, key size and IV size (AES-128-CBC): 16 bytes each.
const BLOCK: usize = 16;

/// Standard alphabet (`+`, `/`); encodes with padding, decodes with or without it.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why open data could not be decrypted (or encrypted). Texts never carry key or data bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// Freshness was required and the data's `watermark.timestamp` is
    /// missing, not a number, older than allowed or too far in the future.
    #[error("the data's watermark is too old or has no usable timestamp")]
    Stale,
}

impl DecryptError {
    /// Whether the failure depends on the session_key (the data decrypted to
    /// something unacceptable) rather than on the input's shape alone.
    ///
    /// Key-dependent failures must all look the same to a client (one
    /// answer, see the gateway's `ERR_DECRYPT_FAILED`) and count against the
    /// session's failure budget: telling them apart is a padding oracle.
    /// The others (base64, lengths) say nothing about the plaintext.
    pub fn is_key_dependent(&self) -> bool {
        matches!(self, Self::BadPadding | Self::NotJson | Self::WatermarkMismatch | Self::Stale)
    }

    /// A stable name for server-side logs only (never sent to a client).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadBase64 { .. } => "bad_base64",
            Self::BadKeyLength(_) => "bad_key_length",
            Self::BadIvLength(_) => "bad_iv_length",
            Self::BadCiphertextLength(_) => "bad_ciphertext_length",
            Self::BadPadding => "bad_padding",
            Self::NotJson => "not_json",
            Self::WatermarkMismatch => "watermark_mismatch",
            Self::Stale => "stale",
        }
    }
}

/// An optional freshness rule for open data: `watermark.timestamp` must lie
/// in `[now - max_age, now + clock_skew]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Freshness {
    /// The gateway's "now", Unix seconds.
    pub now: i64,
    /// Oldest accepted data.
    pub max_age: Duration,
    /// How far in the future a timestamp may be (WeChat's clock against ours).
    pub clock_skew: Duration,
}

impl Freshness {
    /// Seen at `now` (Unix seconds): data at most `max_age` old, and at most
    /// `clock_skew` ahead of `now`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let rule = weapp_wechat::Freshness::new(
    ///     1_700_000_000, Duration::from_secs(3600), Duration::from_secs(300));
    /// assert!(rule.accepts(Some(&serde_json::json!(1_700_000_000 - 60))));
    /// assert!(!rule.accepts(Some(&serde_json::json!(1_700_000_000 - 7200))));
    /// assert!(!rule.accepts(None));
    /// ```
    pub fn new(now: i64, max_age: Duration, clock_skew: Duration) -> Self {
        Self { now, max_age, clock_skew }
    }

    /// Whether a watermark timestamp (Unix seconds) is acceptable.
    pub fn accepts(&self, timestamp: Option<&Value>) -> bool {
        let Some(ts) = timestamp.and_then(Value::as_i64) else {
            return false;
        };
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        ts >= self.now.saturating_sub(secs(self.max_age))
            && ts <= self.now.saturating_add(secs(self.clock_skew))
    }
}

/// Decrypts WeChat open data (`encryptedData` + `iv`) with the user's `session_key`.
///
/// AES-128-CBC with PKCS#7 padding; the plaintext must be a JSON object whose
/// `watermark.appid` equals `app_id`. Returns that object. No freshness rule:
/// see [`decrypt_open_data_fresh`].
///
/// ```
/// use serde_json::json;
/// use weapp_wechat::{DecryptError, decrypt_open_data, encrypt_open_data};
///
/// let session_key = "tiihtNczf5v6AKRyjwEUhQ=="; // the user's, from jscode2session
/// let iv = "r7BXXKkLb8qrSNn05n0qiA==";
/// let data = json!({"phoneNumber": "13800138000", "watermark": {"appid": "wx_app", "timestamp": 1}});
/// let encrypted = encrypt_open_data(session_key, &data, iv)?; // what WeChat sends the client
///
/// assert_eq!(decrypt_open_data(session_key, &encrypted, iv, "wx_app")?, data);
/// // Another mini-program's data, or another user's key, is refused.
/// assert_eq!(decrypt_open_data(session_key, &encrypted, iv, "wx_other"), Err(DecryptError::WatermarkMismatch));
/// # Ok::<(), DecryptError>(())
/// ```
pub fn decrypt_open_data(
    session_key_b64: &str,
    encrypted_b64: &str,
    iv_b64: &str,
    app_id: &str,
) -> Result<Value, DecryptError> {
    decrypt_open_data_fresh(session_key_b64, encrypted_b64, iv_b64, app_id, None)
}

/// [`decrypt_open_data`], and when `freshness` is given, the data's
/// `watermark.timestamp` must satisfy it (else [`DecryptError::Stale`]).
///
/// Input-shape errors (base64, lengths) are reported first and directly.
/// After decryption every check runs whatever the others found (one path);
/// the error returned is the first failing one in the order padding, JSON
/// object, watermark appid, freshness.
pub fn decrypt_open_data_fresh(
    session_key_b64: &str,
    encrypted_b64: &str,
    iv_b64: &str,
    app_id: &str,
    freshness: Option<&Freshness>,
) -> Result<Value, DecryptError> {
    let key = decode_key(session_key_b64)?;
    let iv = decode_iv(iv_b64)?;
    let mut buf = decode(encrypted_b64, "encryptedData")?;
    if buf.is_empty() || buf.len() % BLOCK != 0 {
        return Err(DecryptError::BadCiphertextLength(buf.len()));
    }
    let cipher_len = buf.len();
    let (padding_ok, plain_len) = {
        let decrypted = cbc::Decryptor::<Aes128>::new(&key.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| DecryptError::BadCiphertextLength(cipher_len))?;
        strict_pkcs7_len(decrypted)
    };
    // Parsed whether or not the padding was valid (then over the whole
    // buffer), so both kinds of failure take the same path.
    let parsed = serde_json::from_slice::<Value>(buf.get(..plain_len).unwrap_or(&buf))
        .ok()
        .filter(Value::is_object);
    let appid_ok = parsed
        .as_ref()
        .and_then(|v| v.pointer("/watermark/appid"))
        .and_then(Value::as_str)
        .is_some_and(|a| bool::from(a.as_bytes().ct_eq(app_id.as_bytes())));
    let fresh_ok = freshness
        .is_none_or(|f| f.accepts(parsed.as_ref().and_then(|v| v.pointer("/watermark/timestamp"))));
    match parsed {
        _ if !bool::from(padding_ok) => Err(DecryptError::BadPadding),
        None => Err(DecryptError::NotJson),
        Some(_) if !appid_ok => Err(DecryptError::WatermarkMismatch),
        Some(_) if !fresh_ok => Err(DecryptError::Stale),
        Some(value) => Ok(value),
    }
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
///
/// ```
/// // `printf '%s' 1700000000nonce123tok | sha1sum` (the three sorted, then joined)
/// let signature = "9248ec9f6410495fa2ef4008cc3f9b3a25342d17";
/// assert!(weapp_wechat::check_push_signature("tok", "1700000000", "nonce123", signature));
/// assert!(!weapp_wechat::check_push_signature("other", "1700000000", "nonce123", signature));
/// ```
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

/// Whether a decrypted buffer ends in valid PKCS#7 padding (every padding
/// byte checked), and its unpadded length (the whole length when invalid).
///
/// Constant-time in the data: the last 16 bytes are always all read and the
/// verdict is built without data-dependent branches. (`block-padding`'s
/// `Pkcs7` only checks the last byte when unpadding, and branches on it.)
/// `decrypted` is a non-empty whole number of blocks.
fn strict_pkcs7_len(decrypted: &[u8]) -> (Choice, usize) {
    let len = decrypted.len();
    let tail = decrypted.get(len.saturating_sub(BLOCK)..).unwrap_or_default();
    let n = tail.last().copied().unwrap_or(0);
    // 1 <= n <= 16 (the buffer holds at least one block, so n <= len).
    let mut ok =
        !n.ct_eq(&0) & !(BLOCK as u8).ct_lt(&n) & Choice::from(u8::from(tail.len() == BLOCK));
    for (i, &b) in tail.iter().rev().enumerate() {
        let in_padding = (i as u8).ct_lt(&n);
        ok &= !in_padding | b.ct_eq(&n);
    }
    let unpadded = (len as u64).wrapping_sub(u64::from(n));
    let plain = u64::conditional_select(&(len as u64), &unpadded, ok);
    (ok, usize::try_from(plain).unwrap_or(len))
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
    fn pkcs7_check_matches_the_definition() {
        for filler in [0u8, 1, 2, 15, 16, 17, 0xff] {
            for n in 0u8..=255 {
                let mut buf = [filler; 32];
                buf[31] = n;
                let n_us = usize::from(n);
                let valid = (1..=16).contains(&n_us) && buf[32 - n_us..].iter().all(|&b| b == n);
                let (ok, len) = strict_pkcs7_len(&buf);
                assert_eq!(bool::from(ok), valid, "filler {filler}, n {n}");
                assert_eq!(len, if valid { 32 - n_us } else { 32 }, "filler {filler}, n {n}");
            }
        }
    }

    #[test]
    fn freshness_is_checked_only_when_asked() {
        let now = 1_800_000_000_i64;
        let fresh = Freshness {
            now,
            max_age: std::time::Duration::from_secs(600),
            clock_skew: std::time::Duration::from_secs(300),
        };
        let at = |ts: Value| {
            let data = json!({"openId": "o", "watermark": {"appid": APP, "timestamp": ts}});
            let enc = encrypt_open_data(KEY, &data, IV).expect("encrypts");
            decrypt_open_data_fresh(KEY, &enc, IV, APP, Some(&fresh)).map(|_| ())
        };
        assert_eq!(at(json!(now)), Ok(()));
        assert_eq!(at(json!(now - 600)), Ok(()));
        assert_eq!(at(json!(now + 300)), Ok(()));
        assert_eq!(at(json!(now - 601)), Err(DecryptError::Stale));
        assert_eq!(at(json!(now + 301)), Err(DecryptError::Stale));
        assert_eq!(at(json!("1800000000")), Err(DecryptError::Stale));
        assert_eq!(at(json!(null)), Err(DecryptError::Stale));
        assert_eq!(at(json!(1.5e9)), Err(DecryptError::Stale));
        // No rule: WeChat's published 2017 sample must still decrypt.
        let enc = encrypt_open_data(KEY, &sample(), IV).expect("encrypts");
        assert!(decrypt_open_data_fresh(KEY, &enc, IV, APP, None).is_ok());
        assert_eq!(
            decrypt_open_data_fresh(KEY, &enc, IV, APP, Some(&fresh)),
            Err(DecryptError::Stale)
        );
    }

    #[test]
    fn only_failures_after_decryption_are_key_dependent() {
        let dependent = [
            DecryptError::BadPadding,
            DecryptError::NotJson,
            DecryptError::WatermarkMismatch,
            DecryptError::Stale,
        ];
        assert!(dependent.iter().all(DecryptError::is_key_dependent));
        let shape = [
            DecryptError::BadBase64 { field: "iv" },
            DecryptError::BadKeyLength(3),
            DecryptError::BadIvLength(3),
            DecryptError::BadCiphertextLength(3),
        ];
        assert!(!shape.iter().any(DecryptError::is_key_dependent));
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
