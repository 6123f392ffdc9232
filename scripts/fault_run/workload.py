"""The fault run's clients, each in a process of its own (`python -m fault_run.workload
producer|consumer ...`), so that librdkafka's threads, its GIL use and its crashes stay
out of the process that injects the faults.

Both write a JSON-lines log (--out), one object per line, flushed after every poll:

producer  {"k": "ack", "t", "p", "o", "v", "m"}     acknowledged (delivery report, no error)
          {"k": "fail", "t", "p", "v", "e", "m"}    the delivery report was an error
          {"k": "error", "e", "fatal", "msg", "m"}  librdkafka's error callback
          {"k": "incarnation", "name", "m"}         a new Producer (after a fatal error)
txnproducer (transactional; values "<producer>.<incarnation>:<txn>:<index>:<size>")
          {"k": "txn_begin", "x", "n", "m"}           transaction x of n records begins
          {"k": "txn_end", "x", "n", "outcome", "why", "m"}
                  outcome "committed" (commit_transaction returned), "aborted"
                  (abort_transaction returned) or "unknown" (a fatal error ended it: the
                  coordinator may still commit or abort it)
          {"k": "fail", "t", "p", "v", "e", "m"}    a delivery report with an error
          {"k": "error", "e", "fatal", "msg", "m"}  librdkafka's error callback
          {"k": "incarnation", "name", "m"}         a new Producer (same transactional.id)
consumer  {"k": "seen", "t", "p", "o", "v", "m"}    a record the consumer was handed
          {"k": "commit", "t", "p", "o", "m"}       a synchronous commit that succeeded
          {"k": "commit_fail", "e", "m"}            one that did not (whole or per partition)
          {"k": "assign"|"revoke"|"lost", "parts", "m"}
          {"k": "error", "e", "msg", "m"}

txnconsumer: a consumer's lines, with isolation.level=read_committed.

"m" is time.monotonic() (CLOCK_MONOTONIC: one clock for every process on the machine).
Values are "<producer>.<incarnation>-<sequence>", the sequence counting every record
that producer incarnation sent, in send order; the checker orders by it. A transactional
producer's records carry their transaction and its size instead, so that the checker can
verify all-or-nothing from the records alone.

On stdout each process prints a status line every STATUS_INTERVAL_S for the run to
follow its progress: {"kind": "status", ...}. SIGTERM stops it: the producer stops
sending and flushes (bounded), the consumer leaves its group.
"""

import argparse
import json
import random
import signal
import sys
import threading
import time
from collections import Counter

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

STATUS_INTERVAL_S = 0.1
POLL_TIMEOUT_S = 0.02


class JsonLog:
    """Appends one JSON object per line; flush() after each poll, so a line in the file
    was reported by the client no later than the next poll."""

    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")

    def write(self, **fields):
        fields["m"] = time.monotonic()
        self.file.write(json.dumps(fields, separators=(",", ":")) + "\n")

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()


def stop_event():
    """An event set by SIGTERM or SIGINT."""
    event = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: event.set())
    return event


def status(**fields):
    print(json.dumps({"kind": "status", **fields}, separators=(",", ":")), flush=True)


def tp_key(topic, partition):
    return f"{topic}:{partition}"


# ---------------------------------------------------------------- producer


class ProducerState:
    """What the producer's callbacks saw; read by the loop for its status lines."""

    def __init__(self, log):
        self.log = log
        self.acked = 0
        self.failed = 0
        self.last_ack = {}  # "topic:partition" -> monotonic time of its last ack
        self.errors = Counter()
        self.fatal = False

    def on_delivery(self, error, message):
        value = message.value().decode()
        if error is None:
            self.acked += 1
            self.last_ack[tp_key(message.topic(), message.partition())] = time.monotonic()
            self.log.write(k="ack", t=message.topic(), p=message.partition(),
                           o=message.offset(), v=value)
        else:
            self.failed += 1
            self.errors[error.name()] += 1
            self.log.write(k="fail", t=message.topic(), p=message.partition(), v=value,
                           e=error.name())

    def on_error(self, error):
        self.errors[error.name()] += 1
        if error.fatal():
            self.fatal = True
        self.log.write(k="error", e=error.name(), fatal=error.fatal(), msg=error.str())


def producer_config(args, state):
    return {
        "bootstrap.servers": args.bootstrap,
        "client.id": args.name,
        "broker.address.family": "v4",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # Long enough that a record outlives any recovery the run waits for: a record
        # that times out is reported failed (not acknowledged) and proves nothing.
        "message.timeout.ms": args.delivery_timeout_ms,
        "socket.timeout.ms": 10000,
        "error_cb": state.on_error,
    }


def run_producer(args):
    stop = stop_event()
    log = JsonLog(args.out)
    state = ProducerState(log)
    targets = [(topic, partition) for partition in range(args.partitions)
               for topic in args.topics]
    incarnation = 0
    name = f"{args.name}.{incarnation}"
    producer = Producer(producer_config(args, state))
    log.write(k="incarnation", name=name)
    sequence = 0
    budget = 0.0
    last_tick = last_status = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        # A token bucket holding at most one second of records: after a stall the
        # producer resumes its rate instead of bursting the backlog.
        budget = min(budget + (now - last_tick) * args.rate, float(args.rate))
        last_tick = now
        while budget >= 1 and len(producer) < args.outstanding_max:
            topic, partition = targets[sequence % len(targets)]
            producer.produce(topic, value=f"{name}-{sequence:010d}".encode(),
                             partition=partition, on_delivery=state.on_delivery)
            sequence += 1
            budget -= 1
        producer.poll(POLL_TIMEOUT_S)
        log.flush()
        if state.fatal:
            # An idempotent producer's fatal error (e.g. a sequence gap it cannot
            # resolve): its outstanding records fail; a new producer (new id) carries on.
            producer.purge()
            producer.flush(5)
            incarnation += 1
            name = f"{args.name}.{incarnation}"
            state.fatal = False
            producer = Producer(producer_config(args, state))
            log.write(k="incarnation", name=name)
            sequence = 0
        if now - last_status >= STATUS_INTERVAL_S:
            last_status = now
            status(acked=state.acked, failed=state.failed, sent=sequence,
                   outstanding=len(producer), last_ack=state.last_ack,
                   errors=dict(state.errors), incarnation=incarnation)
    remaining = producer.flush(args.flush_s)
    log.flush()
    log.close()
    status(acked=state.acked, failed=state.failed, sent=sequence, outstanding=remaining,
           last_ack=state.last_ack, errors=dict(state.errors), incarnation=incarnation,
           done=True)


# ---------------------------------------------------------------- transactional producer


COMMITTED, ABORTED, UNKNOWN = "committed", "aborted", "unknown"
TXN_CALL_TIMEOUT_S = 30.0


def txn_value(name, txn, index, size):
    return f"{name}:{txn}:{index}:{size}"


class TxnState:
    def __init__(self, log):
        self.log = log
        self.outcomes = Counter()
        self.errors = Counter()
        self.fatal = False
        self.last_end = None
        self.current = None  # the key of the transaction begun and not yet ended

    def on_delivery(self, error, message):
        if error is not None:
            self.errors[error.name()] += 1
            self.log.write(k="fail", t=message.topic(), p=message.partition(),
                           v=message.value().decode(), e=error.name())

    def on_error(self, error):
        self.errors[error.name()] += 1
        if error.fatal():
            self.fatal = True
        self.log.write(k="error", e=error.name(), fatal=error.fatal(), msg=error.str())


def txn_producer_config(args, state):
    return {
        "bootstrap.servers": args.bootstrap,
        "client.id": args.name,
        "broker.address.family": "v4",
        "transactional.id": f"fault-run-{args.name}",
        "transaction.timeout.ms": args.transaction_timeout_ms,
        "message.timeout.ms": args.transaction_timeout_ms,
        "linger.ms": 5,
        "socket.timeout.ms": 10000,
        "error_cb": state.on_error,
    }


class Fatal(Exception):
    """The producer incarnation cannot go on (fenced, or another fatal error)."""


class Stopped(Exception):
    """The run stopped the producer while no transaction was open."""


def txn_call(function, stop, what, log, stoppable=False):
    """Calls a transactional API, retrying retriable errors (as librdkafka documents:
    the same call may be repeated) until it succeeds or the run has been stopped for
    long (at once if stoppable: nothing is open). Raises Fatal for a fatal error;
    returns the KafkaError of an abortable one."""
    stopping_since = None
    while True:
        if stoppable and stop.is_set():
            raise Stopped()
        try:
            function(TXN_CALL_TIMEOUT_S)
            return None
        except KafkaException as exception:
            error = exception.args[0]
            log.write(k="error", e=f"{what}:{error.name()}", fatal=error.fatal(),
                      msg=error.str())
            if error.fatal():
                raise Fatal(f"{what}: {error.name()}") from None
            if error.txn_requires_abort():
                return error
            if not error.retriable():
                raise Fatal(f"{what}: not retriable: {error.name()}") from None
        time.sleep(0.1)  # some retriable errors come back at once
        if stop.is_set():
            stopping_since = stopping_since or time.monotonic()
            if time.monotonic() - stopping_since > 2 * TXN_CALL_TIMEOUT_S:
                raise Fatal(f"{what}: still failing after the stop")


def one_transaction(producer, state, args, name, txn, rng, stop):
    """Begins, writes and ends transaction `txn`; returns (outcome, why)."""
    size = rng.randint(1, args.txn_size_max)
    key = f"{name}:{txn}"
    try:
        producer.begin_transaction()
    except KafkaException as exception:
        raise Fatal(f"begin: {exception.args[0].name()}") from None
    state.current = key
    state.log.write(k="txn_begin", x=key, n=size)
    state.log.flush()
    try:
        for index in range(size):
            partition = rng.randrange(args.partitions)
            topic = args.topics[rng.randrange(len(args.topics))]
            while True:
                try:
                    producer.produce(topic, value=txn_value(name, txn, index, size).encode(),
                                     partition=partition, on_delivery=state.on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    except KafkaException as exception:
        error = exception.args[0]
        if error.fatal():
            raise Fatal(f"produce: {error.name()}") from None
        # Any other produce failure: the transaction cannot be trusted whole; abort it.
        return abort(producer, stop, f"produce: {error.name()}", state.log)
    if rng.random() < args.txn_abort_share:
        return abort(producer, stop, "chosen", state.log)
    failed = txn_call(producer.commit_transaction, stop, "commit", state.log)
    if failed is None:
        return COMMITTED, "chosen"
    return abort(producer, stop, f"commit: {failed.name()}", state.log)


def abort(producer, stop, why, log):
    failed = txn_call(producer.abort_transaction, stop, "abort", log)
    if failed is not None:
        raise Fatal(f"abort failed abortably: {failed.name()} ({why})")
    return ABORTED, why


def run_txn_producer(args):
    stop = stop_event()
    log = JsonLog(args.out)
    state = TxnState(log)
    rng = random.Random(f"{args.name}-{args.seed}")
    incarnation = 0
    txn = 0
    last_status = time.monotonic()
    while not stop.is_set():
        name = f"{args.name}.{incarnation}"
        producer = Producer(txn_producer_config(args, state))
        log.write(k="incarnation", name=name)
        log.flush()
        state.fatal = False
        try:
            # init_transactions also completes or aborts what an earlier incarnation
            # (same transactional.id) left open.
            if txn_call(producer.init_transactions, stop, "init", log,
                        stoppable=True) is not None:
                raise Fatal("init failed abortably")
            while not stop.is_set():
                began = time.monotonic()
                outcome, why = one_transaction(producer, state, args, name, txn, rng, stop)
                log.write(k="txn_end", x=state.current, outcome=outcome, why=why)
                state.current = None
                log.flush()
                state.outcomes[outcome] += 1
                state.last_end = time.monotonic()
                txn += 1
                now = time.monotonic()
                if now - last_status >= STATUS_INTERVAL_S:
                    last_status = now
                    status(outcomes=dict(state.outcomes), errors=dict(state.errors),
                           incarnation=incarnation, last_end=state.last_end)
                # Pace: about args.rate records per second on average.
                pause = (args.txn_size_max + 1) / 2 / args.rate - (now - began)
                if pause > 0:
                    stop.wait(pause)
        except Stopped:
            pass
        except Fatal as fatal:
            if state.current is not None:
                log.write(k="txn_end", x=state.current, outcome=UNKNOWN, why=str(fatal))
                state.outcomes[UNKNOWN] += 1
                state.current = None
                txn += 1
            log.write(k="error", e="fatal", fatal=True, msg=str(fatal))
            incarnation += 1
        finally:
            log.flush()
            try:
                producer.purge()
                producer.flush(5)
            except KafkaException:
                pass
    log.close()
    status(outcomes=dict(state.outcomes), errors=dict(state.errors), incarnation=incarnation,
           last_end=state.last_end, done=True)


# ---------------------------------------------------------------- consumer


class ConsumerState:
    def __init__(self, log, incremental):
        self.log = log
        # KIP-848 members (group.protocol=consumer) rebalance incrementally: the callbacks
        # name only the partitions that move.
        self.incremental = incremental
        self.seen = 0
        self.committed = 0
        self.last_seen = None
        self.assigned = set()
        self.errors = Counter()

    def on_assign(self, consumer, partitions):
        if self.incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self._event("assign", partitions)
        self.assigned |= {tp_key(tp.topic, tp.partition) for tp in partitions}

    def on_revoke(self, consumer, partitions):
        self._let_go(consumer, partitions)
        self._event("revoke", partitions)

    def on_lost(self, consumer, partitions):
        self._let_go(consumer, partitions)
        self._event("lost", partitions)

    def _let_go(self, consumer, partitions):
        if self.incremental:
            consumer.incremental_unassign(partitions)
            self.assigned -= {tp_key(tp.topic, tp.partition) for tp in partitions}
        else:
            consumer.unassign()
            self.assigned = set()

    def _event(self, kind, partitions):
        self.log.write(k=kind, parts=sorted(tp_key(tp.topic, tp.partition)
                                            for tp in partitions))

    def on_error(self, error):
        self.errors[error.name()] += 1
        self.log.write(k="error", e=error.name(), msg=error.str())


def consumer_config(args, state):
    config = {
        "bootstrap.servers": args.bootstrap,
        "client.id": args.name,
        "group.id": args.group,
        "group.protocol": args.group_protocol,
        "broker.address.family": "v4",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,
        "socket.timeout.ms": 10000,
        "isolation.level": args.isolation,
        "error_cb": state.on_error,
    }
    # A KIP-848 member's session and heartbeat are the broker's (group.consumer.*).
    if args.group_protocol == "classic":
        config["session.timeout.ms"] = args.session_timeout_ms
        config["heartbeat.interval.ms"] = 500
    return config


def commit(consumer, state, messages):
    """Commits the offsets after the last of messages per partition, synchronously, and
    logs each partition whose commit succeeded."""
    last = {}
    for message in messages:
        last[(message.topic(), message.partition())] = message.offset()
    offsets = [TopicPartition(topic, partition, offset + 1)
               for (topic, partition), offset in sorted(last.items())]
    try:
        results = consumer.commit(offsets=offsets, asynchronous=False) or []
    except KafkaException as error:
        state.errors[f"commit:{error.args[0].name()}"] += 1
        state.log.write(k="commit_fail", e=error.args[0].name())
        return
    for tp in results:
        if tp.error is not None:
            state.errors[f"commit:{tp.error.name()}"] += 1
            state.log.write(k="commit_fail", e=tp.error.name(), t=tp.topic, p=tp.partition)
        else:
            state.committed += 1
            state.log.write(k="commit", t=tp.topic, p=tp.partition, o=tp.offset)


def run_consumer(args):
    stop = stop_event()
    log = JsonLog(args.out)
    state = ConsumerState(log, incremental=args.group_protocol == "consumer")
    consumer = Consumer(consumer_config(args, state))
    consumer.subscribe(args.topics, on_assign=state.on_assign, on_revoke=state.on_revoke,
                       on_lost=state.on_lost)
    last_status = time.monotonic()
    while not stop.is_set():
        good = []
        for message in consumer.consume(num_messages=500, timeout=0.2):
            error = message.error()
            if error is None:
                good.append(message)
                log.write(k="seen", t=message.topic(), p=message.partition(),
                          o=message.offset(), v=message.value().decode())
            elif error.code() != KafkaError._PARTITION_EOF:
                state.on_error(error)
        if good:
            state.seen += len(good)
            state.last_seen = time.monotonic()
            commit(consumer, state, good)
        log.flush()
        now = time.monotonic()
        if now - last_status >= STATUS_INTERVAL_S:
            last_status = now
            status(seen=state.seen, committed=state.committed, last_seen=state.last_seen,
                   assigned=sorted(state.assigned), errors=dict(state.errors))
    consumer.close()
    log.flush()
    log.close()
    status(seen=state.seen, committed=state.committed, last_seen=state.last_seen,
           assigned=[], errors=dict(state.errors), done=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(description="a fault-run client process")
    parser.add_argument("role", choices=("producer", "consumer", "txnproducer"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--name", required=True, help="client id; the producer's value prefix")
    parser.add_argument("--out", required=True, help="JSON-lines log to append to")
    parser.add_argument("--topics", required=True, type=lambda s: s.split(","))
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="records per second")
    parser.add_argument("--outstanding-max", type=int, default=2000)
    parser.add_argument("--delivery-timeout-ms", type=int, default=300000)
    parser.add_argument("--flush-s", type=float, default=60.0)
    parser.add_argument("--group", default="fault-run")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--group-protocol", default="classic", choices=("classic", "consumer"),
                        help="librdkafka's group.protocol (consumer: KIP-848)")
    parser.add_argument("--isolation", default="read_committed",
                        choices=("read_committed", "read_uncommitted"),
                        help="consumer isolation level (librdkafka's default)")
    parser.add_argument("--txn-size-max", type=int, default=5,
                        help="records per transaction: 1 to this many")
    parser.add_argument("--txn-abort-share", type=float, default=0.2,
                        help="share of transactions aborted on purpose")
    parser.add_argument("--transaction-timeout-ms", type=int, default=60000)
    parser.add_argument("--seed", default="0", help="seeds the transactions' sizes")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.role == "producer":
        run_producer(args)
    elif args.role == "txnproducer":
        run_txn_producer(args)
    else:
        run_consumer(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
