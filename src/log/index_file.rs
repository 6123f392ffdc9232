//! A file of fixed-size entries mirrored in memory: the storage shared by the offset index
//! and the time index. Without mmap (it would need unsafe) the entries live in a `Vec`;
//! appends go to memory, and the entries not yet in the file are written to its end
//! together when the owner asks ([`IndexFile::write_pending`], and always before an
//! fsync), so the file holds exactly the first `written * BYTES` bytes of the entries
//! (Kafka preallocates and trims; we never preallocate).
//!
//! Why deferred: a 1 KiB-record produce earns an index entry nearly every batch, and
//! writing each entry as it came cost two extra `pwrite`s per partition per request. The
//! file may lag memory, as Kafka's mmap'ed index lags the disk: lookups read memory, and a
//! crash loses only entries that recovery rebuilds (the active segment is rescanned; a
//! sealed one was fsynced whole when it rolled).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::log::error::LogError;

/// One fixed-size, big-endian entry of an index file.
pub(crate) trait IndexEntry: Copy {
    const BYTES: usize;
    fn encode(&self, out: &mut Vec<u8>);
    /// `bytes` is exactly `BYTES` long.
    fn decode(bytes: &[u8]) -> Self;
}

#[derive(Debug)]
pub(crate) struct IndexFile<E> {
    path: PathBuf,
    file: File,
    entries: Vec<E>,
    /// How many of `entries` (the first ones) the file holds.
    written: usize,
    /// The file may hold bytes past the first `written` entries: a failed write, or a
    /// failed cut, left them. The next write cuts the file to what memory holds, so stale
    /// entries never pass for real ones at the next load.
    overlong: bool,
}

impl<E: IndexEntry> IndexFile<E> {
    /// Create the file, or empty an existing one (used when rebuilding).
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            entries: Vec::new(),
            written: 0,
            overlong: false,
        })
    }

    /// Read an existing file. A missing file is `Io(NotFound)`; a length that is not a
    /// whole number of entries (a torn write) is `Corrupt`.
    pub(crate) fn load(path: &Path) -> Result<Self, LogError> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if bytes.len() % E::BYTES != 0 {
            return Err(LogError::Corrupt(format!(
                "{}: {} bytes is not a whole number of {}-byte entries",
                path.display(),
                bytes.len(),
                E::BYTES
            )));
        }
        let entries: Vec<E> = bytes.chunks_exact(E::BYTES).map(E::decode).collect();
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            written: entries.len(),
            entries,
            overlong: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    /// How many entries there are (in memory; the file may hold fewer).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Append entries in memory; the file gets them at the next [`Self::write_pending`].
    pub(crate) fn append(&mut self, new_entries: &[E]) {
        self.entries.extend_from_slice(new_entries);
    }

    /// Bytes of entries appended but not yet in the file.
    pub(crate) fn pending_bytes(&self) -> usize {
        (self.entries.len() - self.written) * E::BYTES
    }

    /// Write the entries the file does not hold yet to its end, in one write. On failure
    /// they stay pending (memory is the truth) and the next call writes them again from
    /// the same place.
    pub(crate) fn write_pending(&mut self) -> io::Result<()> {
        let pending = &self.entries[self.written..];
        if !pending.is_empty() {
            let mut bytes = Vec::with_capacity(pending.len() * E::BYTES);
            for entry in pending {
                entry.encode(&mut bytes);
            }
            let length_before = self.byte_length(self.written);
            if let Err(error) = self.file.write_all_at(&bytes, length_before) {
                // A partly written tail must not pass for entries at the next load.
                self.overlong |= self.file.set_len(length_before).is_err();
                return Err(error);
            }
            self.written = self.entries.len();
        }
        if self.overlong {
            self.file.set_len(self.byte_length(self.written))?;
            self.overlong = false;
        }
        Ok(())
    }

    /// Keep only the first `count` entries (the file is cut only if it holds more).
    pub(crate) fn truncate(&mut self, count: usize) -> io::Result<()> {
        if count >= self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(count);
        if count >= self.written {
            return Ok(());
        }
        self.written = count;
        let cut = self.file.set_len(self.byte_length(count));
        self.overlong |= cut.is_err();
        cut
    }

    /// Write the pending entries and fsync the file.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.file.sync_data()
    }

    /// Swap the file handle for a read-only one (writes fail) or back (failure tests).
    #[cfg(test)]
    pub(crate) fn reopen_for_test(&mut self, writable: bool) {
        self.file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&self.path)
            .unwrap();
    }

    fn byte_length(&self, count: usize) -> u64 {
        (count * E::BYTES) as u64
    }
}
