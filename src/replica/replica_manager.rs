//! The set of partitions hosted here, kept in step with the metadata image.
//!
//! `reconcile` is the one place partitions are opened and deleted: it compares the image
//! with what is open (and, at start-up, with what is on disk) and makes them agree. It
//! also hands each open partition the image's leader, epochs and ISR
//! ([`Partition::apply_leadership`]), after releasing the topics lock, since that may
//! write the partition's leader-epoch checkpoint. Partitions open at the high watermark
//! of `replication-offset-checkpoint`, which [`ReplicaManager::checkpoint_high_watermarks`]
//! rewrites.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use uuid::Uuid;

use super::partition::read_partition_metadata;
use super::{Leadership, Partition, Publish, ReplicaError, hw_checkpoint};
use crate::config::{BrokerConfig, dynamic_broker};
use crate::controller::topic_rules::METADATA_TOPIC;
use crate::controller::{MetadataImage, PartitionImage, TopicImage};
use crate::log::durable::{DELETE_DIR_SUFFIX, STRAY_DIR_SUFFIX, is_aside_dir_name, rename_aside};
use crate::log::{LastShutdown, LogConfig};
use crate::topic_config;
use crate::types::{NodeId, TopicPartition, kafka_uuid_string, now_ms};

pub struct ReplicaManager {
    node_id: NodeId,
    config: Arc<BrokerConfig>,
    /// Topic name -> partitions by index (`None` where another broker hosts it). Keyed by
    /// name so the produce/fetch hot path looks up with a `&str`, no allocation.
    topics: RwLock<HashMap<String, Vec<Option<Arc<Partition>>>>>,
    /// Partitions assigned here that could not be opened, with why. Remembered so that a
    /// fault is logged once when it starts and once when it clears (not on every
    /// reconcile), and so that requests for them answer KAFKA_STORAGE_ERROR.
    open_failures: Mutex<HashMap<TopicPartition, OpenFailure>>,
    /// The high watermarks last written to the checkpoint, so an idle broker does not
    /// rewrite (and fsync) an unchanged file every few seconds.
    checkpointed: Mutex<Vec<(TopicPartition, i64)>>,
}

/// Why a partition assigned to this broker is not open.
#[derive(Clone, Debug)]
struct OpenFailure {
    topic_id: Uuid,
    error: String,
}

/// Partitions in at most this many are named in one log line; the rest are counted.
const LOGGED_PARTITIONS_MAX: usize = 10;

/// What one reconcile changed about open failures, logged once at its end.
#[derive(Default)]
struct OpenReport {
    started: Vec<(TopicPartition, String)>,
    cleared: Vec<TopicPartition>,
}

impl ReplicaManager {
    pub fn new(config: Arc<BrokerConfig>) -> ReplicaManager {
        ReplicaManager {
            node_id: config.node_id,
            config,
            topics: RwLock::new(HashMap::new()),
            open_failures: Mutex::new(HashMap::new()),
            checkpointed: Mutex::new(Vec::new()),
        }
    }

    /// True if some partition assigned here is not open (a cheap check before lookups).
    pub fn has_open_failures(&self) -> bool {
        let failures = self.open_failures.lock().unwrap_or_else(|p| p.into_inner());
        !failures.is_empty()
    }

    /// Why `topic`/`partition` is assigned here but not open, if it is.
    pub fn open_failure(&self, topic: &str, partition: i32) -> Option<String> {
        let failures = self.open_failures.lock().unwrap_or_else(|p| p.into_inner());
        let tp = TopicPartition::new(topic, partition);
        failures.get(&tp).map(|failure| failure.error.clone())
    }

    /// Fails with [`ReplicaError::Offline`] when partitions of `topic` assigned here could
    /// not be opened (CreateTopics and CreatePartitions report it instead of success).
    pub fn check_opened(&self, topic: &str) -> Result<(), ReplicaError> {
        let failures = self.open_failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut failed: Vec<(i32, &str)> = failures
            .iter()
            .filter(|(tp, _)| &*tp.topic == topic)
            .map(|(tp, failure)| (tp.partition, failure.error.as_str()))
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        failed.sort_unstable();
        Err(ReplicaError::Offline {
            topic: topic.to_string(),
            partitions: failed.iter().map(|(partition, _)| *partition).collect(),
            cause: failed[0].1.to_string(),
        })
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        let index = usize::try_from(partition).ok()?;
        topics.get(topic)?.get(index)?.clone()
    }

    /// [`Self::get`] for each of `indexes`, partitions of one topic, under one lookup of the
    /// topic: a fetch names up to thousands of partitions of a topic, and hashing its name
    /// and taking the lock for each was the larger part of resolving them.
    pub fn get_many(
        &self,
        topic: &str,
        indexes: impl IntoIterator<Item = i32>,
    ) -> Vec<Option<Arc<Partition>>> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        let hosted = topics.get(topic);
        let get = |index: i32| hosted?.get(usize::try_from(index).ok()?)?.clone();
        indexes.into_iter().map(get).collect()
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
        self.reconcile_with(image, LastShutdown::Unclean);
    }

    /// `reconcile` at start-up: after a clean shutdown the logs open without recovery.
    pub fn reconcile_after(&self, image: &MetadataImage, last_shutdown: LastShutdown) {
        self.reconcile_with(image, last_shutdown);
    }

    /// `reconcile`, returning what changed about partitions that failed to open (tests).
    #[cfg(test)]
    fn reconcile_reporting(&self, image: &MetadataImage) -> OpenReport {
        self.reconcile_with(image, LastShutdown::Unclean)
    }

    fn reconcile_with(&self, image: &MetadataImage, last_shutdown: LastShutdown) -> OpenReport {
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
        let mut failures = self.open_failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.retain(|tp, failure| self.still_assigned(image, tp, &failure.topic_id));
        let mut openings = Vec::new();
        let mut moves = Vec::new();
        let mut reassigned_away = Vec::new();
        let dynamic = topic_config::DynamicLayers::of(&image.broker_configs, self.node_id);
        for topic in image.topics.values() {
            let hosted = topics.entry(topic.name.clone()).or_default();
            reassigned_away.extend(self.take_reassigned_away(topic, hosted));
            openings.extend(self.reconcile_topic(topic, dynamic, hosted, &mut moves));
        }
        let threads = self.config.recovery_threads_per_data_dir;
        let high_watermarks = if openings.is_empty() {
            HashMap::new()
        } else {
            hw_checkpoint::read(&self.config.log_dirs)
        };
        let node_id = self.node_id;
        let expiration_ms = dynamic_broker::producer_id_expiration_ms(&self.config, dynamic);
        for partition in topics.values().flatten().flatten() {
            partition.set_producer_expiration_ms(expiration_ms);
        }
        let opened = on_threads(&openings, threads, |opening| {
            let high_watermark = high_watermarks.get(&opening.tp).copied().unwrap_or(0);
            opening.open(node_id, (high_watermark, expiration_ms), last_shutdown)
        });
        let mut report = OpenReport::default();
        for (opening, opened) in openings.into_iter().zip(opened) {
            let index = opening.tp.partition as usize;
            let topic = opening.tp.topic.clone();
            let partition = report.record(&mut failures, opening.tp, opening.topic_id, opened);
            if let Some(slot) = topics
                .get_mut(&*topic)
                .and_then(|hosted| hosted.get_mut(index))
            {
                *slot = partition;
            }
        }
        topics.retain(|_, partitions| partitions.iter().any(Option::is_some));
        drop(failures);
        drop(topics);
        report.log();
        for partition in reassigned_away {
            // Kafka's StopReplica with delete: the fetcher lets go at its next reconcile
            // (the partition is no longer hosted), the data goes now.
            tracing::info!(tp = %partition.tp, "reassigned away from this broker; deleting");
            if let Err(error) = partition.delete() {
                tracing::error!(tp = %partition.tp, %error, "deleting partition failed");
            }
        }
        let threads = self.config.recovery_threads_per_data_dir;
        on_threads(&moves, threads, |change| change.apply(node_id));
        report
    }

    /// True if the image still assigns `tp` of the topic `topic_id` to this broker.
    fn still_assigned(&self, image: &MetadataImage, tp: &TopicPartition, topic_id: &Uuid) -> bool {
        let same_topic = image.topic(&tp.topic).is_some_and(|t| t.id == *topic_id);
        let partition = image.partition(&tp.topic, tp.partition);
        same_topic && partition.is_some_and(|p| p.replicas.contains(&self.node_id))
    }

    // SEAM(reassigned-away-at-start-up): a broker that was down when a reassignment moved a
    // partition away finds its directory at start-up unclaimed, and
    // `set_aside_stray_directories` renames it aside (`-stray`) instead of deleting it as
    // Kafka would: safe, but the disk is not reclaimed without an operator.
    /// Takes out of `hosted` the open partitions the image's `topic` (the same topic id)
    /// lists without this broker: a completed or cancelled reassignment moved them away,
    /// and the caller deletes them. Only a partition the image names, of the topic id the
    /// open partition belongs to, is taken: never on doubt.
    fn take_reassigned_away(
        &self,
        topic: &TopicImage,
        hosted: &mut [Option<Arc<Partition>>],
    ) -> Vec<Arc<Partition>> {
        let mut away = Vec::new();
        for (slot, image) in hosted.iter_mut().zip(&topic.partitions) {
            let moved_away = slot.as_ref().is_some_and(|partition| {
                partition.topic_id == topic.id && !image.replicas.contains(&self.node_id)
            });
            if moved_away {
                away.extend(slot.take());
            }
        }
        away
    }

    /// Applies changed configs to the open partitions of `topic` and adds those whose
    /// leader epoch or leader changed to `moves`; returns the partitions the image assigns
    /// here that are not open yet.
    fn reconcile_topic(
        &self,
        topic: &TopicImage,
        dynamic: topic_config::DynamicLayers,
        hosted: &mut Vec<Option<Arc<Partition>>>,
        moves: &mut Vec<LeadershipMove>,
    ) -> Vec<Opening> {
        let log_config = topic_config::log_config(&self.config, dynamic, &topic.configs);
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
                let wanted = (image.leader, image.leader_epoch, image.partition_epoch);
                // An answered AlterPartition that completed a reassignment leaves the
                // epochs applied but the leader's followers stale: compare them too.
                if partition.applied_leadership() != wanted
                    || !partition.leads_replicas(&image.replicas)
                {
                    moves.push(LeadershipMove {
                        partition: Arc::clone(partition),
                        leadership: leadership(image),
                    });
                }
                continue;
            }
            let tp = TopicPartition::new(topic.name.as_str(), index as i32);
            openings.push(Opening {
                dir: self.partition_dir(&tp),
                tp,
                topic_id: topic.id,
                config: log_config.clone(),
                leadership: leadership(image),
            });
        }
        openings
    }

    /// Writes every open partition's high watermark to `replication-offset-checkpoint`,
    /// unless nothing changed since the last write. Blocking (fsync).
    pub fn checkpoint_high_watermarks(&self) -> std::io::Result<()> {
        let mut entries: Vec<(TopicPartition, i64)> = self
            .all()
            .iter()
            .filter_map(|p| Some((p.tp.clone(), p.offsets().ok()?.1)))
            .collect();
        entries.sort_unstable();
        let mut written = self.checkpointed.lock().unwrap_or_else(|p| p.into_inner());
        if *written == entries {
            return Ok(());
        }
        hw_checkpoint::write(&self.config.log_dirs, &entries)?;
        *written = entries;
        Ok(())
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

impl OpenReport {
    /// Notes the outcome of opening `tp`: a failure is remembered (and reported if it is
    /// new), a success clears a remembered failure. Returns the partition if it opened.
    fn record(
        &mut self,
        failures: &mut HashMap<TopicPartition, OpenFailure>,
        tp: TopicPartition,
        topic_id: Uuid,
        opened: Result<Partition, ReplicaError>,
    ) -> Option<Arc<Partition>> {
        match opened {
            Ok(partition) => {
                if failures.remove(&tp).is_some() {
                    self.cleared.push(tp);
                }
                Some(Arc::new(partition))
            }
            Err(error) => {
                let error = error.to_string();
                let failure = OpenFailure {
                    topic_id,
                    error: error.clone(),
                };
                if failures.insert(tp.clone(), failure).is_none() {
                    self.started.push((tp, error));
                }
                None
            }
        }
    }

    /// One ERROR line for the partitions whose fault started in this reconcile, one INFO
    /// line for those that opened after failing: a full disk or an exhausted descriptor
    /// table fails thousands of partitions at once, and retries must not repeat the news.
    fn log(&self) {
        if let [(tp, error)] = self.started.as_slice() {
            tracing::error!(%tp, %error, "cannot open partition");
        } else if let Some((tp, error)) = self.started.first() {
            tracing::error!(
                count = self.started.len(),
                partitions = %listed(self.started.iter().map(|(tp, _)| tp)),
                first = %tp,
                "{} partitions could not be opened: first error {error}",
                self.started.len()
            );
        }
        if !self.cleared.is_empty() {
            tracing::info!(
                count = self.cleared.len(),
                partitions = %listed(self.cleared.iter()),
                "partitions opened after earlier failures"
            );
        }
    }
}

/// Up to [`LOGGED_PARTITIONS_MAX`] partitions, comma separated, then how many more.
fn listed<'a>(partitions: impl ExactSizeIterator<Item = &'a TopicPartition>) -> String {
    let count = partitions.len();
    let mut text: Vec<String> = partitions
        .take(LOGGED_PARTITIONS_MAX)
        .map(ToString::to_string)
        .collect();
    if count > LOGGED_PARTITIONS_MAX {
        text.push(format!("and {} more", count - LOGGED_PARTITIONS_MAX));
    }
    text.join(", ")
}

/// The image's view of one partition, as a partition takes it.
fn leadership(image: &PartitionImage) -> Leadership {
    Leadership {
        leader: image.leader,
        leader_epoch: image.leader_epoch,
        partition_epoch: image.partition_epoch,
        replicas: image.replicas.clone(),
        isr: image.isr.clone(),
    }
}

/// A partition the image assigns here that is not open yet.
struct Opening {
    tp: TopicPartition,
    topic_id: Uuid,
    dir: PathBuf,
    config: LogConfig,
    leadership: Leadership,
}

impl Opening {
    /// Opens the partition at the checkpointed high watermark, leaving out the producers
    /// idle for `producer.id.expiration.ms` that a snapshot brings back.
    fn open(
        &self,
        node_id: NodeId,
        (high_watermark, expiration_ms): (i64, i64),
        last_shutdown: LastShutdown,
    ) -> Result<Partition, ReplicaError> {
        let opened = (
            self.tp.clone(),
            self.topic_id,
            self.dir.clone(),
            self.config.clone(),
        );
        let now = now_ms();
        let partition = Partition::open_expiring(
            opened,
            self.leadership.leader_epoch,
            (high_watermark, now),
            Some(expiration_ms),
            last_shutdown,
        )?;
        if let Err(error) =
            partition.apply_leadership(node_id, &self.leadership, now, Publish::AtOnce)
        {
            // The partition takes the role regardless; the next change rewrites the
            // checkpoint.
            partition.report_background_failure("recording a new leader epoch", &error);
        }
        Ok(partition)
    }
}

/// An open partition whose leader, leader epoch or partition epoch differs from the image's.
struct LeadershipMove {
    partition: Arc<Partition>,
    leadership: Leadership,
}

impl LeadershipMove {
    fn apply(&self, node_id: NodeId) {
        let partition = &self.partition;
        if let Err(error) =
            partition.apply_leadership(node_id, &self.leadership, now_ms(), Publish::Background)
        {
            partition.report_background_failure("recording a new leader epoch", &error);
        }
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
#[path = "stray_tests.rs"]
mod stray_tests;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::controller::commands::{MetadataCommand, apply};
    use kafka_protocol::records::Compression;

    fn manager(dir: &Path) -> ReplicaManager {
        let explicit = [("log.dirs", dir.display().to_string())]
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect();
        ReplicaManager::new(Arc::new(BrokerConfig::from_map(explicit).unwrap()))
    }

    fn create(image: &mut MetadataImage, name: &str, partitions: usize) {
        if !image.brokers.contains_key(&1) {
            crate::controller::commands::register_live_broker(image, 1);
        }
        let command = MetadataCommand::CreateTopic {
            name: name.into(),
            id: Uuid::new_v4(),
            assignments: vec![vec![1]; partitions],
            configs: BTreeMap::new(),
        };
        apply(image, &command).unwrap();
    }

    fn started(report: &OpenReport) -> Vec<String> {
        report
            .started
            .iter()
            .map(|(tp, _)| tp.to_string())
            .collect()
    }

    fn cleared(report: &OpenReport) -> Vec<String> {
        report.cleared.iter().map(ToString::to_string).collect()
    }

    /// A regular file where a partition's directory belongs: opening it fails.
    fn block(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"not a directory").unwrap();
        path
    }

    #[test]
    fn an_open_failure_is_reported_once_retried_and_cleared_once() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = manager(dir.path());
        let mut image = MetadataImage::default();
        create(&mut image, "t", 3);
        let blocked = block(dir.path(), "t-1");

        let report = replicas.reconcile_reporting(&image);
        assert_eq!(
            (started(&report), cleared(&report)),
            (vec!["t-1".into()], vec![])
        );
        assert!(replicas.get("t", 0).is_some() && replicas.get("t", 2).is_some());
        assert!(replicas.get("t", 1).is_none());
        assert!(replicas.open_failure("t", 1).is_some());
        assert!(replicas.open_failure("t", 0).is_none());
        let Err(ReplicaError::Offline { partitions, .. }) = replicas.check_opened("t") else {
            panic!("topic t reported as opened");
        };
        assert_eq!(partitions, vec![1]);

        // Later topic changes retry the partition without reporting it again.
        create(&mut image, "u", 1);
        let report = replicas.reconcile_reporting(&image);
        assert_eq!((started(&report), cleared(&report)), (vec![], vec![]));
        assert!(replicas.open_failure("t", 1).is_some());

        std::fs::remove_file(blocked).unwrap();
        let report = replicas.reconcile_reporting(&image);
        assert_eq!(
            (started(&report), cleared(&report)),
            (vec![], vec!["t-1".into()])
        );
        assert!(replicas.get("t", 1).is_some());
        assert!(replicas.check_opened("t").is_ok() && !replicas.has_open_failures());
        let report = replicas.reconcile_reporting(&image);
        assert_eq!((started(&report), cleared(&report)), (vec![], vec![]));
    }

    #[test]
    fn a_deleted_topic_forgets_its_open_failures() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = manager(dir.path());
        let mut image = MetadataImage::default();
        create(&mut image, "t", 2);
        let blocked = block(dir.path(), "t-0");
        assert_eq!(started(&replicas.reconcile_reporting(&image)), vec!["t-0"]);

        apply(
            &mut image,
            &MetadataCommand::DeleteTopic {
                name: "t".into(),
                id: None,
            },
        )
        .unwrap();
        let report = replicas.reconcile_reporting(&image);
        assert_eq!((started(&report), cleared(&report)), (vec![], vec![]));
        assert!(!replicas.has_open_failures());

        // A new topic of the same name is a new partition: its failure is news again.
        create(&mut image, "t", 1);
        assert_eq!(started(&replicas.reconcile_reporting(&image)), vec!["t-0"]);
        std::fs::remove_file(blocked).unwrap();
        assert_eq!(cleared(&replicas.reconcile_reporting(&image)), vec!["t-0"]);
    }

    /// Sets partition 0 of `topic`'s leader and leader epoch, as a leader change would.
    fn move_leader(image: &mut MetadataImage, topic: &str, leader: NodeId, epoch: i32) {
        let partition = &mut image.topics.get_mut(topic).unwrap().partitions[0];
        partition.leader = leader;
        partition.leader_epoch = epoch;
    }

    #[test]
    fn get_many_answers_each_index_as_get_does() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = manager(dir.path());
        let mut image = MetadataImage::default();
        create(&mut image, "t", 3);
        replicas.reconcile(&image);
        // Repeats, out of order, negative and past the end, as a request may name them.
        let indexes = [2, 0, 0, -1, 3, i32::MAX, 1];
        let many = replicas.get_many("t", indexes);
        assert_eq!(many.len(), indexes.len());
        for (index, found) in indexes.into_iter().zip(&many) {
            match (replicas.get("t", index), found) {
                (Some(one), Some(found)) => assert!(Arc::ptr_eq(&one, found), "{index}"),
                (None, None) => {}
                (one, found) => {
                    panic!(
                        "{index}: get {} get_many {}",
                        one.is_some(),
                        found.is_some()
                    )
                }
            }
        }
        assert_eq!(many.iter().flatten().count(), 4);
        let unknown = replicas.get_many("u", [0, 1]);
        assert!(unknown.iter().all(Option::is_none) && unknown.len() == 2);
    }

    #[test]
    fn open_partitions_follow_the_images_leader_and_epoch_and_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = manager(dir.path());
        let mut image = MetadataImage::default();
        create(&mut image, "t", 1);
        move_leader(&mut image, "t", 1, 0);
        replicas.reconcile(&image);
        let partition = replicas.get("t", 0).unwrap();
        assert_eq!(partition.leadership(), (0, true));
        let batch = crate::log::test_support::encode_batch(&[1, 2], Compression::None).freeze();
        partition.append(&batch, 0).unwrap();
        let end = partition.offsets().unwrap().2;

        move_leader(&mut image, "t", 2, 1);
        replicas.reconcile(&image);
        assert_eq!(partition.leadership(), (1, false));
        move_leader(&mut image, "t", 1, 2);
        replicas.reconcile(&image);
        assert_eq!(partition.leadership(), (2, true));
        let recorded: Vec<(i32, i64)> = (partition.leader_epochs().entries().iter())
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect();
        assert_eq!(recorded, vec![(0, 0), (2, end)]);
        assert!(partition.check_leader_epoch(2).is_ok());

        // A stale image (lower epoch) is ignored.
        move_leader(&mut image, "t", 2, 1);
        replicas.reconcile(&image);
        assert_eq!(partition.leadership(), (2, true));
        assert!(Arc::ptr_eq(&partition, &replicas.get("t", 0).unwrap()));
    }

    #[test]
    fn a_partition_reassigned_away_is_closed_and_deleted_and_others_stay() {
        use crate::controller::PartitionReassignment;
        let dir = tempfile::tempdir().unwrap();
        let replicas = manager(dir.path());
        let mut image = MetadataImage::default();
        create(&mut image, "t", 2);
        crate::controller::commands::register_live_broker(&mut image, 2);
        replicas.reconcile(&image);
        let moved = replicas.get("t", 0).unwrap();
        let batch = crate::log::test_support::encode_batch(&[1], Compression::None).freeze();
        moved.append(&batch, 0).unwrap();
        assert!(dir.path().join("t-0").is_dir());

        let topic_id = image.topics["t"].id;
        let reassign = |target: Vec<NodeId>| MetadataCommand::AlterPartitionReassignments {
            reassignments: vec![PartitionReassignment {
                topic_id,
                partition: 0,
                target: Some(target),
                seen_in_progress_at: None,
            }],
        };
        // Under way: still hosted here (a removing replica keeps its data and role).
        apply(&mut image, &reassign(vec![2])).unwrap();
        assert_eq!(image.topics["t"].partitions[0].removing_replicas, vec![1]);
        replicas.reconcile(&image);
        assert!(replicas.get("t", 0).is_some() && dir.path().join("t-0").is_dir());

        // Completed (as the AlterPartition adding 2 to the ISR would): gone from here.
        let partition = &mut image.topics.get_mut("t").unwrap().partitions[0];
        partition.replicas = vec![2];
        partition.isr = vec![2];
        partition.leader = 2;
        partition.leader_epoch += 1;
        partition.partition_epoch += 1;
        partition.removing_replicas.clear();
        image.check_invariants().unwrap();
        replicas.reconcile(&image);
        assert!(replicas.get("t", 0).is_none());
        assert!(!dir.path().join("t-0").exists(), "the directory is deleted");
        assert!(replicas.get("t", 1).is_some() && dir.path().join("t-1").is_dir());
        assert!(
            moved.offsets().is_err(),
            "the closed partition serves nothing"
        );
    }

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
