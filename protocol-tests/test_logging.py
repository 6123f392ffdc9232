"""Logging (issue 11): one info line per connection event (accepted, closed with a reason)
and per error; a debug span per request carrying api, version, correlation id, client id
and listener, closed by a line with its latency. The filter is `log.filter` (RUST_LOG
syntax); a non-empty RUST_LOG environment variable wins over it.
"""

import re
import time
import uuid

import pytest

import conftest
import rawkafka
from rawkafka import frame, request_header

CLIENT_ID = "log-test-client"


def start(data_root, log_filter, rust_log=""):
    # An empty RUST_LOG counts as unset, so the harness's own environment cannot leak in.
    broker = conftest.Broker(f"logging-{uuid.uuid4().hex[:8]}", data_root,
                             env={"RUST_LOG": rust_log})
    if log_filter is not None:
        broker.overrides["log.filter"] = log_filter
    broker.start()
    return broker


@pytest.fixture
def make_broker(data_root):
    started = []

    def make(log_filter, rust_log=""):
        broker = start(data_root, log_filter, rust_log)
        started.append(broker)
        return broker

    yield make
    for broker in started:
        assert broker.stop() == 0


def log_text(broker):
    with open(broker.stderr_path, "rb") as stderr:
        return stderr.read().decode("utf-8", "replace")


def wait_for_line(broker, pattern, timeout_s=10.0):
    """The first log line matching pattern (a regex), waiting for it to be written."""
    deadline = time.monotonic() + timeout_s
    while True:
        for line in log_text(broker).splitlines():
            if re.search(pattern, line):
                return line
        if time.monotonic() > deadline:
            pytest.fail(f"no log line matches {pattern!r}\n{broker.stderr_tail()}")
        time.sleep(0.1)


def one_session(broker):
    """ApiVersions v0 and Metadata v4 with our client id, then a clean close; returns the
    local address as the broker logs the peer, and the Metadata correlation id."""
    with rawkafka.Connection(conftest.HOST, broker.port) as conn:
        host, port = conn.sock.getsockname()[:2]
        header = request_header(rawkafka.API_VERSIONS, 0, 41, client_id=CLIENT_ID)
        conn.send_raw(frame(header))
        conn.recv_frame()
        header = request_header(rawkafka.METADATA, 4, 42, client_id=CLIENT_ID)
        conn.send_raw(frame(header + rawkafka.int32(0) + rawkafka.boolean(False)))
        conn.recv_frame()
    return f"{host}:{port}"


def test_debug_filter_logs_connection_events_and_request_spans(make_broker):
    broker = make_broker("info,gracchus=debug")
    peer = one_session(broker)
    accepted = wait_for_line(broker, rf"connection accepted peer={re.escape(peer)}\b")
    assert " INFO " in accepted and "listener=PLAINTEXT" in accepted, accepted
    closed = wait_for_line(broker, rf"connection closed peer={re.escape(peer)}\b")
    assert " INFO " in closed and 'reason="client closed"' in closed, closed
    request = wait_for_line(broker, r"request\{api=Metadata version=4 correlation_id=42 ")
    assert " DEBUG " in request, request
    assert f'client_id="{CLIENT_ID}"' in request, request
    assert "listener=PLAINTEXT}" in request, request
    assert re.search(r"request answered latency_us=\d+", request), request
    versions = wait_for_line(broker, r"request\{api=ApiVersions version=0 correlation_id=41 ")
    assert "request answered" in versions, versions


def test_errors_are_logged_at_info_with_the_reason(make_broker):
    broker = make_broker("info")
    with rawkafka.Connection(conftest.HOST, broker.port) as conn:
        peer = "{}:{}".format(*conn.sock.getsockname()[:2])
        conn.send_raw(frame(request_header(9999, 0, 7)))
        assert conn.wait_closed(timeout_s=10)
    closed = wait_for_line(broker, rf"connection closed peer={re.escape(peer)}\b")
    assert " INFO " in closed and 'reason="bad frame"' in closed, closed
    assert "unknown api key 9999" in closed, closed


def test_info_filter_logs_connections_but_not_requests(make_broker):
    broker = make_broker("info")
    peer = one_session(broker)
    wait_for_line(broker, rf"connection closed peer={re.escape(peer)}\b")
    text = log_text(broker)
    assert f"connection accepted peer={peer}" in text
    assert "request{" not in text and "request answered" not in text
    assert " DEBUG " not in text


def test_rust_log_wins_over_log_filter(make_broker):
    broker = make_broker("info,gracchus=debug", rust_log="info")
    peer = one_session(broker)
    wait_for_line(broker, rf"connection closed peer={re.escape(peer)}\b")
    text = log_text(broker)
    assert "request{" not in text and " DEBUG " not in text


def test_an_invalid_log_filter_stops_the_start(data_root):
    broker = conftest.Broker(f"logging-{uuid.uuid4().hex[:8]}", data_root,
                             env={"RUST_LOG": ""})
    broker.overrides["log.filter"] = "info,gracchus=notalevel"
    with pytest.raises(pytest.fail.Exception):
        broker.start()
    assert broker.exit_codes and broker.exit_codes[-1] != 0
    assert "invalid log.filter" in log_text(broker)
