//! The S3 tier: the bucket every node shares, behind each node's memory and disk. It is the
//! [`Backend`] of the daemon; this file holds the tier's handle and how each request is
//! accounted (circuit breaker, deadlines, metrics); [`read`] turns gets, heads, listings and
//! deletes into SDK calls and back, and [`upload`] is the put engine (one PUT or multipart).
//!
//! # Key layout
//!
//! An entry of namespace `ns` and name `name` is the object `<s3.prefix><ns>/<name>` in
//! `s3.bucket` (a non-empty prefix always ends in `/`). Gradle entries are therefore
//! `<prefix>gradle/<hex key>`, e.g. `ci-cache/gradle/0123abcd…` with `prefix = "ci-cache"`.
//! A namespace given a location of its own ([`S3Tier::with_locations`], from its policy's
//! `location`) is instead the object `<location.prefix><name>` in `location.bucket`, for every
//! operation (get, head, put, delete, list), so a bucket's existing objects are served under
//! their own keys.
//! Objects this daemon uploads carry the body's CRC32C as user metadata `x-amz-meta-crc32c`
//! (8 lowercase hex digits); a read-through verifies it when present, and always verifies the
//! length. Objects written by anything else are served with the length check alone.
//!
//! # Failure handling
//!
//! Reads wait at most `s3.read_timeout` for response headers and go through a circuit
//! [`breaker`]: while S3 is failing, reads are refused at once ([`StoreError::Unavailable`]).
//! A body that fails or stalls after the headers ends the stream with an error, so nothing
//! downstream mistakes it for a complete object. Uploads and deletes don't ask the breaker (the
//! write-back queue has its own backoff) but report to it, with a deadline that grows with
//! their size.

pub mod breaker;
pub mod client;
mod file_body;
mod read;
mod streamed;
mod upload;

pub use streamed::S3Streamed;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::{Backend, Fetch, GetOptions, Growing, ListRequest, Listing, Upload};
use super::policy::{BackendLocation, Policies};
use super::{Key, Namespace, ObjectMeta, StoreError};
use crate::config::S3Config;
use crate::metrics::Metrics;
use breaker::Breaker;

type SdkError<E> = aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>;

/// The user metadata key (without `x-amz-meta-`) that carries our CRC32C: reserved, so that a
/// client's own `x-amz-meta-*` can never be taken for it (the S3 front refuses it from clients
/// and never shows it).
pub const CRC32C_META: &str = "build-cache-proxy-crc32c";
/// The user metadata that carries a client's verified whole-object checksum (a kept
/// `x-amz-checksum-<algorithm>`) between nodes: `build-cache-proxy-checksum-<algorithm>`. In our
/// own metadata, so that a node reads it with the object's headers and no checksum validation
/// of its body by the SDK (the fill verifies the CRC32C already).
pub const CHECKSUM_META_PREFIX: &str = "build-cache-proxy-checksum-";
/// The S3 header of a kept checksum, and its metadata name.
pub fn checksum_meta_name(header: &str) -> Option<String> {
    let algorithm = header.strip_prefix("x-amz-checksum-")?;
    Some(format!("{CHECKSUM_META_PREFIX}{algorithm}"))
}
/// The name the first release used, still honoured for Gradle entries (whose objects no client
/// writes metadata on).
pub const LEGACY_CRC32C_META: &str = "crc32c";
/// Smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Writes get this long, plus the time their bytes take at [`UPLOAD_FLOOR_RATE`], before they
/// are abandoned and retried: enough for a slow link, finite for a hung server.
const UPLOAD_BASE_DEADLINE: Duration = Duration::from_secs(60);
const UPLOAD_FLOOR_RATE: u64 = 1024 * 1024;

/// A handle to the S3 tier; cheap to clone.
#[derive(Clone)]
pub struct S3Tier {
    inner: Arc<Inner>,
    /// Namespaces whose objects live elsewhere than `<bucket>/<prefix><namespace>/`.
    locations: Arc<HashMap<Namespace, BackendLocation>>,
}

struct Inner {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    read_timeout: Duration,
    part_size: u64,
    part_concurrency: usize,
    breaker: Breaker,
    metrics: Arc<Metrics>,
    /// S3 refused a multipart upload with a full-object checksum: write-through uploads start
    /// once the body is received (see `streamed.rs`).
    streaming_refused: std::sync::atomic::AtomicBool,
}

/// How S3 answered a read that did not return the object: each is an answer, not a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    NotModified,
    Missing,
    PreconditionFailed,
    RangeNotSatisfiable,
}

impl Answer {
    fn of_status(status: u16) -> Option<Answer> {
        match status {
            304 => Some(Answer::NotModified),
            404 => Some(Answer::Missing),
            412 => Some(Answer::PreconditionFailed),
            416 => Some(Answer::RangeNotSatisfiable),
            _ => None,
        }
    }

    /// The `result` label of `s3_requests_total`.
    fn label(self) -> &'static str {
        match self {
            Answer::NotModified => "not_modified",
            Answer::Missing => "miss",
            Answer::PreconditionFailed => "precondition_failed",
            Answer::RangeNotSatisfiable => "unsatisfiable",
        }
    }

    fn fetch(self) -> Fetch {
        match self {
            Answer::NotModified => Fetch::NotModified,
            Answer::Missing => Fetch::Missing,
            Answer::PreconditionFailed => Fetch::PreconditionFailed,
            Answer::RangeNotSatisfiable => Fetch::RangeNotSatisfiable,
        }
    }
}

impl S3Tier {
    /// A tier over `client` (see [`client::build`]; tests may pass their own).
    pub fn new(client: aws_sdk_s3::Client, config: &S3Config, metrics: Arc<Metrics>) -> S3Tier {
        let gauge = metrics.s3_up.clone();
        let breaker = Breaker::new(
            config.breaker_failures,
            config.breaker_cooldown,
            Some(Box::new(move |up| gauge.set(i64::from(up)))),
        );
        S3Tier {
            inner: Arc::new(Inner {
                client,
                bucket: config.bucket.clone(),
                prefix: normalize_prefix(&config.prefix),
                read_timeout: config.read_timeout,
                part_size: config.multipart_part_size.as_u64().max(MIN_PART_SIZE),
                part_concurrency: config.multipart_concurrency.max(1),
                breaker,
                metrics,
                streaming_refused: std::sync::atomic::AtomicBool::new(false),
            }),
            locations: Arc::new(HashMap::new()),
        }
    }

    /// The tier with some namespaces' objects in a bucket and under a prefix of their own
    /// (`<location.bucket>/<location.prefix><name>`), so that objects already in a bucket
    /// under their own keys are served as they are. Other namespaces keep the default layout.
    pub fn with_locations(
        mut self,
        locations: impl IntoIterator<Item = (Namespace, BackendLocation)>,
    ) -> S3Tier {
        let locations = locations
            .into_iter()
            .map(|(namespace, location)| {
                let prefix = normalize_prefix(&location.prefix);
                (namespace, BackendLocation { prefix, ..location })
            })
            .collect();
        self.locations = Arc::new(locations);
        self
    }

    /// [`S3Tier::with_locations`] for the namespaces whose policy names a location.
    pub fn with_policies(self, policies: &Policies) -> S3Tier {
        let locations = policies
            .named()
            .filter_map(|(ns, policy)| Some((ns.clone(), policy.location.clone()?)))
            .collect::<Vec<_>>();
        self.with_locations(locations)
    }

    /// The default bucket (namespaces without a location of their own).
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// Where a namespace's objects are: the bucket, and the prefix of their object keys.
    pub fn namespace_location(&self, namespace: &Namespace) -> (&str, String) {
        match self.locations.get(namespace) {
            Some(location) => (&location.bucket, location.prefix.clone()),
            None => (
                &self.inner.bucket,
                format!("{}{}/", self.inner.prefix, namespace.as_str()),
            ),
        }
    }

    /// The bucket and object key of an entry: by default `<s3.prefix><namespace>/<name>` in
    /// `s3.bucket`, or `<prefix><name>` in the namespace's own location.
    pub fn object_location(&self, key: &Key) -> (&str, String) {
        let (bucket, prefix) = self.namespace_location(key.namespace());
        (bucket, format!("{prefix}{}", key.name()))
    }

    /// The object key of an entry (in the bucket [`S3Tier::object_location`] names).
    pub fn object_key(&self, key: &Key) -> String {
        self.object_location(key).1
    }

    pub fn breaker(&self) -> &Breaker {
        &self.inner.breaker
    }

    fn observe(&self, op: &str, result: &str, started: Instant) {
        let m = &self.inner.metrics;
        m.s3_requests.with_label_values(&[op, result]).inc();
        m.s3_duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }

    fn skipped(&self, op: &str) -> StoreError {
        self.inner
            .metrics
            .s3_requests
            .with_label_values(&[op, "skipped"])
            .inc();
        StoreError::Unavailable
    }

    /// Awaits a read's response headers within `s3.read_timeout`, through the breaker,
    /// reporting the outcome to it and to the metrics. `Ok(Err(answer))`: S3 answered without
    /// the object (404, 304, 412, 416), which says nothing against its availability.
    async fn read_call<T, E>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<Result<T, Answer>, StoreError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let Some(permit) = self.inner.breaker.try_acquire() else {
            return Err(self.skipped(op));
        };
        let started = Instant::now();
        match tokio::time::timeout(self.inner.read_timeout, call).await {
            Err(_) => {
                permit.failure();
                self.observe(op, "timeout", started);
                Err(StoreError::Remote(format!(
                    "S3 {op}: no response within {:?}",
                    self.inner.read_timeout
                )))
            }
            Ok(Ok(out)) => {
                permit.success();
                self.observe(op, "ok", started);
                Ok(Ok(out))
            }
            Ok(Err(e)) => {
                let status = status_of(&e);
                if let Some(answer) = status.and_then(Answer::of_status) {
                    permit.success();
                    self.observe(op, answer.label(), started);
                    return Ok(Err(answer));
                }
                // A 4xx other than those (403, 400) is S3 answering: don't count it against
                // its availability, but do report it.
                if status.is_some_and(|s| (400..500).contains(&s)) {
                    permit.success();
                } else {
                    permit.failure();
                }
                self.observe(op, "error", started);
                Err(StoreError::Remote(format!(
                    "S3 {op}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )))
            }
        }
    }

    /// Runs one write request (upload, delete) with a deadline that grows with its size,
    /// reporting to the breaker (writes don't ask it first: they have their own backoff) and
    /// the metrics.
    async fn write_call<T, E>(
        &self,
        op: &'static str,
        bytes: u64,
        call: impl std::future::Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<T, StoreError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.write_call_answered(op, bytes, call)
            .await
            .map_err(|(_, e)| e)
    }

    /// [`S3Tier::write_call`], saying of a failure whether S3 answered it (a 4xx: S3 refused
    /// the request, rather than failed or was not reached).
    async fn write_call_answered<T, E>(
        &self,
        op: &'static str,
        bytes: u64,
        call: impl std::future::Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<T, (bool, StoreError)>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let deadline = UPLOAD_BASE_DEADLINE + Duration::from_secs(bytes / UPLOAD_FLOOR_RATE);
        let started = Instant::now();
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(out)) => {
                self.inner.breaker.record(true);
                self.observe(op, "ok", started);
                self.inner.metrics.s3_bytes_sent.inc_by(bytes);
                Ok(out)
            }
            Ok(Err(e)) => {
                let answered = status_of(&e).is_some_and(|s| (400..500).contains(&s));
                self.inner.breaker.record(answered);
                self.observe(op, "error", started);
                Err((
                    answered,
                    StoreError::Remote(format!(
                        "S3 {op}: {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    )),
                ))
            }
            Err(_) => {
                self.inner.breaker.record(false);
                self.observe(op, "timeout", started);
                Err((
                    false,
                    StoreError::Remote(format!("S3 {op}: not done within {deadline:?}")),
                ))
            }
        }
    }
}

impl Backend for S3Tier {
    async fn get(&self, key: &Key, options: &GetOptions) -> Result<Fetch, StoreError> {
        self.get_object(key, options).await
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        self.head_object(key).await
    }

    async fn put(&self, upload: &Upload) -> Result<Option<String>, StoreError> {
        self.upload(upload).await
    }

    type Streamed = S3Streamed;

    async fn begin_put(&self, body: Growing) -> Option<S3Streamed> {
        self.begin_streamed(body).await
    }

    async fn delete(&self, key: &Key) -> Result<(), StoreError> {
        self.delete_object(key).await
    }

    async fn list(&self, request: &ListRequest) -> Result<Listing, StoreError> {
        self.list_objects(request).await
    }
}

fn normalize_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

fn status_of<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tier over a client that is never called: the mapping of keys is all that is tested.
    fn offline_tier(config: &S3Config) -> S3Tier {
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .build(),
        );
        S3Tier::new(client, config, Arc::new(Metrics::new()))
    }

    #[test]
    fn namespaces_map_to_their_own_bucket_and_prefix_or_the_default_layout() {
        let config = S3Config {
            bucket: "shared".into(),
            prefix: "ci".into(),
            ..S3Config::default()
        };
        let runner = Namespace::new("runner-cache").unwrap();
        let artifacts = Namespace::new("artifacts").unwrap();
        let plain = Namespace::new("plain").unwrap();
        let located = |bucket: &str, prefix: &str| super::super::policy::NamespacePolicy {
            location: Some(BackendLocation {
                bucket: bucket.into(),
                prefix: prefix.into(),
            }),
            ..Default::default()
        };
        let policies = Policies::default()
            .with(runner.clone(), located("gitlab-cache", "runner"))
            .with(artifacts.clone(), located("jars", ""))
            .with(plain.clone(), Default::default());
        let tier = offline_tier(&config).with_policies(&policies);
        let object = |ns: &Namespace, name: &str| {
            let (bucket, key) = tier.object_location(&Key::object(ns.clone(), name).unwrap());
            (bucket.to_string(), key)
        };
        // The runner's own keys, unchanged under the configured prefix of its own bucket.
        assert_eq!(
            object(&runner, "project/42/build-jar/main-protected"),
            (
                "gitlab-cache".into(),
                "runner/project/42/build-jar/main-protected".into()
            )
        );
        assert_eq!(
            object(&artifacts, "app/1.0/app.jar"),
            ("jars".into(), "app/1.0/app.jar".into())
        );
        // Without a location: the default bucket, under `<prefix><namespace>/`.
        assert_eq!(
            object(&plain, "x/y"),
            ("shared".into(), "ci/plain/x/y".into())
        );
        let gradle = Key::gradle(&"ab".repeat(16)).unwrap();
        assert_eq!(
            tier.object_location(&gradle),
            ("shared", format!("ci/gradle/{}", "ab".repeat(16)))
        );
        // Listings strip the same prefix the keys were given.
        assert_eq!(
            tier.namespace_location(&runner),
            ("gitlab-cache", "runner/".to_string())
        );
        assert_eq!(
            tier.namespace_location(&plain),
            ("shared", "ci/plain/".into())
        );
    }

    #[test]
    fn prefixes_end_in_a_slash() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("ci"), "ci/");
        assert_eq!(normalize_prefix("ci/"), "ci/");
    }

    #[test]
    fn s3_answers_are_not_failures() {
        assert_eq!(Answer::of_status(304), Some(Answer::NotModified));
        assert_eq!(Answer::of_status(404), Some(Answer::Missing));
        assert_eq!(Answer::of_status(412), Some(Answer::PreconditionFailed));
        assert_eq!(Answer::of_status(416), Some(Answer::RangeNotSatisfiable));
        assert_eq!(Answer::of_status(403), None);
        assert_eq!(Answer::of_status(503), None);
    }
}
