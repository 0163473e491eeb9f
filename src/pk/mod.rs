//! Group step-count PK: a daily leaderboard per WeChat group.

mod cached;
mod memory;
mod model;
mod mongo;
pub mod routes;

/// From this many records on, CPU work on them (decoding a day's board,
/// indexing it) runs on the blocking pool instead of an async worker.
const OFF_WORKER_BATCH: usize = 512;

pub use cached::{BoardCacheConfig, CachedPkStore};
pub use memory::{DEFAULT_MEMORY_MAX_PK_RECORDS, MemoryPkStore};
pub use model::{GroupRank, Membership, RankedEntry, StepCheckin, StepRecord};
pub use mongo::MongoPkStore;
pub use routes::{Pk, PkState};

use async_trait::async_trait;

use crate::data::DataError;

/// Storage of step records and group memberships. Object safe.
///
/// Dates are `YYYY-MM-DD` strings in the configured timezone; the store does
/// not compute "today" itself.
#[async_trait]
pub trait PkStore: Send + Sync + 'static {
    /// Record `openid` as a member of `open_gid` (idempotent).
    async fn add_membership(&self, open_gid: &str, openid: &str) -> Result<(), DataError>;

    /// Whether `openid` has proven membership of `open_gid`.
    async fn is_member(&self, open_gid: &str, openid: &str) -> Result<bool, DataError>;

    /// The `limit` groups `openid` joined most recently, newest first (ties
    /// in `joined_at` by `open_gid`).
    async fn memberships(&self, openid: &str, limit: u32) -> Result<Vec<Membership>, DataError>;

    /// Upsert the (open_gid, date, openid) record. Steps only go up within a
    /// day: a lower count than stored leaves steps and `reached_at` alone (the
    /// nickname/avatar are still refreshed). A higher count sets `reached_at`
    /// to `checkin.at`. Concurrent upserts of one key never fail.
    async fn upsert_steps(&self, checkin: &StepCheckin) -> Result<StepRecord, DataError>;

    /// The top `limit` records of a group's day: steps descending, ties broken
    /// by who reached the count first (`reached_at` ascending), then openid.
    async fn ranking(
        &self,
        open_gid: &str,
        date: &str,
        limit: u32,
    ) -> Result<Vec<StepRecord>, DataError>;

    /// One user's 1-based rank and record in a group's day, if they checked in.
    async fn rank_of(
        &self,
        open_gid: &str,
        date: &str,
        openid: &str,
    ) -> Result<Option<(u64, StepRecord)>, DataError>;

    /// How many users checked in to a group's day.
    async fn participants(&self, open_gid: &str, date: &str) -> Result<u64, DataError>;

    /// Every record of a group's day, in ranking order.
    async fn standings(&self, open_gid: &str, date: &str) -> Result<Vec<StepRecord>, DataError> {
        self.ranking(open_gid, date, u32::MAX).await
    }

    /// Liveness of the backend.
    async fn ping(&self) -> Result<(), DataError>;
}
