//! The compat dialect (weapp-session 0.3 headers) over real HTTP, against a
//! real redis-server and the fake WeChat.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::app::{AppOptions, TestApp, encode_uri_component, raw_data, sign, spawn_app};
use weapp_gateway::wechat::Faults;

const MAGIC: &str = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A";

async fn redis_app(test: &str) -> TestApp {
    spawn_app(AppOptions::redis(test)).await
}

#[tokio::test]
async fn login_then_code_only_with_chinese_and_plus_in_raw_data() {
    for app in [redis_app("compat_login").await, spawn_app(AppOptions::memory()).await] {
        let minted = app.mint("o_alice");
        let raw = raw_data("张三+李四 🐼");
        let sig = sign(&raw, &minted.session_key);
        let first = app.compat_login(&minted.code, &raw, &sig).await;
        assert_eq!(first.status, 200, "{:?}", first.body);
        assert_eq!(first.body["nickName"], "张三+李四 🐼");
        assert_eq!(first.body["avatarUrl"], "https://thirdwx.qlogo.cn/mmopen/vi_32/abc+def/132");
        assert_eq!(first.body["openId"], "o_alice");
        assert!(first.body.get("session_key").is_none());
        assert!(!first.body.to_string().contains(&minted.session_key));

        let later = app.compat_me(&minted.code).await;
        assert_eq!(later.status, 200);
        assert_eq!(later.body, first.body);
        assert_eq!(app.exchanges(), 1);
    }
}

#[tokio::test]
async fn envelope_has_the_magic_key_reason_and_error_object() {
    let app = redis_app("envelope").await;
    let a = app.compat_me("never-issued").await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body[MAGIC], 1);
    assert_eq!(a.body["reason"], "ERR_SESSION_EXPIRED");
    assert_eq!(a.body["error"]["name"], "SessionError");
    assert!(a.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(a.body["error"]["detail"].is_object());
}

#[tokio::test]
async fn no_code_passes_through_without_identity() {
    let app = redis_app("no_code").await;
    let a = app.get("/applet/session/me", &[]).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_NOT_LOGGED_IN")));
    let a = app.get("/applet/session/me", &[("X-WX-Code", "")]).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_NOT_LOGGED_IN")));
    // Ignored paths are not touched even with garbage credentials.
    let a = app.get("/healthz", &[("X-WX-Code", "garbage"), ("X-WX-Skey", "nope")]).await;
    assert_eq!(a.status, 200);
    let a = app.get("/nope", &[]).await;
    assert_eq!((a.status, a.reason()), (404, Some("ERR_NOT_FOUND")));
}

#[tokio::test]
async fn openid_sent_as_code_matches_nothing() {
    let app = redis_app("hijack").await;
    let victim = app.mint("o_victim");
    let raw = raw_data("victim");
    let ok = app.compat_login(&victim.code, &raw, &sign(&raw, &victim.session_key)).await;
    assert_eq!(ok.status, 200);
    for attempt in ["o_victim", "openid:o_victim", "code:o_victim"] {
        let a = app.compat_me(attempt).await;
        assert_eq!((a.status, a.reason()), (401, Some("ERR_SESSION_EXPIRED")), "{attempt}");
        assert!(!a.body.to_string().contains(&victim.code));
    }
}

#[tokio::test]
async fn bad_signature_shape_or_missing_signature_spends_no_code() {
    let app = redis_app("sig_shape").await;
    let minted = app.mint("o_bob");
    let raw = encode_uri_component(&raw_data("bob"));
    for sig in [None, Some(" "), Some("abc"), Some(&*"z".repeat(40)), Some(&*"a".repeat(41))] {
        let mut headers = vec![("X-WX-Code", minted.code.as_str()), ("X-WX-RawData", raw.as_str())];
        if let Some(s) = sig {
            headers.push(("X-WX-Signature", s));
        }
        let a = app.get("/applet/session/me", &headers).await;
        assert_eq!((a.status, a.reason()), (401, Some("ERR_UNTRUSTED_RAW_DATA")), "{sig:?}");
    }
    assert_eq!(app.exchanges(), 0);
    // The code is still good for a proper login afterwards.
    let raw = raw_data("bob");
    let ok = app.compat_login(&minted.code, &raw, &sign(&raw, &minted.session_key)).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn invalid_raw_data_is_400_before_any_exchange() {
    let app = redis_app("raw_invalid").await;
    let minted = app.mint("o_carol");
    let sig = "a".repeat(40);
    for raw in ["%E5%BC", "%zz", "%7B"] {
        let a = app
            .get(
                "/applet/session/me",
                &[("X-WX-Code", &minted.code), ("X-WX-RawData", raw), ("X-WX-Signature", &sig)],
            )
            .await;
        assert_eq!((a.status, a.reason()), (400, Some("ERR_INVALID_RAW_DATA")), "{raw}");
    }
    for raw in ["[1,2]", "\"text\"", "42", "not json"] {
        let a = app.compat_login(&minted.code, raw, &sig).await;
        assert_eq!((a.status, a.reason()), (400, Some("ERR_INVALID_RAW_DATA")), "{raw}");
    }
    // rawData sent as raw UTF-8 instead of encodeURIComponent: an error, not
    // a code-only request answered ERR_SESSION_EXPIRED.
    let a = app
        .get(
            "/applet/session/me",
            &[
                ("X-WX-Code", &minted.code),
                ("X-WX-RawData", r#"{"nickName":"小明"}"#),
                ("X-WX-Signature", &sig),
            ],
        )
        .await;
    assert_eq!((a.status, a.reason()), (400, Some("ERR_INVALID_RAW_DATA")));
    assert_eq!(app.exchanges(), 0);
}

#[tokio::test]
async fn wrong_signature_is_untrusted_and_creates_no_session() {
    let app = redis_app("sig_wrong").await;
    let minted = app.mint("o_dave");
    let raw = raw_data("dave");
    let a = app.compat_login(&minted.code, &raw, &sign(&raw, "not-the-key")).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_UNTRUSTED_RAW_DATA")));
    let a = app.compat_me(&minted.code).await;
    assert_eq!(a.reason(), Some("ERR_SESSION_EXPIRED"));
}

#[tokio::test]
async fn unknown_or_used_code_is_an_exchange_failure_with_wechat_detail() {
    let app = redis_app("exchange_fail").await;
    let raw = raw_data("eve");
    let a = app.compat_login("not-a-minted-code", &raw, &"a".repeat(40)).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_SESSION_KEY_EXCHANGE_FAILED")));
    assert_eq!(a.body["error"]["detail"]["errcode"], 40029);
    assert!(a.body["error"]["detail"]["errmsg"].is_string());
}

#[tokio::test]
async fn fifty_concurrent_first_requests_cause_one_exchange() {
    let app = redis_app("single_flight").await;
    let minted = app.mint("o_frank");
    let raw = raw_data("frank");
    let sig = sign(&raw, &minted.session_key);
    let answers =
        futures_util::future::join_all((0..50).map(|_| app.compat_login(&minted.code, &raw, &sig)))
            .await;
    for a in &answers {
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.body["openId"], "o_frank");
    }
    assert_eq!(app.exchanges(), 1);
}

#[tokio::test]
async fn retry_after_success_is_served_without_a_second_exchange() {
    let app = redis_app("retry").await;
    let minted = app.mint("o_grace");
    let raw = raw_data("grace");
    let sig = sign(&raw, &minted.session_key);
    assert_eq!(app.compat_login(&minted.code, &raw, &sig).await.status, 200);
    assert_eq!(app.compat_login(&minted.code, &raw, &sig).await.status, 200);
    assert_eq!(app.exchanges(), 1);
    // A retry with a signature that does not match the stored key is refused.
    let forged = raw_data("mallory");
    let a = app.compat_login(&minted.code, &forged, &sign(&forged, "guess")).await;
    assert_eq!(a.reason(), Some("ERR_UNTRUSTED_RAW_DATA"));
    assert_eq!(app.exchanges(), 1);
}

#[tokio::test]
async fn a_retry_on_another_instance_is_served_from_the_shared_store() {
    let url = support::redis::shared_redis_url();
    let prefix = support::redis::unique_prefix("two_instances");
    let a = spawn_app(AppOptions {
        store: support::app::StoreChoice::Redis { url: url.clone(), prefix: prefix.clone() },
        extra: vec![],
        clock: None,
    })
    .await;
    let b = spawn_app(AppOptions {
        store: support::app::StoreChoice::Redis { url, prefix },
        extra: vec![],
        clock: None,
    })
    .await;
    let minted = a.mint("o_multi");
    let raw = raw_data("multi");
    let sig = sign(&raw, &minted.session_key);
    assert_eq!(a.compat_login(&minted.code, &raw, &sig).await.status, 200);
    let on_b = b.compat_login(&minted.code, &raw, &sig).await;
    assert_eq!(on_b.status, 200, "{:?}", on_b.body);
    assert_eq!(b.compat_me(&minted.code).await.status, 200);
    assert_eq!(a.exchanges() + b.exchanges(), 1);
}

#[tokio::test]
async fn relogin_revokes_the_previous_session() {
    let app = redis_app("relogin").await;
    let raw = raw_data("henry");
    let first = app.mint("o_henry");
    let second = app.mint("o_henry");
    assert_eq!(
        app.compat_login(&first.code, &raw, &sign(&raw, &first.session_key)).await.status,
        200
    );
    assert_eq!(
        app.compat_login(&second.code, &raw, &sign(&raw, &second.session_key)).await.status,
        200
    );
    assert_eq!(app.compat_me(&first.code).await.reason(), Some("ERR_SESSION_EXPIRED"));
    assert_eq!(app.compat_me(&second.code).await.status, 200);
}

#[tokio::test]
async fn slow_wechat_gives_504_within_the_timeout_and_500_gives_502() {
    let app = redis_app("wechat_faults").await;
    let raw = raw_data("ivan");
    let minted = app.mint("o_ivan");
    app.fake.set_faults(Faults::default().with_delay_ms(4_000));
    let started = Instant::now();
    let a = app.compat_login(&minted.code, &raw, &sign(&raw, &minted.session_key)).await;
    assert_eq!((a.status, a.reason()), (504, Some("ERR_SESSION_KEY_EXCHANGE_FAILED")));
    assert!(started.elapsed() < Duration::from_millis(3_500), "{:?}", started.elapsed());

    let minted = app.mint("o_ivan");
    app.fake.set_faults(Faults::default().with_http_500());
    let a = app.compat_login(&minted.code, &raw, &sign(&raw, &minted.session_key)).await;
    assert_eq!((a.status, a.reason()), (502, Some("ERR_SESSION_KEY_EXCHANGE_FAILED")));

    // Still busy after the one retry: WeChat's trouble, an honest 503.
    let minted = app.mint("o_ivan");
    app.fake.set_faults(Faults::default().with_busy(5));
    let a = app.compat_login(&minted.code, &raw, &sign(&raw, &minted.session_key)).await;
    assert_eq!((a.status, a.reason()), (503, Some("ERR_SESSION_KEY_EXCHANGE_FAILED")));
    assert_eq!(a.body["error"]["detail"]["errcode"], -1);

    // A busy WeChat (errcode -1) is retried once and then succeeds.
    let minted = app.mint("o_ivan");
    app.fake.set_faults(Faults::default().with_busy(1));
    let a = app.compat_login(&minted.code, &raw, &sign(&raw, &minted.session_key)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_client() {
    let app = spawn_app(
        AppOptions::redis("rate")
            .with("session.login_rate_limit", json!({"per_minute": 1, "burst": 2})),
    )
    .await;
    let raw = raw_data("judy");
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let minted = app.mint("o_judy");
        let a = app.compat_login(&minted.code, &raw, &sign(&raw, &minted.session_key)).await;
        reasons.push((a.status, a.reason().map(str::to_owned)));
    }
    assert_eq!(reasons[0].0, 200);
    assert_eq!(reasons[1].0, 200);
    assert_eq!(reasons[2], (429, Some("ERR_TOO_MANY_REQUESTS".to_owned())));
    assert_eq!(app.exchanges(), 2);
}

#[tokio::test]
async fn a_used_code_cannot_revive_a_session_or_become_a_token() {
    let app = redis_app("spent_code").await;
    let minted = app.mint("o_spent");
    let raw = raw_data("spent");
    let sig = sign(&raw, &minted.session_key);
    assert_eq!(app.compat_login(&minted.code, &raw, &sig).await.status, 200);
    // The same code cannot be turned into a token.
    let t = app.token_login(&json!({"code": minted.code})).await;
    assert_eq!((t.status, t.reason()), (401, Some("ERR_SESSION_KEY_EXCHANGE_FAILED")));
    assert_eq!(t.body["error"]["detail"]["errcode"], 40163);
    // After logout, resending the first request does not bring the session back.
    let out =
        app.post("/applet/session/logout", &[("X-WX-Code", &minted.code)], &json!(null)).await;
    assert_eq!(out.status, 200);
    let again = app.compat_login(&minted.code, &raw, &sig).await;
    assert_eq!((again.status, again.reason()), (401, Some("ERR_SESSION_KEY_EXCHANGE_FAILED")));
    assert_eq!(app.compat_me(&minted.code).await.reason(), Some("ERR_SESSION_EXPIRED"));
    // And a token login's code cannot be used as a compat code.
    let m2 = app.mint("o_spent");
    assert_eq!(app.token_login(&json!({"code": m2.code})).await.status, 200);
    let c = app.compat_login(&m2.code, &raw, &sign(&raw, &m2.session_key)).await;
    assert_eq!(c.body["error"]["detail"]["errcode"], 40163);
    assert_eq!(app.exchanges(), 2);
}

#[tokio::test]
async fn a_code_spent_while_its_clients_hang_up_still_logs_in_on_retry() {
    let app = spawn_app(AppOptions::memory()).await;
    let minted = app.mint("o_hangup");
    let raw = raw_data("hangup");
    let sig = sign(&raw, &minted.session_key);
    // WeChat spends the code at once and answers 1.2 s later.
    app.fake.set_faults(Faults::default().with_answer_delay_ms(1_200));
    let head = format!(
        "GET /applet/session/me HTTP/1.1\r\nX-WX-Code: {}\r\nX-WX-RawData: {}\r\n\
         X-WX-Signature: {sig}",
        minted.code,
        encode_uri_component(&raw)
    );
    // The first caller, and a waiter that joined it, both go away meanwhile.
    let linger = Duration::from_millis(300);
    tokio::join!(app.hang_up_after(&head, "", linger), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.hang_up_after(&head, "", linger).await;
    });
    tokio::time::sleep(Duration::from_millis(1_200)).await; // WeChat has answered
    app.fake.set_faults(Faults::default());
    let retry = app.compat_login(&minted.code, &raw, &sig).await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(retry.body["openId"], "o_hangup");
    assert_eq!(app.exchanges(), 1, "the retry must not exchange the spent code again");
}
