"""Metadata, DescribeCluster, DescribeTopicPartitions and topic auto-creation.

Clients: kcat -L (text and JSON), confluent-kafka AdminClient, kafka-python
KafkaAdminClient, and raw Metadata v4 (rawkafka) where the exact error code matters.
"""

import re

import pytest
from confluent_kafka import KafkaError, TopicCollection

import clients
import rawkafka

# num.partitions=2 so that auto-created topics are told apart from the usual 1.
BROKER_OVERRIDES = {"num.partitions": "2", "auto.create.topics.enable": "true"}
AUTO_PARTITIONS = 2
ZERO_UUID = "AAAAAAAAAAAAAAAAAAAAAA"


def test_kcat_list_shows_broker_and_topic(broker, topic):
    clients.create_topic(broker, topic, partitions=3)
    output = clients.kcat(broker, "-L").stdout

    assert re.search(r"^\s*1 brokers:\s*$", output, re.M), output
    assert re.search(rf"^\s*broker 1 at 127\.0\.0\.1:{broker.port}\b", output, re.M), output
    assert re.search(rf'^\s*topic "{re.escape(topic)}" with 3 partitions:\s*$', output, re.M), \
        output
    for partition in range(3):
        line = rf"^\s*partition {partition}, leader 1, replicas: 1, isrs: 1\s*$"
        assert re.search(line, output, re.M), f"no line for partition {partition}:\n{output}"


def test_kcat_list_json(broker, topic):
    if not clients.kcat_supports_json():
        pytest.skip("this kcat was built without JSON support")
    clients.create_topic(broker, topic, partitions=3)
    metadata = clients.kcat_metadata_json(broker)

    assert metadata["controllerid"] == 1
    assert metadata["originating_broker"]["id"] == 1
    assert metadata["brokers"] == [{"id": 1, "name": f"127.0.0.1:{broker.port}"}]
    by_name = {entry["topic"]: entry for entry in metadata["topics"]}
    assert topic in by_name, f"{topic} missing from {sorted(by_name)}"
    entry = by_name[topic]
    assert "error" not in entry, entry
    assert [p["partition"] for p in entry["partitions"]] == [0, 1, 2]
    for partition in entry["partitions"]:
        assert "error" not in partition, partition
        assert partition["leader"] == 1
        assert partition["replicas"] == [{"id": 1}]
        assert partition["isrs"] == [{"id": 1}]


def test_kcat_list_one_topic_json(broker, topic):
    if not clients.kcat_supports_json():
        pytest.skip("this kcat was built without JSON support")
    clients.create_topic(broker, topic, partitions=1)
    metadata = clients.kcat_metadata_json(broker, topic=topic)
    assert metadata["query"]["topic"] == topic
    assert [entry["topic"] for entry in metadata["topics"]] == [topic]


def test_confluent_list_topics(broker, topic):
    clients.create_topic(broker, topic, partitions=3)
    metadata = clients.admin(broker).list_topics(timeout=10)

    # (orig_broker_id is -1 when the bootstrap connection answered: a librdkafka detail.)
    assert metadata.controller_id == 1
    assert metadata.cluster_id, "cluster id is empty"
    assert list(metadata.brokers) == [1]
    assert metadata.brokers[1].host == "127.0.0.1"
    assert metadata.brokers[1].port == broker.port
    described = metadata.topics[topic]
    assert described.error is None
    assert sorted(described.partitions) == [0, 1, 2]
    for partition in described.partitions.values():
        assert partition.error is None
        assert partition.leader == 1
        assert partition.replicas == [1]
        assert partition.isrs == [1]


def test_confluent_describe_cluster(broker):
    result = clients.admin(broker).describe_cluster(request_timeout=10).result(timeout=15)
    assert result.cluster_id
    assert result.controller is not None and result.controller.id == 1
    assert [node.id for node in result.nodes] == [1]
    assert result.nodes[0].host == "127.0.0.1"
    assert result.nodes[0].port == broker.port


def test_kafka_python_describe_cluster_and_topics(broker, topic):
    clients.create_topic(broker, topic, partitions=2)
    admin = clients.kp_admin(broker)
    try:
        cluster = admin.describe_cluster()
        assert cluster["controller_id"] == 1
        assert cluster["cluster_id"]
        assert [(b["node_id"], b["host"], b["port"]) for b in cluster["brokers"]] == \
            [(1, "127.0.0.1", broker.port)]

        assert topic in admin.list_topics()
        (described,) = admin.describe_topics([topic])
        assert described["topic"] == topic
        assert described["error_code"] == 0
        partitions = sorted(described["partitions"], key=lambda p: p["partition"])
        assert [p["partition"] for p in partitions] == [0, 1]
        for partition in partitions:
            assert partition["error_code"] == 0
            assert partition["leader"] == 1
            assert list(partition["replicas"]) == [1]
            assert list(partition["isr"]) == [1]
    finally:
        admin.close()


def test_cluster_id_same_for_every_client(broker):
    confluent_id = clients.admin(broker).list_topics(timeout=10).cluster_id
    admin = clients.kp_admin(broker)
    try:
        kafka_python_id = admin.describe_cluster()["cluster_id"]
    finally:
        admin.close()
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        raw_id = rawkafka.metadata_v4(conn, [])["cluster_id"]
    assert confluent_id == kafka_python_id == raw_id


def _describe_topic(broker, name):
    admin = clients.admin(broker)
    futures = admin.describe_topics(TopicCollection([name]), request_timeout=10)
    return futures[name].result(timeout=15)


def _topic_id(broker, name):
    description = _describe_topic(broker, name)
    assert description.name == name
    topic_id = description.topic_id
    assert topic_id is not None, "no topic id"
    assert str(topic_id) != ZERO_UUID, "topic id is all zeros"
    return str(topic_id)


def test_describe_topics_partitions(broker, topic):
    clients.create_topic(broker, topic, partitions=3)
    description = _describe_topic(broker, topic)
    assert not description.is_internal
    assert [p.id for p in description.partitions] == [0, 1, 2]
    for partition in description.partitions:
        assert partition.leader.id == 1
        assert [node.id for node in partition.replicas] == [1]
        assert [node.id for node in partition.isr] == [1]


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_topic_ids_stable_across_restart(broker, topic, hard):
    other = topic + "-other"
    clients.create_topic(broker, topic, partitions=2)
    clients.create_topic(broker, other, partitions=1)
    before = _topic_id(broker, topic)
    other_before = _topic_id(broker, other)
    assert before != other_before, "two topics share one topic id"

    broker.restart(hard=hard)

    clients.wait_for(lambda: _describe_topic(broker, topic), 30,
                     what=f"{topic} to be described after restart")
    assert _topic_id(broker, topic) == before
    assert _topic_id(broker, other) == other_before
    metadata = clients.admin(broker).list_topics(timeout=10)
    assert sorted(metadata.topics[topic].partitions) == [0, 1]


def test_auto_create_on_produce(broker, topic):
    assert topic not in clients.admin(broker).list_topics(timeout=10).topics
    messages = clients.produce_ok(broker, topic, [{"value": b"hello"}])
    assert messages[0].topic() == topic
    assert messages[0].offset() == 0

    metadata = clients.admin(broker).list_topics(topic=topic, timeout=10)
    assert metadata.topics[topic].error is None
    assert sorted(metadata.topics[topic].partitions) == list(range(AUTO_PARTITIONS))
    for partition in metadata.topics[topic].partitions.values():
        assert partition.leader == 1


def test_auto_create_by_metadata_request(broker, topic):
    def created():
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            response = rawkafka.metadata_v4(conn, [topic], allow_auto_topic_creation=True)
        error_code, partitions = response["topics"][topic]
        # Kafka may answer LEADER_NOT_AVAILABLE while the topic is being created.
        assert error_code in (rawkafka.NONE, rawkafka.LEADER_NOT_AVAILABLE), error_code
        return error_code == rawkafka.NONE and partitions

    partitions = clients.wait_for(created, 30, what=f"auto-creation of {topic}")
    assert sorted(partitions) == list(range(AUTO_PARTITIONS))
    for error_code, leader, replicas, isr in partitions.values():
        assert (error_code, leader, replicas, isr) == (0, 1, [1], [1])


def test_no_auto_create_when_request_disallows_it(broker, topic):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        response = rawkafka.metadata_v4(conn, [topic], allow_auto_topic_creation=False)
        error_code, partitions = response["topics"][topic]
        assert error_code == rawkafka.UNKNOWN_TOPIC_OR_PARTITION
        assert partitions == {}
        all_topics = rawkafka.metadata_v4(conn, None)["topics"]
    assert topic not in all_topics


def test_raw_metadata_brokers(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        response = rawkafka.metadata_v4(conn, [])
    assert response["brokers"] == [(1, "127.0.0.1", broker.port, None)]
    assert response["controller_id"] == 1
    assert response["topics"] == {}


def test_auto_create_disabled(start_broker, topic):
    broker = start_broker("no-autocreate", {"auto.create.topics.enable": "false"})

    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        response = rawkafka.metadata_v4(conn, [topic], allow_auto_topic_creation=True)
        assert response["topics"][topic][0] == rawkafka.UNKNOWN_TOPIC_OR_PARTITION
        batch = rawkafka.build_batch([(b"k", b"v", [])])
        result = rawkafka.produce(conn, topic, 0, batch)
        assert result.error_code == rawkafka.UNKNOWN_TOPIC_OR_PARTITION, result

    results = clients.produce(broker, topic, [{"value": b"lost"}], timeout_s=30,
                              **{"message.timeout.ms": 10000,
                                 "topic.metadata.propagation.max.ms": 2000})
    error, _message = results[0]
    assert error is not None, "produce to a missing topic succeeded with auto-create off"
    assert error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), error

    metadata = clients.admin(broker).list_topics(timeout=10)
    assert topic not in metadata.topics

    # Explicit creation still works on this broker.
    clients.create_topic(broker, topic, partitions=1)
    assert clients.produce_ok(broker, topic, [{"value": b"v"}])[0].offset() == 0
    assert broker.stop() == 0


# ---------------------------------------------------------------- broker liveness

DESCRIBE_CLUSTER = 60


def describe_cluster_v2(conn, include_fenced_brokers):
    """DescribeCluster v2 (KIP-1073); returns (controller id, [(id, host, port, rack, fenced)])."""
    body = (rawkafka.boolean(False) + rawkafka.int8(1)  # endpoint type: brokers
            + rawkafka.boolean(include_fenced_brokers) + rawkafka.EMPTY_TAGGED_FIELDS)
    reader = conn.request(DESCRIBE_CLUSTER, 2, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms
    assert reader.int16() == 0
    reader.compact_string()  # error_message
    assert reader.int8() == 1
    assert reader.compact_string()  # cluster_id
    controller_id = reader.int32()

    def read_broker(r):
        entry = (r.int32(), r.compact_string(), r.int32(), r.compact_string(), r.boolean())
        r.skip_tagged_fields()
        return entry

    brokers = reader.compact_array(read_broker)
    reader.int32()  # cluster_authorized_operations
    reader.skip_tagged_fields()
    reader.expect_end()
    return controller_id, brokers


@pytest.mark.parametrize("include_fenced", [False, True])
def test_describe_cluster_v2_lists_the_live_broker_unfenced(broker, include_fenced):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        controller_id, brokers = describe_cluster_v2(conn, include_fenced)
    assert controller_id == 1
    assert brokers == [(1, "127.0.0.1", broker.port, None, False)]


def test_a_restarted_broker_registers_again_and_leads_its_partitions(start_broker, topic):
    # Every start registers a new incarnation (fenced) and unfences it: the partitions
    # must come back led by it, with no error (hard restart too: no clean shutdown).
    node = start_broker("reregister")
    clients.create_topic(node, topic, partitions=2)
    for restart in range(2):
        node.restart(hard=restart == 1)
        with rawkafka.Connection("127.0.0.1", node.port) as conn:
            metadata = rawkafka.metadata_v4(conn, [topic])
            _, brokers = describe_cluster_v2(conn, True)
        assert [b[0] for b in metadata["brokers"]] == [1]
        assert brokers == [(1, "127.0.0.1", node.port, None, False)]
        error_code, partitions = metadata["topics"][topic]
        assert error_code == 0
        assert partitions == {index: (0, 1, [1], [1]) for index in range(2)}, partitions
