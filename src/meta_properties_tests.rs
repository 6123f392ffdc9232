use std::collections::BTreeMap;

use super::*;

const CLUSTER: &str = "MkU3OEVBNTcwNTJENDM2Qk";
const OTHER_CLUSTER: &str = "5L6g3nShT-eMCtK--X86sw";

fn config(dir: &Path, pairs: &[(&str, &str)], cluster_id_env: Option<&str>) -> BrokerConfig {
    let mut map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.insert("log.dirs".into(), dir.display().to_string());
    BrokerConfig::from_sources(map, cluster_id_env.map(String::from)).unwrap()
}

/// Node 1 of three combined voters.
const THREE_VOTERS: [(&str, &str); 3] = [
    (
        "listeners",
        "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
    ),
    ("controller.listener.names", "CONTROLLER"),
    (
        "controller.quorum.voters",
        "1@127.0.0.1:19093,2@127.0.0.1:29093,3@127.0.0.1:39093",
    ),
];

#[test]
fn the_embedded_default_formats_itself_with_a_random_id_once() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let config = config(&dir, &[], None);
    let first = prepare(&config).unwrap();
    assert!(check_cluster_id(&first).is_ok(), "{first}");
    assert_eq!(prepare(&config).unwrap(), first, "a restart keeps its id");
    let stored = read(&dir).unwrap().unwrap();
    assert_eq!(stored.cluster_id, first);
    assert_eq!(stored.node_id, 1);
    let directory_id = stored.directory_id.unwrap();
    assert!(check_cluster_id(&directory_id).is_ok());
    assert_ne!(random_cluster_id(), random_cluster_id());
}

#[test]
fn cluster_id_from_the_environment_formats_and_must_match_later() {
    let temp = tempfile::tempdir().unwrap();
    let with_env = config(temp.path(), &THREE_VOTERS, Some(CLUSTER));
    assert_eq!(prepare(&with_env).unwrap(), CLUSTER);
    let without_env = config(temp.path(), &THREE_VOTERS, None);
    assert_eq!(
        prepare(&without_env).unwrap(),
        CLUSTER,
        "formatted: env not needed"
    );
    let other = config(temp.path(), &THREE_VOTERS, Some(OTHER_CLUSTER));
    let error = prepare(&other).unwrap_err();
    assert!(matches!(
        error,
        MetaPropertiesError::ClusterIdMismatch { .. }
    ));
    let message = error.to_string();
    assert!(
        message.contains(CLUSTER) && message.contains(OTHER_CLUSTER),
        "{message}"
    );
    assert!(message.contains("CLUSTER_ID"), "{message}");
    assert_eq!(
        read(temp.path()).unwrap().unwrap().cluster_id,
        CLUSTER,
        "left as it was"
    );
}

#[test]
fn an_unformatted_member_of_a_larger_quorum_refuses_to_start() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let error = prepare(&config(&dir, &THREE_VOTERS, None)).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, MetaPropertiesError::NotFormatted { .. }));
    assert!(message.contains("is not formatted") && message.contains("format -t"));
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(read(&dir).unwrap().is_none(), "nothing written");
    // One voter that is this node: alone, so it may draw its own id.
    let alone = [
        THREE_VOTERS[0],
        THREE_VOTERS[1],
        ("controller.quorum.voters", "1@127.0.0.1:19093"),
    ];
    assert!(prepare(&config(&dir, &alone, None)).is_ok());
}

#[test]
fn another_nodes_directory_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    prepare(&config(temp.path(), &[], None)).unwrap();
    let error = prepare(&config(temp.path(), &[("node.id", "2")], None)).unwrap_err();
    assert!(matches!(
        error,
        MetaPropertiesError::NodeIdMismatch {
            stored: 1,
            configured: 2,
            ..
        }
    ));
    assert!(error.to_string().contains("Stored node id 1"));
}

#[test]
fn format_writes_once_and_refuses_a_formatted_directory_unless_told() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("new");
    let config = config(&dir, &THREE_VOTERS, None);
    assert_eq!(
        format(&config, CLUSTER, false).unwrap(),
        FormatOutcome::Formatted(dir.clone())
    );
    assert_eq!(prepare(&config).unwrap(), CLUSTER);
    let again = format(&config, CLUSTER, false).unwrap_err();
    assert!(matches!(
        again,
        MetaPropertiesError::AlreadyFormatted { .. }
    ));
    assert!(
        again
            .to_string()
            .contains("is already formatted. Use --ignore-formatted")
    );
    assert_eq!(
        format(&config, CLUSTER, true).unwrap(),
        FormatOutcome::AlreadyFormatted(dir.clone())
    );
    // Even --ignore-formatted does not hide a directory of another cluster.
    let other = format(&config, OTHER_CLUSTER, true).unwrap_err();
    assert!(matches!(
        other,
        MetaPropertiesError::ClusterIdMismatch { .. }
    ));
    let bad = format(&config, "not-an-id", false).unwrap_err();
    assert!(matches!(bad, MetaPropertiesError::InvalidClusterId { .. }));
}

#[test]
fn unusable_files_are_errors_not_unformatted_directories() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join(META_PROPERTIES);
    let cases = [
        ("cluster.id=x\nnode.id=1\n", "ZooKeeper-era"),
        ("version=0\ncluster.id=x\nnode.id=1\n", "version 0"),
        ("version=1\nnode.id=1\n", "cluster.id"),
        ("version=1\ncluster.id=x\n", "node.id"),
        ("version=1\ncluster.id=x\nnode.id=one\n", "not a number"),
    ];
    for (text, want) in cases {
        std::fs::write(&path, text).unwrap();
        let error = read(temp.path()).unwrap_err();
        assert!(
            matches!(error, MetaPropertiesError::Malformed { .. }),
            "{text}"
        );
        assert!(error.to_string().contains(want), "{text}: {error}");
        assert!(prepare(&config(temp.path(), &[], None)).is_err());
    }
    // A directory where the file should be cannot be read: an error, never a format.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert!(matches!(
        read(temp.path()),
        Err(MetaPropertiesError::Io { .. })
    ));
}

#[test]
fn files_written_by_earlier_releases_and_kafka_are_read() {
    let temp = tempfile::tempdir().unwrap();
    let kafka = "#\n#Tue Oct 01 10:00:00 UTC 2024\ncluster.id=MkU3OEVBNTcwNTJENDM2Qk\n\
                 directory.id=J8aAPcfLQt2bqs1JT_rMgQ\nnode.id=1\nversion=1\n";
    std::fs::write(temp.path().join(META_PROPERTIES), kafka).unwrap();
    let stored = read(temp.path()).unwrap().unwrap();
    assert_eq!(
        stored,
        MetaProperties {
            cluster_id: CLUSTER.into(),
            node_id: 1,
            directory_id: Some("J8aAPcfLQt2bqs1JT_rMgQ".into()),
        }
    );
    assert_eq!(prepare(&config(temp.path(), &[], None)).unwrap(), CLUSTER);
}
