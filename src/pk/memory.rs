//! The in-memory PK store: the dev-mode default (one instance, lost on
//! restart, never expires records).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::Utc;

use super::mongo::storable_steps;
use super::{Membership, PkStore, StepCheckin, StepRecord};
use crate::data::DataError;
use crate::mongo::millis;

/// [`PkStore`] in process memory, with the same semantics as the MongoDB
/// store (times truncated to milliseconds, steps capped at `i64::MAX`).
///
/// Bounded: step records and memberships together are at most its capacity;
/// a new one past it answers [`DataError::Full`] (the gateway's 507), while
/// updates of existing records still work.
#[derive(Debug)]
pub struct MemoryPkStore {
    inner: Mutex<Inner>,
    capacity: u64,
}

/// The capacity of [`MemoryPkStore::new`].
pub const DEFAULT_MEMORY_MAX_PK_RECORDS: u64 = 100_000;

impl Default for MemoryPkStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_MEMORY_MAX_PK_RECORDS)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// `(open_gid, openid)` → membership.
    members: BTreeMap<(String, String), Membership>,
    /// `(open_gid, date)` → openid → record.
    days: HashMap<(String, String), BTreeMap<String, StepRecord>>,
    /// Step records over all days.
    records: u64,
}

impl Inner {
    fn entries(&self) -> u64 {
        self.members.len() as u64 + self.records
    }
}

fn full(capacity: u64) -> DataError {
    DataError::Full(format!(
        "the memory PK store holds its maximum of {capacity} records and memberships \
         (data.memory_max_pk_records)"
    ))
}

impl MemoryPkStore {
    /// An empty store holding at most [`DEFAULT_MEMORY_MAX_PK_RECORDS`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding at most `capacity` records and memberships.
    pub fn with_capacity(capacity: u64) -> Self {
        Self { inner: Mutex::new(Inner::default()), capacity }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent: a panic in one
        // (there are none) would not poison the data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The ranking order: steps descending, then who reached them first, then
/// openid (bytewise, as MongoDB compares strings).
fn ranking_order(a: &StepRecord, b: &StepRecord) -> Ordering {
    b.steps
        .cmp(&a.steps)
        .then_with(|| a.reached_at.cmp(&b.reached_at))
        .then_with(|| a.openid.cmp(&b.openid))
}

#[async_trait]
impl PkStore for MemoryPkStore {
    async fn add_membership(&self, open_gid: &str, openid: &str) -> Result<(), DataError> {
        let joined_at = millis(Utc::now());
        let mut inner = self.lock();
        let key = (open_gid.to_owned(), openid.to_owned());
        if inner.members.contains_key(&key) {
            return Ok(());
        }
        if inner.entries() >= self.capacity {
            return Err(full(self.capacity));
        }
        inner.members.insert(
            key,
            Membership { open_gid: open_gid.to_owned(), openid: openid.to_owned(), joined_at },
        );
        Ok(())
    }

    async fn is_member(&self, open_gid: &str, openid: &str) -> Result<bool, DataError> {
        Ok(self.lock().members.contains_key(&(open_gid.to_owned(), openid.to_owned())))
    }

    async fn memberships(&self, openid: &str, limit: u32) -> Result<Vec<Membership>, DataError> {
        let mut out: Vec<Membership> =
            self.lock().members.values().filter(|m| m.openid == openid).cloned().collect();
        out.sort_by(|a, b| b.joined_at.cmp(&a.joined_at).then_with(|| a.open_gid.cmp(&b.open_gid)));
        out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(out)
    }

    async fn upsert_steps(&self, checkin: &StepCheckin) -> Result<StepRecord, DataError> {
        let at = millis(checkin.at);
        let steps = storable_steps(checkin.steps);
        let mut inner = self.lock();
        let key = (checkin.open_gid.clone(), checkin.date.clone());
        let known = inner.days.get(&key).is_some_and(|day| day.contains_key(&checkin.openid));
        if !known {
            if inner.entries() >= self.capacity {
                return Err(full(self.capacity));
            }
            inner.records += 1;
        }
        let day = inner.days.entry(key).or_default();
        let record = day
            .entry(checkin.openid.clone())
            .and_modify(|r| {
                if steps > r.steps {
                    r.steps = steps;
                    r.reached_at = at;
                }
                r.nick_name = checkin.nick_name.as_str().into();
                r.avatar_url = checkin.avatar_url.as_str().into();
                r.updated_at = r.updated_at.max(at);
            })
            .or_insert_with(|| StepRecord {
                open_gid: checkin.open_gid.as_str().into(),
                date: checkin.date.as_str().into(),
                openid: checkin.openid.as_str().into(),
                steps,
                nick_name: checkin.nick_name.as_str().into(),
                avatar_url: checkin.avatar_url.as_str().into(),
                reached_at: at,
                updated_at: at,
            });
        Ok(record.clone())
    }

    async fn ranking(
        &self,
        open_gid: &str,
        date: &str,
        limit: u32,
    ) -> Result<Vec<StepRecord>, DataError> {
        let inner = self.lock();
        let Some(day) = inner.days.get(&(open_gid.to_owned(), date.to_owned())) else {
            return Ok(Vec::new());
        };
        let mut records: Vec<&StepRecord> = day.values().collect();
        records.sort_by(|a, b| ranking_order(a, b));
        Ok(records
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn rank_of(
        &self,
        open_gid: &str,
        date: &str,
        openid: &str,
    ) -> Result<Option<(u64, StepRecord)>, DataError> {
        let inner = self.lock();
        let Some(day) = inner.days.get(&(open_gid.to_owned(), date.to_owned())) else {
            return Ok(None);
        };
        let Some(mine) = day.get(openid) else {
            return Ok(None);
        };
        let ahead = day.values().filter(|r| ranking_order(r, mine) == Ordering::Less).count();
        Ok(Some((ahead as u64 + 1, mine.clone())))
    }

    async fn participants(&self, open_gid: &str, date: &str) -> Result<u64, DataError> {
        Ok(self
            .lock()
            .days
            .get(&(open_gid.to_owned(), date.to_owned()))
            .map_or(0, |day| day.len() as u64))
    }

    async fn ping(&self) -> Result<(), DataError> {
        Ok(())
    }
}
