//! The dependency proxy: Maven repositories (`/maven/<name>/...`) and downloads
//! (`/downloads/<name>/...`, Gradle distributions) pulled through the node, on the Gradle
//! listener, GET and HEAD only.
//!
//! A file is looked up in the store first (memory, disk, then the shared bucket, where another
//! node may have put it: the `deps` namespace, written back like Gradle's entries), and fetched
//! from its upstream only when no tier has it. What a path is decides how it is kept
//! ([`path`]): release files are immutable; `maven-metadata.xml` and `-SNAPSHOT` files are
//! revalidated with a conditional GET once older than the repository's `metadata_max_age`, and
//! served stale while the upstream fails. An upstream 404 is remembered for `not_found_ttl`;
//! 5xx answers and timeouts never are. A file the upstream publishes a `.sha1` or `.sha256`
//! for is checked against it as it streams into the store, and kept only if it matches
//! ([`verify`]): a mismatch is a 502, counted and logged, and no tier ever has the file.
//!
//! Concurrent requests for one path that no tier has wait on one upstream request: each fetch
//! is a flight, spawned so that it completes (and is kept) even when the client that started
//! it goes away.

pub mod path;
pub mod upstream;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::{BoxFuture, Shared};
use futures_util::{FutureExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::config::{Download, MavenConfig};
use crate::fronts::reply::{in_namespace, method_not_allowed, respond, set_length, with_tier};
use crate::fronts::s3::forward::upstream::body_stream;
use crate::metrics::Metrics;
use crate::server::access::Outcome;
use crate::server::body::{self, ResponseBody};
use crate::store::{
    BodyLen, ByteStream, Key, Namespace, Object, ObjectAttrs, ObjectMeta, PutOptions, Store,
    StoreError,
};
use path::PathClass;
use upstream::Validators;
use verify::{Algorithm, Expected};

/// Where each kind of upstream is served on the Gradle listener.
const MAVEN_PREFIX: &str = "/maven/";
const DOWNLOADS_PREFIX: &str = "/downloads/";
/// A cached file's upstream validators and fetch time, kept as its object metadata so that
/// every node that reads it from the bucket knows them.
const META_FETCHED: &str = "build-cache-proxy-dep-fetched";
const META_ETAG: &str = "build-cache-proxy-dep-etag";
const META_LAST_MODIFIED: &str = "build-cache-proxy-dep-last-modified";
/// Remembered 404s and revalidation times, per node.
const REMEMBERED: u64 = 65_536;
/// Largest checksum file read.
const MAX_CHECKSUM_FILE: usize = 1024;

/// Whether a request path is the dependency proxy's.
pub fn routes(path: &str) -> bool {
    path.starts_with(MAVEN_PREFIX) || path.starts_with(DOWNLOADS_PREFIX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Maven,
    Download,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Maven => "maven",
            Kind::Download => "downloads",
        }
    }

    /// The checksum files asked for, in order: Maven repositories always publish `.sha1`;
    /// distribution sites publish `.sha256`.
    fn checksums(self) -> [Algorithm; 2] {
        match self {
            Kind::Maven => [Algorithm::Sha1, Algorithm::Sha256],
            Kind::Download => [Algorithm::Sha256, Algorithm::Sha1],
        }
    }

    fn classify(self, path: &str) -> PathClass {
        match self {
            Kind::Maven => path::maven(path),
            Kind::Download => path::download(path),
        }
    }
}

/// One upstream.
struct Source {
    kind: Kind,
    /// `maven/<name>` or `downloads/<name>`: the metrics' label and the keys' prefix.
    label: String,
    base: String,
    credentials: Option<(String, String)>,
    max_age: Duration,
    not_found_ttl: Duration,
}

/// What a flight did.
#[derive(Debug, Clone)]
enum Fetched {
    /// The store has the upstream's current file.
    Stored,
    /// The cached copy is the upstream's current file.
    NotModified,
    NotFound,
    /// No answer from the upstream, or one that is not the file (5xx, 401, a cut-off body).
    Failed(String),
    /// The file is not to be served: its checksum does not match, or it is too large.
    Refused(&'static str, String),
    /// The upstream's file is good, but the store could not keep it (disk full): served
    /// straight from the upstream instead, checked against this.
    NotKept(Option<Expected>, String),
}

type Flight = Shared<BoxFuture<'static, Fetched>>;

/// The dependency proxy over the store `S`.
pub struct Deps<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    store: Arc<S>,
    client: upstream::Client,
    sources: HashMap<(Kind, String), Arc<Source>>,
    not_found: moka::future::Cache<Key, Instant>,
    /// When this node last confirmed a changing file with its upstream.
    validated: moka::future::Cache<Key, SystemTime>,
    flights: Mutex<HashMap<Key, Flight>>,
    max_file_size: u64,
    metrics: Arc<Metrics>,
}

impl<S: Store> Deps<S> {
    /// The proxy, or `None` when no repository or download is configured.
    pub fn new(
        store: Arc<S>,
        maven: &MavenConfig,
        downloads: &[Download],
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Option<Deps<S>>> {
        if maven.repositories.is_empty() && downloads.is_empty() {
            return Ok(None);
        }
        let mut sources = HashMap::new();
        for repository in &maven.repositories {
            let source = Source {
                kind: Kind::Maven,
                label: format!("maven/{}", repository.name),
                base: repository.url.clone(),
                credentials: repository.credentials.clone(),
                max_age: repository
                    .metadata_max_age
                    .unwrap_or(maven.metadata_max_age),
                not_found_ttl: repository.not_found_ttl.unwrap_or(maven.not_found_ttl),
            };
            sources.insert((Kind::Maven, repository.name.clone()), Arc::new(source));
        }
        for download in downloads {
            let source = Source {
                kind: Kind::Download,
                label: format!("downloads/{}", download.name),
                base: download.url.clone(),
                credentials: None,
                max_age: maven.metadata_max_age,
                not_found_ttl: maven.not_found_ttl,
            };
            sources.insert((Kind::Download, download.name.clone()), Arc::new(source));
        }
        let longest_ttl = sources
            .values()
            .map(|s| s.not_found_ttl)
            .max()
            .unwrap_or_default();
        for source in sources.values() {
            metrics.deps.add_repository(&source.label);
            tracing::info!(repository = %source.label, upstream = %source.base, "dependency upstream configured");
        }
        Ok(Some(Deps {
            inner: Arc::new(Inner {
                store,
                client: upstream::Client::new(maven.connect_timeout, maven.response_timeout)?,
                sources,
                not_found: moka::future::Cache::builder()
                    .max_capacity(REMEMBERED)
                    .time_to_live(longest_ttl.max(Duration::from_secs(1)))
                    .build(),
                validated: moka::future::Cache::builder()
                    .max_capacity(REMEMBERED)
                    .build(),
                flights: Mutex::new(HashMap::new()),
                max_file_size: maven.max_file_size.as_u64(),
                metrics,
            }),
        }))
    }

    /// Answers a request under `/maven/` or `/downloads/`.
    pub async fn handle<B>(&self, req: &Request<B>) -> Response<ResponseBody> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return method_not_allowed("GET, HEAD"),
        };
        let (kind, rest) = match req.uri().path() {
            p if p.starts_with(MAVEN_PREFIX) => (Kind::Maven, &p[MAVEN_PREFIX.len()..]),
            p => (Kind::Download, &p[DOWNLOADS_PREFIX.len()..]),
        };
        let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return self.index(kind);
        }
        let Some(source) = self.inner.sources.get(&(kind, name.to_string())).cloned() else {
            return respond(
                StatusCode::NOT_FOUND,
                "no_route",
                body::full(format!(
                    "no {} named {name:?} is configured on this node\n",
                    kind.as_str()
                )),
            );
        };
        let refused = |reason: String| {
            respond(
                StatusCode::NOT_FOUND,
                "bad_path",
                body::full(format!("{reason}\n")),
            )
        };
        if let Err(e) = path::check(path) {
            return refused(e.to_string());
        }
        let key = match Key::object(Namespace::deps(), &format!("{}/{path}", source.label)) {
            Ok(key) => key,
            Err(e) => return refused(e.to_string()),
        };
        let class = kind.classify(path);
        let mut response = self
            .inner
            .serve(&source, key, path.to_string(), class, head)
            .await;
        if let Some(outcome) = response.extensions_mut().get_mut::<Outcome>() {
            outcome.operation = Some(match kind {
                Kind::Maven => "MavenGet",
                Kind::Download => "DownloadGet",
            });
        }
        in_namespace(&mut response, Namespace::deps().as_str());
        response
    }
}

impl<S: Store> Deps<S> {
    /// `GET /maven/`: one line per repository, `<name> <upstream URL>`, so that the Gradle init
    /// script (`chart/build-cache-proxy/files/`) can point each repository a build declares
    /// at the node's path for it, without a list of its own to keep in step.
    fn index(&self, kind: Kind) -> Response<ResponseBody> {
        let mut lines: Vec<String> = self
            .inner
            .sources
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, name), source)| format!("{name} {}\n", source.base))
            .collect();
        lines.sort();
        let mut response = respond(StatusCode::OK, "index", body::full(lines.concat()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl<S: Store> Inner<S> {
    async fn serve(
        self: &Arc<Self>,
        source: &Arc<Source>,
        key: Key,
        path: String,
        class: PathClass,
        head: bool,
    ) -> Response<ResponseBody> {
        if self.remembered_missing(&key).await {
            return self.not_found(source, "not_found_cached");
        }
        if let Some(object) = self.cached(&key).await {
            if !class.changing || self.is_fresh(source, &key, &object.meta).await {
                return self.answer(source, object, "hit", false, head);
            }
            let current = Some(object.meta.clone());
            return match self.flight(source, &key, (&path, class), current).await {
                Fetched::NotModified => self.answer(source, object, "revalidated", false, head),
                Fetched::Stored => {
                    drop(object);
                    self.serve_fetched(source, &key, head).await
                }
                Fetched::NotFound => self.not_found(source, "not_found"),
                // The upstream cannot say: the copy we have is the best answer there is, for
                // another metadata_max_age, so that requests meanwhile do not each wait on an
                // upstream that may be hanging.
                Fetched::Failed(reason) | Fetched::NotKept(_, reason) => {
                    tracing::warn!(key = %key, %reason, "revalidation failed; serving the cached copy");
                    self.validated.insert(key.clone(), SystemTime::now()).await;
                    self.answer(source, object, "stale", false, head)
                }
                Fetched::Refused(result, reason) => self.refused(source, result, &reason),
            };
        }
        if !class.changing && self.shared_missing(source, &key, &path).await {
            return self.not_found(source, "not_found_cached");
        }
        match self.flight(source, &key, (&path, class), None).await {
            Fetched::Stored | Fetched::NotModified => self.serve_fetched(source, &key, head).await,
            Fetched::NotFound => self.not_found(source, "not_found"),
            Fetched::Failed(reason) => self.refused(source, "upstream_error", &reason),
            Fetched::Refused(result, reason) => self.refused(source, result, &reason),
            Fetched::NotKept(expected, reason) => {
                tracing::warn!(key = %key, %reason, "cannot keep a dependency; serving it from the upstream");
                self.pass_through(source, &path, expected, head).await
            }
        }
    }

    /// The store's copy; a store failure (S3 down) is no copy: the upstream is asked instead.
    async fn cached(&self, key: &Key) -> Option<Object> {
        match self.store.get(key).await {
            Ok(found) => found,
            Err(StoreError::Unavailable) => None,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "store failed on read; asking the upstream");
                None
            }
        }
    }

    /// Whether another node (or this one, before a restart) found `path` missing upstream
    /// within `not_found_ttl`: its marker in the store (and so in the bucket), written by
    /// [`Inner::fetch`]. Gradle probes every repository for every module, and for files a
    /// module does not have (a plugin marker's jar); a second node need not ask again.
    async fn shared_missing(&self, source: &Source, key: &Key, path: &str) -> bool {
        let Some(marker) = missing_marker(source, path) else {
            return false;
        };
        let Ok(Some(meta)) = self.store.head(&marker).await else {
            return false;
        };
        let found_missing = fetched_at(&meta);
        let fresh = SystemTime::now()
            .duration_since(found_missing)
            .is_ok_and(|age| age < source.not_found_ttl);
        if fresh {
            let until = Instant::now() + source.not_found_ttl;
            self.not_found.insert(key.clone(), until).await;
        }
        fresh
    }

    async fn remembered_missing(&self, key: &Key) -> bool {
        self.not_found
            .get(key)
            .await
            .is_some_and(|until| Instant::now() < until)
    }

    /// A changing file is fresh while its last fetch or confirmation is younger than its
    /// repository's `metadata_max_age`.
    async fn is_fresh(&self, source: &Source, key: &Key, meta: &ObjectMeta) -> bool {
        let fetched = fetched_at(meta);
        let confirmed = self.validated.get(key).await.unwrap_or(UNIX_EPOCH);
        let last = fetched.max(confirmed);
        SystemTime::now()
            .duration_since(last)
            .is_ok_and(|age| age < source.max_age)
            || last > SystemTime::now()
    }

    /// The flight that brings `key` up to date with its upstream: joined if one is on its way,
    /// started (as its own task) if not. `current` is the copy the caller found (its
    /// validators make a changing file's request conditional), `None` when it found none.
    fn flight(
        self: &Arc<Self>,
        source: &Arc<Source>,
        key: &Key,
        (path, class): (&str, PathClass),
        current: Option<ObjectMeta>,
    ) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(key) {
            return flight.clone();
        }
        let (inner, source, task_key, path) =
            (self.clone(), source.clone(), key.clone(), path.to_string());
        let task = tokio::spawn(async move {
            let fetched = inner
                .fetch(&source, &task_key, (&path, class), current)
                .await;
            inner
                .flights
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&task_key);
            fetched
        });
        let flight = async move {
            task.await
                .unwrap_or_else(|e| Fetched::Failed(format!("fetch task failed: {e}")))
        }
        .boxed()
        .shared();
        flights.insert(key.clone(), flight.clone());
        flight
    }

    /// One upstream request for `key`: conditional when the caller has a copy of a changing
    /// file (an immutable one is only ever fetched when there is none).
    async fn fetch(
        self: &Arc<Self>,
        source: &Arc<Source>,
        key: &Key,
        (path, class): (&str, PathClass),
        current: Option<ObjectMeta>,
    ) -> Fetched {
        let current = current.filter(|_| class.changing);
        let validators = current.as_ref().map(validators_of).unwrap_or_default();
        let Some(url) = upstream::join(&source.base, path) else {
            return Fetched::Failed(format!("{path:?} makes no URL under {}", source.base));
        };
        let metrics = &self.metrics.deps;
        let upstream_status = |status: &str| {
            metrics
                .upstream_requests
                .with_label_values(&[&source.label, status])
                .inc()
        };
        let revalidated = |result: &str| {
            if current.is_some() {
                metrics
                    .revalidations
                    .with_label_values(&[&source.label, result])
                    .inc();
            }
        };
        // A file to be checked against its checksum file asks for both at once, so that a cold
        // fetch costs the upstream's round trip once, not twice (a revalidation, which mostly
        // ends in a 304, asks for the checksum only once the file has changed).
        let get = self
            .client
            .get(&url, source.credentials.as_ref(), &validators);
        let (response, early_checksum) = match class.verified && current.is_none() {
            true => {
                let first = &source.kind.checksums()[..1];
                let (response, checksum) =
                    tokio::join!(get, self.expected_checksum(source, path, first));
                (response, Some(checksum))
            }
            false => (get.await, None),
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                upstream_status("error");
                revalidated("failed");
                return Fetched::Failed(e.to_string());
            }
        };
        let status = response.status();
        upstream_status(match status.as_u16() {
            200 => "200",
            304 => "304",
            404 => "404",
            500..=599 => "5xx",
            _ => "other",
        });
        match status {
            StatusCode::NOT_MODIFIED if current.is_some() => {
                self.validated.insert(key.clone(), SystemTime::now()).await;
                revalidated("not_modified");
                Fetched::NotModified
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                let until = Instant::now() + source.not_found_ttl;
                self.not_found.insert(key.clone(), until).await;
                if !class.changing {
                    self.mark_missing(source, path).await;
                }
                // A changing file gone upstream stays in the store (deleting it from the
                // bucket would need s3:DeleteObject on the daemon's own prefix), but it is
                // never served fresh again: past metadata_max_age every read asks the upstream
                // first, and this 404 is remembered.
                revalidated("gone");
                Fetched::NotFound
            }
            StatusCode::OK => {
                let fetched = self
                    .keep(source, key, (path, class), response, early_checksum)
                    .await;
                if matches!(fetched, Fetched::Stored) {
                    revalidated("changed");
                } else {
                    revalidated("failed");
                }
                fetched
            }
            status => {
                revalidated("failed");
                Fetched::Failed(format!("the upstream answered {status}"))
            }
        }
    }

    /// Leaves the marker [`Inner::shared_missing`] reads: an empty entry, fetched now.
    async fn mark_missing(&self, source: &Source, path: &str) {
        let Some(marker) = missing_marker(source, path) else {
            return;
        };
        let options = PutOptions {
            attrs: ObjectAttrs {
                user: vec![(META_FETCHED.to_string(), now_ms().to_string())],
                ..ObjectAttrs::default()
            },
            ..PutOptions::default()
        };
        let empty: ByteStream = Box::pin(futures_util::stream::empty());
        if let Err(e) = self.store.put(&marker, 0, empty, &options).await {
            tracing::debug!(key = %marker, error = %e, "cannot share a 404");
        }
    }

    /// Streams the upstream's 200 into the store, checked against its checksum file.
    /// `checksum` is the file's expected digest when it was asked for with the file.
    async fn keep(
        self: &Arc<Self>,
        source: &Arc<Source>,
        key: &Key,
        (path, class): (&str, PathClass),
        response: Response<hyper::body::Incoming>,
        checksum: Option<Result<Option<Expected>, String>>,
    ) -> Fetched {
        let declared = crate::fronts::reply::content_length(response.headers());
        if let Some(len) = declared.filter(|&len| len > self.max_file_size) {
            return Fetched::Refused(
                "refused",
                format!(
                    "{len} bytes is above maven.max_file_size ({} bytes)",
                    self.max_file_size
                ),
            );
        }
        let all = source.kind.checksums();
        let checksum = match (class.verified, checksum) {
            (false, _) => Ok(None),
            // The first kind was asked for with the file; the others only now that the file
            // is there (a probe for a file that does not exist costs one round trip).
            (true, Some(Ok(None))) => self.expected_checksum(source, path, &all[1..]).await,
            (true, Some(early)) => early,
            (true, None) => self.expected_checksum(source, path, &all).await,
        };
        let expected = match checksum {
            Ok(expected) => expected,
            Err(reason) => return Fetched::Failed(reason),
        };
        let attrs = attrs_of(&response);
        let body = self.counted(source, response);
        let (body, outcome) = match expected.clone() {
            Some(expected) => {
                let (body, outcome) = verify::verified(body, expected);
                (body, Some(outcome))
            }
            None => (body, None),
        };
        let len = declared.map_or(BodyLen::AtMost(self.max_file_size), BodyLen::Exact);
        let options = PutOptions {
            attrs,
            ..PutOptions::default()
        };
        match self.store.put(key, len, body, &options).await {
            Ok(_) => Fetched::Stored,
            Err(e) if outcome.as_ref().is_some_and(|o| o.mismatched()) => {
                self.metrics
                    .deps
                    .checksum_failures
                    .with_label_values(&[&source.label])
                    .inc();
                tracing::error!(key = %key, error = %e, "dependency does not match its upstream checksum; not cached, answered 502");
                Fetched::Refused("checksum_mismatch", e.to_string())
            }
            Err(e @ StoreError::TooLarge { .. }) => Fetched::Refused("refused", e.to_string()),
            Err(
                e @ (StoreError::BodyAborted(_)
                | StoreError::LengthMismatch { .. }
                | StoreError::PreconditionFailed
                | StoreError::NotFound),
            ) => Fetched::Failed(format!("upstream body: {e}")),
            // The cache's own failures: the file is good, the node cannot keep it.
            Err(
                e @ (StoreError::Full { .. }
                | StoreError::Io(_)
                | StoreError::Remote(_)
                | StoreError::Unavailable
                | StoreError::QueueFull),
            ) => Fetched::NotKept(expected, e.to_string()),
        }
    }

    /// The digest the upstream publishes for `path`, from its checksum file of the first of
    /// `algorithms` it has (the file itself cached):
    /// `None` when it publishes none. An upstream that fails while asked is an error: a file
    /// that should be checked is not kept unchecked because of a timeout.
    async fn expected_checksum(
        self: &Arc<Self>,
        source: &Arc<Source>,
        path: &str,
        algorithms: &[Algorithm],
    ) -> Result<Option<Expected>, String> {
        for &algorithm in algorithms {
            let sum_path = format!("{path}{}", algorithm.suffix());
            let Ok(sum_key) =
                Key::object(Namespace::deps(), &format!("{}/{sum_path}", source.label))
            else {
                continue;
            };
            if self.remembered_missing(&sum_key).await {
                continue;
            }
            let mut text = self.read_small(&sum_key).await;
            if text.is_none() {
                let class = source.kind.classify(&sum_path);
                match self
                    .flight(source, &sum_key, (&sum_path, class), None)
                    .await
                {
                    Fetched::Stored | Fetched::NotModified => {
                        text = self.read_small(&sum_key).await
                    }
                    Fetched::NotFound | Fetched::Refused(..) => continue,
                    // The node cannot keep even the checksum file (disk full): read it from
                    // the upstream for this once, so the file can still be checked.
                    Fetched::NotKept(..) => text = self.fetch_small(source, &sum_path).await?,
                    Fetched::Failed(reason) => return Err(format!("{sum_path}: {reason}")),
                }
            }
            match text.as_deref().and_then(|t| Expected::parse(algorithm, t)) {
                Some(expected) => return Ok(Some(expected)),
                None => {
                    tracing::warn!(path = %sum_path, repository = %source.label, "checksum file is not a digest; ignored");
                }
            }
        }
        Ok(None)
    }

    /// A small file straight from the upstream, not kept: `None` when it is not there or is
    /// larger than a checksum file can be.
    async fn fetch_small(&self, source: &Source, path: &str) -> Result<Option<Vec<u8>>, String> {
        let url = upstream::join(&source.base, path).ok_or_else(|| format!("{path:?}: no URL"))?;
        let response = self
            .client
            .get(&url, source.credentials.as_ref(), &Validators::default())
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        if response.status() != StatusCode::OK {
            return Ok(None);
        }
        let mut body = self.counted(source, response);
        let mut text = Vec::new();
        while let Some(chunk) = body.next().await {
            text.extend_from_slice(&chunk.map_err(|e| format!("{path}: {e}"))?);
            if text.len() > MAX_CHECKSUM_FILE {
                return Ok(None);
            }
        }
        Ok(Some(text))
    }

    /// A small cached file's bytes (a checksum file): `None` if absent or too large.
    async fn read_small(&self, key: &Key) -> Option<Vec<u8>> {
        let object = self.cached(key).await?;
        if object.meta.len > MAX_CHECKSUM_FILE as u64 {
            return None;
        }
        let text = crate::store::body::read_exact(object.body, object.meta.len).await;
        text.ok().map(|text| text.to_vec())
    }

    /// The upstream's body, counted as it arrives, failing when the upstream stalls.
    fn counted(&self, source: &Source, response: Response<hyper::body::Incoming>) -> ByteStream {
        let counter = self
            .metrics
            .deps
            .upstream_bytes
            .with_label_values(&[&source.label]);
        let body = body_stream(response.into_body(), self.client.response_timeout());
        Box::pin(body.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counter.inc_by(chunk.len() as u64);
            }
        }))
    }

    /// Serves what a flight just put in the store.
    async fn serve_fetched(
        &self,
        source: &Source,
        key: &Key,
        head: bool,
    ) -> Response<ResponseBody> {
        match self.cached(key).await {
            Some(object) => self.answer(source, object, "fetched", true, head),
            // Evicted or replaced between the flight and now: rare; the client retries.
            None => self.refused(
                source,
                "upstream_error",
                "fetched, then gone from the cache",
            ),
        }
    }

    /// A file the node cannot keep, straight from the upstream (still checked: a mismatch cuts
    /// the body short, so the client never has it whole).
    async fn pass_through(
        &self,
        source: &Source,
        path: &str,
        expected: Option<Expected>,
        head: bool,
    ) -> Response<ResponseBody> {
        let Some(url) = upstream::join(&source.base, path) else {
            return self.refused(source, "upstream_error", "no URL");
        };
        let response = match self
            .client
            .get(&url, source.credentials.as_ref(), &Validators::default())
            .await
        {
            Ok(response) if response.status() == StatusCode::OK => response,
            Ok(response) => {
                let reason = format!("the upstream answered {}", response.status());
                return self.refused(source, "upstream_error", &reason);
            }
            Err(e) => return self.refused(source, "upstream_error", &e.to_string()),
        };
        let len = crate::fronts::reply::content_length(response.headers());
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = self.counted(source, response);
        let body = match expected {
            Some(expected) => verify::verified(body, expected).0,
            None => body,
        };
        self.count(source, "passed_through");
        let mut answer = respond(
            StatusCode::OK,
            "passed_through",
            if head {
                body::empty()
            } else {
                body::stream(body)
            },
        );
        if let Some(len) = len {
            set_length(answer.headers_mut(), len);
            if !head {
                self.served(source, "upstream", len);
            }
        }
        if let Some(content_type) = content_type {
            answer
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        answer
    }

    /// A 200 with a cached file.
    fn answer(
        &self,
        source: &Source,
        object: Object,
        result: &'static str,
        from_upstream: bool,
        head: bool,
    ) -> Response<ResponseBody> {
        let Object { meta, body, tier } = object;
        self.count(source, result);
        if !from_upstream {
            self.metrics
                .deps
                .hits
                .with_label_values(&[&source.label, tier.as_str()])
                .inc();
        }
        if !head {
            let from = if from_upstream {
                "upstream"
            } else {
                tier.as_str()
            };
            self.served(source, from, meta.len);
        }
        let body = if head {
            body::empty()
        } else {
            body::stream(body)
        };
        let mut response = respond(StatusCode::OK, result, body);
        set_length(response.headers_mut(), meta.len);
        let content_type = meta
            .attrs
            .content_type
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        if let Some(value) =
            user_meta(&meta.attrs, META_LAST_MODIFIED).and_then(|v| HeaderValue::from_str(v).ok())
        {
            response.headers_mut().insert(header::LAST_MODIFIED, value);
        }
        with_tier(response, tier)
    }

    fn not_found(&self, source: &Source, result: &'static str) -> Response<ResponseBody> {
        self.count(source, result);
        respond(StatusCode::NOT_FOUND, result, body::empty())
    }

    /// A 502: the upstream failed, or its file is not one to serve.
    fn refused(
        &self,
        source: &Source,
        result: &'static str,
        reason: &str,
    ) -> Response<ResponseBody> {
        self.count(source, result);
        respond(
            StatusCode::BAD_GATEWAY,
            result,
            body::full(Bytes::from(format!("{}: {reason}\n", source.label))),
        )
    }

    fn count(&self, source: &Source, result: &str) {
        self.metrics
            .deps
            .requests
            .with_label_values(&[&source.label, result])
            .inc();
    }

    fn served(&self, source: &Source, from: &str, bytes: u64) {
        self.metrics
            .deps
            .served_bytes
            .with_label_values(&[&source.label, from])
            .inc_by(bytes);
    }
}

/// What the cached copy tells the upstream in a conditional GET.
fn validators_of(meta: &ObjectMeta) -> Validators {
    Validators {
        etag: user_meta(&meta.attrs, META_ETAG).map(str::to_string),
        last_modified: user_meta(&meta.attrs, META_LAST_MODIFIED).map(str::to_string),
    }
}

/// The attributes a fetched file is kept with: its type, when it was fetched, and the
/// upstream's validators (user metadata is sorted by name).
fn attrs_of(response: &Response<hyper::body::Incoming>) -> ObjectAttrs {
    let header = |name: header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut user = vec![(META_FETCHED.to_string(), now_ms().to_string())];
    if let Some(etag) = header(header::ETAG) {
        user.push((META_ETAG.to_string(), etag));
    }
    if let Some(modified) = header(header::LAST_MODIFIED) {
        user.push((META_LAST_MODIFIED.to_string(), modified));
    }
    user.sort();
    ObjectAttrs {
        content_type: header(header::CONTENT_TYPE),
        user,
        ..ObjectAttrs::default()
    }
}

/// The key of the marker that says `path` was missing upstream: beside the files, under
/// `missing/`, which no file's key starts with (theirs start with `maven/` or `downloads/`).
fn missing_marker(source: &Source, path: &str) -> Option<Key> {
    Key::object(
        Namespace::deps(),
        &format!("missing/{}/{path}", source.label),
    )
    .ok()
}

/// When a cached file (or marker) was fetched from its upstream; for one without the record,
/// when it was written.
fn fetched_at(meta: &ObjectMeta) -> SystemTime {
    user_meta(&meta.attrs, META_FETCHED)
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
        .unwrap_or(meta.modified)
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

fn user_meta<'a>(attrs: &'a ObjectAttrs, name: &str) -> Option<&'a str> {
    attrs
        .user
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
