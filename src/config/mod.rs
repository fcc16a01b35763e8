//! The configuration tree: one typed TOML document, every field with a default in code.
//!
//! Loading goes file → environment overrides → typed tree → `validate()`. Errors always name the
//! key they are about (`disk.max_size: ...`), whether the value came from the file or from a
//! `BUILD_CACHE_PROXY_<SECTION>_<KEY>` variable.

mod env;
mod types;

use std::path::{Path, PathBuf};

pub use types::*;

/// Longest duration any setting accepts: far above every sensible value, far below an overflow.
const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Why a configuration could not be used. The message always names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Loads the config file (or the embedded default when `path` is `None`), applies the
    /// process environment's overrides, reads secret files and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_with_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (origin, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
            ),
            None => ("embedded default".to_string(), String::new()),
        };
        Self::from_toml_with_env(&origin, &text, vars)
    }

    /// Parses TOML text, then applies environment overrides, secrets and validation.
    pub fn from_toml_with_env(
        origin: &str,
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = Self::parse_toml_with_env(origin, text, vars)?;
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// The first steps of [`Config::from_toml_with_env`]: parse and apply environment overrides,
    /// but read no secret files and do not validate. For the config fuzz target, which must never
    /// open a path taken from its input (`/dev/zero` would hang it).
    pub fn parse_toml_with_env(
        origin: &str,
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut tree: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    origin: origin.to_string(),
                    message: e.to_string(),
                })?;
        env::apply_overrides(&mut tree, vars)?;
        serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::invalid(key, e.into_inner().message().to_string())
        })
    }

    /// Replaces every `*_file` secret by the file's contents (trailing newline trimmed), so the
    /// rest of the daemon only ever sees the secret itself.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        for (i, user) in self.gradle.users.iter_mut().enumerate() {
            if let Some(file) = &user.password_file {
                let key = format!("gradle.users[{i}].password_file");
                user.password = Some(read_secret(&key, file)?);
            }
        }
        Ok(())
    }

    /// Checks what the types alone cannot: contradictions and impossible values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, addr) in [
            ("listen.gradle", &self.listen.gradle),
            ("listen.admin", &self.listen.admin),
        ] {
            if !addr.is_empty() && addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::invalid(
                    name,
                    format!("{addr:?} is not an address like \"127.0.0.1:5071\" (or \"\" to turn it off)"),
                ));
            }
        }
        // Durations end up added to `Instant::now()` (the S3 breaker's cooldown is); one far
        // beyond any sensible setting would overflow there and panic the daemon mid-flight.
        let mut durations = vec![
            ("listen.idle_timeout", self.listen.idle_timeout),
            ("listen.drain_timeout", self.listen.drain_timeout),
        ];
        if let Some(s3) = &self.s3 {
            durations.extend([
                ("s3.connect_timeout", s3.connect_timeout),
                ("s3.read_timeout", s3.read_timeout),
                ("s3.breaker_cooldown", s3.breaker_cooldown),
                ("s3.retry_max_backoff", s3.retry_max_backoff),
            ]);
        }
        for (name, duration) in durations {
            if duration > MAX_DURATION {
                return Err(ConfigError::invalid(name, "must be at most 24h"));
            }
        }
        // max_size "0" turns the memory tier off, whatever max_entry_size says.
        if self.memory.max_size.as_u64() > 0 && self.memory.max_entry_size > self.memory.max_size {
            return Err(ConfigError::invalid(
                "memory.max_entry_size",
                "must not be larger than memory.max_size",
            ));
        }
        if self.memory.max_entry_size.as_u64() > u64::from(u32::MAX) {
            return Err(ConfigError::invalid(
                "memory.max_entry_size",
                "must be below 4GiB",
            ));
        }
        if self.disk.dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("disk.dir", "must not be empty"));
        }
        if self.disk.max_size.as_u64() < 1024 * 1024 {
            return Err(ConfigError::invalid(
                "disk.max_size",
                "must be at least 1MiB",
            ));
        }
        if self.gradle.max_entry_size > self.disk.max_size {
            return Err(ConfigError::invalid(
                "gradle.max_entry_size",
                "must not be larger than disk.max_size: such an entry could never be stored",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, user) in self.gradle.users.iter().enumerate() {
            let key = format!("gradle.users[{i}]");
            if user.name.is_empty() || user.name.contains(':') {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    "must be non-empty and contain no ':'",
                ));
            }
            if !names.insert(user.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("user {:?} is listed twice", user.name),
                ));
            }
            match (&user.password, &user.password_file) {
                (None, None) => {
                    return Err(ConfigError::invalid(
                        format!("{key}.password"),
                        "set password or password_file",
                    ))
                }
                (Some(p), _) if p.is_empty() => {
                    return Err(ConfigError::invalid(
                        format!("{key}.password"),
                        "must not be empty",
                    ))
                }
                _ => {}
            }
        }
        if let Some(s3) = &self.s3 {
            if s3.bucket.is_empty() {
                return Err(ConfigError::invalid(
                    "s3.bucket",
                    "must be set when [s3] is present",
                ));
            }
            if s3.prefix.starts_with('/') {
                return Err(ConfigError::invalid("s3.prefix", "must not start with '/'"));
            }
            if s3.multipart_part_size.as_u64() < 5 * 1024 * 1024 {
                return Err(ConfigError::invalid(
                    "s3.multipart_part_size",
                    "must be at least 5MiB (S3's smallest part)",
                ));
            }
            if s3.upload_concurrency == 0 || s3.queue_max_entries == 0 {
                return Err(ConfigError::invalid(
                    if s3.upload_concurrency == 0 {
                        "s3.upload_concurrency"
                    } else {
                        "s3.queue_max_entries"
                    },
                    "must be at least 1",
                ));
            }
            let endpoint_ok = s3.endpoint.is_empty()
                || s3.endpoint.starts_with("http://")
                || s3.endpoint.starts_with("https://");
            if !endpoint_ok {
                return Err(ConfigError::invalid(
                    "s3.endpoint",
                    "must start with http:// or https://",
                ));
            }
        }
        Ok(())
    }
}

fn read_secret(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests;
