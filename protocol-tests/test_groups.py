"""Consumer groups with real clients: membership, assignors, rebalances, commits.

The brokers run with group.initial.rebalance.delay.ms=0 (Kafka's 3 s default would delay
every first join) and offsets.topic.num.partitions=5. Consumers use session.timeout.ms
6000 (Kafka's default group.min.session.timeout.ms) and heartbeat.interval.ms 500.

confluent-kafka members (`clients.GroupMember`) commit synchronously what they poll
before recording it. Records are produced only while a group is steady (every partition
held once, every member assigned, one generation), and the tests wait until every one
was consumed before changing the membership. So each record must be consumed exactly
once, by the member holding its partition, and a partition that moves resumes at the
offset its previous owner committed: a duplicate means a lost or ignored commit.
"""

import collections
import json
import sys
import time

import kafka
import pytest
from confluent_kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

import clients

GROUP_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "6000",
    "offsets.topic.num.partitions": "5",
    # The same session for KIP-848 members (group.protocol=consumer), which the broker
    # times: Kafka's 45 s would make the killed-member test slow.
    "group.consumer.min.session.timeout.ms": "6000",
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.heartbeat.interval.ms": "500",
    "group.consumer.heartbeat.interval.ms": "500",
}
BROKER_OVERRIDES = dict(GROUP_OVERRIDES)
PARTITIONS = 4
ALL = frozenset(range(PARTITIONS))
PER_PARTITION = 5
SESSION_TIMEOUT_S = clients.GROUP_SESSION_TIMEOUT_MS / 1000
HEARTBEAT_S = clients.GROUP_HEARTBEAT_INTERVAL_MS / 1000
TIMEOUT_S = 30
ASSIGNORS = ["range", "roundrobin", "cooperative-sticky"]


# ---------------------------------------------------------------- helpers


def group_of(topic):
    return f"{topic}-group"


def every_partition(count):
    return {partition: count for partition in range(PARTITIONS)}


def records_of(*members):
    return {member.name: member.records() for member in members}


def assert_exactly_once(records_by_name, expected, owners=None):
    """Every record of expected ({value: (partition, offset)}) was consumed exactly once,
    at its partition and offset; with owners ({name: partitions}), by the member that
    holds its partition."""
    found = collections.defaultdict(list)
    for name, records in records_by_name.items():
        for record in records:
            if record.value in expected:
                found[record.value].append((name, record))
    missing = sorted(set(expected) - set(found))
    duplicated = {value: [(name, r.partition, r.offset) for name, r in hits]
                  for value, hits in found.items() if len(hits) > 1}
    assert not missing, f"{len(missing)} records never consumed, e.g. {missing[:5]}"
    assert not duplicated, f"{len(duplicated)} records consumed more than once: " \
        f"{dict(list(duplicated.items())[:5])}"
    for value, [(name, record)] in found.items():
        assert (record.partition, record.offset) == expected[value], \
            f"{value} read at {record.partition}/{record.offset}, produced at {expected[value]}"
        if owners is not None:
            held = owners.get(name, frozenset())
            assert record.partition in held, \
                f"{value} (partition {record.partition}) consumed by {name}, which holds " \
                f"{sorted(held)}"


def assert_partitions_read_in_order(broker, topic, records_by_name, expected):
    """Per partition: the offsets read (by anyone) are exactly 0..high watermark - 1, and
    each member read its share in increasing order."""
    produced = collections.defaultdict(set)
    for partition, offset in expected.values():
        produced[partition].add(offset)
    for partition in range(PARTITIONS):
        _low, high = clients.watermarks(broker, topic, partition)
        assert produced[partition] == set(range(high)), \
            f"partition {partition}: high watermark {high}, produced {sorted(produced[partition])}"
        read = []
        for name, records in records_by_name.items():
            offsets = [r.offset for r in records if r.topic == topic and r.partition == partition]
            assert offsets == sorted(offsets), f"{name} read partition {partition} out of order: {offsets}"
            read += offsets
        assert sorted(read) == list(range(high)), \
            f"partition {partition}: offsets read {sorted(read)}, want 0..{high - 1}"


def by_name(owned):
    return {member.name: owned[member] for member in owned}


def expected_layout(assignor, owned):
    """{name: partitions} that librdkafka's range / roundrobin assignors compute for these
    members (sorted by member id, as rd_kafka_group_member_cmp does); None for sticky."""
    ordered = sorted(owned, key=lambda member: member.member_id)
    count = len(ordered)
    if assignor == "range":
        per, extra = divmod(PARTITIONS, count)
        layout, start = {}, 0
        for index, member in enumerate(ordered):
            length = per + (1 if index < extra else 0)
            layout[member.name] = frozenset(range(start, start + length))
            start += length
        return layout
    if assignor == "roundrobin":
        return {member.name: frozenset(p for p in range(PARTITIONS) if p % count == index)
                for index, member in enumerate(ordered)}
    return None


def check_layout(assignor, owned):
    count = len(owned)
    per, extra = divmod(PARTITIONS, count)
    sizes = sorted(len(parts) for parts in owned.values())
    assert sizes == sorted([per + 1] * extra + [per] * (count - extra)), \
        f"unbalanced assignment {by_name(owned)}"
    layout = expected_layout(assignor, owned)
    if layout is not None:
        assert by_name(owned) == layout, \
            f"{assignor} assignment {by_name(owned)}, expected {layout} for member ids " \
            f"{sorted(m.member_id for m in owned)}"


def revoked_since(member, topic, mark):
    return frozenset(p for kind, parts in member.events(mark) if kind in ("revoke", "lost")
                     for t, p in parts if t == topic)


def check_rebalance(cooperative, topic, before, marks, owned):
    """For the members that stayed: eager assignors revoke everything they held;
    cooperative-sticky revokes only the partitions that moved away, and nothing is lost."""
    for member, had in before.items():
        events = member.events(marks[member])
        assert not [e for e in events if e[0] == "lost"], \
            f"{member.name} lost partitions: {events}"
        revoked = revoked_since(member, topic, marks[member])
        if cooperative:
            assert revoked == had - owned[member], \
                f"{member.name} held {sorted(had)}, holds {sorted(owned[member])}, but " \
                f"revoked {sorted(revoked)}: incremental rebalancing revokes only what " \
                f"moves ({events})"
        else:
            assert had <= revoked, \
                f"{member.name} held {sorted(had)} and revoked only {sorted(revoked)} " \
                f"in an eager rebalance ({events})"


def check_newcomer(cooperative, member, topic, owned):
    events = member.events()
    if cooperative:
        assert all(kind == "assign" for kind, _parts in events), \
            f"newcomer {member.name} had revocations: {events}"
    assigned = frozenset(p for kind, parts in events if kind == "assign" for t, p in parts
                         if t == topic)
    assert owned[member] <= assigned, f"{member.name}: {events}"


def generation_advanced(members, generations):
    for member in members:
        before = generations[member]
        if before is not None and member.generation is not None:
            assert member.generation > before, \
                f"{member.name}: generation {member.generation} after a rebalance, " \
                f"{before} before"


def snapshot(members, topic):
    return ({m: m.partitions(topic) for m in members}, {m: m.event_count() for m in members},
            {m: m.generation for m in members})


# ---------------------------------------------------------------- membership changes


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_members_join_and_leave(broker, topic, group_members, assignor):
    """2 members -> 2 partitions each; a third joins -> all three work; one leaves ->
    its partitions move; every record consumed exactly once throughout."""
    clients.create_topic(broker, topic, PARTITIONS)
    group = group_of(topic)
    cooperative = assignor == "cooperative-sticky"
    everything = {}

    a = group_members(broker, "a", group, [topic], assignor)
    owned = clients.wait_balanced([a], topic, PARTITIONS)
    assert owned[a] == ALL

    # ---- a second member: two partitions each
    before, marks, generations = snapshot([a], topic)
    b = group_members(broker, "b", group, [topic], assignor)
    owned = clients.wait_balanced([a, b], topic, PARTITIONS)
    assert sorted(len(parts) for parts in owned.values()) == [2, 2]
    check_layout(assignor, owned)
    check_rebalance(cooperative, topic, before, marks, owned)
    check_newcomer(cooperative, b, topic, owned)
    generation_advanced([a], generations)
    if cooperative:
        assert owned[a] < ALL and revoked_since(a, topic, marks[a]) == owned[b]

    batch = clients.produce_values(broker, topic, "two", every_partition(PER_PARTITION))
    everything.update(batch)
    clients.wait_consumed([a, b], batch)
    assert_exactly_once(records_of(a, b), batch, by_name(owned))

    # ---- a third member: everybody gets work
    before, marks, generations = snapshot([a, b], topic)
    c = group_members(broker, "c", group, [topic], assignor)
    owned = clients.wait_balanced([a, b, c], topic, PARTITIONS)
    check_layout(assignor, owned)
    check_rebalance(cooperative, topic, before, marks, owned)
    check_newcomer(cooperative, c, topic, owned)
    generation_advanced([a, b], generations)
    if cooperative:
        moved = revoked_since(a, topic, marks[a]) | revoked_since(b, topic, marks[b])
        assert moved == owned[c] and len(moved) == 1, \
            f"sticky: exactly one partition should move to the newcomer, moved {sorted(moved)}"

    batch = clients.produce_values(broker, topic, "three", every_partition(PER_PARTITION))
    everything.update(batch)
    clients.wait_consumed([a, b, c], batch)
    assert_exactly_once(records_of(a, b, c), batch, by_name(owned))
    for member in (a, b, c):
        assert any(value in batch for value in member.values()), f"{member.name} got no work"

    # ---- the third leaves (LeaveGroup): its partitions move to the others
    left = owned[c]
    before, marks, generations = snapshot([a, b], topic)
    c.close()
    owned = clients.wait_balanced([a, b], topic, PARTITIONS)
    check_layout(assignor, owned)
    check_rebalance(cooperative, topic, before, marks, owned)
    generation_advanced([a, b], generations)
    assert left <= owned[a] | owned[b]
    if cooperative:
        assert not revoked_since(a, topic, marks[a]) and not revoked_since(b, topic, marks[b])
        assert (owned[a] - before[a]) | (owned[b] - before[b]) == left

    batch = clients.produce_values(broker, topic, "after-leave", every_partition(PER_PARTITION))
    everything.update(batch)
    clients.wait_consumed([a, b], batch)
    assert_exactly_once(records_of(a, b, c), batch, by_name(owned))

    # ---- the whole run: nothing read twice, across every rebalance
    assert_exactly_once(records_of(a, b, c), everything)
    assert_partitions_read_in_order(broker, topic, records_of(a, b, c), everything)
    for member in (a, b, c):
        assert not member.commit_errors, f"{member.name}: {member.commit_errors}"
        assert not member.errors, f"{member.name}: {member.errors}"


# ---------------------------------------------------------------- session timeout

VICTIM_SCRIPT = r"""
import json, sys
from confluent_kafka import Consumer, TopicPartition

config, topic = json.loads(sys.argv[1]), sys.argv[2]
# KIP-848 members rebalance incrementally: callbacks name only what moves.
incremental = config.get("group.protocol") == "consumer"

def emit(kind, **fields):
    print(json.dumps(dict(kind=kind, **fields)), flush=True)

def on_assign(consumer, partitions):
    if incremental:
        consumer.incremental_assign(partitions)
    else:
        consumer.assign(partitions)
    emit("assign", partitions=sorted(tp.partition for tp in partitions))

def on_revoke(consumer, partitions):
    if incremental:
        consumer.incremental_unassign(partitions)
    else:
        consumer.unassign()
    emit("revoke", partitions=sorted(tp.partition for tp in partitions))

consumer = Consumer(config)
consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
member_id = None
while True:
    messages = [m for m in consumer.consume(100, 0.1) if m.error() is None]
    if consumer.memberid() and consumer.memberid() != member_id:
        member_id = consumer.memberid()
        emit("member", member_id=member_id)
    if messages:
        last = {}
        for m in messages:
            last[m.partition()] = m.offset()
        consumer.commit(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()],
                        asynchronous=False)
        emit("consumed", records=[[m.partition(), m.offset(), m.value().decode()]
                                  for m in messages])
"""


class Victim:
    """A group member in a child process (VICTIM_SCRIPT), killed with SIGKILL; a classic
    one (range) or, with protocol="consumer", a KIP-848 one."""

    def __init__(self, broker, topic, group, protocol="classic"):
        self.name = "victim"
        self.topic = topic
        chosen = {"group.protocol": "consumer"} if protocol == "consumer" \
            else {"partition.assignment.strategy": "range"}
        config = clients.plain_config(clients.group_consumer_config(
            broker, group, **{"client.id": self.name, **chosen}))
        self.process = clients.JsonLinesProcess(
            [sys.executable, "-c", VICTIM_SCRIPT, json.dumps(config), topic], self.name)

    def partitions(self):
        """What it holds: an eager revoke names everything held, an incremental one what
        moves, so both take away the partitions they name."""
        held = set()
        for event in self.process.events():
            if event["kind"] == "assign":
                held |= set(event["partitions"])
            elif event["kind"] == "revoke":
                held -= set(event["partitions"])
        return frozenset(held)

    def records(self):
        return [clients.GroupRecord(self.topic, p, o, v)
                for event in self.process.events("consumed") for p, o, v in event["records"]]

    def values(self):
        return [record.value for record in self.records()]


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_killed_member_partitions_move_after_session_timeout(broker, topic, group_members,
                                                              capsys, protocol):
    """A member killed with SIGKILL (no leave) loses its partitions to the survivor once its
    session ends, for a classic member and a KIP-848 one alike."""
    clients.create_topic(broker, topic, PARTITIONS)
    group = group_of(topic)
    chosen = {"group.protocol": "consumer"} if protocol == "consumer" else {}
    survivor = group_members(broker, "survivor", group, [topic], **chosen)
    clients.wait_balanced([survivor], topic, PARTITIONS)

    victim = Victim(broker, topic, group, protocol)
    try:
        def shared():
            mine, theirs = survivor.partitions(topic), victim.partitions()
            ok = len(mine) == 2 and len(theirs) == 2 and mine | theirs == ALL
            return ok and (mine, theirs)
        mine, theirs = clients.wait_for(shared, TIMEOUT_S,
                                        what="the survivor and the victim to share the topic")

        first = clients.produce_values(broker, topic, "before-kill", every_partition(PER_PARTITION))
        clients.wait_consumed([survivor, victim.values], first)
        owners = {"survivor": mine, "victim": theirs}
        assert_exactly_once({"survivor": survivor.records(), "victim": victim.records()},
                            first, owners)

        mark = survivor.event_count()
        assert victim.process.kill() == -9
        killed_at = time.monotonic()
        clients.wait_for(lambda: survivor.partitions(topic) == ALL,
                         SESSION_TIMEOUT_S + TIMEOUT_S,
                         what="the killed member's partitions to move to the survivor")
        elapsed = time.monotonic() - killed_at
        with capsys.disabled():
            print(f"\n[measurement] partitions of a SIGKILLed member moved after {elapsed:.2f} s "
                  f"(session.timeout.ms={clients.GROUP_SESSION_TIMEOUT_MS})")
        # Kafka expires a member by its session timeout, not when its connection drops.
        assert elapsed >= SESSION_TIMEOUT_S / 2, \
            f"partitions moved {elapsed:.2f} s after the kill, before the session timeout"
        assert not [e for e in survivor.events(mark) if e[0] == "lost"]

        second = clients.produce_values(broker, topic, "after-kill", every_partition(PER_PARTITION))
        clients.wait_consumed([survivor], second)
        everything = {**first, **second}
        records = {"survivor": survivor.records(), "victim": victim.records()}
        # The survivor resumes the victim's partitions at the victim's commits.
        assert_exactly_once(records, everything)
        assert_partitions_read_in_order(broker, topic, records, everything)
        assert not survivor.commit_errors
    finally:
        victim.process.kill()


# ---------------------------------------------------------------- static membership


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(broker, topic,
                                                                         group_members):
    clients.create_topic(broker, topic, PARTITIONS)
    group = group_of(topic)
    static = {"session.timeout.ms": 10000}
    a = group_members(broker, "static-a", group, [topic],
                      **{"group.instance.id": f"{group}-a", **static})
    clients.wait_balanced([a], topic, PARTITIONS)
    b = group_members(broker, "static-b", group, [topic],
                      **{"group.instance.id": f"{group}-b", **static})
    owned = clients.wait_balanced([a, b], topic, PARTITIONS)
    # range orders static members by group.instance.id: a before b
    assert by_name(owned) == {"static-a": frozenset({0, 1}), "static-b": frozenset({2, 3})}

    first = clients.produce_values(broker, topic, "first", every_partition(PER_PARTITION))
    clients.wait_consumed([a, b], first)
    assert_exactly_once(records_of(a, b), first, by_name(owned))

    mark, a_member_id, generation = a.event_count(), a.member_id, a.generation
    b.close()  # a static member sends no LeaveGroup (KIP-345)
    b_again = group_members(broker, "static-b-again", group, [topic],
                            **{"group.instance.id": f"{group}-b", **static})
    clients.wait_for(lambda: b_again.partitions(topic) == frozenset({2, 3})
                     and b_again.member_id is not None,
                     TIMEOUT_S, what="the restarted static member to get its partitions back")
    rejoined_at = time.monotonic()

    second = clients.produce_values(broker, topic, "second", every_partition(PER_PARTITION))
    clients.wait_consumed([a, b_again], second)
    owners = {"static-a": owned[a], "static-b": owned[b], "static-b-again": owned[b]}
    assert_exactly_once(records_of(a, b, b_again), {**first, **second}, owners)

    # Long enough for the other member to hear of a rebalance through its heartbeats.
    time.sleep(max(0.0, rejoined_at + 4 * HEARTBEAT_S + 1.0 - time.monotonic()))
    assert a.events(mark) == [], f"static-a saw a rebalance: {a.events(mark)}"
    assert a.partitions(topic) == owned[a]
    assert a.member_id == a_member_id
    assert [kind for kind, _parts in b_again.events()] == ["assign"]
    if generation is not None:
        assert a.generation == generation, "the group's generation changed"
        assert b_again.generation == generation, \
            f"the restarted member joined generation {b_again.generation}, not {generation}"
    for member in (a, b, b_again):
        assert not member.commit_errors and not member.errors, member.state()


# ---------------------------------------------------------------- broker restart


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_committed_offsets_survive_a_broker_restart(start_broker, topic, group_members, how):
    broker = start_broker("groups-restart", GROUP_OVERRIDES)
    clients.create_topic(broker, topic, 2)
    group = group_of(topic)
    first = clients.produce_values(broker, topic, "before", {0: 10, 1: 10})

    before = group_members(broker, "before-restart", group, [topic], commit=False)
    clients.wait_consumed([before], first)
    commit = [TopicPartition(topic, 0, 10), TopicPartition(topic, 1, 6)]
    result = before.call(lambda c: c.commit(offsets=commit, asynchronous=False))
    assert sorted((tp.partition, tp.offset, tp.error) for tp in result) == \
        [(0, 10, None), (1, 6, None)]
    before.close()

    broker.restart(hard=how == "sigkill")
    second = clients.produce_values(broker, topic, "after", {0: 3, 1: 3})
    assert sorted(second.values()) == [(0, 10), (0, 11), (0, 12), (1, 10), (1, 11), (1, 12)]

    after = group_members(broker, "after-restart", group, [topic], commit=False)

    def committed():
        partitions = after.call(lambda c: c.committed(
            [TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10))
        return {tp.partition: tp.offset for tp in partitions}
    assert clients.wait_for(committed, TIMEOUT_S, what="committed offsets") == {0: 10, 1: 6}

    clients.wait_for(lambda: len(after.records()) >= 10, TIMEOUT_S,
                     what="the resumed consumer to read 10 records")
    read = sorted((r.partition, r.offset, r.value) for r in after.records())
    everything = {**first, **second}
    want = sorted((p, o, v) for v, (p, o) in everything.items()
                  if o >= {0: 10, 1: 6}[p])
    assert read == want, "the group did not resume at its committed offsets"
    after.close()
    assert broker.stop() == 0


# ---------------------------------------------------------------- other clients


def test_kafka_python_group_consumer(broker, topic):
    clients.create_topic(broker, topic, 2)
    group = group_of(topic)
    first = clients.produce_values(broker, topic, "kp", {0: 5, 1: 5})
    tp0, tp1 = kafka.TopicPartition(topic, 0), kafka.TopicPartition(topic, 1)
    settings = {"group_id": group, "auto_offset_reset": "earliest",
                "session_timeout_ms": clients.GROUP_SESSION_TIMEOUT_MS,
                "heartbeat_interval_ms": clients.GROUP_HEARTBEAT_INTERVAL_MS}

    def poll_until(consumer, count):
        records = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(records) < count and time.monotonic() < deadline:
            for part_records in consumer.poll(timeout_ms=200).values():
                records.extend(part_records)
        assert len(records) >= count, f"kafka-python read {len(records)} of {count} records"
        return records

    consumer = clients.kp_consumer(broker, **settings)
    try:
        consumer.subscribe([topic])
        records = poll_until(consumer, 10)
        assert sorted((r.partition, r.offset, r.value.decode()) for r in records) == \
            sorted((p, o, v) for v, (p, o) in first.items())
        assert consumer.assignment() == {tp0, tp1}
        bound = {"timeout_ms": TIMEOUT_S * 1000}  # kafka-python retries forever without
        consumer.commit(**bound)
        assert consumer.committed(tp0, **bound) == 5 and consumer.committed(tp1, **bound) == 5
        consumer.commit({tp0: OffsetAndMetadata(3, "kafka-python was here", -1)}, **bound)
        committed = consumer.committed(tp0, metadata=True, **bound)
        assert (committed.offset, committed.metadata) == (3, "kafka-python was here")
    finally:
        consumer.close()  # LeaveGroup

    second = clients.produce_values(broker, topic, "kp-more", {0: 2, 1: 2})
    consumer = clients.kp_consumer(broker, **settings)
    try:
        consumer.subscribe([topic])
        records = poll_until(consumer, 6)
        everything = {**first, **second}
        assert sorted((r.partition, r.offset, r.value.decode()) for r in records) == \
            sorted((p, o, v) for v, (p, o) in everything.items() if o >= {0: 3, 1: 5}[p])
    finally:
        consumer.close()


def test_kcat_balanced_consumer(broker, topic):
    clients.create_topic(broker, topic, 2)
    group = group_of(topic)
    first = clients.produce_values(broker, topic, "kcat", {0: 4, 1: 4})
    args = ["-G", group, "-e", "-f", "%p %o %s\\n",
            "-X", "auto.offset.reset=earliest",
            "-X", f"session.timeout.ms={clients.GROUP_SESSION_TIMEOUT_MS}",
            "-X", f"heartbeat.interval.ms={clients.GROUP_HEARTBEAT_INTERVAL_MS}",
            "-X", "enable.partition.eof=true", topic]

    def run_kcat():
        out = clients.kcat(broker, *args, timeout_s=60).stdout
        rows = [line.split(" ", 2) for line in out.splitlines() if line]
        return sorted((int(p), int(o), v) for p, o, v in rows)

    assert run_kcat() == sorted((p, o, v) for v, (p, o) in first.items())
    # kcat commits (auto commit) when it closes at the end
    checker = clients.consumer(broker, **{"group.id": group})
    try:
        committed = checker.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)],
                                      timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == {0: 4, 1: 4}
    finally:
        checker.close()

    second = clients.produce_values(broker, topic, "kcat-more", {0: 2, 1: 2})
    assert run_kcat() == sorted((p, o, v) for v, (p, o) in second.items())


# ---------------------------------------------------------------- measurement


def test_measure_two_member_group_formation(broker, topic, group_members, capsys):
    """Prints how long two new members take to share a topic (not an assertion on time)."""
    clients.create_topic(broker, topic, PARTITIONS)
    group = group_of(topic)
    started = time.monotonic()
    a = group_members(broker, "measure-a", group, [topic])
    b = group_members(broker, "measure-b", group, [topic])
    owned = clients.wait_balanced([a, b], topic, PARTITIONS)
    elapsed = time.monotonic() - started
    assert sorted(len(parts) for parts in owned.values()) == [2, 2]
    check_layout("range", owned)
    with capsys.disabled():
        print(f"\n[measurement] two members stable (2 partitions each) {elapsed:.2f} s after "
              f"subscribing, group.initial.rebalance.delay.ms=0, generation {a.generation}")
