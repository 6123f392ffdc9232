//! The log cleaner thread: one dedicated OS thread, as Kafka's `LogCleaner` has its own,
//! that runs a cleaning pass ([`Partition::clean`]) over every hosted partition every
//! `log.cleaner.backoff.ms`. Its settings are read again before every pause and every
//! round, so a dynamic `log.cleaner.backoff.ms` or `log.cleaner.dedupe.buffer.size` takes
//! effect from the next pause (Kafka restarts its cleaner threads for the same effect). Cleaning reads and writes whole segments; on its own thread
//! it never occupies an async worker, and partitions stay locked only for snapshots and
//! swaps. [`LogCleaner::stop`] ends it promptly: the wait wakes at once and a running
//! pass stops at its next batch, leaving the log as it was.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Partition;
use crate::types::now_ms;

/// What the cleaner needs from the broker config.
#[derive(Clone, Copy, Debug)]
pub struct CleanerSettings {
    /// `log.cleaner.backoff.ms`: the pause between two rounds over the partitions.
    pub backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: the offset map's memory, in bytes.
    pub dedupe_buffer_bytes: u64,
}

/// The stop signal: the flag that running passes poll, and a condvar that ends the wait
/// between rounds.
#[derive(Default)]
struct StopSignal {
    stopped: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl StopSignal {
    fn is_set(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn set(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.stopped.store(true, Ordering::Relaxed);
        self.wake.notify_all();
    }

    /// Sleep for `pause` or until stopped; true when stopped.
    fn wait(&self, pause: Duration) -> bool {
        let deadline = Instant::now() + pause;
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock `set` takes, so a stop cannot slip in unseen.
        while !self.is_set() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            guard = match self.wake.wait_timeout(guard, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

pub struct LogCleaner {
    signal: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

impl LogCleaner {
    /// Start the thread; `settings` gives the settings now, `partitions` lists the
    /// partitions to clean at each round.
    pub fn start(
        settings: impl Fn() -> CleanerSettings + Send + 'static,
        partitions: impl Fn() -> Vec<Arc<Partition>> + Send + 'static,
    ) -> std::io::Result<LogCleaner> {
        let signal = Arc::new(StopSignal::default());
        let running = signal.clone();
        let thread = std::thread::Builder::new()
            .name("log-cleaner".into())
            .spawn(move || run(settings, &running, partitions))?;
        Ok(LogCleaner {
            signal,
            thread: Some(thread),
        })
    }

    /// Stop the thread and wait for it: a running pass stops at its next batch.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.signal.set();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the log cleaner thread panicked");
        }
    }
}

impl Drop for LogCleaner {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// How often a pause reads `log.cleaner.backoff.ms` again: a shorter pause set meanwhile
/// ends it this soon, not after the old one.
const PAUSE_RECHECK: Duration = Duration::from_secs(1);

fn run(
    settings: impl Fn() -> CleanerSettings,
    signal: &StopSignal,
    partitions: impl Fn() -> Vec<Arc<Partition>>,
) {
    while !pause(&settings, signal) {
        let dedupe_buffer_bytes = settings().dedupe_buffer_bytes;
        for partition in partitions() {
            if signal.is_set() {
                return;
            }
            clean_one(&partition, dedupe_buffer_bytes, &signal.stopped);
        }
    }
}

/// Waits out `log.cleaner.backoff.ms` from now, as it is at each recheck; true when stopped.
fn pause(settings: &impl Fn() -> CleanerSettings, signal: &StopSignal) -> bool {
    let started = Instant::now();
    loop {
        let backoff = Duration::from_millis(settings().backoff_ms.max(1));
        let left = backoff.saturating_sub(started.elapsed());
        if left.is_zero() {
            return false;
        }
        if signal.wait(left.min(PAUSE_RECHECK)) {
            return true;
        }
    }
}

fn clean_one(partition: &Partition, dedupe_buffer_bytes: u64, stop: &AtomicBool) {
    let started = Instant::now();
    match partition.clean(now_ms(), dedupe_buffer_bytes, stop) {
        Ok(stats) if stats.segments_cleaned > 0 || stats.segments_discarded > 0 => {
            tracing::info!(
                tp = %partition.tp,
                pass_ms = started.elapsed().as_millis() as u64,
                segments = stats.segments_cleaned,
                records_removed = stats.records_removed,
                bytes_before = stats.bytes_before,
                bytes_after = stats.bytes_after,
                discarded = stats.segments_discarded,
                "compacted"
            );
        }
        Ok(_) => {}
        Err(error) => partition.report_background_failure("compaction", &error),
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    };

    use super::*;
    use crate::log::batch::plain_record;
    use crate::log::{DEDUPE_BUFFER_BYTES_DEFAULT, LogConfig};
    use crate::types::TopicPartition;

    fn compacted_partition(dir: &std::path::Path) -> Partition {
        let config = LogConfig {
            segment_bytes: 300,
            compact: true,
            ..LogConfig::default()
        };
        let tp = TopicPartition::new("t", 0);
        let id = uuid::Uuid::new_v4();
        let partition = Partition::open(
            tp,
            id,
            dir.to_path_buf(),
            config,
            0,
            1_000,
            crate::log::LastShutdown::Unclean,
        )
        .unwrap();
        partition.become_leader(0).unwrap();
        partition
    }

    /// One single-record batch per produce; keys k0..k3 in turn.
    fn produce(partition: &Partition, count: i64) {
        for index in 0..count {
            let key = Bytes::from(format!("k{}", index % 4));
            let value = Bytes::from(format!("v{index}"));
            let record = plain_record(0, 1_000 + index, Some(key), Some(value));
            let mut batch = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            };
            RecordBatchEncoder::encode(&mut batch, &[record], &options).unwrap();
            partition.append(&batch.freeze(), 1_000).unwrap();
        }
    }

    fn values(partition: &Partition) -> Vec<(i64, Bytes)> {
        let mut read = partition.read(0, usize::MAX, true).unwrap().records;
        let sets = RecordBatchDecoder::decode_all(&mut read).unwrap();
        let records = sets.into_iter().flat_map(|set| set.records);
        records.map(|r| (r.offset, r.value.unwrap())).collect()
    }

    #[test]
    fn a_pass_compacts_and_a_stopped_pass_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let partition = compacted_partition(dir.path());
        produce(&partition, 40);
        let before = values(&partition);
        let stopped = AtomicBool::new(true);
        let stats = partition.clean(2_000, DEDUPE_BUFFER_BYTES_DEFAULT, &stopped);
        assert_eq!(stats.unwrap(), Default::default());
        assert_eq!(values(&partition), before);
        let running = AtomicBool::new(false);
        let stats = partition.clean(2_000, DEDUPE_BUFFER_BYTES_DEFAULT, &running);
        assert!(stats.unwrap().records_removed > 0);
        let after = values(&partition);
        assert!(after.len() < before.len());
        // Each key's latest value is still there; the log end did not move.
        for latest in &before[before.len() - 4..] {
            assert!(after.contains(latest), "{latest:?}");
        }
        assert_eq!(partition.offsets().unwrap().2, 40);
    }

    #[test]
    fn a_deleted_partition_is_not_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let partition = compacted_partition(&dir.path().join("t-0"));
        produce(&partition, 40);
        partition.delete().unwrap();
        let running = AtomicBool::new(false);
        let stats = partition.clean(2_000, DEDUPE_BUFFER_BYTES_DEFAULT, &running);
        assert_eq!(stats.unwrap(), Default::default());
        assert!(!dir.path().join("t-0").exists());
    }

    #[test]
    fn stop_wakes_the_thread_from_its_backoff() {
        let settings = CleanerSettings {
            backoff_ms: 3_600_000,
            dedupe_buffer_bytes: DEDUPE_BUFFER_BYTES_DEFAULT,
        };
        let cleaner = LogCleaner::start(move || settings, Vec::new).unwrap();
        // Returns only once the thread has ended: it must not wait out the hour.
        cleaner.stop();
    }

    #[test]
    fn a_shorter_backoff_ends_the_pause_under_way() {
        // An hour's pause is read first, then 1 ms: the pause under way ends at its next
        // recheck (a second) and every round after it reads the settings again.
        let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = reads.clone();
        let rounds = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let listed = rounds.clone();
        let settings = move || CleanerSettings {
            backoff_ms: if counted.fetch_add(1, Ordering::Relaxed) == 0 {
                3_600_000
            } else {
                1
            },
            dedupe_buffer_bytes: DEDUPE_BUFFER_BYTES_DEFAULT,
        };
        let cleaner = LogCleaner::start(settings, move || {
            listed.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while rounds.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        cleaner.stop();
        assert!(rounds.load(Ordering::Relaxed) >= 3);
        // At least two reads a round (the pause, the map size), not one at start-up.
        assert!(reads.load(Ordering::Relaxed) >= 6);
    }
}
