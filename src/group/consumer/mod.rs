//! KIP-848 consumer groups: the server-side rebalance protocol (ConsumerGroupHeartbeat).
//! The coordinator computes each member's target assignment with a server-side assignor
//! and moves members towards it one heartbeat at a time; the classic protocol's
//! JoinGroup/SyncGroup round trips and client-side assignors are not involved.
//!
//! - [`assignor`]: the `uniform` and `range` assignors.
//! - [`member`]: one member and its reconciliation (revoke, then take what is free).
//! - [`group`]: the group state machine: epochs, membership, targets, timeouts.
//! - [`topic_regex`]: regex subscriptions (ConsumerGroupHeartbeat v1).
//! - [`group_configs`]: a group's own `consumer.*` configs over the broker's.
//! - [`records`] and `persisted`: the group's records in `__consumer_offsets`, written
//!   before the answers that depend on them and replayed when the partition loads.

pub mod assignor;
#[allow(clippy::module_inception)]
mod group;
pub mod group_configs;
mod member;
mod persisted;
pub mod records;
#[cfg(test)]
mod sim;
mod topic_regex;

pub use assignor::{Assignment, Assignor, TopicInfo};
pub use group::{
    Assignors, ConsumerGroup, ConsumerGroupConfig, ConsumerGroupState, HeartbeatAnswer,
    HeartbeatRequest, TopicSource,
};
pub use member::{ConsumerMember, MemberState};
pub use persisted::Change;
