//! Reading a partition's committed records back into memory, as the group and transaction
//! coordinators do when they load `__consumer_offsets` / `__transaction_state`.
//!
//! From an offset to the high watermark (nothing uncommitted is ever loaded), in chunks of
//! [`CHUNK_BYTES`]; each batch is walked under the partition's decompression cap before it
//! is decoded, so a compression bomb stored before produce validation existed costs bounded
//! memory here too. A batch that cannot be read is counted and skipped; a chunk with no
//! whole batch, or a header that is not a v2 batch (the next batch cannot be found), ends
//! the replay rather than spinning: the caller reports where it stopped.

use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use super::{Partition, ReplicaError};
use crate::log::config::DECOMPRESSED_BYTES_FLOOR;
use crate::log::iter_batches;
use crate::log::records::{OffsetDeltas, walk_batch};

/// How much one read of a load asks for.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Where a replay ended and what it could not read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayEnd {
    /// The offset after the last batch read (where a later replay continues).
    pub next_offset: i64,
    pub skipped_batches: usize,
}

/// Hands every record of every readable batch from `from` (or the log start, if later) to
/// the high watermark to `on_record`, in log order.
pub fn replay_committed(
    log: &Partition,
    from: i64,
    on_record: &mut dyn FnMut(&Record),
) -> Result<ReplayEnd, ReplicaError> {
    let (log_start, high_watermark, _) = log.offsets()?;
    let decompressed_bytes_max = log
        .config()
        .map_or(DECOMPRESSED_BYTES_FLOOR, |c| c.decompressed_bytes_max());
    let mut end = ReplayEnd {
        next_offset: log_start.max(from),
        skipped_batches: 0,
    };
    while end.next_offset < high_watermark {
        // `read` stops at the high watermark.
        let read = log.read(end.next_offset, CHUNK_BYTES, true)?;
        match replay_chunk(&read.records, decompressed_bytes_max, &mut end, on_record) {
            Some(next) if next > end.next_offset => end.next_offset = next,
            _ => break,
        }
    }
    Ok(end)
}

/// Replays the whole batches in `records`; returns the offset after the last batch seen.
fn replay_chunk(
    records: &Bytes,
    decompressed_bytes_max: usize,
    end: &mut ReplayEnd,
    on_record: &mut dyn FnMut(&Record),
) -> Option<i64> {
    let mut next = None;
    for item in iter_batches(records) {
        let Ok((position, header)) = item else {
            end.skipped_batches += 1;
            break;
        };
        next = Some(header.last_offset() + 1);
        let batch = records.slice(position..position + header.total_bytes());
        // Stored batches: one the cleaner compacted keeps its records' offset deltas,
        // gaps included, and must replay in full (its offsets were acknowledged).
        let deltas = OffsetDeltas::Increasing;
        let readable = walk_batch(&batch, &header, deltas, decompressed_bytes_max, &mut |_| {})
            .map_err(|error| error.to_string())
            .and_then(|()| {
                RecordBatchDecoder::decode(&mut batch.clone()).map_err(|e| e.to_string())
            });
        match readable {
            Ok(set) => set.records.iter().for_each(&mut *on_record),
            Err(_) => end.skipped_batches += 1,
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::set_last_offset_delta;
    use crate::log::test_support::{batch_around, record_bytes};

    /// A stored batch at `base_offset` of records at `deltas`, keyed by their offsets,
    /// whose header ends at `last_offset_delta`.
    fn stored_batch(base_offset: i64, deltas: &[i64], last_offset_delta: i32) -> Vec<u8> {
        let body: Vec<u8> = deltas
            .iter()
            .flat_map(|&d| {
                record_bytes(d, 0, Some(format!("k{}", base_offset + d).as_bytes()), b"v")
            })
            .collect();
        let mut batch = batch_around(&body, 0, deltas.len() as i32, base_offset);
        set_last_offset_delta(&mut batch, last_offset_delta);
        batch.to_vec()
    }

    #[test]
    fn a_batch_the_cleaner_left_with_gaps_replays_in_full() {
        let mut chunk = stored_batch(10, &[0, 2], 3); // compacted: 10 and 12 survive of 10..=13
        chunk.extend(stored_batch(14, &[1, 0], 1)); // deltas going back: unreadable
        chunk.extend(stored_batch(16, &[0, 1], 1));
        let mut end = ReplayEnd::default();
        let mut seen = Vec::new();
        let next = replay_chunk(&Bytes::from(chunk), 1 << 20, &mut end, &mut |record| {
            seen.push((record.offset, record.key.clone().unwrap()))
        });
        let want = [(10, "k10"), (12, "k12"), (16, "k16"), (17, "k17")];
        let want: Vec<(i64, Bytes)> = want.map(|(o, k)| (o, Bytes::from(k))).into();
        assert_eq!(seen, want);
        assert_eq!(next, Some(18));
        assert_eq!(
            end.skipped_batches, 1,
            "only the batch whose deltas go back"
        );
    }
}
