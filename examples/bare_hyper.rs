//! `WxSessionLayer` on a bare hyper 1 server, no axum: the layer is a plain
//! tower layer, `hyper-util` adapts the tower stack to hyper, and the token
//! login and logout are two calls the team routes to itself.
//!
//! Run: `cargo run --example bare_hyper` (starts its own fake WeChat on
//! loopback). `PORT` picks the port. `tests/examples.rs` runs it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};
use weapp_session::{
    ClientAddrLayer, MemoryStore, SessionEngine, WxSession, WxSessionLayer, token_login,
    token_logout,
};
use weapp_wechat::{FakeWeChat, WeChatClient, WeChatConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only for this demo: a fake WeChat. In production: WeChatConfig::new(app_id, secret).
    let (_fake, fake_addr) = FakeWeChat::spawn("wx_demo", "demo-secret").await?;
    let mut wechat = WeChatConfig::new("wx_demo", "demo-secret".to_owned());
    wechat.api_base = format!("http://{fake_addr}");

    let layer =
        WxSessionLayer::builder(MemoryStore::new(100_000), WeChatClient::new(wechat)?).build();
    let engine = layer.engine().clone();
    // The routes the layer guards: a plain tower service behind it.
    let protected = layer.layer(service_fn(hello));

    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0u16);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{} fake WeChat at http://{fake_addr}", listener.local_addr()?);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let engine = engine.clone();
        let protected = protected.clone();
        // The login rate limit keys on the client address: the peer, which
        // the service puts where ClientAddrLayer looks (a `SocketAddr` extension).
        let service = ServiceBuilder::new()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer);
                req
            })
            .layer(ClientAddrLayer::new([]))
            .service(service_fn(move |req| route(engine.clone(), protected.clone(), req)));
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                // A client that trickles its headers cannot hold the connection.
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
            if let Err(e) = served {
                eprintln!("connection from {peer}: {e}");
            }
        });
    }
}

/// Login and logout go to the engine (outside the layer, so a login that
/// still carries an old token is not refused); everything else through the layer.
async fn route<S>(
    engine: Arc<SessionEngine>,
    protected: S,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible>
where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<weapp_session::LayerBody<Full<Bytes>>>,
            Error = Infallible,
        >,
{
    let login = req.method() == Method::POST && req.uri().path() == "/applet/session/login";
    let logout = req.method() == Method::POST && req.uri().path() == "/applet/session/logout";
    if login {
        return Ok(token_login(&engine, req).await.map(box_body));
    }
    if logout {
        return Ok(token_logout(&engine, req.headers()).await.map(box_body));
    }
    let response = protected.oneshot(req).await?;
    Ok(response.map(|body| body.boxed()))
}

/// The guarded routes: the layer put the caller's identity into the
/// extensions, or answered `401` itself.
async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = match (req.uri().path(), req.extensions().get::<WxSession>()) {
        ("/applet/hello", Some(user)) => {
            serde_json::json!({ "hello": user.openid(), "dialect": format!("{:?}", user.dialect()) })
        }
        ("/applet/hello", None) => serde_json::json!({ "hello": null }),
        _ => {
            let mut response =
                Response::new(Full::new(Bytes::from_static(b"{\"error\":\"not found\"}")));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return Ok(response);
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(text.to_string())));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Ok(response)
}

fn box_body(body: Full<Bytes>) -> Body {
    body.map_err(|never| match never {}).boxed()
}
