//! In-process session store: bounded, with per-entry TTLs. For one instance.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    Expiry, SessionId, SessionRecord, SessionStore, SharedStore, StoreError, random_token, unix_now,
};

#[derive(Clone)]
enum Value {
    Session(Arc<SessionRecord>),
    Text(Arc<str>),
    /// A failure counter ([`SessionStore::count_failure`]).
    Count(u64),
}

#[derive(Clone)]
struct Entry {
    value: Value,
    expires_at: Instant,
}

struct PerEntryExpiry;

impl moka::Expiry<String, Entry> for PerEntryExpiry {
    fn expire_after_create(&self, _key: &String, value: &Entry, now: Instant) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }
}

/// A bounded in-memory [`SessionStore`] (the embedded default).
///
/// When full, the least recently used entries are evicted first. Multi-key
/// writes (login, logout) hold one mutex so they are atomic with respect to
/// each other; reads never take it.
pub struct MemoryStore {
    entries: moka::sync::Cache<String, Entry>,
    writes: Mutex<()>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("entries", &self.entries.entry_count()).finish()
    }
}

impl MemoryStore {
    /// A store holding at most `max_entries` keys (a session takes two: its
    /// own and its user's index entry).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weapp_session::{MemoryStore, SessionStore, SharedStore};
    ///
    /// // One store for the sessions and for the values every part of the
    /// // service shares (e.g. `weapp_wechat::AccessTokens`).
    /// let store = Arc::new(MemoryStore::new(100_000));
    /// let sessions: Arc<dyn SessionStore> = store.clone();
    /// let shared: Arc<dyn SharedStore> = store;
    /// # let _ = (sessions, shared);
    /// ```
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryExpiry)
                .build(),
            writes: Mutex::new(()),
        }
    }

    fn live(&self, key: &str) -> Option<Entry> {
        let entry = self.entries.get(key)?;
        // moka expires lazily; never hand out an entry past its deadline.
        (entry.expires_at > Instant::now()).then_some(entry)
    }

    fn put(&self, key: String, value: Value, ttl: Duration) {
        self.entries.insert(key, Entry { value, expires_at: Instant::now() + ttl });
    }

    fn session(&self, key: &str) -> Option<(Arc<SessionRecord>, Instant)> {
        match self.live(key)? {
            Entry { value: Value::Session(r), expires_at } => Some((r, expires_at)),
            Entry { value: Value::Text(_) | Value::Count(_), .. } => None,
        }
    }

    fn text(&self, key: &str) -> Option<Arc<str>> {
        match self.live(key)?.value {
            Value::Text(t) => Some(t),
            Value::Session(_) | Value::Count(_) => None,
        }
    }

    /// Drop the session at `key` and, if it still points there, its openid
    /// index. The caller holds the write mutex.
    fn remove_session(&self, key: &str, record: &SessionRecord) {
        let index = openid_key(&record.openid);
        if self.text(&index).is_some_and(|k| *k == *key) {
            self.entries.invalidate(&index);
        }
        self.entries.invalidate(key);
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned mutex only means another writer panicked; the cache itself
        // is still consistent, so keep going.
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn openid_key(openid: &str) -> String {
    format!("openid:{openid}")
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.session(&id.key_suffix()).map(|(r, _)| (*r).clone()))
    }

    async fn load_and_touch(
        &self,
        id: &SessionId,
        expiry: Expiry,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let key = id.key_suffix();
        // Under the write mutex: a logout or a new login between the read and
        // the re-insert would otherwise be undone by it (the revoked session
        // written back with a fresh idle TTL).
        let _g = self.guard();
        let Some((record, _)) = self.session(&key) else {
            return Ok(None);
        };
        match expiry.remaining(record.created_at, unix_now()) {
            Some(ttl) => {
                self.put(key, Value::Session(record.clone()), ttl);
                Ok(Some((*record).clone()))
            }
            None => {
                self.remove_session(&key, &record);
                Ok(None)
            }
        }
    }

    async fn create(
        &self,
        id: &SessionId,
        record: &SessionRecord,
        ttl: Duration,
        index_ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = id.key_suffix();
        let index = openid_key(&record.openid);
        let _g = self.guard();
        if let Some(previous) = self.text(&index).filter(|p| **p != *key) {
            self.entries.invalidate(&*previous);
        }
        self.put(key.clone(), Value::Session(Arc::new(record.clone())), ttl);
        self.put(index, Value::Text(key.into()), index_ttl);
        Ok(())
    }

    async fn update(&self, id: &SessionId, record: &SessionRecord) -> Result<bool, StoreError> {
        let key = id.key_suffix();
        let _g = self.guard();
        let Some((_, expires_at)) = self.session(&key) else {
            return Ok(false);
        };
        self.entries
            .insert(key, Entry { value: Value::Session(Arc::new(record.clone())), expires_at });
        Ok(true)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = id.key_suffix();
        let _g = self.guard();
        match self.session(&key) {
            Some((record, _)) => self.remove_session(&key, &record),
            None => self.entries.invalidate(&key),
        }
        Ok(())
    }

    async fn current_for_openid(&self, openid: &str) -> Result<Option<SessionId>, StoreError> {
        Ok(self.text(&openid_key(openid)).and_then(|k| SessionId::from_key_suffix(&k)))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn count_failure(&self, id: &SessionId, window: Duration) -> Result<u64, StoreError> {
        // In the same bounded cache as everything else, under the write mutex
        // so concurrent failures each count.
        let key = format!("fail:{}", id.key_suffix());
        let _g = self.guard();
        let (count, expires_at) = match self.live(&key) {
            Some(Entry { value: Value::Count(n), expires_at }) => (n.saturating_add(1), expires_at),
            _ => (1, Instant::now() + window),
        };
        self.entries.insert(key, Entry { value: Value::Count(count), expires_at });
        Ok(count)
    }
}

#[async_trait]
impl SharedStore for MemoryStore {
    async fn kv_get(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.text(&format!("kv:{name}")).map(|t| t.to_string()))
    }

    async fn kv_set(&self, name: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.put(format!("kv:{name}"), Value::Text(value.into()), ttl);
        Ok(())
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        let key = format!("lock:{name}");
        let _g = self.guard();
        if self.live(&key).is_some() {
            return Ok(None);
        }
        let token = random_token(16)?;
        self.put(key, Value::Text(token.as_str().into()), ttl);
        Ok(Some(token))
    }

    async fn unlock(&self, name: &str, token: &str) -> Result<(), StoreError> {
        let key = format!("lock:{name}");
        let _g = self.guard();
        if self.text(&key).is_some_and(|t| &*t == token) {
            self.entries.invalidate(&key);
        }
        Ok(())
    }
}
