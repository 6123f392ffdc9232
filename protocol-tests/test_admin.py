"""CreateTopics, DeleteTopics, CreatePartitions and DescribeConfigs.

With confluent-kafka AdminClient and kafka-python KafkaAdminClient, including the Kafka
error each client surfaces for invalid requests.
"""

import kafka.admin
import kafka.errors
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import ConfigResource, ConfigSource, NewPartitions, NewTopic, \
    ResourceType

import clients

# num.partitions=3 so that "broker default" partition counts (-1) are recognisable.
BROKER_OVERRIDES = {"num.partitions": "3", "auto.create.topics.enable": "true"}
BROKER_DEFAULT_PARTITIONS = 3
TIMEOUT_S = 30

# Kafka's topic configs with their defaults (a broker without overrides for them).
DEFAULT_TOPIC_CONFIGS = {
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "delete.retention.ms": "86400000",
    "file.delete.delay.ms": "60000",
    "flush.messages": "9223372036854775807",
    "flush.ms": "9223372036854775807",
    "index.interval.bytes": "4096",
    "max.compaction.lag.ms": "9223372036854775807",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "min.cleanable.dirty.ratio": "0.5",
    "min.compaction.lag.ms": "0",
    "min.insync.replicas": "1",
    "preallocate": "false",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "segment.index.bytes": "10485760",
    "segment.jitter.ms": "0",
    "segment.ms": "604800000",
    "unclean.leader.election.enable": "false",
}
DYNAMIC_TOPIC_CONFIG = 1
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5


# ---------------------------------------------------------------- helpers


def confluent_create(broker, new_topics, validate_only=False):
    """Runs CreateTopics; returns {name: None or KafkaError code}."""
    admin = clients.admin(broker)
    futures = admin.create_topics(new_topics, validate_only=validate_only,
                                  request_timeout=TIMEOUT_S, operation_timeout=TIMEOUT_S)
    return {name: _outcome(future) for name, future in futures.items()}


def _outcome(future):
    try:
        future.result(timeout=TIMEOUT_S)
        return None
    except KafkaException as error:
        return clients.confluent_error_code(error)


def topic_names(broker):
    return set(clients.admin(broker).list_topics(timeout=10).topics)


def partition_count(broker, name):
    metadata = clients.admin(broker).list_topics(topic=name, timeout=10)
    return len(metadata.topics[name].partitions)


def describe_topic_configs(broker, name, timeout_s=TIMEOUT_S):
    resource = ConfigResource(ResourceType.TOPIC, name)
    futures = clients.admin(broker).describe_configs([resource], request_timeout=timeout_s)
    return futures[resource].result(timeout=timeout_s)


def wait_deleted(broker, name):
    clients.wait_for(lambda: name not in topic_names(broker), TIMEOUT_S,
                     what=f"{name} to disappear from metadata")


def kp_error(callable_, *args, **kwargs):
    """The kafka-python error class raised by callable_, or None."""
    try:
        callable_(*args, **kwargs)
        return None
    except kafka.errors.KafkaError as error:
        return type(error)


@pytest.fixture
def kp_admin(broker):
    admin = clients.kp_admin(broker)
    yield admin
    admin.close()


# ---------------------------------------------------------------- happy paths


def test_confluent_create_list_describe_delete(broker, topic):
    configs = {"retention.ms": "3600000", "cleanup.policy": "compact"}
    assert confluent_create(broker, [NewTopic(topic, 2, 1, config=configs)]) == {topic: None}
    assert topic in topic_names(broker)
    assert partition_count(broker, topic) == 2

    entries = describe_topic_configs(broker, topic)
    for name, value in configs.items():
        assert entries[name].value == value
        assert entries[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        assert not entries[name].is_default

    futures = clients.admin(broker).delete_topics([topic], request_timeout=TIMEOUT_S,
                                                  operation_timeout=TIMEOUT_S)
    assert futures[topic].result(timeout=TIMEOUT_S) is None
    wait_deleted(broker, topic)
    described = clients.admin(broker).describe_topics(TopicCollection([topic]),
                                                      request_timeout=10)[topic]
    with pytest.raises(KafkaException) as raised:
        described.result(timeout=15)
    assert clients.confluent_error_code(raised.value) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_kafka_python_create_list_describe_delete(broker, topic, kp_admin):
    response = kp_admin.create_topics([kafka.admin.NewTopic(
        topic, num_partitions=4, replication_factor=1,
        topic_configs={"retention.ms": "7200000", "segment.bytes": "1048576"})])
    assert [(name, code) for name, code, *_ in response.topic_errors] == [(topic, 0)]
    assert topic in kp_admin.list_topics()
    (described,) = kp_admin.describe_topics([topic])
    assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2, 3]

    (config_response,) = kp_admin.describe_configs(
        [kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.TOPIC, topic)])
    (resource,) = config_response.resources
    error_code, _message, _type, name, entries = resource[:5]
    assert (error_code, name) == (0, topic)
    by_name = {entry[0]: entry for entry in entries}
    assert by_name["retention.ms"][1] == "7200000"
    assert by_name["retention.ms"][3] == DYNAMIC_TOPIC_CONFIG
    assert by_name["segment.bytes"][1] == "1048576"
    assert by_name["segment.bytes"][3] == DYNAMIC_TOPIC_CONFIG
    assert by_name["cleanup.policy"][1] == "delete"
    assert by_name["cleanup.policy"][3] == DEFAULT_CONFIG

    response = kp_admin.delete_topics([topic])
    assert [(name, code) for name, code, *_ in response.topic_error_codes] == [(topic, 0)]
    wait_deleted(broker, topic)
    assert topic not in kp_admin.list_topics()


def test_create_with_broker_defaults(broker, topic):
    outcome = confluent_create(broker, [NewTopic(topic, num_partitions=-1,
                                                 replication_factor=-1)])
    assert outcome == {topic: None}
    assert partition_count(broker, topic) == BROKER_DEFAULT_PARTITIONS


def test_create_several_topics_with_one_bad(broker, topic):
    good, bad = topic + "-good", topic + "/bad"
    outcome = confluent_create(broker, [NewTopic(good, 1, 1), NewTopic(bad, 1, 1)])
    assert outcome == {good: None, bad: KafkaError.TOPIC_EXCEPTION}
    names = topic_names(broker)
    assert good in names and bad not in names


def test_validate_only_creates_nothing(broker, topic, kp_admin):
    assert confluent_create(broker, [NewTopic(topic, 2, 1)], validate_only=True) == \
        {topic: None}
    outcome = confluent_create(broker, [NewTopic(topic + "-zero", 0, 1)], validate_only=True)
    assert outcome == {topic + "-zero": KafkaError.INVALID_PARTITIONS}

    response = kp_admin.create_topics([kafka.admin.NewTopic(topic, 2, 1)], validate_only=True)
    assert [(name, code) for name, code, *_ in response.topic_errors] == [(topic, 0)]

    assert topic not in topic_names(broker)
    # And it can then be created for real.
    assert confluent_create(broker, [NewTopic(topic, 2, 1)]) == {topic: None}


def test_deleted_topic_can_be_created_again_from_offset_zero(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    old_id = str(clients.admin(broker).describe_topics(
        TopicCollection([topic]), request_timeout=10)[topic].result(timeout=15).topic_id)
    clients.produce_ok(broker, topic, [{"value": b"old-%d" % i} for i in range(5)])
    assert clients.watermarks(broker, topic, 0) == (0, 5)

    futures = clients.admin(broker).delete_topics([topic], operation_timeout=TIMEOUT_S)
    futures[topic].result(timeout=TIMEOUT_S)
    wait_deleted(broker, topic)

    clients.create_topic(broker, topic, partitions=1)
    new_id = str(clients.admin(broker).describe_topics(
        TopicCollection([topic]), request_timeout=10)[topic].result(timeout=15).topic_id)
    assert new_id != old_id, "a re-created topic kept the old topic id"
    assert clients.watermarks(broker, topic, 0) == (0, 0)
    messages = clients.produce_ok(broker, topic, [{"value": b"new"}])
    assert messages[0].offset() == 0
    assert [m.value() for m in clients.consume_all(broker, topic, 0)] == [b"new"]


def test_create_partitions_confluent(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    futures = clients.admin(broker).create_partitions(
        [NewPartitions(topic, 3)], request_timeout=TIMEOUT_S, operation_timeout=TIMEOUT_S)
    assert futures[topic].result(timeout=TIMEOUT_S) is None
    clients.wait_for(lambda: partition_count(broker, topic) == 3, TIMEOUT_S,
                     what="3 partitions in metadata")
    metadata = clients.admin(broker).list_topics(topic=topic, timeout=10)
    assert all(p.leader == 1 for p in metadata.topics[topic].partitions.values())

    records = [{"value": b"p%d" % p, "partition": p} for p in range(3)]
    messages = clients.produce_ok(broker, topic, records)
    assert [(m.partition(), m.offset()) for m in messages] == [(0, 0), (1, 0), (2, 0)]
    for partition in (1, 2):
        (message,) = clients.consume(broker, topic, partition, 0, 1)
        assert message.value() == b"p%d" % partition


def test_create_partitions_kafka_python(broker, topic, kp_admin):
    clients.create_topic(broker, topic, partitions=2)
    response = kp_admin.create_partitions({topic: kafka.admin.NewPartitions(total_count=5)})
    assert [(name, code) for name, code, *_ in response.topic_errors] == [(topic, 0)]
    clients.wait_for(lambda: partition_count(broker, topic) == 5, TIMEOUT_S,
                     what="5 partitions in metadata")
    producer = clients.kp_producer(broker)
    try:
        metadata = producer.send(topic, value=b"new", partition=4).get(timeout=30)
        assert (metadata.partition, metadata.offset) == (4, 0)
    finally:
        producer.close(timeout=10)


# ---------------------------------------------------------------- DescribeConfigs


def test_describe_configs_returns_every_topic_config(broker, topic):
    clients.create_topic(broker, topic, partitions=1,
                         config={"retention.ms": "123456", "max.message.bytes": "20000"})
    entries = describe_topic_configs(broker, topic)

    missing = sorted(set(DEFAULT_TOPIC_CONFIGS) - set(entries))
    assert not missing, f"topic configs missing from DescribeConfigs: {missing}"
    for name, expected in DEFAULT_TOPIC_CONFIGS.items():
        entry = entries[name]
        assert entry.name == name
        assert not entry.is_sensitive
        if name in ("retention.ms", "max.message.bytes"):
            continue
        assert entry.value == expected, f"{name}={entry.value}, Kafka's default is {expected}"
        assert entry.source == ConfigSource.DEFAULT_CONFIG.value, f"{name}: {entry.source}"
        assert entry.is_default, name

    for name, value in (("retention.ms", "123456"), ("max.message.bytes", "20000")):
        assert entries[name].value == value
        assert entries[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        assert not entries[name].is_default


def test_describe_configs_selected_names(broker, topic, kp_admin):
    clients.create_topic(broker, topic, partitions=1, config={"retention.ms": "99999"})
    resource = kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.TOPIC, topic,
                                          configs={"retention.ms": None, "segment.bytes": None})
    (response,) = kp_admin.describe_configs([resource])
    ((error_code, _message, _type, name, entries, *_),) = response.resources
    assert (error_code, name) == (0, topic)
    assert sorted((entry[0], entry[1]) for entry in entries) == \
        [("retention.ms", "99999"), ("segment.bytes", "1073741824")]


def test_describe_configs_of_unknown_topic(broker, topic):
    with pytest.raises(KafkaException) as raised:
        describe_topic_configs(broker, topic)
    assert clients.confluent_error_code(raised.value) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_configs_of_broker(broker, kp_admin):
    resource = ConfigResource(ResourceType.BROKER, "1")
    futures = clients.admin(broker).describe_configs([resource], request_timeout=TIMEOUT_S)
    entries = futures[resource].result(timeout=TIMEOUT_S)
    assert entries["num.partitions"].value == str(BROKER_DEFAULT_PARTITIONS)
    assert entries["num.partitions"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert not entries["num.partitions"].is_default
    assert entries["auto.create.topics.enable"].value == "true"
    ids = {entries[name].value for name in ("node.id", "broker.id") if name in entries}
    assert ids == {"1"}, f"node.id/broker.id: {ids}"
    assert entries["message.max.bytes"].value == "1048588"
    assert entries["message.max.bytes"].source == ConfigSource.DEFAULT_CONFIG.value

    (response,) = kp_admin.describe_configs(
        [kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.BROKER, "1")])
    ((error_code, _message, _type, name, kp_entries, *_),) = response.resources
    assert (error_code, name) == (0, "1")
    by_name = {entry[0]: entry for entry in kp_entries}
    assert by_name["num.partitions"][1] == str(BROKER_DEFAULT_PARTITIONS)
    assert by_name["num.partitions"][3] == STATIC_BROKER_CONFIG


# ---------------------------------------------------------------- errors

INVALID_NAMES = ["bad/name", "..", ".", "a" * 250, "", "white space", "tab\there"]


@pytest.mark.parametrize("name", INVALID_NAMES, ids=lambda n: repr(n)[:20])
def test_invalid_topic_name_confluent(broker, name):
    assert confluent_create(broker, [NewTopic(name, 1, 1)]) == {name: KafkaError.TOPIC_EXCEPTION}
    assert name not in topic_names(broker)


@pytest.mark.parametrize("name", INVALID_NAMES, ids=lambda n: repr(n)[:20])
def test_invalid_topic_name_kafka_python(broker, kp_admin, name):
    error = kp_error(kp_admin.create_topics, [kafka.admin.NewTopic(name, 1, 1)])
    assert error is kafka.errors.InvalidTopicError


def test_topic_name_of_249_characters_is_valid(broker):
    name = "b" * 249
    assert confluent_create(broker, [NewTopic(name, 1, 1)]) == {name: None}
    assert name in topic_names(broker)


def test_duplicate_create(broker, topic, kp_admin):
    clients.create_topic(broker, topic, partitions=2)
    assert confluent_create(broker, [NewTopic(topic, 1, 1)]) == \
        {topic: KafkaError.TOPIC_ALREADY_EXISTS}
    error = kp_error(kp_admin.create_topics, [kafka.admin.NewTopic(topic, 1, 1)])
    assert error is kafka.errors.TopicAlreadyExistsError
    assert partition_count(broker, topic) == 2, "a failed create changed the topic"


@pytest.mark.parametrize("factor", [3, 0])
def test_invalid_replication_factor(broker, topic, kp_admin, factor):
    assert confluent_create(broker, [NewTopic(topic, 1, factor)]) == \
        {topic: KafkaError.INVALID_REPLICATION_FACTOR}
    error = kp_error(kp_admin.create_topics, [kafka.admin.NewTopic(topic, 1, factor)])
    assert error is kafka.errors.InvalidReplicationFactorError
    assert topic not in topic_names(broker)


def test_invalid_partition_count_confluent(broker, topic):
    # librdkafka itself rejects counts below -1 before sending, so only 0 reaches us.
    assert confluent_create(broker, [NewTopic(topic, 0, 1)]) == \
        {topic: KafkaError.INVALID_PARTITIONS}
    assert topic not in topic_names(broker)


@pytest.mark.parametrize("count", [0, -2, -100])
def test_invalid_partition_count_kafka_python(broker, topic, kp_admin, count):
    error = kp_error(kp_admin.create_topics, [kafka.admin.NewTopic(topic, count, 1)])
    assert error is kafka.errors.InvalidPartitionsError
    assert topic not in topic_names(broker)


def test_invalid_topic_config_value(broker, topic):
    outcome = confluent_create(broker, [NewTopic(topic, 1, 1,
                                                 config={"retention.ms": "not-a-number"})])
    assert outcome == {topic: KafkaError.INVALID_CONFIG}
    outcome = confluent_create(broker, [NewTopic(topic, 1, 1,
                                                 config={"no.such.config": "1"})])
    assert outcome == {topic: KafkaError.INVALID_CONFIG}
    assert topic not in topic_names(broker)


def test_delete_unknown_topic(broker, topic, kp_admin):
    futures = clients.admin(broker).delete_topics([topic], operation_timeout=TIMEOUT_S)
    assert _outcome(futures[topic]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert kp_error(kp_admin.delete_topics, [topic]) is kafka.errors.UnknownTopicOrPartitionError


@pytest.mark.parametrize("new_count", [2, 3], ids=["decrease", "same"])
def test_create_partitions_not_increasing(broker, topic, kp_admin, new_count):
    clients.create_topic(broker, topic, partitions=3)
    futures = clients.admin(broker).create_partitions([NewPartitions(topic, new_count)],
                                                      operation_timeout=TIMEOUT_S)
    assert _outcome(futures[topic]) == KafkaError.INVALID_PARTITIONS
    error = kp_error(kp_admin.create_partitions,
                     {topic: kafka.admin.NewPartitions(total_count=new_count)})
    assert error is kafka.errors.InvalidPartitionsError
    assert partition_count(broker, topic) == 3


def test_create_partitions_of_unknown_topic(broker, topic):
    futures = clients.admin(broker).create_partitions([NewPartitions(topic, 2)],
                                                      operation_timeout=TIMEOUT_S)
    assert _outcome(futures[topic]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert topic not in topic_names(broker)
