//! The gateway benchmark: `cargo bench --bench gateway` (release profile).
//!
//! Starts on loopback, on free ports, everything it measures: a
//! `redis-server`, the gateway binary in several configurations (Redis store
//! with and without the L1 cache; MongoDB data store) with its embedded fake
//! WeChat, and a MongoDB-wire server (SecantusDB: the Rust `secantusd-rs`
//! where installed, else the Python one, and it says so). Every process runs
//! under a supervisor shell (`tests/support/process.rs`) so none outlives the
//! bench, even when it is killed.
//!
//! It seeds cached sessions over HTTP (compat: a minted code and its first
//! signed request; token: a token login), writes their credentials to files
//! that the wrk script (`benches/wrk/sessions.lua`) picks from at random per
//! request, then drives load with Debian's `wrk` from a separate process at
//! fixed connection counts, after a warm-up. Two scenarios are not wrk's: 100
//! concurrent first requests sharing one code, and login throughput.
//!
//! Output: a Markdown table on stdout and in `target/bench/results.md`,
//! `target/bench/results.json`, and a chart `target/bench/throughput.png`.
//! Knobs (environment): see [`Settings::from_env`] and the README's "Benchmarks".

mod common;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};

use common::process::{self, spawn_guarded};
use common::*;

/// What SecantusDB (both builds) prints once it accepts connections.
const MONGO_LISTENING: &str = "listening on 127.0.0.1:";
/// The PK group everyone in the ranking scenario belongs to.
const PK_GROUP: &str = "bench-group-10k";
/// MongoDB database of the data scenarios (the server is fresh per run).
const MONGO_DB: &str = "weapp_bench";
/// Concurrency of the seeding and login clients.
const CLIENT_CONCURRENCY: usize = 64;
/// Upper bound on any one seeding or client phase.
const PHASE_DEADLINE: Duration = Duration::from_secs(600);
/// How long a scenario waits for its first 200 (a previous scenario may have
/// left a backlog, e.g. MongoDB operations, to drain).
const PROBE_PATIENCE: Duration = Duration::from_secs(90);
/// How many concurrent first requests share one code.
const BURST: usize = 100;

// ---------------------------------------------------------------------------
// Settings

/// What one run does, from the environment.
#[derive(Clone, Debug, Serialize)]
struct Settings {
    quick: bool,
    duration_s: u64,
    warmup_s: u64,
    connections: Vec<u32>,
    wrk_threads: u32,
    wrk_timeout_s: u64,
    sessions: usize,
    pk_members: usize,
    notices: usize,
    logins: usize,
    burst_rounds: usize,
    /// Scenario keys to run (the baseline always runs); `None`: all.
    only: Option<Vec<String>>,
}

impl Settings {
    /// `BENCH_QUICK=1` (2 s runs, 1 s warm-up, 1,000 sessions and PK members),
    /// `BENCH_DURATION` / `BENCH_WARMUP` (seconds), `BENCH_CONNECTIONS`
    /// (`64,256`), `BENCH_WRK_THREADS` (2), `BENCH_SESSIONS`,
    /// `BENCH_PK_MEMBERS`, `BENCH_NOTICES`, `BENCH_LOGINS`,
    /// `BENCH_BURST_ROUNDS`, `BENCH_ONLY` (comma-separated scenario keys).
    fn from_env() -> Result<Self, String> {
        let quick =
            matches!(std::env::var("BENCH_QUICK").as_deref(), Ok("1") | Ok("true") | Ok("yes"));
        let (duration, warmup, sessions, members, notices, logins, rounds) = if quick {
            (2, 1, 1_000, 1_000, 200, 500, 3)
        } else {
            (10, 3, 10_000, 10_000, 1_000, 5_000, 10)
        };
        let connections = match std::env::var("BENCH_CONNECTIONS") {
            Ok(list) => list
                .split(',')
                .map(|c| c.trim().parse::<u32>().map_err(|_| format!("BENCH_CONNECTIONS: {c:?}")))
                .collect::<Result<Vec<_>, _>>()?,
            Err(_) => vec![64, 256],
        };
        let only = std::env::var("BENCH_ONLY")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect());
        let settings = Self {
            quick,
            duration_s: env_num("BENCH_DURATION", duration)?,
            warmup_s: env_num("BENCH_WARMUP", warmup)?,
            connections,
            wrk_threads: env_num("BENCH_WRK_THREADS", 2)?,
            wrk_timeout_s: 10,
            sessions: env_num("BENCH_SESSIONS", sessions)?,
            pk_members: env_num("BENCH_PK_MEMBERS", members)?,
            notices: env_num("BENCH_NOTICES", notices)?,
            logins: env_num("BENCH_LOGINS", logins)?,
            burst_rounds: env_num("BENCH_BURST_ROUNDS", rounds)?,
            only,
        };
        if settings.duration_s == 0 || settings.sessions == 0 || settings.wrk_threads == 0 {
            return Err("BENCH_DURATION, BENCH_SESSIONS and BENCH_WRK_THREADS must be > 0".into());
        }
        if settings.connections.iter().any(|&c| c < settings.wrk_threads) {
            return Err("every connection count must be >= BENCH_WRK_THREADS".into());
        }
        if let Some(only) = &settings.only {
            for key in only {
                if !SCENARIO_KEYS.contains(&key.as_str()) {
                    return Err(format!(
                        "BENCH_ONLY: unknown scenario {key:?}; known: {}",
                        SCENARIO_KEYS.join(", ")
                    ));
                }
            }
        }
        Ok(settings)
    }

    fn wants(&self, key: &str) -> bool {
        key == "baseline" || self.only.as_ref().is_none_or(|o| o.iter().any(|k| k == key))
    }

    fn wants_any(&self, keys: &[&str]) -> bool {
        keys.iter().any(|k| self.wants(k))
    }
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            v.strip_suffix('s')
                .unwrap_or(v)
                .replace('_', "")
                .parse()
                .map_err(|_| format!("{name}={v:?} is not a number"))
        }
        Err(_) => Ok(default),
    }
}

/// Every scenario key (`BENCH_ONLY`).
const SCENARIO_KEYS: &[&str] = &[
    "baseline",
    "compat-redis",
    "compat-l1",
    "token-redis",
    "token-l1",
    "first-burst",
    "login",
    "pk-ranking",
    "notices-feed",
];

// ---------------------------------------------------------------------------
// Results

/// CPU used during a measured run, in percent of one core.
#[derive(Clone, Debug, Default, Serialize)]
struct CpuShare {
    gateway: Option<f64>,
    redis: Option<f64>,
    mongo: Option<f64>,
    wrk: Option<f64>,
    /// The whole machine, in percent of all cores.
    machine: Option<f64>,
    /// Everything else on the machine (other users' processes, the bench
    /// process itself), in percent of one core.
    other: Option<f64>,
}

/// One line of the result table.
#[derive(Clone, Debug, Serialize)]
struct Row {
    scenario: String,
    key: String,
    connections: u32,
    rps: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    p999_ms: Option<f64>,
    errors: Option<u64>,
    ratio_to_baseline: Option<f64>,
    redis_cmds_per_request: Option<f64>,
    cpu_percent: Option<CpuShare>,
    /// `ok`, `failed` (did not run to the end) or `check-failed` (ran, but a
    /// correctness expectation was not met).
    status: &'static str,
    notes: String,
}

impl Row {
    fn failed(key: &str, scenario: &str, connections: u32, why: String) -> Self {
        Row {
            scenario: scenario.to_owned(),
            key: key.to_owned(),
            connections,
            rps: None,
            p50_ms: None,
            p99_ms: None,
            p999_ms: None,
            errors: None,
            ratio_to_baseline: None,
            redis_cmds_per_request: None,
            cpu_percent: None,
            status: "failed",
            notes: why,
        }
    }
}

// ---------------------------------------------------------------------------
// Machine description

#[derive(Clone, Debug, Serialize)]
struct Machine {
    date_utc: String,
    nproc: usize,
    cpu_model: String,
    kernel: String,
    cpu_busy_before_start_percent: Option<f64>,
    loadavg_at_start: String,
    wrk: String,
    redis: String,
    mongo_server: String,
}

/// (busy, total) jiffies of the whole machine from `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn machine_busy_percent(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (before?, after?);
    let dt = t1.checked_sub(t0)?;
    (dt > 0).then(|| (b1.saturating_sub(b0)) as f64 * 100.0 / dt as f64)
}

/// utime + stime of a process, in clock ticks (also readable for a zombie).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_second() -> f64 {
    command_line("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0)
}

// ---------------------------------------------------------------------------
// Processes

/// Which MongoDB-wire server the data scenarios use.
#[derive(Clone, Debug)]
enum MongoKind {
    /// `secantusd-rs` (the Rust build): what the targets are stated for.
    Rust(PathBuf),
    /// `python -m secantus`: slow under load, functional tests only.
    Python(PathBuf),
}

impl MongoKind {
    fn describe(&self) -> String {
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

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

fn find_mongo() -> Option<MongoKind> {
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
fn mongo_port_in(log: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    let (_, rest) = text.split_once(MONGO_LISTENING)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.len() == rest.len() {
        return None;
    }
    digits.parse().ok().filter(|&p| p != 0)
}

fn start_mongo(kind: &MongoKind) -> Result<(Server, String), String> {
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

// ---------------------------------------------------------------------------
// HTTP client side (seeding, probes, the non-wrk scenarios)

async fn jscode2session_calls(http: &reqwest::Client, gw: &Gateway) -> Result<u64, String> {
    let v: Value = http
        .get(format!("{}/__wechat/dev/stats", gw.base))
        .send()
        .await
        .map_err(|e| format!("stats: {e}"))?
        .json()
        .await
        .map_err(|e| format!("stats: {e}"))?;
    v.get("jscode2session_calls").and_then(Value::as_u64).ok_or_else(|| format!("stats: {v}"))
}

/// Run `f(i)` for `i in 0..n` with bounded concurrency and an overall
/// deadline; the first error stops the phase.
async fn bounded_all<T, F, Fut>(what: &str, n: usize, f: F) -> Result<Vec<T>, String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    let run = async {
        let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
        let mut results = stream::iter(0..n)
            .map(|i| {
                let fut = f(i);
                async move { (i, fut.await) }
            })
            .buffer_unordered(CLIENT_CONCURRENCY);
        while let Some((i, r)) = results.next().await {
            out[i] = Some(r.map_err(|e| format!("{what} #{i}: {e}"))?);
        }
        Ok::<_, String>(out.into_iter().flatten().collect())
    };
    let out = tokio::time::timeout(PHASE_DEADLINE, run)
        .await
        .map_err(|_| format!("{what}: not done within {PHASE_DEADLINE:?}"))??;
    eprintln!("bench: {what}: {n} in {:.1} s", started.elapsed().as_secs_f64());
    Ok(out)
}

/// Seed `n` sessions: mint a code for user `{prefix}{i}` and hand it with
/// that user's rawData to `first`, which answers the credential to replay.
async fn seed<'a, F, Fut>(
    what: &str,
    http: &'a reqwest::Client,
    gw: &'a Gateway,
    n: usize,
    prefix: &str,
    first: F,
) -> Result<Vec<String>, String>
where
    F: Fn(Minted, String) -> Fut + Copy,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    bounded_all(what, n, |i| async move {
        let m = mint(http, gw, &format!("{prefix}{i}")).await?;
        first(m, raw_data(i)).await
    })
    .await
}

async fn seed_compat(
    http: &reqwest::Client,
    gw: &Gateway,
    n: usize,
) -> Result<Vec<String>, String> {
    seed("seed compat sessions", http, gw, n, "bench_c", |m, raw| async move {
        let r = compat_first(http, gw, &m.code, &raw, &m.session_key)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        if status != 200 {
            return Err(format!(
                "first request answered {status}: {}",
                r.text().await.unwrap_or_default()
            ));
        }
        Ok(m.code)
    })
    .await
}

async fn seed_tokens(
    http: &reqwest::Client,
    gw: &Gateway,
    n: usize,
) -> Result<Vec<String>, String> {
    seed("seed token sessions", http, gw, n, "bench_t", |m, raw| async move {
        let r = token_login(http, gw, &m.code, &raw, &m.session_key)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        match body.get("token").and_then(Value::as_str) {
            Some(t) if status == 200 => Ok(t.to_owned()),
            _ => Err(format!("login answered {status}: {body}")),
        }
    })
    .await
}

/// One request through the path a wrk scenario will hammer; must answer 200.
/// [`probe_once`] until it succeeds, for up to [`PROBE_PATIENCE`]: a previous scenario
/// may have left a backlog (e.g. queued MongoDB operations) to drain.
async fn probe(
    http: &reqwest::Client,
    url: &str,
    header: Option<(&str, &str)>,
) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + PROBE_PATIENCE;
    let mut failures = 0u32;
    loop {
        match probe_once(http, url, header).await {
            Ok(()) => {
                if failures > 0 {
                    eprintln!(
                        "bench: {url} answered 200 again after {:.1} s ({failures} failed probes)",
                        started.elapsed().as_secs_f64()
                    );
                }
                return Ok(());
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{e} (still after {PROBE_PATIENCE:?} of retries)"));
            }
            Err(e) => {
                if failures == 0 {
                    eprintln!("bench: {url}: {e}; waiting for it to recover");
                }
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn probe_once(
    http: &reqwest::Client,
    url: &str,
    header: Option<(&str, &str)>,
) -> Result<(), String> {
    let mut req = http.get(url);
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let r = req.send().await.map_err(|e| format!("probe {url}: {e}"))?;
    let status = r.status();
    if status != 200 {
        let body = r.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        return Err(format!("probe answered {status}: {body}"));
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[idx].as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------
// Non-wrk scenarios

/// 100 concurrent compat first requests sharing one fresh code, on warm
/// connections; per round: jscode2session calls (must be 1) and the time
/// until all 100 have answered.
async fn first_burst(http: &reqwest::Client, gw: &Gateway, rounds: usize) -> Row {
    let scenario = "compat: 100 concurrent first requests, one code (Redis store)";
    match first_burst_inner(http, gw, rounds).await {
        Ok(row) => row,
        Err(e) => Row::failed("first-burst", scenario, BURST as u32, e),
    }
}

async fn first_burst_inner(
    http: &reqwest::Client,
    gw: &Gateway,
    rounds: usize,
) -> Result<Row, String> {
    let mut exchanges = Vec::new();
    let mut all_answered = Vec::new();
    let mut latencies = Vec::new();
    let mut not_ok = 0u64;
    let mut distinct_answers = 0usize;
    for round in 0..rounds {
        let m = mint(http, gw, &format!("bench_burst{round}")).await?;
        let raw = raw_data(900_000 + round);
        // Open (and keep) BURST connections first: the burst measures the
        // gateway, not TCP handshakes.
        let warm: Vec<_> =
            (0..BURST).map(|_| http.get(format!("{}/healthz", gw.base)).send()).collect();
        for r in futures_util::future::join_all(warm).await {
            r.map_err(|e| format!("warm-up: {e}"))?;
        }
        let before = jscode2session_calls(http, gw).await?;
        let requests: Vec<_> = (0..BURST)
            .map(|_| {
                let req = compat_first(http, gw, &m.code, &raw, &m.session_key);
                async move {
                    let started = Instant::now();
                    let r = req.send().await.map_err(|e| e.to_string())?;
                    let status = r.status().as_u16();
                    let body = r.text().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>((status, body, started.elapsed()))
                }
            })
            .collect();
        let started = Instant::now();
        let answers =
            tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(requests))
                .await
                .map_err(|_| "the burst did not finish within 30 s".to_owned())?;
        all_answered.push(started.elapsed());
        let after = jscode2session_calls(http, gw).await?;
        exchanges.push(after - before);
        let mut bodies = std::collections::HashSet::new();
        for a in answers {
            let (status, body, took) = a?;
            if status != 200 {
                not_ok += 1;
            }
            bodies.insert(body);
            latencies.push(took);
        }
        distinct_answers = distinct_answers.max(bodies.len());
    }
    latencies.sort();
    all_answered.sort();
    let ok = exchanges.iter().all(|&e| e == 1) && not_ok == 0 && distinct_answers == 1;
    let ms = |d: &Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let notes = format!(
        "{rounds} rounds of {BURST} requests on warm connections; jscode2session calls per round: \
         {exchanges:?} (expected 1 each){}; all {BURST} answered in {} ms (median round), {} ms \
         (slowest round); p50/p99 columns are single requests; reqwest client in the bench \
         process",
        if distinct_answers > 1 { "; ANSWERS DIFFERED within a round" } else { "" },
        all_answered.get(all_answered.len() / 2).map(ms).unwrap_or_default(),
        all_answered.last().map(ms).unwrap_or_default(),
    );
    Ok(Row {
        scenario: "compat: 100 concurrent first requests, one code (Redis store)".into(),
        key: "first-burst".into(),
        connections: BURST as u32,
        rps: None,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        p999_ms: percentile(&latencies, 99.9),
        errors: Some(not_ok),
        ratio_to_baseline: None,
        redis_cmds_per_request: None,
        cpu_percent: None,
        status: if ok { "ok" } else { "check-failed" },
        notes,
    })
}

/// Token logins with distinct, pre-minted codes (the embedded fake WeChat
/// answers at once), `CLIENT_CONCURRENCY` in flight.
async fn login_throughput(http: &reqwest::Client, gw: &Gateway, n: usize) -> Row {
    let scenario = "token login, distinct codes (Redis store, fake WeChat)";
    match login_inner(http, gw, n).await {
        Ok(row) => row,
        Err(e) => Row::failed("login", scenario, CLIENT_CONCURRENCY as u32, e),
    }
}

async fn login_inner(http: &reqwest::Client, gw: &Gateway, n: usize) -> Result<Row, String> {
    let minted = bounded_all("mint login codes", n, |i| async move {
        mint(http, gw, &format!("bench_login{i}")).await
    })
    .await?;
    let raws: Vec<String> = (0..n).map(|i| raw_data(500_000 + i)).collect();
    let before = jscode2session_calls(http, gw).await?;
    let started = Instant::now();
    let run = stream::iter(0..n)
        .map(|i| {
            let req = token_login(http, gw, &minted[i].code, &raws[i], &minted[i].session_key);
            async move {
                let t = Instant::now();
                let ok = match req.send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                (ok, t.elapsed())
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .collect::<Vec<_>>();
    let results = tokio::time::timeout(PHASE_DEADLINE, run)
        .await
        .map_err(|_| format!("logins not done within {PHASE_DEADLINE:?}"))?;
    let elapsed = started.elapsed();
    let after = jscode2session_calls(http, gw).await?;
    let ok_count = results.iter().filter(|(ok, _)| *ok).count();
    let mut latencies: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let errors = (n - ok_count) as u64;
    Ok(Row {
        scenario: "token login, distinct codes (Redis store, fake WeChat)".into(),
        key: "login".into(),
        connections: CLIENT_CONCURRENCY as u32,
        rps: Some(ok_count as f64 / elapsed.as_secs_f64()),
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        p999_ms: percentile(&latencies, 99.9),
        errors: Some(errors),
        ratio_to_baseline: None,
        redis_cmds_per_request: None,
        cpu_percent: None,
        status: if errors == 0 && after - before == n as u64 { "ok" } else { "check-failed" },
        notes: format!(
            "{n} logins (rawData + signature) with {CLIENT_CONCURRENCY} in flight, reqwest \
             client in the bench process; req/s = logins/s; each login = 1 jscode2session call \
             over loopback HTTP to the gateway's own embedded fake WeChat ({} calls seen) + \
             Redis writes",
            after - before
        ),
    })
}

// ---------------------------------------------------------------------------
// MongoDB seeding (straight into the store, through the gateway's own API)

async fn seed_mongo(
    uri: &str,
    members: &[String],
    notices: usize,
    date: &str,
) -> Result<String, String> {
    use weapp_gateway::mongo::{MongoConfig, WriteConcernSetting};
    use weapp_gateway::notices::{MongoNoticeStore, NewNotice, NoticeStore, Visibility};
    use weapp_gateway::pk::{MongoPkStore, PkStore, StepCheckin};

    let cfg = MongoConfig {
        uri: uri.to_owned(),
        database: MONGO_DB.into(),
        connect_timeout: Duration::from_secs(5),
        op_timeout: Duration::from_secs(30),
        write_concern: WriteConcernSetting::Majority,
    };
    let db = weapp_gateway::mongo::connect(&cfg).await.map_err(|e| e.to_string())?;
    let pk = MongoPkStore::new(db.clone(), cfg.op_timeout);
    pk.init(30).await.map_err(|e| format!("pk indexes: {e}"))?;
    let notice_store = MongoNoticeStore::new(db, cfg.op_timeout);
    notice_store.init().await.map_err(|e| format!("notice indexes: {e}"))?;
    let now = chrono::Utc::now();
    let (pk, notice_store) = (&pk, &notice_store);
    bounded_all("seed PK members + step records", members.len(), |i| async move {
        let openid = &members[i];
        pk.add_membership(PK_GROUP, openid).await.map_err(|e| e.to_string())?;
        let checkin = StepCheckin {
            open_gid: PK_GROUP.into(),
            date: date.to_owned(),
            openid: openid.clone(),
            // Spread and with ties, like real step counts.
            steps: ((i as u64).wrapping_mul(7919) % 30_000) + 1,
            nick_name: format!("用户{i}"),
            avatar_url: format!("https://thirdwx.qlogo.cn/mmopen/vi_32/{i}/132"),
            at: now - chrono::Duration::milliseconds(i as i64),
        };
        pk.upsert_steps(&checkin).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await?;
    bounded_all("seed notices", notices, |i| async move {
        let notice = NewNotice {
            author_openid: format!("bench_t{i}"),
            author_nick_name: format!("用户{i}"),
            author_avatar_url: format!("https://thirdwx.qlogo.cn/mmopen/vi_32/{i}/132"),
            content: format!("公告 {i}: 周末一起去白云山徒步，早上八点集合。Notice number {i}."),
            photos: vec![format!("https://img.example/notice/{i}.jpg")],
            visibility: Visibility::Public,
            created_at: now,
        };
        notice_store.insert(notice).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await?;

    // What one request of the data scenarios costs, store call by store call:
    // serial, from this process, median of a few.
    const ROUNDS: usize = 15;
    let mut times: [Vec<Duration>; 5] = Default::default();
    for round in 0..ROUNDS {
        let me = &members[(round * 7919) % members.len().max(1)];
        let t = Instant::now();
        pk.is_member(PK_GROUP, me).await.map_err(|e| e.to_string())?;
        times[0].push(t.elapsed());
        let t = Instant::now();
        pk.ranking(PK_GROUP, date, 100).await.map_err(|e| e.to_string())?;
        times[1].push(t.elapsed());
        let t = Instant::now();
        pk.rank_of(PK_GROUP, date, me).await.map_err(|e| e.to_string())?;
        times[2].push(t.elapsed());
        let t = Instant::now();
        pk.participants(PK_GROUP, date).await.map_err(|e| e.to_string())?;
        times[3].push(t.elapsed());
        let t = Instant::now();
        notice_store.feed(None, 21).await.map_err(|e| e.to_string())?;
        times[4].push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        percentile(v, 50.0).unwrap_or(0.0)
    };
    let [a, b, c, d, e] = &mut times;
    Ok(format!(
        "store calls, serial, median of {ROUNDS}: is_member {:.1} ms, ranking(top 100) {:.1} ms, \
         rank_of {:.1} ms, participants {:.1} ms, notices feed(21) {:.1} ms",
        median(a),
        median(b),
        median(c),
        median(d),
        median(e)
    ))
}

// ---------------------------------------------------------------------------
// wrk

#[derive(Clone, Debug, Default)]
struct WrkResult {
    requests: u64,
    duration_us: u64,
    connect: u64,
    read: u64,
    write: u64,
    status: u64,
    timeout: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    wrk_cpu_percent: Option<f64>,
}

impl WrkResult {
    fn parse(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix("BENCH_RESULT ")?;
        let mut r = WrkResult::default();
        for pair in rest.split_whitespace() {
            let (k, v) = pair.split_once('=')?;
            let int = || v.parse::<f64>().ok().map(|f| f as u64);
            match k {
                "requests" => r.requests = int()?,
                "duration_us" => r.duration_us = int()?,
                "connect" => r.connect = int()?,
                "read" => r.read = int()?,
                "write" => r.write = int()?,
                "status" => r.status = int()?,
                "timeout" => r.timeout = int()?,
                "p50_us" => r.p50_us = v.parse().ok()?,
                "p99_us" => r.p99_us = v.parse().ok()?,
                "p999_us" => r.p999_us = v.parse().ok()?,
                _ => {}
            }
        }
        Some(r)
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    fn errors(&self) -> u64 {
        self.connect + self.read + self.write + self.status + self.timeout
    }

    fn error_note(&self) -> String {
        if self.errors() == 0 {
            return String::new();
        }
        format!(
            "errors: {} status>=400, {} timeouts, {} connect, {} read, {} write",
            self.status, self.timeout, self.connect, self.read, self.write
        )
    }
}

/// A wrk target: URL plus the credentials file and header to pick from.
struct Target {
    url: String,
    creds: Option<(PathBuf, &'static str)>,
}

fn run_wrk(
    settings: &Settings,
    target: &Target,
    connections: u32,
    seconds: u64,
    ticks_per_s: f64,
) -> Result<WrkResult, String> {
    let dir = scratch_dir("weapp-bench-wrk-")?;
    let log = dir.join("wrk.log");
    let script = Path::new(ROOT).join("benches/wrk/sessions.lua");
    let (creds, header) = match &target.creds {
        Some((path, header)) => (path.clone().into_os_string(), *header),
        None => (OsString::new(), ""),
    };
    let mut creds_env = OsString::from("BENCH_CREDS=");
    creds_env.push(&creds);
    let args: Vec<OsString> = vec![
        creds_env,
        format!("BENCH_HEADER={header}").into(),
        "wrk".into(),
        format!("-t{}", settings.wrk_threads.min(connections)).into(),
        format!("-c{connections}").into(),
        format!("-d{seconds}s").into(),
        "--timeout".into(),
        format!("{}s", settings.wrk_timeout_s).into(),
        "--latency".into(),
        "-s".into(),
        script.into_os_string(),
        target.url.clone().into(),
    ];
    let guarded = spawn_guarded("env", args, &log, Some(&dir))?;
    let pid = guarded.pid();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds + 30);
    while process::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    let elapsed = started.elapsed().as_secs_f64();
    // A zombie still reports its CPU times.
    let wrk_cpu = process_ticks(pid).map(|t| t as f64 / ticks_per_s * 100.0 / elapsed);
    let timed_out = process::alive(pid);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    guarded.stop(Duration::from_secs(5), false);
    if timed_out {
        return Err(format!("wrk did not finish in time; output:\n{text}"));
    }
    let mut result = text
        .lines()
        .find_map(WrkResult::parse)
        .ok_or_else(|| format!("wrk printed no BENCH_RESULT line; output:\n{text}"))?;
    result.wrk_cpu_percent = wrk_cpu;
    Ok(result)
}

/// What is sampled around a measured run.
struct Probes<'a> {
    redis: Option<&'a redis::Client>,
    redis_pid: u32,
    mongo_pid: Option<u32>,
    ticks_per_s: f64,
    ncpu: usize,
}

struct Snapshot {
    at: Instant,
    redis_cmds: Option<u64>,
    gw: Option<u64>,
    redis: Option<u64>,
    mongo: Option<u64>,
    machine: Option<(u64, u64)>,
}

async fn redis_commands(client: Option<&redis::Client>) -> Option<u64> {
    let mut con = client?.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut con).await.ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Probes<'_> {
    async fn snapshot(&self, gw_pid: u32) -> Snapshot {
        Snapshot {
            redis_cmds: redis_commands(self.redis).await,
            at: Instant::now(),
            gw: process_ticks(gw_pid),
            redis: process_ticks(self.redis_pid),
            mongo: self.mongo_pid.and_then(process_ticks),
            machine: machine_ticks(),
        }
    }

    fn cpu(&self, a: &Snapshot, b: &Snapshot, wrk: Option<f64>) -> CpuShare {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        let pct = |x: Option<u64>, y: Option<u64>| {
            Some(y?.checked_sub(x?)? as f64 / self.ticks_per_s * 100.0 / secs)
        };
        let mut share = CpuShare {
            gateway: pct(a.gw, b.gw),
            redis: pct(a.redis, b.redis),
            mongo: pct(a.mongo, b.mongo),
            wrk,
            machine: machine_busy_percent(a.machine, b.machine),
            other: None,
        };
        let ours: f64 = [share.gateway, share.redis, share.mongo, share.wrk].iter().flatten().sum();
        share.other = share.machine.map(|m| (m * self.ncpu as f64 - ours).max(0.0));
        share
    }
}

/// One wrk scenario at one connection count: probe, warm-up, measured run.
#[allow(clippy::too_many_arguments)]
async fn wrk_scenario(
    settings: &Settings,
    probes: &Probes<'_>,
    http: &reqwest::Client,
    key: &str,
    scenario: &str,
    gw: &Gateway,
    target: &Target,
    connections: u32,
    notes: &str,
) -> Row {
    eprintln!("bench: {scenario} @ {connections} connections (gateway `{}`)", gw.name);
    let first_cred = target.creds.as_ref().and_then(|(path, header)| {
        let text = std::fs::read_to_string(path).ok()?;
        Some((*header, text.lines().next()?.to_owned()))
    });
    let header = first_cred.as_ref().map(|(h, v)| (*h, v.as_str()));
    if let Err(e) = probe(http, &target.url, header).await {
        eprintln!(
            "bench: {scenario}: {e}\nbench: gateway `{}` log tail:\n{}",
            gw.name,
            tail(&gw.server.log, 10)
        );
        return Row::failed(key, scenario, connections, e);
    }
    let ticks = probes.ticks_per_s;
    if settings.warmup_s > 0
        && let Err(e) = run_wrk(settings, target, connections, settings.warmup_s, ticks)
    {
        return Row::failed(key, scenario, connections, format!("warm-up: {e}"));
    }
    let before = probes.snapshot(gw.server.pid).await;
    let result = run_wrk(settings, target, connections, settings.duration_s, ticks);
    let after = probes.snapshot(gw.server.pid).await;
    let r = match result {
        Ok(r) => r,
        Err(e) => return Row::failed(key, scenario, connections, e),
    };
    let redis_cmds = match (before.redis_cmds, after.redis_cmds) {
        // The INFO of the second snapshot is one of them.
        (Some(a), Some(b)) if r.requests > 0 => {
            Some(b.saturating_sub(a).saturating_sub(1) as f64 / r.requests as f64)
        }
        _ => None,
    };
    let mut notes = notes.to_owned();
    let errors = r.error_note();
    if !errors.is_empty() {
        if !notes.is_empty() {
            notes.push_str("; ");
        }
        notes.push_str(&errors);
    }
    Row {
        scenario: scenario.to_owned(),
        key: key.to_owned(),
        connections,
        rps: Some(r.rps()),
        p50_ms: Some(r.p50_us / 1000.0),
        p99_ms: Some(r.p99_us / 1000.0),
        p999_ms: Some(r.p999_us / 1000.0),
        errors: Some(r.errors()),
        ratio_to_baseline: None,
        redis_cmds_per_request: redis_cmds,
        cpu_percent: Some(probes.cpu(&before, &after, r.wrk_cpu_percent)),
        status: if r.requests == 0 { "failed" } else { "ok" },
        notes,
    }
}

// ---------------------------------------------------------------------------
// Report

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}")).unwrap_or_else(|| "–".into())
}

fn fmt_rps(v: Option<f64>) -> String {
    match v {
        Some(x) => {
            let n = x.round() as u64;
            let s = n.to_string();
            let mut out = String::new();
            for (i, ch) in s.chars().enumerate() {
                if i > 0 && (s.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(ch);
            }
            out
        }
        None => "–".into(),
    }
}

fn fmt_cpu(c: &Option<CpuShare>) -> String {
    let Some(c) = c else { return "–".into() };
    let p = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "–".into());
    let mut s = format!("{} · {} · {} · {}", p(c.gateway), p(c.redis), p(c.wrk), p(c.other));
    if let Some(m) = c.mongo.filter(|m| *m >= 2.0) {
        let _ = write!(s, " (mongo {m:.0})");
    }
    s
}

fn markdown_table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| scenario | conns | req/s | p50 ms | p99 ms | p99.9 ms | errors | × baseline | redis \
         cmd/req | CPU % gw · redis · wrk · other | notes |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n");
    for r in rows {
        let status = match r.status {
            "ok" => String::new(),
            other => format!("**{}**: ", other.to_uppercase()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
            r.scenario,
            r.connections,
            fmt_rps(r.rps),
            fmt_opt(r.p50_ms, 2),
            fmt_opt(r.p99_ms, 2),
            fmt_opt(r.p999_ms, 2),
            r.errors.map(|e| e.to_string()).unwrap_or_else(|| "–".into()),
            r.ratio_to_baseline.map(|x| format!("{x:.2}×")).unwrap_or_else(|| "–".into()),
            fmt_opt(r.redis_cmds_per_request, 2),
            fmt_cpu(&r.cpu_percent),
            status,
            r.notes.replace('|', "/").replace('\n', " "),
        );
    }
    s
}

fn machine_markdown(m: &Machine, s: &Settings, mongo: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "- date: {}", m.date_utc);
    let _ =
        writeln!(out, "- machine: {} CPUs (nproc), {}; kernel {}", m.nproc, m.cpu_model, m.kernel);
    let _ = writeln!(
        out,
        "- other load: CPU {} % busy during the 1 s before the bench started; loadavg {}",
        fmt_opt(m.cpu_busy_before_start_percent, 0),
        m.loadavg_at_start
    );
    let _ = writeln!(
        out,
        "- load generator: {} (Debian), `-t{}` (2 threads on a 2-core machine: wrk and the gateway share the cores), `--timeout {}s`, connections {:?}",
        m.wrk, s.wrk_threads, s.wrk_timeout_s, s.connections
    );
    let _ = writeln!(
        out,
        "- runs: {} s measured after a {} s warm-up (not recorded), per scenario and connection count{}",
        s.duration_s,
        s.warmup_s,
        if s.quick { " — QUICK MODE (BENCH_QUICK=1)" } else { "" }
    );
    let _ = writeln!(
        out,
        "- data: {} cached sessions per dialect, each wrk request picks one at random; PK group of {} members; {} notices",
        s.sessions, s.pk_members, s.notices
    );
    let _ = writeln!(out, "- session store: {}; MongoDB-wire server: {}", m.redis, mongo);
    let _ = writeln!(
        out,
        "- gateway: release build, dev config + `WEAPP__…` overrides, embedded fake WeChat, login rate limit effectively off, `RUST_LOG={GATEWAY_LOG_FILTER}`: the per-request access log was OFF (it is an I/O cost this bench does not measure)"
    );
    out
}

fn legend() -> &'static str {
    "Columns: req/s, p50/p99/p99.9 are wrk's (latency per request, client side); errors = \
     socket errors + timeouts + responses with status >= 400; × baseline = req/s divided by the \
     first `baseline` row at the same connection count in this run (the repeated baseline at \
     the end shows the drift over the run); redis cmd/req = Redis `total_commands_processed` \
     growth per request during the measured run (0 means no Redis round trip); CPU % is of one \
     core (the machine has the number of cores above), sampled from /proc over the measured run; `other` is \
     everything else on the machine in that time (other users' processes: this machine is \
     shared and noisy), (mongo N) the MongoDB-wire server's share."
}

fn draw_chart(rows: &[Row], path: &Path, subtitle: &str) -> Result<(), String> {
    use plotters::prelude::*;
    use plotters::style::{FontStyle, register_font};

    const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    let bytes = std::fs::read(FONT).map_err(|e| {
        format!("font {FONT} not found ({e}); install fonts-dejavu-core for the chart")
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| "bad font".to_owned())?;

    let mut conns: Vec<u32> =
        rows.iter().filter(|r| r.rps.is_some()).map(|r| r.connections).collect();
    conns.sort();
    conns.dedup();
    let mut scenarios: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.rps.is_some()) {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    if scenarios.is_empty() {
        return Err("no rows to draw".into());
    }
    let max = rows.iter().filter_map(|r| r.rps).fold(1.0_f64, f64::max);
    let bar_h = 22i32;
    let group_h = bar_h * conns.len() as i32 + 14;
    let (left, right, top) = (420i32, 40i32, 90i32);
    let width = 1280i32;
    let height = top + group_h * scenarios.len() as i32 + 70;
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("chart: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let font = |size: i32| ("sans-serif", size).into_font();
    root.draw(&Text::new(
        "weapp-gateway: requests per second per scenario (wrk)".to_owned(),
        (20, 14),
        font(24),
    ))
    .map_err(e)?;
    root.draw(&Text::new(subtitle.to_owned(), (20, 46), font(15).color(&RGBColor(90, 90, 90))))
        .map_err(e)?;
    let plot_w = (width - left - right - 170) as f64;
    let x_of = |v: f64| left + (v / max * plot_w) as i32;
    let palette = [RGBColor(52, 101, 164), RGBColor(245, 121, 0), RGBColor(78, 154, 6)];
    // Grid.
    let step = nice_step(max / 5.0);
    let mut tick = 0.0;
    let bottom = top + group_h * scenarios.len() as i32;
    while tick <= max * 1.0001 {
        let x = x_of(tick);
        root.draw(&PathElement::new(vec![(x, top - 6), (x, bottom)], RGBColor(225, 225, 225)))
            .map_err(e)?;
        root.draw(&Text::new(fmt_rps(Some(tick)), (x - 14, bottom + 6), font(13))).map_err(e)?;
        tick += step;
    }
    for (si, name) in scenarios.iter().enumerate() {
        let y0 = top + si as i32 * group_h;
        let label: String = name.chars().take(52).collect();
        root.draw(&Text::new(label, (14, y0 + group_h / 2 - 14), font(15))).map_err(e)?;
        for (ci, c) in conns.iter().enumerate() {
            let Some(r) = rows.iter().find(|r| r.scenario == *name && r.connections == *c) else {
                continue;
            };
            let Some(rps) = r.rps else { continue };
            let y = y0 + ci as i32 * bar_h + 4;
            let color = palette[ci % palette.len()];
            root.draw(&Rectangle::new([(left, y), (x_of(rps), y + bar_h - 4)], color.filled()))
                .map_err(e)?;
            let ratio =
                r.ratio_to_baseline.map(|x| format!("  {x:.2}× baseline")).unwrap_or_default();
            root.draw(&Text::new(
                format!("{} req/s{ratio}  ({c} conns)", fmt_rps(Some(rps))),
                (x_of(rps) + 6, y + 2),
                font(13),
            ))
            .map_err(e)?;
        }
    }
    // Legend.
    for (ci, c) in conns.iter().enumerate() {
        let x = left + ci as i32 * 160;
        let y = bottom + 30;
        let color = palette[ci % palette.len()];
        root.draw(&Rectangle::new([(x, y), (x + 16, y + 14)], color.filled())).map_err(e)?;
        root.draw(&Text::new(format!("{c} connections"), (x + 22, y), font(14))).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.max(1.0).log10().floor());
    let n = raw / mag;
    let nice = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

// ---------------------------------------------------------------------------
// The run

fn main() -> ExitCode {
    // `cargo test --all-targets` (the test suite) builds and runs this binary
    // too, without `--bench`: a benchmark is not a test, so then it only
    // says how to run it.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "bench: not a test; run it with `cargo bench --bench gateway` (README: Benchmarks)"
        );
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    if Command::new("wrk").arg("-v").output().is_err() {
        eprintln!(
            "bench: `wrk` was not found on PATH. Install Debian's: \
             `sudo apt-get update && sudo apt-get install -y wrk`"
        );
        return ExitCode::FAILURE;
    }
    if Command::new("redis-server").arg("--version").output().is_err() {
        eprintln!(
            "bench: `redis-server` was not found on PATH. Install Debian's: \
             `sudo apt-get update && sudo apt-get install -y redis-server`"
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: some scenarios failed or a check did not hold (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_creds(dir: &Path, name: &str, lines: &[String]) -> Result<PathBuf, String> {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

async fn run(settings: Settings) -> Result<bool, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let out_dir = Path::new(ROOT).join("target/bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;

    // Machine description, sampled before anything of ours runs.
    let before = machine_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let busy = machine_busy_percent(before, machine_ticks());
    let mongo_kind =
        if settings.wants_any(&["pk-ranking", "notices-feed"]) { find_mongo() } else { None };
    let mongo_desc = match &mongo_kind {
        Some(k) => k.describe(),
        None if settings.wants_any(&["pk-ranking", "notices-feed"]) => {
            "NONE FOUND (no secantusd-rs, no SecantusDB Python venv): data scenarios skipped".into()
        }
        None => "not used in this run".into(),
    };
    let machine = Machine {
        date_utc: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model: cpu_model(),
        kernel: format!(
            "{} {}",
            read_trim("/proc/sys/kernel/ostype"),
            read_trim("/proc/sys/kernel/osrelease")
        ),
        cpu_busy_before_start_percent: busy,
        loadavg_at_start: read_trim("/proc/loadavg"),
        wrk: command_line("wrk", &["-v"]).split(" Copyright").next().unwrap_or("").to_owned(),
        redis: command_line("redis-server", &["--version"]),
        mongo_server: mongo_desc.clone(),
    };
    let machine_md = machine_markdown(&machine, &settings, &mongo_desc);
    println!("## weapp-gateway benchmark\n\n{machine_md}");
    if matches!(mongo_kind, Some(MongoKind::Python(_))) {
        println!(
            "NOTE: `secantusd-rs` was not found (PATH, ~/.cargo/bin, $SECANTUSD_RS): the data \
             scenarios use the slow Python SecantusDB server instead.\n"
        );
    }

    let ticks_per_s = clock_ticks_per_second();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| format!("http client: {e}"))?;

    // Servers.
    let (mut redis_server, redis_port) = start_redis()?;
    let redis_client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}/0")).ok();
    let mut mongo = match &mongo_kind {
        Some(kind) => match start_mongo(kind) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("bench: {e}");
                None
            }
        },
        None => None,
    };
    let gw_redis = start_gateway("redis", &gateway_env(redis_port, &[]), &http).await?;
    let gw_l1 = if settings.wants_any(&["compat-l1", "token-l1"]) {
        Some(
            start_gateway(
                "redis+l1",
                &gateway_env(
                    redis_port,
                    &[("WEAPP__SESSION__L1", "true"), ("WEAPP__SESSION__L1_TTL", "1s")],
                ),
                &http,
            )
            .await,
        )
    } else {
        None
    };
    let gw_data = match &mongo {
        Some((_, uri)) => Some(
            start_gateway(
                "redis+mongodb",
                &gateway_env(
                    redis_port,
                    &[
                        ("WEAPP__DATA__STORE", "mongodb"),
                        ("WEAPP__MONGODB__URI", uri),
                        ("WEAPP__MONGODB__DATABASE", MONGO_DB),
                    ],
                ),
                &http,
            )
            .await,
        ),
        None => None,
    };

    // Seed.
    let work = scratch_dir("weapp-bench-creds-")?;
    let result = async {
        let codes = seed_compat(&http, &gw_redis, settings.sessions).await?;
        let tokens = seed_tokens(&http, &gw_redis, settings.sessions).await?;
        let codes_file = write_creds(&work, "compat_codes.txt", &codes)?;
        let tokens_file = write_creds(&work, "tokens.txt", &tokens)?;
        let members = settings.pk_members.min(tokens.len());
        let members_file = write_creds(&work, "pk_member_tokens.txt", &tokens[..members])?;
        Ok::<_, String>((codes_file, tokens_file, members_file, members))
    }
    .await;
    let (codes_file, tokens_file, members_file, members) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().map_err(|_| "tz".to_owned())?;
    let pk_date = weapp_gateway::pk::routes::date_in(tz, chrono::Utc::now());
    let mut data_error: Option<String> = None;
    let mut store_ops = String::new();
    if let Some((_, uri)) = &mongo {
        let openids: Vec<String> = (0..members).map(|i| format!("bench_t{i}")).collect();
        if settings.pk_members > members {
            eprintln!(
                "bench: BENCH_PK_MEMBERS={} > sessions: the group has {members} members",
                settings.pk_members
            );
        }
        match seed_mongo(uri, &openids, settings.notices, &pk_date).await {
            Ok(timings) => {
                eprintln!("bench: {timings}");
                store_ops = timings;
            }
            Err(e) => data_error = Some(format!("seeding MongoDB: {e}")),
        }
    }

    let probes = Probes {
        redis: redis_client.as_ref(),
        redis_pid: redis_server.pid,
        mongo_pid: mongo.as_ref().map(|(m, _)| m.pid),
        ticks_per_s,
        ncpu: machine.nproc.max(1),
    };

    // The wrk scenarios, per connection count.
    let mut rows: Vec<Row> = Vec::new();
    let compat = |gw: &Gateway, path: &str| Target {
        url: format!("{}{path}", gw.base),
        creds: Some((codes_file.clone(), "X-WX-Code")),
    };
    let token = |gw: &Gateway, path: &str, file: &Path| Target {
        url: format!("{}{path}", gw.base),
        creds: Some((file.to_path_buf(), "X-WX-Skey")),
    };
    // The data scenarios once more on one connection: the per-request
    // latency without queueing.
    let serial_pass =
        settings.wants_any(&["pk-ranking", "notices-feed"]) && !settings.connections.contains(&1);
    let passes: Vec<(u32, bool)> = settings
        .connections
        .iter()
        .map(|&c| (c, false))
        .chain(serial_pass.then_some((1, true)))
        .collect();
    for (c, serial) in passes {
        if !serial {
            let baseline_note = "GET /healthz: ignored by the session layer (no session lookup); \
                             same random X-WX-Code header as the compat rows, so the client \
                             does the same work";
            rows.push(
                wrk_scenario(
                    &settings,
                    &probes,
                    &http,
                    "baseline",
                    "baseline: GET /healthz (no session layer)",
                    &gw_redis,
                    &compat(&gw_redis, "/healthz"),
                    c,
                    baseline_note,
                )
                .await,
            );
            let l1_failed = |key: &str, scenario: &str, e: &str| {
                Row::failed(key, scenario, c, format!("the L1 gateway did not start: {e}"))
            };
            let sessions_note =
                format!("GET /applet/session/me, one of {} sessions at random", settings.sessions);
            if settings.wants("compat-redis") {
                rows.push(
                    wrk_scenario(
                        &settings,
                        &probes,
                        &http,
                        "compat-redis",
                        "compat cached session, Redis store",
                        &gw_redis,
                        &compat(&gw_redis, "/applet/session/me"),
                        c,
                        &format!("{sessions_note} (X-WX-Code)"),
                    )
                    .await,
                );
            }
            if settings.wants("compat-l1") {
                let scenario = "compat cached session, L1 (1 s) + Redis";
                rows.push(match &gw_l1 {
                    Some(Ok(gw)) => {
                        wrk_scenario(
                            &settings,
                            &probes,
                            &http,
                            "compat-l1",
                            scenario,
                            gw,
                            &compat(gw, "/applet/session/me"),
                            c,
                            &format!(
                                "{sessions_note} (X-WX-Code); L1 misses show in redis cmd/req"
                            ),
                        )
                        .await
                    }
                    Some(Err(e)) => l1_failed("compat-l1", scenario, e),
                    None => Row::failed("compat-l1", scenario, c, "not started".into()),
                });
            }
            if settings.wants("token-redis") {
                rows.push(
                    wrk_scenario(
                        &settings,
                        &probes,
                        &http,
                        "token-redis",
                        "token cached session, Redis store (sliding TTL)",
                        &gw_redis,
                        &token(&gw_redis, "/applet/session/me", &tokens_file),
                        c,
                        &format!(
                            "{sessions_note} (X-WX-Skey); idle TTL refreshed on every request"
                        ),
                    )
                    .await,
                );
            }
            if settings.wants("token-l1") {
                let scenario = "token cached session, L1 (1 s) + Redis (sliding TTL)";
                rows.push(match &gw_l1 {
                    Some(Ok(gw)) => {
                        wrk_scenario(
                            &settings,
                            &probes,
                            &http,
                            "token-l1",
                            scenario,
                            gw,
                            &token(gw, "/applet/session/me", &tokens_file),
                            c,
                            &format!(
                                "{sessions_note} (X-WX-Skey); idle TTL refreshed once per L1 window"
                            ),
                        )
                        .await
                    }
                    Some(Err(e)) => l1_failed("token-l1", scenario, e),
                    None => Row::failed("token-l1", scenario, c, "not started".into()),
                });
            }
        }
        let data_scenarios = [
            (
                "pk-ranking",
                format!("PK ranking, {members}-member group (MongoDB)"),
                format!("/applet/pk/groups/{PK_GROUP}/ranking?date={pk_date}"),
                members_file.clone(),
                format!(
                    "GET …/pk/groups/{{gid}}/ranking: token of one of the {members} members at \
                     random; membership check + top 100 + caller's rank + participant count, \
                     from the PK board cache (pk.board_cache_ttl 1 s: one whole-day load per \
                     second, stale-while-revalidate)"
                ),
            ),
            (
                "notices-feed",
                "notices feed page, limit=20 (MongoDB)".to_owned(),
                "/applet/notices?limit=20".to_owned(),
                tokens_file.clone(),
                format!(
                    "GET /applet/notices?limit=20 over {} public notices, with a random \
                     user's token (the session is resolved too)",
                    settings.notices
                ),
            ),
        ];
        for (key, scenario, path, file, note) in data_scenarios {
            if !settings.wants(key) {
                continue;
            }
            let row = match (&gw_data, &data_error) {
                (_, Some(e)) => Row::failed(key, &scenario, c, e.clone()),
                (Some(Ok(gw)), None) => {
                    wrk_scenario(
                        &settings,
                        &probes,
                        &http,
                        key,
                        &scenario,
                        gw,
                        &token(gw, &path, &file),
                        c,
                        &format!(
                            "{}{note}; server: {}; {store_ops}",
                            if serial { "ONE connection (no queueing): " } else { "" },
                            match &mongo_kind {
                                Some(MongoKind::Rust(_)) => "secantusd-rs",
                                _ => "Python SecantusDB (FALLBACK)",
                            }
                        ),
                    )
                    .await
                }
                (Some(Err(e)), None) => Row::failed(
                    key,
                    &scenario,
                    c,
                    format!("the MongoDB gateway did not start: {e}"),
                ),
                (None, None) => {
                    Row::failed(key, &scenario, c, format!("no MongoDB server: {mongo_desc}"))
                }
            };
            rows.push(row);
        }
        if !serial {
            rows.push(
                wrk_scenario(
                    &settings,
                    &probes,
                    &http,
                    "baseline",
                    "baseline again, at the end (drift check)",
                    &gw_redis,
                    &compat(&gw_redis, "/healthz"),
                    c,
                    "the same as the first baseline row",
                )
                .await,
            );
        }
    }

    // Ratios against the first baseline row at each connection count.
    for c in &settings.connections {
        let base =
            rows.iter().find(|r| r.key == "baseline" && r.connections == *c).and_then(|r| r.rps);
        if let Some(base) = base {
            for r in rows.iter_mut().filter(|r| r.connections == *c) {
                r.ratio_to_baseline = r.rps.map(|x| x / base);
            }
        }
    }

    // The client-driven scenarios.
    if settings.wants("first-burst") {
        eprintln!("bench: 100 concurrent first requests sharing one code");
        rows.push(first_burst(&http, &gw_redis, settings.burst_rounds).await);
    }
    if settings.wants("login") {
        eprintln!("bench: login throughput");
        rows.push(login_throughput(&http, &gw_redis, settings.logins).await);
    }

    // Stop everything.
    let _ = std::fs::remove_dir_all(&work);
    let mut gateways = vec![gw_redis];
    gateways.extend(gw_l1.and_then(Result::ok));
    gateways.extend(gw_data.and_then(Result::ok));
    for mut gw in gateways {
        gw.server.stop(Duration::from_secs(10));
    }
    if let Some((mut m, _)) = mongo.take() {
        m.stop(Duration::from_secs(10));
    }
    redis_server.stop(Duration::from_secs(5));

    // Report.
    let mut table = markdown_table(&rows);
    if !store_ops.is_empty() {
        let _ =
            write!(table, "\nMongoDB {store_ops} (one member's calls, from the bench process).\n");
    }
    println!("{table}\n{}\n", legend());
    let md = format!("## weapp-gateway benchmark\n\n{machine_md}\n{table}\n{}\n", legend());
    let md_path = out_dir.join("results.md");
    std::fs::write(&md_path, &md).map_err(|e| format!("write {}: {e}", md_path.display()))?;
    let json_path = out_dir.join("results.json");
    let doc = json!({
        "machine": machine,
        "settings": settings,
        "gateway_log_filter": GATEWAY_LOG_FILTER,
        "access_log": "off",
        "results": rows,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text).map_err(|e| format!("write {}: {e}", json_path.display()))?;
    println!("wrote {} and {}", md_path.display(), json_path.display());
    let png = out_dir.join("throughput.png");
    let chart_rows: Vec<Row> = rows
        .iter()
        .filter(|r| r.rps.is_some() && r.key != "login" && r.key != "first-burst")
        .filter(|r| settings.connections.contains(&r.connections))
        .cloned()
        .collect();
    let subtitle = format!(
        "{} · {} CPUs · {} s runs, wrk -t{} · {}",
        machine.date_utc,
        machine.nproc,
        settings.duration_s,
        settings.wrk_threads,
        machine.cpu_model
    );
    match draw_chart(&chart_rows, &png, &subtitle) {
        Ok(()) => println!("wrote {}", png.display()),
        Err(e) => println!("no chart: {e}"),
    }
    Ok(rows.iter().all(|r| r.status == "ok"))
}
