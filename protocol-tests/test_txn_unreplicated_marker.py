"""A transaction marker the ISR has not replicated yet does not move the LSO (three nodes).

Kafka keeps a transaction unstable on the leader until the high watermark passes its
marker (ProducerStateManager's unreplicated transactions): LSO = min(first unstable
offset, HW). A leader that let read_committed consumers read a transaction as soon as its
marker was appended locally would show them records whose outcome is not durable: if it
died, the new leader may hold no marker at all.

Layout: the transactional id's coordinator C (`__transaction_state` replication factor 1,
so ending a transaction never waits on the paused node); the data topic has replication
factor 3 and min.insync.replicas 2, replicas [L, C, F] led by L; F is the follower that is
paused or left alone.

test_marker_above_hw_is_not_read_committed (commit and abort):
  1. N records in a transaction, acknowledged by the whole ISR (HW = N on L).
  2. F is SIGSTOPped; it stays in the ISR until it is fenced (broker session 10 s here), so
     the HW cannot pass the marker while it is paused.
  3. commit_transaction() (abort_transaction()) returns; the marker is appended on L
     (DescribeProducers on L: no open transaction) but not replicated (HW = N).
  4. read_committed on L (raw Fetch and a confluent consumer) sees nothing: LSO 0 <= HW N.
  5. F resumes; once the marker is below the HW (LSO = HW = N + 1) read_committed sees
     exactly the N records at offsets 0..N-1 (commit) or nothing (abort).

test_leader_killed_right_after_commit: an aborted transaction of A records, then a
committed one of B records; L is killed with SIGKILL as soon as commit_transaction()
returns. The new leader (C or F, both in the ISR) gets the marker (replicated, or written
again by the coordinator) and read_committed there sees exactly the B committed records
at offsets A+1..A+B, none of the aborted ones.
"""

import time
import uuid

import pytest

import cluster
import rawkafka
from test_describe_producers import producers_on
from test_transactions_cluster import (CALL_TIMEOUT_S, FAILOVER_TIMEOUT_S, find_txn_coordinator,
                                       layout_on, read_committed, settled,
                                       transactional_producer, write_records)

COMMIT, ABORT = rawkafka.MARKER_COMMIT, rawkafka.MARKER_ABORT
READ_COMMITTED = 1
RECORDS = 5
# Long enough that the paused follower is still in the ISR while the test looks (fenced
# after the broker session timeout, dropped by its leader after replica.lag.time.max.ms).
SESSION_TIMEOUT_MS = 10000
OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "offsets.topic.num.partitions": "3",
    "replica.lag.time.max.ms": "10000",
}
MARKER_APPENDED_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def three(data_root):
    nodes = cluster.Cluster(3, data_root, overrides=OVERRIDES,
                            session_timeout_ms=SESSION_TIMEOUT_MS)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


def setup_partition(three, topic):
    """A transactional id with coordinator C and topic/0 on [L, C, F] led by L, its ISR
    full; returns (transactional id, C, L, F)."""
    transactional_id = f"txn-{uuid.uuid4().hex[:8]}"
    coordinator = find_txn_coordinator(three, transactional_id, via=1)
    leader, follower = [i for i in three.node_ids() if i != coordinator]
    error = three.node(coordinator).create_topic(
        topic, assignments={0: [leader, coordinator, follower]},
        configs={"min.insync.replicas": "2"})
    assert error[0] == cluster.NONE, error

    def full_isr():
        partition = three.node(leader).metadata([topic])["topics"][topic]["partitions"][0]
        assert partition["leader"] == leader and sorted(partition["isr"]) == [1, 2, 3], \
            partition
        return True

    cluster.wait_until(full_isr, 30, what=f"{topic} led by {leader} with a full ISR")
    return transactional_id, coordinator, leader, follower


def fetch_committed(three, node_id, topic):
    with three.node(node_id).connect(timeout_s=10) as conn:
        result = rawkafka.fetch(conn, topic, 0, 0, isolation_level=READ_COMMITTED)
    assert result.error_code == cluster.NONE, f"Fetch error {result.error_code}"
    return result


def open_transactions(three, node_id, topic):
    """Producer ids with an open transaction on node_id's replica (DescribeProducers)."""
    return {pid for pid, producer in producers_on(three.node(node_id), topic).items()
            if producer["txn_start_offset"] >= 0}


def expected(prefix, first_offset, count):
    return [(first_offset + i, b"%s-%d" % (prefix, i)) for i in range(count)]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("outcome", [COMMIT, ABORT])
def test_marker_above_hw_is_not_read_committed(three, topic, outcome):
    transactional_id, coordinator, leader, follower = setup_partition(three, topic)
    print(f"coordinator {coordinator}, leader {leader}, paused follower {follower}")
    producer = transactional_producer(three, transactional_id)
    try:
        producer.init_transactions(CALL_TIMEOUT_S)
        write_records(producer, topic, RECORDS, prefix=b"data")
        assert [e.brief() for e in layout_on(three, leader, topic)] == \
            [("data", i, b"data-%d" % i, True) for i in range(RECORDS)]
        (open_pid,) = open_transactions(three, leader, topic)

        three.pause(follower)
        paused_at = time.monotonic()
        try:
            if outcome == COMMIT:
                producer.commit_transaction(CALL_TIMEOUT_S)
            else:
                producer.abort_transaction(CALL_TIMEOUT_S)
            # The marker is on the leader once its producer state closed the transaction.
            cluster.wait_until(lambda: open_pid not in open_transactions(three, leader, topic),
                               MARKER_APPENDED_TIMEOUT_S, what=f"the {outcome} marker on L")
            result = fetch_committed(three, leader, topic)
            looked_after_s = time.monotonic() - paused_at
            print(f"{outcome} marker appended on {leader}, follower paused for "
                  f"{looked_after_s:.1f} s: HW {result.high_watermark}, "
                  f"LSO {result.last_stable_offset}")
            # The marker (offset N) is not below the HW: the paused follower is in the ISR.
            assert result.high_watermark == RECORDS, (result.high_watermark, looked_after_s)
            assert result.last_stable_offset == 0, result.last_stable_offset
            assert result.last_stable_offset <= result.high_watermark
            assert not result.batches(), "read_committed Fetch returned records below LSO 0"
            assert read_committed(three, topic, [leader]) == []
            assert time.monotonic() - paused_at < SESSION_TIMEOUT_MS / 1000, \
                "looked too late: the follower may have been fenced meanwhile"
        finally:
            three.resume(follower)

        entries = cluster.wait_until(lambda: settled(three, leader, topic), FAILOVER_TIMEOUT_S,
                                     what="the marker below the HW")
        assert [e.brief() for e in entries] == \
            [("data", i, b"data-%d" % i, True) for i in range(RECORDS)] + [(outcome, RECORDS)]
        result = fetch_committed(three, leader, topic)
        assert result.last_stable_offset == result.high_watermark == RECORDS + 1
        want = expected(b"data", 0, RECORDS) if outcome == COMMIT else []
        assert read_committed(three, topic, [leader]) == want
    finally:
        producer.flush(5)


@pytest.mark.timeout(300)
def test_leader_killed_right_after_commit(three, topic):
    transactional_id, coordinator, leader, follower = setup_partition(three, topic)
    print(f"coordinator {coordinator}, leader {leader} (killed), follower {follower}")
    producer = transactional_producer(three, transactional_id)
    aborted, committed = 3, RECORDS
    try:
        producer.init_transactions(CALL_TIMEOUT_S)
        write_records(producer, topic, aborted, prefix=b"aborted")
        producer.abort_transaction(CALL_TIMEOUT_S)
        write_records(producer, topic, committed, prefix=b"committed")
        producer.commit_transaction(CALL_TIMEOUT_S)
        three.kill(leader)
        try:
            def new_leader():
                partition = three.node(coordinator).metadata([topic])["topics"][topic][
                    "partitions"][0]
                assert partition["leader"] in (coordinator, follower), partition
                return partition["leader"]

            elected = cluster.wait_until(new_leader, FAILOVER_TIMEOUT_S,
                                         what=f"a new leader of {topic} after {leader}")
            print(f"node {elected} leads {topic} after node {leader} was killed")
            def committed_there():
                # A new leader's HW can trail its log for a moment, with the LSO equal to
                # it: settled is not enough, the commit marker must be below the HW.
                entries = settled(three, elected, topic)
                assert any(e.kind == COMMIT for e in entries), entries
                return entries

            entries = cluster.wait_until(committed_there, FAILOVER_TIMEOUT_S,
                                         what="the commit marker below the new leader's HW")
            data = [e.brief() for e in entries if e.kind == "data"]
            markers = [e.brief() for e in entries if e.kind != "data"]
            first_committed = aborted + 1
            assert data == \
                [("data", i, b"aborted-%d" % i, True) for i in range(aborted)] + \
                [("data", first_committed + i, b"committed-%d" % i, True)
                 for i in range(committed)], entries
            # The coordinator may write the commit marker again at the new leader when the
            # old one died before answering: one or two, never an abort.
            commit_at = first_committed + committed
            assert markers[0] == (ABORT, aborted), entries
            assert markers[1:] in ([(COMMIT, commit_at)],
                                   [(COMMIT, commit_at), (COMMIT, commit_at + 1)]), entries
            seen = read_committed(three, topic, [elected])
            assert seen == expected(b"committed", first_committed, committed), seen
        finally:
            three.restart(leader)
    finally:
        producer.flush(5)
