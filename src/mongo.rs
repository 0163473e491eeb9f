//! MongoDB plumbing shared by the business stores: the `[mongodb]` config
//! section, the (lazy) connection, the per-operation bound and error mapping,
//! and the indexes every store relies on.
//!
//! Collections, fields and indexes (all created by [`MongoPkStore::init`]
//! and [`MongoNoticeStore::init`]):
//!
//! | collection   | fields | indexes |
//! |--------------|--------|---------|
//! | `pk_records` | `open_gid`, `date`, `openid`, `steps` (int64), `nick_name`, `avatar_url`, `reached_at`, `updated_at`, `created_at` (BSON datetimes) | `pk_records_key` unique `(open_gid, date, openid)`; `pk_records_ranking` `(open_gid, date, steps -1, reached_at, openid)`; `pk_records_ttl` on `created_at`, `expireAfterSeconds` = retention days × 86 400 |
//! | `pk_members` | `open_gid`, `openid`, `joined_at` | `pk_members_key` unique `(open_gid, openid)`; `pk_members_by_openid` `(openid, joined_at)` |
//! | `notices`    | `_id` (ObjectId), `author_openid`, `author_nick_name`, `author_avatar_url`, `content`, `photos`, `visibility`, `banned`, `state`, `created_at`, `updated_at` | `notices_feed` `(state, _id -1)`; `notices_by_author` `(author_openid, _id -1)` |
//!
//! `created_at` of a step record is the time of the first check-in of that
//! (group, day, user), so a record expires `retention_days` after it was
//! created. All datetimes are BSON datetimes (millisecond precision); the
//! in-memory stores truncate to milliseconds too, so both backends agree.
//!
//! [`MongoPkStore::init`]: crate::pk::MongoPkStore::init
//! [`MongoNoticeStore::init`]: crate::notices::MongoNoticeStore::init

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mongodb::bson::{DateTime as BsonDateTime, Document, doc};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Database, IndexModel};
use serde::Deserialize;

use crate::data::DataError;

/// Collection of step records (one per group, day and user).
pub const PK_RECORDS: &str = "pk_records";
/// Collection of group memberships.
pub const PK_MEMBERS: &str = "pk_members";
/// Collection of notices.
pub const NOTICES: &str = "notices";

/// Name of the unique `(open_gid, date, openid)` index on [`PK_RECORDS`].
pub const PK_RECORDS_KEY_INDEX: &str = "pk_records_key";
/// Name of the ranking index on [`PK_RECORDS`].
pub const PK_RECORDS_RANKING_INDEX: &str = "pk_records_ranking";
/// Name of the TTL index (on `created_at`) on [`PK_RECORDS`].
pub const PK_RECORDS_TTL_INDEX: &str = "pk_records_ttl";
/// Name of the unique `(open_gid, openid)` index on [`PK_MEMBERS`].
pub const PK_MEMBERS_KEY_INDEX: &str = "pk_members_key";
/// Name of the `(openid, joined_at)` index on [`PK_MEMBERS`].
pub const PK_MEMBERS_BY_OPENID_INDEX: &str = "pk_members_by_openid";
/// Name of the `(state, _id desc)` index on [`NOTICES`] (the public feed).
pub const NOTICES_FEED_INDEX: &str = "notices_feed";
/// Name of the `(author_openid, _id desc)` index on [`NOTICES`].
pub const NOTICES_BY_AUTHOR_INDEX: &str = "notices_by_author";

/// How long index creation may take (it may build on existing data).
const INDEX_TIMEOUT: Duration = Duration::from_secs(60);
/// MongoDB's duplicate key error code.
const DUPLICATE_KEY: i32 = 11000;
/// `IndexOptionsConflict`: same keys, other options (e.g. another TTL).
const INDEX_OPTIONS_CONFLICT: i32 = 85;
/// `IndexKeySpecsConflict`: same name, other keys or options.
const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
/// Seconds in a day, for the TTL.
const DAY_SECS: u64 = 86_400;

/// `[mongodb]`: where the business data lives.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoConfig {
    /// `mongodb://[user:pass@]host[:port][,...]/?options`. May carry
    /// credentials: never printed (redacted in `Debug`) nor put in errors.
    pub uri: String,
    /// Database name.
    pub database: String,
    /// TCP connect and server selection timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on every store operation; past it the operation is `Unavailable`.
    #[serde(with = "humantime_serde")]
    pub op_timeout: Duration,
    /// Write acknowledgement: `"majority"` (default), a node count, or a tag.
    pub write_concern: WriteConcernSetting,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: "mongodb://127.0.0.1:27017/".into(),
            database: "weapp".into(),
            connect_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_secs(2),
            write_concern: WriteConcernSetting::Majority,
        }
    }
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &"[redacted]")
            .field("database", &self.database)
            .field("connect_timeout", &self.connect_timeout)
            .field("op_timeout", &self.op_timeout)
            .field("write_concern", &self.write_concern)
            .finish()
    }
}

/// The `w` of the write concern, as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WriteConcernSetting {
    /// `w: "majority"`: acknowledged by a majority of the replica set.
    #[default]
    Majority,
    /// `w: N` (N ≥ 1): acknowledged by N members.
    Nodes(u32),
    /// `w: "<tag set name>"`: a custom write concern of the replica set.
    Tag(String),
}

impl WriteConcernSetting {
    /// The driver's acknowledgement for this setting.
    pub fn acknowledgment(&self) -> Acknowledgment {
        match self {
            Self::Majority => Acknowledgment::Majority,
            Self::Nodes(n) => Acknowledgment::Nodes(*n),
            Self::Tag(tag) => Acknowledgment::Custom(tag.clone()),
        }
    }
}

impl fmt::Display for WriteConcernSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Majority => f.write_str("majority"),
            Self::Nodes(n) => write!(f, "{n}"),
            Self::Tag(tag) => f.write_str(tag),
        }
    }
}

impl std::str::FromStr for WriteConcernSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("majority") {
            return Ok(Self::Majority);
        }
        if s.is_empty() {
            return Err("write_concern must not be empty".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(0) => Err("write_concern 0 (unacknowledged) is not supported".into()),
                Ok(n) => Ok(Self::Nodes(n)),
                Err(_) => Err(format!("write_concern {s} is out of range")),
            };
        }
        Ok(Self::Tag(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for WriteConcernSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = WriteConcernSetting;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""majority", a node count ≥ 1, or a tag set name"#)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom("write_concern must not be negative")),
                }
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// Build the client and return the configured database. Does not need the
/// server to be up: the driver connects lazily, so a down server shows up as
/// `Unavailable` from the first operations, and they recover by themselves.
///
/// `connect_timeout` bounds both the TCP connect and server selection; the
/// write concern (with `wtimeout` = `op_timeout`) overrides any in the URI.
pub async fn connect(cfg: &MongoConfig) -> Result<Database, DataError> {
    validate_database_name(&cfg.database)?;
    let mut options = ClientOptions::parse(&cfg.uri).await.map_err(|e| {
        DataError::Unavailable(format!("invalid MongoDB URI: {}", scrub(&describe(&e), &cfg.uri)))
    })?;
    options.connect_timeout = Some(cfg.connect_timeout);
    options.server_selection_timeout = Some(cfg.connect_timeout);
    if options.app_name.is_none() {
        options.app_name = Some("weapp-gateway".into());
    }
    options.write_concern = Some(
        WriteConcern::builder()
            .w(cfg.write_concern.acknowledgment())
            .w_timeout(cfg.op_timeout)
            .build(),
    );
    let client = Client::with_options(options).map_err(|e| {
        DataError::Unavailable(format!(
            "cannot build the MongoDB client: {}",
            scrub(&describe(&e), &cfg.uri)
        ))
    })?;
    Ok(client.database(&cfg.database))
}

/// Reject names MongoDB would refuse at the first operation anyway.
fn validate_database_name(name: &str) -> Result<(), DataError> {
    const FORBIDDEN: &[char] = &['/', '\\', '.', ' ', '"', '$', '\0'];
    if name.is_empty() || name.len() > 63 || name.contains(FORBIDDEN) {
        return Err(DataError::Unavailable(format!("invalid MongoDB database name {name:?}")));
    }
    Ok(())
}

/// Remove the URI and its user-info part (credentials) from a message.
fn scrub(message: &str, uri: &str) -> String {
    let mut out = message.replace(uri, "[uri]");
    if let Some((_, rest)) = uri.split_once("://")
        && let Some((userinfo, _)) = rest.split_once('@')
        && !userinfo.is_empty()
    {
        out = out.replace(userinfo, "[redacted]");
    }
    out
}

/// Ping `db` (a store's liveness check), mapped like every operation.
pub async fn ping(db: &Database) -> Result<(), DataError> {
    db.run_command(doc! { "ping": 1 }).await.map(|_| ()).map_err(|e| unavailable("ping", &e))
}

/// Run one store operation under `op_timeout`: a timeout becomes
/// [`DataError::Unavailable`] naming `op` (and never the URI).
pub async fn bounded<T>(
    op_timeout: Duration,
    op: &'static str,
    fut: impl Future<Output = Result<T, DataError>>,
) -> Result<T, DataError> {
    match tokio::time::timeout(op_timeout, fut).await {
        Ok(result) => result,
        Err(_) => {
            tracing::debug!(op, timeout = ?op_timeout, "mongodb operation timed out");
            Err(DataError::Unavailable(format!("mongodb {op}: no answer within {op_timeout:?}")))
        }
    }
}

/// Whether a store's indexes exist. Until its `init` has succeeded, a store
/// answers every operation with [`DataError::Unavailable`] without touching
/// MongoDB: a write before the unique indexes exist could store duplicates,
/// and those would then make the index creation fail for good.
///
/// Clones share the flag, so the clone the start-up task initialises and the
/// clone the routes use agree.
#[derive(Clone, Debug, Default)]
pub struct IndexesReady(Arc<AtomicBool>);

impl IndexesReady {
    /// Not ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The indexes exist (called once the store's index creation succeeded).
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`IndexesReady::set`] was called.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Run one store operation: refused while not ready, then bounded by
    /// `op_timeout` (see [`bounded`]).
    pub async fn run<T>(
        &self,
        op_timeout: Duration,
        op: &'static str,
        fut: impl Future<Output = Result<T, DataError>>,
    ) -> Result<T, DataError> {
        self.check(op)?;
        bounded(op_timeout, op, fut).await
    }

    /// `Ok` when ready, else [`DataError::Unavailable`] naming `op`.
    pub fn check(&self, op: &'static str) -> Result<(), DataError> {
        if self.is_ready() {
            return Ok(());
        }
        Err(DataError::Unavailable(format!(
            "mongodb {op}: the indexes are not created yet (retried in the background)"
        )))
    }
}

/// Map a driver error to [`DataError::Unavailable`] naming `op`; the text
/// says what went wrong without the URI or credentials.
pub fn unavailable(op: &'static str, e: &MongoError) -> DataError {
    DataError::Unavailable(format!("mongodb {op}: {}", describe(e)))
}

/// What went wrong, from the error's kind (never the driver's full text,
/// which may describe the topology).
fn describe(e: &MongoError) -> String {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => {
            format!("command failed ({} {}): {}", c.code, c.code_name, c.message)
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            format!("write failed ({}): {}", w.code, w.message)
        }
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            format!("write concern not satisfied ({}): {}", w.code, w.message)
        }
        ErrorKind::ServerSelection { .. } => {
            "no reachable server (server selection timed out)".into()
        }
        ErrorKind::Io(io) => format!("i/o error: {io}"),
        ErrorKind::ConnectionPoolCleared { .. } => {
            "connection pool cleared after a network error".into()
        }
        ErrorKind::Authentication { .. } => "authentication failed".into(),
        ErrorKind::DnsResolve { .. } => "DNS resolution failed".into(),
        ErrorKind::InvalidTlsConfig { .. } => "invalid TLS configuration".into(),
        ErrorKind::InvalidArgument { message, .. } => format!("invalid argument: {message}"),
        ErrorKind::InvalidResponse { .. } => "invalid reply from the server".into(),
        ErrorKind::BsonSerialization(e) => format!("cannot encode BSON: {e}"),
        ErrorKind::BsonDeserialization(e) => format!("cannot decode BSON: {e}"),
        ErrorKind::Shutdown => "client shut down".into(),
        _ => "driver error".into(),
    }
}

/// Whether `e` is a duplicate key error (code 11000), as a write error or as
/// a command error (`findAndModify` reports it that way).
pub fn is_duplicate_key(e: &MongoError) -> bool {
    error_code(e) == Some(DUPLICATE_KEY)
}

/// The server's error code of a command or write error.
fn error_code(e: &MongoError) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => {
            m.write_errors.as_ref().and_then(|errors| errors.first()).map(|w| w.code)
        }
        _ => None,
    }
}

/// `at` truncated to whole milliseconds: what a BSON datetime holds. Both
/// backends store times this way, so they return identical records.
pub(crate) fn millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

/// A chrono time as a BSON datetime (millisecond precision).
pub(crate) fn to_bson_time(at: DateTime<Utc>) -> BsonDateTime {
    BsonDateTime::from_millis(at.timestamp_millis())
}

/// A BSON datetime as a chrono time; out of chrono's range is corrupt.
pub(crate) fn from_bson_time(at: BsonDateTime) -> Result<DateTime<Utc>, DataError> {
    DateTime::from_timestamp_millis(at.timestamp_millis())
        .ok_or_else(|| DataError::Corrupt(format!("datetime out of range: {at}")))
}

/// Create every index the PK and notice stores rely on (idempotent). A
/// changed `pk_retention_days` is applied to the existing TTL index with
/// `collMod`. `pk_retention_days` of 0 is treated as 1 (a TTL of 0 would
/// delete records at once).
pub async fn ensure_indexes(db: &Database, pk_retention_days: u32) -> Result<(), DataError> {
    ensure_pk_indexes(db, pk_retention_days).await?;
    ensure_notice_indexes(db).await
}

/// The indexes of [`PK_RECORDS`] and [`PK_MEMBERS`] (see [`ensure_indexes`]).
pub async fn ensure_pk_indexes(db: &Database, pk_retention_days: u32) -> Result<(), DataError> {
    bounded(INDEX_TIMEOUT, "create pk indexes", async {
        let records = db.collection::<Document>(PK_RECORDS);
        create(
            &records,
            vec![
                index(doc! { "open_gid": 1, "date": 1, "openid": 1 }, PK_RECORDS_KEY_INDEX, true),
                index(
                    doc! { "open_gid": 1, "date": 1, "steps": -1, "reached_at": 1, "openid": 1 },
                    PK_RECORDS_RANKING_INDEX,
                    false,
                ),
            ],
        )
        .await?;
        ensure_ttl(db, pk_retention_days).await?;
        let members = db.collection::<Document>(PK_MEMBERS);
        create(
            &members,
            vec![
                index(doc! { "open_gid": 1, "openid": 1 }, PK_MEMBERS_KEY_INDEX, true),
                index(doc! { "openid": 1, "joined_at": 1 }, PK_MEMBERS_BY_OPENID_INDEX, false),
            ],
        )
        .await
    })
    .await
}

/// The indexes of [`NOTICES`] (see [`ensure_indexes`]).
pub async fn ensure_notice_indexes(db: &Database) -> Result<(), DataError> {
    bounded(INDEX_TIMEOUT, "create notice indexes", async {
        let notices = db.collection::<Document>(NOTICES);
        create(
            &notices,
            vec![
                index(doc! { "state": 1, "_id": -1 }, NOTICES_FEED_INDEX, false),
                index(doc! { "author_openid": 1, "_id": -1 }, NOTICES_BY_AUTHOR_INDEX, false),
            ],
        )
        .await
    })
    .await
}

/// The TTL index on `pk_records.created_at`, created or retuned.
async fn ensure_ttl(db: &Database, retention_days: u32) -> Result<(), DataError> {
    let ttl = Duration::from_secs(u64::from(retention_days.max(1)) * DAY_SECS);
    let model = IndexModel::builder()
        .keys(doc! { "created_at": 1 })
        .options(
            IndexOptions::builder().name(PK_RECORDS_TTL_INDEX.to_owned()).expire_after(ttl).build(),
        )
        .build();
    let records = db.collection::<Document>(PK_RECORDS);
    match records.create_index(model).await {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                error_code(&e),
                Some(INDEX_OPTIONS_CONFLICT | INDEX_KEY_SPECS_CONFLICT)
            ) =>
        {
            // Another retention than before: change the TTL in place.
            let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
            db.run_command(doc! {
                "collMod": PK_RECORDS,
                "index": { "name": PK_RECORDS_TTL_INDEX, "expireAfterSeconds": secs },
            })
            .await
            .map(|_| ())
            .map_err(|e| unavailable("update the pk ttl index", &e))
        }
        Err(e) => Err(unavailable("create the pk ttl index", &e)),
    }
}

/// An index model with a name and maybe `unique`.
fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
    let options =
        IndexOptions::builder().name(name.to_owned()).unique(unique.then_some(true)).build();
    IndexModel::builder().keys(keys).options(options).build()
}

/// `createIndexes` (a no-op for indexes that already exist as specified).
async fn create(
    coll: &mongodb::Collection<Document>,
    models: Vec<IndexModel>,
) -> Result<(), DataError> {
    coll.create_indexes(models).await.map(|_| ()).map_err(|e| unavailable("create indexes", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrapper {
        mongodb: MongoConfig,
    }

    fn parse(toml: &str) -> Result<MongoConfig, String> {
        use figment::Figment;
        use figment::providers::{Format, Toml};
        Figment::from(Toml::string(toml))
            .extract::<Wrapper>()
            .map(|w| w.mongodb)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn config_parses_with_defaults_and_durations() {
        let cfg = parse(
            "[mongodb]\nuri = \"mongodb://u:p@h/\"\nop_timeout = \"500ms\"\nwrite_concern = 1\n",
        )
        .unwrap();
        assert_eq!(cfg.op_timeout, Duration::from_millis(500));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(2));
        assert_eq!(cfg.database, "weapp");
        assert_eq!(cfg.write_concern, WriteConcernSetting::Nodes(1));
        let cfg = parse("[mongodb]\nwrite_concern = \"majority\"\n").unwrap();
        assert_eq!(cfg.write_concern, WriteConcernSetting::Majority);
        let cfg = parse("[mongodb]\nwrite_concern = \"2\"\n").unwrap();
        assert_eq!(cfg.write_concern, WriteConcernSetting::Nodes(2));
        let cfg = parse("[mongodb]\nwrite_concern = \"dcs\"\n").unwrap();
        assert_eq!(cfg.write_concern, WriteConcernSetting::Tag("dcs".into()));
    }

    #[test]
    fn config_rejects_unknown_fields_and_w0() {
        assert!(parse("[mongodb]\nurl = \"x\"\n").is_err());
        assert!(parse("[mongodb]\nwrite_concern = 0\n").is_err());
        assert!(parse("[mongodb]\nwrite_concern = \"0\"\n").is_err());
    }

    #[test]
    fn debug_redacts_the_uri() {
        let cfg = MongoConfig {
            uri: "mongodb://admin:hunter2@db.internal/".into(),
            ..MongoConfig::default()
        };
        let printed = format!("{cfg:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("db.internal"), "{printed}");
    }

    #[test]
    fn scrub_removes_uri_and_credentials() {
        let uri = "mongodb://admin:hunter2@db/";
        let out = scrub("bad mongodb://admin:hunter2@db/ and admin:hunter2", uri);
        assert!(!out.contains("hunter2"), "{out}");
    }

    #[tokio::test]
    async fn connect_is_lazy_and_never_leaks_the_uri() {
        let cfg = MongoConfig {
            uri: "mongodb://admin:hunter2@127.0.0.1:1/?directConnection=true".into(),
            ..MongoConfig::default()
        };
        // Nothing listens on port 1: building the client still succeeds.
        let db = connect(&cfg).await.unwrap();
        assert_eq!(db.name(), "weapp");

        let bad = MongoConfig { uri: "mongodb://admin:hunter2@/".into(), ..MongoConfig::default() };
        let err = connect(&bad).await.unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");

        let bad_db = MongoConfig { database: "a/b".into(), ..MongoConfig::default() };
        assert!(connect(&bad_db).await.is_err());
    }
}
