//! One broker process: opens the parts in order and offers the operations handlers use.
//!
//! Start-up order: data directory and `meta.properties` (cluster id), controller (replays
//! the metadata log), self-registration, partition reconciliation (recovers logs), then the
//! caller starts the listener. Admin operations go controller-first, then reconcile, so a
//! topic is ready to serve when CreateTopics answers.

use std::path::Path;
use std::sync::Arc;

use thiserror::Error;

use crate::config::BrokerConfig;
use crate::controller::topic_admin::{self, NewTopic, TopicDefaults};
use crate::controller::{
    BrokerEndpoint, CommandOutcome, Controller, ControllerError, MetadataCommand, MetadataImage,
};
use crate::group::{CoordinatorConfig, GroupConfig, GroupCoordinator, OFFSETS_TOPIC};
use crate::replica::ReplicaManager;
use crate::replica::replica_manager::on_threads;
use crate::server::Shutdown;
use crate::txn::producer_ids::ProducerIdManager;
use crate::types::{NodeId, kafka_uuid_string};

/// Where the controller keeps its log, named as Kafka names its metadata partition.
pub const METADATA_DIR: &str = "__cluster_metadata-0";
const META_PROPERTIES: &str = "meta.properties";

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("meta.properties says node.id {found}, but this broker is configured as {configured}")]
    NodeIdMismatch { found: String, configured: NodeId },
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// A stray partition directory could not be set aside: opening partitions over it
    /// could serve one topic's data as another's, so start-up stops.
    #[error("log directory clean-up: {0}")]
    LogDirectory(#[from] crate::replica::ReplicaError),
}

pub struct Broker {
    pub config: Arc<BrokerConfig>,
    pub controller: Arc<Controller>,
    pub replicas: ReplicaManager,
    pub producer_ids: ProducerIdManager,
    pub groups: GroupCoordinator,
    /// Flipped once at shutdown; parked requests (delayed fetches) answer early on it.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Broker {
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        let config = Arc::new(config);
        let cluster_id = prepare_data_dir(&config)?;
        let controller = Arc::new(Controller::open(&config.log_dirs.join(METADATA_DIR))?);
        let broker = Broker {
            replicas: ReplicaManager::new(config.clone()),
            producer_ids: ProducerIdManager::new(controller.clone()),
            groups: GroupCoordinator::new(
                CoordinatorConfig {
                    offsets_partitions: config.offsets_topic_partitions,
                    offsets_retention_ms: config.offsets_retention_ms,
                },
                GroupConfig {
                    min_session_timeout_ms: config.group_session_timeout_ms_min,
                    max_session_timeout_ms: config.group_session_timeout_ms_max,
                    initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
                    max_size: config.group_size_max,
                    ..GroupConfig::default()
                },
            ),
            controller,
            config,
            stopping: tokio::sync::watch::channel(false).0,
        };
        broker.bootstrap(cluster_id).await?;
        let image = broker.image();
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
            broker.load_offsets_partitions();
        });
        Ok(Arc::new(broker))
    }

    /// Replays every offsets partition this broker leads and has not loaded yet.
    fn load_offsets_partitions(&self) {
        let image = self.image();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            return;
        };
        for (index, partition) in topic.partitions.iter().enumerate() {
            let index = index as i32;
            if partition.leader != self.config.node_id || self.groups.is_loaded(index) {
                continue;
            }
            let Some(log) = self.replicas.get(OFFSETS_TOPIC, index) else {
                continue;
            };
            match self.groups.load(&log) {
                Ok(records) => tracing::debug!(partition = index, records, "loaded offsets"),
                Err(error) => tracing::error!(partition = index, %error, "loading offsets failed"),
            }
        }
    }

    /// The offsets partition this broker leads for `group`, if any (group timers).
    pub fn offsets_partition_for(&self, group: &str) -> Option<Arc<crate::replica::Partition>> {
        let index = self.groups.partition_for(group);
        let leads = self.image().partition(OFFSETS_TOPIC, index)?.leader == self.config.node_id;
        if leads {
            self.replicas.get(OFFSETS_TOPIC, index)
        } else {
            None
        }
    }

    /// Creates `__consumer_offsets` on first use, as Kafka does on the first FindCoordinator.
    pub async fn ensure_offsets_topic(&self) -> Result<(), ControllerError> {
        if self.image().topic(OFFSETS_TOPIC).is_none() {
            let configs = [
                ("cleanup.policy", "compact"),
                ("compression.type", "producer"),
                ("segment.bytes", "104857600"),
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
            match self.create_topic(&topic, false).await {
                Ok(_) | Err(ControllerError::TopicAlreadyExists(_)) => {}
                Err(error) => return Err(error),
            }
        }
        tokio::task::block_in_place(|| self.load_offsets_partitions());
        Ok(())
    }

    async fn bootstrap(&self, cluster_id: String) -> Result<(), ControllerError> {
        let image = self.image();
        if image.cluster_id.is_empty() {
            let command = MetadataCommand::Bootstrap {
                cluster_id,
                controller_id: self.config.node_id,
            };
            self.controller.submit(command).await?;
        }
        // Every process start is a new incarnation: Kafka registers it fenced.
        let advertised = &self.config.advertised;
        let register = MetadataCommand::RegisterBroker {
            node_id: self.config.node_id,
            incarnation_id: uuid::Uuid::new_v4(),
            listeners: vec![BrokerEndpoint {
                name: advertised.name.clone(),
                host: advertised.host.clone(),
                port: advertised.port,
            }],
            rack: self.config.explicit.get("broker.rack").cloned(),
        };
        let epoch = match self.controller.submit(register).await? {
            CommandOutcome::BrokerRegistered { epoch } => epoch,
            other => {
                return Err(ControllerError::InvalidRequest(format!(
                    "registration answered {other:?}"
                )));
            }
        };
        // lead: replaced by heartbeats
        let unfence = MetadataCommand::UnfenceBroker {
            node_id: self.config.node_id,
            epoch,
        };
        self.controller.submit(unfence).await?;
        Ok(())
    }

    /// A receiver for the shutdown signal (connections, background tasks, waits).
    pub fn shutdown_signal(&self) -> Shutdown {
        Shutdown::from_receiver(self.stopping.subscribe())
    }

    /// Starts shutdown: listeners stop accepting, parked requests answer now.
    pub fn begin_shutdown(&self) {
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

    /// Submits a command and makes this broker's partitions match the new image.
    async fn submit(&self, command: MetadataCommand) -> Result<CommandOutcome, ControllerError> {
        let outcome = self.controller.submit(command).await?;
        let image = self.image();
        tokio::task::block_in_place(|| self.replicas.reconcile(&image));
        Ok(outcome)
    }

    /// Creates a topic (unless `validate_only`); returns the command that was (or would be)
    /// applied so the caller can report partitions and ids.
    pub async fn create_topic(
        &self,
        topic: &NewTopic,
        validate_only: bool,
    ) -> Result<MetadataCommand, ControllerError> {
        let command = topic_admin::plan_create_topic(&self.image(), self.topic_defaults(), topic)?;
        if !validate_only {
            self.submit(command.clone()).await?;
        }
        Ok(command)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ControllerError> {
        let command =
            topic_admin::plan_delete_topic(&self.image(), name, self.config.delete_topic_enable)?;
        self.submit(command).await.map(drop)
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<NodeId>]>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        let image = self.image();
        let command = topic_admin::plan_create_partitions(
            &image,
            self.topic_defaults(),
            name,
            count,
            assignments,
        )?;
        if !validate_only {
            self.submit(command).await?;
        }
        Ok(())
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
        if closed.contains(&false) {
            tracing::warn!("not marking the shutdown clean: the next start recovers the logs");
            return;
        }
        // A partition that never opened in this run still holds whatever an earlier crash
        // left: the marker must not let the next start skip its recovery.
        if self.replicas.has_open_failures() {
            tracing::warn!(
                "not marking the shutdown clean: some partitions never opened in this run"
            );
            return;
        }
        if let Err(error) = crate::log::write_marker(&self.config.log_dirs) {
            tracing::error!(%error, "writing the clean-shutdown marker failed");
        }
    }
}

/// Creates the data directory and reads (or writes) `meta.properties`; returns the
/// cluster id. Refuses a directory that belongs to another node id.
fn prepare_data_dir(config: &BrokerConfig) -> Result<String, BrokerError> {
    let dir = &config.log_dirs;
    let io = |source| BrokerError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    crate::log::durable::create_dir_durably(dir).map_err(io)?;
    let path = dir.join(META_PROPERTIES);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let properties = crate::config::parse_properties(&text);
        if let Some(found) = properties.get("node.id")
            && found.parse::<NodeId>().ok() != Some(config.node_id)
        {
            return Err(BrokerError::NodeIdMismatch {
                found: found.clone(),
                configured: config.node_id,
            });
        }
        if let Some(cluster_id) = properties.get("cluster.id") {
            return Ok(cluster_id.clone());
        }
    }
    let cluster_id = kafka_uuid_string(&uuid::Uuid::new_v4());
    write_meta_properties(dir, &cluster_id, config.node_id).map_err(io)?;
    Ok(cluster_id)
}

fn write_meta_properties(dir: &Path, cluster_id: &str, node_id: NodeId) -> std::io::Result<()> {
    let directory_id = kafka_uuid_string(&uuid::Uuid::new_v4());
    let text = format!(
        "#\n#{}\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\ndirectory.id={directory_id}\n",
        "written by kafkaesque"
    );
    crate::log::durable::publish_file(dir, META_PROPERTIES, text.as_bytes())
}
