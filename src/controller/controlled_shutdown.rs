//! A broker's controlled shutdown (Kafka KIP-631), in two steps, so clients are redirected
//! at once instead of waiting out `broker.session.timeout.ms` against a dead leader:
//! - while the node still serves, it asks the controller to move its leaderships away and
//!   waits until its image shows they moved ([`move_leaderships`]);
//! - once it has stopped answering clients, it fences itself ([`fence_stopped`]).
//!
//! The order of the second step differs from Kafka's broker, which fences itself and then
//! stops its socket server: a request answered in between is answered from an image in
//! which the answering node is fenced. A lone node (or the last unfenced one) then answers
//! Metadata with its topics and no brokers at all, and librdkafka (2.16) drops every
//! broker it knows on such an answer, bootstrap ones included, so its producers stay cut
//! off until their rebootstrap 5 minutes later, long after this node is back.
//!
//! Caller: `main.rs`, on SIGTERM or ctrl-c, for nodes with the broker role. Any failure
//! here is reported and the shutdown goes on: a stopping node must stop.

use std::time::Duration;

use thiserror::Error;

use super::image::{MetadataImage, NO_LEADER};
use super::{Controller, ControllerError, MetadataCommand};
use crate::types::NodeId;

/// How long a broker's controlled shutdown (leaderships moved, connections drained, then
/// fenced) may take before it stops anyway; the fencing always gets at least
/// [`FENCE_TIME_MIN`]. Kafka's KRaft broker has no exact setting for this wait
/// (`controlled.shutdown.*` are ZooKeeper era); 30 s is the broker's default request
/// timeout, the same bound our metadata commands get.
pub const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The least time the fencing gets, however long the steps before it took (more than
/// [`CONTROLLER_WAIT`], so a controller found late still has time to commit it).
pub const FENCE_TIME_MIN: Duration = Duration::from_secs(5);

/// Without an active controller nothing can move: after this long with none known the
/// broker stops without asking (a lone survivor must not hang on SIGTERM).
const CONTROLLER_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum ControlledShutdownError {
    #[error("no active controller to ask")]
    NoController,
    #[error("the controller refused or failed the request: {0}")]
    Controller(#[from] ControllerError),
    #[error("the step did not finish within {0:?}")]
    TimedOut(Duration),
}

/// Begins `node_id`'s controlled shutdown at `broker_epoch` (its registration's epoch) and
/// waits until this node's image shows no partition it leads that another eligible ISR
/// member could lead. The whole call is bounded by `timeout`.
pub async fn move_leaderships(
    controller: &Controller,
    node_id: NodeId,
    broker_epoch: i64,
    timeout: Duration,
) -> Result<(), ControlledShutdownError> {
    let begin = MetadataCommand::BeginControlledShutdown {
        node_id,
        epoch: broker_epoch,
    };
    with_controller(controller, timeout, async {
        controller.submit(begin).await?;
        let mut images = controller.subscribe();
        // `submit` returns once this node applied the command; the wait only matters if
        // the image here changed again since (it cannot regain leaderships, but says so).
        let _ = images
            .wait_for(|image| leaderships_moved(image, node_id))
            .await;
        Ok(())
    })
    .await
}

/// Fences `node_id` at `broker_epoch`: the last step, taken once the node answers no
/// client (see the module note), bounded by `timeout`. Like the first step it gives up at
/// once without an active controller: the quorum may have gone while the node drained
/// its connections (a whole cluster stopped together), and a stopping node must stop.
pub async fn fence_stopped(
    controller: &Controller,
    node_id: NodeId,
    broker_epoch: i64,
    timeout: Duration,
) -> Result<(), ControlledShutdownError> {
    let fence = MetadataCommand::FenceBroker {
        node_id,
        epoch: broker_epoch,
    };
    with_controller(controller, timeout, async {
        controller.submit(fence).await?;
        Ok(())
    })
    .await
}

/// Runs `step` once an active controller is known (giving up after [`CONTROLLER_WAIT`]
/// without one), the whole bounded by `timeout`.
async fn with_controller(
    controller: &Controller,
    timeout: Duration,
    step: impl Future<Output = Result<(), ControlledShutdownError>>,
) -> Result<(), ControlledShutdownError> {
    let run = async {
        if controller.wait_for_leader(CONTROLLER_WAIT).await.is_none() {
            return Err(ControlledShutdownError::NoController);
        }
        step.await
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or(Err(ControlledShutdownError::TimedOut(timeout)))
}

/// Whether no partition is led by `node_id` while another eligible (live, not shutting
/// down) ISR member could lead it instead.
pub fn leaderships_moved(image: &MetadataImage, node_id: NodeId) -> bool {
    image
        .topics
        .values()
        .flat_map(|topic| &topic.partitions)
        .filter(|partition| partition.leader == node_id && node_id != NO_LEADER)
        .all(|partition| {
            !partition
                .isr
                .iter()
                .any(|&other| other != node_id && image.is_broker_eligible(other))
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::controller::commands::{apply, register_live_broker};

    /// Against a real (lone-voter) controller: the command commits, the node's
    /// leaderships move to the other in-sync broker, and it ends fenced and marked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_shuts_down_through_the_quorum() {
        use crate::controller::image::BrokerEndpoint;
        use crate::controller::{CommandOutcome, ControllerSettings};
        let dir = tempfile::TempDir::new().unwrap();
        let settings = ControllerSettings {
            node_id: 1,
            cluster_id: "shutdown".into(),
            dir: dir.path().join("meta"),
            voters: [(1, String::new())].into_iter().collect(),
            election_timeout_ms: 1000,
            request_timeout_ms: 1000,
            snapshot_interval_entries: 1000,
            log_kept_behind_snapshot: 10,
            session_timeout_ms: 9000,
            listener_name: "CONTROLLER".into(),
            local_endpoint: ("PLAINTEXT".into(), "127.0.0.1".into(), 9092),
        };
        let controller = Controller::start(settings).await.unwrap();
        let mut epochs = BTreeMap::new();
        for node_id in 1..=2 {
            // A nil incarnation registers unfenced (no heartbeats needed here).
            let register = MetadataCommand::RegisterBroker {
                node_id,
                incarnation_id: Uuid::nil(),
                listeners: vec![BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: "localhost".into(),
                    port: 9092,
                }],
                rack: None,
            };
            match controller.submit(register).await.unwrap() {
                CommandOutcome::BrokerRegistered { epoch } => epochs.insert(node_id, epoch),
                other => panic!("{other:?}"),
            };
        }
        let create = MetadataCommand::CreateTopic {
            name: "t".into(),
            id: Uuid::from_u128(1),
            assignments: vec![vec![1, 2], vec![2, 1], vec![1]],
            configs: BTreeMap::new(),
        };
        controller.submit(create).await.unwrap();
        assert!(!leaderships_moved(&controller.image(), 1));
        move_leaderships(&controller, 1, epochs[&1], Duration::from_secs(10))
            .await
            .unwrap();
        let moved = controller.image();
        let broker = &moved.brokers[&1];
        assert!(
            !broker.fenced && broker.in_controlled_shutdown,
            "{broker:?}"
        );
        fence_stopped(&controller, 1, epochs[&1], Duration::from_secs(10))
            .await
            .unwrap();
        let image = controller.image();
        let broker = &image.brokers[&1];
        assert!(broker.fenced && broker.in_controlled_shutdown, "{broker:?}");
        let leaders: Vec<_> = image.topics["t"]
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        assert_eq!(leaders, [2, 2, NO_LEADER]);
        // A stale epoch (an older incarnation) is refused, and says so.
        let stale = move_leaderships(&controller, 2, epochs[&2] - 1, Duration::from_secs(10));
        assert!(matches!(
            stale.await,
            Err(ControlledShutdownError::Controller(
                ControllerError::StaleBrokerEpoch { .. }
            ))
        ));
        controller.shutdown().await;
    }

    #[test]
    fn leaderships_have_moved_once_no_led_partition_has_an_eligible_alternative() {
        let mut image = MetadataImage::default();
        for node_id in 1..=2 {
            image.applied_index += 1;
            register_live_broker(&mut image, node_id);
        }
        let create = MetadataCommand::CreateTopic {
            name: "t".into(),
            id: Uuid::from_u128(1),
            assignments: vec![vec![1, 2], vec![1]],
            configs: BTreeMap::new(),
        };
        image.applied_index += 1;
        apply(&mut image, &create).unwrap();
        assert!(
            !leaderships_moved(&image, 1),
            "1 leads t-0 and 2 is in sync"
        );
        assert!(leaderships_moved(&image, 2), "2 leads nothing");
        // t-1 has no alternative: it does not hold the wait up.
        let only_sole = {
            let mut image = image.clone();
            image.topics.get_mut("t").unwrap().partitions.remove(0);
            image
        };
        assert!(leaderships_moved(&only_sole, 1));
        let epoch = image.brokers[&1].epoch;
        image.applied_index += 1;
        apply(
            &mut image,
            &MetadataCommand::BeginControlledShutdown { node_id: 1, epoch },
        )
        .unwrap();
        assert!(leaderships_moved(&image, 1));
        assert_eq!(image.partition("t", 0).unwrap().leader, 2);
    }
}
