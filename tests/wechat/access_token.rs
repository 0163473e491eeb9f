//! The shared access token against the fake WeChat over real HTTP, with a real
//! Redis shared by two gateway instances (or the memory store).

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use support::logs::Captured;
use support::redis::{shared_redis_url, unique_prefix};
use tokio::task::JoinSet;
use weapp_gateway::session::store::{MemoryStore, RedisStore, RedisStoreConfig, SharedStore};
use weapp_gateway::wechat::{
    ACCESS_TOKEN_KV, ACCESS_TOKEN_LOCK, AccessTokenConfig, AccessTokens, FakeWeChat, Faults,
    GET_PHONE_NUMBER, MSG_SEC_CHECK, STABLE_TOKEN, SecCheckSuggest, WeChatClient, WeChatConfig,
    WeChatError,
};

const APP_ID: &str = "wx_token_test_app";
const SECRET: &str = "token-test-AppSecret-never-logged";

fn client(addr: SocketAddr, secret: &str) -> WeChatClient {
    let mut cfg = WeChatConfig::new(APP_ID, secret);
    cfg.api_base = format!("http://{addr}");
    cfg.connect_timeout = Duration::from_millis(500);
    cfg.timeout = Duration::from_secs(2);
    WeChatClient::new(cfg).expect("client")
}

fn test_config() -> AccessTokenConfig {
    AccessTokenConfig::default()
        .with_wait_step(Duration::from_millis(20))
        .with_max_wait(Duration::from_secs(5))
}

fn redis_store(prefix: &str) -> Arc<dyn SharedStore> {
    Arc::new(
        RedisStore::new(RedisStoreConfig::new(shared_redis_url()).with_prefix(prefix))
            .expect("redis store"),
    )
}

/// One gateway instance: its own WeChat client and its own Redis connection.
fn instance(addr: SocketAddr, prefix: &str, cfg: AccessTokenConfig) -> AccessTokens {
    AccessTokens::with_config(client(addr, SECRET), redis_store(prefix), cfg)
}

/// A fake WeChat and two gateway instances sharing one Redis prefix.
async fn two_instances(test: &str) -> (FakeWeChat, SocketAddr, AccessTokens, AccessTokens) {
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.expect("fake wechat");
    let prefix = unique_prefix(test);
    let a = instance(addr, &prefix, test_config());
    let b = instance(addr, &prefix, test_config());
    (fake, addr, a, b)
}

/// Runs `n` concurrent text checks spread over `instances`; all must pass.
async fn concurrent_checks(instances: &[AccessTokens], n: usize) {
    let mut set = JoinSet::new();
    for i in 0..n {
        let tokens = instances[i % instances.len()].clone();
        set.spawn(async move { tokens.msg_sec_check(&format!("o-{i}"), "hello there").await });
    }
    while let Some(joined) = set.join_next().await {
        let verdict = joined.expect("task").expect("msg_sec_check");
        assert_eq!(verdict.suggest, SecCheckSuggest::Pass);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_on_two_instances_fetch_one_token() {
    init_logs();
    let (fake, _addr, a, b) = two_instances("token_two_instances").await;
    concurrent_checks(&[a.clone(), b.clone()], 50).await;
    let stats = fake.stats();
    assert_eq!(stats.calls_to(STABLE_TOKEN), 1, "{stats:?}");
    assert_eq!(stats.calls_to(MSG_SEC_CHECK), 50, "{stats:?}");
    let (ta, tb) = (a.access_token().await.expect("a"), b.access_token().await.expect("b"));
    assert_eq!(ta.expose_secret(), tb.expose_secret());
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_token_is_refreshed_once_for_everyone() {
    init_logs();
    let (fake, _addr, a, b) = two_instances("token_expired").await;
    concurrent_checks(&[a.clone(), b.clone()], 10).await;
    let before = a.access_token().await.expect("token");
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 1);

    fake.expire_access_tokens();
    let mut set = JoinSet::new();
    for i in 0..50 {
        let tokens = if i % 2 == 0 { a.clone() } else { b.clone() };
        if i % 4 < 2 {
            let code = fake.mint_phone_code(format!("1380013{i:04}"), "86");
            set.spawn(async move {
                let info = tokens.phone_number(&code).await.expect("phone_number");
                assert_eq!(info["purePhoneNumber"], format!("1380013{i:04}"));
            });
        } else {
            set.spawn(async move {
                let verdict = tokens.msg_sec_check("o-1", "fine text").await.expect("check");
                assert!(verdict.is_pass());
            });
        }
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("call succeeded");
    }
    let stats = fake.stats();
    assert_eq!(stats.calls_to(STABLE_TOKEN), 2, "{stats:?}");
    // Every call that carried the expired token was retried once.
    let calls = stats.calls_to(GET_PHONE_NUMBER) + stats.calls_to(MSG_SEC_CHECK);
    assert!(calls > 60, "{stats:?}");
    let after = b.access_token().await.expect("token");
    assert_ne!(before.expose_secret(), after.expose_secret());
    assert_eq!(a.access_token().await.expect("token").expose_secret(), after.expose_secret());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_refreshed_before_it_expires() {
    init_logs();
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.expect("fake wechat");
    fake.set_token_ttl(Duration::from_secs(3));
    let prefix = unique_prefix("token_early_refresh");
    let cfg = test_config().with_refresh_margin(Duration::from_secs(2));
    let a = instance(addr, &prefix, cfg.clone());
    let b = instance(addr, &prefix, cfg);

    let first = a.access_token().await.expect("token");
    assert_eq!(b.access_token().await.expect("token").expose_secret(), first.expose_secret());
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.msg_sec_check("o-1", "still fresh").await.expect("check");
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 1);

    // Past the refresh point (1.5 s: the 2 s margin is capped at half the 3 s
    // lifetime) but before expiry: refreshed proactively, no failed call.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    a.msg_sec_check("o-1", "refresh me").await.expect("check");
    let second = a.access_token().await.expect("token");
    assert_ne!(first.expose_secret(), second.expose_secret());
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 2);
    assert_eq!(fake.stats().calls_to(MSG_SEC_CHECK), 2);
    // The other instance picks the new token up from Redis.
    assert_eq!(b.access_token().await.expect("token").expose_secret(), second.expose_secret());
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_single_instance_fetches_one_token() {
    init_logs();
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.expect("fake wechat");
    let tokens = AccessTokens::with_config(
        client(addr, SECRET),
        Arc::new(MemoryStore::new(1_000)),
        test_config(),
    );
    concurrent_checks(std::slice::from_ref(&tokens), 50).await;
    let stats = fake.stats();
    assert_eq!(stats.calls_to(STABLE_TOKEN), 1, "{stats:?}");
    assert_eq!(stats.calls_to(MSG_SEC_CHECK), 50, "{stats:?}");

    fake.expire_access_tokens();
    concurrent_checks(&[tokens], 20).await;
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 2);
}

#[tokio::test]
async fn msg_sec_check_risky_and_pass() {
    init_logs();
    let (fake, addr, a, _b) = two_instances("token_sec_check").await;
    fake.set_risky_words(vec!["赌博".into(), "forbidden".into()]);
    let risky = a.msg_sec_check("o-1", "来一起赌博吧").await.expect("check");
    assert_eq!(risky.suggest, SecCheckSuggest::Risky);
    assert_eq!(risky.label, 20001);
    assert!(!risky.is_pass());
    assert!(risky.trace_id.is_some());
    let pass = a.msg_sec_check("o-1", "今天天气不错").await.expect("check");
    assert_eq!(pass.suggest, SecCheckSuggest::Pass);
    assert_eq!(pass.label, 100);

    // The dev endpoint replaces the list.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("http://{addr}/dev/risky-words"))
        .json(&json!({"words": ["spam"]}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(answer, json!({"words": ["spam"]}));
    assert!(a.msg_sec_check("o-1", "forbidden").await.expect("check").is_pass());
    let verdict = a.msg_sec_check("o-1", "buy spam now").await.expect("check");
    assert_eq!(verdict.suggest, SecCheckSuggest::Risky);
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 1);
}

#[tokio::test]
async fn phone_number_happy_path_and_bad_codes() {
    init_logs();
    let (fake, addr, a, _b) = two_instances("token_phone").await;
    let code = fake.mint_phone_code("13800138000", "86");
    let info = a.phone_number(&code).await.expect("phone");
    assert_eq!(info["phoneNumber"], "13800138000");
    assert_eq!(info["purePhoneNumber"], "13800138000");
    assert_eq!(info["countryCode"], "86");
    assert_eq!(info["watermark"]["appid"], APP_ID);

    // Codes are single use; unknown codes are 40029.
    assert_api_error(a.phone_number(&code).await, 40029);
    assert_api_error(a.phone_number("no-such-code").await, 40029);

    // Minted over the dev endpoint.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let minted: Value = reqwest::Client::new()
        .post(format!("http://{addr}/dev/phone-codes"))
        .json(&json!({"phoneNumber": "+1 2025550123", "countryCode": "1"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let code = minted["code"].as_str().expect("code");
    let info = a.phone_number(code).await.expect("phone");
    assert_eq!(info["phoneNumber"], "+1 2025550123");
    assert_eq!(info["purePhoneNumber"], "2025550123");
    assert_eq!(info["countryCode"], "1");
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 1);
}

#[tokio::test]
async fn wrong_secret_is_40125_without_leaking_it() {
    init_logs();
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.expect("fake wechat");
    let wrong = "wrong-secret-value-123";
    let tokens = AccessTokens::with_config(
        client(addr, wrong),
        redis_store(&unique_prefix("token_wrong_secret")),
        test_config(),
    );
    let err = tokens.msg_sec_check("o-1", "x").await.expect_err("must fail");
    assert!(matches!(err, WeChatError::Api { errcode: 40125, .. }), "{err:?}");
    let shown = format!("{err} {err:?} {tokens:?}");
    assert!(!shown.contains(wrong) && !shown.contains(SECRET), "{shown}");
    assert_eq!(fake.stats().calls_to(MSG_SEC_CHECK), 0);
}

#[tokio::test]
async fn try_calls_keep_the_token_s_failure_apart_from_the_call_s() {
    init_logs();
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.expect("fake wechat");
    // A wrong AppSecret: the token cannot be had (outer error), nothing is called.
    let wrong = AccessTokens::with_config(
        client(addr, "wrong-secret-value-123"),
        redis_store(&unique_prefix("token_try_wrong")),
        test_config(),
    );
    let code = fake.mint_phone_code("13800138000", "86");
    match wrong.try_phone_number(&code).await {
        Err(WeChatError::Api { errcode: 40125, .. }) => {}
        other => panic!("expected the token's 40125, got {other:?}"),
    }
    match wrong.try_msg_sec_check("o-1", "x").await {
        Err(WeChatError::Api { errcode: 40125, .. }) => {}
        other => panic!("expected the token's 40125, got {other:?}"),
    }
    assert_eq!(fake.stats().calls_to(GET_PHONE_NUMBER) + fake.stats().calls_to(MSG_SEC_CHECK), 0);
    // WeChat down while getting the token: outer too.
    fake.set_faults(Faults::default().with_http_500());
    let fresh = instance(addr, &unique_prefix("token_try_down"), test_config());
    assert!(matches!(fresh.try_phone_number(&code).await, Err(WeChatError::Unreachable(_))));
    fake.set_faults(Faults::default());

    // A good token and a bad code: the call's own error (inner).
    let good = instance(addr, &unique_prefix("token_try_good"), test_config());
    match good.try_phone_number("no-such-code").await {
        Ok(Err(WeChatError::Api { errcode: 40029, .. })) => {}
        other => panic!("expected the call's 40029, got {other:?}"),
    }
    let info = good.try_phone_number(&code).await.expect("token").expect("phone");
    assert_eq!(info["purePhoneNumber"], "13800138000");
    // An expired token is refreshed and the retry succeeds: not an error at all.
    fake.expire_access_tokens();
    assert!(good.try_msg_sec_check("o-1", "x").await.expect("token").expect("check").is_pass());
    // The flattening calls still answer the plain errcode.
    assert_api_error(good.phone_number("no-such-code").await, 40029);
    assert_api_error(wrong.phone_number("no-such-code").await, 40125);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_refresh_is_shared_not_repeated_per_caller() {
    init_logs();
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.expect("fake wechat");
    fake.set_faults(Faults::default().with_delay_ms(300).with_http_500());
    let tokens = instance(addr, &unique_prefix("token_failed_refresh"), test_config());
    let mut set = JoinSet::new();
    for _ in 0..20 {
        let tokens = tokens.clone();
        set.spawn(async move { tokens.msg_sec_check("o-1", "x").await });
    }
    while let Some(joined) = set.join_next().await {
        let err = joined.expect("task").expect_err("WeChat is down");
        assert!(matches!(err, WeChatError::Unreachable(_)), "{err:?}");
    }
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 1);

    // Once WeChat is back, the next call refreshes.
    fake.set_faults(Faults::default());
    tokens.msg_sec_check("o-1", "x").await.expect("check");
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 2);
}

#[tokio::test]
async fn an_abandoned_refresh_lock_only_delays_until_it_expires() {
    init_logs();
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.expect("fake wechat");
    let prefix = unique_prefix("token_abandoned_lock");
    // A crashed instance left the lock behind (never unlocked).
    let store = redis_store(&prefix);
    // Timed from before the lock is taken: the lock expires 400 ms after it
    // was set, so no refresh can start earlier, however slow the setup is.
    let started = std::time::Instant::now();
    let held = store.try_lock(ACCESS_TOKEN_LOCK, Duration::from_millis(400)).await;
    assert!(held.expect("redis").is_some());

    let tokens = instance(addr, &prefix, test_config());
    tokens.msg_sec_check("o-1", "x").await.expect("check");
    assert!(started.elapsed() >= Duration::from_millis(390), "{:?}", started.elapsed());
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 1);
    // What the store holds is the token the instance uses (and no secret).
    let stored = store.kv_get(ACCESS_TOKEN_KV).await.expect("redis").expect("published");
    let stored: Value = serde_json::from_str(&stored).expect("json");
    let token = tokens.access_token().await.expect("token");
    assert_eq!(stored["token"], token.expose_secret());
    assert!(stored["expires_at"].as_u64().is_some());
}

#[tokio::test]
async fn a_corrupt_stored_token_is_replaced() {
    init_logs();
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.expect("fake wechat");
    let prefix = unique_prefix("token_corrupt");
    let store = redis_store(&prefix);
    store.kv_set(ACCESS_TOKEN_KV, "not json", Duration::from_secs(60)).await.expect("redis");
    let tokens = instance(addr, &prefix, test_config());
    tokens.msg_sec_check("o-1", "x").await.expect("check");
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 1);
}

#[tokio::test]
async fn unreachable_store_falls_back_to_wechat() {
    init_logs();
    let (fake, addr) = FakeWeChat::spawn(APP_ID, SECRET).await.expect("fake wechat");
    let port = support::redis::free_port();
    let store: Arc<dyn SharedStore> = Arc::new(
        RedisStore::new(
            RedisStoreConfig::new(format!("redis://127.0.0.1:{port}/"))
                .with_prefix("down:")
                .with_op_timeout(Duration::from_millis(200)),
        )
        .expect("store"),
    );
    let tokens = AccessTokens::with_config(client(addr, SECRET), store, test_config());
    tokens.msg_sec_check("o-1", "x").await.expect("check");
    tokens.msg_sec_check("o-1", "y").await.expect("check");
    // Fetched once, then served from memory.
    assert_eq!(fake.stats().calls_to(STABLE_TOKEN), 1);
}

/// Every test of this file captures the logs before it logs anything, so
/// [`tokens_and_secret_never_reach_the_logs`] also covers what they logged.
fn init_logs() -> &'static Captured {
    support::logs::capture_logs()
}

#[tokio::test]
async fn tokens_and_secret_never_reach_the_logs() {
    let logs = init_logs();
    let (fake, _addr, a, _b) = two_instances("token_logs").await;
    let first = a.access_token().await.expect("token");
    fake.expire_access_tokens();
    let code = fake.mint_phone_code("13800138000", "86");
    a.phone_number(&code).await.expect("phone");
    let second = a.access_token().await.expect("token");
    let _ = a.phone_number("bad-code").await;

    // Also covers what the other tests of this binary logged so far.
    let text = logs.text();
    assert!(text.contains("refreshed the WeChat access token"), "{text}");
    assert!(text.contains("WeChat rejected the access token"), "{text}");
    for secret in [SECRET, "wrong-secret-value-123", first.expose_secret(), second.expose_secret()]
    {
        assert!(!text.contains(secret), "leaked into logs: {text}");
    }
}

fn assert_api_error<T: std::fmt::Debug>(result: Result<T, WeChatError>, want: i64) {
    match result {
        Err(WeChatError::Api { errcode, .. }) if errcode == want => {}
        other => panic!("expected errcode {want}, got {other:?}"),
    }
}

/// Two whole gateways (HTTP, their own Redis connections) on one Redis
/// prefix and one fake WeChat: concurrent phone-number calls through both,
/// first with no token anywhere, then after WeChat expired it, each cause
/// exactly one `stable_token` call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_over_http_share_one_token_and_one_refresh() {
    use support::app::{AppOptions, spawn_app};
    let prefix = unique_prefix("token_two_gateways");
    let a = spawn_app(AppOptions::redis("token_two_gateways").with("redis.prefix", prefix.clone()))
        .await;
    let b = spawn_app(
        AppOptions::redis("token_two_gateways")
            .with("redis.prefix", prefix)
            .with("wechat.api_base", format!("http://{}", a.fake_addr)),
    )
    .await;
    // Sessions live in the shared Redis, so b serves the users a logged in.
    let user = a.user("o_two_gw", "two").await;
    let burst = |n: usize| {
        let mut set = JoinSet::new();
        for i in 0..n {
            let app = if i % 2 == 0 { &a } else { &b };
            let url = format!("{}/applet/open-data/phone", app.base);
            let http = app.http.clone();
            let token = user.token.clone();
            let phone = format!("1390013{i:04}");
            let code = a.fake.mint_phone_code(phone.clone(), "86");
            set.spawn(async move {
                let r = http
                    .post(url)
                    .header("X-WX-Skey", token)
                    .json(&json!({"code": code}))
                    .send()
                    .await
                    .expect("send");
                assert_eq!(r.status(), 200);
                let body: Value = r.json().await.expect("json");
                assert_eq!(body["phoneInfo"]["purePhoneNumber"], phone.as_str(), "{body}");
            });
        }
        set
    };
    let mut set = burst(40);
    while let Some(joined) = set.join_next().await {
        joined.expect("phone call");
    }
    assert_eq!(a.fake.stats().calls_to(STABLE_TOKEN), 1);
    assert_eq!(b.fake.stats().calls_to(STABLE_TOKEN), 0, "b uses a's fake WeChat");

    a.fake.expire_access_tokens();
    let mut set = burst(40);
    while let Some(joined) = set.join_next().await {
        joined.expect("phone call after expiry");
    }
    assert_eq!(a.fake.stats().calls_to(STABLE_TOKEN), 2);
}
