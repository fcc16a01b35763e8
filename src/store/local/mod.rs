//! The local tiers, memory over disk, as one: the owner of what a node serves from itself.
//!
//! The disk tier's index owns each key's state: the version of its entry (the number its
//! commit took on the change clock), or none. Every change to a key (a client's commit, a fill's
//! commit, a delete, an eviction, a corrupt entry removed) goes through that index under its
//! lock and moves the version on. The memory tier holds copies of disk entries, each tagged with
//! the version it was read at, and a copy is served only while the disk entry is still at that
//! version. So a memory copy inserted late (a fill or a promotion that lost a race with a write
//! or a delete) can never be served: whatever it raced with moved the version on first. The
//! memory tier is reachable only through this type; `docs/coherence.md` has the whole table.

pub mod memory;

use std::sync::Arc;

use bytes::Bytes;

use super::body::read_exact;
use super::disk::{Commit, DiskTier, Sealed, Version};
use super::entry_file::EntryHeader;
use super::{bytes_stream, Key, Object, ObjectMeta, StoreError, Tier};
use crate::metrics::Metrics;
use memory::{MemoryEntry, MemoryTier};

/// Memory over disk; cheap to clone.
#[derive(Clone)]
pub struct LocalTiers {
    memory: MemoryTier,
    disk: DiskTier,
    metrics: Arc<Metrics>,
}

impl LocalTiers {
    pub fn new(memory: MemoryTier, disk: DiskTier, metrics: Arc<Metrics>) -> LocalTiers {
        LocalTiers {
            memory,
            disk,
            metrics,
        }
    }

    pub fn disk(&self) -> &DiskTier {
        &self.disk
    }

    pub fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    /// The key's memory copy, if it is a copy of the disk entry as it is now. A copy of an
    /// older version is dropped. Counts as a read of the disk entry for its eviction order.
    pub async fn memory_copy(&self, key: &Key) -> Option<Arc<MemoryEntry>> {
        let entry = self.memory.lookup(key).await?;
        if self.disk.touch_version(key) == Some(entry.version) {
            return Some(entry);
        }
        // Only a copy is lost if a current one was put in place since the lookup.
        self.memory.remove(key).await;
        None
    }

    /// Keeps `data` in memory as the copy of `version` of the key's disk entry, if it is small
    /// enough. Nothing is kept when the entry has moved on already (it would never be served).
    pub async fn keep_in_memory(&self, key: &Key, data: Bytes, meta: ObjectMeta, version: Version) {
        if !self.memory.accepts(data.len() as u64) || self.disk.version(key) != Some(version) {
            return;
        }
        let entry = MemoryEntry {
            data,
            meta,
            version,
        };
        self.memory.insert(key.clone(), entry).await;
    }

    /// Drops the key's memory copy (it is of an older version): frees the memory early; a copy
    /// left behind would not be served either.
    pub async fn drop_memory_copy(&self, key: &Key) {
        self.memory.remove(key).await;
    }

    /// The local copy's metadata, memory first.
    pub async fn meta(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        if let Some(entry) = self.memory_copy(key).await {
            return Ok(Some(entry.meta.clone()));
        }
        super::Store::head(&self.disk, key).await
    }

    /// Memory, then disk; a small disk hit is kept in memory, tagged with the version it was
    /// read at. `None`: no local copy.
    pub async fn get(&self, key: &Key) -> Result<Option<Object>, StoreError> {
        if let Some(entry) = self.memory_copy(key).await {
            self.metrics.record_lookup(Tier::Memory, true);
            return Ok(Some(Object {
                meta: entry.meta.clone(),
                body: bytes_stream(entry.data.clone()),
                tier: Tier::Memory,
            }));
        }
        self.metrics.record_lookup(Tier::Memory, false);
        let Some((version, object)) = self.disk.get_versioned(key).await? else {
            self.metrics.record_lookup(Tier::Disk, false);
            return Ok(None);
        };
        if !self.memory.accepts(object.meta.len) {
            self.metrics.record_lookup(Tier::Disk, true);
            return Ok(Some(object));
        }
        // A body failing here is corruption the disk tier found (and removed): a local miss.
        let Ok(data) = read_exact(object.body, object.meta.len).await else {
            self.metrics.record_lookup(Tier::Disk, false);
            return Ok(None);
        };
        self.metrics.record_lookup(Tier::Disk, true);
        self.keep_in_memory(key, data.clone(), object.meta.clone(), version)
            .await;
        Ok(Some(Object {
            meta: object.meta,
            body: bytes_stream(data),
            tier: Tier::Disk,
        }))
    }

    /// Commits a sealed entry, then keeps a small one's memory copy. The memory copy is read
    /// back from the committed file (from the page cache, verified like any disk read) rather
    /// than kept while the body streamed in: a copy kept on the way would cost every upload in
    /// progress, stalled ones included, up to `memory.max_entry_size`. Returns the version,
    /// `None` when a [`Commit::Fill`] was overtaken.
    pub async fn commit(
        &self,
        sealed: Sealed,
        mode: Commit,
    ) -> Result<(EntryHeader, Option<Version>), StoreError> {
        let header = sealed.header().clone();
        let key = header.key.clone();
        let version = sealed.commit(mode).await?;
        self.memory.remove(&key).await;
        if version.is_some() && self.memory.accepts(header.body_len) {
            if let Ok(Some((version, object))) = self.disk.get_versioned(&key).await {
                // A body failing here (corruption found) only means no memory copy.
                if let Ok(data) = read_exact(object.body, object.meta.len).await {
                    self.keep_in_memory(&key, data, object.meta, version).await;
                }
            }
        }
        Ok((header, version))
    }

    /// Removes the memory and disk copies; whether there was one on disk.
    pub async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        let removed = super::Store::delete(&self.disk, key).await;
        self.memory.remove(key).await;
        removed
    }
}

#[cfg(test)]
mod tests;
