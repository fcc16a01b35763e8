//! The write paths of the tiered store: a client's put, a sealed entry (a multipart
//! completion's assembly), a delete, each as its namespace's write mode says (local, through,
//! back), ordered per key with the other writes that reach the backend.

use super::{Route, TieredStore};
use crate::store::backend::{Backend, Conditions, Growing, PartLayout, StreamedPut, Verdict};
use crate::store::disk::spool::Spool;
use crate::store::disk::{Commit, DiskTier, Sealed};
use crate::store::entry_file::EntryHeader;
use crate::store::multipart::{Completion, ListedChecksums, Multipart, MultipartError};
use crate::store::write_back::{Op, Slot, WriteBack};
use crate::store::{BodyLen, ByteStream, Key, ObjectMeta, PutOptions, Store, StoreError};

/// How a write-through sends its body: whole once received, laid out in `PartLayout`'s parts,
/// or by completing the upload begun while it was received.
pub(super) enum Sending<'a, B: Backend> {
    Whole(&'a B, PartLayout),
    Streamed(B::Streamed),
}

/// How a client's body goes up to the backend once received. An object with an ETag keeps in
/// S3 the one its client was given, the body's MD5: one PUT ([`PartLayout::single_put`]).
/// Other bodies (Gradle entries) are laid out by the backend.
fn upload_layout(options: &PutOptions, sealed: &Sealed) -> PartLayout {
    match options.etag {
        true => PartLayout::single_put(sealed.header().body_len),
        false => PartLayout::Auto,
    }
}

impl<B: Backend> TieredStore<B> {
    /// Commits a sealed entry (pinned when it waits for the backend) and keeps a small one's
    /// memory copy.
    pub(super) async fn commit_local(
        &self,
        sealed: Sealed,
        pinned: bool,
    ) -> Result<EntryHeader, StoreError> {
        let mode = if pinned {
            Commit::Pinned
        } else {
            Commit::Cached
        };
        Ok(self.local.commit(sealed, mode).await?.0)
    }

    /// A local-only write. Unordered with other writes of the key, unless it is conditional:
    /// then its check and its commit happen under the key's lock.
    async fn put_local(
        &self,
        key: &Key,
        sealed: Sealed,
        conditions: &Conditions,
    ) -> Result<ObjectMeta, StoreError> {
        if conditions.is_empty() {
            return Ok(self.commit_local(sealed, false).await?.meta());
        }
        let _ordered = self.key_locks.lock(key).await;
        self.check_write_conditions(key, conditions).await?;
        Ok(self.commit_local(sealed, false).await?.meta())
    }

    /// Write-through: the sealed entry is uploaded from its own file handle (or the upload
    /// begun while it was received is completed), and committed locally only once the backend
    /// has it, all under the key's lock. So two writes of a key become visible in S3 and on the
    /// node in the same order and each upload reads only its own body; a refused upload leaves
    /// no copy here (S3 still has what the node has).
    pub(super) async fn put_through(
        &self,
        key: &Key,
        sealed: Sealed,
        sending: Sending<'_, B>,
        conditions: &Conditions,
    ) -> Result<ObjectMeta, StoreError> {
        let _ordered = self.key_locks.lock(key).await;
        // A refused condition drops a streamed upload unfinished: it is aborted.
        self.check_write_conditions(key, conditions).await?;
        match sending {
            Sending::Whole(backend, parts) => backend.put(&sealed.upload(parts)).await?,
            Sending::Streamed(streamed) => streamed.finish(sealed.header().crc32c).await?,
        };
        let meta = sealed.header().meta();
        if let Err(e) = self.commit_local(sealed, false).await {
            // S3 has the new body: the older local copy must not be served in its place.
            tracing::warn!(key = %key, error = %e, "uploaded entry not kept locally; dropping the older copy");
            self.local.delete(key).await?;
        }
        Ok(meta)
    }

    /// Write-back: the commit and its marker happen under the key's lock, ordered with
    /// deletes. The caller took the slot before receiving the body, so that a full queue
    /// refuses the write before anything is stored.
    pub(super) async fn put_back(
        &self,
        queue: &WriteBack<B>,
        slot: Slot<B>,
        key: &Key,
        sealed: Sealed,
        parts: PartLayout,
        conditions: &Conditions,
    ) -> Result<ObjectMeta, StoreError> {
        let already_queued = !slot.is_new();
        let _ordered = self.key_locks.lock(key).await;
        self.check_write_conditions(key, conditions).await?;
        let (header, version) = self.local.commit(sealed, Commit::Pinned).await?;
        let op = Op::Put {
            bytes: header.body_len,
            parts,
        };
        if let Err(e) = queue.enqueue(slot, key, op).await {
            // Not acknowledged, so not owed to S3: let the entry be an ordinary one (unless an
            // earlier, acknowledged write of the key still waits for upload).
            if let (false, Some(version)) = (already_queued, version) {
                self.disk.unpin(key, version);
            }
            return Err(e);
        }
        Ok(header.meta())
    }

    /// Decides a conditional write (S3's `If-Match` / `If-None-Match` on a PUT or a multipart
    /// completion) on the key's object as this store sees it now: the local copy, else the
    /// backend's. Called under the key's lock, so that no other write of the key through this
    /// node comes between the check and the commit. Writes through other nodes are not
    /// ordered with it (S3 is not asked to decide).
    pub(super) async fn check_write_conditions(
        &self,
        key: &Key,
        conditions: &Conditions,
    ) -> Result<(), StoreError> {
        if conditions.is_empty() {
            return Ok(());
        }
        match self.head(key).await? {
            None if conditions.if_match.is_some() => Err(StoreError::NotFound),
            None => Ok(()),
            Some(current) => match conditions.evaluate(current.etag.as_deref(), current.modified) {
                Verdict::Serve => Ok(()),
                Verdict::NotModified | Verdict::PreconditionFailed => {
                    Err(StoreError::PreconditionFailed)
                }
            },
        }
    }

    /// Stores an entry whose body is already received in `spool` (a multipart upload's
    /// assembly), as [`Store::put`] would, except that an upload to the backend (now or from
    /// the queue) splits the body as `parts` says, so the backend's ETag is the one the client
    /// was given.
    pub async fn put_spooled(
        &self,
        key: &Key,
        spool: Spool,
        parts: PartLayout,
    ) -> Result<ObjectMeta, StoreError> {
        self.put_sealed(key, spool.seal().await?, parts, &Conditions::default())
            .await
    }

    /// Stores a sealed entry as the namespace's write mode says.
    pub(super) async fn put_sealed(
        &self,
        key: &Key,
        sealed: Sealed,
        parts: PartLayout,
        conditions: &Conditions,
    ) -> Result<ObjectMeta, StoreError> {
        match self.route(key.namespace()) {
            Route::Local => self.put_local(key, sealed, conditions).await,
            Route::Through(backend) => {
                let sending = Sending::Whole(backend, parts);
                self.put_through(key, sealed, sending, conditions).await
            }
            Route::Back(queue) => {
                let slot = queue.reserve(key)?;
                self.put_back(queue, slot, key, sealed, parts, conditions)
                    .await
            }
        }
    }

    /// Completes a multipart upload of `key` into one entry (see [`Multipart::complete`]),
    /// written as the namespace's write mode says: kept local, uploaded now, or queued; an
    /// upload to the backend keeps the client's part boundaries, so the backend's ETag is the
    /// one the client is given. A write-through that fails leaves no entry (the upload is
    /// completed all the same: its parts are gone). A conditional completion is checked
    /// before the parts are assembled (a failed check leaves the upload as it was) and again,
    /// deciding, at its commit.
    pub async fn complete_multipart(
        &self,
        uploads: &Multipart,
        key: &Key,
        upload_id: &str,
        listed: &[(u32, String)],
        checksums: &ListedChecksums,
        conditions: &Conditions,
    ) -> Result<ObjectMeta, MultipartError> {
        if !conditions.is_empty() && !uploads.is_completed(upload_id) {
            self.check_write_conditions(key, conditions).await?;
        }
        // A write-back's slot first: a full queue refuses before the parts are assembled.
        let slot = match self.route(key.namespace()) {
            Route::Back(queue) => Some((queue, queue.reserve(key)?)),
            Route::Local | Route::Through(_) => None,
        };
        let completed = match uploads.complete(key, upload_id, listed, checksums).await? {
            Completion::Assembled(completed) => *completed,
            Completion::Repeated(meta) => return Ok(meta),
        };
        let meta = completed.meta.clone();
        let stored = match slot {
            Some((queue, slot)) => {
                let (sealed, layout) = (completed.sealed, completed.layout);
                self.put_back(queue, slot, key, sealed, layout, conditions)
                    .await
            }
            None => {
                self.put_sealed(key, completed.sealed, completed.layout, conditions)
                    .await
            }
        };
        uploads.settle(upload_id, stored.is_ok().then(|| meta.clone()));
        stored?;
        Ok(meta)
    }

    pub(super) async fn put_routed(
        &self,
        key: &Key,
        len: BodyLen,
        body: ByteStream,
        options: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        let conditions = &options.conditions;
        match self.route(key.namespace()) {
            Route::Local => {
                let spool = self.disk.receive(key, len, body, options).await?;
                self.put_local(key, spool.seal().await?, conditions).await
            }
            Route::Through(backend) => {
                let spool = self.disk.spool_for(key, len, options).await?;
                // The upload starts as the body arrives, when the backend can take it so: a
                // body of declared length, all of whose metadata is known before it (a trailer
                // checksum is not).
                let (written, growing) = tokio::sync::watch::channel(0);
                let streamed = match len {
                    BodyLen::Exact(len) if options.trailer_checksum.is_none() => {
                        let body = Growing {
                            key: key.clone(),
                            file: spool.file(),
                            offset: spool.body_offset(),
                            len,
                            attrs: options.attrs.clone(),
                            written: growing,
                        };
                        backend.begin_put(body).await
                    }
                    _ => None,
                };
                let progress = streamed.is_some().then_some(&written);
                // On any failure from here on, a streamed upload is dropped, so aborted.
                let spool = DiskTier::receive_into(spool, len, body, options, progress).await?;
                drop(written);
                let sealed = spool.seal().await?;
                let sending = match streamed {
                    Some(streamed) => Sending::Streamed(streamed),
                    None => Sending::Whole(backend, upload_layout(options, &sealed)),
                };
                self.put_through(key, sealed, sending, conditions).await
            }
            Route::Back(queue) => {
                // The slot first: a full queue refuses the write before anything is stored
                // (the front reads the refused body to its end, so the client gets the answer).
                let slot = queue.reserve(key)?;
                let spool = self.disk.receive(key, len, body, options).await?;
                let sealed = spool.seal().await?;
                let parts = upload_layout(options, &sealed);
                self.put_back(queue, slot, key, sealed, parts, conditions)
                    .await
            }
        }
    }

    /// Per the namespace's write mode (see the module's documentation). `Ok(false)`: there was
    /// no local copy (the backend's answer to a delete does not say whether it had one).
    pub(super) async fn delete_routed(&self, key: &Key) -> Result<bool, StoreError> {
        match self.route(key.namespace()) {
            Route::Local => self.local.delete(key).await,
            Route::Through(backend) => {
                let _ordered = self.key_locks.lock(key).await;
                // The backend first: a fill that asked it before the delete is older than the
                // local delete below, and is dropped at its commit.
                let deleted = backend.delete(key).await;
                // Also when the backend failed: it may have deleted all the same (an answer
                // lost), and the next read asks it again.
                let local = self.local.delete(key).await;
                deleted?;
                local
            }
            Route::Back(queue) => {
                let _ordered = self.key_locks.lock(key).await;
                let slot = queue.reserve(key)?;
                // The marker first: a crash after it removes the local copy at the next start;
                // a crash before it leaves everything as it was, unacknowledged.
                queue.enqueue(slot, key, Op::Delete).await?;
                self.local.delete(key).await
            }
        }
    }
}
