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
//! sealed segment's index before the snapshot is written; clean shutdown flushes first);
//! the entries at or above the snapshot's offset are dropped and rebuilt from the log's
//! markers on every open (`Partition::open`), so a torn or stale tail after a crash is never
//! trusted. A short final entry (a torn append) is cut off on load.
//!
//! The entries are also kept in memory: an abort costs 34 bytes per segment it lands in,
//! and a read_committed fetch must not read a file per segment it spans.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::log::error::LogError;

pub(crate) const TXN_INDEX_EXTENSION: &str = "txnindex";
pub const ABORTED_TXN_BYTES: usize = 34;
const ENTRY_VERSION: i16 = 0;

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

/// One segment's index: its entries, in memory and in the file (created at the first).
#[derive(Debug)]
pub(crate) struct TxnIndex {
    path: PathBuf,
    entries: Vec<AbortedTxn>,
    /// Appended since the last fsync.
    dirty: AtomicBool,
    /// A write failed: the file may lack entries memory has; the next flush rewrites it.
    broken: AtomicBool,
}

impl TxnIndex {
    /// A new segment's index: any file left at the path (an earlier segment at the same
    /// base, gone in a crash) is removed.
    pub(crate) fn create(path: PathBuf) -> io::Result<TxnIndex> {
        super::segment::remove_if_present(&path)?;
        Ok(TxnIndex {
            path,
            entries: Vec::new(),
            dirty: AtomicBool::new(false),
            broken: AtomicBool::new(false),
        })
    }

    /// Loads the index at `path` (none: empty). A short final entry is cut off; an entry
    /// that does not decode is `Corrupt`.
    pub(crate) fn load(path: PathBuf) -> Result<TxnIndex, LogError> {
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error.into()),
        };
        let whole = bytes.len() - bytes.len() % ABORTED_TXN_BYTES;
        let mut entries = Vec::with_capacity(whole / ABORTED_TXN_BYTES);
        for chunk in bytes[..whole].chunks_exact(ABORTED_TXN_BYTES) {
            let entry = AbortedTxn::decode(chunk.try_into().expect("exact chunk"))
                .map_err(|why| LogError::Corrupt(format!("{}: {why}", path.display())))?;
            entries.push(entry);
        }
        let mut index = TxnIndex {
            path,
            entries,
            dirty: AtomicBool::new(false),
            broken: AtomicBool::new(false),
        };
        if whole != bytes.len() {
            tracing::warn!(file = %index.path.display(), "cutting a torn aborted-transaction entry");
            index.rewrite()?;
        }
        Ok(index)
    }

    pub(crate) fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    /// Appends one entry (not fsynced: see [`TxnIndex::flush`] and the module comment).
    /// Memory takes it even if the write fails (reads stay right; the next flush rewrites
    /// the file).
    pub(crate) fn append(&mut self, entry: AbortedTxn) -> io::Result<()> {
        assert!(
            self.entries
                .last()
                .is_none_or(|last| last.last_offset < entry.last_offset),
            "aborted transactions are indexed in marker order"
        );
        self.entries.push(entry);
        self.dirty.store(true, Ordering::Relaxed);
        if self.broken.load(Ordering::Relaxed) {
            return self.write_all();
        }
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(&entry.encode()));
        if written.is_err() {
            self.broken.store(true, Ordering::Relaxed);
        }
        written
    }

    /// Writes every entry in memory to the file afresh.
    /// The same writer as the cleaner's copy, fsync included: a rewrite is rare (after a
    /// failed write), so the extra fsync costs little and leaves one implementation.
    fn write_all(&self) -> io::Result<()> {
        write_index_file(&self.path, &self.entries)?;
        self.broken.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Drops the entries whose marker is at or after `offset` (the log is cut there).
    pub(crate) fn truncate_from(&mut self, offset: i64) -> io::Result<()> {
        let kept = self.entries.partition_point(|e| e.last_offset < offset);
        if kept == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(kept);
        self.rewrite()
    }

    /// Writes the file from the entries in memory (an empty index has no file).
    fn rewrite(&mut self) -> io::Result<()> {
        if self.entries.is_empty() {
            self.broken.store(false, Ordering::Relaxed);
            return super::segment::remove_if_present(&self.path);
        }
        if self.broken.load(Ordering::Relaxed) {
            return self.write_all();
        }
        let file = OpenOptions::new().write(true).open(&self.path)?;
        file.set_len((self.entries.len() * ABORTED_TXN_BYTES) as u64)?;
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn flush(&self) -> io::Result<()> {
        if self.broken.load(Ordering::Relaxed) {
            self.write_all()?;
        }
        if self.dirty.load(Ordering::Relaxed) && !self.entries.is_empty() {
            File::open(&self.path)?.sync_all()?;
            self.dirty.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    pub(crate) fn delete_file(&self) -> io::Result<()> {
        super::segment::remove_if_present(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(producer_id: i64, first_offset: i64, last_offset: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset,
            last_offset,
            last_stable_offset: last_offset + 1,
        }
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
        assert_eq!(loaded.entries(), index.entries());

        index.truncate_from(9).unwrap();
        assert_eq!(index.entries(), &[entry(1, 0, 5)]);
        assert_eq!(
            TxnIndex::load(path.clone()).unwrap().entries(),
            &[entry(1, 0, 5)]
        );

        // A crash in the middle of an append leaves a partial entry: it is cut off.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&entry(2, 20, 21).encode()[..10]).unwrap();
        let loaded = TxnIndex::load(path.clone()).unwrap();
        assert_eq!(loaded.entries(), &[entry(1, 0, 5)]);
        assert_eq!(fs::metadata(&path).unwrap().len(), 34);

        index.truncate_from(0).unwrap();
        assert!(!path.exists(), "an empty index has no file");
        assert!(TxnIndex::load(path).unwrap().entries().is_empty());
    }

    #[test]
    fn overlap_is_kafkas_collect_rule() {
        let aborted = entry(1, 10, 20);
        assert!(aborted.overlaps(0, 11));
        assert!(!aborted.overlaps(0, 10), "ends before the first record");
        assert!(aborted.overlaps(20, 30), "the marker is the last offset");
        assert!(!aborted.overlaps(21, 30));
    }
}
