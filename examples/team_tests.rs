//! A backend team's own tests, written the way the team would write them:
//! the team's app behind `WxSessionLayer`, WeChat played by the fake from
//! `weapp-wechat` (feature `fake`) on loopback, and the mini-program's side
//! built with the signing helpers of `weapp-session` (feature `test-util`).
//!
//! Run the tests: `cargo test --example team_tests` (`cargo test` runs them
//! too). `cargo run --example team_tests` serves the app on the fake.
//!
//! In the team's own `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! weapp-session = "0.1"
//! weapp-wechat = "0.1"
//!
//! [dev-dependencies]
//! weapp-session = { version = "0.1", features = ["test-util"] }
//! weapp-wechat = { version = "0.1", features = ["fake"] }
//! ```

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use weapp_session::{MemoryStore, WxSession, WxSessionLayer, token_routes};
use weapp_wechat::{FakeWeChat, WeChatClient, WeChatConfig};

/// The team's app: a greeting with the nickname from the signed profile.
fn app(wechat: WeChatClient) -> Router {
    let layer = WxSessionLayer::builder(MemoryStore::new(10_000), wechat).build();
    Router::new().route("/api/greeting", get(greeting)).layer(layer.clone()).merge(token_routes(
        layer.engine().clone(),
        "/api/login",
        "/api/logout",
    ))
}

/// `{"greeting": "你好, <nickName>"}` for the logged-in user.
async fn greeting(user: WxSession) -> Json<Value> {
    let profile: Value = serde_json::from_str(user.user_info().get()).unwrap_or(Value::Null);
    let nick = profile["nickName"].as_str().unwrap_or("friend");
    Json(json!({ "greeting": format!("你好, {nick}"), "openid": user.openid() }))
}

/// A WeChat client that talks to the fake at `fake`.
fn client_for(fake: std::net::SocketAddr) -> Result<WeChatClient, weapp_wechat::WeChatError> {
    let mut config = WeChatConfig::new("wx_team", "team-secret".to_owned());
    config.api_base = format!("http://{fake}");
    WeChatClient::new(config)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_fake, fake_addr) = FakeWeChat::spawn("wx_team", "team-secret").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{} fake WeChat at http://{fake_addr}", listener.local_addr()?);
    axum::serve(listener, app(client_for(fake_addr)?)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weapp_session::test_util::{compat_login_headers, token_login_body};
    use weapp_wechat::Faults;

    /// The fake WeChat and the team's app, both on loopback.
    struct World {
        fake: FakeWeChat,
        base: String,
        http: reqwest::Client,
    }

    async fn world() -> World {
        // This repository builds reqwest without a default TLS provider; a
        // team on reqwest's defaults does not need this line.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (fake, fake_addr) = FakeWeChat::spawn("wx_team", "team-secret").await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = app(client_for(fake_addr).unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        World { fake, base, http: reqwest::Client::builder().no_proxy().build().unwrap() }
    }

    const PROFILE: &str =
        r#"{"nickName":"小明","gender":1,"avatarUrl":"https://example.com/a.png"}"#;

    #[tokio::test]
    async fn a_compat_user_is_greeted_by_the_nickname_and_the_code_is_exchanged_once() {
        let w = world().await;
        let minted = w.fake.mint_code("o_xiaoming", None, None);
        let headers = compat_login_headers(&minted.code, PROFILE, &minted.session_key).unwrap();
        let first =
            w.http.get(format!("{}/api/greeting", w.base)).headers(headers).send().await.unwrap();
        assert_eq!(first.status(), 200);
        let body: Value = first.json().await.unwrap();
        assert_eq!(body["greeting"], "你好, 小明");
        assert_eq!(body["openid"], "o_xiaoming");

        // Later requests carry the code alone; WeChat is not asked again.
        let later =
            w.http.get(format!("{}/api/greeting", w.base)).header("X-WX-Code", &minted.code).send();
        assert_eq!(later.await.unwrap().status(), 200);
        assert_eq!(w.fake.stats().jscode2session_calls, 1);
    }

    #[tokio::test]
    async fn a_profile_signed_with_another_key_is_refused() {
        let w = world().await;
        let minted = w.fake.mint_code("o_mallory", None, None);
        let forged =
            compat_login_headers(&minted.code, PROFILE, "c29tZSBvdGhlciBrZXkhIQ==").unwrap();
        let answer =
            w.http.get(format!("{}/api/greeting", w.base)).headers(forged).send().await.unwrap();
        assert_eq!(answer.status(), 401);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["reason"], "ERR_UNTRUSTED_RAW_DATA");
    }

    #[tokio::test]
    async fn a_token_login_then_logout() {
        let w = world().await;
        let minted = w.fake.mint_code("o_token", None, None);
        let login = w
            .http
            .post(format!("{}/api/login", w.base))
            .body(token_login_body(&minted.code, PROFILE, &minted.session_key))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200);
        let token = login.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
        let greet = w.http.get(format!("{}/api/greeting", w.base)).bearer_auth(&token).send();
        assert_eq!(greet.await.unwrap().json::<Value>().await.unwrap()["greeting"], "你好, 小明");
        let out = w.http.post(format!("{}/api/logout", w.base)).bearer_auth(&token).send();
        assert_eq!(out.await.unwrap().status(), 200);
        let again = w.http.get(format!("{}/api/greeting", w.base)).bearer_auth(&token).send();
        assert_eq!(again.await.unwrap().status(), 401);
    }

    #[tokio::test]
    async fn wechat_down_is_a_502_not_a_hang() {
        let w = world().await;
        let mut faults = Faults::default();
        faults.http_500 = true;
        w.fake.set_faults(faults);
        let minted = w.fake.mint_code("o_unlucky", None, None);
        let headers = compat_login_headers(&minted.code, PROFILE, &minted.session_key).unwrap();
        let answer =
            w.http.get(format!("{}/api/greeting", w.base)).headers(headers).send().await.unwrap();
        assert_eq!(answer.status(), 502);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["reason"], "ERR_SESSION_KEY_EXCHANGE_FAILED");
    }
}
