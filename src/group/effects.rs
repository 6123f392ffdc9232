//! What the state machine asks its caller to do: answer parked requests, persist group
//! metadata, and call back at a time. Effects come in the order they must be carried out.

use super::error::GroupError;
use super::request::RequestToken;

/// One instruction for the shell. A call returns them in order; a `Persist` comes before
/// the answers that depend on it, so a shell that awaits each write before going on
/// answers only what is durable (Kafka sends SyncGroup answers after the append).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Answer a JoinGroup (parked earlier, or the one just handed in).
    JoinDone {
        token: RequestToken,
        response: JoinOutcome,
    },
    /// Answer a SyncGroup (parked earlier, or the one just handed in).
    SyncDone {
        token: RequestToken,
        response: SyncOutcome,
    },
    /// Group metadata changed in a way that must survive a restart: write it to
    /// `__consumer_offsets` under the group key. Emitted where Kafka writes its
    /// GroupMetadata record: the leader's assignment makes the group Stable, the group
    /// becomes Empty, a static member's new id is adopted without a rebalance. Member
    /// changes in between are not written: they lead to one of those points.
    Persist(GroupSnapshot),
    /// The group was deleted: write a tombstone (null value) for this group key.
    Tombstone { group_id: String },
    /// Call `Group::tick` again no later than this time. The latest `WakeAt` replaces
    /// earlier ones; a tick with nothing due is harmless.
    WakeAt(i64),
}

impl Effect {
    /// This effect as carried out after a `Persist` that failed with `error`: a successful
    /// answer would report what is not durable, so it becomes `error` (Kafka answers
    /// SyncGroup, and a static member's JoinGroup, only after the write); the rest stand.
    pub fn after_failed_write(self, error: &GroupError) -> Effect {
        match self {
            Effect::JoinDone { token, response } if response.error.is_none() => Effect::JoinDone {
                token,
                response: JoinOutcome::failed(response.member_id, error.clone()),
            },
            Effect::SyncDone { token, response } if response.error.is_none() => Effect::SyncDone {
                token,
                response: SyncOutcome::failed(error.clone()),
            },
            other => other,
        }
    }
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

/// A JoinGroup answer, wire-agnostic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinOutcome {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Empty when there is none (errors).
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// Filled only for the leader.
    pub members: Vec<JoinedMember>,
}

impl JoinOutcome {
    /// Kafka's error answer: generation -1, no leader, no protocol.
    pub fn failed(member_id: impl Into<String>, error: GroupError) -> Self {
        Self {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.into(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

/// A SyncGroup answer, wire-agnostic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Vec<u8>,
}

impl SyncOutcome {
    pub fn failed(error: GroupError) -> Self {
        Self {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Vec::new(),
        }
    }
}

/// Everything `Group::from_snapshot` needs, shaped like Kafka's GroupMetadataValue (v3):
/// only the chosen protocol's metadata is kept per member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub group_id: String,
    pub protocol_type: Option<String>,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    /// When the group entered its current state; offset retention of an Empty group
    /// counts from here (Kafka's currentStateTimestamp).
    pub state_since_ms: i64,
    pub members: Vec<MemberSnapshot>,
}

/// One member of a [`GroupSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// Metadata for the group's chosen protocol.
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}
