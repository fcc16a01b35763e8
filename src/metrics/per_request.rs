//! The series every request touches, resolved once. `with_label_values` hashes its label values
//! and takes a lock on each call; a request would pay that five or six times. Each slot here is
//! filled on its first use (so a series appears in the exposition only once it has counted,
//! as before) and read without either afterwards. Label values outside the known sets (a rare
//! status, a method with no slot) take the ordinary lookup.

use std::sync::OnceLock;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use crate::store::Tier;

/// The listeners' `front` values, and the forward mode's for the reads.
const FRONTS: [&str; 4] = ["gradle", "s3", "admin", "forward"];
/// The `method` values the access log uses (see `server::access`).
const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OTHER"];
/// The statuses a cache answers most.
const STATUSES: [u16; 8] = [200, 204, 206, 304, 403, 404, 412, 503];
const TIERS: [Tier; 3] = [Tier::Memory, Tier::Disk, Tier::S3];

/// A handle, resolved on first use.
type Slot<T> = OnceLock<T>;

fn slots<T>(n: usize) -> Box<[Slot<T>]> {
    (0..n).map(|_| OnceLock::new()).collect()
}

pub(super) struct PerRequest {
    requests: Box<[Slot<IntCounter>]>,
    durations: Box<[Slot<Histogram>]>,
    sent: Box<[Slot<IntCounter>]>,
    received: Box<[Slot<IntCounter>]>,
    hits: Box<[Slot<IntCounter>]>,
    hit_bytes: Box<[Slot<IntCounter>]>,
    misses: Box<[Slot<IntCounter>]>,
}

fn index_of<T: PartialEq>(all: &[T], value: &T) -> Option<usize> {
    all.iter().position(|v| v == value)
}

impl PerRequest {
    pub(super) fn new() -> Self {
        let (f, m, s, t) = (FRONTS.len(), METHODS.len(), STATUSES.len(), TIERS.len());
        PerRequest {
            requests: slots(f * m * s),
            durations: slots(f * m),
            sent: slots(f),
            received: slots(f),
            hits: slots(f * t),
            hit_bytes: slots(f * t),
            misses: slots(f),
        }
    }

    /// `requests_total{front,method,status}`.
    pub(super) fn request(&self, vec: &IntCounterVec, front: &str, method: &str, status: u16) {
        let at = (index_of(&FRONTS, &front), index_of(&METHODS, &method));
        match (at, index_of(&STATUSES, &status)) {
            ((Some(f), Some(m)), Some(s)) => {
                let slot = &self.requests[(f * METHODS.len() + m) * STATUSES.len() + s];
                slot.get_or_init(|| vec.with_label_values(&[front, method, &status.to_string()]))
                    .inc();
            }
            _ => vec
                .with_label_values(&[front, method, &status.to_string()])
                .inc(),
        }
    }

    /// `request_duration_seconds{front,method}`.
    pub(super) fn duration(&self, vec: &HistogramVec, front: &str, method: &str, secs: f64) {
        match (index_of(&FRONTS, &front), index_of(&METHODS, &method)) {
            (Some(f), Some(m)) => self.durations[f * METHODS.len() + m]
                .get_or_init(|| vec.with_label_values(&[front, method]))
                .observe(secs),
            _ => vec.with_label_values(&[front, method]).observe(secs),
        }
    }

    /// `bytes_sent_total{front}` and `bytes_received_total{front}`.
    pub(super) fn bytes(
        &self,
        (sent_vec, received_vec): (&IntCounterVec, &IntCounterVec),
        front: &str,
        (sent, received): (u64, u64),
    ) {
        match index_of(&FRONTS, &front) {
            Some(f) => {
                self.sent[f]
                    .get_or_init(|| sent_vec.with_label_values(&[front]))
                    .inc_by(sent);
                self.received[f]
                    .get_or_init(|| received_vec.with_label_values(&[front]))
                    .inc_by(received);
            }
            None => {
                sent_vec.with_label_values(&[front]).inc_by(sent);
                received_vec.with_label_values(&[front]).inc_by(received);
            }
        }
    }

    /// A hit: `reads_total{front,result="hit",tier}` and `served_bytes_total{front,tier}`.
    pub(super) fn hit(
        &self,
        (reads, served): (&IntCounterVec, &IntCounterVec),
        front: &str,
        tier: Tier,
        sent: u64,
    ) {
        let (name, tier_at) = (tier.as_str(), index_of(&TIERS, &tier));
        match (index_of(&FRONTS, &front), tier_at) {
            (Some(f), Some(t)) => {
                let at = f * TIERS.len() + t;
                self.hits[at]
                    .get_or_init(|| reads.with_label_values(&[front, "hit", name]))
                    .inc();
                self.hit_bytes[at]
                    .get_or_init(|| served.with_label_values(&[front, name]))
                    .inc_by(sent);
            }
            _ => {
                reads.with_label_values(&[front, "hit", name]).inc();
                served.with_label_values(&[front, name]).inc_by(sent);
            }
        }
    }

    /// A miss: `reads_total{front,result="miss",tier="none"}`.
    pub(super) fn miss(&self, reads: &IntCounterVec, front: &str) {
        match index_of(&FRONTS, &front) {
            Some(f) => self.misses[f]
                .get_or_init(|| reads.with_label_values(&[front, "miss", "none"]))
                .inc(),
            None => reads.with_label_values(&[front, "miss", "none"]).inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, Opts};

    #[test]
    fn resolved_handles_count_the_same_series_as_lookups() {
        let vec = IntCounterVec::new(Opts::new("r", "r"), &["front", "method", "status"]).unwrap();
        let per = PerRequest::new();
        for _ in 0..3 {
            per.request(&vec, "gradle", "GET", 200);
        }
        per.request(&vec, "s3", "PUT", 200);
        per.request(&vec, "gradle", "GET", 418); // no slot: the ordinary lookup
        per.request(&vec, "elsewhere", "GET", 200);
        assert_eq!(vec.with_label_values(&["gradle", "GET", "200"]).get(), 3);
        assert_eq!(vec.with_label_values(&["s3", "PUT", "200"]).get(), 1);
        assert_eq!(vec.with_label_values(&["gradle", "GET", "418"]).get(), 1);
        assert_eq!(vec.with_label_values(&["elsewhere", "GET", "200"]).get(), 1);
        assert_eq!(vec.with_label_values(&["gradle", "PUT", "200"]).get(), 0);

        let hist = HistogramVec::new(HistogramOpts::new("d", "d"), &["front", "method"]).unwrap();
        per.duration(&hist, "gradle", "GET", 0.5);
        per.duration(&hist, "gradle", "GET", 0.25);
        assert_eq!(
            hist.with_label_values(&["gradle", "GET"])
                .get_sample_count(),
            2
        );

        let reads = IntCounterVec::new(Opts::new("h", "h"), &["front", "result", "tier"]).unwrap();
        let served = IntCounterVec::new(Opts::new("b", "b"), &["front", "tier"]).unwrap();
        per.hit((&reads, &served), "forward", Tier::S3, 10);
        per.hit((&reads, &served), "forward", Tier::S3, 5);
        per.miss(&reads, "forward");
        assert_eq!(reads.with_label_values(&["forward", "hit", "s3"]).get(), 2);
        assert_eq!(served.with_label_values(&["forward", "s3"]).get(), 15);
        assert_eq!(
            reads.with_label_values(&["forward", "miss", "none"]).get(),
            1
        );
    }
}
