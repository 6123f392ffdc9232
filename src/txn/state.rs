//! One transactional id's state and Kafka's transitions of it (TransactionMetadata and the
//! decisions of TransactionCoordinator), as pure functions. EndTxn, whose rules differ
//! most between transaction versions 1 and 2, is in `end_txn`.
//!
//! Every decision returns the *target* metadata; the shell (`coordinator`) marks the id
//! pending, writes the target to `__transaction_state`, and installs it only once the
//! write is committed. While a write is pending, every other request for the id answers
//! CONCURRENT_TRANSACTIONS, as Kafka's `pendingState` makes it.
//!
//! Fencing: Kafka bumps the epoch in memory (PrepareEpochFence) and then writes
//! PrepareAbort with the bumped epoch. Here the two are one transition, PrepareAbort at the
//! bumped epoch, never installed before it is committed: a failed write leaves the old
//! epoch in memory, which Kafka reaches through `hasFailedEpochFence`. PrepareEpochFence
//! read from a log (Kafka never writes it, but the status exists) is resumed as
//! PrepareAbort.
//!
//! Transaction version 2 (KIP-890): every EndTxn writes its Prepare* record at the next
//! epoch, the markers carry it, and the client goes on at that epoch. At an exhausted
//! epoch the Prepare* record names a `next_producer_id`; its completion moves the id
//! there at epoch 0 (Kafka's producer id rotation). The fence of a version 2 transaction
//! bumps twice, as Kafka 4.0's PrepareEpochFence followed by its version 2 abort does.

use super::error::TxnError;
use super::records::{TxnLogValue, TxnPartitions, TxnStatus};
use super::version::TxnVersion;

pub const NO_PRODUCER_ID: i64 = -1;

/// Verify-only answers: (topic, partition, in the ongoing transaction or why not).
pub type PartitionVerdicts = Vec<(String, i32, Result<(), TxnError>)>;
pub const NO_PRODUCER_EPOCH: i16 = -1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    /// The producer id before the last rotation (KIP-360 retries name it).
    pub previous_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump when the producer named its epoch (KIP-360: a
    /// retried InitProducerId gets the same answer). Not persisted, as in Kafka.
    pub last_producer_epoch: i16,
    /// Transaction version 2: the producer id a prepared transaction at an exhausted epoch
    /// moves to when it completes (NO_PRODUCER_ID otherwise).
    pub next_producer_id: i64,
    pub timeout_ms: i32,
    pub state: TxnStatus,
    pub partitions: TxnPartitions,
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// The transaction version of the request that made the last transition (Kafka's
    /// `clientTransactionVersion`): it decides how the transaction ends and is fenced.
    pub client_version: TxnVersion,
    /// The state a write in flight will install.
    pub pending: Option<TxnStatus>,
}

/// What InitProducerId leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitDecision {
    /// Write the target, then answer with its producer id and epoch.
    Write(TxnMetadata),
    /// The id has an open transaction: write the fencing abort (the target, PrepareAbort at
    /// a bumped epoch), send its markers, complete it; the caller retries meanwhile
    /// (CONCURRENT_TRANSACTIONS).
    FenceAndAbort(TxnMetadata),
}

/// What EndTxn leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndDecision {
    /// Write the PrepareCommit/PrepareAbort target, answer, then send markers.
    Prepare(TxnMetadata),
    /// A retry of an EndTxn that already completed the same way: answer NONE (version 2:
    /// with the producer id and epoch the metadata holds now).
    AlreadyDone,
}

/// Kafka's `isProducerEpochExhausted`: the next bump would reach `i16::MAX`.
pub fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

impl TxnMetadata {
    /// A transactional id seen for the first time: Empty, with no epoch yet (the first
    /// InitProducerId bumps it to 0).
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            previous_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            next_producer_id: NO_PRODUCER_ID,
            timeout_ms,
            state: TxnStatus::Empty,
            partitions: TxnPartitions::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            client_version: TxnVersion::V0,
            pending: None,
        }
    }

    pub fn from_record(value: &TxnLogValue) -> TxnMetadata {
        let state = match value.status {
            TxnStatus::PrepareEpochFence => TxnStatus::PrepareAbort,
            other => other,
        };
        TxnMetadata {
            producer_id: value.producer_id,
            previous_producer_id: value.previous_producer_id,
            producer_epoch: value.producer_epoch,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            next_producer_id: value.next_producer_id,
            timeout_ms: value.timeout_ms,
            state,
            partitions: value.partitions.clone(),
            start_ms: value.start_ms,
            last_update_ms: value.last_update_ms,
            client_version: TxnVersion(value.client_transaction_version),
            pending: None,
        }
    }

    pub fn to_record(&self) -> TxnLogValue {
        TxnLogValue {
            producer_id: self.producer_id,
            previous_producer_id: self.previous_producer_id,
            next_producer_id: self.next_producer_id,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            status: self.state,
            partitions: self.partitions.clone(),
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
            client_transaction_version: self.client_version.0,
        }
    }

    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .get(topic)
            .is_some_and(|ids| ids.contains(&partition))
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.values().map(|ids| ids.len()).sum()
    }

    pub(super) fn check_not_pending(&self) -> Result<(), TxnError> {
        match self.pending {
            Some(_) => Err(TxnError::ConcurrentTransactions),
            None => Ok(()),
        }
    }

    /// A version 2 client that already holds the id a prepared transaction rotates to
    /// (its EndTxn answer names it): it retries until the completion installs the id.
    pub(super) fn rotating_to(&self, producer_id: i64, epoch: i16) -> bool {
        self.next_producer_id != NO_PRODUCER_ID
            && producer_id == self.next_producer_id
            && epoch == 0
            && self.marker().is_some()
    }

    /// The producer's id and epoch, as AddPartitions/AddOffsets/EndTxn check them.
    pub(super) fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if self.rotating_to(producer_id, epoch) {
            return Err(TxnError::ConcurrentTransactions);
        }
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// Whether InitProducerId needs a fresh producer id (the epoch would overflow).
    pub fn needs_new_producer_id(&self, expected: Option<(i64, i16)>) -> bool {
        matches!(
            self.state,
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
        ) && epoch_exhausted(self.producer_epoch)
            && expected.is_none_or(|(_, epoch)| epoch == self.producer_epoch)
    }

    /// KIP-360: a producer naming its id and epoch is fenced unless the id is this one,
    /// the metadata was just created, or it names the id before a rotation whose epoch
    /// was exhausted (a retry that never saw the answer).
    fn valid_expected_producer(&self, (producer_id, epoch): (i64, i16)) -> bool {
        self.producer_epoch == NO_PRODUCER_EPOCH
            || producer_id == self.producer_id
            || (producer_id == self.previous_producer_id && epoch_exhausted(epoch))
    }

    /// Kafka's `prepareInitProducerIdTransit`. `new_producer_id` must be given when
    /// [`needs_new_producer_id`](Self::needs_new_producer_id) said so.
    pub fn init_producer_id(
        &self,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        new_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<InitDecision, TxnError> {
        self.check_not_pending()?;
        if let Some(expected) = expected
            && !self.valid_expected_producer(expected)
        {
            return Err(TxnError::ProducerFenced);
        }
        match self.state {
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnStatus::Ongoing => Ok(InitDecision::FenceAndAbort(self.fence(now_ms))),
            TxnStatus::Dead | TxnStatus::PrepareEpochFence => Err(TxnError::ConcurrentTransactions),
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
                let target = if self.needs_new_producer_id(expected) {
                    let Some(new_id) = new_producer_id else {
                        // The state changed while an id was being allocated: retry.
                        return Err(TxnError::ConcurrentTransactions);
                    };
                    self.rotate_producer_id(new_id, timeout_ms, expected.is_some(), now_ms)
                } else {
                    self.bump_epoch(timeout_ms, expected.map(|(_, e)| e), now_ms)?
                };
                Ok(InitDecision::Write(target))
            }
        }
    }

    /// Kafka's `prepareIncrementProducerEpoch`.
    fn bump_epoch(
        &self,
        timeout_ms: i32,
        expected_epoch: Option<i16>,
        now_ms: i64,
    ) -> Result<TxnMetadata, TxnError> {
        if epoch_exhausted(self.producer_epoch) {
            // Only a request naming an older epoch gets here (a current one rotates to a
            // new producer id first): it is a fenced producer. (Kafka throws here.)
            return Err(TxnError::ProducerFenced);
        }
        let bumped = self.producer_epoch + 1;
        let (epoch, last_epoch) = match expected_epoch {
            None => (bumped, NO_PRODUCER_EPOCH),
            Some(expected)
                if self.producer_epoch == NO_PRODUCER_EPOCH || expected == self.producer_epoch =>
            {
                (bumped, self.producer_epoch)
            }
            // A retry whose answer was lost: the same answer again.
            Some(expected) if expected == self.last_producer_epoch => {
                (self.producer_epoch, self.last_producer_epoch)
            }
            Some(_) => return Err(TxnError::ProducerFenced),
        };
        Ok(TxnMetadata {
            producer_epoch: epoch,
            last_producer_epoch: last_epoch,
            timeout_ms,
            state: TxnStatus::Empty,
            partitions: TxnPartitions::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            pending: None,
            ..self.clone()
        })
    }

    /// Kafka's `prepareProducerIdRotation`: a new id at epoch 0.
    fn rotate_producer_id(
        &self,
        new_id: i64,
        timeout_ms: i32,
        record_last_epoch: bool,
        now_ms: i64,
    ) -> TxnMetadata {
        TxnMetadata {
            producer_id: new_id,
            previous_producer_id: self.producer_id,
            producer_epoch: 0,
            last_producer_epoch: if record_last_epoch {
                self.producer_epoch
            } else {
                NO_PRODUCER_EPOCH
            },
            next_producer_id: NO_PRODUCER_ID,
            timeout_ms,
            state: TxnStatus::Empty,
            partitions: TxnPartitions::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            client_version: self.client_version,
            pending: None,
        }
    }

    /// The abort that fences an open transaction (a newer producer, or its timeout): the
    /// epoch is bumped (never past `i16::MAX`) so the markers fence the old producer at
    /// every partition. Version 1 bumps once. Version 2 bumps twice, as Kafka 4.0 does:
    /// PrepareEpochFence takes the next epoch, and the version 2 abort written after it
    /// bumps again (that fenced epoch becomes the last epoch). No producer id rotation:
    /// the fenced producer must InitProducerId anyway, which rotates an exhausted id.
    pub fn fence(&self, now_ms: i64) -> TxnMetadata {
        assert_eq!(self.state, TxnStatus::Ongoing);
        let fenced = self.producer_epoch.saturating_add(1);
        let (epoch, last_epoch) = if self.client_version.bumps_epoch() {
            (fenced.saturating_add(1), fenced)
        } else {
            (fenced, NO_PRODUCER_EPOCH)
        };
        TxnMetadata {
            producer_epoch: epoch,
            last_producer_epoch: last_epoch,
            next_producer_id: NO_PRODUCER_ID,
            state: TxnStatus::PrepareAbort,
            last_update_ms: now_ms,
            pending: None,
            ..self.clone()
        }
    }

    /// Kafka's `handleAddPartitionsToTransaction`: the target (Ongoing with the partitions
    /// added), or `None` when they are all in the transaction already. An Empty or
    /// Complete* transaction starts here (under version 2 this is the partition leader's
    /// implicit add of the transaction's first partition); `version` is the request's.
    pub fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &TxnPartitions,
        version: TxnVersion,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.check_producer(producer_id, epoch)?;
        self.check_not_pending()?;
        match self.state {
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
                return Err(TxnError::ConcurrentTransactions);
            }
            TxnStatus::Dead | TxnStatus::PrepareEpochFence => {
                return Err(TxnError::ConcurrentTransactions);
            }
            TxnStatus::Ongoing | TxnStatus::Empty => {}
            TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {}
        }
        let all_in = partitions
            .iter()
            .all(|(topic, ids)| ids.iter().all(|id| self.contains(topic, *id)));
        if self.state == TxnStatus::Ongoing && all_in {
            return Ok(None);
        }
        let mut target = TxnMetadata {
            state: TxnStatus::Ongoing,
            last_update_ms: now_ms,
            client_version: version,
            pending: None,
            ..self.clone()
        };
        if self.state != TxnStatus::Ongoing {
            target.start_ms = now_ms;
            target.partitions.clear();
        }
        for (topic, ids) in partitions {
            target
                .partitions
                .entry(topic.clone())
                .or_default()
                .extend(ids);
        }
        Ok(Some(target))
    }

    /// Kafka's `handleVerifyPartitionsInTransaction` (AddPartitionsToTxn v4+
    /// verify_only): per partition, whether it is in the ongoing transaction.
    pub fn verify_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &TxnPartitions,
    ) -> Result<PartitionVerdicts, TxnError> {
        self.check_producer(producer_id, epoch)?;
        if matches!(
            self.state,
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort
        ) {
            return Err(TxnError::ConcurrentTransactions);
        }
        let ongoing = self.state == TxnStatus::Ongoing;
        Ok(partitions
            .iter()
            .flat_map(|(topic, ids)| ids.iter().map(move |id| (topic, *id)))
            .map(|(topic, id)| {
                let verdict = if ongoing && self.contains(topic, id) {
                    Ok(())
                } else {
                    Err(TxnError::TransactionAbortable)
                };
                (topic.clone(), id, verdict)
            })
            .collect())
    }

    /// The markers of a prepared transaction: (producer id, epoch, commit?).
    pub fn marker(&self) -> Option<(i64, i16, bool)> {
        match self.state {
            TxnStatus::PrepareCommit => Some((self.producer_id, self.producer_epoch, true)),
            TxnStatus::PrepareAbort => Some((self.producer_id, self.producer_epoch, false)),
            _ => None,
        }
    }

    /// Kafka's `prepareComplete`: every marker is written. A version 2 transaction
    /// prepared at an exhausted epoch moves to its next producer id at epoch 0; the last
    /// epoch stays the one the client saw before the bump (`i16::MAX - 1`).
    pub fn complete(&self, now_ms: i64) -> TxnMetadata {
        let state = match self.state {
            TxnStatus::PrepareCommit => TxnStatus::CompleteCommit,
            TxnStatus::PrepareAbort => TxnStatus::CompleteAbort,
            other => panic!("completing a transaction in state {other:?}"),
        };
        let rotates = self.client_version.bumps_epoch() && self.next_producer_id != NO_PRODUCER_ID;
        let (producer_id, previous_producer_id, producer_epoch) = if rotates {
            (self.next_producer_id, self.producer_id, 0)
        } else {
            (
                self.producer_id,
                self.previous_producer_id,
                self.producer_epoch,
            )
        };
        TxnMetadata {
            producer_id,
            previous_producer_id,
            producer_epoch,
            next_producer_id: NO_PRODUCER_ID,
            state,
            partitions: TxnPartitions::new(),
            last_update_ms: now_ms,
            pending: None,
            ..self.clone()
        }
    }

    /// The producer id and epoch a version 2 client goes on with after this metadata's
    /// EndTxn: the next producer id at epoch 0 while a rotation is prepared.
    pub fn producer_after_end(&self) -> (i64, i16) {
        if self.next_producer_id != NO_PRODUCER_ID {
            (self.next_producer_id, 0)
        } else {
            (self.producer_id, self.producer_epoch)
        }
    }

    /// Open past its timeout, and nothing in flight (Kafka's `timedOutTransactions`).
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnStatus::Ongoing
            && self.pending.is_none()
            && self.start_ms.saturating_add(i64::from(self.timeout_ms)) < now_ms
    }

    /// Finished and unused for `expiration_ms` (`transactional.id.expiration.ms`).
    pub fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        matches!(
            self.state,
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
        ) && self.pending.is_none()
            && self.last_update_ms.saturating_add(expiration_ms) <= now_ms
    }
}

/// `transaction.timeout.ms` must be in (0, `transaction.max.timeout.ms`].
pub fn check_timeout(timeout_ms: i32, max_timeout_ms: i32) -> Result<(), TxnError> {
    if timeout_ms <= 0 || timeout_ms > max_timeout_ms {
        Err(TxnError::InvalidTransactionTimeout)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(&str, i32)]) -> TxnPartitions {
        let mut partitions = TxnPartitions::new();
        for (topic, id) in list {
            partitions.entry(topic.to_string()).or_default().insert(*id);
        }
        partitions
    }

    fn init(meta: &TxnMetadata, expected: Option<(i64, i16)>) -> TxnMetadata {
        match meta.init_producer_id(1000, expected, None, 5).unwrap() {
            InitDecision::Write(target) => target,
            other => panic!("{other:?}"),
        }
    }

    fn ongoing() -> TxnMetadata {
        let empty = init(&TxnMetadata::new(7, 1000, 1), None);
        empty
            .add_partitions(7, 0, &parts(&[("t", 0)]), TxnVersion::V0, 10)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_new_id_starts_at_epoch_0_and_each_init_bumps_it() {
        let meta = TxnMetadata::new(7, 1000, 1);
        let first = init(&meta, None);
        assert_eq!((first.producer_id, first.producer_epoch), (7, 0));
        assert_eq!(first.state, TxnStatus::Empty);
        let second = init(&first, None);
        assert_eq!(second.producer_epoch, 1);
    }

    #[test]
    fn an_exhausted_epoch_rotates_the_producer_id() {
        let meta = TxnMetadata {
            producer_epoch: i16::MAX - 1,
            ..init(&TxnMetadata::new(7, 1000, 1), None)
        };
        assert!(meta.needs_new_producer_id(None));
        assert_eq!(
            meta.init_producer_id(1000, None, None, 5),
            Err(TxnError::ConcurrentTransactions)
        );
        let InitDecision::Write(rotated) = meta.init_producer_id(1000, None, Some(9), 5).unwrap()
        else {
            panic!()
        };
        assert_eq!((rotated.producer_id, rotated.producer_epoch), (9, 0));
        assert_eq!(rotated.previous_producer_id, 7);
        // KIP-360: the old producer retrying with the old id and exhausted epoch is no
        // zombie; another old epoch is.
        assert!(rotated.valid_expected_producer((7, i16::MAX - 1)));
        assert!(!rotated.valid_expected_producer((7, 3)));
    }

    #[test]
    fn kip_360_bumps_and_retries_answer_the_same() {
        let zero = init(&TxnMetadata::new(7, 1000, 1), None);
        let one = init(&zero, Some((7, 0)));
        assert_eq!((one.producer_epoch, one.last_producer_epoch), (1, 0));
        // The answer was lost; the producer retries with epoch 0.
        let retried = init(&one, Some((7, 0)));
        assert_eq!(retried.producer_epoch, 1);
        assert_eq!(
            one.init_producer_id(1000, Some((7, 5)), None, 5),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            one.init_producer_id(1000, Some((8, 1)), None, 5),
            Err(TxnError::ProducerFenced)
        );
    }

    #[test]
    fn init_on_an_open_transaction_fences_and_aborts_it_at_a_bumped_epoch() {
        let open = ongoing();
        let InitDecision::FenceAndAbort(abort) =
            open.init_producer_id(1000, None, None, 20).unwrap()
        else {
            panic!()
        };
        assert_eq!(abort.state, TxnStatus::PrepareAbort);
        assert_eq!(abort.producer_epoch, 1);
        assert_eq!(abort.partitions, open.partitions);
        assert_eq!(abort.marker(), Some((7, 1, false)));
        // The fenced producer can neither commit nor add.
        assert_eq!(abort.end_txn(7, 0, true, 21), Err(TxnError::ProducerFenced));
        let done = abort.complete(30);
        assert_eq!(done.state, TxnStatus::CompleteAbort);
        assert!(done.partitions.is_empty());
        assert_eq!(
            done.add_partitions(7, 0, &parts(&[("t", 1)]), TxnVersion::V0, 31),
            Err(TxnError::ProducerFenced)
        );
        // The new producer's retry now gets the epoch after the fence.
        assert_eq!(init(&done, None).producer_epoch, 2);
        // While prepared: retry later.
        assert_eq!(
            abort.init_producer_id(1000, None, None, 22),
            Err(TxnError::ConcurrentTransactions)
        );
    }

    #[test]
    fn add_partitions_opens_and_extends_the_transaction() {
        let open = ongoing();
        assert_eq!(open.state, TxnStatus::Ongoing);
        assert_eq!(open.start_ms, 10);
        assert_eq!(
            open.add_partitions(7, 0, &parts(&[("t", 0)]), TxnVersion::V0, 11),
            Ok(None),
            "nothing new"
        );
        let more = open
            .add_partitions(7, 0, &parts(&[("u", 2)]), TxnVersion::V0, 12)
            .unwrap()
            .unwrap();
        assert_eq!(more.partition_count(), 2);
        assert_eq!(more.start_ms, 10);
        assert_eq!(
            open.add_partitions(8, 0, &parts(&[("u", 2)]), TxnVersion::V0, 12),
            Err(TxnError::InvalidProducerIdMapping)
        );
        let pending = TxnMetadata {
            pending: Some(TxnStatus::Ongoing),
            ..open.clone()
        };
        assert_eq!(
            pending.add_partitions(7, 0, &parts(&[("u", 2)]), TxnVersion::V0, 12),
            Err(TxnError::ConcurrentTransactions)
        );
        let verified = more
            .verify_partitions(7, 0, &parts(&[("t", 0), ("v", 1)]))
            .unwrap();
        assert_eq!(verified[0].2, Ok(()));
        assert_eq!(verified[1].2, Err(TxnError::TransactionAbortable));
    }

    #[test]
    fn end_txn_follows_kafkas_table() {
        let open = ongoing();
        let EndDecision::Prepare(commit) = open.end_txn(7, 0, true, 20).unwrap() else {
            panic!()
        };
        assert_eq!(commit.state, TxnStatus::PrepareCommit);
        assert_eq!(
            commit.end_txn(7, 0, true, 21),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            commit.end_txn(7, 0, false, 21),
            Err(TxnError::InvalidTxnState)
        );
        let done = commit.complete(22);
        assert_eq!(done.end_txn(7, 0, true, 23), Ok(EndDecision::AlreadyDone));
        assert_eq!(
            done.end_txn(7, 0, false, 23),
            Err(TxnError::InvalidTxnState)
        );
        let empty = init(&TxnMetadata::new(7, 1000, 1), None);
        assert_eq!(empty.end_txn(7, 0, true, 2), Err(TxnError::InvalidTxnState));
        assert_eq!(
            empty.end_txn(6, 0, true, 2),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(empty.end_txn(7, 3, true, 2), Err(TxnError::ProducerFenced));
    }

    #[test]
    fn timeouts_and_expiry() {
        let open = ongoing();
        assert!(!open.timed_out(10 + 1000));
        assert!(open.timed_out(10 + 1001));
        assert!(!open.expired(i64::MAX, 1));
        let done = open.fence(2000).complete(2001);
        assert!(!done.timed_out(i64::MAX));
        assert!(!done.expired(2001 + 99, 100));
        assert!(done.expired(2001 + 100, 100));
        assert_eq!(
            check_timeout(0, 900_000),
            Err(TxnError::InvalidTransactionTimeout)
        );
        assert_eq!(
            check_timeout(900_001, 900_000),
            Err(TxnError::InvalidTransactionTimeout)
        );
        assert_eq!(check_timeout(900_000, 900_000), Ok(()));
    }

    #[test]
    fn records_round_trip_through_metadata() {
        let open = ongoing();
        let back = TxnMetadata::from_record(&open.to_record());
        assert_eq!(
            back,
            TxnMetadata {
                last_producer_epoch: NO_PRODUCER_EPOCH,
                ..open
            }
        );
        let fence = TxnLogValue {
            status: TxnStatus::PrepareEpochFence,
            ..back.to_record()
        };
        assert_eq!(
            TxnMetadata::from_record(&fence).state,
            TxnStatus::PrepareAbort
        );
    }
}
