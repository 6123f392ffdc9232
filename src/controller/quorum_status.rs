//! The metadata quorum as DescribeQuorum reports it, filled from the Raft leader's view.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::NodeId;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuorumStatus {
    /// -1 when no leader is known.
    pub leader_id: NodeId,
    /// The Raft term.
    pub leader_epoch: i32,
    /// The offset after the last committed entry.
    pub high_watermark: i64,
    pub voters: Vec<ReplicaProgress>,
    pub observers: Vec<ReplicaProgress>,
    /// Controller endpoints of the voters (DescribeQuorum v2).
    pub nodes: Vec<QuorumNode>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaProgress {
    pub replica_id: NodeId,
    /// `Uuid::nil()` if unknown.
    pub replica_directory_id: Uuid,
    /// -1 if unknown.
    pub log_end_offset: i64,
    /// Milliseconds since the epoch, -1 if unknown.
    pub last_fetch_timestamp: i64,
    /// Milliseconds since the epoch, -1 if unknown.
    pub last_caught_up_timestamp: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuorumNode {
    pub node_id: NodeId,
    /// (listener name, host, port)
    pub listeners: Vec<(String, String, u16)>,
}
