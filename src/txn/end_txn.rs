//! EndTxn's decisions (Kafka's `endTransactionWithTV1` and `endTransaction`), as pure
//! functions of one transactional id's metadata.
//!
//! Version 1 ends the transaction at the epoch it ran at; a retry carries that same epoch.
//! Version 2 writes the Prepare* record at the next epoch, so a retry carries the epoch
//! one behind (or, after a rotation, the old id at `i16::MAX - 1`), and a request at the
//! current epoch of a completed transaction is the *next* EndTxn. Kafka's table for
//! version 2 (PF = PRODUCER_FENCED, ITS = INVALID_TXN_STATE, EB = prepare at the next
//! epoch, NONE = answer the current id and epoch, write nothing):
//!
//! | state          | abort retry | abort current | commit retry | commit current |
//! |----------------|-------------|---------------|--------------|----------------|
//! | Empty          | PF          | EB            | PF           | ITS            |
//! | CompleteAbort  | NONE        | EB            | ITS          | ITS            |
//! | CompleteCommit | ITS         | EB            | NONE         | ITS            |

use super::error::TxnError;
use super::records::TxnStatus;
use super::state::{EndDecision, NO_PRODUCER_ID, TxnMetadata, epoch_exhausted};
use super::version::TxnVersion;

impl TxnMetadata {
    /// Kafka's `endTransactionWithTV1`: EndTxn v0-4.
    pub fn end_txn(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndDecision, TxnError> {
        self.check_producer(producer_id, epoch)?;
        self.check_not_pending()?;
        let prepare = |status| TxnMetadata {
            state: status,
            last_update_ms: now_ms,
            client_version: TxnVersion::V0,
            pending: None,
            ..self.clone()
        };
        match (self.state, commit) {
            (TxnStatus::Ongoing, true) => {
                Ok(EndDecision::Prepare(prepare(TxnStatus::PrepareCommit)))
            }
            (TxnStatus::Ongoing, false) => {
                Ok(EndDecision::Prepare(prepare(TxnStatus::PrepareAbort)))
            }
            (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => {
                Ok(EndDecision::AlreadyDone)
            }
            (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            (TxnStatus::Dead | TxnStatus::PrepareEpochFence, _) => {
                Err(TxnError::ConcurrentTransactions)
            }
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// Whether a version 2 EndTxn could need a new producer id (the epoch it bumps is
    /// exhausted): the shell allocates one before deciding, as for InitProducerId.
    pub fn end_needs_producer_id(&self) -> bool {
        epoch_exhausted(self.producer_epoch) && self.producer_epoch < i16::MAX
    }

    /// Kafka's `endTransaction` for EndTxn v5+. `next_producer_id` must be given when
    /// [`end_needs_producer_id`](Self::end_needs_producer_id) said so.
    pub fn end_txn_v2(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        next_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<EndDecision, TxnError> {
        if self.rotating_to(producer_id, epoch) {
            return Err(TxnError::ConcurrentTransactions);
        }
        let retry_on_overflow = self.previous_producer_id == producer_id
            && epoch == i16::MAX - 1
            && self.producer_epoch == 0;
        let retry_on_bump = producer_id == self.producer_id
            && i32::from(epoch) + 1 == i32::from(self.producer_epoch);
        if producer_id != self.producer_id && !retry_on_overflow {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        let current = epoch == self.producer_epoch;
        let valid_epoch = match self.state {
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => retry_on_bump,
            TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
                retry_on_bump || retry_on_overflow || current
            }
            TxnStatus::Ongoing | TxnStatus::Empty | TxnStatus::Dead => current,
            TxnStatus::PrepareEpochFence => current,
        };
        if !valid_epoch {
            return Err(TxnError::ProducerFenced);
        }
        self.check_not_pending()?;
        let retry = retry_on_bump || retry_on_overflow;
        let prepare = |status, no_partition_added| {
            self.prepare_v2(status, no_partition_added, next_producer_id, now_ms)
                .map(EndDecision::Prepare)
        };
        match (self.state, commit) {
            (TxnStatus::Ongoing, true) => prepare(TxnStatus::PrepareCommit, false),
            (TxnStatus::Ongoing, false) => prepare(TxnStatus::PrepareAbort, false),
            (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) if retry => {
                Ok(EndDecision::AlreadyDone)
            }
            (TxnStatus::CompleteCommit, false) if retry => Err(TxnError::InvalidTxnState),
            // An abort when the client cannot know whether its transaction began (no
            // partition was added yet, or the last one completed): a fresh abort of
            // nothing, which still bumps the epoch.
            (TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort, false) => {
                prepare(TxnStatus::PrepareAbort, true)
            }
            (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            (TxnStatus::Dead | TxnStatus::PrepareEpochFence, _) => {
                Err(TxnError::ConcurrentTransactions)
            }
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// Kafka's `prepareAbortOrCommit` at version 2: the next epoch (the current one
    /// becomes the last epoch), a next producer id when that epoch is exhausted, and the
    /// update time as the start of a transaction that added no partition.
    fn prepare_v2(
        &self,
        status: TxnStatus,
        no_partition_added: bool,
        next_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<TxnMetadata, TxnError> {
        // No client ever holds `i16::MAX` (it is left for fencing): a request naming it
        // is not a producer of this id.
        let Some(bumped) = self.producer_epoch.checked_add(1) else {
            return Err(TxnError::ProducerFenced);
        };
        let next = if self.end_needs_producer_id() {
            // The state changed while an id was being allocated: the client retries.
            next_producer_id.ok_or(TxnError::ConcurrentTransactions)?
        } else {
            NO_PRODUCER_ID
        };
        Ok(TxnMetadata {
            producer_epoch: bumped,
            last_producer_epoch: self.producer_epoch,
            next_producer_id: next,
            state: status,
            start_ms: if no_partition_added {
                now_ms
            } else {
                self.start_ms
            },
            last_update_ms: now_ms,
            client_version: TxnVersion::V2,
            pending: None,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::records::{self, TxnPartitions};
    use crate::txn::state::{InitDecision, NO_PRODUCER_EPOCH};

    const MAX: i16 = i16::MAX;

    fn parts(list: &[(&str, i32)]) -> TxnPartitions {
        let mut partitions = TxnPartitions::new();
        for (topic, id) in list {
            partitions.entry(topic.to_string()).or_default().insert(*id);
        }
        partitions
    }

    fn init(meta: &TxnMetadata) -> TxnMetadata {
        match meta.init_producer_id(1000, None, None, 5).unwrap() {
            InitDecision::Write(target) => target,
            other => panic!("{other:?}"),
        }
    }

    /// Producer 7 at `epoch` with an Ongoing version 2 transaction on t-0.
    fn ongoing_at(epoch: i16) -> TxnMetadata {
        let empty = TxnMetadata {
            producer_epoch: epoch,
            ..init(&TxnMetadata::new(7, 1000, 1))
        };
        empty
            .add_partitions(7, epoch, &parts(&[("t", 0)]), TxnVersion::V2, 10)
            .unwrap()
            .unwrap()
    }

    fn prepared(decision: Result<EndDecision, TxnError>) -> TxnMetadata {
        match decision {
            Ok(EndDecision::Prepare(target)) => target,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_version_2_end_prepares_at_the_next_epoch_and_the_markers_carry_it() {
        let open = ongoing_at(0);
        assert_eq!(open.client_version, TxnVersion::V2);
        let commit = prepared(open.end_txn_v2(7, 0, true, None, 20));
        assert_eq!(commit.state, TxnStatus::PrepareCommit);
        assert_eq!((commit.producer_epoch, commit.last_producer_epoch), (1, 0));
        assert_eq!(commit.marker(), Some((7, 1, true)));
        assert_eq!(commit.partitions, open.partitions);
        assert_eq!(commit.start_ms, open.start_ms);
        assert_eq!(commit.producer_after_end(), (7, 1));
        // While prepared: the retry waits, the other outcome is refused, the old epoch
        // that is not one behind is fenced.
        let retry = commit.end_txn_v2(7, 0, true, None, 21);
        assert_eq!(retry, Err(TxnError::ConcurrentTransactions));
        let other = commit.end_txn_v2(7, 0, false, None, 21);
        assert_eq!(other, Err(TxnError::InvalidTxnState));
        let current = commit.end_txn_v2(7, 1, true, None, 21);
        assert_eq!(current, Err(TxnError::ProducerFenced));
        let done = commit.complete(22);
        assert_eq!(done.state, TxnStatus::CompleteCommit);
        assert_eq!((done.producer_id, done.producer_epoch), (7, 1));
        assert_eq!(done.producer_after_end(), (7, 1));
    }

    #[test]
    fn completed_transactions_follow_kafkas_version_2_table() {
        let committed = prepared(ongoing_at(0).end_txn_v2(7, 0, true, None, 20)).complete(21);
        // Retry (epoch one behind): the same outcome answers NONE, the other ITS.
        let retry = committed.end_txn_v2(7, 0, true, None, 22);
        assert_eq!(retry, Ok(EndDecision::AlreadyDone));
        let retry_abort = committed.end_txn_v2(7, 0, false, None, 22);
        assert_eq!(retry_abort, Err(TxnError::InvalidTxnState));
        // Current epoch: a commit of nothing is ITS, an abort bumps again.
        let commit_nothing = committed.end_txn_v2(7, 1, true, None, 22);
        assert_eq!(commit_nothing, Err(TxnError::InvalidTxnState));
        let abort = prepared(committed.end_txn_v2(7, 1, false, None, 23));
        assert_eq!(abort.state, TxnStatus::PrepareAbort);
        assert_eq!(abort.producer_epoch, 2);
        assert!(abort.partitions.is_empty());
        assert_eq!(
            abort.start_ms, 23,
            "no partition added: starts at the update"
        );
        let aborted = abort.complete(24);
        assert_eq!(
            aborted.end_txn_v2(7, 1, false, None, 25),
            Ok(EndDecision::AlreadyDone)
        );
        assert_eq!(
            aborted.end_txn_v2(7, 1, true, None, 25),
            Err(TxnError::InvalidTxnState)
        );
        let again = prepared(aborted.end_txn_v2(7, 2, false, None, 26));
        assert_eq!(again.producer_epoch, 3);
        // Older than one behind, or another id: fenced / unknown.
        assert_eq!(
            aborted.end_txn_v2(7, 0, false, None, 25),
            Err(TxnError::ProducerFenced)
        );
        let unknown = aborted.end_txn_v2(8, 2, false, None, 25);
        assert_eq!(unknown, Err(TxnError::InvalidProducerIdMapping));
    }

    #[test]
    fn an_empty_transaction_accepts_only_an_abort_at_the_current_epoch() {
        let empty = init(&init(&TxnMetadata::new(7, 1000, 1)));
        assert_eq!(empty.producer_epoch, 1);
        let abort = prepared(empty.end_txn_v2(7, 1, false, None, 30));
        assert_eq!((abort.producer_epoch, abort.start_ms), (2, 30));
        assert_eq!(abort.marker(), Some((7, 2, false)));
        assert_eq!(
            empty.end_txn_v2(7, 1, true, None, 30),
            Err(TxnError::InvalidTxnState)
        );
        assert_eq!(
            empty.end_txn_v2(7, 0, false, None, 30),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            empty.end_txn_v2(7, 0, true, None, 30),
            Err(TxnError::ProducerFenced)
        );
        let pending = TxnMetadata {
            pending: Some(TxnStatus::Ongoing),
            ..empty.clone()
        };
        let busy = pending.end_txn_v2(7, 1, false, None, 30);
        assert_eq!(busy, Err(TxnError::ConcurrentTransactions));
    }

    #[test]
    fn the_next_transaction_runs_at_the_bumped_epoch() {
        let done = prepared(ongoing_at(4).end_txn_v2(7, 4, true, None, 20)).complete(21);
        let next = done
            .add_partitions(7, 5, &parts(&[("u", 1)]), TxnVersion::V2, 22)
            .unwrap()
            .unwrap();
        assert_eq!(
            (next.state, next.producer_epoch, next.start_ms),
            (TxnStatus::Ongoing, 5, 22)
        );
        assert_eq!(next.partitions, parts(&[("u", 1)]));
        let stale = done.add_partitions(7, 4, &parts(&[("u", 1)]), TxnVersion::V2, 22);
        assert_eq!(stale, Err(TxnError::ProducerFenced));
    }

    #[test]
    fn an_exhausted_epoch_rotates_the_producer_id_at_completion() {
        let open = ongoing_at(MAX - 1);
        assert!(open.end_needs_producer_id());
        let unallocated = open.end_txn_v2(7, MAX - 1, true, None, 20);
        assert_eq!(unallocated, Err(TxnError::ConcurrentTransactions));
        let commit = prepared(open.end_txn_v2(7, MAX - 1, true, Some(9), 20));
        assert_eq!((commit.producer_id, commit.producer_epoch), (7, MAX));
        assert_eq!(commit.next_producer_id, 9);
        assert_eq!(
            commit.marker(),
            Some((7, MAX, true)),
            "markers fence MAX - 1"
        );
        assert_eq!(commit.producer_after_end(), (9, 0));
        // The client already holds the next id: it waits for the completion.
        let early = commit.end_txn_v2(9, 0, false, None, 21);
        assert_eq!(early, Err(TxnError::ConcurrentTransactions));
        let early_add = commit.add_partitions(9, 0, &parts(&[("t", 0)]), TxnVersion::V2, 21);
        assert_eq!(early_add, Err(TxnError::ConcurrentTransactions));
        let done = commit.complete(22);
        assert_eq!((done.producer_id, done.producer_epoch), (9, 0));
        assert_eq!((done.previous_producer_id, done.next_producer_id), (7, -1));
        assert_eq!(done.last_producer_epoch, MAX - 1);
        // A retry with the old id at its last epoch is answered with the new one.
        let retry = done.end_txn_v2(7, MAX - 1, true, None, 23);
        assert_eq!(retry, Ok(EndDecision::AlreadyDone));
        assert_eq!(done.producer_after_end(), (9, 0));
        assert_eq!(
            done.end_txn_v2(7, 3, true, None, 23),
            Err(TxnError::InvalidProducerIdMapping)
        );
        let next = done.add_partitions(9, 0, &parts(&[("t", 0)]), TxnVersion::V2, 24);
        assert_eq!(next.unwrap().unwrap().state, TxnStatus::Ongoing);
    }

    #[test]
    fn no_client_holds_the_maximum_epoch() {
        // A version 1 fence at MAX - 1 completes at MAX: nobody may end from there.
        let v1_open = TxnMetadata {
            client_version: TxnVersion::V0,
            ..ongoing_at(MAX - 1)
        };
        let fenced = v1_open.fence(20).complete(21);
        assert_eq!(fenced.producer_epoch, MAX);
        let at_max = fenced.end_txn_v2(7, MAX, false, Some(9), 22);
        assert_eq!(at_max, Err(TxnError::ProducerFenced));
        assert!(!fenced.end_needs_producer_id());
    }

    #[test]
    fn a_version_2_fence_bumps_twice_and_a_version_1_fence_once() {
        let open = ongoing_at(3);
        let abort = open.fence(40);
        assert_eq!(abort.state, TxnStatus::PrepareAbort);
        assert_eq!((abort.producer_epoch, abort.last_producer_epoch), (5, 4));
        assert_eq!(abort.marker(), Some((7, 5, false)));
        let done = abort.complete(41);
        // The fenced producer's late abort is neither current nor one behind.
        assert_eq!(
            done.end_txn_v2(7, 3, false, None, 42),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(init(&done).producer_epoch, 6);
        let v1 = TxnMetadata {
            client_version: TxnVersion::V0,
            ..open.clone()
        };
        let v1_abort = v1.fence(40);
        assert_eq!(
            (v1_abort.producer_epoch, v1_abort.last_producer_epoch),
            (4, NO_PRODUCER_EPOCH)
        );
        // Never past MAX.
        let edge = ongoing_at(MAX - 1).fence(40);
        assert_eq!(edge.producer_epoch, MAX);
    }

    #[test]
    fn a_version_1_end_keeps_the_epoch_and_answers_no_producer() {
        let open = ongoing_at(2);
        let commit = prepared(open.end_txn(7, 2, true, 20));
        assert_eq!(commit.producer_epoch, 2);
        assert_eq!(commit.client_version, TxnVersion::V0);
        assert_eq!(commit.marker(), Some((7, 2, true)));
        let done = commit.complete(21);
        assert_eq!(done.end_txn(7, 2, true, 22), Ok(EndDecision::AlreadyDone));
    }

    #[test]
    fn version_2_metadata_survives_the_log() {
        let commit = prepared(ongoing_at(MAX - 1).end_txn_v2(7, MAX - 1, true, Some(9), 20));
        let record = commit.to_record();
        // Tagged fields need version 1 even in a cluster at transaction.version 0.
        assert_eq!(records::value_version(&record, 0), 1);
        let bytes = records::encode_value(&record, records::value_version(&record, 0));
        let back = TxnMetadata::from_record(&records::decode_value(&bytes).unwrap());
        assert_eq!(back.next_producer_id, 9);
        assert_eq!(back.client_version, TxnVersion::V2);
        assert_eq!(
            back.complete(30).producer_id,
            9,
            "the rotation survives a failover"
        );
        // A version 0 value (a version 1 transaction) reads as version 0.
        let v1 = TxnMetadata {
            client_version: TxnVersion::V0,
            ..ongoing_at(1)
        };
        let v0_bytes = records::encode_value(&v1.to_record(), 0);
        let v1_back = TxnMetadata::from_record(&records::decode_value(&v0_bytes).unwrap());
        assert_eq!(v1_back.client_version, TxnVersion::V0);
        assert_eq!(v1_back.next_producer_id, NO_PRODUCER_ID);
    }
}
