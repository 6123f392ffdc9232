"""TxnOffsetCommit: a group's offsets committed inside a transaction.

Raw frames (rawkafka), so the test sees exactly what the broker answers at each step of
`send_offsets_to_transaction`: FindCoordinator (transaction), InitProducerId with a
transactional id, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, then OffsetFetch with and
without require_stable. Kafka's semantics: the offsets are invisible until the
transaction's commit marker lands on the group's offsets partition (OffsetFetch answers
the last committed offset, or UNSTABLE_OFFSET_COMMIT under require_stable), are dropped
when it aborts, and a fenced producer (an older epoch) cannot commit offsets.

The end-to-end tests need the transaction coordinator (AddOffsetsToTxn, EndTxn) and the
transactional partition append and markers: they run once those parts are merged. The
API version and validation tests need only TxnOffsetCommit itself.
"""

import time

import pytest

import clients
import rawkafka
from rawkafka import array, boolean, compact_string, int16, int32, int64, string, uvarint

BROKER_OVERRIDES = {
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
}
TIMEOUT_S = 30

OFFSET_FETCH = 9
ADD_OFFSETS_TO_TXN = 25
END_TXN = 26
TXN_OFFSET_COMMIT = 28

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
ILLEGAL_GENERATION = 22
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_PRODUCER_EPOCH = 47
CONCURRENT_TRANSACTIONS = 51
UNSTABLE_OFFSET_COMMIT = 88
PRODUCER_FENCED = 90
RETRIABLE = {COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
             CONCURRENT_TRANSACTIONS}


# ---------------------------------------------------------------- hand-encoded requests
# Layouts from apache/kafka clients/src/main/resources/common/message/
# {FindCoordinator,AddOffsetsToTxn,EndTxn,TxnOffsetCommit,OffsetFetch}{Request,Response}.json


def compact_array(items, encode_item):
    if items is None:
        return uvarint(0)
    return uvarint(len(items) + 1) + b"".join(encode_item(item) for item in items)


def add_offsets_to_txn_v1(conn, transactional_id, producer_id, epoch, group):
    body = string(transactional_id) + int64(producer_id) + int16(epoch) + string(group)
    reader = conn.request(ADD_OFFSETS_TO_TXN, 1, body)
    reader.int32()  # throttle_time_ms
    error = reader.int16()
    reader.expect_end()
    return error


def end_txn_v1(conn, transactional_id, producer_id, epoch, commit):
    body = string(transactional_id) + int64(producer_id) + int16(epoch) + boolean(commit)
    reader = conn.request(END_TXN, 1, body)
    reader.int32()  # throttle_time_ms
    error = reader.int16()
    reader.expect_end()
    return error


def txn_offset_commit_v2(conn, transactional_id, group, producer_id, epoch, offsets):
    """TxnOffsetCommit v2. offsets: {(topic, partition): offset}.

    Returns {(topic, partition): error_code}.
    """
    by_topic = {}
    for (topic, partition), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, []).append((partition, offset))

    def encode_partition(item):
        partition, offset = item
        return int32(partition) + int64(offset) + int32(-1) + string("txn")

    def encode_topic(item):
        topic, partitions = item
        return string(topic) + array(partitions, encode_partition)

    body = (string(transactional_id) + string(group) + int64(producer_id) + int16(epoch)
            + array(sorted(by_topic.items()), encode_topic))
    reader = conn.request(TXN_OFFSET_COMMIT, 2, body)
    reader.int32()  # throttle_time_ms
    out = {}
    for topic, partitions in reader.array(lambda r: (r.string(), r.array(
            lambda rr: (rr.int32(), rr.int16())))):
        for partition, error in partitions:
            out[(topic, partition)] = error
    reader.expect_end()
    return out


def txn_offset_commit_v3(conn, transactional_id, group, producer_id, epoch, offsets,
                         generation_id=-1, member_id="", group_instance_id=None):
    """TxnOffsetCommit v3 (flexible, with the membership fields)."""
    by_topic = {}
    for (topic, partition), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, []).append((partition, offset))

    def encode_partition(item):
        partition, offset = item
        return (int32(partition) + int64(offset) + int32(-1) + compact_string("txn")
                + rawkafka.EMPTY_TAGGED_FIELDS)

    def encode_topic(item):
        topic, partitions = item
        return (compact_string(topic) + compact_array(partitions, encode_partition)
                + rawkafka.EMPTY_TAGGED_FIELDS)

    body = (compact_string(transactional_id) + compact_string(group) + int64(producer_id)
            + int16(epoch) + int32(generation_id) + compact_string(member_id)
            + compact_string(group_instance_id)
            + compact_array(sorted(by_topic.items()), encode_topic)
            + rawkafka.EMPTY_TAGGED_FIELDS)
    reader = conn.request(TXN_OFFSET_COMMIT, 3, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms

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
    for topic, partitions in reader.compact_array(read_topic):
        for partition, error in partitions:
            out[(topic, partition)] = error
    reader.skip_tagged_fields()
    reader.expect_end()
    return out


def offset_fetch_v8(conn, group, topic, partitions, require_stable):
    """OffsetFetch v8 of one group and topic: (group error, {partition: (offset, error)})."""
    def encode_topic(item):
        name, indexes = item
        return (compact_string(name) + compact_array(indexes, int32)
                + rawkafka.EMPTY_TAGGED_FIELDS)

    def encode_group(item):
        group_id, topics = item
        return (compact_string(group_id) + compact_array(topics, encode_topic)
                + rawkafka.EMPTY_TAGGED_FIELDS)

    body = (compact_array([(group, [(topic, partitions)])], encode_group)
            + boolean(require_stable) + rawkafka.EMPTY_TAGGED_FIELDS)
    reader = conn.request(OFFSET_FETCH, 8, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms

    def read_partition(r):
        index, offset = r.int32(), r.int64()
        r.int32()  # committed_leader_epoch
        r.compact_string()  # metadata
        error = r.int16()
        r.skip_tagged_fields()
        return index, (offset, error)

    def read_topic(r):
        name = r.compact_string()
        found = dict(r.compact_array(read_partition))
        r.skip_tagged_fields()
        return name, found

    def read_group(r):
        group_id = r.compact_string()
        topics = dict(r.compact_array(read_topic))
        error = r.int16()
        r.skip_tagged_fields()
        return group_id, (error, topics)

    groups = dict(reader.compact_array(read_group))
    reader.skip_tagged_fields()
    reader.expect_end()
    error, topics = groups[group]
    return error, topics.get(topic, {})


# ---------------------------------------------------------------- helpers


def connect(broker):
    return rawkafka.Connection("127.0.0.1", broker.port)


def retry(call, what, timeout_s=TIMEOUT_S):
    """Calls `call()` until it answers an error code outside RETRIABLE; returns it."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = call()
        error = result if isinstance(result, int) else result[0]
        if error not in RETRIABLE or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def wait_group_coordinator(conn, group):
    error, *_ = retry(lambda: rawkafka.find_coordinator_v1(conn, group, 0), "group coordinator")
    assert error == NONE, f"FindCoordinator(group) answered {error}"


def wait_txn_coordinator(conn, transactional_id):
    error, *_ = retry(lambda: rawkafka.find_coordinator_v1(conn, transactional_id, 1),
                         "transaction coordinator")
    assert error == NONE, f"FindCoordinator(transaction) answered {error}"


def begin(conn, transactional_id, group):
    """InitProducerId + AddOffsetsToTxn: (producer_id, epoch) of a producer whose
    transaction now includes the group's offsets."""
    wait_txn_coordinator(conn, transactional_id)
    error, producer_id, epoch = retry(
        lambda: rawkafka.init_producer_id(conn, transactional_id), "InitProducerId")
    assert error == NONE, f"InitProducerId answered {error}"
    add_offsets(conn, transactional_id, producer_id, epoch, group)
    return producer_id, epoch


def add_offsets(conn, transactional_id, producer_id, epoch, group):
    error = retry(lambda: add_offsets_to_txn_v1(conn, transactional_id, producer_id, epoch,
                                                group), "AddOffsetsToTxn")
    assert error == NONE, f"AddOffsetsToTxn answered {error}"


def commit_offsets(conn, transactional_id, group, producer_id, epoch, offsets):
    def call():
        errors = txn_offset_commit_v2(conn, transactional_id, group, producer_id, epoch,
                                      offsets)
        codes = set(errors.values())
        return (codes.pop() if len(codes) == 1 else max(codes)), errors
    _code, errors = retry(call, "TxnOffsetCommit")
    return errors


def fetched(conn, group, topic, partitions, require_stable):
    error, found = retry(
        lambda: offset_fetch_v8(conn, group, topic, partitions, require_stable),
        "OffsetFetch")
    assert error == NONE, f"OffsetFetch answered {error}"
    return {p: found[p] for p in partitions}


def wait_stable(conn, group, topic, partitions, timeout_s=TIMEOUT_S):
    """OffsetFetch require_stable until no partition is UNSTABLE_OFFSET_COMMIT (the
    markers are written after EndTxn answers); returns {partition: offset}."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = fetched(conn, group, topic, partitions, True)
        if all(error != UNSTABLE_OFFSET_COMMIT for _offset, error in found.values()):
            assert all(error == NONE for _offset, error in found.values()), found
            return {p: offset for p, (offset, _error) in found.items()}
        assert time.monotonic() < deadline, f"still unstable: {found}"
        time.sleep(0.2)


# ---------------------------------------------------------------- tests that need only this API


def test_txn_offset_commit_is_advertised_at_kafkas_range(broker):
    with connect(broker) as conn:
        error, keys = rawkafka.api_versions_v0(conn)
    assert error == NONE
    ranges = {key: (low, high) for key, low, high in keys}
    assert ranges.get(TXN_OFFSET_COMMIT) == (0, 5)


def test_refusals_before_any_write(broker, topic):
    clients.create_topic(broker, topic, partitions=2)
    group = f"{topic}-g"
    with connect(broker) as conn:
        wait_group_coordinator(conn, group)
        # A topic that does not exist: refused per partition, nothing written.
        errors = commit_offsets(conn, "tx", group, 1000, 0, {(f"{topic}-none", 0): 5})
        assert errors == {(f"{topic}-none", 0): UNKNOWN_TOPIC_OR_PARTITION}
        # The empty group id.
        errors = txn_offset_commit_v2(conn, "tx", "", 1000, 0, {(topic, 0): 5})
        assert errors == {(topic, 0): INVALID_GROUP_ID}
        # v3: a generation for a group that does not exist.
        errors = retry(lambda: (0, txn_offset_commit_v3(
            conn, "tx", group, 1000, 0, {(topic, 0): 5}, generation_id=4,
            member_id="m-1")), "TxnOffsetCommit v3")[1]
        assert errors == {(topic, 0): ILLEGAL_GENERATION}
        # Nothing became visible.
        found = fetched(conn, group, topic, [0, 1], False)
        assert found == {0: (-1, NONE), 1: (-1, NONE)}


# ---------------------------------------------------------------- end to end
# These need the transaction coordinator and transactional appends (not yet merged when
# written).


def test_offsets_show_only_after_the_commit_marker(broker, topic):
    clients.create_topic(broker, topic, partitions=2)
    group, transactional_id = f"{topic}-g", f"{topic}-tx"
    with connect(broker) as conn:
        wait_group_coordinator(conn, group)
        producer_id, epoch = begin(conn, transactional_id, group)
        errors = commit_offsets(conn, transactional_id, group, producer_id, epoch,
                                {(topic, 0): 42, (topic, 1): 43})
        assert errors == {(topic, 0): NONE, (topic, 1): NONE}
        # Open transaction: the last committed offset (none), or unstable.
        assert fetched(conn, group, topic, [0, 1], False) == {0: (-1, NONE), 1: (-1, NONE)}
        unstable = fetched(conn, group, topic, [0, 1], True)
        assert unstable == {0: (-1, UNSTABLE_OFFSET_COMMIT), 1: (-1, UNSTABLE_OFFSET_COMMIT)}
        error = retry(lambda: end_txn_v1(conn, transactional_id, producer_id, epoch, True),
                      "EndTxn")
        assert error == NONE, f"EndTxn answered {error}"
        assert wait_stable(conn, group, topic, [0, 1]) == {0: 42, 1: 43}
        assert fetched(conn, group, topic, [0, 1], False) == {0: (42, NONE), 1: (43, NONE)}


def test_an_aborted_transaction_leaves_the_committed_offsets(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    group, transactional_id = f"{topic}-g", f"{topic}-tx"
    with connect(broker) as conn:
        wait_group_coordinator(conn, group)
        producer_id, epoch = begin(conn, transactional_id, group)
        commit_offsets(conn, transactional_id, group, producer_id, epoch, {(topic, 0): 10})
        assert retry(lambda: end_txn_v1(conn, transactional_id, producer_id, epoch, True),
                     "EndTxn") == NONE
        assert wait_stable(conn, group, topic, [0]) == {0: 10}
        # A second transaction of the same producer commits 99, then aborts.
        add_offsets(conn, transactional_id, producer_id, epoch, group)
        errors = commit_offsets(conn, transactional_id, group, producer_id, epoch,
                                {(topic, 0): 99})
        assert errors == {(topic, 0): NONE}
        assert fetched(conn, group, topic, [0], False) == {0: (10, NONE)}
        assert retry(lambda: end_txn_v1(conn, transactional_id, producer_id, epoch, False),
                     "EndTxn") == NONE
        assert wait_stable(conn, group, topic, [0]) == {0: 10}


def test_a_fenced_producer_cannot_commit_offsets(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    group, transactional_id = f"{topic}-g", f"{topic}-tx"
    with connect(broker) as old, connect(broker) as new:
        wait_group_coordinator(old, group)
        producer_id, epoch = begin(old, transactional_id, group)
        errors = commit_offsets(old, transactional_id, group, producer_id, epoch,
                                {(topic, 0): 7})
        assert errors == {(topic, 0): NONE}
        # A new producer with the same transactional id: the old transaction is aborted
        # (markers at the bumped epoch) and the old producer is fenced.
        wait_txn_coordinator(new, transactional_id)
        error, new_id, new_epoch = retry(
            lambda: rawkafka.init_producer_id(new, transactional_id), "InitProducerId")
        assert error == NONE
        assert (new_id, new_epoch) != (producer_id, epoch)
        assert wait_stable(new, group, topic, [0]) == {0: -1}, "aborted by the fencing"
        errors = commit_offsets(old, transactional_id, group, producer_id, epoch,
                                {(topic, 0): 8})
        assert errors[(topic, 0)] in (INVALID_PRODUCER_EPOCH, PRODUCER_FENCED), errors
        assert wait_stable(new, group, topic, [0]) == {0: -1}
