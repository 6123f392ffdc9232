//! Errors of the storage engine. `api/` maps each variant to one Kafka error code.

use thiserror::Error;

/// Why a record batch from a client was refused before anything was written.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    /// Bytes that cannot be a v2 batch: bad CRC, bad length, unknown compression.
    /// Kafka answers CORRUPT_MESSAGE.
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// A well-formed batch Kafka still refuses: old magic, counts that disagree.
    /// Kafka answers INVALID_RECORD.
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// A batch larger than `max.message.bytes`. Kafka answers MESSAGE_TOO_LARGE.
    #[error("record batch of {size} bytes is larger than max.message.bytes {max}")]
    TooLarge { size: usize, max: u32 },
}

/// Failures of a partition log operation.
#[derive(Debug, Error)]
pub enum LogError {
    /// The disk failed us. Kafka answers KAFKA_STORAGE_ERROR.
    #[error("log i/o failed: {0}")]
    Io(#[from] std::io::Error),
    /// A fetch or lookup outside `[log_start, log_end]`. Kafka answers OFFSET_OUT_OF_RANGE.
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// The records handed to the log were refused.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Stored data that does not read back as written (a file changed under us, or a bug).
    #[error("corrupt log: {0}")]
    Corrupt(String),
}
