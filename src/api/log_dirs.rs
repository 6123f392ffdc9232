//! DescribeLogDirs v0-4 and AlterReplicaLogDirs v1-2 (`kafka-log-dirs`,
//! `kafka-reassign-partitions --reassignment-json-file` with log dirs), for the one log
//! directory this broker has (`log.dirs` names a single directory). Kafka 4.0 removed v0 of
//! both (KIP-896); DescribeLogDirs v0 is served anyway, as v1 (the bytes are the same),
//! because kafka-python's `describe_log_dirs` sends nothing else.
//!
//! DescribeLogDirs answers as Kafka's `ReplicaManager.describeLogDirs`: one result per log
//! directory, named by its absolute path, with the hosted partitions asked for (all when
//! `topics` is null) grouped by topic and topics without any left out; each partition's
//! size is the bytes of its segments, its offset lag how far its log end is below the
//! high watermark (0 for a current replica), never a future replica. v4 adds the file
//! system's total and usable bytes (statvfs, as Java's `FileStore` reads them).
//!
//! AlterReplicaLogDirs, as Kafka's `ReplicaManager.alterReplicaLogDirs`: a destination that
//! is not a configured log directory is LOG_DIR_NOT_FOUND for each of its partitions;
//! otherwise a partition hosted here is already in it (NONE), one the metadata has but
//! this broker does not host is REPLICA_NOT_AVAILABLE, and an unknown one
//! UNKNOWN_TOPIC_OR_PARTITION.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::types::TopicPartition;

/// The oldest DescribeLogDirs version the message structs decode; v0 is handled as it.
pub const DESCRIBE_STRUCT_VERSION_MIN: i16 = 1;

pub async fn describe_log_dirs(
    broker: &Broker,
    _context: &RequestContext,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    // SEAM(acl): without CLUSTER DESCRIBE Kafka answers CLUSTER_AUTHORIZATION_FAILED (v3+ at
    // the top, with no results); add that check here once ACLs exist.
    let wanted: Option<Vec<TopicPartition>> = request.topics.map(|topics| {
        let partitions = topics.iter().flat_map(|topic| {
            let name = topic.topic.0.as_str();
            (topic.partitions.iter()).map(move |&index| TopicPartition::new(name, index))
        });
        partitions.collect()
    });
    let dir = absolute(&broker.config.log_dirs);
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for partition in broker.replicas.all() {
        if wanted
            .as_ref()
            .is_some_and(|wanted| !wanted.contains(&partition.tp))
        {
            continue;
        }
        let Ok((size_bytes, offset_lag)) = partition.log_dir_usage() else {
            continue; // deleted meanwhile
        };
        let entry = DescribeLogDirsPartition::default()
            .with_partition_index(partition.tp.partition)
            .with_partition_size(i64::try_from(size_bytes).unwrap_or(i64::MAX))
            .with_offset_lag(offset_lag)
            .with_is_future_key(false);
        topics
            .entry(partition.tp.topic.to_string())
            .or_default()
            .push(entry);
    }
    let topics = topics.into_iter().map(|(name, mut partitions)| {
        partitions.sort_by_key(|partition| partition.partition_index);
        DescribeLogDirsTopic::default()
            .with_name(TopicName(StrBytes::from_string(name)))
            .with_partitions(partitions)
    });
    let (total_bytes, usable_bytes) = space(&dir);
    let result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(topics.collect())
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// (total, usable) bytes of the file system holding `dir`; -1 each if it cannot be read
/// (Kafka's "unknown"). Sizes past `i64::MAX` are capped as Kafka's
/// `adjustForLargeFileSystems` does.
fn space(dir: &Path) -> (i64, i64) {
    match rustix::fs::statvfs(dir) {
        Ok(stat) => {
            let bytes = |blocks: u64| {
                let total = u128::from(blocks) * u128::from(stat.f_frsize);
                i64::try_from(total).unwrap_or(i64::MAX)
            };
            (bytes(stat.f_blocks), bytes(stat.f_bavail))
        }
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot read the log dir's file system");
            (-1, -1)
        }
    }
}

/// The log directory as clients see it: absolute, as Kafka's `toAbsolutePath`.
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

pub async fn alter_replica_log_dirs(
    broker: &Broker,
    _context: &RequestContext,
    request: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    // SEAM(acl): without CLUSTER ALTER Kafka answers CLUSTER_AUTHORIZATION_FAILED for every
    // partition; add that check here once ACLs exist.
    let image = broker.image();
    let dir = absolute(&broker.config.log_dirs);
    let mut results: BTreeMap<String, Vec<AlterReplicaLogDirPartitionResult>> = BTreeMap::new();
    for destination in &request.dirs {
        // Path equality compares components: a trailing slash or `.` does not matter.
        let known_dir = Path::new(destination.path.as_str()) == dir;
        for topic in &destination.topics {
            let name = topic.name.0.as_str();
            for &index in &topic.partitions {
                let error = if !known_dir {
                    Some(ResponseError::LogDirNotFound)
                } else if broker.replicas.get(name, index).is_some() {
                    None
                } else if image.partition(name, index).is_some() {
                    Some(ResponseError::ReplicaNotAvailable)
                } else {
                    Some(ResponseError::UnknownTopicOrPartition)
                };
                let result = AlterReplicaLogDirPartitionResult::default()
                    .with_partition_index(index)
                    .with_error_code(error.map_or(0, |error| error.code()));
                results.entry(name.to_string()).or_default().push(result);
            }
        }
    }
    let results = results.into_iter().map(|(name, partitions)| {
        AlterReplicaLogDirTopicResult::default()
            .with_topic_name(TopicName(StrBytes::from_string(name)))
            .with_partitions(partitions)
    });
    AlterReplicaLogDirsResponse::default().with_results(results.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_reads_the_file_system_and_is_unknown_for_a_missing_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (total, usable) = space(dir.path());
        assert!(
            total > 0 && usable >= 0 && usable <= total,
            "{total} {usable}"
        );
        assert_eq!(space(&dir.path().join("missing")), (-1, -1));
    }

    #[test]
    fn absolute_paths_compare_by_component() {
        let dir = absolute(Path::new("./data"));
        assert!(dir.is_absolute());
        let with_slash = format!("{}/", dir.display());
        assert_eq!(Path::new(&with_slash), dir);
    }
}
