//! Body plumbing between hyper and the store: response bodies from store streams, and request
//! bodies as store streams that fail on a stalled or short client.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::store::ByteStream;

/// Every response body: boxed so that fronts can mix empty, small and streamed bodies.
pub type ResponseBody = UnsyncBoxBody<Bytes, io::Error>;

pub fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(data: impl Into<Bytes>) -> ResponseBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn stream(body: ByteStream) -> ResponseBody {
    StreamBody::new(body.map_ok(Frame::data)).boxed_unsync()
}

/// A request body as a store stream. A chunk that takes longer than `stall_timeout` to arrive
/// fails the stream, so a client that stops sending cannot hold a write open forever.
pub fn request_stream(body: Incoming, stall_timeout: Duration) -> ByteStream {
    let data = BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(io::Error::other(e))),
        }
    });
    Box::pin(with_stall_timeout(data, stall_timeout))
}

fn with_stall_timeout(
    inner: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    stall_timeout: Duration,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(Box::pin(inner)), move |state| async move {
        let mut inner = state?;
        match tokio::time::timeout(stall_timeout, inner.next()).await {
            Ok(Some(item)) => Some((item, Some(inner))),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request body stalled",
                )),
                None,
            )),
        }
    })
}

/// The reading end of an upload handed to a consumer that may stop early (a store refusing a
/// write because the disk or the upload queue is full). See [`upload`].
pub struct Upload {
    reader: tokio::task::JoinHandle<u64>,
}

impl Upload {
    /// Waits until the client's body has been read to its end (or the client is gone) and
    /// returns the bytes received.
    pub async fn finish(self) -> u64 {
        self.reader.await.unwrap_or(0)
    }
}

/// Splits a request body into a store stream and an [`Upload`] handle. A task reads the body
/// and passes each chunk on through a two-chunk channel (so memory stays bounded); if the
/// consumer drops its stream before the end, the task reads the rest and throws it away. The
/// client thus always finishes sending and sees the answer, instead of a broken pipe that
/// Gradle would retry and then report as an unrelated error. One task per request in flight.
pub fn upload(body: Incoming, stall_timeout: Duration) -> (ByteStream, Upload) {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
    let reader = tokio::spawn(async move {
        let mut source = request_stream(body, stall_timeout);
        let mut consumer = Some(tx);
        let mut total = 0u64;
        while let Some(item) = source.next().await {
            let failed = item.is_err();
            if let Ok(chunk) = &item {
                total += chunk.len() as u64;
            }
            if let Some(tx) = &consumer {
                if tx.send(item).await.is_err() {
                    consumer = None; // the consumer gave up: keep draining
                }
            }
            if failed {
                break;
            }
        }
        total
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (Box::pin(stream), Upload { reader })
}

/// Reads and discards a request body (up to its end), so the connection can be reused and the
/// client sees its upload complete.
pub async fn drain(body: Incoming, stall_timeout: Duration) -> u64 {
    let mut stream = request_stream(body, stall_timeout);
    let mut total = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        total += chunk.len() as u64;
    }
    total
}
