"""Connection limits with KIP-402's exemption: `max.connections` is broker-wide, but the
inter-broker listener is not held back by it when the broker has several listeners (Kafka's
`ConnectionQuotas`), so brokers can still reach each other while clients fill the broker;
`listener.name.<l>.max.connections` applies to every listener, that one included.
"""

import time
import uuid

import pytest

import conftest
import rawkafka

CONNECTIONS_MAX = 3
INTER_BROKER_MAX = 4


@pytest.fixture
def limited(data_root):
    """A fresh broker per test, so no test sees another's connections."""
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
        "listener.name.plaintext.max.connections": str(INTER_BROKER_MAX),
    })
    broker.client_port = client_port
    broker.start()
    try:
        wait_until_all_closed(broker)
        yield broker
    finally:
        assert broker.stop() == 0


def wait_until_all_closed(broker, timeout_s=10):
    """Waits until the broker has logged a close for every connection it accepted (the
    start-up probes), so the counts below start from zero."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(broker.stderr_path, encoding="utf-8", errors="replace") as stderr:
            text = stderr.read()
        accepted, closed = text.count("connection accepted"), text.count("connection closed")
        if accepted == closed:
            # The slot is released just after the close is logged.
            time.sleep(0.2)
            return
        time.sleep(0.05)
    pytest.fail(f"the broker logged {accepted} accepts but {closed} closes")


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
    clients, blocked = fill(limited.client_port, CONNECTIONS_MAX)
    brokers, more = [], []
    try:
        # Exactly max.connections clients: no slot is held by an idle listener.
        assert blocked and len(clients) == CONNECTIONS_MAX, len(clients)
        # The broker is full for clients, but the inter-broker listener still serves...
        brokers = [served(limited.port, 10) for _ in range(3)]
        assert all(brokers), "the inter-broker listener was held back by max.connections"
        # ...up to exactly its own listener.name.plaintext.max.connections.
        more, blocked = fill(limited.port, INTER_BROKER_MAX)
        assert blocked and len(brokers) + len(more) == INTER_BROKER_MAX, len(more)
    finally:
        close_all(clients + [b for b in brokers if b] + more)


def test_a_freed_slot_lets_the_waiting_client_in(limited):
    clients, blocked = fill(limited.client_port, CONNECTIONS_MAX)
    try:
        assert blocked and len(clients) == CONNECTIONS_MAX, len(clients)
        clients.pop().close()
        late = served(limited.client_port, 10)
        assert late is not None, "a client was not admitted after a connection closed"
        clients.append(late)
        # Still full: the freed slot went to exactly one client.
        extra = served(limited.client_port, 1.5)
        assert extra is None, "more than max.connections clients were served"
    finally:
        close_all(clients)
