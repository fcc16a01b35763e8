//! Reading entries: open, check the header, verify the checksum, stream the body.
//!
//! Entries up to `verify_before_serve` bytes are verified completely before the first byte
//! leaves, so corruption is a clean miss. Larger entries are verified while streaming; the last
//! chunk is held back until the checksum matched, so a corrupted body is cut off with an error
//! and never arrives complete.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio_util::io::ReaderStream;

use super::DiskTier;
use crate::store::entry_file::EntryHeader;
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
    if file.metadata()?.len() != header.header_len + header.body_len {
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
            let reader = tokio::fs::File::from_std(file);
            let body: ByteStream = Box::pin(VerifyingStream {
                inner: ReaderStream::with_capacity(reader, READ_CHUNK),
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

/// Opens an entry and verifies what can be verified before the first byte is sent.
fn open_verified(disk: &DiskTier, key: &Key) -> Result<Option<Opened>, StoreError> {
    let path = disk.path_for(key);
    let (mut file, header) = match open_entry(&path, key) {
        Ok(Some(found)) => found,
        Ok(None) => {
            disk.lock().forget(key);
            return Ok(None);
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(key = %key, error = %e, "corrupt entry file removed");
            let mut index = disk.lock();
            let _ = std::fs::remove_file(&path);
            index.forget(key);
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
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
        if crc_of_rest(&mut file)? != header.crc32c {
            disk.discard_corrupt(key, FileId::of(&file)?);
            return Ok(None);
        }
        file.seek(SeekFrom::Start(header.header_len))?;
    }
    Ok(Some(Opened::File(file, header, verify_now)))
}

fn crc_of_rest(file: &mut std::fs::File) -> io::Result<u32> {
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

/// Streams a body, checking its length (always) and checksum (unless verified already),
/// holding the last chunk back until both matched.
struct VerifyingStream {
    inner: ReaderStream<tokio::fs::File>,
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
