//! `server.trusted_proxies` on a real listener: the login rate limit buckets
//! by the client address from `X-Forwarded-For` when (and only when) the peer
//! is a trusted proxy, also when the peer arrives IPv4-mapped on a
//! dual-stack listener.

use crate::support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::app::{AppOptions, TestApp, spawn_app};

/// Two logins at once per address, then one a minute: the third is refused.
fn limited(trusted: &[&str]) -> AppOptions {
    AppOptions::memory()
        .with("session.login_rate_limit", json!({"per_minute": 1, "burst": 2}))
        .with("server.trusted_proxies", json!(trusted))
}

/// A token login with a fresh code at `base`, sent with `X-Forwarded-For:
/// xff` when given; returns the status and the envelope reason ("" if none).
async fn login(app: &TestApp, base: &str, xff: Option<&str>) -> (u16, String) {
    let minted = app.mint("o_trusted_proxy");
    let mut request =
        app.http.post(format!("{base}/applet/session/login")).json(&json!({"code": minted.code}));
    if let Some(xff) = xff {
        request = request.header("X-Forwarded-For", xff);
    }
    let response = request.send().await.expect("login request");
    let status = response.status().as_u16();
    if status == 429 {
        assert!(response.headers().contains_key("retry-after"), "a 429 without Retry-After");
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let reason = if body["F2C224D4-2BCE-4C64-AF9F-A6D872000D1A"] == json!(1) {
        body["reason"].as_str().unwrap_or("").to_owned()
    } else {
        String::new()
    };
    (status, reason)
}

const OK: (u16, &str) = (200, "");
const LIMITED: (u16, &str) = (429, "ERR_TOO_MANY_REQUESTS");

async fn expect(app: &TestApp, base: &str, xff: Option<&str>, want: (u16, &str), what: &str) {
    let (status, reason) = login(app, base, xff).await;
    assert_eq!((status, reason.as_str()), want, "{what} (X-Forwarded-For: {xff:?})");
}

/// The buckets of a gateway that trusts the test client (127.0.0.1) as its
/// proxy, reached at `base`.
async fn forwarded_clients_get_their_own_buckets(app: &TestApp, base: &str) {
    let (a, b) = (Some("203.0.113.1"), Some("203.0.113.2"));
    expect(app, base, a, OK, "client A, 1st").await;
    expect(app, base, a, OK, "client A, 2nd").await;
    expect(app, base, a, LIMITED, "client A, 3rd: its burst is spent").await;
    // Entries left of the right-most untrusted one are the client's own
    // writing: prepending one does not buy a fresh bucket.
    expect(app, base, Some("198.51.100.5, 203.0.113.1"), LIMITED, "client A, spoofed").await;
    // Another forwarded client, and the proxy's own requests, are unaffected.
    expect(app, base, b, OK, "client B, 1st").await;
    expect(app, base, b, OK, "client B, 2nd").await;
    expect(app, base, None, OK, "the proxy itself").await;
    expect(app, base, b, LIMITED, "client B, 3rd").await;
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_clients_are_rate_limited_separately() {
    let app = spawn_app(limited(&["127.0.0.1"])).await;
    let base = app.base.clone();
    forwarded_clients_get_their_own_buckets(&app, &base).await;
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_for_is_ignored() {
    // Trusts some other proxy, not the test client.
    let app = spawn_app(limited(&["192.0.2.1"])).await;
    let base = app.base.clone();
    expect(&app, &base, Some("203.0.113.1"), OK, "1st").await;
    expect(&app, &base, Some("203.0.113.2"), OK, "2nd").await;
    // All three are the peer 127.0.0.1's bucket, whatever the header says.
    expect(&app, &base, Some("203.0.113.3"), LIMITED, "3rd, a 'new' client").await;
    expect(&app, &base, None, LIMITED, "4th, no header").await;
    // Even the trusted proxy's address in the header changes nothing.
    expect(&app, &base, Some("192.0.2.1"), LIMITED, "5th").await;
}

#[tokio::test]
async fn ipv6_clients_share_a_bucket_per_64() {
    let app = spawn_app(limited(&["127.0.0.1"])).await;
    let base = app.base.clone();
    expect(&app, &base, Some("2001:db8:a:b::1"), OK, "1st address of the /64").await;
    expect(&app, &base, Some("2001:db8:a:b:ffff:ffff:ffff:fffe"), OK, "2nd address").await;
    expect(&app, &base, Some("2001:db8:a:b:1234::42"), LIMITED, "3rd address, same /64").await;
    expect(&app, &base, Some("2001:db8:a:c::1"), OK, "the next /64 is another bucket").await;
}

#[tokio::test]
async fn many_forwarded_clients_cannot_exceed_the_instances_exchange_budget() {
    // Each client has its own generous per-address bucket; the instance
    // allows 5 exchanges at once and 2 a second after that.
    let app = spawn_app(
        AppOptions::memory()
            .with("server.trusted_proxies", json!(["127.0.0.1"]))
            .with("session.exchanges_per_second", 2)
            .with("session.exchanges_burst", 5),
    )
    .await;
    let base = app.base.clone();
    let started = Instant::now();
    let clients: Vec<String> = (0..60).map(|i| format!("198.51.100.{i}")).collect();
    let answers = futures_util::future::join_all(
        clients.iter().map(|ip| login(&app, &base, Some(ip.as_str()))),
    )
    .await;
    let elapsed = started.elapsed();
    let ok = answers.iter().filter(|a| a.0 == 200).count() as u64;
    let limited = answers.iter().filter(|a| **a == (429, "ERR_TOO_MANY_REQUESTS".into())).count();
    assert_eq!(ok as usize + limited, 60, "{answers:?}");
    let calls = app.exchanges();
    assert_eq!(calls, ok, "only the admitted logins reach WeChat");
    let ceiling = 5 + 2 * elapsed.as_secs().saturating_add(1);
    assert!(calls <= ceiling, "{calls} exchanges in {elapsed:?} (budget allows {ceiling})");
    assert!(ok >= 5, "the burst is served: {ok}");
}

/// Whether a `[::]` listener accepts IPv4 connections here (IPv6 enabled and
/// `net.ipv6.bindv6only = 0`, Linux's default).
fn dual_stack() -> bool {
    let Ok(listener) = TcpListener::bind("[::]:0") else { return false };
    let Ok(port) = listener.local_addr().map(|a| a.port()) else { return false };
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&v4, Duration::from_secs(1)).is_ok()
}

#[tokio::test]
async fn an_ipv4_mapped_peer_matches_its_trusted_ipv4_address() {
    if !dual_stack() {
        eprintln!("SKIPPED: no dual-stack [::] listener here (IPv6 off or bindv6only=1)");
        return;
    }
    // On [::] the test client 127.0.0.1 is the peer ::ffff:127.0.0.1; the
    // config names it 127.0.0.1, as the README says to.
    let app = spawn_app(limited(&["127.0.0.1"]).with("server.listen", "[::]:0")).await;
    assert!(app.addr.is_ipv6(), "listening on {}", app.addr);
    let base = format!("http://127.0.0.1:{}", app.addr.port());
    forwarded_clients_get_their_own_buckets(&app, &base).await;
}
