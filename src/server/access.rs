//! One access log line and the request metrics for every request, in one place for all fronts.
//!
//! A front attaches an [`Outcome`] to its response; the response body is wrapped so that the
//! line is written when the body has been sent (or abandoned), with the real byte count and
//! duration.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::body::ResponseBody;
use super::deadline::ActiveRequest;
use super::Front;
use crate::logging::access_line::AccessLine;
use crate::metrics::Metrics;
use crate::store::Tier;

/// What a front did with a request, for the access log.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// A short word: "hit", "miss", "stored", "dropped", "unauthorized", ...
    pub outcome: &'static str,
    /// The tier that answered a hit.
    pub tier: Option<Tier>,
    /// The key's namespace, when the request named one.
    pub namespace: Option<String>,
    /// Request body bytes taken in.
    pub received: u64,
    /// The protocol's name for what was asked (S3: `GetObject`, `PutObject`, ...), for fronts
    /// with more than one kind of request per method.
    pub operation: Option<&'static str>,
    /// Where the request was addressed (`host[:port]`), as the front read it: for the S3
    /// listener, whose bucket may be in the host, the same authority it routed and checked the
    /// signature against.
    pub authority: Option<String>,
    /// Answered by the S3 listener's forward mode (for the per-front hit ratios).
    pub forward: bool,
}

impl Outcome {
    pub fn new(outcome: &'static str) -> Self {
        Outcome {
            outcome,
            ..Outcome::default()
        }
    }
}

/// Runs `front` on one request and arranges its access log line and metrics: when the response
/// body has been sent or abandoned, or, if the client goes away before the front answers, when
/// the request is dropped (logged with status 499, as nginx does, and outcome `client_gone`).
pub async fn instrument<F: Front>(
    front: &F,
    metrics: &Arc<Metrics>,
    peer: SocketAddr,
    active: ActiveRequest,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let mut unanswered = Unanswered(Some(Record {
        metrics: metrics.clone(),
        front: front.name(),
        method: method_label(req.method()),
        status: CLIENT_GONE,
        expected: None,
        path: req.uri().path().to_string(),
        peer,
        outcome: Outcome::new("client_gone"),
        started: Instant::now(),
        sent: 0,
        finished: false,
        _active: active,
    }));
    let response = front.handle(req).await;
    let mut record = unanswered.0.take().expect("taken only here");
    record.outcome = response
        .extensions()
        .get::<Outcome>()
        .cloned()
        .unwrap_or_default();
    record.status = response.status().as_u16();
    record.expected = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    response.map(|inner| Instrumented { inner, record }.boxed_unsync())
}

/// The status logged for a request whose client left before it was answered.
const CLIENT_GONE: u16 = 499;

/// A request's record until the front answers; dropped unanswered when the client goes away
/// (hyper then drops the front's future), which writes the line as `client_gone`.
struct Unanswered(Option<Record>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(record) = self.0.as_mut() {
            // Nothing was owed after all: the line must not say "aborted".
            record.finished = true;
        }
    }
}

/// Methods as a bounded label set.
fn method_label(method: &hyper::Method) -> &'static str {
    match *method {
        hyper::Method::GET => "GET",
        hyper::Method::HEAD => "HEAD",
        hyper::Method::PUT => "PUT",
        hyper::Method::POST => "POST",
        hyper::Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

struct Record {
    metrics: Arc<Metrics>,
    front: &'static str,
    method: &'static str,
    status: u16,
    /// The declared Content-Length: hyper stops polling a body once that much was sent.
    expected: Option<u64>,
    path: String,
    peer: SocketAddr,
    outcome: Outcome,
    started: Instant,
    sent: u64,
    finished: bool,
    /// Marks the connection busy until the response is done (see [`super::deadline`]).
    _active: ActiveRequest,
}

impl Drop for Record {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let m = &self.metrics;
        m.record_request(
            (self.front, self.method, self.status),
            elapsed.as_secs_f64(),
            self.sent,
            self.outcome.received,
        );
        if let Some(operation) = self.outcome.operation {
            m.operations
                .with_label_values(&[self.front, operation, &self.status.to_string()])
                .inc();
        }
        let object_get = match self.outcome.operation {
            Some(operation) => operation == "GetObject",
            None => self.front == "gradle" && self.outcome.namespace.is_some(),
        };
        if self.method == "GET" && object_get {
            let front = if self.outcome.forward {
                "forward"
            } else {
                self.front
            };
            m.record_read(front, self.status, self.outcome.tier, self.sent);
        }
        let complete = self.finished || self.expected.is_some_and(|len| self.sent >= len);
        let outcome = if complete {
            self.outcome.outcome
        } else {
            "aborted"
        };
        crate::logging::access_line::log(&AccessLine {
            front: self.front,
            method: self.method,
            path: &self.path,
            status: self.status,
            outcome,
            operation: self.outcome.operation.unwrap_or("-"),
            tier: self.outcome.tier.map(Tier::as_str).unwrap_or("-"),
            namespace: self.outcome.namespace.as_deref().unwrap_or("-"),
            authority: self.outcome.authority.as_deref().unwrap_or("-"),
            bytes_in: self.outcome.received,
            bytes_out: self.sent,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            peer: self.peer,
        });
    }
}

/// A response body that reports to its [`Record`] when it ends or is dropped.
struct Instrumented {
    inner: ResponseBody,
    record: Record,
}

impl Drop for Instrumented {
    fn drop(&mut self) {
        // hyper never polls a body that is empty from the start (HEAD, 404, 204).
        if self.inner.is_end_stream() {
            self.record.finished = true;
        }
    }
}

impl Body for Instrumented {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.record.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.record.finished = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
