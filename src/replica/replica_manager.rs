//! The set of partitions hosted here, kept in step with the metadata image.
//!
//! `reconcile` is the one place partitions are opened and deleted: it compares the image
//! with what is open (and, at start-up, with what is on disk) and makes them agree.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::partition::read_partition_metadata;
use super::{Partition, ReplicaError};
use crate::config::BrokerConfig;
use crate::controller::topic_rules::METADATA_TOPIC;
use crate::controller::{MetadataImage, TopicImage};
use crate::log::LastShutdown;
use crate::topic_config;
use crate::types::{NodeId, TopicPartition, kafka_uuid_string, now_ms};

pub struct ReplicaManager {
    node_id: NodeId,
    config: Arc<BrokerConfig>,
    /// Topic name -> partitions by index (`None` where another broker hosts it). Keyed by
    /// name so the produce/fetch hot path looks up with a `&str`, no allocation.
    topics: RwLock<HashMap<String, Vec<Option<Arc<Partition>>>>>,
}

impl ReplicaManager {
    pub fn new(config: Arc<BrokerConfig>) -> ReplicaManager {
        ReplicaManager {
            node_id: config.node_id,
            config,
            topics: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        let index = usize::try_from(partition).ok()?;
        topics.get(topic)?.get(index)?.clone()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topics.values().flatten().flatten().cloned().collect()
    }

    fn partition_dir(&self, tp: &TopicPartition) -> PathBuf {
        self.config.log_dirs.join(tp.dir_name())
    }

    /// Opens partitions the image assigns here, deletes those it no longer has, and
    /// applies changed topic configs. Errors on one partition do not stop the others.
    pub fn reconcile(&self, image: &MetadataImage) {
        self.reconcile_after(image, LastShutdown::Unclean);
    }

    /// `reconcile` at start-up: after a clean shutdown the logs open without recovery.
    pub fn reconcile_after(&self, image: &MetadataImage, last_shutdown: LastShutdown) {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = topics
            .keys()
            .filter(|name| !same_topic(image.topic(name), &topics[*name]))
            .cloned()
            .collect();
        for name in gone {
            for partition in topics.remove(&name).into_iter().flatten().flatten() {
                if let Err(error) = partition.delete() {
                    tracing::error!(tp = %partition.tp, %error, "deleting partition failed");
                }
            }
        }
        for topic in image.topics.values() {
            let hosted = topics.entry(topic.name.clone()).or_default();
            self.reconcile_topic(topic, hosted, last_shutdown);
        }
        topics.retain(|_, partitions| !partitions.is_empty());
    }

    fn reconcile_topic(
        &self,
        topic: &TopicImage,
        hosted: &mut Vec<Option<Arc<Partition>>>,
        last_shutdown: LastShutdown,
    ) {
        let log_config = topic_config::log_config(&self.config, &topic.configs);
        hosted.resize(topic.partitions.len().max(hosted.len()), None);
        for (index, image) in topic.partitions.iter().enumerate() {
            if !image.replicas.contains(&self.node_id) {
                continue;
            }
            if let Some(partition) = &hosted[index] {
                if partition.config().as_ref() != Some(&log_config) {
                    partition.set_config(log_config.clone());
                }
                continue;
            }
            let tp = TopicPartition::new(topic.name.as_str(), index as i32);
            let dir = self.partition_dir(&tp);
            let opened = Partition::open(
                tp.clone(),
                topic.id,
                dir,
                log_config.clone(),
                image.leader_epoch,
                now_ms(),
                last_shutdown,
            );
            match opened {
                Ok(partition) => hosted[index] = Some(Arc::new(partition)),
                Err(error) => tracing::error!(%tp, %error, "cannot open partition"),
            }
        }
        if hosted.iter().all(Option::is_none) {
            hosted.clear();
        }
    }

    /// Start-up clean-up: removes partition directories that belong to no topic in the
    /// image, or to an older topic of the same name (deleted while this broker was down).
    pub fn remove_stray_directories(&self, image: &MetadataImage) -> Result<(), ReplicaError> {
        let Ok(entries) = std::fs::read_dir(&self.config.log_dirs) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(tp) = TopicPartition::from_dir_name(&name) else {
                continue;
            };
            if &*tp.topic == METADATA_TOPIC || !entry.path().is_dir() {
                continue;
            }
            let expected = image
                .partition(&tp.topic, tp.partition)
                .filter(|partition| partition.replicas.contains(&self.node_id))
                .and_then(|_| image.topic(&tp.topic))
                .map(|topic| kafka_uuid_string(&topic.id));
            let recorded = read_partition_metadata(&entry.path());
            let keep = matches!((&expected, &recorded), (Some(e), Some(r)) if e == r)
                || (expected.is_some() && recorded.is_none());
            if !keep {
                tracing::info!(dir = %entry.path().display(), "removing stray partition directory");
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }
}

/// True if the hosted partitions still belong to the topic in the image (same id).
fn same_topic(topic: Option<&TopicImage>, hosted: &[Option<Arc<Partition>>]) -> bool {
    let Some(topic) = topic else { return false };
    hosted
        .iter()
        .flatten()
        .all(|partition| partition.topic_id == topic.id)
}
