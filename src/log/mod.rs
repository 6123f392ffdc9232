//! The storage engine: one [`PartitionLog`] per partition directory (`<topic>-<partition>/`).
//!
//! Callers: `replica/` appends produced (or replicated) batches and reads for fetches;
//! `api/` validates produce records with [`validate_batches`] and maps [`LogError`] and
//! [`BatchError`] to Kafka error codes; start-up rebuilds producer state after its newest
//! snapshot with [`PartitionLog::scan_batch_headers`]; `broker` writes the clean-shutdown
//! marker ([`write_marker`]) after flushing every log, and start-up takes it
//! ([`take_marker`]) to open logs without recovery.
//!
//! What it owns, laid out on disk exactly as Kafka does:
//! - segments `00000000000000000000.log` of v2 record batches stored as the producer sent
//!   them (compression untouched unless the topic's `compression.type` names a codec:
//!   [`recompress`]); produce checks the header and CRC-32C ([`batch`]) and walks every
//!   record, decompressing with a size cap ([`records`]); the log writes the assigned base
//!   offset and leader epoch into the header;
//! - a sparse offset index (`.index`) and time index (`.timeindex`) beside each segment,
//!   kept in memory and appended to the files a page at a time and at every flush (no
//!   mmap, so no `unsafe`; `index_file`);
//! - crash recovery of the active segment (skipped after a clean shutdown:
//!   `clean_shutdown`) and index rebuilds (`recovery`), retention by time and size
//!   (`retention`), and compaction of closed segments by key (`cleaner`, with its bounded
//!   `offset_map`), which leaves gaps in the offsets that reads step over. Compaction is
//!   split so that callers hold their lock only for a snapshot and a swap:
//!   [`PartitionLog::clean_snapshot`], [`clean`], [`PartitionLog::install_clean`].
//!
//! - the leader-epoch cache and its `leader-epoch-checkpoint` file ([`leader_epochs`]),
//!   published off the append path by one background thread ([`epoch_checkpoint`]).
//!
//! The log start offset is the first segment's base offset or above it: DeleteRecords (and
//! a follower adopting its leader's start) moves it inside a segment, and
//! `log_start_checkpoint` keeps such a start across restarts. Segments wholly below it are
//! deleted at once and by every retention pass, whatever `cleanup.policy` says.

pub mod batch;
mod clean_shutdown;
mod cleaner;
pub mod config;
pub mod delete_horizon;
pub mod durable;
pub mod epoch_checkpoint;
pub mod error;
pub mod file_slice;
mod index;
mod index_file;
pub mod leader_epochs;
pub mod log_start_checkpoint;
mod offset_map;
pub mod partition_log;
pub mod recompress;
pub mod records;
mod recovery;
mod retained_batch;
mod retention;
pub mod sealed_text;
mod segment;
#[cfg(test)]
pub(crate) mod test_support;
mod time_index;
pub mod txn_index;

pub use batch::{
    BATCH_HEADER_BYTES, BatchHeader, iter_batches, stamp_batch, validate_batches,
    validate_replicated_batches,
};
pub use clean_shutdown::{CLEAN_SHUTDOWN_FILE, LastShutdown, take_marker, write_marker};
pub use cleaner::{
    CleanOutcome, CleanSnapshot, CleanStats, DEDUPE_BUFFER_BYTES_DEFAULT, ProducerTail,
    ProducerTails, clean,
};
pub use config::{LogConfig, TimestampType};
pub use epoch_checkpoint::{EpochCheckpoint, EpochCheckpointWriter};
pub use error::{BatchError, LogError, RecordError, RecordErrorCode};
pub use file_slice::{FileSlice, RecordSlices};
pub use leader_epochs::{EpochEntry, LeaderEpochCache};
pub use partition_log::{AppendInfo, PartitionLog, ReadResult, SlicedRead};
pub use recompress::{TopicCompression, recompress};
pub use records::{RecordPolicy, validate_records};
