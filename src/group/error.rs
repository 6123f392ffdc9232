//! Errors of the group state machines (classic and consumer). `api/` maps each variant to
//! one Kafka error code; the Kafka name is given on every variant.

use thiserror::Error;

/// Why the group refused (or ended) a request. These are answers to clients, not faults of
/// the broker: every variant is a normal outcome of some client behaviour.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum GroupError {
    /// The member id is not (or no longer) in the group. Kafka: UNKNOWN_MEMBER_ID.
    #[error("unknown member id")]
    UnknownMemberId,
    /// The request names another generation than the group's. Kafka: ILLEGAL_GENERATION.
    #[error("illegal generation")]
    IllegalGeneration,
    /// The group is rebalancing; the member must rejoin. Kafka: REBALANCE_IN_PROGRESS.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// A JoinGroup v4+ without a member id: the client must join again with this id.
    /// Kafka: MEMBER_ID_REQUIRED (the id also goes in the response's member_id).
    #[error("member id required, rejoin with {member_id}")]
    MemberIdRequired { member_id: String },
    /// Another member id now owns this group.instance.id. Kafka: FENCED_INSTANCE_ID.
    #[error("fenced instance id")]
    FencedInstanceId,
    /// Protocol type or protocols do not fit the group's. Kafka: INCONSISTENT_GROUP_PROTOCOL.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// The group is Dead (deleted or unloaded) under a request. The client rediscovers the
    /// coordinator. Kafka: COORDINATOR_NOT_AVAILABLE.
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// The group was unloaded while the request waited. Kafka: NOT_COORDINATOR.
    #[error("not coordinator")]
    NotCoordinator,
    /// The group already has `group.max.size` members. Kafka: GROUP_MAX_SIZE_REACHED.
    #[error("group max size reached")]
    GroupMaxSizeReached,
    /// Session timeout outside the broker's bounds. Kafka: INVALID_SESSION_TIMEOUT.
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    /// Kafka: UNKNOWN_SERVER_ERROR. Not produced by the state machine itself; here so the
    /// shell can answer a parked request when, for example, a metadata write failed.
    #[error("unknown server error")]
    UnknownServer,
    /// DeleteGroups / OffsetFetch on a Dead group. Kafka: GROUP_ID_NOT_FOUND.
    #[error("group id not found")]
    GroupIdNotFound,
    /// DeleteGroups on a group with members. Kafka: NON_EMPTY_GROUP.
    #[error("non-empty group")]
    NonEmptyGroup,
    /// A consumer-group heartbeat whose fields contradict each other (the reason goes in
    /// the error message). Kafka: INVALID_REQUEST.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A consumer-group member's epoch is ahead of, or too far behind, the group's view:
    /// it must let go of its partitions and rejoin. Kafka: FENCED_MEMBER_EPOCH.
    #[error("fenced member epoch")]
    FencedMemberEpoch,
    /// An offset commit from a consumer-group member at another epoch than its current
    /// one. Kafka: STALE_MEMBER_EPOCH.
    #[error("stale member epoch")]
    StaleMemberEpoch,
    /// A static member joins while the member with its instance id is still active.
    /// Kafka: UNRELEASED_INSTANCE_ID.
    #[error("unreleased instance id")]
    UnreleasedInstanceId,
    /// A heartbeat names a server assignor the broker does not run. Kafka:
    /// UNSUPPORTED_ASSIGNOR.
    #[error("unsupported assignor")]
    UnsupportedAssignor,
    /// A consumer's subscribed regex does not compile (the reason goes in the error
    /// message). Kafka: INVALID_REGULAR_EXPRESSION.
    #[error("invalid regular expression: {0}")]
    InvalidRegularExpression(String),
    /// A consumer-group member commits below OffsetCommit v9. Kafka: UNSUPPORTED_VERSION.
    #[error("unsupported version")]
    UnsupportedVersion,
}
