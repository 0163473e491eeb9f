//! The MongoDB PK store: collections `pk_records` and `pk_members` (fields
//! and indexes in [`crate::mongo`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures_util::TryStreamExt;
use mongodb::bson::{self, DateTime as BsonDateTime, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::Deserialize;

use super::{Membership, PkStore, StepCheckin, StepRecord};
use crate::data::DataError;
use crate::mongo::{
    IndexesReady, PK_MEMBERS, PK_RECORDS, ensure_pk_indexes, from_bson_time, is_duplicate_key,
    to_bson_time, unavailable,
};

/// How often `upsert_steps` re-runs after losing a race (each round trip
/// makes progress unless the record is expired by its TTL meanwhile).
const UPSERT_ATTEMPTS: usize = 5;

/// The highest step count the store keeps (BSON integers are signed 64-bit).
pub(crate) fn storable_steps(steps: u64) -> u64 {
    steps.min(i64::MAX as u64)
}

/// [`PkStore`] over MongoDB; every operation is bounded by `op_timeout`.
///
/// Until [`MongoPkStore::init`] has succeeded (on this store or a clone of
/// it), every operation answers [`DataError::Unavailable`]: see
/// [`IndexesReady`].
#[derive(Clone, Debug)]
pub struct MongoPkStore {
    db: Database,
    records: Collection<Document>,
    members: Collection<Document>,
    op_timeout: Duration,
    ready: IndexesReady,
}

/// A step record as stored (`_id` and `created_at` are ignored).
#[derive(Deserialize)]
struct RecordDoc {
    open_gid: String,
    date: String,
    openid: String,
    steps: i64,
    nick_name: String,
    avatar_url: String,
    reached_at: BsonDateTime,
    updated_at: BsonDateTime,
}

/// A membership as stored.
#[derive(Deserialize)]
struct MemberDoc {
    open_gid: String,
    openid: String,
    joined_at: BsonDateTime,
}

/// Decode step documents; a large batch (a whole day's board is thousands)
/// is decoded on the blocking pool, so it does not stall the requests queued
/// on an async worker.
async fn decode_records(docs: Vec<Document>) -> Result<Vec<StepRecord>, DataError> {
    if docs.len() < super::OFF_WORKER_BATCH {
        return docs.into_iter().map(record_from).collect();
    }
    tokio::task::spawn_blocking(move || docs.into_iter().map(record_from).collect())
        .await
        .map_err(|e| DataError::Unavailable(format!("{PK_RECORDS}: decoding failed: {e}")))?
}

fn record_from(doc: Document) -> Result<StepRecord, DataError> {
    let d: RecordDoc =
        bson::from_document(doc).map_err(|e| DataError::Corrupt(format!("{PK_RECORDS}: {e}")))?;
    let steps = u64::try_from(d.steps)
        .map_err(|_| DataError::Corrupt(format!("{PK_RECORDS}: negative steps {}", d.steps)))?;
    Ok(StepRecord {
        open_gid: d.open_gid.into(),
        date: d.date.into(),
        openid: d.openid.into(),
        steps,
        nick_name: d.nick_name.into(),
        avatar_url: d.avatar_url.into(),
        reached_at: from_bson_time(d.reached_at)?,
        updated_at: from_bson_time(d.updated_at)?,
    })
}

fn membership_from(doc: Document) -> Result<Membership, DataError> {
    let d: MemberDoc =
        bson::from_document(doc).map_err(|e| DataError::Corrupt(format!("{PK_MEMBERS}: {e}")))?;
    Ok(Membership {
        open_gid: d.open_gid,
        openid: d.openid,
        joined_at: from_bson_time(d.joined_at)?,
    })
}

/// The `{open_gid, date, openid}` key of a record.
fn record_key(open_gid: &str, date: &str, openid: &str) -> Document {
    doc! { "open_gid": open_gid, "date": date, "openid": openid }
}

impl MongoPkStore {
    /// A store over `db` (see [`crate::mongo::connect`]); needs no server yet.
    pub fn new(db: Database, op_timeout: Duration) -> Self {
        Self {
            records: db.collection(PK_RECORDS),
            members: db.collection(PK_MEMBERS),
            db,
            op_timeout,
            ready: IndexesReady::new(),
        }
    }

    /// Create the indexes (idempotent), with a TTL of `retention_days` on
    /// step records, and open the store for use. Call at start-up (again
    /// after a failure).
    pub async fn init(&self, retention_days: u32) -> Result<(), DataError> {
        ensure_pk_indexes(&self.db, retention_days).await?;
        self.ready.set();
        Ok(())
    }

    /// `find_one_and_update` returning the updated document.
    async fn update_returning(
        &self,
        filter: Document,
        update: Document,
        upsert: bool,
    ) -> Result<Option<Document>, mongodb::error::Error> {
        self.records
            .find_one_and_update(filter, update)
            .upsert(upsert)
            .return_document(ReturnDocument::After)
            .await
    }

    async fn upsert_inner(&self, c: &StepCheckin) -> Result<StepRecord, DataError> {
        let steps = i64::try_from(storable_steps(c.steps)).unwrap_or(i64::MAX);
        let at = to_bson_time(c.at);
        let key = record_key(&c.open_gid, &c.date, &c.openid);
        let mut lower = key.clone();
        lower.insert("steps", doc! { "$lt": steps });
        let raise = doc! {
            "$set": {
                "steps": steps,
                "reached_at": at,
                "nick_name": &c.nick_name,
                "avatar_url": &c.avatar_url,
            },
            "$max": { "updated_at": at },
            "$setOnInsert": { "created_at": at },
        };
        let refresh = doc! {
            "$set": { "nick_name": &c.nick_name, "avatar_url": &c.avatar_url },
            "$max": { "updated_at": at },
        };
        for _ in 0..UPSERT_ATTEMPTS {
            // Insert, or raise a lower count. A duplicate key means a record
            // with at least these steps exists (or a concurrent insert won).
            match self.update_returning(lower.clone(), raise.clone(), true).await {
                Ok(Some(doc)) => return record_from(doc),
                Ok(None) => {}
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(unavailable("upsert steps", &e)),
            }
            // A concurrent insert of a lower count: raise it.
            match self.update_returning(lower.clone(), raise.clone(), false).await {
                Ok(Some(doc)) => return record_from(doc),
                Ok(None) => {}
                Err(e) => return Err(unavailable("upsert steps", &e)),
            }
            // Stored steps are at least ours: keep them, refresh the rest.
            match self.update_returning(key.clone(), refresh.clone(), false).await {
                Ok(Some(doc)) => return record_from(doc),
                // Expired in between: start over.
                Ok(None) => {}
                Err(e) => return Err(unavailable("upsert steps", &e)),
            }
        }
        Err(DataError::Unavailable("mongodb upsert steps: the record kept changing".into()))
    }

    async fn rank_inner(
        &self,
        open_gid: &str,
        date: &str,
        openid: &str,
    ) -> Result<Option<(u64, StepRecord)>, DataError> {
        let Some(doc) = self
            .records
            .find_one(record_key(open_gid, date, openid))
            .await
            .map_err(|e| unavailable("rank of", &e))?
        else {
            return Ok(None);
        };
        let mine = record_from(doc)?;
        let steps = i64::try_from(mine.steps).unwrap_or(i64::MAX);
        let reached = to_bson_time(mine.reached_at);
        let ahead = self
            .records
            .count_documents(doc! {
                "open_gid": open_gid,
                "date": date,
                "$or": [
                    { "steps": { "$gt": steps } },
                    { "steps": steps, "reached_at": { "$lt": reached } },
                    { "steps": steps, "reached_at": reached, "openid": { "$lt": openid } },
                ],
            })
            .await
            .map_err(|e| unavailable("rank of", &e))?;
        Ok(Some((ahead + 1, mine)))
    }
}

#[async_trait]
impl PkStore for MongoPkStore {
    #[tracing::instrument(skip(self, openid), level = "debug")]
    async fn add_membership(&self, open_gid: &str, openid: &str) -> Result<(), DataError> {
        self.ready
            .run(self.op_timeout, "add membership", async {
                let joined_at = to_bson_time(Utc::now());
                let result = self
                    .members
                    .update_one(
                        doc! { "open_gid": open_gid, "openid": openid },
                        doc! { "$setOnInsert": { "joined_at": joined_at } },
                    )
                    .upsert(true)
                    .await;
                match result {
                    Ok(_) => Ok(()),
                    // A concurrent first join inserted it: that is the goal.
                    Err(e) if is_duplicate_key(&e) => Ok(()),
                    Err(e) => Err(unavailable("add membership", &e)),
                }
            })
            .await
    }

    #[tracing::instrument(skip(self, openid), level = "debug")]
    async fn is_member(&self, open_gid: &str, openid: &str) -> Result<bool, DataError> {
        self.ready
            .run(self.op_timeout, "is member", async {
                self.members
                    .find_one(doc! { "open_gid": open_gid, "openid": openid })
                    .projection(doc! { "_id": 1 })
                    .await
                    .map(|found| found.is_some())
                    .map_err(|e| unavailable("is member", &e))
            })
            .await
    }

    #[tracing::instrument(skip(self, openid), level = "debug")]
    async fn memberships(&self, openid: &str, limit: u32) -> Result<Vec<Membership>, DataError> {
        if limit == 0 {
            // MongoDB reads a limit of 0 as "no limit".
            return Ok(Vec::new());
        }
        self.ready
            .run(self.op_timeout, "memberships", async {
                // Walks `pk_members_by_openid` backwards: the newest joins first.
                let docs: Vec<Document> = self
                    .members
                    .find(doc! { "openid": openid })
                    .sort(doc! { "joined_at": -1, "open_gid": 1 })
                    .limit(i64::from(limit))
                    .await
                    .map_err(|e| unavailable("memberships", &e))?
                    .try_collect()
                    .await
                    .map_err(|e| unavailable("memberships", &e))?;
                docs.into_iter().map(membership_from).collect()
            })
            .await
    }

    #[tracing::instrument(skip(self, checkin), level = "debug", fields(open_gid = %checkin.open_gid, date = %checkin.date))]
    async fn upsert_steps(&self, checkin: &StepCheckin) -> Result<StepRecord, DataError> {
        self.ready.run(self.op_timeout, "upsert steps", self.upsert_inner(checkin)).await
    }

    #[tracing::instrument(skip(self), level = "debug")]
    async fn ranking(
        &self,
        open_gid: &str,
        date: &str,
        limit: u32,
    ) -> Result<Vec<StepRecord>, DataError> {
        if limit == 0 {
            // MongoDB reads a limit of 0 as "no limit".
            return Ok(Vec::new());
        }
        self.ready
            .run(self.op_timeout, "ranking", async {
                let docs: Vec<Document> = self
                    .records
                    .find(doc! { "open_gid": open_gid, "date": date })
                    .sort(doc! { "steps": -1, "reached_at": 1, "openid": 1 })
                    .limit(i64::from(limit))
                    .await
                    .map_err(|e| unavailable("ranking", &e))?
                    .try_collect()
                    .await
                    .map_err(|e| unavailable("ranking", &e))?;
                decode_records(docs).await
            })
            .await
    }

    #[tracing::instrument(skip(self, openid), level = "debug")]
    async fn rank_of(
        &self,
        open_gid: &str,
        date: &str,
        openid: &str,
    ) -> Result<Option<(u64, StepRecord)>, DataError> {
        self.ready.run(self.op_timeout, "rank of", self.rank_inner(open_gid, date, openid)).await
    }

    #[tracing::instrument(skip(self), level = "debug")]
    async fn participants(&self, open_gid: &str, date: &str) -> Result<u64, DataError> {
        self.ready
            .run(self.op_timeout, "participants", async {
                self.records
                    .count_documents(doc! { "open_gid": open_gid, "date": date })
                    .await
                    .map_err(|e| unavailable("participants", &e))
            })
            .await
    }

    async fn ping(&self) -> Result<(), DataError> {
        self.ready.run(self.op_timeout, "ping", crate::mongo::ping(&self.db)).await
    }
}
