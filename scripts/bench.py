#!/usr/bin/env python3
"""The broker benchmark (issue 12): librdkafka's native `rdkafka_performance` against
gracchus brokers that this script starts, one fresh broker (or three-node cluster) per row.

Run it through `scripts/bench`, which builds the broker and the load generator first.
README's "Benchmark" section lists the rows and says what each column means.

Why it is shaped this way:
- The load generator is native (C, librdkafka): a Python client tops out at a quarter of
  what the broker takes, so it would measure itself.
- Every row gets a fresh broker with a fresh data dir, so rows do not inherit each
  other's data, page-cache state or memory; `--compare A B` alternates the two binaries
  row by row, because on this shared 2-core machine only numbers taken minutes apart
  can be compared.
- Broker CPU comes from /proc (utime + stime of every broker process) over the row's
  wall time, and is divided by the records the client saw acknowledged or consumed.
- `--callgrind ROW` counts instructions, which unlike time do not move with the
  machine's load: that is how a code change is judged.

Every client and broker runs with a deadline and is stopped by PID.
"""

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "protocol-tests"))
import rawkafka  # noqa: E402  (the tests' hand-written Kafka encoders)

HOST = "127.0.0.1"
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

# The client settings: 6 partitions unless the row says otherwise, linger 5 ms,
# 64 KiB batches.
PARTITIONS_DEFAULT = 6
LINGER_MS = 5
BATCH_BYTES = 65536
# Latency rows: 10k msg/s of 100 B records, acks=all. Linger 1 ms, not 5: with 5 the
# producer's own batching wait would dominate what is measured (the figures were
# taken with 1 ms too).
LATENCY_RATE = 10_000
LATENCY_LINGER_MS = 1
LATENCY_SIZE = 100
LATENCY_WARMUP_SAMPLES = LATENCY_RATE  # the first second: connections, metadata, leaders
# Latency rows also time the same paced producer against librdkafka's in-process mock
# broker (no broker process, no network) for this long: the client's own floor at the
# row's linger, so the row's figures can be read as client + broker.
LATENCY_FLOOR_S = 5
CONSUMER_HEAD_START_S = 2.0
# Consume rows first write this many bytes per second of --seconds (2 GB at 10 s), then
# read them back; reading is faster than writing, so the read lasts a few seconds.
CONSUME_FILL_BYTES_PER_SECOND = 200_000_000
# Scale rows.
IDLE_PARTITIONS = 1000
IDLE_CONNECTION_COUNTS = (1000, 10_000)
LONGPOLL_CONSUMERS = 1000
LONGPOLL_WAIT_MS = 500
LONGPOLL_SECONDS = 10.0
HERD_ALONE_S = 3.0
CONNECT_CONCURRENCY = 200
# produce-conns-<N> rows: every connection loops Produce v7 (acks=1) of one batch of this
# many 100 B records, waiting for each answer: the broker's cost per record as the number
# of connections grows, with the same records per request.
CONNS_BATCH_RECORDS = 100
CONNS_RECORD_BYTES = 100
CONNS_MAX = 20_000
CONNS_CONNECT_TIMEOUT_S = 60.0
# Deadlines. Under valgrind everything is ~50x slower.
START_TIMEOUT_S = 60.0
CALLGRIND_START_TIMEOUT_S = 300.0
CALLGRIND_LONGPOLL_CONSUMERS = 100
CLIENT_GRACE_S = 30.0
STOP_TIMEOUT_S = 30.0
# When a whole cluster stops at once, the last node's controlled shutdown finds no quorum
# and waits out its 30 s timeout; the row is measured by then, so a cluster is killed sooner.
CLUSTER_STOP_TIMEOUT_S = 5.0
SETTLE_S = 1.5

SIZES = {"100": 100, "1k": 1024}
# The page-cache probe: this many bytes in writes of PROBE_WRITE_BYTES to a new file beside
# the data dirs, then the same bytes again over the now cached pages.
PROBE_BYTES = 256 << 20
PROBE_WRITE_BYTES = 1 << 20
# The loopback sendfile probe: iperf3 -Z (sendfile) for this long, one stream.
SENDFILE_PROBE_S = 3
# The guest kernel's count of memory it handed back to the host (free page reporting), where
# the kernel has it: a row's notes say how much went back while it ran.
REPORTED_KIB = "/sys/module/page_reporting/parameters/reported_kib"


class BenchError(RuntimeError):
    """A row could not be measured (a broker died, a client printed no summary, ...)."""


# ---------------------------------------------------------------- rows


@dataclass(frozen=True)
class Row:
    """One scenario. Names are parsed, so any combination can be asked for by name:
    produce-<100|1k>-<1|all>-<none|lz4>[-p<N>][-rf3][-spread][-herd],
    consume-<100|1k>-<none|lz4>[-p<N>][-rf3], latency-rf<1|3>[-linger<ms>], produce-conns-<N>,
    idle-partitions, idle-connections, idle-longpoll. -herd: the produce runs while
    LONGPOLL_CONSUMERS long polls park on another topic of the same broker. -spread: the
    producer spreads records over every partition (librdkafka's sticky partitioner off), so
    a request carries many small batches, as keyed records do."""

    name: str
    kind: str
    size: int = 100
    acks: str = "1"
    codec: str = "none"
    partitions: int = PARTITIONS_DEFAULT
    replicas: int = 1
    herd: bool = False
    spread: bool = False
    connections: int = 0
    linger_ms: float = LATENCY_LINGER_MS


PRODUCE_RE = re.compile(
    r"produce-(100|1k)-(1|all)-(none|lz4)(?:-p(\d+))?(?:-rf([13]))?(-spread)?(-herd)?")
CONNS_RE = re.compile(r"produce-conns-(\d+)")
CONSUME_RE = re.compile(r"consume-(100|1k)-(none|lz4)(?:-p(\d+))?(?:-rf([13]))?")
LATENCY_RE = re.compile(r"latency-rf([13])(?:-linger(\d+(?:\.\d+)?))?")
IDLE_KINDS = ("idle-partitions", "idle-connections", "idle-longpoll")


def parse_row(name):
    if m := PRODUCE_RE.fullmatch(name):
        if m[7] and m[5] == "3":
            raise SystemExit(f"{name}: -herd rows run on one broker")
        return Row(name, "produce", SIZES[m[1]], m[2], m[3],
                   int(m[4] or PARTITIONS_DEFAULT), int(m[5] or 1), herd=bool(m[7]),
                   spread=bool(m[6]))
    if (m := CONNS_RE.fullmatch(name)) and 1 <= int(m[1]) <= CONNS_MAX:
        return Row(name, "conns", CONNS_RECORD_BYTES, connections=int(m[1]))
    if m := CONSUME_RE.fullmatch(name):
        return Row(name, "consume", SIZES[m[1]], "1", m[2],
                   int(m[3] or PARTITIONS_DEFAULT), int(m[4] or 1))
    if m := LATENCY_RE.fullmatch(name):
        return Row(name, "latency", LATENCY_SIZE, "all", "none", PARTITIONS_DEFAULT,
                   int(m[1]), linger_ms=float(m[2] or LATENCY_LINGER_MS))
    if name in IDLE_KINDS:
        return Row(name, name)
    raise SystemExit(f"unknown row {name!r}: {Row.__doc__}")


# The table (with the latency rows also at linger 0.5 ms, where the client's own
# p99 is below the 2 ms), then the partition and connection scale, then the idle
# costs: about 6 minutes.
DEFAULT_ROWS = [
    "produce-100-all-none", "produce-100-all-lz4", "produce-1k-1-none",
    "produce-1k-all-none", "consume-1k-none", "latency-rf1", "latency-rf3",
    "latency-rf1-linger0.5", "latency-rf3-linger0.5",
    "produce-100-all-none-p1", "produce-100-all-none-p100", "produce-100-all-none-p1000",
    "produce-100-all-none-herd", "produce-conns-10", "produce-conns-10000",
    "idle-partitions", "idle-connections", "idle-longpoll",
]
QUICK_ROWS = ["produce-100-all-none", "produce-1k-1-none", "consume-1k-none",
              "latency-rf3", "idle-connections", "idle-longpoll"]
QUICK_SECONDS = 5


# ---------------------------------------------------------------- /proc


def proc_ticks(pid):
    """(utime, stime) of the whole process (every thread, live or ended), in ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def cpu_seconds(pids):
    return sum(sum(proc_ticks(pid)) for pid in pids) / TICKS_PER_SECOND


def kernel_seconds(pids):
    """The part of cpu_seconds spent in the kernel (system calls, the network stack)."""
    return sum(proc_ticks(pid)[1] for pid in pids) / TICKS_PER_SECOND


def own_cpu_seconds():
    """This process's CPU (the Python load of the rows that generate it here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def rss_mib(pids):
    return sum(status_kib(pid, "VmRSS") for pid in pids) / 1024


def note_idle_memory(result, pids):
    """Sets the row's idle RSS and its anonymous part; returns the RSS.

    RssAnon (heap, stacks) is what the broker holds. The rest of RSS is mostly the
    binary's own mapped pages, and that part moves with how its file sits in the page
    cache: a fresh copy of the same binary mapped 0.9-1.2 MiB more. Compare binaries by
    the anonymous column."""
    result.rss_idle_mib = rss_mib(pids)
    result.anon_idle_mib = sum(status_kib(pid, "RssAnon") for pid in pids) / 1024
    return result.rss_idle_mib


def reset_peak_rss(pids):
    """Restarts VmHWM at the current RSS (clear_refs 5), so a row's peak is its own.
    Returns False where the kernel does not allow it (the peak is then since start)."""
    try:
        for pid in pids:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib(pids):
    """Sum of each process's own peak: for a cluster, at least the peak of the sum."""
    return sum(status_kib(pid, "VmHWM") for pid in pids) / 1024


class Window:
    """Broker CPU and peak RSS over one measured interval."""

    def __init__(self, pids):
        self.pids = pids
        self.peak_is_own = reset_peak_rss(pids)
        self.cpu_start = cpu_seconds(pids)
        self.kernel_start = kernel_seconds(pids)
        self.time_start = time.monotonic()
        self.cpu_s = self.kernel_s = self.wall_s = self.peak_mib = None

    def close(self):
        self.cpu_s = cpu_seconds(self.pids) - self.cpu_start
        self.kernel_s = kernel_seconds(self.pids) - self.kernel_start
        self.wall_s = time.monotonic() - self.time_start
        self.peak_mib = peak_rss_mib(self.pids)
        return self

    @property
    def cpu_percent(self):
        return 100 * self.cpu_s / self.wall_s


def raise_open_files_limit():
    """10,000 idle connections need 10,000 descriptors here and in the broker (which
    inherits this limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(IDLE_CONNECTION_COUNTS) + CONNS_MAX + LONGPOLL_CONSUMERS + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- brokers


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def random_cluster_id():
    """16 random bytes, base64url without padding, not starting with '-' (as Kafka's
    `kafka-storage random-uuid` prints them)."""
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class Brokers:
    """One gracchus process, or a three-node cluster of broker+controller nodes configured
    as protocol-tests/cluster.py configures them, on free loopback ports, with data in a
    temporary directory that stop() removes. `wrapper` prefixes the command (valgrind)."""

    def __init__(self, binary, count, log_prefix, wrapper=(), data_root=None, cluster_id=None):
        self.binary, self.count, self.log_prefix = binary, count, log_prefix
        self.wrapper = list(wrapper)
        self.owns_data = data_root is None
        self.data_root = data_root or tempfile.mkdtemp(prefix="gracchus-bench-data-")
        self.ports = [(free_port(), free_port()) for _ in range(count)]
        # A data dir written by an earlier run belongs to that run's cluster id.
        self.cluster_id = cluster_id or random_cluster_id()
        self.processes = []

    @property
    def bootstrap(self):
        return ",".join(f"{HOST}:{broker}" for broker, _ in self.ports)

    @property
    def pids(self):
        return [p.pid for p in self.processes]

    def overrides(self, index):
        broker_port, controller_port = self.ports[index]
        values = {"log.dirs": os.path.join(self.data_root, f"node{index + 1}"),
                  "http.listener": "none", "auto.create.topics.enable": "false"}
        if self.count == 1:  # the embedded single-node default: no controller listener
            values["listeners"] = f"PLAINTEXT://{HOST}:{broker_port}"
            return values
        voters = ",".join(f"{i + 1}@{HOST}:{c}" for i, (_, c) in enumerate(self.ports))
        values.update({
            "node.id": str(index + 1), "process.roles": "broker,controller",
            "listeners": f"PLAINTEXT://{HOST}:{broker_port},CONTROLLER://{HOST}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{broker_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
            "controller.quorum.voters": voters,
        })
        return values

    def start(self, timeout_s=START_TIMEOUT_S):
        env = dict(os.environ, NO_COLOR="1", CLUSTER_ID=self.cluster_id)
        for index in range(self.count):
            command = self.wrapper + [self.binary]
            for key, value in self.overrides(index).items():
                command += ["--override", f"{key}={value}"]
            log = open(f"{self.log_prefix}.node{index + 1}.log", "w")
            self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, env=env))
            log.close()
        self.wait_formed(timeout_s)
        return self

    def metadata(self, index, topics=None):
        broker_port = self.ports[index][0]
        with rawkafka.Connection(HOST, broker_port, timeout_s=5.0) as conn:
            return rawkafka.metadata_v4(conn, topics)

    def wait_until(self, what, predicate, timeout_s):
        deadline = time.monotonic() + timeout_s
        last_error = None
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise BenchError(f"broker exited ({process.returncode}) while waiting for "
                                     f"{what}; see {self.log_prefix}.node*.log")
            try:
                if predicate():
                    return
            except (OSError, rawkafka.ConnectionClosed, ValueError) as error:
                last_error = error
            time.sleep(0.1)
        raise BenchError(f"timed out waiting for {what} ({last_error}); "
                         f"see {self.log_prefix}.node*.log")

    def wait_formed(self, timeout_s):
        """Every node lists every node as a broker and names a controller."""
        def formed():
            images = [self.metadata(i, topics=[]) for i in range(self.count)]
            return all(len(m["brokers"]) == self.count and m["controller_id"] >= 0
                       for m in images)
        self.wait_until(f"{self.count} node(s) to form a cluster", formed, timeout_s)

    def wait_topic(self, topic, partitions, replicas, timeout_s):
        """Every node knows a leader for every partition and a full ISR."""
        def ready():
            for index in range(self.count):
                error, parts = self.metadata(index, [topic])["topics"].get(topic, (-1, {}))
                if error != 0 or len(parts) != partitions:
                    return False
                if any(e != 0 or leader < 0 or len(isr) < replicas
                       for e, leader, _, isr in parts.values()):
                    return False
            return True
        self.wait_until(f"topic {topic} to have leaders and full ISRs", ready, timeout_s)

    def stop(self, timeout_s=None):
        if timeout_s is None:
            timeout_s = STOP_TIMEOUT_S if self.count == 1 else CLUSTER_STOP_TIMEOUT_S
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        if self.owns_data:
            shutil.rmtree(self.data_root, ignore_errors=True)


def create_topic(brokers, name, partitions, replicas, timeout_s=60.0):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": brokers.bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, replicas)],
                                  operation_timeout=timeout_s, request_timeout=timeout_s)
    futures[name].result(timeout_s)
    brokers.wait_topic(name, partitions, replicas, timeout_s)
    return name


# ---------------------------------------------------------------- the load generator


@dataclass
class ClientRun:
    returncode: int
    cpu_s: float
    wall_s: float
    log: str
    text: str = ""


def start_client(argv, log_path):
    log = open(log_path, "w")
    log.write(" ".join(argv) + "\n")
    log.flush()
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    log.close()
    return process, time.monotonic(), log_path


def wait_client(started, limit_s, interrupt_after_s=None):
    """Waits for a client, SIGINT at interrupt_after_s (rdkafka_performance then prints its
    summary and exits), SIGKILL at limit_s. Its CPU comes from wait4's rusage."""
    process, start, log_path = started
    interrupted = killed = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            with open(log_path, errors="replace") as f:
                text = f.read()
            return ClientRun(process.returncode, usage.ru_utime + usage.ru_stime,
                             time.monotonic() - start, log_path, text)
        elapsed = time.monotonic() - start
        if interrupt_after_s is not None and not interrupted and elapsed >= interrupt_after_s:
            process.send_signal(signal.SIGINT)
            interrupted = True
        if elapsed >= limit_s and not killed:
            process.kill()
            killed = True
        time.sleep(0.02)


PRODUCED_RE = re.compile(r"% (\d+) messages produced \((\d+) bytes\), (\d+) delivered "
                         r"\(offset -?\d+, (\d+) failed\) in (\d+)ms")
CONSUMED_RE = re.compile(r"% (\d+) messages \((\d+) bytes\) consumed in (\d+)ms")


def produced_summary(run):
    """(delivered, failed, ms) from the tool's last summary line. (Its byte counts are of
    produce calls, which include retries after a full queue: payload MB/s is computed
    from the delivered count and the record size instead.)"""
    found = PRODUCED_RE.findall(run.text)
    if not found:
        raise BenchError(f"no producer summary in {run.log}")
    _, _, delivered, failed, ms = map(int, found[-1])
    return delivered, failed, max(ms, 1)


def consumed_summary(run):
    found = CONSUMED_RE.findall(run.text)
    if not found:
        raise BenchError(f"no consumer summary in {run.log}")
    return tuple(map(int, found[-1]))  # messages, bytes, ms


def produce_argv(tool, brokers, topic, row, count, linger_ms=LINGER_MS):
    acks = "-1" if row.acks == "all" else row.acks
    argv = [tool, "-P", "-t", topic, "-b", brokers.bootstrap, "-s", str(row.size),
            "-c", str(count), "-a", acks, "-z", row.codec, "-i", "1000",
            "-X", f"linger.ms={linger_ms}", "-X", f"batch.size={BATCH_BYTES}"]
    if row.spread:
        # Keyless records otherwise stick to one partition for 10 ms (librdkafka's
        # sticky.partitioning.linger.ms), so a request carries one full batch whatever the
        # partition count; 0 picks a partition per record, as keys spread them.
        argv += ["-X", "sticky.partitioning.linger.ms=0"]
    return argv


def consume_argv(tool, brokers, topic, partitions, count):
    argv = [tool, "-C", "-t", topic, "-b", brokers.bootstrap, "-o", "beginning",
            "-c", str(count), "-i", "1000"]
    for partition in range(partitions):
        argv += ["-p", str(partition)]
    return argv


# ---------------------------------------------------------------- results


@dataclass
class Result:
    row: str
    label: str
    msgs_s: float = None
    mb_s: float = None
    broker_us_per_record: float = None
    broker_cpu_percent: float = None
    client_cpu_percent: float = None
    rss_idle_mib: float = None
    anon_idle_mib: float = None
    rss_peak_mib: float = None
    p50_ms: float = None
    p99_ms: float = None
    p999_ms: float = None
    # MiB the guest handed back to the host while the row ran (None where not known).
    reported_mib: int = None
    notes: list = field(default_factory=list)


def fill_from_window(result, window, records, client_cpu_s, client_wall_s):
    result.broker_cpu_percent = window.cpu_percent
    result.rss_peak_mib = window.peak_mib
    if records:
        result.broker_us_per_record = window.cpu_s * 1e6 / records
    result.client_cpu_percent = 100 * client_cpu_s / client_wall_s
    if not window.peak_is_own:
        result.notes.append("peak RSS since broker start")


def percentiles(path, skip):
    """p50 / p99 / p99.9 in ms of a file of per-message microseconds, first `skip` dropped."""
    try:
        with open(path) as f:
            values = sorted(int(x) for x in f.read().split()[skip:])
    except FileNotFoundError:
        values = []
    if not values:
        return None, None, None, 0

    def at(q):
        return values[min(len(values) - 1, int(q * len(values)))] / 1000
    return at(0.50), at(0.99), at(0.999), len(values)


# ---------------------------------------------------------------- throughput rows


class Context:
    """What every row needs: the tools, the output dir, the run length."""

    def __init__(self, args, out):
        self.loadgen = args.loadgen
        self.tool = os.path.join(args.loadgen, "rdkafka_performance")
        self.paced_tool = os.path.join(args.loadgen, "rdkafka_performance_paced")
        self.seconds = args.seconds
        self.out = out

    def path(self, tag, suffix):
        return os.path.join(self.out, f"{tag}.{suffix}")


def run_produce(ctx, row, brokers, result, tag):
    topic = create_topic(brokers, "bench", row.partitions, row.replicas)
    herd = BackgroundLongPolls(brokers, row.replicas) if row.herd else None
    time.sleep(SETTLE_S)
    note_idle_memory(result, brokers.pids)
    argv = produce_argv(ctx.tool, brokers, topic, row, 2_000_000_000)
    herd_alone = None
    try:
        if herd:
            herd.start(ctx.seconds + HERD_ALONE_S + CLIENT_GRACE_S)
            # What the parked polls cost by themselves, to tell it from what they add to
            # the produce (which is nothing if appends wake only their own partitions).
            herd_alone = idle_window(brokers.pids, HERD_ALONE_S)
            herd.restart_counts()
        window = Window(brokers.pids)
        run = wait_client(start_client(argv, ctx.path(tag, "client.log")),
                          ctx.seconds + CLIENT_GRACE_S, interrupt_after_s=ctx.seconds)
        window.close()
    finally:
        if herd:
            herd.stop()
    if herd:
        result.notes.append(herd.summary(herd_alone, window))
    delivered, failed, ms = produced_summary(run)
    result.msgs_s = delivered * 1000 / ms
    result.mb_s = delivered * row.size / 1000 / ms
    fill_from_window(result, window, delivered, run.cpu_s, run.wall_s)
    result.notes.append(f"{delivered} acked in {ms} ms")
    if failed:
        result.notes.append(f"{failed} FAILED deliveries")


def fill_topic(ctx, row, brokers, topic, tag):
    """Writes the records a consume row reads (acks=1, the row's size and codec)."""
    count = max(10_000, ctx.seconds * CONSUME_FILL_BYTES_PER_SECOND // row.size)
    argv = produce_argv(ctx.tool, brokers, topic, Row("fill", "produce", row.size, "1",
                                                      row.codec), count)
    run = wait_client(start_client(argv, ctx.path(tag, "fill.log")), 300.0)
    delivered, failed, _ = produced_summary(run)
    if delivered != count or failed:
        raise BenchError(f"fill delivered {delivered} of {count}, {failed} failed; see {run.log}")
    return count


def run_consume(ctx, row, brokers, result, tag):
    topic = create_topic(brokers, "bench", row.partitions, row.replicas)
    count = fill_topic(ctx, row, brokers, topic, tag)
    time.sleep(SETTLE_S)
    note_idle_memory(result, brokers.pids)
    argv = consume_argv(ctx.tool, brokers, topic, row.partitions, count) + ["-e"]
    window = Window(brokers.pids)
    run = wait_client(start_client(argv, ctx.path(tag, "client.log")),
                      3 * ctx.seconds + 60.0)
    window.close()
    messages, message_bytes, ms = consumed_summary(run)
    result.msgs_s = messages * 1000 / max(ms, 1)
    result.mb_s = message_bytes / 1000 / max(ms, 1)
    fill_from_window(result, window, messages, run.cpu_s, run.wall_s)
    result.notes.append(f"{messages} of {count} read in {ms} ms (after a fill of "
                        f"{count * row.size / 1e9:.1f} GB)")
    if messages != count:
        result.notes.append("INCOMPLETE")


def run_latency(ctx, row, brokers, result, tag):
    """Consumer first (from the beginning of the empty topic, so it misses nothing), then
    the paced producer at LATENCY_RATE; both write one latency sample per message."""
    topic = create_topic(brokers, "bench", row.partitions, row.replicas)
    count = LATENCY_RATE * ctx.seconds
    time.sleep(SETTLE_S)
    note_idle_memory(result, brokers.pids)
    e2e_path, ack_path = ctx.path(tag, "e2e.us"), ctx.path(tag, "ack.us")
    consumer_argv = consume_argv(ctx.tool, brokers, topic, row.partitions, count)
    consumer_argv += ["-l", "-A", e2e_path]
    producer_argv = latency_producer_argv(ctx, brokers.bootstrap, topic, row, count, ack_path)
    consumer = start_client(consumer_argv, ctx.path(tag, "consumer.log"))
    time.sleep(CONSUMER_HEAD_START_S)
    window = Window(brokers.pids)
    producer = wait_client(start_client(producer_argv, ctx.path(tag, "producer.log")),
                           ctx.seconds + CLIENT_GRACE_S)
    consumer_run = wait_client(consumer, ctx.seconds + CLIENT_GRACE_S + 30.0)
    window.close()
    delivered, failed, ms = produced_summary(producer)
    result.msgs_s = delivered * 1000 / ms
    result.mb_s = delivered * row.size / 1000 / ms
    client_cpu = producer.cpu_s + consumer_run.cpu_s
    fill_from_window(result, window, delivered, client_cpu, producer.wall_s)
    result.p50_ms, result.p99_ms, result.p999_ms, samples = percentiles(
        e2e_path, LATENCY_WARMUP_SAMPLES)
    ack = percentiles(ack_path, LATENCY_WARMUP_SAMPLES)
    result.notes.append(f"produce->consume over {samples} samples (first second dropped); "
                        f"produce->ack p50/p99/p99.9 {fmt(ack[0])}/{fmt(ack[1])}/{fmt(ack[2])} ms; "
                        f"linger {row.linger_ms:g} ms; RF {row.replicas}")
    if failed or samples + LATENCY_WARMUP_SAMPLES < count:
        result.notes.append(f"{failed} failed, {samples + LATENCY_WARMUP_SAMPLES} of "
                            f"{count} consumed")
    floor = client_latency_floor(ctx, row, tag)
    result.notes.append(f"client alone (librdkafka's in-process mock broker, same settings "
                        f"but the mock's 4 partitions, {LATENCY_FLOOR_S} s): produce->ack "
                        f"p50/p99/p99.9 "
                        f"{fmt(floor[0])}/{fmt(floor[1])}/{fmt(floor[2])} ms")


def latency_producer_argv(ctx, bootstrap, topic, row, count, ack_path):
    """The paced producer of a latency row: LATENCY_RATE msg/s, acks=all, the row's linger,
    one produce->ack sample (µs) per message into `ack_path`."""
    argv = produce_argv(ctx.paced_tool, SimpleNamespace(bootstrap=bootstrap), topic, row,
                        count, linger_ms=f"{row.linger_ms:g}")
    return argv + ["-r", str(LATENCY_RATE), "-l", "-A", ack_path]


def client_latency_floor(ctx, row, tag):
    """(p50, p99, p99.9) ms of produce->ack with the row's producer against librdkafka's
    mock cluster in the client's own process (`test.mock.num.brokers`): what the client's
    batching and threads cost with no broker process at all."""
    ack_path = ctx.path(tag, "floor-ack.us")
    argv = latency_producer_argv(ctx, f"{HOST}:1", "floor", row,
                                 LATENCY_RATE * (1 + LATENCY_FLOOR_S), ack_path)
    argv += ["-X", "test.mock.num.brokers=1"]
    run = wait_client(start_client(argv, ctx.path(tag, "floor.log")),
                      LATENCY_FLOOR_S + 1 + CLIENT_GRACE_S)
    delivered, failed, _ = produced_summary(run)
    if failed or not delivered:
        raise BenchError(f"the mock-broker producer delivered {delivered}, {failed} failed; "
                         f"see {run.log}")
    return percentiles(ack_path, LATENCY_WARMUP_SAMPLES)[:3]


# ---------------------------------------------------------------- idle rows


async def open_idle_connection(port, semaphore):
    """A connection that said ApiVersions v0, as every client does first, then idles."""
    async with semaphore:
        reader, writer = await asyncio.open_connection(HOST, port)
        body = rawkafka.request_header(rawkafka.API_VERSIONS, 0, 1)
        writer.write(rawkafka.frame(body))
        await writer.drain()
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        await reader.readexactly(size)
        return reader, writer


async def open_many(port, count):
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
    return await asyncio.gather(*(open_idle_connection(port, semaphore)
                                  for _ in range(count)))


async def close_all(connections):
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in connections), return_exceptions=True)


def idle_window(pids, seconds):
    window = Window(pids)
    time.sleep(seconds)
    return window.close()


def idle_cpu_percent(pids, seconds):
    return idle_window(pids, seconds).cpu_percent


def run_idle_partitions(ctx, row, brokers, result, tag):
    time.sleep(SETTLE_S)
    before = note_idle_memory(result, brokers.pids)
    window = Window(brokers.pids)
    started = time.monotonic()
    create_topic(brokers, "idle", IDLE_PARTITIONS, 1, timeout_s=120.0)
    created_s = time.monotonic() - started
    window.close()
    time.sleep(SETTLE_S)
    after = rss_mib(brokers.pids)
    result.rss_peak_mib = window.peak_mib
    result.broker_cpu_percent = idle_cpu_percent(brokers.pids, 5.0)
    disk = sum(os.stat(os.path.join(d, f)).st_blocks * 512
               for d, _, files in os.walk(brokers.data_root) for f in files)
    result.notes.append(f"{IDLE_PARTITIONS} partitions created in {created_s:.1f} s; "
                        f"RSS +{after - before:.1f} MiB = "
                        f"{(after - before) * 1024 / IDLE_PARTITIONS:.1f} KiB per partition; "
                        f"disk {disk / 2**20:.1f} MiB; CPU % is idle after")


def run_idle_connections(ctx, row, brokers, result, tag):
    time.sleep(SETTLE_S)
    before = note_idle_memory(result, brokers.pids)
    port = brokers.ports[0][0]
    window = Window(brokers.pids)
    loop = asyncio.new_event_loop()
    connections, parts = [], []
    try:
        for total in IDLE_CONNECTION_COUNTS:
            connections += loop.run_until_complete(open_many(port, total - len(connections)))
            time.sleep(SETTLE_S)
            delta = rss_mib(brokers.pids) - before
            cpu = idle_cpu_percent(brokers.pids, 5.0)
            parts.append(f"{total}: RSS +{delta:.1f} MiB = {delta * 1024 / total:.1f} KiB "
                         f"per connection, {cpu:.2f}% CPU idle")
            result.broker_cpu_percent = cpu
    finally:
        loop.run_until_complete(close_all(connections))
        loop.close()
    result.rss_peak_mib = window.close().peak_mib
    result.notes.append("; ".join(parts) + " (after ApiVersions; CPU % column: the last count)")


async def long_poll(port, topic, partitions, stop, stats, semaphore):
    """One consumer that parks a Fetch (max wait LONGPOLL_WAIT_MS) on an idle topic, again
    and again, until `stop` is set; counts responses, their latency and their errors."""
    reader, writer = await open_idle_connection(port, semaphore)
    parts = rawkafka.array([rawkafka.int32(p) + rawkafka.int64(0) + rawkafka.int32(1 << 20)
                            for p in range(partitions)], lambda item: item)
    body = (rawkafka.int32(-1) + rawkafka.int32(LONGPOLL_WAIT_MS) + rawkafka.int32(1)
            + rawkafka.int32(1 << 20) + rawkafka.int8(0)
            + rawkafka.array([rawkafka.string(topic) + parts], lambda item: item))
    correlation_id = 1
    try:
        while not stop.is_set():
            correlation_id += 1
            header = rawkafka.request_header(rawkafka.FETCH, 4, correlation_id)
            sent = time.monotonic()
            writer.write(rawkafka.frame(header + body))
            await writer.drain()
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            response = rawkafka.Reader(await reader.readexactly(size))
            if response.int32() != correlation_id:
                stats["errors"] += 1
            stats["errors"] += fetch_v4_errors(response)
            if stats["counting"]:
                stats["responses"] += 1
                stats["wait_s"] += time.monotonic() - sent
    finally:
        writer.close()


def fetch_v4_errors(reader):
    """Partitions with a non-zero error code in a Fetch v4 response body."""
    reader.int32()  # throttle_time_ms

    def read_partition(r):
        r.int32()
        error = r.int16()
        r.int64()
        r.int64()
        r.array(lambda rr: (rr.int64(), rr.int64()))
        r.nullable_bytes()
        return error

    topics = reader.array(lambda r: (r.string(), r.array(read_partition)))
    return sum(1 for _, errors in topics for e in errors if e != 0)


async def long_poll_for(port, topic, partitions, window_factory,
                        consumers=LONGPOLL_CONSUMERS):
    stop = asyncio.Event()
    stats = {"responses": 0, "wait_s": 0.0, "errors": 0, "counting": False}
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tasks = [asyncio.create_task(long_poll(port, topic, partitions, stop, stats, semaphore))
             for _ in range(consumers)]
    await asyncio.sleep(2 * LONGPOLL_WAIT_MS / 1000 + 1.0)  # all connected and parked
    # The window opens before counting starts and closes after it ends, so a window that
    # blocks this loop while it opens or closes (callgrind's) sees every counted response.
    window = window_factory()
    stats["counting"] = True
    await asyncio.sleep(LONGPOLL_SECONDS)
    stats["counting"] = False
    window.close()
    stop.set()
    # A poll that ended with an error of its own (a dropped connection) is one too.
    stats["errors"] += await finish_tasks(tasks, 5 * LONGPOLL_WAIT_MS / 1000)
    return window, stats


async def finish_tasks(tasks, timeout_s):
    """Lets `tasks` end by themselves for up to `timeout_s`, cancels the rest; returns how
    many ended with an error of their own."""
    await asyncio.wait(tasks, timeout=timeout_s)
    for task in tasks:
        task.cancel()
    failed = sum(1 for t in tasks if t.done() and not t.cancelled() and t.exception())
    await asyncio.gather(*tasks, return_exceptions=True)
    return failed


class BackgroundLongPolls:
    """LONGPOLL_CONSUMERS long polls on their own idle topic, in a thread with its own
    event loop, while a produce row runs: whether parked fetches of other partitions
    cost the producing broker anything (they must not be woken by its appends)."""

    def __init__(self, brokers, replicas):
        self.topic = create_topic(brokers, "idle", PARTITIONS_DEFAULT, replicas)
        self.port = brokers.ports[0][0]
        self.parked = threading.Event()
        self.stats = {"responses": 0, "wait_s": 0.0, "errors": 0, "counting": False}
        self.failed = 0
        self.loop = asyncio.new_event_loop()
        self.stop_event = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.counted_from = None
        self.counted_s = 0.0

    def run(self):
        self.loop.run_until_complete(self.poll_all())
        self.loop.close()

    async def poll_all(self):
        self.stop_event = asyncio.Event()
        semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
        tasks = [asyncio.create_task(long_poll(self.port, self.topic, PARTITIONS_DEFAULT,
                                               self.stop_event, self.stats, semaphore))
                 for _ in range(LONGPOLL_CONSUMERS)]
        await asyncio.sleep(2 * LONGPOLL_WAIT_MS / 1000 + 1.0)  # all connected and parked
        self.stats["counting"] = True
        self.parked.set()
        try:  # bounded even if nobody calls stop()
            await asyncio.wait_for(self.stop_event.wait(), self.limit_s)
        except asyncio.TimeoutError:
            pass
        self.stats["counting"] = False
        self.failed = await finish_tasks(tasks, 5 * LONGPOLL_WAIT_MS / 1000)

    def start(self, limit_s):
        self.limit_s = limit_s
        self.thread.start()
        if not self.parked.wait(timeout=60.0):
            raise BenchError("the long polls did not all park within 60 s")
        self.counted_from = time.monotonic()

    def restart_counts(self):
        """Counts from now on (a race with the polling thread costs one response)."""
        self.stats["responses"] = 0
        self.counted_from = time.monotonic()

    def stop(self):
        if self.counted_from is not None:
            self.counted_s = time.monotonic() - self.counted_from
        if self.stop_event is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout=30.0)

    def summary(self, alone, window):
        responses = self.stats["responses"] / max(self.counted_s, 1e-9) / LONGPOLL_CONSUMERS
        text = (f"while {LONGPOLL_CONSUMERS} long polls (max wait {LONGPOLL_WAIT_MS} ms) "
                f"parked on topic {self.topic}: {responses:.2f} responses/s per consumer, "
                f"{self.stats['errors']} errors, {self.failed} failed")
        if alone is not None and window.wall_s:
            text += (f"; the polls alone cost {alone.cpu_percent:.1f}% of a core, "
                     f"{alone.cpu_percent * window.wall_s / 100 / window.cpu_s * 100:.0f}% of "
                     f"this row's broker CPU")
        if self.failed or self.stats["errors"]:
            text += " (FAILED long polls)"
        return text


def run_idle_longpoll(ctx, row, brokers, result, tag):
    topic = create_topic(brokers, "idle", PARTITIONS_DEFAULT, 1)
    time.sleep(SETTLE_S)
    note_idle_memory(result, brokers.pids)
    client_start = own_cpu_seconds()
    window, stats = long_polls_on(brokers.ports[0][0], topic, brokers.pids)
    client_cpu = own_cpu_seconds() - client_start
    result.broker_cpu_percent = window.cpu_percent
    result.rss_peak_mib = window.peak_mib
    result.client_cpu_percent = 100 * client_cpu / window.wall_s
    responses = stats["responses"]
    mean_ms = 1000 * stats["wait_s"] / responses if responses else float("nan")
    result.notes.append(f"{LONGPOLL_CONSUMERS} consumers, Fetch max wait {LONGPOLL_WAIT_MS} ms "
                        f"on {PARTITIONS_DEFAULT} idle partitions: {responses / window.wall_s:.0f} "
                        f"responses/s, mean wait {mean_ms:.0f} ms, {stats['errors']} errors; "
                        f"{cost_per_response(window, responses)}")
    try:
        floor, floor_stats = longpoll_floor(ctx, tag, topic)
    except (OSError, subprocess.SubprocessError, BenchError) as error:
        # The broker's figures stand without it.
        result.notes.append(f"floor not measured: {error}")
        return
    floor_responses = floor_stats["responses"]
    result.notes.append(f"floor: the same polls answered by a bare epoll loop with the "
                        f"broker's deadline grid (scripts/longpoll_floor.c), "
                        f"{floor.cpu_percent:.1f}% of a core, "
                        f"{cost_per_response(floor, floor_responses)}, "
                        f"{floor_stats['errors']} errors")


def long_polls_on(port, topic, pids, window_factory=None, consumers=LONGPOLL_CONSUMERS):
    """`consumers` long polls on `port` for LONGPOLL_SECONDS: the window over them (by
    default the CPU window of `pids`), and the polls' counts."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(long_poll_for(
            port, topic, PARTITIONS_DEFAULT, window_factory or (lambda: Window(pids)),
            consumers))
    finally:
        loop.close()


def cost_per_response(window, responses):
    per = max(responses, 1)
    return (f"{1e6 * window.cpu_s / per:.1f} µs CPU per response, of which system (kernel) "
            f"{1e6 * window.kernel_s / per:.1f} µs ({100 * window.kernel_s / window.wall_s:.1f}% "
            f"of a core)")


def longpoll_floor(ctx, tag, topic):
    """The row's long polls against scripts/longpoll_floor.c: what one recv and one send
    per poll and a wake-up per deadline cost on this machine, the floor the broker's
    figure is read against."""
    return run_floor(ctx, tag, "longpoll_floor", ["grid"],
                     lambda port, pid: long_polls_on(port, topic, [pid]))


def run_floor(ctx, tag, name, args, measure):
    """Builds scripts/<name>.c (a second, with gcc: the source is in the repo), starts it
    on a free port with `args`, and returns `measure(port, pid)` once it is ready; stops
    it whatever happens."""
    binary = ctx.path(tag, name)
    subprocess.run(["gcc", "-O2", "-o", binary, os.path.join(ROOT, "scripts", f"{name}.c")],
                   check=True, timeout=120)
    port = free_port()
    with open(ctx.path(tag, f"{name}.log"), "w") as log:
        floor = subprocess.Popen([binary, str(port), *args], stdout=subprocess.PIPE,
                                 stderr=log, text=True)
    try:
        if floor.stdout.readline().strip() != "ready":
            raise BenchError(f"{name} did not start; see {log.name}")
        return measure(port, floor.pid)
    finally:
        floor.terminate()
        try:
            floor.wait(timeout=10)
        except subprocess.TimeoutExpired:
            floor.kill()
            floor.wait()


# ---------------------------------------------------------------- connection scale


def produce_v7_body(topic, partition, batch):
    """Produce v7, acks=1, one batch to one partition (non-transactional)."""
    partition_data = rawkafka.int32(partition) + rawkafka.nullable_bytes(batch)
    topic_data = rawkafka.string(topic) + rawkafka.array([partition_data], lambda item: item)
    return (rawkafka.string(None) + rawkafka.int16(1) + rawkafka.int32(30_000)
            + rawkafka.array([topic_data], lambda item: item))


def produce_v7_errors(reader):
    """Partitions with a non-zero error code in a Produce v7 response body."""
    def read_partition(r):
        r.int32()
        error = r.int16()
        r.int64()
        r.int64()
        r.int64()
        return error

    topics = reader.array(lambda r: (r.string(), r.array(read_partition)))
    return sum(1 for _, errors in topics for e in errors if e != 0)


async def produce_loop(port, bodies, stop, stats, semaphore):
    """One connection sending Produce requests one at a time until `stop` is set; counts
    the records of error-free answers while `stats["counting"]`."""
    reader, writer = await open_idle_connection(port, semaphore)
    stats["connected"] += 1
    correlation_id = 1
    try:
        while not stop.is_set():
            correlation_id += 1
            body = bodies[correlation_id % len(bodies)]
            writer.write(rawkafka.frame(rawkafka.request_header(rawkafka.PRODUCE, 7,
                                                                correlation_id) + body))
            await writer.drain()
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            response = rawkafka.Reader(await reader.readexactly(size))
            errors = produce_v7_errors(response) if response.int32() == correlation_id else 1
            stats["errors"] += errors
            if stats["counting"] and not errors:
                stats["records"] += CONNS_BATCH_RECORDS
    finally:
        writer.close()


async def produce_from_connections(port, topic, connections, seconds, window_factory):
    batch = rawkafka.build_batch([(None, b"x" * CONNS_RECORD_BYTES, ())] * CONNS_BATCH_RECORDS)
    bodies = [produce_v7_body(topic, p, batch) for p in range(PARTITIONS_DEFAULT)]
    stop = asyncio.Event()
    stats = {"records": 0, "errors": 0, "counting": False, "connected": 0}
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tasks = [asyncio.create_task(produce_loop(port, bodies, stop, stats, semaphore))
             for _ in range(connections)]
    # Every connection open and sending, then a moment of steady load, before counting.
    deadline = time.monotonic() + CONNS_CONNECT_TIMEOUT_S
    while (stats["connected"] < connections and time.monotonic() < deadline
           and not all(t.done() for t in tasks)):
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    stats["counting"] = True
    client_start = own_cpu_seconds()
    window = window_factory()
    await asyncio.sleep(seconds)
    window.close()
    client_cpu = own_cpu_seconds() - client_start
    stats["counting"] = False
    stop.set()
    failed = await finish_tasks(tasks, 30.0)
    return window, stats, client_cpu, failed


def run_conns(ctx, row, brokers, result, tag):
    """The broker's CPU per record with `row.connections` producing connections (Python
    asyncio clients: the client, not the broker, limits the rate here, so compare the
    broker µs/rec column between produce-conns rows, not msgs/s with the native rows)."""
    topic = create_topic(brokers, "bench", PARTITIONS_DEFAULT, 1)
    time.sleep(SETTLE_S)
    note_idle_memory(result, brokers.pids)
    loop = asyncio.new_event_loop()
    try:
        window, stats, client_cpu, failed = loop.run_until_complete(produce_from_connections(
            brokers.ports[0][0], topic, row.connections, ctx.seconds,
            lambda: Window(brokers.pids)))
    finally:
        loop.close()
    records = stats["records"]
    result.msgs_s = records / window.wall_s
    result.mb_s = records * CONNS_RECORD_BYTES / 1e6 / window.wall_s
    fill_from_window(result, window, records, client_cpu, window.wall_s)
    result.notes.append(f"{stats['connected']} of {row.connections} connections each looping "
                        f"Produce v7 acks=1 of {CONNS_BATCH_RECORDS} x {CONNS_RECORD_BYTES} B; "
                        f"client is Python; broker {kernel_per_record(window, records)}")
    if stats["connected"] < row.connections:
        result.notes.append("FAILED to open every connection")
    if stats["errors"] or failed:
        result.notes.append(f"{stats['errors']} FAILED partition answers, {failed} connections "
                            f"FAILED")
    try:
        floor, floor_stats = produce_floor(ctx, row, tag, topic)
    except (OSError, subprocess.SubprocessError, BenchError) as error:
        # The broker's figures stand without it.
        result.notes.append(f"floor not measured: {error}")
        return
    floor_records = floor_stats["records"]
    per_record = (f"{1e6 * floor.cpu_s / floor_records:.3f} µs/rec"
                  if floor_records else "no records")
    result.notes.append(f"floor: {floor_stats['connected']} of {row.connections} connections "
                        f"answered by a bare epoll loop that writes each batch into cached "
                        f"pages of a file (scripts/produce_floor.c), {per_record}, "
                        f"{kernel_per_record(floor, floor_records)}, "
                        f"{floor.cpu_percent:.0f}% of a core, {floor_records / floor.wall_s:.0f} "
                        f"msgs/s, {floor_stats['errors']} errors")


def kernel_per_record(window, records):
    return (f"system (kernel) {1e6 * window.kernel_s / records:.3f} µs/rec" if records
            else "no records")


def produce_floor(ctx, row, tag, topic):
    """The row's connections against scripts/produce_floor.c: what a recv, a write into
    cached pages and a send per request cost on this machine at this many connections, the
    floor the broker's figure is read against (new page-cache pages, which the broker's
    appends fill, cost what the page-cache probe says on top)."""
    def measure(port, pid):
        loop = asyncio.new_event_loop()
        try:
            window, stats, _, failed = loop.run_until_complete(produce_from_connections(
                port, topic, row.connections, ctx.seconds, lambda: Window([pid])))
        finally:
            loop.close()
        stats["errors"] += failed
        return window, stats

    data_dir = ctx.path(tag, "produce_floor.data")
    try:
        os.makedirs(data_dir, exist_ok=True)
        return run_floor(ctx, tag, "produce_floor", [data_dir], measure)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


RUNNERS = {"produce": run_produce, "consume": run_consume, "latency": run_latency,
           "idle-partitions": run_idle_partitions, "idle-connections": run_idle_connections,
           "idle-longpoll": run_idle_longpoll, "conns": run_conns}


def reported_kib():
    try:
        with open(REPORTED_KIB) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def run_row(ctx, row, binary, label, tag):
    """One row on a fresh broker (RF 3 rows: a fresh three-node cluster)."""
    result = Result(row.name, label)
    reported_before = reported_kib()
    brokers = Brokers(binary, 3 if row.replicas == 3 else 1, ctx.path(tag, "broker"))
    try:
        brokers.start()
        RUNNERS[row.kind](ctx, row, brokers, result, tag)
    except Exception as error:  # one failed row must not lose the others' results
        result.notes.append(f"FAILED: {type(error).__name__}: {error}")
    finally:
        brokers.stop()
    reported_after = reported_kib()
    if reported_before is not None and reported_after is not None:
        # Pages the host took back are faulted in again at their next touch (see
        # page_cache_probe): a row that saw much go back paid for that.
        result.reported_mib = (reported_after - reported_before) >> 10
        result.notes.append(f"{result.reported_mib} MiB handed back to the host meanwhile")
    return result


# ---------------------------------------------------------------- page-cache probe


def page_cache_probe():
    """Write speed into new page-cache pages and into the same pages once cached, in GB/s,
    and the CPU per KiB of the first. Every record a broker keeps passes through new
    page-cache pages, and on this machine class (a VM whose kernel hands freed memory back
    to the host: virtio-balloon free page reporting, /sys/module/page_reporting) their price
    moves by ten times: a page the host took back costs a host fault at its first touch.
    Measured with 1 GiB of 64 KiB writes: 0.5 GB/s into pages freed 6 s before, 4.1 GB/s
    into pages freed a moment before, 8.3 GB/s over cached pages; this probe has seen
    0.36-3.0 GB/s (0.23-2.4 µs CPU per KiB) for new pages. At 1 KiB per record that is a
    large part of a produce row's broker CPU, so the table is read beside these lines."""
    probe_dir = tempfile.mkdtemp(prefix="gracchus-bench-probe-")
    path = os.path.join(probe_dir, "probe")
    chunk = b"x" * PROBE_WRITE_BYTES
    timings = []
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            for _ in range(2):
                started, cpu_started = time.monotonic(), time.thread_time()
                for offset in range(0, PROBE_BYTES, PROBE_WRITE_BYTES):
                    os.pwrite(fd, chunk, offset)
                timings.append((time.monotonic() - started, time.thread_time() - cpu_started))
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    (new_s, new_cpu_s), (cached_s, _) = timings
    return SimpleNamespace(new_gbps=PROBE_BYTES / new_s / 1e9,
                           cached_gbps=PROBE_BYTES / cached_s / 1e9,
                           new_us_per_kib=new_cpu_s * 1e6 / (PROBE_BYTES / 1024))


def sendfile_probe():
    """What sending file bytes over loopback TCP costs the sender here, in µs of CPU per
    KiB, and the GB/s it reached: iperf3 -Z (sendfile from the page cache, one stream, a
    C reader on the other core), None without iperf3 (scripts/bench_loadgen.sh installs
    it). A consume row's broker does this and more for every byte it serves, so its µs
    per 1 KiB record is read against this figure. Seen 2026-12-04: 0.20-0.27 µs per KiB at
    3.8-5.1 GB/s (plain writes: 0.35-0.39). With a slower reader the sender pays more per
    byte: 0.37-0.47 µs behind a Python reader at 2.1-2.7 GB/s."""
    if not shutil.which("iperf3"):
        return None
    port = free_port()
    # --forceflush: the "Server listening" line comes through the pipe at once.
    server = subprocess.Popen(["iperf3", "-s", "-1", "--forceflush", "-B", HOST,
                               "-p", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        # It prints a rule of dashes, then "Server listening on PORT"; read unbuffered, as
        # select sees only what no Python buffer has taken yet.
        said = b""
        while b"Server listening" not in said:
            ready, _, _ = select.select([server.stdout], [], [], 10)
            chunk = os.read(server.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                return None
            said += chunk
        run = subprocess.run(["iperf3", "-c", HOST, "-p", str(port), "-Z", "-J",
                              "-t", str(SENDFILE_PROBE_S)],
                             capture_output=True, text=True, timeout=SENDFILE_PROBE_S + 30)
        # A failed test still prints JSON, with "error" and an empty "end".
        report = json.loads(run.stdout)
        if run.returncode != 0 or "error" in report:
            return None
        sent = report["end"]["sum_sent"]
        bytes_per_s = sent["bytes"] / sent["seconds"]
        sender_cores = report["end"]["cpu_utilization_percent"]["host_total"] / 100
        return SimpleNamespace(gbps=bytes_per_s / 1e9,
                               us_per_kib=sender_cores * 1e6 / (bytes_per_s / 1024))
    except (subprocess.SubprocessError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
    finally:
        server.kill()
        server.wait()


def probe_line(when):
    probe = page_cache_probe()
    loopback = sendfile_probe()
    return (f"# page cache {when}: new pages {probe.new_gbps:.2f} GB/s "
            f"({probe.new_us_per_kib:.2f} µs CPU per KiB), cached pages "
            f"{probe.cached_gbps:.2f} GB/s ({PROBE_BYTES >> 20} MiB in "
            f"{PROBE_WRITE_BYTES >> 20} MiB writes)\n"
            + (f"# loopback {when}: iperf3 -Z (sendfile) {loopback.gbps:.2f} GB/s, "
               f"{loopback.us_per_kib:.3f} µs sender CPU per KiB\n" if loopback else ""))


# ---------------------------------------------------------------- callgrind


def callgrind_total(path):
    """The dump's total event count (Ir: instructions executed)."""
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise BenchError(f"no totals in {path}")


def wait_dump(path, timeout_s=120.0):
    """callgrind_control -d returns once the request is delivered; the guest writes the
    file when it next runs. Waits until the file has its totals line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            callgrind_total(path)
            return path
        except (OSError, BenchError):
            time.sleep(0.2)
    raise BenchError(f"callgrind wrote no dump at {path}")


def callgrind_control(option, pid):
    """Zero (-z) or dump (-d) the counters of exactly this process (never of every
    callgrind process on the machine: other sessions may run one)."""
    subprocess.run(["callgrind_control", option, str(pid)], check=True, timeout=120,
                   stdout=subprocess.DEVNULL)


def run_callgrind(ctx, args):
    """Counts the broker's instructions per record for one produce or consume row: the
    broker runs under callgrind, its counters are zeroed once the topic is ready (and, for
    consume, filled by a native broker beforehand), the client sends or reads exactly
    --records records, then the counters are dumped."""
    row = parse_row(args.callgrind)
    if row.kind != "idle-longpoll" and (row.kind not in ("produce", "consume")
                                        or row.replicas != 1 or row.herd):
        raise SystemExit("--callgrind takes idle-longpoll, or a produce or consume row "
                         "with RF 1, no -herd")
    if not shutil.which("valgrind"):
        raise SystemExit("--callgrind needs valgrind")
    tag = f"callgrind-{row.name}"
    data_root = tempfile.mkdtemp(prefix="gracchus-bench-data-")
    out_file = ctx.path(tag, "out")
    # --trace-children: the broker re-executes itself once at start (src/allocator.rs,
    # to fix malloc's mmap threshold); without it callgrind would watch only that exec.
    wrapper = ["valgrind", "--tool=callgrind", "--trace-children=yes",
               f"--callgrind-out-file={out_file}",
               f"--log-file={ctx.path(tag, 'valgrind.log')}"]
    cluster_id = random_cluster_id()
    try:
        if row.kind == "consume":
            native = Brokers(args.binary, 1, ctx.path(tag, "fill-broker"), data_root=data_root,
                             cluster_id=cluster_id)
            try:
                native.start()
                create_topic(native, "bench", row.partitions, 1)
                run_callgrind_fill(ctx, row, native, args.records, tag)
            finally:
                native.stop()
        brokers = Brokers(args.binary, 1, ctx.path(tag, "broker"), wrapper, data_root, cluster_id)
        try:
            brokers.start(CALLGRIND_START_TIMEOUT_S)
            if row.kind == "idle-longpoll":
                return callgrind_longpoll(ctx, row, brokers, out_file, tag)
            if row.kind == "produce":
                create_topic(brokers, "bench", row.partitions, 1, CALLGRIND_START_TIMEOUT_S)
            else:
                brokers.wait_topic("bench", row.partitions, 1, CALLGRIND_START_TIMEOUT_S)
            return callgrind_measure(ctx, row, brokers, args.records, out_file, tag)
        finally:
            brokers.stop(timeout_s=CALLGRIND_START_TIMEOUT_S)  # callgrind writes its last dump
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


def run_callgrind_fill(ctx, row, brokers, records, tag):
    argv = produce_argv(ctx.tool, brokers, "bench",
                        Row("fill", "produce", row.size, "1", row.codec), records)
    run = wait_client(start_client(argv, ctx.path(tag, "fill.log")), 300.0)
    delivered, failed, _ = produced_summary(run)
    if delivered != records or failed:
        raise SystemExit(f"fill delivered {delivered} of {records}; see {run.log}")


def callgrind_measure(ctx, row, brokers, records, out_file, tag):
    pid = brokers.pids[0]
    time.sleep(SETTLE_S)
    callgrind_control("-z", pid)
    if row.kind == "produce":
        argv = produce_argv(ctx.tool, brokers, "bench", row, records)
    else:
        argv = consume_argv(ctx.tool, brokers, "bench", row.partitions, records) + ["-e"]
    run = wait_client(start_client(argv, ctx.path(tag, "client.log")), 1800.0)
    callgrind_control("-d", pid)
    done = (produced_summary(run)[0] if row.kind == "produce" else consumed_summary(run)[0])
    return callgrind_summary(row, done, out_file, tag, ctx, run.wall_s)


def callgrind_summary(row, done, out_file, tag, ctx, client_wall_s):
    """The first dump's count per record (or response) `done`, its top functions and
    their callers."""
    dump = wait_dump(f"{out_file}.1")
    fix_zeroed_calls(dump)
    total = callgrind_total(dump)
    annotate = ctx.path(tag, "annotate.txt")
    for inclusive, path in (("no", annotate), ("yes", ctx.path(tag, "annotate-inclusive.txt"))):
        with open(path, "w") as f:
            subprocess.run(["callgrind_annotate", f"--inclusive={inclusive}", "--threshold=100",
                            "--auto=no", dump], stdout=f, stderr=subprocess.DEVNULL, check=True, timeout=300)
    callers_path = ctx.path(tag, "annotate-callers.txt")
    with open(callers_path, "w") as f:
        subprocess.run(["callgrind_annotate", "--tree=caller", "--inclusive=no",
                        "--threshold=100", "--auto=no", dump], stdout=f,
                       stderr=subprocess.DEVNULL, check=True, timeout=300)
    top = top_functions(annotate, 15, total)
    return {"row": row.name, "records": done, "instructions": total,
            "instructions_per_record": total / max(done, 1), "dump": dump,
            "annotate": annotate, "top": top,
            "callers": top_callers(callers_path, [name for _, _, name in top[:5]], 3),
            "client_wall_s": client_wall_s,
            "unit": "response" if row.kind == "idle-longpoll" else "record"}


class CallgrindWindow:
    """A window that zeroes one callgrind process's counters when it opens and dumps them
    when it closes (both block the caller's event loop for the moment they take)."""

    def __init__(self, pid):
        self.pid = pid
        callgrind_control("-z", pid)

    def close(self):
        callgrind_control("-d", self.pid)
        return self


def callgrind_longpoll(ctx, row, brokers, out_file, tag):
    """Instructions per long-poll response: CALLGRIND_LONGPOLL_CONSUMERS polls (fewer
    than the row's: under callgrind the broker runs some 50 times slower, and 1000 polls
    would overload it, batching wake-ups as the real row does not) for LONGPOLL_SECONDS."""
    topic = create_topic(brokers, "idle", PARTITIONS_DEFAULT, 1, CALLGRIND_START_TIMEOUT_S)
    time.sleep(SETTLE_S)
    pid = brokers.pids[0]
    started = time.monotonic()
    _, stats = long_polls_on(brokers.ports[0][0], topic, brokers.pids,
                             lambda: CallgrindWindow(pid), CALLGRIND_LONGPOLL_CONSUMERS)
    if stats["errors"]:
        raise BenchError(f"{stats['errors']} long polls failed under callgrind")
    return callgrind_summary(row, stats["responses"], out_file, tag, ctx,
                             time.monotonic() - started)


def fix_zeroed_calls(dump):
    """Calls in flight when the counters were zeroed are dumped with `calls=0`, and
    callgrind_annotate (3.19) then books their whole inclusive cost as the caller's self
    cost (every thread's root frame shows 100%). Counting them as one call fixes that;
    only call counts change, no instruction count."""
    with open(dump) as f:
        text = f.read()
    with open(dump, "w") as f:
        f.write(re.sub(r"^calls=0 ", "calls=1 ", text, flags=re.MULTILINE))


# One callgrind_annotate line: "1,234 (12.34%)  [< or *]  file:function (3x) [object]".
ANNOTATE_LINE_RE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+([<*>]\s+)?(.*?)"
                              r"(?:\s+\([\d,]+x\))?(?:\s+\[[^\]]*\])?$")


def annotate_entry(line):
    """(instructions, marker, function) of an annotate line, or None. The source file
    before the function is dropped: code inlined from several files is one function."""
    m = ANNOTATE_LINE_RE.match(line)
    if not m:
        return None
    where = m[3]
    name = where.split(":", 1)[1] if ":" in where and not where.startswith("<") else where
    name = re.sub(r"::h[0-9a-f]{16}", "", name).strip()
    return int(m[1].replace(",", "")), (m[2] or "").strip(), name


def top_functions(annotate_path, count, total):
    """The `count` functions with the most self instructions, as (instructions, percent,
    name), summed over the (source file, function) lines callgrind_annotate splits them into."""
    with open(annotate_path) as f:
        text = f.read()
    # The function list is the block after the "file:function" heading.
    listing = text.split("file:function", 1)[-1].split("\n\n", 1)[0]
    by_function = {}
    for line in listing.splitlines():
        entry = annotate_entry(line)
        if entry and "PROGRAM TOTALS" not in line:
            by_function[entry[2]] = by_function.get(entry[2], 0) + entry[0]
    ranked = sorted(by_function.items(), key=lambda item: -item[1])[:count]
    return [(n, 100 * n / total, name) for name, n in ranked]


def top_callers(callers_path, names, count):
    """{function: [(instructions, caller)]}: for each named function, the `count` callers
    whose calls to it cost the most, callees included (from `--tree=caller`, whose blocks
    list a function's callers ("<") above the function ("*"))."""
    with open(callers_path) as f:
        blocks = f.read().split("\n\n")
    found = {name: {} for name in names}
    for block in blocks:
        entries = [e for e in map(annotate_entry, block.splitlines()) if e]
        selves = [e for e in entries if e[1] == "*"]
        if not selves or selves[0][2] not in found:
            continue
        callers = found[selves[0][2]]
        for instructions, marker, caller in entries:
            if marker == "<":
                callers[caller] = callers.get(caller, 0) + instructions
    return {name: sorted(((n, c) for c, n in callers.items()), reverse=True)[:count]
            for name, callers in found.items()}


def print_callgrind(result):
    print(f"## callgrind: {result['row']}\n")
    unit = result["unit"]
    print(f"{result['records']} {unit}s, {result['instructions']:,} broker instructions "
          f"= **{result['instructions_per_record']:,.0f} instructions per {unit}**")
    print(f"dump: {result['dump']}\n(`callgrind_annotate {result['dump']}`; "
          f"self costs: {result['annotate']})\n")
    print("| Ir (self) | % | function |\n|---:|---:|---|")
    for instructions, percent, name in result["top"]:
        print(f"| {instructions:,} | {percent:.1f} | `{short(name)}` |")
    print("\nThe top five's main callers (instructions of those calls, callees included):\n")
    for name, callers in result["callers"].items():
        listed = "; ".join(f"`{short(caller, 100)}` {n:,}" for n, caller in callers)
        print(f"- `{short(name, 80)}` <- {listed or '-'}")
    print()


def short(name, limit=140):
    return name if len(name) <= limit else name[:limit - 3] + "..."


# ---------------------------------------------------------------- output


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


COLUMNS = ["row", "bin", "msgs/s", "MB/s", "broker µs/rec", "broker CPU %", "client CPU %",
           "RSS idle MiB", "anon idle MiB", "RSS peak MiB", "p50 ms", "p99 ms", "p99.9 ms", "notes"]


def table_line(r):
    cells = [r.row, r.label, fmt(r.msgs_s, 0), fmt(r.mb_s, 1), fmt(r.broker_us_per_record, 3),
             fmt(r.broker_cpu_percent, 1), fmt(r.client_cpu_percent, 0), fmt(r.rss_idle_mib, 1),
             fmt(r.anon_idle_mib, 1), fmt(r.rss_peak_mib, 1), fmt(r.p50_ms), fmt(r.p99_ms),
             fmt(r.p999_ms), "; ".join(r.notes)]
    return "| " + " | ".join(cells) + " |"


def median_result(results):
    """The per-field median of repeated runs of one row and binary."""
    merged = Result(results[0].row, results[0].label)
    for name in ("msgs_s", "mb_s", "broker_us_per_record", "broker_cpu_percent",
                 "client_cpu_percent", "rss_idle_mib", "anon_idle_mib", "rss_peak_mib",
                 "p50_ms", "p99_ms", "p999_ms"):
        values = [getattr(r, name) for r in results if getattr(r, name) is not None]
        setattr(merged, name, statistics.median(values) if values else None)
    if len(results) > 1:
        spread = [f"median of {len(results)}"]
        for name, digits in (("msgs_s", 0), ("broker_us_per_record", 3), ("p99_ms", 2),
                             ("reported_mib", 0)):
            values = [getattr(r, name) for r in results if getattr(r, name) is not None]
            if values:
                spread.append(f"{name} {fmt(min(values), digits)}..{fmt(max(values), digits)}")
        merged.notes.append(", ".join(spread))
        merged.notes += [n for r in results for n in r.notes if "FAILED" in n]
    else:
        merged.notes = list(results[0].notes)
    return merged


def ratio_line(row, a, b):
    def ratio(name):
        x, y = getattr(a, name), getattr(b, name)
        return f"{y / x:.2f}x" if x and y is not None else "-"
    cells = [row, "B/A", ratio("msgs_s"), ratio("mb_s"), ratio("broker_us_per_record"),
             ratio("broker_cpu_percent"), ratio("client_cpu_percent"), ratio("rss_idle_mib"),
             ratio("anon_idle_mib"), ratio("rss_peak_mib"), ratio("p50_ms"), ratio("p99_ms"),
             ratio("p999_ms"), ""]
    return "| " + " | ".join(cells) + " |"


def print_table(rows, runs, binaries, stream):
    print("| " + " | ".join(COLUMNS) + " |", file=stream)
    print("|" + "---|" * len(COLUMNS), file=stream)
    for row in rows:
        medians = {}
        for label in binaries:
            results = [r for r in runs if r.row == row.name and r.label == label]
            if results:
                medians[label] = median_result(results)
                print(table_line(medians[label]), file=stream)
        if len(medians) == 2:
            print(ratio_line(row.name, medians["A"], medians["B"]), file=stream)


# ---------------------------------------------------------------- main


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Broker benchmark with librdkafka's rdkafka_performance (issue 12). "
                    "Rows: " + ", ".join(DEFAULT_ROWS) + "; any name matching "
                    + Row.__doc__.split(":", 1)[1].strip())
    parser.add_argument("--loadgen", required=True,
                        help="directory with rdkafka_performance[_paced] (scripts/bench_loadgen.sh)")
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/gracchus"))
    parser.add_argument("--compare", nargs=2, metavar=("BIN_A", "BIN_B"),
                        help="alternate two broker binaries row by row; prints both and B/A")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per row and binary (A, B, A, B ... with --compare)")
    parser.add_argument("--scenario", action="append", default=[],
                        help="a row name (repeatable or comma-separated)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{', '.join(QUICK_ROWS)} at {QUICK_SECONDS} s")
    parser.add_argument("--seconds", type=int, help="length of each produce/latency run (10)")
    parser.add_argument("--callgrind", metavar="ROW",
                        help="instructions per record of one produce/consume row (per response of "
                             "idle-longpoll) under callgrind")
    parser.add_argument("--records", type=int, default=100_000,
                        help="records sent or read in the --callgrind run")
    parser.add_argument("--out", help="output dir (default /tmp/gracchus-bench-results/<time>)")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else 10
    if args.seconds < 2 or args.repeat < 1 or args.records < 1:
        parser.error("--seconds >= 2, --repeat >= 1 and --records >= 1")
    names = [n for s in args.scenario for n in s.split(",") if n]
    names = names or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    args.rows = [parse_row(n) for n in names]
    return args


def main(argv):
    args = parse_args(argv)
    out = args.out or os.path.join("/tmp/gracchus-bench-results", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    ctx = Context(args, out)
    for tool in (ctx.tool, ctx.paced_tool):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"missing {tool}: run scripts/bench_loadgen.sh")
    binaries = {"A": args.compare[0], "B": args.compare[1]} if args.compare \
        else {"base": args.binary}
    for path in binaries.values():
        if not os.access(path, os.X_OK):
            raise SystemExit(f"broker binary {path} is missing or not executable")
    open_files = raise_open_files_limit()
    header = (f"# gracchus bench {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, {os.cpu_count()} cores, "
              f"load {' '.join(open('/proc/loadavg').read().split()[:3])}, seconds {args.seconds}, "
              f"open files {open_files}\n"
              + "".join(f"# {label} = {path}\n" for label, path in binaries.items())
              + f"# raw logs: {out}\n"
              + probe_line("before"))
    print(header, flush=True)
    if args.callgrind:
        result = run_callgrind(ctx, args)
        print_callgrind(result)
        with open(os.path.join(out, "callgrind.json"), "w") as f:
            json.dump(result, f, indent=1)
        return 0
    runs = run_all(ctx, args, binaries)
    footer = probe_line("after")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump([r.__dict__ for r in runs], f, indent=1)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(header + "\n")
        print_table(args.rows, runs, binaries, f)
        f.write("\n" + footer)
    print_table(args.rows, runs, binaries, sys.stdout)
    print("\n" + footer, end="")
    print(f"\nMB = 10^6 bytes of payload; CPU % = 100 per core; µs/rec = broker CPU per record "
          f"acked or consumed; RSS summed over a cluster's nodes. Raw logs: {out}")
    return 1 if any(any("FAILED" in n for n in r.notes) for r in runs) else 0


def run_all(ctx, args, binaries):
    runs = []
    for row in args.rows:
        for repeat in range(args.repeat):
            for label, binary in binaries.items():
                tag = f"{row.name}.{label}.{repeat + 1}"
                started = time.monotonic()
                result = run_row(ctx, row, binary, label, tag)
                runs.append(result)
                print(f"{time.strftime('%H:%M:%S')} {tag} ({time.monotonic() - started:.0f} s): "
                      + table_line(result), file=sys.stderr, flush=True)
    return runs


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
