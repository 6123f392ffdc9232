"""A consumer group's coordinator follows its `__consumer_offsets` partition (issue 8).

Three nodes; the module runs once with `offsets.topic.replication.factor=1` and once with
3. The group's coordinator is whichever
node leads the group's offsets partition (FindCoordinator names it); the data partitions
the group reads live on the two other nodes, so what is tested here is the coordinator's
move alone.

- test_coordinator_fenced_and_back_keeps_committed_offsets: the coordinator is paused
  past the broker session timeout (fenced: its leaderships end) and resumed. With one
  replica the partition is offline meanwhile and the same node leads it again at a new
  epoch: it unloads and replays the partition. With three, another ISR member takes the
  partition over and the resumed node, which lost the leadership, answers
  NOT_COORDINATOR. Either way whoever coordinates afterwards serves the offsets committed
  before and the group goes on from them; a node that does not coordinate the group
  answers NOT_COORDINATOR.
- test_group_survives_kill_of_its_coordinator: kill -9 of the coordinator while a member
  consumes and commits: another node becomes coordinator, the member carries on there,
  and a new consumer sees exactly the offsets committed (factor 3 only). Run for a
  classic member and for a KIP-848 one (group.protocol=consumer); the KIP-848 group's
  records move with the partition too, so its member keeps its partitions through the
  failover, revoking nothing, and heartbeats on at its epoch. Both tests' factor
  3 runs need the partitions' data replicated: without it the new leader's log is empty.

OffsetFetch v2 is hand-encoded (rawkafka) so the test picks the node it asks.
"""

import pytest
from confluent_kafka import TopicPartition

import clients
import cluster
import rawkafka
from rawkafka import array, int32, string

OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "3",
    # KIP-848 members heartbeat at the broker's interval (Kafka's 5 s would slow the test).
    "group.consumer.min.heartbeat.interval.ms": "500",
    "group.consumer.heartbeat.interval.ms": "500",
    "group.consumer.min.session.timeout.ms": "6000",
    "group.consumer.session.timeout.ms": "6000",
}

OFFSET_FETCH = 9
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
RECORDS = 10
# Fencing takes broker.session.timeout.ms (cluster.SESSION_TIMEOUT_MS) plus a check.
FENCE_WAIT_S = cluster.SESSION_TIMEOUT_MS / 1000 + 10
FAILOVER_TIMEOUT_S = 60


@pytest.fixture(scope="module", params=[1, 3], ids=["offsets-rf1", "offsets-rf3"])
def three(request, data_root):
    overrides = {**OVERRIDES, "offsets.topic.replication.factor": str(request.param)}
    nodes = cluster.Cluster(3, data_root, overrides=overrides, name=None)
    nodes.offsets_replication_factor = request.param
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


def offset_fetch_v2(conn, group, topic, partitions):
    """OffsetFetch v2 of one topic: (group error, {partition: (offset, error)})."""
    body = string(group) + array(
        [string(topic) + array(partitions, int32)], lambda item: item)
    reader = conn.request(OFFSET_FETCH, 2, body)

    def read_partition(r):
        index, offset = r.int32(), r.int64()
        r.string()  # metadata
        return index, (offset, r.int16())

    topics = reader.array(lambda r: (r.string(), dict(r.array(read_partition))))
    error = reader.int16()
    reader.expect_end()
    found = dict(topics).get(topic, {})
    return error, found


def committed_via(node, group, topic):
    """Committed offsets of partitions 0 and 1 as `node` answers, or its error code."""
    with node.connect() as conn:
        error, found = offset_fetch_v2(conn, group, topic, [0, 1])
    if error != cluster.NONE:
        return error
    return [found[p][0] for p in (0, 1)]


def coordinator_of(three, group, via):
    """(error, node id) FindCoordinator answers through node `via`."""
    error, node_id, _host, _port = three.node(via).find_coordinator(group)
    return error, node_id


def wait_coordinator(three, group, via, unlike=None, timeout_s=FAILOVER_TIMEOUT_S):
    def named():
        error, node_id = coordinator_of(three, group, via)
        if error == cluster.NONE and node_id >= 0 and node_id != unlike:
            return node_id
        return None
    return cluster.wait_until(named, timeout_s, what=f"a coordinator for {group}"
                              + (f" other than node {unlike}" if unlike else ""))


def group_with_data_elsewhere(three, topic, group):
    """Finds the group's coordinator and creates `topic` (2 partitions, RF 1) on the two
    other nodes; returns (coordinator id, [other ids])."""
    coordinator_id = wait_coordinator(three, group, via=1)
    others = [i for i in three.node_ids() if i != coordinator_id]
    three.create_topic(others[0], topic, assignments={0: [others[0]], 1: [others[1]]})
    three.wait_topic_everywhere(topic, partitions=2)
    return coordinator_id, others


def committed_by(member, topic):
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    return [tp.offset for tp in member.call(lambda c: c.committed(tps, timeout=10))]


def offsets_read(member, partition):
    return [r.offset for r in member.records() if r.partition == partition]


def test_coordinator_fenced_and_back_keeps_committed_offsets(three, topic, group_members):
    group = f"{topic}-group"
    coordinator_id, others = group_with_data_elsewhere(three, topic, group)
    produced = clients.produce_values(three.node(others[0]), topic, "a", {0: RECORDS,
                                                                         1: RECORDS})
    member = group_members(three.node(others[1]), "m1", group, [topic],
                           **{"bootstrap.servers": three.bootstrap})
    clients.wait_consumed([member], produced)
    assert not member.commit_errors, member.commit_errors
    cluster.wait_until(lambda: committed_by(member, topic) == [RECORDS, RECORDS], 30,
                       what="the first commits")
    member.close()
    assert committed_via(three.node(coordinator_id), group, topic) == [RECORDS, RECORDS]
    for other in others:
        assert committed_via(three.node(other), group, topic) == NOT_COORDINATOR, \
            f"node {other} does not lead the group's offsets partition"

    # Fenced: the coordinator's leaderships end while it cannot act.
    three.pause(coordinator_id)
    try:
        def moved_off():
            error, node_id = coordinator_of(three, group, via=others[0])
            return error != cluster.NONE or node_id != coordinator_id
        cluster.wait_until(moved_off, FENCE_WAIT_S,
                           what=f"node {coordinator_id} no longer named coordinator")
    finally:
        three.resume(coordinator_id)

    now = wait_coordinator(three, group, via=others[0])
    print(f"coordinator before: node {coordinator_id}, after fencing: node {now}")
    if three.offsets_replication_factor == 1:
        assert now == coordinator_id, "one replica: nobody else can lead the partition"
    else:
        # The resumed node learns it lost the partition and resigns the group.
        cluster.wait_until(
            lambda: committed_via(three.node(coordinator_id), group, topic)
            == NOT_COORDINATOR,
            FAILOVER_TIMEOUT_S, what=f"node {coordinator_id} resigned the group")

    def reloaded():
        answer = committed_via(three.node(now), group, topic)
        if answer in (COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR):
            return None  # still loading, or the image has not reached it yet
        return answer
    assert cluster.wait_until(reloaded, FAILOVER_TIMEOUT_S, what="offsets served again") \
        == [RECORDS, RECORDS], "committed offsets lost when the coordinator moved"

    # The group goes on from what was committed: a new member reads only new records.
    more = clients.produce_values(three.node(others[0]), topic, "b", {0: 5, 1: 5})
    second = group_members(three.node(others[1]), "m2", group, [topic],
                           **{"bootstrap.servers": three.bootstrap})
    clients.wait_consumed([second], more)
    for p in (0, 1):
        assert offsets_read(second, p) == list(range(RECORDS, RECORDS + 5)), \
            f"partition {p} was not resumed from its committed offset"
    cluster.wait_until(lambda: committed_by(second, topic) == [RECORDS + 5] * 2, 30,
                       what="commits after the coordinator came back")
    second.close()


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_group_survives_kill_of_its_coordinator(three, topic, group_members, protocol):
    if three.offsets_replication_factor == 1:
        pytest.skip("one replica: a killed coordinator's partition has no other leader")
    group = f"{topic}-group"
    coordinator_id, others = group_with_data_elsewhere(three, topic, group)
    produced = clients.produce_values(three.node(others[0]), topic, "a", {0: RECORDS,
                                                                         1: RECORDS})
    member = group_members(three.node(others[1]), "m1", group, [topic],
                           **{"bootstrap.servers": three.bootstrap,
                              "group.protocol": protocol})
    clients.wait_consumed([member], produced)
    cluster.wait_until(lambda: committed_by(member, topic) == [RECORDS, RECORDS], 30,
                       what="the first commits")
    mark = member.event_count()
    three.kill(coordinator_id)
    try:
        new = wait_coordinator(three, group, via=others[0], unlike=coordinator_id)
        print(f"coordinator node {coordinator_id} killed; node {new} took over")

        def served():
            answer = committed_via(three.node(new), group, topic)
            if answer in (COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR):
                return None  # still loading, or the image has not reached it yet
            return answer
        assert cluster.wait_until(served, FAILOVER_TIMEOUT_S,
                                  what="offsets on the new coordinator") \
            == [RECORDS, RECORDS], "committed offsets lost in the failover"

        # The same member carries on with the new coordinator.
        more = clients.produce_values(three.node(others[0]), topic, "b", {0: 5, 1: 5})
        clients.wait_consumed([member], {**produced, **more})
        for p in (0, 1):
            assert offsets_read(member, p) == list(range(RECORDS + 5)), \
                f"partition {p} read at {offsets_read(member, p)}"
        cluster.wait_until(lambda: committed_by(member, topic) == [RECORDS + 5] * 2, 30,
                           what="commits through the new coordinator")
        if protocol == "consumer":
            assert not member.events(mark), \
                f"the member's partitions moved in the failover: {member.events(mark)}"
        member.close()

        fresh = clients.consumer(three.node(others[1]), **{
            "bootstrap.servers": three.bootstrap, "group.id": group,
            "enable.auto.commit": False})
        try:
            tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
            seen = [tp.offset for tp in fresh.committed(tps, timeout=30)]
        finally:
            fresh.close()
        assert seen == [RECORDS + 5] * 2
    finally:
        three.restart(coordinator_id)
