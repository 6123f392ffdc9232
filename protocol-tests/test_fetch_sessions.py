"""Incremental fetch sessions (KIP-227) on the broker side.

Raw Fetch v7 (sessions, topics by name) checks the session rules exactly: a full fetch
with epoch 0 gets a session id; an incremental fetch covers every partition of its
session and lists only those with records or moved offsets; forgotten partitions leave
the session; a wrong epoch is INVALID_FETCH_SESSION_EPOCH (71), an unknown session
FETCH_SESSION_ID_NOT_FOUND (70); epoch -1 closes the session; a parked incremental fetch
wakes for an append to a partition its request did not name, also once it visits only the
partitions that change. Fetch v13 (topic ids) checks
that a session keeps to topic ids. kafka-python's consumer, which uses sessions by default,
reads every record exactly once in order through them.
"""

import threading
import uuid

import kafka
import pytest
from confluent_kafka.admin import AdminClient

import clients
import rawkafka
from rawkafka import array, int8, int32, int64, string, uvarint, compact_string
from test_metrics import scrape, value

FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
FETCH_SESSION_TOPIC_ID_ERROR = 106

SESSIONS_GAUGE = "kafka_server_fetchsessioncache_numincrementalfetchsessions"
PARTITIONS_GAUGE = "kafka_server_fetchsessioncache_numincrementalfetchpartitionscached"
PURGATORY = "kafka_server_delayedoperationpurgatory_purgatorysize"


class FetchResult:
    def __init__(self, error_code, session_id, partitions, throttle_ms=0):
        self.throttle_ms = throttle_ms
        self.error_code = error_code
        self.session_id = session_id
        # {(topic, partition): PartitionFetchResult}, in response order.
        self.partitions = partitions

    def records(self, topic, partition):
        """(offset, value) of every record the response carries for the partition."""
        result = self.partitions[(topic, partition)]
        return [(record.offset, record.value) for batch in result.batches()
                for record in batch]


def fetch_v7(conn, session_id, epoch, wanted=(), forgotten=(), max_wait_ms=0, min_bytes=1):
    """Fetch v7: wanted = [(topic, partition, offset)], forgotten = [(topic, partition)]."""

    def by_topic(items):
        topics = {}
        for topic, *rest in items:
            topics.setdefault(topic, []).append(rest)
        return list(topics.items())

    def partition(item):
        index, offset = item
        return int32(index) + int64(offset) + int64(-1) + int32(1 << 20)

    topics = [string(topic) + array(parts, partition) for topic, parts in by_topic(wanted)]
    forgets = [string(topic) + array(parts, lambda p: int32(p[0]))
               for topic, parts in by_topic(forgotten)]
    body = (int32(-1) + int32(max_wait_ms) + int32(min_bytes) + int32(1 << 20) + int8(0)
            + int32(session_id) + int32(epoch)
            + array(topics, lambda t: t) + array(forgets, lambda f: f))
    reader = conn.request(rawkafka.FETCH, 7, body)
    throttle_ms = reader.int32()
    error_code = reader.int16()
    response_session_id = reader.int32()

    def read_partition(r):
        index = r.int32()
        error = r.int16()
        high_watermark = r.int64()
        last_stable_offset = r.int64()
        r.int64()  # log_start_offset
        r.array(lambda rr: (rr.int64(), rr.int64()))
        records = r.nullable_bytes()
        return index, rawkafka.PartitionFetchResult(error, high_watermark, last_stable_offset,
                                                    records)

    partitions = {}
    for topic, parts in reader.array(lambda r: (r.string(), r.array(read_partition))):
        for index, result in parts:
            assert (topic, index) not in partitions, f"{topic}-{index} listed twice"
            partitions[(topic, index)] = result
    reader.expect_end()
    return FetchResult(error_code, response_session_id, partitions, throttle_ms)


def produce(conn, topic, partition, values):
    batch = rawkafka.build_batch([(None, v, []) for v in values])
    result = rawkafka.produce(conn, topic, partition, batch)
    assert result.error_code == 0, result.error_code
    return result.base_offset


@pytest.fixture
def three(broker, topic):
    clients.create_topic(broker, topic, partitions=3)
    return topic


def open_session(conn, topic, partitions=3):
    """A session of the topic's partitions at offset 0; (session id, full response)."""
    full = fetch_v7(conn, 0, 0, [(topic, p, 0) for p in range(partitions)])
    assert full.error_code == 0
    assert full.session_id > 0, "a full fetch with epoch 0 gets a session"
    assert sorted(full.partitions) == [(topic, p) for p in range(partitions)]
    return full.session_id, full


def test_incremental_fetches_list_only_what_changed(broker, three):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        produce(conn, three, 0, [b"a0", b"a1"])
        session, full = open_session(conn, three)
        assert full.records(three, 0) == [(0, b"a0"), (1, b"a1")]
        assert full.partitions[(three, 0)].high_watermark == 2
        assert full.partitions[(three, 1)].high_watermark == 0
        # The fetcher moves on in partition 0; nothing else changed: nothing listed,
        # after waiting out max_wait_ms for the unnamed partitions too.
        idle = fetch_v7(conn, session, 1, [(three, 0, 2)], max_wait_ms=300)
        assert (idle.error_code, idle.session_id) == (0, session)
        assert idle.partitions == {}
        produce(conn, three, 1, [b"b0"])
        # Named by nobody, partition 1 comes back with its record and new HW.
        changed = fetch_v7(conn, session, 2)
        assert (changed.error_code, changed.session_id) == (0, session)
        assert list(changed.partitions) == [(three, 1)]
        assert changed.records(three, 1) == [(0, b"b0")]
        assert changed.partitions[(three, 1)].high_watermark == 1
        settled = fetch_v7(conn, session, 3, [(three, 1, 1)])
        assert settled.partitions == {}


def test_session_errors(broker, three):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        session, _ = open_session(conn, three)
        for epoch in (2, 0x7FFFFFFF):
            wrong = fetch_v7(conn, session, epoch)
            assert (wrong.error_code, wrong.session_id) == (INVALID_FETCH_SESSION_EPOCH, 0)
            assert wrong.partitions == {}
        unknown = fetch_v7(conn, (session % 0x7FFFFFFE) + 1, 1)
        assert (unknown.error_code, unknown.session_id) == (FETCH_SESSION_ID_NOT_FOUND, 0)
        # Kafka 4.x: not a full fetch, and session 0 is never found.
        no_session = fetch_v7(conn, 0, 3)
        assert (no_session.error_code, no_session.session_id) == (FETCH_SESSION_ID_NOT_FOUND, 0)
        # The errors moved nothing: epoch 1 is still the one expected, from any connection.
        with rawkafka.Connection("127.0.0.1", broker.port) as other:
            right = fetch_v7(other, session, 1)
        assert (right.error_code, right.session_id) == (0, session)
        replayed = fetch_v7(conn, session, 1)
        assert replayed.error_code == INVALID_FETCH_SESSION_EPOCH


def test_forgotten_partitions_are_not_answered(broker, three):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        session, _ = open_session(conn, three)
        forgot = fetch_v7(conn, session, 1, forgotten=[(three, 1), (three, 2)])
        assert (forgot.error_code, forgot.session_id) == (0, session)
        produce(conn, three, 1, [b"gone"])
        produce(conn, three, 0, [b"kept"])
        after = fetch_v7(conn, session, 2)
        assert list(after.partitions) == [(three, 0)]
        assert after.records(three, 0) == [(0, b"kept")]
        # Named again, partition 1 rejoins the session with its record.
        back = fetch_v7(conn, session, 3, [(three, 0, 1), (three, 1, 0)])
        assert list(back.partitions) == [(three, 1)]
        assert back.records(three, 1) == [(0, b"gone")]


def test_final_epoch_closes_the_session(broker, three):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        session, _ = open_session(conn, three)
        produce(conn, three, 2, [b"x"])
        final = fetch_v7(conn, session, -1, [(three, 2, 0)])
        assert (final.error_code, final.session_id) == (0, 0)
        assert final.records(three, 2) == [(0, b"x")]
        gone = fetch_v7(conn, session, 1)
        assert gone.error_code == FETCH_SESSION_ID_NOT_FOUND


def test_forgetting_everything_closes_the_session(broker, three):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        session, _ = open_session(conn, three)
        empty = fetch_v7(conn, session, 1, forgotten=[(three, p) for p in range(3)])
        assert (empty.error_code, empty.session_id, empty.partitions) == (0, 0, {})
        assert fetch_v7(conn, session, 2).error_code == FETCH_SESSION_ID_NOT_FOUND


def parked_fetches(broker):
    return value(scrape(broker.metrics_url), PURGATORY, delayedOperation="Fetch")


def test_append_to_an_unnamed_partition_wakes_a_parked_incremental_fetch(broker, three):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        session, _ = open_session(conn, three)
        parked_before = parked_fetches(broker)
        answer = {}

        def fetch():
            answer["result"] = fetch_v7(conn, session, 1, max_wait_ms=20_000)

        thread = threading.Thread(target=fetch)
        thread.start()
        clients.wait_for(lambda: parked_fetches(broker) > parked_before,
                         what="the incremental fetch to park")
        with rawkafka.Connection("127.0.0.1", broker.port) as producer_conn:
            produce(producer_conn, three, 2, [b"wake"])
        thread.join(30)
        assert not thread.is_alive()
        woken = answer["result"]
        assert (woken.error_code, woken.session_id) == (0, session)
        assert list(woken.partitions) == [(three, 2)]
        assert woken.records(three, 2) == [(0, b"wake")]


def test_a_parked_fetch_visiting_nothing_wakes_for_any_partition_of_its_session(broker, topic):
    """Once every partition of a session has answered a quiet read, a fetch visits only
    partitions that change: a parked one visits none, and an append to any partition of
    the session (here one, then two at once while it stays parked for min_bytes) joins it
    and is answered. Partitions that had records are visited until they are quiet again;
    the rest keep quiet and are left out. (24 partitions: smaller sessions are not
    tracked, and visit every partition at every fetch.)"""
    partitions = 24
    clients.create_topic(broker, topic, partitions=partitions)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        session, _ = open_session(conn, topic, partitions)
        # Epoch 1 visits every partition (the first after the full fetch): all quiet.
        assert fetch_v7(conn, session, 1).partitions == {}
        parked_before = parked_fetches(broker)
        answer = {}

        def fetch(epoch, wanted, min_bytes):
            answer["result"] = fetch_v7(conn, session, epoch, wanted, max_wait_ms=20_000,
                                        min_bytes=min_bytes)

        def park_then(epoch, appends, wanted=(), min_bytes=1):
            thread = threading.Thread(target=fetch, args=(epoch, wanted, min_bytes))
            thread.start()
            clients.wait_for(lambda: parked_fetches(broker) > parked_before,
                             what="the incremental fetch to park")
            with rawkafka.Connection("127.0.0.1", broker.port) as producer_conn:
                for partition, value in appends:
                    produce(producer_conn, topic, partition, [value])
            thread.join(30)
            assert not thread.is_alive()
            return answer["result"]

        woken = park_then(2, [(7, b"seven")])
        assert (woken.error_code, woken.session_id) == (0, session)
        assert list(woken.partitions) == [(topic, 7)]
        assert woken.records(topic, 7) == [(0, b"seven")]
        # 7 moves on; two appends, the first alone short of min_bytes, both answered.
        small = len(rawkafka.build_batch([(None, b"x", [])]))
        both = park_then(3, [(3, b"three"), (10, b"ten")], [(topic, 7, 1)],
                         min_bytes=2 * small + 1)
        assert sorted(both.partitions) == [(topic, 3), (topic, 10)]
        assert both.records(topic, 3) == [(0, b"three")]
        assert both.records(topic, 10) == [(0, b"ten")]
        # Not moved on in 3 and 10: their records come again (Kafka's rule); 7, moved on,
        # and every other partition have nothing to say.
        again = fetch_v7(conn, session, 4, [(topic, 7, 1)])
        assert sorted(again.partitions) == [(topic, 3), (topic, 10)]
        settled = fetch_v7(conn, session, 5, [(topic, 3, 1), (topic, 10, 1)])
        assert settled.partitions == {}
        # And nothing was lost to skipping: a fetch from the start of every partition
        # finds exactly the three records.
        everything = fetch_v7(conn, 0, -1, [(topic, p, 0) for p in range(partitions)])
        found = {p: everything.records(topic, p) for p in range(partitions)}
        assert {p: r for p, r in found.items() if r} == {
            3: [(0, b"three")], 7: [(0, b"seven")], 10: [(0, b"ten")]}


def test_session_gauges(broker, three):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        before = scrape(broker.metrics_url)
        session, _ = open_session(conn, three)
        during = scrape(broker.metrics_url)
        assert value(during, SESSIONS_GAUGE) == value(before, SESSIONS_GAUGE) + 1
        assert value(during, PARTITIONS_GAUGE) == value(before, PARTITIONS_GAUGE) + 3
        fetch_v7(conn, session, -1)
        after = scrape(broker.metrics_url)
        assert value(after, SESSIONS_GAUGE) == value(before, SESSIONS_GAUGE)


def test_a_throttled_incremental_fetch_keeps_its_session(start_broker, topic):
    """A consumer pushed to its quota by a sessionless fetch of another partition gets an
    empty, throttled answer that keeps its session and changes nothing in it. Two quota
    windows of a second: the pushing fetch stops counting two seconds later."""
    from test_client_quotas import set_quota
    broker = start_broker("fetch-sessions-quota", {"quota.window.num": "2"})
    try:
        clients.create_topic(broker, topic, partitions=2)
        client_id = "throttled-session"
        set_quota(broker, {"client-id": client_id}, "consumer_byte_rate", 10_000.0)
        with rawkafka.Connection("127.0.0.1", broker.port, client_id=client_id) as conn:
            session, _ = open_session(conn, topic, partitions=1)
            kept = [bytes([65 + i]) * 1000 for i in range(5)]
            produce(conn, topic, 0, kept)
            produce(conn, topic, 1, [bytes([97 + i]) * 1000 for i in range(8)])
            with rawkafka.Connection("127.0.0.1", broker.port, client_id=client_id) as bulk:
                pushed = fetch_v7(bulk, 0, -1, [(topic, 1, 0)])
            assert pushed.throttle_ms == 0 and len(pushed.records(topic, 1)) == 8
            epoch, throttled, result = 1, 0, None
            while result is None or not result.partitions:
                result = fetch_v7(conn, session, epoch)
                epoch += 1
                assert (result.error_code, result.session_id) == (0, session)
                if result.throttle_ms > 0 and not result.partitions:
                    throttled += 1
                assert epoch < 100, "never answered with the records"
            assert throttled > 0, "the quota never throttled the session"
            # The throttled answers changed nothing: the records come, with their HW.
            assert result.records(topic, 0) == list(enumerate(kept))
            assert result.partitions[(topic, 0)].high_watermark == 5
    finally:
        broker.stop()


# ---------------------------------------------------------------- Fetch v13 (topic ids)


def topic_id(broker, topic):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    from confluent_kafka import TopicCollection
    description = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=10)
    found = description.topic_id
    high, low = found.get_most_significant_bits(), found.get_least_significant_bits()
    return uuid.UUID(int=((high & (2**64 - 1)) << 64) | (low & (2**64 - 1)))


def fetch_v13(conn, session_id, epoch, wanted=(), forgotten=()):
    """Fetch v13 (flexible, topics by id): wanted = [(topic_id, partition, offset)],
    forgotten = [(topic_id, partition)]; returns (error, session id, {(id, p): records})."""

    def compact_array(items):
        return uvarint(len(items) + 1) + b"".join(items)

    def by_topic(items):
        topics = {}
        for topic, *rest in items:
            topics.setdefault(topic, []).append(rest)
        return list(topics.items())

    tagged = uvarint(0)
    topics = [
        topic.bytes + compact_array([
            int32(p) + int32(-1) + int64(offset) + int32(-1) + int64(-1) + int32(1 << 20)
            + tagged for p, offset in parts]) + tagged
        for topic, parts in by_topic(wanted)]
    forgets = [topic.bytes + compact_array([int32(p) for (p,) in parts]) + tagged
               for topic, parts in by_topic(forgotten)]
    body = (int32(-1) + int32(0) + int32(1) + int32(1 << 20) + int8(0)
            + int32(session_id) + int32(epoch) + compact_array(topics)
            + compact_array(forgets) + compact_string("") + tagged)
    reader = conn.request(rawkafka.FETCH, 13, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms
    error_code = reader.int16()
    response_session_id = reader.int32()

    def read_partition(r):
        index = r.int32()
        error = r.int16()
        r.int64(), r.int64(), r.int64()  # high watermark, last stable, log start
        r.compact_array(lambda rr: (rr.int64(), rr.int64(), rr.skip_tagged_fields()))
        r.int32()  # preferred_read_replica
        size = r.uvarint() - 1
        records = r.take(size) if size > 0 else b""
        r.skip_tagged_fields()
        return index, error, records

    def read_topic(r):
        found = uuid.UUID(bytes=r.take(16))
        parts = r.compact_array(read_partition)
        r.skip_tagged_fields()
        return found, parts

    partitions = {}
    for found, parts in reader.compact_array(read_topic):
        for index, error, records in parts:
            partitions[(found, index)] = (error, records)
    reader.skip_tagged_fields()
    reader.expect_end()
    return error_code, response_session_id, partitions


def test_topic_id_sessions(broker, three):
    topic_uuid = topic_id(broker, three)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error, session, partitions = fetch_v13(conn, 0, 0, [(topic_uuid, p, 0) for p in range(3)])
        assert error == 0 and session > 0
        assert sorted(partitions) == [(topic_uuid, p) for p in range(3)]
        assert all(e == 0 for e, _ in partitions.values())
        # A session made with topic ids refuses a request by names, and the reverse.
        wrong = fetch_v7(conn, session, 1)
        assert (wrong.error_code, wrong.session_id) == (FETCH_SESSION_TOPIC_ID_ERROR, 0)
        error, same, partitions = fetch_v13(conn, session, 1,
                                            forgotten=[(topic_uuid, 0), (topic_uuid, 1)])
        assert (error, same, partitions) == (0, session, {})
        produce(conn, three, 0, [b"forgotten"])
        produce(conn, three, 2, [b"kept"])
        error, same, partitions = fetch_v13(conn, session, 2)
        assert (error, same) == (0, session)
        assert list(partitions) == [(topic_uuid, 2)]
        named, _ = open_session(conn, three)
        error, _, _ = fetch_v13(conn, named, 1)
        assert error == FETCH_SESSION_TOPIC_ID_ERROR


# ---------------------------------------------------------------- kafka-python


def test_kafka_python_consumer_reads_everything_once_through_sessions(broker, topic):
    partitions = 4
    rounds = 6
    per_round = 5
    clients.create_topic(broker, topic, partitions=partitions)
    consumer = clients.kp_consumer(broker, auto_offset_reset="earliest",
                                   fetch_max_wait_ms=200)
    sessions_seen = set()
    got = {p: [] for p in range(partitions)}
    try:
        tps = [kafka.TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            for round_index in range(rounds):
                # Rounds touch different partitions, so most fetches have some idle ones.
                for p in range(partitions):
                    if (p + round_index) % 2 == 0:
                        values = [f"{p}-{round_index}-{i}".encode() for i in range(per_round)]
                        produce(conn, topic, p, values)
                expected = {p: produced_count(p, round_index + 1, per_round)
                            for p in range(partitions)}
                clients.wait_for(
                    lambda: poll_into(consumer, got, sessions_seen) and all(
                        len(got[p]) >= expected[p] for p in range(partitions)),
                    what=f"round {round_index} consumed")
    finally:
        consumer.close()
    for p in range(partitions):
        offsets = [offset for offset, _ in got[p]]
        assert offsets == list(range(len(offsets))), f"partition {p}: {offsets}"
        values = [v for _, v in got[p]]
        assert values == [f"{p}-{r}-{i}".encode() for r in range(rounds)
                          if (p + r) % 2 == 0 for i in range(per_round)]
    assert sessions_seen, "kafka-python never held a fetch session"


def produced_count(partition, rounds, per_round):
    return sum(per_round for r in range(rounds) if (partition + r) % 2 == 0)


def poll_into(consumer, got, sessions_seen):
    """One poll; records into got; the consumer's live session ids into sessions_seen.
    Always true, so it can lead a wait_for condition."""
    for tp, records in consumer.poll(timeout_ms=300).items():
        got[tp.partition].extend((r.offset, r.value) for r in records)
    for handler in consumer._fetcher._session_handlers.values():
        metadata = handler.next_metadata
        if metadata.session_id != 0 and metadata.epoch > 1:
            sessions_seen.add(metadata.session_id)
    return True
