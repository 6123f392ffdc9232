"""Transactions (issue 10) through real clients, on one broker.

Written against Kafka's documented behaviour (KIP-98, KIP-447, KIP-588), so a failure here
is the broker's unless a finding in the README says otherwise:

- Every transaction ends with one control batch (a commit or abort marker) that takes one
  offset: a transaction of 3 records at 0..2 has its marker at 3, the next one starts at 4.
  Markers are never handed to clients; the raw layout (Fetch v4, read_uncommitted) is
  checked record by record, marker type included.
- read_committed sees committed records only, at their offsets; read_uncommitted sees every
  data record, aborted ones too. The last stable offset (LSO) is the first offset of the
  oldest open transaction (the high watermark when none is open): ListOffsets latest with
  isolation_level=1 answers it, Fetch reports it, and a read_committed consumer reads up to
  it and no further, also not the non-transactional records written after it.
- consume-transform-produce: the offsets sent with `send_offsets_to_transaction` become the
  group's committed offsets when, and only when, the transaction commits.
- Fencing: a second producer's InitProducerId for the same transactional.id aborts the first
  one's open transaction and fences it: its later writes are refused (nothing appended) and
  its commit fails with a fatal fenced error.
- Kill -9 and SIGTERM restarts keep the aborted transaction hidden, the LSO at the open
  one, and the coordinator's state, so the open transaction commits afterwards.
- The coordinator aborts a transaction its (killed) producer left open once
  `transaction.timeout.ms` passed; read_committed consumers behind it move on.
- `transaction.timeout.ms` above `transaction.max.timeout.ms` -> INVALID_TRANSACTION_TIMEOUT.
- DescribeTransactions and ListTransactions (hand-encoded v0) name the states as Kafka
  does ("Ongoing", "CompleteCommit").
- The same commit/abort flow with aiokafka and kafka-python (both transactional), read back
  by their own read_committed consumers and by confluent-kafka's.
"""

import asyncio
import sys
import time
import uuid

import kafka
import pytest
from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import OffsetSpec

import clients
import rawkafka

BROKER_OVERRIDES = {
    "transaction.state.log.num.partitions": "5",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.max.timeout.ms": "60000",
    # Kafka's default is 10 s; the killed-producer test waits for it.
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    "offsets.topic.num.partitions": "5",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "6000",
}

TXN_TIMEOUT_MS = 30000
CALL_TIMEOUT_S = 30.0
# How long a read_committed consumer must stay blocked to count as blocked.
BLOCKED_S = 2.0
# librdkafka's fatal "fenced" error, and what the broker may answer to a zombie
# (PRODUCER_FENCED from the coordinator, INVALID_PRODUCER_EPOCH from a partition, KIP-588).
FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                KafkaError.INVALID_PRODUCER_EPOCH}

COMMIT, ABORT = rawkafka.MARKER_COMMIT, rawkafka.MARKER_ABORT


# ---------------------------------------------------------------- helpers


def tid(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def txn_producer(broker, transactional_id, **extra):
    """A confluent transactional producer (idempotence is implied); init not yet called."""
    config = {"transactional.id": transactional_id,
              "transaction.timeout.ms": TXN_TIMEOUT_MS,
              # librdkafka requires message.timeout.ms <= transaction.timeout.ms.
              "message.timeout.ms": min(TXN_TIMEOUT_MS, 30000)}
    config.update(extra)
    return clients.producer(broker, **config)


def deliver(producer, topic, values, partition=0):
    """Produces values to topic/partition inside the producer's open transaction and
    waits for their delivery reports; returns their offsets."""
    reports = {}

    def on_delivery(error, message):
        reports[message.value()] = (error, message.offset())

    for value in values:
        producer.produce(topic, value=value, partition=partition, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(CALL_TIMEOUT_S) == 0, "records still undelivered"
    errors = {v: e for v, (e, _o) in reports.items() if e is not None}
    assert not errors, f"delivery failed: {errors}"
    return [reports[value][1] for value in values]


def transaction(producer, topic, values, outcome, partition=0):
    """One whole transaction: begin, produce values, commit or abort; returns offsets."""
    producer.begin_transaction()
    offsets = deliver(producer, topic, values, partition)
    if outcome == COMMIT:
        producer.commit_transaction(CALL_TIMEOUT_S)
    else:
        producer.abort_transaction(CALL_TIMEOUT_S)
    return offsets


def visible(broker, topic, partition, isolation, start=0, timeout_s=CALL_TIMEOUT_S, **extra):
    """[(offset, value)] a confluent consumer with isolation.level=isolation reads from
    start until its end of partition (the LSO for read_committed, the high watermark for
    read_uncommitted), and the consumer's position there."""
    consumer = clients.consumer(broker, **{"isolation.level": isolation,
                                           "enable.partition.eof": True, **extra})
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        out = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    position = consumer.position([TopicPartition(topic, partition)])[0]
                    return out, position.offset
                raise KafkaException(error)
            out.append((message.offset(), message.value()))
        raise AssertionError(f"{isolation} consumer did not reach the end of "
                             f"{topic}-{partition} in {timeout_s:.0f} s; read {out}")
    finally:
        consumer.close()


def layout(broker, topic, partition):
    """The partition as stored, read raw (Fetch v4, read_uncommitted) up to the high
    watermark: [("data", offset, value, transactional) | (COMMIT|ABORT, offset)]."""
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        return [entry.brief() for entry in rawkafka.read_layout(conn, topic, partition)]


def fetch_v4(broker, topic, partition, offset, isolation):
    """Fetch v4 of one partition at isolation level 0 or 1: (high watermark, LSO,
    aborted transactions [(producer id, first offset)] or None, [(base offset, last
    offset, control)] of the batches returned)."""
    from rawkafka import array, int8, int32, int64, string

    partitions = array([int32(partition) + int64(offset) + int32(1 << 20)], lambda i: i)
    body = (int32(-1) + int32(0) + int32(1) + int32(1 << 20) + int8(isolation)
            + array([string(topic) + partitions], lambda i: i))
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        reader = conn.request(rawkafka.FETCH, 4, body)
    reader.int32()  # throttle_time_ms

    def read_partition(r):
        index, error, high, lso = r.int32(), r.int16(), r.int64(), r.int64()
        aborted = r.array(lambda rr: (rr.int64(), rr.int64()))
        records = r.nullable_bytes()
        assert error == 0, f"Fetch error {error}"
        result = rawkafka.PartitionFetchResult(error, high, lso, records)
        batches = [(b.base_offset, b.last_offset, b.is_control_batch)
                   for b in result.batches()]
        return index, (high, lso, aborted, batches)

    topics = reader.array(lambda r: (r.string(), dict(r.array(read_partition))))
    reader.expect_end()
    return dict(topics)[topic][partition]


def hw_and_lso(broker, topic, partition):
    """(high watermark, last stable offset) as Fetch v4 reports them."""
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        result = rawkafka.fetch(conn, topic, partition, 0, max_bytes=1, partition_max_bytes=1)
        assert result.error_code == 0, f"Fetch error {result.error_code}"
        return result.high_watermark, result.last_stable_offset


def wait_settled(broker, topic, partition, end, timeout_s=15.0):
    """Waits until the high watermark and the LSO are both `end`. commit_transaction()
    and abort_transaction() return once the coordinator decided (PrepareCommit or
    PrepareAbort written); Kafka writes the markers after that, asynchronously."""
    clients.wait_for(lambda: _settled_at(broker, topic, partition, end), timeout_s,
                     interval_s=0.05, what=f"{topic}-{partition} to settle at {end}")


def _settled_at(broker, topic, partition, end):
    got = hw_and_lso(broker, topic, partition)
    if got != (end, end):
        raise AssertionError(f"(HW, LSO) = {got}, want ({end}, {end})")
    return True


def listed(broker, topic, partition, spec, isolation):
    """ListOffsets through confluent's AdminClient at the given isolation level."""
    admin = clients.admin(broker)
    tp = TopicPartition(topic, partition)
    futures = admin.list_offsets({tp: spec}, isolation_level=isolation,
                                 request_timeout=CALL_TIMEOUT_S)
    return futures[tp].result(timeout=CALL_TIMEOUT_S).offset


def latest(broker, topic, partition, isolation):
    return listed(broker, topic, partition, OffsetSpec.latest(), isolation)


def offsets_seen(broker, topic, partition, expected_hw, expected_lso):
    """Asserts the HW and LSO through Fetch, ListOffsets (both isolation levels) and a
    consumer's get_watermark_offsets."""
    assert hw_and_lso(broker, topic, partition) == (expected_hw, expected_lso)
    assert latest(broker, topic, partition, IsolationLevel.READ_UNCOMMITTED) == expected_hw
    assert latest(broker, topic, partition, IsolationLevel.READ_COMMITTED) == expected_lso
    for isolation, want in (("read_uncommitted", expected_hw),
                            ("read_committed", expected_lso)):
        consumer = clients.consumer(broker, **{"isolation.level": isolation})
        try:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                        timeout=10, cached=False)
        finally:
            consumer.close()
        assert high == want, f"{isolation} get_watermark_offsets: {high}, want {want}"


def assert_blocked(consumer, what, seconds=BLOCKED_S):
    """Polls consumer for `seconds`; fails if it delivers a record."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            raise AssertionError(f"{what}: read {message.offset()} {message.value()!r}")


def poll_records(consumer, count, timeout_s=CALL_TIMEOUT_S):
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error() is not None:
            if message.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(message.error())
        out.append((message.offset(), message.value()))
    assert len(out) == count, f"read {out}, want {count} records"
    return out


def wait_position(consumer, topic, partition, want, timeout_s=10.0):
    """Polls (delivering nothing) until the consumer's position is `want`: librdkafka
    moves the position past a control batch only when it processes the fetch."""
    tp = TopicPartition(topic, partition)

    def moved():
        message = consumer.poll(0.1)
        assert message is None or message.error() is not None, \
            f"unexpected record at {message.offset()}"
        position = consumer.position([tp])[0].offset
        if position != want:
            raise AssertionError(f"position {position}, want {want}")
        return True
    clients.wait_for(moved, timeout_s, interval_s=0.05, what=f"position {want}")


# ---------------------------------------------------------------- commit, abort, LSO


def test_commit_and_abort_markers_take_one_offset_each(broker, topic):
    clients.create_topic(broker, topic)
    producer = txn_producer(broker, tid("commit-abort"))
    producer.init_transactions(CALL_TIMEOUT_S)
    assert transaction(producer, topic, [b"a0", b"a1", b"a2"], COMMIT) == [0, 1, 2]
    assert transaction(producer, topic, [b"b0", b"b1"], ABORT) == [4, 5]
    assert transaction(producer, topic, [b"c0", b"c1"], COMMIT) == [7, 8]
    wait_settled(broker, topic, 0, 10)

    assert layout(broker, topic, 0) == [
        ("data", 0, b"a0", True), ("data", 1, b"a1", True), ("data", 2, b"a2", True),
        (COMMIT, 3),
        ("data", 4, b"b0", True), ("data", 5, b"b1", True),
        (ABORT, 6),
        ("data", 7, b"c0", True), ("data", 8, b"c1", True),
        (COMMIT, 9)]
    offsets_seen(broker, topic, 0, expected_hw=10, expected_lso=10)

    # Fetch names the aborted transaction (producer id, first offset) to read_committed
    # fetches whose range it overlaps, and to read_uncommitted ones never (librdkafka
    # logs an error if it gets one there).
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        (producer_id,) = {e.producer_id for e in rawkafka.read_layout(conn, topic, 0)}
    high, lso, aborted, batches = fetch_v4(broker, topic, 0, 0, isolation=1)
    assert (high, lso, aborted) == (10, 10, [(producer_id, 4)])
    assert [b for b in batches if b[2]] == [(3, 3, True), (6, 6, True), (9, 9, True)]
    assert fetch_v4(broker, topic, 0, 0, isolation=0)[2] in (None, [])
    assert fetch_v4(broker, topic, 0, 5, isolation=1)[2] == [(producer_id, 4)]
    assert fetch_v4(broker, topic, 0, 7, isolation=1)[2] == [], \
        "a transaction aborted before the fetch offset is not named"

    committed, position = visible(broker, topic, 0, "read_committed")
    assert committed == [(0, b"a0"), (1, b"a1"), (2, b"a2"), (7, b"c0"), (8, b"c1")]
    assert position == 10, "the position moves past the last marker, as Kafka's does"
    everything, position = visible(broker, topic, 0, "read_uncommitted")
    assert everything == [(0, b"a0"), (1, b"a1"), (2, b"a2"), (4, b"b0"), (5, b"b1"),
                          (7, b"c0"), (8, b"c1")]
    assert position == 10
    # From inside the aborted transaction: read_committed skips to the next commit.
    committed, _ = visible(broker, topic, 0, "read_committed", start=5)
    assert committed == [(7, b"c0"), (8, b"c1")]
    producer.flush(5)


def test_lso_stays_at_an_open_transaction_and_blocks_read_committed(broker, topic):
    clients.create_topic(broker, topic)
    producer = txn_producer(broker, tid("open"))
    producer.init_transactions(CALL_TIMEOUT_S)
    assert transaction(producer, topic, [b"a0", b"a1"], COMMIT) == [0, 1]
    wait_settled(broker, topic, 0, 3)
    offsets_seen(broker, topic, 0, expected_hw=3, expected_lso=3)

    producer.begin_transaction()
    before_d0_ms = int(time.time() * 1000) - 1
    assert deliver(producer, topic, [b"d0"]) == [3]
    # A non-transactional record after the open transaction's first one: the LSO does not
    # pass the open transaction, so read_committed cannot see this one either.
    plain = clients.produce_ok(broker, topic, [{"value": b"plain", "partition": 0}],
                               **{"enable.idempotence": True})
    assert plain[0].offset() == 4
    assert deliver(producer, topic, [b"d1"]) == [5]
    offsets_seen(broker, topic, 0, expected_hw=6, expected_lso=3)
    # By timestamp, as Kafka's lastFetchableOffset bounds it: read_committed finds nothing
    # at or past the LSO (-1), read_uncommitted finds the open transaction's record.
    for spec in (OffsetSpec.for_timestamp(before_d0_ms), OffsetSpec.max_timestamp()):
        assert listed(broker, topic, 0, spec, IsolationLevel.READ_UNCOMMITTED) >= 3
        assert listed(broker, topic, 0, spec, IsolationLevel.READ_COMMITTED) == -1

    committed, position = visible(broker, topic, 0, "read_committed")
    assert committed == [(0, b"a0"), (1, b"a1")]
    assert position == 3, "read_committed stops at the LSO (the open transaction)"
    everything, _ = visible(broker, topic, 0, "read_uncommitted")
    assert everything == [(0, b"a0"), (1, b"a1"), (3, b"d0"), (4, b"plain"), (5, b"d1")]

    reader = clients.consumer(broker, **{"isolation.level": "read_committed"})
    try:
        reader.assign([TopicPartition(topic, 0, 3)])
        # (No position check here: librdkafka reports none until it has delivered a record.)
        assert_blocked(reader, "read_committed read past an open transaction")
        producer.commit_transaction(CALL_TIMEOUT_S)
        assert poll_records(reader, 3) == [(3, b"d0"), (4, b"plain"), (5, b"d1")]
        wait_position(reader, topic, 0, 7)
    finally:
        reader.close()
    assert layout(broker, topic, 0)[-1] == (COMMIT, 6)
    offsets_seen(broker, topic, 0, expected_hw=7, expected_lso=7)

    # An open transaction that is aborted: the LSO jumps over it, nothing of it shows.
    producer.begin_transaction()
    assert deliver(producer, topic, [b"e0", b"e1"]) == [7, 8]
    offsets_seen(broker, topic, 0, expected_hw=9, expected_lso=7)
    producer.abort_transaction(CALL_TIMEOUT_S)
    wait_settled(broker, topic, 0, 10)
    offsets_seen(broker, topic, 0, expected_hw=10, expected_lso=10)
    committed, position = visible(broker, topic, 0, "read_committed", start=7)
    assert committed == [] and position == 10


def test_interleaved_transactions_only_the_aborted_records_are_dropped(broker, topic):
    """Two producers' transactions interleave in two partitions; one aborts. Fetch must
    name the aborted transaction so that read_committed drops exactly its records."""
    clients.create_topic(broker, topic, partitions=2)
    keep = txn_producer(broker, tid("keep"))
    drop = txn_producer(broker, tid("drop"))
    keep.init_transactions(CALL_TIMEOUT_S)
    drop.init_transactions(CALL_TIMEOUT_S)
    keep.begin_transaction()
    drop.begin_transaction()
    stored = {0: [], 1: []}
    for index in range(6):
        for producer, name in ((keep, b"keep"), (drop, b"drop")):
            partition = index % 2
            value = b"%s-%d" % (name, index)
            (offset,) = deliver(producer, topic, [value], partition)
            stored[partition].append((offset, value))
    drop.abort_transaction(CALL_TIMEOUT_S)
    # The abort's markers first (written asynchronously), so that the layout is fixed.
    for partition in (0, 1):
        clients.wait_for(lambda: layout(broker, topic, partition)[6:] == [(ABORT, 6)], 15,
                         what=f"the abort marker in partition {partition}")
    keep.commit_transaction(CALL_TIMEOUT_S)
    for partition in (0, 1):
        data = stored[partition]
        assert [o for o, _ in data] == list(range(6)), f"partition {partition}: {data}"
        wait_settled(broker, topic, partition, 8)
        assert layout(broker, topic, partition)[6:] == [(ABORT, 6), (COMMIT, 7)]
        offsets_seen(broker, topic, partition, expected_hw=8, expected_lso=8)
        committed, _ = visible(broker, topic, partition, "read_committed")
        assert committed == [(o, v) for o, v in data if v.startswith(b"keep")]
        everything, _ = visible(broker, topic, partition, "read_uncommitted")
        assert everything == data
        # kafka-python drops aborted records with the same aborted-transaction list.
        records = clients.kp_consume(broker, topic, partition, 0, 3,
                                     isolation_level="read_committed")
        assert [(r.offset, r.value) for r in records] == committed


def test_transactions_survive_broker_restarts(start_broker, topic):
    """The log keeps what read_committed needs across a kill -9 and a clean restart: the
    aborted transaction stays hidden (the aborted-transaction index), the open one keeps
    the LSO at its first offset (producer state rebuilt), and the coordinator's state
    (`__transaction_state`) lets the producer commit the open transaction afterwards."""
    broker = start_broker("txn-restart", BROKER_OVERRIDES)
    clients.create_topic(broker, topic)
    # The broker's maximum: the open transaction must outlive two restarts.
    producer = txn_producer(broker, tid("restart"), **{"transaction.timeout.ms": 60000})
    producer.init_transactions(CALL_TIMEOUT_S)
    assert transaction(producer, topic, [b"a0", b"a1"], COMMIT) == [0, 1]
    assert transaction(producer, topic, [b"b0"], ABORT) == [3]
    producer.begin_transaction()
    assert deliver(producer, topic, [b"c0"]) == [5]
    before = layout(broker, topic, 0)
    assert before == [("data", 0, b"a0", True), ("data", 1, b"a1", True), (COMMIT, 2),
                      ("data", 3, b"b0", True), (ABORT, 4), ("data", 5, b"c0", True)]
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        (producer_id,) = {e.producer_id for e in rawkafka.read_layout(conn, topic, 0)}

    for hard in (True, False):
        broker.restart(hard=hard)
        what = "kill -9" if hard else "SIGTERM"
        assert layout(broker, topic, 0) == before, f"the log changed across a {what}"
        high, lso, aborted, _batches = fetch_v4(broker, topic, 0, 0, isolation=1)
        assert (high, lso) == (6, 5), f"HW/LSO after a {what}: {(high, lso)}"
        assert aborted == [(producer_id, 3)], f"aborted transactions after a {what}"
        committed, position = visible(broker, topic, 0, "read_committed")
        assert committed == [(0, b"a0"), (1, b"a1")] and position == 5, what
        committed, _ = visible(broker, topic, 0, "read_committed", start=3)
        assert committed == [], f"the aborted record shows after a {what}"

    producer.commit_transaction(CALL_TIMEOUT_S)
    wait_settled(broker, topic, 0, 7)
    assert layout(broker, topic, 0)[-1] == (COMMIT, 6)
    committed, position = visible(broker, topic, 0, "read_committed")
    assert committed == [(0, b"a0"), (1, b"a1"), (5, b"c0")] and position == 7
    producer.flush(5)


# ---------------------------------------------------------------- consume-transform-produce


def committed_offset(broker, group, topic, isolation="read_committed"):
    """The group's committed offset of topic-0 as another consumer (not a member) sees it.
    A read_committed consumer asks with require_stable (KIP-447), which waits out pending
    transactional offsets; read_uncommitted ones do not."""
    consumer = clients.consumer(broker, **{"group.id": group, "isolation.level": isolation})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=CALL_TIMEOUT_S)
        return tp.offset
    finally:
        consumer.close()


def test_consume_transform_produce_offsets_and_outputs_appear_together(broker, topic):
    source, sink, group = f"{topic}-in", f"{topic}-out", f"{topic}-group"
    clients.create_topic(broker, source)
    clients.create_topic(broker, sink)
    clients.produce_ok(broker, source, [{"value": b"in-%d" % i} for i in range(5)])
    member = Consumer(clients.group_consumer_config(
        broker, group, **{"isolation.level": "read_committed"}))
    producer = txn_producer(broker, tid("ctp"))
    try:
        member.subscribe([source])
        producer.init_transactions(CALL_TIMEOUT_S)

        # Commit: outputs and offsets both appear at the commit, neither before.
        inputs = poll_records(member, 5)
        producer.begin_transaction()
        deliver(producer, sink, [b"out-" + value for _o, value in inputs])
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, inputs[-1][0] + 1)],
            member.consumer_group_metadata(), CALL_TIMEOUT_S)
        assert committed_offset(broker, group, source, "read_uncommitted") < 0, \
            "transactional offsets visible before the commit"
        assert visible(broker, sink, 0, "read_committed")[0] == []
        producer.commit_transaction(CALL_TIMEOUT_S)
        # Both appear once the markers are written (asynchronously, after the commit
        # returned); a read_committed committed() waits out pending offsets (KIP-447).
        wait_settled(broker, sink, 0, 6)
        clients.wait_for(lambda: committed_offset(broker, group, source) == 5, 15,
                         what="the transaction's offsets committed")
        outputs, position = visible(broker, sink, 0, "read_committed")
        assert outputs == [(i, b"out-in-%d" % i) for i in range(5)] and position == 6

        # Abort: neither the outputs nor the offsets appear.
        clients.produce_ok(broker, source, [{"value": b"in-%d" % i} for i in range(5, 8)])
        inputs = poll_records(member, 3)
        assert [o for o, _v in inputs] == [5, 6, 7]
        producer.begin_transaction()
        deliver(producer, sink, [b"out-" + value for _o, value in inputs])
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 8)], member.consumer_group_metadata(),
            CALL_TIMEOUT_S)
        producer.abort_transaction(CALL_TIMEOUT_S)
        wait_settled(broker, sink, 0, 10)
        assert committed_offset(broker, group, source) == 5
        assert committed_offset(broker, group, source, "read_uncommitted") == 5
        outputs, position = visible(broker, sink, 0, "read_committed")
        assert outputs == [(i, b"out-in-%d" % i) for i in range(5)]
        assert position == 10, "data 6..8 and the abort marker at 9 are passed over"
        everything, _ = visible(broker, sink, 0, "read_uncommitted")
        assert [o for o, _v in everything] == [0, 1, 2, 3, 4, 6, 7, 8]
    finally:
        member.close()
        producer.flush(5)


def test_consumer_lag_counts_markers_and_open_transactions_as_kafkas_tools_do(broker, topic):
    """kafka-consumer-groups --describe computes lag as ListOffsets latest (read_uncommitted:
    the high watermark) minus the group's committed offset. A read_committed member that
    read everything it may commits past the markers (they take offsets), so its lag is
    only what an open transaction still hides."""
    group = f"{topic}-lag"
    producer = txn_producer(broker, tid("lag"))
    member = Consumer(clients.group_consumer_config(
        broker, group, **{"isolation.level": "read_committed", "enable.auto.commit": False}))
    try:
        producer.init_transactions(CALL_TIMEOUT_S)
        transaction(producer, topic, [b"c-%d" % i for i in range(3)], COMMIT)  # 0-2, 3
        transaction(producer, topic, [b"a-%d" % i for i in range(2)], ABORT)   # 4-5, 6
        producer.begin_transaction()
        deliver(producer, topic, [b"open-%d" % i for i in range(2)])           # 7-8 open
        clients.wait_for(lambda: hw_and_lso(broker, topic, 0) == (9, 7), 15,
                         what="HW 9 with the LSO held at the open transaction")
        member.subscribe([topic])
        assert [o for o, _v in poll_records(member, 3)] == [0, 1, 2]
        wait_position(member, topic, 0, 7)
        member.commit(asynchronous=False)

        admin = clients.admin(broker)
        listed = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])])
        (tp,) = listed[group].result(timeout=CALL_TIMEOUT_S).topic_partitions
        assert tp.offset == 7, "committed past the commit and abort markers, up to the LSO"
        end = latest(broker, topic, 0, IsolationLevel.READ_UNCOMMITTED)
        assert (end, end - tp.offset) == (9, 2), "lag: the open transaction's two records"

        producer.commit_transaction(CALL_TIMEOUT_S)  # its marker at 9
        wait_settled(broker, topic, 0, 10)
        assert [o for o, _v in poll_records(member, 2)] == [7, 8]
        wait_position(member, topic, 0, 10)
        member.commit(asynchronous=False)
        assert latest(broker, topic, 0, IsolationLevel.READ_UNCOMMITTED) - \
            committed_offset(broker, group, topic) == 0, "no lag once all is read"
    finally:
        member.close()
        producer.flush(5)


def test_one_producer_commits_offsets_in_many_transactions_and_they_survive_restarts(
        start_broker, topic):
    """One transactional producer (one epoch under transaction version 1) sends offsets in
    transaction after transaction, with the same number of offsets each time: every
    commit must be written to `__consumer_offsets` (not taken for a retry of the previous
    one), and the last must be what the group has after the offsets are replayed from the
    log by a restarted broker."""
    broker = start_broker("txn-offsets-many", BROKER_OVERRIDES)
    group = f"{topic}-group"
    clients.create_topic(broker, topic)
    producer = txn_producer(broker, tid("many"))
    metadata = Consumer(clients.group_consumer_config(broker, group))
    try:
        producer.init_transactions(CALL_TIMEOUT_S)
        group_metadata = metadata.consumer_group_metadata()
        for round_ in range(1, 5):
            outcome = ABORT if round_ == 3 else COMMIT
            producer.begin_transaction()
            deliver(producer, topic, [b"r%d" % round_])
            producer.send_offsets_to_transaction(
                [TopicPartition(topic, 0, 100 * round_)], group_metadata, CALL_TIMEOUT_S)
            if outcome == COMMIT:
                producer.commit_transaction(CALL_TIMEOUT_S)
                want = 100 * round_
            else:
                producer.abort_transaction(CALL_TIMEOUT_S)
            clients.wait_for(lambda: committed_offset(broker, group, topic) == want, 15,
                             what=f"round {round_}'s offsets")
        for hard in (True, False):
            broker.restart(hard=hard)
            assert committed_offset(broker, group, topic) == 400, \
                f"offsets replayed after a {'kill -9' if hard else 'SIGTERM'}"
    finally:
        metadata.close()
        producer.flush(5)


# ---------------------------------------------------------------- fencing


def end_zombie(zombie):
    """Tries to commit the zombie's transaction as an application would (abort after an
    abortable error); returns the KafkaError that ended it, or None if it committed."""
    try:
        zombie.commit_transaction(CALL_TIMEOUT_S)
        return None
    except KafkaException as error:
        first = error.args[0]
    if first.fatal():
        return first
    assert first.txn_requires_abort(), f"zombie commit failed unexpectedly: {first}"
    try:
        zombie.abort_transaction(CALL_TIMEOUT_S)
    except KafkaException as error:
        return error.args[0]
    raise AssertionError(f"the zombie aborted cleanly after {first}: it was not fenced")


def test_a_second_producer_fences_the_first(broker, topic):
    clients.create_topic(broker, topic)
    transactional_id = tid("fence")
    zombie = txn_producer(broker, transactional_id)
    zombie.init_transactions(CALL_TIMEOUT_S)
    zombie.begin_transaction()
    assert deliver(zombie, topic, [b"zombie-before"]) == [0]

    successor = txn_producer(broker, transactional_id)
    # Aborts the zombie's open transaction (marker at 1) and bumps the epoch.
    successor.init_transactions(CALL_TIMEOUT_S)

    reports = []
    try:
        zombie.produce(topic, value=b"zombie-after", partition=0,
                       on_delivery=lambda error, message: reports.append(error))
        zombie.flush(CALL_TIMEOUT_S)
    except (KafkaException, SystemError) as error:
        # confluent-kafka raises the fatal fence out of flush, while it runs the delivery
        # callback (a SystemError wrapping the KafkaException).
        reports.append(error)
    assert reports and reports[0] is not None, "the zombie's write was acknowledged"
    ended = end_zombie(zombie)
    assert ended is not None, "the fenced producer committed"
    assert ended.fatal() and ended.code() in FENCED_CODES, f"not a fatal fence: {ended}"
    with pytest.raises(KafkaException):
        zombie.begin_transaction()  # a fatal error is final

    assert transaction(successor, topic, [b"successor"], COMMIT) == [2]
    wait_settled(broker, topic, 0, 4)
    assert layout(broker, topic, 0) == [("data", 0, b"zombie-before", True), (ABORT, 1),
                                        ("data", 2, b"successor", True), (COMMIT, 3)]
    committed, _ = visible(broker, topic, 0, "read_committed")
    assert committed == [(2, b"successor")]
    offsets_seen(broker, topic, 0, expected_hw=4, expected_lso=4)


# ---------------------------------------------------------------- timeouts


KILLED_PRODUCER = r"""
import json, sys, time
from confluent_kafka import Producer
bootstrap, topic, transactional_id, count = sys.argv[1:5]
producer = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                     "transactional.id": transactional_id,
                     "transaction.timeout.ms": 5000, "message.timeout.ms": 5000})
producer.init_transactions(30)
producer.begin_transaction()
offsets = []
for index in range(int(count)):
    producer.produce(topic, value=b"open-%d" % index, partition=0,
                     on_delivery=lambda error, message: offsets.append(
                         None if error else message.offset()))
assert producer.flush(30) == 0
print(json.dumps({"kind": "produced", "offsets": offsets}), flush=True)
time.sleep(600)  # until SIGKILL: the transaction stays open
"""


def test_a_killed_producers_transaction_is_aborted_after_its_timeout(broker, topic):
    clients.create_topic(broker, topic)
    child = clients.JsonLinesProcess(
        [sys.executable, "-c", KILLED_PRODUCER, broker.bootstrap, topic, tid("killed"), "3"],
        "killed-producer")
    try:
        clients.wait_for(lambda: child.events("produced"), 60, what="the child's records")
        assert child.events("produced")[0]["offsets"] == [0, 1, 2]
    finally:
        code = child.kill()
    assert code == -9, f"the producer exited with {code} before it was killed"
    killed_at = time.monotonic()
    # Written after the open transaction (normally before its timeout): hidden from
    # read_committed until the transaction ends. On a slow machine the abort may come
    # first; then the marker is at 3 and this record at 4.
    (after,) = clients.produce_ok(broker, topic, [{"value": b"after", "partition": 0}])
    marker = 7 - after.offset()
    assert after.offset() in (3, 4)
    reader = clients.consumer(broker, **{"isolation.level": "read_committed"})
    try:
        reader.assign([TopicPartition(topic, 0, 0)])
        records = poll_records(reader, 1, timeout_s=30)
        waited = time.monotonic() - killed_at
        assert records == [(after.offset(), b"after")], f"read_committed saw {records}"
        assert_blocked(reader, "read_committed delivered more", seconds=1.0)
        wait_position(reader, topic, 0, 5)
    finally:
        reader.close()
    print(f"read_committed unblocked {waited:.1f} s after the producer was killed "
          f"(abort marker at {marker})")
    expected = [("data", 0, b"open-0", True), ("data", 1, b"open-1", True),
                ("data", 2, b"open-2", True), ("data", after.offset(), b"after", False),
                (ABORT, marker)]
    assert layout(broker, topic, 0) == sorted(expected, key=lambda entry: entry[1])
    offsets_seen(broker, topic, 0, expected_hw=5, expected_lso=5)


def test_a_timeout_above_the_brokers_maximum_is_refused(broker, topic):
    producer = txn_producer(broker, tid("too-long"), **{
        "transaction.timeout.ms": 120000})  # BROKER_OVERRIDES: max 60000
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(CALL_TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT, \
        raised.value.args[0]


# ---------------------------------------------------------------- admin APIs (raw)


DESCRIBE_TRANSACTIONS = 65
LIST_TRANSACTIONS = 66
TRANSACTIONAL_ID_NOT_FOUND = 105


def compact_array(items, encode_item):
    return rawkafka.uvarint(len(items) + 1) + b"".join(encode_item(i) for i in items)


def describe_transactions_v0(broker, transactional_ids):
    """DescribeTransactions v0 (flexible): {transactional id: dict(error, state,
    timeout_ms, start_ms, producer_id, producer_epoch, topics={name: [partitions]})}."""
    body = compact_array(transactional_ids, rawkafka.compact_string) \
        + rawkafka.EMPTY_TAGGED_FIELDS
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        reader = conn.request(DESCRIBE_TRANSACTIONS, 0, body, flexible_request=True,
                              flexible_response=True)

        def read_topic(r):
            name = r.compact_string()
            partitions = r.compact_array(lambda rr: rr.int32())
            r.skip_tagged_fields()
            return name, sorted(partitions)

        def read_state(r):
            state = {"error": r.int16()}
            transactional_id = r.compact_string()
            state.update(state=r.compact_string(), timeout_ms=r.int32(), start_ms=r.int64(),
                         producer_id=r.int64(), producer_epoch=r.int16(),
                         topics=dict(r.compact_array(read_topic)))
            r.skip_tagged_fields()
            return transactional_id, state

        reader.int32()  # throttle_time_ms
        states = dict(reader.compact_array(read_state))
        reader.skip_tagged_fields()
        reader.expect_end()
    return states


def list_transactions_v0(broker, states=(), producer_ids=()):
    """ListTransactions v0 (flexible): (error, unknown state filters,
    {transactional id: (producer id, state)})."""
    body = (compact_array(list(states), rawkafka.compact_string)
            + compact_array(list(producer_ids), rawkafka.int64)
            + rawkafka.EMPTY_TAGGED_FIELDS)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        reader = conn.request(LIST_TRANSACTIONS, 0, body, flexible_request=True,
                              flexible_response=True)

        def read_state(r):
            transactional_id, producer_id, state = r.compact_string(), r.int64(), \
                r.compact_string()
            r.skip_tagged_fields()
            return transactional_id, (producer_id, state)

        reader.int32()  # throttle_time_ms
        error = reader.int16()
        unknown = reader.compact_array(lambda r: r.compact_string())
        listed = dict(reader.compact_array(read_state))
        reader.skip_tagged_fields()
        reader.expect_end()
    return error, unknown, listed


def test_describe_and_list_transactions(broker, topic):
    """DescribeTransactions and ListTransactions (kafka-transactions.sh describe/list)
    during an open transaction and after its commit, with Kafka's state names."""
    clients.create_topic(broker, topic, partitions=2)
    transactional_id = tid("described")
    producer = txn_producer(broker, transactional_id)
    producer.init_transactions(CALL_TIMEOUT_S)
    began_ms = int(time.time() * 1000)
    producer.begin_transaction()
    deliver(producer, topic, [b"p0"], partition=0)
    deliver(producer, topic, [b"p1"], partition=1)
    now_ms = int(time.time() * 1000)

    described = describe_transactions_v0(broker, [transactional_id, "no-such-id"])
    assert described["no-such-id"]["error"] == TRANSACTIONAL_ID_NOT_FOUND
    ongoing = described[transactional_id]
    assert ongoing["error"] == 0 and ongoing["state"] == "Ongoing", ongoing
    assert ongoing["timeout_ms"] == TXN_TIMEOUT_MS
    assert began_ms - 1000 <= ongoing["start_ms"] <= now_ms + 1000, (began_ms, ongoing)
    assert ongoing["producer_id"] >= 0 and ongoing["producer_epoch"] >= 0
    assert ongoing["topics"] == {topic: [0, 1]}
    producer_id = ongoing["producer_id"]

    error, unknown, listed = list_transactions_v0(broker, states=["Ongoing", "Bogus"])
    assert error == 0 and unknown == ["Bogus"]
    assert listed.get(transactional_id) == (producer_id, "Ongoing")
    error, _unknown, listed = list_transactions_v0(broker, producer_ids=[producer_id])
    assert error == 0 and listed == {transactional_id: (producer_id, "Ongoing")}

    producer.commit_transaction(CALL_TIMEOUT_S)
    for partition in (0, 1):
        wait_settled(broker, topic, partition, 2)
    done = describe_transactions_v0(broker, [transactional_id])[transactional_id]
    assert done["error"] == 0 and done["state"] == "CompleteCommit", done
    assert done["producer_id"] == producer_id and done["topics"] == {}
    _error, _unknown, listed = list_transactions_v0(broker, states=["Ongoing"])
    assert transactional_id not in listed
    _error, _unknown, listed = list_transactions_v0(broker, states=["CompleteCommit"])
    assert listed.get(transactional_id) == (producer_id, "CompleteCommit")


# ---------------------------------------------------------------- other clients


def test_aiokafka_transactions(broker, topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as AioTopicPartition

    clients.create_topic(broker, topic)

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap,
                                    transactional_id=tid("aiokafka"),
                                    request_timeout_ms=30000)
        await asyncio.wait_for(producer.start(), CALL_TIMEOUT_S)
        try:
            async with producer.transaction():
                sent = [await producer.send_and_wait(topic, b"a%d" % i, partition=0)
                        for i in range(3)]
            await producer.begin_transaction()
            sent += [await producer.send_and_wait(topic, b"b%d" % i, partition=0)
                     for i in range(2)]
            await asyncio.wait_for(producer.abort_transaction(), CALL_TIMEOUT_S)
            async with producer.transaction():
                sent += [await producer.send_and_wait(topic, b"c0", partition=0)]
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap,
                                    isolation_level="read_committed",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await asyncio.wait_for(consumer.start(), CALL_TIMEOUT_S)
        try:
            tp = AioTopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            read = []
            deadline = time.monotonic() + CALL_TIMEOUT_S
            while time.monotonic() < deadline:
                batches = await consumer.getmany(tp, timeout_ms=500)
                read += [(m.offset, m.value) for m in batches.get(tp, [])]
                if len(read) >= 4:
                    # Anything more (an aborted record, a marker) would arrive by now.
                    more = await consumer.getmany(tp, timeout_ms=1000)
                    read += [(m.offset, m.value) for m in more.get(tp, [])]
                    break
            position = await consumer.position(tp)
        finally:
            await consumer.stop()
        return [m.offset for m in sent], read, position

    sent, read, position = asyncio.run(run())
    assert sent == [0, 1, 2, 4, 5, 7]
    wait_settled(broker, topic, 0, 9)
    assert read == [(0, b"a0"), (1, b"a1"), (2, b"a2"), (7, b"c0")]
    assert position == 9
    assert layout(broker, topic, 0) == [
        ("data", 0, b"a0", True), ("data", 1, b"a1", True), ("data", 2, b"a2", True),
        (COMMIT, 3), ("data", 4, b"b0", True), ("data", 5, b"b1", True), (ABORT, 6),
        ("data", 7, b"c0", True), (COMMIT, 8)]
    committed, _ = visible(broker, topic, 0, "read_committed")
    assert committed == read


def test_kafka_python_transactions(broker, topic):
    clients.create_topic(broker, topic)
    producer = clients.kp_producer(broker, transactional_id=tid("kafka-python"),
                                   enable_idempotence=True, retries=5)
    try:
        producer.init_transactions()
        offsets = []
        for values, outcome in (([b"a0", b"a1"], COMMIT), ([b"b0"], ABORT),
                                ([b"c0", b"c1"], COMMIT)):
            producer.begin_transaction()
            futures = [producer.send(topic, value=v, partition=0) for v in values]
            producer.flush(timeout=CALL_TIMEOUT_S)
            offsets += [f.get(timeout=CALL_TIMEOUT_S).offset for f in futures]
            if outcome == COMMIT:
                producer.commit_transaction()
            else:
                producer.abort_transaction()
    finally:
        producer.close(timeout=10)
    assert offsets == [0, 1, 3, 5, 6]
    wait_settled(broker, topic, 0, 8)
    assert layout(broker, topic, 0) == [
        ("data", 0, b"a0", True), ("data", 1, b"a1", True), (COMMIT, 2),
        ("data", 3, b"b0", True), (ABORT, 4),
        ("data", 5, b"c0", True), ("data", 6, b"c1", True), (COMMIT, 7)]
    records = clients.kp_consume(broker, topic, 0, 0, 4, isolation_level="read_committed")
    assert [(r.offset, r.value) for r in records] == [(0, b"a0"), (1, b"a1"), (5, b"c0"),
                                                      (6, b"c1")]
    consumer = clients.kp_consumer(broker, isolation_level="read_committed")
    try:
        tp = kafka.TopicPartition(topic, 0)
        assert consumer.end_offsets([tp])[tp] == 8
    finally:
        consumer.close()
    committed, position = visible(broker, topic, 0, "read_committed")
    assert committed == [(0, b"a0"), (1, b"a1"), (5, b"c0"), (6, b"c1")]
    assert position == 8
