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

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::index::Reservation;
use super::{Commit, DiskTier, TempFile};
use crate::store::entry_file::{table_len, EntryHeader, BLOCK};
use crate::store::{Key, ObjectAttrs, StoreError};
use md5::{Digest, Md5};

/// A disk-tier write in progress whose file can be read while it is written.
pub struct Spool {
    disk: DiskTier,
    key: Key,
    header: EntryHeader,
    file: Arc<std::fs::File>,
    temp: TempFile,
    /// `None` only after a failed write, which ends the spool.
    reservation: Option<Reservation>,
    written: u64,
    /// The body's MD5 so far, when the ETag is to be computed.
    md5: Option<Md5>,
    /// Checksums of the body's blocks so far (see [`crate::store::entry_file::BLOCK`]).
    blocks: BlockCrcs,
    etag: EtagSource,
    modified: Option<SystemTime>,
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
        let header = EntryHeader::unsealed(key, meta.attrs);
        let bytes = header.header_len + len + table_len(len);
        let header_len = header.header_len;
        let encoded = header.encode();
        let (file, temp, reservation) = self
            .blocking(
                move |disk| -> Result<(std::fs::File, TempFile, Reservation), StoreError> {
                    disk.lock().admit(bytes, &disk.inner.settings)?;
                    let mut reservation = Reservation::admitted(disk.clone(), bytes);
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
            key: key.clone(),
            header: EntryHeader {
                body_len: len,
                ..header
            },
            file: Arc::new(file),
            temp,
            reservation: Some(reservation),
            written: 0,
            md5: (meta.etag == EtagSource::Md5).then(Md5::new),
            blocks: BlockCrcs::default(),
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

    /// CRC32C of the body bytes written so far.
    pub fn crc32c(&self) -> u32 {
        self.blocks.crc32c()
    }

    /// Appends body bytes, reserving their space first (in steps of at least
    /// [`RESERVE_STEP`], evicting as needed). Writing more than the declared length fails, and
    /// so does every write after a failed one.
    pub async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        let end = self.written + data.len() as u64;
        if end > self.header.body_len {
            return Err(StoreError::LengthMismatch {
                declared: self.header.body_len,
                received: end,
            });
        }
        let mut reservation = self.reservation.take().ok_or_else(spool_failed)?;
        let file = self.file.clone();
        let at = self.header.header_len + self.written;
        let needed = at + data.len() as u64;
        let mut md5 = self.md5.take();
        let mut blocks = std::mem::take(&mut self.blocks);
        let (md5, blocks, reservation) = self
            .disk
            .blocking(
                move |_| -> Result<(Option<Md5>, BlockCrcs, Reservation), StoreError> {
                    if needed > reservation.reserved() {
                        let step = (needed - reservation.reserved()).max(RESERVE_STEP);
                        reservation.grow(step)?;
                    }
                    file.write_all_at(&data, at)?;
                    if let Some(md5) = md5.as_mut() {
                        md5.update(&data);
                    }
                    blocks.append(&data);
                    Ok((md5, blocks, reservation))
                },
            )
            .await??;
        self.md5 = md5;
        self.blocks = blocks;
        self.reservation = Some(reservation);
        self.written = end;
        Ok(())
    }

    /// Seals, fsyncs and commits the entry, which must be complete. Returns its header and
    /// whether it was committed.
    /// `committed` is false when a [`Commit::Fill`] found the key already written.
    pub async fn finish(mut self, mode: Commit) -> Result<(EntryHeader, bool), StoreError> {
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
            crc32c: self.blocks.crc32c(),
            modified: self.modified.unwrap_or_else(SystemTime::now),
            etag,
            ..self.header
        };
        let sealed = header.clone();
        let table = std::mem::take(&mut self.blocks).finish();
        let table_at = header.header_len + header.body_len;
        let Spool {
            disk,
            key,
            file,
            temp,
            reservation,
            ..
        } = self;
        let mut reservation = reservation.ok_or_else(spool_failed)?;
        let committed = disk
            .blocking(move |disk| -> Result<bool, StoreError> {
                reservation.grow(table.len() as u64)?;
                file.write_all_at(&table, table_at)?;
                sealed.seal(&mut &*file)?;
                file.sync_all()?;
                disk.commit(&key, temp, reservation, mode)
            })
            .await??;
        Ok((header, committed))
    }
}

/// Space is reserved for a body in steps of this size (or the rest of the body, if less): an
/// upload evicts entries only for what it has received, one bounded step ahead.
pub const RESERVE_STEP: u64 = 1024 * 1024;

/// CRC32C per block of body, computed as the body is written, and the whole body's CRC32C
/// combined from them (one pass over the bytes, not two).
#[derive(Debug, Default)]
pub(super) struct BlockCrcs {
    done: Vec<u32>,
    /// The CRC32C of the completed blocks, in order.
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
                self.whole = crc32c::crc32c_combine(self.whole, self.current, BLOCK as usize);
                self.done.push(std::mem::take(&mut self.current));
                self.filled = 0;
            }
        }
    }

    /// The CRC32C of everything appended so far.
    pub(super) fn crc32c(&self) -> u32 {
        if self.filled == 0 {
            self.whole
        } else {
            crc32c::crc32c_combine(self.whole, self.current, self.filled as usize)
        }
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

fn spool_failed() -> StoreError {
    StoreError::Io(std::io::Error::other("spool used after a failed write"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_crcs_combine_into_the_whole_bodys_crc() {
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

    fn blocks_len(blocks: &BlockCrcs) -> usize {
        blocks.done.len() * BLOCK as usize + blocks.filled as usize
    }
}
