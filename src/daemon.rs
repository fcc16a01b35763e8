//! Wiring: builds the tiers and fronts from a [`Config`], binds the listeners, and runs until
//! shutdown, then drains in-flight requests within `listen.drain_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::fronts::admin::AdminFront;
use crate::fronts::gradle::GradleFront;
use crate::metrics::Metrics;
use crate::server::{self, ConnSettings, Shutdown};
use crate::store::disk::{DiskSettings, DiskTier};
use crate::store::memory::MemoryTier;
use crate::store::tiered::TieredStore;

/// A started daemon: its bound addresses and the handle to stop it.
pub struct Daemon {
    pub gradle_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    tasks: TaskTracker,
    drain_timeout: std::time::Duration,
}

impl Daemon {
    /// Opens the store and binds every configured listener; serving starts immediately.
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        let metrics = Arc::new(Metrics::new());
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
        })
        .await
        .map_err(|e| anyhow::anyhow!("disk.dir {}: {e}", config.disk.dir.display()))?;
        let usage = disk.usage();
        tracing::info!(dir = %config.disk.dir.display(), entries = usage.entries, bytes = usage.bytes, "disk tier opened");
        let store = Arc::new(TieredStore::new(
            memory.clone(),
            disk.clone(),
            metrics.clone(),
        ));

        let shutdown = Shutdown::new();
        let tasks = TaskTracker::new();
        let conn = ConnSettings {
            idle_timeout: config.listen.idle_timeout,
        };
        let mut daemon = Daemon {
            gradle_addr: None,
            admin_addr: None,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            drain_timeout: config.listen.drain_timeout,
        };
        if let Some(listener) = bind("listen.gradle", &config.listen.gradle).await? {
            daemon.gradle_addr = Some(listener.local_addr()?);
            let front = Arc::new(GradleFront::new(
                store.clone(),
                &config.gradle,
                config.listen.idle_timeout,
                metrics.clone(),
            ));
            tasks.spawn(server::serve(
                listener,
                front,
                metrics.clone(),
                conn.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
        if let Some(listener) = bind("listen.admin", &config.listen.admin).await? {
            daemon.admin_addr = Some(listener.local_addr()?);
            let front = Arc::new(AdminFront::new(metrics.clone(), memory, disk));
            tasks.spawn(server::serve(
                listener,
                front,
                metrics.clone(),
                conn,
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

async fn bind(key: &str, addr: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    server::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{key}: cannot listen on {addr}: {e}"))
}
