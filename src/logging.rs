//! Log output: human-readable or JSON lines on stderr, filtered by `log.level`.
//!
//! A log line that cannot be written (stderr on a full disk, a closed pipe) is dropped. By
//! default the subscriber reports such a failure with `eprintln!`, which panics when stderr
//! fails, and the panic would end the task that logged: a request's connection, cut off
//! without an answer, because the node's log disk is full.
//!
//! Warnings and errors also go to a small ring ([`recent`]) that the status page shows.

pub mod recent;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(spec),
        _ => EnvFilter::try_new(&config.level),
    }
    .map_err(|e| format!("log.level: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(recent::RecentLayer)
            .try_init(),
        LogFormat::Human => builder
            .with_ansi(false)
            .finish()
            .with(recent::RecentLayer)
            .try_init(),
    };
    result.map_err(|e| e.to_string())
}
