//! The async shell around a leader's ISR decisions: proposals go to the controller as
//! `AlterPartition` commands and the answer comes back to the partition; a periodic check
//! drops followers that stopped keeping up (Kafka's `isr-expiration` task, every half
//! `replica.lag.time.max.ms`).

use std::sync::Arc;
use std::time::Duration;

use super::{IsrAnswer, IsrProposal, Partition, ReplicaManager};
use crate::controller::{CommandOutcome, Controller, MetadataCommand, PartitionChangeRefusal};
use crate::server::Shutdown;
use crate::types::now_ms;

/// How long an unsettled ISR change waits before it is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(1);

/// Sends `proposal` to the controller in the background and hands the answer back to the
/// partition. An outcome that is not known (the call failed: the command may still have
/// committed) or built on an older partition epoch keeps the change pending (Kafka's
/// AlterPartitionManager keeps it too), and the proposal is sent again while it is
/// still this leadership's pending change and no image has settled it.
pub fn submit(controller: &Arc<Controller>, partition: Arc<Partition>, proposal: IsrProposal) {
    let controller = Arc::clone(controller);
    tokio::spawn(async move {
        loop {
            let command = MetadataCommand::AlterPartition {
                topic_id: partition.topic_id,
                partition: partition.tp.partition,
                leader: proposal.leader,
                leader_epoch: proposal.leader_epoch,
                partition_epoch: proposal.partition_epoch,
                new_isr: proposal.new_isr.clone(),
                broker_epochs: proposal.broker_epochs.clone(),
            };
            let answered = controller.submit(command).await;
            let answer = match &answered {
                Ok(CommandOutcome::PartitionChanged {
                    isr,
                    leader_epoch,
                    partition_epoch,
                }) => {
                    tracing::info!(tp = %partition.tp, ?isr, partition_epoch, "ISR changed");
                    super::partition::count_isr_change(proposal.isr_size_before, isr.len());
                    IsrAnswer::Changed {
                        isr,
                        leader_epoch: *leader_epoch,
                        partition_epoch: *partition_epoch,
                    }
                }
                Ok(CommandOutcome::PartitionChangeRefused(
                    PartitionChangeRefusal::InvalidUpdateVersion,
                )) => IsrAnswer::Unsettled,
                Ok(other) => {
                    tracing::info!(
                        tp = %partition.tp, proposed = ?proposal.new_isr, answer = ?other,
                        "ISR change refused; the next fetch or check decides again"
                    );
                    IsrAnswer::Refused
                }
                Err(error) => {
                    tracing::warn!(
                        tp = %partition.tp, proposed = ?proposal.new_isr, %error,
                        "ISR change outcome unknown; kept pending and sent again"
                    );
                    IsrAnswer::Unsettled
                }
            };
            let unsettled = matches!(answer, IsrAnswer::Unsettled);
            partition.isr_change_answered(&proposal, answer, now_ms());
            if !unsettled {
                return;
            }
            tokio::time::sleep(RESEND_AFTER).await;
            if !partition.proposal_pending(&proposal) {
                return; // settled by an image meanwhile, or leadership moved
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
