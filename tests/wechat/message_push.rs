//! WeChat message push over real HTTP: the server-URL check (GET echoes
//! `echostr`) and pushed messages (POST answers `success`), both only with
//! WeChat's signature: sha1 of the sorted token, timestamp and nonce.

use crate::support;

use chrono::{TimeZone, Utc};
use serde_json::json;
use sha1::{Digest, Sha1};
use support::app::{AppOptions, TestApp, spawn_app};
use weapp_gateway::clock::Clock;

const TOKEN: &str = "pushtoken";
const CHECK: &str = "/applet/message/check";

/// WeChat's signature, computed here independently of the crate.
fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    let mut parts = [token, timestamp, nonce];
    parts.sort();
    let mut h = Sha1::new();
    h.update(parts.concat().as_bytes());
    hex::encode(h.finalize())
}

/// Status, content type and the exact body text.
struct Raw {
    status: u16,
    content_type: String,
    nosniff: Option<String>,
    text: String,
}

impl Raw {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON: {e}: {}", self.text))
    }

    fn assert_error(&self, status: u16, reason: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["reason"], reason, "{}", self.text);
        assert_eq!(body["F2C224D4-2BCE-4C64-AF9F-A6D872000D1A"], 1, "{}", self.text);
    }
}

async fn raw(r: reqwest::RequestBuilder) -> Raw {
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let nosniff =
        r.headers().get("x-content-type-options").and_then(|v| v.to_str().ok()).map(str::to_owned);
    Raw { status, content_type, nosniff, text: r.text().await.expect("body") }
}

async fn get(app: &TestApp, query: &[(&str, &str)]) -> Raw {
    raw(app.http.get(format!("{}{CHECK}", app.base)).query(query)).await
}

async fn post(app: &TestApp, query: &[(&str, &str)], body: &str) -> Raw {
    let req = app
        .http
        .post(format!("{}{CHECK}", app.base))
        .query(query)
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    raw(req).await
}

/// The gateway's clock in these tests: the pushes below are signed at about
/// this instant.
const NOW: i64 = 1_700_000_000;

async fn push_app(test: &str) -> TestApp {
    push_app_with(AppOptions::redis(test)).await
}

async fn push_app_with(options: AppOptions) -> TestApp {
    let now = Utc.timestamp_opt(NOW, 0).unwrap();
    spawn_app(options.with("message.token", TOKEN).clock(Clock::from_fn(move || now))).await
}

#[test]
fn the_test_signature_matches_a_known_value() {
    // printf '%s' 1700000000nonce123tok | sha1sum
    assert_eq!(
        signature("tok", "1700000000", "nonce123"),
        "9248ec9f6410495fa2ef4008cc3f9b3a25342d17"
    );
    // Sorting is by the strings, not by their roles.
    assert_eq!(
        signature("tok", "nonce123", "1700000000"),
        signature("1700000000", "tok", "nonce123")
    );
}

#[tokio::test]
async fn the_url_check_echoes_echostr_when_the_signature_matches() {
    let app = push_app("push_check").await;
    let (ts, nonce) = ("1700000000", "n0nce42");
    let sig = signature(TOKEN, ts, nonce);

    let a = get(
        &app,
        &[("signature", &sig), ("timestamp", ts), ("nonce", nonce), ("echostr", "hello")],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.text, "hello");
    assert!(a.content_type.starts_with("text/plain"), "{}", a.content_type);
    assert_eq!(a.nosniff.as_deref(), Some("nosniff"));

    // WeChat's echostr is usually digits: still echoed verbatim, not as JSON.
    let a = get(
        &app,
        &[
            ("signature", &sig),
            ("timestamp", ts),
            ("nonce", nonce),
            ("echostr", "4213009872861274325"),
        ],
    )
    .await;
    assert_eq!((a.status, a.text.as_str()), (200, "4213009872861274325"));
    // Characters that need escaping in the query arrive decoded.
    let a = get(
        &app,
        &[("signature", &sig), ("timestamp", ts), ("nonce", nonce), ("echostr", "a b&c=d/é")],
    )
    .await;
    assert_eq!((a.status, a.text.as_str()), (200, "a b&c=d/é"));
    // An uppercase hex signature is the same signature.
    let upper = sig.to_ascii_uppercase();
    let a =
        get(&app, &[("signature", &upper), ("timestamp", ts), ("nonce", nonce), ("echostr", "hi")])
            .await;
    assert_eq!((a.status, a.text.as_str()), (200, "hi"));
    // Without echostr: an empty 200.
    let a = get(&app, &[("signature", &sig), ("timestamp", ts), ("nonce", nonce)]).await;
    assert_eq!((a.status, a.text.as_str()), (200, ""));
    // Another timestamp and nonce, freshly signed.
    let sig2 = signature(TOKEN, "1700000200", "zzz");
    let a = get(
        &app,
        &[
            ("signature", &sig2),
            ("timestamp", "1700000200"),
            ("nonce", "zzz"),
            ("echostr", "again"),
        ],
    )
    .await;
    assert_eq!((a.status, a.text.as_str()), (200, "again"));
    // No session is needed, and none is consulted.
    assert_eq!(app.exchanges(), 0);
}

#[tokio::test]
async fn the_url_check_refuses_wrong_signatures_and_missing_params() {
    let app = push_app("push_check_bad").await;
    let (ts, nonce) = ("1700000000", "n0nce42");
    let sig = signature(TOKEN, ts, nonce);

    let wrong = [
        signature("othertoken", ts, nonce),
        signature(TOKEN, "1700000001", nonce),
        signature(TOKEN, ts, "n0nce43"),
        format!("{TOKEN}{ts}{nonce}"),
        sig[..39].to_owned(),
        format!("{sig}0"),
        String::new(),
    ];
    for bad in &wrong {
        let a = get(
            &app,
            &[("signature", bad), ("timestamp", ts), ("nonce", nonce), ("echostr", "hello")],
        )
        .await;
        a.assert_error(403, "ERR_BAD_SIGNATURE");
        assert!(!a.text.contains(TOKEN), "{}", a.text);
    }
    // The right signature for other values.
    let a = get(
        &app,
        &[("signature", &sig), ("timestamp", "1700000001"), ("nonce", nonce), ("echostr", "hello")],
    )
    .await;
    a.assert_error(403, "ERR_BAD_SIGNATURE");

    // Missing parameters: 400.
    for query in [
        vec![("timestamp", ts), ("nonce", nonce), ("echostr", "hello")],
        vec![("signature", sig.as_str()), ("nonce", nonce), ("echostr", "hello")],
        vec![("signature", sig.as_str()), ("timestamp", ts), ("echostr", "hello")],
        vec![],
    ] {
        get(&app, &query).await.assert_error(400, "ERR_INVALID_REQUEST");
    }
}

#[tokio::test]
async fn pushed_messages_need_the_signature_and_answer_success() {
    let app = push_app("push_post").await;
    let (ts, nonce) = ("1700000123", "abc");
    let sig = signature(TOKEN, ts, nonce);
    let query = [("signature", sig.as_str()), ("timestamp", ts), ("nonce", nonce)];
    let message = json!({
        "ToUserName": "gh_123456789abc",
        "FromUserName": "o_user_push",
        "CreateTime": 1_700_000_123,
        "MsgType": "text",
        "Content": "你好",
        "MsgId": 1234567890123456_u64
    })
    .to_string();

    let a = post(&app, &query, &message).await;
    assert_eq!((a.status, a.text.as_str()), (200, "success"));
    // Other message types too, and with the URL-check's echostr present.
    let event = json!({"MsgType": "event", "Event": "user_enter_tempsession"}).to_string();
    let a = post(&app, &query, &event).await;
    assert_eq!((a.status, a.text.as_str()), (200, "success"));
    let a = post(&app, &[query[0], query[1], query[2], ("echostr", "x")], "{}").await;
    assert_eq!((a.status, a.text.as_str()), (200, "success"));

    // Bad or missing signature: 403 / 400, whatever the body.
    let bad = signature("othertoken", ts, nonce);
    post(&app, &[("signature", &bad), ("timestamp", ts), ("nonce", nonce)], &message)
        .await
        .assert_error(403, "ERR_BAD_SIGNATURE");
    post(&app, &[("signature", &sig), ("timestamp", ts), ("nonce", "abd")], &message)
        .await
        .assert_error(403, "ERR_BAD_SIGNATURE");
    post(&app, &[("timestamp", ts), ("nonce", nonce)], &message)
        .await
        .assert_error(400, "ERR_INVALID_REQUEST");
    // A signed body that is not JSON: 400.
    post(&app, &query, "<xml><MsgType>text</MsgType></xml>")
        .await
        .assert_error(400, "ERR_INVALID_REQUEST");
}

#[tokio::test]
async fn without_a_message_token_the_route_is_not_found() {
    for (test, options) in [
        ("push_off", AppOptions::redis("push_off")),
        ("push_empty", AppOptions::redis("push_empty").with("message.token", "")),
    ] {
        let app = spawn_app(options).await;
        let (ts, nonce) = ("1700000000", "n0nce42");
        // Correct for the configured token, if there were one, and for an empty one.
        for token in [TOKEN, ""] {
            let sig = signature(token, ts, nonce);
            let q = [("signature", sig.as_str()), ("timestamp", ts), ("nonce", nonce)];
            let a = get(&app, &[q[0], q[1], q[2], ("echostr", "hello")]).await;
            a.assert_error(404, "ERR_NOT_FOUND");
            assert!(!a.text.contains("hello"), "{test}: {}", a.text);
            post(&app, &q, "{}").await.assert_error(404, "ERR_NOT_FOUND");
        }
    }
}

#[tokio::test]
async fn a_signed_push_outside_the_clock_skew_is_refused_and_not_processed() {
    let app =
        push_app_with(AppOptions::redis("push_stale").with("message.max_clock_skew", "5m")).await;
    let nonce = "n0nce42";
    let signed = |ts: &str| [signature(TOKEN, ts, nonce), ts.to_owned()];
    // At the edges of ±5 minutes: accepted.
    for ts in [NOW - 300, NOW, NOW + 300] {
        let [sig, ts] = signed(&ts.to_string());
        let q = [("signature", sig.as_str()), ("timestamp", ts.as_str()), ("nonce", nonce)];
        let a = get(&app, &[q[0], q[1], q[2], ("echostr", "fresh")]).await;
        assert_eq!((a.status, a.text.as_str()), (200, "fresh"), "{ts}");
        assert_eq!(post(&app, &q, "{}").await.text, "success", "{ts}");
    }
    // A wrong signature's answer: a stale good one must look exactly alike.
    let now = NOW.to_string();
    let wrong =
        [("signature", "0".repeat(40)), ("timestamp", now.clone()), ("nonce", nonce.into())];
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bad_get = get(&app, &[wrong[0], wrong[1], wrong[2], ("echostr", "replayed")]).await;
    let bad_post = post(&app, &wrong, "{\"MsgType\": \"text\"}").await;
    // Older, later, nonsense or not a number, though correctly signed: 403,
    // and neither the echostr nor `success` comes back.
    for ts in [
        (NOW - 301).to_string(),
        (NOW + 301).to_string(),
        "0".into(),
        "1800000000".into(),
        "-1".into(),
        "99999999999999999999".into(),
        "now".into(),
        String::new(),
    ] {
        let [sig, ts] = signed(&ts);
        let q = [("signature", sig.as_str()), ("timestamp", ts.as_str()), ("nonce", nonce)];
        let a = get(&app, &[q[0], q[1], q[2], ("echostr", "replayed")]).await;
        a.assert_error(403, "ERR_BAD_SIGNATURE");
        assert!(!a.text.contains("replayed"), "{ts}: {}", a.text);
        assert_eq!(a.text, bad_get.text, "{ts}: stale must answer like a wrong signature");
        let a = post(&app, &q, "{\"MsgType\": \"text\"}").await;
        a.assert_error(403, "ERR_BAD_SIGNATURE");
        assert!(!a.text.contains("success"), "{ts}: {}", a.text);
        assert_eq!(a.text, bad_post.text, "{ts}: stale must answer like a wrong signature");
    }
}
