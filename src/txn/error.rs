//! The transaction coordinator's errors; `api/` maps them to Kafka codes in one place.

use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TxnError {
    #[error("transaction timeout out of range")]
    InvalidTransactionTimeout,
    /// The producer id does not belong to the transactional id (or it is unknown).
    #[error("producer id does not match the transactional id")]
    InvalidProducerIdMapping,
    /// An older epoch of the producer: a newer producer has the transactional id.
    /// Requests older than KIP-588's versions get INVALID_PRODUCER_EPOCH instead.
    #[error("producer fenced by a newer epoch")]
    ProducerFenced,
    #[error("another transition of this transaction is in progress")]
    ConcurrentTransactions,
    #[error("the transaction is not in a state for this request")]
    InvalidTxnState,
    /// Verify-only: the partition is not in the ongoing transaction (Kafka 4.0's
    /// `handleVerifyPartitionsInTransaction`); the producer can abort and go on. The
    /// partition leader turns it into INVALID_TXN_STATE for clients that predate it.
    #[error("the partition is not in the ongoing transaction")]
    TransactionAbortable,
    #[error("this broker does not coordinate the transactional id")]
    NotCoordinator,
    #[error("the transaction state partition is still loading")]
    LoadInProgress,
    /// Written but not known to be replicated, or no producer id could be allocated:
    /// retriable.
    #[error("coordinator not available: {0}")]
    NotAvailable(String),
    #[error("transaction state storage: {0}")]
    Storage(String),
    /// DescribeTransactions of an id this coordinator does not know.
    #[error("transactional id not found")]
    TransactionalIdNotFound,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl From<crate::group::CoordinatorError> for TxnError {
    /// A `__transaction_state` write failed (the group writer's mapping, Kafka 4's).
    fn from(error: crate::group::CoordinatorError) -> TxnError {
        use crate::group::CoordinatorError as C;
        match error {
            C::NotCoordinator => TxnError::NotCoordinator,
            C::LoadInProgress => TxnError::LoadInProgress,
            C::NotCommitted(why) => TxnError::NotAvailable(why),
            C::TooLarge(why) | C::Storage(why) => TxnError::Storage(why),
            // Only offset commits meet these; a `__transaction_state` write never does.
            C::OffsetMetadataTooLarge
            | C::InvalidProducerEpoch
            | C::InvalidTxnState
            | C::UnstableOffsetCommit => TxnError::Storage(error.to_string()),
        }
    }
}
