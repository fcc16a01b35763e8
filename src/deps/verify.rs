//! Checking a file from an upstream against the checksum the upstream publishes beside it.
//!
//! The digest is computed as the bytes stream into the store; at the body's end a mismatch
//! becomes the stream's error, so the store's put fails and nothing of the file becomes
//! visible in any tier. The flag tells the caller that this, not the network, was the failure.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use sha1::Digest;

use crate::store::ByteStream;

/// A checksum file's algorithm, in the order an upstream is asked for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

impl Algorithm {
    /// The checksum file's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Algorithm::Sha1 => ".sha1",
            Algorithm::Sha256 => ".sha256",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
        }
    }
}

/// A digest a file must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub algorithm: Algorithm,
    /// Lowercase hex.
    pub hex: String,
}

impl Expected {
    /// Reads a checksum file: the hex digest, alone or followed by a file name (`sha1sum`'s
    /// format), in either case. `None` when it is not a digest of this algorithm.
    pub fn parse(algorithm: Algorithm, text: &[u8]) -> Option<Expected> {
        let text = std::str::from_utf8(text).ok()?;
        let hex = text.split_whitespace().next()?.to_ascii_lowercase();
        let ok = hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then_some(Expected { algorithm, hex })
    }
}

/// What [`verified`] found, once the body has ended.
#[derive(Debug, Default)]
pub struct Outcome {
    mismatch: AtomicBool,
}

impl Outcome {
    /// The body was complete and its digest was not the expected one.
    pub fn mismatched(&self) -> bool {
        self.mismatch.load(Ordering::Acquire)
    }
}

/// `body`, which fails at its end instead of ending when its digest is not `expected`. The last
/// chunk is held back until the digest is known, so a client streamed a file that turns out not
/// to match never has it complete (its connection is cut one chunk short).
pub fn verified(body: ByteStream, expected: Expected) -> (ByteStream, Arc<Outcome>) {
    let outcome = Arc::new(Outcome::default());
    let hasher = match expected.algorithm {
        Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
        Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
    };
    let state = Some((body, hasher, None::<Bytes>));
    let seen = outcome.clone();
    let stream = futures_util::stream::unfold(state, move |state| {
        let (expected, seen) = (expected.clone(), seen.clone());
        async move {
            let (mut body, mut hasher, mut held) = state?;
            loop {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        hasher.update(&chunk);
                        if let Some(previous) = held.replace(chunk) {
                            return Some((Ok(previous), Some((body, hasher, held))));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => break,
                }
            }
            let actual = hasher.finish();
            if actual == expected.hex {
                // The last chunk, then the end.
                return held.map(|last| (Ok(last), None));
            }
            seen.mismatch.store(true, Ordering::Release);
            let error = io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} mismatch: the upstream's checksum file says {}, the file has {actual}",
                    &expected.algorithm.suffix()[1..],
                    expected.hex
                ),
            );
            Some((Err(error), None))
        }
    });
    (Box::pin(stream), outcome)
}

enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        let chunks: Vec<io::Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from(*p))).collect();
        Box::pin(futures_util::stream::iter(chunks))
    }

    async fn drain(mut stream: ByteStream) -> Result<Vec<u8>, io::Error> {
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[test]
    fn checksum_files_in_their_usual_shapes() {
        let sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d";
        for text in [
            sha1.to_string(),
            format!("{sha1}\n"),
            format!("{}  lib-1.0.jar\n", sha1.to_uppercase()),
        ] {
            let parsed = Expected::parse(Algorithm::Sha1, text.as_bytes()).unwrap();
            assert_eq!(parsed.hex, sha1);
        }
        assert!(Expected::parse(Algorithm::Sha256, sha1.as_bytes()).is_none());
        assert!(Expected::parse(Algorithm::Sha1, b"<html>not found</html>").is_none());
        assert!(Expected::parse(Algorithm::Sha1, b"").is_none());
    }

    #[tokio::test]
    async fn a_matching_body_passes_whole_and_a_tampered_one_fails_at_its_end() {
        let expected =
            Expected::parse(Algorithm::Sha1, b"a9993e364706816aba3e25717850c26c9cd0d89d").unwrap();
        let (stream, outcome) = verified(body(&[b"a", b"bc"]), expected.clone());
        assert_eq!(drain(stream).await.unwrap(), b"abc");
        assert!(!outcome.mismatched());

        // A tampered body: the error comes in place of its last chunk, so fewer bytes than
        // the whole pass before it.
        let (mut stream, outcome) = verified(body(&[b"a", b"bd"]), expected);
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"a");
        let error = stream.next().await.unwrap().unwrap_err();
        assert!(stream.next().await.is_none());
        assert!(outcome.mismatched());
        assert!(error.to_string().contains("sha1 mismatch"), "{error}");

        let sha256 = Expected::parse(
            Algorithm::Sha256,
            b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        .unwrap();
        let (stream, outcome) = verified(body(&[b"abc"]), sha256);
        assert_eq!(drain(stream).await.unwrap(), b"abc");
        assert!(!outcome.mismatched());
    }
}
