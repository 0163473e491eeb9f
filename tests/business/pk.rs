//! Group step PK over real HTTP, with PK records in MongoDB: membership proven
//! by the decrypted share ticket, steps only from decrypted WeRun data, daily
//! rankings in Asia/Shanghai.

use crate::support;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use support::app::{AppOptions, TestApp, User, spawn_app};
use weapp_gateway::clock::Clock;

/// A clock the test moves by hand.
fn manual_clock(start: DateTime<Utc>) -> (Clock, Arc<Mutex<DateTime<Utc>>>) {
    let now = Arc::new(Mutex::new(start));
    let read = now.clone();
    (Clock::from_fn(move || *read.lock().unwrap()), now)
}

/// WeRun data as WeChat sends it: one entry per day, stamped at Shanghai midnight.
fn werun(days: &[(DateTime<Utc>, u64)]) -> Value {
    let list: Vec<Value> =
        days.iter().map(|(at, step)| json!({"timestamp": at.timestamp(), "step": step})).collect();
    json!({"stepInfoList": list})
}

fn shanghai_midnight(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    // 00:00 in Asia/Shanghai (UTC+8, no DST) is 16:00 UTC the day before.
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap() - chrono::Duration::hours(8)
}

async fn checkin(
    app: &TestApp,
    user: &User,
    gid: Option<&str>,
    steps_today: (DateTime<Utc>, u64),
) -> support::app::Answer {
    let mut body = json!({"werun": user.encrypt(werun(&[steps_today]))});
    if let Some(g) = gid {
        body["share"] = user.encrypt(json!({"openGId": g}));
    }
    app.post("/applet/pk/checkin", &[user.auth()], &body).await
}

/// A 400 `ERR_INVALID_REQUEST` envelope whose message contains `message`.
fn assert_invalid(a: &support::app::Answer, message: &str) {
    assert_eq!((a.status, a.reason()), (400, Some("ERR_INVALID_REQUEST")), "{a:?}");
    assert_eq!(a.body["error"]["name"], "SessionError", "{a:?}");
    let text = a.body["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains(message), "{message:?} not in {a:?}");
}

/// The app options of every data backend: MongoDB and memory, each with the
/// board cache and without it (then ranks come from the store's rank_of).
fn every_backend(test: &str) -> Vec<AppOptions> {
    let nocache = format!("{test}_nocache");
    vec![
        AppOptions::redis(test).mongo(test),
        AppOptions::redis(test).mongo(&nocache).with("pk.board_cache_ttl", "0s"),
        AppOptions::redis(test),
        AppOptions::redis(test).with("pk.board_cache_ttl", "0s"),
    ]
}

#[tokio::test]
async fn members_check_in_and_see_an_isolated_daily_ranking() {
    let at = Utc.with_ymd_and_hms(2026, 11, 22, 4, 0, 0).unwrap(); // 12:00 Shanghai
    for options in [
        AppOptions::redis("pk_rank").mongo("pk_rank"),
        AppOptions::redis("pk_rank_mem"),
        // No board cache: ranks of `/pk/groups` come from the store's rank_of.
        AppOptions::redis("pk_rank_nocache")
            .mongo("pk_rank_nocache")
            .with("pk.board_cache_ttl", "0s"),
        AppOptions::redis("pk_rank_mem_nocache").with("pk.board_cache_ttl", "0s"),
    ] {
        let (clock, now) = manual_clock(at);
        let app = spawn_app(options.clock(clock)).await;
        let today = shanghai_midnight(2026, 11, 22);
        // The first to reach 8000 ("zoe") sorts after "adam" by openid and by
        // name: only the time each reached the count can rank her first.
        let zoe = app.user("o_zoe_pk", "zoe").await;
        let bob = app.user("o_bob_pk", "bob").await;
        let adam = app.user("o_adam_pk", "adam").await;

        let a = checkin(&app, &zoe, Some("G_one"), (today, 8_000)).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.body["date"], "2026-11-22");
        assert_eq!(a.body["me"]["rank"], 1);
        assert_eq!(a.body["me"]["steps"], 8_000);
        assert_eq!(a.body["me"]["isMe"], true);

        *now.lock().unwrap() = at + chrono::Duration::minutes(1);
        let b = checkin(&app, &bob, Some("G_one"), (today, 9_000)).await;
        assert_eq!(b.body["me"]["rank"], 1);
        // adam reaches 8000 later than zoe: the tie goes to zoe.
        *now.lock().unwrap() = at + chrono::Duration::minutes(2);
        let c = checkin(&app, &adam, Some("G_one"), (today, 8_000)).await;
        assert_eq!(c.body["me"]["rank"], 3);
        let names: Vec<&str> = c.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["nickName"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["bob", "zoe", "adam"]);
        let me: Vec<bool> =
            c.body["entries"].as_array().unwrap().iter().map(|e| e["isMe"] == true).collect();
        assert_eq!(me, [false, false, true]);
        assert_eq!(c.body["participants"], 3);
        let tied = app.get("/applet/pk/groups", &[adam.auth()]).await;
        assert_eq!(tied.body["groups"][0]["rank"], 3, "{:?}", tied.body);
        let tied = app.get("/applet/pk/groups", &[zoe.auth()]).await;
        assert_eq!(tied.body["groups"][0]["rank"], 2, "{:?}", tied.body);
        let text = c.body.to_string();
        assert!(!text.contains("o_zoe_pk") && !text.contains("o_bob_pk"), "openids leaked: {text}");

        // A later check-in without the share: the group was proven before.
        let again = app
            .post(
                "/applet/pk/checkin",
                &[zoe.auth()],
                &json!({"openGId": "G_one", "werun": zoe.encrypt(werun(&[(today, 12_000)]))}),
            )
            .await;
        assert_eq!(again.status, 200, "{:?}", again.body);
        assert_eq!(again.body["me"]["rank"], 1);

        // Another group is a separate ranking.
        let other = checkin(&app, &adam, Some("G_two"), (today, 100)).await;
        assert_eq!(other.body["participants"], 1);
        assert_eq!(other.body["me"]["rank"], 1);

        let r = app.get("/applet/pk/groups/G_one/ranking", &[bob.auth()]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["me"]["rank"], 2);
        assert_eq!(r.body["entries"][0]["steps"], 12_000);
        assert_eq!(r.body["entries"][0]["isMe"], false);

        let groups = app.get("/applet/pk/groups", &[adam.auth()]).await;
        let mut list: Vec<(String, Value)> = groups.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["openGId"].as_str().unwrap().to_owned(), g["rank"].clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(list, [("G_one".to_owned(), json!(3)), ("G_two".to_owned(), json!(1))]);
    }
}

#[tokio::test]
async fn non_members_are_refused_and_steps_come_only_from_werun() {
    let (clock, _) = manual_clock(Utc.with_ymd_and_hms(2026, 11, 22, 4, 0, 0).unwrap());
    let app = spawn_app(AppOptions::redis("pk_refuse").mongo("pk_refuse").clock(clock)).await;
    let sh_today = shanghai_midnight(2026, 11, 22);
    let (clock_user, outsider) =
        (app.user("o_member", "m").await, app.user("o_outsider", "x").await);
    let a = checkin(&app, &clock_user, Some("G_private"), (sh_today, 500)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);

    let r = app.get("/applet/pk/groups/G_private/ranking", &[outsider.auth()]).await;
    assert_eq!((r.status, r.reason()), (403, Some("ERR_NOT_A_MEMBER")));
    let c = app
        .post(
            "/applet/pk/checkin",
            &[outsider.auth()],
            &json!({"openGId": "G_private", "werun": outsider.encrypt(werun(&[(sh_today, 99_999)]))}),
        )
        .await;
    assert_eq!((c.status, c.reason()), (403, Some("ERR_NOT_A_MEMBER")));

    // A number in the request is not a step count.
    let forged = app
        .post(
            "/applet/pk/checkin",
            &[clock_user.auth()],
            &json!({"openGId": "G_private", "steps": 99_999, "werun": clock_user.encrypt(werun(&[(sh_today, 1)]))}),
        )
        .await;
    assert_eq!((forged.status, forged.reason()), (400, Some("ERR_INVALID_REQUEST")));
    // WeRun encrypted with someone else's key does not decrypt.
    let stolen = app
        .post(
            "/applet/pk/checkin",
            &[clock_user.auth()],
            &json!({"openGId": "G_private", "werun": outsider.encrypt(werun(&[(sh_today, 99_999)]))}),
        )
        .await;
    assert_eq!((stolen.status, stolen.reason()), (400, Some("ERR_DECRYPT_FAILED")));
    assert_eq!(stolen.body["error"]["detail"], json!({}), "no kind: {stolen:?}");
    // A share ticket under someone else's key answers the same, and joins nothing.
    let forged_share = app
        .post(
            "/applet/pk/checkin",
            &[outsider.auth()],
            &json!({"share": clock_user.encrypt(json!({"openGId": "G_private"})),
                    "werun": outsider.encrypt(werun(&[(sh_today, 99_999)]))}),
        )
        .await;
    assert_eq!((forged_share.status, &forged_share.body), (stolen.status, &stolen.body));
    let r = app.get("/applet/pk/groups/G_private/ranking", &[outsider.auth()]).await;
    assert_eq!((r.status, r.reason()), (403, Some("ERR_NOT_A_MEMBER")));
    let r = app.get("/applet/pk/groups/G_private/ranking", &[clock_user.auth()]).await;
    assert_eq!(r.body["me"]["steps"], 500);

    for bad in ["?date=2026-13-01", "?date=yesterday", "?when=now"] {
        let r = app
            .get(&format!("/applet/pk/groups/G_private/ranking{bad}"), &[clock_user.auth()])
            .await;
        assert_eq!((r.status, r.reason()), (400, Some("ERR_INVALID_REQUEST")), "{bad}");
    }
    // An empty WeRun list (for a proven group) has no entry for today.
    let none = app
        .post(
            "/applet/pk/checkin",
            &[clock_user.auth()],
            &json!({"openGId": "G_private", "werun": clock_user.encrypt(werun(&[]))}),
        )
        .await;
    assert_invalid(&none, "the WeRun data has no entry for today (2026-11-22)");
    let r = app.get("/applet/pk/groups/G_private/ranking", &[clock_user.auth()]).await;
    assert_eq!(r.body["me"]["steps"], 500, "nothing was recorded");
    let anon = app.get("/applet/pk/groups", &[]).await;
    assert_eq!((anon.status, anon.reason()), (401, Some("ERR_NOT_LOGGED_IN")));
}

#[tokio::test]
async fn the_day_turns_at_shanghai_midnight_while_utc_is_still_yesterday() {
    // 23:30 in Shanghai on the 21st (15:30 UTC).
    let (clock, now) = manual_clock(Utc.with_ymd_and_hms(2026, 11, 21, 15, 30, 0).unwrap());
    let app = spawn_app(AppOptions::redis("pk_midnight").mongo("pk_midnight").clock(clock)).await;
    let user = app.user("o_night", "night").await;
    let d21 = shanghai_midnight(2026, 11, 21);
    let d22 = shanghai_midnight(2026, 11, 22);
    let before = checkin(&app, &user, Some("G_night"), (d21, 5_000)).await;
    assert_eq!(before.status, 200, "{:?}", before.body);
    assert_eq!(before.body["date"], "2026-11-21");

    // 00:30 in Shanghai on the 22nd; UTC is still the 21st (16:30).
    *now.lock().unwrap() = Utc.with_ymd_and_hms(2026, 11, 21, 16, 30, 0).unwrap();
    let fresh = app.get("/applet/pk/groups/G_night/ranking", &[user.auth()]).await;
    assert_eq!(fresh.body["date"], "2026-11-22");
    assert_eq!(fresh.body["entries"], json!([]));
    assert_eq!(fresh.body["me"], Value::Null);
    // Yesterday's WeRun data has no entry for the new day.
    let stale = checkin(&app, &user, Some("G_night"), (d21, 5_000)).await;
    assert_eq!((stale.status, stale.reason()), (400, Some("ERR_INVALID_REQUEST")));

    let after = app
        .post(
            "/applet/pk/checkin",
            &[user.auth()],
            &json!({"openGId": "G_night", "werun": user.encrypt(werun(&[(d21, 5_000), (d22, 300)]))}),
        )
        .await;
    assert_eq!(after.body["date"], "2026-11-22");
    assert_eq!(after.body["me"]["steps"], 300);
    let yesterday =
        app.get("/applet/pk/groups/G_night/ranking?date=2026-11-21", &[user.auth()]).await;
    assert_eq!(yesterday.body["me"]["steps"], 5_000);
}

#[tokio::test]
async fn a_check_in_on_one_instance_reaches_another_s_ranking_within_the_board_ttl() {
    let at = Utc.with_ymd_and_hms(2026, 11, 22, 4, 0, 0).unwrap();
    let today = shanghai_midnight(2026, 11, 22);
    let db = support::mongo::unique_db("pk_two");
    let instance = |name: &str| {
        let (clock, _) = manual_clock(at);
        AppOptions::redis(name)
            .mongo(name)
            .with("mongodb.database", db.clone())
            .with("pk.board_cache_ttl", "300ms")
            .clock(clock)
    };
    let a = spawn_app(instance("pk_two_a")).await;
    let b = spawn_app(instance("pk_two_b")).await;
    let alice = a.user("o_alice_two", "alice").await;
    let bob = b.user("o_bob_two", "bob").await;

    let first = checkin(&a, &alice, Some("G_two_inst"), (today, 5_000)).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["participants"], 1);
    // b has its own board: its own check-in shows at once, with alice's.
    let second = checkin(&b, &bob, Some("G_two_inst"), (today, 6_000)).await;
    assert_eq!(second.body["participants"], 2, "{:?}", second.body);
    assert_eq!(second.body["me"]["rank"], 1);

    // a's board may be up to one TTL old (plus a reload); then bob is there.
    let started = std::time::Instant::now();
    loop {
        let r = a.get("/applet/pk/groups/G_two_inst/ranking", &[alice.auth()]).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        if r.body["participants"] == 2 {
            assert_eq!(r.body["me"]["rank"], 2);
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "bob never showed on a");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn me_is_there_below_the_ranking_limit_and_participants_count_everyone() {
    let at = Utc.with_ymd_and_hms(2026, 11, 22, 4, 0, 0).unwrap();
    let today = shanghai_midnight(2026, 11, 22);
    for options in every_backend("pk_limit") {
        let (clock, now) = manual_clock(at);
        let app = spawn_app(options.with("pk.ranking_limit", 2).clock(clock)).await;
        let top = app.user("o_top_lim", "top").await;
        let second = app.user("o_second_lim", "second").await;
        // zz reaches 100 first, aa later: below the limit the tie still
        // goes to who reached the count first, not to the openid.
        let zz = app.user("o_zz_lim", "zz").await;
        let aa = app.user("o_aa_lim", "aa").await;
        for (i, (user, steps)) in
            [(&top, 400), (&second, 300), (&zz, 100), (&aa, 100)].into_iter().enumerate()
        {
            *now.lock().unwrap() = at + chrono::Duration::minutes(i as i64);
            let a = checkin(&app, user, Some("G_lim"), (today, steps)).await;
            assert_eq!(a.status, 200, "{:?}", a.body);
        }
        let r = app.get("/applet/pk/groups/G_lim/ranking", &[aa.auth()]).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let entries = r.body["entries"].as_array().unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e["nickName"].as_str().unwrap()).collect();
        assert_eq!(names, ["top", "second"], "only the top pk.ranking_limit");
        assert!(entries.iter().all(|e| e["isMe"] == false), "{:?}", r.body);
        assert_eq!(
            r.body["me"],
            json!({"rank": 4, "nickName": "aa", "avatarUrl": "https://img.example/aa.png", "steps": 100, "isMe": true})
        );
        assert_eq!(r.body["participants"], 4, "everyone who checked in, not only the top");
        let r = app.get("/applet/pk/groups/G_lim/ranking", &[zz.auth()]).await;
        assert_eq!(
            (r.body["me"]["rank"].as_u64(), r.body["participants"].as_u64()),
            (Some(3), Some(4))
        );
        let g = app.get("/applet/pk/groups", &[aa.auth()]).await;
        assert_eq!(
            g.body["groups"],
            json!([{"openGId": "G_lim", "rank": 4, "steps": 100, "participants": 4}])
        );
    }
}

#[tokio::test]
async fn malformed_open_gids_and_incomplete_open_data_are_400() {
    let (clock, _) = manual_clock(Utc.with_ymd_and_hms(2026, 11, 22, 4, 0, 0).unwrap());
    let app = spawn_app(AppOptions::redis("pk_bad").mongo("pk_bad").clock(clock)).await;
    let today = shanghai_midnight(2026, 11, 22);
    let user = app.user("o_bad_input", "b").await;
    let a = checkin(&app, &user, Some("G_ok"), (today, 10)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let post = |body: Value| {
        let (app, user) = (&app, &user);
        async move { app.post("/applet/pk/checkin", &[user.auth()], &body).await }
    };
    let werun_ok = || user.encrypt(werun(&[(today, 20)]));

    // In the path.
    let long = "g".repeat(129);
    for gid in [long.as_str(), "a%20b", "%E7%BE%A4", "tab%09"] {
        let r = app.get(&format!("/applet/pk/groups/{gid}/ranking"), &[user.auth()]).await;
        assert_invalid(&r, "openGId is malformed");
    }
    // In the body, instead of a share.
    for gid in ["", "a b", "群", long.as_str()] {
        let a = post(json!({"openGId": gid, "werun": werun_ok()})).await;
        assert_invalid(&a, "openGId is malformed");
    }
    // Inside the decrypted share info.
    for gid in ["", "a b", long.as_str()] {
        let share = user.encrypt(json!({"openGId": gid}));
        let a = post(json!({"share": share, "werun": werun_ok()})).await;
        assert_invalid(&a, "openGId is malformed");
    }
    // Share info without an openGId (or not a string).
    for info in [json!({"shareTicket": "x"}), json!({"openGId": 42}), json!({"openGId": null})] {
        let a = post(json!({"share": user.encrypt(info.clone()), "werun": werun_ok()})).await;
        assert_invalid(&a, "the share info has no openGId");
    }
    // WeRun data without a stepInfoList (or not a list).
    for data in [json!({"steps": 99_999}), json!({"stepInfoList": {"step": 1}})] {
        let a = post(json!({"openGId": "G_ok", "werun": user.encrypt(data.clone())})).await;
        assert_invalid(&a, "the WeRun data has no stepInfoList");
    }
    // Neither a share nor a proven group.
    let a = post(json!({"werun": werun_ok()})).await;
    assert_invalid(&a, "send `share` (the encrypted share info) or an already joined `openGId`");

    // None of it touched the record or the memberships.
    let r = app.get("/applet/pk/groups/G_ok/ranking", &[user.auth()]).await;
    assert_eq!(
        (r.body["me"]["steps"].as_u64(), r.body["participants"].as_u64()),
        (Some(10), Some(1))
    );
    let g = app.get("/applet/pk/groups", &[user.auth()]).await;
    assert_eq!(g.body["groups"].as_array().map(Vec::len), Some(1), "{:?}", g.body);
}

#[tokio::test]
async fn groups_lists_the_200_newest_joins_newest_first() {
    let at = Utc.with_ymd_and_hms(2026, 11, 22, 4, 0, 0).unwrap();
    let today = shanghai_midnight(2026, 11, 22);
    for options in [AppOptions::redis("pk_many").mongo("pk_many"), AppOptions::redis("pk_many")] {
        let (clock, _) = manual_clock(at);
        let app = spawn_app(options.clock(clock)).await;
        let user = app.user("o_joiner", "j").await;
        let join = |gid: String| {
            let (app, user) = (&app, &user);
            async move {
                let a = checkin(app, user, Some(&gid), (today, 1)).await;
                assert_eq!(a.status, 200, "{gid}: {:?}", a.body);
            }
        };
        // The oldest join, then 199 more, then the newest (joins are timed
        // to the millisecond: the first and last stand apart).
        join("G_first".into()).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        for chunk in (0..199).collect::<Vec<_>>().chunks(20) {
            futures_util::future::join_all(chunk.iter().map(|i| join(format!("G_{i:03}")))).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        join("G_last".into()).await;

        let g = app.get("/applet/pk/groups", &[user.auth()]).await;
        assert_eq!(g.status, 200, "{:?}", g.body);
        let gids: Vec<&str> = g.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["openGId"].as_str().unwrap())
            .collect();
        assert_eq!(gids.len(), 200);
        assert_eq!(gids[0], "G_last", "the newest join comes first");
        assert!(!gids.contains(&"G_first"), "the oldest of 201 joins is the one left out");
        // The oldest one is still a membership: its ranking is readable.
        let r = app.get("/applet/pk/groups/G_first/ranking", &[user.auth()]).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}

async fn date_ranking(app: &TestApp, user: &User, date: &str) -> support::app::Answer {
    app.get(&format!("/applet/pk/groups/G_dates/ranking?date={date}"), &[user.auth()]).await
}

#[tokio::test]
async fn ranking_dates_outside_the_retention_window_are_refused_before_any_store_read() {
    // 12:00 in Shanghai on 2026-11-22, 7 days kept: 2026-11-15 is the oldest day.
    let at = Utc.with_ymd_and_hms(2026, 11, 22, 4, 0, 0).unwrap();
    for options in
        [AppOptions::redis("pk_dates").mongo("pk_dates"), AppOptions::redis("pk_dates_mem")]
    {
        let (clock, _) = manual_clock(at);
        let app = spawn_app(options.with("pk.retention_days", 7).clock(clock)).await;
        let member = app.user("o_dates_member", "m").await;
        let outsider = app.user("o_dates_outsider", "o").await;
        let c =
            checkin(&app, &member, Some("G_dates"), (shanghai_midnight(2026, 11, 22), 700)).await;
        assert_eq!(c.status, 200, "{:?}", c.body);
        for date in ["0001-01-01", "1970-01-01", "2026-11-14", "2026-11-23", "9999-12-31"] {
            for user in [&member, &outsider] {
                let a = date_ranking(&app, user, date).await;
                assert_invalid(&a, "date must be between 2026-11-15 and 2026-11-22");
            }
        }
        // Inside the window a member is answered, an outsider gets 403: the
        // membership (a store read) is only looked at after the date passed.
        for date in ["2026-11-15", "2026-11-21", "2026-11-22"] {
            let a = date_ranking(&app, &member, date).await;
            assert_eq!(a.status, 200, "{date}: {a:?}");
            assert_eq!(a.body["date"], date);
            let a = date_ranking(&app, &outsider, date).await;
            assert_eq!((a.status, a.reason()), (403, Some("ERR_NOT_A_MEMBER")), "{date}");
        }
        assert_eq!(date_ranking(&app, &member, "2026-11-22").await.body["me"]["steps"], 700);
    }
}
