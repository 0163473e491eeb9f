//! Notice endpoints: post, public feed, own list, author edits, moderation.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::model::{NewNotice, Notice, NoticePatch, NoticeState, Visibility};
use super::{AuthorChange, NoticeStore};
use crate::clock::Clock;
use crate::error::{AppError, AppJson, AppPath, AppQuery};
use crate::limits::{Limiter, Limits, address_key, day_bounds, retry_after};
use crate::open_data::profile;
use crate::session::{ClientIp, WxSession};
use crate::text;
use crate::wechat::AccessTokens;
use chrono::{DateTime, Utc};

/// What the notice routes (users' and moderators') need.
pub struct Notices {
    /// The notices.
    pub store: Arc<dyn NoticeStore>,
    /// The shared access token and the WeChat calls that need it
    /// (msgSecCheck).
    pub tokens: AccessTokens,
    /// Run msgSecCheck on notice text.
    pub content_security: bool,
    /// Bearer token of the moderation routes (none or empty: they answer 401).
    pub admin_token: Option<SecretString>,
    /// Post, edit and failed-admin-attempt limits, photo hosts.
    pub limits: Limits,
    /// "Now".
    pub clock: Clock,
}

/// The notice routes' state: one allocation, so the clone axum makes per
/// request is a reference-count bump.
#[derive(Clone)]
pub struct NoticesState(Arc<Notices>);

impl From<Notices> for NoticesState {
    fn from(notices: Notices) -> Self {
        Self(Arc::new(notices))
    }
}

impl std::ops::Deref for NoticesState {
    type Target = Notices;

    fn deref(&self) -> &Notices {
        &self.0
    }
}

impl std::fmt::Debug for NoticesState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticesState")
            .field("content_security", &self.content_security)
            .finish_non_exhaustive()
    }
}

/// The users' routes: `POST`/`GET {base}/notices`, `GET {base}/notices/mine`,
/// `PATCH`/`DELETE {base}/notices/{id}`, for the caller to put behind the
/// session layer.
pub fn router(state: NoticesState, base_path: &str) -> Router {
    Router::new()
        .route(&format!("{base_path}/notices"), post(create).get(feed))
        .route(&format!("{base_path}/notices/mine"), get(mine))
        .route(&format!("{base_path}/notices/{{id}}"), patch(update).delete(delete))
        .with_state(state)
}

/// The moderation routes, `POST /admin/notices/{id}/ban` and `/unban`
/// (outside `server.base_path`), for the caller to mount outside the session
/// layer: they carry the admin bearer token, not a user's session.
pub fn admin_router(state: NoticesState) -> Router {
    Router::new()
        .route("/admin/notices/{id}/ban", post(ban))
        .route("/admin/notices/{id}/unban", post(unban))
        .with_state(state)
}

/// Longest notice text, in characters.
pub const MAX_CONTENT_CHARS: usize = 2000;
/// Most photos per notice.
pub const MAX_PHOTOS: usize = 4;
/// Default page size.
const DEFAULT_LIMIT: u32 = 20;
/// Largest page size.
pub const MAX_LIMIT: u32 = 50;

/// Body of `POST {base}/notices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNotice {
    /// 1–2000 characters.
    pub content: String,
    /// Up to 4 https URLs.
    #[serde(default)]
    pub photos: Vec<String>,
    /// `public` (default) or `private`.
    #[serde(default)]
    pub visibility: Option<Visibility>,
}

/// Body of `PATCH {base}/notices/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchNotice {
    /// New text.
    #[serde(default)]
    pub content: Option<String>,
    /// New visibility.
    #[serde(default)]
    pub visibility: Option<Visibility>,
}

/// Paging of the feed and own list: `limit` + `cursor`, or the original's
/// `pageno` (from 1) + `pagesize`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Page size (1–50, default 20).
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// The original's page number, from 1.
    pub pageno: Option<u64>,
    /// The original's page size.
    pub pagesize: Option<u32>,
}

/// The content as stored: controls and bidi refused, invisibles stripped
/// (see [`crate::text::content`]), trimmed, 1–2000 characters.
fn check_content(content: &str) -> Result<String, AppError> {
    let cleaned = text::content(content).map_err(AppError::InvalidRequest)?;
    let trimmed = cleaned.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > MAX_CONTENT_CHARS {
        return Err(AppError::InvalidRequest(format!(
            "content must be 1–{MAX_CONTENT_CHARS} characters (got {chars})"
        )));
    }
    Ok(trimmed.to_owned())
}

/// The photos as stored: each normalised by [`crate::text::photo_url`].
fn check_photos(photos: &[String], hosts: &[String]) -> Result<Vec<String>, AppError> {
    if photos.len() > MAX_PHOTOS {
        return Err(AppError::InvalidRequest(format!("at most {MAX_PHOTOS} photos")));
    }
    photos
        .iter()
        .enumerate()
        .map(|(i, p)| {
            text::photo_url(p, hosts)
                .map_err(|why| AppError::InvalidRequest(format!("photos[{i}]: {why}")))
        })
        .collect()
}

/// Count one `what` for `openid` in `limiter`, or refuse with 429.
fn spend(
    limiter: &Limiter<String>,
    what: &'static str,
    openid: &str,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    limiter
        .hit(&openid.to_owned(), now)
        .map_err(|retry_after| AppError::TooManyRequests { what, retry_after })
}

/// The per-minute and the daily (store-counted) post limits of `openid`.
async fn post_allowed(state: &NoticesState, openid: &str) -> Result<(), AppError> {
    let now = state.clock.now();
    spend(&state.limits.posts, "notice posts this minute", openid, now)?;
    let (start, end) = day_bounds(state.limits.tz, now);
    let today = state.store.count_by_author_since(openid, start).await;
    let today = refund_on_storage_error(today, || state.limits.posts.refund(&openid.to_owned()))?;
    if today >= u64::from(state.limits.posts_per_day) {
        return Err(AppError::TooManyRequests {
            what: "notice posts today",
            retry_after: retry_after(end, now),
        });
    }
    // Deleted notices still count here (the store's count forgets them).
    spend(&state.limits.posts_daily, "notice posts today", openid, now)
}

/// `result`, after giving the caller's quota back (`refund`) when the store
/// failed: an outage must not use up anyone's posts or edits.
fn refund_on_storage_error<T, E: Into<AppError>>(
    result: Result<T, E>,
    refund: impl FnOnce(),
) -> Result<T, AppError> {
    let result = result.map_err(Into::into);
    if matches!(result, Err(AppError::Storage(_))) {
        refund();
    }
    result
}

/// The per-minute and daily edit limits of `openid` (this instance).
fn edit_allowed(state: &NoticesState, openid: &str) -> Result<(), AppError> {
    let now = state.clock.now();
    spend(&state.limits.edits, "notice edits this minute", openid, now)?;
    spend(&state.limits.edits_daily, "notice edits today", openid, now)
}

fn check_id(id: &str) -> Result<(), AppError> {
    if id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(AppError::InvalidRequest("a notice id is 24 hex characters".into()))
    }
}

fn encode_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(cursor: &str) -> Result<String, AppError> {
    let bad = || AppError::InvalidRequest("cursor is not one this server issued".into());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let id = String::from_utf8(bytes).map_err(|_| bad())?;
    check_id(&id).map_err(|_| bad())?;
    Ok(id)
}

fn limit_of(limit: Option<u32>) -> Result<u32, AppError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        l @ 1..=MAX_LIMIT => Ok(l),
        _ => Err(AppError::InvalidRequest(format!("limit must be 1–{MAX_LIMIT}"))),
    }
}

fn page_answer(notices: Vec<Notice>, limit: u32, keyset: bool) -> Json<Value> {
    let next = (keyset && notices.len() == limit as usize)
        .then(|| notices.last().map(|n| encode_cursor(&n.id)))
        .flatten();
    Json(json!({ "notices": notices, "nextCursor": next }))
}

async fn content_check(state: &NoticesState, openid: &str, content: &str) -> Result<(), AppError> {
    if !state.content_security {
        return Ok(());
    }
    let verdict = AppError::wechat_call(state.tokens.try_msg_sec_check(openid, content).await)?;
    if !verdict.is_pass() {
        return Err(AppError::ContentRisky);
    }
    Ok(())
}

/// `POST {base}/notices`: 201 with the stored notice.
#[tracing::instrument(skip_all)]
pub async fn create(
    State(state): State<NoticesState>,
    session: WxSession,
    AppJson(body): AppJson<CreateNotice>,
) -> Result<Response, AppError> {
    let content = check_content(&body.content)?;
    let photos = check_photos(&body.photos, &state.limits.photo_hosts)?;
    post_allowed(&state, session.openid()).await?;
    content_check(&state, session.openid(), &content).await?;
    let (nick, avatar) = profile(&session);
    let inserted = state
        .store
        .insert(NewNotice {
            author_openid: session.openid().to_owned(),
            author_nick_name: nick,
            author_avatar_url: avatar,
            content,
            photos,
            visibility: body.visibility.unwrap_or(Visibility::Public),
            created_at: state.clock.now(),
        })
        .await;
    let notice = refund_on_storage_error(inserted, || {
        state.limits.posts.refund(&session.openid().to_owned());
    })?;
    Ok((StatusCode::CREATED, Json(notice)).into_response())
}

/// `GET {base}/notices`: the public feed, newest first.
#[tracing::instrument(skip_all)]
pub async fn feed(
    State(state): State<NoticesState>,
    AppQuery(page): AppQuery<Page>,
) -> Result<Json<Value>, AppError> {
    if let Some(pageno) = page.pageno {
        if pageno == 0 || page.cursor.is_some() {
            return Err(AppError::InvalidRequest("pageno starts at 1 and excludes cursor".into()));
        }
        let limit = limit_of(page.pagesize.or(page.limit))?;
        let skip = (pageno - 1)
            .checked_mul(u64::from(limit))
            .ok_or_else(|| AppError::InvalidRequest("pageno is too large".into()))?;
        let notices = state.store.feed_offset(skip, limit).await?;
        return Ok(page_answer(notices, limit, false));
    }
    let limit = limit_of(page.limit.or(page.pagesize))?;
    let before = page.cursor.as_deref().map(decode_cursor).transpose()?;
    let notices = state.store.feed(before.as_deref(), limit).await?;
    Ok(page_answer(notices, limit, true))
}

/// `GET {base}/notices/mine`: the caller's notices in every state.
#[tracing::instrument(skip_all)]
pub async fn mine(
    State(state): State<NoticesState>,
    session: WxSession,
    AppQuery(page): AppQuery<Page>,
) -> Result<Json<Value>, AppError> {
    if page.pageno.is_some() {
        return Err(AppError::InvalidRequest(
            "pageno is supported on the public feed only; page your own notices with cursor".into(),
        ));
    }
    let limit = limit_of(page.limit.or(page.pagesize))?;
    let before = page.cursor.as_deref().map(decode_cursor).transpose()?;
    let notices = state.store.by_author(session.openid(), before.as_deref(), limit).await?;
    Ok(page_answer(notices, limit, true))
}

/// Maps an author-only outcome to the answer. A non-author learns a notice
/// exists only if it is public: for private and banned ones they get 404.
async fn author_result<T>(
    state: &NoticesState,
    id: &str,
    change: AuthorChange<T>,
) -> Result<T, AppError> {
    match change {
        AuthorChange::Done(v) => Ok(v),
        AuthorChange::NotFound => Err(AppError::NotFound("notice")),
        AuthorChange::NotAuthor => match state.store.get(id).await? {
            Some(n) => Err(not_yours(&n)),
            None => Err(AppError::NotFound("notice")),
        },
    }
}

/// The answer to a non-author: 403 for a public notice, 404 otherwise.
fn not_yours(notice: &Notice) -> AppError {
    if notice.state == NoticeState::Public {
        AppError::NotAuthor
    } else {
        AppError::NotFound("notice")
    }
}

/// `PATCH {base}/notices/{id}`: author only.
#[tracing::instrument(skip_all)]
pub async fn update(
    State(state): State<NoticesState>,
    session: WxSession,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<PatchNotice>,
) -> Result<Json<Notice>, AppError> {
    check_id(&id)?;
    let content = body.content.as_deref().map(check_content).transpose()?;
    if content.is_none() && body.visibility.is_none() {
        return Err(AppError::InvalidRequest("send `content` and/or `visibility`".into()));
    }
    edit_allowed(&state, session.openid())?;
    let refund = || {
        let openid = session.openid().to_owned();
        state.limits.edits.refund(&openid);
        state.limits.edits_daily.refund(&openid);
    };
    let changed = edit(&state, &session, &id, content, body.visibility).await;
    refund_on_storage_error(changed, refund)
}

async fn edit(
    state: &NoticesState,
    session: &WxSession,
    id: &str,
    content: Option<String>,
    visibility: Option<Visibility>,
) -> Result<Json<Notice>, AppError> {
    if let Some(c) = &content {
        // Check authorship before spending a content-security call.
        match state.store.get(id).await? {
            None => return Err(AppError::NotFound("notice")),
            Some(n) if n.author_openid != session.openid() => return Err(not_yours(&n)),
            Some(_) => content_check(state, session.openid(), c).await?,
        }
    }
    let patch = NoticePatch { content, visibility };
    let change = state.store.update(id, session.openid(), &patch).await?;
    Ok(Json(author_result(state, id, change).await?))
}

/// `DELETE {base}/notices/{id}`: author only.
#[tracing::instrument(skip_all)]
pub async fn delete(
    State(state): State<NoticesState>,
    session: WxSession,
    AppPath(id): AppPath<String>,
) -> Result<Json<Value>, AppError> {
    check_id(&id)?;
    let change = state.store.delete(&id, session.openid()).await?;
    author_result(&state, &id, change).await?;
    Ok(Json(json!({ "ok": true })))
}

fn require_admin(state: &NoticesState, headers: &HeaderMap) -> Result<(), AppError> {
    // An empty token would match a request without any Authorization header.
    let Some(expected) = state.admin_token.as_ref().filter(|t| !t.expose_secret().is_empty())
    else {
        return Err(AppError::AdminUnauthorized);
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes())) {
        Ok(())
    } else {
        Err(AppError::AdminUnauthorized)
    }
}

/// [`require_admin`], limited per client address: once an address used up
/// `notices.admin_failures_per_minute` failures it gets 429 (even with the
/// right token) until its minute is over.
fn admin_from(
    state: &NoticesState,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
) -> Result<(), AppError> {
    // No address (never behind the access log): one shared bucket.
    let key = address_key(ip.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)));
    let now = state.clock.now();
    let failures = &state.limits.admin_failures;
    let locked = |retry_after| AppError::TooManyRequests {
        what: "failed admin attempts from this address",
        retry_after,
    };
    if let Some(retry_after) = failures.blocked(&key, now) {
        return Err(locked(retry_after));
    }
    require_admin(state, headers).inspect_err(|_| {
        if failures.hit(&key, now).is_err() {
            tracing::debug!("admin attempts locked out for an address");
        }
    })
}

async fn moderate(
    state: NoticesState,
    headers: HeaderMap,
    ip: Option<Extension<ClientIp>>,
    id: String,
    banned: bool,
) -> Result<Json<Notice>, AppError> {
    admin_from(&state, &headers, ip.map(|Extension(ClientIp(ip))| ip))?;
    check_id(&id)?;
    let notice = state.store.set_banned(&id, banned).await?.ok_or(AppError::NotFound("notice"))?;
    tracing::info!(banned, "notice moderated");
    Ok(Json(notice))
}

/// `POST /admin/notices/{id}/ban` (admin bearer token).
pub async fn ban(
    State(state): State<NoticesState>,
    headers: HeaderMap,
    ip: Option<Extension<ClientIp>>,
    AppPath(id): AppPath<String>,
) -> Result<Json<Notice>, AppError> {
    moderate(state, headers, ip, id, true).await
}

/// `POST /admin/notices/{id}/unban` (admin bearer token).
pub async fn unban(
    State(state): State<NoticesState>,
    headers: HeaderMap,
    ip: Option<Extension<ClientIp>>,
    AppPath(id): AppPath<String>,
) -> Result<Json<Notice>, AppError> {
    moderate(state, headers, ip, id, false).await
}
