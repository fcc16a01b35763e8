//! The flexible checksums of S3 (`x-amz-checksum-<algorithm>: <base64>`): the algorithms, a
//! running checksum over a body, and what a multipart upload's checksum is made of its parts'.
//! The S3 front checks what clients send with them; the multipart store computes its parts'.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use sha1::Sha1;
use sha2::{Digest, Sha256};

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

    /// Decodes a base64 checksum value as clients send it; `None` when it is not base64 or not
    /// of this algorithm's size.
    pub fn decode(self, base64_value: &str) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(base64_value.trim())
            .ok()
            .filter(|raw| raw.len() == self.raw_len())
    }

    /// The name S3 gives the algorithm in `x-amz-checksum-algorithm` and in XML.
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// The algorithm an `x-amz-checksum-algorithm` value names (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The CRC a CRC algorithm is, `None` for the hashes.
    fn crc(self) -> Option<crc_fast::CrcAlgorithm> {
        match self {
            Self::Crc32 => Some(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            Self::Crc32c => Some(crc_fast::CrcAlgorithm::Crc32Iscsi),
            Self::Crc64Nvme => Some(crc_fast::CrcAlgorithm::Crc64Nvme),
            Self::Sha1 | Self::Sha256 => None,
        }
    }

    pub fn hasher(self) -> ChecksumHasher {
        let inner = match (self.crc(), self) {
            (Some(crc), _) => Inner::Crc(crc_fast::Digest::new(crc)),
            (None, Self::Sha1) => Inner::Sha1(Sha1::new()),
            (None, _) => Inner::Sha256(Sha256::new()),
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

/// A checksum that comes after the body it is of (an aws-chunked trailer): set once, when the
/// body ended and the checksum matched it, and read by whoever stores the body.
#[derive(Debug, Clone, Default)]
pub struct LateChecksum(Arc<OnceLock<(ChecksumAlgorithm, Vec<u8>)>>);

impl LateChecksum {
    /// Publishes the checksum (the first time only).
    pub fn set(&self, algorithm: ChecksumAlgorithm, raw: Vec<u8>) {
        let _ = self.0.set((algorithm, raw));
    }

    /// The checksum, once the body ended with it.
    pub fn get(&self) -> Option<&(ChecksumAlgorithm, Vec<u8>)> {
        self.0.get()
    }
}

/// Two handles are equal when they are the same slot.
impl PartialEq for LateChecksum {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for LateChecksum {}

/// How a multipart upload's checksum is made of its parts' (`x-amz-checksum-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    /// The checksum of the parts' checksums, followed by `-<parts>`.
    Composite,
    /// The checksum of the whole object, combined from the parts' (CRCs only).
    FullObject,
}

impl ChecksumType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Composite => "COMPOSITE",
            Self::FullObject => "FULL_OBJECT",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Composite, Self::FullObject]
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
    }

    /// What S3 makes of an upload that names `algorithm` and maybe a type: CRC64NVME is only
    /// FULL_OBJECT, the hashes only COMPOSITE, and the other CRCs COMPOSITE unless asked.
    /// `None`: a type the algorithm cannot have.
    pub fn for_upload(algorithm: ChecksumAlgorithm, asked: Option<Self>) -> Option<Self> {
        match (algorithm.crc(), algorithm, asked) {
            (_, ChecksumAlgorithm::Crc64Nvme, None | Some(Self::FullObject)) => {
                Some(Self::FullObject)
            }
            (_, ChecksumAlgorithm::Crc64Nvme, Some(Self::Composite)) => None,
            (None, _, Some(Self::FullObject)) => None,
            (_, _, asked) => Some(asked.unwrap_or(Self::Composite)),
        }
    }
}

/// A multipart upload's checksum from its parts' raw checksums and lengths, in the form S3
/// gives it (base64; a composite one followed by `-<parts>`). `None` for a full-object
/// checksum of a hash, which cannot be combined.
pub fn multipart_checksum(
    algorithm: ChecksumAlgorithm,
    kind: ChecksumType,
    parts: &[(&[u8], u64)],
) -> Option<String> {
    match kind {
        ChecksumType::Composite => {
            let mut hasher = algorithm.hasher();
            for (raw, _) in parts {
                hasher.update(raw);
            }
            Some(format!("{}-{}", to_base64(&hasher.finalize()), parts.len()))
        }
        ChecksumType::FullObject => {
            let crc = algorithm.crc()?;
            let width = algorithm.raw_len();
            let mut whole = crc_fast::checksum(crc, b"");
            for (raw, len) in parts {
                let mut be = [0u8; 8];
                be[8 - width..].copy_from_slice(raw);
                whole = crc_fast::checksum_combine(crc, whole, u64::from_be_bytes(be), *len);
            }
            Some(to_base64(&whole.to_be_bytes()[8 - width..]))
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
        assert!(ChecksumAlgorithm::Crc64Nvme.decode("AAAAAA==").is_none());
        assert!(ChecksumAlgorithm::Crc32.decode("not base64!").is_none());
        assert_eq!(
            ChecksumAlgorithm::from_name("crc64nvme"),
            Some(ChecksumAlgorithm::Crc64Nvme)
        );
    }

    fn raw(alg: ChecksumAlgorithm, data: &[u8]) -> Vec<u8> {
        let mut hasher = alg.hasher();
        hasher.update(data);
        hasher.finalize()
    }

    /// A full-object checksum combined from the parts' is the checksum of the whole body; a
    /// composite one is the checksum of the parts' checksums with their count.
    #[test]
    fn multipart_checksums_of_parts() {
        let parts: Vec<Vec<u8>> = vec![vec![b'A'; 5000], vec![b'B'; 3], vec![b'C'; 70_000]];
        let whole: Vec<u8> = parts.concat();
        for alg in [
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64Nvme,
        ] {
            let sums: Vec<Vec<u8>> = parts.iter().map(|p| raw(alg, p)).collect();
            let listed: Vec<(&[u8], u64)> = sums
                .iter()
                .zip(&parts)
                .map(|(sum, part)| (sum.as_slice(), part.len() as u64))
                .collect();
            assert_eq!(
                multipart_checksum(alg, ChecksumType::FullObject, &listed),
                Some(to_base64(&raw(alg, &whole))),
                "{alg:?}"
            );
        }
        // The suite of ceph/s3-tests gives these for three 5 MiB parts of 'A', 'B' and 'C'.
        let big: Vec<Vec<u8>> = [b'A', b'B', b'C'].map(|c| vec![c; 5 << 20]).to_vec();
        let sha: Vec<Vec<u8>> = big
            .iter()
            .map(|p| raw(ChecksumAlgorithm::Sha256, p))
            .collect();
        let listed: Vec<(&[u8], u64)> = sha.iter().map(|s| (s.as_slice(), 5 << 20)).collect();
        assert_eq!(
            multipart_checksum(ChecksumAlgorithm::Sha256, ChecksumType::Composite, &listed)
                .unwrap(),
            "uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3"
        );
        assert_eq!(
            multipart_checksum(ChecksumAlgorithm::Sha256, ChecksumType::FullObject, &listed),
            None
        );
        assert_eq!(
            ChecksumType::for_upload(ChecksumAlgorithm::Crc64Nvme, None),
            Some(ChecksumType::FullObject)
        );
        assert_eq!(
            ChecksumType::for_upload(ChecksumAlgorithm::Sha1, Some(ChecksumType::FullObject)),
            None
        );
        assert_eq!(
            ChecksumType::for_upload(ChecksumAlgorithm::Crc32, None),
            Some(ChecksumType::Composite)
        );
    }
}
