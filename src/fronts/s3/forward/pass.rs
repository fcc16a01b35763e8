//! Sending a request on to S3 and S3's answer back: the exchange itself (with the client's
//! body streamed through, and into a local copy when the caller keeps one), and the requests
//! the node only passes through.

use std::io;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use super::upstream::{body_stream, end_to_end, outgoing, UpstreamError as Failed};
use super::{Forward, Target};
use crate::fronts::reply::{content_length, respond};
use crate::fronts::s3::chunked::{AwsChunkedDecoder, ChunkedOptions};
use crate::server::body::{self, Received, ResponseBody};
use crate::server::limits::Permit;
use crate::server::ConnInfo;
use crate::store::backend::Backend;
use crate::store::disk::spool::Spool;
use crate::store::ByteStream;

/// What became of a request with a body: S3's answer, how much of the client's body was read,
/// and the local copy written beside it (complete only if every byte reached both).
pub(super) struct Exchanged {
    pub answer: Result<Response<Incoming>, Failed>,
    pub got: Received,
    pub copy: Option<Spool>,
}

impl<B: Backend> Forward<B> {
    /// Passes a request through. When `drops_copy` and S3 accepted it (2xx), the key's local
    /// copy is dropped: the object was deleted, replaced by a copy or by a completed upload.
    pub(super) async fn pass(
        &self,
        req: Request<Incoming>,
        target: &Target<'_>,
        drops_copy: bool,
    ) -> Response<ResponseBody> {
        let ticket = drops_copy.then(|| self.store.begin_copy());
        let (method, path) = (req.method().clone(), target.request.path().to_string());
        let (answer, got) = if has_body(&req) {
            match self.admit(&req) {
                Err(refused) => return self.answers.refuse(req, *refused).await,
                Ok(_permits) => {
                    let exchanged = self.exchange(req, target, None).await;
                    (exchanged.answer, Some(exchanged.got))
                }
            }
        } else {
            let (parts, _) = req.into_parts();
            (self.send_bodiless(&parts, target, None).await, None)
        };
        let response = match answer {
            Ok(response) => {
                self.answered(target, response.status());
                if let (Some(ticket), Some(key)) = (&ticket, &target.key) {
                    if response.status().is_success() {
                        self.drop_copy(key, ticket).await;
                    }
                }
                self.relay(response, target, false)
            }
            Err(e) => self.failed(&method, &path, target.operation, &e),
        };
        match got {
            Some(got) => self.answers.answer_received(response, got),
            None => response,
        }
    }

    /// Sends a request that has no body, with `extra` added to its headers, and waits (at
    /// most the endpoint's response timeout) for S3's response head.
    pub(super) async fn send_bodiless(
        &self,
        parts: &http::request::Parts,
        target: &Target<'_>,
        extra: Option<(HeaderName, HeaderValue)>,
    ) -> Result<Response<Incoming>, Failed> {
        let mut request = outgoing(&target.endpoint.uri, parts, body::empty())
            .map_err(|e| Failed::Unreachable(e.to_string()))?;
        if let Some((name, value)) = extra {
            request.headers_mut().insert(name, value);
        }
        self.upstream
            .send_within(request, target.endpoint.response_timeout)
            .await
    }

    /// Sends a request with its body streamed through to S3 (and into `copy`, when given, as
    /// it passes). The response timeout starts once the whole body has gone out: S3 answers
    /// a PUT only after its last byte.
    pub(super) async fn exchange(
        &self,
        req: Request<Incoming>,
        target: &Target<'_>,
        copy: Option<UploadCopy>,
    ) -> Exchanged {
        let (parts, incoming) = req.into_parts();
        let (client_body, upload) = body::upload(incoming, self.uploads.body);
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
        let to_s3: ByteStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let request = match outgoing(&target.endpoint.uri, &parts, body::stream(to_s3)) {
            Ok(request) => request,
            Err(e) => {
                drop(client_body);
                return Exchanged {
                    answer: Err(Failed::Unreachable(e.to_string())),
                    got: upload.finish().await,
                    copy: None,
                };
            }
        };
        let pump = pump(client_body, tx, copy);
        let answer = self.upstream.send(request);
        tokio::pin!(pump, answer);
        let (answer, copy) = tokio::select! {
            // S3 answered before the pump saw the body's end: usually the answer to the last
            // byte, and the end follows at once. An early refusal may leave the client still
            // sending and S3 no longer reading: the pump is given up after the body stall
            // timeout (the client's rest is then read and thrown away, up to the discard cap).
            answer = &mut answer => {
                let stall = self.uploads.body.stall_timeout;
                let copy = tokio::time::timeout(stall, &mut pump).await.ok().flatten();
                (answer, copy)
            }
            copy = &mut pump => {
                let timeout = target.endpoint.response_timeout;
                let answer = tokio::time::timeout(timeout, answer)
                    .await
                    .unwrap_or(Err(Failed::Timeout(timeout)));
                (answer, copy)
            }
        };
        Exchanged {
            answer,
            got: upload.finish().await,
            copy,
        }
    }

    /// S3's response as the client's: status and end-to-end headers as they are, the body
    /// streamed (and counted as served from S3 when it is an object's bytes).
    pub(super) fn relay(
        &self,
        response: Response<Incoming>,
        target: &Target<'_>,
        object_bytes: bool,
    ) -> Response<ResponseBody> {
        let (parts, incoming) = response.into_parts();
        let stream = body_stream(incoming, target.endpoint.response_timeout);
        let stream = match object_bytes {
            true => self.counted_from_s3(stream),
            false => stream,
        };
        self.respond_as_s3(parts.status, &parts.headers, body::stream(stream))
    }

    /// `stream`, its bytes counted as object bytes served from S3.
    pub(super) fn counted_from_s3(&self, stream: ByteStream) -> ByteStream {
        let counter = self.metrics.forward_bytes.with_label_values(&["s3"]);
        Box::pin(stream.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counter.inc_by(chunk.len() as u64);
            }
        }))
    }

    /// A response with S3's status and end-to-end headers around `body`.
    pub(super) fn respond_as_s3(
        &self,
        status: StatusCode,
        headers: &http::HeaderMap,
        body: ResponseBody,
    ) -> Response<ResponseBody> {
        let outcome = match status.as_u16() {
            200..=299 => "forwarded",
            304 => "not_modified",
            403 => "denied",
            404 => "missing",
            _ => "forwarded_error",
        };
        let mut response = respond(status, outcome, body);
        *response.headers_mut() = end_to_end(headers);
        response
    }

    /// An upload's slot and declared bytes, or the S3 error that refuses it.
    pub(super) fn admit(
        &self,
        req: &Request<Incoming>,
    ) -> Result<Option<(Permit, Permit)>, Box<Response<ResponseBody>>> {
        let Some(peer) = req.extensions().get::<ConnInfo>().map(|c| c.peer.ip()) else {
            return Ok(None);
        };
        let len = super::write::declared_upload_len(req.headers());
        match self.uploads.admit(peer, len) {
            Ok(permits) => Ok(Some(permits)),
            Err(reason) => {
                self.metrics
                    .dropped_puts
                    .with_label_values(&["s3", reason])
                    .inc();
                let err = super::S3Error::new(
                    super::S3ErrorCode::SlowDown,
                    format!("Too many uploads in progress ({reason}); retry later."),
                );
                Err(Box::new(super::error_response(
                    &err,
                    Some(req.uri().path()),
                    &super::request_id(),
                    false,
                )))
            }
        }
    }

    /// Drops a key's local copy, unless it changed since `ticket`.
    pub(super) async fn drop_copy(
        &self,
        key: &crate::store::Key,
        ticket: &crate::store::disk::FillTicket,
    ) {
        if let Err(e) = self.store.drop_local_copy(key, ticket).await {
            tracing::warn!(key = %key, error = %e, "S3 forward: could not drop a local copy");
        }
    }
}

/// Whether a request carries a body to pass on.
pub(super) fn has_body(req: &Request<Incoming>) -> bool {
    req.headers().contains_key(http::header::TRANSFER_ENCODING)
        || content_length(req.headers()).is_some_and(|len| len > 0)
}

/// The local copy an upload writes as its body passes to S3.
pub(super) enum UploadCopy {
    /// The body is the object's bytes. (Boxed: a spool is large beside the other variant.)
    Plain(Box<Spool>),
    /// An `aws-chunked` body: a task reads its framing (not its signatures, which S3 checks)
    /// and writes the data it carries. A framing the decoder refuses just ends the copy; the
    /// body still goes to S3 as the client sent it.
    Decoded {
        framed: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
        task: tokio::task::JoinHandle<Option<Spool>>,
    },
}

impl UploadCopy {
    /// A copy of the data inside an `aws-chunked` body; `spool` holds its decoded length.
    pub fn decoded(mut spool: Spool, options: ChunkedOptions) -> UploadCopy {
        // Two chunks in flight, as toward S3: the slower of the two sets the pace.
        let (framed, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
        let task = tokio::spawn(async move {
            let framed: ByteStream =
                Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                }));
            let mut data = AwsChunkedDecoder::new(framed, options);
            while let Some(item) = data.next().await {
                let written = match item {
                    Ok(chunk) => spool.write(chunk).await.map_err(io::Error::other),
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    tracing::debug!(error = %e, "S3 forward: no local copy of this aws-chunked upload");
                    return None;
                }
            }
            Some(spool)
        });
        UploadCopy::Decoded { framed, task }
    }

    /// Takes the next piece of the body as it goes to S3; false when the copy is given up.
    async fn write(&mut self, chunk: &Bytes) -> bool {
        match self {
            UploadCopy::Plain(spool) => match spool.write(chunk.clone()).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "S3 forward: no local copy of this upload");
                    false
                }
            },
            // The task is gone only when it gave the copy up.
            UploadCopy::Decoded { framed, .. } => framed.send(Ok(chunk.clone())).await.is_ok(),
        }
    }

    /// The written copy, after the body's end.
    async fn finish(self) -> Option<Spool> {
        match self {
            UploadCopy::Plain(spool) => Some(*spool),
            UploadCopy::Decoded { framed, task } => {
                // The end of the framed stream: the decoder checks the final chunk and length.
                drop(framed);
                task.await.ok().flatten()
            }
        }
    }
}

/// Moves the client's body to S3 chunk by chunk, giving each chunk to `copy` first. Returns
/// the copy if every byte went both ways (a failed disk write just ends the copy; a failed
/// client body or S3 no longer reading ends both).
async fn pump(
    mut client_body: ByteStream,
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    mut copy: Option<UploadCopy>,
) -> Option<Spool> {
    while let Some(item) = client_body.next().await {
        match item {
            Ok(chunk) => {
                if let Some(sink) = copy.as_mut() {
                    if !sink.write(&chunk).await {
                        copy = None;
                    }
                }
                if tx.send(Ok(chunk)).await.is_err() {
                    return None;
                }
            }
            Err(e) => {
                // Fails the request to S3 too: it must not see a short body as a whole one.
                let _ = tx.send(Err(e)).await;
                return None;
            }
        }
    }
    match copy {
        Some(sink) => sink.finish().await,
        None => None,
    }
}
