//! The one mapping from domain errors to Kafka error codes.

use kafka_protocol::error::ResponseError;

use crate::controller::ControllerError;
use crate::group::{CoordinatorError, GroupError};
use crate::log::{BatchError, LogError, RecordErrorCode};
use crate::replica::ReplicaError;
use crate::txn::producer_state::SequenceError;

pub fn batch_error(error: &BatchError) -> ResponseError {
    match error {
        BatchError::Corrupt(_) => ResponseError::CorruptMessage,
        BatchError::InvalidRecord(_) => ResponseError::InvalidRecord,
        BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. } => {
            ResponseError::MessageTooLarge
        }
        BatchError::Records { code, .. } => match code {
            RecordErrorCode::InvalidRecord => ResponseError::InvalidRecord,
            RecordErrorCode::InvalidTimestamp => ResponseError::InvalidTimestamp,
        },
    }
}

pub fn log_error(error: &LogError) -> ResponseError {
    match error {
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Batch(batch) => batch_error(batch),
        LogError::Io(_) | LogError::Corrupt(_) | LogError::TxnIndexLacking(_) => {
            ResponseError::KafkaStorageError
        }
    }
}

pub fn replica_error(error: &ReplicaError) -> ResponseError {
    match error {
        ReplicaError::Batch(batch) => batch_error(batch),
        ReplicaError::Log(log) => log_error(log),
        ReplicaError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        ReplicaError::Sequence(SequenceError::StaleEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        ReplicaError::Sequence(
            SequenceError::InvalidTxnState { .. } | SequenceError::Unverified { .. },
        ) => ResponseError::InvalidTxnState,
        ReplicaError::Sequence(SequenceError::CoordinatorFenced { .. }) => {
            ResponseError::TransactionCoordinatorFenced
        }
        ReplicaError::NotLeader => ResponseError::NotLeaderOrFollower,
        ReplicaError::Deleted => ResponseError::UnknownTopicOrPartition,
        ReplicaError::DeletionPolicy => ResponseError::PolicyViolation,
        ReplicaError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        ReplicaError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
        ReplicaError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        ReplicaError::NotEnoughReplicasAfterAppend { .. } => {
            ResponseError::NotEnoughReplicasAfterAppend
        }
        ReplicaError::ReplicationTimedOut => ResponseError::RequestTimedOut,
        ReplicaError::OffsetNotAvailable { .. } => ResponseError::OffsetNotAvailable,
        ReplicaError::Io(_) | ReplicaError::Offline { .. } => ResponseError::KafkaStorageError,
        ReplicaError::InconsistentTopicId { .. } => ResponseError::InconsistentTopicId,
    }
}

pub fn controller_error(error: &ControllerError) -> ResponseError {
    match error {
        ControllerError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        ControllerError::UnknownTopicId(_) => ResponseError::UnknownTopicId,
        ControllerError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ControllerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ControllerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ControllerError::InvalidConfig(_) => ResponseError::InvalidConfig,
        ControllerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        // Only after the API re-planned a few times against configs that kept changing:
        // the client retries, as after a timeout.
        ControllerError::ConfigChanged(_) => ResponseError::RequestTimedOut,
        ControllerError::InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
        ControllerError::DeletionDisabled => ResponseError::TopicDeletionDisabled,
        ControllerError::ThrottlingQuotaExceeded { .. } => ResponseError::ThrottlingQuotaExceeded,
        ControllerError::UnknownBroker(_) => ResponseError::BrokerIdNotRegistered,
        ControllerError::StaleBrokerEpoch { .. } => ResponseError::StaleBrokerEpoch,
        ControllerError::Io(_) | ControllerError::Corrupt(_) => ResponseError::UnknownServerError,
        // The metadata disk failed: Kafka's code for a disk error on the broker.
        ControllerError::AppendFailed { .. } | ControllerError::LogPoisoned(_) => {
            ResponseError::KafkaStorageError
        }
        ControllerError::CorruptRecord { .. } => ResponseError::UnknownServerError,
        // No active controller in time: the client retries, as after Kafka's forwarding
        // times out.
        ControllerError::Unavailable(_) => ResponseError::RequestTimedOut,
        ControllerError::Storage(_) => ResponseError::KafkaStorageError,
        ControllerError::Quorum { .. } | ControllerError::ClusterIdMismatch { .. } => {
            ResponseError::UnknownServerError
        }
    }
}

/// A coordinator's internal topic (`topic`) is not there to serve: COORDINATOR_NOT_AVAILABLE,
/// which clients retry. Its creation under way is routine (debug); anything else is logged.
pub fn internal_topic_error(topic: &str, error: &ControllerError) -> ResponseError {
    match error {
        ControllerError::Unavailable(reason) => tracing::debug!(%reason, "{topic} not ready"),
        error => tracing::warn!(%error, "cannot create {topic}"),
    }
    ResponseError::CoordinatorNotAvailable
}

pub fn coordinator_error(error: &CoordinatorError) -> ResponseError {
    match error {
        CoordinatorError::Storage(_) => ResponseError::CoordinatorNotAvailable,
        CoordinatorError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        CoordinatorError::LoadInProgress => ResponseError::CoordinatorLoadInProgress,
        CoordinatorError::NotCoordinator => ResponseError::NotCoordinator,
        // Kafka 4 answers a write that did not replicate in time (or found too few
        // in-sync replicas) with COORDINATOR_NOT_AVAILABLE: the client retries.
        CoordinatorError::NotCommitted(_) => ResponseError::CoordinatorNotAvailable,
        // Kafka 4's group coordinator (CoordinatorOperationExceptionHelper) answers
        // MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE and INVALID_FETCH_SIZE from any of its
        // writes, offset commits included, with UNKNOWN_SERVER_ERROR: not retriable.
        // (3.x's GroupMetadataManager answered commits INVALID_COMMIT_OFFSET_SIZE.)
        CoordinatorError::TooLarge(_) => ResponseError::UnknownServerError,
        CoordinatorError::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        CoordinatorError::InvalidTxnState => ResponseError::InvalidTxnState,
        CoordinatorError::UnstableOffsetCommit => ResponseError::UnstableOffsetCommit,
    }
}

pub fn group_error(error: &GroupError) -> ResponseError {
    match error {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::UnknownServer => ResponseError::UnknownServerError,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::InvalidRequest(_) => ResponseError::InvalidRequest,
        GroupError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
        GroupError::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
        GroupError::UnsupportedAssignor => ResponseError::UnsupportedAssignor,
        GroupError::UnsupportedVersion => ResponseError::UnsupportedVersion,
        GroupError::InvalidRegularExpression(_) => ResponseError::InvalidRegularExpression,
    }
}

/// The transaction coordinator's errors as Kafka codes. `fenced_as_old_epoch`: the
/// request predates PRODUCER_FENCED (KIP-588: InitProducerId < v4, AddPartitionsToTxn,
/// AddOffsetsToTxn and EndTxn < v2), which gets INVALID_PRODUCER_EPOCH instead, as Kafka
/// answers it.
pub fn txn_error(error: &crate::txn::TxnError, fenced_as_old_epoch: bool) -> ResponseError {
    use crate::txn::TxnError;
    match error {
        TxnError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
        TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        TxnError::ProducerFenced if fenced_as_old_epoch => ResponseError::InvalidProducerEpoch,
        TxnError::ProducerFenced => ResponseError::ProducerFenced,
        TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        TxnError::InvalidTxnState => ResponseError::InvalidTxnState,
        TxnError::TransactionAbortable => ResponseError::TransactionAbortable,
        TxnError::NotCoordinator => ResponseError::NotCoordinator,
        TxnError::LoadInProgress => ResponseError::CoordinatorLoadInProgress,
        TxnError::NotAvailable(_) => ResponseError::CoordinatorNotAvailable,
        // Kafka's TransactionStateManager answers other append failures (a record too
        // large, a storage error) UNKNOWN_SERVER_ERROR.
        TxnError::Storage(_) => ResponseError::UnknownServerError,
        TxnError::TransactionalIdNotFound => ResponseError::TransactionalIdNotFound,
        TxnError::InvalidRequest(_) => ResponseError::InvalidRequest,
    }
}
