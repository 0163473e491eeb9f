//! A read-through cache in front of any [`PkStore`]: a group's day is loaded
//! once as a whole ordered board and served from memory for a short TTL.
//!
//! A ranking read costs the store a full sort plus two counts over the
//! group's day; with a 10,000-member group on a busy day that is the
//! gateway's most expensive request, and every member asks for it. Here one
//! load per group and TTL window serves all of them:
//!
//! - `ranking`, `rank_of` and `participants` answer from the board;
//! - a board older than the TTL is still served while one background reload
//!   runs (stale-while-revalidate); one older than [`STALE_FACTOR`] × TTL is
//!   dropped and the next reader waits for a fresh load (concurrent readers
//!   share that load);
//! - an `upsert_steps` through this cache drops the group's board, so the
//!   instance that recorded a check-in answers with it at once. Check-ins on
//!   other instances show up here after at most the TTL plus one reload;
//! - proven memberships (they are never revoked) are remembered, so the
//!   membership check of a ranking read is served from memory too.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Membership, PkStore, StepCheckin, StepRecord};
use crate::data::DataError;

/// A board older than this many TTLs is not served at all.
pub const STALE_FACTOR: u32 = 5;

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
    position: HashMap<String, usize>,
    loaded_at: Instant,
    /// [`CachedPkStore::generation`] of the day when the load started.
    generation: u64,
    reloading: AtomicBool,
}

impl Board {
    fn new(records: Vec<StepRecord>, generation: u64, loaded_at: Instant) -> Self {
        let position = records.iter().enumerate().map(|(i, r)| (r.openid.clone(), i)).collect();
        Self { records, position, loaded_at, generation, reloading: AtomicBool::new(false) }
    }
}

/// [`PkStore`] decorator serving ranking reads from in-memory boards.
pub struct CachedPkStore<S> {
    inner: Arc<S>,
    ttl: Duration,
    boards: moka::future::Cache<DayKey, Arc<Board>>,
    /// Bumped by every local write to a day; a load that started before a
    /// bump is not cached.
    generations: moka::sync::Cache<DayKey, Arc<AtomicU64>>,
    members: moka::sync::Cache<(String, String), ()>,
}

impl<S: PkStore> CachedPkStore<S> {
    /// Cache `inner`'s boards as `cfg` says.
    pub fn new(inner: S, cfg: BoardCacheConfig) -> Self {
        let hard_ttl = cfg.ttl.saturating_mul(STALE_FACTOR);
        Self {
            inner: Arc::new(inner),
            ttl: cfg.ttl,
            boards: moka::future::Cache::builder()
                .weigher(|_, b: &Arc<Board>| {
                    u32::try_from(b.records.len()).unwrap_or(u32::MAX).saturating_add(1)
                })
                .max_capacity(cfg.max_records)
                .time_to_live(hard_ttl)
                .build(),
            // Outlives every board it guards.
            generations: moka::sync::Cache::builder()
                .max_capacity(cfg.max_records.max(1_000))
                .time_to_idle(hard_ttl.saturating_mul(4))
                .build(),
            members: moka::sync::Cache::builder().max_capacity(cfg.max_records).build(),
        }
    }

    fn generation(&self, key: &DayKey) -> Arc<AtomicU64> {
        self.generations.get_with_by_ref(key, || Arc::new(AtomicU64::new(0)))
    }

    /// Load a day from the store; cache it unless a local write raced it.
    async fn load(
        inner: &S,
        boards: &moka::future::Cache<DayKey, Arc<Board>>,
        generation: &AtomicU64,
        key: &DayKey,
    ) -> Result<Arc<Board>, DataError> {
        let started = generation.load(Ordering::Acquire);
        let records = inner.standings(&key.0, &key.1).await?;
        let board = Arc::new(Board::new(records, started, Instant::now()));
        if generation.load(Ordering::Acquire) == started {
            boards.insert(key.clone(), board.clone()).await;
        }
        Ok(board)
    }

    /// The board of a day: cached, shared with concurrent readers, or loaded.
    async fn board(&self, open_gid: &str, date: &str) -> Result<Arc<Board>, DataError> {
        let key = (open_gid.to_owned(), date.to_owned());
        let generation = self.generation(&key);
        let current = generation.load(Ordering::Acquire);
        if let Some(board) = self.boards.get(&key).await
            && board.generation == current
        {
            if board.loaded_at.elapsed() >= self.ttl
                && !board.reloading.swap(true, Ordering::AcqRel)
            {
                let (inner, boards, key) = (self.inner.clone(), self.boards.clone(), key.clone());
                tokio::spawn(async move {
                    if let Err(e) = Self::load(&inner, &boards, &generation, &key).await {
                        tracing::warn!(error = %e, "PK board reload failed; serving the old one");
                        if let Some(b) = boards.get(&key).await {
                            b.reloading.store(false, Ordering::Release);
                        }
                    }
                });
            }
            return Ok(board);
        }
        let shared = self
            .boards
            .try_get_with_by_ref(&key, async {
                let records = self.inner.standings(open_gid, date).await?;
                Ok::<_, DataError>(Arc::new(Board::new(records, current, Instant::now())))
            })
            .await
            .map_err(|e: Arc<DataError>| (*e).clone())?;
        if shared.generation == generation.load(Ordering::Acquire) {
            return Ok(shared);
        }
        // A load that started before a local write: not good enough for the
        // writer, who must see its own check-in.
        self.boards.invalidate(&key).await;
        Self::load(&self.inner, &self.boards, &generation, &key).await
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

    async fn memberships(&self, openid: &str) -> Result<Vec<Membership>, DataError> {
        self.inner.memberships(openid).await
    }

    async fn upsert_steps(&self, checkin: &StepCheckin) -> Result<StepRecord, DataError> {
        let key = (checkin.open_gid.clone(), checkin.date.clone());
        let generation = self.generation(&key);
        // Bump before and after: a load overlapping the write in any way is
        // not cached.
        generation.fetch_add(1, Ordering::AcqRel);
        let result = self.inner.upsert_steps(checkin).await;
        generation.fetch_add(1, Ordering::AcqRel);
        self.boards.invalidate(&key).await;
        result
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

    use super::*;
    use crate::pk::MemoryPkStore;

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
        async fn memberships(&self, o: &str) -> Result<Vec<Membership>, DataError> {
            self.store.memberships(o).await
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
        r.into_iter().map(|r| (r.openid, r.steps)).collect()
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
