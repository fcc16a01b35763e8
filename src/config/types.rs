//! The typed configuration tree. Every field has a `///` comment and a default, and unknown keys
//! are rejected, so a typo fails at start instead of being silently ignored.
//! `config/build-cache-proxy.toml` is the reference that documents the same tree for users.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener addresses and connection handling.
    pub listen: ListenConfig,
    /// What one client may take: connections, deadlines, sizes.
    pub limits: LimitsConfig,
    /// The in-memory tier for small entries.
    pub memory: MemoryConfig,
    /// The on-disk tier.
    pub disk: DiskConfig,
    /// The shared S3 backend; absent means a local cache only.
    pub s3: Option<S3Config>,
    /// The Gradle HTTP build cache front.
    pub gradle: GradleConfig,
    /// The S3 front: the buckets it exposes, each a namespace of the store with its own policy.
    pub s3_api: S3ApiConfig,
    /// TLS on the listeners; off while no certificate is configured.
    pub tls: TlsConfig,
    /// The node-local address `listen.s3` is bound to, made by the daemon at start.
    pub node_local: NodeLocalConfig,
    /// Maven repositories pulled through the node (`/maven/<name>/` on the Gradle listener).
    pub maven: super::deps::MavenConfig,
    /// Other immutable files pulled through the node (`/downloads/<name>/`): Gradle
    /// distributions.
    pub downloads: Vec<super::deps::Download>,
    /// Logging.
    pub log: LogConfig,
}

/// The node-local address (docs/s3-forward.md): an IPv4 address, the same on every node, that
/// the daemon makes exist in its network namespace at start (a dummy link, or `lo` when the
/// kernel has no dummy driver) before binding `listen.s3` to it. For a DaemonSet on the host
/// network, so build pods reach their node's S3 listener under a host alias. Off while
/// `address` is empty.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeLocalConfig {
    /// The address, e.g. "169.254.20.11"; `listen.s3` must be on it. "" turns this off.
    pub address: String,
    /// The dummy link made for it (at most 15 characters). Without a dummy driver the address
    /// goes on `lo` instead.
    pub interface: String,
    /// Accept an address outside 169.254.0.0/16 and 127.0.0.0/8. Any other address may be
    /// routed beyond the node, or be someone else's; refused unless this says so.
    pub allow_routable_address: bool,
    /// Once the address is set up and `listen.s3` bound (which need CAP_NET_ADMIN and, below
    /// port 1024, CAP_NET_BIND_SERVICE), switch to this user ID, which drops every capability.
    /// 0 keeps the user the daemon was started as.
    pub run_as_user: u32,
    /// The group ID to switch to with `run_as_user`.
    pub run_as_group: u32,
}

impl Default for NodeLocalConfig {
    fn default() -> Self {
        NodeLocalConfig {
            address: String::new(),
            interface: "bcp0".into(),
            allow_routable_address: false,
            run_as_user: 0,
            run_as_group: 0,
        }
    }
}

/// Where the daemon listens. An empty address turns that listener off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Gradle HTTP build cache listener.
    pub gradle: String,
    /// Admin listener: /metrics, /healthz, /readyz.
    pub admin: String,
    /// S3 API listener: GitLab Runner's cache and S3 clients (`[s3_api]`).
    pub s3: String,
    /// How long an idle keep-alive connection stays open. Must outlive Gradle's 3-minute
    /// connection pool, or Gradle reuses connections the server already closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long SIGTERM waits for in-flight requests before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Who may connect to the Gradle and S3 listeners: networks ("10.0.0.0/16") or addresses;
    /// empty admits everyone. The node itself always may. For the daemon on the host network
    /// (node_local), where NetworkPolicies do not apply; others are closed unanswered.
    pub cache_allow_from: Vec<String>,
    /// Who may connect to the admin listener (Prometheus), as `cache_allow_from`; the node
    /// itself (the kubelet's probes) always may.
    pub admin_allow_from: Vec<String>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            gradle: "127.0.0.1:5071".into(),
            admin: "127.0.0.1:9091".into(),
            s3: "127.0.0.1:9000".into(),
            idle_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(30),
            cache_allow_from: Vec::new(),
            admin_allow_from: Vec::new(),
        }
    }
}

/// Limits on what clients can hold. Build pods run untrusted code next to the daemon: each of
/// these bounds what one of them can cost the others (docs/security.md explains each).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections per cache listener; a connection over the cap is answered 503 and
    /// closed. Lowered at start if the process's file descriptor limit cannot carry it.
    pub max_connections: usize,
    /// Open connections from one client address per cache listener, so one pod cannot take
    /// every slot.
    pub max_connections_per_ip: usize,
    /// Open connections on the admin listener. It has its own budget, so probes and /metrics
    /// answer while the cache listeners are full. One client address gets an eighth of it.
    pub admin_max_connections: usize,
    /// Request bodies being stored at once; a write over the cap is refused the way its front
    /// refuses a store failure (Gradle: 2xx, not stored, counted).
    pub max_uploads: usize,
    /// Request bodies being stored at once from one client address.
    pub max_uploads_per_ip: usize,
    /// What the uploads in progress from one client address may declare in all: declared
    /// lengths count against `disk.max_size` until the upload ends, so this keeps a few pods
    /// from refusing everyone else's writes by declaring large bodies.
    pub max_upload_bytes_per_ip: ByteSize,
    /// Largest S3 object sent without a length (`Transfer-Encoding: chunked` with no
    /// `Content-Length`, as `curl -T -` and streaming clients send it). Such a body counts this
    /// much against `max_upload_bytes_per_ip` while it arrives, and takes disk space only as its
    /// bytes arrive.
    pub max_unsized_upload: ByteSize,
    /// A request head (request line and headers) must be complete this long after its first
    /// byte, or after the connection opened for the first request; else 408 and close.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Largest request head accepted; a larger one is answered 431.
    pub max_header_bytes: ByteSize,
    /// A request body must arrive at least this fast (bytes per second, on average after a
    /// head start of `body_stall_timeout`), or it is cut off with 408.
    pub body_min_rate: ByteSize,
    /// Longest pause inside a request body.
    #[serde(with = "humantime_serde")]
    pub body_stall_timeout: Duration,
    /// A response whose client stops reading is cut off once it has made no real progress
    /// (16 KiB) for this long.
    #[serde(with = "humantime_serde")]
    pub send_stall_timeout: Duration,
    /// A refused request body (bad credentials, oversize, over a cap) is read and thrown away
    /// up to this size so the client sees the answer; past it, the connection is closed.
    pub max_refused_body: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            max_connections_per_ip: 256,
            admin_max_connections: 64,
            max_uploads: 256,
            max_uploads_per_ip: 64,
            max_upload_bytes_per_ip: ByteSize::gib(2),
            max_unsized_upload: ByteSize::gib(1),
            header_timeout: Duration::from_secs(10),
            max_header_bytes: ByteSize::kib(16),
            body_min_rate: ByteSize::kib(16),
            body_stall_timeout: Duration::from_secs(30),
            send_stall_timeout: Duration::from_secs(30),
            max_refused_body: ByteSize::mib(256),
        }
    }
}

/// The memory tier: a byte-weighed cache of small entries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Total bytes held in memory. "0" turns the memory tier off.
    pub max_size: ByteSize,
    /// Only entries up to this size are kept in memory.
    pub max_entry_size: ByteSize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_size: ByteSize::mib(512),
            max_entry_size: ByteSize::mib(1),
        }
    }
}

/// The disk tier.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskConfig {
    /// Directory for entries; created if missing.
    pub dir: PathBuf,
    /// Upper bound for the bytes of all entries; least recently used entries are evicted.
    pub max_size: ByteSize,
    /// Entries up to this size are checksum-verified completely before the first byte is sent,
    /// so a corrupted entry is always a clean miss. Larger entries are verified while streaming
    /// and a mismatch cuts the response off before its last bytes.
    pub verify_before_serve: ByteSize,
    /// Entries are evicted to keep at least this much space free on the filesystem, which the
    /// node shares with images and pod volumes. "0" turns the floor off.
    pub min_free: ByteSize,
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            dir: PathBuf::from("./data"),
            max_size: ByteSize::gib(20),
            verify_before_serve: ByteSize::mib(128),
            min_free: ByteSize::gib(1),
        }
    }
}

/// The shared S3 backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Bucket that holds every node's entries.
    pub bucket: String,
    /// Key prefix inside the bucket ("" for none; a '/' is added when missing).
    pub prefix: String,
    /// Region; empty takes it from the AWS environment (AWS_REGION, profile).
    pub region: String,
    /// Endpoint URL for S3-compatible stores; empty for AWS.
    pub endpoint: String,
    /// Path-style addressing (bucket in the path), needed by most S3-compatible stores.
    pub force_path_style: bool,
    /// TCP connect timeout to S3.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a read-through waits for S3's response headers before the miss is answered as
    /// a miss. Keep it well under the clients' own timeouts (GitLab's helper waits 30s).
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Attempts per S3 request, the first included.
    pub max_attempts: u32,
    /// Consecutive S3 failures that open the circuit breaker: while open, misses skip S3.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one request probes S3 again.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Write-back uploads running at once.
    pub upload_concurrency: usize,
    /// Entries waiting for upload before new writes are refused (nothing is dropped silently).
    pub queue_max_entries: usize,
    /// Longest wait between retries of a failing upload.
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Bodies above this size are uploaded in multipart parts of this size.
    pub multipart_part_size: ByteSize,
    /// Parts of one multipart upload sent at once (each is read from the entry file as it goes,
    /// so this bounds connections, not memory).
    pub multipart_concurrency: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            region: String::new(),
            endpoint: String::new(),
            force_path_style: false,
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(10),
            max_attempts: 3,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(10),
            upload_concurrency: 4,
            queue_max_entries: 100_000,
            retry_max_backoff: Duration::from_secs(60),
            multipart_part_size: ByteSize::mib(16),
            multipart_concurrency: 4,
        }
    }
}

/// What an access level allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Nothing.
    None,
    /// GET and HEAD.
    Read,
    /// GET, HEAD and PUT.
    Readwrite,
}

/// What happens to a PUT larger than `gradle.max_entry_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// Answer 2xx and store nothing: Gradle keeps its remote cache on.
    Drop,
    /// Answer 413: Gradle then disables the remote cache for the rest of the build.
    Reject,
}

/// When a write (or delete) is acknowledged relative to S3 having it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WritePolicy {
    /// Acknowledge once the local write is durable; upload from a persistent queue.
    Back,
    /// Acknowledge only after S3 has the object.
    Through,
    /// Keep it on this node; never send it to S3.
    Local,
}

/// Whether a local copy of a bucket's object may be served without asking S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FreshnessPolicy {
    /// Confirm a local hit with a conditional request to S3 first (objects are overwritten,
    /// possibly through another node).
    Revalidate,
    /// Serve a local hit as it is (objects under a key never change).
    Immutable,
}

/// The S3 front.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3ApiConfig {
    /// The region the front reports (GetBucketLocation). Clients may sign for any region.
    pub region: String,
    /// Host names under which buckets are also addressed virtual-host style
    /// (`<bucket>.<host>`); path style (`<host>/<bucket>/<key>`) always works.
    pub virtual_hosts: Vec<String>,
    /// The buckets clients see (`[[s3_api.buckets]]`).
    pub buckets: Vec<S3ApiBucket>,
    /// The access keys clients sign with (`[[s3_api.credentials]]`).
    pub credentials: Vec<S3ApiCredential>,
    /// Host names whose requests are forwarded, signed as they are, to the real S3
    /// (`[[s3_api.forward]]`): S3 authorizes them, the node serves the bytes.
    pub forward: Vec<S3ApiForward>,
}

impl Default for S3ApiConfig {
    fn default() -> Self {
        S3ApiConfig {
            region: "us-east-1".into(),
            virtual_hosts: Vec::new(),
            buckets: Vec::new(),
            credentials: Vec::new(),
            forward: Vec::new(),
        }
    }
}

/// An access key of the S3 front, e.g. the one GitLab Runner's `[runners.cache.s3]` is given.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3ApiCredential {
    pub access_key: String,
    /// The secret; prefer `secret_key_file`.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// File holding the secret (a mounted Kubernetes Secret).
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// What the key may do in each bucket: "read" or "readwrite"; buckets not named: nothing.
    pub buckets: std::collections::BTreeMap<String, Access>,
}

impl std::fmt::Debug for S3ApiCredential {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ApiCredential")
            .field("access_key", &self.access_key)
            .field("secret_key_file", &self.secret_key_file)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

/// A forwarded S3 endpoint: requests whose `Host` is one of `hosts` (or `<bucket>.<host>`)
/// were signed by the client for the real S3 and are sent there unchanged; the daemon holds
/// no credentials for them. Objects are cached under `namespace` as `<bucket>/<key>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3ApiForward {
    /// The cache namespace of this endpoint's objects (bucket naming rules; must not be an
    /// `[[s3_api.buckets]]` name). Never written to `[s3]`: the clients' own requests do that.
    pub namespace: String,
    /// The S3 host names clients sign for, without a port, e.g. `s3.eu-west-1.amazonaws.com`.
    /// `<bucket>.<host>` (virtual-host style) is forwarded too.
    pub hosts: Vec<String>,
    /// Where the requests go: `https://s3.eu-west-1.amazonaws.com` (or `http://` for a test
    /// server). The `Host` header stays the client's, so its signature still holds.
    pub endpoint: String,
    /// Longest wait for a connection to the endpoint.
    #[serde(default = "default_forward_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for the endpoint's response head once the request (and its body) is sent.
    #[serde(default = "default_forward_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Whether objects S3 stores under SSE-KMS (`aws:kms`, `aws:kms:dsse`) get a copy on the
    /// node. Off by default: S3 may answer the node's `If-None-Match` with 304 to a principal
    /// that may read the object but not decrypt it (`s3:GetObject` without `kms:Decrypt`),
    /// who would then get the plaintext from the node. Turn it on only where every principal
    /// that may read the bucket may also use its keys.
    #[serde(default)]
    pub cache_kms: bool,
}

fn default_forward_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_forward_response_timeout() -> Duration {
    Duration::from_secs(60)
}

/// One bucket of the S3 front.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3ApiBucket {
    /// The bucket's name as clients address it; also its namespace in the cache. S3 bucket
    /// naming; `gradle`, `deps`, `tmp` and `.queue` are reserved.
    pub name: String,
    /// The S3 bucket behind it; default: `s3.bucket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_bucket: Option<String>,
    /// Prepended to object keys in the backend bucket ("" keeps the keys as they are, so
    /// objects already written straight to S3 are served unchanged); default:
    /// `<s3.prefix><name>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_prefix: Option<String>,
    /// When writes and deletes are acknowledged: "back" (once durable locally, then applied to
    /// S3 from the persistent queue), "through" (once S3 has them) or "local" (never sent to
    /// S3). "back" and "through" need [s3].
    #[serde(default = "default_bucket_write")]
    pub write: WritePolicy,
    /// "revalidate" (a local hit is confirmed with S3 first) or "immutable".
    #[serde(default = "default_bucket_freshness")]
    pub freshness: FreshnessPolicy,
    /// Largest object kept in the local tiers; a larger one streams through from S3. Default:
    /// as large as the disk tier can hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<ByteSize>,
    /// Requests without a signature: "none" (refused, the default) or "read" (GetObject and
    /// HeadObject, as S3 answers them for a bucket whose policy makes its objects public;
    /// listing and every write still need a key).
    #[serde(default = "default_bucket_anonymous")]
    pub anonymous: Access,
}

fn default_bucket_anonymous() -> Access {
    Access::None
}

fn default_bucket_write() -> WritePolicy {
    WritePolicy::Back
}

fn default_bucket_freshness() -> FreshnessPolicy {
    FreshnessPolicy::Revalidate
}

/// The Gradle HTTP build cache front.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradleConfig {
    /// Largest entry stored; larger PUTs are handled as `oversize` says.
    pub max_entry_size: ByteSize,
    /// "drop" (2xx, nothing stored) or "reject" (413).
    pub oversize: Oversize,
    /// Access without credentials: "readwrite", "read" or "none".
    pub anonymous: Access,
    /// Write policy towards S3: "back", "through" or "local" (never sent to S3).
    pub write: WritePolicy,
    /// HTTP Basic users.
    pub users: Vec<GradleUser>,
    /// How many task types get their own `task_type` label on the Gradle metrics (the first
    /// ones seen); the rest count as `other`. Bounds the series a node exports.
    pub task_type_labels: usize,
}

impl Default for GradleConfig {
    fn default() -> Self {
        GradleConfig {
            max_entry_size: ByteSize::mib(100),
            oversize: Oversize::Drop,
            anonymous: Access::Readwrite,
            write: WritePolicy::Back,
            users: Vec::new(),
            task_type_labels: 30,
        }
    }
}

/// One HTTP Basic user of the Gradle front.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GradleUser {
    /// User name.
    pub name: String,
    /// Password; prefer `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password (a mounted Kubernetes Secret).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// "read" or "readwrite".
    pub access: Access,
}

impl std::fmt::Debug for GradleUser {
    // Never print a password, not even in a debug dump of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradleUser")
            .field("name", &self.name)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// Listener names that `tls.listeners` may contain.
pub const TLS_LISTENER_NAMES: &[&str] = &["gradle", "s3", "admin"];

/// TLS (rustls, TLS 1.2 and 1.3) on the listeners named in `listeners`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's own certificate first. Empty with `key_file` empty
    /// means plain HTTP.
    pub cert_file: PathBuf,
    /// PEM private key of the certificate: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key_file: PathBuf,
    /// Listeners that serve TLS when a certificate is configured (see [`TLS_LISTENER_NAMES`]).
    /// The admin listener stays plain HTTP by default because kubelet probes speak plain HTTP.
    pub listeners: Vec<String>,
    /// How often `cert_file` and `key_file` are read to pick up a rotated certificate.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// A TLS handshake that has not completed after this long is abandoned and the connection
    /// closed, so a silent client cannot hold a connection before it ever sends a request.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl TlsConfig {
    /// True when a certificate is configured, so the listeners in `listeners` serve TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// True when `listener` serves TLS.
    pub fn serves(&self, listener: &str) -> bool {
        self.enabled() && self.listeners.iter().any(|l| l == listener)
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            listeners: vec!["gradle".into()],
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "human" or "json".
    pub format: LogFormat,
    /// A tracing filter, e.g. "info" or "build_cache_proxy=debug".
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}
