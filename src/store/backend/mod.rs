//! The shared tier as the local tiers see it: a small object-store interface with S3's semantics.
//!
//! [`Backend`] is what read-through, write-back and the tiered store need from S3, and nothing
//! more: a get with an optional byte range and preconditions, a head, a put from a region of a
//! local file with a given part layout, a delete, and a listing. [`super::s3::S3Tier`] implements
//! it over `aws-sdk-s3`; [`fake::FakeBackend`] (tests only) implements it in memory, with fault
//! injection, so the tiers are unit-tested without an S3 server.
//!
//! Keys are the store's [`Key`]s: the backend maps them to its own object names (S3: the
//! configured prefix, then `<namespace>/<name>`). A listing is of one namespace, and its names
//! and common prefixes are relative to that namespace, as keys are.
//!
//! Every failure is a [`StoreError`]: what a failure means to a client (a miss, a 503) is the
//! front's decision, not the backend's.

#[cfg(test)]
pub mod fake;

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{ByteStream, Key, Namespace, ObjectAttrs, ObjectMeta, StoreError};

/// A byte range of a get, as HTTP's `Range: bytes=…` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-last`, both inclusive.
    Bounded { first: u64, last: u64 },
    /// `bytes=first-`: from `first` to the end.
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The half-open span of a `len`-byte object this range selects (clamped to the object, as
    /// S3 does), or `None` when it selects nothing (S3's 416).
    pub fn resolve(self, len: u64) -> Option<std::ops::Range<u64>> {
        match self {
            ByteRange::Bounded { first, last } if first <= last && first < len => {
                Some(first..last.saturating_add(1).min(len))
            }
            ByteRange::Bounded { .. } => None,
            ByteRange::From(first) => (first < len).then_some(first..len),
            ByteRange::Suffix(0) => None,
            // A suffix longer than the object is the whole object (RFC 9110 14.1.2).
            ByteRange::Suffix(n) => (len > 0).then(|| len.saturating_sub(n)..len),
        }
    }

    /// Parses a `Range` header value. `None` for anything that is not one byte range: S3
    /// serves the whole object then, as RFC 9110 allows for a range it does not support.
    pub fn parse(value: &str) -> Option<ByteRange> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        if first.trim().is_empty() {
            return number(last).map(ByteRange::Suffix);
        }
        let first = number(first)?;
        match last.trim() {
            "" => Some(ByteRange::From(first)),
            text => {
                let last = number(text)?;
                (last >= first).then_some(ByteRange::Bounded { first, last })
            }
        }
    }

    /// The `Content-Range` value for `span` of an object of `total` bytes.
    pub fn content_range(span: &std::ops::Range<u64>, total: u64) -> String {
        format!("bytes {}-{}/{total}", span.start, span.end - 1)
    }

    /// The value of a `Range` header.
    pub fn header_value(self) -> String {
        match self {
            ByteRange::Bounded { first, last } => format!("bytes={first}-{last}"),
            ByteRange::From(first) => format!("bytes={first}-"),
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

/// Preconditions of a get, with S3's (RFC 7232's) semantics. ETags are compared without quotes;
/// each `if_*match` may hold a comma-separated list, and `*` matches any existing object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<SystemTime>,
    pub if_unmodified_since: Option<SystemTime>,
}

/// What a precondition check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    NotModified,
    PreconditionFailed,
}

impl Conditions {
    /// Only if the object's ETag is still `etag`: what a resumed download asks for.
    pub fn if_match(etag: &str) -> Conditions {
        Conditions {
            if_match: Some(etag.to_string()),
            ..Conditions::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    /// Decides these conditions for an object with `etag`, last modified at `modified`, in the
    /// order S3 does: `If-Match` (then `If-Unmodified-Since` only without it) can fail the
    /// request; `If-None-Match` (then `If-Modified-Since` only without it) can make it a 304.
    /// Dates compare at whole seconds, the resolution of HTTP dates.
    pub fn evaluate(&self, etag: Option<&str>, modified: SystemTime) -> Verdict {
        let modified = whole_seconds(modified);
        if let Some(list) = &self.if_match {
            if !etag_matches(list, etag) {
                return Verdict::PreconditionFailed;
            }
        } else if let Some(since) = self.if_unmodified_since {
            if modified > whole_seconds(since) {
                return Verdict::PreconditionFailed;
            }
        }
        if let Some(list) = &self.if_none_match {
            if etag_matches(list, etag) {
                return Verdict::NotModified;
            }
        } else if let Some(since) = self.if_modified_since {
            if modified <= whole_seconds(since) {
                return Verdict::NotModified;
            }
        }
        Verdict::Serve
    }
}

/// Whether `etag` is in an `If-Match` / `If-None-Match` list (`*` matches any existing object;
/// quotes and a weak `W/` prefix are ignored: S3 compares strongly but clients vary in quoting).
fn etag_matches(list: &str, etag: Option<&str>) -> bool {
    let Some(etag) = etag else {
        return list.trim() == "*";
    };
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || unquote(candidate.strip_prefix("W/").unwrap_or(candidate)) == etag
    })
}

/// An ETag without its surrounding quotes.
pub fn unquote(etag: &str) -> &str {
    etag.trim_matches('"')
}

fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// How to read an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    pub range: Option<ByteRange>,
    pub conditions: Conditions,
}

/// The answer to a get.
// Found is the common answer, and its metadata is read on every hit: boxing it would cost an
// allocation per read to save bytes on the rarer answers.
#[allow(clippy::large_enum_variant)]
pub enum Fetch {
    /// The object (or the asked range of it).
    Found(Fetched),
    /// A precondition says the reader's copy is current (S3's 304).
    NotModified,
    /// A precondition failed (S3's 412).
    PreconditionFailed,
    /// The range selects no byte of the object (S3's 416).
    RangeNotSatisfiable,
    /// No such object.
    Missing,
}

/// An object being read from the backend.
pub struct Fetched {
    /// The whole object's metadata (`meta.len` is the object's length, not the body's).
    pub meta: ObjectMeta,
    /// Which bytes of the object `body` carries: `0..meta.len` unless a range was asked for.
    pub span: std::ops::Range<u64>,
    /// Exactly `span`'s bytes; an early end or an error means the download failed.
    pub body: ByteStream,
}

/// A put: the body is a region of a local file, opened once (an entry at one version, or a
/// sealed entry not yet committed), which a backend reads at explicit offsets for every part
/// and every retry. Never the path: a newer write renamed over it must not mix in.
#[derive(Debug, Clone)]
pub struct Upload {
    pub key: Key,
    pub file: std::sync::Arc<std::fs::File>,
    pub offset: u64,
    pub len: u64,
    /// Our checksum of the body, stored with the object so a read-through can verify it.
    pub crc32c: Option<u32>,
    pub attrs: ObjectAttrs,
    pub parts: PartLayout,
}

/// A body the backend may start storing while it is still being received (a write-through of
/// a client's upload, see [`Backend::begin_put`]): a region of the spool file that grows as
/// `written` says. The sender of `written` is dropped when the receive ends, complete or not.
#[derive(Debug)]
pub struct Growing {
    pub key: Key,
    pub file: std::sync::Arc<std::fs::File>,
    /// Where the body starts in the file.
    pub offset: u64,
    /// The declared length: the body is complete when `written` reaches it.
    pub len: u64,
    pub attrs: ObjectAttrs,
    /// Body bytes in the file so far.
    pub written: tokio::sync::watch::Receiver<u64>,
}

/// A put under way while its body arrives (see [`Backend::begin_put`]). Nothing of it is
/// visible until [`StreamedPut::finish`]; dropping it unfinished abandons it.
pub trait StreamedPut: Send + 'static {
    /// The whole body is in the file, and `crc32c` is its CRC32C: sends what is left and makes
    /// the object visible, replacing any, once the backend has checked what it received
    /// against `crc32c`. Returns the object's ETag when the backend reports one.
    fn finish(self, crc32c: u32)
        -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
}

/// For backends that never stream a put.
pub enum NoStreaming {}

impl StreamedPut for NoStreaming {
    async fn finish(self, _crc32c: u32) -> Result<Option<String>, StoreError> {
        match self {}
    }
}

/// How a put is split into multipart parts: decides the object's ETag (`md5-N` for parts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartLayout {
    /// The backend's own choice (S3: one PUT up to its configured part size, else parts of it).
    Auto,
    /// Exactly these part sizes, in order, adding up to the upload's length. One part is a
    /// single PUT; several keep a client's multipart boundaries, and so its ETag.
    Sizes(Vec<u64>),
}

/// S3's largest single PUT.
pub const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

impl PartLayout {
    /// The layout of a client's single PUT whose ETag it was given, the body's MD5: one part,
    /// so that S3 computes the same ETag (parts would make it `<md5 of part md5s>-N`). A body
    /// too large for one PUT is laid out by the backend; no client can single-PUT it to S3.
    pub fn single_put(len: u64) -> PartLayout {
        if len <= MAX_SINGLE_PUT {
            PartLayout::Sizes(vec![len])
        } else {
            PartLayout::Auto
        }
    }

    /// Parts of `part_size` (the last one shorter) covering `len` bytes; one part when it fits.
    pub fn uniform(len: u64, part_size: u64) -> Vec<u64> {
        let part_size = part_size.max(1);
        if len <= part_size {
            return vec![len];
        }
        let mut sizes = vec![part_size; (len / part_size) as usize];
        if len % part_size > 0 {
            sizes.push(len % part_size);
        }
        sizes
    }
}

/// A listing request over one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub namespace: Namespace,
    /// Only names starting with this.
    pub prefix: String,
    /// Names with this after the prefix are rolled up into one common prefix each.
    pub delimiter: Option<String>,
    /// Where the previous page stopped ([`Listing::next`]).
    pub continuation: Option<String>,
    /// Only names (and common prefixes) after this one; ignored with a continuation.
    pub start_after: Option<String>,
    /// Most names and common prefixes in one page (S3 caps it at 1000).
    pub max_keys: usize,
}

/// One page of a listing, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub objects: Vec<Listed>,
    pub common_prefixes: Vec<String>,
    /// Set when there is more: pass it as [`ListRequest::continuation`].
    pub next: Option<String>,
}

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name within the namespace.
    pub name: String,
    pub len: u64,
    pub etag: Option<String>,
    pub modified: SystemTime,
}

/// The shared tier behind the local ones. Cloning a backend is cheap and shares its state.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Reads an object, a range of it, or decides its preconditions. Returns once the backend
    /// answered; the body then streams.
    fn get(
        &self,
        key: &Key,
        options: &GetOptions,
    ) -> impl Future<Output = Result<Fetch, StoreError>> + Send;

    /// Metadata only; `Ok(None)` is a miss.
    fn head(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<ObjectMeta>, StoreError>> + Send;

    /// Stores the upload's file region as the object, replacing any; returns the object's ETag
    /// when the backend reports one.
    fn put(
        &self,
        upload: &Upload,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// A put started before its body is complete.
    type Streamed: StreamedPut;

    /// Starts storing `body` while it is still being received, when the backend can for this
    /// body; `None`: it is to be stored with [`Backend::put`] once complete. The put becomes
    /// visible only with [`StreamedPut::finish`], so the caller still decides when.
    fn begin_put(&self, body: Growing) -> impl Future<Output = Option<Self::Streamed>> + Send;

    /// Removes an object; removing a missing one is not an error.
    fn delete(&self, key: &Key) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of the namespace's objects.
    fn list(
        &self,
        request: &ListRequest,
    ) -> impl Future<Output = Result<Listing, StoreError>> + Send;
}

/// The ETag S3 gives an object uploaded in parts: the hex MD5 of the parts' binary MD5s, then
/// `-` and the number of parts.
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    use md5::Digest;
    let mut all = md5::Md5::new();
    for part in part_md5s {
        all.update(part);
    }
    format!("{}-{}", hex::encode(all.finalize()), part_md5s.len())
}

/// The ETag S3 gives an object stored with one PUT: the hex MD5 of its body.
pub fn single_etag(body: &[u8]) -> String {
    hex::encode(md5_of(body))
}

/// The binary MD5 of `data`.
pub fn md5_of(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn range_headers_parse_as_rfc_9110_says() {
        let r = ByteRange::parse;
        assert_eq!(
            r("bytes=0-0"),
            Some(ByteRange::Bounded { first: 0, last: 0 })
        );
        assert_eq!(r(" bytes=2- "), Some(ByteRange::From(2)));
        assert_eq!(r("bytes=-3"), Some(ByteRange::Suffix(3)));
        for ignored in [
            "bytes=3-1",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes=1",
        ] {
            assert_eq!(r(ignored), None, "{ignored}");
        }
        let span = r("bytes=0-0").unwrap().resolve(1234).unwrap();
        assert_eq!(ByteRange::content_range(&span, 1234), "bytes 0-0/1234");
    }

    #[test]
    fn ranges_resolve_like_s3() {
        let r = |first, last| ByteRange::Bounded { first, last };
        assert_eq!(r(0, 9).resolve(100), Some(0..10));
        assert_eq!(r(90, 200).resolve(100), Some(90..100), "clamped to the end");
        assert_eq!(r(100, 200).resolve(100), None, "starts past the end");
        assert_eq!(r(5, 4).resolve(100), None);
        assert_eq!(ByteRange::From(99).resolve(100), Some(99..100));
        assert_eq!(ByteRange::From(100).resolve(100), None);
        assert_eq!(ByteRange::Suffix(10).resolve(100), Some(90..100));
        assert_eq!(ByteRange::Suffix(500).resolve(100), Some(0..100));
        assert_eq!(ByteRange::Suffix(0).resolve(100), None);
        assert_eq!(ByteRange::Suffix(5).resolve(0), None);
        assert_eq!(r(3, 7).header_value(), "bytes=3-7");
        assert_eq!(ByteRange::From(3).header_value(), "bytes=3-");
        assert_eq!(ByteRange::Suffix(3).header_value(), "bytes=-3");
    }

    #[test]
    fn conditions_follow_s3_precedence() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_700);
        let before = at - Duration::from_secs(10);
        let after = at + Duration::from_secs(10);
        let etag = Some("abc");
        let check = |c: Conditions| c.evaluate(etag, at);
        assert_eq!(check(Conditions::default()), Verdict::Serve);
        assert_eq!(check(Conditions::if_match("abc")), Verdict::Serve);
        assert_eq!(check(Conditions::if_match("\"abc\"")), Verdict::Serve);
        assert_eq!(check(Conditions::if_match("x, \"abc\"")), Verdict::Serve);
        assert_eq!(check(Conditions::if_match("*")), Verdict::Serve);
        assert_eq!(
            check(Conditions::if_match("other")),
            Verdict::PreconditionFailed
        );
        // If-Match true wins over a false If-Unmodified-Since.
        assert_eq!(
            check(Conditions {
                if_match: Some("abc".into()),
                if_unmodified_since: Some(before),
                ..Default::default()
            }),
            Verdict::Serve
        );
        assert_eq!(
            check(Conditions {
                if_unmodified_since: Some(before),
                ..Default::default()
            }),
            Verdict::PreconditionFailed
        );
        // Same second, sub-second part ignored: not modified since.
        assert_eq!(
            check(Conditions {
                if_unmodified_since: Some(at - Duration::from_millis(500)),
                ..Default::default()
            }),
            Verdict::Serve
        );
        assert_eq!(
            check(Conditions {
                if_none_match: Some("\"abc\"".into()),
                ..Default::default()
            }),
            Verdict::NotModified
        );
        // If-None-Match false (changed) wins over a true If-Modified-Since.
        assert_eq!(
            check(Conditions {
                if_none_match: Some("old".into()),
                if_modified_since: Some(after),
                ..Default::default()
            }),
            Verdict::Serve
        );
        assert_eq!(
            check(Conditions {
                if_modified_since: Some(after),
                ..Default::default()
            }),
            Verdict::NotModified
        );
        assert_eq!(
            check(Conditions {
                if_modified_since: Some(before),
                ..Default::default()
            }),
            Verdict::Serve
        );
        // A failed If-Match is a 412 even when If-None-Match would make it a 304.
        assert_eq!(
            check(Conditions {
                if_match: Some("other".into()),
                if_none_match: Some("abc".into()),
                ..Default::default()
            }),
            Verdict::PreconditionFailed
        );
    }

    #[test]
    fn etags_are_s3s() {
        // Known values: MD5("") and MD5("hello").
        assert_eq!(single_etag(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(single_etag(b"hello"), "5d41402abc4b2a76b9719d911017c592");
        // Two parts: the MD5 of the two binary MD5s, then "-2".
        let parts = [md5_of(b"hello"), md5_of(b"")];
        let mut joined = Vec::new();
        joined.extend_from_slice(&parts[0]);
        joined.extend_from_slice(&parts[1]);
        assert_eq!(
            multipart_etag(&parts),
            format!("{}-2", single_etag(&joined))
        );
        assert_eq!(PartLayout::uniform(10, 4), vec![4, 4, 2]);
        assert_eq!(PartLayout::uniform(8, 4), vec![4, 4]);
        assert_eq!(PartLayout::uniform(3, 4), vec![3]);
        assert_eq!(PartLayout::uniform(0, 4), vec![0]);
    }
}
