//! The queue's markers: one small file per queued key, `<disk.dir>/.queue/<sha256 of the key>`,
//! written durably (temp file, fsync, rename, fsync of the directory) before a write or delete
//! is acknowledged, and read back at start-up.
//!
//! ```text
//! bcp-upload v2
//! <namespace>
//! <name>
//! <enqueued, milliseconds since the epoch>
//! put <body bytes> auto            (the backend's own part layout)
//! put <body bytes> <size>,<size>…  (these part sizes, e.g. a client's multipart upload's)
//! delete
//! ```
//!
//! Version 1 markers (written before deletes were queued) have `<body bytes>` as their last
//! line and are read as `put <bytes> auto`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::Op;
use crate::store::backend::PartLayout;
use crate::store::disk::DiskTier;
use crate::store::{Key, Namespace};

const MARKER_MAGIC: &str = "bcp-upload v2";
const MARKER_MAGIC_V1: &str = "bcp-upload v1";

pub(super) fn marker_path(dir: &Path, key: &Key) -> PathBuf {
    let digest = Sha256::digest(format!("{}/{}", key.namespace().as_str(), key.name()));
    dir.join(hex::encode(digest))
}

pub(super) fn marker_text(key: &Key, enqueued: SystemTime, op: &Op) -> String {
    let millis = enqueued
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let op = match op {
        Op::Put { bytes, parts } => {
            let parts = match parts {
                PartLayout::Auto => "auto".to_string(),
                PartLayout::Sizes(sizes) => sizes
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            };
            format!("put {bytes} {parts}")
        }
        Op::Delete => "delete".to_string(),
    };
    format!(
        "{MARKER_MAGIC}\n{}\n{}\n{millis}\n{op}\n",
        key.namespace().as_str(),
        key.name()
    )
}

pub(super) fn parse_marker(text: &str) -> Option<(Key, SystemTime, Op)> {
    let mut lines = text.lines();
    let v1 = match lines.next()? {
        MARKER_MAGIC => false,
        MARKER_MAGIC_V1 => true,
        _ => return None,
    };
    let ns = Namespace::parse(lines.next()?).ok()?;
    let name = lines.next()?;
    let key = if ns == Namespace::gradle() {
        Key::gradle(name)
    } else {
        Key::object(ns, name)
    }
    .ok()?;
    let millis: u64 = lines.next()?.parse().ok()?;
    let op_line = lines.next()?;
    let op = if v1 {
        Op::put(op_line.parse().ok()?)
    } else {
        parse_op(op_line)?
    };
    Some((key, UNIX_EPOCH + Duration::from_millis(millis), op))
}

fn parse_op(line: &str) -> Option<Op> {
    let mut words = line.split(' ');
    let op = match words.next()? {
        "delete" => Op::Delete,
        "put" => {
            let bytes: u64 = words.next()?.parse().ok()?;
            let parts = match words.next()? {
                "auto" => PartLayout::Auto,
                sizes => PartLayout::Sizes(
                    sizes
                        .split(',')
                        .map(|s| s.parse().ok())
                        .collect::<Option<Vec<u64>>>()?,
                ),
            };
            if let PartLayout::Sizes(sizes) = &parts {
                if sizes.iter().try_fold(0u64, |sum, &s| sum.checked_add(s)) != Some(bytes) {
                    return None;
                }
            }
            Op::Put { bytes, parts }
        }
        _ => return None,
    };
    words.next().is_none().then_some(op)
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

/// Reads the markers, pins the entries their puts name, drops put markers without an entry.
/// Delete markers are kept whatever the disk holds.
pub(super) fn load_markers(dir: &Path, disk: &DiskTier) -> io::Result<Vec<(Key, SystemTime, Op)>> {
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
            Some((key, enqueued, Op::Delete)) => found.push((key, enqueued, Op::Delete)),
            Some((key, enqueued, op)) if disk.pin(&key) => {
                found.push((key, enqueued, op));
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
        let text = marker_text(&key, at, &Op::put(42));
        assert_eq!(parse_marker(&text), Some((key, at, Op::put(42))));
        let object = Key::object(Namespace::new("runner-cache").unwrap(), "a/b c").unwrap();
        let parts = Op::Put {
            bytes: 12,
            parts: PartLayout::Sizes(vec![5, 5, 2]),
        };
        for op in [Op::put(0), Op::Delete, parts] {
            assert_eq!(
                parse_marker(&marker_text(&object, at, &op)),
                Some((object.clone(), at, op))
            );
        }
        assert_eq!(parse_marker("garbage"), None);
        let bad_parts = "bcp-upload v2\ngradle\n00ff\n1\nput 12 5,5\n";
        assert_eq!(parse_marker(bad_parts), None, "parts must add up");
        assert_eq!(parse_marker("bcp-upload v2\ngradle\n00ff\n1\nmove\n"), None);
    }

    #[test]
    fn version_1_markers_are_uploads() {
        let text = "bcp-upload v1\ngradle\n00ff\n1700000000123\n42\n";
        let (key, at, op) = parse_marker(text).unwrap();
        assert_eq!(key, Key::gradle("00ff").unwrap());
        assert_eq!(at, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert_eq!(op, Op::put(42));
    }
}
