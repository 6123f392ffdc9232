#!/usr/bin/env python3
"""Restart-time benchmark: how long a broker with N GB of data takes to start.

Fills a fresh data dir with --gb GB across --partitions partitions by producing large
multi-partition requests (raw frames, acks=1, one pre-built batch per partition resent;
bounded by the byte target and --fill-timeout), then measures start-up to an accepting
port and to the first successful Metadata response, in two cases:

  kill-9: the filled broker is killed with SIGKILL, then started (no clean marker: the
          active segments are CRC-scanned, producer state from snapshot + headers);
  clean:  that broker is stopped with SIGTERM (timed too), then started.

Each case is measured with the data in the page cache (warm: every file read first) and,
with --cold, after evicting this data dir's files from the page cache (fsync +
POSIX_FADV_DONTNEED on each file: other processes' cache is untouched). --compare BIN runs the same restarts with
another binary (e.g. main's) on the same data. Brokers are stopped by PID; the data dir
is deleted at the end unless --keep.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "protocol-tests"))
import rawkafka  # noqa: E402  (the tests' raw-frame helpers)

HOST = "127.0.0.1"
START_TIMEOUT_S = 600.0
POLL_S = 0.005


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, data_dir, port, segment_bytes):
        self.binary = binary
        self.data_dir = data_dir
        self.port = port
        self.segment_bytes = segment_bytes
        self.process = None
        self.log = open(os.path.join(os.path.dirname(data_dir), "broker.log"), "ab")

    def start(self):
        """Starts the process; returns (seconds to accept, seconds to first Metadata)."""
        command = [self.binary,
                   "--override", f"listeners=PLAINTEXT://{HOST}:{self.port}",
                   "--override", f"log.dirs={self.data_dir}",
                   "--override", f"log.segment.bytes={self.segment_bytes}",
                   "--override", "auto.create.topics.enable=false",
                   "--override", "http.listener=none"]
        began = time.monotonic()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=self.log, env=dict(os.environ, NO_COLOR="1"))
        accepted = self._until(self._accepts) - began
        metadata = self._until(self._metadata_ok) - began
        return accepted, metadata

    def _until(self, predicate):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"broker exited with {self.process.returncode} during start-up")
            if predicate():
                return time.monotonic()
            time.sleep(POLL_S)
        self.kill()
        sys.exit("broker did not start in time")

    def _accepts(self):
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _metadata_ok(self):
        try:
            with rawkafka.Connection(HOST, self.port, timeout_s=30) as conn:
                metadata = rawkafka.metadata_v4(conn, None)
                topics = metadata["topics"].values()
                return bool(metadata["brokers"]) and all(error == 0 for error, _ in topics)
        except (OSError, AssertionError, ValueError):
            return False

    def stop(self):
        """SIGTERM; returns seconds until the process exited."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=600)
        assert code == 0, f"exit code {code} on SIGTERM"
        return time.monotonic() - began

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)


def fill(broker, topic, partitions, target_bytes, batch_bytes, timeout_s):
    """Produces until target_bytes are acknowledged; returns (bytes, seconds)."""
    value = os.urandom(1024)
    count = max(1, batch_bytes // (len(value) + 20))
    batch = rawkafka.build_batch([(b"key-%d" % index, value, []) for index in range(count)])
    per_request = max(1, min(partitions, (1 << 20) // len(batch)))
    began = time.monotonic()
    written = 0
    partition = 0
    with rawkafka.Connection(HOST, broker.port, timeout_s=60) as conn:
        while written < target_bytes and time.monotonic() - began < timeout_s:
            chosen = [(partition + index) % partitions for index in range(per_request)]
            partition = (partition + per_request) % partitions
            results = rawkafka.produce_partitions(conn, topic, {p: batch for p in chosen},
                                                  acks=1)
            assert all(r.error_code == 0 for r in results.values()), results
            written += len(batch) * len(chosen)
    return written, time.monotonic() - began


def warm_page_cache(data_dir):
    for root, _, files in os.walk(data_dir):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def evict_page_cache(data_dir):
    for root, _, files in os.walk(data_dir):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def create_topic(port, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": f"{HOST}:{port}"})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(60)


def restarts(binary, args, data_dir, port, cold):
    """kill -9 restart, then clean restart; returns rows (case, accept_s, metadata_s)."""
    rows = []
    broker = Broker(binary, data_dir, port, args.segment_bytes)
    for case in ("kill-9", "clean"):
        if cold:
            evict_page_cache(data_dir)
        else:
            warm_page_cache(data_dir)
        accepted, metadata = broker.start()
        rows.append((case, accepted, metadata))
        if case == "kill-9":
            stop_s = broker.stop()
            rows.append(("(SIGTERM shutdown)", stop_s, stop_s))
        else:
            broker.kill()  # leaves the data as a crash would, for the next round
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--segment-bytes", type=int, default=1 << 30)
    parser.add_argument("--batch-bytes", type=int, default=16 << 10)
    parser.add_argument("--fill-timeout", type=float, default=900.0)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/gracchus"))
    parser.add_argument("--compare", help="another binary to time on the same data")
    parser.add_argument("--cold", action="store_true", help="also time with a cold cache")
    parser.add_argument("--dir", help="parent for the data dir (default: a temp dir)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    parent = tempfile.mkdtemp(prefix="restart-bench-", dir=args.dir)
    data_dir = os.path.join(parent, "data")
    port = free_port()
    broker = Broker(args.binary, data_dir, port, args.segment_bytes)
    try:
        broker.start()
        create_topic(port, "bench", args.partitions)
        target = int(args.gb * (1 << 30))
        written, seconds = fill(broker, "bench", args.partitions, target, args.batch_bytes,
                                args.fill_timeout)
        broker.kill()
        print(f"filled {written / (1 << 30):.2f} GiB in {args.partitions} partitions "
              f"(segment.bytes {args.segment_bytes}, batches of {args.batch_bytes} B) "
              f"in {seconds:.0f} s")
        binaries = [("this", args.binary)] + ([("compare", args.compare)]
                                              if args.compare else [])
        for label, binary in binaries:
            for cold in ([False, True] if args.cold else [False]):
                cache = "cold" if cold else "warm"
                for case, accepted, metadata in restarts(binary, args, data_dir, port, cold):
                    print(f"{label:8} {cache} {case:20} accept {accepted:7.3f} s   "
                          f"metadata {metadata:7.3f} s", flush=True)
    finally:
        broker.kill()
        if not args.keep:
            shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
