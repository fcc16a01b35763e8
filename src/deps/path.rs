//! What a requested path is, and so how it is kept: the rules Maven repositories follow.
//!
//! - Release files never change once published: kept on the node and in S3, served without
//!   asking the upstream again.
//! - `maven-metadata.xml` (the versions of a module, or a snapshot's builds) and every file under
//!   a `-SNAPSHOT` version change in place: kept, but revalidated once older than the
//!   repository's `metadata_max_age`.
//! - Checksum and signature files (`.sha1`, `.sha256`, `.sha512`, `.md5`, `.asc`) are served as
//!   files; every other file fetched from an upstream is checked against the upstream's own
//!   checksum file before it is kept.

/// Suffixes of the files that describe another file rather than being one.
const CHECKSUM_SUFFIXES: [&str; 5] = [".sha1", ".sha256", ".sha512", ".md5", ".asc"];

/// Longest path accepted after `/maven/<name>/` (the store's key limit, less the prefix).
pub const MAX_PATH_LEN: usize = 900;

/// How the file at a path is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathClass {
    /// Revalidated with the upstream once older than the repository's `metadata_max_age`.
    pub changing: bool,
    /// Checked against the upstream's checksum file before it is kept.
    pub verified: bool,
}

/// Why a path is refused (404 without asking anyone).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("path longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("directory listings are not proxied")]
    Directory,
    #[error("path has an empty, '.' or '..' segment, a backslash or a control character")]
    BadSegment,
}

/// Checks a path as requested (`org/example/lib/1.0/lib-1.0.jar`): the same text goes to the
/// upstream and names the cached copy, so it must not climb out of the repository.
pub fn check(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if path.ends_with('/') {
        return Err(PathError::Directory);
    }
    let bad_char = path.chars().any(|c| c.is_control() || c == '\\');
    // Encoded dots or slashes could name a parent once the upstream decodes them.
    let lower = path.to_ascii_lowercase();
    let encoded = lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c");
    let bad_segment = path
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..");
    if bad_char || encoded || bad_segment {
        return Err(PathError::BadSegment);
    }
    Ok(())
}

/// The class of a path in a Maven repository.
pub fn maven(path: &str) -> PathClass {
    let file = file_name(path);
    let metadata = file.starts_with("maven-metadata");
    let snapshot = path
        .split('/')
        .rev()
        .skip(1)
        .any(|dir| dir.ends_with("-SNAPSHOT"));
    PathClass {
        changing: metadata || snapshot,
        verified: !is_checksum(file) && !metadata,
    }
}

/// The class of a path under a download: every file is immutable (a distribution's name
/// carries its version).
pub fn download(path: &str) -> PathClass {
    PathClass {
        changing: false,
        verified: !is_checksum(file_name(path)),
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_checksum(file: &str) -> bool {
    CHECKSUM_SUFFIXES
        .iter()
        .any(|suffix| file.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_immutable_and_verified() {
        let jar = maven("org/example/lib/1.0/lib-1.0.jar");
        assert_eq!(
            jar,
            PathClass {
                changing: false,
                verified: true
            }
        );
        assert!(!maven("org/example/lib/1.0/lib-1.0.jar.sha1").verified);
        assert!(!maven("org/example/lib/1.0/lib-1.0.pom.asc").verified);
        assert!(maven("org/example/lib/1.0/lib-1.0.module").verified);
    }

    #[test]
    fn metadata_and_snapshots_change() {
        let metadata = maven("org/example/lib/maven-metadata.xml");
        assert!(metadata.changing && !metadata.verified);
        assert!(maven("org/example/lib/maven-metadata.xml.sha1").changing);
        let snapshot = maven("org/example/lib/1.1-SNAPSHOT/lib-1.1-20261206.101010-1.jar");
        assert!(snapshot.changing && snapshot.verified);
        // A file merely named like a snapshot is not under a snapshot version.
        assert!(!maven("org/example/lib/1.0/lib-1.0-SNAPSHOT.txt").changing);
        assert!(!download("gradle-8.10-bin.zip").changing);
        assert!(!download("gradle-8.10-bin.zip.sha256").verified);
    }

    #[test]
    fn paths_cannot_climb_out() {
        assert!(check("org/example/lib/1.0/lib-1.0.jar").is_ok());
        for bad in [
            "",
            "org/../etc/passwd",
            "./a",
            "a//b",
            "a/b/",
            "/abs",
            "a\\b",
            "a/%2e%2e/b",
            "a%2Fb",
            "new\nline",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(check(&"a".repeat(901)), Err(PathError::TooLong));
    }
}
