"""Thin, bounded wrappers over confluent-kafka, kafka-python and kcat for the tests.

Every wait here has a deadline. Clients log their errors through Python logging (pytest
shows them for a failed test). librdkafka always asks for ApiVersions: api.version.request
defaults to true and is deprecated in librdkafka 2.x (setting it prints a CONFWARN line
for every client), so it is left at its default.

No consumer groups: the broker does not serve them yet, so consumers use assign() with
explicit offsets and never commit. librdkafka insists on a group.id for a Consumer; with
assign() it is unused (it may log that it cannot find a coordinator, which is expected).
"""

import concurrent.futures
import json
import logging
import shutil
import subprocess
import time

import kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger("kafkaesque.clients")
librdkafka_log = logging.getLogger("kafkaesque.librdkafka")

DEFAULT_TIMEOUT_S = 30.0


# ---------------------------------------------------------------- waiting


def wait_for(predicate, timeout_s=DEFAULT_TIMEOUT_S, interval_s=0.1, what="condition"):
    """Polls predicate() until it returns a truthy value; returns it, or fails at timeout_s.

    Exceptions from predicate() count as "not yet"; the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = f"last result: {value!r}"
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last = f"last error: {error!r}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; {last}")
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
        "group.id": "kafkaesque-tests-unused",  # required by librdkafka, unused with assign()
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
                    future.kafkaesque_admin = self.client
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


