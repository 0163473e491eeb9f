//! The layer on a bare axum `Router`, as a backend team mounts it: no gateway,
//! a memory store and an in-process exchanger (`weapp-wechat`'s fake WeChat
//! over HTTP is the gateway suite's business).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use weapp_session::test_util::compat_login_headers;
use weapp_session::{
    ClientAddrLayer, CodeExchanger, ERROR_MAGIC, ExchangeError, Exchanged, MemoryStore, WxSession,
    WxSessionLayerBuilder, require_login, token_routes,
};

/// A session_key shaped like WeChat's (base64 of 16 bytes).
const KEY: &str = "HyVFkGl5F5OQWJZZaNzBBg==";

/// `code-<openid>` exchanges to `<openid>`; anything else is WeChat's 40029.
#[derive(Default)]
struct WeChat {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl CodeExchanger for WeChat {
    async fn code2session(&self, code: &str) -> Result<Exchanged, ExchangeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match code.strip_prefix("code-") {
            Some(openid) => {
                Ok(Exchanged { openid: openid.into(), session_key: KEY.into(), unionid: None })
            }
            None => Err(ExchangeError::WeChat { errcode: 40029, errmsg: "invalid code".into() }),
        }
    }
}

fn app(
    builder: impl FnOnce(WxSessionLayerBuilder) -> WxSessionLayerBuilder,
) -> (Router, Arc<WeChat>) {
    let wechat = Arc::new(WeChat::default());
    let layer = builder(WxSessionLayerBuilder::from_arcs(
        Arc::new(MemoryStore::new(1_000)),
        wechat.clone(),
    ))
    .build();
    let app = Router::new()
        .route("/private", get(|| async { "secret" }))
        .route_layer(axum::middleware::from_fn(require_login))
        .route("/me", get(|user: WxSession| async move { user.openid().to_owned() }))
        .route(
            "/open",
            get(|user: Option<WxSession>| async move {
                user.map_or_else(|| "anonymous".to_owned(), |u| u.openid().to_owned())
            }),
        )
        .layer(layer.clone())
        .merge(token_routes(layer.engine().clone(), "/login", "/logout"));
    (app, wechat)
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn reason(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    assert_eq!(v[ERROR_MAGIC], 1, "{body}");
    v["reason"].as_str().map(str::to_owned)
}

fn login(code: &str) -> Request<Body> {
    Request::post("/login")
        .header("content-type", "application/json")
        .body(Body::from(json!({"code": code}).to_string()))
        .unwrap()
}

#[tokio::test]
async fn compat_headers_log_in_once_then_the_code_alone_is_the_session() {
    let (app, wechat) = app(|b| b);
    let raw = r#"{"nickName":"小明"}"#;
    let mut first = Request::get("/me").body(Body::empty()).unwrap();
    *first.headers_mut() = compat_login_headers("code-o_ming", raw, KEY).unwrap();
    assert_eq!(send(&app, first).await, (StatusCode::OK, "o_ming".to_owned()));
    let again = Request::get("/me").header("x-wx-code", "code-o_ming").body(Body::empty());
    assert_eq!(send(&app, again.unwrap()).await, (StatusCode::OK, "o_ming".to_owned()));
    assert_eq!(wechat.calls.load(Ordering::SeqCst), 1);
    // A wrong signature is refused before any exchange.
    let forged = Request::get("/me")
        .header("x-wx-code", "code-o_other")
        .header("x-wx-rawdata", "%7B%7D")
        .header("x-wx-signature", "0".repeat(40))
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&app, forged).await;
    assert_eq!(
        (status, reason(&body).as_deref()),
        (StatusCode::UNAUTHORIZED, Some("ERR_UNTRUSTED_RAW_DATA"))
    );
}

#[tokio::test]
async fn token_routes_log_in_and_out_beside_the_layer() {
    let (app, _) = app(|b| b);
    let (status, body) = send(&app, login("code-o_tok")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = serde_json::from_str::<Value>(&body).unwrap()["token"].as_str().unwrap().to_owned();
    let me =
        |token: &str| Request::get("/me").header("x-wx-skey", token).body(Body::empty()).unwrap();
    assert_eq!(send(&app, me(&token)).await, (StatusCode::OK, "o_tok".to_owned()));

    // The login routes sit outside the layer: a login that still carries a
    // dead token is served, not refused by the layer.
    let stale = Request::post("/login")
        .header("content-type", "application/json")
        .header("x-wx-skey", "dead-token")
        .body(Body::from(json!({"code": "code-o_tok2"}).to_string()))
        .unwrap();
    assert_eq!(send(&app, stale).await.0, StatusCode::OK);

    let logout = Request::post("/logout").header("x-wx-skey", &token).body(Body::empty()).unwrap();
    assert_eq!(send(&app, logout).await, (StatusCode::OK, r#"{"ok":true}"#.to_owned()));
    let (status, body) = send(&app, me(&token)).await;
    assert_eq!(
        (status, reason(&body).as_deref()),
        (StatusCode::UNAUTHORIZED, Some("ERR_SESSION_EXPIRED"))
    );

    let (status, body) = send(&app, Request::get("/login").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, reason(&body).as_deref()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("ERR_METHOD_NOT_ALLOWED"))
    );
    let (status, body) = send(&app, login("bad")).await;
    assert_eq!(
        (status, reason(&body).as_deref()),
        (StatusCode::UNAUTHORIZED, Some("ERR_SESSION_KEY_EXCHANGE_FAILED"))
    );
}

#[tokio::test]
async fn require_login_and_optional_identity() {
    let (app, _) = app(|b| b);
    let (status, body) = send(&app, Request::get("/private").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, reason(&body).as_deref()),
        (StatusCode::UNAUTHORIZED, Some("ERR_NOT_LOGGED_IN"))
    );
    let open = send(&app, Request::get("/open").body(Body::empty()).unwrap()).await;
    assert_eq!(open, (StatusCode::OK, "anonymous".to_owned()));
    let private = Request::get("/private").header("x-wx-code", "code-o_p").body(Body::empty());
    // A compat code-only request for a code never logged in: expired.
    let (status, body) = send(&app, private.unwrap()).await;
    assert_eq!(
        (status, reason(&body).as_deref()),
        (StatusCode::UNAUTHORIZED, Some("ERR_SESSION_EXPIRED"))
    );
}

#[tokio::test]
async fn the_login_rate_limit_keys_on_the_client_address_layer() {
    let one = NonZeroU32::MIN;
    let (app, wechat) = app(|b| b.with_login_rate_limit(one, one));
    let nginx: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let app = app.layer(ClientAddrLayer::new([nginx.ip()]));
    let from = |client: &str, code: &str| {
        let mut req = login(code);
        req.extensions_mut().insert(nginx);
        req.headers_mut().insert("x-forwarded-for", client.parse().unwrap());
        req
    };
    assert_eq!(send(&app, from("203.0.113.7", "code-o_a")).await.0, StatusCode::OK);
    let (status, body) = send(&app, from("203.0.113.7", "code-o_b")).await;
    assert_eq!(
        (status, reason(&body).as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("ERR_TOO_MANY_REQUESTS"))
    );
    // Another client behind the same proxy has its own bucket.
    assert_eq!(send(&app, from("198.51.100.9", "code-o_c")).await.0, StatusCode::OK);
    assert_eq!(wechat.calls.load(Ordering::SeqCst), 2);
}
