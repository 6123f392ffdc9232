//! Log compaction, Kafka's log cleaner simplified: in a `cleanup.policy=compact` partition,
//! keep only the latest record of each key in the closed segments.
//!
//! A pass runs in three steps so that the partition lock is held for a swap, not for the
//! work (the broker runs passes on its own cleaner thread, `replica::log_cleaner`):
//! 1. [`PartitionLog::clean_snapshot`], under the lock, briefly: duplicate file handles,
//!    sizes and largest timestamps of the segments, and the log's generation (bumped by
//!    every truncation);
//! 2. [`clean`], with no lock: build the offset map, write each closed segment that loses
//!    records to `<base>.log.cleaned`, fsync it, scan it back with recovery's checks and
//!    write its index files as `<base>.index.cleaned` / `<base>.timeindex.cleaned`;
//! 3. [`PartitionLog::install_clean`], under the write lock, briefly: a segment whose base
//!    offset or size changed meanwhile (retention deleted it) is dropped from the pass and
//!    its files removed; if the log was truncated the whole pass is dropped (its map may
//!    name records that are gone). The others are renamed into place and opened from
//!    their precomputed indexes: no scan of the log under the lock. Readers hold the read
//!    lock, so they see a segment either before or after its swap, never between.
//!
//! The offset map (key hash -> offset of the latest record, [`OffsetMap`]) is bounded by
//! `log.cleaner.dedupe.buffer.size`. It is built from the first dirty offset (where the
//! previous pass stopped; 0 after a restart) over the cleanable segments only: those below
//! the active segment and below the segment holding the last stable offset (Kafka's first
//! uncleanable offset bounds its map the same way). A record above that bound may be above
//! the high watermark, truncated after a leader change, or in a transaction aborted later;
//! it must never supersede a committed record.
//! When it fills, it stops at a segment boundary: only the closed segments wholly below
//! the stop (the "mapped end") are cleaned this pass, and the next pass maps from there.
//! If the first dirty segment alone overflows the map, the pass cleans up to the record
//! where the map stopped, so every pass makes progress. Records are filtered by:
//! - a record at or above the mapped end, or without a key, is kept;
//! - a record whose key the map holds with a later offset is dropped (a later record of the
//!   key exists: the map only names records it read), and a key not in the map is kept;
//! - a tombstone (null value) that survives is dropped once its segment is past the delete
//!   horizon (its largest timestamp plus `delete.retention.ms`). This is safe for a key not
//!   in the map too: every segment below the mapped end has been cleaned against every key
//!   written after it, so no older value of the key is left to reappear.
//!
//! A batch that keeps everything is copied byte for byte, a batch that keeps nothing goes,
//! and any other is re-encoded with the surviving records' offsets, keys, values, headers
//! and timestamps under its original header, as Kafka's `buildRetainedRecordsInto` does
//! (`retained_batch`): same base offset, last offset and base sequence, producer fields,
//! leader epoch and attributes.
//! Offsets are never renumbered: the log gets gaps, which reads step over
//! (`Segment::find_batch` returns the first batch ending at or after).
//!
//! Crash safety, as in Kafka: the cleaned log and indexes are fsynced as `.cleaned` files
//! (recovery removes those), the log is renamed to `<base>.log.swap` and the directory
//! fsynced (from then on the clean counts as done), then the old log is renamed `.deleted`,
//! its index files removed, the `.swap` renamed to `.log` and the cleaned indexes to their
//! names. Each step is taken for all the segments of a pass before the next, so a pass
//! costs two directory fsyncs under the lock. On open, `recovery` completes a `.swap`
//! (rebuilding its indexes) and removes `.cleaned` and `.deleted` leftovers.
//!
//! Transactions, as Kafka's cleaner: only segments wholly below the last stable offset are
//! cleaned ([`PartitionLog::clean_snapshot_below`]), so every transaction there is decided.
//! A batch of an aborted transaction (its producer and offsets inside an entry of the
//! aborted-transaction index whose marker is below that bound) is dropped and never put in
//! the map, so it can never hide a committed value; a committed transactional batch is
//! cleaned like any other. Transactional batches not yet decided (at or above the bound)
//! are kept and stay out of the map.
//!
//! Markers (Kafka's `CleanedTransactionMetadata`): each pass walks the cleaned segments
//! from the first, in order, noting per producer whether a batch of its current
//! transaction was read. A marker whose transaction had no batch read this pass goes once
//! its own delete horizon has passed (KIP-534, below), and its
//! entry leaves the segment's aborted-transaction index when the segment is rewritten; a
//! marker whose transaction still had a batch stays, with its entry. So the pass that drops
//! a transaction's last batches keeps the marker and a later pass removes it ([`TxnWalk`]
//! says why that order matters after a crash). A rewritten index is fsynced as
//! `<base>.txnindex.cleaned` and renamed into place, the directory fsynced, before any
//! log swap of the pass: a new index beside an old log is right, the reverse is not.
//!
//! Producer state (Kafka's `retainLastBatchSequence`): the partition names each producer's
//! last data batch ([`ProducerTail`]); that batch stays, as its bare header (record count
//! 0) if it loses every record, and a rewritten batch keeps its original base and last
//! offsets and base sequence, so a producer state rebuilt from the log still has the
//! producer's epoch and the batch's sequence range (a retry of it is a duplicate). A
//! producer with no data batch keeps its markers at its current epoch.
//!
//! A marker at or above the oldest kept producer snapshot stays whatever else holds: a
//! reload from that snapshot (the newest one unreadable or gone) replays from its offset
//! and would otherwise never close a transaction the snapshot holds open (stuck LSO).
//!
//! KIP-534: the first pass that finds a marker without data (and not needed by producer
//! state) stamps it with a delete horizon `delete.retention.ms` ahead ([`delete_horizon`]);
//! the first pass past that horizon removes it. So a follower or read_committed consumer
//! that copied a transaction's data before it was cleaned meets its marker as long as it
//! is no further behind than `delete.retention.ms`, the same promise tombstones make.
//!
//! Simplifications: the tombstones' delete horizon is per segment (Kafka stamps batches
//! holding tombstones too); a segment left empty stays as an empty file, so the log
//! start offset never moves; the mapped end is in memory only (a restart cleans again from
//! offset 0, which is merely redundant).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Record, RecordBatchDecoder, RecordSet};
use tracing::{debug, info};

use crate::log::batch::{BATCH_HEADER_BYTES, BatchHeader, empty_batch};
use crate::log::delete_horizon;
use crate::log::error::LogError;
use crate::log::offset_map::OffsetMap;
use crate::log::partition_log::PartitionLog;
use crate::log::records::{OffsetDeltas, decoded_exactly};
use crate::log::recovery::{self, CLEANED_SUFFIX, SWAP_SUFFIX};
use crate::log::retained_batch::encode_retained;
use crate::log::segment::{
    DELETED_EXTENSION, INDEX_EXTENSION, LOG_EXTENSION, Segment, SegmentState, TIME_INDEX_EXTENSION,
    remove_if_present, segment_file, sync_directory, write_index_files,
};
use crate::log::txn_index::{AbortedTxn, TXN_INDEX_EXTENSION, write_index_file};

/// Kafka's default `log.cleaner.dedupe.buffer.size`: 128 MiB for the offset map.
pub const DEDUPE_BUFFER_BYTES_DEFAULT: u64 = 134_217_728;

/// What one cleaning pass did. Byte counts cover the rewritten segments only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Closed segments rewritten; a segment that would lose nothing is left alone.
    pub segments_cleaned: usize,
    pub records_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Cleaned segments not installed because the log changed under the pass (retention
    /// deleted them, or a truncation); the next pass cleans what is left.
    pub segments_discarded: usize,
    /// Transaction markers removed (their records are counted in `records_removed` too).
    pub markers_removed: usize,
}

/// What a producer's state needs of the log (Kafka's `LastRecord`): the cleaner keeps the
/// batch ending at `last_data_offset`, emptied if it loses every record, so that a
/// producer state rebuilt from the log still knows the producer's last sequence and epoch;
/// a producer with no data batch keeps its markers at `epoch` instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerTail {
    pub last_data_offset: Option<i64>,
    pub epoch: i16,
}

/// The tails of the producers the partition remembers, by producer id (Kafka's
/// `lastRecordsOfActiveProducers`): an expired producer's batches may all go.
pub type ProducerTails = HashMap<i64, ProducerTail>;

/// Bytes copied at a time when a rewrite starts after an unchanged prefix.
const COPY_CHUNK_BYTES: u64 = 1024 * 1024;

/// Why a walk over a segment ended early.
enum Stop {
    Failed(LogError),
    /// The caller asked the pass to stop (shutdown, partition deletion).
    Aborted,
    /// The visitor has what it needs.
    Done,
}

impl From<LogError> for Stop {
    fn from(error: LogError) -> Self {
        Stop::Failed(error)
    }
}

impl From<std::io::Error> for Stop {
    fn from(error: std::io::Error) -> Self {
        Stop::Failed(error.into())
    }
}

/// One segment as step 1 saw it: a duplicate handle on its log and its bounds then.
/// Appends only add bytes past `size_bytes`, and anything that removes or cuts a segment
/// is caught in step 3, so reading up to `size_bytes` without the lock is safe.
struct SnapshotSegment {
    base_offset: i64,
    size_bytes: u64,
    largest_timestamp_ms: i64,
    log: File,
    log_path: PathBuf,
    /// Its aborted-transaction index (the aborts whose markers it holds).
    aborted: Vec<AbortedTxn>,
}

/// What step 2 works from; see the module doc.
pub struct CleanSnapshot {
    dir: PathBuf,
    generation: u64,
    /// Where this pass starts mapping: the previous pass's mapped end.
    dirty_start: i64,
    /// The active segment's base offset, or the base of the segment holding the last
    /// stable offset if lower: segments below are closed and every transaction in them is
    /// decided.
    closed_end: i64,
    /// What the pass knows of the transactions below `closed_end`.
    transactions: Transactions,
    /// The batches producer state needs, as the partition's producer table said at step 1.
    tails: ProducerTails,
    /// The oldest kept producer snapshot's offset: markers at or above it stay.
    markers_needed_from: i64,
    horizon_ms: i64,
    /// A marker first found without data this pass may go at this time (KIP-534).
    marker_horizon_ms: i64,
    now_ms: i64,
    index_interval_bytes: u32,
    /// Every segment in offset order; the last is the active one.
    segments: Vec<SnapshotSegment>,
}

/// The files of one cleaned segment while they are not in place. Dropping this removes
/// whatever of them is still there, so an abandoned clean leaves nothing behind.
struct CleanedFiles {
    log: PathBuf,
    offset_index: PathBuf,
    time_index: PathBuf,
    /// Written only when the segment's aborted-transaction index loses entries.
    txn_index: PathBuf,
}

impl CleanedFiles {
    fn of(dir: &Path, base_offset: i64) -> Self {
        let cleaned =
            |extension| with_suffix(&segment_file(dir, base_offset, extension), CLEANED_SUFFIX);
        CleanedFiles {
            log: cleaned(LOG_EXTENSION),
            offset_index: cleaned(INDEX_EXTENSION),
            time_index: cleaned(TIME_INDEX_EXTENSION),
            txn_index: cleaned(TXN_INDEX_EXTENSION),
        }
    }
}

impl Drop for CleanedFiles {
    fn drop(&mut self) {
        // Best effort: recovery removes `.cleaned` leftovers on the next open anyway.
        for path in [
            &self.log,
            &self.offset_index,
            &self.time_index,
            &self.txn_index,
        ] {
            let _ = remove_if_present(path);
        }
    }
}

/// One cleaned segment ready to swap in.
struct CleanedSegment {
    base_offset: i64,
    /// The original's size when it was cleaned: if it differs now, it is not the same.
    size_before: u64,
    /// The cleaned log's state, as its scan found it.
    state: SegmentState,
    records_removed: usize,
    markers_removed: usize,
    /// Entries its aborted-transaction index keeps; `files.txn_index` holds them when
    /// `txn_index_changed` (set whenever it keeps any, see [`clean_segment`]), else the
    /// segment's own index stays (it has none, or they all stay as they are).
    aborted_kept: usize,
    txn_index_changed: bool,
    files: CleanedFiles,
}

/// The result of step 2, for [`PartitionLog::install_clean`].
pub struct CleanOutcome {
    generation: u64,
    mapped_end: i64,
    segments: Vec<CleanedSegment>,
}

impl PartitionLog {
    /// Step 1: what a pass needs, or None when there is nothing to clean (not a compacted
    /// topic, or no segment closed since the last pass). Cheap: no data is read.
    /// Transactions are taken as decided up to the log end and no producer's last batch is
    /// kept: for logs without open transactions or producer state (tests, tools); the
    /// partition calls [`Self::clean_snapshot_below`].
    pub fn clean_snapshot(&self, now_ms: i64) -> Result<Option<CleanSnapshot>, LogError> {
        self.clean_snapshot_below(
            now_ms,
            self.log_end_offset(),
            ProducerTails::new(),
            i64::MAX,
        )
    }

    /// Step 1, cleaning only segments wholly below `stable_end` (the last stable offset):
    /// nothing at or above it is touched. `tails` are the batches producer state needs kept.
    /// `oldest_snapshot` is the offset of the oldest producer snapshot kept (i64::MAX for
    /// none): no marker at or above it goes, since a reload from that snapshot replays the
    /// log from there and must meet the marker of every transaction the snapshot holds open.
    pub fn clean_snapshot_below(
        &self,
        now_ms: i64,
        stable_end: i64,
        tails: ProducerTails,
        oldest_snapshot: i64,
    ) -> Result<Option<CleanSnapshot>, LogError> {
        let holding_stable_end = self.segments[self.segment_index(stable_end)].base_offset();
        let closed_end = self.active().base_offset().min(holding_stable_end);
        if !self.config.compact || closed_end <= self.cleaned_end_offset {
            return Ok(None);
        }
        let mut segments = Vec::with_capacity(self.segments.len());
        for segment in &self.segments {
            segments.push(SnapshotSegment {
                base_offset: segment.base_offset(),
                size_bytes: segment.size_bytes(),
                largest_timestamp_ms: segment.largest_timestamp_ms()?,
                log: segment.log_file().try_clone()?,
                log_path: segment.log_path().to_path_buf(),
                // Each index file is read once a pass, here: the pass's view of the
                // transactions below comes from these entries too.
                aborted: segment.aborted_transactions()?,
            });
        }
        let transactions = Transactions::new(decided_aborts(&segments, closed_end), closed_end);
        Ok(Some(CleanSnapshot {
            dir: self.dir.clone(),
            generation: self.generation,
            dirty_start: self.cleaned_end_offset,
            closed_end,
            transactions,
            tails,
            markers_needed_from: oldest_snapshot,
            horizon_ms: now_ms.saturating_sub(self.config.delete_retention_ms),
            marker_horizon_ms: now_ms.saturating_add(self.config.delete_retention_ms),
            now_ms,
            index_interval_bytes: self.config.index_interval_bytes,
            segments,
        }))
    }

    /// Step 3: swap in the cleaned segments of `outcome` that still match the log.
    pub fn install_clean(
        &mut self,
        outcome: CleanOutcome,
        now_ms: i64,
    ) -> Result<CleanStats, LogError> {
        self.clock_ms = self.clock_ms.max(now_ms);
        let started = Instant::now();
        let mut stats = CleanStats::default();
        if outcome.generation != self.generation {
            // Truncated meanwhile: the map may name records that no longer exist.
            stats.segments_discarded = outcome.segments.len();
            return Ok(stats);
        }
        let mut matched = Vec::with_capacity(outcome.segments.len());
        for cleaned in outcome.segments {
            match self.closed_segment_like(&cleaned) {
                Some(index) => matched.push((index, cleaned)),
                // Deleted by retention meanwhile: never resurrect it. Drop removes files.
                None => stats.segments_discarded += 1,
            }
        }
        self.swap_in(matched, &mut stats)?;
        self.cleaned_end_offset = self.cleaned_end_offset.max(outcome.mapped_end);
        let swap_us = started.elapsed().as_micros() as u64;
        info!(dir = %self.dir.display(), ?stats, swap_us, "compacted the closed segments");
        Ok(stats)
    }

    /// All three steps in a row, holding `&mut self` throughout (tests and tools; the
    /// broker runs step 2 without the partition lock).
    pub fn compact(
        &mut self,
        now_ms: i64,
        dedupe_buffer_bytes: u64,
    ) -> Result<CleanStats, LogError> {
        let Some(snapshot) = self.clean_snapshot(now_ms)? else {
            return Ok(CleanStats::default());
        };
        match clean(snapshot, dedupe_buffer_bytes, &|| false)? {
            Some(outcome) => self.install_clean(outcome, now_ms),
            None => Ok(CleanStats::default()),
        }
    }

    /// The index of the closed segment `cleaned` was made from, if it is still there
    /// unchanged (same base offset and size).
    fn closed_segment_like(&self, cleaned: &CleanedSegment) -> Option<usize> {
        let closed = &self.segments[..self.segments.len() - 1];
        closed.iter().position(|segment| {
            segment.base_offset() == cleaned.base_offset
                && segment.size_bytes() == cleaned.size_before
        })
    }

    /// Replace each closed segment `index` by its `cleaned` copy, in an order that recovery
    /// can complete after a crash at any step. Steps are batched over the segments, so a
    /// pass costs two directory fsyncs under the lock whatever its number of segments.
    fn swap_in(
        &mut self,
        matched: Vec<(usize, CleanedSegment)>,
        stats: &mut CleanStats,
    ) -> Result<(), LogError> {
        if matched.is_empty() {
            return Ok(());
        }
        let dir = self.dir.clone();
        // The aborted-transaction indexes go first, made durable before any log swap: an
        // entry only goes once its transaction has no batch left, so the new index beside
        // the old log is right; the old index beside the new log could name an abort whose
        // marker is gone, and a read_committed client would then skip that producer's later
        // transactions (it forgets an abort only at its marker).
        let mut txn_indexes_moved = false;
        for (_, cleaned) in matched.iter().filter(|(_, c)| c.txn_index_changed) {
            let target = segment_file(&dir, cleaned.base_offset, TXN_INDEX_EXTENSION);
            fs::rename(&cleaned.files.txn_index, target)?;
            txn_indexes_moved = true;
        }
        if txn_indexes_moved {
            sync_directory(&dir)?;
        }
        for (_, cleaned) in &matched {
            let paths = SegmentPaths::of(&dir, cleaned.base_offset);
            fs::rename(&cleaned.files.log, &paths.swap)?;
        }
        sync_directory(&dir)?;
        // The cleans are durable from here on: recovery finishes the steps below.
        for (_, cleaned) in &matched {
            let paths = SegmentPaths::of(&dir, cleaned.base_offset);
            fs::rename(&paths.log, &paths.deleted)?;
            remove_if_present(&paths.offset_index)?;
            remove_if_present(&paths.time_index)?;
            fs::rename(&paths.swap, &paths.log)?;
            fs::rename(&cleaned.files.offset_index, &paths.offset_index)?;
            fs::rename(&cleaned.files.time_index, &paths.time_index)?;
        }
        sync_directory(&dir)?;
        for (index, cleaned) in matched {
            let segment = Segment::open(&dir, cleaned.base_offset, self.clock_ms)?;
            check_installed(&segment, &cleaned.state, cleaned.aborted_kept)?;
            stats.segments_cleaned += 1;
            stats.records_removed += cleaned.records_removed;
            stats.markers_removed += cleaned.markers_removed;
            stats.bytes_before += cleaned.size_before;
            stats.bytes_after += segment.size_bytes();
            // Dropping the old segment closes its files, already renamed or unlinked.
            self.segments[index] = segment;
            fs::remove_file(SegmentPaths::of(&dir, cleaned.base_offset).deleted)?;
        }
        Ok(())
    }
}

/// The names one segment's files take during a swap.
struct SegmentPaths {
    log: PathBuf,
    swap: PathBuf,
    deleted: PathBuf,
    offset_index: PathBuf,
    time_index: PathBuf,
}

impl SegmentPaths {
    fn of(dir: &Path, base_offset: i64) -> Self {
        let log = segment_file(dir, base_offset, LOG_EXTENSION);
        SegmentPaths {
            swap: with_suffix(&log, SWAP_SUFFIX),
            deleted: with_suffix(&log, &format!(".{DELETED_EXTENSION}")),
            offset_index: segment_file(dir, base_offset, INDEX_EXTENSION),
            time_index: segment_file(dir, base_offset, TIME_INDEX_EXTENSION),
            log,
        }
    }
}

/// The swapped-in segment reads back as the scan of its cleaned log found it, with the
/// aborted transactions the pass kept.
fn check_installed(
    segment: &Segment,
    expected: &SegmentState,
    aborted_kept: usize,
) -> Result<(), LogError> {
    let matches = segment.size_bytes() == expected.size_bytes()
        && segment.next_offset() == expected.next_offset()
        && segment.max_timestamp() == expected.max_timestamp()
        && segment.aborted_count() == aborted_kept as u64;
    if matches {
        return Ok(());
    }
    Err(LogError::Corrupt(format!(
        "cleaned {} reads back as {} bytes up to offset {} with {} aborted transactions, \
         not {} bytes up to {} with {}",
        segment.log_path().display(),
        segment.size_bytes(),
        segment.next_offset(),
        segment.aborted_count(),
        expected.size_bytes(),
        expected.next_offset(),
        aborted_kept
    )))
}

/// Step 2, without any lock: map, then write and index the cleaned segments. None when
/// `abort` returned true (checked between batches); files written so far are removed.
pub fn clean(
    snapshot: CleanSnapshot,
    dedupe_buffer_bytes: u64,
    abort: &dyn Fn() -> bool,
) -> Result<Option<CleanOutcome>, LogError> {
    match clean_segments(&snapshot, dedupe_buffer_bytes, abort) {
        Ok(outcome) => Ok(Some(outcome)),
        Err(Stop::Aborted) => Ok(None),
        Err(Stop::Failed(error)) => Err(error),
        Err(Stop::Done) => unreachable!("only map building stops a walk early, and catches it"),
    }
}

fn clean_segments(
    snapshot: &CleanSnapshot,
    dedupe_buffer_bytes: u64,
    abort: &dyn Fn() -> bool,
) -> Result<CleanOutcome, Stop> {
    info!(
        dir = %snapshot.dir.display(),
        closed_segments = snapshot.segments.len() - 1,
        from = snapshot.dirty_start,
        "cleaning the log"
    );
    let (map, mapped_end) = build_offset_map(snapshot, dedupe_buffer_bytes, abort)?;
    debug!(
        dir = %snapshot.dir.display(),
        keys = map.len(),
        capacity = map.capacity(),
        from = snapshot.dirty_start,
        to = mapped_end,
        "built the offset map"
    );
    let closed = &snapshot.segments[..snapshot.segments.len() - 1];
    let mut segments = Vec::new();
    // From the first segment on, in order: a transaction's batches are all read before its
    // marker, wherever they sit.
    let mut walk = TxnWalk::default();
    for segment in closed.iter().filter(|s| s.base_offset < mapped_end) {
        let retention = Retention {
            map: &map,
            transactions: &snapshot.transactions,
            tails: &snapshot.tails,
            mapped_end,
            markers_needed_from: snapshot.markers_needed_from,
            within_horizon: segment.largest_timestamp_ms > snapshot.horizon_ms,
            now_ms: snapshot.now_ms,
            marker_horizon_ms: snapshot.marker_horizon_ms,
        };
        if let Some(cleaned) = clean_segment(snapshot, segment, &retention, &mut walk, abort)? {
            segments.push(cleaned);
        }
    }
    Ok(CleanOutcome {
        generation: snapshot.generation,
        mapped_end,
        segments,
    })
}

/// Write, fsync, scan back and index the cleaned copy of one segment; None when it
/// would lose nothing.
fn clean_segment(
    snapshot: &CleanSnapshot,
    segment: &SnapshotSegment,
    retention: &Retention,
    walk: &mut TxnWalk,
    abort: &dyn Fn() -> bool,
) -> Result<Option<CleanedSegment>, Stop> {
    let files = CleanedFiles::of(&snapshot.dir, segment.base_offset);
    let mut writer = CleanedWriter {
        segment,
        path: &files.log,
        writer: None,
        size_bytes: 0,
        records_removed: 0,
        markers_removed: 0,
    };
    segment.for_each_batch(abort, &mut |position, header, bytes| {
        let decision = decide(header, bytes.clone(), retention, walk)?;
        writer.apply(position, &bytes, decision)
    })?;
    let Some(written) = writer.finish()? else {
        return Ok(None);
    };
    // Read back what was written with recovery's checks (CRC included): the pair of the
    // checks made when the batches were produced.
    let log = File::open(&files.log)?;
    let interval_bytes = snapshot.index_interval_bytes;
    let (mut state, mut pending) =
        recovery::scan_log_file(&log, segment.base_offset, interval_bytes)
            .map_err(|error| corrupt_copy(&files.log, error))?;
    if state.size_bytes() != written.size_bytes {
        let why = LogError::Corrupt(format!(
            "{} of {} bytes",
            state.size_bytes(),
            written.size_bytes
        ));
        return Err(corrupt_copy(&files.log, why).into());
    }
    state.seal_entries(&mut pending);
    write_index_files(
        &files.offset_index,
        &files.time_index,
        segment.base_offset,
        &pending,
    )?;
    // Kafka rebuilds a cleaned segment's index from the aborts whose markers it keeps for
    // their data: an abort with no batch left has nothing for a reader to skip.
    let aborted: Vec<AbortedTxn> = segment
        .aborted
        .iter()
        .filter(|entry| !walk.dataless_markers.contains(&entry.last_offset))
        .copied()
        .collect();
    // Written whenever there are entries, changed or not: the index may hold entries its
    // file lacks (a failed append, written only at the next flush), and the swapped-in
    // segment is opened from the file.
    let txn_index_changed = aborted.len() != segment.aborted.len() || !aborted.is_empty();
    if txn_index_changed {
        write_index_file(&files.txn_index, &aborted)?;
    }
    Ok(Some(CleanedSegment {
        base_offset: segment.base_offset,
        size_before: segment.size_bytes,
        state,
        records_removed: written.records_removed,
        markers_removed: written.markers_removed,
        aborted_kept: aborted.len(),
        txn_index_changed,
        files,
    }))
}

fn corrupt_copy(path: &Path, error: LogError) -> LogError {
    LogError::Corrupt(format!(
        "cleaned copy {} reads back wrong: {error}",
        path.display()
    ))
}

impl SnapshotSegment {
    /// Visit every batch up to the snapshot's size in order: position, header and bytes.
    fn for_each_batch(
        &self,
        abort: &dyn Fn() -> bool,
        visit: &mut dyn FnMut(u64, &BatchHeader, Bytes) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        let mut position = 0;
        while position < self.size_bytes {
            if abort() {
                return Err(Stop::Aborted);
            }
            let header = self.header_at(position)?;
            let mut bytes = BytesMut::new();
            self.read_exact(position, header.total_bytes(), &mut bytes)?;
            visit(position, &header, bytes.freeze())?;
            position += header.total_bytes() as u64;
        }
        Ok(())
    }

    /// The header at `position`; batches were validated when written, so one that does
    /// not parse or overruns the snapshot is corruption.
    fn header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        let remaining = self.size_bytes - position;
        let corrupt = |why: &str| {
            let path = self.log_path.display();
            LogError::Corrupt(format!("{path} at byte {position}: {why}"))
        };
        if remaining < BATCH_HEADER_BYTES as u64 {
            return Err(corrupt("batch header runs past the end"));
        }
        let mut bytes = [0; BATCH_HEADER_BYTES];
        self.log.read_exact_at(&mut bytes, position)?;
        let header = BatchHeader::parse(&bytes).map_err(|error| corrupt(&error.to_string()))?;
        if header.total_bytes() as u64 > remaining {
            return Err(corrupt("batch runs past the end"));
        }
        Ok(header)
    }

    fn read_exact(&self, position: u64, length: usize, out: &mut BytesMut) -> Result<(), LogError> {
        let start = out.len();
        out.resize(start + length, 0);
        self.log.read_exact_at(&mut out[start..], position)?;
        Ok(())
    }
}

/// `path` with `suffix` appended to its file name (`x.log` -> `x.log.swap`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// The aborted transactions with records below `closed_end`, from the entries the snapshot
/// read of every segment's index: what `PartitionLog::aborted_transactions(0, closed_end)`
/// answers (Kafka's `collectAbortedTxns`, the same walk over the same entries) without
/// reading the index files a second time.
fn decided_aborts(segments: &[SnapshotSegment], closed_end: i64) -> Vec<AbortedTxn> {
    let mut found = Vec::new();
    for entry in segments.iter().flat_map(|segment| &segment.aborted) {
        if entry.overlaps(0, closed_end) {
            found.push(*entry);
        }
        // Every transaction that started below `closed_end` had ended by this marker.
        if entry.last_stable_offset >= closed_end {
            break;
        }
    }
    found
}

/// The aborted transactions a pass knows, by producer: (first offset, marker offset).
struct Transactions {
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    /// Transactions with batches at or above are not decided yet (`closed_end`).
    decided_end: i64,
}

/// What the cleaner may do with one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchKind {
    /// Plain or committed data: mapped and filtered.
    Data,
    /// A transaction marker: kept while its transaction has batches, see [`TxnWalk`].
    Control,
    /// Data of an undecided transaction: kept, never mapped.
    Undecided,
    /// Data of an aborted transaction: dropped, never mapped.
    Aborted,
}

impl Transactions {
    fn new(entries: Vec<AbortedTxn>, decided_end: i64) -> Self {
        let mut aborted: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        // Every indexed entry is a decided abort, wherever its marker is: an abort whose
        // marker lies beyond the segments being cleaned still makes its data aborted (Kafka
        // uses every aborted transaction that starts below the cleaning bound).
        for entry in &entries {
            let ranges = aborted.entry(entry.producer_id).or_default();
            ranges.push((entry.first_offset, entry.last_offset));
        }
        Transactions {
            aborted,
            decided_end,
        }
    }

    fn kind(&self, header: &BatchHeader) -> BatchKind {
        if header.is_control() {
            return BatchKind::Control;
        }
        if !header.is_transactional() {
            return BatchKind::Data;
        }
        if header.last_offset() >= self.decided_end {
            return BatchKind::Undecided;
        }
        let ranges = self.aborted.get(&header.producer_id);
        let aborted = ranges.is_some_and(|ranges| {
            ranges.iter().any(|&(first, marker)| {
                first <= header.base_offset && header.last_offset() < marker
            })
        });
        if aborted {
            BatchKind::Aborted
        } else {
            BatchKind::Data
        }
    }
}

fn decode(header: &BatchHeader, mut bytes: Bytes) -> Result<RecordSet, LogError> {
    RecordBatchDecoder::decode(&mut bytes).map_err(|error| {
        let offset = header.base_offset;
        LogError::Corrupt(format!(
            "cannot decode the batch at offset {offset}: {error:#}"
        ))
    })
}

/// The offset map of this pass and its mapped end; see the module doc.
fn build_offset_map(
    snapshot: &CleanSnapshot,
    dedupe_buffer_bytes: u64,
    abort: &dyn Fn() -> bool,
) -> Result<(OffsetMap, i64), Stop> {
    let mut map = OffsetMap::with_buffer_bytes(dedupe_buffer_bytes);
    let dirty_start = snapshot.dirty_start;
    let after = snapshot
        .segments
        .partition_point(|s| s.base_offset <= dirty_start);
    // Only the cleanable range (Kafka's firstUncleanableOffset bounds its map too): a
    // record at or past `closed_end` may be above the high watermark (truncated if the
    // leader changes) or in a transaction not yet decided (aborted later), and must not
    // supersede a committed record below it.
    let cleanable = snapshot.segments[after.saturating_sub(1)..]
        .iter()
        .take_while(|segment| segment.base_offset < snapshot.closed_end);
    for segment in cleanable {
        let Some(stopped_at) = map_segment(&mut map, snapshot, segment, dirty_start, abort)? else {
            continue;
        };
        let mapped_end = if segment.base_offset > dirty_start {
            segment.base_offset // the last segment boundary the map reached
        } else {
            stopped_at // the first dirty segment alone overflows the map
        };
        return Ok((map, mapped_end));
    }
    Ok((map, snapshot.closed_end))
}

/// Put the keyed records at or above `dirty_start` of one segment in the map. Returns the
/// offset of the first record that did not fit, None when all did.
fn map_segment(
    map: &mut OffsetMap,
    snapshot: &CleanSnapshot,
    segment: &SnapshotSegment,
    dirty_start: i64,
    abort: &dyn Fn() -> bool,
) -> Result<Option<i64>, Stop> {
    let mut stopped_at = None;
    let walked = segment.for_each_batch(abort, &mut |_, header, bytes| {
        let data = snapshot.transactions.kind(header) == BatchKind::Data;
        if !data || header.last_offset() < dirty_start {
            return Ok(());
        }
        // A batch the decoder cannot read stays out of the map: its records are never
        // superseded through it, and `decide` keeps it whole.
        let Ok(set) = decode(header, bytes) else {
            return Ok(());
        };
        for record in set.records {
            let Some(key) = &record.key else { continue };
            if record.offset >= dirty_start && map.put(key, record.offset).is_err() {
                stopped_at = Some(record.offset);
                return Err(Stop::Done);
            }
        }
        Ok(())
    });
    match walked {
        Ok(()) | Err(Stop::Done) => Ok(stopped_at),
        Err(stop) => Err(stop),
    }
}

/// What one pass has read of the transactions so far, in log order (Kafka's
/// `CleanedTransactionMetadata`). A marker may go only when no batch of its transaction
/// was read in this pass, not even one the pass drops: the pass that drops the last
/// batches keeps the marker, a later one removes it. So a marker never goes in the same
/// swap as its transaction's data, and a crash between the swaps of two segments can never
/// leave a transaction's data without its marker (read_committed would see aborted data,
/// or the rebuilt producer state an open transaction holding the LSO).
#[derive(Default)]
struct TxnWalk {
    /// Producers with a transactional batch read since their last marker.
    observed: HashSet<i64>,
    /// Markers whose transaction had no batch left: their aborted-transaction index
    /// entries go with the segment's rewrite.
    dataless_markers: HashSet<i64>,
}

/// Which records of one segment survive.
struct Retention<'a> {
    map: &'a OffsetMap,
    transactions: &'a Transactions,
    tails: &'a ProducerTails,
    /// Records at or above were not all mapped this pass: they are kept.
    mapped_end: i64,
    /// Markers at or above stay: a producer snapshot kept at that offset may be reloaded,
    /// and the replay from it must close the transactions it holds open.
    markers_needed_from: i64,
    /// The segment is younger than the delete horizon: consumers may not have seen its
    /// tombstones yet.
    within_horizon: bool,
    now_ms: i64,
    /// The delete horizon a marker found without data gets stamped with (KIP-534).
    marker_horizon_ms: i64,
}

impl Retention<'_> {
    fn retains(&self, record: &Record) -> bool {
        let Some(key) = &record.key else {
            return true;
        };
        if record.offset >= self.mapped_end {
            return true;
        }
        let superseded = self
            .map
            .get(key)
            .is_some_and(|latest| latest > record.offset);
        !superseded && (record.value.is_some() || self.within_horizon)
    }

    /// Whether producer state needs this batch (Kafka's `isBatchLastRecordOfProducer`): a
    /// producer's last data batch, or, for a producer without one, its markers at its
    /// current epoch.
    fn is_producer_tail(&self, header: &BatchHeader) -> bool {
        if !header.has_producer_id() {
            return false;
        }
        let Some(tail) = self.tails.get(&header.producer_id) else {
            return false;
        };
        match tail.last_data_offset {
            Some(offset) => !header.is_control() && header.last_offset() == offset,
            None => header.is_control() && header.producer_epoch == tail.epoch,
        }
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
    markers_removed: usize,
}

const KEEP: Decision = Decision {
    fate: Fate::Keep,
    records_removed: 0,
    markers_removed: 0,
};

/// The whole batch goes.
fn drop_all(header: &BatchHeader) -> Decision {
    Decision {
        fate: Fate::Drop,
        records_removed: header.record_count.max(0) as usize,
        markers_removed: usize::from(header.is_control()),
    }
}

fn decide(
    header: &BatchHeader,
    bytes: Bytes,
    retention: &Retention,
    walk: &mut TxnWalk,
) -> Result<Decision, LogError> {
    let kind = retention.transactions.kind(header);
    if kind == BatchKind::Control {
        return decide_marker(header, &bytes, retention, walk);
    }
    if header.is_transactional() {
        walk.observed.insert(header.producer_id);
    }
    let decision = match kind {
        BatchKind::Data => decide_records(header, &bytes, retention)?,
        BatchKind::Undecided | BatchKind::Control => KEEP,
        BatchKind::Aborted => drop_all(header),
    };
    if matches!(decision.fate, Fate::Drop) && retention.is_producer_tail(header) {
        if header.record_count == 0 {
            return Ok(KEEP); // emptied by an earlier pass already
        }
        // Kafka's RETAIN_EMPTY: the header alone carries the sequence range and epoch.
        return Ok(Decision {
            fate: Fate::Rewrite(BytesMut::from(&empty_batch(&bytes)[..])),
            ..decision
        });
    }
    Ok(decision)
}

/// A marker whose transaction had no batch read this pass (see [`TxnWalk`]) and that
/// producer state does not need is stamped with a delete horizon `delete.retention.ms`
/// ahead (KIP-534), and goes in the first pass past that horizon.
fn decide_marker(
    header: &BatchHeader,
    bytes: &Bytes,
    retention: &Retention,
    walk: &mut TxnWalk,
) -> Result<Decision, LogError> {
    if !header.has_producer_id() {
        return Ok(KEEP); // not a transaction marker
    }
    let has_batches = walk.observed.remove(&header.producer_id);
    if has_batches {
        return Ok(KEEP);
    }
    walk.dataless_markers.insert(header.base_offset);
    let snapshot_needs_it = header.base_offset >= retention.markers_needed_from;
    if snapshot_needs_it || retention.is_producer_tail(header) {
        return Ok(KEEP);
    }
    match delete_horizon::delete_horizon_ms(header) {
        Some(horizon_ms) if horizon_ms <= retention.now_ms => Ok(drop_all(header)),
        Some(_) => Ok(KEEP),
        // A marker that cannot be stamped is kept as it is: keeping only costs space.
        None => match delete_horizon::stamp(bytes, retention.marker_horizon_ms) {
            Ok(stamped) => Ok(Decision {
                fate: Fate::Rewrite(BytesMut::from(&stamped[..])),
                records_removed: 0,
                markers_removed: 0,
            }),
            Err(error) => {
                let offset = header.base_offset;
                tracing::warn!(offset, %error, "cannot stamp a marker's delete horizon; kept");
                Ok(KEEP)
            }
        },
    }
}

/// Plain or committed data: the records the map and the horizon keep.
fn decide_records(
    header: &BatchHeader,
    bytes: &Bytes,
    retention: &Retention,
) -> Result<Decision, LogError> {
    if header.record_count == 0 {
        // Kept empty for a producer's state once; no longer its last batch (else the
        // caller keeps it again), it holds nothing (Kafka's DELETE_EMPTY).
        return Ok(drop_all(header));
    }
    // A batch the decoder cannot read is kept whole: keeping it only costs space.
    let Ok(record_set) = decode(header, bytes.clone()) else {
        return Ok(KEEP);
    };
    let total = record_set.records.len();
    if !record_set
        .records
        .iter()
        .any(|record| !retention.retains(record))
    {
        return Ok(KEEP);
    }
    // Re-encoding must hold every header as sent, or the batch is kept whole. A batch
    // cleaned before has gaps in its offset deltas, and must stay cleanable.
    if !decoded_exactly(bytes, header, OffsetDeltas::Increasing, &record_set.records) {
        return Ok(KEEP);
    }
    let survivors: Vec<Record> = record_set
        .records
        .into_iter()
        .filter(|record| retention.retains(record))
        .collect();
    let records_removed = total - survivors.len();
    let fate = if survivors.is_empty() {
        Fate::Drop
    } else {
        Fate::Rewrite(encode_survivors(header, &survivors)?)
    };
    Ok(Decision {
        fate,
        records_removed,
        markers_removed: 0,
    })
}

/// One batch of `survivors` (non-empty, from the batch `header`), as Kafka's
/// `buildRetainedRecordsInto` writes it ([`encode_retained`]): the original base offset,
/// last offset, base sequence, producer, leader epoch and attributes, each record at its
/// own offset. So the batch still covers the offsets and sequences it was given, and
/// producer state rebuilt from the log expects the sequence that follows and takes a retry
/// of the batch for the duplicate it is.
fn encode_survivors(header: &BatchHeader, survivors: &[Record]) -> Result<BytesMut, LogError> {
    let failed = |why: String| {
        let offset = header.base_offset;
        LogError::Corrupt(format!(
            "cannot re-encode the batch at offset {offset}: {why}"
        ))
    };
    let encoded = encode_retained(header, survivors).map_err(|error| failed(error.to_string()))?;
    // One whole batch whose header says what the original's did. (Its CRC is checked
    // where the whole cleaned copy is read back with recovery's checks.)
    let rewritten = BatchHeader::parse(&encoded).map_err(|error| failed(error.to_string()))?;
    let same_header = rewritten.base_offset == header.base_offset
        && rewritten.last_offset() == header.last_offset()
        && rewritten.base_sequence == header.base_sequence
        && (rewritten.producer_id, rewritten.producer_epoch)
            == (header.producer_id, header.producer_epoch)
        && rewritten.partition_leader_epoch == header.partition_leader_epoch
        && rewritten.compression_code() == header.compression_code()
        && rewritten.record_count == survivors.len() as i32;
    if rewritten.total_bytes() != encoded.len() || !same_header {
        return Err(failed(
            "the rewritten header does not match the original".into(),
        ));
    }
    Ok(encoded)
}

/// The cleaned copy of one segment, `path`, written from the first batch that changes:
/// a segment that loses nothing is never copied.
struct CleanedWriter<'a> {
    segment: &'a SnapshotSegment,
    path: &'a Path,
    writer: Option<BufWriter<File>>,
    size_bytes: u64,
    records_removed: usize,
    markers_removed: usize,
}

/// A finished, fsynced cleaned log.
struct Cleaned {
    size_bytes: u64,
    records_removed: usize,
    markers_removed: usize,
}

impl CleanedWriter<'_> {
    fn apply(&mut self, position: u64, bytes: &[u8], decision: Decision) -> Result<(), Stop> {
        self.records_removed += decision.records_removed;
        self.markers_removed += decision.markers_removed;
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
    fn start(&mut self, prefix_bytes: u64) -> Result<(), Stop> {
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

    fn write(&mut self, bytes: &[u8]) -> Result<(), Stop> {
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
            markers_removed: self.markers_removed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};

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
        append_records(log, &records, compression, 0);
    }

    /// Append `records` as one batch encoded with `compression`, at time `now_ms`.
    fn append_records(
        log: &mut PartitionLog,
        records: &[Record],
        compression: Compression,
        now_ms: i64,
    ) -> crate::log::AppendInfo {
        let mut buffer = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buffer, records, &options).unwrap();
        let (records, headers) = validated(buffer);
        log.append(&records, &headers, 3, now_ms).unwrap()
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
    /// record of each key among them and every record without a key; everything above
    /// (the active segment is never read into the map: Kafka's first uncleanable offset).
    fn expected(before: &[Read], active_base: i64) -> Vec<Read> {
        let mut latest = HashMap::new();
        for (offset, key, ..) in before.iter().filter(|r| r.0 < active_base) {
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

    #[test]
    fn a_batch_whose_headers_the_encoder_cannot_hold_is_kept_whole() {
        use crate::log::test_support::{batch_around, record_with_headers};
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        // Repeated header names are legal in Kafka; the encoder's records would merge them.
        let repeated: &[(&[u8], &[u8])] = &[(b"h", b"1"), (b"h", b"2")];
        let mut body = record_with_headers(0, 0, Some(b"k0"), b"superseded", repeated);
        body.extend(record_with_headers(
            1,
            1,
            Some(b"unique"),
            b"kept",
            repeated,
        ));
        let (records, headers) = validated(batch_around(&body, 0, 2, 0));
        let original = records.clone();
        log.append(&records, &headers, 3, 0).unwrap();
        write_keys(&mut log, 60, 1_000, Compression::None); // supersedes k0, rolls
        assert!(log.segments.len() > 3);
        log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
        let read = log.read(0, usize::MAX, i64::MAX, true).unwrap();
        let first = BatchHeader::parse(&read.records).unwrap();
        assert_eq!((first.base_offset, first.record_count), (0, 2));
        // Byte for byte what was stored, the stamped base offset and epoch aside.
        let stored = &read.records[..first.total_bytes()];
        assert_eq!(&stored[21..], &original[21..]);
    }

    /// Appends one transactional batch of `key`=`value` from `producer_id`.
    fn append_transactional(log: &mut PartitionLog, producer_id: i64, key: &str, value: &str) {
        let mut only = record(0, Some(key.into()), Some(value.into()), 500);
        only.transactional = true;
        only.producer_id = producer_id;
        only.producer_epoch = 0;
        only.sequence = 0;
        let mut buffer = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buffer, &[only], &options).unwrap();
        let (records, headers) = validated(buffer);
        assert!(headers[0].is_transactional());
        log.append(&records, &headers, 3, 0).unwrap();
    }

    /// k=committed at 0, an aborted transaction's k=aborted at 1 (marker at 2), a committed
    /// transaction's t at 3 (marker at 4), then plain records that roll segments.
    fn transactions_then_plain(log: &mut PartitionLog) -> crate::log::txn_index::AbortedTxn {
        use crate::log::txn_index::AbortedTxn;
        use crate::txn::marker::encode_marker_batch;
        use crate::txn::producer_state::TxnMarker;
        let committed = (Some("k".into()), Some("committed".into()));
        append(log, &[committed], 100, Compression::None);
        append_transactional(log, 9, "k", "aborted");
        for (producer_id, committed) in [(9, false), (10, true)] {
            if committed {
                append_transactional(log, 10, "t", "in-a-transaction");
            }
            let marker = TxnMarker {
                committed,
                coordinator_epoch: 0,
            };
            let batch = encode_marker_batch(producer_id, 0, marker, 600);
            let (records, headers) = validated(BytesMut::from(&batch[..]));
            log.append(&records, &headers, 3, 0).unwrap();
        }
        let entry = AbortedTxn {
            producer_id: 9,
            first_offset: 1,
            last_offset: 2,
            last_stable_offset: 3,
        };
        log.append_aborted(entry).unwrap();
        for index in 0..40 {
            let key = Some(format!("x{}", index % 4));
            let value = Some(format!("{index}"));
            append(log, &[(key, value)], 1_000 + index, Compression::None);
        }
        assert!(
            log.active().base_offset() > 5,
            "the transactions are in closed segments"
        );
        entry
    }

    #[test]
    fn aborted_records_are_dropped_never_replace_committed_ones_and_markers_stay_that_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        let entry = transactions_then_plain(&mut log);
        let stats = log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
        assert!(stats.records_removed > 0, "{stats:?}");
        let read = read_from(&log, 0);
        let value_at = |offset: i64| read.iter().find(|r| r.0 == offset).map(|r| r.2.clone());
        assert_eq!(
            value_at(0),
            Some(Some(Bytes::from("committed"))),
            "not hidden"
        );
        assert_eq!(value_at(1), None, "the aborted record is dropped");
        assert_eq!(value_at(3), Some(Some(Bytes::from("in-a-transaction"))));
        for marker in [2, 4] {
            let raw = log
                .read(marker, usize::MAX, marker + 1, true)
                .unwrap()
                .records;
            let header = BatchHeader::parse(&raw).unwrap();
            assert!(
                header.is_control() && header.base_offset == marker,
                "markers stay"
            );
        }
        let aborted = log.aborted_transactions(0, i64::MAX).unwrap();
        assert_eq!(aborted, vec![entry], "the index survives the swap");
        drop(log);
        assert_eq!(
            open(dir.path()).aborted_transactions(0, i64::MAX).unwrap(),
            vec![entry]
        );
    }

    /// Appends one transactional batch of `keys` (values `<key>@<offset>`) from
    /// `producer_id` at `epoch` and `sequence`; returns its offsets.
    fn append_txn(
        log: &mut PartitionLog,
        producer: (i64, i16),
        sequence: i32,
        keys: &[&str],
    ) -> (i64, i64) {
        let first = log.log_end_offset();
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let offset = first + index as i64;
                let value = Some(format!("{key}@{offset}"));
                let mut record = record(index as i64, Some(key.to_string()), value, 500);
                record.transactional = true;
                record.producer_id = producer.0;
                record.producer_epoch = producer.1;
                record.sequence = sequence + index as i32;
                record
            })
            .collect();
        append_records(log, &records, Compression::None, 0);
        (first, log.log_end_offset() - 1)
    }

    /// Appends a commit or abort marker (indexing an abort from `first_offset`); returns
    /// its offset.
    fn append_marker(
        log: &mut PartitionLog,
        producer: (i64, i16),
        committed: bool,
        first_offset: i64,
    ) -> i64 {
        use crate::txn::marker::encode_marker_batch;
        use crate::txn::producer_state::TxnMarker;
        let marker = TxnMarker {
            committed,
            coordinator_epoch: 0,
        };
        let batch = encode_marker_batch(producer.0, producer.1, marker, 600);
        let (records, headers) = validated(BytesMut::from(&batch[..]));
        let offset = log.log_end_offset();
        log.append(&records, &headers, 3, 0).unwrap();
        if !committed {
            log.append_aborted(AbortedTxn {
                producer_id: producer.0,
                first_offset,
                last_offset: offset,
                last_stable_offset: offset + 1,
            })
            .unwrap();
        }
        offset
    }

    /// Plain records over keys x0..x3 until at least one more segment closed.
    fn roll_with_plain(log: &mut PartitionLog) {
        let closed = log.active().base_offset();
        for index in 0..40 {
            let entry = (Some(format!("x{}", index % 4)), Some(format!("{index}")));
            append(log, &[entry], 1_000 + index, Compression::None);
        }
        assert!(log.active().base_offset() > closed);
    }

    /// Every batch header in the log.
    fn headers(log: &PartitionLog) -> Vec<BatchHeader> {
        let mut headers = Vec::new();
        log.scan_batch_headers(0, &mut |header| headers.push(*header))
            .unwrap();
        headers
    }

    fn markers(log: &PartitionLog) -> Vec<i64> {
        let headers = headers(log).into_iter().filter(BatchHeader::is_control);
        headers.map(|header| header.base_offset).collect()
    }

    /// One pass with producer tails, as the partition runs it.
    fn compact_with(log: &mut PartitionLog, now_ms: i64, tails: &ProducerTails) -> CleanStats {
        let end = log.log_end_offset();
        let Some(snapshot) = log
            .clean_snapshot_below(now_ms, end, tails.clone(), i64::MAX)
            .unwrap()
        else {
            return CleanStats::default();
        };
        let outcome = clean(snapshot, DEDUPE_BUFFER_BYTES_DEFAULT, &|| false);
        log.install_clean(outcome.unwrap().unwrap(), now_ms)
            .unwrap()
    }

    /// Past the horizon of segments written at times near 1_000 (`delete_retention_ms`
    /// 10_000); 2_000 is within it.
    const PAST_HORIZON_MS: i64 = 100_000;
    /// The tests' `delete_retention_ms`: a marker stamped at `t` goes at `t + RETENTION_MS`.
    const RETENTION_MS: i64 = 10_000;

    /// The marker at `offset` and its delete horizon, if stamped.
    fn marker_horizon(log: &PartitionLog, offset: i64) -> Option<i64> {
        let found = headers(log);
        let header = found
            .iter()
            .find(|h| h.base_offset == offset)
            .expect("marker");
        assert!(header.is_control());
        delete_horizon::delete_horizon_ms(header)
    }

    /// A reload from the oldest kept producer snapshot replays from its offset: it must
    /// meet the marker of a transaction the snapshot holds open, so the marker stays even
    /// with no data left and past the horizon, and goes once no kept snapshot is below it.
    #[test]
    fn a_marker_a_kept_producer_snapshot_needs_stays() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        let (first, _) = append_txn(&mut log, (9, 0), 0, &["k", "a"]);
        let marker = append_marker(&mut log, (9, 0), false, first);
        roll_with_plain(&mut log);
        let pass = |log: &mut PartitionLog, oldest_snapshot: i64, now_ms: i64| {
            let end = log.log_end_offset();
            let tails = ProducerTails::new();
            let snapshot = log
                .clean_snapshot_below(now_ms, end, tails, oldest_snapshot)
                .unwrap()
                .unwrap();
            let outcome = clean(snapshot, DEDUPE_BUFFER_BYTES_DEFAULT, &|| false);
            log.install_clean(outcome.unwrap().unwrap(), now_ms)
                .unwrap()
        };
        // Pass 1 drops the data (the snapshot between data and marker holds it open).
        pass(&mut log, marker, PAST_HORIZON_MS);
        assert!(!read_from(&log, 0).iter().any(|r| r.0 == first));
        roll_with_plain(&mut log);
        let stats = pass(&mut log, marker, PAST_HORIZON_MS + RETENTION_MS);
        assert_eq!(stats.markers_removed, 0);
        assert_eq!(
            markers(&log),
            vec![marker],
            "the snapshot at the marker needs it"
        );
        assert_eq!(marker_horizon(&log, marker), None, "not even stamped");
        // No longer needed: stamped first, removed past its horizon.
        roll_with_plain(&mut log);
        pass(&mut log, marker + 1, PAST_HORIZON_MS);
        assert_eq!(markers(&log), vec![marker]);
        let horizon = PAST_HORIZON_MS + RETENTION_MS;
        assert_eq!(marker_horizon(&log, marker), Some(horizon));
        roll_with_plain(&mut log);
        let stats = pass(&mut log, marker + 1, horizon);
        assert_eq!(stats.markers_removed, 1);
        assert!(markers(&log).is_empty());
    }

    #[test]
    fn an_aborted_transactions_marker_and_index_entry_go_a_pass_after_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        append(
            &mut log,
            &[(Some("k".into()), Some("kept".into()))],
            100,
            Compression::None,
        );
        let (first, _) = append_txn(&mut log, (9, 0), 0, &["k", "a"]);
        let marker = append_marker(&mut log, (9, 0), false, first);
        roll_with_plain(&mut log);
        let entry = log.aborted_transactions(0, i64::MAX).unwrap();
        assert_eq!(entry.len(), 1);
        // Pass 1 drops the data; the marker and its entry stay, even past the horizon.
        let stats = log
            .compact(PAST_HORIZON_MS, DEDUPE_BUFFER_BYTES_DEFAULT)
            .unwrap();
        assert_eq!(stats.markers_removed, 0);
        let read = read_from(&log, 0);
        assert!(
            !read.iter().any(|r| r.0 == first || r.0 == first + 1),
            "data gone"
        );
        assert!(markers(&log).contains(&marker));
        assert_eq!(log.aborted_transactions(0, i64::MAX).unwrap(), entry);
        // The next pass finds it without data: it stays, stamped with its own delete
        // horizon (KIP-534), however old its segment; its index entry goes.
        roll_with_plain(&mut log);
        log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
        assert!(markers(&log).contains(&marker));
        assert_eq!(marker_horizon(&log, marker), Some(2_000 + RETENTION_MS));
        assert!(log.aborted_transactions(0, i64::MAX).unwrap().is_empty());
        // Not before that horizon, not even in a segment long past the tombstones' one.
        roll_with_plain(&mut log);
        log.compact(2_000 + RETENTION_MS - 1, DEDUPE_BUFFER_BYTES_DEFAULT)
            .unwrap();
        assert!(markers(&log).contains(&marker));
        // At it, the marker goes.
        roll_with_plain(&mut log);
        let stats = log
            .compact(2_000 + RETENTION_MS, DEDUPE_BUFFER_BYTES_DEFAULT)
            .unwrap();
        assert_eq!(stats.markers_removed, 1);
        assert!(markers(&log).is_empty());
        assert!(log.aborted_transactions(0, i64::MAX).unwrap().is_empty());
        let value_at = |log: &PartitionLog, offset: i64| {
            let read = read_from(log, 0);
            read.into_iter().find(|r| r.0 == offset).map(|r| r.2)
        };
        assert_eq!(value_at(&log, 0), Some(Some(Bytes::from("kept"))));
        drop(log);
        let log = open(dir.path());
        assert!(markers(&log).is_empty());
        assert!(log.aborted_transactions(0, i64::MAX).unwrap().is_empty());
        assert_eq!(value_at(&log, 0), Some(Some(Bytes::from("kept"))));
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_committed_transactions_marker_goes_after_its_records_and_the_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        append_txn(&mut log, (10, 0), 0, &["x0", "x1"]);
        let marker = append_marker(&mut log, (10, 0), true, 0);
        roll_with_plain(&mut log); // supersedes x0 and x1
        log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
        assert!(
            !read_from(&log, 0).iter().any(|r| r.0 < marker),
            "superseded"
        );
        assert_eq!(markers(&log), vec![marker]);
        roll_with_plain(&mut log);
        log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
        assert_eq!(markers(&log), vec![marker], "within the horizon");
        roll_with_plain(&mut log);
        let stats = log
            .compact(PAST_HORIZON_MS, DEDUPE_BUFFER_BYTES_DEFAULT)
            .unwrap();
        assert_eq!(stats.markers_removed, 1);
        assert!(markers(&log).is_empty());
    }

    #[test]
    fn a_transaction_with_surviving_records_keeps_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        append_txn(&mut log, (10, 0), 0, &["unique", "x0"]);
        let committed = append_marker(&mut log, (10, 0), true, 0);
        let (first, _) = append_txn(&mut log, (11, 0), 0, &["x1"]);
        let aborted = append_marker(&mut log, (11, 0), false, first);
        roll_with_plain(&mut log);
        // Data, then the stamp, then the marker past its horizon.
        for round in 0..3 {
            log.compact(
                PAST_HORIZON_MS + round * RETENTION_MS,
                DEDUPE_BUFFER_BYTES_DEFAULT,
            )
            .unwrap();
            roll_with_plain(&mut log);
        }
        // The commit keeps "unique"; the abort's data went, then its marker.
        assert_eq!(markers(&log), vec![committed]);
        assert!(!markers(&log).contains(&aborted));
        let read = read_from(&log, 0);
        assert_eq!(read[0].1, Some(Bytes::from("unique")));
        assert!(log.aborted_transactions(0, i64::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_producers_last_batch_stays_as_its_header_with_its_sequence_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        let producer = (12, 4);
        append_txn(&mut log, producer, 0, &["x0", "x1"]);
        let commit = append_marker(&mut log, producer, true, 0);
        // Its last batch: aborted, and x2/x3 are superseded anyway.
        let (first, last) = append_txn(&mut log, producer, 2, &["x2", "x3", "x0"]);
        let abort = append_marker(&mut log, producer, false, first);
        // A keyed batch whose first record is superseded and last is not.
        append_txn(&mut log, (13, 1), 7, &["x1", "only-13"]);
        let commit_13 = append_marker(&mut log, (13, 1), true, abort + 1);
        roll_with_plain(&mut log);
        let tails: ProducerTails = [
            (
                producer.0,
                ProducerTail {
                    last_data_offset: Some(last),
                    epoch: producer.1,
                },
            ),
            (
                13,
                ProducerTail {
                    last_data_offset: Some(commit_13 - 1),
                    epoch: 1,
                },
            ),
        ]
        .into();
        for round in 0..3 {
            compact_with(&mut log, PAST_HORIZON_MS + round * RETENTION_MS, &tails);
            roll_with_plain(&mut log);
            let found = headers(&log);
            let kept = found.iter().find(|h| h.base_offset == first).expect("kept");
            assert_eq!(kept.record_count, 0, "round {round}: emptied");
            assert_eq!(kept.total_bytes(), BATCH_HEADER_BYTES);
            assert_eq!(kept.last_offset(), last);
            assert_eq!((kept.base_sequence, kept.last_sequence()), (2, 4));
            assert_eq!(kept.producer_epoch, producer.1);
            assert!(kept.is_transactional());
            // The abort has a batch left: its marker and entry stay.
            assert!(markers(&log).contains(&abort));
            let entries = log.aborted_transactions(0, i64::MAX).unwrap();
            assert_eq!(
                entries.iter().map(|e| e.last_offset).collect::<Vec<_>>(),
                [abort]
            );
            // The rewritten batch of producer 13 keeps its offsets and sequences, as
            // Kafka's does: x1 went, the batch still starts where x1 was.
            let rewritten = found
                .iter()
                .find(|h| h.producer_id == 13 && !h.is_control());
            let rewritten = rewritten.unwrap();
            assert_eq!(rewritten.record_count, 1);
            assert_eq!(rewritten.base_offset, commit_13 - 2);
            assert_eq!(rewritten.last_offset(), commit_13 - 1);
            assert_eq!((rewritten.base_sequence, rewritten.last_sequence()), (7, 8));
            assert!(markers(&log).contains(&commit_13));
        }
        assert!(
            !markers(&log).contains(&commit),
            "its batch went in round 0"
        );
        // Readers step over the empty batch.
        let read = read_from(&log, first);
        assert!(read.iter().all(|r| r.0 > last));
        // Once no longer the producer's last, the empty batch goes, then the marker (stamped
        // one pass, removed past its horizon).
        let later = PAST_HORIZON_MS + 3 * RETENTION_MS;
        compact_with(&mut log, later, &ProducerTails::new());
        assert!(!headers(&log).iter().any(|h| h.base_offset == first));
        roll_with_plain(&mut log);
        compact_with(&mut log, later, &ProducerTails::new());
        assert_eq!(marker_horizon(&log, abort), Some(later + RETENTION_MS));
        roll_with_plain(&mut log);
        compact_with(&mut log, later + RETENTION_MS, &ProducerTails::new());
        assert!(!markers(&log).contains(&abort));
        assert!(log.aborted_transactions(0, i64::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_producer_without_data_keeps_its_markers_at_its_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        append_txn(&mut log, (14, 2), 0, &["x0"]);
        let old_epoch = append_marker(&mut log, (14, 2), true, 0);
        let bumped = append_marker(&mut log, (14, 3), false, old_epoch + 1);
        roll_with_plain(&mut log);
        let tail = ProducerTail {
            last_data_offset: None,
            epoch: 3,
        };
        let tails: ProducerTails = [(14, tail)].into();
        for round in 0..3 {
            compact_with(&mut log, PAST_HORIZON_MS + round * RETENTION_MS, &tails);
            roll_with_plain(&mut log);
        }
        assert_eq!(markers(&log), vec![bumped]);
    }

    #[test]
    fn a_crash_at_each_swap_step_with_a_rewritten_txn_index_recovers() {
        // The pass that finds the marker without data drops its index entry and stamps it.
        // Steps: 0 the new txnindex in place only; 1 and the logs as `.swap`; 2 and the
        // first segment's old log `.deleted`. Each must open to a log whose markers and
        // index agree: never an entry without its marker.
        for step in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let mut log = open(dir.path());
            let (first, _) = append_txn(&mut log, (9, 0), 0, &["x0", "x1"]);
            let marker = append_marker(&mut log, (9, 0), false, first);
            roll_with_plain(&mut log);
            log.compact(PAST_HORIZON_MS, DEDUPE_BUFFER_BYTES_DEFAULT)
                .unwrap();
            roll_with_plain(&mut log);
            let want = {
                let twin = tempfile::tempdir().unwrap();
                copy_dir(dir.path(), twin.path());
                let mut twin_log = open(twin.path());
                twin_log
                    .compact(PAST_HORIZON_MS, DEDUPE_BUFFER_BYTES_DEFAULT)
                    .unwrap();
                assert_eq!(markers(&twin_log), vec![marker]);
                assert!(
                    twin_log
                        .aborted_transactions(0, i64::MAX)
                        .unwrap()
                        .is_empty()
                );
                // A pass runs on new dirty data: past the stamp, it removes the marker.
                roll_with_plain(&mut twin_log);
                twin_log
                    .compact(PAST_HORIZON_MS + RETENTION_MS, DEDUPE_BUFFER_BYTES_DEFAULT)
                    .unwrap();
                assert!(markers(&twin_log).is_empty());
                read_from(&twin_log, 0)
            };
            let snapshot = log.clean_snapshot(PAST_HORIZON_MS).unwrap().unwrap();
            let outcome = clean(snapshot, DEDUPE_BUFFER_BYTES_DEFAULT, &|| false);
            let outcome = outcome.unwrap().unwrap();
            let holding = outcome
                .segments
                .iter()
                .find(|c| c.txn_index_changed)
                .unwrap();
            let txn_index = segment_file(dir.path(), holding.base_offset, TXN_INDEX_EXTENSION);
            fs::rename(&holding.files.txn_index, &txn_index).unwrap();
            if step >= 1 {
                for cleaned in &outcome.segments {
                    let paths = SegmentPaths::of(dir.path(), cleaned.base_offset);
                    fs::rename(&cleaned.files.log, &paths.swap).unwrap();
                }
            }
            if step >= 2 {
                let first = SegmentPaths::of(dir.path(), outcome.segments[0].base_offset);
                fs::rename(&first.log, &first.deleted).unwrap();
                fs::remove_file(&first.offset_index).unwrap();
                fs::remove_file(&first.time_index).unwrap();
            }
            std::mem::forget(outcome);
            drop(log);
            let mut log = open(dir.path());
            assert!(
                log.aborted_transactions(0, i64::MAX).unwrap().is_empty(),
                "step {step}"
            );
            assert_eq!(markers(&log), vec![marker], "step {step}");
            let stamped = marker_horizon(&log, marker).is_some();
            assert_eq!(
                stamped,
                step >= 1,
                "step {step}: the swap is done from step 1"
            );
            // Passes after the crash finish the job: stamp (again at step 0), then remove.
            log.compact(PAST_HORIZON_MS, DEDUPE_BUFFER_BYTES_DEFAULT)
                .unwrap();
            roll_with_plain(&mut log);
            log.compact(PAST_HORIZON_MS + RETENTION_MS, DEDUPE_BUFFER_BYTES_DEFAULT)
                .unwrap();
            assert!(markers(&log).is_empty(), "step {step}");
            assert_eq!(read_from(&log, 0), want, "step {step}");
            assert!(
                leftovers(dir.path()).is_empty(),
                "{:?}",
                leftovers(dir.path())
            );
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    #[test]
    fn an_abort_whose_marker_is_beyond_the_cleaned_segments_still_drops_its_data() {
        use crate::log::txn_index::AbortedTxn;
        use crate::txn::marker::encode_marker_batch;
        use crate::txn::producer_state::TxnMarker;
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        let committed = (Some("k".into()), Some("committed".into()));
        append(&mut log, &[committed], 100, Compression::None);
        append_transactional(&mut log, 9, "k", "aborted");
        // The transaction spans segment rolls: its abort marker lands far later.
        for index in 0..40 {
            let key = Some(format!("x{}", index % 4));
            append(
                &mut log,
                &[(key, Some(format!("{index}")))],
                1_000 + index,
                Compression::None,
            );
        }
        let marker = TxnMarker {
            committed: false,
            coordinator_epoch: 0,
        };
        let batch = encode_marker_batch(9, 0, marker, 600);
        let (records, headers) = validated(BytesMut::from(&batch[..]));
        let marker_offset = log.log_end_offset();
        log.append(&records, &headers, 3, 0).unwrap();
        log.append_aborted(AbortedTxn {
            producer_id: 9,
            first_offset: 1,
            last_offset: marker_offset,
            last_stable_offset: marker_offset + 1,
        })
        .unwrap();
        log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
        let read = read_from(&log, 0);
        let value_at = |offset: i64| read.iter().find(|r| r.0 == offset).map(|r| r.2.clone());
        assert_eq!(
            value_at(0),
            Some(Some(Bytes::from("committed"))),
            "committed k lost"
        );
        assert_eq!(value_at(1), None, "the aborted record is dropped");
    }

    #[test]
    fn nothing_at_or_above_the_last_stable_offset_is_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        transactions_then_plain(&mut log);
        // An open transaction from offset 1: the segment holding it is not cleaned.
        assert!(
            log.clean_snapshot_below(2_000, 1, ProducerTails::new(), i64::MAX)
                .unwrap()
                .is_none()
        );
        let before = read_from(&log, 0);
        let stable_end = log.segments[2].base_offset();
        let snapshot = log
            .clean_snapshot_below(2_000, stable_end + 1, ProducerTails::new(), i64::MAX)
            .unwrap()
            .unwrap();
        let outcome = clean(snapshot, DEDUPE_BUFFER_BYTES_DEFAULT, &|| false).unwrap();
        log.install_clean(outcome.unwrap(), 2_000).unwrap();
        let after = read_from(&log, 0);
        let from = |read: &[Read]| -> Vec<Read> {
            read.iter().filter(|r| r.0 >= stable_end).cloned().collect()
        };
        assert_eq!(
            from(&after),
            from(&before),
            "untouched from the bound's segment on"
        );
        assert!(after.len() < before.len(), "cleaned below it");
    }

    fn compacts_to_the_latest_values(compression: Compression) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 60, 1_000, compression);
        let before = read_from(&log, 0);
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let want = expected(&before, log.active().base_offset());
        assert!(log.segments.len() > 3);
        let stats = log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
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
        assert!(
            log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT)
                .unwrap()
                .records_removed
                > 0
        );
        let after = read_from(&log, 0);
        assert_eq!(
            log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap(),
            CleanStats::default()
        );
        assert_eq!(read_from(&log, 0), after);
        // A new closed segment: the new values supersede older ones everywhere.
        write_keys(&mut log, 20, 5_000, Compression::None);
        let before = read_from(&log, 0);
        let want = expected(&before, log.active().base_offset());
        assert!(
            log.compact(6_000, DEDUPE_BUFFER_BYTES_DEFAULT)
                .unwrap()
                .records_removed
                > 0
        );
        assert_compacted(&log, &want);
    }

    /// One batch of keyless records bigger than a segment: it rolls the log, so every
    /// keyed record before it is in a closed segment.
    fn roll_with_keyless(log: &mut PartitionLog, time_ms: i64) {
        let offset = log.log_end_offset();
        let big = (None, Some("x".repeat(700)));
        append(log, &[big], time_ms, Compression::None);
        assert_eq!(
            log.active().base_offset(),
            offset,
            "the keyless batch rolled"
        );
    }

    /// (offset, key, value) of a keyed record.
    type Keyed = (i64, String, String);

    /// Every keyed record, and (base offset, last offset delta, record count) of the batch
    /// at offset 0.
    fn keyed_and_first_batch(log: &PartitionLog) -> (Vec<Keyed>, (i64, i32, i32)) {
        let text = |b: Option<Bytes>| String::from_utf8(b.unwrap().to_vec()).unwrap();
        let keyed = read_from(log, 0).into_iter().filter(|r| r.1.is_some());
        let keyed = keyed.map(|(offset, key, value, ..)| (offset, text(key), text(value)));
        let first = headers(log)[0];
        let first = (
            first.base_offset,
            first.last_offset_delta,
            first.record_count,
        );
        (keyed.collect(), first)
    }

    #[test]
    fn a_batch_left_with_gaps_is_cleaned_again_and_keeps_its_offsets() {
        for compression in [Compression::None, Compression::Zstd] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = open(dir.path());
            let entry = |key: &str, value: &str| (Some(key.to_string()), Some(value.to_string()));
            let first = ["a", "b", "c", "d"].map(|key| entry(key, &format!("{key}1")));
            append(&mut log, &first, 1_000, compression);
            append(
                &mut log,
                &[entry("b", "b2"), entry("d", "d2")],
                1_010,
                compression,
            );
            roll_with_keyless(&mut log, 1_020);
            assert!(
                log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT)
                    .unwrap()
                    .records_removed
                    == 2
            );
            let owned = |rows: &[(i64, &str, &str)]| -> Vec<(i64, String, String)> {
                rows.iter()
                    .map(|(o, k, v)| (*o, k.to_string(), v.to_string()))
                    .collect()
            };
            // Offsets 0 and 2 stay at their offsets; the batch still ends at offset 3.
            let once = owned(&[
                (0, "a", "a1"),
                (2, "c", "c1"),
                (4, "b", "b2"),
                (5, "d", "d2"),
            ]);
            assert_eq!(
                keyed_and_first_batch(&log),
                (once, (0, 3, 2)),
                "{compression:?}"
            );

            // c is written again: the second pass must rewrite the gapped batch too.
            append(&mut log, &[entry("c", "c3")], 1_030, compression);
            roll_with_keyless(&mut log, 1_040);
            let stats = log.compact(3_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
            assert_eq!(stats.records_removed, 1, "{compression:?}");
            let twice = owned(&[
                (0, "a", "a1"),
                (4, "b", "b2"),
                (5, "d", "d2"),
                (7, "c", "c3"),
            ]);
            assert_eq!(
                keyed_and_first_batch(&log),
                (twice, (0, 3, 1)),
                "{compression:?}"
            );
            // The keyless batches are plain; the rewritten one keeps its own codec.
            assert_eq!(
                batch_codecs(&log)[0],
                compression as i16,
                "the codec is kept"
            );
        }
    }

    /// Kafka's `buildRetainedRecordsInto`: a batch that loses its first records keeps its
    /// base offset, base sequence and the rest of its header; each record keeps its offset
    /// and sequence, and a fetch from inside the gap gets the batch.
    #[test]
    fn a_batch_that_loses_its_first_records_keeps_its_base_offset_and_sequence() {
        for compression in [Compression::None, Compression::Gzip, Compression::Lz4] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = open(dir.path());
            let records: Vec<Record> = (0..4)
                .zip(["a", "b", "c", "d"])
                .map(|(index, key)| {
                    let value = Some(format!("{key}1"));
                    let mut record = record(index, Some(key.into()), value, 1_000 + index);
                    (record.producer_id, record.producer_epoch) = (7, 2);
                    record.sequence = 30 + index as i32;
                    record
                })
                .collect();
            append_records(&mut log, &records, compression, 0);
            let original = headers(&log)[0];
            let entry = |key: &str| (Some(key.to_string()), Some(format!("{key}2")));
            append(&mut log, &[entry("a"), entry("b")], 1_010, compression);
            roll_with_keyless(&mut log, 1_020);
            let stats = log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
            assert_eq!(stats.records_removed, 2, "{compression:?}");
            let rewritten = headers(&log)[0];
            assert_eq!(rewritten.base_offset, 0, "{compression:?}");
            assert_eq!(rewritten.last_offset(), 3);
            assert_eq!(
                (rewritten.base_sequence, rewritten.last_sequence()),
                (30, 33)
            );
            assert_eq!((rewritten.producer_id, rewritten.producer_epoch), (7, 2));
            assert_eq!(
                rewritten.partition_leader_epoch,
                original.partition_leader_epoch
            );
            assert_eq!(rewritten.attributes, original.attributes);
            assert_eq!(rewritten.record_count, 2);
            assert_eq!(
                (rewritten.base_timestamp, rewritten.max_timestamp),
                (1_002, 1_003),
                "the first survivor's time and the largest"
            );
            for from in 0..=2 {
                let read = log.read(from, usize::MAX, i64::MAX, true).unwrap();
                let mut bytes = read.records;
                let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
                let found: Vec<(i64, i32, Option<Bytes>)> = set
                    .records
                    .into_iter()
                    .map(|r| (r.offset, r.sequence, r.value))
                    .collect();
                let expected = vec![
                    (2, 32, Some(Bytes::from("c1"))),
                    (3, 33, Some(Bytes::from("d1"))),
                ];
                assert_eq!(found, expected, "{compression:?} from {from}");
            }
        }
    }

    /// A pass reads each segment's aborted-transaction index once, and knows the same
    /// aborted transactions as the read path's `aborted_transactions`.
    #[test]
    fn a_pass_reads_each_aborted_transaction_index_once() {
        use crate::log::txn_index::FILE_READS;
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        for round in 0..3 {
            for producer in [20 + round, 30 + round] {
                let (first, _) = append_txn(&mut log, (producer, 0), 0, &["x0", "y"]);
                append_marker(&mut log, (producer, 0), false, first);
            }
            roll_with_plain(&mut log);
        }
        let closed_end = log.active().base_offset();
        let expected = log.aborted_transactions(0, closed_end).unwrap();
        assert_eq!(expected.len(), 6);
        let indexes = log
            .segments
            .iter()
            .filter(|s| s.aborted_count() > 0)
            .count();
        assert!(indexes >= 2, "aborts in several segments");
        FILE_READS.with(|reads| reads.set(0));
        let snapshot = log.clean_snapshot(2_000).unwrap().unwrap();
        let reads = FILE_READS.with(|reads| reads.get());
        assert_eq!(reads, indexes as u64, "one read of each index file");
        assert_eq!(snapshot.closed_end, closed_end);
        let known = decided_aborts(&snapshot.segments, snapshot.closed_end);
        assert_eq!(known, expected);
        // Below a lower bound, as the read path answers it too.
        let bound = expected[2].last_offset;
        let below = decided_aborts(&snapshot.segments, bound);
        assert_eq!(below, log.aborted_transactions(0, bound).unwrap());
    }

    #[test]
    fn reopen_after_compaction_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 60, 1_000, Compression::Gzip);
        log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
        let (after, end) = (read_from(&log, 0), log.log_end_offset());
        drop(log);
        let mut log = open(dir.path());
        assert_eq!(log.log_end_offset(), end);
        assert_compacted(&log, &after);
        // The in-memory mark is gone: the pass runs again but has nothing to remove.
        let stats = log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
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
        log.compact(5_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
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
        log.compact(13_001, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
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
        assert_eq!(
            log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap(),
            CleanStats::default()
        );
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
        log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
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
        twin.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
        assert_eq!(read_from(&twin, 0), want);
    }

    /// `batches` batches of two records, keys cycling over `keys` keys, values naming
    /// their offset; then one keyless batch larger than a segment, so the active segment
    /// holds no key and every closed record is judged against the whole log.
    fn write_many_keys(log: &mut PartitionLog, batches: usize, keys: usize) {
        for _ in 0..batches {
            let first = log.log_end_offset();
            let entries: Vec<_> = (first..first + 2)
                .map(|offset| {
                    let key = (offset % 3 != 2).then(|| format!("k{}", offset as usize % keys));
                    (key, Some(format!("v{offset}")))
                })
                .collect();
            append(log, &entries, 1_000 + first * 10, Compression::None);
        }
        let offset = log.log_end_offset();
        let big = (None, Some(format!("v{offset}{}", "x".repeat(700))));
        append(log, &[big], 1_000 + offset * 10, Compression::None);
        assert_eq!(
            log.active().base_offset(),
            offset,
            "the keyless batch rolled"
        );
    }

    /// Offset map buffer for `keys` keys (the map fills 90% of its slots).
    fn buffer_for_keys(keys: u64) -> u64 {
        (keys * 10).div_ceil(9) * crate::log::offset_map::SLOT_BYTES
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let names = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name());
        let names = names.map(|name| name.to_string_lossy().into_owned());
        names
            .filter(|name| name.contains(".log.") || name.contains("index."))
            .collect()
    }

    /// Compact with a map of `keys` keys until a pass has nothing left; returns the passes.
    fn compact_in_rounds(log: &mut PartitionLog, keys: u64) -> usize {
        for round in 0..200 {
            if log.clean_snapshot(2_000).unwrap().is_none() {
                return round;
            }
            log.compact(2_000, buffer_for_keys(keys)).unwrap();
        }
        panic!("compaction did not converge in 200 passes");
    }

    #[test]
    fn a_small_dedupe_buffer_compacts_in_rounds_to_the_same_result() {
        let big = tempfile::tempdir().unwrap();
        let mut once = open(big.path());
        write_many_keys(&mut once, 80, 40);
        let before = read_from(&once, 0);
        let want = expected(&before, once.active().base_offset());
        let stats = once.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
        assert!(stats.records_removed > 0);
        assert_eq!(read_from(&once, 0), want);
        // 15 keys: whole segments per pass (a segment holds at most 12 keyed records).
        // 5 keys: a segment alone overflows the map, so passes stop inside segments.
        for keys in [15, 5] {
            let small = tempfile::tempdir().unwrap();
            let mut rounds = open(small.path());
            write_many_keys(&mut rounds, 80, 40);
            assert_eq!(read_from(&rounds, 0), before);
            let passes = compact_in_rounds(&mut rounds, keys);
            assert!(passes > 3, "{keys} keys: {passes} passes");
            assert_compacted(&rounds, &want);
            assert!(leftovers(small.path()).is_empty());
            // Reopened (mapped end forgotten): one more full pass changes nothing.
            drop(rounds);
            let mut reopened = open(small.path());
            let stats = reopened
                .compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT)
                .unwrap();
            assert_eq!(stats.records_removed, 0);
            assert_eq!(read_from(&reopened, 0), want);
        }
    }

    #[test]
    fn a_segment_deleted_by_retention_during_a_clean_is_not_resurrected() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 60, 1_000, Compression::None);
        let before = read_from(&log, 0);
        let want = expected(&before, log.active().base_offset());
        let bases: Vec<i64> = log.segments.iter().map(Segment::base_offset).collect();
        let snapshot = log.clean_snapshot(2_000).unwrap().unwrap();
        let outcome = clean(snapshot, DEDUPE_BUFFER_BYTES_DEFAULT, &|| false)
            .unwrap()
            .unwrap();
        assert!(outcome.segments.iter().any(|s| s.base_offset == bases[0]));
        // Meanwhile retention deletes the two oldest segments.
        let sizes: u64 = log.segments.iter().map(Segment::size_bytes).sum();
        let oldest: u64 = log.segments[..2].iter().map(Segment::size_bytes).sum();
        log.set_config(LogConfig {
            retention_bytes: (sizes - oldest) as i64,
            ..config()
        });
        assert_eq!(log.enforce_retention(2_000).unwrap(), 2);
        let stats = log.install_clean(outcome, 2_000).unwrap();
        assert!(stats.segments_discarded >= 1 && stats.segments_cleaned > 0);
        assert_eq!(log.log_start_offset(), bases[2]);
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
        for base in &bases[..2] {
            assert!(!log_path_of(dir.path(), *base).exists());
        }
        let kept: Vec<Read> = want.into_iter().filter(|r| r.0 >= bases[2]).collect();
        assert_eq!(read_from(&log, bases[2]), kept);
        drop(log);
        let log = open(dir.path());
        assert_eq!(log.log_start_offset(), bases[2]);
        assert_eq!(read_from(&log, bases[2]), kept);
    }

    #[test]
    fn a_truncation_during_a_clean_discards_the_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 60, 1_000, Compression::None);
        let snapshot = log.clean_snapshot(2_000).unwrap().unwrap();
        let outcome = clean(snapshot, DEDUPE_BUFFER_BYTES_DEFAULT, &|| false)
            .unwrap()
            .unwrap();
        assert!(!outcome.segments.is_empty());
        // A truncation while the pass ran changes the log's generation: the pass is
        // dropped, whatever its map named.
        let cut = log.active().base_offset() + 1;
        log.truncate_to(cut).unwrap();
        let before = read_from(&log, 0);
        let stats = log.install_clean(outcome, 2_000).unwrap();
        assert_eq!(stats.segments_cleaned, 0);
        assert!(stats.segments_discarded > 0);
        assert_eq!(read_from(&log, 0), before);
        assert!(leftovers(dir.path()).is_empty());
        // The next pass cleans against what is there now.
        let want = expected(&before, log.active().base_offset());
        log.compact(2_000, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
        assert_eq!(read_from(&log, 0), want);
    }

    #[test]
    fn an_aborted_clean_changes_nothing_and_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 60, 1_000, Compression::None);
        let before = read_from(&log, 0);
        let snapshot = log.clean_snapshot(2_000).unwrap().unwrap();
        // Abort after the map and the first cleaned segment are written.
        let checks = std::cell::Cell::new(0);
        let batches = before.len() / 2;
        let abort = || {
            checks.set(checks.get() + 1);
            checks.get() > batches + 10
        };
        assert!(
            clean(snapshot, DEDUPE_BUFFER_BYTES_DEFAULT, &abort)
                .unwrap()
                .is_none()
        );
        assert!(leftovers(dir.path()).is_empty());
        assert_eq!(read_from(&log, 0), before);
    }

    /// Every record as written by `write_keys`: offsets rise, each value names its offset.
    fn assert_consistent(read: &[Read], log_end: i64) {
        assert!(
            read.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "offsets rise"
        );
        for (offset, _, value, ..) in read {
            assert_eq!(value.as_deref(), Some(format!("v{offset}").as_bytes()));
        }
        assert_eq!(read.last().map(|record| record.0), Some(log_end - 1));
    }

    #[test]
    fn appends_and_reads_go_on_while_a_clean_runs() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, RwLock};
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 200, 1_000, Compression::Gzip);
        let log = Arc::new(RwLock::new(log));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                // Bounded: until the clean is installed, and at most 100_000 reads.
                while !done.load(Ordering::SeqCst) && reads < 100_000 {
                    let log = log.read().unwrap();
                    assert_consistent(&read_from(&log, 0), log.log_end_offset());
                    reads += 1;
                }
                reads
            })
        };
        let snapshot = log.read().unwrap().clean_snapshot(2_000).unwrap().unwrap();
        let before = read_from(&log.read().unwrap(), 0);
        let active_base = log.read().unwrap().active().base_offset();
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                for _ in 0..40 {
                    write_keys(&mut log.write().unwrap(), 1, 3_000, Compression::None);
                }
            })
        };
        let outcome = clean(snapshot, DEDUPE_BUFFER_BYTES_DEFAULT, &|| false)
            .unwrap()
            .unwrap();
        writer.join().unwrap();
        let stats = log.write().unwrap().install_clean(outcome, 2_000).unwrap();
        done.store(true, Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0);
        assert!(stats.records_removed > 0 && stats.segments_discarded == 0);
        // The closed segments as of the snapshot are compacted against the snapshot;
        // everything appended since is there as written.
        let log = log.read().unwrap();
        let read = read_from(&log, 0);
        assert_consistent(&read, log.log_end_offset());
        let snapshot_end = before.last().unwrap().0 + 1;
        let want = expected(&before, active_base);
        let compacted: Vec<Read> = read
            .iter()
            .filter(|r| r.0 < snapshot_end)
            .cloned()
            .collect();
        assert_eq!(compacted, want);
        let appended = read.iter().filter(|r| r.0 >= snapshot_end).count() as i64;
        assert_eq!(appended, log.log_end_offset() - snapshot_end);
    }

    #[test]
    fn a_crash_once_the_swap_files_are_durable_recovers_the_clean() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        write_keys(&mut log, 60, 1_000, Compression::Gzip);
        let want = expected(&read_from(&log, 0), log.active().base_offset());
        let snapshot = log.clean_snapshot(2_000).unwrap().unwrap();
        let outcome = clean(snapshot, DEDUPE_BUFFER_BYTES_DEFAULT, &|| false)
            .unwrap()
            .unwrap();
        assert!(outcome.segments.len() > 2);
        // The crash: every `.swap` is in place, the first segment went one step further
        // (old log renamed `.deleted`, its indexes removed), the cleaned indexes are left.
        for cleaned in &outcome.segments {
            let paths = SegmentPaths::of(dir.path(), cleaned.base_offset);
            fs::rename(&cleaned.files.log, &paths.swap).unwrap();
        }
        let first = SegmentPaths::of(dir.path(), outcome.segments[0].base_offset);
        fs::rename(&first.log, &first.deleted).unwrap();
        fs::remove_file(&first.offset_index).unwrap();
        fs::remove_file(&first.time_index).unwrap();
        // No destructor runs in a crash: the `.cleaned` index files stay behind.
        std::mem::forget(outcome);
        drop(log);
        let log = open(dir.path());
        assert_compacted(&log, &want);
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
    }

    /// Environment variable naming the directory the child of the kill test writes to.
    const KILL_DIR_VARIABLE: &str = "CLEANER_KILL_NINE_DIR";
    /// Acknowledged appends the parent waits for before killing the child.
    const ACKS_BEFORE_KILL: usize = 400;
    /// Bound on the child's loop, in case nobody kills it.
    const CHILD_APPENDS_MAX: i64 = 1_000_000;
    /// Keys the child cycles through: most records are superseded soon.
    const KILL_KEYS: i64 = 13;

    fn kill_config() -> LogConfig {
        LogConfig {
            segment_bytes: 4_096,
            ..config()
        }
    }

    /// The child of `kill_nine_mid_compaction_loses_no_record_and_keeps_batch_offsets`:
    /// appends batches of one idempotent producer (sequence = offset) over a few keys and
    /// compacts every few appends, printing each acknowledged batch's offsets, until
    /// killed. Does nothing when run alone.
    #[test]
    #[ignore = "child process of kill_nine_mid_compaction_loses_no_record_and_keeps_batch_offsets"]
    fn kill_nine_child_compacting() {
        let Some(dir) = std::env::var_os(KILL_DIR_VARIABLE) else {
            return;
        };
        let mut log = PartitionLog::open(PathBuf::from(dir), kill_config(), 0).unwrap();
        let mut stdout = std::io::stdout();
        for index in 0..CHILD_APPENDS_MAX {
            let first = log.log_end_offset();
            let records: Vec<Record> = (0..1 + index % 5)
                .map(|delta| {
                    let offset = first + delta;
                    let key = Some(format!("k{}", offset % KILL_KEYS));
                    let mut record = record(delta, key, Some(format!("v{offset}")), index);
                    (record.producer_id, record.producer_epoch) = (7, 0);
                    record.sequence = offset as i32;
                    record
                })
                .collect();
            let compression = [Compression::None, Compression::Gzip][index as usize % 2];
            let info = append_records(&mut log, &records, compression, index);
            writeln!(stdout, "acked {} {}", info.first_offset, info.last_offset).unwrap();
            stdout.flush().unwrap();
            if index % 7 == 0 {
                log.compact(index, DEDUPE_BUFFER_BYTES_DEFAULT).unwrap();
            }
        }
    }

    /// `kill -9` at any moment of produce and compaction leaves a log that opens and reads:
    /// every batch passes its CRC and decodes, keeps the offsets it was acknowledged with
    /// (compaction never moves a batch's base or last offset), every record its offset and
    /// sequence, and the latest acknowledged record of every key is there.
    #[test]
    fn kill_nine_mid_compaction_loses_no_record_and_keeps_batch_offsets() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "log::cleaner::tests::kill_nine_child_compacting",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(KILL_DIR_VARIABLE, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        // Every acknowledgement, those printed after the kill was decided too: a pass the
        // child ran after them may have removed what they superseded. (A cut last line
        // does not parse and is left out: its batch counts as not acknowledged.)
        let mut acks = stdout.lines().map_while(Result::ok).filter_map(|line| {
            let rest = line.strip_prefix("acked ")?;
            let (first, last) = rest.split_once(' ')?;
            Some((first.parse::<i64>().ok()?, last.parse::<i64>().ok()?))
        });
        let mut acked: Vec<(i64, i64)> = acks.by_ref().take(ACKS_BEFORE_KILL).collect();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(acked.len(), ACKS_BEFORE_KILL, "the child produced");
        acked.extend(acks);
        let last_acked = acked.last().unwrap().1;

        let log = PartitionLog::open(dir.path().to_path_buf(), kill_config(), 0).unwrap();
        assert!(
            log.log_end_offset() > last_acked,
            "lost acknowledged records"
        );
        let read = log.read(0, usize::MAX, i64::MAX, true).unwrap().records;
        let batches = crate::log::validate_replicated_batches(&read).unwrap();
        let acked_ranges: HashSet<(i64, i64)> = acked.iter().copied().collect();
        let mut found = HashMap::new();
        let mut position = 0;
        let mut lost_first_records = 0;
        for header in &batches {
            let range = (header.base_offset, header.last_offset());
            assert!(
                header.base_offset > last_acked || acked_ranges.contains(&range),
                "{range:?} is not a batch as acknowledged"
            );
            let mut bytes = read.slice(position..position + header.total_bytes());
            position += header.total_bytes();
            let records = RecordBatchDecoder::decode(&mut bytes).unwrap().records;
            if records.first().is_some_and(|first| first.offset > range.0) {
                lost_first_records += 1;
            }
            for record in records {
                assert!(record.offset >= range.0 && record.offset <= range.1);
                assert_eq!(i64::from(record.sequence), record.offset);
                let value = Bytes::from(format!("v{}", record.offset));
                assert_eq!(record.value, Some(value));
                found.insert(record.offset, record.key.unwrap());
            }
        }
        assert!(
            lost_first_records > 0,
            "compaction rewrote batches from the middle"
        );
        let mut latest = HashMap::new();
        for offset in acked.iter().flat_map(|&(first, last)| first..=last) {
            latest.insert(offset % KILL_KEYS, offset);
        }
        for (key, offset) in latest {
            let want = Bytes::from(format!("k{key}"));
            assert_eq!(
                found.get(&offset),
                Some(&want),
                "latest of k{key} at {offset}"
            );
        }
    }
}
