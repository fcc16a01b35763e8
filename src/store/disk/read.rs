//! Reading entries: open, check the header, verify the checksum, stream the body.
//!
//! Entries up to `verify_before_serve` bytes are verified completely before the first byte
//! leaves, so corruption is a clean miss. Larger entries are verified while streaming; the last
//! chunk is held back until the checksum matched, so a corrupted body is cut off with an error
//! and never arrives complete.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use std::future::Future;

use super::DiskTier;
use crate::store::backend::ByteRange;
use crate::store::entry_file::{EntryHeader, BLOCK};
use crate::store::{bytes_stream, ByteStream, Key, Object, StoreError, Tier};

const READ_CHUNK: usize = 256 * 1024;
/// Bodies up to this size are read whole while they are verified and served from that buffer.
const INLINE_MAX: u64 = 1024 * 1024;

/// Opens an entry file and checks that it is a complete entry for `key`.
/// `Ok(None)`: no such file, or it belongs to another key. `Err(InvalidData)`: corrupt.
pub fn open_entry(path: &Path, key: &Key) -> io::Result<Option<(std::fs::File, EntryHeader)>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let header = EntryHeader::read_from(&mut file).map_err(as_corrupt)?;
    if &header.key != key {
        return Ok(None);
    }
    if file.metadata()?.len() != header.file_len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "entry file has the wrong length",
        ));
    }
    Ok(Some((file, header)))
}

fn as_corrupt(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::InvalidData, "entry header truncated")
    } else {
        e
    }
}

/// A file's identity: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(file: &std::fs::File) -> io::Result<FileId> {
        let meta = file.metadata()?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether `path` still names this file.
    pub fn is_at(self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
}

/// Opens `key` for reading; corrupt entries are removed and reported as a miss.
pub async fn open_object(disk: DiskTier, key: Key) -> Result<Option<Object>, StoreError> {
    let opened = {
        let disk = disk.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || open_verified(&disk, &key))
            .await
            .map_err(io::Error::other)??
    };
    let (header, body) = match opened {
        None => return Ok(None),
        Some(Opened::Inline(header, data)) => (header, bytes_stream(data)),
        Some(Opened::File(file, header, verified)) => {
            // The inode, not a second descriptor: a response holds one file open, no more.
            let identity = FileId::of(&file)?;
            // Only the body: the block checksums follow it in the file.
            let body_start = header.header_len;
            let body: ByteStream = Box::pin(VerifyingStream {
                inner: FileChunks::new(file, body_start..body_start + header.body_len),
                expected_len: header.body_len,
                expected_crc: header.crc32c,
                verify: !verified,
                received: 0,
                crc: 0,
                held: None,
                on_corrupt: Some(Box::new(move || disk.discard_corrupt(&key, identity))),
            });
            (header, body)
        }
    };
    Ok(Some(Object {
        meta: header.meta(),
        body,
        tier: Tier::Disk,
    }))
}

/// An entry opened for reading.
enum Opened {
    /// A small body, read and verified whole in the same blocking call: no second read.
    Inline(EntryHeader, Bytes),
    /// A file positioned at its body; the flag says whether its checksum was verified already.
    File(std::fs::File, EntryHeader, bool),
}

/// Opens an indexed entry and checks its header: a missing file leaves the index, and a file
/// with a damaged header is removed; both are a miss.
fn open_indexed(
    disk: &DiskTier,
    key: &Key,
) -> Result<Option<(std::fs::File, EntryHeader)>, StoreError> {
    let path = disk.path_for(key);
    match open_entry(&path, key) {
        Ok(Some(found)) => Ok(Some(found)),
        Ok(None) => {
            disk.lock().forget(key);
            Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(key = %key, error = %e, "corrupt entry file removed");
            let mut index = disk.lock();
            let _ = std::fs::remove_file(&path);
            index.forget(key);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens an entry and verifies what can be verified before the first byte is sent.
fn open_verified(disk: &DiskTier, key: &Key) -> Result<Option<Opened>, StoreError> {
    let Some((mut file, header)) = open_indexed(disk, key)? else {
        return Ok(None);
    };
    if header.body_len <= INLINE_MAX {
        let mut data = vec![0u8; header.body_len as usize];
        file.read_exact(&mut data)?;
        if crc32c::crc32c(&data) != header.crc32c {
            disk.discard_corrupt(key, FileId::of(&file)?);
            return Ok(None);
        }
        return Ok(Some(Opened::Inline(header, Bytes::from(data))));
    }
    let verify_now = header.body_len <= disk.settings().verify_before_serve;
    if verify_now {
        if crc_of_body(&mut file, header.body_len)? != header.crc32c {
            disk.discard_corrupt(key, FileId::of(&file)?);
            return Ok(None);
        }
        file.seek(SeekFrom::Start(header.header_len))?;
    }
    Ok(Some(Opened::File(file, header, verify_now)))
}

fn crc_of_body(file: &mut std::fs::File, body_len: u64) -> io::Result<u32> {
    let mut file = Read::take(file, body_len);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut crc = 0u32;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

/// Part of a file as a stream of chunks, each read (`pread`, on the blocking pool) straight into
/// the buffer that is handed on, and the next read started as soon as a chunk is handed on, so
/// the disk read of one chunk overlaps the sending of the one before. (`tokio::fs::File` reads
/// into a buffer of its own and copies each byte once more into the reader's: for a large disk
/// hit that copy was two thirds of the daemon's instructions.) A file shorter than `span` ends
/// the stream early; the reader's length check says what that means.
struct FileChunks {
    file: std::sync::Arc<std::fs::File>,
    /// Where the next read starts, and where the span ends.
    next: u64,
    end: u64,
    /// The read running, and how many bytes it asked for.
    reading: Option<(tokio::task::JoinHandle<io::Result<Bytes>>, usize)>,
}

impl FileChunks {
    fn new(file: std::fs::File, span: Range<u64>) -> FileChunks {
        FileChunks {
            file: std::sync::Arc::new(file),
            next: span.start,
            end: span.end,
            reading: None,
        }
    }

    /// Starts the read of the next chunk, unless one is running or the span is done.
    fn read_ahead(&mut self) {
        if self.reading.is_some() || self.next >= self.end {
            return;
        }
        let (file, at) = (self.file.clone(), self.next);
        let len = (self.end - at).min(READ_CHUNK as u64) as usize;
        self.next += len as u64;
        let read = tokio::task::spawn_blocking(move || read_chunk(&file, at, len));
        self.reading = Some((read, len));
    }
}

/// Up to `len` bytes of `file` at `at`, read into the spare capacity of a new buffer (no
/// zeroing, no copy); fewer only at the end of the file.
pub(super) fn read_chunk(file: &std::fs::File, at: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let offset = at + buf.len() as u64;
        let read = rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), offset)?;
        if read == 0 {
            break;
        }
    }
    // The capacity may exceed `len`, and a read with it may go past the span.
    buf.truncate(len);
    Ok(Bytes::from(buf))
}

impl Stream for FileChunks {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.read_ahead();
        let Some((reading, asked)) = self.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let asked = *asked;
        let read = match Pin::new(reading).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(read) => read,
        };
        self.reading = None;
        match read {
            Ok(Ok(chunk)) if chunk.is_empty() => {
                self.next = self.end;
                Poll::Ready(None)
            }
            Ok(Ok(chunk)) => {
                if chunk.len() < asked {
                    // Short: the file ended. Nothing more to read.
                    self.next = self.end;
                }
                self.read_ahead();
                Poll::Ready(Some(Ok(chunk)))
            }
            Ok(Err(e)) => {
                self.next = self.end;
                Poll::Ready(Some(Err(e)))
            }
            Err(e) => {
                self.next = self.end;
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
        }
    }
}

/// Streams a body, checking its length (always) and checksum (unless verified already),
/// holding the last chunk back until both matched.
struct VerifyingStream {
    inner: FileChunks,
    expected_len: u64,
    expected_crc: u32,
    verify: bool,
    received: u64,
    crc: u32,
    held: Option<Bytes>,
    on_corrupt: Option<Box<dyn FnOnce() + Send>>,
}

impl VerifyingStream {
    fn corrupt(&mut self, why: &'static str) -> Poll<Option<io::Result<Bytes>>> {
        self.held = None;
        if let Some(discard) = self.on_corrupt.take() {
            // Removing the file is a blocking call; keep it off the async worker.
            tokio::task::spawn_blocking(discard);
        }
        Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, why))))
    }
}

impl Stream for VerifyingStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(chunk))) => {
                    self.received += chunk.len() as u64;
                    if self.received > self.expected_len {
                        return self.corrupt("entry body longer than its header says");
                    }
                    if self.verify {
                        self.crc = crc32c::crc32c_append(self.crc, &chunk);
                    }
                    if let Some(previous) = self.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(None) => {
                    if self.held.is_none() && self.on_corrupt.is_none() {
                        return Poll::Ready(None);
                    }
                    if self.received != self.expected_len {
                        return self.corrupt("entry body shorter than its header says");
                    }
                    if self.verify && self.crc != self.expected_crc {
                        return self.corrupt("entry checksum mismatch");
                    }
                    self.on_corrupt = None;
                    return Poll::Ready(self.held.take().map(Ok));
                }
            }
        }
    }
}

/// A read of part of an entry: the entry's metadata, and a body carrying only `span`.
pub struct RangedObject {
    pub object: Object,
    /// The part of the body the stream carries; `None` when the range selects nothing (416).
    pub span: Option<Range<u64>>,
}

/// Opens `key` for reading `range` of its body. Each block the span touches is read whole and
/// checked against its block checksum before any of its bytes leave, so a range is verified
/// without reading the rest of the body; a block that fails removes the entry and ends the
/// body with an error. An entry of format 1 has no block checksums: for a range it is a miss.
pub async fn open_range(
    disk: DiskTier,
    key: Key,
    range: ByteRange,
) -> Result<Option<RangedObject>, StoreError> {
    let opened = {
        let disk = disk.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || open_blocks(&disk, &key, range))
            .await
            .map_err(io::Error::other)??
    };
    let Some((file, header, span, table)) = opened else {
        return Ok(None);
    };
    let meta = header.meta();
    let Some(span) = span else {
        let object = Object {
            meta,
            body: bytes_stream(Bytes::new()),
            tier: Tier::Disk,
        };
        return Ok(Some(RangedObject { object, span: None }));
    };
    let identity = FileId::of(&file)?;
    let reader = BlockReader {
        file: std::sync::Arc::new(file),
        body_offset: header.header_len,
        body_len: header.body_len,
        span: span.clone(),
        pos: span.start,
        first_block: span.start / BLOCK,
        table,
        on_corrupt: Some(Box::new(move || disk.discard_corrupt(&key, identity))),
    };
    let body = futures_util::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        if reader.pos >= reader.span.end {
            return None;
        }
        match reader.next_block().await {
            Ok(bytes) => Some((Ok(bytes), Some(reader))),
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(Some(RangedObject {
        object: Object {
            meta,
            body: Box::pin(body),
            tier: Tier::Disk,
        },
        span: Some(span),
    }))
}

type OpenedBlocks = (std::fs::File, EntryHeader, Option<Range<u64>>, Vec<u32>);

/// Opens an entry and reads the block checksums a range needs.
fn open_blocks(
    disk: &DiskTier,
    key: &Key,
    range: ByteRange,
) -> Result<Option<OpenedBlocks>, StoreError> {
    if !disk.lock().touch(key) {
        return Ok(None);
    }
    let Some((file, header)) = open_indexed(disk, key)? else {
        return Ok(None);
    };
    if !header.block_crcs {
        return Ok(None);
    }
    let Some(span) = range.resolve(header.body_len) else {
        return Ok(Some((file, header, None, Vec::new())));
    };
    let first = span.start / BLOCK;
    let last = (span.end - 1) / BLOCK;
    let mut raw = vec![0u8; ((last - first + 1) * 4) as usize];
    file.read_exact_at(&mut raw, header.header_len + header.body_len + first * 4)?;
    let table = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Ok(Some((file, header, Some(span), table)))
}

/// Reads a span block by block, verifying each block before its bytes are passed on.
struct BlockReader {
    file: std::sync::Arc<std::fs::File>,
    body_offset: u64,
    body_len: u64,
    span: Range<u64>,
    pos: u64,
    first_block: u64,
    table: Vec<u32>,
    on_corrupt: Option<Box<dyn FnOnce() + Send>>,
}

impl BlockReader {
    async fn next_block(&mut self) -> io::Result<Bytes> {
        let block = self.pos / BLOCK;
        let block_start = block * BLOCK;
        let block_end = (block_start + BLOCK).min(self.body_len);
        let expected = self.table[(block - self.first_block) as usize];
        let file = self.file.clone();
        let at = self.body_offset + block_start;
        let data = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
            let mut data = vec![0u8; (block_end - block_start) as usize];
            file.read_exact_at(&mut data, at)?;
            Ok(data)
        })
        .await
        .map_err(io::Error::other)??;
        if crc32c::crc32c(&data) != expected {
            if let Some(discard) = self.on_corrupt.take() {
                tokio::task::spawn_blocking(discard);
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "entry block checksum mismatch",
            ));
        }
        let from = (self.span.start.max(block_start) - block_start) as usize;
        let to = (self.span.end.min(block_end) - block_start) as usize;
        self.pos = block_end;
        Ok(Bytes::from(data).slice(from..to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn chunks_of(file: std::fs::File, span: Range<u64>) -> Vec<Bytes> {
        FileChunks::new(file, span)
            .map(|chunk| chunk.unwrap())
            .collect()
            .await
    }

    #[tokio::test]
    async fn file_chunks_carry_exactly_the_span_and_stop_where_the_file_does() {
        let data: Vec<u8> = (0..(READ_CHUNK * 2 + 1000))
            .map(|i| (i % 251) as u8)
            .collect();
        let path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        std::fs::write(&path, &data).unwrap();
        let open = || std::fs::File::open(&path).unwrap();

        // A span that is not a multiple of the chunk size, starting past a "header".
        let span = 100..data.len() as u64 - 7;
        let chunks = chunks_of(open(), span.clone()).await;
        assert!(chunks.iter().all(|c| c.len() <= READ_CHUNK));
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks.concat(),
            data[span.start as usize..span.end as usize]
        );

        // A span past the file's end: what the file has, then the end (no error, no zeros).
        let beyond = READ_CHUNK as u64..data.len() as u64 + 5000;
        let chunks = chunks_of(open(), beyond).await;
        assert_eq!(chunks.concat(), data[READ_CHUNK..]);

        // An empty span is an empty stream.
        assert!(chunks_of(open(), 10..10).await.is_empty());
    }
}
