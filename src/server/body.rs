//! Body plumbing between hyper and the store: response bodies from store streams, and request
//! bodies as store streams that fail on a stalled or short client.

use std::io;
use std::pin::Pin;
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

/// How fast a request body must arrive, and how much of a refused one is read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Bytes per second the client must average, after a head start of `stall_timeout`.
    pub min_rate: u64,
    /// Longest single pause.
    pub stall_timeout: Duration,
    /// A body nobody stores is read (and thrown away) up to this many bytes.
    pub max_discard: u64,
}

impl BodyLimits {
    /// How long the client may still take for its next bytes, having sent `received` bytes
    /// while we waited on it for `waited` in all.
    fn next_wait(&self, received: u64, waited: Duration) -> Duration {
        let earned =
            self.stall_timeout + Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        earned.saturating_sub(waited).min(self.stall_timeout)
    }
}

/// The error a body too slow for [`BodyLimits`] fails with; fronts answer it with 408.
pub fn is_too_slow(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::TimedOut
}

/// A request body as a store stream, held to [`BodyLimits`]: only the time spent waiting on the
/// client counts, so a slow store never makes a client look slow.
pub fn request_stream(body: Incoming, limits: BodyLimits) -> ByteStream {
    let data = BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(io::Error::other(e))),
        }
    });
    Box::pin(with_rate_limit(data, limits))
}

struct Paced<S> {
    inner: Pin<Box<S>>,
    received: u64,
    waited: Duration,
}

fn with_rate_limit(
    inner: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    limits: BodyLimits,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let start = Paced {
        inner: Box::pin(inner),
        received: 0,
        waited: Duration::ZERO,
    };
    futures_util::stream::unfold(Some(start), move |state| async move {
        let mut paced = state?;
        let allowed = limits.next_wait(paced.received, paced.waited);
        let asked = tokio::time::Instant::now();
        let next = tokio::time::timeout(allowed, paced.inner.next()).await;
        paced.waited += asked.elapsed();
        match next {
            Ok(Some(Ok(chunk))) => {
                paced.received += chunk.len() as u64;
                Some((Ok(chunk), Some(paced)))
            }
            Ok(Some(Err(e))) => Some((Err(e), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "request body too slow: {} bytes in {:.1}s (limits.body_min_rate, limits.body_stall_timeout)",
                        paced.received,
                        paced.waited.as_secs_f64()
                    ),
                )),
                None,
            )),
        }
    })
}

/// How much of a body was read, and whether to its end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Received {
    pub bytes: u64,
    /// False when reading stopped early (client gone, too slow, or past the discard bound): the
    /// connection cannot carry another request and is to be closed after the answer.
    pub complete: bool,
    /// The body was cut off for being too slow.
    pub too_slow: bool,
}

/// The reading end of an upload handed to a consumer that may stop early (a store refusing a
/// write because the disk or the upload queue is full). See [`upload`].
pub struct Upload {
    reader: tokio::task::JoinHandle<Received>,
}

impl Upload {
    /// Waits until the client's body has been read to its end, or the client is gone, or what
    /// is left to throw away passed the discard bound.
    pub async fn finish(self) -> Received {
        self.reader.await.unwrap_or_default()
    }
}

/// Splits a request body into a store stream and an [`Upload`] handle. A task reads the body
/// and passes each chunk on through a two-chunk channel (so memory stays bounded); if the
/// consumer drops its stream before the end, the task reads the rest and throws it away, up to
/// `max_discard` bytes past that point. The client thus finishes sending and sees the answer,
/// instead of a broken pipe that Gradle would retry and then report as an unrelated error.
/// One task per request in flight.
pub fn upload(body: Incoming, limits: BodyLimits) -> (ByteStream, Upload) {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
    let reader = tokio::spawn(read_body(body, limits, Some(tx)));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (Box::pin(stream), Upload { reader })
}

/// Reads and discards a request body up to its end or `max_discard` bytes, so the connection
/// can be reused and the client sees its upload complete.
pub async fn drain(body: Incoming, limits: BodyLimits) -> Received {
    read_body(body, limits, None).await
}

/// Reads a request body, passing each chunk to `consumer` while it takes them; once there is
/// none (or it gave up), reads on and throws the bytes away, up to `max_discard` of them.
async fn read_body(
    body: Incoming,
    limits: BodyLimits,
    mut consumer: Option<tokio::sync::mpsc::Sender<io::Result<Bytes>>>,
) -> Received {
    let mut source = request_stream(body, limits);
    let mut received = Received::default();
    let mut discarded = 0u64;
    while let Some(item) = source.next().await {
        match &item {
            Ok(chunk) => {
                received.bytes += chunk.len() as u64;
                if consumer.is_none() {
                    discarded += chunk.len() as u64;
                }
            }
            Err(e) => received.too_slow = is_too_slow(e),
        }
        let failed = item.is_err();
        if let Some(tx) = &consumer {
            if tx.send(item).await.is_err() {
                consumer = None; // the consumer gave up: keep draining
            }
        }
        if failed || discarded > limits.max_discard {
            return received;
        }
    }
    received.complete = true;
    received
}
