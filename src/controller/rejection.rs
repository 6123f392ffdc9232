//! A controller error in a form that crosses the wire and the Raft log: a follower that
//! forwards a command to the active controller gets back the same error kind the leader's
//! apply produced, so the API edge maps it to the same Kafka code on every node.

use serde::{Deserialize, Serialize};

use super::ControllerError;
use crate::types::NodeId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectionKind {
    TopicAlreadyExists,
    UnknownTopic,
    InvalidTopic,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidReplicaAssignment,
    InvalidConfig,
    InvalidRequest,
    DeletionDisabled,
    /// A broker command (fencing, controlled shutdown) for a broker never registered.
    UnknownBroker {
        node_id: NodeId,
    },
    /// A broker command meant for another registration of the broker (Kafka's
    /// STALE_BROKER_EPOCH), kept apart from storage failures so callers can tell.
    StaleBrokerEpoch {
        node_id: NodeId,
        epoch: i64,
        current: i64,
    },
    /// No active controller could take the command in time (no quorum, elections).
    Unavailable,
    /// The active controller could not make the command durable.
    Storage,
    /// An `AlterConfigs` planned against a config that changed before it applied: the
    /// planner re-plans.
    ConfigChanged,
    InvalidUpdateVersion,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

impl Rejection {
    pub fn new(kind: RejectionKind, message: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            message: message.into(),
        }
    }
}

impl From<&ControllerError> for Rejection {
    fn from(error: &ControllerError) -> Rejection {
        use ControllerError as E;
        let kind = match error {
            E::TopicAlreadyExists(_) => RejectionKind::TopicAlreadyExists,
            E::UnknownTopic(_) | E::UnknownTopicId(_) => RejectionKind::UnknownTopic,
            E::InvalidTopic(_) => RejectionKind::InvalidTopic,
            E::InvalidPartitions(_) => RejectionKind::InvalidPartitions,
            E::InvalidReplicationFactor(_) => RejectionKind::InvalidReplicationFactor,
            E::InvalidReplicaAssignment(_) => RejectionKind::InvalidReplicaAssignment,
            E::InvalidConfig(_) => RejectionKind::InvalidConfig,
            E::DeletionDisabled => RejectionKind::DeletionDisabled,
            E::Unavailable(_) => RejectionKind::Unavailable,
            E::InvalidRequest(_) => RejectionKind::InvalidRequest,
            E::ConfigChanged(_) => RejectionKind::ConfigChanged,
            E::InvalidUpdateVersion(_) => RejectionKind::InvalidUpdateVersion,
            E::UnknownBroker(node_id) => RejectionKind::UnknownBroker { node_id: *node_id },
            E::StaleBrokerEpoch {
                node_id,
                epoch,
                current,
            } => RejectionKind::StaleBrokerEpoch {
                node_id: *node_id,
                epoch: *epoch,
                current: *current,
            },
            _ => RejectionKind::Storage,
        };
        let message = match error {
            E::TopicAlreadyExists(name) | E::UnknownTopic(name) => name.clone(),
            E::InvalidTopic(m)
            | E::InvalidPartitions(m)
            | E::InvalidReplicationFactor(m)
            | E::InvalidReplicaAssignment(m)
            | E::InvalidConfig(m)
            | E::InvalidRequest(m)
            | E::ConfigChanged(m)
            | E::InvalidUpdateVersion(m)
            | E::Unavailable(m) => m.clone(),
            other => other.to_string(),
        };
        Rejection { kind, message }
    }
}

impl From<Rejection> for ControllerError {
    fn from(rejection: Rejection) -> ControllerError {
        use ControllerError as E;
        let m = rejection.message;
        match rejection.kind {
            RejectionKind::TopicAlreadyExists => E::TopicAlreadyExists(m),
            RejectionKind::UnknownTopic => E::UnknownTopic(m),
            RejectionKind::InvalidTopic => E::InvalidTopic(m),
            RejectionKind::InvalidPartitions => E::InvalidPartitions(m),
            RejectionKind::InvalidReplicationFactor => E::InvalidReplicationFactor(m),
            RejectionKind::InvalidReplicaAssignment => E::InvalidReplicaAssignment(m),
            RejectionKind::InvalidConfig => E::InvalidConfig(m),
            RejectionKind::InvalidRequest => E::InvalidRequest(m),
            RejectionKind::DeletionDisabled => E::DeletionDisabled,
            RejectionKind::Unavailable => E::Unavailable(m),
            RejectionKind::UnknownBroker { node_id } => E::UnknownBroker(node_id),
            RejectionKind::StaleBrokerEpoch {
                node_id,
                epoch,
                current,
            } => E::StaleBrokerEpoch {
                node_id,
                epoch,
                current,
            },
            RejectionKind::Storage => E::Storage(m),
            RejectionKind::ConfigChanged => E::ConfigChanged(m),
            RejectionKind::InvalidUpdateVersion => E::InvalidUpdateVersion(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_survive_the_round_trip() {
        let errors = [
            ControllerError::TopicAlreadyExists("a".into()),
            ControllerError::UnknownTopic("b".into()),
            ControllerError::InvalidReplicationFactor("rf".into()),
            ControllerError::DeletionDisabled,
            ControllerError::Unavailable("no leader".into()),
            ControllerError::UnknownBroker(4),
            ControllerError::ConfigChanged("the configs of topic t".into()),
            ControllerError::InvalidUpdateVersion("Invalid update version 3".into()),
            ControllerError::StaleBrokerEpoch {
                node_id: 4,
                epoch: 7,
                current: 9,
            },
        ];
        for error in errors {
            let back = ControllerError::from(Rejection::from(&error));
            assert_eq!(back.to_string(), error.to_string());
        }
    }
}
