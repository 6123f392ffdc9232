"""queued.max.request.bytes: the broker-wide budget of request bytes in memory.

A connection that has read a frame's size waits (without reading) until the budget has
room; a frame larger than the whole budget waits until the budget is entirely free;
frames of up to 64 KiB never wait. With a budget far smaller than the burst, every
produce must still be answered correctly, in full, and the broker must stay up.
"""

import threading

import clients
import rawkafka

BUDGET_BYTES = 2 * 1024 * 1024
BROKER_OVERRIDES = {"queued.max.request.bytes": str(BUDGET_BYTES)}
PARTITIONS = 3
BATCH_VALUE_BYTES = 700_000
TIMEOUT_S = 120


def value_of(client):
    """Each client's record value: 700 KB of one byte, different per client."""
    return bytes([client % 251]) * BATCH_VALUE_BYTES


def produce_in_thread(port, topic, batches, results, key, connection=rawkafka.Connection):
    def run():
        try:
            with connection("127.0.0.1", port, timeout_s=TIMEOUT_S) as conn:
                results[key] = rawkafka.produce_partitions(conn, topic, batches,
                                                           timeout_ms=60_000)
        except Exception as error:  # noqa: BLE001 (asserted on below)
            results[key] = error
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def record_at(port, topic, partition, offset):
    with rawkafka.Connection("127.0.0.1", port) as conn:
        result = rawkafka.fetch(conn, topic, partition, offset, max_bytes=2 << 20,
                                partition_max_bytes=2 << 20)
    assert result.error_code == 0, result.error_code
    batch = result.batches()[0]
    return next(record for record in batch if record.offset == offset)


def test_a_burst_far_over_the_budget_is_answered_in_full(broker, topic):
    clients.create_topic(broker, topic, partitions=PARTITIONS)
    # 24 clients: even ones send one batch (fits the budget, two at a time), odd ones a
    # batch per partition (2.1 MB, more than the whole budget: admitted only alone).
    wanted = {client: range(PARTITIONS) if client % 2 else [client % PARTITIONS]
              for client in range(24)}
    results, threads = {}, []
    for client, partitions in wanted.items():
        batch = rawkafka.build_batch([(f"c{client}".encode(), value_of(client), [])])
        batches = {partition: batch for partition in partitions}
        threads.append(produce_in_thread(broker.port, topic, batches, results, client))
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a produce was never answered"
    placed = {}
    for client, partitions in wanted.items():
        answer = results[client]
        assert isinstance(answer, dict), f"client {client}: {answer!r}"
        assert sorted(answer) == sorted(partitions)
        for partition, result in answer.items():
            assert result.error_code == 0, (client, partition, result.error_code)
            placed[(partition, result.base_offset)] = client
    # Every batch got its own offset, and the offsets of each partition are 0..n-1.
    for partition in range(PARTITIONS):
        offsets = sorted(o for p, o in placed if p == partition)
        assert offsets == list(range(len(offsets))), (partition, offsets)
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            assert rawkafka.latest_offset(conn, topic, partition) == len(offsets)
    for (partition, offset), client in sorted(placed.items())[::5]:
        record = record_at(broker.port, topic, partition, offset)
        assert (record.key, record.value) == (f"c{client}".encode(), value_of(client))
    assert broker.is_running()


class HeldConnection(rawkafka.Connection):
    """Sends the first `head` bytes of a request, then the rest once `go` is set."""

    head = 0
    head_sent = None
    go = None

    def send_raw(self, data):
        self.sock.sendall(data[:self.head])
        self.head_sent.set()
        assert self.go.wait(TIMEOUT_S), "never told to send the rest"
        self.sock.sendall(data[self.head:])


def test_small_requests_pass_while_large_ones_wait_and_an_oversized_one_gets_in(
        broker, topic):
    clients.create_topic(broker, topic, partitions=PARTITIONS)
    held = type("Held", (HeldConnection,), {"head": 100_000, "head_sent": threading.Event(),
                                            "go": threading.Event()})
    results = {}
    # A: a 1.4 MB produce whose body stops after 100 KB, holding its budget bytes.
    a_batch = rawkafka.build_batch([(b"a", value_of(1), [])])
    a = produce_in_thread(broker.port, topic, {0: a_batch, 1: a_batch}, results, "a",
                          connection=held)
    assert held.head_sent.wait(TIMEOUT_S)
    # B: 2.1 MB, more than the whole budget; it can only get in when A is done.
    b_batch = rawkafka.build_batch([(b"b", value_of(2), [])])
    b = produce_in_thread(broker.port, topic, {p: b_batch for p in range(PARTITIONS)},
                          results, "b")
    # Small frames need no budget: answered while A holds bytes and B waits for them.
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error_code, keys = rawkafka.api_versions_v0(conn)
        assert error_code == 0 and keys
        small = rawkafka.produce(conn, topic, 2, rawkafka.build_batch([(b"s", b"small", [])]))
        assert small.error_code == 0
    assert a.is_alive(), "A was answered before it sent its whole request"
    held.go.set()
    a.join(TIMEOUT_S)
    b.join(TIMEOUT_S)
    assert not a.is_alive() and not b.is_alive(), "a produce was never answered"
    assert {p: r.error_code for p, r in results["a"].items()} == {0: 0, 1: 0}, results["a"]
    assert {p: r.error_code for p, r in results["b"].items()} == {0: 0, 1: 0, 2: 0}
    for partition, result in results["b"].items():
        record = record_at(broker.port, topic, partition, result.base_offset)
        assert (record.key, record.value) == (b"b", value_of(2))
    record = record_at(broker.port, topic, 0, results["a"][0].base_offset)
    assert (record.key, record.value) == (b"a", value_of(1))
    assert broker.is_running()


def test_the_broker_runs_with_a_fixed_malloc_mmap_threshold(broker):
    """The broker re-executes itself with glibc's mmap threshold fixed (src/allocator.rs),
    so large buffers freed after a burst are unmapped; same process id, same arguments."""
    with open(f"/proc/{broker.process.pid}/environ", "rb") as environ:
        variables = environ.read().split(b"\0")
    assert b"GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576" in variables
    with open(f"/proc/{broker.process.pid}/cmdline", "rb") as cmdline:
        arguments = cmdline.read().split(b"\0")
    assert f"queued.max.request.bytes={BUDGET_BYTES}".encode() in arguments
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error_code, keys = rawkafka.api_versions_v0(conn)
    assert error_code == 0 and keys
