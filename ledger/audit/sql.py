"""DuckDB over an export: the views of ``queries/views.sql`` and the named audit queries.

:func:`connect` opens an in-memory DuckDB connection over an export directory in two layers:

1. one base view per topic, ``topic_<name>`` (``topic_commands``, ``topic_command_results``,
   ``topic_policy_events``, ``topic_grant_events``, ``topic_evaluation_requests``,
   ``topic_decisions``, ``topic_corrections``, ``topic_dead_letters``,
   ``topic_chain_checkpoints``), reading exactly the Parquet files the manifest lists, with
   every column of the current export format: files are matched by column name, and a column a
   file lacks (one written before a later version added the field) reads as NULL, as does a
   column none of them has (a topic with no files yet is an empty view with those columns);
2. the analysts' views, defined by ``queries/views.sql`` over those base views.

Named queries are the other ``queries/*.sql`` files. Each opens with a header comment::

    -- question: Which policy versions were deployed at instant `at`?
    -- param: at TIMESTAMPTZ the instant (ISO 8601; UTC when it has no offset)

and refers to its parameters as ``$name``: they are bound as DuckDB prepared parameters, never
pasted into the text. Parameter types: ``VARCHAR``, ``BIGINT``, ``TIMESTAMPTZ``. A header line
``-- known: policy policy_log.policy`` names the view columns where a value of a parameter is
found: when the query answers no rows, :func:`unknown_values` says which values the export
never mentions (a mistyped id reads as "not in this export", not as "nothing happened").

Read-only connections (``read_only=True``, what ``ledger audit sql`` uses) may read only the
export's files (DuckDB's ``allowed_paths`` with ``enable_external_access = false``), cannot
change settings (``lock_configuration``), and :func:`run_sql` accepts a single ``SELECT``
statement only, so nothing can write, attach, copy, install, load or set options.

Every connection holds DuckDB to :data:`QUERY_MEMORY` (its own default is 80% of the machine's
memory): a file of an export is small on disk and may be large in memory (a red team's 26 KB
file held a 400 MB value), and a query that would need more fails, one line, exit 9.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ledger.audit import query_memory
from ledger.audit.export import ExportPath, read_manifest
from ledger.audit.manifest import MANIFEST_BYTES, Manifest, listed_file, no_export
from ledger.audit.rows import topic_formats
from ledger.contract import contract_dir
from ledger.core.jsonform import parse_instant
from ledger.core.text import clipped
from ledger.errors import ExportError, UsageError
from ledger.settings import TopicNames

__all__ = [
    "PARAM_TYPES",
    "QUERY_FAILED",
    "QUERY_MEMORY",
    "Param",
    "Known",
    "NamedQuery",
    "Result",
    "Streamed",
    "stream_named",
    "stream_sql",
    "connect",
    "named_queries",
    "named_query",
    "parse_params",
    "plain_base_views_sql",
    "run_named",
    "run_sql",
    "unknown_values",
    "views_sql",
]

QUERY_MEMORY: Final = "4GiB"
"""DuckDB's ``memory_limit`` on every connection to an export: what a query may hold at once
(the buffers of its scans, joins and aggregates), whatever the export's files declare."""

PARAM_TYPES: Final = ("VARCHAR", "BIGINT", "TIMESTAMPTZ")
_DUCK_TYPES: Final[dict[str, str]] = {
    "string": "VARCHAR",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "bool": "BOOLEAN",
    "double": "DOUBLE",
    "binary": "BLOB",
    "timestamp[ms, tz=UTC]": "TIMESTAMPTZ",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
    "extension<arrow.json>": "JSON",
}
_VIEWS: Final = "views.sql"


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a named query."""

    name: str
    type: str
    description: str


@dataclass(frozen=True, slots=True)
class Known:
    """Where a parameter's values are found (``view.column`` each), from a ``-- known:`` line."""

    param: str
    columns: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class NamedQuery:
    """A named audit query: its file, the question it answers, its parameters and its SQL."""

    name: str
    question: str
    params: tuple[Param, ...]
    sql: str
    path: Path
    known: tuple[Known, ...] = ()


@dataclass(frozen=True, slots=True)
class Result:
    """A query's answer: column names and rows (Python values as DuckDB returns them)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    types: tuple[str, ...] = ()
    """DuckDB's type of each column (``JSON``, ``TIMESTAMP WITH TIME ZONE`` …)."""

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


# --------------------------------------------------------------------------- the queries


def _queries_dir() -> Path:
    return contract_dir("queries")


def views_sql() -> str:
    """The text of ``queries/views.sql``."""
    return (_queries_dir() / _VIEWS).read_text(encoding="utf-8")


_HEADER = re.compile(r"^--\s?(.*)$")
_COLUMN_REF = re.compile(r"^([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)$")


def _parse_known(path: Path, body: str) -> Known:
    parts = body.removeprefix("known:").split()
    refs = [_COLUMN_REF.match(part) for part in parts[1:]]
    if len(parts) < 2 or any(ref is None for ref in refs):
        raise ExportError(
            f"{path}: malformed known line {body!r} (want: known: PARAM view.column …)"
        )
    return Known(parts[0], tuple((ref.group(1), ref.group(2)) for ref in refs if ref is not None))


def _parse_query(path: Path) -> NamedQuery:
    text = path.read_text(encoding="utf-8")
    question: list[str] = []
    params: list[Param] = []
    known: list[Known] = []
    current: str | None = None
    for line in text.splitlines():
        match = _HEADER.match(line.strip())
        if match is None:
            if line.strip():
                break
            continue
        body = match.group(1).rstrip()
        if body.startswith("question:"):
            current = "question"
            question.append(body.removeprefix("question:").strip())
        elif body.startswith("param:"):
            current = "param"
            parts = body.removeprefix("param:").split(None, 2)
            if len(parts) < 2 or parts[1].upper() not in PARAM_TYPES:
                raise ExportError(f"{path}: malformed parameter line {body!r}")
            params.append(Param(parts[0], parts[1].upper(), parts[2] if len(parts) > 2 else ""))
        elif body.startswith("known:"):
            current = None
            known.append(_parse_known(path, body))
        elif body.startswith(("  ", "\t")) and current == "question":
            question.append(body.strip())
        elif body.startswith(("  ", "\t")) and current == "param" and params:
            last = params[-1]
            params[-1] = Param(last.name, last.type, f"{last.description} {body.strip()}".strip())
        else:
            current = None
    if not question:
        raise ExportError(f"{path}: the header has no `-- question:` line")
    declared = {p.name for p in params}
    for entry in known:
        if entry.param not in declared:
            raise ExportError(f"{path}: known line for {entry.param!r}, which is not a parameter")
    return NamedQuery(path.stem, " ".join(question), tuple(params), text, path, tuple(known))


def named_queries() -> dict[str, NamedQuery]:
    """Every named query of ``queries/``, by name."""
    found = {}
    for path in sorted(_queries_dir().glob("*.sql")):
        if path.name not in (_VIEWS, PLAIN_BASE_VIEWS):
            query = _parse_query(path)
            found[query.name] = query
    return found


def named_query(name: str) -> NamedQuery:
    """One named query, or a :class:`UsageError` naming the ones that exist."""
    queries = named_queries()
    if name not in queries:
        raise UsageError(
            f"no named query {name!r}; `ledger audit list` shows them: {', '.join(queries)}"
        )
    return queries[name]


_UNIT_WORDS: Final = {"s": "sec", "m": "min", "h": "hour", "d": "day", "w": "week"}
_UNITS_SAID: Final = {
    **{word: unit for unit, word in _UNIT_WORDS.items()},
    **{f"{word}s": unit for unit, word in _UNIT_WORDS.items()},
    **{unit: unit for unit in _UNIT_WORDS},
    "second": "s",
    "seconds": "s",
    "minute": "m",
    "minutes": "m",
    "hr": "h",
    "hrs": "h",
}
"""How long ago a reader may write, unit by unit (``10m``, ``10min``, ``2 hours``)."""
_BSD_UNITS: Final = {"s": "S", "m": "M", "h": "H", "d": "d", "w": "w"}


def _how_long_ago(raw: str) -> tuple[str, str] | None:
    """``(count, unit)`` of a "how long ago" (``10m``, ``10min``, ``2 hours``), else ``None``."""
    text = raw.strip().lower()
    digits = len(text) - len(text.lstrip("0123456789"))
    count, unit = text[:digits], _UNITS_SAID.get(text[digits:].strip())
    return (count, unit) if count and unit is not None else None


def _parse_value(param: Param, raw: str) -> Any:
    if param.type == "VARCHAR":
        return raw
    if param.type == "BIGINT":
        if param.name == "version" and raw[:1] in ("v", "V"):
            raw = raw[1:]  # v2, as every other command takes a version
        try:
            return int(raw, 10)
        except ValueError:
            raise UsageError(f"parameter {param.name} must be an integer, got {raw!r}") from None
    try:
        return parse_instant(raw)
    except ValueError:
        ago = _how_long_ago(raw)
        raise UsageError(
            f"parameter {param.name} must be an ISO 8601 time (e.g. 2026-11-26T12:00:00Z), "
            f"got {raw!r}"
            + (
                # An auditor's walkthrough: `--since 1h` is taken, so `at=1h` was tried too; a
                # parameter names an instant of the export's past, not of the reader's now.
                f" (how long ago, written 30m, 1h or 7d, is for options such as --since; the instant: "
                f"`date -u -d '{ago[0]} {_UNIT_WORDS[ago[1]]} ago' +%FT%TZ`, on macOS "
                f"`date -u -v-{ago[0]}{_BSD_UNITS[ago[1]]} +%FT%TZ`)"
                if ago is not None
                else ""
            )
        ) from None


def parse_params(query: NamedQuery, given: Mapping[str, str]) -> dict[str, Any]:
    """``given`` (``name → text``) as typed values for ``query``, or one :class:`UsageError`
    naming the unknown, missing or ill-typed parameter."""
    declared = {p.name: p for p in query.params}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        takes = ", ".join(f"{p.name} ({p.type})" for p in query.params) or "no parameters"
        raise UsageError(f"{query.name} has no parameter {', '.join(unknown)}; it takes {takes}")
    missing = [p.name for p in query.params if p.name not in given]
    if missing:
        raise UsageError(
            f"{query.name} needs --param {' --param '.join(m + '=…' for m in missing)} "
            f"({'; '.join(f'{p.name}: {p.type} {p.description}' for p in query.params if p.name in missing)})"
        )
    return {name: _parse_value(declared[name], raw) for name, raw in given.items()}


# --------------------------------------------------------------------------- the connection


def _empty_select(schema: pa.Schema) -> str:
    columns = ", ".join(
        f"CAST(NULL AS {_DUCK_TYPES[str(f.type)]}) AS {_ident(f.name)}" for f in schema
    )
    return f"SELECT {columns} WHERE false"


def _columns_of(paths: list[Path], export_dir: Path) -> list[list[str]]:
    """Each file's column names, in order (its footer only is read, once per connection).
    A file that is not whole Parquet is one :class:`ExportError` line naming it."""
    names = []
    for path in paths:
        try:
            names.append(pq.read_schema(path).names)
        except (OSError, pa.ArrowException) as exc:
            raise ExportError(
                f"{path} is not a whole Parquet file ({first_line(exc)}): damaged or altered "
                f"since the export; run `ledger audit verify --from {export_dir}`"
            ) from None
    return names


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _date_of_file(column: str) -> str:
    """A row's ``date``: its file's ``date=`` folder, read from the end of the file's path
    (``column``, DuckDB's ``filename``: the manifest's own layout), never from folders above."""
    return (
        f"TRY_CAST(regexp_extract({_ident(column)}, "
        "'/date=([0-9]{4}-[0-9]{2}-[0-9]{2})/[^/]*$', 1) AS DATE)"
    )


def _unused(name: str, taken: Iterable[Collection[str]]) -> str:
    """``name``, suffixed until no file has a column so called (DuckDB refuses a clash)."""
    names = set().union(*taken)
    found, n = name, 0
    while found in names:
        n += 1
        found = f"{name}_{n}"
    return found


def base_views_sql(
    export_dir: ExportPath, *, manifest: Manifest | None = None, exclude: Collection[str] = ()
) -> tuple[str, list[Path]]:
    """The SQL defining the ``topic_<name>`` base views of ``export_dir``, and the files read.

    Each view has exactly the columns of the topic's current format, in its order, then
    ``date`` (the file's ``date=`` folder). The files are read by column name
    (``union_by_name``), so an export whose older files lack a column added since reads NULL
    there; a column no format has is left out, and no ``key=value`` folder name, in the export
    or above it, becomes a column (DuckDB's hive partitioning is off): who names or hands over
    the directory cannot change what a view says.

    ``manifest``: the export's, as the caller read it (else read here); ``exclude``: the
    manifest paths of files left out (those ``ledger audit verify`` found gone or damaged).

    Raises :class:`ExportError` (exit 9) when the directory does not exist or holds no export.
    """
    export_dir = Path(export_dir)
    if not export_dir.exists():
        raise ExportError(f"{export_dir} does not exist: run `ledger export --out {export_dir}`")
    if not export_dir.is_dir():
        raise ExportError(f"{export_dir} is not a directory (an export directory is needed)")
    manifest = manifest if manifest is not None else read_manifest(export_dir)
    if manifest is None:
        raise no_export(export_dir)
    formats = topic_formats(TopicNames(prefix=manifest.prefix))
    by_topic: dict[str, list[str]] = {}
    for entry in manifest.files:
        if entry["path"] in exclude:
            continue
        by_topic.setdefault(str(entry["topic"]), []).append(str(entry["path"]))
    statements = []
    files: list[Path] = []
    for topic, fmt in formats.items():
        paths = [listed_file(export_dir, p) for p in sorted(by_topic.get(topic, []))]
        files.extend(paths)
        body = _no_files(fmt.schema)
        if paths:
            listing = "[" + ", ".join(_literal(str(p.resolve())) for p in paths) + "]"
            found = _columns_of(paths, export_dir)
            file_column = _unused("ledger_file", found)
            if all(names == fmt.schema.names for names in found):
                # The common case, read as it is: matching by name makes DuckDB read every
                # file's footer at each query (a lookup by id took 65 ms instead of 24).
                columns = ", ".join(_ident(name) for name in fmt.schema.names)
                body = (
                    f"SELECT {columns}, {_date_of_file(file_column)} AS date FROM "
                    f"read_parquet({listing}, {_read_options(file_column)})"
                )
            else:
                body = _files_by_name(fmt.schema, listing, file_column)
        statements.append(f"CREATE OR REPLACE VIEW topic_{fmt.attribute} AS {body};")
    return "\n".join(statements), files


def _no_files(schema: pa.Schema) -> str:
    """A topic's base view while the export lists no file of it: its columns, no rows."""
    return f"SELECT *, CAST(NULL AS DATE) AS date FROM ({_empty_select(schema)})"


def _read_options(file_column: str) -> str:
    """``read_parquet``'s options for an export's files: no ``key=value`` folder name becomes a
    column, and each row's file is in ``file_column`` (what its ``date`` is read from)."""
    return f"hive_partitioning = false, filename = {_literal(file_column)}"


def _files_by_name(schema: pa.Schema, listing: str, file_column: str) -> str:
    """A topic's base view over the files ``listing`` (a DuckDB expression giving a list of
    paths) read by column name: the empty typed select first, so its columns (all of today's
    format) lead, in order, and a column a file lacks reads NULL; one no format has is left
    out."""
    columns = ", ".join(_ident(name) for name in schema.names)
    return (
        f"SELECT {columns}, {_date_of_file(file_column)} AS date FROM "
        f"({_empty_select(schema)} UNION ALL BY NAME SELECT * FROM "
        f"read_parquet({listing}, union_by_name = true, {_read_options(file_column)}))"
    )


PLAIN_BASE_VIEWS: Final = "base_views.sql"
"""The file of ``queries/`` that defines the base views in DuckDB alone (see
:func:`plain_base_views_sql`)."""


def plain_base_views_sql() -> str:
    """The text of ``queries/base_views.sql``: the ``topic_<name>`` base views of
    :func:`base_views_sql` for the DuckDB CLI, without Python: the export directory is given
    with ``SET VARIABLE export_dir = 'DIR';``, the file lists are read from its manifest (the
    topic prefix too), and every topic's files are read by column name (as
    :func:`base_views_sql` reads files of differing columns; a topic with no file yet is an
    empty view with its columns). It does not check the export as :func:`base_views_sql` does
    (manifest fields, links, files gone): ``ledger audit verify`` does.
    A test holds the file to this text, and the views to :func:`connect`'s."""
    lines = [
        "-- The base views of a ledger export (topic_decisions, topic_policy_events, …) for the",
        "-- DuckDB CLI, without Python: what ledger.audit.connect(DIR) defines before",
        "-- queries/views.sql. In duckdb:",
        "--",
        "--     SET VARIABLE export_dir = 'path/to/export';",
        "--     .read queries/base_views.sql",
        "--     .read queries/views.sql",
        "--",
        "-- Each view reads exactly the files the export's _manifest.json lists (never a glob:",
        "-- files merged away stay on disk for ten minutes, and a glob counts their rows twice),",
        "-- by column name: a column older files lack reads NULL. Run it again after the export",
        "-- has run again (a --follow export merges and removes files). It does not check the",
        "-- export for tampering: `ledger audit verify --from DIR` does.",
        "-- Generated from the export format (ledger.audit.sql.plain_base_views_sql); do not edit.",
        "",
        "SET TimeZone = 'UTC';",
        "SET VARIABLE ledger_export = CASE WHEN getvariable('export_dir') IS NULL",
        "    THEN error('set the export directory first: SET VARIABLE export_dir = ''DIR'';')",
        "    ELSE rtrim(getvariable('export_dir'), '/') END;",
        "SET VARIABLE ledger_manifest = (",
        "    SELECT {'prefix': coalesce(topic_prefix, ''), 'files': files}",
        "    FROM read_json(",
        "        getvariable('ledger_export') || '/_manifest.json',",
        "        columns = {topic_prefix: 'VARCHAR', files: 'STRUCT(topic VARCHAR, path VARCHAR)[]'},",
        f"        maximum_object_size = {MANIFEST_BYTES}",
        "    )",
        ");",
    ]
    for topic, fmt in topic_formats(TopicNames()).items():
        variable = f"ledger_files_{fmt.attribute}"
        listing = f"getvariable({_literal(variable)})"
        lines += [
            "",
            f"SET VARIABLE {variable} = (",
            "    SELECT coalesce(list(getvariable('ledger_export') || '/' || f.path ORDER BY f.path),",
            "                    CAST([] AS VARCHAR[]))",
            "    FROM (SELECT unnest(getvariable('ledger_manifest').files) AS f)",
            f"    WHERE f.topic = getvariable('ledger_manifest').prefix || {_literal(topic)}",
            ");",
            f"CREATE OR REPLACE VIEW topic_{fmt.attribute} AS SELECT * FROM query(",
            f"    CASE WHEN len({listing}) = 0",
            f"    THEN {_literal(_no_files(fmt.schema))}",
            f"    ELSE {_literal(_files_by_name(fmt.schema, listing, 'ledger_file'))} END",
            ");",
        ]
    return "\n".join(lines) + "\n"


def session(*, memory: str | None = None) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB connection set up as every reader of an export needs it: Parquet
    and JSON loaded, times in UTC, no progress bar (``--json``/``--csv`` stay clean documents),
    at most ``memory`` held (default: the process's :func:`ledger.audit.use_query_memory`,
    which the CLI sets from ``$LEDGER_AUDIT_MEMORY``, else :data:`QUERY_MEMORY`; a value DuckDB
    does not take is one :class:`UsageError` line).
    :func:`connect` adds the views; the history, verify and reproduction read files on one."""
    named = "memory" if memory else "$LEDGER_AUDIT_MEMORY"
    memory = memory or query_memory() or QUERY_MEMORY
    con = duckdb.connect(":memory:")
    try:
        con.execute("LOAD parquet")
        con.execute("LOAD json")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        try:
            con.execute("SET memory_limit = ?", [memory])
        except duckdb.Error:
            raise UsageError(
                f"{named} {memory!r} is not an amount of memory DuckDB takes "
                "(write it as 8GiB or 500MB)"
            ) from None
    except BaseException:
        con.close()
        raise
    return con


def connect(
    export_dir: ExportPath,
    *,
    read_only: bool = False,
    threads: int | None = None,
    manifest: Manifest | None = None,
    exclude: Collection[str] = (),
    memory: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (in memory) with the export's views attached.

    The views are those of ``queries/views.sql`` (``decisions``, ``policy_events``,
    ``policy_timeline`` …) over the ``topic_<name>`` base views. Use it from your own Python::

        from ledger.audit import connect
        con = connect("export")
        con.sql("SELECT determination, count(*) FROM decisions GROUP BY 1").show()

    ``read_only=True`` also confines the connection to the export's files and locks its
    settings (see the module docstring). Times are shown in UTC. ``manifest`` and ``exclude``:
    as :func:`base_views_sql` takes them; ``memory``: what DuckDB may hold (:func:`session`).
    """
    directory = Path(export_dir)
    base, files = base_views_sql(directory, manifest=manifest, exclude=exclude)
    con = session(memory=memory)
    try:
        con.execute("SET parquet_metadata_cache = true")
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        con.execute(base)
        con.execute(views_sql())
        if read_only:
            paths = ", ".join(_literal(str(p.resolve())) for p in files)
            con.execute(f"SET allowed_paths = [{paths}]")
            # DuckDB allows its spill directory too, `.tmp` under the working directory by
            # default: a red team read a file there with `read_text('.tmp/plain.txt')`.
            con.execute("SET temp_directory = ?", [_spill_dir()])
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise ExportError(f"cannot open the export at {directory}: {first_line(exc)}") from exc
    return con


_SPILL: list[str] = []
_SPILL_PREFIX: Final = "ledger-duckdb-"


def _spill_dir() -> str:
    """A directory of this process's own (mode 0700, removed at exit) where confined DuckDB
    connections spill what does not fit their memory, and may read nothing else. Those a
    killed process left (an out-of-memory kill comes when a query spills most) are removed."""
    if not _SPILL:
        _remove_orphaned_spills()
        made = tempfile.mkdtemp(prefix=f"{_SPILL_PREFIX}{os.getpid()}-")
        atexit.register(shutil.rmtree, made, True)
        _SPILL.append(made)
    return _SPILL[0]


def _remove_orphaned_spills() -> None:
    """Remove this user's spill directories whose process is gone (by the pid in the name)
    and which nothing has touched for an hour."""
    from ledger.pids import running

    with contextlib.suppress(OSError):
        for path in Path(tempfile.gettempdir()).glob(f"{_SPILL_PREFIX}*-*"):
            pid = path.name[len(_SPILL_PREFIX) :].partition("-")[0]
            with contextlib.suppress(OSError):
                info = path.lstat()
                if (
                    pid.isdigit()
                    and stat.S_ISDIR(info.st_mode)
                    and info.st_uid == os.getuid()
                    and not running(int(pid))
                    # untouched for an hour: a pid of another namespace sharing this folder (a
                    # container) may be alive where this process cannot see it (a review)
                    and time.time() - info.st_mtime > 3600
                ):
                    shutil.rmtree(path, ignore_errors=True)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _binder_text(exc: BaseException) -> str:
    """DuckDB's binder error in one line, with its candidate columns, and a hint for the JSON
    operators' precedence (``facts->'amount' > 500`` compares ``'amount' > 500`` first)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    candidates = next((line for line in lines if line.startswith("Candidate bindings")), None)
    if candidates:
        text += f" ({candidates})"
    if "json_extract" in text and "BOOLEAN" in text:
        # The operator DuckDB names (a docs walkthrough: the hint sent a `->` query to `->>`).
        arrow = "->>" if "json_extract_string" in text else "->"
        text += (
            f" ({arrow} binds more loosely than comparisons: write (facts{arrow}'amount') = …, "
            "with the parentheses)"
        )
    return text


# --------------------------------------------------------------------------- running queries


_ALLOWED: Final = {"SELECT"}
QUERY_FAILED: Final = "query_failed"
"""The code of a query that ran and failed (a cast of a bad value): the query's fault, not the
export's (``export_error``); exit 9 still, as the README's table gives it."""


def _check_read_only(sql: str, con: duckdb.DuckDBPyConnection) -> None:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"malformed SQL: {first_line(exc)}") from None
    if len(statements) != 1:
        raise UsageError(
            f"audit sql runs exactly one SELECT statement, got {len(statements)} statements"
        )
    kind = statements[0].type.name
    if kind not in _ALLOWED:
        raise UsageError(
            f"audit sql is read-only: {kind} statements are refused (only SELECT; queries "
            "cannot write, attach, copy, install, load or set options)"
        )


def _execute(
    con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None
) -> Result:
    return _held(_stream(con, sql, params))


@dataclass(frozen=True)
class Streamed:
    """A query's answer handed out a batch of rows at a time (:func:`stream_sql`): a large one
    is never held whole (an auditor's walkthrough: 6 million rows as CSV ended in a
    ``MemoryError`` traceback after holding them all, and 1.2 million took 750 MB)."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    batches: Iterator[list[tuple[Any, ...]]]


STREAM_BATCH: Final = 10_000
"""Rows fetched from DuckDB at a time by :func:`stream_sql`."""


def _stream(
    con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None
) -> Streamed:
    with _query_errors():
        cursor = con.execute(sql, dict(params) if params else None)
        description = cursor.description or []
        columns = tuple(d[0] for d in description)
        types = tuple(str(d[1]) for d in description)

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        while True:
            with _query_errors():  # a conversion fails as its row is fetched
                batch = cursor.fetchmany(STREAM_BATCH)
            if not batch:
                return
            yield batch

    return Streamed(columns, types, batches())


def stream_sql(con: duckdb.DuckDBPyConnection, sql: str) -> Streamed:
    """:func:`run_sql`, its rows handed out in batches as they are read."""
    _check_read_only(sql, con)
    return _stream(con, sql)


def stream_named(
    con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, str] | None = None
) -> Streamed:
    """:func:`run_named`, its rows handed out in batches as they are read."""
    query = named_query(name)
    return _stream(con, query.sql, parse_params(query, params or {}))


@contextlib.contextmanager
def _query_errors() -> Iterator[None]:
    """DuckDB's errors as the ledger's, one line each."""
    try:
        yield
    except duckdb.ParserException as exc:
        raise UsageError(f"malformed SQL: {first_line(exc)}") from None
    except (duckdb.BinderException, duckdb.CatalogException) as exc:
        raise UsageError(f"SQL does not fit the views: {_binder_text(exc)}") from None
    except duckdb.PermissionException as exc:
        raise UsageError(f"refused: {first_line(exc)}") from None
    except duckdb.ConversionException as exc:
        raise ExportError(
            f"query failed: {first_line(exc)} (TRY_CAST gives NULL for a value that does not "
            "convert)",
            code=QUERY_FAILED,
        ) from None
    except duckdb.Error as exc:
        raise ExportError(f"query failed: {first_line(exc)}", code=QUERY_FAILED) from None


def run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> Result:
    """Run one ad-hoc ``SELECT`` (anything else is refused with a :class:`UsageError`)."""
    return _held(stream_sql(con, sql))


def run_named(
    con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, str] | None = None
) -> Result:
    """Run named query ``name`` with parameters given as text (parsed by their declared types)."""
    return _held(stream_named(con, name, params))


def _held(streamed: Streamed) -> Result:
    return Result(
        streamed.columns, [row for batch in streamed.batches for row in batch], streamed.types
    )


def _close_value(con: duckdb.DuckDBPyConnection, view: str, column: str, value: Any) -> str:
    """`` (did you mean 'customer-email'?)`` when a value of ``view.column`` reads like
    ``value`` (an auditor's walkthrough: `ledger decisions` suggested the policy a typo meant,
    a named query did not). Among the first 10,000 distinct values, for text only."""
    if not isinstance(value, str):
        return ""
    held = _execute(
        con,
        f"SELECT DISTINCT CAST({_ident(column)} AS VARCHAR) FROM {_ident(view)} "
        f"WHERE {_ident(column)} IS NOT NULL LIMIT 10000",
        {},
    ).rows
    close = difflib.get_close_matches(value[:200], [row[0] for row in held], n=1, cutoff=0.75)
    return f" (did you mean {clipped(repr(close[0]), 80)}?)" if close else ""


def unknown_values(
    con: duckdb.DuckDBPyConnection, query: NamedQuery, values: Mapping[str, Any]
) -> list[str]:
    """For ``query``, which answered no rows with ``values``: one note per parameter whose value
    the export never mentions in the columns its ``-- known:`` line names, saying how to list
    the values it does hold. Empty when every checked value is known (the answer is "none")."""
    notes = []
    known: dict[str, list[tuple[str, str]]] = {}  # view -> (param, column) found there
    for entry in query.known:
        if entry.param not in values:
            continue
        found = " OR ".join(
            f"EXISTS (SELECT 1 FROM {_ident(view)} WHERE {_ident(column)} = $value)"
            for view, column in entry.columns
        )
        hit = _execute(con, f"SELECT {found}", {"value": values[entry.param]}).rows
        if hit and hit[0][0]:
            view, column = entry.columns[0]
            known.setdefault(view, []).append((entry.param, column))
            continue
        view, column = entry.columns[0]
        notes.append(
            f"{entry.param} {clipped(repr(values[entry.param]), 80)} is not in this export "
            f"(looked in {', '.join(f'{v}.{c}' for v, c in entry.columns)})"
            f"{_close_value(con, view, column, values[entry.param])}; "
            f'list them: ledger audit sql "SELECT DISTINCT {column} FROM {view} ORDER BY 1"'
        )
    # Values each known, never together (an auditor's walkthrough: `version 5` of a policy
    # that has none was "no rows", since another policy has a version 5).
    for view, pairs in known.items():
        if notes or len(pairs) < 2:
            continue
        where = " AND ".join(f"{_ident(column)} = ${param}" for param, column in pairs)
        together = {param: values[param] for param, _ in pairs}
        both = f"SELECT EXISTS (SELECT 1 FROM {_ident(view)} WHERE {where})"
        if any(row[0] for row in _execute(con, both, together).rows):
            continue
        given = " and ".join(f"{param} {clipped(repr(values[param]), 80)}" for param, _ in pairs)
        columns = ", ".join(column for _, column in pairs)
        order = ", ".join(str(n) for n in range(1, len(pairs) + 1))
        notes.append(
            f"no row of {view} in this export has {given} (each alone is there); list them: "
            f'ledger audit sql "SELECT DISTINCT {columns} FROM {view} ORDER BY {order}"'
        )
    return notes


def run_named_typed(
    con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, Any] | None = None
) -> Result:
    """Run named query ``name`` with parameters already typed (``datetime``, ``int``, ``str``)."""
    query = named_query(name)
    declared = {p.name for p in query.params}
    given = dict(params or {})
    if set(given) != declared:
        raise UsageError(f"{name} takes {sorted(declared)}, got {sorted(given)}")
    return _execute(con, query.sql, given)
