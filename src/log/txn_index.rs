//! The aborted-transaction index of one segment: `<base offset>.txnindex` beside its
//! `.log`, Kafka's `TransactionIndex`. One entry per abort marker in the segment, in log
//! order; read_committed fetches collect the entries overlapping what they return, so the
//! client can drop the aborted records.
//!
//! Entry layout (Kafka's `AbortedTxn`, big-endian, 34 bytes):
//!
//! ```text
//! version i16 = 0 | producer_id i64 | first_offset i64 | last_offset i64
//! | last_stable_offset i64
//! ```
//!
//! No checksum, as in Kafka: the index is derived data. Its entries below the newest
//! producer snapshot are made durable before that snapshot can exist (a roll fsyncs the
//! sealed segment's index before the snapshot is written; clean shutdown flushes first;
//! a rebuild, on open or after a truncation, fsyncs what it rewrote in closed segments at
//! once, since nothing flushes them later), the directory too when an index file was
//! created or removed (a missing file reads as an empty index, never as a lost one); the
//! entries at or above the snapshot's offset are dropped and rebuilt from the log's
//! markers on every open (`Partition::open`), so a torn or stale tail after a crash is never
//! trusted. A short final entry (a torn append) is cut off on load.
//!
//! The entries stay on disk, as in Kafka: memory holds a fixed-size [`Summary`] per
//! segment (a client aborting without end must not grow the broker without bound), and
//! reads `pread` the file. The summary answers the common read_committed fetch (no abort in
//! its range) without touching the file; otherwise a binary search by marker offset finds
//! the first entry that can overlap and the read goes forward in chunks.
//!
//! A failed write leaves its entries in a bounded in-memory tail, written at the next
//! append or flush; past [`UNWRITTEN_ENTRIES_MAX`] the index is *lacking* (entries are
//! missing) and every read and flush fails until a truncation below the first lost entry
//! or a reopen rebuilds it: a read_committed consumer that misses an abort sees aborted
//! data, so a lacking index is never answered from.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::log::error::LogError;

pub(crate) const TXN_INDEX_EXTENSION: &str = "txnindex";
pub const ABORTED_TXN_BYTES: usize = 34;
const ENTRY_VERSION: i16 = 0;
/// Entries whose write failed that memory keeps for the next attempt; past this the index
/// is lacking (34 KiB of entries at most per segment).
pub(crate) const UNWRITTEN_ENTRIES_MAX: usize = 1024;
/// Entries read per `pread` when a read walks the file (8.5 KiB).
const READ_CHUNK_ENTRIES: usize = 256;

/// One aborted transaction: `producer_id`'s records in `first_offset..=last_offset` (the
/// abort marker is `last_offset`) are aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The partition's last stable offset right after the marker was appended.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    pub fn encode(&self) -> [u8; ABORTED_TXN_BYTES] {
        let mut bytes = [0u8; ABORTED_TXN_BYTES];
        bytes[0..2].copy_from_slice(&ENTRY_VERSION.to_be_bytes());
        bytes[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        bytes[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        bytes[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        bytes[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8; ABORTED_TXN_BYTES]) -> Result<AbortedTxn, String> {
        let i64_at = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        let version = i16::from_be_bytes([bytes[0], bytes[1]]);
        if version != ENTRY_VERSION {
            return Err(format!(
                "unknown aborted-transaction entry version {version}"
            ));
        }
        let entry = AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        };
        if entry.first_offset < 0 || entry.first_offset > entry.last_offset {
            return Err(format!("aborted-transaction entry {entry:?}"));
        }
        Ok(entry)
    }

    /// Whether the transaction has records in `start..end` (Kafka's
    /// `collectAbortedTxns`: last offset at or after the start, first offset before the end).
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.last_offset >= start && self.first_offset < end
    }
}

/// Writes `entries` as a whole index file at `path` and fsyncs it: the cleaner's copy of a
/// cleaned segment's index, renamed into place later (an empty file is an empty index).
pub(crate) fn write_index_file(path: &std::path::Path, entries: &[AbortedTxn]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(entries.len() * ABORTED_TXN_BYTES);
    for entry in entries {
        bytes.extend_from_slice(&entry.encode());
    }
    let mut file = File::create(path)?;
    file.write_all(&bytes)?;
    file.sync_all()
}

/// What memory keeps of a segment's entries, whatever their number: enough to answer a
/// read that meets no entry without touching the file. Kept exact: recomputed from the
/// file after a truncation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Summary {
    /// Entries, in the file and in the unwritten tail.
    count: u64,
    /// The last entry's marker offset (entries are in marker order).
    last_marker: i64,
    min_first_offset: i64,
    max_stable_offset: i64,
    /// Some entry's last stable offset is past its marker + 1. Never so for entries this
    /// broker writes (the last stable offset after a marker is at most the offset after
    /// it); if an entry says so, reads scan from the first entry as Kafka does, since the
    /// skip below relies on it.
    stable_past_marker: bool,
}

impl Summary {
    const EMPTY: Summary = Summary {
        count: 0,
        last_marker: i64::MIN,
        min_first_offset: i64::MAX,
        max_stable_offset: i64::MIN,
        stable_past_marker: false,
    };

    fn add(&mut self, entry: &AbortedTxn) {
        self.count += 1;
        self.last_marker = entry.last_offset;
        self.min_first_offset = self.min_first_offset.min(entry.first_offset);
        self.max_stable_offset = self.max_stable_offset.max(entry.last_stable_offset);
        self.stable_past_marker |= entry.last_stable_offset > entry.last_offset.saturating_add(1);
    }
}

#[cfg(test)]
thread_local! {
    /// Reads of index files on this thread, for tests that count them.
    pub(crate) static FILE_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Whether a flush found a file created or removed in its directory since the last one:
/// durable only once the directory is fsynced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DirectoryChange(pub(crate) bool);

impl std::ops::BitOrAssign for DirectoryChange {
    fn bitor_assign(&mut self, other: DirectoryChange) {
        self.0 |= other.0;
    }
}

/// One segment's index: the file (created at the first abort), a summary, and the entries
/// a failed write left unwritten.
#[derive(Debug)]
pub(crate) struct TxnIndex {
    path: PathBuf,
    /// Open while the file exists; reads `pread` through it, so a reader needs `&self`.
    file: Option<File>,
    /// Whole entries in the file; anything past them is the remains of a failed write.
    on_disk: u64,
    summary: Summary,
    /// Entries after the file's whose write failed, in order (at most
    /// [`UNWRITTEN_ENTRIES_MAX`]).
    unwritten: Vec<AbortedTxn>,
    /// The marker offset of the first entry dropped past the bound: the index lacks it
    /// and maybe later ones until a truncation at or below it.
    lost_from: Option<i64>,
    /// Written since the last fsync.
    dirty: bool,
    /// The file was created or removed since the last flush: that lasts only once the
    /// directory is fsynced, which [`TxnIndex::flush`] leaves to its caller.
    directory_changed: bool,
}

impl TxnIndex {
    fn empty(path: PathBuf) -> TxnIndex {
        TxnIndex {
            path,
            file: None,
            on_disk: 0,
            summary: Summary::EMPTY,
            unwritten: Vec::new(),
            lost_from: None,
            dirty: false,
            directory_changed: false,
        }
    }

    /// A new segment's index: any file left at the path (an earlier segment at the same
    /// base, gone in a crash) is removed.
    pub(crate) fn create(path: PathBuf) -> io::Result<TxnIndex> {
        super::segment::remove_if_present(&path)?;
        Ok(TxnIndex::empty(path))
    }

    /// Loads the index at `path` (none: empty), checking every entry once (a chunk at a
    /// time: memory stays bounded) for the summary. A short final entry is cut off; an
    /// entry that does not decode or is out of marker order is `Corrupt`.
    pub(crate) fn load(path: PathBuf) -> Result<TxnIndex, LogError> {
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(TxnIndex::empty(path));
            }
            Err(error) => return Err(error.into()),
        };
        let bytes = file.metadata()?.len();
        let whole = bytes / ABORTED_TXN_BYTES as u64;
        let mut index = TxnIndex::empty(path);
        index.on_disk = whole;
        index.file = Some(file);
        if whole * ABORTED_TXN_BYTES as u64 != bytes {
            tracing::warn!(file = %index.path.display(), "cutting a torn aborted-transaction entry");
            index.cut_file(whole)?;
        }
        index.summary = index.summarize()?;
        Ok(index)
    }

    /// How many entries the index holds.
    pub(crate) fn len(&self) -> u64 {
        self.summary.count
    }

    /// Appends one entry (not fsynced: see [`TxnIndex::flush`] and the module comment).
    /// If the write fails, memory keeps the entry for the next append or flush, up to
    /// [`UNWRITTEN_ENTRIES_MAX`]; past it the entry is lost and the index lacking.
    pub(crate) fn append(&mut self, entry: AbortedTxn) -> Result<(), LogError> {
        assert!(
            self.summary.count == 0 || self.summary.last_marker < entry.last_offset,
            "aborted transactions are indexed in marker order"
        );
        if self.lost_from.is_some() {
            return Err(self.lacking());
        }
        self.summary.add(&entry);
        self.dirty = true;
        if self.unwritten.is_empty() {
            // The usual path: no tail waits, nothing is kept in memory.
            let written = self.write_at_end(&entry.encode(), 1);
            if written.is_err() {
                self.unwritten.push(entry);
            }
            return Ok(written?);
        }
        self.unwritten.push(entry);
        match self.write_unwritten() {
            Ok(()) => Ok(()),
            Err(error) => {
                if self.unwritten.len() > UNWRITTEN_ENTRIES_MAX {
                    self.unwritten.pop();
                    self.lost_from = Some(entry.last_offset);
                    tracing::error!(
                        file = %self.path.display(),
                        marker = entry.last_offset,
                        "aborted-transaction index lacks entries until it is rebuilt"
                    );
                }
                Err(error.into())
            }
        }
    }

    /// Writes the unwritten tail after the file's entries; memory lets go of it.
    fn write_unwritten(&mut self) -> io::Result<()> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(self.unwritten.len() * ABORTED_TXN_BYTES);
        for entry in &self.unwritten {
            bytes.extend_from_slice(&entry.encode());
        }
        self.write_at_end(&bytes, self.unwritten.len() as u64)?;
        self.unwritten = Vec::new();
        Ok(())
    }

    /// Writes `count` encoded entries after the file's entries (creating the file at the
    /// first). Positional: what a failed write left is overwritten by the next attempt.
    fn write_at_end(&mut self, bytes: &[u8], count: u64) -> io::Result<()> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            // Whatever a file at the path holds past the entries memory knows is not the
            // index's (the file should not exist here at all): cut before writing after it.
            file.set_len(self.on_disk * ABORTED_TXN_BYTES as u64)?;
            self.file = Some(file);
            self.directory_changed = true;
        }
        let file = self.file.as_ref().expect("opened above");
        file.write_all_at(bytes, self.on_disk * ABORTED_TXN_BYTES as u64)?;
        self.on_disk += count;
        Ok(())
    }

    fn lacking(&self) -> LogError {
        LogError::TxnIndexLacking(format!(
            "{} lacks the aborted transactions from marker offset {} on (writes failed)",
            self.path.display(),
            self.lost_from.unwrap_or(-1)
        ))
    }

    /// Drops the entries whose marker is at or after `offset` (the log is cut there). A
    /// cut at or below the first lost entry ends the index's lacking.
    pub(crate) fn truncate_from(&mut self, offset: i64) -> Result<(), LogError> {
        let kept_on_disk = self.first_on_disk_at_or_after(offset)?;
        let kept_unwritten = match kept_on_disk < self.on_disk {
            true => 0,
            false => self
                .unwritten
                .partition_point(|entry| entry.last_offset < offset),
        };
        let lost_cut = self.lost_from.is_some_and(|lost| offset <= lost);
        if kept_on_disk == self.on_disk && kept_unwritten == self.unwritten.len() && !lost_cut {
            return Ok(());
        }
        // Until the cut and the new summary are both done the index answers nothing: a
        // step failing part way leaves it lacking from `offset` (reads fail; the retried
        // truncation or a reopen rebuilds it), never a summary of entries the file no
        // longer holds, which could end a read_committed fetch's walk too early.
        let lacking_before = self.lost_from;
        self.lost_from = Some(lacking_before.map_or(offset, |lost| lost.min(offset)));
        self.unwritten.truncate(kept_unwritten);
        // Also cuts what a failed write may have left past the kept entries, so a reopen
        // cannot read it as entries.
        self.cut_file(kept_on_disk)?;
        self.summary = self.summarize()?;
        self.lost_from = if lost_cut { None } else { lacking_before };
        Ok(())
    }

    /// Cuts the file to `entries` whole entries (an empty index has no file).
    /// The file changes first, memory after: a failed step leaves memory describing the
    /// file as it still is.
    fn cut_file(&mut self, entries: u64) -> io::Result<()> {
        if entries == 0 && self.unwritten.is_empty() {
            super::segment::remove_if_present(&self.path)?;
            self.file = None;
            self.on_disk = 0;
            self.dirty = false;
            self.directory_changed = true;
            return Ok(());
        }
        if let Some(file) = &self.file {
            file.set_len(entries * ABORTED_TXN_BYTES as u64)?;
            self.dirty = true;
        }
        self.on_disk = entries;
        Ok(())
    }

    /// The summary of every entry, read from the file (checked) and the unwritten tail.
    fn summarize(&self) -> Result<Summary, LogError> {
        let mut summary = Summary::EMPTY;
        self.walk(0, &mut |entry| {
            summary.add(entry);
            true
        })?;
        Ok(summary)
    }

    /// Writes the unwritten tail, then fsyncs what was written since the last fsync.
    /// Returns whether the file was created or removed since the last flush: the caller
    /// fsyncs the directory (once for all the indexes it flushes) for that to last.
    pub(crate) fn flush(&mut self) -> Result<DirectoryChange, LogError> {
        if self.lost_from.is_some() {
            return Err(self.lacking());
        }
        self.write_unwritten()?;
        if self.dirty {
            if let Some(file) = &self.file {
                file.sync_all()?;
            }
            self.dirty = false;
        }
        Ok(DirectoryChange(std::mem::take(&mut self.directory_changed)))
    }

    /// Nothing written, cut, created or removed since the last flush.
    #[cfg(test)]
    pub(crate) fn is_flushed(&self) -> bool {
        !self.dirty && !self.directory_changed && self.unwritten.is_empty()
    }

    /// Kafka's `TransactionIndex.collectAbortedTxns`: pushes the entries with records in
    /// `start..end` (see [`AbortedTxn::overlaps`]) in marker order, and says whether the
    /// walk is complete: an entry's last stable offset reached `end`, so no later entry,
    /// here or in a later segment, can start below `end`.
    ///
    /// Kafka walks from the first entry. An entry whose marker is below `start` has a last
    /// stable offset of at most `start` (`Summary::stable_past_marker`), so when
    /// `start < end` it neither overlaps nor stops the walk: the walk starts at the first
    /// marker at or after `start`, found by binary search. The summary answers, without
    /// reading, a segment whose markers are all below `start` or whose transactions all
    /// start at or after `end`.
    pub(crate) fn collect(
        &self,
        start: i64,
        end: i64,
        found: &mut Vec<AbortedTxn>,
    ) -> Result<bool, LogError> {
        if self.lost_from.is_some() {
            return Err(self.lacking());
        }
        let summary = &self.summary;
        if summary.count == 0 {
            return Ok(false);
        }
        let ordinary = start < end && !summary.stable_past_marker;
        if ordinary && summary.last_marker < start {
            return Ok(false);
        }
        if summary.min_first_offset >= end {
            return Ok(summary.max_stable_offset >= end);
        }
        let from = match ordinary {
            true => self.first_on_disk_at_or_after(start)?,
            false => 0,
        };
        let mut complete = false;
        self.walk(from, &mut |entry| {
            if entry.overlaps(start, end) {
                found.push(*entry);
            }
            complete = entry.last_stable_offset >= end;
            !complete
        })?;
        Ok(complete)
    }

    /// Every entry, for the cleaner's pass over this segment (one segment's entries in
    /// memory at a time is the cleaner's business; the index keeps none).
    pub(crate) fn entries(&self) -> Result<Vec<AbortedTxn>, LogError> {
        if self.lost_from.is_some() {
            return Err(self.lacking());
        }
        let mut entries = Vec::with_capacity(self.summary.count.min(1 << 20) as usize);
        self.walk(0, &mut |entry| {
            entries.push(*entry);
            true
        })?;
        Ok(entries)
    }

    /// Visits the entries from the file's entry `from` on, then the unwritten tail, while
    /// `visit` returns true. Each entry read is checked: it decodes, and markers rise.
    fn walk(&self, from: u64, visit: &mut dyn FnMut(&AbortedTxn) -> bool) -> Result<(), LogError> {
        let mut previous: Option<i64> = None;
        let mut check = |at: u64, entry: &AbortedTxn| -> Result<(), LogError> {
            if previous.is_some_and(|marker| marker >= entry.last_offset) {
                return Err(self.corrupt(at, "marker offsets out of order"));
            }
            previous = Some(entry.last_offset);
            Ok(())
        };
        let mut buffer = Vec::new();
        let mut at = from;
        while at < self.on_disk {
            let chunk = (self.on_disk - at).min(READ_CHUNK_ENTRIES as u64);
            buffer.resize(chunk as usize * ABORTED_TXN_BYTES, 0);
            self.read_at(at, &mut buffer)?;
            for (i, bytes) in buffer.chunks_exact(ABORTED_TXN_BYTES).enumerate() {
                let index = at + i as u64;
                let entry = self.decode_at(index, bytes)?;
                check(index, &entry)?;
                if !visit(&entry) {
                    return Ok(());
                }
            }
            at += chunk;
        }
        for (i, entry) in self.unwritten.iter().enumerate() {
            check(self.on_disk + i as u64, entry)?;
            if !visit(entry) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The first of the file's entries whose marker is at or after `offset` (`on_disk`
    /// if none), by binary search: entries are in marker order.
    fn first_on_disk_at_or_after(&self, offset: i64) -> Result<u64, LogError> {
        let (mut low, mut high) = (0u64, self.on_disk);
        let mut bytes = [0u8; ABORTED_TXN_BYTES];
        while low < high {
            let middle = low + (high - low) / 2;
            self.read_at(middle, &mut bytes)?;
            if self.decode_at(middle, &bytes)?.last_offset < offset {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(low)
    }

    /// Reads whole entries from entry `index` on into `buffer`. A file shorter than the
    /// entries it held is `Corrupt` (it changed under us).
    fn read_at(&self, index: u64, buffer: &mut [u8]) -> Result<(), LogError> {
        #[cfg(test)]
        FILE_READS.with(|reads| reads.set(reads.get() + 1));
        let Some(file) = &self.file else {
            return Err(self.corrupt(index, "no file for a stored entry"));
        };
        match file.read_exact_at(buffer, index * ABORTED_TXN_BYTES as u64) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.corrupt(index, "file shorter than its entries"))
            }
            Err(error) => Err(error.into()),
        }
    }

    fn decode_at(&self, index: u64, bytes: &[u8]) -> Result<AbortedTxn, LogError> {
        let bytes: &[u8; ABORTED_TXN_BYTES] = bytes
            .try_into()
            .map_err(|_| self.corrupt(index, "short entry"))?;
        AbortedTxn::decode(bytes).map_err(|why| self.corrupt(index, &why))
    }

    fn corrupt(&self, index: u64, why: &str) -> LogError {
        LogError::Corrupt(format!("{} entry {index}: {why}", self.path.display()))
    }

    pub(crate) fn delete_file(&self) -> io::Result<()> {
        super::segment::remove_if_present(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_rng::Rng;
    use std::fs;

    fn entry(producer_id: i64, first_offset: i64, last_offset: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset,
            last_offset,
            last_stable_offset: last_offset + 1,
        }
    }

    /// The index as the old in-memory one answered, which is Kafka's walk from the first
    /// entry: the model every read is checked against.
    fn model_collect(entries: &[AbortedTxn], start: i64, end: i64) -> (Vec<AbortedTxn>, bool) {
        let mut found = Vec::new();
        for entry in entries {
            if entry.overlaps(start, end) {
                found.push(*entry);
            }
            if entry.last_stable_offset >= end {
                return (found, true);
            }
        }
        (found, false)
    }

    fn collect(
        index: &TxnIndex,
        start: i64,
        end: i64,
    ) -> Result<(Vec<AbortedTxn>, bool), LogError> {
        let mut found = Vec::new();
        let complete = index.collect(start, end, &mut found)?;
        Ok((found, complete))
    }

    fn model_summary(entries: &[AbortedTxn]) -> Summary {
        let mut summary = Summary::EMPTY;
        entries.iter().for_each(|entry| summary.add(entry));
        summary
    }

    /// Entries as a partition writes them: markers rising, each transaction starting at
    /// most `spread` before its marker, the last stable offset at the first still-open
    /// transaction (at most the marker + 1).
    fn random_entries(rng: &mut Rng, count: usize, spread: u64) -> Vec<AbortedTxn> {
        let mut entries = Vec::with_capacity(count);
        let mut marker = 0i64;
        for _ in 0..count {
            marker += 1 + rng.below(20) as i64;
            let first_offset = (marker - rng.below(spread) as i64).max(0);
            let last_stable_offset = match rng.chance(70) {
                true => marker + 1,
                false => first_offset + rng.below((marker + 1 - first_offset) as u64 + 1) as i64,
            };
            entries.push(AbortedTxn {
                producer_id: rng.below(50) as i64,
                first_offset,
                last_offset: marker,
                last_stable_offset,
            });
        }
        entries
    }

    fn check_ranges(rng: &mut Rng, index: &TxnIndex, model: &[AbortedTxn], queries: usize) {
        let top = model.last().map_or(100, |e| e.last_offset + 100);
        for _ in 0..queries {
            let start = rng.below(top as u64 + 20) as i64 - 10;
            let end = match rng.below(10) {
                0 => start - rng.below(50) as i64,
                1 => i64::MAX,
                2 => start + rng.below(top as u64) as i64,
                _ => start + rng.below(200) as i64,
            };
            assert_eq!(
                collect(index, start, end).unwrap(),
                model_collect(model, start, end),
                "range {start}..{end}"
            );
        }
    }

    /// What a segment's index costs in memory, whatever its entries (the old index held
    /// 32 bytes per entry on the heap besides).
    #[test]
    fn the_index_in_memory_is_small_and_fixed() {
        let size = std::mem::size_of::<TxnIndex>();
        println!(
            "size_of TxnIndex = {size}, Summary = {}",
            std::mem::size_of::<Summary>()
        );
        assert!(size <= 128, "{size}");
    }

    /// A flush says when the file came or went since the last one: its directory entry
    /// then lasts only once the caller fsyncs the directory.
    #[test]
    fn a_flush_reports_the_file_created_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::create(path.clone()).unwrap();
        assert_eq!(
            index.flush().unwrap(),
            DirectoryChange(false),
            "no file yet"
        );
        index.append(entry(1, 0, 5)).unwrap();
        assert!(!index.is_flushed());
        assert_eq!(index.flush().unwrap(), DirectoryChange(true), "created");
        assert!(index.is_flushed());
        index.append(entry(1, 6, 9)).unwrap();
        assert_eq!(index.flush().unwrap(), DirectoryChange(false), "appended");
        index.truncate_from(6).unwrap();
        assert!(!index.is_flushed(), "cut, not fsynced");
        assert_eq!(index.flush().unwrap(), DirectoryChange(false), "cut");
        index.truncate_from(0).unwrap();
        assert!(!path.exists());
        assert_eq!(index.flush().unwrap(), DirectoryChange(true), "removed");
        assert!(index.is_flushed());
    }

    #[test]
    fn entries_are_kafkas_34_bytes_and_round_trip() {
        let aborted = entry(7, 10, 20);
        let bytes = aborted.encode();
        assert_eq!(bytes.len(), 34);
        assert_eq!(&bytes[..2], &[0, 0], "version 0");
        assert_eq!(&bytes[2..10], &7i64.to_be_bytes());
        assert_eq!(AbortedTxn::decode(&bytes), Ok(aborted));
        let mut bad = bytes;
        bad[1] = 1;
        assert!(AbortedTxn::decode(&bad).is_err());
        let backwards = entry(7, 30, 20).encode();
        assert!(AbortedTxn::decode(&backwards).is_err());
    }

    #[test]
    fn append_load_truncate_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::create(path.clone()).unwrap();
        assert!(!path.exists(), "no file until the first abort");
        for (first, last) in [(0, 5), (3, 9), (12, 14)] {
            index.append(entry(1, first, last)).unwrap();
        }
        index.flush().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 3 * 34);
        let loaded = TxnIndex::load(path.clone()).unwrap();
        assert_eq!(loaded.entries().unwrap(), index.entries().unwrap());
        assert_eq!(loaded.summary, index.summary);

        index.truncate_from(9).unwrap();
        assert_eq!(index.entries().unwrap(), [entry(1, 0, 5)]);
        assert_eq!(index.len(), 1);
        assert_eq!(
            TxnIndex::load(path.clone()).unwrap().entries().unwrap(),
            [entry(1, 0, 5)]
        );

        // A crash in the middle of an append leaves a partial entry: it is cut off.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&entry(2, 20, 21).encode()[..10]).unwrap();
        let loaded = TxnIndex::load(path.clone()).unwrap();
        assert_eq!(loaded.entries().unwrap(), [entry(1, 0, 5)]);
        assert_eq!(fs::metadata(&path).unwrap().len(), 34);

        index.truncate_from(0).unwrap();
        assert!(!path.exists(), "an empty index has no file");
        assert!(TxnIndex::load(path).unwrap().entries().unwrap().is_empty());
    }

    #[test]
    fn overlap_is_kafkas_collect_rule() {
        let aborted = entry(1, 10, 20);
        assert!(aborted.overlaps(0, 11));
        assert!(!aborted.overlaps(0, 10), "ends before the first record");
        assert!(aborted.overlaps(20, 30), "the marker is the last offset");
        assert!(!aborted.overlaps(21, 30));
    }

    /// 120k entries against a Vec model: random ranges, then after a reopen, then after
    /// truncations at random offsets.
    #[test]
    fn reads_from_the_file_match_the_walk_from_the_first_entry() {
        let mut rng = Rng::new(0x7478_6e69);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut model = random_entries(&mut rng, 120_000, 400);
        let mut index = TxnIndex::create(path.clone()).unwrap();
        for entry in &model {
            index.append(*entry).unwrap();
        }
        index.flush().unwrap();
        assert_eq!(
            index.unwritten.capacity(),
            0,
            "nothing of the entries in memory"
        );
        assert_eq!(index.summary, model_summary(&model));
        check_ranges(&mut rng, &index, &model, 3000);

        let mut index = TxnIndex::load(path.clone()).unwrap();
        assert_eq!(index.summary, model_summary(&model));
        check_ranges(&mut rng, &index, &model, 1000);

        for _ in 0..5 {
            let top = model.last().map_or(0, |e| e.last_offset + 2);
            let offset = rng.below(top as u64) as i64;
            index.truncate_from(offset).unwrap();
            model.retain(|e| e.last_offset < offset);
            assert_eq!(
                index.summary,
                model_summary(&model),
                "after truncating at {offset}"
            );
            assert_eq!(
                fs::metadata(&path).map_or(0, |m| m.len()),
                model.len() as u64 * 34
            );
            check_ranges(&mut rng, &index, &model, 300);
        }
        let index = TxnIndex::load(path).unwrap();
        assert_eq!(index.entries().unwrap(), model);
    }

    /// Entries whose last stable offset is past their marker (never written by this
    /// broker) make reads walk from the first entry, so the answer stays Kafka's.
    #[test]
    fn a_stable_offset_past_the_marker_reads_from_the_first_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::create(path).unwrap();
        let odd = AbortedTxn {
            last_stable_offset: 1000,
            ..entry(1, 0, 5)
        };
        let model = [odd, entry(2, 8, 20), entry(3, 30, 40)];
        for entry in model {
            index.append(entry).unwrap();
        }
        assert!(index.summary.stable_past_marker);
        // Kafka stops at the first entry: its last stable offset is past the end.
        assert_eq!(collect(&index, 10, 35).unwrap(), (vec![], true));
        let mut rng = Rng::new(3);
        check_ranges(&mut rng, &index, &model, 2000);
    }

    /// A read that the summary answers touches no file: with the file handle gone, it
    /// still answers, while one that needs the file fails.
    #[test]
    fn reads_meeting_no_entry_do_not_read_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::create(path).unwrap();
        for (first, last) in [(100, 110), (105, 120), (130, 140)] {
            index.append(entry(1, first, last)).unwrap();
        }
        index.file = None;
        assert_eq!(
            collect(&index, 141, 500).unwrap(),
            (vec![], false),
            "all markers below"
        );
        // Nothing overlaps, and an entry's last stable offset reaches the end: complete.
        assert_eq!(
            collect(&index, 0, 100).unwrap(),
            (vec![], true),
            "all start at the end"
        );
        assert!(matches!(collect(&index, 0, 101), Err(LogError::Corrupt(_))));
    }

    fn is_corrupt<T>(result: Result<T, LogError>) -> bool {
        match result {
            Err(LogError::Corrupt(why)) => why.contains("00000000000000000000.txnindex"),
            _ => false,
        }
    }

    fn lacking<T>(result: Result<T, LogError>) -> bool {
        matches!(result, Err(LogError::TxnIndexLacking(_)))
    }

    #[test]
    fn a_corrupt_entry_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::create(path.clone()).unwrap();
        for (first, last) in [(0, 5), (3, 9), (12, 14), (15, 20)] {
            index.append(entry(1, first, last)).unwrap();
        }
        let file = OpenOptions::new().write(true).open(&path).unwrap();

        // Changed under a loaded index: the read that meets the entry fails.
        file.write_all_at(&[0, 9], 2 * 34).unwrap();
        assert!(is_corrupt(collect(&index, 10, 13)));
        assert!(is_corrupt(index.entries()));
        assert!(is_corrupt(TxnIndex::load(path.clone())), "unknown version");

        // Markers out of order.
        file.write_all_at(&entry(1, 0, 30).encode(), 2 * 34)
            .unwrap();
        assert!(is_corrupt(index.entries()));
        assert!(is_corrupt(TxnIndex::load(path.clone())));

        // The first offset past the marker.
        file.write_all_at(&entry(1, 12, 14).encode(), 2 * 34)
            .unwrap();
        file.write_all_at(&entry(1, 25, 20).encode(), 3 * 34)
            .unwrap();
        assert!(is_corrupt(TxnIndex::load(path.clone())));

        // A file cut short under the index.
        file.set_len(34).unwrap();
        assert!(is_corrupt(collect(&index, 10, 13)));
    }

    /// Failed writes: memory keeps up to the bound and the next flush writes them; past the
    /// bound reads and flushes fail until a truncation below the first lost entry.
    #[test]
    fn a_failed_truncation_leaves_the_index_lacking_until_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::create(path.clone()).unwrap();
        let mut rng = Rng::new(12);
        let mut model = random_entries(&mut rng, 500, 30);
        for entry in &model {
            index.append(*entry).unwrap();
        }
        // A read-only handle: the cut (set_len) fails.
        index.file = Some(File::open(&path).unwrap());
        let cut_at = model[200].last_offset;
        assert!(matches!(index.truncate_from(cut_at), Err(LogError::Io(_))));
        // Nothing is answered from a summary of entries the cut may have removed.
        assert!(lacking(collect(&index, 0, i64::MAX)));
        assert!(lacking(index.entries()));
        assert!(lacking(index.flush()));
        index.file = Some(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap(),
        );
        index.truncate_from(cut_at).unwrap();
        model.truncate(200);
        assert_eq!(index.summary, model_summary(&model));
        check_ranges(&mut rng, &index, &model, 300);
        index.flush().unwrap();
        assert_eq!(
            TxnIndex::load(path.clone()).unwrap().entries().unwrap(),
            model
        );

        // A cut to nothing whose unlink fails keeps the file (and the handle): the next
        // entry is written over it, not in front of stale entries.
        let dir_mode = std::fs::metadata(dir.path()).unwrap().permissions();
        let mut read_only_dir = dir_mode.clone();
        std::os::unix::fs::PermissionsExt::set_mode(&mut read_only_dir, 0o555);
        std::fs::set_permissions(dir.path(), read_only_dir).unwrap();
        let unlink_failed = index.truncate_from(0);
        std::fs::set_permissions(dir.path(), dir_mode).unwrap();
        if unlink_failed.is_ok() {
            return; // running as root: directory permissions do not stop the unlink
        }
        assert!(lacking(collect(&index, 0, i64::MAX)));
        index.truncate_from(0).unwrap();
        assert!(!path.exists());
        let fresh = model[0];
        index.append(fresh).unwrap();
        index.flush().unwrap();
        assert_eq!(
            TxnIndex::load(path).unwrap().entries().unwrap(),
            vec![fresh]
        );
    }

    #[test]
    fn failed_writes_are_kept_up_to_the_bound_then_the_index_is_lacking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::create(path.clone()).unwrap();
        let mut rng = Rng::new(11);
        let mut model = random_entries(&mut rng, 3 * UNWRITTEN_ENTRIES_MAX, 30);
        index.append(model[0]).unwrap();
        // A read-only handle: every write fails.
        let read_only = || Some(File::open(&path).unwrap());
        let writable = || {
            Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap(),
            )
        };
        index.file = read_only();
        for entry in &model[1..=UNWRITTEN_ENTRIES_MAX] {
            assert!(matches!(index.append(*entry), Err(LogError::Io(_))));
        }
        assert_eq!(index.unwritten.len(), UNWRITTEN_ENTRIES_MAX);
        let written = &model[..=UNWRITTEN_ENTRIES_MAX];
        check_ranges(&mut rng, &index, written, 300);
        assert!(matches!(index.flush(), Err(LogError::Io(_))));
        index.file = writable();
        index.flush().unwrap();
        assert!(index.unwritten.is_empty());
        assert_eq!(
            TxnIndex::load(path.clone()).unwrap().entries().unwrap(),
            written
        );

        // Past the bound.
        index.file = read_only();
        let next = UNWRITTEN_ENTRIES_MAX + 1;
        for entry in &model[next..next + UNWRITTEN_ENTRIES_MAX] {
            assert!(matches!(index.append(*entry), Err(LogError::Io(_))));
        }
        let lost = model[next + UNWRITTEN_ENTRIES_MAX];
        assert!(matches!(index.append(lost), Err(LogError::Io(_))));
        assert!(lacking(collect(&index, 0, i64::MAX)));
        assert!(lacking(index.entries()));
        assert!(lacking(index.flush()));
        assert!(lacking(
            index.append(model[next + UNWRITTEN_ENTRIES_MAX + 1])
        ));
        index.file = writable();
        assert!(lacking(index.flush()), "writable again, still lacking");
        index.truncate_from(lost.last_offset + 1).unwrap();
        assert!(
            lacking(index.flush()),
            "a cut above the lost entry keeps it lacking"
        );

        index.truncate_from(lost.last_offset).unwrap();
        model.truncate(next + UNWRITTEN_ENTRIES_MAX);
        assert_eq!(index.summary, model_summary(&model));
        check_ranges(&mut rng, &index, &model, 300);
        index.flush().unwrap();
        assert_eq!(TxnIndex::load(path).unwrap().entries().unwrap(), model);
    }
}
