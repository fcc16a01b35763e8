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

mod local_copy;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::backend::{Backend, GetOptions, ListRequest, Listed, Listing, PartLayout};
use super::disk::spool::Spool;
use super::disk::{Commit, DiskTier, RangedObject, Sealed};
use super::entry_file::EntryHeader;
use super::key_locks::KeyLocks;
use super::listing::Line;
use super::local::LocalTiers;
use super::memory::MemoryTier;
use super::multipart::{Multipart, MultipartError};
use super::policy::{Freshness, Policies, WriteMode};
use super::read_through::{Ask, ReadThrough, Through};
use super::s3::S3Tier;
use super::write_back::{Op, Slot, WriteBack};
use super::{
    ByteStream, Key, Namespace, Object, ObjectMeta, PutOptions, Read, Store, StoreError, Tier,
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

    /// Writes the durable local copy, and a small entry's memory copy once that committed.
    async fn put_local(
        &self,
        key: &Key,
        len: u64,
        body: ByteStream,
        options: &PutOptions,
    ) -> Result<EntryHeader, StoreError> {
        let spool = self.disk.receive(key, len, body, options).await?;
        self.commit_local(spool.seal().await?, false).await
    }

    /// Commits a sealed entry (pinned when it waits for the backend) and keeps a small one's
    /// memory copy.
    async fn commit_local(&self, sealed: Sealed, pinned: bool) -> Result<EntryHeader, StoreError> {
        let mode = if pinned {
            Commit::Pinned
        } else {
            Commit::Cached
        };
        Ok(self.local.commit(sealed, mode).await?.0)
    }

    /// Write-through: the sealed entry is uploaded from its own file handle, and committed
    /// locally only once the backend has it, all under the key's lock. So two writes of a key
    /// reach S3 and the node in the same order and each upload reads only its own body; a
    /// refused upload leaves no copy here (S3 still has what the node has).
    async fn put_through(
        &self,
        backend: &B,
        key: &Key,
        sealed: Sealed,
        parts: PartLayout,
    ) -> Result<ObjectMeta, StoreError> {
        let _ordered = self.key_locks.lock(key).await;
        backend.put(&sealed.upload(parts)).await?;
        let meta = sealed.header().meta();
        if let Err(e) = self.commit_local(sealed, false).await {
            // S3 has the new body: the older local copy must not be served in its place.
            tracing::warn!(key = %key, error = %e, "uploaded entry not kept locally; dropping the older copy");
            self.local.delete(key).await?;
        }
        Ok(meta)
    }

    /// Write-back: the commit and its marker happen under the key's lock, ordered with
    /// deletes. The caller took the slot before receiving the body, so that a full queue
    /// refuses the write before anything is stored.
    async fn put_back(
        &self,
        queue: &WriteBack<B>,
        slot: Slot<B>,
        key: &Key,
        sealed: Sealed,
        parts: PartLayout,
    ) -> Result<ObjectMeta, StoreError> {
        let already_queued = !slot.is_new();
        let _ordered = self.key_locks.lock(key).await;
        let (header, version) = self.local.commit(sealed, Commit::Pinned).await?;
        let op = Op::Put {
            bytes: header.body_len,
            parts,
        };
        if let Err(e) = queue.enqueue(slot, key, op).await {
            // Not acknowledged, so not owed to S3: let the entry be an ordinary one (unless an
            // earlier, acknowledged write of the key still waits for upload).
            if let (false, Some(version)) = (already_queued, version) {
                self.disk.unpin(key, version);
            }
            return Err(e);
        }
        Ok(header.meta())
    }

    /// Stores an entry whose body is already received in `spool` (a multipart upload's
    /// assembly), as [`Store::put`] would, except that an upload to the backend (now or from
    /// the queue) splits the body as `parts` says, so the backend's ETag is the one the client
    /// was given.
    pub async fn put_spooled(
        &self,
        key: &Key,
        spool: Spool,
        parts: PartLayout,
    ) -> Result<ObjectMeta, StoreError> {
        self.put_sealed(key, spool.seal().await?, parts).await
    }

    /// Stores a sealed entry as the namespace's write mode says.
    async fn put_sealed(
        &self,
        key: &Key,
        sealed: Sealed,
        parts: PartLayout,
    ) -> Result<ObjectMeta, StoreError> {
        match self.route(key.namespace()) {
            Route::Local => Ok(self.commit_local(sealed, false).await?.meta()),
            Route::Through(backend) => self.put_through(backend, key, sealed, parts).await,
            Route::Back(queue) => {
                let slot = queue.reserve(key)?;
                self.put_back(queue, slot, key, sealed, parts).await
            }
        }
    }

    /// Completes a multipart upload of `key` into one entry (see [`Multipart::complete`]),
    /// written as the namespace's write mode says: kept local, uploaded now, or queued; an
    /// upload to the backend keeps the client's part boundaries, so the backend's ETag is the
    /// one the client is given. A write-through that fails leaves no entry (the upload is
    /// completed all the same: its parts are gone).
    pub async fn complete_multipart(
        &self,
        uploads: &Multipart,
        key: &Key,
        upload_id: &str,
        listed: &[(u32, String)],
    ) -> Result<ObjectMeta, MultipartError> {
        // A write-back's slot first: a full queue refuses before the parts are assembled.
        let slot = match self.route(key.namespace()) {
            Route::Back(queue) => Some((queue, queue.reserve(key)?)),
            Route::Local | Route::Through(_) => None,
        };
        let completed = uploads.complete(key, upload_id, listed).await?;
        let meta = completed.meta.clone();
        match slot {
            Some((queue, slot)) => {
                self.put_back(queue, slot, key, completed.sealed, completed.layout)
                    .await?;
            }
            None => {
                self.put_sealed(key, completed.sealed, completed.layout)
                    .await?;
            }
        }
        Ok(meta)
    }

    /// One page of a namespace's objects: the backend's listing merged with what the write-back
    /// queue still owes it (objects written here and not uploaded yet are listed with their
    /// local size, ETag and date; objects deleted here and not yet in the backend are not
    /// listed), or the disk tier's own entries for a namespace that never reaches a backend.
    ///
    /// [`Listing::next`] is the page's last line (a name or a common prefix); passed back as
    /// the continuation, the next page starts after it.
    pub async fn list(&self, request: &ListRequest) -> Result<Listing, StoreError> {
        if request.max_keys == 0 {
            return Ok(Listing::default());
        }
        match (&self.remote, self.route(&request.namespace)) {
            (Some(remote), Route::Through(_) | Route::Back(_)) => {
                self.list_merged(remote, request).await
            }
            _ => self.list_local(request).await,
        }
    }

    async fn list_local(&self, request: &ListRequest) -> Result<Listing, StoreError> {
        let disk = self.disk.clone();
        let req = request.clone();
        let (lines, more) = tokio::task::spawn_blocking(move || disk.list_names(&req))
            .await
            .map_err(std::io::Error::other)?;
        let mut page = Listing::default();
        for line in lines {
            match line {
                Line::Prefix(common) => page.common_prefixes.push(common),
                Line::Name(name) => {
                    let Some(key) = stored_key(&request.namespace, &name) else {
                        continue;
                    };
                    // Removed since the names were read: not listed.
                    if let Some(meta) = self.disk.head(&key).await? {
                        page.objects.push(listed(name, &meta));
                    }
                }
            }
        }
        let last = page_last(&page);
        page.next = last.filter(|_| more);
        Ok(page)
    }

    async fn list_merged(
        &self,
        remote: &Remote<B>,
        request: &ListRequest,
    ) -> Result<Listing, StoreError> {
        let backend = remote.backend();
        let delimiter = request.delimiter.as_deref().filter(|d| !d.is_empty());
        let pending = match &remote.queue {
            Some(queue) => queue.pending_under(&request.namespace, &request.prefix),
            None => Vec::new(),
        };
        let line_of = |key: &Key| Line::of(key.name(), &request.prefix, delimiter);
        // Everything up to `last` is listed (or was, on an earlier page).
        let mut last: Option<String> = request
            .continuation
            .clone()
            .or_else(|| request.start_after.clone());
        let mut page = Listing::default();
        let mut lines = 0usize;
        let mut next_pending = 0usize;
        let mut backend_token: Option<String> = None;
        loop {
            let backend_page = backend
                .list(&ListRequest {
                    namespace: request.namespace.clone(),
                    prefix: request.prefix.clone(),
                    delimiter: request.delimiter.clone(),
                    continuation: backend_token.take(),
                    start_after: last.clone(),
                    max_keys: (request.max_keys + 1).min(1000),
                })
                .await?;
            // This batch: the backend's lines, then what the queue says about them.
            let mut batch: BTreeMap<String, Merged> = BTreeMap::new();
            for object in backend_page.objects {
                batch.insert(object.name.clone(), Merged::Backend(object));
            }
            for common in backend_page.common_prefixes {
                batch.insert(common, Merged::Prefix { confirmed: false });
            }
            let more_in_backend = backend_page.next.is_some();
            // The backend's next page starts after its last line: queued ops up to there
            // belong to this batch.
            let horizon = if more_in_backend {
                batch.keys().next_back().cloned().or_else(|| last.clone())
            } else {
                None
            };
            while let Some((key, op)) = pending.get(next_pending) {
                let line = line_of(key);
                if horizon.as_deref().is_some_and(|h| line.key() > h) {
                    break;
                }
                next_pending += 1;
                match (line, op) {
                    (Line::Prefix(common), Op::Put { .. }) => {
                        batch.insert(common, Merged::Prefix { confirmed: true });
                    }
                    (Line::Name(name), Op::Put { .. }) => {
                        batch.insert(name, Merged::Local(key.clone()));
                    }
                    (Line::Name(name), Op::Delete) => {
                        batch.remove(&name);
                    }
                    // Whether anything else is left under it is decided below, if listed.
                    (Line::Prefix(_), Op::Delete) => {}
                }
            }
            for (line_key, merged) in batch {
                if last.as_deref().is_some_and(|l| line_key.as_str() <= l) {
                    continue;
                }
                let shown = match merged {
                    Merged::Backend(object) => Some(Shown::Object(object)),
                    Merged::Local(key) => self
                        .disk
                        .head(&key)
                        .await?
                        .map(|meta| Shown::Object(listed(key.name().to_string(), &meta))),
                    Merged::Prefix { confirmed } => {
                        let holds = confirmed
                            || self
                                .holds_undeleted(backend, &request.namespace, &line_key, &pending)
                                .await?;
                        holds.then(|| Shown::Prefix(line_key.clone()))
                    }
                };
                let Some(shown) = shown else {
                    continue;
                };
                if lines == request.max_keys {
                    page.next = page_last(&page);
                    return Ok(page);
                }
                lines += 1;
                last = Some(line_key);
                match shown {
                    Shown::Object(object) => page.objects.push(object),
                    Shown::Prefix(common) => page.common_prefixes.push(common),
                }
            }
            match backend_page.next {
                Some(token) => backend_token = Some(token),
                None => return Ok(page),
            }
        }
    }

    /// Whether the backend holds a name under `common` that has no delete queued: a common
    /// prefix of the backend's listing is shown only then.
    async fn holds_undeleted(
        &self,
        backend: &B,
        namespace: &Namespace,
        common: &str,
        pending: &[(Key, Op)],
    ) -> Result<bool, StoreError> {
        let deleted = |name: &str| {
            pending
                .binary_search_by(|(key, _)| key.name().cmp(name))
                .is_ok_and(|at| pending[at].1 == Op::Delete)
        };
        if !pending
            .iter()
            .any(|(key, op)| *op == Op::Delete && key.name().starts_with(common))
        {
            return Ok(true);
        }
        let mut token = None;
        loop {
            let page = backend
                .list(&ListRequest {
                    namespace: namespace.clone(),
                    prefix: common.to_string(),
                    delimiter: None,
                    continuation: token.take(),
                    start_after: None,
                    max_keys: 1000,
                })
                .await?;
            if page.objects.iter().any(|o| !deleted(&o.name)) {
                return Ok(true);
            }
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(false),
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
                return self.revalidate_head(remote, key, local).await;
            }
        }
        if let Some(meta) = self.local.meta(key).await? {
            return Ok(Some(meta));
        }
        match &self.remote {
            Some(_) if self.delete_pending(key) => Ok(None),
            Some(remote) => remote.backend().head(key).await,
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
        match self.route(key.namespace()) {
            Route::Local => Ok(self.put_local(key, len, body, options).await?.meta()),
            Route::Through(backend) => {
                let spool = self.disk.receive(key, len, body, options).await?;
                self.put_through(backend, key, spool.seal().await?, PartLayout::Auto)
                    .await
            }
            Route::Back(queue) => {
                // The slot first: a full queue refuses the write before anything is stored
                // (the front reads the refused body to its end, so the client gets the answer).
                let slot = queue.reserve(key)?;
                let spool = self.disk.receive(key, len, body, options).await?;
                self.put_back(queue, slot, key, spool.seal().await?, PartLayout::Auto)
                    .await
            }
        }
    }

    /// Per the namespace's write mode (see the module's documentation). `Ok(false)`: there was
    /// no local copy (the backend's answer to a delete does not say whether it had one).
    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        match self.route(key.namespace()) {
            Route::Local => self.local.delete(key).await,
            Route::Through(backend) => {
                let _ordered = self.key_locks.lock(key).await;
                // The backend first: a fill that asked it before the delete is older than the
                // local delete below, and is dropped at its commit.
                let deleted = backend.delete(key).await;
                // Also when the backend failed: it may have deleted all the same (an answer
                // lost), and the next read asks it again.
                let local = self.local.delete(key).await;
                deleted?;
                local
            }
            Route::Back(queue) => {
                let _ordered = self.key_locks.lock(key).await;
                let slot = queue.reserve(key)?;
                // The marker first: a crash after it removes the local copy at the next start;
                // a crash before it leaves everything as it was, unacknowledged.
                queue.enqueue(slot, key, Op::Delete).await?;
                self.local.delete(key).await
            }
        }
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
            // Deleted here, and the backend not told yet: its copy must not come back.
            if self.delete_pending(key) {
                return Ok(Read::Missing);
            }
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

/// A line of a merged listing, before it is decided.
enum Merged {
    /// The backend's object, as it lists it.
    Backend(Listed),
    /// Written here and not uploaded yet: listed as the local entry is.
    Local(Key),
    /// A common prefix; `confirmed` when a queued upload is under it (else it is shown only if
    /// the backend has a name under it without a queued delete).
    Prefix { confirmed: bool },
}

enum Shown {
    Object(Listed),
    Prefix(String),
}

fn listed(name: String, meta: &ObjectMeta) -> Listed {
    Listed {
        name,
        len: meta.len,
        etag: meta.etag.clone(),
        modified: meta.modified,
    }
}

/// The last line of a page (its objects and common prefixes are each in order).
fn page_last(page: &Listing) -> Option<String> {
    let object = page.objects.last().map(|o| o.name.as_str());
    let common = page.common_prefixes.last().map(String::as_str);
    object.max(common).map(str::to_string)
}

/// The key of a stored name (Gradle's names are validated as Gradle's).
fn stored_key(namespace: &Namespace, name: &str) -> Option<Key> {
    if *namespace == Namespace::gradle() {
        Key::gradle(name).ok()
    } else {
        Key::object(namespace.clone(), name).ok()
    }
}

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
    use crate::store::policy::{NamespacePolicy, Policies, WriteMode};
    use crate::store::testing::{body, eventually, key, pattern, read_body, Local};
    use crate::store::write_back::WriteBackSettings;
    use crate::store::{Namespace, ObjectAttrs};

    /// The tiers over the fake backend, with a write-back queue (not started) beside them.
    async fn with_policies(local: &Local, policies: Policies) -> TieredStore<FakeBackend> {
        let read = ReadThrough::new(
            local.backend.clone(),
            local.disk.clone(),
            local.memory.clone(),
            local.metrics.clone(),
        );
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
        TieredStore::new(
            local.memory.clone(),
            local.disk.clone(),
            local.metrics.clone(),
        )
        .with_remote(Remote {
            read,
            queue: Some(queue),
        })
        .with_policies(policies)
    }

    /// Every namespace writing back (Gradle's policy), or through.
    async fn tiered(local: &Local, write_back: bool) -> TieredStore<FakeBackend> {
        let write = if write_back {
            WriteMode::Back
        } else {
            WriteMode::Through
        };
        with_policies(
            local,
            Policies::new(NamespacePolicy {
                write,
                ..NamespacePolicy::default()
            }),
        )
        .await
    }

    fn queue(store: &TieredStore<FakeBackend>) -> WriteBack<FakeBackend> {
        store.remote().unwrap().queue.clone().unwrap()
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
        assert!(local.memory.held(&small).await.is_some());
    }

    /// A completed multipart upload is written as the namespace says, and what reaches the
    /// backend has the client's part boundaries and so the ETag the client was given.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multipart_completions_keep_the_clients_parts_on_the_way_to_the_backend() {
        use crate::store::multipart::{Multipart, MultipartSettings};
        for write in [WriteMode::Through, WriteMode::Back] {
            let local = Local::new().await;
            let store = with_policies(
                &local,
                Policies::new(NamespacePolicy {
                    write,
                    ..NamespacePolicy::default()
                }),
            )
            .await;
            let uploads = Multipart::open(
                local.disk.clone(),
                MultipartSettings {
                    min_part_size: 1000,
                    ..MultipartSettings::default()
                },
            )
            .await
            .unwrap();
            let k = key(9);
            let id = uploads.create(&k, ObjectAttrs::default()).await.unwrap();
            let (first, second) = (pattern(300_000, 1), pattern(1234, 2));
            let mut listed = Vec::new();
            for (n, data) in [(1, &first), (2, &second)] {
                let etag = uploads
                    .put_part(&k, &id, n, data.len() as u64, body(data))
                    .await
                    .unwrap();
                listed.push((n, etag));
            }
            let meta = store
                .complete_multipart(&uploads, &k, &id, &listed)
                .await
                .unwrap();
            assert!(meta.etag.as_deref().unwrap().ends_with("-2"), "{write:?}");
            if write == WriteMode::Back {
                let queue = queue(&store);
                let (_stop_tx, stop) = tokio::sync::watch::channel(false);
                queue.start(stop);
                eventually("the upload", || queue.is_empty()).await;
            }
            assert_eq!(
                local.backend.parts(&k),
                Some(vec![300_000, 1234]),
                "{write:?}"
            );
            assert_eq!(local.backend.meta(&k).unwrap().etag, meta.etag, "{write:?}");
            let whole: Vec<u8> = first.iter().chain(&second).copied().collect();
            assert!(
                read_body(store.get(&k).await.unwrap().unwrap())
                    .await
                    .unwrap()
                    == whole
            );
            assert!(!local.disk.is_pinned(&k), "{write:?}");
        }
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
        assert!(local.memory.held(&small).await.is_some());
        assert!(local.memory.held(&large).await.is_none());
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

        let queue = queue(&store);
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
        // Written back, so that the delete is local at once (queued for the backend, which
        // is held here) while the fill runs.
        let store = tiered(&local, true).await;
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
        assert!(local.memory.held(&k).await.is_none());
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
        revalidated_with(WriteMode::Through, max_object_size)
    }

    fn revalidated_with(write: WriteMode, max_object_size: Option<u64>) -> Policies {
        Policies::default().with(
            runner(),
            NamespacePolicy {
                write,
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
        assert!(local.memory.held(&small).await.is_some());
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
            assert!(store.local().memory_copy(k).await.is_none());
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
        let store = tiered(&local, true)
            .await
            .with_policies(revalidated_with(WriteMode::Back, None));
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
        assert!(store.local().memory_copy(&small).await.is_none());
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
            !local.disk.contains(&other),
            "a write the backend refused leaves no copy"
        );
        assert_eq!(local.disk.usage().pinned_entries, 0);
        assert_eq!(local.disk.usage().entries, 1);
    }

    fn in_ns(namespace: &str, name: &str) -> Key {
        Key::object(crate::store::Namespace::new(namespace).unwrap(), name).unwrap()
    }

    /// Gradle (the default) writes back; one bucket each writes back, through, or locally.
    fn mixed() -> Policies {
        let with = |write| NamespacePolicy {
            write,
            ..NamespacePolicy::default()
        };
        let ns = |n| crate::store::Namespace::new(n).unwrap();
        Policies::new(with(WriteMode::Back))
            .with(ns("back"), with(WriteMode::Back))
            .with(ns("through"), with(WriteMode::Through))
            .with(ns("local"), with(WriteMode::Local))
    }

    async fn put(store: &TieredStore<FakeBackend>, k: &Key, data: &[u8]) -> ObjectMeta {
        store
            .put(k, data.len() as u64, body(data), &PutOptions::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn each_namespace_writes_as_its_policy_says() {
        let local = Local::new().await;
        let store = with_policies(&local, mixed()).await;
        let queue = queue(&store);
        let (gradle, back, through, own) = (
            key(1),
            in_ns("back", "a"),
            in_ns("through", "a"),
            in_ns("local", "a"),
        );
        for k in [&gradle, &back, &through, &own] {
            put(&store, k, &pattern(1000, 1)).await;
            assert!(local.disk.contains(k), "{k}");
        }
        assert_eq!(store.write_mode(gradle.namespace()), WriteMode::Back);
        assert_eq!(store.write_mode(own.namespace()), WriteMode::Local);
        assert_eq!(queue.pending(&gradle), Some(Op::put(1000)));
        assert_eq!(queue.pending(&back), Some(Op::put(1000)));
        assert_eq!(queue.len(), 2);
        assert_eq!(local.backend.calls("put"), 1, "only write-through uploaded");
        assert!(local.backend.object(&through).is_some());
        assert!(local.backend.object(&own).is_none());
        assert_eq!(local.disk.usage().pinned_entries, 2, "the queued ones");

        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        queue.start(stop);
        let q = queue.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        assert!(local.backend.object(&back).is_some());
        assert!(local.backend.object(&gradle).is_some());
        assert!(local.backend.object(&own).is_none(), "local stays local");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deletes_reach_the_backend_as_the_namespace_says() {
        let local = Local::new().await;
        let store = with_policies(&local, mixed()).await;
        let queue = queue(&store);
        let (back, through, own) = (
            in_ns("back", "k"),
            in_ns("through", "k"),
            in_ns("local", "k"),
        );
        for k in [&back, &through, &own] {
            local.backend.insert(k, pattern(10, 7));
            put(&store, k, &pattern(100, 1)).await;
        }
        let queued_uploads = queue.len();

        // Through: the backend first, then the local copies.
        assert!(store.delete(&through).await.unwrap());
        assert!(local.backend.object(&through).is_none());
        assert!(store.get(&through).await.unwrap().is_none());

        // Local: the backend is never asked.
        assert!(store.delete(&own).await.unwrap());
        assert_eq!(local.backend.calls("delete"), 1);
        assert!(local.backend.object(&own).is_some());

        // Back: queued durably; until applied, the key reads as missing without a fill.
        assert!(store.delete(&back).await.unwrap());
        assert_eq!(queue.pending(&back), Some(Op::Delete));
        assert_eq!(
            queue.len(),
            queued_uploads,
            "the delete replaced the upload"
        );
        assert!(local.backend.object(&back).is_some(), "not applied yet");
        let gets = local.backend.calls("get");
        assert!(store.get(&back).await.unwrap().is_none());
        assert!(store.head(&back).await.unwrap().is_none());
        assert!(matches!(
            store.read(&back, &GetOptions::default()).await.unwrap(),
            Read::Missing
        ));
        assert_eq!(local.backend.calls("get"), gets, "no fill of a deleted key");
        assert_eq!(local.disk.usage().pinned_entries, 0);

        // A restart finds the delete in its marker.
        let restarted = with_policies(&local, mixed()).await;
        let queue = self::queue(&restarted);
        assert_eq!(queue.pending(&back), Some(Op::Delete));
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        queue.start(stop);
        let q = queue.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        assert!(local.backend.object(&back).is_none());
        assert_eq!(
            local.backend.calls("put"),
            1,
            "only write-through's upload ran"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_after_a_delete_brings_the_object_back() {
        let local = Local::new().await;
        let store = with_policies(&local, mixed()).await;
        let k = in_ns("back", "cache.zip");
        put(&store, &k, &pattern(100, 1)).await;
        store.delete(&k).await.unwrap();
        let newer = pattern(200, 2);
        let stored = put(&store, &k, &newer).await;
        assert_eq!(stored.len, 200);
        assert!(
            read_body(store.get(&k).await.unwrap().unwrap())
                .await
                .unwrap()
                == newer
        );
        let queue = queue(&store);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        queue.start(stop);
        let q = queue.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        assert!(local.backend.object(&k).unwrap() == newer);
        assert_eq!(
            local.backend.calls("delete"),
            0,
            "the put superseded the delete"
        );
    }

    fn list_request(
        ns: &str,
        prefix: &str,
        delimiter: Option<&str>,
        max_keys: usize,
    ) -> ListRequest {
        ListRequest {
            namespace: crate::store::Namespace::new(ns).unwrap(),
            prefix: prefix.into(),
            delimiter: delimiter.map(str::to_string),
            continuation: None,
            start_after: None,
            max_keys,
        }
    }

    /// Every page of a listing, followed through its continuations: (names, common prefixes,
    /// pages).
    async fn list_all(
        store: &TieredStore<FakeBackend>,
        request: ListRequest,
    ) -> (Vec<String>, Vec<String>, usize) {
        let (mut names, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
        let mut request = request;
        loop {
            let page = store.list(&request).await.unwrap();
            pages += 1;
            assert!(page.objects.len() + page.common_prefixes.len() <= request.max_keys);
            names.extend(page.objects.iter().map(|o| o.name.clone()));
            prefixes.extend(page.common_prefixes.clone());
            match page.next {
                Some(next) => request.continuation = Some(next),
                None => return (names, prefixes, pages),
            }
            assert!(pages < 100, "the listing does not end");
        }
    }

    #[tokio::test]
    async fn a_listing_shows_queued_writes_and_hides_queued_deletes() {
        let local = Local::new().await;
        let store = with_policies(&local, mixed()).await;
        for name in ["a/1", "a/2", "b", "c/x", "d", "f/1"] {
            local.backend.insert(&in_ns("back", name), pattern(10, 1));
        }
        // Not uploaded yet (the queue is not started): new names, and one overwritten.
        put(&store, &in_ns("back", "b"), &pattern(300, 2)).await;
        let newer = store.head(&in_ns("back", "b")).await.unwrap().unwrap();
        for name in ["a/3", "e", "new/x"] {
            put(&store, &in_ns("back", name), &pattern(20, 3)).await;
        }
        // Not applied yet: the only object under c/, one of two under f/... and d.
        for name in ["c/x", "d"] {
            store.delete(&in_ns("back", name)).await.unwrap();
        }

        let whole = store
            .list(&list_request("back", "", None, 1000))
            .await
            .unwrap();
        let names: Vec<&str> = whole.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["a/1", "a/2", "a/3", "b", "e", "f/1", "new/x"]);
        assert_eq!(whole.next, None);
        let b = &whole.objects[3];
        assert_eq!(b.len, 300, "the local write's size");
        assert_eq!(b.etag, newer.etag);
        assert_eq!(b.modified, newer.modified);

        let rolled = store
            .list(&list_request("back", "", Some("/"), 1000))
            .await
            .unwrap();
        let names: Vec<&str> = rolled.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["b", "e"]);
        assert_eq!(
            rolled.common_prefixes,
            ["a/", "f/", "new/"],
            "c/ holds only a deleted name; new/ only a queued one"
        );

        // Pages of every size give the same lines, each once.
        for max_keys in 1..=4 {
            let (names, prefixes, pages) =
                list_all(&store, list_request("back", "", Some("/"), max_keys)).await;
            assert_eq!(names, ["b", "e"], "{max_keys}");
            assert_eq!(prefixes, ["a/", "f/", "new/"], "{max_keys}");
            assert_eq!(pages, 5_usize.div_ceil(max_keys), "{max_keys}");
            let (names, _, _) = list_all(&store, list_request("back", "a/", None, max_keys)).await;
            assert_eq!(names, ["a/1", "a/2", "a/3"], "{max_keys}");
        }
        let after = store
            .list(&ListRequest {
                start_after: Some("b".into()),
                ..list_request("back", "", Some("/"), 1000)
            })
            .await
            .unwrap();
        assert_eq!(after.objects.len(), 1);
        assert_eq!(after.common_prefixes, ["f/", "new/"]);

        // Once the queue has run, the backend alone lists the same.
        let queue = queue(&store);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        queue.start(stop);
        let q = queue.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        let (names, prefixes, _) = list_all(&store, list_request("back", "", Some("/"), 2)).await;
        assert_eq!(names, ["b", "e"]);
        assert_eq!(prefixes, ["a/", "f/", "new/"]);
    }

    #[tokio::test]
    async fn a_local_namespace_lists_its_disk_entries() {
        let local = Local::new().await;
        let store = with_policies(&local, mixed()).await;
        let mut stored = Vec::new();
        for name in ["x/1", "x/2", "y", "z/deep/1", "z/deep/2", "zz"] {
            stored.push(put(&store, &in_ns("local", name), name.as_bytes()).await);
        }
        // Another namespace's entries are not listed.
        put(&store, &in_ns("back", "y"), b"other").await;
        store.delete(&in_ns("local", "zz")).await.unwrap();

        let whole = store
            .list(&list_request("local", "", None, 100))
            .await
            .unwrap();
        let names: Vec<&str> = whole.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["x/1", "x/2", "y", "z/deep/1", "z/deep/2"]);
        assert_eq!(whole.objects[2].len, 1);
        assert_eq!(whole.objects[2].etag, stored[2].etag);
        assert_eq!(local.backend.calls("list"), 0);

        for max_keys in 1..=3 {
            let (names, prefixes, _) =
                list_all(&store, list_request("local", "", Some("/"), max_keys)).await;
            assert_eq!(names, ["y"], "{max_keys}");
            assert_eq!(prefixes, ["x/", "z/"], "{max_keys}");
            let (_, prefixes, _) =
                list_all(&store, list_request("local", "z/", Some("/"), max_keys)).await;
            assert_eq!(prefixes, ["z/deep/"], "{max_keys}");
        }
    }

    /// An assembled entry is uploaded with its client's part boundaries, through or back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spooled_entry_keeps_its_part_layout() {
        let local = Local::new().await;
        let store = with_policies(&local, mixed()).await;
        let data = pattern(3000, 5);
        let parts = PartLayout::Sizes(vec![1500, 1000, 500]);
        for ns in ["through", "back", "local"] {
            let k = in_ns(ns, "assembled");
            let spool = local
                .disk
                .receive(&k, 3000, body(&data), &PutOptions::default())
                .await
                .unwrap();
            let stored = store.put_spooled(&k, spool, parts.clone()).await.unwrap();
            assert_eq!(stored.len, 3000);
        }
        assert_eq!(
            local.backend.parts(&in_ns("through", "assembled")).unwrap(),
            vec![1500, 1000, 500]
        );
        let queue = queue(&store);
        let back = in_ns("back", "assembled");
        assert_eq!(
            queue.pending(&back),
            Some(Op::Put {
                bytes: 3000,
                parts: parts.clone()
            })
        );
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        queue.start(stop);
        let q = queue.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        assert_eq!(local.backend.parts(&back).unwrap(), vec![1500, 1000, 500]);
        assert!(local
            .backend
            .meta(&back)
            .unwrap()
            .etag
            .unwrap()
            .ends_with("-3"));
        assert!(local.backend.object(&in_ns("local", "assembled")).is_none());
    }
}
