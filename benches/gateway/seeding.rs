//! The HTTP client side: seeding sessions through the gateway, probes, and
//! MongoDB seeding straight into the stores through the gateway's own API.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use serde_json::Value;

use crate::common::*;
use crate::{CLIENT_CONCURRENCY, MONGO_DB, PHASE_DEADLINE, PK_GROUP};

/// How long a scenario waits for its first 200 (a previous scenario may have
/// left a backlog, e.g. MongoDB operations, to drain).
const PROBE_PATIENCE: Duration = Duration::from_secs(90);

pub(crate) async fn jscode2session_calls(
    http: &reqwest::Client,
    gw: &Gateway,
) -> Result<u64, String> {
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
pub(crate) async fn bounded_all<T, F, Fut>(what: &str, n: usize, f: F) -> Result<Vec<T>, String>
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
pub(crate) async fn seed<'a, F, Fut>(
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

pub(crate) async fn seed_compat(
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

pub(crate) async fn seed_tokens(
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
pub(crate) async fn probe(
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

pub(crate) async fn probe_once(
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

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[idx].as_secs_f64() * 1000.0)
}

pub(crate) async fn seed_mongo(
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
