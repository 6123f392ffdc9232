"""Self-tests of the cluster harness (cluster.py): they pass with any broker binary, one
that forms a cluster or not, because they check only what the harness does: ports, dirs,
command lines, signals by PID, data-dir wipes, network cuts, clean-up, the image checker
and the failover statistics. The cluster behaviour itself is in test_cluster*.py."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

import cluster
import conftest

HERE = os.path.dirname(os.path.abspath(__file__))


def process_state(pid):
    """The state letter of /proc/<pid>/stat (R, S, T = stopped, Z...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def gone(pid):
    return process_state(pid) in (None, "Z")


def wait_gone(pids, timeout_s=15.0):
    cluster.wait_until(lambda: all(gone(pid) for pid in pids), timeout_s,
                       what=f"processes {pids} to exit")


def test_nodes_get_their_own_ports_dirs_and_kafka_config(make_cluster):
    nodes = make_cluster(3, wait_formed=False)
    ports = [p for n in nodes.nodes for p in (n.broker_port, n.controller_port)]
    assert len(set(ports)) == 6, f"ports must be distinct: {ports}"
    assert len({n.data_dir for n in nodes.nodes}) == 3
    assert len(set(nodes.pids())) == 3
    assert len(nodes.cluster_id) == 22 and not nodes.cluster_id.startswith("-")
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes.nodes)
    assert nodes.voters() == voters
    for node in nodes.nodes:
        assert node.answers(), f"{node} does not answer ApiVersions"
        assert os.path.isdir(node.data_dir)
        assert process_state(node.pid) in ("R", "S")
        with open(node.stderr_path) as stderr:
            header = next(line for line in stderr if line.startswith("===== start #1"))
        for expected in (f"CLUSTER_ID={nodes.cluster_id}", f"node.id={node.node_id}",
                         "process.roles=broker,controller",
                         f"listeners=PLAINTEXT://{node.bootstrap},"
                         f"CONTROLLER://127.0.0.1:{node.controller_port}",
                         f"advertised.listeners=PLAINTEXT://{node.bootstrap}",
                         "controller.listener.names=CONTROLLER",
                         "inter.broker.listener.name=PLAINTEXT",
                         f"controller.quorum.voters={voters}",
                         f"log.dirs={node.data_dir}",
                         "broker.session.timeout.ms=3000",
                         "broker.heartbeat.interval.ms=500",
                         "offsets.topic.replication.factor=1"):
            assert expected in header, f"{expected!r} not in {header!r}"
        # Registered with conftest: killed at exit, stderr attached to failure reports.
        assert node in conftest._ALL_BROKERS
        assert node.name in node.stderr_tail()


def test_stop_kill_pause_resume_restart_wipe(make_cluster):
    nodes = make_cluster(3, wait_formed=False)
    one, two, three = nodes.nodes
    ports = (one.broker_port, one.controller_port)

    paused_pid = two.pid
    nodes.pause(2)
    assert process_state(paused_pid) == "T"
    assert not two.answers(timeout_s=0.3), "a SIGSTOPped node must not answer"
    assert nodes.running() == [1, 3]
    nodes.resume(2)
    cluster.wait_until(two.answers, 10, what="node 2 to answer after SIGCONT")
    assert two.pid == paused_pid

    pid = three.pid
    assert nodes.stop(3) == 0, "SIGTERM must end a node with exit code 0"
    assert gone(pid) and not three.answers() and three.pid is None
    assert nodes.running() == [1, 2]

    marker = os.path.join(one.data_dir, "harness-marker")
    with open(marker, "w") as out:
        out.write("kept")
    pid = one.pid
    assert nodes.kill(1) == -9
    assert gone(pid) and not one.answers()
    nodes.restart(1, wait_listed=False)
    assert one.pid != pid and one.answers()
    assert (one.broker_port, one.controller_port) == ports
    assert os.path.exists(marker), "a restart without wipe keeps the data dir"

    nodes.restart(1, wipe=True, hard=True, wait_listed=False)
    assert one.answers() and (one.broker_port, one.controller_port) == ports
    assert not os.path.exists(marker), "restart(wipe=True) empties the data dir"
    assert one.starts == 3 and one.exit_codes == [-9, -9]

    nodes.pause(2)  # close() must also end a paused node
    pids = nodes.pids()
    nodes.close()
    wait_gone(pids)
    nodes.close()  # idempotent


SCRIPT = textwrap.dedent("""
    import os, sys, tempfile, time
    sys.path.insert(0, {here!r})
    import cluster
    nodes = cluster.Cluster(2, tempfile.mkdtemp(prefix="harness-exit-"))
    nodes.start(wait_formed=False)
    nodes.pause(2)
    print(" ".join(str(pid) for pid in nodes.pids()), flush=True)
    if sys.argv[1] == "hang":
        time.sleep(120)
    sys.exit(3)  # no close(): atexit must kill the nodes
""")


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_nodes_die_with_the_test_process(tmp_path, ending):
    """A test process that exits without close() (atexit), or is killed outright
    (PR_SET_PDEATHSIG), leaves no node running, paused ones included."""
    script = tmp_path / "harness_exit.py"
    script.write_text(SCRIPT.format(here=HERE))
    mode = "exit" if ending == "exit" else "hang"
    child = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=os.environ.copy())
    try:
        line = child.stdout.readline()
        pids = [int(pid) for pid in line.split()]
        assert len(pids) == 2, f"child printed {line!r}"
        if ending == "sigkill":
            child.kill()
        assert child.wait(timeout=60) == (3 if ending == "exit" else -9)
        wait_gone(pids)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)


def test_network_cut_and_heal(make_cluster):
    nodes = make_cluster(3, netns=True, wait_formed=False)
    network = nodes.network
    hosts = [n.host for n in nodes.nodes]
    assert len(set(hosts)) == 3 and all(h.startswith("10.") for h in hosts)
    assert all(n.answers() for n in nodes.nodes)

    def reaches(source, target):
        """Whether a TCP connect from inside node source's namespace reaches target."""
        code = (f"import socket; socket.create_connection(({nodes.node(target).host!r}, "
                f"{nodes.node(target).broker_port}), timeout=1.5)")
        result = subprocess.run(network.exec_prefix(source) + [sys.executable, "-c", code],
                                capture_output=True, timeout=30)
        return result.returncode == 0

    assert reaches(1, 2) and reaches(3, 2) and reaches(2, 1)
    nodes.isolate(2)
    assert nodes.running() == [1, 3]
    assert not nodes.node(2).answers(timeout_s=1.0), "the test still reaches node 2"
    assert not reaches(1, 2) and not reaches(3, 2) and not reaches(2, 3)
    assert reaches(1, 3) and nodes.node(1).answers() and nodes.node(3).answers()
    nodes.heal(2)
    cluster.wait_until(nodes.node(2).answers, 10, what="node 2 reachable after heal")
    # Node 2's neighbour entries for the others failed while it was cut off; the kernel
    # resolves them again on the next tries, so the way out may take a moment longer
    # than the way in (seen once under load: 1 -> 2 reached, 2 -> 3 timed out).
    cluster.wait_until(lambda: reaches(1, 2) and reaches(2, 3), 10,
                       what="node 2 reaches and is reached after heal")

    pids = nodes.pids()
    nodes.close()
    wait_gone(pids)
    assert network.leftovers() == [], "namespaces, links, bridge or rule left behind"


def test_networks_of_a_killed_test_process_are_swept():
    available, reason = cluster.namespaces_available()
    if not available:
        pytest.skip(f"network namespaces unavailable: {reason}")
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import cluster, time; "
            "network = cluster.Network(2); network.setup(); print(network.tag, flush=True); "
            "time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        tag = child.stdout.readline().strip()
        assert len(tag) == 6, f"child printed {tag!r}"
    finally:
        child.kill()
        child.wait(timeout=30)
    network = cluster.Network(2)
    network.tag, network.bridge = tag, f"kq{tag}b"
    assert network.leftovers(), "the killed process's network should still exist"
    assert tag in cluster.sweep_dead_networks()
    assert network.leftovers() == []
    assert not os.path.exists(os.path.join(cluster.OWNERS_DIR, tag))


def test_image_of_one_node_from_the_wire(make_cluster, topic):
    nodes = make_cluster(1, wait_formed=False)
    node = nodes.node(1)
    error, message = node.create_topic(topic, partitions=2)
    assert error == cluster.NONE, message
    image = nodes.wait_images_equal(
        check=lambda image: topic in image["topics"])
    assert image["brokers"] == {1: ("127.0.0.1", node.broker_port, None)}
    assert image["described_brokers"] == image["brokers"]
    assert image["cluster_id"] == image["described_cluster_id"] and image["cluster_id"]
    view = image["topics"][topic]
    assert view["id"] and view["error"] == 0 and not view["internal"]
    assert sorted(view["partitions"]) == [0, 1]
    for partition in view["partitions"].values():
        assert partition["leader"] == 1 and partition["leader_epoch"] >= 0
        assert partition["replicas"] == [1] and partition["isr"] == [1]
    assert nodes.controllers() == {1: nodes.node(1).describe_cluster()["controller_id"]}


def fake_image(cluster_id="c", brokers=None, leader=1, epoch=0):
    brokers = brokers or {1: ("h", 1, None), 2: ("h", 2, None)}
    metadata = {"cluster_id": cluster_id, "controller_id": 1, "brokers": brokers,
                "topics": {"t": {"error": 0, "id": "x", "internal": False, "partitions": {
                    0: {"error": 0, "leader": leader, "leader_epoch": epoch,
                        "replicas": [1, 2], "isr": [2, 1], "offline": []}}}}}
    described = {"cluster_id": cluster_id, "controller_id": 2, "brokers": brokers}
    return cluster.normalise_image(metadata, described)


def test_image_differences():
    same = {1: fake_image(), 2: fake_image(), 3: fake_image()}
    assert cluster.image_differences(same) == []
    assert same[1]["topics"]["t"]["partitions"][0]["isr"] == [1, 2]
    differing = {1: fake_image(), 2: fake_image(epoch=1), 3: fake_image(cluster_id="d")}
    found = cluster.image_differences(differing)
    assert any(line.startswith("topic t: node 1") and "node 2" in line for line in found)
    assert any(line.startswith("cluster_id: node 1") and "node 3" in line for line in found)
    lopsided = fake_image()
    lopsided["described_brokers"] = {1: ("h", 1, None)}
    assert any("DescribeCluster's" in line for line in cluster.image_differences({1: lopsided}))


def test_failover_statistics():
    assert cluster.percentile([], 0.5) is None
    values = [float(v) for v in range(1, 101)]
    assert cluster.percentile(values, 0.50) == 50.0
    assert cluster.percentile(values, 0.90) == 90.0
    assert cluster.percentile(values, 0.99) == 99.0
    assert cluster.percentile([3.0], 0.99) == 3.0
    rounds = [{"leader_s": v, "topic_s": v + 1, "stalled": v > 10} for v in (1, 2, 12)]
    summary = cluster.summarise_failovers(rounds)
    assert summary["rounds"] == 3 and summary["stalls"] == 1
    assert summary["leader_s"]["min"] == 1 and summary["topic_s"]["max"] == 13
    text = cluster.format_summary(summary)
    assert "stalls" in text and "p99" in text


def test_random_cluster_ids_look_like_kafkas():
    ids = {cluster.random_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for value in ids:
        assert len(value) == 22 and not value.startswith("-")
        assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789-_")


def test_wait_until_polls_and_gives_up():
    calls = []

    def later():
        calls.append(time.monotonic())
        return len(calls) >= 3 and "done"

    assert cluster.wait_until(later, 5) == "done" and len(calls) == 3
    with pytest.raises(AssertionError, match="timed out .* waiting for nothing"):
        cluster.wait_until(lambda: None, 0.2, what="nothing")

    def give_up():
        calls.append(1)
        raise cluster.GiveUp("no point")

    before = len(calls)
    with pytest.raises(cluster.GiveUp):
        cluster.wait_until(give_up, 30)
    assert len(calls) == before + 1


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """Nodes run fake_cluster_node.py (a stand-in that forms a cluster through shared
    files) instead of the broker: the harness's cluster logic is tested on its own."""
    wrapper = tmp_path / "fake-gracchus"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} "
                       f"{os.path.join(HERE, 'fake_cluster_node.py')} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("GRACCHUS_BIN", str(wrapper))


def test_formation_failover_rounds_and_images_on_a_stand_in(stand_in, make_cluster):
    nodes = make_cluster(3)  # returns once every node lists 3 brokers and a controller
    assert nodes.active_controller() == 1  # the stand-in's rule: the lowest live id
    image = nodes.wait_images_equal()
    assert sorted(image["brokers"]) == [1, 2, 3]
    assert image["cluster_id"] == nodes.cluster_id

    rounds = [cluster.failover_round(nodes, index) for index in range(3)]
    for result in rounds:
        assert result["killed"] == 1 and result["new_controller"] == 2
        # The stand-in forgets a node 1 s after its last heartbeat.
        assert 0.5 < result["leader_s"] <= result["topic_s"] < 10, result
        assert not result["stalled"]
    summary = cluster.summarise_failovers(rounds)
    assert summary["rounds"] == 3 and summary["stalls"] == 0
    image = nodes.wait_images_equal(check=lambda image: len(image["topics"]) == 3)
    assert all(topic["partitions"][0]["leader"] == 2 for topic in image["topics"].values())

    # A broker that stops is dropped from every survivor's view; its partitions go offline.
    nodes.create_topic(1, "on-node-1", partitions=2)
    nodes.wait_topic_everywhere("on-node-1", partitions=2)
    nodes.kill(1)
    nodes.wait_broker_listed(1, listed=False, on=[2, 3])
    offline = nodes.wait_images_equal(on=[2, 3])["topics"]["on-node-1"]["partitions"][0]
    assert offline["leader"] == -1 and offline["error"] == cluster.LEADER_NOT_AVAILABLE
    assert nodes.active_controller(on=[2, 3]) == 2
    nodes.restart(1, wipe=True)  # waits until every node lists it again
    assert nodes.wait_images_equal()["topics"]["on-node-1"]["partitions"][0]["leader"] == 1
    nodes.kill(1)
    nodes.wait_broker_listed(1, listed=False, on=[2, 3])
    with pytest.raises(AssertionError, match="no leader for partitions"):
        nodes.wait_topic_everywhere("on-node-1", on=[2], timeout_s=0.5)
