"""Broker process helper and fixtures for the real-client protocol tests.

One broker per test module (module-scoped fixture `broker`), on a free 127.0.0.1 port with
its own temporary log directory; tests keep apart by unique topic names (`topic` fixture).
Tests that need other broker settings start their own with `start_broker(...)`.

The binary is target/release/gracchus of this repository, or $GRACCHUS_BIN.
Extra `--override key=value` pairs for every broker: $GRACCHUS_EXTRA_OVERRIDES
(whitespace separated). Each broker's stderr goes to a file; when a test fails, the tail
of every broker it used is attached to the report.
"""

import atexit
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
from clients import die_with_parent

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO_ROOT, "target", "release", "gracchus")
HOST = "127.0.0.1"
NODE_ID = 1
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
STDERR_TAIL_LINES = 60

BACKTRACE_FRAME = re.compile(r"^\s+(\d+: |at )")
ALARM = re.compile(r"panicked at|\bERROR\b")

log = logging.getLogger("gracchus.tests")

# Every Broker ever created in this session, so that atexit can kill stragglers by PID
# and the report hook can find brokers a test started itself.
_ALL_BROKERS = []


def broker_binary():
    return os.environ.get("GRACCHUS_BIN", DEFAULT_BIN)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_accepts(port, timeout_s=0.5):
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# ApiVersions v0: api key 18, version 0, correlation id 1, no client id; empty body.
API_VERSIONS_V0 = b"\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x01\xff\xff"


def answers_requests(port, timeout_s=0.5):
    """True once the broker answers ApiVersions. The listener is bound before the logs
    are opened (and recovered), so an accepting port does not mean a ready broker."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            sock.sendall(API_VERSIONS_V0)
            size = sock.recv(4)
            return len(size) == 4 and int.from_bytes(size, "big") > 0
    except OSError:
        return False


class Broker:
    """One gracchus process; start/stop/kill/restart on the same port and data dir."""

    def __init__(self, name, data_root, overrides=None, env=None):
        self.name = name
        self.port = free_port()
        # /metrics on its own port: brokers started together must not share 9644.
        self.http_port = free_port()
        self.data_dir = os.path.join(data_root, f"{name}-data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.stderr_path = os.path.join(data_root, f"{name}.stderr.log")
        self.overrides = {
            "listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "log.dirs": self.data_dir,
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "http.listener": f"{HOST}:{self.http_port}",
        }
        self.overrides.update(overrides or {})
        # Extra environment variables (KAFKA_* names, CLUSTER_ID) for the process.
        self.env = dict(env or {})
        self.process = None
        self.starts = 0
        self.exit_codes = []
        _ALL_BROKERS.append(self)

    @property
    def bootstrap(self):
        return f"{HOST}:{self.port}"

    @property
    def metrics_url(self):
        return f"http://{HOST}:{self.http_port}/metrics"

    def command(self):
        command = [broker_binary()]
        for key, value in self.overrides.items():
            command += ["--override", f"{key}={value}"]
        for pair in os.environ.get("GRACCHUS_EXTRA_OVERRIDES", "").split():
            command += ["--override", pair]
        return command

    def is_running(self):
        return self.process is not None and self.process.poll() is None

    def start(self):
        """Starts the process and waits until the broker answers ApiVersions."""
        assert not self.is_running(), f"{self.name} is already running"
        binary = broker_binary()
        if not os.access(binary, os.X_OK):
            pytest.fail(f"broker binary {binary} is missing or not executable "
                        "(run `cargo build --release` or set GRACCHUS_BIN)")
        self.starts += 1
        with open(self.stderr_path, "ab") as stderr:
            stderr.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n"
                         .encode())
            stderr.flush()
            env = dict(os.environ, NO_COLOR="1")  # plain log lines in the stderr file
            env.update(self.env)
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                cwd=self.data_dir, env=env, preexec_fn=die_with_parent)
        log.info("%s: started pid %d on port %d", self.name, self.process.pid, self.port)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.exit_codes.append(code)
                self.process = None
                pytest.fail(f"{self.name} exited with {code} during start-up\n"
                            f"{self.stderr_tail()}")
            if answers_requests(self.port):
                return self
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"{self.name} did not accept connections on {self.bootstrap} within "
                    f"{START_TIMEOUT_S:.0f} s\n{self.stderr_tail()}")

    def _wait(self, timeout_s):
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self.exit_codes.append(code)
        self.process = None
        return code

    def stop(self, timeout_s=STOP_TIMEOUT_S):
        """SIGTERM and wait; returns the exit code (SIGKILL and fail after timeout_s)."""
        if not self.is_running():
            return self.exit_codes[-1] if self.exit_codes else None
        pid = self.process.pid
        self.process.send_signal(signal.SIGTERM)
        code = self._wait(timeout_s)
        if code is None:
            self.kill()
            pytest.fail(f"{self.name} (pid {pid}) ignored SIGTERM for {timeout_s:.0f} s\n"
                        f"{self.stderr_tail()}")
        log.info("%s: pid %d stopped with exit code %s", self.name, pid, code)
        return code

    def kill(self):
        """SIGKILL (kill -9) and wait; returns the exit code (-9)."""
        if not self.is_running():
            return self.exit_codes[-1] if self.exit_codes else None
        pid = self.process.pid
        self.process.kill()
        code = self._wait(STOP_TIMEOUT_S)
        log.info("%s: pid %d killed (%s)", self.name, pid, code)
        return code

    def restart(self, hard=False):
        """Stops (SIGTERM, or SIGKILL when hard) and starts again on the same port and dir."""
        if hard:
            self.kill()
        else:
            code = self.stop()
            assert code == 0, f"{self.name} exited with {code} on SIGTERM, expected 0"
        return self.start()

    def stderr_tail(self, lines=STDERR_TAIL_LINES):
        """The last lines of the broker's stderr, without backtrace frames, and every
        panic or ERROR line of the file (they may be far above the tail)."""
        try:
            with open(self.stderr_path, "rb") as stderr:
                text = stderr.read().decode("utf-8", "replace")
        except OSError as error:
            return f"(no stderr file: {error})"
        kept = [line for line in text.splitlines() if not BACKTRACE_FRAME.match(line)]
        tail = kept[-lines:]
        alarms = [line for line in kept[:-lines] if ALARM.search(line)][-20:]
        out = [f"----- {self.name} stderr ({self.stderr_path}) -----"]
        if alarms:
            out += ["(earlier panics and errors)"] + alarms + ["(last lines)"]
        return "\n".join(out + tail)

    def __repr__(self):
        return f"Broker({self.name}, {self.bootstrap})"


@atexit.register
def _kill_stragglers():
    for broker in _ALL_BROKERS:
        if broker.is_running():
            broker.process.kill()
            try:
                broker.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="session")
def data_root(request):
    """Brokers' data dirs and stderr files; removed after a run without failures."""
    root = tempfile.mkdtemp(prefix="gracchus-protocol-tests-")
    yield root
    if request.session.testsfailed == 0:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"\nbroker data dirs and stderr logs kept in {root}")


def _unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def start_broker(data_root):
    """Factory: start_broker(prefix, {"kafka.config.name": value}, env={"NAME": value})
    -> a running Broker.

    Stops every broker it started when the session ends (by PID; SIGKILL if SIGTERM fails).
    Tests should stop their own brokers with .stop() as soon as they are done.
    """
    started = []

    def factory(prefix="broker", overrides=None, env=None):
        broker = Broker(_unique(prefix), data_root, overrides, env)
        started.append(broker)
        return broker.start()

    yield factory
    for broker in started:
        if broker.is_running():
            try:
                broker.stop()
            except BaseException:  # pytest.fail inside stop(); still kill the rest
                broker.kill()


@pytest.fixture(scope="module")
def broker(request, data_root):
    """A broker for this module: num.partitions and auto-creation from the module's
    BROKER_OVERRIDES dict (keys with dots), defaults num.partitions=1, auto-create on.

    Teardown stops it with SIGTERM and checks it exits 0 (a clean shutdown).
    """
    module_name = request.module.__name__.rsplit(".", 1)[-1]
    overrides = getattr(request.module, "BROKER_OVERRIDES", {})
    broker = Broker(_unique(module_name), data_root, overrides)
    try:
        broker.start()
        yield broker
    finally:
        code = broker.stop() if broker.is_running() else None
        broker.kill()  # no-op unless stop() failed half-way
    assert code in (0, None), f"{broker.name} exited with {code} on SIGTERM, expected 0\n" \
        f"{broker.stderr_tail()}"


@pytest.fixture
def topic(request):
    """A unique topic name for this test (not created)."""
    base = re.sub(r"[^a-zA-Z0-9.-]+", "-", request.node.name.replace("_", "-")).strip("-.")
    return _unique(base[:100])


# ---------------------------------------------------------------- failure reports


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item._brokers_before = len(_ALL_BROKERS)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    brokers = [value for value in getattr(item, "funcargs", {}).values()
               if isinstance(value, Broker)]
    # Nodes of a cluster.Cluster fixture (possibly module-scoped, started before this test).
    brokers += [node for value in getattr(item, "funcargs", {}).values()
                if type(value).__name__ == "Cluster" for node in getattr(value, "nodes", [])]
    brokers += _ALL_BROKERS[getattr(item, "_brokers_before", len(_ALL_BROKERS)):]
    seen = set()
    for broker in brokers:
        if broker.name in seen:
            continue
        seen.add(broker.name)
        report.sections.append((f"broker {broker.name} ({broker.bootstrap})",
                                broker.stderr_tail()))


@pytest.fixture
def group_members():
    """Factory: group_members(broker, name, group_id, topics, assignor="range",
    commit=True, **librdkafka_config) -> a started clients.GroupMember. `assignor` is the
    classic protocol's; with group.protocol=consumer it is not used.

    Closes (by its polling thread, bounded) every member the test did not close itself.
    """
    import clients  # the tests' helper module, next to this file

    started = []

    def factory(broker, name, group_id, topics, assignor="range", commit=True, **config):
        # KIP-848 members name a server-side assignor (group.remote.assignor) instead.
        if config.get("group.protocol") != "consumer":
            config = {"partition.assignment.strategy": assignor, **config}
        member = clients.GroupMember(broker, group_id, topics, name, commit=commit,
                                     **config)
        started.append(member)
        return member.start()

    yield factory
    for member in started:
        try:
            member.close()
        except AssertionError as error:
            log.warning("group member %s did not close: %s", member.name, error)


@pytest.fixture
def make_cluster(data_root):
    """Factory: make_cluster(n=3, start=True, wait_formed=True, **cluster.Cluster kwargs)
    -> a cluster.Cluster of n nodes (started and formed unless told otherwise).

    netns=True runs every node in its own network namespace; if namespaces cannot be
    created here the test fails with the reason (skips instead with env
    GRACCHUS_ALLOW_NETNS_SKIP=1). Every cluster it made is closed when
    the test ends, passed or failed: each node killed by PID, namespaces, links, bridge
    and iptables rule removed. The nodes' stderr tails go into a failing test's report.
    """
    import cluster  # the harness, next to this file

    made = []

    def factory(n=3, start=True, wait_formed=True, **kwargs):
        if kwargs.get("netns"):
            available, reason = cluster.namespaces_available()
            if not available:
                # A skipped cut test reads as a pass in a summary: fail unless the run
                # says that skipping it is acceptable here.
                message = f"network namespaces unavailable: {reason}"
                if os.environ.get("GRACCHUS_ALLOW_NETNS_SKIP") == "1":
                    pytest.skip(message)
                pytest.fail(f"{message} (set GRACCHUS_ALLOW_NETNS_SKIP=1 to skip instead)",
                            pytrace=False)
        # A constructor that fails half-way removes its network itself; atexit closes
        # anything else it registered.
        nodes = cluster.Cluster(n, data_root, **kwargs)
        made.append(nodes)
        if start:
            nodes.start(wait_formed=wait_formed)
        return nodes

    yield factory
    for nodes in made:
        nodes.close()
