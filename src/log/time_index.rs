//! The sparse time index of one segment (`<base>.timeindex`), in Kafka's format: 12-byte
//! entries of (timestamp i64, offset relative to the segment base u32). An entry is added
//! only when the segment's max timestamp grows, so timestamps strictly increase; the offset
//! is the last offset of the batch that first reached that timestamp. Every record before
//! that batch is therefore older than the entry's timestamp.

use std::io;
use std::path::Path;

use crate::log::batch::NO_TIMESTAMP;
use crate::log::error::LogError;
use crate::log::index_file::{IndexEntry, IndexFile};

/// A timestamp and the offset where it was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimestampOffset {
    pub(crate) timestamp_ms: i64,
    pub(crate) offset: i64,
}

#[derive(Clone, Copy, Debug)]
struct TimeEntry {
    timestamp_ms: i64,
    relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const BYTES: usize = 12;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        let mut timestamp = [0; 8];
        timestamp.copy_from_slice(&bytes[..8]);
        let relative_offset = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        TimeEntry {
            timestamp_ms: i64::from_be_bytes(timestamp),
            relative_offset,
        }
    }
}

#[derive(Debug)]
pub(crate) struct TimeIndex {
    base_offset: i64,
    file: IndexFile<TimeEntry>,
}

impl TimeIndex {
    /// A new, empty index (an existing file is emptied).
    pub(crate) fn create(path: &Path, base_offset: i64) -> io::Result<Self> {
        Ok(TimeIndex {
            base_offset,
            file: IndexFile::create(path)?,
        })
    }

    /// Load an index written earlier: timestamps strictly increase and offsets never go
    /// back. Any failure is `Corrupt` (or `Io(NotFound)`) and the caller rebuilds.
    pub(crate) fn load(path: &Path, base_offset: i64) -> Result<Self, LogError> {
        let index = TimeIndex {
            base_offset,
            file: IndexFile::load(path)?,
        };
        let ordered = index.file.entries().windows(2).all(|pair| {
            pair[0].timestamp_ms < pair[1].timestamp_ms
                && pair[0].relative_offset <= pair[1].relative_offset
        });
        if !ordered {
            return Err(LogError::Corrupt(format!(
                "{}: entries out of order",
                path.display()
            )));
        }
        Ok(index)
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// The last entry whose timestamp is at or below `timestamp_ms`; (no timestamp, segment
    /// base) when every entry is newer, as in Kafka.
    pub(crate) fn lookup(&self, timestamp_ms: i64) -> TimestampOffset {
        let entries = self.file.entries();
        let after = entries.partition_point(|entry| entry.timestamp_ms <= timestamp_ms);
        match after.checked_sub(1) {
            Some(found) => self.to_timestamp_offset(&entries[found]),
            None => TimestampOffset {
                timestamp_ms: NO_TIMESTAMP,
                offset: self.base_offset,
            },
        }
    }

    pub(crate) fn last_entry(&self) -> Option<TimestampOffset> {
        self.file
            .entries()
            .last()
            .map(|entry| self.to_timestamp_offset(entry))
    }

    /// Append entries whose timestamps grow past the last entry's, in memory until
    /// [`Self::write_pending`].
    pub(crate) fn append(&mut self, entries: &[TimestampOffset]) {
        let mut previous = self.last_entry();
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in entries {
            assert!(previous.is_none_or(|last| last.timestamp_ms < entry.timestamp_ms));
            assert!(previous.is_none_or(|last| last.offset <= entry.offset));
            let relative_offset = u32::try_from(entry.offset - self.base_offset)
                .expect("the segment rolls before relative offsets overflow");
            encoded.push(TimeEntry {
                timestamp_ms: entry.timestamp_ms,
                relative_offset,
            });
            previous = Some(*entry);
        }
        self.file.append(&encoded);
    }

    /// How many entries there are, written or not.
    pub(crate) fn len(&self) -> usize {
        self.file.len()
    }

    /// Keep only the first `count` entries (taking back an append that failed).
    pub(crate) fn truncate_to_len(&mut self, count: usize) -> io::Result<()> {
        self.file.truncate(count)
    }

    #[cfg(test)]
    pub(crate) fn reopen_for_test(&mut self, writable: bool) {
        self.file.reopen_for_test(writable);
    }

    /// Bytes of appended entries the file does not hold yet.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.file.pending_bytes()
    }

    /// Write the appended entries the file does not hold yet (see `IndexFile`).
    pub(crate) fn write_pending(&mut self) -> io::Result<()> {
        self.file.write_pending()
    }

    /// Drop every entry pointing at `offset` or above.
    pub(crate) fn truncate_from(&mut self, offset: i64) -> io::Result<()> {
        let entries = self.file.entries();
        let keep = entries.partition_point(|entry| self.absolute(entry) < offset);
        self.file.truncate(keep)
    }

    /// Write the pending entries and fsync.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn absolute(&self, entry: &TimeEntry) -> i64 {
        self.base_offset + i64::from(entry.relative_offset)
    }

    fn to_timestamp_offset(&self, entry: &TimeEntry) -> TimestampOffset {
        TimestampOffset {
            timestamp_ms: entry.timestamp_ms,
            offset: self.absolute(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 500;

    fn entry(timestamp_ms: i64, offset: i64) -> TimestampOffset {
        TimestampOffset {
            timestamp_ms,
            offset,
        }
    }

    fn sample(dir: &Path) -> TimeIndex {
        let mut index = TimeIndex::create(&dir.join("a.timeindex"), BASE).unwrap();
        index.append(&[entry(1_000, 510), entry(2_000, 520)]);
        index.append(&[entry(3_000, 520), entry(4_000, 540)]);
        index.write_pending().unwrap();
        index
    }

    #[test]
    fn lookup_exact_between_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        assert_eq!(index.lookup(2_000), entry(2_000, 520));
        assert_eq!(index.lookup(2_500), entry(2_000, 520));
        assert_eq!(index.lookup(999), entry(NO_TIMESTAMP, BASE));
        assert_eq!(index.lookup(i64::MAX), entry(4_000, 540));
    }

    #[test]
    fn entries_are_kafka_format_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        let bytes = std::fs::read(index.path()).unwrap();
        assert_eq!(bytes.len(), 48);
        assert_eq!(&bytes[..12], &[0, 0, 0, 0, 0, 0, 3, 232, 0, 0, 0, 10]);
        let loaded = TimeIndex::load(index.path(), BASE).unwrap();
        assert_eq!(loaded.last_entry(), Some(entry(4_000, 540)));
        assert_eq!(loaded.lookup(3_999), entry(3_000, 520));
    }

    #[test]
    fn load_refuses_inconsistent_files() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        let mut bytes = std::fs::read(index.path()).unwrap();
        bytes[12..20].copy_from_slice(&500i64.to_be_bytes());
        std::fs::write(index.path(), &bytes).unwrap();
        assert!(matches!(
            TimeIndex::load(index.path(), BASE),
            Err(LogError::Corrupt(_))
        ));
        std::fs::write(index.path(), &bytes[..30]).unwrap();
        assert!(matches!(
            TimeIndex::load(index.path(), BASE),
            Err(LogError::Corrupt(_))
        ));
    }

    #[test]
    fn truncate_from_drops_entries_at_and_above() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = sample(dir.path());
        index.truncate_from(520).unwrap();
        assert_eq!(index.last_entry(), Some(entry(1_000, 510)));
        let loaded = TimeIndex::load(index.path(), BASE).unwrap();
        assert_eq!(loaded.lookup(9_000), entry(1_000, 510));
    }
}
