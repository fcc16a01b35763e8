//! The last hour in per-minute samples: cumulative counters read once a minute into a small
//! ring, so the status page can say what happened in the last hour and draw its trends
//! without a time-series database. Nothing here survives a restart; Prometheus keeps history.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use serde::Serialize;

use crate::gradle_meta::tally::GradleTally;
use crate::metrics::{Metrics, READ_FRONTS};
use crate::store::Tier;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Samples kept: an hour of minutes, and the one that starts the hour.
const KEPT: usize = 61;

/// Cumulative counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Per front (in [`READ_FRONTS`] order): hits by tier (memory, disk, s3), then misses.
    pub reads: [[u64; 4]; 3],
    /// Bytes of hits served from the node (memory and disk) and from S3, all fronts.
    pub local_bytes: u64,
    pub s3_bytes: u64,
    /// Build time Gradle hits saved, in milliseconds.
    pub saved_ms: u64,
    /// S3 requests that failed (not counting answers such as 404, nor requests skipped while
    /// the breaker was open).
    pub s3_errors: u64,
    /// Write-back queue depth when the sample was taken (a gauge, not a count).
    pub queue_entries: u64,
}

impl Counters {
    /// The counts now.
    pub fn read(metrics: &Metrics, tally: &GradleTally) -> Counters {
        let mut reads = [[0u64; 4]; 3];
        let (mut local_bytes, mut s3_bytes) = (0, 0);
        for (f, front) in READ_FRONTS.iter().enumerate() {
            for (t, tier) in [Tier::Memory, Tier::Disk, Tier::S3].iter().enumerate() {
                let tier = tier.as_str();
                reads[f][t] = metrics.reads.with_label_values(&[front, "hit", tier]).get();
                let bytes = metrics.served_bytes.with_label_values(&[front, tier]).get();
                match tier {
                    "s3" => s3_bytes += bytes,
                    _ => local_bytes += bytes,
                }
            }
            reads[f][3] = metrics
                .reads
                .with_label_values(&[front, "miss", "none"])
                .get();
        }
        let s3_errors = metrics
            .s3_requests
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|metric| {
                metric.get_label().iter().any(|l| {
                    l.name() == "result"
                        && !matches!(
                            l.value(),
                            "ok" | "miss"
                                | "not_modified"
                                | "precondition_failed"
                                | "unsatisfiable"
                                | "skipped"
                        )
                })
            })
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum();
        Counters {
            reads,
            local_bytes,
            s3_bytes,
            saved_ms: tally.saved_ms(),
            s3_errors,
            queue_entries: metrics.upload_queue_entries.get().max(0) as u64,
        }
    }
}

/// One sample: the counters and when (seconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: u64,
    pub counters: Counters,
}

/// The ring of samples.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples, oldest first, followed by `now`: the last hour and the present.
    pub fn with(&self, now: Sample) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let hour_ago = now.at.saturating_sub(3600);
        samples
            .iter()
            .filter(|s| s.at >= hour_ago && s.at <= now.at)
            .copied()
            .chain(std::iter::once(now))
            .collect()
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The change of `value` from each sample to the next: the per-minute trend of a counter.
pub fn deltas(samples: &[Sample], value: impl Fn(&Counters) -> u64) -> Vec<u64> {
    samples
        .windows(2)
        .map(|w| value(&w[1].counters).saturating_sub(value(&w[0].counters)))
        .collect()
}

/// The value of a gauge at each sample.
pub fn levels(samples: &[Sample], value: impl Fn(&Counters) -> u64) -> Vec<u64> {
    samples.iter().map(|s| value(&s.counters)).collect()
}

/// How much `value` grew over the samples (the first is the start of the window).
pub fn growth(samples: &[Sample], value: impl Fn(&Counters) -> u64) -> u64 {
    match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => value(&last.counters).saturating_sub(value(&first.counters)),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64, saved_ms: u64) -> Sample {
        Sample {
            at,
            counters: Counters {
                saved_ms,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn keeps_an_hour_of_minutes() {
        let history = History::default();
        for minute in 0..100u64 {
            history.record(sample(minute * 60, minute * 1000));
        }
        let now = sample(100 * 60, 100_000);
        let window = history.with(now);
        // Samples from the last hour (minutes 40..=99), then now.
        assert_eq!(window.len(), 61);
        assert_eq!(window[0].at, 40 * 60);
        assert_eq!(growth(&window, |c| c.saved_ms), 60_000);
        let trend = deltas(&window, |c| c.saved_ms);
        assert_eq!(trend.len(), 60);
        assert!(trend.iter().all(|&d| d == 1000));
    }
}
