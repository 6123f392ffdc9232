//! The Raft type configuration of the metadata quorum, and the checksummed encoding every
//! stored or transmitted Raft value goes through.

use std::io::Cursor;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::controller::commands::{CommandOutcome, MetadataCommand};
use crate::controller::rejection::Rejection;

/// What applying one entry answers to the proposer: the outcome, or why it was a no-op.
pub type Applied = Result<CommandOutcome, Rejection>;

openraft::declare_raft_types!(
    /// Raft node ids are Kafka `node.id`s (non-negative i32), widened to u64.
    pub TypeConfig:
        D = MetadataCommand,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type RaftNode = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StorageError = openraft::StorageError<u64>;
pub type Membership = openraft::StoredMembership<u64, openraft::BasicNode>;

/// Why a stored or received value was refused.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("value of {0} bytes is too short for its checksum")]
    Short(usize),
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("undecodable: {0}")]
    Json(#[from] serde_json::Error),
}

/// `crc32c (4 bytes, little endian) || json`: every value in the Raft store and every
/// controller RPC body, so a flipped bit is an error, never a different command.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let json = serde_json::to_vec(value).expect("Raft values are plain data and always encode");
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() < 4 {
        return Err(CodecError::Short(bytes.len()));
    }
    let (sum, json) = bytes.split_at(4);
    let stored = u32::from_le_bytes(sum.try_into().expect("split at 4"));
    let computed = crc32c::crc32c(json);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    Ok(serde_json::from_slice(json)?)
}

/// Kafka node ids are i32; Raft's are u64. Negative ids never reach here (config checks).
pub fn raft_id(node_id: crate::types::NodeId) -> u64 {
    u64::try_from(node_id).unwrap_or(u64::MAX)
}

pub fn kafka_id(raft_id: u64) -> crate::types::NodeId {
    crate::types::NodeId::try_from(raft_id).unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Probe {
        value: u64,
    }

    #[test]
    fn values_round_trip_and_flipped_bits_are_refused() {
        let bytes = encode(&Probe { value: 42 });
        assert_eq!(decode::<Probe>(&bytes).unwrap().value, 42);
        for index in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[index] ^= 0x10;
            assert!(decode::<Probe>(&bad).is_err(), "flip at {index} accepted");
        }
        assert!(matches!(
            decode::<Probe>(&[1, 2]),
            Err(CodecError::Short(2))
        ));
    }
}
