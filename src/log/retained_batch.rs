//! A stored batch rewritten with only some of its records, as Kafka's log cleaner writes it
//! (`MemoryRecords.buildRetainedRecordsInto` with a `MemoryRecordsBuilder`): the batch keeps
//! its header as the producer and the leader made it, only its records and record count
//! change.
//!
//! Kept from the original header: the base offset and the last offset (each record's
//! offset delta stays relative to the original base, gaps and all), the base sequence (so
//! a record keeps its sequence, and producer state rebuilt from the log still knows the
//! batch's first and last sequence: a retry of it is a duplicate, not out of order), the
//! producer id and epoch, the partition leader epoch, and the attributes Kafka's builder
//! writes (codec, timestamp type, transactional, control, delete horizon).
//!
//! Timestamps, as Kafka's builder sets them: the base timestamp is the first retained
//! record's timestamp, or the delete horizon if the batch carries one (KIP-534: the base
//! timestamp then holds the horizon and record deltas are relative to it); the max
//! timestamp is the largest retained record timestamp under CreateTime, the original
//! append time under LogAppendTime (where every record reads as that time).
//!
//! kafka-protocol's `RecordBatchEncoder` cannot write this: it takes the base offset, base
//! sequence and base timestamp from the records it is given. So the records section is
//! written here, and compressed with kafka-protocol's codecs (the ones its encoder and our
//! recompression use), and the CRC-32C covers the attributes to the end as v2 requires.

use bytes::{BufMut, BytesMut};
use kafka_protocol::compression::{self as codecs, Compressor};
use kafka_protocol::records::{Compression, Record};

use crate::log::batch::{
    BATCH_HEADER_BYTES, BatchHeader, MAGIC_V2, NO_TIMESTAMP, put_varint, seal_with_length,
};
use crate::log::delete_horizon::delete_horizon_ms;
use crate::log::error::BatchError;

/// The attribute bits Kafka's batch writer sets from the batch's fields: codec (0-2),
/// timestamp type (3), transactional (4), control (5), delete horizon (6). Others are
/// unused and written as 0, as Kafka's `computeAttributes` does.
const WRITTEN_ATTRIBUTES: i16 = 0x7f;

/// One v2 batch of `retained` (non-empty, offsets rising, all within `original`'s offsets),
/// records decoded from the batch `original`, with `original`'s header as the module doc
/// says. Errors are the caller's bug or a batch that lies about its records; nothing is
/// written then.
pub(crate) fn encode_retained(
    original: &BatchHeader,
    retained: &[Record],
) -> Result<BytesMut, BatchError> {
    check_retained(original, retained)?;
    let codec = codec_of(original)?;
    let log_append_time_ms = original
        .is_log_append_time()
        .then_some(original.max_timestamp);
    // Under LogAppendTime a record reads as the append time, whatever it carries.
    let timestamp_of = |record: &Record| log_append_time_ms.unwrap_or(record.timestamp);
    let base_timestamp = delete_horizon_ms(original).unwrap_or_else(|| timestamp_of(&retained[0]));
    let max_timestamp = log_append_time_ms.unwrap_or_else(|| {
        let timestamps = retained.iter().map(|record| record.timestamp);
        timestamps.fold(NO_TIMESTAMP, i64::max)
    });
    let mut batch = BytesMut::with_capacity(original.total_bytes());
    batch.put_i64(original.base_offset);
    batch.put_i32(0); // batch length, set below
    batch.put_i32(original.partition_leader_epoch);
    batch.put_i8(MAGIC_V2);
    batch.put_u32(0); // CRC, sealed below
    batch.put_i16(original.attributes & WRITTEN_ATTRIBUTES);
    batch.put_i32(original.last_offset_delta);
    batch.put_i64(base_timestamp);
    batch.put_i64(max_timestamp);
    batch.put_i64(original.producer_id);
    batch.put_i16(original.producer_epoch);
    batch.put_i32(original.base_sequence);
    batch.put_i32(retained.len() as i32); // at most the original's i32 count
    debug_assert_eq!(batch.len(), BATCH_HEADER_BYTES);
    let write = |records: &mut BytesMut| {
        put_records(
            records,
            retained,
            original.base_offset,
            base_timestamp,
            &timestamp_of,
        );
    };
    compress(codec, &mut batch, write)?;
    seal_with_length(&mut batch)?;
    Ok(batch)
}

/// The retained records fit the original batch: at least one, offsets strictly rising
/// inside its offsets (so every offset delta is in 0..=last_offset_delta), no more of
/// them than it had.
fn check_retained(original: &BatchHeader, retained: &[Record]) -> Result<(), BatchError> {
    let wrong = |why: String| {
        let offset = original.base_offset;
        BatchError::Corrupt(format!(
            "records retained from the batch at {offset}: {why}"
        ))
    };
    if retained.is_empty() || retained.len() > original.record_count.max(0) as usize {
        let (count, of) = (retained.len(), original.record_count);
        return Err(wrong(format!("{count} of {of} records")));
    }
    let mut previous = original.base_offset - 1;
    for record in retained {
        if record.offset <= previous || record.offset > original.last_offset() {
            let (offset, last) = (record.offset, original.last_offset());
            return Err(wrong(format!(
                "offset {offset} after {previous}, last offset {last}"
            )));
        }
        previous = record.offset;
    }
    Ok(())
}

fn codec_of(header: &BatchHeader) -> Result<Compression, BatchError> {
    Ok(match header.compression_code() {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        code => {
            return Err(BatchError::Corrupt(format!(
                "unknown compression code {code}"
            )));
        }
    })
}

/// Appends the records section that `write` produces to `batch`, compressed with `codec`.
fn compress(
    codec: Compression,
    batch: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut),
) -> Result<(), BatchError> {
    match codec {
        Compression::None => {
            write(batch);
            Ok(())
        }
        Compression::Gzip => compress_with::<codecs::Gzip>(batch, write),
        Compression::Snappy => compress_with::<codecs::Snappy>(batch, write),
        Compression::Lz4 => compress_with::<codecs::Lz4>(batch, write),
        Compression::Zstd => compress_with::<codecs::Zstd>(batch, write),
    }
}

/// kafka-protocol's codec `C` hands `write` a buffer and compresses what it wrote into
/// `batch`, as its own batch encoder does.
fn compress_with<C>(
    batch: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut),
) -> Result<(), BatchError>
where
    C: Compressor<BytesMut, BufMut = BytesMut>,
{
    let compressed = C::compress(batch, |buffer| {
        write(buffer);
        Ok(())
    });
    compressed.map_err(|error| {
        BatchError::Corrupt(format!("cannot compress the retained records: {error:#}"))
    })
}

/// Kafka's `DefaultRecord.writeTo` for each record: length, attributes (0: none are
/// defined), timestamp delta from `base_timestamp`, offset delta from `base_offset`, key,
/// value, headers. Deltas wrap as Java's arithmetic does (a delete horizon far from the
/// records' times), and decoding adds them back the same way.
fn put_records(
    out: &mut BytesMut,
    records: &[Record],
    base_offset: i64,
    base_timestamp: i64,
    timestamp_of: &dyn Fn(&Record) -> i64,
) {
    let mut body = Vec::new();
    for record in records {
        body.clear();
        body.put_u8(0);
        put_varint(&mut body, timestamp_of(record).wrapping_sub(base_timestamp));
        put_varint(&mut body, record.offset - base_offset);
        put_nullable(&mut body, record.key.as_deref());
        put_nullable(&mut body, record.value.as_deref());
        put_varint(&mut body, record.headers.len() as i64);
        for (name, value) in &record.headers {
            put_nullable(&mut body, Some(name.as_bytes()));
            put_nullable(&mut body, value.as_deref());
        }
        put_varint(out, body.len() as i64);
        out.put_slice(&body);
    }
}

/// A length-prefixed byte string, -1 for none.
fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.put_slice(bytes);
        }
        None => put_varint(out, -1),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};
    use kafka_protocol::records::{RecordSet, TimestampType};

    use super::*;
    use crate::log::batch::{stamp_batch, validate_replicated_batches};
    use crate::log::delete_horizon::{DELETE_HORIZON_FLAG, stamp};
    use crate::log::records::{OffsetDeltas, walk_batch};

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    const BASE_OFFSET: i64 = 1_000;
    const BASE_SEQUENCE: i32 = 40;

    /// Record `index` of a transactional batch of producer 9 at epoch 2 from sequence 40:
    /// every third record has no key, every fourth is a tombstone, each has headers.
    fn record(index: i64, timestamp_ms: i64) -> Record {
        Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 6,
            producer_id: 9,
            producer_epoch: 2,
            timestamp_type: TimestampType::Creation,
            offset: index,
            sequence: BASE_SEQUENCE + index as i32,
            timestamp: timestamp_ms,
            key: (index % 3 != 2).then(|| Bytes::from(format!("key-{index}"))),
            value: (index % 4 != 3).then(|| Bytes::from(format!("value-{index}"))),
            headers: [
                ("trace".into(), Some(Bytes::from(format!("t{index}")))),
                ("empty".into(), None),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// A stored batch of `timestamps.len()` records (see [`record`]) at [`BASE_OFFSET`].
    fn stored(timestamps: &[i64], codec: Compression) -> BytesMut {
        let records: Vec<Record> = (0..)
            .zip(timestamps)
            .map(|(index, &timestamp)| record(index, timestamp))
            .collect();
        let mut batch = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: codec,
        };
        RecordBatchEncoder::encode(&mut batch, &records, &options).unwrap();
        stamp_batch(&mut batch, BASE_OFFSET, 6, None);
        batch
    }

    fn decode(batch: &[u8]) -> RecordSet {
        RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(batch)).unwrap()
    }

    /// `encode_retained` of the records at `kept` (indexes) of `batch`, after checking the
    /// result is one batch every reader takes: kafka-protocol's decoder, produce's record
    /// walk under the stored-batch rule, and a follower's header and CRC checks.
    fn retain(batch: &[u8], kept: &[usize]) -> (BatchHeader, Vec<Record>) {
        let original = BatchHeader::parse(batch).unwrap();
        let records = decode(batch).records;
        let retained: Vec<Record> = kept.iter().map(|&i| records[i].clone()).collect();
        let rewritten = encode_retained(&original, &retained).unwrap();
        let headers = validate_replicated_batches(&rewritten).unwrap();
        assert_eq!(headers.len(), 1);
        let header = headers[0];
        assert_eq!(header.total_bytes(), rewritten.len());
        let mut walked = 0;
        walk_batch(
            &rewritten,
            &header,
            OffsetDeltas::Increasing,
            1 << 20,
            &mut |_| walked += 1,
        )
        .unwrap();
        assert_eq!(walked, kept.len());
        (header, decode(&rewritten).records)
    }

    /// A record's offset, sequence, timestamp, key, value and header count.
    type Contents = (i64, i32, i64, Option<Bytes>, Option<Bytes>, usize);

    fn contents(records: &[Record]) -> Vec<Contents> {
        let fields = records.iter().map(|r| {
            let (key, value) = (r.key.clone(), r.value.clone());
            (
                r.offset,
                r.sequence,
                r.timestamp,
                key,
                value,
                r.headers.len(),
            )
        });
        fields.collect()
    }

    #[test]
    fn a_batch_keeps_its_header_and_its_records_their_offsets_and_sequences() {
        for codec in CODECS {
            let batch = stored(&[500, 900, 700, 800, 600, 650], codec);
            let original = BatchHeader::parse(&batch).unwrap();
            let before = decode(&batch).records;
            // The first and last records go, and one in the middle.
            let (header, after) = retain(&batch, &[1, 3, 4]);
            assert_eq!(header.base_offset, BASE_OFFSET, "{codec:?}");
            assert_eq!(header.last_offset(), original.last_offset());
            assert_eq!(header.base_sequence, BASE_SEQUENCE);
            assert_eq!(header.last_sequence(), original.last_sequence());
            assert_eq!((header.producer_id, header.producer_epoch), (9, 2));
            assert_eq!(header.partition_leader_epoch, 6);
            assert_eq!(header.attributes, original.attributes);
            assert!(header.is_transactional() && !header.is_control());
            assert_eq!(header.compression_code(), codec as i16);
            assert_eq!(header.record_count, 3);
            // Kafka's builder: the first retained record's time, the largest retained.
            assert_eq!((header.base_timestamp, header.max_timestamp), (900, 900));
            let expected = [&before[1], &before[3], &before[4]].map(Clone::clone);
            assert_eq!(contents(&after), contents(&expected), "{codec:?}");
            assert_eq!(after[0].offset, BASE_OFFSET + 1);
            assert_eq!(after[0].sequence, BASE_SEQUENCE + 1);
            assert!(after.iter().all(|r| r.transactional && r.producer_id == 9));
        }
    }

    /// Kept whole, the batch comes out as the encoder wrote it: the records section is
    /// Kafka's, byte for byte, under every codec (when the first record is the earliest,
    /// where kafka-protocol's base timestamp agrees with Kafka's).
    #[test]
    fn keeping_every_record_writes_the_same_bytes() {
        for codec in CODECS {
            let batch = stored(&[100, 300, 200, 250], codec);
            let original = BatchHeader::parse(&batch).unwrap();
            let records = decode(&batch).records;
            let rewritten = encode_retained(&original, &records).unwrap();
            assert!(rewritten[..] == batch[..], "{codec:?}");
        }
    }

    #[test]
    fn log_append_time_is_every_records_time() {
        for codec in [Compression::None, Compression::Zstd] {
            let mut batch = stored(&[100, 300, 200], codec);
            stamp_batch(&mut batch, BASE_OFFSET, 6, Some(77_000));
            let (header, after) = retain(&batch, &[1, 2]);
            assert!(header.is_log_append_time());
            assert_eq!(
                (header.base_timestamp, header.max_timestamp),
                (77_000, 77_000)
            );
            assert!(after.iter().all(|record| record.timestamp == 77_000));
            assert!(
                after
                    .iter()
                    .all(|r| r.timestamp_type == TimestampType::LogAppend)
            );
        }
    }

    #[test]
    fn a_delete_horizon_stays_the_base_timestamp() {
        let batch = stored(&[100, 300, 200, 250], Compression::None);
        let stamped = stamp(&batch, 5_000_000).unwrap();
        let (header, after) = retain(&stamped, &[2, 3]);
        assert_ne!(header.attributes & DELETE_HORIZON_FLAG, 0);
        assert_eq!(delete_horizon_ms(&header), Some(5_000_000));
        assert_eq!(header.max_timestamp, 250);
        let times: Vec<i64> = after.iter().map(|record| record.timestamp).collect();
        assert_eq!(times, [200, 250], "relative to the horizon, as written");
        assert!(after.iter().all(|record| record.delete_horizon));
    }

    #[test]
    fn records_that_do_not_fit_the_batch_are_refused() {
        let batch = stored(&[100, 200, 300], Compression::None);
        let original = BatchHeader::parse(&batch).unwrap();
        let records = decode(&batch).records;
        let refused = |retained: &[Record]| encode_retained(&original, retained).is_err();
        assert!(refused(&[]), "none");
        assert!(
            refused(&[records[1].clone(), records[0].clone()]),
            "backwards"
        );
        assert!(
            refused(&[records[1].clone(), records[1].clone()]),
            "repeated"
        );
        let mut past = records[2].clone();
        past.offset = original.last_offset() + 1;
        assert!(refused(&[past]), "past the last offset");
        let mut before = records[0].clone();
        before.offset = BASE_OFFSET - 1;
        assert!(refused(&[before]), "before the base offset");
        let mut unknown = original;
        unknown.attributes |= 5;
        assert!(encode_retained(&unknown, &records).is_err(), "codec 5");
    }
}
