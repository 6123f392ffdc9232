//! Broker liveness at the active controller: heartbeats in, fencing and unfencing out.
//!
//! Brokers heartbeat every `broker.heartbeat.interval.ms` to the active controller. A
//! broker not heard from for `broker.session.timeout.ms` is fenced (its leaderships move);
//! a fenced broker that heartbeats with its registration applied is unfenced. Times are
//! the leader's memory only: a new leader starts every broker's clock afresh when it takes
//! over, so a failover never fences a broker that was fine a moment ago.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::raft::rpc::BrokerHeartbeat;
use super::{Controller, MetadataCommand, MetadataImage};
use crate::server::Shutdown;
use crate::types::NodeId;

#[derive(Debug, Default)]
pub struct Liveness {
    last_heard: BTreeMap<NodeId, Instant>,
    leader_since: Option<Instant>,
    /// Per follower voter: (last progress seen, last time caught up), ms since the epoch.
    replicas: BTreeMap<NodeId, (i64, i64)>,
    /// Last matched index per follower, to tell progress from silence.
    matched: BTreeMap<NodeId, Option<u64>>,
    /// Observers (brokers that are not voters): (position fetched from, last fetch time).
    observers: BTreeMap<NodeId, (u64, i64)>,
}

impl Liveness {
    pub fn became_leader(&mut self, image: &MetadataImage, now: Instant) {
        self.leader_since = Some(now);
        self.last_heard = image.brokers.keys().map(|id| (*id, now)).collect();
    }

    /// Forgets the clocks of a leadership that ended: a later one starts afresh, and no
    /// fencing runs on stale times in between.
    pub fn lost_leadership(&mut self) {
        self.leader_since = None;
        self.last_heard.clear();
    }

    pub fn heard_from(&mut self, node: NodeId, now: Instant) {
        self.last_heard.insert(node, now);
    }

    /// The command that unfences the sender, if it is fenced, the heartbeat is of its
    /// current registration, and it has applied that registration (it is caught up). A
    /// broker that fenced itself at the end of a controlled shutdown stays fenced: a last
    /// heartbeat sent while it stops must not bring it back.
    pub fn unfence_command(
        &self,
        image: &MetadataImage,
        beat: &BrokerHeartbeat,
    ) -> Option<MetadataCommand> {
        let broker = image.brokers.get(&beat.node_id)?;
        let current = broker.epoch == beat.broker_epoch;
        let caught_up = beat.applied_index >= u64::try_from(broker.epoch).unwrap_or(u64::MAX);
        let stopping = broker.in_controlled_shutdown;
        (broker.fenced && current && caught_up && !stopping).then_some(
            MetadataCommand::UnfenceBroker {
                node_id: beat.node_id,
                epoch: broker.epoch,
            },
        )
    }

    /// Fence commands for every unfenced broker silent for longer than `session`.
    pub fn fence_commands(
        &self,
        image: &MetadataImage,
        now: Instant,
        session: Duration,
    ) -> Vec<MetadataCommand> {
        let Some(since) = self.leader_since else {
            return Vec::new();
        };
        image
            .brokers
            .values()
            .filter(|broker| !broker.fenced)
            .filter(|broker| {
                let heard = self
                    .last_heard
                    .get(&broker.node_id)
                    .copied()
                    .unwrap_or(since);
                now.saturating_duration_since(heard) > session
            })
            .map(|broker| MetadataCommand::FenceBroker {
                node_id: broker.node_id,
                epoch: broker.epoch,
            })
            .collect()
    }

    /// Records follower progress from the leader's metrics: a matched index that moved
    /// counts as a fetch; one equal to the leader's last index as caught up.
    pub fn note_replication(
        &mut self,
        metrics: &openraft::RaftMetrics<u64, openraft::BasicNode>,
        now_ms: i64,
    ) {
        let Some(replication) = &metrics.replication else {
            return;
        };
        for (id, matched) in replication {
            let node = super::raft::types::kafka_id(*id);
            let index = matched.map(|id| id.index);
            let times = self.replicas.entry(node).or_insert((-1, -1));
            if self.matched.insert(node, index) != Some(index) {
                times.0 = now_ms;
            }
            if index.is_some() && index == metrics.last_log_index {
                times.0 = now_ms;
                times.1 = now_ms;
            }
        }
    }

    /// An observer fetched from `from_index`: it holds everything before.
    pub fn note_observer(&mut self, node: NodeId, from_index: u64, now_ms: i64) {
        self.observers.insert(node, (from_index, now_ms));
    }

    /// Observers heard from in the last minute, as DescribeQuorum lists them.
    pub fn observers(
        &self,
        now_ms: i64,
    ) -> impl Iterator<Item = crate::controller::ReplicaProgress> + '_ {
        const FORGET_AFTER_MS: i64 = 60_000;
        self.observers
            .iter()
            .filter(move |(_, (_, at))| now_ms - at < FORGET_AFTER_MS)
            .map(|(node, (from, at))| crate::controller::ReplicaProgress {
                replica_id: *node,
                replica_directory_id: uuid::Uuid::nil(),
                log_end_offset: i64::try_from(*from).unwrap_or(i64::MAX),
                last_fetch_timestamp: *at,
                last_caught_up_timestamp: *at,
            })
    }

    pub fn replica_times(&self, node: NodeId) -> (i64, i64) {
        self.replicas.get(&node).copied().unwrap_or((-1, -1))
    }
}

/// Runs on every controller; acts only while this node is the active controller.
pub async fn run_fencing(controller: Arc<Controller>, mut shutdown: Shutdown) {
    let session = Duration::from_millis(controller.settings().session_timeout_ms);
    let period = (session / 8).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        if !controller.is_leader() {
            continue;
        }
        let commands = {
            let liveness = controller
                .liveness
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            liveness.fence_commands(&controller.image(), Instant::now(), session)
        };
        for command in commands {
            tracing::warn!(
                ?command,
                "fencing a broker silent for broker.session.timeout.ms"
            );
            if let Err(error) = controller.submit_as_leader(command).await {
                tracing::warn!(%error, "fencing a broker failed");
            }
        }
    }
}

/// The broker side: reports this node's liveness to the active controller every
/// `interval`, from the moment it is registered.
pub async fn run_heartbeats(
    controller: Arc<Controller>,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    let node_id = controller.node_id();
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        beat_once(&controller, node_id).await;
    }
}

/// One heartbeat, if this node is registered; failures are retried at the next tick.
pub async fn beat_once(controller: &Controller, node_id: NodeId) {
    let image = controller.image();
    let Some(broker) = image.brokers.get(&node_id) else {
        return;
    };
    let beat = BrokerHeartbeat {
        node_id,
        broker_epoch: broker.epoch,
        applied_index: image.applied_index,
    };
    if let Err(error) = controller.heartbeat(beat).await {
        tracing::debug!(%error, "broker heartbeat not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::BrokerRegistration;

    fn image_with(brokers: &[(NodeId, i64, bool)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (id, epoch, fenced) in brokers {
            let registration = BrokerRegistration {
                node_id: *id,
                incarnation_id: uuid::Uuid::new_v4(),
                epoch: *epoch,
                listeners: Vec::new(),
                host: "127.0.0.1".into(),
                port: 9092,
                rack: None,
                fenced: *fenced,
                in_controlled_shutdown: false,
            };
            image.brokers.insert(*id, registration);
        }
        image
    }

    #[test]
    fn silent_brokers_are_fenced_after_the_session_and_a_new_leader_waits_a_session() {
        let image = image_with(&[(1, 5, false), (2, 6, false), (3, 7, true)]);
        let session = Duration::from_secs(9);
        let start = Instant::now();
        let mut liveness = Liveness::default();
        assert!(
            liveness.fence_commands(&image, start, session).is_empty(),
            "not leader"
        );
        liveness.became_leader(&image, start);
        assert!(
            liveness
                .fence_commands(&image, start + Duration::from_secs(8), session)
                .is_empty()
        );
        liveness.heard_from(1, start + Duration::from_secs(8));
        let fenced = liveness.fence_commands(&image, start + Duration::from_secs(10), session);
        assert_eq!(
            fenced,
            vec![MetadataCommand::FenceBroker {
                node_id: 2,
                epoch: 6
            }]
        );
    }

    #[test]
    fn only_a_caught_up_current_registration_is_unfenced() {
        let image = image_with(&[(3, 7, true), (4, 8, false)]);
        let liveness = Liveness::default();
        let beat = |node_id, broker_epoch, applied_index| BrokerHeartbeat {
            node_id,
            broker_epoch,
            applied_index,
        };
        assert_eq!(
            liveness.unfence_command(&image, &beat(3, 7, 7)),
            Some(MetadataCommand::UnfenceBroker {
                node_id: 3,
                epoch: 7
            })
        );
        assert_eq!(
            liveness.unfence_command(&image, &beat(3, 7, 6)),
            None,
            "behind"
        );
        assert_eq!(
            liveness.unfence_command(&image, &beat(3, 2, 9)),
            None,
            "old incarnation"
        );
        assert_eq!(
            liveness.unfence_command(&image, &beat(4, 8, 9)),
            None,
            "not fenced"
        );
        assert_eq!(
            liveness.unfence_command(&image, &beat(9, 1, 9)),
            None,
            "unknown"
        );
        let mut stopping = image.clone();
        stopping.brokers.get_mut(&3).unwrap().in_controlled_shutdown = true;
        assert_eq!(
            liveness.unfence_command(&stopping, &beat(3, 7, 7)),
            None,
            "fenced at the end of its controlled shutdown"
        );
    }
}
