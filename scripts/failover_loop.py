#!/usr/bin/env python3
"""Failover loop: kill -9 the active controller of a three-node cluster, again and again.

Each round (cluster.failover_round in protocol-tests/cluster.py): find the active
controller (every node's DescribeCluster agrees), SIGKILL it, measure the time until the
two survivors agree on a new controller and until a topic can be created through one of
them, restart the killed node on its ports and data dir and wait until every node lists
it again. Rounds are bounded (--give-up seconds per wait); a round whose new leader took
over 10 s counts as a stall.

Prints one line per round and, at the end, min/p50/p90/p99/max of both times and the
stall count; --json writes the rounds and the summary. Exits 1 if any round stalled or
failed, or if p99 of the time to a new leader exceeds --p99-target (default 3 s).
Nodes are stopped by PID; their data dirs and stderr logs are removed unless --keep (and
kept, with the path printed, after a failure).
"""
import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "protocol-tests"))
import cluster  # noqa: E402  (the protocol tests' harness)


class DelayingProxies:
    """One TCP proxy per controller listener, on a thread of its own: every chunk is
    forwarded `delay_s` after it arrived, in order, in both directions."""

    def __init__(self, delay_s):
        self.delay_s = delay_s
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def add(self, target_port):
        future = asyncio.run_coroutine_threadsafe(self._listen(target_port), self.loop)
        return future.result(timeout=10)

    async def _listen(self, target_port):
        async def accepted(reader, writer):
            try:
                up_reader, up_writer = await asyncio.open_connection(cluster.LOOPBACK,
                                                                     target_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

        server = await asyncio.start_server(accepted, cluster.LOOPBACK, 0)
        return server.sockets[0].getsockname()[1]

    async def _pump(self, reader, writer):
        queue = asyncio.Queue()

        async def send():
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                try:
                    await writer.drain()
                except OSError:
                    break
            writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay_s, data))
        except OSError:
            pass
        queue.put_nowait((0, None))
        await sender


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--binary", default=os.environ.get(
        "GRACCHUS_BIN", os.path.join(ROOT, "target", "release", "gracchus")))
    parser.add_argument("--stall-s", type=float, default=10.0,
                        help="a round with no new leader within this is a stall")
    parser.add_argument("--give-up", type=float, default=60.0,
                        help="seconds a round may wait for a leader or a topic")
    parser.add_argument("--p99-target", type=float, default=3.0)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra node config (repeatable)")
    parser.add_argument("--json", help="write rounds and summary to this file")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="latency added each way to controller RPC between voters (a "
                             "delaying proxy in front of every controller listener): a real "
                             "network's round trips, under which candidacies can collide")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and logs")
    return parser.parse_args()


def main():
    args = parse_args()
    os.environ["GRACCHUS_BIN"] = args.binary
    overrides = dict(item.split("=", 1) for item in args.override)
    root = tempfile.mkdtemp(prefix="gracchus-failover-")
    nodes = cluster.Cluster(args.nodes, root, overrides=overrides)
    if args.delay_ms:
        proxies = DelayingProxies(args.delay_ms / 1000.0)
        nodes.overrides["controller.quorum.voters"] = ",".join(
            f"{n.node_id}@{cluster.LOOPBACK}:{proxies.add(n.controller_port)}"
            for n in nodes.nodes)
    rounds, failure = [], None
    began = time.monotonic()
    try:
        nodes.start()
        print(f"{args.nodes} nodes formed one cluster ({nodes.cluster_id}); "
              f"{args.rounds} rounds", flush=True)
        for index in range(args.rounds):
            result = cluster.failover_round(nodes, index, stall_s=args.stall_s,
                                            give_up_s=args.give_up)
            rounds.append(result)
            print(f"round {index:3d}: killed {result['killed']}, new controller "
                  f"{result['new_controller']}, leader {result['leader_s'] * 1000:6.0f} ms, "
                  f"topic {result['topic_s'] * 1000:6.0f} ms"
                  f"{'  STALL' if result['stalled'] else ''}", flush=True)
    except (AssertionError, OSError) as error:
        failure = f"round {len(rounds)} failed: {error}"
        print(failure, file=sys.stderr)
        for node in nodes.nodes:
            print(node.stderr_tail(30), file=sys.stderr)
    finally:
        nodes.close()
    summary = cluster.summarise_failovers(rounds)
    print(f"\n{cluster.format_summary(summary)}\nwall time {time.monotonic() - began:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rounds": rounds, "summary": summary, "failure": failure}, out,
                      indent=2)
    p99 = summary["leader_s"]["p99"]
    ok = failure is None and summary["stalls"] == 0 and p99 is not None \
        and p99 <= args.p99_target
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"data dirs and stderr logs kept in {root}")
    if p99 is not None and p99 > args.p99_target:
        print(f"p99 of the time to a new leader {p99:.2f} s exceeds {args.p99_target} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
