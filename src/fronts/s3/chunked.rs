//! A streaming decoder of `aws-chunked` request bodies.
//!
//! Framing: `<hex size>[;chunk-signature=<64 hex>]\r\n<data>\r\n`, repeated, then a final
//! zero-size chunk, then optional trailer lines (`x-amz-checksum-crc32:<base64>\r\n`, and for the
//! signed variant `x-amz-trailer-signature:<64 hex>\r\n`), then `\r\n`.
//!
//! With signed chunks, a chunk's bytes are released downstream only after its signature (which
//! chains from the previous one, the first from the request's signature) checked out, so a chunk
//! is buffered whole: at most one, of at most [`ChunkedOptions::max_chunk`] bytes. Unsigned
//! chunks stream through. In both cases the decoder keeps back the last byte (signed) or the last
//! piece (unsigned) until the final chunk, the trailer's signature and checksum and the
//! `x-amz-decoded-content-length` all checked out: whoever consumes the stream (the store, an
//! upload to S3) never sees the whole declared length of a body that then fails.
//!
//! A third mode reads the framing alone ([`ChunkSignatures::Unchecked`]): for the forward mode,
//! which passes a signed body on to S3 unchanged and keeps a copy of its data, and has no key to
//! check the chunk signatures with (S3 checks them). The signatures must be there and be hex;
//! the chunks then stream through as unsigned ones do, with the same limits and checks of the
//! length and the trailer checksum.
//!
//! Errors are [`S3Error`]s inside `io::Error`s ([`S3Error::from_body_error`] gets them back).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{S3Error, S3ErrorCode};
use super::sigv4::{ChunkSigning, Payload};
use crate::checksum::{ChecksumAlgorithm, ChecksumHasher};

/// The largest chunk we buffer to check its signature. The SDKs send 64 KiB (Go v2, JS v3,
/// minio-go) or 128 KiB (Java v1) chunks; 1 MiB leaves room and bounds memory per upload.
pub const DEFAULT_MAX_CHUNK: usize = 1 << 20;
/// Longest chunk header line: 16 hex digits, `;chunk-signature=`, 64 hex digits, CRLF fit in 100.
const MAX_CHUNK_HEADER: usize = 256;
/// Largest trailer section; a checksum and a signature line are under 200 bytes.
const MAX_TRAILER_SECTION: usize = 4096;

/// A slot that holds the trailer checksum once the body ended and it checked out, so that the
/// object keeps it (and the front answers it back) as S3 does.
pub type TrailerChecksum = crate::checksum::LateChecksum;

/// What the chunk headers (and the trailer) carry and what is done with it.
#[derive(Debug, Clone)]
pub enum ChunkSignatures {
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: no chunk extension at all.
    None,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]` of a request this node verified: each
    /// chunk's signature is checked before its bytes are released.
    Checked(ChunkSigning),
    /// Signed chunks someone else verifies (S3, for a forwarded upload): every chunk header
    /// must carry a hex `chunk-signature`, which is not checked.
    Unchecked,
}

impl ChunkSignatures {
    fn signed(&self) -> bool {
        !matches!(self, ChunkSignatures::None)
    }
}

/// How to decode one `aws-chunked` body.
#[derive(Debug, Clone)]
pub struct ChunkedOptions {
    pub signatures: ChunkSignatures,
    /// Whether trailers may follow the final chunk (the `-TRAILER` variants); with signed chunks
    /// the trailer then carries its own signature.
    pub trailer: bool,
    /// The checksum the client announced in `x-amz-trailer`, checked against the decoded data.
    pub trailer_checksum: Option<ChecksumAlgorithm>,
    /// `x-amz-decoded-content-length`: the body's real length.
    pub decoded_length: u64,
    pub max_chunk: usize,
}

impl ChunkedOptions {
    /// The options for a verified request, or `None` when its body is not `aws-chunked`.
    pub fn for_request(payload: &Payload, headers: &HeaderMap) -> Result<Option<Self>, S3Error> {
        let (signatures, trailer) = match payload {
            Payload::SignedChunks { signing, trailer } => {
                (ChunkSignatures::Checked(signing.clone()), *trailer)
            }
            Payload::UnsignedChunksWithTrailer => (ChunkSignatures::None, true),
            Payload::Unsigned | Payload::Sha256(_) => return Ok(None),
        };
        Self::from_headers(signatures, trailer, headers).map(Some)
    }

    /// The options to read the framing of a body this node passes on without verifying its
    /// request (the S3 forward mode), from its `x-amz-content-sha256`; `None` when the body is
    /// not `aws-chunked`.
    pub fn framing_only(headers: &HeaderMap) -> Result<Option<Self>, S3Error> {
        let Some(payload) = headers.get("x-amz-content-sha256") else {
            return Ok(None);
        };
        let (signatures, trailer) = match payload.as_bytes() {
            b"STREAMING-UNSIGNED-PAYLOAD-TRAILER" => (ChunkSignatures::None, true),
            b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD" | b"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD" => {
                (ChunkSignatures::Unchecked, false)
            }
            b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
            | b"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER" => {
                (ChunkSignatures::Unchecked, true)
            }
            _ => return Ok(None),
        };
        Self::from_headers(signatures, trailer, headers).map(Some)
    }

    fn from_headers(
        signatures: ChunkSignatures,
        trailer: bool,
        headers: &HeaderMap,
    ) -> Result<Self, S3Error> {
        let decoded_length = headers
            .get("x-amz-decoded-content-length")
            .ok_or_else(|| {
                S3Error::new(
                    S3ErrorCode::MissingContentLength,
                    "You must provide the x-amz-decoded-content-length header for a streaming upload.",
                )
            })?
            .to_str()
            .ok()
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or_else(|| {
                S3Error::new(
                    S3ErrorCode::InvalidArgument,
                    "x-amz-decoded-content-length is not a number.",
                )
            })?;
        let trailer_checksum = match headers.get("x-amz-trailer") {
            None => None,
            Some(_) if !trailer => {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidRequest,
                    "x-amz-trailer needs a STREAMING-…-TRAILER x-amz-content-sha256.",
                ))
            }
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|name| ChecksumAlgorithm::from_header_name(name.trim()))
                    .ok_or_else(|| {
                        S3Error::new(
                            S3ErrorCode::InvalidRequest,
                            "x-amz-trailer must name one x-amz-checksum-* trailer.",
                        )
                    })?,
            ),
        };
        Ok(Self {
            signatures,
            trailer,
            trailer_checksum,
            decoded_length,
            max_chunk: DEFAULT_MAX_CHUNK,
        })
    }
}

enum State {
    /// Reading a chunk header line into `line`.
    Header,
    /// Reading `remaining` bytes of chunk data.
    Data { remaining: u64 },
    /// Reading the CRLF after chunk data; `seen` of its two bytes matched so far.
    DataEnd { seen: usize },
    /// Reading trailer lines after the final chunk, up to the empty line.
    Trailer,
    /// Everything checked; waiting for the end of the underlying body.
    End,
    /// The end of the body was seen and the held-back bytes released.
    Done,
    /// An error was returned; the stream yields nothing more.
    Failed,
}

/// Decodes an `aws-chunked` body from `S` (the request body), yielding the decoded data.
pub struct AwsChunkedDecoder<S> {
    inner: S,
    inner_ended: bool,
    options: ChunkedOptions,
    state: State,
    /// Input not yet consumed.
    input: Bytes,
    /// The chunk header or trailer line being read.
    line: Vec<u8>,
    /// Trailer lines as `name:value\n`, the signature line apart.
    trailers: Vec<(String, String)>,
    trailer_bytes: usize,
    trailer_signature: Option<[u8; 32]>,
    /// Signed mode: the expected signature of the chunk being read, its hash and its data.
    chunk_signature: [u8; 32],
    chunk_hash: Sha256,
    chunk_data: BytesMut,
    previous_signature: [u8; 32],
    /// Data verified but kept back until the whole body checked out.
    held: Option<Bytes>,
    ready: VecDeque<Bytes>,
    decoded: u64,
    checksum: Option<ChecksumHasher>,
    /// The trailer checksum once it matched; published to `checksum_out` only at the clean end,
    /// since the length check or data after the trailer can still fail the body.
    checksum_matched: Option<(ChecksumAlgorithm, Vec<u8>)>,
    checksum_out: TrailerChecksum,
}

fn error(code: S3ErrorCode, message: impl Into<std::borrow::Cow<'static, str>>) -> S3Error {
    S3Error::new(code, message)
}

fn framing(message: &'static str) -> S3Error {
    error(S3ErrorCode::InvalidRequest, message)
}

impl<S> AwsChunkedDecoder<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    pub fn new(inner: S, options: ChunkedOptions) -> Self {
        let previous_signature = match &options.signatures {
            ChunkSignatures::Checked(signing) => signing.seed_signature,
            ChunkSignatures::None | ChunkSignatures::Unchecked => [0; 32],
        };
        Self {
            inner,
            inner_ended: false,
            checksum: options.trailer_checksum.map(ChecksumAlgorithm::hasher),
            options,
            state: State::Header,
            input: Bytes::new(),
            line: Vec::new(),
            trailers: Vec::new(),
            trailer_bytes: 0,
            trailer_signature: None,
            chunk_signature: [0; 32],
            chunk_hash: Sha256::new(),
            chunk_data: BytesMut::new(),
            previous_signature,
            held: None,
            ready: VecDeque::new(),
            decoded: 0,
            checksum_matched: None,
            checksum_out: TrailerChecksum::default(),
        }
    }

    /// Publishes the verified trailer checksum to `slot` (instead of a slot of its own).
    pub fn publishing_to(mut self, slot: TrailerChecksum) -> Self {
        self.checksum_out = slot;
        self
    }

    /// Where the verified trailer checksum appears once the body ended cleanly.
    pub fn trailer_checksum(&self) -> TrailerChecksum {
        self.checksum_out.clone()
    }

    /// Moves input into `line` up to and including a `\n`; true once the line is complete.
    fn read_line(&mut self, limit: usize, too_long: &'static str) -> Result<bool, S3Error> {
        let newline = self.input.iter().position(|&b| b == b'\n');
        let take = newline.map_or(self.input.len(), |at| at + 1);
        if self.line.len() + take > limit {
            return Err(framing(too_long));
        }
        self.line.extend_from_slice(&self.input.split_to(take));
        Ok(newline.is_some())
    }

    /// The line read, without its CRLF.
    fn take_line(&mut self, what: &'static str) -> Result<String, S3Error> {
        let line = std::mem::take(&mut self.line);
        let Some(content) = line.strip_suffix(b"\r\n") else {
            return Err(framing(what));
        };
        String::from_utf8(content.to_vec()).map_err(|_| framing(what))
    }

    fn on_chunk_header(&mut self) -> Result<(), S3Error> {
        let line = self.take_line("A chunk header does not end in CRLF.")?;
        let (size, signature) = match line.split_once(';') {
            Some((size, extension)) => (size, Some(extension)),
            None => (line.as_str(), None),
        };
        let size =
            (!size.is_empty() && size.len() <= 16 && size.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(size, 16).ok())
                .flatten()
                .ok_or_else(|| framing("A chunk size is not hexadecimal."))?;
        match (&self.options.signatures, signature) {
            (ChunkSignatures::Checked(_), Some(extension)) => {
                let hex_signature = extension
                    .strip_prefix("chunk-signature=")
                    .filter(|sig| sig.len() == 64)
                    .ok_or_else(|| framing("A chunk header has no chunk-signature."))?;
                hex::decode_to_slice(hex_signature, &mut self.chunk_signature)
                    .map_err(|_| framing("A chunk signature is not hexadecimal."))?;
            }
            // Any length: SigV4a's ECDSA signatures are longer than SigV4's 64 digits.
            (ChunkSignatures::Unchecked, Some(extension)) => {
                let hex_signature = extension
                    .strip_prefix("chunk-signature=")
                    .filter(|sig| !sig.is_empty())
                    .ok_or_else(|| framing("A chunk header has no chunk-signature."))?;
                if !hex_signature.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(framing("A chunk signature is not hexadecimal."));
                }
            }
            (ChunkSignatures::Checked(_) | ChunkSignatures::Unchecked, None) => {
                return Err(framing("A chunk header has no chunk-signature."))
            }
            (ChunkSignatures::None, Some(_)) => {
                return Err(framing("An unsigned chunk carries a chunk extension."))
            }
            (ChunkSignatures::None, None) => {}
        }
        if size > self.options.max_chunk as u64 {
            return Err(error(
                S3ErrorCode::InvalidRequest,
                format!(
                    "A chunk of {size} bytes is larger than this endpoint's limit of {} bytes.",
                    self.options.max_chunk
                ),
            ));
        }
        if self.decoded + size > self.options.decoded_length {
            return Err(error(
                S3ErrorCode::InvalidRequest,
                "The chunks hold more data than x-amz-decoded-content-length.",
            ));
        }
        if let ChunkSignatures::Checked(_) = self.options.signatures {
            self.chunk_hash = Sha256::new();
            // The byte kept back from the previous chunk goes first: it is verified already.
            let held = self.held.take().unwrap_or_default();
            self.chunk_data = BytesMut::with_capacity(held.len() + size as usize);
            self.chunk_data.extend_from_slice(&held);
        }
        if size == 0 {
            self.verify_chunk()?;
            self.state = State::Trailer;
        } else {
            self.state = State::Data { remaining: size };
        }
        Ok(())
    }

    /// Checks the signature of the chunk just read and releases all of it but its last byte.
    fn verify_chunk(&mut self) -> Result<(), S3Error> {
        let ChunkSignatures::Checked(signing) = &self.options.signatures else {
            return Ok(());
        };
        let hash: [u8; 32] = std::mem::take(&mut self.chunk_hash).finalize().into();
        let expected = signing.chunk_signature(&self.previous_signature, &hash);
        if !bool::from(expected.ct_eq(&self.chunk_signature)) {
            return Err(error(
                S3ErrorCode::SignatureDoesNotMatch,
                "The chunk signature we calculated does not match the signature you provided.",
            ));
        }
        self.previous_signature = expected;
        let mut data = std::mem::take(&mut self.chunk_data);
        if !data.is_empty() {
            // A copy, so that the kept-back byte does not keep the chunk's buffer alive.
            self.held = Some(Bytes::copy_from_slice(&data[data.len() - 1..]));
            data.truncate(data.len() - 1);
            if !data.is_empty() {
                self.ready.push_back(data.freeze());
            }
        }
        Ok(())
    }

    fn on_data(&mut self, piece: Bytes) {
        self.decoded += piece.len() as u64;
        if let Some(checksum) = &mut self.checksum {
            checksum.update(&piece);
        }
        if let ChunkSignatures::Checked(_) = self.options.signatures {
            self.chunk_hash.update(&piece);
            self.chunk_data.extend_from_slice(&piece);
        } else if let Some(previous) = self.held.replace(piece) {
            self.ready.push_back(previous);
        }
    }

    fn on_trailer_line(&mut self) -> Result<(), S3Error> {
        let line = self.take_line("A trailer does not end in CRLF.")?;
        if line.is_empty() {
            return self.finish_trailers();
        }
        if !self.options.trailer {
            return Err(framing("The final chunk is not followed by CRLF."));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| framing("A trailer is not name:value."))?;
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_owned();
        if name == "x-amz-trailer-signature" {
            let mut signature = [0; 32];
            let well_formed = match self.options.signatures {
                ChunkSignatures::Checked(_) => {
                    value.len() == 64 && hex::decode_to_slice(&value, &mut signature).is_ok()
                }
                ChunkSignatures::Unchecked => {
                    !value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit())
                }
                ChunkSignatures::None => false,
            };
            if !well_formed || self.trailer_signature.is_some() {
                return Err(framing("The trailer signature is malformed."));
            }
            // Unchecked: zeros, standing only for "present".
            self.trailer_signature = Some(signature);
        } else {
            self.trailers.push((name, value));
        }
        Ok(())
    }

    fn finish_trailers(&mut self) -> Result<(), S3Error> {
        if self.options.signatures.signed()
            && self.options.trailer
            && self.trailer_signature.is_none()
        {
            return Err(framing("The trailer has no x-amz-trailer-signature."));
        }
        if let (ChunkSignatures::Checked(signing), true, Some(provided)) = (
            &self.options.signatures,
            self.options.trailer,
            self.trailer_signature,
        ) {
            let mut canonical = String::new();
            for (name, value) in &self.trailers {
                canonical.push_str(name);
                canonical.push(':');
                canonical.push_str(value);
                canonical.push('\n');
            }
            let hash: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
            let expected = signing.trailer_signature(&self.previous_signature, &hash);
            if !bool::from(expected.ct_eq(&provided)) {
                return Err(error(
                    S3ErrorCode::SignatureDoesNotMatch,
                    "The trailer signature we calculated does not match the signature you provided.",
                ));
            }
        }
        let announced = self.options.trailer_checksum;
        for (name, _) in &self.trailers {
            if announced.map(ChecksumAlgorithm::header_name) != Some(name.as_str()) {
                return Err(error(
                    S3ErrorCode::InvalidRequest,
                    format!("The trailer {name} was not announced in x-amz-trailer."),
                ));
            }
        }
        if let Some(algorithm) = announced {
            let sent = self
                .trailers
                .iter()
                .find(|(name, _)| name == algorithm.header_name())
                .ok_or_else(|| {
                    error(
                        S3ErrorCode::InvalidRequest,
                        format!(
                            "The trailer {} announced in x-amz-trailer is missing.",
                            algorithm.header_name()
                        ),
                    )
                })?;
            let sent = super::digest::checksum_value(algorithm, &sent.1)?;
            let computed = self
                .checksum
                .take()
                .expect("a hasher exists for an announced checksum")
                .finalize();
            if sent != computed {
                return Err(error(
                    S3ErrorCode::BadDigest,
                    format!(
                        "The {} you specified did not match the calculated checksum.",
                        algorithm.header_name()
                    ),
                ));
            }
            self.checksum_matched = Some((algorithm, computed));
        }
        if self.decoded != self.options.decoded_length {
            return Err(error(
                S3ErrorCode::IncompleteBody,
                "The chunks hold less data than x-amz-decoded-content-length.",
            ));
        }
        self.state = State::End;
        Ok(())
    }

    /// Consumes the input in hand; `Ok(())` when it needs more.
    fn advance(&mut self) -> Result<(), S3Error> {
        while !self.input.is_empty() && self.ready.is_empty() {
            match self.state {
                State::Header => {
                    if self.read_line(MAX_CHUNK_HEADER, "A chunk header is too long.")? {
                        self.on_chunk_header()?;
                    }
                }
                State::Data { remaining } => {
                    let take = remaining.min(self.input.len() as u64);
                    let piece = self.input.split_to(take as usize);
                    self.on_data(piece);
                    self.state = if take == remaining {
                        State::DataEnd { seen: 0 }
                    } else {
                        State::Data {
                            remaining: remaining - take,
                        }
                    };
                }
                State::DataEnd { seen } => {
                    if self.input[0] != b"\r\n"[seen] {
                        return Err(framing("Chunk data is not followed by CRLF."));
                    }
                    let _ = self.input.split_to(1);
                    if seen == 1 {
                        self.verify_chunk()?;
                        self.state = State::Header;
                    } else {
                        self.state = State::DataEnd { seen: 1 };
                    }
                }
                State::Trailer => {
                    let before = self.line.len();
                    let complete = self.read_line(
                        MAX_TRAILER_SECTION.saturating_sub(self.trailer_bytes),
                        "The trailers are too long.",
                    )?;
                    self.trailer_bytes += self.line.len() - before;
                    if complete {
                        self.on_trailer_line()?;
                    }
                }
                State::End => return Err(framing("Data follows the end of the aws-chunked body.")),
                State::Done | State::Failed => unreachable!("no input is read after the end"),
            }
        }
        Ok(())
    }
}

impl<S> Stream for AwsChunkedDecoder<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(data) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(data)));
            }
            match this.state {
                State::Done | State::Failed => return Poll::Ready(None),
                State::End if this.inner_ended => {
                    this.state = State::Done;
                    if let Some(checksum) = this.checksum_matched.take() {
                        // Set once: this is the only place that fills it.
                        this.checksum_out.set(checksum.0, checksum.1);
                    }
                    if let Some(last) = this.held.take() {
                        return Poll::Ready(Some(Ok(last)));
                    }
                    return Poll::Ready(None);
                }
                _ => {}
            }
            if this.input.is_empty() {
                if this.inner_ended {
                    this.state = State::Failed;
                    return Poll::Ready(Some(Err(error(
                        S3ErrorCode::IncompleteBody,
                        "The body ended before the final chunk.",
                    )
                    .into_body_error())));
                }
                match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                    Some(Ok(bytes)) => this.input = bytes,
                    Some(Err(err)) => {
                        this.state = State::Failed;
                        return Poll::Ready(Some(Err(err)));
                    }
                    None => this.inner_ended = true,
                }
                continue;
            }
            if let Err(err) = this.advance() {
                this.state = State::Failed;
                this.ready.clear();
                this.held = None;
                return Poll::Ready(Some(Err(err.into_body_error())));
            }
        }
    }
}

#[cfg(test)]
mod tests;
