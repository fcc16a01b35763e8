//! What the tiers' unit tests share: local tiers in a temp dir over the fake backend.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use super::backend::fake::FakeBackend;
use super::disk::{DiskSettings, DiskTier};
use super::memory::MemoryTier;
use super::{ByteStream, Key, Object};
use crate::metrics::Metrics;

/// A memory tier, a disk tier in its own temp dir, metrics and a fake backend.
pub struct Local {
    pub dir: tempfile::TempDir,
    pub memory: MemoryTier,
    pub disk: DiskTier,
    pub metrics: Arc<Metrics>,
    pub backend: FakeBackend,
}

impl Local {
    pub async fn new() -> Local {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::open(DiskSettings {
            dir: dir.path().join("data"),
            max_size: 1 << 30,
            verify_before_serve: 1 << 20,
            min_free: 0,
        })
        .await
        .unwrap();
        Local {
            dir,
            memory: MemoryTier::new(64 << 20, 64 << 10),
            disk,
            metrics: Arc::new(Metrics::new()),
            backend: FakeBackend::default(),
        }
    }
}

pub fn key(n: u32) -> Key {
    Key::gradle(&format!("{n:032x}")).unwrap()
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `data` as a body in chunks of 7000 bytes.
pub fn body(data: &[u8]) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(7000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

/// An object's whole body, or the error that ended it.
pub async fn read_body(object: Object) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = object.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Waits until `done` holds, failing the test after 10 s.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
