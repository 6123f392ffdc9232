//! Publishing a partition's `leader-epoch-checkpoint` off the produce and replication path
//! (Kafka's KAFKA-15046). Writing it is a durable publish (write, fsync, rename, fsync the
//! directory): done inline on the task that appended, a leader change over a thousand
//! partitions cost each follower two fsyncs per partition inside its fetcher.
//!
//! Each partition has one [`EpochCheckpoint`]: the newest cache not yet published (one
//! entry, replaced by every newer change: coalescing) and the version last published. A
//! change is handed to the process's [`EpochCheckpointWriter`], one blocking thread that
//! publishes the newest pending cache of each queued partition; a partition is queued at
//! most once, so the queue is bounded by the number of partitions.
//!
//! Durability where it matters stays synchronous ([`EpochCheckpoint::publish`]):
//! - recovery reads the file, then scans only the active segment for epochs it missed,
//!   so the log publishes what is pending before it creates a segment (a roll, a restart
//!   of the log: `PartitionLog::before_new_segment`);
//! - truncations publish their own change at once (a later epoch may then start below
//!   entries the file still has);
//! - clean shutdown flushes what is pending.
//!
//! Versions only go up on disk: every publish holds `written` for its whole write and
//! skips a cache no newer than the one written. Once the partition is closed (deleted, or
//! dropped), nothing is written again, so no late write re-creates a file in a directory
//! being removed or set aside.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::leader_epochs::LeaderEpochCache;

/// Called with the error of a failed background publish (the partition reports it).
pub type FailureReport = Box<dyn Fn(&io::Error) + Send + Sync>;

/// A version of a partition's cache: versions rise with every change.
type Versioned = (u64, LeaderEpochCache);

/// One partition's checkpoint: what is pending and what is published.
pub struct EpochCheckpoint {
    dir: PathBuf,
    /// Lock order: `written`, then `pending`. Held for the whole of a publish, so publishes
    /// are ordered and `close` can wait for one to finish.
    written: Mutex<u64>,
    /// The newest change not yet taken by a publish.
    pending: Mutex<Option<Versioned>>,
    /// True while this checkpoint is in the writer's queue: one entry per partition.
    queued: AtomicBool,
    /// Set by `close`: nothing is published after it.
    closed: AtomicBool,
    /// Tests: changes stay pending until a synchronous publish (the writer is paused).
    held: AtomicBool,
    writer: Arc<EpochCheckpointWriter>,
    report: FailureReport,
}

impl fmt::Debug for EpochCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochCheckpoint")
            .field("dir", &self.dir)
            .field("written", &self.written_version())
            .finish_non_exhaustive()
    }
}

impl EpochCheckpoint {
    /// The checkpoint in `dir`, whose file holds version 0 (as the partition loaded it).
    pub fn new(
        dir: PathBuf,
        writer: Arc<EpochCheckpointWriter>,
        report: FailureReport,
    ) -> Arc<EpochCheckpoint> {
        Arc::new(EpochCheckpoint {
            dir,
            written: Mutex::new(0),
            pending: Mutex::new(None),
            queued: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            held: AtomicBool::new(false),
            writer,
            report,
        })
    }

    /// Hands `epochs` at `version` to the background writer; an older pending change is
    /// dropped. Never waits for a disk write: called under the partition lock.
    pub fn schedule(self: &Arc<Self>, version: u64, epochs: LeaderEpochCache) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending
                .as_ref()
                .is_some_and(|(queued, _)| *queued >= version)
            {
                return;
            }
            *pending = Some((version, epochs));
        }
        if !self.held.load(Ordering::Relaxed) && !self.queued.swap(true, Ordering::AcqRel) {
            self.writer.enqueue(Arc::clone(self));
        }
    }

    /// Publishes now, durably, the newest of `change` and what is pending (nothing if the
    /// file already has a version that new, or once closed). On failure the change stays
    /// pending, for the next publish to retry.
    pub fn publish(&self, change: Option<Versioned>) -> io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let pending = self.take_pending();
        let newest = match (change, pending) {
            (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let Some((version, epochs)) = newest else {
            return Ok(());
        };
        if version <= *written || self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        match epochs.write(&self.dir) {
            Ok(()) => {
                *written = version;
                Ok(())
            }
            Err(error) => {
                self.restore_pending((version, epochs));
                Err(error)
            }
        }
    }

    /// Publishes what is pending, if anything: before a new segment, at clean shutdown.
    pub fn flush(&self) -> io::Result<()> {
        self.publish(None)
    }

    /// No publish after this returns (one under way is waited for): the directory is
    /// about to be deleted, or the partition is gone.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(self.written.lock().unwrap_or_else(|p| p.into_inner()));
        self.take_pending();
    }

    /// The version the file holds.
    pub fn written_version(&self) -> u64 {
        *self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tests: stop handing changes to the writer; they wait for a synchronous publish.
    pub fn hold(&self) {
        self.held.store(true, Ordering::Relaxed);
    }

    /// The writer's turn: publish the newest pending change, report a failure.
    fn publish_queued(&self) {
        // Cleared first: a change from now on queues the partition again.
        self.queued.store(false, Ordering::Release);
        if self.held.load(Ordering::Relaxed) {
            // Held after it was queued (tests): the change waits for a synchronous publish,
            // whenever the writer's thread gets to the entry.
            return;
        }
        if let Err(error) = self.flush() {
            (self.report)(&error);
        }
    }

    fn take_pending(&self) -> Option<Versioned> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// A failed change goes back unless a newer one arrived meanwhile; it is not queued
    /// again (a full disk would spin): the next change, roll or shutdown retries it.
    fn restore_pending(&self, failed: Versioned) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_none() {
            *pending = Some(failed);
        }
    }
}

/// How queued checkpoints get published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// By the writer's own thread.
    Background,
    /// By `drain` on the caller's thread (tests).
    Manual,
    /// At once, on the thread that changed the cache: only if the thread could not start.
    Inline,
}

/// The queue of partitions with a pending checkpoint, and the thread that publishes them.
pub struct EpochCheckpointWriter {
    queue: Mutex<VecDeque<Arc<EpochCheckpoint>>>,
    ready: Condvar,
    mode: Mode,
}

impl EpochCheckpointWriter {
    /// The process's writer; its thread starts on first use.
    pub fn global() -> Arc<EpochCheckpointWriter> {
        static WRITER: OnceLock<Arc<EpochCheckpointWriter>> = OnceLock::new();
        Arc::clone(WRITER.get_or_init(Self::start))
    }

    /// A writer that publishes only when `drain` is called (tests).
    pub fn manual() -> Arc<EpochCheckpointWriter> {
        Arc::new(Self::with_mode(Mode::Manual))
    }

    fn with_mode(mode: Mode) -> EpochCheckpointWriter {
        EpochCheckpointWriter {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            mode,
        }
    }

    fn start() -> Arc<EpochCheckpointWriter> {
        let writer = Arc::new(Self::with_mode(Mode::Background));
        let running = Arc::clone(&writer);
        let spawned = std::thread::Builder::new()
            .name("epoch-checkpoint".into())
            .spawn(move || running.run());
        match spawned {
            Ok(_) => writer,
            Err(error) => {
                tracing::error!(%error, "no leader-epoch checkpoint thread; writing inline");
                Arc::new(Self::with_mode(Mode::Inline))
            }
        }
    }

    fn enqueue(&self, checkpoint: Arc<EpochCheckpoint>) {
        if self.mode == Mode::Inline {
            checkpoint.publish_queued();
            return;
        }
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(checkpoint);
        self.ready.notify_one();
    }

    /// How many partitions wait for a publish.
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Publishes every queued checkpoint on this thread; returns how many were taken.
    pub fn drain(&self) -> usize {
        let mut taken = 0;
        while let Some(checkpoint) = self.pop(false) {
            checkpoint.publish_queued();
            taken += 1;
        }
        taken
    }

    fn run(&self) {
        while let Some(checkpoint) = self.pop(true) {
            // One thread for every partition: a bug that panics in one publish must not
            // stop the others' (the change stays pending for a roll or shutdown to retry).
            let published = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                checkpoint.publish_queued();
            }));
            if published.is_err() {
                tracing::error!(dir = %checkpoint.dir.display(), "leader-epoch checkpoint publish panicked");
            }
        }
    }

    /// The next queued checkpoint; waits for one if `wait`, else `None` when empty.
    fn pop(&self, wait: bool) -> Option<Arc<EpochCheckpoint>> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(checkpoint) = queue.pop_front() {
                return Some(checkpoint);
            }
            if !wait {
                return None;
            }
            queue = self.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::leader_epochs::LEADER_EPOCH_CHECKPOINT_FILE;
    use crate::log::test_support::epoch_cache;
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;

    fn on_disk(dir: &Path) -> Option<LeaderEpochCache> {
        LeaderEpochCache::load(dir).unwrap()
    }

    fn checkpoint_in(
        dir: &Path,
        writer: &Arc<EpochCheckpointWriter>,
    ) -> (Arc<EpochCheckpoint>, Arc<AtomicUsize>) {
        let failures = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&failures);
        let report: FailureReport = Box::new(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let checkpoint = EpochCheckpoint::new(dir.to_path_buf(), Arc::clone(writer), report);
        (checkpoint, failures)
    }

    #[test]
    fn many_changes_coalesce_into_one_write_of_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let writer = EpochCheckpointWriter::manual();
        let (checkpoint, _) = checkpoint_in(dir.path(), &writer);
        let mut pairs = Vec::new();
        for version in 1..=100u64 {
            pairs.push((version as i32, 10 * version as i64));
            checkpoint.schedule(version, epoch_cache(&pairs));
        }
        assert_eq!(writer.queued(), 1, "one queue entry per partition");
        assert_eq!(
            on_disk(dir.path()),
            None,
            "nothing written before the writer runs"
        );
        assert_eq!(writer.drain(), 1);
        assert_eq!(
            on_disk(dir.path()),
            Some(epoch_cache(&pairs)),
            "the last change wins"
        );
        assert_eq!(checkpoint.written_version(), 100);
        // An older change arriving late is dropped, not written over the newer file.
        checkpoint.schedule(7, epoch_cache(&pairs[..7]));
        writer.drain();
        assert_eq!(on_disk(dir.path()), Some(epoch_cache(&pairs)));
    }

    #[test]
    fn versions_never_go_backwards_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let writer = EpochCheckpointWriter::manual();
        let (checkpoint, _) = checkpoint_in(dir.path(), &writer);
        checkpoint.schedule(1, epoch_cache(&[(1, 0)]));
        // A truncation publishes version 2 at once; the queued version 1 must not follow.
        checkpoint
            .publish(Some((2, epoch_cache(&[(0, 0)]))))
            .unwrap();
        writer.drain();
        assert_eq!(on_disk(dir.path()), Some(epoch_cache(&[(0, 0)])));
        // A synchronous publish older than the pending one writes the pending one.
        checkpoint.schedule(4, epoch_cache(&[(0, 0), (4, 9)]));
        checkpoint
            .publish(Some((3, epoch_cache(&[(0, 0), (3, 5)]))))
            .unwrap();
        assert_eq!(on_disk(dir.path()), Some(epoch_cache(&[(0, 0), (4, 9)])));
        assert_eq!(checkpoint.written_version(), 4);
        assert_eq!(writer.drain(), 1, "its queue entry finds nothing left");
        assert_eq!(checkpoint.written_version(), 4);
    }

    #[test]
    fn flush_publishes_what_is_pending_before_the_writer_does() {
        let dir = tempfile::tempdir().unwrap();
        let writer = EpochCheckpointWriter::manual();
        let (checkpoint, _) = checkpoint_in(dir.path(), &writer);
        checkpoint.hold();
        checkpoint.schedule(1, epoch_cache(&[(3, 40)]));
        assert_eq!(writer.queued(), 0, "held: not handed to the writer");
        checkpoint.flush().unwrap();
        assert_eq!(on_disk(dir.path()), Some(epoch_cache(&[(3, 40)])));
        checkpoint.flush().unwrap(); // nothing pending: no write, no error
        assert_eq!(checkpoint.written_version(), 1);
    }

    #[test]
    fn a_closed_checkpoint_never_writes_into_a_recreated_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("t-0");
        std::fs::create_dir(&dir).unwrap();
        let writer = EpochCheckpointWriter::manual();
        let (checkpoint, failures) = checkpoint_in(&dir, &writer);
        checkpoint.schedule(1, epoch_cache(&[(1, 0)]));
        // Deletion: closed, the directory goes, a new partition of the name takes it.
        checkpoint.close();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        writer.drain();
        checkpoint
            .publish(Some((2, epoch_cache(&[(2, 0)]))))
            .unwrap();
        assert!(!dir.join(LEADER_EPOCH_CHECKPOINT_FILE).exists());
        assert_eq!(failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_failed_background_write_is_reported_and_retried_by_the_next_publish() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("t-0");
        let writer = EpochCheckpointWriter::manual();
        let (checkpoint, failures) = checkpoint_in(&dir, &writer);
        checkpoint.schedule(1, epoch_cache(&[(1, 0)]));
        writer.drain(); // the directory does not exist: the write fails
        assert_eq!(failures.load(Ordering::Relaxed), 1);
        assert_eq!(writer.queued(), 0, "not queued again by itself");
        std::fs::create_dir(&dir).unwrap();
        checkpoint.flush().unwrap();
        assert_eq!(
            on_disk(&dir),
            Some(epoch_cache(&[(1, 0)])),
            "kept pending, then written"
        );
        // A later change after a failure queues the partition again.
        std::fs::remove_dir_all(&dir).unwrap();
        checkpoint.schedule(2, epoch_cache(&[(2, 0)]));
        writer.drain();
        assert_eq!(failures.load(Ordering::Relaxed), 2);
        std::fs::create_dir(&dir).unwrap();
        checkpoint.schedule(3, epoch_cache(&[(3, 0)]));
        assert_eq!(writer.drain(), 1);
        assert_eq!(on_disk(&dir), Some(epoch_cache(&[(3, 0)])));
    }

    #[test]
    fn the_background_thread_publishes_without_being_asked() {
        let dir = tempfile::tempdir().unwrap();
        let writer = EpochCheckpointWriter::global();
        let (checkpoint, _) = checkpoint_in(dir.path(), &writer);
        checkpoint.schedule(1, epoch_cache(&[(5, 7)]));
        // Waits on the outcome (the version written); the deadline only stops a hang.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while checkpoint.written_version() < 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(on_disk(dir.path()), Some(epoch_cache(&[(5, 7)])));
    }
}
