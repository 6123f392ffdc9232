"""`socket.send.buffer.bytes` and `socket.receive.buffer.bytes` reach the broker's end of
a client connection, as Kafka's SocketServer sets SO_SNDBUF and SO_RCVBUF: Kafka's 100 KiB
by default, the configured size when set, the kernel's own for -1; other values are refused
at start. Read from outside with `ss -tm` (Linux shows twice the size asked, socket(7)).
Also the rest of what Kafka sets on its sockets: `socket.listen.backlog.size` on the
listener, SO_KEEPALIVE on accepted sockets, `replica.socket.receive.buffer.bytes` on a
follower's connection to its leader."""

import re
import subprocess

import cluster
import rawkafka
from conftest import HOST
from test_node_config import new_broker, start_expecting_failure  # noqa: F401 (fixture)

SKMEM = re.compile(r"skmem:\(r\d+,rb(\d+),t\d+,tb(\d+),")


def broker_side_buffers(broker, conn):
    """(receive, send) buffer sizes of the broker's socket for `conn`, from `ss -tm`."""
    client_port = conn.sock.getsockname()[1]
    result = subprocess.run(
        ["ss", "-tmnH", "state", "established",
         f"( sport = :{broker.port} and dport = :{client_port} )"],
        capture_output=True, text=True, timeout=10, check=True)
    found = SKMEM.findall(result.stdout)
    assert len(found) == 1, f"expected one broker-side socket in:\n{result.stdout}"
    receive, send = found[0]
    return int(receive), int(send)


def ss(*arguments):
    result = subprocess.run(["ss", "-nH", *arguments], capture_output=True, text=True,
                            timeout=10, check=True)
    return result.stdout


def listen_backlog(port):
    """The backlog of the socket listening on `port`: `ss -lt` shows it as Send-Q."""
    lines = ss("-lt", f"( sport = :{port} )").splitlines()
    assert len(lines) == 1, lines
    return int(lines[0].split()[2])


def answered_connection(broker):
    """A connection the broker has accepted and answered, so its socket is set up."""
    conn = rawkafka.Connection(HOST, broker.port)
    error_code, _ = rawkafka.api_versions_v0(conn)
    assert error_code == 0
    return conn


def kernel_default_receive_buffer():
    with open("/proc/sys/net/ipv4/tcp_rmem") as file:
        return int(file.read().split()[1])


def test_kafkas_default_buffers_are_set_on_accepted_sockets(new_broker):
    broker = new_broker("sockbuf-default")
    broker.start()
    with answered_connection(broker) as conn:
        assert broker_side_buffers(broker, conn) == (2 * 102_400, 2 * 102_400)


def test_configured_sizes_and_minus_one_for_the_kernels(new_broker):
    broker = new_broker("sockbuf-set", overrides={"socket.send.buffer.bytes": "65536",
                                                  "socket.receive.buffer.bytes": "-1"})
    broker.start()
    with answered_connection(broker) as conn:
        receive, send = broker_side_buffers(broker, conn)
    assert send == 2 * 65_536
    # Left alone: the kernel's initial size, which autotuning may grow later.
    assert receive == kernel_default_receive_buffer()


def test_zero_or_other_negative_sizes_are_refused_at_start(new_broker):
    for key, value in [("socket.send.buffer.bytes", "0"),
                       ("socket.receive.buffer.bytes", "-2")]:
        broker = new_broker("sockbuf-bad", overrides={key: value})
        message = start_expecting_failure(broker)
        assert key in message and value in message, message


def test_listen_backlog_is_kafkas_or_the_configured_one_and_accepted_sockets_keep_alive(
        new_broker):
    broker = new_broker("sockbuf-backlog")
    broker.start()
    assert listen_backlog(broker.port) == 50
    with answered_connection(broker) as conn:
        client_port = conn.sock.getsockname()[1]
        # `-o` shows a keepalive timer on a socket with SO_KEEPALIVE (and none without).
        line = ss("-to", "state", "established",
                  f"( sport = :{broker.port} and dport = :{client_port} )")
        assert "timer:(keepalive" in line, line
    broker.stop()

    broker = new_broker("sockbuf-backlog-set",
                        overrides={"socket.listen.backlog.size": "7"})
    broker.start()
    assert listen_backlog(broker.port) == 7
    broker.stop()

    broker = new_broker("sockbuf-backlog-bad",
                        overrides={"socket.listen.backlog.size": "0"})
    message = start_expecting_failure(broker)
    assert "socket.listen.backlog.size" in message, message


def sockets_of(pid, dport):
    """Receive buffer sizes of process `pid`'s established sockets to port `dport`."""
    out = ss("-tmp", "state", "established", f"( dport = :{dport} )")
    # One socket per line, its skmem on the indented line after it.
    records = re.split(r"\n(?=\S)", out.strip())
    return [int(rb) for record in records if f"pid={pid}," in record
            for rb in re.findall(r"rb(\d+)", record)]


def test_a_followers_connection_to_its_leader_has_the_replica_receive_buffer(data_root):
    """A follower's fetcher connection carries `replica.socket.receive.buffer.bytes`: an
    odd size no other socket of the process has, found on the follower's own end."""
    asked = 40_000
    topic = "replica-rcvbuf"
    nodes = cluster.Cluster(2, data_root, name="replica-rcvbuf",
                            overrides={"replica.socket.receive.buffer.bytes": str(asked)})
    try:
        nodes.start()
        nodes.create_topic(1, topic, partitions=2, replication_factor=2)

        def follows():
            partitions = nodes.node(1).metadata([topic])["topics"][topic]["partitions"]
            leaders = {p["leader"] for p in partitions.values()}
            return leaders if -1 not in leaders and len(partitions) == 2 else None

        leaders = cluster.wait_until(follows, 30, "partition leaders")
        for follower in nodes.nodes:
            for leader in nodes.nodes:
                if leader is follower or leader.node_id not in leaders:
                    continue
                cluster.wait_until(
                    lambda: 2 * asked in sockets_of(follower.pid, leader.broker_port), 30,
                    f"node {follower.node_id}'s fetcher socket to node {leader.node_id}")
    finally:
        nodes.close()
