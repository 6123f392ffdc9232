//! The sparse offset index of one segment (`<base>.index`), in Kafka's format: 8-byte
//! entries of (offset relative to the segment base u32, byte position in the `.log` u32).
//! As in Kafka the offset is a batch's LAST offset and the position is where that batch
//! starts, so the batch holding any offset starts at or after `lookup(offset).position`.

use std::io;
use std::path::Path;

use crate::log::error::LogError;
use crate::log::index_file::{IndexEntry, IndexFile};

/// An absolute offset and a byte position in the segment's log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetPosition {
    pub(crate) offset: i64,
    pub(crate) position: u64,
}

#[derive(Clone, Copy, Debug)]
struct OffsetEntry {
    relative_offset: u32,
    position: u32,
}

impl IndexEntry for OffsetEntry {
    const BYTES: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        let relative_offset = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let position = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        OffsetEntry {
            relative_offset,
            position,
        }
    }
}

#[derive(Debug)]
pub(crate) struct OffsetIndex {
    base_offset: i64,
    file: IndexFile<OffsetEntry>,
}

impl OffsetIndex {
    /// A new, empty index (an existing file is emptied).
    pub(crate) fn create(path: &Path, base_offset: i64) -> io::Result<Self> {
        Ok(OffsetIndex {
            base_offset,
            file: IndexFile::create(path)?,
        })
    }

    /// Load an index written earlier and check it against its log file: offsets and
    /// positions strictly increase and every position lies inside the log. Any failure is
    /// `Corrupt` (or `Io(NotFound)`), and the caller rebuilds the index from the log.
    pub(crate) fn load(path: &Path, base_offset: i64, log_bytes: u64) -> Result<Self, LogError> {
        let index = OffsetIndex {
            base_offset,
            file: IndexFile::load(path)?,
        };
        let entries = index.file.entries();
        let increasing = entries.windows(2).all(|pair| {
            pair[0].relative_offset < pair[1].relative_offset && pair[0].position < pair[1].position
        });
        let inside = entries
            .last()
            .is_none_or(|last| u64::from(last.position) < log_bytes);
        if !increasing || !inside {
            return Err(LogError::Corrupt(format!(
                "{}: entries not increasing or beyond the {log_bytes}-byte log",
                path.display()
            )));
        }
        Ok(index)
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// The last entry at or below `offset`; the segment start when there is none.
    pub(crate) fn lookup(&self, offset: i64) -> OffsetPosition {
        let entries = self.file.entries();
        let after = entries.partition_point(|entry| self.absolute(entry) <= offset);
        match after.checked_sub(1) {
            Some(found) => self.to_offset_position(&entries[found]),
            None => OffsetPosition {
                offset: self.base_offset,
                position: 0,
            },
        }
    }

    pub(crate) fn last_entry(&self) -> Option<OffsetPosition> {
        self.file
            .entries()
            .last()
            .map(|entry| self.to_offset_position(entry))
    }

    /// Append entries beyond the last one, in memory until [`Self::write_pending`]. Offsets
    /// must fit the u32 relative range and positions the u32 file range; the segment rolls
    /// before either could overflow.
    pub(crate) fn append(&mut self, entries: &[OffsetPosition]) {
        let mut previous = self.last_entry();
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in entries {
            assert!(
                previous.is_none_or(|last| last.offset < entry.offset),
                "offsets increase"
            );
            assert!(previous.is_none_or(|last| last.position < entry.position));
            let relative_offset = u32::try_from(entry.offset - self.base_offset)
                .expect("the segment rolls before relative offsets overflow");
            let position = u32::try_from(entry.position).expect("the segment rolls before 4 GiB");
            encoded.push(OffsetEntry {
                relative_offset,
                position,
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

    /// Drop every entry for `offset` and above.
    pub(crate) fn truncate_from(&mut self, offset: i64) -> io::Result<()> {
        let keep = self
            .file
            .entries()
            .partition_point(|entry| self.absolute(entry) < offset);
        self.file.truncate(keep)
    }

    /// Write the pending entries and fsync.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn absolute(&self, entry: &OffsetEntry) -> i64 {
        self.base_offset + i64::from(entry.relative_offset)
    }

    fn to_offset_position(&self, entry: &OffsetEntry) -> OffsetPosition {
        OffsetPosition {
            offset: self.absolute(entry),
            position: u64::from(entry.position),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 1_000;

    fn entry(offset: i64, position: u64) -> OffsetPosition {
        OffsetPosition { offset, position }
    }

    fn sample(dir: &Path) -> OffsetIndex {
        let mut index = OffsetIndex::create(&dir.join("a.index"), BASE).unwrap();
        index.append(&[entry(1_010, 100), entry(1_020, 200)]);
        index.append(&[entry(1_030, 300)]);
        index.write_pending().unwrap();
        index
    }

    #[test]
    fn lookup_exact_between_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        assert_eq!(index.lookup(1_020), entry(1_020, 200));
        assert_eq!(index.lookup(1_025), entry(1_020, 200));
        assert_eq!(index.lookup(1_005), entry(BASE, 0));
        assert_eq!(index.lookup(0), entry(BASE, 0));
        assert_eq!(index.lookup(9_999), entry(1_030, 300));
    }

    #[test]
    fn entries_are_kafka_format_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        let bytes = std::fs::read(index.path()).unwrap();
        assert_eq!(bytes.len(), 24);
        assert_eq!(&bytes[..8], &[0, 0, 0, 10, 0, 0, 0, 100]);
        let loaded = OffsetIndex::load(index.path(), BASE, 1_000).unwrap();
        assert_eq!(loaded.last_entry(), Some(entry(1_030, 300)));
        assert_eq!(loaded.lookup(1_011), entry(1_010, 100));
    }

    #[test]
    fn load_refuses_inconsistent_files() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        let beyond_log = OffsetIndex::load(index.path(), BASE, 300);
        assert!(matches!(beyond_log, Err(LogError::Corrupt(_))));

        let mut bytes = std::fs::read(index.path()).unwrap();
        bytes[8..16].copy_from_slice(&[0, 0, 0, 5, 0, 0, 0, 150]);
        std::fs::write(index.path(), &bytes).unwrap();
        let not_increasing = OffsetIndex::load(index.path(), BASE, 1_000);
        assert!(matches!(not_increasing, Err(LogError::Corrupt(_))));

        std::fs::write(index.path(), &bytes[..13]).unwrap();
        let torn = OffsetIndex::load(index.path(), BASE, 1_000);
        assert!(matches!(torn, Err(LogError::Corrupt(_))));

        let missing = OffsetIndex::load(&dir.path().join("none.index"), BASE, 1_000);
        assert!(matches!(missing, Err(LogError::Io(ref error))
            if error.kind() == io::ErrorKind::NotFound));
    }

    #[test]
    fn truncate_from_drops_entries_at_and_above() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = sample(dir.path());
        index.truncate_from(1_020).unwrap();
        assert_eq!(index.last_entry(), Some(entry(1_010, 100)));
        assert_eq!(std::fs::metadata(index.path()).unwrap().len(), 8);
        index.append(&[entry(1_015, 150)]);
        index.write_pending().unwrap();
        let loaded = OffsetIndex::load(index.path(), BASE, 1_000).unwrap();
        assert_eq!(loaded.lookup(2_000), entry(1_015, 150));
    }

    #[test]
    fn appends_wait_in_memory_until_written_and_lookups_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = sample(dir.path());
        index.append(&[entry(1_040, 400), entry(1_050, 500)]);
        assert_eq!(index.pending_bytes(), 16);
        assert_eq!(index.lookup(1_045), entry(1_040, 400));
        assert_eq!(std::fs::metadata(index.path()).unwrap().len(), 24);
        // A truncation within the pending entries leaves the file alone.
        index.truncate_from(1_050).unwrap();
        assert_eq!(index.pending_bytes(), 8);
        index.write_pending().unwrap();
        assert_eq!(index.pending_bytes(), 0);
        let loaded = OffsetIndex::load(index.path(), BASE, 1_000).unwrap();
        assert_eq!(loaded.last_entry(), Some(entry(1_040, 400)));
        // One below the written ones cuts the file too.
        index.append(&[entry(1_060, 600)]);
        index.truncate_from(1_030).unwrap();
        assert_eq!(index.pending_bytes(), 0);
        assert_eq!(std::fs::metadata(index.path()).unwrap().len(), 16);
        index.append(&[entry(1_035, 350)]);
        index.flush().unwrap();
        let loaded = OffsetIndex::load(index.path(), BASE, 1_000).unwrap();
        assert_eq!(loaded.lookup(2_000), entry(1_035, 350));
        assert_eq!(loaded.lookup(1_025), entry(1_020, 200));
    }

    #[test]
    fn rebuild_by_create_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        let rebuilt = OffsetIndex::create(index.path(), BASE).unwrap();
        assert_eq!(rebuilt.last_entry(), None);
        assert_eq!(std::fs::metadata(index.path()).unwrap().len(), 0);
    }
}
