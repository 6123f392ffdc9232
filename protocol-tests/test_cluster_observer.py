"""A broker that is not a controller voter (`process.roles=broker`, issue 7): it follows the
committed metadata log as an observer, serves the partitions it leads, forwards admin
requests, shows in DescribeQuorum as an observer, and holds the voters' image."""

import clients
import rawkafka
from test_cluster_faults import unique
from test_quorum_apis import CLUSTER_METADATA_TOPIC, describe_quorum


def test_a_broker_only_node_follows_the_metadata_log(make_cluster):
    nodes = make_cluster(4, start=False)
    voters = nodes.nodes[:3]
    nodes.overrides["controller.quorum.voters"] = ",".join(
        f"{n.node_id}@{n.host}:{n.controller_port}" for n in voters)
    observer = nodes.node(4)
    nodes.node_overrides[4] = {
        "process.roles": "broker",
        "listeners": f"PLAINTEXT://{observer.host}:{observer.broker_port}",
    }
    nodes.start()

    # Created through the observer (forwarded to the active controller), led by it.
    name = unique("observed")
    nodes.create_topic(4, name, assignments={0: [4], 1: [1]})
    nodes.wait_images_equal(check=lambda image: name in image["topics"])

    records = [{"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": 0}
               for i in range(20)]
    acked = clients.produce_ok(observer, name, records)
    assert [m.offset() for m in acked] == list(range(20))
    got = clients.consume(nodes.node(2), name, 0, 0, 20)
    assert [(m.key(), m.value()) for m in got] == [(r["key"], r["value"]) for r in records]

    with rawkafka.Connection(observer.host, observer.broker_port) as conn:
        response = describe_quorum(conn, 1)
    (topic, partitions), = response["topics"]
    assert topic == CLUSTER_METADATA_TOPIC
    (partition,) = partitions
    assert sorted(v["id"] for v in partition["voters"]) == [1, 2, 3]
    observed = {o["id"]: o for o in partition["observers"]}
    assert 4 in observed, partition
    assert observed[4]["log_end_offset"] >= partition["high_watermark"] - 10, partition

    # The observer restarts with no metadata of its own: it fetches the image again.
    nodes.restart(4)
    nodes.wait_images_equal(check=lambda image: name in image["topics"])
    got = clients.consume(observer, name, 0, 0, 20)
    assert [m.value() for m in got] == [r["value"] for r in records]
