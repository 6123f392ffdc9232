"""KIP-890 on the partition leader: before the first transactional batch of a producer's
transaction lands on a partition, the leader asks the transaction coordinator whether the
partition is in that transaction (part 1, Produce v3-11 and TxnOffsetCommit v0-4), or has
it added (part 2, Produce v12 and TxnOffsetCommit v5, whose clients skip
AddPartitionsToTxn / AddOffsetsToTxn).

Written against Kafka 4.0's behaviour (ReplicaManager, AddPartitionsToTxnManager):

- A transactional Produce (v3-v11) to a partition never added to the transaction is
  refused (INVALID_TXN_STATE; TRANSACTION_ABORTABLE from v11) and nothing is appended (the log end stays put); after
  AddPartitionsToTxn the same batch is accepted.
- Produce v12 adds the partition itself: DescribeTransactions lists it, and EndTxn commits
  it end to end (markers written, read_committed consumers see the records).
- The hanging transaction KIP-890 is about: a produce delayed until after its transaction
  was aborted (and its marker written) is refused; with
  `transaction.partition.verification.enable=false` the same produce is appended and opens
  a transaction nobody will end (the last stable offset stays stuck behind it).
- TxnOffsetCommit v3 without AddOffsetsToTxn is refused with INVALID_TXN_STATE; v5 adds
  the group's offsets partition to the transaction.
- In a three-node cluster the partition leader asks a coordinator on another node.
"""

import time
import uuid

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

import clients
import cluster
import rawkafka
from rawkafka import int8, int16, int32, int64, string, uvarint
from test_alter_configs import DELETE, SET, raw_incremental
from test_txn_coordinator import (add_partitions, describe_transactions, end_txn, init_ok,
                                  retry)
from test_txn_log import txn_batch
from test_txn_offsets import txn_offset_commit_v3, wait_group_coordinator

PRODUCE = 0
LIST_OFFSETS = 2
TXN_OFFSET_COMMIT = 28

NONE = 0
NOT_ENOUGH_REPLICAS = 19
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
CONCURRENT_TRANSACTIONS = 51
TRANSACTION_ABORTABLE = 120

READ_UNCOMMITTED, READ_COMMITTED = 0, 1
TIMEOUT_S = 30.0

BROKER_OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
}


def tid(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def compact_array(items):
    return uvarint(len(items) + 1) + b"".join(items)


def compact_bytes(value):
    return uvarint(len(value) + 1) + bytes(value)


def produce(conn, version, transactional_id, topic, batches):
    """Produce at `version` (3-12) of {partition: batch}: {partition: (error, base offset)}."""
    if version <= 8:
        results = rawkafka.produce_partitions(conn, topic, batches, version=version,
                                              transactional_id=transactional_id)
        return {p: (r.error_code, r.base_offset) for p, r in results.items()}
    tagged = rawkafka.EMPTY_TAGGED_FIELDS
    partitions = [int32(p) + compact_bytes(b) + tagged for p, b in sorted(batches.items())]
    topic_data = rawkafka.compact_string(topic) + compact_array(partitions) + tagged
    body = (rawkafka.compact_string(transactional_id) + int16(-1) + int32(10000)
            + compact_array([topic_data]) + tagged)
    reader = conn.request(PRODUCE, version, body, flexible_request=True,
                          flexible_response=True)

    def read_partition(r):
        index, error, base_offset = r.int32(), r.int16(), r.int64()
        r.int64()  # log_append_time_ms
        r.int64()  # log_start_offset
        r.compact_array(lambda rr: (rr.int32(), rr.compact_string(), rr.skip_tagged_fields()))
        r.compact_string()  # error_message
        r.skip_tagged_fields()
        return index, (error, base_offset)

    def read_topic(r):
        name = r.compact_string()
        partitions = dict(r.compact_array(read_partition))
        r.skip_tagged_fields()
        return name, partitions

    topics = dict(reader.compact_array(read_topic))
    reader.int32()  # throttle_time_ms
    reader.skip_tagged_fields()
    reader.expect_end()
    return topics[topic]


def produce_one(conn, version, transactional_id, topic, partition, batch):
    return produce(conn, version, transactional_id, topic, {partition: batch})[partition]


def produce_retrying(conn, version, transactional_id, topic, partition, batch):
    """Retries NOT_ENOUGH_REPLICAS, what a verification that could not finish answers (a
    coordinator still loading, CONCURRENT_TRANSACTIONS before v12), and from v12
    CONCURRENT_TRANSACTIONS itself (Kafka 4.0 passes it through to transactions version 2
    clients, KAFKA-18662), as clients do."""
    retriable = (NOT_ENOUGH_REPLICAS, CONCURRENT_TRANSACTIONS) if version >= 12 else (
        NOT_ENOUGH_REPLICAS,)
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        result = produce_one(conn, version, transactional_id, topic, partition, batch)
        if result[0] not in retriable or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def list_offset(conn, topic, partition, isolation):
    """ListOffsets v2 latest: the high watermark (read_uncommitted) or the last stable
    offset (read_committed)."""
    partitions = rawkafka.array([int32(partition) + int64(-1)], lambda item: item)
    body = (int32(-1) + int8(isolation)
            + rawkafka.array([string(topic) + partitions], lambda item: item))
    reader = conn.request(LIST_OFFSETS, 2, body)
    reader.int32()  # throttle
    topics = reader.array(lambda r: (r.string(), r.array(
        lambda rr: (rr.int32(), rr.int16(), rr.int64(), rr.int64()))))
    reader.expect_end()
    (_index, error, _timestamp, offset), = topics[0][1]
    assert error == NONE, f"ListOffsets answered {error}"
    return offset


def offsets(conn, topic, partition):
    """(high watermark, last stable offset)."""
    return (list_offset(conn, topic, partition, READ_UNCOMMITTED),
            list_offset(conn, topic, partition, READ_COMMITTED))


def wait_offsets(conn, topic, partition, expected, timeout_s=TIMEOUT_S):
    return clients.wait_for(lambda: offsets(conn, topic, partition) == expected, timeout_s,
                            what=f"{topic}-{partition} at (hw, lso) {expected}")


def committed_values(broker, topic, partition, count):
    messages = clients.consume(broker, topic, partition, 0, count,
                               **{"isolation.level": "read_committed"})
    return [(m.offset(), m.value()) for m in messages]


@pytest.fixture
def conn(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as connection:
        yield connection


@pytest.mark.parametrize("version", [3, 8, 11])
def test_a_partition_never_added_is_refused_then_accepted_once_added(broker, conn, topic,
                                                                     version):
    clients.create_topic(broker, topic, partitions=2)
    transactional_id = tid(f"unadded-v{version}")
    producer_id, epoch = init_ok(conn, transactional_id)
    # The transaction is ongoing (partition 0 is in it), partition 1 is not.
    assert retry(lambda: (add_partitions(conn, transactional_id, producer_id, epoch,
                                         {topic: [0]})[(topic, 0)],))[0] == NONE
    batch = txn_batch(producer_id, epoch, 0, [b"v1", b"v2"])
    refused = produce_retrying(conn, version, transactional_id, topic, 1, batch)
    # The coordinator answers TRANSACTION_ABORTABLE; Produce v11 clients know it (Kafka's
    # genericErrorSupported), older ones get INVALID_TXN_STATE.
    want = TRANSACTION_ABORTABLE if version >= 11 else INVALID_TXN_STATE
    assert refused[0] == want, refused
    assert offsets(conn, topic, 1) == (0, 0), "nothing appended"

    assert add_partitions(conn, transactional_id, producer_id, epoch,
                          {topic: [1]}) == {(topic, 1): NONE}
    assert produce_retrying(conn, version, transactional_id, topic, 1, batch) == (NONE, 0)
    assert offsets(conn, topic, 1) == (2, 0), "the transaction is open from 0"
    # The next batch of the open transaction needs no verification.
    more = txn_batch(producer_id, epoch, 2, [b"v3"])
    assert produce_one(conn, version, transactional_id, topic, 1, more) == (NONE, 2)
    assert end_txn(conn, transactional_id, producer_id, epoch, True) == NONE
    wait_offsets(conn, topic, 1, (4, 4))
    assert committed_values(broker, topic, 1, 3) == [(0, b"v1"), (1, b"v2"), (2, b"v3")]


def test_produce_v12_adds_the_partition_and_commits(broker, conn, topic):
    clients.create_topic(broker, topic, partitions=1)
    transactional_id = tid("implicit")
    producer_id, epoch = init_ok(conn, transactional_id)
    batch = txn_batch(producer_id, epoch, 0, [b"a", b"b"])
    # No AddPartitionsToTxn: the leader has the coordinator add the partition.
    assert produce_retrying(conn, 12, transactional_id, topic, 0, batch) == (NONE, 0)
    described = describe_transactions(conn, [transactional_id])[transactional_id]
    error, state, _timeout, pid, _epoch, topics = described
    assert (error, state, pid) == (NONE, "Ongoing", producer_id)
    assert topics == {topic: [0]}
    assert end_txn(conn, transactional_id, producer_id, epoch, True) == NONE
    wait_offsets(conn, topic, 0, (3, 3))
    layout = rawkafka.read_layout(conn, topic, 0)
    assert [entry.brief() for entry in layout] == [
        ("data", 0, b"a", True), ("data", 1, b"b", True), (rawkafka.MARKER_COMMIT, 2)]
    assert committed_values(broker, topic, 0, 2) == [(0, b"a"), (1, b"b")]


def plain_batch(values):
    """A batch without a producer id."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for index, value in enumerate(values):
        assert builder.append(index, timestamp=1000 + index, key=None, value=value,
                              headers=[]) is not None
    return bytes(builder.build())


@pytest.mark.parametrize("version", [3, 11, 12])
def test_transactional_batches_of_two_producers_fail_the_whole_request(broker, conn, topic,
                                                                       version):
    """Kafka 4.0 (ReplicaManager.handleProduceAppend): "Transactional records contained
    more than one producer ID" fails every partition of the request with
    INVALID_PRODUCER_ID_MAPPING, even one whose batch alone would be accepted, and nothing
    is appended."""
    clients.create_topic(broker, topic, partitions=3)
    first_id, second_id = tid(f"mixed-a-v{version}"), tid(f"mixed-b-v{version}")
    first, first_epoch = init_ok(conn, first_id)
    second, second_epoch = init_ok(conn, second_id)
    # Before v12 the producers add their partitions; v12 has the leader add them.
    for transactional_id, pid, epoch in ((first_id, first, first_epoch),
                                         (second_id, second, second_epoch)):
        if version < 12:
            assert retry(lambda: (add_partitions(conn, transactional_id, pid, epoch,
                                                 {topic: [0, 1]})[(topic, 0)],))[0] == NONE
    batches = {0: txn_batch(first, first_epoch, 0, [b"a"]),
               1: txn_batch(second, second_epoch, 0, [b"b"]),
               2: plain_batch([b"plain"])}
    answer = produce(conn, version, first_id, topic, batches)
    assert answer == {p: (INVALID_PRODUCER_ID_MAPPING, -1) for p in batches}, answer
    for partition in range(3):
        assert offsets(conn, topic, partition) == (0, 0), "nothing appended"
    # The same producer at two epochs counts as two as well.
    bumped = {0: txn_batch(first, first_epoch, 0, [b"a"]),
              1: txn_batch(first, first_epoch + 1, 0, [b"b"])}
    answer = produce(conn, version, first_id, topic, bumped)
    assert answer == {p: (INVALID_PRODUCER_ID_MAPPING, -1) for p in bumped}, answer
    # One producer in the request: each partition is appended.
    alone = {0: txn_batch(first, first_epoch, 0, [b"a"]),
             1: txn_batch(first, first_epoch, 0, [b"b"])}
    assert produce(conn, version, first_id, topic, alone) == {0: (NONE, 0), 1: (NONE, 0)}
    assert end_txn(conn, first_id, first, first_epoch, False) == NONE
    if version < 12:
        assert end_txn(conn, second_id, second, second_epoch, False) == NONE


def abort_then_produce_late(conn, topic, transactional_id, version):
    """Begin, add the partition, abort (marker written), then the produce that was meant
    for the aborted transaction arrives: its answer, and (hw, lso) after it."""
    producer_id, epoch = init_ok(conn, transactional_id)
    assert retry(lambda: (add_partitions(conn, transactional_id, producer_id, epoch,
                                         {topic: [0]})[(topic, 0)],))[0] == NONE
    assert end_txn(conn, transactional_id, producer_id, epoch, False) == NONE
    wait_offsets(conn, topic, 0, (1, 1))  # the abort marker alone
    late = txn_batch(producer_id, epoch, 0, [b"late"])
    # Retried while the coordinator still completes the abort (CONCURRENT_TRANSACTIONS).
    answer = produce_retrying(conn, version, transactional_id, topic, 0, late)
    return answer, offsets(conn, topic, 0)


def test_a_late_produce_after_the_abort_cannot_open_a_hanging_transaction(broker, conn,
                                                                          topic):
    clients.create_topic(broker, topic, partitions=1)
    answer, after = abort_then_produce_late(conn, topic, tid("late"), 8)
    assert answer[0] == INVALID_TXN_STATE, answer
    assert after == (1, 1), "nothing appended, nothing left open"


def test_without_verification_the_late_produce_hangs_the_partition(start_broker, topic):
    """`transaction.partition.verification.enable=false`: the behaviour before KIP-890."""
    unverified = start_broker("txn-unverified", dict(
        BROKER_OVERRIDES, **{"transaction.partition.verification.enable": "false"}))
    try:
        clients.create_topic(unverified, topic, partitions=1)
        with rawkafka.Connection("127.0.0.1", unverified.port) as connection:
            answer, after = abort_then_produce_late(connection, topic, tid("hang"), 8)
            assert answer == (NONE, 1), answer
            assert after == (2, 1), "the late record opened a transaction at 1"
            # Still stuck a moment later: no coordinator knows about that transaction.
            time.sleep(1.0)
            assert offsets(connection, topic, 0) == (2, 1)
    finally:
        unverified.stop()


def test_verification_is_a_dynamic_broker_config(start_broker, topic):
    """`transaction.partition.verification.enable` set through IncrementalAlterConfigs
    (cluster-wide default) applies to the next produce: off, the late produce hangs the
    partition; back on, it is refused again. No restart."""
    node = start_broker("txn-verify-live", BROKER_OVERRIDES)
    key = "transaction.partition.verification.enable"
    try:
        names = [f"{topic}-on", f"{topic}-off", f"{topic}-on-again"]
        for name in names:
            clients.create_topic(node, name, partitions=1)
        with rawkafka.Connection("127.0.0.1", node.port) as connection:
            answer, after = abort_then_produce_late(connection, names[0], tid("on"), 8)
            assert (answer[0], after) == (INVALID_TXN_STATE, (1, 1)), answer
            assert raw_incremental(node, 4, "", [(key, SET, "false")]) == (0, None)
            answer, after = abort_then_produce_late(connection, names[1], tid("off"), 8)
            assert (answer, after) == ((NONE, 1), (2, 1)), answer
            assert raw_incremental(node, 4, "", [(key, DELETE, None)]) == (0, None)
            answer, after = abort_then_produce_late(connection, names[2], tid("again"), 8)
            assert (answer[0], after) == (INVALID_TXN_STATE, (1, 1)), answer
    finally:
        node.stop()


def test_txn_offset_commit_verifies_v3_and_adds_v5(broker, conn, topic):
    clients.create_topic(broker, topic, partitions=1)
    group = f"group-{uuid.uuid4().hex[:8]}"
    wait_group_coordinator(conn, group)
    transactional_id = tid("offsets")
    producer_id, epoch = init_ok(conn, transactional_id)
    commit = {(topic, 0): 5}
    # v3 without AddOffsetsToTxn: the offsets partition is not in the transaction.
    refused = txn_offset_commit_v3(conn, transactional_id, group, producer_id, epoch, commit)
    assert refused == {(topic, 0): INVALID_TXN_STATE}
    # v5 (transactions version 2 clients skip AddOffsetsToTxn): added implicitly.
    added = retry(lambda: (txn_offset_commit(conn, 5, transactional_id, group, producer_id,
                                             epoch, commit)[(topic, 0)],))
    assert added == (NONE,)
    _error, state, _t, _pid, _epoch, topics = describe_transactions(
        conn, [transactional_id])[transactional_id]
    assert state == "Ongoing"
    assert list(topics) == ["__consumer_offsets"], topics
    assert end_txn(conn, transactional_id, producer_id, epoch, True) == NONE


def txn_offset_commit(conn, version, transactional_id, group, producer_id, epoch, offsets):
    """TxnOffsetCommit v3-v5 (same layout): {(topic, partition): error}."""
    tagged = rawkafka.EMPTY_TAGGED_FIELDS
    by_topic = {}
    for (topic, partition), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, []).append(
            int32(partition) + int64(offset) + int32(-1) + rawkafka.compact_string("txn")
            + tagged)
    topics = [rawkafka.compact_string(name) + compact_array(parts) + tagged
              for name, parts in by_topic.items()]
    body = (rawkafka.compact_string(transactional_id) + rawkafka.compact_string(group)
            + int64(producer_id) + int16(epoch) + int32(-1) + rawkafka.compact_string("")
            + rawkafka.compact_string(None) + compact_array(topics) + tagged)
    reader = conn.request(TXN_OFFSET_COMMIT, version, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()

    def read_partition(r):
        partition, error = r.int32(), r.int16()
        r.skip_tagged_fields()
        return partition, error

    def read_topic(r):
        name = r.compact_string()
        partitions = r.compact_array(read_partition)
        r.skip_tagged_fields()
        return name, partitions

    out = {}
    for name, partitions in reader.compact_array(read_topic):
        for partition, error in partitions:
            out[(name, partition)] = error
    reader.skip_tagged_fields()
    reader.expect_end()
    return out


# ---------------------------------------------------------------- three nodes

CLUSTER_OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
}


@pytest.fixture(scope="module")
def three(data_root):
    nodes = cluster.Cluster(3, data_root, overrides=CLUSTER_OVERRIDES)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


def coordinator_of(three, transactional_id):
    def named():
        error, node_id, _host, _port = three.node(1).call(
            cluster.find_coordinator_v1, transactional_id, 1)
        if error == cluster.NONE and node_id >= 0:
            return node_id
        raise AssertionError(f"FindCoordinator: error {error}, node {node_id}")
    return cluster.wait_until(named, 60, what=f"a coordinator for {transactional_id}")


@pytest.mark.parametrize("version", [8, 12])
def test_the_leader_asks_a_coordinator_on_another_node(three, topic, version):
    transactional_id = tid(f"remote-v{version}")
    coordinator = coordinator_of(three, transactional_id)
    leader = next(i for i in three.node_ids() if i != coordinator)
    three.create_topic(leader, topic, assignments={0: [leader]})
    three.wait_topic_everywhere(topic, partitions=1)
    with three.node(coordinator).connect() as at_coordinator, \
            three.node(leader).connect() as at_leader:
        producer_id, epoch = init_ok(at_coordinator, transactional_id)
        batch = txn_batch(producer_id, epoch, 0, [b"x", b"y"])
        if version < 12:
            refused = produce_retrying(at_leader, version, transactional_id, topic, 0, batch)
            assert refused[0] == INVALID_TXN_STATE, refused
            assert offsets(at_leader, topic, 0) == (0, 0)
            added = add_partitions(at_coordinator, transactional_id, producer_id, epoch,
                                   {topic: [0]})
            assert added == {(topic, 0): NONE}
        assert produce_retrying(at_leader, version, transactional_id, topic, 0,
                                batch) == (NONE, 0)
        _e, state, _t, _p, _ep, topics = describe_transactions(
            at_coordinator, [transactional_id])[transactional_id]
        assert (state, topics) == ("Ongoing", {topic: [0]})
        assert end_txn(at_coordinator, transactional_id, producer_id, epoch, True) == NONE
        wait_offsets(at_leader, topic, 0, (3, 3))
        layout = rawkafka.read_layout(at_leader, topic, 0)
        assert [entry.kind for entry in layout] == ["data", "data", rawkafka.MARKER_COMMIT]
