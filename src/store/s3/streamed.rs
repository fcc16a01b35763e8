//! Write-through uploads that start while the client's body is still arriving: a multipart
//! upload whose parts go up as soon as the spool file holds them, so that S3 receives the body
//! at the pace the client sends it instead of after it, and the client's PUT is answered about
//! one part's upload after its last byte.
//!
//! The object's metadata is given when the upload is created, before the body's CRC32C is
//! known, so the CRC cannot be our user metadata as on other uploads. The upload carries it as
//! S3's own full-object CRC32C instead (`x-amz-checksum-type: FULL_OBJECT`): every part is sent
//! with its CRC32C, and the completion with the whole body's, which S3 checks against the parts
//! it received and keeps; a read-through reads it back as the object's CRC (`read.rs`). A
//! server that refuses such an upload is remembered, and write-through bodies are then uploaded
//! whole once received, as before.
//!
//! Nothing is visible until [`S3Streamed::finish`] completes the upload, which the store does
//! under the key's lock after the body was received and verified; an upload dropped before that
//! (the client's body cut short, a failed check, a refused condition) is aborted.

use std::sync::atomic::Ordering;

use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart};
use futures_util::{StreamExt, TryStreamExt};
use tokio::task::JoinHandle;

use super::upload::{content_headers, part_spans, user_metadata};
use super::S3Tier;
use crate::store::backend::{unquote, Growing, PartLayout, StreamedPut};
use crate::store::StoreError;

/// A multipart upload of a growing body (see the module's documentation).
pub struct S3Streamed {
    tier: S3Tier,
    bucket: String,
    object_key: String,
    upload_id: String,
    /// S3 completed the upload: nothing to abort when this is dropped.
    completed: bool,
    /// Sends each part once the file holds it; its parts in order, or the first failure.
    parts: Option<JoinHandle<Result<Vec<CompletedPart>, StoreError>>>,
}

impl S3Tier {
    /// Creates the multipart upload of `body` and starts sending its parts as they are written;
    /// `None` for a body of one part (a single PUT once received is cheaper) and when S3
    /// refuses or fails to create the upload (the caller then uploads the body once complete,
    /// where a failure is reported).
    pub(super) async fn begin_streamed(&self, body: Growing) -> Option<S3Streamed> {
        if self.inner.streaming_refused.load(Ordering::Relaxed) {
            return None;
        }
        let sizes = self.layout_of(body.len, &PartLayout::Auto).ok()?;
        if sizes.len() < 2 {
            return None;
        }
        let (bucket, object_key) = self.object_location(&body.key);
        let mut create = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(&object_key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_type(ChecksumType::FullObject);
        create = content_headers!(create, &body.attrs);
        for (name, value) in user_metadata(&body.attrs) {
            create = create.metadata(name, value);
        }
        let created = match self
            .write_call_answered("create_multipart", 0, create.send())
            .await
        {
            Ok(created) => created,
            Err((answered, e)) => {
                if answered {
                    // S3 said no (an older S3-compatible server without full-object
                    // checksums): do not ask again.
                    self.inner.streaming_refused.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, "S3 refused a multipart upload with a full-object CRC32C; write-through uploads will start once the body is received");
                }
                return None;
            }
        };
        let upload_id = created.upload_id()?.to_string();
        let parts = tokio::spawn(self.clone().send_parts(
            body,
            bucket.to_string(),
            object_key.clone(),
            upload_id.clone(),
            sizes,
        ));
        Some(S3Streamed {
            tier: self.clone(),
            bucket: bucket.to_string(),
            object_key,
            upload_id,
            completed: false,
            parts: Some(parts),
        })
    }

    /// Sends each part once `body.written` has passed its end, `s3.multipart_concurrency` at a
    /// time, each with its CRC32C (computed by the SDK as it sends). Fails as soon as a part
    /// fails, or when the body's receive ends short of a part.
    async fn send_parts(
        self,
        body: Growing,
        bucket: String,
        object_key: String,
        upload_id: String,
        sizes: Vec<u64>,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let (tier, body, bucket, object_key, upload_id) =
            (&self, &body, &bucket, &object_key, &upload_id);
        let mut done: Vec<CompletedPart> =
            futures_util::stream::iter(part_spans(&sizes).into_iter().enumerate())
                .map(|(index, (at, size))| async move {
                    let mut written = body.written.clone();
                    if written.wait_for(|&w| w >= at + size).await.is_err() {
                        return Err(StoreError::Remote(
                            "the body ended before the upload's part".into(),
                        ));
                    }
                    let number = index as i32 + 1;
                    let req = tier
                        .upload_part(bucket, object_key, upload_id, number, size)
                        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                        .body(super::file_body::region_body(
                            body.file.clone(),
                            body.offset + at,
                            size,
                        ));
                    let out = tier.write_call("upload_part", size, req.send()).await?;
                    Ok(CompletedPart::builder()
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_string))
                        .part_number(number)
                        .build())
                })
                .buffer_unordered(tier.inner.part_concurrency)
                .try_collect()
                .await?;
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }
}

impl StreamedPut for S3Streamed {
    async fn finish(mut self, crc32c: u32) -> Result<Option<String>, StoreError> {
        let parts = self.parts.take().expect("finished once");
        let parts = parts
            .await
            .map_err(|e| StoreError::Remote(format!("S3 upload task: {e}")))??;
        let complete = self
            .tier
            .inner
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.object_key)
            .upload_id(&self.upload_id)
            .checksum_type(ChecksumType::FullObject)
            .checksum_crc32_c(crate::checksum::to_base64(&crc32c.to_be_bytes()))
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        let out = self
            .tier
            .write_call("complete_multipart", 0, complete.send())
            .await?;
        self.completed = true;
        Ok(out.e_tag().map(|e| unquote(e).to_string()))
    }
}

impl Drop for S3Streamed {
    /// An upload not completed is aborted (in the background: dropping cannot wait), so its
    /// parts do not linger until the bucket's lifecycle rule removes them.
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            parts.abort();
        }
        if self.completed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (tier, bucket, object_key, upload_id) = (
            self.tier.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.object_key),
            std::mem::take(&mut self.upload_id),
        );
        runtime.spawn(async move {
            tier.abort_upload(&bucket, &object_key, &upload_id).await;
        });
    }
}
