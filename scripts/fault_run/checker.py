"""The fault run's independent checker.

It knows nothing of the broker's code or of the cluster harness: its inputs are the
clients' JSON-lines logs (workload.py's format), every partition read from its log
start with a fresh confluent-kafka consumer once the run is over and the cluster is
healthy, and the group's committed offsets (OffsetFetch through the same client).

What it verifies (check()):
- lost:        an acknowledged record that is nowhere in the final log.
- duplicated:  a value stored more than once (each extra copy counts; acknowledged or
               not: an idempotent producer's retry must never be stored twice).
- reordered:   within a partition, a producer's record stored after one it sent later
               (values carry the producer and its send sequence).
- divergent:   a consumer was handed a record that the final log does not hold at that
               offset (truncated or replaced after it was read), or an acknowledged
               record stored at another offset than its acknowledgement said. An
               acknowledgement without an offset (librdkafka's implicit ack of an
               idempotent batch whose own response was lost) is compared by partition
               only, and counted as acknowledged_without_offset.
- offsets:     offsets in a partition strictly increasing and contiguous. The idempotent
               producers' topics hold no transactions, so no control records exist there
               and every gap is an anomaly.
- commits:     a partition's successfully committed offset, in time order across all
               consumers and ending with what the group holds after the run, never went
               backwards.
Transactions (check_transactions(), the transactional producers' own topics): every
record carries its transaction and the transaction's size ("<producer>.<incarnation>:
<txn>:<index>:<size>"); the producers log each transaction's begin and its outcome
(committed, aborted, or unknown after a fatal error). The topics are read to their end
at read_committed and at read_uncommitted.
- txn_partial:          a transaction of which read_committed sees some records but not
                        all (whatever its logged outcome), or a record whose size disagrees.
- txn_lost:             a transaction whose commit_transaction() returned, not (wholly)
                        visible to read_committed.
- txn_aborted_visible:  a transaction whose abort_transaction() returned, with a record
                        visible to read_committed.
- txn_seen_aborted:     a read_committed consumer was handed a record that read_committed
                        does not show at that offset after the run (aborted, or truncated).
- txn_seen_partial:     the read_committed consumers, together, read past (a higher offset
                        of the same partition) a record of a transaction of which they saw
                        another record, without seeing it: a partial transaction.
- txn_duplicated:       a transactional record stored more than once (read_uncommitted).
- commits_backwards and offset_anomalies also cover these topics and their group; gaps do
  not (markers and aborted records take offsets).
Exit status (main): 1 if any of lost, duplicated, reordered, divergent, offset anomalies,
gaps, commits backwards, an incomplete read or a txn_* figure above is non-zero.
"""

import argparse
import json
import os
import sys
import time
import uuid
from collections import Counter, defaultdict

try:
    from . import stats
except ImportError:  # run as a file
    import stats

EXAMPLES_MAX = 5

# The figures that must be zero for a run to pass.
FAILING = ("lost", "duplicated", "reordered", "divergent", "offset_anomalies", "gaps",
           "commits_backwards", "incomplete_partitions")
TXN_FAILING = ("txn_partial", "txn_lost", "txn_aborted_visible", "txn_seen_aborted",
               "txn_seen_partial", "txn_duplicated")
FAILING += TXN_FAILING

COMMITTED, ABORTED, UNKNOWN = "committed", "aborted", "unknown"


# ---------------------------------------------------------------- inputs


def read_jsonl(path):
    """The objects of a JSON-lines file; a torn last line (a client killed mid-write)
    is skipped, a torn line elsewhere is an error."""
    with open(path, encoding="utf-8") as source:
        lines = source.read().split("\n")
    out = []
    for index, line in enumerate(lines):
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            if index < len(lines) - 2 or (index == len(lines) - 2 and lines[-1]):
                raise ValueError(f"{path}: line {index + 1} is not JSON: {line[:80]!r}")
    return out


class RunLogs:
    """Everything the clients reported, merged across processes."""

    def __init__(self):
        self.acks = []        # (topic, partition, offset, value)
        self.ack_times = {}   # value -> monotonic time of its acknowledgement
        self.failed = []      # (topic, partition, value, error name)
        self.seen = []        # (topic, partition, offset, value)
        self.commits = []     # (monotonic, topic, partition, offset)
        self.errors = Counter()  # "<client kind>:<error name>" -> count
        self.faults = []      # the run's fault records (faults.jsonl)
        self.txns = {}        # transaction key -> {"n": size, "outcome": ... or None}
        self.txn_seen = []    # (topic, partition, offset, value), read_committed group
        self.txn_commits = []  # (monotonic, topic, partition, offset) of that group


def load_run(run_dir):
    logs = RunLogs()
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        if name.startswith("producer-") and name.endswith(".jsonl"):
            for e in read_jsonl(path):
                if e["k"] == "ack":
                    logs.acks.append((e["t"], e["p"], e["o"], e["v"]))
                    logs.ack_times[e["v"]] = e["m"]
                elif e["k"] == "fail":
                    logs.failed.append((e["t"], e["p"], e["v"], e["e"]))
                    logs.errors[f"producer delivery:{e['e']}"] += 1
                elif e["k"] == "error":
                    logs.errors[f"producer:{e['e']}"] += 1
        elif name.startswith("txnproducer-") and name.endswith(".jsonl"):
            for e in read_jsonl(path):
                if e["k"] == "txn_begin":
                    logs.txns[e["x"]] = {"n": e["n"], "outcome": None}
                elif e["k"] == "txn_end" and e["x"] in logs.txns:
                    logs.txns[e["x"]]["outcome"] = e["outcome"]
                    if e["outcome"] == UNKNOWN:
                        logs.errors[f"txnproducer:{e.get('why')}"] += 1
                elif e["k"] == "fail":
                    logs.errors[f"txnproducer delivery:{e['e']}"] += 1
                elif e["k"] == "error":
                    logs.errors[f"txnproducer:{e['e']}"] += 1
        elif name.startswith(("consumer-", "txnconsumer-")) and name.endswith(".jsonl"):
            txn = name.startswith("txn")
            seen = logs.txn_seen if txn else logs.seen
            commits = logs.txn_commits if txn else logs.commits
            for e in read_jsonl(path):
                if e["k"] == "seen":
                    seen.append((e["t"], e["p"], e["o"], e["v"]))
                elif e["k"] == "commit":
                    commits.append((e["m"], e["t"], e["p"], e["o"]))
                elif e["k"] == "commit_fail":
                    logs.errors[f"consumer commit:{e['e']}"] += 1
                elif e["k"] == "error":
                    logs.errors[f"consumer:{e['e']}"] += 1
                elif e["k"] == "lost":
                    logs.errors["consumer:partitions lost"] += 1
        elif name == "faults.jsonl":
            logs.faults = read_jsonl(path)
    return logs


def read_final_log(bootstrap, topics, timeout_s=180.0, isolation="read_committed"):
    """Every record of every partition of topics, from its log start up to its high
    watermark (the last stable offset at read_committed, librdkafka's default), read
    with a fresh confluent-kafka consumer (assign(), no group).

    Returns (log, incomplete): log = {(topic, partition): [(offset, value), ...]} in
    the order read; incomplete = {(topic, partition): reason} for partitions whose end
    could not be reached before the deadline."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": f"fault-run-checker-{uuid.uuid4().hex[:8]}",  # unused with assign()
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 100,
        "isolation.level": isolation,
    })
    deadline = time.monotonic() + timeout_s
    try:
        metadata = consumer.list_topics(timeout=30)
        partitions = [(topic, index) for topic in topics
                      for index in sorted(metadata.topics[topic].partitions)]
        high = {}
        for topic, index in partitions:
            _low, high[(topic, index)] = consumer.get_watermark_offsets(
                TopicPartition(topic, index), timeout=30, cached=False)
        log = {tp: [] for tp in partitions}
        done = {tp for tp in partitions if high[tp] == 0}
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in partitions])
        while len(done) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                tp = (message.topic(), message.partition())
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if message.offset() >= high[tp]:
                            done.add(tp)
                        continue
                    raise RuntimeError(f"reading {tp}: {error}")
                value = message.value()
                log[tp].append((message.offset(), None if value is None else value.decode()))
                if message.offset() >= high[tp] - 1:
                    done.add(tp)
        incomplete = {tp: f"read up to {log[tp][-1][0] if log[tp] else None}, high "
                          f"watermark {high[tp]}" for tp in partitions if tp not in done}
        return log, incomplete
    finally:
        consumer.close()


def wait_stable(bootstrap, topics, timeout_s=150.0):
    """Waits until every partition of topics has its last stable offset at its high
    watermark (ListOffsets latest at both isolation levels): no transaction open, so a
    read_committed read shows everything decided. A transaction left open (a producer
    killed mid-way) ends by the coordinator's timeout (transaction.timeout.ms).
    Returns {(topic, partition): reason} for those still unstable at the deadline."""
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    metadata = admin.list_topics(timeout=30)
    tps = [TopicPartition(topic, index) for topic in topics
           for index in sorted(metadata.topics[topic].partitions)]
    deadline = time.monotonic() + timeout_s
    unstable = {}
    while True:
        ends = {}
        for level in (IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED):
            futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps},
                                         isolation_level=level, request_timeout=30)
            for tp, future in futures.items():
                ends.setdefault((tp.topic, tp.partition), []).append(
                    future.result(timeout=60).offset)
        unstable = {tp: f"LSO {lso} below HW {hw}" for tp, (hw, lso) in ends.items()
                    if lso != hw}
        if not unstable or time.monotonic() >= deadline:
            return unstable
        time.sleep(1.0)


def read_committed(bootstrap, group, partitions, timeout_s=30.0):
    """{(topic, partition): committed offset (None if none)} of the group."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                         "group.id": group, "enable.auto.commit": False})
    try:
        result = consumer.committed([TopicPartition(t, p) for t, p in partitions],
                                    timeout=timeout_s)
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
                for tp in result}
    finally:
        consumer.close()


# ---------------------------------------------------------------- the checks


def parse_value(value):
    """("<producer>.<incarnation>", sequence) from a run value; None for anything else."""
    if value is None:
        return None
    producer, _, sequence = value.rpartition("-")
    if not producer or not sequence.isdigit():
        return None
    return producer, int(sequence)


def check(acks, seen, commits, final_log, final_committed=None, incomplete=None):
    """The checker's verdict over plain data (see the module docstring).

    acks:    [(topic, partition, offset, value)] acknowledged records
    seen:    [(topic, partition, offset, value)] records handed to consumers
    commits: [(time, topic, partition, offset)] successful commits, any order
    final_log: {(topic, partition): [(offset, value)]} as read after the run
    final_committed: {(topic, partition): offset or None} the group holds at the end
    Returns {"figures": {name: count}, "examples": {name: [text]}, "lost": [value]}.
    """
    figures = Counter()
    examples = defaultdict(list)

    def note(name, text, count=1):
        figures[name] += count
        if len(examples[name]) < EXAMPLES_MAX:
            examples[name].append(text)

    located = defaultdict(list)  # value -> [(topic, partition, offset)]
    at = {}                      # (topic, partition, offset) -> value
    for (topic, partition), records in final_log.items():
        _check_offsets(topic, partition, records, note)
        _check_order(topic, partition, records, note)
        for offset, value in records:
            located[value].append((topic, partition, offset))
            at[(topic, partition, offset)] = value
        figures["records_in_log"] += len(records)

    for value, places in located.items():
        if len(places) > 1:
            note("duplicated", f"{value} stored {len(places)} times: {places}",
                 len(places) - 1)

    acknowledged, lost = {}, []
    for topic, partition, offset, value in acks:
        acknowledged[value] = (topic, partition, offset)
    figures["acknowledged"] = len(acknowledged)
    for value, place in acknowledged.items():
        places = located.get(value)
        if not places:
            lost.append(value)
            note("lost", f"{value} acknowledged at {place}, not in the log")
        elif place[2] is None:
            # librdkafka acknowledges an idempotent batch without an offset (-1001) when
            # its own response was lost but a later batch of the same producer succeeded:
            # the sequence numbers prove it stored (rd_kafka_dr_implicit_ack). Only its
            # partition can be compared; duplicates are counted over the whole log.
            figures["acknowledged_without_offset"] += 1
            if not any(stored[:2] == place[:2] for stored in places):
                note("misplaced", f"{value} acknowledged in {place[:2]}, stored at {places}")
        elif place not in places:
            note("misplaced", f"{value} acknowledged at {place}, stored at {places}")

    for topic, partition, offset, value in set(seen):
        stored = at.get((topic, partition, offset))
        if stored != value:
            note("truncated_seen", f"a consumer saw {value} at {topic}-{partition}@{offset}; "
                                   f"the log holds {stored!r} there")
    figures["seen"] = len(seen)
    figures["divergent"] = figures["truncated_seen"] + figures["misplaced"]
    examples["divergent"] = (examples["truncated_seen"] + examples["misplaced"])[:EXAMPLES_MAX]

    _check_commits(commits, final_committed or {}, note)
    figures["commits"] = len(commits)
    for tp, reason in sorted((incomplete or {}).items()):
        note("incomplete_partitions", f"{tp[0]}-{tp[1]}: {reason}")
    for name in FAILING:
        figures.setdefault(name, 0)
    return {"figures": dict(figures), "examples": dict(examples), "lost": lost}


def _check_offsets(topic, partition, records, note, gaps=True):
    """Offsets strictly increasing; with gaps, also contiguous (no control records)."""
    previous = None
    for offset, _value in records:
        if previous is not None:
            if offset <= previous:
                note("offset_anomalies", f"{topic}-{partition}: offset {offset} after "
                                         f"{previous}")
            elif gaps and offset != previous + 1:
                note("gaps", f"{topic}-{partition}: offsets {previous + 1}..{offset - 1} "
                             f"missing", offset - previous - 1)
        previous = offset if previous is None else max(previous, offset)


def _check_order(topic, partition, records, note):
    """Each producer's sequences must increase along the partition's offsets."""
    last = {}
    for offset, value in records:
        parsed = parse_value(value)
        if parsed is None:
            note("foreign_records", f"{topic}-{partition}@{offset}: {value!r}")
            continue
        producer, sequence = parsed
        if producer in last and sequence < last[producer][0]:
            note("reordered", f"{topic}-{partition}@{offset}: {value} after "
                              f"sequence {last[producer][0]} (at {last[producer][1]})")
            continue
        last[producer] = (sequence, offset)


def _check_commits(commits, final_committed, note):
    highest = {}
    for moment, topic, partition, offset in sorted(commits):
        tp = (topic, partition)
        if tp in highest and offset < highest[tp]:
            note("commits_backwards", f"{topic}-{partition}: committed {offset} after "
                                      f"{highest[tp]}")
        highest[tp] = max(offset, highest.get(tp, offset))
    for tp, top in sorted(highest.items()):
        held = final_committed.get(tp, top)
        if (-1 if held is None else held) < top:
            note("commits_backwards", f"{tp[0]}-{tp[1]}: the group holds "
                                      f"{final_committed[tp]} after a commit of {top}")


# ---------------------------------------------------------------- transactions


def parse_txn_value(value):
    """(transaction key "<producer>.<incarnation>:<txn>", index, size) from a
    transactional producer's value; None for anything else."""
    if value is None:
        return None
    parts = value.rsplit(":", 3)
    if len(parts) != 4 or not all(part.isdigit() for part in parts[1:]):
        return None
    producer, txn, index, size = parts
    return f"{producer}:{txn}", int(index), int(size)


def check_transactions(txns, committed_log, uncommitted_log, seen, commits=(),
                       final_committed=None):
    """The transactional topics' verdict (see the module docstring), over plain data.

    txns:            {key: {"n": size, "outcome": "committed"|"aborted"|"unknown"|None}}
                     from the producers' logs (None: the producer stopped mid-way)
    committed_log:   {(topic, partition): [(offset, value)]} read at read_committed
    uncommitted_log: the same read at read_uncommitted
    seen:            [(topic, partition, offset, value)] handed to read_committed consumers
    commits, final_committed: that group's commits and final offsets (as check())
    Returns {"figures": {...}, "examples": {...}}.
    """
    figures = Counter()
    examples = defaultdict(list)

    def note(name, text, count=1):
        figures[name] += count
        if len(examples[name]) < EXAMPLES_MAX:
            examples[name].append(text)

    # What read_committed shows of each transaction: {key: {index: [(tp, offset)]}}.
    visible = defaultdict(lambda: defaultdict(list))
    sizes = {}  # key -> the size its records carry
    at = {}
    for (topic, partition), records in sorted(committed_log.items()):
        _check_offsets(topic, partition, records, note, gaps=False)
        figures["txn_records_visible"] += len(records)
        for offset, value in records:
            at[(topic, partition, offset)] = value
            parsed = parse_txn_value(value)
            if parsed is None:
                note("foreign_records", f"{topic}-{partition}@{offset}: {value!r}")
                continue
            key, index, size = parsed
            visible[key][index].append(((topic, partition), offset))
            sizes.setdefault(key, size)
            logged = txns.get(key)
            if logged is not None and logged["n"] != size:
                note("txn_partial", f"{value} at {topic}-{partition}@{offset}: size {size}, "
                                    f"the producer began it with {logged['n']}")

    stored = Counter()
    for (topic, partition), records in uncommitted_log.items():
        _check_offsets(topic, partition, records, note, gaps=False)
        for _offset, value in records:
            stored[value] += 1
        offsets = [offset for offset, _value in records]
        figures["txn_records_stored"] += len(records)
        if offsets:
            figures["txn_offsets_not_data"] += offsets[-1] + 1 - offsets[0] - len(offsets)
    for value, count in stored.items():
        if count > 1:
            note("txn_duplicated", f"{value} stored {count} times", count - 1)

    for key, indexes in sorted(visible.items()):
        size = txns.get(key, {}).get("n") or sizes[key]
        missing = sorted(set(range(size)) - set(indexes))
        if missing:
            note("txn_partial", f"{key}: read_committed shows records {sorted(indexes)} of "
                                f"{size}; missing {missing[:10]}")
    for key, logged in sorted(txns.items()):
        outcome = logged["outcome"]
        figures[f"txn_{outcome or 'unfinished'}"] += 1
        shown = visible.get(key)
        if outcome == COMMITTED and not shown:
            note("txn_lost", f"{key}: committed ({logged['n']} records), read_committed "
                             "shows none")
        elif outcome == ABORTED and shown:
            places = [place for places in shown.values() for place in places]
            note("txn_aborted_visible", f"{key}: aborted, read_committed shows "
                                        f"{len(places)} records, e.g. {places[:3]}")
        elif outcome in (UNKNOWN, None):
            figures["txn_undecided_" + ("committed" if shown else "aborted")] += 1

    # The consumers: nothing that read_committed does not show, nothing skipped of a
    # transaction they saw a part of.
    reached = {}
    seen_parts = defaultdict(set)
    for topic, partition, offset, value in set(seen):
        tp = (topic, partition)
        reached[tp] = max(offset, reached.get(tp, offset))
        if at.get((topic, partition, offset)) != value:
            note("txn_seen_aborted", f"a read_committed consumer saw {value} at "
                                     f"{topic}-{partition}@{offset}; read_committed shows "
                                     f"{at.get((topic, partition, offset))!r} there")
            continue
        parsed = parse_txn_value(value)
        if parsed is not None:
            seen_parts[parsed[0]].add(parsed[1])
    figures["txn_seen"] = len(seen)
    for key, indexes in sorted(seen_parts.items()):
        skipped = [(index, place) for index, places in visible.get(key, {}).items()
                   if index not in indexes for place in places
                   if place[1] < reached.get(place[0], -1)]
        if skipped:
            note("txn_seen_partial", f"{key}: consumers saw records {sorted(indexes)} but "
                                     f"read past {skipped[:3]}")

    _check_commits(list(commits), final_committed or {}, note)
    for name in TXN_FAILING:
        figures.setdefault(name, 0)
    return {"figures": dict(figures), "examples": dict(examples)}


# ---------------------------------------------------------------- figures


def recovery_figures(faults):
    """{kind: {"count", "stalls", "p50_s", "p99_s", "max_s"}} from the run's fault
    records (recover_s None = never recovered within the run's limit)."""
    by_kind = defaultdict(list)
    for fault in faults:
        by_kind[fault["kind"]].append(fault.get("recover_s"))
    out = {}
    for kind, values in sorted(by_kind.items()):
        times = [v for v in values if v is not None]
        out[kind] = {"count": len(values), "stalls": len(values) - len(times),
                     "p50_s": stats.percentile(times, 0.50),
                     "p99_s": stats.percentile(times, 0.99),
                     "max_s": max(times) if times else None}
    return out


def losses_by_fault(lost, ack_times, faults):
    """{fault kind: lost records acknowledged before that fault began and after the one
    before it}: which kind of fault a loss followed. Records acknowledged after the
    last fault count under "after the last fault"."""
    began = sorted((f["began_m"], f["kind"]) for f in faults if "began_m" in f)
    out = Counter()
    for value in lost:
        moment = ack_times.get(value)
        kind = next((k for start, k in began if moment is not None and start > moment),
                    "after the last fault")
        out[kind] += 1
    return dict(out)


def passed(verdict):
    return all(verdict["figures"].get(name, 0) == 0 for name in FAILING)


def format_report(verdict, recovery=None, errors=None):
    f = verdict["figures"]
    lines = []
    attributed = verdict.get("lost_by_fault") or {}
    if recovery is not None:
        total = sum(r["count"] for r in recovery.values())
        lines.append(f"faults injected: {total}")
        for kind, r in recovery.items():
            p50 = "-" if r["p50_s"] is None else f"{r['p50_s']:.2f} s"
            p99 = "-" if r["p99_s"] is None else f"{r['p99_s']:.2f} s"
            lines.append(f"  {kind:22s} {r['count']:5d}   recovery p50 {p50:>8s}  "
                         f"p99 {p99:>8s}  not recovered {r['stalls']}")
    lines += [
        f"records acknowledged: {f.get('acknowledged', 0)}",
        f"records in the final log: {f.get('records_in_log', 0)}",
        f"lost: {f['lost']}" + (f" (acknowledged before: {attributed})" if attributed else ""),
        f"duplicated: {f['duplicated']}",
        f"reordered: {f['reordered']}",
        f"divergent: {f['divergent']} (seen then truncated {f.get('truncated_seen', 0)}, "
        f"acknowledged at another offset {f.get('misplaced', 0)})",
        f"offset anomalies: {f['offset_anomalies']} not increasing, {f['gaps']} missing",
        f"committed offsets gone backwards: {f['commits_backwards']} "
        f"(of {f.get('commits', 0)} commits)",
        f"partitions not read to their end: {f['incomplete_partitions']}",
        f"records consumers saw: {f.get('seen', 0)}",
    ]
    if "txn_seen" in f:
        lines += [
            f"transactions: {f.get('txn_committed', 0)} committed, "
            f"{f.get('txn_aborted', 0)} aborted, {f.get('txn_unknown', 0)} unknown after a "
            f"fatal error, {f.get('txn_unfinished', 0)} unfinished (of these, visible: "
            f"{f.get('txn_undecided_committed', 0)}, not: "
            f"{f.get('txn_undecided_aborted', 0)})",
            f"transactional records: {f.get('txn_records_stored', 0)} stored, "
            f"{f.get('txn_records_visible', 0)} visible to read_committed, "
            f"{f.get('txn_offsets_not_data', 0)} offsets of markers (or truncated)",
            f"partial transactions: {f['txn_partial']}; committed ones lost: "
            f"{f['txn_lost']}; aborted ones visible: {f['txn_aborted_visible']}; "
            f"duplicated records: {f['txn_duplicated']}",
            f"read_committed consumers: saw {f.get('txn_seen', 0)}; an aborted or "
            f"vanished record: {f['txn_seen_aborted']}; part of a transaction: "
            f"{f['txn_seen_partial']}",
        ]
    if f.get("foreign_records"):
        lines.append(f"records not written by the run: {f['foreign_records']}")
    for name, texts in sorted(verdict["examples"].items()):
        if name in FAILING and texts:
            lines.append(f"{name}, e.g.:")
            lines += [f"    {text}" for text in texts]
    if errors:
        lines.append("errors the clients saw:")
        lines += [f"    {name}: {count}" for name, count in errors.most_common(20)]
    lines.append("PASS" if passed(verdict) else "FAIL")
    return "\n".join(lines)


def run_check(run_dir, bootstrap, topics, group, txn_topics=(), txn_group=None):
    """Loads the run's logs, reads the cluster, checks; returns (verdict, report text).
    txn_topics: the transactional producers' topics, read by txn_group."""
    logs = load_run(run_dir)
    final_log, incomplete = read_final_log(bootstrap, topics)
    committed = read_committed(bootstrap, group, sorted(final_log))
    verdict = check(logs.acks, logs.seen, logs.commits, final_log, committed, incomplete)
    if txn_topics:
        unstable = wait_stable(bootstrap, txn_topics)
        for tp, reason in sorted(unstable.items()):
            verdict["figures"]["incomplete_partitions"] += 1
            verdict["examples"].setdefault("incomplete_partitions", []).append(
                f"{tp[0]}-{tp[1]}: a transaction stayed open: {reason}")
        committed_log, incomplete_c = read_final_log(bootstrap, txn_topics)
        uncommitted_log, incomplete_u = read_final_log(bootstrap, txn_topics,
                                                       isolation="read_uncommitted")
        txn_committed = read_committed(bootstrap, txn_group, sorted(committed_log)) \
            if txn_group else {}
        txn = check_transactions(logs.txns, committed_log, uncommitted_log, logs.txn_seen,
                                 logs.txn_commits, txn_committed)
        for name, count in txn["figures"].items():
            verdict["figures"][name] = verdict["figures"].get(name, 0) + count
        for name, texts in txn["examples"].items():
            verdict["examples"][name] = (verdict["examples"].get(name, []) + texts)[
                :EXAMPLES_MAX]
        for label, missing in (("read_committed", incomplete_c),
                               ("read_uncommitted", incomplete_u)):
            for tp, reason in sorted(missing.items()):
                verdict["figures"]["incomplete_partitions"] += 1
                verdict["examples"].setdefault("incomplete_partitions", []).append(
                    f"{tp[0]}-{tp[1]} ({label}): {reason}")
    verdict["figures"]["delivery_failures"] = len(logs.failed)
    verdict["lost_by_fault"] = losses_by_fault(verdict.pop("lost"), logs.ack_times,
                                               logs.faults)
    recovery = recovery_figures(logs.faults)
    verdict["recovery"] = recovery
    verdict["client_errors"] = dict(logs.errors)
    return verdict, format_report(verdict, recovery, logs.errors)


def main(argv=None):
    parser = argparse.ArgumentParser(description="check a fault run's logs against the "
                                                 "cluster's final state")
    parser.add_argument("run_dir")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, type=lambda s: s.split(","))
    parser.add_argument("--group", default="fault-run")
    parser.add_argument("--txn-topics", default=[], type=lambda s: [t for t in s.split(",")
                                                                    if t])
    parser.add_argument("--txn-group", default="fault-run-txn")
    args = parser.parse_args(argv)
    verdict, report = run_check(args.run_dir, args.bootstrap, args.topics, args.group,
                                args.txn_topics, args.txn_group)
    print(report)
    with open(os.path.join(args.run_dir, "check.json"), "w") as out:
        json.dump(verdict, out, indent=2, default=str)
    return 0 if passed(verdict) else 1


if __name__ == "__main__":
    sys.exit(main())
