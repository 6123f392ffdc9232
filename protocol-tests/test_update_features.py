"""UpdateFeatures on a three-node cluster (issue 11): `kafka-features downgrade/upgrade`.

No client in the venv sends UpdateFeatures (the Java Admin and kafka-features do), so
the requests are hand-encoded here from UpdateFeaturesRequest.json (flexible from v0).
What a client sees of a change is ApiVersions v3+'s finalized features (tagged field 2),
which every node must show once the change is committed, after restarts too; a refused
change (INVALID_UPDATE_VERSION, 95) changes nothing anywhere. A transactional producer
keeps working at every transaction.version level.
"""

import clients
from confluent_kafka import Producer
from rawkafka import (EMPTY_TAGGED_FIELDS, Reader, api_versions_v3_body, boolean,
                      compact_string, int8, int16, int32, read_api_versions_v3, uvarint)

UPDATE_FEATURES = 57
API_VERSIONS = 18
INVALID_UPDATE_VERSION = 95
UPGRADE, SAFE_DOWNGRADE = 1, 2
TV = "transaction.version"


def update_features(conn, updates, version=1, validate_only=False):
    """UpdateFeatures v0-2: updates [(feature, level, upgrade_type)] (v0 sends
    allow_downgrade = upgrade_type != UPGRADE). Returns (error, message, {feature: error})."""

    def encode(update):
        feature, level, upgrade_type = update
        kind = int8(upgrade_type) if version >= 1 else boolean(upgrade_type != UPGRADE)
        return compact_string(feature) + int16(level) + kind + EMPTY_TAGGED_FIELDS

    body = int32(10_000) + uvarint(len(updates) + 1) + b"".join(map(encode, updates))
    if version >= 1:
        body += boolean(validate_only)
    body += EMPTY_TAGGED_FIELDS
    reader = conn.request(UPDATE_FEATURES, version, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms
    error, message = reader.int16(), reader.compact_string()
    results = {}
    if version < 2:
        def read_result(r):
            feature, code, _message = r.compact_string(), r.int16(), r.compact_string()
            r.skip_tagged_fields()
            results[feature] = code

        reader.compact_array(read_result)
    reader.skip_tagged_fields()
    reader.expect_end()
    return error, message, results


def finalized(conn):
    """{feature: level} from ApiVersions v3's finalized features (tag 2)."""
    reader = conn.request(API_VERSIONS, 3, api_versions_v3_body("gracchus-tests", "1.0"),
                          flexible_request=True)
    error, _keys, _throttle, tagged = read_api_versions_v3(reader)
    assert error == 0
    levels = {}
    if 2 in tagged:
        features = Reader(tagged[2])

        def read_feature(r):
            name, max_level, _min_level = r.compact_string(), r.int16(), r.int16()
            r.skip_tagged_fields()
            levels[name] = max_level

        features.compact_array(read_feature)
    return levels


def everywhere(nodes, expected_tv):
    def check():
        for node_id in nodes.node_ids():
            levels = nodes.node(node_id).call(finalized)
            assert levels.get(TV, 0) == expected_tv, (node_id, levels)
            assert levels.get("metadata.version") == 25, (node_id, levels)
        return True

    clients.wait_for(check, timeout_s=30, what=f"{TV} {expected_tv} on every node")


def transact(bootstrap, topic, value):
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tv-{value}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=value.encode())
    producer.commit_transaction(30)


def test_transaction_version_down_and_up_across_the_cluster(make_cluster, topic):
    nodes = make_cluster(3)
    everywhere(nodes, 2)
    controller = nodes.active_controller()
    other = next(n for n in nodes.node_ids() if n != controller)
    # Sent to a node that is not the active controller: planned there, forwarded.
    via = nodes.node(other)

    # A downgrade without the downgrade type is refused, and changes nothing.
    error, message, results = via.call(update_features, [(TV, 1, UPGRADE)])
    assert error == INVALID_UPDATE_VERSION and results == {TV: INVALID_UPDATE_VERSION}
    assert "Can't downgrade the version of this feature without setting the upgrade type" \
        in message
    # validate_only checks and changes nothing.
    assert via.call(update_features, [(TV, 0, SAFE_DOWNGRADE)], validate_only=True)[0] == 0
    everywhere(nodes, 2)

    assert via.call(update_features, [(TV, 0, SAFE_DOWNGRADE)])[:2] == (0, None)
    everywhere(nodes, 0)
    error, _message, _results = nodes.node(controller).call(update_features, [(TV, 1, UPGRADE)],
                                                            version=0)
    assert error == 0
    everywhere(nodes, 1)

    # Levels this node cannot run at, and features it does not have, are refused whole.
    for updates in ([(TV, 3, UPGRADE)], [("group.version", 2, UPGRADE)],
                    [("share.version", 1, UPGRADE)],
                    [("metadata.version", 24, SAFE_DOWNGRADE)],
                    [(TV, 2, UPGRADE), ("kraft.version", 1, UPGRADE)]):
        error, message, _ = via.call(update_features, updates, version=2)
        assert error == INVALID_UPDATE_VERSION, (updates, message)
    everywhere(nodes, 1)

    # Transactions work at the lowered level; the level survives a restart of every node.
    nodes.create_topic(via=1, name=topic, partitions=1, replication_factor=3)
    transact(nodes.bootstrap, topic, "at-tv1")
    for node_id in nodes.node_ids():
        nodes.restart(node_id)
    nodes.wait_formed()
    everywhere(nodes, 1)

    assert via.call(update_features, [(TV, 2, UPGRADE)])[0] == 0
    everywhere(nodes, 2)
    transact(nodes.bootstrap, topic, "at-tv2")
    # Each commit marker takes an offset: the records are at 0 and 2.
    messages = clients.consume(nodes, topic, 0, 0, 2, timeout_s=30,
                               **{"isolation.level": "read_committed"})
    assert [(m.offset(), m.value()) for m in messages] == [(0, b"at-tv1"), (2, b"at-tv2")]
