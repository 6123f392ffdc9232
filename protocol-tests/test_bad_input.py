"""Hostile and broken input on raw sockets.

The broker must answer ApiVersions for any version (Kafka's special case), close only the
offending connection on framing garbage, and reject corrupt record batches per partition
without appending anything. After each case the broker must still serve a new connection
and kcat -L.
"""

import socket
import struct
import time

import pytest

import clients
import cluster
import rawkafka
from rawkafka import array, frame, int16, int32, request_header, string

# The API versions the broker advertises: exactly these, no more, no fewer.
# Update this allow-list together with api/mod.rs when an API or a version is added.
EXPECTED_API_VERSIONS = {
    0: (0, 12),   # Produce: v0-2 advertised (KAFKA-18659) but refused, as Kafka 4.0
    1: (4, 17),   # Fetch
    2: (1, 10),   # ListOffsets
    3: (0, 13),   # Metadata
    8: (0, 9),    # OffsetCommit
    9: (0, 9),    # OffsetFetch
    10: (0, 6),   # FindCoordinator
    11: (0, 9),   # JoinGroup
    12: (0, 4),   # Heartbeat
    13: (0, 5),   # LeaveGroup
    14: (0, 5),   # SyncGroup
    15: (0, 6),   # DescribeGroups
    16: (0, 5),   # ListGroups
    18: (0, 4),   # ApiVersions
    19: (2, 7),   # CreateTopics
    20: (1, 6),   # DeleteTopics
    22: (0, 5),   # InitProducerId
    23: (0, 4),   # OffsetForLeaderEpoch
    24: (0, 5),   # AddPartitionsToTxn
    25: (0, 4),   # AddOffsetsToTxn
    26: (0, 5),   # EndTxn
    27: (1, 1),   # WriteTxnMarkers
    28: (0, 5),   # TxnOffsetCommit
    29: (1, 3),   # DescribeAcls
    30: (1, 3),   # CreateAcls
    31: (1, 3),   # DeleteAcls
    32: (1, 4),   # DescribeConfigs
    33: (0, 2),   # AlterConfigs
    44: (0, 1),   # IncrementalAlterConfigs
    48: (0, 1),   # DescribeClientQuotas
    49: (0, 1),   # AlterClientQuotas
    42: (0, 2),   # DeleteGroups
    43: (0, 2),   # ElectLeaders
    37: (0, 3),   # CreatePartitions
    47: (0, 0),   # OffsetDelete
    55: (0, 2),   # DescribeQuorum
    60: (0, 2),   # DescribeCluster
    61: (0, 0),   # DescribeProducers
    65: (0, 0),   # DescribeTransactions
    66: (0, 1),   # ListTransactions
    75: (0, 0),   # DescribeTopicPartitions
    21: (0, 2),   # DeleteRecords
    35: (0, 4),   # DescribeLogDirs
    34: (1, 2),   # AlterReplicaLogDirs
    57: (0, 2),   # UpdateFeatures
    45: (0, 0),   # AlterPartitionReassignments
    46: (0, 0),   # ListPartitionReassignments
    68: (0, 1),   # ConsumerGroupHeartbeat (KIP-848; off without `consumer` in the protocols)
    69: (0, 1),   # ConsumerGroupDescribe
}


def as_dict(keys):
    result = {}
    for api_key, version_min, version_max in keys:
        assert api_key not in result, f"api key {api_key} listed twice"
        result[api_key] = (version_min, version_max)
    return result


def assert_broker_healthy(broker):
    assert broker.is_running(), f"the broker died:\n{broker.stderr_tail()}"
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error_code, keys = rawkafka.api_versions_v0(conn)
    assert error_code == 0 and as_dict(keys) == EXPECTED_API_VERSIONS
    output = clients.kcat(broker, "-L").stdout
    assert f"broker 1 at 127.0.0.1:{broker.port}" in output, output


# ---------------------------------------------------------------- ApiVersions


def test_api_versions_v0_lists_exactly_the_supported_ranges(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error_code, keys = rawkafka.api_versions_v0(conn)
    assert error_code == 0
    assert as_dict(keys) == EXPECTED_API_VERSIONS


def test_api_versions_v3_with_client_software_name(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error_code, keys, throttle_time_ms = rawkafka.api_versions_v3(
            conn, software_name="gracchus-protocol-tests", software_version="1.0.0")
        assert error_code == 0
        assert throttle_time_ms == 0
        assert as_dict(keys) == EXPECTED_API_VERSIONS
        # The connection stays usable for further requests.
        error_code, keys = rawkafka.api_versions_v0(conn)
        assert error_code == 0 and as_dict(keys) == EXPECTED_API_VERSIONS


@pytest.mark.parametrize("version", [1, 2, 4])
def test_api_versions_other_versions(broker, version):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        if version >= 3:
            reader = conn.request(rawkafka.API_VERSIONS, version,
                                  rawkafka.api_versions_v3_body("gracchus-tests", "1"),
                                  flexible_request=True)
            error_code, keys, _throttle, _tags = rawkafka.read_api_versions_v3(reader)
        else:
            reader = conn.request(rawkafka.API_VERSIONS, version, b"")
            error_code, keys = rawkafka.read_api_versions_v0(reader)
            throttle_time_ms = reader.int32()  # v1+ appends throttle_time_ms
            assert throttle_time_ms == 0
        reader.expect_end()
    assert error_code == 0
    assert as_dict(keys) == EXPECTED_API_VERSIONS


def test_api_versions_unsupported_version_answers_v0_with_error_35(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        correlation_id = 4242
        # Header v2 (a new client would use it for a future version) and a v3-like body:
        # the broker must not need to understand either.
        header = request_header(rawkafka.API_VERSIONS, 99, correlation_id, flexible=True)
        conn.send_raw(frame(header + rawkafka.api_versions_v3_body("future-client", "9.9")))
        reader = rawkafka.Reader(conn.recv_frame())
        assert reader.int32() == correlation_id  # response header v0: no tagged fields
        error_code, keys = rawkafka.read_api_versions_v0(reader)
        reader.expect_end()  # a v0 body: nothing after the array
        assert error_code == rawkafka.UNSUPPORTED_VERSION
        # Only ApiVersions' own range, as Kafka answers (KIP-511): the rest comes with the
        # retry, which may then leave out what is switched off.
        assert keys == [(18, 0, 4)]

        # The client then retries with a version it found in the list, same connection.
        error_code, keys = rawkafka.api_versions_v0(conn)
        assert error_code == 0 and as_dict(keys) == EXPECTED_API_VERSIONS


def test_many_requests_pipelined_are_answered_in_order(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        ids = list(range(100, 150))
        payload = b"".join(frame(request_header(rawkafka.API_VERSIONS, 0, correlation_id))
                           for correlation_id in ids)
        conn.send_raw(payload)
        got = []
        for _ in ids:
            reader = rawkafka.Reader(conn.recv_frame())
            got.append(reader.int32())
            assert rawkafka.read_api_versions_v0(reader)[0] == 0
    assert got == ids


# ---------------------------------------------------------------- framing abuse

JUNK = bytes(range(7, 256, 7)) * 2

BAD_STREAMS = {
    "frame-200MiB": int32(200 * 1024 * 1024) + b"\x00" * 64,
    "frame-negative-size": int32(-1) + b"\x00" * 8,
    "frame-zero-size": int32(0),
    "http-request": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "garbage-body": frame(b"\xde\xad\xbe\xef" * 8),
    "header-cut-short": frame(b"\x00\x12\x00"),
    "client-id-longer-than-frame": frame(int16(18) + int16(0) + int32(1) + int16(100) + b"ab"),
    "unknown-api-key-9999": frame(request_header(9999, 0, 7)),
    "negative-api-key": frame(request_header(-5, 0, 7)),
    "produce-v2-below-minimum": frame(request_header(0, 2, 7) + string(None) + int16(1)
                                      + int32(1000) + array([], lambda x: x)),
    # Advertised (librdkafka needs min 0) but refused by closing, as Kafka 4.0 does.
    "produce-v0-advertised-but-refused": frame(request_header(0, 0, 7) + int16(1)
                                               + int32(1000) + array([], lambda x: x)),
    "produce-v1-advertised-but-refused": frame(request_header(0, 1, 7) + int16(1)
                                               + int32(1000) + array([], lambda x: x)),
    "metadata-v99-above-maximum": frame(request_header(3, 99, 7) + int32(-1)),
    "metadata-body-truncated": frame(request_header(3, 4, 7) + int32(5) + int16(3)),
    "junk-after-valid-size": int32(len(JUNK)) + JUNK,
}


@pytest.mark.parametrize("name", sorted(BAD_STREAMS))
def test_bad_stream_closes_only_that_connection(broker, name):
    bystander = rawkafka.Connection("127.0.0.1", broker.port)
    try:
        assert rawkafka.api_versions_v0(bystander)[0] == 0
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            try:
                conn.send_raw(BAD_STREAMS[name])
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed even before we finished writing: fine
            assert conn.wait_closed(timeout_s=10), f"{name}: connection was not closed"
        # A connection opened before the bad one is unaffected.
        assert rawkafka.api_versions_v0(bystander)[0] == 0
    finally:
        bystander.close()
    assert_broker_healthy(broker)


def test_truncated_frame_then_half_close(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        conn.send_raw(int32(100) + b"x" * 10)
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.wait_closed(timeout_s=10), "the broker kept a half-closed connection"
    assert_broker_healthy(broker)


def test_truncated_frame_then_close(broker):
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        sock.sendall(int32(1000) + b"partial")
        sock.close()
    assert_broker_healthy(broker)


def test_connect_and_close_without_sending(broker):
    for _ in range(50):
        socket.create_connection(("127.0.0.1", broker.port), timeout=5).close()
    assert_broker_healthy(broker)


# ---------------------------------------------------------------- corrupt batches


@pytest.fixture
def target(broker, topic):
    """A 2-partition topic with one good record in partition 0; returns its name."""
    clients.create_topic(broker, topic, partitions=2)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        result = rawkafka.produce(conn, topic, 0, rawkafka.build_batch([(b"k", b"good", [])]))
        assert (result.error_code, result.base_offset) == (0, 0), result
    return topic


def good_batch(value=b"fine"):
    return rawkafka.build_batch([(b"k", value, []), (b"k2", value * 2, [("h", b"v")])])


def corrupt_variants():
    batch = good_batch()
    length_field = struct.unpack_from(">i", batch, rawkafka.BATCH_LENGTH_OFFSET)[0]
    longer = bytearray(batch)
    struct.pack_into(">i", longer, rawkafka.BATCH_LENGTH_OFFSET, length_field + 10)
    return {
        "flipped-last-byte": (rawkafka.with_byte_flipped(batch, len(batch) - 1), {2}),
        "flipped-record-byte": (rawkafka.with_byte_flipped(batch, 70), {2}),
        "flipped-crc-field": (rawkafka.with_byte_flipped(batch, rawkafka.BATCH_CRC_OFFSET), {2}),
        "flipped-attributes": (rawkafka.with_byte_flipped(batch, rawkafka.BATCH_ATTRIBUTES_OFFSET
                                                          + 1), {2, 87}),
        "magic-0": (rawkafka.with_magic(batch, 0), {2, 87}),
        "magic-1": (rawkafka.with_magic(batch, 1), {2, 87}),
        "magic-3": (rawkafka.with_magic(batch, 3), {2, 87}),
        "length-field-too-large": (bytes(longer), {2, 87}),
        "batch-cut-short": (batch[:-5], {2, 87}),
        "header-only": (batch[:rawkafka.BATCH_HEADER_BYTES - 1], {2, 87}),
        "empty-records": (b"", {2, 87}),
        "two-bytes": (b"\x00\x01", {2, 87}),
    }


CORRUPT = corrupt_variants()


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_batch_is_rejected_and_not_appended(broker, target, name):
    batch, allowed_errors = CORRUPT[name]
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        result = rawkafka.produce(conn, target, 0, batch)
        assert result.error_code in allowed_errors, f"{name}: {result}"
        assert rawkafka.latest_offset(conn, target, 0) == 1, "a corrupt batch was appended"
        # The same connection still works and the log carries on at offset 1.
        result = rawkafka.produce(conn, target, 0, good_batch())
        assert (result.error_code, result.base_offset) == (0, 1), result
        assert rawkafka.latest_offset(conn, target, 0) == 3
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        values = [value for _o, _k, value, _h in rawkafka.fetch_all_records(conn, target, 0)]
    assert values == [b"good", b"fine", b"finefine"]


def test_one_corrupt_partition_does_not_fail_the_other(broker, target):
    bad = rawkafka.with_byte_flipped(good_batch(), 70)
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        results = rawkafka.produce_partitions(conn, target, {0: bad, 1: good_batch(b"p1")})
        assert results[0].error_code == rawkafka.CORRUPT_MESSAGE, results[0]
        assert (results[1].error_code, results[1].base_offset) == (0, 0), results[1]
        assert rawkafka.latest_offset(conn, target, 0) == 1
        assert rawkafka.latest_offset(conn, target, 1) == 2


def test_produce_to_unknown_partition(broker, target):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        result = rawkafka.produce(conn, target, 9, good_batch())
        assert result.error_code == rawkafka.UNKNOWN_TOPIC_OR_PARTITION, result


# ---------------------------------------------------------------- DescribeGroups v6

DESCRIBE_GROUPS = 15
GROUP_ID_NOT_FOUND = 69
COORDINATOR_LOAD_IN_PROGRESS = 14


def describe_groups(conn, version, groups):
    """DescribeGroups v5 or v6 (flexible): [(error_code, error_message, group_id, state)]."""
    body = (rawkafka.uvarint(len(groups) + 1)
            + b"".join(rawkafka.compact_string(g) for g in groups)
            + rawkafka.int8(0) + rawkafka.EMPTY_TAGGED_FIELDS)
    reader = conn.request(DESCRIBE_GROUPS, version, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms

    def read_group(r):
        error_code = r.int16()
        message = r.compact_string() if version >= 6 else None
        group_id, state = r.compact_string(), r.compact_string()
        r.compact_string(), r.compact_string()  # protocol type and data
        members = r.compact_array(lambda m: m)
        assert members == [], "an unknown group has no members"
        r.int32()  # authorized operations
        r.skip_tagged_fields()
        return error_code, message, group_id, state

    groups_read = reader.compact_array(read_group)
    reader.skip_tagged_fields()
    reader.expect_end()
    return groups_read


def wait_for_coordinator(conn, group, deadline_s=30.0):
    """FindCoordinator until the group's coordinator is up (creates __consumer_offsets)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if cluster.find_coordinator_v1(conn, group)[0] == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"no coordinator for {group} within {deadline_s} s")


def test_describe_groups_v6_reports_a_missing_group_with_an_error_and_message(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        wait_for_coordinator(conn, "no-such-group-v6")
        # The coordinator may still be loading its offsets partition (a client retries).
        deadline = time.monotonic() + 30.0
        while (v6 := describe_groups(conn, 6, ["no-such-group-v6"]))[0][0] == \
                COORDINATOR_LOAD_IN_PROGRESS and time.monotonic() < deadline:
            time.sleep(0.2)
        v5 = describe_groups(conn, 5, ["no-such-group-v6"])
    assert v6 == [(GROUP_ID_NOT_FOUND, "Group no-such-group-v6 not found.",
                   "no-such-group-v6", "Dead")]
    # Before v6 a missing group is only "Dead", without an error.
    assert v5 == [(0, None, "no-such-group-v6", "Dead")]
