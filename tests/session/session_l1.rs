//! The optional L1 session cache: hits cost no Redis round trip, revocation on
//! another instance is seen within the TTL, a local logout at once, and the
//! token's sliding expiry is refreshed at most once per L1 window.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::app::{AppOptions, StoreChoice, TestApp, raw_data, sign, spawn_app};
use support::redis::RedisServer;

fn command_calls(port: u16, command: &str) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn app_on(redis: &RedisServer, prefix: &str, l1: &str) -> TestApp {
    spawn_app(AppOptions {
        store: StoreChoice::Redis { url: redis.url(), prefix: prefix.to_owned() },
        extra: vec![
            ("session.l1", json!(true)),
            ("session.l1_ttl", json!(l1)),
            ("redis.timeout", json!("500ms")),
        ],
        clock: None,
    })
    .await
}

#[tokio::test]
async fn hits_are_served_without_redis_then_expire() {
    let mut redis = RedisServer::start();
    let app = app_on(&redis, "l1hit:", "2s").await;
    let minted = app.mint("o_l1");
    let raw = raw_data("l1");
    assert_eq!(
        app.compat_login(&minted.code, &raw, &sign(&raw, &minted.session_key)).await.status,
        200
    );
    assert_eq!(app.compat_me(&minted.code).await.status, 200); // loads into L1
    let gets = command_calls(redis.port(), "get");
    for _ in 0..20 {
        assert_eq!(app.compat_me(&minted.code).await.status, 200);
    }
    assert_eq!(command_calls(redis.port(), "get"), gets, "L1 hits must not reach Redis");

    // With Redis gone, hits still serve until the TTL runs out.
    redis.stop();
    assert_eq!(app.compat_me(&minted.code).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert_eq!(app.compat_me(&minted.code).await.reason(), Some("ERR_SESSION_STORE_UNAVAILABLE"));
}

#[tokio::test]
async fn revocation_is_seen_within_the_ttl_and_local_logout_at_once() {
    let redis = RedisServer::start();
    let a = app_on(&redis, "l1rev:", "1s").await;
    let b = app_on(&redis, "l1rev:", "1s").await;
    let minted = a.mint("o_l1rev");
    let login = a.token_login(&json!({"code": minted.code})).await;
    let token = login.body["token"].as_str().unwrap().to_owned();
    assert_eq!(a.token_me(&token).await.status, 200);
    assert_eq!(b.token_me(&token).await.status, 200); // warms B's L1

    assert_eq!(a.logout(&token).await.status, 200);
    assert_eq!(
        a.token_me(&token).await.reason(),
        Some("ERR_SESSION_EXPIRED"),
        "local logout is immediate"
    );
    let started = Instant::now();
    loop {
        let r = b.token_me(&token).await;
        if r.status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "B served a revoked token past the TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sliding_refresh_happens_at_most_once_per_window() {
    let redis = RedisServer::start();
    let app = app_on(&redis, "l1slide:", "1s").await;
    let minted = app.mint("o_l1slide");
    let token = app.token_login(&json!({"code": minted.code})).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = command_calls(redis.port(), "getex");
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(2_500) {
        assert_eq!(app.token_me(&token).await.status, 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refreshes = command_calls(redis.port(), "getex") - before;
    assert!(served > 50, "{served}");
    assert!((1..=4).contains(&refreshes), "{refreshes} refreshes for {served} requests in 2.5 s");
}

#[tokio::test]
async fn a_new_login_on_this_instance_evicts_the_revoked_session_at_once() {
    let redis = RedisServer::start();
    let app = app_on(&redis, "l1new:", "30s").await;
    // token → token
    let first = app.mint("o_l1new");
    let old = app.token_login(&json!({"code": first.code})).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.token_me(&old).await.status, 200); // loads into L1
    assert_eq!(app.token_me(&old).await.status, 200); // an L1 hit
    let second = app.mint("o_l1new");
    let new = app.token_login(&json!({"code": second.code})).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.token_me(&old).await.reason(), Some("ERR_SESSION_EXPIRED"));
    assert_eq!(app.token_me(&new).await.status, 200);

    // compat → token
    let compat = app.mint("o_l1new2");
    let raw = raw_data("l1new2");
    let signed = sign(&raw, &compat.session_key);
    assert_eq!(app.compat_login(&compat.code, &raw, &signed).await.status, 200);
    assert_eq!(app.compat_me(&compat.code).await.status, 200); // loads into L1
    assert_eq!(app.compat_me(&compat.code).await.status, 200); // an L1 hit
    let token = app.mint("o_l1new2");
    assert_eq!(app.token_login(&json!({"code": token.code})).await.status, 200);
    assert_eq!(app.compat_me(&compat.code).await.reason(), Some("ERR_SESSION_EXPIRED"));
}
