//! Loading a partition directory on open and making it consistent after a crash.
//!
//! - A `<base>.log.swap` is a cleaned segment whose clean finished (`cleaner`): it replaces
//!   `<base>.log`, and that segment's index files are dropped so they are rebuilt.
//! - Other leftover `.deleted`, `.cleaned` and `.swap` files (an interrupted delete or
//!   clean) are removed, and so are index files without their `.log`.
//! - Sealed segments were fsynced when they rolled, so their index files are trusted once
//!   they pass sanity checks and agree with the batch headers after the last index entry.
//!   A missing or inconsistent index is rebuilt by a full scan of that segment. If that
//!   scan finds an invalid batch, the log ends there, as in Kafka's LogLoader: the segment
//!   is cut before the batch and every later segment is deleted (logged with the offset
//!   and the segments removed), so the log never has a hole that consumers skip.
//! - After a clean shutdown (`clean_shutdown`) the active segment is opened like a sealed
//!   one, from its indexes, and recovered as below only if they fail those checks.
//! - Otherwise the active (last) segment is scanned batch by batch with CRC checks. The scan
//!   stops at the first incomplete batch, bad CRC or offset going backwards; the file is cut
//!   there (a torn write from `kill -9` mid-produce) and its indexes are rebuilt. A record is
//!   thus either fully there or gone, and a torn batch is never served.
//!
//! The log end offset follows from the last valid batch. The log start offset is the first
//! segment's base offset: the log only ever deletes whole segments, so there is nothing else
//! to persist.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::log::batch::{BATCH_HEADER_BYTES, BatchHeader, MAGIC_V2};
use crate::log::clean_shutdown::LastShutdown;
use crate::log::error::LogError;
use crate::log::segment::{
    INDEX_EXTENSION, LOG_EXTENSION, PendingEntries, Segment, SegmentState, TIME_INDEX_EXTENSION,
    remove_if_present, segment_file, sync_directory,
};
use crate::log::txn_index::TXN_INDEX_EXTENSION;

/// Suffixes of files an interrupted operation may leave behind.
const LEFTOVER_SUFFIXES: [&str; 3] = [".deleted", CLEANED_SUFFIX, SWAP_SUFFIX];
/// Suffix of a cleaned segment log ready to replace the original.
pub(crate) const SWAP_SUFFIX: &str = ".swap";
/// Suffix of a cleaned segment log still being written.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Digits in a segment file name's base offset.
const BASE_OFFSET_DIGITS: usize = 20;
/// Chunk size for checksumming a batch without holding it all in memory.
const CRC_CHUNK_BYTES: usize = 64 * 1024;
/// First batch byte covered by the CRC.
const CRC_COVERS_FROM: u64 = 21;
/// Largest file position an index entry can hold.
const POSITION_MAX: u64 = u32::MAX as u64;

/// Open every segment in `dir` (creating `dir` and a first empty segment at offset 0 if
/// there is none), repairing what a crash left behind.
pub(crate) fn load_segments(
    dir: &Path,
    index_interval_bytes: u32,
    now_ms: i64,
    last_shutdown: LastShutdown,
) -> Result<Vec<Segment>, LogError> {
    // A new partition directory must survive a crash with the files made in it.
    super::durable::create_dir_durably(dir)?;
    complete_swaps(dir)?;
    let bases = list_segment_bases(dir)?;
    let Some(&active_base) = bases.last() else {
        let segment = Segment::create(dir, 0, now_ms)?;
        sync_directory(dir)?;
        return Ok(vec![segment]);
    };
    let (mut segments, cut) = open_sealed_segments(dir, &bases, index_interval_bytes, now_ms)?;
    if !cut {
        let active = match last_shutdown {
            LastShutdown::Clean => {
                match open_sealed(dir, active_base, &[], index_interval_bytes, now_ms)? {
                    Sealed::Intact(segment) | Sealed::Cut(segment) => segment,
                }
            }
            LastShutdown::Unclean => {
                recover_segment(dir, active_base, index_interval_bytes, now_ms)?
            }
        };
        segments.push(active);
    }
    check_segments_ordered(&segments)?;
    Ok(segments)
}

/// Opens every segment of `bases` but the last (the active one). Returns the segments and
/// whether one of them was cut at an invalid batch: then it ends the log, the segments
/// after it are gone, and the caller must not open the active segment.
fn open_sealed_segments(
    dir: &Path,
    bases: &[i64],
    index_interval_bytes: u32,
    now_ms: i64,
) -> Result<(Vec<Segment>, bool), LogError> {
    let sealed_count = bases.len().saturating_sub(1);
    let mut segments = Vec::with_capacity(bases.len());
    for (position, &base_offset) in bases[..sealed_count].iter().enumerate() {
        let later_bases = &bases[position + 1..];
        match open_sealed(dir, base_offset, later_bases, index_interval_bytes, now_ms)? {
            Sealed::Intact(segment) => segments.push(segment),
            Sealed::Cut(segment) => {
                segments.push(segment);
                return Ok((segments, true));
            }
        }
    }
    Ok((segments, false))
}

/// Finish the cleans that reached their `.swap` step: each `<base>.log.swap` becomes
/// `<base>.log` (replacing the original if it is still there), and the original's index
/// files go, so that opening the segment rebuilds them from the cleaned log.
fn complete_swaps(dir: &Path) -> Result<(), LogError> {
    let mut completed = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(log_name) = name.strip_suffix(SWAP_SUFFIX) else {
            continue;
        };
        let FileKind::Log(base_offset) = classify(log_name) else {
            continue; // not a segment log: removed below as a leftover
        };
        info!(file = %entry.path().display(), "completing an interrupted segment swap");
        remove_if_present(&segment_file(dir, base_offset, INDEX_EXTENSION))?;
        remove_if_present(&segment_file(dir, base_offset, TIME_INDEX_EXTENSION))?;
        fs::rename(entry.path(), dir.join(log_name))?;
        completed = true;
    }
    if completed {
        sync_directory(dir)?;
    }
    Ok(())
}

/// What a directory entry is to the log.
enum FileKind {
    Leftover,
    Log(i64),
    Index(i64),
    Other,
}

fn classify(name: &str) -> FileKind {
    if LEFTOVER_SUFFIXES
        .iter()
        .any(|suffix| name.ends_with(suffix))
    {
        return FileKind::Leftover;
    }
    let Some((stem, extension)) = name.split_once('.') else {
        return FileKind::Other;
    };
    let digits = stem.len() == BASE_OFFSET_DIGITS && stem.bytes().all(|b| b.is_ascii_digit());
    let Some(base_offset) = stem.parse::<i64>().ok().filter(|_| digits) else {
        return FileKind::Other;
    };
    match extension {
        LOG_EXTENSION => FileKind::Log(base_offset),
        INDEX_EXTENSION | TIME_INDEX_EXTENSION | TXN_INDEX_EXTENSION => {
            FileKind::Index(base_offset)
        }
        _ => FileKind::Other,
    }
}

/// Base offsets of the segments in `dir`, ascending, after removing leftovers and orphan
/// index files. Files the log does not own (checkpoints, metadata) are left alone.
fn list_segment_bases(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut log_bases = BTreeSet::new();
    let mut index_files: Vec<(i64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !entry.file_type()?.is_file() {
            continue;
        }
        match classify(&name) {
            FileKind::Leftover => remove_leftover(&entry.path(), "unfinished operation")?,
            FileKind::Log(base_offset) => {
                log_bases.insert(base_offset);
            }
            FileKind::Index(base_offset) => index_files.push((base_offset, entry.path())),
            FileKind::Other => {}
        }
    }
    for (base_offset, path) in index_files {
        if !log_bases.contains(&base_offset) {
            remove_leftover(&path, "index without a log file")?;
        }
    }
    Ok(log_bases.into_iter().collect())
}

fn remove_leftover(path: &Path, why: &str) -> io::Result<()> {
    info!(file = %path.display(), why, "removing leftover file");
    fs::remove_file(path)
}

/// A sealed segment as recovery left it.
enum Sealed {
    /// Whole: every batch checked out (or its indexes were trusted).
    Intact(Segment),
    /// Cut at an invalid batch; it is now the last segment of the log.
    Cut(Segment),
}

/// Open a sealed segment from its indexes, or rebuild them when they cannot be trusted.
/// A rebuild that finds an invalid batch ends the log there, as Kafka's LogLoader does:
/// the segments after it (`later_bases`) are deleted, because keeping them would leave a
/// hole of offsets that consumers silently skip.
fn open_sealed(
    dir: &Path,
    base_offset: i64,
    later_bases: &[i64],
    index_interval_bytes: u32,
    now_ms: i64,
) -> Result<Sealed, LogError> {
    let why = match Segment::open(dir, base_offset, now_ms) {
        Ok(segment) => return Ok(Sealed::Intact(segment)),
        Err(LogError::Corrupt(why)) => why,
        Err(LogError::Io(error)) if error.kind() == io::ErrorKind::NotFound => error.to_string(),
        Err(error) => return Err(error),
    };
    warn!(dir = %dir.display(), base_offset, why, "rebuilding segment indexes");
    let scanned = scan_log(dir, base_offset, index_interval_bytes)?;
    let cut = scanned.scan.stop.is_some();
    if cut {
        // Before the cut itself: should we crash in between, the invalid batch is still
        // there for the next start to find, and it removes what is left.
        remove_later_segments(dir, scanned.scan.state.next_offset(), later_bases)?;
    }
    let mut segment = install_scanned(dir, base_offset, scanned, now_ms)?;
    // Durable now, so the next open can trust the rebuilt indexes. (Only the offset and
    // time indexes were rebuilt: should a crash lose a newly created one's directory
    // entry, the next open finds it missing and rebuilds it again.)
    if segment.flush()?.0 {
        sync_directory(dir)?;
    }
    Ok(if cut {
        Sealed::Cut(segment)
    } else {
        Sealed::Intact(segment)
    })
}

/// Suffix of a segment log set aside because an earlier segment ended the log: the data is
/// no longer served (the log is cut before it, as Kafka's LogLoader cuts it) but it is
/// kept for the operator instead of deleted. Recovery leaves such files alone.
pub(crate) const AFTER_CORRUPTION_SUFFIX: &str = ".after-corruption";

/// Takes the segments at `later_bases` out of the log, which now ends at `log_end_offset`:
/// their logs are renamed aside with [`AFTER_CORRUPTION_SUFFIX`] (never deleted: they may
/// hold acknowledged records an operator can still salvage), their indexes removed.
fn remove_later_segments(
    dir: &Path,
    log_end_offset: i64,
    later_bases: &[i64],
) -> Result<(), LogError> {
    let mut kept_bytes = 0;
    for &base_offset in later_bases {
        let log_path = segment_file(dir, base_offset, LOG_EXTENSION);
        kept_bytes += fs::metadata(&log_path).map_or(0, |metadata| metadata.len());
        let mut aside = log_path.clone().into_os_string();
        aside.push(AFTER_CORRUPTION_SUFFIX);
        fs::rename(&log_path, &aside)?;
        remove_if_present(&segment_file(dir, base_offset, INDEX_EXTENSION))?;
        remove_if_present(&segment_file(dir, base_offset, TIME_INDEX_EXTENSION))?;
        remove_if_present(&segment_file(dir, base_offset, TXN_INDEX_EXTENSION))?;
    }
    sync_directory(dir)?;
    warn!(
        dir = %dir.display(),
        log_end_offset,
        set_aside_segments = ?later_bases,
        kept_bytes,
        "an invalid batch in a closed segment ends the log there: the offsets from \
         log_end_offset on are no longer served; the later segments are kept beside the log \
         as *.log{AFTER_CORRUPTION_SUFFIX} for inspection (remove them by hand)"
    );
    Ok(())
}

/// Scan a segment's log from the start, cut it after the last valid batch, and rebuild
/// its indexes from the scan.
pub(crate) fn recover_segment(
    dir: &Path,
    base_offset: i64,
    index_interval_bytes: u32,
    now_ms: i64,
) -> Result<Segment, LogError> {
    let scanned = scan_log(dir, base_offset, index_interval_bytes)?;
    install_scanned(dir, base_offset, scanned, now_ms)
}

/// A segment's log file checked batch by batch, nothing changed yet.
struct ScannedLog {
    scan: Scan,
    file_bytes: u64,
}

fn scan_log(
    dir: &Path,
    base_offset: i64,
    index_interval_bytes: u32,
) -> Result<ScannedLog, LogError> {
    let log = File::open(segment_file(dir, base_offset, LOG_EXTENSION))?;
    let file_bytes = log.metadata()?.len();
    let scan = scan_segment(&log, base_offset, file_bytes, index_interval_bytes)?;
    Ok(ScannedLog { scan, file_bytes })
}

/// Cut the segment's log file before its first invalid batch (if the scan found one) and
/// write the indexes rebuilt by the scan.
fn install_scanned(
    dir: &Path,
    base_offset: i64,
    scanned: ScannedLog,
    now_ms: i64,
) -> Result<Segment, LogError> {
    let mut segment = Segment::open_unindexed(dir, base_offset, now_ms)?;
    let ScannedLog { scan, file_bytes } = scanned;
    let valid_bytes = scan.state.size_bytes();
    if let Some(reason) = &scan.stop {
        // Everything from the first invalid batch on goes, valid-looking bytes after it
        // included: without a trusted length there is no telling where they start.
        warn!(
            segment = %segment.log_path().display(),
            offset = scan.state.next_offset(),
            position = valid_bytes,
            truncated_bytes = file_bytes - valid_bytes,
            reason = reason.as_str(),
            "truncating a log segment at its first invalid batch"
        );
    }
    segment.install_scan(scan.state, scan.pending)?;
    Ok(segment)
}

/// Result of scanning a segment: the state and index entries of its valid batches, and
/// why the scan stopped before the end of the file, if it did.
struct Scan {
    state: SegmentState,
    pending: PendingEntries,
    stop: Option<String>,
}

fn scan_segment(
    log: &File,
    base_offset: i64,
    file_bytes: u64,
    index_interval_bytes: u32,
) -> Result<Scan, LogError> {
    let mut state = SegmentState::empty(base_offset);
    let mut pending = PendingEntries::default();
    let mut buffer = vec![0; CRC_CHUNK_BYTES];
    loop {
        let slot = Slot {
            file_bytes,
            base_offset,
            state: &state,
        };
        match check_batch(log, &slot, &mut buffer)? {
            Check::Valid(header) => state.advance(&header, index_interval_bytes, &mut pending),
            Check::End => {
                return Ok(Scan {
                    state,
                    pending,
                    stop: None,
                });
            }
            Check::Invalid(why) => {
                return Ok(Scan {
                    state,
                    pending,
                    stop: Some(why),
                });
            }
        }
    }
}

/// Scan a complete log file that is not a segment yet (a cleaned copy) with the checks of
/// recovery: the state and index entries of its batches. Every byte must be a valid batch
/// (it was just written and fsynced), so a scan that stops early is `Corrupt`.
pub(crate) fn scan_log_file(
    log: &File,
    base_offset: i64,
    index_interval_bytes: u32,
) -> Result<(SegmentState, PendingEntries), LogError> {
    let file_bytes = log.metadata()?.len();
    let mut state = SegmentState::empty(base_offset);
    let mut pending = PendingEntries::default();
    let mut buffer = vec![0; CRC_CHUNK_BYTES];
    loop {
        let slot = Slot {
            file_bytes,
            base_offset,
            state: &state,
        };
        match check_batch(log, &slot, &mut buffer)? {
            Check::Valid(header) => state.advance(&header, index_interval_bytes, &mut pending),
            Check::End => return Ok((state, pending)),
            Check::Invalid(why) => {
                let position = state.size_bytes();
                return Err(LogError::Corrupt(format!("at byte {position}: {why}")));
            }
        }
    }
}

/// Where the next batch of a scan should be.
struct Slot<'a> {
    file_bytes: u64,
    base_offset: i64,
    state: &'a SegmentState,
}

enum Check {
    Valid(BatchHeader),
    End,
    Invalid(String),
}

/// Check the batch at the end of the scanned part. I/O errors are errors, never a reason
/// to cut the log.
fn check_batch(log: &File, slot: &Slot, buffer: &mut [u8]) -> Result<Check, LogError> {
    let position = slot.state.size_bytes();
    let remaining = slot.file_bytes - position;
    if remaining == 0 {
        return Ok(Check::End);
    }
    if remaining < BATCH_HEADER_BYTES as u64 {
        return Ok(Check::Invalid(format!(
            "{remaining} bytes cannot hold a batch header"
        )));
    }
    let mut bytes = [0; BATCH_HEADER_BYTES];
    log.read_exact_at(&mut bytes, position)?;
    let header = match BatchHeader::parse(&bytes) {
        Ok(header) => header,
        Err(error) => return Ok(Check::Invalid(error.to_string())),
    };
    if let Some(why) = header_problem(&header, slot, remaining) {
        return Ok(Check::Invalid(why));
    }
    let covered_bytes = header.total_bytes() as u64 - CRC_COVERS_FROM;
    let crc = crc_of_range(log, position + CRC_COVERS_FROM, covered_bytes, buffer)?;
    if crc != header.crc {
        return Ok(Check::Invalid(format!(
            "CRC-32C mismatch in the batch at {position}"
        )));
    }
    Ok(Check::Valid(header))
}

fn header_problem(header: &BatchHeader, slot: &Slot, remaining: u64) -> Option<String> {
    let position = slot.state.size_bytes();
    let next_offset = slot.state.next_offset();
    let size_bytes = header.total_bytes() as u64;
    if header.magic != MAGIC_V2 {
        return Some(format!("magic {} at {position}", header.magic));
    }
    if size_bytes > remaining {
        return Some(format!(
            "incomplete batch at {position}: {remaining} of {size_bytes} bytes"
        ));
    }
    if position + size_bytes > POSITION_MAX {
        return Some(format!(
            "batch at {position} ends beyond what an index can address"
        ));
    }
    if header.last_offset_delta < 0 || header.base_offset < next_offset {
        return Some(format!(
            "offset {} at {position} after {next_offset}",
            header.base_offset
        ));
    }
    if header.last_offset() - slot.base_offset > i64::from(i32::MAX) {
        return Some(format!(
            "offset {} beyond the segment's range",
            header.last_offset()
        ));
    }
    None
}

/// CRC-32C of `length_bytes` of `log` from `start`, read in chunks.
fn crc_of_range(log: &File, start: u64, length_bytes: u64, buffer: &mut [u8]) -> io::Result<u32> {
    let mut crc = 0;
    let mut done_bytes = 0;
    while done_bytes < length_bytes {
        let chunk_bytes = (length_bytes - done_bytes).min(buffer.len() as u64) as usize;
        let chunk = &mut buffer[..chunk_bytes];
        log.read_exact_at(chunk, start + done_bytes)?;
        crc = crc32c::crc32c_append(crc, chunk);
        done_bytes += chunk_bytes as u64;
    }
    Ok(crc)
}

/// Each segment must end at or before the next one's base offset.
fn check_segments_ordered(segments: &[Segment]) -> Result<(), LogError> {
    for pair in segments.windows(2) {
        if pair[0].next_offset() > pair[1].base_offset() {
            return Err(LogError::Corrupt(format!(
                "{} ends at offset {}, past the next segment's base offset {}",
                pair[0].log_path().display(),
                pair[0].next_offset(),
                pair[1].base_offset()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::config::LogConfig;
    use crate::log::partition_log::PartitionLog;
    use crate::log::test_support::{LogModel, encode_batch};
    use bytes::Bytes;
    use kafka_protocol::records::Compression;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1_000,
            index_interval_bytes: 150,
            ..LogConfig::default()
        }
    }

    fn filled(dir: &Path) -> LogModel {
        let mut model = LogModel::open(dir, config());
        for index in 0..30 {
            model.append_records(1 + index % 3, 1_000 + index as i64, 40);
        }
        assert!(model.log_segment_bases().len() > 3);
        model
    }

    impl LogModel {
        fn log_segment_bases(&self) -> Vec<i64> {
            let mut bases = list_segment_bases(self.log.dir()).unwrap();
            bases.sort();
            bases
        }

        fn active_log_path(&self) -> PathBuf {
            let base = *self.log_segment_bases().last().unwrap();
            segment_file(self.log.dir(), base, LOG_EXTENSION)
        }

        /// Drop the log without any shutdown work, like `kill -9`, and open it again.
        fn crash_and_reopen(&mut self) {
            let dir = self.log.dir().to_path_buf();
            let config = self.log.config().clone();
            self.log = PartitionLog::open(dir, config, 0).unwrap();
        }

        /// Flush as the broker's shutdown does, drop the log and open it after a clean stop.
        fn close_cleanly_and_reopen(&mut self) {
            self.log.flush().unwrap();
            let dir = self.log.dir().to_path_buf();
            let config = self.log.config().clone();
            self.log = PartitionLog::open_after(dir, config, 0, LastShutdown::Clean).unwrap();
        }

        fn forget_last_batch(&mut self) {
            self.batches.pop();
        }

        fn assert_intact(&self) {
            let log_end = self.log.log_end_offset();
            let expected_end = self.batches.last().map_or(0, |(h, _)| h.last_offset() + 1);
            assert_eq!(log_end, expected_end);
            for offset in (self.log.log_start_offset()..log_end).step_by(3) {
                self.assert_reads_from(offset);
            }
        }
    }

    fn file_length(path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    fn set_file_length(path: &Path, length: u64) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(length)
            .unwrap();
    }

    /// Flips a byte in the last batch of `path` (its CRC no longer matches); returns the
    /// file's new bytes.
    fn flip_byte_near_the_end(path: &Path) -> Vec<u8> {
        let mut bytes = fs::read(path).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 0x5a;
        fs::write(path, &bytes).unwrap();
        bytes
    }

    fn append_bytes(path: &Path, bytes: &[u8]) {
        OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    #[test]
    fn empty_directory_gets_one_segment_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let model = LogModel::open(&dir.path().join("t-0"), config());
        assert_eq!(model.log_segment_bases(), vec![0]);
        assert_eq!(
            (model.log.log_start_offset(), model.log.log_end_offset()),
            (0, 0)
        );
        assert!(segment_file(model.log.dir(), 0, INDEX_EXTENSION).exists());
        assert!(segment_file(model.log.dir(), 0, TIME_INDEX_EXTENSION).exists());
    }

    /// Tears the last batch in half, reopens with `reopen`, and checks the batch is cut and
    /// appends continue.
    fn check_torn_last_batch_is_cut(reopen: fn(&mut LogModel)) {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let path = model.active_log_path();
        let last_bytes = model.batches.last().unwrap().1.len() as u64;
        let length = file_length(&path);
        set_file_length(&path, length - last_bytes / 2);
        reopen(&mut model);
        model.forget_last_batch();
        assert_eq!(file_length(&path), length - last_bytes);
        model.assert_intact();
        model.append_records(2, 5_000, 40);
        reopen(&mut model);
        model.assert_intact();
    }

    #[test]
    fn torn_last_batch_is_cut_and_appends_continue() {
        check_torn_last_batch_is_cut(LogModel::crash_and_reopen);
    }

    #[test]
    fn torn_header_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let path = model.active_log_path();
        let next = model.batches.last().unwrap().0.last_offset() + 1;
        let mut batch = encode_batch(&[1, 2], Compression::None);
        crate::log::stamp_batch(&mut batch, next, 1, None);
        let length = file_length(&path);
        append_bytes(&path, &batch[..30]);
        model.crash_and_reopen();
        assert_eq!(file_length(&path), length);
        model.assert_intact();
    }

    #[test]
    fn flipped_bytes_in_the_last_batch_drop_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let path = model.active_log_path();
        flip_byte_near_the_end(&path);
        model.crash_and_reopen();
        model.forget_last_batch();
        model.assert_intact();
        model.append_records(1, 6_000, 40);
        model.assert_intact();
    }

    #[test]
    fn trailing_garbage_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let path = model.active_log_path();
        let length = file_length(&path);
        append_bytes(&path, &[0xab; 500]);
        model.crash_and_reopen();
        assert_eq!(file_length(&path), length);
        model.assert_intact();
    }

    #[test]
    fn offsets_going_backwards_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let path = model.active_log_path();
        let length = file_length(&path);
        // A valid batch (good CRC) whose offsets repeat earlier ones.
        let earlier = model.batches[model.batches.len() - 2].1.clone();
        append_bytes(&path, &earlier);
        model.crash_and_reopen();
        assert_eq!(file_length(&path), length);
        model.assert_intact();
    }

    #[test]
    fn a_fully_torn_active_segment_becomes_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let active_base = *model.log_segment_bases().last().unwrap();
        let path = model.active_log_path();
        set_file_length(&path, 20);
        model.crash_and_reopen();
        model
            .batches
            .retain(|(header, _)| header.base_offset < active_base);
        assert_eq!(model.log.log_end_offset(), active_base);
        model.assert_intact();
        model.append_records(1, 7_000, 40);
        assert_eq!(model.batches.last().unwrap().0.base_offset, active_base);
    }

    #[test]
    fn a_clean_reopen_restores_the_same_state_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let before = (
            model.log.max_timestamp_offset().unwrap(),
            model.log.offset_for_timestamp(1_028).unwrap(),
        );
        model.close_cleanly_and_reopen();
        model.assert_intact();
        let after = (
            model.log.max_timestamp_offset().unwrap(),
            model.log.offset_for_timestamp(1_028).unwrap(),
        );
        assert_eq!(after, before);
        for index in 0..12 {
            model.append_records(2, 2_000 + index, 40);
        }
        model.close_cleanly_and_reopen();
        model.assert_intact();
        model.crash_and_reopen();
        model.assert_intact();
    }

    #[test]
    fn after_a_clean_shutdown_the_active_segment_is_not_crc_scanned() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let path = model.active_log_path();
        let bytes = flip_byte_near_the_end(&path);
        // The marker vouches for the file, so the (now bad) CRC is not checked: the batch
        // stays, proof that the clean path read no record bytes.
        let last_bytes = model.batches.last().unwrap().1.len();
        let tail = Bytes::copy_from_slice(&bytes[bytes.len() - last_bytes..]);
        model.batches.last_mut().unwrap().1 = tail;
        model.close_cleanly_and_reopen();
        model.assert_intact();
        // Without the marker the same file is CRC-scanned and the batch is cut.
        model.crash_and_reopen();
        model.forget_last_batch();
        model.assert_intact();
    }

    #[test]
    fn a_clean_marker_over_a_torn_active_segment_falls_back_to_recovery() {
        check_torn_last_batch_is_cut(LogModel::close_cleanly_and_reopen);
    }

    #[test]
    fn missing_index_files_are_rebuilt_identically() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let base = model.log_segment_bases()[1];
        let index = segment_file(dir.path(), base, INDEX_EXTENSION);
        let time_index = segment_file(dir.path(), base, TIME_INDEX_EXTENSION);
        let (index_bytes, time_bytes) = (fs::read(&index).unwrap(), fs::read(&time_index).unwrap());
        assert!(!index_bytes.is_empty() && !time_bytes.is_empty());
        fs::remove_file(&index).unwrap();
        model.crash_and_reopen();
        assert_eq!(fs::read(&index).unwrap(), index_bytes);
        assert_eq!(fs::read(&time_index).unwrap(), time_bytes);
        model.assert_intact();
        assert_eq!(
            model.log.offset_for_timestamp(1_010).unwrap().unwrap().1,
            1_010
        );
    }

    #[test]
    fn inconsistent_index_files_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let base = model.log_segment_bases()[0];
        let index = segment_file(dir.path(), base, INDEX_EXTENSION);
        let index_bytes = fs::read(&index).unwrap();
        // An entry pointing at the right offset but at another batch's position.
        let mut wrong = index_bytes.clone();
        let last = wrong.len() - 1;
        wrong[last] = wrong[last].wrapping_sub(1);
        fs::write(&index, &wrong).unwrap();
        let time_index = segment_file(dir.path(), base, TIME_INDEX_EXTENSION);
        fs::write(&time_index, [0xff; 7]).unwrap();
        model.crash_and_reopen();
        assert_eq!(fs::read(&index).unwrap(), index_bytes);
        model.assert_intact();
    }

    /// Batches of `model` in the segment starting at `bases[index]`, by position.
    fn batches_in_segment(model: &LogModel, bases: &[i64], index: usize) -> Vec<usize> {
        let end = bases.get(index + 1).copied().unwrap_or(i64::MAX);
        (0..model.batches.len())
            .filter(|&batch| {
                let base = model.batches[batch].0.base_offset;
                base >= bases[index] && base < end
            })
            .collect()
    }

    /// After a cut at `cut_offset` inside the segment at `bases[kept - 1]`: the log ends
    /// there, only the first `kept` segments remain (files included), everything before
    /// the cut reads back, and appends continue at the cut offset across a restart.
    fn assert_log_ends_at(model: &mut LogModel, bases: &[i64], kept: usize, cut_offset: i64) {
        assert_eq!(model.log.log_end_offset(), cut_offset);
        assert_eq!(model.log_segment_bases(), bases[..kept].to_vec());
        for &gone in &bases[kept..] {
            for extension in [LOG_EXTENSION, INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
                let path = segment_file(model.log.dir(), gone, extension);
                assert!(!path.exists(), "{} survived the cut", path.display());
            }
            // The data itself is kept aside for the operator, never deleted.
            let log = segment_file(model.log.dir(), gone, LOG_EXTENSION);
            let mut aside = log.into_os_string();
            aside.push(AFTER_CORRUPTION_SUFFIX);
            assert!(PathBuf::from(aside).exists(), "segment {gone} was deleted");
        }
        model
            .batches
            .retain(|(header, _)| header.base_offset < cut_offset);
        model.assert_intact();
        let past_end = model.log.read(cut_offset + 1, usize::MAX, i64::MAX, true);
        assert!(
            matches!(past_end, Err(LogError::OffsetOutOfRange { .. })),
            "{past_end:?}"
        );
        model.append_records(2, 9_000, 40);
        assert_eq!(model.batches.last().unwrap().0.base_offset, cut_offset);
        model.crash_and_reopen();
        model.assert_intact();
    }

    #[test]
    fn a_torn_sealed_segment_ends_the_log_and_later_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let bases = model.log_segment_bases();
        let path = segment_file(dir.path(), bases[1], LOG_EXTENSION);
        let torn = *batches_in_segment(&model, &bases, 1).last().unwrap();
        set_file_length(&path, file_length(&path) - 10);
        model.crash_and_reopen();
        let cut_offset = model.batches[torn].0.base_offset;
        assert_log_ends_at(&mut model, &bases, 2, cut_offset);
    }

    #[test]
    fn a_bad_crc_mid_sealed_segment_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let bases = model.log_segment_bases();
        let in_segment = batches_in_segment(&model, &bases, 1);
        assert!(in_segment.len() >= 3, "{in_segment:?}");
        let damaged = in_segment[1];
        // A flipped payload byte of the second batch, with the index gone (as if the crash
        // came before it was flushed), so opening must scan the segment.
        let position: usize = in_segment[..1]
            .iter()
            .map(|&batch| model.batches[batch].1.len())
            .sum();
        let path = segment_file(dir.path(), bases[1], LOG_EXTENSION);
        let mut bytes = fs::read(&path).unwrap();
        bytes[position + model.batches[damaged].1.len() - 3] ^= 0x5a;
        fs::write(&path, &bytes).unwrap();
        fs::remove_file(segment_file(dir.path(), bases[1], INDEX_EXTENSION)).unwrap();
        model.crash_and_reopen();
        let cut_offset = model.batches[damaged].0.base_offset;
        assert_eq!(file_length(&path), position as u64);
        assert_log_ends_at(&mut model, &bases, 2, cut_offset);
    }

    #[test]
    fn a_damaged_first_batch_leaves_an_empty_log_from_the_segment_base() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let bases = model.log_segment_bases();
        let path = segment_file(dir.path(), bases[1], LOG_EXTENSION);
        let mut bytes = fs::read(&path).unwrap();
        bytes[BATCH_HEADER_BYTES + 2] ^= 0x5a;
        fs::write(&path, &bytes).unwrap();
        fs::remove_file(segment_file(dir.path(), bases[1], INDEX_EXTENSION)).unwrap();
        model.crash_and_reopen();
        assert_eq!(file_length(&path), 0);
        assert_log_ends_at(&mut model, &bases, 2, bases[1]);
    }

    #[test]
    fn leftover_and_orphan_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = filled(dir.path());
        let leftovers = [
            "00000000000000000000.log.deleted",
            "00000000000000000007.log.cleaned",
            "00000000000000000007.index.swap",
            "00000000000000099999.index",
            "00000000000000099999.timeindex",
        ];
        for name in leftovers {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        fs::write(dir.path().join("leader-epoch-checkpoint"), b"0\n0\n").unwrap();
        model.crash_and_reopen();
        for name in leftovers {
            assert!(!dir.path().join(name).exists(), "{name}");
        }
        assert!(dir.path().join("leader-epoch-checkpoint").exists());
        model.assert_intact();
    }

    #[test]
    fn overlapping_segments_refuse_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let model = filled(dir.path());
        let bases = model.log_segment_bases();
        let second = segment_file(dir.path(), bases[1], LOG_EXTENSION);
        let moved = segment_file(dir.path(), bases[0] + 1, LOG_EXTENSION);
        drop(model);
        fs::rename(&second, &moved).unwrap();
        let opened = PartitionLog::open(dir.path().to_path_buf(), config(), 0);
        assert!(matches!(opened, Err(LogError::Corrupt(_))), "{opened:?}");
    }

    /// Environment variable naming the directory the child producer writes to.
    const KILL_DIR_VARIABLE: &str = "LOGDEV_KILL_NINE_DIR";
    /// Acknowledged appends the parent waits for before killing the child.
    const ACKS_BEFORE_KILL: usize = 300;
    /// Bound on the child's produce loop, in case nobody kills it.
    const CHILD_APPENDS_MAX: usize = 1_000_000;

    fn kill_config() -> LogConfig {
        LogConfig {
            segment_bytes: 64 * 1024,
            index_interval_bytes: 1_024,
            ..LogConfig::default()
        }
    }

    /// The producer half of `kill_nine_mid_produce_loses_no_acknowledged_record`: appends
    /// until killed, printing each acknowledged last offset. Does nothing when run alone.
    #[test]
    #[ignore = "child process of kill_nine_mid_produce_loses_no_acknowledged_record"]
    fn kill_nine_child_producer() {
        let Some(dir) = std::env::var_os(KILL_DIR_VARIABLE) else {
            return;
        };
        let mut log = PartitionLog::open(PathBuf::from(dir), kill_config(), 0).unwrap();
        let mut stdout = std::io::stdout();
        for index in 0..CHILD_APPENDS_MAX {
            let timestamps = vec![index as i64; 1 + index % 20];
            let batch =
                crate::log::test_support::encode_batch_sized(&timestamps, Compression::None, 100);
            let (records, headers) = crate::log::test_support::validated(batch);
            let info = log.append(&records, &headers, 1, index as i64).unwrap();
            writeln!(stdout, "acked {}", info.last_offset).unwrap();
            stdout.flush().unwrap();
        }
    }

    #[test]
    fn kill_nine_mid_produce_loses_no_acknowledged_record() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "log::recovery::tests::kill_nine_child_producer",
                "--exact",
                "--ignored",
            ])
            .arg("--nocapture")
            .env(KILL_DIR_VARIABLE, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let acks = stdout.lines().map(Result::unwrap).filter_map(|line| {
            line.strip_prefix("acked ")
                .map(|offset| offset.parse::<i64>().unwrap())
        });
        let last_acked = acks
            .take(ACKS_BEFORE_KILL)
            .last()
            .expect("the child produced");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let log = PartitionLog::open(dir.path().to_path_buf(), kill_config(), 0).unwrap();
        assert!(
            log.log_end_offset() > last_acked,
            "lost acknowledged records"
        );
        let read = log.read(0, usize::MAX, i64::MAX, true).unwrap();
        let headers = crate::log::validate_batches(&read.records, u32::MAX).unwrap();
        let mut next_offset = 0;
        for header in &headers {
            assert_eq!(header.base_offset, next_offset);
            next_offset = header.last_offset() + 1;
        }
        assert_eq!(next_offset, log.log_end_offset());
    }
}
