//! Notices as the handlers and the stores see them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who may see a notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// In the public feed.
    Public,
    /// Only its author sees it.
    Private,
}

/// The stored state, derived from visibility and moderation: the feed is
/// exactly the `public` state, so one index `(state, _id desc)` serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeState {
    /// Public and not banned.
    Public,
    /// Private and not banned.
    Private,
    /// Banned by a moderator (visible to its author only, as banned).
    Banned,
}

impl NoticeState {
    /// The state for a visibility and a ban flag.
    pub fn of(visibility: Visibility, banned: bool) -> Self {
        match (banned, visibility) {
            (true, _) => Self::Banned,
            (false, Visibility::Public) => Self::Public,
            (false, Visibility::Private) => Self::Private,
        }
    }
}

/// A notice to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotice {
    /// Author's openid.
    pub author_openid: String,
    /// Author's nickname at posting time.
    pub author_nick_name: String,
    /// Author's avatar at posting time.
    pub author_avatar_url: String,
    /// 1–2000 characters (checked by the handler).
    pub content: String,
    /// At most 4 https URLs (checked by the handler).
    pub photos: Vec<String>,
    /// Public or private.
    pub visibility: Visibility,
    /// When it was posted.
    pub created_at: DateTime<Utc>,
}

/// A stored notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// 24 hex chars (a MongoDB ObjectId).
    pub id: String,
    /// Author's openid (only ever shown to the author).
    #[serde(skip_serializing)]
    pub author_openid: String,
    /// Author's nickname.
    pub author_nick_name: String,
    /// Author's avatar.
    pub author_avatar_url: String,
    /// The text.
    pub content: String,
    /// Photo URLs.
    pub photos: Vec<String>,
    /// Public or private.
    pub visibility: Visibility,
    /// Whether a moderator banned it.
    pub banned: bool,
    /// Derived: public, private or banned.
    pub state: NoticeState,
    /// Posting time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl NewNotice {
    /// The notice as stored under `id` at `created_at`: not banned, never
    /// edited yet.
    pub fn stored(self, id: String, created_at: DateTime<Utc>) -> Notice {
        Notice {
            id,
            author_openid: self.author_openid,
            author_nick_name: self.author_nick_name,
            author_avatar_url: self.author_avatar_url,
            content: self.content,
            photos: self.photos,
            visibility: self.visibility,
            banned: false,
            state: NoticeState::of(self.visibility, false),
            created_at,
            updated_at: created_at,
        }
    }
}

/// An author's change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoticePatch {
    /// New text.
    pub content: Option<String>,
    /// New visibility.
    pub visibility: Option<Visibility>,
}
