//! What the status page shows, gathered once per request into one value: the HTML page and
//! `/status.json` are two renderings of it.

use serde::Serialize;

use super::history::{deltas, growth, levels, unix_now, Counters, Sample};
use crate::gradle_meta::tally::{Stats, TallySnapshot};
use crate::logging::recent::LoggedError;
use crate::metrics::READ_FRONTS;

/// Rows in each "top" table.
pub const TOP: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub version: &'static str,
    /// Seconds since the epoch when this was gathered, and since the daemon started.
    pub generated_at: u64,
    pub uptime_seconds: u64,
    /// Length of the "last hour" window actually covered (shorter just after start).
    pub window_seconds: u64,
    pub fronts: Vec<FrontStatus>,
    pub gradle: GradleStatus,
    pub bytes: BytesStatus,
    pub memory: Usage,
    pub disk: DiskStatus,
    pub write_back: Option<QueueStatus>,
    pub s3: Option<S3Status>,
    pub node_local: Option<String>,
    /// The dependency proxy's repositories; empty when it is off.
    pub dependencies: Vec<DependencyStatus>,
    pub recent_errors: Vec<LoggedError>,
}

/// Bytes one dependency repository served since start, by where they came from.
#[derive(Debug, Clone, Serialize)]
pub struct DependencyStatus {
    /// `maven/<name>` or `downloads/<name>`.
    pub repository: String,
    /// From this node's memory and disk.
    pub node_bytes: u64,
    /// From the bucket (another node fetched them).
    pub s3_bytes: u64,
    /// From the internet (the upstream), fetched for the request.
    pub upstream_bytes: u64,
}

/// Reads of one front: since start and over the last hour.
#[derive(Debug, Clone, Serialize)]
pub struct FrontStatus {
    /// `gradle`, `s3` or `forward`.
    pub front: &'static str,
    pub since_start: Reads,
    pub last_hour: Reads,
    /// Hits per minute over the last hour.
    pub hits_per_minute: Vec<u64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Reads {
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub s3_hits: u64,
    pub misses: u64,
    /// Hits over reads; `None` without reads.
    pub hit_ratio: Option<f64>,
    /// Hits served by this node's own tiers over reads.
    pub local_hit_ratio: Option<f64>,
}

impl Reads {
    fn new(counts: [u64; 4]) -> Reads {
        let [memory_hits, disk_hits, s3_hits, misses] = counts;
        let hits = memory_hits + disk_hits + s3_hits;
        let total = hits + misses;
        let ratio = |n: u64| (total > 0).then(|| n as f64 / total as f64);
        Reads {
            memory_hits,
            disk_hits,
            s3_hits,
            misses,
            hit_ratio: ratio(hits),
            local_hit_ratio: ratio(memory_hits + disk_hits),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GradleStatus {
    pub saved_seconds_since_start: f64,
    pub saved_seconds_last_hour: f64,
    /// Seconds saved per minute over the last hour.
    pub saved_seconds_per_minute: Vec<f64>,
    pub top_types_by_saved: Vec<Row>,
    pub top_types_by_misses: Vec<Row>,
    pub top_paths_by_saved: Vec<Row>,
    pub top_paths_by_misses: Vec<Row>,
    pub projects: Vec<Row>,
}

/// One task type, path or project.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub saved_seconds: f64,
}

impl Row {
    fn new((name, stats): &(String, Stats)) -> Row {
        Row {
            name: name.clone(),
            hits: stats.hits,
            misses: stats.misses,
            stores: stats.stores,
            saved_seconds: stats.saved_ms as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BytesStatus {
    pub local_since_start: u64,
    pub s3_since_start: u64,
    pub local_last_hour: u64,
    pub s3_last_hour: u64,
    pub local_per_minute: Vec<u64>,
    pub s3_per_minute: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub bytes: u64,
    pub entries: u64,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskStatus {
    #[serde(flatten)]
    pub usage: Usage,
    pub pinned_bytes: u64,
    pub evictions: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    pub entries: u64,
    pub bytes: u64,
    pub oldest_age_seconds: u64,
    /// Queue depth at each minute of the last hour.
    pub entries_per_minute: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct S3Status {
    pub bucket: String,
    /// `closed` (S3 in use) or `open` (misses skip S3, writes queue).
    pub breaker: &'static str,
    pub errors_since_start: u64,
    pub errors_last_hour: u64,
    pub errors_per_minute: Vec<u64>,
}

/// What the admin front knows that the samples don't.
pub struct Inputs {
    pub started_at: u64,
    pub window: Vec<Sample>,
    pub tally: TallySnapshot,
    pub memory: Usage,
    pub disk: DiskStatus,
    pub write_back: Option<(u64, u64, u64)>,
    pub s3: Option<(String, bool)>,
    pub node_local: Option<String>,
    /// Per repository: bytes served from memory, disk, S3 and the upstream.
    pub dependencies: Vec<(String, [u64; 4])>,
    pub recent_errors: Vec<LoggedError>,
}

pub fn gather(inputs: Inputs) -> Status {
    let now = inputs.window.last().map_or(unix_now(), |s| s.at);
    let window = &inputs.window;
    let last: Counters = window.last().map(|s| s.counters).unwrap_or_default();
    let fronts = READ_FRONTS
        .iter()
        .enumerate()
        .map(|(f, &front)| FrontStatus {
            front,
            since_start: Reads::new(last.reads[f]),
            last_hour: Reads::new(std::array::from_fn(|i| growth(window, |c| c.reads[f][i]))),
            hits_per_minute: deltas(window, |c| c.reads[f][..3].iter().sum()),
        })
        .collect();
    let top = |rows: &[(String, Stats)], key: fn(&Stats) -> u64| {
        let mut rows: Vec<&(String, Stats)> = rows.iter().filter(|r| key(&r.1) > 0).collect();
        rows.sort_by(|a, b| key(&b.1).cmp(&key(&a.1)).then(a.0.cmp(&b.0)));
        rows.into_iter().take(TOP).map(Row::new).collect()
    };
    let t = &inputs.tally;
    let gradle = GradleStatus {
        saved_seconds_since_start: last.saved_ms as f64 / 1000.0,
        saved_seconds_last_hour: growth(window, |c| c.saved_ms) as f64 / 1000.0,
        saved_seconds_per_minute: deltas(window, |c| c.saved_ms)
            .into_iter()
            .map(|ms| ms as f64 / 1000.0)
            .collect(),
        top_types_by_saved: top(&t.types, |s| s.saved_ms),
        top_types_by_misses: top(&t.types, |s| s.misses),
        top_paths_by_saved: top(&t.paths, |s| s.saved_ms),
        top_paths_by_misses: top(&t.paths, |s| s.misses),
        projects: t.projects.iter().take(TOP).map(Row::new).collect(),
    };
    let bytes = BytesStatus {
        local_since_start: last.local_bytes,
        s3_since_start: last.s3_bytes,
        local_last_hour: growth(window, |c| c.local_bytes),
        s3_last_hour: growth(window, |c| c.s3_bytes),
        local_per_minute: deltas(window, |c| c.local_bytes),
        s3_per_minute: deltas(window, |c| c.s3_bytes),
    };
    let write_back = inputs
        .write_back
        .map(|(entries, bytes, oldest)| QueueStatus {
            entries,
            bytes,
            oldest_age_seconds: oldest,
            entries_per_minute: levels(window, |c| c.queue_entries),
        });
    let s3 = inputs.s3.map(|(bucket, up)| S3Status {
        bucket,
        breaker: if up { "closed" } else { "open" },
        errors_since_start: last.s3_errors,
        errors_last_hour: growth(window, |c| c.s3_errors),
        errors_per_minute: deltas(window, |c| c.s3_errors),
    });
    Status {
        version: env!("CARGO_PKG_VERSION"),
        generated_at: now,
        uptime_seconds: now.saturating_sub(inputs.started_at),
        window_seconds: window.first().map_or(0, |s| now.saturating_sub(s.at)),
        fronts,
        gradle,
        bytes,
        memory: inputs.memory,
        disk: inputs.disk,
        write_back,
        s3,
        node_local: inputs.node_local,
        dependencies: inputs
            .dependencies
            .into_iter()
            .map(
                |(repository, [memory, disk, s3, upstream])| DependencyStatus {
                    repository,
                    node_bytes: memory + disk,
                    s3_bytes: s3,
                    upstream_bytes: upstream,
                },
            )
            .collect(),
        recent_errors: inputs.recent_errors,
    }
}
