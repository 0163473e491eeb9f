//! The wrk scenarios: running wrk, parsing its output, and sampling Redis
//! and CPU around the measured run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::process::{self, spawn_guarded};
use crate::common::*;
use crate::report::{CpuShare, Row, machine_busy_percent, machine_ticks, process_ticks};
use crate::seeding::probe;
use crate::settings::Settings;

#[derive(Clone, Debug, Default)]
pub(crate) struct WrkResult {
    pub(crate) requests: u64,
    pub(crate) duration_us: u64,
    pub(crate) connect: u64,
    pub(crate) read: u64,
    pub(crate) write: u64,
    pub(crate) status: u64,
    pub(crate) timeout: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) wrk_cpu_percent: Option<f64>,
}

impl WrkResult {
    pub(crate) fn parse(line: &str) -> Option<Self> {
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

    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    pub(crate) fn errors(&self) -> u64 {
        self.connect + self.read + self.write + self.status + self.timeout
    }

    pub(crate) fn error_note(&self) -> String {
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
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) creds: Option<(PathBuf, &'static str)>,
}

pub(crate) fn run_wrk(
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
pub(crate) struct Probes<'a> {
    pub(crate) redis: Option<&'a redis::Client>,
    pub(crate) redis_pid: u32,
    pub(crate) mongo_pid: Option<u32>,
    pub(crate) ticks_per_s: f64,
    pub(crate) ncpu: usize,
}

pub(crate) struct Snapshot {
    pub(crate) at: Instant,
    pub(crate) redis_cmds: Option<u64>,
    pub(crate) gw: Option<u64>,
    pub(crate) redis: Option<u64>,
    pub(crate) mongo: Option<u64>,
    pub(crate) machine: Option<(u64, u64)>,
}

pub(crate) async fn redis_commands(client: Option<&redis::Client>) -> Option<u64> {
    let mut con = client?.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut con).await.ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Probes<'_> {
    pub(crate) async fn snapshot(&self, gw_pid: u32) -> Snapshot {
        Snapshot {
            redis_cmds: redis_commands(self.redis).await,
            at: Instant::now(),
            gw: process_ticks(gw_pid),
            redis: process_ticks(self.redis_pid),
            mongo: self.mongo_pid.and_then(process_ticks),
            machine: machine_ticks(),
        }
    }

    pub(crate) fn cpu(&self, a: &Snapshot, b: &Snapshot, wrk: Option<f64>) -> CpuShare {
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
pub(crate) async fn wrk_scenario(
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
