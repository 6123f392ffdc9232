//! Byte ranges of segment files handed out by reads, so that a fetch response can send
//! them from the page cache to the socket (sendfile) instead of reading them into memory.
//!
//! A slice is taken under the partition's lock but sent later. A response read into memory
//! holds the bytes as they were at the read; a slice must send the same bytes or none.
//! Appends only add bytes past every slice, and retention, compaction and truncation
//! unlink whole files (the descriptor a slice holds keeps the old bytes: the response is
//! then as if read into memory before the change). The one change that reaches a slice's
//! bytes is a file cut in place (a follower cutting back its log, a failed append's
//! rollback): every cut goes through [`SegmentFile::truncate`], which records it before
//! touching the file; a sender checks [`FileSlice::unchanged`] once the slice's bytes are
//! in the socket and, if a cut reached them meanwhile, abandons the response (closes the
//! connection) before its last byte, so no client completes a response that mixes bytes.
//!
//! What remains: sendfile queues references to page-cache pages, not copies, so a cut
//! after the check can still zero bytes that sit in the socket unread. Such a batch fails
//! its CRC-32C at the client (followers here validate every batch before they append).
//! Bytes below the high watermark, all a consumer reads, are cut only by an unclean leader
//! election; the bytes a cut reaches are those of a follower's read of a leader's
//! uncommitted tail as it is demoted. Kafka sends with sendfile and the same exposure.

use std::fs::File;
use std::io::IoSlice;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

use crate::log::error::LogError;

/// A segment's `.log` file with a record of the in-place cuts it has seen.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    file: File,
    /// How many cuts.
    truncations: AtomicU64,
    /// The shortest length any cut left (never rises): a slice ending at or below it was
    /// reached by no cut at all.
    shortest_cut: AtomicU64,
}

impl SegmentFile {
    pub(crate) fn new(file: File) -> Arc<Self> {
        Arc::new(SegmentFile {
            file,
            truncations: AtomicU64::new(0),
            shortest_cut: AtomicU64::new(u64::MAX),
        })
    }

    /// Cuts the file to `length` bytes, recorded first: a sender that checks after its
    /// bytes left sees this cut if it could have reached them.
    pub(crate) fn truncate(&self, length: u64) -> std::io::Result<()> {
        self.shortest_cut.fetch_min(length, Ordering::SeqCst);
        self.truncations.fetch_add(1, Ordering::SeqCst);
        self.file.set_len(length)
    }

    fn truncations(&self) -> u64 {
        self.truncations.load(Ordering::SeqCst)
    }

    /// A temporary file holding `bytes` (tests).
    #[cfg(test)]
    pub(crate) fn holding(bytes: &[u8]) -> Arc<Self> {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        SegmentFile::new(file)
    }

    /// Writes `pieces` one after another from `position`: one pwritev for an append of up
    /// to [`PIECES_PER_WRITE`] pieces, unless the kernel takes less at a time.
    pub(crate) fn write_all_vectored_at(
        &self,
        pieces: &[IoSlice<'_>],
        mut position: u64,
    ) -> std::io::Result<()> {
        for chunk in pieces.chunks(PIECES_PER_WRITE) {
            let total: usize = chunk.iter().map(|piece| piece.len()).sum();
            let written = pwritev_retrying(&self.file, chunk, position)?;
            position += written as u64;
            if written == total {
                continue;
            }
            // A short write: go on from where it stopped, in a copy that can be advanced.
            let mut rest = chunk.to_vec();
            let mut rest = &mut rest[..];
            IoSlice::advance_slices(&mut rest, written);
            while !rest.is_empty() {
                let written = pwritev_retrying(&self.file, rest, position)?;
                position += written as u64;
                IoSlice::advance_slices(&mut rest, written);
            }
        }
        Ok(())
    }

    /// Whether a cut may have reached below `end` since the count was `truncations`.
    fn cut_below(&self, end: u64, truncations: u64) -> bool {
        self.truncations() != truncations && self.shortest_cut.load(Ordering::SeqCst) < end
    }
}

impl Deref for SegmentFile {
    type Target = File;

    fn deref(&self) -> &File {
        &self.file
    }
}

/// Pieces per pwritev: the kernel's IOV_MAX on Linux.
const PIECES_PER_WRITE: usize = 1024;

/// One pwritev, again if interrupted; writing nothing is an error (the disk took no byte).
fn pwritev_retrying(file: &File, pieces: &[IoSlice<'_>], position: u64) -> std::io::Result<usize> {
    loop {
        match rustix::io::pwritev(file, pieces, position) {
            Ok(0) if pieces.iter().any(|piece| !piece.is_empty()) => {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            Ok(written) => return Ok(written),
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// `len` bytes of a segment file from `position`, as they were when the slice was taken.
#[derive(Clone, Debug)]
pub struct FileSlice {
    file: Arc<SegmentFile>,
    position: u64,
    len: usize,
    /// The file's truncation count when the slice was taken.
    truncations: u64,
}

impl FileSlice {
    pub(crate) fn new(file: &Arc<SegmentFile>, position: u64, len: usize) -> Self {
        FileSlice {
            file: Arc::clone(file),
            position,
            len,
            truncations: file.truncations(),
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// False once the file was cut in place into the slice after it was taken: bytes read
    /// or sent from it since may not be the ones the read found. (A cut before the slice
    /// was taken, below its end, makes any later cut count: rare, and errs on the safe side.)
    pub fn unchanged(&self) -> bool {
        let end = self.position + self.len as u64;
        !self.file.cut_below(end, self.truncations)
    }

    /// Appends the slice's bytes, read now, to `out`.
    pub fn read_into(&self, out: &mut BytesMut) -> std::io::Result<()> {
        let start = out.len();
        out.resize(start + self.len, 0);
        self.file.read_exact_at(&mut out[start..], self.position)
    }
}

/// What one read of a log found: whole batches, as slices of one or more segment files.
#[derive(Clone, Debug, Default)]
pub struct RecordSlices {
    slices: Vec<FileSlice>,
    len: usize,
    /// The last offset of the last batch + 1; None when nothing was read.
    end_offset: Option<i64>,
}

impl RecordSlices {
    pub(crate) fn push(&mut self, slice: FileSlice, end_offset: i64) {
        if slice.is_empty() {
            return;
        }
        self.len += slice.len();
        self.end_offset = Some(end_offset);
        self.slices.push(slice);
    }

    /// Bytes in all slices.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The offset after the last batch read, if any was.
    pub fn end_offset(&self) -> Option<i64> {
        self.end_offset
    }

    pub fn slices(&self) -> &[FileSlice] {
        &self.slices
    }

    /// Reads the slices into one buffer. The caller holds the lock the slices were taken
    /// under, or checks [`RecordSlices::unchanged`] after.
    pub fn to_bytes(&self) -> Result<Bytes, LogError> {
        if self.slices.is_empty() {
            // A caught-up read, most partitions of a fetch: no buffer to make.
            return Ok(Bytes::new());
        }
        let mut out = BytesMut::with_capacity(self.len);
        for slice in &self.slices {
            slice.read_into(&mut out)?;
        }
        Ok(out.freeze())
    }

    /// See [`FileSlice::unchanged`].
    pub fn unchanged(&self) -> bool {
        self.slices.iter().all(FileSlice::unchanged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> Arc<SegmentFile> {
        SegmentFile::holding(bytes)
    }

    #[test]
    fn slices_read_back_their_ranges_in_order() {
        let first = file_with(b"0123456789");
        let second = file_with(b"abcdefghij");
        let mut records = RecordSlices::default();
        records.push(FileSlice::new(&first, 2, 3), 10);
        records.push(FileSlice::new(&second, 0, 0), 11);
        records.push(FileSlice::new(&second, 8, 2), 12);
        assert_eq!(records.len(), 5);
        assert_eq!(records.slices().len(), 2, "empty slices are dropped");
        assert_eq!(records.end_offset(), Some(12));
        assert_eq!(&records.to_bytes().unwrap()[..], b"234ij");
    }

    #[test]
    fn vectored_writes_put_every_piece_in_order_beyond_one_system_call() {
        let file = file_with(b"keep");
        let bytes: Vec<Vec<u8>> = (0..2_500u32)
            .map(|i| vec![(i % 251) as u8; 1 + i as usize % 7])
            .collect();
        let pieces: Vec<IoSlice<'_>> = bytes.iter().map(|piece| IoSlice::new(piece)).collect();
        file.write_all_vectored_at(&pieces, 4).unwrap();
        let expected: Vec<u8> = b"keep".iter().copied().chain(bytes.concat()).collect();
        let mut got = vec![0; expected.len()];
        file.read_exact_at(&mut got, 0).unwrap();
        assert!(got == expected);
    }

    #[test]
    fn a_truncation_after_the_slice_is_seen() {
        let file = file_with(b"0123456789");
        let slice = FileSlice::new(&file, 0, 10);
        let head = FileSlice::new(&file, 0, 4);
        assert!(slice.unchanged());
        file.truncate(4).unwrap();
        assert!(!slice.unchanged());
        assert!(head.unchanged(), "the cut left the first four bytes alone");
        assert!(
            FileSlice::new(&file, 0, 4).unchanged(),
            "a later slice sees the cut file"
        );
        let mut records = RecordSlices::default();
        records.push(slice, 1);
        assert!(!records.unchanged());
        assert!(records.to_bytes().is_err(), "the bytes are gone");
    }
}
