//! Notices over real HTTP, with the notices in MongoDB (the main path also in
//! the memory data store): posting, the public feed and its paging, the
//! author's own list, author edits and deletes, moderation by the admin token,
//! and WeChat content security.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use support::app::{Answer, AppOptions, TestApp, User, spawn_app};
use weapp_gateway::clock::Clock;
use weapp_gateway::wechat::MSG_SEC_CHECK;

const ADMIN_TOKEN: &str = "adm";
const ADMIN: (&str, &str) = ("Authorization", "Bearer adm");
/// A well-formed id no notice has.
const UNKNOWN_ID: &str = "0123456789abcdef01234567";

/// MongoDB data store with the admin token set, and write limits far above
/// what a case needs (the limits have cases of their own).
fn mongo_app(test: &str) -> AppOptions {
    roomy(AppOptions::redis(test).mongo(test).with("notices.admin_token", ADMIN_TOKEN))
}

/// `options` with write and admin-failure limits no case reaches by accident.
fn roomy(options: AppOptions) -> AppOptions {
    options
        .with("notices.posts_per_minute", 10_000)
        .with("notices.posts_per_day", 10_000)
        .with("notices.edits_per_minute", 10_000)
        .with("notices.edits_per_day", 10_000)
        .with("notices.admin_failures_per_minute", 10_000)
}

async fn post(app: &TestApp, user: &User, body: Value) -> Answer {
    app.post("/applet/notices", &[user.auth()], &body).await
}

/// Post a notice that must succeed; its id.
async fn posted(app: &TestApp, user: &User, body: Value) -> String {
    let a = post(app, user, body).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_str().expect("id").to_owned()
}

async fn feed(app: &TestApp, query: &str) -> Answer {
    let a = app.get(&format!("/applet/notices{query}"), &[]).await;
    assert_eq!(a.status, 200, "feed{query}: {:?}", a.body);
    a
}

async fn mine(app: &TestApp, user: &User, query: &str) -> Answer {
    let a = app.get(&format!("/applet/notices/mine{query}"), &[user.auth()]).await;
    assert_eq!(a.status, 200, "mine{query}: {:?}", a.body);
    a
}

async fn ban(app: &TestApp, id: &str, headers: &[(&str, &str)]) -> Answer {
    app.post(&format!("/admin/notices/{id}/ban"), headers, &Value::Null).await
}

async fn unban(app: &TestApp, id: &str, headers: &[(&str, &str)]) -> Answer {
    app.post(&format!("/admin/notices/{id}/unban"), headers, &Value::Null).await
}

/// The ids of a page, in order.
fn ids(a: &Answer) -> Vec<String> {
    a.body["notices"]
        .as_array()
        .unwrap_or_else(|| panic!("no notices array: {:?}", a.body))
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The contents of a page, in order.
fn contents(a: &Answer) -> Vec<String> {
    a.body["notices"]
        .as_array()
        .unwrap_or_else(|| panic!("no notices array: {:?}", a.body))
        .iter()
        .map(|n| n["content"].as_str().expect("content").to_owned())
        .collect()
}

/// The page's `nextCursor` (None when null).
fn next_cursor(a: &Answer) -> Option<String> {
    let c = a.body.get("nextCursor").unwrap_or_else(|| panic!("no nextCursor: {:?}", a.body));
    c.as_str().map(str::to_owned)
}

fn assert_error(a: &Answer, status: u16, reason: &str) {
    assert_eq!(a.status, status, "{:?}", a.body);
    assert_eq!(a.reason(), Some(reason), "{:?}", a.body);
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("not RFC 3339: {v}: {e}"))
        .with_timezone(&Utc)
}

fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn assert_no_openid(a: &Answer, openid: &str) {
    let text = a.body.to_string();
    assert!(!text.contains(openid), "the answer shows the author's openid: {text}");
    assert!(!text.contains("authorOpenid") && !text.contains("author_openid"), "{text}");
}

#[tokio::test]
async fn post_feed_mine_edit_ban_delete_on_mongodb_and_memory() {
    for (options, store) in [
        (mongo_app("notice_main"), "mongodb"),
        (
            roomy(AppOptions::redis("notice_main_mem").with("notices.admin_token", ADMIN_TOKEN)),
            "memory",
        ),
    ] {
        let app = spawn_app(options).await;
        let alice = app.user("o_alice_notice", "alice").await;
        let bob = app.user("o_bob_notice", "鲍勃").await;

        // Post: 201, the stored notice with the author's profile, never the openid.
        let before = Utc::now() - chrono::Duration::seconds(5);
        let a = post(
            &app,
            &alice,
            json!({"content": "  lost cat near the library  ",
                   "photos": ["https://img.example/cat.jpg"]}),
        )
        .await;
        assert_eq!(a.status, 201, "{store}: {:?}", a.body);
        let first = a.body["id"].as_str().expect("id").to_owned();
        assert!(is_object_id(&first), "{store}: id {first}");
        assert_eq!(a.body["authorNickName"], "alice", "{store}");
        assert_eq!(a.body["authorAvatarUrl"], "https://img.example/alice.png", "{store}");
        assert_eq!(a.body["content"], "lost cat near the library", "{store}: content is trimmed");
        assert_eq!(a.body["photos"], json!(["https://img.example/cat.jpg"]), "{store}");
        assert_eq!(a.body["visibility"], "public", "{store}");
        assert_eq!(a.body["state"], "public", "{store}");
        assert_eq!(a.body["banned"], false, "{store}");
        let created = time(&a.body["createdAt"]);
        assert!(created >= before && created <= Utc::now() + chrono::Duration::seconds(5));
        assert_eq!(a.body["updatedAt"], a.body["createdAt"], "{store}");
        assert_no_openid(&a, &alice.openid);

        let private =
            posted(&app, &alice, json!({"content": "note to self", "visibility": "private"})).await;
        let b = post(&app, &bob, json!({"content": "找到一把钥匙", "visibility": "public"})).await;
        assert_eq!(b.status, 201, "{store}: {:?}", b.body);
        assert_eq!(b.body["authorNickName"], "鲍勃", "{store}");
        assert_eq!(b.body["photos"], json!([]), "{store}");
        let second = b.body["id"].as_str().unwrap().to_owned();

        // The feed: public only, newest first, no login needed, no openids.
        let f = feed(&app, "").await;
        assert_eq!(ids(&f), [second.clone(), first.clone()], "{store}");
        assert_eq!(next_cursor(&f), None, "{store}");
        assert_no_openid(&f, &alice.openid);
        assert_no_openid(&f, &bob.openid);
        // A logged-in caller sees the same feed.
        let f2 = app.get("/applet/notices", &[bob.auth()]).await;
        assert_eq!(ids(&f2), ids(&f), "{store}");

        // Mine: every own notice, nobody else's.
        let m = mine(&app, &alice, "").await;
        assert_eq!(ids(&m), [private.clone(), first.clone()], "{store}");
        assert_eq!(m.body["notices"][0]["state"], "private", "{store}");
        assert_no_openid(&m, &alice.openid);
        assert_eq!(ids(&mine(&app, &bob, "").await), [second.as_str()], "{store}");

        // The author edits; the private notice turns public and joins the feed.
        let e = app
            .patch(
                &format!("/applet/notices/{private}"),
                &[alice.auth()],
                &json!({"content": "note to everyone", "visibility": "public"}),
            )
            .await;
        assert_eq!(e.status, 200, "{store}: {:?}", e.body);
        assert_eq!(e.body["content"], "note to everyone", "{store}");
        assert_eq!(e.body["state"], "public", "{store}");
        assert!(time(&e.body["updatedAt"]) >= time(&e.body["createdAt"]), "{store}");
        assert_no_openid(&e, &alice.openid);
        assert_eq!(ids(&feed(&app, "").await), [second.clone(), private.clone(), first.clone()]);

        // Moderation hides it from the feed, the author sees it banned.
        let x = ban(&app, &first, &[ADMIN]).await;
        assert_eq!(x.status, 200, "{store}: {:?}", x.body);
        assert_eq!(x.body["state"], "banned", "{store}");
        assert_no_openid(&x, &alice.openid);
        assert_eq!(ids(&feed(&app, "").await), [second.clone(), private.clone()], "{store}");
        let m = mine(&app, &alice, "").await;
        assert_eq!(m.body["notices"][1]["id"], first.as_str(), "{store}");
        assert_eq!(m.body["notices"][1]["state"], "banned", "{store}");
        let u = unban(&app, &first, &[ADMIN]).await;
        assert_eq!(u.status, 200, "{store}: {:?}", u.body);
        assert_eq!(u.body["state"], "public", "{store}");
        assert_eq!(ids(&feed(&app, "").await), [second.clone(), private.clone(), first.clone()]);

        // The author deletes; gone everywhere.
        let d = app.delete(&format!("/applet/notices/{first}"), &[alice.auth()]).await;
        assert_eq!(d.status, 200, "{store}: {:?}", d.body);
        assert_eq!(d.body, json!({"ok": true}), "{store}");
        assert_eq!(ids(&feed(&app, "").await), [second.clone(), private.clone()], "{store}");
        assert_eq!(ids(&mine(&app, &alice, "").await), [private.as_str()], "{store}");
    }
}

#[tokio::test]
async fn posting_validates_content_photos_and_fields() {
    let app = spawn_app(mongo_app("notice_validate")).await;
    let alice = app.user("o_alice_validate", "alice").await;

    // Not logged in.
    let a = app.post("/applet/notices", &[], &json!({"content": "hi"})).await;
    assert_error(&a, 401, "ERR_NOT_LOGGED_IN");

    // Content: 1–2000 characters after trimming.
    for content in ["", "   ", " \n\t "] {
        let a = post(&app, &alice, json!({ "content": content })).await;
        assert_error(&a, 400, "ERR_INVALID_REQUEST");
    }
    let a = post(&app, &alice, json!({ "content": "a".repeat(2001) })).await;
    assert_error(&a, 400, "ERR_INVALID_REQUEST");
    let a = post(&app, &alice, json!({ "content": "好".repeat(2001) })).await;
    assert_error(&a, 400, "ERR_INVALID_REQUEST");
    // 2000 characters of 3 bytes each are fine (characters, not bytes), and so
    // is surrounding whitespace, which is trimmed.
    let long = "好".repeat(2000);
    let a = post(&app, &alice, json!({ "content": format!("  {long}\n") })).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["content"].as_str().unwrap(), long);
    let a = post(&app, &alice, json!({ "content": "a".repeat(2000) })).await;
    assert_eq!(a.status, 201, "{:?}", a.body);

    // Photos: at most 4, each an https URL with a host.
    let photo = |i: usize| format!("https://img.example/p{i}.jpg");
    let five: Vec<String> = (0..5).map(photo).collect();
    let a = post(&app, &alice, json!({"content": "five photos", "photos": five})).await;
    assert_error(&a, 400, "ERR_INVALID_REQUEST");
    for bad in [
        "http://img.example/p.jpg",
        "ftp://img.example/p.jpg",
        "//img.example/p.jpg",
        "img.example/p.jpg",
        "https://",
        "",
    ] {
        let a =
            post(&app, &alice, json!({"content": "bad photo", "photos": [photo(0), bad]})).await;
        assert_error(&a, 400, "ERR_INVALID_REQUEST");
    }
    let too_long = format!("https://img.example/{}.jpg", "x".repeat(2048));
    let a = post(&app, &alice, json!({"content": "long photo", "photos": [too_long]})).await;
    assert_error(&a, 400, "ERR_INVALID_REQUEST");
    let four: Vec<String> = (0..4).map(photo).collect();
    let a = post(&app, &alice, json!({"content": "four photos", "photos": four})).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["photos"], json!(four));

    // Unknown fields, bad types, bad visibility, no content, not JSON.
    for body in [
        json!({"content": "hi", "title": "extra"}),
        json!({"content": "hi", "authorOpenid": "o_someone_else"}),
        json!({"content": 42}),
        json!({"content": "hi", "photos": "https://img.example/p.jpg"}),
        json!({"content": "hi", "visibility": "friends"}),
        json!({"photos": []}),
        json!("hi"),
    ] {
        let a = post(&app, &alice, body.clone()).await;
        assert_error(&a, 400, "ERR_INVALID_REQUEST");
    }
    let raw = app
        .http
        .post(format!("{}/applet/notices", app.base))
        .header(alice.auth().0, alice.auth().1)
        .header("Content-Type", "text/plain")
        .body("content=hi")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);

    // Exactly the three valid posts were stored.
    let m = mine(&app, &alice, "").await;
    assert_eq!(contents(&m).len(), 3, "{:?}", m.body);
    assert_eq!(contents(&m)[0], "four photos");
}

#[tokio::test]
async fn feed_pages_by_cursor_stay_stable_while_notices_are_posted() {
    let app = spawn_app(mongo_app("notice_keyset")).await;
    let alice = app.user("o_alice_keyset", "alice").await;
    let bob = app.user("o_bob_keyset", "bob").await;

    let mut public = Vec::new();
    for i in 0..7 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        public.push(posted(&app, who, json!({ "content": format!("n{i}") })).await);
        if i == 3 {
            // Notices the feed never shows, between public ones.
            posted(&app, &alice, json!({"content": "hidden", "visibility": "private"})).await;
            let banned = posted(&app, &bob, json!({"content": "spam"})).await;
            assert_eq!(ban(&app, &banned, &[ADMIN]).await.status, 200);
        }
    }
    let expected: Vec<String> = public.iter().rev().cloned().collect();

    // Default limit (20): everything, newest first, no next page.
    let all = feed(&app, "").await;
    assert_eq!(ids(&all), expected);
    assert_eq!(contents(&all), ["n6", "n5", "n4", "n3", "n2", "n1", "n0"]);
    assert_eq!(next_cursor(&all), None);

    // Pages of 3 with new notices posted between the fetches.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=3&cursor={c}"),
            None => "?limit=3".to_owned(),
        };
        let page = feed(&app, &query).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 3, "{:?}", page.body);
        seen.extend(page_ids);
        pages += 1;
        posted(&app, &bob, json!({ "content": format!("new after page {pages}") })).await;
        match next_cursor(&page) {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "no duplicates, no gaps");

    // The new notices are on a fresh first page, newest first.
    let first = feed(&app, "?limit=3").await;
    assert_eq!(contents(&first), ["new after page 3", "new after page 2", "new after page 1"]);
    assert!(next_cursor(&first).is_some());

    // A page exactly as long as the limit has a cursor; the page after it is empty.
    let full = feed(&app, "?limit=10").await;
    assert_eq!(ids(&full).len(), 10);
    let rest = feed(&app, &format!("?limit=10&cursor={}", next_cursor(&full).unwrap())).await;
    assert_eq!(ids(&rest), Vec::<String>::new());
    assert_eq!(next_cursor(&rest), None);
    let max = feed(&app, "?limit=50").await;
    assert_eq!(ids(&max).len(), 10);
    let one = feed(&app, "?limit=1").await;
    assert_eq!(contents(&one), ["new after page 3"]);
}

#[tokio::test]
async fn feed_rejects_bad_paging() {
    let app = spawn_app(mongo_app("notice_bad_paging")).await;
    let alice = app.user("o_alice_paging", "alice").await;
    for i in 0..2 {
        posted(&app, &alice, json!({ "content": format!("n{i}") })).await;
    }
    for query in [
        "?cursor=not-a-cursor!",
        "?cursor=aGVsbG8",                  // base64 of "hello"
        "?cursor=0123456789abcdef01234567", // an id, but not a cursor
        "?cursor=",
        "?limit=0",
        "?limit=51",
        "?limit=-1",
        "?limit=ten",
        "?pageno=0&pagesize=2",
        "?pageno=1&pagesize=0",
        "?pageno=1&pagesize=51",
        "?pageno=x",
        "?pageno=1&cursor=aGVsbG8",
        "?page=2",
    ] {
        let a = app.get(&format!("/applet/notices{query}"), &[]).await;
        assert_error(&a, 400, "ERR_INVALID_REQUEST");
        let a = app.get(&format!("/applet/notices/mine{query}"), &[alice.auth()]).await;
        if !query.contains("pageno") {
            assert_error(&a, 400, "ERR_INVALID_REQUEST");
        }
    }
    // A real cursor works on both.
    let page = feed(&app, "?limit=1").await;
    let cursor = next_cursor(&page).unwrap();
    assert_eq!(contents(&feed(&app, &format!("?limit=1&cursor={cursor}")).await), ["n0"]);
}

#[tokio::test]
async fn feed_supports_the_original_pageno_and_pagesize() {
    let app = spawn_app(mongo_app("notice_pageno")).await;
    let alice = app.user("o_alice_pageno", "alice").await;
    for i in 0..5 {
        posted(&app, &alice, json!({ "content": format!("n{i}") })).await;
    }
    posted(&app, &alice, json!({"content": "private", "visibility": "private"})).await;

    let p1 = feed(&app, "?pageno=1&pagesize=2").await;
    assert_eq!(contents(&p1), ["n4", "n3"]);
    assert_eq!(next_cursor(&p1), None, "offset paging has no cursor");
    assert_eq!(contents(&feed(&app, "?pageno=2&pagesize=2").await), ["n2", "n1"]);
    assert_eq!(contents(&feed(&app, "?pageno=3&pagesize=2").await), ["n0"]);
    assert!(contents(&feed(&app, "?pageno=4&pagesize=2").await).is_empty());
    // `limit` stands in for `pagesize`; without either the page size is 20.
    assert_eq!(contents(&feed(&app, "?pageno=2&limit=3").await), ["n1", "n0"]);
    assert_eq!(contents(&feed(&app, "?pageno=1").await), ["n4", "n3", "n2", "n1", "n0"]);
}

#[tokio::test]
async fn mine_lists_every_own_state_and_nobody_elses() {
    let app = spawn_app(mongo_app("notice_mine")).await;
    let alice = app.user("o_alice_mine", "alice").await;
    let bob = app.user("o_bob_mine", "bob").await;

    let public = posted(&app, &alice, json!({"content": "public one"})).await;
    let bobs = posted(&app, &bob, json!({"content": "bob's"})).await;
    let private =
        posted(&app, &alice, json!({"content": "private one", "visibility": "private"})).await;
    let banned = posted(&app, &alice, json!({"content": "banned one"})).await;
    assert_eq!(ban(&app, &banned, &[ADMIN]).await.status, 200);

    let m = mine(&app, &alice, "").await;
    assert_eq!(ids(&m), [banned.clone(), private.clone(), public.clone()]);
    let states: Vec<&str> = m.body["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["banned", "private", "public"]);
    assert_eq!(m.body["notices"][0]["banned"], true);
    assert_eq!(m.body["notices"][0]["visibility"], "public");
    assert_eq!(next_cursor(&m), None);
    assert_no_openid(&m, &alice.openid);

    assert_eq!(ids(&mine(&app, &bob, "").await), [bobs.as_str()]);
    let carol = app.user("o_carol_mine", "carol").await;
    let c = mine(&app, &carol, "").await;
    assert_eq!(c.body, json!({"notices": [], "nextCursor": null}));

    // Paged by limit + cursor (or the original's pagesize).
    let p1 = mine(&app, &alice, "?limit=2").await;
    assert_eq!(ids(&p1), [banned.clone(), private.clone()]);
    let p2 = mine(&app, &alice, &format!("?limit=2&cursor={}", next_cursor(&p1).unwrap())).await;
    assert_eq!(ids(&p2), [public.as_str()]);
    assert_eq!(next_cursor(&p2), None);
    assert_eq!(ids(&mine(&app, &alice, "?pagesize=1").await), [banned.as_str()]);
    // Offset paging is the public feed's compatibility mode only; here it is refused, not ignored.
    let a = app.get("/applet/notices/mine?pageno=2&pagesize=1", &[alice.auth()]).await;
    assert_error(&a, 400, "ERR_INVALID_REQUEST");

    let a = app.get("/applet/notices/mine", &[]).await;
    assert_error(&a, 401, "ERR_NOT_LOGGED_IN");
}

#[tokio::test]
async fn only_the_author_edits_and_edits_are_validated() {
    let app = spawn_app(mongo_app("notice_patch")).await;
    let alice = app.user("o_alice_patch", "alice").await;
    let bob = app.user("o_bob_patch", "bob").await;
    let older = posted(&app, &alice, json!({"content": "older"})).await;
    let id = posted(
        &app,
        &alice,
        json!({"content": "original", "photos": ["https://img.example/a.jpg"]}),
    )
    .await;
    let newer = posted(&app, &bob, json!({"content": "newer"})).await;
    let path = format!("/applet/notices/{id}");

    // Content only.
    let e = app.patch(&path, &[alice.auth()], &json!({"content": "  edited  "})).await;
    assert_eq!(e.status, 200, "{:?}", e.body);
    assert_eq!(e.body["id"], id.as_str());
    assert_eq!(e.body["content"], "edited");
    assert_eq!(e.body["photos"], json!(["https://img.example/a.jpg"]));
    assert_eq!(e.body["state"], "public");
    assert_eq!(e.body["authorNickName"], "alice");
    let created = e.body["createdAt"].clone();
    assert!(time(&e.body["updatedAt"]) >= time(&created));
    assert_no_openid(&e, &alice.openid);

    // Private: leaves the feed, stays in mine.
    let e = app.patch(&path, &[alice.auth()], &json!({"visibility": "private"})).await;
    assert_eq!(e.status, 200, "{:?}", e.body);
    assert_eq!(e.body["visibility"], "private");
    assert_eq!(e.body["state"], "private");
    assert_eq!(e.body["content"], "edited");
    assert_eq!(e.body["createdAt"], created);
    assert_eq!(ids(&feed(&app, "").await), [newer.clone(), older.clone()]);
    let m = mine(&app, &alice, "").await;
    assert_eq!(ids(&m), [id.clone(), older.clone()]);
    assert_eq!(m.body["notices"][0]["state"], "private");
    // Public again: back in its place.
    let e = app.patch(&path, &[alice.auth()], &json!({"visibility": "public"})).await;
    assert_eq!(e.body["state"], "public", "{:?}", e.body);
    assert_eq!(ids(&feed(&app, "").await), [newer.clone(), id.clone(), older.clone()]);

    // Someone else: 403, with or without content; nothing changes.
    for body in [json!({"content": "hacked"}), json!({"visibility": "private"})] {
        let a = app.patch(&path, &[bob.auth()], &body).await;
        assert_error(&a, 403, "ERR_FORBIDDEN");
    }
    let f = feed(&app, "").await;
    assert_eq!(contents(&f), ["newer", "edited", "older"]);

    // Unknown id: 404, with or without content.
    for body in [json!({"content": "x"}), json!({"visibility": "private"})] {
        let a = app.patch(&format!("/applet/notices/{UNKNOWN_ID}"), &[alice.auth()], &body).await;
        assert_error(&a, 404, "ERR_NOT_FOUND");
    }
    // Not an id: 400.
    for bad in [
        "xyz",
        "123",
        "0123456789abcdef0123456",
        "0123456789abcdef012345678",
        "zz23456789abcdef01234567",
    ] {
        let a = app
            .patch(&format!("/applet/notices/{bad}"), &[alice.auth()], &json!({"content": "x"}))
            .await;
        assert_error(&a, 400, "ERR_INVALID_REQUEST");
    }
    // Bad bodies: 400.
    for body in [
        json!({}),
        json!({"content": null, "visibility": null}),
        json!({"content": "   "}),
        json!({"content": "a".repeat(2001)}),
        json!({"visibility": "friends"}),
        json!({"content": "x", "photos": []}),
        json!({"state": "public"}),
    ] {
        let a = app.patch(&path, &[alice.auth()], &body).await;
        assert_error(&a, 400, "ERR_INVALID_REQUEST");
    }
    // Not logged in: 401.
    let a = app.patch(&path, &[], &json!({"content": "x"})).await;
    assert_error(&a, 401, "ERR_NOT_LOGGED_IN");

    let m = mine(&app, &alice, "").await;
    assert_eq!(contents(&m), ["edited", "older"]);
}

#[tokio::test]
async fn only_the_author_deletes_then_the_notice_is_gone() {
    let app = spawn_app(mongo_app("notice_delete")).await;
    let alice = app.user("o_alice_delete", "alice").await;
    let bob = app.user("o_bob_delete", "bob").await;
    let keep = posted(&app, &alice, json!({"content": "keep"})).await;
    let id = posted(&app, &alice, json!({"content": "delete me"})).await;
    let path = format!("/applet/notices/{id}");

    let a = app.delete(&path, &[]).await;
    assert_error(&a, 401, "ERR_NOT_LOGGED_IN");
    let a = app.delete(&path, &[bob.auth()]).await;
    assert_error(&a, 403, "ERR_FORBIDDEN");
    assert_eq!(ids(&feed(&app, "").await), [id.clone(), keep.clone()]);
    for bad in ["xyz", "123"] {
        let a = app.delete(&format!("/applet/notices/{bad}"), &[alice.auth()]).await;
        assert_error(&a, 400, "ERR_INVALID_REQUEST");
    }
    let a = app.delete(&format!("/applet/notices/{UNKNOWN_ID}"), &[alice.auth()]).await;
    assert_error(&a, 404, "ERR_NOT_FOUND");

    let a = app.delete(&path, &[alice.auth()]).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body, json!({"ok": true}));
    assert_error(&app.delete(&path, &[alice.auth()]).await, 404, "ERR_NOT_FOUND");
    assert_error(&app.delete(&path, &[bob.auth()]).await, 404, "ERR_NOT_FOUND");
    let a = app.patch(&path, &[alice.auth()], &json!({"content": "back?"})).await;
    assert_error(&a, 404, "ERR_NOT_FOUND");
    assert_error(&ban(&app, &id, &[ADMIN]).await, 404, "ERR_NOT_FOUND");
    assert_eq!(ids(&feed(&app, "").await), [keep.as_str()]);
    assert_eq!(ids(&mine(&app, &alice, "").await), [keep]);
}

#[tokio::test]
async fn moderation_needs_the_admin_token_and_bans_and_unbans() {
    let app = spawn_app(mongo_app("notice_moderation")).await;
    let alice = app.user("o_alice_moderation", "alice").await;
    let id = posted(&app, &alice, json!({"content": "questionable"})).await;
    let other = posted(&app, &alice, json!({"content": "fine"})).await;
    let posted_at = mine(&app, &alice, "").await.body["notices"][1]["updatedAt"].clone();

    // Without or with a wrong token: 401, for ban and unban, before the id is looked at.
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "Bearer adm2")],
        vec![("Authorization", "Bearer ad")],
        vec![("Authorization", "Bearer ")],
        vec![("Authorization", "adm")],
        vec![("Authorization", "Basic adm")],
        vec![("X-Admin-Token", "adm")],
        vec![alice.auth()],
    ] {
        for target in [id.as_str(), "xyz", UNKNOWN_ID] {
            assert_error(&ban(&app, target, &headers).await, 401, "ERR_ADMIN_UNAUTHORIZED");
            assert_error(&unban(&app, target, &headers).await, 401, "ERR_ADMIN_UNAUTHORIZED");
        }
    }
    assert_eq!(ids(&feed(&app, "").await), [other.clone(), id.clone()]);

    // Bad and unknown ids with the right token.
    for bad in ["xyz", "123"] {
        assert_error(&ban(&app, bad, &[ADMIN]).await, 400, "ERR_INVALID_REQUEST");
        assert_error(&unban(&app, bad, &[ADMIN]).await, 400, "ERR_INVALID_REQUEST");
    }
    assert_error(&ban(&app, UNKNOWN_ID, &[ADMIN]).await, 404, "ERR_NOT_FOUND");
    assert_error(&unban(&app, UNKNOWN_ID, &[ADMIN]).await, 404, "ERR_NOT_FOUND");

    // Ban: gone from the feed, banned in the author's list; idempotent.
    let b = ban(&app, &id, &[ADMIN]).await;
    assert_eq!(b.status, 200, "{:?}", b.body);
    assert_eq!(b.body["id"], id.as_str());
    assert_eq!(b.body["state"], "banned");
    assert_eq!(b.body["banned"], true);
    assert_eq!(b.body["visibility"], "public");
    assert_eq!(b.body["updatedAt"], posted_at, "moderation is not an author change");
    assert_no_openid(&b, &alice.openid);
    assert_eq!(ban(&app, &id, &[ADMIN]).await.body["state"], "banned");
    assert_eq!(ids(&feed(&app, "").await), [other.as_str()]);
    let m = mine(&app, &alice, "").await;
    assert_eq!(ids(&m), [other.clone(), id.clone()]);
    assert_eq!(m.body["notices"][1]["state"], "banned");

    // The author making a banned notice private keeps it banned; unban then
    // restores the author's choice.
    let e = app
        .patch(&format!("/applet/notices/{id}"), &[alice.auth()], &json!({"visibility": "private"}))
        .await;
    assert_eq!(e.status, 200, "{:?}", e.body);
    assert_eq!(e.body["state"], "banned");
    assert_eq!(e.body["visibility"], "private");
    let u = unban(&app, &id, &[ADMIN]).await;
    assert_eq!(u.status, 200, "{:?}", u.body);
    assert_eq!(u.body["state"], "private");
    assert_eq!(u.body["banned"], false);
    assert_eq!(ids(&feed(&app, "").await), [other.as_str()]);

    // Public again, then unban of a notice that is not banned is a no-op.
    let e = app
        .patch(&format!("/applet/notices/{id}"), &[alice.auth()], &json!({"visibility": "public"}))
        .await;
    assert_eq!(e.body["state"], "public", "{:?}", e.body);
    assert_eq!(unban(&app, &id, &[ADMIN]).await.body["state"], "public");
    assert_eq!(ids(&feed(&app, "").await), [other.clone(), id.clone()]);
}

#[tokio::test]
async fn moderation_without_a_configured_admin_token_is_closed() {
    let app = spawn_app(roomy(AppOptions::redis("notice_no_admin").mongo("notice_no_admin"))).await;
    let alice = app.user("o_alice_no_admin", "alice").await;
    let id = posted(&app, &alice, json!({"content": "hello"})).await;
    for headers in [vec![], vec![ADMIN], vec![("Authorization", "Bearer ")]] {
        for target in [id.as_str(), "xyz", UNKNOWN_ID] {
            assert_error(&ban(&app, target, &headers).await, 401, "ERR_ADMIN_UNAUTHORIZED");
            assert_error(&unban(&app, target, &headers).await, 401, "ERR_ADMIN_UNAUTHORIZED");
        }
    }
    assert_eq!(ids(&feed(&app, "").await), [id]);
}

#[tokio::test]
async fn an_empty_admin_token_does_not_open_moderation() {
    let app = spawn_app(
        roomy(AppOptions::redis("notice_empty_admin").mongo("notice_empty_admin"))
            .with("notices.admin_token", ""),
    )
    .await;
    let alice = app.user("o_alice_empty_admin", "alice").await;
    let id = posted(&app, &alice, json!({"content": "hello"})).await;
    for headers in [vec![], vec![("Authorization", "Bearer ")], vec![("Authorization", "Bearer")]] {
        assert_error(&ban(&app, &id, &headers).await, 401, "ERR_ADMIN_UNAUTHORIZED");
    }
    assert_eq!(ids(&feed(&app, "").await), [id]);
}

#[tokio::test]
async fn content_security_rejects_risky_text_when_enabled() {
    let app = spawn_app(mongo_app("notice_secure").with("notices.content_security", true)).await;
    app.fake.set_risky_words(vec!["badword".into()]);
    let alice = app.user("o_alice_secure", "alice").await;
    let bob = app.user("o_bob_secure", "bob").await;
    let checks = || app.fake.stats().calls_to(MSG_SEC_CHECK);
    assert_eq!(checks(), 0);

    // Risky: 422, nothing stored.
    let a = post(&app, &alice, json!({"content": "this has a badword in it"})).await;
    assert_error(&a, 422, "ERR_CONTENT_RISKY");
    assert_eq!(checks(), 1);
    let a = post(&app, &alice, json!({"content": "badword", "visibility": "private"})).await;
    assert_error(&a, 422, "ERR_CONTENT_RISKY");
    assert_eq!(checks(), 2);
    assert_eq!(mine(&app, &alice, "").await.body, json!({"notices": [], "nextCursor": null}));
    assert!(ids(&feed(&app, "").await).is_empty());

    // Invalid requests are refused before any check.
    let a = post(&app, &alice, json!({"content": "  "})).await;
    assert_error(&a, 400, "ERR_INVALID_REQUEST");
    let a =
        post(&app, &alice, json!({"content": "badword", "photos": ["http://x.example/a"]})).await;
    assert_error(&a, 400, "ERR_INVALID_REQUEST");
    assert_eq!(checks(), 2);

    // Clean: 201, one check each.
    let id = posted(&app, &alice, json!({"content": "a good word"})).await;
    assert_eq!(checks(), 3);
    assert_eq!(contents(&feed(&app, "").await), ["a good word"]);

    // Edits: risky content is refused and the notice is unchanged.
    let path = format!("/applet/notices/{id}");
    let a = app.patch(&path, &[alice.auth()], &json!({"content": "now a badword"})).await;
    assert_error(&a, 422, "ERR_CONTENT_RISKY");
    assert_eq!(checks(), 4);
    let a = app
        .patch(&path, &[alice.auth()], &json!({"content": "badword", "visibility": "private"}))
        .await;
    assert_error(&a, 422, "ERR_CONTENT_RISKY");
    assert_eq!(checks(), 5);
    let f = feed(&app, "").await;
    assert_eq!(contents(&f), ["a good word"]);
    assert_eq!(f.body["notices"][0]["state"], "public");
    // Someone else's or an unknown notice: no check is spent on it.
    let a = app.patch(&path, &[bob.auth()], &json!({"content": "something clean"})).await;
    assert_error(&a, 403, "ERR_FORBIDDEN");
    let a = app
        .patch(&format!("/applet/notices/{UNKNOWN_ID}"), &[alice.auth()], &json!({"content": "x"}))
        .await;
    assert_error(&a, 404, "ERR_NOT_FOUND");
    assert_eq!(checks(), 5);
    // A clean edit passes; a visibility-only edit needs no check.
    let e = app.patch(&path, &[alice.auth()], &json!({"content": "a better word"})).await;
    assert_eq!(e.status, 200, "{:?}", e.body);
    assert_eq!(e.body["content"], "a better word");
    assert_eq!(checks(), 6);
    let e = app.patch(&path, &[alice.auth()], &json!({"visibility": "private"})).await;
    assert_eq!(e.body["state"], "private", "{:?}", e.body);
    assert_eq!(checks(), 6);

    // The risky words are WeChat's call: once cleared, the text passes.
    app.fake.set_risky_words(Vec::new());
    let a = post(&app, &bob, json!({"content": "badword"})).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(checks(), 7);
}

#[tokio::test]
async fn content_security_without_an_access_token_is_the_gateways_502() {
    // Two gateways share the sessions and the notices; the second one's
    // AppSecret is wrong, so it cannot get an access token for msgSecCheck.
    let url = support::redis::shared_redis_url();
    let prefix = support::redis::unique_prefix("notice_no_token");
    let db = support::mongo::unique_db("notice_no_token");
    let shared = || {
        let store = support::app::StoreChoice::Redis { url: url.clone(), prefix: prefix.clone() };
        roomy(AppOptions { store, extra: vec![], clock: None })
            .mongo("notice_no_token")
            .with("mongodb.database", db.clone())
            .with("notices.content_security", true)
    };
    let healthy = spawn_app(shared()).await;
    let alice = healthy.user("o_alice_no_token", "alice").await;
    let id = posted(&healthy, &alice, json!({"content": "checked and posted"})).await;
    let broken = spawn_app(shared().with("wechat.app_secret", "not-the-app-secret")).await;

    let a = post(&broken, &alice, json!({"content": "a clean text"})).await;
    assert_error(&a, 502, "ERR_WECHAT_API_FAILED");
    assert_eq!(a.body["error"]["detail"]["errcode"], 40125, "{a:?}");
    let a = broken
        .patch(&format!("/applet/notices/{id}"), &[alice.auth()], &json!({"content": "edited"}))
        .await;
    assert_error(&a, 502, "ERR_WECHAT_API_FAILED");
    // The healthy gateway's token (shared in Redis) means nothing to the
    // broken one's WeChat (40001): each request tried it once, then the
    // forced refresh failed with 40125. No request was retried after that.
    assert_eq!(broken.fake.stats().calls_to(MSG_SEC_CHECK), 2);
    assert_eq!(contents(&mine(&healthy, &alice, "").await), ["checked and posted"]);
}

#[tokio::test]
async fn content_security_off_makes_no_checks() {
    let app = spawn_app(mongo_app("notice_insecure")).await;
    app.fake.set_risky_words(vec!["badword".into()]);
    let alice = app.user("o_alice_insecure", "alice").await;
    let id = posted(&app, &alice, json!({"content": "a badword"})).await;
    let e = app
        .patch(&format!("/applet/notices/{id}"), &[alice.auth()], &json!({"content": "badword 2"}))
        .await;
    assert_eq!(e.status, 200, "{:?}", e.body);
    assert_eq!(contents(&feed(&app, "").await), ["badword 2"]);
    assert_eq!(app.fake.stats().calls_to(MSG_SEC_CHECK), 0);
}

#[tokio::test]
async fn review_findings_stay_fixed() {
    let app = spawn_app(
        roomy(AppOptions::redis("notices_review").mongo("notices_review"))
            .with("notices.admin_token", "adm"),
    )
    .await;
    let alice = app.user("o_rev_a", "a").await;
    let bob = app.user("o_rev_b", "b").await;

    // A huge pageno is a 400, not an overflow.
    let a = app.get("/applet/notices?pageno=400000000000000000&pagesize=50", &[]).await;
    assert_eq!((a.status, a.reason()), (400, Some("ERR_INVALID_REQUEST")));
    // A wrong method answers the envelope with 405.
    let a = app.get("/applet/pk/checkin", &[]).await;
    assert_eq!((a.status, a.reason()), (405, Some("ERR_METHOD_NOT_ALLOWED")));
    // pagesize works on the keyset feed too.
    for i in 0..3 {
        let r = app
            .post("/applet/notices", &[alice.auth()], &json!({"content": format!("n{i}")}))
            .await;
        assert_eq!(r.status, 201);
    }
    let a = app.get("/applet/notices?pagesize=2", &[]).await;
    assert_eq!(a.body["notices"].as_array().unwrap().len(), 2);
    // A private notice's existence is not revealed to others.
    let private = app
        .post(
            "/applet/notices",
            &[alice.auth()],
            &json!({"content": "secret", "visibility": "private"}),
        )
        .await;
    let id = private.body["id"].as_str().unwrap().to_owned();
    let p =
        app.patch(&format!("/applet/notices/{id}"), &[bob.auth()], &json!({"content": "x"})).await;
    assert_eq!((p.status, p.reason()), (404, Some("ERR_NOT_FOUND")));
    let d = app.delete(&format!("/applet/notices/{id}"), &[bob.auth()]).await;
    assert_eq!((d.status, d.reason()), (404, Some("ERR_NOT_FOUND")));
    // The admin bearer scheme is case-insensitive, like every bearer here.
    let b = app
        .post(&format!("/admin/notices/{id}/ban"), &[("Authorization", "bearer adm")], &json!(null))
        .await;
    assert_eq!(b.status, 200, "{:?}", b.body);
    // An oversized JSON body is a 413 envelope.
    let big = "x".repeat(3 * 1024 * 1024);
    let r = app.post("/applet/notices", &[alice.auth()], &json!({"content": big})).await;
    assert_eq!((r.status, r.reason()), (413, Some("ERR_PAYLOAD_TOO_LARGE")));
}

/// POST `body` to `path` with `headers`: status, `Retry-After`, JSON body.
async fn send_raw(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Option<u64>, Value) {
    let mut req = app.http.post(format!("{}{path}", app.base)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| {
        v.to_str().ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("Retry-After {v:?}"))
    });
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

/// A clock the test moves: seconds since the epoch.
fn movable_clock(start: DateTime<Utc>) -> (Arc<AtomicI64>, Clock) {
    let now = Arc::new(AtomicI64::new(start.timestamp()));
    let read = now.clone();
    let clock = Clock::from_fn(move || {
        Utc.timestamp_opt(read.load(Ordering::SeqCst), 0).single().unwrap_or_default()
    });
    (now, clock)
}

#[tokio::test]
async fn a_user_posting_in_a_loop_is_refused_after_the_limit_and_others_are_not() {
    let app = spawn_app(
        AppOptions::redis("notice_flood")
            .mongo("notice_flood")
            .with("notices.posts_per_minute", 5)
            .with("notices.posts_per_day", 50),
    )
    .await;
    let alice = app.user("o_alice_flood", "alice").await;
    let bob = app.user("o_bob_flood", "bob").await;
    for i in 0..12 {
        let (status, retry, body) = send_raw(
            &app,
            "/applet/notices",
            &[alice.auth()],
            &json!({"content": format!("n{i}")}),
        )
        .await;
        if i < 5 {
            assert_eq!((status, retry), (201, None), "post {i}: {body}");
        } else {
            assert_eq!(status, 429, "post {i}: {body}");
            assert_eq!(body["reason"], "ERR_TOO_MANY_REQUESTS", "{body}");
            let retry = retry.unwrap_or_else(|| panic!("no Retry-After: {body}"));
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
        }
    }
    // Exactly the first five were stored; bob's own limit is untouched.
    assert_eq!(contents(&mine(&app, &alice, "").await), ["n4", "n3", "n2", "n1", "n0"]);
    for i in 0..5 {
        posted(&app, &bob, json!({"content": format!("bob {i}")})).await;
    }
    // Invalid posts are refused before they count: a user is not locked out
    // by their own typos (and they never reach the store).
    let carol = app.user("o_carol_flood", "carol").await;
    for _ in 0..10 {
        assert_error(&post(&app, &carol, json!({"content": ""})).await, 400, "ERR_INVALID_REQUEST");
    }
    posted(&app, &carol, json!({"content": "carol"})).await;
}

#[tokio::test]
async fn the_daily_post_quota_is_counted_in_the_store_and_resets_at_midnight() {
    // 23:59 in Asia/Shanghai (pk.timezone): the day ends in 60 s.
    let start = Utc.with_ymd_and_hms(2026, 11, 21, 15, 59, 0).unwrap();
    let (now, clock) = movable_clock(start);
    let db = support::mongo::unique_db("notice_daily");
    let url = support::redis::shared_redis_url();
    let prefix = support::redis::unique_prefix("notice_daily");
    let options = || {
        let store = support::app::StoreChoice::Redis { url: url.clone(), prefix: prefix.clone() };
        AppOptions { store, extra: vec![], clock: None }
            .mongo("notice_daily")
            .with("mongodb.database", db.clone())
            .with("notices.posts_per_minute", 100)
            .with("notices.posts_per_day", 3)
            .clock(clock.clone())
    };
    let app = spawn_app(options()).await;
    let alice = app.user("o_alice_daily", "alice").await;
    for i in 0..3 {
        posted(&app, &alice, json!({"content": format!("d{i}")})).await;
    }
    let (status, retry, body) =
        send_raw(&app, "/applet/notices", &[alice.auth()], &json!({"content": "d3"})).await;
    assert_eq!((status, retry), (429, Some(60)), "{body}");
    assert_eq!(body["reason"], "ERR_TOO_MANY_REQUESTS");

    // Another instance on the same store (or this one restarted) knows.
    let other = spawn_app(options()).await;
    let (status, _, body) =
        send_raw(&other, "/applet/notices", &[alice.auth()], &json!({"content": "d3"})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(contents(&mine(&app, &alice, "").await), ["d2", "d1", "d0"]);

    // Past midnight in Shanghai: a new day.
    now.store(start.timestamp() + 60, Ordering::SeqCst);
    posted(&other, &alice, json!({"content": "next day"})).await;
}

#[tokio::test]
async fn deleting_notices_does_not_give_the_daily_post_quota_back() {
    let app = spawn_app(
        AppOptions::memory().with("notices.posts_per_minute", 100).with("notices.posts_per_day", 3),
    )
    .await;
    let alice = app.user("o_alice_churn", "alice").await;
    // Post and delete, again and again: the store never holds more than one.
    for i in 0..3 {
        let id = posted(&app, &alice, json!({"content": format!("c{i}")})).await;
        let d = app.delete(&format!("/applet/notices/{id}"), &[alice.auth()]).await;
        assert!(d.status < 300, "{:?}", d.body);
    }
    let (status, retry, body) =
        send_raw(&app, "/applet/notices", &[alice.auth()], &json!({"content": "c3"})).await;
    assert_eq!(status, 429, "a post-then-delete loop must still stop at the quota: {body}");
    assert!(retry.is_some(), "{body}");
    assert!(contents(&mine(&app, &alice, "").await).is_empty());
    // Someone else still posts.
    let bob = app.user("o_bob_churn", "bob").await;
    posted(&app, &bob, json!({"content": "b"})).await;
}

#[tokio::test]
async fn edits_are_limited_per_user_per_minute_and_per_day() {
    // Noon in Asia/Shanghai.
    let start = Utc.with_ymd_and_hms(2026, 11, 21, 4, 0, 0).unwrap();
    let (now, clock) = movable_clock(start);
    let app = spawn_app(
        roomy(AppOptions::redis("notice_edit_limit").mongo("notice_edit_limit"))
            .with("notices.edits_per_minute", 2)
            .with("notices.edits_per_day", 3)
            .clock(clock),
    )
    .await;
    let alice = app.user("o_alice_edits", "alice").await;
    let bob = app.user("o_bob_edits", "bob").await;
    let id = posted(&app, &alice, json!({"content": "v0"})).await;
    let bobs = posted(&app, &bob, json!({"content": "b0"})).await;
    let path = format!("/applet/notices/{id}");
    let edit = |v: &str| json!({ "content": v });
    for v in ["v1", "v2"] {
        let e = app.patch(&path, &[alice.auth()], &edit(v)).await;
        assert_eq!(e.status, 200, "{:?}", e.body);
    }
    // A third edit in the minute, of content or visibility: 429, nothing changed.
    let (status, retry, body) =
        patch_raw(&app, &path, &alice, &json!({"visibility": "private"})).await;
    assert_eq!((status, retry), (429, Some(60)), "{body}");
    assert_eq!(body["reason"], "ERR_TOO_MANY_REQUESTS");
    // Bob's own edits are not alice's.
    let e = app.patch(&format!("/applet/notices/{bobs}"), &[bob.auth()], &edit("b1")).await;
    assert_eq!(e.status, 200, "{:?}", e.body);
    // A minute later one more fits the day's three, then the day is used up
    // until midnight in Shanghai (12 h).
    now.fetch_add(60, Ordering::SeqCst);
    assert_eq!(app.patch(&path, &[alice.auth()], &edit("v3")).await.status, 200);
    now.fetch_add(60, Ordering::SeqCst);
    let (status, retry, body) = patch_raw(&app, &path, &alice, &edit("v4")).await;
    assert_eq!((status, retry), (429, Some(12 * 3600 - 120)), "{body}");
    let m = mine(&app, &alice, "").await;
    assert_eq!(
        (m.body["notices"][0]["content"].as_str(), m.body["notices"][0]["visibility"].as_str()),
        (Some("v3"), Some("public"))
    );
    now.fetch_add(12 * 3600, Ordering::SeqCst);
    assert_eq!(app.patch(&path, &[alice.auth()], &edit("v5")).await.status, 200);
}

/// PATCH `body` to `path` as `user`: status, `Retry-After`, JSON body.
async fn patch_raw(
    app: &TestApp,
    path: &str,
    user: &User,
    body: &Value,
) -> (u16, Option<u64>, Value) {
    let r = app
        .http
        .patch(format!("{}{path}", app.base))
        .header(user.auth().0, user.auth().1)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_memory_notice_store_refuses_posts_past_its_capacity() {
    let app =
        spawn_app(roomy(AppOptions::redis("notice_cap")).with("data.memory_max_notices", 3)).await;
    let alice = app.user("o_alice_cap", "alice").await;
    let bob = app.user("o_bob_cap", "bob").await;
    let first = posted(&app, &alice, json!({"content": "1"})).await;
    posted(&app, &alice, json!({"content": "2"})).await;
    posted(&app, &bob, json!({"content": "3"})).await;
    for who in [&alice, &bob] {
        let a = post(&app, who, json!({"content": "one too many"})).await;
        assert_error(&a, 507, "ERR_STORAGE_FULL");
    }
    assert_eq!(contents(&feed(&app, "").await), ["3", "2", "1"]);
    // Deleting makes room again.
    let d = app.delete(&format!("/applet/notices/{first}"), &[alice.auth()]).await;
    assert_eq!(d.status, 200, "{:?}", d.body);
    posted(&app, &bob, json!({"content": "4"})).await;
}

#[tokio::test]
async fn failed_admin_attempts_lock_the_address_out_and_no_other() {
    let app = spawn_app(
        AppOptions::redis("notice_admin_lock")
            .mongo("notice_admin_lock")
            .with("notices.admin_token", ADMIN_TOKEN)
            .with("server.trusted_proxies", json!(["127.0.0.1"])),
    )
    .await;
    let alice = app.user("o_alice_admin_lock", "alice").await;
    let id = posted(&app, &alice, json!({"content": "target"})).await;
    let path = format!("/admin/notices/{id}/ban");
    let from =
        |ip: &'static str, token: &'static str| [("X-Forwarded-For", ip), ("Authorization", token)];
    for i in 0..5 {
        let (status, _, body) =
            send_raw(&app, &path, &from("203.0.113.7", "Bearer wrong"), &Value::Null).await;
        assert_eq!(status, 401, "attempt {i}: {body}");
    }
    // The 6th wrong attempt, and then even the right token, from that address.
    for token in ["Bearer wrong", "Bearer adm"] {
        let (status, retry, body) =
            send_raw(&app, &path, &from("203.0.113.7", token), &Value::Null).await;
        assert_eq!(status, 429, "{token}: {body}");
        assert_eq!(body["reason"], "ERR_TOO_MANY_REQUESTS", "{body}");
        assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "Retry-After {retry:?}");
    }
    assert_eq!(ids(&feed(&app, "").await), [id.as_str()], "nothing was banned");
    // Another address still works, and so does an IPv6 host outside the /64.
    let (status, _, body) =
        send_raw(&app, &path, &from("203.0.113.8", "Bearer adm"), &Value::Null).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("banned")), "{body}");
    for i in 0..5 {
        let h = from("2001:db8:1:2::7", "Bearer wrong");
        assert_eq!(send_raw(&app, &path, &h, &Value::Null).await.0, 401, "v6 attempt {i}");
    }
    // The same /64 is the same host.
    let h = from("2001:db8:1:2:ffff::9", "Bearer adm");
    assert_eq!(send_raw(&app, &path, &h, &Value::Null).await.0, 429);
    let h = from("2001:db8:1:3::9", "Bearer adm");
    assert_eq!(send_raw(&app, &path, &h, &Value::Null).await.0, 200);
}

#[tokio::test]
async fn photo_urls_are_stored_normalised_and_unsafe_ones_refused() {
    let app = spawn_app(mongo_app("notice_photo_urls")).await;
    let alice = app.user("o_alice_photo_urls", "alice").await;
    for bad in [
        "https:///a.png",
        "https:\\\\evil.com\\a.png",
        "https://evil.com\\a.png",
        " https://img.example.com/a.png",
        "https://img.example.com/a.png ",
        "https://img.example.com/a b.png",
        "https://img.example.com/a\t.png",
        "https://img.example.com/a\n.png",
        "https://img.example.com/a\0.png",
        "https://img.example.com/a\u{1b}.png",
        "https://img.example.com/\u{202e}gnp.a",
        "https://img.example.com/\u{2066}a.png",
        "https://img.example.com/\u{200e}a.png",
        "https://img.example.com/\u{061c}a.png",
        "https://img.example.com/\u{feff}a.png",
        "https://img.example.com/\u{200b}a.png",
        "https://img.example.com/\u{200d}a.png",
        "https://img.example.com/a.png\"><script>alert(1)</script>",
        "https://user@img.example.com/a.png",
        "https://user:pw@img.example.com/a.png",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/a.png",
        "https://2852039166/a.png",
        "https://0xa9fea9fe/a.png",
        "https://0251.0376.0251.0376/a.png",
        "https://127.1/a.png",
        "https://img.example.com:8443/a.png",
        "https://img.example.com:0/a.png",
        "https://localhost/a.png",
        "http://img.example.com/a.png",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
    ] {
        let a = post(&app, &alice, json!({"content": "photo", "photos": [bad]})).await;
        assert_error(&a, 400, "ERR_INVALID_REQUEST");
    }
    assert!(ids(&mine(&app, &alice, "").await).is_empty(), "a refused photo was stored");

    let a = post(
        &app,
        &alice,
        json!({"content": "ok", "photos": [
            "HTTPS://Example.COM/a.png",
            "https://img.example.com:443/p/%7Ex.jpg?w=1",
            "https://例子.测试/照片.png",
        ]}),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let stored = json!([
        "https://example.com/a.png",
        "https://img.example.com/p/%7Ex.jpg?w=1",
        "https://xn--fsqu00a.xn--0zwm56d/%E7%85%A7%E7%89%87.png",
    ]);
    assert_eq!(a.body["photos"], stored);
    assert_eq!(mine(&app, &alice, "").await.body["notices"][0]["photos"], stored);
}

#[tokio::test]
async fn photo_hosts_narrow_photos_to_the_listed_hosts() {
    let app = spawn_app(
        mongo_app("notice_photo_hosts")
            .with("notices.photo_hosts", json!(["img.example.com", ".cdn.example.net"])),
    )
    .await;
    let alice = app.user("o_alice_photo_hosts", "alice").await;
    for ok in ["https://img.example.com/a.png", "https://b.cdn.example.net/a.png"] {
        assert_eq!(post(&app, &alice, json!({"content": "ok", "photos": [ok]})).await.status, 201);
    }
    for bad in [
        "https://evil.example.org/a.png",
        "https://cdn.example.net/a.png",
        "https://img.example.com.evil.org/a.png",
        "https://xcdn.example.net/a.png",
    ] {
        let a = post(&app, &alice, json!({"content": "bad", "photos": [bad]})).await;
        assert_error(&a, 400, "ERR_INVALID_REQUEST");
    }
    assert_eq!(contents(&mine(&app, &alice, "").await), ["ok", "ok"]);
}

#[tokio::test]
async fn content_with_controls_or_bidi_is_refused_and_invisibles_are_stripped() {
    let app = spawn_app(mongo_app("notice_text_clean")).await;
    let alice = app.user("o_alice_text_clean", "alice").await;
    let id = posted(&app, &alice, json!({"content": "clean"})).await;
    for bad in [
        "nul\0here",
        "esc\u{1b}[31mred",
        "tab\there",
        "cr\ronly",
        "del\u{7f}",
        "c1\u{85}",
        "evil\u{202e}txt.exe",
        "iso\u{2066}late",
        "mark\u{200f}",
        "arabic\u{061c}mark",
    ] {
        assert_error(
            &post(&app, &alice, json!({ "content": bad })).await,
            400,
            "ERR_INVALID_REQUEST",
        );
        let e = app
            .patch(&format!("/applet/notices/{id}"), &[alice.auth()], &json!({ "content": bad }))
            .await;
        assert_error(&e, 400, "ERR_INVALID_REQUEST");
    }
    let a = post(
        &app,
        &alice,
        json!({"content": "\u{feff}line 1\r\nline\u{200b} 2 👨\u{200d}👩\u{2060}"}),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["content"], "line 1\nline 2 👨\u{200d}👩");
    assert_eq!(contents(&mine(&app, &alice, "").await), ["line 1\nline 2 👨\u{200d}👩", "clean"]);
}

#[tokio::test]
async fn the_profile_copied_into_notices_is_cleaned() {
    let app = spawn_app(mongo_app("notice_profile_clean")).await;
    let minted = app.mint("o_profile_clean");
    let raw = json!({
        "nickName": " Eve\u{202e}lyn\u{0}\n\u{feff} ",
        "avatarUrl": "https://169.254.169.254/latest/meta-data",
    })
    .to_string();
    let sig = support::app::sign(&raw, &minted.session_key);
    let login =
        app.token_login(&json!({"code": minted.code, "rawData": raw, "signature": sig})).await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    let token = login.body["token"].as_str().unwrap().to_owned();
    let a = app.post("/applet/notices", &[("X-WX-Skey", &token)], &json!({"content": "hi"})).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["authorNickName"], "Evelyn");
    assert_eq!(a.body["authorAvatarUrl"], "");

    let minted = app.mint("o_profile_upper");
    let raw = json!({"nickName": "Zoë", "avatarUrl": "HTTPS://Thirdwx.QLOGO.cn/mmopen/a/132"})
        .to_string();
    let sig = support::app::sign(&raw, &minted.session_key);
    let login =
        app.token_login(&json!({"code": minted.code, "rawData": raw, "signature": sig})).await;
    let token = login.body["token"].as_str().unwrap().to_owned();
    let a = app.post("/applet/notices", &[("X-WX-Skey", &token)], &json!({"content": "hi"})).await;
    assert_eq!(a.body["authorNickName"], "Zoë");
    assert_eq!(a.body["authorAvatarUrl"], "https://thirdwx.qlogo.cn/mmopen/a/132");
}
