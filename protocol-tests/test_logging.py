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


# ---------------------------------------------------------------- BROKER_LOGGER

BROKER_LOGGER = 8
OP_SET, OP_DELETE, OP_APPEND = 0, 1, 2
INVALID_CONFIG, INVALID_REQUEST = 40, 42


def alter_loggers(broker, ops, name="1", version=0):
    """IncrementalAlterConfigs on this broker's loggers (no client in the venv names the
    BROKER_LOGGER resource type): ops [(logger, op, level)] -> (error, message)."""
    def config(op):
        logger, op_type, level = op
        return rawkafka.string(logger) + rawkafka.int8(op_type) + rawkafka.string(level)

    body = rawkafka.array([name], lambda n: rawkafka.int8(BROKER_LOGGER) +
                          rawkafka.string(n) + rawkafka.array(ops, config))
    with rawkafka.Connection(conftest.HOST, broker.port) as conn:
        reader = conn.request(44, version, body + rawkafka.boolean(False))
        reader.int32()  # throttle
        ((error, message),) = reader.array(
            lambda r: (r.int16(), r.string(), r.int8(), r.string())[:2])
    return error, message


def describe_loggers(broker, name="1"):
    """DescribeConfigs v1 of this broker's loggers: (error, {logger: (level, source,
    read_only)})."""
    body = rawkafka.array([name], lambda n: rawkafka.int8(BROKER_LOGGER) +
                          rawkafka.string(n) + rawkafka.int32(-1)) + rawkafka.boolean(False)
    with rawkafka.Connection(conftest.HOST, broker.port) as conn:
        reader = conn.request(32, 1, body)
        reader.int32()  # throttle

        def read_config(r):
            logger, level, read_only = r.string(), r.string(), r.boolean()
            source, _sensitive = r.int8(), r.boolean()
            r.array(lambda s: (s.string(), s.string(), s.int8()))
            return logger, (level, source, read_only)

        def read_result(r):
            error, _message, _type, _name = r.int16(), r.string(), r.int8(), r.string()
            return error, dict(r.array(read_config))

        (result,) = reader.array(read_result)
    return result


def test_broker_tracing_levels_change_what_the_broker_logs(make_broker):
    """kafka-configs --entity-type broker-loggers: a logger set to DEBUG starts logging
    request spans at once, DELETE puts it back to the root's level, and Kafka's errors
    come back for unknown loggers, bad levels, the root and non-incremental operations."""
    broker = make_broker("info")
    error, loggers = describe_loggers(broker)
    assert error == 0
    # DYNAMIC_BROKER_LOGGER_CONFIG (6), alterable.
    assert loggers["root"] == ("INFO", 6, False)
    assert loggers["gracchus::server"] == ("INFO", 6, False)
    one_session(broker)
    time.sleep(0.5)
    assert "latency_us" not in log_text(broker)

    assert alter_loggers(broker, [("gracchus::server", OP_SET, "DEBUG")]) == (0, None)
    assert describe_loggers(broker)[1]["gracchus::server"][0] == "DEBUG"
    peer = one_session(broker)
    wait_for_line(broker, r"latency_us")
    wait_for_line(broker, rf"connection closed peer={re.escape(peer)}\b")

    assert alter_loggers(broker, [("gracchus::server", OP_DELETE, None)]) == (0, None)
    assert describe_loggers(broker)[1]["gracchus::server"][0] == "INFO"
    spans_before = log_text(broker).count("latency_us")
    one_session(broker)
    time.sleep(0.5)
    assert log_text(broker).count("latency_us") == spans_before

    assert alter_loggers(broker, [("kafka.server.ReplicaManager", OP_SET, "DEBUG")]) == (
        INVALID_CONFIG, "Logger kafka.server.ReplicaManager does not exist!")
    error, message = alter_loggers(broker, [("root", OP_SET, "LOUD")])
    assert error == INVALID_CONFIG and "not a supported log level" in message
    assert alter_loggers(broker, [("root", OP_DELETE, None)]) == (
        INVALID_REQUEST, "Removing the log level of the root logger is not allowed")
    assert alter_loggers(broker, [("root", OP_APPEND, "DEBUG")]) == (
        INVALID_REQUEST, "APPEND operation is not allowed for the BROKER_LOGGER resource")
    assert alter_loggers(broker, [("root", OP_SET, "DEBUG")], name="7")[0] == INVALID_REQUEST
    assert describe_loggers(broker, name="")[0] == INVALID_REQUEST
    assert describe_loggers(broker)[1]["root"][0] == "INFO"
