//! Start-up never deletes partition data because metadata is missing or doubtful.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use super::*;
use crate::controller::MetadataCommand;
use crate::controller::commands::apply;
use crate::log::LogConfig;

fn manager(log_dirs: &Path) -> ReplicaManager {
    let override_dirs = format!("log.dirs={}", log_dirs.display());
    let args = vec!["-o".to_string(), override_dirs];
    let config = BrokerConfig::from_args_and_env(args, Vec::<(String, String)>::new()).unwrap();
    ReplicaManager::new(Arc::new(config))
}

fn image_with(topic: &str, id: Uuid) -> MetadataImage {
    let mut image = MetadataImage::default();
    crate::controller::commands::register_live_broker(&mut image, 1);
    let create = MetadataCommand::CreateTopic {
        name: topic.into(),
        id,
        assignments: vec![vec![1]],
        configs: BTreeMap::new(),
    };
    apply(&mut image, &create).unwrap();
    image
}

fn partition_dir(root: &Path, name: &str, topic_id: Option<&Uuid>, data: &[u8]) {
    let dir = root.join(name);
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("00000000000000000000.log"), data).unwrap();
    if let Some(id) = topic_id {
        let text = format!("version: 0\ntopic_id: {}\n", kafka_uuid_string(id));
        fs::write(dir.join("partition.metadata"), text).unwrap();
    }
}

/// Directory names under `root`, sorted.
fn names(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn strays_are_renamed_aside_with_their_data_and_delete_leftovers_removed() {
    let root = tempfile::tempdir().unwrap();
    let (live_id, old_id) = (Uuid::new_v4(), Uuid::new_v4());
    partition_dir(root.path(), "live-0", Some(&live_id), b"live");
    partition_dir(
        root.path(),
        "live-1",
        Some(&live_id),
        b"beyond the partition count",
    );
    partition_dir(root.path(), "ghost-0", Some(&old_id), b"ghost");
    partition_dir(root.path(), "unbound-0", None, b"unbound");
    let old_stray = format!("old-0.{}-stray", "b".repeat(32));
    partition_dir(root.path(), &old_stray, None, b"kept");
    partition_dir(
        root.path(),
        &format!("live-0.{}-delete", "a".repeat(32)),
        None,
        b"x",
    );
    fs::create_dir(root.path().join("__cluster_metadata-0")).unwrap();
    partition_dir(root.path(), "not-ours-delete", None, b"an operator's");

    let replicas = manager(root.path());
    replicas
        .set_aside_stray_directories(&image_with("live", live_id))
        .unwrap();
    let after = names(root.path());
    assert!(after.contains(&"live-0".to_string()), "{after:?}");
    assert!(after.contains(&old_stray), "{after:?}");
    assert!(
        after.contains(&"__cluster_metadata-0".to_string()),
        "{after:?}"
    );
    let deleted: Vec<&String> = after.iter().filter(|n| n.ends_with("-delete")).collect();
    assert_eq!(
        deleted,
        ["not-ours-delete"],
        "only our own -delete names are removed"
    );
    for (original, data) in [
        ("live-1", "beyond the partition count"),
        ("ghost-0", "ghost"),
    ] {
        let aside: Vec<&String> = after
            .iter()
            .filter(|name| name.starts_with(&format!("{original}.")) && name.ends_with("-stray"))
            .collect();
        assert_eq!(aside.len(), 1, "{original}: {after:?}");
        let kept = fs::read(root.path().join(aside[0]).join("00000000000000000000.log"));
        assert_eq!(kept.unwrap(), data.as_bytes());
    }
    assert!(
        after.iter().any(|name| name.starts_with("unbound-0.")),
        "{after:?}"
    );
    assert_eq!(after.len(), 7, "{after:?}");

    // A second start finds nothing more to do: each stray is set aside exactly once.
    replicas
        .set_aside_stray_directories(&image_with("live", live_id))
        .unwrap();
    assert_eq!(names(root.path()), after);
}

#[test]
fn a_partition_directory_bound_to_another_topic_id_is_never_opened() {
    let root = tempfile::tempdir().unwrap();
    let (old_id, new_id) = (Uuid::new_v4(), Uuid::new_v4());
    partition_dir(root.path(), "reused-0", Some(&old_id), b"");
    let dir = root.path().join("reused-0");
    let before = fs::read(dir.join("partition.metadata")).unwrap();
    let tp = TopicPartition::new("reused", 0);
    let opened = Partition::open(
        tp,
        new_id,
        dir.clone(),
        LogConfig::default(),
        0,
        now_ms(),
        crate::log::LastShutdown::Unclean,
    );
    assert!(
        matches!(opened, Err(ReplicaError::InconsistentTopicId { .. })),
        "{:?}",
        opened.err()
    );
    assert_eq!(fs::read(dir.join("partition.metadata")).unwrap(), before);
}
