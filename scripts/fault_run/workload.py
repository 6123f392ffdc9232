"""The fault run's clients, each in a process of its own (`python -m fault_run.workload
producer|consumer ...`), so that librdkafka's threads, its GIL use and its crashes stay
out of the process that injects the faults.

Both write a JSON-lines log (--out), one object per line, flushed after every poll:

producer  {"k": "ack", "t", "p", "o", "v", "m"}     acknowledged (delivery report, no error)
          {"k": "fail", "t", "p", "v", "e", "m"}    the delivery report was an error
          {"k": "error", "e", "fatal", "msg", "m"}  librdkafka's error callback
          {"k": "incarnation", "name", "m"}         a new Producer (after a fatal error)
consumer  {"k": "seen", "t", "p", "o", "v", "m"}    a record the consumer was handed
          {"k": "commit", "t", "p", "o", "m"}       a synchronous commit that succeeded
          {"k": "commit_fail", "e", "m"}            one that did not (whole or per partition)
          {"k": "assign"|"revoke"|"lost", "parts", "m"}
          {"k": "error", "e", "msg", "m"}

"m" is time.monotonic() (CLOCK_MONOTONIC: one clock for every process on the machine).
Values are "<producer>.<incarnation>-<sequence>", the sequence counting every record
that producer incarnation sent, in send order; the checker orders by it.

On stdout each process prints a status line every STATUS_INTERVAL_S for the run to
follow its progress: {"kind": "status", ...}. SIGTERM stops it: the producer stops
sending and flushes (bounded), the consumer leaves its group.
"""

import argparse
import json
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


# ---------------------------------------------------------------- consumer


class ConsumerState:
    def __init__(self, log):
        self.log = log
        self.seen = 0
        self.committed = 0
        self.last_seen = None
        self.assigned = set()
        self.errors = Counter()

    def on_assign(self, consumer, partitions):
        consumer.assign(partitions)
        self._event("assign", partitions)
        self.assigned |= {tp_key(tp.topic, tp.partition) for tp in partitions}

    def on_revoke(self, consumer, partitions):
        consumer.unassign()
        self._event("revoke", partitions)
        self.assigned = set()

    def on_lost(self, consumer, partitions):
        consumer.unassign()
        self._event("lost", partitions)
        self.assigned = set()

    def _event(self, kind, partitions):
        self.log.write(k=kind, parts=sorted(tp_key(tp.topic, tp.partition)
                                            for tp in partitions))

    def on_error(self, error):
        self.errors[error.name()] += 1
        self.log.write(k="error", e=error.name(), msg=error.str())


def consumer_config(args, state):
    return {
        "bootstrap.servers": args.bootstrap,
        "client.id": args.name,
        "group.id": args.group,
        "broker.address.family": "v4",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 100,
        "socket.timeout.ms": 10000,
        "error_cb": state.on_error,
    }


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
    state = ConsumerState(log)
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
    parser.add_argument("role", choices=("producer", "consumer"))
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
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.role == "producer":
        run_producer(args)
    else:
        run_consumer(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
