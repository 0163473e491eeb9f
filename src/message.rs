//! WeChat message push: the server-URL check and pushed messages
//! (docs/protocol.md §6).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::{AppError, AppJson, AppQuery};
use crate::wechat::check_push_signature;

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

fn verify(state: &AppState, q: &PushQuery) -> Result<(), AppError> {
    // An empty token is no secret: anyone could sign with it.
    let Some(token) = state.message_token.as_ref().filter(|t| !t.expose_secret().is_empty()) else {
        return Err(AppError::NotFound("message push (set message.token)"));
    };
    if !check_push_signature(token.expose_secret(), &q.timestamp, &q.nonce, &q.signature) {
        return Err(AppError::BadPushSignature);
    }
    // Signed, but a signature never expires: a recorded push (or URL check)
    // replayed later is refused by its age.
    let skew = state.limits.message_max_clock_skew;
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
    State(state): State<AppState>,
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
    State(state): State<AppState>,
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
