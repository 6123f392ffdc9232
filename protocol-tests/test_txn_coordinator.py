"""The transaction coordinator over raw frames: FindCoordinator key type 1, InitProducerId
with a transactional id, AddPartitionsToTxn / AddOffsetsToTxn / EndTxn error paths,
DescribeTransactions and ListTransactions.

Transactions that reach PrepareCommit/PrepareAbort need WriteTxnMarkers served by the
data partitions' leaders to complete; until that API exists (the log side of issue 10),
these tests check the states up to Prepare* and the fencing answers, not completion.
"""

import time

import pytest

import clients
import rawkafka
from rawkafka import array, boolean, compact_string, int16, int32, int64, string, uvarint

ADD_PARTITIONS_TO_TXN = 24
ADD_OFFSETS_TO_TXN = 25
END_TXN = 26
DESCRIBE_TRANSACTIONS = 65
LIST_TRANSACTIONS = 66

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
INVALID_REQUEST = 42
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TRANSACTION_TIMEOUT = 50
CONCURRENT_TRANSACTIONS = 51
OPERATION_NOT_ATTEMPTED = 55
TRANSACTIONAL_ID_NOT_FOUND = 105

RETRIABLE = (COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
             CONCURRENT_TRANSACTIONS)

# Few state partitions (creation is quick) and a short timed-out-transaction check.
BROKER_OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "300",
}

TIMEOUT_S = 30.0


def retry(call, accept=(NONE,), timeout_s=TIMEOUT_S):
    """Calls `call` until its first element (an error code) is not retriable."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = call()
        if result[0] not in RETRIABLE or result[0] in accept:
            return result
        if time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def find_coordinator(conn, key, key_type=1):
    """FindCoordinator v1 for a transactional id by default: (error_code, node_id, host, port)."""
    return rawkafka.find_coordinator_v1(conn, key, key_type)


def init_producer_id(conn, transactional_id, timeout_ms=60000):
    return rawkafka.init_producer_id(conn, transactional_id, timeout_ms, version=1)


def init_ok(conn, transactional_id, timeout_ms=60000):
    result = retry(lambda: init_producer_id(conn, transactional_id, timeout_ms))
    assert result[0] == NONE, result
    return result[1], result[2]


def add_partitions(conn, transactional_id, producer_id, epoch, topics):
    """AddPartitionsToTxn v1; topics: {name: [partitions]}. Returns {(t, p): error}."""
    body = (string(transactional_id) + int64(producer_id) + int16(epoch)
            + array(sorted(topics.items()),
                    lambda item: string(item[0]) + array(item[1], int32)))
    reader = conn.request(ADD_PARTITIONS_TO_TXN, 1, body)
    reader.int32()
    results = {}
    for name, partitions in reader.array(
            lambda r: (r.string(), r.array(lambda rr: (rr.int32(), rr.int16())))):
        for partition, error in partitions:
            results[(name, partition)] = error
    reader.expect_end()
    return results


def add_offsets(conn, transactional_id, producer_id, epoch, group):
    body = string(transactional_id) + int64(producer_id) + int16(epoch) + string(group)
    reader = conn.request(ADD_OFFSETS_TO_TXN, 1, body)
    reader.int32()
    error = reader.int16()
    reader.expect_end()
    return error


def end_txn(conn, transactional_id, producer_id, epoch, commit):
    body = string(transactional_id) + int64(producer_id) + int16(epoch) + boolean(commit)
    reader = conn.request(END_TXN, 1, body)
    reader.int32()
    error = reader.int16()
    reader.expect_end()
    return error


def compact_array(items, encode_item):
    return uvarint(len(items) + 1) + b"".join(encode_item(item) for item in items)


def describe_transactions(conn, ids):
    """DescribeTransactions v0 (flexible): {id: (error, state, timeout, pid, epoch, topics)}."""
    body = compact_array(ids, compact_string) + rawkafka.EMPTY_TAGGED_FIELDS
    reader = conn.request(DESCRIBE_TRANSACTIONS, 0, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()

    def read_topic(r):
        topic = r.compact_string()
        partitions = r.compact_array(lambda rr: rr.int32())
        r.skip_tagged_fields()
        return topic, sorted(partitions)

    def read_state(r):
        error = r.int16()
        txn_id = r.compact_string()
        state = r.compact_string()
        timeout = r.int32()
        r.int64()  # start time
        pid = r.int64()
        epoch = r.int16()
        topics = dict(r.compact_array(read_topic))
        r.skip_tagged_fields()
        return txn_id, (error, state, timeout, pid, epoch, topics)

    states = dict(reader.compact_array(read_state))
    reader.skip_tagged_fields()
    reader.expect_end()
    return states


def list_transactions(conn, states=(), producer_ids=(), duration_ms=None):
    """ListTransactions v0 (v1 with duration_ms): (error, unknown_filters, {id: (pid, state)})."""
    version = 0 if duration_ms is None else 1
    body = compact_array(list(states), compact_string) + compact_array(list(producer_ids), int64)
    if version == 1:
        body += int64(duration_ms)
    body += rawkafka.EMPTY_TAGGED_FIELDS
    reader = conn.request(LIST_TRANSACTIONS, version, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()
    error = reader.int16()
    unknown = reader.compact_array(lambda r: r.compact_string())

    def read_state(r):
        txn_id = r.compact_string()
        pid = r.int64()
        state = r.compact_string()
        r.skip_tagged_fields()
        return txn_id, (pid, state)

    listed = dict(reader.compact_array(read_state))
    reader.skip_tagged_fields()
    reader.expect_end()
    return error, unknown, listed


@pytest.fixture
def conn(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as connection:
        yield connection


def test_find_coordinator_for_a_transactional_id(broker, conn):
    error, node_id, host, port = retry(lambda: find_coordinator(conn, "txn-find"))
    assert error == NONE
    assert (node_id, host, port) == (1, "127.0.0.1", broker.port)
    assert find_coordinator(conn, "")[0] == INVALID_REQUEST
    assert find_coordinator(conn, "k", key_type=7)[0] == INVALID_REQUEST


def test_init_producer_id_creates_then_bumps_the_epoch(conn):
    producer_id, epoch = init_ok(conn, "txn-init")
    assert producer_id >= 0 and epoch == 0
    again = init_ok(conn, "txn-init")
    assert again == (producer_id, 1)
    other = init_ok(conn, "txn-init-other")
    assert other[0] != producer_id


def test_transaction_timeout_out_of_range_is_refused(conn):
    init_ok(conn, "txn-warm")  # the state topic exists and is loaded
    for bad in (0, -5, 900001):
        assert init_producer_id(conn, "txn-timeout", bad)[0] == INVALID_TRANSACTION_TIMEOUT
    assert init_producer_id(conn, "txn-timeout", 900000)[0] == NONE


def test_add_partitions_add_offsets_and_end_txn_error_paths(broker, conn, topic):
    clients.create_topic(broker, topic, partitions=2)
    producer_id, epoch = init_ok(conn, "txn-errors")
    unknown_id = add_partitions(conn, "txn-nobody", producer_id, epoch, {topic: [0]})
    assert unknown_id == {(topic, 0): INVALID_PRODUCER_ID_MAPPING}
    wrong_pid = add_partitions(conn, "txn-errors", producer_id + 1000, epoch, {topic: [0]})
    assert wrong_pid == {(topic, 0): INVALID_PRODUCER_ID_MAPPING}
    # v1 predates PRODUCER_FENCED: an old epoch is INVALID_PRODUCER_EPOCH.
    old_epoch = add_partitions(conn, "txn-errors", producer_id, epoch - 1, {topic: [0]})
    assert old_epoch == {(topic, 0): INVALID_PRODUCER_EPOCH}
    missing = add_partitions(conn, "txn-errors", producer_id, epoch,
                             {topic: [0], "no-such-topic-x": [0]})
    assert missing == {(topic, 0): OPERATION_NOT_ATTEMPTED,
                       ("no-such-topic-x", 0): UNKNOWN_TOPIC_OR_PARTITION}
    assert end_txn(conn, "txn-errors", producer_id, epoch, True) == INVALID_TXN_STATE
    assert end_txn(conn, "txn-nobody", producer_id, epoch, True) == INVALID_PRODUCER_ID_MAPPING
    assert add_offsets(conn, "txn-errors", producer_id + 1000, epoch, "g") == \
        INVALID_PRODUCER_ID_MAPPING
    assert add_offsets(conn, "txn-errors", producer_id, epoch, "") == 24  # INVALID_GROUP_ID

    added = add_partitions(conn, "txn-errors", producer_id, epoch, {topic: [0, 1]})
    assert added == {(topic, 0): NONE, (topic, 1): NONE}
    assert add_offsets(conn, "txn-errors", producer_id, epoch, "txn-group") == NONE
    described = describe_transactions(conn, ["txn-errors"])["txn-errors"]
    error, state, timeout, pid, described_epoch, topics = described
    assert (error, state, timeout, pid, described_epoch) == \
        (NONE, "Ongoing", 60000, producer_id, epoch)
    assert topics[topic] == [0, 1]
    assert "__consumer_offsets" in topics
    # Commit is accepted once PrepareCommit is durable; the other outcome is not.
    assert end_txn(conn, "txn-errors", producer_id, epoch, True) == NONE
    assert end_txn(conn, "txn-errors", producer_id, epoch, False) == INVALID_TXN_STATE
    state = describe_transactions(conn, ["txn-errors"])["txn-errors"][1]
    assert state in ("PrepareCommit", "CompleteCommit")


def test_a_second_producer_fences_the_first(broker, conn, topic):
    clients.create_topic(broker, topic, partitions=1)
    producer_id, epoch = init_ok(conn, "txn-fence")
    assert add_partitions(conn, "txn-fence", producer_id, epoch, {topic: [0]}) == \
        {(topic, 0): NONE}
    # The open transaction is aborted at a bumped epoch; the new producer retries meanwhile.
    assert init_producer_id(conn, "txn-fence")[0] == CONCURRENT_TRANSACTIONS
    error, state, _, pid, fenced_epoch, topics = \
        describe_transactions(conn, ["txn-fence"])["txn-fence"]
    assert (error, pid, fenced_epoch) == (NONE, producer_id, epoch + 1)
    assert state in ("PrepareAbort", "CompleteAbort")
    assert topics == ({topic: [0]} if state == "PrepareAbort" else {})
    # The old producer can no longer commit.
    assert end_txn(conn, "txn-fence", producer_id, epoch, True) == INVALID_PRODUCER_EPOCH
    assert add_partitions(conn, "txn-fence", producer_id, epoch, {topic: [0]}) == \
        {(topic, 0): INVALID_PRODUCER_EPOCH}


def test_describe_and_list_transactions(conn):
    producer_id, _ = init_ok(conn, "txn-listed")
    described = describe_transactions(conn, ["txn-listed", "txn-never-seen"])
    assert described["txn-listed"][:2] == (NONE, "Empty")
    assert described["txn-listed"][3] == producer_id
    assert described["txn-never-seen"][0] == TRANSACTIONAL_ID_NOT_FOUND
    error, unknown, listed = list_transactions(conn)
    assert error == NONE and unknown == []
    assert listed["txn-listed"] == (producer_id, "Empty")
    error, unknown, listed = list_transactions(conn, states=["Empty", "Bogus"])
    assert unknown == ["Bogus"]
    assert "txn-listed" in listed
    assert all(state == "Empty" for _, state in listed.values())
    _, _, by_producer = list_transactions(conn, producer_ids=[producer_id])
    assert list(by_producer) == ["txn-listed"]
    _, _, ongoing = list_transactions(conn, states=["Ongoing"], duration_ms=0)
    assert "txn-listed" not in ongoing


def test_a_transaction_past_its_timeout_is_aborted(broker, conn, topic):
    clients.create_topic(broker, topic, partitions=1)
    producer_id, epoch = init_ok(conn, "txn-slow", timeout_ms=1000)
    assert add_partitions(conn, "txn-slow", producer_id, epoch, {topic: [0]}) == \
        {(topic, 0): NONE}
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        described = describe_transactions(conn, ["txn-slow"])["txn-slow"]
        if described[1] != "Ongoing" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert described[1] in ("PrepareAbort", "CompleteAbort")
    assert described[4] == epoch + 1, "the abort fenced the producer"
    assert end_txn(conn, "txn-slow", producer_id, epoch, True) == INVALID_PRODUCER_EPOCH


def test_confluent_transactional_producer_initialises_and_fences(broker, conn):
    """init_transactions needs only FindCoordinator and InitProducerId; a second producer
    with the same id takes the next epoch. (Producing and committing need the log side.)"""
    first = clients.producer(broker, **{"transactional.id": "txn-confluent"})
    first.init_transactions(TIMEOUT_S)
    epoch = describe_transactions(conn, ["txn-confluent"])["txn-confluent"][4]
    second = clients.producer(broker, **{"transactional.id": "txn-confluent"})
    second.init_transactions(TIMEOUT_S)
    error, state, _, _, bumped, _ = describe_transactions(conn, ["txn-confluent"])["txn-confluent"]
    assert (error, state, bumped) == (NONE, "Empty", epoch + 1)
    listed = list_transactions(conn, states=["Empty"])[2]
    assert "txn-confluent" in listed
