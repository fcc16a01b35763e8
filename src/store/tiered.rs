//! The composition the fronts talk to: memory in front of disk, optionally S3 behind both.
//!
//! Reads go memory → disk → S3; a small disk hit is promoted to memory, and an S3 hit is filled
//! into disk (and memory, when small) while it streams ([`super::read_through`]). An S3 failure
//! on read is reported as the error it is ([`StoreError::Remote`], or
//! [`StoreError::Unavailable`] while the breaker skips S3): what it means to a client is the
//! front's decision (Gradle answers a miss).
//!
//! A local hit of a namespace whose policy is [`Freshness::Revalidate`] is first confirmed with
//! the backend (see [`TieredStore::read`]); Gradle's namespace is immutable and its hits are
//! served as they are. An object larger than its namespace's `max_object_size`, or than the disk
//! tier can take, is streamed through from the backend instead of cached.
//!
//! Writes go to disk (the durable local copy) and, when small, to memory once the disk write
//! committed. With a backend, each namespace's write mode ([`super::policy::WriteMode`]) says
//! what else happens:
//! - back: the entry is committed pinned and queued ([`super::write_back`]); acknowledged once
//!   the queue marker is durable;
//! - through: the entry is sealed, uploaded from its file, committed once S3 has it, and then
//!   acknowledged, under the key's lock. If the upload fails the write fails and leaves no copy;
//! - local: the entry stays on this node, as without a backend.
//!
//! Deletes follow the same mode: through deletes in the backend, then locally; back queues the
//! delete (durably, before it is acknowledged) and removes the local copies, and until the
//! backend has applied it the key reads as missing; local removes the local copies only.
//!
//! Which copy may be served is decided by one owner, [`super::local::LocalTiers`] over the
//! disk tier's change order; `docs/coherence.md` has the states and transitions.
//!
//! A listing ([`TieredStore::list`]) is the backend's merged with what the queue still owes
//! it, or the disk tier's own for a namespace with no backend.

mod listing;
mod local_copy;
mod write;

use std::sync::Arc;

use super::backend::{Backend, GetOptions};
use super::disk::{DiskTier, RangedObject};
use super::key_locks::KeyLocks;
use super::local::LocalTiers;
use super::memory::MemoryTier;
use super::policy::{Freshness, Policies, WriteMode};
use super::read_through::{Ask, ReadThrough, Through};
use super::s3::S3Tier;
use super::write_back::{Op, WriteBack};
use super::{
    BodyLen, ByteStream, Key, Namespace, Object, ObjectMeta, PutOptions, Read, Store, StoreError,
    Tier,
};
use crate::metrics::Metrics;

/// The store the fronts use, over the backend `B` (S3 in the daemon, a fake in unit tests).
#[derive(Clone)]
pub struct TieredStore<B: Backend = S3Tier> {
    /// Memory over disk: what this node serves itself (see [`super::local`]).
    local: LocalTiers,
    /// The disk tier of `local`, which owns each key's version.
    disk: DiskTier,
    remote: Option<Remote<B>>,
    /// What each namespace asks of the store (see [`super::policy`]).
    policies: Arc<Policies>,
    /// Orders the writes and deletes of one key that reach the backend: a written-back key's
    /// commit and queue marker against a delete of it (so the marker left on disk and the local
    /// copy belong to the same, newest op), and a write-through's upload and local commit
    /// against another write or delete of it (so the node and S3 end with the same body).
    key_locks: Arc<KeyLocks>,
    metrics: Arc<Metrics>,
}

/// The backend behind the local tiers: read through it, and write back to it through the
/// queue when a namespace asks for that.
#[derive(Clone)]
pub struct Remote<B: Backend = S3Tier> {
    pub read: ReadThrough<B>,
    /// The write-back queue; the daemon builds one when any namespace writes back.
    pub queue: Option<WriteBack<B>>,
}

impl<B: Backend> Remote<B> {
    pub fn backend(&self) -> &B {
        self.read.remote()
    }
}

/// How a write or delete reaches the backend.
enum Route<'a, B: Backend> {
    Local,
    Through(&'a B),
    Back(&'a WriteBack<B>),
}

impl<B: Backend> TieredStore<B> {
    /// The local tiers alone; [`TieredStore::with_remote`] puts a backend behind them.
    pub fn new(memory: MemoryTier, disk: DiskTier, metrics: Arc<Metrics>) -> Self {
        TieredStore {
            local: LocalTiers::new(memory, disk.clone(), metrics.clone()),
            disk,
            remote: None,
            policies: Arc::new(Policies::default()),
            key_locks: Arc::new(KeyLocks::default()),
            metrics,
        }
    }

    /// Sets the namespaces' policies (by default every namespace has Gradle's).
    pub fn with_policies(mut self, policies: Policies) -> Self {
        self.policies = Arc::new(policies);
        self
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Puts a backend behind the local tiers.
    pub fn with_remote(mut self, remote: Remote<B>) -> Self {
        self.remote = Some(remote);
        self
    }

    pub fn remote(&self) -> Option<&Remote<B>> {
        self.remote.as_ref()
    }

    /// The write mode a namespace's writes and deletes actually get: local without a backend.
    pub fn write_mode(&self, namespace: &Namespace) -> WriteMode {
        match self.route(namespace) {
            Route::Local => WriteMode::Local,
            Route::Through(_) => WriteMode::Through,
            Route::Back(_) => WriteMode::Back,
        }
    }

    fn route(&self, namespace: &Namespace) -> Route<'_, B> {
        let Some(remote) = &self.remote else {
            return Route::Local;
        };
        match (self.policies.of(namespace).write, &remote.queue) {
            (WriteMode::Local, _) => Route::Local,
            (WriteMode::Back, Some(queue)) => Route::Back(queue),
            // The daemon builds a queue whenever a namespace writes back; without one,
            // write-through is the safe reading: nothing is acknowledged the backend lacks.
            (WriteMode::Back, None) | (WriteMode::Through, _) => Route::Through(remote.backend()),
        }
    }

    /// Whether `key` has a delete queued that the backend has not applied yet: until it has,
    /// the backend's copy must not be served (nor filled back).
    fn delete_pending(&self, key: &Key) -> bool {
        self.remote
            .as_ref()
            .and_then(|r| r.queue.as_ref())
            .is_some_and(|queue| queue.pending(key) == Some(Op::Delete))
    }

    /// Whether a local hit of `key` must be confirmed with the backend before it is served:
    /// in a revalidated namespace that the backend holds, unless the local entry is waiting
    /// for upload (then it is newer than anything the backend has).
    fn revalidates(&self, key: &Key) -> bool {
        let policy = self.policies.of(key.namespace());
        policy.freshness == Freshness::Revalidate
            && policy.write != WriteMode::Local
            && self.remote.is_some()
            && !self.disk.is_pinned(key)
    }

    /// The local copy's metadata, memory first.
    async fn local_meta(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        self.local.meta(key).await
    }

    fn revalidated(&self, result: &str) {
        self.metrics
            .revalidations
            .with_label_values(&[result])
            .inc();
    }

    /// A read from the local tiers alone. A range of an entry that is on disk (and not in
    /// memory) is read from its blocks alone; everything else is decided on the whole entry.
    async fn local_read(
        &self,
        key: &Key,
        options: &GetOptions,
    ) -> Result<Option<Read>, StoreError> {
        if let Some(range) = options.range {
            if self.local.memory_copy(key).await.is_none() {
                if let Some(ranged) = self.disk.get_range(key, range).await? {
                    self.lookup(Tier::Disk, true);
                    let RangedObject { object, span } = ranged;
                    // The range is decided; the preconditions still are the object's.
                    return Ok(Some(
                        match (Read::decide(object, &conditions_only(options)), span) {
                            (Read::Found { object, .. }, Some(span)) => {
                                Read::Found { object, span }
                            }
                            (Read::Found { object, .. }, None) => {
                                Read::RangeNotSatisfiable(object.meta.len)
                            }
                            (other, _) => other,
                        },
                    ));
                }
            }
        }
        Ok(self
            .local
            .get(key)
            .await?
            .map(|object| Read::decide(object, options)))
    }

    /// Confirms a local copy's metadata with a HEAD (a HEAD has no body to refill with, so
    /// it is one small request per call, not single-flighted): the same ETag serves the local
    /// metadata, another ETag the backend's, a 404 drops the local copy, a failure serves the
    /// local metadata unconfirmed.
    async fn revalidate_head(
        &self,
        remote: &Remote<B>,
        key: &Key,
        local: ObjectMeta,
    ) -> Result<Option<ObjectMeta>, StoreError> {
        let ticket = self.disk.begin_fill();
        match remote.read.remote().head(key).await {
            Ok(Some(meta)) if local.etag.is_some() && meta.etag == local.etag => {
                self.revalidated("not_modified");
                Ok(Some(local))
            }
            Ok(Some(meta)) => {
                self.revalidated("changed");
                Ok(Some(meta))
            }
            Ok(None) => {
                self.revalidated("gone");
                self.disk.discard_unchanged(key, ticket.order()).await?;
                Ok(None)
            }
            Err(e) => {
                self.revalidated("error");
                tracing::warn!(key = %key, error = %e, "S3 revalidation failed; serving the local copy unconfirmed");
                Ok(Some(local))
            }
        }
    }

    pub fn memory(&self) -> &MemoryTier {
        self.local.memory()
    }

    /// Memory over disk, as one.
    pub fn local(&self) -> &LocalTiers {
        &self.local
    }

    pub fn disk(&self) -> &DiskTier {
        &self.disk
    }

    fn lookup(&self, tier: Tier, hit: bool) {
        self.metrics.record_lookup(tier, hit);
    }
}

impl<B: Backend> Store for TieredStore<B> {
    async fn get(&self, key: &Key) -> Result<Option<Object>, StoreError> {
        match self.read(key, &GetOptions::default()).await? {
            Read::Found { object, .. } => Ok(Some(object)),
            // Without a range or preconditions there is nothing else to answer.
            Read::Missing
            | Read::NotModified(_)
            | Read::PreconditionFailed
            | Read::RangeNotSatisfiable(_) => Ok(None),
        }
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        if let Some(remote) = self.remote.as_ref().filter(|_| self.revalidates(key)) {
            if let Some(local) = self.local_meta(key).await? {
                // Boxed: see `read`.
                return Box::pin(self.revalidate_head(remote, key, local)).await;
            }
        }
        if let Some(meta) = self.local.meta(key).await? {
            return Ok(Some(meta));
        }
        match &self.remote {
            Some(_) if self.delete_pending(key) => Ok(None),
            Some(remote) => Box::pin(remote.backend().head(key)).await,
            None => Ok(None),
        }
    }

    async fn put(
        &self,
        key: &Key,
        len: impl Into<BodyLen> + Send,
        body: ByteStream,
        options: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        self.put_routed(key, len.into(), body, options).await
    }

    /// Per the namespace's write mode (see the module's documentation). `Ok(false)`: there was
    /// no local copy (the backend's answer to a delete does not say whether it had one).
    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        self.delete_routed(key).await
    }

    /// Local tiers first, then the backend. In a revalidated namespace a local copy is first
    /// confirmed with a GET conditional on its ETag (single-flighted with any fill of the key):
    /// 304 serves it, a changed object is served and refilled from that same GET, a 404 drops
    /// it and answers a miss, and a failure (or an open breaker) serves it unconfirmed. The
    /// range and preconditions are applied to whichever copy is served.
    async fn read(&self, key: &Key, options: &GetOptions) -> Result<Read, StoreError> {
        let max_object_size = self.policies.of(key.namespace()).max_object_size;
        // More than once only when the key changes under the read (a fill committing it
        // between a local miss and the backend's answer, a copy revalidated meanwhile).
        for _ in 0..READ_ATTEMPTS {
            if let Some(remote) = self.remote.as_ref().filter(|_| self.revalidates(key)) {
                if let Some(local) = self.local_meta(key).await? {
                    let ask = Ask::Revalidate(local.etag.as_deref());
                    // Boxed, as every backend call on this path: the S3 client's futures are
                    // kilobytes, and a future holds its largest await inline, so unboxed they
                    // would make every read's future (a memory hit's too) that large, and
                    // hyper moves a request's future into place once per request.
                    match Box::pin(remote.read.read(key, options, ask, max_object_size)).await {
                        Ok(Through::Local) => self.revalidated("not_modified"),
                        Ok(Through::Read(Read::Missing)) => {
                            self.revalidated("gone");
                            return Ok(Read::Missing);
                        }
                        Ok(Through::Read(read)) => {
                            self.revalidated("changed");
                            return Ok(read);
                        }
                        Err(e) => {
                            self.revalidated("error");
                            tracing::warn!(key = %key, error = %e, "S3 revalidation failed; serving the local copy unconfirmed");
                        }
                    }
                }
            }
            if let Some(read) = self.local_read(key, options).await? {
                return Ok(read);
            }
            let Some(remote) = &self.remote else {
                return Ok(Read::Missing);
            };
            // Deleted here, and the backend not told yet: its copy must not come back.
            if self.delete_pending(key) {
                return Ok(Read::Missing);
            }
            match Box::pin(remote.read.read(key, options, Ask::Miss, max_object_size)).await? {
                Through::Read(read) => return Ok(read),
                // A fill committed the key since the local miss: read it locally.
                Through::Local => continue,
            }
        }
        Err(StoreError::Remote(format!(
            "read of {key}: the key changed under {READ_ATTEMPTS} attempts"
        )))
    }
}

/// Times one read looks again when the key changes under it.
const READ_ATTEMPTS: usize = 3;

/// The options without their range.
fn conditions_only(options: &GetOptions) -> GetOptions {
    GetOptions {
        range: None,
        conditions: options.conditions.clone(),
    }
}

#[cfg(test)]
mod races;
#[cfg(test)]
mod tests;
