"""IncrementalAlterConfigs and AlterConfigs for topics and dynamic broker configs.

With confluent-kafka AdminClient and kafka-python KafkaAdminClient: values are described
back with Kafka's sources and synonyms, take effect without a restart (retention deletes
old segments), survive a restart, validate_only stores nothing, and Kafka's errors come
back for unknown keys, bad values, unknown topics and static broker configs. A broker
describes Kafka 4.0's broker configs, with Kafka's documentation when asked (v3). Live
broker-only configs: `log.cleaner.backoff.ms` wakes the cleaner. A three-node cluster sees a
topic config set through one node on every node, and a cluster-wide
`unclean.leader.election.enable` makes the controller elect an out-of-sync replica.
"""

import time

import kafka.admin
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, \
    ConfigSource, ResourceType

import clients
import rawkafka
from test_compaction import read_to_end

# Retention runs every second so that a new retention.ms shows within the test.
BROKER_OVERRIDES = {"log.retention.check.interval.ms": "1000"}
TIMEOUT_S = 30

INVALID_CONFIG = KafkaError.INVALID_CONFIG
INVALID_REQUEST = KafkaError.INVALID_REQUEST


def incremental(broker, resource_type, name, ops, validate_only=False):
    """Runs IncrementalAlterConfigs for one resource; None or the KafkaError code."""
    entries = [ConfigEntry(key, value, incremental_operation=op) for key, op, value in ops]
    resource = ConfigResource(resource_type, name, incremental_configs=entries)
    futures = clients.admin(broker).incremental_alter_configs(
        [resource], validate_only=validate_only, request_timeout=TIMEOUT_S)
    try:
        futures[resource].result(timeout=TIMEOUT_S)
        return None
    except KafkaException as error:
        return clients.confluent_error_code(error)


def describe(broker, resource_type, name):
    resource = ConfigResource(resource_type, name)
    futures = clients.admin(broker).describe_configs([resource], request_timeout=TIMEOUT_S)
    return futures[resource].result(timeout=TIMEOUT_S)


def raw_incremental(broker, resource_type, name, ops):
    """IncrementalAlterConfigs v0 hand-encoded (confluent-kafka refuses the "" broker
    resource, Kafka's cluster-wide default); (error code, message)."""
    def config(op):
        key, op_type, value = op
        return rawkafka.string(key) + rawkafka.int8(op_type.value) + rawkafka.string(value)

    body = rawkafka.array([name], lambda n: rawkafka.int8(resource_type) +
                          rawkafka.string(n) + rawkafka.array(ops, config))
    with rawkafka.Connection(broker.host if hasattr(broker, "host") else "127.0.0.1",
                             broker.port) as conn:
        reader = conn.request(44, 0, body + rawkafka.boolean(False))
        reader.int32()  # throttle
        ((error, message),) = reader.array(
            lambda r: (r.int16(), r.string(), r.int8(), r.string())[:2])
    return error, message


def raw_describe(broker, resource_type, name, keys=None):
    """DescribeConfigs v1 hand-encoded to this node: (error, {name: (value, source)})."""
    with rawkafka.Connection(broker.host if hasattr(broker, "host") else "127.0.0.1",
                             broker.port) as conn:
        return describe_configs_v1(conn, resource_type, name, keys)


def source(entry):
    return ConfigSource(entry.source)


def synonym_chain(entry):
    return [(name, syn.value, ConfigSource(syn.source)) for name, syn in entry.synonyms.items()]


SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE
APPEND, SUBTRACT = AlterConfigOpType.APPEND, AlterConfigOpType.SUBTRACT


# ---------------------------------------------------------------- topics


def test_set_and_delete_a_topic_config(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    assert incremental(broker, ResourceType.TOPIC, topic,
                       [("retention.ms", SET, "3600000"), ("flush.ms", SET, "5000")]) is None
    entries = describe(broker, ResourceType.TOPIC, topic)
    assert entries["retention.ms"].value == "3600000"
    assert source(entries["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert synonym_chain(entries["retention.ms"]) == [
        ("retention.ms", "3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG),
        ("log.retention.ms", "604800000", ConfigSource.DEFAULT_CONFIG),
    ]
    assert entries["flush.ms"].value == "5000"

    assert incremental(broker, ResourceType.TOPIC, topic, [("retention.ms", DELETE, None)]) \
        is None
    entries = describe(broker, ResourceType.TOPIC, topic)
    assert entries["retention.ms"].value == "604800000"
    assert source(entries["retention.ms"]) == ConfigSource.DEFAULT_CONFIG
    assert source(entries["flush.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG


def test_append_and_subtract_edit_list_configs(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    assert incremental(broker, ResourceType.TOPIC, topic,
                       [("cleanup.policy", APPEND, "compact")]) is None
    assert describe(broker, ResourceType.TOPIC, topic)["cleanup.policy"].value == \
        "delete,compact"
    assert incremental(broker, ResourceType.TOPIC, topic,
                       [("cleanup.policy", SUBTRACT, "delete")]) is None
    assert describe(broker, ResourceType.TOPIC, topic)["cleanup.policy"].value == "compact"
    assert incremental(broker, ResourceType.TOPIC, topic,
                       [("retention.ms", APPEND, "1")]) == INVALID_CONFIG


def test_alter_configs_replaces_every_topic_config_kafka_python(broker, topic):
    clients.create_topic(broker, topic, partitions=1,
                         config={"retention.ms": "123456", "segment.bytes": "2000000"})
    admin = clients.kp_admin(broker)
    try:
        resource = kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.TOPIC, topic,
                                              configs={"flush.messages": "100"})
        response = admin.alter_configs([resource])
        ((error_code, _message, _type, name),) = [tuple(r)[:4] for r in response.resources]
        assert (error_code, name) == (0, topic)
        (described,) = admin.describe_configs([kafka.admin.ConfigResource(
            kafka.admin.ConfigResourceType.TOPIC, topic)])
        ((_code, _msg, _type, _name, entries, *_),) = described.resources
        by_name = {entry[0]: entry for entry in entries}
        assert by_name["flush.messages"][1] == "100"
        assert by_name["retention.ms"][1] == "604800000"
        assert by_name["segment.bytes"][1] == "1073741824"
    finally:
        admin.close()


def test_validate_only_stores_nothing(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    assert incremental(broker, ResourceType.TOPIC, topic, [("retention.ms", SET, "1000")],
                       validate_only=True) is None
    entries = describe(broker, ResourceType.TOPIC, topic)
    assert source(entries["retention.ms"]) == ConfigSource.DEFAULT_CONFIG
    assert incremental(broker, ResourceType.TOPIC, topic, [("retention.ms", SET, "soon")],
                       validate_only=True) == INVALID_CONFIG


def test_kafkas_errors(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    assert incremental(broker, ResourceType.TOPIC, topic, [("no.such.config", SET, "1")]) == \
        INVALID_CONFIG
    assert incremental(broker, ResourceType.TOPIC, topic, [("retention.ms", SET, "soon")]) == \
        INVALID_CONFIG
    assert incremental(broker, ResourceType.TOPIC, topic,
                       [("message.timestamp.type", SET, "Whenever")]) == INVALID_CONFIG
    assert incremental(broker, ResourceType.TOPIC, f"{topic}-missing",
                       [("retention.ms", SET, "1000")]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    # Static broker configs cannot change at run time.
    assert incremental(broker, ResourceType.BROKER, "1", [("log.dirs", SET, "/tmp/x")]) == \
        INVALID_REQUEST
    # A bad broker value is INVALID_REQUEST, as Kafka wraps a broker ConfigException.
    assert raw_incremental(broker, 4, "", [("log.retention.ms", SET, "x")])[0] == \
        INVALID_REQUEST
    assert raw_incremental(broker, 4, "", [("log.cleaner.delete.retention.ms", SET, "-1")])[0] \
        == INVALID_REQUEST
    # Kafka's bounds on topic values too.
    assert incremental(broker, ResourceType.TOPIC, topic, [("min.insync.replicas", SET, "0")]) \
        == INVALID_CONFIG
    entries = describe(broker, ResourceType.TOPIC, topic)
    assert all(source(e) != ConfigSource.DYNAMIC_TOPIC_CONFIG for e in entries.values())


def test_a_new_retention_ms_deletes_old_segments_without_restart(broker, topic):
    clients.create_topic(broker, topic, partitions=1, config={"segment.bytes": "1024"})
    clients.produce_ok(broker, topic, [{"value": b"x" * 200} for _ in range(30)])
    low, high = clients.watermarks(broker, topic, 0)
    assert (low, high) == (0, 30)
    assert incremental(broker, ResourceType.TOPIC, topic, [("retention.ms", SET, "1")]) is None
    clients.wait_for(lambda: clients.watermarks(broker, topic, 0)[0] > 0, TIMEOUT_S,
                     what="retention to delete old segments")
    assert clients.watermarks(broker, topic, 0)[1] == 30


# ---------------------------------------------------------------- brokers


def test_dynamic_broker_configs_apply_live_and_survive_restart(start_broker, topic):
    node = start_broker("dynamic", {"log.retention.check.interval.ms": "1000",
                                    "log.retention.hours": "100"})
    try:
        clients.create_topic(node, topic, partitions=1)
        assert raw_incremental(node, 4, "", [("log.retention.ms", SET, "7200000")]) == \
            (0, None)
        assert incremental(node, ResourceType.BROKER, "1",
                           [("log.retention.ms", SET, "3600000")]) is None
        check_broker_layers(node, topic)
        node.restart()
        check_broker_layers(node, topic)
        assert incremental(node, ResourceType.BROKER, "1",
                           [("log.retention.ms", DELETE, None)]) is None
        entry = describe(node, ResourceType.TOPIC, topic)["retention.ms"]
        assert (entry.value, source(entry)) == \
            ("7200000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
    finally:
        node.stop()


def check_broker_layers(node, topic):
    entry = describe(node, ResourceType.TOPIC, topic)["retention.ms"]
    assert (entry.value, source(entry)) == ("3600000", ConfigSource.DYNAMIC_BROKER_CONFIG)
    # kafka-python keeps the whole chain (confluent-kafka keys synonyms by name).
    admin = clients.kp_admin(node)
    try:
        (response,) = admin.describe_configs([kafka.admin.ConfigResource(
            kafka.admin.ConfigResourceType.TOPIC, topic, configs={"retention.ms": None})],
            include_synonyms=True)
    finally:
        admin.close()
    ((_code, _msg, _type, _name, (entry,), *_),) = response.resources
    assert [tuple(synonym)[:3] for synonym in entry[5]] == [
        ("log.retention.ms", "3600000", ConfigSource.DYNAMIC_BROKER_CONFIG.value),
        ("log.retention.ms", "7200000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value),
        ("log.retention.ms", "360000000", ConfigSource.STATIC_BROKER_CONFIG.value),
        ("log.retention.ms", "604800000", ConfigSource.DEFAULT_CONFIG.value),
    ]
    brokers = describe(node, ResourceType.BROKER, "1")
    assert brokers["log.retention.ms"].value == "3600000"
    assert source(brokers["log.retention.ms"]) == ConfigSource.DYNAMIC_BROKER_CONFIG
    assert not brokers["log.retention.ms"].is_read_only
    assert brokers["log.dirs"].is_read_only
    # Keys the operator set show up as static broker configs.
    assert brokers["log.retention.check.interval.ms"].value == "1000"
    assert source(brokers["log.retention.check.interval.ms"]) == \
        ConfigSource.STATIC_BROKER_CONFIG
    assert raw_describe(node, 4, "") == \
        (0, {"log.retention.ms": ("7200000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)})


def test_describe_broker_lists_every_kafka_broker_config(broker):
    entries = describe(broker, ResourceType.BROKER, "1")
    # Kafka 4.0 lists 289 broker configs; the operator's own extra keys come on top.
    assert len(entries) >= 289, len(entries)
    # New in 4.0, at 4.0's defaults.
    for name, value in [("share.coordinator.threads", "1"),
                        ("group.consumer.migration.policy", "bidirectional"),
                        ("remote.list.offsets.request.timeout.ms", "30000"),
                        ("add.partitions.to.txn.retry.backoff.ms", "20"),
                        ("group.coordinator.threads", "4"),
                        ("group.coordinator.rebalance.protocols", "classic,consumer"),
                        ("metric.reporters", "org.apache.kafka.common.metrics.JmxReporter"),
                        ("ssl.protocol", "TLSv1.3"),
                        ("authorizer.class.name", "")]:
        assert (entries[name].value, source(entries[name])) == \
            (value, ConfigSource.DEFAULT_CONFIG), name
    # Gone in 4.0 (ZooKeeper, message format, ...).
    for name in ["zookeeper.connect", "log.message.format.version", "auto.include.jmx.reporter",
                 "inter.broker.protocol.version", "password.encoder.secret",
                 "log.message.downconversion.enable", "eligible.leader.replicas.enable"]:
        assert name not in entries, name
    # Read-only in 4.0's table.
    assert entries["advertised.listeners"].is_read_only
    # One we do not implement: Kafka's default, read-only (refused on alter).
    threads = entries["log.cleaner.threads"]
    assert (threads.value, source(threads), threads.is_read_only) == \
        ("1", ConfigSource.DEFAULT_CONFIG, True)
    assert incremental(broker, ResourceType.BROKER, "1", [("log.cleaner.threads", SET, "2")]) \
        == INVALID_REQUEST
    # Null defaults and passwords have no value, as in Kafka.
    assert entries["ssl.keystore.password"].is_sensitive
    assert entries["ssl.keystore.password"].value is None
    assert entries["log.retention.check.interval.ms"].value == "1000"
    assert source(entries["log.retention.check.interval.ms"]) == \
        ConfigSource.STATIC_BROKER_CONFIG
    assert not entries["log.segment.bytes"].is_read_only
    assert entries["log.dirs"].is_read_only


def describe_configs_v3(conn, resource_type, resource, keys=None, documentation=True):
    """DescribeConfigs v3 (the last non-flexible version) hand-encoded, with
    include_documentation (no stock Python client asks for it):
    (error, {name: (value, read_only, type, documentation)})."""
    body = rawkafka.array([resource], lambda name: rawkafka.int8(resource_type) +
                          rawkafka.string(name) + rawkafka.array(keys, rawkafka.string)) + \
        rawkafka.boolean(False) + rawkafka.boolean(documentation)
    reader = conn.request(32, 3, body)
    reader.int32()  # throttle

    def read_config(r):
        name, value, read_only = r.string(), r.string(), r.boolean()
        r.int8()  # source
        r.boolean()  # sensitive
        r.array(lambda s: (s.string(), s.string(), s.int8()))
        return name, (value, read_only, r.int8(), r.string())

    def read_result(r):
        error, _message, _type, _name = r.int16(), r.string(), r.int8(), r.string()
        return error, dict(r.array(read_config))

    (result,) = reader.array(read_result)
    return result


def test_describe_configs_v3_answers_kafkas_documentation(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error, configs = describe_configs_v3(conn, 4, "1", ["log.cleaner.threads",
                                                             "log.retention.ms"])
        assert error == 0
        assert configs["log.cleaner.threads"] == (
            "1", True, 3, "The number of background threads to use for log cleaning")
        value, read_only, config_type, doc = configs["log.retention.ms"]
        assert (value, read_only, config_type) == ("604800000", False, 5)
        assert doc.startswith("The number of milliseconds to keep a log file"), doc
        error, configs = describe_configs_v3(conn, 2, topic, ["retention.ms"])
        assert error == 0
        assert configs["retention.ms"][3].startswith(
            "This configuration controls the maximum time we will retain a log"), configs
        # Not asked for: none.
        error, configs = describe_configs_v3(conn, 4, "1", ["log.cleaner.threads"],
                                             documentation=False)
        assert configs["log.cleaner.threads"][3] is None


# ---------------------------------------------------------------- live broker configs


def test_cleaner_backoff_applies_live(start_broker, topic):
    """An hour's `log.cleaner.backoff.ms` keeps the cleaner asleep; a dynamic 200 ms wakes
    it within seconds and the compacted topic shrinks, with no restart."""
    node = start_broker("cleaner-backoff", {"log.cleaner.backoff.ms": "3600000"})
    try:
        clients.create_topic(node, topic, 1, config={
            "cleanup.policy": "compact", "segment.bytes": "1024"})
        total = 100
        for i in range(total):
            clients.produce_ok(node, topic, [{"key": f"k{i % 5}".encode(),
                                              "value": f"v{i}".encode(), "partition": 0}],
                               **{"linger.ms": 0})
        time.sleep(2.0)
        assert len(read_to_end(node, topic)) == total, "compacted despite the hour's backoff"
        entry = describe(node, ResourceType.BROKER, "1")["log.cleaner.backoff.ms"]
        assert (entry.value, source(entry), entry.is_read_only) == \
            ("3600000", ConfigSource.STATIC_BROKER_CONFIG, False)

        assert raw_incremental(node, 4, "", [("log.cleaner.backoff.ms", SET, "200")]) == \
            (0, None)
        clients.wait_for(lambda: len(read_to_end(node, topic)) < total // 2, TIMEOUT_S,
                         what="the cleaner to wake up and compact")
        entry = describe(node, ResourceType.BROKER, "1")["log.cleaner.backoff.ms"]
        assert (entry.value, source(entry)) == \
            ("200", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
        # Kafka's bounds and the knobs we do not have.
        assert raw_incremental(node, 4, "", [("log.cleaner.backoff.ms", SET, "-1")])[0] == \
            INVALID_REQUEST
        assert raw_incremental(node, 4, "",
                               [("log.cleaner.dedupe.buffer.size", SET, "1024")])[0] == \
            INVALID_REQUEST
        assert incremental(node, ResourceType.BROKER, "1",
                           [("log.cleaner.dedupe.buffer.size", SET, "16777216")]) is None
        for refused in ["log.cleaner.min.cleanable.ratio", "log.preallocate",
                        "log.cleaner.io.max.bytes.per.second", "log.retention.hours"]:
            assert incremental(node, ResourceType.BROKER, "1", [(refused, SET, "1")]) == \
                INVALID_REQUEST, refused
    finally:
        node.stop()


# ---------------------------------------------------------------- a cluster


def describe_configs_v1(conn, resource_type, resource, keys):
    body = rawkafka.array([resource], lambda name: rawkafka.int8(resource_type) +
                          rawkafka.string(name) + rawkafka.array(keys, rawkafka.string)) + \
        rawkafka.boolean(False)
    reader = conn.request(32, 1, body)
    reader.int32()  # throttle

    def read_config(r):
        name, value = r.string(), r.string()
        r.boolean()
        config_source = r.int8()
        r.boolean()
        r.array(lambda s: (s.string(), s.string(), s.int8()))
        return name, (value, config_source)

    def read_result(r):
        error, _message, _type, _name = r.int16(), r.string(), r.int8(), r.string()
        return error, dict(r.array(read_config))

    (result,) = reader.array(read_result)
    return result


def test_a_topic_config_set_through_one_node_is_seen_on_every_node(make_cluster, topic):
    three = make_cluster(3)
    first = three.node(three.node_ids()[0])
    error, message = first.create_topic(topic, partitions=1)
    assert error == 0, message
    three.wait_topic_everywhere(topic, partitions=1)
    assert incremental(first, ResourceType.TOPIC, topic, [("retention.ms", SET, "98765")]) \
        is None

    def seen_everywhere():
        for node_id in three.node_ids():
            node = three.node(node_id)
            with rawkafka.Connection(node.host, node.port) as conn:
                error, configs = describe_configs_v1(conn, 2, topic, ["retention.ms"])
            if error != 0 or configs.get("retention.ms") != ("98765", 1):
                return False
        return True

    clients.wait_for(seen_everywhere, TIMEOUT_S, what="retention.ms on every node")


def test_a_cluster_wide_unclean_election_default_elects_an_out_of_sync_replica(make_cluster,
                                                                               topic):
    """A partition whose last in-sync replica is gone stays offline while
    `unclean.leader.election.enable` is false (Kafka's default); set true as the
    cluster-wide dynamic default, the active controller elects the live replica outside the
    ISR within seconds, with no restart and no ElectLeaders request."""
    three = make_cluster(3, overrides={"unclean.leader.election.interval.ms": "300000"})
    first = three.node(1)
    error, message = first.create_topic(topic, assignments={0: [2, 3]})
    assert error == 0, message
    three.wait_topic_everywhere(topic, partitions=1)

    def partition():
        return next(iter(first.image()["topics"][topic]["partitions"].values()))

    clients.wait_for(lambda: sorted(partition()["isr"]) == [2, 3], TIMEOUT_S, what="ISR [2, 3]")
    three.stop(3)  # controlled shutdown: leaves the ISR
    clients.wait_for(lambda: partition()["isr"] == [2], TIMEOUT_S, what="ISR [2]")
    three.stop(2)  # the last in-sync replica: the partition goes offline
    three.restart(3)  # back, out of sync; with 1, a quorum again
    clients.wait_for(lambda: partition()["leader"] == -1 and 3 not in partition()["isr"],
                     TIMEOUT_S, what="the partition offline, 3 out of its ISR")
    # Broker 3 live (listed, so unfenced): from here on an unclean election could pick it.
    clients.wait_for(lambda: 3 in {int(b) for b in first.image()["brokers"]}, TIMEOUT_S,
                     what="broker 3 unfenced")
    time.sleep(2.0)
    assert partition()["leader"] == -1, "elected uncleanly with the flag off"

    assert raw_incremental(first, 4, "", [("unclean.leader.election.enable", SET, "true")]) \
        == (0, None)
    clients.wait_for(lambda: partition()["leader"] == 3, TIMEOUT_S,
                     what="the unclean election of replica 3")
    assert partition()["isr"] == [3]
