//! The Raft glue end to end, in one process: real controllers over loopback TCP, each with
//! its own redb store, checked for one image everywhere through leader loss, restarts,
//! snapshots and a wiped voter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{CommandOutcome, Controller, ControllerSettings, MetadataCommand};
use crate::server::Shutdown;
use crate::types::NodeId;

const WAIT: Duration = Duration::from_secs(20);

struct Node {
    id: NodeId,
    controller: Arc<Controller>,
    stop: watch::Sender<bool>,
}

struct Quorum {
    dir: TempDir,
    addresses: BTreeMap<NodeId, String>,
    nodes: BTreeMap<NodeId, Node>,
    snapshot_every: u64,
}

impl Quorum {
    async fn start(size: NodeId, snapshot_every: u64) -> Quorum {
        let mut listeners = BTreeMap::new();
        for id in 1..=size {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(id, listener);
        }
        let addresses = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
            .collect();
        let mut quorum = Quorum {
            dir: TempDir::new().unwrap(),
            addresses,
            nodes: BTreeMap::new(),
            snapshot_every,
        };
        let starts: Vec<_> = listeners
            .into_iter()
            .map(|(id, listener)| quorum.launch(id, listener))
            .collect();
        for node in futures_join(starts).await {
            quorum.nodes.insert(node.id, node);
        }
        quorum
    }

    fn settings(&self, id: NodeId) -> ControllerSettings {
        ControllerSettings {
            node_id: id,
            cluster_id: "quorum-test-cluster-id".into(),
            dir: self.dir.path().join(format!("node-{id}")),
            voters: self.addresses.clone(),
            election_timeout_ms: 1000,
            request_timeout_ms: 1000,
            snapshot_interval_entries: self.snapshot_every,
            log_kept_behind_snapshot: 2,
            session_timeout_ms: 9000,
            listener_name: "CONTROLLER".into(),
            local_endpoint: ("PLAINTEXT".into(), "127.0.0.1".into(), 9092),
        }
    }

    fn launch(&self, id: NodeId, listener: TcpListener) -> impl Future<Output = Node> + use<> {
        let settings = self.settings(id);
        async move {
            let controller = start_when_closed(settings).await;
            let stop = watch::channel(false).0;
            tokio::spawn(super::raft::server::serve(
                listener,
                controller.clone(),
                Shutdown::from_receiver(stop.subscribe()),
            ));
            Node {
                id,
                controller,
                stop,
            }
        }
    }

    async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).unwrap();
        node.stop.send_replace(true);
        node.controller.shutdown().await;
    }

    async fn restart(&mut self, id: NodeId, wipe: bool) {
        if wipe {
            std::fs::remove_dir_all(self.dir.path().join(format!("node-{id}"))).unwrap();
        }
        // The old listener task may still hold the port for a moment after shutdown.
        let address = &self.addresses[&id];
        let listener = loop {
            match TcpListener::bind(address).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let node = self.launch(id, listener).await;
        self.nodes.insert(id, node);
    }

    async fn leader(&self) -> NodeId {
        let any = self.nodes.values().next().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let leader = any
                .controller
                .wait_for_leader(WAIT)
                .await
                .expect("a leader");
            if self.nodes.contains_key(&leader) {
                return leader;
            }
            assert!(tokio::time::Instant::now() < deadline, "no live leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every live node has applied the same image as `reference`.
    async fn converged(&self, reference: NodeId) {
        let target = self.nodes[&reference].controller.image();
        for node in self.nodes.values() {
            node.controller
                .wait_applied(target.applied_index, WAIT)
                .await
                .unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let images: Vec<_> = self
                .nodes
                .values()
                .map(|node| {
                    let mut image = (*node.controller.image()).clone();
                    image.controller_id = 0;
                    image
                })
                .collect();
            if images.windows(2).all(|pair| pair[0] == pair[1]) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "images differ: {images:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn futures_join<F: Future<Output = Node> + Send + 'static>(starts: Vec<F>) -> Vec<Node> {
    let handles: Vec<_> = starts.into_iter().map(tokio::spawn).collect();
    let mut nodes = Vec::new();
    for handle in handles {
        nodes.push(handle.await.unwrap());
    }
    nodes
}

/// Starts a controller; a store a stopped one in this process still closes is retried
/// (redb allows one open handle per file and process).
async fn start_when_closed(settings: ControllerSettings) -> Arc<Controller> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Controller::start(settings.clone()).await {
            Ok(controller) => return controller,
            Err(error) if tokio::time::Instant::now() < deadline => {
                assert!(error.to_string().contains("already open"), "{error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
}

async fn allocate(controller: &Controller) -> i64 {
    let command = MetadataCommand::AllocateProducerIds { count: 10 };
    match controller.submit(command).await.unwrap() {
        CommandOutcome::ProducerIdBlock { first, .. } => first,
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_forward_and_every_node_applies_the_same_log() {
    let quorum = Quorum::start(3, 1000).await;
    let leader = quorum.leader().await;
    let mut firsts = Vec::new();
    for node in quorum.nodes.values() {
        firsts.push(allocate(&node.controller).await);
    }
    firsts.sort();
    assert_eq!(firsts, [0, 10, 20], "blocks from every node, none twice");
    quorum.converged(leader).await;
    assert_eq!(
        quorum.nodes[&leader].controller.image().next_producer_id,
        30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_takes_over_and_a_restarted_voter_catches_up() {
    let mut quorum = Quorum::start(3, 1000).await;
    let old = quorum.leader().await;
    allocate(&quorum.nodes[&old].controller).await;
    quorum.stop(old).await;
    let new = quorum.leader().await;
    assert_ne!(new, old);
    let survivor = quorum.nodes.values().find(|n| n.id != new).unwrap();
    assert_eq!(
        allocate(&survivor.controller).await,
        10,
        "no block handed out twice"
    );
    quorum.restart(old, false).await;
    quorum.converged(new).await;
    assert_eq!(quorum.nodes[&old].controller.image().next_producer_id, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_purge_the_log_and_a_wiped_voter_is_rebuilt_from_one() {
    let mut quorum = Quorum::start(3, 5).await;
    let leader = quorum.leader().await;
    for _ in 0..40 {
        allocate(&quorum.nodes[&leader].controller).await;
    }
    quorum.converged(leader).await;
    let victim = *quorum.nodes.keys().find(|id| **id != leader).unwrap();
    // From its own store: snapshot plus the log tail.
    quorum.restart_after_stop(victim, false).await;
    quorum.converged(leader).await;
    // From nothing: the leader's snapshot (its log no longer starts at 1).
    quorum.restart_after_stop(victim, true).await;
    allocate(&quorum.nodes[&leader].controller).await;
    quorum.converged(leader).await;
    let metrics = |id: NodeId| {
        quorum.nodes[&id]
            .controller
            .raft()
            .unwrap()
            .metrics()
            .borrow()
            .clone()
    };
    assert!(
        metrics(victim).snapshot.is_some(),
        "the wiped voter holds a snapshot"
    );
    assert!(
        metrics(leader).purged.is_some(),
        "the leader purged its log behind a snapshot"
    );
    assert_eq!(
        quorum.nodes[&victim].controller.image().next_producer_id,
        410
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_voter_restarts_with_its_image() {
    let dir = TempDir::new().unwrap();
    let settings = ControllerSettings {
        node_id: 1,
        cluster_id: "lone".into(),
        dir: dir.path().join("meta"),
        voters: [(1, String::new())].into_iter().collect(),
        election_timeout_ms: 1000,
        request_timeout_ms: 1000,
        snapshot_interval_entries: 3,
        log_kept_behind_snapshot: 2,
        session_timeout_ms: 9000,
        listener_name: "CONTROLLER".into(),
        local_endpoint: ("PLAINTEXT".into(), "127.0.0.1".into(), 9092),
    };
    let controller = Controller::start(settings.clone()).await.unwrap();
    for _ in 0..7 {
        allocate(&controller).await;
    }
    let before = controller.image();
    controller.shutdown().await;
    drop(controller);
    let controller = start_when_closed(settings).await;
    controller
        .wait_applied(before.applied_index, WAIT)
        .await
        .unwrap();
    assert_eq!(controller.image().next_producer_id, 70);
    assert_eq!(allocate(&controller).await, 70);
}

impl Quorum {
    async fn restart_after_stop(&mut self, id: NodeId, wipe: bool) {
        self.stop(id).await;
        self.restart(id, wipe).await;
    }
}
