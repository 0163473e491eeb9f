//! What the benchmark (`benches/gateway.rs`) and the fault-under-load
//! command (`benches/faults.rs`) share: free ports, supervised
//! `redis-server` and gateway processes, and the HTTP calls that mint codes
//! and log users in. Each bench includes it as `mod common;`.
#![allow(dead_code)]

pub use weapp_test_support::{process, wx};

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use process::{Guarded, spawn_guarded};
use wx::{encode_uri_component, sign};

/// The gateway binary cargo built for this bench (release profile).
pub const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_weapp-gateway");

/// The package root (config files, wrk scripts, `target/`).
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `tracing` filter for the gateway: warnings only, plus the one info line
/// of the binary itself (`weapp-gateway listening addr=…`, target
/// `weapp_gateway`) that tells the bench its port. Every library target
/// (`weapp_gateway::…`, including the access log `weapp_gateway::access`)
/// stays at warn: the per-request log line is an I/O cost this bench does not
/// measure.
pub const GATEWAY_LOG_FILTER: &str = "warn,weapp_gateway=info,weapp_gateway::=warn";

/// The line the gateway logs once it listens.
pub const LISTENING_LINE: &str = "weapp-gateway listening";

/// Redis key prefix of every gateway instance: they share the sessions.
pub const REDIS_PREFIX: &str = "bench:";

pub fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

pub fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

pub fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind a loopback port: {e}"))
}

pub fn scratch_dir(prefix: &str) -> Result<PathBuf, String> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map(|d| d.keep())
        .map_err(|e| format!("cannot create a temp dir: {e}"))
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A supervised server and what the bench knows about it.
pub struct Server {
    pub process: Option<Guarded>,
    pub pid: u32,
    pub log: PathBuf,
}

impl Server {
    pub fn stop(&mut self, grace: Duration) {
        if let Some(p) = self.process.take() {
            p.stop(grace, false);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill(false);
        }
    }
}

pub fn redis_answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// `redis-server` on a free loopback port, nothing persisted.
pub fn start_redis() -> Result<(Server, u16), String> {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        let dir = scratch_dir("weapp-bench-redis-")?;
        match start_redis_at(port, &dir, false) {
            Ok(server) => return Ok((server, port)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `redis-server` on `port` with its files in `dir` (deleted once it has
/// exited, unless it is stopped with `keep_files`); with `appendonly` every
/// write also goes to an append-only file, fsynced once a second, so a
/// restart on the same `dir` finds the data again.
pub fn start_redis_at(port: u16, dir: &Path, appendonly: bool) -> Result<Server, String> {
    let log = dir.join("redis.log");
    let args: Vec<OsString> = vec![
        "--port".into(),
        port.to_string().into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        if appendonly { "yes" } else { "no" }.into(),
        "--appendfsync".into(),
        "everysec".into(),
        "--dir".into(),
        dir.as_os_str().to_owned(),
    ];
    let process = spawn_guarded("redis-server", args, &log, Some(dir))?;
    let pid = process.pid();
    let server = Server { process: Some(process), pid, log };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && process::alive(pid) {
        if redis_answers_ping(port) {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("redis-server did not answer PING; last log:\n{}", tail(&server.log, 20)))
}

/// A running gateway instance.
pub struct Gateway {
    pub name: &'static str,
    pub base: String,
    pub server: Server,
}

pub fn parse_listening(log: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains(LISTENING_LINE))?;
    let (_, rest) = line.split_once("addr=")?;
    rest.split_whitespace().next()?.trim_matches('"').parse().ok()
}

/// Start the gateway binary (dev config, fake WeChat embedded) with `env`
/// on top of the bench's defaults, and wait until `/readyz` answers 200.
pub async fn start_gateway(
    name: &'static str,
    env: &[(String, String)],
    http: &reqwest::Client,
) -> Result<Gateway, String> {
    let dir = scratch_dir(&format!("weapp-bench-gw-{name}-"))?;
    let log = dir.join("gateway.log");
    let mut args: Vec<OsString> = Vec::new();
    // The caller's own WEAPP_* settings must not leak into the measured setup.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEAPP_") {
            args.push("-u".into());
            args.push(key);
        }
    }
    for (k, v) in env {
        args.push(format!("{k}={v}").into());
    }
    args.push(GATEWAY_BIN.into());
    args.push("serve".into());
    args.push("--config".into());
    args.push(Path::new(ROOT).join("config/default.toml").into_os_string());
    let process = spawn_guarded("env", args, &log, Some(&dir))?;
    let pid = process.pid();
    let server = Server { process: Some(process), pid, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Some(addr) = parse_listening(&server.log) {
            break addr;
        }
        if !process::alive(pid) || Instant::now() >= deadline {
            return Err(format!(
                "gateway `{name}` did not start; its log:\n{}",
                tail(&server.log, 30)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string());
        if status == Ok(200) {
            return Ok(Gateway { name, base, server });
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "gateway `{name}` is not ready ({status:?}); its log:\n{}",
                tail(&server.log, 30)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn gateway_env(redis_port: u16, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("RUST_LOG", GATEWAY_LOG_FILTER.to_owned()),
        ("WEAPP__SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        ("WEAPP__WECHAT__FAKE", "true".to_owned()),
        ("WEAPP__SESSION__STORE", "redis".to_owned()),
        ("WEAPP__REDIS__URL", format!("redis://127.0.0.1:{redis_port}/0")),
        ("WEAPP__REDIS__PREFIX", REDIS_PREFIX.to_owned()),
        // `session.login_rate_limit` is an Option that an environment
        // variable cannot unset: make it too large to ever bite.
        ("WEAPP__SESSION__LOGIN_RATE_LIMIT__PER_MINUTE", "4000000000".to_owned()),
        ("WEAPP__SESSION__LOGIN_RATE_LIMIT__BURST", "4000000000".to_owned()),
        // Seeding and the login scenario start thousands of exchanges a
        // second against the embedded fake: lift the instance-wide budget.
        ("WEAPP__SESSION__EXCHANGES_PER_SECOND", "1000000".to_owned()),
        ("WEAPP__SESSION__EXCHANGES_BURST", "1000000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

pub fn raw_data(i: usize) -> String {
    json!({
        "nickName": format!("用户{i}"),
        "gender": 1,
        "language": "zh_CN",
        "city": "Guangzhou",
        "province": "Guangdong",
        "country": "China",
        "avatarUrl": format!("https://thirdwx.qlogo.cn/mmopen/vi_32/{i}/132"),
    })
    .to_string()
}

pub struct Minted {
    pub code: String,
    pub session_key: String,
}

pub async fn mint(http: &reqwest::Client, gw: &Gateway, openid: &str) -> Result<Minted, String> {
    let r = http
        .post(format!("{}/__wechat/dev/codes", gw.base))
        .json(&json!({ "openid": openid }))
        .send()
        .await
        .map_err(|e| format!("mint: {e}"))?;
    let v: Value = r.json().await.map_err(|e| format!("mint: {e}"))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    match (field("code"), field("session_key")) {
        (Some(code), Some(session_key)) => Ok(Minted { code, session_key }),
        _ => Err(format!("mint: unexpected answer {v}")),
    }
}

/// The compat first request (code + rawData + signature) on `/applet/session/me`.
pub fn compat_first(
    http: &reqwest::Client,
    gw: &Gateway,
    code: &str,
    raw: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    http.get(format!("{}/applet/session/me", gw.base))
        .header("X-WX-Code", code)
        .header("X-WX-RawData", encode_uri_component(raw))
        .header("X-WX-Signature", sign(raw, key))
}

pub fn token_login(
    http: &reqwest::Client,
    gw: &Gateway,
    code: &str,
    raw: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    http.post(format!("{}/applet/session/login", gw.base)).json(&json!({
        "code": code,
        "rawData": raw,
        "signature": sign(raw, key),
    }))
}
