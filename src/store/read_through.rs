//! Read-through with single-flight: a local miss is filled from S3 once, however many requests
//! want the key, and every one of them is served while the fill is still running.
//!
//! ```text
//! request ─┐                      ┌─ fill task (owned by no request) ─────────────────────┐
//! request ─┼─ join_or_start(key) ─┤  S3 GET → Spool (disk-tier temp file) → verify → commit │
//! request ─┘        │             └──────── watch: source, bytes written, end ─────────────┘
//!                   └─ each request tails the spool file with pread, up to "bytes written"
//! ```
//!
//! - **One S3 request per key at a time.** The first miss registers a fill and spawns it as its
//!   own task; later misses for the key join it. Since no request owns the fill, cancelling any
//!   of them (the first included) never strands the others. The fill runs to the end even when
//!   nobody is left reading: the bytes are on their way into the cache anyway.
//! - **Bounded memory, independent readers.** The fill writes S3's body to the spool file in
//!   small batches (the buffers it arrived in, one vectored write each) and publishes how much
//!   is on disk; each reader reads at its own pace, so a slow client neither holds back the
//!   download nor makes anyone buffer for it. The last [`RECENT_BYTES`] written stay in memory
//!   ([`Recent`]): a reader keeping pace takes them from there, one that fell behind reads the
//!   spool file.
//! - **A cut-off download resumes.** When S3's body fails or ends early, the fill asks for the
//!   rest with a ranged GET conditional on the object's ETag (so the bytes are of the same
//!   object), up to [`MAX_RESUMES`] times; readers just see the body continue.
//! - **Nothing unverified is committed or served whole.** The entry is committed only when its
//!   length (and its CRC32C, when the object carries ours) matched. Readers are held one byte
//!   short of the end until then, so a failed fill ends every response with an error, never a
//!   complete-looking body. They are released as soon as the body is verified, without waiting
//!   for the commit's fsync.
//! - **Revalidation is a fill too.** A local copy of a revalidated namespace is confirmed with
//!   a GET conditional on its ETag (`If-None-Match`), run as a fill of the key: concurrent
//!   revalidations of one key share one request, a 304 ends it with nothing written, and a 200's
//!   body *is* the refill (no second GET). It may replace the stale entry it started from
//!   ([`Commit::Fill`]); a 404 drops the local copy (unless the key changed meanwhile).
//! - **Too large to cache: streamed through.** An object above the namespace's largest cached
//!   size, or one the disk tier refuses, ends the fill without a spool. One reader of the whole
//!   object takes the fill's body as it is; every other reader makes its own GET of exactly
//!   what it wants (a range stays a ranged GET), conditional on the same ETag.
//! - **A fill that has ended, or that a write or delete of its key overtook, is not joined.**
//!   Its outcome is for the requests that were waiting on it; a request that finds it so
//!   starts afresh (or finds the committed entry).
//! - **A range far ahead of the download starts its own.** The spool is cut into
//!   [`SEGMENT`]s. The fill's first GET downloads from the start; a reader waiting for a
//!   segment that no download is about to reach makes the fill start a download there (up to
//!   [`MAX_DOWNLOADS`] at once), which asks for each segment with a GET of exactly its bytes
//!   (same ETag). Each download goes on into the next segment only if no other download has
//!   it, so every byte is fetched once, and a runner's parallel ranged
//!   download of a cold archive is served at S3's parallel speed instead of waiting for one
//!   stream to get there. A range is read from the spool at its own offset as its segment fills.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::backend::{Backend, ByteRange, Conditions, Fetch, GetOptions, Verdict};
use super::disk::spool::{EntryMeta, EtagSource, Spool};
use super::disk::tail::{self, Look, Spooled};
use super::disk::{Commit, DiskTier, FillOrder, FillTicket};
use super::local::LocalTiers;
use super::memory::MemoryTier;
use super::s3::S3Tier;
use super::{ByteStream, Key, Object, ObjectMeta, Read, Store, StoreError, Tier};
use crate::metrics::Metrics;

/// The fill writes S3's body to disk in batches of this size (and readers read at most this
/// much per step): large enough for efficient I/O, small enough to keep memory flat.
const BATCH: usize = 256 * 1024;
/// Ranged GETs one download of a fill may make to resume a body S3 cut off, before it fails.
pub const MAX_RESUMES: u32 = 3;
/// A fill's spool is downloaded in segments of this size (GitLab Runner's parallel cache
/// download asks for ranges of this size too): the unit a ranged download starts at.
pub const SEGMENT: u64 = 16 * 1024 * 1024;
/// Downloads one fill runs at once, its first GET included.
pub const MAX_DOWNLOADS: usize = 8;
/// Batches on their way from a fill's downloads to its spool (bounds its memory).
const BATCHES_IN_FLIGHT: usize = 8;
/// The last body bytes a fill wrote, kept in memory for readers that keep pace with it.
const RECENT_BYTES: usize = 2 * 1024 * 1024;

/// A handle to the read-through; cheap to clone.
pub struct ReadThrough<B: Backend = S3Tier> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for ReadThrough<B> {
    fn clone(&self) -> Self {
        ReadThrough {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B> {
    remote: B,
    disk: DiskTier,
    /// Memory over `disk`: where a small fill's memory copy goes.
    local: LocalTiers,
    metrics: Arc<Metrics>,
    fills: Mutex<HashMap<Key, Fill>>,
    next_id: AtomicU64,
}

/// A fill in progress, as registered for joiners.
struct Fill {
    id: u64,
    progress: watch::Receiver<Progress>,
    /// Its place in the disk tier's change order.
    order: FillOrder,
}

/// What a fill has achieved so far; published through a `watch`.
#[derive(Clone, Default)]
struct Progress {
    /// Set once S3 answered and the spool file exists.
    source: Option<Source>,
    /// Body bytes in the spool file per [`SEGMENT`], each counted from the segment's start,
    /// readable by anyone holding `source.file`.
    filled: Vec<u64>,
    /// The whole body is in the spool file and matched its length and checksum. Readers may
    /// finish now; committing it (fsync, rename) is the cache's business, not theirs, and their
    /// file handle stays valid even if that commit fails.
    verified: bool,
    /// Set when the fill is over.
    end: Option<End>,
    /// The last bytes written to the spool, as the buffers they arrived in.
    recent: Recent,
}

/// The last [`RECENT_BYTES`] (or a little more) a fill wrote to its spool, in the buffers S3's
/// body arrived in: a reader that keeps pace with the download is handed these instead of
/// reading the same bytes back from the spool file (a copy, a zeroed buffer and a thread
/// hand-off fewer per chunk). They are the very bytes the spool has at those offsets, and what
/// a reader may take is still decided by the fill's progress alone.
#[derive(Clone, Default)]
struct Recent {
    /// (body offset, bytes), oldest first.
    chunks: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Recent {
    fn push(&mut self, at: u64, chunks: &[Bytes]) {
        let mut at = at;
        for chunk in chunks.iter().filter(|chunk| !chunk.is_empty()) {
            self.chunks.push_back((at, chunk.clone()));
            self.bytes += chunk.len();
            at += chunk.len() as u64;
        }
        while self.bytes > RECENT_BYTES {
            match self.chunks.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// The bytes from `pos` up to at most `upto`, if one kept buffer holds `pos`.
    fn at(&self, pos: u64, upto: u64) -> Option<Bytes> {
        // Readers keeping pace look for the newest bytes: search from the back.
        let (at, chunk) = self
            .chunks
            .iter()
            .rev()
            .find(|(at, chunk)| *at <= pos && pos < at + chunk.len() as u64)?;
        let end = (at + chunk.len() as u64).min(upto);
        (pos < end).then(|| chunk.slice((pos - at) as usize..(end - at) as usize))
    }
}

impl Progress {
    /// The end of the bytes readable without a gap from `pos` of a `len`-byte body.
    fn readable_from(&self, pos: u64, len: u64) -> u64 {
        let mut end = pos;
        while end < len {
            let index = (end / SEGMENT) as usize;
            let start = index as u64 * SEGMENT;
            let filled_to = start + self.filled.get(index).copied().unwrap_or(0);
            if filled_to <= end {
                break;
            }
            end = filled_to;
            if end < segment_end(index, len) {
                break;
            }
        }
        end
    }
}

/// Where segment `index` of a `len`-byte body ends.
fn segment_end(index: usize, len: u64) -> u64 {
    ((index as u64 + 1) * SEGMENT).min(len)
}

#[derive(Clone)]
struct Source {
    meta: ObjectMeta,
    file: Arc<std::fs::File>,
    body_offset: u64,
    /// Readers waiting for a segment say so here: the fill may start a download there.
    wanted: mpsc::UnboundedSender<usize>,
}

#[derive(Clone)]
enum End {
    /// Verified and committed to the disk tier.
    Complete,
    /// S3 has no such object (a local copy, if any, was dropped).
    Missing,
    /// A revalidation: S3's object still has the local copy's ETag.
    NotModified(Arc<str>),
    /// Not cached: read the object from S3 directly (see [`ThroughBody`]).
    StreamThrough(ThroughBody),
    /// S3 was skipped (circuit breaker open).
    Unavailable,
    Failed(Arc<str>),
}

/// An object that is not cached: its metadata, why, and the fill's body for one reader that
/// wants all of it (the others make their own GETs).
#[derive(Clone)]
struct ThroughBody {
    meta: ObjectMeta,
    reason: &'static str,
    body: Arc<Mutex<Option<ByteStream>>>,
}

/// Why the backend is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask<'a> {
    /// The key has no local copy.
    Miss,
    /// A local copy with this ETag (`None`: it has none, so it counts as changed) is to be
    /// confirmed before it is served.
    Revalidate(Option<&'a str>),
}

/// What the backend said.
#[derive(Debug)]
// As `Fetch`: the object is the common answer.
#[allow(clippy::large_enum_variant)]
pub enum Through {
    /// The backend's object (filled as it streams, or streamed through), the read's range and
    /// preconditions applied; `Read::Missing` when the backend has no such object (and a local
    /// copy, if any, was dropped).
    Read(Read),
    /// Serve the local copy: the backend confirmed it (304), or a fill committed the key
    /// between the caller's local miss and now.
    Local,
}

/// How many times a read starts over when the fill it joined ended without an answer for it
/// (e.g. it confirmed a different ETag than the reader's): enough for a race, finite for a key
/// that changes under every attempt.
const ATTEMPTS: usize = 3;

impl<B: Backend> ReadThrough<B> {
    pub fn new(
        remote: B,
        disk: DiskTier,
        memory: MemoryTier,
        metrics: Arc<Metrics>,
    ) -> ReadThrough<B> {
        ReadThrough {
            inner: Arc::new(Inner {
                remote,
                local: LocalTiers::new(memory, disk.clone(), metrics.clone()),
                disk,
                metrics,
                fills: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    pub fn remote(&self) -> &B {
        &self.inner.remote
    }

    /// Number of fills running now: tests wait for a fill's end (its commit included) with it.
    #[cfg(test)]
    pub(crate) fn fills_in_flight(&self) -> usize {
        self.inner.lock().len()
    }

    /// Reads `key` through S3 after a local miss (whole, any size the disk takes). `Ok(None)`
    /// is a miss.
    pub async fn get(&self, key: &Key) -> Result<Option<Object>, StoreError> {
        match self
            .read(key, &GetOptions::default(), Ask::Miss, None)
            .await?
        {
            Through::Read(Read::Found { object, .. }) => Ok(Some(object)),
            Through::Read(_) => Ok(None),
            // A fill committed between the caller's miss and now.
            Through::Local => self.inner.disk.get(key).await,
        }
    }

    /// Asks S3 for `key` (after a miss, or to confirm a local copy) and reads it with
    /// `options`: returns once S3 answered (or failed); a body then streams as the fill
    /// progresses. Objects above `max_object_size` (and any the disk tier refuses) are streamed
    /// through without being cached.
    pub async fn read(
        &self,
        key: &Key,
        options: &GetOptions,
        ask: Ask<'_>,
        max_object_size: Option<u64>,
    ) -> Result<Through, StoreError> {
        for _ in 0..ATTEMPTS {
            let (mut progress, joined) = match self.join_or_start(key, ask, max_object_size) {
                Some(joined) => joined,
                None => return Ok(Through::Local),
            };
            let waiter = joined.then(|| WaiterGuard::new(self.inner.metrics.clone()));
            // Only where the fill stands is taken, not its recent bytes or segment counts.
            let (source, end) = match progress
                .wait_for(|p| p.source.is_some() || p.end.is_some())
                .await
            {
                Ok(p) => (p.source.clone(), p.end.clone()),
                Err(_) => return Err(StoreError::Remote("S3 fill task ended unexpectedly".into())),
            };
            let lookup = |hit| self.inner.metrics.record_lookup(Tier::S3, hit);
            return match (source, end) {
                (Some(source), _) => {
                    lookup(true);
                    // A range is read from the spool at its own offset (waiting for the fill
                    // to get there), not by reading the spool from its start.
                    let meta = source.meta.clone();
                    let open = |span| tail(progress, source, span, waiter);
                    Ok(Through::Read(Read::decide_with(
                        meta,
                        Tier::S3,
                        options,
                        open,
                    )))
                }
                (None, Some(End::Missing)) => {
                    lookup(false);
                    Ok(Through::Read(Read::Missing))
                }
                (None, Some(End::NotModified(etag))) => match ask {
                    Ask::Revalidate(Some(mine)) if *mine == *etag => Ok(Through::Local),
                    // It confirmed another copy than ours (or we had none): ask again.
                    _ => continue,
                },
                (None, Some(End::StreamThrough(through))) => {
                    lookup(true);
                    self.stream_through(key, options, through).await
                }
                (None, Some(End::Unavailable)) => Err(StoreError::Unavailable),
                (None, Some(End::Failed(why))) => Err(StoreError::Remote(why.to_string())),
                (None, Some(End::Complete)) | (None, None) => {
                    unreachable!(
                        "a fill completes only after it has a source; waited for one of them"
                    )
                }
            };
        }
        Err(StoreError::Remote(format!(
            "S3 read of {key}: the object changed under {ATTEMPTS} attempts"
        )))
    }

    /// Serves an object that is not cached straight from S3: the fill's own body to a reader
    /// of the whole object if it is still there, else a GET of exactly the range wanted, only
    /// if the object is still the one the fill saw.
    async fn stream_through(
        &self,
        key: &Key,
        options: &GetOptions,
        through: ThroughBody,
    ) -> Result<Through, StoreError> {
        let ThroughBody { meta, reason, body } = through;
        let read = |read| Ok(Through::Read(read));
        match options
            .conditions
            .evaluate(meta.etag.as_deref(), meta.modified)
        {
            Verdict::Serve => {}
            Verdict::NotModified => return read(Read::NotModified(meta)),
            Verdict::PreconditionFailed => return read(Read::PreconditionFailed),
        }
        let span = match options.range {
            None => 0..meta.len,
            Some(range) => match range.resolve(meta.len) {
                Some(span) => span,
                None => return read(Read::RangeNotSatisfiable(meta.len)),
            },
        };
        self.inner
            .metrics
            .stream_through
            .with_label_values(&[reason])
            .inc();
        if options.range.is_none() {
            let taken = body.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(body) = taken {
                let object = Object {
                    meta,
                    body,
                    tier: Tier::S3,
                };
                return read(Read::Found { object, span });
            }
        }
        let own = GetOptions {
            range: options.range,
            conditions: meta
                .etag
                .as_deref()
                .map(Conditions::if_match)
                .unwrap_or_default(),
        };
        match self.inner.remote.get(key, &own).await? {
            Fetch::Found(fetched) => read(Read::Found {
                object: Object {
                    meta: fetched.meta,
                    body: fetched.body,
                    tier: Tier::S3,
                },
                span: fetched.span,
            }),
            Fetch::Missing => read(Read::Missing),
            Fetch::PreconditionFailed => Err(StoreError::Remote(format!(
                "S3 object {key} changed while it was being read"
            ))),
            Fetch::NotModified | Fetch::RangeNotSatisfiable => Err(StoreError::Remote(format!(
                "S3 answered a read of {key} at {span:?} without its bytes"
            ))),
        }
    }

    /// Joins the fill running for `key`, or starts one. `None`: after a miss, the key is on
    /// disk now. A fill that has ended is not joined: its answer was for its own readers.
    fn join_or_start(
        &self,
        key: &Key,
        ask: Ask<'_>,
        max_object_size: Option<u64>,
    ) -> Option<(watch::Receiver<Progress>, bool)> {
        let mut fills = self.inner.lock();
        if let Some(fill) = fills.get(key) {
            // Nor is one that a write or delete of the key overtook (it will not commit): a
            // request made after a delete must not be served the deleted object's bytes.
            let live = fill.progress.borrow().end.is_none()
                && !self.inner.disk.changed_since(key, fill.order);
            if live {
                return Some((fill.progress.clone(), true));
            }
        }
        // The ticket orders the fill after every change made so far: a write or delete of
        // the key from now on keeps the fill from committing. A miss fills only a key that is
        // still absent; a revalidation may replace the copy it confirms.
        let (ticket, if_none_match) = match ask {
            Ask::Miss => (self.inner.disk.begin_fill_if_absent(key)?, None),
            Ask::Revalidate(etag) => (self.inner.disk.begin_fill(), etag.map(str::to_string)),
        };
        let (tx, rx) = watch::channel(Progress::default());
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        fills.insert(
            key.clone(),
            Fill {
                id,
                progress: rx.clone(),
                order: ticket.order(),
            },
        );
        drop(fills);
        let job = FillJob {
            key: key.clone(),
            id,
            ticket,
            if_none_match,
            max_object_size,
        };
        // Spawned, not awaited: the fill belongs to no request, so no request's cancellation
        // can stop it. At most one task per distinct key being missed, so this is bounded by
        // the requests in flight.
        tokio::spawn(run_fill(self.inner.clone(), job, tx));
        Some((rx, false))
    }
}

/// One fill, as started.
struct FillJob {
    key: Key,
    id: u64,
    ticket: FillTicket,
    /// A revalidation's local ETag: S3 answers 304 if its object still has it.
    if_none_match: Option<String>,
    /// Larger objects are streamed through, not cached.
    max_object_size: Option<u64>,
}

impl<B> Inner<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Fill>> {
        // The map is only inserted into and removed from: a poisoned lock is still consistent.
        self.fills.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn run_fill<B: Backend>(inner: Arc<Inner<B>>, job: FillJob, tx: watch::Sender<Progress>) {
    let end = fill(&inner, &job, &tx).await;
    let key = &job.key;
    if let End::Failed(why) = &end {
        // Before S3 answered, the failure goes to every waiting request as an error, and their
        // front reports it; after, the readers only see their body end, so it is logged here.
        if tx.borrow().source.is_some() {
            tracing::warn!(key = %key, error = %why, "read-through from S3 failed mid-body; nothing cached");
        }
    }
    tx.send_modify(|p| p.end = Some(end));
    let mut fills = inner.lock();
    if fills.get(key).is_some_and(|f| f.id == job.id) {
        fills.remove(key);
    }
}

async fn fill<B: Backend>(
    inner: &Arc<Inner<B>>,
    job: &FillJob,
    tx: &watch::Sender<Progress>,
) -> End {
    let (key, ticket) = (&job.key, &job.ticket);
    let failed = |e: &dyn std::fmt::Display| End::Failed(e.to_string().into());
    let options = GetOptions {
        range: None,
        conditions: Conditions {
            if_none_match: job.if_none_match.clone(),
            ..Conditions::default()
        },
    };
    let fetched = match inner.remote.get(key, &options).await {
        Ok(Fetch::Found(fetched)) => fetched,
        Ok(Fetch::Missing) => {
            drop_local_copy(inner, key, ticket).await;
            return End::Missing;
        }
        Ok(Fetch::NotModified) if job.if_none_match.is_some() => {
            return End::NotModified(job.if_none_match.as_deref().unwrap_or_default().into())
        }
        Ok(Fetch::NotModified | Fetch::PreconditionFailed | Fetch::RangeNotSatisfiable) => {
            return failed(&"S3 answered a whole-object GET without the object")
        }
        Err(StoreError::Unavailable) => return End::Unavailable,
        Err(e) => return failed(&e),
    };
    let meta = fetched.meta.clone();
    // The copy keeps the origin's ETag, attributes and date, so it reads the same as S3's
    // object from every tier and every node.
    let entry_meta = EntryMeta {
        attrs: meta.attrs.clone(),
        etag: meta
            .etag
            .clone()
            .map_or(EtagSource::None, EtagSource::Known),
        modified: Some(meta.modified),
    };
    let too_large = job.max_object_size.is_some_and(|max| meta.len > max);
    let spool = match too_large {
        true => Err("too_large"),
        false => match inner.disk.spool_with(key, meta.len, entry_meta).await {
            Ok(spool) => Ok(spool),
            Err(e) => {
                if !matches!(e, StoreError::Full { .. }) {
                    tracing::warn!(key = %key, error = %e, "disk tier cannot take an S3 object; serving it uncached");
                }
                Err("no_room")
            }
        },
    };
    let spool = match spool {
        Ok(spool) => spool,
        Err(reason) => {
            // Whatever is local is older than this object: drop it rather than confirm it
            // again on every read.
            drop_local_copy(inner, key, ticket).await;
            return End::StreamThrough(ThroughBody {
                meta,
                reason,
                body: Arc::new(Mutex::new(Some(fetched.body))),
            });
        }
    };
    let mut spool = spool.with_segments(SEGMENT);
    let (wanted_tx, wanted) = mpsc::unbounded_channel();
    tx.send_modify(|p| {
        p.source = Some(Source {
            meta: meta.clone(),
            file: spool.file(),
            body_offset: spool.body_offset(),
            wanted: wanted_tx,
        });
        p.filled = vec![0; segment_count(meta.len)];
    });
    // Small entries also go to memory once committed; keep a copy as they pass.
    let mut keep = inner
        .local
        .memory()
        .accepts(meta.len)
        .then(|| vec![0u8; meta.len as usize]);
    let downloads = Downloads {
        inner: inner.clone(),
        key: key.clone(),
        meta: meta.clone(),
        claims: Arc::new(Claims::new(segment_count(meta.len))),
    };
    if let Err(why) = downloads
        .run(fetched.body, &mut spool, tx, wanted, keep.as_deref_mut())
        .await
    {
        return failed(&why);
    }
    if spool.written() != meta.len {
        return failed(&format!(
            "S3 body ended after {} of {} bytes",
            spool.written(),
            meta.len
        ));
    }
    if let Some(expected) = meta.crc32c {
        if spool.crc32c() != expected {
            return failed(&format!(
                "S3 object checksum mismatch: crc32c {:08x}, metadata says {expected:08x}",
                spool.crc32c()
            ));
        }
    }
    tx.send_modify(|p| p.verified = true);
    let (header, version) = match spool.finish(Commit::Fill(ticket.order())).await {
        Ok((header, Some(version))) => (header, version),
        // A client wrote or deleted the key while we filled it: that is newer, ours is dropped
        // (the readers of this fill got S3's bytes, which were current when they asked).
        Ok((_, None)) => {
            tracing::info!(key = %key, "the key was written or deleted during its fill; fill not cached");
            return End::Complete;
        }
        Err(e) => return failed(&e),
    };
    // Tagged with the version just committed: if anything changes the key before (or after)
    // the copy is in memory, the copy is never served.
    match keep {
        Some(data) => {
            let data = Bytes::from(data);
            inner
                .local
                .keep_in_memory(key, data, header.meta(), version)
                .await
        }
        None => inner.local.drop_memory_copy(key).await,
    }
    End::Complete
}

fn segment_count(len: u64) -> usize {
    len.div_ceil(SEGMENT).max(1) as usize
}

/// Which segments of a fill some download has taken on: each is fetched by one download only.
struct Claims(Mutex<Vec<bool>>);

impl Claims {
    fn new(segments: usize) -> Claims {
        Claims(Mutex::new(vec![false; segments]))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<bool>> {
        // Flags only ever set: a poisoned lock is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes segment `index` on; false if another download has it.
    fn claim(&self, index: usize) -> bool {
        let mut claims = self.lock();
        !std::mem::replace(&mut claims[index], true)
    }

    fn is_claimed(&self, index: usize) -> bool {
        self.lock()[index]
    }

    fn first_unclaimed(&self) -> Option<usize> {
        self.lock().iter().position(|claimed| !claimed)
    }
}

/// Body bytes of one segment, from a download on their way to the spool: the buffers S3's
/// body arrived in, end to end from `at` (never copied into one).
struct Batch {
    at: u64,
    chunks: Vec<Bytes>,
}

impl Batch {
    fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

/// The downloads of one fill: the first GET from the start, and ranged GETs started where
/// readers wait. They send their batches to the fill, the spool's only writer.
struct Downloads<B> {
    inner: Arc<Inner<B>>,
    key: Key,
    meta: ObjectMeta,
    claims: Arc<Claims>,
}

impl<B: Backend> Downloads<B> {
    /// Writes the whole body to `spool` (and `keep`), publishing each segment's progress, until
    /// every byte is there or a download fails.
    async fn run(
        &self,
        first: ByteStream,
        spool: &mut Spool,
        tx: &watch::Sender<Progress>,
        mut wanted: mpsc::UnboundedReceiver<usize>,
        mut keep: Option<&mut [u8]>,
    ) -> Result<(), String> {
        let len = self.meta.len;
        let (batches_tx, mut batches) = mpsc::channel::<Batch>(BATCHES_IN_FLIGHT);
        let mut running = JoinSet::new();
        self.claims.claim(0);
        running.spawn(self.download(0, Some(first), batches_tx.clone()));
        let mut waiting = BTreeSet::new();
        let mut write = async |batch: Batch, spool: &mut Spool| -> Result<(), String> {
            let n = batch.len();
            if let Some(keep) = keep.as_deref_mut() {
                let mut at = batch.at as usize;
                for chunk in &batch.chunks {
                    keep[at..][..chunk.len()].copy_from_slice(chunk);
                    at += chunk.len();
                }
            }
            let index = (batch.at / SEGMENT) as usize;
            spool
                .write_chunks_at(batch.at, batch.chunks.clone())
                .await
                .map_err(|e| e.to_string())?;
            tx.send_modify(|p| {
                p.filled[index] += n as u64;
                p.recent.push(batch.at, &batch.chunks);
            });
            Ok(())
        };
        while spool.written() < len {
            tokio::select! {
                // A reader waiting is rare and cheap to handle: first, or a steady stream of
                // batches would keep it waiting. A download's end comes last; its batches may
                // still be queued then (drained below when it was the last one).
                biased;
                Some(index) = wanted.recv() => {
                    waiting.insert(index);
                    self.start_waiting(&mut waiting, &mut running, &batches_tx, tx);
                }
                Some(batch) = batches.recv() => write(batch, spool).await?,
                Some(ended) = running.join_next() => {
                    ended.map_err(|e| format!("S3 download task: {e}"))??;
                    if running.is_empty() {
                        while let Ok(batch) = batches.try_recv() {
                            write(batch, spool).await?;
                        }
                        // Every download goes on until it meets a claimed segment, so nothing
                        // is left; if something were, fetch it rather than fail (and if nothing
                        // is left to fetch, the check below fails the fill).
                        if spool.written() < len {
                            waiting.extend(self.claims.first_unclaimed());
                        }
                    }
                    self.start_waiting(&mut waiting, &mut running, &batches_tx, tx);
                    if running.is_empty() && spool.written() < len {
                        return Err(format!(
                            "S3 downloads ended with {} of {len} bytes",
                            spool.written()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts a ranged download at each segment readers wait for, unless one is on it or is
    /// about to get there, while fewer than [`MAX_DOWNLOADS`] run.
    fn start_waiting(
        &self,
        waiting: &mut BTreeSet<usize>,
        running: &mut JoinSet<Result<(), String>>,
        batches: &mpsc::Sender<Batch>,
        tx: &watch::Sender<Progress>,
    ) {
        // Without an ETag a ranged GET could return bytes of another version of the object.
        if self.meta.etag.is_none() {
            waiting.clear();
            return;
        }
        let filled = tx.borrow().filled.clone();
        waiting.retain(|&index| {
            if self.claims.is_claimed(index) {
                return false;
            }
            // The download in the segment before is past its half: it gets there first.
            if index > 0 && self.claims.is_claimed(index - 1) && filled[index - 1] >= SEGMENT / 2 {
                return false;
            }
            if running.len() >= MAX_DOWNLOADS {
                // Asked again when a download ends.
                return true;
            }
            if self.claims.claim(index) {
                running.spawn(self.download(index as u64 * SEGMENT, None, batches.clone()));
            }
            false
        });
    }

    /// One download: from `start` (a claimed segment's start) through the following segments
    /// no other download has, resuming when S3 cuts it off. `body` is the fill's first GET, of
    /// the whole object; otherwise each segment is asked for with a GET of exactly its bytes,
    /// conditional on the fill's ETag, so that a download stopping where another began has not
    /// had S3 send bytes past it (an open-ended range would, up to the sockets' buffers: about
    /// two thirds more than the object in a 16-way ranged fill, measured).
    fn download(
        &self,
        start: u64,
        body: Option<ByteStream>,
        batches: mpsc::Sender<Batch>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let (inner, key, meta, claims) = (
            self.inner.clone(),
            self.key.clone(),
            self.meta.clone(),
            self.claims.clone(),
        );
        async move {
            let len = meta.len;
            let mut resumes = 0;
            let mut limit = segment_end((start / SEGMENT) as usize, len);
            // Where the body being read ends.
            let (mut body, mut asked_to) = match body {
                Some(body) => (body, len),
                None => {
                    inner.metrics.fill_downloads.inc();
                    (ranged_get(&inner, &key, &meta, start..limit).await?, limit)
                }
            };
            let mut pos = start;
            let mut batch = Vec::new();
            let mut batched = 0;
            let mut batch_at = pos;
            while pos < len {
                if pos == asked_to {
                    // Into a segment of its own: ask for it.
                    body = ranged_get(&inner, &key, &meta, pos..limit).await?;
                    asked_to = limit;
                }
                let mut chunk = match body.next().await {
                    Some(Ok(chunk)) => chunk,
                    // Cut off, with an error or by an early end: ask for the rest.
                    cut => {
                        let cause = match cut {
                            Some(Err(e)) => e.to_string(),
                            _ => "ended early".to_string(),
                        };
                        body = resume(&inner, &key, &meta, pos..asked_to, &mut resumes, &cause)
                            .await?;
                        continue;
                    }
                };
                while !chunk.is_empty() && pos < len {
                    let take = chunk.len().min((limit - pos) as usize);
                    batch.push(chunk.split_to(take));
                    batched += take;
                    pos += take as u64;
                    // A batch never spans two segments.
                    if batched >= BATCH || pos == limit {
                        let chunks = std::mem::take(&mut batch);
                        batches
                            .send(Batch {
                                at: batch_at,
                                chunks,
                            })
                            .await
                            .map_err(|_| "the fill ended".to_string())?;
                        batched = 0;
                        batch_at = pos;
                    }
                    if pos == limit && pos < len {
                        let next = (pos / SEGMENT) as usize;
                        if !claims.claim(next) {
                            // Another download has the rest from here.
                            return Ok(());
                        }
                        limit = segment_end(next, len);
                    }
                }
            }
            Ok(())
        }
    }
}

/// Drops the key's local copies after S3 said its object is gone or newer, unless the key
/// changed since the fill began (a client's write is newer than S3's answer).
async fn drop_local_copy<B>(inner: &Inner<B>, key: &Key, ticket: &FillTicket) {
    match inner.disk.discard_unchanged(key, ticket.order()).await {
        Ok(_) => {}
        Err(e) => tracing::warn!(key = %key, error = %e, "could not drop a stale local copy"),
    }
}

/// Asks S3 again for the `rest` of a body that was cut off: a ranged GET that only answers
/// with bytes if the object is still the one being filled (same ETag).
async fn resume<B: Backend>(
    inner: &Inner<B>,
    key: &Key,
    meta: &ObjectMeta,
    rest: std::ops::Range<u64>,
    resumes: &mut u32,
    cause: &str,
) -> Result<ByteStream, String> {
    let from = rest.start;
    if meta.etag.is_none() {
        return Err(format!("S3 body: {cause} (no ETag to resume by)"));
    }
    if *resumes >= MAX_RESUMES {
        return Err(format!(
            "S3 body: {cause} after {from} of {} bytes, {resumes} resumes already",
            meta.len
        ));
    }
    *resumes += 1;
    tracing::info!(key = %key, received = from, len = meta.len, error = %cause, "S3 body cut off; resuming with a ranged GET");
    ranged_get(inner, key, meta, rest)
        .await
        .map_err(|e| format!("S3 body: {cause}; its resume: {e}"))
}

/// A GET of the bytes `span` of `meta`'s object that answers with bytes only if the object is
/// still the one being filled (same ETag).
async fn ranged_get<B: Backend>(
    inner: &Inner<B>,
    key: &Key,
    meta: &ObjectMeta,
    span: std::ops::Range<u64>,
) -> Result<ByteStream, String> {
    let Some(etag) = &meta.etag else {
        return Err("no ETag to ask for the same object by".into());
    };
    let from = span.start;
    let options = GetOptions {
        range: Some(ByteRange::Bounded {
            first: span.start,
            last: span.end - 1,
        }),
        conditions: Conditions::if_match(etag),
    };
    match inner.remote.get(key, &options).await {
        Ok(Fetch::Found(rest)) if rest.span == span => Ok(rest.body),
        Ok(Fetch::Found(rest)) => Err(format!(
            "S3 answered a GET from {from} with bytes {:?} of {}",
            rest.span, rest.meta.len
        )),
        Ok(Fetch::PreconditionFailed) => Err("the object changed in S3 during its fill".into()),
        Ok(Fetch::Missing) => Err("the object was deleted from S3 during its fill".into()),
        Ok(Fetch::NotModified | Fetch::RangeNotSatisfiable) => {
            Err(format!("S3 refused a GET from {from}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Counts a request that joined another's fill, for as long as it reads from it.
struct WaiterGuard(Arc<Metrics>);

impl WaiterGuard {
    fn new(metrics: Arc<Metrics>) -> WaiterGuard {
        metrics.single_flight_waiters.inc();
        WaiterGuard(metrics)
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.0.single_flight_waiters.dec();
    }
}

/// A reader of a fill: follows its progress (see [`tail`]), and tells the fill which segment
/// it waits for. A span that includes the body's end ends only once the fill verified the
/// whole body.
struct FillProgress {
    progress: watch::Receiver<Progress>,
    source: Source,
    /// The segment this reader last told the fill it waits for.
    asked_for: Option<usize>,
    _waiter: Option<WaiterGuard>,
}

fn tail(
    progress: watch::Receiver<Progress>,
    source: Source,
    span: std::ops::Range<u64>,
    waiter: Option<WaiterGuard>,
) -> ByteStream {
    let spooled = Spooled {
        file: source.file.clone(),
        body_offset: source.body_offset,
        len: source.meta.len,
    };
    let progress = FillProgress {
        progress,
        source,
        asked_for: None,
        _waiter: waiter,
    };
    tail::tail(progress, spooled, span)
}

impl tail::Progress for FillProgress {
    fn look(&mut self, pos: u64) -> Look {
        let len = self.source.meta.len;
        let p = self.progress.borrow_and_update();
        let upto = p.readable_from(pos, len);
        if p.verified {
            // Everything verified is readable (a commit failing later changes nothing for
            // this reader).
            return Look::Readable {
                upto,
                complete: true,
            };
        }
        let why = match &p.end {
            None => {
                return Look::Readable {
                    upto,
                    complete: false,
                }
            }
            Some(End::Complete) => "S3 fill completed unverified".to_string(),
            Some(End::Failed(why)) => format!("S3 read failed: {why}"),
            Some(End::Missing | End::Unavailable | End::NotModified(_) | End::StreamThrough(_)) => {
                "S3 read failed".to_string()
            }
        };
        Look::Failed { upto, why }
    }

    async fn changed(&mut self) -> io::Result<()> {
        self.progress
            .changed()
            .await
            .map_err(|_| io::Error::other("S3 fill task ended unexpectedly"))
    }

    fn in_memory(&mut self, pos: u64, upto: u64) -> Option<Bytes> {
        self.progress.borrow().recent.at(pos, upto)
    }

    fn waiting_at(&mut self, pos: u64) {
        let segment = (pos / SEGMENT) as usize;
        if self.asked_for != Some(segment) {
            self.asked_for = Some(segment);
            // The fill is gone if this fails; `changed` reports it.
            let _ = self.source.wanted.send(segment);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::testing::{eventually, key, pattern, read_body, Local};

    #[test]
    fn recent_bytes_are_found_by_offset_cut_at_the_bound_and_kept_to_their_budget() {
        let chunk = |n: usize, fill: u8| Bytes::from(vec![fill; n]);
        let mut recent = Recent::default();
        // Two segments' downloads interleaved, an empty chunk among them.
        recent.push(0, &[chunk(100, 1), chunk(0, 9), chunk(50, 2)]);
        recent.push(SEGMENT, &[chunk(70, 3)]);
        assert_eq!(recent.at(0, 1000).unwrap(), chunk(100, 1));
        assert_eq!(recent.at(120, 1000).unwrap(), chunk(30, 2));
        // Never past what the reader may take (the held-back last byte, a span's end).
        assert_eq!(recent.at(120, 130).unwrap(), chunk(10, 2));
        assert!(recent.at(120, 120).is_none());
        assert_eq!(recent.at(SEGMENT + 69, SEGMENT + 70).unwrap(), chunk(1, 3));
        assert!(recent.at(150, 1000).is_none(), "not written yet");
        // Past the budget, the oldest go first; a reader that far behind reads the spool.
        let big = RECENT_BYTES / 4;
        for i in 0..4 {
            recent.push(2 * SEGMENT + (i * big) as u64, &[chunk(big, 4)]);
        }
        assert!(recent.bytes <= RECENT_BYTES);
        assert!(recent.at(0, 1000).is_none());
        assert!(recent.at(SEGMENT, SEGMENT + 70).is_none());
        assert!(recent.at(2 * SEGMENT, 3 * SEGMENT).is_some());
    }

    fn read_through(local: &Local) -> ReadThrough<crate::store::backend::fake::FakeBackend> {
        ReadThrough::new(
            local.backend.clone(),
            local.disk.clone(),
            local.memory.clone(),
            local.metrics.clone(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_fill_that_commits() {
        let local = Local::new().await;
        let rt = read_through(&local);
        let k = key(1);
        let data = pattern(1_500_000, 1);
        local.backend.insert(&k, data.clone());
        local.backend.hold(true);
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let rt = rt.clone();
                let k = k.clone();
                tokio::spawn(async move { read_body(rt.get(&k).await.unwrap().unwrap()).await })
            })
            .collect();
        let metrics = local.metrics.clone();
        eventually("two requests to join the first one's fill", || {
            metrics.single_flight_waiters.get() == 2
        })
        .await;
        local.backend.hold(false);
        for reader in readers {
            assert!(reader.await.unwrap().unwrap() == data);
        }
        assert_eq!(
            local.backend.calls("get"),
            1,
            "one backend GET for three misses"
        );
        let disk = local.disk.clone();
        eventually("the fill to commit", || disk.contains(&k)).await;
        // Committed and no longer joinable: the next read is a plain disk read.
        let done = rt.clone();
        eventually("the fill to end", || done.fills_in_flight() == 0).await;
        let again = rt.get(&k).await.unwrap().unwrap();
        assert_eq!(again.tier, Tier::Disk, "read from disk once committed");
        assert!(read_body(again).await.unwrap() == data);
        assert_eq!(local.backend.calls("get"), 1);
    }

    /// A request made after a delete of the key does not join the fill the delete overtook
    /// (whose bytes are from before it): it starts a fill of its own, which may commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_after_a_delete_does_not_join_the_fill_it_overtook() {
        let local = Local::new().await;
        let rt = read_through(&local);
        let k = key(8);
        let data = pattern(300_000, 8);
        local.backend.insert(&k, data.clone());
        local.backend.hold(true);
        let read = |rt: &ReadThrough<_>| {
            let (rt, k) = (rt.clone(), k.clone());
            tokio::spawn(async move { read_body(rt.get(&k).await.unwrap().unwrap()).await })
        };
        let before = read(&rt);
        let backend = local.backend.clone();
        eventually("the first fill to ask", || backend.calls("get") == 1).await;
        local.disk.delete(&k).await.unwrap();
        let after = read(&rt);
        eventually("a second fill to ask", || backend.calls("get") == 2).await;
        assert_eq!(
            local.metrics.single_flight_waiters.get(),
            0,
            "nobody joined"
        );
        local.backend.hold(false);
        assert!(before.await.unwrap().unwrap() == data);
        assert!(after.await.unwrap().unwrap() == data);
        let done = rt.clone();
        eventually("the fills to end", || done.fills_in_flight() == 0).await;
        assert!(
            local.disk.contains(&k),
            "the fill begun after the delete commits"
        );
    }

    #[tokio::test]
    async fn small_fills_land_in_memory_too() {
        let local = Local::new().await;
        let rt = read_through(&local);
        let k = key(2);
        local.backend.insert(&k, pattern(1000, 2));
        let object = rt.get(&k).await.unwrap().unwrap();
        assert_eq!(object.meta.etag, local.backend.meta(&k).unwrap().etag);
        assert!(read_body(object).await.unwrap() == pattern(1000, 2));
        let memory = local.memory.clone();
        for _ in 0..1000 {
            if memory.held(&k).await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("a small fill was not kept in memory");
    }

    /// A filled copy reads the same as S3's object: its ETag and date, from disk and after a
    /// restart, and from memory.
    #[tokio::test]
    async fn a_filled_copy_keeps_the_origins_etag_and_date() {
        let local = Local::new().await;
        let rt = read_through(&local);
        let (small, large) = (key(5), key(6));
        let origin_date = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        local.backend.insert(&small, pattern(1000, 5));
        local.backend.insert(&large, pattern(3_000_000, 6));
        for k in [&small, &large] {
            local.backend.set_modified(k, origin_date);
            read_body(rt.get(k).await.unwrap().unwrap()).await.unwrap();
            let disk = local.disk.clone();
            let k2 = (*k).clone();
            eventually("the fill to commit", || disk.contains(&k2)).await;
            let origin = local.backend.meta(k).unwrap();
            let copy = local.disk.head(k).await.unwrap().unwrap();
            assert_eq!(copy.etag, origin.etag);
            assert_eq!(copy.modified, origin_date);
        }
        let memory = local.memory.clone();
        for _ in 0..1000 {
            if let Some(entry) = memory.held(&small).await {
                assert_eq!(entry.meta.etag, local.backend.meta(&small).unwrap().etag);
                assert_eq!(entry.meta.modified, origin_date);
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the small fill was not kept in memory");
    }

    #[tokio::test]
    async fn misses_and_failures_are_reported_as_such() {
        let local = Local::new().await;
        let rt = read_through(&local);
        assert!(rt.get(&key(3)).await.unwrap().is_none());
        local.backend.fail_next(1);
        assert!(matches!(rt.get(&key(3)).await, Err(StoreError::Remote(_))));
        assert!(!local.disk.contains(&key(3)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_body_is_resumed_from_where_it_stopped() {
        let local = Local::new().await;
        let rt = read_through(&local);
        let k = key(4);
        let data = pattern(1_000_000, 4);
        local.backend.insert(&k, data.clone());
        // Cut twice, mid-chunk and mid-batch: two ranged resumes carry the rest.
        local.backend.cut_bodies(2, 300_001);
        let object = rt.get(&k).await.unwrap().unwrap();
        assert!(read_body(object).await.unwrap() == data, "whole, in order");
        assert_eq!(local.backend.calls("get"), 3);
        let disk = local.disk.clone();
        eventually("the fill to commit", || disk.contains(&k)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_that_persists_fails_every_reader_and_commits_nothing() {
        let local = Local::new().await;
        let rt = read_through(&local);
        let k = key(5);
        let data = pattern(1_000_000, 5);
        local.backend.insert(&k, data.clone());
        local.backend.cut_bodies(100, 100_000);
        let object = rt.get(&k).await.unwrap().unwrap();
        assert!(
            read_body(object).await.is_err(),
            "a failed fill ends in an error"
        );
        assert_eq!(
            local.backend.calls("get"),
            1 + MAX_RESUMES as usize,
            "the GET and its resumes, no more"
        );
        // The fill is over (its reader saw the end): nothing was committed.
        assert!(!local.disk.contains(&k));
        local.backend.cut_bodies(0, 0);
        let done = rt.clone();
        eventually("the failed fill to end", || done.fills_in_flight() == 0).await;
        let object = rt.get(&k).await.unwrap().unwrap();
        assert!(read_body(object).await.unwrap() == data);
    }

    /// Reads `span` of `key` through `rt` after a miss.
    async fn read_span(
        rt: &ReadThrough<crate::store::backend::fake::FakeBackend>,
        k: &Key,
        span: std::ops::Range<u64>,
    ) -> Vec<u8> {
        let options = GetOptions {
            range: Some(ByteRange::Bounded {
                first: span.start,
                last: span.end - 1,
            }),
            ..GetOptions::default()
        };
        match rt.read(k, &options, Ask::Miss, None).await.unwrap() {
            Through::Read(Read::Found { object, span: got }) => {
                assert_eq!(got, span);
                read_body(object).await.unwrap()
            }
            other => panic!("expected the range, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_far_ahead_of_the_fill_is_downloaded_on_its_own_and_each_byte_once() {
        let local = Local::new().await;
        let rt = read_through(&local);
        let k = key(6);
        let len = 3 * SEGMENT as usize + 1000;
        let data = pattern(len, 6);
        local.backend.insert(&k, data.clone());
        // The fill's first GET goes slow half way into the first segment.
        local.backend.stall_next_body(SEGMENT / 2);
        let first = read_span(&rt, &k, 0..1).await;
        assert_eq!(first, data[..1]);
        // A range in the third segment is served while the first GET is stuck: by a ranged
        // GET of its own, of exactly that segment.
        let far = 2 * SEGMENT + 10..2 * SEGMENT + 5000;
        let got = read_span(&rt, &k, far.clone()).await;
        assert!(got == data[far.start as usize..far.end as usize]);
        assert_eq!(
            local.backend.served_spans()[..2],
            [0..len as u64, 2 * SEGMENT..3 * SEGMENT]
        );
        assert_eq!(local.metrics.fill_downloads.get(), 1);
        // Once the first GET goes on, it stops where the other download began, and that one
        // asked for the last segment on its own: nothing is asked for twice, nothing is
        // missing, and the entry is whole.
        local.backend.release_stalls();
        let disk = local.disk.clone();
        eventually("the fill to commit", || disk.contains(&k)).await;
        assert_eq!(
            local.backend.served_spans(),
            vec![
                0..len as u64,
                2 * SEGMENT..3 * SEGMENT,
                3 * SEGMENT..len as u64
            ]
        );
        let object = local.disk.get(&k).await.unwrap().unwrap();
        assert!(read_body(object).await.unwrap() == data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_ranged_readers_of_a_cold_object_get_equal_bytes() {
        let local = Local::new().await;
        let rt = read_through(&local);
        let k = key(7);
        let len = 5 * SEGMENT as usize + 12345;
        let data = Arc::new(pattern(len, 7));
        local.backend.insert(&k, data.to_vec());
        // A runner's parallel download: a probe, then every segment at once, in any order.
        assert_eq!(read_span(&rt, &k, 0..1).await, data[..1]);
        let mut reads = JoinSet::new();
        for index in [5u64, 2, 0, 4, 1, 3] {
            let (rt, k, data) = (rt.clone(), k.clone(), data.clone());
            reads.spawn(async move {
                let span = index * SEGMENT..((index + 1) * SEGMENT).min(len as u64);
                let got = read_span(&rt, &k, span.clone()).await;
                assert!(
                    got == data[span.start as usize..span.end as usize],
                    "{index}"
                );
            });
        }
        while let Some(done) = reads.join_next().await {
            done.unwrap();
        }
        let disk = local.disk.clone();
        eventually("the fill to commit", || disk.contains(&k)).await;
        let object = local.disk.get(&k).await.unwrap().unwrap();
        assert!(read_body(object).await.unwrap() == *data);
        assert!(local.metrics.fill_downloads.get() <= (MAX_DOWNLOADS - 1) as u64);
    }
}
