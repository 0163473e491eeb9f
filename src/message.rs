//! WeChat message push: the server-URL check and pushed messages
//! (docs/protocol.md §6).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::clock::Clock;
use crate::error::{AppError, AppJson, AppQuery};
use crate::wechat::check_push_signature;

/// What the message-push routes need.
pub struct Message {
    /// The message-push token (`message.token`); none or empty: the routes
    /// answer 404.
    pub token: Option<SecretString>,
    /// How far a push's `timestamp` may be from now.
    pub max_clock_skew: Duration,
    /// "Now".
    pub clock: Clock,
}

/// The message-push routes' state: one allocation, so the clone axum makes
/// per request is a reference-count bump.
#[derive(Clone)]
pub struct MessageState(Arc<Message>);

impl From<Message> for MessageState {
    fn from(message: Message) -> Self {
        Self(Arc::new(message))
    }
}

impl std::ops::Deref for MessageState {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.0
    }
}

impl std::fmt::Debug for MessageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageState")
            .field("max_clock_skew", &self.max_clock_skew)
            .finish_non_exhaustive()
    }
}

/// `GET` and `POST {base}/message/check` (the gateway mounts them behind the
/// session layer, which WeChat's requests, without `X-WX-*` headers, pass
/// anonymously).
pub fn router(state: MessageState, base_path: &str) -> Router {
    Router::new()
        .route(&format!("{base_path}/message/check"), get(check).post(push))
        .with_state(state)
}

/// The query WeChat signs.
#[derive(Debug, Deserialize)]
pub struct PushQuery {
    /// SHA-1 of the sorted token, timestamp and nonce.
    pub signature: String,
    /// WeChat's timestamp.
    pub timestamp: String,
    /// WeChat's nonce.
    pub nonce: String,
    /// Echoed back on the URL check.
    #[serde(default)]
    pub echostr: Option<String>,
}

fn verify(state: &MessageState, q: &PushQuery) -> Result<(), AppError> {
    // An empty token is no secret: anyone could sign with it.
    let Some(token) = state.token.as_ref().filter(|t| !t.expose_secret().is_empty()) else {
        return Err(AppError::NotFound("message push (set message.token)"));
    };
    if !check_push_signature(token.expose_secret(), &q.timestamp, &q.nonce, &q.signature) {
        return Err(AppError::BadPushSignature);
    }
    // Signed, but a signature never expires: a recorded push (or URL check)
    // replayed later is refused by its age.
    let skew = state.max_clock_skew;
    let now = state.clock.now().timestamp();
    let fresh = q.timestamp.parse::<i64>().is_ok_and(|ts| now.abs_diff(ts) <= skew.as_secs());
    if !fresh {
        // The same answer as a bad signature: a replayer learns nothing
        // about whether the recorded signature was good.
        tracing::debug!(max_clock_skew_s = skew.as_secs(), "message push refused: stale timestamp");
        return Err(AppError::BadPushSignature);
    }
    Ok(())
}

/// `GET {base}/message/check`: answers the bare `echostr` when the signature matches.
pub async fn check(
    State(state): State<MessageState>,
    AppQuery(q): AppQuery<PushQuery>,
) -> Result<Response, AppError> {
    verify(&state, &q)?;
    // Plain text, never sniffed as HTML: the echostr is the caller's.
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    Ok((headers, q.echostr.unwrap_or_default()).into_response())
}

/// `POST {base}/message/check`: a pushed message; answers `success`.
pub async fn push(
    State(state): State<MessageState>,
    AppQuery(q): AppQuery<PushQuery>,
    body: Result<AppJson<serde_json::Value>, AppError>,
) -> Result<Response, AppError> {
    // The signature first: an unsigned caller learns nothing about the body rules.
    verify(&state, &q)?;
    let AppJson(msg) = body.map_err(|e| match e {
        AppError::InvalidRequest(_) => {
            AppError::InvalidRequest("a pushed message must be JSON".into())
        }
        other => other,
    })?;
    let kind = msg.get("MsgType").and_then(|v| v.as_str()).unwrap_or("unknown");
    tracing::info!(msg_type = kind, "message pushed");
    Ok("success".into_response())
}
