//! Reading an entry's spool file while another task writes it: the one way a request that
//! joined a fill is served, whether the fill is the read-through's (segments downloaded in
//! parallel) or the forward mode's (S3's answer teed as it passes).
//!
//! The reader reads at explicit offsets (`pread` of the shared handle), up to what the writer
//! reports as readable without a gap, or takes the same bytes from the writer's memory when it
//! still has them ([`Progress::in_memory`]). It holds the body's last byte back until the writer says
//! the whole body is in place (at its declared length, and verified where the writer verifies),
//! so a client never holds every byte of a `Content-Length` body that is not complete: a fill
//! that fails ends the reader's body with an error, never with a short body that looks whole.
//! A span short of the body's end is done once its own bytes are.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::spool::read_spooled;
use crate::store::ByteStream;

/// The most a reader reads from the spool file at once.
const BATCH: u64 = 256 * 1024;

/// Where the writer stands, as one reader at one position sees it.
pub enum Look {
    /// Bytes up to `upto` are readable without a gap from the reader's position; `complete`:
    /// the whole body is in place and readers may finish.
    Readable { upto: u64, complete: bool },
    /// The write failed (after the bytes already readable, which are still served).
    Failed { upto: u64, why: String },
}

/// A writer's progress, as a reader follows it.
pub trait Progress: Send + 'static {
    /// How far the body is readable from `pos`, and whether it is complete or failed.
    fn look(&mut self, pos: u64) -> Look;

    /// Waits for the writer's next step; an error when the writer is gone without a word.
    fn changed(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// The reader waits for the byte at `pos` (a hint the writer may act on).
    fn waiting_at(&mut self, _pos: u64) {}

    /// Bytes of the body from `pos`, up to at most `upto` (both readable), if the writer still
    /// has them in memory: the reader takes them instead of reading the spool file.
    fn in_memory(&mut self, _pos: u64, _upto: u64) -> Option<Bytes> {
        None
    }
}

/// A spool file being written: its handle, where the body starts, and the body's length.
pub struct Spooled {
    pub file: Arc<std::fs::File>,
    pub body_offset: u64,
    pub len: u64,
}

/// `span` of the body in `spooled`, read as `progress` says it becomes readable.
pub fn tail<P: Progress>(progress: P, spooled: Spooled, span: Range<u64>) -> ByteStream {
    let reader = Reader {
        progress,
        spooled,
        pos: span.start,
        end: span.end,
    };
    Box::pin(futures_util::stream::unfold(
        Some(reader),
        |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        },
    ))
}

struct Reader<P> {
    progress: P,
    spooled: Spooled,
    pos: u64,
    end: u64,
}

impl<P: Progress> Reader<P> {
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        let len = self.spooled.len;
        loop {
            let (upto, complete, failed) = match self.progress.look(self.pos) {
                Look::Readable { upto, complete } => (upto, complete, None),
                Look::Failed { upto, why } => (upto, false, Some(why)),
            };
            if self.pos >= self.end && (self.end < len || complete) {
                return Ok(None);
            }
            let readable = if complete {
                upto
            } else {
                upto.min(len.saturating_sub(1))
            }
            .min(self.end);
            if self.pos < readable {
                if let Some(chunk) = self.progress.in_memory(self.pos, readable) {
                    self.pos += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
                let n = (readable - self.pos).min(BATCH) as usize;
                let chunk = read_spooled(
                    self.spooled.file.clone(),
                    self.spooled.body_offset + self.pos,
                    n,
                )
                .await?;
                self.pos += chunk.len() as u64;
                return Ok(Some(chunk));
            }
            if let Some(why) = failed {
                return Err(io::Error::other(why));
            }
            self.progress.waiting_at(self.pos);
            self.progress.changed().await?;
        }
    }
}
