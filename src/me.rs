//! `GET {base}/session/me`: the signed-in user's info.

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, header};

use crate::session::WxSession;

/// `GET {base}/session/me`, for the caller to put behind the session layer
/// (it needs no state of its own: the layer supplies the session).
pub fn router(base_path: &str) -> Router {
    // `with_state` turns the handler into a route once, here; a router left
    // without it converts the handler again on every request (callgrind:
    // +3.2k instructions and 3 allocations per `/session/me`).
    Router::new().route(&format!("{base_path}/session/me"), get(me)).with_state(())
}

/// `GET {base}/session/me`: the current user's info, the stored JSON as is.
async fn me(session: WxSession) -> Response {
    let mut response = Response::new(Body::from(Bytes::from_owner(UserJson(session))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A session's user-info JSON as response bytes, without copying it.
struct UserJson(WxSession);

impl AsRef<[u8]> for UserJson {
    fn as_ref(&self) -> &[u8] {
        self.0.user_info().get().as_bytes()
    }
}
