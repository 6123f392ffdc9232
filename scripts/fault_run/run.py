"""The fault run (issue 8), entry point of scripts/fault-run.

Three nodes (broker and controller each), topics with replication factor 3 and
min.insync.replicas=2, two idempotent acks=all producers and two group consumers in
processes of their own (workload.py), plus (issue 10, --txn-producers) transactional
producers writing transactions of 1 to --txn-size-max records to a topic of their own,
some aborted on purpose, read by a read_committed group (--txn-consumers), then faults drawn at random (seeded) among the
kinds in faults.py, one at a time: inject, hold, end, wait until the cluster recovered
(every partition of the run's topics has a running leader on every running node's
Metadata, and every partition acknowledged a record again after the fault began), then
until it is whole again (every node listed by every node, partitions recovered again,
and, while the cluster shows a full ISR at all, every ISR full). The time to recover
is taken per fault from its injection.

With --group-protocol consumer both groups are KIP-848 consumer groups (pass the broker's
group.consumer.* timings with --override to keep their failovers short).

The fault phase stops after --faults faults or --max-minutes, whichever comes first;
then the cluster is made whole, the producers flush and stop, the consumers drain and
stop, and the independent checker (checker.py) reads every partition from offset 0 and
prints the figures. Exit 0 only if the checker found nothing and no step failed.

Everything the run made is removed at the end: nodes killed by PID, network namespaces
deleted (cluster.py), child processes stopped by PID; the run directory (client logs,
fault records, node logs and data) is kept when the run fails or with --keep.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(SCRIPTS)
sys.path.insert(0, os.path.join(ROOT, "protocol-tests"))
sys.path.insert(0, SCRIPTS)

import cluster as harness  # noqa: E402  (the protocol tests' harness)

from fault_run import checker, faults  # noqa: E402

GROUP = "fault-run"
TXN_GROUP = "fault-run-txn"
RECOVER_TIMEOUT_S = 60.0
POLL_S = 0.05
STOP_TIMEOUT_S = 90.0
DRAIN_QUIET_S = 3.0
DRAIN_MAX_S = 60.0
ISR_MISSES_MAX = 2


# ---------------------------------------------------------------- child processes


class Child:
    """A workload process; its latest status line is kept (a reader thread)."""

    def __init__(self, role, name, run_dir, args_list):
        self.role = role
        self.name = name
        self.log_path = os.path.join(run_dir, f"{name}.jsonl")
        self.stderr_path = os.path.join(run_dir, f"{name}.stderr.log")
        env = dict(os.environ, PYTHONPATH=SCRIPTS, PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "fault_run.workload", role, "--name", name,
                   "--out", self.log_path, *args_list]
        with open(self.stderr_path, "ab") as stderr:
            # die_with_parent: SIGKILL if the run dies (set from this, the main thread).
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=stderr,
                                            env=env, text=True,
                                            preexec_fn=harness.die_with_parent)
        self.status = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"status-{name}")
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            try:
                status = json.loads(line)
            except ValueError:
                continue
            if isinstance(status, dict) and status.get("kind") == "status":
                with self._lock:
                    self.status = status

    def latest(self):
        with self._lock:
            return dict(self.status)

    def alive(self):
        return self.process.poll() is None

    def stop(self, timeout_s=STOP_TIMEOUT_S):
        """SIGTERM and wait (the producer flushes); SIGKILL after timeout_s. Returns
        the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=30)
        self._reader.join(10)
        return code


def last_acks(producers):
    """{"topic:partition": monotonic time of the latest ack by any producer}."""
    out = {}
    for producer in producers:
        for tp, moment in producer.latest().get("last_ack", {}).items():
            out[tp] = max(moment, out.get(tp, moment))
    return out


# ---------------------------------------------------------------- cluster state


def leaderless(nodes, topics):
    """Partitions of topics without a running leader on some running node's Metadata
    ([] when all have one); a node that does not answer counts against it."""
    running = nodes.running()
    missing = []
    for node_id in running:
        try:
            metadata = nodes.node(node_id).metadata(list(topics))
        except Exception as error:  # noqa: BLE001 - a node not answering: not recovered
            return [f"node {node_id}: {error!r}"]
        for name in topics:
            topic = metadata["topics"].get(name)
            if topic is None or topic["error"] != harness.NONE:
                missing.append(f"node {node_id}: topic {name} {topic and topic['error']}")
                continue
            for index, partition in topic["partitions"].items():
                if partition["error"] != harness.NONE or partition["leader"] not in running:
                    missing.append(f"node {node_id}: {name}-{index} leader "
                                   f"{partition['leader']} error {partition['error']}")
    return missing


def isr_short(nodes, topics):
    """Partitions whose ISR is smaller than their replica set, on one running node."""
    metadata = nodes.node(nodes.running()[0]).metadata(list(topics))
    return [f"{name}-{index} isr {p['isr']} replicas {p['replicas']}"
            for name, topic in metadata["topics"].items()
            for index, p in topic["partitions"].items()
            if sorted(p["isr"] or []) != sorted(p["replicas"] or [])]


class Recovery:
    """Polls whether the cluster recovered since a moment: leaders for every partition
    and an ack for every partition after that moment."""

    def __init__(self, nodes, topics, partitions, producers):
        self.nodes = nodes
        self.topics = topics
        self.tps = [f"{t}:{p}" for t in topics for p in range(partitions)]
        self.producers = producers
        self.last_reason = ""

    def recovered(self, since):
        acks = last_acks(self.producers)
        waiting = [tp for tp in self.tps if acks.get(tp, 0) <= since]
        if waiting:
            self.last_reason = f"no ack since the fault on {waiting}"
            return False
        missing = leaderless(self.nodes, self.topics)
        if missing:
            self.last_reason = "; ".join(missing[:4])
            return False
        return True

    def wait(self, since, timeout_s=RECOVER_TIMEOUT_S):
        """Seconds from `since` until recovered, or None at timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.recovered(since):
                return time.monotonic() - since
            time.sleep(POLL_S)
        return None


# ---------------------------------------------------------------- one fault


class FaultLoop:
    def __init__(self, args, nodes, recovery, rng, run_dir):
        self.args = args
        self.nodes = nodes
        self.recovery = recovery
        self.rng = rng
        self.timing = faults.Timing(session_timeout_s=nodes.session_timeout_ms / 1000,
                                    down_max_s=args.down_max_s)
        self.kinds = args.kinds
        self.records = open(os.path.join(run_dir, "faults.jsonl"), "a")
        self.isr_misses = 0

    def one(self, index):
        kind = self.rng.choice(self.kinds)
        fault = faults.plan(kind, self.nodes, self.args.topic_names, GROUP, self.timing,
                            self.rng, transactional_ids=self.args.transactional_ids)
        began = time.monotonic()
        recovered = {}

        def tick():
            if "at" not in recovered and self.recovery.recovered(began):
                recovered["at"] = time.monotonic() - began

        faults.begin(self.nodes, fault)
        faults.wait_hold(fault, began, tick)
        faults.end(self.nodes, fault)
        if "at" not in recovered:
            left = RECOVER_TIMEOUT_S - (time.monotonic() - began)
            seconds = self.recovery.wait(began, timeout_s=max(left, 1.0))
            if seconds is not None:
                recovered["at"] = seconds
            else:
                fault.notes.append(f"not recovered: {self.recovery.last_reason}")
        restored_s = self.make_whole(fault)
        record = {"i": index, "kind": kind, "node": fault.node,
                  "hold_s": round(fault.hold_s, 3), "began_m": began,
                  "recover_s": recovered.get("at"),
                  "whole_s": restored_s, "isr_full": fault.isr_full, "notes": fault.notes,
                  "wall": time.time()}
        self.records.write(json.dumps(record) + "\n")
        self.records.flush()
        return record

    def make_whole(self, fault):
        """Waits until every node is listed everywhere, partitions recovered again, and
        (while the cluster shows full ISRs) every ISR is full. Seconds from the fault's
        end, or None if the cluster could not be made whole."""
        began = time.monotonic()
        try:
            fixed = faults.repair(self.nodes)
            if fixed:
                fault.notes.append(f"repaired: {fixed}")
            for node_id in self.nodes.node_ids():
                self.nodes.wait_broker_listed(node_id, timeout_s=RECOVER_TIMEOUT_S)
            if self.recovery.wait(time.monotonic()) is None:
                fault.notes.append(f"not whole: {self.recovery.last_reason}")
                return None
            fault.isr_full = self.wait_isr(fault)
        except AssertionError as error:
            fault.notes.append(f"not whole: {str(error)[:300]}")
            return None
        return time.monotonic() - began

    def wait_isr(self, fault):
        """Waits (bounded) for every ISR to be full again; returns whether they are.
        After ISR_MISSES_MAX misses in a row (a broker that never re-grows its ISR) it
        only looks, until it sees them full again: the run goes on instead of waiting the
        bound out before every fault."""
        wait_s = self.args.isr_wait_s if self.isr_misses < ISR_MISSES_MAX else 0.0
        try:
            harness.wait_until(lambda: not isr_short(self.nodes, self.args.topic_names),
                               wait_s, what="full ISRs")
            self.isr_misses = 0
            return True
        except AssertionError:
            self.isr_misses += 1
            if wait_s:
                fault.notes.append(f"ISR not full after {wait_s:.0f} s: "
                                   f"{isr_short(self.nodes, self.args.topic_names)[:3]}")
            if self.isr_misses == ISR_MISSES_MAX:
                print(f"ISRs did not fill {ISR_MISSES_MAX} times in a row: only looking at "
                      "them between faults until they are full again", flush=True)
            return False


# ---------------------------------------------------------------- the run


def create_topics(nodes, args):
    controller = nodes.active_controller()
    for name in args.topic_names + args.txn_topic_names:
        nodes.create_topic(controller, name, partitions=args.partitions,
                           replication_factor=3,
                           configs={"min.insync.replicas": str(args.min_insync)})
        nodes.wait_topic_everywhere(name, partitions=args.partitions)


def start_clients(nodes, args, run_dir):
    common = ["--bootstrap", nodes.bootstrap, "--topics", ",".join(args.topic_names),
              "--partitions", str(args.partitions)]
    protocol = ["--group-protocol", args.group_protocol]
    consumers = [Child("consumer", f"consumer-{i}", run_dir,
                       common + ["--group", GROUP] + protocol)
                 for i in range(1, args.consumers + 1)]
    producers = [Child("producer", f"producer-{i}", run_dir,
                       common + ["--rate", str(args.rate)])
                 for i in range(1, args.producers + 1)]
    txn_common = ["--bootstrap", nodes.bootstrap, "--topics", ",".join(args.txn_topic_names),
                  "--partitions", str(args.partitions)]
    txn_consumers = [Child("consumer", f"txnconsumer-{i}", run_dir,
                           txn_common + ["--group", TXN_GROUP,
                                         "--isolation", "read_committed"] + protocol)
                     for i in range(1, args.txn_consumers + 1)] if args.txn_producers else []
    txn_producers = [Child("txnproducer", name, run_dir, txn_common + [
        "--rate", str(args.txn_rate), "--txn-size-max", str(args.txn_size_max),
        "--txn-abort-share", str(args.txn_abort_share), "--seed", str(args.seed),
        "--transaction-timeout-ms", str(args.transaction_timeout_ms)])
        for name in args.txn_producer_names]
    return producers, consumers, txn_producers, txn_consumers


def drain(consumers):
    """Waits until the consumers saw nothing new for DRAIN_QUIET_S (at most DRAIN_MAX_S)."""
    deadline = time.monotonic() + DRAIN_MAX_S
    last, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        seen = sum(c.latest().get("seen", 0) for c in consumers)
        if seen != last:
            last, quiet_since = seen, time.monotonic()
        elif time.monotonic() - quiet_since >= DRAIN_QUIET_S:
            return
        time.sleep(0.2)


def run_faults(loop, args, began):
    records = []
    while len(records) < args.faults and time.monotonic() - began < args.max_minutes * 60:
        record = loop.one(len(records))
        records.append(record)
        recover = "NOT RECOVERED" if record["recover_s"] is None \
            else f"recovered {record['recover_s']:.2f} s"
        whole = "NOT WHOLE" if record["whole_s"] is None else f"whole {record['whole_s']:.2f} s"
        notes = f"  {record['notes']}" if record["notes"] else ""
        print(f"fault {record['i']:4d} {record['kind']:16s} node {record['node']} hold "
              f"{record['hold_s']:5.2f} s: {recover}, {whole}{notes}", flush=True)
        if record["whole_s"] is None:
            raise RuntimeError(f"the cluster could not be made whole after fault "
                               f"{record['i']}: {record['notes']}")
    return records


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="scripts/fault-run",
                                     description="fault-injection run with an independent "
                                                 "checker (issue 8)")
    parser.add_argument("--faults", type=int, default=1000, help="faults to inject")
    parser.add_argument("--max-minutes", type=float, default=240.0,
                        help="bound on the fault phase (the final drain and check add at "
                             "most a few minutes)")
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--kinds", default=",".join(faults.KINDS),
                        type=lambda s: [k for k in s.split(",") if k],
                        help=f"comma-separated subset of {','.join(faults.KINDS)}")
    parser.add_argument("--topics", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--min-insync", type=int, default=2)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--group-protocol", default="classic", choices=("classic", "consumer"),
                        help="the consumers' group protocol (consumer: KIP-848 groups)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="records per second per producer")
    parser.add_argument("--txn-producers", type=int, default=1,
                        help="transactional producers (0: none, and no read_committed "
                             "group)")
    parser.add_argument("--txn-consumers", type=int, default=2,
                        help="read_committed consumers of the transactional topic")
    parser.add_argument("--txn-rate", type=float, default=50.0,
                        help="records per second per transactional producer (average)")
    parser.add_argument("--txn-size-max", type=int, default=5)
    parser.add_argument("--txn-abort-share", type=float, default=0.2)
    parser.add_argument("--transaction-timeout-ms", type=int, default=60000)
    parser.add_argument("--down-max-s", type=float, default=6.0,
                        help="a killed node stays down 0.5 s to this long")
    parser.add_argument("--isr-wait-s", type=float, default=20.0,
                        help="bound on the wait for full ISRs between faults")
    parser.add_argument("--no-netns", action="store_true",
                        help="nodes on 127.0.0.1 without namespaces (no cut faults)")
    parser.add_argument("--binary", default=os.environ.get(
        "GRACCHUS_BIN", os.path.join(ROOT, "target", "release", "gracchus")))
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra node config (repeatable)")
    parser.add_argument("--dir", help="run directory (default: a new temporary one)")
    parser.add_argument("--json", help="write the figures and fault records here")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    unknown = [k for k in args.kinds if k not in faults.KINDS]
    if unknown or not args.kinds:
        parser.error(f"unknown fault kinds {unknown}; choose among {faults.KINDS}")
    if args.no_netns:
        args.kinds = [k for k in args.kinds if k != faults.CUT] or parser.error(
            "--no-netns leaves no fault kind")
    if args.txn_producers <= 0:
        args.kinds = [k for k in args.kinds if k != faults.KILL_TXN_COORDINATOR] or \
            parser.error("--txn-producers 0 leaves no fault kind")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    tag = uuid.uuid4().hex[:6]
    args.topic_names = [f"fault-run-{tag}-{i}" for i in range(1, args.topics + 1)]
    args.txn_topic_names = [f"fault-run-{tag}-txn"] if args.txn_producers > 0 else []
    args.txn_producer_names = [f"txnproducer-{i}" for i in range(1, args.txn_producers + 1)]
    # workload.py's transactional.id for each.
    args.transactional_ids = [f"fault-run-{name}" for name in args.txn_producer_names]
    return args


def node_overrides(args):
    overrides = {
        # Kafka's production values for what the run exercises; the harness keeps its
        # short broker session (3 s) so that fencing happens within a fault's hold.
        "offsets.topic.replication.factor": "3",
        "offsets.topic.num.partitions": "5",
        "group.initial.rebalance.delay.ms": "0",
        "min.insync.replicas": str(args.min_insync),
        "default.replication.factor": "3",
        "unclean.leader.election.enable": "false",
        # Kafka's production values for the transaction log, fewer partitions (50).
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "transaction.state.log.num.partitions": "5",
    }
    overrides.update(item.split("=", 1) for item in args.override)
    return overrides


class Terminated(Exception):
    pass


def _terminate(_signum, _frame):
    raise Terminated()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ["GRACCHUS_BIN"] = os.path.abspath(args.binary)
    signal.signal(signal.SIGTERM, _terminate)
    root = args.dir or tempfile.mkdtemp(prefix="gracchus-fault-run-")
    run_dir = os.path.join(root, "run")
    os.makedirs(run_dir, exist_ok=True)
    print(f"seed {args.seed}; run directory {root}; topics {args.topic_names}", flush=True)
    rng = random.Random(args.seed)
    began = time.monotonic()
    nodes = harness.Cluster(3, root, overrides=node_overrides(args), netns=not args.no_netns)
    children, records, verdict, failure = [], [], None, None
    try:
        nodes.start()
        create_topics(nodes, args)
        producers, consumers, txn_producers, txn_consumers = start_clients(nodes, args,
                                                                           run_dir)
        children = producers + consumers + txn_producers + txn_consumers
        recovery = Recovery(nodes, args.topic_names, args.partitions, producers)
        if recovery.wait(began, timeout_s=RECOVER_TIMEOUT_S) is None:
            raise RuntimeError(f"the producers never acknowledged: {recovery.last_reason}")
        print(f"cluster {nodes.cluster_id} up, clients running after "
              f"{time.monotonic() - began:.1f} s; faults: {args.faults} of {args.kinds}",
              flush=True)
        loop = FaultLoop(args, nodes, recovery, rng, run_dir)
        try:
            records = run_faults(loop, args, time.monotonic())
        except (AssertionError, RuntimeError, OSError) as error:
            failure = f"fault phase: {error}"
            print(failure, file=sys.stderr, flush=True)
            faults.repair(nodes)
        for node_id in nodes.node_ids():
            nodes.wait_broker_listed(node_id, timeout_s=RECOVER_TIMEOUT_S)
        recovery.wait(time.monotonic())
        for producer in producers + txn_producers:
            code = producer.stop()
            print(f"{producer.name}: {producer.latest()} exit {code}", flush=True)
        drain(consumers + txn_consumers)
        for consumer in consumers + txn_consumers:
            code = consumer.stop()
            print(f"{consumer.name}: seen {consumer.latest().get('seen')} exit {code}",
                  flush=True)
        verdict, report = checker.run_check(run_dir, nodes.bootstrap, args.topic_names,
                                            GROUP, args.txn_topic_names, TXN_GROUP)
        print(report, flush=True)
        if args.txn_producers and not verdict["figures"].get("txn_committed"):
            # All-or-nothing over nothing proves nothing.
            failure = failure or "the transactional producers committed no transaction"
            print(failure, file=sys.stderr, flush=True)
        full = sum(1 for record in records if record.get("isr_full"))
        print(f"ISRs full again after {full} of {len(records)} faults", flush=True)
    except (AssertionError, RuntimeError, OSError, Terminated) as error:
        failure = failure or f"{type(error).__name__}: {error}"
        print(f"run failed: {failure}", file=sys.stderr, flush=True)
        for node in nodes.nodes:
            print(node.stderr_tail(20), file=sys.stderr)
    finally:
        for child in children:
            if child.alive():
                child.stop(timeout_s=10)
        nodes.close()
    wall_s = time.monotonic() - began
    ok = failure is None and verdict is not None and checker.passed(verdict)
    summary = {"seed": args.seed, "faults": len(records), "wall_s": wall_s,
               "failure": failure, "passed": ok,
               "figures": verdict and verdict["figures"],
               "recovery": verdict and verdict["recovery"],
               "client_errors": verdict and verdict["client_errors"],
               "examples": verdict and verdict["examples"], "run_dir": root}
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2, default=str)
    print(f"wall time {wall_s:.0f} s; seed {args.seed}", flush=True)
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"run directory kept: {root}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
