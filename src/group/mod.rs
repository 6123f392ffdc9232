//! The group coordinator: consumer groups and their committed offsets.
//!
//! - The classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) is a pure
//!   state machine ([`Group`], `group.rs`): it takes decoded requests, the time and a
//!   request token, and returns [`Effect`]s (answer parked requests, persist metadata,
//!   wake me at). [`registry`] is the async shell that parks requests and carries the
//!   effects out; every token handed to `join`/`sync` comes back in exactly one answer.
//! - Committed offsets and group metadata are records in the compacted internal topic
//!   `__consumer_offsets` ([`records`] holds Kafka's record formats); the coordinator for
//!   a group leads partition `hash(group) % offsets.topic.num.partitions` and rebuilds its
//!   state by replaying that partition ([`coordinator`]).
//! - The coordinator follows that partition's leadership (`loader`): loaded when this
//!   broker becomes its leader, unloaded (NOT_COORDINATOR) when it stops. Every write is
//!   acknowledged only once committed to the partition's ISR (`writer`).

pub mod consumer;
pub mod coordinator;
mod effects;
mod error;
#[allow(clippy::module_inception)]
mod group;
mod loader;
mod member;
pub mod offsets;
pub mod records;
pub mod registry;
mod request;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod testkit;
mod txn_offsets;
pub mod writer;

pub use coordinator::{CoordinatorConfig, CoordinatorError, GroupCoordinator, OffsetCommit};
pub use effects::{Effect, GroupSnapshot, JoinOutcome, JoinedMember, MemberSnapshot, SyncOutcome};
pub use error::GroupError;
pub use group::{Group, GroupState};
pub use loader::LedPartition;
pub use member::MemberDescription;
pub use request::{GroupConfig, JoinRequest, Protocol, RequestToken, SyncRequest};
pub use writer::TxnProducer;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
