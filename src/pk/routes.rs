//! PK endpoints: check in with decrypted WeRun steps, read a group's ranking,
//! list the caller's groups.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PkStore;
use super::model::{GroupRank, RankedEntry, StepCheckin};
use crate::clock::Clock;
use crate::error::{AppError, AppJson, AppPath, AppQuery};
use crate::open_data::{Encrypted, OpenDataState, profile};
use crate::session::WxSession;

/// What the PK routes need.
pub struct Pk {
    /// PK records and memberships.
    pub store: Arc<dyn PkStore>,
    /// Decrypts the share info and the WeRun data (with the open-data
    /// routes' failure budget).
    pub open_data: OpenDataState,
    /// The timezone whose midnight starts a PK day.
    pub tz: Tz,
    /// Most entries in a ranking answer.
    pub ranking_limit: u32,
    /// Oldest ranking day: today minus this many days.
    pub retention_days: u32,
    /// "Now".
    pub clock: Clock,
}

/// The PK routes' state: one allocation, so the clone axum makes per request
/// is a reference-count bump.
#[derive(Clone)]
pub struct PkState(Arc<Pk>);

impl From<Pk> for PkState {
    fn from(pk: Pk) -> Self {
        Self(Arc::new(pk))
    }
}

impl std::ops::Deref for PkState {
    type Target = Pk;

    fn deref(&self) -> &Pk {
        &self.0
    }
}

impl std::fmt::Debug for PkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkState").field("tz", &self.tz).finish_non_exhaustive()
    }
}

/// `POST {base}/pk/checkin`, `GET {base}/pk/groups` and
/// `GET {base}/pk/groups/{openGId}/ranking`, for the caller to put behind
/// the session layer.
pub fn router(state: PkState, base_path: &str) -> Router {
    Router::new()
        .route(&format!("{base_path}/pk/checkin"), post(checkin))
        .route(&format!("{base_path}/pk/groups"), get(groups))
        .route(&format!("{base_path}/pk/groups/{{open_gid}}/ranking"), get(ranking))
        .with_state(state)
}

/// Most groups `GET {base}/pk/groups` lists (the most recently joined).
pub const MAX_GROUPS: u32 = 200;

/// How many of the caller's groups `GET …/pk/groups` looks up at once.
const GROUP_LOOKUPS_IN_FLIGHT: usize = 8;

/// `YYYY-MM-DD` of `at` in `tz`.
pub fn date_in(tz: Tz, at: DateTime<Utc>) -> String {
    at.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

/// Body of `POST {base}/pk/checkin`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckinRequest {
    /// The share ticket's encrypted info (proves membership; gives openGId).
    #[serde(default)]
    pub share: Option<Encrypted>,
    /// A group already proven, instead of `share`.
    #[serde(default)]
    pub open_g_id: Option<String>,
    /// The encrypted WeRun data (`wx.getWeRunData`).
    pub werun: Encrypted,
}

/// A group's ranking as clients see it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RankingResponse {
    /// The group.
    pub open_g_id: String,
    /// The day ranked.
    pub date: String,
    /// Everyone's entries (top `pk.ranking_limit`).
    pub entries: Vec<RankedEntry>,
    /// The caller's own entry, if they checked in that day.
    pub me: Option<RankedEntry>,
    /// How many members checked in that day.
    pub participants: u64,
}

/// Today's steps from decrypted WeRun data: the `stepInfoList` entry whose
/// timestamp falls on `today` in `tz`.
fn todays_steps(werun: &Value, tz: Tz, today: &str) -> Result<u64, AppError> {
    let list = werun
        .get("stepInfoList")
        .and_then(Value::as_array)
        .ok_or_else(|| AppError::InvalidRequest("the WeRun data has no stepInfoList".into()))?;
    for item in list {
        let ts = item.get("timestamp").and_then(Value::as_i64);
        let step = item.get("step").and_then(Value::as_u64);
        if let (Some(ts), Some(step)) = (ts, step)
            && let Some(at) = Utc.timestamp_opt(ts, 0).single()
            && date_in(tz, at) == today
        {
            return Ok(step);
        }
    }
    Err(AppError::InvalidRequest(format!(
        "the WeRun data has no entry for today ({today}); call wx.getWeRunData again"
    )))
}

fn valid_gid(gid: &str) -> Result<(), AppError> {
    if gid.is_empty() || gid.len() > 128 || !gid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::InvalidRequest("openGId is malformed".into()));
    }
    Ok(())
}

/// `POST {base}/pk/checkin`: records today's steps in the group, answers its ranking.
#[tracing::instrument(skip_all)]
pub async fn checkin(
    State(state): State<PkState>,
    session: WxSession,
    headers: HeaderMap,
    AppJson(body): AppJson<CheckinRequest>,
) -> Result<Json<RankingResponse>, AppError> {
    let open_gid = match (&body.share, &body.open_g_id) {
        (Some(share), _) => {
            let info = state.open_data.decrypt(&session, &headers, share).await?;
            let gid = info
                .get("openGId")
                .and_then(Value::as_str)
                .ok_or_else(|| AppError::InvalidRequest("the share info has no openGId".into()))?;
            valid_gid(gid)?;
            state.store.add_membership(gid, session.openid()).await?;
            gid.to_owned()
        }
        (None, Some(gid)) => {
            valid_gid(gid)?;
            if !state.store.is_member(gid, session.openid()).await? {
                return Err(AppError::NotAMember);
            }
            gid.clone()
        }
        (None, None) => {
            return Err(AppError::InvalidRequest(
                "send `share` (the encrypted share info) or an already joined `openGId`".into(),
            ));
        }
    };
    let werun = state.open_data.decrypt(&session, &headers, &body.werun).await?;
    let now = state.clock.now();
    let today = date_in(state.tz, now);
    let steps = todays_steps(&werun, state.tz, &today)?;
    let (nick_name, avatar_url) = profile(&session);
    let checkin = StepCheckin {
        open_gid: open_gid.clone(),
        date: today.clone(),
        openid: session.openid().to_owned(),
        steps,
        nick_name,
        avatar_url,
        at: now,
    };
    state.store.upsert_steps(&checkin).await?;
    Ok(Json(ranking_of(&state, &open_gid, &today, session.openid()).await?))
}

async fn ranking_of(
    state: &PkState,
    gid: &str,
    date: &str,
    me: &str,
) -> Result<RankingResponse, AppError> {
    let records = state.store.ranking(gid, date, state.ranking_limit).await?;
    let entries: Vec<RankedEntry> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| RankedEntry {
            rank: i as u64 + 1,
            is_me: &*r.openid == me,
            nick_name: r.nick_name,
            avatar_url: r.avatar_url,
            steps: r.steps,
        })
        .collect();
    let mine = match entries.iter().find(|e| e.is_me) {
        Some(e) => Some(e.clone()),
        None => state.store.rank_of(gid, date, me).await?.map(|(rank, r)| RankedEntry {
            rank,
            nick_name: r.nick_name,
            avatar_url: r.avatar_url,
            steps: r.steps,
            is_me: true,
        }),
    };
    let participants = state.store.participants(gid, date).await?;
    Ok(RankingResponse {
        open_g_id: gid.to_owned(),
        date: date.to_owned(),
        entries,
        me: mine,
        participants,
    })
}

/// Query of the ranking route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankingQuery {
    /// `YYYY-MM-DD`; default today in the PK timezone.
    #[serde(default)]
    pub date: Option<String>,
}

/// A requested ranking day, `YYYY-MM-DD` within `[today − retention_days,
/// today]` in `tz` (older records are gone, later ones cannot exist yet).
fn ranking_date(
    raw: &str,
    tz: Tz,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<String, AppError> {
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| AppError::InvalidRequest("date must be YYYY-MM-DD".into()))?;
    let today = now.with_timezone(&tz).date_naive();
    let oldest = today
        .checked_sub_days(chrono::Days::new(u64::from(retention_days)))
        .unwrap_or(NaiveDate::MIN);
    if date < oldest || date > today {
        return Err(AppError::InvalidRequest(format!(
            "date must be between {oldest} and {today} (pk.retention_days = {retention_days})"
        )));
    }
    Ok(date.format("%Y-%m-%d").to_string())
}

/// `GET {base}/pk/groups/{openGId}/ranking?date=`: members only.
#[tracing::instrument(skip_all)]
pub async fn ranking(
    State(state): State<PkState>,
    session: WxSession,
    AppPath(gid): AppPath<String>,
    AppQuery(q): AppQuery<RankingQuery>,
) -> Result<Json<RankingResponse>, AppError> {
    valid_gid(&gid)?;
    let date = match q.date {
        Some(d) => ranking_date(&d, state.tz, state.clock.now(), state.retention_days)?,
        None => date_in(state.tz, state.clock.now()),
    };
    // The date was checked before any store or cache is touched.
    if !state.store.is_member(&gid, session.openid()).await? {
        return Err(AppError::NotAMember);
    }
    Ok(Json(ranking_of(&state, &gid, &date, session.openid()).await?))
}

/// `GET {base}/pk/groups`: the caller's [`MAX_GROUPS`] most recently joined
/// groups, newest first, with their rank today.
#[tracing::instrument(skip_all)]
pub async fn groups(
    State(state): State<PkState>,
    session: WxSession,
) -> Result<Json<Value>, AppError> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    let today = date_in(state.tz, state.clock.now());
    let memberships = state.store.memberships(session.openid(), MAX_GROUPS).await?;
    // Two store calls per group, up to GROUP_LOOKUPS_IN_FLIGHT groups at a
    // time (in order): one after the other, 200 groups made 400 serial
    // round trips, seconds under load.
    let (state, today, openid) = (&state, &today, session.openid());
    let groups: Vec<GroupRank> = futures_util::stream::iter(memberships)
        .map(|m| async move {
            let mine = state.store.rank_of(&m.open_gid, today, openid).await?;
            let participants = state.store.participants(&m.open_gid, today).await?;
            Ok::<_, AppError>(GroupRank {
                open_gid: m.open_gid,
                rank: mine.as_ref().map(|(rank, _)| *rank),
                steps: mine.map(|(_, r)| r.steps),
                participants,
            })
        })
        .buffered(GROUP_LOOKUPS_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(Json(serde_json::json!({ "date": today, "groups": groups })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_day_starts_while_utc_is_still_yesterday() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 16, 30, 0).unwrap();
        assert_eq!(date_in(tz, at), "2026-11-22");
        let werun = serde_json::json!({"stepInfoList": [
            {"timestamp": Utc.with_ymd_and_hms(2026, 11, 20, 16, 0, 0).unwrap().timestamp(), "step": 10},
            {"timestamp": Utc.with_ymd_and_hms(2026, 11, 21, 16, 0, 0).unwrap().timestamp(), "step": 42},
        ]});
        assert_eq!(todays_steps(&werun, tz, "2026-11-22").unwrap(), 42);
        assert_eq!(todays_steps(&werun, tz, "2026-11-21").unwrap(), 10);
        assert!(todays_steps(&werun, tz, "2026-11-23").is_err());
        assert!(todays_steps(&serde_json::json!({}), tz, "2026-11-23").is_err());
    }
}
