"""Restarts under load: SIGTERM (clean) and SIGKILL (crash) while a producer streams.

An idempotent confluent-kafka producer (acks=all) streams numbered records to three
partitions and records every acknowledgement. The broker is stopped with SIGTERM and
restarted, later killed with SIGKILL and restarted. Afterwards each partition must hold
every record exactly once, in the order produced, at the acknowledged offset, with no
gaps; new appends continue at the next offset.
"""

import os
import threading
import time

import clients
import rawkafka
from conftest import NODE_ID

PARTITIONS = 3
PHASE_ACKS = 300
RECORDS_MAX = 200_000
PRODUCE_INTERVAL_S = 0.001


class StreamingProducer(threading.Thread):
    """Produces value b"<n>" with partition n % PARTITIONS until stopped."""

    def __init__(self, broker, topic):
        super().__init__(daemon=True, name="streaming-producer")
        self.topic = topic
        self.lock = threading.Lock()
        self.acked = {partition: [] for partition in range(PARTITIONS)}  # (offset, n)
        self.failed = []
        self.fatal = []
        self.sent = 0
        self.flush_remaining = None
        self.stop_event = threading.Event()
        self.producer = clients.producer(broker, **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120000,
            "retry.backoff.ms": 100,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 500,
            "error_cb": self.on_error,
        })

    def on_error(self, error):
        clients.librdkafka_log.warning("streaming producer error: %s", error)
        if error.fatal():
            with self.lock:
                self.fatal.append(error)

    def on_delivery(self, error, message):
        with self.lock:
            if error is not None:
                self.failed.append((message.value(), error))
            else:
                number = int(message.value())
                self.acked[message.partition()].append((message.offset(), number))

    def acked_count(self):
        with self.lock:
            return sum(len(entries) for entries in self.acked.values())

    def run(self):
        number = 0
        while not self.stop_event.is_set() and number < RECORDS_MAX:
            try:
                self.producer.produce(self.topic, value=str(number).encode(),
                                      key=str(number).encode(),
                                      partition=number % PARTITIONS,
                                      on_delivery=self.on_delivery)
                number += 1
            except BufferError:
                self.producer.poll(0.05)
                continue
            self.producer.poll(0)
            time.sleep(PRODUCE_INTERVAL_S)
        self.sent = number
        self.flush_remaining = self.producer.flush(120)


def wait_for_more_acks(stream, count, timeout_s=60):
    target = stream.acked_count() + count
    clients.wait_for(lambda: stream.acked_count() >= target or stream.fatal, timeout_s,
                     interval_s=0.05, what=f"{target} acknowledged records")
    assert not stream.fatal, f"fatal producer error: {stream.fatal}"


def test_restarts_under_load_lose_and_duplicate_nothing(broker, topic):
    clients.create_topic(broker, topic, partitions=PARTITIONS)
    stream = StreamingProducer(broker, topic)
    stream.start()
    try:
        wait_for_more_acks(stream, PHASE_ACKS)
        assert broker.stop() == 0, "SIGTERM did not give a clean exit"
        time.sleep(1.0)  # the producer keeps queueing while the broker is down
        broker.start()
        wait_for_more_acks(stream, PHASE_ACKS)

        broker.kill()
        time.sleep(1.0)
        broker.start()
        wait_for_more_acks(stream, PHASE_ACKS)
    finally:
        stream.stop_event.set()
        stream.join(timeout=150)
    assert not stream.is_alive(), "the producer thread did not finish"
    assert stream.flush_remaining == 0, f"{stream.flush_remaining} records never delivered"
    assert not stream.fatal, f"fatal producer error: {stream.fatal}"
    assert not stream.failed, f"{len(stream.failed)} deliveries failed: {stream.failed[:5]}"
    assert stream.acked_count() == stream.sent

    end_offsets = {}
    for partition in range(PARTITIONS):
        acked = sorted(stream.acked[partition])
        expected_numbers = list(range(partition, stream.sent, PARTITIONS))
        messages = clients.consume_all(broker, topic, partition, timeout_s=60)
        offsets = [m.offset() for m in messages]
        numbers = [int(m.value()) for m in messages]
        assert offsets == list(range(len(messages))), f"partition {partition}: offset gaps"
        duplicates = len(numbers) - len(set(numbers))
        assert duplicates == 0, f"partition {partition}: {duplicates} duplicated records"
        assert numbers == expected_numbers, (
            f"partition {partition}: log differs from what was produced "
            f"(missing {sorted(set(expected_numbers) - set(numbers))[:10]})")
        log_by_offset = dict(zip(offsets, numbers))
        wrong = [(o, n) for o, n in acked if log_by_offset.get(o) != n]
        assert not wrong, f"partition {partition}: acked at other offsets: {wrong[:10]}"
        end_offsets[partition] = len(messages)

    # New appends continue right after the last record: no gap, no reuse.
    records = [{"value": b"after", "partition": p} for p in range(PARTITIONS)]
    for message in clients.produce_ok(broker, topic, records):
        assert message.offset() == end_offsets[message.partition()]


def test_repeated_crashes_keep_the_log(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    expected = []
    for round_number in range(3):
        values = [b"r%d-%d" % (round_number, i) for i in range(100)]
        messages = clients.produce_ok(broker, topic, [{"value": v} for v in values])
        assert [m.offset() for m in messages] == \
            list(range(len(expected), len(expected) + 100))
        expected += values
        broker.restart(hard=True)
        clients.wait_for(clients.watermarks_are(broker, topic, 0, (0, len(expected))),
                         30, what="watermarks after the crash")
    assert [m.value() for m in clients.consume_all(broker, topic, 0)] == expected


def test_many_segments_recover_and_index(broker, topic):
    # Kafka 4 requires segment.bytes >= 1 MiB; 4 MB of records make several segments.
    clients.create_topic(broker, topic, partitions=1, config={"segment.bytes": "1048576"})
    count = 4000
    values = [os.urandom(1000) for _ in range(count)]
    clients.produce_ok(broker, topic, [{"value": v} for v in values],
                       **{"compression.type": "none", "batch.size": 65536})
    broker.restart(hard=True)
    clients.wait_for(clients.watermarks_are(broker, topic, 0, (0, count)), 30,
                     what="watermarks after the crash")
    for start in (0, 1, 1047, 2500, count - 1):
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            result = rawkafka.fetch(conn, topic, 0, start, partition_max_bytes=4096)
        assert result.error_code == 0
        records = [r for batch in result.batches() for r in batch if r.offset >= start]
        assert records, f"no records at offset {start}"
        assert (records[0].offset, records[0].value) == (start, values[start])
    messages = clients.consume(broker, topic, 0, 2000, 2000)
    assert [m.value() for m in messages] == values[2000:]


def test_sigterm_with_a_parked_fetch_exits_promptly(broker, topic):
    """A long-poll fetch parked at the end of a partition must not hold up shutdown."""
    clients.create_topic(broker, topic, partitions=1)
    conn = rawkafka.Connection("127.0.0.1", broker.port, timeout_s=60)
    outcome = []

    def parked_fetch():
        try:
            outcome.append(rawkafka.fetch(conn, topic, 0, 0, max_wait_ms=30000).error_code)
        except (rawkafka.ConnectionClosed, OSError) as error:
            outcome.append(error)

    thread = threading.Thread(target=parked_fetch, daemon=True)
    try:
        thread.start()
        time.sleep(1.0)  # let the broker park it
        assert not outcome, f"the fetch returned before max_wait_ms: {outcome}"
        started = time.monotonic()
        assert broker.stop() == 0
        elapsed = time.monotonic() - started
        thread.join(timeout=10)
        assert outcome, "the parked fetch neither answered nor saw its connection close"
        assert elapsed < 5.0, f"SIGTERM took {elapsed:.1f} s with a parked fetch"
    finally:
        conn.close()
        if not broker.is_running():
            broker.start()


HAMMERING_CLIENTS = 4


def test_sigterm_stops_answering_before_the_node_fences_itself(broker, topic):
    """A stopping node never answers from an image in which it is fenced.

    A lone node answering Metadata while fenced lists its topics and no brokers at all,
    and librdkafka then forgets every broker it knows, bootstrap ones too: its producers
    stay cut off until their rebootstrap 5 minutes on, long after the node is back (seen
    as test_restarts_under_load timing out). So the node closes its client connections
    first and fences itself after. Clients that ask Metadata without pause through the
    SIGTERM, reconnecting at once whenever a connection closes, until they are refused,
    always find it listed; and its log has their connections closed before the fencing.
    """
    clients.create_topic(broker, topic, partitions=1)
    answers = []  # (monotonic time, metadata)
    refused = []
    ready = threading.Barrier(HAMMERING_CLIENTS + 1, timeout=30)

    def hammer():
        conn = rawkafka.Connection("127.0.0.1", broker.port)
        ready.wait()
        while True:
            try:
                while True:
                    answers.append((time.monotonic(), rawkafka.metadata_v4(conn, [topic])))
            except (rawkafka.ConnectionClosed, OSError):
                conn.close()
            try:
                conn = rawkafka.Connection("127.0.0.1", broker.port)
            except ConnectionRefusedError as error:
                refused.append(error)
                return

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(HAMMERING_CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        ready.wait()
        time.sleep(0.3)
        signalled = time.monotonic()
        assert broker.stop() == 0, "SIGTERM did not give a clean exit"
        for thread in threads:
            thread.join(timeout=10)
        assert len(refused) == HAMMERING_CLIENTS, f"clients not refused in the end: {refused}"
        unlisted = [metadata for _, metadata in answers
                    if NODE_ID not in [listed[0] for listed in metadata["brokers"]]]
        assert not unlisted, f"{len(unlisted)} of {len(answers)} answers leave the node out: " \
            f"{unlisted[:2]}"
        assert all(topic in metadata["topics"] for _, metadata in answers)
        after = sum(1 for at, _ in answers if at >= signalled)
        print(f"{len(answers)} Metadata answers, {after} after the SIGTERM, all listing "
              f"node {NODE_ID}")

        log = open(broker.stderr_path, encoding="utf-8", errors="replace").read()
        last_run = log[log.rindex("===== start #"):]
        fenced_at = last_run.index("controlled shutdown: leaderships moved, broker fenced")
        closed_at = [index for index, line in line_offsets(last_run)
                     if "connection closed" in line and 'reason="shutdown"' in line]
        assert len(closed_at) >= HAMMERING_CLIENTS, last_run[-3000:]
        assert max(closed_at) < fenced_at, \
            f"a client connection was still open when the node fenced itself:\n{last_run[-3000:]}"
    finally:
        if not broker.is_running():
            broker.start()


def line_offsets(text):
    """(offset, line) for each line of text."""
    offset = 0
    for line in text.splitlines(keepends=True):
        yield offset, line
        offset += len(line)
