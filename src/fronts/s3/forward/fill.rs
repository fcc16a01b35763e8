//! One body, two readers: S3's response streams to the client and into a local copy at the
//! same time. A task moves the chunks: each is written to the copy, then handed to the client
//! through a two-chunk channel, so memory stays bounded and the slower of the two sets the
//! pace. The copy is committed only when S3's body ended at its declared length, before the
//! client gets the last chunk; a client that goes away does not stop the fill (S3 authorized
//! these bytes, and the next request for them will find them here).
//!
//! The fill's [`Leader`], when it has one, tells other GETs of the key how far the copy got
//! (see [`super::flight`]): they read the same bytes from the spool file instead of from S3.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::flight::Leader;
use crate::store::backend::Backend;
use crate::store::disk::spool::Spool;
use crate::store::disk::FillTicket;
use crate::store::tiered::TieredStore;
use crate::store::{ByteStream, Key};

/// The client's side of `from_s3`, filling `copy` on the way.
pub(super) fn tee_into_copy<B: Backend>(
    store: Arc<TieredStore<B>>,
    key: Key,
    ticket: FillTicket,
    copy: Spool,
    leader: Option<Leader>,
    mut from_s3: ByteStream,
) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
    tokio::spawn(async move {
        // The leader goes with the copy: waiters can follow only while it is written.
        let mut copy = Some((copy, leader));
        let mut client = Some(tx);
        // Each chunk goes to the client one step behind the copy, and the last one only after
        // the commit: a client that has the whole body finds the copy on its next request.
        let mut held: Option<Bytes> = None;
        while let Some(item) = from_s3.next().await {
            let chunk = match item {
                Ok(chunk) => chunk,
                Err(e) => {
                    // The copy is dropped with the task: an aborted write.
                    if let Some(tx) = &client {
                        let _ = tx.send(Err(e)).await;
                    }
                    return;
                }
            };
            if let Some((spool, leader)) = copy.as_mut() {
                match spool.write(chunk.clone()).await {
                    Ok(()) => {
                        if let Some(leader) = leader {
                            leader.progress(spool.written());
                        }
                    }
                    Err(e) => {
                        tracing::debug!(key = %key, error = %e, "S3 forward: no local copy of this object");
                        copy = None;
                    }
                }
            }
            let previous = held.replace(chunk);
            if let (Some(tx), Some(previous)) = (&client, previous) {
                if tx.send(Ok(previous)).await.is_err() {
                    client = None;
                }
            }
            if copy.is_none() && client.is_none() {
                return;
            }
        }
        if let Some((spool, leader)) = copy {
            // S3's body ended; whether at its declared length, the spool knows.
            if let Some(leader) = leader.filter(|_| spool.written() == spool.len()) {
                leader.complete();
            }
            if let Err(e) = store.commit_copy(spool, &ticket).await {
                tracing::debug!(key = %key, error = %e, "S3 forward: local copy not committed");
            }
        }
        if let (Some(tx), Some(last)) = (&client, held) {
            let _ = tx.send(Ok(last)).await;
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
