"""The local development stack: what ``ledger up`` / ``ledger down`` / ``ledger broker`` run on
one machine.

- :mod:`~ledger.local.broker` — the Apache Kafka broker (KRaft, single node, 127.0.0.1), fetched
  from Maven Central with Maven into a cache outside any repository, started and stopped;
- :mod:`~ledger.local.credentials` — one random SCRAM credential per role, and the broker's own;
- :mod:`~ledger.local.processes` — detached background processes: spawn, check, stop;
- :mod:`~ledger.local.stack` — broker + topics + ACLs + processors, health from heartbeats.

May import settings, discovery, files, keys, pids, the Kafka wing and the processors'
heartbeat, never the CLI (``tests/unit/test_layers.py``, ``WINGS``, enforces it). Nothing imports it but the CLI, its tests and
the benchmarks: the SDK, the processors, the Kafka wing and the audit wing never load it
(``tests/unit/test_layers.py`` and ``tests/unit/test_audit_export_files.py`` enforce it), so a
production deployment runs without it.
"""
