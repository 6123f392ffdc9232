//! The async shell around a leader's ISR decisions: proposals go to the controller as
//! `AlterPartition` commands and the answer comes back to the partition; a periodic check
//! drops followers that stopped keeping up (Kafka's `isr-expiration` task, every half
//! `replica.lag.time.max.ms`).

use std::sync::Arc;
use std::time::Duration;

use super::{IsrProposal, Partition, ReplicaManager};
use crate::controller::{CommandOutcome, Controller, MetadataCommand};
use crate::server::Shutdown;
use crate::types::now_ms;

/// Sends `proposal` to the controller in the background and hands the answer back to the
/// partition, which stays with its current ISR until then.
pub fn submit(controller: &Arc<Controller>, partition: Arc<Partition>, proposal: IsrProposal) {
    let controller = Arc::clone(controller);
    tokio::spawn(async move {
        let command = MetadataCommand::AlterPartition {
            topic_id: partition.topic_id,
            partition: partition.tp.partition,
            leader: proposal.leader,
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            new_isr: proposal.new_isr.clone(),
        };
        match controller.submit(command).await {
            Ok(CommandOutcome::PartitionChanged {
                isr,
                leader_epoch,
                partition_epoch,
            }) => {
                tracing::info!(tp = %partition.tp, ?isr, partition_epoch, "ISR changed");
                let answer = Some((isr.as_slice(), leader_epoch, partition_epoch));
                partition.isr_change_answered(&proposal, answer, now_ms());
            }
            Ok(other) => {
                tracing::info!(
                    tp = %partition.tp, proposed = ?proposal.new_isr, answer = ?other,
                    "ISR change refused; the next image decides"
                );
                partition.isr_change_answered(&proposal, None, now_ms());
            }
            Err(error) => {
                tracing::warn!(
                    tp = %partition.tp, proposed = ?proposal.new_isr, %error,
                    "ISR change not stored; retried at the next fetch or check"
                );
                partition.isr_change_answered(&proposal, None, now_ms());
            }
        }
    });
}

/// Every half `lag_max`, proposes ISR shrinks for the partitions this broker leads.
pub async fn run_isr_expiration(
    controller: Arc<Controller>,
    replicas: Arc<ReplicaManager>,
    lag_max: Duration,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval((lag_max / 2).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lag_max_ms = i64::try_from(lag_max.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        let now = now_ms();
        for partition in replicas.all() {
            if let Some(proposal) = partition.isr_shrink(now, lag_max_ms) {
                tracing::info!(
                    tp = %partition.tp, proposed = ?proposal.new_isr,
                    "followers behind for replica.lag.time.max.ms: shrinking the ISR"
                );
                submit(&controller, partition, proposal);
            }
        }
    }
}
