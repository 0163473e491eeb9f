//! The gateway's own layers around every route: the request deadline, the
//! panic catcher and the access log (which also establishes the client
//! address the session layer rate-limits by).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::error::AppError;
use crate::session::{ClientIp, UserTag, client_ip, error_response};

/// Answers `504 ERR_GATEWAY_TIMEOUT` in the envelope when the request takes
/// longer than `server.request_timeout` (the work below is dropped).
pub(crate) async fn request_timeout(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::debug!(?limit, "request timed out");
            AppError::GatewayTimeout.into_response()
        }
    }
}

/// A panic anywhere below becomes a logged 500 in the error envelope (and an
/// access-log line) instead of a dropped connection.
pub(crate) fn catch_panic() -> tower_http::catch_panic::CatchPanicLayer<fn(PanicPayload) -> Response>
{
    tower_http::catch_panic::CatchPanicLayer::custom(panic_response as fn(PanicPayload) -> Response)
}

type PanicPayload = Box<dyn std::any::Any + Send + 'static>;

fn panic_response(payload: PanicPayload) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "a request handler panicked");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ERR_INTERNAL",
        "internal error; the gateway logged it",
        json!({}),
    )
    .into_response()
}

/// One log line per request: method, path (never the query), status,
/// latency, client address and a hashed user tag. Never codes, tokens or
/// keys. Also establishes the [`ClientIp`] the session layer rate-limits by
/// (the library's [`client_ip`] rule: trusted proxies, right-most hop).
pub(crate) async fn access_log(
    State(trusted): State<Arc<[IpAddr]>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = client_ip(peer, request.headers(), &trusted);
    if let Some(ip) = client {
        request.extensions_mut().insert(ClientIp(ip));
    }
    if !tracing::enabled!(target: "weapp_gateway::access", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let tag = response.extensions().get::<UserTag>().map(UserTag::tag);
    let user = tag.as_deref().unwrap_or("-");
    tracing::info!(
        target: "weapp_gateway::access",
        %method,
        path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        client = %client.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into()),
        user,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_500_envelope() {
        use tower::ServiceExt;
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app: Router = Router::new().route("/boom", get(boom)).layer(catch_panic());
        let req = Request::builder().uri("/boom").body(Body::empty()).unwrap();
        let response = app.oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body[crate::session::ERROR_MAGIC], 1);
        assert_eq!(body["reason"], "ERR_INTERNAL");
    }
}
