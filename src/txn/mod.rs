//! Producer ids and idempotent-producer state.
//!
//! [`producer_ids`] hands out ids in blocks reserved through the controller, so ids are
//! never reused across restarts or brokers. [`producer_state`] is the per-partition table
//! that detects duplicate and out-of-order batches (Kafka's `ProducerStateManager`);
//! [`producer_snapshot`] saves it beside the segments so a restart need not rebuild it
//! from every batch header.
//! The transaction coordinator will live here too.

pub mod marker;
pub mod producer_ids;
pub mod producer_snapshot;
pub mod producer_state;
