//! The results: one row per scenario and connection count, the machine
//! it ran on, and the Markdown report.

use std::fmt::Write as _;

use serde::Serialize;

use crate::common::*;
use crate::settings::Settings;

/// CPU used during a measured run, in percent of one core.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct CpuShare {
    pub(crate) gateway: Option<f64>,
    pub(crate) redis: Option<f64>,
    pub(crate) mongo: Option<f64>,
    pub(crate) wrk: Option<f64>,
    /// The whole machine, in percent of all cores.
    pub(crate) machine: Option<f64>,
    /// Everything else on the machine (other users' processes, the bench
    /// process itself), in percent of one core.
    pub(crate) other: Option<f64>,
}

/// One line of the result table.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) key: String,
    pub(crate) connections: u32,
    pub(crate) rps: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) p999_ms: Option<f64>,
    pub(crate) errors: Option<u64>,
    pub(crate) ratio_to_baseline: Option<f64>,
    pub(crate) redis_cmds_per_request: Option<f64>,
    pub(crate) cpu_percent: Option<CpuShare>,
    /// `ok`, `failed` (did not run to the end) or `check-failed` (ran, but a
    /// correctness expectation was not met).
    pub(crate) status: &'static str,
    pub(crate) notes: String,
}

impl Row {
    pub(crate) fn failed(key: &str, scenario: &str, connections: u32, why: String) -> Self {
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

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) date_utc: String,
    pub(crate) nproc: usize,
    pub(crate) cpu_model: String,
    pub(crate) kernel: String,
    pub(crate) cpu_busy_before_start_percent: Option<f64>,
    pub(crate) loadavg_at_start: String,
    pub(crate) wrk: String,
    pub(crate) redis: String,
    pub(crate) mongo_server: String,
}

/// (busy, total) jiffies of the whole machine from `/proc/stat`.
pub(crate) fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

pub(crate) fn machine_busy_percent(
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (before?, after?);
    let dt = t1.checked_sub(t0)?;
    (dt > 0).then(|| (b1.saturating_sub(b0)) as f64 * 100.0 / dt as f64)
}

/// utime + stime of a process, in clock ticks (also readable for a zombie).
pub(crate) fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    command_line("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0)
}

pub(crate) fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}")).unwrap_or_else(|| "–".into())
}

pub(crate) fn fmt_rps(v: Option<f64>) -> String {
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

pub(crate) fn fmt_cpu(c: &Option<CpuShare>) -> String {
    let Some(c) = c else { return "–".into() };
    let p = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "–".into());
    let mut s = format!("{} · {} · {} · {}", p(c.gateway), p(c.redis), p(c.wrk), p(c.other));
    if let Some(m) = c.mongo.filter(|m| *m >= 2.0) {
        let _ = write!(s, " (mongo {m:.0})");
    }
    s
}

pub(crate) fn markdown_table(rows: &[Row]) -> String {
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

pub(crate) fn machine_markdown(m: &Machine, s: &Settings, mongo: &str) -> String {
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

pub(crate) fn legend() -> &'static str {
    "Columns: req/s, p50/p99/p99.9 are wrk's (latency per request, client side); errors = \
     socket errors + timeouts + responses with status >= 400; × baseline = req/s divided by the \
     first `baseline` row at the same connection count in this run (the repeated baseline at \
     the end shows the drift over the run); redis cmd/req = Redis `total_commands_processed` \
     growth per request during the measured run (0 means no Redis round trip); CPU % is of one \
     core (the machine has the number of cores above), sampled from /proc over the measured run; `other` is \
     everything else on the machine in that time (other users' processes: this machine is \
     shared and noisy), (mongo N) the MongoDB-wire server's share."
}
