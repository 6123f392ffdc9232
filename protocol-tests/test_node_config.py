"""Node configuration Kafka's way: `random-uuid`, `format`, CLUSTER_ID and the official
images' environment names, through the real binary and real clients.

A cluster id is Kafka's: 16 random bytes in URL-safe base64 without padding (22 chars).
`gracchus format -t <id>` writes meta.properties like `kafka-storage format`; CLUSTER_ID
in the environment formats an empty log directory at first start, as the official images
do, and a node whose directory belongs to another cluster refuses to start.
"""

import os
import re
import subprocess
import uuid

import pytest

import clients
from clients import die_with_parent
from conftest import HOST, Broker, broker_binary, free_port

CLUSTER_ID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{22}$")
RUN_TIMEOUT_S = 30


def run(args, env=None, cwd=None):
    """Runs the binary to completion (bounded); returns the CompletedProcess."""
    full_env = dict(os.environ, NO_COLOR="1")
    full_env.update(env or {})
    return subprocess.run([broker_binary()] + list(args), capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=RUN_TIMEOUT_S,
                          stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)


def random_uuid():
    result = run(["random-uuid"])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def override_args(overrides):
    args = []
    for key, value in overrides.items():
        args += ["--override", f"{key}={value}"]
    return args


def format_dir(broker, cluster_id, *extra):
    return run(["format", "-t", cluster_id, *extra, *override_args(broker.overrides)],
               cwd=broker.data_dir)


def start_expecting_failure(broker):
    """Starts the broker's command and expects it to exit non-zero on its own."""
    try:
        result = run(broker.command()[1:], env=broker.env, cwd=broker.data_dir)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{broker.name} kept running; expected it to refuse to start")
    assert result.returncode != 0, f"{broker.name} exited 0\n{result.stderr}"
    return result.stderr


def described_cluster_id(broker):
    admin = clients.kp_admin(broker)
    try:
        return admin.describe_cluster()["cluster_id"]
    finally:
        admin.close()


def stored_properties(broker):
    with open(os.path.join(broker.data_dir, "meta.properties")) as file:
        lines = [line.strip() for line in file if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def new_broker(data_root):
    """Factory: new_broker(prefix, overrides=None, env=None) -> a Broker not yet started.
    Every one it made is stopped (SIGTERM, else SIGKILL) at teardown, by PID."""
    made = []

    def factory(prefix, overrides=None, env=None):
        broker = Broker(f"{prefix}-{uuid.uuid4().hex[:8]}", data_root, overrides, env)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        if broker.is_running():
            try:
                broker.stop()
            except BaseException:
                broker.kill()


def test_random_uuid_prints_kafka_shaped_distinct_ids():
    ids = [random_uuid() for _ in range(5)]
    for cluster_id in ids:
        assert CLUSTER_ID_SHAPE.match(cluster_id), cluster_id
    assert len(set(ids)) == len(ids)
    result = run(["random-uuid", "extra"])
    assert result.returncode != 0


def test_help_prints_the_usage_and_a_bad_argument_gets_it_without_a_backtrace():
    result = run(["--help"])
    assert result.returncode == 0
    assert "Usage:" in result.stdout
    for command in ("--config FILE", "format -t CLUSTER_ID", "random-uuid", "kafka-topics"):
        assert command in result.stdout, command
    result = run(["--no-such-flag"], env={"RUST_BACKTRACE": "1"})
    assert result.returncode == 1
    assert "unknown argument --no-such-flag" in result.stderr
    assert "Usage:" in result.stderr
    assert "backtrace" not in result.stderr.lower(), result.stderr


def test_format_then_start_serves_the_formatted_cluster_id(new_broker, topic):
    cluster_id = random_uuid()
    broker = new_broker("formatted")
    result = format_dir(broker, cluster_id)
    assert result.returncode == 0, result.stderr
    assert cluster_id in result.stdout
    properties = stored_properties(broker)
    assert properties["version"] == "1"
    assert properties["cluster.id"] == cluster_id
    assert properties["node.id"] == "1"
    assert CLUSTER_ID_SHAPE.match(properties["directory.id"])

    broker.start()
    assert described_cluster_id(broker) == cluster_id
    metadata = clients.admin(broker).list_topics(timeout=10)
    assert metadata.cluster_id == cluster_id
    broker.restart()
    assert described_cluster_id(broker) == cluster_id


def test_format_twice_refuses_unless_ignore_formatted(new_broker):
    cluster_id = random_uuid()
    broker = new_broker("format-twice")
    assert format_dir(broker, cluster_id).returncode == 0

    again = format_dir(broker, cluster_id)
    assert again.returncode == 1
    assert "is already formatted. Use --ignore-formatted" in again.stderr
    assert broker.data_dir in again.stderr

    for flag in ("-g", "--ignore-formatted"):
        ignored = format_dir(broker, cluster_id, flag)
        assert ignored.returncode == 0, ignored.stderr
    # --ignore-formatted never hides a directory that belongs to another cluster.
    other = random_uuid()
    mismatch = format_dir(broker, other, "-g")
    assert mismatch.returncode == 1
    assert cluster_id in mismatch.stderr and other in mismatch.stderr
    assert stored_properties(broker)["cluster.id"] == cluster_id

    bad = run(["format", "--cluster-id", "not-a-uuid",
               *override_args({"log.dirs": broker.data_dir + "-other"})])
    assert bad.returncode == 1
    assert "22 characters" in bad.stderr
    assert not os.path.exists(broker.data_dir + "-other")


def test_cluster_id_env_formats_first_start_and_refuses_another_later(new_broker):
    cluster_id = random_uuid()
    broker = new_broker("cluster-id-env", env={"CLUSTER_ID": cluster_id})
    broker.start()
    assert described_cluster_id(broker) == cluster_id
    assert stored_properties(broker)["cluster.id"] == cluster_id
    assert broker.stop() == 0

    other = random_uuid()
    broker.env["CLUSTER_ID"] = other
    message = start_expecting_failure(broker)
    assert cluster_id in message and other in message, message
    assert stored_properties(broker)["cluster.id"] == cluster_id

    del broker.env["CLUSTER_ID"]
    broker.start()
    assert described_cluster_id(broker) == cluster_id


def test_an_unformatted_member_of_a_larger_quorum_refuses_to_start(new_broker):
    controller_port = free_port()
    broker = new_broker("unformatted")
    broker.overrides.update({
        "listeners": f"PLAINTEXT://{HOST}:{broker.port},CONTROLLER://{HOST}:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "controller.quorum.voters":
            f"1@{HOST}:{controller_port},2@{HOST}:{free_port()},3@{HOST}:{free_port()}",
    })
    message = start_expecting_failure(broker)
    assert "is not formatted" in message and "CLUSTER_ID" in message, message
    assert not os.path.exists(os.path.join(broker.data_dir, "meta.properties"))


def test_unsupported_security_protocols_and_bad_ids_are_refused_at_start(new_broker):
    broker = new_broker("ssl")
    broker.overrides["listeners"] = f"SSL://{HOST}:{broker.port}"
    assert "security protocol SSL is not supported yet" in start_expecting_failure(broker)

    broker = new_broker("bad-env-id", env={"CLUSTER_ID": "too-short"})
    message = start_expecting_failure(broker)
    assert "CLUSTER_ID" in message and "too-short" in message, message


def test_official_image_environment_names_configure_a_working_node(new_broker, topic):
    cluster_id = random_uuid()
    broker = new_broker("official-env")
    controller_port = free_port()
    # Only the environment configures this node: drop the harness's listener and log dir.
    del broker.overrides["listeners"]
    del broker.overrides["log.dirs"]
    broker.env.update({
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS":
            f"PLAINTEXT://{HOST}:{broker.port},CONTROLLER://{HOST}:{controller_port}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://localhost:{broker.port}",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@{HOST}:{controller_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_LOG_DIRS": broker.data_dir,
        "CLUSTER_ID": cluster_id,
    })
    broker.start()

    metadata = clients.admin(broker).list_topics(timeout=10)
    assert metadata.cluster_id == cluster_id
    assert [(b.id, b.host, b.port) for b in metadata.brokers.values()] == \
        [(1, "localhost", broker.port)], "the advertised listener is what clients see"

    clients.create_topic(broker, topic, partitions=1)
    records = [{"key": f"k{i}".encode(), "value": f"v{i}".encode()} for i in range(20)]
    clients.produce_ok(broker, topic, records)
    messages = clients.consume(broker, topic, 0, 0, len(records))
    assert [m.value() for m in messages] == [r["value"] for r in records]
    assert stored_properties(broker)["cluster.id"] == cluster_id
