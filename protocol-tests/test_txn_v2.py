"""Transactions version 2 (KIP-890 part 2), the coordinator's side, over raw frames.

No Python client speaks transaction version 2, so these tests do what a Kafka 4.0 Java
producer and its partition leaders would: InitProducerId; AddPartitionsToTxn v5 with
verify_only=false, as the partition leader sends it for the producer's first write to a
partition (standing in for the leader's implicit add); Produce v12 of a transactional
batch; EndTxn v5.

Checked against Kafka 4.0's TransactionCoordinator:
- EndTxn v5 writes PrepareCommit/PrepareAbort at the producer's epoch + 1 and answers
  that producer id and epoch; the markers (control batches) carry the bumped epoch.
- The next transaction runs at the bumped epoch with sequence 0; the old epoch is fenced
  (PRODUCER_FENCED from the coordinator, INVALID_PRODUCER_EPOCH from the partition).
- A retry of EndTxn (epoch one behind, same outcome) answers NONE with the current producer
  id and epoch; the other outcome is INVALID_TXN_STATE; an abort at the current epoch of a
  completed transaction aborts nothing and bumps again.
- Fencing a version 2 transaction (a new InitProducerId, or its timeout) aborts it at the
  epoch + 2 (PrepareEpochFence's bump, then the version 2 abort's).
- ApiVersions v4 lists transaction.version 0..2, finalized at 2.
- A version 1 exchange (AddPartitionsToTxn v3, EndTxn v4) keeps its epoch and answers -1.
"""

import struct
import time

import clients
import rawkafka
from rawkafka import boolean, compact_string, int16, int32, int64, uvarint
from kafka.record.default_records import DefaultRecordBatchBuilder
from test_quorum_apis import TRANSACTION_VERSION_FINALIZED, api_versions_features
from test_txn_coordinator import describe_transactions, init_ok, init_producer_id

PRODUCE = 0
ADD_PARTITIONS_TO_TXN = 24
END_TXN = 26

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
CONCURRENT_TRANSACTIONS = 51
OPERATION_NOT_ATTEMPTED = 55
PRODUCER_FENCED = 90

RETRIABLE = (14, 15, 16, CONCURRENT_TRANSACTIONS)  # load, not available, not coordinator

BROKER_OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "300",
}

TIMEOUT_S = 30.0
TAGS = rawkafka.EMPTY_TAGGED_FIELDS


def compact_array(items, encode_item):
    return uvarint(len(items) + 1) + b"".join(encode_item(item) for item in items)


def compact_bytes(data):
    return uvarint(len(data) + 1) + data


def retry(call, timeout_s=TIMEOUT_S):
    """Calls `call` until its first element (an error code) is not retriable."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = call()
        if result[0] not in RETRIABLE or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def add_partitions_v5(conn, transactional_id, producer_id, epoch, topics, verify_only=False):
    """AddPartitionsToTxn v5 from a broker: one transaction; topics {name: [partitions]}.
    Returns (top-level error, {(topic, partition): error})."""
    def topic(item):
        name, partitions = item
        return compact_string(name) + compact_array(partitions, int32) + TAGS

    transaction = (compact_string(transactional_id) + int64(producer_id) + int16(epoch)
                   + boolean(verify_only) + compact_array(sorted(topics.items()), topic) + TAGS)
    body = compact_array([transaction], lambda item: item) + TAGS
    reader = conn.request(ADD_PARTITIONS_TO_TXN, 5, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle
    error = reader.int16()

    def read_partition(r):
        result = (r.int32(), r.int16())
        r.skip_tagged_fields()
        return result

    def read_topic(r):
        name = r.compact_string()
        partitions = r.compact_array(read_partition)
        r.skip_tagged_fields()
        return name, partitions

    def read_transaction(r):
        txn_id = r.compact_string()
        topics_read = r.compact_array(read_topic)
        r.skip_tagged_fields()
        return txn_id, topics_read

    results = {}
    for txn_id, topics_read in reader.compact_array(read_transaction):
        assert txn_id == transactional_id
        for name, partitions in topics_read:
            for partition, code in partitions:
                results[(name, partition)] = code
    reader.skip_tagged_fields()
    reader.expect_end()
    return error, results


def added(conn, transactional_id, producer_id, epoch, topic):
    """The leader's implicit add of topic-0, retried while the coordinator is busy:
    (top-level error, the partition's error)."""
    def call():
        error, results = add_partitions_v5(conn, transactional_id, producer_id, epoch,
                                           {topic: [0]})
        return results[(topic, 0)], error

    code, error = retry(call)
    return error, code


def end_txn_v5(conn, transactional_id, producer_id, epoch, commit):
    """EndTxn v5: (error, producer id, producer epoch)."""
    body = (compact_string(transactional_id) + int64(producer_id) + int16(epoch)
            + boolean(commit) + TAGS)
    reader = conn.request(END_TXN, 5, body, flexible_request=True, flexible_response=True)
    reader.int32()  # throttle
    result = (reader.int16(), reader.int64(), reader.int16())
    reader.skip_tagged_fields()
    reader.expect_end()
    return result


def end_txn_v4(conn, transactional_id, producer_id, epoch, commit):
    body = (compact_string(transactional_id) + int64(producer_id) + int16(epoch)
            + boolean(commit) + TAGS)
    reader = conn.request(END_TXN, 4, body, flexible_request=True, flexible_response=True)
    reader.int32()
    error = reader.int16()
    reader.skip_tagged_fields()
    reader.expect_end()
    return error


def add_partitions_v3(conn, transactional_id, producer_id, epoch, topic):
    """AddPartitionsToTxn v3 (a version 1 client, flexible): the error of topic-0."""
    body = (compact_string(transactional_id) + int64(producer_id) + int16(epoch)
            + compact_array([topic], lambda name: compact_string(name)
                            + compact_array([0], int32) + TAGS) + TAGS)
    reader = conn.request(ADD_PARTITIONS_TO_TXN, 3, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()

    def read_topic(r):
        name = r.compact_string()
        partitions = r.compact_array(lambda rr: (rr.int32(), rr.int16(),
                                                 rr.skip_tagged_fields())[:2])
        r.skip_tagged_fields()
        return name, partitions

    (name, [(partition, error)]), = reader.compact_array(read_topic)
    reader.skip_tagged_fields()
    reader.expect_end()
    assert (name, partition) == (topic, 0)
    return error


def txn_batch(producer_id, epoch, sequence, values):
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=True, producer_id=producer_id,
        producer_epoch=epoch, base_sequence=sequence, batch_size=1 << 20)
    for index, value in enumerate(values):
        assert builder.append(index, timestamp=1000 + index, key=None, value=value,
                              headers=[]) is not None
    return bytes(builder.build())


def produce_v12(conn, transactional_id, topic, batch):
    """Produce v12 (flexible) of one batch to topic-0: (error, base offset)."""
    partition = int32(0) + compact_bytes(batch) + TAGS
    topic_data = compact_string(topic) + compact_array([partition], lambda item: item) + TAGS
    body = (compact_string(transactional_id) + int16(-1) + int32(10000)
            + compact_array([topic_data], lambda item: item) + TAGS)
    reader = conn.request(PRODUCE, 12, body, flexible_request=True, flexible_response=True)

    def read_partition(r):
        index, error, base_offset = r.int32(), r.int16(), r.int64()
        r.int64()  # log append time
        r.int64()  # log start offset
        r.compact_array(lambda rr: (rr.int32(), rr.compact_string(), rr.skip_tagged_fields()))
        r.compact_string()  # error message
        r.skip_tagged_fields()
        return index, error, base_offset

    def read_topic(r):
        name = r.compact_string()
        partitions = r.compact_array(read_partition)
        r.skip_tagged_fields()
        return name, partitions

    (name, [(index, error, base_offset)]), = reader.compact_array(read_topic)
    reader.int32()  # throttle
    reader.skip_tagged_fields()
    reader.expect_end()
    assert (name, index) == (topic, 0)
    return error, base_offset


def batches(conn, topic, deadline_s=TIMEOUT_S):
    """Every batch of topic-0 up to the high watermark: [(base offset, producer id, epoch,
    control kind or None, [values])]."""
    out, offset = [], 0
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        result = rawkafka.fetch(conn, topic, 0, offset)
        assert result.error_code == NONE
        if offset >= result.high_watermark:
            return out
        for batch in result.batches():
            records = list(batch)
            kind = None
            if batch.is_control_batch:
                kind = {0: "abort", 1: "commit"}[records[0].type]
                version, _coordinator_epoch = struct.unpack(">hi", records[0].value[:6])
                assert version == 0
            out.append((batch.base_offset, batch.producer_id, batch.producer_epoch, kind,
                        [] if kind else [r.value for r in records]))
            offset = max(offset, batch.next_offset)
    raise TimeoutError(f"could not read {topic}-0")


def wait_for_markers(conn, topic, count):
    """The batches once `count` markers are in the log (they are sent after EndTxn)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        found = batches(conn, topic)
        if sum(1 for b in found if b[3]) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def wait_for_state(conn, transactional_id, states):
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        described = describe_transactions(conn, [transactional_id])[transactional_id]
        if described[1] in states or time.monotonic() > deadline:
            return described
        time.sleep(0.1)


def start(broker, conn, topic, transactional_id, timeout_ms=60000):
    clients.create_topic(broker, topic)
    return init_ok(conn, transactional_id, timeout_ms)


# ---------------------------------------------------------------- tests


def test_commit_bumps_the_epoch_and_the_next_transaction_runs_at_it(broker, topic):
    tid = "tv2-commit"
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        pid, epoch = start(broker, conn, topic, tid)
        assert added(conn, tid, pid, epoch, topic) == (NONE, NONE)
        described = describe_transactions(conn, [tid])[tid]
        assert described[1:5:3] == ("Ongoing", epoch) and described[5] == {topic: [0]}
        assert produce_v12(conn, tid, topic, txn_batch(pid, epoch, 0, [b"a", b"b", b"c"])) \
            == (NONE, 0)

        assert end_txn_v5(conn, tid, pid, epoch, True) == (NONE, pid, epoch + 1)
        layout = wait_for_markers(conn, topic, 1)
        assert layout == [(0, pid, epoch, None, [b"a", b"b", b"c"]),
                          (3, pid, epoch + 1, "commit", [])], "the marker carries epoch + 1"
        assert wait_for_state(conn, tid, ("CompleteCommit",))[1:5:3] == \
            ("CompleteCommit", epoch + 1)

        # The next transaction: implicit add and sequence 0 at the bumped epoch.
        bumped = epoch + 1
        assert added(conn, tid, pid, bumped, topic) == (NONE, NONE)
        assert produce_v12(conn, tid, topic, txn_batch(pid, bumped, 0, [b"d"])) == (NONE, 4)
        # The old epoch is fenced, at the coordinator and at the partition.
        assert added(conn, tid, pid, epoch, topic) == (NONE, PRODUCER_FENCED)
        assert end_txn_v5(conn, tid, pid, epoch, True) == (PRODUCER_FENCED, -1, -1)
        assert produce_v12(conn, tid, topic, txn_batch(pid, epoch, 3, [b"zombie"]))[0] == \
            INVALID_PRODUCER_EPOCH

        assert end_txn_v5(conn, tid, pid, bumped, False) == (NONE, pid, bumped + 1)
        layout = wait_for_markers(conn, topic, 2)
        assert layout[2:] == [(4, pid, bumped, None, [b"d"]),
                              (5, pid, bumped + 1, "abort", [])]
        assert all(b"zombie" not in values for *_, values in layout)


def test_retries_answer_the_current_producer_and_aborts_of_nothing_bump(broker, topic):
    tid = "tv2-retry"
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        pid, epoch = start(broker, conn, topic, tid)
        assert added(conn, tid, pid, epoch, topic) == (NONE, NONE)
        assert produce_v12(conn, tid, topic, txn_batch(pid, epoch, 0, [b"x"]))[0] == NONE
        assert end_txn_v5(conn, tid, pid, epoch, False) == (NONE, pid, epoch + 1)
        wait_for_state(conn, tid, ("CompleteAbort",))
        # The answer was lost: the retry (epoch one behind) gets the same answer.
        assert end_txn_v5(conn, tid, pid, epoch, False) == (NONE, pid, epoch + 1)
        assert end_txn_v5(conn, tid, pid, epoch, True) == (INVALID_TXN_STATE, -1, -1)
        # A commit of nothing is refused; an abort of nothing bumps the epoch again, with
        # no marker to write.
        assert end_txn_v5(conn, tid, pid, epoch + 1, True) == (INVALID_TXN_STATE, -1, -1)
        assert retry(lambda: end_txn_v5(conn, tid, pid, epoch + 1, False)) == \
            (NONE, pid, epoch + 2)
        described = wait_for_state(conn, tid, ("CompleteAbort",))
        assert described[1:5:3] == ("CompleteAbort", epoch + 2)
        assert sum(1 for b in batches(conn, topic) if b[3]) == 1
        # Two behind is no retry.
        assert end_txn_v5(conn, tid, pid, epoch, False) == (PRODUCER_FENCED, -1, -1)
        # An Empty transaction (fresh InitProducerId) takes only an abort.
        pid, empty_epoch = init_ok(conn, tid)
        assert empty_epoch == epoch + 3
        assert end_txn_v5(conn, tid, pid, empty_epoch, True) == (INVALID_TXN_STATE, -1, -1)
        assert retry(lambda: end_txn_v5(conn, tid, pid, empty_epoch, False)) == \
            (NONE, pid, empty_epoch + 1)


def test_a_new_producer_fences_a_version_2_transaction_two_epochs_up(broker, topic):
    tid = "tv2-fence"
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        pid, epoch = start(broker, conn, topic, tid)
        assert added(conn, tid, pid, epoch, topic) == (NONE, NONE)
        assert produce_v12(conn, tid, topic, txn_batch(pid, epoch, 0, [b"old"]))[0] == NONE
        assert init_producer_id(conn, tid)[0] == CONCURRENT_TRANSACTIONS
        layout = wait_for_markers(conn, topic, 1)
        assert layout[1] == (1, pid, epoch + 2, "abort", [])
        assert wait_for_state(conn, tid, ("CompleteAbort",))[4] == epoch + 2
        # The fenced producer's late abort is no retry; the new producer goes on above.
        assert end_txn_v5(conn, tid, pid, epoch, False) == (PRODUCER_FENCED, -1, -1)
        assert init_ok(conn, tid) == (pid, epoch + 3)


def test_a_timed_out_version_2_transaction_is_aborted_two_epochs_up(broker, topic):
    tid = "tv2-timeout"
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        pid, epoch = start(broker, conn, topic, tid, timeout_ms=1000)
        assert added(conn, tid, pid, epoch, topic) == (NONE, NONE)
        assert produce_v12(conn, tid, topic, txn_batch(pid, epoch, 0, [b"slow"]))[0] == NONE
        described = wait_for_state(conn, tid, ("CompleteAbort",))
        assert described[1:5:3] == ("CompleteAbort", epoch + 2)
        assert wait_for_markers(conn, topic, 1)[1] == (1, pid, epoch + 2, "abort", [])
        assert end_txn_v5(conn, tid, pid, epoch, True) == (PRODUCER_FENCED, -1, -1)


def test_a_version_1_exchange_keeps_its_epoch(broker, topic):
    tid = "tv2-v1-client"
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        pid, epoch = start(broker, conn, topic, tid)
        assert retry(lambda: (add_partitions_v3(conn, tid, pid, epoch, topic),))[0] == NONE
        assert produce_v12(conn, tid, topic, txn_batch(pid, epoch, 0, [b"v1"]))[0] == NONE
        assert retry(lambda: (end_txn_v4(conn, tid, pid, epoch, True),))[0] == NONE
        assert wait_for_markers(conn, topic, 1)[1] == (1, pid, epoch, "commit", [])
        assert wait_for_state(conn, tid, ("CompleteCommit",))[4] == epoch
        # Its retry is the same request, answered NONE.
        assert end_txn_v4(conn, tid, pid, epoch, True) == NONE


def test_api_versions_advertise_transaction_version_2(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        supported, finalized, _ = api_versions_features(conn, 4)
        assert supported["transaction.version"] == (0, 2)
        assert finalized["transaction.version"] == (TRANSACTION_VERSION_FINALIZED,) * 2
        # KAFKA-17492: below v4 a range from 0 is left out; the level is still finalized.
        supported, finalized, _ = api_versions_features(conn, 3)
        assert "transaction.version" not in supported
        assert finalized["transaction.version"] == (TRANSACTION_VERSION_FINALIZED,) * 2


def add_partitions_batch_v5(conn, entries):
    """AddPartitionsToTxn v5 carrying several transactions, as a leader batches those
    waiting on one coordinator; entries: [(id, producer id, epoch, {topic: [partitions]})].
    Returns (top-level error, [(id, {(topic, partition): error})] in response order)."""
    def topic(item):
        name, partitions = item
        return compact_string(name) + compact_array(partitions, int32) + TAGS

    def transaction(entry):
        transactional_id, producer_id, epoch, topics = entry
        return (compact_string(transactional_id) + int64(producer_id) + int16(epoch)
                + boolean(False) + compact_array(sorted(topics.items()), topic) + TAGS)

    body = compact_array(entries, transaction) + TAGS
    reader = conn.request(ADD_PARTITIONS_TO_TXN, 5, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle
    error = reader.int16()

    def read_partition(r):
        result = (r.int32(), r.int16())
        r.skip_tagged_fields()
        return result

    def read_topic(r):
        name = r.compact_string()
        partitions = r.compact_array(read_partition)
        r.skip_tagged_fields()
        return name, partitions

    def read_transaction(r):
        txn_id = r.compact_string()
        codes = {(name, partition): code
                 for name, partitions in r.compact_array(read_topic)
                 for partition, code in partitions}
        r.skip_tagged_fields()
        return txn_id, codes

    results = reader.compact_array(read_transaction)
    reader.skip_tagged_fields()
    reader.expect_end()
    return error, results


def test_a_batch_of_transactions_is_answered_per_transaction_in_request_order(broker, topic):
    """A leader's batched AddPartitionsToTxn: each transaction gets its own answer (the
    coordinator handles them at once, not one after another), in request order."""
    clients.create_topic(broker, topic, partitions=3)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        ids = [f"tv2-batch-{index}" for index in range(8)]
        producers = {tid: init_ok(conn, tid) for tid in ids}
        entries = [(tid, *producers[tid], {topic: [index % 3]}) for index, tid in enumerate(ids)]
        # A fenced epoch and a partition that does not exist, each in its own transaction.
        fenced_id, unknown_id = ids[6], ids[7]
        old_epoch = producers[fenced_id][1]
        producers[fenced_id] = init_ok(conn, fenced_id)  # bumps the epoch
        entries[6] = (fenced_id, producers[fenced_id][0], old_epoch, {topic: [0]})
        entries[7] = (unknown_id, *producers[unknown_id], {topic: [1, 99]})
        error, results = add_partitions_batch_v5(conn, entries)
        assert error == NONE
        assert [txn_id for txn_id, _ in results] == ids, "request order"
        for index, (tid, codes) in enumerate(results[:6]):
            assert codes == {(topic, index % 3): NONE}, (tid, codes)
        fenced_code = results[6][1][(topic, 0)]
        assert fenced_code in (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH), results[6]
        assert results[7][1] == {(topic, 1): OPERATION_NOT_ATTEMPTED,
                                 (topic, 99): UNKNOWN_TOPIC_OR_PARTITION}
        described = describe_transactions(conn, ids)
        for index, tid in enumerate(ids[:6]):
            assert described[tid][1] == "Ongoing", described[tid]
            assert described[tid][5] == {topic: [index % 3]}, described[tid]
        assert described[unknown_id][5] == {}, "nothing added for a request with an unknown"
        for tid in ids[:6]:
            pid, epoch = producers[tid]
            assert end_txn_v5(conn, tid, pid, epoch, False)[0] == NONE
