//! Checks a whole body against the digests its request declared: the signed payload sha256
//! (`x-amz-content-sha256`), `Content-MD5` and an `x-amz-checksum-*` header. The adapter keeps
//! the body's last piece back until the end was seen and every digest matched, so that whoever
//! consumes it (the store, an upload to S3) never receives the declared length of a body that
//! fails: the store commits only a stream that ended cleanly with its full length.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::Stream;
use http::HeaderMap;
use md5::Md5;
use sha2::{Digest, Sha256};

use super::error::{S3Error, S3ErrorCode};
use super::sigv4::Payload;
use crate::checksum::{ChecksumAlgorithm, ChecksumHasher};

/// The digests a request declared for its (decoded) body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedDigests {
    pub sha256: Option<[u8; 32]>,
    pub md5: Option<[u8; 16]>,
    pub checksum: Option<(ChecksumAlgorithm, Vec<u8>)>,
}

impl ExpectedDigests {
    /// The digests of a verified request: the signed sha256 of a non-chunked payload, a
    /// `Content-MD5` (malformed: `InvalidDigest`) and at most one `x-amz-checksum-*` header.
    pub fn for_request(payload: &Payload, headers: &HeaderMap) -> Result<Self, S3Error> {
        let mut digests = Self::without_checksum_headers(payload, headers)?;
        for algorithm in ChecksumAlgorithm::ALL {
            let Some(value) = headers.get(algorithm.header_name()) else {
                continue;
            };
            if digests.checksum.is_some() {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidRequest,
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                ));
            }
            let value = value.to_str().unwrap_or("");
            digests.checksum = Some((algorithm, checksum_value(algorithm, value)?));
        }
        Ok(digests)
    }

    /// The digests of a request whose `x-amz-checksum-*` headers are not its body's (the
    /// whole object's checksum on CompleteMultipartUpload).
    pub fn without_checksum_headers(
        payload: &Payload,
        headers: &HeaderMap,
    ) -> Result<Self, S3Error> {
        let sha256 = match payload {
            Payload::Sha256(sha) => Some(*sha),
            _ => None,
        };
        let md5 = match headers.get("content-md5") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|value| {
                        base64::engine::general_purpose::STANDARD
                            .decode(value.trim())
                            .ok()
                    })
                    .and_then(|raw| <[u8; 16]>::try_from(raw).ok())
                    .ok_or_else(|| {
                        S3Error::new(
                            S3ErrorCode::InvalidDigest,
                            "The Content-MD5 you specified was invalid.",
                        )
                    })?,
            ),
        };
        Ok(Self {
            sha256,
            md5,
            checksum: None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.sha256.is_none() && self.md5.is_none() && self.checksum.is_none()
    }
}

/// Passes a body through, computing the declared digests, and fails it at the end when one does
/// not match (`XAmzContentSHA256Mismatch`, `BadDigest`), before its last piece is released.
pub struct VerifyDigests<S> {
    inner: S,
    expected: ExpectedDigests,
    sha256: Option<Sha256>,
    md5: Option<Md5>,
    checksum: Option<ChecksumHasher>,
    held: Option<Bytes>,
    finished: bool,
}

impl<S> VerifyDigests<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    pub fn new(inner: S, expected: ExpectedDigests) -> Self {
        Self {
            inner,
            sha256: expected.sha256.map(|_| Sha256::new()),
            md5: expected.md5.map(|_| Md5::new()),
            checksum: expected
                .checksum
                .as_ref()
                .map(|(algorithm, _)| algorithm.hasher()),
            expected,
            held: None,
            finished: false,
        }
    }

    fn check(&mut self) -> Result<(), S3Error> {
        if let (Some(hasher), Some(expected)) = (self.sha256.take(), self.expected.sha256) {
            if hasher.finalize().as_slice() != expected {
                return Err(S3Error::new(
                    S3ErrorCode::XAmzContentSHA256Mismatch,
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
        }
        if let (Some(hasher), Some(expected)) = (self.md5.take(), self.expected.md5) {
            if hasher.finalize().as_slice() != expected {
                return Err(S3Error::new(
                    S3ErrorCode::BadDigest,
                    "The Content-MD5 you specified did not match what we received.",
                ));
            }
        }
        if let (Some(hasher), Some((algorithm, expected))) =
            (self.checksum.take(), &self.expected.checksum)
        {
            if &hasher.finalize() != expected {
                return Err(S3Error::new(
                    S3ErrorCode::BadDigest,
                    format!(
                        "The {} you specified did not match the calculated checksum.",
                        algorithm.header_name()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl<S> Stream for VerifyDigests<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(this.held.take().map(Ok));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(piece)) => {
                    if piece.is_empty() {
                        continue;
                    }
                    if let Some(hasher) = &mut this.sha256 {
                        hasher.update(&piece);
                    }
                    if let Some(hasher) = &mut this.md5 {
                        hasher.update(&piece);
                    }
                    if let Some(hasher) = &mut this.checksum {
                        hasher.update(&piece);
                    }
                    if let Some(previous) = this.held.replace(piece) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Some(Err(err)) => {
                    this.held = None;
                    this.finished = true;
                    return Poll::Ready(Some(Err(err)));
                }
                None => {
                    this.finished = true;
                    if let Err(err) = this.check() {
                        this.held = None;
                        return Poll::Ready(Some(Err(err.into_body_error())));
                    }
                }
            }
        }
    }
}

/// A checksum value a client sent (header, trailer or XML), decoded; S3's 400 when it is not
/// base64 or not of the algorithm's size.
pub fn checksum_value(algorithm: ChecksumAlgorithm, value: &str) -> Result<Vec<u8>, S3Error> {
    algorithm.decode(value).ok_or_else(|| {
        S3Error::new(
            S3ErrorCode::InvalidRequest,
            format!("Value for {} header is invalid.", algorithm.header_name()),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;
    use crate::checksum::to_base64;

    fn drain(body: &[u8], piece: usize, expected: ExpectedDigests) -> (Vec<u8>, Option<S3Error>) {
        let pieces: Vec<io::Result<Bytes>> = body
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut stream = VerifyDigests::new(futures_util::stream::iter(pieces), expected);
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        loop {
            match Pin::new(&mut stream).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(bytes))) => out.extend_from_slice(&bytes),
                Poll::Ready(Some(Err(err))) => return (out, S3Error::from_body_error(&err)),
                Poll::Ready(None) => return (out, None),
                Poll::Pending => unreachable!("test input is always ready"),
            }
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn matching_digests_pass_everything() {
        let body = b"0123456789".repeat(100);
        let sha: [u8; 32] = Sha256::digest(&body).into();
        let md5 = to_base64(&Md5::digest(&body));
        let mut crc = ChecksumAlgorithm::Crc32.hasher();
        crc.update(&body);
        let crc = to_base64(&crc.finalize());
        let expected = ExpectedDigests::for_request(
            &Payload::Sha256(sha),
            &headers(&[("content-md5", &md5), ("x-amz-checksum-crc32", &crc)]),
        )
        .unwrap();
        for piece in [1, 7, 1000, 5000] {
            assert_eq!(drain(&body, piece, expected.clone()), (body.clone(), None));
        }
    }

    #[test]
    fn a_mismatch_fails_before_the_last_piece() {
        let body = b"0123456789".repeat(100);
        let other = b"x".repeat(1000);
        let wrong_sha = ExpectedDigests {
            sha256: Some(Sha256::digest(&other).into()),
            ..Default::default()
        };
        let wrong_md5 = ExpectedDigests {
            md5: Some(Md5::digest(&other).into()),
            ..Default::default()
        };
        let wrong_crc = ExpectedDigests {
            checksum: Some((ChecksumAlgorithm::Crc32c, vec![0; 4])),
            ..Default::default()
        };
        for (expected, code) in [
            (wrong_sha, S3ErrorCode::XAmzContentSHA256Mismatch),
            (wrong_md5, S3ErrorCode::BadDigest),
            (wrong_crc, S3ErrorCode::BadDigest),
        ] {
            for piece in [1, 64, 1000] {
                let (released, err) = drain(&body, piece, expected.clone());
                assert_eq!(err.map(|e| e.code), Some(code));
                let last_piece = body.chunks(piece).last().unwrap().len();
                assert_eq!(
                    released.len(),
                    body.len() - last_piece,
                    "the last piece is kept back"
                );
            }
        }
    }

    #[test]
    fn declared_digests_are_parsed_strictly() {
        let none = ExpectedDigests::for_request(&Payload::Unsigned, &HeaderMap::new()).unwrap();
        assert!(none.is_empty());
        let bad_md5 =
            ExpectedDigests::for_request(&Payload::Unsigned, &headers(&[("content-md5", "AAAA")]));
        assert_eq!(bad_md5.unwrap_err().code, S3ErrorCode::InvalidDigest);
        let two = ExpectedDigests::for_request(
            &Payload::Unsigned,
            &headers(&[
                ("x-amz-checksum-crc32", "AAAAAA=="),
                ("x-amz-checksum-crc32c", "AAAAAA=="),
            ]),
        );
        assert_eq!(two.unwrap_err().code, S3ErrorCode::InvalidRequest);
        let short = ExpectedDigests::for_request(
            &Payload::Unsigned,
            &headers(&[("x-amz-checksum-sha256", "AAAAAA==")]),
        );
        assert_eq!(short.unwrap_err().code, S3ErrorCode::InvalidRequest);
    }
}
