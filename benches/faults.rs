//! Faults under load: `bash benches/faults.sh` (or `cargo bench --bench faults`).
//!
//! Not a timed test: a command that prints figures. It starts, on free
//! loopback ports, a `redis-server` (append-only file, fsync every second)
//! and one gateway (release build, dev mode, Redis session store, its
//! embedded fake WeChat), logs in a few hundred users (half token, half
//! compat), then drives a bounded load from its own client: many concurrent
//! tasks, each looping `GET /applet/session/me` as a random user, with every
//! tenth request a brand-new login (token login then `/me` with the new
//! token, or a compat first request). While the load runs it injects, one
//! after another:
//!
//! 1. Redis SIGSTOP for 4 s, then SIGCONT;
//! 2. Redis SIGKILL, restarted on the same port and files;
//! 3. a slow WeChat (the fake's `delay_ms` beyond `wechat.timeout`);
//! 4. a failing WeChat (the fake's `http_500`).
//!
//! EVERY answer is checked: a 200 must carry the openid of the user whose
//! credential was sent, anything else must be the JSON error envelope (the
//! magic key = 1 and a `reason`). A session lost with the writes of the last
//! second before the SIGKILL answers `ERR_SESSION_EXPIRED`: an envelope, so
//! correct. Per fault it prints: requests sent and answered, the worst
//! latency against the bound that applies (`redis.timeout` for the Redis
//! faults, `wechat.timeout` for the WeChat ones), non-envelope answers and
//! wrong identities (both must be 0), and the time to recover (from the end
//! of the fault to the first correct answer of a request sent after it).
//! Exit status 1 when any of those checks fails.
//!
//! Knobs (environment): `FAULTS_USERS` (300), `FAULTS_CONCURRENCY` (64),
//! `FAULTS_LOGIN_EVERY` (10).

mod common;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use common::*;

/// `redis.timeout`, pinned (it is the default) so the printed bound is the one in effect.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// `wechat.timeout`, pinned likewise.
const WECHAT_TIMEOUT: Duration = Duration::from_secs(5);
/// How far past its bound the worst latency may be and still count as
/// within it (scheduling on a loaded 2-core machine, the client's own queue).
const SLACK: Duration = Duration::from_secs(1);
/// The magic key of the JSON error envelope.
const MAGIC: &str = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A";
/// Upper bound on the answers kept for the report (the load stops there).
const MAX_SAMPLES: usize = 2_000_000;
/// How long the command waits for a recovery before it calls it failed.
const RECOVERY_PATIENCE: Duration = Duration::from_secs(30);
/// The client's own timeout per request: far above every bound.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which path a request took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `GET /applet/session/me` with a cached session's credential.
    Me,
    /// A new login (token login, or a compat first request).
    Login,
}

/// What one answer was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// 200 with the right openid.
    Ok,
    /// A JSON error envelope.
    Envelope,
    /// Anything else: no answer, a non-JSON error, a 200 without openid.
    NotEnvelope,
    /// 200 with another user's openid.
    WrongIdentity,
}

/// One checked request.
struct Sample {
    /// Sent at, since the load started.
    start: Duration,
    took: Duration,
    kind: Kind,
    outcome: Outcome,
    /// The envelope's reason, or what was wrong with a non-envelope answer.
    reason: String,
}

/// A seeded user.
struct User {
    openid: String,
    /// `(header, value)`: `X-WX-Skey` with a token or `X-WX-Code` with a code.
    cred: (&'static str, String),
}

/// One fault, as the controller ran it.
struct Phase {
    name: &'static str,
    /// When the fault started and ended, since the load started.
    start: Duration,
    end: Duration,
    bound: Option<(Duration, &'static str)>,
    /// Which answers show recovery: the requests the fault hits.
    recovery_kind: Option<Kind>,
}

struct Settings {
    users: usize,
    concurrency: usize,
    login_every: u64,
}

fn env_usize(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{name}={v:?} is not a positive number")),
        Err(_) => Ok(default),
    }
}

/// Check one answer: the right identity on a 200, else the envelope.
async fn classify(
    answer: Result<reqwest::Response, reqwest::Error>,
    expected: &str,
    pointer: &str,
) -> (Outcome, String, Option<Value>) {
    let r = match answer {
        Ok(r) => r,
        Err(e) => {
            let what = if e.is_timeout() { "client timeout" } else { "no answer" };
            return (Outcome::NotEnvelope, format!("{what}: {e}"), None);
        }
    };
    let status = r.status();
    let body = match r.bytes().await {
        Ok(b) => b,
        Err(e) => return (Outcome::NotEnvelope, format!("{status}, body cut: {e}"), None),
    };
    let value: Option<Value> = serde_json::from_slice(&body).ok();
    if status == 200 {
        let openid = value.as_ref().and_then(|v| v.pointer(pointer)).and_then(Value::as_str);
        return match openid {
            Some(o) if o == expected => (Outcome::Ok, String::new(), value),
            Some(o) => (Outcome::WrongIdentity, format!("got {o}, sent {expected}"), None),
            None => (Outcome::NotEnvelope, "200 without an openId".into(), None),
        };
    }
    let reason = value
        .as_ref()
        .filter(|v| v.get(MAGIC).and_then(Value::as_i64) == Some(1))
        .and_then(|v| v.get("reason"))
        .and_then(Value::as_str);
    match reason {
        Some(reason) => (Outcome::Envelope, format!("{} {reason}", status.as_u16()), None),
        None => {
            let text: String = String::from_utf8_lossy(&body).chars().take(80).collect();
            (Outcome::NotEnvelope, format!("{status} not an envelope: {text:?}"), None)
        }
    }
}

/// What the load tasks share.
struct Load {
    http: reqwest::Client,
    gw: Gateway,
    users: Vec<User>,
    t0: Instant,
    stop: AtomicBool,
    counter: AtomicU64,
    samples: Mutex<Vec<Sample>>,
    login_every: u64,
    /// Mints (dev endpoint) that failed: logins not attempted.
    mint_failures: AtomicU64,
}

impl Load {
    fn record(&self, start: Instant, kind: Kind, outcome: Outcome, reason: String) {
        let sample = Sample {
            start: start.duration_since(self.t0),
            took: start.elapsed(),
            kind,
            outcome,
            reason,
        };
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() < MAX_SAMPLES {
            samples.push(sample);
        } else {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    async fn me(&self, header: &str, value: &str, openid: &str) -> Outcome {
        let start = Instant::now();
        let answer = self
            .http
            .get(format!("{}/applet/session/me", self.gw.base))
            .header(header, value)
            .send()
            .await;
        let (outcome, reason, _) = classify(answer, openid, "/openId").await;
        self.record(start, Kind::Me, outcome, reason);
        outcome
    }

    async fn login(&self, n: u64) {
        let openid = format!("fault_n{n}");
        let Ok(m) = mint(&self.http, &self.gw, &openid).await else {
            self.mint_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let raw = raw_data(n as usize);
        let start = Instant::now();
        if n.is_multiple_of(2) {
            let answer =
                token_login(&self.http, &self.gw, &m.code, &raw, &m.session_key).send().await;
            let (outcome, reason, body) = classify(answer, &openid, "/user/openId").await;
            self.record(start, Kind::Login, outcome, reason);
            let token = body.as_ref().and_then(|b| b.get("token")).and_then(Value::as_str);
            if let Some(token) = token {
                self.me("X-WX-Skey", token, &openid).await;
            }
        } else {
            let answer =
                compat_first(&self.http, &self.gw, &m.code, &raw, &m.session_key).send().await;
            let (outcome, reason, _) = classify(answer, &openid, "/openId").await;
            self.record(start, Kind::Login, outcome, reason);
        }
    }

    async fn run_task(self: Arc<Self>) {
        while !self.stop.load(Ordering::Relaxed) {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(self.login_every) {
                self.login(n).await;
            } else {
                // A fixed odd multiplier spreads consecutive requests over the users.
                let u =
                    &self.users[(n.wrapping_mul(2_654_435_761) % self.users.len() as u64) as usize];
                self.me(u.cred.0, &u.cred.1, &u.openid).await;
            }
        }
    }

    /// Wait until a request of `kind` sent at or after `since` answered correctly.
    async fn wait_recovery(&self, kind: Kind, since: Duration) -> bool {
        let deadline = Instant::now() + RECOVERY_PATIENCE;
        while Instant::now() < deadline {
            let recovered = {
                let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
                samples
                    .iter()
                    .rev()
                    .take(20_000)
                    .any(|s| s.kind == kind && s.outcome == Outcome::Ok && s.start >= since)
            };
            if recovered {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn now(&self) -> Duration {
        self.t0.elapsed()
    }
}

async fn set_faults(http: &reqwest::Client, gw: &Gateway, faults: Value) -> Result<(), String> {
    let r = http
        .post(format!("{}/__wechat/dev/faults", gw.base))
        .json(&faults)
        .send()
        .await
        .map_err(|e| format!("set faults: {e}"))?;
    if r.status() != 200 {
        return Err(format!("set faults answered {}", r.status()));
    }
    Ok(())
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill -{sig}: {e}"))?
        .success();
    if ok { Ok(()) } else { Err(format!("kill -{sig} {pid} failed")) }
}

async fn seed(http: &reqwest::Client, gw: &Gateway, n: usize) -> Result<Vec<User>, String> {
    let started = Instant::now();
    let users = stream::iter(0..n)
        .map(|i| async move {
            let openid = format!("fault_u{i}");
            let m = mint(http, gw, &openid).await?;
            let raw = raw_data(i);
            if i % 2 == 0 {
                let r = token_login(http, gw, &m.code, &raw, &m.session_key)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let body: Value = r.json().await.map_err(|e| e.to_string())?;
                let token = body.get("token").and_then(Value::as_str);
                let token = token.ok_or_else(|| format!("token login answered {body}"))?;
                Ok::<_, String>(User { openid, cred: ("X-WX-Skey", token.to_owned()) })
            } else {
                let r = compat_first(http, gw, &m.code, &raw, &m.session_key)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() != 200 {
                    return Err(format!("compat first request answered {}", r.status()));
                }
                Ok(User { openid, cred: ("X-WX-Code", m.code) })
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    let users = tokio::time::timeout(Duration::from_secs(300), users)
        .await
        .map_err(|_| "seeding took longer than 300 s".to_owned())?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!("faults: {n} users logged in in {:.1} s", started.elapsed().as_secs_f64());
    Ok(users)
}

/// The fault schedule, run while the load runs.
async fn faults(
    load: &Load,
    redis: &mut Server,
    redis_port: u16,
    redis_dir: &std::path::Path,
) -> Result<Vec<Phase>, String> {
    let mut phases = Vec::new();
    let settle = Duration::from_secs(2);
    // Baseline.
    let start = load.now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    phases.push(Phase {
        name: "none (baseline)",
        start,
        end: load.now(),
        bound: None,
        recovery_kind: None,
    });
    let redis_bound = Some((REDIS_TIMEOUT, "redis.timeout"));
    let wechat_bound = Some((WECHAT_TIMEOUT, "wechat.timeout"));

    // 1. Redis SIGSTOP for 4 s.
    eprintln!("faults: Redis SIGSTOP for 4 s");
    let start = load.now();
    signal(redis.pid, "STOP")?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(redis.pid, "CONT")?;
    let end = load.now();
    load.wait_recovery(Kind::Me, end).await;
    tokio::time::sleep(settle).await;
    phases.push(Phase {
        name: "Redis SIGSTOP 4 s, SIGCONT",
        start,
        end,
        bound: redis_bound,
        recovery_kind: Some(Kind::Me),
    });

    // 2. Redis SIGKILL, then a restart on the same port and files.
    eprintln!("faults: Redis SIGKILL, restart on port {redis_port}");
    let start = load.now();
    if let Some(p) = redis.process.take() {
        tokio::task::block_in_place(|| p.kill(true));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dir = redis_dir.to_path_buf();
    *redis = tokio::task::spawn_blocking(move || start_redis_at(redis_port, &dir, true))
        .await
        .map_err(|e| format!("restart: {e}"))??;
    let end = load.now();
    load.wait_recovery(Kind::Me, end).await;
    tokio::time::sleep(settle).await;
    phases.push(Phase {
        name: "Redis SIGKILL, restart (AOF)",
        start,
        end,
        bound: redis_bound,
        recovery_kind: Some(Kind::Me),
    });

    // 3. A slow WeChat: every call 2 s past wechat.timeout, for 8 s.
    let delay = WECHAT_TIMEOUT + Duration::from_secs(2);
    eprintln!("faults: WeChat delay_ms {} for 8 s", delay.as_millis());
    let start = load.now();
    set_faults(&load.http, &load.gw, json!({ "delay_ms": delay.as_millis() as u64 })).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    set_faults(&load.http, &load.gw, json!({})).await?;
    let end = load.now();
    load.wait_recovery(Kind::Login, end).await;
    tokio::time::sleep(settle).await;
    phases.push(Phase {
        name: "slow WeChat (delay 7 s) for 8 s",
        start,
        end,
        bound: wechat_bound,
        recovery_kind: Some(Kind::Login),
    });

    // 4. A failing WeChat: HTTP 500 for 4 s.
    eprintln!("faults: WeChat http_500 for 4 s");
    let start = load.now();
    set_faults(&load.http, &load.gw, json!({ "http_500": true })).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    set_faults(&load.http, &load.gw, json!({})).await?;
    let end = load.now();
    load.wait_recovery(Kind::Login, end).await;
    tokio::time::sleep(settle).await;
    phases.push(Phase {
        name: "failing WeChat (HTTP 500) for 4 s",
        start,
        end,
        bound: wechat_bound,
        recovery_kind: Some(Kind::Login),
    });
    Ok(phases)
}

/// One row per phase, over the requests answered from its start to the next one's.
fn report(phases: &[Phase], samples: &[Sample], load_end: Duration) -> (String, bool) {
    let mut table = String::from(
        "| fault | requests | answered | correct 200 | envelopes | worst latency (bound) | \
         non-envelope | wrong identity | recovery |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let mut notes = String::new();
    let mut all_ok = true;
    for (i, p) in phases.iter().enumerate() {
        let until = phases.get(i + 1).map_or(load_end, |n| n.start);
        // By completion: a request sent just before the next fault but
        // answered during it was that fault's to bear.
        let window: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.start + s.took >= p.start && s.start + s.took < until)
            .collect();
        let count = |o: Outcome| window.iter().filter(|s| s.outcome == o).count();
        let answered = window
            .iter()
            .filter(|s| !(s.outcome == Outcome::NotEnvelope && s.reason.starts_with("no answer")))
            .filter(|s| !s.reason.starts_with("client timeout"))
            .count();
        let worst = window.iter().map(|s| s.took).max().unwrap_or_default();
        let (bad, wrong) = (count(Outcome::NotEnvelope), count(Outcome::WrongIdentity));
        let within = p.bound.is_none_or(|(b, _)| worst <= b + SLACK);
        let recovery = p.recovery_kind.map(|kind| {
            samples
                .iter()
                .filter(|s| s.kind == kind && s.outcome == Outcome::Ok && s.start >= p.end)
                .map(|s| s.start + s.took)
                .min()
                .map(|t| t.saturating_sub(p.end))
        });
        let recovered = !matches!(recovery, Some(None));
        all_ok &= bad == 0 && wrong == 0 && within && recovered;
        let bound = match p.bound {
            Some((b, name)) => format!(
                "{} ms ({name} {} ms{})",
                worst.as_millis(),
                b.as_millis(),
                if within { "" } else { ", EXCEEDED" }
            ),
            None => format!("{} ms", worst.as_millis()),
        };
        let recovery = match recovery {
            None => "–".to_owned(),
            Some(None) => format!("NOT within {} s", RECOVERY_PATIENCE.as_secs()),
            Some(Some(d)) => format!(
                "{} ms ({})",
                d.as_millis(),
                if p.recovery_kind == Some(Kind::Me) { "/me" } else { "login" }
            ),
        };
        table.push_str(&format!(
            "| {} | {} | {answered} | {} | {} | {bound} | {bad} | {wrong} | {recovery} |\n",
            p.name,
            window.len(),
            count(Outcome::Ok),
            count(Outcome::Envelope),
        ));
        // Which envelopes (and, if any, which bad answers) the window saw.
        let mut reasons: Vec<(String, usize)> = Vec::new();
        for s in window.iter().filter(|s| s.outcome != Outcome::Ok) {
            let key = if s.outcome == Outcome::Envelope {
                s.reason.clone()
            } else {
                format!("BAD {:?}: {}", s.outcome, s.reason)
            };
            if let Some((_, n)) = reasons.iter_mut().find(|(k, _)| *k == key) {
                *n += 1;
            } else if reasons.len() < 20 {
                reasons.push((key, 1));
            }
        }
        reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
        let worst_of = |kind: Kind| {
            let of_kind = window.iter().filter(|s| s.kind == kind);
            let worst = of_kind.clone().max_by_key(|s| s.took);
            match worst {
                Some(w) if w.outcome == Outcome::Ok => format!("{} ms (200)", w.took.as_millis()),
                Some(w) => format!("{} ms ({})", w.took.as_millis(), w.reason),
                None => "–".to_owned(),
            }
        };
        let list: Vec<String> = reasons.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        notes.push_str(&format!(
            "- {}: worst /me {}, worst login {}; {}\n",
            p.name,
            worst_of(Kind::Me),
            worst_of(Kind::Login),
            if list.is_empty() { "no errors".to_owned() } else { list.join(", ") }
        ));
    }
    (
        format!(
            "{table}\nPer fault: the slowest request of each kind, and every answer other than a correct 200:\n{notes}"
        ),
        all_ok,
    )
}

async fn run(settings: Settings) -> Result<bool, String> {
    // reqwest is built without a default TLS provider (plain HTTP here anyway).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (redis_port, redis_dir) = (free_port()?, scratch_dir("weapp-faults-redis-")?);
    let mut redis = start_redis_at(redis_port, &redis_dir, true)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .pool_max_idle_per_host(settings.concurrency * 2)
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let env = gateway_env(
        redis_port,
        &[
            ("WEAPP__REDIS__TIMEOUT", &format!("{}s", REDIS_TIMEOUT.as_secs())),
            ("WEAPP__WECHAT__TIMEOUT", &format!("{}s", WECHAT_TIMEOUT.as_secs())),
        ],
    );
    let mut gw = start_gateway("faults", &env, &http).await?;
    let users = match seed(&http, &gw, settings.users).await {
        Ok(u) => u,
        Err(e) => {
            gw.server.stop(Duration::from_secs(5));
            return Err(e);
        }
    };
    let load = Arc::new(Load {
        http: http.clone(),
        gw,
        users,
        t0: Instant::now(),
        stop: AtomicBool::new(false),
        counter: AtomicU64::new(1),
        samples: Mutex::new(Vec::new()),
        login_every: settings.login_every,
        mint_failures: AtomicU64::new(0),
    });
    eprintln!(
        "faults: load with {} concurrent tasks, every {}th request a new login",
        settings.concurrency, settings.login_every
    );
    let tasks: Vec<_> =
        (0..settings.concurrency).map(|_| tokio::spawn(load.clone().run_task())).collect();
    let schedule = faults(&load, &mut redis, redis_port, &redis_dir).await;
    load.stop.store(true, Ordering::Relaxed);
    let load_end = load.now();
    for t in tasks {
        let _ = tokio::time::timeout(CLIENT_TIMEOUT + Duration::from_secs(5), t).await;
    }
    let phases = schedule?;
    let samples = std::mem::take(&mut *load.samples.lock().unwrap_or_else(|e| e.into_inner()));
    let (table, ok) = report(&phases, &samples, load_end);
    let log = load.gw.server.log.clone();
    if let Ok(mut load) = Arc::try_unwrap(load).map_err(|_| ()) {
        load.gw.server.stop(Duration::from_secs(10));
    }
    redis.stop(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&redis_dir);

    let panics = std::fs::read_to_string(&log)
        .map(|t| t.lines().filter(|l| l.contains("panicked")).count())
        .unwrap_or(0);
    let header = format!(
        "## weapp-gateway faults under load\n\n{} UTC · {} CPUs · {} · {}\n\n\
         One gateway (release, dev mode, Redis store with AOF everysec, embedded fake WeChat); \
         {} seeded users (half token, half compat); {} concurrent client tasks, every {}th \
         request a new login; {} checked answers in {:.1} s; gateway panics in its log: {panics}.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        command_line("redis-server", &["--version"]),
        settings.users,
        settings.concurrency,
        settings.login_every,
        samples.len(),
        load_end.as_secs_f64(),
    );
    let md = format!("{header}\n{table}");
    println!("{md}");
    let out: PathBuf = [ROOT, "target", "bench"].iter().collect();
    let _ = std::fs::create_dir_all(&out);
    let path = out.join("faults.md");
    match std::fs::write(&path, &md) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("faults: write {}: {e}", path.display()),
    }
    Ok(ok && panics == 0)
}

fn main() -> ExitCode {
    // `cargo test --all-targets` builds and runs this binary too, without
    // `--bench`: it is not a test, so then it only says how to run it.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "faults: not a test; run it with `bash benches/faults.sh` (README: Faults under load)"
        );
        return ExitCode::SUCCESS;
    }
    let settings = match (|| {
        Ok::<_, String>(Settings {
            users: env_usize("FAULTS_USERS", 300)?,
            concurrency: env_usize("FAULTS_CONCURRENCY", 64)?,
            login_every: env_usize("FAULTS_LOGIN_EVERY", 10)? as u64,
        })
    })() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("faults: {e}");
            return ExitCode::from(2);
        }
    };
    if Command::new("redis-server").arg("--version").output().is_err() {
        eprintln!("faults: `redis-server` was not found on PATH (benches/faults.sh installs it)");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("faults: tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("faults: a check did not hold (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("faults: {e}");
            ExitCode::FAILURE
        }
    }
}
