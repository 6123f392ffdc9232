"""`connections.max.idle.ms`: the broker closes a connection that sent nothing for that
long (Kafka's `Selector` idle expiry), counted from the last answer; a connection that keeps
asking, even across several idle periods, stays open however long it lives.
"""

import time

import pytest

import conftest
import rawkafka

IDLE_MS = 3000  # a request every second in the keep-asking test: a stalled test process has slack
BROKER_OVERRIDES = {"connections.max.idle.ms": str(IDLE_MS)}


def test_an_idle_connection_is_closed_after_connections_max_idle_ms(broker):
    with rawkafka.Connection(conftest.HOST, broker.port) as conn:
        error_code, _ = rawkafka.api_versions_v0(conn)
        assert error_code == 0
        answered = time.monotonic()
        assert conn.wait_closed(timeout_s=IDLE_MS / 1000 + 10), "the idle connection stayed open"
        waited = time.monotonic() - answered
    # Not before its idle time (a little slack for clocks measured on two sides).
    assert waited >= IDLE_MS / 1000 - 0.2, f"closed after {waited:.2f} s of {IDLE_MS} ms idle"
    assert "idle timeout" in broker.stderr_tail()


def test_a_connection_that_keeps_asking_outlives_several_idle_periods(broker):
    with rawkafka.Connection(conftest.HOST, broker.port) as conn:
        # A request every third of the idle time for three idle periods: each answer must
        # come, on the same connection.
        started = time.monotonic()
        answers = 0
        while time.monotonic() - started < 3 * IDLE_MS / 1000:
            error_code, keys = rawkafka.api_versions_v0(conn)
            assert error_code == 0 and keys
            answers += 1
            time.sleep(IDLE_MS / 3000)
        assert answers >= 5  # a loaded machine stretches the loop; three periods pass anyway
        # Then it goes quiet, and is closed for it.
        assert conn.wait_closed(timeout_s=IDLE_MS / 1000 + 10), "the idle connection stayed open"


@pytest.mark.parametrize("idle_ms", [2**63 - 1, -1], ids=["long-max", "negative"])
def test_an_idle_time_past_any_clock_or_negative_means_never_idle(start_broker, idle_ms):
    """Kafka takes any long here: Long.MAX_VALUE ms is about 300 million years, and the
    connection must simply never be closed for idleness; a negative value turns idle
    expiry off (Kafka's `Selector` makes no `IdleExpiryManager`)."""
    huge = start_broker(f"idle-{idle_ms}", {"connections.max.idle.ms": str(idle_ms)})
    try:
        with rawkafka.Connection(conftest.HOST, huge.port) as conn:
            for _ in range(3):
                error_code, _ = rawkafka.api_versions_v0(conn)
                assert error_code == 0
            assert not conn.wait_closed(timeout_s=1.0)
            error_code, _ = rawkafka.api_versions_v0(conn)
            assert error_code == 0
    finally:
        assert huge.stop() == 0
