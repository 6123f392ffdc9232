"""Metadata-log safety (issue 6) against real broker processes.

1. Disk full on a 64 MiB tmpfs: produce until KAFKA_STORAGE_ERROR, CreateTopics until one
   fails, free the space, delete and create topics, produce with a new idempotent
   producer, kill -9, restart. Every topic acknowledged is there with its data, the
   deleted one stays deleted, the failed creation never appears, producer ids only grow,
   and a later idempotent producer's records are all stored.
2. One flipped byte in a middle record of the metadata quorum's log (`raft.redb`): start-up
   refuses (non-zero exit, the error names the store and the checksum mismatch) and no
   partition directory changes.
3. A stray partition directory is renamed aside (`-stray`), never deleted; a leftover
   `-delete` directory is removed; a deleted topic leaves no directory behind.
"""

import hashlib
import os
import re
import subprocess
import tempfile

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

import clients
import rawkafka

HOST = "127.0.0.1"
KAFKA_STORAGE_ERROR = 56
TMPFS_SIZE = "64m"
BALLAST_CHUNK_BYTES = 1 << 20
FILL_ATTEMPTS_MAX = 2000
CREATE_ATTEMPTS_MAX = 500
METADATA_STORE = os.path.join("__cluster_metadata-0", "raft.redb")
STRAY_NAME = re.compile(r"^(?P<dir>.+)\.[0-9a-f]{32}-stray$")


# ---------------------------------------------------------------- helpers


def connect(broker):
    return rawkafka.Connection(HOST, broker.port)


def values(broker, topic, partition=0):
    with connect(broker) as conn:
        return [(offset, value) for offset, _key, value, _headers
                in rawkafka.fetch_all_records(conn, topic, partition)]


def produce_values(conn, topic, payloads, producer_id=-1, sequence=-1):
    batch = rawkafka.build_batch([(None, value, []) for value in payloads],
                                 producer_id=producer_id,
                                 producer_epoch=0 if producer_id >= 0 else -1,
                                 base_sequence=sequence)
    return rawkafka.produce(conn, topic, 0, batch)


def init_producer_id(broker):
    with connect(broker) as conn:
        error_code, producer_id, epoch = rawkafka.init_producer_id(conn)
    assert error_code == rawkafka.NONE and epoch == 0, (error_code, producer_id, epoch)
    return producer_id


def create_topic_error(admin, name):
    """CreateTopics for one topic; None on success, else the Kafka error."""
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)],
                                  request_timeout=15, operation_timeout=15)
    try:
        futures[name].result(timeout=20)
        return None
    except KafkaException as error:
        return error.args[0]


def topic_names(broker):
    metadata = clients.admin(broker).list_topics(timeout=10)
    return {name for name in metadata.topics if not name.startswith("__")}


def tree_digest(root, skip=()):
    """{relative path: sha256 of content (None for directories)} of everything under root."""
    digest = {}
    for directory, subdirectories, files in os.walk(root):
        relative = os.path.relpath(directory, root)
        if relative.split(os.sep)[0] in skip:
            continue
        for name in subdirectories:
            digest[os.path.join(relative, name)] = None
        for name in files:
            with open(os.path.join(directory, name), "rb") as file:
                digest[os.path.join(relative, name)] = hashlib.sha256(file.read()).hexdigest()
    return digest


class Tmpfs:
    """A tmpfs mounted for one test; skips the test (with the reason) if mounting fails."""

    def __init__(self, size):
        self.path = tempfile.mkdtemp(prefix="gracchus-tmpfs-")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                 self.path], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            os.rmdir(self.path)
            pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip() or result.returncode}")

    def unmount(self):
        subprocess.run(["umount", self.path], timeout=30, check=False)
        os.rmdir(self.path)


def fill(path):
    """Writes a ballast file until the file system is full; returns its path."""
    ballast = os.path.join(path, "ballast")
    chunk = b"\0" * BALLAST_CHUNK_BYTES
    with open(ballast, "wb", buffering=0) as file:
        try:
            while True:
                file.write(chunk)
        except OSError:
            pass
    small = b"\0" * 4096
    with open(ballast, "ab", buffering=0) as file:
        try:
            while True:
                file.write(small)
        except OSError:
            pass
    return ballast


# ---------------------------------------------------------------- 1. disk full


def test_disk_full_then_crash_loses_nothing_acknowledged(start_broker, topic):
    tmpfs = Tmpfs(TMPFS_SIZE)
    broker = None
    try:
        broker = start_broker("metadata-full", {"log.dirs": os.path.join(tmpfs.path, "data")})
        check_disk_full_then_crash(broker, tmpfs.path, topic)
    finally:
        if broker is not None:
            broker.kill()
        tmpfs.unmount()


def check_disk_full_then_crash(broker, mount, topic):
    kept, doomed, later = f"{topic}-kept", f"{topic}-doomed", f"{topic}-later"
    for name in (kept, doomed):
        clients.create_topic(broker, name)
    with connect(broker) as conn:
        result = produce_values(conn, kept, [b"first-0", b"first-1"])
        assert (result.error_code, result.base_offset) == (0, 0), result
        assert produce_values(conn, doomed, [b"doomed"]).error_code == 0

    ballast = fill(mount)
    created, failed = fill_metadata_log(broker, topic, kept)
    os.remove(ballast)

    # Same process, no restart: these commands land right after the failed appends, where
    # a partial record would have hidden them from replay.
    first_id = init_producer_id(broker)  # reserves the first producer-id block
    with connect(broker) as conn:
        result = produce_values(conn, kept, [b"second-0"], first_id, 0)
        assert result.error_code == 0, result
        second_offset = result.base_offset
    admin = clients.admin(broker)
    admin.delete_topics([doomed], operation_timeout=15)[doomed].result(timeout=20)
    clients.create_topic(broker, later)
    with connect(broker) as conn:
        assert produce_values(conn, later, [b"later"]).error_code == 0

    broker.restart(hard=True)
    names = topic_names(broker)
    assert set(created) | {kept, later} <= names, (set(created) | {kept, later}) - names
    assert failed not in names and doomed not in names, names
    assert values(broker, later) == [(0, b"later")]
    second_id = init_producer_id(broker)
    assert second_id > first_id, (first_id, second_id)
    with connect(broker) as conn:
        result = produce_values(conn, kept, [b"third-0"], second_id, 0)
        assert result.error_code == 0 and result.base_offset > second_offset, result
    stored = [value for _offset, value in values(broker, kept)]
    assert stored[:2] == [b"first-0", b"first-1"]
    assert stored[-2:] == [b"second-0", b"third-0"], stored


def fill_metadata_log(broker, topic, kept):
    """Produces until KAFKA_STORAGE_ERROR, then creates topics until CreateTopics fails;
    returns (names created, the name whose creation failed)."""
    with connect(broker) as conn:
        for attempt in range(FILL_ATTEMPTS_MAX):
            result = produce_values(conn, kept, [b"x" * 8192])
            if result.error_code == KAFKA_STORAGE_ERROR:
                break
            assert result.error_code == 0, result
        else:
            pytest.fail(f"no KAFKA_STORAGE_ERROR after {FILL_ATTEMPTS_MAX} produces")
    admin = clients.admin(broker)
    created = []
    for attempt in range(CREATE_ATTEMPTS_MAX):
        name = f"{topic}-full-{attempt}"
        error = create_topic_error(admin, name)
        if error is not None:
            assert error.code() == KAFKA_STORAGE_ERROR, error
            if "append failed" in error.str():
                return created, name
            # The command was stored but the partition could not open on the full disk:
            # the topic exists (and opens once there is space again).
            assert "could not be opened" in error.str(), error
        created.append(name)
    pytest.fail(f"CreateTopics never failed in {CREATE_ATTEMPTS_MAX} attempts")


# ---------------------------------------------------------------- 2. flipped byte


def test_flipped_byte_in_a_middle_record_refuses_start_up(start_broker, topic):
    broker = start_broker("metadata-flip")
    names = [f"{topic}-{index}" for index in range(5)]
    for name in names:
        clients.create_topic(broker, name)
        with connect(broker) as conn:
            assert produce_values(conn, name, [name.encode()]).error_code == 0
    assert broker.stop() == 0

    path = os.path.join(broker.data_dir, METADATA_STORE)
    with open(path, "rb") as file:
        store = bytearray(file.read())
    # redb copies pages on write, so a name may sit in a live page and in freed ones: flip
    # the same byte of every copy of the middle topic's creation record.
    needle = names[2].encode()
    positions = [m.start() for m in re.finditer(re.escape(needle), store)]
    assert positions, "the topic's creation record is not in the store"
    for position in positions:
        store[position + len(topic) + 1] ^= 0x01
    with open(path, "r+b") as file:
        file.write(store)
    damaged = bytes(store[positions[0]:positions[0] + len(needle)])
    # redb itself writes its header when it opens the file: the partition data is what
    # must not change, and the damaged record must still be there, not "repaired" away.
    before = tree_digest(broker.data_dir, skip=("__cluster_metadata-0",))

    result = subprocess.run(broker.command(), cwd=broker.data_dir, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0, result.stderr[-2000:]
    assert path in result.stderr and "checksum mismatch" in result.stderr, result.stderr[-2000:]
    assert tree_digest(broker.data_dir, skip=("__cluster_metadata-0",)) == before
    with open(path, "rb") as file:
        assert damaged in file.read()


# ---------------------------------------------------------------- 3. stray directories


def test_stray_directories_are_renamed_aside_not_deleted(start_broker, topic):
    broker = start_broker("metadata-stray")
    clients.create_topic(broker, topic)
    gone = f"{topic}-gone"
    clients.create_topic(broker, gone)
    with connect(broker) as conn:
        assert produce_values(conn, topic, [b"kept"]).error_code == 0
    admin = clients.admin(broker)
    admin.delete_topics([gone], operation_timeout=15)[gone].result(timeout=20)
    assert broker.stop() == 0
    entries = os.listdir(broker.data_dir)
    assert not [name for name in entries if name.startswith(gone)], entries

    strays = {"ghost-0": b"ghost data", f"{topic}-7": b"partition the topic lacks"}
    for name, content in strays.items():
        os.mkdir(os.path.join(broker.data_dir, name))
        with open(os.path.join(broker.data_dir, name, "00000000000000000000.log"), "wb") as f:
            f.write(content)
    leftover = os.path.join(broker.data_dir, f"{topic}-3.{'a' * 32}-delete")
    os.mkdir(leftover)

    broker.start()
    assert values(broker, topic) == [(0, b"kept")]
    assert not os.path.exists(leftover)
    aside = stray_dirs(broker.data_dir)
    assert set(aside) == set(strays), aside
    for name, content in strays.items():
        with open(os.path.join(broker.data_dir, aside[name], "00000000000000000000.log"),
                  "rb") as file:
            assert file.read() == content
    broker.restart()
    assert stray_dirs(broker.data_dir) == aside, "a stray is set aside once"
    with open(broker.stderr_path) as stderr:
        warnings = [line for line in stderr if "renamed aside" in line]
    assert len(warnings) == len(strays), warnings
    assert broker.stop() == 0


def stray_dirs(data_dir):
    """{original directory name: stray name} of every `-stray` directory."""
    found = {}
    for name in os.listdir(data_dir):
        match = STRAY_NAME.match(name)
        if match:
            found[match.group("dir")] = name
    return found
