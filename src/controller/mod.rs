//! The metadata controller: a Raft quorum (openraft, storage in redb) whose state machine
//! is the metadata image.
//!
//! Callers submit [`MetadataCommand`]s from any node: the active controller (the Raft
//! leader) proposes them; a follower forwards them to it over controller RPC. Every node,
//! whoever proposed, applies the committed log in order and publishes each new image on a
//! watch channel; reconcilers act on what is published, never on what they submitted.

pub mod client_quotas;
pub mod commands;
pub mod config_admin;
pub mod controlled_shutdown;
pub mod elections;
pub mod feature_updates;
pub mod features;
pub mod image;
pub mod legacy_import;
pub mod liveness;
pub mod observer;
pub mod placement;
pub mod quorum;
pub mod quorum_status;
#[cfg(test)]
mod quorum_tests;
pub mod raft;
pub mod reassignment;
pub mod rebalance;
pub mod rejection;
pub mod store;
pub mod topic_admin;
pub mod topic_rules;
pub mod unclean_election;

use thiserror::Error;
use uuid::Uuid;

use crate::types::NodeId;

pub use commands::{CommandOutcome, MetadataCommand, PartitionChangeRefusal};
pub use elections::{Election, ElectionResult, PartitionElection};
pub use image::{
    BrokerEndpoint, BrokerRegistration, MetadataImage, NO_LEADER, PartitionImage, TopicImage,
};
pub use quorum::{Controller, ControllerSettings, RaftGauges};
pub use quorum_status::{QuorumNode, QuorumStatus, ReplicaProgress};
pub use reassignment::{PartitionReassignment, ReassignmentResult};

#[derive(Debug, Error)]
pub enum ControllerError {
    // Kafka's wording (ReplicationControlManager), which clients and kafka-topics print.
    #[error("Topic '{0}' already exists.")]
    TopicAlreadyExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// UpdateFeatures refused (Kafka's INVALID_UPDATE_VERSION, with its message).
    #[error("{0}")]
    InvalidUpdateVersion(String),
    /// An `AlterConfigs` or `UpdateFeatures` planned against state that changed before it
    /// applied (the configs of a resource, a finalized level): the API plans again.
    #[error("{0} changed while the request was planned")]
    ConfigChanged(String),
    /// KIP-599: the client's `controller_mutation_rate` is used up for now (Kafka's
    /// message, with the time until it refills for the response's throttle).
    #[error("The throttling quota has been exceeded.")]
    ThrottlingQuotaExceeded { throttle_ms: u64 },
    #[error("topic deletion is disabled (delete.topic.enable=false)")]
    DeletionDisabled,
    #[error("broker {0} is not registered")]
    UnknownBroker(NodeId),
    /// A fencing or unfencing command meant for another registration of the broker.
    #[error("broker {node_id}: epoch {epoch} is stale (the registration's epoch is {current})")]
    StaleBrokerEpoch {
        node_id: NodeId,
        epoch: i64,
        current: i64,
    },
    #[error("metadata log I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata log is corrupt: {0}")]
    Corrupt(String),
    /// A complete record that fails its checksum or does not apply: start-up stops here.
    #[error(
        "metadata log {path} is corrupt at byte {offset}: {reason}; refusing to start \
         (restore the file, or move it aside to rebuild the metadata knowingly)"
    )]
    CorruptRecord {
        path: String,
        offset: u64,
        reason: String,
    },
    /// The append failed and was rolled back: the command was neither applied nor stored.
    #[error("metadata log {path}: append failed: {source}")]
    AppendFailed {
        path: String,
        source: std::io::Error,
    },
    /// A failed append could not be rolled back; every later append is refused.
    #[error("metadata log is unusable: {0}")]
    LogPoisoned(String),
    /// No active controller took the command in time (no quorum, an election under way).
    #[error("the metadata quorum is unavailable: {0}")]
    Unavailable(String),
    /// The active controller failed to store the command (reported by another node).
    #[error("the active controller could not store the command: {0}")]
    Storage(String),
    /// The Raft store could not be opened or written.
    #[error("metadata quorum store {path}: {reason}")]
    Quorum { path: String, reason: String },
    /// The metadata log names another cluster than this node's meta.properties.
    #[error(
        "this node belongs to cluster {ours} (meta.properties) but the metadata quorum is \
         cluster {theirs}; refusing to join"
    )]
    ClusterIdMismatch { ours: String, theirs: String },
}
