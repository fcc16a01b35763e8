//! Namespaced, validated keys. A `Key` can only be built through a validating constructor, so
//! every tier can trust that it never escapes its namespace.

use std::fmt;

/// Longest key accepted in any namespace (S3's own limit is 1024 bytes).
pub const MAX_KEY_LEN: usize = 1024;
/// Longest Gradle key: Gradle sends 32 hex chars (MD5) today; leave room for longer hashes.
pub const MAX_GRADLE_KEY_LEN: usize = 128;

const GRADLE: &str = "gradle";
const DEPS: &str = "deps";
/// Names no bucket's namespace may take: `tmp` is the disk tier's temp directory, `.queue` the
/// write-back queue's (no bucket name can start with a dot anyway; it is listed so that the
/// refusal says why), `gradle` the Gradle front's namespace and `deps` the dependency proxy's.
pub const RESERVED_NAMESPACES: &[&str] = &[GRADLE, DEPS, "tmp", ".queue"];

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is longer than {0} bytes")]
    TooLong(usize),
    #[error("key must be lowercase hex")]
    NotHex,
    #[error("key contains a NUL or control character")]
    ControlChar,
    #[error("key contains an empty, '.' or '..' path segment or starts with '/'")]
    BadSegment,
    #[error("namespace name is not valid")]
    BadNamespace,
    #[error("namespace name is reserved")]
    ReservedNamespace,
}

/// A key's namespace: `gradle`, or one per S3 bucket the daemon fronts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    pub fn gradle() -> Self {
        Namespace(GRADLE.into())
    }

    /// The dependency proxy's: files pulled from Maven repositories and downloads, named
    /// `maven/<repository>/<path>` and `downloads/<name>/<path>`.
    pub fn deps() -> Self {
        Namespace(DEPS.into())
    }

    /// A bucket's namespace. The name follows S3 bucket naming (3–63 of `[a-z0-9.-]`, starting
    /// and ending with a letter or digit), and may not be one of [`RESERVED_NAMESPACES`]: the
    /// disk tier keeps its own files beside the namespaces' directories, and `gradle` keys are
    /// validated as Gradle's.
    pub fn new(name: &str) -> Result<Self, KeyError> {
        if RESERVED_NAMESPACES.contains(&name) {
            return Err(KeyError::ReservedNamespace);
        }
        let edge_ok =
            |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok = (3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && edge_ok(name.as_bytes().first())
            && edge_ok(name.as_bytes().last())
            && !name.contains("..");
        if !ok {
            return Err(KeyError::BadNamespace);
        }
        Ok(Namespace(name.to_string()))
    }

    /// A namespace as stored (in an entry header, a queue marker, a directory name): `gradle`
    /// or a bucket's.
    pub fn parse(name: &str) -> Result<Self, KeyError> {
        if name == GRADLE {
            Ok(Namespace::gradle())
        } else if name == DEPS {
            Ok(Namespace::deps())
        } else {
            Namespace::new(name)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated key within a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    ns: Namespace,
    name: String,
}

impl Key {
    /// A Gradle cache key: lowercase hex of a sane length.
    pub fn gradle(name: &str) -> Result<Key, KeyError> {
        if name.is_empty() {
            return Err(KeyError::Empty);
        }
        if name.len() > MAX_GRADLE_KEY_LEN {
            return Err(KeyError::TooLong(MAX_GRADLE_KEY_LEN));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(KeyError::NotHex);
        }
        Ok(Key {
            ns: Namespace::gradle(),
            name: name.to_string(),
        })
    }

    /// An object key (S3 style: may contain '/'), refusing anything that could be read as a
    /// path outside the namespace.
    pub fn object(ns: Namespace, name: &str) -> Result<Key, KeyError> {
        if name.is_empty() {
            return Err(KeyError::Empty);
        }
        if name.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(MAX_KEY_LEN));
        }
        if name.chars().any(char::is_control) {
            return Err(KeyError::ControlChar);
        }
        if name.starts_with('/') || name.split('/').any(|s| s == "." || s == "..") {
            return Err(KeyError::BadSegment);
        }
        Ok(Key {
            ns,
            name: name.to_string(),
        })
    }

    /// Where `name` would sort among the keys of `ns` (keys order by namespace, then name):
    /// a bound for ordered scans of a namespace, never a key to store under, since `name` is
    /// not validated.
    pub(crate) fn position(ns: &Namespace, name: &str) -> Key {
        Key {
            ns: ns.clone(),
            name: name.to_string(),
        }
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ns.0, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradle_keys_are_lowercase_hex_of_sane_length() {
        assert!(Key::gradle("0123456789abcdef0123456789abcdef").is_ok());
        assert_eq!(Key::gradle(""), Err(KeyError::Empty));
        assert_eq!(Key::gradle("../etc/passwd"), Err(KeyError::NotHex));
        assert_eq!(Key::gradle("ab/cd"), Err(KeyError::NotHex));
        assert_eq!(Key::gradle("ABCDEF"), Err(KeyError::NotHex));
        assert_eq!(Key::gradle("abc\0"), Err(KeyError::NotHex));
        assert_eq!(Key::gradle(&"a".repeat(129)), Err(KeyError::TooLong(128)));
        assert!(Key::gradle(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn object_keys_never_escape_their_namespace() {
        let ns = Namespace::new("runner-cache").unwrap();
        assert!(Key::object(ns.clone(), "project/1/default-protected").is_ok());
        for bad in ["/abs", "a/../b", "..", "a/./b", "nul\0", "new\nline"] {
            assert!(Key::object(ns.clone(), bad).is_err(), "{bad:?} accepted");
        }
        assert!(Key::object(ns, &"k".repeat(1025)).is_err());
        assert!(Namespace::new("Upper").is_err());
        assert!(Namespace::new("a..b").is_err());
    }

    #[test]
    fn namespaces_cannot_take_the_disk_tiers_own_names() {
        for name in ["tmp", "gradle", ".queue", "-ab", "ab-", ".git"] {
            assert!(Namespace::new(name).is_err(), "{name:?} accepted");
        }
        for reserved in RESERVED_NAMESPACES {
            assert_eq!(Namespace::new(reserved), Err(KeyError::ReservedNamespace));
        }
        assert!(RESERVED_NAMESPACES.contains(&crate::store::write_back::QUEUE_DIR));
        assert_eq!(Namespace::parse("gradle"), Ok(Namespace::gradle()));
        assert_eq!(Namespace::parse("deps"), Ok(Namespace::deps()));
        assert!(Namespace::parse("tmp").is_err());
        assert!(Namespace::parse("runner-cache").is_ok());
    }
}
