//! The `aws-chunked` body decoder, signed and unsigned, over a body cut into arbitrary pieces.
//!
//! Input (integers little-endian, missing bytes read as 0):
//! - flags `u8`: 1 signed chunks, 2 trailer (always for unsigned, which S3 only has with one),
//!   4 framed by the target, 8 a small chunk cap; bits 4–7 mod 6: the trailer checksum (0 none,
//!   then CRC32, CRC32C, CRC64NVME, SHA1, SHA256);
//! - with a small cap, the cap minus one `u16`;
//! - the number of cuts `u8` (mod 17), and each cut `u16`;
//! - raw (not framed by the target): the decoded length `u32`, then the body as the rest;
//! - framed by the target: the number of chunk sizes `u8` (mod 9), each `u16`; a change `u8`
//!   (mod 8: 0 and 7 none, 1 flip a bit, 2 double a byte, 3 remove a byte, 4 truncate, 5 declare
//!   more, 6 declare one byte less) and its position `u16`; then the data as the rest. The
//!   target frames the data correctly (chunk and trailer signatures made with the known key, the
//!   announced checksum) before applying the change.
//!
//! What must hold, for every input:
//! - the decoder never yields more than `x-amz-decoded-content-length`; a body that ends in an
//!   error has yielded less than all of it (the end is kept back until everything checked out), a
//!   body that ends cleanly all of it, and its checksum slot is set exactly then;
//! - the outcome (the bytes, or the error) is the same whether the body comes in one piece or cut
//!   anywhere;
//! - memory beyond the body itself stays within the chunk cap plus the bounded line and trailer
//!   buffers: a chunk declared larger than the cap is refused, not allocated;
//! - signed chunks pass under the signing key and under no other, and decode to the same bytes
//!   when their signatures are not checked (a forwarded upload's framing);
//! - for the framed data: unchanged (and within the cap), it decodes to exactly the data; changed,
//!   it is refused or, when signed or checksummed, still decodes to exactly the data (a change
//!   such as the case of a hex digit that the framing ignores); a signed body never releases a
//!   byte that is not the signed data's.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use build_cache_proxy::checksum::{to_base64, ChecksumAlgorithm};
use build_cache_proxy::fronts::s3::chunked::{
    AwsChunkedDecoder, ChunkSignatures, ChunkedOptions, DEFAULT_MAX_CHUNK,
};
use build_cache_proxy::fronts::s3::error::{S3Error, S3ErrorCode};
use build_cache_proxy::fronts::s3::sigv4::{ChunkSigning, SecretKey, SigningKey};
use bytes::Bytes;
use futures_util::Stream;
use libfuzzer_sys::fuzz_target;

/// Counts the bytes allocated and live, and their peak, so the target can bound what one decode
/// holds. The fuzzer runs one input at a time on one thread.
struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn allocated(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            allocated(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            allocated(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            allocated(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// What a decode may hold beyond its input and the chunk being verified (at most the cap): the
/// byte kept back, the header line (256) and trailer section (4 KiB) buffers, errors, the
/// stream's queue. A chunk buffered before its declared size was checked would exceed it.
const OVERHEAD: usize = 64 << 10;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// AWS's aws-chunked example: its request signature seeds the chunk signatures.
const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";

fn derive(secret: &str) -> ChunkSigning {
    ChunkSigning {
        seed_signature: std::array::from_fn(|i| {
            u8::from_str_radix(&SEED[2 * i..2 * i + 2], 16).expect("SEED is hex")
        }),
        key: SigningKey::derive(&SecretKey::new(secret), "20130524", "us-east-1", "s3"),
        amz_date: "20130524T000000Z".into(),
        scope: "20130524/us-east-1/s3/aws4_request".into(),
    }
}

/// The signing of the known key, and of another: derived once, not per input (four HMACs each).
fn signing(known: bool) -> ChunkSigning {
    static KEYS: OnceLock<(ChunkSigning, ChunkSigning)> = OnceLock::new();
    let (known_key, other_key) = KEYS.get_or_init(|| (derive(SECRET), derive("another secret")));
    if known {
        known_key.clone()
    } else {
        other_key.clone()
    }
}

const SIGNED: u8 = 1;
const TRAILER: u8 = 2;
const FRAMED_BY_TARGET: u8 = 4;
const SMALL_CAP: u8 = 8;

/// The decode's outcome, comparable across cuts.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Clean { len: u64, hash: u64 },
    Failed { len: u64, error: S3Error },
}

impl Outcome {
    /// What must not depend on the cuts: the bytes of a clean end, or the error. (How much an
    /// unsigned body released before its error does: its pieces stream through as they come.)
    fn result(&self) -> Result<(u64, u64), &S3Error> {
        match self {
            Outcome::Clean { len, hash } => Ok((*len, *hash)),
            Outcome::Failed { error, .. } => Err(error),
        }
    }
}

/// Decodes `pieces`; `expected`, when given, is what every released byte must be a prefix of.
fn decode(pieces: Vec<Bytes>, options: ChunkedOptions, expected: Option<&[u8]>) -> Outcome {
    let max_chunk = options.max_chunk;
    let announced = options.trailer_checksum;
    let decoded_length = options.decoded_length;
    let items: Vec<io::Result<Bytes>> = pieces.into_iter().map(Ok).collect();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut decoder = AwsChunkedDecoder::new(futures_util::stream::iter(items), options);
    let slot = decoder.trailer_checksum();
    let mut cx = Context::from_waker(Waker::noop());
    let mut hasher = DefaultHasher::new();
    let mut len = 0u64;
    let outcome = loop {
        match Pin::new(&mut decoder).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                assert!(!bytes.is_empty(), "an empty piece was yielded");
                if let Some(expected) = expected {
                    let at = len as usize;
                    assert!(
                        expected.get(at..at + bytes.len()) == Some(&bytes[..]),
                        "released bytes at {at} that were not signed"
                    );
                }
                len += bytes.len() as u64;
                assert!(
                    len <= decoded_length,
                    "yielded {len} bytes of a body declared as {decoded_length}"
                );
                hasher.write(&bytes);
            }
            Poll::Ready(Some(Err(err))) => {
                let error = S3Error::from_body_error(&err)
                    .unwrap_or_else(|| panic!("not an S3 error: {err}"));
                assert!(
                    matches!(Pin::new(&mut decoder).poll_next(&mut cx), Poll::Ready(None)),
                    "the decoder went on after an error"
                );
                break Outcome::Failed { len, error };
            }
            Poll::Ready(None) => {
                break Outcome::Clean {
                    len,
                    hash: hasher.finish(),
                }
            }
            Poll::Pending => panic!("the input stream is always ready"),
        }
    };
    let peak = PEAK.load(Ordering::Relaxed) - before;
    // The input pieces were allocated before `before`: unsigned data is yielded as slices of
    // them, signed data is copied into one chunk buffer.
    assert!(
        peak <= max_chunk + OVERHEAD,
        "a decode with a {max_chunk}-byte chunk cap held {peak} bytes"
    );
    drop(decoder);
    match &outcome {
        Outcome::Clean { len, .. } => {
            assert_eq!(
                *len, decoded_length,
                "a clean end short of the declared length"
            );
            let checksum = slot.get().map(|(algorithm, _)| *algorithm);
            assert_eq!(checksum, announced, "the checksum slot after a clean end");
        }
        Outcome::Failed { len, error } => {
            assert!(
                *len == 0 || *len < decoded_length,
                "all {len} declared bytes were released before {error}"
            );
            assert!(
                slot.get().is_none(),
                "a checksum was reported for a failed body"
            );
            assert!(error.status().is_client_error(), "{error} answers 5xx");
        }
    }
    outcome
}

fn cut(body: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut sorted: Vec<usize> = cuts.iter().map(|&c| c.min(body.len())).collect();
    sorted.sort_unstable();
    for end in sorted.into_iter().chain([body.len()]) {
        if end > start {
            pieces.push(Bytes::copy_from_slice(&body[start..end]));
            start = end;
        }
    }
    pieces
}

/// Frames `data` as a client does: chunks of `sizes` (the rest in one last chunk), the final
/// chunk, and the trailer with the checksum when one is announced.
fn frame(
    data: &[u8],
    sizes: &[usize],
    signing: Option<&ChunkSigning>,
    trailer: bool,
    checksum: Option<ChecksumAlgorithm>,
) -> Vec<u8> {
    let mut chunks = Vec::new();
    let mut rest = data;
    for &size in sizes {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    if !rest.is_empty() {
        chunks.push(rest);
    }
    chunks.push(&[]);
    let mut previous = signing.map(|s| s.seed_signature);
    let mut body = Vec::new();
    for chunk in chunks {
        body.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
        if let (Some(signing), Some(prev)) = (signing, previous.as_mut()) {
            let signature = signing.chunk_signature(prev, &sha256(chunk));
            body.extend_from_slice(format!(";chunk-signature={}", hex(&signature)).as_bytes());
            *prev = signature;
        }
        body.extend_from_slice(b"\r\n");
        if !chunk.is_empty() {
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
        }
    }
    if trailer {
        let mut canonical = String::new();
        if let Some(algorithm) = checksum {
            let mut hasher = algorithm.hasher();
            hasher.update(data);
            let line = format!(
                "{}:{}",
                algorithm.header_name(),
                to_base64(&hasher.finalize())
            );
            body.extend_from_slice(format!("{line}\r\n").as_bytes());
            canonical.push_str(&format!("{line}\n"));
        }
        if let (Some(signing), Some(prev)) = (signing, previous) {
            let signature = signing.trailer_signature(&prev, &sha256(canonical.as_bytes()));
            body.extend_from_slice(
                format!("x-amz-trailer-signature:{}\r\n", hex(&signature)).as_bytes(),
            );
        }
    }
    body.extend_from_slice(b"\r\n");
    body
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut hasher = ChecksumAlgorithm::Sha256.hasher();
    hasher.update(data);
    hasher.finalize().try_into().expect("a sha256 is 32 bytes")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the input's fields front to back; past the end, fields are 0.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    fn u16(&mut self) -> usize {
        usize::from(u16::from_le_bytes(self.bytes()))
    }

    fn u32(&mut self) -> u64 {
        u64::from(u32::from_le_bytes(self.bytes()))
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Fields(data);
    let flags = u.u8();
    let signed = flags & SIGNED != 0;
    let trailer = flags & TRAILER != 0 || !signed;
    let checksum = match (flags >> 4) % 6 {
        0 => None,
        n => Some(ChecksumAlgorithm::ALL[usize::from(n) - 1]),
    }
    .filter(|_| trailer);
    let max_chunk = if flags & SMALL_CAP != 0 {
        u.u16() + 1
    } else {
        DEFAULT_MAX_CHUNK
    };
    let cut_count = u.u8() % 17;
    let cuts: Vec<usize> = (0..cut_count).map(|_| u.u16()).collect();
    let options = |signatures: ChunkSignatures, decoded_length: u64| ChunkedOptions {
        signatures,
        trailer,
        trailer_checksum: checksum,
        decoded_length,
        max_chunk,
    };
    // The signatures the target's framing carries: checked with the known key, or none.
    let known = || match signed {
        true => ChunkSignatures::Checked(signing(true)),
        false => ChunkSignatures::None,
    };

    if flags & FRAMED_BY_TARGET == 0 {
        let decoded_length = u.u32();
        let body = u.rest();
        let whole = decode(cut(body, &[]), options(known(), decoded_length), None);
        let pieces = decode(cut(body, &cuts), options(known(), decoded_length), None);
        assert_eq!(
            whole.result(),
            pieces.result(),
            "the cuts {cuts:?} changed the outcome"
        );
        if signed && matches!(whole, Outcome::Clean { .. }) {
            let other = decode(
                cut(body, &[]),
                options(ChunkSignatures::Checked(signing(false)), decoded_length),
                None,
            );
            assert!(
                matches!(&other, Outcome::Failed { error, .. } if error.code == S3ErrorCode::SignatureDoesNotMatch),
                "a body signed with one key passed under another: {other:?}"
            );
            // A forwarded upload's framing is decoded without the key (S3 checks the
            // signatures): what passes the check must decode to the same bytes without it.
            let unchecked = decode(
                cut(body, &cuts),
                options(ChunkSignatures::Unchecked, decoded_length),
                None,
            );
            assert_eq!(
                unchecked.result(),
                whole.result(),
                "the framing decoded without the key differs"
            );
        }
        return;
    }

    let size_count = u.u8() % 9;
    let sizes: Vec<usize> = (0..size_count).map(|_| u.u16()).collect();
    let change = u.u8();
    let at = u.u16();
    let payload = u.rest();
    let key = signed.then(|| signing(true));
    let mut body = frame(payload, &sizes, key.as_ref(), trailer, checksum);
    let mut decoded_length = payload.len() as u64;
    let position = at % body.len();
    let changed = match change % 8 {
        1 => {
            body[position] ^= 1 << (at % 8);
            true
        }
        2 => {
            body.insert(position, body[position]);
            true
        }
        3 => {
            body.remove(position);
            true
        }
        4 => {
            body.truncate(position);
            true
        }
        5 => {
            decoded_length = decoded_length.wrapping_add(1 + at as u64 % 3);
            true
        }
        6 if decoded_length > 0 => {
            decoded_length -= 1;
            true
        }
        _ => false,
    };
    let expected = key.is_some().then_some(payload);
    let whole = decode(cut(&body, &[]), options(known(), decoded_length), expected);
    let pieces = decode(
        cut(&body, &cuts),
        options(known(), decoded_length),
        expected,
    );
    assert_eq!(
        whole.result(),
        pieces.result(),
        "the cuts {cuts:?} changed the outcome"
    );

    let mut reference = DefaultHasher::new();
    reference.write(payload);
    let intact = Outcome::Clean {
        len: payload.len() as u64,
        hash: reference.finish(),
    };
    let over_cap = {
        // The chunk sizes `frame` used: any above the cap must be refused.
        let mut rest = payload.len();
        let mut largest = 0;
        for &size in &sizes {
            if rest == 0 {
                break;
            }
            let size = size.clamp(1, rest);
            largest = largest.max(size);
            rest -= size;
        }
        largest.max(rest) > max_chunk
    };
    if over_cap {
        assert!(
            matches!(&whole, Outcome::Failed { .. }),
            "a chunk over the {max_chunk}-byte cap passed: {whole:?}"
        );
    } else if !changed {
        assert_eq!(
            whole, intact,
            "a well-formed body did not decode to its data"
        );
    } else if signed || checksum.is_some() {
        assert!(
            whole == intact || matches!(whole, Outcome::Failed { .. }),
            "a changed body decoded to other data: {whole:?}"
        );
    }
    if signed && matches!(whole, Outcome::Clean { .. }) {
        let other = decode(
            cut(&body, &[]),
            options(ChunkSignatures::Checked(signing(false)), decoded_length),
            None,
        );
        assert!(
            matches!(&other, Outcome::Failed { error, .. } if error.code == S3ErrorCode::SignatureDoesNotMatch),
            "a body signed with one key passed under another: {other:?}"
        );
        let unchecked = decode(
            cut(&body, &cuts),
            options(ChunkSignatures::Unchecked, decoded_length),
            None,
        );
        assert_eq!(
            unchecked.result(),
            whole.result(),
            "the framing decoded without the key differs"
        );
    }
});
