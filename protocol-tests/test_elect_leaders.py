"""Leader elections and controlled shutdown on a three-node cluster (issue 8).

ElectLeaders through confluent-kafka's AdminClient (librdkafka sends v2, preferred):
ELECTION_NOT_NEEDED for partitions led by their preferred replica,
UNKNOWN_TOPIC_OR_PARTITION for a topic or partition that does not exist.

SIGTERM (Kafka's controlled shutdown): the node asks the controller to move its
leaderships away and fences itself before it exits, with exit code 0. The cluster's
`broker.session.timeout.ms` is long (60 s) here, so leadership that moved within a few
seconds moved because the node asked, not because the controller fenced a silent broker.
"""

import time

import pytest
from confluent_kafka import ElectionType, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

import clients

PARTITIONS = 6
# Far above the time the checks allow, so only the controlled shutdown can explain them.
SESSION_TIMEOUT_MS = 60_000
# The leaderships must have moved (and the node left the broker list) this soon after
# the SIGTERM'd process exited: an election among the survivors, if it was the active
# controller, plus metadata propagation.
MOVED_WITHIN_S = 10.0
ADMIN_TIMEOUT_S = 30.0

ELECTION_NOT_NEEDED = 84
UNKNOWN_TOPIC_OR_PARTITION = 3
PREFERRED_LEADER_NOT_AVAILABLE = 80


def rf3_topic(nodes, name):
    """Creates `name` with PARTITIONS partitions on all three nodes; waits until every
    node shows it with every partition led by its preferred replica and a full ISR."""
    error, message = nodes.node(1).create_topic(name, partitions=PARTITIONS,
                                                replication_factor=3)
    assert error == 0, f"CreateTopics: {error} {message}"

    def settled():
        views = nodes.wait_topic_everywhere(name, partitions=PARTITIONS)
        for node_id, view in views.items():
            for index, partition in view["partitions"].items():
                assert partition["leader"] == partition["replicas"][0], (node_id, index,
                                                                         partition)
                assert sorted(partition["isr"]) == [1, 2, 3], (node_id, index, partition)
        return views

    return clients.wait_for(settled, timeout_s=30, what=f"{name} settled")


def elect(nodes, partitions, election=ElectionType.PREFERRED):
    """{(topic, partition): error code (0 for none)} from AdminClient.elect_leaders."""
    admin = AdminClient({"bootstrap.servers": nodes.bootstrap})
    # (confluent-kafka 2.16 refuses the request_timeout/operation_timeout keywords here.)
    future = admin.elect_leaders(election, [TopicPartition(t, p) for t, p in partitions])
    results = future.result(timeout=ADMIN_TIMEOUT_S + 5)
    codes = {}
    for tp, error in results.items():
        # None, a KafkaError, or a KafkaException wrapping one.
        if isinstance(error, KafkaException):
            error = error.args[0]
        codes[(tp.topic, tp.partition)] = 0 if error is None else error.code()
    return codes


def test_elect_leaders_answers_per_partition(make_cluster, topic):
    nodes = make_cluster(3, session_timeout_ms=SESSION_TIMEOUT_MS)
    rf3_topic(nodes, topic)
    asked = [(topic, p) for p in range(PARTITIONS)] + [(topic, PARTITIONS), (f"{topic}-none", 0)]
    codes = elect(nodes, asked)
    expected = {(topic, p): ELECTION_NOT_NEEDED for p in range(PARTITIONS)}
    expected[(topic, PARTITIONS)] = UNKNOWN_TOPIC_OR_PARTITION
    expected[(f"{topic}-none", 0)] = UNKNOWN_TOPIC_OR_PARTITION
    assert codes == expected
    # Nothing moved: the same leaders at the same epochs everywhere.
    image = nodes.wait_images_equal()
    for index, partition in image["topics"][topic]["partitions"].items():
        assert partition["leader"] == partition["replicas"][0], (index, partition)


@pytest.mark.parametrize("role", ["active-controller", "other-voter"])
def test_sigterm_moves_every_leadership_away_before_exiting(make_cluster, topic, role):
    """The SIGTERM'd node is the active controller (it proposes its own shutdown, then a
    new controller is elected) or another voter (it forwards)."""
    nodes = make_cluster(3, session_timeout_ms=SESSION_TIMEOUT_MS)
    views = rf3_topic(nodes, topic)
    before = views[1]["partitions"]
    led = {}
    for index, partition in before.items():
        led.setdefault(partition["leader"], []).append(index)
    controller = nodes.active_controller()
    candidates = [n for n in led if (n == controller) == (role == "active-controller")]
    assert candidates, f"no partition led by a {role}: {before}"
    victim = max(candidates, key=lambda node_id: len(led[node_id]))
    survivors = [n for n in nodes.node_ids() if n != victim]

    began = time.monotonic()
    code = nodes.stop(victim)
    stopped_s = time.monotonic() - began
    assert code == 0, f"node {victim} exited with {code}"
    print(f"node {victim} (leading {len(led[victim])} of {PARTITIONS} partitions) stopped "
          f"in {stopped_s * 1000:.0f} ms")

    def moved():
        for node_id in survivors:
            metadata = nodes.node(node_id).metadata([topic])
            assert victim not in metadata["brokers"], f"node {node_id} still lists {victim}"
            partitions = metadata["topics"][topic]["partitions"]
            for index, partition in partitions.items():
                assert partition["leader"] in survivors, (node_id, index, partition)
                assert victim not in partition["isr"], (node_id, index, partition)
                old = before[index]
                if old["leader"] == victim:
                    assert partition["leader_epoch"] == old["leader_epoch"] + 1, \
                        (node_id, index, old, partition)
                else:
                    assert partition["leader"] == old["leader"], (node_id, index, partition)
                    assert partition["leader_epoch"] == old["leader_epoch"], \
                        (node_id, index, old, partition)
        return True

    clients.wait_for(moved, timeout_s=MOVED_WITHIN_S, what="leaderships moved off the victim")
    moved_s = time.monotonic() - began
    assert moved_s < SESSION_TIMEOUT_MS / 1000, "moved only as late as a session fencing"
    print(f"every leadership on the survivors within {moved_s * 1000:.0f} ms of the SIGTERM")
    log = open(nodes.node(victim).stderr_path, encoding="utf-8", errors="replace").read()
    assert "controlled shutdown: leaderships moved, broker fenced" in log, log[-3000:]

    # Restarted, it is listed again. A preferred election gives its partitions back if it
    # has rejoined their ISR, and answers PREFERRED_LEADER_NOT_AVAILABLE while it has not.
    nodes.restart(victim)
    asked = [(topic, index) for index in led[victim]]
    codes = elect(nodes, asked)
    assert all(code in (0, PREFERRED_LEADER_NOT_AVAILABLE) for code in codes.values()), codes

    # Only the controller has surely applied the election when it answers; a survivor's
    # image follows.
    def image_agrees():
        image = nodes.node(survivors[0]).metadata([topic])["topics"][topic]["partitions"]
        for key, code in codes.items():
            partition = image[key[1]]
            if code == 0:
                assert partition["leader"] == victim or victim in partition["isr"], \
                    (key, partition)
        return True

    clients.wait_for(image_agrees, timeout_s=10, what="the election in a survivor's image")
