//! The disk tier: one file per entry, bounded in bytes, least-recently-used eviction.
//!
//! Layout: `<dir>/<namespace>/<2 hex>/<sha256 of the key name>`, temp files in `<dir>/tmp/`.
//! A write reserves its space first (evicting as needed), streams into its own temp file, checks
//! the length, seals the header with the checksum, fsyncs, and is renamed into place under the
//! index lock, so readers only ever see complete entries. The index lives in memory and is
//! rebuilt from the entry headers at start-up. Directories whose names start with `.` belong to
//! other parts of the daemon (the write-back queue) and are left alone by the rebuild.

mod index;
pub mod parts;
mod read;
pub use read::RangedObject;
pub mod spool;
pub mod tail;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::{FutureExt, StreamExt};
use sha2::{Digest, Sha256};

use super::backend::{ByteRange, ListRequest, PartLayout, Upload};
use super::entry_file::EntryHeader;
use super::listing::{walk, Line};
use super::{BodyLen, ByteStream, Key, Object, ObjectMeta, PutOptions, Store, StoreError};
pub use index::{FillOrder, Version};
use index::{Index, Reservation};
use spool::{EntryMeta, EtagSource};

/// Most body bytes handed to one blocking write.
const WRITE_BATCH: usize = 256 * 1024;

/// Counters the disk tier keeps for the metrics module to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    pub entries: u64,
    pub evictions: u64,
    pub pinned_bytes: u64,
    pub pinned_entries: u64,
}

/// Sizes and paths of the disk tier.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    pub dir: PathBuf,
    pub max_size: u64,
    pub verify_before_serve: u64,
    /// Evict to keep at least this many bytes free on the filesystem; 0 turns the floor off.
    pub min_free: u64,
}

/// A handle to the disk tier; cheap to clone.
#[derive(Clone)]
pub struct DiskTier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: DiskSettings,
    tmp_dir: PathBuf,
    index: Mutex<Index>,
}

/// How a finished write enters the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// A client's write: replaces any entry of the key; evictable.
    Cached,
    /// A client's write that must stay until the shared tier has it: never evicted until
    /// unpinned.
    Pinned,
    /// A copy filled from the shared tier, by a fill that took this order when it started
    /// ([`DiskTier::begin_fill`]): committed only if nothing happened to the key since. A fill
    /// started before a client's write of the same key must never replace that write (which,
    /// waiting for upload, would then send the fill's stale bytes to S3), nor bring back a key
    /// deleted during it. It may replace an older entry (a stale copy being refilled), except
    /// one still waiting for upload: that one is newer than anything the backend has.
    Fill(FillOrder),
}

/// A fill registered with the disk tier's change order: while it lives, the tier remembers
/// the changes a commit of the fill must not override (see [`Commit::Fill`]). Dropping it
/// ends the registration.
pub struct FillTicket {
    disk: DiskTier,
    order: FillOrder,
}

impl FillTicket {
    /// What the fill's [`Commit::Fill`] carries.
    pub fn order(&self) -> FillOrder {
        self.order
    }
}

impl Drop for FillTicket {
    fn drop(&mut self) {
        self.disk.lock().end_fill(self.order);
    }
}

/// A committed entry's file, opened once at one version: an upload reads every part and
/// every retry from this handle, so a newer write of the key (renamed over the path) never
/// mixes into it.
#[derive(Debug, Clone)]
pub struct EntryLocation {
    pub file: Arc<std::fs::File>,
    pub body_offset: u64,
    pub header: EntryHeader,
    /// The version the file was opened at (read before the open, so the file is this version
    /// or newer, never older).
    pub version: Version,
}

impl EntryLocation {
    /// The upload of this entry's body, as the file holds it.
    pub fn upload(&self, parts: PartLayout) -> Upload {
        upload_of(&self.file, &self.header, parts)
    }
}

/// An upload of `header`'s body from `file`.
fn upload_of(file: &Arc<std::fs::File>, header: &EntryHeader, parts: PartLayout) -> Upload {
    Upload {
        key: header.key.clone(),
        file: file.clone(),
        offset: header.header_len,
        len: header.body_len,
        crc32c: Some(header.crc32c),
        attrs: header.attrs.clone(),
        parts,
    }
}

/// A complete entry, sealed and durable in its temp file but not visible yet: a write-through
/// uploads it from here and commits it only once the backend has it, so a refused upload
/// leaves no copy behind. Dropping it discards it.
pub struct Sealed {
    disk: DiskTier,
    header: EntryHeader,
    file: Arc<std::fs::File>,
    temp: TempFile,
    reservation: Reservation,
}

impl Sealed {
    pub fn header(&self) -> &EntryHeader {
        &self.header
    }

    /// The upload of the sealed body, read from the temp file's handle (valid across the
    /// rename of [`Sealed::commit`]).
    pub fn upload(&self, parts: PartLayout) -> Upload {
        upload_of(&self.file, &self.header, parts)
    }

    /// Makes the entry visible. Returns its version, or `None` when a [`Commit::Fill`] found
    /// the key changed since the fill began (the file is discarded).
    pub async fn commit(self, mode: Commit) -> Result<Option<Version>, StoreError> {
        let Sealed {
            disk,
            header,
            temp,
            reservation,
            ..
        } = self;
        disk.blocking(move |disk| disk.commit(&header.key, temp, reservation, mode))
            .await?
    }
}

impl DiskTier {
    /// Opens (creating if needed) the directory and rebuilds the index from it.
    pub async fn open(settings: DiskSettings) -> io::Result<DiskTier> {
        tokio::task::spawn_blocking(move || Self::open_blocking(settings))
            .await
            .map_err(io::Error::other)?
    }

    fn open_blocking(settings: DiskSettings) -> io::Result<DiskTier> {
        let tmp_dir = settings.dir.join("tmp");
        std::fs::create_dir_all(&settings.dir)?;
        claim_dir(&settings.dir)?;
        std::fs::create_dir_all(&tmp_dir)?;
        // Leftover temp files are writes that never completed: they were never acknowledged.
        for file in std::fs::read_dir(&tmp_dir)? {
            let file = file?;
            if TempFile::is_temp_name(&file.file_name()) {
                std::fs::remove_file(file.path())?;
            }
        }
        let index = index::rebuild(&settings.dir, settings.max_size)?;
        Ok(DiskTier {
            inner: Arc::new(Inner {
                settings,
                tmp_dir,
                index: Mutex::new(index),
            }),
        })
    }

    pub fn settings(&self) -> &DiskSettings {
        &self.inner.settings
    }

    pub fn usage(&self) -> DiskUsage {
        self.lock().usage()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index consistent (every mutation is a
        // single step), so a poisoned lock is still usable.
        self.inner.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of a key's entry file.
    pub fn path_for(&self, key: &Key) -> PathBuf {
        entry_path(&self.inner.settings.dir, key)
    }

    /// Whether the index holds the key (without touching its recency).
    pub fn contains(&self, key: &Key) -> bool {
        self.lock().contains(key)
    }

    /// Registers a fill starting now: take it before asking the backend, so that every change
    /// made after the backend's answer is newer than the fill.
    pub fn begin_fill(&self) -> FillTicket {
        let order = self.lock().begin_fill();
        FillTicket {
            disk: self.clone(),
            order,
        }
    }

    /// [`DiskTier::begin_fill`] if the key has no entry, in one step: a write committed just
    /// before is seen here, one committed just after is newer than the fill.
    pub fn begin_fill_if_absent(&self, key: &Key) -> Option<FillTicket> {
        let mut index = self.lock();
        if index.contains(key) {
            return None;
        }
        let order = index.begin_fill();
        drop(index);
        Some(FillTicket {
            disk: self.clone(),
            order,
        })
    }

    /// Whether anything happened to `key` (a commit, a delete, its entry leaving) after a fill
    /// took `order`.
    pub fn changed_since(&self, key: &Key, order: FillOrder) -> bool {
        self.lock().changed_since(key, order)
    }

    /// Whether the key's entry is waiting for the shared tier (so it is newer than the
    /// shared tier's copy).
    pub fn is_pinned(&self, key: &Key) -> bool {
        self.lock().is_pinned(key)
    }

    /// Removes the key's entry if nothing happened to the key since `order` (the backend says
    /// the object is gone, and no client wrote it meanwhile). Returns whether it was removed.
    pub async fn discard_unchanged(&self, key: &Key, order: FillOrder) -> Result<bool, StoreError> {
        let key = key.clone();
        self.blocking(move |disk| -> Result<bool, StoreError> {
            let mut index = disk.lock();
            if !index.contains(&key) || index.changed_since(&key, order) || index.is_pinned(&key) {
                return Ok(false);
            }
            index.forget(&key);
            match std::fs::remove_file(disk.path_for(&key)) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
        .await?
    }

    /// One page of a listing of a namespace's entries, names only, and whether more follow
    /// (see [`walk`]: the work is bounded by the page). The continuation (or `start_after`) is
    /// the previous page's last line.
    pub fn list_names(&self, request: &ListRequest) -> (Vec<Line>, bool) {
        let index = self.lock();
        let cursor = request
            .continuation
            .as_deref()
            .or(request.start_after.as_deref());
        walk(
            |from| index.first_name(&request.namespace, from),
            &request.prefix,
            request.delimiter.as_deref(),
            cursor,
            request.max_keys,
        )
    }

    /// Marks the key's entry, whatever its version, as not evictable (it has not reached the
    /// shared tier yet): how the write-back queue takes its entries back at start-up.
    pub fn pin(&self, key: &Key) -> bool {
        self.lock().set_pinned(key, None, true)
    }

    /// Lets the entry be evicted again once `version` of it reached the shared tier (or was
    /// not acknowledged). A newer version stays pinned: it has not been uploaded.
    pub fn unpin(&self, key: &Key, version: Version) -> bool {
        self.lock().set_pinned(key, Some(version), false)
    }

    /// The version of the key's entry, if it has one.
    pub fn version(&self, key: &Key) -> Option<Version> {
        self.lock().version(key)
    }

    /// [`DiskTier::version`], counting as a read of the entry for eviction: a memory hit
    /// keeps its disk entry recent, so the hottest entries are not the first evicted there.
    pub fn touch_version(&self, key: &Key) -> Option<Version> {
        self.lock().touch_version(key)
    }

    /// Writes an entry, optionally pinned against eviction from the moment it is visible.
    /// The body goes through a [`Spool`], so there is one write path for entries from clients
    /// and from S3. Chunks that are already there are written together (up to
    /// [`WRITE_BATCH`]), but nothing is held back waiting for more: a stalled upload holds no
    /// buffer here.
    pub async fn put_entry(
        &self,
        key: &Key,
        len: impl Into<BodyLen>,
        body: ByteStream,
        options: &PutOptions,
        pinned: bool,
    ) -> Result<EntryHeader, StoreError> {
        let spool = self.receive(key, len, body, options).await?;
        // `finish` refuses a body shorter than declared.
        let mode = if pinned {
            Commit::Pinned
        } else {
            Commit::Cached
        };
        let (header, _) = spool.finish(mode).await?;
        Ok(header)
    }

    /// The first half of [`DiskTier::put_entry`]: the body, received whole into a spool that
    /// the caller commits with [`Spool::finish`] (so it can order the commit with other work
    /// on the key).
    pub async fn receive(
        &self,
        key: &Key,
        len: impl Into<BodyLen>,
        body: ByteStream,
        options: &PutOptions,
    ) -> Result<spool::Spool, StoreError> {
        let len = len.into();
        let spool = self.spool_for(key, len, options).await?;
        Self::receive_into(spool, len, body, options, None).await
    }

    /// The spool a client's body of `len` is received into (see [`DiskTier::receive`]).
    pub async fn spool_for(
        &self,
        key: &Key,
        len: BodyLen,
        options: &PutOptions,
    ) -> Result<spool::Spool, StoreError> {
        let meta = EntryMeta {
            attrs: options.attrs.clone(),
            etag: if options.etag {
                EtagSource::Md5
            } else {
                EtagSource::None
            },
            modified: None,
        };
        match len {
            BodyLen::Exact(len) => self.spool_with(key, len, meta).await,
            BodyLen::AtMost(limit) => self.spool_up_to(key, limit, meta).await,
        }
    }

    /// Receives a client's body into `spool` (from [`DiskTier::spool_for`]), publishing the
    /// body bytes written so far on `written` after each write.
    pub async fn receive_into(
        mut spool: spool::Spool,
        len: BodyLen,
        body: ByteStream,
        options: &PutOptions,
        written: Option<&tokio::sync::watch::Sender<u64>>,
    ) -> Result<spool::Spool, StoreError> {
        // Fused: the batching below may see the end before the loop does.
        let mut body = body.fuse();
        while let Some(first) = body.next().await {
            let mut batch = vec![first.map_err(StoreError::BodyAborted)?];
            let mut batched = batch[0].len();
            while batched < WRITE_BATCH {
                match body.next().now_or_never() {
                    Some(Some(chunk)) => {
                        let chunk = chunk.map_err(StoreError::BodyAborted)?;
                        batched += chunk.len();
                        batch.push(chunk);
                    }
                    // The end (seen again by the outer loop) or nothing ready yet.
                    Some(None) | None => break,
                }
            }
            let received = spool.written() + batched as u64;
            match len {
                BodyLen::Exact(declared) if received > declared => {
                    return Err(StoreError::LengthMismatch { declared, received })
                }
                BodyLen::AtMost(limit) if received > limit => {
                    return Err(StoreError::TooLarge { limit })
                }
                _ => {}
            }
            let at = spool.written();
            spool.write_chunks_at(at, batch).await?;
            if let Some(written) = written {
                written.send_replace(spool.written());
            }
        }
        if let BodyLen::AtMost(_) = len {
            spool.end_here()?;
        }
        if let Some(late) = &options.trailer_checksum {
            let (algorithm, raw) = late.get().ok_or_else(|| {
                StoreError::Io(io::Error::other(
                    "the body ended without its trailer checksum",
                ))
            })?;
            spool.fill_kept(algorithm.header_name(), &crate::checksum::to_base64(raw))?;
        }
        Ok(spool)
    }

    /// Renames a finished temp file into place and records it, all under the index lock so that
    /// eviction and concurrent writers of the same key see one consistent order. With
    /// [`Commit::Fill`], a key changed since the fill began (or pinned) is left as it is (the
    /// temp file is removed): returns the committed entry's version, `None` when it was not.
    fn commit(
        &self,
        key: &Key,
        temp: TempFile,
        reservation: Reservation,
        mode: Commit,
    ) -> Result<Option<Version>, StoreError> {
        let path = self.path_for(key);
        let parent = path.parent().expect("entry paths have a parent");
        std::fs::create_dir_all(parent)?;
        let mut index = self.lock();
        let overtaken = match mode {
            Commit::Fill(order) => index.changed_since(key, order) || index.is_pinned(key),
            Commit::Cached | Commit::Pinned => false,
        };
        if overtaken {
            // Unlock before `reservation` and `temp` are dropped: the release takes the lock.
            drop(index);
            return Ok(None);
        }
        let renamed = std::fs::rename(&temp.path, &path);
        let version = match renamed {
            Ok(()) => {
                temp.disarm();
                Some(index.commit(key, reservation.take(), mode == Commit::Pinned))
            }
            Err(_) => None,
        };
        // Unlock before `reservation` can be dropped: its release takes the same lock.
        drop(index);
        renamed?;
        // Make the rename itself durable before the write is acknowledged. (Measured: skipping
        // this for plain cache entries gained nothing; the file's own fsync dominates.)
        std::fs::File::open(parent)?.sync_all()?;
        Ok(version)
    }

    /// Locates a committed entry and checks its header, without verifying the body.
    pub async fn locate(&self, key: &Key) -> Result<Option<EntryLocation>, StoreError> {
        let key = key.clone();
        self.blocking(move |disk| disk.locate_blocking(&key))
            .await?
    }

    fn locate_blocking(&self, key: &Key) -> Result<Option<EntryLocation>, StoreError> {
        // The version first: the file opened next is that version or a newer one.
        let Some(version) = self.lock().version(key) else {
            return Ok(None);
        };
        let path = self.path_for(key);
        match read::open_entry(&path, key) {
            Ok(Some((file, header))) => Ok(Some(EntryLocation {
                file: Arc::new(file),
                body_offset: header.header_len,
                header,
                version,
            })),
            Ok(None) => {
                self.lock().forget(key);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes an entry whose file turned out corrupt, unless a newer file has replaced it.
    fn discard_corrupt(&self, key: &Key, file: read::FileId) {
        let path = self.path_for(key);
        let mut index = self.lock();
        if file.is_at(&path) {
            tracing::warn!(key = %key, path = %path.display(), "checksum mismatch on disk: entry removed");
            let _ = std::fs::remove_file(&path);
            index.forget(key);
        }
    }

    /// Reads `range` of an entry's body, verified block by block (see [`read::open_range`]).
    pub async fn get_range(
        &self,
        key: &Key,
        range: ByteRange,
    ) -> Result<Option<RangedObject>, StoreError> {
        read::open_range(self.clone(), key.clone(), range).await
    }

    /// Whether the tier can take a write now: a probe file of its own is created, written,
    /// fsynced and removed in the temp directory.
    pub async fn probe_writable(&self) -> io::Result<()> {
        let probe = self
            .inner
            .tmp_dir
            .join(format!(".probe-{:016x}", fastrand::u64(..)));
        self.blocking(move |_| {
            use std::io::Write;
            let written = std::fs::File::create(&probe).and_then(|mut f| {
                f.write_all(b"ok")?;
                f.sync_all()
            });
            let removed = std::fs::remove_file(&probe);
            written.and(removed)
        })
        .await?
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&DiskTier) -> T + Send + 'static,
    ) -> io::Result<T> {
        let disk = self.clone();
        tokio::task::spawn_blocking(move || f(&disk))
            .await
            .map_err(io::Error::other)
    }
}

impl DiskTier {
    /// [`Store::get`], with the version the entry was at when it was opened: the version is
    /// read first, so the object is that version or a newer one. A copy of the object tagged
    /// with the version (the memory tier's) is then never newer than its tag says, and is
    /// dropped as soon as the entry moves on.
    pub async fn get_versioned(&self, key: &Key) -> Result<Option<(Version, Object)>, StoreError> {
        let Some(version) = self.touch_version(key) else {
            return Ok(None);
        };
        let object = read::open_object(self.clone(), key.clone()).await?;
        Ok(object.map(|object| (version, object)))
    }
}

impl Store for DiskTier {
    async fn get(&self, key: &Key) -> Result<Option<Object>, StoreError> {
        Ok(self.get_versioned(key).await?.map(|(_, object)| object))
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(self.locate(key).await?.map(|loc| loc.header.meta()))
    }

    async fn put(
        &self,
        key: &Key,
        len: impl Into<BodyLen> + Send,
        body: ByteStream,
        options: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        let header = self
            .put_entry(key, len.into(), body, options, false)
            .await?;
        Ok(header.meta())
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        let key = key.clone();
        self.blocking(move |disk| -> Result<bool, StoreError> {
            let path = disk.path_for(&key);
            let mut index = disk.lock();
            let known = index.delete(&key);
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(known),
                Err(e) => Err(e.into()),
            }
        })
        .await?
    }
}

/// The file that marks a directory as this daemon's data directory.
pub const MARKER: &str = ".build-cache-proxy";
const MARKER_TEXT: &str = "This directory is the data directory of build-cache-proxy (entry format 1).\nEverything in it is the daemon's to create and remove.\n";

/// Makes sure `dir` is ours before anything in it is touched: a directory with the marker is;
/// an empty one (a fresh volume may hold `lost+found`) becomes ours; anything else is refused,
/// because the daemon removes files it does not recognise as entries and would otherwise
/// delete whatever a mistyped `disk.dir` points at.
fn claim_dir(dir: &Path) -> io::Result<()> {
    let marker = dir.join(MARKER);
    if marker.exists() {
        return Ok(());
    }
    let mut foreign = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let name = item?.file_name();
        if name != "lost+found" {
            foreign.push(name.to_string_lossy().into_owned());
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        foreign.truncate(5);
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "the directory is not empty and has no {MARKER} file, so it is not a build-cache-proxy data directory (it holds {}); point disk.dir at an empty or new directory",
                foreign.join(", ")
            ),
        ));
    }
    let mut file = std::fs::File::create(&marker)?;
    std::io::Write::write_all(&mut file, MARKER_TEXT.as_bytes())?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// `<dir>/<namespace>/<2 hex>/<sha256(name)>`: fixed-length file names whatever the key holds.
/// Where a key's entry file lives under the data dir: `<dir>/<namespace>/<2 hex>/<sha256 hex>`.
/// Public so the key fuzz target can check that no accepted key leads outside `dir`.
pub fn entry_path(dir: &Path, key: &Key) -> PathBuf {
    let digest = hex::encode(Sha256::digest(key.name().as_bytes()));
    dir.join(key.namespace().as_str())
        .join(&digest[..2])
        .join(&digest)
}

/// A temp file removed on drop unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn new(dir: &Path) -> TempFile {
        let name = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        TempFile {
            path: dir.join(name),
            armed: true,
        }
    }

    /// Whether a file name is one [`TempFile::new`] makes (32 hex digits).
    fn is_temp_name(name: &std::ffi::OsStr) -> bool {
        is_hex_name(name, 32)
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests;

/// Whether `name` is exactly `len` lowercase hex digits.
fn is_hex_name(name: &std::ffi::OsStr, len: usize) -> bool {
    let name = name.as_encoded_bytes();
    name.len() == len && name.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
