//! One hosted partition: its log, idempotent-producer state and high watermark.
//!
//! Produced records are validated (header, CRC, every record) before any lock is taken;
//! appends then take the write lock, so the producer-sequence check and the append are
//! one atomic step; reads take the read lock and copy whole batches out. Every append
//! (and, later, every high-watermark move) notifies `changed` so delayed fetches wake.
//!
//! Producer state is saved as snapshots beside the segments (`txn::producer_snapshot`)
//! when the log rolls and at clean shutdown; opening loads the newest usable one and reads
//! only the batch headers after it (and the markers among them), rebuilding the
//! aborted-transaction index (`log::txn_index`) from there too.
//!
//! Transactions: the last stable offset (LSO) is the high watermark, or the first offset
//! of the oldest open transaction if that is lower; read_committed fetches stop there.
//! Markers are appended by [`Partition::append_txn_marker`] on the leader and replicated
//! like any batch; every path that adds batches (leader append, follower append, the
//! rebuild on open) applies them to producer state and the index the same way
//! (`track_batches`), so a new leader has the same open transactions and index.
//!
//! Leadership follows the metadata image: the reconciler calls [`Partition::become_leader`]
//! or [`Partition::become_follower`] when the image's leader epoch or leader changes. New
//! appends carry the current epoch, and the leader-epoch cache (`log::leader_epochs`)
//! records each epoch's start offset. Its checkpoint file is published off the append
//! path by a background writer (`log::epoch_checkpoint`, Kafka's KAFKA-15046), which
//! keeps only the newest version of each partition's cache; versions order the writes so
//! a slower one never overwrites a newer cache with an older one. The log publishes what
//! is pending before it creates a segment; truncations publish at once, and clean
//! shutdown flushes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockWriteGuard, Weak};

use bytes::Bytes;
use tokio::sync::Notify;
use uuid::Uuid;

use super::ReplicaError;
use super::leader_state::LeaderState;
use super::waits::{ChangeWatcher, SessionWatch, Watchers};
use crate::controller::image::NO_LEADER;
use crate::log::txn_index::AbortedTxn;
use crate::log::{
    self, BatchError, BatchHeader, CleanStats, EpochCheckpoint, EpochCheckpointWriter,
    LastShutdown, LeaderEpochCache, LogConfig, LogError, PartitionLog, RecordPolicy, RecordSlices,
    recompress, validate_batches, validate_records,
};
use crate::metrics::TopicMetrics;
use crate::txn::marker::{encode_marker_batch, parse_marker};
use crate::txn::producer_snapshot;
use crate::txn::producer_state::{
    ActiveProducer, ProducerStateTable, SequenceCheck, TxnMarker, Verification, VerificationGuard,
};
use crate::types::{NodeId, TopicPartition, kafka_uuid_string};

/// Kafka's file beside the segments that binds a partition directory to a topic id, so a
/// topic deleted and re-created under the same name never reuses old data.
const PARTITION_METADATA_FILE: &str = "partition.metadata";

pub struct Partition {
    pub tp: TopicPartition,
    pub topic_id: Uuid,
    state: RwLock<PartitionState>,
    /// Counts the times `state` may have changed (see [`StateWrite`]).
    changes: AtomicU64,
    /// This partition's number among those opened in the process, so a version seen on a
    /// partition since replaced (deleted and created again) does not match its
    /// successor's.
    number: u64,
    /// Woken by every change a read could see: acks=all waits.
    changed: Notify,
    /// Woken by the same changes, each once: parked fetches (`waits`); and the fetch
    /// sessions standing registered, marked at every version move.
    watchers: Mutex<Watchers>,
    /// Set while appends fail on storage, so the fault is logged when it starts and when
    /// it clears rather than once per refused produce. Shared with `epoch_checkpoint`,
    /// whose background failures are reported the same way.
    storage_fault: Arc<AtomicBool>,
    /// Held by a cleaning pass for its whole run (mostly without `state`'s lock), so that
    /// deletion can wait for it to stop before removing the directory.
    cleaning: Mutex<()>,
    /// Set by `delete`: a running cleaning pass stops at its next batch.
    deleting: AtomicBool,
    /// The leader-epoch checkpoint file: changes to `epochs` go to it by version, in the
    /// background or (truncations) at once; `delete` closes it.
    epoch_checkpoint: Arc<EpochCheckpoint>,
    /// This topic's byte and message counters, looked up once per partition (not per
    /// request) on first use.
    topic_metrics: OnceLock<Arc<TopicMetrics>>,
}

struct PartitionState {
    log: Option<PartitionLog>,
    producers: ProducerStateTable,
    leader_epoch: i32,
    /// True while the image names this broker the leader (`become_leader`).
    leads: bool,
    /// The leader the image names ([`NO_LEADER`] for none); this broker while `leads`.
    leader_id: NodeId,
    /// The image's partition epoch last applied (it rises with every leader or ISR change).
    partition_epoch: i32,
    /// The followers' progress and the ISR, while this broker leads.
    replication: Option<LeaderState>,
    /// Epoch -> start offset of the batches in the log.
    epochs: LeaderEpochCache,
    /// Bumped on every change to `epochs`; see `epoch_checkpoint`.
    epochs_version: u64,
    high_watermark: i64,
    /// The log end offset as the last [`StateWrite`] left it (every change to the log goes
    /// through one): what recording a follower fetch compares with, for every partition of
    /// every follower fetch, without reaching into the active segment, whose cache miss
    /// was the larger part of that cost. Stale inside a write guard: only code under a
    /// plain guard that leaves the log alone may use it.
    log_end_released: i64,
    last_flush_ms: i64,
    /// `producer.id.expiration.ms` for the producers a snapshot brings back at a reload
    /// (Kafka's `loadFromSnapshot` skips the expired); `None` keeps them all.
    producer_expiration_ms: Option<i64>,
}

/// When [`Partition::apply_leadership`] publishes the leader-epoch checkpoint once it has
/// recorded a new epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// By the background writer (`log::epoch_checkpoint`; the log publishes it first if it
    /// needs a new segment), which reports its own failures: no fsync on the reconciler for
    /// each of many partitions changing leader.
    Background,
    /// Now, durably, after the state lock is released: for a partition just opened, whose
    /// open is synchronous too. Opening is not the produce path, and the opener reports a
    /// failure (no descriptor left) in order with the open's own, never a background write
    /// racing the next partition's open for descriptors.
    AtOnce,
}

/// A changed leader-epoch cache to publish, at its version.
struct EpochsToWrite {
    version: u64,
    epochs: LeaderEpochCache,
}

/// A partition's change version ([`Partition::version`]): which partition object, and how
/// many changes it had. Two 64-bit counters, so neither wraps in a process's life (one
/// word split in two would, after 2^24 partitions opened or 2^40 changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionVersion {
    partition: u64,
    changes: u64,
}

impl PartitionVersion {
    /// Tests: the version of partition 0 after `changes` changes.
    #[cfg(test)]
    pub fn after_changes(changes: u64) -> PartitionVersion {
        PartitionVersion {
            partition: 0,
            changes,
        }
    }
}

/// The partitions numbered so far in this process (for [`Partition::version`]).
static PARTITIONS_NUMBERED: AtomicU64 = AtomicU64::new(0);

/// The write lock on a partition's state: its version moves when the guard drops, still
/// under the lock, so a reader that saw a version under the read lock saw the state it
/// stands for. Every change goes through one, so an unchanged version means nothing
/// changed (fetches skip re-reading such partitions); a guard that changed nothing only
/// costs a needless re-read.
struct StateWrite<'a> {
    guard: RwLockWriteGuard<'a, PartitionState>,
    changes: &'a AtomicU64,
    /// Their standing fetch sessions are marked at every version move.
    watchers: &'a Mutex<Watchers>,
}

impl std::ops::Deref for StateWrite<'_> {
    type Target = PartitionState;
    fn deref(&self) -> &PartitionState {
        &self.guard
    }
}

impl std::ops::DerefMut for StateWrite<'_> {
    fn deref_mut(&mut self) -> &mut PartitionState {
        &mut self.guard
    }
}

impl Drop for StateWrite<'_> {
    fn drop(&mut self) {
        let state = &mut *self.guard;
        state.log_end_released = state.log.as_ref().map_or(-1, PartitionLog::log_end_offset);
        // Release: paired with the Acquire loads, though readers that act on a version
        // read it under the read lock, which orders it already.
        self.changes.fetch_add(1, Ordering::Release);
        mark_standing(self.watchers);
    }
}

/// Marks the standing fetch sessions of a partition whose version just moved: after the
/// move, so a session that drains its marks and then reads sees the new version.
fn mark_standing(watchers: &Mutex<Watchers>) {
    (watchers.lock().unwrap_or_else(|p| p.into_inner())).mark_standing();
}

impl PartitionState {
    /// True while this broker follows `leader` at `leader_epoch`: what a fetcher checks
    /// before it applies anything that leader sent.
    fn follows(&self, (leader, leader_epoch): (NodeId, i32)) -> bool {
        !self.leads && self.leader_id == leader && self.leader_epoch == leader_epoch
    }

    /// In-sync replicas as the controller has them (1 for a leader without followers).
    fn in_sync_count(&self) -> usize {
        self.replication.as_ref().map_or(1, |r| r.isr().len())
    }

    /// A leader moves its high watermark up to where the ISR allows, never down. True if
    /// it moved.
    fn advance_high_watermark(&mut self) -> bool {
        let Some(log_end) = self.log.as_ref().map(PartitionLog::log_end_offset) else {
            return false;
        };
        self.advance_high_watermark_at(log_end)
    }

    /// [`Self::advance_high_watermark`] with the log ending at `log_end`.
    fn advance_high_watermark_at(&mut self, log_end: i64) -> bool {
        let (Some(_), Some(replication)) = (self.log.as_ref(), self.replication.as_ref()) else {
            return false;
        };
        let candidate = replication.high_watermark(log_end);
        if candidate > self.high_watermark {
            self.set_high_watermark(candidate);
            true
        } else {
            false
        }
    }

    /// Every move of the high watermark goes through here: the completed transactions
    /// whose markers it passed stop holding the LSO (Kafka's `onHighWatermarkUpdated`).
    fn set_high_watermark(&mut self, high_watermark: i64) {
        self.high_watermark = high_watermark;
        self.producers.on_high_watermark_updated(high_watermark);
    }

    /// The last stable offset: nothing at or above it may reach a read_committed consumer.
    /// A transaction whose marker is not below the high watermark yet still counts as
    /// unstable: were the marker lost with this leader, the transaction would be open again
    /// on the next one, below an LSO already handed out.
    fn last_stable_offset(&self) -> i64 {
        let first_unstable = (self.producers)
            .first_unstable_offset_at(self.high_watermark)
            .unwrap_or(i64::MAX);
        // Retention may delete the segment an open transaction began in; the LSO never
        // goes below the log start (Kafka's maybeIncrementFirstUnstableOffset), or a
        // consumer reset to it would loop on OFFSET_OUT_OF_RANGE.
        let log_start = self.log.as_ref().map_or(0, |log| log.log_start_offset());
        self.high_watermark.min(first_unstable.max(log_start))
    }

    fn min_insync(&self) -> usize {
        self.log
            .as_ref()
            .map_or(1, |log| log.config().min_insync_replicas)
    }

    /// Where the current leader epoch starts in the log (the log end if it has no batch).
    fn current_epoch_start(&self) -> i64 {
        let log_end = self.log.as_ref().map_or(0, PartitionLog::log_end_offset);
        self.current_epoch_start_at(log_end)
    }

    /// [`Self::current_epoch_start`] with the log ending at `log_end`.
    fn current_epoch_start_at(&self, log_end: i64) -> i64 {
        match self.epochs.entries().last() {
            Some(entry) if entry.epoch == self.leader_epoch => entry.start_offset,
            _ => log_end,
        }
    }

    /// Notes a change to `epochs`: what to write to the checkpoint, if the log is open.
    fn epochs_changed(&mut self) -> Option<EpochsToWrite> {
        self.epochs_version += 1;
        self.log.as_ref()?;
        Some(EpochsToWrite {
            version: self.epochs_version,
            epochs: self.epochs.clone(),
        })
    }
}

/// What a produce to this partition returns to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// The offset after the appended records (after the log end for a duplicate, whose
    /// original may not be committed yet): acks=all waits for the high watermark to get
    /// here, at `leader_epoch`.
    pub end_offset: i64,
    pub leader_epoch: i32,
}

/// How many replicas must have a produce before it is answered (the request's `acks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequiredAcks {
    /// acks=0 or 1: the leader's append is enough; `min.insync.replicas` does not apply.
    Leader,
    /// acks=-1: every ISR member, and at least `min.insync.replicas` of them.
    All,
}

/// The image's view of one partition, as the reconciler hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
}

/// An ISR change a leader decided on, to send to the controller (AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<NodeId>,
    /// The ISR's size when this was proposed, to count the committed change as a shrink
    /// or an expansion (`/metrics`).
    pub isr_size_before: usize,
    /// The broker epoch each added replica fetched with (KIP-903), for the controller to
    /// refuse a replica that restarted since.
    pub broker_epochs: Vec<(NodeId, i64)>,
}

/// A fetching follower's broker as the leader sees it: the broker epoch it fetched with
/// (-1 if it sent none) and whether the controller would let it join the ISR now.
#[derive(Clone, Copy, Debug)]
pub struct FollowerBroker {
    pub epoch: i64,
    pub eligible: bool,
}

impl FollowerBroker {
    /// Test shorthand: an eligible broker that sent no epoch.
    #[cfg(test)]
    pub const ELIGIBLE: FollowerBroker = FollowerBroker {
        epoch: -1,
        eligible: true,
    };
}

/// What became of an ISR change sent to the controller.
#[derive(Clone, Copy, Debug)]
pub enum IsrAnswer<'a> {
    /// Applied (or already applied): the partition as it now stands.
    Changed {
        isr: &'a [NodeId],
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// Refused for good (another leader epoch, an ineligible replica): decide again.
    Refused,
    /// Not known to have failed: the call timed out (the command may still commit), or it
    /// was built on an older partition epoch than the controller's (a newer image is on
    /// its way). The change stays pending, so the high watermark keeps counting an added
    /// replica the controller may already count, until an image or a retry settles it.
    Unsettled,
}

/// What applying the image's view changed, so the caller can start or stop fetching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeadershipChange {
    Unchanged,
    /// Same leader and leader epoch, a newer ISR.
    Isr,
    BecameLeader,
    /// Following `leader` (maybe [`NO_LEADER`]) at a new leader epoch.
    BecameFollower,
}

/// Raw batches plus the offsets a fetch response reports beside them. The batches are in
/// memory (`Bytes`) or, for a fetch, maybe still in the segment files ([`ReadRecords`]).
#[derive(Clone, Debug)]
pub struct PartitionRead<R = Bytes> {
    pub records: R,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// read_committed only: the aborted transactions with records in what was read.
    pub aborted_transactions: Vec<AbortedTxn>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// The partition's [`Partition::version`] the read saw.
    pub version: PartitionVersion,
}

/// The records of a fetch's read: read into memory, or left in the segment files for the
/// response to send from there (see `log::file_slice`).
#[derive(Clone, Debug)]
pub enum ReadRecords {
    Bytes(Bytes),
    Slices(RecordSlices),
}

impl ReadRecords {
    pub fn len(&self) -> usize {
        match self {
            ReadRecords::Bytes(bytes) => bytes.len(),
            ReadRecords::Slices(slices) => slices.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a read stops: before the first batch at or above this offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBound {
    /// A consumer at read_uncommitted.
    HighWatermark,
    /// A consumer at read_committed, which is also told the aborted transactions.
    LastStableOffset,
    /// A follower, which copies what consumers may not see yet.
    LogEnd,
}

/// Kafka's `IsrShrinksPerSec` / `IsrExpandsPerSec`: an ISR change this leader proposed
/// and the controller committed (counted when the answer comes, whether or not the new
/// image reached the partition first).
pub fn count_isr_change(before: usize, after: usize) {
    let registry = crate::metrics::registry();
    let counter = match after.cmp(&before) {
        std::cmp::Ordering::Less => &registry.isr_shrinks,
        std::cmp::Ordering::Greater => &registry.isr_expands,
        std::cmp::Ordering::Equal => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Partition {
    /// Opens (recovering if needed after an unclean shutdown) the log under `dir`, loads
    /// producer state and the leader-epoch cache, and binds the directory to `topic_id`.
    /// The partition starts as a follower at `leader_epoch`: the caller makes it leader.
    /// Everything in the log counts as committed (the high watermark at the log end): for
    /// a log that never had other replicas. See [`Partition::open_at`].
    pub fn open(
        tp: TopicPartition,
        topic_id: Uuid,
        dir: PathBuf,
        config: LogConfig,
        leader_epoch: i32,
        now_ms: i64,
        last_shutdown: LastShutdown,
    ) -> Result<Partition, ReplicaError> {
        let opened = (tp, topic_id, dir, config);
        Partition::open_at(opened, leader_epoch, i64::MAX, now_ms, last_shutdown)
    }

    /// `open` with the checkpointed high watermark (clamped to the log); a leader moves it
    /// up as its in-sync replicas confirm, a follower as its leader reports.
    pub fn open_at(
        opened: (TopicPartition, Uuid, PathBuf, LogConfig),
        leader_epoch: i32,
        high_watermark: i64,
        now_ms: i64,
        last_shutdown: LastShutdown,
    ) -> Result<Partition, ReplicaError> {
        let at = (high_watermark, now_ms);
        Partition::open_expiring(opened, leader_epoch, at, None, last_shutdown)
    }

    /// `open_at` (`at` is the high watermark and the time) that drops the producers a
    /// snapshot brings back idle for `producer_expiration_ms` or more, at this open and at
    /// every reload after a truncation, as Kafka's `loadFromSnapshot` does: they would only
    /// linger until the next expiration check.
    pub fn open_expiring(
        (tp, topic_id, dir, config): (TopicPartition, Uuid, PathBuf, LogConfig),
        leader_epoch: i32,
        (high_watermark, now_ms): (i64, i64),
        producer_expiration_ms: Option<i64>,
        last_shutdown: LastShutdown,
    ) -> Result<Partition, ReplicaError> {
        let mut log = PartitionLog::open_after(dir.clone(), config, now_ms, last_shutdown)?;
        write_partition_metadata(&dir, &topic_id)?;
        let expiry = producer_expiration_ms.map(|expiration_ms| (now_ms, expiration_ms));
        let mut producers = load_producer_state(&tp, &mut log, expiry)?;
        let epochs = load_leader_epochs(&log)?;
        let storage_fault = Arc::new(AtomicBool::new(false));
        let epoch_checkpoint = open_epoch_checkpoint(&tp, log.dir(), &storage_fault);
        log.publish_epochs_before_new_segments(Arc::clone(&epoch_checkpoint));
        let high_watermark = high_watermark.clamp(log.log_start_offset(), log.log_end_offset());
        producers.on_high_watermark_updated(high_watermark);
        let log_end_released = log.log_end_offset();
        let state = PartitionState {
            log: Some(log),
            producers,
            leader_epoch,
            leads: false,
            leader_id: NO_LEADER,
            partition_epoch: -1,
            replication: None,
            epochs,
            epochs_version: 0,
            high_watermark,
            log_end_released,
            last_flush_ms: now_ms,
            producer_expiration_ms,
        };
        Ok(Partition {
            tp,
            topic_id,
            state: RwLock::new(state),
            changes: AtomicU64::new(0),
            number: PARTITIONS_NUMBERED.fetch_add(1, Ordering::Relaxed),
            changed: Notify::new(),
            watchers: Mutex::new(Watchers::default()),
            storage_fault,
            cleaning: Mutex::new(()),
            deleting: AtomicBool::new(false),
            epoch_checkpoint,
            topic_metrics: OnceLock::new(),
        })
    }

    /// The topic's counters in `/metrics` (bytes and messages in, bytes out).
    pub fn topic_metrics(&self) -> &TopicMetrics {
        self.topic_metrics
            .get_or_init(|| crate::metrics::registry().topic(&self.tp.topic))
    }

    /// (bytes, segments) of the log, for `/metrics`; `None` once it is deleted.
    pub fn log_stats(&self) -> Option<(u64, usize)> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref()?;
        Some((log.size_bytes(), log.segment_count()))
    }

    /// Marks a storage fault on the append path; true if this starts it (log it then).
    pub fn begin_storage_fault(&self) -> bool {
        !self.storage_fault.swap(true, Ordering::Relaxed)
    }

    /// Marks a successful append; true if it ends a storage fault (log that once).
    pub fn end_storage_fault(&self) -> bool {
        // The load keeps the common case (no fault) free of a write to a shared line.
        self.storage_fault.load(Ordering::Relaxed)
            && self.storage_fault.swap(false, Ordering::Relaxed)
    }

    /// Logs a failed background operation (flush, retention, compaction) at ERROR only when
    /// it starts a storage fault, at debug while the fault lasts: a full disk must not
    /// print one line per partition per tick. A successful append ends the fault.
    pub fn report_background_failure(&self, operation: &str, error: &ReplicaError) {
        report_failure(&self.tp, &self.storage_fault, operation, error);
    }

    /// Holds the partition's state lock until the returned guard drops, so appends block
    /// as on a stalled disk (tests of callers that must not wait behind a slow write).
    #[cfg(test)]
    pub(crate) fn stall_appends(&self) -> impl Drop + '_ {
        self.write_state()
    }

    /// The state's write lock; every change to the state goes through it (see
    /// [`StateWrite`]).
    fn write_state(&self) -> StateWrite<'_> {
        StateWrite {
            guard: self.state.write().unwrap_or_else(|p| p.into_inner()),
            changes: &self.changes,
            watchers: &self.watchers,
        }
    }

    /// Moves the version for a change made under a plain write guard (`guard` proves the
    /// lock is held).
    fn changed_under(&self, guard: &RwLockWriteGuard<'_, PartitionState>) {
        let _ = guard;
        self.changes.fetch_add(1, Ordering::Release);
        mark_standing(&self.watchers);
    }

    /// The partition's change version now: equal to one read earlier means nothing about
    /// the partition (log, offsets, leadership, ISR) changed since, except the followers'
    /// progress a leader records, which no read returns.
    pub fn version(&self) -> PartitionVersion {
        PartitionVersion {
            partition: self.number,
            changes: self.changes.load(Ordering::Acquire),
        }
    }

    /// Wakes `watcher` at this partition's next change (once): new data readable, the
    /// high watermark, log start or leadership moved, or the partition deleted.
    pub fn watch(&self, watcher: &Arc<ChangeWatcher>) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.push(Arc::downgrade(watcher));
    }

    /// This partition's number among those opened in the process: a partition deleted and
    /// opened again under the same name has another.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Marks `slot` of a fetch session's `watch` dirty at every change of this partition's
    /// version from now on, until the session forgets the slot (see `waits`).
    pub fn stand(&self, watch: &Arc<SessionWatch>, slot: u64) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.stand(watch, slot);
    }

    /// Wakes everything waiting for this partition to change.
    fn notify_changed(&self) {
        self.changed.notify_waiters();
        let watchers = {
            let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
            watchers.wake_standing();
            watchers.take()
        };
        for watcher in watchers.iter().filter_map(Weak::upgrade) {
            watcher.wake();
        }
    }

    /// A leader's append with acks=all rules (the group coordinator's writes).
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<ProduceOutcome, ReplicaError> {
        self.append_with(records, now_ms, RequiredAcks::All)
    }

    /// Validates `records` (one or more v2 batches), checks producer sequences and appends
    /// at the current leader epoch. Only the leader appends this way; with acks=all the
    /// ISR must hold at least `min.insync.replicas` replicas first (Kafka checks before
    /// the append and again when the records are committed, see `wait_committed`).
    pub fn append_with(
        &self,
        records: &Bytes,
        now_ms: i64,
        acks: RequiredAcks,
    ) -> Result<ProduceOutcome, ReplicaError> {
        self.append_verified(records, now_ms, acks, Verification::Off)
    }

    /// [`Self::append_with`] for a produce whose transactional batches were verified with
    /// the transaction coordinator under `verification` (KIP-890): the guard is checked
    /// under the same lock as the append.
    pub fn append_verified(
        &self,
        records: &Bytes,
        now_ms: i64,
        acks: RequiredAcks,
        verification: Verification,
    ) -> Result<ProduceOutcome, ReplicaError> {
        let (records, headers) = self.validate(records, now_ms)?;
        let origin = Origin::Client(verification);
        self.append_checked(&records, &headers, now_ms, acks, origin)
    }

    /// Starts (or joins) the verification of `producer_id`'s transaction before its
    /// transactional batch at `epoch`/`sequence` is appended here; `None` when its
    /// transaction is open here already. Only the leader verifies.
    pub fn start_verification(
        &self,
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        now_ms: i64,
    ) -> Result<Option<VerificationGuard>, ReplicaError> {
        let mut state = self.write_state();
        if !state.leads {
            return Err(ReplicaError::NotLeader);
        }
        if state.log.is_none() {
            return Err(ReplicaError::Deleted);
        }
        Ok(state
            .producers
            .start_verification(producer_id, epoch, sequence, now_ms)?)
    }

    /// A coordinator's transactional write for a producer (the group coordinator's
    /// TxnOffsetCommit batch, with acks=all rules): validated like a produce, but its
    /// batches carry no sequence, so only the producer epoch is checked (Kafka's
    /// `AppendOrigin.COORDINATOR`).
    pub fn append_coordinator(
        &self,
        records: &Bytes,
        now_ms: i64,
        verification: Verification,
    ) -> Result<ProduceOutcome, ReplicaError> {
        let (records, headers) = self.validate(records, now_ms)?;
        self.append_checked(
            &records,
            &headers,
            now_ms,
            RequiredAcks::All,
            Origin::Coordinator(verification),
        )
    }

    /// Appends a commit or abort marker for `producer_id` at `producer_epoch` as the
    /// leader, at the current leader epoch with acks=all rules (WriteTxnMarkers); the
    /// caller waits for `end_offset` to commit. The marker is checked against producer
    /// state first: an older producer epoch is INVALID_PRODUCER_EPOCH, an older
    /// coordinator epoch TRANSACTION_COORDINATOR_FENCED.
    pub fn append_txn_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: TxnMarker,
        now_ms: i64,
    ) -> Result<ProduceOutcome, ReplicaError> {
        let records = encode_marker_batch(producer_id, producer_epoch, marker, now_ms);
        let headers = validate_batches(&records, u32::MAX)?;
        self.append_checked(
            &records,
            &headers,
            now_ms,
            RequiredAcks::All,
            Origin::Marker(marker),
        )
    }

    /// The leader's append of validated `records`, checked against producer state as
    /// `origin` requires.
    fn append_checked(
        &self,
        records: &Bytes,
        headers: &[BatchHeader],
        now_ms: i64,
        acks: RequiredAcks,
        origin: Origin,
    ) -> Result<ProduceOutcome, ReplicaError> {
        let marker = match origin {
            Origin::Marker(marker) => Some(marker),
            Origin::Client(_) | Origin::Coordinator(_) => None,
        };
        let outcome = {
            let mut state = self.write_state();
            let state = &mut *state;
            if !state.leads {
                return Err(ReplicaError::NotLeader);
            }
            let in_sync = state.in_sync_count();
            let log = state.log.as_mut().ok_or(ReplicaError::Deleted)?;
            let min = log.config().min_insync_replicas;
            if acks == RequiredAcks::All && in_sync < min {
                return Err(ReplicaError::NotEnoughReplicas { isr: in_sync, min });
            }
            let duplicate = match origin {
                Origin::Marker(marker) => {
                    let header = &headers[0];
                    let (producer_id, epoch) = (header.producer_id, header.producer_epoch);
                    state.producers.check_marker(producer_id, epoch, marker)?;
                    None
                }
                Origin::Coordinator(verification) => {
                    for header in headers {
                        state.producers.check_coordinator(header)?;
                        state.producers.check_verified(header, verification)?;
                    }
                    None
                }
                Origin::Client(verification) => {
                    let duplicate = check_sequences(&state.producers, headers)?;
                    // A retry of batches already in the log is answered whatever the
                    // guard: they were verified when they were appended.
                    if duplicate.is_none() {
                        for header in headers {
                            state.producers.check_verified(header, verification)?;
                        }
                    }
                    duplicate
                }
            };
            if let Some(duplicate) = duplicate {
                return Ok(ProduceOutcome {
                    base_offset: duplicate,
                    log_append_time_ms: -1,
                    log_start_offset: log.log_start_offset(),
                    end_offset: log.log_end_offset(),
                    leader_epoch: state.leader_epoch,
                });
            }
            let active_base_offset = log.active_base_offset();
            // The log writes stamped copies of the headers beside the request's batch bodies.
            let info = log.append(records, headers, state.leader_epoch, now_ms)?;
            if log.active_base_offset() != active_base_offset {
                // Rolled before this append's batches: the table is the state as of the new
                // segment's base offset.
                assert_eq!(log.active_base_offset(), info.first_offset);
                save_snapshot(log.dir(), info.first_offset, &state.producers);
            }
            let mut next_offset = info.first_offset;
            let mut appended = Vec::with_capacity(headers.len());
            for header in headers {
                let mut stamped = *header;
                stamped.base_offset = next_offset;
                appended.push((stamped, marker));
                next_offset += i64::from(header.last_offset_delta) + 1;
            }
            track_appended(&self.tp, &mut state.producers, log, &appended);
            let log_end = log.log_end_offset();
            assert_eq!(next_offset, log_end, "offsets assigned != log end");
            state.advance_high_watermark();
            // Normally recorded by `become_leader` already; this covers the rest.
            if state.epochs.assign(state.leader_epoch, info.first_offset) {
                self.schedule_epochs(state.epochs_changed());
            }
            ProduceOutcome {
                base_offset: info.first_offset,
                log_append_time_ms: info.log_append_time_ms,
                log_start_offset: info.log_start_offset,
                end_offset: log_end,
                leader_epoch: state.leader_epoch,
            }
        };
        self.notify_changed();
        Ok(outcome)
    }

    /// A follower's append of batches fetched from the leader, kept as they are (offsets,
    /// epochs, producer ids): they must start at this log's end. Producer state and the
    /// leader-epoch cache follow the batches, so this replica can lead with them later.
    pub fn append_replicated(
        &self,
        records: &Bytes,
        source: (NodeId, i32),
        now_ms: i64,
    ) -> Result<(), ReplicaError> {
        // Checked as a produce is (CRC, framing), not against max.message.bytes: the
        // leader accepted these under the topic's rules already.
        let headers = crate::log::validate_replicated_batches(records)?;
        let batches = with_markers(records, &headers)?;
        {
            let mut state = self.write_state();
            let state = &mut *state;
            // Fetched for another leadership than the current one: drop it.
            if !state.follows(source) {
                return Err(ReplicaError::NotLeader);
            }
            let log = state.log.as_mut().ok_or(ReplicaError::Deleted)?;
            let active_base_offset = log.active_base_offset();
            log.append_replicated(records, &headers, now_ms)?;
            if log.active_base_offset() != active_base_offset {
                // Rolled before these batches: the table is the state as of the new base.
                save_snapshot(log.dir(), log.active_base_offset(), &state.producers);
            }
            track_appended(&self.tp, &mut state.producers, log, &batches);
            let mut epochs_changed = false;
            for header in &headers {
                epochs_changed |= state
                    .epochs
                    .assign(header.partition_leader_epoch, header.base_offset);
            }
            if epochs_changed {
                self.schedule_epochs(state.epochs_changed());
            }
        }
        Ok(())
    }

    /// A follower learns the leader's high watermark: its own is that, up to its log end.
    pub fn follow_high_watermark(&self, leader_high_watermark: i64, source: (NodeId, i32)) {
        let moved = {
            let mut state = self.write_state();
            let Some(log_end) = state.log.as_ref().map(PartitionLog::log_end_offset) else {
                return;
            };
            let high_watermark = leader_high_watermark.min(log_end);
            let moved = state.follows(source) && high_watermark > state.high_watermark;
            if moved {
                state.set_high_watermark(high_watermark);
            }
            moved
        };
        if moved {
            self.notify_changed();
        }
    }

    /// Everything about `records` that does not depend on the log's state: header, CRC and
    /// a walk of every record under the topic's rules. It runs before the write lock is
    /// taken, so a large compressed batch does not stall other producers and fetches of
    /// this partition; only the sequence check and the append stay under the lock.
    /// Returns the records to store: as sent, or re-encoded for the topic's
    /// `compression.type`.
    fn validate(
        &self,
        records: &Bytes,
        now_ms: i64,
    ) -> Result<(Bytes, Vec<BatchHeader>), ReplicaError> {
        let config = self.config().ok_or(ReplicaError::Deleted)?;
        let headers = validate_batches(records, config.max_message_bytes)?;
        check_produce_shape(&headers)?;
        let policy = RecordPolicy::new(&config, &self.tp, now_ms);
        validate_records(records, &headers, &policy, config.decompressed_bytes_max())?;
        match recompress(records, &headers[0], config.compression)? {
            None => Ok((records.clone(), headers)),
            Some(stored) => {
                // The re-encoded batch may be larger (say, `uncompressed`): Kafka checks
                // max.message.bytes again on what it stores.
                let stored_headers = validate_batches(&stored, config.max_message_bytes)?;
                Ok((stored, stored_headers))
            }
        }
    }

    /// acks=all: waits until the high watermark reaches `end_offset` (the offset after the
    /// appended records) while this broker still leads at `leader_epoch`, or `deadline`;
    /// then the ISR must still hold `min.insync.replicas` (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    pub async fn wait_committed(
        &self,
        end_offset: i64,
        leader_epoch: i32,
        deadline: tokio::time::Instant,
    ) -> Result<(), ReplicaError> {
        // No `commit_settled` first: the wait's first check is the same read, and the
        // produce path asked `commit_settled` already before parking here.
        self.wait_high_watermark(end_offset, leader_epoch, deadline)
            .await?;
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let (isr, min) = (state.in_sync_count(), state.min_insync());
        if isr < min {
            return Err(ReplicaError::NotEnoughReplicasAfterAppend { isr, min });
        }
        Ok(())
    }

    /// What [`Self::wait_committed`] would answer at once, without arming a wake-up:
    /// `None` while the high watermark is below `end_offset` (the wait goes on). A leader
    /// whose ISR is itself alone, or whose followers fetched already, has its appends
    /// committed when they land: Kafka's `tryCompleteElseWatch` answers those without
    /// parking them in the purgatory.
    pub fn commit_settled(
        &self,
        end_offset: i64,
        leader_epoch: i32,
    ) -> Option<Result<(), ReplicaError>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if !state.leads || state.leader_epoch != leader_epoch {
            return Some(Err(ReplicaError::NotLeader));
        }
        if state.high_watermark < end_offset {
            return None;
        }
        let (isr, min) = (state.in_sync_count(), state.min_insync());
        if isr < min {
            return Some(Err(ReplicaError::NotEnoughReplicasAfterAppend { isr, min }));
        }
        Some(Ok(()))
    }

    /// Waits until the high watermark reaches `end_offset` while this broker leads at
    /// `leader_epoch`, or `deadline`. Woken by `changed` (appends and high-watermark
    /// moves), never by polling. No `min.insync.replicas` check: a reader (the group
    /// coordinator loading a partition) needs the records committed, not the ISR's size.
    pub async fn wait_high_watermark(
        &self,
        end_offset: i64,
        leader_epoch: i32,
        deadline: tokio::time::Instant,
    ) -> Result<(), ReplicaError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state.read().unwrap_or_else(|p| p.into_inner());
                if !state.leads || state.leader_epoch != leader_epoch {
                    return Err(ReplicaError::NotLeader);
                }
                if state.high_watermark >= end_offset {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ReplicaError::ReplicationTimedOut);
            }
        }
    }

    /// Whole batches from the one containing `offset`, up to the high watermark.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<PartitionRead, ReplicaError> {
        let bound = ReadBound::HighWatermark;
        self.read_within(offset, max_bytes, min_one_batch, bound, |r| r.to_bytes())
    }

    /// A consumer's read at an isolation level: read_uncommitted is [`Partition::read`];
    /// read_committed stops before the last stable offset and lists the aborted
    /// transactions with records in what it returns (from the fetch offset to the end of
    /// the last batch returned), so the client can drop them.
    pub fn read_isolated(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        read_committed: bool,
    ) -> Result<PartitionRead, ReplicaError> {
        let bound = match read_committed {
            true => ReadBound::LastStableOffset,
            false => ReadBound::HighWatermark,
        };
        self.read_within(offset, max_bytes, min_one_batch, bound, |r| r.to_bytes())
    }

    /// A fetch's read up to `bound`: reads of at most `inline_max` bytes come back in
    /// memory, larger ones as slices of the segment files for the response to send.
    pub fn read_for_fetch(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        bound: ReadBound,
        inline_max: usize,
    ) -> Result<PartitionRead<ReadRecords>, ReplicaError> {
        self.read_within(offset, max_bytes, min_one_batch, bound, |records| {
            if records.len() <= inline_max {
                records.to_bytes().map(ReadRecords::Bytes)
            } else {
                Ok(ReadRecords::Slices(records))
            }
        })
    }

    /// The last stable offset: the high watermark, or the first offset of the oldest open
    /// transaction if lower (ListOffsets under read_committed, fetch responses).
    pub fn last_stable_offset(&self) -> Result<i64, ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        Ok(state.last_stable_offset())
    }

    /// DescribeProducers: the producers this leader remembers (Kafka's
    /// `Partition.activeProducerState`, which reads the leader's log only).
    pub fn active_producers(&self) -> Result<Vec<ActiveProducer>, ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        if !state.leads {
            return Err(ReplicaError::NotLeader);
        }
        Ok(state.producers.active_producers())
    }

    /// `producer.id.expiration.ms`: forgets the producers idle for `expiration_ms` with no
    /// open transaction, on leaders and followers alike (Kafka runs the check on every
    /// log). The write lock is held for one pass over this partition's producers. Snapshots
    /// written later no longer hold them; one already on disk still does until the next
    /// roll or clean shutdown replaces it, and a restart from it forgets them again at the
    /// next check. Returns how many were removed.
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        let mut state = self.write_state();
        let removed = state.producers.remove_expired(now_ms, expiration_ms);
        if !removed.is_empty() {
            tracing::debug!(tp = %self.tp, producers = ?removed, "expired idle producer ids");
        }
        removed.len()
    }

    /// A follower's read: whole batches from the one containing `offset` up to the log
    /// end (followers copy what consumers may not see yet), with the leader's offsets.
    pub fn read_replica(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<PartitionRead, ReplicaError> {
        let bound = ReadBound::LogEnd;
        self.read_within(offset, max_bytes, min_one_batch, bound, |r| r.to_bytes())
    }

    /// A read stopping before the first batch at or above `bound`, its records made
    /// ready by `finish` under the partition's lock (so bytes read there are the log's).
    fn read_within<R>(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        bound: ReadBound,
        finish: impl FnOnce(RecordSlices) -> Result<R, LogError>,
    ) -> Result<PartitionRead<R>, ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        let last_stable_offset = state.last_stable_offset();
        let upper = match bound {
            ReadBound::HighWatermark => state.high_watermark,
            ReadBound::LastStableOffset => last_stable_offset,
            ReadBound::LogEnd => log.log_end_offset(),
        };
        let read = log.read_slices(offset, max_bytes, upper, min_one_batch)?;
        let aborted_transactions = match (bound, read.records.end_offset()) {
            (ReadBound::LastStableOffset, Some(end)) => log.aborted_transactions(offset, end)?,
            _ => Vec::new(),
        };
        Ok(PartitionRead {
            records: finish(read.records)?,
            high_watermark: state.high_watermark,
            last_stable_offset,
            aborted_transactions,
            log_start_offset: read.log_start_offset,
            log_end_offset: read.log_end_offset,
            version: self.version(),
        })
    }

    /// [`Self::offsets`] with the version they stand for: while [`Self::version`] still
    /// returns it, they are still the partition's.
    pub fn offsets_versioned(&self) -> Result<(PartitionVersion, (i64, i64, i64)), ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let version = self.version();
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        let offsets = (
            log.log_start_offset(),
            state.high_watermark,
            log.log_end_offset(),
        );
        Ok((version, offsets))
    }

    /// (log start offset, high watermark, log end offset).
    pub fn offsets(&self) -> Result<(i64, i64, i64), ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        Ok((
            log.log_start_offset(),
            state.high_watermark,
            log.log_end_offset(),
        ))
    }

    /// (bytes of the log's segments, offset lag) for DescribeLogDirs: the lag is Kafka's
    /// `getLogEndOffsetLag` for a current (not future) replica, how far the log end is
    /// below the high watermark.
    pub fn log_dir_usage(&self) -> Result<(u64, i64), ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        let lag = (state.high_watermark - log.log_end_offset()).max(0);
        Ok((log.size_bytes(), lag))
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .leader_epoch
    }

    /// (leader epoch, whether this broker leads), as the reconciler last set them.
    pub fn leadership(&self) -> (i32, bool) {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        (state.leader_epoch, state.leads)
    }

    /// (leader, leader epoch, partition epoch) as last applied from the image.
    pub fn applied_leadership(&self) -> (NodeId, i32, i32) {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        (state.leader_id, state.leader_epoch, state.partition_epoch)
    }

    /// False while this broker leads with followers other than `replicas` (a reassignment
    /// changed them and the image saying so is not applied yet).
    pub fn leads_replicas(&self, replicas: &[NodeId]) -> bool {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        (state.replication.as_ref()).is_none_or(|r| r.follows_replicas(replicas))
    }

    /// The ISR this leader works with (the controller's), or `None` if it does not lead.
    pub fn in_sync_replicas(&self) -> Option<Vec<NodeId>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.replication.as_ref().map(|r| r.isr().to_vec())
    }

    /// Whether `replica` is in the ISR this broker leads with (false if it does not lead).
    pub fn is_in_sync(&self, replica: NodeId) -> bool {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        (state.replication.as_ref()).is_some_and(|r| r.isr().contains(&replica))
    }

    /// The leader-epoch cache: each epoch with the offset its first batch has or will have.
    pub fn leader_epochs(&self) -> LeaderEpochCache {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.epochs.clone()
    }

    /// (epoch, end offset) for OffsetForLeaderEpoch: see `LeaderEpochCache::end_offset_for`.
    pub fn end_offset_for_epoch(&self, requested: i32) -> Result<(i32, i64), ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        Ok(state.epochs.end_offset_for(requested, log.log_end_offset()))
    }

    /// Test shorthand: this broker (node 0) leads alone at `epoch`.
    #[cfg(test)]
    pub fn become_leader(&self, epoch: i32) -> Result<bool, ReplicaError> {
        let alone = Leadership {
            leader: 0,
            leader_epoch: epoch,
            partition_epoch: epoch,
            replicas: vec![0],
            isr: vec![0],
        };
        let change = self.apply_leadership(0, &alone, 0, Publish::Background)?;
        Ok(change != LeadershipChange::Unchanged)
    }

    /// Test shorthand: node 1 leads at `epoch`; this broker (node 0) follows.
    #[cfg(test)]
    pub fn become_follower(&self, epoch: i32) -> Result<bool, ReplicaError> {
        let other = Leadership {
            leader: 1,
            leader_epoch: epoch,
            partition_epoch: epoch,
            replicas: vec![1, 0],
            isr: vec![1, 0],
        };
        let change = self.apply_leadership(0, &other, 0, Publish::Background)?;
        Ok(change != LeadershipChange::Unchanged)
    }

    /// Applies the image's view of this partition for broker `local`. A new leader epoch
    /// with `local` as leader starts a leadership (Kafka's `makeLeader`): later appends
    /// carry the epoch, the cache records it at the log end, the followers' progress
    /// starts unknown. With another leader (or none) this broker follows (`makeFollower`):
    /// the cache is left alone (a follower records epochs as it appends their batches).
    /// Same leader epoch, newer partition epoch: the leader adopts the new ISR. An older
    /// view is ignored with a WARN (epochs only go up). `publish` says when a new epoch's
    /// checkpoint is written; an error (only with [`Publish::AtOnce`]) means it could not
    /// be (the change stands).
    pub fn apply_leadership(
        &self,
        local: NodeId,
        wanted: &Leadership,
        now_ms: i64,
        publish: Publish,
    ) -> Result<LeadershipChange, ReplicaError> {
        let leads = wanted.leader == local;
        let mut epochs_to_write = None;
        let change = {
            let mut guard = self.write_state();
            let state = &mut *guard;
            let current = (state.leader_epoch, state.partition_epoch);
            if wanted.leader_epoch < current.0
                || (wanted.leader_epoch == current.0 && wanted.partition_epoch < current.1)
            {
                drop(guard);
                if wanted.leader_epoch < current.0 {
                    tracing::warn!(
                        tp = %self.tp, epoch = wanted.leader_epoch, current = current.0, leads,
                        "ignoring a leader epoch older than the partition's"
                    );
                } else {
                    // The controller's answer to an ISR change got here before its image.
                    tracing::debug!(tp = %self.tp, "image behind an answered ISR change");
                }
                return Ok(LeadershipChange::Unchanged);
            }
            let same_leadership = wanted.leader_epoch == state.leader_epoch
                && leads == state.leads
                && wanted.leader == state.leader_id;
            state.partition_epoch = wanted.partition_epoch;
            if same_leadership {
                let adopted = state.replication.as_mut().is_some_and(|replication| {
                    // A reassignment changes the replicas under the same leadership.
                    let moved = replication.set_replicas(&wanted.replicas);
                    replication.adopt(&wanted.isr, wanted.partition_epoch, now_ms) || moved
                });
                if adopted {
                    state.advance_high_watermark();
                }
                if adopted {
                    LeadershipChange::Isr
                } else {
                    LeadershipChange::Unchanged
                }
            } else {
                state.leader_epoch = wanted.leader_epoch;
                state.leads = leads;
                state.leader_id = wanted.leader;
                let log_end = state.log.as_ref().map(PartitionLog::log_end_offset);
                if leads {
                    state.replication = Some(LeaderState::new(
                        local,
                        &wanted.replicas,
                        &wanted.isr,
                        wanted.partition_epoch,
                        now_ms,
                    ));
                    state.advance_high_watermark();
                } else {
                    state.replication = None;
                }
                if let Some(log_end) = log_end
                    && leads
                    && state.epochs.assign(wanted.leader_epoch, log_end)
                {
                    match publish {
                        Publish::Background => self.schedule_epochs(state.epochs_changed()),
                        Publish::AtOnce => epochs_to_write = state.epochs_changed(),
                    }
                }
                if leads {
                    LeadershipChange::BecameLeader
                } else {
                    LeadershipChange::BecameFollower
                }
            }
        };
        if change == LeadershipChange::Unchanged {
            return Ok(change);
        }
        if change != LeadershipChange::Isr {
            tracing::info!(
                tp = %self.tp, epoch = wanted.leader_epoch, leader = wanted.leader,
                "leadership changed"
            );
        }
        // Parked acks=all produces see the change (they fail once this broker no longer
        // leads); delayed fetches see a high watermark that moved.
        self.notify_changed();
        self.write_epochs(epochs_to_write)?;
        Ok(change)
    }

    /// A follower fetched at `fetch_offset` (Kafka's `updateFollowerFetchState`): records
    /// its progress, moves the high watermark, and returns the ISR expansion to propose if
    /// it has caught up. `eligible`: the image shows the follower live and not shutting
    /// down. Fails for a broker that is not a replica, or when this one does not lead.
    pub fn record_follower_fetch(
        &self,
        replica: NodeId,
        fetch: (i64, i32),
        now_ms: i64,
        broker: FollowerBroker,
    ) -> Result<Option<IsrProposal>, ReplicaError> {
        let (fetch_offset, current_leader_epoch) = fetch;
        let (moved, proposal) = {
            // Not `write_state`: a follower's progress is no read's business, and this
            // runs for every partition of every follower fetch, so the version moves (by
            // `changed_under`) only when the high watermark or the ISR proposal did.
            let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
            let state = &mut *guard;
            // Checked again under the lock: progress made for an older leadership must not
            // count in this one.
            check_epoch(current_leader_epoch, state.leader_epoch)?;
            let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
            // Under a plain guard that leaves the log alone: the released end is the log's.
            let log_end = state.log_end_released;
            if fetch_offset > log_end {
                let log_start = log.log_start_offset();
                // A follower ahead of this log holds records it must truncate first; its
                // offset says nothing about what it has of ours (Kafka answers
                // OFFSET_OUT_OF_RANGE before recording anything).
                return Err(ReplicaError::Log(LogError::OffsetOutOfRange {
                    offset: fetch_offset,
                    log_start,
                    log_end,
                }));
            }
            let epoch_start = state.current_epoch_start_at(log_end);
            let Some(replication) = state.replication.as_mut().filter(|_| state.leads) else {
                return Err(ReplicaError::NotLeader);
            };
            if !replication.record_fetch(replica, fetch_offset, log_end, now_ms) {
                return Err(ReplicaError::NotLeader);
            }
            let proposal = replication
                .expansion(replica, state.high_watermark, epoch_start, broker.eligible)
                .map(|new_isr| {
                    replication.propose(new_isr.clone());
                    IsrProposal {
                        leader: state.leader_id,
                        leader_epoch: state.leader_epoch,
                        partition_epoch: replication.partition_epoch(),
                        isr_size_before: replication.isr().len(),
                        new_isr,
                        broker_epochs: (broker.epoch >= 0)
                            .then_some((replica, broker.epoch))
                            .into_iter()
                            .collect(),
                    }
                });
            let moved = state.advance_high_watermark_at(log_end);
            if moved || proposal.is_some() {
                self.changed_under(&guard);
            }
            (moved, proposal)
        };
        if moved {
            self.notify_changed();
        }
        Ok(proposal)
    }

    /// A follower's fetch that changes nothing but its times (see
    /// `LeaderState::record_fetch_unchanged`), with the log start it reports: recorded under
    /// the read lock, without moving the version (nothing a read returns changed). Most
    /// partitions a follower's fetch session visits are such. False, recording
    /// nothing, for any other fetch: the caller records it with
    /// [`Self::record_follower_fetch`] and [`Self::record_follower_log_start`].
    pub fn record_unchanged_follower_fetch(
        &self,
        replica: NodeId,
        fetch: (i64, i32),
        log_start_offset: i64,
        now_ms: i64,
    ) -> bool {
        let (fetch_offset, current_leader_epoch) = fetch;
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let current = check_epoch(current_leader_epoch, state.leader_epoch).is_ok();
        let Some(replication) = state.replication.as_ref().filter(|_| state.leads) else {
            return false;
        };
        // Under a plain guard: the released end is the log's.
        let ends = (state.log_end_released, state.high_watermark);
        let fetched = (fetch_offset, log_start_offset);
        current
            && state.log.is_some()
            && replication.record_fetch_unchanged(replica, fetched, ends, now_ms)
    }

    /// The ISR without followers that have not caught up for `lag_max_ms`, to propose
    /// (Kafka's `maybeShrinkIsr`), if there are such followers and nothing is pending.
    pub fn isr_shrink(&self, now_ms: i64, lag_max_ms: i64) -> Option<IsrProposal> {
        let shrunk = |state: &PartitionState| {
            let log_end = state.log.as_ref()?.log_end_offset();
            let replication = state.replication.as_ref().filter(|_| state.leads)?;
            replication.shrink(log_end, now_ms, lag_max_ms)
        };
        // Asked of every led partition each half `replica.lag.time.max.ms`, almost always
        // with nothing to shrink: decided under the read lock first, so the version (and
        // with it the fetch paths' quiet reads) moves only when a proposal is made.
        shrunk(&self.state.read().unwrap_or_else(|p| p.into_inner()))?;
        let mut state = self.write_state();
        let new_isr = shrunk(&state)?;
        let state = &mut *state;
        let replication = state.replication.as_mut()?;
        replication.propose(new_isr.clone());
        Some(IsrProposal {
            leader: state.leader_id,
            leader_epoch: state.leader_epoch,
            partition_epoch: replication.partition_epoch(),
            isr_size_before: replication.isr().len(),
            new_isr,
            broker_epochs: Vec::new(),
        })
    }

    /// The controller answered `proposal` (see [`IsrAnswer`]). The answer applies only to
    /// the leadership that proposed it.
    pub fn isr_change_answered(&self, proposal: &IsrProposal, answer: IsrAnswer, now_ms: i64) {
        let moved = {
            let mut state = self.write_state();
            let state = &mut *state;
            if !state.leads || state.leader_epoch != proposal.leader_epoch {
                return;
            }
            let Some(replication) = state.replication.as_mut() else {
                return;
            };
            match answer {
                IsrAnswer::Changed {
                    isr,
                    leader_epoch,
                    partition_epoch,
                } if leader_epoch == proposal.leader_epoch => {
                    if replication.adopt(isr, partition_epoch, now_ms) {
                        state.partition_epoch = state.partition_epoch.max(partition_epoch);
                    }
                    // The answer settles the proposal, even one that changed nothing.
                    replication.abandon_proposal();
                }
                // Kept pending: the image that settles it (or a retry) clears it.
                IsrAnswer::Unsettled => {}
                _ => replication.abandon_proposal(),
            }
            state.advance_high_watermark()
        };
        if moved {
            self.notify_changed();
        }
    }

    /// True while `proposal` is this leadership's unanswered ISR change (worth resending).
    pub fn proposal_pending(&self, proposal: &IsrProposal) -> bool {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.leads
            && state.leader_epoch == proposal.leader_epoch
            && state
                .replication
                .as_ref()
                .is_some_and(|r| r.pending() == Some(proposal.new_isr.as_slice()))
    }

    /// Publishes a changed cache now, durably (truncations: a later epoch may start below
    /// entries the file still has), unless a newer version is already written or the
    /// partition is being deleted. Called without the state lock.
    fn write_epochs(&self, change: Option<EpochsToWrite>) -> Result<(), ReplicaError> {
        let Some(change) = change else {
            return Ok(());
        };
        Ok(self
            .epoch_checkpoint
            .publish(Some((change.version, change.epochs)))?)
    }

    /// Hands a changed cache to the background writer (appends, a new leadership): no
    /// fsync on the produce or fetcher path. Never waits for the disk.
    fn schedule_epochs(&self, change: Option<EpochsToWrite>) {
        if let Some(change) = change {
            (self.epoch_checkpoint).schedule(change.version, change.epochs);
        }
    }

    /// Tests: leader-epoch changes stay pending until a roll, a truncation or
    /// `close_cleanly` publishes them (the background writer is paused for this partition).
    #[cfg(test)]
    pub(crate) fn hold_epoch_checkpoint(&self) {
        self.epoch_checkpoint.hold();
    }

    /// Tests: publishes the pending leader-epoch change now.
    #[cfg(test)]
    pub(crate) fn flush_epoch_checkpoint(&self) {
        self.epoch_checkpoint.flush().unwrap();
    }

    /// Kafka's check of a client's `current_leader_epoch` (-1 means "not given").
    pub fn check_leader_epoch(&self, requested: i32) -> Result<(), ReplicaError> {
        check_epoch(requested, self.leader_epoch())
    }

    /// First offset with a timestamp at or after `timestamp_ms`, below the high watermark.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        let found = log.offset_for_timestamp(timestamp_ms)?;
        Ok(found.filter(|(offset, _)| *offset < state.high_watermark))
    }

    /// Offset and timestamp of the record with the largest timestamp (ListOffsets -3),
    /// `None` if that record is not committed yet: as Kafka, the largest timestamp of the
    /// whole log, then hidden if above the high watermark (not the largest committed one).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        let found = log.max_timestamp_offset()?;
        Ok(found.filter(|(offset, _)| *offset < state.high_watermark))
    }

    /// Kafka's `leaderEpochStartOffsetOpt` check (`Partition.fetchOffsetForTimestamp`): a
    /// leader whose high watermark is still below the start of its epoch has not learnt
    /// where its predecessor's committed records end, so a latest offset taken now could
    /// lie below records consumers have already read. ListOffsets answers
    /// OFFSET_NOT_AVAILABLE then, and clients retry. Otherwise the committed end (the
    /// high watermark) and the leader epoch, read under one guard with the check, as
    /// Kafka holds its leader lock across the lookup.
    pub fn committed_end(&self) -> Result<(i64, i32), ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if !state.leads {
            return Err(ReplicaError::NotLeader);
        }
        let epoch_start = state.current_epoch_start();
        if epoch_start > state.high_watermark {
            return Err(ReplicaError::OffsetNotAvailable {
                high_watermark: state.high_watermark,
                epoch_start,
            });
        }
        Ok((state.high_watermark, state.leader_epoch))
    }

    pub fn config(&self) -> Option<LogConfig> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.log.as_ref().map(|log| log.config().clone())
    }

    pub fn set_config(&self, config: LogConfig) {
        let mut state = self.write_state();
        if let Some(log) = state.log.as_mut() {
            log.set_config(config);
        }
    }

    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, ReplicaError> {
        let mut epochs_to_write = None;
        let deleted = {
            let mut state = self.write_state();
            let state = &mut *state;
            let Some(log) = state.log.as_mut() else {
                return Ok(0);
            };
            let deleted = log.enforce_retention_below(now_ms, state.high_watermark)?;
            if deleted > 0 {
                // A snapshot below the log start remembers batches that are gone.
                let log_start = log.log_start_offset();
                producer_snapshot::remove_outside(log.dir(), log_start, i64::MAX)?;
                if state.epochs.truncate_from_start(log_start) {
                    epochs_to_write = state.epochs_changed();
                }
            }
            deleted
        };
        self.write_epochs(epochs_to_write)?;
        Ok(deleted)
    }

    /// Removes everything at or above `offset` (a follower diverging from its leader), the
    /// producer snapshots above the new log end, and reloads producer state to match, as
    /// Kafka's `truncateAndReload` does.
    pub fn truncate_to(&self, offset: i64) -> Result<(), ReplicaError> {
        self.truncate_checked(offset, None)
    }

    /// A follower's truncation for its leader `source` (leader id, leader epoch): refused
    /// with NotLeader if the partition leads or follows another leadership by now, so a
    /// late answer from an old leader never cuts a log that moved on.
    pub fn truncate_following(
        &self,
        offset: i64,
        source: (NodeId, i32),
    ) -> Result<(), ReplicaError> {
        self.truncate_checked(offset, Some(source))
    }

    fn truncate_checked(
        &self,
        offset: i64,
        source: Option<(NodeId, i32)>,
    ) -> Result<(), ReplicaError> {
        let epochs_to_write = {
            let mut state = self.write_state();
            let state = &mut *state;
            if source.is_some_and(|source| !state.follows(source)) {
                return Err(ReplicaError::NotLeader);
            }
            let log = state.log.as_mut().ok_or(ReplicaError::Deleted)?;
            log.truncate_to(offset)?;
            let (log_start, log_end) = (log.log_start_offset(), log.log_end_offset());
            producer_snapshot::remove_outside(log.dir(), log_start, log_end)?;
            let expiry = (state.producer_expiration_ms)
                .map(|expiration_ms| (crate::types::now_ms(), expiration_ms));
            state.producers = load_producer_state(&self.tp, log, expiry)?;
            let high_watermark = state.high_watermark.min(log_end);
            state.set_high_watermark(high_watermark);
            let trimmed = state.epochs.truncate_from_end(log_end);
            // Emptied below its old start, the log restarts at `offset`.
            let moved = state.epochs.truncate_from_start(log_start);
            (trimmed || moved).then(|| state.epochs_changed()).flatten()
        };
        self.write_epochs(epochs_to_write)
    }

    /// A follower whose next record is gone from its leader (deleted by retention there):
    /// the log is emptied and restarts at the leader's log start `offset`, with no producer
    /// state and no epochs (Kafka's `truncateFullyAndStartAt`). Only while it still
    /// follows `source` (leader, leader epoch), and only forward.
    pub fn restart_following_at(
        &self,
        offset: i64,
        source: (NodeId, i32),
    ) -> Result<(), ReplicaError> {
        let epochs_to_write = {
            let mut state = self.write_state();
            let state = &mut *state;
            if !state.follows(source) {
                return Err(ReplicaError::NotLeader);
            }
            let log = state.log.as_mut().ok_or(ReplicaError::Deleted)?;
            log.restart_at(offset)?;
            producer_snapshot::remove_outside(log.dir(), offset, offset)?;
            state.producers = ProducerStateTable::default();
            state.high_watermark = offset;
            state.epochs = LeaderEpochCache::default();
            state.epochs_changed()
        };
        self.write_epochs(epochs_to_write)
    }

    /// Clean shutdown: flush the log and snapshot producer state at the log end. Only a
    /// failed flush is an error; without a snapshot the next start scans headers instead.
    pub fn close_cleanly(&self) -> Result<(), ReplicaError> {
        let mut state = self.write_state();
        let state = &mut *state;
        let Some(log) = state.log.as_mut() else {
            return Ok(());
        };
        log.flush()?;
        // The background writer may still hold the newest leader epochs.
        self.epoch_checkpoint.flush()?;
        let newest = producer_snapshot::list(log.dir())?.last().copied();
        // An idle partition already has its snapshot from the previous stop.
        if newest != Some(log.log_end_offset()) {
            save_snapshot(log.dir(), log.log_end_offset(), &state.producers);
        }
        Ok(())
    }

    /// One log-cleaning pass for `cleanup.policy=compact` topics (a no-op otherwise, and
    /// when no segment closed since the last pass). Blocking: call it from the cleaner
    /// thread. The locks are held only to snapshot the segments (read) and to swap the
    /// cleaned ones in (write); the cleaning itself runs unlocked, so produce and fetch
    /// go on meanwhile. Stops early, changing nothing, once `stop` is set or on `delete`.
    pub fn clean(
        &self,
        now_ms: i64,
        dedupe_buffer_bytes: u64,
        stop: &AtomicBool,
    ) -> Result<CleanStats, ReplicaError> {
        let _cleaning = self.cleaning.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            match state.log.as_ref() {
                // Only below the last stable offset: every transaction there is decided.
                Some(log) => {
                    let stable_end = state.last_stable_offset();
                    // Snapshots are written and removed under the write lock: the oldest
                    // cannot change while this read lock is held.
                    let oldest_snapshot = producer_snapshot::list(log.dir())?
                        .first()
                        .copied()
                        .unwrap_or(i64::MAX);
                    let tails = state.producers.log_tails();
                    log.clean_snapshot_below(now_ms, stable_end, tails, oldest_snapshot)?
                }
                None => None,
            }
        };
        let Some(snapshot) = snapshot else {
            return Ok(CleanStats::default());
        };
        let abort = || stop.load(Ordering::Relaxed) || self.deleting.load(Ordering::Relaxed);
        let Some(outcome) = log::clean(snapshot, dedupe_buffer_bytes, &abort)? else {
            return Ok(CleanStats::default());
        };
        let mut state = self.write_state();
        match state.log.as_mut() {
            Some(log) => Ok(log.install_clean(outcome, now_ms)?),
            None => Ok(CleanStats::default()),
        }
    }

    /// Flushes when `flush.ms` has passed since the last flush (time-based fsync policy).
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), ReplicaError> {
        let due = |state: &PartitionState| match state.log.as_ref() {
            Some(log) => now_ms.saturating_sub(state.last_flush_ms) >= log.config().flush_ms,
            None => false,
        };
        // Asked of every partition each `log.flush.scheduler.interval.ms`, and almost never
        // due (`flush.ms` defaults to never): a write guard each time would move every
        // partition's version and throw away the fetch paths' quiet reads once a second.
        if !due(&self.state.read().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let mut state = self.write_state();
        if due(&state) {
            state.last_flush_ms = now_ms;
            if let Some(log) = state.log.as_mut() {
                log.flush()?;
            }
        }
        Ok(())
    }

    /// `producer.id.expiration.ms` changed (a dynamic broker config): the next reload
    /// (after a truncation) drops producers by the new value, as the periodic check does.
    pub fn set_producer_expiration_ms(&self, expiration_ms: i64) {
        let current = (self.state.read().unwrap_or_else(|p| p.into_inner())).producer_expiration_ms;
        if current.is_some_and(|current| current != expiration_ms) {
            let mut state = self.write_state();
            state.producer_expiration_ms = Some(expiration_ms);
        }
    }

    /// Removes the log from disk; later calls answer [`ReplicaError::Deleted`].
    pub fn delete(&self) -> Result<(), ReplicaError> {
        // A cleaning pass writes files into the directory: stop it and wait for it to
        // finish (it checks the flag between batches) before the directory goes.
        self.deleting.store(true, Ordering::Relaxed);
        drop(self.cleaning.lock().unwrap_or_else(|p| p.into_inner()));
        // No leader-epoch checkpoint is written into the directory from now on (one under
        // way is waited for), so none re-creates a file in a directory being removed.
        self.epoch_checkpoint.close();
        // Through the write guard: the version must move, or a fetch holding this
        // partition's quiet read would answer it as still there (review finding).
        let log = self.write_state().log.take();
        self.notify_changed();
        match log {
            Some(log) => Ok(log.delete()?),
            None => Ok(()),
        }
    }
}

impl Drop for Partition {
    /// A partition dropped without `close_cleanly` is a crash as far as its checkpoint is
    /// concerned: a pending change is discarded, never written after the partition is gone
    /// (into a directory another partition may have opened by then).
    fn drop(&mut self) {
        self.epoch_checkpoint.close();
    }
}

/// Logs a failed background operation at ERROR only when it starts a storage fault
/// (`fault` set), at debug while the fault lasts; see `report_background_failure`.
fn report_failure(
    tp: &TopicPartition,
    fault: &AtomicBool,
    operation: &str,
    error: &dyn std::fmt::Display,
) {
    if !fault.swap(true, Ordering::Relaxed) {
        tracing::error!(%tp, %error, "{operation} failed (logged once until an append succeeds)");
    } else {
        tracing::debug!(%tp, %error, "{operation} failed again");
    }
}

/// The partition's leader-epoch checkpoint on the process's background writer; its
/// failures are reported as the partition's other background failures.
fn open_epoch_checkpoint(
    tp: &TopicPartition,
    dir: &Path,
    storage_fault: &Arc<AtomicBool>,
) -> Arc<EpochCheckpoint> {
    let (tp, fault) = (tp.clone(), Arc::clone(storage_fault));
    let report = Box::new(move |error: &std::io::Error| {
        report_failure(&tp, &fault, "writing the leader-epoch checkpoint", error);
    });
    EpochCheckpoint::new(dir.to_path_buf(), EpochCheckpointWriter::global(), report)
}

/// Producer state from the newest usable snapshot plus the batch headers after it (from the
/// log start when there is none), reading the markers among them. The aborted-transaction
/// index from the snapshot's offset on is rebuilt from the same batches, whatever the
/// shutdown was: its entries there may be stale (a crash) or missing (not fsynced); those
/// below were fsynced before the snapshot was written (`log::txn_index`).
/// Producers a snapshot brings back that are idle `expiry.1` ms or more at `expiry.0` are
/// dropped before the replay (Kafka's `loadFromSnapshot`); the replay re-creates any of them
/// that wrote after the snapshot.
fn load_producer_state(
    tp: &TopicPartition,
    log: &mut PartitionLog,
    expiry: Option<(i64, i64)>,
) -> Result<ProducerStateTable, ReplicaError> {
    let (log_start, log_end) = (log.log_start_offset(), log.log_end_offset());
    // A segment whose index was unreadable is rebuilt from a snapshot at or before it.
    let snapshot_max = log
        .first_lost_txn_index()
        .map_or(log_end, |base| base.min(log_end));
    let (from_offset, mut producers) =
        producer_snapshot::load_newest(log.dir(), log_start, snapshot_max)?
            .unwrap_or((log_start, ProducerStateTable::default()));
    if let Some((now_ms, expiration_ms)) = expiry {
        let expired = producers.remove_expired(now_ms, expiration_ms);
        if !expired.is_empty() {
            let count = expired.len();
            tracing::debug!(%tp, count, "expired producers left out of the snapshot");
        }
    }
    let mut aborted = Vec::new();
    let mut failed = None;
    let mut batches_read = 0u64;
    let reader: &PartitionLog = log;
    reader.scan_batch_headers(from_offset, &mut |header: &BatchHeader| {
        // The snapshot holds every batch below its offset. Without one, `from_offset` is
        // the log start, which DeleteRecords can put inside a batch: that batch still
        // counts (it may open a transaction or be a producer's last), as Kafka reads from
        // the batch holding the start.
        if header.last_offset() < from_offset || failed.is_some() {
            return;
        }
        batches_read += 1;
        let marker = match header.is_control() {
            true => match read_marker(reader, header) {
                Ok(marker) => marker,
                Err(error) => {
                    failed = Some(error);
                    return;
                }
            },
            false => None,
        };
        aborted.extend(apply_batch(&mut producers, header, marker));
    })?;
    if let Some(error) = failed {
        return Err(error);
    }
    log.truncate_aborted_from(from_offset)?;
    for entry in &aborted {
        log.append_aborted(*entry)?;
    }
    // Durable before the next producer snapshot, which stands for these entries.
    log.finish_txn_index_rebuild(from_offset)?;
    if !aborted.is_empty() {
        tracing::info!(%tp, from_offset, aborted = aborted.len(), "rebuilt the aborted-transaction index");
    }
    tracing::debug!(
        dir = %log.dir().display(),
        from_offset,
        batches_read,
        producers = producers.producer_count(),
        "loaded producer state"
    );
    Ok(producers)
}

/// The leader-epoch cache from the checkpoint, trimmed to the log (a crash may have lost
/// batches after the checkpoint was written; retention may have removed earlier ones).
/// Without a usable checkpoint (none yet, or unreadable) it is rebuilt from the batch
/// headers and written. Kafka fails the log directory on a corrupt checkpoint; the headers
/// hold the same facts, so we rebuild and say so.
fn load_leader_epochs(log: &PartitionLog) -> Result<LeaderEpochCache, ReplicaError> {
    let (log_start, log_end) = (log.log_start_offset(), log.log_end_offset());
    let loaded = match LeaderEpochCache::load(log.dir()) {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::warn!(
                dir = %log.dir().display(), %error,
                "unreadable leader-epoch checkpoint; rebuilding it from the batch headers"
            );
            None
        }
    };
    let (mut epochs, mut changed) = match loaded {
        Some(mut epochs) => {
            let recovered = recover_newer_epochs(log, &mut epochs)?;
            (epochs, recovered)
        }
        None => {
            let mut epochs = LeaderEpochCache::default();
            log.scan_batch_headers(log_start, &mut |header: &BatchHeader| {
                epochs.assign(header.partition_leader_epoch, header.base_offset);
            })?;
            (epochs, true)
        }
    };
    changed |= epochs.truncate_from_end(log_end);
    changed |= epochs.truncate_from_start(log_start);
    if changed {
        epochs.write(log.dir())?;
    }
    Ok(epochs)
}

/// Adds the epochs of batches the checkpoint missed: it is written after the append, so a
/// crash between the two leaves a newer epoch only in the batch headers. Such batches are
/// the last appended, in the active segment at or after the last cached epoch's start, so
/// only that tail is read, never the whole log. True if the cache changed.
fn recover_newer_epochs(
    log: &PartitionLog,
    epochs: &mut LeaderEpochCache,
) -> Result<bool, ReplicaError> {
    let last_start = (epochs.entries().last()).map_or(log.log_start_offset(), |e| e.start_offset);
    let from_offset = last_start.max(log.active_base_offset());
    let mut changed = false;
    log.scan_batch_headers(from_offset, &mut |header: &BatchHeader| {
        if header.base_offset >= from_offset {
            changed |= epochs.assign_newer(header.partition_leader_epoch, header.base_offset);
        }
    })?;
    if changed {
        tracing::info!(
            dir = %log.dir().display(),
            entries = ?epochs.entries(),
            "leader epochs recovered from batches newer than the checkpoint"
        );
    }
    Ok(changed)
}

/// Snapshot of `producers`, which must hold every batch below `offset` and none above. A
/// failure is logged, not returned: the snapshot only saves work at the next start.
fn save_snapshot(dir: &Path, offset: i64, producers: &ProducerStateTable) {
    if let Err(error) = producer_snapshot::write(dir, offset, producers) {
        tracing::warn!(dir = %dir.display(), offset, %error, "producer snapshot failed");
    }
}

/// Applies one batch now in the log (its header carries its offsets) to producer state;
/// returns the index entry if it is an abort marker. `marker` is the batch's marker, if
/// it is a control batch that holds one.
fn apply_batch(
    producers: &mut ProducerStateTable,
    header: &BatchHeader,
    marker: Option<TxnMarker>,
) -> Option<AbortedTxn> {
    if !header.is_control() {
        producers.update(header, header.base_offset);
        return None;
    }
    let marker = marker?;
    let (producer_id, epoch) = (header.producer_id, header.producer_epoch);
    let completed = producers.complete(producer_id, epoch, marker, header.base_offset);
    // Kafka ages a producer from its marker too (the control record's timestamp).
    producers.restore_last_timestamp(producer_id, header.max_timestamp);
    completed.aborted.then(|| AbortedTxn {
        producer_id,
        first_offset: completed.first_offset,
        last_offset: completed.last_offset,
        last_stable_offset: producers.stable_offset_after(&completed),
    })
}

/// Applies appended batches (leader or follower) to producer state and the
/// aborted-transaction index. The batches are in the log already: a failed index write is
/// logged, not returned (the index keeps the entry for its next append or flush, up to a
/// bound past which it refuses reads until rebuilt at the next open), so the append is
/// never answered as failed.
fn track_appended(
    tp: &TopicPartition,
    producers: &mut ProducerStateTable,
    log: &mut PartitionLog,
    batches: &[(BatchHeader, Option<TxnMarker>)],
) {
    for (header, marker) in batches {
        if let Some(entry) = apply_batch(producers, header, *marker)
            && let Err(error) = log.append_aborted(entry)
        {
            tracing::warn!(%tp, ?entry, %error, "writing the aborted-transaction index failed");
        }
    }
}

/// Each batch of `records` (as validated into `headers`) with its marker, for control
/// batches.
fn with_markers(
    records: &[u8],
    headers: &[BatchHeader],
) -> Result<Vec<(BatchHeader, Option<TxnMarker>)>, ReplicaError> {
    let mut position = 0;
    let mut batches = Vec::with_capacity(headers.len());
    for header in headers {
        let end = position + header.total_bytes();
        let marker = match header.is_control() {
            true => parse_marker(&records[position..end], header)?,
            false => None,
        };
        batches.push((*header, marker));
        position = end;
    }
    Ok(batches)
}

/// The marker of the control batch `header` in `log`.
fn read_marker(
    log: &PartitionLog,
    header: &BatchHeader,
) -> Result<Option<TxnMarker>, ReplicaError> {
    let read = log.read(header.base_offset, header.total_bytes(), i64::MAX, true)?;
    let Some(batch) = read.records.get(..header.total_bytes()) else {
        return Err(ReplicaError::Log(LogError::Corrupt(format!(
            "control batch at {} reads short",
            header.base_offset
        ))));
    };
    Ok(parse_marker(batch, header)?)
}

/// Who a leader's append comes from, which decides how producer state checks it.
#[derive(Clone, Copy)]
enum Origin {
    /// A client's produce: sequences checked, retries answered with their offsets;
    /// transactional batches verified as the request was (KIP-890).
    Client(Verification),
    /// A coordinator's transactional batch without sequence: only its epoch is checked,
    /// and its verification (TxnOffsetCommit's, as a client's).
    Coordinator(Verification),
    /// A commit or abort marker (WriteTxnMarkers).
    Marker(TxnMarker),
}

/// Kafka's check of a request's `current_leader_epoch` (-1: not given) against ours.
fn check_epoch(requested: i32, current: i32) -> Result<(), ReplicaError> {
    match requested {
        -1 => Ok(()),
        r if r < current => Err(ReplicaError::FencedLeaderEpoch { requested, current }),
        r if r > current => Err(ReplicaError::UnknownLeaderEpoch { requested, current }),
        _ => Ok(()),
    }
}

/// Produce v3+ carries exactly one non-empty batch per partition (Kafka's LogValidator).
fn check_produce_shape(headers: &[BatchHeader]) -> Result<(), BatchError> {
    if headers.len() != 1 {
        return Err(BatchError::InvalidRecord(format!(
            "produce requests must contain exactly one record batch, found {}",
            headers.len()
        )));
    }
    if headers[0].record_count <= 0 {
        return Err(BatchError::InvalidRecord(
            "record batch has no records".into(),
        ));
    }
    Ok(())
}

/// Runs the idempotence and transaction checks over every batch of one produce (the
/// verification guard is checked after, see `Origin::Client`).
/// `Some(offset)` means the request is a retry of batches already in the log, answered with their first offset.
fn check_sequences(
    producers: &ProducerStateTable,
    headers: &[BatchHeader],
) -> Result<Option<i64>, ReplicaError> {
    let mut duplicate = None;
    for header in headers {
        // Kafka's LogValidator: only the broker writes markers.
        if header.is_control() {
            return Err(ReplicaError::Batch(BatchError::InvalidRecord(
                "clients are not allowed to write control records".into(),
            )));
        }
        if let SequenceCheck::Duplicate(batch) = producers.check(header)? {
            duplicate.get_or_insert(batch.first_offset);
        }
    }
    Ok(duplicate)
}

/// The topic id recorded in a partition directory, if any.
pub fn read_partition_metadata(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix("topic_id:")
            .map(|id| id.trim().to_string())
    })
}

/// Binds `dir` to `topic_id`; refuses a directory bound to another topic id, whose data
/// must never be served as this topic's (start-up sets such directories aside first).
fn write_partition_metadata(dir: &Path, topic_id: &Uuid) -> Result<(), ReplicaError> {
    let wanted = kafka_uuid_string(topic_id);
    match read_partition_metadata(dir) {
        Some(recorded) if recorded == wanted => return Ok(()),
        Some(recorded) => {
            return Err(ReplicaError::InconsistentTopicId {
                dir: dir.display().to_string(),
                recorded,
                wanted,
            });
        }
        None => {}
    }
    let text = format!("version: 0\ntopic_id: {wanted}\n");
    crate::log::durable::publish_file(dir, PARTITION_METADATA_FILE, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_support::encode_batch_sized;
    use crate::txn::producer_snapshot::{list, snapshot_path};
    use kafka_protocol::records::Compression;

    const PRODUCER_ID: i64 = 4_000;
    const EPOCH: i16 = 2;

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 1_000,
            index_interval_bytes: 150,
            ..LogConfig::default()
        }
    }

    /// The partition, led by this broker at epoch 0.
    fn open(dir: &Path, last_shutdown: LastShutdown) -> Partition {
        let partition = open_follower(dir, last_shutdown);
        partition.become_leader(0).unwrap();
        partition
    }

    fn open_follower(dir: &Path, last_shutdown: LastShutdown) -> Partition {
        let tp = TopicPartition::new("t", 0);
        let id = Uuid::from_u128(7);
        let config = small_segments();
        Partition::open(tp, id, dir.join("t-0"), config, 0, 0, last_shutdown).unwrap()
    }

    /// An idempotent batch of `count` records with sequences from `sequence`.
    fn batch(producer_id: i64, sequence: i32, count: usize) -> Bytes {
        let mut bytes = encode_batch_sized(&vec![1_000; count], Compression::None, 40);
        bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
        bytes[51..53].copy_from_slice(&EPOCH.to_be_bytes());
        bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes.freeze()
    }

    /// Appends `batches` batches of 2 records for each of two producers; returns the next
    /// sequence and the base offsets of the first producer's batches.
    fn produce(partition: &Partition, batches: i32) -> Vec<i64> {
        let mut offsets = Vec::new();
        for index in 0..batches {
            let outcome = partition
                .append(&batch(PRODUCER_ID, index * 2, 2), 0)
                .unwrap();
            offsets.push(outcome.base_offset);
            partition
                .append(&batch(PRODUCER_ID + 1, index, 1), 0)
                .unwrap();
        }
        offsets
    }

    fn producers(partition: &Partition) -> ProducerStateTable {
        partition.state.read().unwrap().producers.clone()
    }

    fn log_end(partition: &Partition) -> i64 {
        partition.offsets().unwrap().2
    }

    /// The retries of the last batches are duplicates answered with their offsets, and the
    /// next sequence is accepted at the log end.
    fn assert_retries_are_duplicates(partition: &Partition, offsets: &[i64]) {
        let batches = offsets.len() as i32;
        for back in 1..=3 {
            let index = batches - back;
            let retry = partition
                .append(&batch(PRODUCER_ID, index * 2, 2), 0)
                .unwrap();
            assert_eq!(
                retry.base_offset, offsets[index as usize],
                "retry of batch {index}"
            );
        }
        let end = log_end(partition);
        let next = partition
            .append(&batch(PRODUCER_ID, batches * 2, 2), 0)
            .unwrap();
        assert_eq!(next.base_offset, end);
        let gap = partition.append(&batch(PRODUCER_ID, batches * 2 + 5, 1), 0);
        assert!(matches!(gap, Err(ReplicaError::Sequence(_))), "{gap:?}");
    }

    #[test]
    fn rolls_and_clean_shutdown_write_snapshots_and_reopen_restores_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path(), LastShutdown::Unclean);
        let offsets = produce(&partition, 30);
        let log_dir = dir.path().join("t-0");
        let rolled = list(&log_dir).unwrap();
        assert!(!rolled.is_empty(), "rolls write snapshots");
        assert!(rolled.len() <= producer_snapshot::SNAPSHOTS_KEPT);
        let before = producers(&partition);
        partition.close_cleanly().unwrap();
        assert_eq!(list(&log_dir).unwrap().last(), Some(&log_end(&partition)));
        drop(partition);

        let partition = open(dir.path(), LastShutdown::Clean);
        assert_eq!(producers(&partition), before);
        assert_retries_are_duplicates(&partition, &offsets);
    }

    #[test]
    fn after_a_crash_the_state_is_the_roll_snapshot_plus_the_headers_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path(), LastShutdown::Unclean);
        let offsets = produce(&partition, 30);
        let before = producers(&partition);
        let newest = *list(&dir.path().join("t-0")).unwrap().last().unwrap();
        assert!(newest < log_end(&partition), "batches after the last roll");
        drop(partition); // no close_cleanly: like kill -9

        let partition = open(dir.path(), LastShutdown::Unclean);
        assert_eq!(producers(&partition), before);
        assert_retries_are_duplicates(&partition, &offsets);
    }

    #[test]
    fn the_state_comes_from_the_snapshot_and_a_corrupt_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path(), LastShutdown::Unclean);
        produce(&partition, 3);
        let end = log_end(&partition);
        let before = producers(&partition);
        let mut planted = before.clone();
        let stranger = batch(99, 0, 1);
        planted.update(&BatchHeader::parse(&stranger).unwrap(), 0);
        drop(partition);
        let log_dir = dir.path().join("t-0");
        producer_snapshot::write(&log_dir, end, &planted).unwrap();

        // Producer 99 is in no batch: only the snapshot can have told the partition.
        let partition = open(dir.path(), LastShutdown::Clean);
        assert_eq!(producers(&partition), planted);
        drop(partition);

        let path = snapshot_path(&log_dir, end);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let partition = open(dir.path(), LastShutdown::Clean);
        assert_eq!(
            producers(&partition),
            before,
            "rebuilt from the batch headers"
        );
        assert_eq!(before.producer_count(), 2);
    }

    /// (epoch, start offset) pairs of the partition's cache.
    fn epochs(partition: &Partition) -> Vec<(i32, i64)> {
        let cache = partition.leader_epochs();
        (cache.entries().iter())
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect()
    }

    fn checkpoint(dir: &Path) -> String {
        std::fs::read_to_string(
            dir.join("t-0")
                .join(log::leader_epochs::LEADER_EPOCH_CHECKPOINT_FILE),
        )
        .unwrap()
    }

    /// The partition_leader_epoch of every batch in the log.
    fn stamped_epochs(partition: &Partition) -> Vec<i32> {
        let read = partition.read(0, usize::MAX, true).unwrap();
        log::iter_batches(&read.records)
            .map(|item| item.unwrap().1.partition_leader_epoch)
            .collect()
    }

    #[test]
    fn a_new_leader_epoch_stamps_later_appends_and_is_recorded_at_the_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open_follower(dir.path(), LastShutdown::Unclean);
        assert_eq!(partition.leadership(), (0, false));
        assert!(partition.become_leader(0).unwrap());
        assert_eq!(epochs(&partition), vec![(0, 0)]);
        produce(&partition, 2);
        let end = log_end(&partition);

        assert!(partition.become_leader(3).unwrap());
        assert_eq!(partition.leadership(), (3, true));
        assert_eq!(epochs(&partition), vec![(0, 0), (3, end)]);
        partition.flush_epoch_checkpoint(); // published in the background otherwise
        assert_eq!(checkpoint(dir.path()), format!("0\n2\n0 0\n3 {end}\n"));
        assert_eq!(partition.end_offset_for_epoch(0).unwrap(), (0, end));
        assert_eq!(partition.end_offset_for_epoch(3).unwrap(), (3, end));
        assert!(partition.check_leader_epoch(3).is_ok());
        assert!(matches!(
            partition.check_leader_epoch(0),
            Err(ReplicaError::FencedLeaderEpoch { .. })
        ));
        partition.append(&batch(PRODUCER_ID + 2, 0, 2), 0).unwrap();
        assert_eq!(stamped_epochs(&partition), vec![0, 0, 0, 0, 3]);

        // Epochs only go up: an older image changes nothing; the same one is a no-op.
        assert!(!partition.become_leader(2).unwrap());
        assert!(!partition.become_follower(1).unwrap());
        assert!(!partition.become_leader(3).unwrap());
        assert_eq!(partition.leadership(), (3, true));

        // A follower adopts the epoch but records nothing: it has no batches of it yet.
        assert!(partition.become_follower(5).unwrap());
        assert_eq!(partition.leadership(), (5, false));
        assert_eq!(epochs(&partition), vec![(0, 0), (3, end)]);
        // Leading again at the same epoch records it at the log end.
        let end = log_end(&partition);
        assert!(partition.become_leader(5).unwrap());
        assert_eq!(epochs(&partition).last(), Some(&(5, end)));

        // Reopened, the cache comes back from the checkpoint, less the epoch that has no
        // batch yet (Kafka's `truncateFromEnd(logEndOffset)` on load); the reconciler's
        // `become_leader` records it again.
        let before = epochs(&partition);
        drop(partition);
        let partition = open_follower(dir.path(), LastShutdown::Unclean);
        assert_eq!(epochs(&partition), before[..2]);
        assert!(partition.become_leader(5).unwrap());
        assert_eq!(epochs(&partition), before);
    }

    #[test]
    fn truncation_trims_the_cache_and_a_lost_checkpoint_is_rebuilt_from_the_batches() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path(), LastShutdown::Unclean);
        produce(&partition, 2);
        let middle = log_end(&partition);
        partition.become_leader(2).unwrap();
        partition.append(&batch(PRODUCER_ID + 2, 0, 2), 0).unwrap();
        partition.become_leader(4).unwrap();
        partition.append(&batch(PRODUCER_ID + 3, 0, 1), 0).unwrap();
        let recorded = epochs(&partition);
        assert_eq!(recorded[..2], [(0, 0), (2, middle)]);
        assert_eq!(recorded.len(), 3);

        drop(partition);
        let log_dir = dir.path().join("t-0");
        for damage in [None, Some("garbage\n")] {
            let path = log_dir.join(log::leader_epochs::LEADER_EPOCH_CHECKPOINT_FILE);
            match damage {
                None => std::fs::remove_file(&path).unwrap(),
                Some(text) => std::fs::write(&path, text).unwrap(),
            }
            let reopened = open_follower(dir.path(), LastShutdown::Unclean);
            assert_eq!(epochs(&reopened), recorded, "rebuilt after {damage:?}");
            assert_eq!(
                LeaderEpochCache::load(&log_dir).unwrap().unwrap(),
                reopened.leader_epochs()
            );
        }

        let partition = open_follower(dir.path(), LastShutdown::Unclean);
        partition.truncate_to(middle).unwrap();
        assert_eq!(epochs(&partition), vec![(0, 0)]);
        assert_eq!(checkpoint(dir.path()), "0\n1\n0 0\n");
    }

    /// The (epoch, start offset) pairs the checkpoint file holds (none without a file).
    fn published(dir: &Path) -> Vec<(i32, i64)> {
        let cache = LeaderEpochCache::load(&dir.join("t-0")).unwrap();
        (cache.unwrap_or_default().entries().iter())
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect()
    }

    /// Recovery's invariant (`recover_newer_epochs` reads the file, then the active
    /// segment only): every cached epoch starting below the active segment is published.
    fn assert_published_below_active(partition: &Partition, dir: &Path) {
        let active = active_segment_base(dir);
        let file = published(dir);
        for entry in epochs(partition).into_iter().filter(|e| e.1 < active) {
            assert!(
                file.contains(&entry),
                "{entry:?} below {active} missing: {file:?}"
            );
        }
    }

    #[test]
    fn a_roll_publishes_the_pending_leader_epochs_before_the_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open_follower(dir.path(), LastShutdown::Unclean);
        // The background writer never runs for it: only the log's rolls publish.
        partition.hold_epoch_checkpoint();
        for epoch in 1..=5 {
            partition.become_leader(epoch).unwrap();
            let start = log_end(&partition);
            assert!(
                !published(dir.path()).contains(&(epoch, start)),
                "pending only"
            );
            let active = active_segment_base(dir.path());
            let producer_id = PRODUCER_ID + i64::from(epoch);
            let mut sequence = 0;
            while active_segment_base(dir.path()) == active {
                assert!(sequence < 100, "segment.bytes is small: the log rolls");
                partition
                    .append(&batch(producer_id, sequence, 2), 0)
                    .unwrap();
                sequence += 2;
                assert_published_below_active(&partition, dir.path());
            }
            // The append that rolled returned with the epoch durable.
            assert!(published(dir.path()).contains(&(epoch, start)));
        }
        // A last epoch left pending in the active segment, then a crash.
        partition.become_leader(6).unwrap();
        partition.append(&batch(PRODUCER_ID + 6, 0, 2), 0).unwrap();
        let before = epochs(&partition);
        assert_eq!(before.len(), 6);
        assert!(!published(dir.path()).contains(&before[5]));
        drop(partition); // like kill -9: the pending change is lost
        let reopened = open_follower(dir.path(), LastShutdown::Unclean);
        assert_eq!(
            epochs(&reopened),
            before,
            "file plus the active segment's batches"
        );
    }

    #[test]
    fn a_follower_roll_publishes_the_pending_leader_epochs_first() {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = open_follower(dirs.0.path(), LastShutdown::Unclean);
        for epoch in 1..=4 {
            leader.become_leader(epoch).unwrap();
            let producer_id = PRODUCER_ID + i64::from(epoch);
            for sequence in 0..7 {
                leader.append(&batch(producer_id, sequence, 1), 0).unwrap();
            }
        }
        let read = leader.read(0, usize::MAX, true).unwrap();
        let follower = open_follower(dirs.1.path(), LastShutdown::Unclean);
        follower.hold_epoch_checkpoint();
        follower.become_follower(9).unwrap();
        let mut rolls = 0;
        for item in log::iter_batches(&read.records) {
            let (position, header) = item.unwrap();
            let one = read
                .records
                .slice(position..position + header.total_bytes());
            let active = active_segment_base(dirs.1.path());
            follower.append_replicated(&one, (1, 9), 1).unwrap();
            rolls += usize::from(active_segment_base(dirs.1.path()) != active);
            assert_published_below_active(&follower, dirs.1.path());
        }
        assert!(rolls >= 3, "{rolls} rolls");
        assert_eq!(epochs(&follower), epochs(&leader));
        drop(follower); // like kill -9
        let reopened = open_follower(dirs.1.path(), LastShutdown::Unclean);
        assert_eq!(epochs(&reopened), epochs(&leader));
    }

    #[test]
    fn clean_shutdown_publishes_the_pending_leader_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path(), LastShutdown::Unclean);
        partition.hold_epoch_checkpoint();
        produce(&partition, 1);
        partition.become_leader(3).unwrap();
        let start = log_end(&partition);
        assert!(!published(dir.path()).contains(&(3, start)));
        partition.close_cleanly().unwrap();
        assert_eq!(published(dir.path()), epochs(&partition));
        assert_eq!(published(dir.path()).last(), Some(&(3, start)));
    }

    #[test]
    fn a_deleted_partition_never_publishes_into_its_old_directory() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path(), LastShutdown::Unclean);
        partition.hold_epoch_checkpoint();
        produce(&partition, 1);
        partition.become_leader(3).unwrap(); // pending
        partition.delete().unwrap();
        assert!(!dir.path().join("t-0").exists());
        // A topic of the same name takes the directory; the old partition's change comes
        // late (as the background writer would publish it).
        let newer = open_follower(dir.path(), LastShutdown::Unclean);
        partition.flush_epoch_checkpoint();
        drop(partition);
        assert_eq!(
            published(dir.path()),
            vec![],
            "the new partition's empty cache"
        );
        assert_eq!(epochs(&newer), vec![]);
    }

    /// Base offset of the newest segment file in the partition directory.
    fn active_segment_base(dir: &Path) -> i64 {
        let names = std::fs::read_dir(dir.join("t-0")).unwrap();
        (names.filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log")?.parse::<i64>().ok()
        }))
        .max()
        .unwrap()
    }

    #[test]
    fn epochs_the_checkpoint_missed_are_recovered_from_the_active_segment() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path(), LastShutdown::Unclean);
        partition.become_leader(1).unwrap();
        produce(&partition, 18);
        let stale = checkpoint(dir.path());
        assert_eq!(stale, "0\n1\n1 0\n");
        partition.become_leader(4).unwrap();
        let start_4 = log_end(&partition);
        partition.append(&batch(PRODUCER_ID + 7, 0, 1), 0).unwrap();
        partition.become_leader(6).unwrap();
        let start_6 = log_end(&partition);
        partition.append(&batch(PRODUCER_ID + 8, 0, 1), 0).unwrap();
        partition.append(&batch(PRODUCER_ID + 8, 1, 1), 0).unwrap();
        let end = log_end(&partition);
        // The log rolled under epoch 1, and both new epochs start in the active segment.
        let active = active_segment_base(dir.path());
        assert!(0 < active && active <= start_4, "{active} vs {start_4}");
        drop(partition); // like kill -9
        // The checkpoint as a crash right after the first append of epoch 4 leaves it.
        let path = (dir.path().join("t-0")).join(log::leader_epochs::LEADER_EPOCH_CHECKPOINT_FILE);
        std::fs::write(&path, &stale).unwrap();

        for last_shutdown in [LastShutdown::Unclean, LastShutdown::Clean] {
            let partition = open_follower(dir.path(), last_shutdown);
            assert_eq!(epochs(&partition), vec![(1, 0), (4, start_4), (6, start_6)]);
            assert_eq!(partition.end_offset_for_epoch(4).unwrap(), (4, start_6));
            assert_eq!(partition.end_offset_for_epoch(6).unwrap(), (6, end));
            assert_eq!(
                checkpoint(dir.path()),
                format!("0\n3\n1 0\n4 {start_4}\n6 {start_6}\n"),
                "rewritten"
            );
            drop(partition);
            std::fs::write(&path, &stale).unwrap();
        }
    }

    #[test]
    fn truncation_removes_newer_snapshots_and_forgets_the_removed_batches() {
        let dir = tempfile::tempdir().unwrap();
        let partition = open(dir.path(), LastShutdown::Unclean);
        let offsets = produce(&partition, 30);
        partition.close_cleanly().unwrap();
        let log_dir = dir.path().join("t-0");
        let snapshots = list(&log_dir).unwrap();
        let cut = offsets[20];
        assert!(
            snapshots.iter().any(|&offset| offset > cut),
            "{snapshots:?} vs {cut}"
        );
        partition.truncate_to(cut).unwrap();
        assert_eq!(log_end(&partition), cut);
        assert!(list(&log_dir).unwrap().iter().all(|&offset| offset <= cut));
        // Batch 20 is gone: its retry is appended again at the log end; batch 19 is not.
        let retry = partition.append(&batch(PRODUCER_ID, 19 * 2, 2), 0).unwrap();
        assert_eq!(retry.base_offset, offsets[19]);
        let again = partition.append(&batch(PRODUCER_ID, 20 * 2, 2), 0).unwrap();
        assert_eq!(again.base_offset, cut);
        let expected = producers(&partition);
        drop(partition);
        let partition = open(dir.path(), LastShutdown::Unclean);
        assert_eq!(producers(&partition), expected);
    }
}

#[cfg(test)]
mod replication_tests {
    use super::*;
    use crate::log::test_support::encode_batch_sized;
    use kafka_protocol::records::Compression;

    /// Node `local` hosting partition t-0 under `dir`, following or leading per `view`.
    fn replica(dir: &Path, local: NodeId, view: &Leadership) -> Partition {
        let tp = TopicPartition::new("t", 0);
        let opened = (
            tp,
            Uuid::from_u128(7),
            dir.join(format!("n{local}")),
            LogConfig::default(),
        );
        let partition =
            Partition::open_at(opened, view.leader_epoch, 0, 0, LastShutdown::Unclean).unwrap();
        partition
            .apply_leadership(local, view, 0, Publish::Background)
            .unwrap();
        partition
    }

    fn view(leader: NodeId, leader_epoch: i32, isr: &[NodeId]) -> Leadership {
        Leadership {
            leader,
            leader_epoch,
            partition_epoch: leader_epoch,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        }
    }

    fn records(count: usize) -> Bytes {
        encode_batch_sized(&vec![100; count], Compression::None, 20).freeze()
    }

    fn high_watermark(partition: &Partition) -> i64 {
        partition.offsets().unwrap().1
    }

    /// Copies everything `follower` lacks from `leader` (one follower fetch round), then
    /// reports the follower's new log end to the leader as its next fetch would.
    fn replicate(leader: &Partition, follower: &Partition, follower_id: NodeId) {
        let fetch_offset = follower.offsets().unwrap().2;
        leader
            .record_follower_fetch(follower_id, (fetch_offset, 0), 1, FollowerBroker::ELIGIBLE)
            .unwrap();
        let read = leader.read_replica(fetch_offset, usize::MAX, true).unwrap();
        if !read.records.is_empty() {
            follower
                .append_replicated(&read.records, (1, 0), 1)
                .unwrap();
        }
        follower.follow_high_watermark(read.high_watermark, (1, 0));
        let caught_up = follower.offsets().unwrap().2;
        leader
            .record_follower_fetch(follower_id, (caught_up, 0), 1, FollowerBroker::ELIGIBLE)
            .unwrap();
    }

    /// The read-lock path takes a follower's fetch only when the full path would change
    /// nothing but its times; any other fetch falls to the full path (and its errors).
    #[test]
    fn an_unchanged_follower_fetch_is_taken_cheaply_only_when_nothing_else_changes() {
        let dir = tempfile::tempdir().unwrap();
        let leader = replica(dir.path(), 1, &view(1, 2, &[1, 2]));
        leader.append(&records(3), 1).unwrap();
        let cheap = |fetch: (i64, i32), now_ms| {
            let version = leader.version();
            let taken = leader.record_unchanged_follower_fetch(2, fetch, 0, now_ms);
            assert_eq!(leader.version(), version, "the cheap path moves no version");
            taken
        };
        assert!(!cheap((3, 2), 10), "not yet recorded at this end");
        leader
            .record_follower_fetch(2, (3, 2), 10, FollowerBroker::ELIGIBLE)
            .unwrap();
        leader.record_follower_log_start(2, 0);
        assert_eq!(high_watermark(&leader), 3);
        assert!(cheap((3, 2), 20));
        assert!(
            cheap((3, -1), 20),
            "no epoch given is not checked, as in Kafka"
        );
        assert!(!cheap((3, 1), 20), "a stale leader epoch");
        assert!(!cheap((3, 3), 20), "a future leader epoch");
        assert!(!cheap((2, 2), 20), "behind the end");
        assert!(
            !leader.record_unchanged_follower_fetch(2, (3, 2), 1, 20),
            "another log start"
        );
        assert!(
            !leader.record_unchanged_follower_fetch(3, (3, 2), 0, 20),
            "not in the ISR"
        );
        // A follower fetching this way for longer than the lag stays in the ISR; one that
        // then falls behind (Kafka never shrinks a follower at the log end) is shrunk once
        // the lag has passed since its last cheap fetch.
        const LAG_MS: i64 = 30_000;
        assert!(cheap((3, 2), 10 + 2 * LAG_MS));
        leader.append(&records(1), 1).unwrap();
        assert_eq!(leader.isr_shrink(10 + 3 * LAG_MS, LAG_MS), None);
        let shrunk = leader.isr_shrink(10 + 3 * LAG_MS + 1, LAG_MS).unwrap();
        assert_eq!(shrunk.new_isr, vec![1]);
        // An append makes the same fetch a full one.
        let (dir_led, dir_followed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let led = replica(dir_led.path(), 1, &view(1, 2, &[1, 2]));
        led.append(&records(3), 1).unwrap();
        led.record_follower_fetch(2, (3, 2), 10, FollowerBroker::ELIGIBLE)
            .unwrap();
        led.record_follower_log_start(2, 0);
        assert!(led.record_unchanged_follower_fetch(2, (3, 2), 0, 20));
        led.append(&records(1), 1).unwrap();
        assert!(!led.record_unchanged_follower_fetch(2, (3, 2), 0, 30));
        // Nor once the partition is followed here, or deleted.
        let followed = replica(dir_followed.path(), 1, &view(1, 2, &[1, 2]));
        followed.append(&records(3), 1).unwrap();
        followed
            .record_follower_fetch(2, (3, 2), 10, FollowerBroker::ELIGIBLE)
            .unwrap();
        followed.record_follower_log_start(2, 0);
        followed.become_follower(3).unwrap();
        assert!(!followed.record_unchanged_follower_fetch(2, (3, 3), 0, 20));
        led.delete().unwrap();
        assert!(!led.record_unchanged_follower_fetch(2, (4, 2), 0, 40));
    }

    /// Fetches skip re-reading a partition whose version did not move: every change a
    /// read could see must move it, and a follower fetch that changes nothing a read sees
    /// must not (or every follower fetch would force a re-read of every partition).
    #[test]
    fn the_version_moves_with_every_change_a_read_can_see_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let leader = replica(dir.path(), 1, &view(1, 0, &[1, 2]));
        let follower = replica(dir.path(), 2, &view(1, 0, &[1, 2]));
        let other = replica(dir.path(), 3, &view(1, 0, &[1, 2]));
        let seen = |p: &Partition| p.offsets_versioned().unwrap().0;
        assert_ne!(
            seen(&leader),
            seen(&other),
            "versions are unique over partitions"
        );

        let before = seen(&leader);
        leader.append(&records(3), 1).unwrap();
        let appended = seen(&leader);
        assert_ne!(appended, before, "an append moves the version");
        assert_eq!(leader.version(), appended, "a read changes nothing");
        let read = leader.read_replica(0, usize::MAX, true).unwrap();
        assert_eq!(read.version, appended);

        // The follower fetches at 0: progress only, nothing a read sees.
        let fetch = |offset| {
            leader
                .record_follower_fetch(2, (offset, 0), 1, FollowerBroker::ELIGIBLE)
                .unwrap()
        };
        fetch(0);
        assert_eq!(seen(&leader), appended);
        // Caught up: the high watermark moves, and the version with it.
        fetch(3);
        assert_eq!(high_watermark(&leader), 3);
        let committed = seen(&leader);
        assert_ne!(committed, appended);
        fetch(3);
        assert_eq!(seen(&leader), committed, "a repeated fetch changes nothing");
        // A follower's log start is no read's business either; reported again, it
        // takes no write at all.
        leader.record_follower_log_start(2, 0);
        let started = seen(&leader);
        leader.record_follower_log_start(2, 0);
        assert_eq!(seen(&leader), started);
        assert_eq!(leader.low_watermark(&|replica| replica == 2).unwrap(), 0);

        // The follower's side: its appends and high-watermark moves move its version.
        let follower_before = seen(&follower);
        let read = leader.read_replica(0, usize::MAX, true).unwrap();
        follower
            .append_replicated(&read.records, (1, 0), 1)
            .unwrap();
        let follower_appended = seen(&follower);
        assert_ne!(follower_appended, follower_before);
        follower.follow_high_watermark(3, (1, 0));
        assert_ne!(seen(&follower), follower_appended);
        // Every write guard leaves the log end it released behind for follower fetches.
        let released = |p: &Partition| p.state.read().unwrap().log_end_released;
        assert_eq!(released(&leader), 3);
        assert_eq!(released(&follower), 3);
        follower.truncate_to(1).unwrap();
        assert_eq!(released(&follower), follower.offsets().unwrap().2);
        assert!(released(&follower) < 3);
        // A leadership change moves it too (a fetch's epoch check reads it).
        let led = seen(&leader);
        leader
            .apply_leadership(1, &view(1, 1, &[1, 2]), 0, Publish::Background)
            .unwrap();
        assert_ne!(seen(&leader), led);
        // A flush that is not due takes no write (it is asked once a second of every
        // partition); a deletion moves the version (review finding: it did not).
        let flushed = leader.version();
        leader.flush_if_due(crate::types::now_ms()).unwrap();
        assert_eq!(leader.version(), flushed);
        assert!(leader.isr_shrink(0, 30_000).is_none());
        assert_eq!(leader.version(), flushed, "nothing to shrink, no write");
        leader.delete().unwrap();
        assert_ne!(leader.version(), flushed, "a deletion moves the version");
    }

    #[tokio::test]
    async fn the_high_watermark_follows_the_isr_and_followers_keep_the_leaders_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let isr = [1, 2, 3];
        let leader = replica(dir.path(), 1, &view(1, 0, &isr));
        let second = replica(dir.path(), 2, &view(1, 0, &isr));
        let third = replica(dir.path(), 3, &view(1, 0, &isr));
        let appended = leader.append(&records(3), 0).unwrap();
        assert_eq!((appended.base_offset, appended.end_offset), (0, 3));
        assert_eq!(high_watermark(&leader), 0, "no follower has fetched yet");
        assert!(matches!(
            second.append(&records(1), 0),
            Err(ReplicaError::NotLeader)
        ));

        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        let waited = leader.wait_committed(3, 0, deadline).await;
        assert!(
            matches!(waited, Err(ReplicaError::ReplicationTimedOut)),
            "{waited:?}"
        );

        replicate(&leader, &second, 2);
        assert_eq!(
            high_watermark(&leader),
            0,
            "replica 3 is in the ISR and has nothing"
        );
        assert!(leader.read(0, usize::MAX, true).unwrap().records.is_empty());
        replicate(&leader, &third, 3);
        assert_eq!(high_watermark(&leader), 3);
        leader.wait_committed(3, 0, deadline).await.unwrap();
        // The followers hold the leader's batches at the leader's offsets and epoch.
        let copied = third.read_replica(0, usize::MAX, true).unwrap().records;
        let original = leader.read(0, usize::MAX, true).unwrap().records;
        assert_eq!(copied, original);
        assert_eq!(
            high_watermark(&third),
            0,
            "it learns the new watermark next fetch"
        );
        replicate(&leader, &third, 3);
        assert_eq!(high_watermark(&third), 3);

        // A follower claiming more than the leader has is refused, not recorded.
        let ahead = leader.record_follower_fetch(2, (99, 0), 1, FollowerBroker::ELIGIBLE);
        assert!(matches!(ahead, Err(ReplicaError::Log(_))), "{ahead:?}");
        assert_eq!(high_watermark(&leader), 3);
        // Progress sent for another leader epoch does not count.
        let stale = leader.record_follower_fetch(2, (3, 1), 1, FollowerBroker::ELIGIBLE);
        assert!(
            matches!(stale, Err(ReplicaError::UnknownLeaderEpoch { .. })),
            "{stale:?}"
        );
    }

    #[test]
    fn a_new_leader_knows_its_committed_end_only_once_its_watermark_reaches_its_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let leader = replica(dir.path(), 1, &view(1, 0, &[1, 2]));
        let follower = replica(dir.path(), 2, &view(1, 0, &[1, 2]));
        leader.append(&records(3), 0).unwrap();
        assert_eq!(leader.committed_end().unwrap(), (0, 0));
        // The follower has every record but learns the watermark only on its next fetch.
        replicate(&leader, &follower, 2);
        assert_eq!(high_watermark(&leader), 3);
        assert_eq!(high_watermark(&follower), 0);
        assert!(matches!(
            follower.committed_end(),
            Err(ReplicaError::NotLeader)
        ));

        follower
            .apply_leadership(2, &view(2, 1, &[2, 1]), 1, Publish::Background)
            .unwrap();
        let unknown = follower.committed_end();
        assert!(
            matches!(
                unknown,
                Err(ReplicaError::OffsetNotAvailable {
                    high_watermark: 0,
                    epoch_start: 3
                })
            ),
            "{unknown:?}"
        );
        // Its only ISR peer fetches at the new epoch: the watermark reaches the epoch start.
        follower
            .record_follower_fetch(1, (3, 1), 2, FollowerBroker::ELIGIBLE)
            .unwrap();
        assert_eq!(high_watermark(&follower), 3);
        assert_eq!(follower.committed_end().unwrap(), (3, 1));
    }

    #[test]
    fn the_largest_timestamp_is_hidden_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let leader = replica(dir.path(), 1, &view(1, 0, &[1, 2]));
        let follower = replica(dir.path(), 2, &view(1, 0, &[1, 2]));
        leader.append(&records(2), 0).unwrap();
        assert_eq!(leader.max_timestamp_offset().unwrap(), None);
        replicate(&leader, &follower, 2);
        assert!(leader.max_timestamp_offset().unwrap().is_some());
    }

    #[test]
    fn a_follower_applies_nothing_fetched_for_a_leadership_it_no_longer_follows() {
        let dir = tempfile::tempdir().unwrap();
        let leader = replica(dir.path(), 1, &view(1, 0, &[1, 2]));
        let follower = replica(dir.path(), 2, &view(1, 0, &[1, 2]));
        leader.append(&records(2), 0).unwrap();
        let fetched = leader.read_replica(0, usize::MAX, true).unwrap().records;
        follower.append_replicated(&fetched, (1, 0), 1).unwrap();
        let end = follower.offsets().unwrap().2;

        // Leadership moved to 3 at epoch 1 while a response from 1 and an
        // OffsetForLeaderEpoch answer were on their way: neither may touch the log.
        follower
            .apply_leadership(2, &view(3, 1, &[3, 2]), 1, Publish::Background)
            .unwrap();
        let late = follower.append_replicated(&fetched, (1, 0), 1);
        assert!(matches!(late, Err(ReplicaError::NotLeader)), "{late:?}");
        let cut = follower.truncate_following(0, (1, 0));
        assert!(matches!(cut, Err(ReplicaError::NotLeader)), "{cut:?}");
        follower.follow_high_watermark(2, (1, 0));
        assert_eq!(follower.offsets().unwrap(), (0, 0, end));
        // Leading now, it refuses a follower's truncation outright.
        follower
            .apply_leadership(2, &view(2, 2, &[2]), 1, Publish::Background)
            .unwrap();
        let cut = follower.truncate_following(0, (3, 1));
        assert!(matches!(cut, Err(ReplicaError::NotLeader)), "{cut:?}");
        follower.truncate_following(0, (2, 2)).unwrap_err();
        assert_eq!(follower.offsets().unwrap().2, end);
    }

    #[tokio::test]
    async fn acks_all_needs_min_insync_and_fails_when_leadership_moves() {
        let dir = tempfile::tempdir().unwrap();
        let leader = replica(dir.path(), 1, &view(1, 0, &[1]));
        leader.set_config(LogConfig {
            min_insync_replicas: 2,
            ..LogConfig::default()
        });
        let refused = leader.append(&records(1), 0);
        assert!(
            matches!(
                refused,
                Err(ReplicaError::NotEnoughReplicas { isr: 1, min: 2 })
            ),
            "{refused:?}"
        );
        // acks=1 does not look at the ISR.
        let outcome = leader
            .append_with(&records(1), 0, RequiredAcks::Leader)
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let after = leader.wait_committed(outcome.end_offset, 0, deadline).await;
        assert!(
            matches!(
                after,
                Err(ReplicaError::NotEnoughReplicasAfterAppend { .. })
            ),
            "{after:?}"
        );

        // A parked acks=all produce learns at once that another broker leads now.
        leader.set_config(LogConfig::default());
        leader
            .apply_leadership(1, &view(1, 1, &[1, 2]), 0, Publish::Background)
            .unwrap();
        let outcome = leader.append(&records(1), 0).unwrap();
        let waiting = leader.wait_committed(outcome.end_offset, 1, deadline);
        let moved = async {
            tokio::task::yield_now().await;
            leader
                .apply_leadership(1, &view(2, 2, &[2]), 0, Publish::Background)
                .unwrap();
        };
        let (waited, ()) = tokio::join!(waiting, moved);
        assert!(matches!(waited, Err(ReplicaError::NotLeader)), "{waited:?}");
    }

    #[test]
    fn commit_settled_answers_what_the_wait_would_at_once_and_nothing_while_it_waits() {
        let dir = tempfile::tempdir().unwrap();
        // The leader alone in the ISR: committed as it lands.
        let alone = replica(dir.path(), 1, &view(1, 0, &[1]));
        let outcome = alone.append(&records(2), 0).unwrap();
        assert!(matches!(
            alone.commit_settled(outcome.end_offset, 0),
            Some(Ok(()))
        ));
        let other_epoch = alone.commit_settled(outcome.end_offset, 1);
        assert!(matches!(other_epoch, Some(Err(ReplicaError::NotLeader))));

        // With a follower in the ISR: pending until it fetched the records.
        let dir = tempfile::tempdir().unwrap();
        let leader = replica(dir.path(), 1, &view(1, 0, &[1, 2]));
        let follower = replica(dir.path(), 2, &view(1, 0, &[1, 2]));
        let outcome = leader.append(&records(3), 0).unwrap();
        assert!(leader.commit_settled(outcome.end_offset, 0).is_none());
        replicate(&leader, &follower, 2);
        assert!(matches!(
            leader.commit_settled(outcome.end_offset, 0),
            Some(Ok(()))
        ));

        // Committed, but the ISR is below min.insync.replicas now.
        leader.set_config(LogConfig {
            min_insync_replicas: 3,
            ..LogConfig::default()
        });
        let short = leader.commit_settled(outcome.end_offset, 0);
        assert!(
            matches!(
                short,
                Some(Err(ReplicaError::NotEnoughReplicasAfterAppend {
                    isr: 2,
                    min: 3
                }))
            ),
            "{short:?}"
        );
        // Another broker leads now.
        leader
            .apply_leadership(1, &view(2, 1, &[2]), 0, Publish::Background)
            .unwrap();
        let moved = leader.commit_settled(outcome.end_offset, 0);
        assert!(
            matches!(moved, Some(Err(ReplicaError::NotLeader))),
            "{moved:?}"
        );
    }

    #[test]
    fn a_follower_behind_the_leaders_log_start_restarts_there() {
        let dir = tempfile::tempdir().unwrap();
        let follower = replica(dir.path(), 2, &view(1, 3, &[1, 2]));
        let mut batch = records(2).to_vec();
        batch[..8].copy_from_slice(&0i64.to_be_bytes());
        follower
            .append_replicated(&Bytes::from(batch), (1, 3), 1)
            .unwrap();
        assert!(
            follower.restart_following_at(1, (1, 3)).is_err(),
            "not forward"
        );
        assert!(
            follower.restart_following_at(50, (1, 2)).is_err(),
            "another epoch"
        );
        follower.restart_following_at(50, (1, 3)).unwrap();
        assert_eq!(follower.offsets().unwrap(), (50, 50, 50));
        assert!(follower.leader_epochs().entries().is_empty());
        // It goes on from there with the leader's batches.
        let mut next = records(1).to_vec();
        next[..8].copy_from_slice(&50i64.to_be_bytes());
        follower
            .append_replicated(&Bytes::from(next), (1, 3), 1)
            .unwrap();
        assert_eq!(follower.offsets().unwrap().2, 51);
        drop(follower);
        let reopened = replica(dir.path(), 2, &view(1, 3, &[1, 2]));
        assert_eq!(reopened.offsets().unwrap().0, 50);
    }

    #[test]
    fn isr_changes_are_proposed_once_and_applied_from_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let leader = replica(dir.path(), 1, &view(1, 0, &[1, 2]));
        let follower = replica(dir.path(), 3, &view(1, 0, &[1, 2]));
        leader.append(&records(2), 0).unwrap();
        // 2 never fetches: after the lag it is proposed out, once.
        let shrink = leader.isr_shrink(30_001, 30_000).expect("2 is behind");
        assert_eq!(shrink.new_isr, vec![1]);
        assert!(
            leader.isr_shrink(60_000, 30_000).is_none(),
            "one change at a time"
        );
        let answer = IsrAnswer::Changed {
            isr: &[1],
            leader_epoch: 0,
            partition_epoch: 1,
        };
        leader.isr_change_answered(&shrink, answer, 30_002);
        assert_eq!(leader.in_sync_replicas(), Some(vec![1]));
        assert_eq!(
            high_watermark(&leader),
            2,
            "the leader alone is the ISR now"
        );

        // 3 catches up: its fetch at the log end proposes it.
        let fetched = leader.read_replica(0, usize::MAX, true).unwrap();
        follower
            .append_replicated(&fetched.records, (1, 0), 1)
            .unwrap();
        let proposal = leader
            .record_follower_fetch(3, (2, 0), 30_003, FollowerBroker::ELIGIBLE)
            .unwrap()
            .expect("3 reached the high watermark");
        assert_eq!(
            (proposal.new_isr.clone(), proposal.partition_epoch),
            (vec![1, 3], 1)
        );
        // Unknown outcome (the call timed out): still pending, 3 still counts for the HW.
        leader.isr_change_answered(&proposal, IsrAnswer::Unsettled, 30_004);
        assert!(leader.proposal_pending(&proposal));
        assert!(
            leader
                .record_follower_fetch(3, (2, 0), 30_005, FollowerBroker::ELIGIBLE)
                .unwrap()
                .is_none()
        );
        // Refused (say, 3 got fenced meanwhile): nothing changes, the next fetch asks again.
        leader.isr_change_answered(&proposal, IsrAnswer::Refused, 30_006);
        assert_eq!(leader.in_sync_replicas(), Some(vec![1]));
        assert!(!leader.proposal_pending(&proposal));
        // It asks again, naming the broker epoch 3 fetched with this time (KIP-903).
        let fetched_with = FollowerBroker {
            epoch: 42,
            eligible: true,
        };
        let again = leader
            .record_follower_fetch(3, (2, 0), 30_007, fetched_with)
            .unwrap()
            .expect("asked again");
        assert_eq!(again.broker_epochs, vec![(3, 42)]);
        assert!(
            proposal.broker_epochs.is_empty(),
            "no epoch sent, none named"
        );
        let pending = leader
            .record_follower_fetch(3, (2, 0), 30_008, FollowerBroker::ELIGIBLE)
            .unwrap();
        assert!(pending.is_none(), "proposed already, not answered yet");
    }
}

#[cfg(test)]
#[path = "partition_txn_tests.rs"]
mod txn_tests;

#[path = "partition_log_start.rs"]
mod log_start;
