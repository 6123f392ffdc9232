"""Three nodes, one cluster (issue 7): metadata reaches every node, clients produce and
consume through any node to partitions led by different nodes, a consumer group works
with its coordinator on another node than its partitions, and admin requests sent to a
node that is not the active controller work (Kafka forwards them).

One cluster for the module (cluster.py: three processes on 127.0.0.1, every node broker
and controller, all voters); tests keep apart by unique topic names. Admin requests are
hand-encoded (cluster.py) so the test decides which node receives them: real admin
clients send them to the controller they learn from Metadata.
"""

import time

import pytest
from confluent_kafka import TopicPartition

import clients
import cluster
import rawkafka

OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "6",
}

# Metadata reaches every node within one heartbeat interval; the slack covers polling
# three nodes one after the other on a loaded 2-core machine.
PROPAGATION_SLACK_S = 1.0
RECORDS_PER_PARTITION = 25

NOT_LEADER_OR_FOLLOWER = 6
INVALID_REPLICATION_FACTOR = 38


@pytest.fixture(scope="module")
def three(data_root):
    nodes = cluster.Cluster(3, data_root, overrides=OVERRIDES, name=None)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


def test_cluster_formed(three):
    """Every node lists all three brokers at their advertised addresses, the same cluster
    id (the CLUSTER_ID the nodes were formatted with) and the same active controller."""
    expected = {n.node_id: (n.host, n.broker_port, None) for n in three.nodes}
    image = three.wait_images_equal()
    assert image["brokers"] == expected
    assert image["cluster_id"] == three.cluster_id
    controller = three.active_controller()
    assert controller in three.node_ids()
    for node in three.nodes:  # the same through kafka-python's admin client
        admin = clients.kp_admin(node)
        try:
            described = admin.describe_cluster()
        finally:
            admin.close()
        assert described["cluster_id"] == three.cluster_id
        assert described["controller_id"] == controller
        assert sorted(b["node_id"] for b in described["brokers"]) == [1, 2, 3]


def test_topics_created_through_each_node_are_visible_everywhere(three, topic):
    budget_s = three.heartbeat_interval_ms / 1000 + PROPAGATION_SLACK_S
    seen_ids = set()
    for via in three.node_ids():
        name = f"{topic}-via{via}"
        error, message = three.node(via).create_topic(name, partitions=2)
        assert error == cluster.NONE, f"CreateTopics via node {via}: {error} {message}"
        began = time.monotonic()
        views = three.wait_topic_everywhere(name, partitions=2, timeout_s=budget_s)
        elapsed = time.monotonic() - began
        ids = {view["id"] for view in views.values()}
        assert len(ids) == 1 and None not in ids, f"topic ids differ: {views}"
        seen_ids |= ids
        print(f"topic created via node {via} visible on all nodes after {elapsed * 1000:.0f} ms")
    assert len(seen_ids) == 3
    image = three.wait_images_equal()
    for via in three.node_ids():
        assert f"{topic}-via{via}" in image["topics"]


def test_produce_and_consume_through_any_node(three, topic):
    """A topic with 3 partitions, RF 1, created via node 1: leaders spread over the three
    nodes. confluent-kafka and kcat produce with node 2 as the only bootstrap, confluent
    consumes through node 3 and kcat through node 1: every record in order at the
    offsets it was acknowledged at. A node that does not lead a partition refuses a
    produce to it with NOT_LEADER_OR_FOLLOWER."""
    three.create_topic(1, topic, partitions=3)
    views = three.wait_topic_everywhere(topic, partitions=3)
    leaders = {index: partition["leader"] for index, partition
               in views[1]["partitions"].items()}
    assert sorted(leaders.values()) == [1, 2, 3], f"leaders not spread evenly: {leaders}"

    via = three.node(2)
    count = RECORDS_PER_PARTITION
    records = [{"key": f"c{p}-{i}".encode(), "value": f"confluent:{p}:{i}".encode(),
                "partition": p} for p in range(3) for i in range(count)]
    messages = clients.produce_ok(via, topic, records)
    for p in range(3):
        acked = [m.offset() for m in messages if m.partition() == p]
        assert acked == list(range(count)), f"partition {p} acked at {acked}"
    for p in range(3):
        lines = "".join(f"k{p}-{i}=kcat-{p}-{i}\n" for i in range(count))
        clients.kcat(via, "-P", "-t", topic, "-p", str(p), "-K", "=", input_text=lines)

    for p in range(3):
        expected = [(i, f"c{p}-{i}", f"confluent:{p}:{i}") for i in range(count)]
        expected += [(count + i, f"k{p}-{i}", f"kcat-{p}-{i}") for i in range(count)]
        got = clients.consume(three.node(3), topic, p, 0, 2 * count)
        assert [(m.offset(), m.key().decode(), m.value().decode()) for m in got] == expected
        assert clients.watermarks(three.node(1), topic, p) == (0, 2 * count)
        output = clients.kcat(three.node(1), "-C", "-t", topic, "-p", str(p), "-o",
                              "beginning", "-e", "-q", "-f", "%o %k %s\\n").stdout
        assert output.splitlines() == [f"{o} {k} {v}" for o, k, v in expected]

    batch = rawkafka.build_batch([(b"k", b"stray", [])])
    for p, leader in leaders.items():
        other = next(i for i in three.node_ids() if i != leader)
        with three.node(other).connect() as conn:
            result = rawkafka.produce(conn, topic, p, batch)
        assert result.error_code == NOT_LEADER_OR_FOLLOWER, \
            f"produce to partition {p} (leader {leader}) via node {other}: {result}"
    for p in range(3):
        assert clients.watermarks(three.node(2), topic, p) == (0, 2 * count)


def test_consumer_group_with_coordinator_on_another_node(three, topic, group_members):
    group = f"{topic}-group"

    def coordinator():
        error, node_id, _host, _port = three.node(1).find_coordinator(group)
        return node_id if error == cluster.NONE and node_id >= 0 else None

    coordinator_id = cluster.wait_until(coordinator, 30, what=f"a coordinator for {group}")
    for node_id in three.node_ids():
        error, named, host, port = three.node(node_id).find_coordinator(group)
        assert (error, named) == (cluster.NONE, coordinator_id)
        assert (host, port) == (three.node(named).host, three.node(named).broker_port)
    others = [i for i in three.node_ids() if i != coordinator_id]
    three.create_topic(coordinator_id, topic, assignments={0: [others[0]], 1: [others[1]]})
    views = three.wait_topic_everywhere(topic, partitions=2)
    assert {p: v["leader"] for p, v in views[others[0]]["partitions"].items()} == \
        {0: others[0], 1: others[1]}

    produced = clients.produce_values(three.node(others[0]), topic, "g", {0: 10, 1: 10})
    member = group_members(three.node(others[1]), "m1", group, [topic])
    clients.wait_consumed([member], produced)
    for p in (0, 1):
        offsets = [r.offset for r in member.records() if r.partition == p]
        assert offsets == list(range(10)), f"partition {p} read at {offsets}"
    assert not member.commit_errors, member.commit_errors

    def committed():
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        return [tp.offset for tp in member.call(lambda c: c.committed(tps, timeout=10))]

    assert cluster.wait_until(lambda: committed() == [10, 10], 30, what="commits")
    admin = clients.admin(three.node(others[0]))
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    assert description.coordinator.id == coordinator_id
    assert [m.client_id for m in description.members] == ["m1"]
    member.close()


def test_admin_requests_through_a_node_that_is_not_the_controller(three, topic):
    controller = three.active_controller()
    followers = [i for i in three.node_ids() if i != controller]
    first, second = (three.node(i) for i in followers)

    error, message = first.create_topic(topic, partitions=1)
    assert error == cluster.NONE, f"CreateTopics via follower {first.node_id}: {message}"
    three.wait_topic_everywhere(topic, partitions=1)
    assert second.create_topic(topic, partitions=1)[0] == cluster.TOPIC_ALREADY_EXISTS
    assert first.create_topic(f"{topic}-rf4", replication_factor=4)[0] == \
        INVALID_REPLICATION_FACTOR
    assert three.node(controller).metadata([f"{topic}-rf4"])["topics"][f"{topic}-rf4"][
        "error"] == rawkafka.UNKNOWN_TOPIC_OR_PARTITION

    error, message = second.create_partitions(topic, 3)
    assert error == cluster.NONE, f"CreatePartitions via follower {second.node_id}: {message}"
    views = three.wait_topic_everywhere(topic, partitions=3)
    image = three.wait_images_equal(
        check=lambda image: len(image["topics"].get(topic, {}).get("partitions", {})) == 3)
    assert image["topics"][topic]["id"] == views[controller]["id"]

    assert first.delete_topic(topic) == cluster.NONE
    three.wait_topic_everywhere(topic, present=False)
    image = three.wait_images_equal(check=lambda image: topic not in image["topics"])
    assert second.delete_topic(topic) == rawkafka.UNKNOWN_TOPIC_OR_PARTITION
