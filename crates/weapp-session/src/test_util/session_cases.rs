//! The [`SessionStore`] cases of the store contract.
//!
//! Each case gets a store of its own and panics on the first broken promise;
//! the message says which. Ids, openids and timings are the case's own.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use super::contract::{Case, cases};
use crate::SessionStore;
use crate::store::{Expiry, SessionId, SessionKind, SessionRecord, new_token, unix_now};

type Store = Arc<dyn SessionStore>;

/// Long enough never to run out during a case.
pub(super) const LONG: Duration = Duration::from_secs(600);

/// Every case, in the order they are reported.
pub(super) const CASES: &[Case<dyn SessionStore>] = cases![
    absent_sessions_load_as_none,
    create_then_load_roundtrips_the_record,
    a_new_login_revokes_the_previous_session,
    issued_tokens_revoke_each_other_and_compat_sessions,
    concurrent_logins_of_one_user_leave_exactly_one_session,
    creating_the_same_id_twice_keeps_it,
    namespaces_are_separate,
    sessions_expire_after_their_ttl,
    touching_slides_the_idle_ttl,
    touching_enforces_the_absolute_lifetime,
    a_touch_racing_a_delete_never_revives_the_session,
    update_keeps_the_ttl,
    delete_removes_the_session_and_its_own_index_entry,
    ping_answers,
    decryption_failures_count_per_session_in_a_fixed_window,
];

/// A record of `openid` created now, with `user` as its user info (JSON).
pub(super) fn record(openid: &str, user: &str) -> SessionRecord {
    SessionRecord {
        openid: openid.to_owned(),
        session_key: format!("sk-{openid}=="),
        unionid: None,
        user: Arc::from(RawValue::from_string(user.to_owned()).unwrap()),
        created_at: unix_now(),
    }
}

pub(super) async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn user_of(store: &Store, id: &SessionId) -> Option<String> {
    store.load(id).await.unwrap().map(|r| r.user.get().to_owned())
}

async fn absent_sessions_load_as_none(store: Store) {
    let id = SessionId::code("never-created");
    assert!(store.load(&id).await.unwrap().is_none());
    let expiry = Expiry { idle: LONG, max_lifetime: LONG };
    assert!(store.load_and_touch(&id, expiry).await.unwrap().is_none());
    assert!(store.current_for_openid("nobody").await.unwrap().is_none());
    store.delete(&id).await.unwrap();
}

async fn create_then_load_roundtrips_the_record(store: Store) {
    let id = SessionId::code("code-roundtrip");
    let user = r#"{"nickName":"小明","avatarUrl":"https://x/a.png","gender":1,"openId":"o-rt"}"#;
    let mut rec = record("o-rt", user);
    rec.session_key = "tiihtNczf5v6AKRyjwEUhQ==".to_owned();
    rec.unionid = Some("u-rt".to_owned());
    store.create(&id, &rec, LONG, LONG).await.unwrap();

    let got = store.load(&id).await.unwrap().expect("session present");
    assert_eq!(got.openid, "o-rt");
    assert_eq!(got.session_key, "tiihtNczf5v6AKRyjwEUhQ==");
    assert_eq!(got.unionid.as_deref(), Some("u-rt"));
    assert_eq!(got.user.get(), user);
    assert_eq!(got.created_at, rec.created_at);
    assert_eq!(store.current_for_openid("o-rt").await.unwrap(), Some(id));

    // No unionid stays no unionid; token sessions roundtrip too.
    let token = SessionId::token("some-opaque-token");
    store.create(&token, &record("o-rt2", r#"{"openId":"o-rt2"}"#), LONG, LONG).await.unwrap();
    let got = store.load(&token).await.unwrap().expect("token session present");
    assert_eq!(got.unionid, None);
    assert_eq!(got.user.get(), r#"{"openId":"o-rt2"}"#);
    assert_eq!(store.current_for_openid("o-rt2").await.unwrap(), Some(token));
}

async fn a_new_login_revokes_the_previous_session(store: Store) {
    let first = SessionId::code("code-first");
    let second = SessionId::code("code-second");
    store.create(&first, &record("o-re", r#"{"n":1}"#), LONG, LONG).await.unwrap();
    store.create(&second, &record("o-re", r#"{"n":2}"#), LONG, LONG).await.unwrap();
    assert!(store.load(&first).await.unwrap().is_none(), "the previous session is revoked");
    assert_eq!(user_of(&store, &second).await.as_deref(), Some(r#"{"n":2}"#));
    assert_eq!(store.current_for_openid("o-re").await.unwrap(), Some(second.clone()));

    // The index is per user, whatever the dialect: a token login revokes a code session.
    let token = SessionId::token("token-after-code");
    store.create(&token, &record("o-re", r#"{"n":3}"#), LONG, LONG).await.unwrap();
    assert!(store.load(&second).await.unwrap().is_none());
    assert_eq!(store.current_for_openid("o-re").await.unwrap(), Some(token.clone()));

    // Another user's session is untouched.
    let other = SessionId::code("code-other-user");
    store.create(&other, &record("o-other", r#"{"n":4}"#), LONG, LONG).await.unwrap();
    assert!(store.load(&token).await.unwrap().is_some());
}

async fn issued_tokens_revoke_each_other_and_compat_sessions(store: Store) {
    let issued = |openid: &str| SessionId::token(&new_token(openid).unwrap());
    let code = SessionId::code("code-before-tokens");
    store.create(&code, &record("o-tag", r#"{"n":1}"#), LONG, LONG).await.unwrap();

    // A token login revokes the compat session (another slot in a cluster).
    let first = issued("o-tag");
    store.create(&first, &record("o-tag", r#"{"n":2}"#), LONG, LONG).await.unwrap();
    assert!(store.load(&code).await.unwrap().is_none(), "compat session revoked");
    assert_eq!(store.current_for_openid("o-tag").await.unwrap(), Some(first.clone()));

    // A second token login revokes the first token (same slot: one script).
    let second = issued("o-tag");
    store.create(&second, &record("o-tag", r#"{"n":3}"#), LONG, LONG).await.unwrap();
    assert!(store.load(&first).await.unwrap().is_none(), "previous token revoked");
    assert_eq!(user_of(&store, &second).await.as_deref(), Some(r#"{"n":3}"#));

    // A compat login revokes the token, and another user's token is untouched.
    let other = issued("o-tag-other");
    store.create(&other, &record("o-tag-other", "{}"), LONG, LONG).await.unwrap();
    let code = SessionId::code("code-after-tokens");
    store.create(&code, &record("o-tag", r#"{"n":4}"#), LONG, LONG).await.unwrap();
    assert!(store.load(&second).await.unwrap().is_none(), "token revoked by a compat login");
    assert_eq!(store.current_for_openid("o-tag").await.unwrap(), Some(code.clone()));
    assert!(store.load(&other).await.unwrap().is_some());

    // Logging out of a token clears its index entry; a compat logout too.
    store.delete(&other).await.unwrap();
    assert!(store.load(&other).await.unwrap().is_none());
    assert!(store.current_for_openid("o-tag-other").await.unwrap().is_none());
    store.delete(&code).await.unwrap();
    assert!(store.current_for_openid("o-tag").await.unwrap().is_none());

    // Past its lifetime an issued token is deleted on touch, index included.
    let old = issued("o-tag-old");
    let mut rec = record("o-tag-old", "{}");
    rec.created_at = unix_now() - 100;
    store.create(&old, &rec, LONG, LONG).await.unwrap();
    let expiry = Expiry { idle: Duration::from_secs(60), max_lifetime: Duration::from_secs(50) };
    assert!(store.load_and_touch(&old, expiry).await.unwrap().is_none());
    assert!(store.current_for_openid("o-tag-old").await.unwrap().is_none());
}

async fn concurrent_logins_of_one_user_leave_exactly_one_session(store: Store) {
    let ids: Vec<SessionId> = (0..24)
        .map(|i| match i % 3 {
            0 => SessionId::code(&format!("code-race-{i}")),
            1 => SessionId::token(&new_token("o-race").unwrap()),
            _ => SessionId::token(&format!("untagged-race-{i}")),
        })
        .collect();
    let logins = ids.iter().map(|id| {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move { store.create(&id, &record("o-race", "{}"), LONG, LONG).await })
    });
    for login in futures_util::future::join_all(logins).await {
        login.unwrap().unwrap();
    }
    let current = store.current_for_openid("o-race").await.unwrap().expect("indexed");
    for id in &ids {
        let live = store.load(id).await.unwrap().is_some();
        assert_eq!(live, *id == current, "{id:?} (current {current:?})");
    }
}

async fn creating_the_same_id_twice_keeps_it(store: Store) {
    let id = SessionId::code("code-twice");
    store.create(&id, &record("o-tw", r#"{"v":1}"#), LONG, LONG).await.unwrap();
    store.create(&id, &record("o-tw", r#"{"v":2}"#), LONG, LONG).await.unwrap();
    assert_eq!(user_of(&store, &id).await.as_deref(), Some(r#"{"v":2}"#));
    assert_eq!(store.current_for_openid("o-tw").await.unwrap(), Some(id));
}

async fn namespaces_are_separate(store: Store) {
    let code = SessionId::code("same-string");
    let token = SessionId { kind: SessionKind::Token, id: "same-string".to_owned() };
    store.create(&code, &record("o-ns-code", r#"{"who":"code"}"#), LONG, LONG).await.unwrap();
    store.create(&token, &record("o-ns-token", r#"{"who":"token"}"#), LONG, LONG).await.unwrap();
    assert_eq!(user_of(&store, &code).await.as_deref(), Some(r#"{"who":"code"}"#));
    assert_eq!(user_of(&store, &token).await.as_deref(), Some(r#"{"who":"token"}"#));

    // An openid (or an index key spelled out) sent as a code finds nothing.
    assert!(store.load(&SessionId::code("o-ns-code")).await.unwrap().is_none());
    assert!(store.load(&SessionId::code("openid:o-ns-code")).await.unwrap().is_none());
    assert!(store.current_for_openid("same-string").await.unwrap().is_none());

    // Deleting one namespace's session leaves the other's alone.
    store.delete(&code).await.unwrap();
    assert!(store.load(&code).await.unwrap().is_none());
    assert!(store.load(&token).await.unwrap().is_some());
}

async fn sessions_expire_after_their_ttl(store: Store) {
    let id = SessionId::code("code-ttl");
    let short = Duration::from_secs(1);
    store.create(&id, &record("o-ttl", "{}"), short, short).await.unwrap();
    assert!(store.load(&id).await.unwrap().is_some());
    assert_eq!(store.current_for_openid("o-ttl").await.unwrap(), Some(id.clone()));
    sleep_ms(1_500).await;
    assert!(store.load(&id).await.unwrap().is_none());
    assert!(store.current_for_openid("o-ttl").await.unwrap().is_none());
}

async fn touching_slides_the_idle_ttl(store: Store) {
    let idle = Duration::from_secs(2);
    let expiry = Expiry { idle, max_lifetime: LONG };
    let touched = SessionId::token("touched");
    let loaded = SessionId::token("only-loaded");
    store.create(&touched, &record("o-touched", "{}"), idle, LONG).await.unwrap();
    store.create(&loaded, &record("o-loaded", "{}"), idle, LONG).await.unwrap();

    sleep_ms(1_200).await;
    assert!(store.load_and_touch(&touched, expiry).await.unwrap().is_some());
    assert!(store.load(&loaded).await.unwrap().is_some(), "plain load does not slide");

    sleep_ms(1_200).await; // 2.4 s after creation
    assert!(store.load(&touched).await.unwrap().is_some(), "the touch extended it");
    assert!(store.load(&loaded).await.unwrap().is_none(), "expired at 2 s");

    sleep_ms(1_200).await; // 2.4 s after the touch
    assert!(store.load(&touched).await.unwrap().is_none());
}

async fn a_touch_racing_a_delete_never_revives_the_session(store: Store) {
    // A touch reads then re-writes with a fresh TTL; a logout that lands in
    // between must still win once it has returned.
    let expiry = Expiry { idle: LONG, max_lifetime: LONG };
    for round in 0..20 {
        let id = SessionId::token(&format!("race-touch-{round}"));
        store.create(&id, &record("o-race-touch", "{}"), LONG, LONG).await.unwrap();
        let toucher = {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                for _ in 0..50 {
                    if store.load_and_touch(&id, expiry).await.unwrap().is_none() {
                        break;
                    }
                }
            })
        };
        tokio::task::yield_now().await;
        store.delete(&id).await.unwrap();
        toucher.await.unwrap();
        assert!(store.load(&id).await.unwrap().is_none(), "round {round}: revived by a touch");
    }
}

async fn touching_enforces_the_absolute_lifetime(store: Store) {
    // Past its lifetime: reported absent, deleted, index gone.
    let old = SessionId::token("too-old");
    let mut rec = record("o-old", "{}");
    rec.created_at = unix_now() - 100;
    store.create(&old, &rec, LONG, LONG).await.unwrap();
    let expiry = Expiry { idle: Duration::from_secs(60), max_lifetime: Duration::from_secs(50) };
    assert!(store.load_and_touch(&old, expiry).await.unwrap().is_none());
    assert!(store.load(&old).await.unwrap().is_none(), "deleted, not just hidden");
    assert!(store.current_for_openid("o-old").await.unwrap().is_none());

    // Close to its lifetime: the touch caps the TTL at what is left (~2 s), not idle.
    let ending = SessionId::token("nearly-over");
    let mut rec = record("o-ending", "{}");
    rec.created_at = unix_now() - 10;
    store.create(&ending, &rec, LONG, LONG).await.unwrap();
    let expiry = Expiry { idle: Duration::from_secs(60), max_lifetime: Duration::from_secs(12) };
    assert!(store.load_and_touch(&ending, expiry).await.unwrap().is_some());
    sleep_ms(2_500).await;
    assert!(store.load(&ending).await.unwrap().is_none());
}

async fn update_keeps_the_ttl(store: Store) {
    let id = SessionId::token("updated");
    store.create(&id, &record("o-up", r#"{"v":1}"#), Duration::from_secs(2), LONG).await.unwrap();
    sleep_ms(1_000).await;
    assert!(store.update(&id, &record("o-up", r#"{"v":2}"#)).await.unwrap());
    assert_eq!(user_of(&store, &id).await.as_deref(), Some(r#"{"v":2}"#));
    sleep_ms(1_300).await; // 2.3 s after creation, 1.3 s after the update
    assert!(
        store.load(&id).await.unwrap().is_none(),
        "the update neither reset nor removed the TTL"
    );

    let missing = SessionId::token("never-there");
    assert!(!store.update(&missing, &record("o-up2", "{}")).await.unwrap());
    assert!(store.load(&missing).await.unwrap().is_none(), "update does not create");
}

async fn delete_removes_the_session_and_its_own_index_entry(store: Store) {
    let id = SessionId::token("logout-me");
    store.create(&id, &record("o-del", "{}"), LONG, LONG).await.unwrap();
    store.delete(&id).await.unwrap();
    assert!(store.load(&id).await.unwrap().is_none());
    assert!(store.current_for_openid("o-del").await.unwrap().is_none());
    store.delete(&id).await.unwrap(); // twice is fine

    // A session whose openid's index points at another session: deleting it
    // must leave that index alone.
    let stale = SessionId::token("stale");
    let current = SessionId::token("current");
    store.create(&stale, &record("o-a", "{}"), LONG, LONG).await.unwrap();
    assert!(store.update(&stale, &record("o-b", "{}")).await.unwrap());
    store.create(&current, &record("o-b", "{}"), LONG, LONG).await.unwrap();
    assert!(store.load(&stale).await.unwrap().is_some());
    store.delete(&stale).await.unwrap();
    assert!(store.load(&stale).await.unwrap().is_none());
    assert_eq!(store.current_for_openid("o-b").await.unwrap(), Some(current.clone()));
    assert!(store.load(&current).await.unwrap().is_some());
}

async fn ping_answers(store: Store) {
    store.ping().await.unwrap();
}

async fn decryption_failures_count_per_session_in_a_fixed_window(store: Store) {
    let window = Duration::from_millis(1_500);
    let token = SessionId::token(&new_token("o-fail").unwrap());
    let code = SessionId::code("code-fail");
    // A live session beside its counter: counting never touches it.
    store.create(&token, &record("o-fail", "{}"), LONG, LONG).await.unwrap();
    assert_eq!(store.count_failure(&token, window).await.unwrap(), 1);
    assert_eq!(store.count_failure(&token, window).await.unwrap(), 2);
    assert_eq!(store.count_failure(&code, window).await.unwrap(), 1, "per session");
    assert!(store.load(&token).await.unwrap().is_some());
    assert!(store.load(&code).await.unwrap().is_none(), "a counter is not a session");

    // Concurrent failures each count once.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (store, id) = (store.clone(), token.clone());
            tokio::spawn(async move { store.count_failure(&id, window).await.unwrap() })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (3..=12).collect::<Vec<u64>>());

    // Later failures do not extend the window; after it, counting starts over.
    sleep_ms(900).await;
    assert_eq!(store.count_failure(&token, window).await.unwrap(), 13);
    sleep_ms(900).await;
    assert_eq!(store.count_failure(&token, window).await.unwrap(), 1);
    assert_eq!(store.count_failure(&code, window).await.unwrap(), 1);
}
