"""The fault kinds of the fault run: which node each one hits, how it is injected, how
it ends. The cluster is protocol-tests/cluster.py's Cluster; nodes are found the way a
client finds them (Metadata for partition leaders, DescribeCluster for the active
controller, FindCoordinator for a group's coordinator).

Every fault is a Plan: inject it (begin), hold it for plan.hold_s while the run watches
for recovery, then end it (restart, SIGCONT, heal). A plan's hold is drawn from the
run's seeded generator, so a seed repeats the same sequence of kinds, holds and
(given the same cluster answers) targets.
"""

import logging
import os
import time
from dataclasses import dataclass, field

import cluster as harness

log = logging.getLogger("fault_run.faults")

KILL_LEADER = "kill_leader"
KILL_CONTROLLER = "kill_controller"
KILL_COORDINATOR = "kill_coordinator"
KILL_TXN_COORDINATOR = "kill_txn_coordinator"
PAUSE = "pause"
CUT = "cut"
COLD_RESTART = "cold_restart"
KINDS = (KILL_LEADER, KILL_CONTROLLER, KILL_COORDINATOR, PAUSE, CUT, COLD_RESTART,
         KILL_TXN_COORDINATOR)
KILLS = (KILL_LEADER, KILL_CONTROLLER, KILL_COORDINATOR, COLD_RESTART,
         KILL_TXN_COORDINATOR)
TRANSACTION_KEY_TYPE = 1  # FindCoordinator key_type of a transactional id

TARGET_TIMEOUT_S = 30.0
DROP_CACHES = "/proc/sys/vm/drop_caches"


@dataclass
class Timing:
    """How long faults last (seconds), from the run's arguments."""
    session_timeout_s: float
    down_min_s: float = 0.5
    down_max_s: float = 6.0
    pause_extra_min_s: float = 1.0
    pause_extra_max_s: float = 2.5
    cut_min_s: float = 2.0
    cut_max_s: float = 6.0


@dataclass
class Plan:
    kind: str
    node: int
    hold_s: float
    notes: list = field(default_factory=list)
    isr_full: bool = None  # after the fault, once the cluster was whole again


def hold_for(kind, timing, rng):
    """The fault's duration: a pause outlasts the broker session timeout (so the node is
    fenced), a cut lasts a few seconds, a killed node stays down for a while (sometimes
    less than the session timeout, so it returns before it is fenced)."""
    if kind == PAUSE:
        return timing.session_timeout_s + rng.uniform(timing.pause_extra_min_s,
                                                      timing.pause_extra_max_s)
    if kind == CUT:
        return rng.uniform(timing.cut_min_s, timing.cut_max_s)
    return rng.uniform(timing.down_min_s, timing.down_max_s)


# ---------------------------------------------------------------- targets


def partition_leader(nodes, topics, rng):
    """The leader of a partition of topics drawn at random, as a running node's
    Metadata names it."""
    def find():
        via = nodes.node(rng.choice(nodes.running()))
        metadata = via.metadata(list(topics))
        leaders = sorted({(name, index): p["leader"]
                          for name, topic in metadata["topics"].items()
                          for index, p in topic["partitions"].items()
                          if p["leader"] in nodes.running()}.items())
        if not leaders:
            raise AssertionError(f"no partition of {topics} has a running leader")
        return rng.choice(leaders)[1]

    return harness.wait_until(find, TARGET_TIMEOUT_S, what="a partition leader")


def active_controller(nodes, rng):
    return nodes.active_controller(timeout_s=TARGET_TIMEOUT_S)


def group_coordinator(nodes, group, rng, key_type=0):
    """The coordinator FindCoordinator names for a group (key_type 0) or a transactional
    id (key_type 1), asked through a running node drawn at random."""
    def find():
        via = nodes.node(rng.choice(nodes.running()))
        error, node_id, _host, _port = via.call(harness.find_coordinator_v1, group,
                                                key_type)
        if error != harness.NONE or node_id not in nodes.running():
            raise AssertionError(f"FindCoordinator {group}: error {error}, node {node_id}")
        return node_id

    return harness.wait_until(find, TARGET_TIMEOUT_S, what=f"the coordinator of {group}")


def choose_target(kind, nodes, topics, group, rng, transactional_ids=()):
    if kind == KILL_LEADER:
        return partition_leader(nodes, topics, rng)
    if kind == KILL_CONTROLLER:
        return active_controller(nodes, rng)
    if kind == KILL_COORDINATOR:
        return group_coordinator(nodes, group, rng)
    if kind == KILL_TXN_COORDINATOR:
        if not transactional_ids:
            raise ValueError(f"{kind} needs transactional producers")
        return group_coordinator(nodes, rng.choice(list(transactional_ids)), rng,
                                 key_type=TRANSACTION_KEY_TYPE)
    return rng.choice(nodes.node_ids())


def plan(kind, nodes, topics, group, timing, rng, transactional_ids=()):
    # The hold is drawn before the target so that a seed fixes every hold even when the
    # cluster's answers (and so the draws inside target look-ups) differ between runs.
    hold_s = hold_for(kind, timing, rng)
    return Plan(kind, choose_target(kind, nodes, topics, group, rng, transactional_ids),
                hold_s)


# ---------------------------------------------------------------- inject and end


def drop_page_cache():
    """sync, then drop clean page cache, dentries and inodes; returns a note on failure
    (not permitted in this container, say) or None."""
    os.sync()
    try:
        with open(DROP_CACHES, "w") as control:
            control.write("3\n")
    except OSError as error:
        return f"page cache not dropped: {error}"
    return None


def begin(nodes, fault):
    """Injects the fault on fault.node."""
    if fault.kind in KILLS:
        nodes.kill(fault.node)
        if fault.kind == COLD_RESTART:
            note = drop_page_cache()
            if note:
                fault.notes.append(note)
    elif fault.kind == PAUSE:
        nodes.pause(fault.node)
    elif fault.kind == CUT:
        nodes.isolate(fault.node)
    else:
        raise ValueError(f"unknown fault kind {fault.kind}")


def end(nodes, fault):
    """Ends the fault: the killed node starts again on its ports and data (and answers
    ApiVersions), the paused one continues, the cut one is reconnected."""
    if fault.kind in KILLS:
        node = nodes.node(fault.node)
        node.launch()
        node.wait_answers()
    elif fault.kind == PAUSE:
        nodes.resume(fault.node)
    elif fault.kind == CUT:
        nodes.heal(fault.node)


def repair(nodes):
    """Whatever state a failed step left, or a node that died by itself: every node
    running, continued and connected. Returns what it had to fix, one text each."""
    fixed = []
    isolated = set(nodes.network.isolated) if nodes.network else set()
    for node in nodes.nodes:
        if node.node_id in isolated:
            nodes.heal(node.node_id)
            fixed.append(f"node {node.node_id} reconnected")
        if node.is_running() and node.paused:
            node.resume()
            fixed.append(f"node {node.node_id} continued")
        if not node.is_running():
            code = node.process.returncode if node.process is not None else None
            node.launch()
            node.wait_answers()
            fixed.append(f"node {node.node_id} was down (exit {code}), started")
    return fixed


def wait_hold(fault, began, on_tick, tick_s=0.05):
    """Holds the fault until began + hold_s, calling on_tick() (recovery polling)."""
    while time.monotonic() < began + fault.hold_s:
        on_tick()
        time.sleep(tick_s)
