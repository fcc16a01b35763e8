//! `[maven]` and `[[downloads]]`: the upstreams the dependency proxy (`src/deps`) pulls through
//! the node, served on the Gradle listener under `/maven/<name>/` and `/downloads/<name>/`.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Maven repositories proxied under `/maven/<name>/`, and what they share.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MavenConfig {
    /// The repositories; none by default (the proxy is off).
    pub repositories: Vec<MavenRepository>,
    /// How long a fetched `maven-metadata.xml` or `-SNAPSHOT` file is served before it is
    /// revalidated with the upstream (a repository may set its own).
    #[serde(with = "humantime_serde")]
    pub metadata_max_age: Duration,
    /// How long an upstream's 404 is remembered, so the probes Gradle makes of each repository
    /// in turn do not each cost a round trip. 5xx answers and timeouts are never remembered.
    #[serde(with = "humantime_serde")]
    pub not_found_ttl: Duration,
    /// Connecting to an upstream.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Waiting for an upstream's response head, and for each piece of its body.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Largest file fetched from an upstream (a Gradle distribution is 100–200 MiB); a larger
    /// one is refused (502), never cached.
    pub max_file_size: ByteSize,
}

impl Default for MavenConfig {
    fn default() -> Self {
        MavenConfig {
            repositories: Vec::new(),
            metadata_max_age: Duration::from_secs(5 * 60),
            not_found_ttl: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            max_file_size: ByteSize::gib(2),
        }
    }
}

/// One Maven repository behind the node.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MavenRepository {
    /// Its path on the node: `/maven/<name>/` (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The upstream's base URL (`https://repo.maven.apache.org/maven2/`).
    pub url: String,
    /// HTTP Basic user for the upstream (a company repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_file: Option<PathBuf>,
    /// File holding the upstream's password (a mounted Kubernetes Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Overrides `maven.metadata_max_age` for this repository.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_max_age: Option<Duration>,
    /// Overrides `maven.not_found_ttl` for this repository.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_found_ttl: Option<Duration>,
    /// Read from the files at load; never printed.
    #[serde(skip)]
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for MavenRepository {
    // Never print the credentials, not even in a debug dump of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MavenRepository")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("metadata_max_age", &self.metadata_max_age)
            .field("not_found_ttl", &self.not_found_ttl)
            .finish_non_exhaustive()
    }
}

/// Immutable files from an upstream served under `/downloads/<name>/`: first the Gradle
/// wrapper's distributions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    /// Its path on the node: `/downloads/<name>/`.
    pub name: String,
    /// The upstream's base URL (`https://services.gradle.org/distributions/`).
    pub url: String,
}

impl MavenRepository {
    /// Reads `username_file` and `password_file` into `credentials`.
    pub(super) fn read_credentials(
        &mut self,
        index: usize,
        read: impl Fn(&str, &std::path::Path) -> Result<String, ConfigError>,
    ) -> Result<(), ConfigError> {
        let key = |field: &str| format!("maven.repositories[{index}].{field}");
        self.credentials = match (&self.username_file, &self.password_file) {
            (None, None) => None,
            (Some(user), Some(password)) => Some((
                read(&key("username_file"), user)?,
                read(&key("password_file"), password)?,
            )),
            _ => {
                return Err(ConfigError::invalid(
                    key("username_file"),
                    "username_file and password_file go together",
                ))
            }
        };
        Ok(())
    }
}

/// Checks the repositories' and downloads' names and URLs.
pub(super) fn validate(maven: &MavenConfig, downloads: &[Download]) -> Result<(), ConfigError> {
    // A name is a path segment under its section's prefix (`/maven/`, `/downloads/`): unique
    // within the section.
    let sources = maven
        .repositories
        .iter()
        .enumerate()
        .map(|(i, r)| ("maven.repositories", i, &r.name, &r.url))
        .chain(
            downloads
                .iter()
                .enumerate()
                .map(|(i, d)| ("downloads", i, &d.name, &d.url)),
        );
    let mut names = std::collections::HashSet::new();
    for (section, i, name, url) in sources {
        let key = format!("{section}[{i}]");
        if !valid_name(name) {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                format!("{name:?} must be 1-64 of letters, digits, '-', '_' and '.', not starting with '.'"),
            ));
        }
        if !names.insert((section, name.as_str())) {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                format!("{name:?} is used twice"),
            ));
        }
        let parsed: Result<http::Uri, _> = url.parse();
        let ok = parsed.as_ref().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
        });
        if !ok || uri_has_query(url) {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                format!("{url:?} is not an http:// or https:// base URL without a query"),
            ));
        }
    }
    for (key, value) in [
        ("maven.connect_timeout", maven.connect_timeout),
        ("maven.response_timeout", maven.response_timeout),
    ] {
        if value.is_zero() {
            return Err(ConfigError::invalid(key, "must be more than 0"));
        }
    }
    Ok(())
}

fn uri_has_query(url: &str) -> bool {
    url.contains('?') || url.contains('#')
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
