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
