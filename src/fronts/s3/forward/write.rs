//! PutObject: the client's body streams to S3 and into a local copy at once; the copy becomes
//! visible only if S3 answered 200, and only with S3's ETag (the copy's MD5 must equal it, so
//! an object whose ETag is no MD5 — SSE-KMS — is simply not kept, and its next GET fills it).
//!
//! An `aws-chunked` body (the Java SDK v1's signed chunks, the newer SDKs' trailers) goes to
//! S3 byte for byte as it came, and its framing alone is decoded on the way to write the copy
//! (of `x-amz-decoded-content-length` bytes). The node has no key to check the chunk
//! signatures with and needs none: S3 checks them, and the copy counts only if S3 answered 200
//! with an ETag equal to the decoded data's MD5. A framing the decoder refuses (a malformed
//! body, a chunk over its 1 MiB limit) only means no copy; S3 judges the body itself.

use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use super::pass::UploadCopy;
use super::upstream::unquoted_etag;
use super::{Forward, Target};
use crate::fronts::reply::content_length;
use crate::fronts::s3::chunked::ChunkedOptions;
use crate::fronts::s3::object_headers::put_options;
use crate::server::body::ResponseBody;
use crate::store::backend::Backend;
use crate::store::disk::spool::{EntryMeta, EtagSource};
use crate::store::Key;

impl<B: Backend> Forward<B> {
    pub(super) async fn put(
        &self,
        req: Request<Incoming>,
        target: &Target<'_>,
    ) -> Response<ResponseBody> {
        let Some(key) = target.key.clone() else {
            return self.pass(req, target, false).await;
        };
        let _permits = match self.admit(&req) {
            Ok(permits) => permits,
            Err(refused) => return self.answers.refuse(req, *refused).await,
        };
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let ticket = self.store.begin_copy();
        let copy = self.start_upload_copy(&req, &key).await;
        let exchanged = self.exchange(req, target, copy).await;
        let response = match exchanged.answer {
            Ok(answer) => {
                let status = answer.status();
                self.answered(target, status);
                if let Some(copy) = exchanged.copy.filter(|_| status == StatusCode::OK) {
                    let etag = unquoted_etag(answer.headers());
                    match self.store.commit_copy(&key, copy, &ticket).await {
                        Ok(Some(meta)) if meta.etag.is_some() && meta.etag == etag => {}
                        // S3's ETag is not the body's MD5: not a copy we could revalidate.
                        Ok(Some(_)) => self.drop_copy(&key, &ticket).await,
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(key = %key, error = %e, "S3 forward: upload's copy not committed")
                        }
                    }
                }
                self.relay(answer, target, false)
            }
            Err(e) => self.failed(&method, &path, target.operation, &e),
        };
        self.answers.answer_received(response, exchanged.got)
    }

    /// The local copy an upload writes as it passes, when it can have one: a body with a
    /// declared length (for `aws-chunked`, its decoded length) the disk tier can hold.
    async fn start_upload_copy(&self, req: &Request<Incoming>, key: &Key) -> Option<UploadCopy> {
        let headers = req.headers();
        let chunked = match ChunkedOptions::framing_only(headers) {
            Ok(chunked) => chunked,
            // No decoded length to write: S3 will say what it thinks of the request.
            Err(_) => return None,
        };
        let encoded_chunked = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("aws-chunked"));
        let len = match &chunked {
            Some(options) => options.decoded_length,
            // An aws-chunked body whose payload names no framing we know: no copy.
            None if encoded_chunked => return None,
            None => content_length(headers)?,
        };
        if len > self.store.disk().settings().max_size {
            return None;
        }
        let meta = EntryMeta {
            attrs: put_options(headers).ok()?.attrs,
            etag: EtagSource::Md5,
            modified: None,
        };
        match self.store.start_copy(key, len, meta).await {
            Ok(spool) => Some(match chunked {
                Some(options) => UploadCopy::decoded(spool, options),
                None => UploadCopy::Plain(Box::new(spool)),
            }),
            Err(e) => {
                tracing::debug!(key = %key, error = %e, "S3 forward: no room for the upload's copy");
                None
            }
        }
    }
}
