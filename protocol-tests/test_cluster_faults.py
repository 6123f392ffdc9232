"""Faults in a three-node cluster (issue 7): the active controller killed with SIGKILL
again and again, cut off from the others by a network cut and healed, a voter restarted
from its own data and from an empty data dir, a broker stopped until it is fenced and
started until it is unfenced. After each step the metadata image checker (cluster.py:
Metadata v12 and DescribeCluster from every node, normalised) finds every node equal.

CLUSTER_FAILOVER_ROUNDS sets the number of kill rounds (default 10 here; the full 100
with statistics is scripts/failover-loop).
"""

import os
import time
import uuid

import pytest

import cluster
import rawkafka

FAILOVER_ROUNDS = int(os.environ.get("CLUSTER_FAILOVER_ROUNDS", "10"))

# A snapshot after a few KiB of metadata records (Kafka's names; default 20 MiB / 1 h),
# so that a restarted voter catches up from a snapshot plus the log tail.
SNAPSHOT_OVERRIDES = {
    "metadata.log.max.record.bytes.between.snapshots": "4096",
    "metadata.log.max.snapshot.interval.ms": "1000",
}


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.mark.timeout(120 + 45 * FAILOVER_ROUNDS)
def test_kill_the_active_controller_repeatedly(make_cluster):
    """Each round: SIGKILL the active controller; the two survivors agree on a new one
    and a topic can be created through one of them; the killed node restarts and is
    listed again by every node. No round may stall (no new leader within 10 s)."""
    nodes = make_cluster(3)
    rounds = []
    for index in range(FAILOVER_ROUNDS):
        result = cluster.failover_round(nodes, index)
        print(f"round {index}: killed {result['killed']}, new controller "
              f"{result['new_controller']} after {result['leader_s'] * 1000:.0f} ms, "
              f"topic created after {result['topic_s'] * 1000:.0f} ms")
        assert result["new_controller"] != result["killed"]
        rounds.append(result)
    summary = cluster.summarise_failovers(rounds)
    print(cluster.format_summary(summary))
    assert summary["stalls"] == 0, cluster.format_summary(summary)
    image = nodes.wait_images_equal()
    for r in rounds:
        assert any(name.startswith(f"failover-{r['round']}-") for name in image["topics"])


def test_cut_the_active_controller_off_and_heal(make_cluster):
    nodes = make_cluster(3, netns=True)
    leader = nodes.active_controller()
    others = [i for i in nodes.node_ids() if i != leader]
    before = unique("before-cut")
    nodes.create_topic(others[0], before, partitions=2)
    nodes.wait_images_equal(check=lambda image: before in image["topics"])

    nodes.isolate(leader)
    began = time.monotonic()
    new_leader = nodes.active_controller(on=others, exclude=(leader,), timeout_s=30)
    print(f"new controller {new_leader} {time.monotonic() - began:.2f} s after cutting "
          f"off {leader}")
    # Fenced first, so that the new topic is placed on the two reachable brokers only.
    nodes.wait_broker_listed(leader, listed=False, on=others,
                             timeout_s=nodes.session_timeout_ms / 1000 * 3 + 10)
    during = unique("during-cut")
    nodes.create_topic(others[1], during, partitions=2, timeout_s=30)
    views = nodes.wait_topic_everywhere(during, partitions=2, on=others)
    assert {p["leader"] for p in views[others[0]]["partitions"].values()} <= set(others)
    nodes.wait_images_equal(on=others, check=lambda image: during in image["topics"])

    nodes.heal(leader)
    nodes.wait_broker_listed(leader, timeout_s=60)
    image = nodes.wait_images_equal(
        timeout_s=60, check=lambda image: during in image["topics"]
        and set(image["brokers"]) == set(nodes.node_ids()))
    assert before in image["topics"]
    assert nodes.active_controller() in nodes.node_ids()
    after = unique("after-heal")
    nodes.create_topic(leader, after)
    nodes.wait_images_equal(check=lambda image: after in image["topics"])


def test_restart_a_voter_from_its_data_and_from_an_empty_dir(make_cluster):
    nodes = make_cluster(3, overrides=SNAPSHOT_OVERRIDES)
    controller = nodes.active_controller()
    voter = next(i for i in nodes.node_ids() if i != controller)
    history = [unique("history") for _ in range(20)]
    for index, name in enumerate(history):
        nodes.create_topic(nodes.node_ids()[index % 3], name, partitions=2)
    nodes.wait_images_equal(check=lambda image: set(history) <= set(image["topics"]))

    # From its own data: the snapshot plus the log tail written while it was down.
    assert nodes.stop(voter) == 0
    while_down = [unique("while-down") for _ in range(5)]
    for name in while_down:
        nodes.create_topic(controller, name)
    for name in history[:3]:
        assert nodes.node(controller).delete_topic(name) == cluster.NONE
    expected = set(history[3:]) | set(while_down)
    gone = set(history[:3])

    def complete(image):
        return expected <= set(image["topics"]) and not gone & set(image["topics"]) \
            and set(image["brokers"]) == set(nodes.node_ids())

    nodes.restart(voter)
    before_wipe = nodes.wait_images_equal(timeout_s=60, check=complete)

    # From an empty data dir, formatted again with the same CLUSTER_ID.
    nodes.restart(voter, wipe=True)
    after_wipe = nodes.wait_images_equal(timeout_s=60, check=complete)
    # The same topics with the same ids (leader epochs moved: its partitions went offline
    # and came back with it).
    assert {name: topic["id"] for name, topic in after_wipe["topics"].items()} == \
        {name: topic["id"] for name, topic in before_wipe["topics"].items()}
    assert os.listdir(nodes.node(voter).data_dir), "the wiped voter wrote nothing"

    # It is a working voter again: the quorum survives losing the other two in turn.
    nodes.kill(controller)
    survivor = nodes.active_controller(exclude=(controller,), timeout_s=30)
    name = unique("after-wipe")
    nodes.create_topic(voter, name)
    nodes.restart(controller)
    nodes.wait_images_equal(check=lambda image: name in image["topics"])
    print(f"controller {controller} killed, {survivor} took over, {voter} (wiped) voted")


def test_a_node_with_another_cluster_id_does_not_join(make_cluster):
    nodes = make_cluster(3)
    controller = nodes.active_controller()
    stranger = next(i for i in nodes.node_ids() if i != controller)
    others = [i for i in nodes.node_ids() if i != stranger]
    node = nodes.node(stranger)
    nodes.stop(stranger)
    nodes.wait_broker_listed(stranger, listed=False, on=others,
                             timeout_s=nodes.session_timeout_ms / 1000 * 3 + 10)
    node.wipe()
    node.env = {"CLUSTER_ID": cluster.random_cluster_id()}
    offsets = {n.node_id: os.path.getsize(n.stderr_path) for n in nodes.nodes}
    node.launch()
    deadline = time.monotonic() + nodes.session_timeout_ms / 1000 * 2
    while time.monotonic() < deadline and node.is_running():
        listed = [i for i in others if stranger in nodes.node(i).metadata([])["brokers"]]
        assert not listed, f"node {stranger} with another cluster id joined: {listed}"
        time.sleep(0.2)
    nodes.wait_images_equal(on=others, check=lambda image: stranger not in image["brokers"])
    # The refusal is logged, by the stranger or by the nodes it contacted, naming the
    # cluster id (a stranger slow to start may log it a little later).
    def refusal_logged():
        logged = []
        for n in nodes.nodes:
            with open(n.stderr_path, "rb") as stderr:
                stderr.seek(offsets[n.node_id])
                text = stderr.read().decode("utf-8", "replace")
            logged += [line for line in text.splitlines() if "cluster" in line.lower()
                       and any(level in line for level in ("ERROR", "WARN"))]
        return logged
    try:
        cluster.wait_until(refusal_logged, 10, what="the refusal logged")
    except AssertionError as timed_out:
        raise AssertionError(f"no clear error about the cluster id:\n"
                             f"{node.stderr_tail()}") from timed_out
    node.kill()
    node.wipe()
    node.env = {}
    nodes.restart(stranger)
    nodes.wait_images_equal(check=lambda image: stranger in image["brokers"])


def test_a_stopped_broker_is_fenced_and_unfenced(make_cluster):
    """A broker killed with SIGKILL is fenced once its session expires: a partition it led
    alone goes offline, one with a second in-sync replica moves there at a new leader
    epoch, and it leaves every ISR it was in. Restarted, it is unfenced, leads its
    single-replica partition again in a new epoch, catches up with the other and rejoins
    its ISR."""
    nodes = make_cluster(3)
    controller = nodes.active_controller()
    victim = next(i for i in (3, 2, 1) if i != controller)
    other = next(i for i in nodes.node_ids() if i not in (victim, controller))
    survivors = [controller, other]
    single, double = unique("rf1"), unique("rf2")
    nodes.create_topic(controller, single, assignments={0: [victim], 1: [other]})
    nodes.create_topic(controller, double, assignments={0: [victim, other], 1: [other, victim]})

    def placed(image):
        topics = image["topics"]
        return single in topics and double in topics \
            and topics[single]["partitions"][0]["leader"] == victim \
            and topics[double]["partitions"][0]["leader"] == victim

    before = nodes.wait_images_equal(check=placed)
    # Every live replica starts in sync: all logs are empty.
    for partition in before["topics"][double]["partitions"].values():
        assert sorted(partition["isr"]) == sorted([victim, other]), before
    single_epoch = before["topics"][single]["partitions"][0]["leader_epoch"]
    double_epoch = before["topics"][double]["partitions"][0]["leader_epoch"]
    kept_epoch = before["topics"][double]["partitions"][1]["leader_epoch"]

    killed_at = time.monotonic()
    nodes.kill(victim)
    session_s = nodes.session_timeout_ms / 1000
    heartbeat_s = nodes.heartbeat_interval_ms / 1000
    nodes.wait_broker_listed(victim, listed=False, on=survivors, timeout_s=session_s * 3 + 10)
    fenced_after = time.monotonic() - killed_at
    print(f"broker {victim} fenced {fenced_after:.2f} s after SIGKILL "
          f"(broker.session.timeout.ms={nodes.session_timeout_ms}, "
          f"broker.heartbeat.interval.ms={nodes.heartbeat_interval_ms})")
    # Its last heartbeat reached the controller at most one interval before the kill.
    assert fenced_after >= session_s - heartbeat_s, \
        "fenced before its session timed out (at disconnect?)"

    def moved(image):
        topics = image["topics"]
        return topics[single]["partitions"][0]["leader"] == -1 \
            and topics[double]["partitions"][0]["leader"] == other

    during = nodes.wait_images_equal(on=survivors, check=moved)
    alone = during["topics"][single]["partitions"][0]
    assert alone["error"] == rawkafka.LEADER_NOT_AVAILABLE, alone
    # The fenced last in-sync replica stays in the ISR: the partition comes back with it.
    assert alone["isr"] == [victim], alone
    taken_over = during["topics"][double]["partitions"][0]
    assert taken_over["isr"] == [other], taken_over
    assert taken_over["leader_epoch"] == double_epoch + 1
    assert during["topics"][single]["partitions"][1]["leader"] == other
    # A partition the victim only followed keeps its leader and epoch, without it in sync.
    kept = during["topics"][double]["partitions"][1]
    assert (kept["leader"], kept["leader_epoch"], kept["isr"]) == (other, kept_epoch, [other])
    assert victim not in during["brokers"]

    nodes.restart(victim)  # waits until every node lists it again (unfenced)

    def back(image):
        topics = image["topics"]
        return topics[single]["partitions"][0]["leader"] == victim \
            and topics[single]["partitions"][0]["error"] == cluster.NONE \
            and all(sorted(p["isr"]) == sorted([victim, other])
                    for p in topics[double]["partitions"].values())

    after = nodes.wait_images_equal(check=back, timeout_s=60)
    assert victim in after["brokers"]
    assert after["topics"][single]["partitions"][0]["leader_epoch"] > single_epoch
