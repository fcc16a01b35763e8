//! Multipart uploads on the disk tier: part files written as the parts arrive, and their
//! assembly into one entry when the upload completes.
//!
//! A part streams into a temp file of the tier (bounded memory, space admitted and reserved as
//! for any entry, so parts can never overflow `disk.max_size`); its MD5 (the part's ETag), its
//! CRC32C and one CRC32C per [`BLOCK`] are computed on the way. Once the body is complete a
//! trailer is appended and the file is fsynced: a [`ReceivedPart`], which the upload manager
//! renames into the upload's directory under its own lock ([`ReceivedPart::install`]). A
//! [`StoredPart`] keeps its space reserved for as long as it is held, and is never evicted,
//! since the index knows nothing of it but the reservation.
//!
//! ```text
//! part file: body | one CRC32C (u32) per BLOCK of body, the last block possibly shorter
//!            | magic "BCPP" | version u16 | body_len u64 | md5 [16] | crc32c u32
//!            | trailer_crc u32 (CRC32C of the block table and the fields before it)
//! ```
//!
//! The body comes first so that assembly copies it from offset 0 with `copy_file_range`, and the
//! trailer last because only then are its checksums known. A file whose trailer does not check
//! out was never acknowledged, or is damaged: it is dropped when found at start-up.
//!
//! [`DiskTier::assemble`] writes the entry's header, copies each part's body into place in the
//! kernel (falling back to reads and writes where the filesystem refuses), writes the block
//! table, fsyncs and commits the entry like any other write.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::stream::Fuse;
use futures_util::{FutureExt, StreamExt};
use md5::{Digest, Md5};

use super::index::Reservation;
use super::spool::{BlockCrcs, RESERVE_STEP};
use super::{DiskTier, Sealed, TempFile, WRITE_BATCH};
use crate::store::entry_file::{table_len, EntryHeader, BLOCK};
use crate::store::{ByteStream, Key, ObjectAttrs, StoreError};

/// The directory under `disk.dir` that holds multipart uploads. A dot-directory: no namespace
/// can take its name, and the index rebuild leaves it alone.
pub const MULTIPART_DIR: &str = ".multipart";

const PART_MAGIC: &[u8; 4] = b"BCPP";
const PART_VERSION: u16 = 1;
/// Bytes of the fixed trailer after a part's block table.
const TAIL_LEN: u64 = 4 + 2 + 8 + 16 + 4 + 4;
/// Bytes moved per `copy_file_range` call: large enough to be cheap, small enough that one
/// call does not hold the thread for seconds.
const KERNEL_COPY_STEP: u64 = 64 << 20;
/// The buffer of the read/write fallback and of the block table re-read: what assembly holds
/// in memory at most.
const COPY_BUFFER: usize = 1 << 20;

/// What is known about a received part: enough to check a completion and to assemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub len: u64,
    /// The binary MD5 of the body: its hex is the part's ETag.
    pub md5: [u8; 16],
    pub crc32c: u32,
    /// One CRC32C per [`BLOCK`] of the body, the last possibly of a shorter block.
    pub block_crcs: Vec<u32>,
}

impl PartInfo {
    /// The part's ETag as S3 gives it: the hex MD5 of its body.
    pub fn etag(&self) -> String {
        hex::encode(self.md5)
    }
}

/// Bytes a part file of `len` body bytes takes on disk.
pub fn part_file_len(len: u64) -> u64 {
    len + table_len(len) + TAIL_LEN
}

/// A part whose body is complete and durable in a temp file, not yet in its upload. Dropping it
/// removes the file and frees its space.
pub struct ReceivedPart {
    temp: TempFile,
    reservation: Reservation,
    info: PartInfo,
}

impl ReceivedPart {
    pub fn info(&self) -> &PartInfo {
        &self.info
    }

    /// Renames the part file to `path` (replacing any part there) and keeps its space reserved
    /// in the returned [`StoredPart`]. A quick call for under the caller's lock; the caller
    /// makes the rename durable with an fsync of the directory afterwards.
    pub fn install(self, path: PathBuf) -> io::Result<StoredPart> {
        std::fs::rename(&self.temp.path, &path)?;
        self.temp.disarm();
        Ok(StoredPart {
            path,
            info: Arc::new(self.info),
            modified: SystemTime::now(),
            _reservation: self.reservation,
        })
    }
}

/// A part file in its upload's directory. Holding it holds the file's space in the tier's
/// accounting; dropping it frees that space but leaves the file: removing the files is the
/// upload's business (a re-uploaded part has already replaced this one's file).
pub struct StoredPart {
    pub path: PathBuf,
    pub info: Arc<PartInfo>,
    /// When the part was received (its file's modification time after a restart).
    pub modified: SystemTime,
    _reservation: Reservation,
}

impl std::fmt::Debug for StoredPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPart")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// One part as assembly reads it.
#[derive(Debug, Clone)]
pub struct PartSource {
    pub path: PathBuf,
    pub info: Arc<PartInfo>,
}

impl From<&StoredPart> for PartSource {
    fn from(part: &StoredPart) -> PartSource {
        PartSource {
            path: part.path.clone(),
            info: part.info.clone(),
        }
    }
}

/// How assembly moves the parts' bytes into the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// `copy_file_range`: the kernel copies (or shares extents, on filesystems that can), the
    /// bytes never pass through the process. Falls back to [`CopyMethod::ReadWrite`] for what
    /// the filesystem refuses.
    Kernel,
    /// Reads and writes through a bounded buffer (for measurements and tests of the fallback).
    ReadWrite,
}

/// Where an assembly's bytes went, for measurements and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyStats {
    /// Body bytes copied by `copy_file_range`.
    pub in_kernel: u64,
    /// Body bytes read and written by the process.
    pub through_process: u64,
    /// Body bytes read back to compute block checksums that straddle part boundaries.
    pub reread: u64,
    /// Time spent copying the parts into place.
    pub copying: std::time::Duration,
    /// Time spent computing the block table (the re-read, if any) and checking it.
    pub checking: std::time::Duration,
    /// Time spent making the entry durable (its fsync).
    pub syncing: std::time::Duration,
}

/// An assembled entry, sealed and ready to commit.
pub struct Assembled {
    pub sealed: Sealed,
    pub stats: CopyStats,
}

/// What assembly writes besides the parts' bytes.
#[derive(Debug, Clone)]
pub struct AssemblyMeta {
    pub attrs: ObjectAttrs,
    pub etag: String,
    pub modified: SystemTime,
}

impl DiskTier {
    /// Where multipart uploads keep their parts: `<disk.dir>/.multipart`.
    pub fn multipart_dir(&self) -> PathBuf {
        self.inner.settings.dir.join(MULTIPART_DIR)
    }

    /// Receives a part of exactly `len` bytes into a temp file of the tier: admitted first (a
    /// part that could never fit is refused before any byte is read), its space reserved as
    /// the bytes arrive, evicting cached entries as needed. Durable when this returns.
    pub async fn receive_part(
        &self,
        len: u64,
        body: ByteStream,
    ) -> Result<ReceivedPart, StoreError> {
        let file_len = part_file_len(len);
        let (file, temp, reservation) = self
            .blocking(
                move |disk| -> Result<(std::fs::File, TempFile, Reservation), StoreError> {
                    disk.lock().admit(file_len, &disk.inner.settings)?;
                    let reservation = Reservation::admitted(disk.clone(), file_len);
                    let temp = TempFile::new(&disk.inner.tmp_dir);
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&temp.path)?;
                    Ok((file, temp, reservation))
                },
            )
            .await??;
        let mut writer = PartWriter {
            file,
            reservation,
            written: 0,
            md5: Md5::new(),
            blocks: BlockCrcs::default(),
        };
        let mut body = body.fuse();
        while let Some(batch) = next_batch(&mut body).await {
            let batch = batch?;
            let received = writer.written + batch.len() as u64;
            if received > len {
                return Err(StoreError::LengthMismatch {
                    declared: len,
                    received,
                });
            }
            writer = self.blocking(move |_| writer.write(batch)).await??;
        }
        if writer.written != len {
            return Err(StoreError::LengthMismatch {
                declared: len,
                received: writer.written,
            });
        }
        let (info, reservation) = self.blocking(move |_| writer.finish()).await??;
        Ok(ReceivedPart {
            temp,
            reservation,
            info,
        })
    }

    /// Takes back a part file found at start-up: checks its trailer and reserves its space
    /// (evicting cached entries if needed). `Ok(None)`: not a valid part file (never
    /// acknowledged, or damaged). Blocking.
    pub fn adopt_part(&self, path: &Path) -> Result<Option<StoredPart>, StoreError> {
        let file = std::fs::File::open(path)?;
        let metadata = file.metadata()?;
        let Some(info) = read_trailer(&file, metadata.len())? else {
            return Ok(None);
        };
        let file_len = metadata.len();
        self.lock().admit(file_len, &self.inner.settings)?;
        let mut reservation = Reservation::admitted(self.clone(), file_len);
        reservation.grow(file_len)?;
        Ok(Some(StoredPart {
            path: path.to_path_buf(),
            info: Arc::new(info),
            modified: metadata.modified()?,
            _reservation: reservation,
        }))
    }

    /// Writes one entry for `key` whose body is the parts' bodies in order, sealed for the
    /// caller to commit. The entry's space is admitted and reserved on top of the parts' (both
    /// are on disk until the caller removes the parts), evicting cached entries as needed.
    pub async fn assemble(
        &self,
        key: &Key,
        meta: AssemblyMeta,
        parts: Vec<PartSource>,
        method: CopyMethod,
    ) -> Result<Assembled, StoreError> {
        let key = key.clone();
        self.blocking(move |disk| disk.assemble_blocking(&key, meta, &parts, method))
            .await?
    }

    fn assemble_blocking(
        &self,
        key: &Key,
        meta: AssemblyMeta,
        parts: &[PartSource],
        method: CopyMethod,
    ) -> Result<Assembled, StoreError> {
        let body_len: u64 = parts.iter().map(|p| p.info.len).sum();
        let whole_crc = parts.iter().fold(0u32, |crc, part| {
            crc32c::crc32c_combine(crc, part.info.crc32c, part.info.len as usize)
        });
        let header = EntryHeader {
            body_len,
            crc32c: whole_crc,
            modified: whole_millis(meta.modified),
            etag: Some(meta.etag),
            ..EntryHeader::unsealed(key, meta.attrs)
        };
        let file_len = header.file_len();
        self.lock().admit(file_len, &self.inner.settings)?;
        let mut reservation = Reservation::admitted(self.clone(), file_len);
        reservation.grow(file_len)?;
        let temp = TempFile::new(&self.inner.tmp_dir);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp.path)?;

        let mut stats = CopyStats::default();
        let started = Instant::now();
        let mut at = header.header_len;
        for part in parts {
            let source = std::fs::File::open(&part.path)?;
            copy_part(&source, &file, at, part.info.len, method, &mut stats)?;
            at += part.info.len;
        }

        stats.copying = started.elapsed();
        let started = Instant::now();
        let (mut table, off_grid) = table_from_parts(parts);
        if let Some(part) = off_grid {
            let first_block = table.len() as u64;
            stats.reread = body_len - first_block * BLOCK;
            let (crcs, reread_crc) =
                block_crcs_of(&file, header.header_len, first_block, body_len)?;
            // The re-read bytes must be the parts' bytes: this catches a copy that went wrong.
            if reread_crc != crc_from(parts, part) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "assembled body does not match its parts' checksums",
                )
                .into());
            }
            table.extend(crcs);
        }
        stats.checking = started.elapsed();
        let encoded_table: Vec<u8> = table.iter().flat_map(|c| c.to_le_bytes()).collect();
        file.write_all_at(&encoded_table, header.header_len + body_len)?;
        // The header last: until the body and table are in place the file is not an entry.
        file.write_all_at(&header.encode(), 0)?;
        let started = Instant::now();
        file.sync_all()?;
        stats.syncing = started.elapsed();
        Ok(Assembled {
            sealed: Sealed {
                disk: self.clone(),
                header,
                file: Arc::new(file),
                temp,
                reservation,
            },
            stats,
        })
    }
}

/// A part being written: moved into each blocking write and back.
struct PartWriter {
    file: std::fs::File,
    reservation: Reservation,
    written: u64,
    md5: Md5,
    blocks: BlockCrcs,
}

impl PartWriter {
    fn write(mut self, data: Bytes) -> Result<PartWriter, StoreError> {
        let needed = self.written + data.len() as u64;
        if needed > self.reservation.reserved() {
            let step = (needed - self.reservation.reserved()).max(RESERVE_STEP);
            self.reservation.grow(step)?;
        }
        self.file.write_all_at(&data, self.written)?;
        self.md5.update(&data);
        self.blocks.append(&data);
        self.written = needed;
        Ok(self)
    }

    /// Appends the trailer and fsyncs.
    fn finish(mut self) -> Result<(PartInfo, Reservation), StoreError> {
        let info = PartInfo {
            len: self.written,
            md5: self.md5.finalize().into(),
            crc32c: self.blocks.crc32c(),
            block_crcs: self.blocks.into_crcs(),
        };
        let trailer = encode_trailer(&info);
        // The rest of the promise: the trailer (and any body bytes below a reserve step).
        self.reservation.grow(u64::MAX)?;
        self.file.write_all_at(&trailer, info.len)?;
        self.file.sync_all()?;
        Ok((info, self.reservation))
    }
}

/// The chunks of `body` that are ready now, joined (up to [`WRITE_BATCH`] bytes), waiting only
/// for the first: a stalled upload holds no buffer.
async fn next_batch(body: &mut Fuse<ByteStream>) -> Option<Result<Bytes, StoreError>> {
    let first = match body.next().await? {
        Ok(chunk) => chunk,
        Err(e) => return Some(Err(StoreError::BodyAborted(e))),
    };
    let mut batch = vec![first];
    let mut batched = batch[0].len();
    while batched < WRITE_BATCH {
        match body.next().now_or_never() {
            Some(Some(Ok(chunk))) => {
                batched += chunk.len();
                batch.push(chunk);
            }
            Some(Some(Err(e))) => return Some(Err(StoreError::BodyAborted(e))),
            Some(None) | None => break,
        }
    }
    if batch.len() == 1 {
        return batch.pop().map(Ok);
    }
    let mut joined = BytesMut::with_capacity(batched);
    for chunk in batch {
        joined.extend_from_slice(&chunk);
    }
    Some(Ok(joined.freeze()))
}

fn encode_trailer(info: &PartInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity((table_len(info.len) + TAIL_LEN) as usize);
    for crc in &info.block_crcs {
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out.extend_from_slice(PART_MAGIC);
    out.extend_from_slice(&PART_VERSION.to_le_bytes());
    out.extend_from_slice(&info.len.to_le_bytes());
    out.extend_from_slice(&info.md5);
    out.extend_from_slice(&info.crc32c.to_le_bytes());
    let check = crc32c::crc32c(&out);
    out.extend_from_slice(&check.to_le_bytes());
    out
}

/// Reads and checks the trailer of a part file of `file_len` bytes; `None` if it is not one.
fn read_trailer(file: &std::fs::File, file_len: u64) -> io::Result<Option<PartInfo>> {
    if file_len < TAIL_LEN {
        return Ok(None);
    }
    let mut tail = [0u8; TAIL_LEN as usize];
    file.read_exact_at(&mut tail, file_len - TAIL_LEN)?;
    let len = u64::from_le_bytes(tail[6..14].try_into().expect("8 bytes"));
    if &tail[..4] != PART_MAGIC
        || u16::from_le_bytes([tail[4], tail[5]]) != PART_VERSION
        || len.checked_add(table_len(len) + TAIL_LEN) != Some(file_len)
    {
        return Ok(None);
    }
    let mut trailer = vec![0u8; (table_len(len) + TAIL_LEN) as usize];
    file.read_exact_at(&mut trailer, len)?;
    let (checked, stored) = trailer.split_at(trailer.len() - 4);
    if crc32c::crc32c(checked).to_le_bytes() != stored {
        return Ok(None);
    }
    let table_bytes = table_len(len) as usize;
    let block_crcs = trailer[..table_bytes]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Ok(Some(PartInfo {
        len,
        md5: tail[14..30].try_into().expect("16 bytes"),
        crc32c: u32::from_le_bytes(tail[30..34].try_into().expect("4 bytes")),
        block_crcs,
    }))
}

/// The entry's block table as far as the parts' own tables give it, and the index of the
/// first part (if any) that ends off the block grid: the table from there on must be computed
/// from the assembled bytes instead.
///
/// While every part starts on a block boundary, each of its whole blocks is one of the entry's
/// blocks with the same checksum, so the tables concatenate (nothing is read; the part files'
/// trailers carry their own checksum). The first part that ends inside a block breaks that: the
/// entry's block there straddles two parts, and every later part starts off the grid, so all
/// the entry's later blocks straddle part blocks. Their checksums could be combined with
/// `crc32c_combine` only from checksums of the exact sub-ranges, which would mean keeping a CRC
/// per byte offset a split could fall on; instead the rest of the body is read back from the
/// assembled file once (block by block, bounded memory) and checked against the parts' own
/// checksums, so the re-read doubles as a check of the copy. Real clients use part sizes in
/// whole MiB (5, 8, 16 MiB), which are block multiples and take the fast path.
fn table_from_parts(parts: &[PartSource]) -> (Vec<u32>, Option<usize>) {
    let mut table = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let is_last = i + 1 == parts.len();
        if is_last || part.info.len % BLOCK == 0 {
            table.extend_from_slice(&part.info.block_crcs);
        } else {
            let whole_blocks = (part.info.len / BLOCK) as usize;
            table.extend_from_slice(&part.info.block_crcs[..whole_blocks]);
            return (table, Some(i));
        }
    }
    (table, None)
}

/// The CRC32C of the body from the last (partial) block of `parts[off_grid]` to the end, from
/// the parts' checksums: that block's, then each later part's whole checksum.
fn crc_from(parts: &[PartSource], off_grid: usize) -> u32 {
    let first = &parts[off_grid].info;
    let start = *first
        .block_crcs
        .last()
        .expect("a part off the grid has a partial block");
    parts[off_grid + 1..].iter().fold(start, |crc, part| {
        crc32c::crc32c_combine(crc, part.info.crc32c, part.info.len as usize)
    })
}

/// The block checksums of the body from block `first_block` to the end, read from the file,
/// and the CRC32C of those bytes.
fn block_crcs_of(
    file: &std::fs::File,
    body_offset: u64,
    first_block: u64,
    body_len: u64,
) -> io::Result<(Vec<u32>, u32)> {
    let mut crcs = Vec::new();
    let mut whole = 0u32;
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut pos = first_block * BLOCK;
    while pos < body_len {
        let n = (body_len - pos).min(COPY_BUFFER as u64) as usize;
        file.read_exact_at(&mut buf[..n], body_offset + pos)?;
        crcs.extend(buf[..n].chunks(BLOCK as usize).map(crc32c::crc32c));
        // A second pass over bytes in the cache costs less than combining the block checksums
        // (`crc32c_combine` takes tens of microseconds per call).
        whole = crc32c::crc32c_append(whole, &buf[..n]);
        pos += n as u64;
    }
    Ok((crcs, whole))
}

/// Copies `len` bytes from the start of `source` to `at` in `dest`.
fn copy_part(
    source: &std::fs::File,
    dest: &std::fs::File,
    at: u64,
    len: u64,
    method: CopyMethod,
    stats: &mut CopyStats,
) -> io::Result<()> {
    let mut done = 0u64;
    if method == CopyMethod::Kernel {
        while done < len {
            let mut from = done;
            let mut to = at + done;
            let step = (len - done).min(KERNEL_COPY_STEP) as usize;
            match rustix::fs::copy_file_range(source, Some(&mut from), dest, Some(&mut to), step) {
                Ok(0) => return Err(short_part()),
                Ok(n) => {
                    done += n as u64;
                    stats.in_kernel += n as u64;
                }
                // Filesystems (or kernels) that cannot copy between these files: copy the rest
                // through the process.
                Err(
                    rustix::io::Errno::XDEV
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::INVAL,
                ) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut buf = vec![0u8; COPY_BUFFER.min((len - done) as usize)];
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        source
            .read_exact_at(&mut buf[..n], done)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => short_part(),
                _ => e,
            })?;
        dest.write_all_at(&buf[..n], at + done)?;
        done += n as u64;
        stats.through_process += n as u64;
    }
    Ok(())
}

/// `t` at the resolution the entry header keeps, so that the header returned by an assembly is
/// the one every later read finds.
fn whole_millis(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + std::time::Duration::from_millis(since.as_millis() as u64)
}

fn short_part() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "part file is shorter than its length",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(len: u64, crcs: Vec<u32>) -> PartSource {
        PartSource {
            path: PathBuf::new(),
            info: Arc::new(PartInfo {
                len,
                md5: [0; 16],
                crc32c: 0,
                block_crcs: crcs,
            }),
        }
    }

    #[test]
    fn tables_concatenate_while_parts_stay_on_the_block_grid() {
        let aligned = [
            source(2 * BLOCK, vec![1, 2]),
            source(BLOCK, vec![3]),
            source(10, vec![4]),
        ];
        assert_eq!(table_from_parts(&aligned), (vec![1, 2, 3, 4], None));
        let unaligned = [
            source(BLOCK, vec![1]),
            source(BLOCK + 10, vec![2, 3]),
            source(BLOCK, vec![4]),
        ];
        assert_eq!(table_from_parts(&unaligned), (vec![1, 2], Some(1)));
    }

    #[test]
    fn trailers_round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let body = vec![7u8; BLOCK as usize + 3];
        let mut blocks = BlockCrcs::default();
        blocks.append(&body);
        let info = PartInfo {
            len: body.len() as u64,
            md5: Md5::digest(&body).into(),
            crc32c: crc32c::crc32c(&body),
            block_crcs: blocks.into_crcs(),
        };
        let mut bytes = body.clone();
        bytes.extend(encode_trailer(&info));
        assert_eq!(bytes.len() as u64, part_file_len(info.len));
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(read_trailer(&file, bytes.len() as u64).unwrap(), Some(info));
        for at in [bytes.len() - 1, bytes.len() - 20, body.len() + 2] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            assert_eq!(read_trailer(&file, bad.len() as u64).unwrap(), None, "{at}");
        }
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(read_trailer(&file, bytes.len() as u64 - 1).unwrap(), None);
    }
}
