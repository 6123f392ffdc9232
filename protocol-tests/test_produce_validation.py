"""Produce validation: what the broker must refuse so that no consumer gets stuck.

Kafka's broker walks every record it appends (LogValidator). These tests send batches a
real client never would, by raw frames (rawkafka.py) with a valid CRC, and check the
error code of the partition and that the log end offset did not move:
- compressed batches whose payload is noise: CORRUPT_MESSAGE;
- a header count that disagrees with the records inside (either way), records whose
  offset deltas are not 0..n-1, trailing bytes: INVALID_RECORD.
Topic rules give per-record errors (KIP-467 `record_errors`, Produce v8): a keyless
record on a compacted topic (INVALID_RECORD), a timestamp outside
message.timestamp.before.max.ms / after.max.ms (INVALID_TIMESTAMP); confluent-kafka
reports them per message. Client writes to internal topics get INVALID_TOPIC_EXCEPTION.
Last, a garbage batch already stored in __consumer_offsets (written into the segment
while the broker is stopped) must not keep groups from working after a restart.
"""

import glob
import gzip
import os
import struct
import time

import pytest
from confluent_kafka import KafkaError, TopicPartition
from kafka.codec import lz4_encode, snappy_encode, zstd_encode
from kafka.record.util import calc_crc32c

import clients
import rawkafka

INVALID_TOPIC_EXCEPTION = 17
INVALID_TIMESTAMP = 32
OFFSETS_TOPIC = "__consumer_offsets"
TIMEOUT_S = 30

BROKER_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "1",
}


# ---------------------------------------------------------------- hand-built batches


def varint(value):
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def record(offset_delta, key, value, timestamp_delta=0):
    """One v2 record with its length prefix; key None is a null key."""
    body = bytes([0]) + varint(timestamp_delta) + varint(offset_delta)
    body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(len(value)) + value + varint(0)
    return varint(len(body)) + body


def records_body(count, prefix=b"v"):
    return b"".join(record(i, b"k%d" % i, value_of(i, prefix)) for i in range(count))


def value_of(index, prefix=b"v"):
    return (prefix + b"-%d" % index) * 20


def batch(payload, codec, record_count, timestamp_ms=None):
    """A v2 batch around payload with any header count, a valid CRC and no producer id."""
    if timestamp_ms is None:
        timestamp_ms = int(time.time() * 1000)
    after_crc = struct.pack(">hiqqqhii", codec, record_count - 1, timestamp_ms, timestamp_ms,
                            -1, -1, -1, record_count) + payload
    crc = calc_crc32c(after_crc)
    return struct.pack(">qiibI", 0, 49 + len(payload), -1, 2, crc) + after_crc


COMPRESS = {
    rawkafka.CODEC_GZIP: gzip.compress,
    rawkafka.CODEC_SNAPPY: snappy_encode,
    rawkafka.CODEC_LZ4: lz4_encode,
    rawkafka.CODEC_ZSTD: zstd_encode,
}
CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def noise(length, seed):
    """Deterministic bytes no codec wrote."""
    state = seed
    out = bytearray()
    for _ in range(length):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(state >> 16 & 0xFF)
    return bytes(out)


# ---------------------------------------------------------------- helpers


@pytest.fixture
def conn(broker):
    with rawkafka.Connection("127.0.0.1", broker.port) as connection:
        yield connection


def seeded_topic(broker, conn, topic, config=None):
    """A one-partition topic already holding 3 good records (log end offset 3)."""
    clients.create_topic(broker, topic, 1, config)
    good = batch(records_body(3), 0, 3)
    result = rawkafka.produce(conn, topic, 0, good)
    assert (result.error_code, result.base_offset) == (rawkafka.NONE, 0), result
    return 3


def refused(conn, topic, records, code, end):
    """Produces records, expects `code`, and checks nothing was appended."""
    result = rawkafka.produce(conn, topic, 0, records)
    assert result.error_code == code, result
    assert result.base_offset == -1, result
    assert rawkafka.latest_offset(conn, topic, 0) == end, "the log end offset moved"
    return result


def assert_log_reads_back(conn, topic, end):
    """Every offset below the end is there once: nothing half-appended."""
    offsets = [offset for offset, *_ in rawkafka.fetch_all_records(conn, topic, 0)]
    assert offsets == list(range(end))


# ---------------------------------------------------------------- corrupt and invalid


@pytest.mark.parametrize("codec", [1, 2, 3, 4], ids=lambda c: CODEC_NAMES[c])
def test_noise_in_a_compressed_batch_is_corrupt_message(broker, conn, topic, codec):
    end = seeded_topic(broker, conn, topic)
    refused(conn, topic, batch(noise(300, codec), codec, 2), rawkafka.CORRUPT_MESSAGE, end)
    good = batch(COMPRESS[codec](records_body(2)), codec, 2)
    assert rawkafka.produce(conn, topic, 0, good).base_offset == end
    assert_log_reads_back(conn, topic, end + 2)


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4], ids=lambda c: CODEC_NAMES[c])
@pytest.mark.parametrize("declared", [2, 4, 5])
def test_a_count_that_disagrees_with_the_records_is_invalid_record(broker, conn, topic,
                                                                    codec, declared):
    end = seeded_topic(broker, conn, topic)
    body = records_body(3)
    payload = COMPRESS[codec](body) if codec else body
    refused(conn, topic, batch(payload, codec, declared), rawkafka.INVALID_RECORD, end)
    result = rawkafka.produce(conn, topic, 0, batch(payload, codec, 3))
    assert (result.error_code, result.base_offset) == (rawkafka.NONE, end), result
    # The consumer sees offsets 3, 4, 5 once each, with the values sent.
    read = rawkafka.fetch_all_records(conn, topic, 0, end)
    assert [(offset, value) for offset, _key, value, _headers in read] == \
        [(end + i, value_of(i)) for i in range(3)]


def test_offset_deltas_and_trailing_bytes_are_invalid_record(broker, conn, topic):
    end = seeded_topic(broker, conn, topic)
    repeated = record(0, b"a", b"x") + record(0, b"b", b"y")
    refused(conn, topic, batch(repeated, 0, 2), rawkafka.INVALID_RECORD, end)
    trailing = records_body(2) + b"\x00"
    refused(conn, topic, batch(trailing, 0, 2), rawkafka.INVALID_RECORD, end)
    too_long_varint = b"\xff\xff\xff\xff\xff\x01"
    refused(conn, topic, batch(too_long_varint, 0, 1), rawkafka.INVALID_RECORD, end)
    assert_log_reads_back(conn, topic, end)


def test_a_compression_bomb_is_refused(broker, conn, topic):
    # 96 MiB of zeros in one record compresses to a few KiB with zstd; the cap is
    # 64 x max.message.bytes (64 MiB by default).
    end = seeded_topic(broker, conn, topic)
    bomb = record(0, b"k", b"\x00" * (96 << 20))
    payload = zstd_encode(bomb)
    assert len(payload) < 1 << 20
    refused(conn, topic, batch(payload, rawkafka.CODEC_ZSTD, 1),
            rawkafka.MESSAGE_TOO_LARGE, end)


# ---------------------------------------------------------------- per-record errors


def test_keyless_records_on_a_compacted_topic_carry_record_errors(broker, conn, topic):
    end = seeded_topic(broker, conn, topic, {"cleanup.policy": "compact"})
    body = record(0, b"k", b"a") + record(1, None, b"b") + record(2, None, b"c")
    result = refused(conn, topic, batch(body, 0, 3), rawkafka.INVALID_RECORD, end)
    message = f"Compacted topic cannot accept message without key in topic partition {topic}-0."
    assert result.record_errors == [(1, message), (2, message)]
    assert result.error_message.startswith(
        "One or more records have been rejected due to 2 record errors in total")

    results = clients.produce(broker, topic, [{"value": b"no key"}],
                              **{"message.timeout.ms": 10000})
    assert results[0][0].code() == KafkaError.INVALID_RECORD
    assert rawkafka.latest_offset(conn, topic, 0) == end


@pytest.mark.parametrize("version", [3, 5, 7])
def test_before_v8_the_code_alone_reports_record_errors(broker, conn, topic, version):
    end = seeded_topic(broker, conn, topic, {"cleanup.policy": "compact"})
    result = rawkafka.produce(conn, topic, 0, batch(record(0, None, b"a"), 0, 1),
                              version=version)
    assert (result.error_code, result.base_offset) == (rawkafka.INVALID_RECORD, -1), result
    assert rawkafka.latest_offset(conn, topic, 0) == end


def test_timestamps_out_of_bounds_are_invalid_timestamp(broker, conn, topic):
    config = {"message.timestamp.before.max.ms": "60000"}
    end = seeded_topic(broker, conn, topic, config)
    now = int(time.time() * 1000)
    old = batch(record(0, b"k", b"old"), 0, 1, timestamp_ms=now - 3_600_000)
    result = refused(conn, topic, old, INVALID_TIMESTAMP, end)
    assert result.error_message == \
        "One or more records have been rejected due to invalid timestamp"
    assert len(result.record_errors) == 1 and result.record_errors[0][0] == 0
    assert result.record_errors[0][1].startswith(
        f"Timestamp {now - 3_600_000} of message with offset 0 is out of range.")
    # message.timestamp.after.max.ms defaults to one hour (Kafka 4.0).
    future = batch(record(0, b"k", b"new"), 0, 1, timestamp_ms=now + 2 * 3_600_000)
    refused(conn, topic, future, INVALID_TIMESTAMP, end)

    settings = {"message.timeout.ms": 10000}
    results = clients.produce(broker, topic, [{"value": b"old", "timestamp": now - 3_600_000}],
                              **settings)
    assert results[0][0].code() == KafkaError.INVALID_TIMESTAMP
    results = clients.produce(broker, topic, [{"value": b"fine"}], **settings)
    assert results[0][0] is None
    assert results[0][1].offset() == end


# ---------------------------------------------------------------- compression.type


@pytest.mark.parametrize("topic_codec,sent_codec", [("zstd", 0), ("uncompressed", 3),
                                                    ("gzip", 2)])
def test_topic_compression_type_recompresses(broker, conn, topic, topic_codec, sent_codec):
    clients.create_topic(broker, topic, 1, {"compression.type": topic_codec})
    body = records_body(5)
    payload = COMPRESS[sent_codec](body) if sent_codec else body
    result = rawkafka.produce(conn, topic, 0, batch(payload, sent_codec, 5))
    assert (result.error_code, result.base_offset) == (rawkafka.NONE, 0), result
    # Fetch v11: a topic stored as zstd is refused to consumers below v10.
    fetched = rawkafka.fetch(conn, topic, 0, 0, version=11)
    (stored,) = fetched.batches()
    wanted = {"zstd": 4, "uncompressed": 0, "gzip": 1}[topic_codec]
    assert rawkafka.batch_compression_type(fetched.records) == wanted
    assert [(r.offset, r.key, r.value) for r in stored] == \
        [(i, b"k%d" % i, value_of(i)) for i in range(5)]
    # A real client reads it back too.
    messages = clients.consume(broker, topic, 0, 0, 5)
    assert [m.value() for m in messages] == [value_of(i) for i in range(5)]


# ---------------------------------------------------------------- zstd and old versions


@pytest.mark.parametrize("version", [3, 6])
def test_zstd_below_produce_v7_is_unsupported_compression_type(broker, conn, topic, version):
    # Kafka's ProduceRequest.validateRecords: zstd needs Produce v7 (KIP-110).
    end = seeded_topic(broker, conn, topic)
    zstd = batch(zstd_encode(records_body(2)), rawkafka.CODEC_ZSTD, 2)
    result = rawkafka.produce(conn, topic, 0, zstd, version=version)
    assert (result.error_code, result.base_offset) == \
        (rawkafka.UNSUPPORTED_COMPRESSION_TYPE, -1), result
    assert rawkafka.latest_offset(conn, topic, 0) == end, "the log end offset moved"
    # The other codecs are fine at that version, and zstd from v7 on.
    lz4 = batch(lz4_encode(records_body(2)), rawkafka.CODEC_LZ4, 2)
    result = rawkafka.produce(conn, topic, 0, lz4, version=version)
    assert (result.error_code, result.base_offset) == (rawkafka.NONE, end), result
    result = rawkafka.produce(conn, topic, 0, zstd, version=7)
    assert (result.error_code, result.base_offset) == (rawkafka.NONE, end + 2), result
    assert_log_reads_back(conn, topic, end + 4)


def test_fetch_below_v10_of_a_zstd_topic_is_unsupported_compression_type(broker, conn, topic):
    # KafkaApis refuses consumers below Fetch v10 the partitions of topics whose
    # compression.type is zstd; they could not decode what it stores.
    end = seeded_topic(broker, conn, topic, {"compression.type": "zstd"})
    result = rawkafka.fetch(conn, topic, 0, 0)
    assert result.error_code == rawkafka.UNSUPPORTED_COMPRESSION_TYPE
    assert not result.records
    # From v10 on the records are read, stored as zstd.
    result = rawkafka.fetch(conn, topic, 0, 0, version=11)
    assert result.error_code == rawkafka.NONE
    (stored,) = result.batches()
    assert stored.compression_type == rawkafka.CODEC_ZSTD
    assert [r.value for r in stored] == [value_of(i) for i in range(end)]
    # So does a client on a newer version.
    values = [m.value() for m in clients.consume(broker, topic, 0, 0, end)]
    assert values == [value_of(i) for i in range(end)]
    # A topic that keeps the producer's codec is read as stored, zstd batches included,
    # as Kafka does: the check is on the topic's setting, not on the batches.
    other = topic + "-producer"
    seeded_topic(broker, conn, other)
    zstd = batch(zstd_encode(records_body(2)), rawkafka.CODEC_ZSTD, 2)
    assert rawkafka.produce(conn, other, 0, zstd).error_code == rawkafka.NONE
    result = rawkafka.fetch(conn, other, 0, 0)
    assert result.error_code == rawkafka.NONE
    assert [b.compression_type for b in result.batches()] == \
        [rawkafka.CODEC_NONE, rawkafka.CODEC_ZSTD]


# ---------------------------------------------------------------- internal topics


def test_clients_cannot_write_to_internal_topics(broker, conn, topic):
    # FindCoordinator creates __consumer_offsets; commit once so it holds a record.
    clients.create_topic(broker, topic, 1)
    group = f"{topic}-group"
    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        consumer.close()
    end = rawkafka.latest_offset(conn, OFFSETS_TOPIC, 0)
    assert end >= 1
    garbage = batch(record(0, b"\x00\x09junk", b"junk"), 0, 1)
    refused(conn, OFFSETS_TOPIC, garbage, INVALID_TOPIC_EXCEPTION, end)
    result = rawkafka.produce(conn, "__transaction_state", 0, garbage)
    assert result.error_code == INVALID_TOPIC_EXCEPTION, result

    results = clients.produce(broker, OFFSETS_TOPIC, [{"key": b"x", "value": b"y"}],
                              **{"message.timeout.ms": 10000})
    assert results[0][0].code() == KafkaError.TOPIC_EXCEPTION
    assert rawkafka.latest_offset(conn, OFFSETS_TOPIC, 0) == end


# ---------------------------------------------------------------- coordinator load


def log_end_of_segment(path):
    """Offset after the last batch in a segment file (its batches' headers only)."""
    with open(path, "rb") as segment:
        data = segment.read()
    position, end = 0, 0
    while position + rawkafka.BATCH_HEADER_BYTES <= len(data):
        base_offset, batch_length = struct.unpack_from(">qi", data, position)
        (last_delta,) = struct.unpack_from(">i", data, position + 23)
        end = base_offset + last_delta + 1
        position += 12 + batch_length
    return end


def stored_batch(payload, codec, record_count, base_offset):
    data = bytearray(batch(payload, codec, record_count))
    data[0:8] = struct.pack(">q", base_offset)  # outside the CRC, as the broker stamps it
    return bytes(data)


def test_groups_work_after_a_restart_over_garbage_in_the_offsets_topic(start_broker, topic):
    broker = start_broker("validation-offsets", BROKER_OVERRIDES)
    clients.create_topic(broker, topic, 1)
    group = f"{topic}-group"
    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
    finally:
        consumer.close()
    assert broker.stop() == 0

    segments = sorted(glob.glob(os.path.join(broker.data_dir, "**", f"{OFFSETS_TOPIC}-0",
                                             "*.log"), recursive=True))
    assert segments, "no __consumer_offsets-0 segment"
    end = log_end_of_segment(segments[-1])
    # What a client could write before internal topics were refused: a gzip batch of
    # noise, then a readable batch of records whose key is garbage.
    garbage = stored_batch(noise(200, 7), rawkafka.CODEC_GZIP, 2, end)
    garbage += stored_batch(record(0, b"\x00\x09junk", b"junk"), 0, 1, end + 2)
    with open(segments[-1], "ab") as segment:
        segment.write(garbage)

    broker.start()
    consumer = clients.consumer(broker, **{"group.id": group})
    try:
        def committed():
            offsets = consumer.committed([TopicPartition(topic, 0)], timeout=5)
            return offsets[0].offset
        assert clients.wait_for(committed, TIMEOUT_S, what="the committed offset") == 7
        consumer.commit(offsets=[TopicPartition(topic, 0, 9)], asynchronous=False)
        assert committed() == 9
    finally:
        consumer.close()
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        assert rawkafka.latest_offset(conn, OFFSETS_TOPIC, 0) == end + 4
    assert broker.stop() == 0
