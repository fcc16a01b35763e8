//! Wiring: builds the tiers and fronts from a [`Config`], binds the listeners, and runs until
//! shutdown, then drains in-flight requests within `listen.drain_timeout`.
//!
//! With `[s3]`, the S3 tier goes behind memory and disk: read-through for every namespace, and
//! each namespace's writes and deletes as its policy says (`gradle.write`, and each
//! `[[s3_api.buckets]]`'s `write`): the write-back queue (restored from disk, entries re-pinned,
//! before any listener is bound, whenever a namespace writes back), write-through, or local.
//! SIGTERM stops the uploaders and leaves the queue on disk for the next start.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::config::{Config, FreshnessPolicy, WritePolicy};
use crate::deps::Deps;
use crate::fronts::admin::{AdminFront, RemoteStatus};
use crate::fronts::gradle::GradleFront;
use crate::fronts::s3::forward::Forward;
use crate::fronts::s3::front::S3Front;
use crate::gradle_meta::tally::GradleTally;
use crate::metrics::Metrics;
use crate::node_local::{NodeLocalState, Prepared};
use crate::server::body::BodyLimits;
use crate::server::deadline::Deadlines;
use crate::server::limits::Slots;
use crate::server::sources::AllowedSources;
use crate::server::tls::TlsAcceptor;
use crate::server::{self, ConnSettings, Shutdown, UploadLimits};
use crate::store::disk::{DiskSettings, DiskTier};
use crate::store::memory::MemoryTier;
use crate::store::multipart::{Multipart, MultipartSettings};
use crate::store::policy::{BackendLocation, Freshness, NamespacePolicy, Policies, WriteMode};
use crate::store::read_through::ReadThrough;
use crate::store::s3::{self, S3Tier};
use crate::store::tiered::{Remote, TieredStore};
use crate::store::write_back::{WriteBack, WriteBackSettings};
use crate::store::Namespace;

/// A started daemon: its bound addresses and the handle to stop it.
pub struct Daemon {
    pub gradle_addr: Option<SocketAddr>,
    pub s3_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    tasks: TaskTracker,
    drain_timeout: std::time::Duration,
}

impl Daemon {
    /// Opens the store and binds every configured listener; serving starts immediately.
    /// Without `[node_local]`; with it, [`crate::node_local::prepare`] and
    /// [`Daemon::start_prepared`].
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        let prepared = Prepared {
            s3_listener: None,
            state: None,
        };
        Self::start_prepared(config, prepared).await
    }

    /// [`Daemon::start`] with what ran before the runtime: with `[node_local]`, the S3
    /// listener bound on the node-local address (none if that failed) and its state, which the
    /// admin front and a metric report.
    pub async fn start_prepared(config: &Config, prepared: Prepared) -> anyhow::Result<Daemon> {
        let metrics = Arc::new(Metrics::new());
        if let Some(state) = &prepared.state {
            let listen = match state {
                NodeLocalState::Ready { listen, .. } => listen.to_string(),
                NodeLocalState::Failed { listen, .. } => listen.clone(),
            };
            metrics
                .node_local_address_ready
                .with_label_values(&[listen.as_str()])
                .set(i64::from(state.is_ready()));
        }
        metrics
            .disk_max_bytes
            .set(config.disk.max_size.as_u64() as i64);
        let memory = MemoryTier::new(
            config.memory.max_size.as_u64(),
            config.memory.max_entry_size.as_u64(),
        );
        let disk = DiskTier::open(DiskSettings {
            dir: config.disk.dir.clone(),
            max_size: config.disk.max_size.as_u64(),
            verify_before_serve: config.disk.verify_before_serve.as_u64(),
            min_free: config.disk.min_free.as_u64(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("disk.dir {}: {e}", config.disk.dir.display()))?;
        let usage = disk.usage();
        tracing::info!(dir = %config.disk.dir.display(), entries = usage.entries, bytes = usage.bytes, "disk tier opened");
        let shutdown = Shutdown::new();
        let mut store: TieredStore =
            TieredStore::new(memory.clone(), disk.clone(), metrics.clone());
        let mut remote_status = None;
        if let Some(s3_config) = &config.s3 {
            let client = s3::client::build(s3_config).await;
            let policies = policies(config);
            // The locations first: every clone below (read-through, queue) shares them.
            let s3 = S3Tier::new(client, s3_config, metrics.clone()).with_policies(&policies);
            let read = ReadThrough::new(s3.clone(), disk.clone(), memory.clone(), metrics.clone());
            let writes_back = std::iter::once(policies.of(&Namespace::gradle()))
                .chain(policies.named().map(|(_, policy)| policy))
                .any(|policy| policy.write == WriteMode::Back);
            let queue = match writes_back {
                true => {
                    let queue = WriteBack::load(
                        WriteBackSettings {
                            disk_dir: config.disk.dir.clone(),
                            max_entries: s3_config.queue_max_entries,
                            concurrency: s3_config.upload_concurrency,
                            max_backoff: s3_config.retry_max_backoff,
                            jitter: fastrand::f64,
                        },
                        disk.clone(),
                        s3.clone(),
                        metrics.clone(),
                    )
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("write-back queue in {}: {e}", config.disk.dir.display())
                    })?;
                    queue.start(shutdown.subscribe());
                    Some(queue)
                }
                false => None,
            };
            tracing::info!(
                bucket = %s3_config.bucket,
                prefix = %s3_config.prefix,
                endpoint = %s3_config.endpoint,
                queued = queue.as_ref().map_or(0, |q| q.len()),
                "S3 tier configured"
            );
            remote_status = Some(RemoteStatus {
                s3,
                queue: queue.clone(),
            });
            store = store.with_remote(Remote { read, queue });
        }
        store = store.with_policies(policies(config));
        for (namespace, policy) in store.policies().named() {
            tracing::info!(
                namespace = namespace.as_str(),
                write = ?store.write_mode(namespace),
                freshness = ?policy.freshness,
                backend = ?policy.location,
                "bucket configured"
            );
        }
        let store = Arc::new(store);

        let tasks = TaskTracker::new();
        let limits = &config.limits;
        let fd_limit = server::limits::raise_fd_limit();
        let cache_listeners = usize::from(!config.listen.gradle.is_empty())
            + usize::from(!config.listen.s3.is_empty());
        let max_connections = server::limits::connection_cap(
            limits.max_connections,
            cache_listeners,
            limits.admin_max_connections,
            fd_limit,
        );
        if max_connections < limits.max_connections {
            tracing::warn!(
                fd_limit,
                configured = limits.max_connections,
                effective = max_connections,
                "limits.max_connections lowered to what the open-file limit can carry; raise `ulimit -n`"
            );
        }
        let tls = if config.tls.enabled() {
            let acceptor = TlsAcceptor::load(&config.tls, metrics.clone())?;
            acceptor.spawn_reloader(shutdown.subscribe());
            tracing::info!(
                cert_file = %config.tls.cert_file.display(),
                listeners = ?config.tls.listeners,
                "TLS configured"
            );
            Some(Arc::new(acceptor))
        } else {
            None
        };
        // The settings of one listener: its connection cap, and TLS when `tls.listeners` names it.
        let (cache_sources, admin_sources) = (
            AllowedSources::new(config.listen.cache_networks()?),
            AllowedSources::new(config.listen.admin_networks()?),
        );
        let conn = |name: &'static str, max: usize, per_peer: usize| ConnSettings {
            idle_timeout: config.listen.idle_timeout,
            deadlines: Deadlines {
                // A head may never take longer than an idle connection may stay open.
                header_timeout: limits.header_timeout.min(config.listen.idle_timeout),
                send_stall_timeout: limits.send_stall_timeout,
                answer_plain: true,
            },
            max_header_bytes: limits.max_header_bytes.as_u64() as usize,
            slots: Slots::new(
                max as u64,
                per_peer.min(max) as u64,
                metrics.connections.with_label_values(&[name]),
            ),
            tls: tls.clone().filter(|_| config.tls.serves(name)),
            sources: match name {
                "admin" => admin_sources.clone(),
                _ => cache_sources.clone(),
            },
        };
        let uploads = UploadLimits {
            body: BodyLimits {
                min_rate: limits.body_min_rate.as_u64(),
                stall_timeout: limits.body_stall_timeout,
                max_discard: limits.max_refused_body.as_u64(),
            },
            slots: Slots::new(
                limits.max_uploads as u64,
                limits.max_uploads_per_ip as u64,
                metrics.uploads_in_progress.clone(),
            ),
            // No total: what all uploads may declare is bounded by the disk's admission.
            bytes: Slots::new(
                u64::MAX,
                limits.max_upload_bytes_per_ip.as_u64(),
                metrics.uploads_declared_bytes.clone(),
            ),
            max_unsized: limits.max_unsized_upload.as_u64(),
        };
        let mut daemon = Daemon {
            gradle_addr: None,
            s3_addr: None,
            admin_addr: None,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            drain_timeout: config.listen.drain_timeout,
        };
        // What Gradle hits saved: counted by the Gradle front, shown by the admin front.
        let tally = Arc::new(GradleTally::new(
            metrics.clone(),
            config.gradle.task_type_labels,
        ));
        if let Some(listener) = bind("listen.gradle", &config.listen.gradle).await? {
            daemon.gradle_addr = Some(listener.local_addr()?);
            let front = Arc::new(
                GradleFront::new(
                    store.clone(),
                    &config.gradle,
                    uploads.clone(),
                    metrics.clone(),
                    tally.clone(),
                )
                .with_deps(
                    Deps::new(
                        store.clone(),
                        &config.maven,
                        &config.downloads,
                        metrics.clone(),
                    )
                    .map_err(|e| anyhow::anyhow!("maven: {e}"))?,
                ),
            );
            tasks.spawn(server::serve(
                listener,
                front,
                metrics.clone(),
                conn("gradle", max_connections, limits.max_connections_per_ip),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
        // With [node_local] the listener was bound before the runtime started (or could not be).
        let s3_listener = match &prepared.state {
            Some(_) => match prepared.s3_listener {
                Some(listener) => Some(tokio::net::TcpListener::from_std(listener)?),
                None => None,
            },
            None => bind("listen.s3", &config.listen.s3).await?,
        };
        if let Some(listener) = s3_listener {
            daemon.s3_addr = Some(listener.local_addr()?);
            // Uploads left open by an earlier run come back (or are swept when stale).
            let multipart = Multipart::open(disk.clone(), MultipartSettings::default())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("multipart uploads in {}: {e}", config.disk.dir.display())
                })?;
            multipart.start(shutdown.subscribe());
            let front = S3Front::new(
                store.clone(),
                multipart,
                &config.s3_api,
                uploads.clone(),
                metrics.clone(),
            );
            // No credentials here: the clients' own signatures go to S3 with their requests.
            let forward = Forward::new(
                &config.s3_api.forward,
                store.clone(),
                uploads.clone(),
                front.body_answers(),
                metrics.clone(),
            )
            .map_err(|e| anyhow::anyhow!("s3_api.forward: {e}"))?;
            for entry in &config.s3_api.forward {
                tracing::info!(
                    namespace = %entry.namespace,
                    hosts = ?entry.hosts,
                    endpoint = %entry.endpoint,
                    "S3 forward mode configured"
                );
            }
            let front = Arc::new(front.with_forward(forward));
            tasks.spawn(server::serve(
                listener,
                front,
                metrics.clone(),
                conn("s3", max_connections, limits.max_connections_per_ip),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
        if let Some(listener) = bind("listen.admin", &config.listen.admin).await? {
            daemon.admin_addr = Some(listener.local_addr()?);
            let mut front = AdminFront::new(
                metrics.clone(),
                (memory, config.memory.max_size.as_u64()),
                disk,
                tally,
            );
            if let Some(status) = remote_status {
                front = front.with_remote(status);
            }
            if let Some(state) = prepared.state.clone() {
                front = front.with_node_local(state);
            }
            let front = Arc::new(front);
            tasks.spawn(front.clone().sample(shutdown.subscribe()));
            // The admin listener's budget is its own: probes answer while the cache is full. One
            // address gets an eighth of it, so one pod that reaches the port cannot hold all of
            // it and fail the liveness probe (kubelet and Prometheus need one or two each).
            let admin_max = limits.admin_max_connections;
            let admin_per_peer = (admin_max / 8).max(2);
            tasks.spawn(server::serve(
                listener,
                front,
                metrics.clone(),
                conn("admin", admin_max, admin_per_peer),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
        Ok(daemon)
    }

    /// Stops accepting, lets in-flight requests finish within the drain timeout.
    /// Returns false if the deadline passed with requests still running.
    pub async fn stop(self) -> bool {
        self.shutdown.trigger();
        self.tasks.close();
        tokio::time::timeout(self.drain_timeout, self.tasks.wait())
            .await
            .is_ok()
    }
}

/// Every namespace's policy from the config: Gradle's from `[gradle]` (content-addressed, so
/// immutable), each bucket's from its `[[s3_api.buckets]]` entry.
pub fn policies(config: &Config) -> Policies {
    let write_mode = |policy: WritePolicy| match policy {
        WritePolicy::Back => WriteMode::Back,
        WritePolicy::Through => WriteMode::Through,
        WritePolicy::Local => WriteMode::Local,
    };
    let gradle = NamespacePolicy {
        write: write_mode(config.gradle.write),
        ..NamespacePolicy::default()
    };
    let mut policies = Policies::new(gradle.clone()).with(Namespace::gradle(), gradle);
    for bucket in &config.s3_api.buckets {
        // Validated with the config: a bucket's name is a namespace.
        let Ok(namespace) = Namespace::new(&bucket.name) else {
            continue;
        };
        let location = config.s3.as_ref().map(|s3| BackendLocation {
            bucket: bucket
                .backend_bucket
                .clone()
                .unwrap_or_else(|| s3.bucket.clone()),
            // Today's layout, `<s3.prefix><namespace>/` (the S3 tier's rule: a non-empty prefix
            // gets a '/' when it has none).
            prefix: bucket.backend_prefix.clone().unwrap_or_else(|| {
                let base = &s3.prefix;
                let sep = if base.is_empty() || base.ends_with('/') {
                    ""
                } else {
                    "/"
                };
                format!("{base}{sep}{}/", bucket.name)
            }),
        });
        let policy = NamespacePolicy {
            write: write_mode(bucket.write),
            freshness: match bucket.freshness {
                FreshnessPolicy::Revalidate => Freshness::Revalidate,
                FreshnessPolicy::Immutable => Freshness::Immutable,
            },
            max_object_size: bucket.max_object_size.map(|size| size.as_u64()),
            location,
        };
        policies = policies.with(namespace, policy);
    }
    // Dependencies: written back to the default bucket, under `<s3.prefix>deps/`, so that other
    // nodes read them from there instead of the internet. Immutable to the store: a changing
    // file (maven-metadata.xml, a snapshot) is revalidated with its upstream, not with S3.
    if !config.maven.repositories.is_empty() || !config.downloads.is_empty() {
        let policy = NamespacePolicy {
            write: WriteMode::Back,
            freshness: Freshness::Immutable,
            max_object_size: None,
            location: None,
        };
        policies = policies.with(Namespace::deps(), policy);
    }
    // A forwarded endpoint's copies are this node's alone: the clients' requests write S3, and
    // S3 is asked (with the client's signature) before a copy is served.
    for forward in &config.s3_api.forward {
        let Ok(namespace) = Namespace::new(&forward.namespace) else {
            continue;
        };
        let policy = NamespacePolicy {
            write: WriteMode::Local,
            freshness: Freshness::Immutable,
            max_object_size: None,
            location: None,
        };
        policies = policies.with(namespace, policy);
    }
    policies
}

async fn bind(key: &str, addr: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    server::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{key}: cannot listen on {addr}: {e}"))
}
