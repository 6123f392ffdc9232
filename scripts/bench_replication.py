#!/usr/bin/env python3
"""Replication benchmark (issue 8): acks=all produce throughput on a three-node cluster
with replication factor 3 against replication factor 1, on the same machine in the same
run, and the brokers' CPU per record (all three processes together).

Starts three nodes with the protocol tests' cluster harness (127.0.0.1 ports, temporary
data dirs), creates one topic per replication factor, produces N records of SIZE bytes
with confluent-kafka (librdkafka), and stops every process by PID. Bounded by --records
and a timeout; alternates the two factors --rounds times so a noisy moment hits both.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "protocol-tests"))
import cluster  # noqa: E402  (the protocol tests' harness)
from confluent_kafka import Producer  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def produce(bootstrap, topic, records, size, partitions):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000,
                         "enable.idempotence": True})
    payload = b"x" * size
    begin = time.time()
    for i in range(records):
        while True:
            try:
                producer.produce(topic, payload, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.01)
    remaining = producer.flush(300)
    assert remaining == 0, f"{remaining} records not delivered"
    return time.time() - begin


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gracchus-bench-repl-") as root:
        nodes = cluster.Cluster(3, root)
        try:
            nodes.start()
            bootstrap = ",".join(node.bootstrap for node in nodes.nodes)
            results = {1: [], 3: []}
            for round_index in range(args.rounds):
                for factor in (3, 1):
                    topic = f"bench-rf{factor}-{round_index}"
                    error, message = nodes.node(1).create_topic(
                        topic, partitions=args.partitions, replication_factor=factor)
                    assert error == cluster.NONE, f"{error} {message}"
                    time.sleep(2)  # followers start fetching
                    pids = [node.pid for node in nodes.nodes]
                    before = sum(cpu_seconds(pid) for pid in pids)
                    elapsed = produce(bootstrap, topic, args.records, args.size,
                                      args.partitions)
                    cpu = sum(cpu_seconds(pid) for pid in pids) - before
                    results[factor].append((args.records / elapsed, cpu / args.records * 1e6))
                    print(f"rf={factor} round={round_index} records/s={args.records / elapsed:,.0f} "
                          f"MB/s={args.records * args.size / elapsed / 1e6:,.1f} "
                          f"broker_cpu_us_per_record={cpu / args.records * 1e6:.2f}", flush=True)
            for factor in (3, 1):
                rates = [r for r, _ in results[factor]]
                cpus = [c for _, c in results[factor]]
                print(f"summary rf={factor}: records/s {min(rates):,.0f}-{max(rates):,.0f}, "
                      f"broker cpu per record {min(cpus):.2f}-{max(cpus):.2f} us (3 nodes summed)")
        finally:
            nodes.close()


if __name__ == "__main__":
    sys.exit(main())
