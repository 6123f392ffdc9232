//! KIP-534's delete horizon on a batch: attribute bit 6 set, and the base timestamp is then
//! the time after which the cleaner may remove the batch (Kafka's
//! `DefaultRecordBatch.deleteHorizonMs`). The cleaner stamps a transaction marker with it
//! the first time it finds the marker's transaction without data (unless producer state
//! still needs the marker: Kafka stamps those too, we stamp them once they are no longer
//! needed, which only keeps them longer), so the marker stays `delete.retention.ms` from
//! then on, whatever the age of its segment: a consumer or follower that copied the
//! transaction's data before it was cleaned still meets the marker if it is no further
//! behind than that. (A segment whose timestamps lie in the future, a client's CreateTime,
//! used to keep its markers until then; now the stamp decides, as in Kafka.)
//!
//! Stamping keeps every record's timestamp: the records' timestamp deltas are rewritten
//! against the new base, as Kafka's builder writes them. Only uncompressed batches are
//! stamped (markers always are).

use crate::log::batch::{BATCH_HEADER_BYTES, BatchHeader, put_varint, seal_with_length};
use crate::log::error::BatchError;

/// Kafka's `DELETE_HORIZON_FLAG_MASK`.
pub const DELETE_HORIZON_FLAG: i16 = 0x40;

const ATTRIBUTES_AT: usize = 21;
const BASE_TIMESTAMP_AT: usize = 27;

/// The delete horizon `header` carries, if stamped.
pub fn delete_horizon_ms(header: &BatchHeader) -> Option<i64> {
    (header.attributes & DELETE_HORIZON_FLAG != 0).then_some(header.base_timestamp)
}

/// A copy of `batch` (one whole, uncompressed v2 batch) stamped with `horizon_ms`.
pub fn stamp(batch: &[u8], horizon_ms: i64) -> Result<Vec<u8>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    // A fresh CRC over damaged bytes would hide the damage from every later reader.
    let end = header.total_bytes();
    if batch.len() < end || !crate::log::batch::crc_matches(&batch[..end], header.crc) {
        return Err(BatchError::Corrupt(
            "the batch fails its CRC: not stamped".into(),
        ));
    }
    if header.compression_code() != 0 {
        return Err(BatchError::Corrupt(
            "only an uncompressed batch gets a delete horizon".into(),
        ));
    }
    let mut records = batch
        .get(BATCH_HEADER_BYTES..end)
        .ok_or_else(|| BatchError::Corrupt("batch cut short".into()))?;
    let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
    for _ in 0..header.record_count.max(0) {
        let length = read_varint(&mut records)?;
        let body = usize::try_from(length)
            .ok()
            .and_then(|length| records.get(..length))
            .ok_or_else(|| BatchError::Corrupt(format!("bad record length {length}")))?;
        records = &records[body.len()..];
        let (&attributes, mut rest) = body
            .split_first()
            .ok_or_else(|| BatchError::Corrupt("empty record".into()))?;
        let timestamp_ms = header.base_timestamp.wrapping_add(read_varint(&mut rest)?);
        let mut rewritten = vec![attributes];
        put_varint(&mut rewritten, timestamp_ms.wrapping_sub(horizon_ms));
        rewritten.extend_from_slice(rest);
        put_varint(&mut out, rewritten.len() as i64);
        out.extend_from_slice(&rewritten);
    }
    if !records.is_empty() {
        return Err(BatchError::Corrupt("bytes after the last record".into()));
    }
    let attributes = header.attributes | DELETE_HORIZON_FLAG;
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    out[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&horizon_ms.to_be_bytes());
    seal_with_length(&mut out)?;
    Ok(out)
}

/// Kafka's zig-zag varint or varlong (the same encoding; 10 bytes at most).
fn read_varint(bytes: &mut &[u8]) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = bytes
            .split_first()
            .ok_or_else(|| BatchError::Corrupt("record cut short".into()))?;
        *bytes = rest;
        raw |= u64::from(byte & 0x7f).wrapping_shl(shift);
        if byte & 0x80 == 0 {
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    Err(BatchError::Corrupt("varint too long".into()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::log::batch::validate_replicated_batches;

    /// A commit marker as the coordinator writes it, at time 5_000.
    fn marker() -> Vec<u8> {
        use crate::txn::marker::encode_marker_batch;
        use crate::txn::producer_state::TxnMarker;
        let marker = TxnMarker {
            committed: true,
            coordinator_epoch: 3,
        };
        encode_marker_batch(7, 1, marker, 5_000).to_vec()
    }

    #[test]
    fn stamping_sets_the_flag_and_base_and_keeps_the_record_timestamps() {
        let original = marker();
        let stamped = stamp(&original, 90_000_000).unwrap();
        let header = BatchHeader::parse(&stamped).unwrap();
        assert_eq!(delete_horizon_ms(&header), Some(90_000_000));
        assert_eq!(
            delete_horizon_ms(&BatchHeader::parse(&original).unwrap()),
            None
        );
        assert!(header.is_control() && header.is_transactional());
        assert_eq!(header.max_timestamp, 5_000);
        assert_eq!(header.record_count, 1);
        // A valid batch (CRC and lengths), readable as before, its record still at 5_000.
        validate_replicated_batches(&stamped).unwrap();
        let times =
            crate::log::batch::record_timestamps(Bytes::from(stamped.clone()), &header).unwrap();
        assert_eq!(times.len(), 1);
        assert_eq!(times[0].timestamp_ms, 5_000);
        // Stamping again moves only the horizon.
        let again = stamp(&stamped, 100).unwrap();
        let header = BatchHeader::parse(&again).unwrap();
        assert_eq!(delete_horizon_ms(&header), Some(100));
        let times = crate::log::batch::record_timestamps(Bytes::from(again), &header).unwrap();
        assert_eq!(times[0].timestamp_ms, 5_000);
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for value in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut slice = &out[..];
            assert_eq!(read_varint(&mut slice).unwrap(), value);
            assert!(slice.is_empty());
        }
    }

    #[test]
    fn a_cut_or_damaged_batch_is_refused() {
        let original = marker();
        assert!(stamp(&original[..original.len() - 1], 1).is_err());
        let mut damaged = original.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(stamp(&damaged, 1).is_err(), "the CRC no longer matches");
    }
}
