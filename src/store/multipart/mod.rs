//! Multipart uploads with S3's semantics, kept on the disk tier until they complete.
//!
//! [`Multipart`] is what an S3 front calls for CreateMultipartUpload, UploadPart, ListParts,
//! ListMultipartUploads, AbortMultipartUpload and CompleteMultipartUpload. Parts are written to
//! disk as they arrive ([`DiskTier::receive_part`]): bounded memory, space admitted and reserved
//! in the disk tier's accounting, never evicted while the upload is open. A completion is
//! checked as S3 checks it, then assembled into one entry of the disk tier
//! ([`DiskTier::assemble`], the bytes copied in the kernel) with the multipart ETag, and the
//! parts are removed. The caller gets the entry's location and its [`PartLayout`], so that an
//! upload of the entry to S3 keeps the client's part boundaries and gets the same ETag.
//!
//! # On disk
//!
//! `<disk.dir>/.multipart/<upload id>/` holds `manifest` (an entry header with no body: the
//! key, the attributes, and as its date the upload's initiation) and one `part-NNNNN` file per
//! part (see [`crate::store::disk::parts`]). Both are written to a temp file, fsynced and renamed
//! into place, and the directory fsynced, before the request is acknowledged, so an open upload
//! survives a restart: [`Multipart::open`] reads them back, re-reserves the parts' space, and
//! removes what is incomplete, damaged or older than `max_age`. The dot-directory is skipped by
//! the disk index rebuild and cannot collide with a namespace.
//!
//! # Concurrency
//!
//! Parts of one upload may arrive concurrently; a part number uploaded again replaces the
//! earlier part (the last to finish wins). The state lives under one mutex that is held only for
//! quick work (a rename at most). Once a completion has been checked the upload is *completing*:
//! parts, aborts and other completions of it are refused ([`MultipartError::Busy`]) until the
//! assembly ends. A completion that fails on the disk (no space, I/O) leaves the upload open, as
//! S3 does, so the client may retry it. The assembly runs in its own task, so a client that goes
//! away mid-completion cannot leave the upload stuck half-way.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::backend::{multipart_etag, unquote, PartLayout};
use super::disk::parts::{AssemblyMeta, CopyMethod, CopyStats, PartSource, StoredPart};
use super::disk::{DiskTier, Sealed};
use super::entry_file::EntryHeader;
use super::{ByteStream, Key, Namespace, ObjectAttrs, ObjectMeta, StoreError};
use crate::checksum::ChecksumAlgorithm;

mod checksums;
pub use checksums::{ListedChecksums, UploadChecksum};

/// The highest part number S3 accepts (the lowest is 1).
pub const MAX_PART_NUMBER: u32 = 10_000;
const MANIFEST: &str = "manifest";
const MANIFEST_TEMP: &str = "manifest.tmp";
/// Random bytes in an upload id (shown as hex): unguessable, since the id is all a client
/// needs to add parts to someone else's upload.
const UPLOAD_ID_BYTES: usize = 16;

/// Limits of multipart uploads.
#[derive(Debug, Clone)]
pub struct MultipartSettings {
    /// Every part but the last of a completed upload must be at least this large (S3: 5 MiB).
    pub min_part_size: u64,
    /// Largest part accepted (S3: 5 GiB).
    pub max_part_size: u64,
    /// Most uploads open at once; creating one more is refused.
    pub max_open_uploads: usize,
    /// Uploads not completed within this time after their creation are aborted and their space
    /// freed (S3's AbortIncompleteMultipartUpload lifecycle rule).
    pub max_age: Duration,
    /// How often [`Multipart::start`]'s task looks for uploads past `max_age`.
    pub sweep_interval: Duration,
    /// How assembly moves bytes (the kernel's `copy_file_range` unless measuring the fallback).
    pub copy: CopyMethod,
}

impl Default for MultipartSettings {
    fn default() -> Self {
        MultipartSettings {
            min_part_size: 5 << 20,
            max_part_size: 5 << 30,
            max_open_uploads: 1000,
            max_age: Duration::from_secs(24 * 3600),
            sweep_interval: Duration::from_secs(600),
            copy: CopyMethod::Kernel,
        }
    }
}

/// Why a multipart operation failed. The comment on each variant names the S3 error code it
/// stands for.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// `NoSuchUpload` (404): unknown id, an id of another key, or an upload completed or
    /// aborted already.
    #[error("no such upload")]
    NoSuchUpload,
    /// `OperationAborted` (409): the upload is being completed.
    #[error("the upload is being completed")]
    Busy,
    /// `InvalidArgument` (400): part numbers run from 1 to 10000.
    #[error("part number {0} is not between 1 and {MAX_PART_NUMBER}")]
    InvalidPartNumber(u32),
    /// `EntityTooLarge` (400).
    #[error("a part of {size} bytes is larger than the largest allowed, {max}")]
    EntityTooLarge { size: u64, max: u64 },
    /// `SlowDown` (503): the open-uploads limit is reached.
    #[error("too many open multipart uploads (at most {0})")]
    TooManyUploads(usize),
    /// `MalformedXML` (400): a completion must list at least one part.
    #[error("the completion lists no parts")]
    NoParts,
    /// `InvalidPartOrder` (400): parts must be listed in ascending order, each once.
    #[error("parts are not listed in ascending order")]
    InvalidPartOrder,
    /// `InvalidPart` (400): the part was not uploaded, or its ETag (or checksum) is not the
    /// one listed.
    #[error("part {0} was not uploaded or its ETag or checksum does not match")]
    InvalidPart(u32),
    /// `BadDigest` (400): the object's checksum is not the one the completion gave.
    #[error("the object's checksum is not the one given")]
    BadDigest,
    /// `EntityTooSmall` (400): a part other than the last is below the minimum size.
    #[error("part {part_number} is {size} bytes, below the minimum of {min}")]
    EntityTooSmall {
        part_number: u32,
        size: u64,
        min: u64,
    },
    /// The disk tier failed: `Full` (no space even after eviction), a short or aborted body,
    /// or an I/O error; mapped as the front maps these for a single PUT.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<io::Error> for MultipartError {
    fn from(e: io::Error) -> Self {
        MultipartError::Store(StoreError::Io(e))
    }
}

/// An upload in progress, as ListMultipartUploads shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSummary {
    pub key: Key,
    pub upload_id: String,
    pub initiated: SystemTime,
}

/// A part, as ListParts shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSummary {
    pub part_number: u32,
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    pub size: u64,
    pub modified: SystemTime,
    /// The part's raw checksum, in an upload created with one (unknown for a part received
    /// before a restart, until the completion reads it back).
    pub checksum: Option<Vec<u8>>,
}

/// What storing a part gave: its ETag (hex MD5, no quotes), and in an upload created with a
/// checksum algorithm the part's raw checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReceipt {
    pub etag: String,
    pub checksum: Option<(ChecksumAlgorithm, Vec<u8>)>,
}

/// A completed upload: one entry of the disk tier.
pub struct Completed {
    /// The assembled entry, sealed: the caller uploads it (write-through) and commits it.
    pub sealed: Sealed,
    /// What a reader of the entry learns: the multipart ETag, the attributes, length and CRC.
    pub meta: ObjectMeta,
    /// The client's part sizes, in order: upload the entry with these boundaries and the
    /// backend computes the same ETag.
    pub layout: PartLayout,
    pub stats: CopyStats,
}

/// Counts for the metrics module.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MultipartUsage {
    pub uploads: u64,
    pub parts: u64,
    /// Body bytes of the parts held on disk.
    pub bytes: u64,
}

/// The multipart uploads of one disk tier; cheap to clone.
#[derive(Clone)]
pub struct Multipart {
    inner: Arc<Inner>,
}

struct Inner {
    disk: DiskTier,
    settings: MultipartSettings,
    dir: PathBuf,
    uploads: Mutex<HashMap<String, Upload>>,
    /// Uploads completed lately, so that a retried completion is answered as the first was.
    completed: Mutex<CompletedUploads>,
}

/// How many completed upload ids are remembered, and for how long: long enough for an SDK's
/// retries of a completion whose answer was lost (seconds to minutes), bounded in memory.
const COMPLETED_REMEMBERED: usize = 4096;
const COMPLETED_FOR: Duration = Duration::from_secs(15 * 60);

/// The uploads completed lately, oldest first.
#[derive(Default)]
struct CompletedUploads {
    by_id: HashMap<String, Done>,
    order: std::collections::VecDeque<(std::time::Instant, String)>,
}

struct Done {
    key: Key,
    /// What the completion stored; `None` while its caller is still storing it.
    stored: Option<ObjectMeta>,
}

impl CompletedUploads {
    fn forget_old(&mut self, now: std::time::Instant) {
        while let Some((at, id)) = self.order.front() {
            if self.order.len() <= COMPLETED_REMEMBERED && now.duration_since(*at) < COMPLETED_FOR {
                break;
            }
            self.by_id.remove(id);
            self.order.pop_front();
        }
    }
}

/// What a completion did.
pub enum Completion {
    /// The parts were assembled: the caller stores the entry, then calls
    /// [`Multipart::settle`].
    Assembled(Box<Completed>),
    /// The upload had been completed already, and this is what it stored: a retried
    /// completion (its first answer lost) gets the same answer, as S3 gives it.
    Repeated(ObjectMeta),
}

struct Upload {
    key: Key,
    attrs: ObjectAttrs,
    /// The checksum the object gets from its parts', if the upload was created with one.
    checksum: Option<UploadChecksum>,
    initiated: SystemTime,
    parts: BTreeMap<u32, StoredPart>,
    /// Each part's checksum (with [`Upload::checksum`]), as computed when it arrived; not kept
    /// across a restart (the completion reads those parts back).
    part_checksums: HashMap<u32, Vec<u8>>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Its manifest is being written: not yet known to any client.
    Creating,
    Open,
    Completing,
}

impl Multipart {
    /// Loads the uploads left open by an earlier run (open the disk tier first): their parts'
    /// space is reserved again; uploads that are incomplete, damaged, past `max_age`, or no
    /// longer fit are removed.
    pub async fn open(disk: DiskTier, settings: MultipartSettings) -> io::Result<Multipart> {
        tokio::task::spawn_blocking(move || {
            let dir = disk.multipart_dir();
            std::fs::create_dir_all(&dir)?;
            let uploads = load_uploads(&disk, &dir, settings.max_age)?;
            Ok(Multipart {
                inner: Arc::new(Inner {
                    disk,
                    settings,
                    dir,
                    uploads: Mutex::new(uploads),
                    completed: Mutex::new(CompletedUploads::default()),
                }),
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    pub fn settings(&self) -> &MultipartSettings {
        &self.inner.settings
    }

    /// Starts an upload of `key`; `attrs` are the object's once it completes, and `checksum`
    /// how its checksum is made of its parts'. Durable when this returns.
    pub async fn create(
        &self,
        key: &Key,
        attrs: ObjectAttrs,
        checksum: Option<UploadChecksum>,
    ) -> Result<String, MultipartError> {
        let upload_id = new_upload_id()?;
        let initiated = SystemTime::now();
        {
            let mut uploads = self.inner.lock();
            let max = self.inner.settings.max_open_uploads;
            if uploads.len() >= max {
                return Err(MultipartError::TooManyUploads(max));
            }
            uploads.insert(
                upload_id.clone(),
                Upload {
                    key: key.clone(),
                    attrs: attrs.clone(),
                    checksum,
                    initiated,
                    parts: BTreeMap::new(),
                    part_checksums: HashMap::new(),
                    state: State::Creating,
                },
            );
        }
        let manifest = EntryHeader {
            body_len: 0,
            modified: initiated,
            ..EntryHeader::unsealed(key, UploadChecksum::in_manifest(checksum, &attrs))
        }
        .encode();
        let dir = self.inner.upload_dir(&upload_id);
        let parent = self.inner.dir.clone();
        let written = tokio::task::spawn_blocking(move || write_manifest(&parent, &dir, &manifest))
            .await
            .map_err(io::Error::other)
            .and_then(|written| written);
        let mut uploads = self.inner.lock();
        match written {
            Ok(()) => {
                if let Some(upload) = uploads.get_mut(&upload_id) {
                    upload.state = State::Open;
                }
                Ok(upload_id)
            }
            Err(e) => {
                uploads.remove(&upload_id);
                Err(e.into())
            }
        }
    }

    /// Stores part `part_number` of an upload of `key` from exactly `len` bytes of `body`,
    /// replacing any earlier part of that number; returns the part's ETag (its hex MD5), and
    /// its checksum in an upload created with one. Durable when this returns.
    pub async fn put_part(
        &self,
        key: &Key,
        upload_id: &str,
        part_number: u32,
        len: u64,
        body: ByteStream,
    ) -> Result<PartReceipt, MultipartError> {
        if !(1..=MAX_PART_NUMBER).contains(&part_number) {
            return Err(MultipartError::InvalidPartNumber(part_number));
        }
        let max = self.inner.settings.max_part_size;
        if len > max {
            return Err(MultipartError::EntityTooLarge { size: len, max });
        }
        // Refuse before reading a body that could not be kept.
        let algorithm = self
            .inner
            .open_upload(&mut self.inner.lock(), key, upload_id)?
            .checksum
            .map(|c| c.algorithm);
        // The part's checksum, computed on the way to the disk.
        let hasher = algorithm.map(|a| Arc::new(Mutex::new(a.hasher())));
        let body: ByteStream = match &hasher {
            Some(hasher) => {
                let hasher = hasher.clone();
                Box::pin(futures_util::StreamExt::inspect(body, move |chunk| {
                    if let Ok(data) = chunk {
                        hasher
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .update(data);
                    }
                }))
            }
            None => body,
        };
        let received = self.inner.disk.receive_part(len, body).await?;
        let etag = received.info().etag();
        let checksum = hasher.map(|hasher| {
            let hasher = Arc::try_unwrap(hasher)
                .ok()
                .expect("the body stream, and its clone of the hasher, are gone")
                .into_inner()
                .unwrap_or_else(|e| e.into_inner());
            hasher.finalize()
        });
        let kept = checksum.clone();
        let inner = self.inner.clone();
        let key = key.clone();
        let upload_id = upload_id.to_string();
        tokio::task::spawn_blocking(move || -> Result<(), MultipartError> {
            let dir = inner.upload_dir(&upload_id);
            let replaced = {
                let mut uploads = inner.lock();
                let upload = inner.open_upload(&mut uploads, &key, &upload_id)?;
                let part = received.install(dir.join(part_file_name(part_number)))?;
                match kept {
                    Some(sum) => upload.part_checksums.insert(part_number, sum),
                    None => upload.part_checksums.remove(&part_number),
                };
                upload.parts.insert(part_number, part)
            };
            // The replaced part's file is gone (renamed over); this frees its space.
            drop(replaced);
            std::fs::File::open(&dir)?.sync_all()?;
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
        Ok(PartReceipt {
            etag,
            checksum: algorithm.zip(checksum),
        })
    }

    /// The checksum an upload was created with.
    pub fn upload_checksum(
        &self,
        key: &Key,
        upload_id: &str,
    ) -> Result<Option<UploadChecksum>, MultipartError> {
        let mut uploads = self.inner.lock();
        Ok(self
            .inner
            .known_upload(&mut uploads, key, upload_id)?
            .checksum)
    }

    /// The parts of an upload of `key`, by part number.
    pub fn list_parts(
        &self,
        key: &Key,
        upload_id: &str,
    ) -> Result<Vec<PartSummary>, MultipartError> {
        let mut uploads = self.inner.lock();
        let upload = self.inner.known_upload(&mut uploads, key, upload_id)?;
        Ok(upload
            .parts
            .iter()
            .map(|(&part_number, part)| PartSummary {
                part_number,
                etag: part.info.etag(),
                size: part.info.len,
                modified: part.modified,
                checksum: upload.part_checksums.get(&part_number).cloned(),
            })
            .collect())
    }

    /// The uploads in progress in `namespace` whose key names start with `prefix`, ordered by
    /// key name and then by initiation, as S3 lists them.
    pub fn list_uploads(&self, namespace: &Namespace, prefix: &str) -> Vec<UploadSummary> {
        let uploads = self.inner.lock();
        let mut found: Vec<UploadSummary> = uploads
            .iter()
            .filter(|(_, u)| {
                u.state != State::Creating
                    && u.key.namespace() == namespace
                    && u.key.name().starts_with(prefix)
            })
            .map(|(id, u)| UploadSummary {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: u.initiated,
            })
            .collect();
        drop(uploads);
        found.sort_by(|a, b| {
            (a.key.name(), a.initiated, &a.upload_id).cmp(&(
                b.key.name(),
                b.initiated,
                &b.upload_id,
            ))
        });
        found
    }

    /// Aborts an upload of `key`: its parts are removed and their space freed.
    pub async fn abort(&self, key: &Key, upload_id: &str) -> Result<(), MultipartError> {
        let upload = {
            let mut uploads = self.inner.lock();
            self.inner.open_upload(&mut uploads, key, upload_id)?;
            uploads.remove(upload_id).expect("checked above")
        };
        let dir = self.inner.upload_dir(upload_id);
        tokio::task::spawn_blocking(move || {
            let removed = remove_upload_dir(&dir);
            // Only now: the space is free once the files are gone.
            drop(upload);
            removed
        })
        .await
        .map_err(io::Error::other)??;
        Ok(())
    }

    /// Completes an upload of `key` from the listed parts (number and ETag, quoted or not):
    /// checked as S3 checks a CompleteMultipartUpload, then assembled into one entry of the disk
    /// tier and sealed for the caller to commit (after uploading it, for a write-through), and
    /// the upload's parts removed. Parts not listed are discarded.
    pub async fn complete(
        &self,
        key: &Key,
        upload_id: &str,
        listed: &[(u32, String)],
        checksums: &ListedChecksums,
    ) -> Result<Completion, MultipartError> {
        if let Some(done) = self.inner.completed().by_id.get(upload_id) {
            if done.key == *key {
                return match &done.stored {
                    Some(meta) => Ok(Completion::Repeated(meta.clone())),
                    None => Err(MultipartError::Busy),
                };
            }
        }
        self.read_back_part_checksums(key, upload_id).await?;
        let (sources, attrs) = {
            let mut uploads = self.inner.lock();
            let min = self.inner.settings.min_part_size;
            let upload = self.inner.open_upload(&mut uploads, key, upload_id)?;
            let numbered = check_completion(listed, &upload.parts, min)?;
            let mut attrs = upload.attrs.clone();
            if let Some(checksum) = upload.checksum {
                let mut parts = Vec::with_capacity(numbered.len());
                for (number, source) in &numbered {
                    let sum = upload
                        .part_checksums
                        .get(number)
                        .ok_or(MultipartError::InvalidPart(*number))?;
                    parts.push((*number, sum.as_slice(), source.info.len));
                }
                let kept = checksums::object_checksum(checksum, &parts, checksums)?;
                attrs.kept.extend(kept);
            }
            upload.state = State::Completing;
            let sources: Vec<PartSource> = numbered.into_iter().map(|(_, s)| s).collect();
            (sources, attrs)
        };
        let md5s: Vec<[u8; 16]> = sources.iter().map(|p| p.info.md5).collect();
        let layout = PartLayout::Sizes(sources.iter().map(|p| p.info.len).collect());
        let meta = AssemblyMeta {
            attrs,
            etag: multipart_etag(&md5s),
            modified: SystemTime::now(),
        };
        let inner = self.inner.clone();
        let key = key.clone();
        let upload_id = upload_id.to_string();
        let task = tokio::spawn(async move {
            let method = inner.settings.copy;
            let assembled = inner.disk.assemble(&key, meta, sources, method).await;
            let finished = {
                let mut uploads = inner.lock();
                match &assembled {
                    Ok(_) => {
                        let done = Done {
                            key: key.clone(),
                            stored: None,
                        };
                        inner.remember_completed(&upload_id, done);
                        uploads.remove(&upload_id)
                    }
                    Err(_) => {
                        if let Some(upload) = uploads.get_mut(&upload_id) {
                            upload.state = State::Open;
                        }
                        None
                    }
                }
            };
            if let Some(upload) = finished {
                let dir = inner.upload_dir(&upload_id);
                let removed = tokio::task::spawn_blocking(move || {
                    let removed = remove_upload_dir(&dir);
                    drop(upload);
                    removed
                })
                .await
                .map_err(io::Error::other)
                .and_then(|removed| removed);
                if let Err(e) = removed {
                    // The entry is committed; the parts' files stay until the next start, which
                    // loads the upload again and sweeps it once it is past max_age.
                    tracing::warn!(upload_id, error = %e, "completed upload's parts not removed");
                }
            }
            assembled
        });
        let assembled = task.await.map_err(io::Error::other)??;
        Ok(Completion::Assembled(Box::new(Completed {
            meta: assembled.sealed.header().meta(),
            sealed: assembled.sealed,
            layout,
            stats: assembled.stats,
        })))
    }

    /// Computes the checksums of an upload's parts that have none (received before a restart)
    /// from their files, off the async threads, before a completion needs them.
    async fn read_back_part_checksums(
        &self,
        key: &Key,
        upload_id: &str,
    ) -> Result<(), MultipartError> {
        let missing: Vec<(u32, PathBuf, u64, ChecksumAlgorithm)> = {
            let mut uploads = self.inner.lock();
            let Ok(upload) = self.inner.open_upload(&mut uploads, key, upload_id) else {
                // The completion itself answers for an upload in another state.
                return Ok(());
            };
            let Some(checksum) = upload.checksum else {
                return Ok(());
            };
            upload
                .parts
                .iter()
                .filter(|(number, _)| !upload.part_checksums.contains_key(number))
                .map(|(n, p)| (*n, p.path.clone(), p.info.len, checksum.algorithm))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let computed = tokio::task::spawn_blocking(move || {
            missing
                .into_iter()
                .map(|(n, path, len, algorithm)| {
                    let sum = checksums::of_part_file(algorithm, &path, len)?;
                    Ok((n, path, sum))
                })
                .collect::<io::Result<Vec<_>>>()
        })
        .await
        .map_err(io::Error::other)??;
        let mut uploads = self.inner.lock();
        let upload = self.inner.open_upload(&mut uploads, key, upload_id)?;
        for (number, path, sum) in computed {
            // Only for the file it was read from: a part uploaded again meanwhile brought its
            // own checksum.
            let same = upload.parts.get(&number).is_some_and(|p| p.path == path);
            if same && !upload.part_checksums.contains_key(&number) {
                upload.part_checksums.insert(number, sum);
            }
        }
        Ok(())
    }

    /// Whether `upload_id` was completed (a retried completion is answered as the first was).
    pub fn is_completed(&self, upload_id: &str) -> bool {
        self.inner.completed().by_id.contains_key(upload_id)
    }

    /// Records how the caller's storing of an assembled completion ended: with what it stored
    /// (a retried completion is then answered with it), or failed (a retry finds no upload, as
    /// the parts are gone).
    pub fn settle(&self, upload_id: &str, stored: Option<ObjectMeta>) {
        let mut completed = self.inner.completed();
        match stored {
            Some(meta) => {
                if let Some(done) = completed.by_id.get_mut(upload_id) {
                    done.stored = Some(meta);
                }
            }
            None => {
                completed.by_id.remove(upload_id);
            }
        }
    }

    /// Aborts every open upload initiated more than `max_age` before `now`; returns how many.
    pub async fn sweep_at(&self, now: SystemTime) -> usize {
        let max_age = self.inner.settings.max_age;
        let stale: Vec<(String, Upload)> = {
            let mut uploads = self.inner.lock();
            let ids: Vec<String> = uploads
                .iter()
                .filter(|(_, u)| u.state == State::Open && is_stale(u.initiated, now, max_age))
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| uploads.remove(&id).map(|u| (id, u)))
                .collect()
        };
        let count = stale.len();
        let inner = self.inner.clone();
        let swept = tokio::task::spawn_blocking(move || {
            for (id, upload) in stale {
                if let Err(e) = remove_upload_dir(&inner.upload_dir(&id)) {
                    tracing::warn!(upload_id = id, error = %e, "stale upload's files not removed");
                }
                tracing::info!(upload_id = id, key = %upload.key, "incomplete multipart upload aborted after max_age");
                drop(upload);
            }
        })
        .await;
        if let Err(e) = swept {
            tracing::warn!(error = %e, "multipart sweep failed");
        }
        count
    }

    /// Starts the task that sweeps stale uploads every `sweep_interval`, until `stop` turns
    /// true.
    pub fn start(&self, mut stop: watch::Receiver<bool>) {
        let multipart = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(multipart.inner.settings.sweep_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        multipart.sweep_at(SystemTime::now()).await;
                    }
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            return;
                        }
                    }
                }
            }
        });
    }

    pub fn usage(&self) -> MultipartUsage {
        let uploads = self.inner.lock();
        let mut usage = MultipartUsage {
            uploads: uploads.len() as u64,
            ..MultipartUsage::default()
        };
        for part in uploads.values().flat_map(|u| u.parts.values()) {
            usage.parts += 1;
            usage.bytes += part.info.len;
        }
        usage
    }
}

impl Inner {
    fn completed(&self) -> MutexGuard<'_, CompletedUploads> {
        self.completed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember_completed(&self, upload_id: &str, done: Done) {
        let now = std::time::Instant::now();
        let mut completed = self.completed();
        completed.by_id.insert(upload_id.to_string(), done);
        completed.order.push_back((now, upload_id.to_string()));
        completed.forget_old(now);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Upload>> {
        // Every mutation under this lock is a single step, so a poisoned lock is still usable.
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn upload_dir(&self, upload_id: &str) -> PathBuf {
        self.dir.join(upload_id)
    }

    /// The upload `upload_id` of `key`, whatever its state.
    fn known_upload<'a>(
        &self,
        uploads: &'a mut HashMap<String, Upload>,
        key: &Key,
        upload_id: &str,
    ) -> Result<&'a mut Upload, MultipartError> {
        match uploads.get_mut(upload_id) {
            Some(upload) if upload.key == *key && upload.state != State::Creating => Ok(upload),
            _ => Err(MultipartError::NoSuchUpload),
        }
    }

    /// The upload `upload_id` of `key`, if it takes parts and completions now.
    fn open_upload<'a>(
        &self,
        uploads: &'a mut HashMap<String, Upload>,
        key: &Key,
        upload_id: &str,
    ) -> Result<&'a mut Upload, MultipartError> {
        let upload = self.known_upload(uploads, key, upload_id)?;
        match upload.state {
            State::Open => Ok(upload),
            State::Completing | State::Creating => Err(MultipartError::Busy),
        }
    }
}

/// Checks a completion's list against the uploaded parts as S3 does, and returns the parts to
/// assemble, in order.
fn check_completion(
    listed: &[(u32, String)],
    parts: &BTreeMap<u32, StoredPart>,
    min_part_size: u64,
) -> Result<Vec<(u32, PartSource)>, MultipartError> {
    if listed.is_empty() {
        return Err(MultipartError::NoParts);
    }
    if listed.windows(2).any(|pair| pair[0].0 > pair[1].0) {
        return Err(MultipartError::InvalidPartOrder);
    }
    // A part number listed more than once (a client that retried a part lists both attempts'
    // ETags): as S3 does, the part is used once, and the last listing of it is the one checked.
    let listed: Vec<&(u32, String)> = listed
        .iter()
        .enumerate()
        .filter(|(i, (number, _))| listed.get(i + 1).is_none_or(|next| next.0 != *number))
        .map(|(_, part)| part)
        .collect();
    let mut sources = Vec::with_capacity(listed.len());
    for (i, (number, etag)) in listed.iter().copied().enumerate() {
        let part = parts
            .get(number)
            .filter(|part| unquote(etag.trim()).eq_ignore_ascii_case(&part.info.etag()))
            .ok_or(MultipartError::InvalidPart(*number))?;
        let is_last = i + 1 == listed.len();
        if !is_last && part.info.len < min_part_size {
            return Err(MultipartError::EntityTooSmall {
                part_number: *number,
                size: part.info.len,
                min: min_part_size,
            });
        }
        sources.push((*number, PartSource::from(part)));
    }
    Ok(sources)
}

fn is_stale(initiated: SystemTime, now: SystemTime, max_age: Duration) -> bool {
    now.duration_since(initiated).is_ok_and(|age| age > max_age)
}

/// A new upload id: random bytes from the operating system, as lowercase hex.
fn new_upload_id() -> io::Result<String> {
    let mut bytes = [0u8; UPLOAD_ID_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(hex::encode(bytes))
}

fn is_upload_id(name: &str) -> bool {
    name.len() == 2 * UPLOAD_ID_BYTES
        && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn part_file_name(part_number: u32) -> String {
    format!("part-{part_number:05}")
}

fn parse_part_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("part-")?;
    if digits.len() != 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u32 = digits.parse().ok()?;
    (1..=MAX_PART_NUMBER).contains(&number).then_some(number)
}

/// Creates an upload's directory with its manifest, durably; on failure, removes what it made.
fn write_manifest(parent: &Path, dir: &Path, manifest: &[u8]) -> io::Result<()> {
    std::fs::create_dir(dir)?;
    let written = write_manifest_in(parent, dir, manifest);
    if written.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    written
}

fn write_manifest_in(parent: &Path, dir: &Path, manifest: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let temp = dir.join(MANIFEST_TEMP);
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(manifest)?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(MANIFEST))?;
    std::fs::File::open(dir)?.sync_all()?;
    std::fs::File::open(parent)?.sync_all()
}

/// Removes an upload's directory, the manifest first: a directory left half-removed by a crash
/// has no manifest and is cleared at the next start instead of coming back as an upload.
fn remove_upload_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(MANIFEST)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Reads the uploads under `dir` back (see [`Multipart::open`]).
fn load_uploads(
    disk: &DiskTier,
    dir: &Path,
    max_age: Duration,
) -> io::Result<HashMap<String, Upload>> {
    let now = SystemTime::now();
    let mut uploads = HashMap::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        if !item.file_type()?.is_dir() || !is_upload_id(&name) {
            tracing::warn!(path = %path.display(), "not a multipart upload; removed");
            remove_any(&path)?;
            continue;
        }
        match load_upload(disk, &path, now, max_age) {
            Ok(Some(upload)) => {
                uploads.insert(name, upload);
            }
            Ok(None) => remove_upload_dir(&path)?,
            Err(StoreError::Full { needed }) => {
                tracing::warn!(
                    upload_id = name,
                    needed,
                    "multipart upload no longer fits the disk tier; aborted"
                );
                remove_upload_dir(&path)?;
            }
            Err(StoreError::Io(e)) => return Err(e),
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
    }
    Ok(uploads)
}

/// One upload directory: `None` when it has no valid manifest (its creation was never
/// acknowledged) or is past `max_age`.
fn load_upload(
    disk: &DiskTier,
    dir: &Path,
    now: SystemTime,
    max_age: Duration,
) -> Result<Option<Upload>, StoreError> {
    let manifest = match std::fs::File::open(dir.join(MANIFEST)) {
        Ok(mut file) => EntryHeader::read_from(&mut file).ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let Some(manifest) = manifest else {
        tracing::warn!(path = %dir.display(), "multipart upload without a valid manifest; removed");
        return Ok(None);
    };
    if is_stale(manifest.modified, now, max_age) {
        tracing::info!(path = %dir.display(), "incomplete multipart upload past max_age; removed");
        return Ok(None);
    }
    let mut parts = BTreeMap::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        if name == MANIFEST {
            continue;
        }
        let adopted = match parse_part_file_name(&name) {
            Some(number) if item.file_type()?.is_file() => {
                disk.adopt_part(&path)?.map(|part| (number, part))
            }
            _ => None,
        };
        match adopted {
            Some((number, part)) => {
                parts.insert(number, part);
            }
            None => {
                tracing::warn!(path = %path.display(), "not a complete part file; removed");
                remove_any(&path)?;
            }
        }
    }
    let mut attrs = manifest.attrs;
    let checksum = UploadChecksum::from_manifest(&mut attrs);
    Ok(Some(Upload {
        key: manifest.key,
        attrs,
        checksum,
        initiated: manifest.modified,
        parts,
        part_checksums: HashMap::new(),
        state: State::Open,
    }))
}

fn remove_any(path: &Path) -> io::Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests;
