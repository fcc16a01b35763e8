//! Write-back: a write (or a delete) is acknowledged once it is durable on local disk, and
//! applied to S3 afterwards from a bounded queue that survives restarts, crashes included.
//!
//! # The protocol
//!
//! 1. [`WriteBack::reserve`] takes a queue slot *before* the body is read, so a full queue
//!    refuses the write ([`StoreError::QueueFull`]) instead of dropping it later.
//! 2. The entry is committed to the disk tier *pinned*: the index never evicts it.
//! 3. [`WriteBack::enqueue`] writes a marker file `<disk.dir>/.queue/<sha256 of the key>` (temp
//!    file, fsync, rename, fsync of the directory). Only then is the write acknowledged.
//! 4. Uploader tasks ([`WriteBack::start`]) take due entries, upload the entry file's body
//!    (file-backed, so the SDK can retry it), and on success remove the marker and unpin the
//!    entry. Failures are retried with exponential backoff and jitter, up to
//!    `s3.retry_max_backoff`, for as long as it takes: nothing acknowledged is ever given up.
//! 5. At start-up [`WriteBack::load`] reads the markers back and re-pins their entries before
//!    the daemon serves anything, so nothing can be evicted before it is uploaded. A marker whose
//!    entry is gone belongs to a write that was never acknowledged (the crash came between
//!    commit and marker) or was deleted since; it is dropped.
//!
//! # Puts and deletes
//!
//! Each queued key owes the backend one [`Op`]: upload its entry ([`Op::Put`], with the part
//! layout the object's ETag depends on) or remove the object ([`Op::Delete`]). A key has one
//! item and one marker, so the newest op replaces any older one still waiting: a put queued and
//! then deleted never reaches the backend, and an older upload can never bring a deleted key
//! back. A delete is made durable the same way as a put (its marker is fsynced before the
//! delete is acknowledged); at start-up a delete marker removes any local copy left behind by a
//! crash between the marker and the local removal.
//!
//! A key written or deleted again while its op runs gets a new generation (bumped in
//! `reserve`, before the new body can land); a finished op only retires the generation it
//! started with, so the newer op runs after it: a delete queued while the key's upload is in
//! flight runs once the upload ended, and the bucket ends without the object.
//!
//! SIGTERM simply stops the uploaders: the markers stay, and the next start drains them.
//!
//! This file is the queue's state; [`marker`] is its durable form and [`uploader`] the tasks
//! that drain it into the [`Backend`].

mod marker;
mod uploader;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::backend::{Backend, PartLayout};
use super::disk::{DiskTier, Version};
use super::s3::S3Tier;
use super::{Key, Namespace, StoreError};
use crate::metrics::Metrics;
use marker::{load_markers, marker_path, marker_text, write_durably};
pub use uploader::backoff;

/// The queue directory under `disk.dir`; dot-directories are skipped by the disk index.
pub const QUEUE_DIR: &str = ".queue";

/// Queue settings.
#[derive(Debug, Clone)]
pub struct WriteBackSettings {
    /// `<disk.dir>`; markers live in `<disk.dir>/.queue`.
    pub disk_dir: PathBuf,
    pub max_entries: usize,
    pub concurrency: usize,
    pub max_backoff: Duration,
    /// Source of retry jitter, uniform in [0, 1): `fastrand::f64` in the daemon; tests may pin it.
    pub jitter: fn() -> f64,
}

/// A handle to the write-back queue; cheap to clone.
pub struct WriteBack<B: Backend = S3Tier> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for WriteBack<B> {
    fn clone(&self) -> Self {
        WriteBack {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B> {
    dir: PathBuf,
    disk: DiskTier,
    remote: B,
    metrics: Arc<Metrics>,
    settings: WriteBackSettings,
    state: Mutex<State>,
    wake: Notify,
}

/// What a queued key owes the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Upload the key's entry (`bytes` of body) from the disk tier, split as `parts` says.
    Put { bytes: u64, parts: PartLayout },
    /// Remove the object from the backend.
    Delete,
}

impl Op {
    /// An upload of `bytes` with the backend's own part layout.
    pub fn put(bytes: u64) -> Op {
        Op::Put {
            bytes,
            parts: PartLayout::Auto,
        }
    }

    /// Body bytes the op holds on disk until it is done.
    fn bytes(&self) -> u64 {
        match self {
            Op::Put { bytes, .. } => *bytes,
            Op::Delete => 0,
        }
    }
}

#[derive(Default)]
struct State {
    /// Ordered, so a listing can walk one namespace's pending ops by name.
    items: BTreeMap<Key, Item>,
    /// Due times; entries whose `seq` no longer matches their item's are stale and skipped.
    due: BinaryHeap<Reverse<(Instant, u64, Key)>>,
    /// Slots taken by writes in progress for keys not in `items` yet.
    reserved: usize,
    bytes: u64,
    seq: u64,
}

struct Item {
    generation: u64,
    enqueued: SystemTime,
    op: Op,
    attempts: u32,
    in_flight: bool,
    /// The `seq` of this item's live entry in `due`, if it has one.
    scheduled: Option<u64>,
}

impl State {
    /// Queues a key that is not queued yet, due now.
    fn add(&mut self, key: Key, enqueued: SystemTime, op: Op, now: Instant) {
        self.seq += 1;
        self.bytes += op.bytes();
        self.due.push(Reverse((now, self.seq, key.clone())));
        self.items.insert(
            key,
            Item {
                generation: 0,
                enqueued,
                op,
                attempts: 0,
                in_flight: false,
                scheduled: Some(self.seq),
            },
        );
    }
}

/// A queue slot held by a write in progress; released on drop unless enqueued.
pub struct Slot<B: Backend = S3Tier> {
    inner: Arc<Inner<B>>,
    counted: bool,
}

impl<B: Backend> Slot<B> {
    /// False when the key was already queued (an earlier write still waits for upload).
    pub fn is_new(&self) -> bool {
        self.counted
    }
}

impl<B: Backend> Drop for Slot<B> {
    fn drop(&mut self) {
        if self.counted {
            self.inner.lock().reserved -= 1;
        }
    }
}

impl<B: Backend> WriteBack<B> {
    /// Opens the queue and restores it from its markers, re-pinning their entries. Call before
    /// anything can write to (and so evict from) the disk tier.
    pub async fn load(
        settings: WriteBackSettings,
        disk: DiskTier,
        remote: B,
        metrics: Arc<Metrics>,
    ) -> io::Result<WriteBack<B>> {
        let dir = settings.disk_dir.join(QUEUE_DIR);
        let loaded = {
            let dir = dir.clone();
            let disk = disk.clone();
            tokio::task::spawn_blocking(move || load_markers(&dir, &disk))
                .await
                .map_err(io::Error::other)??
        };
        let mut state = State::default();
        let now = Instant::now();
        let mut deletes = Vec::new();
        for (key, enqueued, op) in loaded {
            if op == Op::Delete {
                deletes.push(key.clone());
            }
            state.add(key, enqueued, op, now);
        }
        // A crash between a delete's marker and its local removal left the copy behind: the
        // delete was acknowledged only after both, but the marker alone is what must count.
        for key in &deletes {
            super::Store::delete(&disk, key)
                .await
                .map_err(io::Error::other)?;
        }
        let wb = WriteBack {
            inner: Arc::new(Inner {
                dir,
                disk,
                remote,
                metrics,
                settings,
                state: Mutex::new(state),
                wake: Notify::new(),
            }),
        };
        wb.inner.publish(&wb.inner.lock());
        Ok(wb)
    }

    /// Starts the uploader tasks; they stop when `stop` turns true, leaving the queue on disk.
    pub fn start(&self, stop: watch::Receiver<bool>) {
        for _ in 0..self.inner.settings.concurrency.max(1) {
            tokio::spawn(uploader::uploader(self.inner.clone(), stop.clone()));
        }
    }

    /// Entries waiting (or being uploaded).
    pub fn len(&self) -> usize {
        self.inner.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a slot for a coming write or delete of `key`, or refuses it when the queue is full.
    /// A key already queued needs no new slot, but its op in progress (if any) is now stale.
    pub fn reserve(&self, key: &Key) -> Result<Slot<B>, StoreError> {
        let mut state = self.inner.lock();
        if let Some(item) = state.items.get_mut(key) {
            item.generation += 1;
            return Ok(Slot {
                inner: self.inner.clone(),
                counted: false,
            });
        }
        if state.items.len() + state.reserved >= self.inner.settings.max_entries {
            return Err(StoreError::QueueFull);
        }
        state.reserved += 1;
        Ok(Slot {
            inner: self.inner.clone(),
            counted: true,
        })
    }

    /// Records what `key` owes the backend: the upload of its committed (pinned) entry, or its
    /// removal. Replaces whatever the key had queued. Durable when this returns.
    ///
    /// Callers order their ops on one key themselves (the tiered store holds a per-key lock
    /// from a write's commit, or a delete's start, to the end of this call), so the marker
    /// left on disk is always the newest op's.
    pub async fn enqueue(&self, mut slot: Slot<B>, key: &Key, op: Op) -> Result<(), StoreError> {
        let enqueued = SystemTime::now();
        let path = marker_path(&self.inner.dir, key);
        let text = marker_text(key, enqueued, &op);
        tokio::task::spawn_blocking(move || write_durably(&path, text.as_bytes()))
            .await
            .map_err(io::Error::other)??;
        let inner = &self.inner;
        let mut state = inner.lock();
        if std::mem::take(&mut slot.counted) {
            state.reserved -= 1;
        }
        let now = Instant::now();
        if !state.items.contains_key(key) {
            state.add(key.clone(), enqueued, op, now);
        } else {
            state.seq += 1;
            let seq = state.seq;
            let bytes = op.bytes();
            let item = state.items.get_mut(key).expect("checked above");
            let old = std::mem::replace(&mut item.op, op).bytes();
            // An item in flight is rescheduled when its op ends (its generation moved on in
            // `reserve`); one waiting for a retry goes now, the op is new.
            let schedule = !item.in_flight;
            if schedule {
                item.scheduled = Some(seq);
                item.attempts = 0;
            }
            state.bytes = state.bytes - old + bytes;
            if schedule {
                state.due.push(Reverse((now, seq, key.clone())));
            }
        }
        inner.publish(&state);
        drop(state);
        inner.wake.notify_one();
        Ok(())
    }

    /// What `key` still owes the backend, if anything.
    pub fn pending(&self, key: &Key) -> Option<Op> {
        self.inner.lock().items.get(key).map(|item| item.op.clone())
    }

    /// The ops queued for names of `namespace` starting with `prefix`, in name order: what a
    /// listing must merge with the backend's.
    pub fn pending_under(&self, namespace: &Namespace, prefix: &str) -> Vec<(Key, Op)> {
        let state = self.inner.lock();
        state
            .items
            .range(Key::position(namespace, prefix)..)
            .take_while(|(key, _)| key.namespace() == namespace && key.name().starts_with(prefix))
            .map(|(key, item)| (key.clone(), item.op.clone()))
            .collect()
    }

    /// Updates the oldest-entry age gauge (at scrape time: it changes with the clock).
    pub fn observe(&self) {
        let state = self.inner.lock();
        let now = SystemTime::now();
        let oldest = state
            .items
            .values()
            .filter_map(|i| now.duration_since(i.enqueued).ok())
            .max()
            .unwrap_or_default();
        self.inner
            .metrics
            .upload_queue_oldest_seconds
            .set(oldest.as_secs() as i64);
    }
}

impl<B: Backend> Inner<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the state consistent before anything can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, state: &State) {
        self.metrics
            .upload_queue_entries
            .set(state.items.len() as i64);
        self.metrics.upload_queue_bytes.set(state.bytes as i64);
    }

    /// Takes the next due item, or says how long to wait for one.
    fn take_due(&self) -> Result<(Key, u64, Op), Option<Instant>> {
        let mut state = self.lock();
        let now = Instant::now();
        while let Some(Reverse((at, seq, key))) = state.due.peek().cloned() {
            let live = state
                .items
                .get(&key)
                .is_some_and(|i| i.scheduled == Some(seq) && !i.in_flight);
            if !live {
                state.due.pop();
                continue;
            }
            if at > now {
                return Err(Some(at));
            }
            state.due.pop();
            let item = state.items.get_mut(&key).expect("checked live above");
            item.in_flight = true;
            item.scheduled = None;
            return Ok((key, item.generation, item.op.clone()));
        }
        Err(None)
    }

    /// Retires or reschedules an item after an attempt at its op: `uploaded` is `None` when the
    /// attempt failed, else the version of the entry it uploaded (if it uploaded one). Runs on
    /// a blocking thread: it unlinks the marker under the queue lock, so no newer marker for
    /// the key can be lost.
    fn finish(&self, key: &Key, generation: u64, uploaded: Option<Option<Version>>) {
        let uploaded_version = uploaded.flatten();
        let uploaded = uploaded.is_some();
        let mut state = self.lock();
        let Some(item) = state.items.get_mut(key) else {
            return;
        };
        item.in_flight = false;
        let now = Instant::now();
        let retry_at = if uploaded && item.generation == generation {
            let op = item.op.clone();
            state.items.remove(key);
            state.bytes -= op.bytes();
            match std::fs::remove_file(marker_path(&self.dir, key)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // The upload is done; a marker left behind only means one more upload later.
                Err(e) => tracing::warn!(key = %key, error = %e, "cannot remove upload marker"),
            }
            // Only the version uploaded: a newer one, committed while the upload ran and not
            // queued yet, still waits for its own upload.
            if let (Op::Put { .. }, Some(version)) = (op, uploaded_version) {
                self.disk.unpin(key, version);
            }
            None
        } else if uploaded {
            // Written or deleted again during the op: run the new one.
            item.attempts = 0;
            Some(now)
        } else {
            item.attempts += 1;
            Some(
                now + backoff(
                    item.attempts,
                    self.settings.max_backoff,
                    (self.settings.jitter)(),
                ),
            )
        };
        if let Some(at) = retry_at {
            state.seq += 1;
            let seq = state.seq;
            if let Some(item) = state.items.get_mut(key) {
                item.scheduled = Some(seq);
            }
            state.due.push(Reverse((at, seq, key.clone())));
        }
        self.publish(&state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::fake::FakeBackend;
    use crate::store::testing::{body, eventually, key, pattern, Local};

    async fn queue(local: &Local, max_backoff: Duration) -> WriteBack<FakeBackend> {
        WriteBack::load(
            WriteBackSettings {
                disk_dir: local.dir.path().join("data"),
                max_entries: 10,
                concurrency: 2,
                max_backoff,
                // Always the longest delay: the test can bound the time from below.
                jitter: || 1.0,
            },
            local.disk.clone(),
            local.backend.clone(),
            local.metrics.clone(),
        )
        .await
        .unwrap()
    }

    async fn write(local: &Local, queue: &WriteBack<FakeBackend>, key: &Key, data: &[u8]) {
        let slot = queue.reserve(key).unwrap();
        let header = local
            .disk
            .put_entry(
                key,
                data.len() as u64,
                body(data),
                &crate::store::PutOptions::default(),
                true,
            )
            .await
            .unwrap();
        queue
            .enqueue(slot, key, Op::put(header.body_len))
            .await
            .unwrap();
    }

    /// A delete as the tiered store queues it: marker first, then the local copy goes.
    async fn delete(local: &Local, queue: &WriteBack<FakeBackend>, key: &Key) {
        let slot = queue.reserve(key).unwrap();
        queue.enqueue(slot, key, Op::Delete).await.unwrap();
        crate::store::Store::delete(&local.disk, key).await.unwrap();
    }

    fn object_key(name: &str) -> Key {
        Key::object(Namespace::new("bucket").unwrap(), name).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_uploads_are_retried_with_backoff_until_they_land() {
        let local = Local::new().await;
        let queue = queue(&local, Duration::from_millis(100)).await;
        let (stop_tx, stop) = watch::channel(false);
        queue.start(stop);
        let k = key(1);
        let data = pattern(200_000, 1);
        local.backend.fail_next(2);
        let started = std::time::Instant::now();
        write(&local, &queue, &k, &data).await;
        assert_eq!(local.disk.usage().pinned_entries, 1);
        let q = queue.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        // Two failures, each followed by the capped backoff (100 ms, jitter pinned at 1).
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(local.backend.calls("put"), 3);
        assert_eq!(local.metrics.upload_failures.get(), 2);
        assert!(local.backend.object(&k).unwrap() == data);
        assert_eq!(
            local.backend.meta(&k).unwrap().crc32c,
            Some(crc32c::crc32c(&data)),
            "our checksum travels with the object"
        );
        let disk = local.disk.clone();
        eventually("the entry to be unpinned", || {
            disk.usage().pinned_entries == 0
        })
        .await;
        stop_tx.send_replace(true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_written_again_during_its_upload_is_uploaded_again() {
        let local = Local::new().await;
        let queue = queue(&local, Duration::from_millis(100)).await;
        let (stop_tx, stop) = watch::channel(false);
        queue.start(stop);
        let k = key(2);
        local.backend.hold(true);
        write(&local, &queue, &k, &pattern(1000, 1)).await;
        let backend = local.backend.clone();
        eventually("the first upload to start", || backend.calls("put") == 1).await;
        let newer = pattern(1000, 2);
        write(&local, &queue, &k, &newer).await;
        local.backend.hold(false);
        let q = queue.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        assert_eq!(local.backend.calls("put"), 2);
        assert!(local.backend.object(&k).unwrap() == newer);
        stop_tx.send_replace(true);
    }

    #[tokio::test]
    async fn markers_survive_a_restart_and_repin_their_entries() {
        let local = Local::new().await;
        let first = queue(&local, Duration::from_millis(100)).await;
        // Never started: nothing is uploaded before the "restart".
        write(&local, &first, &key(3), &pattern(100, 3)).await;
        let version = local.disk.version(&key(3)).unwrap();
        local.disk.unpin(&key(3), version);
        let second = queue(&local, Duration::from_millis(100)).await;
        assert_eq!(second.len(), 1);
        assert_eq!(local.disk.usage().pinned_entries, 1, "re-pinned on load");
        let (_stop_tx, stop) = watch::channel(false);
        second.start(stop);
        let q = second.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        assert!(local.backend.object(&key(3)).unwrap() == pattern(100, 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_queued_during_an_upload_runs_after_it() {
        let local = Local::new().await;
        let queue = queue(&local, Duration::from_millis(100)).await;
        let (stop_tx, stop) = watch::channel(false);
        queue.start(stop);
        let k = object_key("cache.zip");
        local.backend.hold(true);
        write(&local, &queue, &k, &pattern(1000, 1)).await;
        let backend = local.backend.clone();
        eventually("the upload to start", || backend.calls("put") == 1).await;
        delete(&local, &queue, &k).await;
        assert_eq!(queue.pending(&k), Some(Op::Delete));
        local.backend.hold(false);
        let q = queue.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        assert_eq!(local.backend.calls("delete"), 1);
        assert!(
            local.backend.object(&k).is_none(),
            "the upload left the object"
        );
        assert!(!local.disk.contains(&k));
        assert_eq!(local.disk.usage().pinned_entries, 0);
        stop_tx.send_replace(true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_queued_then_deleted_never_reaches_the_backend() {
        let local = Local::new().await;
        let queue = queue(&local, Duration::from_millis(100)).await;
        let k = object_key("a/b");
        local.backend.insert(&k, pattern(10, 9));
        // Not started yet: both ops are queued before any runs.
        write(&local, &queue, &k, &pattern(1000, 1)).await;
        delete(&local, &queue, &k).await;
        assert_eq!(queue.len(), 1, "one item per key");
        let (stop_tx, stop) = watch::channel(false);
        queue.start(stop);
        let q = queue.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        assert_eq!(local.backend.calls("put"), 0);
        assert!(
            local.backend.object(&k).is_none(),
            "the older object is deleted"
        );
        stop_tx.send_replace(true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_after_a_delete_is_uploaded_with_its_part_layout() {
        let local = Local::new().await;
        let queue = queue(&local, Duration::from_millis(100)).await;
        let (stop_tx, stop) = watch::channel(false);
        let k = object_key("jar");
        local.backend.insert(&k, pattern(10, 9));
        delete(&local, &queue, &k).await;
        let data = pattern(3000, 2);
        let slot = queue.reserve(&k).unwrap();
        local
            .disk
            .put_entry(
                &k,
                3000,
                body(&data),
                &crate::store::PutOptions::default(),
                true,
            )
            .await
            .unwrap();
        let parts = PartLayout::Sizes(vec![1000, 1000, 1000]);
        queue
            .enqueue(
                slot,
                &k,
                Op::Put {
                    bytes: 3000,
                    parts: parts.clone(),
                },
            )
            .await
            .unwrap();
        queue.start(stop);
        let q = queue.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        assert!(local.backend.object(&k).unwrap() == data);
        assert_eq!(local.backend.parts(&k).unwrap(), vec![1000, 1000, 1000]);
        assert!(local
            .backend
            .meta(&k)
            .unwrap()
            .etag
            .unwrap()
            .ends_with("-3"));
        assert_eq!(local.disk.usage().pinned_entries, 0);
        stop_tx.send_replace(true);
    }

    #[tokio::test]
    async fn a_queued_delete_survives_a_restart_and_removes_a_leftover_copy() {
        let local = Local::new().await;
        let first = queue(&local, Duration::from_millis(100)).await;
        let (gone, kept) = (object_key("gone"), object_key("kept"));
        local.backend.insert(&gone, pattern(10, 1));
        write(&local, &first, &kept, &pattern(100, 3)).await;
        // The crash came after the delete's marker and before its local removal.
        write(&local, &first, &gone, &pattern(100, 4)).await;
        let slot = first.reserve(&gone).unwrap();
        first.enqueue(slot, &gone, Op::Delete).await.unwrap();
        assert!(local.disk.contains(&gone));

        let second = queue(&local, Duration::from_millis(100)).await;
        assert_eq!(second.pending(&gone), Some(Op::Delete));
        assert_eq!(second.pending(&kept), Some(Op::put(100)));
        assert!(!local.disk.contains(&gone), "the leftover copy is removed");
        assert_eq!(
            second.pending_under(&Namespace::new("bucket").unwrap(), ""),
            vec![(gone.clone(), Op::Delete), (kept.clone(), Op::put(100))]
        );
        let (_stop_tx, stop) = watch::channel(false);
        second.start(stop);
        let q = second.clone();
        eventually("the queue to drain", || q.is_empty()).await;
        assert!(local.backend.object(&gone).is_none());
        assert!(local.backend.object(&kept).unwrap() == pattern(100, 3));
    }
}
