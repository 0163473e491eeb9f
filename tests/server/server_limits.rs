//! Slow and greedy clients over real sockets: the header-read, idle, body
//! and whole-request timeouts, the connection cap, the body limit on every
//! route and the header-size limit. Timeouts are configured short (about a
//! second) so every case is quick; every wait is bounded.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::app::{AppOptions, TestApp, spawn_app};
use support::net::wait_closed;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use weapp_gateway::wechat::Faults;

/// A raw request for `/healthz` on a kept-alive connection.
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";

/// Read one HTTP/1.1 response with a Content-Length (bounded by `limit`).
async fn read_response<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> String {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text;
            }
        }
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            other => panic!("no whole response within {limit:?} ({other:?}): {text:?}"),
        }
    }
}

/// Send a request's header lines one every `gap`, until the server closes
/// the connection (Some(elapsed)) or `lines` lines are sent (None).
async fn trickle_headers<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    gap: Duration,
    lines: usize,
) -> (Option<Duration>, String) {
    let started = Instant::now();
    if s.write_all(b"GET /healthz HTTP/1.1\r\n").await.is_err() {
        return (Some(started.elapsed()), String::new());
    }
    for i in 0..lines {
        let (closed, seen) = wait_closed(s, gap).await;
        if closed.is_some() || !seen.is_empty() {
            return (Some(started.elapsed()), seen);
        }
        let line = format!("X-Slow-{i}: {}\r\n", "a".repeat(20));
        if s.write_all(line.as_bytes()).await.is_err() || s.flush().await.is_err() {
            return (Some(started.elapsed()), String::new());
        }
    }
    (None, String::new())
}

async fn app_with(extra: &[(&'static str, Value)]) -> TestApp {
    let mut options = AppOptions::memory();
    for (k, v) in extra {
        options = options.with(k, v.clone());
    }
    spawn_app(options).await
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn body_of(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()))
}

fn reason(body: &Value) -> Option<&str> {
    (body.get("F2C224D4-2BCE-4C64-AF9F-A6D872000D1A") == Some(&json!(1)))
        .then(|| body["reason"].as_str())
        .flatten()
}

#[tokio::test]
async fn an_idle_socket_and_trickled_headers_are_closed_after_the_header_timeout() {
    let app = app_with(&[
        ("server.header_read_timeout", json!("1s")),
        ("server.idle_timeout", json!("30s")),
    ])
    .await;

    // Connected, never a byte.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    let (closed, _) = wait_closed(&mut idle, Duration::from_secs(6)).await;
    let closed = closed.expect("an idle socket must be closed after the header timeout");
    assert!(closed >= Duration::from_millis(800) && closed < Duration::from_secs(3), "{closed:?}");

    // One header line every 300 ms: never a whole request within 1 s.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let (closed, seen) = trickle_headers(&mut slow, Duration::from_millis(300), 30).await;
    let closed = closed.expect("trickled headers must be cut after the header timeout");
    assert!(closed < Duration::from_secs(3), "{closed:?}");
    assert!(!seen.contains("200 OK"), "a trickled request was served: {seen}");

    // The same on the second request of a kept-alive connection.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(HEALTHZ).await.unwrap();
    assert_eq!(status_of(&read_response(&mut kept, Duration::from_secs(5)).await), 200);
    let (closed, seen) = trickle_headers(&mut kept, Duration::from_millis(300), 30).await;
    assert!(closed.is_some_and(|c| c < Duration::from_secs(3)), "{closed:?}");
    assert!(!seen.contains("200 OK"), "{seen}");

    // And a well-behaved client is still served.
    assert_eq!(app.get("/healthz", &[]).await.status, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = app_with(&[
        ("server.header_read_timeout", json!("5s")),
        ("server.idle_timeout", json!("1s")),
    ])
    .await;
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    // Requests keep it busy past the idle timeout...
    for _ in 0..3 {
        kept.write_all(HEALTHZ).await.unwrap();
        assert_eq!(status_of(&read_response(&mut kept, Duration::from_secs(5)).await), 200);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // ...then an idle second closes it (well before the 5 s header timeout).
    let (closed, _) = wait_closed(&mut kept, Duration::from_secs(8)).await;
    let closed = closed.expect("an idle keep-alive connection must be closed");
    assert!(closed < Duration::from_millis(2500), "closed after {closed:?}, not the idle timeout");
}

#[tokio::test]
async fn a_trickled_body_gets_the_408_envelope() {
    let app =
        app_with(&[("server.body_timeout", json!("1s")), ("server.request_timeout", json!("10s"))])
            .await;
    let user = app.user("o_slow_body", "slow").await;
    let login = "POST /applet/session/login HTTP/1.1\r\nHost: gw\r\n\
                 Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        .to_owned();
    let notice = format!(
        "POST /applet/notices HTTP/1.1\r\nHost: gw\r\nX-WX-Skey: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n",
        user.token
    );
    for head in [login, notice] {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        // One byte every 200 ms: 200 bytes would take 40 s.
        let mut answer = String::new();
        for _ in 0..40 {
            if s.write_all(b" ").await.is_err() {
                break;
            }
            let mut buf = [0u8; 4096];
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    answer.push_str(&String::from_utf8_lossy(&buf[..n]));
                    break;
                }
                Ok(_) => break,
                Err(_) => {}
            }
        }
        if !answer.contains("\r\n\r\n") || status_of(&answer) == 0 {
            let rest = read_response(&mut s, Duration::from_secs(3)).await;
            answer.push_str(&rest);
        }
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        assert_eq!(status_of(&answer), 408, "{head}: {answer}");
        assert_eq!(reason(&body_of(&answer)), Some("ERR_REQUEST_TIMEOUT"), "{answer}");
    }
}

#[tokio::test]
async fn a_handler_slower_than_the_request_timeout_gets_the_504_envelope() {
    let app = app_with(&[("server.request_timeout", json!("1s"))]).await;
    // WeChat answers the login after 1.5 s; the request may take 1 s.
    app.fake.set_faults(Faults::default().with_delay_ms(1500));
    let minted = app.mint("o_slow_wechat");
    let started = Instant::now();
    let a = app.token_login(&json!({"code": minted.code})).await;
    let took = started.elapsed();
    assert_eq!(a.status, 504, "{:?}", a.body);
    assert_eq!(a.reason(), Some("ERR_GATEWAY_TIMEOUT"), "{:?}", a.body);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(1450), "{took:?}");
    app.fake.set_faults(Faults::default());
    assert_eq!(app.get("/healthz", &[]).await.status, 200);
}

#[tokio::test]
async fn connections_over_the_cap_wait_in_the_queue_and_are_served_afterwards() {
    let app = app_with(&[
        ("server.max_connections", json!(2)),
        ("server.idle_timeout", json!("20s")),
        ("server.header_read_timeout", json!("20s")),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(HEALTHZ).await.unwrap();
        assert_eq!(status_of(&read_response(&mut s, Duration::from_secs(5)).await), 200);
        held.push(s);
    }
    // The third connects (the kernel's listen queue) but is not served...
    let mut third = TcpStream::connect(app.addr).await.unwrap();
    third.write_all(HEALTHZ).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(800), third.read(&mut buf)).await;
    assert!(early.is_err(), "connection 3 of 2 was served or refused: {early:?}");
    // ...until one of the two closes; then it is, not refused.
    drop(held.remove(0));
    let answer = read_response(&mut third, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[tokio::test]
async fn an_oversized_body_gets_413_on_every_route() {
    let app = app_with(&[("server.max_body", json!(1024))]).await;
    let user = app.user("o_big_body", "big").await;
    let big = "字".repeat(600); // 1800 bytes of UTF-8
    // The token login (read by the session layer).
    let a = app.token_login(&json!({"code": big})).await;
    assert_eq!((a.status, a.reason()), (413, Some("ERR_PAYLOAD_TOO_LARGE")), "{:?}", a.body);
    // A notice and open-data decryption (read by the handlers).
    let a = app.post("/applet/notices", &[user.auth()], &json!({"content": big})).await;
    assert_eq!((a.status, a.reason()), (413, Some("ERR_PAYLOAD_TOO_LARGE")), "{:?}", a.body);
    let a = app
        .post(
            "/applet/open-data/decrypt",
            &[user.auth()],
            &json!({"encryptedData": big, "iv": "x"}),
        )
        .await;
    assert_eq!((a.status, a.reason()), (413, Some("ERR_PAYLOAD_TOO_LARGE")), "{:?}", a.body);
    // Under the limit, the same routes still work.
    let a = app.post("/applet/notices", &[user.auth()], &json!({"content": "短"})).await;
    assert!(a.status == 200 || a.status == 201, "{a:?}");
}

#[tokio::test]
async fn an_oversized_header_block_is_refused_not_buffered() {
    let app = app_with(&[("server.max_header_bytes", json!(16 * 1024))]).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head =
        format!("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n", "a".repeat(40 * 1024));
    // The server may stop reading (and reset) before all of it is written.
    let _ = s.write_all(head.as_bytes()).await;
    let (closed, seen) = wait_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the connection must be closed");
    assert!(!seen.contains("200 OK"), "an oversized header block was served: {seen}");
    assert!(seen.is_empty() || status_of(&seen) == 431, "{seen}");
    // Headers under the limit are fine.
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head =
        format!("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n", "a".repeat(8 * 1024));
    s.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(status_of(&read_response(&mut s, Duration::from_secs(5)).await), 200);
}

/// Read HTTP/2 frames for at most `limit`: `Some(true)` when an unacknowledged
/// PING arrived, `Some(false)` when the server closed first, `None` if neither.
async fn next_ping_or_close(s: &mut TcpStream, limit: Duration) -> Option<bool> {
    let started = Instant::now();
    let mut header = [0u8; 9];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read_exact(&mut header)).await {
            Err(_) => return None,
            Ok(Err(_)) => return Some(false),
            Ok(Ok(_)) => {}
        }
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len.min(1 << 20)];
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read_exact(&mut payload)).await {
            Err(_) => return None,
            Ok(Err(_)) => return Some(false),
            Ok(Ok(_)) => {}
        }
        // GOAWAY (7): the server gives up on the connection.
        if header[3] == 7 {
            return Some(false);
        }
        // PING (6) without the ACK flag (1).
        if header[3] == 6 && header[4] & 1 == 0 {
            return Some(true);
        }
    }
}

#[tokio::test]
async fn a_quiet_h2_connection_is_pinged_and_closed_when_the_ping_goes_unanswered() {
    let app = app_with(&[
        ("server.header_read_timeout", json!("30s")),
        ("server.idle_timeout", json!("30s")),
        ("server.h2_keepalive_interval", json!("1s")),
        ("server.h2_keepalive_timeout", json!("1s")),
    ])
    .await;
    // HTTP/2 with prior knowledge: the preface and an empty SETTINGS frame,
    // then silence (no SETTINGS ack, no PING ack).
    let mut h2 = TcpStream::connect(app.addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        next_ping_or_close(&mut h2, Duration::from_secs(5)).await,
        Some(true),
        "a quiet h2 connection must get a keep-alive PING"
    );
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // The PING goes unanswered: the connection is closed soon after, long
    // before the 30 s idle and header timeouts.
    let closed = next_ping_or_close(&mut h2, Duration::from_secs(6)).await;
    assert!(matches!(closed, Some(false)), "an unanswered PING must close the connection");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_client_that_never_reads_its_answer_is_dropped_after_the_request_bounds() {
    let app = app_with(&[
        ("server.header_read_timeout", json!("30s")),
        ("server.idle_timeout", json!("1s")),
        ("server.request_timeout", json!("1s")),
        ("server.h2_keepalive_interval", json!("60s")),
    ])
    .await;
    // HTTP/2 with prior knowledge and SETTINGS_INITIAL_WINDOW_SIZE = 0: the
    // gateway can send the answer's head but never a byte of its body.
    let mut h2 = TcpStream::connect(app.addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
    // HEADERS on stream 1, END_STREAM | END_HEADERS: GET http://gw/healthz
    // (HPACK: :method GET, :scheme http, literal :path, literal :authority).
    let mut block = vec![0x82, 0x86, 0x44, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x41, 2]);
    block.extend_from_slice(b"gw");
    let len = u8::try_from(block.len()).unwrap();
    hello.extend_from_slice(&[0, 0, len, 1, 5, 0, 0, 0, 1]);
    hello.extend_from_slice(&block);
    h2.write_all(&hello).await.unwrap();
    // The connection must not be held for ever (before the fix it stayed
    // busy, past every timeout, until the client gave up): it is dropped
    // once request_timeout + idle_timeout pass with nothing happening.
    let started = Instant::now();
    let (closed, _) = wait_closed(&mut h2, Duration::from_secs(10)).await;
    let closed = closed.expect("a client that never reads must not keep its connection");
    assert!(closed >= Duration::from_millis(1500), "dropped too early: {closed:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    // Everyone else is still served.
    assert_eq!(app.get("/healthz", &[]).await.status, 200);
}
