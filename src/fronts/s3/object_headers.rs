//! The S3 object headers, both ways: a request's `Range`, conditional and metadata headers
//! become the store's [`GetOptions`] and [`PutOptions`]; a stored object's [`ObjectMeta`]
//! becomes the response headers S3 sends (`ETag`, `Last-Modified`, `Content-Type`,
//! `x-amz-meta-*`, …), so that a client reads back what it wrote, from whichever tier or node.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::store::backend::{ByteRange, Conditions, GetOptions};
use crate::store::{
    ObjectAttrs, ObjectMeta, PutOptions, CHECKSUM_HEADERS, CHECKSUM_TYPE_HEADER, KEPT_HEADERS,
};

/// The prefix of user metadata headers.
pub const META_PREFIX: &str = "x-amz-meta-";
/// S3's limit on user metadata: names and values together, in bytes.
pub const MAX_USER_METADATA: usize = 2048;
/// The longest value of a kept header (`Content-Disposition`, `Content-Language`, `Expires`)
/// an object may have: far more than any real one, and small enough for the entry format.
const MAX_KEPT_HEADER: usize = 4096;
/// What S3 answers as the type of an object stored without one.
const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";
/// The `Content-Encoding` token that frames an `aws-chunked` body: it describes the request,
/// not the object, and S3 does not store it.
const AWS_CHUNKED: &str = "aws-chunked";

/// Why a request's object headers were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// User metadata larger than S3 allows (S3's `MetadataTooLarge`).
    MetadataTooLarge(usize),
    /// A header whose value is not text (S3's `InvalidArgument`).
    NotText(String),
    /// User metadata under the daemon's own names (`InvalidArgument`): they carry the
    /// checksums other nodes trust, so no client may set them.
    Reserved(String),
}

/// The user metadata names the daemon keeps for itself in S3 (the object's CRC32C, a kept
/// checksum): `x-amz-meta-build-cache-proxy-*`.
pub const RESERVED_METADATA: &str = "build-cache-proxy-";

/// A GET's or HEAD's range and preconditions. A `Range` that is not one byte range is ignored
/// (the whole object is served, as S3 does), and so is a date that does not parse.
pub fn get_options(headers: &HeaderMap) -> GetOptions {
    GetOptions {
        range: text(headers, header::RANGE).and_then(ByteRange::parse),
        conditions: Conditions {
            if_match: text(headers, header::IF_MATCH).map(str::to_string),
            if_none_match: text(headers, header::IF_NONE_MATCH).map(str::to_string),
            if_modified_since: date(headers, header::IF_MODIFIED_SINCE),
            if_unmodified_since: date(headers, header::IF_UNMODIFIED_SINCE),
        },
    }
}

/// A conditional write's `If-Match` / `If-None-Match` (PutObject, CompleteMultipartUpload).
pub fn write_conditions(headers: &HeaderMap) -> Conditions {
    Conditions {
        if_match: text(headers, header::IF_MATCH).map(str::to_string),
        if_none_match: text(headers, header::IF_NONE_MATCH).map(str::to_string),
        ..Conditions::default()
    }
}

/// [`put_options`] of a client's write through the front, which may not set the daemon's own
/// metadata ([`RESERVED_METADATA`]).
pub fn client_put_options(headers: &HeaderMap) -> Result<PutOptions, HeaderError> {
    let options = put_options(headers)?;
    match options
        .attrs
        .user
        .iter()
        .find(|(name, _)| name.starts_with(RESERVED_METADATA))
    {
        Some((name, _)) => Err(HeaderError::Reserved(format!("{META_PREFIX}{name}"))),
        None => Ok(options),
    }
}

/// A PUT's (or CreateMultipartUpload's) object attributes, with an ETag to be computed.
pub fn put_options(headers: &HeaderMap) -> Result<PutOptions, HeaderError> {
    let content_encoding = text_checked(headers, header::CONTENT_ENCODING)?.and_then(|value| {
        let kept: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|token| !token.is_empty() && !token.eq_ignore_ascii_case(AWS_CHUNKED))
            .collect();
        (!kept.is_empty()).then(|| kept.join(", "))
    });
    let mut user = Vec::new();
    let mut size = 0;
    for (name, value) in headers {
        let Some(short) = name.as_str().strip_prefix(META_PREFIX) else {
            continue;
        };

        let value = value
            .to_str()
            .map_err(|_| HeaderError::NotText(name.to_string()))?;
        size += short.len() + value.len();
        user.push((short.to_string(), value.to_string()));
    }
    if size > MAX_USER_METADATA {
        return Err(HeaderError::MetadataTooLarge(size));
    }
    // Header names arrive lowercase; one name sent twice keeps both values, comma-joined, as
    // S3 does.
    user.sort_by(|a, b| a.0.cmp(&b.0));
    user.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 = format!("{},{}", earlier.1, later.1);
            true
        } else {
            false
        }
    });
    let mut kept = Vec::new();
    for name in KEPT_HEADERS {
        if let Some(value) = text_checked(headers, HeaderName::from_static(name))? {
            if value.len() > MAX_KEPT_HEADER {
                return Err(HeaderError::MetadataTooLarge(value.len()));
            }
            kept.push((name.to_string(), value.to_string()));
        }
    }
    Ok(PutOptions::object(ObjectAttrs {
        content_type: text_checked(headers, header::CONTENT_TYPE)?.map(str::to_string),
        content_encoding,
        cache_control: text_checked(headers, header::CACHE_CONTROL)?.map(str::to_string),
        user,
        kept,
    }))
}

/// The headers S3 answers for an object, on GET, HEAD and 304 alike (a 304 carries no body
/// headers: the caller leaves out `Content-Length`).
pub fn object_headers(meta: &ObjectMeta, headers: &mut HeaderMap) {
    if let Some(etag) = &meta.etag {
        if let Ok(value) = HeaderValue::from_str(&format!("\"{etag}\"")) {
            headers.insert(header::ETAG, value);
        }
    }
    headers.insert(header::LAST_MODIFIED, http_date(meta.modified));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let attrs = &meta.attrs;
    let content_type = attrs
        .content_type
        .as_deref()
        .unwrap_or(DEFAULT_CONTENT_TYPE);
    insert_text(headers, header::CONTENT_TYPE, content_type);
    if let Some(value) = &attrs.content_encoding {
        insert_text(headers, header::CONTENT_ENCODING, value);
    }
    if let Some(value) = &attrs.cache_control {
        insert_text(headers, header::CACHE_CONTROL, value);
    }
    for (name, value) in &attrs.user {
        if let Ok(name) = HeaderName::try_from(format!("{META_PREFIX}{name}")) {
            insert_text(headers, name, value);
        }
    }
    for (name, value) in &attrs.kept {
        // Checksums only when asked for (see `checksum_headers`).
        if CHECKSUM_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let Ok(name) = HeaderName::try_from(name.as_str()) {
            insert_text(headers, name, value);
        }
    }
}

/// The object's checksums, for a reader that sent `x-amz-checksum-mode: ENABLED` and reads the
/// whole object (S3 gives none for a range): the kept `x-amz-checksum-*` headers and
/// `x-amz-checksum-type: FULL_OBJECT`.
pub fn checksum_headers(meta: &ObjectMeta, request: &HeaderMap, headers: &mut HeaderMap) {
    let asked = request
        .get("x-amz-checksum-mode")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"ENABLED"));
    if asked {
        kept_checksums(meta, headers);
    }
}

/// The object's kept checksums, as GET and HEAD return them when asked and PutObject always
/// answers them.
pub fn kept_checksums(meta: &ObjectMeta, headers: &mut HeaderMap) {
    let mut any = false;
    for (name, value) in &meta.attrs.kept {
        if CHECKSUM_HEADERS.contains(&name.as_str()) {
            if let Ok(name) = HeaderName::try_from(name.as_str()) {
                insert_text(headers, name, value);
                any = true;
            }
        }
    }
    // A PUT's checksum is of the whole object; a multipart upload's says which it is.
    if any && !headers.contains_key(CHECKSUM_TYPE_HEADER) {
        headers.insert(
            HeaderName::from_static(CHECKSUM_TYPE_HEADER),
            HeaderValue::from_static("FULL_OBJECT"),
        );
    }
}

/// An HTTP date (IMF-fixdate), whole seconds.
pub fn http_date(time: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(time)).expect("HTTP dates are ASCII")
}

fn insert_text(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    // Stored values came in as header values, so they convert back; one that would not is
    // left out rather than answered broken.
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn text(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn text_checked(headers: &HeaderMap, name: HeaderName) -> Result<Option<&str>, HeaderError> {
    headers
        .get(&name)
        .map(|v| {
            v.to_str()
                .map_err(|_| HeaderError::NotText(name.to_string()))
        })
        .transpose()
}

fn date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    text(headers, name).and_then(|value| httpdate::parse_http_date(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn gets_take_their_range_and_conditions() {
        let options = get_options(&headers(&[
            ("range", "bytes=0-0"),
            ("if-none-match", "\"abc\""),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("if-unmodified-since", "yesterday"),
        ]));
        assert_eq!(
            options.range,
            Some(ByteRange::Bounded { first: 0, last: 0 })
        );
        assert_eq!(options.conditions.if_none_match.as_deref(), Some("\"abc\""));
        assert_eq!(
            options.conditions.if_modified_since,
            Some(UNIX_EPOCH + Duration::from_secs(784111777))
        );
        assert_eq!(options.conditions.if_unmodified_since, None, "not a date");
        assert_eq!(
            get_options(&headers(&[("range", "bytes=0-1,5-6")])).range,
            None
        );
    }

    #[test]
    fn puts_keep_what_s3_keeps() {
        let options = put_options(&headers(&[
            ("content-type", "application/zip"),
            ("content-encoding", "aws-chunked"),
            ("x-amz-meta-cachekey", "build-jar"),
            ("x-amz-meta-b", "1"),
            ("x-amz-meta-b", "2"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ]))
        .unwrap();
        assert!(options.etag);
        assert_eq!(
            options.attrs,
            ObjectAttrs {
                content_type: Some("application/zip".into()),
                content_encoding: None,
                cache_control: None,
                user: vec![
                    ("b".into(), "1,2".into()),
                    ("cachekey".into(), "build-jar".into())
                ],
                kept: vec![],
            }
        );
        let gzip = put_options(&headers(&[("content-encoding", "aws-chunked, gzip")])).unwrap();
        assert_eq!(gzip.attrs.content_encoding.as_deref(), Some("gzip"));
        let big = "x".repeat(MAX_USER_METADATA);
        assert_eq!(
            put_options(&headers(&[("x-amz-meta-k", &big)])),
            Err(HeaderError::MetadataTooLarge(MAX_USER_METADATA + 1))
        );
    }

    #[test]
    fn objects_answer_with_s3s_headers() {
        let meta = ObjectMeta {
            etag: Some("5d41402abc4b2a76b9719d911017c592".into()),
            attrs: ObjectAttrs {
                user: vec![("cachekey".into(), "k".into())],
                ..ObjectAttrs::default()
            },
            ..ObjectMeta::new(5, UNIX_EPOCH + Duration::from_secs(784111777), None)
        };
        let mut out = HeaderMap::new();
        object_headers(&meta, &mut out);
        assert_eq!(out["etag"], "\"5d41402abc4b2a76b9719d911017c592\"");
        assert_eq!(out["last-modified"], "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(out["content-type"], DEFAULT_CONTENT_TYPE);
        assert_eq!(out["x-amz-meta-cachekey"], "k");
        assert_eq!(out["accept-ranges"], "bytes");
    }
}
