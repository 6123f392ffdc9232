"""DescribeQuorum, ApiVersions feature levels and DescribeCluster's controller.

What `kafka-metadata-quorum describe --status / --replication` and `kafka-features
describe` read. No Python client speaks DescribeQuorum or the ApiVersions feature fields,
so those are raw frames (rawkafka primitives, message layouts from apache/kafka
`DescribeQuorumRequest/Response.json` and `ApiVersionsResponse.json`); DescribeCluster goes
through confluent-kafka's AdminClient.

The embedded default is one node, broker and controller, one voter: node 1 leads the
quorum and is its only voter.
"""

import time

import clients
import rawkafka
from rawkafka import EMPTY_TAGGED_FIELDS, compact_string, int32, uvarint

DESCRIBE_QUORUM = 55
CLUSTER_METADATA_TOPIC = "__cluster_metadata"
NODE_ID = 1

# controller/features.rs: metadata.version 3.3-IV3 (7) .. 4.0-IV3 (25), finalized at 25;
# kraft.version 0 only (static voters, no KIP-853).
METADATA_VERSION_MIN = 7
METADATA_VERSION_MAX = 25
METADATA_VERSION_FINALIZED = 25
# transaction.version 0..2 (KIP-890), finalized at controller/features.rs's
# TRANSACTION_VERSION_FINALIZED.
TRANSACTION_VERSION_FINALIZED = 2
# group.version 0..1 (1 = KIP-848 consumer groups), finalized at 1.
GROUP_VERSION_FINALIZED = 1

# ApiVersionsResponse tagged fields (v3+).
TAG_SUPPORTED_FEATURES = 0
TAG_FINALIZED_FEATURES_EPOCH = 1
TAG_FINALIZED_FEATURES = 2


# ---------------------------------------------------------------- DescribeQuorum frames


def describe_quorum_body(topics):
    """topics: [(name, [partition_index, ...])]; every version is flexible (v0+)."""
    body = uvarint(len(topics) + 1)
    for name, partitions in topics:
        body += compact_string(name) + uvarint(len(partitions) + 1)
        for index in partitions:
            body += int32(index) + EMPTY_TAGGED_FIELDS
        body += EMPTY_TAGGED_FIELDS
    return body + EMPTY_TAGGED_FIELDS


def read_replica(reader, version):
    replica = {"id": reader.int32()}
    if version >= 2:
        replica["directory_id"] = reader.take(16)
    replica["log_end_offset"] = reader.int64()
    if version >= 1:
        replica["last_fetch_timestamp"] = reader.int64()
        replica["last_caught_up_timestamp"] = reader.int64()
    reader.skip_tagged_fields()
    return replica


def read_partition(reader, version):
    partition = {"index": reader.int32(), "error_code": reader.int16()}
    if version >= 2:
        partition["error_message"] = reader.compact_string()
    partition["leader_id"] = reader.int32()
    partition["leader_epoch"] = reader.int32()
    partition["high_watermark"] = reader.int64()
    partition["voters"] = reader.compact_array(lambda r: read_replica(r, version))
    partition["observers"] = reader.compact_array(lambda r: read_replica(r, version))
    reader.skip_tagged_fields()
    return partition


def read_topic(reader, version):
    name = reader.compact_string()
    partitions = reader.compact_array(lambda r: read_partition(r, version))
    reader.skip_tagged_fields()
    return name, partitions


def read_listener(reader):
    listener = (reader.compact_string(), reader.compact_string(), reader.int16() & 0xFFFF)
    reader.skip_tagged_fields()
    return listener


def read_node(reader):
    node_id = reader.int32()
    listeners = reader.compact_array(read_listener)
    reader.skip_tagged_fields()
    return node_id, listeners


def describe_quorum(conn, version, topics=((CLUSTER_METADATA_TOPIC, (0,)),)):
    reader = conn.request(DESCRIBE_QUORUM, version, describe_quorum_body(topics),
                          flexible_request=True, flexible_response=True)
    response = {"error_code": reader.int16()}
    if version >= 2:
        response["error_message"] = reader.compact_string()
    response["topics"] = reader.compact_array(lambda r: read_topic(r, version))
    if version >= 2:
        response["nodes"] = reader.compact_array(read_node)
    reader.skip_tagged_fields()
    reader.expect_end()
    return response


def the_partition(response):
    assert response["error_code"] == 0
    ((name, partitions),) = response["topics"]
    assert name == CLUSTER_METADATA_TOPIC
    (partition,) = partitions
    assert partition["index"] == 0
    return partition


# ---------------------------------------------------------------- ApiVersions features


def read_supported(reader):
    feature = (reader.compact_string(), reader.int16(), reader.int16())
    reader.skip_tagged_fields()
    return feature


def read_finalized(reader):
    # FinalizedFeatureKey: name, max_version_level, min_version_level.
    name, level_max, level_min = reader.compact_string(), reader.int16(), reader.int16()
    reader.skip_tagged_fields()
    return name, level_min, level_max


def api_versions_features(conn, version):
    reader = conn.request(rawkafka.API_VERSIONS, version,
                          rawkafka.api_versions_v3_body("gracchus-tests", "1.0"),
                          flexible_request=True)
    error_code, _keys, _throttle, tagged = rawkafka.read_api_versions_v3(reader)
    reader.expect_end()
    assert error_code == 0
    supported = rawkafka.Reader(tagged[TAG_SUPPORTED_FEATURES]).compact_array(read_supported)
    epoch_reader = rawkafka.Reader(tagged[TAG_FINALIZED_FEATURES_EPOCH])
    epoch = epoch_reader.int64()
    epoch_reader.expect_end()
    finalized = []
    if TAG_FINALIZED_FEATURES in tagged:
        finalized = rawkafka.Reader(tagged[TAG_FINALIZED_FEATURES]).compact_array(read_finalized)
    return (
        {name: (low, high) for name, low, high in supported},
        {name: (low, high) for name, low, high in finalized},
        epoch,
    )


# ---------------------------------------------------------------- tests


def test_describe_quorum_status_every_version(broker):
    before_ms = int(time.time() * 1000)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        for version in (0, 1, 2):
            partition = the_partition(describe_quorum(conn, version))
            assert partition["error_code"] == 0
            assert partition["leader_id"] == NODE_ID
            assert partition["leader_epoch"] >= 1
            assert partition["high_watermark"] > 0
            voters = {voter["id"]: voter for voter in partition["voters"]}
            assert list(voters) == [NODE_ID]
            leader = voters[NODE_ID]
            assert leader["log_end_offset"] >= partition["high_watermark"]
            assert partition["observers"] == []
            if version >= 1:
                # Kafka reports the leader itself as fetched and caught up "now".
                assert leader["last_fetch_timestamp"] >= before_ms
                assert leader["last_caught_up_timestamp"] >= before_ms


def test_describe_quorum_v2_lists_the_voter_endpoints(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        response = describe_quorum(conn, 2)
    the_partition(response)
    assert response["error_message"] in (None, "")
    nodes = dict(response["nodes"])
    assert list(nodes) == [NODE_ID]
    ports = [(host, port) for _name, host, port in nodes[NODE_ID]]
    assert ("127.0.0.1", broker.port) in ports


def test_describe_quorum_high_watermark_grows_with_metadata(broker, topic):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        before = the_partition(describe_quorum(conn, 1))["high_watermark"]
        clients.create_topic(broker, topic)
        after = the_partition(describe_quorum(conn, 1))
    assert after["high_watermark"] > before
    assert after["voters"][0]["log_end_offset"] >= after["high_watermark"]


def test_describe_quorum_other_partitions_are_unknown(broker):
    cases = [
        [("not-the-metadata-topic", [0])],
        [(CLUSTER_METADATA_TOPIC, [1])],
        [(CLUSTER_METADATA_TOPIC, [0, 1])],
        [(CLUSTER_METADATA_TOPIC, [0]), ("other", [0])],
    ]
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        for version in (0, 2):
            for topics in cases:
                response = describe_quorum(conn, version, topics)
                assert response["error_code"] == 0
                answered = [(name, [p["index"] for p in partitions])
                            for name, partitions in response["topics"]]
                assert answered == [(name, list(indexes)) for name, indexes in topics]
                for _name, partitions in response["topics"]:
                    for partition in partitions:
                        assert partition["error_code"] == rawkafka.UNKNOWN_TOPIC_OR_PARTITION
                        if version >= 2:
                            assert partition["error_message"]
        # The connection is still good for a valid request.
        assert the_partition(describe_quorum(conn, 2))["leader_id"] == NODE_ID


def test_api_versions_v4_advertises_metadata_kraft_transaction_and_group_versions(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        supported, finalized, epoch = api_versions_features(conn, 4)
    assert supported == {
        "metadata.version": (METADATA_VERSION_MIN, METADATA_VERSION_MAX),
        "kraft.version": (0, 0),
        "transaction.version": (0, 2),
        "group.version": (0, 1),
    }
    # Level-0 features are never sent as finalized (Kafka drops them; a missing one
    # reads as 0): kraft.version is finalized at 0.
    assert finalized == {
        "metadata.version": (METADATA_VERSION_FINALIZED, METADATA_VERSION_FINALIZED),
        "transaction.version": (TRANSACTION_VERSION_FINALIZED, TRANSACTION_VERSION_FINALIZED),
        "group.version": (GROUP_VERSION_FINALIZED, GROUP_VERSION_FINALIZED),
    }
    assert epoch >= 0
    # Nothing is advertised for behaviour that does not exist here.
    for name in ("share.version", "streams.version"):
        assert name not in supported and name not in finalized


def test_api_versions_v3_omits_ranges_starting_at_zero(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        supported, finalized, epoch = api_versions_features(conn, 3)
    # KAFKA-17492: clients older than ApiVersions v4 reject a supported range from 0.
    assert supported == {"metadata.version": (METADATA_VERSION_MIN, METADATA_VERSION_MAX)}
    assert finalized["metadata.version"] == (METADATA_VERSION_FINALIZED,) * 2
    assert finalized["transaction.version"] == (TRANSACTION_VERSION_FINALIZED,) * 2
    assert epoch >= 0


def test_finalized_features_epoch_never_goes_back(broker, topic):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        _, _, before = api_versions_features(conn, 4)
        clients.create_topic(broker, topic)
        _, _, after = api_versions_features(conn, 4)
    assert after >= before >= 0


def test_describe_cluster_controller_is_the_quorum_leader(broker):
    result = clients.admin(broker).describe_cluster(request_timeout=10).result(timeout=15)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        leader_id = the_partition(describe_quorum(conn, 2))["leader_id"]
    assert result.controller is not None
    assert result.controller.id == leader_id == NODE_ID
