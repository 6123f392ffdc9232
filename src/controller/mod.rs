//! The metadata controller: the one writer of the metadata image.
//!
//! Callers submit [`MetadataCommand`]s; the controller makes each durable in its command
//! log, applies it to the image and publishes the new image on a watch channel. Today it
//! is a single voter whose log is a local file ([`store`]); the cluster issue replaces
//! the store with a Raft log (openraft) behind the same `submit` / `image` / `subscribe`
//! interface, so nothing above this module changes.

pub mod commands;
pub mod image;
pub mod placement;
pub mod store;
pub mod topic_admin;
pub mod topic_rules;

use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use crate::types::NodeId;

pub use commands::{CommandOutcome, MetadataCommand};
pub use image::{
    BrokerEndpoint, BrokerRegistration, MetadataImage, NO_LEADER, PartitionImage, TopicImage,
};
use store::CommandLog;

#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("topic deletion is disabled (delete.topic.enable=false)")]
    DeletionDisabled,
    #[error("broker {0} is not registered")]
    UnknownBroker(NodeId),
    /// A fencing or unfencing command meant for another registration of the broker.
    #[error("broker {node_id}: epoch {epoch} is stale (the registration's epoch is {current})")]
    StaleBrokerEpoch {
        node_id: NodeId,
        epoch: i64,
        current: i64,
    },
    #[error("metadata log I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata log is corrupt: {0}")]
    Corrupt(String),
    /// A complete record that fails its checksum or does not apply: start-up stops here.
    #[error(
        "metadata log {path} is corrupt at byte {offset}: {reason}; refusing to start \
         (restore the file, or move it aside to rebuild the metadata knowingly)"
    )]
    CorruptRecord {
        path: String,
        offset: u64,
        reason: String,
    },
    /// The append failed and was rolled back: the command was neither applied nor stored.
    #[error("metadata log {path}: append failed: {source}")]
    AppendFailed {
        path: String,
        source: std::io::Error,
    },
    /// A failed append could not be rolled back; every later append is refused.
    #[error("metadata log is unusable: {0}")]
    LogPoisoned(String),
}

pub struct Controller {
    log: Mutex<CommandLog>,
    image: watch::Sender<Arc<MetadataImage>>,
}

impl Controller {
    /// Opens (or creates) the command log under `dir` and replays it into the image.
    pub fn open(dir: &Path) -> Result<Controller, ControllerError> {
        let (log, image) = CommandLog::open(dir)?;
        let (sender, _) = watch::channel(Arc::new(image));
        Ok(Controller {
            log: Mutex::new(log),
            image: sender,
        })
    }

    /// The current image; cheap (an `Arc` clone), safe to call on every request.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// A receiver that sees every new image (for reconcilers).
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.subscribe()
    }

    /// Validates and applies `command`; returns once it is durable and visible.
    /// Commands are applied one at a time, so two racing creates of one topic see each other.
    pub async fn submit(
        &self,
        command: MetadataCommand,
    ) -> Result<CommandOutcome, ControllerError> {
        let mut log = self.log.lock().await;
        let mut next = MetadataImage::clone(&self.image());
        // The entry's index: apply reads it (broker epochs) and never sets it.
        next.applied_index += 1;
        let outcome = commands::apply(&mut next, &command)?;
        log.append(&command)?;
        self.image.send_replace(Arc::new(next));
        Ok(outcome)
    }
}
