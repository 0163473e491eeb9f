//! The MongoDB notice store: collection `notices` (fields and indexes in
//! [`crate::mongo`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{self, DateTime as BsonDateTime, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::Deserialize;

use super::memory::{parse_before, parse_id};
use super::{AuthorChange, NewNotice, Notice, NoticePatch, NoticeState, NoticeStore, Visibility};
use crate::data::DataError;
use crate::mongo::{
    IndexesReady, NOTICES, ensure_notice_indexes, from_bson_time, to_bson_time, unavailable,
};

/// How often a conditional update re-reads after a concurrent change of the
/// field it depends on (a ban racing an author's visibility change).
const CHANGE_ATTEMPTS: usize = 5;

/// [`NoticeStore`] over MongoDB; every operation is bounded by `op_timeout`.
///
/// Author changes bump `updated_at`; moderation (`set_banned`) does not.
///
/// Until [`MongoNoticeStore::init`] has succeeded (on this store or a clone
/// of it), every operation answers [`DataError::Unavailable`]: see
/// [`IndexesReady`].
#[derive(Clone, Debug)]
pub struct MongoNoticeStore {
    db: Database,
    notices: Collection<Document>,
    op_timeout: Duration,
    ready: IndexesReady,
}

/// A notice as stored.
#[derive(Deserialize)]
struct NoticeDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    author_openid: String,
    author_nick_name: String,
    author_avatar_url: String,
    content: String,
    photos: Vec<String>,
    visibility: Visibility,
    banned: bool,
    state: NoticeState,
    created_at: BsonDateTime,
    updated_at: BsonDateTime,
}

fn notice_from(doc: Document) -> Result<Notice, DataError> {
    let d: NoticeDoc =
        bson::from_document(doc).map_err(|e| DataError::Corrupt(format!("{NOTICES}: {e}")))?;
    Ok(Notice {
        id: d.id.to_hex(),
        author_openid: d.author_openid,
        author_nick_name: d.author_nick_name,
        author_avatar_url: d.author_avatar_url,
        content: d.content,
        photos: d.photos,
        visibility: d.visibility,
        banned: d.banned,
        state: d.state,
        created_at: from_bson_time(d.created_at)?,
        updated_at: from_bson_time(d.updated_at)?,
    })
}

fn visibility_str(v: Visibility) -> &'static str {
    match v {
        Visibility::Public => "public",
        Visibility::Private => "private",
    }
}

fn state_str(s: NoticeState) -> &'static str {
    match s {
        NoticeState::Public => "public",
        NoticeState::Private => "private",
        NoticeState::Banned => "banned",
    }
}

impl MongoNoticeStore {
    /// A store over `db` (see [`crate::mongo::connect`]); needs no server yet.
    pub fn new(db: Database, op_timeout: Duration) -> Self {
        Self { notices: db.collection(NOTICES), db, op_timeout, ready: IndexesReady::new() }
    }

    /// Create the indexes (idempotent) and open the store for use. Call at
    /// start-up (again after a failure).
    pub async fn init(&self) -> Result<(), DataError> {
        ensure_notice_indexes(&self.db).await?;
        self.ready.set();
        Ok(())
    }

    /// Newest first, `filter`, strictly below `before`, then `skip`.
    async fn page(
        &self,
        op: &'static str,
        mut filter: Document,
        before: Option<&str>,
        skip: u64,
        limit: u32,
    ) -> Result<Vec<Notice>, DataError> {
        // MongoDB reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Some(before) = parse_before(before) else {
            return Ok(Vec::new());
        };
        if let Some(before) = before {
            filter.insert("_id", doc! { "$lt": before });
        }
        self.ready
            .run(self.op_timeout, op, async {
                let docs: Vec<Document> = self
                    .notices
                    .find(filter)
                    .sort(doc! { "_id": -1 })
                    // Past i64::MAX the driver cannot encode it; nothing is there.
                    .skip(skip.min(i64::MAX as u64))
                    .limit(i64::from(limit))
                    .await
                    .map_err(|e| unavailable(op, &e))?
                    .try_collect()
                    .await
                    .map_err(|e| unavailable(op, &e))?;
                docs.into_iter().map(notice_from).collect()
            })
            .await
    }

    async fn find(&self, op: &'static str, id: ObjectId) -> Result<Option<Notice>, DataError> {
        self.notices
            .find_one(doc! { "_id": id })
            .await
            .map_err(|e| unavailable(op, &e))?
            .map(notice_from)
            .transpose()
    }

    /// `find_one_and_update` returning the changed notice, if one matched.
    async fn change(
        &self,
        op: &'static str,
        filter: Document,
        update: Document,
    ) -> Result<Option<Notice>, DataError> {
        self.notices
            .find_one_and_update(filter, update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| unavailable(op, &e))?
            .map(notice_from)
            .transpose()
    }

    async fn update_inner(
        &self,
        id: ObjectId,
        openid: &str,
        patch: &NoticePatch,
    ) -> Result<AuthorChange<Notice>, DataError> {
        let now = to_bson_time(Utc::now());
        for _ in 0..CHANGE_ATTEMPTS {
            let Some(current) = self.find("update notice", id).await? else {
                return Ok(AuthorChange::NotFound);
            };
            if current.author_openid != openid {
                return Ok(AuthorChange::NotAuthor);
            }
            let mut filter = doc! { "_id": id, "author_openid": openid };
            let mut set = Document::new();
            if let Some(content) = &patch.content {
                set.insert("content", content.as_str());
            }
            if let Some(visibility) = patch.visibility {
                // The state depends on the ban: only valid if it is unchanged.
                filter.insert("banned", current.banned);
                set.insert("visibility", visibility_str(visibility));
                let state = NoticeState::of(visibility, current.banned);
                set.insert("state", state_str(state));
            }
            let mut update = doc! { "$max": { "updated_at": now } };
            if !set.is_empty() {
                update.insert("$set", set);
            }
            if let Some(notice) = self.change("update notice", filter, update).await? {
                return Ok(AuthorChange::Done(notice));
            }
            // Banned, unbanned or deleted meanwhile: look again.
        }
        Err(DataError::Unavailable("mongodb update notice: the notice kept changing".into()))
    }

    async fn delete_inner(
        &self,
        id: ObjectId,
        openid: &str,
    ) -> Result<AuthorChange<()>, DataError> {
        let deleted = self
            .notices
            .delete_one(doc! { "_id": id, "author_openid": openid })
            .await
            .map_err(|e| unavailable("delete notice", &e))?;
        if deleted.deleted_count > 0 {
            return Ok(AuthorChange::Done(()));
        }
        let exists = self
            .notices
            .find_one(doc! { "_id": id })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(|e| unavailable("delete notice", &e))?;
        Ok(match exists {
            Some(_) => AuthorChange::NotAuthor,
            None => AuthorChange::NotFound,
        })
    }

    async fn set_banned_inner(
        &self,
        id: ObjectId,
        banned: bool,
    ) -> Result<Option<Notice>, DataError> {
        for _ in 0..CHANGE_ATTEMPTS {
            let Some(current) = self.find("ban notice", id).await? else {
                return Ok(None);
            };
            let state = NoticeState::of(current.visibility, banned);
            // The state depends on the visibility: only valid if unchanged.
            let filter = doc! { "_id": id, "visibility": visibility_str(current.visibility) };
            let update = doc! { "$set": { "banned": banned, "state": state_str(state) } };
            if let Some(notice) = self.change("ban notice", filter, update).await? {
                return Ok(Some(notice));
            }
        }
        Err(DataError::Unavailable("mongodb ban notice: the notice kept changing".into()))
    }
}

#[async_trait]
impl NoticeStore for MongoNoticeStore {
    #[tracing::instrument(skip_all, level = "debug")]
    async fn insert(&self, notice: NewNotice) -> Result<Notice, DataError> {
        self.ready
            .run(self.op_timeout, "insert notice", async {
                let id = ObjectId::new();
                let created_at = to_bson_time(notice.created_at);
                let state = NoticeState::of(notice.visibility, false);
                let document = doc! {
                    "_id": id,
                    "author_openid": &notice.author_openid,
                    "author_nick_name": &notice.author_nick_name,
                    "author_avatar_url": &notice.author_avatar_url,
                    "content": &notice.content,
                    "photos": &notice.photos,
                    "visibility": visibility_str(notice.visibility),
                    "banned": false,
                    "state": state_str(state),
                    "created_at": created_at,
                    "updated_at": created_at,
                };
                self.notices
                    .insert_one(document)
                    .await
                    .map_err(|e| unavailable("insert notice", &e))?;
                Ok(notice.stored(id.to_hex(), from_bson_time(created_at)?))
            })
            .await
    }

    #[tracing::instrument(skip(self, openid), level = "debug")]
    async fn count_by_author_since(
        &self,
        openid: &str,
        since: DateTime<Utc>,
    ) -> Result<u64, DataError> {
        let op = "count notices by author";
        let filter =
            doc! { "author_openid": openid, "created_at": { "$gte": to_bson_time(since) } };
        self.ready
            .run(self.op_timeout, op, async {
                self.notices.count_documents(filter).await.map_err(|e| unavailable(op, &e))
            })
            .await
    }

    #[tracing::instrument(skip(self), level = "debug")]
    async fn get(&self, id: &str) -> Result<Option<Notice>, DataError> {
        let Some(id) = parse_id(id) else {
            return Ok(None);
        };
        self.ready.run(self.op_timeout, "get notice", self.find("get notice", id)).await
    }

    #[tracing::instrument(skip(self), level = "debug")]
    async fn feed(&self, before: Option<&str>, limit: u32) -> Result<Vec<Notice>, DataError> {
        let filter = doc! { "state": state_str(NoticeState::Public) };
        self.page("feed", filter, before, 0, limit).await
    }

    #[tracing::instrument(skip(self), level = "debug")]
    async fn feed_offset(&self, skip: u64, limit: u32) -> Result<Vec<Notice>, DataError> {
        let filter = doc! { "state": state_str(NoticeState::Public) };
        self.page("feed by offset", filter, None, skip, limit).await
    }

    #[tracing::instrument(skip(self, openid), level = "debug")]
    async fn by_author(
        &self,
        openid: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Notice>, DataError> {
        let filter = doc! { "author_openid": openid };
        self.page("notices by author", filter, before, 0, limit).await
    }

    #[tracing::instrument(skip(self, openid, patch), level = "debug")]
    async fn update(
        &self,
        id: &str,
        openid: &str,
        patch: &NoticePatch,
    ) -> Result<AuthorChange<Notice>, DataError> {
        let Some(id) = parse_id(id) else {
            return Ok(AuthorChange::NotFound);
        };
        self.ready.run(self.op_timeout, "update notice", self.update_inner(id, openid, patch)).await
    }

    #[tracing::instrument(skip(self, openid), level = "debug")]
    async fn delete(&self, id: &str, openid: &str) -> Result<AuthorChange<()>, DataError> {
        let Some(id) = parse_id(id) else {
            return Ok(AuthorChange::NotFound);
        };
        self.ready.run(self.op_timeout, "delete notice", self.delete_inner(id, openid)).await
    }

    #[tracing::instrument(skip(self), level = "debug")]
    async fn set_banned(&self, id: &str, banned: bool) -> Result<Option<Notice>, DataError> {
        let Some(id) = parse_id(id) else {
            return Ok(None);
        };
        self.ready.run(self.op_timeout, "ban notice", self.set_banned_inner(id, banned)).await
    }

    async fn ping(&self) -> Result<(), DataError> {
        self.ready.run(self.op_timeout, "ping", crate::mongo::ping(&self.db)).await
    }
}
