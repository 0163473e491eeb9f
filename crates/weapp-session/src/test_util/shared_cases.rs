//! The [`SharedStore`] cases of the store contract (shared values and
//! locks), and the cases for a backend that implements both traits.

use std::sync::Arc;
use std::time::Duration;

use super::contract::{Both, Case, cases};
use super::session_cases::{LONG, record, sleep_ms};
use crate::SharedStore;
use crate::store::{SessionId, SessionKind};

type Store = Arc<dyn SharedStore>;

/// Every [`SharedStore`] case, in the order they are reported.
pub(super) const CASES: &[Case<dyn SharedStore>] =
    cases![kv_values_set_get_and_expire, locks_are_exclusive_until_released_by_their_holder];

/// The cases for one backend behind both traits.
pub(super) const BOTH: &[Case<dyn Both>] = cases![shared_keys_and_sessions_never_meet];

async fn kv_values_set_get_and_expire(store: Store) {
    assert!(store.kv_get("access_token").await.unwrap().is_none());
    store.kv_set("access_token", "v1", LONG).await.unwrap();
    assert_eq!(store.kv_get("access_token").await.unwrap().as_deref(), Some("v1"));
    store.kv_set("access_token", "v2", LONG).await.unwrap();
    assert_eq!(store.kv_get("access_token").await.unwrap().as_deref(), Some("v2"));

    store.kv_set("short", "x", Duration::from_secs(1)).await.unwrap();
    assert_eq!(store.kv_get("short").await.unwrap().as_deref(), Some("x"));
    sleep_ms(1_500).await;
    assert!(store.kv_get("short").await.unwrap().is_none());

    // A lock is not a kv value.
    let _token = store.try_lock("both", LONG).await.unwrap().expect("lock taken");
    assert!(store.kv_get("both").await.unwrap().is_none());
}

async fn locks_are_exclusive_until_released_by_their_holder(store: Store) {
    let first = store.try_lock("refresh", LONG).await.unwrap().expect("free lock is taken");
    assert!(first.len() >= 16, "fencing token is long enough: {first:?}");
    assert!(store.try_lock("refresh", LONG).await.unwrap().is_none(), "held");

    store.unlock("refresh", "not-the-token").await.unwrap();
    assert!(store.try_lock("refresh", LONG).await.unwrap().is_none(), "wrong token released it");

    store.unlock("refresh", &first).await.unwrap();
    let second = store.try_lock("refresh", LONG).await.unwrap().expect("released lock is free");
    assert_ne!(first, second);

    // An old holder cannot release the new holder's lock.
    store.unlock("refresh", &first).await.unwrap();
    assert!(store.try_lock("refresh", LONG).await.unwrap().is_none());

    // Locks expire.
    assert!(store.try_lock("brief", Duration::from_secs(1)).await.unwrap().is_some());
    sleep_ms(1_500).await;
    assert!(store.try_lock("brief", LONG).await.unwrap().is_some());
}

/// Shared values, locks and failure counters live beside the sessions in one
/// backend: none of them may ever read as another.
async fn shared_keys_and_sessions_never_meet(store: Arc<dyn Both>) {
    // A shared value or a lock never reads as a session, whatever it is called.
    store.kv_set("shared", "value", LONG).await.unwrap();
    let _held = store.try_lock("locked", LONG).await.unwrap().expect("a free lock is taken");
    for name in ["shared", "kv:shared", "locked", "lock:locked"] {
        assert!(store.load(&SessionId::code(name)).await.unwrap().is_none(), "code {name:?}");
        let token = SessionId { kind: SessionKind::Token, id: name.to_owned() };
        assert!(store.load(&token).await.unwrap().is_none(), "token {name:?}");
    }
    assert!(store.current_for_openid("shared").await.unwrap().is_none());

    // A session, its openid index and its failure counter never read as
    // shared values, nor hold a lock's place.
    let id = SessionId::code("both-code");
    store.create(&id, &record("o-both", "{}"), LONG, LONG).await.unwrap();
    assert_eq!(store.count_failure(&id, LONG).await.unwrap(), 1);
    for name in ["both-code", "code:both-code", "o-both", "openid:o-both", "fail:code:both-code"] {
        assert!(store.kv_get(name).await.unwrap().is_none(), "kv {name:?}");
    }
    assert!(store.try_lock("both-code", LONG).await.unwrap().is_some(), "a session is no lock");
    assert!(store.try_lock("code:both-code", LONG).await.unwrap().is_some());

    // And writing shared values beside it leaves the session as it was.
    store.kv_set("both-code", "v", LONG).await.unwrap();
    store.kv_set("code:both-code", "v", LONG).await.unwrap();
    let got = store.load(&id).await.unwrap().expect("the session is untouched");
    assert_eq!(got.openid, "o-both");
    assert_eq!(store.current_for_openid("o-both").await.unwrap(), Some(id));
}
