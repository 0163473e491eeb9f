//! MongoDB stopped under a running gateway: data routes answer 503
//! ERR_STORAGE_UNAVAILABLE within the bound, session routes are unaffected,
//! and service resumes when MongoDB is back.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::app::{AppOptions, spawn_app};
use support::mongo::MongoServer;

#[tokio::test]
async fn mongodb_down_gives_503_on_data_routes_only() {
    let mut mongo = MongoServer::start();
    let app =
        spawn_app(AppOptions::redis("data_outage").mongo_at(mongo.uri(), "data_outage")).await;
    let user = app.user("o_outage_data", "d").await;
    let post = |text: &'static str| json!({"content": text});
    let a = app.post("/applet/notices", &[user.auth()], &post("before")).await;
    assert_eq!(a.status, 201, "{:?}", a.body);

    mongo.stop();
    for (method, path) in
        [("GET", "/applet/notices"), ("POST", "/applet/notices"), ("GET", "/applet/pk/groups")]
    {
        let started = Instant::now();
        let a = match method {
            "GET" => app.get(path, &[user.auth()]).await,
            _ => app.post(path, &[user.auth()], &post("during")).await,
        };
        assert_eq!(
            (a.status, a.reason()),
            (503, Some("ERR_STORAGE_UNAVAILABLE")),
            "{method} {path}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{path}: {:?}", started.elapsed());
    }
    let me = app.get("/applet/session/me", &[user.auth()]).await;
    assert_eq!(me.status, 200, "session routes must not depend on MongoDB");
    let ready = app.get("/readyz", &[]).await;
    assert_eq!((ready.status, ready.body["data"].as_str()), (200, Some("unavailable")));

    mongo.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = app.get("/applet/notices", &[]).await;
        if a.status == 200 {
            assert_eq!(a.body["notices"][0]["content"], "before");
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {:?}", a.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
