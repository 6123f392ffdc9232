"""Client quotas (KIP-546 APIs, KIP-13/124/219 throttling).

AlterClientQuotas and DescribeClientQuotas are hand-encoded (v0): neither kafka-python
2.3 nor confluent-kafka 2.16 has them. Throttling is observed with confluent-kafka
(librdkafka): a producer or consumer over its byte-rate quota gets throttle times
(statistics `brokers.*.throttle`) and its throughput falls to about the quota; a client
id without a quota is not held back; removing the quota lifts it; a default client-id
quota applies to every client id without its own.

The broker measures rates over 3 samples of 1 s (`quota.window.num=3`) instead of
Kafka's 11, so a burst is allowed 2 s worth of quota rather than 10 s and each throttled
phase takes seconds, not tens of seconds.
"""

import json
import struct
import time

import pytest

import clients
import rawkafka

BROKER_OVERRIDES = {"quota.window.num": "3", "quota.window.size.seconds": "1"}

INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35

QUOTA_BYTES_PER_S = 100_000
PAYLOAD = b"x" * 1000
RECORDS = 600  # 600 kB: about 6 s at the quota, well under a second without one


def entity_bytes(entity):
    return rawkafka.array(list(entity.items()),
                          lambda kv: rawkafka.string(kv[0]) + rawkafka.string(kv[1]))


def alter(broker, entries, validate_only=False):
    """AlterClientQuotas v0. entries: [(entity dict, [(key, value or None to remove)])];
    returns [(error code, message)] in order."""
    def entry(item):
        entity, ops = item
        return entity_bytes(entity) + rawkafka.array(
            ops, lambda op: rawkafka.string(op[0]) + struct.pack(">d", op[1] or 0.0)
            + rawkafka.boolean(op[1] is None))

    body = rawkafka.array(entries, entry) + rawkafka.boolean(validate_only)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        reader = conn.request(49, 0, body)
        assert reader.int32() == 0  # throttle_time_ms
        results = reader.array(lambda r: (
            r.int16(), r.string(), r.array(lambda e: (e.string(), e.string()))))
    return [(code, message) for code, message, _ in results]


def describe(broker, components, strict=False):
    """DescribeClientQuotas v0. components: [(entity type, match type, match)]; returns
    (error code, {frozenset(entity items): {key: value}})."""
    body = rawkafka.array(components, lambda c: rawkafka.string(c[0]) + rawkafka.int8(c[1])
                          + rawkafka.string(c[2])) + rawkafka.boolean(strict)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        reader = conn.request(48, 0, body)
        reader.int32()
        error, _message = reader.int16(), reader.string()
        entries = reader.array(lambda r: (
            r.array(lambda e: (e.string(), e.string())),
            r.array(lambda v: (v.string(), struct.unpack(">d", v.take(8))[0]))))
    found = {frozenset(entity): dict(values) for entity, values in entries or []}
    return error, found


def set_quota(broker, entity, key, value):
    assert alter(broker, [(entity, [(key, value)])]) == [(0, None)]


class Throttles:
    """The largest `throttle` average librdkafka's statistics reported for any broker."""

    def __init__(self):
        self.max_avg_ms = 0

    def __call__(self, stats_json):
        stats = json.loads(stats_json)
        for broker in stats.get("brokers", {}).values():
            self.max_avg_ms = max(self.max_avg_ms, broker.get("throttle", {}).get("avg", 0))


def timed_produce(broker, topic, client_id):
    """Produces RECORDS records; (seconds taken, largest throttle average seen)."""
    throttles = Throttles()
    # Small batches, so the records go in many requests: a throttle holds back the next
    # request, never the one it answers.
    producer = clients.producer(broker, **{"client.id": client_id, "linger.ms": 5,
                                           "batch.size": 16384,
                                           "statistics.interval.ms": 200,
                                           "stats_cb": throttles})
    started = time.monotonic()
    for _ in range(RECORDS):
        while True:
            try:
                producer.produce(topic, PAYLOAD)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    elapsed = time.monotonic() - started
    producer.poll(0.5)  # one more statistics report
    return elapsed, throttles.max_avg_ms


def timed_consume(broker, topic, client_id):
    """Reads RECORDS records from offset 0; (seconds taken, largest throttle average)."""
    from confluent_kafka import TopicPartition
    throttles = Throttles()
    consumer = clients.consumer(broker, **{"client.id": client_id,
                                           "statistics.interval.ms": 200,
                                           "stats_cb": throttles,
                                           "fetch.max.bytes": 1_000_000})
    consumer.assign([TopicPartition(topic, 0, 0)])
    started = time.monotonic()
    seen = 0
    deadline = started + 60
    while seen < RECORDS and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            seen += 1
    elapsed = time.monotonic() - started
    consumer.poll(0.5)
    consumer.close()
    assert seen == RECORDS
    return elapsed, throttles.max_avg_ms


def test_alter_and_describe_with_kafkas_matching_and_errors(broker):
    user, client = {"user": "alice"}, {"client-id": "app"}
    both = {"user": "alice", "client-id": None}
    assert alter(broker, [(user, [("producer_byte_rate", 2048.0)]),
                          (both, [("request_percentage", 12.5)]),
                          (client, [("consumer_byte_rate", 4096.0)])]) == [(0, None)] * 3
    error, found = describe(broker, [("user", 0, "alice")])
    assert error == 0
    assert found == {frozenset(user.items()): {"producer_byte_rate": 2048.0},
                     frozenset(both.items()): {"request_percentage": 12.5}}
    assert describe(broker, [("user", 0, "alice")], strict=True)[1] == {
        frozenset(user.items()): {"producer_byte_rate": 2048.0}}
    assert list(describe(broker, [("client-id", 1, None)])[1]) == [frozenset(both.items())]
    assert describe(broker, [("client-id", 2, None)], strict=True)[1] == {
        frozenset(client.items()): {"consumer_byte_rate": 4096.0}}
    # Kafka's refusals: an unknown key, a bad value, a bad combination, a bad filter.
    refused = alter(broker, [({"client-id": "x"}, [("connection_creation_rate", 5.0)]),
                             ({"client-id": "x"}, [("producer_byte_rate", -1.0)]),
                             ({"client-id": "x", "ip": "1.2.3.4"}, [("producer_byte_rate", 1.0)]),
                             ({"ip": "1.2.3.4"}, [("connection_creation_rate", 5.0)])],
                    validate_only=True)
    assert [code for code, _ in refused] == [INVALID_REQUEST, INVALID_REQUEST, INVALID_REQUEST, 0]
    assert describe(broker, [("ip", 2, None)])[1] == {}, "validate_only stored nothing"
    assert describe(broker, [("topic", 2, None)])[0] == UNSUPPORTED_VERSION
    assert describe(broker, [("user", 0, None)])[0] == INVALID_REQUEST
    # Removing every key removes the entity.
    assert alter(broker, [(user, [("producer_byte_rate", None)])]) == [(0, None)]
    assert frozenset(user.items()) not in describe(broker, [("user", 0, "alice")])[1]


def test_a_producer_over_its_quota_is_throttled_until_it_is_removed(broker, topic):
    clients.create_topic(broker, topic)
    slow = {"client-id": "quota-slow-producer"}
    set_quota(broker, slow, "producer_byte_rate", QUOTA_BYTES_PER_S)
    elapsed, throttle_ms = timed_produce(broker, topic, "quota-slow-producer")
    rate = RECORDS * len(PAYLOAD) / elapsed
    assert throttle_ms > 0, "no throttle time reported"
    # About the quota: the first 2 s worth go through at once, the rest at the quota.
    assert rate < 2 * QUOTA_BYTES_PER_S, f"{rate:.0f} B/s"
    assert elapsed > 2.5, f"{elapsed:.1f} s"
    # A client id without a quota is not held back.
    fast_elapsed, fast_throttle = timed_produce(broker, topic, "quota-other-producer")
    assert fast_throttle == 0
    assert fast_elapsed < elapsed / 2, (fast_elapsed, elapsed)
    set_quota(broker, slow, "producer_byte_rate", None)
    lifted_elapsed, lifted_throttle = timed_produce(broker, topic, "quota-slow-producer")
    assert lifted_throttle == 0
    assert lifted_elapsed < elapsed / 2, (lifted_elapsed, elapsed)


def test_a_consumer_over_its_quota_is_throttled(broker, topic):
    clients.create_topic(broker, topic)
    timed_produce(broker, topic, "quota-filler")
    set_quota(broker, {"client-id": "quota-slow-consumer"}, "consumer_byte_rate",
              QUOTA_BYTES_PER_S)
    elapsed, throttle_ms = timed_consume(broker, topic, "quota-slow-consumer")
    assert throttle_ms > 0, "no throttle time reported"
    assert elapsed > 2.5, f"{elapsed:.1f} s"
    assert RECORDS * len(PAYLOAD) / elapsed < 2 * QUOTA_BYTES_PER_S
    fast_elapsed, fast_throttle = timed_consume(broker, topic, "quota-other-consumer")
    assert fast_throttle == 0
    assert fast_elapsed < elapsed / 2, (fast_elapsed, elapsed)
    set_quota(broker, {"client-id": "quota-slow-consumer"}, "consumer_byte_rate", None)


def test_a_default_client_id_quota_applies_to_every_client_without_its_own(broker, topic):
    clients.create_topic(broker, topic)
    default = {"client-id": None}
    own = {"client-id": "quota-exempt"}
    set_quota(broker, default, "producer_byte_rate", QUOTA_BYTES_PER_S)
    # A client id's own (large) quota wins over the default.
    set_quota(broker, own, "producer_byte_rate", 1e9)
    try:
        elapsed, throttle_ms = timed_produce(broker, topic, "quota-anyone")
        assert throttle_ms > 0 and elapsed > 2.5, (elapsed, throttle_ms)
        exempt_elapsed, exempt_throttle = timed_produce(broker, topic, "quota-exempt")
        assert exempt_throttle == 0
        assert exempt_elapsed < elapsed / 2, (exempt_elapsed, elapsed)
    finally:
        set_quota(broker, default, "producer_byte_rate", None)
        set_quota(broker, own, "producer_byte_rate", None)


def test_alter_refuses_duplicates_and_oversized_requests_and_skips_empty_entries(broker):
    dup = {"client-id": "quota-dup"}
    results = alter(broker, [(dup, [("producer_byte_rate", 1.0)]),
                             ({"client-id": "quota-empty"}, []),
                             (dup, [("consumer_byte_rate", 1.0)])])
    assert [code for code, _ in results] == [INVALID_REQUEST, 0, INVALID_REQUEST]
    assert describe(broker, [("client-id", 0, "quota-dup")])[1] == {}
    assert describe(broker, [("client-id", 0, "quota-empty")])[1] == {}
    # Above the per-request bound (1000) the whole request is refused, nothing stored.
    many = [({"client-id": f"quota-many-{i}"}, [("producer_byte_rate", 1.0)])
            for i in range(1001)]
    results = alter(broker, many)
    assert len(results) == 1001
    assert {code for code, _ in results} == {INVALID_REQUEST}
    assert describe(broker, [("client-id", 0, "quota-many-0")])[1] == {}
