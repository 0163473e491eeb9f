//! A backend team mounting `WxSessionLayer` in front of its own axum route.
//!
//! Run: `cargo run --example mount_layer` (starts its own fake WeChat on loopback).

use axum::{Router, routing::get};
use weapp_gateway::session::{MemoryStore, WxSession, WxSessionLayer, token_routes};
use weapp_gateway::wechat::{FakeWeChat, WeChatClient, WeChatConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only for this demo: a fake WeChat. In production: WeChatConfig::new(app_id, secret).
    let (_fake, fake_addr) = FakeWeChat::spawn("wx_demo", "demo-secret").await?;
    let mut wechat = WeChatConfig::new("wx_demo", "demo-secret".to_owned());
    wechat.api_base = format!("http://{fake_addr}");

    // --- the setup a backend team writes (≤15 lines) ---
    let store = MemoryStore::new(100_000); // or RedisStore for many instances
    let layer = WxSessionLayer::builder(store, WeChatClient::new(wechat)?).build();
    let app = Router::new()
        .route(
            "/applet/hello",
            get(|user: WxSession| async move { format!("hello {}", user.openid()) }),
        )
        .route(
            "/applet/open",
            get(|user: Option<WxSession>| async move {
                format!("{:?}", user.map(|u| u.openid().to_owned()))
            }),
        )
        .layer(layer.clone())
        .merge(token_routes(
            layer.engine().clone(),
            "/applet/session/login",
            "/applet/session/logout",
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "listening on http://{}/applet/hello (fake WeChat at {fake_addr})",
        listener.local_addr()?
    );
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .await?;
    Ok(())
}
