"""``ledger audit``: SQL audits over an export with DuckDB (DESIGN §9, §13).

``list`` shows the named queries of ``queries/``; ``run`` runs one with typed parameters;
``sql`` runs one read-only ``SELECT``; ``shell`` opens DuckDB with the views defined. Each
prints a table, or with ``--json`` a JSON array of row objects, or with ``--csv`` CSV.

Other modules add commands to this group with :func:`add_commands` (``audit verify`` lives with
the hash chain); ``ledger.cli.app`` registers :data:`group`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from ledger.cli.common import from_option, load_settings, note_incomplete
from ledger.cli.output import (
    HelpfulGroup,
    Lines,
    handle_errors,
    print_json,
    print_table,
    printable,
    to_jsonable,
)
from ledger.core.boundedjson import nesting_exceeds
from ledger.core.jsonform import format_timestamp
from ledger.core.text import clipped
from ledger.errors import UsageError

__all__ = ["group", "add_commands"]

F = TypeVar("F", bound=Callable[..., Any])


@click.group(
    "audit", cls=HelpfulGroup, short_help="SQL over an export: named audits, ad-hoc SQL, verify."
)
def group() -> None:
    """SQL audits over an export (`ledger export`) with DuckDB: named queries, ad-hoc read-only
    SQL, a shell. Views: policy_events, policy_log (as applied: nothing after a gap in a
    policy's sequence), policy_timeline, grant_events, grant_log, grant_history, role_history,
    commands, command_results, evaluation_requests, decisions, batch_decisions,
    all_decisions (decisions and batch items), shadow_results, corrections, dead_letters,
    chain_checkpoints, undecodable_records."""


def add_commands(*commands: click.Command) -> None:
    """Add commands to ``ledger audit`` (for modules that own them, e.g. ``audit verify``)."""
    for command in commands:
        group.add_command(command)


_from_export = from_option(dest="source")


def _format_options(func: F) -> F:
    func = click.option("--csv", "as_csv", is_flag=True, help="Print CSV (a header row first).")(
        func
    )
    return click.option(
        "--json", "as_json", is_flag=True, help="Print a JSON array of row objects."
    )(func)


def _source(source: Path | None) -> Path:
    return source if source is not None else load_settings().export_dir


_JSON_DEPTH = 64
"""Deepest JSON cell parsed for output; the ledger's own records nest a few levels."""


def _cell(value: Any, kind: str) -> Any:
    """A value as JSON data: JSON columns parsed, times in RFC 3339, bytes in hex."""
    if value is None:
        return None
    if kind == "JSON" and isinstance(value, str):
        if nesting_exceeds(value, _JSON_DEPTH):  # only a tampered export nests this deep
            return value  # as stored: parsed, printing it would recurse past Python's limit
        try:
            return json.loads(value)
        except json.JSONDecodeError:  # as stored: DuckDB accepted the text
            return value
    if isinstance(value, datetime):  # as every --json output writes an instant
        return format_timestamp(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_cell(v, "") for v in value]
    if isinstance(value, dict):
        return {str(k): _cell(v, "") for k, v in value.items()}
    if isinstance(value, timedelta):  # an INTERVAL (decided_at - requested_at) as seconds,
        return value.total_seconds()  # not Python's "0:01:23.520992" (an auditor's walkthrough)
    if isinstance(value, (date, time)):  # the export's `date` column, CURRENT_DATE, a TIME
        return value.isoformat()
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # a UUID, a BLOB's kin …: as DuckDB's own text would show it


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _csv_text(value: Any, kind: str) -> str:
    """A CSV cell: a JSON column as stored, the event's canonical JSON form (a docs
    walkthrough: parsed and printed again, it gained spaces an auditor's hash did not have)."""
    if kind == "JSON" and isinstance(value, str):
        return value
    return _text(_cell(value, kind))


def _one_format(as_json: bool, as_csv: bool) -> None:
    """Before any work: a query over a large export should not run only to be refused."""
    if as_json and as_csv:
        raise UsageError("choose one of --json and --csv")


_WIDE: Final = 8
"""More columns than this, in one row, print a column a line."""


TABLE_ROWS: Final = 1_000
"""The most rows a table shows (an auditor's walkthrough: 5,015 rows of 40 columns took 22 s and
736 MB to draw); --csv and --json print every row, streamed."""


def _emit(streamed: Any, as_json: bool, as_csv: bool) -> int:
    """Print a streamed answer (:class:`ledger.audit.sql.Streamed`) a batch at a time, never
    holding it whole; returns how many rows it had. A query that fails part-way (a CAST on
    row 150,000) has printed rows already: a line on stderr says they are not the answer (a
    review: `--csv > file` left a plausible, truncated file), and the exit status is non-zero."""
    written = [0]
    try:
        return _emit_rows(streamed, as_json, as_csv, written)
    except Exception as exc:
        if written[0] and (as_json or as_csv) and not isinstance(exc, OSError):
            # (a reader that stopped reading, `| head`, is no failed query: a review)
            sys.stdout.flush()
            click.echo(
                f"error: the query failed after {written[0]} row(s) were written: what was "
                "written is not the whole answer; discard it",
                err=True,
            )
        raise


def _as_is(text: str) -> str:
    return text


def distinct_names(columns: Sequence[str]) -> list[str]:
    """The columns' names, each one distinct: a JSON object keeps one value per key, and a
    query's `SELECT a.id, b.id` (two columns named `id`) lost the first silently (a review).
    A repeated name is written `id_2`, `id_3`…, skipping names the query has already; a line
    on stderr says so."""
    taken = set(columns)
    seen: set[str] = set()
    out: list[str] = []
    for name in columns:
        if name not in seen:
            seen.add(name)
            out.append(name)
            continue
        n = 2
        while f"{name}_{n}" in taken:
            n += 1
        renamed = f"{name}_{n}"
        taken.add(renamed)
        out.append(renamed)
        click.echo(
            f"note: the answer has more than one column named {name!r}; in the JSON the "
            f"repeated one is {renamed!r} (name the columns with AS to choose)",
            err=True,
        )
    return out


def _emit_rows(streamed: Any, as_json: bool, as_csv: bool, written: list[int]) -> int:
    kinds = list(streamed.types)
    columns = streamed.columns
    rows = 0
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        # To a terminal, control characters are escaped (a red team's resource held ESC
        # sequences that retitled and cleared it), in the header too, which a query's own
        # `AS "…"` names (a review); to a file or a pipe, the values as stored.
        safe = (lambda text: printable(text, None)) if sys.stdout.isatty() else _as_is
        writer.writerow([safe(c) for c in columns])
        for batch in streamed.batches:
            writer.writerows(
                [[safe(_csv_text(v, k)) for v, k in zip(r, kinds, strict=True)] for r in batch]
            )
            rows += len(batch)
            written[0] = rows
        return rows
    if as_json:  # one JSON document, as print_json writes it, a row at a time
        columns = distinct_names(columns)
        for batch in streamed.batches:
            for row in batch:
                item = to_jsonable(
                    {c: _cell(v, k) for c, v, k in zip(columns, row, kinds, strict=True)}
                )
                text = json.dumps(item, indent=2).replace("\n", "\n  ")
                sys.stdout.write(("[\n  " if rows == 0 else ",\n  ") + text)
                rows += 1
                written[0] = rows
        sys.stdout.write("[]\n" if rows == 0 else "\n]\n")
        return rows
    from ledger.audit.sql import Result

    shown: list[tuple[Any, ...]] = []
    for batch in streamed.batches:
        shown.extend(batch[: max(0, TABLE_ROWS - len(shown))])
        rows += len(batch)
    _print_table(Result(columns, shown, tuple(kinds)), kinds, total=rows)
    return rows


def _print_table(result: Any, kinds: Sequence[str], *, total: int) -> None:
    """A table of the rows shown (--csv and --json are streamed by :func:`_emit_rows`)."""
    rows = [[_cell(v, k) for v, k in zip(row, kinds, strict=True)] for row in result.rows]
    if len(rows) == 1 and len(result.columns) > _WIDE:
        # One row of many columns (decision_lineage's 25) is a wall as a table: a column a line.
        print_table(
            ["column", "value"],
            [[c, _text(v)] for c, v in zip(result.columns, rows[0], strict=True)],
        )
        click.echo("1 row(s), shown a column a line", err=True)
    else:
        print_table(result.columns, [[_text(v) for v in row] for row in rows])
        if total > len(rows):
            click.echo(
                f"{total} row(s): the first {len(rows)} shown (--csv or --json prints them all)",
                err=True,
            )
        else:
            click.echo(f"{len(rows)} row(s)", err=True)


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handle_errors
def list_queries(as_json: bool) -> None:
    """The named queries: name, the question each answers, its parameters."""
    from ledger.audit.sql import named_queries

    queries = named_queries()
    if as_json:
        print_json(
            [
                {
                    "name": q.name,
                    "question": q.question,
                    "params": [
                        {"name": p.name, "type": p.type, "description": p.description}
                        for p in q.params
                    ],
                }
                for q in queries.values()
            ]
        )
        return
    print_table(
        ["name", "question", "parameters"],
        [
            [q.name, q.question, Lines(f"{p.name} {p.type}: {p.description}" for p in q.params)]
            for q in queries.values()
        ],
    )


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    given: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param {pair!r} is not name=value")
        if name.strip() in given:
            raise UsageError(f"--param {name.strip()} is given twice")
        given[name.strip()] = value
    return given


@group.command("run")
@click.argument("name")
@click.option("--param", "pairs", multiple=True, metavar="NAME=VALUE", help="A parameter.")
@_from_export
@_format_options
@handle_errors
def run(
    name: str, pairs: tuple[str, ...], source: Path | None, as_json: bool, as_csv: bool
) -> None:
    """Run the named query NAME (`ledger audit list` shows them) with its parameters.

    Example: ledger audit run active_policies_at --param at=2026-11-26T16:48:26Z
    """
    from ledger.audit.sql import connect, named_query, parse_params, stream_named, unknown_values

    _one_format(as_json, as_csv)
    query = named_query(name)
    values = parse_params(
        query, _params(pairs)
    )  # bad parameters are told before the export is opened
    directory = _source(source)
    con = connect(directory, read_only=True)
    try:
        rows = _emit(stream_named(con, name, _params(pairs)), as_json, as_csv)
        notes = [] if rows else unknown_values(con, query, values) + _before_history(con, values)
    finally:
        con.close()
    notes += _after_reading(directory, query, values)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    note_incomplete(directory)


def _before_history(con: Any, values: dict[str, Any]) -> list[str]:
    """A note when a query's instant (``at``) that answered nothing lies before the export's
    first governance event (an auditor's walkthrough: `active_policies_at` said nothing there,
    where `ledger replay --at` says nothing was active or granted yet)."""
    at = values.get("at")
    if not isinstance(at, datetime):
        return []
    row = con.execute(
        "SELECT min(t) FROM (SELECT min(occurred_at) AS t FROM topic_policy_events "
        "UNION ALL SELECT min(occurred_at) FROM topic_grant_events)"
    ).fetchone()
    first = row[0] if row else None
    if not isinstance(first, datetime) or at >= first:
        return []
    return [
        f"at {format_timestamp(at)} is before the first governance event "
        f"({format_timestamp(first)}): nothing was active or granted yet"
    ]


def _after_reading(directory: Path, query: Any, values: dict[str, Any]) -> list[str]:
    """A note for each time parameter after the export read the ledger (an auditor's
    walkthrough: `active_policies_at` a day past the export answered as if nothing had changed
    since, where `ledger replay --at` says what the export cannot know)."""
    from ledger.audit.manifest import read_manifest

    manifest = read_manifest(directory)
    read_at = manifest.read_instant() if manifest is not None else None
    if read_at is None:
        return []
    return [
        f"the export at {directory} read the ledger at {format_timestamp(read_at)}: what "
        f"changed after that, up to `{param.name}` ({format_timestamp(value)}), is not in it "
        "(export again for the ledger's state since)"
        for param in query.params
        if isinstance(value := values.get(param.name), datetime) and value > read_at
    ]


@group.command("sql")
@click.argument("statement", nargs=-1, required=True)
@_from_export
@_format_options
@handle_errors
def sql(statement: tuple[str, ...], source: Path | None, as_json: bool, as_csv: bool) -> None:
    """Run one read-only SELECT over the views (statements that write, attach, copy, install,
    load or set options are refused).

    Example: ledger audit sql "SELECT determination, count(*) FROM decisions GROUP BY 1"
    """
    from ledger.audit.sql import connect, stream_sql

    if len(statement) > 1:
        # An auditor's walkthrough: `audit sql -- "$(cat q.sql)" --from exp` was told only
        # "Got unexpected extra arguments (--from exp)".
        after = " ".join(statement[1:])
        raise UsageError(
            f"one SQL statement, quoted, is expected; {clipped(after, 60)!r} came after it: "
            'options go before it (`ledger audit sql --from DIR -- "$(cat q.sql)"`), and '
            "SQL of several words goes in quotes"
        )
    _one_format(as_json, as_csv)
    directory = _source(source)
    con = connect(directory, read_only=True)
    try:
        _emit(stream_sql(con, statement[0]), as_json, as_csv)
    finally:
        con.close()
    note_incomplete(directory)


@group.command("shell")
@_from_export
@handle_errors
def shell(source: Path | None) -> None:
    """Open the DuckDB CLI (`duckdb`, if on the PATH: pip install duckdb-cli) with the views
    defined; without it, a SQL prompt over the views (read-only, as `audit sql`: end each
    statement with `;`; `.tables` lists the views, `.python` opens Python with `con`, a DuckDB
    connection with the views, `.quit` or Ctrl-D ends it).

    The DuckDB CLI is yours: unlike `audit sql` it is not read-only.
    """
    from ledger.audit.sql import base_views_sql, connect, views_sql

    directory = _source(source)
    base, _files = base_views_sql(directory)
    cli = shutil.which("duckdb")
    if cli is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as init:
            init.write("SET TimeZone = 'UTC';\n" + base + "\n" + views_sql())
        click.echo(f"DuckDB over {directory}: the views are defined (try `.tables`)", err=True)
        raise SystemExit(_run_shell([cli, "-init", init.name], init.name))
    con = connect(directory, read_only=True)  # as `audit sql`'s: no file outside the export
    try:
        _sql_prompt(con, directory)
    finally:
        con.close()


def _sql_prompt(con: Any, directory: Path) -> None:
    """A SQL prompt over ``con`` for an auditor without the DuckDB CLI (an auditor's
    walkthrough: the Python prompt it opened answered SQL with `SyntaxError`): statements end
    with ``;``, each answered as `audit sql` answers it (read-only, text escaped), an error in
    one line, and the prompt goes on."""
    from ledger.audit.sql import stream_sql

    click.echo(
        f"SQL over {directory} (no `duckdb` CLI on the PATH): the audit views, read-only; end "
        "each statement with `;`. `.tables` lists the views, `.python` opens Python with `con`, "
        "`.quit` or Ctrl-D ends.",
        err=True,
    )
    pending: list[str] = []
    while True:
        try:
            line = input("sql> " if not pending else "...> ")
        except EOFError:
            click.echo("", err=True)
            return
        except KeyboardInterrupt:  # drops the statement being written, as a shell does
            click.echo("", err=True)
            pending = []
            continue
        command = line.strip()
        if not pending and command in (".quit", ".exit"):
            return
        if not pending and command == ".python":
            _python_prompt(con, directory)
            continue
        if not pending and command == ".tables":
            line = "SELECT table_name AS view FROM information_schema.tables ORDER BY 1;"
        pending.append(line)
        statement = "\n".join(pending).strip()
        if not statement.endswith(";"):
            if not statement:
                pending = []
            continue
        pending = []
        try:
            _emit(stream_sql(con, statement.rstrip(";").strip()), False, False)
        except KeyboardInterrupt:
            click.echo("(interrupted)", err=True)
        except Exception as exc:  # one statement's failure; the prompt goes on
            click.echo(f"error: {printable(str(exc) or repr(exc), one_line=True)}", err=True)


def _python_prompt(con: Any, directory: Path) -> None:
    import code

    banner = (
        f"Python with `con`, a DuckDB connection over {directory} with the audit views.\n"
        'Try: con.sql("SELECT determination, count(*) FROM decisions GROUP BY 1").show()\n'
        "Values print as stored, control characters an agent sent included: look at requests' "
        "text with `ledger audit sql`, which escapes them. Ctrl-D goes back to SQL."
    )
    code.interact(banner=banner, local={"con": con}, exitmsg="")


def _run_shell(argv: list[str], init: str) -> int:
    """Run the DuckDB CLI in this terminal and remove its ``init`` file after (a red team
    found one left per run when this process became the shell): Ctrl-C and Ctrl-\\ are the
    shell's (the terminal sends them to both; Ctrl-C cancels a query there, as before), a
    SIGTERM or SIGHUP (the terminal closed) to this process is passed on, and the exit status
    is the shell's (128 + N when signal N ended it)."""
    theirs = (signal.SIGINT, signal.SIGQUIT)

    def child_setup() -> None:
        for sig in theirs:
            signal.signal(sig, signal.SIG_DFL)  # the shell installs its own

    started: list[subprocess.Popen[bytes]] = []
    early: list[int] = []  # a SIGTERM or SIGHUP before the child was there to pass it to

    def pass_on(got: int, _frame: Any) -> None:
        if started:
            started[0].send_signal(got)
        else:
            early.append(got)

    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in theirs}  # before the child runs
    for sig in (signal.SIGTERM, signal.SIGHUP):  # a review: a closed terminal left the file
        # Before the child runs too: one it sends at once must not find this process's default.
        before[sig] = signal.signal(sig, pass_on)
    try:
        child = subprocess.Popen(argv, preexec_fn=child_setup)
    except BaseException:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        os.unlink(init)
        raise
    started.append(child)
    for got in early:
        child.send_signal(got)
    try:
        code = child.wait()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        os.unlink(init)
    return 128 - code if code < 0 else code
