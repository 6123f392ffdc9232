"""Several client listeners on one broker (issue 9): every non-controller listener in
`listeners` is bound, and Metadata, FindCoordinator and DescribeCluster answer with each
broker's endpoint on the listener the request arrived on, as Kafka does.

The set-up is the usual Docker Compose one: an internal PLAINTEXT listener advertised under
a name only the compose network resolves (here `kafka1.invalid`, which nothing resolves),
and an EXTERNAL one advertised as localhost. A client that only reaches EXTERNAL must be
told EXTERNAL endpoints, or it cannot work at all.
"""

import socket
import uuid

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

import clients
import cluster
import conftest
import rawkafka

FIND_COORDINATOR = 10
INTERNAL_HOST = "kafka1.invalid"


@pytest.fixture(scope="module")
def two_listeners(data_root):
    broker = conftest.Broker(f"listeners-{uuid.uuid4().hex[:8]}", data_root)
    external_port = conftest.free_port()
    while external_port == broker.port:
        external_port = conftest.free_port()
    broker.overrides.update({
        "listeners": f"PLAINTEXT://{conftest.HOST}:{broker.port},"
                     f"EXTERNAL://{conftest.HOST}:{external_port}",
        "advertised.listeners": f"PLAINTEXT://{INTERNAL_HOST}:{broker.port},"
                                f"EXTERNAL://localhost:{external_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "offsets.topic.replication.factor": "1",
        "group.initial.rebalance.delay.ms": "0",
    })
    broker.external_port = external_port
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Via:
    """The broker as a client that only knows one of its listeners sees it."""

    def __init__(self, host, port):
        self.host = host
        self.port = port

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"


def find_coordinator_v0(conn, group):
    """FindCoordinator v0: (error_code, node_id, host, port)."""
    reader = conn.request(FIND_COORDINATOR, 0, rawkafka.string(group))
    answer = (reader.int16(), reader.int32(), reader.string(), reader.int32())
    reader.expect_end()
    return answer


def test_metadata_names_the_listener_the_request_came_through(two_listeners):
    broker = two_listeners
    with rawkafka.Connection(conftest.HOST, broker.port) as conn:
        internal = rawkafka.metadata_v4(conn, [])["brokers"]
    with rawkafka.Connection(conftest.HOST, broker.external_port) as conn:
        external = rawkafka.metadata_v4(conn, [])["brokers"]
    assert internal == [(1, INTERNAL_HOST, broker.port, None)]
    assert external == [(1, "localhost", broker.external_port, None)]


def test_find_coordinator_names_the_listener_the_request_came_through(two_listeners):
    broker = two_listeners
    group = f"g-{uuid.uuid4().hex[:8]}"

    def ask(port):
        with rawkafka.Connection(conftest.HOST, port) as conn:
            return find_coordinator_v0(conn, group)

    # The first ask may create the offsets topic and find no leader yet.
    clients.wait_for(lambda: ask(broker.external_port)[0] == 0,
                     what="a coordinator for the group")
    assert ask(broker.external_port) == (0, 1, "localhost", broker.external_port)
    assert ask(broker.port) == (0, 1, INTERNAL_HOST, broker.port)


def test_describe_cluster_through_the_external_listener(two_listeners):
    broker = two_listeners
    admin = AdminClient(clients.base_config(Via("localhost", broker.external_port)))
    described = admin.describe_cluster(request_timeout=10).result(timeout=15)
    assert [(n.id, n.host, n.port) for n in described.nodes] == [
        (1, "localhost", broker.external_port)]


def test_clients_work_through_the_external_listener_only(two_listeners):
    """The internal listener is advertised under a name nothing resolves: producing,
    consuming and a consumer group work only if every answer on EXTERNAL names EXTERNAL."""
    via = Via("localhost", two_listeners.external_port)
    topic = f"external-{uuid.uuid4().hex[:8]}"
    clients.create_topic(via, topic)
    records = [{"key": f"k{i}".encode(), "value": f"v{i}".encode()} for i in range(20)]
    clients.produce_ok(via, topic, records)
    consumed = clients.consume(via, topic, 0, 0, len(records))
    assert [m.value() for m in consumed] == [r["value"] for r in records]
    # A consumer group: FindCoordinator, JoinGroup, SyncGroup, OffsetCommit on EXTERNAL.
    consumer = clients.consumer(via, **{"group.id": f"g-{uuid.uuid4().hex[:8]}",
                                        "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        seen = []
        clients.wait_for(lambda: _poll_into(consumer, seen) >= len(records),
                         what="the group consumer reading every record")
        assert sorted(m.offset() for m in seen[:len(records)]) == list(range(len(records)))
        done = TopicPartition(topic, 0, len(records))
        consumer.commit(offsets=[done], asynchronous=False)
        assert consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == \
            len(records)
    finally:
        consumer.close()


def _poll_into(consumer, seen):
    message = consumer.poll(0.5)
    if message is not None and message.error() is None:
        seen.append(message)
    return len(seen)


def test_a_listener_that_cannot_be_bound_stops_the_start_up(data_root):
    broker = conftest.Broker(f"listeners-busy-{uuid.uuid4().hex[:8]}", data_root)
    with socket.socket() as busy:
        busy.bind((conftest.HOST, 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        broker.overrides.update({
            "listeners": f"PLAINTEXT://{conftest.HOST}:{broker.port},"
                         f"EXTERNAL://{conftest.HOST}:{busy_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT",
        })
        with pytest.raises(pytest.fail.Exception, match="exited with"):
            broker.start()
    assert f"bind listener EXTERNAL {conftest.HOST}:{busy_port}" in broker.stderr_tail()


def test_three_nodes_list_every_broker_on_the_listener_asked(data_root):
    """Metadata through a node's EXTERNAL listener lists every broker's EXTERNAL endpoint;
    replication keeps using PLAINTEXT (inter.broker.listener.name)."""
    nodes = cluster.Cluster(3, data_root, overrides={"offsets.topic.replication.factor": "1"})
    external = dict(zip(nodes.node_ids(), cluster._free_ports(3)))
    for node in nodes.nodes:
        port = external[node.node_id]
        nodes.node_overrides[node.node_id] = {
            "listeners": f"PLAINTEXT://{node.host}:{node.broker_port},"
                         f"CONTROLLER://{node.host}:{node.controller_port},"
                         f"EXTERNAL://{node.host}:{port}",
            "advertised.listeners": f"PLAINTEXT://{node.host}:{node.broker_port},"
                                    f"EXTERNAL://localhost:{port}",
            "listener.security.protocol.map":
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT",
        }
    try:
        nodes.start()
        expected_external = sorted((i, "localhost", port, None) for i, port in external.items())
        expected_internal = sorted((n.node_id, n.host, n.broker_port, None) for n in nodes.nodes)

        def brokers(port):
            with rawkafka.Connection(conftest.HOST, port) as conn:
                return sorted(rawkafka.metadata_v4(conn, [])["brokers"])

        for node in nodes.nodes:
            clients.wait_for(lambda: brokers(external[node.node_id]) == expected_external,
                             what=f"node {node.node_id} listing EXTERNAL endpoints")
            assert brokers(node.broker_port) == expected_internal
    finally:
        nodes.close()
