"""Prometheus /metrics on the HTTP listener (issue 11): counters move by what clients did,
state gauges match the broker's state, histograms are well formed, the HTTP edge answers
as HTTP says, and the listener's configuration is honoured (off, or a bind failure that
stops start-up).

The parser below reads the text exposition format strictly enough to catch a malformed
line: every sample line must be `name{labels} value`.
"""

import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

import clients
import cluster
import conftest
import rawkafka

RECORDS = 20
COMMITTED = 12

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url):
    """{(name, frozenset(labels.items())): value} of every sample at url."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, _, labels, value = match.groups()
        labels = frozenset(LABEL.findall(labels or ""))
        key = (name, labels)
        assert key not in samples, f"duplicate series {line!r}"
        samples[key] = float(value)
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples, name, **labels):
    """Sum over every series of name whose labels include the given ones."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def http(port, request_bytes):
    with socket.create_connection((conftest.HOST, port), timeout=10) as sock:
        sock.sendall(request_bytes)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_counters_and_gauges_follow_produce_consume_and_commit(broker, topic):
    url = broker.metrics_url
    before = scrape(url)
    clients.create_topic(broker, topic, partitions=1)
    # Before any consumer: a group.id makes librdkafka look up a coordinator, which
    # creates __consumer_offsets (50 partitions) on first use.
    created = scrape(url)
    records = [{"value": f"value-{i}".encode(), "partition": 0} for i in range(RECORDS)]
    clients.produce_ok(broker, topic, records)
    assert len(clients.consume(broker, topic, 0, 0, RECORDS)) == RECORDS
    assert conftest.answers_requests(broker.port)  # exactly one ApiVersions v0
    after = scrape(url)

    messages_in = value(after, "kafka_server_brokertopicmetrics_messagesin_total", topic=topic)
    bytes_in = value(after, "kafka_server_brokertopicmetrics_bytesin_total", topic=topic)
    bytes_out = value(after, "kafka_server_brokertopicmetrics_bytesout_total", topic=topic)
    assert messages_in == RECORDS
    # The log holds the batches exactly as produced; the consumer read all of them.
    assert bytes_in == value(after, "kafka_log_log_size", topic=topic, partition="0") > 0
    assert bytes_out >= bytes_in
    assert value(after, "kafka_log_log_numlogsegments", topic=topic, partition="0") == 1
    assert value(after, "kafka_log_log_logendoffset", topic=topic, partition="0") == RECORDS
    for name in ("messagesin_total", "bytesin_total"):
        name = f"kafka_server_brokertopicmetrics_{name}"
        assert value(after, name) - value(before, name) == value(after, name, topic=topic)

    requests = "kafka_network_requestmetrics_requests_total"
    assert value(after, requests, request="ApiVersions", version="0") - \
        value(before, requests, request="ApiVersions", version="0") == 1
    assert total(after, requests, request="Produce") > total(before, requests, request="Produce")
    assert total(after, requests, request="CreateTopics") - \
        total(before, requests, request="CreateTopics") == 1
    # Fetch counts every consumer fetch, split as Kafka splits it.
    assert total(after, requests, request="FetchConsumer") == total(after, requests,
                                                                     request="Fetch") > 0

    replica_manager = "kafka_server_replicamanager_"
    assert value(created, replica_manager + "partitioncount") - \
        value(before, replica_manager + "partitioncount") == 1
    assert value(after, replica_manager + "leadercount") == \
        value(after, replica_manager + "partitioncount")
    assert value(after, replica_manager + "underreplicatedpartitions") == 0
    assert value(after, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert value(after, "kafka_controller_kafkacontroller_offlinepartitionscount") == 0
    assert value(after, "kafka_server_raftmetrics_current_state", state="leader") == 1
    assert value(after, "kafka_server_socketservermetrics_connection_creation_total",
                 listener="PLAINTEXT") > value(before,
                                               "kafka_server_socketservermetrics_connection_creation_total",
                                               listener="PLAINTEXT")
    check_histogram(after, "kafka_network_requestmetrics_totaltimems", "Produce")
    check_histogram(after, "kafka_network_requestmetrics_localtimems", "FetchConsumer")

    group = f"{topic}-group"
    committer = Consumer(clients.base_config(broker, **{"group.id": group}))
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, COMMITTED)], asynchronous=False)
    finally:
        committer.close()
    committed = scrape(url)
    labels = {"consumergroup": group, "topic": topic, "partition": "0"}
    assert value(committed, "kafka_consumergroup_current_offset", **labels) == COMMITTED
    assert value(committed, "kafka_consumergroup_lag", **labels) == RECORDS - COMMITTED


def check_histogram(samples, name, request):
    """Buckets present, cumulative, +Inf equal to the count, and the count non-zero."""
    buckets = sorted(
        (float(dict(ls)["le"]), v) for (n, ls), v in samples.items()
        if n == f"{name}_bucket" and dict(ls).get("request") == request)
    assert len(buckets) > 5, f"{name} {request}: buckets {buckets}"
    counts = [v for _le, v in buckets]
    assert counts == sorted(counts), f"{name} {request}: not cumulative {buckets}"
    assert buckets[-1][0] == float("inf")
    count = value(samples, f"{name}_count", request=request)
    assert buckets[-1][1] == count > 0
    assert value(samples, f"{name}_sum", request=request) >= 0


def test_fetch_errors_are_counted_by_kafka_name(broker, topic):
    clients.create_topic(broker, topic, partitions=1)
    clients.produce_ok(broker, topic, [{"value": b"x", "partition": 0}])
    errors = "kafka_network_requestmetrics_errors_total"
    before = value(scrape(broker.metrics_url), errors, request="Fetch",
                   error="OFFSET_OUT_OF_RANGE")
    client = clients.consumer(broker)  # auto.offset.reset=error: the error reaches us
    try:
        client.assign([TopicPartition(topic, 0, 1000)])
        deadline = time.monotonic() + 20
        seen = None
        while seen is None and time.monotonic() < deadline:
            message = client.poll(0.5)
            if message is not None and message.error():
                seen = message.error().code()
        assert seen == KafkaError._AUTO_OFFSET_RESET, seen
    finally:
        client.close()
    after = value(scrape(broker.metrics_url), errors, request="Fetch",
                  error="OFFSET_OUT_OF_RANGE")
    assert after > before


def test_errors_in_other_responses_are_counted_too(broker, topic):
    """Every response's error codes are counted (Kafka's errorCounts), not only produce and
    fetch: a refused topic name in CreateTopics, an unknown topic in Metadata."""
    errors = "kafka_network_requestmetrics_errors_total"
    before = scrape(broker.metrics_url)
    admin = clients.admin(broker)
    from confluent_kafka.admin import NewTopic
    futures = admin.create_topics([NewTopic("bad/name", 1, 1)], request_timeout=10)
    with pytest.raises(Exception):
        futures["bad/name"].result(timeout=10)
    with rawkafka.Connection(conftest.HOST, broker.port) as conn:
        found = rawkafka.metadata_v4(conn, [topic + "-absent"])["topics"]
    assert found[topic + "-absent"][0] == 3  # UNKNOWN_TOPIC_OR_PARTITION
    after = scrape(broker.metrics_url)
    for request, error in (("CreateTopics", "INVALID_TOPIC_EXCEPTION"),
                           ("Metadata", "UNKNOWN_TOPIC_OR_PARTITION")):
        grew = (value(after, errors, request=request, error=error)
                - value(before, errors, request=request, error=error))
        assert grew >= 1, (request, error)


def test_http_edge_answers_as_http_says(broker):
    port = broker.http_port
    missing = http(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert missing.startswith("HTTP/1.1 404 "), missing
    post = http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert post.startswith("HTTP/1.1 405 "), post
    assert "Allow: GET, HEAD\r\n" in post
    bad = http(port, b"NOT HTTP\r\n\r\n")
    assert bad.startswith("HTTP/1.1 400 "), bad
    head = http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 "), head
    assert head.endswith("\r\n\r\n"), "HEAD answered with a body"
    length = int(re.search(r"Content-Length: (\d+)", head).group(1))
    assert length > 1000
    huge = http(port, b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * 9000 + b"\r\n\r\n")
    assert huge.startswith("HTTP/1.1 431 "), huge[:100]
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"http://{conftest.HOST}:{port}/nothing-here", timeout=10)
    assert error.value.code == 404


def test_listener_off_and_bind_failure(start_broker, data_root):
    off = start_broker("http-off", {"http.listener": "none"})
    try:
        assert not conftest.port_accepts(off.http_port)
    finally:
        assert off.stop() == 0
    # A configured listener that cannot be bound stops start-up, as a Kafka listener does.
    with socket.socket() as taken:
        taken.bind((conftest.HOST, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        node = conftest.Broker(f"http-taken-{port}", data_root,
                               {"http.listener": f"{conftest.HOST}:{port}"})
        result = subprocess.run(node.command(), cwd=node.data_dir, capture_output=True,
                                timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert b"http.listener" in result.stderr, result.stderr[-2000:]


@pytest.fixture
def three(data_root):
    # The leader's own ISR shrink (after replica.lag.time.max.ms) must come before the
    # controller fences the dead node (broker.session.timeout.ms), which would take it out
    # of the ISR without a shrink by the leader.
    nodes = cluster.Cluster(3, data_root, overrides={"replica.lag.time.max.ms": "2000"},
                            session_timeout_ms=30000, name=None)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


def test_under_replicated_partitions_rise_when_a_follower_dies(three, topic):
    three.create_topic(1, topic, assignments={0: [1, 2, 3]})
    three.wait_topic_everywhere(topic, partitions=1)
    leader = three.node(1)
    clients.produce_ok(leader, topic, [{"value": b"before", "partition": 0}])
    urp = "kafka_server_replicamanager_underreplicatedpartitions"
    # The followers join the ISR once they have fetched the first record.
    cluster.wait_until(lambda: value(scrape(leader.metrics_url), urp) == 0, 30,
                       what="no under-replicated partition before the kill")
    # Every node serves its own /metrics.
    for node_id in (2, 3):
        samples = scrape(three.node(node_id).metrics_url)
        assert value(samples, "kafka_server_replicamanager_partitioncount") >= 1
    three.kill(3)
    # A follower is out of sync only once it misses records (as in Kafka): write some.
    clients.produce_ok(leader, topic, [{"value": b"after", "partition": 0}], acks="1")

    def shrunk():
        samples = scrape(leader.metrics_url)
        return samples if value(samples, urp) >= 1 else None

    samples = cluster.wait_until(shrunk, 30, what="under-replicated partitions on node 1")
    assert value(samples, urp) == 1
    assert value(samples, "kafka_server_replicamanager_isrshrinks_total") >= 1
    assert value(samples, "kafka_server_replicamanager_leadercount") >= 1
