//! Transaction markers: the control batch that commits or aborts a producer's transaction
//! in one partition, in Kafka's format (`EndTransactionMarker`, `ControlRecordType`).
//!
//! ```text
//! batch: attributes = transactional (0x10) | control (0x20), uncompressed, CreateTime;
//!        producer id and epoch of the marker, base sequence -1, one record
//! record key:   version i16 = 0 | type i16 (0 abort, 1 commit)
//! record value: version i16 = 0 | coordinator_epoch i32
//! ```
//!
//! We write markers uncompressed, as Kafka does, and read only uncompressed ones: a
//! compressed control batch can only come from a client, and produce refuses client
//! control batches anyway.

use bytes::{BufMut, Bytes, BytesMut};

use crate::log::batch::{BATCH_HEADER_BYTES, put_varint};
use crate::log::{BatchError, BatchHeader};
use crate::txn::producer_state::TxnMarker;

const CONTROL_ATTRIBUTES: i16 = 0x10 | 0x20;
const ABORT_TYPE: i16 = 0;
const COMMIT_TYPE: i16 = 1;
const KEY_BYTES: usize = 4;
const VALUE_BYTES: usize = 6;
/// Where the CRC-covered part of a batch starts (attributes), as in `log::batch`.
const CRC_COVERS_FROM: usize = 21;
const CRC_AT: usize = 17;

/// The marker batch for `producer_id` at `producer_epoch`, at offset 0 and leader epoch
/// -1 (the log stamps both).
pub fn encode_marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: TxnMarker,
    timestamp_ms: i64,
) -> Bytes {
    let mut record = BytesMut::new();
    record.put_i8(0); // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, KEY_BYTES as i64);
    record.put_i16(0);
    record.put_i16(if marker.committed {
        COMMIT_TYPE
    } else {
        ABORT_TYPE
    });
    put_varint(&mut record, VALUE_BYTES as i64);
    record.put_i16(0);
    record.put_i32(marker.coordinator_epoch);
    put_varint(&mut record, 0); // headers
    let mut body = BytesMut::new();
    put_varint(&mut body, record.len() as i64);
    body.put_slice(&record);

    let total = BATCH_HEADER_BYTES + body.len();
    let mut batch = BytesMut::with_capacity(total);
    batch.put_i64(0); // base offset
    batch.put_i32((total - 12) as i32); // batch length
    batch.put_i32(-1); // partition leader epoch
    batch.put_i8(2); // magic
    batch.put_u32(0); // crc, below
    batch.put_i16(CONTROL_ATTRIBUTES);
    batch.put_i32(0); // last offset delta
    batch.put_i64(timestamp_ms);
    batch.put_i64(timestamp_ms);
    batch.put_i64(producer_id);
    batch.put_i16(producer_epoch);
    batch.put_i32(-1); // base sequence
    batch.put_i32(1); // record count
    batch.put_slice(&body);
    let crc = crc32c::crc32c(&batch[CRC_COVERS_FROM..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

/// The marker in the control batch `batch` (exactly one whole batch, `header` its
/// header). None for a control record of another type (Kafka's KRaft types, never
/// written to data partitions), an error for a malformed one.
pub fn parse_marker(batch: &[u8], header: &BatchHeader) -> Result<Option<TxnMarker>, BatchError> {
    let invalid = |why: &str| {
        BatchError::InvalidRecord(format!(
            "control batch at offset {}: {why}",
            header.base_offset
        ))
    };
    if !header.is_control() || header.record_count != 1 {
        return Err(invalid("a marker batch holds exactly one control record"));
    }
    if header.compression_code() != 0 {
        return Err(invalid("compressed control batches are not read"));
    }
    let body = batch
        .get(BATCH_HEADER_BYTES..header.total_bytes())
        .ok_or_else(|| invalid("shorter than its header says"))?;
    let mut reader = Reader { bytes: body };
    let length = reader.varint()?;
    if usize::try_from(length).ok() != Some(reader.bytes.len()) {
        return Err(invalid("record length does not match the batch"));
    }
    reader.take(1)?; // attributes
    reader.varint()?; // timestamp delta
    reader.varint()?; // offset delta
    let key_length = reader.varint()?;
    if key_length < KEY_BYTES as i64 {
        return Err(invalid("control record key too short"));
    }
    let key = reader.take(key_length as usize)?;
    let kind = i16::from_be_bytes([key[2], key[3]]);
    let committed = match kind {
        COMMIT_TYPE => true,
        ABORT_TYPE => false,
        _ => return Ok(None),
    };
    let value_length = reader.varint()?;
    if value_length < VALUE_BYTES as i64 {
        return Err(invalid("marker value too short"));
    }
    let value = reader.take(value_length as usize)?;
    let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
    Ok(Some(TxnMarker {
        committed,
        coordinator_epoch,
    }))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], BatchError> {
        if self.bytes.len() < count {
            return Err(BatchError::Corrupt("control record ends early".into()));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    /// A zigzag varint of at most 10 bytes.
    fn varint(&mut self) -> Result<i64, BatchError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(BatchError::Corrupt("varint longer than 10 bytes".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::validate_batches;

    #[test]
    fn markers_round_trip_and_validate_as_batches() {
        for committed in [true, false] {
            let marker = TxnMarker {
                committed,
                coordinator_epoch: 300,
            };
            let batch = encode_marker_batch(42, 7, marker, 1_000);
            let headers = validate_batches(&batch, u32::MAX).unwrap();
            let header = headers[0];
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 7));
            assert_eq!((header.record_count, header.base_sequence), (1, -1));
            assert_eq!(parse_marker(&batch, &header), Ok(Some(marker)));
        }
    }

    #[test]
    fn kafka_client_decoder_reads_our_marker() {
        let marker = TxnMarker {
            committed: false,
            coordinator_epoch: 3,
        };
        let mut batch = encode_marker_batch(5, 1, marker, 10);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch).unwrap();
        let record = &set.records[0];
        assert!(record.control && record.transactional);
        assert_eq!(record.key.as_deref(), Some(&[0u8, 0, 0, 0][..]));
        assert_eq!(record.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 3][..]));
    }

    #[test]
    fn other_control_types_are_not_markers_and_damage_is_an_error() {
        let marker = TxnMarker {
            committed: true,
            coordinator_epoch: 0,
        };
        let batch = encode_marker_batch(1, 0, marker, 0);
        let header = BatchHeader::parse(&batch).unwrap();
        let mut other = batch.to_vec();
        // The key's type: record length, attributes, two deltas, key length, version.
        let type_at = BATCH_HEADER_BYTES + 1 + 1 + 1 + 1 + 1 + 2;
        other[type_at + 1] = 3;
        assert_eq!(parse_marker(&other, &header), Ok(None));
        for cut in BATCH_HEADER_BYTES..batch.len() {
            let mut short = header;
            short.batch_length -= (batch.len() - cut) as i32;
            assert!(parse_marker(&batch[..cut], &short).is_err(), "cut at {cut}");
        }
    }
}
