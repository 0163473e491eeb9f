//! Write limits of the notice routes: per-user posts and edits, failed
//! admin attempts per client address, and the photo hosts a notice may
//! link to.
//!
//! The per-minute counters and the daily edit quota live in this instance's
//! memory (bounded to [`MAX_KEYS`] keys each; with several instances each
//! allows its own share). The daily post quota is counted from the notice
//! store itself, so it holds across instances and restarts.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::{Config, ConfigError};

/// Most keys (users or addresses) one limiter tracks; past it the least
/// recently used are forgotten.
pub const MAX_KEYS: u64 = 100_000;

/// How a limiter's counting period is measured.
#[derive(Clone, Copy, Debug)]
pub enum Period {
    /// A window of this length from the key's first counted hit.
    Rolling(Duration),
    /// The calendar day in this timezone.
    Day(Tz),
}

/// The start and end (exclusive) of the day holding `now` in `tz`.
pub fn day_bounds(tz: Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = now.with_timezone(&tz).date_naive();
    let start_of = |d: chrono::NaiveDate| {
        // A zone may skip midnight on a DST change: take the first hour that exists.
        (0..4)
            .find_map(|h| {
                let t = NaiveTime::from_hms_opt(h, 0, 0)?;
                tz.from_local_datetime(&d.and_time(t)).earliest()
            })
            .map(|t| t.with_timezone(&Utc))
    };
    let start = start_of(local).unwrap_or(now);
    let end = local.succ_opt().and_then(start_of).unwrap_or(now + chrono::Duration::days(1));
    (start, end)
}

#[derive(Debug)]
struct Window {
    end: DateTime<Utc>,
    count: u32,
}

/// At most `limit` counted hits per key and [`Period`]; bounded in keys.
#[derive(Clone)]
pub struct Limiter<K: Hash + Eq + Send + Sync + 'static> {
    limit: u32,
    period: Period,
    windows: moka::sync::Cache<K, Arc<Mutex<Window>>>,
}

impl<K: Hash + Eq + Send + Sync + Clone + 'static> Limiter<K> {
    /// `limit` hits per `period`.
    pub fn new(limit: u32, period: Period) -> Self {
        let idle = match period {
            Period::Rolling(d) => d,
            Period::Day(_) => Duration::from_secs(25 * 3600),
        };
        Self {
            limit,
            period,
            windows: moka::sync::Cache::builder().max_capacity(MAX_KEYS).time_to_idle(idle).build(),
        }
    }

    fn end_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.period {
            Period::Rolling(d) => {
                now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
            }
            Period::Day(tz) => day_bounds(tz, now).1,
        }
    }

    fn window(&self, key: &K, now: DateTime<Utc>) -> Arc<Mutex<Window>> {
        self.windows.get_with(key.clone(), || {
            Arc::new(Mutex::new(Window { end: self.end_after(now), count: 0 }))
        })
    }

    /// Count one hit for `key`, or — when the key already used its limit —
    /// count nothing and answer how long until it may try again.
    pub fn hit(&self, key: &K, now: DateTime<Utc>) -> Result<(), Duration> {
        let window = self.window(key, now);
        let mut w = window.lock().unwrap_or_else(PoisonError::into_inner);
        if now >= w.end {
            *w = Window { end: self.end_after(now), count: 0 };
        }
        if w.count >= self.limit {
            return Err(retry_after(w.end, now));
        }
        w.count += 1;
        Ok(())
    }

    /// Give back one hit of `key` (the counted request failed for the
    /// gateway's reasons, e.g. the store was down).
    pub fn refund(&self, key: &K) {
        if let Some(window) = self.windows.get(key) {
            let mut w = window.lock().unwrap_or_else(PoisonError::into_inner);
            w.count = w.count.saturating_sub(1);
        }
    }

    /// How long `key` must wait when it has used its limit; counts nothing.
    pub fn blocked(&self, key: &K, now: DateTime<Utc>) -> Option<Duration> {
        let window = self.windows.get(key)?;
        let w = window.lock().unwrap_or_else(PoisonError::into_inner);
        (now < w.end && w.count >= self.limit).then(|| retry_after(w.end, now))
    }
}

/// Whole seconds from `now` to `end`, at least one.
pub fn retry_after(end: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let millis = (end - now).num_milliseconds().max(0);
    let secs = u64::try_from(millis).unwrap_or(0).div_ceil(1000).max(1);
    Duration::from_secs(secs)
}

/// The address key of failed admin attempts: IPv6 per /64 (one host holds a
/// whole /64), IPv4 per address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// The notice routes' limits and request rules, built from the config.
pub struct Limits {
    /// Notice posts per user per minute.
    pub posts: Limiter<String>,
    /// Notice posts per user per day (counted from the store).
    pub posts_per_day: u32,
    /// Notice posts per user per day on this instance, deleted ones
    /// included (the store's count forgets a deleted notice, so a
    /// post-then-delete loop would never reach `posts_per_day` there).
    pub posts_daily: Limiter<String>,
    /// Notice edits per user per minute.
    pub edits: Limiter<String>,
    /// Notice edits per user per day (this instance).
    pub edits_daily: Limiter<String>,
    /// Failed admin attempts per client address per minute.
    pub admin_failures: Limiter<IpAddr>,
    /// Allowed photo hosts (empty: any DNS host).
    pub photo_hosts: Vec<String>,
    /// The PK timezone (the days of the daily quotas).
    pub tz: Tz,
}

impl Limits {
    /// The limits `config` asks for.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let tz = config.pk.tz()?;
        let n = &config.notices;
        let minute = Period::Rolling(Duration::from_secs(60));
        Ok(Self {
            posts: Limiter::new(n.posts_per_minute, minute),
            posts_per_day: n.posts_per_day,
            posts_daily: Limiter::new(n.posts_per_day, Period::Day(tz)),
            edits: Limiter::new(n.edits_per_minute, minute),
            edits_daily: Limiter::new(n.edits_per_day, Period::Day(tz)),
            admin_failures: Limiter::new(n.admin_failures_per_minute, minute),
            photo_hosts: n.photo_hosts.clone(),
            tz,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolling_window_refuses_past_its_limit_then_cools_down() {
        let l = Limiter::new(2, Period::Rolling(Duration::from_secs(60)));
        let t0 = Utc::now();
        let k = "u".to_owned();
        assert!(l.hit(&k, t0).is_ok());
        assert!(l.blocked(&k, t0).is_none());
        assert!(l.hit(&k, t0).is_ok());
        assert_eq!(l.hit(&k, t0 + chrono::Duration::seconds(10)), Err(Duration::from_secs(50)));
        assert_eq!(l.blocked(&k, t0), Some(Duration::from_secs(60)));
        assert!(l.hit(&"other".to_owned(), t0).is_ok());
        l.refund(&k);
        assert!(l.hit(&k, t0 + chrono::Duration::seconds(10)).is_ok());
        assert!(l.hit(&k, t0 + chrono::Duration::seconds(10)).is_err());
        assert!(l.hit(&k, t0 + chrono::Duration::seconds(60)).is_ok());
    }

    #[test]
    fn a_day_ends_at_midnight_in_the_timezone() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 15, 59, 0).unwrap();
        let (start, end) = day_bounds(tz, now);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 11, 20, 16, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 11, 21, 16, 0, 0).unwrap());
        let l = Limiter::new(1, Period::Day(tz));
        let k = "u".to_owned();
        assert!(l.hit(&k, now).is_ok());
        assert_eq!(l.hit(&k, now), Err(Duration::from_secs(60)));
        assert!(l.hit(&k, end).is_ok());
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let v4: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(v4), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
