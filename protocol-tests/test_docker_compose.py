"""The Docker image and the compose files (issue 9), driven as users drive them.

The image is built the registry-free way (scripts/docker-image, once per session; cached,
so a second run takes seconds) and run with the Python docker-compose here;
$GRACCHUS_TEST_IMAGE names an image to test instead (built some other way: not rebuilt). Every test
has its own compose project (-p), host ports and network, and takes it down with
`down -v` whatever happens; the containers' logs go to the report of a failed test.

Skipped, with the reason, where there is no docker engine or no compose (docker-compose,
else `docker compose`).
"""

import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
from clients import kcat, wait_for
from cluster import metadata_v12
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rawkafka import Connection

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.environ.get("GRACCHUS_TEST_IMAGE", "gracchus:latest")
SINGLE_NODE_FILE = os.path.join(REPO_ROOT, "docker", "compose.single-node.yaml")
CLUSTER_FILE = os.path.join(REPO_ROOT, "compose.yaml")
UID = "65532"
HEALTHY_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 120.0

log = logging.getLogger("gracchus.docker")


@functools.lru_cache(maxsize=1)
def _compose_command():
    """docker-compose (1.29 here), else Compose v2's `docker compose`, else None."""
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return ("docker", "compose") if probe.returncode == 0 else None


def _docker_missing():
    """Why these tests cannot run here, or None."""
    if not shutil.which("docker"):
        return "no docker command"
    if _compose_command() is None:
        return "neither docker-compose nor docker compose"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"no docker engine: {probe.stderr.strip()[:200]}"
    return None


_MISSING = _docker_missing()
pytestmark = [
    pytest.mark.skipif(_MISSING is not None, reason=f"docker tests skipped: {_MISSING}"),
    pytest.mark.timeout(240),
]


def run(*command, check=True, timeout_s=COMMAND_TIMEOUT_S, env=None, input_text=None):
    log.info("running %s", " ".join(command))
    stdin = {} if input_text is not None else {"stdin": subprocess.DEVNULL}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                            env=env, input=input_text, **stdin)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def image():
    """The image under test, built the registry-free way unless $GRACCHUS_TEST_IMAGE
    names one; its `docker image inspect`."""
    if "GRACCHUS_TEST_IMAGE" not in os.environ:
        result = run(os.path.join(REPO_ROOT, "scripts", "docker-image"), timeout_s=1800)
        log.info("scripts/docker-image: %s", result.stdout.strip())
    return json.loads(run("docker", "image", "inspect", IMAGE).stdout)[0]


class Project:
    """One docker-compose project: a file, a unique name, its environment."""

    def __init__(self, compose_file, env):
        self.name = f"gracchus-test-{uuid.uuid4().hex[:8]}"
        self.file = compose_file
        self.env = {**os.environ, "GRACCHUS_IMAGE": IMAGE, **env}

    def compose(self, *args, check=True, timeout_s=COMMAND_TIMEOUT_S):
        return run(*_compose_command(), "-f", self.file, "-p", self.name, *args,
                   check=check, timeout_s=timeout_s, env=self.env)

    def container(self, service):
        container_id = self.compose("ps", "-q", service).stdout.strip()
        assert container_id, f"no container for {service}"
        return container_id

    def logs(self):
        return self.compose("logs", "--no-color", "--tail", "80", check=False).stdout


@contextlib.contextmanager
def compose_up(compose_file, **env):
    """`up -d`, and always `down -v` at the end (the logs first when the test failed)."""
    project = Project(compose_file, env)
    try:
        project.compose("up", "-d")
        yield project
    except BaseException:
        log.error("compose logs of %s:\n%s", project.name, project.logs())
        raise
    finally:
        project.compose("down", "-v", "--remove-orphans", "-t", "30", check=False)


def state(container):
    return json.loads(run("docker", "inspect", container, "--format",
                          "{{json .State}}").stdout)


def wait_healthy(*containers, timeout_s=HEALTHY_TIMEOUT_S):
    """Waits until every container's HEALTHCHECK says healthy; returns the seconds taken."""
    started = time.monotonic()

    def all_healthy():
        for container in containers:
            current = state(container)
            assert current["Running"], f"{container[:12]} is not running: {current}"
            if current.get("Health", {}).get("Status") != "healthy":
                return False
        return True

    wait_for(all_healthy, timeout_s=timeout_s, interval_s=0.2, what="healthy containers")
    return time.monotonic() - started


def client_config(bootstrap, **extra):
    return {"bootstrap.servers": bootstrap, "broker.address.family": "v4",
            "socket.timeout.ms": 10000, **extra}


def produce_values(bootstrap, topic, values, **extra):
    """Produces with acks=all; returns the delivered (value, offset) pairs."""
    producer = Producer(client_config(bootstrap, acks="all", **extra))
    delivered, errors = [], []

    def on_delivery(error, message):
        if error is None:
            delivered.append((message.value().decode(), message.offset()))
        else:
            errors.append(error)

    for value in values:
        producer.produce(topic, value.encode(), on_delivery=on_delivery)
    assert producer.flush(60) == 0, "records left undelivered"
    assert not errors, errors
    return delivered


def read_partition(bootstrap, topic, partition=0, timeout_s=30.0):
    """Every record of the partition from offset 0 to its high watermark, as (value, offset)."""
    consumer = Consumer(client_config(bootstrap, **{
        "group.id": "gracchus-docker-tests-unused", "enable.auto.commit": False,
        "auto.offset.reset": "error", "enable.partition.eof": False}))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                 timeout=timeout_s)
        consumer.assign([TopicPartition(topic, partition, 0)])
        records = []
        deadline = time.monotonic() + timeout_s
        while len(records) < high and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert not message.error(), message.error()
            records.append((message.value().decode(), message.offset()))
        assert len(records) == high, f"read {len(records)} of {high} records"
        return records
    finally:
        consumer.close()


def partition_state(admin, topic, partition=0):
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    assert metadata.error is None, metadata.error
    state_now = metadata.partitions[partition]
    return state_now.leader, sorted(state_now.replicas), sorted(state_now.isrs)


def kcat_available():
    return shutil.which("kcat") or shutil.which("kafkacat")


# ---------------------------------------------------------------- the image


# First in the file, so it builds the image: cargo may have to compile (a stale binary).
@pytest.mark.timeout(900)
def test_image_runs_as_non_root_and_turns_healthy(image):
    config = image["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["gracchus"], "exec form: the broker is PID 1"
    assert config["Healthcheck"]["Test"] == ["CMD", "gracchus", "healthcheck"]
    # 9644: the HTTP listener (/metrics and the status page) on every interface.
    assert set(config["ExposedPorts"]) == {"9092/tcp", "9093/tcp", "9644/tcp"}
    assert "/var/lib/gracchus" in config["Volumes"]
    assert config.get("StopSignal") == "SIGTERM"
    log.info("image %s: %d bytes", IMAGE, image["Size"])

    port = free_port()
    container = run("docker", "run", "-d", "-p", f"{port}:9092",
                    "-e", f"KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://localhost:{port}",
                    IMAGE).stdout.strip()
    try:
        seconds = wait_healthy(container)
        log.info("docker run to healthy: %.1f s", seconds)
        # docker top passes -o to ps on the docker host, which needs the pid column.
        users = run("docker", "top", container, "-o", "pid,uid,comm").stdout.split("\n")[1:]
        uids = {line.split()[1] for line in users if line.strip()}
        assert uids == {UID}, f"processes run as {uids}, want only {UID}"
        delivered = produce_values(f"localhost:{port}", "image-smoke", ["one", "two"])
        assert [value for value, _ in delivered] == ["one", "two"]
    finally:
        run("docker", "rm", "-f", "-v", container, check=False)


# ---------------------------------------------------------------- the single-node file


def check_console_tools(container, address):
    """The tutorials' commands through docker exec, under both names the image ships."""
    bootstrap = ["--bootstrap-server", address]
    created = run("docker", "exec", container, "/opt/kafka/bin/kafka-topics.sh", *bootstrap,
                  "--create", "--topic", "docker-tools", "--partitions", "1",
                  "--replication-factor", "1").stdout
    assert "Created topic docker-tools." in created
    run("docker", "exec", "-i", container, "kafka-console-producer", *bootstrap,
        "--topic", "docker-tools", input_text="alpha\nbeta\ngamma\n")
    consumed = run("docker", "exec", container, "kafka-console-consumer.sh", *bootstrap,
                   "--topic", "docker-tools", "--from-beginning", "--max-messages", "3",
                   "--timeout-ms", "20000")
    assert consumed.stdout.split() == ["alpha", "beta", "gamma"], consumed
    assert "Processed a total of 3 messages" in consumed.stderr


def test_single_node_file_serves_stops_cleanly_and_keeps_its_data(image):
    port = free_port()
    bootstrap = f"localhost:{port}"
    topic = "docker-single"
    with compose_up(SINGLE_NODE_FILE, GRACCHUS_PORT=str(port)) as project:
        container = project.container("kafka")
        log.info("up to healthy: %.1f s", wait_healthy(container))

        values = [f"record-{index}" for index in range(50)]
        delivered = produce_values(bootstrap, topic, values)
        assert [value for value, _ in delivered] == values
        assert [value for value, _ in read_partition(bootstrap, topic)] == values

        listed = run("docker", "exec", container, "kafka-topics",
                     "--bootstrap-server", bootstrap, "--list").stdout.split()
        assert topic in listed
        check_console_tools(container, bootstrap)

        run("docker", "stop", "-t", "30", container)
        stopped = state(container)
        assert stopped["ExitCode"] == 0, stopped
        output = run("docker", "logs", container)
        logs = output.stdout + output.stderr
        assert "controlled shutdown" in logs and "stopped cleanly" in logs, logs[-3000:]

        run("docker", "start", container)
        wait_healthy(container)
        assert [value for value, _ in read_partition(bootstrap, topic)] == values


# ---------------------------------------------------------------- three nodes


class Stream:
    """An idempotent acks=all producer writing numbered values to partition 0 on its own
    thread; what was acknowledged, at which offsets."""

    def __init__(self, bootstrap, topic, count, pause_s=0.004):
        self.topic = topic
        self.values = [f"value-{index:06d}" for index in range(count)]
        self.pause_s = pause_s
        self.acknowledged = []
        self.errors = []
        self.sent = 0
        self.stopping = threading.Event()
        self.producer = Producer(client_config(
            bootstrap, acks="all", **{"enable.idempotence": True, "linger.ms": 5,
                                      "message.timeout.ms": 90000}))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, error, message):
        if error is None:
            self.acknowledged.append((message.value().decode(), message.offset()))
        else:
            self.errors.append(error)

    def _run(self):
        for value in self.values:
            if self.stopping.is_set():
                break
            self.producer.produce(self.topic, value.encode(), partition=0,
                                  on_delivery=self._on_delivery)
            self.sent += 1
            self.producer.poll(0)
            time.sleep(self.pause_s)
        self.producer.flush(120)

    def start(self):
        self.thread.start()
        return self

    def wait_acknowledged(self, count, timeout_s=60):
        wait_for(lambda: len(self.acknowledged) >= count, timeout_s=timeout_s,
                 what=f"{count} acknowledged records")

    def finish_and_check(self, bootstrap, stop=False, timeout_s=150):
        """Every record sent acknowledged, and read back once each, in order, at its offset.
        stop: end the stream now rather than after all its values."""
        if stop:
            self.stopping.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the producer did not finish"
        self.values = self.values[:self.sent]
        assert not self.errors, self.errors[:5]
        assert len(self.acknowledged) == len(self.values)
        records = read_partition(bootstrap, self.topic)
        read_values = [value for value, _ in records]
        assert len(read_values) == len(set(read_values)), "a record was written twice"
        assert read_values == self.values, "records lost or out of order"
        assert sorted(self.acknowledged, key=lambda pair: pair[1]) == records, \
            "an acknowledged offset holds another record"


class Cluster:
    """compose.yaml up: its project, services, containers and host ports."""

    SERVICES = ["kafka-1", "kafka-2", "kafka-3"]

    def __init__(self, project, ports):
        self.project = project
        self.ports = ports
        self.containers = {service: project.container(service) for service in self.SERVICES}
        self.network = f"{project.name}_default"

    def bootstrap(self, *skip):
        return ",".join(f"localhost:{port}" for service, port in zip(self.SERVICES, self.ports)
                        if service not in skip)

    def admin(self):
        return AdminClient(client_config(self.bootstrap()))

    def wait_brokers(self, timeout_s=60):
        """Every node listed as a broker (registered and unfenced), as a new test expects."""
        admin = self.admin()
        wait_for(lambda: len(admin.list_topics(timeout=10).brokers) == 3,
                 timeout_s=timeout_s, what="three brokers listed")

    def create_topic(self, topic, timeout_s=60):
        self.wait_brokers()
        admin = self.admin()

        # A node a previous test cut off or restarted is listed before the controller has
        # unfenced it at its next heartbeat; until then an RF 3 CreateTopics is refused
        # with INVALID_REPLICATION_FACTOR, as Kafka refuses it. Wait for that, as a
        # client would, instead of failing on the timing.
        def created():
            futures = admin.create_topics([NewTopic(topic, 1, 3,
                                                    config={"min.insync.replicas": "2"})])
            try:
                futures[topic].result(30)
                return True
            except KafkaException as error:
                if error.args[0].code() != KafkaError.INVALID_REPLICATION_FACTOR:
                    raise
                return False

        wait_for(created, timeout_s=timeout_s, what=f"{topic} created with RF 3")
        self.wait_isr_full(topic)
        return admin

    def wait_isr_full(self, topic, timeout_s=60):
        """Every node reports the same leader and leader epoch for partition 0 and a full
        ISR. Asked node by node: a node just reconnected after a cut still serves its stale
        image for a moment (it led, with the ISR it could not shrink), as a Kafka broker
        behind the metadata log does, and a client routed to it would see its old high
        watermark."""
        def views():
            seen = set()
            for port in self.ports:
                with Connection("localhost", port) as conn:
                    partition = metadata_v12(conn, [topic])["topics"][topic]["partitions"][0]
                seen.add((partition["leader"], partition["leader_epoch"],
                          tuple(sorted(partition["isr"]))))
            return seen

        def agreed():
            seen = views()
            return len(seen) == 1 and next(iter(seen))[2] == (1, 2, 3)

        wait_for(agreed, timeout_s=timeout_s, what=f"every node seeing a full ISR for {topic}")

    def leader(self, topic):
        """The service leading partition 0 of topic."""
        return self.SERVICES[partition_state(self.admin(), topic)[0] - 1]


@pytest.fixture(scope="module")
def cluster(image, request):
    """compose.yaml on free host ports, for this module's three-node tests."""
    ports = [free_port() for _ in range(3)]
    env = {f"GRACCHUS_PORT_{index + 1}": str(port) for index, port in enumerate(ports)}
    with compose_up(CLUSTER_FILE, **env) as project:
        failed_before = request.session.testsfailed
        cluster = Cluster(project, ports)
        log.info("up to all healthy: %.1f s", wait_healthy(*cluster.containers.values()))
        yield cluster
        if request.session.testsfailed > failed_before:
            log.error("compose logs of %s:\n%s", project.name, project.logs())


def test_three_nodes_kcat_round_trip(cluster):
    """kcat from the host: produce through one node's port, read through another's."""
    if not kcat_available():
        pytest.skip("kcat is not installed (scripts/test installs it)")
    topic = "docker-kcat"
    cluster.create_topic(topic)
    lines = [f"line-{index}" for index in range(20)]
    first, second = cluster.ports[0], cluster.ports[1]
    kcat(SimpleNamespace(bootstrap=f"localhost:{first}"), "-P", "-t", topic, "-p", "0",
         "-X", "acks=all", input_text="\n".join(lines) + "\n")
    result = kcat(SimpleNamespace(bootstrap=f"localhost:{second}"), "-C", "-t", topic,
                  "-p", "0", "-o", "beginning", "-e", "-q")
    assert result.stdout.split() == lines
    assert [value for value, _ in read_partition(cluster.bootstrap(), topic)] == lines


def test_three_nodes_console_tools(cluster):
    """docker exec on one node: through the compose network's listener the tools get
    every node's address on that network (kafka-N:9092), as they would from Kafka."""
    container = cluster.containers["kafka-2"]
    bootstrap = ["--bootstrap-server", "localhost:9092"]
    run("docker", "exec", container, "kafka-topics", *bootstrap, "--create",
        "--topic", "docker-tools", "--partitions", "3", "--replication-factor", "3")
    cluster.wait_isr_full("docker-tools")
    described = run("docker", "exec", container, "kafka-topics", *bootstrap, "--describe",
                    "--topic", "docker-tools").stdout
    assert "ReplicationFactor: 3" in described and described.count("Isr: ") == 3, described
    lines = [f"key-{index}:value-{index}" for index in range(30)]
    run("docker", "exec", "-i", container, "kafka-console-producer", *bootstrap,
        "--topic", "docker-tools", "--property", "parse.key=true",
        "--property", "key.separator=:", input_text="\n".join(lines) + "\n")
    consumed = run("docker", "exec", cluster.containers["kafka-3"], "kafka-console-consumer",
                   *bootstrap, "--topic", "docker-tools", "--from-beginning",
                   "--max-messages", "30", "--timeout-ms", "20000")
    assert sorted(consumed.stdout.split()) == sorted(line.split(":")[1] for line in lines)


def test_three_nodes_survive_a_killed_leader_and_it_rejoins(cluster):
    topic = "docker-kill"
    cluster.create_topic(topic)
    victim = cluster.leader(topic)

    stream = Stream(cluster.bootstrap(), topic, 3000).start()
    stream.wait_acknowledged(500)
    run("docker", "kill", cluster.containers[victim])
    log.info("killed %s, the leader, after %d records", victim, stream.sent)
    acknowledged_at_kill = len(stream.acknowledged)
    survivors = cluster.bootstrap(victim)
    stream.finish_and_check(survivors)
    assert len(stream.acknowledged) > acknowledged_at_kill
    if kcat_available():
        result = kcat(SimpleNamespace(bootstrap=survivors), "-C", "-t", topic, "-p", "0",
                      "-o", "beginning", "-e", "-q")
        assert result.stdout.split() == stream.values

    run("docker", "start", cluster.containers[victim])
    wait_healthy(cluster.containers[victim])
    cluster.wait_isr_full(topic)


def test_three_nodes_serve_with_the_leader_cut_off(cluster):
    """docker network disconnect of the leader: the others fence it and take over; after
    the reconnect it catches up (truncating what it alone had) and rejoins the ISR."""
    topic = "docker-partition"
    cluster.create_topic(topic)
    victim = cluster.leader(topic)

    stream = Stream(cluster.bootstrap(), topic, 2500).start()
    stream.wait_acknowledged(300)
    run("docker", "network", "disconnect", cluster.network, cluster.containers[victim])
    log.info("cut %s, the leader, off after %d records", victim, stream.sent)
    try:
        stream.finish_and_check(cluster.bootstrap(victim))
    finally:
        # The service name is a network alias compose gave the container: give it back.
        run("docker", "network", "connect", "--alias", victim, cluster.network,
            cluster.containers[victim])
    wait_healthy(cluster.containers[victim])
    cluster.wait_isr_full(topic)
    assert [value for value, _ in read_partition(cluster.bootstrap(), topic)] == stream.values


def test_three_nodes_restarted_one_by_one_under_load(cluster):
    """`docker-compose restart` of each node in turn (SIGTERM: controlled shutdown, exit 0)
    while an idempotent acks=all stream runs: nothing acknowledged is lost."""
    topic = "docker-rolling"
    cluster.create_topic(topic)
    stream = Stream(cluster.bootstrap(), topic, 100000).start()
    for service in Cluster.SERVICES:
        stream.wait_acknowledged(len(stream.acknowledged) + 200)
        cluster.project.compose("restart", "-t", "30", service)
        wait_healthy(cluster.containers[service])
        cluster.wait_isr_full(topic)
        log.info("restarted %s at %d records", service, stream.sent)
    stream.finish_and_check(cluster.bootstrap(), stop=True)
    for service in Cluster.SERVICES:
        output = run("docker", "logs", cluster.containers[service])
        assert "stopped cleanly" in output.stdout + output.stderr, service
