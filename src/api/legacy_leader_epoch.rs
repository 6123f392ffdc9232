//! OffsetForLeaderEpoch v0 and v1, which kafka-protocol 0.18 no longer speaks (Kafka 4.0
//! dropped them, KIP-896). Issue 8 asks for versions 0-4, so these two are served by the
//! same handler as v2-4: a request is decoded here into the v2 struct, and the handler's
//! response is encoded here by hand.
//!
//! Wire formats (non-flexible: request header v1, response header v0):
//! - request v0 and v1: `[topic: string, [partition: int32, leader_epoch: int32]]`;
//! - response v0: `[topic: string, [error_code: int16, partition: int32, end_offset:
//!   int64]]`; v1 (KIP-279) adds `leader_epoch: int32` between partition and end_offset.
//!
//! What v2 added is filled in as Kafka reads an older request: `current_leader_epoch` -1
//! (no fencing), and `replica_id` the schema default -2, which Kafka gives every request
//! below v3 (the handler does not look at it). `throttle_time_ms` (v2+) is left out of
//! the answer, and v0 drops each partition's leader epoch: the end offset it carries is
//! the one every version computes.

use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::request_reader::{Malformed, PREALLOCATE_MAX, Reader};

/// The oldest version the crate's structs can encode; v0 and v1 map onto it.
pub const OFFSET_FOR_LEADER_EPOCH_STRUCT_VERSION_MIN: i16 = 2;

/// The fewest bytes a topic takes (an empty name, no partitions) and a partition takes.
const TOPIC_BYTES_MIN: usize = 2 + 4;
const PARTITION_BYTES: usize = 4 + 4;

/// Decodes an OffsetForLeaderEpoch v0 or v1 body (the two are identical).
pub fn decode_offset_for_leader_epoch(
    body: &[u8],
) -> Result<OffsetForLeaderEpochRequest, Malformed> {
    let mut body = Reader::new(body, false);
    let topic_count = body.count(TOPIC_BYTES_MIN)?;
    let mut topics = Vec::with_capacity(topic_count.min(PREALLOCATE_MAX));
    for _ in 0..topic_count {
        let name = StrBytes::from_string(body.string()?.to_owned());
        let partition_count = body.count(PARTITION_BYTES)?;
        let mut partitions = Vec::with_capacity(partition_count.min(PREALLOCATE_MAX));
        for _ in 0..partition_count {
            let partition = body.i32()?;
            let leader_epoch = body.i32()?;
            partitions.push(
                OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(leader_epoch),
            );
        }
        topics.push(
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(name))
                .with_partitions(partitions),
        );
    }
    Ok(OffsetForLeaderEpochRequest::default().with_topics(topics))
}

/// A response as OffsetForLeaderEpoch v0 or v1 puts it on the wire. Implements the
/// crate's `Encodable` so the one response framing (`api::encode_with_header`) writes it.
pub struct LegacyOffsetForLeaderEpochResponse<'a>(pub &'a OffsetForLeaderEpochResponse);

/// error_code + partition + end_offset, plus leader_epoch from v1 on.
fn partition_size(version: i16) -> usize {
    2 + 4 + 8 + if version >= 1 { 4 } else { 0 }
}

fn check_version(version: i16) -> anyhow::Result<()> {
    if !(0..OFFSET_FOR_LEADER_EPOCH_STRUCT_VERSION_MIN).contains(&version) {
        anyhow::bail!("OffsetForLeaderEpoch v{version} is not a hand-encoded version");
    }
    Ok(())
}

/// A non-flexible string's length prefix; a name too long for it cannot be sent.
fn string_length(text: &str) -> anyhow::Result<i16> {
    i16::try_from(text.len())
        .map_err(|_| anyhow::anyhow!("topic name of {} bytes is too long", text.len()))
}

/// A non-flexible array's length prefix.
fn array_length(length: usize) -> anyhow::Result<i32> {
    i32::try_from(length).map_err(|_| anyhow::anyhow!("array of {length} items is too long"))
}

impl Encodable for LegacyOffsetForLeaderEpochResponse<'_> {
    fn encode<B: ByteBufMut>(&self, buffer: &mut B, version: i16) -> anyhow::Result<()> {
        check_version(version)?;
        buffer.put_i32(array_length(self.0.topics.len())?);
        for topic in &self.0.topics {
            let name = topic.topic.0.as_str();
            buffer.put_i16(string_length(name)?);
            buffer.put_slice(name.as_bytes());
            buffer.put_i32(array_length(topic.partitions.len())?);
            for partition in &topic.partitions {
                buffer.put_i16(partition.error_code);
                buffer.put_i32(partition.partition);
                if version >= 1 {
                    buffer.put_i32(partition.leader_epoch);
                }
                buffer.put_i64(partition.end_offset);
            }
        }
        Ok(())
    }

    fn compute_size(&self, version: i16) -> anyhow::Result<usize> {
        check_version(version)?;
        let mut size = 4;
        for topic in &self.0.topics {
            size += 2 + topic.topic.0.len() + 4;
            size += topic.partitions.len() * partition_size(version);
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::offset_for_leader_epoch_response::{
        EpochEndOffset, OffsetForLeaderTopicResult,
    };

    use super::*;

    fn request() -> Bytes {
        let mut buffer = BytesMut::new();
        buffer.put_i32(2); // topics
        buffer.put_slice(b"\x00\x01t");
        buffer.put_i32(2); // partitions
        buffer.put_slice(&[0, 0, 0, 0, 0, 0, 0, 3]); // partition 0, epoch 3
        buffer.put_slice(&[0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff]); // partition 7, epoch -1
        buffer.put_slice(b"\x00\x02uv");
        buffer.put_i32(0);
        buffer.freeze()
    }

    #[test]
    fn v0_and_v1_requests_decode_into_the_v2_struct() {
        let decoded = decode_offset_for_leader_epoch(&request()).unwrap();
        assert_eq!(decoded.replica_id.0, -2, "Kafka's default below v3");
        let names: Vec<&str> = decoded.topics.iter().map(|t| t.topic.0.as_str()).collect();
        assert_eq!(names, ["t", "uv"]);
        let asks: Vec<(i32, i32, i32)> = (decoded.topics[0].partitions.iter())
            .map(|p| (p.partition, p.current_leader_epoch, p.leader_epoch))
            .collect();
        assert_eq!(asks, [(0, -1, 3), (7, -1, -1)]);
        assert!(decoded.topics[1].partitions.is_empty());
    }

    #[test]
    fn truncated_or_lying_requests_are_refused() {
        let whole = request();
        for cut in 0..whole.len() {
            assert!(
                decode_offset_for_leader_epoch(&whole[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for lie in [i32::MAX, -1] {
            let mut body = BytesMut::new();
            body.put_i32(1);
            body.put_slice(b"\x00\x01t");
            body.put_i32(lie);
            body.put_i64(0);
            assert!(decode_offset_for_leader_epoch(&body).is_err(), "{lie}");
        }
    }

    fn response() -> OffsetForLeaderEpochResponse {
        let partitions = vec![
            EpochEndOffset::default()
                .with_partition(0)
                .with_leader_epoch(3)
                .with_end_offset(42),
            EpochEndOffset::default()
                .with_partition(7)
                .with_error_code(3),
        ];
        OffsetForLeaderEpochResponse::default()
            .with_throttle_time_ms(99)
            .with_topics(vec![
                OffsetForLeaderTopicResult::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(partitions),
            ])
    }

    fn encode(version: i16) -> Vec<u8> {
        let legacy = LegacyOffsetForLeaderEpochResponse(&response());
        let mut buffer = BytesMut::new();
        legacy.encode(&mut buffer, version).unwrap();
        assert_eq!(buffer.len(), legacy.compute_size(version).unwrap());
        buffer.to_vec()
    }

    #[test]
    fn v0_answers_carry_no_leader_epoch_and_no_throttle_time() {
        let mut expected = vec![0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2];
        expected.extend([0, 0, 0, 0, 0, 0]); // no error, partition 0
        expected.extend(42i64.to_be_bytes());
        expected.extend([0, 3, 0, 0, 0, 7]); // UNKNOWN_TOPIC_OR_PARTITION, partition 7
        expected.extend((-1i64).to_be_bytes());
        assert_eq!(encode(0), expected);
    }

    #[test]
    fn v1_answers_carry_the_leader_epoch_before_the_end_offset() {
        let mut expected = vec![0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2];
        expected.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 3]); // no error, partition 0, epoch 3
        expected.extend(42i64.to_be_bytes());
        expected.extend([0, 3, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff]);
        expected.extend((-1i64).to_be_bytes());
        assert_eq!(encode(1), expected);
    }

    #[test]
    fn other_versions_and_unsendable_names_are_encode_errors() {
        let response = response();
        let legacy = LegacyOffsetForLeaderEpochResponse(&response);
        for version in [-1, 2, 4] {
            assert!(legacy.compute_size(version).is_err(), "v{version}");
            assert!(
                legacy.encode(&mut BytesMut::new(), version).is_err(),
                "v{version}"
            );
        }
        let long = "x".repeat(40_000);
        let response = OffsetForLeaderEpochResponse::default().with_topics(vec![
            OffsetForLeaderTopicResult::default()
                .with_topic(TopicName(StrBytes::from_string(long))),
        ]);
        let legacy = LegacyOffsetForLeaderEpochResponse(&response);
        assert!(legacy.encode(&mut BytesMut::new(), 1).is_err());
    }
}
