//! The put engine: a file region becomes one PUT, or a multipart upload whose parts go up a few
//! at a time and which is aborted if any step fails. Every part is a range of the upload's open
//! file, read again at its offsets for each attempt, so nothing is buffered, every request can
//! be retried, and every attempt sends the same bytes.

use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures_util::{StreamExt, TryStreamExt};

use super::file_body::region_body;
use super::{checksum_meta_name, S3Tier, CRC32C_META, MIN_PART_SIZE, UPLOAD_BASE_DEADLINE};
use crate::store::backend::{unquote, PartLayout, Upload};
use crate::store::{ObjectAttrs, StoreError};

/// S3's limit on parts per multipart upload.
const MAX_PARTS: u64 = 10_000;

/// Where each part of `sizes` starts in the body, and its size.
pub(super) fn part_spans(sizes: &[u64]) -> Vec<(u64, u64)> {
    let mut at = 0u64;
    sizes
        .iter()
        .map(|&size| {
            at += size;
            (at - size, size)
        })
        .collect()
}

/// The object's user metadata: the client's, and our CRC32C.
fn metadata(upload: &Upload) -> Vec<(String, String)> {
    let mut all = user_metadata(&upload.attrs);
    if let Some(crc) = upload.crc32c {
        all.push((CRC32C_META.to_string(), format!("{crc:08x}")));
    }
    all
}

/// The user metadata of an object with `attrs`: the client's, and the checksums it sent.
pub(super) fn user_metadata(attrs: &ObjectAttrs) -> Vec<(String, String)> {
    let mut all = attrs.user.clone();
    for (header, value) in &attrs.kept {
        if let Some(name) = checksum_meta_name(header) {
            all.push((name, value.clone()));
        }
    }
    all
}

/// Sets the content headers of `attrs` on a PutObject or CreateMultipartUpload builder (two
/// SDK types with the same setters).
macro_rules! content_headers {
    ($builder:expr, $attrs:expr) => {{
        let attrs: &$crate::store::ObjectAttrs = $attrs;
        $builder
            .set_content_type(attrs.content_type.clone())
            .set_content_encoding(attrs.content_encoding.clone())
            .set_cache_control(attrs.cache_control.clone())
            .set_content_disposition(attrs.kept("content-disposition").map(str::to_string))
            .set_content_language(attrs.kept("content-language").map(str::to_string))
            .set_expires($crate::store::s3::upload::expires(attrs))
    }};
}
pub(super) use content_headers;

/// The object's `Expires` as the SDK sends it: an HTTP date (one that does not parse as one is
/// not sent; S3 would not keep it as a date either).
pub(super) fn expires(attrs: &ObjectAttrs) -> Option<aws_smithy_types::DateTime> {
    let text = attrs.kept("expires")?;
    aws_smithy_types::DateTime::from_str(text, aws_smithy_types::date_time::Format::HttpDate).ok()
}

impl S3Tier {
    /// The part sizes of an upload: the asked ones, or the configured part size raised as
    /// needed to stay within S3's 10,000 parts.
    pub(super) fn layout_of(&self, len: u64, parts: &PartLayout) -> Result<Vec<u64>, StoreError> {
        let sizes = match parts {
            PartLayout::Auto => {
                let part_size = self
                    .inner
                    .part_size
                    .max(len.div_ceil(MAX_PARTS))
                    .max(MIN_PART_SIZE);
                PartLayout::uniform(len, part_size)
            }
            PartLayout::Sizes(sizes) => sizes.clone(),
        };
        if sizes.iter().sum::<u64>() != len || sizes.len() as u64 > MAX_PARTS {
            return Err(StoreError::Remote(format!(
                "S3 put: {} parts do not lay out {len} bytes",
                sizes.len(),
            )));
        }
        Ok(sizes)
    }

    /// A part of the upload's file region, as a body the SDK can start again for a retry.
    fn part_body(upload: &Upload, at: u64, len: u64) -> SdkStream {
        region_body(upload.file.clone(), upload.offset + at, len)
    }

    /// Uploads the region, as one PUT when it is laid out as one part, else as a multipart
    /// upload with the layout's boundaries. Returns S3's ETag for the object.
    pub(super) async fn upload(&self, upload: &Upload) -> Result<Option<String>, StoreError> {
        let sizes = self.layout_of(upload.len, &upload.parts)?;
        let (bucket, object_key) = self.object_location(&upload.key);
        let client = &self.inner.client;
        let attrs = &upload.attrs;
        if sizes.len() == 1 {
            let req = client
                .put_object()
                .bucket(bucket)
                .key(&object_key)
                .content_length(upload.len as i64)
                .body(Self::part_body(upload, 0, upload.len));
            let mut req = content_headers!(req, attrs);
            for (name, value) in metadata(upload) {
                req = req.metadata(name, value);
            }
            let out = self.write_call("put", upload.len, req.send()).await?;
            return Ok(out.e_tag().map(|e| unquote(e).to_string()));
        }

        let create = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(&object_key);
        let mut create = content_headers!(create, attrs);
        for (name, value) in metadata(upload) {
            create = create.metadata(name, value);
        }
        let created = self
            .write_call("create_multipart", 0, create.send())
            .await?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::Remote("S3 create_multipart: no upload id".into()))?
            .to_string();
        let result = self
            .upload_parts(upload, bucket, &object_key, &upload_id, &sizes)
            .await;
        if result.is_err() {
            self.abort_upload(bucket, &object_key, &upload_id).await;
        }
        result
    }

    /// The UploadPart request of part `number` (from 1), `size` bytes, without its body.
    pub(super) fn upload_part(
        &self,
        bucket: &str,
        object_key: &str,
        upload_id: &str,
        number: i32,
        size: u64,
    ) -> aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder {
        self.inner
            .client
            .upload_part()
            .bucket(bucket)
            .key(object_key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(size as i64)
    }

    /// Aborts a multipart upload. Best effort: an upload left behind only costs storage until
    /// the bucket's lifecycle rule for incomplete multipart uploads removes it.
    pub(super) async fn abort_upload(&self, bucket: &str, object_key: &str, upload_id: &str) {
        let abort = self
            .inner
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(object_key)
            .upload_id(upload_id)
            .send();
        let started = Instant::now();
        let result = tokio::time::timeout(UPLOAD_BASE_DEADLINE, abort).await;
        let label = if matches!(result, Ok(Ok(_))) {
            "ok"
        } else {
            "error"
        };
        self.observe("abort_multipart", label, started);
    }

    /// Sends the parts, `s3.multipart_concurrency` at a time, and completes the upload. The
    /// first failing part fails the whole (the parts still running are dropped).
    async fn upload_parts(
        &self,
        upload: &Upload,
        bucket: &str,
        object_key: &str,
        upload_id: &str,
        sizes: &[u64],
    ) -> Result<Option<String>, StoreError> {
        let client = &self.inner.client;
        let mut done: Vec<CompletedPart> =
            futures_util::stream::iter(part_spans(sizes).into_iter().enumerate())
                .map(|(index, (at, size))| async move {
                    let number = index as i32 + 1;
                    let req = self
                        .upload_part(bucket, object_key, upload_id, number, size)
                        .body(Self::part_body(upload, at, size));
                    let out = self.write_call("upload_part", size, req.send()).await?;
                    Ok::<_, StoreError>(
                        CompletedPart::builder()
                            .set_e_tag(out.e_tag().map(str::to_string))
                            .part_number(number)
                            .build(),
                    )
                })
                .buffer_unordered(self.inner.part_concurrency)
                .try_collect()
                .await?;
        done.sort_by_key(|p| p.part_number());
        let complete = client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(object_key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            );
        let out = self
            .write_call("complete_multipart", 0, complete.send())
            .await?;
        Ok(out.e_tag().map(|e| unquote(e).to_string()))
    }
}
