//! The key/value formats of records in `__consumer_offsets`, byte-compatible with Kafka's
//! (`OffsetCommitKey` v1, `OffsetCommitValue` v0-v3, `GroupMetadataKey` v2,
//! `GroupMetadataValue` v0-v3), so Kafka's own tooling can read our offsets topic. A
//! consumer group's records (keys 3-8 and 16) are in `consumer::records`.
//! A record with a null value is a tombstone: the key's latest state is "deleted".

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::consumer::records::{ConsumerKey, KEY_VERSIONS};
use crate::record_fields::{
    FieldError, FieldResult, get_i16, get_i32, get_i64, get_nullable_bytes, get_nullable_string,
    put_bytes, put_nullable_string, put_string,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordFormatError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
    /// A KIP-848 consumer group's record (key versions 3-8 and 16).
    Consumer {
        group: String,
        key: ConsumerKey,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

pub fn encode_key(key: &RecordKey) -> Bytes {
    let mut buffer = BytesMut::new();
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            buffer.put_i16(OFFSET_KEY_VERSION);
            put_string(&mut buffer, group);
            put_string(&mut buffer, topic);
            buffer.put_i32(*partition);
        }
        RecordKey::Group { group } => {
            buffer.put_i16(GROUP_KEY_VERSION);
            put_string(&mut buffer, group);
        }
        RecordKey::Consumer { group, key } => {
            buffer.put_i16(key.version());
            key.encode(group, &mut buffer);
        }
    }
    buffer.freeze()
}

pub fn decode_key(mut bytes: &[u8]) -> Result<RecordKey, RecordFormatError> {
    match get_i16(&mut bytes)? {
        0 | 1 => Ok(RecordKey::Offset {
            group: get_string_or_empty(&mut bytes)?,
            topic: get_string_or_empty(&mut bytes)?,
            partition: get_i32(&mut bytes)?,
        }),
        2 => Ok(RecordKey::Group {
            group: get_string_or_empty(&mut bytes)?,
        }),
        version if KEY_VERSIONS.contains(&version) => {
            let (group, key) = ConsumerKey::decode(version, &mut bytes)?;
            Ok(RecordKey::Consumer { group, key })
        }
        version => Err(RecordFormatError::UnknownVersion {
            what: "key",
            version,
        }),
    }
}

pub fn encode_offset(value: &OffsetValue) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(OFFSET_VALUE_VERSION);
    buffer.put_i64(value.offset);
    buffer.put_i32(value.leader_epoch);
    put_string(&mut buffer, &value.metadata);
    buffer.put_i64(value.commit_timestamp_ms);
    buffer.freeze()
}

pub fn decode_offset(mut bytes: &[u8]) -> Result<OffsetValue, RecordFormatError> {
    let version = get_i16(&mut bytes)?;
    if !(0..=3).contains(&version) {
        return Err(RecordFormatError::UnknownVersion {
            what: "offset value",
            version,
        });
    }
    let offset = get_i64(&mut bytes)?;
    let leader_epoch = if version >= 3 {
        get_i32(&mut bytes)?
    } else {
        -1
    };
    let metadata = get_string_or_empty(&mut bytes)?;
    let commit_timestamp_ms = get_i64(&mut bytes)?;
    if version == 1 {
        get_i64(&mut bytes)?; // expire timestamp, no longer used
    }
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

pub fn encode_group(value: &GroupValue) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut buffer, &value.protocol_type);
    buffer.put_i32(value.generation);
    put_nullable_string(&mut buffer, value.protocol.as_deref());
    put_nullable_string(&mut buffer, value.leader.as_deref());
    buffer.put_i64(value.current_state_timestamp_ms);
    buffer.put_i32(value.members.len() as i32);
    for member in &value.members {
        put_string(&mut buffer, &member.member_id);
        put_nullable_string(&mut buffer, member.group_instance_id.as_deref());
        put_string(&mut buffer, &member.client_id);
        put_string(&mut buffer, &member.client_host);
        buffer.put_i32(member.rebalance_timeout_ms);
        buffer.put_i32(member.session_timeout_ms);
        put_bytes(&mut buffer, &member.subscription);
        put_bytes(&mut buffer, &member.assignment);
    }
    buffer.freeze()
}

pub fn decode_group(mut bytes: &[u8]) -> Result<GroupValue, RecordFormatError> {
    let version = get_i16(&mut bytes)?;
    if !(0..=3).contains(&version) {
        return Err(RecordFormatError::UnknownVersion {
            what: "group value",
            version,
        });
    }
    let mut value = GroupValue {
        protocol_type: get_string_or_empty(&mut bytes)?,
        generation: get_i32(&mut bytes)?,
        protocol: get_nullable_string(&mut bytes)?,
        leader: get_nullable_string(&mut bytes)?,
        ..GroupValue::default()
    };
    if version >= 2 {
        value.current_state_timestamp_ms = get_i64(&mut bytes)?;
    }
    let count = get_i32(&mut bytes)?.max(0) as usize;
    for _ in 0..count.min(bytes.len()) {
        value.members.push(decode_member(&mut bytes, version)?);
    }
    Ok(value)
}

fn decode_member(bytes: &mut &[u8], version: i16) -> Result<MemberValue, RecordFormatError> {
    let member_id = get_string_or_empty(bytes)?;
    let group_instance_id = if version >= 3 {
        get_nullable_string(bytes)?
    } else {
        None
    };
    let client_id = get_string_or_empty(bytes)?;
    let client_host = get_string_or_empty(bytes)?;
    let rebalance_timeout_ms = if version >= 1 {
        Some(get_i32(bytes)?)
    } else {
        None
    };
    let session_timeout_ms = get_i32(bytes)?;
    Ok(MemberValue {
        member_id,
        group_instance_id,
        client_id,
        client_host,
        // v0 has no rebalance timeout; Kafka uses the session timeout for it.
        rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
        session_timeout_ms,
        subscription: get_bytes(bytes)?,
        assignment: get_bytes(bytes)?,
    })
}

/// An int16-length string with null read as empty: these fields are not nullable in
/// Kafka's schemas and our writes never leave them null, but a null from another writer is
/// read rather than the record refused.
pub(crate) fn get_string_or_empty(bytes: &mut &[u8]) -> FieldResult<String> {
    Ok(get_nullable_string(bytes)?.unwrap_or_default())
}

/// int32-length bytes, null read as empty.
fn get_bytes(bytes: &mut &[u8]) -> FieldResult<Bytes> {
    Ok(get_nullable_bytes(bytes)?.map_or_else(Bytes::new, Bytes::copy_from_slice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_match_kafka_bytes() {
        let key = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        let bytes = encode_key(&key);
        assert_eq!(&bytes[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        assert_eq!(decode_key(&bytes), Ok(key));
        let key = RecordKey::Group {
            group: "grp".into(),
        };
        assert_eq!(decode_key(&encode_key(&key)), Ok(key));
    }

    #[test]
    fn offsets_round_trip_and_old_versions_decode() {
        let value = OffsetValue {
            offset: 42,
            leader_epoch: 7,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(decode_offset(&encode_offset(&value)), Ok(value));
        // v1: offset, metadata, commit timestamp, expire timestamp.
        let mut v1 = BytesMut::new();
        v1.put_i16(1);
        v1.put_i64(9);
        put_string(&mut v1, "m");
        v1.put_i64(5);
        v1.put_i64(6);
        let decoded = decode_offset(&v1).unwrap();
        assert_eq!(
            (
                decoded.offset,
                decoded.leader_epoch,
                decoded.commit_timestamp_ms
            ),
            (9, -1, 5)
        );
    }

    #[test]
    fn groups_round_trip() {
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 99,
            members: vec![MemberValue {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(decode_group(&encode_group(&value)), Ok(value));
    }

    #[test]
    fn truncated_and_unknown_records_are_errors() {
        assert_eq!(
            decode_key(&[0]),
            Err(RecordFormatError::Field(FieldError::Truncated))
        );
        assert!(matches!(
            decode_key(&[0, 9]),
            Err(RecordFormatError::UnknownVersion { .. })
        ));
        assert_eq!(
            decode_offset(&[0, 3, 0, 0]),
            Err(RecordFormatError::Field(FieldError::Truncated))
        );
        assert!(decode_group(&[0, 3, 0, 8, b'c']).is_err());
    }
}
