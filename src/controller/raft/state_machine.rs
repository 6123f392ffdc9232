//! The state machine: the metadata image, built by applying committed entries in order.
//!
//! The image lives in memory and is published on a watch channel after every applied
//! batch (every node, voter or not, publishes what it applied, and only that). Its durable
//! form is the snapshot in redb: openraft snapshots it every so many entries, purges the log
//! behind, and on restart the node loads the snapshot and re-applies the committed tail.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{Applied, LogId, Membership, StorageError, TypeConfig, decode, encode};
use crate::controller::commands;
use crate::controller::image::MetadataImage;
use crate::controller::rejection::Rejection;
use crate::types::NodeId;

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

/// Publishes images with the current Raft leader as `controller_id`. One lock orders the
/// two writers (applies and leader changes), so a stale leader never overwrites a new one.
pub struct Publisher {
    sender: watch::Sender<Arc<MetadataImage>>,
    leader: Mutex<NodeId>,
}

impl Publisher {
    pub fn new() -> Publisher {
        Publisher {
            sender: watch::channel(Arc::new(MetadataImage {
                controller_id: -1,
                ..MetadataImage::default()
            }))
            .0,
            leader: Mutex::new(-1),
        }
    }

    pub fn publish(&self, image: &MetadataImage) {
        let leader = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        let mut image = image.clone();
        image.controller_id = *leader;
        self.sender.send_replace(Arc::new(image));
    }

    pub fn set_leader(&self, node_id: NodeId) {
        let mut leader = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        if *leader != node_id {
            *leader = node_id;
            self.sender.send_modify(|image| {
                Arc::make_mut(image).controller_id = node_id;
            });
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.sender.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.sender.subscribe()
    }
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher::new()
    }
}

/// What a snapshot holds: the image and the Raft position it reflects.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    image: MetadataImage,
    last_applied: Option<LogId>,
    membership: Membership,
}

pub struct StateMachine {
    state: State,
    db: Arc<Database>,
    publisher: Arc<Publisher>,
    /// Distinguishes snapshots built at the same log id.
    snapshots_built: u64,
}

fn sm_read(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&error).into()
}

fn snapshot_write(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &error).into()
}

impl StateMachine {
    /// Opens the state machine from the stored snapshot (or empty) and publishes it.
    pub fn open(
        db: Arc<Database>,
        publisher: Arc<Publisher>,
    ) -> Result<StateMachine, StorageError> {
        let txn = db.begin_write().map_err(snapshot_write)?;
        txn.open_table(SNAPSHOT).map_err(snapshot_write)?;
        txn.commit().map_err(snapshot_write)?;
        let mut machine = StateMachine {
            state: State::default(),
            db,
            publisher,
            snapshots_built: 0,
        };
        if let Some(snapshot) = machine.stored_snapshot()? {
            machine.state = decode(snapshot.snapshot.get_ref()).map_err(sm_read)?;
        }
        machine.publisher.publish(&machine.state.image);
        Ok(machine)
    }

    fn stored_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let txn = self.db.begin_read().map_err(sm_read)?;
        let table = txn.open_table(SNAPSHOT).map_err(sm_read)?;
        let (Some(meta), Some(data)) = (
            table.get(SNAPSHOT_META).map_err(sm_read)?,
            table.get(SNAPSHOT_DATA).map_err(sm_read)?,
        ) else {
            return Ok(None);
        };
        let meta: SnapshotMeta<u64, openraft::BasicNode> = decode(meta.value()).map_err(sm_read)?;
        // The data is checked here too, so a damaged snapshot is never sent to a follower.
        decode::<State>(data.value()).map_err(sm_read)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.value().to_vec())),
        }))
    }
}

/// Stores a snapshot unless the stored one is at least as new: openraft builds snapshots
/// in a task of their own, and a leader's newer snapshot may be installed meanwhile; the
/// older one must not overwrite it (the log behind the newer one is already purged).
fn store_snapshot(
    db: &Database,
    meta: &SnapshotMeta<u64, openraft::BasicNode>,
    data: &[u8],
) -> Result<(), StorageError> {
    let txn = db.begin_write().map_err(snapshot_write)?;
    {
        let mut table = txn.open_table(SNAPSHOT).map_err(snapshot_write)?;
        let stored = match table.get(SNAPSHOT_META).map_err(snapshot_write)? {
            Some(bytes) => {
                let stored: SnapshotMeta<u64, openraft::BasicNode> =
                    decode(bytes.value()).map_err(sm_read)?;
                stored.last_log_id
            }
            None => None,
        };
        if stored >= meta.last_log_id && stored.is_some() {
            tracing::debug!(?stored, new = ?meta.last_log_id, "kept the newer stored snapshot");
            return Ok(());
        }
        table
            .insert(SNAPSHOT_META, encode(meta).as_slice())
            .map_err(snapshot_write)?;
        table.insert(SNAPSHOT_DATA, data).map_err(snapshot_write)?;
    }
    txn.commit().map_err(snapshot_write)
}

/// Applies one committed command, on a voter's state machine and on an observer alike: the
/// image's applied index is the entry's Raft index (the metadata offset, which is also a
/// new broker's epoch). A command that fails is a no-op whose error goes back to the
/// proposer.
pub fn apply_command(
    image: &mut MetadataImage,
    index: u64,
    command: &commands::MetadataCommand,
) -> Applied {
    image.applied_index = index;
    let applied = commands::apply(image, command).map_err(|error| {
        tracing::debug!(index, %error, "metadata command rejected at apply");
        Rejection::from(&error)
    });
    image.applied_index = index;
    applied
}

pub struct SnapshotBuilder {
    state: State,
    db: Arc<Database>,
    id: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = encode(&self.state);
        let last = self.state.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.state.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                last.map_or(0, |id| id.leader_id.term),
                last.map_or(0, |id| id.index),
                self.id
            ),
        };
        tokio::task::block_in_place(|| store_snapshot(&self.db, &meta, &data))?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "metadata snapshot written");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            self.state.last_applied = Some(entry.log_id);
            let applied = match &entry.payload {
                EntryPayload::Blank => Ok(commands::CommandOutcome::Done),
                EntryPayload::Normal(command) => {
                    apply_command(&mut self.state.image, entry.log_id.index, command)
                }
                EntryPayload::Membership(membership) => {
                    self.state.membership = Membership::new(Some(entry.log_id), membership.clone());
                    Ok(commands::CommandOutcome::Done)
                }
            };
            self.state.image.applied_index = entry.log_id.index;
            results.push(applied);
        }
        self.publisher.publish(&self.state.image);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            state: self.state.clone(),
            db: self.db.clone(),
            id: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: State = decode(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e))
        })?;
        tokio::task::block_in_place(|| store_snapshot(&self.db, meta, &data))?;
        tracing::info!(snapshot = %meta.snapshot_id, "installed a metadata snapshot from the leader");
        self.state = state;
        self.publisher.publish(&self.state.image);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        tokio::task::block_in_place(|| self.stored_snapshot())
    }
}
