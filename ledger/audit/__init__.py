"""The audit wing: what auditors and analysts run over the ledger's history, from Kafka or from
a Parquet export (DESIGN §9).

- :mod:`~ledger.audit.sources` — recorded decisions, requests and governance history, read from
  Kafka or from an export directory (DuckDB over the export's Parquet files);
- :mod:`~ledger.audit.reproduce` — re-evaluate one recorded decision at its governance position;
- :mod:`~ledger.audit.verify` — recompute the decision hash chains over an export.

May import the core, the codec, settings, errors, the Kafka wing, duckdb and pyarrow; never
``ledger.local`` or ``ledger.cli``.
"""
