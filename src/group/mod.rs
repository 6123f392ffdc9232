//! The group coordinator: consumer groups and their committed offsets.
//!
//! Committed offsets are records in the compacted internal topic `__consumer_offsets`
//! ([`records`] holds Kafka's record formats); the coordinator for a group is the leader
//! of partition `hash(group) % offsets.topic.num.partitions` and rebuilds its state by
//! replaying that partition.

pub mod coordinator;
pub mod offsets;
pub mod records;

pub use coordinator::{CoordinatorConfig, CoordinatorError, GroupCoordinator, OffsetCommit};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
