//! The uploader tasks: each takes the next due key, applies its op (uploads its entry file, or
//! deletes the object), and reports the outcome to the queue, which retires the key or
//! schedules its retry.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Inner, Op};
use crate::store::backend::{Backend, PartLayout};
use crate::store::disk::Version;
use crate::store::{Key, StoreError};

/// First retry delay; doubled per failed attempt up to `s3.retry_max_backoff`.
const BASE_BACKOFF: Duration = Duration::from_millis(500);

impl<B: Backend> Inner<B> {
    /// Applies `op` to the backend. A put uploads the entry's current version, every part and
    /// retry from the one file handle opened for it; `Ok` means the backend has it (or there is
    /// nothing left to upload: the entry is gone), with the version it got, which alone may be
    /// unpinned now.
    async fn apply(&self, key: &Key, op: &Op) -> Result<Option<Version>, StoreError> {
        let parts = match op {
            Op::Delete => return self.remote.delete(key).await.map(|_| None),
            Op::Put { parts, .. } => parts,
        };
        let Some(loc) = self.disk.locate(key).await? else {
            tracing::info!(key = %key, "queued entry no longer on disk; nothing to upload");
            return Ok(None);
        };
        let mut upload = loc.upload(PartLayout::Auto);
        match parts {
            PartLayout::Sizes(sizes) if sizes.iter().sum::<u64>() == upload.len => {
                upload.parts = parts.clone();
            }
            PartLayout::Sizes(_) => {
                // Never retried into eternity: the object's ETag will differ from the one its
                // client was given, but the bytes are the client's.
                tracing::warn!(key = %key, "queued part layout does not match the entry; uploading with the default layout");
            }
            PartLayout::Auto => {}
        }
        self.remote.put(&upload).await.map(|_| Some(loc.version))
    }
}

pub(super) async fn uploader<B: Backend>(inner: Arc<Inner<B>>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        // Register interest before looking, so an enqueue between the look and the wait
        // still wakes this task.
        let notified = inner.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match inner.take_due() {
            Ok((key, generation, op)) => {
                let uploaded = tokio::select! {
                    result = inner.apply(&key, &op) => result,
                    // Shutdown: abandon the attempt; the marker keeps the entry queued.
                    _ = stop.wait_for(|s| *s) => return,
                };
                if let Err(e) = &uploaded {
                    inner.metrics.upload_failures.inc();
                    let what = match op {
                        Op::Put { .. } => "upload",
                        Op::Delete => "delete",
                    };
                    tracing::warn!(key = %key, error = %e, op = what, "write-back op failed; will retry");
                }
                let done = inner.clone();
                let outcome = uploaded.ok();
                let _ = tokio::task::spawn_blocking(move || done.finish(&key, generation, outcome))
                    .await;
                // Another uploader may be idle while more items are due.
                inner.wake.notify_one();
            }
            Err(until) => {
                let sleep = async {
                    match until {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = sleep => {}
                    _ = notified => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// Delay before retry number `attempt` (1-based): doubling from 500 ms, capped at `max`, with
/// "equal jitter" (between half and all of it) so that uploads failing together spread out.
pub fn backoff(attempt: u32, max: Duration, jitter: f64) -> Duration {
    let exp = BASE_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let full = exp.min(max);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, max, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(2, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, max, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(30, max, 1.0), max);
        assert_eq!(backoff(30, max, 0.0), max / 2);
        assert_eq!(backoff(u32::MAX, max, 1.0), max);
    }
}
