//! A request body that is a region of an open file, read at explicit offsets off the async
//! threads: what every part of an upload and every retry of it sends. The SDK asks
//! [`region_body`] for a fresh body per attempt; each one reads the same handle, so the bytes
//! are those of the file version the upload was given, whatever has been renamed over its path
//! since.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

/// Bytes read per step: large enough for efficient I/O, small enough to keep an upload's
/// memory at a few of these per part in flight.
const READ_STEP: u64 = 512 * 1024;

/// `len` bytes of `file` from `offset`, as a body the SDK can start again for a retry.
pub fn region_body(file: Arc<File>, offset: u64, len: u64) -> SdkStream {
    SdkStream::new(SdkBody::retryable(move || {
        SdkBody::from_body_1_x(FileRegion {
            file: file.clone(),
            at: offset,
            remaining: len,
            reading: None,
        })
    }))
}

/// One attempt's reader of the region.
struct FileRegion {
    file: Arc<File>,
    at: u64,
    remaining: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl http_body::Body for FileRegion {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let reading = this.reading.get_or_insert_with(|| {
            let (file, at, n) = (this.file.clone(), this.at, this.remaining.min(READ_STEP));
            tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n as usize];
                file.read_exact_at(&mut buf, at)?;
                Ok(Bytes::from(buf))
            })
        });
        let read = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        let data = match read {
            Ok(Ok(data)) => data,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(joined) => return Poll::Ready(Some(Err(io::Error::other(joined)))),
        };
        this.at += data.len() as u64;
        this.remaining -= data.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn every_attempt_reads_the_region_of_the_handle_not_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        let data: Vec<u8> = (0..3 * READ_STEP as usize + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        // A newer version renamed over the path after the upload opened its handle.
        let newer = dir.path().join("newer");
        std::fs::File::create(&newer)
            .unwrap()
            .write_all(&vec![0xee; data.len()])
            .unwrap();
        std::fs::rename(&newer, &path).unwrap();
        let body = region_body(file, 5, data.len() as u64 - 10);
        let first = body.into_inner();
        let retry = first.try_clone().expect("a retryable body");
        for attempt in [first, retry] {
            let read = SdkStream::new(attempt)
                .collect()
                .await
                .unwrap()
                .into_bytes();
            assert_eq!(&read[..], &data[5..data.len() - 5]);
        }
    }
}
