//! The S3 forward mode: requests that clients signed for the real S3 (GitLab Runner with IRSA,
//! the aws CLI, the SDKs) reach the daemon under S3's host name and go on to S3 unchanged, so
//! S3 alone decides who may read or write; the daemon holds no credentials for them. What S3
//! allows, the node serves from its own copy when it can:
//!
//! - GetObject with a local copy goes out with `If-None-Match: <the copy's ETag>`; S3's 304
//!   says the signature is good and the copy current, and the node serves its bytes
//!   ([`read`]). A 200 streams to the client and into a new copy ([`fill`]).
//! - PutObject streams to S3 and into a copy that becomes visible only if S3 answered 200
//!   ([`write`]).
//! - GETs of a key whose copy is being filled ask S3 about the fill's object and, on its 304,
//!   read the fill's bytes as they arrive ([`flight`]).
//! - A ranged GetObject of a key the node does not hold is passed through, and the whole object
//!   is fetched once in the background when the signature allows it ([`prefetch`]).
//! - Everything else is passed through; deletes, copies and completed multipart uploads drop
//!   the local copy of their key when S3 accepts them ([`pass`]).
//!
//! Objects are cached under the forwarded endpoint's namespace as `<bucket>/<key>`, whether
//! the client addressed the bucket path style or virtual-host style: both name the same S3
//! object. The namespace never reaches the daemon's own `[s3]` backend.
//!
//! Which endpoint a request is for, and its bucket and key, come from the front's one
//! [`ParsedRequest`] of it: the same authority (a request with two `Host`s or a `Host` that
//! disagrees with its absolute-form target never gets here) that goes on to S3 in `Host`,
//! which is what S3 checks the signature against.

mod cacheable;
mod fill;
mod flight;
mod pass;
mod prefetch;
mod read;
pub(crate) mod upstream;
mod write;

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Method, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::Request;

use super::error::{error_response, request_id, S3Error, S3ErrorCode};
use super::request::ParsedRequest;
use super::route::{Operation, Router};
use crate::config::S3ApiForward;
use crate::fronts::reply::{in_namespace, BodyAnswers};
use crate::metrics::Metrics;
use crate::server::access::Outcome;
use crate::server::body::ResponseBody;
use crate::server::UploadLimits;
use crate::store::backend::Backend;
use crate::store::s3::S3Tier;
use crate::store::tiered::TieredStore;
use crate::store::{Key, Namespace};
pub use upstream::UpstreamError;
use upstream::{Upstream, UpstreamError as Failed};

/// One forwarded endpoint, from its `[[s3_api.forward]]` entry.
struct Endpoint {
    /// Lowercase host names, no port.
    hosts: Vec<String>,
    uri: Uri,
    namespace: Namespace,
    /// Knows the hosts as virtual-host bases, so `bucket.<host>` routes to `bucket`.
    router: Router,
    response_timeout: Duration,
    /// Whether SSE-KMS objects get copies (see [`cacheable`]).
    cache_kms: bool,
}

/// What a forwarded request is about.
pub(super) struct Target<'a> {
    endpoint: &'a Endpoint,
    /// The S3 operation's name (`Other` for what the S3 front does not know).
    operation: &'static str,
    /// The cache key of the object an object operation names (`<bucket>/<key>`).
    key: Option<Key>,
    /// The request head as the front read it: its decoded query is what decides whether the
    /// answer is the object as stored (`response-*`, `partNumber`, `versionId`).
    request: &'a ParsedRequest,
    /// The query's parameters, names and values decoded as S3 reads them.
    query: Vec<(String, String)>,
}

/// The forward mode's handler, consulted by the S3 front for every request.
pub struct Forward<B: Backend = S3Tier> {
    endpoints: Vec<Endpoint>,
    upstream: Upstream,
    store: Arc<TieredStore<B>>,
    uploads: UploadLimits,
    answers: BodyAnswers,
    metrics: Arc<Metrics>,
    prefetches: prefetch::Prefetches,
    flights: Arc<flight::Flights>,
}

impl<B: Backend> Forward<B> {
    /// The handler for the configured endpoints (validated with the config); `None` when
    /// there are none.
    pub fn new(
        config: &[S3ApiForward],
        store: Arc<TieredStore<B>>,
        uploads: UploadLimits,
        answers: BodyAnswers,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Option<Self>> {
        if config.is_empty() {
            return Ok(None);
        }
        let mut endpoints = Vec::new();
        for forward in config {
            let uri: Uri = forward.endpoint.parse().map_err(std::io::Error::other)?;
            let namespace = Namespace::new(&forward.namespace).map_err(std::io::Error::other)?;
            let hosts: Vec<String> = forward
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            endpoints.push(Endpoint {
                router: Router::new(hosts.iter().cloned()),
                hosts,
                uri,
                namespace,
                response_timeout: forward.response_timeout,
                cache_kms: forward.cache_kms,
            });
        }
        let connect_timeout = config
            .iter()
            .map(|f| f.connect_timeout)
            .max()
            .unwrap_or(Duration::from_secs(10));
        let needs_https = endpoints
            .iter()
            .any(|e| e.uri.scheme_str() == Some("https"));
        Ok(Some(Forward {
            endpoints,
            upstream: Upstream::new(connect_timeout, needs_https)?,
            store,
            uploads,
            answers,
            metrics,
            prefetches: prefetch::Prefetches::default(),
            flights: Arc::default(),
        }))
    }

    /// Whether the request is addressed to a forwarded host (its authority, port aside, is
    /// one of them or a bucket under one).
    pub fn claims(&self, request: &ParsedRequest) -> bool {
        self.endpoint_for(request).is_some()
    }

    fn endpoint_for(&self, request: &ParsedRequest) -> Option<&Endpoint> {
        let name = request.authority()?.host();
        self.endpoints
            .iter()
            .find(|endpoint| names_host(&endpoint.hosts, name))
    }

    /// Forwards one request (which [`Forward::claims`], read as `parsed`) and answers with
    /// S3's answer, or with the node's copy where S3 said it is current.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        parsed: &ParsedRequest,
    ) -> Response<ResponseBody> {
        let Some(endpoint) = self.endpoint_for(parsed) else {
            // The front asks `claims` with this same value first.
            let err = Failed::Unreachable("no forwarded host".into());
            return self.failed(req.method(), req.uri().path(), "Other", &err);
        };
        let route = endpoint
            .router
            .route(req.method(), parsed, req.headers())
            .ok();
        let operation = match route.as_ref().map(|r| &r.operation) {
            Some(Operation::NotImplemented) | None => "Other",
            Some(op) => op.name(),
        };
        let key = route.as_ref().and_then(|route| {
            let (bucket, name) = (route.bucket.as_deref()?, route.key.as_deref()?);
            Key::object(endpoint.namespace.clone(), &format!("{bucket}/{name}")).ok()
        });
        let target = Target {
            endpoint,
            operation,
            key,
            request: parsed,
            query: parsed.query().to_vec(),
        };
        let mut response = match route.map(|r| r.operation) {
            Some(Operation::GetObject) if target.key.is_some() => self.get(req, &target).await,
            Some(Operation::HeadObject) if target.key.is_some() => self.head(req, &target).await,
            Some(Operation::PutObject) if target.key.is_some() => self.put(req, &target).await,
            Some(
                Operation::DeleteObject
                | Operation::CopyObject { .. }
                | Operation::CompleteMultipartUpload { .. },
            ) => self.pass(req, &target, true).await,
            _ => self.pass(req, &target, false).await,
        };
        if let Some(outcome) = response.extensions_mut().get_mut::<Outcome>() {
            outcome.operation = Some(operation);
            outcome.forward = true;
        }
        in_namespace(&mut response, endpoint.namespace.as_str());
        response
    }

    /// Counts S3's answer to a forwarded request.
    fn answered(&self, target: &Target<'_>, status: StatusCode) {
        self.metrics
            .forward_requests
            .with_label_values(&[target.operation, status.as_str()])
            .inc();
    }

    /// The answer when S3 could not be asked: S3 XML, retryable (503) for the client.
    fn failed(
        &self,
        method: &Method,
        path: &str,
        operation: &'static str,
        err: &Failed,
    ) -> Response<ResponseBody> {
        tracing::warn!(operation, error = %err, "S3 forward: no answer from S3");
        let label = match err {
            Failed::Unreachable(_) => "unreachable",
            Failed::Timeout(_) => "timeout",
        };
        self.metrics
            .forward_requests
            .with_label_values(&[operation, label])
            .inc();
        let id = request_id();
        let mut response = error_response(
            &S3Error::new(
                S3ErrorCode::ServiceUnavailable,
                "The node could not reach S3 for this request; retry later.",
            ),
            Some(path),
            &id,
            method == Method::HEAD,
        );
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert("x-amz-request-id", value);
        }
        response
    }
}

/// Whether `name` is one of `hosts` or a bucket under one (`<bucket>.<host>`).
fn names_host(hosts: &[String], name: &str) -> bool {
    hosts.iter().any(|base| {
        name == base
            || name
                .strip_suffix(base.as_str())
                .and_then(|bucket| bucket.strip_suffix('.'))
                .is_some_and(|bucket| !bucket.is_empty())
    })
}

/// A header map of `(name, value)` pairs, in order, repeats appended: for the forward mode's
/// unit tests.
#[cfg(test)]
fn test_headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fronts::s3::request::Authority;

    #[test]
    fn forwarded_hosts_are_matched_by_name_path_or_virtual_host_style_with_any_port() {
        let hosts = vec!["s3.eu-west-1.amazonaws.com".to_string()];
        let matches = |host: &str| names_host(&hosts, Authority::parse(host).unwrap().host());
        assert!(matches("s3.eu-west-1.amazonaws.com"));
        assert!(matches("S3.EU-WEST-1.amazonaws.com:443"));
        assert!(matches("my-bucket.s3.eu-west-1.amazonaws.com"));
        assert!(matches("my.dotted.bucket.s3.eu-west-1.amazonaws.com:80"));
        assert!(!matches(".s3.eu-west-1.amazonaws.com"));
        assert!(!matches("evil-s3.eu-west-1.amazonaws.com"));
        assert!(!matches("s3.eu-west-1.amazonaws.com.evil.test"));
        assert!(!matches("127.0.0.1:9000"));
    }
}
