//! Health checks: `GET /healthz` (the process is alive) and `GET /readyz`
//! (the session store answers; the data stores' state is reported too).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::notices::NoticeStore;
use crate::pk::PkStore;
use crate::session::{SessionError, SessionStore};

/// What the readiness check pings.
pub struct Health {
    /// The session store (gates readiness).
    pub sessions: Arc<dyn SessionStore>,
    /// The PK store (reported, does not gate).
    pub pk: Arc<dyn PkStore>,
    /// The notice store (reported, does not gate).
    pub notices: Arc<dyn NoticeStore>,
}

/// The health routes' state: one allocation, so the clone axum makes per
/// request is a reference-count bump.
#[derive(Clone)]
pub struct HealthState(Arc<Health>);

impl From<Health> for HealthState {
    fn from(health: Health) -> Self {
        Self(Arc::new(health))
    }
}

impl std::ops::Deref for HealthState {
    type Target = Health;

    fn deref(&self) -> &Health {
        &self.0
    }
}

impl std::fmt::Debug for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthState").finish_non_exhaustive()
    }
}

/// `GET /healthz` and `GET /readyz`, for the caller to mount outside the
/// session layer (probes carry no session).
pub fn router(state: HealthState) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(state)
}

/// `GET /healthz`: the process is alive.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the session store answers (the data store's state is
/// reported too, but session routes work without it, so it does not gate).
async fn readyz(State(state): State<HealthState>) -> Response {
    let (pk, notices) = tokio::join!(state.pk.ping(), state.notices.ping());
    let data = if pk.is_ok() && notices.is_ok() { "ok" } else { "unavailable" };
    match state.sessions.ping().await {
        Ok(()) => Json(json!({"status": "ready", "data": data})).into_response(),
        Err(e) => {
            crate::session::warn_limited!(error = %e, "readiness check failed");
            SessionError::StoreUnavailable.into_response()
        }
    }
}
