//! What can go wrong in a command-line tool, one enum for the whole `cli` layer. Each
//! tool turns it into Kafka's wording and an exit code at its own edge.

use kafka_protocol::error::ResponseError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CliError {
    /// Bad or missing flags: the message names the flag.
    #[error("{0}")]
    Usage(String),
    #[error("connection to {address} failed: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("no answer from {address} within {timeout_ms} ms")]
    TimedOut { address: String, timeout_ms: u64 },
    #[error("{address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    /// The peer's bytes do not decode, or it does not speak a version we need.
    #[error("{0}")]
    Protocol(String),
    /// A Kafka error code, with the broker's message when it sent one.
    #[error("{message}")]
    Kafka {
        error: ResponseError,
        message: String,
    },
    /// A failure the tool describes itself (e.g. a topic that does not exist).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The error for `code` (non-zero), with the broker's message if any, else Kafka's
    /// description of the code.
    pub fn from_code(code: i16, message: Option<&str>) -> CliError {
        let error = ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code));
        let message = match message {
            Some(text) if !text.is_empty() => text.to_string(),
            _ => error.to_string(),
        };
        CliError::Kafka { error, message }
    }

    /// The Kafka error code this error carries, if it is one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            CliError::Kafka { error, .. } => Some(*error),
            _ => None,
        }
    }
}

/// `Ok(())` for error code 0, else the error (with `message` when the broker sent one).
pub fn check_code(code: i16, message: Option<&str>) -> Result<(), CliError> {
    if code == 0 {
        Ok(())
    } else {
        Err(CliError::from_code(code, message))
    }
}
