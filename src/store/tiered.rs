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
//! committed.
//! With S3, per the write policy:
//! - back: the entry is committed pinned and queued ([`super::write_back`]); acknowledged once
//!   the queue marker is durable;
//! - through: the entry is committed, uploaded from its file, and acknowledged only once S3
//!   has it. If the upload fails the write fails (the local copy stays, as a cache entry).
//!
//! A delete removes the local copies only: S3 is the shared tier of every node, and entries
//! leave it by the bucket's lifecycle rules, not by one node's decision.

use std::sync::Arc;

use super::backend::{Backend, GetOptions, Upload};
use super::body::read_exact;
use super::disk::{DiskTier, RangedObject};
use super::entry_file::EntryHeader;
use super::memory::{MemoryEntry, MemoryTier};
use super::policy::{Freshness, Policies, WriteMode};
use super::read_through::{Ask, ReadThrough, Through};
use super::s3::S3Tier;
use super::write_back::WriteBack;
use super::{
    bytes_stream, ByteStream, Key, Object, ObjectMeta, PutOptions, Read, Store, StoreError, Tier,
};
use crate::metrics::Metrics;

/// The store the fronts use, over the backend `B` (S3 in the daemon, a fake in unit tests).
#[derive(Clone)]
pub struct TieredStore<B: Backend = S3Tier> {
    memory: MemoryTier,
    disk: DiskTier,
    remote: Option<Remote<B>>,
    /// What each namespace asks of the store (see [`super::policy`]).
    policies: Arc<Policies>,
    metrics: Arc<Metrics>,
}

/// The backend behind the local tiers, and how writes reach it.
#[derive(Clone)]
pub struct Remote<B: Backend = S3Tier> {
    pub read: ReadThrough<B>,
    pub write: RemoteWrite<B>,
}

/// The write policy towards the backend.
#[derive(Clone)]
pub enum RemoteWrite<B: Backend = S3Tier> {
    /// Acknowledge when durable locally; upload from the persistent queue.
    Back(WriteBack<B>),
    /// Acknowledge only once the backend has the object.
    Through(B),
}

impl<B: Backend> TieredStore<B> {
    /// The local tiers alone; [`TieredStore::with_remote`] puts a backend behind them.
    pub fn new(memory: MemoryTier, disk: DiskTier, metrics: Arc<Metrics>) -> Self {
        TieredStore {
            memory,
            disk,
            remote: None,
            policies: Arc::new(Policies::default()),
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
        if let Some(entry) = self.memory.lookup(key).await {
            return Ok(Some(entry.meta.clone()));
        }
        self.disk.head(key).await
    }

    fn revalidated(&self, result: &str) {
        self.metrics
            .revalidations
            .with_label_values(&[result])
            .inc();
    }

    /// Memory, then disk (a small disk hit is promoted to memory). `None`: no local copy.
    async fn local_get(&self, key: &Key) -> Result<Option<Object>, StoreError> {
        if let Some(object) = self.memory.get(key).await? {
            self.lookup(Tier::Memory, true);
            return Ok(Some(object));
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
        // A body failing here is corruption the disk tier found (and removed): a local miss.
        let Ok(data) = read_exact(object.body, object.meta.len).await else {
            self.lookup(Tier::Disk, false);
            return Ok(None);
        };
        self.lookup(Tier::Disk, true);
        self.memory
            .insert(
                key.clone(),
                MemoryEntry::with_meta(data.clone(), object.meta.clone()),
            )
            .await;
        Ok(Some(Object {
            meta: object.meta,
            body: bytes_stream(data),
            tier: Tier::Disk,
        }))
    }

    /// A read from the local tiers alone. A range of an entry that is on disk (and not in
    /// memory) is read from its blocks alone; everything else is decided on the whole entry.
    async fn local_read(
        &self,
        key: &Key,
        options: &GetOptions,
    ) -> Result<Option<Read>, StoreError> {
        if let Some(range) = options.range {
            if self.memory.lookup(key).await.is_none() {
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
            .local_get(key)
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
                if self.disk.discard_unchanged(key, ticket.order()).await?
                    || !self.disk.contains(key)
                {
                    self.memory.remove(key).await;
                }
                Ok(None)
            }
            Err(e) => {
                self.revalidated("error");
                tracing::warn!(key = %key, error = %e, "S3 revalidation failed; serving the local copy unconfirmed");
                Ok(Some(local))
            }
        }
    }

    /// Writes the durable local copy, and a small entry's memory copy once that committed.
    /// The memory copy is read back from the committed file (from the page cache, verified
    /// like any disk read) rather than kept while the body streams in: a copy kept on the way
    /// would cost every upload in progress, stalled ones included, up to
    /// `memory.max_entry_size`.
    async fn put_local(
        &self,
        key: &Key,
        len: u64,
        body: ByteStream,
        options: &PutOptions,
        pinned: bool,
    ) -> Result<EntryHeader, StoreError> {
        let header = self.disk.put_entry(key, len, body, options, pinned).await?;
        self.memory.remove(key).await;
        if self.memory.accepts(len) {
            if let Ok(Some(object)) = self.disk.get(key).await {
                // A body failing here (corruption found) only means no memory copy.
                if let Ok(data) = read_exact(object.body, object.meta.len).await {
                    let entry = MemoryEntry::with_meta(data, object.meta);
                    self.memory.insert(key.clone(), entry).await;
                }
            }
        }
        Ok(header)
    }

    /// Write-through: commit locally (pinned while uploading), upload from the committed file.
    async fn put_through(
        &self,
        backend: &B,
        key: &Key,
        len: u64,
        body: ByteStream,
        options: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        let header = self.put_local(key, len, body, options, true).await?;
        let uploaded = async {
            let loc = self
                .disk
                .locate(key)
                .await?
                .ok_or_else(|| StoreError::Remote("entry vanished before its upload".into()))?;
            backend.put(&Upload::entry(&loc)).await.map(|_| ())
        }
        .await;
        self.disk.set_pinned(key, false);
        uploaded.map(|_| header.meta())
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
                return self.revalidate_head(remote, key, local).await;
            }
        }
        if let Some(meta) = self.memory.head(key).await? {
            return Ok(Some(meta));
        }
        if let Some(meta) = self.disk.head(key).await? {
            return Ok(Some(meta));
        }
        match &self.remote {
            Some(remote) => remote.read.remote().head(key).await,
            None => Ok(None),
        }
    }

    async fn put(
        &self,
        key: &Key,
        len: u64,
        body: ByteStream,
        options: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        match self.remote.as_ref().map(|r| &r.write) {
            None => Ok(self.put_local(key, len, body, options, false).await?.meta()),
            Some(RemoteWrite::Through(backend)) => {
                self.put_through(backend, key, len, body, options).await
            }
            Some(RemoteWrite::Back(queue)) => {
                // The slot first: a full queue refuses the write before anything is stored.
                // (The front reads the refused body to its end, so the client gets the answer.)
                let slot = queue.reserve(key)?;
                let already_queued = !slot.is_new();
                let header = self.put_local(key, len, body, options, true).await?;
                if let Err(e) = queue.enqueue(slot, key, header.body_len).await {
                    // Not acknowledged, so not owed to S3: let the entry be an ordinary one
                    // (unless an earlier, acknowledged write of the key still waits for upload).
                    if !already_queued {
                        self.disk.set_pinned(key, false);
                    }
                    return Err(e);
                }
                Ok(header.meta())
            }
        }
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        let in_memory = self.memory.remove(key).await;
        Ok(self.disk.delete(key).await? || in_memory)
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
                    match remote.read.read(key, options, ask, max_object_size).await {
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
            match remote
                .read
                .read(key, options, Ask::Miss, max_object_size)
                .await?
            {
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
mod tests {
    use std::ops::Range;
    use std::time::Duration;

    use super::*;
    use crate::store::backend::fake::FakeBackend;
    use crate::store::policy::NamespacePolicy;
    use crate::store::testing::{body, eventually, key, pattern, read_body, Local};
    use crate::store::write_back::WriteBackSettings;
    use crate::store::{Namespace, ObjectAttrs};

    async fn tiered(local: &Local, write_back: bool) -> TieredStore<FakeBackend> {
        let read = ReadThrough::new(
            local.backend.clone(),
            local.disk.clone(),
            local.memory.clone(),
            local.metrics.clone(),
        );
        let write = if write_back {
            let queue = WriteBack::load(
                WriteBackSettings {
                    disk_dir: local.dir.path().join("data"),
                    max_entries: 10,
                    concurrency: 1,
                    max_backoff: Duration::from_millis(100),
                    jitter: || 0.5,
                },
                local.disk.clone(),
                local.backend.clone(),
                local.metrics.clone(),
            )
            .await
            .unwrap();
            RemoteWrite::Back(queue)
        } else {
            RemoteWrite::Through(local.backend.clone())
        };
        TieredStore::new(
            local.memory.clone(),
            local.disk.clone(),
            local.metrics.clone(),
        )
        .with_remote(Remote { read, write })
    }

    fn options(range: &str, if_none_match: Option<&str>) -> GetOptions {
        GetOptions {
            range: crate::store::backend::ByteRange::parse(range),
            conditions: crate::store::backend::Conditions {
                if_none_match: if_none_match.map(str::to_string),
                ..Default::default()
            },
        }
    }

    async fn found(read: Read) -> (Range<u64>, Vec<u8>) {
        match read {
            Read::Found { object, span } => (span, read_body(object).await.unwrap()),
            other => panic!("expected the object, got {other:?}"),
        }
    }

    /// Ranges and preconditions are answered the same from S3 (through a fill), from disk
    /// (from the blocks alone) and from memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ranges_and_preconditions_read_the_same_from_every_tier() {
        let local = Local::new().await;
        let store = tiered(&local, true).await;
        let (small, large) = (key(7), key(8));
        let small_data = pattern(50_000, 7);
        let large_data = pattern(2_000_000, 8);
        local.backend.insert(&small, small_data.clone());
        local.backend.insert(&large, large_data.clone());
        let etag = local.backend.meta(&large).unwrap().etag.unwrap();

        for round in ["s3", "local"] {
            let (span, got) = found(
                store
                    .read(&large, &options("bytes=1000-1999", None))
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(span, 1000..2000, "{round}");
            assert!(got == large_data[1000..2000], "{round}");
            let (span, got) = found(
                store
                    .read(&small, &options("bytes=-10", None))
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(span, 49_990..50_000, "{round}");
            assert!(got == small_data[49_990..], "{round}");
            assert!(matches!(
                store
                    .read(&large, &options("bytes=5000000-", None))
                    .await
                    .unwrap(),
                Read::RangeNotSatisfiable(2_000_000)
            ));
            assert!(matches!(
                store
                    .read(&large, &options("", Some(&format!("\"{etag}\""))))
                    .await
                    .unwrap(),
                Read::NotModified(_)
            ));
            assert!(matches!(
                store
                    .read(&key(99), &options("bytes=0-0", None))
                    .await
                    .unwrap(),
                Read::Missing
            ));
            // Wait for both fills to be committed locally before the local round.
            let read = store.remote().unwrap().read.clone();
            eventually("the fills to end", || read.fills_in_flight() == 0).await;
        }
        // The local round read the large entry's range from disk, the small one from memory:
        // the backend was asked for them once each, by the first round's fills (and for the
        // missing key in both rounds: misses are not cached).
        assert_eq!(local.backend.calls("get"), 4, "two fills and two misses");
        assert!(local.memory.lookup(&small).await.is_some());
    }

    /// An object's attributes and its ETag (the MD5 of its body) are read back the same from
    /// memory and disk, and a write-through upload carries them to the backend.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn object_metadata_travels_with_the_entry() {
        let local = Local::new().await;
        let store = tiered(&local, false).await;
        let attrs = ObjectAttrs {
            content_type: Some("application/zip".into()),
            user: vec![("cachekey".into(), "build-jar".into())],
            ..ObjectAttrs::default()
        };
        let (small, large) = (key(3), key(4));
        for (k, data) in [(&small, pattern(1000, 3)), (&large, pattern(3_000_000, 4))] {
            let stored = store
                .put(
                    k,
                    data.len() as u64,
                    body(&data),
                    &PutOptions::object(attrs.clone()),
                )
                .await
                .unwrap();
            let md5 = crate::store::backend::single_etag(&data);
            assert_eq!(stored.etag.as_deref(), Some(md5.as_str()));
            assert_eq!(stored.attrs, attrs);
            let object = store.get(k).await.unwrap().unwrap();
            assert_eq!(object.meta.etag, stored.etag, "{:?}", object.tier);
            assert_eq!(object.meta.attrs, attrs, "{:?}", object.tier);
            assert_eq!(store.head(k).await.unwrap().unwrap(), object.meta);
            let uploaded = local.backend.meta(k).unwrap();
            assert_eq!(uploaded.etag, stored.etag);
            assert_eq!(uploaded.attrs, attrs);
        }
        assert!(local.memory.lookup(&small).await.is_some());
        assert!(local.memory.lookup(&large).await.is_none());
    }

    /// A fill that started before a client's PUT of the same key commits nothing over it, and
    /// the write-back upload sends the client's bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fill_never_replaces_a_newer_write() {
        let local = Local::new().await;
        let store = tiered(&local, true).await;
        let k = key(1);
        let older = pattern(500_000, 1);
        let newer = pattern(500_000, 2);
        local.backend.insert(&k, older.clone());
        local.backend.hold(true);
        let reader = {
            let store = store.clone();
            let k = k.clone();
            tokio::spawn(async move { read_body(store.get(&k).await.unwrap().unwrap()).await })
        };
        let backend = local.backend.clone();
        eventually("the fill to ask the backend", || backend.calls("get") == 1).await;
        store
            .put(&k, newer.len() as u64, body(&newer), &PutOptions::default())
            .await
            .unwrap();
        local.backend.hold(false);
        assert!(
            reader.await.unwrap().unwrap() == older,
            "the fill's reader gets what the backend had when it asked"
        );
        // The reader is released before the fill's commit: wait for the fill's very end.
        let read = store.remote().unwrap().read.clone();
        eventually("the fill to end", || read.fills_in_flight() == 0).await;
        let local_copy = store.get(&k).await.unwrap().unwrap();
        assert!(
            read_body(local_copy).await.unwrap() == newer,
            "the fill replaced the write"
        );

        let Some(RemoteWrite::Back(queue)) = store.remote().map(|r| r.write.clone()) else {
            unreachable!("built with write-back");
        };
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        queue.start(stop);
        eventually("the upload", || queue.is_empty()).await;
        assert!(
            local.backend.object(&k).unwrap() == newer,
            "stale bytes uploaded"
        );
    }

    /// A fill that started before a delete of the same key does not bring the key back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fill_never_brings_back_a_deleted_key() {
        let local = Local::new().await;
        let store = tiered(&local, false).await;
        let k = key(1);
        let data = pattern(500_000, 1);
        local.backend.insert(&k, data.clone());
        local.backend.hold(true);
        let reader = {
            let store = store.clone();
            let k = k.clone();
            tokio::spawn(async move { read_body(store.get(&k).await.unwrap().unwrap()).await })
        };
        let backend = local.backend.clone();
        eventually("the fill to ask the backend", || backend.calls("get") == 1).await;
        assert!(!store.delete(&k).await.unwrap(), "nothing local yet");
        local.backend.hold(false);
        assert!(reader.await.unwrap().unwrap() == data);
        let read = store.remote().unwrap().read.clone();
        eventually("the fill to end", || read.fills_in_flight() == 0).await;
        assert!(!local.disk.contains(&k), "the fill brought the key back");
        assert!(local.memory.lookup(&k).await.is_none());
    }

    #[tokio::test]
    async fn backend_errors_reach_the_caller_and_local_hits_do_not_need_it() {
        let local = Local::new().await;
        let store = tiered(&local, false).await;
        let k = key(2);
        store
            .put(&k, 100, body(&pattern(100, 2)), &PutOptions::default())
            .await
            .unwrap();
        local.backend.fail_next(10);
        // Local hits are served without the backend.
        assert!(store.get(&k).await.unwrap().is_some());
        assert!(store.head(&k).await.unwrap().is_some());
        assert_eq!(local.backend.calls("get") + local.backend.calls("head"), 0);
        // A miss asks the backend, and its failure is an error, not a miss.
        assert!(matches!(
            store.get(&key(3)).await,
            Err(StoreError::Remote(_))
        ));
        assert!(matches!(
            store.head(&key(3)).await,
            Err(StoreError::Remote(_))
        ));
        local.backend.fail_next(0);
        assert!(store.get(&key(3)).await.unwrap().is_none());
        assert!(store.head(&key(3)).await.unwrap().is_none());
    }

    fn runner() -> Namespace {
        Namespace::new("runner").unwrap()
    }

    fn object(name: &str) -> Key {
        Key::object(runner(), name).unwrap()
    }

    /// The S3 front's kind of namespace: hits confirmed with the backend.
    fn revalidated(max_object_size: Option<u64>) -> Policies {
        Policies::default().with(
            runner(),
            NamespacePolicy {
                write: WriteMode::Through,
                freshness: Freshness::Revalidate,
                max_object_size,
                location: None,
            },
        )
    }

    fn revalidations(local: &Local, result: &str) -> u64 {
        local
            .metrics
            .revalidations
            .with_label_values(&[result])
            .get()
    }

    /// Reads the whole object and waits for its fill (if any) to end.
    async fn read_all(store: &TieredStore<FakeBackend>, k: &Key) -> Option<(Tier, Vec<u8>)> {
        let object = store.get(k).await.unwrap()?;
        let tier = object.tier;
        let data = read_body(object).await.unwrap();
        let read = store.remote().unwrap().read.clone();
        eventually("the fill to end", || read.fills_in_flight() == 0).await;
        Some((tier, data))
    }

    /// A local hit of a revalidated namespace costs one conditional GET: a 304 serves the local
    /// bytes, a changed object is served and refilled from that same GET, a deleted one drops
    /// the local copy, and a failing backend leaves the local copy served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revalidated_hits_are_confirmed_with_one_conditional_get() {
        let local = Local::new().await;
        let store = tiered(&local, false).await.with_policies(revalidated(None));
        // One that memory holds, one only disk does.
        let (small, large) = (object("small.zip"), object("cache.zip"));
        local.backend.insert(&small, pattern(1000, 1));
        local.backend.insert(&large, pattern(300_000, 2));
        for k in [&small, &large] {
            assert_eq!(read_all(&store, k).await.unwrap().0, Tier::S3);
        }
        assert!(local.memory.lookup(&small).await.is_some());
        assert_eq!(local.backend.calls("get"), 2);

        // Unchanged: 304, local bytes.
        for (k, seed, tier) in [(&small, 1, Tier::Memory), (&large, 2, Tier::Disk)] {
            let (served_from, data) = read_all(&store, k).await.unwrap();
            assert_eq!(served_from, tier);
            assert!(data == pattern(data.len(), seed));
        }
        assert_eq!(local.backend.calls("get"), 4, "one conditional GET per hit");
        assert_eq!(
            local.backend.served_spans().len(),
            2,
            "no body but the fills'"
        );
        assert_eq!(revalidations(&local, "not_modified"), 2);

        // Overwritten through another node: the new bytes, from one GET that also refills.
        local.backend.insert(&small, pattern(2000, 3));
        local.backend.insert(&large, pattern(400_000, 4));
        for (k, seed) in [(&small, 3), (&large, 4)] {
            let (tier, data) = read_all(&store, k).await.unwrap();
            assert_eq!(tier, Tier::S3);
            assert!(data == pattern(data.len(), seed));
            let copy = local.disk.head(k).await.unwrap().unwrap();
            assert_eq!(copy.etag, local.backend.meta(k).unwrap().etag, "refilled");
        }
        assert_eq!(local.backend.calls("get"), 6);
        assert_eq!(revalidations(&local, "changed"), 2);
        let (tier, data) = read_all(&store, &small).await.unwrap();
        assert_eq!(tier, Tier::Memory, "the refill replaced the memory copy");
        assert!(data == pattern(2000, 3));

        // Failing backend: the local copy, counted.
        local.backend.fail_next(1);
        let (tier, data) = read_all(&store, &large).await.unwrap();
        assert_eq!(tier, Tier::Disk);
        assert!(data == pattern(400_000, 4));
        assert_eq!(revalidations(&local, "error"), 1);

        // Deleted through another node: a miss, and the local copies are gone.
        for k in [&small, &large] {
            local.backend.delete(k).await.unwrap();
            assert!(store.get(k).await.unwrap().is_none());
            assert!(!local.disk.contains(k));
            assert!(local.memory.lookup(k).await.is_none());
        }
        assert_eq!(revalidations(&local, "gone"), 2);
    }

    /// Concurrent reads of one stale key share one revalidation, and a ranged read gets its
    /// range of the new object; a client's own preconditions are decided on the confirmed copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_revalidations_share_one_request_and_ranges_apply_after_it() {
        let local = Local::new().await;
        let store = tiered(&local, false).await.with_policies(revalidated(None));
        let k = object("cache.zip");
        local.backend.insert(&k, pattern(300_000, 1));
        read_all(&store, &k).await.unwrap();
        let newer = pattern(500_000, 2);
        local.backend.insert(&k, newer.clone());
        let before = local.backend.calls("get");
        local.backend.hold(true);
        let readers: Vec<_> = (0..3u64)
            .map(|i| {
                let store = store.clone();
                let k = k.clone();
                let range = format!("bytes={}-{}", i * 100_000, i * 100_000 + 999);
                tokio::spawn(async move {
                    found(store.read(&k, &options(&range, None)).await.unwrap()).await
                })
            })
            .collect();
        let metrics = local.metrics.clone();
        eventually("two reads to join the first one's revalidation", || {
            metrics.single_flight_waiters.get() == 2
        })
        .await;
        local.backend.hold(false);
        for (i, reader) in readers.into_iter().enumerate() {
            let (span, data) = reader.await.unwrap();
            let start = i * 100_000;
            assert_eq!(span, start as u64..start as u64 + 1000);
            assert!(data == newer[start..start + 1000]);
        }
        assert_eq!(
            local.backend.calls("get"),
            before + 1,
            "one GET for three reads"
        );
        let read = store.remote().unwrap().read.clone();
        eventually("the refill to end", || read.fills_in_flight() == 0).await;

        // The client's If-None-Match is decided on the revalidated (now current) copy.
        let etag = local.backend.meta(&k).unwrap().etag.unwrap();
        assert!(matches!(
            store.read(&k, &options("", Some(&etag))).await.unwrap(),
            Read::NotModified(_)
        ));
        let (span, data) = found(store.read(&k, &options("bytes=-10", None)).await.unwrap()).await;
        assert_eq!(span, 499_990..500_000);
        assert!(data == newer[499_990..]);
        assert_eq!(revalidations(&local, "not_modified"), 2);
    }

    /// A local copy without an ETag (a Gradle-style entry) cannot be confirmed: it is refilled.
    /// An entry still waiting for upload is newer than the backend's: served without asking.
    /// HEADs are confirmed too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_without_etag_are_refilled_and_pending_uploads_are_not_asked_about() {
        let local = Local::new().await;
        let store = tiered(&local, true).await.with_policies(revalidated(None));
        let k = object("no-etag");
        local
            .disk
            .put(&k, 100, body(&pattern(100, 1)), &PutOptions::default())
            .await
            .unwrap();
        local.backend.insert(&k, pattern(200, 2));
        let (tier, data) = read_all(&store, &k).await.unwrap();
        assert_eq!((tier, data), (Tier::S3, pattern(200, 2)));
        assert_eq!(
            local.disk.head(&k).await.unwrap().unwrap().etag,
            local.backend.meta(&k).unwrap().etag
        );

        // A write-back put: pinned until uploaded (the queue is not started here).
        let pending = object("pending");
        let data = pattern(300, 3);
        store
            .put(
                &pending,
                300,
                body(&data),
                &PutOptions::object(Default::default()),
            )
            .await
            .unwrap();
        let gets = local.backend.calls("get");
        assert_eq!(read_all(&store, &pending).await.unwrap().1, data);
        assert!(store.head(&pending).await.unwrap().is_some());
        assert_eq!(local.backend.calls("get"), gets);
        assert_eq!(local.backend.calls("head"), 0);

        // HEAD: the backend's metadata once changed, a miss once gone.
        local.backend.insert(&k, pattern(300, 4));
        let head = store.head(&k).await.unwrap().unwrap();
        assert_eq!(head.etag, local.backend.meta(&k).unwrap().etag);
        assert_eq!(head.len, 300);
        local.backend.delete(&k).await.unwrap();
        assert!(store.head(&k).await.unwrap().is_none());
        assert!(!local.disk.contains(&k));
    }

    /// An object above the namespace's largest cached size streams through from the backend
    /// and is not cached; a range of it is a ranged GET; a stale local copy of it is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn objects_too_large_to_cache_stream_through() {
        let local = Local::new().await;
        let store = tiered(&local, false)
            .await
            .with_policies(revalidated(Some(100_000)));
        let k = object("big.zip");
        let big = pattern(300_000, 1);
        local.backend.insert(&k, big.clone());
        let (tier, data) = read_all(&store, &k).await.unwrap();
        assert_eq!(tier, Tier::S3);
        assert!(data == big);
        assert!(!local.disk.contains(&k), "not cached");
        assert_eq!(
            local.backend.served_spans(),
            vec![0..300_000],
            "the fill's own GET served it"
        );
        let (span, data) = found(
            store
                .read(&k, &options("bytes=1000-1999", None))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(span, 1000..2000);
        assert!(data == big[1000..2000]);
        assert_eq!(
            local.backend.served_spans().last(),
            Some(&(1000..2000)),
            "a ranged GET, not a download of the whole"
        );
        assert!(matches!(
            store
                .read(&k, &options("bytes=400000-", None))
                .await
                .unwrap(),
            Read::RangeNotSatisfiable(300_000)
        ));
        let through = |reason| {
            local
                .metrics
                .stream_through
                .with_label_values(&[reason])
                .get()
        };
        assert_eq!(through("too_large"), 2);

        // A small cached copy that the backend replaced with a too large object.
        let small = object("grew.zip");
        local.backend.insert(&small, pattern(1000, 2));
        read_all(&store, &small).await.unwrap();
        assert!(local.disk.contains(&small));
        local.backend.insert(&small, big.clone());
        assert!(read_all(&store, &small).await.unwrap().1 == big);
        assert!(!local.disk.contains(&small), "the stale copy was dropped");
        assert!(local.memory.lookup(&small).await.is_none());
    }

    /// An object the disk tier can never hold is served through, not failed (Gradle's
    /// namespace too).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn objects_larger_than_the_disk_tier_stream_through() {
        let mut local = Local::new().await;
        local.disk = DiskTier::open(crate::store::disk::DiskSettings {
            dir: local.dir.path().join("small-disk"),
            max_size: 200_000,
            verify_before_serve: 1 << 20,
            min_free: 0,
        })
        .await
        .unwrap();
        let store = tiered(&local, false).await;
        let k = key(9);
        let big = pattern(300_000, 9);
        local.backend.insert(&k, big.clone());
        let (tier, data) = read_all(&store, &k).await.unwrap();
        assert_eq!(tier, Tier::S3);
        assert!(data == big);
        assert!(!local.disk.contains(&k));
        assert_eq!(
            local
                .metrics
                .stream_through
                .with_label_values(&["no_room"])
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn write_through_acknowledges_once_the_backend_has_it() {
        let local = Local::new().await;
        let store = tiered(&local, false).await;
        let k = key(4);
        let data = pattern(300_000, 4);
        store
            .put(&k, data.len() as u64, body(&data), &PutOptions::default())
            .await
            .unwrap();
        assert!(local.backend.object(&k).unwrap() == data);
        assert_eq!(local.disk.usage().pinned_entries, 0);

        local.backend.fail_next(1);
        let other = key(5);
        assert!(store
            .put(&other, 10, body(&[1; 10]), &PutOptions::default())
            .await
            .is_err());
        assert!(local.backend.object(&other).is_none());
        assert!(
            local.disk.contains(&other),
            "the local copy stays, as a cache entry"
        );
        assert_eq!(local.disk.usage().pinned_entries, 0);
    }
}
