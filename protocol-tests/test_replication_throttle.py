"""Replication throttles (issue 11, KIP-73): what `kafka-reassign-partitions --throttle`
sets, applied as Kafka applies it.

A partition with a few MB on nodes [1, 2] is reassigned to [1, 2, 3] with the rates set
low on every broker and the throttled-replica lists set as the tool sets them (leader
list: the current replicas; follower list: the moving one). Node 3's copy grows no faster
than the rate allows (an upper bound: a slow machine only copies less) and does grow;
the throttle configs removed (as `--verify` does), the move completes and node 3 holds
the same bytes. In-sync followers are never held: acks=all with min.insync.replicas=3
still completes under a tiny rate. Bad values are refused with Kafka's errors, and
DescribeConfigs shows the keys with their sources.
"""

import os
import time
import urllib.request

import pytest
from confluent_kafka.admin import ConfigSource, ResourceType

import clients
import test_reassign
from test_alter_configs import DELETE, INVALID_CONFIG, INVALID_REQUEST, SET, describe, \
    incremental, raw_incremental, source

LEADER_RATE = "leader.replication.throttled.rate"
FOLLOWER_RATE = "follower.replication.throttled.rate"
LEADER_REPLICAS = "leader.replication.throttled.replicas"
FOLLOWER_REPLICAS = "follower.replication.throttled.replicas"
LONG_MAX = str(2**63 - 1)

RATE = 150_000  # bytes/s, on each side of each broker
FETCH_MAX_BYTES = 65_536  # replica.fetch.max.bytes: one fetch may overshoot by this
RECORD_BYTES = 1000
RECORDS = 3000  # ~3 MB: twenty seconds' worth at RATE
THROTTLED_S = 5
SETTLE_S = 60


def log_bytes(nodes, node_id, topic):
    """Bytes in node_id's segments of topic-0 (0 before the directory exists)."""
    directory = os.path.join(nodes.node(node_id).data_dir, f"{topic}-0")
    if not os.path.isdir(directory):
        return 0
    return sum(os.path.getsize(os.path.join(directory, name))
               for name in os.listdir(directory) if name.endswith(".log"))


def set_rates(node, broker_ids, rate, keys=(LEADER_RATE, FOLLOWER_RATE)):
    """The tool's modifyInterBrokerThrottle: both rates on every broker involved."""
    for broker_id in broker_ids:
        ops = [(key, SET, str(rate)) for key in keys]
        assert incremental(node, ResourceType.BROKER, str(broker_id), ops) is None


def clear_rates(node, broker_ids):
    """The tool's clearBrokerLevelThrottles (--verify once the move is done)."""
    for broker_id in broker_ids:
        ops = [(LEADER_RATE, DELETE, None), (FOLLOWER_RATE, DELETE, None),
               ("replica.alter.log.dirs.io.max.bytes.per.second", DELETE, None)]
        assert incremental(node, ResourceType.BROKER, str(broker_id), ops) is None


# Both sides as the tool sets them, and each side alone (the other unbounded).
@pytest.mark.parametrize("rates", [(LEADER_RATE, FOLLOWER_RATE), (LEADER_RATE,),
                                   (FOLLOWER_RATE,)], ids=["both", "leader", "follower"])
def test_a_throttled_reassignment_copies_no_faster_than_the_rate(make_cluster, topic, rates):
    nodes = make_cluster(3, overrides={"replica.fetch.max.bytes": str(FETCH_MAX_BYTES)})
    error, message = nodes.node(1).create_topic(topic, assignments={0: [1, 2]})
    assert error == 0, message
    nodes.wait_topic_everywhere(topic, partitions=1)
    records = [{"key": f"k{i}".encode(), "value": os.urandom(RECORD_BYTES)}
               for i in range(RECORDS)]
    # Small batches: a fetch returns at least one whole batch, so the batch size (not only
    # replica.fetch.max.bytes) bounds how far one fetch may overshoot the rate.
    clients.produce_ok(nodes.node(1), topic, records, acks="all",
                       **{"batch.size": FETCH_MAX_BYTES // 4})
    total = log_bytes(nodes, 1, topic)
    assert total > RECORDS * RECORD_BYTES

    node = nodes.node(1)
    set_rates(node, [1, 2, 3], RATE, rates)
    ops = [(LEADER_REPLICAS, SET, "0:1,0:2"), (FOLLOWER_REPLICAS, SET, "0:3")]
    assert incremental(node, ResourceType.TOPIC, topic, ops) is None
    # Every node has the throttle before the move starts (configs are in the image).
    wait_follower_list_everywhere(nodes, topic, "0:3")

    started = time.monotonic()
    error, answers = node.call(test_reassign.alter_reassignments, {(topic, 0): [1, 2, 3]})
    assert (error, answers) == (0, {(topic, 0): (0, None)})
    clients.wait_for(lambda: log_bytes(nodes, 3, topic) > 0, timeout_s=SETTLE_S,
                     what="node 3 starts copying")
    time.sleep(THROTTLED_S)
    elapsed = time.monotonic() - started
    copied = log_bytes(nodes, 3, topic)
    # SimpleRate: within the first 11 s the rate is measured since the first byte, over at
    # least one window; a fetch starts only while within it and takes at most one fetch's
    # bytes. A second of slack for the window floor, one fetch for the overshoot.
    bound = RATE * (elapsed + 1) + FETCH_MAX_BYTES
    print(f"throttled copy: {copied} of {total} bytes in {elapsed:.1f} s (bound {bound:.0f})")
    assert 0 < copied <= bound, (copied, bound, elapsed)
    assert copied < total
    # Still moving: node 3 is not in the ISR, the move is under way.
    assert test_reassign.partition_state(nodes, topic, 1) == ([1, 2, 3], [1, 2], 1)
    # And progressing, a little later.
    clients.wait_for(lambda: log_bytes(nodes, 3, topic) > copied, timeout_s=SETTLE_S,
                     what="node 3 copies more")
    # The byte-rate metrics see the throttled traffic.
    for node_id, side in [(3, "follower"), (1, "leader")]:
        body = clients_metrics(nodes.node(node_id))
        rate_line = next(line for line in body.splitlines()
                         if line.startswith(f"kafka_server_{side}replication_byte_rate "))
        assert float(rate_line.split()[1]) > 0, rate_line
        assert f'kafka_server_replicationquota_throttled_partitions{{side="{side}"}} 1' in body

    # --verify: the throttles go, the move completes with node 3's copy identical.
    clear_rates(node, [1, 2, 3])
    ops = [(LEADER_REPLICAS, DELETE, None), (FOLLOWER_REPLICAS, DELETE, None)]
    assert incremental(node, ResourceType.TOPIC, topic, ops) is None
    test_reassign.wait_state(nodes, topic, ([1, 2, 3], [1, 2, 3], 1), on=(1, 2, 3))
    original = test_reassign.segment_bytes(nodes, 1, topic)
    clients.wait_for(lambda: test_reassign.segment_bytes(nodes, 3, topic) == original,
                     timeout_s=SETTLE_S, what="node 3's segment = node 1's")


def clients_metrics(node):
    with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
        return response.read().decode()


def wait_follower_list_everywhere(nodes, topic, value):
    """Until every node describes the topic's follower throttled-replicas list as `value`."""
    for on in (1, 2, 3):
        clients.wait_for(
            lambda: describe(nodes.node(on), ResourceType.TOPIC, topic)[
                FOLLOWER_REPLICAS].value == value,
            timeout_s=SETTLE_S, what=f"node {on} sees the throttled replicas")


def test_in_sync_followers_are_never_throttled(make_cluster, topic):
    nodes = make_cluster(3)
    error, message = nodes.node(1).create_topic(
        topic, assignments={0: [1, 2, 3]}, configs={"min.insync.replicas": "3"})
    assert error == 0, message
    nodes.wait_topic_everywhere(topic, partitions=1)
    test_reassign.wait_state(nodes, topic, ([1, 2, 3], [1, 2, 3], 1), on=(1, 2, 3))
    node = nodes.node(1)
    set_rates(node, [1, 2, 3], 1000)
    ops = [(LEADER_REPLICAS, SET, "*"), (FOLLOWER_REPLICAS, SET, "*")]
    assert incremental(node, ResourceType.TOPIC, topic, ops) is None
    wait_follower_list_everywhere(nodes, topic, "*")
    # Far more than 1000 B/s: in-sync followers take it all the same (their bytes count).
    records = [{"value": os.urandom(1000)} for _ in range(500)]
    for start in range(0, len(records), 100):
        clients.produce_ok(node, topic, records[start:start + 100], acks="all")
    assert test_reassign.partition_state(nodes, topic, 1) == ([1, 2, 3], [1, 2, 3], 1)
    body = clients_metrics(node)
    assert 'kafka_server_replicationquota_throttled_partitions{side="leader"} 1' in body
    rate_line = next(line for line in body.splitlines()
                     if line.startswith("kafka_server_leaderreplication_byte_rate "))
    assert float(rate_line.split()[1]) > 1000, rate_line


def test_bad_values_are_refused_and_the_keys_described(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    for bad in ["0", "0:a", "*,0:1", "all"]:
        assert incremental(broker, ResourceType.TOPIC, topic,
                           [(LEADER_REPLICAS, SET, bad)]) == INVALID_CONFIG, bad
    error, message = raw_incremental(broker, 2, topic, [(FOLLOWER_REPLICAS, SET, "1:x")])
    assert (error, message) == (
        INVALID_CONFIG,
        f"Invalid value [1:x] for configuration {FOLLOWER_REPLICAS}: {FOLLOWER_REPLICAS} must "
        "be the literal '*' or a list of replicas in the following format: "
        "[partitionId]:[brokerId],[partitionId]:[brokerId],...")
    for bad in ["-1", "fast"]:
        assert incremental(broker, ResourceType.BROKER, "1",
                           [(LEADER_RATE, SET, bad)]) == INVALID_REQUEST, bad
    assert raw_incremental(broker, 4, "", [(FOLLOWER_RATE, SET, "-5")])[0] == INVALID_REQUEST

    # Topic: the lists at their default "", then as set.
    entries = describe(broker, ResourceType.TOPIC, topic)
    for key in (LEADER_REPLICAS, FOLLOWER_REPLICAS):
        assert (entries[key].value, source(entries[key])) == ("", ConfigSource.DEFAULT_CONFIG)
    assert incremental(broker, ResourceType.TOPIC, topic,
                       [(LEADER_REPLICAS, SET, "0:1, 1:1")]) is None
    entry = describe(broker, ResourceType.TOPIC, topic)[LEADER_REPLICAS]
    assert (entry.value, source(entry)) == ("0:1, 1:1", ConfigSource.DYNAMIC_TOPIC_CONFIG)

    # Broker: Long.MAX_VALUE by default, then the cluster default, then this broker's own.
    def rate_entry():
        return describe(broker, ResourceType.BROKER, "1")[LEADER_RATE]

    entry = rate_entry()
    assert (entry.value, source(entry), entry.is_read_only) == \
        (LONG_MAX, ConfigSource.DEFAULT_CONFIG, False)
    assert raw_incremental(broker, 4, "", [(LEADER_RATE, SET, "5000")]) == (0, None)
    entry = rate_entry()
    assert (entry.value, source(entry)) == ("5000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
    assert incremental(broker, ResourceType.BROKER, "1", [(LEADER_RATE, SET, "7000")]) is None
    entry = rate_entry()
    assert (entry.value, source(entry)) == ("7000", ConfigSource.DYNAMIC_BROKER_CONFIG)
    for key, value in [("replication.quota.window.num", "11"),
                       ("replication.quota.window.size.seconds", "1")]:
        entry = describe(broker, ResourceType.BROKER, "1")[key]
        assert (entry.value, source(entry), entry.is_read_only) == \
            (value, ConfigSource.DEFAULT_CONFIG, True)
    assert incremental(broker, ResourceType.BROKER, "1",
                       [("replication.quota.window.num", SET, "5")]) == INVALID_REQUEST
