//! Runs every example under `examples/` as its own process and talks to it
//! over real HTTP the way a mini-program would: the example's own fake
//! WeChat mints a code, the test signs the profile with the session_key and
//! logs in through both dialects.
//!
//! `cargo test` (and `--all-targets`) builds the examples before the tests
//! run; a test that finds its example missing, or older than its source,
//! builds it first with `cargo build --example`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weapp_session::test_util::compat_login_headers;
use weapp_test_support::process::{Guarded, spawn_guarded};

const MAGIC: &str = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A";

/// One running example.
struct Example {
    process: Option<Guarded>,
    base: String,
    fake: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// An answer: status and JSON body (`Null` when the body is not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop(Duration::from_secs(5), false);
        }
    }
}

/// The example's binary next to this test's (`target/<profile>/examples/`),
/// built first when it is missing or older than its source.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("examples").join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(format!("{name}.rs"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stale = match (modified(&binary), modified(&source)) {
        (Some(built), Some(written)) => built < written,
        _ => true,
    };
    // One build at a time: the tests run in parallel threads.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let stale = stale
        && match (modified(&binary), modified(&source)) {
            (Some(built), Some(written)) => built < written,
            _ => true,
        };
    if stale {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "weapp-gateway", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    binary
}

impl Example {
    /// Starts example `name` with `env` and waits (≤ 60 s) for its
    /// "listening on http://A fake WeChat at http://F" line.
    fn start(name: &str, env: &[(&str, &str)]) -> Self {
        Self::start_on(name, env, 0)
    }

    fn start_on(name: &str, env: &[(&str, &str)], port: u16) -> Self {
        let binary = example_binary(name);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("example.log");
        // The supervisor runs `env K=V … binary`, so the example dies with this test.
        let mut args: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        args.push(format!("PORT={port}"));
        args.push(binary.display().to_string());
        let process = spawn_guarded("env", &args, &log, None).expect("start the example");
        let deadline = Instant::now() + Duration::from_secs(60);
        let (base, fake) = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let found = text.lines().find_map(|line| {
                let rest = line.strip_prefix("listening on ")?;
                let (base, fake) = rest.split_once(" fake WeChat at ")?;
                Some((base.to_owned(), fake.trim().to_owned()))
            });
            if let Some(found) = found {
                break found;
            }
            assert!(process.is_alive(), "example {name} exited:\n{text}");
            assert!(Instant::now() < deadline, "example {name} did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        // The test's reqwest is built without a default TLS provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client");
        Self { process: Some(process), base, fake, http, _dir: dir }
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the base URL")
    }

    /// Mints a `wx.login()` code at the example's fake WeChat.
    async fn mint(&self, openid: &str) -> (String, String) {
        let minted: Value = self
            .http
            .post(format!("{}/dev/codes", self.fake))
            .json(&json!({ "openid": openid }))
            .send()
            .await
            .expect("mint a code")
            .json()
            .await
            .expect("a minted code");
        let field = |k: &str| minted[k].as_str().expect("code and session_key").to_owned();
        (field("code"), field("session_key"))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the example answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("a body");
        Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    async fn get(&self, path: &str, headers: &[(&str, String)]) -> Answer {
        let mut request = self.http.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        self.send(request).await
    }

    async fn post(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        self.send(request).await
    }

    /// The compat dialect's first request: code, rawData, signature.
    async fn compat_login(&self, openid: &str, path: &str) -> (Answer, String) {
        let (code, session_key) = self.mint(openid).await;
        let raw = raw_data(&format!("{openid} 的画"));
        (self.get(path, &compat(&code, &raw, &session_key)).await, code)
    }

    /// A token login; answers the bearer header to send afterwards.
    async fn token_login(&self, openid: &str) -> (&'static str, String) {
        let (code, _) = self.mint(openid).await;
        let login = self
            .post("/applet/session/login", &[], json!({ "code": code }).to_string().into_bytes())
            .await;
        assert_eq!(login.status, 200, "{login:?}");
        let token = login.body["token"].as_str().expect("a token").to_owned();
        ("Authorization", format!("Bearer {token}"))
    }
}

/// A user profile as WeChat signs it.
fn raw_data(nick: &str) -> String {
    json!({ "nickName": nick, "gender": 1, "avatarUrl": "https://thirdwx.qlogo.cn/mmopen/vi_32/abc+def/132" })
        .to_string()
}

/// The compat headers, built with weapp-session's public test helpers.
fn compat(code: &str, raw: &str, session_key: &str) -> Vec<(&'static str, String)> {
    let headers = compat_login_headers(code, raw, session_key).expect("header-safe values");
    headers
        .iter()
        .filter_map(|(name, value)| {
            let name: &'static str = match name.as_str() {
                "x-wx-code" => "X-WX-Code",
                "x-wx-rawdata" => "X-WX-RawData",
                "x-wx-signature" => "X-WX-Signature",
                _ => return None,
            };
            Some((name, value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// The whole life of a user on an app with a `/applet/hello` route: refused
/// without a login, both dialects, a bad signature, logout.
async fn both_dialects(app: &Example) {
    let anonymous = app.get("/applet/hello", &[]).await;
    if anonymous.status == 200 {
        // bare_hyper's hello answers everybody and says who it knows.
        assert_eq!(anonymous.body["hello"], Value::Null);
    } else {
        assert_eq!(anonymous.status, 401, "{anonymous:?}");
        assert_eq!(anonymous.body[MAGIC], 1);
        assert_eq!(anonymous.body["reason"], "ERR_NOT_LOGGED_IN");
    }

    let (first, code) = app.compat_login("o_alice", "/applet/hello").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body["hello"], "o_alice");
    assert_eq!(first.body["dialect"], "Compat");
    // Later requests carry the code alone.
    let later = app.get("/applet/hello", &[("X-WX-Code", code)]).await;
    assert_eq!(later.body["hello"], "o_alice", "{later:?}");

    // A profile signed with the wrong key logs nobody in.
    let (code, _) = app.mint("o_mallory").await;
    let forged = compat(&code, &raw_data("mallory"), "bm90IHRoZSBzZXNzaW9uIGtleQ==");
    let refused = app.get("/applet/hello", &forged).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.body["reason"], "ERR_UNTRUSTED_RAW_DATA");

    let bearer = app.token_login("o_bob").await;
    let me = app.get("/applet/hello", std::slice::from_ref(&(bearer.0, bearer.1.clone()))).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.body["hello"], "o_bob");
    assert_eq!(me.body["dialect"], "Token");
    let out = app.post("/applet/session/logout", &[(bearer.0, bearer.1.clone())], Vec::new()).await;
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.body["ok"], true);
    let gone = app.get("/applet/hello", &[(bearer.0, bearer.1)]).await;
    assert_eq!(gone.status, 401, "{gone:?}");
}

#[tokio::test]
async fn axum_memory_serves_both_dialects_and_the_open_route() {
    let app = Example::start("axum_memory", &[]);
    both_dialects(&app).await;
    let open = app.get("/applet/open", &[]).await;
    assert_eq!(open.status, 200);
    assert_eq!(open.body["openid"], Value::Null);
    let bearer = app.token_login("o_carol").await;
    let open = app.get("/applet/open", &[bearer]).await;
    assert_eq!(open.body["openid"], "o_carol");
}

#[tokio::test]
async fn bare_hyper_serves_both_dialects_without_axum() {
    let app = Example::start("bare_hyper", &[]);
    both_dialects(&app).await;
    let missing = app.get("/nowhere", &[]).await;
    assert_eq!(missing.status, 404);
    // Login answers its own errors in the envelope.
    let bad = app.post("/applet/session/login", &[], b"{}".to_vec()).await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(bad.body[MAGIC], 1);
}

#[tokio::test]
async fn axum_redis_keeps_sessions_in_redis_across_a_restart() {
    let url = weapp_test_support::redis::shared_redis_url();
    let prefix = weapp_test_support::redis::unique_prefix("example");
    let env = [("REDIS_URL", url.as_str()), ("REDIS_PREFIX", prefix.as_str())];
    let first = Example::start("axum_redis", &env);
    both_dialects(&first).await;
    let bearer = first.token_login("o_dave").await;
    let port = first.port();
    drop(first);

    // The sessions live in Redis under the team's prefix…
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis");
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.expect("KEYS");
    assert!(!keys.is_empty(), "nothing stored under {prefix}");

    // …so a new process (with a new fake WeChat) still knows the token.
    let second = Example::start_on("axum_redis", &env, port);
    let me = second.get("/applet/hello", std::slice::from_ref(&bearer)).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.body["hello"], "o_dave");
}

#[tokio::test]
async fn drawings_are_saved_listed_and_private() {
    let app = Example::start("drawings", &[]);
    let alice = [app.token_login("o_alice").await];
    let bob = [app.token_login("o_bob").await];
    let actions = json!([
        { "type": "stroke", "color": "#222", "points": [[1, 2], [3, 4]] },
        { "type": "erase", "points": [[3, 4]] }
    ]);
    let save = |title: &str, actions: &Value| {
        json!({ "title": title, "actions": actions }).to_string().into_bytes()
    };

    let anonymous = app.post("/applet/drawings", &[], save("cat", &actions)).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");

    let cat = app.post("/applet/drawings", &alice, save("cat", &actions)).await;
    assert_eq!(cat.status, 201, "{cat:?}");
    let dog = app.post("/applet/drawings", &alice, save("dog", &json!([]))).await;
    assert_eq!(dog.status, 201);
    let bobs = app.post("/applet/drawings", &bob, save("bob's", &actions)).await;
    assert_eq!(bobs.status, 201);

    let listed = app.get("/applet/drawings", &alice).await;
    assert_eq!(listed.status, 200);
    let titles: Vec<&str> = listed.body["drawings"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|d| d["title"].as_str())
        .collect();
    assert_eq!(titles, ["dog", "cat"], "own drawings, newest first: {listed:?}");
    assert_eq!(listed.body["drawings"][1]["actions"], 2);

    let cat_id = cat.body["id"].as_u64().expect("an id");
    let opened = app.get(&format!("/applet/drawings/{cat_id}"), &alice).await;
    assert_eq!(opened.status, 200);
    assert_eq!(opened.body["actions"], actions);
    // Bob cannot open Alice's drawing, and cannot tell it exists.
    let peek = app.get(&format!("/applet/drawings/{cat_id}"), &bob).await;
    let nothing = app.get("/applet/drawings/999999", &bob).await;
    assert_eq!(peek.status, 404);
    assert_eq!((peek.status, &peek.body), (nothing.status, &nothing.body));

    let bad = app.post("/applet/drawings", &alice, b"{\"title\": 1}".to_vec()).await;
    assert_eq!(bad.status, 400);
    let huge = app.post("/applet/drawings", &alice, vec![b' '; 300 * 1024]).await;
    assert_eq!(huge.status, 413);
    let listed = app.get("/applet/drawings", &alice).await;
    assert_eq!(
        listed.body["drawings"].as_array().map(Vec::len),
        Some(2),
        "refused saves stored nothing"
    );
}
