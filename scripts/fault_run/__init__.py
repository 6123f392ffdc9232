"""The fault run (issue 8): a three-node cluster under idempotent acks=all producers and a
consumer group, plus transactional producers and a read_committed group (issue 10),
faults injected one after another, then an independent check.

Modules:
- run.py       the entry point (scripts/fault-run): cluster, topics, workload, fault
               loop, final drain, check, figures, exit code.
- faults.py    the fault kinds: how a target is found (Metadata, DescribeCluster,
               FindCoordinator), how each fault is injected and undone.
- workload.py  the producer, transactional producer and consumer child processes; each
               writes a JSON-lines log of what it was told (acks, failures, transactions
               begun and how they ended, records seen, commits).
- checker.py   the independent checker: reads those logs and every partition from
               offset 0 with a fresh confluent-kafka consumer; knows nothing of the
               broker's code or of the harness.
- stats.py     percentiles, shared by run.py and checker.py.
"""
