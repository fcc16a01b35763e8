//! The flexible checksums S3 clients send (`x-amz-checksum-<algorithm>: <base64>`, as a header
//! or as an aws-chunked trailer), computed while a body streams.

use base64::Engine as _;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::error::{S3Error, S3ErrorCode};

/// A checksum algorithm of S3's flexible checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 5] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64Nvme,
        Self::Sha1,
        Self::Sha256,
    ];

    /// The header (or trailer) name carrying this checksum, lowercase.
    pub fn header_name(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The algorithm a header or trailer name stands for (case-insensitive).
    pub fn from_header_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.header_name().eq_ignore_ascii_case(name))
    }

    /// The size of the raw (not base64) checksum.
    pub fn raw_len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// Decodes a base64 checksum value as clients send it, refusing a value of the wrong size.
    pub fn decode(self, base64_value: &str) -> Result<Vec<u8>, S3Error> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(base64_value.trim())
            .ok()
            .filter(|raw| raw.len() == self.raw_len())
            .ok_or_else(|| {
                S3Error::new(
                    S3ErrorCode::InvalidRequest,
                    format!("Value for {} header is invalid.", self.header_name()),
                )
            })?;
        Ok(raw)
    }

    pub fn hasher(self) -> ChecksumHasher {
        let inner = match self {
            Self::Crc32 => Inner::Crc(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc)),
            Self::Crc32c => Inner::Crc(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi)),
            Self::Crc64Nvme => Inner::Crc(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme)),
            Self::Sha1 => Inner::Sha1(Sha1::new()),
            Self::Sha256 => Inner::Sha256(Sha256::new()),
        };
        ChecksumHasher {
            algorithm: self,
            inner,
        }
    }
}

/// A running checksum over a body.
#[derive(Clone)]
pub struct ChecksumHasher {
    algorithm: ChecksumAlgorithm,
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Crc(crc_fast::Digest),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl ChecksumHasher {
    pub fn algorithm(&self) -> ChecksumAlgorithm {
        self.algorithm
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Crc(crc) => crc.update(data),
            Inner::Sha1(sha) => sha.update(data),
            Inner::Sha256(sha) => sha.update(data),
        }
    }

    /// The raw checksum: CRCs big-endian, as S3 encodes them before base64.
    pub fn finalize(self) -> Vec<u8> {
        match self.inner {
            Inner::Crc(crc) => {
                let value = crc.finalize();
                let bytes = value.to_be_bytes();
                bytes[8 - self.algorithm.raw_len()..].to_vec()
            }
            Inner::Sha1(sha) => sha.finalize().to_vec(),
            Inner::Sha256(sha) => sha.finalize().to_vec(),
        }
    }
}

/// The base64 form S3 uses in headers, trailers and XML.
pub fn to_base64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(alg: ChecksumAlgorithm, data: &[u8]) -> String {
        let mut hasher = alg.hasher();
        // Two updates: the running state must equal a one-shot checksum.
        let (a, b) = data.split_at(data.len() / 2);
        hasher.update(a);
        hasher.update(b);
        to_base64(&hasher.finalize())
    }

    #[test]
    fn known_values() {
        // Standard check values of each CRC over "123456789", in S3's big-endian base64 form.
        let data = b"123456789";
        assert_eq!(
            checksum(ChecksumAlgorithm::Crc32, data),
            to_base64(&0xCBF4_3926u32.to_be_bytes())
        );
        assert_eq!(
            checksum(ChecksumAlgorithm::Crc32c, data),
            to_base64(&0xE306_9283u32.to_be_bytes())
        );
        assert_eq!(
            checksum(ChecksumAlgorithm::Crc64Nvme, data),
            to_base64(&0xAE8B_1486_0A79_9888u64.to_be_bytes())
        );
        // S3's documented checksums of the empty body.
        assert_eq!(checksum(ChecksumAlgorithm::Crc32, b""), "AAAAAA==");
        assert_eq!(
            checksum(ChecksumAlgorithm::Sha256, b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(
            checksum(ChecksumAlgorithm::Sha1, b""),
            "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
        );
    }

    #[test]
    fn names_and_decoding() {
        assert_eq!(
            ChecksumAlgorithm::from_header_name("X-Amz-Checksum-CRC32C"),
            Some(ChecksumAlgorithm::Crc32c)
        );
        assert_eq!(
            ChecksumAlgorithm::from_header_name("x-amz-checksum-md5"),
            None
        );
        assert_eq!(
            ChecksumAlgorithm::Crc32.decode("AAAAAA==").unwrap(),
            vec![0; 4]
        );
        // Right base64, wrong size for the algorithm.
        assert!(ChecksumAlgorithm::Crc64Nvme.decode("AAAAAA==").is_err());
        assert!(ChecksumAlgorithm::Crc32.decode("not base64!").is_err());
    }
}
