//! What Gradle hits saved, what missed and what was stored, by task type, path and project:
//! the Prometheus counters (by task type, bounded) and the tables behind the status page.
//!
//! A hit saves the execution time its entry's `METADATA` recorded. A miss has no entry, so its
//! task is learned from the PUT that follows it (Gradle stores what it missed and then ran):
//! missed keys wait in a bounded set, and a miss is counted with its task type when its PUT
//! arrives, or as `unknown` when it leaves the set without one (a read-only client, a failed
//! task, or more misses in flight than the set holds).
//!
//! Task types become Prometheus label values, so their number is bounded: the first
//! `gradle.task_type_labels` types seen get their own label and keep it (a label that moved
//! would break the counters' monotony); later ones count as `other`. Paths and projects appear
//! only on the status page, never as labels.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde::Serialize;

use super::{Reading, TaskFacts, Unknown};
use crate::metrics::Metrics;

/// The label of entries whose task is not known.
pub const UNKNOWN: &str = "unknown";
/// The label of task types beyond the labelled ones.
pub const OTHER: &str = "other";
/// Missed keys remembered until their PUT.
const PENDING_MISSES: usize = 16 * 1024;
/// Rows kept per table (types, paths, projects); later ones are only in the totals.
const MAX_ROWS: usize = 2048;

/// Counts for one task type, path or project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    /// Execution time the hits saved, in milliseconds.
    pub saved_ms: u64,
}

pub struct GradleTally {
    metrics: Arc<Metrics>,
    label_slots: usize,
    saved_ms: AtomicU64,
    tables: Mutex<Tables>,
}

struct Tables {
    labelled: std::collections::HashSet<String>,
    pending: LruCache<String, ()>,
    types: HashMap<String, Stats>,
    paths: HashMap<String, Stats>,
    projects: HashMap<String, Stats>,
}

/// The tables as the status page shows them.
#[derive(Debug, Clone, Serialize)]
pub struct TallySnapshot {
    pub saved_ms: u64,
    pub types: Vec<(String, Stats)>,
    pub paths: Vec<(String, Stats)>,
    pub projects: Vec<(String, Stats)>,
}

impl GradleTally {
    /// `label_slots` task types get their own label (`gradle.task_type_labels`).
    pub fn new(metrics: Arc<Metrics>, label_slots: usize) -> Self {
        GradleTally {
            metrics,
            label_slots,
            saved_ms: AtomicU64::new(0),
            tables: Mutex::new(Tables {
                labelled: Default::default(),
                pending: LruCache::new(NonZeroUsize::new(PENDING_MISSES).expect("non-zero")),
                types: HashMap::new(),
                paths: HashMap::new(),
                projects: HashMap::new(),
            }),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A GET answered from the cache: its entry's execution time was saved.
    pub fn hit(&self, facts: Option<&TaskFacts>) {
        let m = &self.metrics;
        let Some(facts) = facts else {
            m.gradle_hits.with_label_values(&[UNKNOWN]).inc();
            return;
        };
        let saved = facts.execution_ms.unwrap_or(0);
        let label = {
            let mut t = self.tables();
            t.add(facts, |s| {
                s.hits += 1;
                s.saved_ms += saved;
            });
            t.label(&facts.task_type, self.label_slots)
        };
        self.saved_ms.fetch_add(saved, Ordering::Relaxed);
        m.gradle_hits.with_label_values(&[&label]).inc();
        m.gradle_time_saved
            .with_label_values(&[&label])
            .inc_by(saved as f64 / 1000.0);
    }

    /// A GET of `key` that found nothing: counted once its task is known.
    pub fn miss(&self, key: &str) {
        let evicted = self.tables().pending.push(key.to_string(), ());
        if evicted.is_some_and(|(k, _)| k != key) {
            self.metrics
                .gradle_misses
                .with_label_values(&[UNKNOWN])
                .inc();
        }
    }

    /// A PUT of `key` was read as `reading`; `stored` says whether the store kept it.
    pub fn put(&self, key: &str, reading: &Reading, stored: bool) {
        let m = &self.metrics;
        let facts = match reading {
            Reading::Known(facts) => Some(facts),
            Reading::Unknown(why) => {
                m.gradle_unknown_entries
                    .with_label_values(&[why.as_str()])
                    .inc();
                None
            }
            Reading::Pending => None,
        };
        let (label, missed) = {
            let mut t = self.tables();
            let missed = t.pending.pop(key).is_some();
            let label = match facts {
                Some(facts) => {
                    t.add(facts, |s| {
                        s.misses += u64::from(missed);
                        s.stores += u64::from(stored);
                    });
                    t.label(&facts.task_type, self.label_slots)
                }
                None => UNKNOWN.to_string(),
            };
            (label, missed)
        };
        if missed {
            m.gradle_misses.with_label_values(&[&label]).inc();
        }
        if stored {
            m.gradle_stores.with_label_values(&[&label]).inc();
        }
    }

    /// Execution time saved by hits since start, in milliseconds.
    pub fn saved_ms(&self) -> u64 {
        self.saved_ms.load(Ordering::Relaxed)
    }

    /// The tables, each sorted by time saved, then misses (the status page picks its tops).
    pub fn snapshot(&self) -> TallySnapshot {
        let t = self.tables();
        let sorted = |table: &HashMap<String, Stats>| {
            let mut rows: Vec<(String, Stats)> =
                table.iter().map(|(k, v)| (k.clone(), *v)).collect();
            rows.sort_by(|a, b| {
                (b.1.saved_ms, b.1.misses, &a.0).cmp(&(a.1.saved_ms, a.1.misses, &b.0))
            });
            rows
        };
        TallySnapshot {
            saved_ms: self.saved_ms(),
            types: sorted(&t.types),
            paths: sorted(&t.paths),
            projects: sorted(&t.projects),
        }
    }
}

impl Tables {
    /// Applies `change` to the task's type, path and project rows (made while there is room).
    fn add(&mut self, facts: &TaskFacts, change: impl Fn(&mut Stats)) {
        fn row(table: &mut HashMap<String, Stats>, name: &str, change: &impl Fn(&mut Stats)) {
            if let Some(stats) = table.get_mut(name) {
                change(stats);
            } else if table.len() < MAX_ROWS {
                change(table.entry(name.to_string()).or_default());
            }
        }
        row(&mut self.types, &facts.task_type, &change);
        if let Some(path) = &facts.task_path {
            row(&mut self.paths, path, &change);
        }
        if let Some(project) = facts.project() {
            row(&mut self.projects, project, &change);
        }
    }

    /// The label of `task_type`: its own while there are free slots or it has one.
    fn label(&mut self, task_type: &str, slots: usize) -> String {
        if self.labelled.contains(task_type) {
            return task_type.to_string();
        }
        if self.labelled.len() < slots && task_type != UNKNOWN && task_type != OTHER {
            self.labelled.insert(task_type.to_string());
            return task_type.to_string();
        }
        OTHER.to_string()
    }
}

/// Every reason an entry's task can be unknown, for label sets made at start.
pub const UNKNOWN_REASONS: [Unknown; 7] = [
    Unknown::NotGzip,
    Unknown::Corrupt,
    Unknown::NotTar,
    Unknown::NoMetadata,
    Unknown::NoTaskType,
    Unknown::TooLarge,
    Unknown::Truncated,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(task_type: &str, path: &str, ms: u64) -> TaskFacts {
        TaskFacts {
            task_type: task_type.into(),
            task_path: Some(path.into()),
            execution_ms: Some(ms),
            created_ms: None,
        }
    }

    fn value(metrics: &Metrics, series: &str) -> f64 {
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn hits_save_time_and_misses_learn_their_type_from_the_put() {
        let metrics = Arc::new(Metrics::new());
        let tally = GradleTally::new(metrics.clone(), 1);
        let compile = facts("a.Compile", ":app:compileJava", 1500);
        let jar = facts("a.Jar", ":lib:jar", 20);
        tally.miss("k1");
        tally.put("k1", &Reading::Known(compile.clone()), true);
        tally.hit(Some(&compile));
        tally.hit(Some(&compile));
        tally.hit(Some(&jar));
        tally.hit(None);
        tally.put("k2", &Reading::Unknown(Unknown::NotGzip), true);
        let p = "build_cache_proxy_gradle";
        assert_eq!(
            value(
                &metrics,
                &format!("{p}_hits_total{{task_type=\"a.Compile\"}}")
            ),
            2.0
        );
        // One label slot: the second type seen is `other`.
        assert_eq!(
            value(&metrics, &format!("{p}_hits_total{{task_type=\"other\"}}")),
            1.0
        );
        assert_eq!(
            value(
                &metrics,
                &format!("{p}_hits_total{{task_type=\"unknown\"}}")
            ),
            1.0
        );
        assert_eq!(
            value(
                &metrics,
                &format!("{p}_time_saved_seconds_total{{task_type=\"a.Compile\"}}")
            ),
            3.0
        );
        assert_eq!(
            value(
                &metrics,
                &format!("{p}_misses_total{{task_type=\"a.Compile\"}}")
            ),
            1.0
        );
        assert_eq!(
            value(
                &metrics,
                &format!("{p}_unknown_entries_total{{reason=\"not_gzip\"}}")
            ),
            1.0
        );
        let snap = tally.snapshot();
        assert_eq!(snap.saved_ms, 3020);
        assert_eq!(snap.types[0].0, "a.Compile");
        assert_eq!(
            snap.types[0].1,
            Stats {
                hits: 2,
                misses: 1,
                stores: 1,
                saved_ms: 3000
            }
        );
        let projects: Vec<&str> = snap.projects.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(projects, [":app", ":lib"]);
    }

    #[test]
    fn misses_without_a_put_count_as_unknown_once_forgotten() {
        let metrics = Arc::new(Metrics::new());
        let tally = GradleTally::new(metrics.clone(), 4);
        for i in 0..PENDING_MISSES + 3 {
            tally.miss(&format!("key{i}"));
        }
        let series = "build_cache_proxy_gradle_misses_total{task_type=\"unknown\"}";
        assert_eq!(value(&metrics, series), 3.0);
    }
}
