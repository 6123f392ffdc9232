"""Storage faults a client must see and an operator must be told about once (issue 6).

- A full disk: log.dirs on a small tmpfs the test mounts (skipped, with the reason, when
  mounting is not allowed). Produce answers KAFKA_STORAGE_ERROR and logs one ERROR for
  the fault; CreateTopics answers an error for partitions that could not open; retries
  on later topic changes do not log again; freeing space clears the fault (logged once).
  The metadata log lives on another filesystem (a symlinked __cluster_metadata-0, as with
  Kafka's metadata.log.dir), so that the controller can commit while the data disk is full.
- The file-descriptor limit: the broker runs under `prlimit --nofile`; CreateTopics of
  more partitions than it can open answers KAFKA_STORAGE_ERROR naming them, with one ERROR
  line per topic change however many partitions failed.
- A corrupt batch in a closed segment: after a restart the log ends before it (as Kafka's
  LogLoader cuts it), the later segments are set aside (kept, not served), and produce
  continues at that offset.
- The metadata log on a full disk: a command that cannot be written leaves no torn line
  that would hide later commands at the next start.

CreateTopics v4, CreatePartitions v1, DeleteTopics v1 and Metadata v5 are encoded here by
hand (non-flexible versions, from the message schemas in apache/kafka).
"""

import errno
import os
import re
import shutil
import struct
import subprocess
import uuid

import pytest

import rawkafka
from conftest import Broker
from rawkafka import array, boolean, int16, int32, string

KAFKA_STORAGE_ERROR = 56
CREATE_TOPICS = 19
DELETE_TOPICS = 20
CREATE_PARTITIONS = 37
NODE_ID = 1

TMPFS_SIZE = "16m"
# A produce this large needs fresh tmpfs pages, so it cannot fit in a partly used one.
LARGE_VALUE_BYTES = 64 * 1024
FILL_CHUNK_BYTES = 1 << 20
# Topic changes made while the disk is full, each of which retries the failed partitions.
CHANGES_WHILE_FULL = 5
# Topic creations tried on a full disk before one's metadata line needs a new page.
METADATA_LINES_MAX = 64
# Descriptor limit for the broker and partitions asked for: far more than it can open.
NOFILE_LIMIT = 128
MANY_PARTITIONS = 100
# num.recovery.threads.per.data.dir at its default: partitions open on this many threads.
RECOVERY_THREADS = 2

ERROR_LINE = re.compile(r"^\S+\s+ERROR\s")


# ---------------------------------------------------------------- raw admin requests


def create_topics(conn, topics, configs=None):
    """CreateTopics v4 of [(name, partitions)]; returns {name: (error_code, message)}."""
    config_entries = [string(k) + string(v) for k, v in (configs or {}).items()]

    def topic(item):
        name, partitions = item
        return (string(name) + int32(partitions) + int16(1) + array([], None)
                + array(config_entries, lambda entry: entry))

    body = array(topics, topic) + int32(30000) + boolean(False)
    reader = conn.request(CREATE_TOPICS, 4, body)
    reader.int32()  # throttle_time_ms
    results = dict(reader.array(lambda r: (r.string(), (r.int16(), r.string()))))
    reader.expect_end()
    return results


def create_partitions(conn, name, count):
    """CreatePartitions v1 to `count` partitions; returns (error_code, message)."""
    body = (array([string(name) + int32(count) + int32(-1)], lambda item: item)
            + int32(30000) + boolean(False))
    reader = conn.request(CREATE_PARTITIONS, 1, body)
    reader.int32()  # throttle_time_ms
    (result_name, error_code, message), = reader.array(
        lambda r: (r.string(), r.int16(), r.string()))
    reader.expect_end()
    assert result_name == name
    return error_code, message


def delete_topics(conn, names):
    """DeleteTopics v1; returns {name: error_code}."""
    body = array(names, string) + int32(30000)
    reader = conn.request(DELETE_TOPICS, 1, body)
    reader.int32()  # throttle_time_ms
    results = dict(reader.array(lambda r: (r.string(), r.int16())))
    reader.expect_end()
    return results


def offline_replicas(conn, name):
    """Metadata v5 of one topic; returns {partition: offline replica ids}."""
    body = array([name], string) + boolean(False)
    reader = conn.request(rawkafka.METADATA, 5, body)
    reader.int32()  # throttle_time_ms
    reader.array(lambda r: (r.int32(), r.string(), r.int32(), r.string()))  # brokers
    reader.string()  # cluster_id
    reader.int32()  # controller_id

    def read_partition(r):
        r.int16()  # error_code
        index = r.int32()
        r.int32()  # leader
        r.array(lambda rr: rr.int32())  # replicas
        r.array(lambda rr: rr.int32())  # isr
        return index, r.array(lambda rr: rr.int32())

    def read_topic(r):
        error_code = r.int16()
        topic_name = r.string()
        r.boolean()  # is_internal
        return topic_name, (error_code, dict(r.array(read_partition)))

    topics = dict(reader.array(read_topic))
    reader.expect_end()
    error_code, partitions = topics[name]
    assert error_code == rawkafka.NONE, f"Metadata of {name} failed with {error_code}"
    return partitions


# ---------------------------------------------------------------- helpers


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def batch(value):
    return rawkafka.build_batch([(None, value, [])])


def produce(conn, topic, partition, value):
    return rawkafka.produce(conn, topic, partition, batch(value))


def stderr_lines(broker):
    with open(broker.stderr_path, "rb") as stderr:
        return stderr.read().decode("utf-8", "replace").splitlines()


def error_lines(broker):
    return [line for line in stderr_lines(broker) if ERROR_LINE.match(line)]


def lines_with(broker, text):
    return [line for line in stderr_lines(broker) if text in line]


def mount_tmpfs(path, size):
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs at {path}: {result.stderr.strip() or result.returncode}"
        print(reason)
        pytest.skip(reason)


def unmount(path):
    subprocess.run(["umount", path], capture_output=True, timeout=30, check=True)


def fill_disk(path):
    """Writes a file into `path` until the filesystem refuses (ENOSPC); returns its path."""
    filler = os.path.join(path, "filler")
    chunk = b"\0" * FILL_CHUNK_BYTES
    with open(filler, "wb", buffering=0) as out:
        size = len(chunk)
        while size:
            try:
                while True:
                    written = out.write(chunk[:size])
                    assert written, "a write of zero bytes"
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                size //= 2
    return filler


@pytest.fixture
def full_disk_broker(data_root):
    """A broker whose log.dirs is a fresh tmpfs (metadata log elsewhere); unmounts after."""
    broker = Broker(unique("full-disk"), data_root)
    mount_tmpfs(broker.data_dir, TMPFS_SIZE)
    metadata_dir = os.path.join(data_root, f"{broker.name}-metadata")
    os.makedirs(metadata_dir)
    os.symlink(metadata_dir, os.path.join(broker.data_dir, "__cluster_metadata-0"))
    try:
        yield broker.start()
        assert broker.stop() == 0, broker.stderr_tail()
    finally:
        broker.kill()
        unmount(broker.data_dir)


class LimitedBroker(Broker):
    """A broker started under `prlimit --nofile` (soft and hard limit)."""

    nofile = NOFILE_LIMIT

    def command(self):
        return ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--"] + super().command()


@pytest.fixture
def limited_broker(data_root):
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit is not installed")
    broker = LimitedBroker(unique("nofile"), data_root)
    try:
        yield broker.start()
        assert broker.stop() == 0, broker.stderr_tail()
    finally:
        broker.kill()


# ---------------------------------------------------------------- (1) disk full


def test_a_full_disk_refuses_produce_and_create_and_logs_each_fault_once(full_disk_broker):
    broker = full_disk_broker
    hosted, refused = unique("hosted"), unique("refused")
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        assert create_topics(conn, [(hosted, 1)])[hosted][0] == rawkafka.NONE
        assert produce(conn, hosted, 0, b"before").base_offset == 0
        assert error_lines(broker) == []
        filler = fill_disk(broker.data_dir)

        results = [produce(conn, hosted, 0, os.urandom(LARGE_VALUE_BYTES)) for _ in range(3)]
        assert [r.error_code for r in results] == [KAFKA_STORAGE_ERROR] * 3, results
        errors = error_lines(broker)
        assert len(errors) == 1 and f"{hosted}-0" in errors[0], errors

        code, message = create_topics(conn, [(refused, 3)])[refused]
        assert code == KAFKA_STORAGE_ERROR, (code, message)
        assert "3 partitions" in message and "(0-2)" in message and "No space left on device" in message, message
        assert offline_replicas(conn, refused) == {0: [NODE_ID], 1: [NODE_ID], 2: [NODE_ID]}
        assert produce(conn, refused, 1, b"x").error_code == KAFKA_STORAGE_ERROR
        assert rawkafka.fetch(conn, refused, 1, 0).error_code == KAFKA_STORAGE_ERROR
        assert rawkafka.list_offsets(conn, refused, 1, -1)[0] == KAFKA_STORAGE_ERROR
        assert len(error_lines(broker)) == 2, error_lines(broker)

        # Every change below retries the failed partitions; only new faults are logged.
        for _ in range(CHANGES_WHILE_FULL):
            name = unique("while-full")
            assert create_topics(conn, [(name, 1)])[name][0] == KAFKA_STORAGE_ERROR
        code, message = create_partitions(conn, refused, 4)
        assert code == KAFKA_STORAGE_ERROR and "(0-3)" in message, (code, message)
        errors = error_lines(broker)
        assert len(errors) == 2 + CHANGES_WHILE_FULL + 1, errors
        assert sum(f"{refused}-0" in line for line in errors) == 1, errors

        os.remove(filler)
        assert produce(conn, hosted, 0, b"after").base_offset == 1
        assert produce(conn, hosted, 0, b"again").base_offset == 2
        assert len(lines_with(broker, "appends succeed again after a storage fault")) == 1
        records = rawkafka.fetch_all_records(conn, hosted, 0)
        assert [(offset, value) for offset, _, value, _ in records] == \
            [(0, b"before"), (1, b"after"), (2, b"again")]

        # The next topic change opens what failed, and says so once.
        healed = unique("healed")
        assert create_topics(conn, [(healed, 1)])[healed][0] == rawkafka.NONE
        reopened = lines_with(broker, "partitions opened after earlier failures")
        assert len(reopened) == 1 and "count=9" in reopened[0], reopened
        assert offline_replicas(conn, refused) == {0: [], 1: [], 2: [], 3: []}
        assert produce(conn, refused, 3, b"healed").base_offset == 0
        assert len(error_lines(broker)) == 2 + CHANGES_WHILE_FULL + 1


def test_a_full_disk_never_tears_the_metadata_log(data_root):
    """With the metadata log on the full disk too, a command line that does not fit fails
    whole: the topic created after space is freed must survive a restart (a torn line
    left behind would stop replay there and lose every later command)."""
    broker = Broker(unique("full-metadata"), data_root)
    mount_tmpfs(broker.data_dir, TMPFS_SIZE)
    try:
        broker.start()
        before, after = unique("before"), unique("after")
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            assert create_topics(conn, [(before, 1)])[before][0] == rawkafka.NONE
            filler = fill_disk(broker.data_dir)
            # Each refused topic's line still fits in the metadata log's last page, until
            # one crosses into a page the disk cannot give.
            for _ in range(METADATA_LINES_MAX):
                name = unique("while-full")
                code, message = create_topics(conn, [(name, 1)])[name]
                assert code in (KAFKA_STORAGE_ERROR, rawkafka.NONE), (code, message)
                if "append failed" in (message or ""):
                    # The metadata log itself refused the command (KAFKA_STORAGE_ERROR, as
                    # for a partition that cannot open, but nothing was stored).
                    assert "No space left on device" in message, message
                    break
            else:
                pytest.fail(f"{METADATA_LINES_MAX} metadata lines fit on a full disk")
            os.remove(filler)
            assert create_topics(conn, [(after, 1)])[after][0] == rawkafka.NONE
        broker.restart()
        with rawkafka.Connection("127.0.0.1", broker.port) as conn:
            topics = rawkafka.metadata_v4(conn, [before, after])["topics"]
            assert {name: topics[name][0] for name in topics} == \
                {before: rawkafka.NONE, after: rawkafka.NONE}, topics
            assert produce(conn, after, 0, b"kept").base_offset == 0
        assert broker.stop() == 0, broker.stderr_tail()
    finally:
        broker.kill()
        unmount(broker.data_dir)


# ---------------------------------------------------------------- (2) descriptor limit


def test_the_descriptor_limit_fails_create_topics_with_bounded_logging(limited_broker):
    broker = limited_broker
    many, small = unique("many"), [unique("small") for _ in range(3)]
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        code, message = create_topics(conn, [(many, MANY_PARTITIONS)])[many]
        assert code == KAFKA_STORAGE_ERROR, (code, message)
        assert "Too many open files" in message, message
        offline = offline_replicas(conn, many)
        failed = sorted(p for p, replicas in offline.items() if replicas == [NODE_ID])
        opened = sorted(p for p, replicas in offline.items() if replicas == [])
        assert failed and opened and len(failed) + len(opened) == MANY_PARTITIONS, offline
        # Partitions open on RECOVERY_THREADS threads, so the ones that
        # found no descriptor are not a fixed tail ("19-49, 68-97, 99" was seen): the
        # message names exactly the offline ones.
        assert named_partitions(message) == failed, (message, failed)
        assert produce(conn, many, opened[0], b"fits").base_offset == 0
        assert produce(conn, many, failed[0], b"no").error_code == KAFKA_STORAGE_ERROR
        # At the boundary a partition may open with no descriptor left to record its first
        # leader epoch: one more line for it, logged once. Each opening thread can be the
        # one at the boundary (two were seen, 18 ms apart), so one line per thread at most.
        boundary = lines_with(broker, "recording a new leader epoch failed")
        assert len(boundary) <= RECOVERY_THREADS, boundary
        errors = [line for line in error_lines(broker) if line not in boundary]
        assert len(errors) == 1, errors
        assert f"{len(failed)} partitions could not be opened" in errors[0], errors

        for name in small:
            assert create_topics(conn, [(name, 4)])[name][0] == KAFKA_STORAGE_ERROR
        expected = 1 + len(boundary) + len(small)
        assert len(error_lines(broker)) == expected, error_lines(broker)

        # Deleting the big topic frees its descriptors; the deletion's reconcile opens the
        # small topics' partitions (once, logged once) and forgets the deleted ones.
        assert delete_topics(conn, [many]) == {many: rawkafka.NONE}
        reopened = lines_with(broker, "partitions opened after earlier failures")
        assert len(reopened) == 1 and f"count={4 * len(small)}" in reopened[0], reopened
        for name in small:
            assert offline_replicas(conn, name) == {p: [] for p in range(4)}
            assert produce(conn, name, 3, b"opened").base_offset == 0
        assert len(error_lines(broker)) == expected, error_lines(broker)


def named_partitions(message):
    """The partitions an Offline error's "(0-2, 9)" names, ascending."""
    runs = re.search(r"on this broker \(([0-9, -]+)\)", message).group(1)
    named = []
    for run in runs.split(", "):
        first, _, last = run.partition("-")
        named.extend(range(int(first), int(last or first) + 1))
    return named


# ---------------------------------------------------------------- (3) corrupt closed segment


def batch_spans(data):
    """(position, length) of each whole batch in a segment's bytes."""
    spans, position = [], 0
    while position + 12 <= len(data):
        (length,) = struct.unpack_from(">i", data, position + rawkafka.BATCH_LENGTH_OFFSET)
        spans.append((position, 12 + length))
        position += 12 + length
    return spans


def segment_bases(partition_dir):
    return sorted(int(name[:-4]) for name in os.listdir(partition_dir) if name.endswith(".log"))


def test_a_corrupt_batch_in_a_closed_segment_ends_the_log_there(start_broker):
    broker = start_broker("corrupt-segment")
    topic = unique("corrupt")
    values = [bytes([index]) * 900 for index in range(20)]
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        configs = {"segment.bytes": "4096"}
        assert create_topics(conn, [(topic, 1)], configs)[topic][0] == rawkafka.NONE
        for offset, value in enumerate(values):
            assert produce(conn, topic, 0, value).base_offset == offset
    assert broker.stop() == 0
    partition_dir = os.path.join(broker.data_dir, f"{topic}-0")
    bases = segment_bases(partition_dir)
    assert len(bases) >= 4, bases
    damaged_segment = os.path.join(partition_dir, f"{bases[1]:020d}.log")
    with open(damaged_segment, "r+b") as log_file:
        data = log_file.read()
        spans = batch_spans(data)
        assert len(spans) >= 2, spans
        position, length = spans[1]
        log_file.seek(position + length - 5)
        log_file.write(bytes([data[position + length - 5] ^ 0x5A]))
    # As after a crash before the index was flushed: the segment must be scanned.
    os.remove(os.path.join(partition_dir, f"{bases[1]:020d}.index"))
    cut_offset = bases[1] + 1

    broker.start()
    assert segment_bases(partition_dir) == bases[:2]
    # The later segments are out of the log but kept beside it, never deleted.
    aside = sorted(name for name in os.listdir(partition_dir)
                   if name.endswith(".log.after-corruption"))
    assert aside == [f"{base:020d}.log.after-corruption" for base in bases[2:]], aside
    removed = lines_with(broker, "an invalid batch in a closed segment ends the log there")
    assert len(removed) == 1 and f"log_end_offset={cut_offset}" in removed[0], removed
    assert len(lines_with(broker, "truncating a log segment at its first invalid batch")) == 1
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        assert rawkafka.latest_offset(conn, topic, 0) == cut_offset
        records = rawkafka.fetch_all_records(conn, topic, 0)
        assert [value for _, _, value, _ in records] == values[:cut_offset]
        assert produce(conn, topic, 0, b"next").base_offset == cut_offset
        records = rawkafka.fetch_all_records(conn, topic, 0, cut_offset)
        assert [(offset, value) for offset, _, value, _ in records] == [(cut_offset, b"next")]
    assert broker.stop() == 0


def test_a_stop_with_unopened_partitions_is_not_marked_clean(limited_broker):
    """A partition that never opened still holds whatever an earlier crash left: the
    clean-shutdown marker would let the next start skip its recovery."""
    broker = limited_broker
    many = unique("unopened")
    with rawkafka.Connection("127.0.0.1", broker.port) as conn:
        code, message = create_topics(conn, [(many, MANY_PARTITIONS)])[many]
        assert code == KAFKA_STORAGE_ERROR, (code, message)
    assert broker.stop() == 0, broker.stderr_tail()
    assert not os.path.exists(os.path.join(broker.data_dir, ".kafka_cleanshutdown"))
    assert len(lines_with(broker, "some partitions never opened in this run")) == 1
    broker.start()  # the fixture stops it again
