//! The key/value formats of records in `__transaction_state`, byte-compatible with Kafka's
//! (`TransactionLogKey` v0, `TransactionLogValue` v0 and the flexible v1), so Kafka's own
//! tooling reads our transaction log and ours reads a log Kafka wrote.
//!
//! A record's key is `version int16 = 0 | transactional_id string`; its value is
//! `version int16 | TransactionLogValue at that version`. A null value is a tombstone (the
//! transactional id expired). The value version written follows the cluster's
//! `transaction.version` as Kafka's does (v0 below level 1, the flexible v1 from level 1
//! on, whose tags are PreviousProducerId, NextProducerId, ClientTransactionVersion), and
//! is v1 whatever the level for a value whose tags carry something (a version 2 client, a
//! producer id rotation in flight): a tag dropped by v0 would lose the rotation on a
//! failover. Kafka 4.0 writes only ClientTransactionVersion and reads all three; we write
//! all three, so a failover between a prepare and its completion still rotates. An
//! unknown version is an error the loader skips and counts.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::record_fields::{
    self as fields, FieldError, get_compact_string, get_i8, get_i16, get_i32, get_i64, get_string,
    put_compact_string, put_string, skip_tags,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TxnRecordError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("unknown transaction status {0}")]
    UnknownStatus(i8),
}

/// Kafka's `TransactionState`, with the numbers it stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnStatus {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnStatus {
    pub fn from_i8(value: i8) -> Result<TxnStatus, TxnRecordError> {
        Ok(match value {
            0 => TxnStatus::Empty,
            1 => TxnStatus::Ongoing,
            2 => TxnStatus::PrepareCommit,
            3 => TxnStatus::PrepareAbort,
            4 => TxnStatus::CompleteCommit,
            5 => TxnStatus::CompleteAbort,
            6 => TxnStatus::Dead,
            7 => TxnStatus::PrepareEpochFence,
            other => return Err(TxnRecordError::UnknownStatus(other)),
        })
    }

    /// The name DescribeTransactions and ListTransactions use (Kafka's `stateName`).
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
            TxnStatus::Dead => "Dead",
            TxnStatus::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnStatus> {
        (0..=7)
            .filter_map(|n| TxnStatus::from_i8(n).ok())
            .find(|status| status.name() == name)
    }
}

/// The partitions of a transaction, by topic (ordered: records and answers are stable).
pub type TxnPartitions = BTreeMap<String, BTreeSet<i32>>;

/// One `TransactionLogValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnLogValue {
    pub producer_id: i64,
    /// v1 tag 0 (-1 when absent).
    pub previous_producer_id: i64,
    /// v1 tag 1 (-1 when absent).
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    pub partitions: TxnPartitions,
    pub last_update_ms: i64,
    pub start_ms: i64,
    /// v1 tag 2 (0 when absent).
    pub client_transaction_version: i16,
}

const KEY_VERSION: i16 = 0;

/// The value version `value` is written at (see the module note) in a cluster whose
/// `transaction.version` is finalized at `cluster_level`: Kafka's
/// `TransactionVersion.transactionLogValueVersion` (1 from level 1 on), or 1 anyway when
/// the value has tagged fields to carry.
pub fn value_version(value: &TxnLogValue, cluster_level: i16) -> i16 {
    let has_tags = value.previous_producer_id != -1
        || value.next_producer_id != -1
        || value.client_transaction_version != 0;
    if has_tags || cluster_level >= 1 { 1 } else { 0 }
}

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut buffer = BytesMut::with_capacity(4 + transactional_id.len());
    buffer.put_i16(KEY_VERSION);
    put_string(&mut buffer, transactional_id);
    buffer.freeze()
}

pub fn decode_key(mut bytes: &[u8]) -> Result<String, TxnRecordError> {
    match get_i16(&mut bytes)? {
        KEY_VERSION => Ok(get_string(&mut bytes)?),
        version => Err(TxnRecordError::UnknownVersion {
            what: "key",
            version,
        }),
    }
}

/// Encodes `value` at `version` (0 or 1; anything else is a caller bug).
pub fn encode_value(value: &TxnLogValue, version: i16) -> Bytes {
    assert!(version == 0 || version == 1, "value version {version}");
    let flexible = version >= 1;
    let mut buffer = BytesMut::new();
    buffer.put_i16(version);
    buffer.put_i64(value.producer_id);
    buffer.put_i16(value.producer_epoch);
    buffer.put_i32(value.timeout_ms);
    buffer.put_i8(value.status as i8);
    // Kafka writes a null partition list for an Empty transaction.
    if value.status == TxnStatus::Empty && value.partitions.is_empty() {
        put_length(&mut buffer, None, flexible);
    } else {
        put_length(&mut buffer, Some(value.partitions.len()), flexible);
        for (topic, partitions) in &value.partitions {
            if flexible {
                put_compact_string(&mut buffer, topic);
            } else {
                put_string(&mut buffer, topic);
            }
            put_length(&mut buffer, Some(partitions.len()), flexible);
            for partition in partitions {
                buffer.put_i32(*partition);
            }
            if flexible {
                fields::put_no_tags(&mut buffer);
            }
        }
    }
    buffer.put_i64(value.last_update_ms);
    buffer.put_i64(value.start_ms);
    if flexible {
        put_tags(&mut buffer, value);
    }
    buffer.freeze()
}

fn put_tags(buffer: &mut BytesMut, value: &TxnLogValue) {
    let previous = value.previous_producer_id.to_be_bytes();
    let next = value.next_producer_id.to_be_bytes();
    let client_version = value.client_transaction_version.to_be_bytes();
    let mut tags: Vec<(u32, &[u8])> = Vec::with_capacity(3);
    if value.previous_producer_id != -1 {
        tags.push((0, &previous));
    }
    if value.next_producer_id != -1 {
        tags.push((1, &next));
    }
    if value.client_transaction_version != 0 {
        tags.push((2, &client_version));
    }
    fields::put_tags(buffer, &tags);
}

pub fn decode_value(mut bytes: &[u8]) -> Result<TxnLogValue, TxnRecordError> {
    let version = get_i16(&mut bytes)?;
    if !(0..=1).contains(&version) {
        return Err(TxnRecordError::UnknownVersion {
            what: "value",
            version,
        });
    }
    let flexible = version >= 1;
    let buf = &mut bytes;
    let producer_id = get_i64(buf)?;
    let producer_epoch = get_i16(buf)?;
    let timeout_ms = get_i32(buf)?;
    let status = TxnStatus::from_i8(get_i8(buf)?)?;
    let mut partitions = TxnPartitions::new();
    if let Some(topics) = get_length(buf, flexible)? {
        for _ in 0..topics {
            let topic = if flexible {
                get_compact_string(buf)?
            } else {
                get_string(buf)?
            };
            let ids = partitions.entry(topic).or_default();
            let count = get_length(buf, flexible)?.unwrap_or(0);
            for _ in 0..count {
                ids.insert(get_i32(buf)?);
            }
            if flexible {
                skip_tags(buf)?;
            }
        }
    }
    let mut value = TxnLogValue {
        producer_id,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch,
        timeout_ms,
        status,
        partitions,
        last_update_ms: get_i64(buf)?,
        start_ms: get_i64(buf)?,
        client_transaction_version: 0,
    };
    if flexible {
        read_tags(buf, &mut value)?;
    }
    Ok(value)
}

fn read_tags(buf: &mut &[u8], value: &mut TxnLogValue) -> Result<(), TxnRecordError> {
    fields::read_tags(buf, |tag, mut data| match (tag, data.len()) {
        (0, 8) => value.previous_producer_id = data.get_i64(),
        (1, 8) => value.next_producer_id = data.get_i64(),
        (2, 2) => value.client_transaction_version = data.get_i16(),
        // A tag we do not know (or of a size we do not expect) is skipped, as the flexible
        // format intends.
        _ => {}
    })?;
    Ok(())
}

/// An array length in the version's format.
fn put_length(buffer: &mut BytesMut, length: Option<usize>, flexible: bool) {
    if flexible {
        fields::put_compact_length(buffer, length);
    } else {
        fields::put_array_length(buffer, length);
    }
}

fn get_length(buf: &mut &[u8], flexible: bool) -> Result<Option<usize>, FieldError> {
    if flexible {
        fields::get_compact_length(buf)
    } else {
        fields::get_array_length(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ongoing() -> TxnLogValue {
        TxnLogValue {
            producer_id: 5,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: 2,
            timeout_ms: 60_000,
            status: TxnStatus::Ongoing,
            partitions: TxnPartitions::from([("t".to_string(), BTreeSet::from([0, 3]))]),
            last_update_ms: 7,
            start_ms: 6,
            client_transaction_version: 0,
        }
    }

    #[test]
    fn the_key_is_version_0_then_the_id() {
        let key = encode_key("tx");
        assert_eq!(&key[..], &[0, 0, 0, 2, b't', b'x']);
        assert_eq!(decode_key(&key), Ok("tx".to_string()));
        assert_eq!(
            decode_key(&[0, 1, 0, 0]),
            Err(TxnRecordError::UnknownVersion {
                what: "key",
                version: 1
            })
        );
    }

    #[test]
    fn value_v0_has_kafkas_bytes() {
        let bytes = encode_value(&ongoing(), 0);
        let mut expected = vec![0, 0]; // version
        expected.extend(5i64.to_be_bytes());
        expected.extend(2i16.to_be_bytes());
        expected.extend(60_000i32.to_be_bytes());
        expected.push(1); // Ongoing
        expected.extend(1i32.to_be_bytes()); // one topic
        expected.extend([0, 1, b't']);
        expected.extend(2i32.to_be_bytes());
        expected.extend(0i32.to_be_bytes());
        expected.extend(3i32.to_be_bytes());
        expected.extend(7i64.to_be_bytes());
        expected.extend(6i64.to_be_bytes());
        assert_eq!(&bytes[..], &expected[..]);
        assert_eq!(decode_value(&bytes), Ok(ongoing()));
    }

    #[test]
    fn an_empty_transaction_writes_a_null_partition_list() {
        let value = TxnLogValue {
            status: TxnStatus::Empty,
            partitions: TxnPartitions::new(),
            ..ongoing()
        };
        let bytes = encode_value(&value, 0);
        assert_eq!(&bytes[2 + 8 + 2 + 4 + 1..][..4], &(-1i32).to_be_bytes());
        assert_eq!(decode_value(&bytes), Ok(value));
    }

    #[test]
    fn value_v1_is_flexible_with_tags() {
        let value = TxnLogValue {
            previous_producer_id: 4,
            client_transaction_version: 2,
            ..ongoing()
        };
        let bytes = encode_value(&value, 1);
        let mut expected = vec![0, 1];
        expected.extend(5i64.to_be_bytes());
        expected.extend(2i16.to_be_bytes());
        expected.extend(60_000i32.to_be_bytes());
        expected.push(1);
        expected.push(2); // compact array of one
        expected.extend([2, b't']); // compact string
        expected.push(3); // two partition ids
        expected.extend(0i32.to_be_bytes());
        expected.extend(3i32.to_be_bytes());
        expected.push(0); // the topic entry's tags
        expected.extend(7i64.to_be_bytes());
        expected.extend(6i64.to_be_bytes());
        expected.push(2); // two tags
        expected.extend([0, 8]);
        expected.extend(4i64.to_be_bytes());
        expected.extend([2, 2, 0, 2]);
        assert_eq!(&bytes[..], &expected[..]);
        assert_eq!(decode_value(&bytes), Ok(value));
        // An unknown tag is skipped.
        let mut with_unknown = bytes[..bytes.len() - 15].to_vec();
        with_unknown.push(3);
        with_unknown.extend([0, 8]);
        with_unknown.extend(4i64.to_be_bytes());
        with_unknown.extend([2, 2, 0, 2]);
        with_unknown.extend([9, 1, 0xff]);
        let decoded = decode_value(&with_unknown).unwrap();
        assert_eq!(decoded.previous_producer_id, 4);
    }

    #[test]
    fn bad_values_are_errors_never_panics() {
        assert!(matches!(
            decode_value(&[0, 2]),
            Err(TxnRecordError::UnknownVersion { .. })
        ));
        let bytes = encode_value(&ongoing(), 0);
        for cut in 0..bytes.len() {
            assert!(decode_value(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_status = bytes.to_vec();
        bad_status[2 + 8 + 2 + 4] = 9;
        assert_eq!(
            decode_value(&bad_status),
            Err(TxnRecordError::UnknownStatus(9))
        );
        let mut huge = bytes.to_vec();
        huge[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            decode_value(&huge),
            Err(TxnRecordError::Field(FieldError::Truncated))
        );
    }

    #[test]
    fn status_names_round_trip() {
        for n in 0..=7 {
            let status = TxnStatus::from_i8(n).unwrap();
            assert_eq!(status as i8, n);
            assert_eq!(TxnStatus::from_name(status.name()), Some(status));
        }
    }
}
