//! Notices: users' posts with up to four photos; a public feed, the author's
//! own list, private and banned states.

mod cached;
mod memory;
mod model;
mod mongo;
pub mod routes;

pub use cached::CachedNoticeStore;
pub use memory::{DEFAULT_MEMORY_MAX_NOTICES, MemoryNoticeStore};
pub use model::{NewNotice, Notice, NoticePatch, NoticeState, Visibility};
pub use mongo::MongoNoticeStore;
pub use routes::{Notices, NoticesState};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::data::DataError;

/// Result of an author-only change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorChange<T> {
    /// Done.
    Done(T),
    /// No notice with that id.
    NotFound,
    /// The notice belongs to someone else.
    NotAuthor,
}

/// Storage of notices. Object safe. Ids are 24-hex-char ObjectIds; ordering
/// "newest first" is `_id` descending, and a page continues strictly below
/// the last id of the previous page (keyset), so inserts never shift pages.
#[async_trait]
pub trait NoticeStore: Send + Sync + 'static {
    /// Store a new notice (assigns id, timestamps, state).
    async fn insert(&self, notice: NewNotice) -> Result<Notice, DataError>;

    /// How many notices `openid` posted at or after `since` (still stored,
    /// in any state): the daily post quota counts with it.
    async fn count_by_author_since(
        &self,
        openid: &str,
        since: DateTime<Utc>,
    ) -> Result<u64, DataError>;

    /// One notice by id (any state).
    async fn get(&self, id: &str) -> Result<Option<Notice>, DataError>;

    /// The public feed (state `public`), newest first, strictly older than
    /// `before` (an id) when given.
    async fn feed(&self, before: Option<&str>, limit: u32) -> Result<Vec<Notice>, DataError>;

    /// The public feed by offset (the original's `pageno`/`pagesize`).
    async fn feed_offset(&self, skip: u64, limit: u32) -> Result<Vec<Notice>, DataError>;

    /// An author's notices in every state, newest first, keyset like `feed`.
    async fn by_author(
        &self,
        openid: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Notice>, DataError>;

    /// Change content and/or visibility, only if `openid` is the author.
    async fn update(
        &self,
        id: &str,
        openid: &str,
        patch: &NoticePatch,
    ) -> Result<AuthorChange<Notice>, DataError>;

    /// Delete, only if `openid` is the author.
    async fn delete(&self, id: &str, openid: &str) -> Result<AuthorChange<()>, DataError>;

    /// Ban or unban (moderation). `None` when there is no such notice.
    async fn set_banned(&self, id: &str, banned: bool) -> Result<Option<Notice>, DataError>;

    /// Liveness of the backend.
    async fn ping(&self) -> Result<(), DataError>;
}
