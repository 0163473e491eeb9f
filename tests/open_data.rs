//! Open data over real HTTP: decryption with the server-held session_key,
//! the unionId saved onto the session, and the phone number both ways.

mod support;

use std::time::Duration;

use serde_json::json;
use support::app::{AppOptions, StoreChoice, encrypt_for, spawn_app};
use weapp_gateway::session::SessionStore;
use weapp_gateway::session::store::{RedisStore, RedisStoreConfig, SessionId};

#[tokio::test]
async fn decrypts_with_the_session_key_and_saves_the_union_id() {
    let url = support::redis::shared_redis_url();
    let prefix = support::redis::unique_prefix("open_data");
    let app = spawn_app(AppOptions {
        store: StoreChoice::Redis { url: url.clone(), prefix: prefix.clone() },
        extra: vec![],
        clock: None,
    })
    .await;
    let user = app.user("o_od", "欧迪").await;
    let body = user.encrypt(json!({"openId": "o_od", "unionId": "u_od", "nickName": "欧迪"}));
    let a = app.post("/applet/open-data/decrypt", &[user.auth()], &body).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["data"]["unionId"], "u_od");
    assert_eq!(a.body["data"]["nickName"], "欧迪");

    let store =
        RedisStore::new(RedisStoreConfig { url, prefix, op_timeout: Duration::from_secs(2) })
            .unwrap();
    let record = store.load(&SessionId::token(&user.token)).await.unwrap().expect("session");
    assert_eq!(record.unionid.as_deref(), Some("u_od"));
}

#[tokio::test]
async fn decrypt_failures_say_log_in_again() {
    let app = spawn_app(AppOptions::redis("open_data_fail")).await;
    let user = app.user("o_odf", "f").await;
    let other_key = app.mint("o_other").session_key;
    let cases = [
        (
            "another key",
            encrypt_for(&other_key, json!({"a": 1}), support::app::APP_ID),
            "bad_padding",
            true,
        ),
        (
            "another app",
            encrypt_for(&user.session_key, json!({"a": 1}), "wx_someone_else"),
            "watermark_mismatch",
            false,
        ),
        (
            "bad base64",
            json!({"encryptedData": "***", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="}),
            "bad_base64",
            false,
        ),
        (
            "short iv",
            json!({"encryptedData": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "AAAA"}),
            "bad_iv_length",
            false,
        ),
        (
            "empty data",
            json!({"encryptedData": "", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="}),
            "bad_ciphertext_length",
            false,
        ),
    ];
    for (what, body, kind, log_in_again) in cases {
        let a = app.post("/applet/open-data/decrypt", &[user.auth()], &body).await;
        assert_eq!(
            (a.status, a.reason()),
            (400, Some("ERR_DECRYPT_FAILED")),
            "{what}: {:?}",
            a.body
        );
        assert_eq!(a.body["error"]["detail"]["kind"], kind, "{what}");
        // Only a key mismatch (a rotated session_key) tells the client to log in again.
        let message = a.body["error"]["message"].as_str().unwrap();
        assert_eq!(message.contains("wx.login"), log_in_again, "{what}: {message}");
    }
    let a = app.post("/applet/open-data/decrypt", &[user.auth()], &json!({"iv": "x"})).await;
    assert_eq!((a.status, a.reason()), (400, Some("ERR_INVALID_REQUEST")));
    let a =
        app.post("/applet/open-data/decrypt", &[], &json!({"encryptedData": "a", "iv": "b"})).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_NOT_LOGGED_IN")));
}

#[tokio::test]
async fn phone_number_by_code_and_by_encrypted_data() {
    let app = spawn_app(AppOptions::redis("phone")).await;
    let user = app.user("o_phone", "p").await;
    let code = app.fake.mint_phone_code("13800138000", "86");
    let a = app.post("/applet/open-data/phone", &[user.auth()], &json!({"code": code})).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["phoneInfo"]["purePhoneNumber"], "13800138000");
    assert_eq!(a.body["phoneInfo"]["countryCode"], "86");
    // Used once; the access token was fetched once and reused.
    let again = app.fake.mint_phone_code("13900139000", "86");
    let b = app.post("/applet/open-data/phone", &[user.auth()], &json!({"code": again})).await;
    assert_eq!(b.body["phoneInfo"]["purePhoneNumber"], "13900139000");
    assert_eq!(app.fake.stats().calls_to(weapp_gateway::wechat::STABLE_TOKEN), 1);

    let bad = app.post("/applet/open-data/phone", &[user.auth()], &json!({"code": "nope"})).await;
    assert_eq!((bad.status, bad.reason()), (400, Some("ERR_WECHAT_API_FAILED")));
    assert_eq!(bad.body["error"]["detail"]["errcode"], 40029);

    let old = user.encrypt(json!({"phoneNumber": "+8613700137000", "purePhoneNumber": "13700137000", "countryCode": "86"}));
    let c = app.post("/applet/open-data/phone", &[user.auth()], &old).await;
    assert_eq!(c.status, 200, "{:?}", c.body);
    assert_eq!(c.body["phoneInfo"]["purePhoneNumber"], "13700137000");
}
