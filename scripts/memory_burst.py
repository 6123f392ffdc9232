"""Memory burst: N clients each send one large Produce at the same moment; prints the
broker's resident memory before, at its peak (VmHWM) and 10 s after the last answer.

Issue 6 measured 200 clients x 5 MB: RSS 860 MB at peak, 447 MB still held after. Each
request carries PARTITIONS batches of just under 1 MB (message.max.bytes' default), so
every batch is accepted and written; every answer is checked (error 0 per partition).
Bounded: one request per client, socket timeouts on every call, the broker is stopped
and its data directory removed at the end.

    scripts/memory-burst [--binary PATH] [--clients 200] [--override key=value ...]

Measured on the 2-core dev machine (MiB; idle / peak / 10 s after; runs vary a lot):
    main before issue 6 work       5 / 471-599 / 166-423
    128 MiB budget, glibc as is    5 /  45-176 /  21-73
    same, mimalloc allocator      14 / 182-205 /  41-45
    budget + fixed mmap threshold  5 /  41-118 /  19-20   (what the broker does now)
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "protocol-tests"))
import rawkafka  # noqa: E402

PARTITIONS = 5
BATCH_VALUE_BYTES = 1_000_000
SETTLE_S = 10
TIMEOUT_S = 300


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_kib(pid):
    """(VmRSS, VmHWM) of a process, in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def start(binary, data_dir, port, overrides):
    command = [binary, "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
               "--override", f"log.dirs={data_dir}",
               "--override", f"num.partitions={PARTITIONS}",
               "--override", "http.listener=none"]
    for pair in overrides:
        command += ["--override", pair]
    log = open(os.path.join(data_dir, "..", "broker.log"), "wb")
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("broker did not start")


def create_topic(port, topic):
    with rawkafka.Connection("127.0.0.1", port) as conn:
        for _ in range(100):
            rawkafka.metadata_v4(conn, [topic], allow_auto_topic_creation=True)
            answer = rawkafka.produce(conn, topic, 0, rawkafka.build_batch([(b"k", b"v", [])]))
            if answer.error_code == 0:
                return
            time.sleep(0.1)
    raise SystemExit(f"topic {topic} never became writable")


def client(port, topic, batches, barrier, failures):
    try:
        with rawkafka.Connection("127.0.0.1", port, timeout_s=TIMEOUT_S) as conn:
            barrier.wait(timeout=TIMEOUT_S)
            results = rawkafka.produce_partitions(conn, topic, batches, timeout_ms=60_000)
            bad = {p: r.error_code for p, r in results.items() if r.error_code != 0}
            if bad:
                failures.append(f"errors {bad}")
    except Exception as error:  # noqa: BLE001 (reported, the run fails)
        failures.append(repr(error))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/release/gracchus")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--override", action="append", default=[])
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="memory-burst-")
    data_dir = os.path.join(root, "data")
    os.makedirs(data_dir)
    port = free_port()
    process = start(args.binary, data_dir, port, args.override)
    try:
        run(args, process, port)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def run(args, process, port):
    topic = "memory-burst"
    create_topic(port, topic)
    value = os.urandom(BATCH_VALUE_BYTES)
    batches = {p: rawkafka.build_batch([(b"k", value, [])]) for p in range(PARTITIONS)}
    request_mb = sum(len(b) for b in batches.values()) / 1e6
    idle_rss, _ = memory_kib(process.pid)
    barrier = threading.Barrier(args.clients)
    failures = []
    threads = [threading.Thread(target=client, args=(port, topic, batches, barrier, failures))
               for _ in range(args.clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT_S)
    elapsed = time.monotonic() - started
    _, peak = memory_kib(process.pid)
    time.sleep(SETTLE_S)
    after, _ = memory_kib(process.pid)
    print(f"binary={args.binary} overrides={args.override}")
    print(f"clients={args.clients} request={request_mb:.1f} MB each, burst took {elapsed:.1f} s,"
          f" failures={len(failures)}")
    print(f"rss_idle_mib={idle_rss / 1024:.0f} rss_peak_mib={peak / 1024:.0f}"
          f" rss_after_{SETTLE_S}s_mib={after / 1024:.0f}")
    for failure in failures[:5]:
        print("  failure:", failure)
    if failures or process.poll() is not None:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
