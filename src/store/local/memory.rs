//! The memory tier: moka, weighed in bytes, holding small entries whole, each a copy of one
//! version of the key's disk entry. Only [`super::LocalTiers`] reads and fills it: it serves a
//! copy only while the disk entry is still at the copy's version.

use std::sync::Arc;

use bytes::Bytes;

use crate::store::disk::Version;
use crate::store::{Key, ObjectMeta};

/// One entry held in memory: a copy of the disk entry at `version`, with its metadata.
#[derive(Debug, Clone)]
pub struct MemoryEntry {
    pub data: Bytes,
    pub meta: ObjectMeta,
    pub version: Version,
}

/// Byte-bounded in-memory cache of entries up to `max_entry_size`.
#[derive(Clone)]
pub struct MemoryTier {
    cache: moka::future::Cache<Key, Arc<MemoryEntry>>,
    max_entry_size: u64,
}

impl MemoryTier {
    pub fn new(max_size: u64, max_entry_size: u64) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_size)
            .weigher(|key: &Key, entry: &Arc<MemoryEntry>| {
                let weight = entry.data.len() + key.name().len() + 64;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .build();
        MemoryTier {
            cache,
            max_entry_size: if max_size == 0 { 0 } else { max_entry_size },
        }
    }

    /// Whether an entry of this size belongs in memory at all.
    pub fn accepts(&self, len: u64) -> bool {
        len <= self.max_entry_size && self.max_entry_size > 0
    }

    pub(super) async fn lookup(&self, key: &Key) -> Option<Arc<MemoryEntry>> {
        self.cache.get(key).await
    }

    /// What memory holds for the key, current or not (tests look at the tier itself).
    #[cfg(test)]
    pub async fn held(&self, key: &Key) -> Option<Arc<MemoryEntry>> {
        self.cache.get(key).await
    }

    pub(super) async fn insert(&self, key: Key, entry: MemoryEntry) {
        if self.accepts(entry.data.len() as u64) {
            self.cache.insert(key, Arc::new(entry)).await;
        }
    }

    pub(super) async fn remove(&self, key: &Key) -> bool {
        self.cache.remove(key).await.is_some()
    }

    /// Bytes and entries currently held (approximate until moka's pending tasks run).
    pub fn usage(&self) -> (u64, u64) {
        (self.cache.weighted_size(), self.cache.entry_count())
    }

    /// Runs moka's deferred maintenance, so usage and evictions are current.
    pub async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }
}
