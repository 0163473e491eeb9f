//! One contract for every `PkStore` backend: each case below runs against the
//! in-memory store and against a real MongoDB-wire-protocol server (its own
//! database per case), and against the board cache over each of them, so the
//! backends cannot drift apart.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use mongodb::Database;
use weapp_gateway::mongo::{PK_MEMBERS, PK_RECORDS};
use weapp_gateway::pk::{
    BoardCacheConfig, CachedPkStore, MemoryPkStore, MongoPkStore, PkStore, StepCheckin, StepRecord,
};

type Store = Arc<dyn PkStore>;

const RETENTION_DAYS: u32 = 7;
const DAY: &str = "2026-03-01";

fn memory_store() -> Store {
    Arc::new(MemoryPkStore::new())
}

async fn mongo_pair(case: &str) -> (Database, MongoPkStore) {
    let db = support::mongo::test_db(case).await;
    let store = MongoPkStore::new(db.clone(), Duration::from_secs(5));
    store.init(RETENTION_DAYS).await.unwrap();
    (db, store)
}

async fn mongo_store(case: &str) -> (Store, Database) {
    let (db, store) = mongo_pair(case).await;
    (Arc::new(store), db)
}

/// `inner` behind the board cache, with a TTL far longer than any case: the
/// cases see only what the cache's own invalidation gives them.
fn cached(inner: impl PkStore) -> Store {
    Arc::new(CachedPkStore::new(
        inner,
        BoardCacheConfig { ttl: Duration::from_secs(60), max_records: 100_000 },
    ))
}

/// `secs` seconds after a fixed instant of this run, one hour ago (whole
/// seconds). The store never derives the day from it, and a recent time keeps
/// MongoDB records clear of the TTL sweep (retention RETENTION_DAYS), which a
/// fixed date in the past would not.
fn t(secs: i64) -> DateTime<Utc> {
    static BASE: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let an_hour_ago = Utc::now().timestamp() - 3_600;
        Utc.timestamp_opt(an_hour_ago, 0).single().expect("a valid time")
    });
    base + chrono::Duration::seconds(secs)
}

fn checkin(gid: &str, date: &str, openid: &str, steps: u64, at: DateTime<Utc>) -> StepCheckin {
    StepCheckin {
        open_gid: gid.to_owned(),
        date: date.to_owned(),
        openid: openid.to_owned(),
        steps,
        nick_name: format!("nick-{openid}"),
        avatar_url: format!("https://wx.qlogo.cn/{openid}.png"),
        at,
    }
}

async fn up(store: &Store, gid: &str, openid: &str, steps: u64, at: DateTime<Utc>) -> StepRecord {
    store.upsert_steps(&checkin(gid, DAY, openid, steps, at)).await.unwrap()
}

fn openids(records: &[StepRecord]) -> Vec<&str> {
    records.iter().map(|r| &*r.openid).collect()
}

// ---- the cases ----------------------------------------------------------

async fn memberships_are_idempotent(store: Store) {
    assert!(!store.is_member("g1", "alice").await.unwrap());
    assert!(store.memberships("alice", 10).await.unwrap().is_empty());

    store.add_membership("g1", "alice").await.unwrap();
    let first = store.memberships("alice", 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].open_gid, "g1");
    assert_eq!(first[0].openid, "alice");

    tokio::time::sleep(Duration::from_millis(5)).await;
    store.add_membership("g1", "alice").await.unwrap();
    assert_eq!(
        store.memberships("alice", 10).await.unwrap(),
        first,
        "joining again changes nothing (joined_at stays the first time)"
    );

    store.add_membership("g2", "alice").await.unwrap();
    store.add_membership("g1", "bob").await.unwrap();
    assert!(store.is_member("g1", "alice").await.unwrap());
    assert!(store.is_member("g2", "alice").await.unwrap());
    assert!(store.is_member("g1", "bob").await.unwrap());
    assert!(!store.is_member("g2", "bob").await.unwrap());
    assert!(!store.is_member("g3", "alice").await.unwrap());

    let mut groups: Vec<String> =
        store.memberships("alice", 10).await.unwrap().into_iter().map(|m| m.open_gid).collect();
    groups.sort();
    assert_eq!(groups, ["g1", "g2"]);
    let bobs = store.memberships("bob", 10).await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].open_gid, "g1");
}

async fn memberships_are_the_newest_joins_first(store: Store) {
    for gid in ["g-old", "g-mid", "g-new"] {
        store.add_membership(gid, "alice").await.unwrap();
        // Joins a millisecond apart at least (times are kept to the ms).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.add_membership("g-other", "bob").await.unwrap();
    let gids = |ms: Vec<weapp_gateway::pk::Membership>| -> Vec<String> {
        ms.into_iter().map(|m| m.open_gid).collect()
    };
    assert_eq!(gids(store.memberships("alice", 10).await.unwrap()), ["g-new", "g-mid", "g-old"]);
    assert_eq!(gids(store.memberships("alice", 2).await.unwrap()), ["g-new", "g-mid"]);
    assert!(store.memberships("alice", 0).await.unwrap().is_empty());
    // Joining an old group again does not make it new.
    store.add_membership("g-old", "alice").await.unwrap();
    assert_eq!(gids(store.memberships("alice", 1).await.unwrap()), ["g-new"]);
}

async fn concurrent_joins_all_succeed(store: Store) {
    let joins = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.add_membership("g-race", "carol").await })
    });
    for join in joins.collect::<Vec<_>>() {
        join.await.unwrap().unwrap();
    }
    assert_eq!(store.memberships("carol", 10).await.unwrap().len(), 1);
}

async fn upsert_creates_a_record(store: Store) {
    let c = checkin("g1", DAY, "alice", 1234, t(0));
    let rec = store.upsert_steps(&c).await.unwrap();
    let expected = StepRecord {
        open_gid: "g1".into(),
        date: DAY.into(),
        openid: "alice".into(),
        steps: 1234,
        nick_name: "nick-alice".into(),
        avatar_url: "https://wx.qlogo.cn/alice.png".into(),
        reached_at: t(0),
        updated_at: t(0),
    };
    assert_eq!(rec, expected);
    assert_eq!(store.participants("g1", DAY).await.unwrap(), 1);
    assert_eq!(store.ranking("g1", DAY, 10).await.unwrap(), vec![expected.clone()]);
    assert_eq!(store.rank_of("g1", DAY, "alice").await.unwrap(), Some((1, expected)));
}

async fn times_are_kept_to_the_millisecond(store: Store) {
    let at = t(0) + chrono::Duration::nanoseconds(123_456_789);
    let rec = up(&store, "g1", "alice", 10, at).await;
    let expected = t(0) + chrono::Duration::milliseconds(123);
    assert_eq!(rec.reached_at, expected);
    assert_eq!(rec.updated_at, expected);
    let stored = store.ranking("g1", DAY, 1).await.unwrap();
    assert_eq!(stored[0].reached_at, expected);
}

async fn higher_steps_raise_and_move_reached_at(store: Store) {
    up(&store, "g1", "alice", 100, t(0)).await;
    let mut c = checkin("g1", DAY, "alice", 500, t(60));
    c.nick_name = "Alice 2".into();
    c.avatar_url = "https://wx.qlogo.cn/alice2.png".into();
    let rec = store.upsert_steps(&c).await.unwrap();
    assert_eq!(rec.steps, 500);
    assert_eq!(rec.reached_at, t(60));
    assert_eq!(rec.updated_at, t(60));
    assert_eq!(&*rec.nick_name, "Alice 2");
    assert_eq!(&*rec.avatar_url, "https://wx.qlogo.cn/alice2.png");
    assert_eq!(store.ranking("g1", DAY, 10).await.unwrap(), vec![rec]);
    assert_eq!(store.participants("g1", DAY).await.unwrap(), 1);
}

async fn lower_or_equal_steps_keep_steps_and_reached_at(store: Store) {
    up(&store, "g1", "alice", 500, t(0)).await;

    let mut lower = checkin("g1", DAY, "alice", 300, t(60));
    lower.nick_name = "Alice renamed".into();
    let rec = store.upsert_steps(&lower).await.unwrap();
    assert_eq!(rec.steps, 500, "steps never go down within a day");
    assert_eq!(rec.reached_at, t(0));
    assert_eq!(rec.updated_at, t(60), "the check-in itself is recorded");
    assert_eq!(&*rec.nick_name, "Alice renamed", "the profile is refreshed");

    let equal = store.upsert_steps(&checkin("g1", DAY, "alice", 500, t(120))).await.unwrap();
    assert_eq!(equal.steps, 500);
    assert_eq!(equal.reached_at, t(0), "reaching the same count again is not a new record");
    assert_eq!(equal.updated_at, t(120));
    assert_eq!(&*equal.nick_name, "nick-alice");

    assert_eq!(store.ranking("g1", DAY, 10).await.unwrap(), vec![equal]);
}

/// The ties of [`ranking_orders_by_steps_then_reached_at_then_openid`]: the
/// first to reach 500 ("zoe") sorts *last* by openid, so only `reached_at`
/// can put her ahead of "adam" and "carl"; those two tie on both steps and
/// time, so the openid decides between them.
async fn tied_day(store: &Store) {
    up(store, "g1", "dave", 300, t(10)).await;
    up(store, "g1", "erin", 900, t(50)).await;
    up(store, "g1", "carl", 500, t(30)).await;
    up(store, "g1", "zoe", 500, t(20)).await; // reached 500 first
    up(store, "g1", "adam", 500, t(30)).await; // with carl, after zoe
}

async fn ranking_orders_by_steps_then_reached_at_then_openid(store: Store) {
    tied_day(&store).await;
    let ranking = store.ranking("g1", DAY, 10).await.unwrap();
    assert_eq!(openids(&ranking), ["erin", "zoe", "adam", "carl", "dave"]);

    let top = store.ranking("g1", DAY, 2).await.unwrap();
    assert_eq!(openids(&top), ["erin", "zoe"]);
    assert!(store.ranking("g1", DAY, 0).await.unwrap().is_empty());
    assert!(store.ranking("g-none", DAY, 10).await.unwrap().is_empty());

    // Zoe improves: she overtakes erin and her tie with adam and carl is over.
    up(&store, "g1", "zoe", 1000, t(100)).await;
    let ranking = store.ranking("g1", DAY, 10).await.unwrap();
    assert_eq!(openids(&ranking), ["zoe", "erin", "adam", "carl", "dave"]);

    // Adam catches up with zoe's new count later than she reached it.
    up(&store, "g1", "adam", 1000, t(200)).await;
    let ranking = store.ranking("g1", DAY, 10).await.unwrap();
    assert_eq!(openids(&ranking), ["zoe", "adam", "erin", "carl", "dave"]);
}

async fn groups_and_dates_are_isolated(store: Store) {
    up(&store, "g1", "alice", 100, t(0)).await;
    up(&store, "g2", "alice", 200, t(0)).await;
    up(&store, "g2", "bob", 50, t(0)).await;
    store.upsert_steps(&checkin("g1", "2026-03-02", "alice", 7, t(0))).await.unwrap();

    assert_eq!(store.participants("g1", DAY).await.unwrap(), 1);
    assert_eq!(store.participants("g2", DAY).await.unwrap(), 2);
    assert_eq!(store.participants("g1", "2026-03-02").await.unwrap(), 1);
    assert_eq!(store.participants("g3", DAY).await.unwrap(), 0);

    let g1 = store.ranking("g1", DAY, 10).await.unwrap();
    assert_eq!(g1.len(), 1);
    assert_eq!(g1[0].steps, 100);
    let g2 = store.ranking("g2", DAY, 10).await.unwrap();
    assert_eq!(openids(&g2), ["alice", "bob"]);
    assert_eq!(g2[0].steps, 200);
    let next_day = store.ranking("g1", "2026-03-02", 10).await.unwrap();
    assert_eq!(next_day[0].steps, 7, "a new day starts from scratch");

    // Lower steps in one group do not touch the other group's record.
    up(&store, "g1", "alice", 150, t(5)).await;
    assert_eq!(store.rank_of("g2", DAY, "alice").await.unwrap().unwrap().1.steps, 200);
    assert!(store.rank_of("g1", DAY, "bob").await.unwrap().is_none());
    assert!(store.rank_of("g1", "2026-03-03", "alice").await.unwrap().is_none());
}

async fn rank_of_and_participants_agree_with_the_ranking(store: Store) {
    tied_day(&store).await;
    assert_eq!(store.participants("g1", DAY).await.unwrap(), 5);
    // Spelled out, not only compared with `ranking`: both could ignore reached_at.
    for (who, want) in [("erin", 1), ("zoe", 2), ("adam", 3), ("carl", 4), ("dave", 5)] {
        let (rank, _) = store.rank_of("g1", DAY, who).await.unwrap().unwrap();
        assert_eq!(rank, want, "rank of {who}");
    }
    let ranking = store.ranking("g1", DAY, 10).await.unwrap();
    for (i, rec) in ranking.iter().enumerate() {
        let (rank, mine) = store.rank_of("g1", DAY, &rec.openid).await.unwrap().unwrap();
        assert_eq!(rank, i as u64 + 1, "rank of {}", rec.openid);
        assert_eq!(&mine, rec);
    }
    assert!(store.rank_of("g1", DAY, "nobody").await.unwrap().is_none());
}

async fn standings_are_the_whole_ranking_in_order(store: Store) {
    assert!(store.standings("g1", DAY).await.unwrap().is_empty());
    // Names in reverse order of arrival: each tie goes to the later name.
    for (i, who) in ["f", "e", "d", "c", "b", "a"].iter().enumerate() {
        up(&store, "g1", who, 100 * (i as u64 % 3), t(i as i64)).await;
    }
    up(&store, "g2", "z", 1_000, t(0)).await;
    let all = store.standings("g1", DAY).await.unwrap();
    assert_eq!(openids(&all), ["d", "a", "e", "b", "f", "c"]);
    assert_eq!(all, store.ranking("g1", DAY, 100).await.unwrap());
    up(&store, "g1", "c", 250, t(9)).await;
    let all = store.standings("g1", DAY).await.unwrap();
    assert_eq!(openids(&all), ["c", "d", "a", "e", "b", "f"], "a write is seen by the next read");
}

async fn a_large_day_is_decoded_and_indexed_whole(store: Store) {
    // More records than the size from which decoding and board indexing
    // leave the async workers (512): the result must be the same.
    let n: u64 = 520;
    for batch in (0..n).collect::<Vec<_>>().chunks(10) {
        let writes = batch.iter().map(|&i| {
            let store = store.clone();
            async move { up(&store, "g-big", &format!("u{i:03}"), i % 50, t(i as i64)).await }
        });
        futures_util::future::join_all(writes).await;
    }
    let all = store.standings("g-big", DAY).await.unwrap();
    assert_eq!(all.len() as u64, n);
    // Steps descending; within equal steps, who reached them first.
    assert!(all.windows(2).all(|w| (w[0].steps, w[1].reached_at) >= (w[1].steps, w[0].reached_at)));
    assert_eq!(&*all[0].openid, "u049");
    let (rank, record) = store.rank_of("g-big", DAY, "u000").await.unwrap().expect("ranked");
    // 11 users have 0 steps (i % 50 == 0, i < 520); u000 reached 0 first.
    assert_eq!((rank, record.steps), (n - 10, 0));
}

async fn concurrent_upserts_of_one_key_all_succeed(store: Store) {
    // Steps 1..=20 in a scrambled order, each with its own time.
    let steps: Vec<u64> = (0..20u64).map(|i| (i * 7) % 20 + 1).collect();
    let tasks: Vec<_> = steps
        .iter()
        .map(|&s| {
            let store = store.clone();
            let c = checkin("g-race", DAY, "alice", s, t(s as i64));
            tokio::spawn(async move { store.upsert_steps(&c).await })
        })
        .collect();
    for task in tasks {
        let rec = task.await.unwrap().expect("concurrent upserts never fail");
        assert_eq!(&*rec.openid, "alice");
    }
    let ranking = store.ranking("g-race", DAY, 10).await.unwrap();
    assert_eq!(ranking.len(), 1, "one record per key");
    assert_eq!(ranking[0].steps, 20);
    assert_eq!(ranking[0].reached_at, t(20));
    assert_eq!(ranking[0].updated_at, t(20), "updated_at is the latest check-in");
}

async fn ping_answers(store: Store) {
    store.ping().await.unwrap();
}

// ---- every case against every backend -----------------------------------

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::memory_store()).await;
                }
            )*
        }

        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, db) = super::mongo_store(stringify!($case)).await;
                    super::$case(store).await;
                    db.drop().await.unwrap();
                }
            )*
        }

        /// The board cache over MongoDB: one instance sees its own writes.
        mod cached_mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let case = concat!("c_", stringify!($case));
                    let (db, mongo) = super::mongo_pair(case).await;
                    super::$case(super::cached(mongo)).await;
                    db.drop().await.unwrap();
                }
            )*
        }

        mod cached_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::cached(weapp_gateway::pk::MemoryPkStore::new())).await;
                }
            )*
        }
    };
}

contract!(
    memberships_are_idempotent,
    memberships_are_the_newest_joins_first,
    concurrent_joins_all_succeed,
    upsert_creates_a_record,
    times_are_kept_to_the_millisecond,
    higher_steps_raise_and_move_reached_at,
    lower_or_equal_steps_keep_steps_and_reached_at,
    ranking_orders_by_steps_then_reached_at_then_openid,
    groups_and_dates_are_isolated,
    rank_of_and_participants_agree_with_the_ranking,
    standings_are_the_whole_ranking_in_order,
    a_large_day_is_decoded_and_indexed_whole,
    concurrent_upserts_of_one_key_all_succeed,
    ping_answers,
);

// ---- MongoDB only ---------------------------------------------------------

/// Index name → (keys, unique, TTL) as the server reports them.
async fn indexes(db: &Database, coll: &str) -> Vec<mongodb::IndexModel> {
    use futures_util::TryStreamExt;
    db.collection::<mongodb::bson::Document>(coll)
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn named<'a>(models: &'a [mongodb::IndexModel], name: &str) -> &'a mongodb::IndexModel {
    models
        .iter()
        .find(|m| m.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name))
        .unwrap_or_else(|| panic!("no index {name}"))
}

#[tokio::test]
async fn mongo_init_creates_the_indexes_and_retunes_the_ttl() {
    use mongodb::bson::doc;
    let (store, db) = mongo_store("pk_indexes").await;
    drop(store);

    let names =
        db.collection::<mongodb::bson::Document>(PK_RECORDS).list_index_names().await.unwrap();
    for name in ["pk_records_key", "pk_records_ranking", "pk_records_ttl"] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }

    let records = indexes(&db, PK_RECORDS).await;
    let key = named(&records, "pk_records_key");
    assert_eq!(key.keys, doc! { "open_gid": 1, "date": 1, "openid": 1 });
    assert_eq!(key.options.as_ref().unwrap().unique, Some(true));
    let ranking = named(&records, "pk_records_ranking");
    assert_eq!(
        ranking.keys,
        doc! { "open_gid": 1, "date": 1, "steps": -1, "reached_at": 1, "openid": 1 }
    );
    let ttl = named(&records, "pk_records_ttl");
    assert_eq!(ttl.keys, doc! { "created_at": 1 });
    assert_eq!(
        ttl.options.as_ref().unwrap().expire_after,
        Some(Duration::from_secs(u64::from(RETENTION_DAYS) * 86_400))
    );

    let members = indexes(&db, PK_MEMBERS).await;
    let key = named(&members, "pk_members_key");
    assert_eq!(key.keys, doc! { "open_gid": 1, "openid": 1 });
    assert_eq!(key.options.as_ref().unwrap().unique, Some(true));
    named(&members, "pk_members_by_openid");

    // Idempotent, and a new retention changes the TTL in place.
    let again = MongoPkStore::new(db.clone(), Duration::from_secs(5));
    again.init(RETENTION_DAYS).await.unwrap();
    again.init(30).await.unwrap();
    let records = indexes(&db, PK_RECORDS).await;
    assert_eq!(
        named(&records, "pk_records_ttl").options.as_ref().unwrap().expire_after,
        Some(Duration::from_secs(30 * 86_400))
    );
    db.drop().await.unwrap();
}

#[tokio::test]
async fn mongo_records_carry_the_ttl_field() {
    use mongodb::bson::doc;
    let (store, db) = mongo_store("pk_ttl_field").await;
    up(&store, "g1", "alice", 10, t(0)).await;
    up(&store, "g1", "alice", 20, t(60)).await;
    let raw = db
        .collection::<mongodb::bson::Document>(PK_RECORDS)
        .find_one(doc! { "openid": "alice" })
        .await
        .unwrap()
        .unwrap();
    let created = raw.get_datetime("created_at").unwrap();
    assert_eq!(
        created.timestamp_millis(),
        t(0).timestamp_millis(),
        "created_at is the first check-in and never moves"
    );
    assert!(raw.get_i64("steps").is_ok(), "steps are int64");
    db.drop().await.unwrap();
}

// ---- memory only ----------------------------------------------------------

#[tokio::test]
async fn the_memory_store_refuses_new_records_and_memberships_past_its_capacity() {
    use weapp_gateway::data::DataError;
    // Records and memberships share one capacity.
    let store: Store = Arc::new(MemoryPkStore::with_capacity(4));
    store.add_membership("G1", "alice").await.unwrap();
    up(&store, "G1", "alice", 10, t(0)).await;
    store.add_membership("G1", "bob").await.unwrap();
    up(&store, "G1", "bob", 20, t(1)).await;
    let full = store.add_membership("G1", "carol").await;
    assert!(matches!(full, Err(DataError::Full(_))), "{full:?}");
    let full = store.upsert_steps(&checkin("G1", DAY, "carol", 30, t(2))).await;
    assert!(matches!(full, Err(DataError::Full(_))), "{full:?}");
    let full = store.upsert_steps(&checkin("G1", "2026-03-02", "alice", 30, t(2))).await;
    assert!(matches!(full, Err(DataError::Full(_))), "a new day is a new record: {full:?}");
    // What is already there still changes: a re-join, a higher count.
    store.add_membership("G1", "alice").await.unwrap();
    assert_eq!(up(&store, "G1", "alice", 25, t(3)).await.steps, 25);
    assert!(!store.is_member("G1", "carol").await.unwrap());
    assert_eq!(openids(&store.ranking("G1", DAY, 10).await.unwrap()), ["alice", "bob"]);
    assert_eq!(store.participants("G1", "2026-03-02").await.unwrap(), 0);
}
