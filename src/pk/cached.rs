//! A read-through cache in front of any [`PkStore`]: a group's day is loaded
//! once as a whole ordered board and served from memory for a short TTL.
//!
//! A ranking read costs the store a full sort plus two counts over the
//! group's day; with a 10,000-member group on a busy day that is the
//! gateway's most expensive request, and every member asks for it. Here one
//! load per group and TTL window serves all of them (`ranking`, `rank_of` and
//! `participants` answer from the board), with the freshness rules of
//! [`crate::snapshot`]: stale-while-revalidate, a hard limit of
//! [`crate::snapshot::STALE_FACTOR`] TTLs, and an `upsert_steps` through this cache seen by
//! this instance's next read. Check-ins on other instances show up here after
//! at most the TTL plus one reload.
//!
//! Proven memberships (they are never revoked) are remembered, so the
//! membership check of a ranking read is served from memory too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Membership, PkStore, StepCheckin, StepRecord};
use crate::data::DataError;
use crate::snapshot::Snapshots;

type DayKey = (String, String);

/// Settings of [`CachedPkStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardCacheConfig {
    /// How long a board is served without reloading it.
    pub ttl: Duration,
    /// Most step records kept over all cached boards.
    pub max_records: u64,
}

/// One group's day, ordered as the ranking is.
struct Board {
    records: Vec<StepRecord>,
    position: HashMap<Arc<str>, usize>,
}

impl Board {
    fn new(records: Vec<StepRecord>) -> Self {
        let position = records.iter().enumerate().map(|(i, r)| (r.openid.clone(), i)).collect();
        Self { records, position }
    }
}

/// [`PkStore`] decorator serving ranking reads from in-memory boards.
pub struct CachedPkStore<S> {
    inner: Arc<S>,
    boards: Snapshots<DayKey, Board>,
    members: moka::sync::Cache<(String, String), ()>,
}

impl<S: PkStore> CachedPkStore<S> {
    /// Cache `inner`'s boards as `cfg` says.
    pub fn new(inner: S, cfg: BoardCacheConfig) -> Self {
        Self {
            inner: Arc::new(inner),
            boards: Snapshots::new("PK board", cfg.ttl, cfg.max_records, |b: &Board| {
                u32::try_from(b.records.len()).unwrap_or(u32::MAX)
            }),
            members: moka::sync::Cache::builder().max_capacity(cfg.max_records).build(),
        }
    }

    /// The board of a day: cached, shared with concurrent readers, or loaded.
    async fn board(
        &self,
        open_gid: &str,
        date: &str,
    ) -> Result<Arc<crate::snapshot::Snapshot<Board>>, DataError> {
        let key = (open_gid.to_owned(), date.to_owned());
        let (inner, day) = (self.inner.clone(), key.clone());
        self.boards
            .get(&key, move || {
                let (inner, day) = (inner.clone(), day.clone());
                async move {
                    let records = inner.standings(&day.0, &day.1).await?;
                    if records.len() < super::OFF_WORKER_BATCH {
                        return Ok(Board::new(records));
                    }
                    // Indexing thousands of records: off the async workers.
                    tokio::task::spawn_blocking(move || Board::new(records))
                        .await
                        .map_err(|e| DataError::Unavailable(format!("PK board: {e}")))
                }
            })
            .await
    }
}

#[async_trait]
impl<S: PkStore> PkStore for CachedPkStore<S> {
    async fn add_membership(&self, open_gid: &str, openid: &str) -> Result<(), DataError> {
        self.inner.add_membership(open_gid, openid).await?;
        self.members.insert((open_gid.to_owned(), openid.to_owned()), ());
        Ok(())
    }

    async fn is_member(&self, open_gid: &str, openid: &str) -> Result<bool, DataError> {
        let key = (open_gid.to_owned(), openid.to_owned());
        if self.members.contains_key(&key) {
            return Ok(true);
        }
        let member = self.inner.is_member(open_gid, openid).await?;
        if member {
            self.members.insert(key, ());
        }
        Ok(member)
    }

    async fn memberships(&self, openid: &str, limit: u32) -> Result<Vec<Membership>, DataError> {
        self.inner.memberships(openid, limit).await
    }

    async fn upsert_steps(&self, checkin: &StepCheckin) -> Result<StepRecord, DataError> {
        let key = (checkin.open_gid.clone(), checkin.date.clone());
        self.boards.write(&key, self.inner.upsert_steps(checkin)).await
    }

    async fn ranking(
        &self,
        open_gid: &str,
        date: &str,
        limit: u32,
    ) -> Result<Vec<StepRecord>, DataError> {
        let board = self.board(open_gid, date).await?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(board.records.iter().take(limit).cloned().collect())
    }

    async fn rank_of(
        &self,
        open_gid: &str,
        date: &str,
        openid: &str,
    ) -> Result<Option<(u64, StepRecord)>, DataError> {
        let board = self.board(open_gid, date).await?;
        Ok(board
            .position
            .get(openid)
            .and_then(|&i| board.records.get(i).map(|r| (i as u64 + 1, r.clone()))))
    }

    async fn participants(&self, open_gid: &str, date: &str) -> Result<u64, DataError> {
        Ok(self.board(open_gid, date).await?.records.len() as u64)
    }

    async fn standings(&self, open_gid: &str, date: &str) -> Result<Vec<StepRecord>, DataError> {
        Ok(self.board(open_gid, date).await?.records.clone())
    }

    async fn ping(&self) -> Result<(), DataError> {
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::pk::MemoryPkStore;
    use crate::snapshot::STALE_FACTOR;

    const DAY: &str = "2026-03-01";

    /// A shared memory store that counts whole-day loads.
    #[derive(Clone, Default)]
    struct Counting {
        store: Arc<MemoryPkStore>,
        loads: Arc<AtomicU64>,
        delay: Duration,
    }

    #[async_trait]
    impl PkStore for Counting {
        async fn add_membership(&self, g: &str, o: &str) -> Result<(), DataError> {
            self.store.add_membership(g, o).await
        }
        async fn is_member(&self, g: &str, o: &str) -> Result<bool, DataError> {
            self.loads.fetch_add(1_000, Ordering::SeqCst);
            self.store.is_member(g, o).await
        }
        async fn memberships(&self, o: &str, l: u32) -> Result<Vec<Membership>, DataError> {
            self.store.memberships(o, l).await
        }
        async fn upsert_steps(&self, c: &StepCheckin) -> Result<StepRecord, DataError> {
            self.store.upsert_steps(c).await
        }
        async fn ranking(&self, g: &str, d: &str, l: u32) -> Result<Vec<StepRecord>, DataError> {
            self.store.ranking(g, d, l).await
        }
        async fn rank_of(
            &self,
            g: &str,
            d: &str,
            o: &str,
        ) -> Result<Option<(u64, StepRecord)>, DataError> {
            self.store.rank_of(g, d, o).await
        }
        async fn participants(&self, g: &str, d: &str) -> Result<u64, DataError> {
            self.store.participants(g, d).await
        }
        async fn standings(&self, g: &str, d: &str) -> Result<Vec<StepRecord>, DataError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            // Read, then take long to answer: the answer can be outdated.
            let records = self.store.standings(g, d).await;
            tokio::time::sleep(self.delay).await;
            records
        }
        async fn ping(&self) -> Result<(), DataError> {
            Ok(())
        }
    }

    fn checkin(openid: &str, steps: u64) -> StepCheckin {
        StepCheckin {
            open_gid: "g".into(),
            date: DAY.into(),
            openid: openid.into(),
            steps,
            nick_name: openid.into(),
            avatar_url: String::new(),
            at: Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap(),
        }
    }

    fn cache(inner: Counting, ttl_ms: u64) -> CachedPkStore<Counting> {
        CachedPkStore::new(
            inner,
            BoardCacheConfig { ttl: Duration::from_millis(ttl_ms), max_records: 10_000 },
        )
    }

    async fn top(store: &CachedPkStore<Counting>) -> Vec<(String, u64)> {
        let r = store.ranking("g", DAY, 10).await.unwrap();
        r.into_iter().map(|r| (r.openid.to_string(), r.steps)).collect()
    }

    fn loads(c: &Counting) -> u64 {
        c.loads.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn reads_within_the_ttl_share_one_load() {
        let inner = Counting::default();
        inner.store.upsert_steps(&checkin("a", 10)).await.unwrap();
        let c = cache(inner.clone(), 60_000);
        for _ in 0..20 {
            assert_eq!(top(&c).await, [("a".to_owned(), 10)]);
            assert_eq!(c.participants("g", DAY).await.unwrap(), 1);
            assert_eq!(c.rank_of("g", DAY, "a").await.unwrap().map(|r| r.0), Some(1));
        }
        assert_eq!(loads(&inner), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_misses_share_one_load() {
        let inner = Counting { delay: Duration::from_millis(100), ..Counting::default() };
        inner.store.upsert_steps(&checkin("a", 10)).await.unwrap();
        let c = Arc::new(cache(inner.clone(), 60_000));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.participants("g", DAY).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 1);
        }
        assert_eq!(loads(&inner), 1);
    }

    #[tokio::test]
    async fn a_local_write_is_seen_by_the_next_read() {
        let inner = Counting::default();
        let c = cache(inner.clone(), 60_000);
        c.upsert_steps(&checkin("a", 10)).await.unwrap();
        assert_eq!(top(&c).await, [("a".to_owned(), 10)]);
        c.upsert_steps(&checkin("b", 20)).await.unwrap();
        assert_eq!(top(&c).await, [("b".to_owned(), 20), ("a".to_owned(), 10)]);
        assert_eq!(loads(&inner), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_write_during_a_slow_load_is_not_lost() {
        let inner = Counting { delay: Duration::from_millis(200), ..Counting::default() };
        let c = Arc::new(cache(inner.clone(), 60_000));
        // A reader starts loading the empty day...
        let reader = {
            let c = c.clone();
            tokio::spawn(async move { c.participants("g", DAY).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...a check-in lands while it runs, and the writer reads at once.
        c.upsert_steps(&checkin("a", 10)).await.unwrap();
        assert_eq!(top(&c).await, [("a".to_owned(), 10)], "the writer sees its own write");
        reader.await.unwrap().unwrap();
        assert_eq!(top(&c).await, [("a".to_owned(), 10)], "the old load was not cached");
    }

    #[tokio::test]
    async fn another_instance_s_write_shows_after_the_ttl() {
        let inner = Counting::default();
        let (here, there) = (cache(inner.clone(), 200), cache(inner.clone(), 200));
        here.upsert_steps(&checkin("a", 10)).await.unwrap();
        assert_eq!(top(&here).await.len(), 1);
        there.upsert_steps(&checkin("b", 20)).await.unwrap();
        assert_eq!(top(&here).await.len(), 1, "within the TTL the board is kept");
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Past the TTL: the stale board is served once while it reloads.
        let _ = top(&here).await;
        let deadline = Instant::now() + Duration::from_secs(2);
        while top(&here).await.len() != 2 {
            assert!(Instant::now() < deadline, "the reload never landed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_board_past_the_hard_limit_is_not_served() {
        let inner = Counting::default();
        let (here, there) = (cache(inner.clone(), 50), cache(inner.clone(), 50));
        here.upsert_steps(&checkin("a", 10)).await.unwrap();
        assert_eq!(top(&here).await.len(), 1);
        there.upsert_steps(&checkin("b", 20)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50 * u64::from(STALE_FACTOR) + 100)).await;
        assert_eq!(top(&here).await.len(), 2, "no stale read past {STALE_FACTOR} TTLs");
    }

    #[tokio::test]
    async fn proven_memberships_are_remembered_and_refusals_are_not() {
        let inner = Counting::default();
        let c = cache(inner.clone(), 60_000);
        assert!(!c.is_member("g", "a").await.unwrap());
        assert!(!c.is_member("g", "a").await.unwrap());
        assert_eq!(loads(&inner), 2_000, "a refusal asks the store every time");
        inner.store.add_membership("g", "a").await.unwrap();
        assert!(c.is_member("g", "a").await.unwrap());
        assert!(c.is_member("g", "a").await.unwrap());
        assert_eq!(loads(&inner), 3_000, "a proven membership is asked once");
        c.add_membership("g", "b").await.unwrap();
        assert!(c.is_member("g", "b").await.unwrap());
        assert_eq!(loads(&inner), 3_000);
    }
}
