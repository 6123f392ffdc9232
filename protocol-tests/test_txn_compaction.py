"""Transactions on a compacted topic (Kafka's LogCleaner with transactions): the cleaner
drops aborted records, then, past delete.retention.ms and once their transactions have no
batch left, the commit and abort markers; it keeps each producer's last batch (as a bare
header when it lost every record) so producer state survives. Checked with confluent-kafka
transactional producers, read_committed and read_uncommitted consumers, raw Fetch for the
markers, DescribeProducers for producer state, and a kill -9 restart without producer
snapshots (state rebuilt from the log)."""

import glob
import os
import time

import clients
import rawkafka
from confluent_kafka import TopicPartition

from test_describe_producers import producers_on
from test_transactions import (BROKER_OVERRIDES as TXN_OVERRIDES, CALL_TIMEOUT_S, COMMIT,
                               ABORT, fetch_v4, tid, txn_producer, visible, wait_settled)

BROKER_OVERRIDES = {**TXN_OVERRIDES, "log.cleaner.backoff.ms": "300"}
TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.bytes": "1024",
                "delete.retention.ms": "1000", "min.cleanable.dirty.ratio": "0.01"}
KEYS = [f"k{i}" for i in range(5)]
PAD = "p" * 60
# Bounded waiting for cleaner passes: each round closes a segment and sleeps a little.
CLEAN_ROUNDS_MAX = 60


def keyed_transaction(producer, topic, pairs, outcome):
    """One transaction of (key, value) records; returns {value: offset}."""
    offsets = {}

    def on_delivery(error, message):
        assert error is None, f"delivery failed: {error}"
        offsets[message.value().decode()] = message.offset()

    producer.begin_transaction()
    for key, value in pairs:
        producer.produce(topic, key=key.encode(), value=value.encode(), partition=0,
                         on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(CALL_TIMEOUT_S) == 0, "records still undelivered"
    if outcome == COMMIT:
        producer.commit_transaction(CALL_TIMEOUT_S)
    else:
        producer.abort_transaction(CALL_TIMEOUT_S)
    return offsets


def filler(producer, topic, round_index):
    """A committed transaction of unique keys, enough bytes to close a segment."""
    pairs = [(f"f{round_index}-{i}", f"f{round_index}-{i}:{PAD}") for i in range(8)]
    return keyed_transaction(producer, topic, pairs, COMMIT)


def layout(broker, topic, partition):
    """Every entry of the partition up to its high watermark, raw (rawkafka.LogEntry)."""
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        return rawkafka.read_layout(conn, topic, partition)


def markers_without_data(entries):
    """Markers whose transaction has no record left (single-producer view per producer):
    (kind, offset) for each marker with no data of its producer since that producer's
    previous marker."""
    seen_data, dataless = set(), []
    for entry in entries:
        if entry.kind == "data":
            seen_data.add(entry.producer_id)
        elif entry.producer_id in seen_data:
            seen_data.discard(entry.producer_id)
        else:
            dataless.append((entry.kind, entry.offset))
    return dataless


def test_cleaner_removes_aborted_data_then_markers_and_keeps_producer_state(start_broker,
                                                                          topic):
    broker = start_broker("txncompact", BROKER_OVERRIDES)
    try:
        clients.create_topic(broker, topic, 1, config=TOPIC_CONFIG)
        writer = txn_producer(broker, tid("writer"))
        writer.init_transactions(CALL_TIMEOUT_S)
        latest, aborted_values = {}, set()
        for round_index in range(12):
            pairs = [(key, f"{key}-r{round_index}:{PAD}") for key in KEYS]
            outcome = ABORT if round_index % 4 == 1 else COMMIT
            offsets = keyed_transaction(writer, topic, pairs, outcome)
            if outcome == COMMIT:
                latest.update({key: (offsets[value], value) for key, value in pairs})
            else:
                aborted_values.update(value for _key, value in pairs)
        # The writer's last transaction aborts: its last batch loses every record and
        # must stay as a bare header (with its sequences and epoch) for producer state.
        last = [(key, f"{key}-last:{PAD}") for key in KEYS]
        last_abort = max(keyed_transaction(writer, topic, last, ABORT).values()) + 1
        aborted_values.update(value for _key, value in last)
        fillers = txn_producer(broker, tid("filler"))
        fillers.init_transactions(CALL_TIMEOUT_S)
        filled = {}
        filled.update(filler(fillers, topic, 0))
        writer_id = next(entry.producer_id for entry in layout(broker, topic, 0)
                         if entry.kind == "data")
        state_before = producers_on(broker, topic)[writer_id]

        # Wait for passes: the first drops the aborted records, a later one (past the
        # 1 s horizon) the markers whose transactions have nothing left.
        done = None
        for round_index in range(1, CLEAN_ROUNDS_MAX):
            time.sleep(0.4)
            filled.update(filler(fillers, topic, round_index))
            entries = layout(broker, topic, 0)
            values = {e.value.decode() for e in entries if e.kind == "data"}
            # The last abort's batch stays, empty (no record for the layout to show).
            dataless = [m for m in markers_without_data(entries) if m != (ABORT, last_abort)]
            if not (values & aborted_values) and not dataless:
                done = entries
                break
        assert done is not None, f"markers not cleaned: {markers_without_data(entries)}"
        kinds = [e.kind for e in done]
        assert (ABORT, last_abort) in [(e.kind, e.offset) for e in done], \
            "the writer's last abort keeps its marker: its emptied batch is still there"
        assert kinds.count(ABORT) == 1, "the other aborts' markers went"
        writer_commits = [e for e in done if e.kind == COMMIT and e.producer_id == writer_id]
        assert len(writer_commits) == 1, \
            "only the last commit (round 11, the latest values) keeps its marker"

        # Both isolation levels read exactly the latest committed value per key, the
        # fillers, at the offsets they were produced at.
        wait_settled(broker, topic, 0, clients.watermarks(broker, topic, 0)[1])
        want = sorted([(offset, value) for offset, value in latest.values()]
                      + [(offset, value) for value, offset in filled.items()])
        for isolation in ("read_committed", "read_uncommitted"):
            seen, _position = visible(broker, topic, 0, isolation)
            got = sorted((offset, value.decode()) for offset, value in seen)
            assert got == want, f"{isolation}: {got[:8]}... want {want[:8]}..."

        # kill -9 and no producer snapshots: producer state is rebuilt from the log.
        broker.kill()
        snapshots = glob.glob(os.path.join(broker.data_dir, f"{topic}-0", "*.snapshot"))
        for path in snapshots:
            os.remove(path)
        broker.start()
        state_after = clients.wait_for(lambda: producers_on(broker, topic)[writer_id],
                                       CALL_TIMEOUT_S, interval_s=0.2,
                                       what="the partition to load its producers")
        for field in ("epoch", "last_sequence"):
            assert state_after[field] == state_before[field], (field, state_after)
        # The producer goes on where it was.
        offsets = keyed_transaction(writer, topic, [("k0", "k0-after")], COMMIT)
        end = clients.watermarks(broker, topic, 0)[1]
        wait_settled(broker, topic, 0, end)
        seen, _ = visible(broker, topic, 0, "read_committed")
        assert (offsets["k0-after"], b"k0-after") in seen
        writer.flush(CALL_TIMEOUT_S)
    finally:
        broker.stop()


def test_an_empty_batch_left_for_producer_state_is_read_through(start_broker, topic):
    """A consumer starting at a kept empty batch moves past it to the next record."""
    broker = start_broker("txnempty", BROKER_OVERRIDES)
    try:
        clients.create_topic(broker, topic, 1, config=TOPIC_CONFIG)
        writer = txn_producer(broker, tid("writer"))
        writer.init_transactions(CALL_TIMEOUT_S)
        aborted = keyed_transaction(writer, topic, [("k", f"k-aborted:{PAD}")], ABORT)
        fillers = txn_producer(broker, tid("filler"))
        fillers.init_transactions(CALL_TIMEOUT_S)
        filled = {}
        empty_offset = aborted[f"k-aborted:{PAD}"]
        for round_index in range(CLEAN_ROUNDS_MAX):
            filled.update(filler(fillers, topic, round_index))
            time.sleep(0.3)
            entries = layout(broker, topic, 0)
            if all(e.offset != empty_offset for e in entries if e.kind == "data"):
                break
        else:
            raise AssertionError("the aborted record was not cleaned")
        first_filler = min(filled.values())
        # The aborted record went; its batch stays as a bare header (producer state).
        _high, _lso, _aborted, batches = fetch_v4(broker, topic, 0, empty_offset, 0)
        assert batches[0] == (empty_offset, empty_offset, False), batches[:3]
        for isolation in ("read_committed", "read_uncommitted"):
            seen, _ = visible(broker, topic, 0, isolation, start=empty_offset)
            assert seen and seen[0][0] == first_filler, (isolation, seen[:3])
        consumer = clients.consumer(broker, **{"isolation.level": "read_committed"})
        try:
            consumer.assign([TopicPartition(topic, 0, empty_offset)])
            message = None
            deadline = time.monotonic() + CALL_TIMEOUT_S
            while message is None and time.monotonic() < deadline:
                message = consumer.poll(0.5)
            assert message is not None and message.error() is None
            assert message.offset() == first_filler
        finally:
            consumer.close()
    finally:
        broker.stop()
