"""The command-line tools inside the gracchus binary (issue 9): `gracchus healthcheck` and
Kafka's console tools by name (kafka-topics, kafka-console-producer,
kafka-console-consumer), run through symlinks as the image ships them.

Checks content, not just exit codes: topic create/list/describe/alter/delete output in
Kafka 4's format, lines produced then consumed back (values, keys, order per partition),
--max-messages, --partition/--offset, --group commits, health check exit codes, and
cross-checks with confluent-kafka in both directions (including the murmur2 partition of
keyed records). A 3-node cluster checks that produce and fetch go to each leader.
"""

import os
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import TopicPartition

import clients
import cluster
from conftest import broker_binary

TOOL_TIMEOUT_S = 60
TOOLS = [
    "kafka-topics",
    "kafka-topics.sh",
    "kafka-console-producer",
    "kafka-console-producer.sh",
    "kafka-console-consumer",
    "kafka-console-consumer.sh",
]


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    """A bin directory of symlinks to the binary, named as the image names them."""
    directory = tmp_path_factory.mktemp("cli-bin")
    binary = os.path.abspath(broker_binary())
    for name in TOOLS:
        os.symlink(binary, directory / name)
    return directory


def run(tools, name, *args, input_text=None, timeout_s=TOOL_TIMEOUT_S, env=None):
    """Runs tool `name` (a symlink, or the binary itself for "gracchus")."""
    program = os.path.abspath(broker_binary()) if name == "gracchus" else str(tools / name)
    started = time.monotonic()
    completed = subprocess.run(
        [program, *args], input=input_text, capture_output=True, text=True,
        timeout=timeout_s, env=dict(os.environ, **(env or {})))
    completed.elapsed_s = time.monotonic() - started
    return completed


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def topics(tools, broker, *args):
    return run(tools, "kafka-topics.sh", "--bootstrap-server", broker.bootstrap, *args)


def create(tools, broker, name, partitions=1, *extra):
    result = topics(tools, broker, "--create", "--topic", name,
                    "--partitions", str(partitions), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(f"Created topic {name}.")
    return name


def produce_lines(tools, bootstrap, topic, lines, *extra):
    result = run(tools, "kafka-console-producer", "--bootstrap-server", bootstrap,
                 "--topic", topic, *extra, input_text="".join(f"{l}\n" for l in lines))
    assert result.returncode == 0, result.stderr
    return result


def consume_lines(tools, bootstrap, topic, *extra):
    result = run(tools, "kafka-console-consumer.sh", "--bootstrap-server", bootstrap,
                 "--topic", topic, *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), result.stderr


# ---- health check -------------------------------------------------------------------


def test_healthcheck_live_broker_exits_0(tools, broker):
    result = run(tools, "gracchus", "healthcheck", "--bootstrap-server", broker.bootstrap)
    assert result.returncode == 0, result.stderr
    assert "ApiVersions" in result.stdout


def test_healthcheck_reads_the_node_configuration(tools, broker):
    # The same listeners setting the broker would read, bound to every interface: the
    # check connects to 127.0.0.1 on that port; from --override and from KAFKA_LISTENERS.
    listeners = f"PLAINTEXT://0.0.0.0:{broker.port}"
    by_flag = run(tools, "gracchus", "healthcheck", "--override", f"listeners={listeners}")
    assert by_flag.returncode == 0, by_flag.stderr
    assert f"127.0.0.1:{broker.port}" in by_flag.stdout
    by_env = run(tools, "gracchus", "healthcheck",
                 env={"KAFKA_LISTENERS": f"PLAINTEXT://:{broker.port}"})
    assert by_env.returncode == 0, by_env.stderr


def test_healthcheck_closed_port_exits_1(tools):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run(tools, "gracchus", "healthcheck", "--bootstrap-server", f"127.0.0.1:{port}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0], result.stderr


def test_healthcheck_silent_peer_times_out_quickly(tools):
    # A listener that accepts (the kernel completes the handshake) but never answers.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        result = run(tools, "gracchus", "healthcheck", "--bootstrap-server",
                     f"127.0.0.1:{port}", "--timeout-ms", "300")
    assert result.returncode == 1
    assert "within" in result.stderr, result.stderr
    assert result.elapsed_s < 3.0, f"took {result.elapsed_s:.1f} s for a 300 ms timeout"


def fake_api_versions_broker(sock, apis):
    """Answers ApiVersions as a broker whose highest ApiVersions version is 2: a v3
    request gets UNSUPPORTED_VERSION in the v0 layout (KIP-511), a v0-2 request the
    `apis` list [(key, min, max)]. Records the versions it was asked at."""
    asked = []

    def encode(error, entries, throttle):
        body = struct.pack(">hi", error, len(entries))
        body += b"".join(struct.pack(">hhh", *entry) for entry in entries)
        return body + (struct.pack(">i", 0) if throttle else b"")

    def serve():
        connection, _ = sock.accept()
        with connection:
            for _ in range(2):
                header = connection.recv(4)
                if len(header) < 4:
                    return
                size = struct.unpack(">i", header)[0]
                frame = b""
                while len(frame) < size:
                    frame += connection.recv(size - len(frame))
                _key, version, correlation = struct.unpack(">hhi", frame[:8])
                asked.append(version)
                if version > 2:
                    body = encode(35, [(18, 0, 2)], throttle=False)
                else:
                    body = encode(0, apis, throttle=version >= 1)
                reply = struct.pack(">i", correlation) + body
                connection.sendall(struct.pack(">i", len(reply)) + reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return asked, thread


@pytest.mark.parametrize("complete", [True, False])
def test_healthcheck_falls_back_to_the_brokers_api_versions_version(tools, complete):
    apis = [(0, 3, 9), (1, 4, 12), (3, 0, 9), (18, 0, 2)]
    if not complete:
        apis = [api for api in apis if api[0] != 1]  # no Fetch
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        asked, thread = fake_api_versions_broker(sock, apis)
        result = run(tools, "gracchus", "healthcheck", "--bootstrap-server",
                     f"127.0.0.1:{sock.getsockname()[1]}", "--timeout-ms", "3000")
        thread.join(5)
    assert asked == [3, 2]
    if complete:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert "does not offer Fetch" in result.stderr, result.stderr


# ---- kafka-topics -------------------------------------------------------------------


def test_topics_create_list_describe_alter_delete(tools, broker):
    name = unique("cli-topic")
    create(tools, broker, name, 3, "--replication-factor", "1",
           "--config", "cleanup.policy=compact", "--config", "retention.ms=3600000")

    again = topics(tools, broker, "--create", "--topic", name)
    assert again.returncode == 1
    assert again.stdout.startswith("Error while executing topic command : "), again.stdout
    assert again.stdout == (f"Error while executing topic command : Topic '{name}' already "
                            "exists.\n")
    quiet = topics(tools, broker, "--create", "--topic", name, "--if-not-exists")
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stdout

    listed = topics(tools, broker, "--list")
    assert listed.returncode == 0
    assert name in listed.stdout.splitlines()
    assert listed.stdout.splitlines() == sorted(listed.stdout.splitlines())

    described = topics(tools, broker, "--describe", "--topic", name)
    assert described.returncode == 0, described.stdout + described.stderr
    lines = described.stdout.splitlines()
    assert len(lines) == 4, lines
    head = lines[0].split("\t")
    assert head[0] == f"Topic: {name}"
    assert head[1].startswith("TopicId: ") and len(head[1]) == len("TopicId: ") + 22
    assert head[2:4] == ["PartitionCount: 3", "ReplicationFactor: 1"]
    assert head[4].startswith("Configs: ")
    configs = dict(item.split("=", 1) for item in head[4][len("Configs: "):].split(","))
    assert configs["cleanup.policy"] == "compact"
    assert configs["retention.ms"] == "3600000"
    for partition, line in enumerate(lines[1:]):
        fields = line.split("\t")
        assert fields[0] == ""
        assert fields[1:] == [f"Topic: {name}", f"Partition: {partition}", "Leader: 1",
                              "Replicas: 1", "Isr: 1", fields[6], fields[7]]
        assert fields[6].startswith("Elr: ") and fields[7].startswith("LastKnownElr: ")

    altered = topics(tools, broker, "--alter", "--topic", name, "--partitions", "5")
    assert altered.returncode == 0, altered.stdout + altered.stderr
    clients.wait_for(
        lambda: "PartitionCount: 5" in topics(tools, broker, "--describe", "--topic",
                                              name).stdout,
        what="5 partitions")
    shrink = topics(tools, broker, "--alter", "--topic", name, "--partitions", "2")
    assert shrink.returncode == 1
    assert shrink.stdout.startswith("Error while executing topic command : ")

    deleted = topics(tools, broker, "--delete", "--topic", name)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    clients.wait_for(lambda: name not in topics(tools, broker, "--list").stdout.splitlines(),
                     what="topic gone from --list")
    missing = topics(tools, broker, "--describe", "--topic", name)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"Topic '{name}' does not exist as expected"
    assert topics(tools, broker, "--delete", "--topic", name, "--if-exists").returncode == 0


def test_topics_refuses_bad_arguments(tools, broker):
    neither = topics(tools, broker, "--topic", "x")
    assert neither.returncode == 1 and "exactly one action" in neither.stderr
    unknown = topics(tools, broker, "--list", "--frobnicate")
    assert unknown.returncode == 1 and "frobnicate is not a recognized option" in unknown.stderr
    zero = topics(tools, broker, "--create", "--topic", unique("z"), "--partitions", "0")
    assert zero.returncode == 1 and "greater than 0" in zero.stderr


# ---- console producer and consumer --------------------------------------------------


def test_produce_then_consume_values_in_order(tools, broker):
    name = create(tools, broker, unique("cli-lines"), 1)
    lines = [f"line-{index}" for index in range(200)] + ["", "with\ttab", "ünïcode"]
    produce_lines(tools, broker.bootstrap, name, lines)
    printed, stderr = consume_lines(tools, broker.bootstrap, name, "--from-beginning",
                                    "--max-messages", str(len(lines)))
    assert printed == lines
    assert stderr.strip().splitlines()[-1] == f"Processed a total of {len(lines)} messages"


def test_keys_print_and_partition_like_kafka(tools, broker):
    name = create(tools, broker, unique("cli-keys"), 4)
    keys = [f"key-{index % 10}" for index in range(100)]
    lines = [f"{key}:value-{index}" for index, key in enumerate(keys)]
    produce_lines(tools, broker.bootstrap, name, lines,
                  "--property", "parse.key=true", "--property", "key.separator=:")
    printed, _ = consume_lines(
        tools, broker.bootstrap, name, "--from-beginning", "--max-messages", "100",
        "--property", "print.key=true", "--property", "key.separator=:",
        "--property", "print.partition=true")
    assert len(printed) == 100
    by_partition = {}
    partition_of_key = {}
    for line in printed:
        partition_field, key, value = line.split(":", 1)[1].split(":", 2)
        partition = int(partition_field)
        partition_of_key.setdefault(key, set()).add(partition)
        by_partition.setdefault(partition, []).append(f"{key}:{value}")
    assert sorted(sum(by_partition.values(), [])) == sorted(lines)
    for records in by_partition.values():  # order within each partition is line order
        assert records == [line for line in lines if line in records]
    assert all(len(found) == 1 for found in partition_of_key.values())

    # librdkafka's murmur2 partitioner is Kafka's default one: same key, same partition.
    twin = create(tools, broker, unique("cli-keys-rdkafka"), 4)
    messages = clients.produce_ok(broker, twin, [{"key": k, "value": b"v"} for k in keys],
                                  partitioner="murmur2_random")
    for key, message in zip(keys, messages):
        assert partition_of_key[key] == {message.partition()}, key


def test_max_messages_partition_and_offset(tools, broker):
    name = create(tools, broker, unique("cli-offsets"), 1)
    produce_lines(tools, broker.bootstrap, name, [f"m{index}" for index in range(10)])
    three, stderr = consume_lines(tools, broker.bootstrap, name, "--from-beginning",
                                  "--max-messages", "3")
    assert three == ["m0", "m1", "m2"]
    assert "Processed a total of 3 messages" in stderr
    at_seven, _ = consume_lines(tools, broker.bootstrap, name, "--partition", "0",
                                "--offset", "7", "--timeout-ms", "1500")
    assert at_seven == ["m7", "m8", "m9"]
    earliest, _ = consume_lines(tools, broker.bootstrap, name, "--partition", "0",
                                "--offset", "earliest", "--max-messages", "1")
    assert earliest == ["m0"]
    latest, stderr = consume_lines(tools, broker.bootstrap, name, "--timeout-ms", "1000")
    assert latest == []
    assert "Processed a total of 0 messages" in stderr


def test_group_commits_and_resumes(tools, broker):
    name = create(tools, broker, unique("cli-group"), 2)
    group = unique("cli-group")
    lines = [f"k{index % 5}:v{index}" for index in range(20)]
    produce_lines(tools, broker.bootstrap, name, lines,
                  "--property", "parse.key=true", "--property", "key.separator=:")
    first, _ = consume_lines(tools, broker.bootstrap, name, "--group", group,
                             "--from-beginning", "--max-messages", "8")
    rest, _ = consume_lines(tools, broker.bootstrap, name, "--group", group,
                            "--from-beginning", "--timeout-ms", "2000")
    assert len(first) == 8
    assert sorted(first + rest) == sorted(line.split(":")[1] for line in lines)

    reader = clients.consumer(broker, **{"group.id": group})
    try:
        committed = reader.committed([TopicPartition(name, 0), TopicPartition(name, 1)],
                                     timeout=10)
    finally:
        reader.close()
    high = sum(clients.watermarks(broker, name, p)[1] for p in (0, 1))
    assert sum(tp.offset for tp in committed) == high == 20


def test_console_producer_records_read_by_confluent(tools, broker):
    name = create(tools, broker, unique("cli-to-rdkafka"), 1)
    lines = [f"from-cli-{index}" for index in range(25)]
    produce_lines(tools, broker.bootstrap, name, ["a:" + line for line in lines],
                  "--property", "parse.key=true", "--property", "key.separator=:",
                  "--producer-property", "acks=1")
    messages = clients.consume(broker, name, 0, 0, len(lines))
    assert [m.value().decode() for m in messages] == lines
    assert {m.key() for m in messages} == {b"a"}
    assert [m.offset() for m in messages] == list(range(len(lines)))


def test_confluent_records_printed_by_console_consumer(tools, broker):
    name = create(tools, broker, unique("rdkafka-to-cli"), 1)
    records = [{"key": f"k{index}".encode(), "value": f"from-rdkafka-{index}".encode()}
               for index in range(30)]
    clients.produce_ok(broker, name, records, **{"compression.type": "lz4"})
    printed, _ = consume_lines(tools, broker.bootstrap, name, "--from-beginning",
                               "--max-messages", "30", "--property", "print.key=true")
    assert printed == [f"k{index}\tfrom-rdkafka-{index}" for index in range(30)]


def test_producer_fails_loudly(tools, broker):
    name = create(tools, broker, unique("cli-fail"), 1)
    no_separator = run(tools, "kafka-console-producer", "--bootstrap-server",
                       broker.bootstrap, "--topic", name, "--property", "parse.key=true",
                       input_text="no separator here\n")
    assert no_separator.returncode == 1
    assert "No key separator found on line number 1" in no_separator.stderr
    internal = run(tools, "kafka-console-producer", "--bootstrap-server", broker.bootstrap,
                   "--topic", "__consumer_offsets", input_text="x\n")
    assert internal.returncode == 1
    assert "Error when sending message" in internal.stderr, internal.stderr


def read_lines(stream, count, timeout_s=30):
    """`count` lines from a child's stdout pipe (raw reads: a buffered readline could
    hold lines the selector no longer sees), failing after timeout_s."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    data = b""
    deadline = time.monotonic() + timeout_s
    while data.count(b"\n") < count:
        assert time.monotonic() < deadline, f"only {data!r} after {timeout_s} s"
        if selector.select(timeout=0.5):
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, f"output ended after {data!r}"
            data += chunk
    return data.decode().splitlines()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_consumer_stops_on_signal_counts_and_commits(tools, broker, stop):
    name = create(tools, broker, unique("cli-signal"), 1)
    group = unique("cli-signal")
    produce_lines(tools, broker.bootstrap, name, [f"s{index}" for index in range(5)])
    process = subprocess.Popen(
        [str(tools / "kafka-console-consumer"), "--bootstrap-server", broker.bootstrap,
         "--topic", name, "--group", group, "--from-beginning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert read_lines(process.stdout, 5) == [f"s{index}" for index in range(5)]
        process.send_signal(stop)
        _rest, stderr = process.communicate(timeout=10)
        stderr = stderr.decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert stderr.strip().splitlines()[-1] == "Processed a total of 5 messages"
    reader = clients.consumer(broker, **{"group.id": group})
    try:
        committed = reader.committed([TopicPartition(name, 0)], timeout=10)
    finally:
        reader.close()
    assert committed[0].offset == 5


def test_typed_line_is_sent_before_the_next_one_is_typed(tools, broker):
    name = create(tools, broker, unique("cli-typed"), 1)
    process = subprocess.Popen(
        [str(tools / "kafka-console-producer.sh"), "--bootstrap-server", broker.bootstrap,
         "--topic", name], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        process.stdin.write("first\n")
        process.stdin.flush()
        # stdin is still open: the line must already be at the broker.
        [message] = clients.consume(broker, name, 0, 0, 1, timeout_s=10)
        assert message.value() == b"first"
        process.stdin.write("second\n")
        process.stdin.close()
        assert process.wait(timeout=30) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert [m.value() for m in clients.consume(broker, name, 0, 0, 2)] == [b"first",
                                                                          b"second"]


# ---- three nodes: produce and fetch at each partition's leader ----------------------


@pytest.fixture(scope="module")
def three(data_root):
    nodes = cluster.Cluster(3, data_root, name=None)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


def test_three_nodes_route_to_leaders(tools, three):
    first, second, third = (three.node(i) for i in (1, 2, 3))

    class Bootstrap:  # what topics() needs of a broker
        bootstrap = first.bootstrap

    name = unique("cli-cluster")
    result = topics(tools, Bootstrap, "--create", "--topic", name, "--partitions", "6",
                    "--replication-factor", "3")
    assert result.returncode == 0, result.stdout + result.stderr

    def described():
        lines = topics(tools, Bootstrap, "--describe", "--topic", name).stdout.splitlines()
        rows = [{key: value.strip() for key, _, value in
                 (field.partition(":") for field in line.lstrip("\t").split("\t"))}
                for line in lines[1:]]
        ok = len(rows) == 6 and all(len(r["Isr"].split(",")) == 3 for r in rows)
        return rows if ok else None

    rows = clients.wait_for(described, what="6 partitions with full ISRs")
    leaders = {row["Leader"] for row in rows}
    assert all(sorted(row["Replicas"].split(",")) == ["1", "2", "3"] for row in rows)
    assert len(leaders) > 1, f"every partition led by one node: {rows}"

    lines = [f"key-{index}:value-{index}" for index in range(120)]
    produce_lines(tools, second.bootstrap, name, lines,
                  "--property", "parse.key=true", "--property", "key.separator=:")
    printed, _ = consume_lines(tools, third.bootstrap, name, "--from-beginning",
                               "--max-messages", "120", "--property", "print.key=true",
                               "--property", "key.separator=:")
    assert sorted(printed) == sorted(lines)
    healthy = [run(tools, "gracchus", "healthcheck", "--bootstrap-server", node.bootstrap)
               for node in (first, second, third)]
    assert [h.returncode for h in healthy] == [0, 0, 0]
