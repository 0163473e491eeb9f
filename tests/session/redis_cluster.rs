//! The gateway on a real three-master Redis Cluster: concurrent logins in both
//! dialects, revocation on re-login (atomic for tokens, in steps for compat
//! sessions), a user's keys in one slot, and the store's behaviour while the
//! cluster is not there yet. The store contract itself runs against the
//! cluster in `store_contract.rs`.

use crate::support;
use crate::unavailable::{self, FAIL_FAST, LONG, assert_unavailable, record};

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use support::app::{AppOptions, TestApp, raw_data, sign, spawn_app};
use support::redis::unique_prefix;
use support::redis_cluster::{
    MASTERS, RedisCluster, free_cluster_ports, key_slot, keys_by_node, shared_cluster_nodes,
};
use weapp_gateway::session::store::{
    RedisClusterConfig, RedisStore, SessionId, SessionStore, SharedStore, user_tag,
};

/// A gateway whose session store is the shared test cluster, under `prefix`.
async fn cluster_app(prefix: &str) -> TestApp {
    spawn_app(
        AppOptions::memory()
            .with("session.store", "redis")
            .with("redis.cluster_nodes", json!(shared_cluster_nodes()))
            .with("redis.prefix", prefix)
            .with("redis.timeout", "2s")
            .with("session.login_rate_limit", json!({"per_minute": 6000, "burst": 1000})),
    )
    .await
}

/// compat first request for a fresh code of `openid`; returns the code.
async fn compat_login(app: &TestApp, openid: &str) -> String {
    let minted = app.mint(openid);
    let raw = raw_data(openid);
    let a = app.compat_login(&minted.code, &raw, &sign(&raw, &minted.session_key)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["openId"], openid);
    minted.code
}

/// token login with a fresh code of `openid`; returns the token.
async fn token_login(app: &TestApp, openid: &str) -> String {
    let minted = app.mint(openid);
    let a = app.token_login(&json!({"code": minted.code})).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["token"].as_str().expect("token").to_owned()
}

async fn assert_compat_live(app: &TestApp, code: &str, openid: &str) {
    let me = app.compat_me(code).await;
    assert_eq!((me.status, &me.body["openId"]), (200, &json!(openid)), "{:?}", me.body);
}

async fn assert_token_live(app: &TestApp, token: &str, openid: &str) {
    let me = app.token_me(token).await;
    assert_eq!((me.status, &me.body["openId"]), (200, &json!(openid)), "{:?}", me.body);
}

async fn assert_compat_revoked(app: &TestApp, code: &str) {
    let me = app.compat_me(code).await;
    assert_eq!((me.status, me.reason()), (401, Some("ERR_SESSION_EXPIRED")), "{:?}", me.body);
}

async fn assert_token_revoked(app: &TestApp, token: &str) {
    let me = app.token_me(token).await;
    assert_eq!((me.status, me.reason()), (401, Some("ERR_SESSION_EXPIRED")), "{:?}", me.body);
}

#[tokio::test]
async fn fifty_concurrent_compat_first_requests_with_one_code_exchange_once() {
    let app = cluster_app(&unique_prefix("cluster_compat_flight")).await;
    let minted = app.mint("o_cluster_frank");
    let raw = raw_data("frank");
    let sig = sign(&raw, &minted.session_key);
    let answers =
        futures_util::future::join_all((0..50).map(|_| app.compat_login(&minted.code, &raw, &sig)))
            .await;
    for a in &answers {
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.body["openId"], "o_cluster_frank");
    }
    assert_eq!(app.exchanges(), 1);
    assert_compat_live(&app, &minted.code, "o_cluster_frank").await;
}

#[tokio::test]
async fn twenty_users_log_in_concurrently_and_each_users_keys_share_a_slot() {
    let prefix = unique_prefix("cluster_twenty");
    let app = cluster_app(&prefix).await;
    let openids: Vec<String> = (0..20).map(|i| format!("o_cluster_user_{i}")).collect();
    let tokens = futures_util::future::join_all(openids.iter().map(|o| token_login(&app, o))).await;
    assert_eq!(app.exchanges(), 20);
    futures_util::future::join_all(
        openids.iter().zip(&tokens).map(|(o, t)| assert_token_live(&app, t, o)),
    )
    .await;

    // Where the keys landed: every master's own keys under this prefix.
    let seed = &shared_cluster_nodes()[0];
    let by_node = keys_by_node(seed, &format!("{prefix}*")).await;
    let node_of = |key: &str| {
        by_node.iter().find(|(_, keys)| keys.iter().any(|k| k == key)).map(|(url, _)| url.clone())
    };
    let mut nodes_used = HashSet::new();
    for (openid, token) in openids.iter().zip(&tokens) {
        let tag = user_tag(openid);
        assert!(token.starts_with(&format!("{tag}.")), "{token} carries its user's tag");
        assert!(!token.contains(openid.as_str()));
        let session = format!("{prefix}{}", SessionId::token(token).key_suffix());
        let index = by_node
            .iter()
            .flat_map(|(_, keys)| keys)
            .find(|k| k.starts_with(&format!("{prefix}openid:{{u:{tag}}}:")))
            .unwrap_or_else(|| panic!("no index key for {openid}"))
            .clone();
        assert!(!index.contains(openid.as_str()), "no raw openid in key names: {index}");
        let session_node = node_of(&session).expect("the session key is on a master");
        assert_eq!(node_of(&index), Some(session_node.clone()), "{session} / {index}");
        assert_eq!(key_slot(seed, &session).await, key_slot(seed, &index).await);
        nodes_used.insert(session_node);
    }
    assert!(nodes_used.len() > 1, "twenty users' slots spread over the masters: {nodes_used:?}");
    assert!(nodes_used.len() <= MASTERS);
}

#[tokio::test]
async fn a_new_login_revokes_the_previous_session_in_every_combination() {
    let app = cluster_app(&unique_prefix("cluster_revoke")).await;
    let user = "o_cluster_grace";

    // compat → compat: three steps (code slot, user slot, old code slot).
    let code1 = compat_login(&app, user).await;
    let code2 = compat_login(&app, user).await;
    assert_compat_revoked(&app, &code1).await;
    assert_compat_live(&app, &code2, user).await;

    // compat → token: one script in the user slot, then the old code session.
    let token1 = token_login(&app, user).await;
    assert_compat_revoked(&app, &code2).await;
    assert_token_live(&app, &token1, user).await;

    // token → token: all of it one script in the user slot.
    let token2 = token_login(&app, user).await;
    assert_token_revoked(&app, &token1).await;
    assert_token_live(&app, &token2, user).await;

    // token → compat: the new code session first, then one script in the
    // user slot repoints the index and deletes the old token.
    let code3 = compat_login(&app, user).await;
    assert_token_revoked(&app, &token2).await;
    assert_compat_live(&app, &code3, user).await;

    // Another user's sessions are untouched throughout; logout works.
    let other = token_login(&app, "o_cluster_heidi").await;
    let _ = compat_login(&app, user).await;
    assert_token_live(&app, &other, "o_cluster_heidi").await;
    assert_eq!(app.logout(&other).await.status, 200);
    assert_token_revoked(&app, &other).await;
}

#[tokio::test]
async fn sessions_are_shared_by_instances_on_one_cluster() {
    let prefix = unique_prefix("cluster_shared");
    let a = cluster_app(&prefix).await;
    let b = cluster_app(&prefix).await;
    let token = token_login(&a, "o_cluster_ivan").await;
    assert_token_live(&b, &token, "o_cluster_ivan").await;
    // A re-login through B revokes A's token, for both.
    let minted = b.mint("o_cluster_ivan");
    assert_eq!(b.token_login(&json!({"code": minted.code})).await.status, 200);
    assert_token_revoked(&a, &token).await;
    assert_token_revoked(&b, &token).await;
}

// ---- the store while the cluster is away ---------------------------------

const OP_TIMEOUT: Duration = Duration::from_millis(500);
fn cluster_store(nodes: Vec<String>, test: &str) -> RedisStore {
    RedisStore::new_cluster(
        RedisClusterConfig::new(nodes).with_prefix(unique_prefix(test)).with_op_timeout(OP_TIMEOUT),
    )
    .expect("constructing the store never needs the cluster")
}

/// Every operation fails fast with `Unavailable`, a code's creation too.
async fn every_op_is_unavailable(store: &RedisStore, secret: &str) {
    unavailable::every_op_is_unavailable(store, secret).await;
    let code = SessionId::code("outage");
    assert_unavailable("create code", secret, store.create(&code, &record("o"), LONG, LONG)).await;
}

#[tokio::test]
async fn starts_without_the_cluster_and_connects_when_it_appears() {
    // Nothing listens: construction works, every op fails fast, nothing
    // leaks the password.
    let secret = "hunter2-secret";
    let ports = free_cluster_ports(MASTERS);
    let with_secret =
        ports.iter().map(|p| format!("redis://:{secret}@127.0.0.1:{p}/")).collect::<Vec<_>>();
    let store = cluster_store(with_secret, "cluster_secret");
    assert!(!format!("{store:?}").contains(secret));
    every_op_is_unavailable(&store, secret).await;

    // The same store connects by itself once the cluster appears on its ports.
    let urls = ports.iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect::<Vec<_>>();
    let store = cluster_store(urls, "cluster_late");
    every_op_is_unavailable(&store, "no-secret-here").await;
    let _cluster = RedisCluster::start_on(&ports);
    let started = Instant::now();
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(e) if started.elapsed() < Duration::from_secs(15) => {
                eprintln!("not yet available: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("store did not recover: {e}"),
        }
    }
    eprintln!("recovered {:?} after the cluster formed", started.elapsed());
    let code = SessionId::code("after");
    store.create(&code, &record("o-after"), LONG, LONG).await.unwrap();
    assert_eq!(store.load(&code).await.unwrap().map(|r| r.openid).as_deref(), Some("o-after"));
    assert_eq!(store.current_for_openid("o-after").await.unwrap(), Some(code));
    store.kv_set("k", "v", LONG).await.unwrap();
    assert_eq!(store.kv_get("k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test]
async fn survives_a_master_restart() {
    let mut cluster = RedisCluster::start();
    let store = cluster_store(cluster.node_urls(), "cluster_master_restart");
    // Enough keys that every master holds some.
    let names: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    for name in &names {
        store.kv_set(name, "before", LONG).await.unwrap();
    }

    cluster.stop_node(1);
    // Keys of the stopped master fail fast; nothing hangs.
    let mut failed = 0;
    for name in &names {
        let started = Instant::now();
        if store.kv_get(name).await.is_err() {
            failed += 1;
        }
        assert!(started.elapsed() < FAIL_FAST, "kv_get took {:?}", started.elapsed());
    }
    assert!(failed > 0, "some keys lived on the stopped master");
    // Once the other nodes see the master gone, ping (/readyz) says so too.
    let started = Instant::now();
    while store.ping().await.is_ok() {
        assert!(started.elapsed() < Duration::from_secs(15), "ping still ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_unavailable("ping", "no-secret-here", store.ping()).await;

    cluster.restart_node(1);
    let started = Instant::now();
    for name in &names {
        loop {
            match store.kv_set(name, "after", LONG).await {
                Ok(()) => break,
                Err(e) if started.elapsed() < Duration::from_secs(15) => {
                    eprintln!("not yet available: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("store did not recover: {e}"),
            }
        }
        assert_eq!(store.kv_get(name).await.unwrap().as_deref(), Some("after"));
    }
    eprintln!("recovered {:?} after the master restarted", started.elapsed());
    store.ping().await.unwrap();
}
