//! A read-through cache of the public feed's head in front of any
//! [`NoticeStore`]: every user's first look at the feed asks for the same
//! page, so it is loaded once per TTL and served from memory, with the
//! freshness rules of [`crate::snapshot`]. A write through this cache (a new
//! notice, an edit, a deletion, a ban) is seen by this instance's next read;
//! writes on other instances after at most the TTL plus one reload.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{AuthorChange, NewNotice, Notice, NoticePatch, NoticeStore};
use crate::data::DataError;
use crate::snapshot::Snapshots;

/// [`NoticeStore`] decorator serving the feed's first `head` entries from memory.
pub struct CachedNoticeStore<S> {
    inner: Arc<S>,
    head: u32,
    feed: Snapshots<(), Vec<Notice>>,
}

impl<S: NoticeStore> CachedNoticeStore<S> {
    /// Cache the newest `head` public notices of `inner` for `ttl`.
    pub fn new(inner: S, ttl: Duration, head: u32) -> Self {
        Self {
            inner: Arc::new(inner),
            head,
            feed: Snapshots::new("feed head", ttl, u64::from(head) + 1, |_| 0),
        }
    }

    /// Up to `limit` public notices from the `skip`th, if the head holds them.
    async fn head_page(&self, skip: u64, limit: u32) -> Result<Option<Vec<Notice>>, DataError> {
        if skip.saturating_add(u64::from(limit)) > u64::from(self.head) {
            return Ok(None);
        }
        let (inner, head) = (self.inner.clone(), self.head);
        let page = self
            .feed
            .get(&(), move || {
                let inner = inner.clone();
                async move { inner.feed(None, head).await }
            })
            .await?;
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(Some(page.iter().skip(skip).take(limit).cloned().collect()))
    }
}

#[async_trait]
impl<S: NoticeStore> NoticeStore for CachedNoticeStore<S> {
    async fn insert(&self, notice: NewNotice) -> Result<Notice, DataError> {
        self.feed.write(&(), self.inner.insert(notice)).await
    }

    async fn count_by_author_since(
        &self,
        openid: &str,
        since: DateTime<Utc>,
    ) -> Result<u64, DataError> {
        self.inner.count_by_author_since(openid, since).await
    }

    async fn get(&self, id: &str) -> Result<Option<Notice>, DataError> {
        self.inner.get(id).await
    }

    async fn feed(&self, before: Option<&str>, limit: u32) -> Result<Vec<Notice>, DataError> {
        if before.is_none()
            && let Some(page) = self.head_page(0, limit).await?
        {
            return Ok(page);
        }
        self.inner.feed(before, limit).await
    }

    async fn feed_offset(&self, skip: u64, limit: u32) -> Result<Vec<Notice>, DataError> {
        match self.head_page(skip, limit).await? {
            Some(page) => Ok(page),
            None => self.inner.feed_offset(skip, limit).await,
        }
    }

    async fn by_author(
        &self,
        openid: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Notice>, DataError> {
        self.inner.by_author(openid, before, limit).await
    }

    async fn update(
        &self,
        id: &str,
        openid: &str,
        patch: &NoticePatch,
    ) -> Result<AuthorChange<Notice>, DataError> {
        self.feed.write(&(), self.inner.update(id, openid, patch)).await
    }

    async fn delete(&self, id: &str, openid: &str) -> Result<AuthorChange<()>, DataError> {
        self.feed.write(&(), self.inner.delete(id, openid)).await
    }

    async fn set_banned(&self, id: &str, banned: bool) -> Result<Option<Notice>, DataError> {
        self.feed.write(&(), self.inner.set_banned(id, banned)).await
    }

    async fn ping(&self) -> Result<(), DataError> {
        self.inner.ping().await
    }
}
