"""Log compaction (cleanup.policy=compact) seen through real clients: after the cleaner
runs, a consumer reading from the beginning sees only the latest value of each key in the
closed segments, offsets keep their values (with gaps), and committed offsets in the
compacted __consumer_offsets survive a restart."""

import time

import clients
from confluent_kafka import KafkaError, KafkaException, TopicPartition

# The cleaner checks every 300 ms; tiny segments so records land in closed segments.
BROKER_OVERRIDES = {
    "log.cleaner.backoff.ms": "300",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
}
KEYS = 5
ROUNDS = 40


def read_to_end(broker, topic, start=0, timeout_s=20):
    """Every record from `start` to the high watermark; offsets may have gaps."""
    _low, high = clients.watermarks(broker, topic, 0)
    consumer = clients.consumer(broker, **{"enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, 0, start)])
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
