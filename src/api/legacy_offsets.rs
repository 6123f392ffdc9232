//! OffsetCommit v0-1 and OffsetFetch v0, which kafka-protocol 0.18 no longer decodes
//! (Kafka 4.0 dropped them, KIP-896). Old clients still send them, so they are mapped
//! onto the newest equivalent: OffsetCommit v0/v1 requests are decoded here into the v2
//! struct, and their responses are byte-identical to v2's (throttle time arrived in v3).
//! OffsetFetch v0 is byte-identical to v1 in both directions.

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::legacy_wire::{count, i32_of, i64_of, nullable_string, string};

/// The oldest version each API's structs can encode; older wire versions map onto it.
pub const OFFSET_COMMIT_STRUCT_VERSION_MIN: i16 = 2;
pub const OFFSET_FETCH_STRUCT_VERSION_MIN: i16 = 1;

/// Decodes an OffsetCommit v0 or v1 body. `None` if the bytes do not parse.
pub fn decode_offset_commit(mut body: Bytes, version: i16) -> Option<OffsetCommitRequest> {
    let body = &mut body;
    let group_id = string(body)?;
    let (generation, member_id) = if version >= 1 {
        (i32_of(body)?, string(body)?)
    } else {
        (-1, String::new())
    };
    let topic_count = count(body)?;
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        let name = string(body)?;
        let partition_count = count(body)?;
        let mut partitions = Vec::with_capacity(partition_count);
        for _ in 0..partition_count {
            let index = i32_of(body)?;
            let offset = i64_of(body)?;
            if version >= 1 {
                i64_of(body)?; // commit timestamp: Kafka ignores it since 0.10.1
            }
            let metadata = nullable_string(body)?;
            partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(index)
                    .with_committed_offset(offset)
                    .with_committed_metadata(metadata.map(StrBytes::from_string)),
            );
        }
        topics.push(
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions),
        );
    }
    Some(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group_id)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(member_id))
            .with_topics(topics),
    )
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;

    fn put_string(buffer: &mut BytesMut, text: &str) {
        buffer.put_i16(text.len() as i16);
        buffer.put_slice(text.as_bytes());
    }

    fn request(version: i16) -> Bytes {
        let mut buffer = BytesMut::new();
        put_string(&mut buffer, "grp");
        if version >= 1 {
            buffer.put_i32(4);
            put_string(&mut buffer, "member-1");
        }
        buffer.put_i32(1);
        put_string(&mut buffer, "t");
        buffer.put_i32(1);
        buffer.put_i32(2);
        buffer.put_i64(42);
        if version >= 1 {
            buffer.put_i64(123);
        }
        put_string(&mut buffer, "meta");
        buffer.freeze()
    }

    #[test]
    fn v0_and_v1_commits_decode_into_the_v2_struct() {
        for version in [0, 1] {
            let decoded = decode_offset_commit(request(version), version).unwrap();
            assert_eq!(decoded.group_id.0.as_str(), "grp");
            let expected = if version == 1 {
                (4, "member-1")
            } else {
                (-1, "")
            };
            assert_eq!(
                (
                    decoded.generation_id_or_member_epoch,
                    decoded.member_id.as_str()
                ),
                expected
            );
            let partition = &decoded.topics[0].partitions[0];
            assert_eq!(
                (partition.partition_index, partition.committed_offset),
                (2, 42)
            );
            assert_eq!(partition.committed_metadata.as_deref(), Some("meta"));
        }
    }

    #[test]
    fn truncated_or_lying_bodies_are_refused() {
        let whole = request(1);
        for cut in 0..whole.len() {
            assert!(
                decode_offset_commit(whole.slice(..cut), 1).is_none(),
                "cut at {cut}"
            );
        }
        let mut huge = BytesMut::new();
        put_string(&mut huge, "g");
        huge.put_i32(i32::MAX);
        assert!(decode_offset_commit(huge.freeze(), 0).is_none());
    }
}
