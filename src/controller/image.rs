//! The metadata image: what the whole cluster agrees on, rebuilt by replaying commands.
//!
//! Every broker serves Metadata, DescribeCluster and leadership checks from this image;
//! nothing outside `controller/` mutates it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::NodeId;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// The node currently acting as controller (the Raft leader in a cluster).
    pub controller_id: NodeId,
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicImage>,
    /// Topic id -> name, kept beside `topics` so Fetch v13+ resolves ids without a scan.
    pub topic_names: BTreeMap<Uuid, String>,
    /// First producer id not yet handed out to any broker.
    pub next_producer_id: i64,
    /// Index of the last command applied (the metadata offset).
    pub applied_index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: NodeId,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    #[serde(default)]
    pub epoch: i64,
    #[serde(default)]
    pub fenced: bool,
}

impl BrokerRegistration {
    #[cfg(test)]
    pub fn for_tests(node_id: NodeId) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            epoch: 0,
            fenced: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionImage>,
    /// Topic-level config overrides only; defaults come from the broker config.
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: NodeId,
    pub leader_epoch: i32,
}

/// Topics whose names start with this are Kafka-internal (`__consumer_offsets`, ...).
pub fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topic_names
            .get(id)
            .and_then(|name| self.topics.get(name))
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionImage> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }
}
