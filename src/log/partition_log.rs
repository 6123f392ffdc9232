//! One partition's log: the directory `<topic>-<partition>/` and its ordered segments.
//! It assigns offsets on append, rolls segments, serves reads and offset lookups, applies
//! retention and truncation. The caller serialises writers (`&mut self`); readers share
//! `&self` because segments read with positional reads.

use std::fs;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::log::batch::{BATCH_HEADER_BYTES, BatchHeader, stamped_header};
use crate::log::clean_shutdown::LastShutdown;
use crate::log::config::{LogConfig, TimestampType};
use crate::log::epoch_checkpoint::EpochCheckpoint;
use crate::log::error::{BatchError, LogError};
use crate::log::file_slice::RecordSlices;
use crate::log::log_start_checkpoint;
use crate::log::recovery;
use crate::log::retention::{self, SegmentSummary};
use crate::log::segment::{ReadLimits, Segment, sync_directory};
use crate::log::time_index::TimestampOffset;
use crate::log::txn_index::{AbortedTxn, DirectoryChange};

/// What an append did, for the produce response and the replica layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// The stamped append time under LogAppendTime, -1 under CreateTime.
    pub log_append_time_ms: i64,
    /// Largest batch max timestamp of the append.
    pub max_timestamp: i64,
    /// Last offset of the first batch carrying `max_timestamp` (Kafka's "shallow" offset:
    /// records are not decoded on the produce path).
    pub offset_of_max_timestamp: i64,
    pub log_start_offset: i64,
}

/// Raw batch bytes for a fetch, with the log bounds at the time of the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// A read as file slices: [`PartitionLog::read_slices`].
#[derive(Debug)]
pub struct SlicedRead {
    pub records: RecordSlices,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

#[derive(Debug)]
pub struct PartitionLog {
    pub(super) dir: PathBuf,
    pub(super) config: LogConfig,
    /// Ordered by base offset and never empty; the last one is the active segment.
    pub(super) segments: Vec<Segment>,
    /// The first offset clients may read: the first segment's base offset or above it
    /// (DeleteRecords, a follower adopting its leader's), never above the log end. Kept in
    /// `log_start_checkpoint` whenever it moves inside a segment.
    log_start_offset: i64,
    unflushed_messages: u64,
    last_flush_ms: i64,
    /// The latest `now_ms` seen, for operations that create a segment without a clock.
    pub(super) clock_ms: i64,
    /// The cleaner has compacted every segment below this offset (in memory only: after a
    /// restart the first `compact` cleans everything again, which is merely redundant).
    pub(super) cleaned_end_offset: i64,
    /// Bumped by every truncation: a cleaning pass that started before one is dropped,
    /// since its offset map may name records that are gone.
    pub(super) generation: u64,
    /// The partition's leader-epoch checkpoint, published before any new segment exists:
    /// recovery scans only the active segment for epochs the file missed.
    epoch_checkpoint: Option<Arc<EpochCheckpoint>>,
}

/// The batches of one append, summed up once.
struct AppendSummary {
    size_bytes: u64,
    last_offset: i64,
    max_timestamp: TimestampOffset,
    message_count: u64,
}

impl PartitionLog {
    /// Open (or create) the partition directory and recover it; see `recovery`.
    pub fn open(dir: PathBuf, config: LogConfig, now_ms: i64) -> Result<PartitionLog, LogError> {
        Self::open_after(dir, config, now_ms, LastShutdown::Unclean)
    }

    /// Like `open`; after a clean shutdown the active segment opens from its indexes.
    pub fn open_after(
        dir: PathBuf,
        config: LogConfig,
        now_ms: i64,
        last_shutdown: LastShutdown,
    ) -> Result<PartitionLog, LogError> {
        let interval_bytes = config.index_interval_bytes;
        let segments = recovery::load_segments(&dir, interval_bytes, now_ms, last_shutdown)?;
        assert!(!segments.is_empty(), "recovery leaves at least one segment");
        let log_start_offset = segments[0].base_offset();
        let mut log = PartitionLog {
            dir,
            config,
            segments,
            log_start_offset,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            clock_ms: now_ms,
            cleaned_end_offset: 0,
            generation: 0,
            epoch_checkpoint: None,
        };
        log.apply_log_start_checkpoint()?;
        Ok(log)
    }

    /// Moves the log start up to the checkpointed one. A checkpoint past the recovered log
    /// end (its unflushed tail lost in a crash) empties the log and restarts it there, as
    /// Kafka's `LogLoader` does: every record below the checkpoint was deleted by a client
    /// or by the leader before the crash, and none above it survived.
    fn apply_log_start_checkpoint(&mut self) -> Result<(), LogError> {
        let Some(checkpointed) = log_start_checkpoint::read(&self.dir)? else {
            return Ok(());
        };
        if checkpointed <= self.log_start_offset {
            return Ok(());
        }
        if checkpointed > self.log_end_offset() {
            tracing::warn!(
                dir = %self.dir.display(), checkpointed, log_end = self.log_end_offset(),
                "log end is below the checkpointed log start; restarting the log there"
            );
            return self.truncate_fully(checkpointed);
        }
        self.log_start_offset = checkpointed;
        Ok(())
    }

    /// From now on, what `checkpoint` has pending is published before the log creates a
    /// segment (a roll, a restart at another offset), whichever operation does it.
    pub fn publish_epochs_before_new_segments(&mut self, checkpoint: Arc<EpochCheckpoint>) {
        self.epoch_checkpoint = Some(checkpoint);
    }

    /// Recovery reads the leader-epoch checkpoint, then only the active segment's batches
    /// for epochs it missed: every epoch starting below a new segment's base must be in
    /// the file before that segment exists. A failure leaves the segment uncreated.
    fn before_new_segment(&self) -> Result<(), LogError> {
        match &self.epoch_checkpoint {
            Some(checkpoint) => Ok(checkpoint.flush()?),
            None => Ok(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// New settings apply from the next append or retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// The first offset readers may ask for (see the field).
    pub fn log_start_offset(&self) -> i64 {
        debug_assert!(self.log_start_offset >= self.segments[0].base_offset());
        self.log_start_offset
    }

    /// Bytes on disk in the segments (DescribeLogDirs' partition size and the `Log` `Size`
    /// metric; indexes not counted, as in Kafka's `UnifiedLog.size`).
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size_bytes).sum()
    }

    /// Kafka's `maybeIncrementLogStartOffset`: moves the log start up to `offset` (no-op
    /// if it is not above), checkpoints it durably, then deletes the segments wholly below
    /// it. The caller checks `offset` against the high watermark; above the log end it is
    /// refused. Returns whether the start moved.
    pub fn increment_log_start(&mut self, offset: i64) -> Result<bool, LogError> {
        if offset <= self.log_start_offset {
            return Ok(false);
        }
        let log_end = self.log_end_offset();
        if offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        // Durable before anything is deleted or answered: a restart must not show the
        // records again.
        log_start_checkpoint::write(&self.dir, offset)?;
        self.log_start_offset = offset;
        self.delete_segments_below_start()?;
        Ok(true)
    }

    /// Deletes the segments that end at or below the log start (Kafka's
    /// `deleteLogStartOffsetBreachedSegments`), whatever `cleanup.policy` says. The active
    /// segment goes only when the start is the log end, after a roll.
    pub fn delete_segments_below_start(&mut self) -> Result<usize, LogError> {
        let mut below = self.segments_below(self.log_start_offset);
        if below == self.segments.len() && self.active().is_empty() {
            below -= 1; // an empty active segment at the start is where the log goes on
        }
        let deleted = self.delete_oldest(below, self.clock_ms)?;
        // Any record of the first kept segment may be the start: never below its base.
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset());
        Ok(deleted)
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Base offset of the active segment; it changes when the log rolls.
    pub fn active_base_offset(&self) -> i64 {
        self.active().base_offset()
    }

    pub(super) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a partition log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a partition log always has a segment")
    }

    /// Append batches that passed `validate_batches` (`headers` is its result): assign
    /// offsets from the log end, stamp, roll if needed, write, index, flush by policy.
    /// All or nothing: after an error nothing of this append is visible.
    pub fn append(
        &mut self,
        records: &[u8],
        headers: &[BatchHeader],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        assert!(
            !headers.is_empty(),
            "validate_batches returns at least one batch"
        );
        self.clock_ms = self.clock_ms.max(now_ms);
        let log_append_time_ms = match self.config.timestamp_type {
            TimestampType::LogAppendTime => Some(now_ms),
            TimestampType::CreateTime => None,
        };
        let first_offset = self.log_end_offset();
        let stamp = Stamp {
            first_offset,
            leader_epoch,
            log_append_time_ms,
        };
        let (stamped_headers, stamped) = stamp_records(records, headers, &stamp)?;
        let pieces = interleave(records, &stamped_headers, &stamped);
        let summary = summarize(&stamped);
        self.write_batches(&pieces, &stamped, &summary, now_ms)?;
        Ok(AppendInfo {
            first_offset,
            last_offset: summary.last_offset,
            log_append_time_ms: log_append_time_ms.unwrap_or(-1),
            max_timestamp: summary.max_timestamp.timestamp_ms,
            offset_of_max_timestamp: summary.max_timestamp.offset,
            log_start_offset: self.log_start_offset(),
        })
    }

    /// A follower's append: batches copied from the leader, written as they are (offsets,
    /// leader epochs and timestamps kept), at or after the log end and in increasing
    /// offset order. Gaps are allowed, as Kafka's `appendAsFollower` allows them: a
    /// compacted leader log has dropped whole batches. `headers` come from
    /// `validate_replicated_batches(records)`. Rolls, indexes and flushes as `append` does; all or
    /// nothing.
    pub fn append_replicated(
        &mut self,
        records: &[u8],
        headers: &[BatchHeader],
        now_ms: i64,
    ) -> Result<(), LogError> {
        assert!(!headers.is_empty(), "nothing to append");
        self.clock_ms = self.clock_ms.max(now_ms);
        self.restart_at_straddling_batch(&headers[0])?;
        let mut expected = self.log_end_offset();
        for header in headers {
            if header.base_offset < expected {
                return Err(LogError::Batch(BatchError::InvalidRecord(format!(
                    "replicated batch at offset {} below the next expected offset {expected}",
                    header.base_offset
                ))));
            }
            expected = header.last_offset() + 1;
        }
        let pieces = [IoSlice::new(records)];
        self.write_batches(&pieces, headers, &summarize(headers), now_ms)
    }

    /// An empty follower log that starts inside `first`, the leader's batch holding the
    /// leader's log start (DeleteRecords moved it into a batch), restarts at the batch's
    /// base offset so the batch can be stored whole, as Kafka's `Partition.
    /// appendRecordsToFollowerOrFutureReplica` does; the follower then adopts the leader's
    /// log start again from the fetch response.
    fn restart_at_straddling_batch(&mut self, first: &BatchHeader) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        let straddles = first.base_offset < log_end && first.last_offset() >= log_end;
        if log_end == self.log_start_offset && straddles {
            tracing::info!(
                dir = %self.dir.display(), log_start = log_end, batch_base = first.base_offset,
                "the leader's first batch starts below this empty log: restarting at its base"
            );
            self.generation += 1;
            self.truncate_fully(first.base_offset)?;
        }
        Ok(())
    }

    /// Rolls if needed, writes and indexes `records`, and flushes by policy. If the fsync
    /// the policy promised fails, the batches are taken back out, so the caller's error is
    /// true (nothing stored) and a retry is not stored twice. Later pages of the file are
    /// in doubt too; the next flush tells.
    fn write_batches(
        &mut self,
        records: &[IoSlice<'_>],
        headers: &[BatchHeader],
        summary: &AppendSummary,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let first_offset = self.log_end_offset();
        self.roll_if_needed(summary, now_ms)?;
        let index_interval_bytes = self.config.index_interval_bytes;
        self.active_mut()
            .append(records, headers, index_interval_bytes)?;
        if let Err(error) = self.flush_by_policy(summary.message_count, now_ms) {
            if let Err(undo) = self.truncate_to(first_offset) {
                tracing::error!(
                    dir = %self.dir.display(),
                    first_offset,
                    %undo,
                    "cannot take back an append whose fsync failed"
                );
            }
            return Err(error);
        }
        Ok(())
    }

    fn roll_if_needed(&mut self, incoming: &AppendSummary, now_ms: i64) -> Result<(), LogError> {
        if roll_needed(self.active(), incoming, &self.config, now_ms) {
            self.roll(now_ms)?;
        }
        let active_base = self.active().base_offset();
        if incoming.last_offset - active_base > i64::from(i32::MAX) {
            let why = "one append spans more offsets than a segment can index";
            return Err(LogError::Batch(BatchError::InvalidRecord(why.into())));
        }
        Ok(())
    }

    /// Seal the active segment and start a new one at the log end. An empty active segment
    /// already starts at the log end, so it stays.
    fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        if self.active().is_empty() {
            return Ok(());
        }
        let next_base_offset = self.log_end_offset();
        self.before_new_segment()?;
        // The directory fsync below covers a change the seal reports, before the producer
        // snapshot at the new segment's base that relies on the sealed one.
        let _covered_below = self.active_mut().seal()?;
        let segment = Segment::create(&self.dir, next_base_offset, now_ms)?;
        sync_directory(&self.dir)?;
        self.segments.push(segment);
        Ok(())
    }

    fn flush_by_policy(&mut self, message_count: u64, now_ms: i64) -> Result<(), LogError> {
        self.unflushed_messages = self.unflushed_messages.saturating_add(message_count);
        let due_by_count = self.unflushed_messages >= self.config.flush_messages;
        let due_by_time = now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms;
        if due_by_count || due_by_time {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(())
    }

    /// fsync the active segment; sealed segments were made durable when they rolled (and
    /// their rebuilt aborted-transaction indexes when rebuilt: `finish_txn_index_rebuild`).
    /// Clean shutdown calls this before its producer snapshot at the log end, which stands
    /// for every index entry below it: so an index file created or removed since the last
    /// flush has its directory entry fsynced too.
    pub fn flush(&mut self) -> Result<(), LogError> {
        if self.active_mut().flush()?.0 {
            sync_directory(&self.dir)?;
        }
        self.unflushed_messages = 0;
        Ok(())
    }

    /// Whole batches from the one holding `offset`, across segments, within the limits:
    /// stop before a batch whose base offset is at or above `upper_bound`, or that would
    /// take the result past `max_bytes` (unless it is the first and `min_one_batch`).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one_batch: bool,
    ) -> Result<ReadResult, LogError> {
        let sliced = self.read_slices(offset, max_bytes, upper_bound, min_one_batch)?;
        Ok(ReadResult {
            records: sliced.records.to_bytes()?,
            log_start_offset: sliced.log_start_offset,
            log_end_offset: sliced.log_end_offset,
        })
    }

    /// [`PartitionLog::read`] without reading the bytes: where they are in the segment
    /// files, for a fetch to send them from there (see `file_slice`).
    pub fn read_slices(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one_batch: bool,
    ) -> Result<SlicedRead, LogError> {
        self.check_in_range(offset)?;
        let mut records = RecordSlices::default();
        if offset == self.log_end_offset() {
            // A caught-up reader, the common case of an idle long poll: nothing to find,
            // and no index lookup to pay for it.
            return Ok(SlicedRead {
                records,
                log_start_offset: self.log_start_offset(),
                log_end_offset: offset,
            });
        }
        let limits = ReadLimits {
            upper_bound,
            max_bytes,
            min_one_batch,
        };
        for segment in &self.segments[self.segment_index(offset)..] {
            let Some((slice, limited)) = segment.slice_from(offset, &limits, records.len())? else {
                continue; // offset at or past this segment's end
            };
            if let Some((slice, end_offset)) = slice {
                records.push(slice, end_offset);
            }
            if limited {
                break;
            }
        }
        Ok(SlicedRead {
            records,
            log_start_offset: self.log_start_offset(),
            log_end_offset: self.log_end_offset(),
        })
    }

    fn check_in_range(&self, offset: i64) -> Result<(), LogError> {
        let (log_start, log_end) = (self.log_start_offset(), self.log_end_offset());
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        Ok(())
    }

    /// Index of the segment that would hold `offset` (the first for offsets below it).
    pub(super) fn segment_index(&self, offset: i64) -> usize {
        let after = self
            .segments
            .partition_point(|segment| segment.base_offset() <= offset);
        after.saturating_sub(1)
    }

    /// ListOffsets by timestamp: the first record with a timestamp at or above
    /// `timestamp_ms`, as (offset, timestamp). Segments whose max timestamp is older are
    /// skipped; every earlier record is older, so the first match is the answer.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in &self.segments {
            let newer = segment
                .max_timestamp()
                .is_some_and(|max| max.timestamp_ms >= timestamp_ms);
            if !newer {
                continue;
            }
            if let Some(record) = segment.offset_for_timestamp(timestamp_ms)? {
                // Records of the first batch below the log start are deleted: the answer
                // is never below it (Kafka searches from the log start).
                let offset = record.offset.max(self.log_start_offset);
                return Ok(Some((offset, record.timestamp_ms)));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (KIP-734): the first record with the largest timestamp,
    /// as (offset, timestamp); None for an empty log.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let mut newest: Option<(&Segment, TimestampOffset)> = None;
        for segment in &self.segments {
            let Some(max) = segment.max_timestamp() else {
                continue;
            };
            // Strictly newer: on ties the earlier segment wins, like the earlier record.
            if newest.is_none_or(|(_, best)| max.timestamp_ms > best.timestamp_ms) {
                newest = Some((segment, max));
            }
        }
        let Some((segment, _)) = newest else {
            return Ok(None);
        };
        let record = segment.max_timestamp_record()?;
        let offset_of = |offset: i64| offset.max(self.log_start_offset);
        Ok(record.map(|record| (offset_of(record.offset), record.timestamp_ms)))
    }

    /// Delete the oldest whole segments past `retention.ms`, then past `retention.bytes`.
    /// The active segment goes only when it is itself expired and non-empty, after a roll,
    /// as in Kafka. The log start offset becomes the new first segment's base offset.
    /// Does nothing unless `cleanup.policy` includes `delete` (`retention_deletes`).
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        self.enforce_retention_below(now_ms, i64::MAX)
    }

    /// Retention that deletes only segments wholly below `high_watermark` (Kafka's
    /// `deletableSegments`): records not yet on every in-sync replica are never removed,
    /// whatever their age or the log's size.
    pub fn enforce_retention_below(
        &mut self,
        now_ms: i64,
        high_watermark: i64,
    ) -> Result<usize, LogError> {
        self.clock_ms = self.clock_ms.max(now_ms);
        let below_start = self.delete_segments_below_start()?;
        if !self.config.retention_deletes {
            return Ok(below_start);
        }
        let retention_ms = self.config.retention_ms;
        let by_time = retention::expired_by_time(&self.summaries()?, now_ms, retention_ms);
        let by_time = by_time.min(self.segments_below(high_watermark));
        let mut deleted = self.delete_oldest(by_time, now_ms)?;
        let retention_bytes = self.config.retention_bytes;
        let by_size = retention::excess_by_size(&self.summaries()?, retention_bytes);
        let by_size = by_size.min(self.segments_below(high_watermark));
        deleted += self.delete_oldest(by_size, now_ms)?;
        Ok(below_start + deleted)
    }

    /// How many leading segments end at or below `offset` (the next segment's base, or the
    /// log end for the last).
    fn segments_below(&self, offset: i64) -> usize {
        let ends = (self.segments.iter().skip(1).map(Segment::base_offset))
            .chain(std::iter::once(self.log_end_offset()));
        ends.take_while(|&end| end <= offset).count()
    }

    fn summaries(&self) -> Result<Vec<SegmentSummary>, LogError> {
        let summary = |segment: &Segment| {
            Ok(SegmentSummary {
                size_bytes: segment.size_bytes(),
                largest_timestamp_ms: segment.largest_timestamp_ms()?,
            })
        };
        self.segments.iter().map(summary).collect()
    }

    fn delete_oldest(&mut self, count: usize, now_ms: i64) -> Result<usize, LogError> {
        if count == 0 {
            return Ok(0);
        }
        if count == self.segments.len() {
            self.roll(now_ms)?;
        }
        assert!(
            count < self.segments.len(),
            "retention keeps the active segment"
        );
        let expired: Vec<Segment> = self.segments.drain(..count).collect();
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset());
        // Oldest first, so a crash midway leaves a suffix of the log.
        for segment in expired {
            segment.delete_files()?;
        }
        Ok(count)
    }

    /// Records an aborted transaction whose abort marker (`entry.last_offset`) was just
    /// appended, in the segment holding the marker.
    pub fn append_aborted(&mut self, entry: AbortedTxn) -> Result<(), LogError> {
        let index = self.segment_index(entry.last_offset);
        self.segments[index].append_aborted(entry)
    }

    /// The base offset of the first segment whose aborted-transaction index was unreadable
    /// and dropped on open: its entries must be rebuilt from a state before it.
    pub fn first_lost_txn_index(&self) -> Option<i64> {
        let lost = self
            .segments
            .iter()
            .find(|segment| segment.txn_index_lost());
        lost.map(Segment::base_offset)
    }

    /// Ends a rebuild of the aborted-transaction index entries from `from_offset` on (the
    /// partition's, from a producer snapshot or the log start): makes them durable in the
    /// closed segments, then notes every dropped index rebuilt.
    ///
    /// A producer snapshot stands for every index entry below its offset, so the next one
    /// (at a roll, or at clean shutdown) must not reach the disk before these entries; a
    /// closed segment is never flushed again, so they are fsynced here (and the directory,
    /// for an index file created or removed: a missing one reads as no aborted
    /// transaction). The active segment's entries are fsynced by the seal of the roll or by
    /// the shutdown's flush, each before its snapshot.
    pub fn finish_txn_index_rebuild(&mut self, from_offset: i64) -> Result<(), LogError> {
        let active = self.segments.len() - 1;
        let from = self.segment_index(from_offset).min(active);
        let mut change = DirectoryChange::default();
        for segment in &mut self.segments[from..active] {
            change |= segment.flush_txn_index()?;
        }
        if change.0 {
            sync_directory(&self.dir)?;
        }
        for segment in &mut self.segments {
            segment.txn_index_rebuilt();
        }
        Ok(())
    }

    /// The base offsets of the closed segments whose aborted-transaction index has changes
    /// not fsynced yet.
    #[cfg(test)]
    pub(crate) fn closed_segments_with_unflushed_txn_index(&self) -> Vec<i64> {
        let closed = &self.segments[..self.segments.len() - 1];
        let unflushed = closed.iter().filter(|segment| !segment.txn_index_flushed());
        unflushed.map(Segment::base_offset).collect()
    }

    /// Drops the aborted transactions whose markers are at or after `offset`, for a rebuild
    /// of that part of the index from the log.
    pub fn truncate_aborted_from(&mut self, offset: i64) -> Result<(), LogError> {
        let from = self.segment_index(offset);
        for segment in &mut self.segments[from..] {
            segment.truncate_aborted_from(offset)?;
        }
        Ok(())
    }

    /// Kafka's `collectAbortedTransactions`: the aborted transactions with records in
    /// `start..end`, in marker order. Walks from the segment holding `start` until an
    /// entry's last stable offset reaches `end` (every transaction that started below `end`
    /// has ended by then), or the log ends.
    /// Reads the index files only where an abort can overlap (see `TxnIndex::collect`).
    pub fn aborted_transactions(&self, start: i64, end: i64) -> Result<Vec<AbortedTxn>, LogError> {
        let mut found = Vec::new();
        for segment in &self.segments[self.segment_index(start)..] {
            if segment.collect_aborted(start, end, &mut found)? {
                break;
            }
        }
        Ok(found)
    }

    /// Visit every batch header from the batch holding `from_offset` (or the log start, if
    /// that is later) to the log end, reading headers only.
    pub fn scan_batch_headers(
        &self,
        from_offset: i64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        let from_offset = from_offset.max(self.log_start_offset());
        for segment in &self.segments[self.segment_index(from_offset)..] {
            segment.visit_headers(from_offset, visit)?;
        }
        Ok(())
    }

    /// Remove everything at or above `offset`. Batches are whole, so a batch holding
    /// `offset` goes entirely and the log end may land below `offset`. Below the log start
    /// the log is emptied and restarts at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            // Kafka offsets are never negative, and segment file names could not hold one.
            let (log_start, log_end) = (self.log_start_offset(), self.log_end_offset());
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        // Segments at or above `offset` are rewritten by new appends: clean them again.
        self.cleaned_end_offset = self.cleaned_end_offset.min(offset);
        self.generation += 1;
        // Below the first segment only: between its base and a log start inside it, the
        // segment is cut and the start comes down with the end (below). Comparing with the
        // start would re-create the first segment's file over itself.
        if offset < self.segments[0].base_offset() {
            return self.truncate_fully(offset);
        }
        // Newest first, so a crash midway leaves a prefix of the log.
        while self.active().base_offset() > offset {
            let newest = self
                .segments
                .pop()
                .expect("the first segment starts at or below");
            newest.delete_files()?;
        }
        self.active_mut().truncate_to(offset)?;
        let log_end = self.log_end_offset();
        if log_end < self.log_start_offset {
            // The batch holding the log start went whole: the start comes down to the end
            // rather than past it (those records were deleted; none are lost).
            log_start_checkpoint::write(&self.dir, log_end)?;
            self.log_start_offset = log_end;
        }
        Ok(())
    }

    /// Empties the log and restarts it at `offset`, above its end: a follower whose next
    /// record is gone from its leader (Kafka's `truncateFullyAndStartAt`).
    pub fn restart_at(&mut self, offset: i64) -> Result<(), LogError> {
        let (log_start, log_end) = (self.log_start_offset(), self.log_end_offset());
        if offset <= log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        self.cleaned_end_offset = self.cleaned_end_offset.min(offset);
        self.generation += 1;
        self.truncate_fully(offset)
    }

    fn truncate_fully(&mut self, offset: i64) -> Result<(), LogError> {
        self.before_new_segment()?;
        // A checkpoint above `offset` would hide the restarted log's records after a
        // restart: it goes first.
        log_start_checkpoint::write(&self.dir, offset)?;
        let fresh = Segment::create(&self.dir, offset, self.clock_ms)?;
        let old = std::mem::replace(&mut self.segments, vec![fresh]);
        self.log_start_offset = offset;
        for segment in old.into_iter().rev() {
            segment.delete_files()?;
        }
        sync_directory(&self.dir)?;
        Ok(())
    }

    /// Close the files and remove the whole directory (topic deletion; called only after
    /// the deletion record is durable). The directory is first renamed to Kafka's
    /// `<topic>-<partition>.<uuid>-delete` (durably), so a crash mid-removal leaves a name
    /// start-up finishes removing, never a half-removed directory that looks like a partition.
    pub fn delete(self) -> Result<(), LogError> {
        let PartitionLog { dir, segments, .. } = self;
        drop(segments);
        let doomed = super::durable::rename_aside(&dir, super::durable::DELETE_DIR_SUFFIX)?;
        fs::remove_dir_all(&doomed)?;
        Ok(())
    }
}

/// The broker-assigned fields of one append.
struct Stamp {
    first_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
}

/// The broker's fields for each batch of `records` (consecutive offsets, see
/// `batch::stamped_header`), as header copies; `records` itself, the client's request, is
/// not touched. Returns the copies and the headers they parse to.
fn stamp_records(
    records: &[u8],
    headers: &[BatchHeader],
    stamp: &Stamp,
) -> Result<(Vec<[u8; BATCH_HEADER_BYTES]>, Vec<BatchHeader>), LogError> {
    let described_bytes: usize = headers.iter().map(BatchHeader::total_bytes).sum();
    assert_eq!(
        described_bytes,
        records.len(),
        "headers come from validate_batches(records)"
    );
    let mut copies = Vec::with_capacity(headers.len());
    let mut stamped = Vec::with_capacity(headers.len());
    let mut position = 0;
    let mut next_offset = stamp.first_offset;
    for header in headers {
        let batch = &records[position..position + header.total_bytes()];
        let copy = stamped_header(
            batch,
            next_offset,
            stamp.leader_epoch,
            stamp.log_append_time_ms,
        );
        let header = BatchHeader::parse(&copy)?;
        next_offset = header.last_offset() + 1;
        position += header.total_bytes();
        copies.push(copy);
        stamped.push(header);
    }
    Ok((copies, stamped))
}

/// The pieces of an append: each batch's stamped header copy, then its body from `records`.
fn interleave<'a>(
    records: &'a [u8],
    copies: &'a [[u8; BATCH_HEADER_BYTES]],
    stamped: &[BatchHeader],
) -> Vec<IoSlice<'a>> {
    let mut pieces = Vec::with_capacity(2 * copies.len());
    let mut position = 0;
    for (copy, header) in copies.iter().zip(stamped) {
        let end = position + header.total_bytes();
        pieces.push(IoSlice::new(copy));
        pieces.push(IoSlice::new(&records[position + BATCH_HEADER_BYTES..end]));
        position = end;
    }
    pieces
}

fn summarize(stamped: &[BatchHeader]) -> AppendSummary {
    let first = &stamped[0];
    let mut summary = AppendSummary {
        size_bytes: 0,
        last_offset: first.last_offset(),
        max_timestamp: TimestampOffset {
            timestamp_ms: first.max_timestamp,
            offset: first.last_offset(),
        },
        message_count: 0,
    };
    for header in stamped {
        summary.size_bytes += header.total_bytes() as u64;
        summary.last_offset = header.last_offset();
        summary.message_count += u64::try_from(header.record_count).unwrap_or(0);
        if header.max_timestamp > summary.max_timestamp.timestamp_ms {
            summary.max_timestamp = TimestampOffset {
                timestamp_ms: header.max_timestamp,
                offset: header.last_offset(),
            };
        }
    }
    summary
}

/// Kafka's roll rule (`LogSegment.shouldRoll`) for a non-empty active segment: the append
/// would pass `segment.bytes`, the segment is older than `segment.ms`, or an offset would
/// not fit the index's relative range.
fn roll_needed(
    active: &Segment,
    incoming: &AppendSummary,
    config: &LogConfig,
    now_ms: i64,
) -> bool {
    if active.is_empty() {
        return false;
    }
    // Index positions are u32 and Kafka caps segment.bytes at i32::MAX.
    let segment_bytes_max = config.segment_bytes.min(i32::MAX as u64);
    let full = active.size_bytes() + incoming.size_bytes > segment_bytes_max;
    let age_ms = match active.first_batch_timestamp_ms() {
        Some(first_ms) if first_ms >= 0 => {
            incoming.max_timestamp.timestamp_ms.saturating_sub(first_ms)
        }
        _ => now_ms.saturating_sub(active.created_ms()),
    };
    let old = age_ms > config.segment_ms;
    let offsets_overflow = incoming.last_offset - active.base_offset() > i64::from(i32::MAX);
    full || old || offsets_overflow
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::iter_batches;
    use crate::log::test_support::{LogModel, TEST_EPOCH, encode_batch, validated};
    use kafka_protocol::records::Compression;

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 1_024,
            index_interval_bytes: 100,
            ..LogConfig::default()
        }
    }

    /// 40 batches of 1 to 4 records, rolling a segment every few batches.
    fn filled(dir: &Path) -> LogModel {
        let mut model = LogModel::open(dir, small_segments());
        for index in 0..40 {
            model.append_records(1 + index % 4, 1_000 + index as i64, 30);
        }
        model
    }

    fn offsets_of(records: &[u8]) -> Vec<(i64, i64)> {
        let headers = iter_batches(records).map(|item| item.unwrap().1);
        headers
            .map(|header| (header.base_offset, header.last_offset()))
            .collect()
    }

    #[test]
    fn appends_assign_consecutive_offsets_and_stamp_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = LogModel::open(dir.path(), LogConfig::default());
        let first = model.append(encode_batch(&[10, 30, 20], Compression::None), 7);
        assert_eq!((first.first_offset, first.last_offset), (0, 2));
        assert_eq!(
            (first.max_timestamp, first.offset_of_max_timestamp),
            (30, 2)
        );
        assert_eq!((first.log_append_time_ms, first.log_start_offset), (-1, 0));
        let (mut records, headers) = validated(encode_batch(&[40], Compression::Lz4));
        records.extend_from_slice(&encode_batch(&[50, 60], Compression::Zstd));
        let mut headers = headers;
        headers.extend(validated(encode_batch(&[50, 60], Compression::Zstd)).1);
        let second = model.log.append(&records, &headers, TEST_EPOCH, 8).unwrap();
        assert_eq!((second.first_offset, second.last_offset), (3, 5));
        assert_eq!(
            (second.max_timestamp, second.offset_of_max_timestamp),
            (60, 5)
        );
        assert_eq!(model.log.log_end_offset(), 6);
        let read = model.log.read(0, usize::MAX, i64::MAX, true).unwrap();
        assert_eq!(offsets_of(&read.records), vec![(0, 2), (3, 3), (4, 5)]);
        let epochs: Vec<i32> = iter_batches(&read.records)
            .map(|item| item.unwrap().1.partition_leader_epoch)
            .collect();
        assert_eq!(epochs, vec![TEST_EPOCH; 3]);
        crate::log::validate_batches(&read.records, u32::MAX).unwrap();
    }

    #[test]
    fn reads_from_every_offset_across_segment_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let model = filled(dir.path());
        assert!(
            model.log.segments.len() > 5,
            "{} segments",
            model.log.segments.len()
        );
        assert!(
            model
                .log
                .segments
                .iter()
                .all(|segment| segment.size_bytes() <= 1_024)
        );
        let log_end = model.log.log_end_offset();
        assert_eq!(log_end, 100);
        for offset in 0..log_end {
            model.assert_reads_from(offset);
        }
        let at_end = model.log.read(log_end, usize::MAX, i64::MAX, true).unwrap();
        assert!(at_end.records.is_empty());
        assert_eq!(
            (at_end.log_start_offset, at_end.log_end_offset),
            (0, log_end)
        );
    }

    #[test]
    fn reads_outside_the_log_are_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let model = filled(dir.path());
        for offset in [-1, 101, i64::MAX] {
            let error = model.log.read(offset, 1_000, i64::MAX, true).unwrap_err();
            assert!(matches!(
                error,
                LogError::OffsetOutOfRange {
                    log_start: 0,
                    log_end: 100,
                    ..
                }
            ));
        }
    }

    #[test]
    fn max_bytes_and_min_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let model = filled(dir.path());
        let sizes: Vec<usize> = model.batches.iter().map(|(_, bytes)| bytes.len()).collect();
        let two = sizes[0] + sizes[1];
        let read = model.log.read(0, two, i64::MAX, false).unwrap();
        assert_eq!(read.records.len(), two);
        let read = model
            .log
            .read(0, two + sizes[2] - 1, i64::MAX, false)
            .unwrap();
        assert_eq!(read.records.len(), two);
        let read = model.log.read(0, 10, i64::MAX, true).unwrap();
        assert_eq!(read.records.len(), sizes[0]);
        let read = model.log.read(0, 10, i64::MAX, false).unwrap();
        assert!(read.records.is_empty());
        // The byte budget spans segments.
        let budget: usize = sizes[..20].iter().sum();
        let read = model.log.read(0, budget, i64::MAX, false).unwrap();
        assert_eq!(read.records.len(), budget);
        assert_eq!(offsets_of(&read.records).len(), 20);
    }

    #[test]
    fn upper_bound_stops_before_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let model = filled(dir.path());
        let high_watermark = model.batches[30].0.base_offset;
        let read = model.log.read(0, usize::MAX, high_watermark, true).unwrap();
        assert_eq!(
            read.records.len(),
            model.bytes_from(0).len() - model.bytes_from(30).len()
        );
        let read = model
            .log
            .read(high_watermark, usize::MAX, high_watermark, true)
            .unwrap();
        assert!(read.records.is_empty());
        let inside = model.batches[29].0.last_offset();
        let read = model
            .log
            .read(inside, usize::MAX, high_watermark, true)
            .unwrap();
        assert_eq!(offsets_of(&read.records), vec![(inside - 1, inside)]);
    }

    #[test]
    fn segments_roll_by_age_of_the_first_batch() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_ms: 1_000,
            ..LogConfig::default()
        };
        let mut model = LogModel::open(dir.path(), config);
        model.append(encode_batch(&[5_000], Compression::None), 5_000);
        model.append(encode_batch(&[6_000], Compression::None), 6_000);
        assert_eq!(model.log.segments.len(), 1);
        model.append(encode_batch(&[6_001], Compression::None), 6_001);
        assert_eq!(model.log.segments.len(), 2);
        assert_eq!(model.log.segments[1].base_offset(), 2);
        model.assert_reads_from(0);
    }

    #[test]
    fn offset_for_timestamp_finds_the_first_record_at_or_after() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 300,
            index_interval_bytes: 0,
            ..small_segments()
        };
        let mut model = LogModel::open(dir.path(), config);
        model.append(encode_batch(&[100, 150, 120], Compression::None), 0); // 0..=2
        model.append(encode_batch(&[200, 180], Compression::Gzip), 0); // 3..=4
        model.append(encode_batch(&[150], Compression::Snappy), 0); // 5
        model.append(encode_batch(&[300, 400], Compression::Zstd), 0); // 6..=7
        model.append(encode_batch(&[350], Compression::Lz4), 0); // 8
        assert!(model.log.segments.len() > 1);
        let cases = [
            (0, Some((0, 100))),
            (100, Some((0, 100))),
            (130, Some((1, 150))),
            (150, Some((1, 150))),
            (160, Some((3, 200))),
            (190, Some((3, 200))),
            (200, Some((3, 200))),
            (250, Some((6, 300))),
            (301, Some((7, 400))),
            (400, Some((7, 400))),
            (401, None),
        ];
        for (timestamp_ms, expected) in cases {
            let found = model.log.offset_for_timestamp(timestamp_ms).unwrap();
            assert_eq!(found, expected, "timestamp {timestamp_ms}");
        }
        assert_eq!(model.log.max_timestamp_offset().unwrap(), Some((7, 400)));
    }

    #[test]
    fn max_timestamp_offset_prefers_the_first_on_ties() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = LogModel::open(dir.path(), small_segments());
        assert_eq!(model.log.max_timestamp_offset().unwrap(), None);
        assert_eq!(model.log.offset_for_timestamp(0).unwrap(), None);
        model.append(encode_batch(&[10, 90, 90, 20], Compression::Gzip), 0);
        for _ in 0..10 {
            model.append(encode_batch(&[90, 5], Compression::None), 0);
        }
        assert!(model.log.segments.len() > 1);
        assert_eq!(model.log.max_timestamp_offset().unwrap(), Some((1, 90)));
        model.append(encode_batch(&[1, 2, 91], Compression::Zstd), 0);
        let last = model.log.log_end_offset() - 1;
        assert_eq!(model.log.max_timestamp_offset().unwrap(), Some((last, 91)));
    }

    #[test]
    fn log_append_time_overrides_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path().to_path_buf(), config, 0).unwrap();
        let (records, headers) = validated(encode_batch(&[1, 2, 3], Compression::Gzip));
        let info = log.append(&records, &headers, 0, 9_000).unwrap();
        assert_eq!(
            (info.log_append_time_ms, info.max_timestamp),
            (9_000, 9_000)
        );
        let read = log.read(0, usize::MAX, i64::MAX, true).unwrap();
        let header = crate::log::validate_batches(&read.records, u32::MAX).unwrap()[0];
        assert!(header.is_log_append_time());
        assert_eq!(log.offset_for_timestamp(8_000).unwrap(), Some((0, 9_000)));
        assert_eq!(log.offset_for_timestamp(9_001).unwrap(), None);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((0, 9_000)));
    }

    #[test]
    fn reopen_sees_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let segment_count = model.log.segments.len();
        let before_max = model.log.max_timestamp_offset().unwrap();
        let config = model.log.config().clone();
        model.log = PartitionLog::open(dir.path().to_path_buf(), config, 1).unwrap();
        assert_eq!(model.log.segments.len(), segment_count);
        assert_eq!(model.log.log_end_offset(), 100);
        for offset in 0..100 {
            model.assert_reads_from(offset);
        }
        assert_eq!(model.log.max_timestamp_offset().unwrap(), before_max);
        assert_eq!(
            model.log.offset_for_timestamp(1_020).unwrap(),
            Some((50, 1_020))
        );
        model.append_records(2, 2_000, 30);
        assert_eq!(model.log.log_end_offset(), 102);
        model.assert_reads_from(95);
    }

    #[test]
    fn scan_batch_headers_visits_from_the_holding_batch() {
        let dir = tempfile::tempdir().unwrap();
        let model = filled(dir.path());
        let mut seen = Vec::new();
        model
            .log
            .scan_batch_headers(51, &mut |header| seen.push(header.base_offset))
            .unwrap();
        let first = model.batch_holding(51);
        let expected: Vec<i64> = model.batches[first..]
            .iter()
            .map(|(h, _)| h.base_offset)
            .collect();
        assert_eq!(seen, expected);
        seen.clear();
        model
            .log
            .scan_batch_headers(100, &mut |header| seen.push(header.base_offset))
            .unwrap();
        assert!(seen.is_empty());
    }

    #[test]
    fn truncate_to_removes_whole_batches_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let cut_batch = model.batch_holding(61);
        let cut_base = model.batches[cut_batch].0.base_offset;
        model.log.truncate_to(61).unwrap();
        model.batches.truncate(cut_batch);
        assert_eq!(model.log.log_end_offset(), cut_base);
        assert!(
            model
                .log
                .segments
                .iter()
                .all(|segment| segment.base_offset() <= cut_base)
        );
        model.assert_reads_from(0);
        model.assert_reads_from(cut_base - 1);
        model.append_records(3, 5_000, 30);
        assert_eq!(model.batches.last().unwrap().0.base_offset, cut_base);
        let config = model.log.config().clone();
        model.log = PartitionLog::open(dir.path().to_path_buf(), config, 0).unwrap();
        assert_eq!(model.log.log_end_offset(), cut_base + 3);
        model.assert_reads_from(0);
        assert_eq!(
            model.log.max_timestamp_offset().unwrap(),
            Some((cut_base, 5_000))
        );
    }

    #[test]
    fn slices_read_before_a_truncation_know_whether_it_reached_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let active_base = model.log.active().base_offset();
        // The second batch of the active segment: the cut removes it and what follows.
        let first = model.batch_holding(active_base);
        let cut = model.batches[first + 1].0.base_offset;
        let end = model.log.log_end_offset();
        let below = model.log.read_slices(active_base, 1, cut, true).unwrap();
        let across = model
            .log
            .read_slices(active_base, usize::MAX, end, true)
            .unwrap();
        let expected = model.bytes_from(model.batch_holding(active_base));
        assert!(across.records.to_bytes().unwrap()[..] == expected[..]);
        model.log.truncate_to(cut).unwrap();
        assert!(below.records.unchanged(), "the cut is past these bytes");
        assert!(
            !across.records.unchanged(),
            "the cut went through these bytes"
        );
    }

    #[test]
    fn truncate_below_the_log_start_restarts_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        model.log.set_config(LogConfig {
            retention_bytes: 0,
            ..small_segments()
        });
        model.log.enforce_retention(0).unwrap();
        assert_eq!(model.log.log_start_offset(), 100);
        model.log.truncate_to(40).unwrap();
        assert_eq!(
            (model.log.log_start_offset(), model.log.log_end_offset()),
            (40, 40)
        );
        assert_eq!(model.log.segments.len(), 1);
        let error = model.log.truncate_to(-5).unwrap_err();
        assert!(matches!(
            error,
            LogError::OffsetOutOfRange { offset: -5, .. }
        ));
        let config = model.log.config().clone();
        model.log = PartitionLog::open(dir.path().to_path_buf(), config, 0).unwrap();
        assert_eq!(
            (model.log.log_start_offset(), model.log.log_end_offset()),
            (40, 40)
        );
        model.batches.clear();
        model.append_records(2, 1, 10);
        assert_eq!(model.batches[0].0.base_offset, 40);
        model.assert_reads_from(40);
    }

    #[test]
    fn flush_policy_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let partition_dir = dir.path().join("topic-0");
        let config = LogConfig {
            flush_messages: 1,
            flush_ms: 0,
            ..LogConfig::default()
        };
        let mut model = LogModel::open(&partition_dir, config);
        model.append_records(2, 1, 10);
        assert_eq!(model.log.unflushed_messages, 0);
        assert_eq!(model.log.dir(), partition_dir.as_path());
        model.log.delete().unwrap();
        assert!(!partition_dir.exists());
    }
}
