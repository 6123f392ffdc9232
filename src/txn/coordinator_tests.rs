//! The coordinator shell over a real `__transaction_state` log, with markers and producer
//! ids faked.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::coordinator::{ProducerIdSource, TransactionCoordinator, TxnCoordinatorConfig, lock};
use super::error::TxnError;
use super::markers::{MarkerJob, MarkerOutcome, MarkerSender, StillWanted};
use super::records::{TxnPartitions, TxnStatus};
use crate::group::LedPartition;
use crate::log::LogConfig;
use crate::replica::Partition;
use crate::types::TopicPartition;

const HANG_GUARD: Duration = Duration::from_secs(30);

/// Records every job; writes them at once unless `hold` is set, in which case it waits
/// until the coordinator abandons the transaction.
#[derive(Default)]
pub(super) struct FakeMarkers {
    pub(super) jobs: Mutex<Vec<MarkerJob>>,
    pub(super) hold: AtomicBool,
}

impl MarkerSender for FakeMarkers {
    fn send(
        &self,
        job: MarkerJob,
        still_wanted: StillWanted,
    ) -> Pin<Box<dyn Future<Output = MarkerOutcome> + Send + '_>> {
        Box::pin(async move {
            lock(&self.jobs).push(job);
            while self.hold.load(Ordering::SeqCst) {
                if !still_wanted() {
                    return MarkerOutcome::Abandoned;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            MarkerOutcome::Written
        })
    }
}

pub(super) struct Counter(pub(super) AtomicI64);

impl ProducerIdSource for Counter {
    fn next_id(&self) -> Pin<Box<dyn Future<Output = Result<i64, TxnError>> + Send + '_>> {
        Box::pin(async move { Ok(self.0.fetch_add(1, Ordering::SeqCst)) })
    }
}

fn open(dir: &std::path::Path) -> Arc<Partition> {
    let tp = TopicPartition::new("__transaction_state", 0);
    let id = uuid::Uuid::from_u128(9);
    let path = dir.join("__transaction_state-0");
    let last_shutdown = crate::log::LastShutdown::Unclean;
    let log = Partition::open(tp, id, path, LogConfig::default(), 0, 0, last_shutdown);
    Arc::new(log.unwrap())
}

fn new_coordinator(markers: Arc<FakeMarkers>) -> TransactionCoordinator {
    let config = TxnCoordinatorConfig {
        partitions: 1,
        max_timeout_ms: 900_000,
        id_expiration_ms: 1_000,
        write_timeout: Duration::from_secs(5),
    };
    TransactionCoordinator::new(config, markers)
}

/// Follows `log`'s leadership and waits until its partition is loaded.
async fn load(coordinator: &TransactionCoordinator, log: &Arc<Partition>) {
    let (leader_epoch, leads) = log.leadership();
    assert!(leads);
    let led = HashMap::from([(
        0,
        LedPartition {
            log: log.clone(),
            leader_epoch,
        },
    )]);
    coordinator.follow_leadership(&led);
    let loaded = async {
        while !coordinator.is_loaded(0) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, loaded).await.unwrap();
}

async fn until_state(coordinator: &TransactionCoordinator, id: &str, wanted: TxnStatus) {
    let reached = async {
        while coordinator.describe(id).map(|m| m.state) != Ok(wanted) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, reached)
        .await
        .unwrap_or_else(|_| panic!("{id} never reached {wanted:?}"));
}

fn parts(list: &[(&str, i32)]) -> TxnPartitions {
    let mut partitions = TxnPartitions::new();
    for (topic, id) in list {
        partitions.entry(topic.to_string()).or_default().insert(*id);
    }
    partitions
}

fn ids() -> Counter {
    Counter(AtomicI64::new(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_writes_markers_completes_and_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.become_leader(0).unwrap();
    let markers = Arc::new(FakeMarkers::default());
    let coordinator = new_coordinator(markers.clone());
    load(&coordinator, &log).await;
    let ids = ids();
    let (pid, epoch) = coordinator
        .init_producer_id("tx", 60_000, None, &ids)
        .await
        .unwrap();
    assert_eq!((pid, epoch), (100, 0));
    let wanted = parts(&[("t", 0), ("t", 1), ("u", 0)]);
    coordinator
        .add_partitions("tx", pid, epoch, &wanted)
        .await
        .unwrap();
    let verified = coordinator
        .verify_partitions("tx", pid, epoch, &parts(&[("t", 1), ("v", 0)]))
        .unwrap();
    assert_eq!(verified[0].2, Ok(()));
    assert_eq!(verified[1].2, Err(TxnError::TransactionAbortable));
    coordinator.end_txn("tx", pid, epoch, true).await.unwrap();
    until_state(&coordinator, "tx", TxnStatus::CompleteCommit).await;
    let jobs = lock(&markers.jobs).clone();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].producer_id, jobs[0].producer_epoch, jobs[0].commit),
        (100, 0, true)
    );
    assert_eq!(jobs[0].partitions, wanted);
    assert_eq!(jobs[0].coordinator_epoch, 0);
    // A retried EndTxn after completion answers NONE; the other outcome does not.
    assert_eq!(coordinator.end_txn("tx", pid, epoch, true).await, Ok(()));
    assert_eq!(
        coordinator.end_txn("tx", pid, epoch, false).await,
        Err(TxnError::InvalidTxnState)
    );

    let reloaded = new_coordinator(Arc::new(FakeMarkers::default()));
    load(&reloaded, &log).await;
    let meta = reloaded.describe("tx").unwrap();
    assert_eq!(meta.state, TxnStatus::CompleteCommit);
    assert_eq!((meta.producer_id, meta.producer_epoch), (100, 0));
    assert!(meta.partitions.is_empty());
    let (pid, epoch) = reloaded
        .init_producer_id("tx", 60_000, None, &ids)
        .await
        .unwrap();
    assert_eq!((pid, epoch), (100, 1), "the next producer bumps the epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_producer_fences_the_open_transaction_of_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.become_leader(0).unwrap();
    let markers = Arc::new(FakeMarkers::default());
    let coordinator = new_coordinator(markers.clone());
    load(&coordinator, &log).await;
    let ids = ids();
    let (pid, old) = coordinator
        .init_producer_id("tx", 60_000, None, &ids)
        .await
        .unwrap();
    coordinator
        .add_partitions("tx", pid, old, &parts(&[("t", 0)]))
        .await
        .unwrap();
    let second = coordinator.init_producer_id("tx", 60_000, None, &ids).await;
    assert_eq!(second, Err(TxnError::ConcurrentTransactions));
    until_state(&coordinator, "tx", TxnStatus::CompleteAbort).await;
    let jobs = lock(&markers.jobs).clone();
    assert_eq!((jobs[0].producer_epoch, jobs[0].commit), (1, false));
    let (same, new) = coordinator
        .init_producer_id("tx", 60_000, None, &ids)
        .await
        .unwrap();
    assert_eq!((same, new), (pid, 2));
    // The zombie can neither add nor commit.
    assert_eq!(
        coordinator
            .add_partitions("tx", pid, old, &parts(&[("t", 1)]))
            .await,
        Err(TxnError::ProducerFenced)
    );
    assert_eq!(
        coordinator.end_txn("tx", pid, old, true).await,
        Err(TxnError::ProducerFenced)
    );
    assert_eq!(
        coordinator.end_txn("tx", pid + 1, new, true).await,
        Err(TxnError::InvalidProducerIdMapping)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_is_finished_by_the_next_leader() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.become_leader(0).unwrap();
    let markers = Arc::new(FakeMarkers::default());
    markers.hold.store(true, Ordering::SeqCst);
    let coordinator = new_coordinator(markers.clone());
    load(&coordinator, &log).await;
    let ids = ids();
    let (pid, epoch) = coordinator
        .init_producer_id("tx", 60_000, None, &ids)
        .await
        .unwrap();
    coordinator
        .add_partitions("tx", pid, epoch, &parts(&[("t", 0)]))
        .await
        .unwrap();
    coordinator.end_txn("tx", pid, epoch, false).await.unwrap();
    assert_eq!(
        coordinator.describe("tx").unwrap().state,
        TxnStatus::PrepareAbort
    );
    // Leadership moves away while the markers are outstanding.
    log.become_follower(1).unwrap();
    coordinator.follow_leadership(&HashMap::new());
    assert_eq!(coordinator.describe("tx"), Err(TxnError::NotCoordinator));
    log.become_leader(2).unwrap();
    let next = Arc::new(FakeMarkers::default());
    let successor = new_coordinator(next.clone());
    load(&successor, &log).await;
    until_state(&successor, "tx", TxnStatus::CompleteAbort).await;
    let jobs = lock(&next.jobs).clone();
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].commit, jobs[0].coordinator_epoch), (false, 2));
    assert_eq!(jobs[0].partitions, parts(&[("t", 0)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_transactions_are_aborted_and_old_ids_expire() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.become_leader(0).unwrap();
    let markers = Arc::new(FakeMarkers::default());
    let coordinator = new_coordinator(markers.clone());
    load(&coordinator, &log).await;
    let ids = ids();
    let (pid, epoch) = coordinator
        .init_producer_id("slow", 50, None, &ids)
        .await
        .unwrap();
    coordinator
        .add_partitions("slow", pid, epoch, &parts(&[("t", 0)]))
        .await
        .unwrap();
    let now = crate::types::now_ms();
    assert_eq!(coordinator.abort_timed_out(now), 0, "not yet");
    assert_eq!(coordinator.abort_timed_out(now + 60_000), 1);
    until_state(&coordinator, "slow", TxnStatus::CompleteAbort).await;
    let meta = coordinator.describe("slow").unwrap();
    assert_eq!(meta.producer_epoch, 1, "the abort fenced the producer");
    assert_eq!(
        coordinator.end_txn("slow", pid, epoch, true).await,
        Err(TxnError::ProducerFenced)
    );
    // Unused for longer than transactional.id.expiration.ms (1 s here): removed.
    assert_eq!(coordinator.expire_ids(crate::types::now_ms()), 0);
    assert_eq!(coordinator.expire_ids(crate::types::now_ms() + 5_000), 1);
    let gone = async {
        while coordinator.describe("slow").is_ok() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, gone).await.unwrap();
    assert_eq!(
        coordinator.describe("slow"),
        Err(TxnError::TransactionalIdNotFound)
    );
    let reloaded = new_coordinator(Arc::new(FakeMarkers::default()));
    load(&reloaded, &log).await;
    assert_eq!(
        reloaded.describe("slow"),
        Err(TxnError::TransactionalIdNotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_refused_where_kafka_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.become_leader(0).unwrap();
    let coordinator = new_coordinator(Arc::new(FakeMarkers::default()));
    let ids = ids();
    assert_eq!(
        coordinator.init_producer_id("tx", 60_000, None, &ids).await,
        Err(TxnError::NotCoordinator)
    );
    lock(&coordinator.shards).loading.insert(0, 0);
    assert_eq!(
        coordinator.init_producer_id("tx", 60_000, None, &ids).await,
        Err(TxnError::LoadInProgress)
    );
    lock(&coordinator.shards).loading.clear();
    load(&coordinator, &log).await;
    for bad in [0, -1, 900_001] {
        assert_eq!(
            coordinator.init_producer_id("tx", bad, None, &ids).await,
            Err(TxnError::InvalidTransactionTimeout)
        );
    }
    assert!(matches!(
        coordinator.init_producer_id("", 1000, None, &ids).await,
        Err(TxnError::InvalidRequest(_))
    ));
    assert_eq!(
        coordinator
            .add_partitions("nobody", 1, 0, &parts(&[("t", 0)]))
            .await,
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        coordinator.end_txn("nobody", 1, 0, true).await,
        Err(TxnError::InvalidProducerIdMapping)
    );
    let (pid, epoch) = coordinator
        .init_producer_id("tx", 1000, None, &ids)
        .await
        .unwrap();
    assert_eq!(
        coordinator.end_txn("tx", pid, epoch, true).await,
        Err(TxnError::InvalidTxnState),
        "nothing to commit"
    );
    let (listed, loading) = coordinator.list(&[], &[], -1, 0);
    assert!(!loading);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].metadata.state, TxnStatus::Empty);
    let (ongoing, _) = coordinator.list(&[TxnStatus::Ongoing], &[], -1, 0);
    assert!(ongoing.is_empty());
    // Leadership moved on without an image yet: the log's own view refuses the write.
    log.become_follower(1).unwrap();
    assert_eq!(
        coordinator.init_producer_id("tx", 1000, None, &ids).await,
        Err(TxnError::NotCoordinator)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_ends_at_the_next_epoch_and_rotates_an_exhausted_id() {
    use crate::txn::TxnVersion;
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.become_leader(0).unwrap();
    let markers = Arc::new(FakeMarkers::default());
    let coordinator = new_coordinator(markers.clone());
    load(&coordinator, &log).await;
    let ids = ids();
    let (pid, epoch) = coordinator
        .init_producer_id("tx", 60_000, None, &ids)
        .await
        .unwrap();
    // An abort of nothing: bumps the epoch, sends no marker.
    let ended = coordinator.end_txn_v2("tx", pid, epoch, false, &ids).await;
    assert_eq!(ended, Ok((pid, epoch + 1)));
    until_state(&coordinator, "tx", TxnStatus::CompleteAbort).await;
    assert!(lock(&markers.jobs).is_empty());
    let epoch = epoch + 1;
    let t0 = parts(&[("t", 0)]);
    let v2 = TxnVersion::V2;
    coordinator
        .add_partitions_as("tx", pid, epoch, &t0, v2)
        .await
        .unwrap();
    let ended = coordinator.end_txn_v2("tx", pid, epoch, true, &ids).await;
    assert_eq!(ended, Ok((pid, epoch + 1)));
    until_state(&coordinator, "tx", TxnStatus::CompleteCommit).await;
    let job = lock(&markers.jobs)[0].clone();
    assert_eq!((job.producer_epoch, job.commit), (epoch + 1, true));
    // The retry one epoch behind answers the same.
    let retried = coordinator.end_txn_v2("tx", pid, epoch, true, &ids).await;
    assert_eq!(retried, Ok((pid, epoch + 1)));

    // Near exhaustion (set in memory only: the next write carries it).
    let last = i16::MAX - 1;
    lock(&coordinator.shards)
        .loaded
        .get_mut(&0)
        .unwrap()
        .txns
        .get_mut("tx")
        .unwrap()
        .producer_epoch = last;
    coordinator
        .add_partitions_as("tx", pid, last, &t0, v2)
        .await
        .unwrap();
    markers.hold.store(true, Ordering::SeqCst);
    let ended = coordinator.end_txn_v2("tx", pid, last, true, &ids).await;
    assert_eq!(ended, Ok((101, 0)), "a new producer id at epoch 0");
    let prepared = coordinator.describe("tx").unwrap();
    assert_eq!(
        (prepared.producer_id, prepared.producer_epoch),
        (pid, i16::MAX)
    );
    assert_eq!(prepared.next_producer_id, 101);
    // The client holding the new id waits for the completion.
    let early = coordinator.add_partitions_as("tx", 101, 0, &t0, v2).await;
    assert_eq!(early, Err(TxnError::ConcurrentTransactions));

    // Another coordinator loads the log with the prepare in it and completes it: the
    // rotation survived in the record.
    let next = new_coordinator(Arc::new(FakeMarkers::default()));
    load(&next, &log).await;
    until_state(&next, "tx", TxnStatus::CompleteCommit).await;
    let done = next.describe("tx").unwrap();
    assert_eq!((done.producer_id, done.producer_epoch), (101, 0));
    assert_eq!(done.previous_producer_id, pid);
    assert_eq!(done.client_version, v2);
}
