//! Open data over real HTTP: decryption with the server-held session_key,
//! the unionId saved onto the session, and the phone number both ways; no
//! padding oracle (one answer for every key-dependent failure) and the
//! per-session failure budget that revokes.

use crate::support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use support::app::{APP_ID, AppOptions, StoreChoice, TestApp, encrypt_for, spawn_app};
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

    let store = RedisStore::new(RedisStoreConfig::new(url).with_prefix(prefix)).unwrap();
    let record = store.load(&SessionId::token(&user.token)).await.unwrap().expect("session");
    assert_eq!(record.unionid.as_deref(), Some("u_od"));
}

/// Status and the exact body bytes of a POST (the JSON `Answer` would hide
/// byte differences).
async fn raw_post(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, String) {
    let mut req = app.http.post(format!("{}{path}", app.base)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    (r.status().as_u16(), r.text().await.expect("body"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}

/// `plaintext` AES-128-CBC encrypted under `session_key` as it is: PKCS#7
/// padded when `pad`, else it must be whole blocks. Any bytes, not only JSON.
fn encrypt_raw(session_key: &str, plaintext: &[u8], pad: bool) -> Value {
    use aes::cipher::block_padding::{NoPadding, Pkcs7};
    use aes::cipher::{BlockEncryptMut, KeyIvInit};
    let key: [u8; 16] = unb64(session_key).try_into().expect("16-byte key");
    let iv = [0x42u8; 16];
    let mut buf = plaintext.to_vec();
    let len = buf.len();
    buf.resize(len + 16, 0);
    let enc = cbc::Encryptor::<aes::Aes128>::new(&key.into(), &iv.into());
    let out = if pad {
        enc.encrypt_padded_mut::<Pkcs7>(&mut buf, len).expect("pad")
    } else {
        enc.encrypt_padded_mut::<NoPadding>(&mut buf, len).expect("whole blocks")
    };
    json!({"encryptedData": b64(out), "iv": b64(&iv)})
}

/// The classic last-byte probe of a CBC padding oracle: the last byte of the
/// block before the last (the IV for a one-block ciphertext) set to each of
/// its 256 values, one of which is the original.
fn last_byte_probes(valid: &Value) -> Vec<Value> {
    let mut data = unb64(valid["encryptedData"].as_str().unwrap());
    let mut iv = unb64(valid["iv"].as_str().unwrap());
    (0..=255u8)
        .map(|v| {
            if data.len() >= 32 {
                let at = data.len() - 17;
                data[at] = v;
            } else {
                iv[15] = v;
            }
            json!({"encryptedData": b64(&data), "iv": b64(&iv)})
        })
        .collect()
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Builds a route's request body around one probe.
type ProbeBody = Box<dyn Fn(Value) -> Value>;

/// The probe learns nothing: on each route, every one of the 255 failing
/// answers is byte for byte the same.
#[tokio::test]
async fn a_padding_oracle_probe_learns_nothing() {
    let app = spawn_app(AppOptions::memory().with("open_data.max_decrypt_failures", 1_000)).await;
    let user = app.user("o_probe", "p").await;
    let valid = |data: Value| user.encrypt(data);
    let werun = valid(json!({"stepInfoList": []}));
    let routes: [(&str, Value, ProbeBody); 3] = [
        ("/applet/open-data/decrypt", valid(json!({"openId": "o_probe"})), Box::new(|p| p)),
        (
            "/applet/open-data/phone",
            valid(json!({"phoneNumber": "13700137000", "purePhoneNumber": "13700137000"})),
            Box::new(|p| p),
        ),
        (
            "/applet/pk/checkin",
            valid(json!({"openGId": "G_probe"})),
            // The original share decrypts; its WeRun data then has no entry for today.
            Box::new(move |p| json!({"share": p, "werun": werun.clone()})),
        ),
    ];
    for (path, valid, wrap) in routes {
        let mut failures = std::collections::BTreeMap::<(u16, String), u32>::new();
        let mut others = 0;
        for probe in last_byte_probes(&valid) {
            let (status, body) = raw_post(&app, path, &[user.auth()], &wrap(probe)).await;
            if body.contains("ERR_DECRYPT_FAILED") {
                *failures.entry((status, body)).or_default() += 1;
            } else {
                others += 1;
            }
        }
        assert_eq!(others, 1, "{path}: only the original byte decrypts");
        assert_eq!(failures.len(), 1, "{path}: the failing answers differ: {failures:#?}");
        let ((status, body), count) = failures.into_iter().next().unwrap();
        assert_eq!((status, count), (400, 255), "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["detail"], json!({}), "{path}: {body}");
    }
    // The session survived all of it (the budget was 1000).
    assert_eq!(app.token_me(&user.token).await.status, 200);
}

/// Bad padding, not JSON, not an object, another app's watermark, a stale,
/// future or missing timestamp: one answer, byte for byte.
#[tokio::test]
async fn every_key_dependent_failure_answers_alike() {
    let app = spawn_app(
        AppOptions::memory()
            .with("open_data.max_decrypt_failures", 1_000)
            .with("open_data.max_age", "1h")
            .with("open_data.clock_skew", "5m"),
    )
    .await;
    let user = app.user("o_alike", "a").await;
    let key = user.session_key.clone();
    let other_key = app.mint("o_other").session_key;
    let now = now_secs();
    let mark = |appid: &str, ts: Value| json!({"appid": appid, "timestamp": ts});
    let with_mark = |m: Value| user.encrypt(json!({"openId": "o_alike", "watermark": m}));
    let fresh = with_mark(mark(APP_ID, json!(now)));
    let a = app.post("/applet/open-data/decrypt", &[user.auth()], &fresh).await;
    assert_eq!(a.status, 200, "fresh data decrypts: {a:?}");
    let skewed = with_mark(mark(APP_ID, json!(now + 120)));
    let a = app.post("/applet/open-data/decrypt", &[user.auth()], &skewed).await;
    assert_eq!(a.status, 200, "a little ahead of our clock is fine: {a:?}");

    let mut bad_block = [b'x'; 16];
    bad_block[15] = 0; // never valid PKCS#7
    let cases = [
        ("bad padding", encrypt_raw(&key, &bad_block, false)),
        ("another key", encrypt_for(&other_key, json!({"openId": "o_alike"}), APP_ID)),
        ("not JSON", encrypt_raw(&key, b"definitely not JSON", true)),
        ("a JSON array", encrypt_raw(&key, br#"[1,2,3]"#, true)),
        ("a JSON string", encrypt_raw(&key, br#""text""#, true)),
        ("another app", with_mark(mark("wx_someone_else", json!(now)))),
        ("no watermark", encrypt_raw(&key, br#"{"openId":"o_alike"}"#, true)),
        ("stale", with_mark(mark(APP_ID, json!(now - 7_200)))),
        ("the 2023 sample age", with_mark(mark(APP_ID, json!(1_700_000_000)))),
        ("from the future", with_mark(mark(APP_ID, json!(now + 3_600)))),
        ("no timestamp", with_mark(json!({"appid": APP_ID}))),
        ("a text timestamp", with_mark(mark(APP_ID, json!(now.to_string())))),
    ];
    let mut answers = Vec::new();
    for (what, body) in &cases {
        let answer = raw_post(&app, "/applet/open-data/decrypt", &[user.auth()], body).await;
        answers.push((what, answer));
    }
    let (_, first) = &answers[0];
    assert_eq!(first.0, 400, "{first:?}");
    let envelope: Value = serde_json::from_str(&first.1).unwrap();
    assert_eq!(envelope["reason"], "ERR_DECRYPT_FAILED");
    assert_eq!(envelope["error"]["detail"], json!({}));
    assert!(envelope["error"]["message"].as_str().unwrap().contains("wx.login"), "{envelope}");
    for (what, answer) in &answers {
        assert_eq!(answer, first, "{what} answers differently");
    }

    // Malformed input (the same whatever the key) may say what is wrong, in
    // the same envelope, without a detail.
    for (what, body) in [
        ("bad base64", json!({"encryptedData": "***", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="})),
        ("short iv", json!({"encryptedData": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "AAAA"})),
        ("empty data", json!({"encryptedData": "", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="})),
    ] {
        let a = app.post("/applet/open-data/decrypt", &[user.auth()], &body).await;
        assert_eq!((a.status, a.reason()), (400, Some("ERR_DECRYPT_FAILED")), "{what}: {a:?}");
        assert_eq!(a.body["error"]["detail"], json!({}), "{what}");
        assert!(a.body["error"]["message"].as_str().unwrap().contains("malformed"), "{what}");
    }
    let a = app.post("/applet/open-data/decrypt", &[user.auth()], &json!({"iv": "x"})).await;
    assert_eq!((a.status, a.reason()), (400, Some("ERR_INVALID_REQUEST")));
    let a =
        app.post("/applet/open-data/decrypt", &[], &json!({"encryptedData": "a", "iv": "b"})).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_NOT_LOGGED_IN")));
}

/// Without `open_data.max_age` any age is accepted (WeChat's published
/// sample is from 2017).
#[tokio::test]
async fn old_data_decrypts_when_no_max_age_is_set() {
    let app = spawn_app(AppOptions::memory()).await;
    let user = app.user("o_old", "o").await;
    let old = user.encrypt(
        json!({"openId": "o_old", "watermark": {"appid": APP_ID, "timestamp": 1_477_314_187}}),
    );
    let a = app.post("/applet/open-data/decrypt", &[user.auth()], &old).await;
    assert_eq!(a.status, 200, "{a:?}");
}

/// The budget (default 5 per hour): the 6th key-dependent failure revokes the
/// session at once (L1 included) and answers ERR_SESSION_EXPIRED; successes
/// and malformed input do not count; a new login starts a new budget.
async fn the_budget_revokes_the_session(app: &TestApp, openid: &str) {
    let user = app.user(openid, "b").await;
    let other_key = app.mint("o_someone").session_key;
    let bad = encrypt_for(&other_key, json!({"openId": openid}), APP_ID);
    let good = user.encrypt(json!({"openId": openid}));
    let decrypt = |body: &Value, token: &str| {
        let body = body.clone();
        let token = token.to_owned();
        async move { app.post("/applet/open-data/decrypt", &[("X-WX-Skey", &token)], &body).await }
    };
    let failed =
        |a: &support::app::Answer| (a.status, a.reason()) == (400, Some("ERR_DECRYPT_FAILED"));
    assert_eq!(app.token_me(&user.token).await.status, 200); // into the L1, when on
    for i in 1..=4 {
        let a = decrypt(&bad, &user.token).await;
        assert!(failed(&a), "failure {i}: {a:?}");
    }
    for _ in 0..10 {
        assert_eq!(decrypt(&good, &user.token).await.status, 200, "successes never count");
    }
    let malformed = json!({"encryptedData": "AAAA", "iv": "AAAA"});
    for _ in 0..5 {
        assert!(failed(&decrypt(&malformed, &user.token).await), "malformed input never counts");
    }
    let a = decrypt(&bad, &user.token).await;
    assert!(failed(&a), "failure 5 is still within the budget: {a:?}");
    assert_eq!(app.token_me(&user.token).await.status, 200);

    let a = decrypt(&bad, &user.token).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_SESSION_EXPIRED")), "failure 6: {a:?}");
    let me = app.token_me(&user.token).await;
    assert_eq!((me.status, me.reason()), (401, Some("ERR_SESSION_EXPIRED")), "revoked: {me:?}");
    let a = decrypt(&good, &user.token).await;
    assert_eq!(a.status, 401, "not even valid data is served on a revoked session: {a:?}");

    // A fresh login works again, with a budget of its own.
    let again = app.user(openid, "b").await;
    assert_eq!(app.token_me(&again.token).await.status, 200);
    let good = again.encrypt(json!({"openId": openid}));
    assert_eq!(decrypt(&good, &again.token).await.status, 200);
    assert!(failed(&decrypt(&bad, &again.token).await));
}

#[tokio::test]
async fn the_budget_revokes_on_the_memory_store() {
    let app = spawn_app(AppOptions::memory()).await;
    the_budget_revokes_the_session(&app, "o_budget_mem").await;
}

#[tokio::test]
async fn the_budget_revokes_on_the_memory_store_with_the_l1_on() {
    let app =
        spawn_app(AppOptions::memory().with("session.l1", true).with("session.l1_ttl", "60s"))
            .await;
    the_budget_revokes_the_session(&app, "o_budget_l1").await;
}

/// The budget follows the session_key, not the session: a new login that
/// WeChat answers with the same key keeps the budget the last one used up.
#[tokio::test]
async fn the_budget_follows_the_session_key_across_logins() {
    let app = spawn_app(AppOptions::redis("open_data_same_key")).await;
    let login = |key: Option<String>| {
        let app = &app;
        async move {
            let minted = app.fake.mint_code("o_same_key", key, None);
            let a = app.token_login(&json!({"code": minted.code})).await;
            assert_eq!(a.status, 200, "{a:?}");
            (a.body["token"].as_str().unwrap().to_owned(), minted.session_key)
        }
    };
    let bad = encrypt_for(&app.mint("o_w").session_key, json!({}), APP_ID);
    let decrypt = |token: String| {
        let (app, bad) = (&app, &bad);
        async move { app.post("/applet/open-data/decrypt", &[("X-WX-Skey", &token)], bad).await }
    };
    let (first, key) = login(None).await;
    for i in 1..=5 {
        assert_eq!(decrypt(first.clone()).await.reason(), Some("ERR_DECRYPT_FAILED"), "{i}");
    }
    let (second, same) = login(Some(key.clone())).await;
    assert_eq!(same, key);
    let a = decrypt(second.clone()).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_SESSION_EXPIRED")), "{a:?}");
    assert_eq!(app.token_me(&second).await.status, 401);
    // A new key has a budget of its own.
    let (third, _) = login(None).await;
    assert_eq!(decrypt(third.clone()).await.reason(), Some("ERR_DECRYPT_FAILED"));
    assert_eq!(app.token_me(&third).await.status, 200);
}

/// compat dialect (`X-WX-Code`), L1 on: the budget revokes the code's
/// session and evicts it; the spent code cannot log in again.
#[tokio::test]
async fn the_budget_revokes_a_compat_session() {
    let app =
        spawn_app(AppOptions::memory().with("session.l1", true).with("session.l1_ttl", "60s"))
            .await;
    let minted = app.mint("o_budget_compat");
    let raw = support::app::raw_data("c");
    let signature = support::app::sign(&raw, &minted.session_key);
    assert_eq!(app.compat_login(&minted.code, &raw, &signature).await.status, 200);
    assert_eq!(app.compat_me(&minted.code).await.status, 200);
    let bad = encrypt_for(&app.mint("o_z").session_key, json!({}), APP_ID);
    let auth = [("X-WX-Code", minted.code.as_str())];
    for i in 1..=5 {
        let a = app.post("/applet/open-data/decrypt", &auth, &bad).await;
        assert_eq!(a.reason(), Some("ERR_DECRYPT_FAILED"), "failure {i}: {a:?}");
    }
    let a = app.post("/applet/open-data/phone", &auth, &bad).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_SESSION_EXPIRED")), "{a:?}");
    assert_eq!(app.compat_me(&minted.code).await.status, 401);
    let again = app.compat_login(&minted.code, &raw, &signature).await;
    assert_eq!(again.status, 401, "the code is spent: {again:?}");
}

#[tokio::test]
async fn the_budget_revokes_on_redis_for_every_instance() {
    let url = support::redis::shared_redis_url();
    let prefix = support::redis::unique_prefix("open_data_budget");
    let shared = || {
        AppOptions {
            store: StoreChoice::Redis { url: url.clone(), prefix: prefix.clone() },
            extra: vec![],
            clock: None,
        }
        .with("session.l1", true)
        .with("session.l1_ttl", "60s")
    };
    let one = spawn_app(shared()).await;
    the_budget_revokes_the_session(&one, "o_budget_redis").await;

    // Two instances (without L1: another instance's L1 would serve the
    // revoked session until its TTL, as documented) share one budget.
    let no_l1 = || AppOptions {
        store: StoreChoice::Redis { url: url.clone(), prefix: prefix.clone() },
        extra: vec![],
        clock: None,
    };
    let one = spawn_app(no_l1()).await;
    let two = spawn_app(no_l1().with("wechat.api_base", format!("http://{}", one.fake_addr))).await;
    let user = one.user("o_budget_shared", "s").await;
    let bad = encrypt_for(&one.mint("o_x").session_key, json!({}), APP_ID);
    for app in [&one, &two, &one, &two, &one] {
        let a = app.post("/applet/open-data/decrypt", &[user.auth()], &bad).await;
        assert_eq!(a.reason(), Some("ERR_DECRYPT_FAILED"), "{a:?}");
    }
    let a =
        two.post("/applet/pk/checkin", &[user.auth()], &json!({"share": bad, "werun": bad})).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_SESSION_EXPIRED")), "{a:?}");
    assert_eq!(one.token_me(&user.token).await.status, 401);
}

/// A budget that cannot be checked is never answered with the failure:
/// with Redis down (the session served from the L1), a failing decryption
/// answers 503; valid data still decrypts (it needs no count).
#[tokio::test]
async fn a_store_outage_while_counting_answers_503() {
    let mut redis = support::redis::RedisServer::start();
    let app = spawn_app(
        AppOptions::redis_at(redis.url(), "open_data_outage")
            .with("session.l1", true)
            .with("session.l1_ttl", "60s"),
    )
    .await;
    let user = app.user("o_outage", "o").await;
    assert_eq!(app.token_me(&user.token).await.status, 200); // into the L1
    let bad = encrypt_for(&app.mint("o_y").session_key, json!({}), APP_ID);
    let good = user.encrypt(json!({"openId": "o_outage"}));
    redis.stop();
    let a = app.post("/applet/open-data/decrypt", &[user.auth()], &bad).await;
    assert_eq!((a.status, a.reason()), (503, Some("ERR_SESSION_STORE_UNAVAILABLE")), "{a:?}");
    let a = app.post("/applet/open-data/decrypt", &[user.auth()], &good).await;
    assert_eq!(a.status, 200, "{a:?}");
}

/// A unionId from decrypted data is saved only onto a session without one,
/// and only when the data's openId is the session's own.
#[tokio::test]
async fn a_union_id_is_saved_only_for_the_own_openid_and_never_overwritten() {
    let url = support::redis::shared_redis_url();
    let prefix = support::redis::unique_prefix("open_data_union");
    let app = spawn_app(AppOptions {
        store: StoreChoice::Redis { url: url.clone(), prefix: prefix.clone() },
        extra: vec![],
        clock: None,
    })
    .await;
    let store = RedisStore::new(RedisStoreConfig::new(url).with_prefix(prefix)).unwrap();
    let stored = |token: String| {
        let store = &store;
        async move { store.load(&SessionId::token(&token)).await.unwrap().expect("session").unionid }
    };

    // Someone else's data (another openId): answered, but not saved.
    let attacker = app.user("o_attacker", "a").await;
    let victims = attacker.encrypt(json!({"openId": "o_victim", "unionId": "u_victim"}));
    let a = app.post("/applet/open-data/decrypt", &[attacker.auth()], &victims).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(stored(attacker.token.clone()).await, None);
    let no_openid = attacker.encrypt(json!({"unionId": "u_victim"}));
    let a = app.post("/applet/open-data/decrypt", &[attacker.auth()], &no_openid).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(stored(attacker.token.clone()).await, None);

    // The own openId on a session without one: saved.
    let own = attacker.encrypt(json!({"openId": "o_attacker", "unionId": "u_attacker"}));
    let a = app.post("/applet/open-data/decrypt", &[attacker.auth()], &own).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(stored(attacker.token.clone()).await.as_deref(), Some("u_attacker"));

    // jscode2session's unionid is never overwritten.
    let minted = app.fake.mint_code("o_has_union", None, Some("u_from_wechat".into()));
    let raw = json!({"nickName": "h"}).to_string();
    let login = app
        .token_login(&json!({"code": minted.code, "rawData": raw, "signature": support::app::sign(&raw, &minted.session_key)}))
        .await;
    assert_eq!(login.status, 200, "{login:?}");
    let token = login.body["token"].as_str().unwrap().to_owned();
    assert_eq!(stored(token.clone()).await.as_deref(), Some("u_from_wechat"));
    let other = encrypt_for(
        &minted.session_key,
        json!({"openId": "o_has_union", "unionId": "u_other"}),
        APP_ID,
    );
    let a = app.post("/applet/open-data/decrypt", &[("X-WX-Skey", &token)], &other).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(stored(token).await.as_deref(), Some("u_from_wechat"));
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

/// POST `faults` to the fake's `/dev/faults`, as an operator would.
async fn set_faults(app: &support::app::TestApp, faults: serde_json::Value) {
    let r = app
        .http
        .post(format!("http://{}/dev/faults", app.fake_addr))
        .json(&faults)
        .send()
        .await
        .expect("POST /dev/faults");
    assert!(r.status().is_success(), "{}", r.status());
}

/// POST a fresh phone code to `/applet/open-data/phone`.
async fn phone(app: &support::app::TestApp, user: &support::app::User) -> support::app::Answer {
    let code = app.fake.mint_phone_code("13800138000", "86");
    app.post("/applet/open-data/phone", &[user.auth()], &json!({"code": code})).await
}

fn assert_wechat_failed(a: &support::app::Answer, status: u16, detail: serde_json::Value) {
    assert_eq!((a.status, a.reason()), (status, Some("ERR_WECHAT_API_FAILED")), "{a:?}");
    assert_eq!(a.body["error"]["detail"], detail, "{a:?}");
}

/// The fake answers HTTP 500, then stays busy: the phone route says 502, then 503.
async fn unreachable_then_busy_fail(app: &support::app::TestApp, user: &support::app::User) {
    set_faults(app, json!({"http_500": true})).await;
    assert_wechat_failed(&phone(app, user).await, 502, json!({}));
    set_faults(app, json!({"busy": 2})).await;
    assert_wechat_failed(
        &phone(app, user).await,
        503,
        json!({"errcode": -1, "errmsg": "system error"}),
    );
}

#[tokio::test]
async fn phone_route_answers_502_503_504_when_wechat_fails() {
    let app = spawn_app(AppOptions::redis("phone_faults").with("wechat.timeout", "1s")).await;
    let user = app.user("o_phone_faults", "f").await;
    // The token's own call fails: the same statuses.
    unreachable_then_busy_fail(&app, &user).await;
    set_faults(&app, json!({})).await;
    assert_eq!(phone(&app, &user).await.status, 200);

    // With a token at hand, getuserphonenumber itself fails.
    let stable = || app.fake.stats().calls_to(weapp_gateway::wechat::STABLE_TOKEN);
    let tokens_before = stable();
    unreachable_then_busy_fail(&app, &user).await;
    set_faults(&app, json!({"delay_ms": 1_500})).await;
    let started = std::time::Instant::now();
    assert_wechat_failed(&phone(&app, &user).await, 504, json!({}));
    assert!(started.elapsed() < Duration::from_millis(1_400), "{:?}", started.elapsed());
    assert_eq!(stable(), tokens_before, "the token was not what failed");
    set_faults(&app, json!({})).await;
    assert_eq!(phone(&app, &user).await.status, 200);
}

/// A WeChat API that hands out access tokens and rejects every one of them
/// on `getuserphonenumber` (40001), as when another party keeps forcing a
/// refresh. Returns its address and the counts of (stable_token, phone) calls.
async fn token_rejecting_wechat() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let (tokens, phones) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (t, p) = (tokens.clone(), phones.clone());
    let router = axum::Router::new()
        .route(
            "/cgi-bin/stable_token",
            axum::routing::post(move || {
                let n = t.fetch_add(1, Ordering::SeqCst) + 1;
                async move { axum::Json(json!({"access_token": format!("tok-{n}"), "expires_in": 7200})) }
            }),
        )
        .route(
            "/wxa/business/getuserphonenumber",
            axum::routing::post(move || {
                p.fetch_add(1, Ordering::SeqCst);
                async {
                    axum::Json(json!({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, tokens, phones)
}

#[tokio::test]
async fn access_token_failures_are_the_gateways_fault_not_the_requests() {
    use std::sync::atomic::Ordering;
    // Two gateways share the sessions: the user logs in on a healthy one.
    let url = support::redis::shared_redis_url();
    let prefix = support::redis::unique_prefix("phone_token");
    let shared = || AppOptions {
        store: StoreChoice::Redis { url: url.clone(), prefix: prefix.clone() },
        extra: vec![],
        clock: None,
    };
    let healthy = spawn_app(shared()).await;
    let user = healthy.user("o_phone_token", "t").await;

    // A wrong AppSecret: stable_token answers 40125, whatever the code.
    let wrong = spawn_app(shared().with("wechat.app_secret", "not-the-app-secret")).await;
    let code = wrong.fake.mint_phone_code("13800138000", "86");
    let a = wrong.post("/applet/open-data/phone", &[user.auth()], &json!({"code": code})).await;
    assert_wechat_failed(&a, 502, json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
    assert!(!a.body.to_string().contains("not-the-app-secret"), "{a:?}");

    // WeChat rejects even the refreshed token (40001 after the one retry).
    let (addr, tokens, phones) = token_rejecting_wechat().await;
    let rejecting = spawn_app(shared().with("wechat.api_base", format!("http://{addr}"))).await;
    let a = rejecting.post("/applet/open-data/phone", &[user.auth()], &json!({"code": "c"})).await;
    assert_eq!(a.status, 502, "{a:?}");
    assert_eq!(a.body["error"]["detail"]["errcode"], 40001, "{a:?}");
    assert_eq!((tokens.load(Ordering::SeqCst), phones.load(Ordering::SeqCst)), (2, 2));

    // A bad code is the request's fault: still 400.
    let a = healthy.post("/applet/open-data/phone", &[user.auth()], &json!({"code": "nope"})).await;
    assert_wechat_failed(&a, 400, json!({"errcode": 40029, "errmsg": "invalid code"}));
}
