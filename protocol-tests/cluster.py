"""N-node cluster harness for the cluster tests (issue 7).

Each node is one `gracchus` process, configured the way Kafka's KRaft nodes are
(`node.id`, `process.roles=broker,controller`, a PLAINTEXT and a CONTROLLER listener,
`controller.quorum.voters`, its own `log.dirs`, `CLUSTER_ID` in the environment).

    cluster = Cluster(3, tmp_dir)          # picks ports, makes dirs; nothing runs yet
    cluster.start()                        # all nodes, then waits until the cluster formed
    cluster.node(2).bootstrap              # "127.0.0.1:port" of node 2's broker listener
    cluster.kill(cluster.active_controller())
    cluster.restart(1, wipe=True)
    cluster.wait_images_equal()
    cluster.close()                        # kills every process by PID, removes namespaces

Nodes are numbered from 1 (the node id). With `netns=True` every node runs in its own
network namespace (a veth pair per node into one bridge in the root namespace, addresses
10.<a>.<b>.<node id>/24, the bridge .254), so `isolate(i)` can cut node i off from every
other node and from the test (its veth is set down on the bridge side); `heal(i)` sets it
up again. Everything the harness created is removed by close(), which the fixture calls
even when a test fails, and at exit.

Wire helpers: Metadata v12 (topic ids, leader epochs), DescribeCluster v0, CreateTopics
v4, DeleteTopics v3, CreatePartitions v1 and FindCoordinator v1 are encoded here with the
primitives of rawkafka.py, because real clients route admin requests to the controller
they know, and the tests must choose the node a request goes to.

Processes are stopped by PID only. Each node's stdout/stderr go to <name>.stderr.log
beside its data dir; nodes are registered with conftest so a failing test's report
carries their tails, as for single brokers.
"""

import atexit
import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import clients
import conftest
import rawkafka
from clients import die_with_parent
from rawkafka import Connection, array, boolean, find_coordinator_v1, int8, int16, int32, string

log = logging.getLogger("gracchus.cluster")

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 60.0
# How long a cluster may take to form (every node lists every broker, a controller is
# named); $CLUSTER_FORM_TIMEOUT_S overrides it.
FORM_TIMEOUT_S = float(os.environ.get("CLUSTER_FORM_TIMEOUT_S", "60"))
STOP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.05

# Test defaults: shorter than Kafka's (9000 / 2000 ms) so fencing tests stay quick.
SESSION_TIMEOUT_MS = 3000
HEARTBEAT_INTERVAL_MS = 500

# Api keys and error codes the cluster helpers use (Kafka's numbers).
FIND_COORDINATOR = 10
CREATE_TOPICS = 19
DELETE_TOPICS = 20
CREATE_PARTITIONS = 37
DESCRIBE_CLUSTER = 60

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
TOPIC_ALREADY_EXISTS = 36
INVALID_REPLICA_ASSIGNMENT = 39
NOT_CONTROLLER = 41
UNKNOWN_TOPIC_ID = 100

ZERO_UUID = b"\x00" * 16

_ALL_CLUSTERS = []


# ---------------------------------------------------------------- cluster ids


def random_cluster_id():
    """A cluster id as Kafka's `kafka-storage random-uuid` prints it: 16 random bytes,
    base64url without padding (22 characters), never starting with '-' (Kafka redraws
    those so the id cannot be taken for a command-line flag)."""
    while True:
        raw = os.urandom(16)
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if raw != ZERO_UUID and not text.startswith("-"):
            return text


def uuid_text(raw):
    """A topic id as Kafka prints it (base64url, no padding); None for the zero UUID."""
    if raw == ZERO_UUID:
        return None
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# ---------------------------------------------------------------- flexible encoders


def compact_array(items, encode_item):
    if items is None:
        return rawkafka.uvarint(0)
    return rawkafka.uvarint(len(items) + 1) + b"".join(encode_item(i) for i in items)


def read_uuid(reader):
    return reader.take(16)


def read_int32_compact_array(reader):
    return reader.compact_array(lambda r: r.int32())


# ---------------------------------------------------------------- Metadata v12


def metadata_v12(conn, topics=None):
    """Metadata v12 (flexible; topic ids and leader epochs). topics=None: all topics.

    Returns dict(brokers={node_id: (host, port, rack)}, cluster_id, controller_id,
    topics={name: dict(error, id, internal, partitions={index: dict(error, leader,
    leader_epoch, replicas, isr, offline)})}).
    """
    def topic_request(name):
        return ZERO_UUID + rawkafka.compact_string(name) + rawkafka.EMPTY_TAGGED_FIELDS

    body = (compact_array(topics, topic_request) + boolean(False) + boolean(False)
            + rawkafka.EMPTY_TAGGED_FIELDS)
    reader = conn.request(rawkafka.METADATA, 12, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms

    def read_broker(r):
        node_id, host, port, rack = r.int32(), r.compact_string(), r.int32(), \
            r.compact_string()
        r.skip_tagged_fields()
        return node_id, (host, port, rack)

    def read_partition(r):
        error = r.int16()
        index = r.int32()
        partition = {"error": error, "leader": r.int32(), "leader_epoch": r.int32(),
                     "replicas": read_int32_compact_array(r),
                     "isr": read_int32_compact_array(r),
                     "offline": read_int32_compact_array(r)}
        r.skip_tagged_fields()
        return index, partition

    def read_topic(r):
        error = r.int16()
        name = r.compact_string()
        topic_id = uuid_text(read_uuid(r))
        internal = r.boolean()
        partitions = dict(r.compact_array(read_partition) or [])
        r.int32()  # topic_authorized_operations
        r.skip_tagged_fields()
        return name, {"error": error, "id": topic_id, "internal": internal,
                      "partitions": partitions}

    brokers = dict(reader.compact_array(read_broker) or [])
    cluster_id = reader.compact_string()
    controller_id = reader.int32()
    topics_out = dict(reader.compact_array(read_topic) or [])
    reader.skip_tagged_fields()
    reader.expect_end()
    return {"brokers": brokers, "cluster_id": cluster_id, "controller_id": controller_id,
            "topics": topics_out}


# ---------------------------------------------------------------- DescribeCluster v0


def describe_cluster_v0(conn):
    """DescribeCluster v0 (flexible). Returns dict(error, error_message, cluster_id,
    controller_id, brokers={node_id: (host, port, rack)})."""
    body = boolean(False) + rawkafka.EMPTY_TAGGED_FIELDS
    reader = conn.request(DESCRIBE_CLUSTER, 0, body, flexible_request=True,
                          flexible_response=True)
    reader.int32()  # throttle_time_ms
    error = reader.int16()
    error_message = reader.compact_string()
    cluster_id = reader.compact_string()
    controller_id = reader.int32()

    def read_broker(r):
        node_id, host, port, rack = r.int32(), r.compact_string(), r.int32(), \
            r.compact_string()
        r.skip_tagged_fields()
        return node_id, (host, port, rack)

    brokers = dict(reader.compact_array(read_broker) or [])
    reader.int32()  # cluster_authorized_operations
    reader.skip_tagged_fields()
    reader.expect_end()
    return {"error": error, "error_message": error_message, "cluster_id": cluster_id,
            "controller_id": controller_id, "brokers": brokers}


# ---------------------------------------------------------------- topic admin


def create_topics_v4(conn, topics, timeout_ms=10000, validate_only=False):
    """CreateTopics v4. topics: [dict(name, partitions=-1, replication_factor=-1,
    assignments={partition: [broker ids]}, configs={name: value})].
    Returns {name: (error_code, error_message)}."""
    def encode_assignment(item):
        partition, brokers = item
        return int32(partition) + array(brokers, int32)

    def encode_config(item):
        return string(item[0]) + string(item[1])

    def encode_topic(topic):
        assignments = sorted((topic.get("assignments") or {}).items())
        return (string(topic["name"]) + int32(topic.get("partitions", -1))
                + int16(topic.get("replication_factor", -1))
                + array(assignments, encode_assignment)
                + array(sorted((topic.get("configs") or {}).items()), encode_config))

    body = array(topics, encode_topic) + int32(timeout_ms) + boolean(validate_only)
    reader = conn.request(CREATE_TOPICS, 4, body)
    reader.int32()  # throttle_time_ms
    results = reader.array(lambda r: (r.string(), (r.int16(), r.string())))
    reader.expect_end()
    return dict(results)


def delete_topics_v3(conn, names, timeout_ms=10000):
    """DeleteTopics v3. Returns {name: error_code}."""
    body = array(names, string) + int32(timeout_ms)
    reader = conn.request(DELETE_TOPICS, 3, body)
    reader.int32()  # throttle_time_ms
    results = reader.array(lambda r: (r.string(), r.int16()))
    reader.expect_end()
    return dict(results)


def create_partitions_v1(conn, counts, timeout_ms=10000, validate_only=False):
    """CreatePartitions v1. counts: {topic: new total count} (placement by the broker).
    Returns {name: (error_code, error_message)}."""
    def encode_topic(item):
        name, count = item
        return string(name) + int32(count) + int32(-1)  # assignments: null

    body = array(sorted(counts.items()), encode_topic) + int32(timeout_ms) \
        + boolean(validate_only)
    reader = conn.request(CREATE_PARTITIONS, 1, body)
    reader.int32()  # throttle_time_ms
    results = reader.array(lambda r: (r.string(), (r.int16(), r.string())))
    reader.expect_end()
    return dict(results)


# ---------------------------------------------------------------- image


def normalise_image(metadata, described):
    """The part of one node's view that must be equal on every node: cluster id, the
    registered live brokers (from both Metadata and DescribeCluster, which must agree),
    and every topic with its id and partitions (replicas, leader, leader epoch, ISR,
    offline replicas, error). Controller ids are left out: Metadata's is not the Raft
    leader in Kafka, and nodes learn a new leader at different moments."""
    topics = {}
    for name, topic in metadata["topics"].items():
        partitions = {}
        for index, partition in topic["partitions"].items():
            partitions[index] = {
                "error": partition["error"],
                "leader": partition["leader"],
                "leader_epoch": partition["leader_epoch"],
                "replicas": list(partition["replicas"] or []),
                "isr": sorted(partition["isr"] or []),
                "offline": sorted(partition["offline"] or []),
            }
        topics[name] = {"id": topic["id"], "error": topic["error"],
                        "internal": topic["internal"], "partitions": partitions}
    return {
        "cluster_id": metadata["cluster_id"],
        "described_cluster_id": described["cluster_id"],
        "brokers": dict(sorted(metadata["brokers"].items())),
        "described_brokers": dict(sorted(described["brokers"].items())),
        "topics": dict(sorted(topics.items())),
    }


def image_differences(images):
    """Human-readable differences between {node_id: image}; [] when all are equal."""
    if not images:
        return []
    node_ids = sorted(images)
    base_id = node_ids[0]
    base = images[base_id]
    out = []
    for node_id in node_ids[1:]:
        other = images[node_id]
        for key in ("cluster_id", "described_cluster_id", "brokers", "described_brokers"):
            if base[key] != other[key]:
                out.append(f"{key}: node {base_id} {base[key]!r} != node {node_id} "
                           f"{other[key]!r}")
        for name in sorted(set(base["topics"]) | set(other["topics"])):
            left, right = base["topics"].get(name), other["topics"].get(name)
            if left != right:
                out.append(f"topic {name}: node {base_id} {left!r} != node {node_id} "
                           f"{right!r}")
    for node_id in node_ids:
        image = images[node_id]
        if image["cluster_id"] != image["described_cluster_id"]:
            out.append(f"node {node_id}: Metadata cluster id {image['cluster_id']!r} != "
                       f"DescribeCluster's {image['described_cluster_id']!r}")
        if image["brokers"] != image["described_brokers"]:
            out.append(f"node {node_id}: Metadata brokers {image['brokers']!r} != "
                       f"DescribeCluster's {image['described_brokers']!r}")
    return out


# ---------------------------------------------------------------- network namespaces


def _run(command, check=True):
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: "
                           f"{result.stderr.strip()}")
    return result


class Network:
    """A bridge in the root namespace and one namespace per node, joined by veth pairs.

    Names carry a random tag (`kq<tag>...`, at most 15 characters) so parallel runs do
    not collide. Bridged traffic passes the root namespace's FORWARD chain when
    br_netfilter is loaded (Docker sets its policy to DROP), so an ACCEPT rule for the
    bridge is inserted and removed again by teardown().
    """

    def __init__(self, count):
        self.tag = uuid.uuid4().hex[:6]
        self.count = count
        # A /24 in 10.0.0.0/8 picked from the tag; the bridge is .254, node i is .i.
        seed = int(self.tag, 16)
        self.prefix = f"10.{200 + seed % 50}.{(seed >> 8) % 256}"
        self.bridge = f"kq{self.tag}b"
        self.forward_rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        self.created = []  # teardown steps, run in reverse
        self.isolated = set()

    def namespace(self, node_id):
        return f"kq{self.tag}n{node_id}"

    def host_link(self, node_id):
        return f"kq{self.tag}h{node_id}"

    def address(self, node_id):
        return f"{self.prefix}.{node_id}"

    def setup(self):
        """Creates everything; on any failure removes what was made and raises. First
        removes what earlier runs whose process died without cleaning up left behind."""
        sweep_dead_networks()
        os.makedirs(OWNERS_DIR, exist_ok=True)
        owner = os.path.join(OWNERS_DIR, self.tag)
        with open(owner, "w") as out:
            out.write(f"{os.getpid()} {self.count}\n")
        self.created.append(["rm", "-f", owner])
        try:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            self.created.append(["ip", "link", "del", self.bridge])
            _run(["ip", "addr", "add", f"{self.prefix}.254/24", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
            if _run(["iptables", "-I", *self.forward_rule[:1], "1", *self.forward_rule[1:]],
                    check=False).returncode == 0:
                self.created.append(["iptables", "-D", *self.forward_rule])
            for node_id in range(1, self.count + 1):
                self._add_node(node_id)
        except BaseException:
            self.teardown()
            raise

    def _add_node(self, node_id):
        namespace, host_link = self.namespace(node_id), self.host_link(node_id)
        peer = f"kq{self.tag}p{node_id}"
        _run(["ip", "netns", "add", namespace])
        self.created.append(["ip", "netns", "del", namespace])
        _run(["ip", "link", "add", host_link, "type", "veth", "peer", "name", peer])
        self.created.append(["ip", "link", "del", host_link])
        _run(["ip", "link", "set", peer, "netns", namespace])
        _run(["ip", "link", "set", host_link, "master", self.bridge])
        _run(["ip", "link", "set", host_link, "up"])
        inside = ["ip", "netns", "exec", namespace]
        _run(inside + ["ip", "link", "set", "lo", "up"])
        _run(inside + ["ip", "link", "set", peer, "name", "eth0"])
        _run(inside + ["ip", "addr", "add", f"{self.address(node_id)}/24", "dev", "eth0"])
        _run(inside + ["ip", "link", "set", "eth0", "up"])
        _run(inside + ["ip", "route", "add", "default", "via", f"{self.prefix}.254"])

    def isolate(self, node_id):
        """Cuts node_id off from every other node and from the root namespace."""
        _run(["ip", "link", "set", self.host_link(node_id), "down"])
        self.isolated.add(node_id)

    def heal(self, node_id):
        _run(["ip", "link", "set", self.host_link(node_id), "up"])
        self.isolated.discard(node_id)

    def exec_prefix(self, node_id):
        return ["ip", "netns", "exec", self.namespace(node_id)]

    def teardown(self):
        """Removes every namespace, link, bridge and rule made, newest first; never
        raises (each step is tried; failures are logged)."""
        while self.created:
            command = self.created.pop()
            result = _run(command, check=False)
            if result.returncode != 0:
                log.warning("teardown %s: %s", " ".join(command), result.stderr.strip())

    def leftovers(self):
        """Names of this network's namespaces and links that still exist."""
        namespaces = _run(["ip", "netns", "list"], check=False).stdout
        links = _run(["ip", "-o", "link", "show"], check=False).stdout
        rules = _run(["iptables", "-S", "FORWARD"], check=False).stdout
        found = [line.split()[0] for line in namespaces.splitlines()
                 if f"kq{self.tag}" in line]
        found += [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
                  if f"kq{self.tag}" in line]
        found += [line for line in rules.splitlines() if self.bridge in line]
        return found


# Each Network records "<pid> <node count>" in OWNERS_DIR/<tag> while it exists, so that a
# later run can remove the namespaces of a test process that was killed before teardown.
OWNERS_DIR = "/run/gracchus-cluster-tests"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_networks():
    """Tears down networks whose creating process is gone; returns their tags."""
    try:
        tags = os.listdir(OWNERS_DIR)
    except FileNotFoundError:
        return []
    swept = []
    for tag in tags:
        try:
            with open(os.path.join(OWNERS_DIR, tag)) as source:
                pid, count = (int(field) for field in source.read().split())
        except (OSError, ValueError):
            continue
        if _pid_alive(pid) or len(tag) != 6:
            continue
        stale = Network(count)
        stale.tag = tag
        stale.bridge = f"kq{tag}b"
        stale.forward_rule = ["FORWARD", "-i", stale.bridge, "-o", stale.bridge, "-j",
                              "ACCEPT"]
        stale.created = []
        for node_id in range(1, count + 1):
            stale.created += [["ip", "link", "del", stale.host_link(node_id)],
                              ["ip", "netns", "del", stale.namespace(node_id)]]
        stale.created += [["iptables", "-D", *stale.forward_rule],
                          ["ip", "link", "del", stale.bridge],
                          ["rm", "-f", os.path.join(OWNERS_DIR, tag)]]
        for command in stale.created:
            _run(command, check=False)  # quietly: parts may be gone already
        stale.created = []
        log.info("removed the network %s left by dead process %d", tag, pid)
        swept.append(tag)
    return swept


def namespaces_available():
    """(True, "") if this process can create a network namespace, else (False, reason)."""
    if shutil.which("ip") is None:
        return False, "the ip command (iproute2) is not installed"
    name = f"kqprobe{uuid.uuid4().hex[:6]}"
    result = _run(["ip", "netns", "add", name], check=False)
    if result.returncode != 0:
        return False, f"ip netns add failed: {result.stderr.strip()}"
    _run(["ip", "netns", "del", name], check=False)
    return True, ""


# ---------------------------------------------------------------- a node


class Node:
    """One gracchus process of a cluster; the same ports and data dir for its life."""

    def __init__(self, cluster, node_id, host, broker_port, controller_port, http_port=9644):
        self.cluster = cluster
        self.node_id = node_id
        self.name = f"{cluster.name}-node{node_id}"
        self.host = host
        self.broker_port = broker_port
        self.controller_port = controller_port
        # http.listener (/metrics): its own port per node, or nodes sharing an address
        # would fail to start on the second bind.
        self.http_port = http_port
        self.data_dir = os.path.join(cluster.root, f"node{node_id}-data")
        self.stderr_path = os.path.join(cluster.root, f"node{node_id}.stderr.log")
        os.makedirs(self.data_dir, exist_ok=True)
        self.process = None
        self.paused = False
        self.env = {}  # this node's environment on top of the cluster's (e.g. CLUSTER_ID)
        self.starts = 0
        self.exit_codes = []
        # conftest kills registered brokers at exit and attaches their stderr tails to
        # the report of a failing test that started them.
        conftest._ALL_BROKERS.append(self)

    # ------------------------------------------------------------ addresses

    @property
    def bootstrap(self):
        return f"{self.host}:{self.broker_port}"

    @property
    def port(self):
        return self.broker_port

    @property
    def metrics_url(self):
        return f"http://{self.host}:{self.http_port}/metrics"

    @property
    def pid(self):
        return self.process.pid if self.process is not None else None

    def overrides(self):
        cluster = self.cluster
        values = {
            "node.id": str(self.node_id),
            "process.roles": "broker,controller",
            "listeners": f"PLAINTEXT://{self.host}:{self.broker_port},"
                         f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.broker_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.quorum.voters": cluster.voters(),
            "log.dirs": self.data_dir,
            "http.listener": f"{self.host}:{self.http_port}",
            "broker.session.timeout.ms": str(cluster.session_timeout_ms),
            "broker.heartbeat.interval.ms": str(cluster.heartbeat_interval_ms),
            "offsets.topic.replication.factor": "1",
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
        }
        values.update(cluster.overrides)
        values.update(cluster.node_overrides.get(self.node_id, {}))
        return values

    def command(self):
        command = [conftest.broker_binary()]
        for key, value in self.overrides().items():
            command += ["--override", f"{key}={value}"]
        for pair in os.environ.get("GRACCHUS_EXTRA_OVERRIDES", "").split():
            command += ["--override", pair]
        if self.cluster.network is not None:
            command = self.cluster.network.exec_prefix(self.node_id) + command
        return command

    # ------------------------------------------------------------ life cycle

    def is_running(self):
        return self.process is not None and self.process.poll() is None

    def launch(self):
        """Starts the process without waiting for it to answer."""
        assert not self.is_running(), f"{self.name} is already running"
        binary = conftest.broker_binary()
        if not os.access(binary, os.X_OK):
            raise AssertionError(f"broker binary {binary} is missing or not executable "
                                 "(run `cargo build --release` or set GRACCHUS_BIN)")
        self.starts += 1
        command = self.command()
        env = dict(os.environ, NO_COLOR="1", CLUSTER_ID=self.cluster.cluster_id)
        env.update(self.cluster.env)
        env.update(self.env)
        with open(self.stderr_path, "ab") as stderr:
            stderr.write(f"\n===== start #{self.starts}: CLUSTER_ID={env['CLUSTER_ID']} "
                         f"{' '.join(command)}\n".encode())
            stderr.flush()
            # `ip netns exec` switches namespace and execs the binary: the PID stays.
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                cwd=self.data_dir, env=env, preexec_fn=die_with_parent)
        self.paused = False
        log.info("%s: started pid %d, broker %s, controller port %d", self.name,
                 self.process.pid, self.bootstrap, self.controller_port)
        return self

    def answers(self, timeout_s=0.5):
        """True if the broker listener answers ApiVersions v0."""
        try:
            with socket.create_connection((self.host, self.broker_port),
                                          timeout=timeout_s) as sock:
                sock.settimeout(timeout_s)
                sock.sendall(conftest.API_VERSIONS_V0)
                size = sock.recv(4)
                return len(size) == 4 and int.from_bytes(size, "big") > 0
        except OSError:
            return False

    def wait_answers(self, timeout_s=START_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                self._reap()
                raise AssertionError(f"{self.name} exited with {code} during start-up\n"
                                     f"{self.stderr_tail()}")
            if self.answers():
                return self
            time.sleep(POLL_INTERVAL_S)
        raise AssertionError(f"{self.name} did not answer ApiVersions on {self.bootstrap} "
                             f"within {timeout_s:.0f} s\n{self.stderr_tail()}")

    def _reap(self):
        if self.process is not None and self.process.poll() is not None:
            self.exit_codes.append(self.process.returncode)
            self.process = None
            self.paused = False

    def _wait(self, timeout_s):
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._reap()
        return code

    def stop(self, timeout_s=STOP_TIMEOUT_S):
        """SIGTERM (and SIGCONT if paused) and wait; SIGKILL and raise after timeout_s.
        Returns the exit code."""
        if not self.is_running():
            self._reap()
            return self.exit_codes[-1] if self.exit_codes else None
        pid = self.process.pid
        os.kill(pid, signal.SIGTERM)
        if self.paused:
            os.kill(pid, signal.SIGCONT)
        code = self._wait(timeout_s)
        if code is None:
            self.kill()
            raise AssertionError(f"{self.name} (pid {pid}) ignored SIGTERM for "
                                 f"{timeout_s:.0f} s\n{self.stderr_tail()}")
        log.info("%s: pid %d stopped with exit code %s", self.name, pid, code)
        return code

    def kill(self):
        """SIGKILL (kill -9, works on a paused process too) and wait; returns -9."""
        if not self.is_running():
            self._reap()
            return self.exit_codes[-1] if self.exit_codes else None
        pid = self.process.pid
        os.kill(pid, signal.SIGKILL)
        code = self._wait(STOP_TIMEOUT_S)
        log.info("%s: pid %d killed (%s)", self.name, pid, code)
        return code

    def pause(self):
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        assert self.is_running(), f"{self.name} is not running"
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True
        wait_until(lambda: self.state() in ("T", "t"), 10, what=f"{self.name} to stop")
        log.info("%s: pid %d paused", self.name, self.process.pid)

    def resume(self):
        assert self.is_running(), f"{self.name} is not running"
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False
        wait_until(lambda: self.state() not in ("T", "t"), 10, what=f"{self.name} to run")
        log.info("%s: pid %d resumed", self.name, self.process.pid)

    def state(self):
        """The process state letter from /proc/<pid>/stat (T = stopped), None if down."""
        if self.process is None:
            return None
        try:
            with open(f"/proc/{self.process.pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None

    def wipe(self):
        """Empties the data dir (the node must be down)."""
        assert not self.is_running(), f"{self.name} is running; stop it before wiping"
        shutil.rmtree(self.data_dir, ignore_errors=True)
        os.makedirs(self.data_dir, exist_ok=True)
        log.info("%s: data dir %s wiped", self.name, self.data_dir)

    stderr_tail = conftest.Broker.stderr_tail

    # ------------------------------------------------------------ requests

    def connect(self, timeout_s=REQUEST_TIMEOUT_S):
        return Connection(self.host, self.broker_port, timeout_s=timeout_s)

    def call(self, function, *args, timeout_s=REQUEST_TIMEOUT_S, **kwargs):
        """function(connection, ...) on a fresh connection to this node's broker port."""
        with self.connect(timeout_s) as conn:
            return function(conn, *args, **kwargs)

    def metadata(self, topics=None):
        return self.call(metadata_v12, topics)

    def describe_cluster(self):
        return self.call(describe_cluster_v0)

    def image(self):
        """This node's normalised metadata image (see normalise_image)."""
        with self.connect() as conn:
            metadata = metadata_v12(conn)
            described = describe_cluster_v0(conn)
        return normalise_image(metadata, described)

    def create_topic(self, name, partitions=1, replication_factor=1, assignments=None,
                     configs=None, timeout_ms=10000):
        """CreateTopics v4 sent to this node; returns (error_code, error_message)."""
        topic = {"name": name, "configs": configs}
        if assignments:
            topic["assignments"] = assignments
        else:
            topic["partitions"] = partitions
            topic["replication_factor"] = replication_factor
        with self.connect(timeout_s=timeout_ms / 1000 + REQUEST_TIMEOUT_S) as conn:
            return create_topics_v4(conn, [topic], timeout_ms)[name]

    def delete_topic(self, name, timeout_ms=10000):
        with self.connect(timeout_s=timeout_ms / 1000 + REQUEST_TIMEOUT_S) as conn:
            return delete_topics_v3(conn, [name], timeout_ms)[name]

    def create_partitions(self, name, count, timeout_ms=10000):
        with self.connect(timeout_s=timeout_ms / 1000 + REQUEST_TIMEOUT_S) as conn:
            return create_partitions_v1(conn, {name: count}, timeout_ms)[name]

    def find_coordinator(self, group_id):
        return self.call(find_coordinator_v1, group_id)

    def __repr__(self):
        state = "paused" if self.paused else ("up" if self.is_running() else "down")
        return f"Node({self.node_id}, {self.bootstrap}, {state})"


# ---------------------------------------------------------------- the cluster


GiveUp = clients.GiveUp


def wait_until(predicate, timeout_s, what="condition", interval_s=POLL_INTERVAL_S):
    """clients.wait_for with the harness's argument order."""
    return clients.wait_for(predicate, timeout_s=timeout_s, interval_s=interval_s, what=what)


def retry_refused(call, not_yet, error_of=lambda answer: answer.error_code, timeout_s=10.0,
                  what="an answer"):
    """call() (a produce) until its answer's error (error_of) is not one of `not_yet`,
    errors whose produce appended nothing, so the retry adds no duplicate; returns that
    answer. A call that raises ends the wait at once: a produce whose answer was lost may
    have appended."""
    def answered():
        try:
            answer = call()
        except Exception as error:  # noqa: BLE001 - not retried, see above
            raise GiveUp(f"{what}: {error!r}") from error
        assert error_of(answer) not in not_yet, answer
        return [answer]  # truthy even when the answer (an error code 0) is not
    return wait_until(answered, timeout_s, what=what)[0]


def once_led(call, error_of=lambda answer: answer.error_code, timeout_s=10.0):
    """retry_refused while the answer is NOT_LEADER_OR_FOLLOWER. A node's Metadata names
    it leader once it applies the image, and it opens the partition a moment later
    (Kafka's brokers publish in the same order), answering NOT_LEADER_OR_FOLLOWER
    meanwhile, before any append. But an acks=all produce that loses its leadership while
    it waits gets the same error after its append, so callers must not use this across a
    leadership change."""
    return retry_refused(call, (NOT_LEADER_OR_FOLLOWER,), error_of, timeout_s,
                         what="the leader opened its partition")


def leadership(node, topic):
    """(leader, leader_epoch) of partition 0 of `topic` in `node`'s Metadata."""
    partition = node.metadata([topic])["topics"][topic]["partitions"][0]
    return partition["leader"], partition["leader_epoch"]


class Cluster:
    """N nodes, each broker and controller, all voters. See the module docstring."""

    def __init__(self, n, tmp, overrides=None, env=None, netns=False, name=None,
                 cluster_id=None, session_timeout_ms=SESSION_TIMEOUT_MS,
                 heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS, node_overrides=None):
        assert n >= 1
        self.name = name or f"cluster-{uuid.uuid4().hex[:8]}"
        self.root = os.path.join(tmp, self.name)
        os.makedirs(self.root, exist_ok=True)
        self.overrides = dict(overrides or {})
        self.node_overrides = dict(node_overrides or {})
        self.env = dict(env or {})
        self.cluster_id = cluster_id or self.env.get("CLUSTER_ID") or random_cluster_id()
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.network = None
        self.closed = False
        self._lock = threading.Lock()
        _ALL_CLUSTERS.append(self)
        if netns:
            self.network = Network(n)
            self.network.setup()
            self.nodes = [Node(self, i, self.network.address(i), 9092, 9093)
                          for i in range(1, n + 1)]
        else:
            ports = _free_ports(3 * n)
            self.nodes = [Node(self, i, LOOPBACK, ports[3 * i - 3], ports[3 * i - 2],
                               ports[3 * i - 1])
                          for i in range(1, n + 1)]

    # ------------------------------------------------------------ access

    @property
    def size(self):
        return len(self.nodes)

    def node(self, node_id):
        assert 1 <= node_id <= len(self.nodes), f"no node {node_id}"
        return self.nodes[node_id - 1]

    def node_ids(self):
        return [node.node_id for node in self.nodes]

    def running(self, exclude=()):
        """Ids of nodes whose process runs and is neither paused nor cut off."""
        isolated = self.network.isolated if self.network else set()
        return [n.node_id for n in self.nodes if n.is_running() and not n.paused
                and n.node_id not in isolated and n.node_id not in exclude]

    def voters(self):
        return ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes)

    # ------------------------------------------------------------ life cycle

    def start(self, wait_formed=True, timeout_s=FORM_TIMEOUT_S):
        """Starts every node (all processes first: a node may wait for a quorum before it
        answers), waits until each answers ApiVersions, then, with wait_formed, until
        the cluster formed (see wait_formed)."""
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_answers()
        if wait_formed:
            self.wait_formed(timeout_s)
        return self

    def stop(self, node_id):
        return self.node(node_id).stop()

    def kill(self, node_id):
        return self.node(node_id).kill()

    def pause(self, node_id):
        self.node(node_id).pause()

    def resume(self, node_id):
        self.node(node_id).resume()

    def restart(self, node_id, wipe=False, hard=False, wait_listed=True,
                timeout_s=FORM_TIMEOUT_S):
        """Stops node_id (SIGTERM, or SIGKILL when hard; nothing if it is down), empties
        its data dir with wipe, starts it on the same ports and dir, waits until it
        answers and, with wait_listed, until every running node lists it as a broker."""
        node = self.node(node_id)
        if hard:
            node.kill()
        else:
            node.stop()
        if wipe:
            node.wipe()
        node.launch()
        node.wait_answers()
        if wait_listed:
            self.wait_broker_listed(node_id, timeout_s=timeout_s)
        return node

    def isolate(self, node_id):
        assert self.network is not None, "isolate() needs Cluster(..., netns=True)"
        self.network.isolate(node_id)
        log.info("%s: node %d cut off", self.name, node_id)

    def heal(self, node_id):
        assert self.network is not None, "heal() needs Cluster(..., netns=True)"
        self.network.heal(node_id)
        log.info("%s: node %d reconnected", self.name, node_id)

    def fence_and_unfence(self, host, topic, epoch_before, taken=None):
        """Moves partition 0 of `topic`, whose only replica is on node `host`, two leader
        epochs up: `host` is SIGSTOPped past broker.session.timeout.ms, so the controller
        fences it and the partition goes offline (epoch + 1), then resumed, so it is
        unfenced and leads again (epoch + 1). Waits until `host`'s Metadata names it
        leader at epoch_before + 2 or later and, if given, until taken(epoch) returns
        (it raises while `host`'s own partition lags the Metadata it serves, as its
        reconciler may for a moment). Returns that epoch."""
        observer = next(i for i in self.node_ids() if i != host)
        self.pause(host)
        try:
            wait_until(lambda: leadership(self.node(observer), topic)[0] == -1,
                       timeout_s=self.session_timeout_ms / 1000 * 3 + 10,
                       what=f"partition offline while node {host} is stopped")
        finally:
            self.resume(host)

        def leads_again():
            leader, epoch = leadership(self.node(host), topic)
            assert leader == host and epoch >= epoch_before + 2, \
                f"offline and back: two leader changes, got {(leader, epoch)}"
            if taken is not None:
                taken(epoch)
            return epoch

        return wait_until(leads_again, timeout_s=40,
                          what=f"node {host} leads at a new epoch")

    def pids(self):
        return [n.pid for n in self.nodes if n.pid is not None]

    def close(self):
        """Kills every node by PID (SIGKILL: also stops paused ones) and removes the
        network. Idempotent; never raises, so it is safe in finalizers."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for node in self.nodes:
            try:
                node.kill()
            except Exception as error:  # noqa: BLE001 - kill the rest anyway
                log.warning("%s: kill failed: %r", node.name, error)
        if self.network is not None:
            self.network.teardown()

    # ------------------------------------------------------------ waiting

    wait_until = staticmethod(wait_until)

    def wait_formed(self, timeout_s=FORM_TIMEOUT_S):
        """Waits until every running node's Metadata lists every running node as a broker
        and its DescribeCluster names a controller (id >= 0)."""
        expected = set(self.running())

        def formed():
            missing = {}
            for node_id in self.running():
                node = self.node(node_id)
                brokers = set(node.metadata([])["brokers"])
                controller_id = node.describe_cluster()["controller_id"]
                if brokers != expected or controller_id < 0:
                    missing[node_id] = (sorted(brokers), controller_id)
            if missing:
                raise AssertionError(f"want brokers {sorted(expected)} and a controller; "
                                     f"node: (brokers, controller_id) = {missing}")
            return True

        try:
            wait_until(formed, timeout_s, what=f"{self.size} nodes to form one cluster")
        except AssertionError as error:
            tails = "\n".join(n.stderr_tail(20) for n in self.nodes)
            raise AssertionError(f"{error}\n{tails}") from None
        return self

    def wait_broker_listed(self, node_id, listed=True, on=None, timeout_s=FORM_TIMEOUT_S):
        """Waits until the Metadata of every node in `on` (default: the running ones)
        lists node_id as a broker (or, with listed=False, no longer does)."""
        def check():
            views = {i: sorted(self.node(i).metadata([])["brokers"])
                     for i in (self.running() if on is None else on)}
            wrong = {i: v for i, v in views.items() if (node_id in v) != listed}
            if wrong:
                raise AssertionError(f"brokers per node: {views}")
            return True

        state = "listed" if listed else "gone"
        wait_until(check, timeout_s, what=f"broker {node_id} {state} on every node")

    def controllers(self, on=None):
        """{node_id: controller_id from its DescribeCluster} for the given nodes (default
        the running ones); nodes that do not answer are left out."""
        seen = {}
        for node_id in (self.running() if on is None else on):
            try:
                seen[node_id] = self.node(node_id).describe_cluster()["controller_id"]
            except (OSError, ValueError, rawkafka.ConnectionClosed) as error:
                log.debug("node %d: DescribeCluster failed: %r", node_id, error)
        return seen

    def agreed_controller(self, on=None, exclude=()):
        """The controller id that every given node (default running) names, if they all
        answer and agree on one >= 0 not in exclude; else None."""
        nodes = list(self.running() if on is None else on)
        seen = self.controllers(nodes)
        values = set(seen.values())
        if len(seen) != len(nodes) or len(values) != 1:
            return None
        (controller_id,) = values
        if controller_id < 0 or controller_id in exclude:
            return None
        return controller_id

    def active_controller(self, on=None, exclude=(), timeout_s=FORM_TIMEOUT_S):
        """Waits until the given nodes (default running) agree on an active controller
        (not in exclude) and returns its node id."""
        def agreed():
            controller_id = self.agreed_controller(on, exclude)
            if controller_id is None:
                raise AssertionError(f"controller per node: {self.controllers(on)}")
            return controller_id

        return wait_until(agreed, timeout_s, what=f"agreement on an active controller "
                                                  f"(not {list(exclude)})")

    # ------------------------------------------------------------ metadata images

    def metadata_image(self, node_id):
        return self.node(node_id).image()

    def images(self, on=None):
        nodes = self.running() if on is None else on
        return {node_id: self.metadata_image(node_id) for node_id in nodes}

    def wait_images_equal(self, on=None, timeout_s=30.0, check=None):
        """Polls until every given node (default running) returns the same metadata
        image, and check(image) (if given) is truthy for it; returns that image.
        Fails with the differences of the last poll."""
        last = {"differences": ["no poll finished"]}

        def equal():
            images = self.images(on)
            differences = image_differences(images)
            last["differences"] = differences
            if differences:
                return None
            image = next(iter(images.values()))
            if check is not None and not check(image):
                last["differences"] = ["images equal, but check() rejected the image"]
                return None
            return image

        try:
            return wait_until(equal, timeout_s, what="equal metadata images")
        except AssertionError as error:
            details = "\n".join(last["differences"][:20])
            raise AssertionError(f"{error}\ndifferences:\n{details}") from None

    # ------------------------------------------------------------ admin through a node

    def create_topic(self, via, name, timeout_s=30.0, **kwargs):
        """CreateTopics through node `via`, retried while the quorum has no leader
        (NOT_CONTROLLER, REQUEST_TIMED_OUT, connection errors) or a named broker is
        fenced (a running broker that missed heartbeats on a loaded machine is fenced
        until its next one: seen in CI at load 7); asserts success.
        TOPIC_ALREADY_EXISTS after such a failure counts as success: the failed attempt
        may have been committed after all."""
        failed_before = []

        def attempt():
            try:
                error, message = self.node(via).create_topic(name, **kwargs)
            except Exception:
                failed_before.append(True)
                raise
            if error == NONE or (error == TOPIC_ALREADY_EXISTS and failed_before):
                return True
            if error in (NOT_CONTROLLER, REQUEST_TIMED_OUT):
                failed_before.append(True)
                raise RuntimeError(f"error {error}: {message}")
            if error == INVALID_REPLICA_ASSIGNMENT and "fenced" in (message or ""):
                raise RuntimeError(f"error {error}: {message}")  # nothing was created
            raise GiveUp(f"CreateTopics {name} via node {via}: error {error} {message}")

        return wait_until(attempt, timeout_s, what=f"CreateTopics {name}")

    def wait_topic_everywhere(self, name, partitions=None, on=None, timeout_s=30.0,
                              present=True):
        """Waits until every given node's Metadata shows topic `name` with leaders for all
        its partitions (and `partitions` of them, if given), or with present=False until
        none shows it. Returns {node_id: topic view}."""
        def check():
            views = {}
            for node_id in (self.running() if on is None else on):
                topic = self.node(node_id).metadata([name])["topics"].get(name)
                views[node_id] = topic
                exists = topic is not None and topic["error"] == NONE
                if exists != present:
                    raise AssertionError(f"node {node_id}: {topic!r}")
                if not present:
                    continue
                if partitions is not None and len(topic["partitions"]) != partitions:
                    raise AssertionError(f"node {node_id}: {len(topic['partitions'])} "
                                         f"partitions, want {partitions}")
                leaderless = [index for index, partition in topic["partitions"].items()
                              if partition["error"] != NONE or partition["leader"] < 0]
                if leaderless:
                    raise AssertionError(f"node {node_id}: no leader for partitions "
                                         f"{leaderless}: {topic!r}")
            return views

        return wait_until(check, timeout_s,
                          what=f"topic {name} {'on' if present else 'gone from'} every node")


def _free_ports(count):
    """count distinct free TCP ports on 127.0.0.1 (all held open until all are picked)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@atexit.register
def _close_all():
    for cluster in _ALL_CLUSTERS:
        cluster.close()


# ---------------------------------------------------------------- failover rounds


def percentile(values, fraction):
    """The nearest-rank percentile of values (fraction in 0..1); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))  # ceil
    return ordered[min(rank, len(ordered)) - 1]


def failover_round(cluster, round_index, stall_s=10.0, give_up_s=60.0):
    """Kills the active controller with SIGKILL, measures how long until the survivors
    agree on a new one and a topic can be created through one of them, restarts the
    killed node and waits until every node lists it again.

    Returns dict(round, killed, new_controller, leader_s, topic_s, stalled)."""
    killed = cluster.active_controller()
    survivors = [i for i in cluster.running() if i != killed]
    cluster.kill(killed)
    began = time.monotonic()
    new_controller = wait_until(
        lambda: cluster.agreed_controller(on=survivors, exclude=(killed,)), give_up_s,
        what=f"a new controller after killing {killed}", interval_s=0.01)
    leader_s = time.monotonic() - began
    name = f"failover-{round_index}-{uuid.uuid4().hex[:8]}"
    via = survivors[round_index % len(survivors)]
    cluster.create_topic(via, name, timeout_s=give_up_s, timeout_ms=5000)
    topic_s = time.monotonic() - began
    cluster.restart(killed, wait_listed=True)
    cluster.wait_topic_everywhere(name, partitions=1)
    return {"round": round_index, "killed": killed, "new_controller": new_controller,
            "leader_s": leader_s, "topic_s": topic_s, "stalled": leader_s > stall_s}


def summarise_failovers(rounds):
    """min/p50/p90/p99/max of leader_s and topic_s, and the stall count."""
    out = {"rounds": len(rounds), "stalls": sum(1 for r in rounds if r["stalled"])}
    for key in ("leader_s", "topic_s"):
        values = [r[key] for r in rounds]
        out[key] = {"min": min(values) if values else None,
                    "p50": percentile(values, 0.50), "p90": percentile(values, 0.90),
                    "p99": percentile(values, 0.99),
                    "max": max(values) if values else None}
    return out


def format_summary(summary):
    lines = [f"rounds {summary['rounds']}, stalls (no new leader within 10 s): "
             f"{summary['stalls']}"]
    for key, label in (("leader_s", "kill -> new leader known"),
                       ("topic_s", "kill -> new leader and topic created")):
        stats = summary[key]
        if stats["min"] is None:
            continue
        lines.append(f"{label:38s} " + "  ".join(
            f"{name} {stats[name] * 1000:7.0f} ms" for name in
            ("min", "p50", "p90", "p99", "max")))
    return "\n".join(lines)


