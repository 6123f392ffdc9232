"""Hand-encoded Kafka requests for tests that real clients cannot express.

Real clients hide the wire: they retry, pick versions, validate input and never send a
duplicate batch on purpose. The tests in test_idempotence.py and test_bad_input.py need
exact bytes, so this module encodes the few requests they use by hand (struct), from the
message schemas in apache/kafka `clients/src/main/resources/common/message/*.json`.

Only non-flexible versions are encoded, except ApiVersions v3 (header v2, compact
fields), which test_bad_input.py checks on purpose. Record batches are built with
kafka-python's DefaultRecordBatchBuilder (an independent implementation of the v2
batch format) and parsed with its MemoryRecords.

Every socket operation has a timeout; nothing here retries.
"""

import socket
import struct
import time

from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

# Api keys used here.
PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
FIND_COORDINATOR = 10
JOIN_GROUP = 11
API_VERSIONS = 18
INIT_PRODUCER_ID = 22

# Kafka error codes used by the tests.
NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5
MESSAGE_TOO_LARGE = 10
NOT_COORDINATOR = 16
UNSUPPORTED_VERSION = 35
INVALID_REQUEST = 42
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
DUPLICATE_SEQUENCE_NUMBER = 46
UNSUPPORTED_COMPRESSION_TYPE = 76
MEMBER_ID_REQUIRED = 79
INVALID_RECORD = 87

# ListOffsets special timestamps.
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3

# Offsets of fields inside a v2 record batch header (see DefaultRecordBatch).
BATCH_LENGTH_OFFSET = 8
BATCH_MAGIC_OFFSET = 16
BATCH_CRC_OFFSET = 17
BATCH_ATTRIBUTES_OFFSET = 21
BATCH_HEADER_BYTES = 61

CLIENT_ID = "gracchus-rawkafka"


# ---------------------------------------------------------------- primitive encoders


def int8(value):
    return struct.pack(">b", value)


def int16(value):
    return struct.pack(">h", value)


def int32(value):
    return struct.pack(">i", value)


def int64(value):
    return struct.pack(">q", value)


def boolean(value):
    return b"\x01" if value else b"\x00"


def string(value):
    """STRING / NULLABLE_STRING: int16 length, then UTF-8 bytes (-1 for null)."""
    if value is None:
        return int16(-1)
    data = value.encode("utf-8")
    return int16(len(data)) + data


def nullable_bytes(value):
    """BYTES / NULLABLE_BYTES / RECORDS: int32 length, then the bytes (-1 for null)."""
    if value is None:
        return int32(-1)
    return int32(len(value)) + bytes(value)


def array(items, encode_item):
    """ARRAY: int32 count, then each item (-1 for a null array)."""
    if items is None:
        return int32(-1)
    return int32(len(items)) + b"".join(encode_item(item) for item in items)


def uvarint(value):
    assert value >= 0
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def compact_string(value):
    """COMPACT_STRING: uvarint (length + 1), then UTF-8 bytes (0 for null)."""
    if value is None:
        return uvarint(0)
    data = value.encode("utf-8")
    return uvarint(len(data) + 1) + data


EMPTY_TAGGED_FIELDS = uvarint(0)


def request_header(api_key, api_version, correlation_id, client_id=CLIENT_ID, flexible=False):
    """Request header v1 (non-flexible) or v2 (flexible: adds empty tagged fields).

    The client id stays a classic NULLABLE_STRING in header v2 as well.
    """
    header = int16(api_key) + int16(api_version) + int32(correlation_id) + string(client_id)
    if flexible:
        header += EMPTY_TAGGED_FIELDS
    return header


def frame(payload):
    return int32(len(payload)) + payload


# ---------------------------------------------------------------- decoder


class Reader:
    """Reads big-endian Kafka primitives from a bytes object; raises on underflow."""

    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0

    def remaining(self):
        return len(self.data) - self.pos

    def take(self, count):
        if count < 0 or self.pos + count > len(self.data):
            raise ValueError(
                f"response underflow: need {count} bytes at {self.pos}, have {self.remaining()}"
            )
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def _unpack(self, fmt, size):
        return struct.unpack(fmt, self.take(size))[0]

    def int8(self):
        return self._unpack(">b", 1)

    def int16(self):
        return self._unpack(">h", 2)

    def int32(self):
        return self._unpack(">i", 4)

    def int64(self):
        return self._unpack(">q", 8)

    def boolean(self):
        return self.int8() != 0

    def string(self):
        length = self.int16()
        if length < 0:
            return None
        return self.take(length).decode("utf-8")

    def nullable_bytes(self):
        length = self.int32()
        if length < 0:
            return None
        return self.take(length)

    def array(self, read_item):
        count = self.int32()
        if count < 0:
            return None
        return [read_item(self) for _ in range(count)]

    def uvarint(self):
        shift = 0
        value = 0
        for _ in range(5):
            byte = self.int8() & 0xFF
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise ValueError("uvarint longer than 5 bytes")

    def compact_string(self):
        length = self.uvarint() - 1
        if length < 0:
            return None
        return self.take(length).decode("utf-8")

    def compact_array(self, read_item):
        count = self.uvarint() - 1
        if count < 0:
            return None
        return [read_item(self) for _ in range(count)]

    def skip_tagged_fields(self):
        """Skips a tagged-field section; returns {tag: raw bytes}."""
        fields = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            size = self.uvarint()
            fields[tag] = self.take(size)
        return fields

    def expect_end(self):
        if self.remaining():
            raise ValueError(f"{self.remaining()} unexpected trailing bytes in response")


# ---------------------------------------------------------------- connection


class ConnectionClosed(Exception):
    """The broker closed the connection (EOF or reset) while we waited for bytes."""


class Connection:
    """One TCP connection to the broker; requests are sent and answered one at a time."""

    def __init__(self, host, port, timeout_s=10.0, client_id=CLIENT_ID,
                 source_host=None):
        # source_host: the local address to connect from (any 127.x.y.z on Linux), so
        # tests can be several client IPs.
        source = (source_host, 0) if source_host else None
        self.sock = socket.create_connection((host, port), timeout=timeout_s,
                                             source_address=source)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout_s = timeout_s
        self.client_id = client_id
        self.next_correlation_id = 1

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def _recv_exact(self, count):
        chunks = []
        while count:
            try:
                chunk = self.sock.recv(min(count, 1 << 20))
            except ConnectionResetError as error:
                raise ConnectionClosed(str(error)) from error
            if not chunk:
                raise ConnectionClosed("EOF")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def recv_frame(self, size_max=64 << 20):
        (size,) = struct.unpack(">i", self._recv_exact(4))
        if size < 0 or size > size_max:
            raise ValueError(f"response frame size {size} out of range")
        return self._recv_exact(size)

    def wait_closed(self, timeout_s=10.0):
        """True if the peer closes (EOF/reset) within timeout_s; bytes it sends are dropped."""
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    return False
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        finally:
            self.sock.settimeout(self.timeout_s)

    def request(self, api_key, api_version, body, flexible_request=False,
                flexible_response=False):
        """Sends one request and returns a Reader over the response body.

        flexible_response: response header v1 (tagged fields after the correlation id).
        ApiVersions always answers with header v0, whatever its version.
        """
        correlation_id = self.next_correlation_id
        self.next_correlation_id += 1
        header = request_header(api_key, api_version, correlation_id,
                                client_id=self.client_id, flexible=flexible_request)
        self.send_raw(frame(header + body))
        reader = Reader(self.recv_frame())
        got = reader.int32()
        if got != correlation_id:
            raise ValueError(f"correlation id {got} in response, expected {correlation_id}")
        if flexible_response:
            reader.skip_tagged_fields()
        return reader


# ---------------------------------------------------------------- ApiVersions


def read_api_versions_v0(reader):
    """ApiVersions v0 body: error_code, [api_key, min_version, max_version]."""
    error_code = reader.int16()
    keys = reader.array(lambda r: (r.int16(), r.int16(), r.int16()))
    return error_code, keys


def api_versions_v0(conn):
    reader = conn.request(API_VERSIONS, 0, b"")
    error_code, keys = read_api_versions_v0(reader)
    reader.expect_end()
    return error_code, keys


def api_versions_v3_body(software_name, software_version):
    return compact_string(software_name) + compact_string(software_version) + EMPTY_TAGGED_FIELDS


def read_api_versions_v3(reader):
    """ApiVersions v3 body: error_code, compact [key, min, max, tags], throttle, tags."""

    def read_key(r):
        item = (r.int16(), r.int16(), r.int16())
        r.skip_tagged_fields()
        return item

    error_code = reader.int16()
    keys = reader.compact_array(read_key)
    throttle_time_ms = reader.int32()
    tagged = reader.skip_tagged_fields()
    return error_code, keys, throttle_time_ms, tagged


def api_versions_v3(conn, software_name="gracchus-tests", software_version="1.0"):
    body = api_versions_v3_body(software_name, software_version)
    reader = conn.request(API_VERSIONS, 3, body, flexible_request=True)
    error_code, keys, throttle_time_ms, _tagged = read_api_versions_v3(reader)
    reader.expect_end()
    return error_code, keys, throttle_time_ms


# ---------------------------------------------------------------- Metadata v4


def metadata_v4(conn, topics, allow_auto_topic_creation=False):
    """Metadata v4. topics=None asks for all topics.

    Returns dict(brokers=[(node_id, host, port, rack)], cluster_id, controller_id,
    topics={name: (error_code, {partition: (error_code, leader, replicas, isr)})}).
    """
    body = array(topics, string) + boolean(allow_auto_topic_creation)
    reader = conn.request(METADATA, 4, body)
    reader.int32()  # throttle_time_ms
    brokers = reader.array(lambda r: (r.int32(), r.string(), r.int32(), r.string()))
    cluster_id = reader.string()
    controller_id = reader.int32()

    def read_partition(r):
        error_code = r.int16()
        index = r.int32()
        leader = r.int32()
        replicas = r.array(lambda rr: rr.int32())
        isr = r.array(lambda rr: rr.int32())
        return index, (error_code, leader, replicas, isr)

    def read_topic(r):
        error_code = r.int16()
        name = r.string()
        r.boolean()  # is_internal
        partitions = dict(r.array(read_partition))
        return name, (error_code, partitions)

    topics_out = dict(reader.array(read_topic))
    reader.expect_end()
    return {
        "brokers": brokers,
        "cluster_id": cluster_id,
        "controller_id": controller_id,
        "topics": topics_out,
    }


# ---------------------------------------------------------------- groups


def find_coordinator_v1(conn, key, key_type=0):
    """FindCoordinator v1 (key_type 0 = group). Returns (error_code, node_id, host, port)."""
    reader = conn.request(FIND_COORDINATOR, 1, string(key) + int8(key_type))
    reader.int32()  # throttle_time_ms
    error = reader.int16()
    reader.string()  # error_message
    node_id, host, port = reader.int32(), reader.string(), reader.int32()
    reader.expect_end()
    return error, node_id, host, port


def join_group_v5(conn, group, member_id="", session_timeout_ms=30000,
                  rebalance_timeout_ms=60000, protocol=("range", b"")):
    """JoinGroup v5 for a consumer with one protocol. Returns a dict of the answer:
    error_code, generation_id, protocol_name, leader, member_id, members (ids)."""
    name, metadata = protocol
    body = (string(group) + int32(session_timeout_ms) + int32(rebalance_timeout_ms)
            + string(member_id) + string(None) + string("consumer")
            + array([(name, metadata)], lambda p: string(p[0]) + nullable_bytes(p[1])))
    reader = conn.request(JOIN_GROUP, 5, body)
    reader.int32()  # throttle_time_ms
    answer = {
        "error_code": reader.int16(),
        "generation_id": reader.int32(),
        "protocol_name": reader.string(),
        "leader": reader.string(),
        "member_id": reader.string(),
    }
    answer["members"] = reader.array(
        lambda r: (r.string(), r.string(), r.nullable_bytes())[0])
    reader.expect_end()
    return answer


# ---------------------------------------------------------------- InitProducerId v1


def init_producer_id(conn, transactional_id=None, transaction_timeout_ms=60000, version=1):
    """InitProducerId v0/v1 (identical layouts). Returns (error_code, producer_id, epoch)."""
    assert version in (0, 1)
    body = string(transactional_id) + int32(transaction_timeout_ms)
    reader = conn.request(INIT_PRODUCER_ID, version, body)
    reader.int32()  # throttle_time_ms
    error_code = reader.int16()
    producer_id = reader.int64()
    producer_epoch = reader.int16()
    reader.expect_end()
    return error_code, producer_id, producer_epoch


# ---------------------------------------------------------------- Produce v3..v8


class PartitionProduceResult:
    def __init__(self, error_code, base_offset, log_append_time_ms, log_start_offset,
                 record_errors, error_message):
        self.error_code = error_code
        self.base_offset = base_offset
        self.log_append_time_ms = log_append_time_ms
        self.log_start_offset = log_start_offset
        self.record_errors = record_errors
        self.error_message = error_message

    def __repr__(self):
        return (f"PartitionProduceResult(error_code={self.error_code}, "
                f"base_offset={self.base_offset}, log_start_offset={self.log_start_offset}, "
                f"record_errors={self.record_errors}, error_message={self.error_message!r})")


def produce(conn, topic, partition, records, acks=-1, timeout_ms=10000, version=8,
            transactional_id=None):
    """Produce v3..v8 of one batch (bytes) to one partition; returns PartitionProduceResult."""
    results = produce_partitions(conn, topic, {partition: records}, acks, timeout_ms, version,
                                 transactional_id)
    return results[partition]


def produce_partitions(conn, topic, records_by_partition, acks=-1, timeout_ms=10000,
                       version=8, transactional_id=None):
    """Produce v3..v8 to several partitions of one topic in one request.

    records_by_partition: {partition: batch bytes}. Returns {partition: result}.
    """
    assert 3 <= version <= 8, "versions 9+ are flexible and not encoded here"
    partition_data = [int32(partition) + nullable_bytes(records)
                      for partition, records in records_by_partition.items()]
    topic_data = string(topic) + array(partition_data, lambda item: item)
    body = (string(transactional_id) + int16(acks) + int32(timeout_ms)
            + array([topic_data], lambda item: item))
    reader = conn.request(PRODUCE, version, body)

    def read_partition(r):
        index = r.int32()
        error_code = r.int16()
        base_offset = r.int64()
        log_append_time_ms = r.int64()
        log_start_offset = r.int64() if version >= 5 else None
        record_errors, error_message = [], None
        if version >= 8:
            record_errors = r.array(lambda rr: (rr.int32(), rr.string()))
            error_message = r.string()
        return index, PartitionProduceResult(error_code, base_offset, log_append_time_ms,
                                             log_start_offset, record_errors, error_message)

    topics = reader.array(lambda r: (r.string(), dict(r.array(read_partition))))
    reader.int32()  # throttle_time_ms
    reader.expect_end()
    assert len(topics) == 1 and topics[0][0] == topic, f"unexpected topics {topics}"
    partitions = topics[0][1]
    assert sorted(partitions) == sorted(records_by_partition), \
        f"unexpected partitions {partitions}"
    return partitions


# ---------------------------------------------------------------- ListOffsets v1


def list_offsets(conn, topic, partition, timestamp):
    """ListOffsets v1; returns (error_code, timestamp, offset)."""
    partitions = array([int32(partition) + int64(timestamp)], lambda item: item)
    body = int32(-1) + array([string(topic) + partitions], lambda item: item)
    reader = conn.request(LIST_OFFSETS, 1, body)
    topics = reader.array(
        lambda r: (r.string(), r.array(lambda rr: (rr.int32(), rr.int16(), rr.int64(),
                                                   rr.int64()))))
    reader.expect_end()
    assert len(topics) == 1 and topics[0][0] == topic, f"unexpected topics {topics}"
    (index, error_code, found_timestamp, offset), = topics[0][1]
    assert index == partition
    return error_code, found_timestamp, offset


def latest_offset(conn, topic, partition):
    error_code, _timestamp, offset = list_offsets(conn, topic, partition, LATEST_TIMESTAMP)
    assert error_code == NONE, f"ListOffsets latest failed with error {error_code}"
    return offset


# ---------------------------------------------------------------- Fetch v4 and v11


class PartitionFetchResult:
    def __init__(self, error_code, high_watermark, last_stable_offset, records):
        self.error_code = error_code
        self.high_watermark = high_watermark
        self.last_stable_offset = last_stable_offset
        self.records = records  # raw bytes, possibly ending in a partial batch

    def batches(self):
        """Complete record batches in the response (kafka-python DefaultRecordBatch)."""
        out = []
        memory = MemoryRecords(self.records or b"")
        while True:
            batch = memory.next_batch()
            if batch is None:
                return out
            out.append(batch)


def fetch(conn, topic, partition, offset, max_wait_ms=0, min_bytes=1,
          max_bytes=1 << 20, partition_max_bytes=1 << 20, isolation_level=0, version=4):
    """Fetch v4, or v11 (the last version before flexible encoding; from v10 on a
    consumer may read topics stored as zstd), of one partition without a session
    (isolation_level 0 read_uncommitted, 1 read_committed); returns PartitionFetchResult."""
    assert version in (4, 11), "only Fetch v4 and v11 are encoded here"
    partition_fields = int32(partition)
    if version >= 9:
        partition_fields += int32(-1)  # current_leader_epoch: not checked
    partition_fields += int64(offset)
    if version >= 5:
        partition_fields += int64(-1)  # log_start_offset: a consumer's
    partition_fields += int32(partition_max_bytes)
    partitions = array([partition_fields], lambda item: item)
    body = (int32(-1) + int32(max_wait_ms) + int32(min_bytes) + int32(max_bytes)
            + int8(isolation_level))
    if version >= 7:
        body += int32(0) + int32(-1)  # session id and epoch: no session
    body += array([string(topic) + partitions], lambda item: item)
    if version >= 7:
        body += array([], lambda item: item)  # forgotten topics
    if version >= 11:
        body += string("")  # rack id
    reader = conn.request(FETCH, version, body)
    reader.int32()  # throttle_time_ms
    if version >= 7:
        error_code = reader.int16()
        assert error_code == NONE, f"Fetch v{version} failed with error {error_code}"
        reader.int32()  # session id

    def read_partition(r):
        index = r.int32()
        error_code = r.int16()
        high_watermark = r.int64()
        last_stable_offset = r.int64()
        if version >= 5:
            r.int64()  # log_start_offset
        r.array(lambda rr: (rr.int64(), rr.int64()))  # aborted transactions
        if version >= 11:
            r.int32()  # preferred_read_replica
        records = r.nullable_bytes()
        return index, PartitionFetchResult(error_code, high_watermark, last_stable_offset,
                                           records)

    topics = reader.array(lambda r: (r.string(), dict(r.array(read_partition))))
    reader.expect_end()
    assert len(topics) == 1 and topics[0][0] == topic, f"unexpected topics {topics}"
    return topics[0][1][partition]


def fetch_all_records(conn, topic, partition, offset_start=0, deadline_s=20.0):
    """Every record from offset_start to the high watermark, as (offset, key, value, headers).

    Records of a batch before offset_start are dropped, as clients do.
    """
    out = []
    offset = offset_start
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        result = fetch(conn, topic, partition, offset)
        assert result.error_code == NONE, f"Fetch failed with error {result.error_code}"
        if offset >= result.high_watermark:
            return out
        batches = result.batches()
        assert batches, f"no complete batch at offset {offset} below HW {result.high_watermark}"
        for batch in batches:
            for record in batch:
                if record.offset >= offset:
                    out.append((record.offset, record.key, record.value, record.headers))
            offset = max(offset, batch.next_offset)
    raise TimeoutError(f"could not read {topic}-{partition} up to the high watermark")


MARKER_ABORT, MARKER_COMMIT = "abort", "commit"


class LogEntry:
    """One offset of a partition as stored: a data record or a transaction marker.

    kind: "data", MARKER_COMMIT or MARKER_ABORT; for data, value and whether its batch is
    transactional; for markers, the coordinator epoch from the marker's value
    ([version int16, coordinator_epoch int32], Kafka's EndTransactionMarker)."""

    def __init__(self, kind, offset, producer_id, value=None, transactional=None,
                 coordinator_epoch=None):
        self.kind = kind
        self.offset = offset
        self.producer_id = producer_id
        self.value = value
        self.transactional = transactional
        self.coordinator_epoch = coordinator_epoch

    def brief(self):
        """("data", offset, value, transactional) or (kind, offset): for comparisons."""
        if self.kind == "data":
            return ("data", self.offset, self.value, self.transactional)
        return (self.kind, self.offset)

    def __repr__(self):
        return f"LogEntry{self.brief()}"


def read_layout(conn, topic, partition, deadline_s=20.0):
    """Every offset of topic/partition up to its high watermark, control records
    included (Fetch v4, read_uncommitted): [LogEntry]. A control batch must be
    transactional and hold abort (type 0) or commit (type 1) records."""
    out = []
    offset = 0
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        result = fetch(conn, topic, partition, offset)
        assert result.error_code == NONE, f"Fetch failed with error {result.error_code}"
        if offset >= result.high_watermark:
            return out
        batches = result.batches()
        assert batches, f"no complete batch at offset {offset} below HW {result.high_watermark}"
        for batch in batches:
            assert batch.validate_crc(), f"bad CRC in the batch at {batch.base_offset}"
            for record in batch:
                if record.offset < offset:
                    continue
                if batch.is_control_batch:
                    assert batch.is_transactional, \
                        f"control batch at {batch.base_offset} is not transactional"
                    kind = {0: MARKER_ABORT, 1: MARKER_COMMIT}.get(record.type)
                    assert kind is not None, f"control record type {record.type}"
                    version, coordinator_epoch = struct.unpack(">hi", record.value[:6])
                    assert version == 0, f"marker value version {version}"
                    out.append(LogEntry(kind, record.offset, batch.producer_id,
                                        coordinator_epoch=coordinator_epoch))
                else:
                    out.append(LogEntry("data", record.offset, batch.producer_id,
                                        value=record.value,
                                        transactional=batch.is_transactional))
            offset = max(offset, batch.next_offset)
    raise TimeoutError(f"could not read {topic}-{partition} up to the high watermark")


# ---------------------------------------------------------------- record batches


CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD = 0, 1, 2, 3, 4


def build_batch(records, compression_type=CODEC_NONE, producer_id=-1, producer_epoch=-1,
                base_sequence=-1, timestamp_ms=None):
    """A v2 record batch of records = [(key, value, headers)], offsets 0..n-1 relative.

    kafka-python sends a batch uncompressed when compression does not shrink it, so pass
    compressible values when the codec matters (check_compression_used checks it).
    """
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=compression_type, is_transactional=False,
        producer_id=producer_id, producer_epoch=producer_epoch,
        base_sequence=base_sequence, batch_size=16 << 20)
    if timestamp_ms is None:
        timestamp_ms = int(time.time() * 1000)
    for index, (key, value, headers) in enumerate(records):
        metadata = builder.append(index, timestamp=timestamp_ms + index, key=key, value=value,
                                  headers=list(headers))
        assert metadata is not None, "batch_size too small"
    return bytes(builder.build())


def batch_compression_type(batch_bytes):
    (attributes,) = struct.unpack_from(">h", batch_bytes, BATCH_ATTRIBUTES_OFFSET)
    return attributes & 0x07


def with_byte_flipped(batch_bytes, position):
    data = bytearray(batch_bytes)
    data[position] ^= 0xFF
    return bytes(data)


def with_magic(batch_bytes, magic):
    """The same batch with another magic byte (the CRC does not cover the magic)."""
    data = bytearray(batch_bytes)
    data[BATCH_MAGIC_OFFSET] = magic
    return bytes(data)
