//! Log output: human-readable or JSON lines on stderr, filtered by `log.level`.
//!
//! Lines leave the thread that logs through a bounded buffer to one writer thread
//! ([`start_writer`], [`batch_writer`]), which writes them in batches: a request never waits on
//! the log's pipe, and the lines of a burst cost one `write` per 64 KiB, not one per line.
//! Before that thread starts (the node-local set-up must run while the process has one thread),
//! lines go to stderr directly. When the buffer is full (the log's reader stalled), lines are
//! dropped and counted (`build_cache_proxy_log_lines_dropped_total`) rather than holding
//! requests up.
//!
//! A log line that cannot be written (stderr on a full disk, a closed pipe) is dropped. By
//! default the subscriber reports such a failure with `eprintln!`, which panics when stderr
//! fails, and the panic would end the task that logged: a request's connection, cut off
//! without an answer, because the node's log disk is full.
//!
//! Warnings and errors also go to a small ring ([`recent`]) that the status page shows. The
//! access line, one per request, does not go through the subscriber: [`access_line`] writes the
//! same bytes to the same writer for a fraction of the cost.

pub mod access_line;
pub mod batch_writer;
pub mod recent;

use std::io::Stderr;
use std::sync::OnceLock;

use tracing::Subscriber;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::writer::{EitherWriter, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use batch_writer::{BatchWriter, WriterGuard};

/// The buffer of the writer thread, once it runs.
static WRITER: OnceLock<BatchWriter> = OnceLock::new();

/// Where the subscriber's lines go: the writer thread's buffer, or stderr before it starts.
struct LogWriter;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EitherWriter<BatchWriter, Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        match WRITER.get() {
            Some(writer) => EitherWriter::A(writer.clone()),
            None => EitherWriter::B(std::io::stderr()),
        }
    }
}

/// Keeps the writer thread; dropping it writes what is buffered and ends the thread.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _worker: Option<WriterGuard>,
}

/// Starts the writer thread: from now on lines are buffered for it. Call once, after the
/// node-local set-up (which needs the process to have a single thread); keep the guard until
/// the process ends, so the last lines are written.
pub fn start_writer() -> LogGuard {
    if WRITER.get().is_some() {
        return LogGuard { _worker: None };
    }
    let (writer, guard) = match BatchWriter::start(std::io::stderr()) {
        Ok(started) => started,
        // No thread: lines keep going to stderr directly.
        Err(_) => return LogGuard { _worker: None },
    };
    match WRITER.set(writer) {
        Ok(()) => LogGuard {
            _worker: Some(guard),
        },
        Err(_) => LogGuard { _worker: None },
    }
}

/// Lines dropped because the writer thread's buffer was full.
pub fn dropped_lines() -> u64 {
    WRITER.get().map_or(0, BatchWriter::dropped_lines)
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(spec),
        _ => EnvFilter::try_new(&config.level),
    }
    .map_err(|e| format!("log.level: {e}"))?;
    subscriber(config.format, filter, LogWriter, SystemTime)
        .try_init()
        .map_err(|e| e.to_string())?;
    // Only now is the installed subscriber the one whose lines the access line copies.
    access_line::installed(config.format);
    Ok(())
}

/// The subscriber `init` installs, with its writer and clock as parameters so that the tests
/// of [`access_line`] can hold its lines next to theirs.
fn subscriber<W, T>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    timer: T,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    T: FormatTime + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_timer(timer)
        .log_internal_errors(false);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish()
                .with(recent::RecentLayer),
        ),
        LogFormat::Human => Box::new(builder.with_ansi(false).finish().with(recent::RecentLayer)),
    }
}
