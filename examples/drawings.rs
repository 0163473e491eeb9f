//! The drawing app `weapp-session` shipped as its demo, rebuilt as a team's
//! own axum app behind `WxSessionLayer`: a user saves the serialized canvas
//! actions of a drawing and lists (and opens) their own drawings, never
//! anybody else's.
//!
//! Run: `cargo run --example drawings` (starts its own fake WeChat on
//! loopback). `PORT` picks the port. `tests/examples.rs` runs it.
//!
//! - `POST /applet/drawings` `{"title": "...", "actions": [...]}` → `201 {"id": n}`
//! - `GET /applet/drawings` → `{"drawings": [{"id", "title", "actions", "savedAt"}]}` (own, newest first)
//! - `GET /applet/drawings/{id}` → the drawing with its actions, or `404` when it is not the caller's
//!
//! Everything is bounded: the body (256 KiB), the actions per drawing, the
//! drawings per user and in all; over a bound the answer is `413`/`409`, and
//! nothing already saved is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use weapp_session::{ClientAddrLayer, MemoryStore, WxSession, WxSessionLayer, token_routes};
use weapp_wechat::{FakeWeChat, WeChatClient, WeChatConfig};

const MAX_BODY: usize = 256 * 1024;
const MAX_ACTIONS: usize = 10_000;
const MAX_TITLE_CHARS: usize = 100;
const MAX_PER_USER: usize = 50;
const MAX_DRAWINGS: usize = 100_000;

/// One saved drawing.
struct Drawing {
    id: u64,
    title: String,
    actions: Arc<Value>,
    saved_at: u64,
}

/// All drawings, by owner's openid.
#[derive(Default)]
struct Drawings {
    by_owner: HashMap<String, Vec<Drawing>>,
    total: usize,
    next_id: u64,
}

type Shared = Arc<Mutex<Drawings>>;

#[derive(Deserialize)]
struct NewDrawing {
    title: String,
    actions: Vec<Value>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only for this demo: a fake WeChat. In production: WeChatConfig::new(app_id, secret).
    let (_fake, fake_addr) = FakeWeChat::spawn("wx_demo", "demo-secret").await?;
    let mut wechat = WeChatConfig::new("wx_demo", "demo-secret".to_owned());
    wechat.api_base = format!("http://{fake_addr}");

    let layer =
        WxSessionLayer::builder(MemoryStore::new(100_000), WeChatClient::new(wechat)?).build();
    let app = Router::new()
        .route("/applet/drawings", get(list).post(save))
        .route("/applet/drawings/{id}", get(open))
        .with_state(Shared::default())
        .layer(DefaultBodyLimit::max(MAX_BODY))
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

    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0u16);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{} fake WeChat at http://{fake_addr}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}

/// Saves a drawing for the caller.
async fn save(
    user: WxSession,
    State(drawings): State<Shared>,
    body: axum::body::Bytes,
) -> Response {
    let new: NewDrawing = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "expected {\"title\": string, \"actions\": [...]}",
            );
        }
    };
    let title = new.title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return error(StatusCode::BAD_REQUEST, "the title must have 1 to 100 characters");
    }
    if new.actions.len() > MAX_ACTIONS {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "too many actions in one drawing");
    }
    let Ok(mut all) = drawings.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    let all = &mut *all;
    if all.total >= MAX_DRAWINGS {
        return error(StatusCode::CONFLICT, "the app holds as many drawings as it can");
    }
    let mine = all.by_owner.entry(user.openid().to_owned()).or_default();
    if mine.len() >= MAX_PER_USER {
        return error(StatusCode::CONFLICT, "you have saved as many drawings as you can");
    }
    all.next_id += 1;
    let id = all.next_id;
    mine.push(Drawing {
        id,
        title: title.to_owned(),
        actions: Arc::new(Value::Array(new.actions)),
        saved_at: now(),
    });
    all.total += 1;
    (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
}

/// The caller's drawings, newest first, without their actions.
async fn list(user: WxSession, State(drawings): State<Shared>) -> Response {
    let Ok(all) = drawings.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    let mine = all.by_owner.get(user.openid()).map(Vec::as_slice).unwrap_or_default();
    let listed: Vec<Value> = mine
        .iter()
        .rev()
        .map(|d| {
            let actions = d.actions.as_array().map_or(0, Vec::len);
            json!({ "id": d.id, "title": d.title, "actions": actions, "savedAt": d.saved_at })
        })
        .collect();
    Json(json!({ "drawings": listed })).into_response()
}

/// One of the caller's drawings with its actions; somebody else's is `404`
/// like one that does not exist, so ids reveal nothing.
async fn open(user: WxSession, State(drawings): State<Shared>, Path(id): Path<u64>) -> Response {
    let found = match drawings.lock() {
        Ok(all) => all
            .by_owner
            .get(user.openid())
            .and_then(|mine| mine.iter().find(|d| d.id == id))
            .map(|d| json!({ "id": d.id, "title": d.title, "actions": d.actions, "savedAt": d.saved_at })),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    match found {
        Some(drawing) => Json(drawing).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such drawing"),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
