//! The Raft log, vote and commit index in redb (`raft.redb` in the metadata directory).
//!
//! Every value is checksummed ([`super::types::encode`]); a value that fails its checksum
//! is a storage error that stops the Raft node, never a silently different entry. Each
//! append, truncate, purge and vote is one redb write transaction, durable at commit
//! (redb's default `Durability::Immediate` fsyncs), before openraft is told it is done.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, OptionalSend, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::types::{LogId, StorageError, TypeConfig, decode, encode};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
/// A voter rebuilt from an empty directory votes only once it has this much of the log.
const CATCH_UP_TO: &str = "catch_up_to";

/// The log store; cheap to clone (one shared database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn read_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&error).into()
}

fn write_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&error).into()
}

impl LogStore {
    /// Opens the store on `db`, creating its tables so that readers never meet a missing one.
    pub fn open(db: Arc<Database>) -> Result<LogStore, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(LogStore { db })
    }

    /// True if the store holds no log: no entry and nothing purged (a vote alone may be
    /// there: a rebuilt voter saves the leader's vote before the first entries arrive).
    pub fn has_no_log(&self) -> Result<bool, redb::Error> {
        let txn = self.db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let meta = txn.open_table(META)?;
        Ok(log.first()?.is_none() && meta.get(LAST_PURGED)?.is_none())
    }

    /// The durable catch-up target of a rebuilt voter (0: none).
    pub fn catch_up_to(&self) -> Result<u64, StorageError> {
        Ok(self.meta::<u64>(CATCH_UP_TO)?.unwrap_or(0))
    }

    pub fn set_catch_up_to(&self, index: u64) -> Result<(), StorageError> {
        self.put_meta(CATCH_UP_TO, &index)
    }

    /// True if nothing was ever stored: no vote, no entry, no purge (a fresh node).
    pub fn is_empty(&self) -> Result<bool, redb::Error> {
        let txn = self.db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let meta = txn.open_table(META)?;
        Ok(log.first()?.is_none() && meta.first()?.is_none())
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(META).map_err(read_error)?;
        match table.get(key).map_err(read_error)? {
            Some(value) => Ok(Some(decode(value.value()).map_err(read_error)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = encode(value);
        let txn = self.db.begin_write().map_err(write_error)?;
        {
            let mut table = txn.open_table(META).map_err(write_error)?;
            table.insert(key, bytes.as_slice()).map_err(write_error)?;
        }
        txn.commit().map_err(write_error)
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(LOG).map_err(read_error)?;
        match table.last().map_err(read_error)? {
            Some((_, value)) => {
                let entry: Entry<TypeConfig> = decode(value.value()).map_err(read_error)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    fn entries(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(LOG).map_err(read_error)?;
        let mut entries = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(read_error)? {
            let (index, value) = item.map_err(read_error)?;
            let entry: Entry<TypeConfig> = decode(value.value()).map_err(read_error)?;
            if entry.log_id.index != index.value() {
                return Err(read_error(std::io::Error::other(format!(
                    "raft log entry stored at {} names index {}",
                    index.value(),
                    entry.log_id.index
                ))));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Removes the entries in `range` (with the purge marker when purging).
    fn remove(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
        purged: Option<&LogId>,
    ) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(write_error)?;
        {
            let mut table = txn.open_table(LOG).map_err(write_error)?;
            table
                .retain_in::<u64, _>((start, end), |_, _| false)
                .map_err(write_error)?;
            if let Some(purged) = purged {
                let mut meta = txn.open_table(META).map_err(write_error)?;
                meta.insert(LAST_PURGED, encode(purged).as_slice())
                    .map_err(write_error)?;
            }
        }
        txn.commit().map_err(write_error)
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let (start, end) = bounds(&range);
        tokio::task::block_in_place(|| self.entries(start, end))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        tokio::task::block_in_place(|| {
            let last_purged_log_id: Option<LogId> = self.meta(LAST_PURGED)?;
            let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        tokio::task::block_in_place(|| self.put_meta(VOTE, vote))
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        tokio::task::block_in_place(|| self.meta(VOTE))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        tokio::task::block_in_place(|| self.put_meta(COMMITTED, &committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(tokio::task::block_in_place(|| self.meta::<Option<LogId>>(COMMITTED))?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| (entry.log_id.index, encode(&entry)))
            .collect();
        let written = tokio::task::block_in_place(|| {
            let txn = self.db.begin_write().map_err(write_error)?;
            {
                let mut table = txn.open_table(LOG).map_err(write_error)?;
                for (index, bytes) in &encoded {
                    table
                        .insert(*index, bytes.as_slice())
                        .map_err(write_error)?;
                }
            }
            txn.commit().map_err(write_error)
        });
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tokio::task::block_in_place(|| {
            self.remove(Bound::Included(log_id.index), Bound::Unbounded, None)
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tokio::task::block_in_place(|| {
            self.remove(
                Bound::Unbounded,
                Bound::Included(log_id.index),
                Some(&log_id),
            )
        })
    }
}
