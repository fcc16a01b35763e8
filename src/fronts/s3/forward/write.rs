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
//!
//! What an upload declares counts against the per-address cap on upload bytes: for an
//! `aws-chunked` body that is its decoded length as well as its `Content-Length`, since the
//! decoded length is what its copy asks the disk tier for. A decoded length the body's
//! `Content-Length` cannot carry (the framing only adds bytes) gets no copy at all: S3 will
//! refuse that body, and until then the declaration would only hold disk space.
//!
//! An upload that gives an SSE-C key or asks for SSE-KMS, or whose answer says the object is
//! encrypted so (see [`super::cacheable`]), keeps no copy: SSE-C objects are never served
//! from the node, and an SSE-KMS object gets its copy from its next GET where the entry caches
//! them, with S3's answer saying how it is sealed.

use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use super::cacheable::{names_customer_key, Sealed};
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
                // Only an object anyone allowed to read it may read from the node is kept.
                let open = Sealed::of_answer(answer.headers()) == Sealed::Open;
                let copy = exchanged.copy.filter(|_| status == StatusCode::OK && open);
                let etag = unquoted_etag(answer.headers());
                let stale = match copy {
                    Some(copy) => match self.store.commit_copy(copy, &ticket).await {
                        // Unless S3's ETag is the body's MD5, no 304 could vouch for it.
                        Ok(Some(meta)) => meta.etag.is_none() || meta.etag != etag,
                        // A newer change of the key came first; it decides.
                        Ok(None) => false,
                        Err(e) => {
                            tracing::debug!(key = %key, error = %e, "S3 forward: upload's copy not committed");
                            true
                        }
                    },
                    // S3 took an object the node keeps no copy of: an older copy is of the
                    // object it replaced (and could have the same ETag: SSE-C objects may
                    // carry their plaintext's MD5).
                    None => status.is_success(),
                };
                if stale {
                    self.drop_copy(&key, &ticket).await;
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
        if names_customer_key(headers) || asks_sealed(headers) {
            return None;
        }
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
            // A Content-Length below the decoded length: no body S3 would take.
            Some(options)
                if content_length(headers).is_some_and(|sent| sent < options.decoded_length) =>
            {
                return None
            }
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
        match self.store.start_upload_copy(key, len, meta).await {
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

/// The bytes an upload declares, as counted against the per-address cap: its `Content-Length`,
/// or its `x-amz-decoded-content-length` (an `aws-chunked` body's data) when that is more.
pub(super) fn declared_upload_len(headers: &http::HeaderMap) -> u64 {
    let decoded = headers
        .get("x-amz-decoded-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    content_length(headers)
        .unwrap_or(0)
        .max(decoded.unwrap_or(0))
}

/// Whether an upload asks S3 to store its object under an encryption other than S3's own
/// keys (SSE-KMS, or one this node does not know).
fn asks_sealed(headers: &http::HeaderMap) -> bool {
    let sealed = headers.get("x-amz-server-side-encryption").cloned();
    let mut asked = http::HeaderMap::new();
    if let Some(value) = sealed {
        asked.insert("x-amz-server-side-encryption", value);
    }
    Sealed::of_answer(&asked) != Sealed::Open
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_headers as headers;

    #[test]
    fn an_aws_chunked_upload_declares_its_decoded_length_when_that_is_more() {
        let trickle = headers(&[
            ("content-length", "1048576"),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            ("x-amz-decoded-content-length", "8589934592"),
        ]);
        assert_eq!(declared_upload_len(&trickle), 8 << 30);
        let honest = headers(&[
            ("content-length", "66000"),
            ("x-amz-decoded-content-length", "65536"),
        ]);
        assert_eq!(declared_upload_len(&honest), 66000);
        assert_eq!(
            declared_upload_len(&headers(&[("x-amz-decoded-content-length", "65536")])),
            65536
        );
        assert_eq!(
            declared_upload_len(&headers(&[("content-length", "10")])),
            10
        );
        assert_eq!(
            declared_upload_len(&headers(&[
                ("content-length", "10"),
                ("x-amz-decoded-content-length", "lots")
            ])),
            10
        );
    }

    #[test]
    fn uploads_asking_for_keys_other_than_s3s_own_are_sealed() {
        assert!(!asks_sealed(&headers(&[])));
        assert!(!asks_sealed(&headers(&[(
            "x-amz-server-side-encryption",
            "AES256"
        )])));
        assert!(asks_sealed(&headers(&[(
            "x-amz-server-side-encryption",
            "aws:kms"
        )])));
        assert!(asks_sealed(&headers(&[(
            "x-amz-server-side-encryption",
            "aws:kms:dsse"
        )])));
    }
}
