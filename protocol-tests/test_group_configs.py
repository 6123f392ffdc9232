"""A consumer group's own configs (Kafka 4.0's GROUP config resources, KIP-848).

With confluent-kafka's AdminClient (librdkafka sends resource type 32): a group's
`consumer.session.timeout.ms` and `consumer.heartbeat.interval.ms` are described at the
broker's `group.consumer.*` values until set, then as GROUP_CONFIG; they are validated as
Kafka validates them; and the group's coordinator applies them at the next heartbeat: the
heartbeat interval it answers, and the session after which a silent member is removed.
Kafka's messages come back for each rule a value breaks.
"""

import time
import uuid

from confluent_kafka.admin import ConfigSource, ResourceType

import clients
from test_alter_configs import DELETE, INVALID_CONFIG, SET, describe, incremental, \
    raw_incremental, synonym_chain
import test_consumer_groups
from test_consumer_groups import HEARTBEAT_MS, NOT_LOADED, SESSION_MS, UNKNOWN_MEMBER_ID, \
    describe_v0, heartbeat_v1
import cluster
import rawkafka

# The KIP-848 tests' broker: a 500 ms heartbeat interval and a 6 s session by default.
BROKER_OVERRIDES = {**test_consumer_groups.BROKER_OVERRIDES, "offsets.topic.num.partitions": "1"}
GROUP = ResourceType.GROUP
SESSION = "consumer.session.timeout.ms"
INTERVAL = "consumer.heartbeat.interval.ms"
TIMEOUT_S = 30


def values(entries):
    return {name: (entry.value, ConfigSource(entry.source)) for name, entry in entries.items()}


def test_group_configs_are_described_set_validated_and_deleted(broker):
    group = f"configs-{uuid.uuid4().hex[:8]}"
    # Any group name, whether or not the group exists, as Kafka.
    assert values(describe(broker, GROUP, group)) == {
        SESSION: (str(SESSION_MS), ConfigSource.DEFAULT_CONFIG),
        INTERVAL: (str(HEARTBEAT_MS), ConfigSource.DEFAULT_CONFIG),
    }
    assert incremental(broker, GROUP, group, [(SESSION, SET, "8000")],
                       validate_only=True) is None
    assert values(describe(broker, GROUP, group))[SESSION][1] == ConfigSource.DEFAULT_CONFIG

    assert incremental(broker, GROUP, group,
                       [(SESSION, SET, "8000"), (INTERVAL, SET, "1000")]) is None
    entries = describe(broker, GROUP, group)
    assert values(entries) == {
        SESSION: ("8000", ConfigSource.GROUP_CONFIG),
        INTERVAL: ("1000", ConfigSource.GROUP_CONFIG),
    }
    assert synonym_chain(entries[SESSION]) == [(SESSION, "8000", ConfigSource.GROUP_CONFIG)]
    assert not entries[SESSION].is_read_only

    # Each refused with INVALID_CONFIG and Kafka's message for its own rule.
    refused = [
        # Share groups are not served here, so their keys are unknown names.
        ([("share.session.timeout.ms", SET, "8000")],
         "Unknown group config name: share.session.timeout.ms"),
        ([(SESSION, SET, "soon")], "Not a number of type INT"),
        ([(SESSION, SET, "0")], "Value must be at least 1"),
        ([(SESSION, SET, str(SESSION_MS - 1))],
         f"{SESSION} must be greater than or equal to group.consumer.min.session.timeout.ms"),
        ([(SESSION, SET, "60001")],
         f"{SESSION} must be less than or equal to group.consumer.max.session.timeout.ms"),
        ([(INTERVAL, SET, "15001")],
         f"{INTERVAL} must be less than or equal to group.consumer.max.heartbeat.interval.ms"),
        ([(SESSION, SET, "7000"), (INTERVAL, SET, "7000")],
         f"{SESSION} must be greater than {INTERVAL}"),
    ]
    for ops, expected in refused:
        error, message = raw_incremental(broker, 32, group, ops)
        assert (error, expected in (message or "")) == (INVALID_CONFIG, True), (ops, message)
    assert values(describe(broker, GROUP, group))[SESSION] == ("8000", ConfigSource.GROUP_CONFIG)

    assert incremental(broker, GROUP, group, [(INTERVAL, DELETE, None)]) is None
    assert values(describe(broker, GROUP, group)) == {
        SESSION: ("8000", ConfigSource.GROUP_CONFIG),
        INTERVAL: (str(HEARTBEAT_MS), ConfigSource.DEFAULT_CONFIG),
    }


def join(conn, group, topic):
    """Joins a new member once the broker coordinates the group (FindCoordinator creates
    the offsets topic, then its partition loads): (member id, epoch, heartbeat interval)."""
    member_id = str(uuid.uuid4())

    def joined():
        if rawkafka.find_coordinator_v1(conn, group)[0] != 0:
            return None
        error, message, _, epoch, interval, _ = heartbeat_v1(conn, group, member_id, 0,
                                                             [topic], owned={})
        if error in NOT_LOADED:
            return None
        assert error == 0, message
        return epoch, interval
    epoch, interval = cluster.wait_until(joined, TIMEOUT_S, what=f"{group} joined")
    return member_id, epoch, interval


def test_a_groups_own_configs_apply_at_its_next_heartbeat(broker, topic):
    clients.create_topic(broker, topic, partitions=2)
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    group_session_ms = 10_000
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        member, epoch, interval = join(conn, patient, topic)
        assert interval == HEARTBEAT_MS
        assert incremental(broker, GROUP, patient, [
            (INTERVAL, SET, "2000"), (SESSION, SET, str(group_session_ms))]) is None
        error, message, _, epoch, interval, _ = heartbeat_v1(conn, patient, member, epoch)
        assert (error, interval) == (0, 2000), message
        # The session this heartbeat started is the group's 10 s, not the broker's 6 s: a
        # member of another group silent as long is removed, this one is not (described,
        # not heartbeating, which would start its session again)...
        other, other_epoch, _ = join(conn, plain, topic)
        time.sleep(SESSION_MS / 1000 + 2)
        error, message, _, _, _, _ = heartbeat_v1(conn, plain, other, other_epoch)
        assert error == UNKNOWN_MEMBER_ID, message
        assert member in describe_v0(conn, patient)[5]
        # ...until its own session ends: within 10 s more, where the broker's maximum
        # (60 s) would keep it.
        cluster.wait_until(lambda: member not in describe_v0(conn, patient)[5],
                           group_session_ms / 1000, what=f"{member} removed")
