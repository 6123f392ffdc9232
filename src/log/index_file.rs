//! A file of fixed-size entries mirrored in memory: the storage shared by the offset index
//! and the time index. Without mmap (it would need unsafe) the entries live in a `Vec` and
//! every append is also written to the end of the file, so the file is always exactly
//! `entries.len() * BYTES` long (Kafka preallocates and trims; we never preallocate).

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
        let entries = bytes.chunks_exact(E::BYTES).map(E::decode).collect();
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            entries,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    /// Append entries to the file and memory, all or nothing.
    pub(crate) fn append(&mut self, new_entries: &[E]) -> io::Result<()> {
        if new_entries.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(new_entries.len() * E::BYTES);
        for entry in new_entries {
            entry.encode(&mut bytes);
        }
        let length_before = self.byte_length(self.entries.len());
        if let Err(error) = self.file.write_all_at(&bytes, length_before) {
            // Best effort: the in-memory entries are the truth and the next append
            // overwrites from `length_before` anyway.
            let _ = self.file.set_len(length_before);
            return Err(error);
        }
        self.entries.extend_from_slice(new_entries);
        Ok(())
    }

    /// Keep only the first `count` entries.
    pub(crate) fn truncate(&mut self, count: usize) -> io::Result<()> {
        if count >= self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(count);
        self.file.set_len(self.byte_length(count))
    }

    pub(crate) fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn byte_length(&self, count: usize) -> u64 {
        (count * E::BYTES) as u64
    }
}
