//! A backend team's own axum app behind `WxSessionLayer`, sessions in memory
//! (one instance; see `axum_redis` for several).
//!
//! Run: `cargo run --example axum_memory` (starts its own fake WeChat on
//! loopback and prints both addresses). `PORT` picks the port (default: any).
//! `tests/examples.rs` runs it and logs in through both dialects.

use std::net::SocketAddr;

use axum::{Json, Router, routing::get};
use serde_json::json;
use weapp_session::{ClientAddrLayer, MemoryStore, WxSession, WxSessionLayer, token_routes};
use weapp_wechat::{FakeWeChat, WeChatClient, WeChatConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only for this demo: a fake WeChat. In production: WeChatConfig::new(app_id, secret).
    let (_fake, fake_addr) = FakeWeChat::spawn("wx_demo", "demo-secret").await?;
    let mut wechat = WeChatConfig::new("wx_demo", "demo-secret".to_owned());
    wechat.api_base = format!("http://{fake_addr}");

    // --- the setup a backend team writes ---
    let store = MemoryStore::new(100_000); // at most 100,000 sessions in this process
    let layer = WxSessionLayer::builder(store, WeChatClient::new(wechat)?).build();
    let app = Router::new()
        .route("/applet/hello", get(hello))
        .route("/applet/open", get(open))
        .layer(layer.clone())
        .merge(token_routes(
            layer.engine().clone(),
            "/applet/session/login",
            "/applet/session/logout",
        ))
        // The login rate limit keys on the client: the socket peer here (no proxy trusted).
        .layer(
            ClientAddrLayer::new([])
                .with_peer(|ext| ext.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0)),
        );
    // --- end of the team's setup ---

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port())).await?;
    println!("listening on http://{} fake WeChat at http://{fake_addr}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}

/// Only for logged-in users: the layer answers `401` before this runs otherwise.
async fn hello(user: WxSession) -> Json<serde_json::Value> {
    Json(json!({ "hello": user.openid(), "dialect": format!("{:?}", user.dialect()) }))
}

/// For everybody: `Option<WxSession>` is `None` without a login.
async fn open(user: Option<WxSession>) -> Json<serde_json::Value> {
    Json(json!({ "openid": user.as_ref().map(WxSession::openid) }))
}

/// `PORT` from the environment, or 0 (any free port).
fn port() -> u16 {
    std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0)
}
