//! The last warnings and errors the daemon logged, kept in a small ring for the status page:
//! a person looking at a node sees what went wrong lately without reaching for its logs.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Entries kept.
const KEPT: usize = 20;
/// Longest message kept, in characters.
const MAX_MESSAGE: usize = 400;

/// Every warning and error logged by this process (one logger per process, so one ring).
pub static RECENT: LazyLock<RecentErrors> = LazyLock::new(RecentErrors::default);

/// One logged warning or error.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedError {
    /// Seconds since the epoch.
    pub at: u64,
    pub level: &'static str,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields, `key=value`.
    pub message: String,
}

#[derive(Default)]
pub struct RecentErrors {
    ring: Mutex<VecDeque<LoggedError>>,
}

impl RecentErrors {
    pub fn push(&self, entry: LoggedError) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The entries, newest first.
    pub fn newest_first(&self) -> Vec<LoggedError> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

/// The layer that fills [`RECENT`].
pub struct RecentLayer;

impl<S: Subscriber> Layer<S> for RecentLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        // In tracing's order the more verbose levels are the greater ones.
        if level > Level::WARN {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let mut message = text.message;
        if !text.fields.is_empty() {
            message.push_str(&text.fields);
        }
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE) {
            message.truncate(cut);
            message.push('…');
        }
        RECENT.push(LoggedError {
            at: crate::fronts::admin::history::unix_now(),
            level: if level == Level::ERROR {
                "error"
            } else {
                "warn"
            },
            target: event.metadata().target().to_string(),
            message,
        });
    }
}

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}
