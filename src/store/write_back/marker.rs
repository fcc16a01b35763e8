//! The queue's markers: one small file per queued key, `<disk.dir>/.queue/<sha256 of the key>`,
//! written durably (temp file, fsync, rename, fsync of the directory) before a write is
//! acknowledged, and read back at start-up.
//!
//! ```text
//! bcp-upload v1
//! <namespace>
//! <name>
//! <enqueued, milliseconds since the epoch>
//! <body bytes>
//! ```

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::store::disk::DiskTier;
use crate::store::{Key, Namespace};

const MARKER_MAGIC: &str = "bcp-upload v1";

pub(super) fn marker_path(dir: &Path, key: &Key) -> PathBuf {
    let digest = Sha256::digest(format!("{}/{}", key.namespace().as_str(), key.name()));
    dir.join(hex::encode(digest))
}

pub(super) fn marker_text(key: &Key, enqueued: SystemTime, bytes: u64) -> String {
    let millis = enqueued
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!(
        "{MARKER_MAGIC}\n{}\n{}\n{millis}\n{bytes}\n",
        key.namespace().as_str(),
        key.name()
    )
}

pub(super) fn parse_marker(text: &str) -> Option<(Key, SystemTime, u64)> {
    let mut lines = text.lines();
    if lines.next()? != MARKER_MAGIC {
        return None;
    }
    let ns = Namespace::parse(lines.next()?).ok()?;
    let name = lines.next()?;
    let key = if ns == Namespace::gradle() {
        Key::gradle(name)
    } else {
        Key::object(ns, name)
    }
    .ok()?;
    let millis: u64 = lines.next()?.parse().ok()?;
    let bytes: u64 = lines.next()?.parse().ok()?;
    Some((key, UNIX_EPOCH + Duration::from_millis(millis), bytes))
}

/// Writes `path` so that it exists with exactly `data` after a crash, or not at all.
pub(super) fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("markers live in the queue directory");
    let temp = dir.join(format!(".tmp-{:016x}", fastrand::u64(..)));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Reads the markers, pins the entries they name, drops markers without an entry.
pub(super) fn load_markers(dir: &Path, disk: &DiskTier) -> io::Result<Vec<(Key, SystemTime, u64)>> {
    std::fs::create_dir_all(dir)?;
    let mut found = Vec::new();
    for file in std::fs::read_dir(dir)? {
        let path = file?.path();
        let is_temp = path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
        let parsed = if is_temp {
            None
        } else {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| parse_marker(&t))
        };
        match parsed {
            Some((key, enqueued, bytes)) if disk.set_pinned(&key, true) => {
                found.push((key, enqueued, bytes));
            }
            Some((key, ..)) => {
                tracing::info!(key = %key, "upload marker without an entry on disk: dropped");
                std::fs::remove_file(&path)?;
            }
            None => {
                if !is_temp {
                    tracing::warn!(path = %path.display(), "unreadable upload marker removed");
                }
                std::fs::remove_file(&path)?;
            }
        }
    }
    if !found.is_empty() {
        tracing::info!(
            entries = found.len(),
            "write-back queue restored; uploads resume"
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        let key = Key::gradle("00ff").unwrap();
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let text = marker_text(&key, at, 42);
        assert_eq!(parse_marker(&text), Some((key, at, 42)));
        let object = Key::object(Namespace::new("runner-cache").unwrap(), "a/b c").unwrap();
        assert_eq!(
            parse_marker(&marker_text(&object, at, 0)),
            Some((object, at, 0))
        );
        assert_eq!(parse_marker("garbage"), None);
    }
}
