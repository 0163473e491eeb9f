//! The Redis store under outages: it starts without Redis, answers
//! `Unavailable` quickly while Redis is down, and recovers by itself; the
//! gateway in front of it logs the outage at a bounded rate.

use crate::support;
use crate::unavailable::{FAIL_FAST, LONG, every_op_is_unavailable, record};

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use support::redis::{RedisServer, free_port, unique_prefix};
use weapp_gateway::session::store::{
    RedisStore, RedisStoreConfig, SessionId, SessionStore, SharedStore, StoreError,
};

const OP_TIMEOUT: Duration = Duration::from_millis(500);
fn store_at(url: String, test: &str) -> RedisStore {
    RedisStore::new(
        RedisStoreConfig::new(url).with_prefix(unique_prefix(test)).with_op_timeout(OP_TIMEOUT),
    )
    .expect("constructing the store never needs Redis")
}

/// Retry `ping` until it succeeds; panic after `within`.
async fn wait_until_available(store: &RedisStore, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match store.ping().await {
            Ok(()) => return started.elapsed(),
            Err(e) if started.elapsed() < within => {
                eprintln!("not yet available: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("store did not recover within {within:?}: {e}"),
        }
    }
}

async fn full_roundtrip(store: &RedisStore) {
    let id = SessionId::token("after");
    store.create(&id, &record("o-after"), LONG, LONG).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap().map(|r| r.openid).as_deref(), Some("o-after"));
    store.kv_set("k", "v", LONG).await.unwrap();
    assert_eq!(store.kv_get("k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test]
async fn survives_a_redis_restart() {
    let mut server = RedisServer::start();
    let store = store_at(server.url(), "restart");
    full_roundtrip(&store).await;

    server.stop();
    every_op_is_unavailable(&store, "no-secret-here").await;
    // And again, now that the connection is known to be gone.
    every_op_is_unavailable(&store, "no-secret-here").await;

    server.start_again();
    let took = wait_until_available(&store, Duration::from_secs(5)).await;
    eprintln!("recovered {took:?} after the restart");
    full_roundtrip(&store).await;
}

#[tokio::test]
async fn the_first_op_after_a_restart_succeeds() {
    // Redis restarts while the store is idle; the next request must not fail
    // just because it meets the dead connection.
    let mut server = RedisServer::start();
    let store = store_at(server.url(), "idle-restart");
    store.ping().await.unwrap();
    server.stop();
    server.start_again();
    store.kv_set("k", "v", LONG).await.unwrap();
    assert_eq!(store.kv_get("k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test]
async fn starts_without_redis_and_connects_when_it_appears() {
    // Nothing listens: construction works, every op fails fast, nothing leaks the password.
    let secret = "hunter2-secret";
    let store = store_at(format!("redis://:{secret}@127.0.0.1:{}/", free_port()), "secret");
    assert!(!format!("{store:?}").contains(secret));
    every_op_is_unavailable(&store, secret).await;

    // The same store connects by itself once Redis appears on its port.
    let port = free_port();
    let store = store_at(format!("redis://127.0.0.1:{port}/"), "late");
    every_op_is_unavailable(&store, "no-secret-here").await;
    let _server = RedisServer::start_on(port);
    wait_until_available(&store, Duration::from_secs(5)).await;
    full_roundtrip(&store).await;
}

#[tokio::test]
async fn a_silent_server_times_out_instead_of_hanging() {
    // Something accepts connections but never answers (a hung Redis, a wrong port).
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            match conn {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
    });
    let store = store_at(format!("redis://127.0.0.1:{port}/"), "silent");
    let started = Instant::now();
    let result = store.ping().await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "got {result:?}");
    assert!(
        elapsed >= OP_TIMEOUT - Duration::from_millis(50),
        "failed before the bound: {elapsed:?}"
    );
    assert!(elapsed < FAIL_FAST, "took {elapsed:?}");
    every_op_is_unavailable(&store, "no-secret-here").await;
}

#[tokio::test]
async fn an_outage_logs_one_warn_a_second_not_one_per_request() {
    let captured = support::logs::capture_logs();
    let mut redis = RedisServer::start();
    let app = support::app::spawn_app(
        support::app::AppOptions::redis_at(redis.url(), "outage_log").with("redis.timeout", "1s"),
    )
    .await;
    redis.stop();
    // The budget is one line a second per call site in the whole process, and
    // other tests of this binary may fail the session store too: their lines
    // count against the same bound, and one of theirs just before this test
    // can hold this test's first line back for up to a second. So fail for
    // longer than a second (at least one line must get through) and count
    // every line from the start.
    let mark = captured.mark();
    let started = Instant::now();
    let mut answered = 0;
    let tokens: Vec<String> = (0..25).map(|i| format!("tok-{i}")).collect();
    let mut waves = 0;
    while waves < 4 || started.elapsed() < Duration::from_millis(1_200) {
        let wave = futures_util::future::join_all(tokens.iter().map(|t| app.token_me(t))).await;
        for a in wave {
            assert_eq!((a.status, a.reason()), (503, Some("ERR_SESSION_STORE_UNAVAILABLE")));
            answered += 1;
        }
        waves += 1;
    }
    let elapsed = started.elapsed();
    let text = captured.since(mark);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("session store failed"))
        .collect();
    let allowed = elapsed.as_secs() as usize + 1;
    assert!(
        !lines.is_empty() && lines.len() <= allowed,
        "{} WARN lines for {answered} failed requests in {elapsed:?}:\n{text}",
        lines.len()
    );
    if lines.len() > 1 {
        assert!(lines[1..].iter().all(|l| l.contains("suppressed=")), "{text}");
    }
}
