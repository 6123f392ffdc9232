"""Idempotent-producer state across restarts, clean (SIGTERM) and after kill -9.

A clean stop flushes every log, writes a producer-state snapshot (`<offset>.snapshot`)
beside the segments and then the clean-shutdown marker `.kafka_cleanshutdown`; the next
start takes the marker away before it serves. After kill -9 the state comes from the
snapshot written when the log last rolled plus the batch headers after it. Either way a
retried batch (raw frames, same producer id, epoch and sequence) must get its original
offset back, and the next sequence must be accepted at the log end.
"""

import os
import time

import clients
import rawkafka

MARKER = ".kafka_cleanshutdown"
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
# Small segments, so the log rolls (and writes roll snapshots) every few batches.
SEGMENT_BYTES = 1000
RECORDS_PER_BATCH = 3


def marker_exists(broker):
    return os.path.exists(os.path.join(broker.data_dir, MARKER))


def snapshot_offsets(broker, topic):
    directory = os.path.join(broker.data_dir, f"{topic}-0")
    return sorted(int(name.split(".")[0]) for name in os.listdir(directory)
                  if name.endswith(".snapshot"))


class IdempotentProducer:
    """Raw-frame idempotent producer that remembers what each sequence was answered."""

    def __init__(self, broker, topic):
        self.broker = broker
        self.topic = topic
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            error_code, self.producer_id, self.epoch = rawkafka.init_producer_id(conn)
        assert error_code == 0 and self.producer_id >= 0
        self.next_sequence = 0
        # Current timestamps: a producer whose last record is older than
        # producer.id.expiration.ms (a day) is expired at load, as Kafka does.
        self.timestamp_base_ms = int(time.time() * 1000)
        self.sent = {}  # base sequence -> (batch bytes, base offset answered)

    def batch(self, sequence):
        records = [(b"k%d" % (sequence + index), b"v" * 100, [])
                   for index in range(RECORDS_PER_BATCH)]
        return rawkafka.build_batch(records, producer_id=self.producer_id,
                                    producer_epoch=self.epoch, base_sequence=sequence,
                                    timestamp_ms=self.timestamp_base_ms + sequence)

    def send(self, batch):
        with rawkafka.Connection("127.0.0.1", self.broker.port) as conn:
            return rawkafka.produce(conn, self.topic, 0, batch)

    def produce_next(self, count=1):
        for _ in range(count):
            batch = self.batch(self.next_sequence)
            result = self.send(batch)
            assert result.error_code == 0, result
            self.sent[self.next_sequence] = (batch, result.base_offset)
            self.next_sequence += RECORDS_PER_BATCH

    def check_after_restart(self):
        """The last five batches are duplicates with their original offsets; a gap is
        refused; the next sequence lands at the log end."""
        sequences = sorted(self.sent)
        for sequence in sequences[-5:]:
            batch, offset = self.sent[sequence]
            result = self.send(batch)
            assert result.error_code == 0, result
            assert result.base_offset == offset, \
                f"retry of sequence {sequence}: offset {result.base_offset}, was {offset}"
        gap = self.send(self.batch(self.next_sequence + 1))
        assert gap.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER, gap
        end = len(self.sent) * RECORDS_PER_BATCH
        assert clients.watermarks(self.broker, self.topic, 0) == (0, end)
        self.produce_next()
        assert self.sent[sequences[-1] + RECORDS_PER_BATCH][1] == end


def test_producer_state_survives_clean_and_kill_nine_restarts(start_broker, topic):
    broker = start_broker("restart-state")
    clients.create_topic(broker, topic, config={"segment.bytes": str(SEGMENT_BYTES)})
    producer = IdempotentProducer(broker, topic)
    producer.produce_next(12)
    assert not marker_exists(broker), "the marker is absent while the broker runs"
    assert snapshot_offsets(broker, topic), "rolls write producer snapshots"

    assert broker.stop() == 0
    assert marker_exists(broker), "a clean stop leaves the marker"
    log_end = len(producer.sent) * RECORDS_PER_BATCH
    assert snapshot_offsets(broker, topic)[-1] == log_end, "snapshot at the log end"
    broker.start()
    assert not marker_exists(broker), "start-up takes the marker away"
    producer.check_after_restart()

    producer.produce_next(7)
    broker.kill()
    assert not marker_exists(broker), "kill -9 leaves no marker"
    newest = snapshot_offsets(broker, topic)[-1]
    assert newest < len(producer.sent) * RECORDS_PER_BATCH, "batches after the last snapshot"
    broker.start()
    producer.check_after_restart()

    # Clean again after the crash-restart: the snapshot moves to the new log end.
    assert broker.stop() == 0
    assert marker_exists(broker)
    assert snapshot_offsets(broker, topic)[-1] == len(producer.sent) * RECORDS_PER_BATCH
    broker.start()
    assert not marker_exists(broker)
    producer.check_after_restart()
    messages = clients.consume_all(broker, topic, 0)
    assert [m.offset() for m in messages] == list(range(len(producer.sent) * RECORDS_PER_BATCH))
    assert broker.stop() == 0
