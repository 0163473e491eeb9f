//! The `axum_memory` app with its sessions in Redis, so several instances
//! behind one load balancer share them (and a restart loses none).
//!
//! Run: `REDIS_URL=redis://127.0.0.1:6379/ cargo run --example axum_redis`
//! (a Redis must be running; the example starts its own fake WeChat).
//! `PORT` picks the port, `REDIS_PREFIX` the key prefix (default `demo:`). `tests/examples.rs` runs it against a real
//! `redis-server` and checks a session survives a restart of the app.

use std::net::SocketAddr;
use std::time::Duration;

use axum::{Json, Router, routing::get};
use serde_json::json;
use weapp_session::store::RedisStore;
use weapp_session::{ClientAddrLayer, WxSession, WxSessionLayer, redis, token_routes};
use weapp_wechat::{FakeWeChat, WeChatClient, WeChatConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url =
        std::env::var("REDIS_URL").map_err(|_| "set REDIS_URL, e.g. redis://127.0.0.1:6379/")?;
    // Only for this demo: a fake WeChat. In production: WeChatConfig::new(app_id, secret).
    let (_fake, fake_addr) = FakeWeChat::spawn("wx_demo", "demo-secret").await?;
    let mut wechat = WeChatConfig::new("wx_demo", "demo-secret".to_owned());
    wechat.api_base = format!("http://{fake_addr}");

    // --- the setup a backend team writes ---
    // The team's own connection (TLS, ACL user, timeouts are its choice), with
    // the `redis` version weapp-session speaks (re-exported).
    let conn = redis::Client::open(redis_url.as_str())?.get_connection_manager().await?;
    let prefix = std::env::var("REDIS_PREFIX").unwrap_or_else(|_| "demo:".to_owned());
    let store = RedisStore::from_connection_manager(conn, prefix, Duration::from_secs(2));
    let layer = WxSessionLayer::builder(store, WeChatClient::new(wechat)?).build();
    let app = Router::new()
        .route("/applet/hello", get(hello))
        .layer(layer.clone())
        .merge(token_routes(
            layer.engine().clone(),
            "/applet/session/login",
            "/applet/session/logout",
        ))
        .layer(
            ClientAddrLayer::new([])
                .with_peer(|ext| ext.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0)),
        );
    // --- end of the team's setup ---

    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0u16);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{} fake WeChat at http://{fake_addr}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}

/// Only for logged-in users.
async fn hello(user: WxSession) -> Json<serde_json::Value> {
    Json(json!({ "hello": user.openid(), "dialect": format!("{:?}", user.dialect()) }))
}
