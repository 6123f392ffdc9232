//! The `producer.id.expiration.check.interval.ms` timer: every interval, each hosted
//! partition (leader or follower, as Kafka checks every log) forgets the producers idle for
//! `producer.id.expiration.ms` with no open transaction ([`Partition::remove_expired_producers`]).
//! The expiration is read again at every check: it is a dynamic broker config.
//!
//! Bounded work: a pass visits the partitions in slices of [`PARTITIONS_PER_SLICE_MAX`],
//! each on a blocking thread, and each partition's lock is held for one pass over its own
//! producers, so a broker with many partitions never holds an async worker or one lock for
//! the whole pass. A pass that takes longer than the interval delays the next tick rather
//! than queueing ticks.

use std::sync::Arc;
use std::time::Duration;

use super::{Partition, ReplicaManager};
use crate::config::ProducerIdExpirationConfig;
use crate::server::Shutdown;
use crate::types::now_ms;

/// Partitions checked per blocking task.
pub const PARTITIONS_PER_SLICE_MAX: usize = 256;

/// `expiration_ms` gives `producer.id.expiration.ms` now; the check interval is static.
pub async fn run_producer_expiration(
    replicas: Arc<ReplicaManager>,
    config: ProducerIdExpirationConfig,
    expiration_ms: impl Fn() -> i64,
    mut shutdown: Shutdown,
) {
    let interval = Duration::from_millis(config.check_interval_ms.max(1));
    // The first check one interval after start-up, as Kafka schedules it.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        let partitions = replicas.all();
        let mut removed = 0;
        let expiration_ms = expiration_ms();
        for slice in partitions.chunks(PARTITIONS_PER_SLICE_MAX) {
            let slice = slice.to_vec();
            let work = tokio::task::spawn_blocking(move || expire_slice(&slice, expiration_ms));
            match work.await {
                Ok(count) => removed += count,
                Err(error) => tracing::error!(%error, "producer-id expiration task panicked"),
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "expired idle producer ids (producer.id.expiration.ms)"
            );
        }
    }
}

/// Removes the expired producers of `partitions`; returns how many.
fn expire_slice(partitions: &[Arc<Partition>], expiration_ms: i64) -> usize {
    assert!(partitions.len() <= PARTITIONS_PER_SLICE_MAX);
    let now = now_ms();
    partitions
        .iter()
        .map(|partition| partition.remove_expired_producers(now, expiration_ms))
        .sum()
}
