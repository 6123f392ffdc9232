"""Partition reassignments on a three-node cluster (issue 11, KIP-455).

AlterPartitionReassignments v0 and ListPartitionReassignments v0 in raw frames (neither
kafka-python 2.3 nor confluent-kafka 2.16 has them). A replication-factor-1 partition with
records on node 1 moves to nodes [2, 3]. Node 3 is down at first, so the move stays
under way (node 3 cannot join the ISR) and List shows it with its adding and removing
replicas; a cancel reverts it (node 2's new copy is deleted); the move again, node 3
back, completes: replicas [2, 3], node 2 leads, the records are on both at the same
offsets, byte for byte, and node 1's directory is gone. Errors answered as Kafka does.
"""

import os

import clients
import cluster
import rawkafka
from cluster import compact_array
from rawkafka import int32, uvarint

ALTER_PARTITION_REASSIGNMENTS = 45
LIST_PARTITION_REASSIGNMENTS = 46
TAGS = rawkafka.EMPTY_TAGGED_FIELDS

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REPLICA_ASSIGNMENT = 39
NO_REASSIGNMENT_IN_PROGRESS = 85
RECORDS = 300
SETTLE_S = 30


def alter_reassignments(conn, moves, timeout_ms=10000):
    """AlterPartitionReassignments v0. moves: {(topic, partition): [ids] or None}.
    Returns (top-level error, {(topic, partition): (error, message)})."""
    by_topic = {}
    for (topic, partition), replicas in moves.items():
        by_topic.setdefault(topic, []).append((partition, replicas))

    def encode_partition(item):
        partition, replicas = item
        return int32(partition) + compact_array(replicas, int32) + TAGS

    def encode_topic(item):
        name, partitions = item
        return rawkafka.compact_string(name) + compact_array(partitions,
                                                             encode_partition) + TAGS

    body = int32(timeout_ms) + compact_array(list(by_topic.items()), encode_topic) + TAGS
    reader = conn.request(ALTER_PARTITION_REASSIGNMENTS, 0, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms
    error = reader.int16()
    reader.compact_string()  # error_message

    def read_partition(r):
        index, code, message = r.int32(), r.int16(), r.compact_string()
        r.skip_tagged_fields()
        return index, (code, message)

    def read_topic(r):
        name = r.compact_string()
        partitions = r.compact_array(read_partition)
        r.skip_tagged_fields()
        return [((name, index), answer) for index, answer in partitions]

    answers = {}
    for topic in reader.compact_array(read_topic):
        answers.update(topic)
    reader.skip_tagged_fields()
    reader.expect_end()
    return error, answers


def list_reassignments(conn, topics=None):
    """ListPartitionReassignments v0. topics: {name: [partitions]} or None for all.
    Returns {(topic, partition): (replicas, adding, removing)}."""
    def encode_topic(item):
        name, partitions = item
        return rawkafka.compact_string(name) + compact_array(partitions, int32) + TAGS

    items = None if topics is None else list(topics.items())
    body = int32(10000) + compact_array(items, encode_topic) + TAGS
    reader = conn.request(LIST_PARTITION_REASSIGNMENTS, 0, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms
    assert reader.int16() == 0
    reader.compact_string()

    def ids(r):
        return cluster.read_int32_compact_array(r)

    def read_partition(r):
        index = r.int32()
        entry = (ids(r), ids(r), ids(r))
        r.skip_tagged_fields()
        return index, entry

    def read_topic(r):
        name = r.compact_string()
        partitions = r.compact_array(read_partition)
        r.skip_tagged_fields()
        return [((name, index), entry) for index, entry in partitions]

    listed = {}
    for topic in reader.compact_array(read_topic):
        listed.update(topic)
    reader.skip_tagged_fields()
    reader.expect_end()
    return listed


def partition_state(nodes, topic, on):
    """(replicas, isr, leader) of topic-0 as node `on` sees it."""
    view = nodes.node(on).metadata([topic])["topics"][topic]["partitions"][0]
    return view["replicas"], sorted(view["isr"]), view["leader"]


def wait_state(nodes, topic, expected, on=(1, 2)):
    def settled():
        return all(partition_state(nodes, topic, node) == expected for node in on)
    clients.wait_for(settled, timeout_s=SETTLE_S, what=f"{topic}-0 at {expected}")


def partition_dir(nodes, node_id, topic):
    return os.path.join(nodes.node(node_id).data_dir, f"{topic}-0")


def segment_bytes(nodes, node_id, topic):
    with open(os.path.join(partition_dir(nodes, node_id, topic),
                           "00000000000000000000.log"), "rb") as segment:
        return segment.read()


def test_a_partition_moves_to_two_new_brokers_with_its_records(make_cluster, topic):
    nodes = make_cluster(3)
    error, message = nodes.node(1).create_topic(topic, assignments={0: [1]})
    assert error == 0, message
    nodes.wait_topic_everywhere(topic, partitions=1)
    records = [{"key": f"k{i}".encode(), "value": f"value-{i}".encode() * 20}
               for i in range(RECORDS)]
    clients.produce_ok(nodes.node(1), topic, records, acks="all")
    original = segment_bytes(nodes, 1, topic)

    # Node 3 down: the move to [2, 3] stays under way.
    nodes.stop(3)
    moves = {(topic, 0): [2, 3]}
    error, answers = nodes.node(2).call(alter_reassignments, moves)
    assert (error, answers) == (0, {(topic, 0): (0, None)})
    wait_state(nodes, topic, ([2, 3, 1], [1, 2], 1))
    for on in (1, 2):
        listed = nodes.node(on).call(list_reassignments)
        assert listed == {(topic, 0): ([2, 3, 1], [2, 3], [1])}, on
        named = nodes.node(on).call(list_reassignments, {topic: [0, 5], "no-such": [0]})
        assert named == listed, on
    assert os.path.isdir(partition_dir(nodes, 2, topic))

    # Cancel: back to [1]; node 2's new copy goes, node 1 keeps its records.
    error, answers = nodes.node(1).call(alter_reassignments, {(topic, 0): None})
    assert (error, answers) == (0, {(topic, 0): (0, None)})
    wait_state(nodes, topic, ([1], [1], 1))
    assert nodes.node(2).call(list_reassignments) == {}
    clients.wait_for(lambda: not os.path.exists(partition_dir(nodes, 2, topic)),
                     timeout_s=SETTLE_S, what="node 2's cancelled copy deleted")
    error, answers = nodes.node(1).call(alter_reassignments, {(topic, 0): None})
    assert answers == {(topic, 0): (NO_REASSIGNMENT_IN_PROGRESS, None)}

    # Again, and node 3 back: the move completes and node 1 lets go.
    error, answers = nodes.node(1).call(alter_reassignments, moves)
    assert (error, answers) == (0, {(topic, 0): (0, None)})
    node3 = nodes.node(3)
    node3.launch()
    node3.wait_answers()
    wait_state(nodes, topic, ([2, 3], [2, 3], 2), on=(1, 2, 3))
    assert nodes.node(3).call(list_reassignments) == {}
    clients.wait_for(lambda: not os.path.exists(partition_dir(nodes, 1, topic)),
                     timeout_s=SETTLE_S, what="node 1's partition directory deleted")

    # The records, at the same offsets, from the new leader; the same bytes on both.
    consumed = clients.consume(nodes.node(2), topic, 0, 0, RECORDS)
    assert [(m.offset(), m.key(), m.value()) for m in consumed] == [
        (i, r["key"], r["value"]) for i, r in enumerate(records)]
    for node_id in (2, 3):
        clients.wait_for(lambda: segment_bytes(nodes, node_id, topic) == original,
                         timeout_s=SETTLE_S, what=f"node {node_id}'s segment = node 1's")


def test_bad_reassignments_are_answered_as_kafka_does(make_cluster, topic):
    nodes = make_cluster(3)
    error, message = nodes.node(1).create_topic(topic, assignments={0: [1, 2]})
    assert error == 0, message
    nodes.wait_topic_everywhere(topic, partitions=1)
    moves = {
        (topic, 0): [1, 1],
        (topic, 1): [1],
        ("no-such-topic", 0): [1],
    }
    error, answers = nodes.node(3).call(alter_reassignments, moves)
    assert error == 0
    codes = {key: code for key, (code, _message) in answers.items()}
    assert codes == {(topic, 0): INVALID_REPLICA_ASSIGNMENT,
                     (topic, 1): UNKNOWN_TOPIC_OR_PARTITION,
                     ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION}
    assert "more than once" in answers[(topic, 0)][1]
    for bad in ([], [7], [-1]):
        error, answers = nodes.node(2).call(alter_reassignments, {(topic, 0): bad})
        assert answers[(topic, 0)][0] == INVALID_REPLICA_ASSIGNMENT, bad
    error, answers = nodes.node(2).call(alter_reassignments, {(topic, 0): None})
    assert answers == {(topic, 0): (NO_REASSIGNMENT_IN_PROGRESS, None)}
    # The current replicas: nothing to do, nothing listed.
    error, answers = nodes.node(2).call(alter_reassignments, {(topic, 0): [1, 2]})
    assert answers == {(topic, 0): (0, None)}
    assert nodes.node(1).call(list_reassignments) == {}
    assert partition_state(nodes, topic, 3) == ([1, 2], [1, 2], 1)


INVALID_REQUEST = 42


def test_more_reassignments_than_the_per_request_limit_are_refused(start_broker, topic):
    import conftest
    broker = start_broker("reassign-limit", {"partitions.per.request.max": "2"})
    clients.create_topic(broker, topic, partitions=2)
    with rawkafka.Connection(conftest.HOST, broker.port) as conn:
        moves = {(topic, index): None for index in range(3)}
        error, answers = alter_reassignments(conn, moves)
        assert error == INVALID_REQUEST
        assert {key: code for key, (code, _m) in answers.items()} == {
            key: INVALID_REQUEST for key in moves}
        # Within the limit the entries are answered one by one.
        error, answers = alter_reassignments(conn, {(topic, 0): None, (topic, 9): None})
        assert error == 0
        assert {key: code for key, (code, _m) in answers.items()} == {
            (topic, 0): NO_REASSIGNMENT_IN_PROGRESS, (topic, 9): UNKNOWN_TOPIC_OR_PARTITION}
    broker.stop()
