//! Producer-state snapshots: `<20-digit offset>.snapshot` files beside a partition's
//! segments, as Kafka keeps them, so opening a partition reads only the batch headers after
//! the newest snapshot instead of every header from the log start.
//!
//! A snapshot at offset N holds the [`ProducerStateTable`] as of the log up to N - 1 (every
//! batch below N applied, none at or above). The partition writes one when a segment rolls
//! (N = the new segment's base offset) and at clean shutdown (N = the log end).
//!
//! File layout (ours, big-endian; Kafka's own format keeps only one batch per producer and
//! our table needs the last five):
//!
//! ```text
//! version i16 = 3 | crc u32 (CRC-32C of every byte after it) | offset i64 | count i32
//! count x { producer_id i64 | epoch i16 | coordinator_epoch i32
//!           | txn_first_offset i64 (-1: no open transaction) | last_timestamp i64
//!           | batches i16 (0..=5)
//!           batches x { first_sequence i32 | last_sequence i32 | first_offset i64
//!                       | last_offset i64 | max_timestamp i64 } }
//! ```
//!
//! Version 2 added the transactional fields (Kafka's snapshot v1 has the same two,
//! `CoordinatorEpoch` and `CurrentTxnFirstOffset`); a producer known only from a marker has
//! no batches. Version 3 added `last_timestamp` (Kafka's `Timestamp`), the time
//! `producer.id.expiration.ms` ages a producer from; it is the last batch's max timestamp
//! or the last marker's timestamp. Version 2 files (no `last_timestamp`: the last batch's
//! max timestamp is used, or -1 for a producer known only from a marker, which then
//! expires at the first check, as a Kafka entry with no timestamp would) and version 1
//! files (no transactional fields, 1..=5 batches: producers with no open transaction)
//! still load.
//!
//! Snapshots are derived data: a snapshot that is missing, unreadable or fails its checks
//! is ignored (and logged), and the next older one, or a full header scan, is used instead.
//!
//! Durability, argued: a snapshot is published by write-temporary + rename (readers never
//! see half a file) but without fsync. A power loss can then leave it missing (an older one
//! or a scan is used), or empty or partial (the CRC refuses it); it cannot leave a valid
//! snapshot that disagrees with the log, because the log is fsynced up to the snapshot's
//! offset before it is written (a roll seals and fsyncs the old segment; clean shutdown
//! flushes first). Skipping the two fsyncs per partition keeps a clean shutdown of many
//! partitions from costing seconds. Removals are the exception: a snapshot removed because
//! the log was truncated below it must not come back after a crash and be taken for the
//! state of different batches at the same offsets, so `remove_outside` fsyncs the
//! directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::txn::producer_state::{BATCHES_REMEMBERED, BatchRecord, ProducerStateTable, TxnFields};

pub const SNAPSHOT_EXTENSION: &str = "snapshot";
/// Snapshots kept per partition: the newest, and an older one in case it is damaged.
pub const SNAPSHOTS_KEPT: usize = 2;
const SNAPSHOT_VERSION: i16 = 3;
/// Before `last_timestamp`; still read.
const SNAPSHOT_VERSION_TXN: i16 = 2;
/// Before the transactional fields; still read.
const SNAPSHOT_VERSION_IDEMPOTENT: i16 = 1;
/// `txn_first_offset` of a producer with no open transaction.
const NO_TXN: i64 = -1;
const TEMPORARY_SUFFIX: &str = ".tmp";
/// Digits in a snapshot file name's offset, as in segment names.
const OFFSET_DIGITS: usize = 20;
/// version + crc.
const PREAMBLE_BYTES: usize = 2 + 4;
const PRODUCER_BYTES_V1: usize = 8 + 2 + 2;
const PRODUCER_BYTES_V2: usize = 8 + 2 + 4 + 8 + 2;
const PRODUCER_BYTES: usize = 8 + 2 + 4 + 8 + 8 + 2;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("producer snapshot i/o: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt producer snapshot: {0}")]
    Corrupt(String),
}

pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_EXTENSION}"))
}

/// The bytes of a snapshot of `table` at `offset`.
pub fn encode(table: &ProducerStateTable, offset: i64) -> Vec<u8> {
    let mut producers: Vec<_> = table.producers().collect();
    producers.sort_by_key(|producer| producer.producer_id);
    let mut body = Vec::with_capacity(12 + producers.len() * (PRODUCER_BYTES + BATCH_BYTES));
    body.extend_from_slice(&offset.to_be_bytes());
    body.extend_from_slice(&(producers.len() as i32).to_be_bytes());
    for producer in producers {
        let batches = producer.batches;
        assert!(
            batches.len() <= BATCHES_REMEMBERED,
            "the table bounds its batches"
        );
        body.extend_from_slice(&producer.producer_id.to_be_bytes());
        body.extend_from_slice(&producer.epoch.to_be_bytes());
        body.extend_from_slice(&producer.txn.coordinator_epoch.to_be_bytes());
        let txn_first_offset = producer.txn.txn_first_offset.unwrap_or(NO_TXN);
        body.extend_from_slice(&txn_first_offset.to_be_bytes());
        body.extend_from_slice(&producer.last_timestamp.to_be_bytes());
        body.extend_from_slice(&(batches.len() as i16).to_be_bytes());
        for batch in batches {
            body.extend_from_slice(&batch.first_sequence.to_be_bytes());
            body.extend_from_slice(&batch.last_sequence.to_be_bytes());
            body.extend_from_slice(&batch.first_offset.to_be_bytes());
            body.extend_from_slice(&batch.last_offset.to_be_bytes());
            body.extend_from_slice(&batch.max_timestamp.to_be_bytes());
        }
    }
    let mut bytes = Vec::with_capacity(PREAMBLE_BYTES + body.len());
    bytes.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// Decodes a snapshot that must be at `offset` (the offset its file name says).
pub fn decode(bytes: &[u8], offset: i64) -> Result<ProducerStateTable, SnapshotError> {
    let mut reader = Reader { bytes, position: 0 };
    let version = reader.i16()?;
    let producer_bytes = match version {
        SNAPSHOT_VERSION => PRODUCER_BYTES,
        SNAPSHOT_VERSION_TXN => PRODUCER_BYTES_V2,
        SNAPSHOT_VERSION_IDEMPOTENT => PRODUCER_BYTES_V1,
        _ => return Err(corrupt(format!("unknown version {version}"))),
    };
    let with_txn = version >= SNAPSHOT_VERSION_TXN;
    let with_timestamp = version >= SNAPSHOT_VERSION;
    let crc = reader.u32()?;
    if crc32c::crc32c(&bytes[PREAMBLE_BYTES..]) != crc {
        return Err(corrupt("CRC-32C mismatch".into()));
    }
    let stored_offset = reader.i64()?;
    if stored_offset != offset {
        return Err(corrupt(format!(
            "holds offset {stored_offset}, named {offset}"
        )));
    }
    let count = reader.count(producer_bytes)?;
    let mut table = ProducerStateTable::default();
    for _ in 0..count {
        let producer_id = reader.i64()?;
        let epoch = reader.i16()?;
        let txn = if with_txn {
            reader.txn_fields(offset)?
        } else {
            TxnFields::default()
        };
        let last_timestamp = match with_timestamp {
            true => Some(reader.i64()?),
            false => None,
        };
        let batches = reader.batches(if with_txn { 0 } else { 1 })?;
        if batches.iter().any(|batch| batch.last_offset >= offset) {
            return Err(corrupt(format!(
                "producer {producer_id} has a batch at {offset} or later"
            )));
        }
        table.restore(producer_id, epoch, txn, &batches);
        if let Some(timestamp) = last_timestamp {
            table.restore_last_timestamp(producer_id, timestamp);
        }
    }
    if reader.position != bytes.len() {
        return Err(corrupt("bytes after the last producer".into()));
    }
    Ok(table)
}

fn corrupt(why: String) -> SnapshotError {
    SnapshotError::Corrupt(why)
}

/// Reads big-endian fields, refusing to run past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let end = self.position + N;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or_else(|| corrupt(format!("ends inside a field at byte {}", self.position)))?;
        self.position = end;
        Ok(slice.try_into().expect("slice of N bytes"))
    }

    fn i16(&mut self) -> Result<i16, SnapshotError> {
        self.take().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, SnapshotError> {
        self.take().map(i32::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        self.take().map(u32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        self.take().map(i64::from_be_bytes)
    }

    /// A count of items of at least `item_bytes` each, checked against what is left, so a
    /// damaged count cannot ask for a huge allocation.
    fn count(&mut self, item_bytes: usize) -> Result<usize, SnapshotError> {
        let count = self.i32()?;
        let remaining = self.bytes.len() - self.position;
        match usize::try_from(count) {
            Ok(count) if count.saturating_mul(item_bytes) <= remaining => Ok(count),
            _ => Err(corrupt(format!(
                "count {count} does not fit {remaining} bytes"
            ))),
        }
    }

    /// The transactional fields of a snapshot taken at `offset`: an open transaction must
    /// start below it.
    fn txn_fields(&mut self, offset: i64) -> Result<TxnFields, SnapshotError> {
        let coordinator_epoch = self.i32()?;
        let txn_first_offset = match self.i64()? {
            NO_TXN => None,
            first if (0..offset).contains(&first) => Some(first),
            first => return Err(corrupt(format!("open transaction at {first}"))),
        };
        if coordinator_epoch < -1 {
            return Err(corrupt(format!("coordinator epoch {coordinator_epoch}")));
        }
        Ok(TxnFields {
            coordinator_epoch,
            txn_first_offset,
        })
    }

    fn batches(&mut self, count_min: i16) -> Result<Vec<BatchRecord>, SnapshotError> {
        let count = self.i16()?;
        if !(count_min..=BATCHES_REMEMBERED as i16).contains(&count) {
            return Err(corrupt(format!("{count} batches for one producer")));
        }
        (0..count).map(|_| self.batch()).collect()
    }

    fn batch(&mut self) -> Result<BatchRecord, SnapshotError> {
        let batch = BatchRecord {
            first_sequence: self.i32()?,
            last_sequence: self.i32()?,
            first_offset: self.i64()?,
            last_offset: self.i64()?,
            max_timestamp: self.i64()?,
        };
        if batch.first_offset > batch.last_offset || batch.first_offset < 0 {
            return Err(corrupt(format!("batch offsets {batch:?}")));
        }
        Ok(batch)
    }
}

/// Publishes a snapshot of `table` at `offset` (temporary file, then rename; no fsync: see
/// the module comment), then removes all but the newest [`SNAPSHOTS_KEPT`]. The log must be
/// durable up to `offset`.
pub fn write(dir: &Path, offset: i64, table: &ProducerStateTable) -> io::Result<()> {
    let path = snapshot_path(dir, offset);
    let mut temporary = path.clone().into_os_string();
    temporary.push(TEMPORARY_SUFFIX);
    let mut file = File::create(&temporary)?;
    file.write_all(&encode(table, offset))?;
    drop(file);
    fs::rename(&temporary, &path)?;
    let listed = list(dir)?;
    let excess = listed.len().saturating_sub(SNAPSHOTS_KEPT);
    for &old in &listed[..excess] {
        // An older snapshot that reappears after a crash is still valid at its offset.
        fs::remove_file(snapshot_path(dir, old))?;
    }
    Ok(())
}

fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Offsets of the snapshots in `dir`, ascending. Leftover temporary files (a write that
/// did not finish) are removed.
pub fn list(dir: &Path) -> io::Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some((stem, extension)) = name.split_once('.') else {
            continue;
        };
        let digits = stem.len() == OFFSET_DIGITS && stem.bytes().all(|b| b.is_ascii_digit());
        let Some(offset) = stem.parse::<i64>().ok().filter(|_| digits) else {
            continue;
        };
        if extension == SNAPSHOT_EXTENSION {
            offsets.push(offset);
        } else if extension.strip_suffix(TEMPORARY_SUFFIX) == Some(SNAPSHOT_EXTENSION) {
            tracing::info!(file = %entry.path().display(), "removing an unfinished snapshot");
            fs::remove_file(entry.path())?;
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Removes the snapshots outside `[low, high]` (durably); returns how many went. Callers:
/// truncation (a snapshot above the new log end describes batches that are gone) and
/// retention (a snapshot below the log start would remember batches that are gone, and
/// answer OUT_OF_ORDER_SEQUENCE where an unknown producer is accepted).
pub fn remove_outside(dir: &Path, low: i64, high: i64) -> io::Result<usize> {
    let outside: Vec<i64> = list(dir)?
        .into_iter()
        .filter(|offset| !(low..=high).contains(offset))
        .collect();
    for &offset in &outside {
        fs::remove_file(snapshot_path(dir, offset))?;
    }
    if !outside.is_empty() {
        sync_directory(dir)?;
    }
    Ok(outside.len())
}

/// The newest valid snapshot at an offset in `[log_start, log_end]`, as (offset, table).
/// Snapshots outside that range are removed first; a bad one is logged and skipped.
pub fn load_newest(
    dir: &Path,
    log_start: i64,
    log_end: i64,
) -> io::Result<Option<(i64, ProducerStateTable)>> {
    remove_outside(dir, log_start, log_end)?;
    for offset in list(dir)?.into_iter().rev() {
        let path = snapshot_path(dir, offset);
        let loaded = fs::read(&path)
            .map_err(SnapshotError::from)
            .and_then(|bytes| decode(&bytes, offset));
        match loaded {
            Ok(table) => return Ok(Some((offset, table))),
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "ignoring a producer snapshot")
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::BatchHeader;
    use crate::txn::producer_state::SequenceCheck;
    use crate::txn::producer_state::tests::batch;

    /// A batch header with a distinct max timestamp, so the round trip checks it too.
    fn header(producer_id: i64, epoch: i16, sequence: i32, records: i32) -> BatchHeader {
        let mut header = batch(producer_id, epoch, sequence, records);
        header.max_timestamp = 1_000 + i64::from(sequence);
        header
    }

    /// Three producers, one with more batches than are remembered; returns (table, end).
    fn sample() -> (ProducerStateTable, i64) {
        let mut table = ProducerStateTable::default();
        let mut offset = 0;
        for (producer_id, epoch, batches) in [(7, 0, 8), (9, 3, 2), (i64::MAX - 1, 1, 1)] {
            for index in 0..batches {
                let header = header(producer_id, epoch, index * 2, 2);
                table.update(&header, offset);
                offset += 2;
            }
        }
        (table, offset)
    }

    #[test]
    fn round_trip_keeps_every_producer_and_batch() {
        let (table, end) = sample();
        let bytes = encode(&table, end);
        assert_eq!(&bytes[..2], &[0, 3], "version 3");
        let decoded = decode(&bytes, end).unwrap();
        assert_eq!(decoded, table);
        assert_eq!(decoded.producer_count(), 3);
        // Producer 7 wrote sequences 0..16 in 8 batches: the last five are remembered.
        match decoded.check(&header(7, 0, 10, 2)) {
            Ok(SequenceCheck::Duplicate(batch)) => assert_eq!(batch.first_offset, 10),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert!(
            decoded.check(&header(7, 0, 4, 2)).is_err(),
            "older than five batches"
        );
        assert_eq!(
            decoded.check(&header(7, 0, 16, 1)),
            Ok(SequenceCheck::Accept)
        );
        assert_eq!(encode(&decoded, end), bytes, "encoding is deterministic");
    }

    #[test]
    fn every_damaged_byte_and_truncation_is_refused() {
        let (table, end) = sample();
        let bytes = encode(&table, end);
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x10;
            assert!(decode(&damaged, end).is_err(), "flip at {position}");
        }
        for length in 0..bytes.len() {
            assert!(decode(&bytes[..length], end).is_err(), "cut at {length}");
        }
        assert!(decode(&bytes, end + 1).is_err(), "named for another offset");
        let empty = encode(&ProducerStateTable::default(), 0);
        assert_eq!(decode(&empty, 0).unwrap(), ProducerStateTable::default());
    }

    #[test]
    fn load_newest_skips_a_corrupt_snapshot_for_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let (table, end) = sample();
        let mut newer = table.clone();
        newer.update(&header(9, 3, 4, 1), end);
        write(dir.path(), end, &table).unwrap();
        write(dir.path(), end + 1, &newer).unwrap();
        let loaded = load_newest(dir.path(), 0, end + 1).unwrap();
        assert_eq!(loaded, Some((end + 1, newer)));

        let newest = snapshot_path(dir.path(), end + 1);
        let mut bytes = fs::read(&newest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&newest, &bytes).unwrap();
        let loaded = load_newest(dir.path(), 0, end + 1).unwrap();
        assert_eq!(loaded, Some((end, table)));
        fs::write(snapshot_path(dir.path(), end), b"").unwrap();
        assert_eq!(load_newest(dir.path(), 0, end + 1).unwrap(), None);
    }

    #[test]
    fn snapshots_outside_the_log_are_removed_and_only_a_few_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (table, _) = sample();
        for offset in [10, 20, 30] {
            write(dir.path(), offset * 100, &ProducerStateTable::default()).unwrap();
        }
        assert_eq!(list(dir.path()).unwrap(), vec![2_000, 3_000], "bounded");
        write(dir.path(), 2_500, &table).unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![2_500, 3_000]);
        // A truncation to 2_600: the snapshot at 3_000 describes batches that are gone.
        let loaded = load_newest(dir.path(), 0, 2_600).unwrap();
        assert_eq!(loaded.map(|(offset, _)| offset), Some(2_500));
        assert_eq!(list(dir.path()).unwrap(), vec![2_500]);
        // Retention moved the log start past it.
        assert_eq!(load_newest(dir.path(), 2_501, 4_000).unwrap(), None);
        assert!(list(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn unfinished_temporary_files_are_removed_and_other_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let temporary = dir.path().join("00000000000000000042.snapshot.tmp");
        fs::write(&temporary, b"half").unwrap();
        let segment = dir.path().join("00000000000000000000.log");
        fs::write(&segment, b"").unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
        assert!(!temporary.exists());
        assert!(segment.exists());
    }

    use crate::txn::producer_state::TxnMarker;
    use crate::txn::producer_state::tests::txn_batch;

    #[test]
    fn round_trip_keeps_open_transactions_and_coordinator_epochs() {
        let mut table = ProducerStateTable::default();
        table.update(&txn_batch(1, 0, 0, 2), 0);
        table.update(&txn_batch(2, 4, 0, 1), 2);
        let marker = TxnMarker {
            committed: true,
            coordinator_epoch: 7,
        };
        table.complete(2, 4, marker, 3);
        table.update(&txn_batch(2, 4, 1, 1), 4);
        // Known only from a marker: no batches.
        table.complete(
            3,
            1,
            TxnMarker {
                committed: false,
                coordinator_epoch: 2,
            },
            5,
        );
        // Completed transactions not yet below the high watermark are in memory only.
        table.on_high_watermark_updated(6);
        let bytes = encode(&table, 6);
        let decoded = decode(&bytes, 6).unwrap();
        assert_eq!(decoded, table);
        assert_eq!(decoded.first_unstable_offset(), Some(0));
        assert_eq!(
            decoded.open_transactions().collect::<Vec<_>>(),
            vec![(1, 0), (2, 4)]
        );
        let stale = TxnMarker {
            committed: true,
            coordinator_epoch: 6,
        };
        assert!(
            decoded.check_marker(2, 4, stale).is_err(),
            "coordinator epoch kept"
        );
        // An open transaction at or after the snapshot's offset cannot be.
        assert!(decode(&encode(&table, 4), 4).is_err());
    }

    #[test]
    fn last_timestamps_survive_a_round_trip_and_version_2_guesses_them() {
        let mut table = ProducerStateTable::default();
        let mut data = txn_batch(1, 0, 0, 2);
        data.max_timestamp = 4_000;
        table.update(&data, 0);
        let marker = TxnMarker {
            committed: true,
            coordinator_epoch: 1,
        };
        table.complete(1, 0, marker, 2);
        table.restore_last_timestamp(1, 4_500);
        table.complete(2, 3, marker, 3);
        table.restore_last_timestamp(2, 4_600);
        table.on_high_watermark_updated(4);
        let decoded = decode(&encode(&table, 4), 4).unwrap();
        assert_eq!(decoded, table);
        let stamps: Vec<(i64, i64)> = decoded
            .active_producers()
            .iter()
            .map(|p| (p.producer_id, p.last_timestamp))
            .collect();
        assert_eq!(stamps, vec![(1, 4_500), (2, 4_600)]);
        // The same producers in a version 2 file: the batch's timestamp, or none.
        let mut body = Vec::new();
        body.extend_from_slice(&4i64.to_be_bytes());
        body.extend_from_slice(&2i32.to_be_bytes());
        for (producer_id, epoch, batches) in [(1i64, 0i16, 1i16), (2, 3, 0)] {
            body.extend_from_slice(&producer_id.to_be_bytes());
            body.extend_from_slice(&epoch.to_be_bytes());
            body.extend_from_slice(&1i32.to_be_bytes());
            body.extend_from_slice(&(-1i64).to_be_bytes());
            body.extend_from_slice(&batches.to_be_bytes());
            for _ in 0..batches {
                for field in [0i32, 1] {
                    body.extend_from_slice(&field.to_be_bytes());
                }
                for field in [0i64, 1, 4_000] {
                    body.extend_from_slice(&field.to_be_bytes());
                }
            }
        }
        let mut bytes = 2i16.to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        let old = decode(&bytes, 4).unwrap();
        let stamps: Vec<(i64, i64)> = old
            .active_producers()
            .iter()
            .map(|p| (p.producer_id, p.last_timestamp))
            .collect();
        assert_eq!(stamps, vec![(1, 4_000), (2, -1)]);
    }

    /// A version 1 snapshot (before transactions), written field by field.
    fn version_1(offset: i64, producers: &[(i64, i16, BatchRecord)]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&(producers.len() as i32).to_be_bytes());
        for (producer_id, epoch, batch) in producers {
            body.extend_from_slice(&producer_id.to_be_bytes());
            body.extend_from_slice(&epoch.to_be_bytes());
            body.extend_from_slice(&1i16.to_be_bytes());
            body.extend_from_slice(&batch.first_sequence.to_be_bytes());
            body.extend_from_slice(&batch.last_sequence.to_be_bytes());
            body.extend_from_slice(&batch.first_offset.to_be_bytes());
            body.extend_from_slice(&batch.last_offset.to_be_bytes());
            body.extend_from_slice(&batch.max_timestamp.to_be_bytes());
        }
        let mut bytes = 1i16.to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    #[test]
    fn version_1_snapshots_still_load_without_transactions() {
        let batch = BatchRecord {
            first_sequence: 0,
            last_sequence: 1,
            first_offset: 0,
            last_offset: 1,
            max_timestamp: 5,
        };
        let bytes = version_1(2, &[(8, 3, batch)]);
        let table = decode(&bytes, 2).unwrap();
        let mut expected = ProducerStateTable::default();
        expected.restore(8, 3, TxnFields::default(), &[batch]);
        assert_eq!(table, expected);
        assert_eq!(table.first_unstable_offset(), None);
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(decode(&damaged, 2).is_err());
    }
}
