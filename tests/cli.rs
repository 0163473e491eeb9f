//! The `weapp-gateway` binary: check-config, dev mode end to end through the
//! embedded fake WeChat, graceful shutdown on SIGTERM.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
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

    let minted: Value = http
        .post(format!("{base}/__wechat/dev/codes"))
        .json(&json!({"openid": "o_cli"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "exit status {exit}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn fake_wechat_runs_standalone() {
    let port = support::redis::free_port();
    let mut child = gateway()
        .args(["fake-wechat", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--appid", "wx_cli", "--secret", "cli-secret"])
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
    let _ = child.kill();
    let _ = child.wait();
}
