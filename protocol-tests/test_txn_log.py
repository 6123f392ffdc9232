"""The log side of transactions, driven with raw frames: transactional batches, markers
written with WriteTxnMarkers v1 (as the transaction coordinator would), the last stable
offset, read_committed fetches with their aborted transactions, ListOffsets under
read_committed, and the same answers after a kill -9 and recovery.

The producer ids come from InitProducerId without a transactional id (idempotent), and no
coordinator knows these transactions: the broker runs with
`transaction.partition.verification.enable=false`, so leaders append transactional batches
without asking a coordinator (KIP-890's verification is tested in test_txn_verification.py).
"""

import clients
import rawkafka
from rawkafka import array, int8, int16, int32, int64, string, uvarint
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c

# No coordinator is involved: the markers are written by hand.
BROKER_OVERRIDES = {"transaction.partition.verification.enable": "false"}

WRITE_TXN_MARKERS = 27
INVALID_PRODUCER_EPOCH = 47
TRANSACTION_COORDINATOR_FENCED = 52


def txn_batch(producer_id, epoch, sequence, values):
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=True, producer_id=producer_id,
        producer_epoch=epoch, base_sequence=sequence, batch_size=1 << 20)
    for index, value in enumerate(values):
        assert builder.append(index, timestamp=1000 + index, key=None, value=value,
                              headers=[]) is not None
    return bytes(builder.build())


def compact_string(value):
    data = value.encode()
    return uvarint(len(data) + 1) + data


def compact_array(items):
    return uvarint(len(items) + 1) + b"".join(items)


def write_txn_markers(conn, markers):
    """WriteTxnMarkers v1 (flexible). markers: [(producer_id, epoch, committed,
    coordinator_epoch, {topic: [partitions]})]. Returns {(producer_id, topic, partition):
    error_code}."""
    tagged = uvarint(0)
    encoded = []
    for producer_id, epoch, committed, coordinator_epoch, topics in markers:
        topic_items = [compact_string(name) + compact_array([int32(p) for p in partitions])
                       + tagged for name, partitions in topics.items()]
        encoded.append(int64(producer_id) + int16(epoch) + int8(1 if committed else 0)
                       + compact_array(topic_items) + int32(coordinator_epoch) + tagged)
    body = compact_array(encoded) + tagged
    reader = conn.request(WRITE_TXN_MARKERS, 1, body, flexible_request=True,
                          flexible_response=True)
    results = {}

    def read_partition(r):
        index, code = r.int32(), r.int16()
        r.skip_tagged_fields()
        return index, code

    def read_topic(r):
        name = r.compact_string()
        partitions = r.compact_array(read_partition)
        r.skip_tagged_fields()
        return name, partitions

    def read_marker(r):
        producer_id = r.int64()
        for name, partitions in r.compact_array(read_topic):
            for index, code in partitions:
                results[(producer_id, name, index)] = code
        r.skip_tagged_fields()

    reader.compact_array(read_marker)
    reader.skip_tagged_fields()
    reader.expect_end()
    return results


def fetch(conn, topic, offset, isolation_level):
    """Fetch v4 of partition 0 at an isolation level: (error, hw, lso, aborted, batches)."""
    partitions = array([int32(0) + int64(offset) + int32(1 << 20)], lambda item: item)
    body = (int32(-1) + int32(0) + int32(1) + int32(1 << 20) + int8(isolation_level)
            + array([string(topic) + partitions], lambda item: item))
    reader = conn.request(rawkafka.FETCH, 4, body)
    reader.int32()

    def read_partition(r):
        index, error_code = r.int32(), r.int16()
        high_watermark, last_stable_offset = r.int64(), r.int64()
        aborted = r.array(lambda rr: (rr.int64(), rr.int64()))
        records = r.nullable_bytes()
        return index, (error_code, high_watermark, last_stable_offset, aborted, records)

    topics = reader.array(lambda r: (r.string(), dict(r.array(read_partition))))
    reader.expect_end()
    error_code, hw, lso, aborted, records = topics[0][1][0]
    result = rawkafka.PartitionFetchResult(error_code, hw, lso, records)
    batches = [(b.base_offset, b.next_offset - 1, b.is_control_batch)
               for b in result.batches()]
    return error_code, hw, lso, aborted, batches


def list_latest(conn, topic, isolation_level):
    """ListOffsets v2 latest of partition 0: (error_code, offset)."""
    partitions = array([int32(0) + int64(rawkafka.LATEST_TIMESTAMP)], lambda item: item)
    body = (int32(-1) + int8(isolation_level)
            + array([string(topic) + partitions], lambda item: item))
    reader = conn.request(rawkafka.LIST_OFFSETS, 2, body)
    reader.int32()
    topics = reader.array(lambda r: (r.string(), r.array(
        lambda rr: (rr.int32(), rr.int16(), rr.int64(), rr.int64()))))
    reader.expect_end()
    (_index, error_code, _timestamp, offset), = topics[0][1]
    return error_code, offset


def produce(conn, topic, batch, transactional_id=None):
    result = rawkafka.produce(conn, topic, 0, batch, transactional_id=transactional_id)
    assert result.error_code == rawkafka.NONE, result
    return result.base_offset


def consumed_offsets(broker, topic, count, isolation):
    messages = clients.consume(broker, topic, 0, 0, count, **{"isolation.level": isolation})
    return [(m.offset(), m.value()) for m in messages]


def test_transactions_markers_lso_and_read_committed(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error, pid_a, epoch_a = rawkafka.init_producer_id(conn)
        assert error == 0
        error, pid_b, epoch_b = rawkafka.init_producer_id(conn)
        assert error == 0
        plain = rawkafka.build_batch([(None, b"plain", [])])
        assert produce(conn, topic, plain) == 0
        assert produce(conn, topic, txn_batch(pid_a, epoch_a, 0, [b"a1", b"a2"]), "tx-a") == 1
        assert produce(conn, topic, txn_batch(pid_b, epoch_b, 0, [b"b1", b"b2"]), "tx-b") == 3

        error, hw, lso, aborted, batches = fetch(conn, topic, 0, 1)
        assert (error, hw, lso, aborted) == (0, 5, 1, [])
        assert batches == [(0, 0, False)], "read_committed stops at the LSO"
        assert len(fetch(conn, topic, 0, 0)[4]) == 3
        assert list_latest(conn, topic, 1) == (0, 1)
        assert list_latest(conn, topic, 0) == (0, 5)

        commit = (pid_a, epoch_a, True, 0, {topic: [0]})
        assert write_txn_markers(conn, [commit]) == {(pid_a, topic, 0): 0}
        assert fetch(conn, topic, 0, 1)[1:3] == (6, 3), "B still open from 3"
        abort = (pid_b, epoch_b, False, 0, {topic: [0]})
        assert write_txn_markers(conn, [abort]) == {(pid_b, topic, 0): 0}
        assert produce(conn, topic, rawkafka.build_batch([(None, b"after", [])])) == 7

        # Fencing: an older producer epoch, an older coordinator epoch, an unknown
        # partition.
        bumped = (pid_a, epoch_a + 1, False, 3, {topic: [0]})
        assert write_txn_markers(conn, [bumped]) == {(pid_a, topic, 0): 0}
        stale = (pid_a, epoch_a, True, 3, {topic: [0]})
        fenced = (pid_a, epoch_a + 1, True, 2, {topic: [0], "no-such-topic": [0]})
        answers = write_txn_markers(conn, [stale])
        assert answers == {(pid_a, topic, 0): INVALID_PRODUCER_EPOCH}
        answers = write_txn_markers(conn, [fenced])
        assert answers == {(pid_a, topic, 0): TRANSACTION_COORDINATOR_FENCED,
                           (pid_a, "no-such-topic", 0): rawkafka.UNKNOWN_TOPIC_OR_PARTITION}
        # The zombie producer A at its old epoch is fenced.
        zombie = rawkafka.produce(conn, topic, 0, txn_batch(pid_a, epoch_a, 2, [b"z"]),
                                  transactional_id="tx-a")
        assert zombie.error_code == INVALID_PRODUCER_EPOCH
        # Clients may not write control batches.
        forged = bytearray(txn_batch(pid_b, epoch_b, 2, [b"x"]))
        forged[rawkafka.BATCH_ATTRIBUTES_OFFSET + 1] |= 0x20
        crc = calc_crc32c(bytes(forged[rawkafka.BATCH_ATTRIBUTES_OFFSET:]))
        forged[rawkafka.BATCH_CRC_OFFSET:rawkafka.BATCH_CRC_OFFSET + 4] = crc.to_bytes(4, "big")
        refused = rawkafka.produce(conn, topic, 0, bytes(forged), transactional_id="tx-b")
        assert refused.error_code == rawkafka.INVALID_RECORD
        assert produce(conn, topic, rawkafka.build_batch([(None, b"after2", [])])) == 9
        check_final_answers(conn, topic, pid_a, pid_b)
    check_consumers(broker, topic)

    broker.restart(hard=True)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        clients.wait_for(lambda: fetch(conn, topic, 0, 1)[0] == 0, 30,
                         what="fetch after restart")
        check_final_answers(conn, topic, pid_a, pid_b)
    check_consumers(broker, topic)


def check_final_answers(conn, topic, pid_a, pid_b):
    """0 plain, 1-2 A (committed at 5), 3-4 B (aborted at 6), 7 plain, 8 an empty abort of
    A by the bumped epoch, 9 plain."""
    error, hw, lso, aborted, batches = fetch(conn, topic, 0, 1)
    assert (error, hw, lso) == (0, 10, 10)
    assert batches == [(0, 0, False), (1, 2, False), (3, 4, False), (5, 5, True),
                       (6, 6, True), (7, 7, False), (8, 8, True), (9, 9, False)]
    assert aborted == [(pid_b, 3), (pid_a, 8)]
    error, hw, lso, aborted, batches = fetch(conn, topic, 0, 0)
    assert (error, hw, lso, aborted) == (0, 10, 10, None), "null for read_uncommitted"
    assert len(batches) == 8
    # From after B's abort marker: B is not listed.
    assert fetch(conn, topic, 7, 1)[3] == [(pid_a, 8)]
    assert fetch(conn, topic, 9, 1)[3] == []
    assert list_latest(conn, topic, 1) == (0, 10)
    assert list_latest(conn, topic, 0) == (0, 10)


def check_consumers(broker, topic):
    """librdkafka drops aborted records and markers under read_committed."""
    committed = consumed_offsets(broker, topic, 5, "read_committed")
    assert committed == [(0, b"plain"), (1, b"a1"), (2, b"a2"), (7, b"after"),
                         (9, b"after2")]
    uncommitted = consumed_offsets(broker, topic, 7, "read_uncommitted")
    assert [offset for offset, _ in uncommitted] == [0, 1, 2, 3, 4, 7, 9]


def fetch_waiting(conn, topic, offset, max_wait_ms):
    """Fetch v4 read_committed that may park up to max_wait_ms for one byte."""
    partitions = array([int32(0) + int64(offset) + int32(1 << 20)], lambda item: item)
    body = (int32(-1) + int32(max_wait_ms) + int32(1) + int32(1 << 20) + int8(1)
            + array([string(topic) + partitions], lambda item: item))
    reader = conn.request(rawkafka.FETCH, 4, body)
    reader.int32()
    topics = reader.array(lambda r: (r.string(), r.array(lambda rr: (
        rr.int32(), rr.int16(), rr.int64(), rr.int64(),
        rr.array(lambda a: (a.int64(), a.int64())), rr.nullable_bytes()))))
    (_index, error_code, hw, lso, _aborted, records), = topics[0][1]
    return error_code, hw, lso, records


def test_a_parked_read_committed_fetch_wakes_when_the_lso_moves(broker, topic):
    import threading
    import time
    clients.create_topic(broker, topic, partitions=1)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error, pid, epoch = rawkafka.init_producer_id(conn)
        assert error == 0
        assert produce(conn, topic, txn_batch(pid, epoch, 0, [b"t1"]), "tx") == 0
        assert fetch(conn, topic, 0, 1)[1:3] == (1, 0), "open transaction: LSO 0"

    fetching = threading.Event()

    def commit_later():
        # A second after the fetch is sent, however late the test thread gets there.
        assert fetching.wait(30), "the fetch was never sent"
        time.sleep(1.0)
        with rawkafka.Connection("127.0.0.1", broker.port) as other:
            assert write_txn_markers(other, [(pid, epoch, True, 0, {topic: [0]})]) == {
                (pid, topic, 0): 0}

    committer = threading.Thread(target=commit_later)
    committer.start()
    with rawkafka.Connection("127.0.0.1", broker.port, timeout_s=30) as conn:
        started = time.monotonic()
        fetching.set()
        error, hw, lso, records = fetch_waiting(conn, topic, 0, 20_000)
        waited = time.monotonic() - started
    committer.join()
    assert error == 0 and (hw, lso) == (2, 2)
    assert records, "the committed transaction is returned"
    assert 0.5 < waited < 10, f"woken by the marker, not the timeout ({waited:.1f} s)"
