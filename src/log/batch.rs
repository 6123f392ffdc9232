//! The record batch v2 header (Kafka's `DefaultRecordBatch`): parsing, produce-time
//! validation, and stamping the broker-assigned fields. The broker never re-encodes records;
//! it only reads this 61-byte header, checks the CRC-32C, and writes offsets into it.
//!
//! Layout (big-endian): base offset i64 @0, batch length i32 @8, partition leader epoch i32
//! @12, magic i8 @16, CRC u32 @17, attributes i16 @21, last offset delta i32 @23, base
//! timestamp i64 @27, max timestamp i64 @35, producer id i64 @43, producer epoch i16 @51,
//! base sequence i32 @53, record count i32 @57. The CRC covers attributes to the end, so the
//! base offset and leader epoch can be rewritten without touching it.

use bytes::{Buf, Bytes};
use kafka_protocol::records::{Record, RecordBatchDecoder, TimestampType};

use crate::log::error::BatchError;

/// Size of the fixed header in front of every v2 batch's records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes not counted by `batch_length`: the base offset and the length itself.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only batch format this broker stores.
pub const MAGIC_V2: i8 = 2;
/// `base_sequence` of a batch from a producer without idempotence.
pub const NO_SEQUENCE: i32 = -1;
/// Kafka's "no timestamp" marker.
pub const NO_TIMESTAMP: i64 = -1;

const BASE_OFFSET_AT: usize = 0;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// First byte covered by the CRC (the attributes).
const CRC_COVERS_FROM: usize = 21;
const ATTRIBUTES_AT: usize = 21;
const BATCH_LENGTH_AT: usize = 8;
#[cfg(test)]
const LAST_OFFSET_DELTA_AT: usize = 23;
const RECORD_COUNT_AT: usize = 57;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;

const COMPRESSION_MASK: i16 = 0x07;
const ZSTD_CODE: i16 = 4;
const COMPRESSION_CODE_MAX: i16 = ZSTD_CODE;
const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// The fixed header of one v2 record batch, as stored on the wire and on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parse the header at the start of `bytes`. Refuses fewer than 61 bytes and a
    /// `batch_length` too small to hold the header, so `total_bytes` is always sane.
    /// The magic is not checked here: callers that need v2 check `magic`.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let Some(mut buffer) = bytes.get(..BATCH_HEADER_BYTES) else {
            return Err(BatchError::Corrupt(format!(
                "batch header needs {BATCH_HEADER_BYTES} bytes, only {} remain",
                bytes.len()
            )));
        };
        // Field initialisers run in the order written, which is the wire order.
        let header = BatchHeader {
            base_offset: buffer.get_i64(),
            batch_length: buffer.get_i32(),
            partition_leader_epoch: buffer.get_i32(),
            magic: buffer.get_i8(),
            crc: buffer.get_u32(),
            attributes: buffer.get_i16(),
            last_offset_delta: buffer.get_i32(),
            base_timestamp: buffer.get_i64(),
            max_timestamp: buffer.get_i64(),
            producer_id: buffer.get_i64(),
            producer_epoch: buffer.get_i16(),
            base_sequence: buffer.get_i32(),
            record_count: buffer.get_i32(),
        };
        let length_min = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
        if header.batch_length < length_min {
            return Err(BatchError::Corrupt(format!(
                "batch length {} is below the header size {length_min}",
                header.batch_length
            )));
        }
        Ok(header)
    }

    /// Size of the whole batch: header, records and the 12 bytes `batch_length` leaves out.
    pub fn total_bytes(&self) -> usize {
        // `parse` guarantees a positive length; clamp anyway for hand-built headers.
        self.batch_length.max(0) as usize + LOG_OVERHEAD_BYTES
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Sequence of the last record. Like Kafka, sequences wrap from i32::MAX to 0.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        let wrapped = if last > i64::from(i32::MAX) {
            last - i64::from(i32::MAX) - 1
        } else {
            last
        };
        wrapped as i32
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// Whether the timestamps are the broker's append time rather than the producer's.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_FLAG != 0
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression_code(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    pub fn is_zstd(&self) -> bool {
        self.compression_code() == ZSTD_CODE
    }
}

/// Validate the `records` field of one produce partition: one or more concatenated v2
/// batches. Returns their headers in order. Nothing is decompressed.
pub fn validate_batches(
    records: &[u8],
    max_message_bytes: u32,
) -> Result<Vec<BatchHeader>, BatchError> {
    validate_all(records, max_message_bytes, true)
}

/// Every batch of `records`, each checked by [`validate_batch_with`]; at least one.
fn validate_all(
    records: &[u8],
    max_message_bytes: u32,
    one_record_per_offset: bool,
) -> Result<Vec<BatchHeader>, BatchError> {
    let mut headers = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let header = validate_batch_with(
            &records[position..],
            max_message_bytes,
            one_record_per_offset,
        )?;
        position += header.total_bytes();
        headers.push(header);
    }
    if headers.is_empty() {
        return Err(BatchError::InvalidRecord(
            "no record batch in the records".into(),
        ));
    }
    Ok(headers)
}

/// Checks one batch at the start of `bytes`, in Kafka's order: format, size, CRC, counts.
fn validate_batch_with(
    bytes: &[u8],
    max_message_bytes: u32,
    one_record_per_offset: bool,
) -> Result<BatchHeader, BatchError> {
    // v0/v1 message sets have another layout, so look at the magic before parsing.
    if let Some(&magic) = bytes.get(MAGIC_AT)
        && magic as i8 != MAGIC_V2
    {
        return Err(BatchError::InvalidRecord(format!(
            "magic {} is not supported, only v2 record batches",
            magic as i8
        )));
    }
    let header = BatchHeader::parse(bytes)?;
    let size = header.total_bytes();
    if size > bytes.len() {
        return Err(BatchError::Corrupt(format!(
            "batch of {size} bytes is cut short at {} bytes",
            bytes.len()
        )));
    }
    if size > max_message_bytes as usize {
        return Err(BatchError::TooLarge {
            size,
            max: max_message_bytes,
        });
    }
    if !crc_matches(&bytes[..size], header.crc) {
        return Err(BatchError::Corrupt(
            "CRC-32C does not match the batch".into(),
        ));
    }
    if header.compression_code() > COMPRESSION_CODE_MAX {
        return Err(BatchError::Corrupt(format!(
            "unknown compression code {}",
            header.compression_code()
        )));
    }
    check_counts(&header, one_record_per_offset)?;
    Ok(header)
}

/// Validate batches a follower fetched from its leader: as [`validate_batches`], except
/// that a batch may hold fewer records than its offset range. The leader's cleaner leaves
/// such batches (Kafka keeps a compacted batch's last offset so that its last sequence
/// survives, and an emptied batch's header), and Kafka's follower takes them too; only a
/// produce must have one record per offset.
pub fn validate_replicated_batches(records: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    validate_all(records, u32::MAX, false)
}

fn check_counts(header: &BatchHeader, one_record_per_offset: bool) -> Result<(), BatchError> {
    if header.last_offset_delta < 0 {
        return Err(BatchError::InvalidRecord(format!(
            "last offset delta {} is negative",
            header.last_offset_delta
        )));
    }
    if header.record_count < 0 {
        return Err(BatchError::InvalidRecord(format!(
            "record count {} is negative",
            header.record_count
        )));
    }
    let count_from_offsets = i64::from(header.last_offset_delta) + 1;
    let wrong = match one_record_per_offset {
        // Kafka's LogValidator: a produced batch holds one record per offset, at least one.
        true => header.record_count == 0 || i64::from(header.record_count) != count_from_offsets,
        false => i64::from(header.record_count) > count_from_offsets,
    };
    if wrong {
        return Err(BatchError::InvalidRecord(format!(
            "record count {} disagrees with last offset delta {}",
            header.record_count, header.last_offset_delta
        )));
    }
    Ok(())
}

/// Whether the CRC-32C over `batch[21..]` equals `expected`. `batch` is one whole batch.
pub(crate) fn crc_matches(batch: &[u8], expected: u32) -> bool {
    batch
        .get(CRC_COVERS_FROM..)
        .is_some_and(|covered| crc32c::crc32c(covered) == expected)
}

/// Iterate the complete batches in `bytes` with their positions. Ends quietly at the first
/// incomplete batch (a fetch may cut the last one); yields one error and ends on a header
/// that is not a v2 batch header.
pub fn iter_batches(
    bytes: &[u8],
) -> impl Iterator<Item = Result<(usize, BatchHeader), BatchError>> + '_ {
    BatchIter {
        bytes,
        position: 0,
        failed: false,
    }
}

struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
    failed: bool,
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(usize, BatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.bytes[self.position..];
        if self.failed || rest.len() < BATCH_HEADER_BYTES {
            return None;
        }
        let parsed = BatchHeader::parse(rest).and_then(|header| match header.magic {
            MAGIC_V2 => Ok(header),
            magic => Err(BatchError::InvalidRecord(format!(
                "magic {magic} is not v2"
            ))),
        });
        let header = match parsed {
            Ok(header) => header,
            Err(error) => {
                self.failed = true;
                return Some(Err(error));
            }
        };
        if header.total_bytes() > rest.len() {
            return None;
        }
        let position = self.position;
        self.position += header.total_bytes();
        Some(Ok((position, header)))
    }
}

/// Write the broker-assigned fields into one whole batch (`batch` is exactly the batch).
/// Base offset and leader epoch sit outside the CRC, so it stays valid. For LogAppendTime
/// also mark the timestamp type and set both timestamps to the append time, then recompute
/// the CRC, as Kafka does.
pub fn stamp_batch(
    batch: &mut [u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
) {
    let header = stamped_header(batch, base_offset, leader_epoch, log_append_time_ms);
    batch[..BATCH_HEADER_BYTES].copy_from_slice(&header);
}

/// What [`stamp_batch`] would make of `batch`'s header, in a copy: the batch itself is left
/// as it is, so an append can write the copy and then the rest of the batch from where the
/// request put it. Changed timestamps are covered by a CRC over the copy and the rest.
pub fn stamped_header(
    batch: &[u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
) -> [u8; BATCH_HEADER_BYTES] {
    // Only validated batches reach here; a shorter slice is a caller bug.
    let mut header: [u8; BATCH_HEADER_BYTES] = batch
        .get(..BATCH_HEADER_BYTES)
        .and_then(|head| head.try_into().ok())
        .expect("stamped_header needs a whole batch");
    write_at(&mut header, BASE_OFFSET_AT, &base_offset.to_be_bytes());
    write_at(
        &mut header,
        PARTITION_LEADER_EPOCH_AT,
        &leader_epoch.to_be_bytes(),
    );
    let Some(now_ms) = log_append_time_ms else {
        return header;
    };
    let attributes = i16::from_be_bytes([header[ATTRIBUTES_AT], header[ATTRIBUTES_AT + 1]]);
    write_at(
        &mut header,
        ATTRIBUTES_AT,
        &(attributes | TIMESTAMP_TYPE_FLAG).to_be_bytes(),
    );
    write_at(&mut header, BASE_TIMESTAMP_AT, &now_ms.to_be_bytes());
    write_at(&mut header, MAX_TIMESTAMP_AT, &now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&header[CRC_COVERS_FROM..]);
    let crc = crc32c::crc32c_append(crc, &batch[BATCH_HEADER_BYTES..]);
    write_at(&mut header, CRC_AT, &crc.to_be_bytes());
    header
}

/// The header of `batch` (one whole batch) alone, as a batch of no records (Kafka's
/// `writeEmptyHeader`): same offsets, producer, epoch, base sequence, flags and max
/// timestamp, no compression, record count 0. The cleaner leaves one where a producer's
/// last batch lost all its records, so that its sequence and epoch outlive them.
pub fn empty_batch(batch: &[u8]) -> Vec<u8> {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES,
        "empty_batch needs a whole batch"
    );
    let mut empty = batch[..BATCH_HEADER_BYTES].to_vec();
    let length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
    write_at(&mut empty, BATCH_LENGTH_AT, &length.to_be_bytes());
    let attributes = i16::from_be_bytes([empty[ATTRIBUTES_AT], empty[ATTRIBUTES_AT + 1]]);
    write_at(
        &mut empty,
        ATTRIBUTES_AT,
        &(attributes & !COMPRESSION_MASK).to_be_bytes(),
    );
    let max_timestamp: [u8; 8] = empty[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
        .try_into()
        .expect("8 bytes");
    write_at(&mut empty, BASE_TIMESTAMP_AT, &max_timestamp);
    write_at(&mut empty, RECORD_COUNT_AT, &0i32.to_be_bytes());
    seal(&mut empty);
    empty
}

/// Sets the last offset delta of `batch` (one whole batch) and recomputes its CRC, for
/// tests that build what the cleaner leaves: a batch whose last offset (Kafka's
/// `overrideLastOffset`) lies past its last surviving record.
#[cfg(test)]
pub(crate) fn set_last_offset_delta(batch: &mut [u8], last_offset_delta: i32) {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES && last_offset_delta >= 0,
        "set_last_offset_delta needs a whole batch and a delta >= 0"
    );
    write_at(
        batch,
        LAST_OFFSET_DELTA_AT,
        &last_offset_delta.to_be_bytes(),
    );
    seal(batch);
}

/// Sets the batch length of `batch` (one whole batch, written here) from its size, then
/// seals it ([`seal`]): the last step of every batch the broker writes itself.
pub(crate) fn seal_with_length(batch: &mut [u8]) -> Result<(), BatchError> {
    let length = batch.len() - LOG_OVERHEAD_BYTES;
    let length = i32::try_from(length)
        .map_err(|_| BatchError::Corrupt(format!("a batch of {length} bytes is too large")))?;
    write_at(batch, BATCH_LENGTH_AT, &length.to_be_bytes());
    seal(batch);
    Ok(())
}

/// Recomputes the CRC of one whole batch after a change to the bytes it covers.
pub(crate) fn seal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_COVERS_FROM..]);
    write_at(batch, CRC_AT, &crc.to_be_bytes());
}

/// Kafka's zig-zag varint / varlong (one encoding; up to 10 bytes), as records carry them.
pub fn put_varint(buffer: &mut impl bytes::BufMut, value: i64) {
    put_unsigned_varint(buffer, ((value << 1) ^ (value >> 63)) as u64);
}

/// Kafka's unsigned varint, as compact lengths and tagged fields use it.
pub fn put_unsigned_varint(buffer: &mut impl bytes::BufMut, mut value: u64) {
    while value >= 0x80 {
        buffer.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.put_u8(value as u8);
}

fn write_at(batch: &mut [u8], at: usize, bytes: &[u8]) {
    batch[at..at + bytes.len()].copy_from_slice(bytes);
}

/// One record's offset and timestamp, as ListOffsets reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordTimestamp {
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: i64,
}

/// Decode (and decompress) one stored batch to list its records' offsets and timestamps.
/// Under LogAppendTime every record carries the batch's max timestamp, as Kafka reads it.
pub(crate) fn record_timestamps(
    batch: Bytes,
    header: &BatchHeader,
) -> Result<Vec<RecordTimestamp>, BatchError> {
    let mut buffer = batch;
    let record_set = RecordBatchDecoder::decode(&mut buffer)
        .map_err(|error| BatchError::Corrupt(format!("cannot decode records: {error:#}")))?;
    let timestamps = record_set.records.iter().map(|record| RecordTimestamp {
        offset: record.offset,
        timestamp_ms: if header.is_log_append_time() {
            header.max_timestamp
        } else {
            record.timestamp
        },
    });
    Ok(timestamps.collect())
}

/// A record for a plain (non-idempotent, non-transactional) batch, for building batches
/// with kafka-protocol's `RecordBatchEncoder`. `index` is the record's place in its batch.
///
/// The encoder starts a new batch whenever `offset - sequence` changes; keeping it constant
/// yields one batch (produce takes exactly one) whose base sequence is -1, "no sequence",
/// as a batch without a producer id must carry.
pub fn plain_record(
    index: i64,
    timestamp_ms: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: index,
        sequence: index as i32 - 1,
        timestamp: timestamp_ms,
        key,
        value,
        headers: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_support::{encode_batch, hand_built_batch};
    use kafka_protocol::records::Compression;

    const ALL_COMPRESSIONS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn encoder_batches_validate_with_every_compression() {
        for compression in ALL_COMPRESSIONS {
            let batch = encode_batch(&[1_000, 1_005, 1_002], compression);
            let headers = validate_batches(&batch, 1_048_588).unwrap();
            assert_eq!(headers.len(), 1);
            let header = headers[0];
            assert_eq!(header.magic, MAGIC_V2);
            assert_eq!(header.record_count, 3);
            assert_eq!(header.last_offset_delta, 2);
            assert_eq!(header.base_timestamp, 1_000);
            assert_eq!(header.max_timestamp, 1_005);
            assert_eq!(header.compression_code(), compression as i16);
            assert_eq!(header.total_bytes(), batch.len());
        }
    }

    #[test]
    fn compacted_and_emptied_batches_replicate_but_are_not_produced() {
        let batch = encode_batch(&[1_000, 1_005, 1_002], Compression::Gzip);
        // A compacted batch: fewer records than offsets (its last offset kept).
        let mut compacted = batch.to_vec();
        set_last_offset_delta(&mut compacted, 5);
        // The bare header of a producer's last batch.
        let empty = empty_batch(&batch);
        assert_eq!(empty.len(), BATCH_HEADER_BYTES);
        let one_record_per_offset = validate_batches(&compacted, u32::MAX);
        assert!(one_record_per_offset.is_err(), "not from a producer");
        let produced_empty = validate_batches(&empty, u32::MAX).unwrap_err();
        assert!(
            matches!(produced_empty, BatchError::InvalidRecord(_)),
            "count 0 produced"
        );
        for (kept, last_offset) in [(&compacted, 5), (&empty, 2)] {
            let header = validate_replicated_batches(kept).unwrap()[0];
            assert!(crc_matches(kept, header.crc));
            assert_eq!(header.last_offset(), last_offset);
        }
        let header = BatchHeader::parse(&empty).unwrap();
        assert_eq!((header.record_count, header.compression_code()), (0, 0));
        assert_eq!(header.base_timestamp, 1_005, "both timestamps are the max");
        // More records than offsets is wrong from anyone.
        let mut overfull = batch.to_vec();
        set_last_offset_delta(&mut overfull, 1);
        assert!(validate_replicated_batches(&overfull).is_err());
    }

    #[test]
    fn hand_built_batch_parses_field_by_field() {
        let batch = hand_built_batch(b"hello");
        let header = validate_batches(&batch, 1_000).unwrap()[0];
        assert_eq!(header.base_offset, 0);
        assert_eq!(header.partition_leader_epoch, -1);
        assert_eq!(header.attributes, 0);
        assert_eq!(header.producer_id, 77);
        assert_eq!(header.producer_epoch, 3);
        assert_eq!(header.base_sequence, 10);
        assert_eq!(header.last_sequence(), 10);
        assert!(header.has_producer_id());
        assert!(!header.is_transactional());
        assert!(!header.is_control());
        assert_eq!(header.total_bytes(), batch.len());
    }

    #[test]
    fn concatenated_batches_validate_in_order() {
        let mut records = encode_batch(&[1, 2], Compression::None);
        records.extend_from_slice(&encode_batch(&[3, 4, 5], Compression::Lz4));
        let headers = validate_batches(&records, 1_000_000).unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[1].record_count, 3);
        let positions: Vec<usize> = iter_batches(&records).map(|item| item.unwrap().0).collect();
        assert_eq!(positions, vec![0, headers[0].total_bytes()]);
    }

    #[test]
    fn bad_crc_is_corrupt() {
        let mut batch = encode_batch(&[1, 2, 3], Compression::None);
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        let error = validate_batches(&batch, 1_000_000).unwrap_err();
        assert!(
            matches!(error, BatchError::Corrupt(ref why) if why.contains("CRC")),
            "{error}"
        );
    }

    #[test]
    fn wrong_magic_is_invalid_record() {
        let mut batch = encode_batch(&[1], Compression::None);
        batch[MAGIC_AT] = 1;
        let error = validate_batches(&batch, 1_000_000).unwrap_err();
        assert!(matches!(error, BatchError::InvalidRecord(_)), "{error}");
    }

    #[test]
    fn truncated_records_are_corrupt() {
        let batch = encode_batch(&[1, 2, 3], Compression::None);
        for cut in [1, 10, BATCH_HEADER_BYTES, batch.len() - 1] {
            let error = validate_batches(&batch[..cut], 1_000_000).unwrap_err();
            assert!(
                matches!(error, BatchError::Corrupt(_)),
                "cut {cut}: {error}"
            );
        }
        let mut with_tail = batch.clone();
        with_tail.extend_from_slice(&batch[..20]);
        assert!(validate_batches(&with_tail, 1_000_000).is_err());
    }

    #[test]
    fn empty_records_are_invalid() {
        let error = validate_batches(&[], 1_000).unwrap_err();
        assert!(matches!(error, BatchError::InvalidRecord(_)));
    }

    #[test]
    fn oversize_batch_is_too_large() {
        let batch = encode_batch(&[1, 2, 3], Compression::None);
        let max = batch.len() as u32 - 1;
        let error = validate_batches(&batch, max).unwrap_err();
        assert_eq!(
            error,
            BatchError::TooLarge {
                size: batch.len(),
                max
            }
        );
        assert!(validate_batches(&batch, max + 1).is_ok());
    }

    #[test]
    fn short_batch_length_is_corrupt() {
        let mut batch = encode_batch(&[1], Compression::None);
        batch[8..12].copy_from_slice(&10i32.to_be_bytes());
        let error = validate_batches(&batch, 1_000_000).unwrap_err();
        assert!(matches!(error, BatchError::Corrupt(_)), "{error}");
    }

    #[test]
    fn inconsistent_counts_are_invalid_record() {
        let mut batch = hand_built_batch(b"x");
        batch[57..61].copy_from_slice(&2i32.to_be_bytes());
        refresh_crc(&mut batch);
        let error = validate_batches(&batch, 1_000).unwrap_err();
        assert!(matches!(error, BatchError::InvalidRecord(_)), "{error}");

        let mut batch = hand_built_batch(b"x");
        batch[23..27].copy_from_slice(&(-1i32).to_be_bytes());
        refresh_crc(&mut batch);
        let error = validate_batches(&batch, 1_000).unwrap_err();
        assert!(matches!(error, BatchError::InvalidRecord(_)), "{error}");
    }

    #[test]
    fn unknown_compression_is_corrupt() {
        let mut batch = hand_built_batch(b"x");
        batch[ATTRIBUTES_AT + 1] = 5;
        refresh_crc(&mut batch);
        let error = validate_batches(&batch, 1_000).unwrap_err();
        assert!(matches!(error, BatchError::Corrupt(ref why) if why.contains("compression")));
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut batch = encode_batch(&[5, 9], Compression::Gzip);
        let before = BatchHeader::parse(&batch).unwrap();
        stamp_batch(&mut batch, 1_234, 7, None);
        let header = validate_batches(&batch, 1_000_000).unwrap()[0];
        assert_eq!(header.base_offset, 1_234);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.crc, before.crc);
        assert!(!header.is_log_append_time());
        assert_eq!(header.max_timestamp, 9);
    }

    #[test]
    fn a_stamped_header_copy_is_the_header_of_the_batch_stamped_whole() {
        for append_time in [None, Some(77_000)] {
            let batch = encode_batch(&[5, 9, 11], Compression::Lz4);
            let copy = stamped_header(&batch, 1_234, 7, append_time);
            // Stamped by hand, the whole batch in one buffer, one CRC over all of it.
            let mut whole = batch.to_vec();
            whole[..8].copy_from_slice(&1_234i64.to_be_bytes());
            whole[12..16].copy_from_slice(&7i32.to_be_bytes());
            if let Some(now) = append_time {
                whole[22] |= 0x08;
                whole[27..35].copy_from_slice(&now.to_be_bytes());
                whole[35..43].copy_from_slice(&now.to_be_bytes());
                let crc = crc32c::crc32c(&whole[21..]);
                whole[17..21].copy_from_slice(&crc.to_be_bytes());
            }
            assert_eq!(copy[..], whole[..BATCH_HEADER_BYTES], "{append_time:?}");
            assert_eq!(batch[BATCH_HEADER_BYTES..], whole[BATCH_HEADER_BYTES..]);
        }
    }

    #[test]
    fn log_append_time_stamping_recomputes_the_crc() {
        let mut batch = encode_batch(&[5, 9], Compression::Snappy);
        let before = BatchHeader::parse(&batch).unwrap();
        stamp_batch(&mut batch, 40, 2, Some(99_000));
        let header = validate_batches(&batch, 1_000_000).unwrap()[0];
        assert_ne!(header.crc, before.crc);
        assert!(header.is_log_append_time());
        assert_eq!(header.compression_code(), before.compression_code());
        assert_eq!(
            (header.base_timestamp, header.max_timestamp),
            (99_000, 99_000)
        );
        let timestamps = record_timestamps(Bytes::copy_from_slice(&batch), &header).unwrap();
        let expected = [(40, 99_000), (41, 99_000)];
        let actual: Vec<(i64, i64)> = timestamps
            .iter()
            .map(|record| (record.offset, record.timestamp_ms))
            .collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn last_sequence_wraps_like_kafka() {
        let mut header = BatchHeader::parse(&hand_built_batch(b"x")).unwrap();
        header.base_sequence = i32::MAX - 1;
        header.last_offset_delta = 3;
        assert_eq!(header.last_sequence(), 1);
        header.base_sequence = NO_SEQUENCE;
        assert_eq!(header.last_sequence(), NO_SEQUENCE);
    }

    #[test]
    fn iter_batches_stops_at_an_incomplete_batch() {
        let mut records = encode_batch(&[1], Compression::None);
        let first = records.len();
        records.extend_from_slice(&encode_batch(&[2], Compression::None));
        let cut = &records[..records.len() - 3];
        let items: Vec<_> = iter_batches(cut).collect();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap().0, 0);
        assert_eq!(iter_batches(&records[..first + 30]).count(), 1);
    }

    #[test]
    fn record_timestamps_decode_compressed_batches() {
        for compression in ALL_COMPRESSIONS {
            let batch = encode_batch(&[100, 300, 200], compression);
            let header = BatchHeader::parse(&batch).unwrap();
            let timestamps = record_timestamps(batch.freeze(), &header).unwrap();
            let actual: Vec<i64> = timestamps
                .iter()
                .map(|record| record.timestamp_ms)
                .collect();
            assert_eq!(actual, vec![100, 300, 200], "{compression:?}");
        }
    }

    fn refresh_crc(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[CRC_COVERS_FROM..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
}
