//! Following the `__transaction_state` partitions' leadership (Kafka's
//! `onElection`/`onResignation` for the transaction coordinator).
//!
//! - Elected (led here at epoch E, not loaded at E): a background load waits until the
//!   high watermark covers the log end the partition had when elected (everything the
//!   old leader may have acknowledged), replays the partition up to the high watermark on
//!   a blocking thread (last value per id wins, a tombstone deletes), installs it, then
//!   resumes every prepared transaction (markers, completion). Until installed, its ids
//!   answer COORDINATOR_LOAD_IN_PROGRESS.
//! - Resigned: unloaded at once; completion tasks of the old epoch stop.
//!
//! A record the loader cannot read is skipped and counted, so one bad record cannot keep
//! a partition loading forever.

use std::collections::HashMap;
use std::sync::Arc;

use super::coordinator::{Shard, TransactionCoordinator, lock};
use super::error::TxnError;
use super::records;
use super::state::TxnMetadata;
use crate::group::LedPartition;
use crate::replica::committed_replay::replay_committed;
use crate::replica::{Partition, ReplicaError};

/// What a replay read.
#[derive(Default)]
pub(super) struct Replay {
    pub(super) txns: HashMap<String, TxnMetadata>,
    pub(super) applied: usize,
    pub(super) skipped: usize,
}

impl TransactionCoordinator {
    /// Makes the loaded partitions match `led` (every `__transaction_state` partition this
    /// broker leads now, with its log and epoch). Called by the reconciler after each
    /// image; loads run as tasks of the current runtime.
    pub fn follow_leadership(&self, led: &HashMap<i32, LedPartition>) {
        let mut start = Vec::new();
        {
            let mut shards = lock(&self.shards);
            let wanted = |partition: &i32, epoch: i32| {
                led.get(partition).map(|l| l.leader_epoch) == Some(epoch)
            };
            shards
                .loaded
                .retain(|partition, shard| wanted(partition, shard.leader_epoch));
            shards
                .loading
                .retain(|partition, epoch| wanted(partition, *epoch));
            for (partition, led) in led {
                let epoch = led.leader_epoch;
                let loaded = shards.loaded.get(partition).map(|s| s.leader_epoch);
                if loaded == Some(epoch) || shards.loading.get(partition) == Some(&epoch) {
                    continue;
                }
                shards.loading.insert(*partition, epoch);
                start.push((led.log.clone(), epoch));
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("no runtime to load transaction state partitions on");
            return;
        };
        for (log, epoch) in start {
            let coordinator = self.clone();
            runtime.spawn(async move {
                let partition = log.tp.partition;
                if let Err(error) = coordinator.load_when_committed(log, epoch).await {
                    tracing::warn!(partition, epoch, %error, "transaction state not loaded");
                    let mut shards = lock(&coordinator.shards);
                    if shards.loading.get(&partition) == Some(&epoch) {
                        shards.loading.remove(&partition);
                    }
                }
            });
        }
    }

    fn still_loading(&self, partition: i32, epoch: i32) -> bool {
        lock(&self.shards).loading.get(&partition) == Some(&epoch)
    }

    async fn load_when_committed(&self, log: Arc<Partition>, epoch: i32) -> Result<(), TxnError> {
        let partition = log.tp.partition;
        let storage = |e: ReplicaError| TxnError::Storage(e.to_string());
        let (_, _, log_end) = log.offsets().map_err(storage)?;
        loop {
            if !self.still_loading(partition, epoch) {
                return Ok(());
            }
            let deadline = tokio::time::Instant::now() + self.config.write_timeout;
            match log.wait_high_watermark(log_end, epoch, deadline).await {
                Ok(()) => break,
                Err(ReplicaError::ReplicationTimedOut) => {
                    tracing::info!(partition, epoch, "transaction state waits for its HW");
                }
                Err(error) => return Err(TxnError::Storage(error.to_string())),
            }
        }
        let replay_log = log.clone();
        let replay = tokio::task::spawn_blocking(move || replay(&replay_log))
            .await
            .map_err(|error| TxnError::Storage(format!("load task: {error}")))??;
        self.install_replay(log, epoch, replay);
        Ok(())
    }

    /// Installs a replay if the load is still wanted, then resumes prepared transactions.
    pub(super) fn install_replay(&self, log: Arc<Partition>, epoch: i32, replay: Replay) {
        let partition = log.tp.partition;
        {
            let mut shards = lock(&self.shards);
            if shards.loading.get(&partition) != Some(&epoch) {
                return;
            }
            shards.loading.remove(&partition);
            let shard = Shard {
                leader_epoch: epoch,
                log,
                txns: replay.txns,
            };
            tracing::info!(
                partition,
                epoch,
                records = replay.applied,
                skipped = replay.skipped,
                ids = shard.txns.len(),
                "loaded transaction state partition"
            );
            shards.loaded.insert(partition, shard);
        }
        self.resume_prepared(partition);
    }
}

/// Reads the partition from its start to the high watermark.
pub(super) fn replay(log: &Partition) -> Result<Replay, TxnError> {
    let mut replay = Replay::default();
    let end = replay_committed(log, 0, &mut |record| {
        if !record.control {
            apply_record(record.key.as_deref(), record.value.as_deref(), &mut replay);
        }
    })
    .map_err(|e| TxnError::Storage(e.to_string()))?;
    replay.skipped += end.skipped_batches;
    if replay.skipped > 0 {
        tracing::warn!(
            partition = log.tp.partition,
            skipped = replay.skipped,
            "skipped unreadable transaction state records"
        );
    }
    Ok(replay)
}

/// Applies one record; an unreadable key or value is skipped (never taken as a tombstone).
pub(super) fn apply_record(key: Option<&[u8]>, value: Option<&[u8]>, replay: &mut Replay) {
    let Some(key) = key else { return };
    let Ok(id) = records::decode_key(key) else {
        replay.skipped += 1;
        return;
    };
    match value.map(records::decode_value) {
        None => {
            replay.txns.remove(&id);
        }
        Some(Ok(value)) => {
            replay.txns.insert(id, TxnMetadata::from_record(&value));
        }
        Some(Err(_)) => {
            replay.skipped += 1;
            return;
        }
    }
    replay.applied += 1;
}
