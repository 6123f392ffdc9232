//! The last few warnings and errors the broker logged, for the status page.
//!
//! A `tracing` layer copies every event at WARN or ERROR (and INFO events that carry an
//! `error` field, the way connection and request failures are logged) into a bounded ring.
//! Keeping it a layer means no call site has to remember a second place to report to: what
//! the log says, the page says.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::view::ErrorRow;

/// Entries kept; older ones are dropped first.
pub const RECENT_ERRORS_MAX: usize = 100;
/// Characters kept of one message: a client-supplied string cannot grow the ring.
pub const ERROR_MESSAGE_CHARS_MAX: usize = 512;

#[derive(Debug, Default)]
pub struct RecentErrors {
    entries: Mutex<VecDeque<ErrorRow>>,
}

impl RecentErrors {
    pub fn new() -> Arc<RecentErrors> {
        Arc::new(RecentErrors::default())
    }

    pub fn record(&self, time_ms: i64, message: &str) {
        let message: String = message.chars().take(ERROR_MESSAGE_CHARS_MAX).collect();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() == RECENT_ERRORS_MAX {
            entries.pop_front();
        }
        entries.push_back(ErrorRow { time_ms, message });
        assert!(entries.len() <= RECENT_ERRORS_MAX);
    }

    /// Most recent first.
    pub fn snapshot(&self) -> Vec<ErrorRow> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.iter().rev().cloned().collect()
    }

    /// The layer that feeds this ring from the process's log events.
    pub fn layer(self: &Arc<Self>) -> RecentErrorsLayer {
        RecentErrorsLayer {
            errors: self.clone(),
        }
    }
}

pub struct RecentErrorsLayer {
    errors: Arc<RecentErrors>,
}

impl<S: Subscriber> Layer<S> for RecentErrorsLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::INFO {
            return;
        }
        let mut visitor = EventText::default();
        event.record(&mut visitor);
        if level <= Level::WARN || (level == Level::INFO && visitor.has_error) {
            let line = format!("{} {}: {}", level, event.metadata().target(), visitor.text);
            self.errors.record(crate::types::now_ms(), &line);
        }
    }
}

/// An event's message followed by its fields as `name=value`.
#[derive(Default)]
struct EventText {
    text: String,
    has_error: bool,
}

impl Visit for EventText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "error" {
            self.has_error = true;
        }
        if self.text.len() >= ERROR_MESSAGE_CHARS_MAX {
            return;
        }
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "error" {
            self.has_error = true;
        }
        if self.text.len() >= ERROR_MESSAGE_CHARS_MAX {
            return;
        }
        if field.name() == "message" {
            self.text.push_str(value);
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn keeps_the_newest_entries_up_to_the_limit_newest_first() {
        let errors = RecentErrors::new();
        for index in 0..RECENT_ERRORS_MAX + 5 {
            errors.record(index as i64, &format!("error {index}"));
        }
        let snapshot = errors.snapshot();
        assert_eq!(snapshot.len(), RECENT_ERRORS_MAX);
        assert_eq!(
            snapshot[0].message,
            format!("error {}", RECENT_ERRORS_MAX + 4)
        );
        assert_eq!(snapshot.last().unwrap().message, "error 5");
    }

    #[test]
    fn a_long_message_is_cut() {
        let errors = RecentErrors::new();
        errors.record(1, &"x".repeat(ERROR_MESSAGE_CHARS_MAX * 3));
        assert_eq!(
            errors.snapshot()[0].message.chars().count(),
            ERROR_MESSAGE_CHARS_MAX
        );
    }

    #[test]
    fn the_layer_keeps_warnings_errors_and_info_with_an_error_field_only() {
        let errors = RecentErrors::new();
        let subscriber = tracing_subscriber::registry().with(errors.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("connection accepted");
            tracing::debug!(error = "ignored at debug", "request failed");
            tracing::info!(
                peer = "127.0.0.1:5",
                error = "bad frame",
                "connection closed"
            );
            tracing::warn!(partition = 3, "log directory slow");
            tracing::error!("disk full");
        });
        let messages: Vec<String> = errors
            .snapshot()
            .into_iter()
            .map(|entry| entry.message)
            .collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("ERROR") && messages[0].contains("disk full"));
        assert!(messages[1].contains("log directory slow") && messages[1].contains("partition=3"));
        assert!(
            messages[2].contains("connection closed") && messages[2].contains("error=bad frame")
        );
    }
}
