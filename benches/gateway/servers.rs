//! The processes the bench starts besides redis-server and the gateway:
//! the MongoDB-wire server (SecantusDB, Rust build or Python).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::process::{self, spawn_guarded};
use crate::common::*;

/// What SecantusDB (both builds) prints once it accepts connections.
const MONGO_LISTENING: &str = "listening on 127.0.0.1:";

/// Which MongoDB-wire server the data scenarios use.
#[derive(Clone, Debug)]
pub(crate) enum MongoKind {
    /// `secantusd-rs` (the Rust build): what the targets are stated for.
    Rust(PathBuf),
    /// `python -m secantus`: slow under load, functional tests only.
    Python(PathBuf),
}

impl MongoKind {
    pub(crate) fn describe(&self) -> String {
        match self {
            MongoKind::Rust(p) => format!("SecantusDB Rust build `secantusd-rs` ({})", p.display()),
            MongoKind::Python(p) => format!(
                "SecantusDB **Python** server ({} -m secantus): FALLBACK, `secantusd-rs` was not \
                 found; it is far slower under load, so the data rows do not show the gateway",
                p.display()
            ),
        }
    }
}

pub(crate) fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

pub(crate) fn find_mongo() -> Option<MongoKind> {
    if let Some(p) = std::env::var_os("SECANTUSD_RS").map(PathBuf::from) {
        return Some(MongoKind::Rust(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("secantusd-rs")).collect())
        .unwrap_or_default();
    candidates.push(home().join(".cargo/bin/secantusd-rs"));
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(MongoKind::Rust(found));
    }
    let python = std::env::var_os("SECANTUS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/secantusdb-0.7.0b3/bin/python"));
    python.is_file().then_some(MongoKind::Python(python))
}

/// The port of the first `listening on 127.0.0.1:PORT` line, once complete.
pub(crate) fn mongo_port_in(log: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    let (_, rest) = text.split_once(MONGO_LISTENING)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.len() == rest.len() {
        return None;
    }
    digits.parse().ok().filter(|&p| p != 0)
}

pub(crate) fn start_mongo(kind: &MongoKind) -> Result<(Server, String), String> {
    let dir = scratch_dir("weapp-bench-mongo-")?;
    let log = dir.join("mongo.log");
    std::fs::write(dir.join("empty.toml"), "").map_err(|e| format!("write empty.toml: {e}"))?;
    let (program, mut args): (PathBuf, Vec<OsString>) = match kind {
        MongoKind::Rust(p) => (p.clone(), Vec::new()),
        MongoKind::Python(p) => (p.clone(), vec!["-m".into(), "secantus".into()]),
    };
    args.extend([
        "--config".into(),
        dir.join("empty.toml").into_os_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        "0".into(),
        "--storage-path".into(),
        dir.join("data").into_os_string(),
        "--cache-size".into(),
        "256M".into(),
    ]);
    let process = spawn_guarded(&program, args, &log, Some(&dir))?;
    let pid = process.pid();
    let server = Server { process: Some(process), pid, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && process::alive(pid) {
        if let Some(port) = mongo_port_in(&server.log) {
            return Ok((server, format!("mongodb://127.0.0.1:{port}/?directConnection=true")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("the MongoDB-wire server did not listen; log:\n{}", tail(&server.log, 30)))
}
