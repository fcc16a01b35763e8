//! Spooling: the one write path of the disk tier, which other tasks can read as it grows.
//!
//! Every entry is written through a [`Spool`] ([`DiskTier::put_entry`] feeds it a client's
//! body in batches). A read-through fills the disk tier from S3 while clients are served from the same bytes. The
//! filler writes through a [`Spool`]; readers share its open file ([`Spool::file`]) and read
//! at explicit offsets (`pread`), up to what the filler reports as written. The file is the
//! entry's temp file: [`Spool::finish`] checks the length, seals, fsyncs and commits it like
//! any other write, and a spool dropped before that is an aborted write (file removed, space
//! released). Readers' handles stay valid across the rename into place and across the removal,
//! since they hold the inode, not the path.
//!
//! A spool may be cut into segments ([`Spool::with_segments`]) that are written independently,
//! each from its start and in order: a fill downloads several parts of one object at once.
//! Segments are whole blocks, so each keeps its own block checksums and the entry's table is
//! theirs end to end.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::index::Reservation;
use super::read::read_chunk;
use super::{Commit, DiskTier, Sealed, TempFile, Version};
use crate::store::entry_file::{table_len, EntryHeader, BLOCK};
use crate::store::{Key, ObjectAttrs, StoreError};
use md5::{Digest, Md5};

/// A disk-tier write in progress whose file can be read while it is written.
pub struct Spool {
    disk: DiskTier,
    header: EntryHeader,
    file: Arc<std::fs::File>,
    temp: TempFile,
    /// `None` only after a failed write, which ends the spool.
    reservation: Option<Reservation>,
    /// Body bytes written, over all segments.
    written: u64,
    /// The body's MD5 so far, when the ETag is to be computed (one segment only).
    md5: Option<Md5>,
    /// Length of every segment but the last: a multiple of [`BLOCK`].
    segment_len: u64,
    segments: Vec<Segment>,
    etag: EtagSource,
    modified: Option<SystemTime>,
}

/// How a write's space is held from other writes.
#[derive(Debug, Clone, Copy)]
enum Admission {
    /// All of it promised at the start: once admitted, the write can finish.
    Promised,
    /// Taken as the bytes arrive, nothing promised.
    AsBytesArrive,
    /// As [`Admission::AsBytesArrive`], for a body whose length is not known: only its header
    /// has to fit at the start.
    Unsized,
}

/// What a write says about its entry besides the body.
#[derive(Debug, Clone, Default)]
pub struct EntryMeta {
    pub attrs: ObjectAttrs,
    pub etag: EtagSource,
    /// The object's date. `None`: the time of the commit; a copy filled from S3 keeps S3's
    /// Last-Modified, so it reads the same on every node.
    pub modified: Option<SystemTime>,
}

/// Where an entry's ETag comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EtagSource {
    /// None (Gradle entries: content-addressed, nobody asks).
    #[default]
    None,
    /// The hex MD5 of the body, computed as it is written (S3's ETag of a single PUT).
    Md5,
    /// Known already: the origin's, or a multipart upload's.
    Known(String),
}

impl DiskTier {
    /// [`DiskTier::spool_with`] for an entry with no ETag or attributes.
    pub async fn spool(&self, key: &Key, len: u64) -> Result<Spool, StoreError> {
        self.spool_with(key, len, EntryMeta::default()).await
    }

    /// Starts writing an entry of exactly `len` body bytes: admits it (refused at once when it
    /// could never fit, evicting nothing) and creates its temp file with an unsealed header.
    /// Space is reserved, evicting as needed, as the body is written.
    pub async fn spool_with(
        &self,
        key: &Key,
        len: u64,
        meta: EntryMeta,
    ) -> Result<Spool, StoreError> {
        self.spool_admitted(key, len, meta, Admission::Promised)
            .await
    }

    /// [`DiskTier::spool_with`] for a write whose declared length is a client's word: nothing
    /// is promised up front (a declaration alone holds no space from other writes), its space
    /// is taken as its bytes arrive, and a write finding no room then fails.
    pub async fn spool_as_bytes_arrive(
        &self,
        key: &Key,
        len: u64,
        meta: EntryMeta,
    ) -> Result<Spool, StoreError> {
        self.spool_admitted(key, len, meta, Admission::AsBytesArrive)
            .await
    }

    /// [`DiskTier::spool_as_bytes_arrive`] for a body of undeclared length, at most `limit`
    /// bytes: written as it arrives, then ended with [`Spool::end_here`].
    pub async fn spool_up_to(
        &self,
        key: &Key,
        limit: u64,
        meta: EntryMeta,
    ) -> Result<Spool, StoreError> {
        self.spool_admitted(key, limit, meta, Admission::Unsized)
            .await
    }

    async fn spool_admitted(
        &self,
        key: &Key,
        len: u64,
        meta: EntryMeta,
        admission: Admission,
    ) -> Result<Spool, StoreError> {
        let header = EntryHeader::unsealed(key, meta.attrs);
        let bytes = header.header_len + len + table_len(len);
        let header_len = header.header_len;
        let encoded = header.encode();
        let (file, temp, reservation) = self
            .blocking(
                move |disk| -> Result<(std::fs::File, TempFile, Reservation), StoreError> {
                    let mut reservation = match admission {
                        Admission::Promised => {
                            disk.lock().admit(bytes, &disk.inner.settings)?;
                            Reservation::admitted(disk.clone(), bytes)
                        }
                        Admission::AsBytesArrive => {
                            disk.lock().check_fits(bytes, &disk.inner.settings)?;
                            Reservation::as_bytes_arrive(disk.clone(), bytes)
                        }
                        Admission::Unsized => {
                            disk.lock().check_fits(header_len, &disk.inner.settings)?;
                            Reservation::as_bytes_arrive(disk.clone(), bytes)
                        }
                    };
                    reservation.grow(header_len)?;
                    let temp = TempFile::new(&disk.inner.tmp_dir);
                    let file = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(&temp.path)?;
                    file.write_all_at(&encoded, 0)?;
                    Ok((file, temp, reservation))
                },
            )
            .await??;
        Ok(Spool {
            disk: self.clone(),
            header: EntryHeader {
                body_len: len,
                ..header
            },
            file: Arc::new(file),
            temp,
            reservation: Some(reservation),
            written: 0,
            md5: (meta.etag == EtagSource::Md5).then(Md5::new),
            segment_len: segment_len_for(len, None),
            segments: vec![Segment::default()],
            etag: meta.etag,
            modified: meta.modified,
        })
    }
}

impl Spool {
    /// The file being written; read the body at [`Spool::body_offset`] + n with `read_at`.
    pub fn file(&self) -> Arc<std::fs::File> {
        self.file.clone()
    }

    /// Where the body starts in the file.
    pub fn body_offset(&self) -> u64 {
        self.header.header_len
    }

    /// Declared body length.
    pub fn len(&self) -> u64 {
        self.header.body_len
    }

    pub fn is_empty(&self) -> bool {
        self.header.body_len == 0
    }

    /// Body bytes written so far (readable by any holder of [`Spool::file`]).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Cuts the body into segments of `segment_len` bytes (a multiple of [`BLOCK`]) that may be
    /// written independently with [`Spool::write_at`]. Only before the first write, and not for
    /// a body whose MD5 is computed as it is written.
    pub fn with_segments(mut self, segment_len: u64) -> Spool {
        assert!(
            self.written == 0 && self.md5.is_none(),
            "segments are set before any write, on a spool with no MD5"
        );
        self.segment_len = segment_len_for(self.header.body_len, Some(segment_len));
        let count = self.header.body_len.div_ceil(self.segment_len).max(1);
        self.segments = (0..count).map(|_| Segment::default()).collect();
        self
    }

    /// CRC32C of the whole body (meaningful once it is complete).
    pub fn crc32c(&self) -> u32 {
        self.segments.iter().fold(0, |whole, segment| {
            crc32c::crc32c_combine(whole, segment.blocks.crc32c(), segment.written as usize)
        })
    }

    /// Appends body bytes after those written so far (a spool of one segment).
    pub async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.write_at(self.written, data).await
    }

    /// Writes body bytes at `at`, which must be where the segment holding it has been written
    /// up to (a run may go on into the next segments, from their starts). Space is reserved
    /// first, in steps of at least [`RESERVE_STEP`], evicting as needed. Writing past the
    /// declared length fails, and so does every write after a failed one.
    pub async fn write_at(&mut self, at: u64, data: Bytes) -> Result<(), StoreError> {
        self.write_chunks_at(at, vec![data]).await
    }

    /// [`Spool::write_at`] of `chunks` end to end, in one vectored write: the bytes are written
    /// from the buffers they arrived in, never gathered into one first.
    pub async fn write_chunks_at(&mut self, at: u64, chunks: Vec<Bytes>) -> Result<(), StoreError> {
        let len: u64 = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        let end = at + len;
        if end > self.header.body_len {
            return Err(StoreError::LengthMismatch {
                declared: self.header.body_len,
                received: end,
            });
        }
        // The segments this write touches, each from where it stands.
        let mut pieces = Vec::new();
        let mut pos = at;
        while pos < end {
            let index = (pos / self.segment_len) as usize;
            let segment_start = index as u64 * self.segment_len;
            if self.segments[index].written != pos - segment_start {
                return Err(StoreError::Io(std::io::Error::other(format!(
                    "spool write at {pos} is not where segment {index} stands"
                ))));
            }
            let piece_end = end.min(segment_start + self.segment_len);
            pieces.push((index, pos - at..piece_end - at));
            pos = piece_end;
        }
        // Checked all before taking any: a refused write leaves the spool as it was.
        let mut pieces: Vec<_> = pieces
            .into_iter()
            .map(|(index, span)| {
                let blocks = std::mem::take(&mut self.segments[index].blocks);
                (index, span, blocks)
            })
            .collect();
        let mut reservation = self.reservation.take().ok_or_else(spool_failed)?;
        let file = self.file.clone();
        let file_at = self.header.header_len + at;
        let needed = file_at + len;
        let mut md5 = self.md5.take();
        let (md5, pieces, reservation) = self
            .disk
            .blocking(move |_| -> Result<_, StoreError> {
                if needed > reservation.reserved() {
                    let step = (needed - reservation.reserved()).max(RESERVE_STEP);
                    reservation.grow(step)?;
                }
                write_all_vectored_at(&file, &chunks, file_at)?;
                if let Some(md5) = md5.as_mut() {
                    chunks.iter().for_each(|chunk| md5.update(chunk));
                }
                for (_, span, blocks) in pieces.iter_mut() {
                    for_each_slice(&chunks, span.clone(), |slice| blocks.append(slice));
                }
                Ok((md5, pieces, reservation))
            })
            .await??;
        self.md5 = md5;
        for (index, span, blocks) in pieces {
            let segment = &mut self.segments[index];
            segment.blocks = blocks;
            segment.written += span.end - span.start;
        }
        self.reservation = Some(reservation);
        self.written += len;
        Ok(())
    }

    /// Replaces the value of the kept header `name` (a placeholder put there when the spool
    /// began) with `value`, which must be as long: the header's length is fixed.
    pub fn fill_kept(&mut self, name: &str, value: &str) -> Result<(), StoreError> {
        let slot = self
            .header
            .attrs
            .kept
            .iter_mut()
            .find(|(kept, placeholder)| kept == name && placeholder.len() == value.len())
            .ok_or_else(|| {
                StoreError::Io(std::io::Error::other(format!(
                    "no placeholder of {} bytes for {name}",
                    value.len()
                )))
            })?;
        slot.1 = value.to_string();
        Ok(())
    }

    /// Ends a body of undeclared length ([`DiskTier::spool_up_to`]) where it stands: the entry
    /// is the bytes written so far, and the space reserved ahead of them goes back.
    pub fn end_here(&mut self) -> Result<(), StoreError> {
        assert_eq!(self.segments.len(), 1, "an unsized body is one segment");
        self.header.body_len = self.written;
        let file_len = self.header.header_len + self.written + table_len(self.written);
        self.reservation
            .as_mut()
            .ok_or_else(spool_failed)?
            .end_at(file_len);
        Ok(())
    }

    /// Seals, fsyncs and commits the entry, which must be complete. Returns its header and
    /// its version, `None` when a [`Commit::Fill`] found the key changed since the fill began.
    pub async fn finish(self, mode: Commit) -> Result<(EntryHeader, Option<Version>), StoreError> {
        let sealed = self.seal().await?;
        let header = sealed.header().clone();
        Ok((header, sealed.commit(mode).await?))
    }

    /// Seals and fsyncs the entry, which must be complete, without making it visible: see
    /// [`Sealed`].
    pub async fn seal(mut self) -> Result<Sealed, StoreError> {
        if self.written != self.header.body_len {
            return Err(StoreError::LengthMismatch {
                declared: self.header.body_len,
                received: self.written,
            });
        }
        let etag = match (&self.etag, self.md5.take()) {
            (EtagSource::Known(etag), _) => Some(etag.clone()),
            (EtagSource::Md5, Some(md5)) => Some(hex::encode(md5.finalize())),
            _ => None,
        };
        let header = EntryHeader {
            crc32c: self.crc32c(),
            modified: self.modified.unwrap_or_else(SystemTime::now),
            etag,
            ..self.header
        };
        let sealed = header.clone();
        // Every segment but the last is whole blocks: the tables join end to end.
        let table: Vec<u8> = std::mem::take(&mut self.segments)
            .into_iter()
            .flat_map(|segment| segment.blocks.finish())
            .collect();
        let table_at = header.header_len + header.body_len;
        let Spool {
            disk,
            file,
            temp,
            reservation,
            ..
        } = self;
        let mut reservation = reservation.ok_or_else(spool_failed)?;
        let written = file.clone();
        let reservation = disk
            .blocking(move |_| -> Result<Reservation, StoreError> {
                reservation.grow(table.len() as u64)?;
                written.write_all_at(&table, table_at)?;
                sealed.seal(&mut &*written)?;
                written.sync_all()?;
                Ok(reservation)
            })
            .await??;
        Ok(Sealed {
            disk,
            header,
            file,
            temp,
            reservation,
        })
    }
}

/// Reads `n` bytes at `at` of a spool's file (its body starts at [`Spool::body_offset`]) off the
/// async threads: how readers tail a spool that another task is writing.
pub async fn read_spooled(file: Arc<std::fs::File>, at: u64, n: usize) -> std::io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let chunk = read_chunk(&file, at, n)?;
        if chunk.len() < n {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "spool file ends {} bytes into a read of {n} at {at}",
                    chunk.len()
                ),
            ));
        }
        Ok(chunk)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Writes `chunks` end to end at `at` of `file`, in as few `pwritev` calls as the kernel allows.
fn write_all_vectored_at(file: &std::fs::File, chunks: &[Bytes], at: u64) -> std::io::Result<()> {
    // Linux takes at most IOV_MAX (1024) buffers per call.
    const MAX_BUFFERS: usize = 1024;
    let mut at = at;
    for group in chunks.chunks(MAX_BUFFERS) {
        let mut slices: Vec<std::io::IoSlice<'_>> = group
            .iter()
            .map(|chunk| std::io::IoSlice::new(chunk))
            .collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let written = rustix::io::pwritev(file, slices, at)?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            at += written as u64;
            std::io::IoSlice::advance_slices(&mut slices, written);
        }
    }
    Ok(())
}

/// Calls `f` with the parts of `chunks` (taken end to end) that fall in `span`, in order.
fn for_each_slice(chunks: &[Bytes], span: std::ops::Range<u64>, mut f: impl FnMut(&[u8])) {
    let mut start = 0u64;
    for chunk in chunks {
        let end = start + chunk.len() as u64;
        if end > span.start && start < span.end {
            let from = span.start.saturating_sub(start) as usize;
            let to = (span.end.min(end) - start) as usize;
            f(&chunk[from..to]);
        }
        start = end;
    }
}

/// One independently written piece of a spool's body.
#[derive(Debug, Default)]
struct Segment {
    written: u64,
    blocks: BlockCrcs,
}

/// The segment length of a `len`-byte body: `wanted` rounded up to whole blocks, or the whole
/// body as one segment.
fn segment_len_for(len: u64, wanted: Option<u64>) -> u64 {
    match wanted {
        Some(wanted) => wanted.div_ceil(BLOCK).max(1) * BLOCK,
        None => len.div_ceil(BLOCK).max(1) * BLOCK,
    }
}

/// Space is reserved for a body in steps of this size (or the rest of the body, if less): an
/// upload evicts entries only for what it has received, one bounded step ahead.
pub const RESERVE_STEP: u64 = 1024 * 1024;

/// CRC32C per block of body, and of the whole body, computed as the body is written.
///
/// Each byte is hashed once, into its block's CRC; the whole body's CRC is the blocks' CRCs
/// combined as each block completes, with [`append_block`] (a few table lookups), not
/// `crc32c_combine`, which costs tens of microseconds per call (a GF(2) matrix power: on 1 GiB,
/// 390–550 ms with a combine per block against 300–330 ms for a second hardware pass over the
/// bytes, which this replaces).
#[derive(Debug, Default)]
pub(super) struct BlockCrcs {
    done: Vec<u32>,
    /// The CRC32C of the complete blocks, `done` combined.
    whole: u32,
    current: u32,
    filled: u64,
}

impl BlockCrcs {
    pub(super) fn append(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = ((BLOCK - self.filled) as usize).min(data.len());
            self.current = crc32c::crc32c_append(self.current, &data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == BLOCK {
                let block = std::mem::take(&mut self.current);
                self.whole = append_block(self.whole, block);
                self.done.push(block);
                self.filled = 0;
            }
        }
    }

    /// The CRC32C of everything appended so far.
    pub(super) fn crc32c(&self) -> u32 {
        if self.filled == 0 {
            return self.whole;
        }
        crc32c::crc32c_combine(self.whole, self.current, self.filled as usize)
    }

    /// The table as stored after the body.
    fn finish(self) -> Vec<u8> {
        self.into_crcs()
            .iter()
            .flat_map(|crc| crc.to_le_bytes())
            .collect()
    }

    /// One CRC32C per block, the last block possibly shorter.
    pub(super) fn into_crcs(mut self) -> Vec<u32> {
        if self.filled > 0 {
            self.done.push(self.current);
        }
        self.done
    }
}

/// The CRC32C of a body of CRC `before` followed by one [`BLOCK`] of CRC `block`: what
/// `crc32c::crc32c_combine(before, block, BLOCK)` computes, by table. Combining is linear in
/// `before` (it is `before` times x^(8 * BLOCK) modulo the polynomial, then `^ block`), so the
/// product is the XOR of the products of its bytes, four tables of 256 made once from the 32
/// products of its bits.
fn append_block(before: u32, block: u32) -> u32 {
    static TABLES: std::sync::OnceLock<[[u32; 256]; 4]> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let bits: Vec<u32> = (0..32)
            .map(|bit| crc32c::crc32c_combine(1 << bit, 0, BLOCK as usize))
            .collect();
        let mut tables = [[0u32; 256]; 4];
        for (byte, table) in tables.iter_mut().enumerate() {
            for (value, product) in table.iter_mut().enumerate() {
                *product = (0..8)
                    .filter(|bit| value >> bit & 1 == 1)
                    .fold(0, |acc, bit| acc ^ bits[8 * byte + bit]);
            }
        }
        tables
    });
    let [b0, b1, b2, b3] = before.to_le_bytes();
    tables[0][b0 as usize]
        ^ tables[1][b1 as usize]
        ^ tables[2][b2 as usize]
        ^ tables[3][b3 as usize]
        ^ block
}

fn spool_failed() -> StoreError {
    StoreError::Io(std::io::Error::other("spool used after a failed write"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_crcs_and_the_whole_bodys_crc_agree_at_every_step() {
        let data: Vec<u8> = (0..3 * BLOCK as usize + 12345)
            .map(|i| (i * 7) as u8)
            .collect();
        let mut blocks = BlockCrcs::default();
        for piece in data.chunks(100_003) {
            blocks.append(piece);
            assert_eq!(
                blocks.crc32c(),
                crc32c::crc32c(&data[..blocks_len(&blocks)])
            );
        }
        assert_eq!(blocks.crc32c(), crc32c::crc32c(&data));
        let table = blocks.finish();
        assert_eq!(table.len(), 4 * 4);
        let last = u32::from_le_bytes(table[12..16].try_into().unwrap());
        assert_eq!(last, crc32c::crc32c(&data[3 * BLOCK as usize..]));
    }

    #[test]
    fn a_block_appended_by_table_is_what_crc32c_combine_gives() {
        let mut state = 0x9e37_79b9u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for before in [0, 1, u32::MAX, 0x8000_0000] {
            assert_eq!(
                append_block(before, 7),
                crc32c::crc32c_combine(before, 7, BLOCK as usize)
            );
        }
        for _ in 0..1000 {
            let (before, block) = (next(), next());
            assert_eq!(
                append_block(before, block),
                crc32c::crc32c_combine(before, block, BLOCK as usize)
            );
        }
    }

    fn blocks_len(blocks: &BlockCrcs) -> usize {
        blocks.done.len() * BLOCK as usize + blocks.filled as usize
    }
}
