//! The configuration tree: one typed TOML document, every field with a default in code.
//!
//! Loading goes file → environment overrides → typed tree → `validate()`. Errors always name the
//! key they are about (`disk.max_size: ...`), whether the value came from the file or from a
//! `BUILD_CACHE_PROXY_<SECTION>_<KEY>` variable.

mod deps;
mod env;
mod types;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use deps::{Download, MavenConfig, MavenRepository};
pub use types::*;

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
        for (i, credential) in self.s3_api.credentials.iter_mut().enumerate() {
            if let Some(file) = &credential.secret_key_file {
                let key = format!("s3_api.credentials[{i}].secret_key_file");
                credential.secret_key = Some(read_secret(&key, file)?);
            }
        }
        for (i, repository) in self.maven.repositories.iter_mut().enumerate() {
            repository.read_credentials(i, read_secret)?;
        }
        Ok(())
    }

    /// Checks what the types alone cannot: contradictions and impossible values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, addr) in [
            ("listen.gradle", &self.listen.gradle),
            ("listen.admin", &self.listen.admin),
            ("listen.s3", &self.listen.s3),
        ] {
            if !addr.is_empty() && addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::invalid(
                    name,
                    format!("{addr:?} is not an address like \"127.0.0.1:5071\" (or \"\" to turn it off)"),
                ));
            }
        }
        self.listen.cache_networks()?;
        self.listen.admin_networks()?;
        self.validate_timeouts()?;
        self.validate_limits()?;
        deps::validate(&self.maven, &self.downloads)?;
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
        if self.gradle.task_type_labels > 1000 {
            return Err(ConfigError::invalid(
                "gradle.task_type_labels",
                "must be at most 1000: each label is a series per Gradle metric",
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
        self.validate_tls()?;
        self.validate_s3_api()?;
        self.validate_node_local()?;
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
            let zero = [
                ("s3.upload_concurrency", s3.upload_concurrency),
                ("s3.queue_max_entries", s3.queue_max_entries),
                ("s3.multipart_concurrency", s3.multipart_concurrency),
            ]
            .into_iter()
            .find(|(_, value)| *value == 0);
            if let Some((name, _)) = zero {
                return Err(ConfigError::invalid(name, "must be at least 1"));
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

impl Config {
    /// Every duration must be long enough to be meant and short enough to end: a zero timeout
    /// would cut every client off (or, for some, disable the bound), an hour-long one is a
    /// typo that lets a stalled client hold its slot all that time.
    fn validate_timeouts(&self) -> Result<(), ConfigError> {
        const SECOND: Duration = Duration::from_secs(1);
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        let l = &self.limits;
        let mut checks = vec![
            (
                "listen.idle_timeout",
                self.listen.idle_timeout,
                SECOND,
                HOUR,
            ),
            (
                "listen.drain_timeout",
                self.listen.drain_timeout,
                SECOND,
                30 * MINUTE,
            ),
            (
                "limits.header_timeout",
                l.header_timeout,
                SECOND,
                5 * MINUTE,
            ),
            (
                "limits.body_stall_timeout",
                l.body_stall_timeout,
                SECOND,
                10 * MINUTE,
            ),
            (
                "limits.send_stall_timeout",
                l.send_stall_timeout,
                SECOND,
                10 * MINUTE,
            ),
        ];
        if let Some(s3) = &self.s3 {
            checks.extend([
                (
                    "s3.connect_timeout",
                    s3.connect_timeout,
                    Duration::from_millis(100),
                    5 * MINUTE,
                ),
                (
                    "s3.read_timeout",
                    s3.read_timeout,
                    Duration::from_millis(100),
                    10 * MINUTE,
                ),
                (
                    "s3.breaker_cooldown",
                    s3.breaker_cooldown,
                    Duration::from_millis(100),
                    HOUR,
                ),
                (
                    "s3.retry_max_backoff",
                    s3.retry_max_backoff,
                    SECOND,
                    24 * HOUR,
                ),
            ]);
        }
        for (key, value, min, max) in checks {
            if value < min || value > max {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "{} is out of range: must be between {} and {}",
                        humantime::format_duration(value),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let counts = [
            ("limits.max_connections", l.max_connections, 1_000_000),
            (
                "limits.max_connections_per_ip",
                l.max_connections_per_ip,
                l.max_connections,
            ),
            (
                "limits.admin_max_connections",
                l.admin_max_connections,
                10_000,
            ),
            ("limits.max_uploads", l.max_uploads, l.max_connections),
            (
                "limits.max_uploads_per_ip",
                l.max_uploads_per_ip,
                l.max_uploads,
            ),
        ];
        for (key, value, max) in counts {
            if value == 0 || value > max {
                return Err(ConfigError::invalid(
                    key,
                    format!("{value} is out of range: must be between 1 and {max}"),
                ));
            }
        }
        let header = l.max_header_bytes.as_u64();
        if !(1024..=1024 * 1024).contains(&header) {
            return Err(ConfigError::invalid(
                "limits.max_header_bytes",
                "must be between 1KiB and 1MiB",
            ));
        }
        if l.max_upload_bytes_per_ip.as_u64() < 1024 * 1024 {
            return Err(ConfigError::invalid(
                "limits.max_upload_bytes_per_ip",
                "must be at least 1MiB",
            ));
        }
        if l.body_min_rate.as_u64() == 0 {
            return Err(ConfigError::invalid(
                "limits.body_min_rate",
                "must be above 0 (bytes per second)",
            ));
        }
        if l.max_refused_body.as_u64() == 0 {
            return Err(ConfigError::invalid(
                "limits.max_refused_body",
                "must be above 0: a refused body is read so its client sees the answer",
            ));
        }
        Ok(())
    }

    /// Each bucket must be a namespace the store can keep apart from its own directories and
    /// from Gradle's, and must have S3 behind it if it sends anything there.
    fn validate_s3_api(&self) -> Result<(), ConfigError> {
        use crate::store::key::{KeyError, Namespace, RESERVED_NAMESPACES};
        self.validate_s3_api_credentials()?;
        let mut names = std::collections::HashSet::new();
        for (i, bucket) in self.s3_api.buckets.iter().enumerate() {
            let key = format!("s3_api.buckets[{i}]");
            match Namespace::new(&bucket.name) {
                Ok(_) => {}
                Err(KeyError::ReservedNamespace) => {
                    return Err(ConfigError::invalid(
                        format!("{key}.name"),
                        format!(
                            "{:?} is reserved (the cache keeps its own data under {}); choose another name",
                            bucket.name,
                            RESERVED_NAMESPACES.join(", ")
                        ),
                    ))
                }
                Err(_) => {
                    return Err(ConfigError::invalid(
                        format!("{key}.name"),
                        format!(
                            "{:?} is not a bucket name: 3 to 63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
                            bucket.name
                        ),
                    ))
                }
            }
            if !names.insert(bucket.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("bucket {:?} is listed twice", bucket.name),
                ));
            }
            if self.s3.is_none() {
                let needs_s3 = match bucket.write {
                    WritePolicy::Back | WritePolicy::Through => Some("write"),
                    WritePolicy::Local => None,
                }
                .or(bucket.backend_bucket.as_ref().map(|_| "backend_bucket"))
                .or(bucket.backend_prefix.as_ref().map(|_| "backend_prefix"));
                if let Some(field) = needs_s3 {
                    return Err(ConfigError::invalid(
                        format!("{key}.{field}"),
                        "needs an [s3] backend; without one, set write = \"local\" and no backend_bucket or backend_prefix",
                    ));
                }
            }
            if bucket.backend_bucket.as_deref() == Some("") {
                return Err(ConfigError::invalid(
                    format!("{key}.backend_bucket"),
                    "must not be empty (leave it out for s3.bucket)",
                ));
            }
            if bucket
                .backend_prefix
                .as_deref()
                .is_some_and(|p| p.starts_with('/'))
            {
                return Err(ConfigError::invalid(
                    format!("{key}.backend_prefix"),
                    "must not start with '/'",
                ));
            }
            if bucket.max_object_size.is_some_and(|s| s.as_u64() == 0) {
                return Err(ConfigError::invalid(
                    format!("{key}.max_object_size"),
                    "must be above 0 (leave it out for no limit)",
                ));
            }
            if bucket.anonymous == Access::Readwrite {
                return Err(ConfigError::invalid(
                    format!("{key}.anonymous"),
                    "must be \"none\" or \"read\": writes always need a key",
                ));
            }
        }
        self.validate_s3_api_forward(&mut names)
    }

    /// Each forwarded endpoint: a namespace of its own, host names, and an http(s) URL.
    fn validate_s3_api_forward<'a>(
        &'a self,
        names: &mut std::collections::HashSet<&'a str>,
    ) -> Result<(), ConfigError> {
        use crate::store::key::Namespace;
        if !self.s3_api.forward.is_empty() && self.listen.s3.is_empty() {
            return Err(ConfigError::invalid(
                "s3_api.forward",
                "is served on the S3 listener, which listen.s3 = \"\" turns off",
            ));
        }
        let mut hosts = std::collections::HashSet::new();
        for (i, forward) in self.s3_api.forward.iter().enumerate() {
            let key = format!("s3_api.forward[{i}]");
            if Namespace::new(&forward.namespace).is_err() {
                return Err(ConfigError::invalid(
                    format!("{key}.namespace"),
                    format!(
                        "{:?} is not a namespace: 3 to 63 lowercase letters, digits, '-' and '.', not gradle or tmp",
                        forward.namespace
                    ),
                ));
            }
            if !names.insert(forward.namespace.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.namespace"),
                    format!(
                        "{:?} is already a bucket's or another forward's namespace",
                        forward.namespace
                    ),
                ));
            }
            if forward.hosts.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.hosts"),
                    "must name at least one S3 host name",
                ));
            }
            for host in &forward.hosts {
                let valid = !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                if !valid {
                    return Err(ConfigError::invalid(
                        format!("{key}.hosts"),
                        format!("{host:?} is not a host name (no scheme, no port)"),
                    ));
                }
                if !hosts.insert(host.to_ascii_lowercase()) {
                    return Err(ConfigError::invalid(
                        format!("{key}.hosts"),
                        format!("{host:?} is forwarded twice"),
                    ));
                }
            }
            let endpoint: Result<http::Uri, _> = forward.endpoint.parse();
            let valid = endpoint.as_ref().is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some()
                    && uri.path_and_query().is_none_or(|p| p.as_str() == "/")
            });
            if !valid {
                return Err(ConfigError::invalid(
                    format!("{key}.endpoint"),
                    format!(
                        "{:?} is not an endpoint URL like https://s3.eu-west-1.amazonaws.com (no path)",
                        forward.endpoint
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        match (
            tls.cert_file.as_os_str().is_empty(),
            tls.key_file.as_os_str().is_empty(),
        ) {
            (false, true) => {
                return Err(ConfigError::invalid(
                    "tls.key_file",
                    "must be set when tls.cert_file is (or leave both empty for plain HTTP)",
                ))
            }
            (true, false) => {
                return Err(ConfigError::invalid(
                    "tls.cert_file",
                    "must be set when tls.key_file is (or leave both empty for plain HTTP)",
                ))
            }
            _ => {}
        }
        for (i, name) in tls.listeners.iter().enumerate() {
            if !TLS_LISTENER_NAMES.contains(&name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("tls.listeners[{i}]"),
                    format!("{name:?} is not a listener; known: {TLS_LISTENER_NAMES:?}"),
                ));
            }
        }
        check_duration(
            "tls.reload_interval",
            tls.reload_interval,
            Duration::from_secs(3600),
        )?;
        check_duration(
            "tls.handshake_timeout",
            tls.handshake_timeout,
            Duration::from_secs(300),
        )
    }
}

/// Addresses of AWS services on every instance, which a node-local address must never shadow.
const AWS_LINK_LOCAL: [(&str, &str); 5] = [
    ("169.254.169.254", "the instance metadata service"),
    ("169.254.169.253", "the Amazon DNS server"),
    ("169.254.169.123", "the Amazon Time Sync Service"),
    ("169.254.170.2", "the ECS credentials endpoint"),
    ("169.254.170.23", "the EKS Pod Identity agent"),
];

impl Config {
    /// A link-local or loopback IPv4 address (others only when asked for), not one of AWS's,
    /// a link name the kernel accepts, and `listen.s3` on the address.
    fn validate_node_local(&self) -> Result<(), ConfigError> {
        let node = &self.node_local;
        if node.address.is_empty() {
            if node.run_as_user != 0 || node.run_as_group != 0 {
                return Err(ConfigError::invalid(
                    "node_local.run_as_user",
                    "switches users after the node-local address is set up; it needs node_local.address",
                ));
            }
            return Ok(());
        }
        let address: std::net::Ipv4Addr = node.address.parse().map_err(|_| {
            ConfigError::invalid(
                "node_local.address",
                format!(
                    "{:?} is not an IPv4 address like \"169.254.20.11\"",
                    node.address
                ),
            )
        })?;
        if let Some((_, what)) = AWS_LINK_LOCAL.iter().find(|(a, _)| *a == node.address) {
            return Err(ConfigError::invalid(
                "node_local.address",
                format!("{address} is {what} on AWS; choose another, e.g. 169.254.20.11"),
            ));
        }
        let local = address.is_link_local() || address.is_loopback();
        if !local && !node.allow_routable_address {
            return Err(ConfigError::invalid(
                "node_local.address",
                format!(
                    "{address} is outside 169.254.0.0/16 and 127.0.0.0/8, so it may be routed beyond the node or belong to another host; set node_local.allow_routable_address = true if that is meant"
                ),
            ));
        }
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return Err(ConfigError::invalid(
                "node_local.address",
                format!("{address} cannot be a host's address"),
            ));
        }
        let name = &node.interface;
        let valid_name = (1..=15).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && name != "lo";
        if !valid_name {
            return Err(ConfigError::invalid(
                "node_local.interface",
                format!(
                    "{name:?} is not a link name: 1 to 15 letters, digits, '-', '_' or '.', not lo"
                ),
            ));
        }
        let on_address = self
            .listen
            .s3
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|listen| listen.ip() == std::net::IpAddr::V4(address));
        if !on_address {
            return Err(ConfigError::invalid(
                "listen.s3",
                format!(
                    "{:?} must be on node_local.address, e.g. \"{address}:80\"",
                    self.listen.s3
                ),
            ));
        }
        Ok(())
    }
}

/// A duration that must be above zero and at most `max`.
fn check_duration(key: &str, value: Duration, max: Duration) -> Result<(), ConfigError> {
    if value.is_zero() || value > max {
        return Err(ConfigError::invalid(
            key,
            format!(
                "must be above 0s and at most {}",
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(())
}

impl Config {
    /// Every access key once, with a secret, naming only buckets that exist.
    fn validate_s3_api_credentials(&self) -> Result<(), ConfigError> {
        let api = &self.s3_api;
        let mut keys = std::collections::HashSet::new();
        for (i, credential) in api.credentials.iter().enumerate() {
            let key = format!("s3_api.credentials[{i}]");
            let access_key = &credential.access_key;
            if access_key.is_empty() || access_key.contains(['/', ' ', ',', '=']) {
                return Err(ConfigError::invalid(
                    format!("{key}.access_key"),
                    "must be non-empty, without '/', ',', '=' or spaces (it is part of a SigV4 credential scope)",
                ));
            }
            if !keys.insert(access_key.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.access_key"),
                    format!("access key {access_key:?} is listed twice"),
                ));
            }
            match (&credential.secret_key, &credential.secret_key_file) {
                (None, None) => {
                    return Err(ConfigError::invalid(
                        format!("{key}.secret_key"),
                        "set secret_key or secret_key_file",
                    ))
                }
                (Some(secret), _) if secret.is_empty() => {
                    return Err(ConfigError::invalid(
                        format!("{key}.secret_key"),
                        "must not be empty",
                    ))
                }
                _ => {}
            }
            for bucket in credential.buckets.keys() {
                if !api.buckets.iter().any(|b| &b.name == bucket) {
                    return Err(ConfigError::invalid(
                        format!("{key}.buckets"),
                        format!("names bucket {bucket:?}, which no [[s3_api.buckets]] defines"),
                    ));
                }
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

impl ListenConfig {
    /// `cache_allow_from`, parsed.
    pub fn cache_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        parse_networks("listen.cache_allow_from", &self.cache_allow_from)
    }

    /// `admin_allow_from`, parsed.
    pub fn admin_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        parse_networks("listen.admin_allow_from", &self.admin_allow_from)
    }
}

/// The entries of an `*_allow_from` list: networks (`10.0.0.0/16`) or single addresses.
fn parse_networks(key: &str, entries: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    entries
        .iter()
        .map(|entry| {
            let text = entry.trim();
            if let Ok(net) = text.parse::<ipnet::IpNet>() {
                return Ok(net.trunc());
            }
            text.parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| {
                    ConfigError::invalid(
                        key,
                        format!(
                            "{entry:?} is neither a network like \"10.0.0.0/16\" nor an address"
                        ),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests;
