"""A hosted partition follows leader epoch changes made at runtime (issue 7).

A partition with one replica on node X of a three-node cluster: X is SIGSTOPped for longer
than broker.session.timeout.ms, so the controller fences it (the partition goes offline,
leader epoch + 1), then resumed, so it is unfenced and leads again (epoch + 1 again); see
cluster.Cluster.fence_and_unfence.
Metadata then names X leader at the new epoch, and X itself must agree: Fetch with that
`current_leader_epoch` returns the records produced before, the old epoch is fenced, and
a batch produced afterwards carries the new epoch in its partition_leader_epoch field.

Fetch v9 (the first version with current_leader_epoch) is encoded here with rawkafka's
primitives.
"""

import struct
import time
import uuid

import cluster
import rawkafka
from cluster import leadership
from rawkafka import array, int8, int32, int64, string

FETCH_VERSION = 9
NONE = 0
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75

# Record batch layout (v2): base offset, batch length, then partition leader epoch.
BATCH_LENGTH_OFFSET = 8
BATCH_EPOCH_OFFSET = 12
BATCH_LOG_OVERHEAD = 12


def fetch_v9(conn, topic, partition, offset, current_leader_epoch):
    """Fetch v9 of one partition; returns (error_code, high_watermark, records bytes)."""
    partitions = array([int32(partition) + int32(current_leader_epoch) + int64(offset)
                        + int64(-1) + int32(1 << 20)], lambda item: item)
    body = (int32(-1) + int32(0) + int32(1) + int32(1 << 20) + int8(0)
            + int32(0) + int32(-1)  # no fetch session
            + array([string(topic) + partitions], lambda item: item)
            + array([], lambda item: item))  # forgotten topics
    reader = conn.request(rawkafka.FETCH, FETCH_VERSION, body)
    reader.int32()  # throttle_time_ms
    top_error = reader.int16()
    assert top_error == NONE, f"Fetch top-level error {top_error}"
    reader.int32()  # session_id

    def read_partition(r):
        index, error = r.int32(), r.int16()
        high_watermark = r.int64()
        r.int64()  # last_stable_offset
        r.int64()  # log_start_offset
        r.array(lambda rr: (rr.int64(), rr.int64()))  # aborted transactions
        return index, (error, high_watermark, r.nullable_bytes() or b"")

    topics = reader.array(lambda r: (r.string(), dict(r.array(read_partition))))
    reader.expect_end()
    assert len(topics) == 1 and topics[0][0] == topic, f"unexpected topics {topics}"
    return topics[0][1][partition]


def batch_epochs(records):
    """(base offset, partition_leader_epoch) of every complete batch in `records`."""
    out, position = [], 0
    while position + BATCH_LOG_OVERHEAD <= len(records):
        (base_offset,) = struct.unpack_from(">q", records, position)
        (length,) = struct.unpack_from(">i", records, position + BATCH_LENGTH_OFFSET)
        if position + BATCH_LOG_OVERHEAD + length > len(records):
            break
        (epoch,) = struct.unpack_from(">i", records, position + BATCH_EPOCH_OFFSET)
        out.append((base_offset, epoch))
        position += BATCH_LOG_OVERHEAD + length
    return out


def produce(node, topic, values):
    """Produces `values` as one batch to partition 0 of `topic` on `node`, its leader (once
    it has opened the partition); returns the base offset."""
    batch = rawkafka.build_batch([(None, value, []) for value in values])

    def attempt():
        with node.connect() as conn:
            return rawkafka.produce(conn, topic, 0, batch)

    result = cluster.once_led(attempt)
    assert result.error_code == NONE, result
    return result.base_offset


def test_a_partition_leads_again_at_the_new_epoch_after_fencing(make_cluster):
    nodes = make_cluster(3, session_timeout_ms=3000)
    controller = nodes.active_controller()
    host = next(i for i in nodes.node_ids() if i != controller)
    node = nodes.node(host)
    topic = f"epochs-{uuid.uuid4().hex[:10]}"
    nodes.create_topic(controller, topic, assignments={0: [host]})
    nodes.wait_topic_everywhere(topic, partitions=1)
    leader, first_epoch = leadership(node, topic)
    assert leader == host
    assert produce(node, topic, [b"a", b"b", b"c"]) == 0

    epoch = nodes.fence_and_unfence(host, topic, first_epoch)
    print(f"node {host}: leader epoch {first_epoch} -> {epoch}")

    # The node's partition has taken the epoch its Metadata announces (the reconciler may
    # lag the image by a moment, hence the retry on UNKNOWN_LEADER_EPOCH only).
    def fetch_at_new_epoch():
        with node.connect() as conn:
            error, high_watermark, records = fetch_v9(conn, topic, 0, 0, epoch)
        assert error != UNKNOWN_LEADER_EPOCH, "partition still at an older epoch"
        return error, high_watermark, records

    error, high_watermark, records = cluster.wait_until(
        fetch_at_new_epoch, timeout_s=10, what="Fetch at the new leader epoch")
    assert (error, high_watermark) == (NONE, 3)
    assert batch_epochs(records) == [(0, first_epoch)], "old batch keeps its epoch"

    with node.connect() as conn:
        stale = fetch_v9(conn, topic, 0, 0, first_epoch)
        newer = fetch_v9(conn, topic, 0, 0, epoch + 1)
    assert stale[0] == FENCED_LEADER_EPOCH
    assert newer[0] == UNKNOWN_LEADER_EPOCH

    assert produce(node, topic, [b"d"]) == 3
    with node.connect() as conn:
        error, high_watermark, records = fetch_v9(conn, topic, 0, 3, epoch)
    assert (error, high_watermark) == (NONE, 4)
    assert batch_epochs(records) == [(3, epoch)], "a new batch carries the new epoch"

    # The leader-epoch checkpoint beside the segments records where the epoch started.
    checkpoint = None
    deadline = time.monotonic() + 5
    path = f"{node.data_dir}/{topic}-0/leader-epoch-checkpoint"
    while time.monotonic() < deadline:
        with open(path) as file:
            checkpoint = file.read()
        if checkpoint.endswith(f"{epoch} 3\n"):
            break
        time.sleep(0.1)
    assert checkpoint == f"0\n2\n{first_epoch} 0\n{epoch} 3\n"
