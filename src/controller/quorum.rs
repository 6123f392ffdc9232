//! The controller node: starts the Raft node over its redb store, proposes (or forwards)
//! commands, and answers for the quorum.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use tokio::sync::{Mutex, watch};

use super::liveness::Liveness;
use super::quorum_status::{QuorumNode, QuorumStatus, ReplicaProgress};
use super::raft::log_store::LogStore;
use super::raft::network::{Channel, Identity, Network};
use super::raft::rpc::{BrokerHeartbeat, MetadataBatch, Request, Response};
use super::raft::state_machine::{Publisher, StateMachine};
use super::raft::types::{Applied, RaftNode, kafka_id, raft_id};
use super::{CommandOutcome, ControllerError, MetadataCommand, MetadataImage};
use crate::types::{NodeId, now_ms};

/// The Raft store's file in the metadata directory.
pub const STORE_FILE: &str = "raft.redb";

/// A Raft node's state as `/metrics` shows it (Kafka's `raft-metrics`).
#[derive(Clone, Debug)]
pub struct RaftGauges {
    /// The Raft term (Kafka's epoch).
    pub current_epoch: u64,
    /// -1 when no leader is known.
    pub current_leader: NodeId,
    pub state: &'static str,
    /// The offset after the last entry in this node's log.
    pub log_end_offset: u64,
    /// The offset after the last entry applied here; entries are applied once committed,
    /// so it trails the commit index by at most the entries in flight to the state machine.
    pub high_watermark: u64,
    /// On the leader: entries each other replica is behind its log end.
    pub follower_lag: Vec<(NodeId, u64)>,
}

/// Everything the controller needs from the node's configuration.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    pub node_id: NodeId,
    pub cluster_id: String,
    /// `__cluster_metadata-0` under the log directory.
    pub dir: PathBuf,
    /// Voters and their controller endpoints (`host:port`); a lone voter needs none.
    pub voters: BTreeMap<NodeId, String>,
    /// `controller.quorum.election.timeout.ms`: the longest a follower waits for a leader
    /// before it stands (each election draws between half of it and all of it).
    pub election_timeout_ms: u64,
    /// `controller.quorum.request.timeout.ms`: one controller RPC.
    pub request_timeout_ms: u64,
    /// Committed entries between snapshots of the image.
    pub snapshot_interval_entries: u64,
    /// Entries kept behind a snapshot, so a briefly lagging voter catches up from the log
    /// rather than from a whole snapshot.
    pub log_kept_behind_snapshot: u64,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub session_timeout_ms: u64,
    /// The controller listener's name (`controller.listener.names`, first), as
    /// DescribeQuorum v2 names the voters' endpoints.
    pub listener_name: String,
    /// Where a lone voter without a controller listener is reached: its client listener
    /// (name, host, port).
    pub local_endpoint: (String, String, u16),
}

/// How long a command may wait for an active controller before the caller gets an error.
const SUBMIT_DEADLINE: Duration = Duration::from_secs(30);
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Free space the metadata disk must keep for a proposal to be made: a redb commit writes
/// a few pages and may grow the file by a region.
const METADATA_SPACE_RESERVE_BYTES: u64 = 8 * 1024 * 1024;

pub struct Controller {
    settings: ControllerSettings,
    identity: Identity,
    /// `None` on an observer (a broker-only node): it follows the log by fetching.
    raft: Option<RaftNode>,
    /// Reads committed entries for observers' fetches (voters only).
    log_reader: std::sync::Mutex<Option<LogStore>>,
    /// The active controller as an observer last heard it (-1: unknown).
    leader_hint: std::sync::atomic::AtomicI32,
    publisher: Arc<Publisher>,
    /// Stops an observer's fetch loop.
    stopped: watch::Sender<bool>,
    /// Channels to other voters for forwarded commands, heartbeats and quorum questions.
    peers: BTreeMap<NodeId, Peer>,
    /// A voter rebuilt from an empty directory grants no vote until it has applied up to
    /// here (0: not catching up).
    catch_up_to: std::sync::atomic::AtomicU64,
    /// A voter without a log that has not yet learnt whether a quorum exists.
    joining: std::sync::atomic::AtomicBool,
    pub(crate) liveness: std::sync::Mutex<Liveness>,
}

fn quorum_error(settings: &ControllerSettings, reason: impl std::fmt::Display) -> ControllerError {
    ControllerError::Quorum {
        path: settings.dir.join(STORE_FILE).display().to_string(),
        reason: reason.to_string(),
    }
}

impl Controller {
    /// Opens the store, starts the Raft node, and initializes the quorum on first start
    /// (every voter initializes with the same voter set, which Raft allows).
    pub async fn start(settings: ControllerSettings) -> Result<Arc<Controller>, ControllerError> {
        crate::log::durable::create_dir_durably(&settings.dir)?;
        let path = settings.dir.join(STORE_FILE);
        let db = tokio::task::block_in_place(|| redb::Database::create(&path))
            .map_err(|e| quorum_error(&settings, e))?;
        let db = Arc::new(db);
        let log_store = LogStore::open(db.clone()).map_err(|e| quorum_error(&settings, e))?;
        let log_reader = log_store.clone();
        let fresh = log_store
            .is_empty()
            .map_err(|e| quorum_error(&settings, e))?;
        let no_log = log_store
            .has_no_log()
            .map_err(|e| quorum_error(&settings, e))?;
        let catch_up_to = log_store
            .catch_up_to()
            .map_err(|e| quorum_error(&settings, e))?;
        let publisher = Arc::new(Publisher::new());
        let state_machine =
            StateMachine::open(db, publisher.clone()).map_err(|e| quorum_error(&settings, e))?;
        let config = raft_config(&settings).map_err(|e| quorum_error(&settings, e))?;
        let identity = Identity::new(settings.cluster_id.clone(), settings.node_id);
        let network = Network {
            identity: identity.clone(),
        };
        let raft = RaftNode::new(
            raft_id(settings.node_id),
            Arc::new(config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| quorum_error(&settings, e))?;
        let controller = Arc::new(Controller::assemble(
            settings,
            identity,
            Some((raft, log_reader)),
            publisher,
            catch_up_to,
        ));
        if controller.settings.voters.len() <= 1 {
            if fresh {
                // A lone voter elects itself as part of initializing.
                controller.initialize().await?;
            } else {
                controller.check_configured_voters().await?;
            }
        } else if no_log {
            // Asks the other voters from the background: they may be starting too, and
            // must be able to ask this one (its listener serves once `start` returns).
            controller
                .joining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(controller.clone().join_or_initialize());
        } else {
            controller.check_configured_voters().await?;
        }
        if !fresh && controller.settings.voters.len() <= 1 {
            // A lone voter needs nobody's vote: stand now rather than at the first tick.
            let _ = controller.voter().trigger().elect().await;
        }
        tokio::spawn(follow_leadership(controller.clone()));
        Ok(controller)
    }

    /// Starts an observer: a broker that is not a voter follows the committed log by
    /// fetching it from the active controller (never proposing, never voting).
    pub async fn start_observer(
        settings: ControllerSettings,
    ) -> Result<Arc<Controller>, ControllerError> {
        let identity = Identity::new(settings.cluster_id.clone(), settings.node_id);
        let publisher = Arc::new(Publisher::new());
        let controller = Arc::new(Controller::assemble(settings, identity, None, publisher, 0));
        tokio::spawn(super::observer::follow(controller.clone()));
        Ok(controller)
    }

    /// The parts every controller has; a voter brings its Raft node and log reader.
    fn assemble(
        settings: ControllerSettings,
        identity: Identity,
        voter: Option<(RaftNode, LogStore)>,
        publisher: Arc<Publisher>,
        catch_up_to: u64,
    ) -> Controller {
        // A voter's peers are the other voters; an observer's, all of them.
        let peers = settings
            .voters
            .iter()
            .filter(|(id, _)| voter.is_none() || **id != settings.node_id)
            .map(|(id, address)| (*id, Peer::new(&identity, address)))
            .collect();
        let (raft, log_reader) = match voter {
            Some((raft, reader)) => (Some(raft), Some(reader)),
            None => (None, None),
        };
        Controller {
            liveness: std::sync::Mutex::new(Liveness::default()),
            settings,
            identity,
            raft,
            log_reader: std::sync::Mutex::new(log_reader),
            leader_hint: std::sync::atomic::AtomicI32::new(-1),
            publisher,
            stopped: watch::channel(false).0,
            peers,
            catch_up_to: std::sync::atomic::AtomicU64::new(catch_up_to),
            joining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub(crate) fn set_leader_hint(&self, leader: NodeId) {
        self.leader_hint
            .store(leader, std::sync::atomic::Ordering::Relaxed);
        self.publisher.set_leader(leader);
    }

    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stopped.subscribe()
    }

    /// One controller RPC to voter `node`, waiting for the channel included in `timeout`.
    /// Heartbeats have a channel of their own, so slow admin forwarding never delays them
    /// past the session timeout.
    pub(crate) async fn call_voter(
        &self,
        node: NodeId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ControllerError> {
        let Some(peer) = self.peers.get(&node) else {
            return Err(ControllerError::Unavailable(format!(
                "{node} is not a voter"
            )));
        };
        let channel = match request {
            Request::Heartbeat(_) => &peer.heartbeat,
            _ => &peer.general,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let Ok(mut channel) = tokio::time::timeout_at(deadline, channel.lock()).await else {
            return Err(ControllerError::Unavailable(format!(
                "controller {node}: busy"
            )));
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        channel
            .call(request, left.max(Duration::from_millis(1)))
            .await
            .map_err(|error| ControllerError::Unavailable(format!("controller {node}: {error}")))
    }

    /// Serves an observer's fetch (the active controller only): committed entries from
    /// `from_index`, waiting up to `max_wait_ms` for one; the whole image when the log
    /// there is purged.
    pub(crate) async fn serve_fetch(
        &self,
        observer: NodeId,
        from_index: u64,
        max_wait_ms: u64,
    ) -> Result<MetadataBatch, ControllerError> {
        const ENTRIES_MAX: u64 = 1000;
        const WAIT_MAX: Duration = Duration::from_secs(5);
        if !self.is_leader() {
            return Err(ControllerError::Unavailable(
                "not the active controller".into(),
            ));
        }
        let leader = self.settings.node_id;
        let wait = Duration::from_millis(max_wait_ms).min(WAIT_MAX);
        let mut images = self.subscribe();
        let _ = tokio::time::timeout(
            wait,
            images.wait_for(|image| image.applied_index >= from_index),
        )
        .await;
        let image = self.image();
        {
            let mut liveness = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
            liveness.note_observer(observer, from_index, now_ms());
        }
        if image.applied_index < from_index {
            // Nothing new: make sure this is still the leader (a deposed, cut-off one would
            // otherwise keep an observer, and its heartbeats, to itself).
            #[allow(deprecated)]
            let confirmed = match &self.raft {
                Some(raft) => {
                    tokio::time::timeout(wait.max(Duration::from_millis(500)), raft.is_leader())
                        .await
                        .is_ok_and(|checked| checked.is_ok())
                }
                None => false,
            };
            if !confirmed {
                return Err(ControllerError::Unavailable(
                    "no longer the active controller".into(),
                ));
            }
            return Ok(MetadataBatch::Entries {
                leader,
                entries: Vec::new(),
            });
        }
        let last = image
            .applied_index
            .min(from_index.saturating_add(ENTRIES_MAX - 1));
        let reader = self
            .log_reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(mut reader) = reader else {
            return Err(ControllerError::Unavailable("shutting down".into()));
        };
        use openraft::storage::RaftLogReader;
        let entries = reader.try_get_log_entries(from_index..=last).await;
        match entries {
            Ok(entries) if entries.first().map(|e| e.log_id.index) == Some(from_index) => {
                let entries = entries
                    .into_iter()
                    .map(|entry| {
                        let command = match entry.payload {
                            openraft::EntryPayload::Normal(command) => Some(command),
                            _ => None,
                        };
                        (entry.log_id.index, command)
                    })
                    .collect();
                Ok(MetadataBatch::Entries { leader, entries })
            }
            // Purged behind a snapshot (or unreadable here): the image is committed state.
            _ => Ok(MetadataBatch::Image {
                leader,
                image: Box::new(MetadataImage::clone(&image)),
            }),
        }
    }

    /// A voter without a Raft log asks the other voters before it does anything: if any
    /// holds a log, the quorum exists and this voter was wiped (or is new), so it records
    /// the longest log it heard of and votes for nobody shorter until it has applied that
    /// far; if a majority (itself included) holds none, the quorum is being formed and it
    /// initializes it with the same voter set as the others (Raft allows that). Silence
    /// decides nothing: it asks again.
    async fn join_or_initialize(self: Arc<Self>) {
        const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
        const PROBE_PAUSE: Duration = Duration::from_millis(200);
        let majority = self.settings.voters.len() / 2 + 1;
        let mut asked = 0u64;
        loop {
            let mut empty = 1;
            let mut longest: Option<u64> = None;
            for node in self.peers.keys() {
                match self.call_voter(*node, Request::Probe, PROBE_TIMEOUT).await {
                    Ok(Response::Probe {
                        initialized: true,
                        last_log_index,
                    }) => {
                        longest = Some(longest.unwrap_or(0).max(last_log_index));
                    }
                    Ok(Response::Probe {
                        initialized: false, ..
                    }) => empty += 1,
                    _ => {}
                }
            }
            if let Some(target) = longest {
                tracing::warn!(
                    catch_up_to = target,
                    "this voter has no metadata log but the quorum has one: catching up \
                     before voting"
                );
                if let Err(error) = self.set_catch_up_to(target) {
                    tracing::error!(%error, "could not store the catch-up target");
                    continue;
                }
                break;
            }
            if empty >= majority {
                if let Err(error) = self.initialize().await {
                    tracing::error!(%error, "initializing the metadata quorum failed");
                }
                break;
            }
            asked += 1;
            if asked % 25 == 1 {
                tracing::info!(
                    answered_empty = empty,
                    majority,
                    "asking the other voters whether a quorum exists"
                );
            }
            let mut stopped = self.stopped.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(PROBE_PAUSE) => {}
                _ = stopped.wait_for(|stopped| *stopped) => return,
            }
        }
        self.joining
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stores (durably, before it counts) the log index a rebuilt voter must reach before it
    /// votes; a restart in between keeps it.
    fn set_catch_up_to(&self, target: u64) -> Result<(), ControllerError> {
        let store = self
            .log_reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(store) = store else {
            return Err(ControllerError::Unavailable("shutting down".into()));
        };
        let target = target.max(self.catch_up_to.load(std::sync::atomic::Ordering::Relaxed));
        tokio::task::block_in_place(|| store.set_catch_up_to(target).map_err(|e| e.to_string()))
            .map_err(|e| quorum_error(&self.settings, e))?;
        self.catch_up_to
            .store(target, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether to refuse a vote: while this voter does not yet know whether a quorum exists,
    /// always; while it catches up, to any candidate whose log is shorter than what the
    /// quorum had (it may lack an entry this voter acknowledged before it was wiped).
    pub(crate) fn refuses_vote(&self, request: &openraft::raft::VoteRequest<u64>) -> bool {
        if self.joining.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let target = self.catch_up_to.load(std::sync::atomic::Ordering::Relaxed);
        if target == 0 || !self.catching_up() {
            return false;
        }
        request.last_log_id.map_or(0, |id| id.index) < target
    }

    /// True while a rebuilt voter has not yet applied what the quorum had when it joined.
    pub(crate) fn catching_up(&self) -> bool {
        let target = self.catch_up_to.load(std::sync::atomic::Ordering::Relaxed);
        if target == 0 {
            return false;
        }
        let applied = self.image().applied_index;
        if applied < target {
            return true;
        }
        let store = self
            .log_reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(store) = store
            && tokio::task::block_in_place(|| store.set_catch_up_to(0).is_ok())
        {
            self.catch_up_to
                .store(0, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(applied, "caught up with the quorum; voting again");
        }
        false
    }

    /// The voters in `controller.quorum.voters` must be the quorum's membership: voters
    /// cannot be changed by configuration (dynamic voters do not exist here), and a
    /// mismatch could let two groups of voters elect two leaders of one cluster.
    async fn check_configured_voters(&self) -> Result<(), ControllerError> {
        // The Raft core publishes the stored membership once it has started.
        let mut watch = self.voter().metrics();
        let known = |m: &openraft::RaftMetrics<u64, BasicNode>| {
            m.membership_config
                .membership()
                .voter_ids()
                .next()
                .is_some()
        };
        let started = tokio::time::timeout(
            Duration::from_secs(10),
            watch.wait_for(|m| known(m) || m.running_state.is_err()),
        )
        .await
        // The guard `wait_for` returns is a read lock on the metrics: keep only whether it
        // came, since borrowing again below while Raft waits to publish would deadlock.
        .map(drop);
        drop(watch);
        if started.is_err() {
            return Err(quorum_error(
                &self.settings,
                "the stored voter set never loaded",
            ));
        }
        let metrics = self.voter().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let stored: BTreeMap<NodeId, String> = membership
            .nodes()
            .filter(|(id, _)| membership.voter_ids().any(|voter| voter == **id))
            .map(|(id, node)| (kafka_id(*id), node.addr.clone()))
            .collect();
        let configured = &self.settings.voters;
        let same_ids = stored.keys().eq(configured.keys());
        // A lone voter may gain or change its controller address: nobody else uses it.
        let same_addresses = configured.len() <= 1 || stored == *configured;
        if same_ids && same_addresses {
            return Ok(());
        }
        Err(quorum_error(
            &self.settings,
            format!(
                "controller.quorum.voters {configured:?} differs from the quorum's voters \
                 {stored:?} (changing voters is not supported yet); restore the previous \
                 voter configuration"
            ),
        ))
    }

    /// Some other cluster answered: enough voters that this node can never form or join
    /// a quorum. `Some(their cluster id)`.
    pub fn wrong_cluster(&self) -> Option<String> {
        let n = self.settings.voters.len();
        let needed = n - n / 2;
        self.identity.wrong_cluster(needed)
    }

    async fn initialize(&self) -> Result<(), ControllerError> {
        let members: BTreeMap<u64, BasicNode> = self
            .settings
            .voters
            .iter()
            .map(|(id, address)| (raft_id(*id), BasicNode::new(address)))
            .collect();
        match self.voter().initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(error) => Err(quorum_error(&self.settings, error)),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.identity.cluster_id
    }

    pub fn node_id(&self) -> NodeId {
        self.settings.node_id
    }

    /// The Raft node of a voter; `None` on an observer.
    pub(crate) fn raft(&self) -> Option<&RaftNode> {
        self.raft.as_ref()
    }

    /// The Raft node; only called on paths that exist for voters.
    fn voter(&self) -> &RaftNode {
        self.raft.as_ref().expect("only voters reach here")
    }

    pub fn settings(&self) -> &ControllerSettings {
        &self.settings
    }

    /// The current image; cheap (an `Arc` clone), safe to call on every request.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.publisher.image()
    }

    /// A receiver that sees every new image (for reconcilers).
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.publisher.subscribe()
    }

    /// The active controller, if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        match &self.raft {
            Some(raft) => raft.metrics().borrow().current_leader.map(kafka_id),
            None => {
                let hint = self.leader_hint.load(std::sync::atomic::Ordering::Relaxed);
                (hint >= 0).then_some(hint)
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.settings.node_id)
    }

    /// Why the Raft node stopped, if it did (a storage error: it serves no more metadata
    /// changes until restarted).
    pub fn failure(&self) -> Option<String> {
        let raft = self.raft.as_ref()?;
        match &raft.metrics().borrow().running_state {
            Ok(()) => None,
            Err(fatal) => Some(fatal.to_string()),
        }
    }

    /// Waits until some node is the active controller (or `timeout` passes).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let deadline = tokio::time::Instant::now() + timeout;
        let Some(raft) = &self.raft else {
            loop {
                if let Some(leader) = self.leader() {
                    return Some(leader);
                }
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        };
        let mut metrics = raft.metrics();
        loop {
            if let Some(leader) = metrics.borrow_and_update().current_leader {
                return Some(kafka_id(leader));
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Proposes `command` through the active controller; returns its outcome once this
    /// node has applied it (so a reconciler here sees the change before the caller answers).
    pub async fn submit(
        &self,
        command: MetadataCommand,
    ) -> Result<CommandOutcome, ControllerError> {
        let (applied, index) = self.submit_indexed(command).await?;
        self.wait_applied(index, SUBMIT_DEADLINE).await?;
        applied.map_err(ControllerError::from)
    }

    /// Proposes here if this node leads, else forwards to the leader; retries through
    /// elections until the deadline.
    pub async fn submit_indexed(
        &self,
        command: MetadataCommand,
    ) -> Result<(Applied, u64), ControllerError> {
        let deadline = Instant::now() + SUBMIT_DEADLINE;
        loop {
            let attempt = match self.leader() {
                Some(leader) if leader == self.settings.node_id => {
                    self.submit_as_leader(command.clone()).await
                }
                Some(leader) => self.forward_submit(leader, command.clone()).await,
                None => Err(ControllerError::Unavailable("no active controller".into())),
            };
            match attempt {
                Err(ControllerError::Unavailable(reason)) if Instant::now() < deadline => {
                    tracing::debug!(%reason, "metadata command waits for an active controller");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// Proposes on this node, which must be the active controller.
    pub(crate) async fn submit_as_leader(
        &self,
        command: MetadataCommand,
    ) -> Result<(Applied, u64), ControllerError> {
        let Some(raft) = &self.raft else {
            return Err(ControllerError::Unavailable(
                "an observer proposes nothing".into(),
            ));
        };
        self.check_space_reserve()?;
        let written = tokio::time::timeout(SUBMIT_DEADLINE, raft.client_write(command)).await;
        let Ok(written) = written else {
            return Err(ControllerError::Unavailable(
                "the quorum did not commit the command in time (it may still be applied)".into(),
            ));
        };
        match written {
            Ok(response) => Ok((response.data, response.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(
                ControllerError::Unavailable("this node is no longer the active controller".into()),
            ),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(ControllerError::InvalidRequest(error.to_string()))
            }
            Err(RaftError::Fatal(error)) => Err(ControllerError::Storage(error.to_string())),
        }
    }

    /// Refuses a proposal while the metadata disk is nearly full: openraft treats a failed
    /// log write as fatal (the quorum stops on this node until a restart), so the leader
    /// does not start one it can foresee failing. Kafka halts the whole process instead.
    fn check_space_reserve(&self) -> Result<(), ControllerError> {
        let Ok(stats) = rustix::fs::statvfs(&self.settings.dir) else {
            return Ok(());
        };
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        if free >= METADATA_SPACE_RESERVE_BYTES {
            return Ok(());
        }
        Err(ControllerError::AppendFailed {
            path: self.settings.dir.join(STORE_FILE).display().to_string(),
            source: std::io::Error::other(format!(
                "No space left on device: {free} bytes free, below the metadata disk's \
                 {METADATA_SPACE_RESERVE_BYTES}-byte reserve"
            )),
        })
    }

    async fn call_peer(&self, node: NodeId, request: Request) -> Result<Response, ControllerError> {
        let timeout = Duration::from_millis(self.settings.request_timeout_ms.max(1));
        self.call_voter(node, request, timeout).await
    }

    async fn forward_submit(
        &self,
        leader: NodeId,
        command: MetadataCommand,
    ) -> Result<(Applied, u64), ControllerError> {
        match self.call_peer(leader, Request::Submit(command)).await? {
            Response::Submit(result) => result.map_err(ControllerError::from),
            _ => Err(ControllerError::Unavailable(
                "unexpected controller answer".into(),
            )),
        }
    }

    /// Waits until this node has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ControllerError> {
        let mut images = self.subscribe();
        let wait = images.wait_for(|image| image.applied_index >= index);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ControllerError::Unavailable(format!(
                "metadata offset {index} was committed but not applied here in time"
            ))),
        }
    }

    /// Waits until this voter has applied every entry in its log (start-up).
    pub async fn wait_applied_log_end(&self, timeout: Duration) -> Result<(), ControllerError> {
        let Some(raft) = &self.raft else {
            return Ok(());
        };
        let last = raft.metrics().borrow().last_log_index.unwrap_or(0);
        self.wait_applied(last, timeout).await
    }

    /// A broker's liveness report, delivered to the active controller.
    pub async fn heartbeat(&self, beat: BrokerHeartbeat) -> Result<(), ControllerError> {
        match self.leader() {
            Some(leader) if leader == self.settings.node_id => self.heartbeat_as_leader(beat).await,
            Some(leader) => match self.call_peer(leader, Request::Heartbeat(beat)).await? {
                Response::Heartbeat(result) => result.map_err(ControllerError::from),
                _ => Err(ControllerError::Unavailable(
                    "unexpected controller answer".into(),
                )),
            },
            None => Err(ControllerError::Unavailable("no active controller".into())),
        }
    }

    /// Notes the heartbeat; unfences the broker if it is fenced and caught up.
    pub(crate) async fn heartbeat_as_leader(
        &self,
        beat: BrokerHeartbeat,
    ) -> Result<(), ControllerError> {
        if !self.is_leader() {
            return Err(ControllerError::Unavailable(
                "not the active controller".into(),
            ));
        }
        let image = self.image();
        let Some(registered) = image.brokers.get(&beat.node_id) else {
            return Err(ControllerError::UnknownBroker(beat.node_id));
        };
        if registered.epoch != beat.broker_epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                node_id: beat.node_id,
                epoch: beat.broker_epoch,
                current: registered.epoch,
            });
        }
        let unfence = {
            let mut liveness = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
            liveness.heard_from(beat.node_id, Instant::now());
            liveness.unfence_command(&image, &beat)
        };
        if let Some(command) = unfence {
            tracing::info!(node = beat.node_id, "unfencing a broker that is caught up");
            let (applied, _) = self.submit_as_leader(command).await?;
            if let Err(rejection) = applied {
                tracing::debug!(?rejection, "unfencing raced another change");
            }
        }
        Ok(())
    }

    /// DescribeQuorum from any node: the active controller's view.
    pub async fn quorum_status(&self) -> Result<QuorumStatus, ControllerError> {
        match self.leader() {
            Some(leader) if leader == self.settings.node_id => self.local_quorum_status(),
            Some(leader) => match self.call_peer(leader, Request::DescribeQuorum).await? {
                Response::DescribeQuorum(result) => result.map_err(ControllerError::from),
                _ => Err(ControllerError::Unavailable(
                    "unexpected controller answer".into(),
                )),
            },
            // DescribeQuorum answers NOT_LEADER_OR_FOLLOWER for a quorum without a leader.
            None => Ok(QuorumStatus {
                leader_id: super::quorum_status::NO_LEADER,
                leader_epoch: -1,
                high_watermark: -1,
                voters: Vec::new(),
                observers: Vec::new(),
                nodes: Vec::new(),
            }),
        }
    }

    /// This node's Raft state for `/metrics`; `None` on a node without the controller role
    /// (it follows the metadata log as an observer, without a Raft node of its own).
    pub fn raft_gauges(&self) -> Option<RaftGauges> {
        let raft = self.raft.as_ref()?;
        let metrics = raft.metrics().borrow().clone();
        let last_log_index = metrics.last_log_index;
        // Kafka's current-state names; openraft has no "voted"/"unattached" of its own.
        let state = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Follower => "follower",
            ServerState::Learner => "observer",
            ServerState::Shutdown => "shutdown",
        };
        let follower_lag = metrics
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| kafka_id(**id) != self.settings.node_id)
            .map(|(id, matched)| {
                let matched = matched.as_ref().map_or(0, |log_id| log_id.index + 1);
                let end = last_log_index.map_or(0, |index| index + 1);
                (kafka_id(*id), end.saturating_sub(matched))
            })
            .collect();
        Some(RaftGauges {
            current_epoch: metrics.current_term,
            current_leader: metrics.current_leader.map_or(-1, kafka_id),
            state,
            log_end_offset: last_log_index.map_or(0, |index| index + 1),
            high_watermark: metrics.last_applied.map_or(0, |log_id| log_id.index + 1),
            follower_lag,
        })
    }

    /// The quorum as this node sees it; only the leader's view is authoritative.
    pub(crate) fn local_quorum_status(&self) -> Result<QuorumStatus, ControllerError> {
        let Some(raft) = &self.raft else {
            return Err(ControllerError::Unavailable("not a controller".into()));
        };
        let metrics = raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            return Err(ControllerError::Unavailable(
                "not the active controller".into(),
            ));
        }
        let high_watermark = metrics.last_applied.map_or(0, |id| id.index as i64 + 1);
        let leader_end = metrics.last_log_index.map_or(0, |index| index as i64 + 1);
        let replication = metrics.replication.clone().unwrap_or_default();
        let liveness = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        let progress = |id: u64| {
            let node = kafka_id(id);
            if node == self.settings.node_id {
                return ReplicaProgress {
                    replica_id: node,
                    replica_directory_id: uuid::Uuid::nil(),
                    log_end_offset: leader_end,
                    last_fetch_timestamp: now,
                    last_caught_up_timestamp: now,
                };
            }
            let matched = replication.get(&id).copied().flatten();
            let (fetched, caught_up) = liveness.replica_times(node);
            ReplicaProgress {
                replica_id: node,
                replica_directory_id: uuid::Uuid::nil(),
                log_end_offset: matched.map_or(-1, |id| id.index as i64 + 1),
                last_fetch_timestamp: fetched,
                last_caught_up_timestamp: caught_up,
            }
        };
        let membership = metrics.membership_config.membership();
        let voters = membership.voter_ids().map(progress).collect();
        let mut observers: Vec<ReplicaProgress> = membership.learner_ids().map(progress).collect();
        observers.extend(liveness.observers(now));
        let nodes = self
            .settings
            .voters
            .iter()
            .filter_map(|(id, address)| {
                let listener = if address.is_empty() {
                    self.settings.local_endpoint.clone()
                } else {
                    let (host, port) = address.rsplit_once(':')?;
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    (
                        self.settings.listener_name.clone(),
                        host.to_string(),
                        port.parse().ok()?,
                    )
                };
                Some(QuorumNode {
                    node_id: *id,
                    listeners: vec![listener],
                })
            })
            .collect();
        Ok(QuorumStatus {
            leader_id: self.settings.node_id,
            leader_epoch: i32::try_from(metrics.current_term).unwrap_or(i32::MAX),
            high_watermark,
            voters,
            observers,
            nodes,
        })
    }

    /// Stops the Raft node (the store stays consistent at any point).
    pub async fn shutdown(&self) {
        self.stopped.send_replace(true);
        // Lets the store close once openraft has dropped its handles.
        self.log_reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(raft) = &self.raft
            && let Err(error) = raft.shutdown().await
        {
            tracing::warn!(%error, "metadata quorum shutdown");
        }
    }
}

// openraft's ConfigError is large; it is only built once, at start-up.
#[allow(clippy::result_large_err)]
fn raft_config(settings: &ControllerSettings) -> Result<Config, openraft::ConfigError> {
    // Kafka's election timeout is the upper bound of the random draw, half of it the lower.
    // openraft also uses the heartbeat interval as the deadline of every AppendEntries:
    // a follower whose fsync takes longer never acknowledges anything, so the interval is
    // half the lower bound (250 ms by default), not the customary tenth.
    let election_max = settings.election_timeout_ms.max(20);
    let config = Config {
        cluster_name: settings.cluster_id.clone(),
        election_timeout_min: election_max / 2,
        election_timeout_max: election_max,
        heartbeat_interval: (election_max / 4).max(5),
        install_snapshot_timeout: settings.request_timeout_ms.max(1000) * 5,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_interval_entries.max(1)),
        max_in_snapshot_log_to_keep: settings.log_kept_behind_snapshot,
        ..Config::default()
    };
    config.validate()
}

/// Keeps the published image's controller id equal to the Raft leader, starts the
/// leader's liveness clock when this node takes over, and notes followers' progress.
async fn follow_leadership(controller: Arc<Controller>) {
    let mut metrics = controller.voter().metrics();
    // (leader?, term): a leadership lost and regained between two looks is a new one.
    let mut was: (bool, u64) = (false, 0);
    loop {
        let snapshot = metrics.borrow_and_update().clone();
        if snapshot.running_state.is_err() {
            if !*controller.stopped.borrow() {
                tracing::error!("the metadata quorum stopped: {:?}", snapshot.running_state);
            }
            return;
        }
        let leader = snapshot.current_leader.map_or(-1, kafka_id);
        controller.publisher.set_leader(leader);
        let is_leader = snapshot.state == ServerState::Leader;
        {
            let mut liveness = controller
                .liveness
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = (is_leader, snapshot.current_term);
            let new_leadership = is_leader && now != was;
            if was.0 && (new_leadership || !is_leader) {
                liveness.lost_leadership();
            }
            if new_leadership {
                tracing::info!(
                    term = snapshot.current_term,
                    "this node is the active controller"
                );
                liveness.became_leader(&controller.image(), Instant::now());
            }
            if is_leader {
                liveness.note_replication(&snapshot, now_ms());
            }
        }
        was = (is_leader, snapshot.current_term);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// The channels to one voter: one for heartbeats, one for everything else.
struct Peer {
    general: Mutex<Channel>,
    heartbeat: Mutex<Channel>,
}

impl Peer {
    fn new(identity: &Identity, address: &str) -> Peer {
        Peer {
            general: Mutex::new(Channel::new(identity.clone(), address.to_string())),
            heartbeat: Mutex::new(Channel::new(identity.clone(), address.to_string())),
        }
    }
}
