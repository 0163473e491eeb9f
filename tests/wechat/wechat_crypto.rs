//! Open-data decryption and push signatures over real values: WeChat's own
//! published sample, and data encrypted by the fake WeChat over HTTP.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use weapp_gateway::wechat::{
    DecryptError, FakeWeChat, Freshness, check_push_signature, decrypt_open_data,
    decrypt_open_data_fresh, encrypt_open_data,
};

const APP_ID: &str = "wx_crypto_test_app";
const SECRET: &str = "crypto-test-secret";

/// WeChat's published open-data sample (the `WXBizDataCrypt` demo). The
/// plaintext was checked independently with
/// `base64 -d | openssl enc -d -aes-128-cbc -K <key hex> -iv <iv hex>`.
mod wechat_sample {
    pub const APP_ID: &str = "wx4f4bc4dec97d474b";
    pub const SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
    pub const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
    pub const ENCRYPTED: &str = concat!(
        "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC",
        "+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poO",
        "FtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8",
        "xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB",
        "6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJd",
        "NiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOy",
        "uxINew==",
    );
    pub const PLAIN: &str = concat!(
        r#"{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","nickName":"Band","gender":1,"#,
        r#""language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","#,
        r#""avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0","#,
        r#""unionId":"ocMvos6NjeKLIBqg5Mr9QjxrP1FA","#,
        r#""watermark":{"timestamp":1477314187,"appid":"wx4f4bc4dec97d474b"}}"#,
    );
}

async fn setup() -> (FakeWeChat, SocketAddr, reqwest::Client) {
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.expect("fake wechat");
    let _ = rustls::crypto::ring::default_provider().install_default();
    (fake, addr, reqwest::Client::new())
}

async fn dev_encrypt(http: &reqwest::Client, addr: SocketAddr, body: Value) -> (u16, Value) {
    let resp =
        http.post(format!("http://{addr}/dev/encrypt")).json(&body).send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json answer"))
}

#[test]
fn wechat_published_sample_decrypts() {
    use wechat_sample::*;
    let value = decrypt_open_data(SESSION_KEY, ENCRYPTED, IV, APP_ID).expect("decrypts");
    let expected: Value = serde_json::from_str(PLAIN).expect("sample json");
    assert_eq!(value, expected);
    assert_eq!(value["openId"], "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
    assert_eq!(value["unionId"], "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
    assert_eq!(value["watermark"]["timestamp"], 1477314187);

    // The same data is refused for any other mini-program.
    assert_eq!(
        decrypt_open_data(SESSION_KEY, ENCRYPTED, IV, "wx_someone_else"),
        Err(DecryptError::WatermarkMismatch)
    );
    // A wrong iv garbles the first block only: the JSON no longer parses.
    let other_iv = STANDARD.encode([0u8; 16]);
    assert_eq!(
        decrypt_open_data(SESSION_KEY, ENCRYPTED, &other_iv, APP_ID),
        Err(DecryptError::NotJson)
    );
    // Truncating by one block breaks the padding.
    let bytes = STANDARD.decode(ENCRYPTED).expect("base64");
    let short = STANDARD.encode(&bytes[..bytes.len() - 16]);
    assert_eq!(decrypt_open_data(SESSION_KEY, &short, IV, APP_ID), Err(DecryptError::BadPadding));
    // Our encryption of the same object decrypts back to it with WeChat's key and iv.
    let ours = encrypt_open_data(SESSION_KEY, &expected, IV).expect("encrypts");
    assert_eq!(decrypt_open_data(SESSION_KEY, &ours, IV, APP_ID), Ok(expected));
}

/// With a freshness rule the 2016 sample is refused (as stale, a
/// key-dependent failure); within the rule's bounds it decrypts.
#[test]
fn wechat_published_sample_is_stale_under_a_freshness_rule() {
    use std::time::Duration;
    use wechat_sample::*;
    let rule = |now: i64| Freshness::new(now, Duration::from_secs(3600), Duration::from_secs(300));
    let today = rule(1_800_000_000);
    let err = decrypt_open_data_fresh(SESSION_KEY, ENCRYPTED, IV, APP_ID, Some(&today));
    assert_eq!(err, Err(DecryptError::Stale));
    assert!(DecryptError::Stale.is_key_dependent());
    let then = rule(1_477_314_187 + 60);
    assert!(decrypt_open_data_fresh(SESSION_KEY, ENCRYPTED, IV, APP_ID, Some(&then)).is_ok());
    // Written 10 minutes before its own timestamp: too far ahead of the skew.
    let early = rule(1_477_314_187 - 600);
    let err = decrypt_open_data_fresh(SESSION_KEY, ENCRYPTED, IV, APP_ID, Some(&early));
    assert_eq!(err, Err(DecryptError::Stale));
    // Another app's data stays a watermark mismatch, whatever its age.
    let err = decrypt_open_data_fresh(SESSION_KEY, ENCRYPTED, IV, "wx_other", Some(&today));
    assert_eq!(err, Err(DecryptError::WatermarkMismatch));
}

#[tokio::test]
async fn fake_encrypts_for_a_logged_in_user() {
    let (fake, addr, http) = setup().await;
    let minted = fake.mint_code("o-steps", None, None);
    let steps = json!({"stepInfoList": [{"timestamp": 1_700_000_000, "step": 8_848}]});
    let (status, sealed) =
        dev_encrypt(&http, addr, json!({"session_key": minted.session_key, "data": steps})).await;
    assert_eq!(status, 200, "{sealed}");
    let encrypted = sealed["encryptedData"].as_str().expect("encryptedData");
    let iv = sealed["iv"].as_str().expect("iv");
    assert_eq!(STANDARD.decode(iv).expect("iv base64").len(), 16);

    let value = decrypt_open_data(&minted.session_key, encrypted, iv, APP_ID).expect("decrypts");
    assert_eq!(value["stepInfoList"][0]["step"], 8_848);
    assert_eq!(value["watermark"]["appid"], APP_ID);
    assert!(value["watermark"]["timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000));

    // After a new wx.login() the session_key rotates: the old data no longer decrypts.
    let relogin = fake.mint_code("o-steps", Some(STANDARD.encode([0x5au8; 16])), None);
    let err = decrypt_open_data(&relogin.session_key, encrypted, iv, APP_ID).expect_err("stale");
    assert!(matches!(err, DecryptError::BadPadding | DecryptError::NotJson), "{err:?}");
}

#[tokio::test]
async fn fake_keeps_a_given_iv_and_watermark() {
    let (fake, addr, http) = setup().await;
    let key = STANDARD.encode(*b"0123456789abcdef");
    let iv = STANDARD.encode(*b"fedcba9876543210");
    let data = json!({"openGId": "g-1", "watermark": {"appid": "wx_other", "timestamp": 1}});
    let (status, sealed) =
        dev_encrypt(&http, addr, json!({"session_key": key, "data": data, "iv": iv})).await;
    assert_eq!(status, 200, "{sealed}");
    assert_eq!(sealed["iv"], iv);
    let encrypted = sealed["encryptedData"].as_str().expect("encryptedData");
    assert_eq!(
        decrypt_open_data(&key, encrypted, &iv, APP_ID),
        Err(DecryptError::WatermarkMismatch)
    );
    assert_eq!(decrypt_open_data(&key, encrypted, &iv, "wx_other").expect("decrypts"), data);
    // The direct method gives the same bytes as the endpoint.
    let direct = fake.encrypt_user_data(&key, data, &iv).expect("encrypts");
    assert_eq!(direct.encrypted_data, encrypted);
}

#[tokio::test]
async fn fake_rejects_bad_encrypt_requests() {
    let (_fake, addr, http) = setup().await;
    let key = STANDARD.encode([1u8; 16]);
    for body in [
        json!({"session_key": "short", "data": {}}),
        json!({"session_key": STANDARD.encode([1u8; 8]), "data": {}}),
        json!({"session_key": key, "data": {}, "iv": STANDARD.encode([1u8; 12])}),
        json!({"session_key": key, "data": [1, 2]}),
        json!({"session_key": key}),
    ] {
        let (status, answer) = dev_encrypt(&http, addr, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
}

#[test]
fn push_signature_over_real_values() {
    // `printf '%s\n' AAAAA 1409304348 1506816735 | LC_ALL=C sort | tr -d '\n' | sha1sum`,
    // computed outside this crate (token "AAAAA").
    let sig = "ddf97f236c7084ac7721fcace33ec1206a0b4398";
    assert!(check_push_signature("AAAAA", "1409304348", "1506816735", sig));
    // Sorting makes the check blind to which of timestamp/nonce is which.
    assert!(check_push_signature("AAAAA", "1506816735", "1409304348", sig));
    assert!(!check_push_signature("AAAAB", "1409304348", "1506816735", sig));
    assert!(!check_push_signature("AAAAA", "1409304349", "1506816735", sig));
    assert!(!check_push_signature("AAAAA", "1409304348", "1506816735", "not-a-signature"));
}
