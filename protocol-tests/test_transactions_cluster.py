"""The transaction coordinator fails between EndTxn and the markers (issue 10), three nodes.

Layout: the transactional id's `__transaction_state` partition (replication factor 3,
min ISR 2) is led by node C, its coordinator; the data partition (replication factor 1)
lives on another node D; the third node is E.

test_coordinator_killed_after_end_txn (commit and abort):
  1. The producer writes N records in a transaction (acknowledged by D).
  2. D is SIGSTOPped. From here until step 5 no marker can be appended on D.
  3. commit_transaction() (or abort_transaction()) runs in a thread. librdkafka returns
     from it when EndTxn is answered, and Kafka's coordinator answers EndTxn once
     PrepareCommit/PrepareAbort is in `__transaction_state` (replicated to the ISR; D
     drops out of it when it is fenced after the broker session timeout), before the
     markers. So when it returns the outcome is decided, and the markers are pending.
  4. C is killed with SIGKILL.
  5. D is resumed (SIGCONT); it was fenced meanwhile and leads its partition again once
     unfenced.
  6. A new coordinator (another node leads the `__transaction_state` partition) must load
     the Prepare* state and write the markers: read_committed then sees all N records
     (commit) or none (abort), the LSO reaches the high watermark, and every marker on D
     is of the decided kind.
  What it proves: a decision that was answered to the client survives the loss of the
  coordinator, and the data partition ends up with it. Caveat: C's own WriteTxnMarkers
  request may already sit in D's socket buffer when D stops; D may process it after
  SIGCONT (Kafka would, too). So the test also requires a marker whose coordinator epoch
  is above the epoch at which C led the `__transaction_state` partition: only a newer
  coordinator can write that one. It does not prove which of the two completed the
  transaction first (with Kafka a second marker is harmless), hence 1 or 2 markers.

test_coordinator_killed_racing_end_txn: C is killed right after commit_transaction() is
called (EndTxn may or may not have reached it; librdkafka retries it at the new
coordinator). The only claims: the transaction ends (LSO = high watermark within the
producer's transaction timeout plus the abort check), read_committed sees all N or none,
and all N if commit_transaction() returned success.
"""

import threading
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import clients
import cluster
import rawkafka

OVERRIDES = {
    "transaction.state.log.num.partitions": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    "offsets.topic.num.partitions": "3",
}
TRANSACTION_STATE = "__transaction_state"
TRANSACTION_KEY = 1  # FindCoordinator key_type
RECORDS = 5
CALL_TIMEOUT_S = 60.0
FAILOVER_TIMEOUT_S = 90.0
COMMIT, ABORT = rawkafka.MARKER_COMMIT, rawkafka.MARKER_ABORT


@pytest.fixture(scope="module")
def three(data_root):
    nodes = cluster.Cluster(3, data_root, overrides=OVERRIDES)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


def java_string_hash(text):
    """Java's String.hashCode (UTF-16 code units), as a signed int32."""
    value = 0
    data = text.encode("utf-16-be")
    for index in range(0, len(data), 2):
        value = (31 * value + int.from_bytes(data[index:index + 2], "big")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def state_partition(transactional_id, partitions):
    """Kafka's partitionFor: Utils.abs(hashCode) % transaction.state.log.num.partitions."""
    value = java_string_hash(transactional_id)
    value = 0 if value == -(1 << 31) else abs(value)
    return value % partitions


def find_txn_coordinator(three, transactional_id, via, unlike=None,
                         timeout_s=FAILOVER_TIMEOUT_S):
    """The node FindCoordinator(key_type=1) names through node `via` (not `unlike`)."""
    def named():
        error, node_id, _host, _port = three.node(via).call(
            cluster.find_coordinator_v1, transactional_id, TRANSACTION_KEY)
        if error == cluster.NONE and node_id >= 0 and node_id != unlike:
            return node_id
        raise AssertionError(f"FindCoordinator via {via}: error {error}, node {node_id}")
    return cluster.wait_until(named, timeout_s, what=f"a coordinator for {transactional_id}")


def state_leader(three, transactional_id, via):
    """(leader, leader epoch) of the transactional id's __transaction_state partition."""
    index = state_partition(transactional_id, int(OVERRIDES[
        "transaction.state.log.num.partitions"]))
    topic = three.node(via).metadata([TRANSACTION_STATE])["topics"][TRANSACTION_STATE]
    partition = topic["partitions"][index]
    return partition["leader"], partition["leader_epoch"]


def setup_transaction(three, topic):
    """A transactional id, its coordinator C, a data topic led by D != C; returns
    (transactional id, C, D, E, C's leader epoch of the state partition)."""
    transactional_id = f"txn-{uuid.uuid4().hex[:8]}"
    coordinator = find_txn_coordinator(three, transactional_id, via=1)
    # The first FindCoordinator created the state topic; the node it named may not have
    # applied that yet.
    three.wait_topic_everywhere(TRANSACTION_STATE, partitions=int(OVERRIDES[
        "transaction.state.log.num.partitions"]))
    leader, epoch = state_leader(three, transactional_id, via=coordinator)
    assert leader == coordinator, (
        f"FindCoordinator names node {coordinator}, but partition "
        f"{state_partition(transactional_id, 3)} of {TRANSACTION_STATE} (Kafka's "
        f"abs(hashCode) % partitions) is led by {leader}")
    data, other = [i for i in three.node_ids() if i != coordinator]
    three.create_topic(data, topic, assignments={0: [data]})
    three.wait_topic_everywhere(topic, partitions=1)
    # Every replica of the state partition in the ISR: the kill must leave a successor.
    def full_isr():
        state = three.node(coordinator).metadata([TRANSACTION_STATE])["topics"][
            TRANSACTION_STATE]["partitions"][state_partition(transactional_id, 3)]
        return sorted(state["isr"]) == [1, 2, 3]
    cluster.wait_until(full_isr, 30, what="a full ISR of the state partition")
    return transactional_id, coordinator, data, other, epoch


def transactional_producer(three, transactional_id, timeout_ms=60000):
    return clients.producer(three.node(1), **{
        "bootstrap.servers": three.bootstrap, "transactional.id": transactional_id,
        "transaction.timeout.ms": timeout_ms,
        "message.timeout.ms": min(timeout_ms, 30000)})


def write_records(producer, topic, count, prefix=b"txn"):
    """A transaction of `count` records valued prefix-0, prefix-1, ... (acknowledged)."""
    producer.begin_transaction()
    errors = []
    for index in range(count):
        producer.produce(topic, value=b"%s-%d" % (prefix, index), partition=0,
                         on_delivery=lambda error, _m: errors.append(error) if error else None)
    assert producer.flush(CALL_TIMEOUT_S) == 0 and not errors, errors


class Ending(threading.Thread):
    """commit_transaction() or abort_transaction() on a thread of its own."""

    def __init__(self, producer, outcome):
        super().__init__(daemon=True, name=f"{outcome}-transaction")
        self.producer = producer
        self.outcome = outcome
        self.error = None
        self.returned_after_s = None

    def run(self):
        began = time.monotonic()
        try:
            if self.outcome == COMMIT:
                self.producer.commit_transaction(CALL_TIMEOUT_S)
            else:
                self.producer.abort_transaction(CALL_TIMEOUT_S)
        except KafkaException as error:
            self.error = error.args[0]
        self.returned_after_s = time.monotonic() - began


def layout_on(three, node_id, topic):
    with three.node(node_id).connect(timeout_s=10) as conn:
        return rawkafka.read_layout(conn, topic, 0)


def settled(three, node_id, topic):
    """The data partition's layout once its LSO equals its high watermark (the
    transaction ended there); raises (for wait_until) before."""
    with three.node(node_id).connect(timeout_s=10) as conn:
        result = rawkafka.fetch(conn, topic, 0, 0, max_bytes=1, partition_max_bytes=1)
    if result.error_code != cluster.NONE:
        raise AssertionError(f"Fetch on node {node_id}: error {result.error_code}")
    if result.last_stable_offset != result.high_watermark:
        raise AssertionError(f"LSO {result.last_stable_offset}, HW {result.high_watermark}")
    return layout_on(three, node_id, topic)


def read_committed(three, topic, nodes):
    """Values a read_committed confluent consumer reads up to the LSO."""
    bootstrap = ",".join(three.node(i).bootstrap for i in nodes)
    consumer = clients.consumer(three.node(nodes[0]), **{
        "bootstrap.servers": bootstrap, "isolation.level": "read_committed",
        "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        out = []
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise KafkaException(message.error())
            out.append((message.offset(), message.value()))
        raise AssertionError(f"read_committed did not reach the LSO; read {out}")
    finally:
        consumer.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("outcome", [COMMIT, ABORT])
def test_coordinator_killed_after_end_txn(three, topic, outcome):
    transactional_id, coordinator, data, other, old_epoch = setup_transaction(three, topic)
    print(f"coordinator node {coordinator} (state partition epoch {old_epoch}), data on "
          f"node {data}, third node {other}")
    producer = transactional_producer(three, transactional_id)
    producer.init_transactions(CALL_TIMEOUT_S)
    write_records(producer, topic, RECORDS)
    before = [entry.brief() for entry in layout_on(three, data, topic)]
    assert before == [("data", i, b"txn-%d" % i, True) for i in range(RECORDS)]

    three.pause(data)
    try:
        ending = Ending(producer, outcome)
        ending.start()
        ending.join(CALL_TIMEOUT_S + 5)
        assert not ending.is_alive(), f"{outcome} did not return"
        assert ending.error is None, f"{outcome}_transaction failed: {ending.error}"
        print(f"EndTxn answered after {ending.returned_after_s:.1f} s with node {data} "
              "stopped: the markers are pending")
        three.kill(coordinator)
    finally:
        three.resume(data)
    try:
        new = find_txn_coordinator(three, transactional_id, via=other, unlike=coordinator)
        print(f"node {coordinator} killed; node {new} coordinates {transactional_id}")
        entries = cluster.wait_until(lambda: settled(three, data, topic), FAILOVER_TIMEOUT_S,
                                     what="the transaction's markers on the data partition")
        data_entries = [e.brief() for e in entries if e.kind == "data"]
        markers = [e for e in entries if e.kind != "data"]
        assert data_entries == before, f"data changed: {entries}"
        assert 1 <= len(markers) <= 2 and all(m.kind == outcome for m in markers), \
            f"want 1 or 2 {outcome} markers after the data: {entries}"
        assert markers[0].offset == RECORDS and all(
            m.offset >= RECORDS for m in markers), entries
        epochs = [m.coordinator_epoch for m in markers]
        assert max(epochs) > old_epoch, (
            f"no marker from a coordinator newer than node {coordinator} (epoch "
            f"{old_epoch}): marker coordinator epochs {epochs}")
        seen = read_committed(three, topic, [data, other])
        want = [(i, b"txn-%d" % i) for i in range(RECORDS)] if outcome == COMMIT else []
        assert seen == want, f"read_committed saw {seen} after the {outcome}"
    finally:
        three.restart(coordinator)
        close_quietly(producer)


def close_quietly(producer):
    """Flushes a producer that may have ended fatally (fenced after a timed-out
    transaction): its error was already judged by the test."""
    try:
        producer.flush(5)
    except KafkaException as error:
        print(f"flush after the test: {error}")


@pytest.mark.timeout(300)
def test_coordinator_killed_racing_end_txn(three, topic):
    transactional_id, coordinator, data, other, _epoch = setup_transaction(three, topic)
    # A short transaction timeout: if EndTxn never reached a coordinator, the new one
    # aborts the transaction on its own.
    producer = transactional_producer(three, transactional_id, timeout_ms=10000)
    producer.init_transactions(CALL_TIMEOUT_S)
    write_records(producer, topic, RECORDS)
    ending = Ending(producer, COMMIT)
    ending.start()
    three.kill(coordinator)
    try:
        ending.join(CALL_TIMEOUT_S + 5)
        print(f"commit_transaction: {ending.error or 'success'} after "
              f"{ending.returned_after_s} s")
        entries = cluster.wait_until(lambda: settled(three, data, topic), FAILOVER_TIMEOUT_S,
                                     what="the transaction's end on the data partition")
        markers = {e.kind for e in entries if e.kind != "data"}
        assert len(markers) == 1, f"markers of both kinds or none: {entries}"
        seen = read_committed(three, topic, [data, other])
        everything = [(i, b"txn-%d" % i) for i in range(RECORDS)]
        assert seen in (everything, []), f"a partial transaction is visible: {seen}"
        if ending.error is None:
            assert seen == everything, "commit_transaction succeeded, the records are gone"
        assert markers == {COMMIT if seen else ABORT}, entries
    finally:
        three.restart(coordinator)
        close_quietly(producer)
