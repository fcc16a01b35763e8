//! The S3 front itself: every request head is read once ([`ParsedRequest`]: authority, path,
//! decoded query), then handed to the forward mode when it names a forwarded host, or routed,
//! its SigV4 signature checked against the configured access keys, the key's access to the bucket checked, and then the operation is
//! carried out on the store ([`super::objects`], [`super::buckets`]). Every answer that is not
//! a success is S3 XML with a request id, and every request is one access-log line counted by
//! operation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use super::error::{error_response, request_id, S3Error, S3ErrorCode};
use super::forward::Forward;
use super::request::ParsedRequest;
use super::route::{Operation, Route, Router};
use super::sigv4::{self, SecretKey, Verified};
use super::xml;
use crate::config::{Access, S3ApiConfig};
use crate::fronts::reply::{in_namespace, respond, BodyAnswers};
use crate::metrics::Metrics;
use crate::server::access::Outcome;
use crate::server::body::{self, ResponseBody};
use crate::server::{Front, UploadLimits};
use crate::store::backend::Backend;
use crate::store::multipart::Multipart;
use crate::store::s3::S3Tier;
use crate::store::tiered::TieredStore;
use crate::store::{Key, KeyError, Namespace, StoreError};

/// The header S3 names its request ids with.
const REQUEST_ID: &str = "x-amz-request-id";

/// What an access key may do, bucket by bucket.
pub type Grants = Arc<BTreeMap<String, Access>>;

/// The S3 API front over the tiered store.
pub struct S3Front<B: Backend = S3Tier> {
    pub(super) store: Arc<TieredStore<B>>,
    /// Multipart uploads in progress, on the disk tier.
    pub(super) multipart: Multipart,
    router: Router,
    credentials: HashMap<String, (SecretKey, Grants)>,
    /// What a request without a signature may do: read the objects of the buckets configured
    /// with `anonymous = "read"`.
    anonymous: Grants,
    /// The exposed buckets, by name.
    pub(super) buckets: BTreeMap<String, Namespace>,
    pub(super) region: String,
    pub(super) uploads: UploadLimits,
    pub(super) answers: BodyAnswers,
    pub(super) metrics: Arc<Metrics>,
    /// When the front started: the creation date ListBuckets reports.
    started: SystemTime,
    /// Requests addressed to a forwarded S3 host go there instead (see [`super::forward`]).
    forward: Option<Forward<B>>,
}

/// A request that passed routing, authentication and authorization.
pub(super) struct Authorized {
    pub route: Route,
    pub verified: Verified<Grants>,
    pub request_id: String,
}

impl Authorized {
    /// The bucket's namespace and the object's key (both present for object operations).
    pub fn key(&self, namespace: &Namespace) -> Result<Key, S3Error> {
        let name = self.route.key.as_deref().unwrap_or_default();
        Key::object(namespace.clone(), name).map_err(key_error)
    }
}

impl<B: Backend> S3Front<B> {
    /// The front for `config` (validated: secrets read, buckets and grants consistent).
    pub fn new(
        store: Arc<TieredStore<B>>,
        multipart: Multipart,
        config: &S3ApiConfig,
        uploads: UploadLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let credentials = config
            .credentials
            .iter()
            .map(|c| {
                let secret = SecretKey::new(c.secret_key.clone().unwrap_or_default());
                (c.access_key.clone(), (secret, Arc::new(c.buckets.clone())))
            })
            .collect();
        let buckets = config
            .buckets
            .iter()
            .filter_map(|b| Some((b.name.clone(), Namespace::new(&b.name).ok()?)))
            .collect();
        let anonymous = config
            .buckets
            .iter()
            .filter(|b| b.anonymous == Access::Read)
            .map(|b| (b.name.clone(), Access::Read))
            .collect();
        S3Front {
            store,
            multipart,
            router: Router::new(config.virtual_hosts.iter().cloned()),
            credentials,
            anonymous: Arc::new(anonymous),
            buckets,
            region: config.region.clone(),
            answers: BodyAnswers {
                front: "s3",
                limits: uploads.body,
                metrics: metrics.clone(),
                too_slow: || {
                    error_response(
                        &S3Error::new(
                            S3ErrorCode::RequestTimeout,
                            "Your socket connection to the server was not read from or written to within the timeout period.",
                        ),
                        None,
                        &request_id(),
                        false,
                    )
                },
            },
            uploads,
            metrics,
            started: SystemTime::now(),
            forward: None,
        }
    }

    /// Hands requests for the forwarded S3 hosts (`[[s3_api.forward]]`) to `forward`.
    pub fn with_forward(mut self, forward: Option<Forward<B>>) -> Self {
        self.forward = forward;
        self
    }

    /// What the front's refusals of slow bodies and its answers to bodies look like; the
    /// forward mode answers the same way.
    pub fn body_answers(&self) -> BodyAnswers {
        self.answers.clone()
    }

    /// Routing, signature and access: everything decided from the request head, all of it read
    /// from `parsed`.
    fn authorize(
        &self,
        req: &Request<Incoming>,
        parsed: &ParsedRequest,
        request_id: &str,
    ) -> Result<Authorized, S3Error> {
        let route = self.router.route(req.method(), parsed, req.headers())?;
        let lookup = |access_key: &str| self.credentials.get(access_key).cloned();
        let verified = match sigv4::verify(
            req.method(),
            parsed,
            req.headers(),
            SystemTime::now(),
            &lookup,
        ) {
            Err(sigv4::AuthError::Anonymous) if self.reads_anonymously(&route) => {
                self.anonymous_reader()
            }
            verified => verified.inspect_err(|e| {
                self.metrics
                    .auth_failures
                    .with_label_values(&["s3", auth_failure_label(e)])
                    .inc();
            })?,
        };
        if route.operation == Operation::NotImplemented {
            return Err(S3Error::new(
                S3ErrorCode::NotImplemented,
                "A header or query you provided implies functionality that is not implemented.",
            ));
        }
        if let Some(bucket) = &route.bucket {
            if !self.buckets.contains_key(bucket) {
                return Err(S3Error::new(
                    S3ErrorCode::NoSuchBucket,
                    "The specified bucket does not exist",
                ));
            }
            let needed = needed_access(&route.operation);
            let granted = verified
                .principal
                .get(bucket)
                .copied()
                .unwrap_or(Access::None);
            if granted < needed {
                self.metrics
                    .auth_failures
                    .with_label_values(&["s3", "access_denied"])
                    .inc();
                return Err(S3Error::new(S3ErrorCode::AccessDenied, "Access Denied"));
            }
        }
        if let Some(source_bucket) = route.operation.copy_source_bucket() {
            // The source is read: it must be exposed and readable, and named by a header the
            // signature covers (else a captured request could be pointed at another object).
            let readable = verified
                .principal
                .get(source_bucket)
                .is_some_and(|access| *access >= Access::Read);
            if !self.buckets.contains_key(source_bucket) || !readable {
                return Err(S3Error::new(S3ErrorCode::AccessDenied, "Access Denied"));
            }
            if !verified.is_signed("x-amz-copy-source") {
                return Err(S3Error::new(
                    S3ErrorCode::AccessDenied,
                    "x-amz-copy-source must be signed",
                ));
            }
        }
        Ok(Authorized {
            route,
            verified,
            request_id: request_id.to_string(),
        })
    }

    /// Whether a request without a signature may do what `route` does: read an object of a
    /// bucket configured with `anonymous = "read"`. Nothing else is anonymous: not listing
    /// (which would expose every key), not a copy (a write), not a multipart upload's parts.
    fn reads_anonymously(&self, route: &Route) -> bool {
        matches!(
            route.operation,
            Operation::GetObject | Operation::HeadObject
        ) && route
            .bucket
            .as_deref()
            .is_some_and(|bucket| self.anonymous.contains_key(bucket))
    }

    /// The principal of an unsigned request: read access to the anonymously readable buckets.
    fn anonymous_reader(&self) -> Verified<Grants> {
        Verified {
            principal: self.anonymous.clone(),
            access_key: String::new(),
            kind: sigv4::AuthKind::Anonymous,
            region: self.region.clone(),
            signed_headers: Vec::new(),
            payload: sigv4::Payload::Unsigned,
        }
    }

    /// The namespace of the request's bucket (checked to exist by [`Self::authorize`]).
    pub(super) fn namespace(&self, auth: &Authorized) -> Namespace {
        let bucket = auth.route.bucket.as_deref().unwrap_or_default();
        self.buckets[bucket].clone()
    }

    async fn dispatch(&self, req: Request<Incoming>, auth: Authorized) -> Response<ResponseBody> {
        // Every operation but the reads is boxed: this future's size is the largest of its
        // arms (the writes carry the store's and the S3 client's futures), and hyper moves it
        // into place on every request, GETs included.
        let result = match auth.route.operation.clone() {
            Operation::ListBuckets => Ok(self.list_buckets(&auth)),
            Operation::HeadBucket => Ok(self.head_bucket()),
            Operation::GetBucketLocation => {
                Ok(xml_response(xml::location_constraint(&self.region)))
            }
            Operation::ListObjectsV2 => Box::pin(self.list_objects(&auth, true)).await,
            Operation::ListObjectsV1 => Box::pin(self.list_objects(&auth, false)).await,
            Operation::DeleteObjects => return Box::pin(self.delete_objects(req, &auth)).await,
            Operation::GetObject => self.get_object(&req, &auth).await,
            Operation::HeadObject => self.head_object(&req, &auth).await,
            Operation::PutObject => return Box::pin(self.put_object(req, &auth)).await,
            Operation::CopyObject {
                source_bucket,
                source_key,
            } => Box::pin(self.copy_object(&req, &auth, &source_bucket, &source_key)).await,
            Operation::DeleteObject => Box::pin(self.delete_object(&auth)).await,
            Operation::ListMultipartUploads => self.list_multipart_uploads(&auth),
            Operation::CreateMultipartUpload => Box::pin(self.create_multipart(&req, &auth)).await,
            Operation::UploadPart {
                upload_id,
                part_number,
            } => return Box::pin(self.upload_part(req, &auth, &upload_id, part_number)).await,
            Operation::UploadPartCopy {
                upload_id,
                part_number,
                source_bucket,
                source_key,
            } => {
                let source = (source_bucket.as_str(), source_key.as_str());
                Box::pin(self.upload_part_copy(&req, &auth, &upload_id, part_number, source)).await
            }
            Operation::CompleteMultipartUpload { upload_id } => {
                return Box::pin(self.complete_multipart(req, &auth, &upload_id)).await
            }
            Operation::AbortMultipartUpload { upload_id } => {
                Box::pin(self.abort_multipart(&auth, &upload_id)).await
            }
            Operation::ListParts { upload_id } => self.list_parts(&auth, &upload_id),
            // Refused in `authorize`.
            Operation::NotImplemented => Err(S3Error::new(
                S3ErrorCode::NotImplemented,
                "A header or query you provided implies functionality that is not implemented.",
            )),
        };
        let head_only = req.method() == Method::HEAD;
        match result {
            Ok(response) => response,
            Err(e) => {
                let response = self.error(
                    &e,
                    Some(&auth.route.resource()),
                    &auth.request_id,
                    head_only,
                );
                self.answers.refuse(req, response).await
            }
        }
    }

    fn list_buckets(&self, auth: &Authorized) -> Response<ResponseBody> {
        let created = xml::timestamp(self.started);
        let visible: Vec<xml::ListedBucket> = self
            .buckets
            .keys()
            .filter(|name| {
                auth.verified
                    .principal
                    .get(*name)
                    .is_some_and(|a| *a >= Access::Read)
            })
            .map(|name| xml::ListedBucket {
                name: name.clone(),
                creation_date: created.clone(),
            })
            .collect();
        xml_response(xml::list_buckets(&auth.verified.access_key, &visible))
    }

    fn head_bucket(&self) -> Response<ResponseBody> {
        let mut response = respond(StatusCode::OK, "ok", body::empty());
        if let Ok(region) = HeaderValue::from_str(&self.region) {
            response.headers_mut().insert("x-amz-bucket-region", region);
        }
        response
    }

    /// An S3 error answer, counted and with its request id.
    pub(super) fn error(
        &self,
        err: &S3Error,
        resource: Option<&str>,
        request_id: &str,
        head_only: bool,
    ) -> Response<ResponseBody> {
        error_response(err, resource, request_id, head_only)
    }
}

impl<B: Backend> Front for S3Front<B> {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn handle(&self, mut req: Request<Incoming>) -> Response<ResponseBody> {
        let request_id = request_id();
        let head_only = req.method() == Method::HEAD;
        // Neither the front nor the forward mode may act on a request whose address two
        // readers could take differently: such a request is refused before either sees it.
        let parsed = ParsedRequest::parse(req.uri(), req.version(), req.headers());
        let authority = parsed
            .as_ref()
            .ok()
            .and_then(|p| p.authority())
            .map(|a| a.as_sent().to_owned());
        if let Ok(parsed) = &parsed {
            parsed.complete_host(req.headers_mut());
            if let Some(forward) = self.forward.as_ref().filter(|f| f.claims(parsed)) {
                // Boxed: the forward mode's client future would otherwise weigh on every
                // request's (see `dispatch`).
                let mut response = Box::pin(forward.handle(req, parsed)).await;
                in_authority(&mut response, authority);
                return response;
            }
        }
        let authorized = parsed.and_then(|parsed| self.authorize(&req, &parsed, &request_id));
        let (mut response, operation, bucket) = match authorized {
            Ok(auth) => {
                let operation = auth.route.operation.name();
                let bucket = auth.route.bucket.clone();
                (self.dispatch(req, auth).await, operation, bucket)
            }
            Err(e) => {
                let resource = req.uri().path().to_string();
                let response = self.error(&e, Some(&resource), &request_id, head_only);
                (self.answers.refuse(req, response).await, "Refused", None)
            }
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        if let Some(outcome) = response.extensions_mut().get_mut::<Outcome>() {
            outcome.operation = Some(operation);
        }
        if let Some(bucket) = bucket {
            in_namespace(&mut response, &bucket);
        }
        in_authority(&mut response, authority);
        response
    }
}

/// Records the authority the request was read as addressed to, for the access log.
fn in_authority(response: &mut Response<ResponseBody>, authority: Option<String>) {
    if let Some(outcome) = response.extensions_mut().get_mut::<Outcome>() {
        outcome.authority = authority;
    }
}

/// The least access an operation needs in its bucket.
fn needed_access(operation: &Operation) -> Access {
    match operation {
        Operation::ListBuckets
        | Operation::HeadBucket
        | Operation::GetBucketLocation
        | Operation::ListObjectsV2
        | Operation::ListObjectsV1
        | Operation::ListMultipartUploads
        | Operation::GetObject
        | Operation::HeadObject
        | Operation::ListParts { .. }
        | Operation::NotImplemented => Access::Read,
        Operation::DeleteObjects
        | Operation::PutObject
        | Operation::CopyObject { .. }
        | Operation::DeleteObject
        | Operation::CreateMultipartUpload
        | Operation::UploadPart { .. }
        | Operation::UploadPartCopy { .. }
        | Operation::CompleteMultipartUpload { .. }
        | Operation::AbortMultipartUpload { .. } => Access::Readwrite,
    }
}

fn auth_failure_label(err: &sigv4::AuthError) -> &'static str {
    use sigv4::AuthError as E;
    match err {
        E::Anonymous => "anonymous",
        E::InvalidAccessKeyId => "unknown_key",
        E::SignatureDoesNotMatch => "bad_signature",
        E::Expired | E::NotYetValid | E::RequestTimeTooSkewed | E::BadExpiry(_) => "expired",
        E::TemporaryCredentials => "temporary_credentials",
        _ => "malformed",
    }
}

/// A 200 with an XML document.
pub(super) fn xml_response(document: String) -> Response<ResponseBody> {
    let mut response = respond(StatusCode::OK, "ok", body::full(document));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

/// A key the store refuses, as S3 would name the problem.
fn key_error(err: KeyError) -> S3Error {
    match err {
        KeyError::TooLong(_) => S3Error::new(S3ErrorCode::KeyTooLongError, "Your key is too long"),
        other => S3Error::new(
            S3ErrorCode::InvalidArgument,
            format!("invalid key: {other}"),
        ),
    }
}

/// What a store failure means to an S3 client. A full disk or queue and an unreachable backend
/// are worth retrying (503: every S3 client retries it); local I/O failures are the node's.
pub(super) fn store_error(err: StoreError) -> S3Error {
    match err {
        StoreError::LengthMismatch { .. } => S3Error::new(
            S3ErrorCode::IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header.",
        ),
        StoreError::TooLarge { limit } => super::objects::too_large(limit),
        StoreError::PreconditionFailed => super::objects::precondition_failed(),
        StoreError::NotFound => super::objects::no_such_key(),
        StoreError::BodyAborted(e) => S3Error::from_body_error(&e).unwrap_or_else(|| {
            S3Error::new(
                S3ErrorCode::IncompleteBody,
                "The request body was not received in full.",
            )
        }),
        StoreError::Full { .. } => S3Error::new(
            S3ErrorCode::SlowDown,
            "The node's cache has no room for this object now; retry later.",
        ),
        StoreError::QueueFull => S3Error::new(
            S3ErrorCode::SlowDown,
            "The node's upload queue is full; retry later.",
        ),
        StoreError::Remote(why) => {
            tracing::warn!(error = %why, "S3 front: the backend failed");
            S3Error::new(
                S3ErrorCode::ServiceUnavailable,
                "The backing store is unavailable; retry later.",
            )
        }
        StoreError::Unavailable => S3Error::new(
            S3ErrorCode::ServiceUnavailable,
            "The backing store is unavailable (circuit open); retry later.",
        ),
        StoreError::Io(e) => {
            tracing::error!(error = %e, "S3 front: local store failed");
            S3Error::new(
                S3ErrorCode::InternalError,
                "We encountered an internal error.",
            )
        }
    }
}
