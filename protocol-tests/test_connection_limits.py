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


def fill(port, limit):
    """Connections to port until one is not served (at most limit + 1 tries): (served,
    blocked) where blocked is False if all limit + 1 were served."""
    conns = []
    for _ in range(limit + 1):
        conn = served(port, 10 if not conns else 1.5)
        if conn is None:
            return conns, True
        conns.append(conn)
    return conns, False


def close_all(conns):
    for conn in conns:
        conn.close()


def test_inter_broker_listener_accepts_while_clients_fill_the_broker(limited):
    # The broker's own connections to its inter-broker listener count toward the total
    # too (as in Kafka), so clients may get fewer than max.connections.
    clients, blocked = fill(limited.client_port, CONNECTIONS_MAX)
    brokers, more = [], []
    try:
        assert clients and blocked, f"{len(clients)} clients served, none held back"
        # The broker is full for clients, but the inter-broker listener still serves...
        brokers = [served(limited.port, 10) for _ in range(3)]
        assert all(brokers), "the inter-broker listener was held back by max.connections"
        # ...up to its own listener.name.plaintext.max.connections (4).
        more, blocked = fill(limited.port, 4)
        assert blocked and len(brokers) + len(more) <= 4, len(brokers) + len(more)
    finally:
        close_all(clients + [b for b in brokers if b] + more)


def test_a_freed_slot_lets_the_waiting_client_in(limited):
    clients, blocked = fill(limited.client_port, CONNECTIONS_MAX)
    try:
        assert clients and blocked
        clients.pop().close()
        late = served(limited.client_port, 10)
        assert late is not None, "a client was not admitted after a connection closed"
        clients.append(late)
    finally:
        close_all(clients)
