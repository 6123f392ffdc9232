//! The cluster as a tool sees it: a bootstrap connection, the brokers Metadata names, and
//! one lazily opened connection per broker, so produce and fetch go to each partition's
//! leader as Kafka's clients route them.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::client::Connection;
use super::error::{CliError, check_code};

/// Kafka clients' `request.timeout.ms` default.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Metadata v12: topic ids, nullable names; the newest layout these tools read.
const METADATA_VERSION_MAX: i16 = 12;
const METADATA_VERSION_MIN: i16 = 4;

/// One partition as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub error_code: i16,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// One topic as Metadata describes it, partitions in index order.
#[derive(Clone, Debug)]
pub struct TopicInfo {
    pub name: String,
    pub error_code: i16,
    pub topic_id: uuid::Uuid,
    pub is_internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

pub struct Cluster {
    bootstrap: Connection,
    /// Broker id -> `host:port`, from the latest Metadata answer.
    brokers: BTreeMap<i32, String>,
    connections: BTreeMap<i32, Connection>,
    pub controller_id: i32,
    request_timeout: Duration,
}

impl Cluster {
    /// Connects to the first of the comma-separated `bootstrap_servers` that answers
    /// ApiVersions, as Kafka's clients try their bootstrap list.
    pub fn connect(
        bootstrap_servers: &str,
        request_timeout: Duration,
    ) -> Result<Cluster, CliError> {
        let mut last_error = CliError::Usage("--bootstrap-server is empty".into());
        for address in bootstrap_servers
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Connection::open(address, request_timeout, None) {
                Ok(bootstrap) => {
                    return Ok(Cluster {
                        bootstrap,
                        brokers: BTreeMap::new(),
                        connections: BTreeMap::new(),
                        controller_id: -1,
                        request_timeout,
                    });
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// The bootstrap connection, for requests any broker answers.
    pub fn any(&mut self) -> &mut Connection {
        &mut self.bootstrap
    }

    /// Metadata for `topics` (every topic when `None`). Learns the brokers' addresses on
    /// the way. `allow_auto_create` is the producer's `allow.auto.create.topics`: the
    /// broker may then create a missing topic if its own configuration allows it.
    pub fn metadata(
        &mut self,
        topics: Option<&[String]>,
        allow_auto_create: bool,
    ) -> Result<Vec<TopicInfo>, CliError> {
        let version =
            self.bootstrap
                .version(ApiKey::Metadata, METADATA_VERSION_MIN, METADATA_VERSION_MAX)?;
        let topics = topics.map(|names| {
            names
                .iter()
                .map(|name| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                })
                .collect()
        });
        let request = MetadataRequest::default()
            .with_topics(topics)
            .with_allow_auto_topic_creation(allow_auto_create);
        let response: MetadataResponse =
            self.bootstrap.call(ApiKey::Metadata, version, &request)?;
        check_code(response.error_code, None)?;
        self.learn_brokers(&response);
        Ok(topic_infos(response))
    }

    fn learn_brokers(&mut self, response: &MetadataResponse) {
        self.controller_id = response.controller_id.0;
        let brokers: BTreeMap<i32, String> = response
            .brokers
            .iter()
            .map(|broker| {
                let host = broker.host.to_string();
                let address = if host.contains(':') {
                    format!("[{host}]:{}", broker.port)
                } else {
                    format!("{host}:{}", broker.port)
                };
                (broker.node_id.0, address)
            })
            .collect();
        // A broker whose address changed gets a new connection.
        self.connections.retain(|id, connection| {
            brokers.get(id).map(String::as_str) == Some(connection.address())
        });
        self.brokers = brokers;
    }

    pub fn broker_ids(&self) -> Vec<i32> {
        self.brokers.keys().copied().collect()
    }

    /// The connection to broker `id`, opened on first use.
    pub fn node(&mut self, id: i32) -> Result<&mut Connection, CliError> {
        if !self.connections.contains_key(&id) {
            let address = self.brokers.get(&id).ok_or_else(|| {
                CliError::Failed(format!("broker {id} is not in the cluster metadata"))
            })?;
            let connection = Connection::open(address, self.request_timeout, None)?;
            self.connections.insert(id, connection);
        }
        Ok(self.connections.get_mut(&id).expect("inserted above"))
    }

    /// Forgets the connection to `id` (after an I/O error, so the next use reconnects).
    pub fn drop_node(&mut self, id: i32) {
        self.connections.remove(&id);
    }
}

fn topic_infos(response: MetadataResponse) -> Vec<TopicInfo> {
    response
        .topics
        .into_iter()
        .map(|topic| {
            let mut partitions: Vec<PartitionInfo> = topic
                .partitions
                .into_iter()
                .map(|partition| PartitionInfo {
                    partition: partition.partition_index,
                    error_code: partition.error_code,
                    leader: partition.leader_id.0,
                    replicas: ids(&partition.replica_nodes),
                    isr: ids(&partition.isr_nodes),
                })
                .collect();
            partitions.sort_by_key(|partition| partition.partition);
            TopicInfo {
                name: topic
                    .name
                    .map(|name| name.0.to_string())
                    .unwrap_or_default(),
                error_code: topic.error_code,
                topic_id: topic.topic_id,
                is_internal: topic.is_internal,
                partitions,
            }
        })
        .collect()
}

pub fn ids(brokers: &[BrokerId]) -> Vec<i32> {
    brokers.iter().map(|id| id.0).collect()
}
