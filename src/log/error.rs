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
    /// Records that decompress to more than the cap (a compression bomb, or a batch far
    /// more compressible than real data). Kafka has no such cap; we answer
    /// MESSAGE_TOO_LARGE, which makes producers split the batch.
    #[error("decompressed records exceed {max} bytes")]
    DecompressedTooLarge { max: usize },
    /// Well-formed records that break a topic rule (no key on a compacted topic, a
    /// timestamp out of bounds): the batch fails with every record's error (KIP-467).
    #[error("{message}")]
    Records {
        code: RecordErrorCode,
        message: String,
        errors: Vec<RecordError>,
    },
}

/// Which Kafka error a batch with [`RecordError`]s carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordErrorCode {
    /// INVALID_RECORD (87).
    InvalidRecord,
    /// INVALID_TIMESTAMP (32).
    InvalidTimestamp,
}

/// One refused record: its index in the batch and why (`record_errors` in Produce v8+).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

impl RecordError {
    pub fn new(batch_index: i32, message: String) -> RecordError {
        RecordError {
            batch_index,
            message,
        }
    }
}

/// Kafka's `RecordError.toString`, which its INVALID_RECORD summary message lists.
impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RecordError(batchIndex={}, message='{}')",
            self.batch_index, self.message
        )
    }
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
    /// An aborted-transaction index that lost entries to failed writes: it answers nothing
    /// until rebuilt (a read_committed read from it would show aborted records). Kafka
    /// answers KAFKA_STORAGE_ERROR.
    #[error("aborted-transaction index incomplete: {0}")]
    TxnIndexLacking(String),
}
