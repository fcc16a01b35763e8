//! Single-flight for cold GETs, after S3 authorized each waiter. While S3's 200 for a key is
//! being teed into a copy ([`super::fill`]), another GET of that key goes to S3 with
//! `If-None-Match: <the running fill's ETag>`: S3's 304 says the request may read the object
//! and that the object is the one being filled, and the waiter is then served from the fill's
//! spool file as it grows, instead of pulling the whole object from S3 again.
//!
//! A key's entry is made by the request that can fill it (a plain whole-object GET with no
//! copy), before its request goes out, so that GETs arriving together wait for its answer head
//! (at most the response timeout) rather than all going to S3 unconditionally. S3's answer
//! decides: a 200 with a length and an ETag turns the entry into a running fill; anything else
//! ends it, and each waiter then goes to S3 on its own. The entry is removed when its
//! [`Leader`] is dropped, whatever became of the request (cancel-safe).
//!
//! A waiter reads the spool file at explicit offsets up to what the fill has written, and
//! holds the body's last byte back until the fill has the whole body at its declared length:
//! a fill that fails ends the waiter's body with an error, never with a short body that looks
//! complete.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::store::disk::tail::{self, Look, Spooled};
use crate::store::{ByteStream, Key, ObjectMeta};

/// The fills in flight (and the requests about to start one), by key.
#[derive(Default)]
pub(super) struct Flights {
    entries: Mutex<HashMap<Key, Entry>>,
    next_id: AtomicU64,
}

struct Entry {
    id: u64,
    stage: watch::Receiver<Stage>,
}

/// Where a key's fill is.
#[derive(Clone)]
pub(super) enum Stage {
    /// The request that may fill is out; S3 has not answered.
    Asking,
    /// S3's 200 is being written to the spool file; `written` body bytes are in it.
    Filling { source: Arc<Source>, written: u64 },
    /// The whole body is in the spool file at its declared length (committing it is the
    /// store's business; the file stays readable whatever becomes of the commit).
    Complete { source: Arc<Source> },
    /// No fill: S3 answered otherwise, or the fill failed.
    Over,
}

/// A running fill's object, as its waiters read it.
pub(super) struct Source {
    /// The object's metadata as S3 gave it (length, ETag, date, attributes).
    pub meta: ObjectMeta,
    pub file: Arc<std::fs::File>,
    pub body_offset: u64,
    /// The SSE-KMS algorithm S3 said the object is stored with, if any (such a fill runs
    /// only where the entry caches SSE-KMS objects).
    pub kms: Option<String>,
}

impl Source {
    pub fn etag(&self) -> &str {
        self.meta.etag.as_deref().unwrap_or_default()
    }
}

/// What a GET does about a key's fill.
pub(super) enum Role {
    /// Sends its request as it would alone; a 200 it gets may start a fill.
    Alone,
    /// The request that starts the fill, if S3 answers 200.
    Lead(Leader),
    /// Asks S3 whether it may read the running fill's object, and reads it if so.
    Follow(Follower),
}

/// The right to fill a key, held from before the request goes out to the end of the fill.
/// Dropped without [`Leader::complete`], the fill is over for its waiters.
pub(super) struct Leader {
    flights: Arc<Flights>,
    key: Key,
    id: u64,
    stage: watch::Sender<Stage>,
}

/// A request that found a fill running.
pub(super) struct Follower {
    pub source: Arc<Source>,
    stage: watch::Receiver<Stage>,
}

impl Flights {
    /// The role of a GET of `key`. `may_lead`: it is a request whose 200 fills the key (no
    /// range). A request that finds another's request out waits up to `patience` for S3's
    /// answer to it.
    pub async fn role(self: &Arc<Self>, key: &Key, may_lead: bool, patience: Duration) -> Role {
        // Twice at most: a leader refused by S3 hands over to the next request.
        for _ in 0..2 {
            let mut stage = {
                let mut entries = self.lock();
                match entries.get(key) {
                    Some(entry) => entry.stage.clone(),
                    None if may_lead => return Role::Lead(self.lead_vacant(&mut entries, key)),
                    None => return Role::Alone,
                }
            };
            let current = {
                let waited = tokio::time::timeout(
                    patience,
                    stage.wait_for(|stage| !matches!(stage, Stage::Asking)),
                )
                .await;
                match waited {
                    Ok(Ok(current)) => Stage::clone(&current),
                    // The leader went away without a word, or S3 is slow for it: on our own.
                    Ok(Err(_)) | Err(_) => return Role::Alone,
                }
            };
            match current {
                Stage::Filling { source, .. } | Stage::Complete { source } => {
                    return Role::Follow(Follower { source, stage })
                }
                Stage::Asking | Stage::Over => continue,
            }
        }
        Role::Alone
    }

    /// The running fill of `key`, if S3 is already filling it (no waiting).
    pub fn running(&self, key: &Key) -> Option<Follower> {
        let stage = self.lock().get(key)?.stage.clone();
        let current = stage.borrow().clone();
        match current {
            Stage::Filling { source, .. } | Stage::Complete { source } => {
                Some(Follower { source, stage })
            }
            Stage::Asking | Stage::Over => None,
        }
    }

    /// A leader for `key` if nobody holds it (a fill starting without having asked first).
    pub fn lead_if_free(self: &Arc<Self>, key: &Key) -> Option<Leader> {
        let mut entries = self.lock();
        (!entries.contains_key(key)).then(|| self.lead_vacant(&mut entries, key))
    }

    fn lead_vacant(self: &Arc<Self>, entries: &mut HashMap<Key, Entry>, key: &Key) -> Leader {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(Stage::Asking);
        entries.insert(key.clone(), Entry { id, stage: rx });
        Leader {
            flights: self.clone(),
            key: key.clone(),
            id,
            stage: tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys have a request or fill registered (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Leader {
    /// S3 answered 200 and the spool file exists: waiters may follow.
    pub fn filling(&self, source: Arc<Source>) {
        self.stage
            .send_replace(Stage::Filling { source, written: 0 });
    }

    /// `written` body bytes are in the spool file.
    pub fn progress(&self, written: u64) {
        self.stage.send_modify(|stage| {
            if let Stage::Filling { written: at, .. } = stage {
                *at = written;
            }
        });
    }

    /// The whole body is in the spool file at its declared length.
    pub fn complete(self) {
        self.stage.send_modify(|stage| {
            if let Stage::Filling { source, .. } = stage {
                *stage = Stage::Complete {
                    source: source.clone(),
                };
            }
        });
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        {
            let mut entries = self.flights.lock();
            if entries
                .get(&self.key)
                .is_some_and(|entry| entry.id == self.id)
            {
                entries.remove(&self.key);
            }
        }
        self.stage.send_if_modified(|stage| match stage {
            Stage::Complete { .. } | Stage::Over => false,
            Stage::Asking | Stage::Filling { .. } => {
                *stage = Stage::Over;
                true
            }
        });
    }
}

impl Follower {
    /// Whether the fill already failed (a 304 for it is then of no use).
    pub fn failed(&self) -> bool {
        matches!(*self.stage.borrow(), Stage::Over)
    }

    /// `span` of the object, read from the spool file as the fill writes it (see
    /// [`crate::store::disk::tail`]).
    pub fn tail(self, span: Range<u64>, metrics: Arc<Metrics>) -> ByteStream {
        metrics.single_flight_waiters.inc();
        let spooled = Spooled {
            file: self.source.file.clone(),
            body_offset: self.source.body_offset,
            len: self.source.meta.len,
        };
        let progress = StageProgress {
            stage: self.stage,
            len: self.source.meta.len,
            _waiting: Waiting(metrics),
        };
        tail::tail(progress, spooled, span)
    }
}

/// Counts a waiter for as long as it reads.
struct Waiting(Arc<Metrics>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.single_flight_waiters.dec();
    }
}

/// A follower's view of the leader's fill.
struct StageProgress {
    stage: watch::Receiver<Stage>,
    len: u64,
    _waiting: Waiting,
}

impl tail::Progress for StageProgress {
    fn look(&mut self, _pos: u64) -> Look {
        match &*self.stage.borrow_and_update() {
            Stage::Complete { .. } => Look::Readable {
                upto: self.len,
                complete: true,
            },
            Stage::Filling { written, .. } => Look::Readable {
                upto: *written,
                complete: false,
            },
            Stage::Asking | Stage::Over => Look::Failed {
                upto: 0,
                why: "the S3 read this request waited on failed".into(),
            },
        }
    }

    async fn changed(&mut self) -> io::Result<()> {
        self.stage
            .changed()
            .await
            .map_err(|_| io::Error::other("the S3 read this request waited on ended"))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures_util::StreamExt;

    use super::*;
    use crate::store::Namespace;

    fn key() -> Key {
        Key::object(Namespace::new("fwd").unwrap(), "bucket/object").unwrap()
    }

    /// A spool-like file holding `data` after a 16-byte header.
    fn source(data: &[u8]) -> Arc<Source> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[0; 16]).unwrap();
        file.write_all(data).unwrap();
        let mut meta = ObjectMeta::new(data.len() as u64, std::time::SystemTime::now(), None);
        meta.etag = Some("0123abcd".into());
        Arc::new(Source {
            meta,
            file: Arc::new(file),
            body_offset: 16,
            kms: None,
        })
    }

    async fn collect(mut body: ByteStream) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn requests_arriving_together_wait_for_the_first_ones_answer() {
        let flights = Arc::new(Flights::default());
        let patience = Duration::from_secs(5);
        let Role::Lead(leader) = flights.role(&key(), true, patience).await else {
            panic!("the first request leads");
        };
        // Nothing to follow while the first request's answer is out: a ranged request waits.
        assert!(flights.running(&key()).is_none());
        let waiter = tokio::spawn({
            let flights = flights.clone();
            async move { flights.role(&key(), false, patience).await }
        });
        let data = b"the object's bytes".to_vec();
        leader.filling(source(&data));
        match waiter.await.unwrap() {
            Role::Follow(follower) => assert_eq!(follower.source.etag(), "0123abcd"),
            _ => panic!("the waiter follows the fill"),
        }
        assert_eq!(flights.len(), 1);
        // S3 refused the first request: the next one leads in its place, and the key is free
        // once every leader is gone.
        drop(leader);
        assert_eq!(flights.len(), 0);
        let Role::Lead(next) = flights.role(&key(), true, patience).await else {
            panic!("the next request leads");
        };
        let waiter = tokio::spawn({
            let flights = flights.clone();
            async move { flights.role(&key(), true, patience).await }
        });
        tokio::task::yield_now().await;
        drop(next);
        assert!(matches!(waiter.await.unwrap(), Role::Lead(_)));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_follower_reads_the_fill_as_it_grows_and_gets_its_end_only_when_complete() {
        let flights = Arc::new(Flights::default());
        let metrics = Arc::new(Metrics::new());
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let leader = flights.lead_if_free(&key()).unwrap();
        leader.filling(source(&data));
        leader.progress(400);
        let whole = flights
            .running(&key())
            .unwrap()
            .tail(0..1000, metrics.clone());
        let ranged = flights
            .running(&key())
            .unwrap()
            .tail(100..300, metrics.clone());
        let whole = tokio::spawn(collect(whole));
        // A range the fill has written is served without waiting for the rest.
        assert_eq!(collect(ranged).await.0, &data[100..300]);
        leader.progress(1000);
        tokio::task::yield_now().await;
        assert!(
            !whole.is_finished(),
            "the last byte waits for the fill to complete"
        );
        leader.complete();
        assert_eq!(whole.await.unwrap().0, data);
        assert_eq!(metrics.single_flight_waiters.get(), 0);

        // A fill that fails ends its followers' bodies with an error, short of the end.
        let leader = flights.lead_if_free(&key()).unwrap();
        leader.filling(source(&data));
        leader.progress(1000);
        let follower = flights.running(&key()).unwrap();
        let body = tokio::spawn(collect(follower.tail(0..1000, metrics.clone())));
        tokio::task::yield_now().await;
        drop(leader);
        let (got, error) = body.await.unwrap();
        assert!(got.len() < data.len() && data.starts_with(&got));
        assert!(error.is_some());
        assert!(flights.running(&key()).is_none());
    }
}
