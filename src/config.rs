//! Broker configuration with Kafka's names and defaults.
//!
//! Sources, later wins: built-in defaults, a `.properties` file (`--config FILE`),
//! `KAFKA_`-style environment variables (`KAFKA_LOG_DIRS` -> `log.dirs`, `__` -> `_`,
//! `___` -> `-`, as the common Kafka images do), and `--override key=value` flags.
//! The raw map is kept so DescribeConfigs can tell which keys the operator set.
//! `CLUSTER_ID` in the environment (as the official images read it) is kept apart in
//! [`BrokerConfig::cluster_id_env`]; `meta_properties` decides what it means.
//!
//! Node topology follows Kafka's KRaft settings and `KafkaConfig.validateValues` rules:
//! `process.roles`, `listeners` (a list), `advertised.listeners`, `controller.listener.names`,
//! `listener.security.protocol.map`, `inter.broker.listener.name`,
//! `controller.quorum.voters` and `controller.quorum.bootstrap.servers`. Two departures,
//! both so that `gracchus` with no configuration stays a working single node:
//! - `process.roles` defaults to `broker,controller` and `node.id` to 1 (Kafka requires both).
//! - With neither voters nor bootstrap servers set, the quorum is this node alone (Kafka
//!   refuses that); such a single voter needs no controller listener. See
//!   [`BrokerConfig::quorum_voters`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

use crate::server::socket_buffers::{SocketBuffers, buffer_size};
use crate::types::NodeId;

pub mod connection_limits;
mod consumer_groups;
pub mod dynamic_broker;
pub mod kafka_broker_configs;
pub mod kafka_config_docs;
mod producer_ids;
mod replication;
mod topology;

pub use producer_ids::ProducerIdExpirationConfig;
pub use replication::ReplicationConfig;
use topology::Topology;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid value for {key}: {value:?} ({reason})")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("bad command line: {0}")]
    Usage(String),
    /// Settings that are each valid but do not fit together (Kafka's `validateValues`).
    #[error("invalid configuration: {0}")]
    Inconsistent(String),
}

/// `process.roles`: what this process does. Kafka 4 requires the key; our default is both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessRoles {
    pub broker: bool,
    pub controller: bool,
}

impl ProcessRoles {
    pub const COMBINED: ProcessRoles = ProcessRoles {
        broker: true,
        controller: true,
    };
}

/// A `host:port` pair (quorum voters, bootstrap servers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One listener: its name (upper case, as Kafka normalises it), host and port. An empty
/// host in `listeners` means every interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn host_port(&self) -> HostPort {
        HostPort {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.name, self.host_port())
    }
}

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Every key the operator set (file, env, flags), for DescribeConfigs sources.
    pub explicit: BTreeMap<String, String>,
    pub node_id: NodeId,
    /// `process.roles`
    pub roles: ProcessRoles,
    /// The node's main listener: the inter-broker listener when this node is a broker
    /// (registered first; peers replicate through it), else (controller only) the
    /// controller listener, the one endpoint it has. A broker serves clients on every
    /// listener of [`BrokerConfig::broker_listeners`], not only this one.
    pub listener: Endpoint,
    /// How `listener` is advertised (its entry of `advertised_listeners`).
    pub advertised: Endpoint,
    /// `listeners`, in the order given; names are distinct.
    pub listeners: Vec<Endpoint>,
    /// One entry per listener, in the same order: its `advertised.listeners` entry, or the
    /// listener itself. A listener bound to every interface (empty host, `0.0.0.0`, `::`)
    /// with no advertised entry is advertised under this machine's host name
    /// (`/proc/sys/kernel/hostname`, else `localhost`), as Kafka advertises the canonical
    /// host name; Kafka refuses `0.0.0.0` there, we allow it for the embedded use.
    pub advertised_listeners: Vec<Endpoint>,
    /// `controller.listener.names` (upper case); empty for the embedded single voter.
    pub controller_listener_names: Vec<String>,
    /// The listener named first in `controller.listener.names`, if this node has it
    /// (a broker-only node does not: it only connects to controllers).
    pub controller_listener: Option<Endpoint>,
    /// `listener.security.protocol.map` as in effect: Kafka's default map, plus
    /// `<controller listener>:PLAINTEXT` for each controller listener name when the key is
    /// not set (Kafka's KRaft rule). Only PLAINTEXT listeners are accepted.
    pub listener_security_protocol_map: BTreeMap<String, String>,
    /// `inter.broker.listener.name` (default PLAINTEXT, from `security.inter.broker.protocol`).
    pub inter_broker_listener_name: String,
    /// `controller.quorum.voters`. Empty (with `quorum_bootstrap_servers` empty too) means
    /// the single voter is this node and has no address: the embedded default, where no
    /// controller listener is needed. A node with the controller role is among the voters.
    pub quorum_voters: BTreeMap<NodeId, HostPort>,
    /// `controller.quorum.bootstrap.servers`
    pub quorum_bootstrap_servers: Vec<HostPort>,
    /// `broker.session.timeout.ms`
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`
    pub broker_heartbeat_interval_ms: u64,
    /// `controller.quorum.election.timeout.ms`
    pub quorum_election_timeout_ms: u64,
    /// `controller.quorum.fetch.timeout.ms`
    pub quorum_fetch_timeout_ms: u64,
    /// `controller.quorum.request.timeout.ms`
    pub quorum_request_timeout_ms: u64,
    /// `metadata.log.max.snapshot.interval.ms`
    pub metadata_log_max_snapshot_interval_ms: u64,
    /// `metadata.log.max.record.bytes.between.snapshots`
    pub metadata_log_max_record_bytes_between_snapshots: u64,
    /// `broker.rack`
    pub broker_rack: Option<String>,
    /// `CLUSTER_ID` from the environment (already checked to be a Kafka UUID string).
    pub cluster_id_env: Option<String>,
    pub log_dirs: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    /// `auto.leader.rebalance.enable`: the active controller moves leadership back to
    /// preferred replicas.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`
    pub leader_imbalance_check_interval_seconds: u64,
    /// `leader.imbalance.per.broker.percentage`: a broker's share of partitions preferring
    /// it that it does not lead, above which they are given back to it.
    pub leader_imbalance_per_broker_percentage: u32,
    /// `socket.request.max.bytes`: a larger frame closes the connection.
    pub frame_bytes_max: usize,
    /// `socket.send.buffer.bytes` / `socket.receive.buffer.bytes`: SO_SNDBUF / SO_RCVBUF
    /// of accepted client sockets (`None`: -1, the kernel's default).
    pub socket_buffers: SocketBuffers,
    /// `socket.listen.backlog.size`: connections the kernel holds for a listener before
    /// they are accepted.
    pub listen_backlog: u32,
    /// `queued.max.request.bytes`: request bytes in memory broker-wide; a connection
    /// whose next frame does not fit stops reading until it does. `None` (a value <= 0,
    /// as in Kafka) is unbounded. Kafka's default is unbounded; ours is 128 MiB so a
    /// burst of large produces cannot take the broker's memory with it.
    pub queued_request_bytes_max: Option<u32>,
    /// The connection limits as configured statically (`max.connections`: accepted
    /// sockets beyond it wait for a free slot; per IP, per listener, creation rates); the
    /// server applies the dynamic layers over them as the image changes.
    pub connection_limits: connection_limits::ConnectionLimits,
    /// `log.filter`: the log filter, `RUST_LOG` syntax; the `RUST_LOG` environment
    /// variable, when set, wins (an operator's one-off override needs no config edit).
    pub log_filter: String,
    /// `connections.max.idle.ms`: idle connections are closed after this; None (a negative
    /// value) never, as Kafka's `Selector` makes no idle expiry then.
    pub connection_idle_ms_max: Option<u64>,
    /// `quota.window.num` and `quota.window.size.seconds`: client quota rates are measured
    /// over this many samples of this many seconds.
    pub quota_window_samples: usize,
    pub quota_window_seconds: u64,
    /// `controller.quota.window.num` and `controller.quota.window.size.seconds`: the
    /// controller mutation quota's bucket holds this many windows of its rate (KIP-599).
    pub controller_quota_window_samples: usize,
    pub controller_quota_window_seconds: u64,
    /// Partitions one CreateTopics/CreatePartitions call may create (guards memory and disk).
    pub partitions_per_request_max: i32,
    pub retention_check_interval_ms: u64,
    /// `log.flush.scheduler.interval.ms`-like tick for `flush.ms` (only when it is finite).
    pub flush_check_interval_ms: u64,
    /// `fetch.max.bytes`: cap on one fetch response, whatever the client asks.
    pub fetch_bytes_max: usize,
    /// `max.incremental.fetch.session.cache.slots`: incremental fetch sessions kept at once
    /// (0: none; every fetch is then a full one).
    pub fetch_session_slots_max: usize,
    /// `replica.*`: follower fetching, ISR lag, high-watermark checkpoints.
    pub replication: ReplicationConfig,
    /// `producer.id.expiration.*`: when partitions forget idle producers.
    pub producer_id_expiration: ProducerIdExpirationConfig,
    /// `offsets.topic.num.partitions`
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.replication.factor`. Kafka's default is 3, and ours is 3 too when
    /// `controller.quorum.voters` lists more than one voter; a node with no voters or one
    /// (the embedded single node, `cargo run` with no config) defaults to 1, since a
    /// replication factor above the broker count leaves FindCoordinator answering
    /// COORDINATOR_NOT_AVAILABLE forever. Set explicitly, it always wins.
    pub offsets_topic_replication_factor: i16,
    /// `offsets.topic.segment.bytes`: the `segment.bytes` `__consumer_offsets` is created
    /// with. Small segments let its cleaner run sooner (tests, small clusters).
    pub offsets_topic_segment_bytes: i32,
    /// `offsets.commit.timeout.ms`: how long an offset commit or group metadata write
    /// waits for the offsets partition's in-sync replicas before it fails.
    pub offsets_commit_timeout_ms: u64,
    /// `offsets.retention.minutes` in ms (Kafka default 7 days).
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: u64,
    /// `transaction.*` / `transactional.id.*`: the transaction coordinator.
    pub transactions: TransactionConfig,
    /// `group.min.session.timeout.ms`
    pub group_session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`
    pub group_session_timeout_ms_max: i32,
    /// `group.initial.rebalance.delay.ms`
    pub group_initial_rebalance_delay_ms: i32,
    /// `group.max.size`
    pub group_size_max: i32,
    /// `group.consumer.*`: KIP-848 consumer groups; `None` when
    /// `group.coordinator.rebalance.protocols` leaves `consumer` out.
    pub consumer_groups: Option<crate::group::consumer::ConsumerGroupConfig>,
    /// The same `group.consumer.*` settings whether the consumer protocol is on or off:
    /// groups' own configs (GROUP resources) are validated and described against them.
    pub consumer_group_settings: crate::group::consumer::ConsumerGroupConfig,
    /// `log.cleaner.backoff.ms`: how often compacted topics are checked for cleaning.
    pub cleaner_backoff_ms: u64,
    /// `num.recovery.threads.per.data.dir`: threads that open (and recover) logs at
    /// start-up and flush them at shutdown.
    pub recovery_threads_per_data_dir: usize,
    /// `log.cleaner.dedupe.buffer.size`: memory of the cleaner's offset map; a pass that
    /// fills it cleans part of the log and leaves the rest for the next pass.
    pub cleaner_dedupe_buffer_bytes: u64,
    /// `http.listener`: where `/metrics` is served ([`HTTP_LISTENER_DEFAULT`]); `None`
    /// when set to an empty value or `none`. Not a Kafka key: Kafka has no HTTP listener.
    pub http_listener: Option<HostPort>,
}

/// Loopback only unless configured: metrics name topics and groups, which an operator
/// may not want on every interface. 9644 is Redpanda's admin port, the one Kafka-like
/// brokers' scrape configs already know.
pub const HTTP_LISTENER_DEFAULT: &str = "127.0.0.1:9644";

/// The environment variable the official images read the cluster id from.
pub const CLUSTER_ID_ENV: &str = "CLUSTER_ID";

/// `log.filter` by default: info, but openraft narrates every vote and replication step
/// at info.
pub const LOG_FILTER_DEFAULT: &str = "info,openraft=warn";

/// Upper bound of `num.recovery.threads.per.data.dir` (each is an OS thread).
const RECOVERY_THREADS_MAX: usize = 256;

/// Keys whose value may be given in hours/minutes/ms form, resolved ms first as Kafka does.
const TIME_FAMILIES: [(&str, &str, &str, i64); 2] = [
    (
        "log.retention.ms",
        "log.retention.minutes",
        "log.retention.hours",
        168,
    ),
    ("log.roll.ms", "log.roll.minutes", "log.roll.hours", 168),
];

impl BrokerConfig {
    /// The listeners this node serves clients on: every listener that is not a controller
    /// listener, when it has the broker role (Kafka binds them all); none otherwise.
    pub fn broker_listeners(&self) -> impl Iterator<Item = &Endpoint> {
        let broker = self.roles.broker;
        self.listeners.iter().filter(move |endpoint| {
            broker && !self.controller_listener_names.contains(&endpoint.name)
        })
    }

    /// Builds the configuration from the process arguments and environment.
    pub fn from_args_and_env(
        args: impl IntoIterator<Item = String>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<BrokerConfig, ConfigError> {
        let mut explicit = BTreeMap::new();
        let mut overrides = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" | "-c" => {
                    let path = PathBuf::from(next_value(&mut args, &arg)?);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|source| ConfigError::File { path, source })?;
                    explicit.extend(parse_properties(&text));
                }
                "--override" | "-o" => overrides.push(next_value(&mut args, &arg)?),
                other => return Err(ConfigError::Usage(format!("unknown argument {other}"))),
            }
        }
        let mut cluster_id_env = None;
        for (name, value) in env {
            if name == CLUSTER_ID_ENV {
                cluster_id_env = Some(value);
            } else if let Some(key) = env_key(&name) {
                explicit.insert(key, value);
            }
        }
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::Usage(format!("--override wants key=value: {item}")))?;
            explicit.insert(key.trim().to_string(), value.trim().to_string());
        }
        BrokerConfig::from_sources(explicit, cluster_id_env)
    }

    /// A config from `key=value` pairs, for tests.
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> BrokerConfig {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BrokerConfig::from_map(map).unwrap()
    }

    /// The configuration from explicit keys alone (no `CLUSTER_ID`).
    pub fn from_map(explicit: BTreeMap<String, String>) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_sources(explicit, None)
    }

    /// The configuration from explicit keys and the `CLUSTER_ID` environment variable
    /// (an empty one counts as unset).
    pub fn from_sources(
        explicit: BTreeMap<String, String>,
        cluster_id_env: Option<String>,
    ) -> Result<BrokerConfig, ConfigError> {
        let cluster_id_env = cluster_id_env
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty());
        if let Some(id) = &cluster_id_env {
            check_cluster_id(id).map_err(|reason| ConfigError::Invalid {
                key: CLUSTER_ID_ENV.into(),
                value: id.clone(),
                reason,
            })?;
        }
        let get = |key: &str| explicit.get(key).map(String::as_str);
        let node_id = parse(&explicit, "node.id", 1)?;
        let topology = Topology::parse(&explicit, node_id)?;
        let offsets_replication_factor = offsets_replication_factor_default(&topology);
        let config = BrokerConfig {
            node_id,
            roles: topology.roles,
            listener: topology.listener,
            advertised: topology.advertised,
            listeners: topology.listeners,
            advertised_listeners: topology.advertised_listeners,
            controller_listener_names: topology.controller_listener_names,
            controller_listener: topology.controller_listener,
            listener_security_protocol_map: topology.protocol_map,
            inter_broker_listener_name: topology.inter_broker_listener_name,
            quorum_voters: topology.quorum_voters,
            quorum_bootstrap_servers: topology.quorum_bootstrap_servers,
            broker_session_timeout_ms: parse(&explicit, "broker.session.timeout.ms", 9_000)?,
            broker_heartbeat_interval_ms: parse(&explicit, "broker.heartbeat.interval.ms", 2_000)?,
            quorum_election_timeout_ms: parse(
                &explicit,
                "controller.quorum.election.timeout.ms",
                1_000,
            )?,
            quorum_fetch_timeout_ms: parse(&explicit, "controller.quorum.fetch.timeout.ms", 2_000)?,
            quorum_request_timeout_ms: parse(
                &explicit,
                "controller.quorum.request.timeout.ms",
                2_000,
            )?,
            metadata_log_max_snapshot_interval_ms: parse(
                &explicit,
                "metadata.log.max.snapshot.interval.ms",
                3_600_000,
            )?,
            metadata_log_max_record_bytes_between_snapshots: parse(
                &explicit,
                "metadata.log.max.record.bytes.between.snapshots",
                20_971_520,
            )?,
            broker_rack: get("broker.rack")
                .map(str::trim)
                .filter(|rack| !rack.is_empty())
                .map(String::from),
            cluster_id_env,
            log_dirs: PathBuf::from(
                get("log.dirs")
                    .or(get("log.dir"))
                    .unwrap_or("./data")
                    .split(',')
                    .next()
                    .unwrap_or(""),
            ),
            num_partitions: parse(&explicit, "num.partitions", 1)?,
            default_replication_factor: parse(&explicit, "default.replication.factor", 1)?,
            auto_create_topics_enable: parse(&explicit, "auto.create.topics.enable", true)?,
            delete_topic_enable: parse(&explicit, "delete.topic.enable", true)?,
            auto_leader_rebalance_enable: parse(&explicit, "auto.leader.rebalance.enable", true)?,
            leader_imbalance_check_interval_seconds: parse(
                &explicit,
                "leader.imbalance.check.interval.seconds",
                300,
            )?,
            leader_imbalance_per_broker_percentage: parse(
                &explicit,
                "leader.imbalance.per.broker.percentage",
                10,
            )?,
            frame_bytes_max: parse(&explicit, "socket.request.max.bytes", 104_857_600)?,
            socket_buffers: SocketBuffers {
                send_bytes: socket_buffer(&explicit, "socket.send.buffer.bytes", 102_400)?,
                receive_bytes: socket_buffer(&explicit, "socket.receive.buffer.bytes", 102_400)?,
            },
            listen_backlog: listen_backlog(&explicit)?,
            queued_request_bytes_max: queued_request_bytes(&explicit)?,
            connection_limits: connection_limits::ConnectionLimits::from_configs(&explicit)
                .map_err(ConfigError::Inconsistent)?,
            log_filter: get("log.filter").unwrap_or(LOG_FILTER_DEFAULT).to_string(),
            connection_idle_ms_max: u64::try_from(parse::<i64>(
                &explicit,
                "connections.max.idle.ms",
                600_000,
            )?)
            .ok(),
            quota_window_samples: parse(&explicit, "quota.window.num", 11)?,
            quota_window_seconds: parse(&explicit, "quota.window.size.seconds", 1)?,
            controller_quota_window_samples: parse(&explicit, "controller.quota.window.num", 11)?,
            controller_quota_window_seconds: parse(
                &explicit,
                "controller.quota.window.size.seconds",
                1,
            )?,
            partitions_per_request_max: parse(&explicit, "partitions.per.request.max", 10_000)?,
            retention_check_interval_ms: parse(
                &explicit,
                "log.retention.check.interval.ms",
                300_000,
            )?,
            flush_check_interval_ms: parse(&explicit, "log.flush.scheduler.interval.ms", 1_000)?,
            fetch_bytes_max: parse(&explicit, "fetch.max.bytes", 57_671_680)?,
            fetch_session_slots_max: parse(
                &explicit,
                "max.incremental.fetch.session.cache.slots",
                1_000,
            )?,
            replication: ReplicationConfig::parse(&explicit)?,
            producer_id_expiration: ProducerIdExpirationConfig::parse(&explicit)?,
            offsets_topic_partitions: parse(&explicit, "offsets.topic.num.partitions", 50)?,
            offsets_topic_replication_factor: parse(
                &explicit,
                "offsets.topic.replication.factor",
                offsets_replication_factor,
            )?,
            offsets_topic_segment_bytes: parse(
                &explicit,
                "offsets.topic.segment.bytes",
                104_857_600,
            )?,
            offsets_commit_timeout_ms: parse(&explicit, "offsets.commit.timeout.ms", 5_000)?,
            offsets_retention_ms: parse::<i64>(&explicit, "offsets.retention.minutes", 10_080)?
                .saturating_mul(60_000),
            offsets_retention_check_interval_ms: parse(
                &explicit,
                "offsets.retention.check.interval.ms",
                600_000,
            )?,
            transactions: TransactionConfig::parse(&explicit, offsets_replication_factor)?,
            group_session_timeout_ms_min: parse(&explicit, "group.min.session.timeout.ms", 6_000)?,
            group_session_timeout_ms_max: parse(
                &explicit,
                "group.max.session.timeout.ms",
                1_800_000,
            )?,
            group_initial_rebalance_delay_ms: parse(
                &explicit,
                "group.initial.rebalance.delay.ms",
                3_000,
            )?,
            group_size_max: parse(&explicit, "group.max.size", i32::MAX)?,
            consumer_groups: consumer_groups::parse_consumer_groups(&explicit)?,
            consumer_group_settings: consumer_groups::parse_consumer_group_settings(&explicit)?,
            cleaner_backoff_ms: parse(&explicit, "log.cleaner.backoff.ms", 15_000)?,
            // Kafka 4.0 raised the default from 1 to 2 (KIP-1030).
            recovery_threads_per_data_dir: parse(
                &explicit,
                "num.recovery.threads.per.data.dir",
                2,
            )?,
            cleaner_dedupe_buffer_bytes: parse(
                &explicit,
                "log.cleaner.dedupe.buffer.size",
                134_217_728,
            )?,
            http_listener: http_listener(&explicit)?,
            explicit,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks how the limits relate, so a bad combination fails at start-up, not mid-request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
            key: key.into(),
            value,
            reason: reason.into(),
        };
        // Kafka: quota.window.num atLeast(1), quota.window.size.seconds atLeast(1); a rate
        // needs two samples here to have a window to measure over.
        if self.quota_window_samples < 2 || self.quota_window_samples > 1000 {
            let value = self.quota_window_samples.to_string();
            return Err(invalid("quota.window.num", value, "must be 2..=1000"));
        }
        if self.quota_window_seconds < 1 || self.quota_window_seconds > 3600 {
            let value = self.quota_window_seconds.to_string();
            return Err(invalid(
                "quota.window.size.seconds",
                value,
                "must be 1..=3600",
            ));
        }
        // Kafka: atLeast(1) both; the upper bounds keep the bucket's arithmetic sane.
        if self.controller_quota_window_samples < 1 || self.controller_quota_window_samples > 1000 {
            let value = self.controller_quota_window_samples.to_string();
            return Err(invalid(
                "controller.quota.window.num",
                value,
                "must be 1..=1000",
            ));
        }
        if self.controller_quota_window_seconds < 1 || self.controller_quota_window_seconds > 3600 {
            let value = self.controller_quota_window_seconds.to_string();
            return Err(invalid(
                "controller.quota.window.size.seconds",
                value,
                "must be 1..=3600",
            ));
        }
        // Kafka: an Int, atLeast(0).
        if i32::try_from(self.fetch_session_slots_max).is_err() {
            let value = self.fetch_session_slots_max.to_string();
            let key = "max.incremental.fetch.session.cache.slots";
            return Err(invalid(key, value, "must be 0..=2147483647"));
        }
        if self.num_partitions < 1 {
            return Err(invalid(
                "num.partitions",
                self.num_partitions.to_string(),
                "must be >= 1",
            ));
        }
        if self.default_replication_factor < 1 {
            let value = self.default_replication_factor.to_string();
            return Err(invalid("default.replication.factor", value, "must be >= 1"));
        }
        if self.frame_bytes_max < 64 || self.frame_bytes_max > i32::MAX as usize {
            let value = self.frame_bytes_max.to_string();
            return Err(invalid(
                "socket.request.max.bytes",
                value,
                "must be 64..=2^31-1",
            ));
        }
        if self.offsets_topic_partitions < 1 {
            let value = self.offsets_topic_partitions.to_string();
            return Err(invalid(
                "offsets.topic.num.partitions",
                value,
                "must be >= 1",
            ));
        }
        if self.offsets_topic_segment_bytes < 1 {
            let value = self.offsets_topic_segment_bytes.to_string();
            return Err(invalid(
                "offsets.topic.segment.bytes",
                value,
                "must be >= 1",
            ));
        }
        if self.offsets_topic_replication_factor < 1 {
            let value = self.offsets_topic_replication_factor.to_string();
            return Err(invalid(
                "offsets.topic.replication.factor",
                value,
                "must be >= 1",
            ));
        }
        if self.offsets_commit_timeout_ms == 0 {
            return Err(invalid(
                "offsets.commit.timeout.ms",
                "0".into(),
                "must be >= 1",
            ));
        }
        // Kafka: `atLeast(1)`.
        if self.leader_imbalance_check_interval_seconds == 0 {
            let key = "leader.imbalance.check.interval.seconds";
            return Err(invalid(key, "0".into(), "must be >= 1"));
        }
        // Kafka's rule (one cleaner thread here): at least 1 MiB per cleaner thread.
        if self.cleaner_dedupe_buffer_bytes <= 1024 * 1024 {
            let value = self.cleaner_dedupe_buffer_bytes.to_string();
            let reason = "must be more than 1 MiB";
            return Err(invalid("log.cleaner.dedupe.buffer.size", value, reason));
        }
        if self.log_dirs.as_os_str().is_empty() {
            return Err(invalid("log.dirs", String::new(), "must name a directory"));
        }
        if !(1..=RECOVERY_THREADS_MAX).contains(&self.recovery_threads_per_data_dir) {
            let value = self.recovery_threads_per_data_dir.to_string();
            let key = "num.recovery.threads.per.data.dir";
            return Err(invalid(key, value, "must be 1..=256"));
        }
        self.validate_quorum_timing()
    }

    /// Timers the quorum and broker heartbeats run on: zero would spin.
    fn validate_quorum_timing(&self) -> Result<(), ConfigError> {
        let timers = [
            ("broker.session.timeout.ms", self.broker_session_timeout_ms),
            (
                "broker.heartbeat.interval.ms",
                self.broker_heartbeat_interval_ms,
            ),
            (
                "controller.quorum.election.timeout.ms",
                self.quorum_election_timeout_ms,
            ),
            (
                "controller.quorum.fetch.timeout.ms",
                self.quorum_fetch_timeout_ms,
            ),
            (
                "controller.quorum.request.timeout.ms",
                self.quorum_request_timeout_ms,
            ),
            (
                "metadata.log.max.snapshot.interval.ms",
                self.metadata_log_max_snapshot_interval_ms,
            ),
        ];
        for (key, value) in timers {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    value: "0".into(),
                    reason: "must be >= 1".into(),
                });
            }
        }
        Ok(())
    }

    /// The broker-level default of a `log.*` key in milliseconds, honouring the
    /// hours/minutes/ms families as Kafka resolves them.
    pub fn time_ms(&self, ms_key: &str) -> Option<i64> {
        let (_, minutes_key, hours_key, hours_default) =
            TIME_FAMILIES.iter().find(|family| family.0 == ms_key)?;
        let get = |key: &str| {
            self.explicit
                .get(key)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        Some(
            get(ms_key)
                .or_else(|| get(minutes_key).map(|m| m * 60_000))
                .or_else(|| get(hours_key).map(|h| h * 3_600_000))
                .unwrap_or(hours_default * 3_600_000),
        )
    }
}

/// The transaction coordinator's settings, with Kafka's names and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionConfig {
    /// `transaction.state.log.num.partitions`
    pub state_log_partitions: i32,
    /// `transaction.state.log.replication.factor`: Kafka's default 3, capped like
    /// `offsets.topic.replication.factor` (1 on a node that is its own quorum).
    pub state_log_replication_factor: i16,
    /// `transaction.state.log.min.isr` (2), never above the replication factor unless set.
    pub state_log_min_isr: i32,
    /// `transaction.state.log.segment.bytes`
    pub state_log_segment_bytes: i32,
    /// `transaction.max.timeout.ms`: the largest `transaction.timeout.ms` a producer may ask.
    pub max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`
    pub abort_timed_out_interval_ms: u64,
    /// `transactional.id.expiration.ms`
    pub id_expiration_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`
    pub remove_expired_interval_ms: u64,
    /// How long a `__transaction_state` write waits for its in-sync replicas (Kafka uses
    /// the request timeout; `transaction.state.log.commit.timeout.ms` is our name).
    pub state_log_commit_timeout_ms: u64,
    /// `transaction.partition.verification.enable` (KIP-890): leaders verify a partition is
    /// in the producer's transaction before its first transactional append. Static here
    /// (dynamic in Kafka).
    pub partition_verification_enable: bool,
}

impl TransactionConfig {
    fn parse(
        explicit: &BTreeMap<String, String>,
        replication_default: i16,
    ) -> Result<TransactionConfig, ConfigError> {
        let replication_factor: i16 = parse(
            explicit,
            "transaction.state.log.replication.factor",
            replication_default,
        )?;
        let min_isr_default = 2.min(i32::from(replication_factor));
        let config = TransactionConfig {
            state_log_partitions: parse(explicit, "transaction.state.log.num.partitions", 50)?,
            state_log_replication_factor: replication_factor,
            state_log_min_isr: parse(explicit, "transaction.state.log.min.isr", min_isr_default)?,
            state_log_segment_bytes: parse(
                explicit,
                "transaction.state.log.segment.bytes",
                104_857_600,
            )?,
            max_timeout_ms: parse(explicit, "transaction.max.timeout.ms", 900_000)?,
            abort_timed_out_interval_ms: parse(
                explicit,
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                10_000,
            )?,
            id_expiration_ms: parse(explicit, "transactional.id.expiration.ms", 604_800_000)?,
            remove_expired_interval_ms: parse(
                explicit,
                "transaction.remove.expired.transaction.cleanup.interval.ms",
                3_600_000,
            )?,
            state_log_commit_timeout_ms: parse(
                explicit,
                "transaction.state.log.commit.timeout.ms",
                5_000,
            )?,
            partition_verification_enable: parse(
                explicit,
                "transaction.partition.verification.enable",
                true,
            )?,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            (
                "transaction.state.log.num.partitions",
                self.state_log_partitions > 0,
            ),
            (
                "transaction.state.log.replication.factor",
                self.state_log_replication_factor > 0,
            ),
            ("transaction.state.log.min.isr", self.state_log_min_isr > 0),
            (
                "transaction.state.log.segment.bytes",
                self.state_log_segment_bytes > 0,
            ),
            ("transaction.max.timeout.ms", self.max_timeout_ms > 0),
            (
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                self.abort_timed_out_interval_ms > 0,
            ),
            ("transactional.id.expiration.ms", self.id_expiration_ms > 0),
            (
                "transaction.remove.expired.transaction.cleanup.interval.ms",
                self.remove_expired_interval_ms > 0,
            ),
            (
                "transaction.state.log.commit.timeout.ms",
                self.state_log_commit_timeout_ms > 0,
            ),
        ];
        match positive.iter().find(|(_, ok)| !ok) {
            Some((key, _)) => Err(ConfigError::Invalid {
                key: key.to_string(),
                value: "0 or less".into(),
                reason: "must be positive".into(),
            }),
            None => Ok(()),
        }
    }
}

/// Kafka's `offsets.topic.replication.factor` default (3) wherever a quorum of several
/// voters says this is a cluster; 1 for a node that is its own quorum, so the embedded
/// single node serves consumer groups with no configuration at all.
fn offsets_replication_factor_default(topology: &Topology) -> i16 {
    if topology.quorum_voters.len() > 1 {
        3
    } else {
        1
    }
}

/// `http.listener`: `host:port`, optionally written `http://host:port` as listener URLs
/// are; empty or `none` turns the listener off.
fn http_listener(map: &BTreeMap<String, String>) -> Result<Option<HostPort>, ConfigError> {
    let value = map
        .get("http.listener")
        .map_or(HTTP_LISTENER_DEFAULT, |v| v.trim());
    if value.is_empty() || value.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let address = value.strip_prefix("http://").unwrap_or(value);
    match topology::parse_host_port(address) {
        Some(host_port) => Ok(Some(host_port)),
        None => Err(ConfigError::Invalid {
            key: "http.listener".into(),
            value: value.into(),
            reason: "want host:port, or empty or none to disable".into(),
        }),
    }
}

fn next_value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, ConfigError> {
    args.next()
        .ok_or_else(|| ConfigError::Usage(format!("{flag} needs a value")))
}

/// A socket buffer size config (`-1`: the kernel's default, `None`).
fn socket_buffer(
    map: &BTreeMap<String, String>,
    key: &str,
    default: i32,
) -> Result<Option<usize>, ConfigError> {
    let value: i32 = parse(map, key, default)?;
    buffer_size(value).map_err(|reason| ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    })
}

/// `socket.listen.backlog.size`: at least 1, as Kafka's validator asks.
fn listen_backlog(map: &BTreeMap<String, String>) -> Result<u32, ConfigError> {
    const KEY: &str = "socket.listen.backlog.size";
    let value: i32 = parse(map, KEY, 50)?;
    u32::try_from(value)
        .ok()
        .filter(|&backlog| backlog >= 1)
        .ok_or_else(|| ConfigError::Invalid {
            key: KEY.into(),
            value: value.to_string(),
            reason: "must be at least 1".into(),
        })
}

/// `queued.max.request.bytes`; <= 0 means unbounded, as in Kafka.
fn queued_request_bytes(map: &BTreeMap<String, String>) -> Result<Option<u32>, ConfigError> {
    const KEY: &str = "queued.max.request.bytes";
    let bytes: i64 = parse(map, KEY, 134_217_728)?;
    if bytes <= 0 {
        return Ok(None);
    }
    // The budget counts bytes with a u32 semaphore; beyond 4 GiB, set it unbounded.
    u32::try_from(bytes)
        .map(Some)
        .map_err(|_| ConfigError::Invalid {
            key: KEY.into(),
            value: bytes.to_string(),
            reason: "must be <= 4294967295 (or <= 0 for unbounded)".into(),
        })
}

fn parse<T: std::str::FromStr>(
    map: &BTreeMap<String, String>,
    key: &str,
    default: T,
) -> Result<T, ConfigError> {
    match map.get(key) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|_| ConfigError::Invalid {
            key: key.into(),
            value: value.clone(),
            reason: "not a valid value of its type".into(),
        }),
    }
}

/// `KAFKA_LOG_RETENTION_MS` -> `log.retention.ms`; `KAFKA_` prefixed names only.
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix("KAFKA_")?;
    if rest.is_empty() || rest.starts_with("OPTS") || rest.starts_with("HEAP") {
        return None;
    }
    Some(
        rest.to_lowercase()
            .replace("___", "-")
            .replace("__", "\0")
            .replace('_', ".")
            .replace('\0', "_"),
    )
}

/// Java `.properties` subset: `key=value` or `key: value`, `#`/`!` comments.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('!'))
        .filter_map(|line| {
            let split = line.find(['=', ':'])?;
            Some((
                line[..split].trim().to_string(),
                line[split + 1..].trim().to_string(),
            ))
        })
        .collect()
}

/// Checks a cluster id as Kafka writes one: a 16-byte UUID in URL-safe base64 without
/// padding, 22 characters (`gracchus random-uuid`, `kafka-storage random-uuid`).
pub fn check_cluster_id(id: &str) -> Result<(), String> {
    const LENGTH: usize = 22;
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if id.chars().count() != LENGTH {
        return Err(format!(
            "a cluster id is {LENGTH} characters of URL-safe base64 (a 16-byte UUID, as \
             `gracchus random-uuid` prints), not {}",
            id.chars().count()
        ));
    }
    if let Some(bad) = id.chars().find(|c| !valid(*c)) {
        return Err(format!(
            "{bad:?} is not a URL-safe base64 character (A-Z a-z 0-9 - _)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn http_listener_defaults_to_loopback_and_can_be_turned_off() {
        let config = |value: Option<&str>| {
            let mut map = BTreeMap::new();
            if let Some(value) = value {
                map.insert("http.listener".to_string(), value.to_string());
            }
            BrokerConfig::from_map(map).map(|c| c.http_listener.map(|hp| hp.to_string()))
        };
        assert_eq!(config(None).unwrap().as_deref(), Some("127.0.0.1:9644"));
        assert_eq!(
            config(Some("0.0.0.0:9100")).unwrap().as_deref(),
            Some("0.0.0.0:9100")
        );
        assert_eq!(
            config(Some("http://[::1]:80")).unwrap().as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(config(Some("")).unwrap(), None);
        assert_eq!(config(Some("NONE")).unwrap(), None);
        assert!(matches!(
            config(Some("9644")),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            config(Some("host:99999")),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn socket_buffer_sizes_take_minus_one_for_the_kernels_and_refuse_zero() {
        let config = |send: &str, receive: &str| {
            let map = BTreeMap::from([
                ("socket.send.buffer.bytes".to_string(), send.to_string()),
                (
                    "socket.receive.buffer.bytes".to_string(),
                    receive.to_string(),
                ),
            ]);
            BrokerConfig::from_map(map).map(|c| c.socket_buffers)
        };
        let buffers = config("-1", "65536").unwrap();
        assert_eq!(
            (buffers.send_bytes, buffers.receive_bytes),
            (None, Some(65_536))
        );
        for (send, receive) in [("0", "-1"), ("-1", "-2"), ("lots", "-1")] {
            assert!(matches!(
                config(send, receive),
                Err(ConfigError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn a_negative_idle_time_means_connections_never_idle_out() {
        let idle = |value: &str| {
            let map = BTreeMap::from([("connections.max.idle.ms".to_string(), value.to_string())]);
            BrokerConfig::from_map(map).map(|c| c.connection_idle_ms_max)
        };
        assert_eq!(idle("-1").unwrap(), None);
        assert_eq!(idle("-600000").unwrap(), None);
        assert_eq!(idle("0").unwrap(), Some(0));
        assert_eq!(idle("1500").unwrap(), Some(1500));
        let default = BrokerConfig::from_map(BTreeMap::new()).unwrap();
        assert_eq!(default.connection_idle_ms_max, Some(600_000));
        assert!(matches!(idle("never"), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn a_listen_backlog_below_one_is_refused() {
        let backlog = |value: &str| {
            let map = BTreeMap::from([("socket.listen.backlog.size".to_string(), value.into())]);
            BrokerConfig::from_map(map).map(|c| c.listen_backlog)
        };
        assert_eq!(backlog("1").unwrap(), 1);
        assert_eq!(backlog("2048").unwrap(), 2048);
        for refused in ["0", "-1", "many"] {
            assert!(matches!(backlog(refused), Err(ConfigError::Invalid { .. })));
        }
    }

    #[test]
    fn defaults_are_kafkas() {
        let config = BrokerConfig::from_args_and_env(vec![], vec![]).unwrap();
        assert_eq!(config.listener.port, 9092);
        assert_eq!(config.listener.host, "127.0.0.1");
        assert_eq!(config.log_dirs, PathBuf::from("./data"));
        assert_eq!(config.num_partitions, 1);
        assert!(config.auto_create_topics_enable);
        assert_eq!(config.frame_bytes_max, 104_857_600);
        let kafkas = Some(102_400);
        assert_eq!(
            config.socket_buffers,
            SocketBuffers {
                send_bytes: kafkas,
                receive_bytes: kafkas
            }
        );
        assert_eq!(config.listen_backlog, 50);
        assert_eq!(config.replication.socket_receive_bytes, Some(65_536));
        assert_eq!(config.time_ms("log.retention.ms"), Some(604_800_000));
        assert_eq!(config.recovery_threads_per_data_dir, 2);
        assert_eq!(config.cleaner_dedupe_buffer_bytes, 134_217_728);
    }

    #[test]
    fn leader_rebalance_settings_have_kafkas_names_and_defaults() {
        let config = BrokerConfig::from_args_and_env(vec![], vec![]).unwrap();
        assert!(config.auto_leader_rebalance_enable);
        assert_eq!(config.leader_imbalance_check_interval_seconds, 300);
        assert_eq!(config.leader_imbalance_per_broker_percentage, 10);
        let with = |pairs: &[&str]| {
            let mut list = Vec::new();
            for pair in pairs {
                list.extend(["-o".to_string(), pair.to_string()]);
            }
            BrokerConfig::from_args_and_env(list, vec![])
        };
        let set = with(&[
            "auto.leader.rebalance.enable=false",
            "leader.imbalance.check.interval.seconds=5",
            "leader.imbalance.per.broker.percentage=0",
        ])
        .unwrap();
        assert!(!set.auto_leader_rebalance_enable);
        assert_eq!(set.leader_imbalance_check_interval_seconds, 5);
        assert_eq!(set.leader_imbalance_per_broker_percentage, 0);
        assert!(matches!(
            with(&["leader.imbalance.check.interval.seconds=0"]),
            Err(ConfigError::Invalid { key, .. }) if key == "leader.imbalance.check.interval.seconds"
        ));
        assert!(with(&["leader.imbalance.per.broker.percentage=-1"]).is_err());
    }

    #[test]
    fn the_dedupe_buffer_needs_more_than_one_mebibyte() {
        let config = |value: &str| {
            let arg = format!("log.cleaner.dedupe.buffer.size={value}");
            BrokerConfig::from_args_and_env(args(&["-o", &arg]), vec![])
        };
        assert!(matches!(
            config("1048576"),
            Err(ConfigError::Invalid { .. })
        ));
        assert_eq!(
            config("1048577").unwrap().cleaner_dedupe_buffer_bytes,
            1_048_577
        );
    }

    #[test]
    fn queued_request_bytes_is_bounded_by_default_and_unbounded_at_or_below_zero() {
        let with = |value: &str| {
            let flag = format!("queued.max.request.bytes={value}");
            BrokerConfig::from_args_and_env(args(&["--override", &flag]), vec![])
        };
        let config = BrokerConfig::from_args_and_env(vec![], vec![]).unwrap();
        assert_eq!(config.queued_request_bytes_max, Some(134_217_728));
        assert_eq!(with("-1").unwrap().queued_request_bytes_max, None);
        assert_eq!(with("0").unwrap().queued_request_bytes_max, None);
        assert_eq!(
            with("1048576").unwrap().queued_request_bytes_max,
            Some(1 << 20)
        );
        assert!(matches!(
            with("4294967296"),
            Err(ConfigError::Invalid { key, .. }) if key == "queued.max.request.bytes"
        ));
        assert!(with("lots").is_err());
    }

    #[test]
    fn later_sources_win() {
        let env = vec![
            ("KAFKA_NUM_PARTITIONS".to_string(), "3".to_string()),
            ("KAFKA_LOG_RETENTION_HOURS".to_string(), "1".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let config = BrokerConfig::from_args_and_env(
            args(&[
                "--override",
                "num.partitions=5",
                "-o",
                "listeners=PLAINTEXT://:19092",
            ]),
            env,
        )
        .unwrap();
        assert_eq!(config.num_partitions, 5);
        assert_eq!(config.listener.host, "");
        assert_eq!(config.listener.port, 19092);
        assert_eq!(config.time_ms("log.retention.ms"), Some(3_600_000));
        assert!(config.explicit.contains_key("log.retention.hours"));
    }

    #[test]
    fn env_names_map_like_kafka_images() {
        assert_eq!(env_key("KAFKA_LOG_DIRS").as_deref(), Some("log.dirs"));
        assert_eq!(env_key("KAFKA_A__B___C").as_deref(), Some("a_b-c"));
        assert_eq!(env_key("KAFKA_HEAP_OPTS"), None);
        assert_eq!(env_key("HOME"), None);
    }

    #[test]
    fn the_official_image_env_names_map_to_kafka_keys() {
        let names = [
            ("KAFKA_NODE_ID", "node.id"),
            ("KAFKA_PROCESS_ROLES", "process.roles"),
            ("KAFKA_LISTENERS", "listeners"),
            ("KAFKA_ADVERTISED_LISTENERS", "advertised.listeners"),
            ("KAFKA_CONTROLLER_QUORUM_VOTERS", "controller.quorum.voters"),
            (
                "KAFKA_CONTROLLER_LISTENER_NAMES",
                "controller.listener.names",
            ),
            (
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                "listener.security.protocol.map",
            ),
            (
                "KAFKA_INTER_BROKER_LISTENER_NAME",
                "inter.broker.listener.name",
            ),
            (
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "offsets.topic.replication.factor",
            ),
        ];
        for (env, key) in names {
            assert_eq!(env_key(env).as_deref(), Some(key), "{env}");
        }
        assert_eq!(
            env_key("CLUSTER_ID"),
            None,
            "not a KAFKA_ name: read on its own"
        );
    }

    #[test]
    fn a_node_configures_from_the_official_image_environment() {
        let env = [
            ("KAFKA_NODE_ID", "3"),
            ("KAFKA_PROCESS_ROLES", "broker,controller"),
            (
                "KAFKA_LISTENERS",
                "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093",
            ),
            ("KAFKA_ADVERTISED_LISTENERS", "PLAINTEXT://kafka-3:9092"),
            (
                "KAFKA_CONTROLLER_QUORUM_VOTERS",
                "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093",
            ),
            ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER"),
            (
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ),
            ("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT"),
            ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3"),
            ("CLUSTER_ID", "MkU3OEVBNTcwNTJENDM2Qk"),
        ];
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let config = BrokerConfig::from_args_and_env(vec![], env).unwrap();
        assert_eq!(config.node_id, 3);
        assert_eq!(config.roles, ProcessRoles::COMBINED);
        assert_eq!(config.listener.port, 29092);
        assert_eq!(config.advertised.host, "kafka-3");
        assert_eq!(config.advertised.port, 9092);
        assert_eq!(
            config.controller_listener.as_ref().map(|l| l.port),
            Some(29093)
        );
        assert_eq!(config.quorum_voters.len(), 3);
        assert_eq!(config.quorum_voters[&2].host, "kafka-2");
        assert_eq!(config.inter_broker_listener_name, "PLAINTEXT");
        assert_eq!(config.offsets_topic_replication_factor, 3);
        assert_eq!(
            config.cluster_id_env.as_deref(),
            Some("MkU3OEVBNTcwNTJENDM2Qk")
        );
        assert!(!config.explicit.contains_key("cluster.id"));
    }

    #[test]
    fn offsets_replication_defaults_to_kafkas_3_only_in_a_multi_voter_cluster() {
        let config = |voters: Option<&str>, explicit: Option<&str>| {
            let mut env = vec![
                ("KAFKA_PROCESS_ROLES", "broker,controller"),
                (
                    "KAFKA_LISTENERS",
                    "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093",
                ),
                ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER"),
                (
                    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                    "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                ),
            ];
            env.extend(voters.map(|v| ("KAFKA_CONTROLLER_QUORUM_VOTERS", v)));
            env.extend(explicit.map(|v| ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", v)));
            let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            BrokerConfig::from_args_and_env(vec![], env).unwrap()
        };
        let alone = BrokerConfig::from_args_and_env(vec![], std::iter::empty()).unwrap();
        assert_eq!(alone.offsets_topic_replication_factor, 1);
        assert_eq!(alone.offsets_commit_timeout_ms, 5_000);
        let three = "1@127.0.0.1:29093,2@127.0.0.1:29193,3@127.0.0.1:29293";
        assert_eq!(
            config(Some(three), None).offsets_topic_replication_factor,
            3
        );
        let one = "1@127.0.0.1:29093";
        assert_eq!(config(Some(one), None).offsets_topic_replication_factor, 1);
        assert_eq!(
            config(Some(three), Some("2")).offsets_topic_replication_factor,
            2
        );
    }

    #[test]
    fn cluster_ids_are_kafka_uuid_strings() {
        assert!(check_cluster_id("MkU3OEVBNTcwNTJENDM2Qk").is_ok());
        assert!(check_cluster_id("5L6g3nShT-eMCtK--X86sw").is_ok());
        let id = crate::types::kafka_uuid_string(&uuid::Uuid::new_v4());
        assert!(check_cluster_id(&id).is_ok());
        assert!(
            check_cluster_id("short")
                .unwrap_err()
                .contains("22 characters")
        );
        assert!(check_cluster_id("MkU3OEVBNTcwNTJENDM2Q=").is_err());
        assert!(check_cluster_id("MkU3OEVBNTcwNTJENDM2Q/").is_err());
        assert!(check_cluster_id("MkU3OEVBNTcwNTJENDM2Qkk").is_err());
        let with = |id: &str| {
            let env = vec![("CLUSTER_ID".to_string(), id.to_string())];
            BrokerConfig::from_args_and_env(vec![], env)
        };
        assert!(matches!(
            with("not-a-cluster-id"),
            Err(ConfigError::Invalid { key, .. }) if key == "CLUSTER_ID"
        ));
        assert_eq!(
            with("  ").unwrap().cluster_id_env,
            None,
            "empty counts as unset"
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        let err = BrokerConfig::from_args_and_env(args(&["-o", "num.partitions=zero"]), vec![]);
        assert!(matches!(err, Err(ConfigError::Invalid { .. })));
        let err = BrokerConfig::from_args_and_env(args(&["-o", "num.partitions=0"]), vec![]);
        assert!(matches!(err, Err(ConfigError::Invalid { .. })));
        let threads = ["-o", "num.recovery.threads.per.data.dir=0"];
        let err = BrokerConfig::from_args_and_env(args(&threads), vec![]);
        assert!(matches!(err, Err(ConfigError::Invalid { .. })));
        let err = BrokerConfig::from_args_and_env(args(&["--bogus"]), vec![]);
        assert!(matches!(err, Err(ConfigError::Usage(_))));
    }

    #[test]
    fn properties_files_parse() {
        let map = parse_properties("# c\nnode.id=2\nlog.dirs : /x\n\n! other\n");
        assert_eq!(map.get("node.id").map(String::as_str), Some("2"));
        assert_eq!(map.get("log.dirs").map(String::as_str), Some("/x"));
        assert_eq!(map.len(), 2);
    }
}
