//! The admin front: `/metrics`, `/healthz`, `/readyz`, and the status page at `/` (HTML,
//! [`page`]) with its JSON twin `/status.json`, both from one gathered [`status::Status`].
//!
//! Liveness (`/healthz`) only says the process serves HTTP: a slow disk or S3 outage must not
//! get the pod restarted. Readiness (`/readyz`) says whether this node's cache can take writes:
//! it fails only when the disk tier is not writable. An S3 outage does not make the node unready,
//! because the node still serves its local hits and queues its writes, and taking every node out
//! of the Service during an S3 outage would turn a partial outage into a complete one; `/readyz`
//! reports the S3 state in its body (and `build_cache_proxy_s3_up` in the metrics) instead.

pub mod history;
pub mod page;
pub mod status;

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use crate::gradle_meta::tally::GradleTally;
use crate::logging::recent::RECENT;
use crate::metrics::Metrics;
use crate::node_local::NodeLocalState;
use crate::server::access::Outcome;
use crate::server::body::{self, ResponseBody};
use crate::server::Front;
use crate::store::disk::DiskTier;
use crate::store::memory::MemoryTier;
use crate::store::s3::S3Tier;
use crate::store::write_back::WriteBack;
use history::{unix_now, Counters, History, Sample};

pub struct AdminFront {
    metrics: Arc<Metrics>,
    memory: MemoryTier,
    /// `memory.max_size`, shown against the memory tier's use.
    memory_max: u64,
    disk: DiskTier,
    tally: Arc<GradleTally>,
    history: Arc<History>,
    started_at: u64,
    remote: Option<RemoteStatus>,
    /// The node-local address, with `[node_local]`: `/readyz` fails while it is not set up.
    node_local: Option<NodeLocalState>,
    /// The last disk check: when it started, and what it found.
    ready_check: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

/// What the admin front reports about the S3 tier.
pub struct RemoteStatus {
    pub s3: S3Tier,
    /// The write-back queue, when writes go back (not through).
    pub queue: Option<WriteBack>,
}

impl RemoteStatus {
    fn describe(&self) -> String {
        let state = if self.s3.breaker().is_up() {
            "up"
        } else {
            "down (circuit breaker open: misses skip S3, writes queue)"
        };
        let queued = self.queue.as_ref().map_or(String::new(), |q| {
            format!(", {} entries queued for upload", q.len())
        });
        format!("s3: {state}, bucket {}{queued}\n", self.s3.bucket())
    }
}

impl AdminFront {
    /// The front, and the history of per-minute samples that [`AdminFront::sample`] fills.
    pub fn new(
        metrics: Arc<Metrics>,
        memory: (MemoryTier, u64),
        disk: DiskTier,
        tally: Arc<GradleTally>,
    ) -> Self {
        let front = AdminFront {
            metrics,
            memory: memory.0,
            memory_max: memory.1,
            disk,
            tally,
            history: Arc::new(History::default()),
            started_at: unix_now(),
            remote: None,
            node_local: None,
            ready_check: tokio::sync::Mutex::new(None),
        };
        // The first sample starts the window, so the page has a "last hour" from the start.
        front.history.record(front.now());
        front
    }

    /// The counters now.
    fn now(&self) -> Sample {
        Sample {
            at: unix_now(),
            counters: Counters::read(&self.metrics, &self.tally),
        }
    }

    /// Takes a sample every [`history::INTERVAL`] until `stop` says so.
    pub async fn sample(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(history::INTERVAL);
        tick.tick().await; // the first tick is immediate; `new` took that sample
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.observe().await;
                    self.history.record(self.now());
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// Reports the S3 tier on `/readyz`, the status page and in the queue-age metric.
    pub fn with_remote(mut self, remote: RemoteStatus) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Reports the node-local address on the status page and `/readyz`.
    pub fn with_node_local(mut self, state: NodeLocalState) -> Self {
        self.node_local = Some(state);
        self
    }

    fn node_local_line(&self) -> String {
        self.node_local
            .as_ref()
            .map_or(String::new(), NodeLocalState::describe)
    }

    fn remote_line(&self) -> String {
        self.remote
            .as_ref()
            .map_or(String::new(), RemoteStatus::describe)
    }

    async fn observe(&self) {
        self.memory.sync().await;
        self.metrics
            .observe_tiers(self.memory.usage(), self.disk.usage());
        if let Some(queue) = self.remote.as_ref().and_then(|r| r.queue.as_ref()) {
            queue.observe();
        }
    }

    /// Whether the disk tier can take a write: create, write, fsync and remove a probe file.
    /// Probes that arrive while a check runs share its result, so a burst of probes costs one
    /// check and can't trip over its own files.
    async fn disk_writable(&self) -> Result<(), String> {
        let arrived = std::time::Instant::now();
        let mut last = self.ready_check.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if *at >= arrived {
                return result.clone(); // a check that started after we arrived
            }
        }
        let started = std::time::Instant::now();
        let result = self
            .disk
            .probe_writable()
            .await
            .map_err(|e| format!("disk not writable: {e}"));
        *last = Some((started, result.clone()));
        result
    }

    /// Everything the status page shows, as of now.
    async fn status(&self) -> status::Status {
        self.observe().await;
        let (mem_bytes, mem_entries) = self.memory.usage();
        let disk = self.disk.usage();
        let m = &self.metrics;
        let gauge = |g: &prometheus::IntGauge| g.get().max(0) as u64;
        status::gather(status::Inputs {
            started_at: self.started_at,
            window: self.history.with(self.now()),
            tally: self.tally.snapshot(),
            memory: status::Usage {
                bytes: mem_bytes,
                entries: mem_entries,
                max_bytes: self.memory_max,
            },
            disk: status::DiskStatus {
                usage: status::Usage {
                    bytes: disk.bytes,
                    entries: disk.entries,
                    max_bytes: self.disk.settings().max_size,
                },
                pinned_bytes: disk.pinned_bytes,
                evictions: disk.evictions,
            },
            write_back: self
                .remote
                .as_ref()
                .and_then(|r| r.queue.as_ref())
                .map(|_| {
                    (
                        gauge(&m.upload_queue_entries),
                        gauge(&m.upload_queue_bytes),
                        gauge(&m.upload_queue_oldest_seconds),
                    )
                }),
            s3: self
                .remote
                .as_ref()
                .map(|r| (r.s3.bucket().to_string(), r.s3.breaker().is_up())),
            node_local: self.node_local.as_ref().map(NodeLocalState::describe),
            dependencies: m.deps.served_by_repository(),
            recent_errors: RECENT.newest_first(),
        })
    }
}

impl Front for AdminFront {
    fn name(&self) -> &'static str {
        "admin"
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let (status, content_type, text) = match req.uri().path() {
            "/metrics" => {
                self.observe().await;
                (
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            "/readyz" => match self.disk_writable().await {
                // Build pods reach S3 through the address: without it the node serves nothing.
                Ok(()) if self.node_local.as_ref().is_some_and(|n| !n.is_ready()) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    self.node_local_line(),
                ),
                Ok(()) => (
                    StatusCode::OK,
                    "text/plain",
                    format!("ready\n{}{}", self.node_local_line(), self.remote_line()),
                ),
                Err(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("{why}\n"),
                ),
            },
            "/" => (
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::render(&self.status().await),
            ),
            "/status.json" => (
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&self.status().await).expect("the status serializes"),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_string(),
            ),
        };
        let mut response = Response::new(body::full(text));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
            .extensions_mut()
            .insert(Outcome::new(if status.is_success() {
                "ok"
            } else {
                "error"
            }));
        response
    }
}
