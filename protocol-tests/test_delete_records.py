"""DeleteRecords, DescribeLogDirs and AlterReplicaLogDirs with real clients (confluent-kafka
AdminClient.delete_records, kafka-python delete_records / describe_log_dirs, kcat) and raw
frames: the log start offset moves inside a batch, consumers below it are reset by their
auto.offset.reset, ListOffsets earliest follows it, a restart keeps it, and on a
three-node cluster the followers follow it so a new leader keeps it after failover.
"""

import kafka
import kafka.errors
import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

import clients
import cluster
import rawkafka

TIMEOUT_S = 30
RECORDS = 30
BATCH = 10

OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
POLICY_VIOLATION = 44
LOG_DIR_NOT_FOUND = 57
DESCRIBE_LOG_DIRS = 35
ALTER_REPLICA_LOG_DIRS = 34


def fill(broker, topic, config=None):
    """RECORDS records in batches of BATCH (offsets 0..RECORDS, batch bases 0, 10, 20)."""
    clients.create_topic(broker, topic, partitions=1, config=config)
    for base in range(0, RECORDS, BATCH):
        records = [{"value": b"v-%d" % (base + i), "key": b"k-%d" % (base + i),
                    "partition": 0} for i in range(BATCH)]
        messages = clients.produce_ok(broker, topic, records, **{"linger.ms": 100})
        assert [m.offset() for m in messages] == list(range(base, base + BATCH))


def confluent_delete(broker, topic, offset, partition=0):
    admin = clients.admin(broker)
    tp = TopicPartition(topic, partition, offset)
    futures = admin.delete_records([tp], request_timeout=TIMEOUT_S, operation_timeout=TIMEOUT_S)
    return next(iter(futures.values())).result(timeout=TIMEOUT_S)


def earliest(broker, topic):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error, _timestamp, offset = rawkafka.list_offsets(
            conn, topic, 0, rawkafka.EARLIEST_TIMESTAMP)
    assert error == rawkafka.NONE
    return offset


def first_offset_read(broker, topic, offset, reset):
    """The first offset a confluent consumer assigned at `offset` receives."""
    messages = clients.consume(broker, topic, 0, offset, 1, **{"auto.offset.reset": reset})
    return messages[0].offset(), messages[0].value()


def test_confluent_delete_records_moves_the_log_start_inside_a_batch(broker, topic):
    fill(broker, topic)
    deleted = confluent_delete(broker, topic, 15)
    assert deleted.low_watermark == 15
    assert clients.watermarks(broker, topic, 0) == (15, RECORDS)
    assert earliest(broker, topic) == 15
    # The batch holding 15 starts at 10; the consumer never sees 10..14.
    assert first_offset_read(broker, topic, OFFSET_BEGINNING, "earliest") == (15, b"v-15")
    # Below the start: OFFSET_OUT_OF_RANGE, then auto.offset.reset decides.
    assert first_offset_read(broker, topic, 3, "earliest") == (15, b"v-15")
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        below = rawkafka.fetch(conn, topic, 0, 3)
    assert below.error_code == OFFSET_OUT_OF_RANGE
    # Never backwards: an older offset leaves the start where it is.
    assert confluent_delete(broker, topic, 5).low_watermark == 15
    # OFFSET_END (-1) is the high watermark: everything goes.
    assert confluent_delete(broker, topic, OFFSET_END).low_watermark == RECORDS
    assert clients.watermarks(broker, topic, 0) == (RECORDS, RECORDS)
    messages = clients.produce_ok(broker, topic, [{"value": b"after", "partition": 0}])
    assert messages[0].offset() == RECORDS
    assert first_offset_read(broker, topic, 0, "earliest") == (RECORDS, b"after")


def test_confluent_delete_records_errors(broker, topic):
    fill(broker, topic)
    compacted = topic + "-compacted"
    fill(broker, compacted, config={"cleanup.policy": "compact"})
    cases = [(topic, RECORDS + 1, OFFSET_OUT_OF_RANGE),
             (compacted, 5, POLICY_VIOLATION),
             ("__consumer_offsets", 0, INVALID_TOPIC_EXCEPTION)]
    for name, offset, expected in cases:
        with pytest.raises(Exception) as failure:
            confluent_delete(broker, name, offset)
        assert clients.confluent_error_code(failure.value) == expected, name
    assert clients.watermarks(broker, topic, 0) == (0, RECORDS)
    # compact,delete may delete records, as in Kafka.
    both = topic + "-both"
    fill(broker, both, config={"cleanup.policy": "compact,delete"})
    assert confluent_delete(broker, both, 12).low_watermark == 12


def test_kafka_python_delete_records_and_kcat_reads_from_the_start(broker, topic):
    fill(broker, topic)
    admin = clients.kp_admin(broker)
    try:
        tp = kafka.TopicPartition(topic, 0)
        result = admin.delete_records({tp: 22}, timeout_ms=TIMEOUT_S * 1000)
        assert result[tp]["low_watermark"] == 22
        missing = kafka.TopicPartition(topic, 7)
        with pytest.raises(kafka.errors.KafkaError):
            admin.delete_records({missing: 1}, timeout_ms=5000)
    finally:
        admin.close()
    out = clients.kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
                       "-f", "%o %s\n").stdout.split("\n")
    assert out[0] == "22 v-22" and len([line for line in out if line]) == RECORDS - 22
    records = clients.kp_consume(broker, topic, 0, 22, RECORDS - 22)
    assert [r.offset for r in records] == list(range(22, RECORDS))


def test_the_log_start_survives_a_restart(start_broker, topic):
    node = start_broker("delete-records-restart")
    fill(node, topic)
    assert confluent_delete(node, topic, 17).low_watermark == 17
    node.restart()
    assert clients.watermarks(node, topic, 0) == (17, RECORDS)
    assert first_offset_read(node, topic, 0, "earliest") == (17, b"v-17")
    node.restart(hard=True)
    assert earliest(node, topic) == 17
    node.stop()


def test_kafka_python_describe_log_dirs(broker, topic):
    fill(broker, topic)
    admin = clients.kp_admin(broker)
    try:
        response = admin.describe_log_dirs()
    finally:
        admin.close()
    dirs = response.to_object()["log_dirs"]
    assert len(dirs) == 1
    (entry,) = dirs
    assert entry["error_code"] == 0
    assert entry["log_dir"] == broker.data_dir
    topics = {t["name"]: t["partitions"] for t in entry["topics"]}
    (partition,) = topics[topic]
    assert partition["partition_index"] == 0 and partition["partition_size"] > 0
    assert partition["offset_lag"] == 0 and partition["is_future_key"] is False


def alter_replica_log_dirs_v1(conn, dirs):
    """dirs: [(path, [(topic, [partitions])])] -> {(topic, partition): error_code}."""
    def encode_topic(item):
        name, partitions = item
        return rawkafka.string(name) + rawkafka.array(partitions, rawkafka.int32)

    def encode_dir(item):
        path, topics = item
        return rawkafka.string(path) + rawkafka.array(topics, encode_topic)

    reader = conn.request(ALTER_REPLICA_LOG_DIRS, 1, rawkafka.array(dirs, encode_dir))
    assert reader.int32() == 0  # throttle_time_ms
    results = reader.array(lambda r: (r.string(), r.array(lambda rr: (rr.int32(), rr.int16()))))
    reader.expect_end()
    return {(topic, index): code for topic, partitions in results for index, code in partitions}


def test_alter_replica_log_dirs_with_one_log_dir(broker, topic):
    fill(broker, topic)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        here = alter_replica_log_dirs_v1(conn, [
            (broker.data_dir, [(topic, [0, 5]), ("no-such-topic", [0])])])
        elsewhere = alter_replica_log_dirs_v1(conn, [("/nowhere", [(topic, [0])])])
        _error, keys = rawkafka.api_versions_v0(conn)
    # A partition the metadata lacks (index 5 of a one-partition topic) is unknown too.
    assert here == {(topic, 0): 0, (topic, 5): UNKNOWN_TOPIC_OR_PARTITION,
                    ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION}
    assert elsewhere == {(topic, 0): LOG_DIR_NOT_FOUND}
    # Kafka 4.0 dropped v0 of AlterReplicaLogDirs; DescribeLogDirs v0 stays for kafka-python.
    versions = {key: (low, high) for key, low, high in keys}
    assert versions[ALTER_REPLICA_LOG_DIRS] == (1, 2)
    assert versions[DESCRIBE_LOG_DIRS] == (0, 4)


# ---------------------------------------------------------------- three nodes

CLUSTER_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "3",
    "replica.lag.time.max.ms": "3000",
}


class Bootstrap:
    def __init__(self, nodes):
        self.bootstrap = ",".join(node.bootstrap for node in nodes.nodes)


def leader_of(nodes, topic):
    via = nodes.node(nodes.running()[0])
    return via.metadata([topic])["topics"][topic]["partitions"][0]


def test_followers_follow_the_log_start_and_a_new_leader_keeps_it(make_cluster, topic):
    nodes = make_cluster(3, overrides=CLUSTER_OVERRIDES)
    via = nodes.node(nodes.running()[0])
    error, message = via.create_topic(topic, partitions=1, replication_factor=3)
    assert error == cluster.NONE, message

    def full_isr():
        partition = leader_of(nodes, topic)
        assert len(partition["isr"]) == 3 and partition["leader"] >= 0, partition
        return partition
    cluster.wait_until(full_isr, TIMEOUT_S, what="a full ISR")
    everyone = Bootstrap(nodes)
    producer = clients.producer(everyone)
    for index in range(RECORDS):
        producer.produce(topic, value=b"v-%d" % index, partition=0)
        if index % BATCH == BATCH - 1:
            producer.flush(TIMEOUT_S)
    assert producer.flush(TIMEOUT_S) == 0
    # The answer waits until every live replica's log start reached 13 (the low watermark
    # is the smallest over them), so the followers have moved theirs by now.
    assert confluent_delete(everyone, topic, 13).low_watermark == 13
    old_leader = cluster.wait_until(full_isr, TIMEOUT_S, what="a full ISR")["leader"]
    nodes.kill(old_leader)

    def new_leader():
        partition = leader_of(nodes, topic)
        assert partition["leader"] not in (-1, old_leader), partition
        return partition
    cluster.wait_until(new_leader, TIMEOUT_S, what="a new leader")

    # The new leader's high watermark may trail its log end for a moment after it takes
    # over (a log start other than 13 never settles either).
    def watermarks_settled():
        watermarks = clients.watermarks(everyone, topic, 0, timeout_s=TIMEOUT_S)
        assert watermarks == (13, RECORDS), watermarks
        return True
    cluster.wait_until(watermarks_settled, TIMEOUT_S, what="the new leader's watermarks")
    assert first_offset_read(everyone, topic, 0, "earliest") == (13, b"v-13")
    nodes.restart(old_leader)
    cluster.wait_until(full_isr, TIMEOUT_S * 2, what="the old leader back in the ISR")
    # The restarted replica kept (or re-adopted) the start: deleting further waits for it.
    assert confluent_delete(everyone, topic, 20).low_watermark == 20
