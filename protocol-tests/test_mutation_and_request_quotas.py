"""Controller mutation quotas (KIP-599) and request-time quotas, through the wire.

CreateTopics v7, DeleteTopics v6 and CreatePartitions v3 are strict: once a client's
`controller_mutation_rate` bucket is below zero, each further topic fails with
THROTTLING_QUOTA_EXCEEDED and the response carries the time until it refills. Older
versions (what librdkafka and kafka-python send) are permissive: every topic goes through
and the response carries the throttle. The Java admin client sends the strict versions;
it is not runnable here (no Maven), so those are hand-encoded.

The bucket holds `controller.quota.window.num` (2 here) windows of 1 s of the quota.

Request quotas (`request_percentage`) count the time a request's handler works, not the
time it waits: a JoinGroup parked for the initial rebalance delay costs almost nothing,
while a flood of Metadata requests is throttled.
"""

import json
import time
import uuid

import clients
import rawkafka
from rawkafka import (EMPTY_TAGGED_FIELDS, boolean, compact_string, int16, int32, uvarint)
from test_client_quotas import set_quota

BROKER_OVERRIDES = {
    "controller.quota.window.num": "2",
    "controller.quota.window.size.seconds": "1",
    "quota.window.num": "3",
    "quota.window.size.seconds": "1",
    "group.initial.rebalance.delay.ms": "2000",
    "offsets.topic.num.partitions": "1",
}

NONE = 0
THROTTLING_QUOTA_EXCEEDED = 89
INVALID_TOPIC_EXCEPTION = 17
MESSAGE = "The throttling quota has been exceeded."


def compact_array(items, encode_item):
    return uvarint(len(items) + 1) + b"".join(encode_item(item) for item in items)


def connect(broker, client_id):
    return rawkafka.Connection("127.0.0.1", broker.port, client_id=client_id)


def create_topics_v7(conn, topics):
    """topics: [(name, partitions)]. Returns (throttle_ms, {name: (code, message, count)})."""
    def topic(item):
        name, partitions = item
        return (compact_string(name) + int32(partitions) + int16(1)
                + uvarint(1) + uvarint(1) + EMPTY_TAGGED_FIELDS)  # no assignments, no configs

    body = compact_array(topics, topic) + int32(10_000) + boolean(False) + EMPTY_TAGGED_FIELDS
    reader = conn.request(19, 7, body, flexible_request=True, flexible_response=True)
    throttle_ms = reader.int32()

    def result(r):
        name = r.compact_string()
        r.take(16)  # topic id
        code, message = r.int16(), r.compact_string()
        count, _rf = r.int32(), r.int16()
        r.compact_array(lambda c: (c.compact_string(), c.compact_string(), c.boolean(),
                                   c.int8(), c.boolean(), c.skip_tagged_fields()))
        r.skip_tagged_fields()
        return name, (code, message, count)

    results = dict(reader.compact_array(result))
    reader.skip_tagged_fields()
    reader.expect_end()
    return throttle_ms, results


def create_topics_v4(conn, topics):
    """Permissive. topics: [(name, partitions)]. Returns (throttle_ms, {name: code})."""
    body = rawkafka.array(topics, lambda t: rawkafka.string(t[0]) + int32(t[1]) + int16(1)
                          + int32(0) + int32(0)) + int32(10_000) + boolean(False)
    reader = conn.request(19, 4, body)
    throttle_ms = reader.int32()
    results = reader.array(lambda r: (r.string(), (r.int16(), r.string())))
    return throttle_ms, {name: code for name, (code, _message) in results}


def delete_topics_v6(conn, names):
    """Returns (throttle_ms, {name: (code, message)})."""
    def topic(name):
        return compact_string(name) + uuid.UUID(int=0).bytes + EMPTY_TAGGED_FIELDS

    body = compact_array(names, topic) + int32(10_000) + EMPTY_TAGGED_FIELDS
    reader = conn.request(20, 6, body, flexible_request=True, flexible_response=True)
    throttle_ms = reader.int32()

    def result(r):
        name = r.compact_string()
        r.take(16)
        code, message = r.int16(), r.compact_string()
        r.skip_tagged_fields()
        return name, (code, message)

    results = dict(reader.compact_array(result))
    reader.skip_tagged_fields()
    return throttle_ms, results


def create_partitions_v3(conn, counts):
    """counts: [(topic, new total)]. Returns (throttle_ms, {name: (code, message)})."""
    def topic(item):
        return compact_string(item[0]) + int32(item[1]) + uvarint(0) + EMPTY_TAGGED_FIELDS

    body = compact_array(counts, topic) + int32(10_000) + boolean(False) + EMPTY_TAGGED_FIELDS
    reader = conn.request(37, 3, body, flexible_request=True, flexible_response=True)
    throttle_ms = reader.int32()

    def result(r):
        name = r.compact_string()
        code, message = r.int16(), r.compact_string()
        r.skip_tagged_fields()
        return name, (code, message)

    results = dict(reader.compact_array(result))
    reader.skip_tagged_fields()
    return throttle_ms, results


def existing_topics(broker, names):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        found = rawkafka.metadata_v4(conn, names)["topics"]
    return {name for name, (code, _) in found.items() if code == NONE}


def test_strict_creates_are_refused_once_the_bucket_is_empty(broker):
    client = "mutation-strict"
    set_quota(broker, {"client-id": client}, "controller_mutation_rate", 1.0)
    # Burst: 2 windows of 1/s = 2 partitions. mq-a (20) goes through, taking the bucket
    # to -18 (it may go negative by one topic); the rest wait ~18 s, far longer than any
    # Raft commit on a loaded machine.
    with connect(broker, client) as conn:
        throttle, results = create_topics_v7(
            conn, [("mq-a", 20), ("mq-b", 1), ("bad/name", 1), ("mq-c", 1)])
    assert results["mq-a"] == (NONE, None, 20)
    assert results["mq-b"] == (THROTTLING_QUOTA_EXCEEDED, MESSAGE, -1)
    # A topic that fails validation fails with its own error: the quota comes after.
    assert results["bad/name"][0] == INVALID_TOPIC_EXCEPTION
    assert results["mq-c"] == (THROTTLING_QUOTA_EXCEEDED, MESSAGE, -1)
    assert 10_000 < throttle <= 18_000, throttle
    assert existing_topics(broker, ["mq-a", "mq-b", "mq-c"]) == {"mq-a"}
    # Other client ids are not held back.
    with connect(broker, "mutation-free") as conn:
        throttle, results = create_topics_v7(conn, [("mq-e", 5)])
    assert (throttle, results["mq-e"][0]) == (0, NONE)
    # A higher quota refills the same bucket faster (a changed quota applies in place):
    # at 100/s the debt is gone within a second.
    set_quota(broker, {"client-id": client}, "controller_mutation_rate", 100.0)
    time.sleep(1.0)
    with connect(broker, client) as conn:
        throttle, results = create_topics_v7(conn, [("mq-b", 1)])
    assert results["mq-b"][0] == NONE
    assert throttle == 0


def test_strict_deletes_and_partition_adds_count_partitions(broker):
    client = "mutation-deleter"
    with connect(broker, "mutation-setup") as conn:
        _, results = create_topics_v7(conn, [(f"mq-del-{i}", 10) for i in range(3)])
    assert {code for code, _, _ in results.values()} == {NONE}
    set_quota(broker, {"client-id": client}, "controller_mutation_rate", 1.0)
    # Burst 2: the first topic (10 partitions) goes, the bucket is at -8, the rest wait.
    with connect(broker, client) as conn:
        throttle, results = delete_topics_v6(conn, [f"mq-del-{i}" for i in range(3)])
    assert results["mq-del-0"] == (NONE, None)
    assert results["mq-del-1"] == (THROTTLING_QUOTA_EXCEEDED, MESSAGE)
    assert results["mq-del-2"] == (THROTTLING_QUOTA_EXCEEDED, MESSAGE)
    assert 4_000 < throttle <= 8_000, throttle
    # CreatePartitions v3 shares the bucket, still far below zero (a new connection: the
    # old one is muted for the throttle).
    with connect(broker, client) as conn:
        throttle, results = create_partitions_v3(conn, [("mq-del-1", 11), ("mq-del-2", 19)])
    assert results["mq-del-1"] == (THROTTLING_QUOTA_EXCEEDED, MESSAGE)
    assert results["mq-del-2"] == (THROTTLING_QUOTA_EXCEEDED, MESSAGE)
    assert throttle > 0
    assert existing_topics(broker, ["mq-del-1", "mq-del-2"]) == {"mq-del-1", "mq-del-2"}
    # Refilled (at a higher quota), the partitions go in.
    set_quota(broker, {"client-id": client}, "controller_mutation_rate", 100.0)
    time.sleep(1.0)
    with connect(broker, client) as conn:
        _, results = create_partitions_v3(conn, [("mq-del-1", 11)])
    assert results["mq-del-1"] == (NONE, None)


def test_older_versions_are_permissive_and_carry_the_throttle(broker):
    client = "mutation-old"
    set_quota(broker, {"client-id": client}, "controller_mutation_rate", 1.0)
    with connect(broker, client) as conn:
        throttle, results = create_topics_v4(conn, [("mq-old-a", 2), ("mq-old-b", 20)])
    assert results == {"mq-old-a": NONE, "mq-old-b": NONE}
    # 22 taken from a burst of 2 at 1/s: about 20 s, less the time the creates took.
    assert 12_000 < throttle <= 20_000, throttle
    # librdkafka's admin client (CreateTopics v4 and older) is not refused either.
    admin = clients.admin(broker, **{"client.id": client})
    from confluent_kafka.admin import NewTopic
    futures = admin.create_topics([NewTopic("mq-old-c", 3, 1)], request_timeout=30)
    futures["mq-old-c"].result(timeout=30)
    assert "mq-old-c" in existing_topics(broker, ["mq-old-c"])


class Throttles:
    def __init__(self):
        self.max_avg_ms = 0

    def __call__(self, stats_json):
        for b in json.loads(stats_json).get("brokers", {}).values():
            self.max_avg_ms = max(self.max_avg_ms, b.get("throttle", {}).get("avg", 0))


def test_request_quota_counts_work_not_waiting(broker, topic):
    clients.create_topic(broker, topic)
    # The group coordinator's partition is created and loaded before the quota: that is
    # work, done once, and not what this test is about.
    from confluent_kafka import TopicPartition
    warm = clients.consumer(broker, **{"group.id": "rq-warm-up"})
    clients.wait_for(lambda: warm.committed([TopicPartition(topic, 0)], timeout=5), 30,
                     what="the group coordinator")
    warm.close()
    # 10% of a thread: 100 ms of handling time per second. Waiting counted as work would
    # exceed it (the 2 s rebalance delay in an 11 s window, fetches parked back to back);
    # a loaded machine preempting a few handler polls would not.
    set_quota(broker, {"client-id": "rq-waiter"}, "request_percentage", 10.0)
    try:
        # A consumer joining a group waits 2 s for the initial rebalance delay, and its
        # fetches wait for records: waiting is not work, so it is never throttled.
        throttles = Throttles()
        consumer = clients.consumer(broker, **{"client.id": "rq-waiter",
                                               "group.id": "rq-group",
                                               "auto.offset.reset": "earliest",
                                               "statistics.interval.ms": 200,
                                               "stats_cb": throttles})
        consumer.subscribe([topic])
        # At least 6 s (past the delay, then fetches parked), until it has joined.
        began = time.monotonic()
        while time.monotonic() < began + 6 or not consumer.assignment():
            assert time.monotonic() < began + 30, "not joined the group within 30 s"
            consumer.poll(0.2)
        consumer.close()
        assert throttles.max_avg_ms == 0, throttles.max_avg_ms
        # A flood of Metadata requests is work: throttled within a bounded number. (Each
        # takes microseconds, so this client gets a smaller quota: 0.1%, 1 ms a second.)
        set_quota(broker, {"client-id": "rq-flooder"}, "request_percentage", 0.1)
        throttled_at = None
        with connect(broker, "rq-flooder") as conn:
            for sent in range(20_000):
                body = rawkafka.array([topic], rawkafka.string) + boolean(False)
                reader = conn.request(3, 4, body)
                if reader.int32() > 0:
                    throttled_at = sent
                    break
        assert throttled_at is not None, "20 000 Metadata requests were never throttled"
    finally:
        set_quota(broker, {"client-id": "rq-waiter"}, "request_percentage", None)
        set_quota(broker, {"client-id": "rq-flooder"}, "request_percentage", None)
