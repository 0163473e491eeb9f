//! Key names, the Redis Cluster slot rule, and the Lua scripts.
//!
//! The scripts run unchanged on one Redis and on a Redis Cluster. In a
//! cluster a script may only touch keys of the slot its `KEYS` hash to, so
//! each script is told whether it runs in a cluster (`'1'`) and, there, leaves
//! any key of another slot to its caller (it returns that key's name).

use super::super::{SessionId, user_tag};

/// Key names under one prefix.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: String) -> Self {
        Self { prefix }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}code:{code}`, `{prefix}token:{u:<tag>}:<sha256>` (or
    /// `{prefix}token:<sha256>` for an untagged token).
    pub(super) fn session(&self, id: &SessionId) -> String {
        // Built in place: this runs on every authenticated request.
        let ns = id.kind.namespace();
        let mut key = String::with_capacity(self.prefix.len() + ns.len() + 1 + id.id.len());
        key.push_str(&self.prefix);
        key.push_str(ns);
        key.push(':');
        key.push_str(&id.id);
        key
    }

    /// `{prefix}openid:{u:<tag>}:<sha1(openid)>`, in the same slot as the
    /// user's token sessions. [`DELETE_LUA`] builds the same name.
    pub(super) fn index(&self, openid: &str) -> String {
        use sha1::Digest;
        let digest = hex::encode(sha1::Sha1::digest(openid.as_bytes()));
        format!("{}openid:{{u:{}}}:{digest}", self.prefix, user_tag(openid))
    }

    pub(super) fn kv(&self, name: &str) -> String {
        format!("{}kv:{name}", self.prefix)
    }

    pub(super) fn lock(&self, name: &str) -> String {
        format!("{}lock:{name}", self.prefix)
    }

    /// `{prefix}fail:<key suffix>`: a session's decryption-failure count. A
    /// tagged token's count keeps its `{u:<tag>}`, so it shares the
    /// session's cluster slot.
    pub(super) fn failures(&self, id: &SessionId) -> String {
        format!("{}fail:{}", self.prefix, id.key_suffix())
    }
}

/// The part of `key` Redis Cluster hashes to pick its slot: the text between
/// the first `{` and the next `}` when that is not empty, else the whole key.
pub(super) fn hashed_part(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.find('}')
            && close > 0
        {
            return &rest[..close];
        }
    }
    key
}

/// Whether two keys surely share a cluster slot (equal hashed parts). Keys
/// that land in one slot by a CRC16 coincidence count as apart: that only
/// costs a second step, never correctness.
pub(super) fn same_slot(a: &str, b: &str) -> bool {
    hashed_part(a) == hashed_part(b)
}

/// Lua twin of [`hashed_part`], shared by the scripts.
macro_rules! lua_hashed_part {
    () => {
        r"
local function hashed(key)
  local open = string.find(key, '{', 1, true)
  if open then
    local close = string.find(key, '}', open + 1, true)
    if close and close > open + 1 then
      return string.sub(key, open + 1, close - 1)
    end
  end
  return key
end
"
    };
}

/// Log a user in: repoint the openid index at the new session, write the
/// session when it shares the index's slot, and delete the session the index
/// pointed at before (when it is another one).
///
/// `KEYS[1]`: the openid index. `KEYS[2]` (only when written here): the new
/// session. ARGV: prefix, new session's key suffix, index TTL (ms), cluster
/// (`'1'`/`'0'`), then with `KEYS[2]`: record JSON, session TTL (ms).
///
/// Returns the previous session's key when it is in another cluster slot (the
/// caller deletes it), else nil.
pub(super) const CREATE_LUA: &str = concat!(
    lua_hashed_part!(),
    r"
local old = redis.call('GET', KEYS[1])
if KEYS[2] then
  redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[6])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if not old or old == ARGV[2] then
  return false
end
if string.sub(old, 1, 5) ~= 'code:' and string.sub(old, 1, 6) ~= 'token:' then
  return false
end
local key = ARGV[1] .. old
if ARGV[4] == '1' and hashed(key) ~= hashed(KEYS[1]) then
  return key
end
redis.call('DEL', key)
return false
"
);

/// Delete a session and its user's openid index entry if that points at it.
///
/// `KEYS[1]`: the session. ARGV: prefix, its key suffix, cluster (`'1'`/`'0'`).
///
/// Returns the index key when it is in another cluster slot (the caller
/// clears it with [`UNINDEX_LUA`]), else nil. The index name is built as
/// [`Keys::index`] builds it: `openid:{u:<8 hex>}:<sha1 hex>`.
pub(super) const DELETE_LUA: &str = concat!(
    lua_hashed_part!(),
    r"
local v = redis.call('GET', KEYS[1])
if not v then
  return false
end
redis.call('DEL', KEYS[1])
local ok, rec = pcall(cjson.decode, v)
if not ok or type(rec) ~= 'table' or type(rec.openid) ~= 'string' then
  return false
end
local h = redis.sha1hex(rec.openid)
local index = ARGV[1] .. 'openid:{u:' .. string.sub(h, 1, 8) .. '}:' .. h
if ARGV[3] == '1' and hashed(index) ~= hashed(KEYS[1]) then
  return index
end
if redis.call('GET', index) == ARGV[2] then
  redis.call('DEL', index)
end
return false
"
);

/// Delete an openid index entry if it still points at the given session.
///
/// `KEYS[1]`: the index. `ARGV[1]`: the session's key suffix.
pub(super) const UNINDEX_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Count one failure: `INCR`, and start the window (`PEXPIRE`) when the key
/// is new or has no expiry (Redis 6.2 has no `EXPIRE … NX`).
///
/// `KEYS[1]`: the counter. `ARGV[1]`: the window (ms). Returns the count.
pub(super) const COUNT_FAILURE_LUA: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
";

/// Release a lock only if the caller's token still holds it.
///
/// `KEYS[1]`: the lock. `ARGV[1]`: the token.
pub(super) const UNLOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

#[cfg(test)]
mod tests {
    use super::super::super::USER_TAG_LEN;
    use super::*;

    #[test]
    fn hashed_part_follows_the_cluster_rule() {
        assert_eq!(hashed_part("p:openid:{u:1a2b3c4d}:ff"), "u:1a2b3c4d");
        assert_eq!(hashed_part("plain"), "plain");
        assert_eq!(hashed_part("a{}b{c}"), "a{}b{c}", "an empty tag hashes the whole key");
        assert_eq!(hashed_part("a{b"), "a{b");
        assert_eq!(hashed_part("{x}{y}"), "x", "only the first tag counts");
        assert_eq!(hashed_part("{{x}}"), "{x");
    }

    #[test]
    fn session_keys_are_the_prefix_and_the_key_suffix() {
        let keys = Keys::new("weapp:".into());
        assert_eq!(keys.session(&SessionId::code("abc")), "weapp:code:abc");
        let id = SessionId::token("t0k3n");
        assert_eq!(keys.session(&id), format!("weapp:{}", id.key_suffix()));
        assert_eq!(SessionId::from_key_suffix(&id.key_suffix()), Some(id));
    }

    #[test]
    fn a_users_index_and_tagged_tokens_share_a_slot() {
        let keys = Keys::new("weapp:".into());
        let token = crate::store::new_token("o_tom").unwrap();
        let session = keys.session(&SessionId::token(&token));
        let index = keys.index("o_tom");
        assert!(same_slot(&session, &index), "{session} / {index}");
        assert!(!index.contains("o_tom"), "no raw openid in key names: {index}");
        assert_eq!(hashed_part(&index), format!("u:{}", user_tag("o_tom")));
        assert_eq!(user_tag("o_tom").len(), USER_TAG_LEN);
        assert!(DELETE_LUA.contains(&format!("string.sub(h, 1, {USER_TAG_LEN})")));

        // A token's failure counter lives with it.
        let failures = keys.failures(&SessionId::token(&token));
        assert!(same_slot(&session, &failures), "{session} / {failures}");
        assert_ne!(failures, session);

        // A prefix with its own tag puts every key in one slot.
        let keys = Keys::new("{weapp}:".into());
        assert!(same_slot(&keys.session(&SessionId::code("c")), &keys.index("o_tom")));
    }
}
