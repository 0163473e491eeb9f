//! The token dialect over real HTTP, against a real redis-server.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::app::{APP_SECRET, AppOptions, TestApp, raw_data, sign, spawn_app};
use weapp_gateway::wechat::Faults;

async fn login(app: &TestApp, openid: &str) -> String {
    let minted = app.mint(openid);
    let a = app.token_login(&json!({"code": minted.code})).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn login_without_raw_data_then_use_the_token_both_ways() {
    let app = spawn_app(AppOptions::redis("token_basic")).await;
    let minted = app.mint("o_tom");
    let a = app.token_login(&json!({"code": minted.code})).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let token = a.body["token"].as_str().unwrap();
    // `<user slot tag>.<random>`: ≥128 random bits, URL-safe (unreserved chars).
    let (tag, random) = token.split_once('.').expect("tag.random");
    assert_eq!(tag.len(), 8, "{token}");
    assert!(random.len() >= 22, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{token}");
    assert!(a.body["expiresIn"].as_u64().unwrap() > 0);
    assert_eq!(a.body["user"], json!({"openId": "o_tom"}));
    assert!(!a.body.to_string().contains(&minted.session_key));

    let me = app.token_me(token).await;
    assert_eq!((me.status, &me.body), (200, &json!({"openId": "o_tom"})));
    let bearer = format!("Bearer {token}");
    let me = app.get("/applet/session/me", &[("Authorization", &bearer)]).await;
    assert_eq!(me.status, 200);
    let me = app.token_me("not-a-real-token").await;
    assert_eq!((me.status, me.reason()), (401, Some("ERR_SESSION_EXPIRED")));
}

#[tokio::test]
async fn login_with_signed_raw_data() {
    let app = spawn_app(AppOptions::redis("token_signed")).await;
    let minted = app.mint("o_uma");
    let raw = raw_data("乌玛+");
    let a = app
        .token_login(&json!({"code": minted.code, "rawData": raw, "signature": sign(&raw, &minted.session_key)}))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["user"]["nickName"], "乌玛+");
    assert_eq!(a.body["user"]["openId"], "o_uma");

    let other = app.mint("o_uma");
    let bad = app
        .token_login(&json!({"code": other.code, "rawData": raw, "signature": sign(&raw, "wrong")}))
        .await;
    assert_eq!((bad.status, bad.reason()), (401, Some("ERR_UNTRUSTED_RAW_DATA")));
    let missing = app.token_login(&json!({"code": app.mint("o_uma").code, "rawData": raw})).await;
    assert_eq!((missing.status, missing.reason()), (401, Some("ERR_UNTRUSTED_RAW_DATA")));
    assert_eq!(app.exchanges(), 2, "missing signature must not spend the code");
}

#[tokio::test]
async fn malformed_login_bodies_are_400() {
    let app = spawn_app(AppOptions::redis("token_bad_body")).await;
    for body in [json!({}), json!({"code": ""}), json!({"code": 5}), json!("code")] {
        let a = app.token_login(&body).await;
        assert_eq!((a.status, a.reason()), (400, Some("ERR_INVALID_REQUEST")), "{body}");
    }
    let a = app
        .http
        .post(format!("{}/applet/session/login", app.base))
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 413);
    let get = app.get("/applet/session/login", &[]).await;
    assert_eq!((get.status, get.reason()), (405, Some("ERR_METHOD_NOT_ALLOWED")));
    assert_eq!(app.exchanges(), 0);
}

#[tokio::test]
async fn logout_revokes_the_token() {
    let app = spawn_app(AppOptions::redis("token_logout")).await;
    let token = login(&app, "o_vic").await;
    assert_eq!(app.token_me(&token).await.status, 200);
    let out = app.logout(&token).await;
    assert_eq!(out.status, 200);
    let me = app.token_me(&token).await;
    assert_eq!((me.status, me.reason()), (401, Some("ERR_SESSION_EXPIRED")));
    let anon = app.post("/applet/session/logout", &[], &json!(null)).await;
    assert_eq!((anon.status, anon.reason()), (401, Some("ERR_NOT_LOGGED_IN")));
}

#[tokio::test]
async fn sliding_idle_expiry() {
    for options in [AppOptions::redis("token_sliding"), AppOptions::memory()] {
        let app = spawn_app(
            options.with("session.token_idle_ttl", "2s").with("session.token_max_lifetime", "1h"),
        )
        .await;
        let token = login(&app, "o_walt").await;
        // Used every second for 4 s: each use extends the 2 s idle TTL.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            assert_eq!(app.token_me(&token).await.status, 200);
        }
        // Idle for longer than the TTL: gone.
        tokio::time::sleep(Duration::from_millis(2_600)).await;
        assert_eq!(app.token_me(&token).await.reason(), Some("ERR_SESSION_EXPIRED"));
    }
}

#[tokio::test]
async fn absolute_lifetime_caps_sliding() {
    // Lifetimes are kept in whole seconds, so a 4 s cap ends somewhere in
    // (3 s, 5 s] after the login. Every sample is timed from the moment it was
    // sent (the server saw it no earlier), so a loaded machine that delays
    // requests cannot make the test pass or fail by itself.
    let app = spawn_app(
        AppOptions::redis("token_absolute")
            .with("session.token_idle_ttl", "2s")
            .with("session.token_max_lifetime", "4s"),
    )
    .await;
    let started = std::time::Instant::now();
    let token = login(&app, "o_xena").await;
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_millis(6_500) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let sent = started.elapsed();
        let alive = app.token_me(&token).await.status == 200;
        samples.push((sent, alive));
    }
    // Sliding works: used more than the 2 s idle TTL after login and still alive.
    assert!(
        samples.iter().any(|&(t, alive)| alive && t >= Duration::from_millis(2_400)),
        "never alive past the idle TTL: {samples:?}"
    );
    // The cap holds: nothing sent after 5 s (cap + 1 s of rounding) is served,
    // although the token was used every 250 ms.
    assert!(
        samples.iter().all(|&(t, alive)| !alive || t <= Duration::from_millis(5_000)),
        "served past the absolute lifetime: {samples:?}"
    );
    assert!(samples.iter().any(|&(t, _)| t > Duration::from_millis(5_500)), "{samples:?}");
}

#[tokio::test]
async fn concurrent_token_logins_with_one_code_share_one_exchange_and_token() {
    let app = spawn_app(AppOptions::redis("token_single_flight")).await;
    let minted = app.mint("o_yuri");
    let body = json!({"code": minted.code});
    let answers = futures_util::future::join_all((0..20).map(|_| app.token_login(&body))).await;
    let first = answers[0].body["token"].as_str().unwrap().to_owned();
    for a in &answers {
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.body["token"], first.as_str());
    }
    assert_eq!(app.exchanges(), 1);
    assert_eq!(app.token_me(&first).await.status, 200);
    // A later retry of the same code gets the same live token, no exchange.
    let again = app.token_login(&body).await;
    assert_eq!(again.body["token"], first.as_str());
    assert_eq!(app.exchanges(), 1);
}

#[tokio::test]
async fn a_new_login_revokes_the_users_previous_token() {
    let app = spawn_app(AppOptions::redis("token_relogin")).await;
    let old = login(&app, "o_zoe").await;
    let new = login(&app, "o_zoe").await;
    assert_ne!(old, new);
    assert_eq!(app.token_me(&old).await.reason(), Some("ERR_SESSION_EXPIRED"));
    assert_eq!(app.token_me(&new).await.status, 200);
}

#[tokio::test]
async fn base_path_and_prefix_ignores_are_honoured() {
    let app = spawn_app(
        AppOptions::redis("token_base_path")
            .with("server.base_path", "/api/v2")
            .with("session.ignore", json!(["/api/v2/message/*"])),
    )
    .await;
    let minted = app.mint("o_base");
    let a = app.post("/api/v2/session/login", &[], &json!({"code": minted.code})).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let token = a.body["token"].as_str().expect("token").to_owned();
    let me = app.get("/api/v2/session/me", &[("X-WX-Skey", &token)]).await;
    assert_eq!((me.status, me.body["openId"].as_str()), (200, Some("o_base")));
    let old = app.get("/applet/session/me", &[("X-WX-Skey", &token)]).await;
    assert_eq!((old.status, old.reason()), (404, Some("ERR_NOT_FOUND")));

    // "/api/v2/message/*" is a prefix: the layer leaves it alone, bogus code
    // and all, so the handler itself answers (its query check: 400).
    let ignored = app.get("/api/v2/message/check", &[("X-WX-Code", "no-such-code")]).await;
    assert_eq!((ignored.status, ignored.reason()), (400, Some("ERR_INVALID_REQUEST")));
    // Other routes are judged by the layer: the bogus code is refused.
    let judged = app.get("/api/v2/notices/mine", &[("X-WX-Code", "no-such-code")]).await;
    assert_eq!((judged.status, judged.reason()), (401, Some("ERR_SESSION_EXPIRED")));
    // Probes sit outside the layer whatever the list says.
    let health = app.get("/healthz", &[("X-WX-Code", "no-such-code")]).await;
    assert_eq!(health.status, 200, "{:?}", health.body);
    assert_eq!(app.exchanges(), 1);
}

#[tokio::test]
async fn a_token_login_whose_client_hangs_up_still_lands_and_the_retry_is_served() {
    let app = spawn_app(AppOptions::memory()).await;
    let minted = app.mint("o_hangup_token");
    // WeChat spends the code at once and answers 1.2 s later.
    app.fake.set_faults(Faults::default().with_answer_delay_ms(1_200));
    let head = "POST /applet/session/login HTTP/1.1\r\nContent-Type: application/json";
    let body = json!({"code": minted.code}).to_string();
    // The first caller, and a waiter that joined it, both go away meanwhile.
    let linger = Duration::from_millis(300);
    tokio::join!(app.hang_up_after(head, &body, linger), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.hang_up_after(head, &body, linger).await;
    });
    tokio::time::sleep(Duration::from_millis(1_200)).await; // WeChat has answered
    app.fake.set_faults(Faults::default());
    let retry = app.token_login(&json!({"code": minted.code})).await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    let token = retry.body["token"].as_str().expect("token");
    assert_eq!(app.token_me(token).await.body["openId"], "o_hangup_token");
    assert_eq!(app.exchanges(), 1, "the retry must not exchange the spent code again");
}

#[tokio::test]
async fn malformed_wechat_answers_never_become_sessions() {
    use base64::Engine as _;
    let app = spawn_app(AppOptions::memory()).await;
    let short_key = base64::engine::general_purpose::STANDARD.encode([7u8; 8]);
    let huge = "o".repeat(100_000);
    let cases: [(&str, Option<&str>, Option<&str>); 7] = [
        ("o_new\nline", None, None),
        ("o_nul\0", None, None),
        (&huge, None, None),
        ("", None, None),
        ("o_badkey", Some("not*base64!"), None),
        ("o_shortkey", Some(&short_key), None),
        ("o_badunion", None, Some("u\r\nforged")),
    ];
    for (openid, key, unionid) in cases {
        let minted = app.fake.mint_code(openid, key.map(Into::into), unionid.map(Into::into));
        let a = app.token_login(&json!({"code": minted.code})).await;
        let what = format!(
            "openid {:?}, key {key:?}, unionid {unionid:?}",
            &openid[..openid.len().min(20)]
        );
        assert_eq!(
            (a.status, a.reason()),
            (502, Some("ERR_SESSION_KEY_EXCHANGE_FAILED")),
            "{what}"
        );
        assert!(a.body.get("token").is_none(), "{what}");
    }
    // A well-formed answer still logs in.
    assert_eq!(app.token_login(&json!({"code": app.mint("o_fine-1").code})).await.status, 200);
}

#[tokio::test]
async fn wechats_errmsg_reaches_the_client_scrubbed_and_capped() {
    let app = spawn_app(AppOptions::memory()).await;
    let hostile = format!(
        "invalid code, secret {APP_SECRET}\n2026-12-02T00:00:00Z INFO forged line {}",
        "x".repeat(5_000)
    );
    app.fake.set_faults(Faults::default().with_errcode(40029, hostile));
    let a = app.token_login(&json!({"code": app.mint("o_errmsg").code})).await;
    assert_eq!((a.status, a.reason()), (401, Some("ERR_SESSION_KEY_EXCHANGE_FAILED")));
    assert_eq!(a.body["error"]["detail"]["errcode"], 40029);
    let errmsg = a.body["error"]["detail"]["errmsg"].as_str().expect("errmsg");
    assert!(errmsg.starts_with("invalid code, secret [redacted]"), "{errmsg}");
    assert!(!errmsg.contains('\n'), "{errmsg}");
    assert!(errmsg.chars().count() <= 201, "{} chars", errmsg.chars().count());
    let text = a.body.to_string();
    assert!(!text.contains(APP_SECRET), "{text}");
    assert!(text.len() < 1_500, "{} bytes", text.len());
}
