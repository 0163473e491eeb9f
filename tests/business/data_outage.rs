//! MongoDB stopped under a running gateway: every data route answers 503
//! ERR_STORAGE_UNAVAILABLE within the bound, session routes are unaffected,
//! and service resumes when MongoDB is back. A gateway started while MongoDB
//! is down (or while its indexes cannot be created) keeps its data routes at
//! 503 until the start-up index creation has succeeded.

use crate::support;

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use support::app::{Answer, AppOptions, TestApp, User, spawn_app};
use support::mongo::MongoServer;

const ADMIN_TOKEN: &str = "outage-admin-token";
/// What "within the bound" means: `mongodb.connect_timeout` (1 s) and
/// `mongodb.op_timeout` (2 s) of the test config, with a margin for slow CI.
const BOUND: Duration = Duration::from_secs(5);
/// How long the start-up index creation may take to succeed once MongoDB can
/// do it (its retry backoff grows 0.5 s, 1 s, 2 s, …).
const RECOVERY: Duration = Duration::from_secs(40);

/// WeRun data with today's steps (any timestamp of today's Shanghai date).
fn werun_today(steps: u64) -> Value {
    json!({"stepInfoList": [{"timestamp": Utc::now().timestamp(), "step": steps}]})
}

fn checkin_body(user: &User, gid: &str, steps: u64) -> Value {
    json!({"share": user.encrypt(json!({"openGId": gid})), "werun": user.encrypt(werun_today(steps))})
}

/// One data route: method, path, body.
struct Route {
    method: &'static str,
    path: String,
    body: Value,
}

impl Route {
    fn new(method: &'static str, path: impl Into<String>, body: Value) -> Self {
        Self { method, path: path.into(), body }
    }

    async fn call(&self, app: &TestApp, user: &User) -> Answer {
        let admin = format!("Bearer {ADMIN_TOKEN}");
        let headers: Vec<(&str, &str)> = if self.path.starts_with("/admin/") {
            vec![("Authorization", admin.as_str())]
        } else {
            vec![user.auth()]
        };
        match self.method {
            "GET" => app.get(&self.path, &headers).await,
            "POST" => app.post(&self.path, &headers, &self.body).await,
            "PATCH" => app.patch(&self.path, &headers, &self.body).await,
            "DELETE" => app.delete(&self.path, &headers).await,
            other => panic!("no such method {other}"),
        }
    }
}

/// Every data route of the gateway, on a notice `id` and a group `gid` that
/// exist (so nothing short of the store can refuse them).
fn data_routes(user: &User, id: &str, gid: &str) -> Vec<Route> {
    vec![
        Route::new("POST", "/applet/pk/checkin", checkin_body(user, gid, 7_000)),
        Route::new(
            "POST",
            "/applet/pk/checkin",
            json!({"openGId": gid, "werun": user.encrypt(werun_today(7_001))}),
        ),
        Route::new("GET", format!("/applet/pk/groups/{gid}/ranking"), Value::Null),
        Route::new("GET", "/applet/pk/groups", Value::Null),
        Route::new("POST", "/applet/notices", json!({"content": "during the outage"})),
        Route::new("GET", "/applet/notices", Value::Null),
        Route::new("GET", "/applet/notices?pageno=1&pagesize=10", Value::Null),
        Route::new("GET", "/applet/notices/mine", Value::Null),
        Route::new("PATCH", format!("/applet/notices/{id}"), json!({"content": "edited"})),
        Route::new("PATCH", format!("/applet/notices/{id}"), json!({"visibility": "private"})),
        Route::new("DELETE", format!("/applet/notices/{id}"), Value::Null),
        Route::new("POST", format!("/admin/notices/{id}/ban"), Value::Null),
        Route::new("POST", format!("/admin/notices/{id}/unban"), Value::Null),
    ]
}

/// Every data route answers the 503 envelope, each within [`BOUND`].
async fn all_data_routes_answer_503(app: &TestApp, user: &User, id: &str, gid: &str) {
    for route in data_routes(user, id, gid) {
        let started = Instant::now();
        let a = route.call(app, user).await;
        let took = started.elapsed();
        let what = format!("{} {}", route.method, route.path);
        assert_eq!((a.status, a.reason()), (503, Some("ERR_STORAGE_UNAVAILABLE")), "{what}: {a:?}");
        assert_eq!(a.body["error"]["name"], "SessionError", "{what}: {a:?}");
        assert!(!a.body.to_string().contains("mongodb://"), "{what} leaks the URI: {a:?}");
        assert!(took < BOUND, "{what} took {took:?}");
    }
}

/// Session routes need no MongoDB: `/me`, a fresh login and a logout work.
async fn session_routes_work(app: &TestApp, user: &User) {
    let me = app.get("/applet/session/me", &[user.auth()]).await;
    assert_eq!(me.status, 200, "session routes must not depend on MongoDB: {me:?}");
    let other = app.user("o_outage_login", "l").await;
    let out = app.logout(&other.token).await;
    assert_eq!(out.status, 200, "{out:?}");
}

/// Poll `route` until it answers `want`; panic after [`RECOVERY`].
async fn wait_for(app: &TestApp, user: &User, route: &Route, want: u16) -> Answer {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let a = route.call(app, user).await;
        if a.status == want {
            return a;
        }
        assert_eq!(a.reason(), Some("ERR_STORAGE_UNAVAILABLE"), "{a:?}");
        assert!(Instant::now() < deadline, "{} {}: no recovery: {a:?}", route.method, route.path);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn mongodb_down_gives_503_on_every_data_route_only() {
    let mut mongo = MongoServer::start();
    // Short snapshot TTLs: a warmed cache may answer for up to 5 × TTL
    // (docs/api.md); past that, only the store can answer.
    let app = spawn_app(
        AppOptions::redis("data_outage")
            .mongo_at(mongo.uri(), "data_outage")
            .with("notices.admin_token", ADMIN_TOKEN)
            .with("pk.board_cache_ttl", "100ms")
            .with("notices.feed_cache_ttl", "100ms"),
    )
    .await;
    let user = app.user("o_outage_data", "d").await;
    let a = app.post("/applet/notices", &[user.auth()], &json!({"content": "before"})).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id = a.body["id"].as_str().expect("id").to_owned();
    let c = app.post("/applet/pk/checkin", &[user.auth()], &checkin_body(&user, "G_out", 10)).await;
    assert_eq!(c.status, 200, "{:?}", c.body);

    mongo.stop();
    tokio::time::sleep(Duration::from_millis(600)).await; // past 5 × TTL
    all_data_routes_answer_503(&app, &user, &id, "G_out").await;
    session_routes_work(&app, &user).await;
    let ready = app.get("/readyz", &[]).await;
    assert_eq!((ready.status, ready.body["data"].as_str()), (200, Some("unavailable")));

    mongo.start_again();
    let feed = wait_for(&app, &user, &Route::new("GET", "/applet/notices", Value::Null), 200).await;
    assert_eq!(feed.body["notices"][0]["content"], "before", "{feed:?}");
    let r = app.get("/applet/pk/groups/G_out/ranking", &[user.auth()]).await;
    assert_eq!((r.status, r.body["me"]["steps"].as_u64()), (200, Some(10)), "{r:?}");
}

#[tokio::test]
async fn data_routes_answer_503_until_mongodb_comes_up_after_the_gateway() {
    let port = free_port();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let app = spawn_app(
        AppOptions::redis("data_late")
            .mongo_at(uri, "data_late")
            .with("notices.admin_token", ADMIN_TOKEN),
    )
    .await;
    let user = app.user("o_late", "late").await;
    let id = "0123456789abcdef01234567";
    all_data_routes_answer_503(&app, &user, id, "G_late").await;
    session_routes_work(&app, &user).await;

    let _mongo = MongoServer::start_on(port);
    let post = Route::new("POST", "/applet/notices", json!({"content": "first"}));
    let created = wait_for(&app, &user, &post, 201).await;
    assert_eq!(created.body["content"], "first");
    let c = app.post("/applet/pk/checkin", &[user.auth()], &checkin_body(&user, "G_late", 5)).await;
    assert_eq!((c.status, c.body["me"]["rank"].as_u64()), (200, Some(1)), "{c:?}");
}

#[tokio::test]
async fn data_routes_answer_503_while_the_indexes_cannot_be_created() {
    use mongodb::bson::{Document, doc};
    use mongodb::options::IndexOptions;
    use weapp_gateway::mongo::{PK_RECORDS, PK_RECORDS_KEY_INDEX};

    // MongoDB is up, but an index of the same name with other keys is in the
    // way: the unique (open_gid, date, openid) index cannot be created.
    let uri = support::mongo::mongo_uri();
    let mut cfg = support::mongo::config(uri.clone(), "data_noindex", Duration::from_secs(5));
    let db_name = cfg.database.clone();
    cfg.connect_timeout = Duration::from_secs(5);
    let db = weapp_gateway::mongo::connect(&cfg).await.expect("client");
    let records = db.collection::<Document>(PK_RECORDS);
    let squatter = mongodb::IndexModel::builder()
        .keys(doc! { "nick_name": 1 })
        .options(IndexOptions::builder().name(PK_RECORDS_KEY_INDEX.to_owned()).build())
        .build();
    records.create_index(squatter).await.expect("create the conflicting index");

    let app = spawn_app(
        AppOptions::redis("data_noindex")
            .mongo_at(uri, "data_noindex")
            .with("mongodb.database", db_name)
            .with("notices.admin_token", ADMIN_TOKEN),
    )
    .await;
    let user = app.user("o_noindex", "n").await;
    // Nothing reaches MongoDB: no record can be written without its unique index.
    all_data_routes_answer_503(&app, &user, "0123456789abcdef01234567", "G_idx").await;
    assert_eq!(records.count_documents(doc! {}).await.expect("count"), 0);

    records.drop_index(PK_RECORDS_KEY_INDEX).await.expect("drop the conflicting index");
    let checkin = Route::new("POST", "/applet/pk/checkin", checkin_body(&user, "G_idx", 42));
    let a = wait_for(&app, &user, &checkin, 200).await;
    assert_eq!(a.body["me"]["steps"], 42);
    let names = records.list_index_names().await.expect("indexes");
    assert!(names.iter().any(|n| n == PK_RECORDS_KEY_INDEX), "{names:?}");
    db.drop().await.expect("drop the test database");
}
