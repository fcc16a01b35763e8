//! What a Gradle build cache entry says about the task that made it.
//!
//! Gradle packs every entry as a gzip-compressed tar whose first file is `METADATA`, a Java
//! properties file (checked against Gradle 4.4.1 here and against current Gradle's
//! `OriginMetadataFactory`): `type` (the task's class), `path` (4.x) or `identity` (newer: the
//! task path), `executionTime` (milliseconds the task ran), `creationTime`, and the build's
//! `buildInvocationId`, `operatingSystem`, `hostName`, `userName` (4.x also `gradleVersion`
//! and `rootPath`, a directory on the build machine).
//!
//! [`reader::MetadataReader`] reads `METADATA` from the first chunks of a PUT's body, within
//! fixed bounds, and [`TaskFacts`] keeps only what the status page and metrics need: the task's
//! type and path and its times. Names of hosts, users and directories are never kept. The facts
//! travel with the entry as its object metadata under reserved names ([`TaskFacts::to_metadata`]),
//! so every tier, and another node that fills the entry from S3, reads them back.

pub mod properties;
pub mod reader;
pub mod sample;
pub mod tally;

pub use reader::{MetadataReader, Reading, Unknown};

/// Object metadata names of the facts (without `x-amz-meta-`; the S3 front refuses client
/// metadata under `build-cache-proxy-`, so only this daemon writes them).
pub const META_TYPE: &str = "build-cache-proxy-gradle-type";
pub const META_PATH: &str = "build-cache-proxy-gradle-path";
pub const META_EXECUTION_MS: &str = "build-cache-proxy-gradle-exec-ms";
pub const META_CREATED_MS: &str = "build-cache-proxy-gradle-created-ms";

/// Longest task type and task path kept: class names and task paths are far shorter, and S3
/// allows 2 KiB of metadata per object.
const MAX_TYPE_LEN: usize = 200;
const MAX_PATH_LEN: usize = 400;
/// An execution time above a week is not a task's: ignored.
const MAX_EXECUTION_MS: u64 = 7 * 24 * 3600 * 1000;

/// What an entry's `METADATA` says about its task, as far as it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFacts {
    /// The task's class, e.g. `org.gradle.api.tasks.compile.JavaCompile` (Gradle 4's generated
    /// `_Decorated` subclass is named by its real class).
    pub task_type: String,
    /// The task's path, e.g. `:app:compileJava`, when given.
    pub task_path: Option<String>,
    /// How long the task ran when it made the entry, in milliseconds.
    pub execution_ms: Option<u64>,
    /// When the entry was made, in milliseconds since the epoch.
    pub created_ms: Option<u64>,
}

impl TaskFacts {
    /// The facts in `METADATA`'s key/value pairs; `None` without a usable task type.
    pub fn from_properties(pairs: &[(String, String)]) -> Option<TaskFacts> {
        let get = |key: &str| {
            pairs
                .iter()
                .rev() // Java keeps the last of a repeated key
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let task_type = clean_type(get("type")?)?;
        Some(TaskFacts {
            task_type,
            task_path: get("identity").or_else(|| get("path")).and_then(clean_path),
            execution_ms: get("executionTime")
                .and_then(|v| v.trim().parse().ok())
                .filter(|&ms| ms <= MAX_EXECUTION_MS),
            created_ms: get("creationTime").and_then(|v| v.trim().parse().ok()),
        })
    }

    /// The facts as object metadata, sorted by name (as [`crate::store::ObjectAttrs`] keeps it).
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let mut meta = vec![(META_TYPE.to_string(), self.task_type.clone())];
        if let Some(created) = self.created_ms {
            meta.push((META_CREATED_MS.to_string(), created.to_string()));
        }
        if let Some(ms) = self.execution_ms {
            meta.push((META_EXECUTION_MS.to_string(), ms.to_string()));
        }
        if let Some(path) = &self.task_path {
            meta.push((META_PATH.to_string(), path.clone()));
        }
        meta.sort();
        meta
    }

    /// The facts an entry's object metadata carries, checked as on the way in (metadata read
    /// back from S3 is only as trustworthy as whoever could write the bucket).
    pub fn from_metadata(user: &[(String, String)]) -> Option<TaskFacts> {
        let get = |key: &str| user.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        Some(TaskFacts {
            task_type: clean_type(get(META_TYPE)?)?,
            task_path: get(META_PATH).and_then(clean_path),
            execution_ms: get(META_EXECUTION_MS)
                .and_then(|v| v.parse().ok())
                .filter(|&ms| ms <= MAX_EXECUTION_MS),
            created_ms: get(META_CREATED_MS).and_then(|v| v.parse().ok()),
        })
    }

    /// The project a task belongs to: the first segment of its path (`:app:compileJava` →
    /// `:app`), or `:` for the root project's tasks.
    pub fn project(&self) -> Option<&str> {
        let path = self.task_path.as_deref()?;
        let rest = path.strip_prefix(':')?;
        match rest.find(':') {
            Some(end) => Some(&path[..end + 1]),
            None => Some(":"),
        }
    }
}

/// A task type as a Java class name (letters, digits, `.`, `_`, `$`), without Gradle 4's
/// `_Decorated` suffix; anything else is not kept.
fn clean_type(raw: &str) -> Option<String> {
    let name = raw.trim();
    let name = name.strip_suffix("_Decorated").unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= MAX_TYPE_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '$'));
    ok.then(|| name.to_string())
}

/// A task path: starts with `:`, printable ASCII (it becomes an S3 metadata header value).
fn clean_path(raw: &str) -> Option<String> {
    let path = raw.trim();
    let ok = path.starts_with(':')
        && path.len() <= MAX_PATH_LEN
        && path.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    ok.then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keeps_type_path_and_times_only() {
        let facts = TaskFacts::from_properties(&pairs(&[
            ("type", "org.gradle.api.tasks.compile.JavaCompile_Decorated"),
            ("path", ":app:compileJava"),
            ("executionTime", "1001"),
            ("creationTime", "1796537662186"),
            ("hostName", "builder-7"),
            ("userName", "alice"),
            ("rootPath", "/home/alice/app"),
        ]))
        .unwrap();
        assert_eq!(facts.task_type, "org.gradle.api.tasks.compile.JavaCompile");
        assert_eq!(facts.project(), Some(":app"));
        let meta = facts.to_metadata();
        let text = format!("{meta:?}");
        for secret in ["builder-7", "alice"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(TaskFacts::from_metadata(&meta), Some(facts));
    }

    #[test]
    fn newer_gradle_names_the_path_identity() {
        let facts = TaskFacts::from_properties(&pairs(&[
            ("type", "org.gradle.api.tasks.bundling.Jar"),
            ("identity", ":jar"),
            ("executionTime", "12"),
        ]))
        .unwrap();
        assert_eq!(facts.task_path.as_deref(), Some(":jar"));
        assert_eq!(facts.project(), Some(":"));
        assert_eq!(facts.created_ms, None);
    }

    #[test]
    fn odd_values_are_not_kept() {
        assert_eq!(TaskFacts::from_properties(&pairs(&[("type", "a b")])), None);
        assert_eq!(TaskFacts::from_properties(&pairs(&[("path", ":x")])), None);
        let facts = TaskFacts::from_properties(&pairs(&[
            ("type", "T"),
            ("path", "no-colon"),
            ("executionTime", "-3"),
        ]))
        .unwrap();
        assert_eq!((facts.task_path, facts.execution_ms), (None, None));
        let long = "x".repeat(MAX_TYPE_LEN + 1);
        assert_eq!(TaskFacts::from_properties(&pairs(&[("type", &long)])), None);
    }
}
