"""A broker killed with SIGKILL right after a leader-epoch change and many segment rolls
answers OffsetForLeaderEpoch from what its log holds (KAFKA-15046).

The leader-epoch checkpoint is published off the produce path by a background writer.
Recovery reads that file, then scans only the active segment's batches for epochs it
missed; so the log publishes whatever is pending before it creates a segment. Here the
first batch of the new epoch sits several segments below the active one when the broker
is killed: were its entry not in the file, the restarted broker would answer the older
epoch's end offset as the log end.

The epoch is changed by cluster.Cluster.fence_and_unfence: the partition's only replica
(node X) is SIGSTOPped past broker.session.timeout.ms (offline, epoch + 1) and resumed
(leads again, epoch + 1).
"""

import os
import struct
import uuid

import cluster
import rawkafka
from cluster import leadership
from test_leader_epoch_apis import NONE, assert_serves_epoch, offset_for_leader_epoch_v3

SEGMENT_BYTES = 1 << 20  # Kafka 4's minimum segment.bytes
RECORDS_PER_BATCH = 100
VALUE_BYTES = 1000  # about 100 KB a batch: ten or so batches fill a segment
BATCH_FIELDS = ">qii"  # base offset, batch length, partition leader epoch
LAST_OFFSET_DELTA_AT = 23
LOG_OVERHEAD = 12


def produce_batches(node, topic, count):
    """`count` uncompressed batches of random values to partition 0; returns the base
    offset of the first."""
    first = None
    with node.connect() as conn:
        for _ in range(count):
            values = [(None, os.urandom(VALUE_BYTES), []) for _ in range(RECORDS_PER_BATCH)]
            batch = rawkafka.build_batch(values)
            # The first may come before the node has opened the partition it leads.
            result = cluster.once_led(lambda: rawkafka.produce(conn, topic, 0, batch))
            assert result.error_code == NONE, result
            first = result.base_offset if first is None else first
    return first


def parse_batches(records):
    """(base offset, last offset, partition leader epoch) of every whole batch."""
    out, position = [], 0
    while position + LOG_OVERHEAD <= len(records):
        base, length, epoch = struct.unpack_from(BATCH_FIELDS, records, position)
        if position + LOG_OVERHEAD + length > len(records):
            break
        (delta,) = struct.unpack_from(">i", records, position + LAST_OFFSET_DELTA_AT)
        out.append((base, base + delta, epoch))
        position += LOG_OVERHEAD + length
    return out


def log_batches(node, topic):
    """Every batch of partition 0 up to the high watermark, and the high watermark."""
    batches, offset = [], 0
    with node.connect() as conn:
        while True:
            result = rawkafka.fetch(conn, topic, 0, offset)
            assert result.error_code == NONE, result.error_code
            if offset >= result.high_watermark:
                return batches, result.high_watermark
            found = parse_batches(result.records or b"")
            assert found, f"no whole batch at {offset} below {result.high_watermark}"
            batches += [batch for batch in found if batch[1] >= offset]
            offset = found[-1][1] + 1


def expected_end_offsets(batches, log_end):
    """OffsetForLeaderEpoch's answer for each epoch the batches carry: where the next
    epoch's first batch starts, the log end for the last."""
    starts = {}
    for base, _, epoch in batches:
        starts.setdefault(epoch, base)
    epochs = sorted(starts)
    return {epoch: (starts[epochs[i + 1]] if i + 1 < len(epochs) else log_end)
            for i, epoch in enumerate(epochs)}


def answers_now(node, topic, epochs):
    with node.connect() as conn:
        answers = offset_for_leader_epoch_v3(conn, topic, [(-1, epoch) for epoch in epochs])
    assert all(error == NONE for error, _, _ in answers), answers
    return answers


def test_sigkill_after_an_epoch_change_and_rolls_keeps_the_epochs(make_cluster):
    nodes = make_cluster(3, session_timeout_ms=3000)
    controller = nodes.active_controller()
    host = next(i for i in nodes.node_ids() if i != controller)
    node = nodes.node(host)
    topic = f"epoch-crash-{uuid.uuid4().hex[:10]}"
    nodes.create_topic(controller, topic, assignments={0: [host]},
                       configs={"segment.bytes": str(SEGMENT_BYTES)})
    nodes.wait_topic_everywhere(topic, partitions=1)
    leader, first = leadership(node, topic)
    assert leader == host
    produce_batches(node, topic, 25)  # two and a half segments at the first epoch

    epoch = nodes.fence_and_unfence(
        host, topic, first, taken=lambda epoch: assert_serves_epoch(node, topic, epoch))
    new_start = produce_batches(node, topic, 40)  # several rolls at the new epoch
    before, log_end = log_batches(node, topic)
    assert expected_end_offsets(before, log_end) == {first: new_start, epoch: log_end}

    nodes.restart(host, hard=True)  # SIGKILL

    def leads_again():
        leader, _ = leadership(node, topic)
        assert leader == host, leader
        return answers_now(node, topic, [first])

    cluster.wait_until(leads_again, timeout_s=30, what=f"node {host} leads after the crash")
    after, end_after = log_batches(node, topic)
    assert (after, end_after) == (before, log_end), "the acked log survives SIGKILL"
    expected = expected_end_offsets(after, end_after)
    asked = [first, first + 1, epoch]
    answers = answers_now(node, topic, asked)
    assert answers == [(NONE, first, expected[first]),
                       (NONE, first, expected[first]),  # an epoch it never had
                       (NONE, epoch, expected[epoch])], (answers, expected)
