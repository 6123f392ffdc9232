//! The set of partitions hosted here, kept in step with the metadata image.
//!
//! `reconcile` is the one place partitions are opened and deleted: it compares the image
//! with what is open (and, at start-up, with what is on disk) and makes them agree.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use super::partition::read_partition_metadata;
use super::{Partition, ReplicaError};
use crate::config::BrokerConfig;
use crate::controller::topic_rules::METADATA_TOPIC;
use crate::controller::{MetadataImage, TopicImage};
use crate::log::{LastShutdown, LogConfig};
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
        let mut openings = Vec::new();
        for topic in image.topics.values() {
            let hosted = topics.entry(topic.name.clone()).or_default();
            openings.extend(self.reconcile_topic(topic, hosted));
        }
        let threads = self.config.recovery_threads_per_data_dir;
        let opened = on_threads(&openings, threads, |opening| opening.open(last_shutdown));
        for (opening, opened) in openings.iter().zip(opened) {
            let tp = &opening.tp;
            let slot = topics
                .get_mut(&*tp.topic)
                .and_then(|hosted| hosted.get_mut(tp.partition as usize));
            match (opened, slot) {
                (Ok(partition), Some(slot)) => *slot = Some(Arc::new(partition)),
                (Ok(_), None) => tracing::error!(%tp, "no slot for an opened partition"),
                (Err(error), _) => tracing::error!(%tp, %error, "cannot open partition"),
            }
        }
        topics.retain(|_, partitions| partitions.iter().any(Option::is_some));
    }

    /// Applies changed configs to the open partitions of `topic`; returns the partitions
    /// the image assigns here that are not open yet.
    fn reconcile_topic(
        &self,
        topic: &TopicImage,
        hosted: &mut Vec<Option<Arc<Partition>>>,
    ) -> Vec<Opening> {
        let log_config = topic_config::log_config(&self.config, &topic.configs);
        hosted.resize(topic.partitions.len().max(hosted.len()), None);
        let mut openings = Vec::new();
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
            openings.push(Opening {
                dir: self.partition_dir(&tp),
                tp,
                topic_id: topic.id,
                config: log_config.clone(),
                leader_epoch: image.leader_epoch,
            });
        }
        openings
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

/// A partition the image assigns here that is not open yet.
struct Opening {
    tp: TopicPartition,
    topic_id: Uuid,
    dir: PathBuf,
    config: LogConfig,
    leader_epoch: i32,
}

impl Opening {
    fn open(&self, last_shutdown: LastShutdown) -> Result<Partition, ReplicaError> {
        Partition::open(
            self.tp.clone(),
            self.topic_id,
            self.dir.clone(),
            self.config.clone(),
            self.leader_epoch,
            now_ms(),
            last_shutdown,
        )
    }
}

/// `work` applied to every item on up to `threads` threads, results in item order; a panic
/// in `work` is re-raised here. For `num.recovery.threads.per.data.dir`: opening and
/// flushing logs is disk- and CRC-bound per partition, and partitions are independent.
pub(crate) fn on_threads<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() <= 1 {
        return items.iter().map(work).collect();
    }
    let chunk_len = items.len().div_ceil(threads.max(1)).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk_len)
            .map(|chunk| scope.spawn(move || chunk.iter().map(work).collect::<Vec<R>>()))
            .collect();
        let joined = workers.into_iter().map(|worker| worker.join());
        joined
            .flat_map(|results| results.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
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
mod tests {
    use super::*;

    #[test]
    fn on_threads_keeps_item_order_for_any_thread_count() {
        let items: Vec<u64> = (0..103).collect();
        for threads in [1, 2, 7, 200] {
            let squares = on_threads(&items, threads, |item| item * item);
            assert_eq!(squares, items.iter().map(|i| i * i).collect::<Vec<_>>());
        }
        assert!(on_threads(&[] as &[u64], 2, |item| *item).is_empty());
    }
}
