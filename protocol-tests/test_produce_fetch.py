"""Produce and Fetch with kcat, confluent-kafka and kafka-python.

Checks keys, values, headers, timestamps, partitions and offsets of what comes back, for
every compression codec, reads starting inside a compressed batch, the per-topic
max.message.bytes limit, and the long-poll wake-up of a waiting fetch.
"""

import os
import threading
import time

import kafka
import kafka.errors
import pytest
from confluent_kafka import KafkaError

import clients
import rawkafka

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
PARTITIONS = 3
PER_PARTITION = 10
# An hour ago: older timestamps could be removed by retention (7 days) at any time.
TIMESTAMP_MS = (int(time.time()) - 3600) * 1000


def record_value(partition, index):
    # Compressible on purpose: clients send a batch uncompressed if compression does not
    # shrink it, and the tests check that the stored batch carries the codec.
    return f"value-{partition}-{index}-".encode() + b"abcdefgh" * 40


def record_key(partition, index):
    return f"key-{partition}-{index}".encode()


def record_headers(partition, index):
    return [("h-index", str(index).encode()), ("h-partition", str(partition).encode()),
            ("h-empty", b"")]


def expected_records(partition):
    return [(index, record_key(partition, index), record_value(partition, index),
             record_headers(partition, index)) for index in range(PER_PARTITION)]


def stored_codecs(broker, topic, partition):
    """Compression codec of every stored batch, read with raw Fetch."""
    codecs = []
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        offset = 0
        while True:
            result = rawkafka.fetch(conn, topic, partition, offset)
            assert result.error_code == 0, result.error_code
            batches = result.batches()
            if not batches:
                return codecs
            for batch in batches:
                codecs.append(batch.compression_type)
                offset = batch.next_offset


def check_confluent_messages(messages, partition):
    got = [(m.offset(), m.key(), m.value(), m.headers()) for m in messages]
    assert got == expected_records(partition)
    for message in messages:
        assert message.partition() == partition
        assert message.timestamp() == (1, TIMESTAMP_MS + message.offset())  # CreateTime


def check_kafka_python_records(records, partition):
    got = [(r.offset, r.key, r.value, [tuple(h) for h in r.headers]) for r in records]
    assert got == expected_records(partition)
    for record in records:
        assert record.partition == partition
        assert record.timestamp == TIMESTAMP_MS + record.offset
        assert record.timestamp_type == 0  # CreateTime


# ---------------------------------------------------------------- kcat


def test_kcat_produce_and_consume_keys_and_headers(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    lines = "".join(f"key{i}:value-{i}\n" for i in range(10))
    clients.kcat(broker, "-P", "-t", topic, "-p", "0", "-K:", "-H", "k=v", "-H", "trace=abc",
                 input_text=lines)

    output = clients.kcat(broker, "-C", "-q", "-t", topic, "-p", "0", "-o", "beginning",
                          "-e", "-f", "%k %s %h %o\n").stdout
    assert output.splitlines() == [f"key{i} value-{i} k=v,trace=abc {i}" for i in range(10)]

    output = clients.kcat(broker, "-C", "-q", "-t", topic, "-p", "0", "-o", "5", "-e",
                          "-f", "%k %s %o\n").stdout
    assert output.splitlines() == [f"key{i} value-{i} {i}" for i in range(5, 10)]

    # Negative offsets are relative to the end (needs ListOffsets latest).
    output = clients.kcat(broker, "-C", "-q", "-t", topic, "-p", "0", "-o", "-3", "-e",
                          "-f", "%o\n").stdout
    assert output.splitlines() == ["7", "8", "9"]


def test_kcat_consume_json(broker, topic):
    if not clients.kcat_supports_json():
        pytest.skip("this kcat was built without JSON support")
    import json

    clients.create_topic(broker, topic, partitions=1)
    clients.kcat(broker, "-P", "-t", topic, "-p", "0", "-K:", input_text="a:1\nb:2\n")
    output = clients.kcat(broker, "-C", "-q", "-J", "-t", topic, "-p", "0", "-o",
                          "beginning", "-e").stdout
    messages = [json.loads(line) for line in output.splitlines()]
    assert [(m["offset"], m["key"], m["payload"], m["partition"]) for m in messages] == \
        [(0, "a", "1", 0), (1, "b", "2", 0)]
    assert all(m["broker"] == 1 for m in messages)


# ---------------------------------------------------------------- codecs


def produce_test_records_confluent(broker, topic, codec):
    records = [{"key": record_key(p, i), "value": record_value(p, i),
                "headers": record_headers(p, i), "partition": p, "timestamp": TIMESTAMP_MS + i}
               for i in range(PER_PARTITION) for p in range(PARTITIONS)]
    messages = clients.produce_ok(broker, topic, records,
                                  **{"compression.type": codec, "linger.ms": 50})
    for partition in range(PARTITIONS):
        offsets = [m.offset() for m in messages if m.partition() == partition]
        assert offsets == list(range(PER_PARTITION)), f"partition {partition}: {offsets}"


def produce_test_records_kafka_python(broker, topic, codec):
    producer = clients.kp_producer(broker, compression_type=None if codec == "none" else codec,
                                   linger_ms=50)
    try:
        futures = [(p, i, producer.send(topic, key=record_key(p, i), value=record_value(p, i),
                                        headers=record_headers(p, i), partition=p,
                                        timestamp_ms=TIMESTAMP_MS + i))
                   for i in range(PER_PARTITION) for p in range(PARTITIONS)]
        producer.flush(timeout=30)
        for partition, index, future in futures:
            metadata = future.get(timeout=30)
            assert (metadata.partition, metadata.offset) == (partition, index)
    finally:
        producer.close(timeout=10)


FIND_COORDINATOR = 10


def librdkafka_stored_codec(broker, codec):
    """The codec librdkafka really uses: it enables lz4 only for brokers that advertise
    FindCoordinator (its LZ4 feature flag dates from Kafka 0.8.2) and otherwise sends
    lz4 batches uncompressed, silently."""
    if codec != "lz4":
        return codec
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        error_code, keys = rawkafka.api_versions_v0(conn)
    assert error_code == 0
    return codec if FIND_COORDINATOR in {key for key, _min, _max in keys} else "none"


def check_everything_readable(broker, topic, codec):
    for partition in range(PARTITIONS):
        check_confluent_messages(
            clients.consume(broker, topic, partition, 0, PER_PARTITION), partition)
        check_kafka_python_records(
            clients.kp_consume(broker, topic, partition, 0, PER_PARTITION), partition)
        codecs = stored_codecs(broker, topic, partition)
        assert codecs, "no batches stored"
        assert set(codecs) == {CODEC_IDS[codec]}, f"stored batches use codecs {codecs}"
        assert clients.watermarks(broker, topic, partition) == (0, PER_PARTITION)


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_produce_consume_codec(broker, topic, codec):
    clients.create_topic(broker, topic, partitions=PARTITIONS)
    produce_test_records_confluent(broker, topic, codec)
    check_everything_readable(broker, topic, librdkafka_stored_codec(broker, codec))


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_produce_consume_codec(broker, topic, codec):
    clients.create_topic(broker, topic, partitions=PARTITIONS)
    produce_test_records_kafka_python(broker, topic, codec)
    check_everything_readable(broker, topic, codec)


@pytest.mark.parametrize("codec", CODECS[1:])
def test_consume_from_inside_compressed_batch(broker, topic, codec):
    clients.create_topic(broker, topic, partitions=1)
    records = [(f"k{i}".encode(), f"v{i}-".encode() + b"z" * 300, [("i", str(i).encode())])
               for i in range(10)]
    batch = rawkafka.build_batch(records, compression_type=CODEC_IDS[codec],
                                 timestamp_ms=TIMESTAMP_MS)
    assert rawkafka.batch_compression_type(batch) == CODEC_IDS[codec]
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        result = rawkafka.produce(conn, topic, 0, batch)
        assert (result.error_code, result.base_offset) == (0, 0), result
        fetched = rawkafka.fetch(conn, topic, 0, 4)
        assert fetched.error_code == 0 and fetched.high_watermark == 10
        (stored,) = fetched.batches()
        assert (stored.base_offset, stored.next_offset) == (0, 10)  # the whole batch
        assert stored.compression_type == CODEC_IDS[codec]
        assert stored.validate_crc()

    expected = [(i, f"k{i}".encode(), records[i][1]) for i in range(4, 10)]
    messages = clients.consume(broker, topic, 0, 4, 6)
    assert [(m.offset(), m.key(), m.value()) for m in messages] == expected
    assert [m.headers() for m in messages] == [[("i", str(i).encode())] for i in range(4, 10)]
    kp_records = clients.kp_consume(broker, topic, 0, 4, 6)
    assert [(r.offset, r.key, r.value) for r in kp_records] == expected
    output = clients.kcat(broker, "-C", "-q", "-t", topic, "-p", "0", "-o", "4", "-e",
                          "-f", "%k %o\n").stdout
    assert output.splitlines() == [f"k{i} {i}" for i in range(4, 10)]


def test_null_key_null_value_and_empty_value(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    clients.produce_ok(broker, topic, [{"value": None, "key": b"tombstone"},
                                       {"value": b"", "key": None},
                                       {"value": b"x", "key": b""}])
    messages = clients.consume(broker, topic, 0, 0, 3)
    assert [(m.offset(), m.key(), m.value()) for m in messages] == \
        [(0, b"tombstone", None), (1, None, b""), (2, b"", b"x")]


def test_many_batches_read_in_pages(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    count = 3000
    records = [{"key": str(i).encode(), "value": os.urandom(200) + str(i).encode()}
               for i in range(count)]
    messages = clients.produce_ok(broker, topic, records, **{"batch.size": 16384})
    assert [m.offset() for m in messages] == list(range(count))

    # librdkafka insists on fetch.max.bytes >= message.max.bytes.
    small_fetches = {"fetch.max.bytes": 65536, "max.partition.fetch.bytes": 32768,
                     "message.max.bytes": 65536}
    got = clients.consume(broker, topic, 0, 0, count, **small_fetches)
    assert [(m.offset(), m.key()) for m in got] == [(i, str(i).encode()) for i in range(count)]
    assert [m.value() for m in got] == [r["value"] for r in records]

    kp = clients.kp_consume(broker, topic, 0, 1234, count - 1234,
                            max_partition_fetch_bytes=32768, fetch_max_bytes=65536)
    assert [r.offset for r in kp] == list(range(1234, count))
    assert [r.value for r in kp] == [r["value"] for r in records[1234:]]


def test_acks_zero_and_one(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    clients.produce_ok(broker, topic, [{"value": b"acks1-%d" % i} for i in range(5)],
                       acks=1)
    # acks=0: the broker must send no response (librdkafka would see an unknown
    # correlation id otherwise); delivery reports then carry no offset.
    clients.produce_ok(broker, topic, [{"value": b"acks0-%d" % i} for i in range(5)],
                       acks=0)
    clients.wait_for(lambda: clients.watermarks(broker, topic, 0)[1] == 10, 15,
                     what="acks=0 records to be appended")
    messages = clients.consume(broker, topic, 0, 0, 10)
    assert [m.value() for m in messages] == \
        [b"acks1-%d" % i for i in range(5)] + [b"acks0-%d" % i for i in range(5)]
    # The connection is still usable after acks=0 requests.
    assert clients.produce_ok(broker, topic, [{"value": b"after"}])[0].offset() == 10


# ---------------------------------------------------------------- limits


def test_record_larger_than_topic_max_message_bytes(broker, topic):
    clients.create_topic(broker, topic, partitions=1, config={"max.message.bytes": "10000"})
    big = os.urandom(20000)

    results = clients.produce(broker, topic, [{"value": big}],
                              **{"message.max.bytes": 1000000, "compression.type": "none"})
    error, _message = results[0]
    assert error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE, error

    producer = clients.kp_producer(broker, max_request_size=1000000, retries=0)
    try:
        with pytest.raises(kafka.errors.MessageSizeTooLargeError):
            producer.send(topic, value=big, partition=0).get(timeout=30)
    finally:
        producer.close(timeout=10)

    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        result = rawkafka.produce(conn, topic, 0, rawkafka.build_batch([(None, big, [])]))
        assert result.error_code == rawkafka.MESSAGE_TOO_LARGE, result
        assert rawkafka.latest_offset(conn, topic, 0) == 0

    assert clients.watermarks(broker, topic, 0) == (0, 0)
    # Under the limit is fine, and starts at offset 0.
    ok = clients.produce_ok(broker, topic, [{"value": os.urandom(9000)}],
                            **{"compression.type": "none"})
    assert ok[0].offset() == 0


def test_fetch_out_of_range_offset(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    clients.produce_ok(broker, topic, [{"value": b"only"}])
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        result = rawkafka.fetch(conn, topic, 0, 100)
        assert result.error_code == rawkafka.OFFSET_OUT_OF_RANGE
        # Fetching exactly at the end is not out of range: it is empty.
        result = rawkafka.fetch(conn, topic, 0, 1)
        assert result.error_code == 0
        assert result.high_watermark == 1
        assert result.batches() == []


# ---------------------------------------------------------------- long poll


def test_raw_fetch_waits_max_wait_when_empty(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    with rawkafka.Connection("127.0.0.1", broker.port, timeout_s=15) as conn:
        started = time.monotonic()
        result = rawkafka.fetch(conn, topic, 0, 0, max_wait_ms=1000, min_bytes=1)
        elapsed = time.monotonic() - started
    assert result.error_code == 0 and result.batches() == []
    assert 0.8 <= elapsed <= 5.0, f"an empty fetch with max_wait_ms=1000 took {elapsed:.2f} s"


def test_raw_fetch_wakes_up_on_append(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    produced_at = []

    def produce_later():
        time.sleep(1.0)
        with rawkafka.Connection("127.0.0.1", broker.port) as producer_conn:
            result = rawkafka.produce(producer_conn, topic, 0,
                                      rawkafka.build_batch([(b"k", b"wake", [])]))
            produced_at.append(time.monotonic())
            assert result.error_code == 0

    thread = threading.Thread(target=produce_later, daemon=True)
    with rawkafka.Connection("127.0.0.1", broker.port, timeout_s=30) as conn:
        thread.start()
        result = rawkafka.fetch(conn, topic, 0, 0, max_wait_ms=20000, min_bytes=1)
        returned_at = time.monotonic()
    thread.join(timeout=30)
    assert produced_at, "the producer thread failed"
    records = [record.value for batch in result.batches() for record in batch]
    assert records == [b"wake"]
    delay = returned_at - produced_at[0]
    assert delay < 3.0, f"the waiting fetch returned {delay:.2f} s after the append"


def test_confluent_consumer_long_poll_wakeup(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    consumer = clients.consumer(broker, **{"fetch.wait.max.ms": 10000,
                                           "fetch.min.bytes": 1})
    try:
        consumer.assign([clients.TopicPartition(topic, 0, 0)])
        # Let it reach the end and park a fetch.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert consumer.poll(0.2) is None
        delivered_at = []
        producer = clients.producer(broker, **{"linger.ms": 0})
        producer.produce(topic, value=b"late", partition=0,
                         on_delivery=lambda err, msg: delivered_at.append(
                             (err, time.monotonic())))
        assert producer.flush(15) == 0
        assert delivered_at and delivered_at[0][0] is None, delivered_at
        message = None
        deadline = time.monotonic() + 15
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.1)
        received_at = time.monotonic()
        assert message is not None and message.error() is None, message
        assert (message.offset(), message.value()) == (0, b"late")
        delay = received_at - delivered_at[0][1]
        assert delay < 4.0, f"record arrived {delay:.2f} s after its ack (fetch.wait.max.ms=10s)"
    finally:
        consumer.close()


def test_kafka_python_consumer_long_poll_wakeup(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    consumer = clients.kp_consumer(broker, fetch_max_wait_ms=10000, fetch_min_bytes=1)
    try:
        tp = kafka.TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        assert consumer.poll(timeout_ms=2000) == {}
        producer = clients.kp_producer(broker, linger_ms=0)
        try:
            producer.send(topic, value=b"late", partition=0).get(timeout=15)
            acked_at = time.monotonic()
        finally:
            producer.close(timeout=10)
        records = []
        deadline = time.monotonic() + 15
        while not records and time.monotonic() < deadline:
            for part_records in consumer.poll(timeout_ms=100).values():
                records.extend(part_records)
        delay = time.monotonic() - acked_at
        assert [(r.offset, r.value) for r in records] == [(0, b"late")]
        assert delay < 4.0, f"record arrived {delay:.2f} s after its ack (fetch_max_wait 10 s)"
    finally:
        consumer.close()
