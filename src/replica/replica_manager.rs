//! The set of partitions hosted here, kept in step with the metadata image.
//!
//! `reconcile` is the one place partitions are opened and deleted: it compares the image
//! with what is open (and, at start-up, with what is on disk) and makes them agree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::partition::read_partition_metadata;
use super::{Partition, ReplicaError};
use crate::config::BrokerConfig;
use crate::controller::topic_rules::METADATA_TOPIC;
use crate::controller::{MetadataImage, TopicImage};
use crate::log::durable::{DELETE_DIR_SUFFIX, STRAY_DIR_SUFFIX, is_aside_dir_name, rename_aside};
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
            self.reconcile_topic(topic, hosted);
        }
        topics.retain(|_, partitions| !partitions.is_empty());
    }

    fn reconcile_topic(&self, topic: &TopicImage, hosted: &mut Vec<Option<Arc<Partition>>>) {
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

    /// Start-up clean-up of the log directory, before any partition opens. Nothing here
    /// deletes data because metadata is missing or doubtful:
    /// - a partition directory no topic in the image claims for this broker, or whose
    ///   `partition.metadata` names another topic id (an older topic of the same name), is
    ///   renamed aside to `<topic>-<partition>.<uuid>-stray` and logged once (Kafka's
    ///   `LogManager` does the same with stray logs);
    /// - a `...-delete` directory is removed: it was renamed only after its topic's
    ///   deletion record was durable, and a crash interrupted the removal.
    pub fn set_aside_stray_directories(&self, image: &MetadataImage) -> Result<(), ReplicaError> {
        let entries = match std::fs::read_dir(&self.config.log_dirs) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        for entry in entries {
            let path = entry?.path();
            if !path.is_dir() {
                continue;
            }
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            if is_aside_dir_name(&name, DELETE_DIR_SUFFIX) {
                tracing::info!(dir = %path.display(), "removing a deleted topic's partition");
                std::fs::remove_dir_all(&path)?;
            } else if let Some(tp) = TopicPartition::from_dir_name(&name)
                && &*tp.topic != METADATA_TOPIC
                && !self.claims(image, &tp, &path)
            {
                let aside = rename_aside(&path, STRAY_DIR_SUFFIX)?;
                tracing::warn!(
                    dir = %path.display(), renamed = %aside.display(),
                    "partition directory belongs to no topic in the metadata; renamed aside, \
                     not deleted"
                );
            }
        }
        Ok(())
    }

    /// True if the image assigns `tp` to this broker and the directory is not bound to
    /// another topic id. A directory without `partition.metadata` (a crash before it was
    /// written) is claimed: opening it binds it.
    fn claims(&self, image: &MetadataImage, tp: &TopicPartition, dir: &Path) -> bool {
        let expected = image
            .partition(&tp.topic, tp.partition)
            .filter(|partition| partition.replicas.contains(&self.node_id))
            .and_then(|_| image.topic(&tp.topic))
            .map(|topic| kafka_uuid_string(&topic.id));
        match (expected, read_partition_metadata(dir)) {
            (Some(expected), Some(recorded)) => expected == recorded,
            (Some(_), None) => true,
            (None, _) => false,
        }
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

#[cfg(test)]
#[path = "stray_tests.rs"]
mod stray_tests;
