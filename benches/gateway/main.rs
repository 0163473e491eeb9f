//! The gateway benchmark: `cargo bench --bench gateway` (release profile).
//!
//! Starts on loopback, on free ports, everything it measures: a
//! `redis-server`, the gateway binary in several configurations (Redis store
//! with and without the L1 cache; MongoDB data store) with its embedded fake
//! WeChat, and a MongoDB-wire server (SecantusDB: the Rust `secantusd-rs`
//! where installed, else the Python one, and it says so). Every process runs
//! under a supervisor shell (`crates/test-support/src/process.rs`) so none
//! outlives the bench, even when it is killed.
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

#[path = "../common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use serde_json::json;

use common::*;

mod chart;
mod report;
mod scenarios;
mod seeding;
mod servers;
mod settings;
mod wrk;

use chart::draw_chart;
use report::{
    Machine, Row, clock_ticks_per_second, legend, machine_busy_percent, machine_markdown,
    machine_ticks, markdown_table,
};
use scenarios::{first_burst, login_throughput};
use seeding::{seed_compat, seed_mongo, seed_tokens};
use servers::{MongoKind, find_mongo, start_mongo};
use settings::Settings;
use wrk::{Probes, Target, wrk_scenario};

/// The PK group everyone in the ranking scenario belongs to.
pub(crate) const PK_GROUP: &str = "bench-group-10k";
/// MongoDB database of the data scenarios (the server is fresh per run).
pub(crate) const MONGO_DB: &str = "weapp_bench";
/// Concurrency of the seeding and login clients.
pub(crate) const CLIENT_CONCURRENCY: usize = 64;
/// Upper bound on any one seeding or client phase.
pub(crate) const PHASE_DEADLINE: Duration = Duration::from_secs(600);

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
