//! The WeChat client against the fake WeChat server, over real loopback HTTP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use weapp_gateway::session::{CodeExchanger, ExchangeError};
use weapp_gateway::wechat::{
    FakeWeChat, Faults, JSCODE2SESSION, WeChatClient, WeChatConfig, WeChatError,
};

const APP_ID: &str = "wx0123456789abcdef";
const SECRET: &str = "s3cr3t-AppSecret-d00dfeedcafe";

fn config(addr: SocketAddr, app_id: &str, secret: &str) -> WeChatConfig {
    let mut cfg = WeChatConfig::new(app_id, secret);
    cfg.api_base = format!("http://{addr}");
    cfg.connect_timeout = Duration::from_millis(500);
    cfg.timeout = Duration::from_millis(800);
    cfg
}

fn client_for(addr: SocketAddr) -> WeChatClient {
    WeChatClient::new(config(addr, APP_ID, SECRET)).unwrap()
}

/// A plain reqwest client for the `/dev/*` endpoints.
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn setup() -> (FakeWeChat, SocketAddr, WeChatClient) {
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.unwrap();
    (fake.clone(), addr, client_for(addr))
}

/// The error's Display and Debug texts never carry the AppSecret.
fn assert_no_secret(err: &ExchangeError) {
    let shown = format!("{err} / {err:?}");
    assert!(!shown.contains(SECRET), "secret leaked: {shown}");
    assert!(!shown.contains("secret="), "query leaked: {shown}");
}

fn assert_errcode(result: Result<impl std::fmt::Debug, ExchangeError>, want: i64) {
    match result {
        Err(err @ ExchangeError::WeChat { errcode, .. }) if errcode == want => {
            assert_no_secret(&err)
        }
        other => panic!("expected errcode {want}, got {other:?}"),
    }
}

#[tokio::test]
async fn success_returns_openid_session_key_and_unionid() {
    let (fake, _addr, client) = setup().await;
    let minted = fake.mint_code("o-alice", None, Some("u-alice".into()));
    assert_eq!(STANDARD.decode(&minted.session_key).unwrap().len(), 16);

    let got = client.code2session(&minted.code).await.unwrap();
    assert_eq!(got.openid, "o-alice");
    assert_eq!(got.session_key, minted.session_key);
    assert_eq!(got.unionid.as_deref(), Some("u-alice"));
    assert!(!format!("{got:?}").contains(&minted.session_key));

    let plain = fake.mint_code("o-bob", Some(STANDARD.encode([7u8; 16])), None);
    let got = client.code2session(&plain.code).await.unwrap();
    assert_eq!(got.openid, "o-bob");
    assert_eq!(got.session_key, STANDARD.encode([7u8; 16]));
    assert_eq!(got.unionid, None);
    assert_eq!(fake.stats().jscode2session_calls, 2);
}

#[tokio::test]
async fn reused_code_is_40163() {
    let (fake, _addr, client) = setup().await;
    let minted = fake.mint_code("o-alice", None, None);
    client.code2session(&minted.code).await.unwrap();
    assert_errcode(client.code2session(&minted.code).await, 40163);
}

#[tokio::test]
async fn unknown_code_is_40029() {
    let (_fake, _addr, client) = setup().await;
    assert_errcode(client.code2session("no-such-code").await, 40029);
}

#[tokio::test]
async fn expired_code_is_40029() {
    let (fake, _addr, client) = setup().await;
    fake.set_code_ttl(Duration::from_millis(50));
    let minted = fake.mint_code("o-alice", None, None);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_errcode(client.code2session(&minted.code).await, 40029);
}

#[tokio::test]
async fn wrong_appid_is_40013() {
    let (fake, addr, _client) = setup().await;
    let client = WeChatClient::new(config(addr, "wxwrong", SECRET)).unwrap();
    let minted = fake.mint_code("o-alice", None, None);
    assert_errcode(client.code2session(&minted.code).await, 40013);
}

#[tokio::test]
async fn wrong_secret_is_40125() {
    let (fake, addr, _client) = setup().await;
    let client = WeChatClient::new(config(addr, APP_ID, "not-the-secret")).unwrap();
    let minted = fake.mint_code("o-alice", None, None);
    assert_errcode(client.code2session(&minted.code).await, 40125);
    // The code was not spent by the failed call.
    let ok = client_for(addr).code2session(&minted.code).await.unwrap();
    assert_eq!(ok.openid, "o-alice");
}

#[tokio::test]
async fn slow_wechat_is_a_timeout_within_the_timeout() {
    let (fake, _addr, client) = setup().await;
    fake.set_faults(Faults::default().with_delay_ms(3_000));
    let minted = fake.mint_code("o-alice", None, None);
    let started = Instant::now();
    let result = client.code2session(&minted.code).await;
    let elapsed = started.elapsed();
    match &result {
        Err(err @ ExchangeError::Timeout) => assert_no_secret(err),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_millis(700) && elapsed < Duration::from_millis(2_000),
        "timed out after {elapsed:?}"
    );
    // Timeouts are not retried (the code may have been spent).
    assert_eq!(fake.stats().jscode2session_calls, 1);
}

#[tokio::test]
async fn http_500_is_unreachable() {
    let (fake, _addr, client) = setup().await;
    fake.set_faults(Faults::default().with_http_500());
    let minted = fake.mint_code("o-alice", None, None);
    match client.code2session(&minted.code).await {
        Err(err @ ExchangeError::Unreachable(_)) => {
            assert!(err.to_string().contains("500"), "{err}");
            assert_no_secret(&err);
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn one_busy_answer_is_retried() {
    let (fake, _addr, client) = setup().await;
    fake.set_faults(Faults::default().with_busy(1));
    let minted = fake.mint_code("o-alice", None, None);
    let got = client.code2session(&minted.code).await.unwrap();
    assert_eq!(got.openid, "o-alice");
    assert_eq!(fake.stats().jscode2session_calls, 2);
    assert_eq!(fake.faults().busy, 0);
}

#[tokio::test]
async fn two_busy_answers_fail_with_errcode_minus_one() {
    let (fake, _addr, client) = setup().await;
    fake.set_faults(Faults::default().with_busy(2));
    let minted = fake.mint_code("o-alice", None, None);
    assert_errcode(client.code2session(&minted.code).await, -1);
    assert_eq!(fake.stats().jscode2session_calls, 2);
    // The code was never spent: it still works.
    assert_eq!(client.code2session(&minted.code).await.unwrap().openid, "o-alice");
}

#[tokio::test]
async fn the_busy_retry_stays_inside_the_one_timeout() {
    // 800 ms for the whole call: a busy answer after 450 ms, the 200 ms
    // backoff, then a retry that would need another 450 ms.
    let (fake, _addr, client) = setup().await;
    fake.set_faults(Faults::default().with_busy(2).with_delay_ms(450));
    let minted = fake.mint_code("o-alice", None, None);
    let started = Instant::now();
    let result = client.code2session(&minted.code).await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(ExchangeError::Timeout)), "{result:?}");
    assert!(elapsed < Duration::from_millis(1_050), "took {elapsed:?} for an 800 ms timeout");
    assert_eq!(fake.stats().jscode2session_calls, 2, "the retry was still made");
}

#[tokio::test]
async fn nothing_listening_is_unreachable_without_the_secret() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client_for(addr);
    match client.code2session("some-code").await {
        Err(err @ ExchangeError::Unreachable(_)) => assert_no_secret(&err),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn non_json_answer_is_bad_response() {
    // A server that answers 200 with HTML, like a captive portal.
    let app = axum::Router::new()
        .route("/sns/jscode2session", axum::routing::get(|| async { "<html>hello</html>" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    match client_for(addr).code2session("c").await {
        Err(err @ ExchangeError::BadResponse(_)) => assert_no_secret(&err),
        other => panic!("expected BadResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn config_and_client_debug_redact_the_secret() {
    let (_fake, addr, client) = setup().await;
    let cfg = config(addr, APP_ID, SECRET);
    assert!(!format!("{cfg:?}").contains(SECRET));
    assert!(!format!("{client:?}").contains(SECRET));
}

#[tokio::test]
async fn generic_get_json_checks_errcode() {
    let (_fake, _addr, client) = setup().await;
    let result = client
        .get_json(JSCODE2SESSION, &[("appid", APP_ID), ("secret", SECRET), ("js_code", "nope")])
        .await;
    match result {
        Err(WeChatError::Api { errcode, .. }) => assert_eq!(errcode, 40002),
        other => panic!("expected Api error, got {other:?}"),
    }
}

#[tokio::test]
async fn dev_codes_mints_and_validates_over_http() {
    let (fake, addr, client) = setup().await;
    let http = http_client();
    let base = format!("http://{addr}");

    // Explicit session_key and unionid.
    let key = STANDARD.encode([42u8; 16]);
    let resp = http
        .post(format!("{base}/dev/codes"))
        .json(&json!({"openid": "o-carol", "session_key": key, "unionid": "u-carol"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let minted: Value = resp.json().await.unwrap();
    assert_eq!(minted["openid"], "o-carol");
    assert_eq!(minted["session_key"], key.as_str());
    let code = minted["code"].as_str().unwrap().to_owned();
    assert!(code.len() >= 22);
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let got = client.code2session(&code).await.unwrap();
    assert_eq!((got.openid.as_str(), got.unionid.as_deref()), ("o-carol", Some("u-carol")));

    // Generated session_key.
    let minted: Value = http
        .post(format!("{base}/dev/codes"))
        .json(&json!({"openid": "o-dave"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated = STANDARD.decode(minted["session_key"].as_str().unwrap()).unwrap();
    assert_eq!(generated.len(), 16);

    // Validation failures answer 400 with a JSON error.
    for bad in [
        json!({"openid": "o-eve", "session_key": STANDARD.encode([1u8; 15])}),
        json!({"openid": "o-eve", "session_key": "not base64!!"}),
        json!({"openid": ""}),
        json!({"session_key": key}),
        json!("just a string"),
    ] {
        let resp = http.post(format!("{base}/dev/codes")).json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    let resp = http.post(format!("{base}/dev/codes")).body("{not json").send().await.unwrap();
    assert_eq!(resp.status(), 400);

    assert_eq!(fake.stats().codes_minted, 2);
}

#[tokio::test]
async fn dev_stats_and_faults_over_http() {
    let (fake, addr, client) = setup().await;
    let http = http_client();
    let base = format!("http://{addr}");

    let _ = client.code2session("unknown").await;
    let minted = fake.mint_code("o-alice", None, None);
    client.code2session(&minted.code).await.unwrap();

    let stats: Value =
        http.get(format!("{base}/dev/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["jscode2session_calls"], 2);
    assert_eq!(stats["calls"][JSCODE2SESSION], 2);

    let resp = http
        .post(format!("{base}/dev/faults"))
        .json(&json!({"busy": 3, "delay_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let faults: Value =
        http.get(format!("{base}/dev/faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        faults,
        json!({"busy": 3, "delay_ms": 5, "http_500": false, "answer_delay_ms": 0,
               "errcode": 0, "errmsg": ""})
    );
    assert_eq!(fake.faults(), Faults::default().with_delay_ms(5).with_busy(3));

    let resp = http.post(format!("{base}/dev/faults")).body("[]").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http
        .post(format!("{base}/dev/faults"))
        .json(&json!({"http500": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "unknown fields are rejected");
    assert_eq!(fake.faults().busy, 3, "a rejected body changes nothing");
}

#[tokio::test]
async fn router_nests_under_a_prefix() {
    let fake = FakeWeChat::new(APP_ID, SECRET);
    let app = axum::Router::new().nest("/__wechat", fake.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut cfg = config(addr, APP_ID, SECRET);
    cfg.api_base = format!("http://{addr}/__wechat/");
    let client = WeChatClient::new(cfg).unwrap();
    let minted = fake.mint_code("o-alice", None, None);
    assert_eq!(client.code2session(&minted.code).await.unwrap().openid, "o-alice");
}

#[tokio::test]
async fn answer_delay_spends_the_code_before_the_slow_answer() {
    let (fake, _addr, client) = setup().await;
    fake.set_faults(Faults::default().with_answer_delay_ms(1_500));
    let minted = fake.mint_code("o-alice", None, None);
    // The client (800 ms timeout) gives up; the code is spent all the same.
    assert!(matches!(client.code2session(&minted.code).await, Err(ExchangeError::Timeout)));
    fake.set_faults(Faults::default());
    assert_errcode(client.code2session(&minted.code).await, 40163);
}

#[tokio::test]
async fn a_forced_errcode_carries_its_errmsg_scrubbed_and_escaped() {
    let (fake, _addr, client) = setup().await;
    let errmsg = format!("bad {SECRET}\nFORGED {}", "y".repeat(1_000));
    fake.set_faults(Faults::default().with_errcode(40029, errmsg));
    let minted = fake.mint_code("o-alice", None, None);
    match client.code2session(&minted.code).await {
        Err(err @ ExchangeError::WeChat { errcode: 40029, .. }) => {
            assert_no_secret(&err);
            assert!(!err.to_string().contains('\n'), "{err}");
            let ExchangeError::WeChat { errmsg, .. } = &err else { unreachable!() };
            assert!(errmsg.starts_with("bad [redacted] FORGED"), "{errmsg}");
            assert!(errmsg.chars().count() <= 201, "{}", errmsg.chars().count());
        }
        other => panic!("expected errcode 40029, got {other:?}"),
    }
}
