//! Log compaction, Kafka's log cleaner simplified: in a `cleanup.policy=compact` partition,
//! keep only the latest record of each key in the closed segments.
//!
//! One pass of [`PartitionLog::compact`]:
//! 1. build an offset map, key -> offset of its latest record, over the whole log (closed
//!    segments and the active one);
//! 2. rewrite each closed segment that loses records. A batch keeps its records that are
//!    the latest of their key, records without a key, and tombstones (null values) until
//!    the delete horizon. A batch that keeps everything is copied byte for byte, a batch
//!    that keeps nothing goes, and any other is re-encoded with the surviving records'
//!    offsets, keys, values, headers and timestamps, the original producer fields, leader
//!    epoch and compression codec. Offsets are never renumbered: the log gets gaps, which
//!    reads step over (`Segment::find_batch` returns the first batch ending at or after).
//!
//! Crash safety, as in Kafka: the new log is written to `<base>.log.cleaned` and fsynced,
//! renamed to `<base>.log.swap` (from then on the clean counts as done), then the old log
//! is renamed `.deleted`, its index files removed, the `.swap` renamed to `.log`, and the
//! indexes rebuilt from it. On open, `recovery` deletes a `.cleaned` and completes a `.swap`.
//!
//! Simplifications: the offset map holds whole keys in memory (Kafka bounds it with key
//! hashes); transactional and control batches are copied untouched and stay out of the map,
//! so data of an aborted transaction can never hide a committed value; the delete horizon
//! is per segment (its largest timestamp plus `delete.retention.ms`); a segment left empty
//! stays as an empty file, so the log start offset never moves.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, RecordSet,
};
use tracing::info;

use crate::log::batch::{BatchHeader, MAGIC_V2, stamp_batch};
use crate::log::error::LogError;
use crate::log::partition_log::PartitionLog;
use crate::log::recovery::{self, CLEANED_SUFFIX, SWAP_SUFFIX};
use crate::log::segment::{
    DELETED_EXTENSION, INDEX_EXTENSION, LOG_EXTENSION, Segment, TIME_INDEX_EXTENSION,
    remove_if_present, segment_file, sync_directory,
};

/// What one [`PartitionLog::compact`] did. Byte counts cover the rewritten segments only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Closed segments rewritten; a segment that would lose nothing is left alone.
    pub segments_cleaned: usize,
    pub records_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Bytes copied at a time when a rewrite starts after an unchanged prefix.
const COPY_CHUNK_BYTES: u64 = 1024 * 1024;

/// Key -> offset of its latest record.
type OffsetMap = HashMap<Bytes, i64>;

impl PartitionLog {
    /// Compact the closed segments (never the active one) when `config.compact` is set.
    /// Returns at once, doing nothing, when no segment has closed since the last run: the
    /// broker calls this periodically for compacted topics.
    pub fn compact(&mut self, now_ms: i64) -> Result<CleanStats, LogError> {
        self.clock_ms = self.clock_ms.max(now_ms);
        let closed_end = self.active().base_offset();
        if !self.config.compact || closed_end <= self.cleaned_end_offset {
            return Ok(CleanStats::default());
        }
        let map = build_offset_map(&self.segments)?;
        let horizon_ms = now_ms.saturating_sub(self.config.delete_retention_ms);
        let mut stats = CleanStats::default();
        for index in 0..self.segments.len() - 1 {
            self.clean_segment(index, &map, horizon_ms, &mut stats)?;
        }
        self.cleaned_end_offset = closed_end;
        info!(dir = %self.dir.display(), ?stats, "compacted the closed segments");
        Ok(stats)
    }

    fn clean_segment(
        &mut self,
        index: usize,
        map: &OffsetMap,
        horizon_ms: i64,
        stats: &mut CleanStats,
    ) -> Result<(), LogError> {
        let segment = &self.segments[index];
        let retention = Retention {
            map,
            keep_tombstones: segment.largest_timestamp_ms()? > horizon_ms,
        };
        let cleaned_path = with_suffix(segment.log_path(), CLEANED_SUFFIX);
        let written = write_cleaned(segment, &retention, &cleaned_path);
        let cleaned = match written {
            Ok(Some(cleaned)) => cleaned,
            Ok(None) => return Ok(()),
            Err(error) => {
                // Best effort: a leftover `.cleaned` is also removed on the next open.
                let _ = fs::remove_file(&cleaned_path);
                return Err(error);
            }
        };
        stats.segments_cleaned += 1;
        stats.records_removed += cleaned.records_removed;
        stats.bytes_before += segment.size_bytes();
        stats.bytes_after += cleaned.size_bytes;
        self.swap_in(index, &cleaned_path, cleaned.size_bytes)
    }

    /// Replace segment `index` by its fsynced cleaned log at `cleaned_path`, in an order
    /// that recovery can complete after a crash at any step.
    fn swap_in(
        &mut self,
        index: usize,
        cleaned_path: &Path,
        size_bytes: u64,
    ) -> Result<(), LogError> {
        let base_offset = self.segments[index].base_offset();
        let log_path = segment_file(&self.dir, base_offset, LOG_EXTENSION);
        let swap_path = with_suffix(&log_path, SWAP_SUFFIX);
        let deleted_path = with_suffix(&log_path, &format!(".{DELETED_EXTENSION}"));
        fs::rename(cleaned_path, &swap_path)?;
        sync_directory(&self.dir)?;
        // The clean is durable from here on: recovery finishes the steps below.
        fs::rename(&log_path, &deleted_path)?;
        remove_if_present(&segment_file(&self.dir, base_offset, INDEX_EXTENSION))?;
        remove_if_present(&segment_file(&self.dir, base_offset, TIME_INDEX_EXTENSION))?;
        fs::rename(&swap_path, &log_path)?;
        sync_directory(&self.dir)?;
        let interval_bytes = self.config.index_interval_bytes;
        let mut segment =
            recovery::recover_segment(&self.dir, base_offset, interval_bytes, self.clock_ms)?;
        segment.seal()?;
        if segment.size_bytes() != size_bytes {
            return Err(LogError::Corrupt(format!(
                "cleaned {} reads back as {} of {size_bytes} bytes",
                log_path.display(),
                segment.size_bytes()
            )));
        }
        // Dropping the old segment closes its files, which are already unlinked or renamed.
        self.segments[index] = segment;
        fs::remove_file(&deleted_path)?;
        Ok(())
    }
}

/// `path` with `suffix` appended to its file name (`x.log` -> `x.log.swap`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Batches the cleaner may filter. Control batches carry transaction markers, and data of
/// a transaction may be aborted: both are kept as they are.
fn is_cleanable(header: &BatchHeader) -> bool {
    !header.is_control() && !header.is_transactional()
}

fn decode(header: &BatchHeader, mut bytes: Bytes) -> Result<RecordSet, LogError> {
    RecordBatchDecoder::decode(&mut bytes).map_err(|error| {
        let offset = header.base_offset;
        LogError::Corrupt(format!(
            "cannot decode the batch at offset {offset}: {error:#}"
        ))
    })
}

/// The offset of the latest record of every key in `segments`.
fn build_offset_map(segments: &[Segment]) -> Result<OffsetMap, LogError> {
    let mut map = OffsetMap::new();
    for segment in segments {
        segment.for_each_batch(&mut |_, header, bytes| {
            if !is_cleanable(header) {
                return Ok(());
            }
            for record in decode(header, bytes)?.records {
                let Some(key) = record.key else { continue };
                match map.get_mut(&key) {
                    Some(offset) => *offset = record.offset,
                    // A copy, so the map does not pin the whole decoded batch in memory.
                    None => {
                        map.insert(Bytes::copy_from_slice(&key), record.offset);
                    }
                }
            }
            Ok(())
        })?;
    }
    Ok(map)
}

/// Which records of one segment survive.
struct Retention<'a> {
    map: &'a OffsetMap,
    /// The segment is younger than the delete horizon: consumers may not have seen its
    /// tombstones yet.
    keep_tombstones: bool,
}

impl Retention<'_> {
    fn retains(&self, record: &Record) -> bool {
        let Some(key) = &record.key else {
            return true;
        };
        // Every key of a cleanable batch is in the map; keep the record if not, to be safe.
        let latest = self
            .map
            .get(key)
            .is_none_or(|&offset| offset == record.offset);
        latest && (record.value.is_some() || self.keep_tombstones)
    }
}

/// What becomes of one batch.
enum Fate {
    Keep,
    Drop,
    Rewrite(BytesMut),
}

struct Decision {
    fate: Fate,
    records_removed: usize,
}

fn decide(header: &BatchHeader, bytes: Bytes, retention: &Retention) -> Result<Decision, LogError> {
    let keep = Decision {
        fate: Fate::Keep,
        records_removed: 0,
    };
    if !is_cleanable(header) {
        return Ok(keep);
    }
    let record_set = decode(header, bytes)?;
    let compression = record_set.compression;
    let total = record_set.records.len();
    let survivors: Vec<Record> = record_set
        .records
        .into_iter()
        .filter(|record| retention.retains(record))
        .collect();
    let records_removed = total - survivors.len();
    if records_removed == 0 {
        return Ok(keep);
    }
    let fate = if survivors.is_empty() {
        Fate::Drop
    } else {
        Fate::Rewrite(encode_survivors(header, compression, survivors)?)
    };
    Ok(Decision {
        fate,
        records_removed,
    })
}

/// One batch of `survivors` (non-empty, from the batch `header`) with their own offsets,
/// the original base sequence, producer, leader epoch, codec and timestamp type.
fn encode_survivors(
    header: &BatchHeader,
    compression: Compression,
    mut survivors: Vec<Record>,
) -> Result<BytesMut, LogError> {
    let first_offset = survivors[0].offset;
    for record in &mut survivors {
        // The encoder takes the base sequence from the first record and keeps records in
        // one batch while offset - sequence is constant: this keeps the original base one.
        let offset_delta = (record.offset - first_offset) as i32;
        record.sequence = header.base_sequence.wrapping_add(offset_delta);
        record.partition_leader_epoch = header.partition_leader_epoch;
        record.producer_id = header.producer_id;
        record.producer_epoch = header.producer_epoch;
    }
    let options = RecordEncodeOptions {
        version: MAGIC_V2,
        compression,
    };
    let mut encoded = BytesMut::new();
    let failed = |why: String| {
        let offset = header.base_offset;
        LogError::Corrupt(format!(
            "cannot re-encode the batch at offset {offset}: {why}"
        ))
    };
    RecordBatchEncoder::encode(&mut encoded, &survivors, &options)
        .map_err(|error| failed(format!("{error:#}")))?;
    let rewritten = BatchHeader::parse(&encoded).map_err(|error| failed(error.to_string()))?;
    if rewritten.total_bytes() != encoded.len() || rewritten.base_offset != first_offset {
        return Err(failed(
            "the encoder did not produce exactly one batch".into(),
        ));
    }
    // The encoder writes CreateTime; a LogAppendTime batch keeps its append time.
    let log_append_time_ms = Some(header.max_timestamp).filter(|_| header.is_log_append_time());
    let epoch = header.partition_leader_epoch;
    stamp_batch(&mut encoded, first_offset, epoch, log_append_time_ms);
    Ok(encoded)
}

/// The cleaned copy of one segment, `path`, written from the first batch that changes:
/// a segment that loses nothing is never copied.
struct CleanedLog<'a> {
    segment: &'a Segment,
    path: &'a Path,
    writer: Option<BufWriter<File>>,
    size_bytes: u64,
    records_removed: usize,
}

/// A finished, fsynced cleaned log.
struct Cleaned {
    size_bytes: u64,
    records_removed: usize,
}

impl CleanedLog<'_> {
    fn apply(&mut self, position: u64, bytes: &[u8], decision: Decision) -> Result<(), LogError> {
        self.records_removed += decision.records_removed;
        let output: &[u8] = match &decision.fate {
            Fate::Keep if self.writer.is_none() => return Ok(()),
            Fate::Keep => bytes,
            Fate::Drop => &[],
            Fate::Rewrite(encoded) => encoded,
        };
        if self.writer.is_none() {
            self.start(position)?;
        }
        self.write(output)
    }

    /// Create the file and copy the unchanged batches before `prefix_bytes`.
    fn start(&mut self, prefix_bytes: u64) -> Result<(), LogError> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path)?;
        self.writer = Some(BufWriter::new(file));
        let mut copied_bytes = 0;
        while copied_bytes < prefix_bytes {
            let length = (prefix_bytes - copied_bytes).min(COPY_CHUNK_BYTES);
            let mut chunk = BytesMut::new();
            self.segment
                .read_exact(copied_bytes, length as usize, &mut chunk)?;
            self.write(&chunk)?;
            copied_bytes += length;
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        if let Some(writer) = &mut self.writer {
            writer.write_all(bytes)?;
            self.size_bytes += bytes.len() as u64;
        }
        Ok(())
    }

    /// fsync the file; None when nothing changed and no file was written.
    fn finish(self) -> Result<Option<Cleaned>, LogError> {
        let Some(writer) = self.writer else {
            return Ok(None);
        };
        let file = writer.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
        Ok(Some(Cleaned {
            size_bytes: self.size_bytes,
            records_removed: self.records_removed,
        }))
    }
}

fn write_cleaned(
    segment: &Segment,
    retention: &Retention,
    path: &Path,
) -> Result<Option<Cleaned>, LogError> {
    let mut cleaned = CleanedLog {
        segment,
        path,
        writer: None,
        size_bytes: 0,
        records_removed: 0,
    };
    segment.for_each_batch(&mut |position, header, bytes| {
        let decision = decide(header, bytes.clone(), retention)?;
        cleaned.apply(position, &bytes, decision)
    })?;
    cleaned.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::plain_record;
    use crate::log::config::LogConfig;
    use crate::log::test_support::validated;

    /// One record as read back: offset, key, value, timestamp, header count.
    type Read = (i64, Option<Bytes>, Option<Bytes>, i64, usize);

    const KEYS: usize = 10;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 600,
            index_interval_bytes: 100,
            compact: true,
            delete_retention_ms: 10_000,
            ..LogConfig::default()
        }
    }

    fn open(dir: &Path) -> PartitionLog {
        PartitionLog::open(dir.to_path_buf(), config(), 0).unwrap()
    }

    fn record(offset: i64, key: Option<String>, value: Option<String>, time_ms: i64) -> Record {
        let mut record = plain_record(
            offset,
            time_ms,
            key.map(Bytes::from),
            value.map(Bytes::from),
        );
        record.headers = [("h".into(), Some(Bytes::from_static(b"x")))]
            .into_iter()
            .collect();
        record
    }

    /// Append one batch of (key, value) records; values `None` are tombstones.
    fn append(
        log: &mut PartitionLog,
        entries: &[(Option<String>, Option<String>)],
        time_ms: i64,
        compression: Compression,
    ) {
        let records: Vec<Record> = entries
            .iter()
            .enumerate()
            .map(|(index, (key, value))| {
                let time_ms = time_ms + index as i64;
                record(index as i64, key.clone(), value.clone(), time_ms)
            })
            .collect();
        let mut buffer = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buffer, &records, &options).unwrap();
        let (records, headers) = validated(buffer);
        log.append(records, &headers, 3, 0).unwrap();
    }

    /// `batches` batches of two records each, keys k0..k9 in turn, values naming their
    /// offset, timestamps rising from `time_ms`; every third record has no key.
    fn write_keys(log: &mut PartitionLog, batches: usize, time_ms: i64, compression: Compression) {
        for _ in 0..batches {
            let first = log.log_end_offset();
            let entries: Vec<_> = (first..first + 2)
                .map(|offset| {
                    let key = (offset % 3 != 2).then(|| format!("k{}", offset as usize % KEYS));
                    (key, Some(format!("v{offset}")))
                })
                .collect();
            append(log, &entries, time_ms + first * 10, compression);
        }
    }

    fn read_from(log: &PartitionLog, offset: i64) -> Vec<Read> {
        let read = log.read(offset, usize::MAX, i64::MAX, true).unwrap();
        let mut bytes = read.records;
        let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        let records = sets.into_iter().flat_map(|set| set.records);
        let records = records.map(|r| (r.offset, r.key, r.value, r.timestamp, r.headers.len()));
        records.collect()
    }

    /// What compaction should leave: in closed segments (below `active_base`) the latest
    /// record of each key and every record without a key; everything above.
    fn expected(before: &[Read], active_base: i64) -> Vec<Read> {
        let mut latest = HashMap::new();
        for (offset, key, ..) in before {
            latest.insert(key.clone(), *offset);
        }
        let keep = |record: &&Read| {
            let (offset, key, ..) = record;
            *offset >= active_base || key.is_none() || latest[key] == *offset
        };
        before.iter().filter(keep).cloned().collect()
    }

    fn batch_codecs(log: &PartitionLog) -> Vec<i16> {
        let mut codecs = Vec::new();
        log.scan_batch_headers(0, &mut |header| codecs.push(header.compression_code()))
            .unwrap();
        codecs
    }

    /// Compacted reads: exact content, fetches in gaps, timestamp lookups.
    fn assert_compacted(log: &PartitionLog, want: &[Read]) {
        assert_eq!(read_from(log, 0), want);
        assert!(
            want.windows(2).any(|pair| pair[1].0 > pair[0].0 + 1),
            "gaps"
        );
        for offset in log.log_start_offset()..log.log_end_offset() {
            let read = read_from(log, offset);
            let first = read.iter().find(|record| record.0 >= offset);
            let next = want.iter().find(|record| record.0 >= offset);
            assert_eq!(first, next, "fetch at {offset}");
        }
        for (offset, _, _, time_ms, _) in want.iter().step_by(3) {
            let found = log.offset_for_timestamp(*time_ms).unwrap();
            assert_eq!(found, Some((*offset, *time_ms)));
        }
        let last = want.last().unwrap();
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((last.0, last.3)));
    }

    fn compacts_to_the_latest_values(compression: Compression) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 60, 1_000, compression);
        let before = read_from(&log, 0);
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let want = expected(&before, log.active().base_offset());
        assert!(log.segments.len() > 3);
        let stats = log.compact(2_000).unwrap();
        assert_eq!(stats.records_removed, before.len() - want.len());
        assert!(stats.segments_cleaned > 0);
        assert!(stats.bytes_after < stats.bytes_before);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
        assert_compacted(&log, &want);
        assert!(want.iter().all(|record| record.4 == 1), "headers kept");
        let codec = compression as i16;
        assert!(batch_codecs(&log).iter().all(|&code| code == codec));
    }

    #[test]
    fn compaction_keeps_the_latest_value_of_each_key() {
        compacts_to_the_latest_values(Compression::None);
    }

    #[test]
    fn compressed_batches_compact_and_keep_their_codec() {
        compacts_to_the_latest_values(Compression::Gzip);
    }

    #[test]
    fn a_second_compact_changes_nothing_until_a_segment_closes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 60, 1_000, Compression::None);
        assert!(log.compact(2_000).unwrap().records_removed > 0);
        let after = read_from(&log, 0);
        assert_eq!(log.compact(2_000).unwrap(), CleanStats::default());
        assert_eq!(read_from(&log, 0), after);
        // A new closed segment: the new values supersede older ones everywhere.
        write_keys(&mut log, 20, 5_000, Compression::None);
        let before = read_from(&log, 0);
        let want = expected(&before, log.active().base_offset());
        assert!(log.compact(6_000).unwrap().records_removed > 0);
        assert_compacted(&log, &want);
    }

    #[test]
    fn reopen_after_compaction_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 60, 1_000, Compression::Gzip);
        log.compact(2_000).unwrap();
        let (after, end) = (read_from(&log, 0), log.log_end_offset());
        drop(log);
        let mut log = open(dir.path());
        assert_eq!(log.log_end_offset(), end);
        assert_compacted(&log, &after);
        // The in-memory mark is gone: the pass runs again but has nothing to remove.
        let stats = log.compact(2_000).unwrap();
        assert_eq!((stats.segments_cleaned, stats.records_removed), (0, 0));
        assert_eq!(read_from(&log, 0), after);
        write_keys(&mut log, 1, 3_000, Compression::None);
        assert_eq!(log.log_end_offset(), end + 2);
    }

    #[test]
    fn tombstones_stay_until_the_delete_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 10, 1_000, Compression::None);
        let deletes: Vec<_> = (0..5).map(|key| (Some(format!("k{key}")), None)).collect();
        append(&mut log, &deletes, 1_500, Compression::Lz4);
        write_keys(&mut log, 20, 1_000, Compression::None);
        // Re-deletes after the new values, then enough to close their segment.
        append(&mut log, &deletes, 1_600, Compression::None);
        let tombstone_offsets = log.log_end_offset() - 5..log.log_end_offset();
        let others: Vec<_> = (5..KEYS)
            .map(|key| (Some(format!("k{key}")), Some("x".into())))
            .collect();
        for _ in 0..10 {
            append(&mut log, &others, 1_000, Compression::None);
        }
        let is_tombstone = |record: &Read| record.1.is_some() && record.2.is_none();
        // Segment times are above 1_000, so the horizon 5_000 - 10_000 keeps them.
        log.compact(5_000).unwrap();
        let tombstones: Vec<i64> = read_from(&log, 0)
            .iter()
            .filter(|record| is_tombstone(record))
            .map(|record| record.0)
            .collect();
        assert_eq!(&tombstones[..5], tombstone_offsets.collect::<Vec<_>>());
        for _ in 0..10 {
            append(&mut log, &others, 1_000, Compression::None);
        }
        // Segment times are below 3_000: the horizon 13_001 - 10_000 drops them.
        log.compact(13_001).unwrap();
        let closed_end = log.active().base_offset();
        let read = read_from(&log, 0);
        assert!(!read.iter().any(|r| is_tombstone(r) && r.0 < closed_end));
    }

    #[test]
    fn compact_only_when_configured_and_compact_topics_are_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut log =
            PartitionLog::open(dir.path().to_path_buf(), LogConfig::default(), 0).unwrap();
        log.set_config(LogConfig {
            compact: false,
            ..config()
        });
        write_keys(&mut log, 60, 1_000, Compression::None);
        assert_eq!(log.compact(2_000).unwrap(), CleanStats::default());
        log.set_config(LogConfig {
            retention_deletes: false,
            retention_ms: 1,
            retention_bytes: 0,
            ..config()
        });
        assert_eq!(log.enforce_retention(1_000_000).unwrap(), 0);
        assert_eq!(log.log_start_offset(), 0);
    }

    fn log_path_of(dir: &Path, base_offset: i64) -> PathBuf {
        segment_file(dir, base_offset, LOG_EXTENSION)
    }

    #[test]
    fn recovery_drops_cleaned_files_and_completes_swaps() {
        let clean = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let mut log = open(clean.path());
        let mut twin = open(crashed.path());
        write_keys(&mut log, 60, 1_000, Compression::Gzip);
        write_keys(&mut twin, 60, 1_000, Compression::Gzip);
        let bases: Vec<i64> = log.segments.iter().map(Segment::base_offset).collect();
        log.compact(2_000).unwrap();
        let want = read_from(&log, 0);
        drop(twin);
        // Segment 1: crashed after `.cleaned` became `.swap`. Segment 2: crashed after the
        // original became `.deleted`. Segment 3: crashed while writing `.cleaned`.
        let (dir, cleaned_dir) = (crashed.path(), clean.path());
        let swap = |base| with_suffix(&log_path_of(dir, base), SWAP_SUFFIX);
        fs::copy(log_path_of(cleaned_dir, bases[1]), swap(bases[1])).unwrap();
        fs::copy(log_path_of(cleaned_dir, bases[2]), swap(bases[2])).unwrap();
        let deleted = with_suffix(&log_path_of(dir, bases[2]), ".deleted");
        fs::rename(log_path_of(dir, bases[2]), &deleted).unwrap();
        let cleaned = with_suffix(&log_path_of(dir, bases[3]), CLEANED_SUFFIX);
        fs::write(&cleaned, b"half a segment").unwrap();
        let mut twin = open(dir);
        for path in [swap(bases[1]), swap(bases[2]), deleted, cleaned] {
            assert!(!path.exists(), "{}", path.display());
        }
        for base in &bases[1..3] {
            let swapped = fs::read(log_path_of(dir, *base)).unwrap();
            assert_eq!(swapped, fs::read(log_path_of(cleaned_dir, *base)).unwrap());
        }
        assert_eq!(twin.log_end_offset(), log.log_end_offset());
        let from = bases[1];
        let in_swapped = |record: &&Read| record.0 >= from && record.0 < bases[3];
        let swapped_reads: Vec<Read> = read_from(&twin, from)
            .into_iter()
            .filter(|record| record.0 >= from && record.0 < bases[3])
            .collect();
        assert_eq!(
            swapped_reads,
            want.iter().filter(in_swapped).cloned().collect::<Vec<_>>()
        );
        twin.compact(2_000).unwrap();
        assert_eq!(read_from(&twin, 0), want);
    }
}
