//! Batch builders and other fixtures shared by the log tests.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

use crate::log::batch::{BatchHeader, plain_record, validate_batches};
use crate::log::leader_epochs::LeaderEpochCache;

/// One v2 batch encoded by kafka-protocol, one record per timestamp, values of `value_bytes`.
pub(crate) fn encode_batch_sized(
    timestamps: &[i64],
    compression: Compression,
    value_bytes: usize,
) -> BytesMut {
    let records: Vec<Record> = timestamps
        .iter()
        .enumerate()
        .map(|(index, &timestamp)| record(index as i64, timestamp, value_bytes))
        .collect();
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buffer, &records, &options).expect("test batch encodes");
    buffer
}

/// One v2 batch encoded by kafka-protocol, one small record per timestamp.
pub(crate) fn encode_batch(timestamps: &[i64], compression: Compression) -> BytesMut {
    encode_batch_sized(timestamps, compression, 8)
}

fn record(offset: i64, timestamp: i64, value_bytes: usize) -> Record {
    let mut value = format!("value-{offset}-").into_bytes();
    value.resize(value_bytes.max(value.len()), b'v');
    let key = Bytes::from(format!("key-{offset}"));
    plain_record(offset, timestamp, Some(key), Some(Bytes::from(value)))
}

/// A one-record batch written byte by byte, independent of the encoder under test.
pub(crate) fn hand_built_batch(value: &[u8]) -> BytesMut {
    let mut record = BytesMut::new();
    record.put_u8(0); // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, -1); // null key
    put_varint(&mut record, value.len() as i64);
    record.put_slice(value);
    put_varint(&mut record, 0); // no headers
    let mut records = BytesMut::new();
    put_varint(&mut records, record.len() as i64);
    records.put_slice(&record);

    let mut batch = BytesMut::new();
    batch.put_i64(0); // base offset
    batch.put_i32((49 + records.len()) as i32); // batch length
    batch.put_i32(-1); // partition leader epoch
    batch.put_i8(2); // magic
    batch.put_u32(0); // CRC, filled in below
    batch.put_i16(0); // attributes
    batch.put_i32(0); // last offset delta
    batch.put_i64(1_000); // base timestamp
    batch.put_i64(1_000); // max timestamp
    batch.put_i64(77); // producer id
    batch.put_i16(3); // producer epoch
    batch.put_i32(10); // base sequence
    batch.put_i32(1); // record count
    batch.put_slice(&records);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// A v2 batch around `records_body` (records, compressed or not) as a client could send it,
/// with any header counts and a valid CRC: for tests of what produce must refuse.
pub(crate) fn batch_around(
    records_body: &[u8],
    compression_code: i16,
    record_count: i32,
    base_offset: i64,
) -> BytesMut {
    let mut batch = BytesMut::new();
    batch.put_i64(base_offset);
    batch.put_i32((49 + records_body.len()) as i32); // batch length
    batch.put_i32(-1); // partition leader epoch
    batch.put_i8(2); // magic
    batch.put_u32(0); // CRC, filled in below
    batch.put_i16(compression_code); // attributes: CreateTime, not transactional
    batch.put_i32(record_count - 1); // last offset delta
    batch.put_i64(1_000); // base timestamp
    batch.put_i64(1_000); // max timestamp
    batch.put_i64(-1); // producer id
    batch.put_i16(-1); // producer epoch
    batch.put_i32(-1); // base sequence
    batch.put_i32(record_count);
    batch.put_slice(records_body);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// One record as it sits in a batch body: length varint, then the fields.
pub(crate) fn record_bytes(
    offset_delta: i64,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: &[u8],
) -> Vec<u8> {
    record_with_headers(offset_delta, timestamp_delta, key, value, &[])
}

/// Like [`record_bytes`], with headers as given (repeated names included).
pub(crate) fn record_with_headers(
    offset_delta: i64,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&[u8], &[u8])],
) -> Vec<u8> {
    let mut record = BytesMut::new();
    record.put_u8(0); // attributes
    put_varint(&mut record, timestamp_delta);
    put_varint(&mut record, offset_delta);
    match key {
        Some(key) => {
            put_varint(&mut record, key.len() as i64);
            record.put_slice(key);
        }
        None => put_varint(&mut record, -1),
    }
    put_varint(&mut record, value.len() as i64);
    record.put_slice(value);
    put_varint(&mut record, headers.len() as i64);
    for (name, value) in headers {
        put_varint(&mut record, name.len() as i64);
        record.put_slice(name);
        put_varint(&mut record, value.len() as i64);
        record.put_slice(value);
    }
    let mut framed = BytesMut::new();
    put_varint(&mut framed, record.len() as i64);
    framed.put_slice(&record);
    framed.to_vec()
}

pub(crate) use crate::log::batch::put_varint;

/// Records and headers as `PartitionLog::append` expects them after produce validation.
pub(crate) fn validated(records: BytesMut) -> (BytesMut, Vec<BatchHeader>) {
    let headers = validate_batches(&records, u32::MAX).expect("test batch validates");
    (records, headers)
}

/// A leader-epoch cache holding `pairs` of (epoch, start offset); each must be accepted,
/// so a test cannot build a cache that `assign` would have refused.
pub(crate) fn epoch_cache(pairs: &[(i32, i64)]) -> LeaderEpochCache {
    let mut cache = LeaderEpochCache::default();
    for &(epoch, start_offset) in pairs {
        assert!(cache.assign(epoch, start_offset));
    }
    cache
}

/// Leader epoch the log tests append with.
pub(crate) const TEST_EPOCH: i32 = 5;

/// A log plus the bytes every appended batch should read back as.
pub(crate) struct LogModel {
    pub(crate) log: crate::log::PartitionLog,
    /// Each appended batch, stamped as the log should have stored it.
    pub(crate) batches: Vec<(BatchHeader, Bytes)>,
}

impl LogModel {
    pub(crate) fn open(dir: &std::path::Path, config: crate::log::LogConfig) -> Self {
        let log = crate::log::PartitionLog::open(dir.to_path_buf(), config, 0).unwrap();
        LogModel {
            log,
            batches: Vec::new(),
        }
    }

    /// Append one encoder batch and remember how it should read back (CreateTime).
    pub(crate) fn append(&mut self, batch: BytesMut, now_ms: i64) -> crate::log::AppendInfo {
        let mut expected = batch.clone();
        let (records, headers) = validated(batch);
        let info = self
            .log
            .append(&records, &headers, TEST_EPOCH, now_ms)
            .unwrap();
        crate::log::stamp_batch(&mut expected, info.first_offset, TEST_EPOCH, None);
        let header = BatchHeader::parse(&expected).unwrap();
        self.batches.push((header, expected.freeze()));
        info
    }

    /// Append one batch of `count` records with values of `value_bytes`.
    pub(crate) fn append_records(&mut self, count: usize, timestamp_ms: i64, value_bytes: usize) {
        let timestamps = vec![timestamp_ms; count];
        self.append(
            encode_batch_sized(&timestamps, Compression::None, value_bytes),
            0,
        );
    }

    /// The concatenated bytes of the batches from index `first` to the end.
    pub(crate) fn bytes_from(&self, first: usize) -> Vec<u8> {
        self.batches[first..]
            .iter()
            .flat_map(|(_, bytes)| bytes.iter().copied())
            .collect()
    }

    /// Index of the batch holding `offset`, or of the next one after a gap.
    pub(crate) fn batch_holding(&self, offset: i64) -> usize {
        let ends_after = |header: &BatchHeader| offset <= header.last_offset();
        let found = self
            .batches
            .iter()
            .position(|(header, _)| ends_after(header));
        found.expect("offset is below the log end")
    }

    /// Reads everything from `offset` and checks it equals the model.
    pub(crate) fn assert_reads_from(&self, offset: i64) {
        let read = self.log.read(offset, usize::MAX, i64::MAX, true).unwrap();
        let expected = self.bytes_from(self.batch_holding(offset));
        assert_eq!(
            read.records.len(),
            expected.len(),
            "bytes read from offset {offset}"
        );
        assert!(
            read.records[..] == expected[..],
            "content read from offset {offset}"
        );
    }
}
