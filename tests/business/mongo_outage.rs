//! The MongoDB stores under outages: they start without MongoDB, answer
//! `Unavailable` within the op timeout while it is down, and recover by
//! themselves once it is back.

use crate::support;

use std::fmt::Debug;
use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::pin::Pin;
use std::time::{Duration, Instant};

use chrono::Utc;
use support::mongo::{MongoServer, config};
use weapp_gateway::data::DataError;
use weapp_gateway::mongo::connect;
use weapp_gateway::notices::{MongoNoticeStore, NewNotice, NoticePatch, NoticeStore, Visibility};
use weapp_gateway::pk::{MongoPkStore, PkStore, StepCheckin};

const OP_TIMEOUT: Duration = Duration::from_secs(1);
/// What "within the op timeout" means, with a generous margin for slow CI.
const FAIL_FAST: Duration = Duration::from_secs(5);
/// How long a restarted server may take until the stores work again.
const RECOVERY: Duration = Duration::from_secs(30);

struct Stores {
    pk: MongoPkStore,
    notices: MongoNoticeStore,
}

async fn stores_at(uri: String, test: &str) -> Stores {
    let mut cfg = config(uri, test, OP_TIMEOUT);
    cfg.connect_timeout = OP_TIMEOUT;
    let db = connect(&cfg).await.expect("connecting never needs the server");
    Stores {
        pk: MongoPkStore::new(db.clone(), OP_TIMEOUT),
        notices: MongoNoticeStore::new(db, OP_TIMEOUT),
    }
}

fn checkin(steps: u64) -> StepCheckin {
    StepCheckin {
        open_gid: "g1".into(),
        date: "2026-03-01".into(),
        openid: "alice".into(),
        steps,
        nick_name: "Alice".into(),
        avatar_url: "https://wx.qlogo.cn/a.png".into(),
        at: Utc::now(),
    }
}

fn notice() -> NewNotice {
    NewNotice {
        author_openid: "alice".into(),
        author_nick_name: "Alice".into(),
        author_avatar_url: "https://wx.qlogo.cn/a.png".into(),
        content: "still here?".into(),
        photos: Vec::new(),
        visibility: Visibility::Public,
        created_at: Utc::now(),
    }
}

/// Run `op`, assert it failed with `Unavailable` within [`FAIL_FAST`] and
/// that the error text does not carry the URI.
async fn assert_unavailable<T: Debug>(
    what: &str,
    op: impl Future<Output = Result<T, DataError>>,
) -> Duration {
    let started = Instant::now();
    let result = op.await;
    let elapsed = started.elapsed();
    match result {
        Err(DataError::Unavailable(msg)) => {
            assert!(!msg.contains("mongodb://"), "{what}: error text has the URI: {msg}");
            eprintln!("{what}: Unavailable after {elapsed:?}: {msg}");
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < FAIL_FAST, "{what} took {elapsed:?} to fail");
    elapsed
}

type Check<'a> = Pin<Box<dyn Future<Output = Duration> + Send + 'a>>;

fn check<'a, T: Debug + Send + 'a>(
    what: &'static str,
    op: impl Future<Output = Result<T, DataError>> + Send + 'a,
) -> Check<'a> {
    Box::pin(assert_unavailable(what, op))
}

/// Every operation of both stores fails fast with `Unavailable` (all at
/// once: each waits for its own timeout). Returns the slowest failure.
async fn every_op_is_unavailable(s: &Stores, some_id: &str) -> Duration {
    let patch = NoticePatch { content: Some("x".into()), visibility: None };
    let (c5, c200, n) = (checkin(5), checkin(200), notice());
    let day = "2026-03-01";
    let checks: Vec<Check<'_>> = vec![
        check("pk ping", s.pk.ping()),
        check("pk init", s.pk.init(7)),
        check("add_membership", s.pk.add_membership("g1", "alice")),
        check("is_member", s.pk.is_member("g1", "alice")),
        check("memberships", s.pk.memberships("alice", 10)),
        check("upsert_steps", s.pk.upsert_steps(&c5)),
        check("upsert_steps", s.pk.upsert_steps(&c200)),
        check("ranking", s.pk.ranking("g1", day, 10)),
        check("rank_of", s.pk.rank_of("g1", day, "alice")),
        check("participants", s.pk.participants("g1", day)),
        check("notices ping", s.notices.ping()),
        check("notices init", s.notices.init()),
        check("insert", s.notices.insert(n)),
        check("get", s.notices.get(some_id)),
        check("feed", s.notices.feed(None, 10)),
        check("feed_offset", s.notices.feed_offset(0, 10)),
        check("by_author", s.notices.by_author("alice", None, 10)),
        check("update", s.notices.update(some_id, "alice", &patch)),
        check("delete", s.notices.delete(some_id, "alice")),
        check("set_banned", s.notices.set_banned(some_id, true)),
    ];
    let timings = futures_util::future::join_all(checks).await;
    timings.into_iter().max().unwrap_or_default()
}

/// Retry `ping` on both stores until they succeed; panic after `within`.
async fn wait_until_available(s: &Stores, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (pk, notices) = (s.pk.ping().await, s.notices.ping().await);
        if pk.is_ok() && notices.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "stores did not recover within {within:?}: pk {pk:?}, notices {notices:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stores_fail_fast_while_mongodb_is_down_and_recover_after_restart() {
    let mut server = MongoServer::start();
    let stores = stores_at(server.uri(), "outage").await;
    stores.pk.init(7).await.unwrap();
    stores.notices.init().await.unwrap();
    stores.pk.upsert_steps(&checkin(100)).await.unwrap();
    let posted = stores.notices.insert(notice()).await.unwrap();

    server.stop();
    let slowest = every_op_is_unavailable(&stores, &posted.id).await;
    eprintln!("down: slowest failure took {slowest:?}");

    server.start_again();
    let took = wait_until_available(&stores, RECOVERY).await;
    eprintln!("recovered {took:?} after the restart");

    // The data survived (same storage), and writes work again.
    assert_eq!(stores.pk.participants("g1", "2026-03-01").await.unwrap(), 1);
    let rec = stores.pk.upsert_steps(&checkin(200)).await.unwrap();
    assert_eq!(rec.steps, 200);
    assert_eq!(
        stores.notices.get(&posted.id).await.unwrap().map(|n| n.content),
        Some("still here?".to_owned())
    );
    stores.notices.insert(notice()).await.unwrap();
    assert_eq!(stores.notices.feed(None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn stores_start_without_mongodb_and_work_once_it_appears() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let stores = stores_at(uri, "never_up").await;
    every_op_is_unavailable(&stores, "000000000000000000000000").await;

    let _server = MongoServer::start_on(port);
    // Up, but the indexes do not exist yet: the stores still refuse, at once.
    assert_unavailable("pk ping before init", stores.pk.ping()).await;
    assert_unavailable("membership before init", stores.pk.add_membership("g1", "alice")).await;
    assert_unavailable("notice before init", stores.notices.insert(notice())).await;
    // What the gateway's start-up task does: retry the index creation.
    let started = Instant::now();
    while stores.pk.init(7).await.is_err() || stores.notices.init().await.is_err() {
        assert!(started.elapsed() < RECOVERY, "the indexes were never created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until_available(&stores, RECOVERY).await;
    stores.pk.add_membership("g1", "alice").await.unwrap();
    assert!(stores.pk.is_member("g1", "alice").await.unwrap());
}

#[test]
fn the_test_servers_python_follows_secantus_venv_as_run_sh_exports_it() {
    use std::path::PathBuf;
    use support::mongo::python_for;
    let venv = [("SECANTUS_VENV", "/opt/secantus"), ("HOME", "/home/ci")];
    assert_eq!(python_for(&venv), PathBuf::from("/opt/secantus/bin/python"));
    let both = [("SECANTUS_PYTHON", "/usr/bin/python3.12"), ("SECANTUS_VENV", "/opt/secantus")];
    assert_eq!(python_for(&both), PathBuf::from("/usr/bin/python3.12"), "SECANTUS_PYTHON wins");
    let empty = [("SECANTUS_PYTHON", ""), ("SECANTUS_VENV", "/opt/secantus")];
    assert_eq!(python_for(&empty), PathBuf::from("/opt/secantus/bin/python"));
    let neither = [("HOME", "/home/ci")];
    assert_eq!(
        python_for(&neither),
        PathBuf::from("/home/ci/.cache/secantusdb-0.7.0b3/bin/python")
    );
}
