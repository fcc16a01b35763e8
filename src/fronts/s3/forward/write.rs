//! PutObject: the client's body streams to S3 and into a local copy at once; the copy becomes
//! visible only if S3 answered 200, and only with S3's ETag (the copy's MD5 must equal it, so
//! an object whose ETag is no MD5 — SSE-KMS — is simply not kept, and its next GET fills it).
//!
//! An `aws-chunked` body (the Java SDK v1's signed chunks, the newer SDKs' trailers) is
//! forwarded as it is and not kept: the copy would need the decoded bytes, and decoding without
//! the signing key cannot check the chunk signatures the way S3 does. Its first GET fills it.

use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use super::upstream::unquoted_etag;
use super::{Forward, Target};
use crate::fronts::reply::content_length;
use crate::fronts::s3::object_headers::put_options;
use crate::server::body::ResponseBody;
use crate::store::backend::Backend;
use crate::store::disk::spool::{EntryMeta, EtagSource, Spool};
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

    /// The local copy an upload writes as it passes, when it can have one: a plain body (not
    /// aws-chunked) with a declared length the disk tier can hold.
    async fn start_upload_copy(&self, req: &Request<Incoming>, key: &Key) -> Option<Spool> {
        let headers = req.headers();
        let chunked = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("aws-chunked"))
            || headers
                .get("x-amz-content-sha256")
                .is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
        let len = content_length(headers)?;
        if chunked || len > self.store.disk().settings().max_size {
            return None;
        }
        let meta = EntryMeta {
            attrs: put_options(headers).ok()?.attrs,
            etag: EtagSource::Md5,
            modified: None,
        };
        match self.store.start_copy(key, len, meta).await {
            Ok(spool) => Some(spool),
            Err(e) => {
                tracing::debug!(key = %key, error = %e, "S3 forward: no room for the upload's copy");
                None
            }
        }
    }
}
