#!/usr/bin/env python3
"""Quick produce/consume benchmark against a real broker process.

Starts target/release/gracchus on a free loopback port with a temporary data dir,
produces N records of SIZE bytes with confluent-kafka (librdkafka), consumes them back,
and prints throughput, the broker's CPU time per record, and its memory (RSS).
The load is bounded by N and a timeout, and the broker is stopped by PID.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    return -1


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("broker did not start")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--compression", default="none")
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/gracchus"))
    args = parser.parse_args()

    port = free_port()
    data = tempfile.mkdtemp(prefix="gracchus-bench-")
    started = time.time()
    broker = subprocess.Popen(
        [args.binary, "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
         "--override", f"log.dirs={data}",
         # No /metrics port: a broker already on 127.0.0.1:9644 must not stop the bench.
         "--override", "http.listener=none"],
        stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        print(f"startup_ms          {1000 * (time.time() - started):.0f}")
        time.sleep(0.5)
        print(f"idle_rss_kib        {proc_status(broker.pid, 'VmRSS')}")
        run(args, port, broker.pid)
        print(f"peak_rss_kib        {proc_status(broker.pid, 'VmHWM')}")
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=30)
        subprocess.run(["rm", "-rf", data])


def run(args, port, pid):
    bootstrap = f"127.0.0.1:{port}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("bench", args.partitions, 1)])["bench"].result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                         "batch.size": 1_000_000, "compression.type": args.compression,
                         "queue.buffering.max.messages": 1_000_000})
    payload = b"x" * args.size
    cpu_before = cpu_seconds(pid)
    begin = time.time()
    for i in range(args.records):
        while True:
            try:
                producer.produce("bench", payload, partition=i % args.partitions)
                break
            except BufferError:
                producer.poll(0.01)
    remaining = producer.flush(120)
    assert remaining == 0, f"{remaining} records not delivered"
    elapsed = time.time() - begin
    cpu = cpu_seconds(pid) - cpu_before
    print(f"produce_records_s   {args.records / elapsed:,.0f}")
    print(f"produce_mb_s        {args.records * args.size / elapsed / 1e6:,.1f}")
    print(f"broker_cpu_s        {cpu:.2f} (produce, {args.records / max(cpu, 1e-9):,.0f} records per broker cpu-second)")

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench",
                         "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    consumer.assign([TopicPartition("bench", p, 0) for p in range(args.partitions)])
    cpu_before = cpu_seconds(pid)
    begin = time.time()
    received = 0
    deadline = begin + 120
    while received < args.records and time.time() < deadline:
        for message in consumer.consume(10000, 1.0):
            if message.error() is None:
                received += 1
    elapsed = time.time() - begin
    cpu = cpu_seconds(pid) - cpu_before
    consumer.close()
    assert received == args.records, f"consumed {received} of {args.records}"
    print(f"consume_records_s   {received / elapsed:,.0f}")
    print(f"broker_cpu_s        {cpu:.2f} (consume, {received / max(cpu, 1e-9):,.0f} records per broker cpu-second)")


if __name__ == "__main__":
    sys.exit(main())
