"""Group administration: ListGroups, DescribeGroups, OffsetFetch, DeleteGroups,
OffsetDelete, and offsets committed outside a membership (assign() + commit()).

With confluent-kafka AdminClient, kafka-python KafkaAdminClient, and hand-encoded
OffsetFetch v8 (several groups in one request) and OffsetDelete v0: confluent-kafka's
list_consumer_group_offsets takes exactly one group, and neither client exposes
OffsetDelete.

Groups are made in three shapes: STABLE (a subscribed member is polling), EMPTY with the
"consumer" protocol type (a member committed and left), and "simple" (offsets committed
by an assign()-only consumer: generation -1, no member id, empty protocol type).
"""

import time

import kafka
import kafka.errors
import pytest
from kafka.structs import OffsetAndMetadata
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, \
    KafkaException, TopicPartition
from confluent_kafka.admin import OFFSET_INVALID

import clients
import rawkafka

BROKER_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "6000",
    "offsets.topic.num.partitions": "5",
}
PARTITIONS = 3
TIMEOUT_S = 30

OFFSET_FETCH = 9
OFFSET_DELETE = 47
GROUP_ID_NOT_FOUND = 69
GROUP_SUBSCRIBED_TO_TOPIC = 86


# ---------------------------------------------------------------- hand-encoded requests
# Field layouts from apache/kafka clients/src/main/resources/common/message/
# OffsetFetch{Request,Response}.json (v8: flexible, groups array) and
# OffsetDelete{Request,Response}.json (v0).


def compact_array(items, encode_item):
    """COMPACT_ARRAY: uvarint (count + 1), then each item (0 for a null array)."""
    if items is None:
        return rawkafka.uvarint(0)
    return rawkafka.uvarint(len(items) + 1) + b"".join(encode_item(item) for item in items)


def offset_fetch_v8(conn, groups, require_stable=False):
    """OffsetFetch v8. groups: [(group_id, None for all topics, or {topic: [partition]})].

    Returns {group_id: (error_code, {topic: {partition: (offset, metadata, error_code)}})}.
    """
    def encode_topic(item):
        name, partitions = item
        return (rawkafka.compact_string(name) + compact_array(partitions, rawkafka.int32)
                + rawkafka.EMPTY_TAGGED_FIELDS)

    def encode_group(item):
        group_id, topics = item
        topic_items = None if topics is None else sorted(topics.items())
        return (rawkafka.compact_string(group_id) + compact_array(topic_items, encode_topic)
                + rawkafka.EMPTY_TAGGED_FIELDS)

    body = (compact_array(groups, encode_group) + rawkafka.boolean(require_stable)
            + rawkafka.EMPTY_TAGGED_FIELDS)
    reader = conn.request(OFFSET_FETCH, 8, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms

    def read_partition(r):
        index = r.int32()
        offset = r.int64()
        r.int32()  # committed_leader_epoch
        metadata = r.compact_string()
        error_code = r.int16()
        r.skip_tagged_fields()
        return index, (offset, metadata, error_code)

    def read_topic(r):
        name = r.compact_string()
        partitions = dict(r.compact_array(read_partition))
        r.skip_tagged_fields()
        return name, partitions

    def read_group(r):
        group_id = r.compact_string()
        topics = dict(r.compact_array(read_topic))
        error_code = r.int16()
        r.skip_tagged_fields()
        return group_id, (error_code, topics)

    out = dict(reader.compact_array(read_group))
    reader.skip_tagged_fields()
    reader.expect_end()
    return out


def offset_delete_v0(conn, group_id, topics):
    """OffsetDelete v0. topics: {topic: [partition]}.

    Returns (error_code, {topic: {partition: error_code}}).
    """
    def encode_topic(item):
        name, partitions = item
        return rawkafka.string(name) + rawkafka.array(partitions, rawkafka.int32)

    body = rawkafka.string(group_id) + rawkafka.array(sorted(topics.items()), encode_topic)
    reader = conn.request(OFFSET_DELETE, 0, body)
    error_code = reader.int16()
    reader.int32()  # throttle_time_ms
    out = dict(reader.array(lambda r: (r.string(), dict(r.array(
        lambda rr: (rr.int32(), rr.int16()))))))
    reader.expect_end()
    return error_code, out


def max_version(conn, api_key):
    error_code, keys = rawkafka.api_versions_v0(conn)
    assert error_code == rawkafka.NONE
    return {key: high for key, _low, high in keys}.get(api_key)


def connect(broker):
    return rawkafka.Connection("127.0.0.1", broker.port)


# ---------------------------------------------------------------- helpers


def group_of(topic, suffix):
    return f"{topic}-{suffix}"


def list_groups(admin, states=None):
    kwargs = {"request_timeout": 10}
    if states is not None:
        kwargs["states"] = set(states)
    result = admin.list_consumer_groups(**kwargs).result(timeout=15)
    assert not result.errors, f"list_consumer_groups errors: {result.errors}"
    return {listing.group_id: listing for listing in result.valid}


def describe(admin, group):
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def wait_state(admin, group, state, members=None):
    def check():
        description = describe(admin, group)
        if description.state != state:
            raise AssertionError(f"state {description.state}")
        if members is not None and len(description.members) != members:
            raise AssertionError(f"{len(description.members)} members")
        return description
    return clients.wait_for(check, TIMEOUT_S, what=f"group {group} to be {state}")


def group_offsets(admin, group, partitions=None):
    """{(topic, partition): TopicPartition} from list_consumer_group_offsets."""
    request = ConsumerGroupTopicPartitions(group, partitions)
    futures = admin.list_consumer_group_offsets([request], request_timeout=10)
    result = futures[group].result(timeout=15)
    assert result.group_id == group
    return {(tp.topic, tp.partition): tp for tp in result.topic_partitions}


def offsets_only(listed):
    return {key: tp.offset for key, tp in listed.items()}


def commit_without_membership(broker, group, offsets):
    """OffsetCommit from a consumer that never joins: generation -1, no member id."""
    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        result = consumer.commit(offsets=offsets, asynchronous=False)
        assert [tp.error for tp in result] == [None] * len(offsets), result
    finally:
        consumer.close()


def kp_commit_without_membership(broker, group, offsets):
    """OffsetCommit from an assign()-only kafka-python consumer: generation -1.
    offsets: {(topic, partition): (offset, metadata)}."""
    consumer = clients.kp_consumer(broker, group_id=group)
    try:
        consumer.assign([kafka.TopicPartition(t, p) for t, p in offsets])
        consumer.commit({kafka.TopicPartition(t, p): OffsetAndMetadata(offset, metadata, -1)
                         for (t, p), (offset, metadata) in offsets.items()},
                        timeout_ms=TIMEOUT_S * 1000)  # kafka-python retries forever without
    finally:
        consumer.close()


def stable_group(broker, group_members, topic, group, name, partitions=PARTITIONS):
    """A group with one subscribed member that has consumed and committed everything."""
    member = group_members(broker, name, group, [topic])
    clients.wait_balanced([member], topic, partitions)
    return member


def empty_group(broker, group_members, topic, group, name, expected, admin,
                partitions=PARTITIONS):
    """A "consumer" group whose only member consumed expected, committed and left."""
    member = stable_group(broker, group_members, topic, group, name, partitions)
    clients.wait_consumed([member], expected)
    member.close()
    wait_state(admin, group, ConsumerGroupState.EMPTY, members=0)
    return member


def high_watermarks(broker, topic, partitions=PARTITIONS):
    return {(topic, p): clients.watermarks(broker, topic, p)[1] for p in range(partitions)}


# ---------------------------------------------------------------- ListGroups


def test_list_consumer_groups_by_state(broker, topic, group_members):
    clients.create_topic(broker, topic, PARTITIONS)
    admin = clients.admin(broker)
    records = clients.produce_values(broker, topic, "list", {p: 2 for p in range(PARTITIONS)})
    stable, empty, simple = (group_of(topic, s) for s in ("stable", "empty", "simple"))

    empty_group(broker, group_members, topic, empty, "list-empty", records, admin)
    member = stable_group(broker, group_members, topic, stable, "list-stable")
    clients.wait_consumed([member], records)
    commit_without_membership(broker, simple, [TopicPartition(topic, 0, 1)])
    wait_state(admin, stable, ConsumerGroupState.STABLE, members=1)

    everything = list_groups(admin)
    assert {stable, empty, simple} <= set(everything)
    assert everything[stable].state == ConsumerGroupState.STABLE
    assert everything[empty].state == ConsumerGroupState.EMPTY
    assert everything[simple].state == ConsumerGroupState.EMPTY
    # protocol type "consumer" for subscribed groups, "" for offsets-only groups
    assert not everything[stable].is_simple_consumer_group
    assert not everything[empty].is_simple_consumer_group
    assert everything[simple].is_simple_consumer_group

    only_stable = list_groups(admin, states=[ConsumerGroupState.STABLE])
    assert stable in only_stable and empty not in only_stable and simple not in only_stable
    assert all(g.state == ConsumerGroupState.STABLE for g in only_stable.values())
    only_empty = list_groups(admin, states=[ConsumerGroupState.EMPTY])
    assert {empty, simple} <= set(only_empty) and stable not in only_empty
    assert all(g.state == ConsumerGroupState.EMPTY for g in only_empty.values())

    kp_admin = clients.kp_admin(broker)
    try:
        listed = set(kp_admin.list_consumer_groups())
    finally:
        kp_admin.close()
    assert {(stable, "consumer"), (empty, "consumer"), (simple, "")} <= listed, listed


# ---------------------------------------------------------------- DescribeGroups


def test_describe_consumer_groups(broker, topic, group_members):
    clients.create_topic(broker, topic, 4)
    admin = clients.admin(broker)
    group = group_of(topic, "described")
    a = group_members(broker, "describe-a", group, [topic])
    b = group_members(broker, "describe-b", group, [topic])
    owned = clients.wait_balanced([a, b], topic, 4)

    description = wait_state(admin, group, ConsumerGroupState.STABLE, members=2)
    assert description.group_id == group
    assert not description.is_simple_consumer_group
    assert description.partition_assignor == "range"
    coordinator = description.coordinator
    assert (coordinator.id, coordinator.host, coordinator.port) == \
        (1, "127.0.0.1", broker.port)
    members = {m.member_id: m for m in description.members}
    assert set(members) == {a.member_id, b.member_id}
    for member in (a, b):
        described = members[member.member_id]
        assert described.client_id == member.name
        assert "127.0.0.1" in described.host
        assert described.group_instance_id is None
        assert {(tp.topic, tp.partition) for tp in described.assignment.topic_partitions} == \
            {(topic, p) for p in owned[member]}

    a.close()
    b.close()
    description = wait_state(admin, group, ConsumerGroupState.EMPTY, members=0)
    assert description.members == []


def test_describe_static_member(broker, topic, group_members):
    clients.create_topic(broker, topic, 2)
    admin = clients.admin(broker)
    group = group_of(topic, "static")
    member = group_members(broker, "describe-static", group, [topic],
                           **{"group.instance.id": f"{group}-instance"})
    clients.wait_balanced([member], topic, 2)
    description = wait_state(admin, group, ConsumerGroupState.STABLE, members=1)
    [described] = description.members
    assert described.member_id == member.member_id
    assert described.group_instance_id == f"{group}-instance"


# ---------------------------------------------------------------- OffsetFetch


def test_committed_offsets_with_metadata_and_lag(broker, topic, group_members):
    clients.create_topic(broker, topic, PARTITIONS)
    admin = clients.admin(broker)
    group = group_of(topic, "lag")
    counts = {0: 5, 1: 3, 2: 4}
    records = clients.produce_values(broker, topic, "lag", counts)
    member = group_members(broker, "lag-member", group, [topic], commit=False)
    clients.wait_consumed([member], records)

    metadata = {p: f"consumed {counts[p]} of partition {p}" for p in range(PARTITIONS)}
    offsets = [TopicPartition(topic, p, counts[p], metadata=metadata[p])
               for p in range(PARTITIONS)]
    result = member.call(lambda c: c.commit(offsets=offsets, asynchronous=False))
    assert all(tp.error is None for tp in result), result
    extra = {0: 2, 1: 0, 2: 1}
    clients.produce_values(broker, topic, "lag-more", extra)

    listed = group_offsets(admin, group)  # every partition the group has offsets for
    assert set(listed) == {(topic, p) for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        tp = listed[(topic, p)]
        assert tp.error is None
        assert (tp.offset, tp.metadata) == (counts[p], metadata[p])

    asked = group_offsets(admin, group, [TopicPartition(topic, p) for p in range(PARTITIONS)])
    assert offsets_only(asked) == offsets_only(listed)
    assert {key: tp.metadata for key, tp in asked.items()} == \
        {(topic, p): metadata[p] for p in range(PARTITIONS)}

    # The member polls on: it may have read the extra records too. Those before the commit:
    consumed = {(topic, p): 0 for p in range(PARTITIONS)}
    for record in member.records():
        if record.value.startswith("lag:"):
            consumed[(record.topic, record.partition)] += 1
    high = high_watermarks(broker, topic)
    lag = {key: high[key] - listed[key].offset for key in listed}
    assert lag == {(topic, p): extra[p] for p in range(PARTITIONS)}
    assert {key: tp.offset for key, tp in listed.items()} == consumed

    committed = member.call(lambda c: c.committed(
        [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10))
    assert {tp.partition: tp.offset for tp in committed} == counts


def test_offset_fetch_for_several_groups(broker, topic):
    clients.create_topic(broker, topic, 2)
    clients.produce_values(broker, topic, "several", {0: 8, 1: 8})
    first, second, unknown = (group_of(topic, s) for s in ("first", "second", "unknown"))
    # confluent-kafka sends a metadata string with its NUL terminator (metadata_size =
    # strlen + 1 in confluent_kafka.c); the broker must store and return it verbatim.
    commit_without_membership(broker, first, [TopicPartition(topic, 0, 3, metadata="first p0")])
    kp_commit_without_membership(broker, second, {(topic, 0): (7, "second p0"),
                                                  (topic, 1): (2, "second p1")})

    with connect(broker) as conn:
        version = max_version(conn, OFFSET_FETCH)
        assert version is not None and version >= 8, f"OffsetFetch max version {version}"
        groups = offset_fetch_v8(conn, [(first, None), (second, {topic: [0, 1]}),
                                        (unknown, {topic: [0]})])

    assert set(groups) == {first, second, unknown}
    assert groups[first] == (0, {topic: {0: (3, "first p0\x00", 0)}})
    assert groups[second] == (0, {topic: {0: (7, "second p0", 0), 1: (2, "second p1", 0)}})
    error_code, topics = groups[unknown]
    assert error_code == 0
    [(offset, metadata, partition_error)] = topics[topic].values()
    assert (offset, partition_error) == (-1, 0) and metadata in ("", None), topics


# ---------------------------------------------------------------- manual assignment


def test_manual_assignment_commit(broker, topic):
    clients.create_topic(broker, topic, 2)
    admin = clients.admin(broker)
    group = group_of(topic, "manual")
    records = clients.produce_values(broker, topic, "manual", {0: 4, 1: 4})

    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        consumer.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
        read = []
        clients.wait_for(lambda: _poll_into(consumer, read) >= len(records), TIMEOUT_S,
                         interval_s=0, what="the assigned partitions to be read")
        assert sorted((m.partition(), m.offset(), m.value().decode()) for m in read) == \
            sorted((p, o, v) for v, (p, o) in records.items())
        result = consumer.commit(offsets=[TopicPartition(topic, 0, 3, metadata="manual p0"),
                                          TopicPartition(topic, 1, 4)], asynchronous=False)
        assert [tp.error for tp in result] == [None, None]
        assert (consumer.memberid() or None) is None
        assert clients.group_generation(consumer) in (-1, None)
        committed = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)],
                                       timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == {0: 3, 1: 4}
    finally:
        consumer.close()

    # Another assign()-only consumer of the group starts at the committed offset.
    resumed = clients.consumer(broker, **{"group.id": group})
    try:
        resumed.assign([TopicPartition(topic, 0)])  # no offset: the committed one
        message = clients.wait_for(lambda: _message(resumed), TIMEOUT_S,
                                   what="a record at the committed offset")
        assert (message.partition(), message.offset(), message.value()) == (0, 3, b"manual:0:3")
    finally:
        resumed.close()

    listing = list_groups(admin)[group]
    assert listing.is_simple_consumer_group and listing.state == ConsumerGroupState.EMPTY
    listed = group_offsets(admin, group)
    assert offsets_only(listed) == {(topic, 0): 3, (topic, 1): 4}
    assert listed[(topic, 0)].metadata == "manual p0"


OFFSET_COMMIT = 8
# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
COORDINATOR_RETRIABLE = {14, 15, 16}


def offset_commit_legacy(conn, version, group, offsets, generation=-1, member_id=""):
    """OffsetCommit v0 or v1 (dropped by Kafka 4.0, served here by a hand-written decoder).
    offsets: {(topic, partition): (offset, metadata or None)}. Returns {(topic, p): error}."""
    def encode_partition(item):
        partition, (offset, metadata) = item
        timestamp = rawkafka.int64(-1) if version >= 1 else b""
        return (rawkafka.int32(partition) + rawkafka.int64(offset) + timestamp
                + rawkafka.string(metadata))

    topics = {}
    for (name, partition), committed in sorted(offsets.items()):
        topics.setdefault(name, []).append((partition, committed))
    membership = (rawkafka.int32(generation) + rawkafka.string(member_id)
                  if version >= 1 else b"")
    body = rawkafka.string(group) + membership + rawkafka.array(
        sorted(topics.items()),
        lambda t: rawkafka.string(t[0]) + rawkafka.array(t[1], encode_partition))
    reader = conn.request(OFFSET_COMMIT, version, body)
    answer = reader.array(lambda r: (r.string(), r.array(lambda q: (q.int32(), q.int16()))))
    reader.expect_end()
    return {(name, p): error for name, partitions in answer for p, error in partitions}


def offset_fetch_legacy(conn, version, group, keys):
    """OffsetFetch v0 or v1 of keys [(topic, partition)].
    Returns {(topic, partition): (offset, metadata, error)}."""
    topics = {}
    for name, partition in sorted(keys):
        topics.setdefault(name, []).append(partition)
    body = rawkafka.string(group) + rawkafka.array(
        sorted(topics.items()),
        lambda t: rawkafka.string(t[0]) + rawkafka.array(t[1], rawkafka.int32))
    reader = conn.request(OFFSET_FETCH, version, body)
    answer = reader.array(lambda r: (r.string(), r.array(
        lambda q: (q.int32(), q.int64(), q.string(), q.int16()))))
    reader.expect_end()
    return {(name, p): (offset, metadata, error)
            for name, partitions in answer for p, offset, metadata, error in partitions}


def test_offset_commit_v0_and_v1_are_read_back(broker, topic):
    """Old clients' OffsetCommit v0/v1 commit as v2 does, a partition's metadata may be
    null, and a null group id (non-nullable in the schema) closes only its connection."""
    clients.create_topic(broker, topic, 2)
    group = group_of(topic, "legacy")
    keys = [(topic, 0), (topic, 1)]
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        # FindCoordinator creates __consumer_offsets; a client retries its commit until the
        # coordinator is up and loaded.
        clients.wait_for(lambda: rawkafka.find_coordinator_v1(conn, group)[0] == 0,
                         TIMEOUT_S, interval_s=0.2, what="a coordinator for the group")
        first = {(topic, 0): (5, None), (topic, 1): (7, "m")}
        v0 = clients.wait_for(
            lambda: (answer := offset_commit_legacy(conn, 0, group, first))
            and not set(answer.values()) & COORDINATOR_RETRIABLE and answer,
            TIMEOUT_S, interval_s=0.2, what="the coordinator to load")
        assert v0 == {(topic, 0): 0, (topic, 1): 0}
        assert offset_fetch_legacy(conn, 0, group, keys) == {
            (topic, 0): (5, "", 0), (topic, 1): (7, "m", 0)}
        v1 = offset_commit_legacy(conn, 1, group, {(topic, 0): (9, "été")})
        assert v1 == {(topic, 0): 0}
        assert offset_fetch_legacy(conn, 1, group, keys) == {
            (topic, 0): (9, "été", 0), (topic, 1): (7, "m", 0)}
    with rawkafka.Connection("127.0.0.1", broker.port) as bystander:
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            body = rawkafka.string(None) + rawkafka.array([], lambda t: t)
            conn.send_raw(rawkafka.frame(rawkafka.request_header(OFFSET_COMMIT, 0, 7) + body))
            assert conn.wait_closed(timeout_s=10), "a null group id was not refused"
        assert offset_fetch_legacy(bystander, 1, group, [(topic, 1)]) == {
            (topic, 1): (7, "m", 0)}


# A batch of offset records larger than __consumer_offsets' max.message.bytes cannot be
# stored however often the client retries: Kafka 4's group coordinator answers
# UNKNOWN_SERVER_ERROR (-1) for the commit's partitions, not a retriable error (3.x's
# GroupMetadataManager answered INVALID_COMMIT_OFFSET_SIZE, 28).
UNKNOWN_SERVER_ERROR = -1
SMALL_MESSAGE_BYTES = 4000


def test_commit_too_large_for_the_offsets_topic(start_broker, topic):
    # Each partition's metadata is within offset.metadata.max.bytes (4096); together the
    # batch is beyond the broker's message.max.bytes, which __consumer_offsets inherits.
    small = start_broker("commit-size", dict(BROKER_OVERRIDES, **{
        "message.max.bytes": str(SMALL_MESSAGE_BYTES)}))
    partitions = 16
    clients.create_topic(small, topic, partitions)
    group = group_of(topic, "oversized")
    consumer = clients.consumer(small, **{"group.id": group})
    try:
        metadata = "m" * 400
        assert partitions * len(metadata) > SMALL_MESSAGE_BYTES
        oversized = [TopicPartition(topic, p, 7, metadata=metadata) for p in range(partitions)]
        started = time.monotonic()
        with pytest.raises(KafkaException) as raised:
            consumer.commit(offsets=oversized, asynchronous=False)
        assert raised.value.args[0].code() == UNKNOWN_SERVER_ERROR, raised.value
        assert time.monotonic() - started < TIMEOUT_S, "the commit was retried"
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed[0].offset == OFFSET_INVALID, "part of a refused commit was stored"

        # A commit that fits still goes through on the same partition.
        fits = [TopicPartition(topic, 0, 3, metadata="fits"), TopicPartition(topic, 1, 4)]
        result = consumer.commit(offsets=fits, asynchronous=False)
        assert [tp.error for tp in result] == [None, None]
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert (committed[0].offset, committed[0].metadata) == (3, "fits")
    finally:
        consumer.close()
    small.stop()


def _message(consumer):
    message = consumer.poll(0.5)
    if message is None or message.error():
        return None
    return message


def _poll_into(consumer, messages):
    message = _message(consumer)
    if message is not None:
        messages.append(message)
    return len(messages)


# ---------------------------------------------------------------- DeleteGroups


def test_delete_consumer_groups(broker, topic, group_members):
    clients.create_topic(broker, topic, PARTITIONS)
    admin = clients.admin(broker)
    records = clients.produce_values(broker, topic, "delete", {p: 2 for p in range(PARTITIONS)})
    empty, active, unknown = (group_of(topic, s) for s in ("empty", "active", "unknown"))
    empty_group(broker, group_members, topic, empty, "delete-empty", records, admin)
    member = stable_group(broker, group_members, topic, active, "delete-active")
    clients.wait_consumed([member], records)
    wanted = {(topic, p): 2 for p in range(PARTITIONS)}
    assert offsets_only(group_offsets(admin, empty)) == wanted
    assert offsets_only(group_offsets(admin, active)) == wanted

    futures = admin.delete_consumer_groups([empty, active, unknown], request_timeout=10)
    assert futures[empty].result(timeout=15) is None
    with pytest.raises(KafkaException) as non_empty:
        futures[active].result(timeout=15)
    assert clients.confluent_error_code(non_empty.value) == KafkaError.NON_EMPTY_GROUP
    with pytest.raises(KafkaException) as not_found:
        futures[unknown].result(timeout=15)
    assert clients.confluent_error_code(not_found.value) == KafkaError.GROUP_ID_NOT_FOUND

    # The deleted group and its offsets are gone; the active one is untouched.
    everything = list_groups(admin)
    assert empty not in everything and active in everything
    assert group_offsets(admin, empty) == {}
    asked = group_offsets(admin, empty, [TopicPartition(topic, p) for p in range(PARTITIONS)])
    assert offsets_only(asked) == {(topic, p): OFFSET_INVALID for p in range(PARTITIONS)}
    assert offsets_only(group_offsets(admin, active)) == wanted
    assert wait_state(admin, active, ConsumerGroupState.STABLE, members=1)


# ---------------------------------------------------------------- OffsetDelete


def test_offset_delete(broker, topic, group_members):
    clients.create_topic(broker, topic, 2)
    admin = clients.admin(broker)
    records = clients.produce_values(broker, topic, "offset-delete", {0: 2, 1: 2})
    empty, active, unknown = (group_of(topic, s) for s in ("empty", "active", "unknown"))
    empty_group(broker, group_members, topic, empty, "offset-delete-empty", records, admin,
                partitions=2)
    member = stable_group(broker, group_members, topic, active, "offset-delete-active",
                          partitions=2)
    clients.wait_consumed([member], records)
    both = {(topic, 0): 2, (topic, 1): 2}
    assert offsets_only(group_offsets(admin, empty)) == both
    assert offsets_only(group_offsets(admin, active)) == both

    with connect(broker) as conn:
        assert max_version(conn, OFFSET_DELETE) is not None, "OffsetDelete not advertised"
        assert offset_delete_v0(conn, empty, {topic: [0]}) == (0, {topic: {0: 0}})
        # a group whose members subscribe to the topic keeps its offsets
        assert offset_delete_v0(conn, active, {topic: [0, 1]}) == \
            (0, {topic: {0: GROUP_SUBSCRIBED_TO_TOPIC, 1: GROUP_SUBSCRIBED_TO_TOPIC}})
        error_code, _topics = offset_delete_v0(conn, unknown, {topic: [0]})
        assert error_code == GROUP_ID_NOT_FOUND

    assert offsets_only(group_offsets(admin, empty)) == {(topic, 1): 2}
    asked = group_offsets(admin, empty, [TopicPartition(topic, 0), TopicPartition(topic, 1)])
    assert offsets_only(asked) == {(topic, 0): OFFSET_INVALID, (topic, 1): 2}
    assert offsets_only(group_offsets(admin, active)) == both


# ---------------------------------------------------------------- kafka-python admin


def test_kafka_python_admin(broker, topic, group_members):
    clients.create_topic(broker, topic, PARTITIONS)
    admin = clients.admin(broker)
    records = clients.produce_values(broker, topic, "kp-admin", {p: 3 for p in range(PARTITIONS)})
    empty, active = group_of(topic, "empty"), group_of(topic, "active")
    empty_group(broker, group_members, topic, empty, "kp-admin-empty", records, admin)
    member = stable_group(broker, group_members, topic, active, "kp-admin-active")
    clients.wait_consumed([member], records)
    wait_state(admin, active, ConsumerGroupState.STABLE, members=1)

    kp_admin = clients.kp_admin(broker)
    try:
        listed = set(kp_admin.list_consumer_groups())
        assert {(empty, "consumer"), (active, "consumer")} <= listed, listed

        [description] = kp_admin.describe_consumer_groups([active])
        assert (description.error_code, description.group, description.state,
                description.protocol_type, description.protocol) == \
            (0, active, "Stable", "consumer", "range")
        [described] = description.members
        assert (described.member_id, described.client_id) == (member.member_id, member.name)
        assert sorted(described.member_assignment.partitions()) == \
            [kafka.TopicPartition(topic, p) for p in range(PARTITIONS)]

        offsets = kp_admin.list_consumer_group_offsets(active)
        assert {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()} == \
            {(topic, p): 3 for p in range(PARTITIONS)}
        one = kp_admin.list_consumer_group_offsets(
            empty, partitions=[kafka.TopicPartition(topic, 1)])
        assert {(tp.topic, tp.partition): meta.offset for tp, meta in one.items()} == \
            {(topic, 1): 3}

        results = dict(kp_admin.delete_consumer_groups([empty, active]))
        assert results == {empty: kafka.errors.NoError,
                           active: kafka.errors.NonEmptyGroupError}, results
        listed = set(kp_admin.list_consumer_groups())
        assert (empty, "consumer") not in listed and (active, "consumer") in listed
    finally:
        kp_admin.close()
