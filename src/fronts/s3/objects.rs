//! The object operations of the S3 front: GetObject, HeadObject, PutObject, DeleteObject and
//! CopyObject, each a thin translation to the store.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use super::chunked::{AwsChunkedDecoder, ChunkedOptions, TrailerChecksum};
use super::digest::{ExpectedDigests, VerifyDigests};
use super::error::{S3Error, S3ErrorCode};
use super::front::{store_error, xml_response, Authorized, S3Front};
use super::object_headers::{
    checksum_headers, client_put_options, get_options, http_date, kept_checksums, object_headers,
    write_conditions, HeaderError, RESERVED_METADATA,
};
use super::sigv4::AuthKind;
use super::xml;
use crate::checksum::to_base64;
use crate::fronts::reply::{content_length, respond, set_length, with_tier};
use crate::server::body::{self, ResponseBody};
use crate::server::ConnInfo;
use crate::store::backend::{Backend, ByteRange, Conditions, GetOptions, Verdict};
use crate::store::{
    BodyLen, ByteStream, Object, ObjectMeta, PutOptions, Read, Store, CHECKSUM_HEADERS,
};

/// The largest object one PutObject may create (S3's limit; larger ones go in parts).
pub const MAX_PUT_SIZE: u64 = 5 << 30;

impl<B: Backend> S3Front<B> {
    pub(super) async fn get_object(
        &self,
        req: &Request<Incoming>,
        auth: &Authorized,
    ) -> Result<Response<ResponseBody>, S3Error> {
        let key = auth.key(&self.namespace(auth))?;
        let options = get_options(req.headers());
        let overrides = response_overrides(auth)?;
        let read = self.store.read(&key, &options).await.map_err(store_error)?;
        match read {
            Read::Found { object, span } => {
                let Object { meta, body, tier } = object;
                let ranged = options.range.is_some();
                let mut response = found(&meta, span, ranged, body::stream(body));
                if !ranged {
                    checksum_headers(&meta, req.headers(), response.headers_mut());
                }
                apply_overrides(&overrides, response.headers_mut());
                Ok(with_tier(response, tier))
            }
            Read::NotModified(meta) => Ok(not_modified(&meta)),
            Read::PreconditionFailed => Err(precondition_failed()),
            Read::RangeNotSatisfiable(len) => Ok(self.unsatisfiable(auth, len, false)),
            Read::Missing => Err(no_such_key()),
        }
    }

    /// HeadObject: the object's headers, decided on its metadata alone (no body is read, and no
    /// fill is started for it).
    pub(super) async fn head_object(
        &self,
        req: &Request<Incoming>,
        auth: &Authorized,
    ) -> Result<Response<ResponseBody>, S3Error> {
        let key = auth.key(&self.namespace(auth))?;
        let options = get_options(req.headers());
        let overrides = response_overrides(auth)?;
        let Some(meta) = self.store.head(&key).await.map_err(store_error)? else {
            return Err(no_such_key());
        };
        match options
            .conditions
            .evaluate(meta.etag.as_deref(), meta.modified)
        {
            Verdict::Serve => {}
            Verdict::NotModified => return Ok(not_modified(&meta)),
            Verdict::PreconditionFailed => return Err(precondition_failed()),
        }
        let span = match options.range {
            None => 0..meta.len,
            Some(range) => match range.resolve(meta.len) {
                Some(span) => span,
                None => return Ok(self.unsatisfiable(auth, meta.len, true)),
            },
        };
        let mut response = found(&meta, span, options.range.is_some(), body::empty());
        if options.range.is_none() {
            checksum_headers(&meta, req.headers(), response.headers_mut());
        }
        apply_overrides(&overrides, response.headers_mut());
        Ok(response)
    }

    /// PutObject: the body is decoded (aws-chunked) and checked (signed sha256, Content-MD5,
    /// `x-amz-checksum-*`) while it streams into the store, which commits it only if every
    /// check passed. The answer waits until the client's body has been read to its end.
    pub(super) async fn put_object(
        &self,
        req: Request<Incoming>,
        auth: &Authorized,
    ) -> Response<ResponseBody> {
        let prepared = auth.key(&self.namespace(auth)).and_then(|key| {
            let plan = self.body_plan(&req, auth, MAX_PUT_SIZE)?;
            let mut options = client_put_options(req.headers()).map_err(header_error)?;
            options.conditions = write_conditions(req.headers());
            // The body is verified against its `x-amz-checksum-*` header before anything is
            // stored, so the object keeps a checksum it is known to have.
            if let Some((algorithm, value)) = &plan.digests.checksum {
                let kept = (algorithm.header_name().to_string(), to_base64(value));
                options.attrs.kept.push(kept);
            } else if let Some(algorithm) = plan.chunked.as_ref().and_then(|c| c.trailer_checksum) {
                // Known once the body ended: a placeholder of its size until then.
                let placeholder = to_base64(&vec![0; algorithm.raw_len()]);
                let kept = (algorithm.header_name().to_string(), placeholder);
                options.attrs.kept.push(kept);
                options.trailer_checksum = Some(plan.trailer_checksum.clone());
            }
            Ok((key, plan, options))
        });
        let (key, plan, options) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return self.refuse(req, auth, &e).await,
        };
        self.receive(req, auth, plan, |stream, len| async move {
            let meta = self
                .store
                .put(&key, len, stream, &options)
                .await
                .map_err(store_error)?;
            let mut response = respond(StatusCode::OK, "stored", body::empty());
            object_etag(&meta, response.headers_mut());
            kept_checksums(&meta, response.headers_mut());
            Ok(response)
        })
        .await
    }

    /// What a request's body is: its real length (checked against `max` and against what the
    /// disk tier could ever hold), its aws-chunked framing, and the digests it declared.
    pub(super) fn body_plan(
        &self,
        req: &Request<Incoming>,
        auth: &Authorized,
        max: u64,
    ) -> Result<BodyPlan, S3Error> {
        let payload = &auth.verified.payload;
        let chunked = ChunkedOptions::for_request(payload, req.headers())?;
        let disk_max = self.store.disk().settings().max_size;
        let limit = max.min(disk_max);
        let len = match (&chunked, content_length(req.headers())) {
            (Some(options), _) => BodyLen::Exact(options.decoded_length),
            (None, Some(len)) => BodyLen::Exact(len),
            // HTTP/1.1 chunked framing with no length: taken up to a cap, like any body.
            (None, None) if is_chunked_transfer(req.headers()) => {
                BodyLen::AtMost(limit.min(self.uploads.max_unsized))
            }
            (None, None) => return Err(missing_content_length()),
        };
        if let BodyLen::Exact(len) = len {
            if len > limit {
                return Err(too_large(limit));
            }
        }
        let digests = ExpectedDigests::for_request(payload, req.headers())?;
        Ok(BodyPlan {
            len,
            chunked,
            digests,
            trailer_checksum: TrailerChecksum::default(),
        })
    }

    /// Admits an upload of the planned body, streams it (decoded and checked) into `store`,
    /// and answers once the client's body has been read to its end.
    pub(super) async fn receive<'a, F, Fut>(
        &'a self,
        req: Request<Incoming>,
        auth: &'a Authorized,
        plan: BodyPlan,
        store: F,
    ) -> Response<ResponseBody>
    where
        F: FnOnce(ByteStream, BodyLen) -> Fut,
        Fut: std::future::Future<Output = Result<Response<ResponseBody>, S3Error>> + 'a,
    {
        let peer = req.extensions().get::<ConnInfo>().map(|c| c.peer.ip());
        let admitted = match peer.map(|ip| self.uploads.admit(ip, plan.len.limit())) {
            Some(Err(reason)) => {
                self.metrics
                    .dropped_puts
                    .with_label_values(&["s3", reason])
                    .inc();
                let e = S3Error::new(
                    S3ErrorCode::SlowDown,
                    format!("Too many uploads in progress ({reason}); retry later."),
                );
                return self.refuse(req, auth, &e).await;
            }
            Some(Ok(permits)) => Some(permits),
            None => None,
        };
        let (stream, upload) = body::upload(req.into_body(), self.uploads.body);
        let stream = verified_body(stream, plan.chunked, plan.digests, plan.trailer_checksum);
        let stored = store(stream, plan.len).await;
        let got = upload.finish().await;
        drop(admitted);
        let response = stored.unwrap_or_else(|e| {
            self.error(&e, Some(&auth.route.resource()), &auth.request_id, false)
        });
        self.answers.answer_received(response, got)
    }

    pub(super) async fn delete_object(
        &self,
        auth: &Authorized,
    ) -> Result<Response<ResponseBody>, S3Error> {
        let key = auth.key(&self.namespace(auth))?;
        self.store.delete(&key).await.map_err(store_error)?;
        // S3 answers 204 whether or not there was an object.
        Ok(respond(StatusCode::NO_CONTENT, "deleted", body::empty()))
    }

    /// CopyObject within the front's buckets: the source streams from whichever tier holds it
    /// into a new entry of the destination, with the source's attributes (`COPY`, S3's default)
    /// or the request's (`REPLACE`).
    pub(super) async fn copy_object(
        &self,
        req: &Request<Incoming>,
        auth: &Authorized,
        source_bucket: &str,
        source_key: &str,
    ) -> Result<Response<ResponseBody>, S3Error> {
        let key = auth.key(&self.namespace(auth))?;
        let source = self.copy_source_key(source_bucket, source_key)?;
        let replace = req
            .headers()
            .get("x-amz-metadata-directive")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"REPLACE"));
        if source == key && !replace {
            return Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                "An object cannot be copied onto itself without a change: send x-amz-metadata-directive: REPLACE with the new metadata.",
            ));
        }
        let (object, _) = self.read_copy_source(req.headers(), &source, None).await?;
        let options = if replace {
            // The body is the source's: so are its checksums.
            let mut options = client_put_options(req.headers()).map_err(header_error)?;
            let checksums = object.meta.attrs.kept.iter();
            options.attrs.kept.extend(
                checksums
                    .filter(|(name, _)| CHECKSUM_HEADERS.contains(&name.as_str()))
                    .cloned(),
            );
            options
        } else {
            PutOptions::object(object.meta.attrs.clone())
        };
        let len = object.meta.len;
        let stored = self
            .store
            .put(&key, len, object.body, &options)
            .await
            .map_err(store_error)?;
        let result = xml::CopyObjectResult {
            last_modified: xml::timestamp(stored.modified),
            etag: quoted(stored.etag.as_deref().unwrap_or_default()),
            ..Default::default()
        };
        Ok(xml_response(result.to_xml()))
    }

    /// The key a copy reads (its bucket was checked exposed and readable by `authorize`).
    pub(super) fn copy_source_key(
        &self,
        source_bucket: &str,
        source_key: &str,
    ) -> Result<crate::store::Key, S3Error> {
        let source_namespace = self.buckets[source_bucket].clone();
        crate::store::Key::object(source_namespace, source_key)
            .map_err(|e| S3Error::new(S3ErrorCode::InvalidArgument, e.to_string()))
    }

    /// Reads a copy's source, or `range` of it, under the request's
    /// `x-amz-copy-source-if-*` preconditions: any that fails is a 412, If-None-Match and
    /// If-Modified-Since included (a copy has no 304). Returns the object and the span its
    /// body carries.
    pub(super) async fn read_copy_source(
        &self,
        headers: &http::HeaderMap,
        source: &crate::store::Key,
        range: Option<ByteRange>,
    ) -> Result<(Object, std::ops::Range<u64>), S3Error> {
        let options = GetOptions {
            range,
            conditions: copy_source_conditions(headers),
        };
        match self
            .store
            .read(source, &options)
            .await
            .map_err(store_error)?
        {
            Read::Found { object, span } => Ok((object, span)),
            Read::Missing => Err(no_such_key()),
            Read::NotModified(_) | Read::PreconditionFailed => Err(precondition_failed()),
            Read::RangeNotSatisfiable(len) => Err(S3Error::new(
                S3ErrorCode::InvalidRange,
                format!("The requested range is not satisfiable (the source has {len} bytes)"),
            )),
        }
    }

    /// A 416, with the object's length in `Content-Range` as S3 gives it.
    fn unsatisfiable(
        &self,
        auth: &Authorized,
        len: u64,
        head_only: bool,
    ) -> Response<ResponseBody> {
        let err = S3Error::new(
            S3ErrorCode::InvalidRange,
            format!("The requested range is not satisfiable (the object has {len} bytes)"),
        );
        let mut response = self.error(
            &err,
            Some(&auth.route.resource()),
            &auth.request_id,
            head_only,
        );
        insert(
            response.headers_mut(),
            header::CONTENT_RANGE,
            &format!("bytes */{len}"),
        );
        response
    }

    /// Answers a request that will not be served, after reading (a bounded part of) its body.
    pub(super) async fn refuse(
        &self,
        req: Request<Incoming>,
        auth: &Authorized,
        err: &S3Error,
    ) -> Response<ResponseBody> {
        let response = self.error(err, Some(&auth.route.resource()), &auth.request_id, false);
        self.answers.refuse(req, response).await
    }
}

/// What a request's body is, decided from its head.
pub(super) struct BodyPlan {
    pub len: BodyLen,
    /// Where an aws-chunked body's trailer checksum appears once it checked out.
    pub trailer_checksum: TrailerChecksum,
    pub chunked: Option<ChunkedOptions>,
    pub digests: ExpectedDigests,
}

/// The client's body, decoded from aws-chunked when it is, and checked against every digest
/// the request declared; a failed check fails the stream before its last bytes, so the store
/// never commits it.
fn verified_body(
    body: ByteStream,
    chunked: Option<ChunkedOptions>,
    digests: ExpectedDigests,
    trailer_checksum: TrailerChecksum,
) -> ByteStream {
    let decoded: ByteStream = match chunked {
        Some(options) => {
            Box::pin(AwsChunkedDecoder::new(body, options).publishing_to(trailer_checksum))
        }
        None => body,
    };
    if digests.is_empty() {
        decoded
    } else {
        Box::pin(VerifyDigests::new(decoded, digests))
    }
}

pub(super) fn object_etag(meta: &ObjectMeta, headers: &mut http::HeaderMap) {
    if let Some(etag) = &meta.etag {
        insert(headers, header::ETAG, &quoted(etag));
    }
}

pub(super) fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

fn insert(headers: &mut http::HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// A 200 (or with a range, a 206) for `span` of the object: S3's object headers, the span's
/// length, and its `Content-Range`.
pub(super) fn found(
    meta: &ObjectMeta,
    span: std::ops::Range<u64>,
    ranged: bool,
    body: ResponseBody,
) -> Response<ResponseBody> {
    let status = if ranged {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut response = respond(status, "hit", body);
    let headers = response.headers_mut();
    object_headers(meta, headers);
    set_length(headers, span.end - span.start);
    if ranged {
        insert(
            headers,
            header::CONTENT_RANGE,
            &ByteRange::content_range(&span, meta.len),
        );
    }
    response
}

/// What a GetObject or HeadObject asks to see in place of the object's own headers: the
/// `response-*` parameters of its (signed) query, checked as header values.
fn response_overrides(
    auth: &Authorized,
) -> Result<Vec<(header::HeaderName, HeaderValue)>, S3Error> {
    const OVERRIDES: [(&str, header::HeaderName); 6] = [
        ("response-content-type", header::CONTENT_TYPE),
        ("response-content-language", header::CONTENT_LANGUAGE),
        ("response-expires", header::EXPIRES),
        ("response-cache-control", header::CACHE_CONTROL),
        ("response-content-disposition", header::CONTENT_DISPOSITION),
        ("response-content-encoding", header::CONTENT_ENCODING),
    ];
    let mut found = Vec::new();
    for (param, name) in OVERRIDES {
        if let Some(value) = auth.route.param(param) {
            if auth.verified.kind == AuthKind::Anonymous {
                // As S3: a reader without a key cannot change what the answer says.
                return Err(S3Error::new(
                    S3ErrorCode::InvalidRequest,
                    "Request specific response headers cannot be used for anonymous GET requests.",
                ));
            }
            let value = HeaderValue::from_str(value).map_err(|_| {
                S3Error::new(
                    S3ErrorCode::InvalidArgument,
                    format!("{param} is not a valid header value"),
                )
            })?;
            found.push((name, value));
        }
    }
    Ok(found)
}

fn apply_overrides(overrides: &[(header::HeaderName, HeaderValue)], headers: &mut http::HeaderMap) {
    for (name, value) in overrides {
        headers.insert(name.clone(), value.clone());
    }
}

/// A CopyObject's conditions on its source, from its `x-amz-copy-source-if-*` headers.
fn copy_source_conditions(headers: &http::HeaderMap) -> Conditions {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let date = |name: &str| text(name).and_then(|v| httpdate::parse_http_date(v).ok());
    Conditions {
        if_match: text("x-amz-copy-source-if-match").map(str::to_string),
        if_none_match: text("x-amz-copy-source-if-none-match").map(str::to_string),
        if_modified_since: date("x-amz-copy-source-if-modified-since"),
        if_unmodified_since: date("x-amz-copy-source-if-unmodified-since"),
    }
}

/// A 304: the object's validators, no body.
fn not_modified(meta: &ObjectMeta) -> Response<ResponseBody> {
    let mut response = respond(StatusCode::NOT_MODIFIED, "not_modified", body::empty());
    let headers = response.headers_mut();
    object_etag(meta, headers);
    headers.insert(header::LAST_MODIFIED, http_date(meta.modified));
    response
}

pub(super) fn no_such_key() -> S3Error {
    S3Error::new(S3ErrorCode::NoSuchKey, "The specified key does not exist.")
}

pub(super) fn precondition_failed() -> S3Error {
    S3Error::new(
        S3ErrorCode::PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold",
    )
}

pub(super) fn too_large(limit: u64) -> S3Error {
    S3Error::new(
        S3ErrorCode::EntityTooLarge,
        format!("Your proposed upload exceeds the maximum allowed size of {limit} bytes"),
    )
}

pub(super) fn missing_content_length() -> S3Error {
    S3Error::new(
        S3ErrorCode::MissingContentLength,
        "You must provide the Content-Length HTTP header.",
    )
}

/// Whether the body comes in HTTP/1.1 chunked framing (hyper has taken the framing off; the
/// header stays).
fn is_chunked_transfer(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

pub(super) fn header_error(err: HeaderError) -> S3Error {
    match err {
        HeaderError::MetadataTooLarge(size) => S3Error::new(
            S3ErrorCode::MetadataTooLarge,
            format!(
                "Your metadata headers ({size} bytes) exceed the maximum allowed metadata size"
            ),
        ),
        HeaderError::NotText(name) => S3Error::new(
            S3ErrorCode::InvalidArgument,
            format!("Header {name} is not valid text"),
        ),
        HeaderError::Reserved(name) => S3Error::new(
            S3ErrorCode::InvalidArgument,
            format!(
                "Metadata names starting with {RESERVED_METADATA} are this endpoint's own: {name}"
            ),
        ),
    }
}
