//! One broker process: opens the parts in order and offers the operations handlers use.
//!
//! Start-up order: data directory and `meta.properties` (cluster id), controller (replays
//! the metadata log), self-registration, partition reconciliation (recovers logs), then the
//! caller starts the listener. Admin operations go controller-first, then reconcile, so a
//! topic is ready to serve when CreateTopics answers.

use std::sync::Arc;

use thiserror::Error;

use crate::api::fetch_session::FetchSessionCache;
use crate::auto_create::AutoCreations;
use crate::client_quota::mutation::Exhausted;
use crate::client_quota::rate::RateConfig;
use crate::client_quota::{ClientQuotaManager, MutationQuota};
use crate::config::BrokerConfig;
use crate::config::connection_limits::{self, ConnectionLimits};
use crate::controller::topic_admin::{self, NewTopic, TopicDefaults};
use crate::controller::{
    BrokerEndpoint, CommandOutcome, Controller, ControllerError, ControllerSettings,
    MetadataCommand, MetadataImage,
};
use crate::group::{CoordinatorConfig, GroupConfig, GroupCoordinator, LedPartition, OFFSETS_TOPIC};
use crate::replica::fetcher::ReplicaFetchers;
use crate::replica::replica_manager::on_threads;
use crate::replica::replication_quota::ReplicationQuotas;
use crate::replica::{ReplicaManager, isr_changes};
use crate::server::Shutdown;
use crate::server::connection_quotas::{
    ConnectionQuotas, literal_overrides, names_hosts, resolve_overrides,
};
use crate::topic_config::DynamicLayers;
use crate::txn::markers::NetworkMarkerSender;
use crate::txn::producer_ids::ProducerIdManager;
use crate::txn::verification::TxnVerifier;
use crate::txn::{TRANSACTION_STATE_TOPIC, TransactionCoordinator, TxnCoordinatorConfig};
use crate::types::NodeId;

/// Where the controller keeps its log, named as Kafka names its metadata partition.
pub const METADATA_DIR: &str = "__cluster_metadata-0";

/// How long a request waits for a topic it had created in the background: a healthy
/// quorum commits and reconciles in milliseconds, so the first FindCoordinator usually
/// finds its coordinator; a lost one costs the client this much per retry, not 30 s.
const AUTO_CREATE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// When a request that may create topics stops waiting for them: one bound for the whole
/// request, so a FindCoordinator batch or a Metadata request naming many missing topics
/// waits `AUTO_CREATE_WAIT` in all, not per key or topic.
pub fn auto_create_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + AUTO_CREATE_WAIT
}

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    /// The log directory is unformatted, or belongs to another node or cluster.
    #[error(transparent)]
    MetaProperties(#[from] crate::meta_properties::MetaPropertiesError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("{0}")]
    Unsupported(String),
    /// A stray partition directory could not be set aside: opening partitions over it
    /// could serve one topic's data as another's, so start-up stops.
    #[error("log directory clean-up: {0}")]
    LogDirectory(#[from] crate::replica::ReplicaError),
}

pub struct Broker {
    pub config: Arc<BrokerConfig>,
    /// The metadata offset this node's partitions have been reconciled to.
    reconciled: tokio::sync::watch::Sender<u64>,
    pub controller: Arc<Controller>,
    pub replicas: Arc<ReplicaManager>,
    /// Followers' fetchers, one task per leader broker.
    pub fetchers: ReplicaFetchers,
    pub producer_ids: ProducerIdManager,
    pub groups: GroupCoordinator,
    /// The transaction coordinator of the `__transaction_state` partitions led here.
    pub transactions: TransactionCoordinator,
    /// Asks transaction coordinators (here or elsewhere) whether a partition led here is
    /// in a producer's transaction before its first transactional append (KIP-890).
    pub verifier: TxnVerifier,
    /// Client quotas applied here (produce, fetch and request time), from the image.
    pub client_quotas: ClientQuotaManager,
    /// Replication throttles (leader and follower side), from the image.
    pub replication_quotas: Arc<ReplicationQuotas>,
    /// Connection counts and limits shared by the client listeners, kept to the static
    /// configs with the image's dynamic broker configs and ip quotas over them.
    pub connections: Arc<ConnectionQuotas>,
    /// Flipped once at shutdown; background tasks and connections stop on it.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Flipped once when the node stops answering clients (before `stopping`, during a
    /// controlled shutdown): listeners stop and parked requests (delayed fetches) answer
    /// early on it.
    serving_ended: tokio::sync::watch::Sender<bool>,
    /// Topics a request asked to create that the controller has not committed yet.
    auto_creations: AutoCreations,
    /// Incremental fetch sessions (KIP-227) of followers and consumers fetching here.
    pub fetch_sessions: FetchSessionCache,
}

impl Broker {
    /// Opens the node. `controller_listener` (bound by the caller) serves controller RPC
    /// from the moment the quorum starts: voters must hear each other before anyone can
    /// be elected, and this waits for the quorum.
    pub async fn open(
        config: BrokerConfig,
        controller_listener: Option<tokio::net::TcpListener>,
    ) -> Result<Arc<Broker>, BrokerError> {
        let config = Arc::new(config);
        if config.quorum_voters.is_empty() && !config.quorum_bootstrap_servers.is_empty() {
            return Err(BrokerError::Unsupported(
                "controller.quorum.bootstrap.servers without controller.quorum.voters (a \
                 dynamic quorum, KIP-853) is not supported yet: list the voters in \
                 controller.quorum.voters"
                    .into(),
            ));
        }
        let cluster_id = tokio::task::block_in_place(|| crate::meta_properties::prepare(&config))?;
        let metadata_dir = config.log_dirs.join(METADATA_DIR);
        let stopping = tokio::sync::watch::channel(false).0;
        let settings = controller_settings(&config, &cluster_id);
        let controller = if config.roles.controller {
            Controller::start(settings).await?
        } else {
            Controller::start_observer(settings).await?
        };
        if let Some(listener) = controller_listener {
            tokio::spawn(crate::controller::raft::server::serve(
                listener,
                controller.clone(),
                Shutdown::from_receiver(stopping.subscribe()),
            ));
        }
        crate::controller::legacy_import::import_if_present(&controller, &metadata_dir).await?;
        let replication_quotas = Arc::new(ReplicationQuotas::new(
            config.node_id,
            RateConfig {
                samples: config.replication.quota_window_samples,
                window_ms: config.replication.quota_window_seconds.saturating_mul(1000),
            },
        ));
        // Session ids are random (Kafka's too): a client cannot guess another's.
        // A follower an incremental session leaves unvisited has its fetch time at the
        // leader kept within a tenth of the lag bound (see `fetch_session`).
        let fetch_sessions = FetchSessionCache::new(
            config.fetch_session_slots_max,
            uuid::Uuid::new_v4().as_u64_pair().0,
        )
        .with_whole_visit_ms((config.replication.lag_time_max_ms / 10).max(1));
        let broker = Broker {
            reconciled: tokio::sync::watch::channel(0).0,
            replicas: Arc::new(ReplicaManager::new(config.clone())),
            fetchers: ReplicaFetchers::new(
                config.node_id,
                config.replication.clone(),
                replication_quotas.clone(),
                Shutdown::from_receiver(stopping.subscribe()),
            ),
            replication_quotas,
            producer_ids: ProducerIdManager::new(controller.clone()),
            groups: GroupCoordinator::new(
                CoordinatorConfig {
                    offsets_partitions: config.offsets_topic_partitions,
                    offsets_retention_ms: config.offsets_retention_ms,
                    commit_timeout_ms: config.offsets_commit_timeout_ms,
                    consumer: config.consumer_groups.unwrap_or_default(),
                },
                GroupConfig {
                    min_session_timeout_ms: config.group_session_timeout_ms_min,
                    max_session_timeout_ms: config.group_session_timeout_ms_max,
                    initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
                    max_size: config.group_size_max,
                    ..GroupConfig::default()
                },
            ),
            transactions: TransactionCoordinator::new(
                TxnCoordinatorConfig {
                    partitions: config.transactions.state_log_partitions,
                    max_timeout_ms: config.transactions.max_timeout_ms,
                    id_expiration_ms: config.transactions.id_expiration_ms,
                    write_timeout: std::time::Duration::from_millis(
                        config.transactions.state_log_commit_timeout_ms,
                    ),
                },
                Arc::new(NetworkMarkerSender::new(controller.clone(), config.node_id)),
            ),
            verifier: {
                let images = controller.clone();
                TxnVerifier::new(
                    Box::new(move || images.image()),
                    config.node_id,
                    config.transactions.state_log_partitions,
                )
            },
            client_quotas: ClientQuotaManager::new(
                rate_config(&config),
                RateConfig {
                    samples: config.controller_quota_window_samples,
                    window_ms: config.controller_quota_window_seconds.saturating_mul(1000),
                },
            ),
            connections: {
                let names: Vec<&str> = (config.broker_listeners())
                    .map(|endpoint| endpoint.name.as_str())
                    .collect();
                let limits = config.connection_limits.clone();
                let overrides =
                    tokio::task::block_in_place(|| resolve_overrides(&limits.per_ip_overrides));
                Arc::new(ConnectionQuotas::new(
                    limits,
                    overrides,
                    rate_config(&config),
                    &config.inter_broker_listener_name,
                    &names,
                ))
            },
            controller,
            config,
            stopping,
            serving_ended: tokio::sync::watch::channel(false).0,
            auto_creations: AutoCreations::default(),
            fetch_sessions,
        };
        broker.bootstrap(cluster_id).await?;
        let image = broker.image();
        broker.client_quotas.update(&image.client_quotas);
        broker.replication_quotas.update(&image);
        broker.apply_connection_limits(&image);
        broker.replicas.set_aside_stray_directories(&image)?;
        // Taken (and its removal made durable) before any write can be accepted, so a crash
        // from here on is never mistaken for a clean stop.
        let last_shutdown = crate::log::take_marker(&broker.config.log_dirs).map_err(|source| {
            BrokerError::DataDir {
                path: broker.config.log_dirs.display().to_string(),
                source,
            }
        })?;
        tracing::info!(?last_shutdown, "opening partition logs");
        tokio::task::block_in_place(|| {
            broker.replicas.reconcile_after(&image, last_shutdown);
            broker.fetchers.reconcile(&image, &broker.replicas);
            broker.load_offsets_partitions();
            broker.load_transaction_partitions();
        });
        broker.reconciled.send_replace(image.applied_index);
        let broker = Arc::new(broker);
        // Consumer groups read their own configs (GROUP resources) from the image as it is
        // at each use; set before the first image loads a group.
        let controller = broker.controller.clone();
        (broker.groups.registry).set_group_config_source(Box::new(move |group| {
            controller.image().group_configs.get(group).cloned()
        }));
        tokio::spawn(reconcile_images(broker.clone()));
        let replication = &broker.config.replication;
        tokio::spawn(isr_changes::run_isr_expiration(
            broker.controller.clone(),
            broker.replicas.clone(),
            std::time::Duration::from_millis(replication.lag_time_max_ms),
            broker.shutdown_signal(),
        ));
        let transactions = &broker.config.transactions;
        tokio::spawn(crate::txn::coordinator::run_timers(
            broker.transactions.clone(),
            std::time::Duration::from_millis(transactions.abort_timed_out_interval_ms),
            std::time::Duration::from_millis(transactions.remove_expired_interval_ms),
            broker.shutdown_signal(),
        ));
        let (controller, config) = (broker.controller.clone(), broker.config.clone());
        let expiration_ms = move || {
            let image = controller.image();
            let dynamic = DynamicLayers::of(&image.broker_configs, config.node_id);
            crate::config::dynamic_broker::producer_id_expiration_ms(&config, dynamic)
        };
        tokio::spawn(
            crate::replica::producer_expiration::run_producer_expiration(
                broker.replicas.clone(),
                broker.config.producer_id_expiration.clone(),
                expiration_ms,
                broker.shutdown_signal(),
            ),
        );
        tokio::spawn(checkpoint_high_watermarks(
            broker.replicas.clone(),
            std::time::Duration::from_millis(replication.high_watermark_checkpoint_interval_ms),
            broker.shutdown_signal(),
        ));
        Ok(broker)
    }

    /// Makes the group coordinator follow the offsets partitions' leadership: a partition
    /// this broker now leads (at the epoch its log was given) is loaded in the background,
    /// one it no longer leads (or leads at another epoch) is unloaded at once.
    fn load_offsets_partitions(&self) {
        self.groups
            .follow_leadership(&self.led_partitions(OFFSETS_TOPIC));
    }

    /// The same for the transaction coordinator and `__transaction_state`.
    fn load_transaction_partitions(&self) {
        self.transactions
            .follow_leadership(&self.led_partitions(TRANSACTION_STATE_TOPIC));
    }

    /// The partitions of an internal topic this broker leads now, with their logs.
    fn led_partitions(&self, topic: &str) -> std::collections::HashMap<i32, LedPartition> {
        let image = self.image();
        let mut led = std::collections::HashMap::new();
        let partitions = image.topic(topic).map(|topic| &topic.partitions);
        for (index, partition) in partitions.into_iter().flatten().enumerate() {
            let index = index as i32;
            if partition.leader != self.config.node_id {
                continue;
            }
            let Some(log) = self.replicas.get(topic, index) else {
                continue;
            };
            // The log's own view decides: it is what coordinator writes are checked against.
            let (leader_epoch, leads) = log.leadership();
            if leads {
                led.insert(index, LedPartition { log, leader_epoch });
            }
        }
        led
    }

    /// The offsets partition this broker coordinates `group` through, if it is loaded here
    /// (group timers, offset expiry).
    pub fn offsets_partition_for(&self, group: &str) -> Option<Arc<crate::replica::Partition>> {
        let index = self.groups.partition_for(group);
        let leads = self.image().partition(OFFSETS_TOPIC, index)?.leader == self.config.node_id;
        if leads && self.groups.is_loaded(index) {
            self.replicas.get(OFFSETS_TOPIC, index)
        } else {
            None
        }
    }

    /// Creates `__consumer_offsets` on first use, as Kafka does on the first FindCoordinator.
    /// `Unavailable` while the creation is under way (see [`Broker::create_in_background`]).
    pub async fn ensure_offsets_topic(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(), ControllerError> {
        if self.image().topic(OFFSETS_TOPIC).is_none() {
            let segment_bytes = self.config.offsets_topic_segment_bytes.to_string();
            let configs = [
                ("cleanup.policy", "compact"),
                ("compression.type", "producer"),
                ("segment.bytes", segment_bytes.as_str()),
            ];
            let topic = NewTopic {
                name: OFFSETS_TOPIC.to_string(),
                num_partitions: self.config.offsets_topic_partitions,
                replication_factor: self.config.offsets_topic_replication_factor,
                assignments: Vec::new(),
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            self.create_in_background(&topic, &mut MutationQuota::unbounded(), deadline)
                .await?;
        }
        tokio::task::block_in_place(|| self.load_offsets_partitions());
        Ok(())
    }

    /// Creates `__transaction_state` on first use (FindCoordinator for a transactional id,
    /// InitProducerId), as Kafka does: compacted, replicated like the offsets topic.
    /// `Unavailable` while the creation is under way.
    pub async fn ensure_transaction_topic(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(), ControllerError> {
        if self.image().topic(TRANSACTION_STATE_TOPIC).is_none() {
            let settings = &self.config.transactions;
            let configs = [
                ("cleanup.policy", "compact".to_string()),
                ("compression.type", "uncompressed".to_string()),
                (
                    "segment.bytes",
                    settings.state_log_segment_bytes.to_string(),
                ),
                (
                    "min.insync.replicas",
                    settings.state_log_min_isr.to_string(),
                ),
                ("unclean.leader.election.enable", "false".to_string()),
            ];
            let topic = NewTopic {
                name: TRANSACTION_STATE_TOPIC.to_string(),
                num_partitions: settings.state_log_partitions,
                replication_factor: settings.state_log_replication_factor,
                assignments: Vec::new(),
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            };
            self.create_in_background(&topic, &mut MutationQuota::unbounded(), deadline)
                .await?;
        }
        tokio::task::block_in_place(|| self.load_transaction_partitions());
        Ok(())
    }

    /// Creates `topic` for a request that must not wait on the quorum (an internal topic's
    /// first use, Metadata's auto-creation): plans it here (a refused plan is the
    /// request's error, its partitions charged to `quota`), submits it from a background
    /// task unless one for this topic is under way, and waits until `deadline` (see
    /// [`auto_create_deadline`]) for the topic to be applied and reconciled here. Ok once
    /// it is (or already was); `Unavailable` while it is not, which callers answer with a
    /// retriable error, as Kafka answers at once.
    pub async fn create_in_background(
        &self,
        topic: &NewTopic,
        quota: &mut MutationQuota<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<(), ControllerError> {
        let name = topic.name.as_str();
        if !self.auto_creations.is_in_flight(name) {
            let command =
                match topic_admin::plan_create_topic(&self.image(), self.topic_defaults(), topic) {
                    Ok(command) => Some(command),
                    // Created meanwhile (by another node's request): just wait for it here.
                    Err(ControllerError::TopicAlreadyExists(_)) => None,
                    Err(error) => return Err(error),
                };
            if let Some(command) = command {
                if let MetadataCommand::CreateTopic { assignments, .. } = &command {
                    quota.record(assignments.len()).map_err(throttled)?;
                }
                let controller = self.controller.clone();
                let owned = name.to_string();
                self.auto_creations.start(name, async move {
                    match controller.submit(command).await {
                        Ok(_) => tracing::info!(topic = owned, "created topic"),
                        Err(ControllerError::TopicAlreadyExists(_)) => {}
                        Err(error) => tracing::warn!(%error, topic = owned, "cannot create topic"),
                    }
                });
            }
        }
        if tokio::time::timeout_at(deadline, self.wait_topic_reconciled(name))
            .await
            .is_err()
        {
            return Err(ControllerError::Unavailable(format!(
                "topic {name} is being created"
            )));
        }
        Ok(())
    }

    /// Waits until `name` is in the image and this node reconciled that image (its
    /// partitions are open here, as after a CreateTopics).
    async fn wait_topic_reconciled(&self, name: &str) {
        let mut images = self.controller.subscribe();
        let index = images
            .wait_for(|image| image.topic(name).is_some())
            .await
            .map(|image| image.applied_index);
        // Err: the controller or the reconciler is gone (shutdown); the caller's bound
        // ends the wait.
        let Ok(index) = index else {
            return std::future::pending().await;
        };
        let mut reconciled = self.reconciled.subscribe();
        if reconciled.wait_for(|done| *done >= index).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Joins the quorum's cluster (the first node to get there names it), registers this
    /// broker, and waits until the active controller has unfenced it: like Kafka's broker,
    /// this one serves nothing before it is part of the cluster.
    async fn bootstrap(&self, cluster_id: String) -> Result<(), ControllerError> {
        const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
        while self.controller.wait_for_leader(LOG_EVERY).await.is_none() {
            if let Some(reason) = self.controller.failure() {
                return Err(ControllerError::Quorum {
                    path: METADATA_DIR.into(),
                    reason,
                });
            }
            if let Some(theirs) = self.controller.wrong_cluster() {
                return Err(ControllerError::ClusterIdMismatch {
                    ours: cluster_id,
                    theirs,
                });
            }
            tracing::info!("waiting for the metadata quorum to elect an active controller");
        }
        if !self.config.roles.controller {
            // An observer names no cluster: it waits for the voters' bootstrap record.
            let mut images = self.controller.subscribe();
            let mut stopping = self.stopping.subscribe();
            tokio::select! {
                _ = images.wait_for(|image| !image.cluster_id.is_empty()) => {}
                _ = stopping.wait_for(|stopping| *stopping) => {}
            }
        } else if self.image().cluster_id.is_empty() {
            let command = MetadataCommand::Bootstrap {
                cluster_id: cluster_id.clone(),
                controller_id: self.config.node_id,
            };
            // Another voter may have bootstrapped first: its record wins, checked below.
            if let Err(error) = self.controller.submit(command).await {
                tracing::debug!(%error, "bootstrap record not applied");
            }
        }
        let theirs = self.image().cluster_id.clone();
        if theirs != cluster_id {
            return Err(ControllerError::ClusterIdMismatch {
                ours: cluster_id,
                theirs,
            });
        }
        tokio::spawn(crate::controller::rebalance::run_rebalance(
            self.controller.clone(),
            crate::controller::rebalance::RebalanceSettings::from_config(&self.config),
            self.shutdown_signal(),
        ));
        tokio::spawn(crate::controller::unclean_election::run_unclean_elections(
            self.controller.clone(),
            self.config.clone(),
            self.shutdown_signal(),
        ));
        if !self.config.roles.broker {
            // A controller-only node votes and serves controller RPC; it is no broker.
            tokio::spawn(crate::controller::liveness::run_fencing(
                self.controller.clone(),
                self.shutdown_signal(),
            ));
            return Ok(());
        }
        // Every process start is a new incarnation: Kafka registers it fenced.
        let register = MetadataCommand::RegisterBroker {
            node_id: self.config.node_id,
            incarnation_id: uuid::Uuid::new_v4(),
            listeners: self.advertised_endpoints(),
            rack: self.config.broker_rack.clone(),
        };
        match self.controller.submit(register).await? {
            CommandOutcome::BrokerRegistered { .. } => {}
            other => {
                return Err(ControllerError::InvalidRequest(format!(
                    "registration answered {other:?}"
                )));
            }
        }
        let interval = std::time::Duration::from_millis(self.config_heartbeat_interval_ms());
        tokio::spawn(crate::controller::liveness::run_heartbeats(
            self.controller.clone(),
            interval,
            self.shutdown_signal(),
        ));
        tokio::spawn(crate::controller::liveness::run_fencing(
            self.controller.clone(),
            self.shutdown_signal(),
        ));
        self.wait_unfenced().await;
        Ok(())
    }

    /// The advertised broker (non-controller) endpoints, the inter-broker listener first
    /// (peers replicate through the first; clients are answered on their own listener).
    fn advertised_endpoints(&self) -> Vec<BrokerEndpoint> {
        let client = &self.config.advertised;
        let others = self
            .config
            .advertised_listeners
            .iter()
            .filter(|endpoint| endpoint.name != client.name)
            .filter(|endpoint| {
                !self
                    .config
                    .controller_listener_names
                    .contains(&endpoint.name)
            });
        std::iter::once(client)
            .chain(others)
            .map(|endpoint| BrokerEndpoint {
                name: endpoint.name.clone(),
                host: endpoint.host.clone(),
                port: endpoint.port,
            })
            .collect()
    }

    fn config_heartbeat_interval_ms(&self) -> u64 {
        self.config.broker_heartbeat_interval_ms
    }

    /// Heartbeats at once (not a whole interval later) until the image shows this broker
    /// unfenced.
    async fn wait_unfenced(&self) {
        let node_id = self.config.node_id;
        let mut images = self.controller.subscribe();
        loop {
            let unfenced = images
                .borrow_and_update()
                .brokers
                .get(&node_id)
                .is_some_and(|broker| !broker.fenced);
            if unfenced {
                return;
            }
            crate::controller::liveness::beat_once(&self.controller, node_id).await;
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(200), images.changed()).await;
        }
    }

    /// A receiver for the shutdown signal (connections, background tasks, waits).
    pub fn shutdown_signal(&self) -> Shutdown {
        Shutdown::from_receiver(self.stopping.subscribe())
    }

    /// A receiver for the end of serving: client listeners and parked requests.
    pub fn serving_signal(&self) -> Shutdown {
        Shutdown::from_receiver(self.serving_ended.subscribe())
    }

    /// Stops answering clients: listeners stop accepting, connections close after the
    /// request in hand, parked requests answer now. Background work (replication,
    /// heartbeats, the controller) goes on until [`Broker::begin_shutdown`].
    pub fn stop_serving(&self) {
        self.serving_ended.send_replace(true);
        // Parked joins and syncs wait on their group, not on this signal.
        self.groups.registry.stop_serving();
    }

    /// Starts shutdown: serving ends (if it had not) and background tasks stop.
    pub fn begin_shutdown(&self) {
        self.stop_serving();
        self.stopping.send_replace(true);
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.controller.image()
    }

    pub fn topic_defaults(&self) -> TopicDefaults {
        TopicDefaults {
            num_partitions: self.config.num_partitions,
            replication_factor: self.config.default_replication_factor,
            partitions_per_request_max: self.config.partitions_per_request_max,
        }
    }

    /// Submits a command and waits until this node's reconciler has acted on it, so a
    /// topic is ready here when CreateTopics answers.
    async fn submit(&self, command: MetadataCommand) -> Result<CommandOutcome, ControllerError> {
        let (applied, index) = self.controller.submit_indexed(command).await?;
        let mut reconciled = self.reconciled.subscribe();
        let wait = reconciled.wait_for(|done| *done >= index);
        if tokio::time::timeout(std::time::Duration::from_secs(30), wait)
            .await
            .is_err()
        {
            return Err(ControllerError::Unavailable(format!(
                "metadata offset {index} was not reconciled here in time"
            )));
        }
        applied.map_err(ControllerError::from)
    }

    /// Plans and (unless `validate_only`) applies a new topic; returns the command that was
    /// (or would be) applied so the caller can report partitions and ids. Its partitions
    /// are taken from `quota` once the plan is valid, as Kafka's controller does: a refused
    /// topic costs nothing, a validate-only one costs as much as a real one.
    pub async fn create_topic(
        &self,
        topic: &NewTopic,
        validate_only: bool,
        quota: &mut MutationQuota<'_>,
    ) -> Result<MetadataCommand, ControllerError> {
        let command = topic_admin::plan_create_topic(&self.image(), self.topic_defaults(), topic)?;
        if let MetadataCommand::CreateTopic { assignments, .. } = &command {
            quota.record(assignments.len()).map_err(throttled)?;
        }
        if !validate_only {
            self.submit(command.clone()).await?;
        }
        Ok(command)
    }

    pub async fn delete_topic(
        &self,
        name: &str,
        quota: &mut MutationQuota<'_>,
    ) -> Result<(), ControllerError> {
        let image = self.image();
        let command =
            topic_admin::plan_delete_topic(&image, name, self.config.delete_topic_enable)?;
        let partitions = image.topic(name).map_or(0, |topic| topic.partitions.len());
        quota.record(partitions).map_err(throttled)?;
        self.submit(command).await.map(drop)
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<NodeId>]>,
        validate_only: bool,
        quota: &mut MutationQuota<'_>,
    ) -> Result<(), ControllerError> {
        let image = self.image();
        let command = topic_admin::plan_create_partitions(
            &image,
            self.topic_defaults(),
            name,
            count,
            assignments,
        )?;
        if let MetadataCommand::CreatePartitions { assignments, .. } = &command {
            // The command lists the added partitions only.
            quota.record(assignments.len()).map_err(throttled)?;
        }
        if !validate_only {
            self.submit(command).await?;
        }
        Ok(())
    }

    /// Submits a planned command (a config change, feature levels, client quotas) and
    /// waits until this node applied it, so the client's next request here sees it.
    pub async fn submit_planned(&self, command: MetadataCommand) -> Result<(), ControllerError> {
        self.submit(command).await.map(drop)
    }

    /// Clean shutdown, once nothing appends any more: flushes every hosted log, snapshots
    /// its producer state, then writes the clean-shutdown marker, unless a flush failed.
    pub fn shut_down_logs(&self) {
        let partitions = self.replicas.all();
        let threads = self.config.recovery_threads_per_data_dir;
        let closed = on_threads(&partitions, threads, |partition| {
            let closed = partition.close_cleanly();
            if let Err(error) = &closed {
                tracing::error!(tp = %partition.tp, %error, "flush at shutdown failed");
            }
            closed.is_ok()
        });
        // A partition that never opened in this run still holds whatever an earlier crash
        // left: the marker must not let the next start skip its recovery. (Checked first:
        // it is the cause when the descriptor table is full, and flushes then fail too.)
        if self.replicas.has_open_failures() {
            tracing::warn!(
                "not marking the shutdown clean: some partitions never opened in this run"
            );
            return;
        }
        if closed.contains(&false) {
            tracing::warn!("not marking the shutdown clean: the next start recovers the logs");
            return;
        }
        if let Err(error) = self.replicas.checkpoint_high_watermarks() {
            tracing::warn!(%error, "writing the high-watermark checkpoint at shutdown failed");
        }
        if let Err(error) = crate::log::write_marker(&self.config.log_dirs) {
            tracing::error!(%error, "writing the clean-shutdown marker failed");
        }
    }
}

/// A topic refused by its controller mutation quota (KIP-599).
fn throttled(exhausted: Exhausted) -> ControllerError {
    ControllerError::ThrottlingQuotaExceeded {
        throttle_ms: exhausted.throttle_ms,
    }
}

/// `quota.window.num` x `quota.window.size.seconds`, for client and connection quotas.
fn rate_config(config: &BrokerConfig) -> RateConfig {
    RateConfig {
        samples: config.quota_window_samples,
        window_ms: config.quota_window_seconds.saturating_mul(1000),
    }
}

impl Broker {
    /// The connection limits of the static configs with the image's dynamic broker
    /// configs over them (cluster default, then this broker's), and the image's ip
    /// connection creation rate quotas, applied to the listeners at once. Values were
    /// validated when altered; a combination that still does not fit keeps the limits
    /// in force, as Kafka keeps its config when a dynamic update fails to apply.
    fn apply_connection_limits(&self, image: &crate::controller::MetadataImage) {
        self.connections.update_ip_quotas(&image.client_quotas);
        let dynamic =
            crate::topic_config::DynamicLayers::of(&image.broker_configs, self.config.node_id);
        let configs =
            connection_limits::layered(&self.config.explicit, dynamic.cluster, dynamic.per_broker);
        let limits = match ConnectionLimits::from_configs(&configs) {
            Ok(limits) => limits,
            Err(error) => {
                tracing::error!(%error, "dynamic connection limits not applied");
                return;
            }
        };
        let current = self.connections.limits();
        if limits == current {
            return;
        }
        // Only when the overrides change: addresses apply at once, host names once looked
        // up on a blocking thread (a DNS outage must not hold up the reconciler, which
        // also opens partitions and moves leaders); a lookup for overrides replaced
        // meanwhile is dropped.
        let overrides = if limits.per_ip_overrides == current.per_ip_overrides {
            None
        } else {
            let wanted = limits.per_ip_overrides.clone();
            if names_hosts(&wanted) {
                let connections = self.connections.clone();
                tokio::task::spawn_blocking(move || {
                    let resolved = resolve_overrides(&wanted);
                    connections.set_resolved_overrides(&wanted, resolved);
                });
            }
            Some(literal_overrides(&limits.per_ip_overrides))
        };
        self.connections.update_limits(limits, overrides);
    }
}

/// The one reconciler: every committed image, whoever proposed the change, opens, closes
/// and re-roles local partitions here, then loads offsets partitions this node now leads.
async fn reconcile_images(broker: Arc<Broker>) {
    let mut images = broker.controller.subscribe();
    let mut stopping = broker.stopping.subscribe();
    loop {
        let image = images.borrow_and_update().clone();
        // Quotas apply on every node from the committed image, whoever changed them.
        broker.client_quotas.update(&image.client_quotas);
        broker.replication_quotas.update(&image);
        broker.apply_connection_limits(&image);
        let index = image.applied_index;
        if index > *broker.reconciled.borrow() {
            let hosted = broker.clone();
            let transaction_version = crate::controller::features::finalized_level(
                &image,
                crate::controller::features::TRANSACTION_VERSION,
            );
            broker.transactions.set_cluster_version(transaction_version);
            let work = tokio::task::spawn_blocking(move || {
                hosted.replicas.reconcile(&image);
                hosted.fetchers.reconcile(&image, &hosted.replicas);
                hosted.load_offsets_partitions();
                hosted.load_transaction_partitions();
            });
            match work.await {
                Ok(()) => {
                    broker.reconciled.send_replace(index);
                }
                // Not marked reconciled: waiting requests time out rather than report a
                // partition ready that is not; the next image tries again.
                Err(error) => tracing::error!(%error, "reconciling partitions panicked"),
            }
        }
        tokio::select! {
            changed = images.changed() => if changed.is_err() { return },
            _ = stopping.changed() => return,
        }
    }
}

/// Writes `replication-offset-checkpoint` every `interval` (when a high watermark moved).
async fn checkpoint_high_watermarks(
    replicas: Arc<ReplicaManager>,
    interval: std::time::Duration,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        let replicas = replicas.clone();
        let written = tokio::task::spawn_blocking(move || replicas.checkpoint_high_watermarks());
        match written.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "writing the high-watermark checkpoint failed")
            }
            Err(error) => tracing::error!(%error, "high-watermark checkpoint task panicked"),
        }
    }
}

/// Metadata entries kept behind a snapshot: a voter a little behind catches up from the log.
const METADATA_LOG_KEPT_BEHIND_SNAPSHOT: u64 = 500;

/// openraft snapshots by entry count; Kafka's `metadata.log.max.record.bytes.between.snapshots`
/// is in bytes. Our commands average a few hundred bytes of JSON.
const METADATA_RECORD_BYTES_ASSUMED: u64 = 256;

fn controller_settings(config: &BrokerConfig, cluster_id: &str) -> ControllerSettings {
    ControllerSettings {
        node_id: config.node_id,
        cluster_id: cluster_id.to_string(),
        dir: config.log_dirs.join(METADATA_DIR),
        // No voters configured: this node alone, with no controller address.
        voters: if config.quorum_voters.is_empty() {
            [(config.node_id, String::new())].into_iter().collect()
        } else {
            config
                .quorum_voters
                .iter()
                .map(|(id, address)| (*id, address.to_string()))
                .collect()
        },
        election_timeout_ms: config.quorum_election_timeout_ms,
        request_timeout_ms: config.quorum_request_timeout_ms,
        snapshot_interval_entries: (config.metadata_log_max_record_bytes_between_snapshots
            / METADATA_RECORD_BYTES_ASSUMED)
            .max(1),
        session_timeout_ms: config.broker_session_timeout_ms,
        log_kept_behind_snapshot: METADATA_LOG_KEPT_BEHIND_SNAPSHOT,
        listener_name: config
            .controller_listener_names
            .first()
            .cloned()
            .unwrap_or_else(|| "CONTROLLER".into()),
        local_endpoint: (
            config.listener.name.clone(),
            config.listener.host.clone(),
            config.listener.port,
        ),
    }
}
