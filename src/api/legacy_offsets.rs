//! OffsetCommit v0-1 and OffsetFetch v0, which kafka-protocol 0.18 no longer decodes
//! (Kafka 4.0 dropped them, KIP-896). Old clients still send them, so they are mapped
//! onto the newest equivalent: OffsetCommit v0/v1 requests are decoded here into the v2
//! struct, and their responses are byte-identical to v2's (throttle time arrived in v3).
//! OffsetFetch v0 is byte-identical to v1 in both directions.

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::request_reader::{Malformed, PREALLOCATE_MAX, Reader};

/// The oldest version each API's structs can encode; older wire versions map onto it.
pub const OFFSET_COMMIT_STRUCT_VERSION_MIN: i16 = 2;
pub const OFFSET_FETCH_STRUCT_VERSION_MIN: i16 = 1;

/// The fewest bytes a topic takes: an empty name and an empty partition array.
const TOPIC_BYTES_MIN: usize = 2 + 4;

/// The fewest bytes a partition takes: index, offset, (v1) timestamp and a null metadata.
fn partition_bytes_min(version: i16) -> usize {
    4 + 8 + if version >= 1 { 8 } else { 0 } + 2
}

/// Decodes an OffsetCommit v0 or v1 body (classic encoding). Strings are non-nullable
/// except a partition's metadata, as in Kafka's schema.
pub fn decode_offset_commit(body: &[u8], version: i16) -> Result<OffsetCommitRequest, Malformed> {
    let mut body = Reader::new(body, false);
    let group_id = StrBytes::from_string(body.string()?.to_owned());
    let (generation, member_id) = if version >= 1 {
        (body.i32()?, body.string()?)
    } else {
        (-1, "")
    };
    let member_id = StrBytes::from_string(member_id.to_owned());
    let topic_count = body.count(TOPIC_BYTES_MIN)?;
    let mut topics = Vec::with_capacity(topic_count.min(PREALLOCATE_MAX));
    for _ in 0..topic_count {
        let name = StrBytes::from_string(body.string()?.to_owned());
        let partition_count = body.count(partition_bytes_min(version))?;
        let mut partitions = Vec::with_capacity(partition_count.min(PREALLOCATE_MAX));
        for _ in 0..partition_count {
            let index = body.i32()?;
            let offset = body.i64()?;
            if version >= 1 {
                body.i64()?; // commit timestamp: Kafka ignores it since 0.10.1
            }
            let metadata = body.nullable_string()?;
            partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(index)
                    .with_committed_offset(offset)
                    .with_committed_metadata(
                        metadata.map(|text| StrBytes::from_string(text.to_owned())),
                    ),
            );
        }
        topics.push(
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(name))
                .with_partitions(partitions),
        );
    }
    Ok(OffsetCommitRequest::default()
        .with_group_id(GroupId(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member_id)
        .with_topics(topics))
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes, BytesMut};

    use super::*;

    fn put_string(buffer: &mut BytesMut, text: &str) {
        buffer.put_i16(text.len() as i16);
        buffer.put_slice(text.as_bytes());
    }

    fn request(version: i16) -> Bytes {
        request_with(version, Some("meta"))
    }

    /// One partition's commit, with `metadata` (null if `None`).
    fn request_with(version: i16, metadata: Option<&str>) -> Bytes {
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
        match metadata {
            Some(metadata) => put_string(&mut buffer, metadata),
            None => buffer.put_i16(-1),
        }
        buffer.freeze()
    }

    #[test]
    fn v0_and_v1_commits_decode_into_the_v2_struct() {
        for version in [0, 1] {
            let decoded = decode_offset_commit(&request(version), version).unwrap();
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
    fn metadata_may_be_null_and_the_names_may_not() {
        let body = request_with(0, None);
        let decoded = decode_offset_commit(&body, 0).unwrap();
        assert_eq!(decoded.topics[0].partitions[0].committed_offset, 42);
        assert_eq!(decoded.topics[0].partitions[0].committed_metadata, None);
        let mut null_group = BytesMut::new();
        null_group.put_i16(-1);
        null_group.put_slice(&body[2 + "grp".len()..]);
        assert!(decode_offset_commit(&null_group, 0).is_err());
    }

    #[test]
    fn truncated_or_lying_bodies_are_refused() {
        let whole = request(1);
        for cut in 0..whole.len() {
            assert!(
                decode_offset_commit(&whole[..cut], 1).is_err(),
                "cut at {cut}"
            );
        }
        let mut huge = BytesMut::new();
        put_string(&mut huge, "g");
        huge.put_i32(i32::MAX);
        assert!(decode_offset_commit(&huge, 0).is_err());
    }
}
