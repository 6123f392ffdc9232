//! What the metadata quorum looks like right now: leader, epoch, high watermark and the
//! progress of every voter and observer, as Kafka's DescribeQuorum reports them
//! (`kafka-metadata-quorum describe --status` / `--replication`).
//!
//! A plain data snapshot: the quorum (the Raft leader, or the node forwarding to it) fills
//! it, `api/describe_quorum.rs` turns it into the response. Nothing here talks to Raft.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::NodeId;

/// The metadata log's name and partition as Kafka names them (KRaft's
/// `__cluster_metadata-0`); DescribeQuorum asks about exactly this partition.
pub const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";
pub const CLUSTER_METADATA_PARTITION: i32 = 0;

/// `leader_id` when no leader is known (Kafka's -1).
pub const NO_LEADER: NodeId = -1;

/// A snapshot of the metadata quorum, taken at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    /// The current leader, [`NO_LEADER`] (-1) when no leader is known.
    pub leader_id: NodeId,
    /// The leader's epoch: the Raft term.
    pub leader_epoch: i32,
    /// Committed log index + 1: as in Kafka, the offset after the last committed entry.
    pub high_watermark: i64,
    /// Every voter, the leader included.
    pub voters: Vec<ReplicaProgress>,
    /// Nodes that follow the log without voting (brokers that are not controllers).
    pub observers: Vec<ReplicaProgress>,
    /// The voters' endpoints on their controller listener (DescribeQuorum v2).
    pub nodes: Vec<QuorumNode>,
}

/// How far one replica of the metadata log has come, as the leader last saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaProgress {
    pub replica_id: NodeId,
    /// The replica's metadata directory id (KIP-853); `Uuid::nil()` if unknown.
    pub replica_directory_id: Uuid,
    /// The replica's log end offset (last index + 1); -1 if unknown.
    pub log_end_offset: i64,
    /// When the replica last fetched from the leader, ms since the epoch; -1 if unknown.
    pub last_fetch_timestamp: i64,
    /// When the replica was last caught up with the leader, ms since the epoch; -1 if
    /// unknown.
    pub last_caught_up_timestamp: i64,
}

/// A voter's endpoints: `(listener name, host, port)` for each controller listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumNode {
    pub node_id: NodeId,
    pub listeners: Vec<(String, String, u16)>,
}

impl QuorumStatus {
    /// True when a leader is known; DescribeQuorum answers NOT_LEADER_OR_FOLLOWER otherwise.
    pub fn has_leader(&self) -> bool {
        self.leader_id >= 0
    }
}
