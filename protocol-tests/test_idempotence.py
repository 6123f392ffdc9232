"""Idempotent produce: InitProducerId, sequence checks, duplicate batches.

Real idempotent producers (confluent-kafka, kafka-python) must get every record exactly
once and in order; the raw tests send exact batches (rawkafka) to check what the broker
answers for a retransmitted batch, the next batch, and a sequence gap, also after a
restart (the producer state must be rebuilt from the log).
"""

import pytest

import clients
import rawkafka

PARTITIONS = 4


def check_stored_batches(broker, topic, partition, expect_producer=True):
    """Stored batches: one producer id, sequences contiguous from 0; returns the pid."""
    producer_ids = set()
    next_sequence = 0
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        offset = 0
        while True:
            result = rawkafka.fetch(conn, topic, partition, offset)
            assert result.error_code == 0
            batches = result.batches()
            if not batches:
                break
            for batch in batches:
                assert batch.validate_crc()
                producer_ids.add(batch.producer_id)
                if expect_producer:
                    assert batch.base_sequence == next_sequence, (
                        f"batch at offset {batch.base_offset} has sequence "
                        f"{batch.base_sequence}, expected {next_sequence}")
                    next_sequence = batch.last_sequence + 1
                offset = batch.next_offset
    assert len(producer_ids) == 1, f"producer ids {producer_ids}"
    (producer_id,) = producer_ids
    if expect_producer:
        assert producer_id >= 0
    return producer_id


def test_confluent_idempotent_producer_exactly_once(broker, topic):
    clients.create_topic(broker, topic, partitions=PARTITIONS)
    count = 2000
    records = [{"key": b"k%d" % i, "value": b"v%d" % i, "partition": i % PARTITIONS}
               for i in range(count)]
    messages = clients.produce_ok(broker, topic, records, **{
        "enable.idempotence": True, "acks": "all",
        "max.in.flight.requests.per.connection": 5, "linger.ms": 5, "batch.num.messages": 50})

    for partition in range(PARTITIONS):
        produced = [r["value"] for r in records if r["partition"] == partition]
        acked = [m for m in messages if m.partition() == partition]
        assert [m.offset() for m in acked] == list(range(len(produced)))
        consumed = clients.consume_all(broker, topic, partition)
        assert [m.value() for m in consumed] == produced
        assert [m.offset() for m in consumed] == list(range(len(produced)))
    producer_ids = {check_stored_batches(broker, topic, p) for p in range(PARTITIONS)}
    assert len(producer_ids) == 1, f"one producer, several ids: {producer_ids}"


def test_kafka_python_idempotent_producer_exactly_once(broker, topic):
    clients.create_topic(broker, topic, partitions=2)
    producer = clients.kp_producer(broker, enable_idempotence=True, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, value=b"v%d" % i, partition=i % 2) for i in range(400)]
        producer.flush(timeout=30)
        offsets = [(f.get(timeout=30).partition, f.get(timeout=30).offset) for f in futures]
    finally:
        producer.close(timeout=10)
    for partition in range(2):
        assert [o for p, o in offsets if p == partition] == list(range(200))
        consumed = clients.consume_all(broker, topic, partition)
        assert [m.value() for m in consumed] == [b"v%d" % i for i in range(partition, 400, 2)]
        check_stored_batches(broker, topic, partition)


# ---------------------------------------------------------------- raw protocol


def batch_of(producer_id, epoch, sequence, count, tag):
    records = [(None, f"{tag}-{sequence + i}".encode(), []) for i in range(count)]
    return rawkafka.build_batch(records, producer_id=producer_id, producer_epoch=epoch,
                                base_sequence=sequence)


def stored_values(broker, topic):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        return [(offset, value) for offset, _k, value, _h
                in rawkafka.fetch_all_records(conn, topic, 0)]


@pytest.fixture
def producer_id(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error_code, pid, epoch = rawkafka.init_producer_id(conn)
    assert error_code == 0
    assert pid >= 0 and epoch >= 0, (pid, epoch)
    return pid, epoch


def test_init_producer_id_gives_distinct_ids(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        ids = [rawkafka.init_producer_id(conn, version=version) for version in (0, 1, 1)]
    assert all(error_code == 0 for error_code, _pid, _epoch in ids), ids
    pids = [pid for _error, pid, _epoch in ids]
    assert len(set(pids)) == 3 and min(pids) >= 0, pids


def test_raw_duplicate_and_out_of_order_batches(broker, topic, producer_id):
    pid, epoch = producer_id
    clients.create_topic(broker, topic, partitions=1)
    first = batch_of(pid, epoch, 0, 3, "a")
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        result = rawkafka.produce(conn, topic, 0, first)
        assert (result.error_code, result.base_offset) == (0, 0), result
        assert rawkafka.latest_offset(conn, topic, 0) == 3

        # The very same batch again (a retry whose response was lost): no error, same offset.
        result = rawkafka.produce(conn, topic, 0, first)
        assert (result.error_code, result.base_offset) == (0, 0), result
        assert rawkafka.latest_offset(conn, topic, 0) == 3

        result = rawkafka.produce(conn, topic, 0, batch_of(pid, epoch, 3, 3, "a"))
        assert (result.error_code, result.base_offset) == (0, 3), result
        assert rawkafka.latest_offset(conn, topic, 0) == 6

        # A gap in the sequence: rejected, nothing appended.
        result = rawkafka.produce(conn, topic, 0, batch_of(pid, epoch, 10, 2, "gap"))
        assert result.error_code == rawkafka.OUT_OF_ORDER_SEQUENCE_NUMBER, result
        assert rawkafka.latest_offset(conn, topic, 0) == 6

        # The producer carries on from where it really was.
        result = rawkafka.produce(conn, topic, 0, batch_of(pid, epoch, 6, 2, "a"))
        assert (result.error_code, result.base_offset) == (0, 6), result

        # An older batch, still among the last five, is recognised as a duplicate too.
        result = rawkafka.produce(conn, topic, 0, first)
        assert (result.error_code, result.base_offset) == (0, 0), result
        assert rawkafka.latest_offset(conn, topic, 0) == 8

    assert stored_values(broker, topic) == [(i, f"a-{i}".encode()) for i in range(8)]
    assert check_stored_batches(broker, topic, 0) == pid


def test_raw_producers_are_independent(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        _e, pid_a, epoch_a = rawkafka.init_producer_id(conn)
        _e, pid_b, epoch_b = rawkafka.init_producer_id(conn)
        for pid, epoch, tag in ((pid_a, epoch_a, "a"), (pid_b, epoch_b, "b")):
            result = rawkafka.produce(conn, topic, 0, batch_of(pid, epoch, 0, 2, tag))
            assert result.error_code == 0, result
        # Same sequence numbers, different producers: both kept.
        assert rawkafka.latest_offset(conn, topic, 0) == 4
        # Non-idempotent batches (producer id -1) are never deduplicated.
        plain = rawkafka.build_batch([(None, b"plain", [])])
        for _ in range(2):
            assert rawkafka.produce(conn, topic, 0, plain).error_code == 0
        assert rawkafka.latest_offset(conn, topic, 0) == 6
    assert [value for _o, value in stored_values(broker, topic)] == \
        [b"a-0", b"a-1", b"b-0", b"b-1", b"plain", b"plain"]


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_raw_deduplication_survives_restart(broker, topic, producer_id, hard):
    pid, epoch = producer_id
    clients.create_topic(broker, topic, partitions=1)
    first = batch_of(pid, epoch, 0, 2, "r")
    second = batch_of(pid, epoch, 2, 2, "r")
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        assert rawkafka.produce(conn, topic, 0, first).base_offset == 0
        assert rawkafka.produce(conn, topic, 0, second).base_offset == 2

    broker.restart(hard=hard)

    def resend_second():
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            return rawkafka.produce(conn, topic, 0, second)

    result = clients.wait_for(resend_second, 30, what="produce after restart")
    assert (result.error_code, result.base_offset) == (0, 2), result
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        assert rawkafka.latest_offset(conn, topic, 0) == 4
        result = rawkafka.produce(conn, topic, 0, batch_of(pid, epoch, 9, 1, "r"))
        assert result.error_code == rawkafka.OUT_OF_ORDER_SEQUENCE_NUMBER, result
        result = rawkafka.produce(conn, topic, 0, batch_of(pid, epoch, 4, 1, "r"))
        assert (result.error_code, result.base_offset) == (0, 4), result
    assert stored_values(broker, topic) == [(i, f"r-{i}".encode()) for i in range(5)]
