//! One segment: a `.log` file of whole v2 batches, named by its base offset, with a sparse
//! offset index and time index beside it. Appends go to the end with positional writes;
//! reads use positional reads (`read_exact_at`), so readers need only `&self`.
//!
//! The segment keeps a small [`SegmentState`] (size, next offset, max timestamp, index
//! spacing) so that appends and lookups never scan the file; it is rebuilt on open either
//! from the index files plus the few batches after the last index entry, or by recovery.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::BytesMut;

use crate::log::batch::{self, BATCH_HEADER_BYTES, BatchHeader, MAGIC_V2, RecordTimestamp};
use crate::log::error::LogError;
use crate::log::file_slice::{FileSlice, SegmentFile};
use crate::log::index::{OffsetIndex, OffsetPosition};
use crate::log::time_index::{TimeIndex, TimestampOffset};
use crate::log::txn_index::{AbortedTxn, DirectoryChange, TXN_INDEX_EXTENSION, TxnIndex};

pub(crate) const LOG_EXTENSION: &str = "log";
pub(crate) const INDEX_EXTENSION: &str = "index";
pub(crate) const TIME_INDEX_EXTENSION: &str = "timeindex";
pub(crate) const DELETED_EXTENSION: &str = "deleted";
/// Queued index entries are written once either index file has this many bytes of them
/// (a page), or at a flush: 512 offset entries, 342 time entries.
const INDEX_WRITE_BYTES: usize = 4096;
/// Bytes read at once when walking consecutive batch headers. A fetch walks every header
/// from an index entry (one per `index.interval.bytes`, 4 KiB) to its offset and then each
/// batch it returns: with small batches (a producer at linger 0 sends one record of ~100
/// bytes per batch) that was some 40 reads of 61 bytes per fetch, 12% of a three-node
/// cluster's CPU in `latency-rf3-linger0`.
const HEADER_WINDOW_BYTES: usize = 4096;

/// `<dir>/<base offset, 20 digits>.<extension>`, Kafka's naming.
pub(crate) fn segment_file(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
}

/// Make file creations and removals in `dir` durable.
pub(crate) fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Index entries earned by appended batches, written to the index files together.
#[derive(Debug, Default)]
pub(crate) struct PendingEntries {
    offsets: Vec<OffsetPosition>,
    times: Vec<TimestampOffset>,
}

/// What a segment knows about its contents without reading them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentState {
    size_bytes: u64,
    /// Last offset + 1; the base offset while empty.
    next_offset: i64,
    bytes_since_index_entry: u64,
    /// Largest batch max timestamp, with the last offset of the first batch reaching it.
    max_timestamp: Option<TimestampOffset>,
    /// Max timestamp of the first batch: Kafka's clock for `segment.ms` rolls.
    first_batch_timestamp_ms: Option<i64>,
    time_index_last_ms: Option<i64>,
}

impl SegmentState {
    pub(crate) fn empty(base_offset: i64) -> Self {
        SegmentState {
            size_bytes: 0,
            next_offset: base_offset,
            bytes_since_index_entry: 0,
            max_timestamp: None,
            first_batch_timestamp_ms: None,
            time_index_last_ms: None,
        }
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub(crate) fn max_timestamp(&self) -> Option<TimestampOffset> {
        self.max_timestamp
    }

    /// The entry `Segment::seal` adds for a segment that stops being active, queued on
    /// `pending` (a cleaned segment is written sealed).
    pub(crate) fn seal_entries(&mut self, pending: &mut PendingEntries) {
        pending.times.extend(self.take_time_entry());
    }

    /// Account for one more batch at the end of the segment.
    fn observe(&mut self, header: &BatchHeader) {
        self.first_batch_timestamp_ms
            .get_or_insert(header.max_timestamp);
        // Strictly greater: on ties the first batch keeps the max, as Kafka's does.
        if self
            .max_timestamp
            .is_none_or(|max| header.max_timestamp > max.timestamp_ms)
        {
            self.max_timestamp = Some(TimestampOffset {
                timestamp_ms: header.max_timestamp,
                offset: header.last_offset(),
            });
        }
        self.size_bytes += header.total_bytes() as u64;
        self.next_offset = header.last_offset() + 1;
    }

    /// Account for one batch written at the end and queue the index entries it earns: as in
    /// Kafka, a batch that starts more than `index_interval_bytes` after the last indexed
    /// one gets an offset entry, and a time entry if the max timestamp grew.
    pub(crate) fn advance(
        &mut self,
        header: &BatchHeader,
        index_interval_bytes: u32,
        pending: &mut PendingEntries,
    ) {
        let position = self.size_bytes;
        self.observe(header);
        if self.bytes_since_index_entry > u64::from(index_interval_bytes) {
            pending.offsets.push(OffsetPosition {
                offset: header.last_offset(),
                position,
            });
            pending.times.extend(self.take_time_entry());
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_bytes() as u64;
    }

    /// The max timestamp, if the time index does not hold it yet.
    fn take_time_entry(&mut self) -> Option<TimestampOffset> {
        let max = self.max_timestamp?;
        if self
            .time_index_last_ms
            .is_some_and(|last| max.timestamp_ms <= last)
        {
            return None;
        }
        self.time_index_last_ms = Some(max.timestamp_ms);
        Some(max)
    }
}

/// Limits of one fetch, shared by every segment it touches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadLimits {
    /// No batch whose base offset is at or above this (the high watermark).
    pub(crate) upper_bound: i64,
    pub(crate) max_bytes: usize,
    /// Return the first batch whole even beyond `max_bytes` (KIP-74).
    pub(crate) min_one_batch: bool,
}

#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    /// Shared with the file slices that fetch responses are still sending.
    log: Arc<SegmentFile>,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// Aborted transactions whose abort marker is in this segment.
    txn_index: TxnIndex,
    /// The index file was unreadable and was dropped: the partition must rebuild this
    /// segment's entries from the log (`PartitionLog::first_lost_txn_index`).
    txn_index_lost: bool,
    state: SegmentState,
    created_ms: i64,
}

impl Segment {
    /// A new, empty segment. Fails if its log file already exists.
    pub(crate) fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Self, LogError> {
        let log_path = segment_file(dir, base_offset, LOG_EXTENSION);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&log_path)?;
        Self::with_new_indexes(dir, base_offset, log_path, log, now_ms)
    }

    /// An existing log file with emptied index files, for recovery to refill.
    pub(crate) fn open_unindexed(
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        let log_path = segment_file(dir, base_offset, LOG_EXTENSION);
        let log = OpenOptions::new().read(true).write(true).open(&log_path)?;
        Self::with_new_indexes(dir, base_offset, log_path, log, now_ms)
    }

    fn with_new_indexes(
        dir: &Path,
        base_offset: i64,
        log_path: PathBuf,
        log: File,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        let offset_index = OffsetIndex::create(
            &segment_file(dir, base_offset, INDEX_EXTENSION),
            base_offset,
        )?;
        let time_path = segment_file(dir, base_offset, TIME_INDEX_EXTENSION);
        let time_index = TimeIndex::create(&time_path, base_offset)?;
        let txn_path = segment_file(dir, base_offset, TXN_INDEX_EXTENSION);
        // Recovery refills an existing segment's other indexes; its aborted transactions
        // are kept and corrected by the partition's rebuild from its snapshot (see
        // `txn_index`). A new segment starts without any.
        let (txn_index, txn_index_lost) = if log.metadata()?.len() == 0 {
            (TxnIndex::create(txn_path)?, false)
        } else {
            load_txn_index(txn_path)?
        };
        let state = SegmentState::empty(base_offset);
        let created_ms = now_ms;
        Ok(Segment {
            base_offset,
            log_path,
            log: SegmentFile::new(log),
            offset_index,
            time_index,
            txn_index,
            txn_index_lost,
            state,
            created_ms,
        })
    }

    /// Open a sealed segment, trusting its index files once they pass sanity checks, and
    /// reading only the batch headers after the last offset index entry. `Corrupt` or
    /// `Io(NotFound)` means the indexes cannot be trusted: the caller rebuilds them.
    pub(crate) fn open(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Self, LogError> {
        let log_path = segment_file(dir, base_offset, LOG_EXTENSION);
        let log = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let log_bytes = log.metadata()?.len();
        let index_path = segment_file(dir, base_offset, INDEX_EXTENSION);
        let offset_index = OffsetIndex::load(&index_path, base_offset, log_bytes)?;
        let time_path = segment_file(dir, base_offset, TIME_INDEX_EXTENSION);
        let time_index = TimeIndex::load(&time_path, base_offset)?;
        let txn_path = segment_file(dir, base_offset, TXN_INDEX_EXTENSION);
        let (txn_index, txn_index_lost) = load_txn_index(txn_path)?;
        let state = SegmentState::empty(base_offset);
        let created_ms = now_ms;
        let mut segment = Segment {
            base_offset,
            log_path,
            log: SegmentFile::new(log),
            offset_index,
            time_index,
            txn_index,
            txn_index_lost,
            state,
            created_ms,
        };
        segment.state = segment.tail_state(log_bytes)?;
        Ok(segment)
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn log_file(&self) -> &File {
        &self.log
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.state.size_bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.state.size_bytes == 0
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.state.next_offset
    }

    pub(crate) fn max_timestamp(&self) -> Option<TimestampOffset> {
        self.state.max_timestamp
    }

    pub(crate) fn first_batch_timestamp_ms(&self) -> Option<i64> {
        self.state.first_batch_timestamp_ms
    }

    pub(crate) fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// The newest timestamp for retention: the max record timestamp, or the file's
    /// modification time when no batch carries one (as Kafka does).
    pub(crate) fn largest_timestamp_ms(&self) -> Result<i64, LogError> {
        match self.state.max_timestamp {
            Some(max) if max.timestamp_ms >= 0 => Ok(max.timestamp_ms),
            _ => Ok(modified_ms(&self.log)?),
        }
    }

    /// Append whole, already stamped batches at the end, given as `pieces` written one
    /// after another (a batch's stamped header and its body may be apart). All or nothing:
    /// on failure the log file and indexes are cut back and the state is unchanged.
    pub(crate) fn append(
        &mut self,
        pieces: &[IoSlice<'_>],
        headers: &[BatchHeader],
        index_interval_bytes: u32,
    ) -> Result<(), LogError> {
        let mut state = self.state;
        let mut pending = PendingEntries::default();
        for header in headers {
            assert!(
                header.base_offset >= state.next_offset,
                "offsets increase in a segment"
            );
            state.advance(header, index_interval_bytes, &mut pending);
        }
        let position = self.state.size_bytes;
        let length: usize = pieces.iter().map(|piece| piece.len()).sum();
        assert_eq!(
            state.size_bytes - position,
            length as u64,
            "headers match records"
        );
        let mut written = self
            .log
            .write_all_vectored_at(pieces, position)
            .map_err(LogError::from);
        if written.is_ok() {
            written = self.commit(state, pending);
        }
        if written.is_err() {
            // Best effort; reads stop at `state.size_bytes` whatever the file length says.
            let _ = self.log.truncate(position);
        }
        written
    }

    /// Queue the index entries earned and adopt `state`. The index files get their entries
    /// a page at a time ([`INDEX_WRITE_BYTES`]), not per append: on failure this append's
    /// entries are taken back out, the earlier ones stay queued.
    fn commit(&mut self, state: SegmentState, pending: PendingEntries) -> Result<(), LogError> {
        let lengths_before = (self.offset_index.len(), self.time_index.len());
        self.offset_index.append(&pending.offsets);
        self.time_index.append(&pending.times);
        let due = self
            .offset_index
            .pending_bytes()
            .max(self.time_index.pending_bytes());
        if due >= INDEX_WRITE_BYTES
            && let Err(error) = self.write_index_entries()
        {
            // Back to the entries before this append, by count: a time entry this append
            // earned may name an earlier append's offset (the max timestamp came from an
            // unindexed batch before), so cutting by offset would keep it. A cut that
            // fails leaves the file marked overlong, and the next write trims it.
            let (offsets, times) = lengths_before;
            let _ = self.offset_index.truncate_to_len(offsets);
            let _ = self.time_index.truncate_to_len(times);
            return Err(error.into());
        }
        self.state = state;
        Ok(())
    }

    /// Write the queued entries of both index files. The time index goes first, so that on
    /// disk it always covers at least what the offset index covers: reopening from the
    /// files ([`Segment::open`]) takes the max timestamp from the time index's last entry
    /// and reads only the batch headers after the offset index's last one.
    fn write_index_entries(&mut self) -> io::Result<()> {
        self.time_index.write_pending()?;
        self.offset_index.write_pending()
    }

    /// Adopt the result of a recovery scan of this (unindexed) segment: cut the log file to
    /// the valid batches and write the rebuilt index entries.
    pub(crate) fn install_scan(
        &mut self,
        state: SegmentState,
        pending: PendingEntries,
    ) -> Result<(), LogError> {
        assert!(
            self.offset_index.last_entry().is_none(),
            "recovery starts from empty indexes"
        );
        self.log.truncate(state.size_bytes)?;
        self.commit(state, pending)?;
        Ok(self.write_index_entries()?)
    }

    /// The first batch whose last offset is at or above `offset`: the batch holding it, or
    /// the next one after a gap. Binary search in the index, then a short header scan.
    pub(crate) fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        self.find_batch_in(&mut self.header_walk(), offset)
    }

    fn find_batch_in(
        &self,
        walk: &mut HeaderWalk<'_>,
        offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let start = self.offset_index.lookup(offset).position;
        walk.find_from(start, |header| header.last_offset() >= offset)
    }

    /// Consecutive headers of this segment up to its end, read a window at a time.
    fn header_walk(&self) -> HeaderWalk<'_> {
        HeaderWalk::new(self, self.state.size_bytes)
    }

    /// The batch holding `offset` (or the next after a gap) and the whole batches from it
    /// that the limits allow, `taken` bytes being read already: a slice of the file with the
    /// offset after its last batch (None when no batch fits), and whether a limit stopped
    /// the read (false: the segment ran out). None when the segment holds nothing at or
    /// past `offset`. One walk of the headers finds the batch and slices: the window that
    /// found it often holds the next ones.
    pub(crate) fn slice_from(
        &self,
        offset: i64,
        limits: &ReadLimits,
        taken: usize,
    ) -> Result<Option<(Option<(FileSlice, i64)>, bool)>, LogError> {
        let mut walk = self.header_walk();
        let Some((position, _)) = self.find_batch_in(&mut walk, offset)? else {
            return Ok(None);
        };
        self.slice_batches(&mut walk, position, limits, taken)
            .map(Some)
    }

    fn slice_batches(
        &self,
        walk: &mut HeaderWalk<'_>,
        position: u64,
        limits: &ReadLimits,
        taken: usize,
    ) -> Result<(Option<(FileSlice, i64)>, bool), LogError> {
        let mut end = position;
        let mut end_offset = None;
        let mut limited = false;
        while let Some(header) = walk.header_at(end)? {
            let taken_bytes = taken + (end - position) as usize;
            let exempt = taken_bytes == 0 && limits.min_one_batch;
            let too_big = taken_bytes + header.total_bytes() > limits.max_bytes && !exempt;
            if header.base_offset >= limits.upper_bound || too_big {
                limited = true;
                break;
            }
            end += header.total_bytes() as u64;
            end_offset = Some(header.last_offset() + 1);
        }
        let slice = end_offset.map(|end_offset| {
            (
                FileSlice::new(&self.log, position, (end - position) as usize),
                end_offset,
            )
        });
        Ok((slice, limited))
    }

    /// Append `length` bytes of the log from `position` to `out`.
    pub(crate) fn read_exact(
        &self,
        position: u64,
        length: usize,
        out: &mut BytesMut,
    ) -> Result<(), LogError> {
        let start = out.len();
        out.resize(start + length, 0);
        self.log.read_exact_at(&mut out[start..], position)?;
        Ok(())
    }

    /// The first record with a timestamp at or above `timestamp_ms`. The time index gives a
    /// batch before which every record is older; from there, headers pick the first batch
    /// that may qualify and decoding that batch finds the record.
    pub(crate) fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<RecordTimestamp>, LogError> {
        let near = self.time_index.lookup(timestamp_ms);
        let mut position = self.offset_index.lookup(near.offset).position;
        let qualifies = |header: &BatchHeader| header.max_timestamp >= timestamp_ms;
        let mut walk = self.header_walk();
        while let Some((found, header)) = walk.find_from(position, qualifies)? {
            let records = self.record_timestamps(found, &header)?;
            let first = records
                .into_iter()
                .find(|record| record.timestamp_ms >= timestamp_ms);
            if first.is_some() {
                return Ok(first);
            }
            // A header max above its records' timestamps: keep looking.
            position = found + header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// The first record carrying the segment's max timestamp. Falls back to the batch's
    /// last offset if no record carries it (a header that claims more than its records).
    pub(crate) fn max_timestamp_record(&self) -> Result<Option<RecordTimestamp>, LogError> {
        let Some(max) = self.state.max_timestamp else {
            return Ok(None);
        };
        let shallow = RecordTimestamp {
            offset: max.offset,
            timestamp_ms: max.timestamp_ms,
        };
        let Some((position, header)) = self.find_batch(max.offset)? else {
            return Ok(Some(shallow));
        };
        let records = self.record_timestamps(position, &header)?;
        let first = records
            .into_iter()
            .find(|record| record.timestamp_ms == max.timestamp_ms);
        Ok(Some(first.unwrap_or(shallow)))
    }

    fn record_timestamps(
        &self,
        position: u64,
        header: &BatchHeader,
    ) -> Result<Vec<RecordTimestamp>, LogError> {
        let mut bytes = BytesMut::new();
        self.read_exact(position, header.total_bytes(), &mut bytes)?;
        batch::record_timestamps(bytes.freeze(), header)
            .map_err(|error| self.corrupt(position, &error.to_string()))
    }

    /// Visit every header from the batch holding `from_offset` to the end of the segment.
    pub(crate) fn visit_headers(
        &self,
        from_offset: i64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        let mut walk = self.header_walk();
        let Some((mut position, _)) = self.find_batch_in(&mut walk, from_offset)? else {
            return Ok(());
        };
        while let Some(header) = walk.header_at(position)? {
            visit(&header);
            position += header.total_bytes() as u64;
        }
        Ok(())
    }

    /// Remove the batch holding `offset` and everything after it.
    pub(crate) fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        let Some((position, _)) = self.find_batch(offset)? else {
            return Ok(());
        };
        // Index entries name batches' last offsets: those of the kept batches are below.
        self.offset_index.truncate_from(offset)?;
        self.time_index.truncate_from(offset)?;
        self.txn_index.truncate_from(offset)?;
        self.log.truncate(position)?;
        self.state = self.tail_state(position)?;
        Ok(())
    }

    /// This segment stops being the active one: put its final max timestamp in the time
    /// index (so a reopen finds it, as Kafka does) and make everything durable but the
    /// directory (see [`Segment::flush`]).
    pub(crate) fn seal(&mut self) -> Result<DirectoryChange, LogError> {
        let mut state = self.state;
        if let Some(entry) = state.take_time_entry() {
            self.time_index.append(&[entry]);
            self.state = state;
        }
        self.flush()
    }

    /// Write the queued index entries, then fsync the log and its indexes. Says whether the
    /// aborted-transaction index file was created or removed since the last flush: the
    /// caller fsyncs the directory then, since a missing `.txnindex` reads as "no aborted
    /// transaction" (a missing offset or time index is rebuilt on open instead, so their
    /// directory entries need no fsync).
    pub(crate) fn flush(&mut self) -> Result<DirectoryChange, LogError> {
        self.write_index_entries()?;
        self.log.sync_data()?;
        self.offset_index.flush()?;
        self.time_index.flush()?;
        self.txn_index.flush()
    }

    /// fsync the aborted-transaction index alone, after a rebuild of its entries; as
    /// [`Segment::flush`] says, the caller fsyncs the directory on a change.
    pub(crate) fn flush_txn_index(&mut self) -> Result<DirectoryChange, LogError> {
        self.txn_index.flush()
    }

    /// Nothing of the aborted-transaction index waits for an fsync.
    #[cfg(test)]
    pub(crate) fn txn_index_flushed(&self) -> bool {
        self.txn_index.is_flushed()
    }

    /// Whether this segment's aborted-transaction index was unreadable and dropped.
    pub(crate) fn txn_index_lost(&self) -> bool {
        self.txn_index_lost
    }

    /// The partition rebuilt the dropped index from the log.
    pub(crate) fn txn_index_rebuilt(&mut self) {
        self.txn_index_lost = false;
    }

    /// Every aborted transaction whose marker is in this segment, in marker order, read
    /// from the index file (for the cleaner's pass; reads use [`Self::collect_aborted`]).
    pub(crate) fn aborted_transactions(&self) -> Result<Vec<AbortedTxn>, LogError> {
        self.txn_index.entries()
    }

    /// How many aborted transactions have their marker in this segment.
    pub(crate) fn aborted_count(&self) -> u64 {
        self.txn_index.len()
    }

    /// This segment's part of Kafka's `collectAbortedTxns` (see [`TxnIndex::collect`]):
    /// true when no later segment can hold a transaction overlapping `start..end`.
    pub(crate) fn collect_aborted(
        &self,
        start: i64,
        end: i64,
        found: &mut Vec<AbortedTxn>,
    ) -> Result<bool, LogError> {
        self.txn_index.collect(start, end, found)
    }

    /// Records an abort marker appended to this segment.
    pub(crate) fn append_aborted(&mut self, entry: AbortedTxn) -> Result<(), LogError> {
        self.txn_index.append(entry)
    }

    /// Drops the aborted transactions whose markers are at or after `offset` (their
    /// rebuild from the log follows).
    pub(crate) fn truncate_aborted_from(&mut self, offset: i64) -> Result<(), LogError> {
        self.txn_index.truncate_from(offset)
    }

    /// Remove the files. The log is renamed to `.deleted` first, so a crash midway leaves
    /// either the whole segment or leftovers that recovery removes.
    pub(crate) fn delete_files(self) -> Result<(), LogError> {
        let mut deleted_path = self.log_path.clone().into_os_string();
        deleted_path.push(format!(".{DELETED_EXTENSION}"));
        fs::rename(&self.log_path, &deleted_path)?;
        remove_if_present(self.offset_index.path())?;
        remove_if_present(self.time_index.path())?;
        self.txn_index.delete_file()?;
        fs::remove_file(&deleted_path)?;
        Ok(())
    }

    /// State of a segment with trusted indexes: the time index's last entry covers up to the
    /// last offset index entry; only the headers from that entry to `log_bytes` are read.
    /// `Corrupt` when the indexes and the log disagree.
    fn tail_state(&self, log_bytes: u64) -> Result<SegmentState, LogError> {
        let anchor = self.offset_index.last_entry();
        let start = anchor.map_or(0, |entry| entry.position);
        let mut state = SegmentState::empty(self.base_offset);
        state.max_timestamp = self.time_index.last_entry();
        state.time_index_last_ms = state.max_timestamp.map(|max| max.timestamp_ms);
        state.size_bytes = start;
        let mut walk = HeaderWalk::new(self, log_bytes);
        while let Some(header) = walk.header_at(state.size_bytes)? {
            let is_anchor = state.size_bytes == start;
            self.check_tail_batch(&state, &header, anchor.filter(|_| is_anchor))?;
            state.observe(&header);
        }
        state.bytes_since_index_entry = log_bytes - start;
        let first = walk.header_at(0)?;
        state.first_batch_timestamp_ms = first.map(|header| header.max_timestamp);
        if state
            .max_timestamp
            .is_some_and(|max| max.offset >= state.next_offset)
        {
            return Err(self.corrupt(log_bytes, "time index points past the last batch"));
        }
        Ok(state)
    }

    fn check_tail_batch(
        &self,
        state: &SegmentState,
        header: &BatchHeader,
        anchor: Option<OffsetPosition>,
    ) -> Result<(), LogError> {
        let position = state.size_bytes;
        if header.magic != MAGIC_V2 || header.last_offset_delta < 0 {
            return Err(self.corrupt(position, "not a valid v2 batch header"));
        }
        if header.base_offset < state.next_offset {
            return Err(self.corrupt(position, "offsets go backwards"));
        }
        if header.last_offset() - self.base_offset > i64::from(i32::MAX) {
            return Err(self.corrupt(position, "offset beyond the segment's range"));
        }
        if anchor.is_some_and(|entry| entry.offset != header.last_offset()) {
            return Err(self.corrupt(position, "offset index disagrees with the batch"));
        }
        Ok(())
    }

    fn corrupt(&self, position: u64, why: &str) -> LogError {
        LogError::Corrupt(format!(
            "{} at byte {position}: {why}",
            self.log_path.display()
        ))
    }
}

/// Consecutive batch headers of one segment's log up to `end`, read [`HEADER_WINDOW_BYTES`]
/// at a time: a header inside the last window is parsed from it, any other starts a new
/// window there. After a batch too large for the next header to share its window, the next
/// read is only a header's bytes, so walking large batches does not copy a window of each
/// one's body.
struct HeaderWalk<'a> {
    segment: &'a Segment,
    end: u64,
    window: [u8; HEADER_WINDOW_BYTES],
    window_start: u64,
    window_len: usize,
    after_large_batch: bool,
}

impl<'a> HeaderWalk<'a> {
    fn new(segment: &'a Segment, end: u64) -> Self {
        HeaderWalk {
            segment,
            end,
            window: [0; HEADER_WINDOW_BYTES],
            window_start: 0,
            window_len: 0,
            after_large_batch: false,
        }
    }

    /// The header of the batch at `position`; None at `end`. Stored batches were
    /// validated when written or recovered, so a header that does not parse, is not v2 or
    /// overruns `end` is corruption.
    fn header_at(&mut self, position: u64) -> Result<Option<BatchHeader>, LogError> {
        if position >= self.end {
            return Ok(None);
        }
        let remaining = self.end - position;
        if remaining < BATCH_HEADER_BYTES as u64 {
            return Err(self
                .segment
                .corrupt(position, "batch header runs past the end"));
        }
        let window_end = self.window_start + self.window_len as u64;
        if position < self.window_start || position + BATCH_HEADER_BYTES as u64 > window_end {
            let length = match self.after_large_batch {
                true => BATCH_HEADER_BYTES,
                false => HEADER_WINDOW_BYTES.min(remaining as usize),
            };
            (self.segment.log).read_exact_at(&mut self.window[..length], position)?;
            (self.window_start, self.window_len) = (position, length);
        }
        let at = (position - self.window_start) as usize;
        let header = BatchHeader::parse(&self.window[at..at + BATCH_HEADER_BYTES])
            .map_err(|error| self.segment.corrupt(position, &error.to_string()))?;
        // `parse` leaves the magic to its callers; only v2 is stored, and another layout
        // would be served to fetches as if it were one.
        if header.magic != MAGIC_V2 {
            return Err(self.segment.corrupt(position, "not a v2 batch header"));
        }
        if header.total_bytes() as u64 > remaining {
            return Err(self.segment.corrupt(position, "batch runs past the end"));
        }
        // Large: the next header cannot share a window started at this batch.
        self.after_large_batch = header.total_bytes() + BATCH_HEADER_BYTES > HEADER_WINDOW_BYTES;
        Ok(Some(header))
    }

    /// The first batch from `start` on that `wanted` picks, and its position.
    fn find_from(
        &mut self,
        start: u64,
        wanted: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut position = start;
        while let Some(header) = self.header_at(position)? {
            if wanted(&header) {
                return Ok(Some((position, header)));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }
}

/// Write fresh, fsynced index files with `pending` entries, for a log that is not a
/// segment yet (a cleaned copy, renamed into place later).
pub(crate) fn write_index_files(
    offset_path: &Path,
    time_path: &Path,
    base_offset: i64,
    pending: &PendingEntries,
) -> Result<(), LogError> {
    let mut offset_index = OffsetIndex::create(offset_path, base_offset)?;
    offset_index.append(&pending.offsets);
    offset_index.flush()?;
    let mut time_index = TimeIndex::create(time_path, base_offset)?;
    time_index.append(&pending.times);
    time_index.flush()?;
    Ok(())
}

/// A segment's aborted-transaction index, and whether it was lost: an unreadable one is
/// derived data, so it is removed (and rebuilt by the partition) rather than failing the
/// whole log.
fn load_txn_index(path: PathBuf) -> Result<(TxnIndex, bool), LogError> {
    match TxnIndex::load(path.clone()) {
        Ok(index) => Ok((index, false)),
        Err(LogError::Corrupt(why)) => {
            tracing::warn!(%why, "dropping an unreadable aborted-transaction index to rebuild it");
            Ok((TxnIndex::create(path)?, true))
        }
        Err(error) => Err(error),
    }
}

pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn modified_ms(file: &File) -> io::Result<i64> {
    let modified = file.metadata()?.modified()?;
    Ok(modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |age| age.as_millis() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_support::{encode_batch_sized, validated};
    use kafka_protocol::records::Compression;

    /// Stamp `count` one-record batches with consecutive offsets from `first_offset`.
    fn stamped_batches(count: usize, first_offset: i64) -> (BytesMut, Vec<BatchHeader>) {
        let mut records = BytesMut::new();
        for index in 0..count {
            let mut batch = encode_batch_sized(&[1_000 + index as i64], Compression::None, 100);
            batch::stamp_batch(&mut batch, first_offset + index as i64, 0, None);
            records.extend_from_slice(&batch);
        }
        validated(records)
    }

    /// Small batches (many to a header window) and batches larger than a window, in runs,
    /// with and without index entries to start from: every offset finds the batch holding
    /// it, and slicing from it takes whole batches up to the byte limit.
    #[test]
    fn header_walks_find_and_slice_across_windows() {
        let mut records = BytesMut::new();
        let mut headers = Vec::new();
        let sizes = (0..120).map(|i| match (i / 20) % 3 {
            2 => 6_000,
            1 => 900,
            _ => 100,
        });
        for (offset, size) in sizes.enumerate() {
            let mut batch = encode_batch_sized(&[offset as i64], Compression::None, size);
            batch::stamp_batch(&mut batch, offset as i64, 0, None);
            let (batch, batch_headers) = validated(batch);
            records.extend_from_slice(&batch);
            headers.extend(batch_headers);
        }
        let starts: Vec<u64> = (headers.iter())
            .scan(0u64, |at, header| {
                let start = *at;
                *at += header.total_bytes() as u64;
                Some(start)
            })
            .collect();
        for interval in [u32::MAX, 4096] {
            let dir = tempfile::tempdir().unwrap();
            let mut segment = Segment::create(dir.path(), 0, 0).unwrap();
            segment
                .append(&[IoSlice::new(&records)], &headers, interval)
                .unwrap();
            for (offset, header) in headers.iter().enumerate() {
                let (position, found) = segment.find_batch(offset as i64).unwrap().unwrap();
                assert_eq!(
                    (position, found.base_offset),
                    (starts[offset], offset as i64)
                );
                assert_eq!(found.total_bytes(), header.total_bytes());
                for max_bytes in [1, 5_000, 20_000, usize::MAX] {
                    let limits = ReadLimits {
                        upper_bound: i64::MAX,
                        max_bytes,
                        min_one_batch: true,
                    };
                    let (slice, limited) = segment
                        .slice_from(offset as i64, &limits, 0)
                        .unwrap()
                        .unwrap();
                    let (slice, end_offset) = slice.unwrap();
                    assert_eq!(slice.position(), starts[offset]);
                    let end = end_offset as usize;
                    let end_byte = starts.get(end).copied().unwrap_or(records.len() as u64);
                    assert_eq!(slice.len() as u64, end_byte - starts[offset]);
                    let next = headers.get(end).map(|h| h.total_bytes());
                    match next {
                        // Stopped by the limit: the next batch would not have fit.
                        Some(next) => {
                            assert!(limited);
                            assert!(slice.len() + next > max_bytes, "{offset} {max_bytes}");
                        }
                        None => assert!(!limited),
                    }
                    assert!(slice.len() <= max_bytes || end == offset + 1);
                }
            }
            assert!(segment.find_batch(headers.len() as i64).unwrap().is_none());
            segment.seal().unwrap();
            drop(segment);
            let reopened = Segment::open(dir.path(), 0, 0).unwrap();
            assert_eq!(reopened.state.size_bytes, records.len() as u64);
            assert_eq!(reopened.next_offset(), headers.len() as i64);
        }
    }

    #[test]
    fn index_entries_are_sparse_by_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0, 0).unwrap();
        let (records, headers) = stamped_batches(20, 0);
        let batch_bytes = headers[0].total_bytes() as u64;
        segment
            .append(&[IoSlice::new(&records)], &headers, 3 * batch_bytes as u32)
            .unwrap();
        // An entry for every batch that starts more than 3 batches after the last entry.
        let expected: Vec<i64> = vec![4, 8, 12, 16];
        let mut indexed: Vec<i64> = (0..20)
            .map(|offset| segment.offset_index.lookup(offset).offset)
            .collect();
        indexed.dedup();
        assert_eq!(&indexed[1..], expected.as_slice());
        assert_eq!(segment.offset_index.lookup(9).position, 8 * batch_bytes);
        assert_eq!(segment.time_index.last_entry().unwrap().timestamp_ms, 1_016);
        assert_eq!(segment.next_offset(), 20);
    }

    #[test]
    fn reopen_from_indexes_restores_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 100, 0).unwrap();
        let (records, headers) = stamped_batches(10, 100);
        segment
            .append(&[IoSlice::new(&records)], &headers, 200)
            .unwrap();
        segment.seal().unwrap();
        let before = segment.state;
        drop(segment);
        let reopened = Segment::open(dir.path(), 100, 0).unwrap();
        assert_eq!(reopened.state.size_bytes, before.size_bytes);
        assert_eq!(reopened.state.next_offset, 110);
        assert_eq!(reopened.state.max_timestamp, before.max_timestamp);
        assert_eq!(
            reopened.state.bytes_since_index_entry,
            before.bytes_since_index_entry
        );
        assert_eq!(reopened.first_batch_timestamp_ms(), Some(1_000));
    }

    const CRASH_BATCHES: usize = 700;

    /// Batches that each earn an offset and a time entry, appended one per call as produce
    /// does, until part of the entries is in the index files and part still queued.
    fn appended_one_by_one(dir: &Path) -> Segment {
        let mut segment = Segment::create(dir, 0, 0).unwrap();
        let (records, headers) = stamped_batches(CRASH_BATCHES, 0);
        let mut position = 0;
        for header in &headers {
            let end = position + header.total_bytes();
            let piece = [IoSlice::new(&records[position..end])];
            segment.append(&piece, &[*header], 0).unwrap();
            position = end;
        }
        assert!(segment.offset_index.pending_bytes() > 0);
        assert!(segment.time_index.pending_bytes() > 0);
        assert!(
            index_bytes(dir, INDEX_EXTENSION) > 0,
            "some entries reached the file"
        );
        // Lookups see the queued entries.
        let last = headers.last().unwrap();
        let found = segment.offset_index.lookup(last.last_offset());
        assert_eq!(found.offset, last.last_offset());
        let newest = segment.time_index.last_entry().unwrap();
        assert_eq!(newest.timestamp_ms, last.max_timestamp);
        assert_lookups(&segment, &segment.state);
        segment
    }

    fn index_bytes(dir: &Path, extension: &str) -> u64 {
        fs::metadata(segment_file(dir, 0, extension)).unwrap().len()
    }

    /// Every offset and every timestamp of `appended_one_by_one`'s batches is found.
    fn assert_lookups(segment: &Segment, before: &SegmentState) {
        assert_eq!(segment.state.size_bytes, before.size_bytes);
        assert_eq!(segment.next_offset(), CRASH_BATCHES as i64);
        assert_eq!(segment.max_timestamp(), before.max_timestamp);
        for offset in 0..CRASH_BATCHES as i64 {
            let (_, header) = segment.find_batch(offset).unwrap().unwrap();
            assert_eq!(header.base_offset, offset);
            let found = segment.offset_for_timestamp(1_000 + offset).unwrap();
            let found = found.unwrap();
            assert_eq!((found.offset, found.timestamp_ms), (offset, 1_000 + offset));
        }
        assert!(segment.find_batch(CRASH_BATCHES as i64).unwrap().is_none());
        assert!(segment.offset_for_timestamp(i64::MAX).unwrap().is_none());
    }

    /// One batch at `offset` whose record has `timestamp_ms`.
    fn batch_at(offset: i64, timestamp_ms: i64) -> (BytesMut, Vec<BatchHeader>) {
        let mut batch = encode_batch_sized(&[timestamp_ms], Compression::None, 100);
        batch::stamp_batch(&mut batch, offset, 0, None);
        validated(BytesMut::from(&batch[..]))
    }

    fn append_at(segment: &mut Segment, offset: i64, timestamp_ms: i64, interval: u32) -> bool {
        let (records, headers) = batch_at(offset, timestamp_ms);
        (segment.append(&[IoSlice::new(&records)], &headers, interval)).is_ok()
    }

    #[test]
    fn a_failed_index_write_takes_back_exactly_the_appends_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0, 0).unwrap();
        // 341 time entries queued (the first batch earns none): 4,092 bytes, one entry
        // short of a write.
        for offset in 0..342 {
            assert!(append_at(&mut segment, offset, 1_000 + offset, 0));
        }
        assert_eq!(segment.time_index.pending_bytes(), 341 * 12);
        // A batch that earns no entry raises the max timestamp; the next one ties it, so
        // its time entry names the earlier batch's offset, and its entries cross a page.
        assert!(append_at(&mut segment, 342, 5_000, u32::MAX));
        segment.offset_index.reopen_for_test(false);
        segment.time_index.reopen_for_test(false);
        let before = segment.state;
        assert!(
            !append_at(&mut segment, 343, 5_000, 0),
            "the index write fails"
        );
        assert_eq!(segment.next_offset(), before.next_offset);
        assert_eq!(segment.state.size_bytes, before.size_bytes);
        assert_eq!(
            (segment.offset_index.len(), segment.time_index.len()),
            (341, 341)
        );
        // Writable again, the retried append earns the same entries (it panicked on the
        // time entry left behind when the take-back cut by offset).
        segment.offset_index.reopen_for_test(true);
        segment.time_index.reopen_for_test(true);
        assert!(append_at(&mut segment, 343, 5_000, 0));
        let tied = TimestampOffset {
            timestamp_ms: 5_000,
            offset: 342,
        };
        assert_eq!(segment.time_index.last_entry(), Some(tied));
        assert_eq!(segment.offset_index.last_entry().unwrap().offset, 343);
        segment.seal().unwrap();
        // The files hold exactly what memory holds, no stale tail of the failed write.
        assert_eq!(index_bytes(dir.path(), TIME_INDEX_EXTENSION), 342 * 12);
        assert_eq!(index_bytes(dir.path(), INDEX_EXTENSION), 342 * 8);
        drop(segment);
        let reopened = Segment::open(dir.path(), 0, 0).unwrap();
        assert_eq!(reopened.next_offset(), 344);
        assert_eq!(reopened.max_timestamp(), Some(tied));
        let found = reopened.offset_for_timestamp(4_000).unwrap().unwrap();
        assert_eq!((found.offset, found.timestamp_ms), (342, 5_000));
    }

    #[test]
    fn dropped_without_flush_reopens_from_the_written_entries() {
        let dir = tempfile::tempdir().unwrap();
        let before = appended_one_by_one(dir.path()).state;
        // The time index's file never covers less than the offset index's.
        let offsets_written = index_bytes(dir.path(), INDEX_EXTENSION) / 8;
        let times_written = index_bytes(dir.path(), TIME_INDEX_EXTENSION) / 12;
        assert!(times_written >= offsets_written);
        let mut reopened = Segment::open(dir.path(), 0, 0).unwrap();
        assert_lookups(&reopened, &before);
        // Appends go on after the reopen and index again; a flush writes everything.
        let (records, headers) = stamped_batches(1, CRASH_BATCHES as i64);
        reopened
            .append(&[IoSlice::new(&records)], &headers, 0)
            .unwrap();
        let (position, _) = reopened.find_batch(CRASH_BATCHES as i64).unwrap().unwrap();
        assert_eq!(position, before.size_bytes);
        reopened.flush().unwrap();
        drop(reopened);
        let mut flushed = Segment::open(dir.path(), 0, 0).unwrap();
        assert_eq!(flushed.next_offset(), CRASH_BATCHES as i64 + 1);
        flushed.truncate_to(CRASH_BATCHES as i64).unwrap();
        assert_lookups(&flushed, &before);
    }

    #[test]
    fn dropped_between_the_two_index_writes_reopens_consistently() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = appended_one_by_one(dir.path());
        let before = segment.state;
        // A crash after the time index got its entries, before the offset index did.
        segment.time_index.write_pending().unwrap();
        drop(segment);
        let reopened = Segment::open(dir.path(), 0, 0).unwrap();
        assert_lookups(&reopened, &before);
    }

    #[test]
    fn dropped_without_flush_recovers_by_scan() {
        let dir = tempfile::tempdir().unwrap();
        let before = appended_one_by_one(dir.path()).state;
        let recovered = crate::log::recovery::recover_segment(dir.path(), 0, 0, 0).unwrap();
        assert_lookups(&recovered, &before);
        // The rebuilt entries are in the files at once: one per batch but the first.
        let entries = CRASH_BATCHES as u64 - 1;
        assert_eq!(index_bytes(dir.path(), INDEX_EXTENSION), 8 * entries);
        assert_eq!(index_bytes(dir.path(), TIME_INDEX_EXTENSION), 12 * entries);
    }

    #[test]
    fn find_batch_uses_last_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0, 0).unwrap();
        let (records, headers) = stamped_batches(5, 0);
        segment
            .append(&[IoSlice::new(&records)], &headers, 0)
            .unwrap();
        let size = headers[0].total_bytes() as u64;
        for offset in 0..5 {
            let (position, header) = segment.find_batch(offset).unwrap().unwrap();
            assert_eq!(
                (position, header.base_offset),
                (offset as u64 * size, offset)
            );
        }
        assert!(segment.find_batch(5).unwrap().is_none());
    }

    /// One batch a walk test appended: where it starts, its header, and the offset and
    /// timestamp of each of its records, for linear scans to compare the walks with.
    struct Stored {
        position: u64,
        header: BatchHeader,
        records: Vec<RecordTimestamp>,
    }

    /// Batches built for a walk test, concatenated as one append would take them.
    #[derive(Default)]
    struct WalkLog {
        records: BytesMut,
        stored: Vec<Stored>,
        next_offset: i64,
    }

    impl WalkLog {
        /// A one-record batch of exactly `total_bytes` after `gap` unused offsets.
        fn push_total(&mut self, gap: i64, timestamp_ms: i64, total_bytes: usize) {
            self.push(
                gap,
                &[timestamp_ms],
                batch_of_total(timestamp_ms, total_bytes),
            );
        }

        /// A batch of one record per timestamp, values of `value_bytes`.
        fn push_records(&mut self, gap: i64, timestamps: &[i64], value_bytes: usize) {
            let batch = encode_batch_sized(timestamps, Compression::None, value_bytes);
            self.push(gap, timestamps, batch);
        }

        fn push(&mut self, gap: i64, timestamps: &[i64], mut batch: BytesMut) {
            let base_offset = self.next_offset + gap;
            batch::stamp_batch(&mut batch, base_offset, 0, None);
            let (batch, headers) = validated(batch);
            let header = headers[0];
            assert_eq!(
                header.last_offset(),
                base_offset + timestamps.len() as i64 - 1
            );
            let records = (timestamps.iter().enumerate())
                .map(|(index, &timestamp_ms)| RecordTimestamp {
                    offset: base_offset + index as i64,
                    timestamp_ms,
                })
                .collect();
            self.stored.push(Stored {
                position: self.records.len() as u64,
                header,
                records,
            });
            self.records.extend_from_slice(&batch);
            self.next_offset = header.last_offset() + 1;
        }

        fn headers(&self) -> Vec<BatchHeader> {
            self.stored.iter().map(|stored| stored.header).collect()
        }

        /// A new segment at base offset 0 holding these batches, appended at once.
        fn segment(&self, dir: &Path, index_interval_bytes: u32) -> Segment {
            let mut segment = Segment::create(dir, 0, 0).unwrap();
            let pieces = [IoSlice::new(&self.records)];
            (segment.append(&pieces, &self.headers(), index_interval_bytes)).unwrap();
            segment
        }
    }

    /// A one-record batch of exactly `total_bytes`: the value is resized until the encoding
    /// lands there (the length varints make the overhead depend on the size).
    fn batch_of_total(timestamp_ms: i64, total_bytes: usize) -> BytesMut {
        let mut value_bytes = total_bytes;
        for _ in 0..4 {
            let batch = encode_batch_sized(&[timestamp_ms], Compression::None, value_bytes);
            if batch.len() == total_bytes {
                return batch;
            }
            value_bytes = (value_bytes + total_bytes)
                .checked_sub(batch.len())
                .expect("the batch can be this small");
        }
        panic!("no one-record batch is {total_bytes} bytes");
    }

    /// Every lookup that walks headers agrees with a linear scan of what `log` appended:
    /// `find_batch` and `visit_headers` from every offset (gaps and the end included), and
    /// `offset_for_timestamp` for every record's timestamp, its neighbours and both ends.
    fn assert_walks_match(segment: &Segment, log: &WalkLog) {
        assert_eq!(segment.size_bytes(), log.records.len() as u64);
        assert_eq!(segment.next_offset(), log.next_offset);
        for offset in 0..=log.next_offset {
            let first = (log.stored.iter())
                .position(|stored| stored.header.last_offset() >= offset)
                .unwrap_or(log.stored.len());
            let expected = (log.stored.get(first)).map(|stored| (stored.position, stored.header));
            assert_eq!(
                segment.find_batch(offset).unwrap(),
                expected,
                "find {offset}"
            );
            // Headers carry their lengths: equal headers in order are equal positions.
            let mut visited = Vec::new();
            (segment.visit_headers(offset, &mut |header| visited.push(*header))).unwrap();
            assert_eq!(visited, log.headers()[first..], "visit from {offset}");
        }
        let records: Vec<RecordTimestamp> = (log.stored.iter())
            .flat_map(|stored| stored.records.iter().copied())
            .collect();
        let mut targets = vec![i64::MIN, -1, 0, i64::MAX];
        for record in &records {
            let timestamp_ms = record.timestamp_ms;
            targets.extend([timestamp_ms - 1, timestamp_ms, timestamp_ms + 1]);
        }
        for target in targets {
            let expected = (records.iter()).find(|record| record.timestamp_ms >= target);
            let found = segment.offset_for_timestamp(target).unwrap();
            assert_eq!(found.as_ref(), expected, "timestamp {target}");
        }
    }

    /// xorshift64*, so that the mixed segments are the same on every run.
    struct Mix(u64);

    impl Mix {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) % bound
        }
    }

    /// Batch sizes, in bytes in all, that take each path of the walk: many batches to a
    /// window; 3,541, whose successor's header straddles a window's end when it starts at
    /// 525; 4,034 and 4,035, whose successor's header still fits a window started at the
    /// batch; 4,036-4,095, where it does not and only a header is read next; a window
    /// exactly and just over; and a batch of several windows.
    const MIXED_TOTALS: [usize; 12] = [
        120, 175, 900, 3_541, 4_034, 4_035, 4_036, 4_060, 4_095, 4_096, 4_097, 9_000,
    ];

    /// `batches` batches of sizes drawn from [`MIXED_TOTALS`] and of three records, some
    /// after a gap in offsets, timestamps mostly rising with some from a clock behind and
    /// records out of order inside a batch.
    fn mixed_log(seed: u64, batches: usize) -> WalkLog {
        let mut mix = Mix(seed);
        let mut log = WalkLog::default();
        let mut clock_ms = 1_000;
        for _ in 0..batches {
            let gap = match mix.below(6) {
                0 => 1 + mix.below(3) as i64,
                _ => 0,
            };
            clock_ms += 1 + mix.below(5) as i64;
            let timestamp_ms = match mix.below(8) {
                0 => clock_ms - 40,
                _ => clock_ms,
            };
            let pick = mix.below(MIXED_TOTALS.len() as u64 + 2) as usize;
            match MIXED_TOTALS.get(pick) {
                Some(&total) => log.push_total(gap, timestamp_ms, total),
                None => {
                    let timestamps = [timestamp_ms + 2, timestamp_ms, timestamp_ms + 1];
                    log.push_records(gap, &timestamps, 40);
                }
            }
        }
        log
    }

    /// Segments mixing small batches, window-crossing ones, ones larger than a window and
    /// ones in the 4,036-4,095 band, indexed sparsely, densely or not at all, and reopened
    /// from their index files: every walk finds what a linear scan of the batches finds.
    #[test]
    fn header_walks_match_linear_scans_over_mixed_sizes() {
        for seed in 1..=5u64 {
            let log = mixed_log(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 40);
            for interval in [u32::MAX, 4_096, 1_000, 0] {
                let dir = tempfile::tempdir().unwrap();
                let mut segment = log.segment(dir.path(), interval);
                assert_walks_match(&segment, &log);
                segment.seal().unwrap();
                drop(segment);
                let reopened = Segment::open(dir.path(), 0, 0).unwrap();
                assert_walks_match(&reopened, &log);
            }
        }
    }

    /// (window start, window length) after each header of a walk from the first batch.
    fn windows_after_each_header(segment: &Segment) -> Vec<(u64, usize)> {
        let mut walk = segment.header_walk();
        let mut windows = Vec::new();
        let mut position = 0;
        while let Some(header) = walk.header_at(position).unwrap() {
            windows.push((walk.window_start, walk.window_len));
            position += header.total_bytes() as u64;
        }
        windows
    }

    /// Batches whose total plus a header's 61 bytes lands under, at and over a window: the
    /// next header is parsed from the same window exactly when it fits in it whole, past
    /// that only a header is read, and either way every walk finds every batch.
    #[test]
    fn header_walks_at_the_large_batch_threshold() {
        let window = HEADER_WINDOW_BYTES;
        for total in [
            4_033, 4_034, 4_035, 4_036, 4_037, 4_094, 4_095, 4_096, 4_097,
        ] {
            let mut log = WalkLog::default();
            log.push_total(0, 1_000, total);
            log.push_total(0, 1_001, 175);
            log.push_total(0, 1_002, total);
            log.push_total(0, 1_003, total);
            log.push_total(0, 1_004, 6_000);
            log.push_total(0, 1_005, total);
            log.push_records(0, &[1_007, 1_006], 100);
            let dir = tempfile::tempdir().unwrap();
            let segment = log.segment(dir.path(), u32::MAX);
            let shares = total + BATCH_HEADER_BYTES <= window;
            assert_eq!(shares, total <= 4_035);
            let mut walk = segment.header_walk();
            assert_eq!(walk.header_at(0).unwrap(), Some(log.stored[0].header));
            assert_eq!((walk.window_start, walk.window_len), (0, window));
            assert_eq!(walk.after_large_batch, !shares);
            let second = log.stored[1].position;
            assert_eq!(walk.header_at(second).unwrap(), Some(log.stored[1].header));
            let expected = match shares {
                true => (0, window),
                false => (second, BATCH_HEADER_BYTES),
            };
            assert_eq!((walk.window_start, walk.window_len), expected, "{total}");
            // After a small batch the walk reads a whole window again.
            let third = log.stored[2].position;
            assert_eq!(walk.header_at(third).unwrap(), Some(log.stored[2].header));
            assert_eq!((walk.window_start, walk.window_len), (third, window));
            drop(segment);
            for interval in [u32::MAX, 4_096, 0] {
                let dir = tempfile::tempdir().unwrap();
                assert_walks_match(&log.segment(dir.path(), interval), &log);
            }
        }
    }

    /// Ten batches laid out so that a walk from byte 0 reads their headers through every
    /// path, as [`CORRUPT_LAYOUT_WINDOWS`] lists.
    fn corrupt_layout() -> WalkLog {
        let mut log = WalkLog::default();
        let totals = [175, 175, 175, 3_541, 175, 6_000, 175, 175, 175, 175];
        for (index, total) in totals.into_iter().enumerate() {
            log.push_total(0, 1_000 + index as i64, total);
        }
        log
    }

    /// The window after each header of [`corrupt_layout`]: batch 0 starts a window, 1-3
    /// reuse it, batch 4's header (at 4,066) straddles its end and starts another, 5 reuses
    /// that one, 6 follows a batch larger than a window and reads only its header, 7 starts
    /// a window cut short by the end of the log, and 8 and 9 reuse it.
    const CORRUPT_LAYOUT_WINDOWS: [(u64, usize); 10] = [
        (0, 4_096),
        (0, 4_096),
        (0, 4_096),
        (0, 4_096),
        (4_066, 4_096),
        (4_066, 4_096),
        (10_241, 61),
        (10_416, 525),
        (10_416, 525),
        (10_416, 525),
    ];

    /// Ways a header goes bad on disk, each one the walk must notice by itself.
    #[derive(Clone, Copy, Debug)]
    enum HeaderDamage {
        /// A batch length below the header's own size: the header does not parse.
        LengthBelowHeader,
        /// A batch length far past the end of the log.
        LengthHuge,
        /// A batch length one byte past the end of the log.
        LengthOneOver,
        /// A batch length leaving too few bytes after the batch for another header (only
        /// for the last batch: elsewhere the next "header" would be inside a record).
        LengthShortOfEnd,
        /// A magic other than v2, the only format stored: the layout means nothing then.
        Magic,
    }

    /// Damage the header of `log`'s batch `index` in the segment's file, with a write of
    /// its own as a disk would.
    fn damage_header(segment: &Segment, log: &WalkLog, index: usize, damage: HeaderDamage) {
        let stored = &log.stored[index];
        let remaining = log.records.len() as u64 - stored.position;
        // `batch_length` leaves out the 12 bytes of base offset and length.
        let batch_length: i32 = match damage {
            HeaderDamage::LengthBelowHeader => 0,
            HeaderDamage::LengthHuge => i32::MAX,
            HeaderDamage::LengthOneOver => (remaining + 1 - 12) as i32,
            HeaderDamage::LengthShortOfEnd => (remaining - 30 - 12) as i32,
            HeaderDamage::Magic => 0,
        };
        let file = OpenOptions::new()
            .write(true)
            .open(segment.log_path())
            .unwrap();
        let (bytes, at) = match damage {
            HeaderDamage::Magic => (vec![0x7f], 16),
            _ => (batch_length.to_be_bytes().to_vec(), 8),
        };
        (file.write_at(&bytes, stored.position + at)).unwrap();
    }

    #[track_caller]
    fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, LogError>, what: &str) {
        match result {
            Err(LogError::Corrupt(_)) => {}
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }

    /// A damaged header fails every read that walks to it with `Corrupt`, whichever way
    /// its bytes were read, and every read that stops before it still answers rightly.
    fn assert_damage_is_corrupt(index: usize, damage: HeaderDamage) {
        let log = corrupt_layout();
        let dir = tempfile::tempdir().unwrap();
        // No index entries: every walk starts at byte 0 and passes the earlier headers.
        let segment = log.segment(dir.path(), u32::MAX);
        damage_header(&segment, &log, index, damage);
        let what = format!("batch {index} {damage:?}");
        let stored = &log.stored[index];
        // The walk reads up to the damaged header through the expected windows, and the
        // header is refused from the window the clean walk parsed it from.
        let mut walk = segment.header_walk();
        for earlier in &log.stored[..index] {
            let header = walk.header_at(earlier.position).unwrap();
            assert_eq!(header, Some(earlier.header), "{what}");
        }
        let damaged = walk.header_at(stored.position);
        // The last batch's short length is only seen at the header after it.
        let damaged = match damage {
            HeaderDamage::LengthShortOfEnd => {
                let header = damaged.unwrap().unwrap();
                walk.header_at(stored.position + header.total_bytes() as u64)
            }
            _ => {
                let window = (walk.window_start, walk.window_len);
                assert_eq!(window, CORRUPT_LAYOUT_WINDOWS[index], "{what}");
                damaged
            }
        };
        assert_corrupt(damaged, &what);
        // The public reads.
        let offsets_before = match index {
            0 => 0,
            _ => log.stored[index - 1].header.last_offset() + 1,
        };
        for offset in 0..offsets_before {
            let first = log.stored.iter().find(|s| s.header.last_offset() >= offset);
            let expected = first.map(|s| (s.position, s.header));
            assert_eq!(segment.find_batch(offset).unwrap(), expected, "{what}");
        }
        assert_corrupt(segment.find_batch(log.next_offset), &what);
        let mut visited = Vec::new();
        let visit = segment.visit_headers(0, &mut |header| visited.push(*header));
        assert_corrupt(visit, &what);
        // The last batch's short length is seen only after its header was visited: the
        // caller gets the error and must drop what it collected.
        let visited_count = match damage {
            HeaderDamage::LengthShortOfEnd => index + 1,
            _ => index,
        };
        assert_eq!(
            visited.len(),
            visited_count,
            "{what}: visits up to the damage"
        );
        assert_eq!(visited[..index], log.headers()[..index], "{what}");
        let limits = ReadLimits {
            upper_bound: i64::MAX,
            max_bytes: usize::MAX,
            min_one_batch: true,
        };
        assert_corrupt(segment.slice_from(0, &limits, 0), &what);
        // The timestamps rise with the batches, so this walks to the damaged batch.
        let timestamp_ms = stored.records[0].timestamp_ms;
        assert_corrupt(segment.offset_for_timestamp(timestamp_ms), &what);
        assert_corrupt(segment.offset_for_timestamp(i64::MAX), &what);
        drop(segment);
        // Opening reads the headers after the last offset index entry: here, all of them.
        assert_corrupt(Segment::open(dir.path(), 0, 0), &what);
    }

    /// A header damaged on disk is `Corrupt` for every read that walks to it: as the first
    /// header of a fresh window, as one parsed from a window read for earlier headers, as
    /// one straddling a window's end, as the header-only read after a large batch, and in
    /// a window cut short by the end of the log.
    #[test]
    fn damaged_headers_are_corrupt_on_every_walk_path() {
        let log = corrupt_layout();
        let dir = tempfile::tempdir().unwrap();
        let segment = log.segment(dir.path(), u32::MAX);
        assert_eq!(windows_after_each_header(&segment), CORRUPT_LAYOUT_WINDOWS);
        drop(segment);
        let damages = [
            HeaderDamage::LengthBelowHeader,
            HeaderDamage::LengthHuge,
            HeaderDamage::LengthOneOver,
            HeaderDamage::Magic,
        ];
        for index in [0, 2, 4, 5, 6, 7, 9] {
            for damage in damages {
                assert_damage_is_corrupt(index, damage);
            }
        }
        assert_damage_is_corrupt(9, HeaderDamage::LengthShortOfEnd);
    }
}
