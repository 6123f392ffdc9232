"""KIP-848 consumer groups (group.protocol=consumer) with real clients.

confluent-kafka's librdkafka speaks ConsumerGroupHeartbeat v1: the broker assigns
partitions with its `uniform` or `range` assignor, and members revoke and take partitions
one heartbeat at a time. The brokers run with a 500 ms heartbeat interval and a 6 s session
(Kafka's defaults are 5 s and 45 s, which would make each test slow).

Members (`clients.GroupMember`) commit synchronously what they poll before recording it,
and records are produced only while the group is steady, so each record must be consumed
exactly once, by the member holding its partition; a partition that moves resumes at the
offset its previous owner committed.
"""

import base64
import time
import uuid

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupType, KafkaException

import clients
import cluster
import rawkafka
from test_groups import (
    assert_exactly_once,
    assert_partitions_read_in_order,
    by_name,
    every_partition,
    revoked_since,
    snapshot,
)

HEARTBEAT_MS = 500
SESSION_MS = 6000
BROKER_OVERRIDES = {
    "group.consumer.min.heartbeat.interval.ms": str(HEARTBEAT_MS),
    "group.consumer.heartbeat.interval.ms": str(HEARTBEAT_MS),
    "group.consumer.min.session.timeout.ms": str(SESSION_MS),
    "group.consumer.session.timeout.ms": str(SESSION_MS),
    "offsets.topic.num.partitions": "5",
}
PARTITIONS = 4
ALL = frozenset(range(PARTITIONS))
PER_PARTITION = 5
TIMEOUT_S = 30

CONSUMER_GROUP_HEARTBEAT = 68
CONSUMER_GROUP_DESCRIBE = 69
OFFSET_COMMIT = 8
UNSUPPORTED_VERSION = 35
INVALID_REQUEST = 42
UNKNOWN_MEMBER_ID = 25
GROUP_ID_NOT_FOUND = 69
# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
NOT_LOADED = (14, 15, 16)
FENCED_MEMBER_EPOCH = 110
UNSUPPORTED_ASSIGNOR = 112
STALE_MEMBER_EPOCH = 113
INVALID_REGULAR_EXPRESSION = 128


def member(group_members, broker, name, group, topics, assignor=None, **config):
    extra = {"group.protocol": "consumer", **config}
    if assignor is not None:
        extra["group.remote.assignor"] = assignor
    return group_members(broker, name, group, topics, **extra)


def check_no_errors(*members):
    for m in members:
        assert not m.commit_errors, f"{m.name}: {m.commit_errors}"
        assert not m.errors, f"{m.name}: {m.errors}"


# ---------------------------------------------------------------- raw wire


def heartbeat_v1(conn, group, member_id, epoch, topics=None, regex=None, owned=None,
                 rebalance_timeout_ms=30000, assignor=None, instance_id=None):
    """ConsumerGroupHeartbeat v1; returns (error, message, member_id, epoch, interval,
    assignment {topic uuid: [partitions]} or None)."""
    def topic_partitions(item):
        topic_id, partitions = item
        return (topic_id.bytes + rawkafka.uvarint(len(partitions) + 1)
                + b"".join(rawkafka.int32(p) for p in partitions)
                + rawkafka.EMPTY_TAGGED_FIELDS)

    def compact_array(items, encode):
        if items is None:
            return rawkafka.uvarint(0)
        return rawkafka.uvarint(len(items) + 1) + b"".join(encode(i) for i in items)

    body = (rawkafka.compact_string(group) + rawkafka.compact_string(member_id)
            + rawkafka.int32(epoch) + rawkafka.compact_string(instance_id)
            + rawkafka.compact_string(None) + rawkafka.int32(rebalance_timeout_ms)
            + compact_array(topics, rawkafka.compact_string)
            + rawkafka.compact_string(regex) + rawkafka.compact_string(assignor)
            + compact_array(None if owned is None else sorted(owned.items()), topic_partitions)
            + rawkafka.EMPTY_TAGGED_FIELDS)
    r = conn.request(CONSUMER_GROUP_HEARTBEAT, 1, body, flexible_request=True,
                     flexible_response=True)
    r.int32()  # throttle
    error, message = r.int16(), r.compact_string()
    answered_id, answered_epoch, interval = r.compact_string(), r.int32(), r.int32()
    assignment = None
    if r.int8() >= 0:
        def read_topic(reader):
            topic_id = uuid.UUID(bytes=reader.take(16))
            partitions = reader.compact_array(lambda x: x.int32())
            reader.skip_tagged_fields()
            return topic_id, partitions
        assignment = dict(r.compact_array(read_topic))
        r.skip_tagged_fields()
    r.skip_tagged_fields()
    r.expect_end()
    return error, message, answered_id, answered_epoch, interval, assignment


def offset_commit(conn, version, group, member_id, epoch, topic, partition, offset):
    """OffsetCommit v8 or v9 of one offset; returns the partition's error code."""
    body = (rawkafka.compact_string(group) + rawkafka.int32(epoch)
            + rawkafka.compact_string(member_id) + rawkafka.compact_string(None)
            + rawkafka.uvarint(2) + rawkafka.compact_string(topic) + rawkafka.uvarint(2)
            + rawkafka.int32(partition) + rawkafka.int64(offset) + rawkafka.int32(-1)
            + rawkafka.compact_string("") + rawkafka.EMPTY_TAGGED_FIELDS
            + rawkafka.EMPTY_TAGGED_FIELDS + rawkafka.EMPTY_TAGGED_FIELDS)
    r = conn.request(OFFSET_COMMIT, version, body, flexible_request=True,
                     flexible_response=True)
    r.int32()
    topics = r.compact_array(lambda t: (t.compact_string(), t.compact_array(
        lambda p: (p.int32(), p.int16(), p.skip_tagged_fields())), t.skip_tagged_fields()))
    [(_name, [(_index, code, _tags)], _tags2)] = topics
    return code


def describe_v0(conn, group):
    """ConsumerGroupDescribe v0 of one group: (error, state, group epoch, assignment epoch,
    assignor, {member id: (subscribed names, regex, {topic name: assigned partitions})})."""
    def read_assignment(r):
        def read_topic(t):
            t.take(16)
            name, partitions = t.compact_string(), t.compact_array(lambda x: x.int32())
            t.skip_tagged_fields()
            return name, partitions
        topics = dict(r.compact_array(read_topic))
        r.skip_tagged_fields()
        return topics

    def read_member(r):
        member_id = r.compact_string()
        r.compact_string(), r.compact_string(), r.int32()  # instance, rack, epoch
        r.compact_string(), r.compact_string()  # client id, host
        names = r.compact_array(lambda x: x.compact_string())
        regex = r.compact_string()
        assigned = read_assignment(r)
        read_assignment(r)  # target
        r.skip_tagged_fields()
        return member_id, (names, regex, assigned)

    def read_group(r):
        error, _message, _group = r.int16(), r.compact_string(), r.compact_string()
        state, epoch, assignment_epoch = r.compact_string(), r.int32(), r.int32()
        assignor = r.compact_string()
        members = dict(r.compact_array(read_member))
        r.int32()  # authorized operations
        r.skip_tagged_fields()
        return error, state, epoch, assignment_epoch, assignor, members

    body = (rawkafka.uvarint(2) + rawkafka.compact_string(group) + rawkafka.boolean(False)
            + rawkafka.EMPTY_TAGGED_FIELDS)
    r = conn.request(CONSUMER_GROUP_DESCRIBE, 0, body, flexible_request=True,
                     flexible_response=True)
    r.int32()
    [described] = r.compact_array(read_group)
    return described


def coordinator_conn(broker):
    """A raw connection to the broker (a single broker coordinates every group)."""
    host, port = broker.bootstrap.split(":")
    return rawkafka.Connection(host, int(port))


def topic_id_of(broker, topic):
    with coordinator_conn(broker) as conn:
        text = cluster.metadata_v12(conn, [topic])["topics"][topic]["id"]
    return uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=="))


# ---------------------------------------------------------------- tests


def test_api_versions_list_the_consumer_group_apis(broker):
    with coordinator_conn(broker) as conn:
        error, keys, _throttle = rawkafka.api_versions_v3(conn)
    apis = {key: (low, high) for key, low, high in keys}
    assert error == 0
    assert apis[CONSUMER_GROUP_HEARTBEAT] == (0, 1)
    assert apis[CONSUMER_GROUP_DESCRIBE] == (0, 1)


def test_the_consumer_protocol_can_be_switched_off(start_broker):
    off = start_broker("classic-only", {"group.coordinator.rebalance.protocols": "classic"})
    with coordinator_conn(off) as conn:
        apis = {key for key, _low, _high in rawkafka.api_versions_v3(conn)[1]}
        assert CONSUMER_GROUP_HEARTBEAT not in apis and CONSUMER_GROUP_DESCRIBE not in apis
        answer = heartbeat_v1(conn, "g-off", str(uuid.uuid4()), 0, topics=["t"], owned={})
    assert answer[0] == UNSUPPORTED_VERSION


@pytest.mark.parametrize("assignor", ["uniform", "range"])
def test_members_join_and_leave(broker, topic, group_members, assignor):
    """One member takes all; a second and third join and the partitions spread out, each
    member revoking only what moves; one leaves and its partitions move to the others.
    Every record is consumed exactly once throughout."""
    clients.create_topic(broker, topic, PARTITIONS)
    group = f"{topic}-group"
    everything = {}

    a = member(group_members, broker, "a", group, [topic], assignor)
    owned = clients.wait_balanced([a], topic, PARTITIONS)
    assert owned[a] == ALL

    before, marks, _ = snapshot([a], topic)
    b = member(group_members, broker, "b", group, [topic], assignor)
    owned = clients.wait_balanced([a, b], topic, PARTITIONS)
    assert sorted(len(parts) for parts in owned.values()) == [2, 2]
    # Incremental: a gives up exactly what b gets, and nothing is lost.
    assert revoked_since(a, topic, marks[a]) == owned[b]
    assert not [e for e in a.events(marks[a]) if e[0] == "lost"]
    if assignor == "range":
        first, second = sorted([a, b], key=lambda m: m.member_id)
        assert (owned[first], owned[second]) == ({0, 1}, {2, 3}), by_name(owned)

    batch = clients.produce_values(broker, topic, "two", every_partition(PER_PARTITION))
    everything.update(batch)
    clients.wait_consumed([a, b], batch)
    assert_exactly_once({"a": a.records(), "b": b.records()}, batch, by_name(owned))

    c = member(group_members, broker, "c", group, [topic], assignor)
    owned = clients.wait_balanced([a, b, c], topic, PARTITIONS)
    assert sorted(len(parts) for parts in owned.values()) == [1, 1, 2]
    batch = clients.produce_values(broker, topic, "three", every_partition(PER_PARTITION))
    everything.update(batch)
    clients.wait_consumed([a, b, c], batch)
    assert_exactly_once({m.name: m.records() for m in (a, b, c)}, batch, by_name(owned))

    left = owned[c]
    before, marks, _ = snapshot([a, b], topic)
    c.close()
    owned = clients.wait_balanced([a, b], topic, PARTITIONS)
    assert left <= owned[a] | owned[b]
    if assignor == "uniform":
        # Sticky: the members that stay keep theirs and only gain the leaver's.
        assert not revoked_since(a, topic, marks[a]) and not revoked_since(b, topic, marks[b])

    batch = clients.produce_values(broker, topic, "after-leave", every_partition(PER_PARTITION))
    everything.update(batch)
    clients.wait_consumed([a, b], batch)

    records = {m.name: m.records() for m in (a, b, c)}
    assert_exactly_once(records, everything)
    assert_partitions_read_in_order(broker, topic, records, everything)
    check_no_errors(a, b)
    # librdkafka makes its member ids (KIP-1082); the broker kept them.
    ids = {m.member_id for m in (a, b, c)}
    assert len(ids) == 3 and all(ids)


def test_a_regex_subscription_follows_new_topics(broker, topic, group_members):
    """librdkafka sends a ^-prefixed subscription as SubscribedTopicRegex: the broker
    subscribes the member to every matching topic, including one created later."""
    first, second, other = f"{topic}-r1", f"{topic}-r2", f"{topic}-x"
    for name in (first, other):
        clients.create_topic(broker, name, 2)
    group = f"{topic}-group"
    pattern = f"^{topic}-r[0-9]+"
    a = member(group_members, broker, "a", group, [pattern])
    clients.wait_for(lambda: a.partitions(first) == {0, 1}, TIMEOUT_S,
                     what="the regex's first topic to be assigned")
    assert not a.partitions(other)
    clients.create_topic(broker, second, 3)
    clients.wait_for(lambda: a.partitions(second) == {0, 1, 2}, TIMEOUT_S,
                     what="a topic created later that matches to be assigned")
    batch = clients.produce_values(broker, second, "late", {0: 2, 1: 2, 2: 2})
    clients.wait_consumed([a], batch)
    assert not a.partitions(other)
    # The broker resolved the pattern: the member subscribed by regex, not by names.
    with coordinator_conn(broker) as conn:
        error, state, *_, members = describe_v0(conn, group)
    assert (error, state) == (0, "Stable")
    [(names, regex, assigned)] = members.values()
    # librdkafka joins its subscription's patterns as (p1)|(p2)...
    assert (names, regex) == ([], f"({pattern})"), (names, regex)
    assert assigned == {first: [0, 1], second: [0, 1, 2]}
    check_no_errors(a)


def test_a_static_member_restarts_into_its_own_partitions(broker, topic, group_members):
    """A static member's close is a temporary leave (epoch -2): its partitions wait for it
    (the other member is not given them) and its restart under a new member id takes
    them back without moving anything else."""
    clients.create_topic(broker, topic, PARTITIONS)
    group = f"{topic}-group"
    a = member(group_members, broker, "a", group, [topic])
    b = member(group_members, broker, "static-b", group, [topic],
               **{"group.instance.id": f"{group}-b"})
    owned = clients.wait_balanced([a, b], topic, PARTITIONS)
    first = clients.produce_values(broker, topic, "first", every_partition(PER_PARTITION))
    clients.wait_consumed([a, b], first)

    mark, b_id = a.event_count(), b.member_id
    b.close()
    # Three heartbeats of a: had b's partitions been freed, a would have them by now. Well
    # inside b's 6 s session, so its restart below still finds its place.
    time.sleep(3 * HEARTBEAT_MS / 1000)
    assert a.partitions(topic) == owned[a], "a took the away static member's partitions"
    b_again = member(group_members, broker, "static-b-again", group, [topic],
                     **{"group.instance.id": f"{group}-b"})
    clients.wait_for(lambda: b_again.partitions(topic) == owned[b], TIMEOUT_S,
                     what="the restarted static member to get its partitions back")
    assert b_again.member_id != b_id
    second = clients.produce_values(broker, topic, "second", every_partition(PER_PARTITION))
    clients.wait_consumed([a, b_again], second)
    owners = {"a": owned[a], "static-b": owned[b], "static-b-again": owned[b]}
    assert_exactly_once({m.name: m.records() for m in (a, b, b_again)},
                        {**first, **second}, owners)
    assert a.events(mark) == [], f"a saw a rebalance: {a.events(mark)}"
    check_no_errors(a, b, b_again)


def test_admin_lists_and_describes_consumer_groups(broker, topic, group_members):
    clients.create_topic(broker, topic, PARTITIONS)
    group = f"{topic}-group"
    a = member(group_members, broker, "a", group, [topic])
    b = member(group_members, broker, "b", group, [topic])
    owned = clients.wait_balanced([a, b], topic, PARTITIONS)
    admin = clients.admin(broker)

    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    [entry] = [g for g in listed.valid if g.group_id == group]
    assert entry.type == ConsumerGroupType.CONSUMER
    assert entry.state == ConsumerGroupState.STABLE
    assert not entry.is_simple_consumer_group

    described = admin.describe_consumer_groups([group])[group].result(timeout=15)
    assert described.type == ConsumerGroupType.CONSUMER
    assert described.state == ConsumerGroupState.STABLE
    assert described.partition_assignor == "uniform"
    members = {m.member_id: m for m in described.members}
    assert set(members) == {a.member_id, b.member_id}
    for m in (a, b):
        got = {(tp.topic, tp.partition) for tp in members[m.member_id].assignment.topic_partitions}
        assert got == {(topic, p) for p in owned[m]}
        assert members[m.member_id].client_id == m.name

    # A classic group still describes through DescribeGroups (librdkafka falls back).
    classic = clients.GroupMember(broker, f"{topic}-classic", [topic], "classic",
                                  **{"partition.assignment.strategy": "range"}).start()
    try:
        clients.wait_balanced([classic], topic, PARTITIONS)
        old = admin.describe_consumer_groups([f"{topic}-classic"])[f"{topic}-classic"]
        old = old.result(timeout=15)
        assert old.type == ConsumerGroupType.CLASSIC
        assert old.state == ConsumerGroupState.STABLE
    finally:
        classic.close()

    # A group with members cannot be deleted; once they left it can.
    with pytest.raises(KafkaException):
        admin.delete_consumer_groups([group])[group].result(timeout=15)
    a.close()
    b.close()
    clients.wait_for(
        lambda: admin.describe_consumer_groups([group])[group].result(timeout=15).state
        == ConsumerGroupState.EMPTY, TIMEOUT_S, what="the group to be empty")
    admin.delete_consumer_groups([group])[group].result(timeout=15)
    check_no_errors(a, b)


def test_heartbeats_are_validated_and_fenced_by_epoch(broker, topic):
    """The wire contract, raw: a join assigns at epoch 1; a wrong epoch is fenced; a
    commit must name the member's current epoch at OffsetCommit v9; a leave ends it."""
    clients.create_topic(broker, topic, 2)
    topic_id = topic_id_of(broker, topic)
    group = f"{topic}-group"
    member_id = str(uuid.uuid4())
    with coordinator_conn(broker) as conn:
        bad = heartbeat_v1(conn, group, member_id, 0, topics=[topic], owned={},
                           rebalance_timeout_ms=-1)
        assert bad[0] == INVALID_REQUEST and "RebalanceTimeoutMs" in bad[1]
        bad = heartbeat_v1(conn, group, "", 0, topics=[topic], owned={})
        assert bad[0] == INVALID_REQUEST
        assert heartbeat_v1(conn, group, member_id, 0, topics=[topic], owned={},
                            assignor="sticky")[0] == UNSUPPORTED_ASSIGNOR
        assert heartbeat_v1(conn, group, member_id, 0, regex="(", owned={})[0] \
            == INVALID_REGULAR_EXPRESSION
        assert heartbeat_v1(conn, group, member_id, 3)[0] == UNKNOWN_MEMBER_ID

        error, _, answered, epoch, interval, assignment = heartbeat_v1(
            conn, group, member_id, 0, topics=[topic], owned={})
        assert (error, answered, epoch, interval) == (0, member_id, 1, HEARTBEAT_MS)
        assert assignment == {topic_id: [0, 1]}
        # A heartbeat that changes nothing carries no assignment.
        assert heartbeat_v1(conn, group, member_id, 1, owned={topic_id: [0, 1]})[5] is None
        assert heartbeat_v1(conn, group, member_id, 7)[0] == FENCED_MEMBER_EPOCH

        assert offset_commit(conn, 9, group, member_id, 1, topic, 0, 5) == 0
        assert offset_commit(conn, 9, group, member_id, 0, topic, 0, 6) == STALE_MEMBER_EPOCH
        assert offset_commit(conn, 9, group, "someone", 1, topic, 0, 6) == UNKNOWN_MEMBER_ID
        assert offset_commit(conn, 8, group, member_id, 1, topic, 0, 6) == UNSUPPORTED_VERSION
        assert offset_commit(conn, 9, group, "", -1, topic, 0, 6) == UNKNOWN_MEMBER_ID

        left = heartbeat_v1(conn, group, member_id, -1)
        assert (left[0], left[3]) == (0, -1)
        # An empty group takes simple commits again.
        assert offset_commit(conn, 9, group, "", -1, topic, 0, 7) == 0
    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        committed = consumer.committed([clients.TopicPartition(topic, 0)], timeout=10)
        assert committed[0].offset == 7
    finally:
        consumer.close()


def described_once_loaded(broker, group):
    """ConsumerGroupDescribe once the broker coordinates the group: FindCoordinator has
    created the offsets topic and the partition is replayed (until then the broker answers
    LOAD_IN_PROGRESS or NOT_COORDINATOR)."""
    def loaded():
        with coordinator_conn(broker) as conn:
            if rawkafka.find_coordinator_v1(conn, group)[0] != 0:
                return None
            described = describe_v0(conn, group)
        return None if described[0] in NOT_LOADED else described
    return cluster.wait_until(loaded, TIMEOUT_S, what=f"{group} loaded")


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "kill-9"])
def test_a_consumer_group_survives_a_restart_mid_rebalance(start_broker, hard):
    """The group's records are in __consumer_offsets: restarted (cleanly, or by kill -9)
    while one member is revoking and another waits for those partitions, the broker has
    the same members, epochs and assignments, and the rebalance goes on from there; the
    members heartbeat on at their epochs instead of rejoining. A deleted group stays
    deleted across a restart."""
    broker = start_broker("consumer-restart", BROKER_OVERRIDES)
    topic, group = "restart-topic", "restart-group"
    clients.create_topic(broker, topic, 4)
    tid = topic_id_of(broker, topic)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert described_once_loaded(broker, group)[0] == GROUP_ID_NOT_FOUND
    with coordinator_conn(broker) as conn:
        joined = heartbeat_v1(conn, group, a, 0, topics=[topic], owned={})
        assert (joined[0], joined[3], joined[5]) == (0, 1, {tid: [0, 1, 2, 3]})
        joined = heartbeat_v1(conn, group, b, 0, topics=[topic], owned={})
        # b is at epoch 2 with nothing: its partitions are still a's.
        assert (joined[0], joined[3], joined[5]) == (0, 2, {})
        revoking = heartbeat_v1(conn, group, a, 1, owned={tid: [0, 1, 2, 3]})
        assert (revoking[0], revoking[3]) == (0, 1)
        kept = revoking[5][tid]
        assert len(kept) == 2
        before = describe_v0(conn, group)
        assert before[:4] == (0, "Reconciling", 2, 2)
        assert offset_commit(conn, 9, group, a, 1, topic, kept[0], 11) == 0

    broker.restart(hard=hard)

    assert described_once_loaded(broker, group) == before
    with coordinator_conn(broker) as conn:
        # a still has to let go of the other two before it moves to epoch 2.
        still = heartbeat_v1(conn, group, a, 1, owned={tid: [0, 1, 2, 3]})
        assert (still[0], still[3]) == (0, 1)
        moved = heartbeat_v1(conn, group, a, 1, owned={tid: kept})
        assert (moved[0], moved[3]) == (0, 2)
        released = heartbeat_v1(conn, group, b, 2, owned={})
        assert (released[0], released[3]) == (0, 2)
        assert sorted(kept + released[5][tid]) == [0, 1, 2, 3]
        error, state, epoch, assignment_epoch, _, members = describe_v0(conn, group)
        assert (error, state, epoch, assignment_epoch) == (0, "Stable", 2, 2)
        assert sorted(members) == sorted([a, b])
        assert offset_commit(conn, 9, group, a, 2, topic, kept[0], 12) == 0
        for member_id in (a, b):
            assert heartbeat_v1(conn, group, member_id, -1)[0] == 0
    admin = clients.admin(broker)
    admin.delete_consumer_groups([group])[group].result(timeout=15)

    broker.restart(hard=hard)

    assert described_once_loaded(broker, group)[0] == GROUP_ID_NOT_FOUND
    with coordinator_conn(broker) as conn:
        assert heartbeat_v1(conn, group, a, 2, owned={})[0] == UNKNOWN_MEMBER_ID
    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        committed = consumer.committed([clients.TopicPartition(topic, kept[0])], timeout=10)
        # DeleteGroups removed the offsets with the group.
        assert committed[0].offset < 0
    finally:
        consumer.close()


def test_empty_groups_without_offsets_are_deleted(start_broker):
    """Kafka's group cleanup, at each offsets retention check: a group left with no
    members and no committed offsets is deleted, a classic one as a consumer one; a group
    with offsets stays until they expire."""
    broker = start_broker("group-cleanup", {**BROKER_OVERRIDES,
                                            "offsets.retention.check.interval.ms": "300",
                                            "group.initial.rebalance.delay.ms": "0"})
    topic = "cleanup-topic"
    clients.create_topic(broker, topic, 1)
    for group in ("gone", "kept", "classic-gone"):
        assert described_once_loaded(broker, group)[0] == GROUP_ID_NOT_FOUND
    admin = clients.admin(broker)

    def listed():
        return {g.group_id for g in admin.list_consumer_groups().result(timeout=15).valid}
    classic = clients.consumer(broker, **{"group.id": "classic-gone",
                                          "auto.offset.reset": "earliest"})
    classic.subscribe([topic])
    clients.wait_for(lambda: classic.poll(0.2) is None and classic.assignment(),
                     what="the classic member's assignment")
    assert "classic-gone" in listed()
    classic.close()
    with coordinator_conn(broker) as conn:
        for group in ("gone", "kept"):
            member_id = str(uuid.uuid4())
            joined = heartbeat_v1(conn, group, member_id, 0, topics=[topic], owned={})
            assert joined[0] == 0
            if group == "kept":
                assert offset_commit(conn, 9, group, member_id, 1, topic, 0, 3) == 0
            assert heartbeat_v1(conn, group, member_id, -1)[0] == 0

    clients.wait_for(lambda: not {"gone", "classic-gone"} & listed(),
                     what="the empty groups without offsets deleted")
    assert "kept" in listed()
    with coordinator_conn(broker) as conn:
        error, state, *_ = describe_v0(conn, "kept")
        assert (error, state) == (0, "Empty")
        assert describe_v0(conn, "gone")[0] == GROUP_ID_NOT_FOUND


def test_classic_and_consumer_groups_do_not_share_an_id(broker, topic, group_members):
    clients.create_topic(broker, topic, 2)
    group = f"{topic}-group"
    classic = group_members(broker, "classic", group, [topic])
    clients.wait_balanced([classic], topic, 2)
    with coordinator_conn(broker) as conn:
        refused = heartbeat_v1(conn, group, str(uuid.uuid4()), 0, topics=[topic], owned={})
        assert refused[0] == GROUP_ID_NOT_FOUND
    classic.close()
    # Once the classic group is empty the id can become a consumer group.
    with coordinator_conn(broker) as conn:
        def joined():
            return heartbeat_v1(conn, group, str(uuid.uuid4()), 0, topics=[topic],
                                owned={})[0] == 0
        clients.wait_for(joined, TIMEOUT_S, what="the emptied id to take a consumer group")
