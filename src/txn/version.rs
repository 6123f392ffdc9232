//! The transaction version a request speaks (Kafka's `TransactionVersion`, the levels of
//! the `transaction.version` feature).
//!
//! Kafka derives it from the request's API version alone, never from the cluster's
//! finalized level: EndTxn v5+ and AddPartitionsToTxn v4+ come from transaction version 2
//! clients (or from a partition leader adding a partition for one), every older request
//! and every AddOffsetsToTxn is version 0. The cluster's level only decides which
//! `__transaction_state` value version is written (`records`).

/// A client's transaction version, as `TransactionLogValue.ClientTransactionVersion` stores
/// it. 0 and 1 end a transaction at the epoch it ran at; 2 (KIP-890) bumps the epoch at
/// every end, so the markers fence the producer's own earlier epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnVersion(pub i16);

impl TxnVersion {
    /// Transactions as before KIP-890 (level 1 only changes the log format).
    pub const V0: TxnVersion = TxnVersion(0);
    /// KIP-890 part 2: epoch bump per transaction, implicit partition adds.
    pub const V2: TxnVersion = TxnVersion(2);

    /// First EndTxn version a transaction version 2 client sends.
    const END_TXN_V2_VERSION: i16 = 5;
    /// First AddPartitionsToTxn version that comes from a broker or a version 2 client.
    const ADD_PARTITIONS_V2_VERSION: i16 = 4;

    /// Kafka's `supportsEpochBump`: every transaction end bumps the producer epoch.
    pub fn bumps_epoch(self) -> bool {
        self.0 >= TxnVersion::V2.0
    }

    /// Kafka's `transactionVersionForEndTxn`.
    pub fn for_end_txn(request_version: i16) -> TxnVersion {
        if request_version >= Self::END_TXN_V2_VERSION {
            TxnVersion::V2
        } else {
            TxnVersion::V0
        }
    }

    /// Kafka's `transactionVersionForAddPartitionsToTxn`.
    pub fn for_add_partitions(request_version: i16) -> TxnVersion {
        if request_version >= Self::ADD_PARTITIONS_V2_VERSION {
            TxnVersion::V2
        } else {
            TxnVersion::V0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_version_alone_decides() {
        assert_eq!(TxnVersion::for_end_txn(4), TxnVersion::V0);
        assert_eq!(TxnVersion::for_end_txn(5), TxnVersion::V2);
        assert_eq!(TxnVersion::for_add_partitions(3), TxnVersion::V0);
        assert_eq!(TxnVersion::for_add_partitions(4), TxnVersion::V2);
        assert!(!TxnVersion(1).bumps_epoch());
        assert!(TxnVersion::V2.bumps_epoch());
    }
}
