"""Self-tests of the test tooling; these need no broker.

rawkafka's encoders and decoders are checked against kafka-python's independent protocol
structs, its Connection against a scripted local socket, and conftest's Broker harness
against a stand-in broker process (a tiny Python TCP server).
"""

import os
import signal
import socket
import struct
import sys
import textwrap
import threading

import pytest
from kafka.protocol.api import RequestHeader, RequestHeaderV2
from kafka.protocol.api_versions import (ApiVersionsRequest, ApiVersionsResponse_v0,
                                         ApiVersionsResponse_v3)
from kafka.protocol.fetch import FetchRequest, FetchResponse_v4
from kafka.protocol.init_producer_id import InitProducerIdRequest, InitProducerIdResponse_v1
from kafka.protocol.list_offsets import ListOffsetsRequest, ListOffsetsResponse_v1
from kafka.protocol.metadata import MetadataRequest, MetadataResponse_v4
from kafka.protocol.produce import ProduceRequest, ProduceResponse_v8

import conftest
import rawkafka


def encoded(struct_instance):
    # kafka-python binds encode() through a weak method: keep the instance alive.
    return bytes(struct_instance.encode())


class ScriptedConnection:
    """Stands in for rawkafka.Connection: records the request, returns a canned body."""

    def __init__(self, response_body):
        self.response_body = response_body
        self.calls = []

    def request(self, api_key, api_version, body, flexible_request=False,
                flexible_response=False):
        self.calls.append((api_key, api_version, bytes(body), flexible_request))
        return rawkafka.Reader(self.response_body)


# ---------------------------------------------------------------- encoders


def test_request_headers_match_kafka_python():
    request = ApiVersionsRequest[0]()
    assert rawkafka.request_header(18, 0, 7, client_id="c") == \
        encoded(RequestHeader(request, correlation_id=7, client_id="c"))
    request = ApiVersionsRequest[3](client_software_name="n", client_software_version="1",
                                    _tagged_fields={})
    assert rawkafka.request_header(18, 3, 9, client_id="c", flexible=True) == \
        encoded(RequestHeaderV2(request, correlation_id=9, client_id="c"))


def test_request_bodies_match_kafka_python():
    same = lambda item: item  # noqa: E731
    r = rawkafka
    assert r.array(["ab", "c"], r.string) + r.boolean(True) == \
        encoded(MetadataRequest[4](topics=["ab", "c"], allow_auto_topic_creation=True))
    assert r.string(None) + r.int32(60000) == encoded(
        InitProducerIdRequest[1](transactional_id=None, transaction_timeout_ms=60000))
    assert r.api_versions_v3_body("name", "1.0") == encoded(ApiVersionsRequest[3]("name", "1.0",
                                                                                   {}))
    partitions = r.array([r.int32(0) + r.int64(-3)], same)
    assert r.int32(-1) + r.array([r.string("t") + partitions], same) == \
        encoded(ListOffsetsRequest[1](replica_id=-1, topics=[("t", [(0, -3)])]))
    fetch_partitions = r.array([r.int32(2) + r.int64(5) + r.int32(999)], same)
    assert (r.int32(-1) + r.int32(500) + r.int32(1) + r.int32(1000) + r.int8(0)
            + r.array([r.string("t") + fetch_partitions], same)) == \
        encoded(FetchRequest[4](-1, 500, 1, 1000, 0, [("t", [(2, 5, 999)])]))


def test_produce_request_matches_kafka_python():
    conn = ScriptedConnection(encoded(ProduceResponse_v8(
        [("t", [(1, 0, 42, -1, 0, [], None)])], 0)))
    result = rawkafka.produce(conn, "t", 1, b"batch", acks=-1, timeout_ms=1000)
    (_key, version, body, _flexible) = conn.calls[0]
    assert version == 8
    assert body == encoded(ProduceRequest[8](None, -1, 1000, [("t", [(1, b"batch")])]))
    assert (result.error_code, result.base_offset, result.log_start_offset) == (0, 42, 0)


# ---------------------------------------------------------------- decoders


def test_api_versions_decoders():
    body = encoded(ApiVersionsResponse_v0(error_code=35, api_versions=[(18, 0, 4), (0, 3, 12)]))
    error_code, keys = rawkafka.read_api_versions_v0(rawkafka.Reader(body))
    assert (error_code, keys) == (35, [(18, 0, 4), (0, 3, 12)])

    body = encoded(ApiVersionsResponse_v3(
        error_code=0, api_versions=[(18, 0, 4, {}), (3, 0, 13, {})], throttle_time_ms=5,
        _tagged_fields={}))
    error_code, keys, throttle, tags = rawkafka.read_api_versions_v3(rawkafka.Reader(body))
    assert (error_code, keys, throttle, tags) == (0, [(18, 0, 4), (3, 0, 13)], 5, {})


def test_metadata_decoder():
    body = encoded(MetadataResponse_v4(
        0, [(1, "127.0.0.1", 9092, None)], "cluster-x", 1,
        [(0, "t", False, [(0, 0, 1, [1], [1]), (0, 1, 1, [1], [1])]),
         (3, "missing", False, [])]))
    conn = ScriptedConnection(body)
    result = rawkafka.metadata_v4(conn, ["t", "missing"], allow_auto_topic_creation=True)
    assert result["brokers"] == [(1, "127.0.0.1", 9092, None)]
    assert (result["cluster_id"], result["controller_id"]) == ("cluster-x", 1)
    assert result["topics"]["t"] == (0, {0: (0, 1, [1], [1]), 1: (0, 1, [1], [1])})
    assert result["topics"]["missing"] == (3, {})


def test_fetch_list_offsets_and_init_producer_id_decoders():
    batch = rawkafka.build_batch([(b"k", b"v", [("h", b"x")])], timestamp_ms=1000)
    conn = ScriptedConnection(encoded(FetchResponse_v4(
        0, [("t", [(0, 0, 10, 10, [], batch + batch[:20])])])))
    result = rawkafka.fetch(conn, "t", 0, 0)
    assert (result.error_code, result.high_watermark) == (0, 10)
    (parsed,) = result.batches()  # the partial second batch is dropped
    assert [(r.offset, r.key, r.value, r.headers) for r in parsed] == \
        [(0, b"k", b"v", [("h", b"x")])]

    conn = ScriptedConnection(encoded(ListOffsetsResponse_v1([("t", [(0, 0, 2000, 1)])])))
    assert rawkafka.list_offsets(conn, "t", 0, 1500) == (0, 2000, 1)

    conn = ScriptedConnection(encoded(InitProducerIdResponse_v1(0, 0, 77, 3)))
    assert rawkafka.init_producer_id(conn) == (0, 77, 3)


def test_reader_rejects_underflow_and_trailing_bytes():
    with pytest.raises(ValueError):
        rawkafka.Reader(b"\x00").int32()
    reader = rawkafka.Reader(b"\x00\x01\x02")
    reader.int16()
    with pytest.raises(ValueError):
        reader.expect_end()


def test_batch_helpers():
    batch = rawkafka.build_batch([(None, b"x" * 500, [])], compression_type=rawkafka.CODEC_ZSTD)
    assert rawkafka.batch_compression_type(batch) == rawkafka.CODEC_ZSTD
    assert rawkafka.with_magic(batch, 1)[rawkafka.BATCH_MAGIC_OFFSET] == 1
    from kafka.record.memory_records import MemoryRecords
    assert MemoryRecords(batch).next_batch().validate_crc()
    assert not MemoryRecords(rawkafka.with_byte_flipped(batch, len(batch) - 1)) \
        .next_batch().validate_crc()


# ---------------------------------------------------------------- Connection


def serve_once(script):
    """A one-connection local server running script(conn_socket) in a thread."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def run():
        conn, _addr = listener.accept()
        with conn:
            script(conn)
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def read_frame(sock):
    size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
    return sock.recv(size, socket.MSG_WAITALL)


def test_connection_round_trip_and_close_detection():
    seen = []

    def script(sock):
        request = read_frame(sock)
        seen.append(request)
        correlation_id = struct.unpack_from(">i", request, 4)[0]
        body = rawkafka.int32(correlation_id) + rawkafka.int16(0) + rawkafka.int32(0)
        sock.sendall(rawkafka.frame(body))
        read_frame(sock)  # the second request: answer by closing

    port, thread = serve_once(script)
    with rawkafka.Connection("127.0.0.1", port, timeout_s=5) as conn:
        assert rawkafka.api_versions_v0(conn) == (0, [])
        conn.send_raw(rawkafka.frame(rawkafka.request_header(18, 0, 99)))
        assert conn.wait_closed(timeout_s=5)
    thread.join(timeout=5)
    assert seen[0][:4] == b"\x00\x12\x00\x00"  # api key 18, version 0


def test_connection_rejects_wrong_correlation_id():
    def script(sock):
        read_frame(sock)
        sock.sendall(rawkafka.frame(rawkafka.int32(12345) + rawkafka.int16(0)
                                    + rawkafka.int32(0)))

    port, thread = serve_once(script)
    with rawkafka.Connection("127.0.0.1", port, timeout_s=5) as conn:
        with pytest.raises(ValueError, match="correlation id"):
            rawkafka.api_versions_v0(conn)
    thread.join(timeout=5)


# ---------------------------------------------------------------- Broker harness

FAKE_BROKER = textwrap.dedent("""\
    import signal, socket, sys, time
    args = sys.argv[1:]
    overrides = dict(args[i + 1].split("=", 1) for i in range(0, len(args), 2)
                     if args[i] == "--override")
    if overrides.get("fail.at.start") == "true":
        print("fake broker: refusing to start", file=sys.stderr)
        sys.exit(3)
    host_port = overrides["listeners"].split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen(16)
    print("fake broker listening on", host_port, "log.dirs", overrides["log.dirs"],
          file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        conn, _ = server.accept()
        # The harness waits for an answer to ApiVersions: any sized frame will do here.
        conn.settimeout(1)
        try:
            if conn.recv(4096):
                conn.sendall(b"\\x00\\x00\\x00\\x04\\x00\\x00\\x00\\x01")
        except OSError:
            pass
        conn.close()
""")


@pytest.fixture
def fake_binary(tmp_path, monkeypatch):
    path = tmp_path / "fake-gracchus"
    path.write_text(f"#!{sys.executable}\n" + FAKE_BROKER)
    path.chmod(0o755)
    monkeypatch.setenv("GRACCHUS_BIN", str(path))
    monkeypatch.delenv("GRACCHUS_EXTRA_OVERRIDES", raising=False)
    return path


def test_broker_harness_lifecycle(fake_binary, tmp_path):
    broker = conftest.Broker("harness", str(tmp_path))
    try:
        broker.start()
        assert broker.is_running() and conftest.port_accepts(broker.port)
        port, pid = broker.port, broker.process.pid
        assert broker.stop() == 0
        assert not broker.is_running()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

        broker.start()  # same port, same data dir
        assert broker.port == port and broker.process.pid != pid
        assert broker.kill() == -signal.SIGKILL
        broker.restart(hard=True)
        assert broker.is_running()
        broker.restart()
        assert broker.is_running()
        assert broker.starts == 4
    finally:
        broker.kill()
    tail = broker.stderr_tail()
    assert tail.count("fake broker listening on") == 4
    assert f"127.0.0.1:{port}" in tail and broker.data_dir in tail
    assert "--override listeners=PLAINTEXT://127.0.0.1:" in tail


def test_broker_harness_reports_start_failure(fake_binary, tmp_path):
    broker = conftest.Broker("harness-fail", str(tmp_path), {"fail.at.start": "true"})
    with pytest.raises(pytest.fail.Exception, match="refusing to start"):
        broker.start()
    assert not broker.is_running()
    assert broker.exit_codes == [3]


def test_broker_harness_missing_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("GRACCHUS_BIN", str(tmp_path / "does-not-exist"))
    broker = conftest.Broker("harness-missing", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="missing or not executable"):
        broker.start()
