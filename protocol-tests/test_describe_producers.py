"""DescribeProducers v0 and producer-id expiration, through real clients.

Written against Kafka 4.0's behaviour (`ReplicaManager.activeProducerState`,
`ProducerStateManager.removeExpiredProducers`):

- DescribeProducers (flexible v0; no stock Python client speaks it, so it is hand-encoded)
  lists, per partition, each producer the leader remembers: producer id, epoch, last
  sequence (the last record's), last timestamp (the last batch's max timestamp, or the
  last marker's), coordinator epoch (-1 until a marker was written) and the first offset of
  its open transaction (-1 when none is open). An unknown topic or partition answers
  UNKNOWN_TOPIC_OR_PARTITION.
- `producer.id.expiration.ms`: a producer whose last timestamp is that old and that has no
  open transaction on the partition is forgotten at the next check
  (`producer.id.expiration.check.interval.ms`); one with an open transaction is kept. An
  idempotent producer that goes on after being forgotten is accepted (Kafka 4.0 takes any
  sequence from a producer it does not know) and listed again. Snapshots written after
  the expiry do not bring the forgotten producers back on restart. It is a dynamic broker
  config: set through IncrementalAlterConfigs, the next check uses it.
"""

import time
import uuid

from confluent_kafka.admin import ResourceType

import clients
import rawkafka
from test_alter_configs import SET, incremental
from test_transactions import (BROKER_OVERRIDES as TXN_OVERRIDES, CALL_TIMEOUT_S, compact_array,
                               deliver, describe_transactions_v0, txn_producer)

DESCRIBE_PRODUCERS = 61
UNKNOWN_TOPIC_OR_PARTITION = 3
EXPIRATION_OVERRIDES = {
    "producer.id.expiration.ms": "2000",
    "producer.id.expiration.check.interval.ms": "500",
}
# Generous bounds for a loaded machine: expiry takes 2 s + up to one 0.5 s check.
EXPIRY_WAIT_S = 20.0
# A producer with an open transaction must survive this many check intervals past expiry.
KEPT_S = 2.0


def describe_producers_v0(broker, partitions_by_topic):
    """DescribeProducers v0: {(topic, partition): (error, {producer id: dict})}."""
    def encode_topic(item):
        name, partitions = item
        return (rawkafka.compact_string(name) + compact_array(partitions, rawkafka.int32)
                + rawkafka.EMPTY_TAGGED_FIELDS)

    body = compact_array(list(partitions_by_topic.items()), encode_topic) \
        + rawkafka.EMPTY_TAGGED_FIELDS
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        reader = conn.request(DESCRIBE_PRODUCERS, 0, body, flexible_request=True,
                              flexible_response=True)

        def read_producer(r):
            producer = dict(producer_id=r.int64(), epoch=r.int32(), last_sequence=r.int32(),
                            last_timestamp=r.int64(), coordinator_epoch=r.int32(),
                            txn_start_offset=r.int64())
            r.skip_tagged_fields()
            return producer["producer_id"], producer

        def read_partition(r):
            index, error = r.int32(), r.int16()
            r.compact_string()  # error_message
            producers = dict(r.compact_array(read_producer))
            r.skip_tagged_fields()
            return index, (error, producers)

        def read_topic(r):
            name = r.compact_string()
            partitions = r.compact_array(read_partition)
            r.skip_tagged_fields()
            return [((name, index), answer) for index, answer in partitions]

        reader.int32()  # throttle_time_ms
        topics = reader.compact_array(read_topic)
        reader.skip_tagged_fields()
        reader.expect_end()
    return {key: answer for topic in topics for key, answer in topic}


def producers_on(broker, topic, partition=0):
    error, producers = describe_producers_v0(broker, {topic: [partition]})[(topic, partition)]
    assert error == 0, f"DescribeProducers error {error}"
    return producers


def idempotent_producer(broker):
    return clients.producer(broker, **{"enable.idempotence": True})


def produce_plain(producer, topic, values, partition=0):
    """Produces values (not in a transaction) and waits for them; returns their offsets."""
    return deliver(producer, topic, values, partition)


def transactional_producer_id(broker, transactional_id):
    return describe_transactions_v0(broker, [transactional_id])[transactional_id]["producer_id"]


def wait_until(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_describe_producers_lists_epochs_sequences_and_open_transactions(start_broker, topic):
    broker = start_broker("describe-producers", TXN_OVERRIDES)
    clients.create_topic(broker, topic, partitions=2)
    started_ms = int(time.time() * 1000)
    idempotent = idempotent_producer(broker)
    plain_offsets = produce_plain(idempotent, topic, [b"i0", b"i1", b"i2"])
    transactional_id = f"describe-{uuid.uuid4().hex[:8]}"
    transactional = txn_producer(broker, transactional_id)
    transactional.init_transactions(CALL_TIMEOUT_S)
    transactional.begin_transaction()
    txn_offsets = deliver(transactional, topic, [b"t0", b"t1"])
    txn_pid = transactional_producer_id(broker, transactional_id)

    producers = producers_on(broker, topic)
    assert txn_pid in producers and len(producers) == 2, producers
    open_txn = producers[txn_pid]
    (idempotent_pid,) = set(producers) - {txn_pid}
    plain = producers[idempotent_pid]
    assert plain_offsets == [0, 1, 2] and txn_offsets == [3, 4]
    assert (plain["epoch"], plain["last_sequence"]) == (0, 2), plain
    assert (plain["coordinator_epoch"], plain["txn_start_offset"]) == (-1, -1), plain
    assert (open_txn["last_sequence"], open_txn["txn_start_offset"]) == (1, 3), open_txn
    assert open_txn["coordinator_epoch"] == -1, "no marker yet"
    now_ms = int(time.time() * 1000)
    for producer in (plain, open_txn):
        assert started_ms - 1000 <= producer["last_timestamp"] <= now_ms + 1000, producer

    # The commit marker closes the transaction: no start offset, the coordinator's epoch,
    # the same producer epoch (transactions version 1), a last timestamp no older.
    transactional.commit_transaction(CALL_TIMEOUT_S)
    # EndTxn answers once PrepareCommit is logged; the marker follows (as in Kafka).
    committed = wait_until(
        lambda: (lambda p: p if p["txn_start_offset"] == -1 else None)(
            producers_on(broker, topic)[txn_pid]),
        CALL_TIMEOUT_S, "the commit marker")
    assert committed["coordinator_epoch"] >= 0, committed
    assert committed["epoch"] == open_txn["epoch"]
    assert committed["last_sequence"] == 1
    assert committed["last_timestamp"] >= open_txn["last_timestamp"]
    # A second transaction opens at its own first offset (after the marker at 5).
    transactional.begin_transaction()
    assert deliver(transactional, topic, [b"t2"]) == [6]
    reopened = producers_on(broker, topic)[txn_pid]
    assert (reopened["txn_start_offset"], reopened["last_sequence"]) == (6, 2), reopened
    transactional.abort_transaction(CALL_TIMEOUT_S)

    answers = describe_producers_v0(broker, {topic: [1, 99], "no-such-topic": [0]})
    assert answers[(topic, 1)] == (0, {}), "a partition nobody wrote to"
    assert answers[(topic, 99)][0] == UNKNOWN_TOPIC_OR_PARTITION
    assert answers[("no-such-topic", 0)][0] == UNKNOWN_TOPIC_OR_PARTITION
    idempotent.flush(CALL_TIMEOUT_S)
    broker.stop()


def test_idle_producers_expire_and_open_transactions_stay(start_broker, topic):
    broker = start_broker("producer-expiry", {**TXN_OVERRIDES, **EXPIRATION_OVERRIDES})
    clients.create_topic(broker, topic, partitions=1)
    # The transactional producer first: its init creates __transaction_state, which may
    # take longer than the expiration on a loaded machine, and the idempotent producer's
    # records start its clock.
    transactional_id = f"expiry-{uuid.uuid4().hex[:8]}"
    transactional = txn_producer(broker, transactional_id)
    transactional.init_transactions(CALL_TIMEOUT_S)
    idempotent = idempotent_producer(broker)
    assert produce_plain(idempotent, topic, [b"i0", b"i1", b"i2"]) == [0, 1, 2]
    transactional.begin_transaction()
    assert deliver(transactional, topic, [b"t0"]) == [3]
    txn_pid = transactional_producer_id(broker, transactional_id)
    before = producers_on(broker, topic)
    assert len(before) == 2 and txn_pid in before, before
    (idempotent_pid,) = set(before) - {txn_pid}

    # The idle idempotent producer is forgotten; the open transaction's producer is not.
    wait_until(lambda: idempotent_pid not in producers_on(broker, topic), EXPIRY_WAIT_S,
               "the idle idempotent producer to expire")
    time.sleep(KEPT_S)
    kept = producers_on(broker, topic)
    assert list(kept) == [txn_pid], kept
    assert kept[txn_pid]["txn_start_offset"] == 3

    # The forgotten producer goes on with its id and next sequence: accepted, listed again.
    assert produce_plain(idempotent, topic, [b"i3"]) == [4]
    back = producers_on(broker, topic)[idempotent_pid]
    assert (back["epoch"], back["last_sequence"]) == (0, 3), back

    # Once committed, the transactional producer ages from its marker and expires too.
    transactional.commit_transaction(CALL_TIMEOUT_S)
    wait_until(lambda: producers_on(broker, topic) == {}, EXPIRY_WAIT_S,
               "both producers to expire")
    idempotent.flush(CALL_TIMEOUT_S)
    del idempotent, transactional

    # The clean shutdown's snapshot is written after the expiry: restarted without
    # expiration (Kafka's 24 h default), the partition still does not know them.
    broker.stop()
    for key in EXPIRATION_OVERRIDES:
        broker.overrides.pop(key)
    broker.start()
    assert wait_until(lambda: describe_producers_v0(broker, {topic: [0]})[(topic, 0)][0] == 0,
                      CALL_TIMEOUT_S, "the partition to be led again")
    assert producers_on(broker, topic) == {}
    broker.stop()


def test_a_dynamic_producer_id_expiration_applies_at_the_next_check(start_broker, topic):
    broker = start_broker("producer-expiry-live", {
        **TXN_OVERRIDES, "producer.id.expiration.check.interval.ms": "500"})
    clients.create_topic(broker, topic, partitions=1)
    idempotent = idempotent_producer(broker)
    assert produce_plain(idempotent, topic, [b"a", b"b"]) == [0, 1]
    # Kafka's day-long default: still remembered after several checks.
    time.sleep(KEPT_S)
    assert len(producers_on(broker, topic)) == 1
    assert incremental(broker, ResourceType.BROKER, "1",
                       [("producer.id.expiration.ms", SET, "1000")]) is None
    wait_until(lambda: producers_on(broker, topic) == {}, EXPIRY_WAIT_S,
               "the idle producer to expire under the new expiration")
    idempotent.flush(CALL_TIMEOUT_S)
