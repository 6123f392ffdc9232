"""Log compaction (cleanup.policy=compact) seen through real clients: after the cleaner
runs, a consumer reading from the beginning sees only the latest value of each key in the
closed segments, offsets keep their values (with gaps), and committed offsets in the
compacted __consumer_offsets survive a restart."""

import re
import struct
import time

import clients
from confluent_kafka import KafkaError, KafkaException, TopicPartition

# The cleaner checks every 300 ms; tiny segments so records land in closed segments,
# those of __consumer_offsets too.
BROKER_OVERRIDES = {
    "log.cleaner.backoff.ms": "300",
    "offsets.topic.num.partitions": "3",
    "offsets.topic.segment.bytes": "2048",
    "group.initial.rebalance.delay.ms": "0",
}
KEYS = 5
ROUNDS = 40


def read_to_end(broker, topic, start=0, timeout_s=20, partition=0):
    """Every record from `start` to the high watermark; offsets may have gaps."""
    low, high = clients.watermarks(broker, topic, partition)
    if high <= max(low, start):
        return []
    consumer = clients.consumer(broker, **{"enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        messages, deadline = [], time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    if messages and messages[-1].offset() >= high - 1:
                        return messages
                    continue
                raise KafkaException(message.error())
            messages.append(message)
        raise AssertionError(f"did not reach offset {high - 1} in {timeout_s} s")
    finally:
        consumer.close()


def test_compacted_topic_keeps_latest_value_per_key(broker, topic):
    clients.create_topic(broker, topic, 1, config={
        "cleanup.policy": "compact", "segment.bytes": "1024", "delete.retention.ms": "60000"})
    records = [{"key": f"k{i % KEYS}".encode(), "value": f"v{i}".encode(), "partition": 0}
               for i in range(KEYS * ROUNDS)]
    # One record per produce request, so batches are small and segments roll often.
    for record in records:
        clients.produce_ok(broker, topic, [record], **{"linger.ms": 0})
    total = len(records)
    latest = {f"k{k}": f"v{total - KEYS + k}" for k in range(KEYS)}

    previous = []

    def compacted():
        # Done when a read finds it compacted and the same as one cleaner period ago.
        messages = read_to_end(broker, topic)
        offsets = [m.offset() for m in messages]
        stable = len(messages) < total // 2 and offsets == previous[-1:][0] if previous else False
        previous.append(offsets)
        time.sleep(0.4)
        return stable and messages

    messages = clients.wait_for(compacted, 30, interval_s=0.5,
                                what="the cleaner to compact the closed segments")
    offsets = [m.offset() for m in messages]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), offsets
    assert offsets[-1] == total - 1, "the last record (active segment) keeps its offset"
    last_seen = {}
    for message in messages:
        key, value = message.key().decode(), message.value().decode()
        # Every record keeps the offset it was produced at: value vN sits at offset N.
        assert message.offset() == int(value[1:]), (message.offset(), value)
        last_seen[key] = value
    assert last_seen == latest
    # Whatever survives from the closed segments is the latest for its key or newer than
    # the closed segments; nothing older than the latest per key before the active tail.
    low, high = clients.watermarks(broker, topic, 0)
    assert (low, high) == (0, total)
    # A consumer starting inside a gap gets the next surviving record.
    gaps = [o + 1 for o, n in zip([-1] + offsets, offsets) if n > o + 1]
    assert gaps, f"compaction left no gap: {offsets}"
    gap = gaps[-1]
    first = read_to_end(broker, topic, start=gap)[0]
    assert first.offset() == next(o for o in offsets if o >= gap)


def test_committed_offsets_survive_restart_of_compacted_offsets_topic(broker, topic):
    clients.create_topic(broker, topic, 1)
    clients.produce_ok(broker, topic, [{"value": b"x", "partition": 0}] * 10)
    group = f"{topic}-group"
    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        for offset in range(1, 11):
            result = consumer.commit(offsets=[TopicPartition(topic, 0, offset, metadata=f"m{offset}")],
                                     asynchronous=False)
            assert result[0].error is None
    finally:
        consumer.close()
    broker.restart()
    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        [committed] = consumer.committed([TopicPartition(topic, 0)], timeout=20)
        assert committed.offset == 10
        assert committed.metadata.rstrip("\x00") == "m10"
    finally:
        consumer.close()


def latest_of_each_key(produced):
    """What a fully compacted log holds of (offset, key, value) rows: each key's last."""
    last = {key: offset for offset, key, _value in produced}
    return [row for row in produced if last[row[1]] == row[0]]


def rows(messages):
    return [(m.offset(), m.key().decode(), m.value().decode()) for m in messages]


def wait_for_log(broker, topic, want, what, timeout_s=30):
    """Reads the whole partition until it holds exactly `want`; fails showing the last read."""
    deadline, seen = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        seen = rows(read_to_end(broker, topic))
        if seen == want:
            return
        time.sleep(0.3)
    assert seen == want, f"{what}: the log did not reach the expected records"


def test_a_batch_compacted_with_gaps_is_compacted_again(broker, topic):
    """The cleaner keeps a batch with its surviving records at their original offsets,
    so a batch it cleaned has gaps in its offset deltas; a later pass must still remove
    records of that batch that newer values supersede (and keep every offset)."""
    clients.create_topic(broker, topic, 1, config={
        "cleanup.policy": "compact", "segment.bytes": "1024", "delete.retention.ms": "60000"})
    produced = []

    def produce(pairs, **config):
        # One produce of all pairs: librdkafka sends them as one batch.
        records = [{"key": k.encode(), "value": v.encode(), "partition": 0} for k, v in pairs]
        messages = clients.produce_ok(broker, topic, records, **{"linger.ms": 50, **config})
        produced.extend((m.offset(), k, v) for m, (k, v) in zip(messages, pairs))

    def roll():
        # Unique keys (never removed) until the records before them are in closed segments.
        for index in range(6):
            produce([(f"fill-{len(produced)}", f"{index}:{PAD * 2}")])

    produce([(key, f"{key}1") for key in "abcde"])
    assert [offset for offset, *_ in produced] == [0, 1, 2, 3, 4]
    produce([("b", "b2"), ("d", "d2")])
    roll()
    wait_for_log(broker, topic, latest_of_each_key(produced), "first pass")
    # Batch 0..4 now holds a, c, e at offsets 0, 2, 4. New values for two of them:
    produce([("c", "c3"), ("a", "a3")])
    roll()
    want = latest_of_each_key(produced)
    assert [row for row in want if len(row[1]) == 1] == [
        (4, "e", "e1"), (5, "b", "b2"), (6, "d", "d2"),
        (13, "c", "c3"), (14, "a", "a3")], want
    wait_for_log(broker, topic, want, "second pass over the gapped batch")


def offset_commit_key(key):
    """(group, topic, partition) of an offset commit key of __consumer_offsets; None for
    other records (group metadata)."""
    (version,) = struct.unpack_from(">h", key, 0)
    if version > 1:
        return None
    position, fields = 2, []
    for _ in range(2):
        (length,) = struct.unpack_from(">h", key, position)
        fields.append(key[position + 2:position + 2 + length].decode())
        position += 2 + length
    (partition,) = struct.unpack_from(">i", key, position)
    return fields[0], fields[1], partition


def commit_offsets_log(broker, group, topic):
    """[(offset in __consumer_offsets, partition committed)] of `group`'s commits for
    `topic`, in log order, from whichever offsets partition holds the group."""
    found = []
    for partition in range(int(BROKER_OVERRIDES["offsets.topic.num.partitions"])):
        for message in read_to_end(broker, "__consumer_offsets", partition=partition):
            if message.key() is None or message.value() is None:
                continue
            fields = offset_commit_key(message.key())
            if fields is not None and fields[:2] == (group, topic):
                found.append((message.offset(), fields[2]))
    return found


def test_offsets_in_a_compacted_offsets_batch_survive_a_hard_restart(broker, topic):
    """One commit of three partitions is one batch in __consumer_offsets; committing the
    middle one again lets the cleaner leave that batch with a gap. After kill -9 the
    coordinator loads the partition again and must find all three offsets."""
    clients.create_topic(broker, topic, 3)
    group = f"{topic}-group"
    filler = f"{topic}-filler"
    clients.create_topic(broker, filler, 1)
    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        def commit(offsets):
            result = consumer.commit(offsets=offsets, asynchronous=False)
            assert all(tp.error is None for tp in result), result

        commit([TopicPartition(topic, p, 10, metadata=f"first-{p}") for p in range(3)])
        commit([TopicPartition(topic, 1, 20, metadata="second-1")])
        # Commits of the same group (so the same offsets partition) to roll its segments.
        for offset in range(60):
            commit([TopicPartition(filler, 0, offset, metadata="x" * 100)])
    finally:
        consumer.close()

    def gapped():
        # [(o, 0), (o + 1, 1), (o + 2, 2), (o + 3, 1)] as committed; the cleaner leaves
        # the first batch with o and o + 2 only.
        commits = commit_offsets_log(broker, group, topic)
        partitions = [partition for _offset, partition in commits]
        return partitions == [0, 2, 1] and commits[1][0] - commits[0][0] == 2

    clients.wait_for(gapped, 30, interval_s=0.5,
                     what="the cleaner to drop the first commit of partition 1")
    broker.restart(hard=True)
    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(3)]
        committed = consumer.committed(wanted, timeout=20)
        got = [(tp.partition, tp.offset, tp.metadata.rstrip("\x00")) for tp in committed]
        assert got == [(0, 10, "first-0"), (1, 20, "second-1"), (2, 10, "first-2")], got
    finally:
        consumer.close()


# A log the cleaner rewrites whole at every pass: three records in four have a unique
# key (never removed), the fourth overwrites one of a few hot keys (removed from every
# older segment). Values carry their offset, so every read can be checked exactly.
HOT_KEYS = 40
PAD = "x" * 100


def key_of(offset):
    return f"h{offset % HOT_KEYS}" if offset % 4 == 0 else f"u{offset}"


def keyed_records(first, count):
    return [{"key": key_of(offset).encode(), "value": f"{offset}:{PAD}".encode(),
             "partition": 0} for offset in range(first, first + count)]


def check_compacted_read(messages):
    """Offsets rise, each record is the one produced at its offset, every unique-key
    record is there, and so is the latest record of each hot key up to the read's end."""
    offsets = [m.offset() for m in messages]
    assert offsets == sorted(set(offsets)), "offsets rise"
    for message in messages:
        assert int(message.value().decode().split(":")[0]) == message.offset()
        assert message.key().decode() == key_of(message.offset())
    end = offsets[-1]
    present = set(offsets)
    unique_missing = [o for o in range(end + 1) if o % 4 != 0 and o not in present]
    assert not unique_missing, f"unique keys lost: {unique_missing[:10]}"
    latest_hot = {}
    for offset in range(0, end + 1, 4):
        latest_hot[key_of(offset)] = offset
    missing = sorted(o for o in latest_hot.values() if o not in present)
    assert not missing, f"latest values of hot keys lost: {missing[:10]}"


def cleaner_events(broker, topic):
    """(passes started, passes installed) for the topic's partition, from the broker log."""
    with open(broker.stderr_path, "rb") as stderr:
        lines = stderr.read().decode("utf-8", "replace").splitlines()
    mine = [line for line in lines if f"{topic}-0" in line]
    started = sum("cleaning the log" in line for line in mine)
    installed = sum("compacted the closed segments" in line for line in mine)
    return started, installed


def running_pass(broker, topic, timeout_s=1.0):
    """Waits up to timeout_s for a pass over the topic's partition to be running; returns
    how many passes were installed before it, or None. Polled every 10 ms: a pass after a
    produce round starts within log.cleaner.backoff.ms and may take only 50 ms, so one
    look per round can miss every pass."""
    deadline = time.monotonic() + timeout_s
    while True:
        started, installed = cleaner_events(broker, topic)
        if started > installed:
            return installed
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def cleaner_timings(broker, topic):
    """(pass_ms, swap_us) pairs of the topic's passes, for the test's printed summary."""
    with open(broker.stderr_path, "rb") as stderr:
        text = stderr.read().decode("utf-8", "replace")
    passes = re.findall(rf"{topic}-0.*?pass_ms=(\d+)", text)
    swaps = re.findall(rf"{topic}-0.*?swap_us=(\d+)", text)
    return list(zip(map(int, passes), map(int, swaps)))


def test_fetches_are_answered_while_a_large_clean_runs(start_broker, topic):
    """The cleaner works without the partition lock: a consumer reading the whole log
    while a pass rewrites it gets complete, correct data, and a producer keeps going."""
    broker = start_broker("cleaner", {"log.cleaner.backoff.ms": "200"})
    try:
        clients.create_topic(broker, topic, 1, config={
            "cleanup.policy": "compact", "segment.bytes": str(512 * 1024)})
        produce = {"enable.idempotence": True, "linger.ms": 20}
        total = 100_000
        clients.produce_ok(broker, topic, keyed_records(0, total), **produce)
        caught, overlapped = 0, 0
        # Keep segments closing so that passes keep coming; bounded in count.
        for _round in range(60):
            installed = running_pass(broker, topic)
            if installed is not None:
                # A pass is running: read everything, then check it.
                check_compacted_read(read_to_end(broker, topic, timeout_s=60))
                caught += 1
                overlapped += cleaner_events(broker, topic)[1] == installed
                if caught >= 3:
                    break
            clients.produce_ok(broker, topic, keyed_records(total, 5_000), **produce)
            total += 5_000
        print(f"reads during a pass: {caught}, of which the pass outlasted the read: "
              f"{overlapped}; log end {total}")
        assert caught >= 1, "no read found a cleaning pass running"
        check_compacted_read(read_to_end(broker, topic, timeout_s=60))
        print("cleaner timings:", cleaner_timings(broker, topic))
    finally:
        broker.stop()
