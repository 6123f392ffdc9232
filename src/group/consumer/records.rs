//! The records a KIP-848 consumer group keeps in `__consumer_offsets`, byte-compatible with
//! Kafka 4.0's, so its tools read them (`kafka-dump-log --offsets-decoder`):
//!
//! | key version | Kafka's name | what |
//! |---|---|---|
//! | 3 | `ConsumerGroupMetadata` | the group epoch |
//! | 4 | `ConsumerGroupPartitionMetadata` | the subscribed topics (id, partition count) |
//! | 5 | `ConsumerGroupMemberMetadata` | a member's client, subscription, assignor |
//! | 6 | `ConsumerGroupTargetAssignmentMetadata` | the epoch of the target assignment |
//! | 7 | `ConsumerGroupTargetAssignmentMember` | a member's target partitions |
//! | 8 | `ConsumerGroupCurrentMemberAssignment` | a member's epoch, state, partitions |
//! | 16 | `ConsumerGroupRegularExpression` | what a subscribed regex matched |
//!
//! Keys are the old fixed format (int16 version, int16-length strings); values are version
//! 0 of "flexible" messages: compact strings and arrays (unsigned varint length + 1), and a
//! tagged-field section after every struct, which a reader skips.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use super::assignor::{Assignment, TopicInfo};
use super::member::MemberState;
use crate::group::records::{RecordFormatError, get_string_or_empty};
use crate::record_fields::{
    FieldError, get_compact_array_length, get_compact_nullable_string, get_compact_string, get_i8,
    get_i16, get_i32, get_i64, get_uuid, put_compact_length, put_compact_nullable_string,
    put_compact_string, put_no_tags, put_string, skip_tags,
};

/// A consumer group's record key, less the group id every one of them starts with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConsumerKey {
    Metadata,
    PartitionMetadata,
    Member(String),
    TargetMetadata,
    TargetMember(String),
    CurrentAssignment(String),
    Regex(String),
}

/// A member's metadata (record 5): what its heartbeats told about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberMetadata {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub subscribed_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

/// Where a member stands in its reconciliation (record 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentAssignment {
    pub member_epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// What a subscribed regex matched (record 16). `version` is the metadata image's offset
/// at the match, as Kafka writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRegex {
    pub topics: BTreeSet<String>,
    pub version: i64,
    pub timestamp_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerValue {
    Metadata { epoch: i32 },
    PartitionMetadata(BTreeMap<String, TopicInfo>),
    Member(MemberMetadata),
    TargetMetadata { epoch: i32 },
    TargetMember(Assignment),
    CurrentAssignment(CurrentAssignment),
    Regex(ResolvedRegex),
}

/// The key versions of a consumer group's records.
pub const KEY_VERSIONS: [i16; 7] = [3, 4, 5, 6, 7, 8, 16];

/// The only value version written and read (Kafka 4.0's).
const VALUE_VERSION: i16 = 0;

impl ConsumerKey {
    pub fn version(&self) -> i16 {
        match self {
            ConsumerKey::Metadata => 3,
            ConsumerKey::PartitionMetadata => 4,
            ConsumerKey::Member(_) => 5,
            ConsumerKey::TargetMetadata => 6,
            ConsumerKey::TargetMember(_) => 7,
            ConsumerKey::CurrentAssignment(_) => 8,
            ConsumerKey::Regex(_) => 16,
        }
    }

    /// The key after its version: the group id, then the member id or regex if it has one.
    pub fn encode(&self, group: &str, buffer: &mut BytesMut) {
        put_string(buffer, group);
        match self {
            ConsumerKey::Member(name)
            | ConsumerKey::TargetMember(name)
            | ConsumerKey::CurrentAssignment(name)
            | ConsumerKey::Regex(name) => put_string(buffer, name),
            ConsumerKey::Metadata
            | ConsumerKey::PartitionMetadata
            | ConsumerKey::TargetMetadata => {}
        }
    }

    /// Decodes the key after its `version` (one of [`KEY_VERSIONS`]): (group id, key).
    pub fn decode(
        version: i16,
        bytes: &mut &[u8],
    ) -> Result<(String, ConsumerKey), RecordFormatError> {
        let group = get_string_or_empty(bytes)?;
        let key = match version {
            3 => ConsumerKey::Metadata,
            4 => ConsumerKey::PartitionMetadata,
            6 => ConsumerKey::TargetMetadata,
            5 => ConsumerKey::Member(get_string_or_empty(bytes)?),
            7 => ConsumerKey::TargetMember(get_string_or_empty(bytes)?),
            8 => ConsumerKey::CurrentAssignment(get_string_or_empty(bytes)?),
            16 => ConsumerKey::Regex(get_string_or_empty(bytes)?),
            version => {
                return Err(RecordFormatError::UnknownVersion {
                    what: "key",
                    version,
                });
            }
        };
        Ok((group, key))
    }
}

/// Kafka's `MemberState` byte.
fn state_byte(state: MemberState) -> i8 {
    match state {
        MemberState::Stable => 0,
        MemberState::UnrevokedPartitions => 1,
        MemberState::UnreleasedPartitions => 2,
    }
}

fn state_from_byte(byte: i8) -> Result<MemberState, RecordFormatError> {
    match byte {
        0 => Ok(MemberState::Stable),
        1 => Ok(MemberState::UnrevokedPartitions),
        2 => Ok(MemberState::UnreleasedPartitions),
        _ => Err(FieldError::Invalid("member state").into()),
    }
}

pub fn encode_value(value: &ConsumerValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(VALUE_VERSION);
    match value {
        ConsumerValue::Metadata { epoch } | ConsumerValue::TargetMetadata { epoch } => {
            out.put_i32(*epoch);
        }
        ConsumerValue::PartitionMetadata(topics) => {
            put_compact_length(&mut out, Some(topics.len()));
            for (name, info) in topics {
                out.put_slice(info.id.as_bytes());
                put_compact_string(&mut out, name);
                out.put_i32(info.partitions);
                put_compact_length(&mut out, Some(0)); // partition racks: not tracked
                put_no_tags(&mut out);
            }
        }
        ConsumerValue::Member(member) => {
            put_compact_nullable_string(&mut out, member.instance_id.as_deref());
            put_compact_nullable_string(&mut out, member.rack_id.as_deref());
            put_compact_string(&mut out, &member.client_id);
            put_compact_string(&mut out, &member.client_host);
            put_compact_length(&mut out, Some(member.subscribed.len()));
            for name in &member.subscribed {
                put_compact_string(&mut out, name);
            }
            put_compact_nullable_string(&mut out, member.subscribed_regex.as_deref());
            out.put_i32(member.rebalance_timeout_ms);
            put_compact_nullable_string(&mut out, member.server_assignor.as_deref());
        }
        ConsumerValue::TargetMember(assignment) => put_assignment(&mut out, assignment),
        ConsumerValue::CurrentAssignment(current) => {
            out.put_i32(current.member_epoch);
            out.put_i32(current.previous_epoch);
            out.put_i8(state_byte(current.state));
            put_assignment(&mut out, &current.assigned);
            put_assignment(&mut out, &current.pending_revocation);
        }
        ConsumerValue::Regex(regex) => {
            put_compact_length(&mut out, Some(regex.topics.len()));
            for name in &regex.topics {
                put_compact_string(&mut out, name);
            }
            out.put_i64(regex.version);
            out.put_i64(regex.timestamp_ms);
        }
    }
    put_no_tags(&mut out);
    out.freeze()
}

/// Decodes the value of a record with `key`; an unknown version or a value cut short is
/// an error, never a default.
pub fn decode_value(
    key: &ConsumerKey,
    mut bytes: &[u8],
) -> Result<ConsumerValue, RecordFormatError> {
    let bytes = &mut bytes;
    let version = get_i16(bytes)?;
    if version != VALUE_VERSION {
        return Err(RecordFormatError::UnknownVersion {
            what: "consumer group value",
            version,
        });
    }
    let value = match key {
        ConsumerKey::Metadata => ConsumerValue::Metadata {
            epoch: get_i32(bytes)?,
        },
        ConsumerKey::TargetMetadata => ConsumerValue::TargetMetadata {
            epoch: get_i32(bytes)?,
        },
        ConsumerKey::PartitionMetadata => {
            let mut topics = BTreeMap::new();
            for _ in 0..get_compact_array_length(bytes)? {
                let id = get_uuid(bytes)?;
                let name = get_compact_string(bytes)?;
                let partitions = get_i32(bytes)?;
                for _ in 0..get_compact_array_length(bytes)? {
                    get_i32(bytes)?; // partition
                    for _ in 0..get_compact_array_length(bytes)? {
                        get_compact_string(bytes)?; // rack
                    }
                    skip_tags(bytes)?;
                }
                skip_tags(bytes)?;
                topics.insert(name, TopicInfo { id, partitions });
            }
            ConsumerValue::PartitionMetadata(topics)
        }
        ConsumerKey::Member(_) => ConsumerValue::Member(MemberMetadata {
            instance_id: get_compact_nullable_string(bytes)?,
            rack_id: get_compact_nullable_string(bytes)?,
            client_id: get_compact_string(bytes)?,
            client_host: get_compact_string(bytes)?,
            subscribed: {
                let count = get_compact_array_length(bytes)?;
                let mut names = Vec::new();
                for _ in 0..count {
                    names.push(get_compact_string(bytes)?);
                }
                names
            },
            subscribed_regex: get_compact_nullable_string(bytes)?,
            rebalance_timeout_ms: get_i32(bytes)?,
            server_assignor: get_compact_nullable_string(bytes)?,
        }),
        ConsumerKey::TargetMember(_) => ConsumerValue::TargetMember(get_assignment(bytes)?),
        ConsumerKey::CurrentAssignment(_) => {
            let member_epoch = get_i32(bytes)?;
            let previous_epoch = get_i32(bytes)?;
            let state = state_from_byte(get_i8(bytes)?)?;
            ConsumerValue::CurrentAssignment(CurrentAssignment {
                member_epoch,
                previous_epoch,
                state,
                assigned: get_assignment(bytes)?,
                pending_revocation: get_assignment(bytes)?,
            })
        }
        ConsumerKey::Regex(_) => {
            let mut topics = BTreeSet::new();
            for _ in 0..get_compact_array_length(bytes)? {
                topics.insert(get_compact_string(bytes)?);
            }
            ConsumerValue::Regex(ResolvedRegex {
                topics,
                version: get_i64(bytes)?,
                timestamp_ms: get_i64(bytes)?,
            })
        }
    };
    skip_tags(bytes)?;
    Ok(value)
}

/// `[]TopicPartitions`: topic id and partition list, each entry closed by its tags.
fn put_assignment(out: &mut BytesMut, assignment: &Assignment) {
    put_compact_length(out, Some(assignment.len()));
    for (topic, partitions) in assignment {
        out.put_slice(topic.as_bytes());
        put_compact_length(out, Some(partitions.len()));
        for partition in partitions {
            out.put_i32(*partition);
        }
        put_no_tags(out);
    }
}

fn get_assignment(bytes: &mut &[u8]) -> Result<Assignment, RecordFormatError> {
    let mut assignment = Assignment::new();
    for _ in 0..get_compact_array_length(bytes)? {
        let topic = get_uuid(bytes)?;
        let mut partitions = BTreeSet::new();
        for _ in 0..get_compact_array_length(bytes)? {
            partitions.insert(get_i32(bytes)?);
        }
        // Later Kafka versions tag each entry with assignment epochs; skipped here.
        skip_tags(bytes)?;
        if !partitions.is_empty() {
            assignment.entry(topic).or_default().extend(partitions);
        }
    }
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn topic() -> Uuid {
        Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10)
    }

    fn round_trip(key: ConsumerKey, value: ConsumerValue) {
        let bytes = encode_value(&value);
        assert_eq!(decode_value(&key, &bytes), Ok(value), "{key:?}");
        for cut in 0..bytes.len() {
            assert!(
                decode_value(&key, &bytes[..cut]).is_err(),
                "{key:?} cut at {cut}"
            );
        }
    }

    #[test]
    fn every_value_round_trips_and_a_cut_one_is_an_error() {
        let assignment = Assignment::from([(topic(), BTreeSet::from([0, 2, 7]))]);
        round_trip(ConsumerKey::Metadata, ConsumerValue::Metadata { epoch: 7 });
        round_trip(
            ConsumerKey::TargetMetadata,
            ConsumerValue::TargetMetadata { epoch: 6 },
        );
        let topics = BTreeMap::from([(
            "orders".to_string(),
            TopicInfo {
                id: topic(),
                partitions: 12,
            },
        )]);
        round_trip(
            ConsumerKey::PartitionMetadata,
            ConsumerValue::PartitionMetadata(topics),
        );
        let member = MemberMetadata {
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "rdkafka".into(),
            client_host: "/127.0.0.1".into(),
            subscribed: vec!["a".into(), "b".into()],
            subscribed_regex: Some("c.*".into()),
            rebalance_timeout_ms: 300_000,
            server_assignor: Some("uniform".into()),
        };
        round_trip(
            ConsumerKey::Member("m".into()),
            ConsumerValue::Member(member),
        );
        round_trip(
            ConsumerKey::TargetMember("m".into()),
            ConsumerValue::TargetMember(assignment.clone()),
        );
        let current = CurrentAssignment {
            member_epoch: 5,
            previous_epoch: 4,
            state: MemberState::UnrevokedPartitions,
            assigned: assignment.clone(),
            pending_revocation: Assignment::from([(Uuid::from_u128(3), BTreeSet::from([1]))]),
        };
        round_trip(
            ConsumerKey::CurrentAssignment("m".into()),
            ConsumerValue::CurrentAssignment(current),
        );
        let regex = ResolvedRegex {
            topics: BTreeSet::from(["a".into(), "ab".into()]),
            version: 0,
            timestamp_ms: 1_700_000_000_000,
        };
        round_trip(
            ConsumerKey::Regex("a.*".into()),
            ConsumerValue::Regex(regex),
        );
    }

    /// The bytes Kafka's generated `ConsumerGroupTargetAssignmentMemberValue` and
    /// `ConsumerGroupMetadataKey` writers produce, worked out from the schemas.
    #[test]
    fn bytes_match_kafkas_schemas() {
        let assignment = Assignment::from([(topic(), BTreeSet::from([0, 2]))]);
        let bytes = encode_value(&ConsumerValue::TargetMember(assignment));
        let mut expected = vec![0, 0, 2];
        expected.extend_from_slice(topic().as_bytes());
        expected.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0]);
        assert_eq!(&bytes[..], &expected[..]);

        let mut key = BytesMut::new();
        key.put_i16(ConsumerKey::Member("m".into()).version());
        ConsumerKey::Member("m".into()).encode("g", &mut key);
        assert_eq!(&key[..], &[0, 5, 0, 1, b'g', 0, 1, b'm']);
        let mut rest = &key[2..];
        assert_eq!(
            ConsumerKey::decode(5, &mut rest),
            Ok(("g".to_string(), ConsumerKey::Member("m".into())))
        );
    }

    #[test]
    fn unknown_tagged_fields_are_skipped_and_bad_values_refused() {
        // A metadata value with a tagged field (Kafka 4.1's metadata hash, tag 0).
        let mut bytes = BytesMut::new();
        bytes.put_i16(0);
        bytes.put_i32(9);
        bytes.put_slice(&[1, 0, 8]);
        bytes.put_i64(42);
        assert_eq!(
            decode_value(&ConsumerKey::Metadata, &bytes),
            Ok(ConsumerValue::Metadata { epoch: 9 })
        );
        assert!(decode_value(&ConsumerKey::Metadata, &[0, 1, 0, 0, 0, 9, 0]).is_err());
        // A member state Kafka does not define.
        let mut bytes = BytesMut::new();
        bytes.put_i16(0);
        bytes.put_i32(1);
        bytes.put_i32(0);
        bytes.put_i8(9);
        bytes.put_slice(&[1, 1, 0]);
        let key = ConsumerKey::CurrentAssignment("m".into());
        assert!(decode_value(&key, &bytes).is_err());
        // An array count far beyond the bytes left.
        let bytes = [0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(
            decode_value(&ConsumerKey::TargetMember("m".into()), &bytes),
            Err(RecordFormatError::Field(FieldError::Truncated))
        );
    }
}
