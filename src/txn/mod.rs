//! Producer ids, idempotent-producer state, and the transaction coordinator.
//!
//! [`producer_ids`] hands out ids in blocks reserved through the controller, so ids are
//! never reused across restarts or brokers. [`producer_state`] is the per-partition table
//! that detects duplicate and out-of-order batches (Kafka's `ProducerStateManager`);
//! [`producer_snapshot`] saves it beside the segments so a restart need not rebuild it
//! from every batch header.
//!
//! The transaction coordinator (transaction version 1): [`records`] holds Kafka's
//! `__transaction_state` record formats, [`state`] the pure per-id state machine,
//! [`coordinator`] the shell that writes every change to `__transaction_state` before it
//! answers, `loader` follows that topic's leadership (replay on election, unload on
//! resignation), [`markers`] sends WriteTxnMarkers to the data partitions' leaders, one
//! worker per destination over the pure bookkeeping of [`marker_queue`].

pub mod coordinator;
#[cfg(test)]
mod coordinator_tests;
mod error;
mod loader;
pub mod marker;
pub mod marker_queue;
pub mod markers;
pub mod producer_ids;
pub mod producer_snapshot;
pub mod producer_state;
pub mod records;
#[cfg(test)]
mod sim;
pub mod state;

pub use coordinator::{
    ProducerIdSource, TRANSACTION_STATE_TOPIC, TransactionCoordinator, TxnCoordinatorConfig,
    TxnDescription,
};
pub use error::TxnError;
