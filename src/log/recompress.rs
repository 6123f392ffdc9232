//! Topic `compression.type` other than `producer`: the broker re-encodes each produced
//! batch with the topic's codec, as Kafka's LogValidator does when source and target
//! compression differ (`buildRecordsAndAssignOffsets`).
//!
//! Only batches that already passed the record walk ([`crate::log::records`]) get here, so
//! their decompressed size is under the cap before kafka-protocol decodes them in memory.
//! Records keep everything the producer set: offsets deltas, timestamps, keys, values,
//! headers, producer id, epoch and sequences, so idempotence checks see the same batch.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use crate::log::batch::BatchHeader;
use crate::log::error::BatchError;
use crate::log::records::{OffsetDeltas, decoded_exactly};

/// What a topic's `compression.type` asks of produced batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TopicCompression {
    /// `producer`: store batches as the producer compressed them.
    #[default]
    Producer,
    /// `uncompressed`, `gzip`, `snappy`, `lz4` or `zstd`: store batches with this codec.
    Codec(Compression),
}

impl TopicCompression {
    /// The topic config value; `None` for a value Kafka does not accept.
    pub fn parse(value: &str) -> Option<TopicCompression> {
        let codec = match value.trim() {
            "producer" => return Some(TopicCompression::Producer),
            "uncompressed" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        };
        Some(TopicCompression::Codec(codec))
    }

    /// The codec `header`'s batch must be re-encoded with, if it is not stored as is.
    /// Control batches are never recompressed, as in Kafka.
    fn target_for(self, header: &BatchHeader) -> Option<Compression> {
        match self {
            TopicCompression::Codec(codec)
                if codec as i16 != header.compression_code() && !header.is_control() =>
            {
                Some(codec)
            }
            _ => None,
        }
    }
}

/// Records one re-encoding may hold decoded at once. Decoded records take far more memory
/// than their bytes, and a small compressed batch can expand to millions of them; a larger
/// batch is stored with the producer's codec (nothing lost, only not recompressed).
pub const RECOMPRESS_RECORDS_MAX: i32 = 100_000;

/// Re-encodes the one batch in `records` with the topic's codec, or `None` when it is to
/// be stored as sent.
pub fn recompress(
    records: &Bytes,
    header: &BatchHeader,
    compression: TopicCompression,
) -> Result<Option<Bytes>, BatchError> {
    let Some(target) = compression.target_for(header) else {
        return Ok(None);
    };
    if header.record_count > RECOMPRESS_RECORDS_MAX {
        tracing::debug!(
            records = header.record_count,
            "batch stored with the producer's compression: too many records to re-encode"
        );
        return Ok(None);
    }
    let mut input = records.clone();
    let decoded = RecordBatchDecoder::decode(&mut input);
    let Some(set) = decoded
        .ok()
        .filter(|set| decoded_exactly(records, header, OffsetDeltas::Exact, &set.records))
    else {
        // Valid Kafka records our encoder cannot hold exactly (repeated header names,
        // non-UTF-8 header names): stored as sent rather than with headers lost.
        tracing::debug!(
            base_offset = header.base_offset,
            "batch stored with the producer's compression: re-encoding would lose headers"
        );
        return Ok(None);
    };
    let mut output = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: target,
    };
    RecordBatchEncoder::encode(&mut output, &set.records, &options).map_err(|error| {
        BatchError::InvalidRecord(format!("cannot re-encode records: {error:#}"))
    })?;
    Ok(Some(output.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::validate_batches;
    use crate::log::records::{OffsetDeltas, walk_batch};
    use crate::log::test_support::{encode_batch, hand_built_batch};

    /// Each record's offset, timestamp, key, value, producer id and sequence.
    type Fields = (i64, i64, Option<Bytes>, Option<Bytes>, i64, i32);

    fn records_of(batch: &[u8]) -> Vec<Fields> {
        let mut bytes = Bytes::copy_from_slice(batch);
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        let fields = set.records.into_iter().map(|r| {
            (
                r.offset,
                r.timestamp,
                r.key,
                r.value,
                r.producer_id,
                r.sequence,
            )
        });
        fields.collect()
    }

    #[test]
    fn producer_keeps_every_batch_as_sent() {
        let batch = encode_batch(&[1, 2], Compression::Gzip).freeze();
        let header = validate_batches(&batch, u32::MAX).unwrap()[0];
        assert_eq!(
            recompress(&batch, &header, TopicCompression::Producer),
            Ok(None)
        );
        let same = TopicCompression::Codec(Compression::Gzip);
        assert_eq!(recompress(&batch, &header, same), Ok(None));
    }

    #[test]
    fn batches_are_re_encoded_with_the_topic_codec_and_keep_their_records() {
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        for source in codecs {
            let batch = encode_batch(&[1_000, 1_007, 1_003], source).freeze();
            let header = validate_batches(&batch, u32::MAX).unwrap()[0];
            for target in codecs.into_iter().filter(|c| *c != source) {
                let topic = TopicCompression::Codec(target);
                let stored = recompress(&batch, &header, topic).unwrap().unwrap();
                let headers = validate_batches(&stored, u32::MAX).unwrap();
                assert_eq!(headers.len(), 1);
                let stored_header = headers[0];
                assert_eq!(stored_header.compression_code(), target as i16);
                assert_eq!(stored_header.record_count, 3);
                assert_eq!(stored_header.max_timestamp, 1_007);
                walk_batch(
                    &stored,
                    &stored_header,
                    OffsetDeltas::Exact,
                    1 << 20,
                    &mut |_| {},
                )
                .unwrap();
                assert_eq!(
                    records_of(&stored),
                    records_of(&batch),
                    "{source:?}->{target:?}"
                );
            }
        }
    }

    #[test]
    fn producer_id_and_sequence_survive_recompression() {
        let batch = hand_built_batch(b"hello").freeze();
        let header = validate_batches(&batch, u32::MAX).unwrap()[0];
        let topic = TopicCompression::Codec(Compression::Zstd);
        let stored = recompress(&batch, &header, topic).unwrap().unwrap();
        let stored_header = validate_batches(&stored, u32::MAX).unwrap()[0];
        assert_eq!(
            (stored_header.producer_id, stored_header.producer_epoch),
            (77, 3)
        );
        assert_eq!(stored_header.base_sequence, 10);
        assert_eq!(stored_header.base_timestamp, 1_000);
    }

    #[test]
    fn config_values_parse_like_kafka() {
        assert_eq!(
            TopicCompression::parse("producer"),
            Some(TopicCompression::Producer)
        );
        assert_eq!(
            TopicCompression::parse("uncompressed"),
            Some(TopicCompression::Codec(Compression::None))
        );
        assert_eq!(
            TopicCompression::parse("zstd"),
            Some(TopicCompression::Codec(Compression::Zstd))
        );
        assert_eq!(TopicCompression::parse("none"), None);
    }

    #[test]
    fn headers_the_encoder_cannot_hold_keep_the_producers_compression() {
        use crate::log::test_support::{batch_around, record_with_headers};
        let repeated: &[(&[u8], &[u8])] = &[(b"trace", b"1"), (b"trace", b"2")];
        let not_utf8: &[(&[u8], &[u8])] = &[(b"\xff\xfe", b"x")];
        for headers in [repeated, not_utf8] {
            let body = record_with_headers(0, 0, Some(b"k"), b"v", headers);
            let batch = Bytes::from(batch_around(&body, 0, 1, 0).to_vec());
            let header = validate_batches(&batch, u32::MAX).unwrap()[0];
            let topic = TopicCompression::Codec(Compression::Zstd);
            assert_eq!(recompress(&batch, &header, topic).unwrap(), None);
        }
        let distinct: &[(&[u8], &[u8])] = &[(b"a", b"1"), (b"b", b"2")];
        let body = record_with_headers(0, 0, Some(b"k"), b"v", distinct);
        let batch = Bytes::from(batch_around(&body, 0, 1, 0).to_vec());
        let header = validate_batches(&batch, u32::MAX).unwrap()[0];
        let topic = TopicCompression::Codec(Compression::Zstd);
        assert!(recompress(&batch, &header, topic).unwrap().is_some());
    }

    #[test]
    fn a_batch_of_very_many_records_keeps_the_producers_compression() {
        use crate::log::test_support::{batch_around, record_bytes};
        let count = RECOMPRESS_RECORDS_MAX + 1;
        let body: Vec<u8> = (0..i64::from(count))
            .flat_map(|index| record_bytes(index, 0, None, b""))
            .collect();
        let batch = Bytes::from(batch_around(&body, 0, count, 0).to_vec());
        let header = validate_batches(&batch, u32::MAX).unwrap()[0];
        let topic = TopicCompression::Codec(Compression::Zstd);
        assert_eq!(recompress(&batch, &header, topic).unwrap(), None);
    }
}
