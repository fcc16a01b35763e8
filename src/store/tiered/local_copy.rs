//! The local tiers alone, for a front that asks someone else (the real S3, with the client's
//! own signature) whether a copy may be served: read or describe a key's local copy without
//! ever going to the backend, write a copy that becomes visible only when the caller commits
//! it, and drop one. Nothing here reaches the backend.

use super::TieredStore;
use crate::store::backend::{Backend, GetOptions};
use crate::store::disk::spool::{EntryMeta, Spool};
use crate::store::disk::{Commit, FillTicket};
use crate::store::{Key, ObjectMeta, Read, StoreError};

impl<B: Backend> TieredStore<B> {
    /// The local copy's metadata (memory, then disk); `None` when this node has none.
    pub async fn local_copy_meta(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        self.local_meta(key).await
    }

    /// A read of the local copy alone, with the range and preconditions applied; `None`
    /// when this node has no copy.
    pub async fn read_local_copy(
        &self,
        key: &Key,
        options: &GetOptions,
    ) -> Result<Option<Read>, StoreError> {
        self.local_read(key, options).await
    }

    /// Registers a copy about to be asked for: take it before the request goes out, so that
    /// whatever happens to the key after the answer wins over the copy (see [`Commit::Fill`]).
    pub fn begin_copy(&self) -> FillTicket {
        self.disk.begin_fill()
    }

    /// Starts a copy of a client's upload as it passes, of the `len` bytes it declares: its
    /// space is taken as the bytes arrive, nothing is promised on the client's word, and the
    /// copy (not the upload) is given up when they don't fit. Otherwise as
    /// [`TieredStore::start_copy`].
    pub async fn start_upload_copy(
        &self,
        key: &Key,
        len: u64,
        meta: EntryMeta,
    ) -> Result<Spool, StoreError> {
        self.disk.spool_as_bytes_arrive(key, len, meta).await
    }

    /// Starts writing a copy of exactly `len` bytes; nothing is visible until
    /// [`TieredStore::commit_copy`], and a spool dropped before that is discarded.
    pub async fn start_copy(
        &self,
        key: &Key,
        len: u64,
        meta: EntryMeta,
    ) -> Result<Spool, StoreError> {
        self.disk.spool_with(key, len, meta).await
    }

    /// Makes a complete copy visible, unless the key changed since `ticket` was taken.
    /// Returns the stored metadata when it was committed.
    pub async fn commit_copy(
        &self,
        spool: Spool,
        ticket: &FillTicket,
    ) -> Result<Option<ObjectMeta>, StoreError> {
        let (header, version) = self
            .local
            .commit(spool.seal().await?, Commit::Fill(ticket.order()))
            .await?;
        Ok(version.map(|_| header.meta()))
    }

    /// Drops the local copy (S3 said the object is gone or was deleted), unless the key
    /// changed since `ticket` was taken. Returns whether a disk copy was removed.
    pub async fn drop_local_copy(
        &self,
        key: &Key,
        ticket: &FillTicket,
    ) -> Result<bool, StoreError> {
        self.disk.discard_unchanged(key, ticket.order()).await
    }
}
