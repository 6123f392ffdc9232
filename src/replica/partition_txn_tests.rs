//! Transactions at the partition: LSO, markers, the aborted-transaction index through
//! leader appends, replication, truncation and crash recovery.

use super::*;
use crate::log::test_support::encode_batch_sized;
use crate::txn::producer_state::SequenceError;
use kafka_protocol::records::Compression;

const EPOCH: i16 = 3;
const PLAIN: i64 = 100;
const T1: i64 = 201;
const T2: i64 = 202;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 150,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, last_shutdown: LastShutdown) -> Partition {
    let tp = TopicPartition::new("t", 0);
    let id = Uuid::from_u128(7);
    let partition =
        Partition::open(tp, id, dir.join("t-0"), config(), 0, 0, last_shutdown).unwrap();
    partition.become_leader(0).unwrap();
    partition
}

/// A batch of `count` records from `producer_id` at `sequence`, transactional or not.
fn batch(producer_id: i64, sequence: i32, count: usize, transactional: bool) -> Bytes {
    let mut bytes = encode_batch_sized(&vec![100; count], Compression::None, 20);
    let attributes: i16 = if transactional { 0x10 } else { 0 };
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
    bytes[51..53].copy_from_slice(&EPOCH.to_be_bytes());
    bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes.freeze()
}

fn marker(committed: bool, coordinator_epoch: i32) -> TxnMarker {
    TxnMarker {
        committed,
        coordinator_epoch,
    }
}

fn aborted(partition: &Partition) -> Vec<AbortedTxn> {
    let state = partition.state.read().unwrap();
    state
        .log
        .as_ref()
        .unwrap()
        .aborted_transactions(0, i64::MAX)
        .unwrap()
}

fn producers(partition: &Partition) -> ProducerStateTable {
    partition.state.read().unwrap().producers.clone()
}

fn lso(partition: &Partition) -> i64 {
    partition.last_stable_offset().unwrap()
}

/// Offsets of the batches in `records`: (base, last, control).
fn batches_of(records: &[u8]) -> Vec<(i64, i64, bool)> {
    crate::log::iter_batches(records)
        .map(|batch| batch.unwrap().1)
        .map(|header| {
            (
                header.base_offset,
                header.last_offset(),
                header.is_control(),
            )
        })
        .collect()
}

/// plain 0-1, T1 2-3, T2 4-5, abort T1 at 6, commit T2 at 7.
fn two_transactions(partition: &Partition) {
    partition.append(&batch(PLAIN, 0, 2, false), 0).unwrap();
    assert_eq!(lso(partition), 2, "plain records are stable");
    partition.append(&batch(T1, 0, 2, true), 0).unwrap();
    partition.append(&batch(T2, 0, 2, true), 0).unwrap();
    assert_eq!(
        partition.offsets().unwrap().1,
        6,
        "the high watermark moved on"
    );
    assert_eq!(lso(partition), 2, "T1 is open from 2");
    let abort = partition
        .append_txn_marker(T1, EPOCH, marker(false, 5), 0)
        .unwrap();
    assert_eq!(abort.base_offset, 6, "a marker takes an offset");
    assert_eq!(lso(partition), 4, "T2 is still open from 4");
    let commit = partition
        .append_txn_marker(T2, EPOCH, marker(true, 5), 0)
        .unwrap();
    assert_eq!((commit.base_offset, commit.end_offset), (7, 8));
    assert_eq!(lso(partition), 8);
}

fn expected_abort() -> AbortedTxn {
    AbortedTxn {
        producer_id: T1,
        first_offset: 2,
        last_offset: 6,
        last_stable_offset: 4,
    }
}

#[test]
fn read_committed_stops_at_the_lso_and_lists_the_aborted_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let partition = open(dir.path(), LastShutdown::Clean);
    partition.append(&batch(PLAIN, 0, 2, false), 0).unwrap();
    partition.append(&batch(T1, 0, 2, true), 0).unwrap();
    let committed = partition.read_isolated(0, usize::MAX, true, true).unwrap();
    assert_eq!(batches_of(&committed.records), vec![(0, 1, false)]);
    assert_eq!(
        (committed.last_stable_offset, committed.high_watermark),
        (2, 4)
    );
    let uncommitted = partition.read_isolated(0, usize::MAX, true, false).unwrap();
    assert_eq!(batches_of(&uncommitted.records).len(), 2);
    assert_eq!(
        uncommitted.last_stable_offset, 2,
        "reported at every isolation level"
    );

    partition.append(&batch(T2, 0, 2, true), 0).unwrap();
    partition
        .append_txn_marker(T1, EPOCH, marker(false, 5), 0)
        .unwrap();
    partition
        .append_txn_marker(T2, EPOCH, marker(true, 5), 0)
        .unwrap();
    let all = partition.read_isolated(0, usize::MAX, true, true).unwrap();
    assert_eq!(
        batches_of(&all.records),
        vec![
            (0, 1, false),
            (2, 3, false),
            (4, 5, false),
            (6, 6, true),
            (7, 7, true)
        ]
    );
    assert_eq!(all.aborted_transactions, vec![expected_abort()]);
    // Reading from after the aborted transaction's marker: nothing to drop.
    let tail = partition.read_isolated(7, usize::MAX, true, true).unwrap();
    assert!(tail.aborted_transactions.is_empty());
    // Reading only the plain batch: the transaction starts after it.
    let head = partition.read_isolated(0, 1, true, true).unwrap();
    assert_eq!(batches_of(&head.records), vec![(0, 1, false)]);
    assert!(head.aborted_transactions.is_empty());
}

#[test]
fn markers_fence_old_epochs_and_coordinators_and_clients_cannot_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let partition = open(dir.path(), LastShutdown::Clean);
    two_transactions(&partition);
    let stale = partition.append_txn_marker(T1, EPOCH - 1, marker(true, 5), 0);
    assert!(
        matches!(
            stale,
            Err(ReplicaError::Sequence(SequenceError::StaleEpoch { .. }))
        ),
        "{stale:?}"
    );
    let fenced = partition.append_txn_marker(T1, EPOCH, marker(true, 4), 0);
    assert!(
        matches!(
            fenced,
            Err(ReplicaError::Sequence(
                SequenceError::CoordinatorFenced { .. }
            ))
        ),
        "{fenced:?}"
    );
    // The coordinator bumps the epoch with an abort: the zombie's writes are refused.
    partition.append(&batch(T1, 2, 1, true), 0).unwrap();
    partition
        .append_txn_marker(T1, EPOCH + 1, marker(false, 6), 0)
        .unwrap();
    let zombie = partition.append(&batch(T1, 3, 1, true), 0);
    assert!(
        matches!(
            zombie,
            Err(ReplicaError::Sequence(SequenceError::StaleEpoch { .. }))
        ),
        "{zombie:?}"
    );
    // A plain write inside an open transaction.
    partition.append(&batch(T2, 2, 1, true), 0).unwrap();
    let plain = partition.append(&batch(T2, 3, 1, false), 0);
    assert!(
        matches!(
            plain,
            Err(ReplicaError::Sequence(
                SequenceError::InvalidTxnState { .. }
            ))
        ),
        "{plain:?}"
    );
    // A client's own control batch.
    let forged = crate::txn::marker::encode_marker_batch(T2, EPOCH, marker(true, 9), 0);
    let refused = partition.append(&forged, 0);
    assert!(
        matches!(
            refused,
            Err(ReplicaError::Batch(BatchError::InvalidRecord(_)))
        ),
        "{refused:?}"
    );
}

#[test]
fn a_crash_or_a_lost_index_rebuilds_the_same_state_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let partition = open(dir.path(), LastShutdown::Unclean);
    // Enough batches before to roll and snapshot a few times.
    for sequence in 0..20 {
        partition
            .append(&batch(PLAIN, sequence, 1, false), 0)
            .unwrap();
    }
    let base = partition.offsets().unwrap().2;
    partition.append(&batch(T1, 0, 2, true), 0).unwrap();
    partition.append(&batch(T2, 0, 2, true), 0).unwrap();
    partition
        .append_txn_marker(T1, EPOCH, marker(false, 5), 0)
        .unwrap();
    partition.append(&batch(T1, 2, 1, true), 0).unwrap();
    let before = (producers(&partition), lso(&partition), aborted(&partition));
    assert_eq!(before.1, base + 2, "T2 open from its first batch");
    assert_eq!(before.2.len(), 1);
    drop(partition); // like kill -9

    let partition = open(dir.path(), LastShutdown::Unclean);
    assert_eq!(
        (producers(&partition), lso(&partition), aborted(&partition)),
        before
    );
    drop(partition);

    // The index files are derived: removed, they are rebuilt from the markers.
    let log_dir = dir.path().join("t-0");
    for entry in std::fs::read_dir(&log_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "txnindex") {
            std::fs::remove_file(path).unwrap();
        }
    }
    for name in crate::txn::producer_snapshot::list(&log_dir).unwrap() {
        std::fs::remove_file(crate::txn::producer_snapshot::snapshot_path(&log_dir, name)).unwrap();
    }
    let partition = open(dir.path(), LastShutdown::Unclean);
    assert_eq!(
        (producers(&partition), lso(&partition), aborted(&partition)),
        before
    );
    partition.close_cleanly().unwrap();
    drop(partition);
    let partition = open(dir.path(), LastShutdown::Clean);
    assert_eq!(
        (producers(&partition), lso(&partition), aborted(&partition)),
        before
    );
}

#[test]
fn truncation_reopens_a_transaction_and_drops_its_index_entry() {
    let dir = tempfile::tempdir().unwrap();
    let partition = open(dir.path(), LastShutdown::Clean);
    two_transactions(&partition);
    assert_eq!(aborted(&partition), vec![expected_abort()]);
    partition.truncate_to(6).unwrap();
    assert!(aborted(&partition).is_empty(), "the abort marker is gone");
    assert_eq!(lso(&partition), 2, "T1 is open again");
    let open_txns: Vec<_> = producers(&partition).open_transactions().collect();
    assert_eq!(open_txns, vec![(T1, 2), (T2, 4)]);
}

#[test]
fn followers_replicate_markers_into_the_same_state_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("t", 0);
    let open_at = |name: &str| {
        let opened = (
            tp.clone(),
            Uuid::from_u128(7),
            dir.path().join(name),
            config(),
        );
        Partition::open_at(opened, 0, 0, 0, LastShutdown::Clean).unwrap()
    };
    let leader = open_at("leader");
    leader.become_leader(0).unwrap();
    let follower = open_at("follower");
    follower.become_follower(0).unwrap();
    two_transactions(&leader);
    leader.append(&batch(T1, 2, 1, true), 0).unwrap();
    let read = leader.read_replica(0, usize::MAX, true).unwrap();
    follower
        .append_replicated(&read.records, (1, 0), 0)
        .unwrap();
    follower.follow_high_watermark(read.high_watermark, (1, 0));
    assert_eq!(producers(&follower), producers(&leader));
    assert_eq!(aborted(&follower), aborted(&leader));
    assert_eq!(lso(&follower), lso(&leader));
    assert_eq!(lso(&leader), 8, "T1 reopened at 8");
}

/// [`two_transactions`], then plain records to roll past them and snapshot later states.
fn two_transactions_in_a_closed_segment(partition: &Partition) {
    two_transactions(partition);
    for sequence in 0..30 {
        partition
            .append(&batch(PLAIN, 2 + sequence, 1, false), 0)
            .unwrap();
    }
}

#[test]
fn an_unreadable_index_in_an_old_segment_is_rebuilt_from_an_earlier_state() {
    let dir = tempfile::tempdir().unwrap();
    let partition = open(dir.path(), LastShutdown::Clean);
    two_transactions_in_a_closed_segment(&partition);
    let before = (producers(&partition), lso(&partition), aborted(&partition));
    assert_eq!(before.2, vec![expected_abort()]);
    partition.close_cleanly().unwrap();
    drop(partition);
    let indexes: Vec<_> = std::fs::read_dir(dir.path().join("t-0"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "txnindex"))
        .collect();
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    let index = &indexes[0];
    let mut bytes = std::fs::read(index).unwrap();
    bytes[1] = 7; // an unknown entry version
    std::fs::write(index, &bytes).unwrap();
    let snapshots = crate::txn::producer_snapshot::list(&dir.path().join("t-0")).unwrap();
    assert!(
        snapshots.iter().all(|&offset| offset > 8),
        "{snapshots:?}: newer states only"
    );

    let partition = open(dir.path(), LastShutdown::Clean);
    assert_eq!(
        (producers(&partition), lso(&partition), aborted(&partition)),
        before
    );
}

/// The aborted-transaction index entries an open rebuilds in closed segments (no usable
/// snapshot, or a dropped index) are fsynced, directory included, before the partition is
/// handed out: the next producer snapshot (at a roll or at clean shutdown) stands for them
/// and closed segments are never flushed again.
#[test]
fn an_index_rebuilt_in_closed_segments_is_durable_before_the_next_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("t-0");
    let partition = open(dir.path(), LastShutdown::Clean);
    two_transactions_in_a_closed_segment(&partition);
    let before = aborted(&partition);
    assert_eq!(before, vec![expected_abort()]);
    drop(partition); // like kill -9
    let unflushed = |partition: &Partition| {
        let state = partition.state.read().unwrap();
        let log = state.log.as_ref().unwrap();
        log.closed_segments_with_unflushed_txn_index()
    };
    let txn_indexes = || -> Vec<std::path::PathBuf> {
        let paths = std::fs::read_dir(&log_dir)
            .unwrap()
            .map(|e| e.unwrap().path());
        paths
            .filter(|path| path.extension().is_some_and(|e| e == "txnindex"))
            .collect()
    };
    // No snapshot: the rebuild from the log start cuts and rewrites the closed segment's
    // index. Then the index dropped as unreadable: the rebuild creates a new file.
    let mut sequence = 32;
    for damage in ["no snapshot", "unreadable index"] {
        for name in crate::txn::producer_snapshot::list(&log_dir).unwrap() {
            let path = crate::txn::producer_snapshot::snapshot_path(&log_dir, name);
            std::fs::remove_file(path).unwrap();
        }
        if damage == "unreadable index" {
            let indexes = txn_indexes();
            assert_eq!(indexes.len(), 1, "{indexes:?}");
            let mut bytes = std::fs::read(&indexes[0]).unwrap();
            bytes[1] = 7; // an unknown entry version
            std::fs::write(&indexes[0], &bytes).unwrap();
        }
        let partition = open(dir.path(), LastShutdown::Unclean);
        assert_eq!(unflushed(&partition), Vec::<i64>::new(), "{damage}");
        assert_eq!(aborted(&partition), before, "{damage}");
        assert_eq!(lso(&partition), partition.offsets().unwrap().2, "{damage}");
        // The next roll's snapshot, then a crash: the index it stands for is there.
        for _ in 0..10 {
            partition
                .append(&batch(PLAIN, sequence, 1, false), 0)
                .unwrap();
            sequence += 1;
        }
        drop(partition);
        assert_eq!(txn_indexes().len(), 1, "{damage}");
        let partition = open(dir.path(), LastShutdown::Unclean);
        assert_eq!(aborted(&partition), before, "{damage}");
        drop(partition);
    }
}

/// KIP-890's guard at the partition: a produce verified before the transaction's marker
/// landed is refused after it, under the append's lock, and appends nothing.
#[test]
fn a_verified_produce_that_arrives_after_the_marker_is_refused() {
    use crate::txn::producer_state::Verification;
    let dir = tempfile::tempdir().unwrap();
    let partition = open(dir.path(), LastShutdown::Clean);
    let guard = partition.start_verification(T1, EPOCH, 0, 0).unwrap();
    assert!(guard.is_some(), "no transaction open: it must be verified");
    // The coordinator aborts the transaction meanwhile; its marker lands first.
    partition
        .append_txn_marker(T1, EPOCH, marker(false, 5), 0)
        .unwrap();
    let end_before = partition.offsets().unwrap().1;
    let late = partition.append_verified(
        &batch(T1, 0, 1, true),
        0,
        RequiredAcks::Leader,
        Verification::Guard(guard),
    );
    assert!(
        matches!(
            late,
            Err(ReplicaError::Sequence(SequenceError::Unverified {
                producer_id: T1
            }))
        ),
        "{late:?}"
    );
    assert_eq!(
        partition.offsets().unwrap().1,
        end_before,
        "nothing appended"
    );
    assert_eq!(lso(&partition), end_before, "no transaction left hanging");
    // A fresh verification lets the next transaction in; later batches need no guard.
    let fresh = partition.start_verification(T1, EPOCH, 0, 0).unwrap();
    let first = batch(T1, 0, 1, true);
    partition
        .append_verified(&first, 0, RequiredAcks::Leader, Verification::Guard(fresh))
        .unwrap();
    assert_eq!(partition.start_verification(T1, EPOCH, 1, 0).unwrap(), None);
    partition
        .append_verified(
            &batch(T1, 1, 1, true),
            0,
            RequiredAcks::Leader,
            Verification::Guard(None),
        )
        .unwrap();
    // A retry of an appended batch is answered with its offsets whatever the guard.
    let retry = partition
        .append_verified(&first, 0, RequiredAcks::Leader, Verification::Guard(None))
        .unwrap();
    assert_eq!(retry.base_offset, end_before);
    // With verification off nothing is asked of the guard (today's behaviour).
    partition
        .append_txn_marker(T1, EPOCH, marker(true, 5), 0)
        .unwrap();
    partition
        .append_verified(
            &batch(T1, 2, 1, true),
            0,
            RequiredAcks::Leader,
            Verification::Off,
        )
        .unwrap();
}

/// Node 0 leading at epoch 0 with node 1 in the ISR: the high watermark waits for node 1.
fn open_with_follower(dir: &Path) -> Partition {
    let opened = (
        TopicPartition::new("t", 0),
        Uuid::from_u128(7),
        dir.join("t-0"),
        config(),
    );
    let partition = Partition::open_at(opened, 0, 0, 0, LastShutdown::Clean).unwrap();
    let view = Leadership {
        leader: 0,
        leader_epoch: 0,
        partition_epoch: 0,
        replicas: vec![0, 1],
        isr: vec![0, 1],
    };
    partition
        .apply_leadership(0, &view, 0, Publish::Background)
        .unwrap();
    partition
}

/// Node 1 fetches from `offset`: it has everything below it.
fn follower_at(partition: &Partition, offset: i64) {
    partition
        .record_follower_fetch(1, (offset, 0), 0, FollowerBroker::ELIGIBLE)
        .unwrap();
}

#[test]
fn a_completed_transaction_holds_the_lso_until_its_marker_is_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let partition = open_with_follower(dir.path());
    // T1 data at 0-1, T2 data at 2-3, T1's commit at 4.
    partition.append(&batch(T1, 0, 2, true), 0).unwrap();
    partition.append(&batch(T2, 0, 2, true), 0).unwrap();
    partition
        .append_txn_marker(T1, EPOCH, marker(true, 5), 0)
        .unwrap();
    follower_at(&partition, 4);
    assert_eq!(
        partition.offsets().unwrap().1,
        4,
        "the marker is not replicated"
    );
    // Bounded by the high watermark alone, the LSO would be 4 here and T1's records 0-1
    // would reach read_committed consumers although its marker is on the leader only.
    assert_eq!(
        lso(&partition),
        0,
        "T1 holds until its marker is replicated"
    );
    let read = partition.read_isolated(0, usize::MAX, true, true).unwrap();
    assert!(read.records.is_empty(), "nothing is stable yet");
    follower_at(&partition, 5);
    assert_eq!(lso(&partition), 2, "now only T2 holds");
    assert_eq!(producers(&partition).unreplicated_count(), 0);
    partition
        .append_txn_marker(T2, EPOCH, marker(false, 5), 0)
        .unwrap();
    follower_at(&partition, 5);
    assert_eq!(lso(&partition), 2, "T2's abort at 5 is not replicated");
    follower_at(&partition, 6);
    assert_eq!(lso(&partition), 6);
}

#[test]
fn a_follower_holds_the_lso_until_the_leaders_high_watermark_passes_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), LastShutdown::Clean);
    let opened = (
        TopicPartition::new("t", 0),
        Uuid::from_u128(7),
        dir.path().join("follower"),
        config(),
    );
    let follower = Partition::open_at(opened, 0, 0, 0, LastShutdown::Clean).unwrap();
    follower.become_follower(0).unwrap();
    two_transactions(&leader);
    let read = leader.read_replica(0, usize::MAX, true).unwrap();
    follower
        .append_replicated(&read.records, (1, 0), 0)
        .unwrap();
    // The leader's high watermark as of before the markers: T1 (from 2) still holds.
    follower.follow_high_watermark(6, (1, 0));
    assert_eq!(lso(&follower), 2);
    follower.follow_high_watermark(7, (1, 0));
    assert_eq!(
        lso(&follower),
        4,
        "T1's marker at 6 is replicated, T2's at 7 not"
    );
    follower.follow_high_watermark(8, (1, 0));
    assert_eq!(lso(&follower), 8);
}

#[test]
fn a_reopened_partition_leaves_out_expired_producers_from_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let partition = open(dir.path(), LastShutdown::Clean);
    // `batch` stamps its records at 100: at 10 000 both producers are idle for 9 900 ms.
    partition.append(&batch(PLAIN, 0, 2, false), 0).unwrap();
    partition.append(&batch(T1, 0, 1, true), 0).unwrap();
    partition.close_cleanly().unwrap();
    drop(partition);
    let reopen = |expiration_ms: i64| {
        let opened = (
            TopicPartition::new("t", 0),
            Uuid::from_u128(7),
            dir.path().join("t-0"),
            config(),
        );
        let at = (i64::MAX, 10_000);
        Partition::open_expiring(opened, 0, at, Some(expiration_ms), LastShutdown::Clean).unwrap()
    };
    let kept: Vec<i64> = (producers(&reopen(20_000)).active_producers().iter())
        .map(|p| p.producer_id)
        .collect();
    assert_eq!(kept, vec![PLAIN, T1], "neither is idle for 20 s");
    let kept: Vec<i64> = (producers(&reopen(5_000)).active_producers().iter())
        .map(|p| p.producer_id)
        .collect();
    assert_eq!(kept, vec![T1], "an open transaction never expires");
}

/// The cleaner keeps each producer's last batch (emptied when all its records go) and
/// removes a marker once its transaction has nothing left: producer state rebuilt from the
/// compacted log alone (no snapshot) still has every producer's epoch and last sequence.
#[test]
fn producer_state_rebuilt_from_a_compacted_log_keeps_sequences_and_epochs() {
    use crate::log::DEDUPE_BUFFER_BYTES_DEFAULT;
    let dir = tempfile::tempdir().unwrap();
    let compacted = LogConfig {
        compact: true,
        delete_retention_ms: 1_000,
        ..config()
    };
    let open_compacted = |last_shutdown| {
        let (tp, id) = (TopicPartition::new("t", 0), Uuid::from_u128(7));
        let log_dir = dir.path().join("t-0");
        let partition =
            Partition::open(tp, id, log_dir, compacted.clone(), 0, 0, last_shutdown).unwrap();
        partition.become_leader(0).unwrap();
        partition
    };
    let partition = open_compacted(LastShutdown::Clean);
    // T1 commits key-0..key-1, then aborts key-0..key-2: its last batch, all superseded
    // or aborted. PLAIN overwrites those keys and rolls segments.
    partition.append(&batch(T1, 0, 2, true), 0).unwrap();
    let commit = partition.append_txn_marker(T1, EPOCH, marker(true, 0), 0);
    let commit = commit.unwrap().base_offset;
    let last = partition
        .append(&batch(T1, 2, 3, true), 0)
        .unwrap()
        .base_offset;
    partition
        .append_txn_marker(T1, EPOCH, marker(false, 0), 0)
        .unwrap();
    let stop = AtomicBool::new(false);
    let mut sequence = 0;
    // Passes a delete retention apart: a dataless marker is stamped in one, removed in
    // the next (KIP-534).
    for pass in 0..3 {
        for _ in 0..10 {
            partition
                .append(&batch(PLAIN, sequence, 3, false), 0)
                .unwrap();
            sequence += 3;
        }
        partition
            .clean(100_000 + pass * 1_000, DEDUPE_BUFFER_BYTES_DEFAULT, &stop)
            .unwrap();
    }
    let state = partition.state.read().unwrap();
    let log = state.log.as_ref().unwrap();
    let mut kept = Vec::new();
    log.scan_batch_headers(0, &mut |header| {
        if header.producer_id == T1 {
            kept.push((header.base_offset, header.record_count, header.is_control()));
        }
    })
    .unwrap();
    drop(state);
    assert_eq!(
        kept,
        vec![(last, 0, false), (last + 3, 1, true)],
        "the commit marker (at {commit}) and the records went; the emptied last batch and \
         its abort marker stay"
    );
    assert_eq!(aborted(&partition).len(), 1);
    let before = producers(&partition).active_producers();
    // A new follower copies the compacted log (batches with fewer records than offsets,
    // the empty one) and derives the same producer state from it.
    let opened = (
        TopicPartition::new("t", 0),
        Uuid::from_u128(7),
        dir.path().join("follower"),
        compacted.clone(),
    );
    let follower = Partition::open_at(opened, 0, 0, 0, LastShutdown::Clean).unwrap();
    follower.become_follower(0).unwrap();
    let read = partition.read_replica(0, usize::MAX, true).unwrap();
    follower
        .append_replicated(&read.records, (1, 0), 0)
        .unwrap();
    assert_eq!(producers(&follower).active_producers(), before);
    assert_eq!(aborted(&follower), aborted(&partition));
    drop(partition); // like kill -9
    let log_dir = dir.path().join("t-0");
    for name in crate::txn::producer_snapshot::list(&log_dir).unwrap() {
        std::fs::remove_file(crate::txn::producer_snapshot::snapshot_path(&log_dir, name)).unwrap();
    }
    let partition = open_compacted(LastShutdown::Unclean);
    assert_eq!(producers(&partition).active_producers(), before);
    // T1 goes on at its next sequence; a gap is refused, as before the clean.
    let gap = partition.append(&batch(T1, 9, 1, true), 0).unwrap_err();
    assert!(
        matches!(
            gap,
            ReplicaError::Sequence(SequenceError::OutOfOrder { .. })
        ),
        "{gap:?}"
    );
    partition.append(&batch(T1, 5, 1, true), 0).unwrap();
}

/// The cleaner keeps a marker at or above the oldest kept producer snapshot: a reload from
/// that snapshot (the newer ones gone) replays from its offset and must meet the marker of
/// a transaction the snapshot holds open, or the LSO would stay at it for good.
#[test]
fn a_reload_from_an_older_snapshot_still_closes_its_open_transaction() {
    use crate::log::DEDUPE_BUFFER_BYTES_DEFAULT;
    let dir = tempfile::tempdir().unwrap();
    let compacted = LogConfig {
        compact: true,
        delete_retention_ms: 1_000,
        ..config()
    };
    let log_dir = dir.path().join("t-0");
    let open_compacted = |last_shutdown| {
        let tp = TopicPartition::new("t", 0);
        let id = Uuid::from_u128(7);
        let partition = Partition::open(
            tp,
            id,
            log_dir.clone(),
            compacted.clone(),
            0,
            0,
            last_shutdown,
        )
        .unwrap();
        partition.become_leader(0).unwrap();
        partition
    };
    let partition = open_compacted(LastShutdown::Clean);
    partition.append(&batch(T1, 0, 2, true), 0).unwrap();
    // Roll segments while T1 is open: a snapshot at a roll holds it open.
    let mut sequence = 0;
    let mut plain = |partition: &Partition, batches: usize| {
        for _ in 0..batches {
            partition
                .append(&batch(PLAIN, sequence, 3, false), 0)
                .unwrap();
            sequence += 3;
        }
    };
    plain(&partition, 10);
    let snapshots = crate::txn::producer_snapshot::list(&log_dir).unwrap();
    let holding_open = *snapshots.first().expect("a snapshot at a roll");
    let abort = partition
        .append_txn_marker(T1, EPOCH, marker(false, 0), 0)
        .unwrap()
        .base_offset;
    assert!(abort > holding_open);
    plain(&partition, 10);
    let stop = AtomicBool::new(false);
    for pass in 0..4 {
        partition
            .clean(100_000 + pass * 1_000, DEDUPE_BUFFER_BYTES_DEFAULT, &stop)
            .unwrap();
        plain(&partition, 3);
    }
    assert!(
        markers_of(&partition).contains(&abort),
        "the old snapshot needs it"
    );
    assert_eq!(producers(&partition).first_unstable_offset(), None);
    drop(partition); // like kill -9
    // Every snapshot after the one that holds T1 open is gone.
    for name in crate::txn::producer_snapshot::list(&log_dir).unwrap() {
        if name > holding_open {
            let path = crate::txn::producer_snapshot::snapshot_path(&log_dir, name);
            std::fs::remove_file(path).unwrap();
        }
    }
    let partition = open_compacted(LastShutdown::Unclean);
    assert_eq!(
        producers(&partition).first_unstable_offset(),
        None,
        "the replay from {holding_open} met the abort marker at {abort}"
    );
    assert_eq!(aborted(&partition).len(), 1);
}

/// The cleaner keeps a rewritten batch's base offset and base sequence (Kafka's
/// `buildRetainedRecordsInto`): producer state rebuilt from the compacted log alone knows
/// the producer's last batch by its whole sequence range, so a retry of it, after the
/// cleaner took its first records, is a duplicate answered with its original offsets (not
/// OUT_OF_ORDER_SEQUENCE_NUMBER), and nothing is appended twice.
#[test]
fn a_retry_of_a_batch_that_lost_its_first_records_is_still_a_duplicate() {
    use crate::log::DEDUPE_BUFFER_BYTES_DEFAULT;
    const IDEMPOTENT: i64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let compacted = LogConfig {
        compact: true,
        ..config()
    };
    let log_dir = dir.path().join("t-0");
    let open_compacted = |last_shutdown| {
        let (tp, id) = (TopicPartition::new("t", 0), Uuid::from_u128(7));
        let opened = (tp, id, log_dir.clone(), compacted.clone());
        let partition = Partition::open_at(opened, 0, i64::MAX, 0, last_shutdown).unwrap();
        partition.become_leader(0).unwrap();
        partition
    };
    let partition = open_compacted(LastShutdown::Clean);
    // key-0..key-4 at offsets 0..=4, sequences 0..=4; PLAIN then overwrites key-0..key-2.
    let first = partition
        .append(&batch(IDEMPOTENT, 0, 5, false), 0)
        .unwrap();
    assert_eq!(first.base_offset, 0);
    for sequence in (0..30).step_by(3) {
        partition
            .append(&batch(PLAIN, sequence, 3, false), 0)
            .unwrap();
    }
    let stop = AtomicBool::new(false);
    let stats = partition
        .clean(100_000, DEDUPE_BUFFER_BYTES_DEFAULT, &stop)
        .unwrap();
    assert!(stats.records_removed >= 3, "{stats:?}");
    let kept = {
        let state = partition.state.read().unwrap();
        let mut kept = Vec::new();
        let log = state.log.as_ref().unwrap();
        log.scan_batch_headers(0, &mut |header| {
            if header.producer_id == IDEMPOTENT {
                kept.push(*header);
            }
        })
        .unwrap();
        kept
    };
    let header = kept[0];
    assert_eq!(kept.len(), 1);
    assert_eq!((header.base_offset, header.last_offset()), (0, 4));
    assert_eq!((header.base_sequence, header.record_count), (0, 2));
    let log_end = partition.offsets().unwrap().2;
    drop(partition); // like kill -9, and without snapshots: state comes from the log alone
    for name in crate::txn::producer_snapshot::list(&log_dir).unwrap() {
        let path = crate::txn::producer_snapshot::snapshot_path(&log_dir, name);
        std::fs::remove_file(path).unwrap();
    }
    let partition = open_compacted(LastShutdown::Unclean);
    let retry = partition
        .append(&batch(IDEMPOTENT, 0, 5, false), 0)
        .unwrap();
    assert_eq!(retry.base_offset, 0, "the duplicate's original offsets");
    assert_eq!(partition.offsets().unwrap().2, log_end, "nothing appended");
    // The producer goes on after its last sequence.
    let next = partition
        .append(&batch(IDEMPOTENT, 5, 1, false), 0)
        .unwrap();
    assert_eq!(next.base_offset, log_end);
}

/// Offsets of the control batches of the partition's log.
fn markers_of(partition: &Partition) -> Vec<i64> {
    let state = partition.state.read().unwrap();
    let mut found = Vec::new();
    let log = state.log.as_ref().unwrap();
    log.scan_batch_headers(0, &mut |header| {
        if header.is_control() {
            found.push(header.base_offset);
        }
    })
    .unwrap();
    found
}
