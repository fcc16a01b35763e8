//! A multipart upload's checksum (S3's flexible checksums): the algorithm and type named when
//! the upload was created, each part's checksum computed here as the part arrives, and at the
//! completion the object's, made of the parts' and checked against what the client lists.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::MultipartError;
use crate::checksum::{multipart_checksum, ChecksumAlgorithm, ChecksumType};
use crate::store::{ObjectAttrs, CHECKSUM_TYPE_HEADER};

/// The checksum an upload was created with (`x-amz-checksum-algorithm`, `x-amz-checksum-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadChecksum {
    pub algorithm: ChecksumAlgorithm,
    pub kind: ChecksumType,
}

/// The manifest keeps the upload's checksum among its attributes under these names, which no
/// object attribute has; they are taken out again when the manifest is read.
const MANIFEST_ALGORITHM: &str = "upload-checksum-algorithm";
const MANIFEST_TYPE: &str = "upload-checksum-type";

impl UploadChecksum {
    /// The manifest's attributes: the object's, and this checksum.
    pub(super) fn in_manifest(checksum: Option<Self>, attrs: &ObjectAttrs) -> ObjectAttrs {
        let mut manifest = attrs.clone();
        if let Some(checksum) = checksum {
            manifest.kept.push((
                MANIFEST_ALGORITHM.to_string(),
                checksum.algorithm.name().to_string(),
            ));
            manifest
                .kept
                .push((MANIFEST_TYPE.to_string(), checksum.kind.name().to_string()));
        }
        manifest
    }

    /// Takes the upload's checksum out of a manifest's attributes, leaving the object's.
    pub(super) fn from_manifest(attrs: &mut ObjectAttrs) -> Option<Self> {
        let algorithm = attrs
            .kept(MANIFEST_ALGORITHM)
            .and_then(ChecksumAlgorithm::from_name);
        let kind = attrs.kept(MANIFEST_TYPE).and_then(ChecksumType::from_name);
        attrs
            .kept
            .retain(|(name, _)| name != MANIFEST_ALGORITHM && name != MANIFEST_TYPE);
        Some(UploadChecksum {
            algorithm: algorithm?,
            kind: kind?,
        })
    }
}

/// What a completion says about checksums: the parts' as listed (base64, with their
/// algorithm), and the whole object's (the request's `x-amz-checksum-<algorithm>` header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedChecksums {
    pub parts: Vec<(u32, ChecksumAlgorithm, String)>,
    pub whole: Option<(ChecksumAlgorithm, String)>,
}

/// The object's checksum, as kept headers, made of its parts' (`(number, raw checksum, length)`,
/// in order), once every checksum the client listed matches: a part's that differs is
/// `InvalidPart`, a whole object's that differs is `BadDigest`.
pub(super) fn object_checksum(
    checksum: UploadChecksum,
    parts: &[(u32, &[u8], u64)],
    listed: &ListedChecksums,
) -> Result<Vec<(String, String)>, MultipartError> {
    for (number, algorithm, value) in &listed.parts {
        let part = parts.iter().find(|(n, _, _)| n == number);
        let matches = part.is_some_and(|(_, raw, _)| {
            *algorithm == checksum.algorithm
                && checksum.algorithm.decode(value).as_deref() == Some(*raw)
        });
        // A part listed but not used (listed twice: only the last listing counts).
        if part.is_some() && !matches {
            return Err(MultipartError::InvalidPart(*number));
        }
    }
    let sums: Vec<(&[u8], u64)> = parts.iter().map(|(_, raw, len)| (*raw, *len)).collect();
    let value = multipart_checksum(checksum.algorithm, checksum.kind, &sums)
        .expect("an upload's type fits its algorithm (ChecksumType::for_upload)");
    if let Some((algorithm, expected)) = &listed.whole {
        if *algorithm != checksum.algorithm || expected.trim() != value {
            return Err(MultipartError::BadDigest);
        }
    }
    Ok(vec![
        (checksum.algorithm.header_name().to_string(), value),
        (
            CHECKSUM_TYPE_HEADER.to_string(),
            checksum.kind.name().to_string(),
        ),
    ])
}

/// A part's checksum read back from its file (the body comes first in a part file): for parts
/// received before a restart, whose checksums were not kept.
pub(super) fn of_part_file(
    algorithm: ChecksumAlgorithm,
    path: &Path,
    len: u64,
) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut hasher = algorithm.hasher();
    let mut buffer = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = buffer.len().min((len - at) as usize);
        file.read_exact_at(&mut buffer[..n], at)?;
        hasher.update(&buffer[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize())
}
