//! The Gradle HTTP build cache front: `GET`/`HEAD`/`PUT /cache/{key}`.
//!
//! Gradle disables its remote cache for the whole build on any non-2xx answer (PROTOCOLS.md), so
//! this front answers non-2xx only where the user must act: bad credentials (401), a read-only
//! user writing (403), and `oversize = "reject"` (413). A store failure on read is a miss (404):
//! the store reports S3 failing as an error, and this front is where that becomes a miss, so
//! that local hits and builds go on while S3 is down. A store failure on write is an
//! accepted-and-dropped write (2xx, counted), because a missing cache entry costs one task's
//! rebuild while a disabled cache costs the whole build's.
//!
//! Each PUT's `METADATA` (the task's type, path and execution time) is read from the first
//! chunks of its body before they go on to the store, and kept as the entry's object metadata;
//! each hit then adds its entry's execution time to the build time saved
//! ([`crate::gradle_meta`]). An entry whose task cannot be read is stored all the same.

use std::sync::Arc;

use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use super::auth::{BasicAuth, Identity};
use super::reply::{
    content_length, in_namespace, method_not_allowed, respond, set_length, with_tier, BodyAnswers,
};
use crate::config::{Access, GradleConfig, Oversize};
use crate::deps::{self, Deps};
use crate::gradle_meta::tally::GradleTally;
use crate::gradle_meta::{MetadataReader, Reading, TaskFacts};
use crate::metrics::Metrics;
use crate::server::body::{self, ResponseBody};
use crate::server::{ConnInfo, Front, UploadLimits};
use crate::store::{ByteStream, Key, ObjectAttrs, PutOptions, Store, StoreError};

const CACHE_PREFIX: &str = "/cache/";
const ARTIFACT_TYPE: &str = "application/vnd.gradle.build-cache-artifact.v1";
const DROPPED_HEADER: &str = "x-build-cache-proxy-dropped";

pub struct GradleFront<S> {
    store: Arc<S>,
    auth: BasicAuth,
    max_entry_size: u64,
    oversize: Oversize,
    uploads: UploadLimits,
    answers: BodyAnswers,
    metrics: Arc<Metrics>,
    tally: Arc<GradleTally>,
    /// The dependency proxy, on the same listener under `/maven/` and `/downloads/`.
    deps: Option<Arc<Deps<S>>>,
}

impl<S: Store> GradleFront<S> {
    pub fn new(
        store: Arc<S>,
        config: &GradleConfig,
        uploads: UploadLimits,
        metrics: Arc<Metrics>,
        tally: Arc<GradleTally>,
    ) -> Self {
        GradleFront {
            store,
            auth: BasicAuth::new(&config.users, config.anonymous),
            max_entry_size: config.max_entry_size.as_u64(),
            oversize: config.oversize,
            answers: BodyAnswers {
                front: "gradle",
                limits: uploads.body,
                metrics: metrics.clone(),
                too_slow: || {
                    respond(
                        StatusCode::REQUEST_TIMEOUT,
                        "too_slow",
                        body::full("request body too slow\n"),
                    )
                },
            },
            uploads,
            metrics,
            tally,
            deps: None,
        }
    }

    /// Serves the dependency proxy beside the build cache.
    pub fn with_deps(mut self, deps: Option<Deps<S>>) -> Self {
        self.deps = deps.map(Arc::new);
        self
    }

    /// A request for the dependency proxy: any user who may read the cache may read
    /// dependencies through it.
    async fn dependency(&self, deps: &Deps<S>, req: Request<Incoming>) -> Response<ResponseBody> {
        let response = match self.auth.identify(req.headers()) {
            Identity::Known(access) if access >= Access::Read => deps.handle(&req).await,
            Identity::Known(_) => unauthorized("credentials_required"),
            Identity::Invalid => unauthorized("unauthorized"),
        };
        self.answers.refuse(req, response).await
    }

    /// Route, method, credentials and key: everything decided from the request head.
    /// A refusal is boxed: a response is large next to a key.
    fn admit(&self, req: &Request<Incoming>) -> Result<Key, Box<Response<ResponseBody>>> {
        let Some(raw_key) = req.uri().path().strip_prefix(CACHE_PREFIX) else {
            return Err(Box::new(respond(
                StatusCode::NOT_FOUND,
                "no_route",
                body::full("the Gradle build cache is served under /cache/\n"),
            )));
        };
        let needed = match *req.method() {
            Method::GET | Method::HEAD => Access::Read,
            Method::PUT => Access::Readwrite,
            _ => return Err(Box::new(method_not_allowed("GET, HEAD, PUT"))),
        };
        match self.auth.identify(req.headers()) {
            Identity::Invalid => {
                self.metrics
                    .auth_failures
                    .with_label_values(&["gradle", "bad_credentials"])
                    .inc();
                return Err(Box::new(unauthorized("unauthorized")));
            }
            Identity::Known(access) if access < needed => {
                let anonymous = req.headers().get(header::AUTHORIZATION).is_none();
                self.metrics
                    .auth_failures
                    .with_label_values(&["gradle", "access_denied"])
                    .inc();
                return Err(Box::new(if anonymous {
                    unauthorized("credentials_required")
                } else {
                    respond(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        body::full("this user may not write to the cache\n"),
                    )
                }));
            }
            Identity::Known(_) => {}
        }
        Key::gradle(raw_key).map_err(|e| {
            Box::new(respond(
                StatusCode::BAD_REQUEST,
                "bad_key",
                body::full(format!("invalid cache key: {e}\n")),
            ))
        })
    }

    async fn get(&self, key: &Key, head_only: bool) -> Response<ResponseBody> {
        if head_only {
            return match self.store.head(key).await {
                Ok(Some(meta)) => {
                    let mut response = respond(StatusCode::OK, "hit", body::empty());
                    set_length(response.headers_mut(), meta.len);
                    response
                }
                Ok(None) => respond(StatusCode::NOT_FOUND, "miss", body::empty()),
                Err(e) => self.read_failed(key, e),
            };
        }
        match self.store.get(key).await {
            Ok(Some(object)) => {
                self.tally
                    .hit(TaskFacts::from_metadata(&object.meta.attrs.user).as_ref());
                let mut response = respond(StatusCode::OK, "hit", body::stream(object.body));
                set_length(response.headers_mut(), object.meta.len);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(ARTIFACT_TYPE),
                );
                with_tier(response, object.tier)
            }
            Ok(None) => {
                self.tally.miss(key.name());
                respond(StatusCode::NOT_FOUND, "miss", body::empty())
            }
            Err(e) => {
                self.tally.miss(key.name());
                self.read_failed(key, e)
            }
        }
    }

    /// A read the store could not answer is a miss for Gradle. Logged here, once per request;
    /// except when S3 was skipped: its circuit breaker logged the outage when it opened, and a
    /// line per miss during an outage would bury everything else.
    fn read_failed(&self, key: &Key, error: StoreError) -> Response<ResponseBody> {
        let outcome = match error {
            StoreError::Unavailable => "s3_skipped",
            StoreError::Remote(_) => {
                tracing::warn!(key = %key, %error, "S3 failed on read; answering a miss");
                "s3_error"
            }
            StoreError::LengthMismatch { .. }
            | StoreError::TooLarge { .. }
            | StoreError::PreconditionFailed
            | StoreError::NotFound
            | StoreError::BodyAborted(_)
            | StoreError::Full { .. }
            | StoreError::Io(_)
            | StoreError::QueueFull => {
                tracing::warn!(key = %key, %error, "store failed on read; answering a miss");
                "store_error"
            }
        };
        respond(StatusCode::NOT_FOUND, outcome, body::empty())
    }

    async fn put(&self, key: &Key, req: Request<Incoming>) -> Response<ResponseBody> {
        let Some(len) = content_length(req.headers()) else {
            let refusal = respond(
                StatusCode::LENGTH_REQUIRED,
                "no_length",
                body::full("a PUT needs a Content-Length\n"),
            );
            return self.answers.refuse(req, refusal).await;
        };
        if len > self.max_entry_size {
            return self.oversize(req, len).await;
        }
        // A slot among the uploads in progress, in all and from this client, and room for its
        // declared bytes among this client's.
        let peer = req.extensions().get::<ConnInfo>().map(|c| c.peer.ip());
        let admitted = match peer.map(|ip| self.uploads.admit(ip, len)) {
            Some(Err(reason)) => {
                self.metrics
                    .dropped_puts
                    .with_label_values(&["gradle", reason])
                    .inc();
                let response = dropped(respond(StatusCode::OK, "dropped", body::empty()), reason);
                return self.answers.refuse(req, response).await;
            }
            Some(Ok(permits)) => Some(permits),
            None => None,
        };
        let (stream, upload) = body::upload(req.into_body(), self.uploads.body);
        let (reading, stream) = read_head(stream).await;
        let options = match &reading {
            Reading::Known(facts) => PutOptions {
                attrs: ObjectAttrs {
                    user: facts.to_metadata(),
                    ..ObjectAttrs::default()
                },
                ..PutOptions::default()
            },
            _ => PutOptions::default(),
        };
        let stored = self.store.put(key, len, stream, &options).await;
        self.tally.put(key.name(), &reading, stored.is_ok());
        // Whatever the store did, the client's body is read to its end before the answer.
        let got = upload.finish().await;
        drop(admitted);
        let response = match stored {
            Ok(_) => respond(StatusCode::OK, "stored", body::empty()),
            // None of these comes of a Gradle PUT (its length is declared and checked above,
            // and it has no conditions); listed so that the match stays exhaustive.
            Err(StoreError::TooLarge { .. }) => {
                respond(StatusCode::PAYLOAD_TOO_LARGE, "oversize", body::empty())
            }
            Err(StoreError::PreconditionFailed | StoreError::NotFound) => respond(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                body::empty(),
            ),
            Err(StoreError::LengthMismatch { .. }) => respond(
                StatusCode::BAD_REQUEST,
                "short_body",
                body::full("body length differs from Content-Length\n"),
            ),
            Err(StoreError::BodyAborted(e)) => {
                tracing::info!(key = %key, error = %e, "upload aborted by the client; nothing stored");
                respond(StatusCode::BAD_REQUEST, "aborted", body::empty())
            }
            // Every other failure is the cache's, not the client's: listed one by one so that a
            // new kind of failure has to be decided here.
            Err(
                e @ (StoreError::Full { .. }
                | StoreError::Io(_)
                | StoreError::Remote(_)
                | StoreError::Unavailable
                | StoreError::QueueFull),
            ) => {
                tracing::warn!(key = %key, error = %e, "store failed on write; answering 2xx without storing");
                self.metrics
                    .dropped_puts
                    .with_label_values(&["gradle", "store_error"])
                    .inc();
                dropped(
                    respond(StatusCode::OK, "dropped", body::empty()),
                    "store-error",
                )
            }
        };
        self.answers.answer_received(response, got)
    }

    async fn oversize(&self, req: Request<Incoming>, len: u64) -> Response<ResponseBody> {
        let response = match self.oversize {
            Oversize::Reject => respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                "oversize",
                body::full(format!(
                    "entry of {len} bytes exceeds gradle.max_entry_size of {} bytes\n",
                    self.max_entry_size
                )),
            ),
            Oversize::Drop => {
                self.metrics
                    .dropped_puts
                    .with_label_values(&["gradle", "oversize"])
                    .inc();
                dropped(
                    respond(StatusCode::OK, "dropped", body::empty()),
                    "oversize",
                )
            }
        };
        self.answers.refuse(req, response).await
    }
}

impl<S: Store> Front for GradleFront<S> {
    fn name(&self) -> &'static str {
        "gradle"
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        if let Some(deps) = self
            .deps
            .as_ref()
            .filter(|_| deps::routes(req.uri().path()))
        {
            // Boxed: the dependency proxy's future (an upstream fetch's) is not a hit's.
            return Box::pin(self.dependency(deps, req)).await;
        }
        let key = match self.admit(&req) {
            Ok(key) => key,
            Err(refusal) => return self.answers.refuse(req, *refusal).await,
        };
        let mut response = match *req.method() {
            // Boxed: the write path's future (the store's, S3's) is far larger than a read's,
            // and this one's size is what every request moves into place.
            Method::PUT => Box::pin(self.put(&key, req)).await,
            Method::HEAD => self.get(&key, true).await,
            _ => self.get(&key, false).await,
        };
        in_namespace(&mut response, key.namespace().as_str());
        response
    }
}

/// Reads the entry's `METADATA` from the first chunks of `body`, as few as it takes (bounded
/// by [`MetadataReader`]), and gives back the body whole: the chunks read, then the rest. The
/// chunks are held, not copied, and an error or the end of the body passes on to the store as
/// it came.
async fn read_head(body: ByteStream) -> (Reading, ByteStream) {
    let mut body = body.fuse();
    let mut reader = MetadataReader::new();
    let mut head = Vec::new();
    while !reader.is_done() {
        match body.next().await {
            Some(Ok(chunk)) => {
                reader.feed(&chunk);
                head.push(Ok(chunk));
            }
            Some(Err(e)) => {
                head.push(Err(e));
                break;
            }
            None => break,
        }
    }
    let whole = futures_util::stream::iter(head).chain(body);
    (reader.finish(), Box::pin(whole))
}

fn unauthorized(outcome: &'static str) -> Response<ResponseBody> {
    let mut response = respond(
        StatusCode::UNAUTHORIZED,
        outcome,
        body::full("bad or missing credentials\n"),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"build-cache-proxy\""),
    );
    response
}

fn dropped(mut response: Response<ResponseBody>, reason: &'static str) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(DROPPED_HEADER, HeaderValue::from_static(reason));
    response
}
