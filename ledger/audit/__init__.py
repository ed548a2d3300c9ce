"""The audit wing: the ledger exported to Parquet and questioned with DuckDB (DESIGN §9).

- :mod:`~ledger.audit.rows` — the export format: one ledger record → one row of typed columns;
- :mod:`~ledger.audit.export` — ``ledger export``: Kafka → Parquet files and their manifest,
  incremental, idempotent, repaired after a kill, built from
  :mod:`~ledger.audit.writer` (the file and manifest half, usable without Kafka),
  :mod:`~ledger.audit.folder` (every file touched without following a link: a shared folder
  is hostile input), :mod:`~ledger.audit.fromkafka` (reading the topics) and
  :mod:`~ledger.audit.pool` (helper processes for a large run);
- :mod:`~ledger.audit.manifest` — an export's ``_manifest.json``, read as hostile input: bounded,
  every field and path checked;
- :mod:`~ledger.audit.sql` — DuckDB over an export: the views of ``queries/views.sql``, the
  named audit queries of ``queries/*.sql``, read-only ad-hoc SQL;
- :mod:`~ledger.audit.history` — the governance history read back from an export, for replay;
- :mod:`~ledger.audit.sources` — recorded decisions, requests and governance history for
  reproduction and simulation, read from Kafka or from an export;
- :mod:`~ledger.audit.reproduce` — re-evaluate one recorded decision at its governance position;
- :mod:`~ledger.audit.verify` — recompute the decision hash chains over an export (the walk of
  one chain and the types of its findings: :mod:`~ledger.audit.chainwalk`);
- :mod:`~ledger.audit.columns` — an export row's columns read back into its record (what
  ``verify`` hashes, and how it and ``history`` check the columns against the record bytes);
- :mod:`~ledger.audit.footer` — a Parquet file's footer held to its data, as pyarrow and as
  DuckDB read it (what ``verify`` and ``actor verify --from`` check of every file);
- :mod:`~ledger.audit.sizes` — whether a Parquet file declares more data than an exporter
  writes, found from its metadata before a reader allocates for it;
- :mod:`~ledger.audit._preload` — what the export's fork server loads before forking helpers.

May import: the core, :mod:`ledger.codec` (and its Avro programs, :mod:`ledger.avro`),
:mod:`ledger.contract`, :mod:`ledger.settings`, :mod:`ledger.errors`, :mod:`ledger.files`,
:mod:`ledger.pids`, the Kafka wing (:mod:`ledger.kafka`), duckdb and pyarrow. Never
:mod:`ledger.local` (the development launcher), the processors or :mod:`ledger.cli`
(``tests/unit/test_layers.py``, ``WINGS``, enforces it).

``connect(export_dir)`` is the analysts' entry point: a DuckDB connection with the views
attached (imported lazily here, so the exporter does not load DuckDB). Every function of the
wing that takes an export directory takes it as a str, a :class:`~pathlib.Path` or any other
path-like object (:data:`~ledger.audit.export.ExportPath`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from ledger.audit.export import ExportPath

__all__ = ["connect", "use_query_memory", "query_memory"]

_query_memory: str | None = None


def use_query_memory(amount: str | None) -> None:
    """What DuckDB may hold for each reader of an export this process opens without saying
    (``8GiB``, ``500MB``; ``None``: :data:`ledger.audit.sql.QUERY_MEMORY`). Set once by an entry
    point, from :attr:`ledger.settings.Settings.audit_memory` (``$LEDGER_AUDIT_MEMORY``): the
    readers deep in the audit wing (history, verification, reproduction) open their own
    connections, and nothing below the entry points reads the environment. A value DuckDB does
    not take is refused when a connection is opened, naming the variable."""
    global _query_memory
    _query_memory = amount or None


def query_memory() -> str | None:
    """The amount :func:`use_query_memory` set, if any."""
    return _query_memory


def connect(export_dir: ExportPath, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection over ``export_dir`` with the audit views attached
    (see :func:`ledger.audit.sql.connect`)."""
    from ledger.audit.sql import connect as _connect

    return _connect(export_dir, read_only=read_only)
