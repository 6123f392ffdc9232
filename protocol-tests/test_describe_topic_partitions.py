"""DescribeTopicPartitions (key 75) cursors in raw frames.

Issue 6: a cursor past the last partition of a topic (`{__consumer_offsets, 100}`) panicked
the handler. Kafka 4.x answers such a topic with no partitions and error NONE and carries on
with the next topics; a negative cursor partition, or a cursor topic missing from a
non-empty topic list, is INVALID_REQUEST for the whole request.
"""

import time

import clients
import rawkafka
from rawkafka import EMPTY_TAGGED_FIELDS, compact_string, int8, int32, uvarint

DESCRIBE_TOPIC_PARTITIONS = 75
FIND_COORDINATOR = 10
INVALID_REQUEST = 42
OFFSETS_TOPIC = "__consumer_offsets"


def request_body(topics, limit=2000, cursor=None):
    body = uvarint(len(topics) + 1)
    for name in topics:
        body += compact_string(name) + EMPTY_TAGGED_FIELDS
    body += int32(limit)
    if cursor is None:
        body += int8(-1)
    else:
        name, index = cursor
        body += int8(1) + compact_string(name) + int32(index) + EMPTY_TAGGED_FIELDS
    return body + EMPTY_TAGGED_FIELDS


def read_partition(reader):
    error_code = reader.int16()
    index = reader.int32()
    reader.int32()  # leader_id
    reader.int32()  # leader_epoch
    for _ in range(4):  # replicas, isr, eligible leader replicas, last known elr
        reader.compact_array(lambda r: r.int32())
    reader.compact_array(lambda r: r.int32())  # offline replicas
    reader.skip_tagged_fields()
    assert error_code == 0
    return index


def read_topic(reader):
    error_code = reader.int16()
    name = reader.compact_string()
    reader.take(16)  # topic_id
    reader.boolean()  # is_internal
    partitions = reader.compact_array(read_partition)
    reader.int32()  # topic_authorized_operations
    reader.skip_tagged_fields()
    return name, error_code, partitions


def describe(conn, topics, limit=2000, cursor=None):
    """Returns ([(name, error_code, [partition index])], next cursor or None)."""
    reader = conn.request(DESCRIBE_TOPIC_PARTITIONS, 0, request_body(topics, limit, cursor),
                          flexible_request=True, flexible_response=True)
    reader.int32()  # throttle_time_ms
    topics_out = reader.compact_array(read_topic)
    next_cursor = None
    if reader.int8() >= 0:
        next_cursor = (reader.compact_string(), reader.int32())
        reader.skip_tagged_fields()
    reader.skip_tagged_fields()
    reader.expect_end()
    return topics_out, next_cursor


def find_coordinator_v0(conn, group, timeout_s=30.0):
    """Creates __consumer_offsets as a side effect, as Kafka does; asks again while the
    broker answers COORDINATOR_NOT_AVAILABLE (the topic is still being created)."""
    deadline = time.monotonic() + timeout_s
    while True:
        error = conn.request(FIND_COORDINATOR, 0, rawkafka.string(group)).int16()
        if error == 0:
            return
        assert error == 15 and time.monotonic() < deadline, f"FindCoordinator error {error}"
        time.sleep(0.1)


def test_cursor_past_the_last_partition_is_answered_empty(broker, topic):
    clients.create_topic(broker, topic, partitions=2)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        find_coordinator_v0(conn, "dtp-group")
        topics, cursor = describe(conn, [OFFSETS_TOPIC, topic], cursor=(OFFSETS_TOPIC, 100))
        assert topics == [(OFFSETS_TOPIC, 0, []), (topic, 0, [0, 1])]
        assert cursor is None
        topics, cursor = describe(conn, [topic], cursor=(topic, 2))
        assert (topics, cursor) == ([(topic, 0, [])], None)
        # The same connection still serves a normal page afterwards.
        topics, cursor = describe(conn, [topic], limit=1)
        assert (topics, cursor) == ([(topic, 0, [0])], (topic, 1))
    assert broker.is_running(), broker.stderr_tail()


def test_cursor_past_the_end_when_listing_every_topic(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        find_coordinator_v0(conn, "dtp-group")
        topics, cursor = describe(conn, [], cursor=(OFFSETS_TOPIC, 100))
    assert topics[0] == (OFFSETS_TOPIC, 0, [])
    assert (topic, 0, [0]) in topics
    assert cursor is None


def test_invalid_cursors_are_invalid_request(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        topics, cursor = describe(conn, [topic], cursor=(topic, -1))
        assert (topics, cursor) == ([(topic, INVALID_REQUEST, [])], None)
        topics, cursor = describe(conn, [topic], cursor=(topic + "-other", 0))
        assert (topics, cursor) == ([(topic, INVALID_REQUEST, [])], None)
