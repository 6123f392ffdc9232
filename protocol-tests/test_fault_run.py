"""The fault run (issue 8): the checker's own tests on synthetic logs (no broker), and
the short fault run CI takes (`test_fault_run_short`, select it with `-k fault_run_short`;
FAULT_RUN_FAULTS / FAULT_RUN_MAX_MINUTES / FAULT_RUN_SEED change its size and seed).

The short run starts scripts/fault-run in a process of its own (three nodes in network
namespaces, two topics RF 3 with min.insync.replicas=2, two idempotent acks=all
producers, a two-member group; issue 10: a transactional producer on a third topic, read
by a two-member read_committed group) and asserts what its checker found: nothing lost,
duplicated, reordered or divergent, offsets contiguous, commits never backwards, no
partial, lost or aborted-but-visible transaction, and at least one committed.

The transactional producer's logic (workload.one_transaction) is tested with a stand-in
producer that scripts commit/abort errors.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import cluster  # noqa: E402  (the harness, next to this file)
from clients import die_with_parent  # noqa: E402
from fault_run import checker, stats  # noqa: E402

SHORT_FAULTS = int(os.environ.get("FAULT_RUN_FAULTS", "25"))
SHORT_MAX_MINUTES = float(os.environ.get("FAULT_RUN_MAX_MINUTES", "4"))
SHORT_SEED = int(os.environ.get("FAULT_RUN_SEED", "8"))

T = "topic"


def value(producer, sequence):
    return f"{producer}-{sequence:010d}"


def clean_history():
    """Two producers into two partitions, everything acknowledged, seen and committed."""
    log = {(T, 0): [], (T, 1): []}
    acks, seen, commits = [], [], []
    for sequence in range(6):
        for producer in ("p1.0", "p2.0"):
            partition = sequence % 2
            offset = len(log[(T, partition)])
            v = value(producer, sequence)
            log[(T, partition)].append((offset, v))
            acks.append((T, partition, offset, v))
            seen.append((T, partition, offset, v))
            commits.append((len(commits) * 0.1, T, partition, offset + 1))
    committed = {(T, 0): len(log[(T, 0)]), (T, 1): len(log[(T, 1)])}
    return acks, seen, commits, log, committed


def figures(acks, seen, commits, log, committed=None, incomplete=None):
    return checker.check(acks, seen, commits, log, committed, incomplete)["figures"]


def failing(result):
    return {name: count for name, count in result.items()
            if name in checker.FAILING and count}


# ---------------------------------------------------------------- the checker


def test_a_clean_history_passes():
    acks, seen, commits, log, committed = clean_history()
    verdict = checker.check(acks, seen, commits, log, committed)
    assert failing(verdict["figures"]) == {}
    assert verdict["figures"]["acknowledged"] == 12
    assert verdict["figures"]["records_in_log"] == 12
    assert checker.passed(verdict)
    assert checker.format_report(verdict).endswith("PASS")


def test_a_lost_record_is_found():
    acks, seen, commits, log, committed = clean_history()
    # The last record of partition 1 is gone (the consumer never saw it either).
    gone = log[(T, 1)].pop()
    seen.remove((T, 1, gone[0], gone[1]))
    result = figures(acks, seen, commits, log)
    assert failing(result) == {"lost": 1}
    verdict = checker.check(acks, seen, commits, log)
    assert gone[1] in verdict["examples"]["lost"][0]
    assert not checker.passed(verdict)


def test_a_duplicated_record_is_found():
    acks, seen, commits, log, _ = clean_history()
    # A retry stored again at the end of partition 0: one extra copy.
    offset, copied = log[(T, 0)][-1]
    log[(T, 0)].append((offset + 1, copied))
    assert failing(figures(acks, seen, commits, log)) == {"duplicated": 1}
    # A third copy in the other partition, after that producer's sequence 5 there: two
    # extra copies, and one out of order.
    log[(T, 1)].append((log[(T, 1)][-1][0] + 1, copied))
    assert failing(figures(acks, seen, commits, log)) == {"duplicated": 2, "reordered": 1}


def test_an_unacknowledged_record_stored_twice_is_a_duplicate():
    acks, seen, commits, log, _ = clean_history()
    stray = value("p1.0", 99)
    log[(T, 0)] += [(6, stray), (7, stray)]
    # Its order is fine (99 after 4), the second copy is the duplicate.
    assert failing(figures(acks, seen, commits, log)) == {"duplicated": 1}


def test_a_reordered_record_is_found():
    acks, seen, commits, log, _ = clean_history()
    # p1.0's sequences 0 and 2 swap places in partition 0 (offsets 0 and 2); the
    # acknowledgements follow the log so only the order is wrong.
    records = log[(T, 0)]
    (o0, v0), (o2, v2) = records[0], records[2]
    records[0], records[2] = (o0, v2), (o2, v0)
    acks = [(t, p, {v0: o2, v2: o0}.get(v, o), v) for t, p, o, v in acks]
    seen = [(t, p, {v0: o2, v2: o0}.get(v, o), v) for t, p, o, v in seen]
    assert failing(figures(acks, seen, commits, log)) == {"reordered": 1}


def test_another_producers_records_in_between_are_not_reordering():
    log = {(T, 0): [(0, value("p1.0", 0)), (1, value("p2.0", 5)), (2, value("p1.0", 1)),
                    (3, value("p2.0", 6)), (4, value("p1.1", 0))]}
    assert failing(figures([], [], [], log)) == {}


def test_a_record_seen_then_truncated_is_divergent():
    acks, seen, commits, log, _ = clean_history()
    # A consumer read p1.0-4 at partition 0's offset 4, which a new leader replaced.
    offset, was = log[(T, 0)][-2]
    replaced = value("p3.0", 0)
    log[(T, 0)][-2] = (offset, replaced)
    acks = [a for a in acks if a[3] != was]  # not acknowledged: only the read diverged
    result = checker.check(acks, seen, commits, log)
    assert failing(result["figures"]) == {"divergent": 1}
    assert result["figures"]["truncated_seen"] == 1
    assert f"saw {was}" in result["examples"]["divergent"][0]


def test_a_record_acknowledged_at_another_offset_is_divergent():
    acks, seen, commits, log, _ = clean_history()
    t, p, o, v = acks[0]
    acks[0] = (t, p, o + 100, v)
    result = checker.check(acks, [], commits, log)
    assert failing(result["figures"]) == {"divergent": 1}
    assert result["figures"]["misplaced"] == 1


def test_an_acknowledgement_without_offset_counts_only_its_partition():
    # librdkafka's implicit ack (offset -1001, None in confluent-kafka): stored once in
    # the acknowledged partition is clean; in another partition it is misplaced; missing
    # it is lost, stored twice it is duplicated.
    acks, seen, commits, log, _ = clean_history()
    t, p, _o, v = acks[0]
    acks[0] = (t, p, None, v)
    result = checker.check(acks, seen, commits, log)
    assert failing(result["figures"]) == {}
    assert result["figures"]["acknowledged_without_offset"] == 1

    acks[0] = (t, 1 - p, None, v)
    result = checker.check(acks, seen, commits, log)
    assert failing(result["figures"]) == {"divergent": 1}
    assert result["figures"]["misplaced"] == 1

    acks[0] = (t, p, None, v)
    doubled = {tp: list(records) for tp, records in log.items()}
    doubled[(T, p)].append((len(doubled[(T, p)]), v))
    result = checker.check(acks, [], commits, doubled)
    assert result["figures"]["duplicated"] == 1
    assert result["figures"]["reordered"] == 1

    gone = {tp: [r for r in records if r[1] != v] for tp, records in log.items()}
    result = checker.check(acks, [], commits, gone)
    assert result["figures"]["lost"] == 1


def test_gaps_and_repeated_offsets_are_found():
    log = {(T, 0): [(0, value("p1.0", 0)), (1, value("p1.0", 1)), (4, value("p1.0", 2)),
                    (4, value("p1.0", 3))]}
    result = figures([], [], [], log)
    assert failing(result) == {"gaps": 2, "offset_anomalies": 1}


def test_commits_going_backwards_are_found():
    acks, seen, commits, log, committed = clean_history()
    assert failing(figures(acks, seen, commits, log, committed)) == {}
    # A later commit (time order, whatever the list order) below an earlier one.
    late = (100.0, T, 0, 1)
    assert failing(figures(acks, seen, [late] + commits, log, committed)) == \
        {"commits_backwards": 1}
    # The group holds less after the run than was committed.
    assert failing(figures(acks, seen, commits, log, {(T, 0): 2, (T, 1): 6})) == \
        {"commits_backwards": 1}
    assert failing(figures(acks, seen, commits, log, {(T, 0): None, (T, 1): 6})) == \
        {"commits_backwards": 1}


def test_an_incomplete_read_fails():
    acks, seen, commits, log, committed = clean_history()
    result = figures(acks, seen, commits, log, committed,
                     incomplete={(T, 1): "read up to 3, high watermark 6"})
    assert failing(result) == {"incomplete_partitions": 1}


def test_load_run_merges_the_clients_logs(tmp_path):
    def write(name, lines, torn=""):
        with open(tmp_path / name, "w") as out:
            out.write("".join(json.dumps(line) + "\n" for line in lines) + torn)

    write("producer-1.jsonl", [
        {"k": "incarnation", "name": "producer-1.0", "m": 1},
        {"k": "ack", "t": T, "p": 0, "o": 0, "v": "producer-1.0-0000000000", "m": 2},
        {"k": "fail", "t": T, "p": 1, "v": "producer-1.0-0000000001", "e": "_MSG_TIMED_OUT",
         "m": 3},
        {"k": "error", "e": "_TRANSPORT", "fatal": False, "msg": "x", "m": 4},
    ], torn='{"k": "ack", "t"')  # a process killed mid-line
    write("consumer-1.jsonl", [
        {"k": "seen", "t": T, "p": 0, "o": 0, "v": "producer-1.0-0000000000", "m": 5},
        {"k": "commit", "t": T, "p": 0, "o": 1, "m": 6},
        {"k": "commit_fail", "e": "REBALANCE_IN_PROGRESS", "m": 7},
    ])
    write("faults.jsonl", [{"i": 0, "kind": "pause", "recover_s": 4.0},
                           {"i": 1, "kind": "pause", "recover_s": None}])
    logs = checker.load_run(str(tmp_path))
    assert logs.acks == [(T, 0, 0, "producer-1.0-0000000000")]
    assert logs.failed == [(T, 1, "producer-1.0-0000000001", "_MSG_TIMED_OUT")]
    assert logs.seen == [(T, 0, 0, "producer-1.0-0000000000")]
    assert logs.commits == [(6, T, 0, 1)]
    assert logs.errors == {"producer delivery:_MSG_TIMED_OUT": 1, "producer:_TRANSPORT": 1,
                           "consumer commit:REBALANCE_IN_PROGRESS": 1}
    recovery = checker.recovery_figures(logs.faults)
    assert recovery == {"pause": {"count": 2, "stalls": 1, "p50_s": 4.0, "p99_s": 4.0,
                                  "max_s": 4.0}}
    # A torn line that is not the last one is corruption, not a crash.
    (tmp_path / "consumer-2.jsonl").write_text('{"k": "se\n{"k": "seen"}\n')
    with pytest.raises(ValueError):
        checker.load_run(str(tmp_path))


def test_losses_are_attributed_to_the_fault_that_followed_them():
    faults = [{"kind": "pause", "began_m": 10.0}, {"kind": "kill_leader", "began_m": 20.0}]
    ack_times = {"a": 5.0, "b": 15.0, "c": 19.9, "d": 25.0}
    assert checker.losses_by_fault(["a", "b", "c", "d"], ack_times, faults) == \
        {"pause": 1, "kill_leader": 2, "after the last fault": 1}
    verdict = checker.check([(T, 0, 0, "p1.0-0000000000")], [], [], {(T, 0): []})
    assert verdict["lost"] == ["p1.0-0000000000"]


def test_values_parse_into_producer_and_sequence():
    assert checker.parse_value("producer-2.1-0000000042") == ("producer-2.1", 42)
    assert checker.parse_value("something else") is None
    assert checker.parse_value(None) is None


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert stats.percentile(values, 0.50) == 50
    assert stats.percentile(values, 0.99) == 99
    assert stats.percentile([3.0], 0.99) == 3.0
    assert stats.percentile([], 0.5) is None


# ---------------------------------------------------------------- transactions

X = "txn-topic"


def tv(txn, index, size, producer="txnproducer-1.0"):
    return f"{producer}:{txn}:{index}:{size}"


def txn_history():
    """Three transactions over two partitions, markers taking offsets: txn 0 (3 records)
    committed, txn 1 (2) aborted, txn 2 (2, all in partition 1) committed."""
    txns = {"txnproducer-1.0:0": {"n": 3, "outcome": "committed"},
            "txnproducer-1.0:1": {"n": 2, "outcome": "aborted"},
            "txnproducer-1.0:2": {"n": 2, "outcome": "committed"}}
    committed = {(X, 0): [(0, tv(0, 0, 3)), (1, tv(0, 2, 3))],              # marker 2
                 (X, 1): [(0, tv(0, 1, 3)), (4, tv(2, 0, 2)), (5, tv(2, 1, 2))]}
    uncommitted = {(X, 0): [(0, tv(0, 0, 3)), (1, tv(0, 2, 3)), (3, tv(1, 0, 2))],
                   (X, 1): [(0, tv(0, 1, 3)), (2, tv(1, 1, 2)), (4, tv(2, 0, 2)),
                            (5, tv(2, 1, 2))]}
    seen = [(t, p, o, v) for (t, p), records in committed.items() for o, v in records]
    commits = [(1.0, X, 0, 2), (2.0, X, 1, 7)]
    final = {(X, 0): 2, (X, 1): 7}
    return txns, committed, uncommitted, seen, commits, final


def txn_figures(txns, committed, uncommitted, seen, commits=(), final=None):
    return checker.check_transactions(txns, committed, uncommitted, seen, commits,
                                      final)["figures"]


def test_a_clean_transactional_history_passes():
    result = txn_figures(*txn_history())
    assert failing(result) == {}
    assert result["txn_committed"] == 2 and result["txn_aborted"] == 1
    assert result["txn_records_stored"] == 7 and result["txn_records_visible"] == 5
    # Offsets not holding data in read_uncommitted: markers 2 (p0), 1 and 3 (p1); the
    # trailing markers (p0@4, p1@6) lie past the last record read.
    assert result["txn_offsets_not_data"] == 3


def test_a_partial_transaction_is_found():
    txns, committed, uncommitted, seen, commits, final = txn_history()
    committed[(X, 1)] = committed[(X, 1)][1:]  # txn 0 loses its record in partition 1
    seen = [s for s in seen if s[3] != tv(0, 1, 3)]
    result = txn_figures(txns, committed, uncommitted, seen)
    assert failing(result) == {"txn_partial": 1}
    verdict = checker.check_transactions(txns, committed, uncommitted, seen)
    assert "txnproducer-1.0:0" in verdict["examples"]["txn_partial"][0]
    # The same for a transaction of unknown outcome, and for one no producer log names.
    txns["txnproducer-1.0:0"]["outcome"] = "unknown"
    assert failing(txn_figures(txns, committed, uncommitted, seen)) == {"txn_partial": 1}
    del txns["txnproducer-1.0:0"]
    assert failing(txn_figures(txns, committed, uncommitted, seen)) == {"txn_partial": 1}


def test_a_record_claiming_another_size_is_partial():
    txns, committed, uncommitted, seen, commits, final = txn_history()
    txns["txnproducer-1.0:2"]["n"] = 3
    assert failing(txn_figures(txns, committed, uncommitted, seen)) == {"txn_partial": 3}


def test_a_committed_transaction_missing_is_lost():
    txns, committed, uncommitted, seen, commits, final = txn_history()
    committed[(X, 1)] = committed[(X, 1)][:1]
    seen = [s for s in seen if s[3] not in (tv(2, 0, 2), tv(2, 1, 2))]
    result = txn_figures(txns, committed, uncommitted, seen)
    assert failing(result) == {"txn_lost": 1}


def test_an_aborted_transaction_visible_is_found():
    txns, committed, uncommitted, seen, commits, final = txn_history()
    committed[(X, 0)].append((3, tv(1, 0, 2)))
    committed[(X, 1)].insert(1, (2, tv(1, 1, 2)))
    result = txn_figures(txns, committed, uncommitted, seen)
    assert failing(result) == {"txn_aborted_visible": 1}


def test_an_undecided_transaction_may_be_all_or_nothing():
    txns, committed, uncommitted, seen, commits, final = txn_history()
    txns["txnproducer-1.0:1"]["outcome"] = "unknown"
    txns["txnproducer-1.0:2"]["outcome"] = None  # the producer stopped mid-way
    result = txn_figures(txns, committed, uncommitted, seen)
    assert failing(result) == {}
    assert result["txn_undecided_aborted"] == 1 and result["txn_undecided_committed"] == 1


def test_a_consumer_that_saw_an_aborted_record_is_found():
    txns, committed, uncommitted, seen, commits, final = txn_history()
    seen.append((X, 0, 3, tv(1, 0, 2)))
    result = txn_figures(txns, committed, uncommitted, seen)
    assert failing(result) == {"txn_seen_aborted": 1}


def test_consumers_that_read_past_part_of_a_transaction_saw_it_partially():
    txns, committed, uncommitted, seen, commits, final = txn_history()
    # Nobody saw txn 0's record at partition 1 offset 0, yet they read partition 1 on.
    partial = [s for s in seen if s[3] != tv(0, 1, 3)]
    assert failing(txn_figures(txns, committed, uncommitted, partial)) == \
        {"txn_seen_partial": 1}
    # Not read that far yet (the run ended first): not a partial view.
    unread = [s for s in seen if s[1] == 0]
    assert failing(txn_figures(txns, committed, uncommitted, unread)) == {}


def test_a_transactional_record_stored_twice_is_a_duplicate():
    txns, committed, uncommitted, seen, commits, final = txn_history()
    uncommitted[(X, 1)].append((7, tv(2, 1, 2)))
    assert failing(txn_figures(txns, committed, uncommitted, seen)) == {"txn_duplicated": 1}


def test_transactional_offsets_may_skip_but_never_go_back():
    txns, committed, uncommitted, seen, commits, final = txn_history()
    committed[(X, 1)].append((5, tv(2, 1, 2)))
    result = txn_figures(txns, committed, uncommitted, seen)
    assert result["offset_anomalies"] == 1 and result.get("gaps", 0) == 0


def test_the_read_committed_groups_commits_never_go_back():
    txns, committed, uncommitted, seen, commits, final = txn_history()
    assert failing(txn_figures(txns, committed, uncommitted, seen, commits, final)) == {}
    assert failing(txn_figures(txns, committed, uncommitted, seen, commits,
                               {(X, 0): 1, (X, 1): 7})) == {"commits_backwards": 1}


def test_transaction_values_parse():
    assert checker.parse_txn_value("txnproducer-1.2:17:3:5") == ("txnproducer-1.2:17", 3, 5)
    assert checker.parse_txn_value("producer-1.0-0000000001") is None
    assert checker.parse_txn_value("a:b:c") is None
    assert checker.parse_txn_value(None) is None


def test_load_run_reads_the_transactional_clients_logs(tmp_path):
    def write(name, lines):
        (tmp_path / name).write_text("".join(json.dumps(line) + "\n" for line in lines))

    write("txnproducer-1.jsonl", [
        {"k": "incarnation", "name": "txnproducer-1.0", "m": 1},
        {"k": "txn_begin", "x": "txnproducer-1.0:0", "n": 2, "m": 2},
        {"k": "txn_end", "x": "txnproducer-1.0:0", "outcome": "committed", "why": "chosen",
         "m": 3},
        {"k": "txn_begin", "x": "txnproducer-1.0:1", "n": 1, "m": 4},
        {"k": "txn_end", "x": "txnproducer-1.0:1", "outcome": "unknown",
         "why": "commit: _FENCED", "m": 5},
        {"k": "txn_begin", "x": "txnproducer-1.1:2", "n": 4, "m": 6},
    ])
    write("txnconsumer-1.jsonl", [
        {"k": "seen", "t": X, "p": 0, "o": 0, "v": tv(0, 0, 2), "m": 7},
        {"k": "commit", "t": X, "p": 0, "o": 1, "m": 8},
    ])
    write("consumer-1.jsonl", [{"k": "seen", "t": T, "p": 0, "o": 0, "v": "p-1", "m": 9}])
    logs = checker.load_run(str(tmp_path))
    assert logs.txns == {"txnproducer-1.0:0": {"n": 2, "outcome": "committed"},
                         "txnproducer-1.0:1": {"n": 1, "outcome": "unknown"},
                         "txnproducer-1.1:2": {"n": 4, "outcome": None}}
    assert logs.txn_seen == [(X, 0, 0, tv(0, 0, 2))]
    assert logs.txn_commits == [(8, X, 0, 1)]
    assert logs.seen == [(T, 0, 0, "p-1")] and logs.commits == []
    assert logs.errors == {"txnproducer:commit: _FENCED": 1}


def test_the_report_shows_the_transactions():
    verdict = checker.check(*clean_history())
    txn = checker.check_transactions(*txn_history())
    verdict["figures"].update(txn["figures"])
    report = checker.format_report(verdict)
    assert "transactions: 2 committed, 1 aborted" in report and report.endswith("PASS")
    verdict["figures"]["txn_partial"] = 1
    assert checker.format_report(verdict).endswith("FAIL")


# ---------------------------------------------------------------- the transactional producer


class FakeTxnProducer:
    """Stands in for confluent's Producer in workload.one_transaction: records calls,
    raises the scripted KafkaErrors from commit_transaction/abort_transaction in turn."""

    def __init__(self, commit_errors=(), abort_errors=()):
        self.calls = []
        self.commit_errors = list(commit_errors)
        self.abort_errors = list(abort_errors)

    def begin_transaction(self):
        self.calls.append("begin")

    def produce(self, topic, value, partition, on_delivery):
        self.calls.append(("produce", topic, partition, value.decode()))

    def poll(self, _timeout):
        return 0

    def _end(self, name, errors):
        self.calls.append(name)
        if errors:
            raise KafkaException(errors.pop(0))

    def commit_transaction(self, _timeout):
        self._end("commit", self.commit_errors)

    def abort_transaction(self, _timeout):
        self._end("abort", self.abort_errors)


def run_one(producer, tmp_path, abort_share=0.0, seed=1):
    from fault_run import workload

    args = workload.parse_args(["txnproducer", "--bootstrap", "b", "--name", "tp",
                                "--out", str(tmp_path / "tp.jsonl"), "--topics", "x,y",
                                "--partitions", "2", "--txn-size-max", "4",
                                "--txn-abort-share", str(abort_share)])
    log = workload.JsonLog(args.out)
    state = workload.TxnState(log)
    stop = threading.Event()
    try:
        result = workload.one_transaction(producer, state, args, "tp.0", 7, random.Random(seed),
                                          stop)
    finally:
        log.close()
    lines = checker.read_jsonl(args.out)
    return result, state, lines


def produced(producer):
    return [call for call in producer.calls if call[0] == "produce"]


def test_a_transaction_carries_its_key_index_and_size(tmp_path):
    producer = FakeTxnProducer()
    (outcome, why), state, lines = run_one(producer, tmp_path)
    assert (outcome, why) == ("committed", "chosen")
    assert producer.calls[0] == "begin" and producer.calls[-1] == "commit"
    records = produced(producer)
    size = len(records)
    assert 1 <= size <= 4
    assert [checker.parse_txn_value(call[3]) for call in records] == \
        [("tp.0:7", index, size) for index in range(size)]
    assert all(call[1] in ("x", "y") and call[2] in (0, 1) for call in records)
    assert lines[0]["k"] == "txn_begin" and lines[0]["x"] == "tp.0:7" and \
        lines[0]["n"] == size
    assert state.current == "tp.0:7"


def test_a_retriable_commit_error_is_retried(tmp_path):
    producer = FakeTxnProducer(commit_errors=[
        KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True)])
    (outcome, _why), _state, lines = run_one(producer, tmp_path)
    assert outcome == "committed"
    assert producer.calls.count("commit") == 2 and "abort" not in producer.calls
    assert any(line.get("e") == "commit:_TIMED_OUT" for line in lines)


def test_an_abortable_commit_error_aborts(tmp_path):
    producer = FakeTxnProducer(commit_errors=[
        KafkaError(KafkaError.INVALID_PRODUCER_EPOCH, "epoch", txn_requires_abort=True)])
    (outcome, why), _state, _lines = run_one(producer, tmp_path)
    assert (outcome, why) == ("aborted", "commit: INVALID_PRODUCER_EPOCH")
    assert producer.calls[-2:] == ["commit", "abort"]


def test_a_fatal_commit_error_leaves_the_outcome_unknown(tmp_path):
    from fault_run import workload

    producer = FakeTxnProducer(commit_errors=[KafkaError(KafkaError._FENCED, "fenced",
                                                         fatal=True)])
    with pytest.raises(workload.Fatal):
        run_one(producer, tmp_path)


def test_some_transactions_are_aborted_on_purpose(tmp_path):
    producer = FakeTxnProducer()
    (outcome, why), _state, _lines = run_one(producer, tmp_path, abort_share=1.0)
    assert (outcome, why) == ("aborted", "chosen")
    assert producer.calls[-1] == "abort" and "commit" not in producer.calls


# ---------------------------------------------------------------- the short run


@pytest.mark.timeout(int(SHORT_MAX_MINUTES * 60) + 720)
def test_fault_run_short(tmp_path):
    """scripts/fault-run with a few dozen faults: the checker finds nothing."""
    available, reason = cluster.namespaces_available()
    if not available:
        # As make_cluster does: a skipped fault run must not read as a pass.
        if os.environ.get("GRACCHUS_ALLOW_NETNS_SKIP") == "1":
            pytest.skip(f"network namespaces unavailable: {reason}")
        pytest.fail(f"network namespaces unavailable: {reason} (set "
                    "GRACCHUS_ALLOW_NETNS_SKIP=1 to skip instead)", pytrace=False)
    summary_path = tmp_path / "summary.json"
    command = [os.path.join(ROOT, "scripts", "fault-run"), "--faults", str(SHORT_FAULTS),
               "--max-minutes", str(SHORT_MAX_MINUTES), "--seed", str(SHORT_SEED),
               "--json", str(summary_path), "--dir", str(tmp_path / "run")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=die_with_parent)
    try:
        stdout, stderr = process.communicate(timeout=SHORT_MAX_MINUTES * 60 + 540)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the run then stops its nodes and removes its namespaces itself.
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
        pytest.fail(f"the fault run overran its bounds:\n{stdout[-5000:]}\n{stderr[-5000:]}")
    print(stdout[-20000:])
    assert summary_path.exists(), f"no summary; stderr:\n{stderr[-5000:]}"
    summary = json.loads(summary_path.read_text())
    assert summary["failure"] is None, f"{summary['failure']}\n{stderr[-5000:]}"
    assert summary["faults"] >= min(SHORT_FAULTS, 10), summary
    found = {name: summary["figures"][name] for name in checker.FAILING}
    assert found == {name: 0 for name in checker.FAILING}, \
        f"{found}\nexamples: {json.dumps(summary['examples'], indent=1)[:4000]}"
    assert summary["figures"]["acknowledged"] > 0
    assert process.returncode == 0, stderr[-5000:]
