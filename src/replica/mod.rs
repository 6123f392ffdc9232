//! The partitions this broker hosts and its role for each.
//!
//! [`ReplicaManager`] keeps one [`Partition`] per hosted topic-partition, reconciled with
//! the metadata image. A partition owns its log, its idempotent-producer table and its
//! high watermark; [`waits`] lets fetches sleep until a partition changes; [`LogCleaner`]
//! runs compaction passes on its own thread. Today every
//! partition has one replica, so the leader's log end offset is the high watermark; the
//! cluster issue adds follower fetchers and ISR tracking behind the same interface.

pub mod log_cleaner;
pub mod partition;
pub mod replica_manager;
pub mod waits;

use thiserror::Error;

pub use log_cleaner::{CleanerSettings, LogCleaner};
pub use partition::{Partition, PartitionRead, ProduceOutcome};
pub use replica_manager::ReplicaManager;

use crate::log::{BatchError, LogError};
use crate::txn::producer_state::SequenceError;

#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error("the partition is being deleted")]
    Deleted,
    #[error("leader epoch {requested} is older than the current {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },
    #[error("leader epoch {requested} is newer than the current {current}")]
    UnknownLeaderEpoch { requested: i32, current: i32 },
    #[error("transactional and control batches need the transaction coordinator")]
    TransactionsUnsupported,
    #[error("partition metadata I/O: {0}")]
    Io(#[from] std::io::Error),
}
