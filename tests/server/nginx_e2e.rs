//! End to end through a real nginx running the shipped
//! `nginx/weapp-gateway.conf`: an HTTPS client -> nginx -> two gateway
//! instances -> one Redis. Loopback only.
//!
//! Both instances share one session space (same Redis URL and key prefix) and
//! one fake WeChat (instance B's `wechat.api_base` points at instance A's
//! fake), as two production instances share Redis and api.weixin.qq.com.
//!
//! Without nginx the tests print a note and pass, unless `CI` is set: then
//! they fail (see `support::nginx::nginx_or_skip`).

use crate::support;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION};
use serde_json::{Value, json};
use support::app::{
    AppOptions, StoreChoice, TestApp, encode_uri_component, raw_data, sign, spawn_app,
};
use support::nginx::{
    Nginx, Prefix, nginx_or_skip, replace_all, shipped_config, test_cert, with_test_files,
};
use weapp_gateway::wechat::{FakeWeChat, Faults};

/// The envelope's magic key.
const MAGIC: &str = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A";

/// nginx in front of two gateway instances sharing Redis and a fake WeChat.
struct Stack {
    nginx: Nginx,
    /// Instance A; its fake WeChat is the one both instances use.
    a: Option<TestApp>,
    /// Instance B.
    b: Option<TestApp>,
    /// Instance A's fake WeChat (outlives A, for B).
    fake: FakeWeChat,
    https: reqwest::Client,
}

/// Start the stack for `test`, or `None` when nginx is missing (outside CI).
async fn stack(test: &str) -> Option<Stack> {
    let bin = nginx_or_skip(test)?;
    let url = support::redis::shared_redis_url();
    let prefix = support::redis::unique_prefix(test);
    // As the README's deployment step 1 says: nginx on this host is the
    // trusted proxy.
    let trusted = ("server.trusted_proxies", json!(["127.0.0.1"]));
    let a = spawn_app(AppOptions {
        store: StoreChoice::Redis { url: url.clone(), prefix: prefix.clone() },
        extra: vec![trusted.clone()],
        clock: None,
    })
    .await;
    let b = spawn_app(AppOptions {
        store: StoreChoice::Redis { url, prefix },
        extra: vec![trusted, ("wechat.api_base", json!(format!("http://{}", a.fake_addr)))],
        clock: None,
    })
    .await;
    let nginx = start_nginx(bin, [a.addr, b.addr]).await;
    let https = nginx.client();
    let fake = a.fake.clone();
    Some(Stack { nginx, a: Some(a), b: Some(b), fake, https })
}

/// `Nginx::start` blocks (it polls for the TLS handshake): keep it off the
/// runtime's threads, which serve the gateways.
async fn start_nginx(bin: PathBuf, upstreams: [SocketAddr; 2]) -> Nginx {
    tokio::task::spawn_blocking(move || Nginx::start(&bin, upstreams)).await.expect("start nginx")
}

/// An answer with its headers and raw body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text))
    }

    fn content_type(&self) -> &str {
        self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The envelope's reason; panics unless the body is an error envelope
    /// served as JSON.
    fn envelope_reason(&self) -> String {
        assert!(
            self.content_type().starts_with("application/json"),
            "content-type {:?}, status {}: {}",
            self.content_type(),
            self.status,
            self.text
        );
        assert!(!self.text.contains("<html"), "an HTML page: {}", self.text);
        let body = self.json();
        assert_eq!(body[MAGIC], json!(1), "no envelope magic key: {body}");
        assert_eq!(body["error"]["name"], "SessionError", "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(body["error"]["detail"].is_object(), "{body}");
        body["reason"].as_str().expect("reason").to_owned()
    }

    /// The envelope reason, or the status when the body is no envelope.
    fn reason_or_status(&self) -> String {
        serde_json::from_str::<Value>(&self.text)
            .ok()
            .and_then(|b| b["reason"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.status.to_string())
    }
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Reply { status, headers, text }
}

impl Stack {
    /// Instance A (panics once stopped).
    fn a(&self) -> &TestApp {
        self.a.as_ref().expect("instance A is stopped")
    }

    /// Instance B (panics once stopped).
    fn b(&self) -> &TestApp {
        self.b.as_ref().expect("instance B is stopped")
    }

    /// Stop instance A and wait until its port refuses.
    async fn stop_a(&mut self) {
        if let Some(a) = self.a.take() {
            stop_instance(a).await;
        }
    }

    /// Stop instance B and wait until its port refuses.
    async fn stop_b(&mut self) {
        if let Some(b) = self.b.take() {
            stop_instance(b).await;
        }
    }

    /// Code exchanges at the shared fake WeChat.
    fn exchanges(&self) -> u64 {
        self.fake.stats().jscode2session_calls
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.https.get(self.nginx.https_url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        send(request).await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        let mut request = self.https.post(self.nginx.https_url(path)).json(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        send(request).await
    }

    /// Token login through nginx with a signed profile; returns the token.
    async fn token_login(&self, openid: &str, nick: &str) -> String {
        let minted = self.fake.mint_code(openid, None, None);
        let raw = json!({"nickName": nick}).to_string();
        let reply = self
            .post(
                "/applet/session/login",
                &[],
                &json!({"code": minted.code, "rawData": raw, "signature": sign(&raw, &minted.session_key)}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()["token"].as_str().expect("token").to_owned()
    }
}

/// Whether something accepts TCP connections on `addr`.
fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Stop a gateway instance and wait (bounded) until its port refuses.
async fn stop_instance(app: TestApp) {
    let addr = app.addr;
    drop(app);
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepts(addr) {
        assert!(Instant::now() < deadline, "gateway on {addr} still accepts 10s after stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The access log once it has at least `lines` lines (nginx writes a line
/// after sending the response), or after 5 s.
async fn access_log_with(nginx: &Nginx, lines: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = nginx.access_log();
        if log.lines().count() >= lines || Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_shipped_config_passes_nginx_t() {
    let Some(bin) = nginx_or_skip("the_shipped_config_passes_nginx_t") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = shipped_config();
    // Only the certificate and log paths change; ports, upstreams and
    // server_name are checked as shipped (nginx -t does not bind).
    let unused: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let prefix = Prefix::write(dir.path(), &test_cert(), 80, 443, [unused, unused], |s| {
        with_test_files(&shipped, s)
    });
    let site = std::fs::read_to_string(&prefix.site).expect("site");
    assert!(site.contains("listen 443 ssl http2;") && site.contains("server 127.0.0.1:5757 "));
    let out = prefix.test_config(&bin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t failed:\n{stderr}");
    assert!(stderr.contains("syntax is ok") && stderr.contains("test is successful"), "{stderr}");
    // Warnings are allowed (nginx >= 1.25.1 deprecates "listen ... http2",
    // which the Debian 12 nginx still needs), but shown.
    for warning in stderr.lines().filter(|l| l.contains("[warn]")) {
        eprintln!("nginx -t: {warning}");
    }
}

#[test]
fn the_shipped_config_keeps_its_promises() {
    let conf = shipped_config();
    // Active lines only: comments may name what must not be used.
    let active: String = conf
        .lines()
        .map(|l| l.split_once('#').map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    let format_start = active.find("log_format weapp_gateway").expect("log_format weapp_gateway");
    let format = &active[format_start..][..active[format_start..].find(';').expect("end")];
    // Request headers and query strings are where the credentials travel.
    for forbidden in [
        "$http_x_wx",
        "$http_authorization",
        "$http_cookie",
        "$request ",
        "$request\"",
        "$request'",
        "$request_uri",
        "$args",
        "$query_string",
        "$arg_",
        "$request_body",
        "$http_referer",
    ] {
        assert!(!format.contains(forbidden), "log_format records {forbidden}: {format}");
    }
    assert!(format.contains("$uri"), "{format}");
    // Every access_log uses that format (a bare one would use "combined",
    // which records the query string).
    let access_logs: Vec<&str> =
        active.lines().map(str::trim).filter(|l| l.starts_with("access_log ")).collect();
    assert!(!access_logs.is_empty());
    for line in access_logs {
        assert!(line.ends_with(" weapp_gateway;") || line == "access_log off;", "{line}");
    }
    for expected in [
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "map $http_upgrade $weapp_connection_upgrade {",
        "proxy_set_header Connection $weapp_connection_upgrade;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_http_version 1.1;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header Host $host;",
        "proxy_connect_timeout 2s;",
        // Only unreachable instances are retried (see the 504 test).
        "proxy_next_upstream error;",
        "keepalive 32;",
        "client_max_body_size 1m;",
        "add_header Strict-Transport-Security \"max-age=63072000\" always;",
        "error_page 502 503 504 @weapp_gateway_down;",
        "location = /applet/session/login {",
        "limit_req zone=weapp_login burst=20 nodelay;",
        "location = /healthz {",
        // Upstream failures are logged with the query string at "error".
        "error_log /var/log/nginx/weapp-gateway.error.log crit;",
    ] {
        assert!(active.contains(expected), "nginx/weapp-gateway.conf lacks {expected:?}");
    }
    // Upstream errors are never intercepted: the gateway's envelopes pass.
    assert!(!active.contains("proxy_intercept_errors on"));
    assert!(!active.contains("ssl_protocols TLSv1 ") && !active.contains("TLSv1.1"));
    // A POST that reached an instance is never re-sent.
    assert!(!active.contains("non_idempotent"));

    // The read timeout outlasts the gateway's slowest legitimate answer:
    // two WeChat calls (wechat.timeout 5s each) and a Redis and a MongoDB
    // operation (2s each), i.e. 14s.
    let read_timeout = directive(&active, "proxy_read_timeout");
    let seconds: u64 = read_timeout
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("proxy_read_timeout {read_timeout:?}: write it in seconds"));
    assert!(seconds >= 15, "proxy_read_timeout {seconds}s is shorter than the gateway's bound");

    // Modern ciphers: forward-secret (ECDHE) AEAD suites only.
    let ciphers = directive(&active, "ssl_ciphers");
    assert!(!ciphers.is_empty(), "no ssl_ciphers");
    for cipher in ciphers.split(':') {
        assert!(
            cipher.starts_with("ECDHE-")
                && (cipher.contains("-GCM-") || cipher.contains("CHACHA20")),
            "ssl_ciphers allows {cipher:?}"
        );
    }
}

/// The value of the one active `name value;` line in `active`.
fn directive<'a>(active: &'a str, name: &str) -> &'a str {
    let values: Vec<&str> = active
        .lines()
        .filter_map(|l| l.trim().strip_prefix(name)?.strip_prefix(' ')?.trim().strip_suffix(';'))
        .collect();
    assert_eq!(values.len(), 1, "expected one {name} line, found {values:?}");
    values[0].trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_to_https() {
    let Some(s) = stack("nginx_redirect").await else { return };
    let reply = send(s.https.get(s.nginx.http_url("/applet/session/me?x=1"))).await;
    assert_eq!(reply.status, 301, "{reply:?}");
    let location = reply.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(location, "https://localhost/applet/session/me?x=1");
    // The redirect server answers itself, never reaching an instance.
    let log = access_log_with(&s.nginx, 1).await;
    assert!(log.contains(" 301 ") && log.contains("upstream=- "), "access log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_through_nginx_work_and_any_instance_serves_any_session() {
    let Some(mut s) = stack("nginx_login").await else { return };

    let health = s.get("/healthz", &[]).await;
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
    assert!(
        health
            .headers
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("max-age=")),
        "no HSTS header: {:?}",
        health.headers
    );

    // token dialect through nginx, several times: nginx balances over both.
    let token = s.token_login("o_nginx_token", "tok").await;
    for auth in [("X-WX-Skey", token.clone()), ("Authorization", format!("Bearer {token}"))] {
        for _ in 0..3 {
            let me = s.get("/applet/session/me", &[(auth.0, &auth.1)]).await;
            assert_eq!(me.status, 200, "{}", me.text);
            assert_eq!(me.json()["openId"], "o_nginx_token");
            assert_eq!(me.json()["nickName"], "tok");
        }
    }

    // compat dialect through nginx.
    let minted = s.a().mint("o_nginx_compat");
    let raw = raw_data("兼容");
    let encoded = encode_uri_component(&raw);
    let sig = sign(&raw, &minted.session_key);
    let first = s
        .get(
            "/applet/session/me",
            &[("X-WX-Code", &minted.code), ("X-WX-RawData", &encoded), ("X-WX-Signature", &sig)],
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json()["nickName"], "兼容");
    for _ in 0..3 {
        let later = s.get("/applet/session/me", &[("X-WX-Code", &minted.code)]).await;
        assert_eq!(later.status, 200, "{}", later.text);
        assert_eq!(later.json()["openId"], "o_nginx_compat");
    }
    // nginx balanced those 11 requests over both instances (/healthz is not logged).
    let log = access_log_with(&s.nginx, 11).await;
    for addr in [s.a().addr, s.b().addr] {
        assert!(log.contains(&format!("upstream={addr} ")), "{addr} never used:\n{log}");
    }

    // Straight to the instances: created on A, served by B.
    let user = s.a().user("o_made_on_a", "alice").await;
    let on_b = s.b().token_me(&user.token).await;
    assert_eq!(on_b.status, 200, "{:?}", on_b.body);
    assert_eq!(on_b.body["openId"], "o_made_on_a");
    let minted = s.a().mint("o_compat_on_a");
    let raw = raw_data("bob");
    let on_a = s.a().compat_login(&minted.code, &raw, &sign(&raw, &minted.session_key)).await;
    assert_eq!(on_a.status, 200, "{:?}", on_a.body);
    let compat_on_b = s.b().compat_me(&minted.code).await;
    assert_eq!(compat_on_b.status, 200, "{:?}", compat_on_b.body);
    assert_eq!(compat_on_b.body["openId"], "o_compat_on_a");

    // One WeChat for both: every code was exchanged once, at A's fake.
    assert_eq!(s.exchanges(), 4);
    assert_eq!(s.b().exchanges(), 0, "B used its own fake WeChat");

    // With A gone, nginx serves A's sessions from B.
    s.stop_a().await;
    for _ in 0..4 {
        let me = s.get("/applet/session/me", &[("X-WX-Skey", &user.token)]).await;
        assert_eq!(me.status, 200, "{}", me.text);
        assert_eq!(me.json()["openId"], "o_made_on_a");
        let me = s.get("/applet/session/me", &[("X-WX-Code", &minted.code)]).await;
        assert_eq!(me.status, 200, "{}", me.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_records_no_session_credentials() {
    let Some(s) = stack("nginx_access_log").await else { return };
    let minted = s.fake.mint_code("o_nginx_log", None, None);
    let raw = json!({"nickName": "nicknameprobe7d1c", "gender": 1}).to_string();
    let encoded = encode_uri_component(&raw);
    let sig = sign(&raw, &minted.session_key);

    let mut requests = 0;
    let login = s
        .get(
            "/applet/session/me",
            &[("X-WX-Code", &minted.code), ("X-WX-RawData", &encoded), ("X-WX-Signature", &sig)],
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    requests += 1;
    assert_eq!(s.get("/applet/session/me", &[("x-wx-code", &minted.code)]).await.status, 200);
    requests += 1;
    let token = s.token_login("o_nginx_log_token", "tokenprobe").await;
    requests += 1;
    assert_eq!(s.get("/applet/session/me", &[("X-WX-Skey", &token)]).await.status, 200);
    requests += 1;
    let bearer = format!("Bearer {token}");
    assert_eq!(s.get("/applet/session/me", &[("Authorization", &bearer)]).await.status, 200);
    requests += 1;
    // A query string never reaches the log either.
    let query = s.get("/applet/session/me?code=queryprobe5e2a&signature=sigprobe", &[]).await;
    assert_eq!(query.reason_or_status(), "ERR_NOT_LOGGED_IN");
    requests += 1;
    assert_eq!(
        s.post("/applet/session/logout", &[("X-WX-Skey", &token)], &Value::Null).await.status,
        200
    );
    requests += 1;

    let log = access_log_with(&s.nginx, requests).await;
    assert_eq!(log.lines().count(), requests, "access log:\n{log}");
    assert!(log.contains("\"GET /applet/session/me HTTP/"), "access log:\n{log}");
    assert!(log.contains("\"POST /applet/session/login HTTP/"), "access log:\n{log}");
    assert!(log.contains(" 200 "), "access log:\n{log}");

    let error_logs = s.nginx.error_logs();
    let secrets = [
        minted.code.as_str(),
        encoded.as_str(),
        raw.as_str(),
        "nicknameprobe7d1c",
        sig.as_str(),
        token.as_str(),
        "Bearer",
        "queryprobe5e2a",
        "sigprobe",
        minted.session_key.as_str(),
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "the access log contains {secret:?}:\n{log}");
        assert!(!error_logs.contains(secret), "an error log contains {secret:?}:\n{error_logs}");
    }
    let lowercase = log.to_ascii_lowercase();
    for header in ["x-wx-code", "x-wx-rawdata", "x-wx-signature", "x-wx-skey", "authorization"] {
        assert!(!lowercase.contains(header), "the access log names {header}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_errors_pass_through_unchanged() {
    let Some(s) = stack("nginx_passthrough").await else { return };

    // 401 ERR_SESSION_EXPIRED: byte for byte what the instance answers.
    let bogus = [("X-WX-Skey", "no-such-token-0123456789abcdef")];
    let via_nginx = s.get("/applet/session/me", &bogus).await;
    let a = s.a();
    let direct =
        send(a.http.get(format!("{}/applet/session/me", a.base)).header(bogus[0].0, bogus[0].1))
            .await;
    assert_eq!(via_nginx.status, 401);
    assert_eq!(via_nginx.envelope_reason(), "ERR_SESSION_EXPIRED");
    assert_eq!((via_nginx.status, &via_nginx.text), (direct.status, &direct.text));
    assert_eq!(via_nginx.content_type(), direct.content_type());

    // The gateway's own 5xx envelope (WeChat answers HTTP 500 -> 502
    // ERR_SESSION_KEY_EXCHANGE_FAILED) is not replaced by nginx's error page.
    s.fake.set_faults(Faults::default().with_http_500());
    let minted = s.fake.mint_code("o_nginx_502", None, None);
    let reply = s.post("/applet/session/login", &[], &json!({"code": minted.code})).await;
    assert_eq!(reply.status, 502, "{}", reply.text);
    assert_eq!(reply.envelope_reason(), "ERR_SESSION_KEY_EXCHANGE_FAILED");
    s.fake.set_faults(Faults::default());
    // nginx did not retry the POST on the other instance.
    assert_eq!(s.exchanges(), 1);

    // The gateway's 404 under /applet/, nginx's own 404 elsewhere: both envelopes.
    let reply = s.get("/applet/no-such-route", &[]).await;
    assert_eq!((reply.status, reply.envelope_reason().as_str()), (404, "ERR_NOT_FOUND"));
    let reply = s.get("/index.html", &[]).await;
    assert_eq!((reply.status, reply.envelope_reason().as_str()), (404, "ERR_NOT_FOUND"));

    // A body over client_max_body_size: nginx's 413, as an envelope.
    let big = "x".repeat(2 * 1024 * 1024);
    let reply = send(
        s.https
            .post(s.nginx.https_url("/applet/session/login"))
            .header(CONTENT_TYPE, "application/json")
            .body(big),
    )
    .await;
    assert_eq!((reply.status, reply.envelope_reason().as_str()), (413, "ERR_PAYLOAD_TOO_LARGE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_logins_are_rate_limited_by_nginx_with_an_envelope() {
    let Some(s) = stack("nginx_limit_req").await else { return };
    // rate=5r/s burst=20: well within 200 back-to-back requests some are refused.
    let mut passed = 0;
    let mut limited = None;
    for _ in 0..200 {
        let reply = s.post("/applet/session/login", &[], &json!({})).await;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
        // Passed on to the gateway, which refuses the empty body.
        assert_eq!((reply.status, reply.reason_or_status().as_str()), (400, "ERR_INVALID_REQUEST"));
        passed += 1;
    }
    let limited = limited.expect("nginx never answered 429");
    assert_eq!(limited.envelope_reason(), "ERR_TOO_MANY_REQUESTS");
    assert!(limited.json()["error"]["message"].as_str().is_some_and(|m| m.contains("nginx")));
    assert!(passed >= 20, "the burst of 20 was not honoured: {passed} passed");
    // Other routes are not limited.
    assert_eq!(s.get("/healthz", &[]).await.status, 200);
}

/// Session credentials, in headers and a query string, for requests that
/// nginx cannot pass on: its error log (which names the failed request)
/// must record none of them either.
struct Probes {
    code: String,
    raw: String,
    signature: String,
    token: String,
}

impl Probes {
    fn new(token: &str) -> Self {
        Self {
            code: "codeprobe0b7e41".to_owned(),
            raw: encode_uri_component(&raw_data("rawprobe5c3d")),
            signature: "sigprobe9a8f6e".to_owned(),
            token: token.to_owned(),
        }
    }

    /// Requests carrying the probes, and a path with a query string of them.
    fn requests(&self, https: &reqwest::Client, nginx: &Nginx) -> Vec<reqwest::RequestBuilder> {
        let query = format!("/applet/session/me?code={}&signature={}", self.code, self.signature);
        vec![
            https.get(nginx.https_url("/applet/session/me")).header("X-WX-Skey", &self.token),
            https
                .get(nginx.https_url("/applet/session/me"))
                .header("Authorization", format!("Bearer {}", self.token)),
            https
                .get(nginx.https_url("/applet/session/me"))
                .header("X-WX-Code", &self.code)
                .header("X-WX-RawData", &self.raw)
                .header("X-WX-Signature", &self.signature),
            https
                .post(nginx.https_url("/applet/session/login"))
                .json(&json!({"code": self.code, "signature": self.signature})),
            https.get(nginx.https_url(&query)),
            https.get(nginx.https_url("/healthz")),
        ]
    }

    /// Panics when the access log or an error log holds a probe.
    fn assert_not_in_logs(&self, nginx: &Nginx) {
        let (access, errors) = (nginx.access_log(), nginx.error_logs());
        for secret in
            [&self.code, &self.raw, "rawprobe5c3d", &self.signature, &self.token, "Bearer"]
        {
            assert!(!access.contains(secret), "the access log contains {secret:?}:\n{access}");
            assert!(!errors.contains(secret), "an error log contains {secret:?}:\n{errors}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_instance_down_clients_get_the_json_envelope() {
    let Some(mut s) = stack("nginx_all_down").await else { return };
    let token = s.token_login("o_nginx_down", "down").await;
    s.stop_a().await;
    s.stop_b().await;
    let (nginx, https) = (&s.nginx, &s.https);
    let probes = Probes::new(&token);

    for _ in 0..3 {
        for request in probes.requests(https, nginx) {
            let reply = send(request).await;
            // No instance reachable is nginx's 502, and the error page keeps it.
            assert_eq!(reply.status, 502, "{}", reply.text);
            assert_eq!(reply.envelope_reason(), "ERR_GATEWAY_UNAVAILABLE");
        }
    }
    let log = nginx.access_log();
    assert!(log.contains(" 502 "), "access log:\n{log}");
    probes.assert_not_in_logs(nginx);
}

/// Upstreams that accept connections and never answer; counts them.
struct SilentUpstreams {
    addrs: [SocketAddr; 2],
    accepted: Arc<AtomicUsize>,
}

async fn silent_upstreams() -> SilentUpstreams {
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.push(listener.local_addr().expect("addr"));
        let accepted = accepted.clone();
        tokio::spawn(async move {
            // Held open, never read from or answered, until the test ends.
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
    }
    SilentUpstreams { addrs: [addrs[0], addrs[1]], accepted }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_instance_gets_a_504_envelope_and_is_not_asked_twice() {
    let Some(bin) = nginx_or_skip("nginx_504") else { return };
    let upstreams = silent_upstreams().await;
    let addrs = upstreams.addrs;
    // The shipped config with a 1 s read timeout instead of the shipped one.
    let nginx = tokio::task::spawn_blocking(move || {
        Nginx::start_with(&bin, addrs, |site| {
            replace_all(&site, "proxy_read_timeout 30s;", "proxy_read_timeout 1s;")
        })
    })
    .await
    .expect("start nginx");
    let https = nginx.client();
    let probes = Probes::new("tokenprobe4f0c2d");

    // Three requests: at most two per instance, below max_fails=3, so both
    // stay "up" and every request does reach one of them.
    let requests = probes.requests(&https, &nginx);
    for request in requests.into_iter().skip(2).take(3) {
        let before = upstreams.accepted.load(Ordering::SeqCst);
        let started = Instant::now();
        let reply = send(request).await;
        assert_eq!(reply.status, 504, "{}", reply.text);
        assert_eq!(reply.envelope_reason(), "ERR_GATEWAY_UNAVAILABLE");
        assert_eq!(reply.json()[MAGIC], json!(1));
        // Not re-sent to the other instance after the timeout: one
        // connection per request (with "timeout" in proxy_next_upstream,
        // a compat first request would spend its code twice).
        let asked = upstreams.accepted.load(Ordering::SeqCst) - before;
        assert_eq!(asked, 1, "the request reached {asked} instances");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
    let log = access_log_with(&nginx, 3).await;
    assert_eq!(log.matches(" 504 ").count(), 3, "access log:\n{log}");
    probes.assert_not_in_logs(&nginx);
}

/// The one line of `site` whose directive starts with `prefix`, whole.
fn active_line(site: &str, prefix: &str) -> String {
    let lines: Vec<&str> = site.lines().filter(|l| l.trim_start().starts_with(prefix)).collect();
    assert_eq!(lines.len(), 1, "expected one {prefix:?} line: {lines:?}");
    lines[0].to_owned()
}

/// Every site check on nothing behind nginx: unused loopback ports.
fn nowhere() -> [SocketAddr; 2] {
    let port = support::redis::free_port();
    [SocketAddr::from(([127, 0, 0, 1], port)), SocketAddr::from(([127, 0, 0, 1], port))]
}

async fn start_edited(
    bin: &std::path::Path,
    edit: impl Fn(String) -> String + Send + 'static,
) -> Nginx {
    let bin = bin.to_owned();
    tokio::task::spawn_blocking(move || Nginx::start_with(&bin, nowhere(), edit))
        .await
        .expect("start nginx")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_negotiates_tls_1_2_and_1_3_and_refuses_tls_1_1() {
    let Some(bin) = nginx_or_skip("nginx_tls_versions") else { return };
    let shipped = start_edited(&bin, |site| site).await;
    assert_eq!(shipped.handshake(&rustls::version::TLS12), Ok(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(shipped.handshake(&rustls::version::TLS13), Ok(rustls::ProtocolVersion::TLSv1_3));

    // TLS 1.1 needs openssl s_client (rustls cannot speak it).
    let Some((accepted, text)) = shipped.openssl_handshake("-tls1_1") else { return };
    assert!(!accepted, "nginx accepted TLS 1.1:\n{text}");
    drop(shipped);

    // Controls, both with every cipher at security level 0, so only
    // ssl_protocols can refuse TLS 1.1. Without the site's ssl_protocols,
    // the test harness's permissive http-level one (as in Debian's
    // nginx.conf) applies and TLS 1.1 completes: the probe above can see an
    // acceptance, and on this OpenSSL TLS 1.1 is possible at all.
    let relax = |site: String| {
        let ciphers = active_line(&site, "ssl_ciphers ");
        replace_all(&site, &ciphers, "    ssl_ciphers ALL:@SECLEVEL=0;")
    };
    let permissive = start_edited(&bin, move |site| {
        let site = relax(site);
        let protocols = active_line(&site, "ssl_protocols ");
        replace_all(&site, &protocols, "")
    })
    .await;
    let Some((accepted, text)) = permissive.openssl_handshake("-tls1_1") else { return };
    drop(permissive);
    if !accepted {
        eprintln!(
            "NOTE: this OpenSSL negotiates no TLS 1.1 even when nginx allows it, so the \
             refusal above says little:\n{text}"
        );
        return;
    }
    // With the site's own ssl_protocols, the same relaxed ciphers: refused.
    // The http-level setting does not mask the shipped server-level one.
    let own_protocols = start_edited(&bin, relax).await;
    let Some((accepted, text)) = own_protocols.openssl_handshake("-tls1_1") else { return };
    assert!(!accepted, "the site's ssl_protocols did not refuse TLS 1.1:\n{text}");
}
