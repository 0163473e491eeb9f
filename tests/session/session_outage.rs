//! Redis going away under a running gateway: 503 envelopes within the bound,
//! no crash or hang, normal service once Redis is back.

use crate::support;

use std::time::{Duration, Instant};

use support::app::{AppOptions, raw_data, sign, spawn_app};
use support::redis::RedisServer;

#[tokio::test]
async fn redis_stopped_mid_test_gives_503_then_recovers() {
    let mut redis = RedisServer::start();
    let app =
        spawn_app(AppOptions::redis_at(redis.url(), "outage").with("redis.timeout", "1s")).await;
    let minted = app.mint("o_outage");
    let raw = raw_data("outage");
    let sig = sign(&raw, &minted.session_key);
    assert_eq!(app.compat_login(&minted.code, &raw, &sig).await.status, 200);
    assert_eq!(app.get("/readyz", &[]).await.status, 200);

    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let a = app.compat_me(&minted.code).await;
        assert_eq!((a.status, a.reason()), (503, Some("ERR_SESSION_STORE_UNAVAILABLE")));
        assert!(started.elapsed() < Duration::from_millis(2_500), "{:?}", started.elapsed());
    }
    let token = app.token_me("some-token-value").await;
    assert_eq!(token.reason(), Some("ERR_SESSION_STORE_UNAVAILABLE"));
    let ready = app.get("/readyz", &[]).await;
    assert_eq!((ready.status, ready.reason()), (503, Some("ERR_SESSION_STORE_UNAVAILABLE")));
    // Liveness does not depend on Redis.
    assert_eq!(app.get("/healthz", &[]).await.status, 200);

    redis.start_again(); // same port, empty data
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = app.get("/readyz", &[]).await;
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "gateway did not recover: {:?}", a.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The data is gone with that Redis, so the old code is expired; a new login works.
    assert_eq!(app.compat_me(&minted.code).await.reason(), Some("ERR_SESSION_EXPIRED"));
    let minted = app.mint("o_outage");
    let sig = sign(&raw, &minted.session_key);
    assert_eq!(app.compat_login(&minted.code, &raw, &sig).await.status, 200);
}
