//! Spawn the gateway on port 0 against a fake WeChat over real HTTP, and a
//! typed client with one method per session endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde_json::Value;
use weapp_gateway::clock::Clock;
use weapp_gateway::config::Config;
use weapp_gateway::server::Application;
use weapp_gateway::wechat::{FakeWeChat, MintedCode, encrypt_open_data};

/// The AppID every test app uses.
pub const APP_ID: &str = "wx_test_appid";
/// The AppSecret every test app uses (asserted absent from logs/errors).
pub const APP_SECRET: &str = "test-secret-do-not-leak";

/// Which session store the app uses.
pub enum StoreChoice {
    /// The in-memory store.
    Memory,
    /// Redis at this URL with this prefix.
    Redis { url: String, prefix: String },
}

/// Knobs for one test app. Durations are humantime strings ("2s").
pub struct AppOptions {
    pub store: StoreChoice,
    pub extra: Vec<(&'static str, Value)>,
    pub clock: Option<Clock>,
}

impl AppOptions {
    /// Memory store, defaults.
    pub fn memory() -> Self {
        Self { store: StoreChoice::Memory, extra: Vec::new(), clock: None }
    }

    /// PK records and notices in MongoDB at `uri`, in a database of this test's own.
    pub fn mongo_at(self, uri: String, test: &str) -> Self {
        self.with("data.store", "mongodb")
            .with("mongodb.uri", uri)
            .with("mongodb.database", super::mongo::unique_db(test))
            .with("mongodb.op_timeout", "2s")
            .with("mongodb.connect_timeout", "1s")
            // Tests check in on fixed dates; a long retention keeps those
            // records clear of the server's TTL sweep whatever today is.
            .with("pk.retention_days", 10_000)
    }

    /// PK records and notices in the shared test MongoDB.
    pub fn mongo(self, test: &str) -> Self {
        self.mongo_at(super::mongo::mongo_uri(), test)
    }

    /// Run the app on this clock.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Redis store on the shared test redis, with a prefix unique to `test`.
    pub fn redis(test: &str) -> Self {
        Self::redis_at(super::redis::shared_redis_url(), test)
    }

    /// Redis store at `url`, with a prefix unique to `test`.
    pub fn redis_at(url: String, test: &str) -> Self {
        let prefix = super::redis::unique_prefix(test);
        Self { store: StoreChoice::Redis { url, prefix }, extra: Vec::new(), clock: None }
    }

    /// Override one config key (dotted path).
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.extra.push((key, value.into()));
        self
    }
}

/// A running gateway plus its fake WeChat.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub fake: FakeWeChat,
    /// Where the fake WeChat listens (point another app's `wechat.api_base`
    /// at `http://{fake_addr}` to share it).
    pub fake_addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Start a fake WeChat and a gateway using it, both on loopback port 0.
pub async fn spawn_app(options: AppOptions) -> TestApp {
    let (fake, fake_addr) = FakeWeChat::spawn(APP_ID, APP_SECRET).await.expect("fake wechat");
    let mut figment = Figment::new().merge(Toml::string(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
             [wechat]\napp_id = \"{APP_ID}\"\napp_secret = \"{APP_SECRET}\"\n\
             api_base = \"http://{fake_addr}\"\ntimeout = \"2s\"\nconnect_timeout = \"1s\"\n"
    )));
    match options.store {
        StoreChoice::Memory => {}
        StoreChoice::Redis { url, prefix } => {
            figment = figment
                .merge(Serialized::default("session.store", "redis"))
                .merge(Serialized::default("redis.url", url))
                .merge(Serialized::default("redis.prefix", prefix))
                .merge(Serialized::default("redis.timeout", "1s"));
        }
    }
    for (key, value) in options.extra {
        figment = figment.merge(Serialized::default(key, value));
    }
    let config = Config::from_figment(figment).expect("test config");
    let clock = options.clock.unwrap_or_else(Clock::system);
    let app = Application::build_with_clock(config, clock).await.expect("build app");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_with_shutdown(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("client");
    TestApp { addr, base: format!("http://{addr}"), fake, fake_addr, http, stop: Some(stop) }
}

pub use super::wx::{encode_uri_component, sign};

/// A parsed answer: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The envelope's `reason`, when the body is an error envelope.
    pub fn reason(&self) -> Option<&str> {
        if self.body.get("F2C224D4-2BCE-4C64-AF9F-A6D872000D1A") == Some(&Value::from(1)) {
            self.body.get("reason").and_then(Value::as_str)
        } else {
            None
        }
    }
}

async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, body }
}

impl TestApp {
    /// Mint a fresh code for `openid` at the fake.
    pub fn mint(&self, openid: &str) -> MintedCode {
        self.fake.mint_code(openid, None, None)
    }

    /// `jscode2session` calls the fake has seen.
    pub fn exchanges(&self) -> u64 {
        self.fake.stats().jscode2session_calls
    }

    /// GET a path with arbitrary headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.send().await.expect("request")).await
    }

    /// POST JSON to a path with arbitrary headers.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.send().await.expect("request")).await
    }

    /// compat first request: code + encoded rawData + signature, on /applet/session/me.
    pub async fn compat_login(&self, code: &str, raw: &str, signature: &str) -> Answer {
        let encoded = encode_uri_component(raw);
        self.get(
            "/applet/session/me",
            &[("X-WX-Code", code), ("X-WX-RawData", &encoded), ("X-WX-Signature", signature)],
        )
        .await
    }

    /// compat later request: code only.
    pub async fn compat_me(&self, code: &str) -> Answer {
        self.get("/applet/session/me", &[("X-WX-Code", code)]).await
    }

    /// token login.
    pub async fn token_login(&self, body: &Value) -> Answer {
        self.post("/applet/session/login", &[], body).await
    }

    /// /me with a token.
    pub async fn token_me(&self, token: &str) -> Answer {
        self.get("/applet/session/me", &[("X-WX-Skey", token)]).await
    }

    /// token logout.
    pub async fn logout(&self, token: &str) -> Answer {
        self.post("/applet/session/logout", &[("X-WX-Skey", token)], &Value::Null).await
    }

    /// Send a raw HTTP/1.1 request `head` (request line and headers, without
    /// the blank line) plus `body`, wait `linger`, then close the socket
    /// without reading the answer: a client that went away mid-request.
    pub async fn hang_up_after(&self, head: &str, body: &str, linger: Duration) {
        use tokio::io::AsyncWriteExt;
        let mut socket = tokio::net::TcpStream::connect(self.addr).await.expect("connect");
        let request = format!(
            "{head}\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        socket.write_all(request.as_bytes()).await.expect("send");
        tokio::time::sleep(linger).await;
        drop(socket);
    }
}

/// A typical rawData for `openid`'s profile with a Chinese nickname.
pub fn raw_data(nick: &str) -> String {
    serde_json::json!({
        "nickName": nick,
        "gender": 1,
        "language": "zh_CN",
        "city": "Guangzhou",
        "province": "Guangdong",
        "country": "China",
        "avatarUrl": "https://thirdwx.qlogo.cn/mmopen/vi_32/abc+def/132"
    })
    .to_string()
}

/// A logged-in test user (token dialect, with a signed profile).
pub struct User {
    pub openid: String,
    pub token: String,
    pub session_key: String,
}

impl User {
    /// The auth header pair for this user.
    pub fn auth(&self) -> (&'static str, &str) {
        ("X-WX-Skey", self.token.as_str())
    }

    /// Encrypt `data` as WeChat would for this user (adds the watermark).
    pub fn encrypt(&self, data: Value) -> Value {
        encrypt_for(&self.session_key, data, APP_ID)
    }
}

/// Encrypt `data` with `session_key` as WeChat does, watermarked for `appid`.
pub fn encrypt_for(session_key: &str, mut data: Value, appid: &str) -> Value {
    use base64::Engine;
    if let Some(obj) = data.as_object_mut() {
        obj.entry("watermark")
            .or_insert(serde_json::json!({"appid": appid, "timestamp": 1_700_000_000}));
    }
    let mut iv = [0u8; 16];
    getrandom::fill(&mut iv).expect("random iv");
    let iv = base64::engine::general_purpose::STANDARD.encode(iv);
    let encrypted = encrypt_open_data(session_key, &data, &iv).expect("encrypt");
    serde_json::json!({"encryptedData": encrypted, "iv": iv})
}

impl TestApp {
    /// Log `openid` in with a signed profile (nickName/avatarUrl) and return it.
    pub async fn user(&self, openid: &str, nick: &str) -> User {
        let minted = self.mint(openid);
        let raw = serde_json::json!({"nickName": nick, "avatarUrl": format!("https://img.example/{nick}.png")})
            .to_string();
        let a = self
            .token_login(&serde_json::json!({"code": minted.code, "rawData": raw, "signature": sign(&raw, &minted.session_key)}))
            .await;
        assert_eq!(a.status, 200, "login failed: {:?}", a.body);
        User {
            openid: openid.to_owned(),
            token: a.body["token"].as_str().expect("token").to_owned(),
            session_key: minted.session_key,
        }
    }

    /// PATCH JSON to a path with headers.
    pub async fn patch(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
        let mut req = self.http.patch(format!("{}{path}", self.base)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.send().await.expect("request")).await
    }

    /// DELETE a path with headers.
    pub async fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.http.delete(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.send().await.expect("request")).await
    }
}
