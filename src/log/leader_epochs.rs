//! The leader-epoch cache of one partition: which leader epoch started at which offset
//! (Kafka's `LeaderEpochFileCache`), and its `leader-epoch-checkpoint` file beside the
//! segments, in Kafka's text format:
//!
//! ```text
//! 0            <- version
//! 2            <- number of entries
//! 0 0          <- epoch, start offset
//! 3 120
//! ```
//!
//! Entries are strictly increasing in both epoch and start offset. A partition records an
//! epoch when it becomes leader (at its log end offset) and when it appends a batch of an
//! epoch it has not recorded; truncation at either end trims the entries as Kafka does.
//! The file is published durably (`durable::publish_file`): in the background after an
//! append or a new leadership, at once after a truncation, and before the log creates a
//! segment (`epoch_checkpoint`); a missing or unreadable file is rebuilt from the batch
//! headers.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use super::durable::publish_file;

/// Kafka's name for the file, in the partition directory.
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const CHECKPOINT_VERSION: i32 = 0;
/// Bounds what a checkpoint file may claim, so a corrupt count cannot allocate wildly.
const ENTRIES_MAX: usize = 1 << 20;

/// Leader epoch `epoch` started at offset `start_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|entry| entry.epoch)
    }

    /// Records that `epoch` starts at `start_offset` (Kafka's `assign`). Entries that
    /// would break monotonicity (an epoch at or above `epoch`, or a start at or above
    /// `start_offset`) are removed first. Negative values and a re-assign of the latest
    /// epoch at a later offset change nothing. True if the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        let needed = self
            .entries
            .last()
            .is_none_or(|latest| latest.epoch != epoch || start_offset < latest.start_offset);
        if !needed {
            return false;
        }
        let keep = self
            .entries
            .iter()
            .take_while(|entry| entry.epoch < epoch && entry.start_offset < start_offset)
            .count();
        if self.entries.len() - keep > 1
            || self
                .entries
                .get(keep)
                .is_some_and(|e| e.start_offset != start_offset)
        {
            tracing::warn!(
                epoch,
                start_offset,
                removed = ?&self.entries[keep..],
                "new leader epoch entry removes conflicting entries"
            );
        }
        self.entries.truncate(keep);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        debug_assert!(self.is_monotonic());
        true
    }

    /// A batch found in the log while loading: records its epoch if it is newer than every
    /// cached one (the checkpoint is published after the append, so a crash between the two
    /// loses the entry; Kafka's segment recovery assigns each recovered batch's epoch the
    /// same way). Older epochs change nothing: the scan only adds what the file missed.
    /// True if the cache changed.
    pub fn assign_newer(&mut self, epoch: i32, base_offset: i64) -> bool {
        if self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        self.assign(epoch, base_offset)
    }

    /// Removes the entries starting at or after `end_offset` (the log was truncated
    /// there). True if the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self
            .entries
            .iter()
            .take_while(|entry| entry.start_offset < end_offset)
            .count();
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start_offset`: entries starting at or before it are removed,
    /// and the last of them is kept, moved to `start_offset` (Kafka's `truncateFromStart`).
    /// True if the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let below = self
            .entries
            .iter()
            .take_while(|entry| entry.start_offset <= start_offset)
            .count();
        if below == 0 {
            return false;
        }
        let epoch = self.entries[below - 1].epoch;
        let moved = EpochEntry {
            epoch,
            start_offset,
        };
        if below == 1 && self.entries[0] == moved {
            return false;
        }
        self.entries.drain(..below - 1);
        self.entries[0] = moved;
        debug_assert!(self.is_monotonic());
        true
    }

    /// Kafka's `endOffsetFor` (OffsetForLeaderEpoch): the largest epoch at or below
    /// `requested` this log has, and the offset where the next epoch starts (`log_end` for
    /// the latest epoch). `(-1, -1)` if `requested` is -1, above every epoch, or the cache
    /// is empty; a `requested` older than every entry answers itself with the first
    /// entry's start.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (-1, -1);
        match self.entries.last() {
            None => return UNDEFINED,
            Some(_) if requested < 0 => return UNDEFINED,
            Some(latest) if latest.epoch == requested => return (requested, log_end),
            Some(_) => {}
        }
        let higher = self
            .entries
            .iter()
            .position(|entry| entry.epoch > requested);
        match higher {
            None => UNDEFINED,
            Some(0) => (requested, self.entries[0].start_offset),
            Some(index) => (
                self.entries[index - 1].epoch,
                self.entries[index].start_offset,
            ),
        }
    }

    /// The epoch whose batches hold `offset` (Kafka's `epochForOffset`): the last entry
    /// starting at or before it; `None` below the first entry.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        (self.entries.iter())
            .take_while(|entry| entry.start_offset <= offset)
            .last()
            .map(|entry| entry.epoch)
    }

    /// The epoch of the log's first offset, as ListOffsets answers for EARLIEST (Kafka's
    /// `UnifiedLog.fetchOffsetByTimestamp`): the first entry's, if it starts at or before
    /// `log_start` (after retention it is moved to the log start).
    pub fn epoch_at_log_start(&self, log_start: i64) -> Option<i32> {
        (self.entries.first())
            .filter(|entry| entry.start_offset <= log_start)
            .map(|entry| entry.epoch)
    }

    fn is_monotonic(&self) -> bool {
        self.entries.windows(2).all(|pair| {
            pair[0].epoch < pair[1].epoch && pair[0].start_offset < pair[1].start_offset
        })
    }

    /// The checkpoint file's text.
    pub fn encode(&self) -> String {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{} {}", entry.epoch, entry.start_offset);
        }
        text
    }

    /// Parses a checkpoint file's text; refuses a wrong version, a count that does not
    /// match, a malformed line and entries that are not strictly increasing.
    pub fn decode(text: &str) -> Result<LeaderEpochCache, String> {
        let mut lines = text.lines();
        let mut next = |what: &str| lines.next().ok_or_else(|| format!("missing {what}"));
        let version = next("version")?;
        if version.trim() != CHECKPOINT_VERSION.to_string() {
            return Err(format!("unsupported version {version:?}"));
        }
        let count: usize = (next("entry count")?.trim().parse())
            .map_err(|error| format!("bad entry count: {error}"))?;
        if count > ENTRIES_MAX {
            return Err(format!("{count} entries is over the limit {ENTRIES_MAX}"));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let line = next("entry")?;
            let mut fields = line.split_whitespace();
            let epoch = fields.next().and_then(|field| field.parse().ok());
            let start_offset = fields.next().and_then(|field| field.parse().ok());
            match (epoch, start_offset, fields.next()) {
                (Some(epoch), Some(start_offset), None) if epoch >= 0 && start_offset >= 0 => {
                    entries.push(EpochEntry {
                        epoch,
                        start_offset,
                    });
                }
                _ => return Err(format!("malformed entry {line:?}")),
            }
        }
        if lines.any(|line| !line.trim().is_empty()) {
            return Err("more entries than the count says".into());
        }
        let cache = LeaderEpochCache { entries };
        if !cache.is_monotonic() {
            return Err("entries are not strictly increasing".into());
        }
        Ok(cache)
    }

    /// The cache in `dir`'s checkpoint: `Ok(None)` if there is no file, `Err` if it
    /// cannot be read or parsed.
    pub fn load(dir: &Path) -> io::Result<Option<LeaderEpochCache>> {
        let text = match std::fs::read_to_string(dir.join(LEADER_EPOCH_CHECKPOINT_FILE)) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        LeaderEpochCache::decode(&text)
            .map(Some)
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))
    }

    /// Publishes the checkpoint in `dir` durably (write, fsync, rename, fsync the dir).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        publish_file(dir, LEADER_EPOCH_CHECKPOINT_FILE, self.encode().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_support::epoch_cache;

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        (cache.entries().iter())
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect()
    }

    #[test]
    fn assign_keeps_entries_increasing_and_replaces_conflicts() {
        let mut epochs = epoch_cache(&[(0, 0), (2, 10)]);
        assert!(!epochs.assign(2, 15), "same epoch later: unchanged");
        assert!(!epochs.assign(-1, 20), "no epoch");
        assert!(epochs.assign(3, 20));
        assert_eq!(pairs(&epochs), vec![(0, 0), (2, 10), (3, 20)]);
        // A new epoch at the same log end replaces the one that never got a batch.
        assert!(epochs.assign(4, 20));
        assert_eq!(pairs(&epochs), vec![(0, 0), (2, 10), (4, 20)]);
        // A lower epoch or an earlier offset removes what conflicts with it (Kafka).
        assert!(epochs.assign(1, 5));
        assert_eq!(pairs(&epochs), vec![(0, 0), (1, 5)]);
        assert_eq!(epochs.latest_epoch(), Some(1));
    }

    #[test]
    fn end_offsets_answer_as_kafka_does() {
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, 10), (-1, -1));
        let epochs = epoch_cache(&[(2, 5), (4, 10), (7, 30)]);
        assert_eq!(epochs.end_offset_for(7, 42), (7, 42));
        assert_eq!(epochs.end_offset_for(4, 42), (4, 30));
        assert_eq!(
            epochs.end_offset_for(5, 42),
            (4, 30),
            "an epoch this log never had"
        );
        assert_eq!(
            epochs.end_offset_for(1, 42),
            (1, 5),
            "older than every entry"
        );
        assert_eq!(
            epochs.end_offset_for(8, 42),
            (-1, -1),
            "newer than every entry"
        );
        assert_eq!(epochs.end_offset_for(-1, 42), (-1, -1));
    }

    #[test]
    fn the_epoch_holding_an_offset_is_the_last_entry_starting_at_or_before_it() {
        let epochs = epoch_cache(&[(2, 5), (4, 10), (7, 30)]);
        assert_eq!(epochs.epoch_for_offset(4), None, "below every entry");
        assert_eq!(epochs.epoch_for_offset(5), Some(2));
        assert_eq!(epochs.epoch_for_offset(9), Some(2));
        assert_eq!(epochs.epoch_for_offset(10), Some(4));
        assert_eq!(epochs.epoch_for_offset(1_000), Some(7));
        assert_eq!(LeaderEpochCache::default().epoch_for_offset(0), None);
        assert_eq!(epochs.epoch_at_log_start(5), Some(2));
        assert_eq!(
            epochs.epoch_at_log_start(12),
            Some(2),
            "the first entry's epoch"
        );
        assert_eq!(epochs.epoch_at_log_start(0), None, "the cache starts later");
    }

    #[test]
    fn batches_found_after_the_checkpoint_add_only_newer_epochs() {
        let mut epochs = epoch_cache(&[(0, 0), (3, 10)]);
        assert!(!epochs.assign_newer(3, 12), "the latest epoch, later");
        assert!(
            !epochs.assign_newer(1, 14),
            "an older epoch never removes entries"
        );
        assert!(epochs.assign_newer(5, 20));
        assert!(!epochs.assign_newer(5, 25));
        assert!(epochs.assign_newer(6, 30));
        assert_eq!(pairs(&epochs), vec![(0, 0), (3, 10), (5, 20), (6, 30)]);
        let mut empty = LeaderEpochCache::default();
        assert!(empty.assign_newer(2, 7));
        assert_eq!(pairs(&empty), vec![(2, 7)]);
    }

    #[test]
    fn truncation_trims_both_ends() {
        let mut epochs = epoch_cache(&[(0, 0), (2, 10), (5, 30)]);
        assert!(!epochs.truncate_from_end(31));
        assert!(epochs.truncate_from_end(30));
        assert_eq!(pairs(&epochs), vec![(0, 0), (2, 10)]);
        assert!(epochs.truncate_from_start(12));
        assert_eq!(pairs(&epochs), vec![(2, 12)]);
        assert!(!epochs.truncate_from_start(12));
        assert!(!epochs.truncate_from_start(3));
        assert!(epochs.truncate_from_end(0));
        assert_eq!(epochs.latest_epoch(), None);
    }

    #[test]
    fn the_checkpoint_round_trips_durably_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LeaderEpochCache::load(dir.path()).unwrap(), None);
        let epochs = epoch_cache(&[(0, 0), (3, 120)]);
        assert_eq!(epochs.encode(), "0\n2\n0 0\n3 120\n");
        epochs.write(dir.path()).unwrap();
        assert_eq!(LeaderEpochCache::load(dir.path()).unwrap(), Some(epochs));
        assert!(!dir.path().join("leader-epoch-checkpoint.tmp").exists());
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n1 5\n",
            "0\n1\n0 x\n",
            "0\n1\n-1 0\n",
            "0\n2\n3 10\n2 20\n",
            "0\n99999999999\n",
        ] {
            assert!(LeaderEpochCache::decode(bad).is_err(), "{bad:?}");
        }
        std::fs::write(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE), "junk").unwrap();
        assert!(LeaderEpochCache::load(dir.path()).is_err());
    }
}
