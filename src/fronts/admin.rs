//! The admin front: `/metrics`, `/healthz`, `/readyz` and a plain-text status page.
//!
//! Liveness (`/healthz`) only says the process serves HTTP: a slow disk or S3 outage must not
//! get the pod restarted. Readiness (`/readyz`) says whether this node's cache can take writes:
//! it fails only when the disk tier is not writable. An S3 outage does not make the node unready,
//! because the node still serves its local hits and queues its writes, and taking every node out
//! of the Service during an S3 outage would turn a partial outage into a complete one; `/readyz`
//! reports the S3 state in its body (and `build_cache_proxy_s3_up` in the metrics) instead.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use crate::metrics::Metrics;
use crate::node_local::NodeLocalState;
use crate::server::access::Outcome;
use crate::server::body::{self, ResponseBody};
use crate::server::Front;
use crate::store::disk::DiskTier;
use crate::store::memory::MemoryTier;
use crate::store::s3::S3Tier;
use crate::store::write_back::WriteBack;

pub struct AdminFront {
    metrics: Arc<Metrics>,
    memory: MemoryTier,
    disk: DiskTier,
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
    pub fn new(metrics: Arc<Metrics>, memory: MemoryTier, disk: DiskTier) -> Self {
        AdminFront {
            metrics,
            memory,
            disk,
            remote: None,
            node_local: None,
            ready_check: tokio::sync::Mutex::new(None),
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

    async fn status_page(&self) -> String {
        self.observe().await;
        let (mem_bytes, mem_entries) = self.memory.usage();
        let disk = self.disk.usage();
        let settings = self.disk.settings();
        format!(
            "build-cache-proxy {}\n\nmemory: {} entries, {} bytes\ndisk:   {} entries, {} of {} bytes in {}\n        {} evictions, {} bytes pinned until uploaded\n",
            env!("CARGO_PKG_VERSION"),
            mem_entries,
            mem_bytes,
            disk.entries,
            disk.bytes,
            settings.max_size,
            settings.dir.display(),
            disk.evictions,
            disk.pinned_bytes,
        ) + &self.node_local_line()
            + &self.remote_line()
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
            "/" => (StatusCode::OK, "text/plain", self.status_page().await),
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
