//! Reads, listings and deletes: the [`Backend`](crate::store::backend::Backend) operations of
//! the S3 tier other than puts, as SDK calls and back.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::ChecksumMode;
use aws_smithy_types::DateTime;
use futures_util::StreamExt;

use super::{checksum_meta_name, S3Tier, CHECKSUM_META_PREFIX, CRC32C_META, LEGACY_CRC32C_META};
use crate::checksum::ChecksumAlgorithm;
use crate::metrics::Metrics;
use crate::store::backend::{unquote, Fetch, Fetched, GetOptions, ListRequest, Listed, Listing};
use crate::store::{
    ByteStream, Key, Namespace, ObjectAttrs, ObjectMeta, StoreError, CHECKSUM_HEADERS, KEPT_HEADERS,
};

/// The [`ObjectMeta`] of a GetObject or HeadObject answer (two SDK types with the same
/// accessors) for an object of `len` bytes stored under `key`.
macro_rules! object_meta {
    ($out:expr, $len:expr, $key:expr) => {
        Headers {
            len: $len,
            modified: $out.last_modified(),
            etag: $out.e_tag(),
            metadata: $out.metadata(),
            content_type: $out.content_type(),
            content_encoding: $out.content_encoding(),
            cache_control: $out.cache_control(),
            kept: [
                $out.content_disposition(),
                $out.content_language(),
                $out.expires_string(),
            ],
            legacy_crc: $key.namespace() == &Namespace::gradle(),
            full_crc32c: match $out.checksum_type() {
                Some(aws_sdk_s3::types::ChecksumType::FullObject) => $out.checksum_crc32_c(),
                _ => None,
            },
        }
        .meta()
    };
}

/// What S3 says about an object in the headers of a GET or HEAD.
struct Headers<'a> {
    len: u64,
    modified: Option<&'a DateTime>,
    etag: Option<&'a str>,
    metadata: Option<&'a HashMap<String, String>>,
    content_type: Option<&'a str>,
    /// Whether the first release's CRC name counts as ours (Gradle entries).
    legacy_crc: bool,
    content_encoding: Option<&'a str>,
    cache_control: Option<&'a str>,
    /// The values of [`KEPT_HEADERS`], in that order.
    kept: [Option<&'a str>; 3],
    /// S3's own CRC32C of the whole object (base64), where it keeps one: a streamed
    /// write-through's (see `streamed.rs`), which has no CRC in its metadata.
    full_crc32c: Option<&'a str>,
}

impl Headers<'_> {
    fn meta(&self) -> ObjectMeta {
        let ours = |name: &str| {
            name == CRC32C_META
                || name.starts_with(CHECKSUM_META_PREFIX)
                || (self.legacy_crc && name == LEGACY_CRC32C_META)
        };
        let crc32c = self
            .metadata
            .and_then(|m| {
                m.get(CRC32C_META)
                    .or_else(|| m.get(LEGACY_CRC32C_META).filter(|_| self.legacy_crc))
            })
            .and_then(|v| u32::from_str_radix(v, 16).ok())
            .or_else(|| {
                let raw = ChecksumAlgorithm::Crc32c.decode(self.full_crc32c?)?;
                Some(u32::from_be_bytes(raw.try_into().ok()?))
            });
        let mut meta = ObjectMeta::new(self.len, system_time(self.modified), crc32c);
        meta.etag = self.etag.map(|e| unquote(e).to_string());
        let mut user: Vec<(String, String)> = self
            .metadata
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .filter(|(k, _)| !ours(k))
            .collect();
        user.sort();
        meta.attrs = ObjectAttrs {
            content_type: self.content_type.map(str::to_string),
            content_encoding: self.content_encoding.map(str::to_string),
            cache_control: self.cache_control.map(str::to_string),
            user,
            kept: KEPT_HEADERS
                .iter()
                .zip(self.kept)
                .filter_map(|(name, value)| Some((name.to_string(), value?.to_string())))
                .chain(CHECKSUM_HEADERS.iter().filter_map(|header| {
                    let meta_name = checksum_meta_name(header)?;
                    let value = self.metadata?.get(&meta_name)?;
                    Some((header.to_string(), value.clone()))
                }))
                .collect(),
        };
        meta
    }
}

impl S3Tier {
    /// Starts reading an object: returns once S3 sent the response headers. The body fails
    /// with an error if S3 stops sending before the declared length.
    pub(super) async fn get_object(
        &self,
        key: &Key,
        options: &GetOptions,
    ) -> Result<Fetch, StoreError> {
        let c = &options.conditions;
        let whole = options.range.is_none();
        let (bucket, object_key) = self.object_location(key);
        let call = self
            .inner
            .client
            .get_object()
            .bucket(bucket)
            .key(object_key)
            .set_range(options.range.map(|r| r.header_value()))
            .set_if_match(c.if_match.as_deref().map(quote_list))
            .set_if_none_match(c.if_none_match.as_deref().map(quote_list))
            .set_if_modified_since(c.if_modified_since.map(DateTime::from))
            .set_if_unmodified_since(c.if_unmodified_since.map(DateTime::from))
            .customize()
            .mutate_request(move |request| {
                // S3 returns a whole object's checksums only when asked (a range has none). Asked
                // by header rather than through the SDK's `checksum_mode`, which would also make
                // the SDK hash the body a second time to validate it: the read-through verifies
                // the CRC32C itself, and other checksums are not ours to check here.
                if whole {
                    request
                        .headers_mut()
                        .insert("x-amz-checksum-mode", "ENABLED");
                }
            })
            .send();
        let out = match self.read_call("get", call).await? {
            Ok(out) => out,
            Err(answer) => return Ok(answer.fetch()),
        };
        let body_len = out
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .ok_or_else(|| StoreError::Remote("S3 get: no Content-Length".into()))?;
        // A ranged answer (206) says which bytes it carries and the object's length.
        let (span, len) = match out.content_range().and_then(parse_content_range) {
            Some((span, len)) if span.end - span.start == body_len => (span, len),
            Some(_) => {
                return Err(StoreError::Remote(
                    "S3 get: Content-Range disagrees with Content-Length".into(),
                ))
            }
            None => (0..body_len, body_len),
        };
        let meta = object_meta!(out, len, key);
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
        Ok(Fetch::Found(Fetched {
            meta,
            span,
            body: Box::pin(body),
        }))
    }

    pub(super) async fn head_object(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        let (bucket, object_key) = self.object_location(key);
        let call = self
            .inner
            .client
            .head_object()
            .bucket(bucket)
            .key(object_key)
            .checksum_mode(ChecksumMode::Enabled)
            .send();
        let Ok(out) = self.read_call("head", call).await? else {
            // A HEAD has no conditions or range: the only answer without the object is a 404.
            return Ok(None);
        };
        let Some(len) = out.content_length().and_then(|l| u64::try_from(l).ok()) else {
            return Err(StoreError::Remote("S3 head: no Content-Length".into()));
        };
        Ok(Some(object_meta!(out, len, key)))
    }

    pub(super) async fn delete_object(&self, key: &Key) -> Result<(), StoreError> {
        let (bucket, object_key) = self.object_location(key);
        let call = self
            .inner
            .client
            .delete_object()
            .bucket(bucket)
            .key(object_key)
            .send();
        self.write_call("delete", 0, call).await.map(|_| ())
    }

    pub(super) async fn list_objects(&self, request: &ListRequest) -> Result<Listing, StoreError> {
        // Names in the namespace are object keys after its prefix (by default
        // `<prefix><namespace>/`).
        let (bucket, base) = self.namespace_location(&request.namespace);
        let call = self
            .inner
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(format!("{base}{}", request.prefix))
            .set_delimiter(request.delimiter.clone().filter(|d| !d.is_empty()))
            .set_continuation_token(request.continuation.clone())
            .set_start_after(
                request
                    .start_after
                    .as_ref()
                    .map(|name| format!("{base}{name}")),
            )
            .max_keys(request.max_keys.min(i32::MAX as usize) as i32)
            .send();
        let out = match self.read_call("list", call).await? {
            Ok(out) => out,
            // A missing bucket: nothing to list (the bucket's absence shows on every write).
            Err(_) => return Ok(Listing::default()),
        };
        // Only names under the asked prefix: a server that reads `//` in a key as `/` (SeaweedFS
        // does, its keys being file paths) answers a prefix ending in `/` with more.
        let relative = |k: &str| {
            k.strip_prefix(base.as_str())
                .filter(|name| name.starts_with(request.prefix.as_str()))
                .map(str::to_string)
        };
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(Listed {
                    name: relative(o.key()?)?,
                    len: u64::try_from(o.size()?).ok()?,
                    etag: o.e_tag().map(|e| unquote(e).to_string()),
                    modified: system_time(o.last_modified()),
                })
            })
            .collect();
        let common_prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| relative(p.prefix()?))
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(Listing {
            objects,
            common_prefixes,
            next,
        })
    }
}

/// An `If-Match` / `If-None-Match` value as S3 wants it: each ETag quoted.
fn quote_list(list: &str) -> String {
    list.split(',')
        .map(str::trim)
        .map(|tag| {
            if tag == "*" || tag.starts_with('"') || tag.starts_with("W/") {
                tag.to_string()
            } else {
                format!("\"{tag}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `bytes first-last/len` → (first..last+1, len).
fn parse_content_range(value: &str) -> Option<(std::ops::Range<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, len) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
    let len = len.parse().ok()?;
    (first <= last && last < len).then_some((first..last + 1, len))
}

fn system_time(t: Option<&DateTime>) -> SystemTime {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0..10, 100)));
        assert_eq!(parse_content_range("bytes 99-99/100"), Some((99..100, 100)));
        assert_eq!(parse_content_range("bytes 5-4/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
    }

    #[test]
    fn etag_lists_are_quoted_for_s3() {
        assert_eq!(quote_list("abc"), "\"abc\"");
        assert_eq!(quote_list("\"abc\", def"), "\"abc\", \"def\"");
        assert_eq!(quote_list("*"), "*");
    }
}
