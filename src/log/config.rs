//! Per-partition log settings, named after Kafka's topic configs, with Kafka's defaults.

use crate::log::recompress::TopicCompression;

/// What the timestamp of a stored record means (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamp is kept as sent.
    #[default]
    CreateTime,
    /// The broker overwrites the batch timestamp with the time of the append.
    LogAppendTime,
}

/// Settings of one partition log. Each field names the Kafka topic config it mirrors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes` (broker: `log.segment.bytes`): roll the active segment past this size.
    pub segment_bytes: u64,
    /// `segment.ms` (broker: `log.roll.ms`): roll the active segment once it is this old.
    pub segment_ms: i64,
    /// `retention.ms`: delete segments whose newest record is older than this; -1 = forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments beyond this total size; -1 = unlimited.
    pub retention_bytes: i64,
    /// `flush.messages`: fsync after this many records; the default leaves it to the OS.
    pub flush_messages: u64,
    /// `flush.ms`: fsync when the last fsync is this old; the default leaves it to the OS.
    pub flush_ms: i64,
    /// `index.interval.bytes`: log bytes between two sparse index entries.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: the largest record batch accepted, header included.
    pub max_message_bytes: u32,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: under CreateTime, how far a record's timestamp
    /// may lie in the past of the broker's clock.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far it may lie in the future (Kafka 4.0
    /// lowered the default from unlimited to one hour).
    pub timestamp_after_max_ms: i64,
    /// `compression.type`: store batches as produced, or re-encoded with one codec.
    pub compression: TopicCompression,
    /// `cleanup.policy` contains `compact`: the cleaner keeps only the latest record of
    /// each key in closed segments (`PartitionLog::compact`).
    pub compact: bool,
    /// `cleanup.policy` contains `delete`: `retention.ms` and `retention.bytes` apply. A
    /// compact-only topic keeps its segments whatever their age and size, as in Kafka.
    pub retention_deletes: bool,
    /// `delete.retention.ms`: how long the cleaner keeps tombstones (null values) after
    /// the newest record of their segment, so consumers get to see the delete.
    pub delete_retention_ms: i64,
    /// `min.insync.replicas`: an acks=all produce needs at least this many in-sync
    /// replicas (NOT_ENOUGH_REPLICAS before the append, ..._AFTER_APPEND after it).
    pub min_insync_replicas: usize,
}

/// How many times `max.message.bytes` a batch may decompress to during produce validation.
/// Kafka has no such cap; real data compresses 2-20x, so 64x leaves room for very
/// repetitive payloads while a bomb costs bounded time (and, for snappy, memory).
pub const DECOMPRESSION_RATIO_MAX: usize = 64;
/// The cap never goes below this, so a topic with a tiny `max.message.bytes` still takes
/// ordinary compressed batches.
pub const DECOMPRESSED_BYTES_FLOOR: usize = 1024 * 1024;

impl LogConfig {
    /// Largest decompressed size of one batch's records accepted on produce.
    pub fn decompressed_bytes_max(&self) -> usize {
        (self.max_message_bytes as usize)
            .saturating_mul(DECOMPRESSION_RATIO_MAX)
            .max(DECOMPRESSED_BYTES_FLOOR)
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            flush_messages: u64::MAX,
            flush_ms: i64::MAX,
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 60 * 60 * 1000,
            compression: TopicCompression::Producer,
            compact: false,
            retention_deletes: true,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_insync_replicas: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kafka() {
        let config = LogConfig::default();
        assert_eq!(config.segment_bytes, 1_073_741_824);
        assert_eq!(config.segment_ms, 604_800_000);
        assert_eq!(config.retention_ms, 604_800_000);
        assert_eq!(config.retention_bytes, -1);
        assert_eq!(config.index_interval_bytes, 4096);
        assert_eq!(config.max_message_bytes, 1_048_588);
        assert_eq!(config.timestamp_type, TimestampType::CreateTime);
        assert_eq!(config.timestamp_before_max_ms, i64::MAX);
        assert_eq!(config.timestamp_after_max_ms, 3_600_000);
        assert_eq!(config.decompressed_bytes_max(), 64 * 1_048_588);
        assert!(!config.compact && config.retention_deletes);
        assert_eq!(config.delete_retention_ms, 86_400_000);
    }
}
