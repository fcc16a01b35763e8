//! The composition the fronts talk to: memory in front of disk.
//!
//! Reads go memory → disk; a small disk hit is promoted to memory. Writes go to disk (the
//! durable local copy) and, when small, to memory once the disk write committed.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};

use super::disk::DiskTier;
use super::memory::{MemoryEntry, MemoryTier};
use super::{bytes_stream, ByteStream, Key, Object, ObjectMeta, Store, StoreError, Tier};
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct TieredStore {
    memory: MemoryTier,
    disk: DiskTier,
    metrics: Arc<Metrics>,
}

impl TieredStore {
    pub fn new(memory: MemoryTier, disk: DiskTier, metrics: Arc<Metrics>) -> Self {
        TieredStore {
            memory,
            disk,
            metrics,
        }
    }

    pub fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    pub fn disk(&self) -> &DiskTier {
        &self.disk
    }

    fn lookup(&self, tier: Tier, hit: bool) {
        self.metrics.record_lookup(tier, hit);
    }

    /// Reads a whole small body into memory; an error (corruption found) is a miss.
    async fn collect_small(body: ByteStream, len: u64) -> Option<Bytes> {
        let mut buf = BytesMut::with_capacity(len as usize);
        let mut body = body;
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.ok()?);
        }
        (buf.len() as u64 == len).then(|| buf.freeze())
    }
}

impl Store for TieredStore {
    async fn get(&self, key: &Key) -> Result<Option<Object>, StoreError> {
        if let Some(entry) = self.memory.lookup(key).await {
            self.lookup(Tier::Memory, true);
            return Ok(Some(Object {
                meta: ObjectMeta {
                    len: entry.data.len() as u64,
                    modified: entry.modified,
                    crc32c: Some(entry.crc32c),
                },
                body: bytes_stream(entry.data.clone()),
                tier: Tier::Memory,
            }));
        }
        self.lookup(Tier::Memory, false);
        let Some(object) = self.disk.get(key).await? else {
            self.lookup(Tier::Disk, false);
            return Ok(None);
        };
        if !self.memory.accepts(object.meta.len) {
            self.lookup(Tier::Disk, true);
            return Ok(Some(object));
        }
        let Some(data) = Self::collect_small(object.body, object.meta.len).await else {
            self.lookup(Tier::Disk, false);
            return Ok(None);
        };
        self.lookup(Tier::Disk, true);
        self.memory
            .insert(
                key.clone(),
                MemoryEntry::new(data.clone(), object.meta.modified),
            )
            .await;
        Ok(Some(Object {
            meta: object.meta,
            body: bytes_stream(data),
            tier: Tier::Disk,
        }))
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        if let Some(meta) = self.memory.head(key).await? {
            return Ok(Some(meta));
        }
        self.disk.head(key).await
    }

    async fn put(&self, key: &Key, len: u64, body: ByteStream) -> Result<(), StoreError> {
        if !self.memory.accepts(len) {
            return self.disk.put(key, len, body).await;
        }
        // Keep a copy of a small body while it streams to disk; it enters memory only after
        // the disk write committed, so memory never holds what disk refused.
        let copy = Arc::new(Mutex::new(BytesMut::with_capacity(len as usize)));
        let sink = copy.clone();
        let teed = body.inspect_ok(move |chunk| {
            let mut buf = sink.lock().unwrap_or_else(|e| e.into_inner());
            if (buf.len() + chunk.len()) as u64 <= len {
                buf.extend_from_slice(chunk);
            }
        });
        let header = self.disk.put_entry(key, len, Box::pin(teed), false).await?;
        let data = std::mem::take(&mut *copy.lock().unwrap_or_else(|e| e.into_inner())).freeze();
        self.memory
            .insert(key.clone(), MemoryEntry::new(data, header.modified))
            .await;
        Ok(())
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        let in_memory = self.memory.remove(key).await;
        Ok(self.disk.delete(key).await? || in_memory)
    }
}
