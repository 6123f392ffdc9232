"""Sarama (Go), unmodified, against the broker: `sarama_client/main.go` built against
Debian's Sarama 1.22.1 (sarama.py). Sarama speaks older versions than the other clients
here (Produce v3, Fetch v4, Metadata v5, ListOffsets v1, OffsetCommit v2, OffsetFetch v1,
FindCoordinator v0, JoinGroup v1, CreateTopics v2, DeleteTopics v1, AlterConfigs v0),
all of which Kafka 4.x serves.

Covered: its SyncProducer with every codec it may send at Produce v3 (zstd needs v7 and
is refused with UNSUPPORTED_COMPRESSION_TYPE, nothing appended), read back by Sarama and by
confluent-kafka with keys, values, headers and offsets; its AsyncProducer's pipelined
requests answered in order; records of other clients read by Sarama, also from inside a
compressed batch; confluent-kafka's transactions read committed (the aborted one skipped
through Fetch v4's aborted list) and uncommitted; its idempotent producer; ListOffsets;
offset commits of a standalone consumer; a consumer group of two Sarama members with
Sarama's own range assignment (disjoint, complete, handed over on leave, offsets
committed); and its ClusterAdmin (create with configs, describe, alter configs, add
partitions, delete records, delete, groups). Its DescribeConfigs is v0, which Kafka 4.0
removed (KIP-896): the connection is closed, as Kafka 4.x does.
"""

import re

import pytest
from confluent_kafka.admin import ConfigResource

import clients
import rawkafka
import sarama

BROKER_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "1",
}
UNSUPPORTED_COMPRESSION_TYPE = 76
TOPIC_ALREADY_EXISTS = 36
CODECS = {"none": rawkafka.CODEC_NONE, "gzip": rawkafka.CODEC_GZIP,
          "snappy": rawkafka.CODEC_SNAPPY, "lz4": rawkafka.CODEC_LZ4}


def produced(result):
    """(partition, offset) of every record a `produce` run sent, in order."""
    return [(line["partition"], line["offset"]) for line in result.lines]


def records_by_partition(result):
    """What a `produce` run with the default value prefix sent, as
    {partition: [(offset, key, value, headers)]}."""
    out = {}
    for line in result.lines:
        i = line["i"]
        out.setdefault(line["partition"], []).append(
            (line["offset"], f"k{i}", f"v{i}", {"n": str(i)}))
    return out


def sarama_read(broker, topic, partition, count, offset=-2, read_committed=False):
    result = sarama.run(broker, "consume", "-topic", topic, "-partition", partition,
                        "-offset", offset, "-count", count,
                        *(["-read-committed"] if read_committed else []))
    records = [line for line in result.lines if "offset" in line]
    return [(r["offset"], r["key"], r["value"], r["headers"]) for r in records]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4"])
def test_sarama_produces_and_reads_back_every_codec(broker, topic, codec):
    clients.create_topic(broker, topic, 3)
    result = sarama.run(broker, "produce", "-topic", topic, "-count", 30, "-codec", codec)
    sent = records_by_partition(result)
    assert sum(len(records) for records in sent.values()) == 30
    assert len(sent) > 1, "the hash partitioner should spread 30 keys over 3 partitions"
    for partition, records in sent.items():
        # One record per request: each partition's offsets run 0, 1, 2, ...
        assert [offset for offset, *_ in records] == list(range(len(records)))
        # Each stored as Sarama compressed it.
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            batches = rawkafka.fetch(conn, topic, partition, 0).batches()
        assert [b.compression_type for b in batches] == [CODECS[codec]] * len(records)
        assert sarama_read(broker, topic, partition, len(records)) == records
        # The same records through another client and Fetch version.
        messages = clients.consume(broker, topic, partition, 0, len(records))
        assert [(m.offset(), m.key().decode(), m.value().decode(),
                 {k: v.decode() for k, v in m.headers()}) for m in messages] == records


def test_sarama_async_producer_pipelines_in_order(broker, topic):
    # Up to five produce requests in flight per connection, each with whatever batches
    # queued meanwhile: the broker must answer them in order, so each partition's
    # offsets follow the order the records were sent in.
    clients.create_topic(broker, topic, 3)
    count = 3000
    result = sarama.run(broker, "produce", "-topic", topic, "-count", count, "-acks", 1,
                        "-codec", "lz4", "-async", "-prefix", "async")
    sent = sorted(result.lines, key=lambda line: line["i"])
    assert [line["i"] for line in sent] == list(range(count))
    for partition in range(3):
        mine = [line for line in sent if line["partition"] == partition]
        assert [line["offset"] for line in mine] == list(range(len(mine)))
        messages = clients.consume(broker, topic, partition, 0, len(mine))
        assert [m.value().decode() for m in messages] == [f"async{line['i']}" for line in mine]


def test_zstd_at_produce_v3_is_refused_and_nothing_is_appended(broker, topic):
    clients.create_topic(broker, topic, 1)
    result = sarama.run(broker, "produce", "-topic", topic, "-count", 1, "-codec", "zstd",
                        "-partition", 0, check=False)
    assert result.code == 1 and result.error["code"] == UNSUPPORTED_COMPRESSION_TYPE, result
    assert clients.watermarks(broker, topic, 0) == (0, 0)


def test_zstd_topic_is_refused_to_fetch_v4(broker, topic):
    clients.create_topic(broker, topic, 1, {"compression.type": "zstd"})
    clients.produce_ok(broker, topic, [{"value": b"stored as zstd"}])
    result = sarama.run(broker, "consume", "-topic", topic, "-count", 1, "-timeout", "10s",
                        check=False)
    assert result.code == 1 and result.error["code"] == UNSUPPORTED_COMPRESSION_TYPE, result


def test_sarama_reads_other_clients_records_from_inside_a_batch(broker, topic):
    clients.create_topic(broker, topic, 1)
    values = [f"value-{i}".encode() * 10 for i in range(50)]
    # One lz4 batch of 50 records from confluent-kafka (linger holds them together).
    clients.produce_ok(broker, topic, [{"value": v, "key": b"key", "partition": 0,
                                        "headers": [("h", b"x")]} for v in values],
                       **{"compression.type": "lz4", "linger.ms": 100})
    read = sarama_read(broker, topic, 0, 20, offset=30)
    assert read == [(30 + i, "key", values[30 + i].decode(), {"h": "x"}) for i in range(20)]


def test_sarama_read_committed_skips_aborted_transactions(broker, topic):
    clients.create_topic(broker, topic, 1)
    producer = clients.producer(broker, **{"transactional.id": topic + "-txn"})
    producer.init_transactions(30)
    for outcome, values in (("commit", ["c0", "c1", "c2"]), ("abort", ["a0", "a1", "a2"]),
                            ("commit", ["c3", "c4"])):
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value=value.encode(), key=b"k", partition=0)
        producer.flush(30)
        if outcome == "commit":
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    # Each transaction ends in a marker that takes an offset: c0-c2 at 0-2, marker 3,
    # a0-a2 at 4-6, marker 7, c3-c4 at 8-9, marker 10.
    committed = sarama_read(broker, topic, 0, 5, read_committed=True)
    assert [(offset, value) for offset, _k, value, _h in committed] == \
        [(0, "c0"), (1, "c1"), (2, "c2"), (8, "c3"), (9, "c4")]
    everything = sarama_read(broker, topic, 0, 8)
    assert [(offset, value) for offset, _k, value, _h in everything] == \
        [(0, "c0"), (1, "c1"), (2, "c2"), (4, "a0"), (5, "a1"), (6, "a2"), (8, "c3"),
         (9, "c4")]


def test_sarama_idempotent_producer_writes_each_record_once(broker, topic):
    clients.create_topic(broker, topic, 1)
    result = sarama.run(broker, "produce", "-topic", topic, "-count", 40, "-partition", 0,
                        "-idempotent", "-prefix", "idem")
    assert produced(result) == [(0, i) for i in range(40)]
    messages = clients.consume_all(broker, topic, 0)
    assert [(m.offset(), m.value()) for m in messages] == \
        [(i, f"idem{i}".encode()) for i in range(40)]


def test_sarama_list_offsets_follow_appends_and_deleted_records(broker, topic):
    clients.create_topic(broker, topic, 1)
    sarama.run(broker, "produce", "-topic", topic, "-count", 12, "-partition", 0)
    offsets = sarama.run(broker, "offsets", "-topic", topic).lines[-1]
    assert (offsets["oldest"], offsets["newest"]) == (0, 12)
    sarama.run(broker, "admin", "-op", "delete-records", "-topic", topic, "-offset", 5)
    offsets = sarama.run(broker, "offsets", "-topic", topic).lines[-1]
    assert (offsets["oldest"], offsets["newest"]) == (5, 12)
    assert sarama_read(broker, topic, 0, 7)[0][0] == 5


def test_sarama_offset_commit_is_read_back_by_sarama_and_kafka_python(broker, topic):
    clients.create_topic(broker, topic, 2)
    group = topic + "-group"
    line = sarama.run(broker, "commit", "-group", group, "-topic", topic, "-partition", 1,
                      "-offset", 17).lines[-1]
    # Before any commit the manager starts at its Initial setting (newest: -1).
    assert line == {"before": -1, "after": 17, "metadata": "from sarama"}
    # Read back by kafka-python: confluent-kafka 2.16's list_consumer_group_offsets reads
    # each metadata string past its end (librdkafka's copy has no NUL), so about one read
    # in three carries stray bytes after "from sarama".
    admin = clients.kp_admin(broker)
    try:
        listed = admin.list_consumer_group_offsets(group)
    finally:
        admin.close()
    committed = {(tp.topic, tp.partition): (meta.offset, meta.metadata)
                 for tp, meta in listed.items()}
    assert committed == {(topic, 1): (17, "from sarama")}


def test_sarama_group_shares_partitions_and_hands_them_over(broker, topic):
    partitions = 4
    clients.create_topic(broker, topic, partitions)
    group = topic + "-group"
    first_batch = sarama.run(broker, "produce", "-topic", topic, "-count", 40,
                             "-prefix", "a")
    first = sarama.group_member(broker, "sarama-a", group, [topic])
    second = None
    try:
        clients.wait_for(lambda: len(first.events("record")) == 40,
                         what="member a to read the first 40 records")
        assigned = first.events("assigned")[-1]
        assert assigned["claims"] == {topic: list(range(partitions))}
        # Kafka names a member `<client id>-<UUID>`.
        assert re.fullmatch(r"sarama-group-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}",
                            assigned["member_id"]), assigned["member_id"]
        second = sarama.group_member(broker, "sarama-b", group, [topic])

        def balanced():
            a, b = first.events("assigned"), second.events("assigned")
            if not b or not a or a[-1]["generation"] != b[-1]["generation"]:
                return None
            return a[-1], b[-1]

        clients.wait_for(balanced, what="both members in one generation")
        a, b = balanced()
        claims_a, claims_b = a["claims"][topic], b["claims"][topic]
        # Sarama's range strategy: two contiguous halves, together every partition.
        assert sorted([claims_a, claims_b]) == [[0, 1], [2, 3]]
        generation = a["generation"]
        second_batch = sarama.run(broker, "produce", "-topic", topic, "-count", 40,
                                  "-prefix", "b")

        def read_in(member, prefix):
            return {(r["partition"], r["offset"], r["value"]) for r in member.events("record")
                    if r["value"].startswith(prefix) and r["generation"] == generation}

        expected = {(line["partition"], line["offset"], f"b{line['i']}")
                    for line in second_batch.lines}
        clients.wait_for(lambda: read_in(first, "b") | read_in(second, "b") == expected,
                         what="the second 40 records read by the two members")
        assert {p for p, _o, _v in read_in(first, "b")} <= set(claims_a)
        assert {p for p, _o, _v in read_in(second, "b")} <= set(claims_b)
        # b leaves (LeaveGroup on SIGTERM): a takes every partition again and reads only
        # what came after b's committed offsets, which cover everything it read.
        assert second.stop() == 0
        assert second.events("closed")
        clients.wait_for(lambda: first.events("assigned")[-1]["generation"] > generation,
                         what="member a to rejoin after b left")
        assert first.events("assigned")[-1]["claims"] == {topic: list(range(partitions))}
        third_batch = sarama.run(broker, "produce", "-topic", topic, "-count", 8,
                                 "-prefix", "c")
        clients.wait_for(lambda: len([r for r in first.events("record")
                                      if r["value"].startswith("c")]) == 8,
                         what="member a to read the last 8 records")
        values_read = [r["value"] for r in first.events("record") + second.events("record")]
        assert len(values_read) == len(set(values_read)) == 88, \
            "a record was read twice or missed across the hand-over"
        assert first.stop() == 0
        for member in (first, second):
            assert not member.events("error") and not member.events("failed"), \
                member.events()
    finally:
        for member in (first, second):
            if member is not None:
                member.kill()
    # Both members committed what they read before leaving: the group's offsets are the
    # partitions' ends.
    ends = {}
    for result in (first_batch, second_batch, third_batch):
        for line in result.lines:
            ends[line["partition"]] = max(ends.get(line["partition"], 0), line["offset"] + 1)
    described = sarama.run(broker, "admin", "-op", "groups", "-group", group, "-topic", topic,
                           "-partitions", partitions).lines[-1]
    assert described["listed"].get(group) == "consumer"
    assert described["state"] == "Empty" and described["members"] == []
    committed = {int(p): o for p, o in described["committed"][topic].items()}
    assert committed == ends


def test_sarama_cluster_admin(broker, topic):
    created = sarama.run(broker, "admin", "-op", "create", "-topic", topic, "-partitions", 2,
                         "-config", "retention.ms=3600000,cleanup.policy=compact")
    assert created.lines == [{"created": topic}]
    again = sarama.run(broker, "admin", "-op", "create", "-topic", topic, check=False)
    assert again.code == 1 and again.error["code"] == TOPIC_ALREADY_EXISTS, again
    described = sarama.run(broker, "admin", "-op", "describe-topic", "-topic", topic)
    assert described.lines == [{"topic": topic, "partitions": 2, "replication_factor": 1,
                                "internal": False}]
    # AlterConfigs v0 replaces the topic's whole set of configs.
    sarama.run(broker, "admin", "-op", "alter-config", "-topic", topic,
               "-config", "retention.ms=7200000")
    configs = clients.admin(broker).describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, topic)])
    (entries,) = [future.result(timeout=30) for future in configs.values()]
    assert entries["retention.ms"].value == "7200000"
    assert (entries["cleanup.policy"].value, entries["cleanup.policy"].is_default) == \
        ("delete", True)
    # Sarama 1.22 describes configs with DescribeConfigs v0, which Kafka 4.0 removed
    # (KIP-896): the broker closes the connection, and Sarama reports the EOF.
    refused = sarama.run(broker, "admin", "-op", "describe-config", "-topic", topic,
                         check=False)
    assert refused.code == 1 and refused.error["error"] == "EOF", refused

    sarama.run(broker, "admin", "-op", "create-partitions", "-topic", topic,
               "-partitions", 5)
    described = sarama.run(broker, "admin", "-op", "describe-topic", "-topic", topic)
    assert described.lines[0]["partitions"] == 5
    sarama.run(broker, "admin", "-op", "delete", "-topic", topic)
    clients.wait_for(lambda: topic not in clients.admin(broker).list_topics(timeout=10).topics,
                     what=f"{topic} to be gone")
