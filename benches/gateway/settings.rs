//! What one run does, from the environment (`BENCH_*`).

use serde::Serialize;

/// What one run does, from the environment.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) duration_s: u64,
    pub(crate) warmup_s: u64,
    pub(crate) connections: Vec<u32>,
    pub(crate) wrk_threads: u32,
    pub(crate) wrk_timeout_s: u64,
    pub(crate) sessions: usize,
    pub(crate) pk_members: usize,
    pub(crate) notices: usize,
    pub(crate) logins: usize,
    pub(crate) burst_rounds: usize,
    /// Scenario keys to run (the baseline always runs); `None`: all.
    pub(crate) only: Option<Vec<String>>,
}

impl Settings {
    /// `BENCH_QUICK=1` (2 s runs, 1 s warm-up, 1,000 sessions and PK members),
    /// `BENCH_DURATION` / `BENCH_WARMUP` (seconds), `BENCH_CONNECTIONS`
    /// (`64,256`), `BENCH_WRK_THREADS` (2), `BENCH_SESSIONS`,
    /// `BENCH_PK_MEMBERS`, `BENCH_NOTICES`, `BENCH_LOGINS`,
    /// `BENCH_BURST_ROUNDS`, `BENCH_ONLY` (comma-separated scenario keys).
    pub(crate) fn from_env() -> Result<Self, String> {
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

    pub(crate) fn wants(&self, key: &str) -> bool {
        key == "baseline" || self.only.as_ref().is_none_or(|o| o.iter().any(|k| k == key))
    }

    pub(crate) fn wants_any(&self, keys: &[&str]) -> bool {
        keys.iter().any(|k| self.wants(k))
    }
}

pub(crate) fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
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
pub(crate) const SCENARIO_KEYS: &[&str] = &[
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
