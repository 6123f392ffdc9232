//! Per-partition producer state, a pure state machine: idempotence and transactions.
//!
//! For each producer id the partition remembers the epoch and the last
//! [`BATCHES_REMEMBERED`] batches (sequence range and offsets). A retried batch that
//! matches one of them is a duplicate and gets its original offsets back; any other batch
//! must continue the sequence exactly, or it is out of order. Mirrors Kafka's
//! `ProducerStateManager` / `ProducerAppendInfo`.
//!
//! Transactions: a transactional batch from a producer with no open transaction opens one
//! at its first offset; a control batch (commit or abort marker) closes it and reports the
//! [`CompletedTxn`]. The smallest first offset of the open transactions, and of the
//! completed ones whose marker the high watermark has not passed yet, is the partition's
//! first unstable offset, which bounds the last stable offset (LSO). The markers also carry
//! the epoch rules that fence zombies: data or a marker with an older producer epoch is
//! refused, a marker bumps the epoch to its own, and a marker from a coordinator epoch
//! older than the last one seen is refused (the coordinator moved).
//!
//! Verification (KIP-890 part 1, Kafka's `VerificationStateEntry`): before the leader
//! appends a transactional batch for a producer with no transaction open here, it asks the
//! transaction coordinator whether the partition is in the producer's transaction. The
//! table hands out a [`VerificationGuard`] when that question starts and forgets it when
//! any transactional batch or marker of the producer lands; the append must present the
//! guard that is still current. So a produce verified for one transaction cannot land
//! after that transaction's marker (the guard is gone) nor inside a later transaction
//! (that one has a new guard): the hanging transaction KIP-890 is about.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::log::batch::NO_SEQUENCE;
use crate::log::{BatchHeader, ProducerTail, ProducerTails};

/// Kafka keeps the metadata of the last five batches per producer (max.in.flight = 5).
pub const BATCHES_REMEMBERED: usize = 5;
/// Coordinator epoch of a producer that never saw a marker (Kafka's -1).
pub const NO_COORDINATOR_EPOCH: i32 = -1;
/// Verifications open at once per partition. Kafka bounds them only by expiry; a cap keeps
/// a flood of producers that never finish verifying from growing the table without end.
pub const VERIFICATIONS_MAX: usize = 10_000;
/// A verification that never led to an append is forgotten after this long (Kafka uses
/// `producer.id.expiration.ms`, default one day).
pub const VERIFICATION_EXPIRATION_MS: i64 = 86_400_000;

/// One verification of a producer's transaction on a partition (Kafka's
/// `VerificationGuard`, compared by identity there). Numbers come from one process-wide
/// counter, so a guard issued before the table was rebuilt (leadership moved away and
/// back) never equals one issued after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VerificationGuard(u64);

static NEXT_GUARD: AtomicU64 = AtomicU64::new(1);

impl VerificationGuard {
    fn fresh() -> VerificationGuard {
        VerificationGuard(NEXT_GUARD.fetch_add(1, Ordering::Relaxed))
    }
}

/// What an append asks of the verification state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// `transaction.partition.verification.enable=false`, or a write verification does
    /// not apply to: no check.
    Off,
    /// The guard the request was verified under (`None`: it was not, Kafka's SENTINEL).
    /// A transactional batch of a producer with no open transaction needs the current one.
    Guard(Option<VerificationGuard>),
}

/// A producer's verification in progress (Kafka's `VerificationStateEntry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VerificationEntry {
    guard: VerificationGuard,
    /// The epoch and the lowest sequence seen while verifying: a higher sequence must not
    /// land before the lower one that is still being retried (an OutOfOrderSequence loop).
    epoch: i16,
    lowest_sequence: i32,
    created_ms: i64,
}
/// Last timestamp of a producer that has written nothing with a timestamp yet (Kafka's
/// `RecordBatch.NO_TIMESTAMP`).
pub const NO_TIMESTAMP: i64 = -1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What a commit or abort marker says (the control record's key type and value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnMarker {
    pub committed: bool,
    pub coordinator_epoch: i32,
}

/// A transaction a marker closed: its records are `first_offset..=last_offset` (the marker
/// itself is `last_offset`), from `producer_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub aborted: bool,
}

/// A producer's transactional fields, as snapshots store them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnFields {
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction, if one is open.
    pub txn_first_offset: Option<i64>,
}

impl Default for TxnFields {
    fn default() -> Self {
        TxnFields {
            coordinator_epoch: NO_COORDINATOR_EPOCH,
            txn_first_offset: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchRecord>,
    txn: TxnFields,
    /// The max timestamp of the producer's last batch or the timestamp of its last marker
    /// (Kafka's `ProducerStateEntry.lastTimestamp`): what `producer.id.expiration.ms`
    /// ages, and what DescribeProducers reports.
    last_timestamp: i64,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            batches: VecDeque::new(),
            txn: TxnFields::default(),
            last_timestamp: NO_TIMESTAMP,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Accept,
    /// Already in the log: answer with these offsets, append nothing.
    Duplicate(BatchRecord),
}

/// Why a producer's batch or marker is refused (each maps to one Kafka error code).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("out of order sequence {found} for producer {producer_id}, expected {expected}")]
    OutOfOrder {
        producer_id: i64,
        found: i32,
        expected: i32,
    },
    #[error("producer {producer_id} epoch {found} is older than the current epoch {current}")]
    StaleEpoch {
        producer_id: i64,
        found: i16,
        current: i16,
    },
    /// A non-transactional batch while the producer has a transaction open.
    #[error("producer {producer_id} has an open transaction; expected a transactional batch")]
    InvalidTxnState { producer_id: i64 },
    /// A transactional batch for a producer with no open transaction here, without the
    /// current verification guard (never verified, or its transaction ended meanwhile).
    #[error("producer {producer_id}: the batch is not part of a verified ongoing transaction")]
    Unverified { producer_id: i64 },
    /// A marker from a transaction coordinator older than the last one seen.
    #[error("producer {producer_id}: coordinator epoch {found} is older than {current}")]
    CoordinatorFenced {
        producer_id: i64,
        found: i32,
        current: i32,
    },
}

/// One producer as snapshots see it.
#[derive(Clone, Copy, Debug)]
pub struct ProducerView<'a> {
    pub producer_id: i64,
    pub epoch: i16,
    pub txn: TxnFields,
    pub batches: &'a VecDeque<BatchRecord>,
    pub last_timestamp: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// (first offset, producer id) of every open transaction: the first is the partition's
    /// first unstable offset. Always equal to what the entries' `txn_first_offset` say.
    open_txns: BTreeSet<(i64, i64)>,
    /// Completed transactions whose marker may not be replicated yet (Kafka's
    /// `unreplicatedTxns`): (first offset, producer id) -> the marker's offset. Each keeps
    /// holding the LSO at its first offset until the high watermark passes its marker: a
    /// marker only on the leader may be truncated away by the next leader, and the
    /// transaction would be open again below an LSO consumers were already given. In
    /// memory only, as in Kafka: a table rebuilt from the log recomputes them.
    unreplicated_txns: BTreeMap<(i64, i64), i64>,
    /// Verifications in progress by producer id: in memory only, as in Kafka (a restart
    /// or a leader change makes the producer verify again).
    verifications: HashMap<i64, VerificationEntry>,
}

impl ProducerStateTable {
    /// Decides what to do with a data batch before it is appended. Batches without a
    /// producer id are always accepted. Control batches go through [`Self::check_marker`].
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Accept);
        }
        let producer_id = header.producer_id;
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its state expired): Kafka accepts any sequence.
            return Ok(SequenceCheck::Accept);
        };
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id,
                found: header.producer_epoch,
                current: entry.epoch,
            });
        }
        let sequence = check_sequence(entry, header)?;
        if sequence == SequenceCheck::Accept
            && let Some(verifying) = self.verifications.get(&producer_id)
            && verifying.epoch == header.producer_epoch
            && header.base_sequence > verifying.lowest_sequence
        {
            // Kafka's ProducerAppendInfo: while a lower sequence is still being verified
            // (its verification failed retriably), a higher one must not overtake it.
            return Err(SequenceError::OutOfOrder {
                producer_id,
                found: header.base_sequence,
                expected: verifying.lowest_sequence,
            });
        }
        // Kafka's ProducerAppendInfo: a plain write in the middle of a transaction.
        if sequence == SequenceCheck::Accept
            && !header.is_transactional()
            && entry.txn.txn_first_offset.is_some()
        {
            return Err(SequenceError::InvalidTxnState { producer_id });
        }
        Ok(sequence)
    }

    /// Checks a transactional batch a coordinator writes for a producer (the group
    /// coordinator's TxnOffsetCommit records, Kafka's `AppendOrigin.COORDINATOR`): such
    /// batches carry no sequence (NO_SEQUENCE), so only the epoch is checked. Checking
    /// their sequences as a client's would take the next transaction's commit of as many
    /// offsets for a retry of the last one and drop it.
    pub fn check_coordinator(&self, header: &BatchHeader) -> Result<(), SequenceError> {
        match self.producers.get(&header.producer_id) {
            Some(entry) if header.producer_epoch < entry.epoch => Err(SequenceError::StaleEpoch {
                producer_id: header.producer_id,
                found: header.producer_epoch,
                current: entry.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Checks a commit or abort marker for `producer_id` at `epoch` before it is appended.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        marker: TxnMarker,
    ) -> Result<(), SequenceError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id,
                found: epoch,
                current: entry.epoch,
            });
        }
        if marker.coordinator_epoch < entry.txn.coordinator_epoch {
            return Err(SequenceError::CoordinatorFenced {
                producer_id,
                found: marker.coordinator_epoch,
                current: entry.txn.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records a data batch that is now in the log at `first_offset..=first_offset+delta`.
    /// A transactional batch opens its producer's transaction if none is open.
    pub fn update(&mut self, header: &BatchHeader, first_offset: i64) {
        if !header.has_producer_id() || header.is_control() {
            return;
        }
        if header.is_transactional() {
            // The transaction is open here now: later batches need no guard.
            self.verifications.remove(&header.producer_id);
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = header.max_timestamp;
        if header.base_sequence == NO_SEQUENCE {
            // A coordinator's batch: nothing a retry could be matched against.
            open_transaction(&mut self.open_txns, entry, header, first_offset);
            return;
        }
        if entry.batches.len() == BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchRecord {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            first_offset,
            last_offset: first_offset + i64::from(header.last_offset_delta),
            max_timestamp: header.max_timestamp,
        });
        open_transaction(&mut self.open_txns, entry, header, first_offset);
    }

    /// Records a marker now in the log at `offset`: closes the producer's transaction (a
    /// marker with none open completes an empty one at its own offset, as Kafka's does),
    /// moves the producer to the marker's epoch and coordinator epoch.
    pub fn complete(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: TxnMarker,
        offset: i64,
    ) -> CompletedTxn {
        // The transaction ended: whatever was verified for it must not land after this.
        self.verifications.remove(&producer_id);
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            // The coordinator fences a zombie by bumping the epoch with the marker.
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.txn.coordinator_epoch = marker.coordinator_epoch;
        let first_offset = match entry.txn.txn_first_offset.take() {
            Some(first) => {
                self.open_txns.remove(&(first, producer_id));
                first
            }
            None => offset,
        };
        self.unreplicated_txns
            .insert((first_offset, producer_id), offset);
        CompletedTxn {
            producer_id,
            first_offset,
            last_offset: offset,
            aborted: !marker.committed,
        }
    }

    /// The first offset of the oldest open transaction (Kafka's `firstUndecidedOffset`);
    /// completed transactions still held by the high watermark are not counted, see
    /// [`Self::first_unstable_offset_at`].
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.open_txns.first().map(|(offset, _)| *offset)
    }

    /// Kafka's `firstUnstableOffset` with the high watermark at `high_watermark`: the first
    /// offset of the oldest transaction that is open, or completed with its marker at or
    /// above the high watermark (not known to be replicated). Nothing at or above it is
    /// stable. Entries the high watermark has passed count for nothing even before
    /// [`Self::on_high_watermark_updated`] drops them.
    pub fn first_unstable_offset_at(&self, high_watermark: i64) -> Option<i64> {
        let unreplicated = self
            .unreplicated_txns
            .iter()
            .find(|(_, marker_offset)| **marker_offset >= high_watermark)
            .map(|((first_offset, _), _)| *first_offset);
        match (self.first_unstable_offset(), unreplicated) {
            (Some(open), Some(completed)) => Some(open.min(completed)),
            (open, completed) => open.or(completed),
        }
    }

    /// Kafka's `onHighWatermarkUpdated`: forgets the completed transactions whose marker is
    /// below `high_watermark` (replicated to the ISR, it can no longer be truncated).
    pub fn on_high_watermark_updated(&mut self, high_watermark: i64) {
        self.unreplicated_txns
            .retain(|_, marker_offset| *marker_offset >= high_watermark);
    }

    /// Completed transactions not yet known to be replicated (tests and invariants).
    pub fn unreplicated_count(&self) -> usize {
        self.unreplicated_txns.len()
    }

    /// Kafka's `lastStableOffset(completedTxn)` for the aborted-transaction index: after
    /// `completed` closed, the oldest other open transaction's start, or the offset after
    /// the marker.
    pub fn stable_offset_after(&self, completed: &CompletedTxn) -> i64 {
        self.first_unstable_offset()
            .unwrap_or(completed.last_offset + 1)
    }

    /// True if `producer_id` has a transaction open here at `epoch` (Kafka's
    /// `hasOngoingTransaction`): its batches need no verification. A transaction open at
    /// another epoch does not count: with transactions version 2 every transaction has its
    /// own epoch, and the next one may start before the last one's marker is here.
    pub fn has_ongoing_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|entry| entry.txn.txn_first_offset.is_some() && entry.epoch == epoch)
    }

    /// Starts (or joins) the verification of `producer_id`'s transaction before a
    /// transactional batch at `epoch` from `sequence` is appended (Kafka's
    /// `maybeStartTransactionVerification`). `None`: its transaction is open here, no
    /// verification needed. Otherwise the guard the append must present; concurrent
    /// requests of one producer share it.
    pub fn start_verification(
        &mut self,
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        now_ms: i64,
    ) -> Result<Option<VerificationGuard>, SequenceError> {
        if self.has_ongoing_transaction(producer_id, epoch) {
            return Ok(None);
        }
        // A zombie at an older epoch is fenced here, before it leaves an entry whose lowest
        // sequence would hold back the live producer's batches (Kafka checks the epoch at
        // append only; the entry would then block the open transaction until a marker).
        if let Some(entry) = self.producers.get(&producer_id)
            && epoch < entry.epoch
        {
            return Err(SequenceError::StaleEpoch {
                producer_id,
                found: epoch,
                current: entry.epoch,
            });
        }
        if !self.verifications.contains_key(&producer_id)
            && self.verifications.len() >= VERIFICATIONS_MAX
        {
            self.expire_verifications(now_ms, VERIFICATION_EXPIRATION_MS);
            // Still full (a flood of producers that never append): the oldest entry goes.
            // Safe: its holder's append then fails as unverified, and it verifies again;
            // refusing instead would lock every new producer out until expiry.
            if self.verifications.len() >= VERIFICATIONS_MAX
                && let Some(oldest) = (self.verifications.iter())
                    .min_by_key(|(_, entry)| entry.created_ms)
                    .map(|(id, _)| *id)
            {
                self.verifications.remove(&oldest);
            }
        }
        let entry = self
            .verifications
            .entry(producer_id)
            .or_insert_with(|| VerificationEntry {
                guard: VerificationGuard::fresh(),
                epoch,
                lowest_sequence: sequence,
                created_ms: now_ms,
            });
        // Kafka's maybeUpdateLowestSequenceAndEpoch: a bumped epoch restarts sequences.
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.lowest_sequence = sequence;
        } else if epoch == entry.epoch && sequence < entry.lowest_sequence {
            entry.lowest_sequence = sequence;
        }
        Ok(Some(entry.guard))
    }

    /// The append-time half: a transactional data batch of a producer with no open
    /// transaction (at its epoch) lands only with the guard that is still current, checked
    /// under the same lock as the append.
    pub fn check_verified(
        &self,
        header: &BatchHeader,
        verification: Verification,
    ) -> Result<(), SequenceError> {
        let Verification::Guard(presented) = verification else {
            return Ok(());
        };
        let producer_id = header.producer_id;
        if !header.is_transactional()
            || header.is_control()
            || self.has_ongoing_transaction(producer_id, header.producer_epoch)
        {
            return Ok(());
        }
        let current = self
            .verifications
            .get(&producer_id)
            .map(|entry| entry.guard);
        match (current, presented) {
            (Some(current), Some(presented)) if current == presented => Ok(()),
            _ => Err(SequenceError::Unverified { producer_id }),
        }
    }

    /// Forgets verifications started `expiration_ms` or longer before `now_ms` that never
    /// led to an append.
    pub fn expire_verifications(&mut self, now_ms: i64, expiration_ms: i64) {
        self.verifications
            .retain(|_, entry| now_ms.saturating_sub(entry.created_ms) < expiration_ms);
    }

    pub fn verification_count(&self) -> usize {
        self.verifications.len()
    }

    /// Open transactions as (producer id, first offset), oldest first.
    pub fn open_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.open_txns
            .iter()
            .map(|(offset, producer_id)| (*producer_id, *offset))
    }
}

/// A transactional batch at `first_offset` opens its producer's transaction if none is.
fn open_transaction(
    open_txns: &mut BTreeSet<(i64, i64)>,
    entry: &mut ProducerEntry,
    header: &BatchHeader,
    first_offset: i64,
) {
    if header.is_transactional() && entry.txn.txn_first_offset.is_none() {
        entry.txn.txn_first_offset = Some(first_offset);
        open_txns.insert((first_offset, header.producer_id));
    }
}

/// The idempotence check of a batch against its producer's remembered batches.
fn check_sequence(
    entry: &ProducerEntry,
    header: &BatchHeader,
) -> Result<SequenceCheck, SequenceError> {
    let producer_id = header.producer_id;
    if header.producer_epoch > entry.epoch {
        // A bumped epoch restarts the sequence at zero.
        return match header.base_sequence {
            0 => Ok(SequenceCheck::Accept),
            found => Err(SequenceError::OutOfOrder {
                producer_id,
                found,
                expected: 0,
            }),
        };
    }
    if let Some(batch) = entry.batches.iter().find(|batch| {
        batch.first_sequence == header.base_sequence
            && batch.last_sequence == header.last_sequence()
    }) {
        return Ok(SequenceCheck::Duplicate(*batch));
    }
    match entry.batches.back().map(|batch| batch.last_sequence) {
        Some(last) if !follows(last, header.base_sequence) => Err(SequenceError::OutOfOrder {
            producer_id,
            found: header.base_sequence,
            expected: next_sequence(last),
        }),
        // Known producer with no batches at this epoch (a marker bumped it): as after any
        // epoch bump, the sequence starts at zero.
        None if header.base_sequence != 0 => Err(SequenceError::OutOfOrder {
            producer_id,
            found: header.base_sequence,
            expected: 0,
        }),
        _ => Ok(SequenceCheck::Accept),
    }
}

impl ProducerStateTable {
    /// Every producer (unordered), for snapshots.
    pub fn producers(&self) -> impl Iterator<Item = ProducerView<'_>> {
        self.producers.iter().map(|(id, entry)| ProducerView {
            producer_id: *id,
            epoch: entry.epoch,
            txn: entry.txn,
            batches: &entry.batches,
            last_timestamp: entry.last_timestamp,
        })
    }

    /// What the log cleaner must keep for each producer remembered here (Kafka's
    /// `lastRecordsOfActiveProducers`): its last data batch, or, without one (a producer
    /// that wrote only markers since its epoch changed, or only a coordinator's batches),
    /// its markers at its epoch.
    pub fn log_tails(&self) -> ProducerTails {
        let tail = |entry: &ProducerEntry| ProducerTail {
            last_data_offset: entry.batches.back().map(|batch| batch.last_offset),
            epoch: entry.epoch,
        };
        let tails = self.producers.iter();
        tails.map(|(id, entry)| (*id, tail(entry))).collect()
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Restores one producer from a snapshot; keeps the newest [`BATCHES_REMEMBERED`].
    pub fn restore(
        &mut self,
        producer_id: i64,
        epoch: i16,
        txn: TxnFields,
        batches: &[BatchRecord],
    ) {
        let kept = &batches[batches.len().saturating_sub(BATCHES_REMEMBERED)..];
        // Before snapshots kept it, the last batch's max timestamp was the best guess
        // (`restore_last_timestamp` sets the kept one).
        let last_timestamp = kept
            .last()
            .map_or(NO_TIMESTAMP, |batch| batch.max_timestamp);
        let entry = ProducerEntry {
            epoch,
            batches: kept.iter().copied().collect(),
            txn,
            last_timestamp,
        };
        if let Some(old) = self.producers.insert(producer_id, entry)
            && let Some(first) = old.txn.txn_first_offset
        {
            self.open_txns.remove(&(first, producer_id));
        }
        if let Some(first) = txn.txn_first_offset {
            self.open_txns.insert((first, producer_id));
        }
    }
}

/// One producer as DescribeProducers reports it (Kafka's `UnifiedLog.activeProducers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence of its last remembered batch; NO_SEQUENCE (-1) for none.
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// First offset of its open transaction; -1 for none.
    pub txn_start_offset: i64,
}

/// Producer-id expiration (`producer.id.expiration.ms`) and the DescribeProducers view,
/// kept apart from the append checks above.
impl ProducerStateTable {
    /// Kafka's `removeExpiredProducers`: forgets every producer with no open transaction
    /// whose last timestamp is `expiration_ms` or more before `now_ms`. A producer with an
    /// open transaction is kept whatever its age: its first offset bounds the LSO, and only
    /// its marker may close it. Returns the ids removed.
    ///
    /// The age comes from the batches' own (producer-clock) timestamps, as in Kafka, so a
    /// producer whose clock runs far behind expires early; it then starts over as unknown
    /// and its next batch is accepted at any sequence.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> Vec<i64> {
        let mut removed: Vec<i64> = self
            .producers
            .iter()
            .filter(|(_, entry)| is_expired(entry, now_ms, expiration_ms))
            .map(|(producer_id, _)| *producer_id)
            .collect();
        removed.sort_unstable();
        for producer_id in &removed {
            let entry = self.producers.remove(producer_id);
            assert!(
                entry.is_some_and(|entry| entry.txn.txn_first_offset.is_none()),
                "only producers without an open transaction expire"
            );
        }
        removed
    }

    /// Sets the last timestamp of `producer_id` (known) to a marker's timestamp, or to the
    /// one a snapshot kept. Kafka's marker append updates it the same way.
    pub fn restore_last_timestamp(&mut self, producer_id: i64, timestamp: i64) {
        if let Some(entry) = self.producers.get_mut(&producer_id) {
            entry.last_timestamp = timestamp;
        }
    }

    /// Every producer as DescribeProducers shows it, by producer id.
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        let mut active: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(producer_id, entry)| ActiveProducer {
                producer_id: *producer_id,
                epoch: entry.epoch,
                last_sequence: entry
                    .batches
                    .back()
                    .map_or(NO_SEQUENCE, |b| b.last_sequence),
                last_timestamp: entry.last_timestamp,
                coordinator_epoch: entry.txn.coordinator_epoch,
                txn_start_offset: entry.txn.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        active.sort_unstable_by_key(|producer| producer.producer_id);
        active
    }
}

/// Kafka's `isProducerExpired`.
fn is_expired(entry: &ProducerEntry, now_ms: i64, expiration_ms: i64) -> bool {
    entry.txn.txn_first_offset.is_none()
        && now_ms.saturating_sub(entry.last_timestamp) >= expiration_ms
}

/// Sequences wrap from i32::MAX to 0, as in Kafka.
fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

fn follows(last: i32, first: i32) -> bool {
    first == next_sequence(last)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A v2 batch header of `records` records from `sequence` (tests of the table and its
    /// snapshots).
    pub(crate) fn batch(producer_id: i64, epoch: i16, sequence: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence: sequence,
            record_count: records,
        }
    }

    fn accept(table: &mut ProducerStateTable, header: BatchHeader, offset: i64) {
        assert_eq!(table.check(&header), Ok(SequenceCheck::Accept));
        table.update(&header, offset);
    }

    #[test]
    fn in_order_batches_are_accepted_and_retries_are_duplicates() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, batch(7, 0, 0, 3), 0);
        accept(&mut table, batch(7, 0, 3, 2), 3);
        match table.check(&batch(7, 0, 0, 3)) {
            Ok(SequenceCheck::Duplicate(record)) => {
                assert_eq!((record.first_offset, record.last_offset), (0, 2))
            }
            other => panic!("expected duplicate, got {other:?}"),
        }
        assert_eq!(
            table.check(&batch(7, 0, 10, 1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                found: 10,
                expected: 5
            })
        );
        assert_eq!(
            table.check(&batch(7, 0, 4, 1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                found: 4,
                expected: 5
            })
        );
    }

    #[test]
    fn epochs_fence_and_reset_sequences() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, batch(1, 2, 0, 1), 0);
        assert!(matches!(
            table.check(&batch(1, 1, 1, 1)),
            Err(SequenceError::StaleEpoch { .. })
        ));
        assert!(matches!(
            table.check(&batch(1, 3, 5, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        accept(&mut table, batch(1, 3, 0, 1), 1);
        accept(&mut table, batch(1, 3, 1, 1), 2);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerStateTable::default();
        for i in 0..6 {
            accept(&mut table, batch(9, 0, i, 1), i64::from(i));
        }
        assert!(matches!(
            table.check(&batch(9, 0, 0, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert!(matches!(
            table.check(&batch(9, 0, 1, 1)),
            Ok(SequenceCheck::Duplicate(_))
        ));
    }

    #[test]
    fn unknown_producers_and_plain_batches_pass() {
        let table = ProducerStateTable::default();
        assert_eq!(table.check(&batch(5, 0, 42, 1)), Ok(SequenceCheck::Accept));
        assert_eq!(
            table.check(&batch(-1, -1, -1, 1)),
            Ok(SequenceCheck::Accept)
        );
    }

    /// A transactional data batch header.
    pub(crate) fn txn_batch(
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        records: i32,
    ) -> BatchHeader {
        let mut header = batch(producer_id, epoch, sequence, records);
        header.attributes = 0x10;
        header
    }

    #[test]
    fn coordinator_batches_without_sequence_are_checked_by_epoch_only() {
        // TV1: one producer epoch for every transaction; each commits one offset with a
        // sequence-less batch. None may be taken for a retry of the one before.
        let mut table = ProducerStateTable::default();
        let mut offset = 0;
        for round in 0..3 {
            let header = txn_batch(7, 2, NO_SEQUENCE, 1);
            assert_eq!(table.check_coordinator(&header), Ok(()), "round {round}");
            table.update(&header, offset);
            assert_eq!(table.first_unstable_offset(), Some(offset));
            table.complete(7, 2, marker(true, 0), offset + 1);
            assert_eq!(table.first_unstable_offset(), None);
            offset += 2;
        }
        // Sequence-less batches are not remembered: nothing can match them as a retry, and
        // a client's batch without a sequence stays out of order.
        assert!(matches!(
            table.check(&txn_batch(7, 2, NO_SEQUENCE, 1)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        // A fenced producer's epoch is refused all the same.
        table.complete(7, 3, marker(false, 0), offset);
        assert!(matches!(
            table.check_coordinator(&txn_batch(7, 2, NO_SEQUENCE, 1)),
            Err(SequenceError::StaleEpoch { current: 3, .. })
        ));
    }

    fn marker(committed: bool, coordinator_epoch: i32) -> TxnMarker {
        TxnMarker {
            committed,
            coordinator_epoch,
        }
    }

    #[test]
    fn a_transaction_opens_at_its_first_batch_and_a_marker_closes_it() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, batch(3, 0, 0, 2), 0);
        assert_eq!(
            table.first_unstable_offset(),
            None,
            "plain batches are stable"
        );
        accept(&mut table, txn_batch(1, 0, 0, 2), 2);
        accept(&mut table, txn_batch(2, 0, 0, 1), 4);
        accept(&mut table, txn_batch(1, 0, 2, 3), 5);
        assert_eq!(table.first_unstable_offset(), Some(2));
        assert_eq!(
            table.open_transactions().collect::<Vec<_>>(),
            vec![(1, 2), (2, 4)]
        );
        assert_eq!(table.check_marker(1, 0, marker(false, 0)), Ok(()));
        let done = table.complete(1, 0, marker(false, 0), 8);
        assert_eq!(
            done,
            CompletedTxn {
                producer_id: 1,
                first_offset: 2,
                last_offset: 8,
                aborted: true
            }
        );
        assert_eq!(table.first_unstable_offset(), Some(4));
        assert_eq!(
            table.stable_offset_after(&done),
            4,
            "producer 2 is still open"
        );
        let done = table.complete(2, 0, marker(true, 0), 9);
        assert!(!done.aborted);
        assert_eq!((done.first_offset, done.last_offset), (4, 9));
        assert_eq!(table.first_unstable_offset(), None);
        assert_eq!(table.stable_offset_after(&done), 10);
        // The producer goes on at the same epoch: its sequence continues.
        accept(&mut table, txn_batch(1, 0, 5, 1), 10);
        assert_eq!(table.first_unstable_offset(), Some(10));
    }

    #[test]
    fn a_marker_without_an_open_transaction_completes_an_empty_one() {
        let mut table = ProducerStateTable::default();
        let done = table.complete(4, 2, marker(false, 1), 7);
        assert_eq!(
            (done.first_offset, done.last_offset, done.aborted),
            (7, 7, true)
        );
        assert_eq!(table.first_unstable_offset(), None);
        // Known now, with no batches at epoch 2: the sequence must start at 0.
        assert!(matches!(
            table.check(&txn_batch(4, 2, 3, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert_eq!(
            table.check(&txn_batch(4, 2, 0, 1)),
            Ok(SequenceCheck::Accept)
        );
    }

    #[test]
    fn a_plain_batch_inside_an_open_transaction_is_invalid_txn_state() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, txn_batch(1, 0, 0, 1), 0);
        assert_eq!(
            table.check(&batch(1, 0, 1, 1)),
            Err(SequenceError::InvalidTxnState { producer_id: 1 })
        );
        // A retry of the transactional batch is still a duplicate.
        assert!(matches!(
            table.check(&txn_batch(1, 0, 0, 1)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        table.complete(1, 0, marker(true, 0), 1);
        assert_eq!(table.check(&batch(1, 0, 1, 1)), Ok(SequenceCheck::Accept));
    }

    #[test]
    fn markers_fence_zombies_and_old_coordinators() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, txn_batch(1, 5, 0, 1), 0);
        // The coordinator aborts with a bumped epoch: the zombie at epoch 5 is fenced.
        assert_eq!(table.check_marker(1, 6, marker(false, 3)), Ok(()));
        table.complete(1, 6, marker(false, 3), 1);
        assert_eq!(
            table.check(&txn_batch(1, 5, 1, 1)),
            Err(SequenceError::StaleEpoch {
                producer_id: 1,
                found: 5,
                current: 6
            })
        );
        assert_eq!(
            table.check_marker(1, 5, marker(true, 3)),
            Err(SequenceError::StaleEpoch {
                producer_id: 1,
                found: 5,
                current: 6
            })
        );
        assert_eq!(
            table.check_marker(1, 6, marker(true, 2)),
            Err(SequenceError::CoordinatorFenced {
                producer_id: 1,
                found: 2,
                current: 3
            })
        );
        assert_eq!(table.check_marker(1, 6, marker(true, 3)), Ok(()));
        assert_eq!(table.check_marker(1, 7, marker(true, 4)), Ok(()));
        // Unknown producers take any marker.
        assert_eq!(table.check_marker(99, 0, marker(true, -1)), Ok(()));
    }

    #[test]
    fn restore_keeps_the_open_transaction_index_consistent() {
        let mut table = ProducerStateTable::default();
        let open = TxnFields {
            coordinator_epoch: 2,
            txn_first_offset: Some(40),
        };
        table.restore(1, 0, open, &[]);
        table.restore(
            2,
            0,
            TxnFields {
                coordinator_epoch: 2,
                txn_first_offset: Some(30),
            },
            &[],
        );
        assert_eq!(table.first_unstable_offset(), Some(30));
        table.restore(2, 0, TxnFields::default(), &[]);
        assert_eq!(table.first_unstable_offset(), Some(40));
        assert_eq!(
            table.check_marker(1, 0, marker(true, 1)),
            Err(SequenceError::CoordinatorFenced {
                producer_id: 1,
                found: 1,
                current: 2
            })
        );
    }

    fn guarded(guard: Option<VerificationGuard>) -> Verification {
        Verification::Guard(guard)
    }

    #[test]
    fn a_verified_batch_lands_only_with_the_current_guard() {
        let mut table = ProducerStateTable::default();
        let header = txn_batch(1, 0, 0, 1);
        // Never verified: refused (Kafka's SENTINEL guard).
        assert_eq!(
            table.check_verified(&header, guarded(None)),
            Err(SequenceError::Unverified { producer_id: 1 })
        );
        let guard = table.start_verification(1, 0, 0, 10).unwrap();
        assert!(guard.is_some());
        // A second request of the same producer joins the same verification.
        assert_eq!(table.start_verification(1, 0, 0, 11).unwrap(), guard);
        assert_eq!(table.check_verified(&header, guarded(guard)), Ok(()));
        // With verification off nothing is checked.
        assert_eq!(table.check_verified(&header, Verification::Off), Ok(()));
        accept(&mut table, header, 0);
        assert_eq!(table.verification_count(), 0, "the append clears it");
        // The transaction is open: no verification, no guard needed.
        assert_eq!(table.start_verification(1, 0, 1, 12), Ok(None));
        assert_eq!(
            table.check_verified(&txn_batch(1, 0, 1, 1), guarded(None)),
            Ok(())
        );
        // Plain batches are never checked.
        assert_eq!(
            table.check_verified(&batch(2, 0, 0, 1), guarded(None)),
            Ok(())
        );
    }

    #[test]
    fn a_late_produce_cannot_reopen_an_ended_transaction() {
        // KIP-890's hanging transaction: a produce verified for transaction N arrives
        // after N's abort marker; it must not open a transaction nobody will end.
        let mut table = ProducerStateTable::default();
        let late = table.start_verification(1, 0, 0, 0).unwrap();
        table.complete(1, 0, marker(false, 0), 0);
        assert_eq!(
            table.check_verified(&txn_batch(1, 0, 0, 1), guarded(late)),
            Err(SequenceError::Unverified { producer_id: 1 })
        );
        // Nor may it land in transaction N+1, verified under a new guard.
        let next = table.start_verification(1, 0, 0, 1).unwrap();
        assert_ne!(next, late);
        assert_eq!(
            table.check_verified(&txn_batch(1, 0, 0, 1), guarded(late)),
            Err(SequenceError::Unverified { producer_id: 1 })
        );
        assert_eq!(
            table.check_verified(&txn_batch(1, 0, 0, 1), guarded(next)),
            Ok(())
        );
    }

    #[test]
    fn a_guard_does_not_survive_a_rebuilt_table() {
        let mut table = ProducerStateTable::default();
        let old = table.start_verification(1, 0, 0, 0).unwrap();
        let mut rebuilt = ProducerStateTable::default();
        let new = rebuilt.start_verification(1, 0, 0, 0).unwrap();
        assert_ne!(old, new);
        assert!(
            rebuilt
                .check_verified(&txn_batch(1, 0, 0, 1), guarded(old))
                .is_err()
        );
    }

    #[test]
    fn a_transaction_at_another_epoch_is_not_ongoing() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, txn_batch(1, 3, 0, 1), 0);
        assert!(table.has_ongoing_transaction(1, 3));
        assert!(!table.has_ongoing_transaction(1, 4));
        assert!(table.start_verification(1, 4, 0, 0).unwrap().is_some());
        assert!(
            table
                .check_verified(&txn_batch(1, 4, 0, 1), guarded(None))
                .is_err()
        );
    }

    #[test]
    fn the_lowest_sequence_being_verified_goes_first() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, batch(1, 0, 0, 2), 0);
        table.start_verification(1, 0, 4, 0).unwrap();
        table.start_verification(1, 0, 2, 0).unwrap();
        table.start_verification(1, 0, 6, 0).unwrap();
        assert_eq!(
            table.check(&txn_batch(1, 0, 4, 2)),
            Err(SequenceError::OutOfOrder {
                producer_id: 1,
                found: 4,
                expected: 2
            })
        );
        assert_eq!(
            table.check(&txn_batch(1, 0, 2, 2)),
            Ok(SequenceCheck::Accept)
        );
        // A bumped epoch restarts from its own sequence.
        table.start_verification(1, 1, 0, 0).unwrap();
        assert_eq!(
            table.check(&txn_batch(1, 1, 0, 1)),
            Ok(SequenceCheck::Accept)
        );
    }

    #[test]
    fn verifications_expire_and_are_bounded() {
        let mut table = ProducerStateTable::default();
        table.start_verification(1, 0, 0, 0).unwrap();
        table.expire_verifications(VERIFICATION_EXPIRATION_MS - 1, VERIFICATION_EXPIRATION_MS);
        assert_eq!(table.verification_count(), 1);
        table.expire_verifications(VERIFICATION_EXPIRATION_MS, VERIFICATION_EXPIRATION_MS);
        assert_eq!(table.verification_count(), 0);
        let oldest = table.start_verification(0, 0, 0, 4).unwrap();
        for producer_id in 1..VERIFICATIONS_MAX as i64 {
            table.start_verification(producer_id, 0, 0, 5).unwrap();
        }
        // Full: a new producer evicts the oldest entry rather than being refused.
        assert!(table.start_verification(-7, 0, 0, 6).unwrap().is_some());
        assert_eq!(table.verification_count(), VERIFICATIONS_MAX);
        assert!(
            (table.check_verified(&txn_batch(0, 0, 0, 1), guarded(oldest))).is_err(),
            "the evicted producer verifies again"
        );
        // An existing producer still joins its verification.
        assert!(table.start_verification(3, 0, 0, 6).is_ok());
        let later = 6 + VERIFICATION_EXPIRATION_MS;
        assert!(table.start_verification(-8, 0, 0, later).unwrap().is_some());
        assert_eq!(table.verification_count(), 1, "expiry made room first");
    }

    #[test]
    fn a_zombie_at_an_older_epoch_does_not_block_the_open_transaction() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, txn_batch(1, 5, 100, 1), 0);
        // The zombie (epoch 4) is refused before it leaves a verification entry behind.
        assert!(matches!(
            table.start_verification(1, 4, 3, 1),
            Err(SequenceError::StaleEpoch {
                found: 4,
                current: 5,
                ..
            })
        ));
        assert_eq!(table.verification_count(), 0);
        assert_eq!(
            table.check(&txn_batch(1, 5, 101, 1)),
            Ok(SequenceCheck::Accept)
        );
    }

    fn at(mut header: BatchHeader, max_timestamp: i64) -> BatchHeader {
        header.max_timestamp = max_timestamp;
        header
    }

    #[test]
    fn idle_producers_expire_by_their_last_timestamp_and_open_transactions_stay() {
        const EXPIRATION_MS: i64 = 1_000;
        let mut table = ProducerStateTable::default();
        accept(&mut table, at(batch(1, 0, 0, 1), 1_000), 0);
        accept(&mut table, at(batch(2, 0, 0, 1), 1_500), 1);
        // Producer 3's transaction opened long ago and is still open.
        accept(&mut table, at(txn_batch(3, 0, 0, 1), 100), 2);
        // Producer 4 is known only from a marker written at 1_800.
        table.complete(4, 1, marker(true, 0), 3);
        table.restore_last_timestamp(4, 1_800);
        assert!(table.remove_expired(1_999, EXPIRATION_MS).is_empty());
        // Exactly the expiration: gone (Kafka's `>=`).
        assert_eq!(table.remove_expired(2_000, EXPIRATION_MS), vec![1]);
        assert_eq!(table.remove_expired(2_800, EXPIRATION_MS), vec![2, 4]);
        assert_eq!(table.producer_count(), 1);
        assert_eq!(table.first_unstable_offset(), Some(2));
        // Once its transaction ends, it ages from the marker's timestamp.
        table.complete(3, 0, marker(false, 0), 4);
        table.restore_last_timestamp(3, 5_000);
        assert!(table.remove_expired(5_999, EXPIRATION_MS).is_empty());
        assert_eq!(table.remove_expired(6_000, EXPIRATION_MS), vec![3]);
        assert_eq!(table.producer_count(), 0);
    }

    #[test]
    fn an_expired_producer_starts_over_as_unknown() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, at(batch(7, 2, 0, 5), 10), 0);
        assert!(matches!(
            table.check(&batch(7, 2, 9, 1)),
            Err(SequenceError::OutOfOrder { expected: 5, .. })
        ));
        assert_eq!(table.remove_expired(100, 50), vec![7]);
        // As in Kafka 4.0 (no epoch known): any sequence is accepted, and a retry of an
        // old batch is no longer recognised as a duplicate.
        assert_eq!(table.check(&batch(7, 2, 9, 1)), Ok(SequenceCheck::Accept));
        assert_eq!(table.check(&batch(7, 2, 0, 5)), Ok(SequenceCheck::Accept));
    }

    #[test]
    fn active_producers_report_sequences_timestamps_and_open_transactions() {
        let mut table = ProducerStateTable::default();
        accept(&mut table, at(batch(9, 1, 0, 3), 77), 0);
        accept(&mut table, at(txn_batch(5, 4, 0, 2), 88), 3);
        accept(&mut table, at(txn_batch(5, 4, 2, 2), 99), 5);
        table.complete(6, 2, marker(true, 3), 7);
        table.restore_last_timestamp(6, 111);
        let active = table.active_producers();
        let expected = [
            ActiveProducer {
                producer_id: 5,
                epoch: 4,
                last_sequence: 3,
                last_timestamp: 99,
                coordinator_epoch: NO_COORDINATOR_EPOCH,
                txn_start_offset: 3,
            },
            ActiveProducer {
                producer_id: 6,
                epoch: 2,
                last_sequence: NO_SEQUENCE,
                last_timestamp: 111,
                coordinator_epoch: 3,
                txn_start_offset: -1,
            },
            ActiveProducer {
                producer_id: 9,
                epoch: 1,
                last_sequence: 2,
                last_timestamp: 77,
                coordinator_epoch: NO_COORDINATOR_EPOCH,
                txn_start_offset: -1,
            },
        ];
        assert_eq!(active, expected);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert!(follows(i32::MAX, 0));
        assert!(!follows(i32::MAX, i32::MAX));
    }

    #[test]
    fn a_completed_transaction_holds_the_lso_until_the_high_watermark_passes_its_marker() {
        // T1 (producer 1) data 0-1, T2 (producer 2) data 2, T1's marker at 3, T2's at 4.
        let mut table = ProducerStateTable::default();
        table.update(&txn_batch(1, 0, 0, 2), 0);
        table.update(&txn_batch(2, 0, 0, 1), 2);
        table.complete(1, 0, marker(true, 0), 3);
        assert_eq!(
            table.first_unstable_offset(),
            Some(2),
            "only T2 is undecided"
        );
        // The marker at 3 is not below the high watermark: T1 still holds from 0.
        for high_watermark in [0, 2, 3] {
            assert_eq!(table.first_unstable_offset_at(high_watermark), Some(0));
        }
        assert_eq!(table.first_unstable_offset_at(4), Some(2), "T1 replicated");
        table.complete(2, 0, marker(false, 0), 4);
        assert_eq!(table.first_unstable_offset(), None);
        assert_eq!(
            table.first_unstable_offset_at(4),
            Some(2),
            "T2's marker at 4"
        );
        assert_eq!(table.first_unstable_offset_at(5), None);
        // The high watermark moving drops what it passed and nothing else.
        table.on_high_watermark_updated(4);
        assert_eq!(table.unreplicated_count(), 1);
        assert_eq!(table.first_unstable_offset_at(4), Some(2));
        table.on_high_watermark_updated(5);
        assert_eq!(table.unreplicated_count(), 0);
        assert_eq!(table.first_unstable_offset_at(0), None);
        // The aborted-transaction index's LSO counts open transactions only, as Kafka's
        // `lastStableOffset(completedTxn)` does.
        table.update(&txn_batch(3, 0, 0, 1), 5);
        let completed = table.complete(3, 0, marker(false, 0), 6);
        assert_eq!(table.stable_offset_after(&completed), 7);
        assert_eq!(table.first_unstable_offset_at(6), Some(5));
    }

    #[test]
    fn an_empty_transaction_holds_only_its_marker_offset() {
        let mut table = ProducerStateTable::default();
        table.complete(4, 0, marker(true, 0), 10);
        assert_eq!(table.first_unstable_offset_at(10), Some(10));
        assert_eq!(table.first_unstable_offset_at(11), None);
    }
}
