"""Thin, bounded wrappers over confluent-kafka, kafka-python and kcat for the tests.

Every wait here has a deadline. Clients log their errors through Python logging (pytest
shows them for a failed test). librdkafka always asks for ApiVersions: api.version.request
defaults to true and is deprecated in librdkafka 2.x (setting it prints a CONFWARN line
for every client), so it is left at its default.

`consumer()`/`consume()` use assign() with explicit offsets and never commit. librdkafka
insists on a group.id for a Consumer; with assign() it is unused (it may log that it
cannot find a coordinator, which is expected). Consumer groups (test_groups.py,
test_group_admin.py) use `group_consumer_config()` and `GroupMember`, a subscribed
confluent consumer polled by its own thread that records its records and rebalances.
"""

import concurrent.futures
import ctypes
import json
import logging
import queue
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections import namedtuple

import kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger("gracchus.clients")
librdkafka_log = logging.getLogger("gracchus.librdkafka")

DEFAULT_TIMEOUT_S = 30.0


# ---------------------------------------------------------------- waiting


class GiveUp(AssertionError):
    """Raised by a wait_for predicate to end the wait at once: retrying cannot help."""


def wait_for(predicate, timeout_s=DEFAULT_TIMEOUT_S, interval_s=0.1, what="condition"):
    """Polls predicate() until it returns a truthy value; returns it, or fails at timeout_s.

    Exceptions from predicate() count as "not yet" (the last one is reported on timeout),
    except GiveUp, which ends the wait at once.
    """
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = f"last result: {value!r}"
        except GiveUp:
            raise
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last = f"last error: {error!r}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what}; {last}")
        time.sleep(interval_s)


def watermarks_are(broker, topic, partition, expected):
    """A wait_for predicate that shows the watermarks it saw when they differ."""
    def check():
        got = watermarks(broker, topic, partition)
        if got != expected:
            raise AssertionError(f"watermarks {got}, want {expected}")
        return True
    return check


# ---------------------------------------------------------------- confluent-kafka


def _error_cb(error):
    librdkafka_log.warning("librdkafka error: %s", error)


def base_config(broker, **extra):
    config = {
        "bootstrap.servers": broker.bootstrap,
        "broker.address.family": "v4",
        "socket.timeout.ms": 10000,
        "error_cb": _error_cb,
        "logger": librdkafka_log,
    }
    config.update(extra)
    return config


def producer(broker, **extra):
    config = base_config(broker, **{"acks": "all", "linger.ms": 5,
                                    "message.timeout.ms": 30000})
    config.update(extra)
    return Producer(config)


def consumer(broker, **extra):
    config = base_config(broker, **{
        "group.id": "gracchus-tests-unused",  # required by librdkafka, unused with assign()
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 100,
    })
    config.update(extra)
    return Consumer(config)


class PinnedAdmin:
    """An AdminClient whose futures keep it alive.

    confluent-kafka quirk: `admin(broker).describe_cluster().result()` fails with
    _DESTROY ("Handle is terminating") because the temporary AdminClient is garbage
    collected, and its handle destroyed, before the future completes. Every future this
    wrapper returns holds a reference to its client.
    """

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            result = attribute(*args, **kwargs)
            futures = result.values() if isinstance(result, dict) else [result]
            for future in futures:
                if isinstance(future, concurrent.futures.Future):
                    future.gracchus_admin = self.client
            return result

        return call


def admin(broker, **extra):
    return PinnedAdmin(AdminClient(base_config(broker, **extra)))


def create_topic(broker, name, partitions=1, config=None, timeout_s=DEFAULT_TIMEOUT_S):
    """Creates a topic with confluent AdminClient and waits until its leaders are known."""
    client = admin(broker)
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        request_timeout=timeout_s, operation_timeout=timeout_s)
    futures[name].result(timeout=timeout_s)
    wait_for(lambda: _leaders_known(client, name, partitions), timeout_s,
             what=f"leaders of {name}")
    return name


def _leaders_known(client, name, partitions):
    metadata = client.list_topics(topic=name, timeout=5)
    topic = metadata.topics.get(name)
    if topic is None or topic.error is not None or len(topic.partitions) != partitions:
        return False
    return all(p.leader == 1 for p in topic.partitions.values())


def produce(broker, topic, records, timeout_s=DEFAULT_TIMEOUT_S, **config):
    """Produces records with confluent-kafka and waits for every delivery report.

    records: dicts with value and optionally key, headers, partition, timestamp.
    Returns [(error or None, Message)] in the order the records were given.
    """
    client = producer(broker, **config)
    results = [None] * len(records)

    def on_delivery(index):
        def callback(error, message):
            results[index] = (error, message)
        return callback

    for index, record in enumerate(records):
        kwargs = {"value": record.get("value"), "on_delivery": on_delivery(index)}
        for name in ("key", "headers", "partition", "timestamp"):
            if record.get(name) is not None:
                kwargs[name] = record[name]
        client.produce(topic, **kwargs)
        client.poll(0)
    remaining = client.flush(timeout_s)
    assert remaining == 0, f"{remaining} records still undelivered after {timeout_s} s"
    assert all(result is not None for result in results), "missing delivery reports"
    return results


def produce_ok(broker, topic, records, **config):
    """produce() that asserts every record was delivered; returns the Messages."""
    results = produce(broker, topic, records, **config)
    errors = [(index, error) for index, (error, _message) in enumerate(results) if error]
    assert not errors, f"delivery failed: {errors[:5]}"
    return [message for _error, message in results]


def watermarks(broker, topic, partition, timeout_s=10.0):
    client = consumer(broker)
    try:
        return client.get_watermark_offsets(TopicPartition(topic, partition),
                                            timeout=timeout_s, cached=False)
    finally:
        client.close()


def consume(broker, topic, partition, offset, count, timeout_s=DEFAULT_TIMEOUT_S, **config):
    """Reads exactly count messages from topic/partition starting at offset (confluent)."""
    client = consumer(broker, **config)
    try:
        client.assign([TopicPartition(topic, partition, offset)])
        messages = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < count and time.monotonic() < deadline:
            message = client.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(message.error())
            messages.append(message)
        assert len(messages) >= count, (
            f"read {len(messages)} of {count} messages from {topic}-{partition} "
            f"at offset {offset} in {timeout_s:.0f} s")
        return messages[:count]
    finally:
        client.close()


def consume_all(broker, topic, partition, offset=0, **config):
    """Every message from offset to the current high watermark (confluent)."""
    _low, high = watermarks(broker, topic, partition)
    if high <= offset:
        return []
    return consume(broker, topic, partition, offset, high - offset, **config)


def confluent_error_code(exception):
    """The KafkaError code carried by a confluent KafkaException."""
    assert isinstance(exception, KafkaException), f"not a KafkaException: {exception!r}"
    return exception.args[0].code()


# ---------------------------------------------------------------- kafka-python


def kp_producer(broker, **extra):
    config = {"bootstrap_servers": broker.bootstrap, "acks": "all",
              "request_timeout_ms": 30000, "max_block_ms": 30000, "retries": 3}
    config.update(extra)
    return kafka.KafkaProducer(**config)


def kp_consumer(broker, **extra):
    config = {"bootstrap_servers": broker.bootstrap, "group_id": None,
              "enable_auto_commit": False, "auto_offset_reset": "none",
              "consumer_timeout_ms": 1000, "fetch_max_wait_ms": 100,
              "request_timeout_ms": 30000}
    config.update(extra)
    return kafka.KafkaConsumer(**config)


def kp_admin(broker, **extra):
    config = {"bootstrap_servers": broker.bootstrap, "request_timeout_ms": 30000}
    config.update(extra)
    return kafka.KafkaAdminClient(**config)


def kp_consume(broker, topic, partition, offset, count, timeout_s=DEFAULT_TIMEOUT_S, **config):
    """Reads exactly count records from topic/partition starting at offset (kafka-python)."""
    client = kp_consumer(broker, **config)
    try:
        tp = kafka.TopicPartition(topic, partition)
        client.assign([tp])
        client.seek(tp, offset)
        records = []
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            batch = client.poll(timeout_ms=500)
            for part_records in batch.values():
                records.extend(part_records)
        assert len(records) >= count, (
            f"kafka-python read {len(records)} of {count} records from {topic}-{partition} "
            f"at offset {offset} in {timeout_s:.0f} s")
        return records[:count]
    finally:
        client.close()


# ---------------------------------------------------------------- kcat


def kcat_path():
    path = shutil.which("kcat") or shutil.which("kafkacat")
    assert path, "kcat is not installed (scripts/test installs it)"
    return path


def kcat(broker, *args, input_text=None, timeout_s=DEFAULT_TIMEOUT_S, check=True):
    """Runs kcat against the broker; returns CompletedProcess (text)."""
    command = [kcat_path(), "-b", broker.bootstrap, "-X", "api.version.request=true",
               "-X", "broker.address.family=v4", *args]
    log.info("running %s", " ".join(command))
    result = subprocess.run(command, input=input_text, capture_output=True, text=True,
                            timeout=timeout_s, stdin=None if input_text is not None
                            else subprocess.DEVNULL)
    if result.stderr:
        log.info("kcat stderr:\n%s", result.stderr)
    if check:
        assert result.returncode == 0, (
            f"kcat {' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}\n"
            f"stderr:\n{result.stderr}")
    return result


def kcat_metadata_json(broker, topic=None):
    args = ["-L", "-J"] + (["-t", topic] if topic else [])
    return json.loads(kcat(broker, *args).stdout)


def kcat_supports_json():
    result = subprocess.run([kcat_path(), "-V"], capture_output=True, text=True, timeout=10)
    return "JSON" in result.stdout




# ---------------------------------------------------------------- consumer groups

# Group timing shared by the group tests: the broker's group.min.session.timeout.ms
# defaults to 6000, so that is the smallest session timeout a JoinGroup may ask for.
GROUP_SESSION_TIMEOUT_MS = 6000
GROUP_HEARTBEAT_INTERVAL_MS = 500

# librdkafka's serialized consumer group metadata (rd_kafka_consumer_group_metadata_write):
# "CGMDv2:", the generation id as a native int32, then group id, member id, instance id.
_CGMD_MAGIC = b"CGMDv2:"

GroupRecord = namedtuple("GroupRecord", "topic partition offset value")


def group_consumer_config(broker, group_id, **extra):
    """A subscribed consumer's config: manual commits, earliest reset, short session.

    With group.protocol=consumer (KIP-848) the broker sets the session and heartbeat
    timings, and librdkafka refuses them in the client's config."""
    config = base_config(broker, **{
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,
    })
    if extra.get("group.protocol") != "consumer":
        config["session.timeout.ms"] = GROUP_SESSION_TIMEOUT_MS
        config["heartbeat.interval.ms"] = GROUP_HEARTBEAT_INTERVAL_MS
    config.update(extra)
    return config


def plain_config(config):
    """config without the Python callables (error_cb, logger): for a subprocess."""
    return {key: value for key, value in config.items()
            if not callable(value) and not isinstance(value, logging.Logger)}


def group_generation(consumer):
    """The generation id librdkafka holds for its group membership (-1 outside a group),
    read from consumer_group_metadata(); None if that format is not the known one."""
    data = consumer.consumer_group_metadata()
    if not isinstance(data, bytes) or not data.startswith(_CGMD_MAGIC) \
            or len(data) < len(_CGMD_MAGIC) + 4:
        return None
    return struct.unpack_from("=i", data, len(_CGMD_MAGIC))[0]


class GroupMember:
    """A subscribed confluent-kafka consumer polled by its own thread.

    Records every record it consumes (GroupRecord) and every rebalance callback as
    (kind, frozenset of (topic, partition)) with kind "assign", "revoke" or "lost".
    The callbacks call assign()/unassign() (eager) or incremental_assign()/
    incremental_unassign() (cooperative) themselves. With commit=True each polled batch
    is committed synchronously (explicit offsets, last offset + 1) before it is recorded,
    so a record in `records()` is also committed. The member id and generation are
    sampled after every poll (the last known values are kept); fresh() says whether that
    happened after the last rebalance callback. call(fn) runs fn(consumer) on the polling
    thread.
    """

    def __init__(self, broker, group_id, topics, name, commit=True, **config):
        self.name = name
        self.group_id = group_id
        self.topics = list(topics)
        self.commit = commit
        strategy = str(config.get("partition.assignment.strategy", ""))
        # KIP-848's protocol is incremental, as librdkafka's cooperative assignors are.
        self.cooperative = "cooperative" in strategy \
            or config.get("group.protocol") == "consumer"
        self.config = group_consumer_config(broker, group_id, **{"client.id": name,
                                                                 **config})
        self.consumer = Consumer(self.config)  # a bad config fails here, in the test
        self._lock = threading.Lock()
        self._records = []
        self._events = []
        self._assignment = set()
        self.commit_errors = []
        self.errors = []
        self.member_id = None
        self.generation = None
        self._sampled_events = -1
        self._calls = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"group-member-{name}",
                                        daemon=True)
        self.closed = False

    def __repr__(self):
        return f"GroupMember({self.name}, member_id={self.member_id})"

    # ------------------------------------------------------------ thread

    def start(self):
        self._thread.start()
        return self

    def _on_assign(self, consumer, partitions):
        if self.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self._event("assign", consumer, partitions)

    def _on_revoke(self, consumer, partitions):
        if self.cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        self._event("revoke", consumer, partitions)

    def _on_lost(self, consumer, partitions):
        if self.cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        self._event("lost", consumer, partitions)

    def _sample(self):
        """Records the member id and generation librdkafka reports (the last known ones
        are kept when it reports none) and how many events they reflect.

        Only from the poll loop, never from a rebalance callback: consumer_group_metadata()
        is a blocking request to librdkafka's group thread made with the GIL held, and in
        the revoke callback of close() it can wait forever (deadlocking the process)."""
        with self._lock:
            events = len(self._events)
        member_id = self.consumer.memberid() or None
        generation = group_generation(self.consumer)
        with self._lock:
            if member_id is not None:
                self.member_id = member_id
            if generation is not None:
                self.generation = generation
            self._sampled_events = events

    def fresh(self):
        """True once member_id/generation were sampled after the last rebalance event."""
        with self._lock:
            return self._sampled_events == len(self._events)

    def _event(self, kind, consumer, partitions):
        # No calls into librdkafka here but the (un)assign ones: see _sample().
        parts = frozenset((tp.topic, tp.partition) for tp in partitions)
        with self._lock:
            self._events.append((kind, parts))
            if kind == "assign":
                self._assignment |= parts
            else:
                self._assignment -= parts
        log.info("%s: %s %s", self.name, kind, sorted(parts))

    def _run(self):
        try:
            self.consumer.subscribe(self.topics, on_assign=self._on_assign,
                                    on_revoke=self._on_revoke, on_lost=self._on_lost)
            while not self._stop.is_set():
                self._serve_calls()
                self._take(self.consumer.consume(num_messages=100, timeout=0.1))
                self._sample()
            self._serve_calls()
        except Exception as error:  # noqa: BLE001 - reported by state() and the tests
            log.exception("%s: polling thread failed", self.name)
            with self._lock:
                self.errors.append(repr(error))
        finally:
            self._fail_pending_calls()
            try:
                self.consumer.close()  # LeaveGroup, unless group.instance.id is set
            except Exception as error:  # noqa: BLE001
                log.warning("%s: close failed: %r", self.name, error)
                with self._lock:
                    self.errors.append(f"close: {error!r}")

    def _take(self, messages):
        good = []
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: consumer error %s", self.name, error)
                with self._lock:
                    self.errors.append(str(error))
        if not good:
            return
        if self.commit:
            last = {}
            for message in good:
                last[(message.topic(), message.partition())] = message.offset()
            offsets = [TopicPartition(topic, partition, offset + 1)
                       for (topic, partition), offset in sorted(last.items())]
            try:
                committed = self.consumer.commit(offsets=offsets, asynchronous=False)
                failed = [(tp.topic, tp.partition, str(tp.error))
                          for tp in committed or [] if tp.error]
            except KafkaException as error:
                failed = [str(error)]
            if failed:
                log.warning("%s: commit of %s failed: %s", self.name, offsets, failed)
                with self._lock:
                    self.commit_errors.append(failed)
        with self._lock:
            for message in good:
                value = message.value()
                self._records.append(GroupRecord(
                    message.topic(), message.partition(), message.offset(),
                    None if value is None else value.decode()))

    def _serve_calls(self):
        while True:
            try:
                function, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(self.consumer))
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                future.set_exception(error)

    def _fail_pending_calls(self):
        while True:
            try:
                _function, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError(f"{self.name} is no longer polling"))

    # ------------------------------------------------------------ control

    def call(self, function, timeout_s=DEFAULT_TIMEOUT_S):
        """Runs function(consumer) on the polling thread and returns its result."""
        assert self._thread.is_alive(), f"{self.name} is not polling"
        future = concurrent.futures.Future()
        self._calls.put((function, future))
        return future.result(timeout=timeout_s)

    def close(self, timeout_s=DEFAULT_TIMEOUT_S):
        """Stops polling and closes the consumer (LeaveGroup unless it is static)."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._thread.is_alive() or self._thread.ident is None:
            if self._thread.ident is None:  # never started
                self.consumer.close()
                return
            self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"{self.name}: close() took over {timeout_s} s"

    # ------------------------------------------------------------ snapshots

    def records(self):
        with self._lock:
            return list(self._records)

    def values(self):
        with self._lock:
            return [record.value for record in self._records]

    def events(self, since=0):
        with self._lock:
            return list(self._events[since:])

    def event_count(self):
        with self._lock:
            return len(self._events)

    def partitions(self, topic):
        """The partitions of topic this member holds (from its rebalance callbacks)."""
        with self._lock:
            return frozenset(p for t, p in self._assignment if t == topic)

    def state(self):
        with self._lock:
            return {"member_id": self.member_id, "generation": self.generation,
                    "assignment": sorted(self._assignment), "errors": list(self.errors),
                    "commit_errors": list(self.commit_errors)}


def produce_values(broker, topic, tag, counts):
    """Produces value "<tag>:<partition>:<i>" to each partition of counts {partition: n};
    returns {value: (partition, offset)}."""
    records = [{"value": f"{tag}:{partition}:{index}".encode(), "partition": partition}
               for partition, count in sorted(counts.items()) for index in range(count)]
    messages = produce_ok(broker, topic, records)
    return {message.value().decode(): (message.partition(), message.offset())
            for message in messages}


def wait_consumed(sources, expected, timeout_s=DEFAULT_TIMEOUT_S):
    """Waits until every value of expected was consumed by one of sources (GroupMembers
    or callables returning values)."""
    def values(source):
        return source() if callable(source) else source.values()

    def check():
        seen = set()
        for source in sources:
            seen.update(values(source))
        missing = sorted(set(expected) - seen)
        if missing:
            raise AssertionError(f"{len(missing)} of {len(expected)} records not consumed, "
                                 f"e.g. {missing[:5]}; members {_states(sources)}")
        return True
    wait_for(check, timeout_s, interval_s=0.05, what="the records to be consumed")


def _states(sources):
    return {source.name: source.state() for source in sources
            if isinstance(source, GroupMember)}


def wait_balanced(members, topic, partitions, timeout_s=DEFAULT_TIMEOUT_S):
    """Waits until members hold every partition of topic exactly once, each at least
    one (when there are enough partitions), each knows its member id, and they share one
    generation (when librdkafka's metadata shows it). Returns {member: frozenset}."""
    def check():
        owned = {member: member.partitions(topic) for member in members}
        held = sorted(p for parts in owned.values() for p in parts)
        problems = []
        if held != list(range(partitions)):
            problems.append(f"partitions held: {held}")
        if len(members) <= partitions and not all(owned.values()):
            problems.append("a member holds no partition")
        if any(member.member_id is None for member in members):
            problems.append("a member id is unknown")
        if not all(member.fresh() for member in members):
            problems.append("a member has not sampled its generation since its last rebalance")
        generations = {member.generation for member in members}
        if None not in generations and len(generations) != 1:
            problems.append(f"generations differ: {sorted(generations)}")
        if problems:
            raise AssertionError("; ".join(problems) + f"; members {_states(members)}")
        return owned
    return wait_for(check, timeout_s, interval_s=0.05,
                    what=f"{len(members)} member(s) to share {topic}'s {partitions} "
                         "partitions")


# ---------------------------------------------------------------- subprocesses


def die_with_parent():
    """preexec_fn: the child gets SIGKILL if the pytest process dies first."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        pass


class JsonLinesProcess:
    """A child process whose stdout lines that parse as JSON objects are collected
    (other lines, librdkafka logs on the merged stderr included, are logged)."""

    def __init__(self, command, name):
        self.name = name
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, preexec_fn=die_with_parent)
        self._lock = threading.Lock()
        self._events = []
        self._reader = threading.Thread(target=self._read, name=f"reader-{name}",
                                        daemon=True)
        self._reader.start()

    @property
    def pid(self):
        return self.process.pid

    def _read(self):
        for line in self.process.stdout:
            line = line.rstrip("\n")
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict):
                with self._lock:
                    self._events.append(event)
            elif line:
                log.info("%s: %s", self.name, line)

    def events(self, kind=None):
        with self._lock:
            return [event for event in self._events if kind is None or event["kind"] == kind]

    def stop(self, timeout_s=DEFAULT_TIMEOUT_S):
        """SIGTERM by PID and wait for the process to finish on its own; returns its exit
        code (SIGKILL, and an assertion, if it does not finish in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout_s} s of SIGTERM")
        self._reader.join(10)
        return code

    def kill(self):
        """SIGKILL by PID and wait; returns the exit code (-9)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        code = self.process.wait(timeout=30)
        self._reader.join(10)
        return code
