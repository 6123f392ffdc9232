"""Connection limits with KIP-402's exemption: `max.connections` is broker-wide, but the
inter-broker listener is not held back by it when the broker has several listeners (Kafka's
`ConnectionQuotas`), so brokers can still reach each other while clients fill the broker;
`listener.name.<l>.max.connections` applies to every listener, that one included.
"""

import uuid

import pytest

import conftest
import rawkafka

CONNECTIONS_MAX = 3


@pytest.fixture(scope="module")
def limited(data_root):
    broker = conftest.Broker(f"conn-limits-{uuid.uuid4().hex[:8]}", data_root)
    client_port = conftest.free_port()
    while client_port == broker.port:
        client_port = conftest.free_port()
    # The start-up probe connects to broker.port: the inter-broker listener.
    broker.overrides.update({
        "listeners": f"PLAINTEXT://{conftest.HOST}:{broker.port},"
                     f"CLIENT://{conftest.HOST}:{client_port}",
        "advertised.listeners": f"PLAINTEXT://{conftest.HOST}:{broker.port},"
                                f"CLIENT://{conftest.HOST}:{client_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CLIENT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "max.connections": str(CONNECTIONS_MAX),
        "listener.name.plaintext.max.connections": "4",
    })
    broker.client_port = client_port
    broker.start()
    try:
        yield broker
    finally:
        assert broker.stop() == 0


def served(port, timeout_s):
    """A new connection that answered ApiVersions within timeout_s, or None."""
    conn = rawkafka.Connection(conftest.HOST, port, timeout_s=timeout_s)
    try:
        error_code, _ = rawkafka.api_versions_v0(conn)
        assert error_code == 0
        return conn
    except (OSError, rawkafka.ConnectionClosed):
        conn.close()
        return None


def test_inter_broker_listener_accepts_while_clients_fill_the_broker(limited):
    clients = [served(limited.client_port, 10) for _ in range(CONNECTIONS_MAX)]
    waiting = None
    brokers = []
    try:
        assert all(clients), "the client listener did not serve max.connections connections"
        # The broker is full for clients: one more is not served...
        waiting = rawkafka.Connection(conftest.HOST, limited.client_port, timeout_s=1.5)
        waiting.send_raw(conftest.API_VERSIONS_V0)
        with pytest.raises(OSError):
            waiting.recv_frame()
        # ...but the inter-broker listener still is, up to its own listener limit (4).
        brokers = [served(limited.port, 10) for _ in range(4)]
        assert all(brokers), "the inter-broker listener was held back by max.connections"
        assert served(limited.port, 1.5) is None, "listener.name.plaintext.max.connections"
    finally:
        for conn in clients + brokers:
            if conn:
                conn.close()
        if waiting:
            waiting.close()


def test_a_freed_slot_lets_the_waiting_client_in(limited):
    clients = [served(limited.client_port, 10) for _ in range(CONNECTIONS_MAX)]
    try:
        assert all(clients)
        assert served(limited.client_port, 1.5) is None
        clients.pop().close()
        late = served(limited.client_port, 10)
        assert late is not None, "a client was not admitted after a connection closed"
        clients.append(late)
    finally:
        for conn in clients:
            if conn:
                conn.close()
