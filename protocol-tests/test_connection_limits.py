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
        # A blocked connection is never answered; a served one answers in about a
        # millisecond, and within 3 s even on a loaded machine.
        conn = served(port, 10 if not conns else 3)
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


# ------------------------------------------------- per IP, creation rates, live changes
#
# The broker listens on 127.0.0.1; tests connect from other loopback addresses
# (127.0.0.2, ...) to be distinct client IPs, while the admin client's own connections
# come from 127.0.0.1.

LIMITED_IP, OTHER_IP, THIRD_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4"
NODE_ID = "1"


@pytest.fixture
def per_ip(data_root):
    """A fresh broker with a per-IP override for LIMITED_IP and short quota windows (3 x
    1 s, so a creation rate admits 2 s worth at once instead of 10 s)."""
    broker = conftest.Broker(f"conn-per-ip-{uuid.uuid4().hex[:8]}", data_root, {
        "max.connections.per.ip.overrides": f"{LIMITED_IP}:2",
        "quota.window.num": "3",
        "quota.window.size.seconds": "1",
    })
    broker.start()
    try:
        yield broker
    finally:
        assert broker.stop() == 0


def served_from(broker, source, timeout_s=10):
    """A connection from `source` that answered ApiVersions, or None (refused)."""
    try:
        conn = rawkafka.Connection(conftest.HOST, broker.port, timeout_s=timeout_s,
                                   source_host=source)
    except OSError:
        return None
    try:
        error_code, _ = rawkafka.api_versions_v0(conn)
        assert error_code == 0
        return conn
    except (OSError, rawkafka.ConnectionClosed):
        conn.close()
        return None


def refused_from(broker, source, timeout_s=10):
    """True when a connection from `source` is accepted and then closed by the broker
    (within timeout_s) without an answer to its ApiVersions."""
    conn = rawkafka.Connection(conftest.HOST, broker.port, timeout_s=timeout_s,
                               source_host=source)
    try:
        conn.send_raw(rawkafka.frame(rawkafka.request_header(18, 0, 1)))
        return conn.wait_closed(timeout_s)
    except OSError:
        return True  # reset while sending: closed as well
    finally:
        conn.close()


def alter_broker(broker, name, ops):
    """IncrementalAlterConfigs for BROKER resource `name` ("" is the cluster default),
    hand-encoded v0 from 127.0.0.1; (error code, message)."""
    from test_alter_configs import raw_incremental
    return raw_incremental(broker, 4, name, ops)


def eventually(check, timeout_s=10):
    """Waits for check() (the reconciler applies a committed change just after the reply)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_per_ip_override_closes_the_extra_connection_and_others_are_not_limited(per_ip):
    limited = [served_from(per_ip, LIMITED_IP) for _ in range(2)]
    others = []
    try:
        assert all(limited), "the override's 2 connections were not served"
        # The third from the same address is accepted and closed at once.
        assert refused_from(per_ip, LIMITED_IP)
        # Other addresses are not limited (max.connections.per.ip defaults to Int.MAX).
        others = [served_from(per_ip, OTHER_IP) for _ in range(5)]
        assert all(others)
        # A closed connection frees its address's slot.
        limited.pop().close()
        assert eventually(lambda: (c := served_from(per_ip, LIMITED_IP, 2)) and
                          (limited.append(c) or True))
    finally:
        close_all([c for c in limited + others if c])


def test_per_ip_limits_change_live(per_ip):
    from confluent_kafka.admin import AlterConfigOpType
    set_op, delete_op = AlterConfigOpType.SET, AlterConfigOpType.DELETE
    held = []
    try:
        # max.connections.per.ip as the cluster default, with 127.0.0.1 (the admin
        # client) raised by an override and LIMITED_IP's override raised to 3.
        error, message = alter_broker(per_ip, "", [
            ("max.connections.per.ip", set_op, "1"),
            ("max.connections.per.ip.overrides", set_op,
             f"127.0.0.1:1000,{LIMITED_IP}:3"),
        ])
        assert (error, message) == (0, None)

        def third_limited_to_one():
            conn = served_from(per_ip, THIRD_IP, 2)
            if conn is None:
                return False
            refused = refused_from(per_ip, THIRD_IP, 5)
            conn.close()
            return refused
        assert eventually(third_limited_to_one), "max.connections.per.ip=1 not applied"
        held = [served_from(per_ip, LIMITED_IP) for _ in range(3)]
        assert all(held), "the raised override was not applied"
        assert refused_from(per_ip, LIMITED_IP)
        close_all(held)
        held = []

        # This broker's own value wins over the cluster default.
        error, _ = alter_broker(per_ip, NODE_ID, [("max.connections.per.ip", set_op, "3")])
        assert error == 0

        def third_allowed_three():
            conns = [served_from(per_ip, THIRD_IP, 2) for _ in range(3)]
            close_all([c for c in conns if c])
            return all(conns)
        assert eventually(third_allowed_three)
        # Described with its source, the cluster default under it.
        from test_alter_configs import raw_describe
        error, described = raw_describe(per_ip, 4, NODE_ID, ["max.connections.per.ip"])
        dynamic_broker_config = 2  # Kafka's ConfigSource.DYNAMIC_BROKER_CONFIG
        assert (error, described["max.connections.per.ip"]) == (0, ("3", dynamic_broker_config))

        # Removed everywhere: unlimited again.
        assert alter_broker(per_ip, NODE_ID, [("max.connections.per.ip", delete_op, "")])[0] == 0
        assert alter_broker(per_ip, "", [("max.connections.per.ip", delete_op, "")])[0] == 0

        def third_unlimited():
            conns = [served_from(per_ip, THIRD_IP, 2) for _ in range(6)]
            close_all([c for c in conns if c])
            return all(conns)
        assert eventually(third_unlimited)
    finally:
        close_all([c for c in held if c])


def test_invalid_connection_limits_are_refused_with_kafkas_messages(per_ip):
    from confluent_kafka.admin import AlterConfigOpType
    set_op = AlterConfigOpType.SET
    invalid_request = 42
    cases = [
        ([("max.connections.per.ip", "-1")],
         "Invalid value -1 for configuration max.connections.per.ip: Value must be at least 0"),
        ([("max.connections", "many")],
         "Invalid value many for configuration max.connections: Not a number of type INT"),
        ([("max.connections.per.ip.overrides", "bad host:1")],
         "max.connections.per.ip.overrides contains invalid addresses : bad host"),
        ([("max.connections.per.ip", "0")],
         "requirement failed: max.connections.per.ip can be set to zero only if "
         "max.connections.per.ip.overrides property is set."),
        ([("listener.name.plaintext.max.connections", "0")], "Invalid dynamic configuration"),
    ]
    for ops, expected in cases:
        error, message = alter_broker(per_ip, NODE_ID, [(k, set_op, v) for k, v in ops])
        assert (error, message) == (invalid_request, expected), ops
    # Nothing was stored: the broker still serves every address.
    conn = served_from(per_ip, THIRD_IP)
    assert conn is not None
    conn.close()


def rapid_reconnects_after_a_refusal(broker, ip, attempts=6):
    """Reconnects from `ip` until one is refused (the quota applied: the reconciler takes it
    just after the commit, so no fixed sleep), then `attempts` more; their outcomes (True:
    served). At 1/s the ones right after a refusal are mostly refused too."""
    for _ in range(20):
        conn = served_from(broker, ip, timeout_s=5)
        if conn is None:
            break
        conn.close()
    else:
        raise AssertionError(f"20 rapid connections from {ip} were all served")
    outcomes = []
    for _ in range(attempts):
        conn = served_from(broker, ip, timeout_s=5)
        outcomes.append(conn is not None)
        if conn:
            conn.close()
    return outcomes


def test_ip_connection_creation_rate_closes_rapid_reconnects_after_a_delay(per_ip):
    from test_client_quotas import alter as alter_quotas
    quota = [({"ip": OTHER_IP}, [("connection_creation_rate", 1.0)])]
    assert alter_quotas(per_ip, quota) == [(0, None)]
    # Rapid reconnects from OTHER_IP: 1/s over 2 windows admits about 2 at once; the rest
    # are accepted and closed after their throttle time without an answer.
    outcomes = rapid_reconnects_after_a_refusal(per_ip, OTHER_IP)
    assert outcomes.count(False) >= 2, outcomes
    # A different entity (address) is untouched.
    for _ in range(8):
        conn = served_from(per_ip, THIRD_IP, timeout_s=5)
        assert conn is not None, "an address without a quota was throttled"
        conn.close()
    # Removing the quota lifts it (after the window the refused ones never counted in).
    assert alter_quotas(per_ip, [({"ip": OTHER_IP}, [("connection_creation_rate", None)])]) \
        == [(0, None)]

    def admitted_again():
        conns = [served_from(per_ip, OTHER_IP, 2) for _ in range(4)]
        close_all([c for c in conns if c])
        return all(conns)
    assert eventually(admitted_again)


def test_default_ip_quota_applies_to_addresses_without_their_own(per_ip):
    from test_client_quotas import alter as alter_quotas
    # The default ip entity limits every address, 127.0.0.1 (the admin) included; a
    # generous rate for 127.0.0.1 of its own keeps it out of the test.
    assert alter_quotas(per_ip, [
        ({"ip": "127.0.0.1"}, [("connection_creation_rate", 1000.0)]),
        ({"ip": None}, [("connection_creation_rate", 1.0)]),
    ]) == [(0, None), (0, None)]
    outcomes = rapid_reconnects_after_a_refusal(per_ip, THIRD_IP)
    assert outcomes.count(False) >= 2, outcomes
    for _ in range(8):
        conn = served_from(per_ip, "127.0.0.1", timeout_s=5)
        assert conn is not None
        conn.close()
    assert alter_quotas(per_ip, [({"ip": None}, [("connection_creation_rate", None)])]) \
        == [(0, None)]


def test_broker_connection_creation_rate_delays_accepts_live(per_ip):
    from confluent_kafka.admin import AlterConfigOpType
    set_op, delete_op = AlterConfigOpType.SET, AlterConfigOpType.DELETE
    assert alter_broker(per_ip, NODE_ID, [("max.connection.creation.rate", set_op, "2")])[0] == 0
    time.sleep(0.5)
    # Every connection is served (the acceptor waits, it does not refuse), but 12 in a row
    # at 2/s over 2 s windows cannot all be taken at once.
    started = time.monotonic()
    conns = [served_from(per_ip, THIRD_IP, timeout_s=15) for _ in range(12)]
    elapsed = time.monotonic() - started
    close_all([c for c in conns if c])
    assert all(conns), "a connection over the creation rate was refused, not delayed"
    assert elapsed >= 1.0, f"12 connections at 2/s took {elapsed:.2f} s"
    assert alter_broker(per_ip, NODE_ID, [("max.connection.creation.rate", delete_op, "")])[0] \
        == 0
