//! The `weapp-gateway` binary: check-config, dev mode end to end through the
//! embedded fake WeChat, graceful shutdown on SIGTERM, SIGHUP without TLS,
//! start-up errors for bad certificates.

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::app::{encode_uri_component, sign};

const BIN: &str = env!("CARGO_BIN_EXE_weapp-gateway");

fn gateway() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WEAPP__") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn check_config_accepts_the_shipped_files_and_redacts_secrets() {
    let out = gateway().arg("check-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("config OK"));
    assert!(!stdout.contains("dev-secret"), "{stdout}");

    let out = gateway()
        .args(["check-config", "--config", "config/production.example.toml"])
        .env("WEAPP__WECHAT__APP_SECRET", "prod-secret-value")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("prod-secret-value"), "{stdout}");
}

#[test]
fn check_config_names_bad_keys_and_refuses_unsafe_production() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[wechat]\napp_id = \"wx\"\napp_secret = \"s\"\n[session]\nstroe = \"redis\"\n",
    )
    .unwrap();
    let out = gateway().arg("check-config").arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("session.stroe"));

    let out = gateway().arg("check-config").env("WEAPP__MODE", "production").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("production") && stderr.contains("memory"), "{stderr}");

    let out =
        gateway().arg("check-config").env("WEAPP__SERVER__LISTEN", "nowhere").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[tokio::test]
async fn dev_mode_runs_a_whole_login_and_stops_on_sigterm() {
    let mut child = gateway()
        .arg("serve")
        .env("WEAPP__SERVER__LISTEN", "127.0.0.1:0")
        .env("WEAPP__NOTICES__CONTENT_SECURITY", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("weapp-gateway listening addr=").nth(1) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("listening line");
    let base = format!("http://{addr}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();

    let minted = mint_code(&http, &base, "o_cli").await;
    let code = minted["code"].as_str().unwrap();
    let key = minted["session_key"].as_str().unwrap();
    let raw = r#"{"nickName":"小明","avatarUrl":"https://x/y+z.png"}"#;
    let me: Value = http
        .get(format!("{base}/applet/session/me"))
        .header("X-WX-Code", code)
        .header("X-WX-RawData", encode_uri_component(raw))
        .header("X-WX-Signature", sign(raw, key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["nickName"], "小明");
    assert_eq!(me["openId"], "o_cli");
    let stats: Value =
        http.get(format!("{base}/__wechat/dev/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["jscode2session_calls"], 1);

    // Content security through the embedded fake, with config/default.toml's
    // word list (notices.content_security switched on from the environment).
    let minted = mint_code(&http, &base, "o_cli_poster").await;
    let login: Value = http
        .post(format!("{base}/applet/session/login"))
        .json(&json!({"code": minted["code"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("token");
    let post = |content: &'static str| {
        http.post(format!("{base}/applet/notices"))
            .header("X-WX-Skey", token)
            .json(&json!({"content": content, "visibility": "public"}))
            .send()
    };
    let risky = post("join my casino tonight").await.unwrap();
    assert_eq!(risky.status(), 422);
    let body: Value = risky.json().await.unwrap();
    assert_eq!(body["reason"], "ERR_CONTENT_RISKY");
    assert_eq!(post("a walk in the park").await.unwrap().status(), 201);

    stops_cleanly_on_sigterm(&mut child);
}

#[tokio::test]
async fn fake_wechat_runs_standalone() {
    let port = support::redis::free_port();
    let mut child = gateway()
        .args(["fake-wechat", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--appid", "wx_cli", "--secret", "cli-secret"])
        .args(["--risky-word", "casino", "--risky-word", "赌博"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let minted: Value = loop {
        match http.post(format!("{base}/dev/codes")).json(&json!({"openid": "o_f"})).send().await {
            Ok(r) => break r.json().await.unwrap(),
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("fake-wechat did not start: {e}"),
        }
    };
    let code = minted["code"].as_str().unwrap();
    let url = format!(
        "{base}/sns/jscode2session?appid=wx_cli&secret=cli-secret&js_code={code}&grant_type=authorization_code"
    );
    let first: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(first["openid"], "o_f");
    let second: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(second["errcode"], 40163);
    let words: Value =
        http.get(format!("{base}/dev/risky-words")).send().await.unwrap().json().await.unwrap();
    assert_eq!(words, json!({"words": ["casino", "赌博"]}));
    let _ = child.kill();
    let _ = child.wait();
}

/// A one-time code for `openid` from the embedded fake WeChat at `base`.
async fn mint_code(http: &reqwest::Client, base: &str, openid: &str) -> Value {
    let r = http.post(format!("{base}/__wechat/dev/codes")).json(&json!({"openid": openid}));
    r.send().await.unwrap().json().await.unwrap()
}

/// SIGTERM `child`, then wait (at most 15 s) for a successful exit.
fn stops_cleanly_on_sigterm(child: &mut Child) {
    stops_cleanly_on(child, "-TERM");
}

/// Send `sig` to `child`, then wait (at most 15 s) for a successful exit.
fn stops_cleanly_on(child: &mut Child, sig: &str) {
    signal(child, sig);
    let started = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "exit status {exit}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "did not stop on {sig}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn sigint_drains_and_stops_like_sigterm() {
    let (mut running, addr, lines) = serve_logging(&mut gateway());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let health = http.get(format!("http://{addr}/healthz")).send().await.expect("serving");
    assert_eq!(health.status(), 200);
    stops_cleanly_on(&mut running.0, "-INT");
    // The process has exited, so its stdout is at EOF and the reader ends.
    let logged: Vec<String> = lines.iter().collect();
    assert!(logged.iter().any(|l| l.contains("shutting down")), "{logged:?}");
}

/// Send `signal` (e.g. "-HUP") to `child` with kill(1).
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal} failed");
}

/// A gateway process, killed (and reaped) on drop, also when a test panics.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `serve` on a free port with its stdout lines sent to the receiver;
/// returns once it logged its address.
fn serve_logging(cmd: &mut Command) -> (Running, String, Receiver<String>) {
    let mut child = Running(
        cmd.arg("serve")
            .env("WEAPP__SERVER__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the gateway logged no listening line");
        if let Some(rest) = line.split("weapp-gateway listening addr=").nth(1) {
            return (child, rest.trim().to_owned(), rx);
        }
    }
}

#[tokio::test]
async fn sighup_without_tls_neither_stops_nor_disturbs_the_gateway() {
    let (mut running, addr, lines) = serve_logging(&mut gateway());
    let child = &mut running.0;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let healthz = format!("http://{addr}/healthz");

    // At once (as `systemctl reload` right after start would), and again
    // once it is serving.
    signal(child, "-HUP");
    assert_eq!(http.get(&healthz).send().await.expect("serving after a HUP").status(), 200);
    signal(child, "-HUP");

    // The server's handler saw it (not just "the signal was ignored").
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("SIGHUP") => break,
            Ok(_) => {}
            Err(_) => panic!("no SIGHUP log line; exit status {:?}", child.try_wait()),
        }
    }
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP stopped the gateway");
    for _ in 0..3 {
        assert_eq!(http.get(&healthz).send().await.expect("still serving").status(), 200);
    }

    // And it still shuts down cleanly.
    stops_cleanly_on_sigterm(child);
}

/// A certificate and key (PEM) for localhost, written into `dir`.
fn good_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// The gateway binary with `[server.tls]` at `cert`/`key` (and no embedded
/// fake WeChat, which TLS excludes).
fn with_tls(cert: &Path, key: &Path) -> Command {
    let mut cmd = gateway();
    cmd.env("WEAPP__WECHAT__FAKE", "false")
        .env("WEAPP__WECHAT__API_BASE", "http://127.0.0.1:9")
        .env("WEAPP__SERVER__LISTEN", "127.0.0.1:0")
        .env("WEAPP__SERVER__TLS__CERT", cert)
        .env("WEAPP__SERVER__TLS__KEY", key)
        .stdin(Stdio::null());
    cmd
}

/// Run `subcommand` with `[server.tls]` set to `cert` and `key`: (exit code, stderr).
fn run_tls(cert: &Path, key: &Path, subcommand: &str) -> (Option<i32>, String) {
    let mut cmd = with_tls(cert, key);
    cmd.arg(subcommand);
    run(cmd)
}

/// Run `cmd` to its end (bounded): exit code and stderr.
fn run(mut cmd: Command) -> (Option<i32>, String) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("still running after 20 s (a bad certificate must stop the start)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn serve_with_a_bad_certificate_or_key_exits_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = good_cert(dir.path());
    let garbage = dir.path().join("garbage-cert.pem");
    std::fs::write(&garbage, "not a pem").unwrap();
    let missing_key = dir.path().join("missing-key.pem");

    let (code, stderr) = run_tls(&garbage, &key, "serve");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error: server.tls.cert") && stderr.contains("garbage-cert.pem"),
        "{stderr}"
    );

    let (code, stderr) = run_tls(&cert, &missing_key, "serve");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error: server.tls.key") && stderr.contains("missing-key.pem"),
        "{stderr}"
    );
}

#[test]
fn check_config_reads_the_tls_files_too() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = good_cert(dir.path());
    let (code, stderr) = run_tls(&cert, &key, "check-config");
    assert_eq!(code, Some(0), "a good certificate must pass: {stderr}");

    let garbage = dir.path().join("garbage-cert.pem");
    std::fs::write(&garbage, "not a pem").unwrap();
    let (code, stderr) = run_tls(&garbage, &key, "check-config");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("server.tls.cert") && stderr.contains("garbage-cert.pem"), "{stderr}");

    // A key that belongs to another certificate.
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = good_cert(other.path());
    let (code, stderr) = run_tls(&cert, &other_key, "check-config");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("server.tls.key") && stderr.contains("does not belong"), "{stderr}");
}

#[tokio::test]
async fn sigterm_closes_slow_clients_at_once_and_gives_only_in_flight_requests_the_grace() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cmd = gateway();
    cmd.env("WEAPP__SERVER__SHUTDOWN_GRACE", "10s")
        .env("WEAPP__SERVER__HEADER_READ_TIMEOUT", "30s")
        .env("WEAPP__SERVER__IDLE_TIMEOUT", "30s")
        .env("WEAPP__SERVER__BODY_TIMEOUT", "30s")
        .env("WEAPP__SERVER__REQUEST_TIMEOUT", "30s");
    let (mut running, addr, _lines) = serve_logging(&mut cmd);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{addr}");

    // Slow clients: an idle socket, half a request head, an idle keep-alive.
    let idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: ").await.unwrap();
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n =
        tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // A body trickled after a complete head: the request is in flight, its
    // handler waiting for the rest of the body.
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    trickle
        .write_all(
            b"POST /applet/session/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"co",
        )
        .await
        .unwrap();

    // An in-flight request that takes 2 s (the embedded fake's delay fault).
    let faults = http.post(format!("{base}/__wechat/dev/faults")).json(&json!({"delay_ms": 2000}));
    assert_eq!(faults.send().await.unwrap().status(), 200);
    let slow = tokio::spawn({
        let url = format!("{base}/__wechat/sns/jscode2session?appid=x&secret=y&js_code=z");
        let http = http.clone();
        async move { http.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    signal(&running.0, "-TERM");
    let exit = loop {
        if let Some(exit) = running.0.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    assert!(exit.success(), "exit status {exit}");
    // The in-flight request was answered, and nothing else held the exit:
    // it came right after it (~1.7 s), far inside the 10 s grace period.
    let answered = slow.await.unwrap();
    assert!(answered.is_ok(), "the in-flight request was cut: {answered:?}");
    assert!(took < Duration::from_secs(4), "SIGTERM took {took:?} with slow clients open");
    // The trickled body was cut with the 408 envelope (or the socket closed).
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), trickle.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty()
            || answer.starts_with("HTTP/1.1 408") && answer.contains("ERR_REQUEST_TIMEOUT"),
        "{answer}"
    );
    drop((idle, half, kept));
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_backs_off_logs_once_and_recovers() {
    // A low descriptor limit, so a few dozen connections exhaust it.
    let mut cmd = Command::new("sh");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "-c",
        &format!("ulimit -n 64 && exec {BIN} \"$@\""),
        "sh",
    ]);
    for (k, _) in std::env::vars() {
        if k.starts_with("WEAPP__") {
            cmd.env_remove(k);
        }
    }
    let (mut running, addr, lines) = serve_logging(&mut cmd);
    let mut hogs = Vec::new();
    for _ in 0..80 {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(s) => hogs.push(s),
            Err(_) => break,
        }
    }
    // Out of descriptors for 3 s: accept() fails over and over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(running.0.try_wait().unwrap().is_none(), "the gateway died out of descriptors");
    drop(hogs);
    // Once descriptors are free again, a request is served promptly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http =
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    let started = Instant::now();
    let health = http.get(format!("http://{addr}/healthz")).send().await.expect("served again");
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    stops_cleanly_on_sigterm(&mut running.0);
    let logged: Vec<String> = lines.iter().collect();
    let failures = logged.iter().filter(|l| l.contains("Too many open files")).count();
    assert!(failures >= 1, "EMFILE never hit: {logged:?}");
    assert!(failures <= 1, "accept errors logged {failures} times in 3 s: {logged:?}");
}
