//! Every Prometheus metric the daemon exports, defined in one place.
//!
//! Names carry the `build_cache_proxy_` prefix and base units; labels are low-cardinality
//! (`front`, `listener`, `method`, `status`, `tier`, `result`, `op`), never a key. Label sets that are known
//! up front are created at start so dashboards see zeros instead of gaps.

pub mod deps;
mod per_request;

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::TLS_LISTENER_NAMES;
use crate::store::disk::DiskUsage;
use crate::store::Tier;

const PREFIX: &str = "build_cache_proxy";
/// The `front` label values of [`Metrics::reads`]: the S3 listener's forward mode apart.
pub const READ_FRONTS: [&str; 3] = ["gradle", "s3", "forward"];

pub struct Metrics {
    registry: Registry,
    /// The series of [`Self::record_request`] and [`Self::record_read`], resolved once.
    per_request: per_request::PerRequest,
    pub requests: IntCounterVec,
    pub operations: IntCounterVec,
    pub request_duration: HistogramVec,
    pub bytes_received: IntCounterVec,
    pub bytes_sent: IntCounterVec,
    pub lookups: IntCounterVec,
    pub dropped_puts: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub memory_bytes: IntGauge,
    pub memory_entries: IntGauge,
    pub disk_bytes: IntGauge,
    pub disk_entries: IntGauge,
    pub disk_max_bytes: IntGauge,
    /// 1 while the node-local address is set up and `listen.s3` bound on it, 0 when that
    /// failed; one series (`listen`), only with `[node_local]`.
    pub node_local_address_ready: IntGaugeVec,
    pub disk_pinned_bytes: IntGauge,
    pub disk_evictions: IntCounter,
    evictions_seen: AtomicU64,
    /// Log lines dropped because the log writer's queue was full (see [`crate::logging`]).
    pub log_lines_dropped: IntCounter,
    log_lines_dropped_seen: AtomicU64,
    pub s3_requests: IntCounterVec,
    pub s3_duration: HistogramVec,
    pub s3_bytes_received: IntCounter,
    pub s3_bytes_sent: IntCounter,
    pub s3_up: IntGauge,
    pub single_flight_waiters: IntGauge,
    pub fill_downloads: IntCounter,
    pub revalidations: IntCounterVec,
    pub stream_through: IntCounterVec,
    pub upload_queue_entries: IntGauge,
    pub upload_queue_bytes: IntGauge,
    pub upload_queue_oldest_seconds: IntGauge,
    pub upload_failures: IntCounter,
    pub tls_handshake_failures: IntCounterVec,
    pub tls_certificate_reloads: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub connections: IntGaugeVec,
    pub connections_refused: IntCounterVec,
    pub accept_errors: IntCounterVec,
    pub request_timeouts: IntCounterVec,
    pub uploads_in_progress: IntGauge,
    pub uploads_declared_bytes: IntGauge,
    /// The S3 forward mode: requests sent on to the real S3, and where served bytes came from.
    pub forward_requests: IntCounterVec,
    pub forward_bytes: IntCounterVec,
    /// Reads answered, by front (`gradle`, `s3`, `forward`), result and the tier that served
    /// a hit: the status page's hit ratios, counted where the access log is written.
    pub reads: IntCounterVec,
    /// Body bytes of those reads' hits, by front and tier (local tiers against S3).
    pub served_bytes: IntCounterVec,
    /// Gradle entries by task type (`src/gradle_meta/tally.rs` bounds the label values).
    pub gradle_hits: IntCounterVec,
    pub gradle_misses: IntCounterVec,
    pub gradle_stores: IntCounterVec,
    pub gradle_time_saved: CounterVec,
    pub gradle_unknown_entries: IntCounterVec,
    /// The dependency proxy's series.
    pub deps: deps::DepsMetrics,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let duration_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0,
        ];
        let m = Metrics {
            per_request: per_request::PerRequest::new(),
            requests: IntCounterVec::new(
                opts(
                    "requests_total",
                    "HTTP requests answered, by front, method and status.",
                ),
                &["front", "method", "status"],
            )
            .unwrap(),
            operations: IntCounterVec::new(
                opts(
                    "operations_total",
                    "Requests answered, by front, protocol operation (S3: GetObject, PutObject, ...) and status.",
                ),
                &["front", "operation", "status"],
            )
            .unwrap(),
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "request_duration_seconds",
                    "Time from request to the end of the response body, by front and method.",
                )
                .namespace(PREFIX)
                .buckets(duration_buckets.clone()),
                &["front", "method"],
            )
            .unwrap(),
            bytes_received: IntCounterVec::new(
                opts(
                    "received_bytes_total",
                    "Request body bytes received, by front.",
                ),
                &["front"],
            )
            .unwrap(),
            bytes_sent: IntCounterVec::new(
                opts("sent_bytes_total", "Response body bytes sent, by front."),
                &["front"],
            )
            .unwrap(),
            lookups: IntCounterVec::new(
                opts(
                    "lookups_total",
                    "Cache lookups by tier and result (hit or miss).",
                ),
                &["tier", "result"],
            )
            .unwrap(),
            dropped_puts: IntCounterVec::new(
                opts(
                    "dropped_puts_total",
                    "Writes answered 2xx but not stored, by front and reason.",
                ),
                &["front", "reason"],
            )
            .unwrap(),
            auth_failures: IntCounterVec::new(
                opts(
                    "auth_failures_total",
                    "Requests refused for credentials or access, by front and reason.",
                ),
                &["front", "reason"],
            )
            .unwrap(),
            memory_bytes: IntGauge::with_opts(opts(
                "memory_bytes",
                "Bytes held by the memory tier.",
            ))
            .unwrap(),
            memory_entries: IntGauge::with_opts(opts(
                "memory_entries",
                "Entries held by the memory tier.",
            ))
            .unwrap(),
            disk_bytes: IntGauge::with_opts(opts("disk_bytes", "Bytes held by the disk tier."))
                .unwrap(),
            disk_entries: IntGauge::with_opts(opts(
                "disk_entries",
                "Entries held by the disk tier.",
            ))
            .unwrap(),
            disk_max_bytes: IntGauge::with_opts(opts(
                "disk_max_bytes",
                "Configured bound of the disk tier.",
            ))
            .unwrap(),
            node_local_address_ready: IntGaugeVec::new(
                opts(
                    "node_local_address_ready",
                    "1 when the node-local address is set up and the S3 listener bound on it, 0 when that failed (the pod stays unready).",
                ),
                &["listen"],
            )
            .unwrap(),
            disk_pinned_bytes: IntGauge::with_opts(opts(
                "disk_pinned_bytes",
                "Disk bytes not evictable because S3 does not have them yet.",
            ))
            .unwrap(),
            disk_evictions: IntCounter::with_opts(opts(
                "disk_evictions_total",
                "Entries evicted from the disk tier.",
            ))
            .unwrap(),
            evictions_seen: AtomicU64::new(0),
            log_lines_dropped: IntCounter::with_opts(opts(
                "log_lines_dropped_total",
                "Log lines dropped because the log writer's queue was full (its reader stalled).",
            ))
            .unwrap(),
            log_lines_dropped_seen: AtomicU64::new(0),
            s3_requests: IntCounterVec::new(
                opts(
                    "s3_requests_total",
                    "Requests to the S3 backend, by operation and result.",
                ),
                &["op", "result"],
            )
            .unwrap(),
            s3_duration: HistogramVec::new(
                HistogramOpts::new(
                    "s3_request_duration_seconds",
                    "S3 request latency (to response headers), by operation.",
                )
                .namespace(PREFIX)
                .buckets(duration_buckets),
                &["op"],
            )
            .unwrap(),
            s3_bytes_received: IntCounter::with_opts(opts(
                "s3_received_bytes_total",
                "Body bytes read from S3.",
            ))
            .unwrap(),
            s3_bytes_sent: IntCounter::with_opts(opts(
                "s3_sent_bytes_total",
                "Body bytes uploaded to S3.",
            ))
            .unwrap(),
            s3_up: IntGauge::with_opts(opts(
                "s3_up",
                "1 while the S3 circuit breaker is closed (S3 usable), else 0.",
            ))
            .unwrap(),
            single_flight_waiters: IntGauge::with_opts(opts(
                "single_flight_waiters",
                "Requests currently waiting on another request's S3 read of the same key.",
            ))
            .unwrap(),
            fill_downloads: IntCounter::with_opts(opts(
                "fill_ranged_downloads_total",
                "Ranged GETs a read-through fill started where a reader waited, besides its \
                 first GET from the start (parallel download of one object).",
            ))
            .unwrap(),
            revalidations: IntCounterVec::new(
                opts(
                    "revalidations_total",
                    "Local hits of revalidated namespaces confirmed against S3 before serving, by \
                     result: not_modified (local copy served), changed (the new object served and \
                     refilled), gone (local copy dropped, a miss), error (S3 failed or skipped: \
                     the local copy served unconfirmed).",
                ),
                &["result"],
            )
            .unwrap(),
            stream_through: IntCounterVec::new(
                opts(
                    "stream_through_total",
                    "Reads served straight from S3 without caching, by reason: too_large (above \
                     the namespace's max object size), no_room (the disk tier refused it).",
                ),
                &["reason"],
            )
            .unwrap(),
            upload_queue_entries: IntGauge::with_opts(opts(
                "upload_queue_entries",
                "Entries waiting for write-back to S3.",
            ))
            .unwrap(),
            upload_queue_bytes: IntGauge::with_opts(opts(
                "upload_queue_bytes",
                "Bytes waiting for write-back to S3.",
            ))
            .unwrap(),
            upload_queue_oldest_seconds: IntGauge::with_opts(opts(
                "upload_queue_oldest_age_seconds",
                "Age of the oldest entry waiting for write-back to S3.",
            ))
            .unwrap(),
            upload_failures: IntCounter::with_opts(opts(
                "upload_failures_total",
                "Failed write-back upload attempts.",
            ))
            .unwrap(),
            tls_handshake_failures: IntCounterVec::new(
                opts(
                    "tls_handshake_failures_total",
                    "TLS handshakes that failed or timed out, by listener.",
                ),
                &["listener"],
            )
            .unwrap(),
            tls_certificate_reloads: IntCounterVec::new(
                opts(
                    "tls_certificate_reloads_total",
                    "Changed TLS certificate files loaded (ok) or refused, keeping the old certificate (error).",
                ),
                &["result"],
            )
            .unwrap(),
            build_info: IntGaugeVec::new(
                opts("build_info", "Always 1; the version as a label."),
                &["version"],
            )
            .unwrap(),
            connections: IntGaugeVec::new(
                opts("connections", "Open client connections, by listener."),
                &["listener"],
            )
            .unwrap(),
            connections_refused: IntCounterVec::new(
                opts(
                    "connections_refused_total",
                    "Connections refused, by listener and reason: answered 503 and closed at a \
                     cap (max_connections, max_connections_per_ip), or closed unanswered \
                     (overloaded; source: not from listen.*_allow_from).",
                ),
                &["listener", "reason"],
            )
            .unwrap(),
            accept_errors: IntCounterVec::new(
                opts(
                    "accept_errors_total",
                    "Failed accepts (e.g. out of file descriptors), by listener.",
                ),
                &["listener"],
            )
            .unwrap(),
            request_timeouts: IntCounterVec::new(
                opts(
                    "request_timeouts_total",
                    "Connections cut off for a deadline, by listener and phase \
                     (header, body, send).",
                ),
                &["listener", "phase"],
            )
            .unwrap(),
            uploads_in_progress: IntGauge::with_opts(opts(
                "uploads_in_progress",
                "Request bodies being stored now.",
            ))
            .unwrap(),
            uploads_declared_bytes: IntGauge::with_opts(opts(
                "uploads_declared_bytes",
                "Bytes the uploads in progress declared (Content-Length).",
            ))
            .unwrap(),
            forward_requests: IntCounterVec::new(
                opts(
                    "forward_requests_total",
                    "Requests of the S3 forward mode sent on to the real S3, by operation and S3's status.",
                ),
                &["operation", "status"],
            )
            .unwrap(),
            forward_bytes: IntCounterVec::new(
                opts(
                    "forward_served_bytes_total",
                    "Object bytes the S3 forward mode served, by source: local (S3 answered 304) or s3 (streamed from S3).",
                ),
                &["source"],
            )
            .unwrap(),
            reads: IntCounterVec::new(
                opts(
                    "reads_total",
                    "GETs answered, by front (gradle, s3, forward), result (hit: the object was \
                     served; miss: 404) and the tier that served a hit (memory, disk, s3; none \
                     for a miss).",
                ),
                &["front", "result", "tier"],
            )
            .unwrap(),
            served_bytes: IntCounterVec::new(
                opts(
                    "served_bytes_total",
                    "Body bytes of GET hits, by front and the tier that served them.",
                ),
                &["front", "tier"],
            )
            .unwrap(),
            gradle_hits: IntCounterVec::new(
                opts(
                    "gradle_hits_total",
                    "Gradle cache hits, by the task type of the entry (unknown: no readable \
                     METADATA; other: beyond gradle.task_type_labels).",
                ),
                &["task_type"],
            )
            .unwrap(),
            gradle_misses: IntCounterVec::new(
                opts(
                    "gradle_misses_total",
                    "Gradle cache misses, by the task type the PUT that followed the miss \
                     named (unknown: no such PUT, or no readable METADATA).",
                ),
                &["task_type"],
            )
            .unwrap(),
            gradle_stores: IntCounterVec::new(
                opts(
                    "gradle_stores_total",
                    "Gradle entries stored, by task type.",
                ),
                &["task_type"],
            )
            .unwrap(),
            gradle_time_saved: CounterVec::new(
                opts(
                    "gradle_time_saved_seconds_total",
                    "Build time Gradle hits saved: the execution time each hit's entry \
                     recorded in its METADATA, by task type.",
                ),
                &["task_type"],
            )
            .unwrap(),
            gradle_unknown_entries: IntCounterVec::new(
                opts(
                    "gradle_unknown_entries_total",
                    "Gradle PUTs whose task could not be read, by reason (not_gzip, corrupt, \
                     not_tar, no_metadata, no_task_type, too_large, truncated); they are \
                     stored all the same.",
                ),
                &["reason"],
            )
            .unwrap(),
            deps: deps::DepsMetrics::new(),
            registry,
        };
        m.register_all();
        m.deps.register(&m.registry);
        for front in READ_FRONTS {
            m.reads.with_label_values(&[front, "miss", "none"]);
            for tier in [Tier::Memory, Tier::Disk, Tier::S3] {
                m.reads.with_label_values(&[front, "hit", tier.as_str()]);
                m.served_bytes.with_label_values(&[front, tier.as_str()]);
            }
        }
        for task_type in [
            crate::gradle_meta::tally::UNKNOWN,
            crate::gradle_meta::tally::OTHER,
        ] {
            m.gradle_hits.with_label_values(&[task_type]);
            m.gradle_misses.with_label_values(&[task_type]);
            m.gradle_stores.with_label_values(&[task_type]);
            m.gradle_time_saved.with_label_values(&[task_type]);
        }
        for reason in crate::gradle_meta::tally::UNKNOWN_REASONS {
            m.gradle_unknown_entries
                .with_label_values(&[reason.as_str()]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for tier in [Tier::Memory, Tier::Disk, Tier::S3] {
            for result in ["hit", "miss"] {
                m.lookups.with_label_values(&[tier.as_str(), result]);
            }
        }
        for result in ["not_modified", "changed", "gone", "error"] {
            m.revalidations.with_label_values(&[result]);
        }
        for reason in ["too_large", "no_room"] {
            m.stream_through.with_label_values(&[reason]);
        }
        for front in ["gradle", "s3", "admin"] {
            m.bytes_received.with_label_values(&[front]);
            m.bytes_sent.with_label_values(&[front]);
            m.connections.with_label_values(&[front]);
            m.accept_errors.with_label_values(&[front]);
            for reason in [
                "max_connections",
                "max_connections_per_ip",
                "overloaded",
                "source",
            ] {
                m.connections_refused.with_label_values(&[front, reason]);
            }
            for phase in ["header", "body", "send"] {
                m.request_timeouts.with_label_values(&[front, phase]);
            }
        }
        for listener in TLS_LISTENER_NAMES {
            m.tls_handshake_failures.with_label_values(&[listener]);
        }
        for source in ["local", "s3"] {
            m.forward_bytes.with_label_values(&[source]);
        }
        for result in ["ok", "error"] {
            m.tls_certificate_reloads.with_label_values(&[result]);
        }
        m
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.requests.clone()),
            Box::new(self.operations.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.bytes_received.clone()),
            Box::new(self.bytes_sent.clone()),
            Box::new(self.lookups.clone()),
            Box::new(self.dropped_puts.clone()),
            Box::new(self.auth_failures.clone()),
            Box::new(self.memory_bytes.clone()),
            Box::new(self.memory_entries.clone()),
            Box::new(self.disk_bytes.clone()),
            Box::new(self.disk_entries.clone()),
            Box::new(self.disk_max_bytes.clone()),
            Box::new(self.node_local_address_ready.clone()),
            Box::new(self.disk_pinned_bytes.clone()),
            Box::new(self.disk_evictions.clone()),
            Box::new(self.log_lines_dropped.clone()),
            Box::new(self.s3_requests.clone()),
            Box::new(self.s3_duration.clone()),
            Box::new(self.s3_bytes_received.clone()),
            Box::new(self.s3_bytes_sent.clone()),
            Box::new(self.s3_up.clone()),
            Box::new(self.single_flight_waiters.clone()),
            Box::new(self.fill_downloads.clone()),
            Box::new(self.revalidations.clone()),
            Box::new(self.stream_through.clone()),
            Box::new(self.upload_queue_entries.clone()),
            Box::new(self.upload_queue_bytes.clone()),
            Box::new(self.upload_queue_oldest_seconds.clone()),
            Box::new(self.upload_failures.clone()),
            Box::new(self.tls_handshake_failures.clone()),
            Box::new(self.tls_certificate_reloads.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.connections.clone()),
            Box::new(self.connections_refused.clone()),
            Box::new(self.accept_errors.clone()),
            Box::new(self.request_timeouts.clone()),
            Box::new(self.uploads_in_progress.clone()),
            Box::new(self.uploads_declared_bytes.clone()),
            Box::new(self.forward_requests.clone()),
            Box::new(self.forward_bytes.clone()),
            Box::new(self.reads.clone()),
            Box::new(self.served_bytes.clone()),
            Box::new(self.gradle_hits.clone()),
            Box::new(self.gradle_misses.clone()),
            Box::new(self.gradle_stores.clone()),
            Box::new(self.gradle_time_saved.clone()),
            Box::new(self.gradle_unknown_entries.clone()),
        ];
        for c in collectors {
            self.registry.register(c).expect("metric names are unique");
        }
    }

    pub fn record_lookup(&self, tier: Tier, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.lookups
            .with_label_values(&[tier.as_str(), result])
            .inc();
    }

    /// Counts a GET for the status page's hit ratios: a 2xx is a hit served by `tier` (a
    /// forward-mode GET that S3 answered has no tier: S3 served it), a 404 a miss; anything
    /// else (304, 412, errors) neither.
    pub fn record_read(&self, front: &str, status: u16, tier: Option<Tier>, sent: u64) {
        let per = &self.per_request;
        match status {
            200..=299 => {
                let tier = tier.unwrap_or(Tier::S3);
                per.hit((&self.reads, &self.served_bytes), front, tier, sent);
            }
            404 => per.miss(&self.reads, front),
            _ => {}
        }
    }

    /// One answered request: `requests_total`, `request_duration_seconds` and the bytes it
    /// moved, through handles resolved once.
    pub fn record_request(
        &self,
        (front, method, status): (&str, &str, u16),
        seconds: f64,
        sent: u64,
        received: u64,
    ) {
        let per = &self.per_request;
        per.request(&self.requests, front, method, status);
        per.duration(&self.request_duration, front, method, seconds);
        per.bytes(
            (&self.bytes_sent, &self.bytes_received),
            front,
            (sent, received),
        );
    }

    /// Copies the tiers' own counters into the exported gauges (called at scrape time).
    pub fn observe_tiers(&self, memory: (u64, u64), disk: DiskUsage) {
        self.memory_bytes.set(memory.0 as i64);
        self.memory_entries.set(memory.1 as i64);
        self.disk_bytes.set(disk.bytes as i64);
        self.disk_entries.set(disk.entries as i64);
        self.disk_pinned_bytes.set(disk.pinned_bytes as i64);
        let before = self.evictions_seen.swap(disk.evictions, Ordering::Relaxed);
        self.disk_evictions
            .inc_by(disk.evictions.saturating_sub(before));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let dropped = crate::logging::dropped_lines();
        let before = self.log_lines_dropped_seen.swap(dropped, Ordering::Relaxed);
        self.log_lines_dropped
            .inc_by(dropped.saturating_sub(before));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
