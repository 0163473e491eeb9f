//! One contract for every `NoticeStore` backend: each case below runs against
//! the in-memory store and against a real MongoDB-wire-protocol server (its
//! own database per case), and against the feed-head cache over each of them,
//! so the backends cannot drift apart.

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use mongodb::Database;
use weapp_gateway::mongo::NOTICES;
use weapp_gateway::notices::{
    AuthorChange, CachedNoticeStore, MemoryNoticeStore, MongoNoticeStore, NewNotice, Notice,
    NoticePatch, NoticeState, NoticeStore, Visibility,
};

type Store = Arc<dyn NoticeStore>;

fn memory_store() -> Store {
    Arc::new(MemoryNoticeStore::new())
}

async fn mongo_pair(case: &str) -> (Database, MongoNoticeStore) {
    let db = support::mongo::test_db(case).await;
    let store = MongoNoticeStore::new(db.clone(), Duration::from_secs(5));
    store.init().await.unwrap();
    (db, store)
}

async fn mongo_store(case: &str) -> (Store, Database) {
    let (db, store) = mongo_pair(case).await;
    (Arc::new(store), db)
}

/// `inner` behind the feed-head cache, with a TTL far longer than any case:
/// the cases see only what the cache's own invalidation gives them.
fn cached(inner: impl NoticeStore, head: u32) -> Store {
    Arc::new(CachedNoticeStore::new(inner, Duration::from_secs(60), head))
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn new_notice(author: &str, content: &str, visibility: Visibility) -> NewNotice {
    NewNotice {
        author_openid: author.to_owned(),
        author_nick_name: format!("nick-{author}"),
        author_avatar_url: format!("https://wx.qlogo.cn/{author}.png"),
        content: content.to_owned(),
        photos: vec![format!("https://img.example.com/{content}.jpg")],
        visibility,
        created_at: t(0),
    }
}

async fn post(store: &Store, author: &str, content: &str, visibility: Visibility) -> Notice {
    store.insert(new_notice(author, content, visibility)).await.unwrap()
}

fn contents(notices: &[Notice]) -> Vec<&str> {
    notices.iter().map(|n| n.content.as_str()).collect()
}

/// A well-formed ObjectId that no store ever handed out.
const ABSENT_ID: &str = "000000000000000000000000";

// ---- the cases ----------------------------------------------------------

async fn insert_then_get_roundtrips(store: Store) {
    let mut new = new_notice("alice", "hello", Visibility::Public);
    new.photos =
        vec!["https://img.example.com/1.jpg".into(), "https://img.example.com/2.jpg".into()];
    new.created_at = t(0) + chrono::Duration::nanoseconds(987_654_321);
    let stored = store.insert(new.clone()).await.unwrap();
    assert_eq!(stored.id.len(), 24);
    assert!(stored.id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(stored.author_openid, "alice");
    assert_eq!(stored.author_nick_name, "nick-alice");
    assert_eq!(stored.author_avatar_url, "https://wx.qlogo.cn/alice.png");
    assert_eq!(stored.content, "hello");
    assert_eq!(stored.photos, new.photos);
    assert_eq!(stored.visibility, Visibility::Public);
    assert!(!stored.banned);
    assert_eq!(stored.state, NoticeState::Public);
    let millis = t(0) + chrono::Duration::milliseconds(987);
    assert_eq!(stored.created_at, millis, "times are kept to the millisecond");
    assert_eq!(stored.updated_at, millis);
    assert_eq!(store.get(&stored.id).await.unwrap(), Some(stored.clone()));

    let private = post(&store, "alice", "secret", Visibility::Private).await;
    assert_eq!(private.state, NoticeState::Private);
    assert_ne!(private.id, stored.id);
    assert!(private.id > stored.id, "later notices have greater ids");
    assert_eq!(store.get(&private.id).await.unwrap(), Some(private));
}

async fn invalid_or_absent_ids_find_nothing(store: Store) {
    let real = post(&store, "alice", "real", Visibility::Public).await;
    let patch = NoticePatch { content: Some("x".into()), visibility: None };
    for id in ["", "nope", "zzzzzzzzzzzzzzzzzzzzzzzz", "0123456789abcdef0123456", ABSENT_ID] {
        assert_eq!(store.get(id).await.unwrap(), None, "get {id:?}");
        assert_eq!(
            store.update(id, "alice", &patch).await.unwrap(),
            AuthorChange::NotFound,
            "update {id:?}"
        );
        assert_eq!(
            store.delete(id, "alice").await.unwrap(),
            AuthorChange::NotFound,
            "delete {id:?}"
        );
        assert_eq!(store.set_banned(id, true).await.unwrap(), None, "ban {id:?}");
    }
    assert!(store.feed(Some("garbage"), 10).await.unwrap().is_empty());
    assert!(store.by_author("alice", Some("garbage"), 10).await.unwrap().is_empty());
    assert!(store.feed(Some(ABSENT_ID), 10).await.unwrap().is_empty(), "nothing is older");
    assert_eq!(store.get(&real.id).await.unwrap(), Some(real), "nothing was touched");
}

async fn feed_shows_public_unbanned_newest_first(store: Store) {
    let a = post(&store, "alice", "a", Visibility::Public).await;
    post(&store, "alice", "b-private", Visibility::Private).await;
    let c = post(&store, "bob", "c", Visibility::Public).await;
    post(&store, "bob", "d-banned", Visibility::Public).await;
    let e = post(&store, "carol", "e", Visibility::Public).await;
    let banned = store.feed(None, 10).await.unwrap()[1].clone();
    assert_eq!(banned.content, "d-banned");
    store.set_banned(&banned.id, true).await.unwrap().unwrap();

    let feed = store.feed(None, 10).await.unwrap();
    assert_eq!(contents(&feed), ["e", "c", "a"]);
    assert_eq!(feed, vec![e, c, a]);
    assert!(feed.iter().all(|n| n.state == NoticeState::Public));
    assert!(store.feed(None, 0).await.unwrap().is_empty());
    assert_eq!(contents(&store.feed(None, 2).await.unwrap()), ["e", "c"]);
}

async fn keyset_pages_are_stable_while_notices_arrive(store: Store) {
    let mut posted = Vec::new();
    for i in 0..7 {
        posted.push(post(&store, "alice", &format!("old-{i}"), Visibility::Public).await);
        post(&store, "bob", &format!("hidden-{i}"), Visibility::Private).await;
    }
    let expected: Vec<String> = posted.iter().rev().map(|n| n.id.clone()).collect();

    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    let mut round = 0;
    loop {
        let page = store.feed(before.as_deref(), 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|n| n.id.clone()));
        before = page.last().map(|n| n.id.clone());
        // New notices arrive between page fetches: they must not shift pages.
        post(&store, "carol", &format!("new-{round}"), Visibility::Public).await;
        round += 1;
        assert!(round < 10, "pagination does not end");
    }
    assert_eq!(seen, expected, "no duplicates, no gaps, newest first");
    assert_eq!(round, 3, "pages of 3, 3, 1, then the empty one");

    let everything = store.feed(None, 100).await.unwrap();
    assert_eq!(everything.len(), 7 + round);
    let unique: HashSet<&str> = everything.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(unique.len(), everything.len());
    assert!(everything.windows(2).all(|w| w[0].id > w[1].id), "strictly newest first");
}

async fn feed_offset_pages_the_public_feed(store: Store) {
    for i in 0..5 {
        post(&store, "alice", &format!("p{i}"), Visibility::Public).await;
        post(&store, "alice", &format!("q{i}"), Visibility::Private).await;
    }
    assert_eq!(contents(&store.feed_offset(0, 2).await.unwrap()), ["p4", "p3"]);
    assert_eq!(contents(&store.feed_offset(2, 2).await.unwrap()), ["p2", "p1"]);
    assert_eq!(contents(&store.feed_offset(4, 2).await.unwrap()), ["p0"]);
    assert!(store.feed_offset(5, 2).await.unwrap().is_empty());
    assert!(store.feed_offset(u64::MAX, 2).await.unwrap().is_empty());
    assert!(store.feed_offset(0, 0).await.unwrap().is_empty());
    assert_eq!(store.feed_offset(0, 100).await.unwrap(), store.feed(None, 100).await.unwrap());
}

async fn by_author_lists_every_state(store: Store) {
    post(&store, "alice", "a-public", Visibility::Public).await;
    post(&store, "bob", "b-public", Visibility::Public).await;
    post(&store, "alice", "a-private", Visibility::Private).await;
    let to_ban = post(&store, "alice", "a-banned", Visibility::Public).await;
    post(&store, "bob", "b-private", Visibility::Private).await;
    store.set_banned(&to_ban.id, true).await.unwrap().unwrap();

    let mine = store.by_author("alice", None, 10).await.unwrap();
    assert_eq!(contents(&mine), ["a-banned", "a-private", "a-public"]);
    assert_eq!(
        mine.iter().map(|n| n.state).collect::<Vec<_>>(),
        [NoticeState::Banned, NoticeState::Private, NoticeState::Public]
    );
    assert!(mine.iter().all(|n| n.author_openid == "alice"));

    let first = store.by_author("alice", None, 2).await.unwrap();
    assert_eq!(contents(&first), ["a-banned", "a-private"]);
    let rest = store.by_author("alice", Some(&first[1].id), 2).await.unwrap();
    assert_eq!(contents(&rest), ["a-public"]);
    assert!(store.by_author("nobody", None, 10).await.unwrap().is_empty());
    assert!(store.by_author("alice", None, 0).await.unwrap().is_empty());
}

async fn only_the_author_updates(store: Store) {
    let original = post(&store, "alice", "draft", Visibility::Public).await;
    let patch = NoticePatch { content: Some("final".into()), visibility: None };
    assert_eq!(store.update(&original.id, "bob", &patch).await.unwrap(), AuthorChange::NotAuthor);
    assert_eq!(store.get(&original.id).await.unwrap(), Some(original.clone()));

    let AuthorChange::Done(updated) = store.update(&original.id, "alice", &patch).await.unwrap()
    else {
        panic!("the author may update");
    };
    assert_eq!(updated.content, "final");
    assert_eq!(updated.state, NoticeState::Public);
    assert_eq!(updated.created_at, original.created_at);
    assert!(updated.updated_at >= original.updated_at);
    assert_eq!(store.get(&original.id).await.unwrap(), Some(updated.clone()));

    // Going private leaves the feed; going public again comes back.
    let hide = NoticePatch { content: None, visibility: Some(Visibility::Private) };
    let AuthorChange::Done(hidden) = store.update(&original.id, "alice", &hide).await.unwrap()
    else {
        panic!("the author may hide");
    };
    assert_eq!(hidden.visibility, Visibility::Private);
    assert_eq!(hidden.state, NoticeState::Private);
    assert_eq!(hidden.content, "final");
    assert!(store.feed(None, 10).await.unwrap().is_empty());
    let show = NoticePatch { content: Some("shown".into()), visibility: Some(Visibility::Public) };
    let AuthorChange::Done(shown) = store.update(&original.id, "alice", &show).await.unwrap()
    else {
        panic!("the author may show");
    };
    assert_eq!((shown.state, shown.content.as_str()), (NoticeState::Public, "shown"));
    assert_eq!(store.feed(None, 10).await.unwrap(), vec![shown]);

    // An empty patch changes nothing but is allowed.
    let same = store.update(&original.id, "alice", &NoticePatch::default()).await.unwrap();
    assert!(matches!(same, AuthorChange::Done(n) if n.content == "shown"));

    store.delete(&original.id, "alice").await.unwrap();
    assert_eq!(store.update(&original.id, "alice", &patch).await.unwrap(), AuthorChange::NotFound);
}

async fn only_the_author_deletes(store: Store) {
    let notice = post(&store, "alice", "bye", Visibility::Public).await;
    let other = post(&store, "alice", "stays", Visibility::Public).await;
    assert_eq!(store.delete(&notice.id, "bob").await.unwrap(), AuthorChange::NotAuthor);
    assert!(store.get(&notice.id).await.unwrap().is_some());

    assert_eq!(store.delete(&notice.id, "alice").await.unwrap(), AuthorChange::Done(()));
    assert_eq!(store.get(&notice.id).await.unwrap(), None);
    assert_eq!(store.delete(&notice.id, "alice").await.unwrap(), AuthorChange::NotFound);
    assert_eq!(store.delete(&notice.id, "bob").await.unwrap(), AuthorChange::NotFound);
    assert_eq!(store.feed(None, 10).await.unwrap(), vec![other.clone()]);
    assert_eq!(store.by_author("alice", None, 10).await.unwrap(), vec![other]);
}

async fn banning_hides_and_unbanning_restores_the_visibility(store: Store) {
    let public = post(&store, "alice", "loud", Visibility::Public).await;
    let private = post(&store, "alice", "quiet", Visibility::Private).await;

    let banned = store.set_banned(&public.id, true).await.unwrap().unwrap();
    assert!(banned.banned);
    assert_eq!(banned.state, NoticeState::Banned);
    assert_eq!(banned.visibility, Visibility::Public);
    assert_eq!(banned.content, "loud");
    assert_eq!(store.get(&public.id).await.unwrap(), Some(banned.clone()));
    assert!(store.feed(None, 10).await.unwrap().is_empty());
    assert!(store.feed_offset(0, 10).await.unwrap().is_empty());
    // Banning twice is harmless.
    assert_eq!(store.set_banned(&public.id, true).await.unwrap(), Some(banned));

    // The author changes visibility while banned: still banned.
    let hide = NoticePatch { content: None, visibility: Some(Visibility::Private) };
    let AuthorChange::Done(still) = store.update(&public.id, "alice", &hide).await.unwrap() else {
        panic!("the author may edit a banned notice");
    };
    assert_eq!((still.visibility, still.state), (Visibility::Private, NoticeState::Banned));
    let show = NoticePatch { content: None, visibility: Some(Visibility::Public) };
    store.update(&public.id, "alice", &show).await.unwrap();

    // Unbanning restores the state of the visibility.
    let restored = store.set_banned(&public.id, false).await.unwrap().unwrap();
    assert!(!restored.banned);
    assert_eq!(restored.state, NoticeState::Public);
    assert_eq!(store.feed(None, 10).await.unwrap(), vec![restored]);

    store.set_banned(&private.id, true).await.unwrap().unwrap();
    let unbanned = store.set_banned(&private.id, false).await.unwrap().unwrap();
    assert_eq!(unbanned.state, NoticeState::Private);
    assert_eq!(contents(&store.feed(None, 10).await.unwrap()), ["loud"]);
}

async fn ping_answers(store: Store) {
    store.ping().await.unwrap();
}

// ---- every case against every backend -----------------------------------

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::memory_store()).await;
                }
            )*
        }

        mod mongo {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, db) = super::mongo_store(stringify!($case)).await;
                    super::$case(store).await;
                    db.drop().await.unwrap();
                }
            )*
        }

        /// The feed-head cache over MongoDB, with the gateway's head of 50.
        mod cached_mongo {
            $(
                #[tokio::test]
                async fn $case() {
                    let case = concat!("c_", stringify!($case));
                    let (db, mongo) = super::mongo_pair(case).await;
                    super::$case(super::cached(mongo, 50)).await;
                    db.drop().await.unwrap();
                }
            )*
        }

        /// A head of 4: pages past it go to the store, pages in it do not.
        mod cached_memory {
            $(
                #[tokio::test]
                async fn $case() {
                    let store = weapp_gateway::notices::MemoryNoticeStore::new();
                    super::$case(super::cached(store, 4)).await;
                }
            )*
        }
    };
}

async fn count_by_author_since_counts_the_authors_notices_from_then_on(store: Store) {
    for (author, secs) in [("alice", -1), ("alice", 0), ("alice", 30), ("bob", 10), ("alice", 3600)]
    {
        let mut new = new_notice(author, &format!("{author}{secs}"), Visibility::Public);
        new.created_at = t(secs);
        store.insert(new).await.unwrap();
    }
    let mut private = new_notice("alice", "private", Visibility::Private);
    private.created_at = t(40);
    let private = store.insert(private).await.unwrap();
    assert_eq!(store.count_by_author_since("alice", t(0)).await.unwrap(), 4, "every state counts");
    assert_eq!(store.count_by_author_since("alice", t(-1)).await.unwrap(), 5);
    assert_eq!(store.count_by_author_since("alice", t(31)).await.unwrap(), 2);
    assert_eq!(store.count_by_author_since("alice", t(3601)).await.unwrap(), 0);
    assert_eq!(store.count_by_author_since("bob", t(0)).await.unwrap(), 1);
    assert_eq!(store.count_by_author_since("carol", t(-100)).await.unwrap(), 0);
    // Sub-millisecond parts are cut as the stored times are.
    let since = t(30) + chrono::Duration::nanoseconds(500_000);
    assert_eq!(store.count_by_author_since("alice", since).await.unwrap(), 3);
    assert!(matches!(store.delete(&private.id, "alice").await.unwrap(), AuthorChange::Done(())));
    assert_eq!(store.count_by_author_since("alice", t(0)).await.unwrap(), 3);
}

contract!(
    count_by_author_since_counts_the_authors_notices_from_then_on,
    insert_then_get_roundtrips,
    invalid_or_absent_ids_find_nothing,
    feed_shows_public_unbanned_newest_first,
    keyset_pages_are_stable_while_notices_arrive,
    feed_offset_pages_the_public_feed,
    by_author_lists_every_state,
    only_the_author_updates,
    only_the_author_deletes,
    banning_hides_and_unbanning_restores_the_visibility,
    ping_answers,
);

// ---- MongoDB only ---------------------------------------------------------

#[tokio::test]
async fn mongo_init_creates_the_notice_indexes() {
    use futures_util::TryStreamExt;
    use mongodb::bson::{Document, doc};

    let (store, db) = mongo_store("notice_indexes").await;
    drop(store);
    let again = MongoNoticeStore::new(db.clone(), Duration::from_secs(5));
    again.init().await.unwrap();

    let notices = db.collection::<Document>(NOTICES);
    let names = notices.list_index_names().await.unwrap();
    for name in ["notices_feed", "notices_by_author"] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }
    let models: Vec<mongodb::IndexModel> =
        notices.list_indexes().await.unwrap().try_collect().await.unwrap();
    let keys_of = |name: &str| {
        models
            .iter()
            .find(|m| m.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name))
            .map(|m| m.keys.clone())
    };
    assert_eq!(keys_of("notices_feed"), Some(doc! { "state": 1, "_id": -1 }));
    assert_eq!(keys_of("notices_by_author"), Some(doc! { "author_openid": 1, "_id": -1 }));
    db.drop().await.unwrap();
}

#[tokio::test]
async fn mongo_stores_ids_as_object_ids_and_rejects_corrupt_documents() {
    use mongodb::bson::{Document, doc, oid::ObjectId};
    use weapp_gateway::data::DataError;

    let (store, db) = mongo_store("notice_docs").await;
    let notice = post(&store, "alice", "typed", Visibility::Public).await;
    let notices = db.collection::<Document>(NOTICES);
    let raw = notices
        .find_one(doc! { "_id": ObjectId::parse_str(&notice.id).unwrap() })
        .await
        .unwrap()
        .expect("stored under an ObjectId _id");
    assert_eq!(raw.get_str("state").unwrap(), "public");
    assert!(raw.get_datetime("created_at").is_ok());

    // Something this crate did not write: Corrupt, not a panic.
    let id = ObjectId::new();
    notices.insert_one(doc! { "_id": id, "state": "public", "content": 42 }).await.unwrap();
    assert!(matches!(store.get(&id.to_hex()).await, Err(DataError::Corrupt(_))));
    db.drop().await.unwrap();
}

// ---- memory only ----------------------------------------------------------

#[tokio::test]
async fn the_memory_store_refuses_inserts_past_its_capacity() {
    use weapp_gateway::data::DataError;
    let store: Store = Arc::new(MemoryNoticeStore::with_capacity(2));
    let first = post(&store, "alice", "1", Visibility::Public).await;
    post(&store, "bob", "2", Visibility::Private).await;
    let full = store.insert(new_notice("carol", "3", Visibility::Public)).await;
    assert!(matches!(full, Err(DataError::Full(_))), "{full:?}");
    assert_eq!(contents(&store.feed(None, 10).await.unwrap()), ["1"]);
    assert!(matches!(store.delete(&first.id, "alice").await.unwrap(), AuthorChange::Done(())));
    post(&store, "carol", "3", Visibility::Public).await;
    assert_eq!(MemoryNoticeStore::new().count_by_author_since("x", t(0)).await.unwrap(), 0);
}
