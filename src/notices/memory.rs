//! The in-memory notice store: the dev-mode default (one instance, lost on
//! restart).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::oid::ObjectId;

use super::{AuthorChange, NewNotice, Notice, NoticePatch, NoticeState, NoticeStore};
use crate::data::DataError;
use crate::mongo::millis;

/// [`NoticeStore`] in process memory, with the same semantics as the MongoDB
/// store: ObjectId ids, `_id`-descending order, millisecond times; author
/// changes bump `updated_at`, moderation (`set_banned`) does not.
///
/// Bounded: past its capacity an insert answers [`DataError::Full`] (the
/// gateway's 507) instead of growing; deleting notices makes room again.
#[derive(Debug)]
pub struct MemoryNoticeStore {
    notices: Mutex<BTreeMap<ObjectId, Notice>>,
    capacity: u64,
}

/// The capacity of [`MemoryNoticeStore::new`].
pub const DEFAULT_MEMORY_MAX_NOTICES: u64 = 10_000;

impl Default for MemoryNoticeStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_MEMORY_MAX_NOTICES)
    }
}

/// Parse an id; anything that is not an ObjectId matches no notice.
pub(crate) fn parse_id(id: &str) -> Option<ObjectId> {
    ObjectId::parse_str(id).ok()
}

/// What a keyset page starting below `before` looks like: `None` when
/// `before` is not an id (the page is then empty), else the upper bound.
pub(crate) fn parse_before(before: Option<&str>) -> Option<Option<ObjectId>> {
    match before {
        None => Some(None),
        Some(id) => parse_id(id).map(Some),
    }
}

impl MemoryNoticeStore {
    /// An empty store holding at most [`DEFAULT_MEMORY_MAX_NOTICES`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding at most `capacity` notices.
    pub fn with_capacity(capacity: u64) -> Self {
        Self { notices: Mutex::new(BTreeMap::new()), capacity }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ObjectId, Notice>> {
        // Every critical section leaves the map consistent.
        self.notices.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Newest first, strictly below `before`, matching `keep`.
    fn page(
        &self,
        before: Option<&str>,
        limit: u32,
        keep: impl Fn(&Notice) -> bool,
    ) -> Vec<Notice> {
        let Some(before) = parse_before(before) else {
            return Vec::new();
        };
        let notices = self.lock();
        let range = match before {
            Some(before) => notices.range(..before),
            None => notices.range(..),
        };
        range
            .rev()
            .map(|(_, n)| n)
            .filter(|n| keep(n))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl NoticeStore for MemoryNoticeStore {
    async fn insert(&self, notice: NewNotice) -> Result<Notice, DataError> {
        let id = ObjectId::new();
        let created_at = millis(notice.created_at);
        let stored = notice.stored(id.to_hex(), created_at);
        let mut notices = self.lock();
        if notices.len() as u64 >= self.capacity {
            return Err(DataError::Full(format!(
                "the memory notice store holds its maximum of {} notices (data.memory_max_notices)",
                self.capacity
            )));
        }
        notices.insert(id, stored.clone());
        Ok(stored)
    }

    async fn count_by_author_since(
        &self,
        openid: &str,
        since: DateTime<Utc>,
    ) -> Result<u64, DataError> {
        let since = millis(since);
        Ok(self
            .lock()
            .values()
            .filter(|n| n.author_openid == openid && n.created_at >= since)
            .count() as u64)
    }

    async fn get(&self, id: &str) -> Result<Option<Notice>, DataError> {
        let Some(id) = parse_id(id) else {
            return Ok(None);
        };
        Ok(self.lock().get(&id).cloned())
    }

    async fn feed(&self, before: Option<&str>, limit: u32) -> Result<Vec<Notice>, DataError> {
        Ok(self.page(before, limit, |n| n.state == NoticeState::Public))
    }

    async fn feed_offset(&self, skip: u64, limit: u32) -> Result<Vec<Notice>, DataError> {
        Ok(self
            .lock()
            .values()
            .rev()
            .filter(|n| n.state == NoticeState::Public)
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn by_author(
        &self,
        openid: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Notice>, DataError> {
        Ok(self.page(before, limit, |n| n.author_openid == openid))
    }

    async fn update(
        &self,
        id: &str,
        openid: &str,
        patch: &NoticePatch,
    ) -> Result<AuthorChange<Notice>, DataError> {
        let Some(id) = parse_id(id) else {
            return Ok(AuthorChange::NotFound);
        };
        let now = millis(Utc::now());
        let mut notices = self.lock();
        let Some(notice) = notices.get_mut(&id) else {
            return Ok(AuthorChange::NotFound);
        };
        if notice.author_openid != openid {
            return Ok(AuthorChange::NotAuthor);
        }
        if let Some(content) = &patch.content {
            notice.content.clone_from(content);
        }
        if let Some(visibility) = patch.visibility {
            notice.visibility = visibility;
            notice.state = NoticeState::of(visibility, notice.banned);
        }
        notice.updated_at = notice.updated_at.max(now);
        Ok(AuthorChange::Done(notice.clone()))
    }

    async fn delete(&self, id: &str, openid: &str) -> Result<AuthorChange<()>, DataError> {
        let Some(id) = parse_id(id) else {
            return Ok(AuthorChange::NotFound);
        };
        let mut notices = self.lock();
        match notices.get(&id) {
            None => Ok(AuthorChange::NotFound),
            Some(n) if n.author_openid != openid => Ok(AuthorChange::NotAuthor),
            Some(_) => {
                notices.remove(&id);
                Ok(AuthorChange::Done(()))
            }
        }
    }

    async fn set_banned(&self, id: &str, banned: bool) -> Result<Option<Notice>, DataError> {
        let Some(id) = parse_id(id) else {
            return Ok(None);
        };
        let mut notices = self.lock();
        Ok(notices.get_mut(&id).map(|notice| {
            notice.banned = banned;
            notice.state = NoticeState::of(notice.visibility, banned);
            notice.clone()
        }))
    }

    async fn ping(&self) -> Result<(), DataError> {
        Ok(())
    }
}
