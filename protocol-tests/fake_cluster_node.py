#!/usr/bin/env python3
"""A stand-in cluster node for the harness self-tests (test_cluster_harness.py), so the
harness's cluster-level logic (formation, controller agreement, failover rounds, restarts,
image comparison) is exercised without depending on the broker being tested.

Takes the harness's command line (`--override key=value ...`, CLUSTER_ID in the
environment) and serves, on the first listener, ApiVersions v0, Metadata v12,
DescribeCluster v0 and CreateTopics v4, one request at a time per connection. Nodes share
state through files in the cluster directory (the parent of log.dirs): each node touches
`fake-alive-<id>` every 100 ms; a node is a live broker while its file is younger than
LIVE_S; the controller is the lowest live node id; topics are lines of `fake-topics.jsonl`,
each partition led by the lowest live node id at creation. Not a broker: only what the
harness needs to see.
"""

import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rawkafka  # noqa: E402
from rawkafka import Reader, boolean, int16, int32, uvarint  # noqa: E402

LIVE_S = 1.0
TAGS = uvarint(0)


def compact_string(value):
    return rawkafka.compact_string(value)


def compact_array(items):
    return uvarint(len(items) + 1) + b"".join(items)


class State:
    def __init__(self, overrides):
        self.node_id = int(overrides["node.id"])
        first = overrides["listeners"].split(",")[0]
        host_port = first.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.root = os.path.dirname(overrides["log.dirs"].rstrip("/"))
        self.voters = {}
        for voter in overrides["controller.quorum.voters"].split(","):
            node_id, address = voter.split("@", 1)
            self.voters[int(node_id)] = address.rsplit(":", 1)[0]
        self.cluster_id = os.environ["CLUSTER_ID"]
        self.topics_path = os.path.join(self.root, "fake-topics.jsonl")
        self.lock = threading.Lock()

    def alive_path(self, node_id):
        return os.path.join(self.root, f"fake-alive-{node_id}")

    def heartbeat(self):
        while True:
            with open(self.alive_path(self.node_id), "w") as out:
                out.write(str(os.getpid()))
            time.sleep(0.1)

    def live(self):
        now = time.time()
        out = []
        for node_id in sorted(self.voters):
            try:
                if now - os.path.getmtime(self.alive_path(node_id)) < LIVE_S:
                    out.append(node_id)
            except OSError:
                pass
        return out

    def broker_port(self, node_id):
        # Every node's broker port is recorded next to its heartbeat file.
        try:
            with open(os.path.join(self.root, f"fake-port-{node_id}")) as source:
                return int(source.read())
        except (OSError, ValueError):
            return -1

    def topics(self):
        try:
            with open(self.topics_path) as source:
                return [json.loads(line) for line in source if line.strip()]
        except FileNotFoundError:
            return []

    def create(self, name, partitions):
        with self.lock:
            if any(topic["name"] == name for topic in self.topics()):
                return 36, f"topic {name} already exists"
            leader = self.live()[0]
            topic = {"name": name, "id": os.urandom(16).hex(), "partitions": partitions,
                     "leader": leader}
            with open(self.topics_path, "a") as out:
                out.write(json.dumps(topic) + "\n")
            return 0, None


def brokers_array(state):
    items = []
    for node_id in state.live():
        items.append(int32(node_id) + compact_string(state.voters[node_id])
                     + int32(state.broker_port(node_id)) + compact_string(None) + TAGS)
    return compact_array(items)


def metadata_v12(state, _reader):
    live = state.live()
    topics = []
    for topic in state.topics():
        parts = []
        for index in range(topic["partitions"]):
            leader = topic["leader"] if topic["leader"] in live else -1
            error = 0 if leader >= 0 else rawkafka.LEADER_NOT_AVAILABLE
            parts.append(int16(error) + int32(index) + int32(leader) + int32(0)
                         + compact_array([int32(topic["leader"])])
                         + compact_array([int32(topic["leader"])]) + compact_array([])
                         + TAGS)
        topics.append(int16(0) + compact_string(topic["name"]) + bytes.fromhex(topic["id"])
                      + boolean(False) + compact_array(parts) + int32(-2147483648) + TAGS)
    controller = live[0] if live else -1
    return (int32(0) + brokers_array(state) + compact_string(state.cluster_id)
            + int32(controller) + compact_array(topics) + TAGS)


def describe_cluster_v0(state, _reader):
    live = state.live()
    return (int32(0) + int16(0) + compact_string(None) + compact_string(state.cluster_id)
            + int32(live[0] if live else -1) + brokers_array(state) + int32(-2147483648)
            + TAGS)


def create_topics_v4(state, reader):
    def read_topic(r):
        name = r.string()
        partitions = r.int32()
        r.int16()  # replication factor
        assignments = r.array(lambda rr: (rr.int32(), rr.array(lambda r3: r3.int32())))
        r.array(lambda rr: (rr.string(), rr.string()))
        if partitions < 0:
            partitions = len(assignments or [])
        return name, partitions

    topics = reader.array(read_topic)
    results = []
    for name, partitions in topics:
        error, message = state.create(name, partitions)
        results.append(rawkafka.string(name) + int16(error) + rawkafka.string(message))
    return int32(0) + int32(len(results)) + b"".join(results)


def api_versions_v0(_state, _reader):
    keys = [(3, 0, 13), (18, 0, 4), (19, 2, 7), (60, 0, 2)]
    return int16(0) + int32(len(keys)) + b"".join(
        int16(k) + int16(lo) + int16(hi) for k, lo, hi in keys)


HANDLERS = {
    (18, 0): (api_versions_v0, False),
    (3, 12): (metadata_v12, True),
    (60, 0): (describe_cluster_v0, True),
    (19, 4): (create_topics_v4, False),
}


def recv_exact(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def serve(state, sock):
    with sock:
        try:
            while True:
                (size,) = struct.unpack(">i", recv_exact(sock, 4))
                reader = Reader(recv_exact(sock, size))
                api_key, version, correlation_id = reader.int16(), reader.int16(), \
                    reader.int32()
                reader.string()  # client id
                handler, flexible = HANDLERS.get((api_key, version), (None, False))
                if handler is None:
                    return
                if flexible:
                    reader.skip_tagged_fields()
                body = handler(state, reader)
                header = int32(correlation_id) + (TAGS if flexible else b"")
                sock.sendall(int32(len(header) + len(body)) + header + body)
        except (ConnectionError, OSError, ValueError):
            return


def main(args):
    overrides = {}
    for index, arg in enumerate(args):
        if arg == "--override":
            key, value = args[index + 1].split("=", 1)
            overrides[key] = value
    state = State(overrides)
    os.makedirs(overrides["log.dirs"], exist_ok=True)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((state.host, state.port))
    listener.listen(64)
    with open(os.path.join(state.root, f"fake-port-{state.node_id}"), "w") as out:
        out.write(str(state.port))
    threading.Thread(target=state.heartbeat, daemon=True).start()
    print(f"fake node {state.node_id} serving {state.host}:{state.port}", flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(state, connection), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1:])
