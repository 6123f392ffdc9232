"""Leader-epoch APIs on a real cluster (issue 8): OffsetForLeaderEpoch, ListOffsets' leader
epochs, and KIP-951 leader hints on a refused Produce and Fetch.

Epochs are made to change by cluster.Cluster.fence_and_unfence: a partition with one
replica on node X is fenced (X SIGSTOPped past broker.session.timeout.ms, the partition
goes offline, epoch + 1) and unfenced (X resumed, leads again, epoch + 1), so its log holds
a batch of the first epoch and one of the new epoch, and an epoch in between it never had.

Requests are hand-encoded with rawkafka's primitives: OffsetForLeaderEpoch v3 and
ListOffsets v4 (the last non-flexible versions with current_leader_epoch), Produce v10 and
Fetch v16 (flexible, the first versions that carry current_leader and node_endpoints).
OffsetForLeaderEpoch v0 and v1 (dropped by Kafka 4.0, served here by hand-written codecs)
must give the v3 answers minus what their schemas lack: no fencing epoch in the request,
no throttle time in the response, and no leader epoch at v0.
"""

import base64
import uuid

import clients
import cluster
import rawkafka
from rawkafka import (EMPTY_TAGGED_FIELDS, array, compact_string, int8, int16, int32, int64,
                      string, uvarint)
from cluster import leadership
from test_leader_epoch_changes import produce

OFFSET_FOR_LEADER_EPOCH = 23
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_LEADER_OR_FOLLOWER = 6
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75
LATEST, EARLIEST = -1, -2


def offset_for_leader_epoch_v3(conn, topic, asks, replica_id=-1):
    """OffsetForLeaderEpoch v3 of partition 0. asks: [(current_leader_epoch, leader_epoch)],
    sent as one request (the same partition repeated). Returns [(error, epoch, end_offset)]."""
    partitions = [int32(0) + int32(current) + int32(epoch) for current, epoch in asks]
    body = int32(replica_id) + array([string(topic) + array(partitions, lambda p: p)],
                                     lambda t: t)
    reader = conn.request(OFFSET_FOR_LEADER_EPOCH, 3, body)
    reader.int32()  # throttle_time_ms

    def read_partition(r):
        error, index = r.int16(), r.int32()
        assert index == 0
        return error, r.int32(), r.int64()

    topics = reader.array(lambda r: (r.string(), r.array(read_partition)))
    reader.expect_end()
    assert [name for name, _ in topics] == [topic]
    return topics[0][1]


def assert_serves_epoch(node, topic, epoch):
    """Raises while `node`'s own partition 0 of `topic` is not at leader epoch `epoch` yet
    (its Metadata may announce the epoch a moment before the partition takes it)."""
    with node.connect() as conn:
        error, _, _ = offset_for_leader_epoch_v3(conn, topic, [(epoch, epoch)])[0]
    assert error != UNKNOWN_LEADER_EPOCH, "partition still at an older epoch"


def offset_for_leader_epoch_legacy(conn, version, topics):
    """OffsetForLeaderEpoch v0 or v1. topics: [(topic, [(partition, leader_epoch)])].
    Returns [(topic, partition, error, leader_epoch (None at v0), end_offset)]."""
    assert version in (0, 1)
    body = array([string(topic) + array([int32(partition) + int32(epoch)
                                         for partition, epoch in asks], lambda p: p)
                  for topic, asks in topics], lambda t: t)
    reader = conn.request(OFFSET_FOR_LEADER_EPOCH, version, body)  # no throttle time

    def read_partition(r):
        error, partition = r.int16(), r.int32()
        epoch = r.int32() if version >= 1 else None
        return partition, error, epoch, r.int64()

    answers = [(name, *partition)
               for name, partitions in reader.array(lambda r: (r.string(),
                                                               r.array(read_partition)))
               for partition in partitions]
    reader.expect_end()
    return answers


def legacy_as_v3(conn, topic, epochs):
    """v0 and v1 answers for partition 0 at each of `epochs`, as [(error, epoch, end)]
    where v0's missing epoch is checked against v1's."""
    asks = [(topic, [(0, epoch) for epoch in epochs])]
    v0 = offset_for_leader_epoch_legacy(conn, 0, asks)
    v1 = offset_for_leader_epoch_legacy(conn, 1, asks)
    assert [(t, p, e, end) for t, p, e, _, end in v1] == [(t, p, e, end)
                                                         for t, p, e, _, end in v0]
    assert all(epoch is None for *_, epoch, _ in v0)
    return [(error, epoch, end) for _, _, error, epoch, end in v1]


def list_offsets_v4(conn, topic, current_leader_epoch, timestamps):
    """ListOffsets v4 of partition 0; returns [(error, timestamp, offset, leader_epoch)]."""
    partitions = [int32(0) + int32(current_leader_epoch) + int64(timestamp)
                  for timestamp in timestamps]
    body = (int32(-1) + int8(0)
            + array([string(topic) + array(partitions, lambda p: p)], lambda t: t))
    reader = conn.request(rawkafka.LIST_OFFSETS, 4, body)
    reader.int32()  # throttle_time_ms

    def read_partition(r):
        r.int32()  # partition index
        return r.int16(), r.int64(), r.int64(), r.int32()

    topics = reader.array(lambda r: (r.string(), r.array(read_partition)))
    reader.expect_end()
    return topics[0][1]


def test_end_offsets_and_list_offsets_epochs_follow_leader_changes(make_cluster):
    nodes = make_cluster(3, session_timeout_ms=3000)
    controller = nodes.active_controller()
    host = next(i for i in nodes.node_ids() if i != controller)
    other = next(i for i in nodes.node_ids() if i != host)
    node = nodes.node(host)
    topic = f"ofle-{uuid.uuid4().hex[:10]}"
    nodes.create_topic(controller, topic, assignments={0: [host]})
    nodes.wait_topic_everywhere(topic, partitions=1)
    leader, first = leadership(node, topic)
    assert leader == host
    assert produce(node, topic, [b"a", b"b", b"c"]) == 0

    with node.connect() as conn:
        before = offset_for_leader_epoch_v3(conn, topic, [(first, first), (-1, first + 1)])
        legacy_before = legacy_as_v3(conn, topic, [first, first + 1])
    assert before == [(NONE, first, 3), (NONE, -1, -1)], "latest epoch: the log end"
    assert legacy_before == before

    epoch = nodes.fence_and_unfence(
        host, topic, first, taken=lambda epoch: assert_serves_epoch(node, topic, epoch))
    assert produce(node, topic, [b"d", b"e"]) == 3

    with node.connect() as conn:
        answers = offset_for_leader_epoch_v3(conn, topic, [
            (epoch, first),        # the first epoch ends where the new one starts
            (epoch, first + 1),    # an epoch this log never had: the one below it
            (epoch, epoch),        # the latest: the log end
            (epoch, epoch + 1),    # above every epoch
            (-1, first),           # no current epoch: not checked
            (first, first),        # a stale current epoch
            (epoch + 1, first),    # a current epoch from the future
        ])
        legacy = legacy_as_v3(conn, topic, [first, first + 1, epoch, epoch + 1])
        offsets = list_offsets_v4(conn, topic, epoch, [LATEST, EARLIEST])
        stale_offsets = list_offsets_v4(conn, topic, first, [LATEST])
        future_offsets = list_offsets_v4(conn, topic, epoch + 1, [LATEST])
    assert answers == [
        (NONE, first, 3),
        (NONE, first, 3),
        (NONE, epoch, 5),
        (NONE, -1, -1),
        (NONE, first, 3),
        (FENCED_LEADER_EPOCH, -1, -1),
        (UNKNOWN_LEADER_EPOCH, -1, -1),
    ]
    assert legacy == answers[:4], "v0/v1: the v3 answers without a current epoch"
    assert offsets == [(NONE, -1, 5, epoch), (NONE, -1, 0, first)]
    assert stale_offsets == [(FENCED_LEADER_EPOCH, -1, -1, -1)]
    assert future_offsets == [(UNKNOWN_LEADER_EPOCH, -1, -1, -1)]

    # Another node, which does not host the partition, and a topic nobody has.
    with nodes.node(other).connect() as conn:
        elsewhere = offset_for_leader_epoch_v3(conn, topic, [(epoch, first)])
        unknown = offset_for_leader_epoch_v3(conn, "no-such-topic", [(-1, 0)])
        legacy_elsewhere = legacy_as_v3(conn, topic, [first])
        legacy_unknown = legacy_as_v3(conn, "no-such-topic", [0])
    assert elsewhere == [(NOT_LEADER_OR_FOLLOWER, -1, -1)]
    assert unknown == [(UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]
    assert (legacy_elsewhere, legacy_unknown) == (elsewhere, unknown)


# ---------------------------------------------------------------- v0 and v1, one broker


def test_legacy_versions_answer_from_one_broker(broker, topic):
    clients.create_topic(broker, topic, partitions=2)
    batch = rawkafka.build_batch([(None, value, []) for value in (b"a", b"b", b"c")])
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        assert rawkafka.produce(conn, topic, 0, batch).error_code == NONE
        asks = [(topic, [(0, 0), (1, 0), (0, 1), (2, 0)]), ("no-such-topic", [(0, 0)])]
        v0 = offset_for_leader_epoch_legacy(conn, 0, asks)
        v1 = offset_for_leader_epoch_legacy(conn, 1, asks)
        v3 = offset_for_leader_epoch_v3(conn, topic, [(-1, 0), (-1, 1)])
    assert v1 == [
        (topic, 0, NONE, 0, 3),                     # epoch 0, the latest: the log end
        (topic, 1, NONE, 0, 0),                     # an empty partition at epoch 0
        (topic, 0, NONE, -1, -1),                   # above every epoch: undefined
        (topic, 2, UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
        ("no-such-topic", 0, UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
    ]
    assert v0 == [(t, p, error, None, end) for t, p, error, _, end in v1]
    assert v3 == [(error, epoch, end) for t, p, error, epoch, end in v1[0:3:2]]


def test_a_malformed_legacy_request_closes_only_its_connection(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    whole = array([string(topic) + array([int32(0) + int32(0)], lambda p: p)], lambda t: t)
    for version, body in [(0, whole[:-3]), (1, int32(1) + string(topic) + int32(1 << 30))]:
        bystander = rawkafka.Connection("127.0.0.1", broker.port)
        try:
            with rawkafka.Connection("127.0.0.1", broker.port) as conn:
                header = rawkafka.request_header(OFFSET_FOR_LEADER_EPOCH, version, 7)
                conn.send_raw(rawkafka.frame(header + body))
                assert conn.wait_closed(timeout_s=10), f"v{version}: connection kept open"
            answer = offset_for_leader_epoch_legacy(bystander, version, [(topic, [(0, 0)])])
            assert answer[0][2] == NONE
        finally:
            bystander.close()


# ---------------------------------------------------------------- KIP-951


def compact_nullable_bytes(value):
    return uvarint(0) if value is None else uvarint(len(value) + 1) + value


def compact_array(items):
    return uvarint(len(items) + 1) + b"".join(items)


def read_tagged(reader, readers):
    """Reads a tagged-field section; tags in `readers` are parsed with their reader."""
    fields = {}
    for tag, raw in reader.skip_tagged_fields().items():
        if tag in readers:
            inner = rawkafka.Reader(raw)
            fields[tag] = readers[tag](inner)
            inner.expect_end()
    return fields


def read_leader(r):
    leader = (r.int32(), r.int32())
    r.skip_tagged_fields()
    return leader


def read_endpoints(r):
    def read_endpoint(rr):
        endpoint = rr.int32(), rr.compact_string(), rr.int32(), rr.compact_string()
        rr.skip_tagged_fields()
        return endpoint

    return r.compact_array(read_endpoint)


def produce_v10(conn, topic, records):
    """Produce v10 of one batch to partition 0, acks=1. Returns (error, current_leader or
    None, node_endpoints or None)."""
    partition = int32(0) + compact_nullable_bytes(records) + EMPTY_TAGGED_FIELDS
    topic_data = compact_string(topic) + compact_array([partition]) + EMPTY_TAGGED_FIELDS
    body = (compact_string(None) + int16(1) + int32(10000) + compact_array([topic_data])
            + EMPTY_TAGGED_FIELDS)
    reader = conn.request(rawkafka.PRODUCE, 10, body, flexible_request=True,
                          flexible_response=True)

    def read_partition(r):
        r.int32()  # index
        error = r.int16()
        r.int64(), r.int64(), r.int64()  # base offset, append time, log start
        r.compact_array(lambda rr: (rr.int32(), rr.compact_string(), rr.skip_tagged_fields()))
        r.compact_string()  # error message
        return error, read_tagged(r, {0: read_leader}).get(0)

    def read_topic(r):
        name = r.compact_string()
        partitions = r.compact_array(read_partition)
        r.skip_tagged_fields()
        return name, partitions

    topics = reader.compact_array(read_topic)
    reader.int32()  # throttle_time_ms
    endpoints = read_tagged(reader, {0: read_endpoints}).get(0)
    reader.expect_end()
    error, leader = topics[0][1][0]
    return error, leader, endpoints


def fetch_v16(conn, topic_id, current_leader_epoch):
    """Fetch v16 of partition 0 of `topic_id` (16 raw bytes) from offset 0. Returns (error,
    current_leader or None, node_endpoints or None)."""
    partition = (int32(0) + int32(current_leader_epoch) + int64(0) + int32(-1) + int64(-1)
                 + int32(1 << 20) + EMPTY_TAGGED_FIELDS)
    fetch_topic = topic_id + compact_array([partition]) + EMPTY_TAGGED_FIELDS
    body = (int32(0) + int32(0) + int32(1 << 20) + int8(0) + int32(0) + int32(-1)
            + compact_array([fetch_topic]) + compact_array([]) + compact_string("")
            + EMPTY_TAGGED_FIELDS)
    reader = conn.request(rawkafka.FETCH, 16, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms
    assert reader.int16() == NONE
    reader.int32()  # session id

    def read_partition(r):
        r.int32()  # index
        error = r.int16()
        r.int64(), r.int64(), r.int64()  # high watermark, last stable, log start
        r.compact_array(lambda rr: (rr.int64(), rr.int64(), rr.skip_tagged_fields()))
        r.int32()  # preferred read replica
        size = r.uvarint() - 1
        if size > 0:
            r.take(size)
        return error, read_tagged(r, {1: read_leader}).get(1)

    def read_topic(r):
        r.take(16)
        partitions = r.compact_array(read_partition)
        r.skip_tagged_fields()
        return partitions

    topics = reader.compact_array(read_topic)
    endpoints = read_tagged(reader, {0: read_endpoints}).get(0)
    reader.expect_end()
    error, leader = topics[0][0]
    return error, leader, endpoints


def test_a_refused_produce_and_fetch_name_the_leader_and_its_endpoint(make_cluster):
    nodes = make_cluster(3, session_timeout_ms=3000)
    controller = nodes.active_controller()
    host = next(i for i in nodes.node_ids() if i != controller)
    other = next(i for i in nodes.node_ids() if i != host)
    topic = f"hint-{uuid.uuid4().hex[:10]}"
    nodes.create_topic(controller, topic, assignments={0: [host]})
    views = nodes.wait_topic_everywhere(topic, partitions=1)
    metadata = nodes.node(other).metadata([topic])
    epoch = metadata["topics"][topic]["partitions"][0]["leader_epoch"]
    host_endpoint = metadata["brokers"][host]
    topic_id = uuid_bytes(views[other]["id"])

    batch = rawkafka.build_batch([(None, b"x", [])])
    with nodes.node(other).connect() as conn:
        error, leader, endpoints = produce_v10(conn, topic, batch)
    assert error == NOT_LEADER_OR_FOLLOWER
    assert leader == (host, epoch)
    assert endpoints == [(host, *host_endpoint)]

    # The leader itself takes the batch and gives no hint.
    def produce_on_host():
        with nodes.node(host).connect() as conn:
            return produce_v10(conn, topic, batch)

    assert cluster.once_led(produce_on_host, error_of=lambda answer: answer[0]) \
        == (NONE, None, None)

    with nodes.node(other).connect() as conn:
        error, leader, endpoints = fetch_v16(conn, topic_id, epoch)
    assert error == NOT_LEADER_OR_FOLLOWER
    assert leader == (host, epoch)
    assert endpoints == [(host, *host_endpoint)]
    # Fenced on the leader itself (a stale epoch): the hint names the same leader.
    new_epoch = nodes.fence_and_unfence(host, topic, epoch)

    def fenced_fetch():
        with nodes.node(host).connect() as conn:
            answer = fetch_v16(conn, topic_id, epoch)
        assert answer[0] == FENCED_LEADER_EPOCH, answer
        return answer

    _, leader, endpoints = cluster.wait_until(fenced_fetch, timeout_s=10,
                                              what="the old epoch fenced")
    assert leader == (host, new_epoch)
    # The host's listener did not move while it was stopped. (Another node's Metadata is no
    # reference here: it lists only unfenced brokers and may not have seen the unfence yet.)
    assert endpoints == [(host, *host_endpoint)]


def uuid_bytes(text):
    """Kafka's base64 topic id text -> 16 bytes."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
