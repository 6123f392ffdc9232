"""`socket.send.buffer.bytes` and `socket.receive.buffer.bytes` reach the broker's end of
a client connection, as Kafka's SocketServer sets SO_SNDBUF and SO_RCVBUF: Kafka's 100 KiB
by default, the configured size when set, the kernel's own for -1; other values are refused
at start. Read from outside with `ss -tm` (Linux shows twice the size asked, socket(7))."""

import re
import subprocess

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
