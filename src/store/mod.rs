//! The storage interface and its tiers.
//!
//! Every tier implements [`Store`]: get / head / put / delete on a namespaced [`Key`], bodies as
//! byte streams with a declared length. The memory tier ([`memory`]) and the disk tier ([`disk`])
//! stand alone; behind them is a [`backend::Backend`], the S3 tier ([`s3`]) in the daemon.
//! [`tiered::TieredStore`] composes them and is what the fronts talk to, with [`read_through`]
//! (single-flight fills that stream while they land on disk) and [`write_back`] (the persistent
//! upload queue) between the local tiers and the backend.
//!
//! A put consumes a stream that must yield exactly the declared number of bytes. A stream that
//! ends early, fails, or is dropped half way is an aborted write: nothing becomes visible.

pub mod backend;
pub mod body;
pub mod disk;
pub mod entry_file;
pub mod key;
mod key_locks;
pub mod listing;
pub mod local;
pub mod multipart;
pub mod policy;
pub mod read_through;
pub mod s3;
#[cfg(test)]
mod testing;
pub mod tiered;
pub mod write_back;

pub use local::memory;

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;

pub use key::{Key, KeyError, Namespace};

use backend::{GetOptions, Verdict};

/// A body: a stream of chunks. An `Err` item aborts whatever consumes it.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Disk,
    S3,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::S3 => "s3",
        }
    }
}

/// What is known about a stored entry without reading its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Body length in bytes.
    pub len: u64,
    /// When the entry was written (for a copy filled from S3: when S3's object was).
    pub modified: SystemTime,
    /// CRC32C of the body, when the tier knows it.
    pub crc32c: Option<u32>,
    /// The object's ETag as S3 defines it (without quotes), when known.
    pub etag: Option<String>,
    /// What the writer said about the object, read back by every reader.
    pub attrs: ObjectAttrs,
}

impl ObjectMeta {
    /// Metadata with no ETag and no attributes.
    pub fn new(len: u64, modified: SystemTime, crc32c: Option<u32>) -> ObjectMeta {
        ObjectMeta {
            len,
            modified,
            crc32c,
            etag: None,
            attrs: ObjectAttrs::default(),
        }
    }
}

/// The attributes of an object that a client sets on write and reads back: S3's system
/// headers and its user metadata (`x-amz-meta-*`). Gradle entries have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectAttrs {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub cache_control: Option<String>,
    /// User metadata: names lowercase and without the `x-amz-meta-` prefix, sorted by name.
    pub user: Vec<(String, String)>,
    /// The other headers S3 keeps with an object and answers on GET and HEAD, as the writer
    /// sent them: [`KEPT_HEADERS`], then [`CHECKSUM_HEADERS`], in that order, those present.
    pub kept: Vec<(String, String)>,
}

/// The system headers, besides `Content-Type`, `Content-Encoding` and `Cache-Control`, that S3
/// stores with an object as given on its PUT and returns on every read (lowercase names).
pub const KEPT_HEADERS: [&str; 3] = ["content-disposition", "content-language", "expires"];

/// The object's checksum (one a PUT carried and the front verified, or a multipart upload's
/// made of its parts'), kept with the object among its kept headers and returned when a reader
/// asks for checksums: its value under its algorithm's header, and for a multipart upload's
/// the type ([`CHECKSUM_TYPE_HEADER`]; without it, the checksum is of the whole object).
pub const CHECKSUM_HEADERS: [&str; 6] = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    CHECKSUM_TYPE_HEADER,
];

/// How a kept checksum is made (`COMPOSITE` or `FULL_OBJECT`).
pub const CHECKSUM_TYPE_HEADER: &str = "x-amz-checksum-type";

impl ObjectAttrs {
    /// A kept header's value, if the object has it.
    pub fn kept(&self, name: &str) -> Option<&str> {
        self.kept
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How long the body of a put is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    /// Declared up front: exactly this many bytes, or the put fails.
    Exact(u64),
    /// Not declared (a request body sent with `Transfer-Encoding: chunked` and no length): what
    /// arrives before the body's end, which must come within this many bytes.
    AtMost(u64),
}

impl BodyLen {
    /// The most bytes the body may have.
    pub fn limit(self) -> u64 {
        match self {
            BodyLen::Exact(len) | BodyLen::AtMost(len) => len,
        }
    }
}

impl From<u64> for BodyLen {
    fn from(len: u64) -> BodyLen {
        BodyLen::Exact(len)
    }
}

/// What a put says about its object besides the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Read back by every reader of the object.
    pub attrs: ObjectAttrs,
    /// Compute S3's ETag of a single PUT (the hex MD5 of the body) as the body is written, and
    /// keep it with the entry. Gradle entries are content-addressed and skip it.
    pub etag: bool,
    /// A conditional write: `if_match` / `if_none_match` on the object it replaces (the other
    /// conditions are a read's).
    pub conditions: backend::Conditions,
    /// A checksum the body's end brings (an aws-chunked trailer): `attrs.kept` holds a
    /// placeholder of its size under its header, which the checksum replaces once the body is
    /// complete (so the entry's header keeps its length).
    pub trailer_checksum: Option<crate::checksum::LateChecksum>,
}

impl PutOptions {
    /// An S3 object's put: with its attributes and an ETag.
    pub fn object(attrs: ObjectAttrs) -> PutOptions {
        PutOptions {
            attrs,
            etag: true,
            conditions: backend::Conditions::default(),
            trailer_checksum: None,
        }
    }
}

/// An entry being read: its metadata and its body.
pub struct Object {
    pub meta: ObjectMeta,
    pub body: ByteStream,
    pub tier: Tier,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("meta", &self.meta)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

/// Why a store operation failed. Fronts map each variant to their protocol's status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The body stream ended before the declared length, or had more bytes than declared.
    #[error("body length mismatch: declared {declared} bytes, received {received}")]
    LengthMismatch { declared: u64, received: u64 },
    /// A conditional write whose condition the current object fails.
    #[error("precondition failed")]
    PreconditionFailed,
    /// A conditional write (`If-Match`) of a key that has no object.
    #[error("no such object")]
    NotFound,
    /// A body of undeclared length went on past its limit ([`BodyLen::AtMost`]).
    #[error("body larger than the {limit} bytes allowed")]
    TooLarge { limit: u64 },
    /// The body stream failed (client disconnected, upstream error).
    #[error("body aborted: {0}")]
    BodyAborted(io::Error),
    /// The entry cannot fit: every evictable byte is already gone.
    #[error("not enough space for {needed} bytes")]
    Full { needed: u64 },
    /// Local filesystem failure.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The remote tier failed or is unavailable.
    #[error("remote store: {0}")]
    Remote(String),
    /// The remote tier is being skipped (its circuit breaker is open): no request was made.
    #[error("remote store unavailable (circuit breaker open)")]
    Unavailable,
    /// The write-back queue is full; the write was refused rather than dropped later.
    #[error("upload queue is full")]
    QueueFull,
}

/// The one storage interface every tier and composition implements.
pub trait Store: Send + Sync + 'static {
    /// Reads an entry; `Ok(None)` is a miss.
    fn get(&self, key: &Key) -> impl Future<Output = Result<Option<Object>, StoreError>> + Send;

    /// Metadata only; `Ok(None)` is a miss.
    fn head(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<ObjectMeta>, StoreError>> + Send;

    /// Stores the bytes of `body`, as many as `len` says (a `u64` is an exact length). Visible
    /// to readers only once complete; returns the stored object's metadata (its ETag when
    /// `options.etag` asked for one).
    fn put(
        &self,
        key: &Key,
        len: impl Into<BodyLen> + Send,
        body: ByteStream,
        options: &PutOptions,
    ) -> impl Future<Output = Result<ObjectMeta, StoreError>> + Send;

    /// Removes an entry; `Ok(false)` if there was none.
    fn delete(&self, key: &Key) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Reads an entry with a byte range and preconditions (S3's semantics). This default reads
    /// the whole entry and decides from its metadata, skipping to the range in the stream; a
    /// tier that can read a range directly overrides it.
    fn read(
        &self,
        key: &Key,
        options: &GetOptions,
    ) -> impl Future<Output = Result<Read, StoreError>> + Send {
        async move {
            Ok(match self.get(key).await? {
                Some(object) => Read::decide(object, options),
                None => Read::Missing,
            })
        }
    }
}

/// The answer to a read with options ([`Store::read`]).
#[derive(Debug)]
pub enum Read {
    /// The object; its body carries `span` of it (all of it without a range).
    Found {
        object: Object,
        span: Range<u64>,
    },
    /// The preconditions say the client's copy is current (304).
    NotModified(ObjectMeta),
    /// The preconditions failed (412).
    PreconditionFailed,
    /// The range selects nothing of an object of this length (416).
    RangeNotSatisfiable(u64),
    Missing,
}

impl Read {
    /// Decides a read of `object`: its preconditions first (412 before 304, as S3 does), then
    /// its range, whose bytes are taken from the object's stream as they pass.
    pub fn decide(object: Object, options: &GetOptions) -> Read {
        let Object { meta, body, tier } = object;
        let len = meta.len;
        Read::decide_with(meta, tier, options, |span| match span == (0..len) {
            true => body,
            false => skip_to(body, span),
        })
    }

    /// [`Read::decide`] for a body that can be opened at any offset: `open(span)` is called
    /// only when bytes are to be served, and must yield exactly `span`'s bytes.
    pub fn decide_with(
        meta: ObjectMeta,
        tier: Tier,
        options: &GetOptions,
        open: impl FnOnce(Range<u64>) -> ByteStream,
    ) -> Read {
        match options
            .conditions
            .evaluate(meta.etag.as_deref(), meta.modified)
        {
            Verdict::Serve => {}
            Verdict::NotModified => return Read::NotModified(meta),
            Verdict::PreconditionFailed => return Read::PreconditionFailed,
        }
        let span = match options.range {
            None => 0..meta.len,
            Some(range) => match range.resolve(meta.len) {
                Some(span) => span,
                None => return Read::RangeNotSatisfiable(meta.len),
            },
        };
        let body = open(span.clone());
        Read::Found {
            object: Object { meta, body, tier },
            span,
        }
    }
}

/// The bytes of `body` within `span` (offsets into the whole body), ending once the span has
/// passed without reading the rest.
fn skip_to(body: ByteStream, span: Range<u64>) -> ByteStream {
    let state = (body, 0u64);
    Box::pin(futures_util::stream::unfold(Some(state), move |state| {
        let span = span.clone();
        async move {
            let (mut body, mut pos) = state?;
            while pos < span.end {
                let chunk = match futures_util::StreamExt::next(&mut body).await? {
                    Ok(chunk) => chunk,
                    Err(e) => return Some((Err(e), None)),
                };
                let (start, end) = (pos, pos + chunk.len() as u64);
                pos = end;
                let from = span.start.max(start).min(end) - start;
                let to = span.end.min(end).max(start) - start;
                if from < to {
                    let part = chunk.slice(from as usize..to as usize);
                    return Some((Ok(part), Some((body, pos))));
                }
            }
            None
        }
    }))
}

/// A stream over one in-memory buffer.
pub fn bytes_stream(data: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::once(async move { Ok(data) }))
}
