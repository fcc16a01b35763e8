//! The admin front: `/metrics`, `/healthz`, `/readyz` and a plain-text status page.
//!
//! Liveness (`/healthz`) only says the process serves HTTP: a slow disk or S3 outage must not
//! get the pod restarted. Readiness (`/readyz`) says whether this node's cache can take writes.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;

use crate::metrics::Metrics;
use crate::server::access::Outcome;
use crate::server::body::{self, ResponseBody};
use crate::server::Front;
use crate::store::disk::DiskTier;
use crate::store::memory::MemoryTier;

pub struct AdminFront {
    metrics: Arc<Metrics>,
    memory: MemoryTier,
    disk: DiskTier,
}

impl AdminFront {
    pub fn new(metrics: Arc<Metrics>, memory: MemoryTier, disk: DiskTier) -> Self {
        AdminFront {
            metrics,
            memory,
            disk,
        }
    }

    async fn observe(&self) {
        self.memory.sync().await;
        self.metrics
            .observe_tiers(self.memory.usage(), self.disk.usage());
    }

    /// Whether the disk tier can take a write: create, write, fsync and remove a probe file.
    async fn disk_writable(&self) -> Result<(), String> {
        let probe = self.disk.settings().dir.join("tmp").join(".ready-probe");
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(b"ok")?;
            f.sync_all()?;
            std::fs::remove_file(&probe)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("disk not writable: {e}"))
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
        )
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
                Ok(()) => (StatusCode::OK, "text/plain", "ready\n".to_string()),
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
