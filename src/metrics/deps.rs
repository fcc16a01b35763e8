//! The dependency proxy's series (`src/deps`), labelled by `repository`: `maven/<name>` or
//! `downloads/<name>`, one per configured upstream, so their number is the config's.

use prometheus::core::Collector;
use prometheus::{IntCounterVec, Registry};

use super::opts;

/// Where a dependency's bytes were served from: the node's tiers, the shared bucket, or the
/// upstream (fetched for this request, or for one it waited on).
pub const SERVED_FROM: [&str; 4] = ["memory", "disk", "s3", "upstream"];

pub struct DepsMetrics {
    /// Requests answered, by result: `hit`, `fetched`, `revalidated`, `stale`, `not_found`,
    /// `not_found_cached`, `checksum_mismatch`, `upstream_error`, `refused`.
    pub requests: IntCounterVec,
    /// Requests answered from a copy the store had (`hit`, `revalidated`, `stale`), by the tier
    /// that had it.
    pub hits: IntCounterVec,
    /// Body bytes served, by where they came from ([`SERVED_FROM`]).
    pub served_bytes: IntCounterVec,
    /// Requests made to the upstream, by status (`200`, `304`, `404`, `5xx`, `other`, `error`).
    pub upstream_requests: IntCounterVec,
    /// Body bytes received from the upstream.
    pub upstream_bytes: IntCounterVec,
    /// Revalidations of changing files, by result: `not_modified`, `changed`, `gone`, `failed`
    /// (the stale copy served).
    pub revalidations: IntCounterVec,
    /// Files whose bytes did not match the upstream's checksum file: answered 502, never kept.
    pub checksum_failures: IntCounterVec,
}

impl DepsMetrics {
    pub(super) fn new() -> DepsMetrics {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(opts(name, help), labels).expect("valid metric")
        };
        DepsMetrics {
            requests: vec(
                "dependency_requests_total",
                "Dependency requests answered, by repository and result.",
                &["repository", "result"],
            ),
            hits: vec(
                "dependency_hits_total",
                "Dependency requests answered from a copy the store had, by repository and the \
                 tier that had it (memory, disk, s3).",
                &["repository", "tier"],
            ),
            served_bytes: vec(
                "dependency_served_bytes_total",
                "Dependency body bytes served, by repository and where they came from (memory, \
                 disk, s3, upstream).",
                &["repository", "from"],
            ),
            upstream_requests: vec(
                "dependency_upstream_requests_total",
                "Requests made to the upstream repositories, by repository and status.",
                &["repository", "status"],
            ),
            upstream_bytes: vec(
                "dependency_upstream_bytes_total",
                "Body bytes received from the upstream repositories.",
                &["repository"],
            ),
            revalidations: vec(
                "dependency_revalidations_total",
                "Revalidations of maven-metadata.xml and -SNAPSHOT files with their upstream, \
                 by result (not_modified, changed, gone, failed: the stale copy served).",
                &["repository", "result"],
            ),
            checksum_failures: vec(
                "dependency_checksum_failures_total",
                "Files from an upstream that did not match its checksum file (answered 502, \
                 never cached).",
                &["repository"],
            ),
        }
    }

    pub(super) fn register(&self, registry: &Registry) {
        for c in [
            &self.requests,
            &self.hits,
            &self.served_bytes,
            &self.upstream_requests,
            &self.upstream_bytes,
            &self.revalidations,
            &self.checksum_failures,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
        }
    }

    /// Bytes served per repository since start, by [`SERVED_FROM`] (in that order), for the
    /// status page; sorted by repository.
    pub fn served_by_repository(&self) -> Vec<(String, [u64; 4])> {
        let mut rows: std::collections::BTreeMap<String, [u64; 4]> = Default::default();
        for family in self.served_bytes.collect() {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                };
                let (Some(repository), Some(from)) = (label("repository"), label("from")) else {
                    continue;
                };
                if let Some(i) = SERVED_FROM.iter().position(|f| *f == from) {
                    rows.entry(repository).or_default()[i] =
                        metric.get_counter().get_value() as u64;
                }
            }
        }
        rows.into_iter().collect()
    }

    /// Creates a repository's series at zero, so dashboards see zeros instead of gaps.
    pub fn add_repository(&self, repository: &str) {
        for from in SERVED_FROM {
            self.served_bytes.with_label_values(&[repository, from]);
        }
        for tier in &SERVED_FROM[..3] {
            self.hits.with_label_values(&[repository, tier]);
        }
        for result in ["hit", "fetched", "not_found", "upstream_error"] {
            self.requests.with_label_values(&[repository, result]);
        }
        self.upstream_bytes.with_label_values(&[repository]);
        self.checksum_failures.with_label_values(&[repository]);
    }
}
