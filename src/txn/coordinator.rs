//! The transaction coordinator (Kafka's TransactionCoordinator + TransactionStateManager,
//! transaction versions 1 and 2): owns the transactional ids that hash to the
//! `__transaction_state` partitions this broker leads. Each request runs with the
//! transaction version its API version names (`version`); `state` and `end_txn` decide.
//!
//! Every change follows one path ([`TransactionCoordinator::write`]): decide it purely
//! (`state`), mark the id pending (other requests answer CONCURRENT_TRANSACTIONS), append
//! the record and wait until it is committed (acks=all, `group::write_committed`), then
//! install it, unless the partition was unloaded or reloaded meanwhile (NOT_COORDINATOR).
//! The write runs in a task of its own, so a request dropped mid-way cannot leave an id
//! pending forever.
//!
//! A committed PrepareCommit/PrepareAbort is answered at once; a completion task then
//! sends its markers to every partition (`markers`) and writes CompleteCommit or
//! CompleteAbort. A partition loaded with prepared transactions resumes them the same way,
//! so a transaction whose coordinator died between EndTxn and the markers still completes.
//!
//! The coordinator epoch written into markers is the `__transaction_state` partition's
//! leader epoch the state was loaded at.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::error::TxnError;
use super::markers::{MarkerJob, MarkerOutcome, MarkerSender};
use super::records::{self, TxnPartitions, TxnStatus};
use super::state::{self, EndDecision, InitDecision, TxnMetadata};
use super::version::TxnVersion;
use crate::group::offsets::partition_for;
use crate::group::writer::{WriteTarget, write_committed};
use crate::replica::Partition;
use crate::types::now_ms;

/// The internal topic holding transaction state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Retry pause for a completion record that could not be written (not for NOT_COORDINATOR:
/// the new coordinator completes the transaction).
const COMPLETE_RETRY_BACKOFF: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct TxnCoordinatorConfig {
    /// `transaction.state.log.num.partitions`
    pub partitions: i32,
    /// `transaction.max.timeout.ms`
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`
    pub id_expiration_ms: i64,
    /// How long a state write waits for the partition's in-sync replicas.
    pub write_timeout: Duration,
}

/// Where new producer ids come from (the broker's `ProducerIdManager`; a counter in tests).
pub trait ProducerIdSource: Send + Sync {
    fn next_id(&self) -> Pin<Box<dyn Future<Output = Result<i64, TxnError>> + Send + '_>>;
}

impl ProducerIdSource for super::producer_ids::ProducerIdManager {
    fn next_id(&self) -> Pin<Box<dyn Future<Output = Result<i64, TxnError>> + Send + '_>> {
        Box::pin(async move {
            super::producer_ids::ProducerIdManager::next_id(self)
                .await
                .map_err(|error| TxnError::NotAvailable(error.to_string()))
        })
    }
}

/// The transactions of one loaded `__transaction_state` partition.
pub(super) struct Shard {
    pub(super) leader_epoch: i32,
    pub(super) log: Arc<Partition>,
    pub(super) txns: HashMap<String, TxnMetadata>,
}

#[derive(Default)]
pub(super) struct Shards {
    pub(super) loaded: HashMap<i32, Shard>,
    /// Partitions being loaded, and the leader epoch each is loaded at.
    pub(super) loading: HashMap<i32, i32>,
}

/// One transaction as DescribeTransactions / ListTransactions show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub metadata: TxnMetadata,
}

#[derive(Clone)]
pub struct TransactionCoordinator {
    pub(super) config: Arc<TxnCoordinatorConfig>,
    pub(super) shards: Arc<Mutex<Shards>>,
    markers: Arc<dyn MarkerSender>,
    /// The cluster's finalized `transaction.version` (set from every image), which picks
    /// the `__transaction_state` value version written.
    cluster_version: Arc<std::sync::atomic::AtomicI16>,
}

/// Std mutex over plain maps, never held across an await; poison is ignored.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Who owns a transactional id here: its partition, the epoch it was loaded at, the log.
#[derive(Clone)]
struct Owner {
    partition: i32,
    leader_epoch: i32,
    log: Arc<Partition>,
}

impl TransactionCoordinator {
    pub fn new(config: TxnCoordinatorConfig, markers: Arc<dyn MarkerSender>) -> Self {
        TransactionCoordinator {
            config: Arc::new(config),
            shards: Arc::new(Mutex::new(Shards::default())),
            markers,
            cluster_version: Arc::new(std::sync::atomic::AtomicI16::new(
                crate::controller::features::TRANSACTION_VERSION_FINALIZED,
            )),
        }
    }

    /// Follows the cluster's finalized `transaction.version` (the reconciler calls this
    /// with every image).
    pub fn set_cluster_version(&self, level: i16) {
        self.cluster_version
            .store(level, std::sync::atomic::Ordering::Relaxed);
    }

    /// Kafka's `partitionFor`: Java's String.hashCode, as for groups.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.config.partitions)
    }

    pub fn is_loaded(&self, partition: i32) -> bool {
        lock(&self.shards).loaded.contains_key(&partition)
    }

    /// The owner of `transactional_id` here: COORDINATOR_LOAD_IN_PROGRESS while its
    /// partition loads, NOT_COORDINATOR when it is not led here (or the log's leadership
    /// moved past the epoch it was loaded at).
    fn owner(&self, transactional_id: &str) -> Result<Owner, TxnError> {
        let partition = self.partition_for(transactional_id);
        let shards = lock(&self.shards);
        if shards.loading.contains_key(&partition) {
            return Err(TxnError::LoadInProgress);
        }
        let shard = shards
            .loaded
            .get(&partition)
            .ok_or(TxnError::NotCoordinator)?;
        if shard.log.leadership() != (shard.leader_epoch, true) {
            return Err(TxnError::NotCoordinator);
        }
        Ok(Owner {
            partition,
            leader_epoch: shard.leader_epoch,
            log: shard.log.clone(),
        })
    }

    /// Runs `f` on the owner's shard if it is still loaded at the owner's epoch.
    fn with_shard<R>(&self, owner: &Owner, f: impl FnOnce(&mut Shard) -> R) -> Result<R, TxnError> {
        let mut shards = lock(&self.shards);
        match shards.loaded.get_mut(&owner.partition) {
            Some(shard) if shard.leader_epoch == owner.leader_epoch => Ok(f(shard)),
            _ => Err(TxnError::NotCoordinator),
        }
    }

    fn owns(&self, partition: i32, leader_epoch: i32) -> bool {
        lock(&self.shards)
            .loaded
            .get(&partition)
            .is_some_and(|shard| shard.leader_epoch == leader_epoch)
    }

    /// InitProducerId with a transactional id: (producer id, epoch).
    pub async fn init_producer_id(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        ids: &dyn ProducerIdSource,
    ) -> Result<(i64, i16), TxnError> {
        if transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest("empty transactional id".into()));
        }
        state::check_timeout(timeout_ms, self.config.max_timeout_ms)?;
        let owner = self.owner(transactional_id)?;
        let needs_id = self.with_shard(&owner, |shard| {
            shard
                .txns
                .get(transactional_id)
                .is_none_or(|meta| meta.needs_new_producer_id(expected))
        })?;
        let new_id = if needs_id {
            Some(ids.next_id().await?)
        } else {
            None
        };
        let now = now_ms();
        let decision = self.with_shard(&owner, |shard| {
            let meta = match (shard.txns.get_mut(transactional_id), new_id) {
                (Some(meta), _) => meta,
                (None, Some(id)) => shard
                    .txns
                    .entry(transactional_id.to_string())
                    .or_insert_with(|| TxnMetadata::new(id, timeout_ms, now)),
                // Removed (expired) while the id was allocated: the client retries.
                (None, None) => return Err(TxnError::ConcurrentTransactions),
            };
            let decision = meta.init_producer_id(timeout_ms, expected, new_id, now)?;
            let (InitDecision::Write(target) | InitDecision::FenceAndAbort(target)) = &decision;
            meta.pending = Some(target.state);
            Ok::<_, TxnError>(decision)
        })??;
        match decision {
            InitDecision::Write(target) => {
                let done = self.write(&owner, transactional_id, target).await?;
                Ok((done.producer_id, done.producer_epoch))
            }
            InitDecision::FenceAndAbort(target) => {
                self.write(&owner, transactional_id, target).await?;
                self.spawn_completion(owner, transactional_id.to_string());
                // The client retries; it gets its epoch once the abort completed.
                Err(TxnError::ConcurrentTransactions)
            }
        }
    }

    /// AddPartitionsToTxn v0-3 and AddOffsetsToTxn (transaction version 0).
    pub async fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &TxnPartitions,
    ) -> Result<(), TxnError> {
        let (id, epoch) = (producer_id, producer_epoch);
        self.add_partitions_as(transactional_id, id, epoch, partitions, TxnVersion::V0)
            .await
    }

    /// AddPartitionsToTxn from a client of `version`, or (v4+ without `verify_only`) from
    /// a partition leader adding a partition for a version 2 producer.
    pub async fn add_partitions_as(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &TxnPartitions,
        version: TxnVersion,
    ) -> Result<(), TxnError> {
        let owner = self.owner(transactional_id)?;
        let now = now_ms();
        let target = self.with_shard(&owner, |shard| {
            let meta = shard
                .txns
                .get_mut(transactional_id)
                .ok_or(TxnError::InvalidProducerIdMapping)?;
            let target =
                meta.add_partitions(producer_id, producer_epoch, partitions, version, now)?;
            if let Some(target) = &target {
                meta.pending = Some(target.state);
            }
            Ok::<_, TxnError>(target)
        })??;
        match target {
            Some(target) => self.write(&owner, transactional_id, target).await.map(drop),
            None => Ok(()),
        }
    }

    /// AddPartitionsToTxn v4+ `verify_only`: per partition, whether it is in the
    /// ongoing transaction (nothing is written).
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &TxnPartitions,
    ) -> Result<state::PartitionVerdicts, TxnError> {
        let owner = self.owner(transactional_id)?;
        self.with_shard(&owner, |shard| {
            shard
                .txns
                .get(transactional_id)
                .ok_or(TxnError::InvalidProducerIdMapping)?
                .verify_partitions(producer_id, producer_epoch, partitions)
        })?
    }

    /// EndTxn v0-4 (transaction version 1): answers once PrepareCommit/PrepareAbort is
    /// committed; the markers and the completion follow in the background.
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), TxnError> {
        let owner = self.owner(transactional_id)?;
        self.end(owner, transactional_id, |meta, now| {
            meta.end_txn(producer_id, producer_epoch, commit, now)
        })
        .await
        .map(drop)
    }

    /// EndTxn v5+ (transaction version 2): as [`end_txn`](Self::end_txn), at the next
    /// epoch (a new producer id when the epoch is exhausted). Answers the producer id and
    /// epoch the client goes on with.
    pub async fn end_txn_v2(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        ids: &dyn ProducerIdSource,
    ) -> Result<(i64, i16), TxnError> {
        let owner = self.owner(transactional_id)?;
        let needs_id = self.with_shard(&owner, |shard| {
            shard
                .txns
                .get(transactional_id)
                .is_some_and(TxnMetadata::end_needs_producer_id)
        })?;
        let next_id = if needs_id {
            Some(ids.next_id().await?)
        } else {
            None
        };
        self.end(owner, transactional_id, |meta, now| {
            meta.end_txn_v2(producer_id, producer_epoch, commit, next_id, now)
        })
        .await
    }

    /// Decides an EndTxn on the id's metadata, writes a prepare and starts its
    /// completion. Returns the producer the client goes on with (version 2's answer).
    async fn end(
        &self,
        owner: Owner,
        transactional_id: &str,
        decide: impl FnOnce(&TxnMetadata, i64) -> Result<EndDecision, TxnError>,
    ) -> Result<(i64, i16), TxnError> {
        let now = now_ms();
        let (decision, current) = self.with_shard(&owner, |shard| {
            let meta = shard
                .txns
                .get_mut(transactional_id)
                .ok_or(TxnError::InvalidProducerIdMapping)?;
            let decision = decide(meta, now)?;
            if let EndDecision::Prepare(target) = &decision {
                meta.pending = Some(target.state);
            }
            Ok::<_, TxnError>((decision, meta.producer_after_end()))
        })??;
        match decision {
            EndDecision::AlreadyDone => Ok(current),
            EndDecision::Prepare(target) => {
                let installed = self.write(&owner, transactional_id, target).await?;
                self.spawn_completion(owner, transactional_id.to_string());
                Ok(installed.producer_after_end())
            }
        }
    }

    /// Writes `target` (the id already marked pending), installs it once committed.
    /// Runs as its own task: the pending mark is always cleared.
    async fn write(
        &self,
        owner: &Owner,
        transactional_id: &str,
        target: TxnMetadata,
    ) -> Result<TxnMetadata, TxnError> {
        let record = target.to_record();
        let level = self
            .cluster_version
            .load(std::sync::atomic::Ordering::Relaxed);
        let value = records::encode_value(&record, records::value_version(&record, level));
        self.write_record(owner, transactional_id, Some(value), Some(target))
            .await
            .map(|installed| installed.expect("a value write installs its target"))
    }

    /// The write path for values and tombstones (`target` None: remove the id).
    async fn write_record(
        &self,
        owner: &Owner,
        transactional_id: &str,
        value: Option<bytes::Bytes>,
        target: Option<TxnMetadata>,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        let this = self.clone();
        let owner = owner.clone();
        let id = transactional_id.to_string();
        let task = tokio::spawn(async move {
            let key = records::encode_key(&id);
            let write_target = WriteTarget {
                log: &owner.log,
                leader_epoch: owner.leader_epoch,
                timeout: this.config.write_timeout,
            };
            let written = write_committed(write_target, vec![(key, value)], now_ms()).await;
            this.install(&owner, &id, written.map_err(TxnError::from), target)
        });
        task.await
            .map_err(|error| TxnError::Storage(format!("state write task: {error}")))?
    }

    /// Installs a committed write (or clears the pending mark of a failed one).
    fn install(
        &self,
        owner: &Owner,
        transactional_id: &str,
        written: Result<i64, TxnError>,
        target: Option<TxnMetadata>,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.with_shard(owner, |shard| match (written, target) {
            (Ok(_), Some(target)) => {
                if let Some(meta) = shard.txns.get_mut(transactional_id) {
                    assert!(
                        target.producer_epoch >= meta.producer_epoch
                            || target.producer_id != meta.producer_id,
                        "an epoch never goes backwards"
                    );
                    *meta = target.clone();
                }
                Ok(Some(target))
            }
            (Ok(_), None) => {
                shard.txns.remove(transactional_id);
                Ok(None)
            }
            (Err(error), _) => {
                if let Some(meta) = shard.txns.get_mut(transactional_id) {
                    meta.pending = None;
                }
                Err(error)
            }
        })?
    }

    /// Sends the markers of the prepared transaction `transactional_id` and writes its
    /// completion, in the background, for as long as `owner` owns it.
    fn spawn_completion(&self, owner: Owner, transactional_id: String) {
        let this = self.clone();
        tokio::spawn(async move { this.complete(owner, transactional_id).await });
    }

    async fn complete(&self, owner: Owner, transactional_id: String) {
        let prepared = self.with_shard(&owner, |shard| shard.txns.get(&transactional_id).cloned());
        let Ok(Some(prepared)) = prepared else { return };
        let Some((producer_id, producer_epoch, commit)) = prepared.marker() else {
            return;
        };
        let job = MarkerJob {
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch: owner.leader_epoch,
            partitions: prepared.partitions.clone(),
        };
        let still_wanted = {
            let this = self.clone();
            let (partition, epoch) = (owner.partition, owner.leader_epoch);
            Arc::new(move || this.owns(partition, epoch))
        };
        // A version 2 abort of a transaction that added no partition has no marker to send.
        if !job.partitions.is_empty()
            && self.markers.send(job, still_wanted).await == MarkerOutcome::Abandoned
        {
            return;
        }
        loop {
            let now = now_ms();
            let target = self.with_shard(&owner, |shard| {
                let meta = shard.txns.get_mut(&transactional_id)?;
                if meta.marker() != prepared.marker() || meta.pending.is_some() {
                    return None;
                }
                let target = meta.complete(now);
                meta.pending = Some(target.state);
                Some(target)
            });
            let Ok(Some(target)) = target else { return };
            match self.write(&owner, &transactional_id, target).await {
                Ok(_) => return,
                // NOT_COORDINATOR also stands for a storage fault on a partition still led
                // here at the same epoch: retry until the shard is really gone (the next
                // `with_shard` ends the loop then), or the transaction stays prepared and
                // every request for the id answers CONCURRENT_TRANSACTIONS.
                Err(error) => {
                    tracing::warn!(transactional_id, %error, "completion not written; retrying");
                    tokio::time::sleep(COMPLETE_RETRY_BACKOFF).await;
                }
            }
        }
    }

    /// Resumes every prepared transaction of a freshly loaded partition.
    pub(super) fn resume_prepared(&self, partition: i32) {
        let (owner, prepared) = {
            let shards = lock(&self.shards);
            let Some(shard) = shards.loaded.get(&partition) else {
                return;
            };
            let owner = Owner {
                partition,
                leader_epoch: shard.leader_epoch,
                log: shard.log.clone(),
            };
            let prepared: Vec<String> = shard
                .txns
                .iter()
                .filter(|(_, meta)| meta.marker().is_some())
                .map(|(id, _)| id.clone())
                .collect();
            (owner, prepared)
        };
        for id in prepared {
            self.spawn_completion(owner.clone(), id);
        }
    }

    /// Kafka's `abortTimedOutTransactions`: fences and aborts every Ongoing transaction
    /// past its timeout; returns how many were started.
    pub fn abort_timed_out(&self, now: i64) -> usize {
        let due = self.select(|meta| meta.timed_out(now));
        let count = due.len();
        for (owner, id) in due {
            let this = self.clone();
            tokio::spawn(async move {
                let target = this.with_shard(&owner, |shard| {
                    let meta = shard.txns.get_mut(&id).filter(|m| m.timed_out(now))?;
                    let target = meta.fence(now);
                    meta.pending = Some(target.state);
                    Some(target)
                });
                let Ok(Some(target)) = target else { return };
                tracing::info!(transactional_id = id, "aborting a timed-out transaction");
                match this.write(&owner, &id, target).await {
                    Ok(_) => this.spawn_completion(owner, id),
                    Err(error) => tracing::warn!(id, %error, "timed-out abort not written"),
                }
            });
        }
        count
    }

    /// Kafka's `removeExpiredTransactionalIds`: tombstones for ids unused for
    /// `transactional.id.expiration.ms`; returns how many were started.
    pub fn expire_ids(&self, now: i64) -> usize {
        let expiration = self.config.id_expiration_ms;
        let due = self.select(|meta| meta.expired(now, expiration));
        let count = due.len();
        for (owner, id) in due {
            let this = self.clone();
            tokio::spawn(async move {
                let marked = this.with_shard(&owner, |shard| {
                    let meta = shard
                        .txns
                        .get_mut(&id)
                        .filter(|m| m.expired(now, expiration));
                    meta.map(|meta| meta.pending = Some(TxnStatus::Dead))
                        .is_some()
                });
                if marked != Ok(true) {
                    return;
                }
                if let Err(error) = this.write_record(&owner, &id, None, None).await {
                    tracing::warn!(id, %error, "expired transactional id not removed");
                }
            });
        }
        count
    }

    /// The ids of loaded partitions whose metadata satisfies `wanted`.
    fn select(&self, wanted: impl Fn(&TxnMetadata) -> bool) -> Vec<(Owner, String)> {
        let shards = lock(&self.shards);
        let mut selected = Vec::new();
        for (partition, shard) in &shards.loaded {
            let owner = Owner {
                partition: *partition,
                leader_epoch: shard.leader_epoch,
                log: shard.log.clone(),
            };
            for (id, meta) in &shard.txns {
                if wanted(meta) {
                    selected.push((owner.clone(), id.clone()));
                }
            }
        }
        selected
    }

    /// DescribeTransactions of one id.
    pub fn describe(&self, transactional_id: &str) -> Result<TxnMetadata, TxnError> {
        let owner = self.owner(transactional_id)?;
        self.with_shard(&owner, |shard| shard.txns.get(transactional_id).cloned())?
            .ok_or(TxnError::TransactionalIdNotFound)
    }

    /// ListTransactions: every id of the loaded partitions that passes the filters
    /// (empty filter lists match everything; `duration_ms` < 0 matches everything), and
    /// whether some partition is still loading (Kafka answers
    /// COORDINATOR_LOAD_IN_PROGRESS with what it has).
    pub fn list(
        &self,
        states: &[TxnStatus],
        producer_ids: &[i64],
        duration_ms: i64,
        now: i64,
    ) -> (Vec<TxnDescription>, bool) {
        let shards = lock(&self.shards);
        let mut listed = Vec::new();
        for shard in shards.loaded.values() {
            for (id, meta) in &shard.txns {
                let state_ok = states.is_empty() || states.contains(&meta.state);
                let producer_ok =
                    producer_ids.is_empty() || producer_ids.contains(&meta.producer_id);
                let duration_ok =
                    duration_ms < 0 || now.saturating_sub(meta.start_ms) >= duration_ms;
                if state_ok && producer_ok && duration_ok && meta.state != TxnStatus::Dead {
                    listed.push(TxnDescription {
                        transactional_id: id.clone(),
                        metadata: meta.clone(),
                    });
                }
            }
        }
        listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        (listed, !shards.loading.is_empty())
    }
}

/// The coordinator's timers: timed-out transactions every `abort_interval`, expired ids
/// every `expire_interval`, until shutdown.
pub async fn run_timers(
    coordinator: TransactionCoordinator,
    abort_interval: Duration,
    expire_interval: Duration,
    mut shutdown: crate::server::Shutdown,
) {
    let mut abort_tick = tokio::time::interval(abort_interval);
    let mut expire_tick = tokio::time::interval(expire_interval);
    abort_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    expire_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = abort_tick.tick() => {
                coordinator.abort_timed_out(now_ms());
            }
            _ = expire_tick.tick() => {
                coordinator.expire_ids(now_ms());
            }
            _ = shutdown.triggered() => return,
        }
    }
}
