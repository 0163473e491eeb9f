//! What both Redis outage suites (one server, the Cluster) assert of a store
//! whose Redis is gone: every operation fails fast with `Unavailable`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use weapp_gateway::session::store::{
    Expiry, RedisStore, SessionId, SessionRecord, SessionStore, SharedStore, StoreError,
};

/// What "quickly" means: the op timeout plus a generous margin for slow CI.
pub const FAIL_FAST: Duration = Duration::from_secs(2);
pub const LONG: Duration = Duration::from_secs(600);

pub fn record(openid: &str) -> SessionRecord {
    let user = RawValue::from_string(format!(r#"{{"openId":"{openid}"}}"#)).unwrap();
    SessionRecord::new(openid, "c2Vzc2lvbi1rZXk=", Arc::from(user))
}

/// Run `op`, assert it failed with `Unavailable` within [`FAIL_FAST`], and
/// that the error text does not leak `secret`.
pub async fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    secret: &str,
    op: impl Future<Output = Result<T, StoreError>>,
) {
    let started = Instant::now();
    let result = op.await;
    let elapsed = started.elapsed();
    match result {
        Err(StoreError::Unavailable(msg)) => {
            assert!(!msg.contains(secret), "{what}: error text leaks the secret: {msg}");
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < FAIL_FAST, "{what} took {elapsed:?} to fail");
}

/// Every operation of the store fails fast with `Unavailable`.
pub async fn every_op_is_unavailable(store: &RedisStore, secret: &str) {
    let id = SessionId::token("outage");
    let expiry = Expiry::new(LONG, LONG);
    assert_unavailable("ping", secret, store.ping()).await;
    assert_unavailable("load", secret, store.load(&id)).await;
    assert_unavailable("load_and_touch", secret, store.load_and_touch(&id, expiry)).await;
    assert_unavailable("create", secret, store.create(&id, &record("o"), LONG, LONG)).await;
    assert_unavailable("update", secret, store.update(&id, &record("o"))).await;
    assert_unavailable("delete", secret, store.delete(&id)).await;
    assert_unavailable("current_for_openid", secret, store.current_for_openid("o")).await;
    assert_unavailable("kv_get", secret, store.kv_get("k")).await;
    assert_unavailable("kv_set", secret, store.kv_set("k", "v", LONG)).await;
    assert_unavailable("try_lock", secret, store.try_lock("l", LONG)).await;
    assert_unavailable("unlock", secret, store.unlock("l", "t")).await;
}
