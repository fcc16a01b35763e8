//! The S3 tier: the bucket every node shares, behind each node's memory and disk.
//!
//! # Key layout
//!
//! An entry of namespace `ns` and name `name` is the object `<s3.prefix><ns>/<name>` in
//! `s3.bucket` (a non-empty prefix always ends in `/`). Gradle entries are therefore
//! `<prefix>gradle/<hex key>`, e.g. `ci-cache/gradle/0123abcd…` with `prefix = "ci-cache"`.
//! Objects this daemon uploads carry the body's CRC32C as user metadata `x-amz-meta-crc32c`
//! (8 lowercase hex digits); a read-through verifies it when present, and always verifies the
//! length. Objects written by anything else are served with the length check alone.
//!
//! # Failure handling
//!
//! Reads wait at most `s3.read_timeout` for response headers and go through a circuit
//! [`breaker`]: while S3 is failing, reads are refused at once ([`StoreError::Unavailable`]) and
//! the caller answers a miss. A body that fails or stalls after the headers ends the stream with
//! an error, so nothing downstream mistakes it for a complete object.
//!
//! Uploads read from the entry file on disk (file-backed bodies the SDK can retry), with
//! multipart above `s3.multipart_part_size` (aborted on failure). A body given as a stream
//! ([`Store::put`]) is buffered one part at a time, which is bounded by the part size.

pub mod breaker;
pub mod client;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::byte_stream::Length;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::disk::EntryLocation;
use super::{ByteStream, Key, Object, ObjectMeta, Store, StoreError, Tier};
use crate::config::S3Config;
use crate::metrics::Metrics;
use breaker::Breaker;

type SdkError<E> = aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>;

/// The user metadata key (without `x-amz-meta-`) that carries our CRC32C.
pub const CRC32C_META: &str = "crc32c";
/// S3's limit on parts per multipart upload.
const MAX_PARTS: u64 = 10_000;
/// Smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Uploads get this long, plus the time their bytes take at [`UPLOAD_FLOOR_RATE`], before they
/// are abandoned and retried: enough for a slow link, finite for a hung server.
const UPLOAD_BASE_DEADLINE: Duration = Duration::from_secs(60);
const UPLOAD_FLOOR_RATE: u64 = 1024 * 1024;

/// A handle to the S3 tier; cheap to clone.
#[derive(Clone)]
pub struct S3Tier {
    inner: Arc<Inner>,
}

struct Inner {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    read_timeout: Duration,
    part_size: u64,
    breaker: Breaker,
    metrics: Arc<Metrics>,
}

impl S3Tier {
    /// A tier over `client` (see [`client::build`]; tests may pass their own).
    pub fn new(client: aws_sdk_s3::Client, config: &S3Config, metrics: Arc<Metrics>) -> S3Tier {
        let gauge = metrics.s3_up.clone();
        let breaker = Breaker::new(
            config.breaker_failures,
            config.breaker_cooldown,
            Some(Box::new(move |up| gauge.set(i64::from(up)))),
        );
        S3Tier {
            inner: Arc::new(Inner {
                client,
                bucket: config.bucket.clone(),
                prefix: normalize_prefix(&config.prefix),
                read_timeout: config.read_timeout,
                part_size: config.multipart_part_size.as_u64().max(MIN_PART_SIZE),
                breaker,
                metrics,
            }),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The object key of an entry: `<prefix><namespace>/<name>`.
    pub fn object_key(&self, key: &Key) -> String {
        format!(
            "{}{}/{}",
            self.inner.prefix,
            key.namespace().as_str(),
            key.name()
        )
    }

    pub fn breaker(&self) -> &Breaker {
        &self.inner.breaker
    }

    /// Bodies above this size are uploaded in parts.
    pub fn part_size(&self) -> u64 {
        self.inner.part_size
    }

    fn observe(&self, op: &str, result: &str, started: Instant) {
        let m = &self.inner.metrics;
        m.s3_requests.with_label_values(&[op, result]).inc();
        m.s3_duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }

    fn skipped(&self, op: &str) -> StoreError {
        self.inner
            .metrics
            .s3_requests
            .with_label_values(&[op, "skipped"])
            .inc();
        StoreError::Unavailable
    }

    /// Awaits an S3 call's response headers within `s3.read_timeout`, reporting the outcome to
    /// the breaker and the metrics. `Ok(None)`: the object does not exist.
    async fn read_call<T, E>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<Option<T>, StoreError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let Some(permit) = self.inner.breaker.try_acquire() else {
            return Err(self.skipped(op));
        };
        let started = Instant::now();
        match tokio::time::timeout(self.inner.read_timeout, call).await {
            Err(_) => {
                permit.failure();
                self.observe(op, "timeout", started);
                Err(StoreError::Remote(format!(
                    "S3 {op}: no response within {:?}",
                    self.inner.read_timeout
                )))
            }
            Ok(Ok(out)) => {
                permit.success();
                self.observe(op, "ok", started);
                Ok(Some(out))
            }
            Ok(Err(e)) if status_of(&e) == Some(404) => {
                permit.success();
                self.observe(op, "miss", started);
                Ok(None)
            }
            Ok(Err(e)) => {
                // A 4xx other than 404 (403, 400) is S3 answering: don't count it against its
                // availability, but do report it.
                if status_of(&e).is_some_and(|s| (400..500).contains(&s)) {
                    permit.success();
                } else {
                    permit.failure();
                }
                self.observe(op, "error", started);
                Err(StoreError::Remote(format!(
                    "S3 {op}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )))
            }
        }
    }

    /// Uploads an entry from its file on disk (single PUT or multipart by size). The SDK can
    /// retry file-backed bodies, since it reopens the file range for every attempt.
    pub async fn upload_entry(&self, entry: &EntryLocation) -> Result<(), StoreError> {
        let mut source = Source::File {
            path: &entry.path,
            offset: entry.body_offset,
        };
        let header = &entry.header;
        self.upload(
            &header.key,
            header.body_len,
            Some(header.crc32c),
            &mut source,
        )
        .await
    }

    /// The part size for a body of `len` bytes: the configured one, raised as needed to stay
    /// within S3's 10,000 parts.
    fn part_size_for(&self, len: u64) -> u64 {
        self.inner
            .part_size
            .max(len.div_ceil(MAX_PARTS))
            .max(MIN_PART_SIZE)
    }

    /// Uploads `len` bytes from `source`, as one PUT when they fit in one part, else as a
    /// multipart upload that is aborted if any step fails.
    async fn upload(
        &self,
        key: &Key,
        len: u64,
        crc32c: Option<u32>,
        source: &mut Source<'_>,
    ) -> Result<(), StoreError> {
        let object_key = self.object_key(key);
        let bucket = &self.inner.bucket;
        let client = &self.inner.client;
        let meta = crc32c.map(|crc| format!("{crc:08x}"));
        let part_size = self.part_size_for(len);
        if len <= part_size {
            let body = source.part(0, len).await?;
            let mut req = client
                .put_object()
                .bucket(bucket)
                .key(&object_key)
                .content_length(len as i64)
                .body(body);
            if let Some(crc) = &meta {
                req = req.metadata(CRC32C_META, crc);
            }
            return self.upload_call("put", len, req.send()).await.map(|_| ());
        }

        let mut create = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(&object_key);
        if let Some(crc) = &meta {
            create = create.metadata(CRC32C_META, crc);
        }
        let created = self
            .upload_call("create_multipart", 0, create.send())
            .await?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::Remote("S3 create_multipart: no upload id".into()))?
            .to_string();
        let parts = async {
            let mut done = Vec::new();
            let mut offset = 0u64;
            let mut number = 1i32;
            while offset < len {
                let size = part_size.min(len - offset);
                let body = source.part(offset, size).await?;
                let req = client
                    .upload_part()
                    .bucket(bucket)
                    .key(&object_key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_length(size as i64)
                    .body(body);
                let out = self.upload_call("upload_part", size, req.send()).await?;
                done.push(
                    CompletedPart::builder()
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .part_number(number)
                        .build(),
                );
                offset += size;
                number += 1;
            }
            let complete = client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(&object_key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(done))
                        .build(),
                );
            self.upload_call("complete_multipart", 0, complete.send())
                .await
                .map(|_| ())
        }
        .await;
        if parts.is_err() {
            // Best effort: an upload left behind only costs storage until the bucket's
            // lifecycle rule for incomplete multipart uploads removes it.
            let abort = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&object_key)
                .upload_id(&upload_id)
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
        parts
    }

    /// Runs one upload request with a deadline that grows with its size, reporting to the
    /// breaker (uploads don't ask it first: they have their own backoff) and the metrics.
    async fn upload_call<T, E>(
        &self,
        op: &'static str,
        bytes: u64,
        call: impl std::future::Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<T, StoreError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let deadline = UPLOAD_BASE_DEADLINE + Duration::from_secs(bytes / UPLOAD_FLOOR_RATE);
        let started = Instant::now();
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(out)) => {
                self.inner.breaker.record(true);
                self.observe(op, "ok", started);
                self.inner.metrics.s3_bytes_sent.inc_by(bytes);
                Ok(out)
            }
            Ok(Err(e)) => {
                let answered = status_of(&e).is_some_and(|s| (400..500).contains(&s));
                self.inner.breaker.record(answered);
                self.observe(op, "error", started);
                Err(StoreError::Remote(format!(
                    "S3 {op}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )))
            }
            Err(_) => {
                self.inner.breaker.record(false);
                self.observe(op, "timeout", started);
                Err(StoreError::Remote(format!(
                    "S3 {op}: not done within {deadline:?}"
                )))
            }
        }
    }
}

/// Where the parts of an upload come from.
enum Source<'a> {
    /// An entry file: every part is a file range the SDK can reopen for a retry.
    File { path: &'a Path, offset: u64 },
    /// A body already in memory.
    Buffered(Bytes),
    /// A stream, read one part at a time.
    Stream(&'a mut PartReader),
}

impl Source<'_> {
    async fn part(&mut self, offset: u64, len: u64) -> Result<SdkStream, StoreError> {
        match self {
            Source::File { path, offset: base } => SdkStream::read_from()
                .path(*path)
                .offset(*base + offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| StoreError::Io(io::Error::other(e))),
            Source::Buffered(data) => {
                let end = (offset + len) as usize;
                Ok(SdkStream::from(data.slice(offset as usize..end)))
            }
            Source::Stream(reader) => Ok(SdkStream::from(reader.read(len).await?)),
        }
    }
}

/// Reads a stream in parts of exact sizes, checking it against its declared length.
struct PartReader {
    body: ByteStream,
    /// The part of the last chunk that belongs to the next part.
    carry: Option<Bytes>,
    received: u64,
    declared: u64,
}

impl PartReader {
    async fn read(&mut self, len: u64) -> Result<Bytes, StoreError> {
        let mut buf = BytesMut::with_capacity(len as usize);
        while (buf.len() as u64) < len {
            let mut chunk = match self.carry.take() {
                Some(chunk) => chunk,
                None => match self.body.next().await {
                    Some(Ok(chunk)) => {
                        self.received += chunk.len() as u64;
                        if self.received > self.declared {
                            return Err(StoreError::LengthMismatch {
                                declared: self.declared,
                                received: self.received,
                            });
                        }
                        chunk
                    }
                    Some(Err(e)) => return Err(StoreError::BodyAborted(e)),
                    None => {
                        return Err(StoreError::LengthMismatch {
                            declared: self.declared,
                            received: self.received,
                        })
                    }
                },
            };
            let want = (len - buf.len() as u64) as usize;
            if chunk.len() > want {
                self.carry = Some(chunk.split_off(want));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    async fn expect_end(&mut self) -> Result<(), StoreError> {
        let extra = match self.carry.take() {
            Some(chunk) => chunk.len() as u64,
            None => match self.body.next().await {
                Some(Ok(chunk)) => chunk.len() as u64,
                Some(Err(e)) => return Err(StoreError::BodyAborted(e)),
                None => 0,
            },
        };
        if extra > 0 {
            return Err(StoreError::LengthMismatch {
                declared: self.declared,
                received: self.received + extra,
            });
        }
        Ok(())
    }
}

fn normalize_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

fn status_of<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn crc_from_meta(meta: Option<&std::collections::HashMap<String, String>>) -> Option<u32> {
    let value = meta?.get(CRC32C_META)?;
    u32::from_str_radix(value, 16).ok()
}

fn system_time(t: Option<&aws_smithy_types::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or_else(SystemTime::now)
}

/// The SDK body as our stream: every chunk is counted, and a chunk that takes longer than
/// `stall` fails the stream (the SDK's own stall protection only trips on near-zero throughput).
fn body_stream(body: SdkStream, stall: Duration, metrics: Arc<Metrics>) -> ByteStream {
    Box::pin(futures_util::stream::unfold(Some(body), move |state| {
        let metrics = metrics.clone();
        async move {
            let mut body = state?;
            match tokio::time::timeout(stall, body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    metrics.s3_bytes_received.inc_by(chunk.len() as u64);
                    Some((Ok(chunk), Some(body)))
                }
                Ok(Some(Err(e))) => Some((Err(io::Error::other(e)), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(io::Error::new(io::ErrorKind::TimedOut, "S3 body stalled")),
                    None,
                )),
            }
        }
    }))
}

impl Store for S3Tier {
    /// Starts reading an object: returns once S3 sent the response headers. The body fails
    /// with an error if S3 stops sending before the declared length.
    async fn get(&self, key: &Key) -> Result<Option<Object>, StoreError> {
        let call = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(self.object_key(key))
            .send();
        let Some(out) = self.read_call("get", call).await? else {
            return Ok(None);
        };
        let len = out
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .ok_or_else(|| StoreError::Remote("S3 get: no Content-Length".into()))?;
        let meta = ObjectMeta::new(
            len,
            system_time(out.last_modified()),
            crc_from_meta(out.metadata()),
        );
        let body = body_stream(
            out.body,
            self.inner.read_timeout,
            self.inner.metrics.clone(),
        );
        let tier = self.clone();
        // A body that fails after the headers is an S3 failure too.
        let body = body.inspect(move |item| {
            if item.is_err() {
                tier.inner.breaker.record(false);
            }
        });
        Ok(Some(Object {
            meta,
            body: Box::pin(body),
            tier: Tier::S3,
        }))
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        let call = self
            .inner
            .client
            .head_object()
            .bucket(&self.inner.bucket)
            .key(self.object_key(key))
            .send();
        Ok(self.read_call("head", call).await?.and_then(|out| {
            Some(ObjectMeta::new(
                u64::try_from(out.content_length()?).ok()?,
                system_time(out.last_modified()),
                crc_from_meta(out.metadata()),
            ))
        }))
    }

    /// Uploads a streamed body. Each part is buffered in memory before it is sent (bounded by
    /// the part size), which is what lets the SDK retry it; prefer [`S3Tier::upload_entry`].
    async fn put(&self, key: &Key, len: u64, body: ByteStream) -> Result<(), StoreError> {
        let mut reader = PartReader {
            body,
            carry: None,
            received: 0,
            declared: len,
        };
        if len <= self.part_size_for(len) {
            // Buffer first, so the CRC32C can go into the metadata of the one request.
            let data = reader.read(len).await?;
            reader.expect_end().await?;
            let crc = crc32c::crc32c(&data);
            return self
                .upload(key, len, Some(crc), &mut Source::Buffered(data))
                .await;
        }
        self.upload(key, len, None, &mut Source::Stream(&mut reader))
            .await?;
        reader.expect_end().await
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        let started = Instant::now();
        let result = self
            .inner
            .client
            .delete_object()
            .bucket(&self.inner.bucket)
            .key(self.object_key(key))
            .send()
            .await;
        match result {
            Ok(_) => {
                self.observe("delete", "ok", started);
                Ok(true)
            }
            Err(e) => {
                self.observe("delete", "error", started);
                Err(StoreError::Remote(format!(
                    "S3 delete: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn part_reader_splits_chunks_across_parts_and_checks_the_length() {
        let mut r = PartReader {
            body: chunks(&[b"abc", b"defgh", b"ij"]),
            carry: None,
            received: 0,
            declared: 10,
        };
        assert_eq!(&r.read(4).await.unwrap()[..], b"abcd");
        assert_eq!(&r.read(4).await.unwrap()[..], b"efgh");
        assert_eq!(&r.read(2).await.unwrap()[..], b"ij");
        r.expect_end().await.unwrap();

        let mut short = PartReader {
            body: chunks(&[b"abc"]),
            carry: None,
            received: 0,
            declared: 5,
        };
        assert!(matches!(
            short.read(5).await,
            Err(StoreError::LengthMismatch {
                declared: 5,
                received: 3
            })
        ));

        let mut long = PartReader {
            body: chunks(&[b"abc", b"de"]),
            carry: None,
            received: 0,
            declared: 3,
        };
        assert_eq!(&long.read(3).await.unwrap()[..], b"abc");
        assert!(long.expect_end().await.is_err());
    }

    #[test]
    fn prefixes_end_in_a_slash() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("ci"), "ci/");
        assert_eq!(normalize_prefix("ci/"), "ci/");
    }
}
