//! Read-through snapshots of hot, expensive reads (a PK group's day, the first
//! page of the public feed), served from memory for a short TTL.
//!
//! - Fresh (younger than the TTL): served as is.
//! - Stale (older than the TTL, younger than [`STALE_FACTOR`] × TTL): still
//!   served, while one background reload runs (stale-while-revalidate), so
//!   readers never queue behind a reload.
//! - Older than that, or never loaded: the reader waits for a load, which
//!   concurrent readers of the same key share.
//! - [`Snapshots::write`] wraps a local write: it drops the entry, and no
//!   load that started before the write finished is served to a caller that
//!   came after it, so the instance that wrote answers its next read with the
//!   write in it. Writes on other instances show up after at most the TTL
//!   plus one reload.

use std::hash::Hash;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::data::DataError;

/// A snapshot older than this many TTLs is not served at all.
pub const STALE_FACTOR: u32 = 5;

/// One loaded value and when it was loaded.
pub struct Snapshot<V> {
    value: V,
    loaded_at: Instant,
    /// The key's write generation when the load started.
    generation: u64,
    reloading: AtomicBool,
}

impl<V> Deref for Snapshot<V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.value
    }
}

/// Snapshots of `V` by key; see the module documentation.
pub struct Snapshots<K, V> {
    what: &'static str,
    ttl: Duration,
    entries: moka::future::Cache<K, Arc<Snapshot<V>>>,
    /// Bumped around every local write of a key.
    generations: moka::sync::Cache<K, Arc<AtomicU64>>,
}

impl<K, V> Snapshots<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Snapshots of `what` (for logs) kept `ttl`, at most `max_weight` in
    /// total as `weight` counts them.
    pub fn new(what: &'static str, ttl: Duration, max_weight: u64, weight: fn(&V) -> u32) -> Self {
        let hard_ttl = ttl.saturating_mul(STALE_FACTOR);
        Self {
            what,
            ttl,
            entries: moka::future::Cache::builder()
                .weigher(move |_, s: &Arc<Snapshot<V>>| weight(&s.value).saturating_add(1))
                .max_capacity(max_weight)
                .time_to_live(hard_ttl)
                .build(),
            // Idle far longer than any entry it guards can live.
            generations: moka::sync::Cache::builder()
                .max_capacity(max_weight.max(1_000))
                .time_to_idle(hard_ttl.saturating_mul(4))
                .build(),
        }
    }

    fn generation(&self, key: &K) -> Arc<AtomicU64> {
        self.generations.get_with_by_ref(key, || Arc::new(AtomicU64::new(0)))
    }

    /// The snapshot of `key`, loading it with `load` when there is none (or
    /// reloading it in the background when it is stale).
    ///
    /// A caller gets a snapshot whose load started after every local write of
    /// `key` that had finished when the call began.
    pub async fn get<F, Fut>(&self, key: &K, load: F) -> Result<Arc<Snapshot<V>>, DataError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, DataError>> + Send + 'static,
    {
        let generation = self.generation(key);
        let needed = generation.load(Ordering::Acquire);
        if let Some(snap) = self.entries.get(key).await
            && snap.generation >= needed
        {
            if snap.loaded_at.elapsed() >= self.ttl && !snap.reloading.swap(true, Ordering::AcqRel)
            {
                let (entries, key, what) = (self.entries.clone(), key.clone(), self.what);
                tokio::spawn(async move {
                    if let Err(e) = Self::load_into(&entries, &generation, &key, &load).await {
                        crate::session::warn_limited!(error = %e, what, "snapshot reload failed; serving the old one");
                        if let Some(s) = entries.get(&key).await {
                            s.reloading.store(false, Ordering::Release);
                        }
                    }
                });
            }
            return Ok(snap);
        }
        // Concurrent readers share one load. A shared load that started
        // before a write this caller must see is dropped and done again
        // (shared again with the others in the same position).
        for _ in 0..3 {
            let shared = self
                .entries
                .try_get_with_by_ref(key, async {
                    let started = generation.load(Ordering::Acquire);
                    let value = load().await?;
                    Ok::<_, DataError>(Arc::new(Snapshot {
                        value,
                        loaded_at: Instant::now(),
                        generation: started,
                        reloading: AtomicBool::new(false),
                    }))
                })
                .await
                .map_err(|e: Arc<DataError>| (*e).clone())?;
            if shared.generation >= needed {
                return Ok(shared);
            }
            self.entries.invalidate(key).await;
        }
        Self::load_into(&self.entries, &generation, key, &load).await
    }

    /// Load `key`; cache it unless a local write overlapped the load.
    async fn load_into<F, Fut>(
        entries: &moka::future::Cache<K, Arc<Snapshot<V>>>,
        generation: &AtomicU64,
        key: &K,
        load: &F,
    ) -> Result<Arc<Snapshot<V>>, DataError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, DataError>>,
    {
        let started = generation.load(Ordering::Acquire);
        let value = load().await?;
        let snap = Arc::new(Snapshot {
            value,
            loaded_at: Instant::now(),
            generation: started,
            reloading: AtomicBool::new(false),
        });
        if generation.load(Ordering::Acquire) == started {
            entries.insert(key.clone(), snap.clone()).await;
        }
        Ok(snap)
    }

    /// Run a local write of `key`, then drop its snapshot. A load that
    /// overlaps the write in any way is not cached.
    pub async fn write<T>(&self, key: &K, write: impl Future<Output = T>) -> T {
        let generation = self.generation(key);
        generation.fetch_add(1, Ordering::AcqRel);
        let out = write.await;
        generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(key).await;
        out
    }
}
