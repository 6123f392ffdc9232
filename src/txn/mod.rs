//! Producer ids, idempotent-producer state, and the transaction coordinator.
//!
//! [`producer_ids`] hands out ids in blocks reserved through the controller, so ids are
//! never reused across restarts or brokers. [`producer_state`] is the per-partition table
//! that detects duplicate and out-of-order batches (Kafka's `ProducerStateManager`);
//! [`producer_snapshot`] saves it beside the segments so a restart need not rebuild it
//! from every batch header.
//!
//! The transaction coordinator (transaction versions 1 and 2, [`version`]): [`records`]
//! holds Kafka's `__transaction_state` record formats, [`state`] the pure per-id state
//! machine (EndTxn's rules in `end_txn`),
//! [`coordinator`] the shell that writes every change to `__transaction_state` before it
//! answers, `loader` follows that topic's leadership (replay on election, unload on
//! resignation), [`markers`] sends WriteTxnMarkers to the data partitions' leaders, one
//! worker per destination over the pure bookkeeping of [`marker_queue`].
//!
//! On the partition leader, [`verification`] asks the coordinators whether a partition is
//! in a producer's transaction before its first transactional batch lands (KIP-890).

pub mod coordinator;
#[cfg(test)]
mod coordinator_tests;
mod end_txn;
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
pub mod verification;
pub mod version;

pub use coordinator::{
    ProducerIdSource, TRANSACTION_STATE_TOPIC, TransactionCoordinator, TxnCoordinatorConfig,
    TxnDescription,
};
pub use error::TxnError;
pub use version::TxnVersion;
