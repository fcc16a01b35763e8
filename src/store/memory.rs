//! The memory tier: moka, weighed in bytes, holding only small entries whole.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::backend::single_etag;
use super::body::read_exact;
use super::{
    bytes_stream, ByteStream, Key, Object, ObjectMeta, PutOptions, Store, StoreError, Tier,
};

/// One entry held in memory, with the same metadata the disk tier has for it.
#[derive(Debug, Clone)]
pub struct MemoryEntry {
    pub data: Bytes,
    pub meta: ObjectMeta,
}

impl MemoryEntry {
    /// An entry with no ETag or attributes (its checksum is computed here).
    pub fn new(data: Bytes, modified: SystemTime) -> Self {
        let crc32c = crc32c::crc32c(&data);
        let meta = ObjectMeta::new(data.len() as u64, modified, Some(crc32c));
        MemoryEntry { data, meta }
    }

    /// An entry read from another tier, with that tier's metadata.
    pub fn with_meta(data: Bytes, meta: ObjectMeta) -> Self {
        MemoryEntry { data, meta }
    }

    fn meta(&self) -> ObjectMeta {
        self.meta.clone()
    }
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

    pub async fn lookup(&self, key: &Key) -> Option<Arc<MemoryEntry>> {
        self.cache.get(key).await
    }

    pub async fn insert(&self, key: Key, entry: MemoryEntry) {
        if self.accepts(entry.data.len() as u64) {
            self.cache.insert(key, Arc::new(entry)).await;
        }
    }

    pub async fn remove(&self, key: &Key) -> bool {
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

impl Store for MemoryTier {
    async fn get(&self, key: &Key) -> Result<Option<Object>, StoreError> {
        Ok(self.lookup(key).await.map(|entry| Object {
            meta: entry.meta(),
            body: bytes_stream(entry.data.clone()),
            tier: Tier::Memory,
        }))
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(self.lookup(key).await.map(|entry| entry.meta()))
    }

    async fn put(
        &self,
        key: &Key,
        len: u64,
        body: ByteStream,
        options: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        if !self.accepts(len) {
            return Err(StoreError::Full { needed: len });
        }
        let data = read_exact(body, len).await?;
        let meta = ObjectMeta {
            crc32c: Some(crc32c::crc32c(&data)),
            etag: options.etag.then(|| single_etag(&data)),
            attrs: options.attrs.clone(),
            ..ObjectMeta::new(len, SystemTime::now(), None)
        };
        self.insert(key.clone(), MemoryEntry::with_meta(data, meta.clone()))
            .await;
        Ok(meta)
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        Ok(self.remove(key).await)
    }
}
