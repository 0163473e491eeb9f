//! The scenarios wrk does not drive: concurrent first requests sharing one
//! code, and login throughput.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};

use crate::common::*;
use crate::report::Row;
use crate::seeding::{bounded_all, jscode2session_calls, percentile};
use crate::{CLIENT_CONCURRENCY, PHASE_DEADLINE};

/// How many concurrent first requests share one code.
const BURST: usize = 100;

/// 100 concurrent compat first requests sharing one fresh code, on warm
/// connections; per round: jscode2session calls (must be 1) and the time
/// until all 100 have answered.
pub(crate) async fn first_burst(http: &reqwest::Client, gw: &Gateway, rounds: usize) -> Row {
    let scenario = "compat: 100 concurrent first requests, one code (Redis store)";
    match first_burst_inner(http, gw, rounds).await {
        Ok(row) => row,
        Err(e) => Row::failed("first-burst", scenario, BURST as u32, e),
    }
}

pub(crate) async fn first_burst_inner(
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
pub(crate) async fn login_throughput(http: &reqwest::Client, gw: &Gateway, n: usize) -> Row {
    let scenario = "token login, distinct codes (Redis store, fake WeChat)";
    match login_inner(http, gw, n).await {
        Ok(row) => row,
        Err(e) => Row::failed("login", scenario, CLIENT_CONCURRENCY as u32, e),
    }
}

pub(crate) async fn login_inner(
    http: &reqwest::Client,
    gw: &Gateway,
    n: usize,
) -> Result<Row, String> {
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
