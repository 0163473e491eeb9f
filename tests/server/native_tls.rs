//! Native HTTPS through tokio-rustls: h2 and HTTP/1.1 by ALPN, plain HTTP on
//! the TLS port refused cleanly, clear start-up errors for bad certificates,
//! and certificate reload on SIGHUP (on the real binary).

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::net::wait_closed;
use tokio::io::AsyncWriteExt;

use serde_json::json;
use support::app::{AppOptions, spawn_app};
use weapp_gateway::config::Config;
use weapp_gateway::server::Application;

struct TestCert {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn make_cert(name: &str) -> TestCert {
    let certified = rcgen::generate_simple_self_signed(vec![
        "localhost".into(),
        "127.0.0.1".into(),
        name.into(),
    ])
    .unwrap();
    TestCert {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
        der: certified.cert.der().to_vec(),
    }
}

fn write_cert(dir: &Path, cert: &TestCert) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, &cert.cert_pem).unwrap();
    std::fs::write(&k, &cert.key_pem).unwrap();
    (c, k)
}

fn https_client(cert: &TestCert, http1_only: bool) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([root])
        .timeout(Duration::from_secs(10))
        .no_proxy();
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

#[tokio::test]
async fn serves_https_with_h2_and_http1_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert("gw.test");
    let (c, k) = write_cert(dir.path(), &cert);
    let app = spawn_app(
        AppOptions::redis("native_tls")
            .with("server.tls", json!({"cert": c.to_string_lossy(), "key": k.to_string_lossy()})),
    )
    .await;
    let url = format!("https://127.0.0.1:{}", app.addr.port());

    let h2 = https_client(&cert, false).get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(h2.status(), 200);
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let h1 = https_client(&cert, true).get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);

    // A whole token login over HTTPS.
    let minted = app.mint("o_tls");
    let login = https_client(&cert, false)
        .post(format!("{url}/applet/session/login"))
        .json(&json!({"code": minted.code}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let token =
        login.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let me = https_client(&cert, false)
        .get(format!("{url}/applet/session/me"))
        .header("X-WX-Skey", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    // Plain HTTP to the TLS port: a clean failure, not a hang, not a crash.
    let started = Instant::now();
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/healthz", app.addr.port()))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let again = https_client(&cert, false).get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(again.status(), 200, "the server keeps serving HTTPS");
}

async fn build_error(tls: serde_json::Value) -> String {
    let figment = figment::Figment::new().merge(figment::providers::Serialized::defaults(json!({
        "server": {"listen": "127.0.0.1:0", "tls": tls},
        "wechat": {"app_id": "wx", "app_secret": "s", "api_base": "http://127.0.0.1:9"},
    })));
    let config = Config::from_figment(figment).unwrap();
    match Application::build(config).await {
        Ok(_) => panic!("a bad certificate must stop the start"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn bad_or_missing_certificates_fail_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let good = make_cert("a");
    let (c, k) = write_cert(dir.path(), &good);
    let missing = dir.path().join("nope.pem");
    let e = build_error(json!({"cert": missing, "key": k})).await;
    assert!(e.contains("server.tls.cert") && e.contains("nope.pem"), "{e}");
    let missing_key = dir.path().join("nope-key.pem");
    let e = build_error(json!({"cert": c, "key": missing_key})).await;
    assert!(e.contains("server.tls.key") && e.contains("nope-key.pem"), "{e}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem").unwrap();
    let e = build_error(json!({"cert": garbage, "key": k})).await;
    assert!(e.contains("server.tls.cert"), "{e}");
    let e = build_error(json!({"cert": c, "key": garbage})).await;
    assert!(e.contains("server.tls.key"), "{e}");

    let other = make_cert("b");
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let e = build_error(json!({"cert": c, "key": other_key})).await;
    assert!(e.contains("does not belong"), "{e}");
}

/// The DER of the certificate the server presents.
async fn presented_cert(port: u16, roots: &[&TestCert]) -> Vec<u8> {
    let tls = tls_connect(port, roots).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A TLS connection (HTTP/1.1 by ALPN) trusting `roots`, handshake done.
async fn tls_connect(
    port: u16,
    roots: &[&TestCert],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(rustls::pki_types::CertificateDer::from(r.der.clone())).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test]
async fn slow_clients_after_the_handshake_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert("slow.test");
    let (c, k) = write_cert(dir.path(), &cert);
    let app = spawn_app(
        AppOptions::memory()
            .with("server.tls", json!({"cert": c.to_string_lossy(), "key": k.to_string_lossy()}))
            .with("server.header_read_timeout", "1s")
            .with("server.idle_timeout", "30s"),
    )
    .await;
    let port = app.addr.port();
    let in_time = |closed: Option<Duration>| closed.is_some_and(|c| c < Duration::from_secs(3));

    // A TCP connection that never starts the handshake.
    let mut raw = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (closed, _) = wait_closed(&mut raw, Duration::from_secs(6)).await;
    assert!(in_time(closed), "no handshake: {closed:?}");

    // Handshake done, then silence.
    let mut idle = tls_connect(port, &[&cert]).await;
    let (closed, _) = wait_closed(&mut idle, Duration::from_secs(6)).await;
    assert!(in_time(closed), "idle after the handshake: {closed:?}");

    // Handshake done, then one header line every 300 ms.
    let mut slow = tls_connect(port, &[&cert]).await;
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n").await.unwrap();
    let mut closed = None;
    let mut seen = String::new();
    for i in 0..30 {
        let (c, s) = wait_closed(&mut slow, Duration::from_millis(300)).await;
        seen.push_str(&s);
        if c.is_some() || !s.is_empty() {
            closed = Some(started.elapsed());
            break;
        }
        if slow.write_all(format!("X-Slow-{i}: aaaa\r\n").as_bytes()).await.is_err()
            || slow.flush().await.is_err()
        {
            closed = Some(started.elapsed());
            break;
        }
    }
    assert!(in_time(closed), "trickled headers: {closed:?}");
    assert!(!seen.contains("200 OK"), "a trickled request was served: {seen}");

    // A prompt client is served.
    let mut ok = tls_connect(port, &[&cert]).await;
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await.unwrap();
    let (_, answer) = wait_closed(&mut ok, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_the_old_one_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (make_cert("first"), make_cert("second"));
    let (c, k) = write_cert(dir.path(), &a);
    let mut child = Command::new(env!("CARGO_BIN_EXE_weapp-gateway"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("serve")
        .env("WEAPP__SERVER__LISTEN", "127.0.0.1:0")
        .env("WEAPP__WECHAT__FAKE", "false")
        .env("WEAPP__WECHAT__API_BASE", "http://127.0.0.1:9")
        .env("WEAPP__SERVER__TLS__CERT", &c)
        .env("WEAPP__SERVER__TLS__KEY", &k)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    let addr: std::net::SocketAddr =
        rx.recv_timeout(Duration::from_secs(20)).unwrap().parse().unwrap();
    let hup = |pid: u32| {
        assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success())
    };
    assert_eq!(presented_cert(addr.port(), &[&a, &b]).await, a.der);

    write_cert(dir.path(), &b);
    hup(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented_cert(addr.port(), &[&a, &b]).await != b.der {
        assert!(Instant::now() < deadline, "certificate not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    std::fs::write(&c, "broken").unwrap();
    hup(child.id());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().unwrap().is_none(), "a bad reload must not stop the server");
    assert_eq!(presented_cert(addr.port(), &[&a, &b]).await, b.der);
    let _ = child.kill();
    let _ = child.wait();
}
