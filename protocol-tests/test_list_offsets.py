"""ListOffsets: earliest, latest, by timestamp and max timestamp.

One partition holds six records with explicit CreateTime timestamps, in two batches:

    offset     0     1     2   |   3     4     5
    timestamp  1000  2000  3000 |  4000  9000  6000     (milliseconds after BASE_MS)

so a lookup returns the first offset whose timestamp is >= the target (not the closest),
and max_timestamp (-3) finds offset 4 in the middle of the second batch. BASE_MS is an hour
ago: timestamps older than retention.ms (7 days) may legitimately be deleted by retention,
which this broker runs at start-up.
"""

import time

import kafka
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import OffsetSpec

import clients
import rawkafka

BASE_MS = (int(time.time()) - 3600) * 1000
BATCHES = [[BASE_MS + ms for ms in batch] for batch in ([1000, 2000, 3000],
                                                       [4000, 9000, 6000])]
TIMESTAMPS = [ts for batch in BATCHES for ts in batch]
# target (ms after BASE_MS) -> (offset, ms after BASE_MS of that record), None: past the last.
RELATIVE_LOOKUPS = {
    0: (0, 1000),
    1000: (0, 1000),
    1500: (1, 2000),
    2000: (1, 2000),
    2500: (2, 3000),
    3001: (3, 4000),
    4000: (3, 4000),
    5000: (4, 9000),
    6000: (4, 9000),
    8999: (4, 9000),
    9000: (4, 9000),
    9001: None,
    86_400_000: None,
}
LOOKUPS = {BASE_MS + target: None if found is None else (found[0], BASE_MS + found[1])
           for target, found in RELATIVE_LOOKUPS.items()}
MAX_TIMESTAMP = (4, BASE_MS + 9000)
TIMEOUT_S = 30


@pytest.fixture(scope="module")
def timestamped(broker):
    """A topic with the six records above; returns its name."""
    name = "list-offsets-timestamped"
    clients.create_topic(broker, name, partitions=1)
    offset = 0
    for batch in BATCHES:
        records = [{"value": b"ts-%d" % ts, "timestamp": ts, "partition": 0} for ts in batch]
        messages = clients.produce_ok(broker, name, records, **{"linger.ms": 200})
        assert [m.offset() for m in messages] == list(range(offset, offset + len(batch)))
        offset += len(batch)
    return name


def confluent_list_offsets(broker, topic, spec, partition=0):
    admin = clients.admin(broker)
    tp = TopicPartition(topic, partition)
    futures = admin.list_offsets({tp: spec}, request_timeout=TIMEOUT_S)
    return futures[tp].result(timeout=TIMEOUT_S)


def test_records_keep_their_timestamps(broker, timestamped):
    messages = clients.consume(broker, timestamped, 0, 0, len(TIMESTAMPS))
    assert [(m.offset(), m.timestamp()) for m in messages] == \
        [(offset, (1, ts)) for offset, ts in enumerate(TIMESTAMPS)]


def test_confluent_watermarks(broker, timestamped, topic):
    assert clients.watermarks(broker, timestamped, 0) == (0, len(TIMESTAMPS))
    clients.create_topic(broker, topic, partitions=1)
    assert clients.watermarks(broker, topic, 0) == (0, 0)


def test_confluent_list_offsets_earliest_latest_max(broker, timestamped):
    assert confluent_list_offsets(broker, timestamped, OffsetSpec.earliest()).offset == 0
    assert confluent_list_offsets(broker, timestamped, OffsetSpec.latest()).offset == \
        len(TIMESTAMPS)
    result = confluent_list_offsets(broker, timestamped, OffsetSpec.max_timestamp())
    assert (result.offset, result.timestamp) == MAX_TIMESTAMP


@pytest.mark.parametrize("relative", sorted(RELATIVE_LOOKUPS))
def test_confluent_list_offsets_for_timestamp(broker, timestamped, relative):
    target = BASE_MS + relative
    result = confluent_list_offsets(broker, timestamped, OffsetSpec.for_timestamp(target))
    expected = LOOKUPS[target]
    if expected is None:
        assert result.offset == -1, f"target {target}: offset {result.offset}"
    else:
        assert (result.offset, result.timestamp) == expected


def test_confluent_offsets_for_times_consumer(broker, timestamped):
    consumer = clients.consumer(broker)
    try:
        targets = sorted(LOOKUPS)
        for target in targets:
            (found,) = consumer.offsets_for_times([TopicPartition(timestamped, 0, target)],
                                                  timeout=10)
            assert found.error is None
            expected = LOOKUPS[target]
            assert found.offset == (-1 if expected is None else expected[0]), target
    finally:
        consumer.close()


def test_kafka_python_offsets(broker, timestamped):
    consumer = clients.kp_consumer(broker)
    try:
        tp = kafka.TopicPartition(timestamped, 0)
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: len(TIMESTAMPS)}
        for target, expected in sorted(LOOKUPS.items()):
            found = consumer.offsets_for_times({tp: target})[tp]
            if expected is None:
                assert found is None, f"target {target}: {found}"
            else:
                assert (found.offset, found.timestamp) == expected, target
    finally:
        consumer.close()


def test_raw_list_offsets_v1(broker, timestamped):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        assert rawkafka.list_offsets(conn, timestamped, 0, rawkafka.EARLIEST_TIMESTAMP)[2] == 0
        assert rawkafka.latest_offset(conn, timestamped, 0) == len(TIMESTAMPS)
        for target, expected in sorted(LOOKUPS.items()):
            error_code, timestamp, offset = rawkafka.list_offsets(conn, timestamped, 0, target)
            assert error_code == 0
            if expected is None:
                assert (offset, timestamp) == (-1, -1), target
            else:
                assert (offset, timestamp) == expected, target


def test_kcat_query_by_timestamp(broker, timestamped):
    for relative, expected in ((2500, 2), (5000, 4), (1000, 0)):
        target = BASE_MS + relative
        output = clients.kcat(broker, "-Q", "-t", f"{timestamped}:0:{target}").stdout
        assert f"{timestamped} [0] offset {expected}" in output, output


def test_empty_partition(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    assert confluent_list_offsets(broker, topic, OffsetSpec.earliest()).offset == 0
    assert confluent_list_offsets(broker, topic, OffsetSpec.latest()).offset == 0
    assert confluent_list_offsets(broker, topic, OffsetSpec.for_timestamp(0)).offset == -1


def test_unknown_partition(broker, timestamped):
    # librdkafka's list_offsets fails by itself (_NOENT, "No leaders found") for a
    # partition missing from metadata, without asking the broker; so raw only.
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error_code, _ts, _offset = rawkafka.list_offsets(conn, timestamped, 7, -1)
        assert error_code == rawkafka.UNKNOWN_TOPIC_OR_PARTITION


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_lookups_survive_restart(broker, timestamped, hard):
    broker.restart(hard=hard)
    clients.wait_for(clients.watermarks_are(broker, timestamped, 0, (0, 6)), 30,
                     what="watermarks after restart")
    for target, expected in sorted(LOOKUPS.items()):
        result = confluent_list_offsets(broker, timestamped, OffsetSpec.for_timestamp(target))
        assert result.offset == (-1 if expected is None else expected[0]), target
    result = confluent_list_offsets(broker, timestamped, OffsetSpec.max_timestamp())
    assert (result.offset, result.timestamp) == MAX_TIMESTAMP
