//! `meta.properties`: which cluster and node a log directory belongs to, in Kafka's v1
//! format (`version=1`, `cluster.id`, `node.id`, `directory.id`).
//!
//! Kafka refuses to start on a directory nobody formatted (`kafka-storage format -t <id>`,
//! or the official images' `CLUSTER_ID`). We do too, except for the embedded single node,
//! which formats itself with a random id so `gracchus` with no configuration just runs.
//! Callers: `Broker::open` ([`prepare`]) and the `format` subcommand ([`format`]).

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::{BrokerConfig, CLUSTER_ID_ENV, check_cluster_id};
use crate::types::{NodeId, kafka_uuid_string};

pub const META_PROPERTIES: &str = "meta.properties";
/// The only version KRaft nodes write or accept (v0 belongs to ZooKeeper brokers).
const VERSION: &str = "1";

#[derive(Debug, Error)]
pub enum MetaPropertiesError {
    #[error("log directory {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error("{path} is not a usable meta.properties: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "Stored node id {stored} doesn't match the configured node.id {configured} in {path}. \
         If you moved your data, make sure your configured node id matches. If you intend to \
         create a new node, you should remove all data in your data directories."
    )]
    NodeIdMismatch {
        path: PathBuf,
        stored: NodeId,
        configured: NodeId,
    },
    #[error(
        "Invalid cluster.id in {path}: expected {expected} ({source_of_expected}), but read \
         {stored}. This log directory belongs to cluster {stored}, not {expected}; refusing to \
         join another cluster."
    )]
    ClusterIdMismatch {
        path: PathBuf,
        stored: String,
        expected: String,
        source_of_expected: &'static str,
    },
    #[error(
        "log dir {} is not formatted: run `gracchus format -t <id> ...` (an id from \
         `gracchus random-uuid`, the same on every node) or set CLUSTER_ID",
        dir.display()
    )]
    NotFormatted { dir: PathBuf },
    #[error(
        "Log directory {} is already formatted. Use --ignore-formatted to ignore this \
         directory and format the others.",
        dir.display()
    )]
    AlreadyFormatted { dir: PathBuf },
    #[error("invalid cluster id {id:?}: {reason}")]
    InvalidClusterId { id: String, reason: String },
}

/// The contents of one `meta.properties`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaProperties {
    pub cluster_id: String,
    pub node_id: NodeId,
    /// Kafka's per-directory id (JBOD); absent in files written before it existed.
    pub directory_id: Option<String>,
}

impl MetaProperties {
    fn to_text(&self) -> String {
        let mut text = format!(
            "#\n#Written by gracchus\nversion={VERSION}\ncluster.id={}\nnode.id={}\n",
            self.cluster_id, self.node_id
        );
        if let Some(directory_id) = &self.directory_id {
            text.push_str(&format!("directory.id={directory_id}\n"));
        }
        text
    }

    fn parse(path: &Path, text: &str) -> Result<MetaProperties, MetaPropertiesError> {
        let malformed = |reason: String| MetaPropertiesError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let properties = crate::config::parse_properties(text);
        let get = |key: &str| properties.get(key).map(String::as_str);
        match get("version") {
            Some(VERSION) => {}
            Some(other) => return Err(malformed(format!("version {other}, want {VERSION}"))),
            None => {
                return Err(malformed(
                    "no version: a ZooKeeper-era (v0) directory, which KRaft nodes cannot use"
                        .into(),
                ));
            }
        }
        let cluster_id = get("cluster.id")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| malformed("cluster.id was not specified in the v1 file".into()))?;
        let node_id =
            get("node.id").ok_or_else(|| malformed("node.id was not specified".into()))?;
        let node_id = node_id
            .parse()
            .map_err(|_| malformed(format!("node.id {node_id:?} is not a number")))?;
        Ok(MetaProperties {
            cluster_id: cluster_id.to_string(),
            node_id,
            directory_id: get("directory.id").map(String::from),
        })
    }
}

/// A new cluster id: 16 random bytes as Kafka prints a UUID (22 characters).
pub fn random_cluster_id() -> String {
    kafka_uuid_string(&uuid::Uuid::new_v4())
}

/// Reads `<dir>/meta.properties`; `None` when the directory (or the file) does not exist.
/// Any other I/O error is an error: an unreadable file must not look unformatted.
pub fn read(dir: &Path) -> Result<Option<MetaProperties>, MetaPropertiesError> {
    let path = dir.join(META_PROPERTIES);
    match std::fs::read_to_string(&path) {
        Ok(text) => MetaProperties::parse(&path, &text).map(Some),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MetaPropertiesError::Io {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

/// Creates `dir` if needed and publishes `meta.properties` in it durably (temporary file,
/// fsync, rename, directory fsync): a crash leaves the old file or the whole new one.
pub fn write(dir: &Path, properties: &MetaProperties) -> Result<(), MetaPropertiesError> {
    let io = |source| MetaPropertiesError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    crate::log::durable::create_dir_durably(dir).map_err(io)?;
    let text = properties.to_text();
    crate::log::durable::publish_file(dir, META_PROPERTIES, text.as_bytes()).map_err(io)?;
    // Paired with the write: what a restart will read is what we meant to write (another
    // process formatting the same directory at once could make it differ).
    if read(dir)?.as_ref() != Some(properties) {
        return Err(MetaPropertiesError::Malformed {
            path: dir.join(META_PROPERTIES),
            reason: "what was read back differs from what was written".into(),
        });
    }
    Ok(())
}

/// What `format` did.
#[derive(Debug, PartialEq, Eq)]
pub enum FormatOutcome {
    Formatted(PathBuf),
    /// Already formatted with this cluster and node id, and `--ignore-formatted` was given.
    AlreadyFormatted(PathBuf),
}

/// `gracchus format -t <id>`: writes `meta.properties` into `log.dirs`. A formatted
/// directory is refused unless `ignore_formatted`, and even then only if it already belongs
/// to this cluster and node (as Kafka's `Formatter` verifies the ensemble first).
pub fn format(
    config: &BrokerConfig,
    cluster_id: &str,
    ignore_formatted: bool,
) -> Result<FormatOutcome, MetaPropertiesError> {
    check_cluster_id(cluster_id).map_err(|reason| MetaPropertiesError::InvalidClusterId {
        id: cluster_id.to_string(),
        reason,
    })?;
    let dir = &config.log_dirs;
    if let Some(existing) = read(dir)? {
        verify(
            dir,
            &existing,
            config.node_id,
            Some((cluster_id, "--cluster-id")),
        )?;
        if !ignore_formatted {
            return Err(MetaPropertiesError::AlreadyFormatted { dir: dir.clone() });
        }
        return Ok(FormatOutcome::AlreadyFormatted(dir.clone()));
    }
    write(dir, &new_properties(cluster_id, config.node_id))?;
    Ok(FormatOutcome::Formatted(dir.clone()))
}

/// Start-up: the cluster id this node belongs to, formatting its log directory first when
/// that is safe.
/// - Formatted: its id, after checking `node.id` and `CLUSTER_ID` (if set) agree.
/// - Not formatted, `CLUSTER_ID` set: formatted with it.
/// - Not formatted, the quorum is this node alone: formatted with a random id (the
///   embedded default; Kafka would refuse).
/// - Otherwise refused: nodes that each drew their own id would never form one cluster.
pub fn prepare(config: &BrokerConfig) -> Result<String, MetaPropertiesError> {
    let dir = &config.log_dirs;
    let from_env = config.cluster_id_env.as_deref();
    if let Some(existing) = read(dir)? {
        verify(
            dir,
            &existing,
            config.node_id,
            from_env.map(|id| (id, CLUSTER_ID_ENV)),
        )?;
        return Ok(existing.cluster_id);
    }
    let cluster_id = match from_env {
        Some(id) => id.to_string(),
        None if is_alone(config) => random_cluster_id(),
        None => return Err(MetaPropertiesError::NotFormatted { dir: dir.clone() }),
    };
    tracing::info!(dir = %dir.display(), %cluster_id, "formatting the log directory");
    write(dir, &new_properties(&cluster_id, config.node_id))?;
    Ok(cluster_id)
}

/// True when this node is the whole quorum: no voters and no bootstrap servers (the
/// embedded single voter), or exactly one voter, itself.
fn is_alone(config: &BrokerConfig) -> bool {
    let voters = &config.quorum_voters;
    let only_self = voters.len() == 1 && voters.contains_key(&config.node_id);
    config.quorum_bootstrap_servers.is_empty() && (voters.is_empty() || only_self)
}

fn new_properties(cluster_id: &str, node_id: NodeId) -> MetaProperties {
    MetaProperties {
        cluster_id: cluster_id.to_string(),
        node_id,
        directory_id: Some(kafka_uuid_string(&uuid::Uuid::new_v4())),
    }
}

/// The stored ids must match the configured node id and, if one is given, the cluster id.
fn verify(
    dir: &Path,
    stored: &MetaProperties,
    node_id: NodeId,
    expected_cluster: Option<(&str, &'static str)>,
) -> Result<(), MetaPropertiesError> {
    let path = dir.join(META_PROPERTIES);
    if let Some((expected, source_of_expected)) = expected_cluster
        && stored.cluster_id != expected
    {
        return Err(MetaPropertiesError::ClusterIdMismatch {
            path,
            stored: stored.cluster_id.clone(),
            expected: expected.to_string(),
            source_of_expected,
        });
    }
    if stored.node_id != node_id {
        return Err(MetaPropertiesError::NodeIdMismatch {
            path,
            stored: stored.node_id,
            configured: node_id,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "meta_properties_tests.rs"]
mod tests;
