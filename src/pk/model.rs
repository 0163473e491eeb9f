//! PK records as the handlers and the stores see them. Text fields are
//! shared (`Arc<str>`): a cached board hands out copies on every ranking read.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One check-in: today's steps of one user in one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepCheckin {
    /// The group (`openGId` from the decrypted share ticket).
    pub open_gid: String,
    /// `YYYY-MM-DD` in the configured timezone.
    pub date: String,
    /// The user.
    pub openid: String,
    /// Steps from the decrypted WeRun data.
    pub steps: u64,
    /// Display name from the session's user info.
    pub nick_name: String,
    /// Avatar URL from the session's user info.
    pub avatar_url: String,
    /// When the check-in happened.
    pub at: DateTime<Utc>,
}

/// A stored step record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The group.
    pub open_gid: Arc<str>,
    /// `YYYY-MM-DD`.
    pub date: Arc<str>,
    /// The user (never sent to other users).
    pub openid: Arc<str>,
    /// Best step count of the day.
    pub steps: u64,
    /// Display name.
    pub nick_name: Arc<str>,
    /// Avatar URL.
    pub avatar_url: Arc<str>,
    /// When `steps` was first reached (the tie-breaker).
    pub reached_at: DateTime<Utc>,
    /// Last check-in.
    pub updated_at: DateTime<Utc>,
}

/// A user's membership of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The group.
    pub open_gid: String,
    /// The member.
    pub openid: String,
    /// When membership was first proven.
    pub joined_at: DateTime<Utc>,
}

/// One ranking entry as clients see it (no openid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RankedEntry {
    /// 1-based rank.
    pub rank: u64,
    /// Display name.
    pub nick_name: Arc<str>,
    /// Avatar URL.
    pub avatar_url: Arc<str>,
    /// Steps.
    pub steps: u64,
    /// Whether this entry is the caller's.
    pub is_me: bool,
}

/// One of the caller's groups with their rank today.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRank {
    /// The group.
    #[serde(rename = "openGId")]
    pub open_gid: String,
    /// The caller's rank today, if they checked in today.
    pub rank: Option<u64>,
    /// The caller's steps today.
    pub steps: Option<u64>,
    /// How many members checked in today.
    pub participants: u64,
}
