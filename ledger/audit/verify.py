"""``ledger audit verify``: recompute the decision hash chains over an export (DESIGN §9).

The scheme (:mod:`ledger.core.chain`, documented in the README for third parties): each
record on the decisions topic belongs to its writer's chain (``chain_id``), numbered
``chain_seq`` 1, 2, 3 …; ``hash`` is ``"sha256:"`` + SHA-256 of the canonical JSON of every
other field; ``prev_hash`` is the previous record's ``hash`` (``null`` for the first). Chain
checkpoints (``ledger.chain-checkpoints``) give a chain's head ``chain_seq`` and hash.

Verification works **from the columns analysts query**: each decision row's JSON form is rebuilt
from its columns (typed columns back to their JSON form, JSON columns parsed), hashed, and
checked against its ``hash``; the row's raw ``record`` must decode to that same JSON form; then
each chain is followed by ``chain_seq`` (reading rows back into records is
:mod:`ledger.audit.columns`; following one chain, :mod:`ledger.audit.chainwalk`). It reports,
first in time first:

- **altered** — a row whose columns do not hash to its ``hash``, whose record bytes disagree
  with its columns, or whose successor (or a checkpoint) vouches for another hash;
- **missing** — a gap in a chain's ``chain_seq``, a chain that does not start at 1, records
  a checkpoint vouches for that are not there (deleting the newest records), or checkpoints
  (a chain decided for longer than :data:`CHECKPOINT_SLACK` after a record none vouches for,
  in a complete export);
- **inserted** — two records with one ``chain_seq``, or records after a chain's final
  checkpoint;
- **reordered** — a chain's records in one partition out of ``chain_seq`` order (a writer
  writes its chain in order);
- **unchained** — a decision in no chain (written before chains existed, or forged);
  accepted with ``allow_unchained``.

Beyond the chains, what the export's other records say it must hold (named queries, the one
place for each rule, run over the views): every request received a minute before the export
read the topics answered by a decision or a dead letter (``requests_unanswered``: the decisions
deleted, folders and manifest entries alike, or an evaluator down), every governance record
a decision cites present (``governance_cited_missing``: the newest grant revocation deleted,
with the manifest's offsets lowered), and every governance event an accepted command's answer
names present (``governance_answered_missing``: the same, before any decision cites it); each
is **missing**. None is checked in an export
whose last run stopped part-way: its topics end at different points. When the export read the
topics is the manifest's word, bounded below by the broker's stamp on the newest request: a
request stamped more than :data:`CLOCK_SLACK` after ``read_at`` is **altered** (the manifest).

Kafka coordinates and timestamps are assigned by the broker and not covered by the hash.
Records after a chain's last checkpoint are *unconfirmed*: intact as far as the chain shows,
but deleting them would not be detected (a checkpoint follows within about a second).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, cast

from ledger.audit import query_memory, use_query_memory
from ledger.audit.chainwalk import (
    ChainCheckpoint,
    ChainNode,
    ChainSummary,
    ChainWalk,
    Problem,
)
from ledger.audit.columns import (
    COORDINATES,
    FORMS,
    TEXTS,
    Mismatch,
    Slow,
    Unreadable,
    batch_columns,
    columns_disagree,
    differing,
    python_rows,
    show,
    shown_apart,
)
from ledger.audit.export import ExportPath, Manifest
from ledger.audit.folder import writer_at
from ledger.audit.footer import FooterProblem, footer_lie
from ledger.audit.manifest import listed_file, path_parts
from ledger.audit.rows import TopicFormat, topic_formats
from ledger.audit.sources import (
    READ_PARQUET,
    connect,
    export_dir,
    read_export_manifest,
    resolve_topics,
    topic_files,
)
from ledger.audit.sql import first_line
from ledger.audit.writer import span_union
from ledger.codec import Codec, default_codec
from ledger.core.chain import (
    CHAINED_TYPES,
    canonical_text,
    form_hashes,
    form_text,
    hashed_text,
    text_hash,
)
from ledger.core.history import log_gaps
from ledger.core.jsonform import format_timestamp, parse_instant, to_json_value
from ledger.core.text import clipped
from ledger.errors import CodecError, ExportError

__all__ = [
    "KINDS",
    "Problem",
    "ChainSummary",
    "VerifyReport",
    "verify_export",
]

KINDS: Final = ("altered", "missing", "inserted", "reordered", "unchained")
_RANK: Final = {kind: rank for rank, kind in enumerate(KINDS)}

_KEEP_PROBLEMS: Final = 1000  # details kept; every problem is counted
ANSWER_GRACE: Final = timedelta(minutes=1)
"""A request must have been received this long before the export read the topics to be
expected answered in it: an evaluator answers within milliseconds, but the newest requests'
decisions may have been written after the export read the decisions topic."""
CLOCK_SLACK: Final = timedelta(minutes=5)
"""How far behind the broker's clock the exporting machine's may be before a request the broker
stamped after the manifest's ``read_at`` is taken for an altered manifest."""
CHECKPOINT_SLACK: Final = timedelta(minutes=10)
"""How long a chain's writer may go on deciding after a decision before the export must hold
a checkpoint vouching for it. An evaluator publishes its chain's head after every 1,000
decisions and after each second with decisions (``processors.request_loop``), once the broker
has acknowledged them, and a checkpoint it cannot write stops it: at the latest when the
producer gives up on it, librdkafka's ``message.timeout.ms`` (5 minutes), while its decisions,
on other partitions, may go on being written. An export reads the checkpoints' end offset
just before the decisions'. So in an honest complete export a chain's records after its last
checkpoint were decided within about 5 minutes of its newest, at any rate of decisions;
twice that leaves room for a slow export and the evaluator's clock being stepped. Deleting
the checkpoints of less than this of a chain's newest decisions is not detected."""
_BATCH_ROWS: Final = 4096
_LAST: Final = "9999-12-31 23:59:59.999999+00"  # past it, a time is no datetime (Unreadable)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    export_dir: str
    decisions_topic: str
    records: int
    checkpoints: int
    unchained: int
    chains: tuple[ChainSummary, ...]
    problems: tuple[Problem, ...]
    problem_count: int
    seconds: float
    complete: bool = True
    """Whether the export's last run finished (False: its topics end at different points, so
    what is missing may only be not yet exported: export again, then verify)."""
    unverified_files: int = 0
    """Data files not in the manifest verified that an export run wrote while it ran (its
    manifest lists them now, or it still holds the export's lock: a flush in progress): not
    verified, and not taken for inserted files."""
    writer_running: bool = False
    """Whether an export run held the directory's lock while it was verified."""
    writer_pid: int | None = None
    """That run's process id, when its lock file says."""
    beyond_interruption: bool = False
    """Whether a problem found is one no export stopped part-way leaves (see
    :func:`_left_by_interruption`): tampering, whatever the manifest says of the last run."""
    recent: int = 0
    """Requests and decisions the broker received within :data:`ANSWER_GRACE` of the export's
    read: not held to their answers, corrections and requests (a later export checks them; an
    auditor's walkthrough: an export verified at once read "intact" with none of those checks
    applied, and said nothing of it)."""
    decided_again: int = 0
    """Request ids answered more than once (a retry decided again, or a copy of a request
    someone holding the agent credential wrote under its id): not a problem of the export, but
    said (a red team: 939 such ids, "intact" and no word); ``requests_decided_twice`` lists
    each answer."""

    @property
    def intact(self) -> bool:
        return self.problem_count == 0

    @property
    def unconfirmed(self) -> int:
        return sum(c.unconfirmed for c in self.chains)


# --------------------------------------------------------------------------- the export


def _batches(con: Any, files: list[str], order: str) -> Iterator[Any]:
    import duckdb

    try:
        relation = con.sql(f"SELECT * FROM {READ_PARQUET} {order}", params=[files])
        yield from relation.to_arrow_reader(_BATCH_ROWS)
    except duckdb.Error as exc:
        # One line (a red team: DuckDB's "Possible solutions" list came out as literal \n's).
        more = " (set $LEDGER_AUDIT_MEMORY higher: 8GiB)" if "Out of Memory" in str(exc) else ""
        raise ExportError(f"reading the export: {first_line(exc)}{more}") from exc


def _rows(con: Any, files: list[str], order: str) -> Iterator[dict[str, Any]]:
    for batch in _batches(con, files, order):
        yield from python_rows(batch)  # a time past year 9999: an Unreadable, not a traceback


def _rows_in_log_order(con: Any, files: list[str]) -> Iterator[dict[str, Any]]:
    """The rows of ``files`` by partition and offset, a file at a time in the order it was
    written: no sort of a whole topic's rows, record bytes and all, which held a topic of
    1,000 records of 1 MB (a red team's flood of dead letters) past 4 GiB (out of memory)."""
    for path in sorted(files, key=_log_order):
        yield from _rows(con, [path], "")


def _log_order(path: str) -> tuple[int, int, str]:
    """(partition, first offset, path) of an export file named as the exporter names it
    (``TOPIC+PARTITION+FIRST[~LAST].parquet``); another name sorts last, by its path."""
    name = os.path.basename(path).removesuffix(".parquet")
    parts = name.rsplit("+", 2)
    partition, first = (parts[1], parts[2].partition("~")[0]) if len(parts) == 3 else ("", "")
    if partition.isdigit() and first.isdigit():
        return int(partition), int(first), path
    return 2**63, 2**63, path


def _stamp(row: Mapping[str, Any]) -> datetime | None:
    at = row.get("kafka_timestamp")
    return at if isinstance(at, datetime) else None


def _bad_stamp(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """(found, expected) for a row whose Kafka timestamp no datetime holds: the broker's time
    never is, so the file was altered."""
    at = row.get("kafka_timestamp")
    if not isinstance(at, Unreadable):
        return None
    return f"its kafka_timestamp holds {at}", "the time the broker stamped on its record"


_Checked = tuple[dict[str, Any] | None, str, int, int, datetime | None]
"""(the row's chain fields if it is intact, else None; topic, partition, offset, Kafka time)"""


def _checked_decisions(
    con: Any, files: list[str], rows: _Rows, part: int = 0, parts: int = 1
) -> Iterator[_Checked]:
    """The decision rows of this part's chains in chain order, checked: the fast path, else
    the slow one."""
    decode = rows.codec.decode
    share = (
        ""
        if parts == 1
        else f"WHERE (chain_id IS NULL AND {part} = 0) "
        f"OR (chain_id IS NOT NULL AND hash(chain_id) % {parts} = {part}) "
    )
    order = share + 'ORDER BY chain_id NULLS FIRST, chain_seq, "partition", "offset"'
    for batch in _batches(con, files, order):
        cols = batch_columns(batch)
        n = batch.num_rows
        nothing: list[Any] = [None] * n
        shapes = {
            name: (
                texts,
                tuple(cols.get(f, nothing) for f in texts.fields),
                [cols[c] for c in cols if c not in texts.names and c not in COORDINATES],
            )
            for name, texts in TEXTS.items()
        }
        kinds, records, keys = cols["event_type"], cols["record"], cols.get("key", nothing)
        hashes, chain_ids = cols.get("hash", nothing), cols.get("chain_id", nothing)
        for i in range(n):
            at = cols["kafka_timestamp"][i]
            where = (
                cols["topic"][i],
                cols["partition"][i],
                cols["offset"][i],
                at if isinstance(at, datetime) else None,
            )
            shape = shapes.get(kinds[i] or "")
            form: dict[str, Any] | None = None
            if shape is not None:
                texts, columns, foreign = shape
                try:
                    if any(column[i] is not None for column in foreign):
                        raise Slow
                    text = texts.text(columns, i)
                    record = records[i]
                    if not isinstance(record, bytes):
                        raise Slow
                    decoded = decode(record)
                    if type(decoded) is not texts.cls:
                        raise Slow
                    event = cast(Any, decoded)
                    if canonical_text(event) != text:
                        raise Slow
                    digest = hashes[i]
                    if event.hash != digest or keys[i] != event.request_id:
                        raise Slow
                    if (
                        not (digest is None and chain_ids[i] is None)
                        and text_hash(text) != digest
                        and text_hash(hashed_text(event)) != digest  # a late field left out
                    ):
                        raise Slow
                    form = {
                        "chain_id": event.chain_id,
                        "chain_seq": event.chain_seq,
                        "prev_hash": event.prev_hash,
                        "hash": digest,
                        "event_id": event.event_id,
                        "evaluator_id": event.evaluator_id,
                        "occurred_at": event.occurred_at,
                    }
                except (Slow, CodecError):
                    form = None
            if form is None or isinstance(at, Unreadable):  # find out, and say, what is wrong
                form = rows.check(python_rows(batch.slice(i, 1))[0], chained=True)
            yield (form, *where)


@dataclass
class _Rows:
    """Checks each row's columns against its hash and its record; counts and keeps problems."""

    codec: Codec
    problems: list[tuple[Problem, tuple[int, int] | None]] = field(default_factory=list)
    """Each problem, with the chain_seq range it says is missing (for a gap)."""
    covered: set[tuple[str | None, int | None]] = field(default_factory=set)
    """Chain positions taken by rows reported as altered."""

    def report(self, problem: Problem, gap: tuple[int, int] | None = None) -> None:
        self.problems.append((problem, gap))

    def row_problem(self, row: Mapping[str, Any], found: str, expected: str) -> Problem:
        return Problem(
            kind="altered",
            chain_id=row.get("chain_id"),
            chain_seq=row.get("chain_seq"),
            topic=row.get("topic"),
            partition=row.get("partition"),
            offset=row.get("offset"),
            decision_id=row.get("event_id"),
            found=found,
            expected=expected,
            at=_stamp(row),
            subject="checkpoint" if row.get("event_type") == "ChainCheckpoint" else "decision",
        )

    def check(self, row: Mapping[str, Any], *, chained: bool) -> dict[str, Any] | None:
        """The row's JSON form if it is intact, else ``None`` (and a problem reported)."""
        record = row.get("record")
        event: Any = None
        undecodable = "no record bytes"
        if isinstance(record, bytes):
            try:
                event = self.codec.decode(record)
            except CodecError as exc:
                undecodable = str(exc)
        form = self._check(row, event, undecodable, chained=chained)
        if form is None and chained:
            # The chain positions this altered row takes, by its columns and by its record:
            # the gap its absence leaves in the chain is not reported a second time.
            self.covered.add((row.get("chain_id"), row.get("chain_seq")))
            if event is not None:
                self.covered.add(
                    (getattr(event, "chain_id", None), getattr(event, "chain_seq", None))
                )
        return form

    def _check(
        self, row: Mapping[str, Any], event: Any, undecodable: str, *, chained: bool
    ) -> dict[str, Any] | None:
        bad_stamp = _bad_stamp(row)
        if bad_stamp is not None:
            self.report(self.row_problem(row, *bad_stamp))
            return None
        shape = FORMS.get(row.get("event_type") or "")
        if shape is None or (chained and shape.cls not in CHAINED_TYPES):
            self.report(
                self.row_problem(
                    row,
                    f"event_type {show(row.get('event_type'))} on this topic",
                    "a " + " or ".join(c.__name__ for c in CHAINED_TYPES)
                    if chained
                    else "a ChainCheckpoint",
                )
            )
            return None
        if event is None:
            self.report(
                self.row_problem(
                    row, f"its record bytes do not decode ({undecodable})", "a ledger record"
                )
            )
            return None
        try:
            form = shape.build(row)
        except Mismatch as exc:
            self.report(self.row_problem(row, str(exc), "the field's JSON form (export spec)"))
            return None
        if type(event) is not shape.cls:
            self.report(
                self.row_problem(
                    row,
                    f"the record bytes hold a {type(event).__name__}",
                    f"a {shape.cls.__name__}, as event_type says",
                )
            )
            return None
        if not chained:
            record_form = to_json_value(event)
            if record_form != form:
                names = differing(form, record_form)
                pairs = [shown_apart(form.get(n), record_form.get(n)) for n in names]
                self.report(
                    self.row_problem(
                        row,
                        "columns "
                        + ", ".join(f"{n}={c}" for n, (c, _) in zip(names, pairs, strict=True))
                        + " differ from the record bytes",
                        ", ".join(f"{n}={r}" for n, (_, r) in zip(names, pairs, strict=True)),
                    )
                )
                return None
            return form
        body = form_text(form)
        digest = text_hash(body)
        if canonical_text(event) != body or getattr(event, "hash", None) != form.get("hash"):
            record_form = to_json_value(event)
            names = differing(form, record_form) or ["hash"]
            columns_match_hash = form.get("hash") in form_hashes(form)
            pairs = [shown_apart(form.get(n), record_form.get(n)) for n in names]
            columns = ", ".join(f"{n}={c}" for n, (c, _) in zip(names, pairs, strict=True))
            records = ", ".join(f"{n}={r}" for n, (_, r) in zip(names, pairs, strict=True))
            if columns_match_hash:
                found = "the record bytes hold " + records
                expected = columns + " (the columns, which match the chain's hash)"
            else:
                found = "columns " + columns
                expected = records + (
                    " (the record bytes)"
                    + (", which match the chain's hash" if _self_consistent(event) else "")
                )
            self.report(self.row_problem(row, found, expected))
            return None
        if form.get("hash") is None and form.get("chain_id") is None:
            return form  # outside every chain: the caller decides
        if digest != form.get("hash") and form.get("hash") not in form_hashes(form):
            self.report(
                self.row_problem(
                    row,
                    f"its fields hash to {digest}, but its hash field says {form.get('hash')}",
                    "the hash of its fields (record and columns were both rewritten)",
                )
            )
            return None
        if row.get("key") != form.get("request_id"):
            self.report(
                self.row_problem(
                    row,
                    f"key {show(row.get('key'))}",
                    f"the request id {show(form.get('request_id'))}",
                )
            )
            return None
        return form


def _decided(value: Any) -> datetime | None:
    """A decision's ``occurred_at`` as its form holds it (a datetime, or its JSON text)."""
    if isinstance(value, datetime):
        return value
    try:
        return parse_instant(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _self_consistent(event: Any) -> bool:
    return getattr(event, "hash", None) in form_hashes(to_json_value(event))


def _load_checkpoints(con: Any, files: list[str], rows: _Rows) -> dict[str, list[ChainCheckpoint]]:
    found: dict[str, list[ChainCheckpoint]] = {}
    if not files:
        return found
    for row in _rows(con, files, 'ORDER BY "partition", "offset"'):
        form = rows.check(row, chained=False)
        if form is None:
            continue
        found.setdefault(form["chain_id"], []).append(
            ChainCheckpoint(
                seq=form["chain_seq"],
                head_hash=form["head_hash"],
                final=bool(form["final"]),
                topic=row["topic"],
                partition=row["partition"],
                offset=row["offset"],
                evaluator_id=form.get("evaluator_id") or "",
            )
        )
    return found


@dataclass
class _Part:
    """What one worker found in its share of the chains."""

    records: int
    unchained: int
    chains: list[ChainSummary]
    problems: list[tuple[Problem, tuple[int, int] | None]]
    covered: set[tuple[str | None, int | None]]


def _verify_part(
    files: list[str],
    marks: dict[str, list[ChainCheckpoint]],
    allow_unchained: bool,
    part: int,
    parts: int,
    codec: Codec | None = None,
    slack: timedelta | None = None,
    memory: str | None = None,
) -> _Part:
    """Check the decision rows of the chains whose id hashes to ``part`` (of ``parts``; rows
    outside every chain go to part 0) and follow those chains. ``memory``: the process's
    :func:`ledger.audit.query_memory`, for a worker spawned afresh (a review: the spawned
    workers held DuckDB to its default, whatever `$LEDGER_AUDIT_MEMORY` said)."""
    if memory is not None:
        use_query_memory(memory)
    rows = _Rows(codec or default_codec())
    chains: list[ChainSummary] = []
    records = unchained = 0
    walk: ChainWalk | None = None
    con = connect()
    try:
        for form, topic, partition, offset, at in _checked_decisions(con, files, rows, part, parts):
            records += 1
            if form is None:
                continue
            chain_id, seq = form.get("chain_id"), form.get("chain_seq")
            if chain_id is None or seq is None:
                unchained += 1
                if not allow_unchained:
                    rows.report(
                        Problem(
                            kind="unchained",
                            topic=topic,
                            partition=partition,
                            offset=offset,
                            decision_id=form.get("event_id"),
                            found="a decision in no hash chain (no chain_id/chain_seq)",
                            expected="every decision in its writer's chain (decisions written "
                            "before chains existed pass with --allow-unchained)",
                            at=at,
                        )
                    )
                continue
            if walk is None or walk.chain_id != chain_id:
                if walk is not None:
                    chains.append(walk.finish())
                walk = ChainWalk(chain_id, marks.get(chain_id, []), rows.report, slack)
            walk.add(
                ChainNode(
                    seq=seq,
                    prev_hash=form.get("prev_hash"),
                    hash=form.get("hash"),
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    decision_id=form.get("event_id"),
                    at=at,
                    evaluator_id=form.get("evaluator_id"),
                    decided=_decided(form.get("occurred_at")),
                )
            )
        if walk is not None:
            chains.append(walk.finish())
    finally:
        con.close()
    return _Part(records, unchained, chains, rows.problems, rows.covered)


_PARALLEL_FROM: Final = 50_000
"""Decision rows from which verification spreads the chains over worker processes."""


def _in_file(problem: Problem, manifest: Manifest) -> Problem:
    """``problem``, an altered row, with the manifest's file that holds it (an auditor's
    walkthrough: a tampered row was named by its Kafka coordinates, and the file to look at
    had to be found through the manifest by hand)."""
    if problem.kind != "altered" or problem.topic is None or problem.offset is None:
        return problem
    for entry in manifest.files:
        if (
            entry.get("topic") == problem.topic
            and entry.get("partition") == problem.partition
            and entry.get("first_offset", 0) <= problem.offset <= entry.get("last_offset", -1)
        ):
            return replace(problem, file=str(entry.get("path")))
    return problem


def verify_export(
    path: ExportPath,
    *,
    allow_unchained: bool = False,
    codec: Codec | None = None,
    workers: int | None = 1,
) -> VerifyReport:
    """Verify every decision chain in the export at ``path`` (a str or any path-like; see the
    module docstring).

    Chains are independent: with ``workers`` > 1 they are shared among that many processes
    (spawned: the caller's main module must be importable, as it is for the ``ledger`` command
    and scripts guarded by ``if __name__ == "__main__"``), each taking the chains whose id
    hashes to its share. ``None``: one per CPU, up to 4, from 50,000 decision rows.
    """
    started = time.perf_counter()
    directory = export_dir(path)
    topics = resolve_topics(directory)  # the export's own prefix, from its manifest
    rows = _Rows(codec or default_codec())
    con = connect()
    running = writer_at(directory)  # before the manifest: see _unlisted_files
    unverified = 0
    try:
        # One reading of the manifest for the files and their offsets: a `--follow` export
        # rewrites it every few seconds, and files of one version checked against the offsets
        # of a later one would look like deleted rows.
        manifest = read_export_manifest(directory)
        # A listed file deleted or damaged is evidence, not a tool error: reported as missing
        # or altered (exit 11), and the rest is verified without it.
        recorded = (
            topics.evaluation_requests,
            topics.corrections,
            topics.commands,
            topics.command_results,
            topics.dead_letters,
        )
        governance = (topics.policy_events, topics.grant_events)
        broken, lies = _broken_files(
            con,
            directory,
            manifest,
            {topics.decisions, topics.chain_checkpoints, *recorded, *governance},
        )
        for problem in [*broken.values(), *lies]:
            rows.report(problem)
        unlisted = _unlisted_files(directory, manifest)
        if unlisted:
            running = running or writer_at(directory)
            listed_since = set() if running else _listed(read_export_manifest(directory))
            for relative in unlisted:
                if relative in listed_since or (running and _in_flight(relative, manifest)):
                    unverified += 1
                else:
                    rows.report(_inserted_file(relative))
        # Each file holds what its manifest entry says (an auditor's walkthrough: a requests
        # file overwritten with another, or with a row deleted, passed: the requests topic has
        # no chain, and retention may leave gaps in its offsets).
        unlike = _files_unlike_manifest(con, directory, manifest, broken, recorded)
        # The chained and gapless topics say themselves where a row went, but not that a
        # whole file was swapped with another partition's (an auditor's walkthrough: two
        # decisions files swapped read "intact", where two requests files swapped did not).
        chained = (topics.decisions, topics.chain_checkpoints, *governance)
        unlike |= _files_unlike_manifest(
            con, directory, manifest, broken, chained, partition_only=True
        )
        for problem in unlike.values():
            rows.report(problem)
        for topic in recorded:  # a file already unlike its entry is not told twice
            holes = _holes_in_files(con, directory, manifest, {**broken, **unlike}, topic)
            for path, problem in holes.items():
                if path not in unlike:
                    rows.report(problem)
        # The topics with no chain: each row's columns held to its own record bytes (what SQL
        # shows of a request must be what replay re-decides), and the governance logs' too (an
        # auditor's walkthrough: an approval's actor edited in its column read "intact" here,
        # and only `actor verify` saw it).
        formats = topic_formats(topics)
        for topic in (*recorded, *governance):
            for problem in _rows_unlike_records(
                con,
                topic_files(directory, topic, manifest, exclude=broken),
                rows.codec,
                formats[topic],
            ):
                rows.report(problem)
        checkpoint_files = topic_files(
            directory, topics.chain_checkpoints, manifest, exclude=broken
        )
        marks = _load_checkpoints(con, checkpoint_files, rows)
        files = topic_files(directory, topics.decisions, manifest, exclude=broken)
        total = _count(con, files)
        offset_problems = [
            problem
            for topic, listed in (
                (topics.decisions, files),
                (topics.chain_checkpoints, checkpoint_files),
            )
            for problem in _offset_problems(con, topic, listed, manifest)
        ]
        governance_gaps = [
            gap
            for topic in governance
            for gap in _log_gaps(
                con, topic, topic_files(directory, topic, manifest, exclude=broken), manifest
            )
        ]
    finally:
        con.close()
    for problem, _ in governance_gaps:  # before what the decisions citing them say
        rows.report(problem)
    recent = decided_again = 0
    if manifest.complete:
        found, recent, decided_again = _unanswered_or_uncited(directory, manifest, broken)
        for problem in found:
            rows.report(problem)
    # Checkpoints are held to the decisions they follow only in a complete export: one
    # stopped part-way may have read the checkpoints less far than the decisions.
    slack = CHECKPOINT_SLACK if manifest.complete else None
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if total >= _PARALLEL_FROM else 1
    parts: list[_Part] = []
    if not files:
        pass
    elif workers <= 1:
        parts.append(_verify_part(files, marks, allow_unchained, 0, 1, rows.codec, slack))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: DuckDB's threads do not survive a fork.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(
                    _verify_part,
                    files,
                    marks,
                    allow_unchained,
                    k,
                    workers,
                    None,
                    slack,
                    query_memory(),
                )
                for k in range(workers)
            ]
            parts = [f.result() for f in futures]
    chains = sorted((c for part in parts for c in part.chains), key=lambda c: c.chain_id)
    for part in parts:
        rows.problems.extend(part.problems)
        rows.covered |= part.covered
    # A decision row gone from between others is reported by its chain, with its chain_seq
    # (a chain spans partitions: the gap's partition is not the one named); the offsets tell it
    # only when no chain reported a gap (an unchained decision's row).
    chained_gap = any(p.kind == "missing" and p.chain_id for p, _ in rows.problems)
    for problem, inner in offset_problems:
        if not (
            inner
            and problem.kind == "missing"
            and chained_gap
            and problem.topic == topics.decisions
        ):
            rows.report(problem)
    seen = {c.chain_id for c in chains}
    for chain_id, cps in sorted(marks.items()):
        if chain_id in seen:
            continue
        cp = max(cps, key=lambda c: c.seq)
        rows.report(
            Problem(
                kind="missing",
                chain_id=chain_id,
                chain_seq=cp.seq,
                topic=cp.topic,
                partition=cp.partition,
                offset=cp.offset,
                found="a checkpoint of a chain none of whose records is in the export",
                expected=f"the chain's records chain_seq 1 to {cp.seq}, the last with hash "
                f"{cp.head_hash}",
            )
        )
    problems = _first_first(rows)
    # A gap between a partition's rows is tampering even where its chain names it instead
    # (the offsets' own finding is then left out of the list above).
    within = any(inner and p.kind == "missing" for p, inner in [*offset_problems, *governance_gaps])
    return VerifyReport(
        export_dir=str(directory),
        decisions_topic=topics.decisions,
        records=sum(p.records for p in parts),
        checkpoints=sum(len(v) for v in marks.values()),
        unchained=sum(p.unchained for p in parts),
        chains=tuple(chains),
        problems=tuple(_in_file(p, manifest) for p in problems[:_KEEP_PROBLEMS]),
        problem_count=len(problems),
        seconds=time.perf_counter() - started,
        complete=manifest.complete,
        unverified_files=unverified,
        writer_running=running is not None,
        writer_pid=running.pid if running is not None else None,
        beyond_interruption=within or not all(_left_by_interruption(p) for p in problems),
        recent=recent,
        decided_again=decided_again,
    )


def _left_by_interruption(problem: Problem) -> bool:
    """Whether an export stopped part-way can leave ``problem``. Its partitions end at
    different points, so records past a partition's end may be missing (a chain's newest, or
    a chain's records in a partition read less far than another), and the files of its last
    flush may be unlisted (the manifest is written after them). But each partition is exported
    from its first offset on, each flush listing what it wrote, so no gap between a
    partition's rows (those are found by the offsets), no listed file gone or rewritten, and
    no record altered, inserted or reordered."""
    if problem.subject == "file":
        return problem.kind == "inserted"
    return problem.kind == "missing"


def _offset_problems(
    con: Any, topic: str, files: list[str], manifest: Manifest
) -> list[tuple[Problem, bool]]:
    """Rows missing from ``topic``'s partitions, as their offsets show: the evaluators write
    without transactions and the topic keeps every record, so an export holds every offset of a
    partition from its first row to the one before the manifest's next offset. Deleting the
    newest decisions with their checkpoint leaves the chains consistent but not the offsets.
    Each problem comes with whether it is a gap between rows (rather than at the end)."""
    held: dict[int, tuple[int, int, int, int]] = {}
    if files:
        query = (
            'SELECT "partition", min("offset"), max("offset"), count(*), count(DISTINCT "offset") '
            f"FROM {READ_PARQUET} GROUP BY 1"
        )
        try:
            for partition, low, high, count, distinct in con.execute(query, [files]).fetchall():
                held[int(partition)] = (int(low), int(high), int(count), int(distinct))
        except Exception as exc:  # duckdb.Error: a damaged file, also reported as such
            raise ExportError(f"reading {topic} from the export: {exc}") from exc
    problems: list[tuple[Problem, bool]] = []

    def problem(
        kind: str, partition: int, offset: int | None, found: str, expected: str
    ) -> Problem:
        return Problem(
            kind=kind,
            topic=topic,
            partition=partition,
            offset=offset,
            found=found,
            expected=expected,
        )

    for partition in sorted(set(held) | set(manifest.offsets.get(topic, {}))):
        end = manifest.next_offset(topic, partition)
        low, high, count, distinct = held.get(partition, (end, end - 1, 0, 0))
        if distinct < count:
            first = _first_repeated(con, topic, files, partition)
            repeated = (
                f"{count - distinct} row(s) repeating an offset of the partition, the first "
                f"at offset {first}"
            )
            problems.append(
                (problem("inserted", partition, first, repeated, "one per offset"), True)
            )
        if high - low + 1 > distinct:
            first = _first_missing(con, topic, files, partition)
            gap = (
                f"{high - low + 1 - distinct} offset(s) between {low} and {high} without a row, "
                f"the first {first}"
            )
            unless = "a row for every offset (unless retention deleted records between two runs)"
            problems.append((problem("missing", partition, first, gap, unless), True))
        if high + 1 < end:
            found = f"no rows for offsets {high + 1} to {end - 1}"
            said = f"rows up to offset {end - 1}: the export's manifest says {end} comes next"
            problems.append((problem("missing", partition, high + 1, found, said), False))
    return problems


def _first_repeated(con: Any, topic: str, files: list[str], partition: int) -> int | None:
    """The lowest offset of ``partition`` two rows hold (an auditor's walkthrough: an offset
    edited to another's was "a row repeating an offset", with no offset named). Asked only of a
    partition found to have one."""
    query = (
        f'SELECT "offset" FROM {READ_PARQUET} WHERE "partition" = ? '
        "GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 1"
    )
    return _one_offset(con, topic, query, files, partition)


def _first_missing(con: Any, topic: str, files: list[str], partition: int) -> int | None:
    """The lowest offset of ``partition`` between its first and last rows that no row holds."""
    query = (
        "SELECT min(o) + 1 FROM (SELECT o, lead(o) OVER (ORDER BY o) AS nxt FROM "
        f'(SELECT DISTINCT "offset" AS o FROM {READ_PARQUET} WHERE "partition" = ?)) '
        "WHERE nxt > o + 1"
    )
    return _one_offset(con, topic, query, files, partition)


def _one_offset(con: Any, topic: str, query: str, files: list[str], partition: int) -> int | None:
    try:
        found = con.execute(query, [files, partition]).fetchone()
    except Exception as exc:  # duckdb.Error: a damaged file, also reported as such
        raise ExportError(f"reading {topic} from the export: {exc}") from exc
    return None if found is None or found[0] is None else int(found[0])


def _log_gaps(
    con: Any, topic: str, files: list[str], manifest: Manifest
) -> list[tuple[Problem, bool]]:
    """The gaps in a governance topic's partitions (:func:`ledger.core.history.log_gaps`, the
    rule ``actor verify`` holds them to): a governance event deleted from between others leaves
    every point-in-time answer after it wrong, though no decision's chain shows it. Each with
    whether records follow it (no export stopped part-way leaves that)."""
    seen: dict[int, list[int]] = {}
    if files:
        try:
            for partition, offset in con.execute(
                f'SELECT "partition", "offset" FROM {READ_PARQUET}', [files]
            ).fetchall():
                seen.setdefault(int(partition), []).append(int(offset))
        except Exception as exc:  # duckdb.Error: a damaged file, also reported as such
            raise ExportError(f"reading {topic} from the export: {exc}") from exc
    problems = []
    for partition in sorted(set(seen) | set(manifest.offsets.get(topic, {}))):
        end = manifest.next_offset(topic, partition)
        for gap in log_gaps(seen.get(partition, []), end):
            span = (
                f"offset {gap.first}"
                if gap.first == gap.last
                else (f"offsets {gap.first} to {gap.last}")
            )
            if gap.repeated:
                kind, found, expected = (
                    "inserted",
                    f"offset {gap.first} appears more than once",
                    "one row per offset",
                )
            elif gap.at_end:
                kind, found, expected = (
                    "missing",
                    f"no rows for {span}",
                    f"rows up to offset {end - 1}: the export's manifest says {end} comes next",
                )
            else:
                kind, found, expected = (
                    "missing",
                    f"no rows for {span}, though the log goes on after "
                    + ("them" if gap.first != gap.last else "it"),
                    "every offset of the log (a governance event deleted: every point-in-time "
                    "answer after it is wrong; check the ledger's own copy: `ledger actor "
                    "verify`)",
                )
            problem = Problem(
                kind=kind,
                topic=topic,
                partition=partition,
                offset=gap.first,
                found=found,
                expected=expected,
                subject="governance record",
            )
            problems.append((problem, not gap.at_end))
    return problems


def _unanswered_or_uncited(
    directory: Any, manifest: Manifest, broken: Collection[str]
) -> tuple[list[Problem], int, int]:
    """What the export's own records say it lacks, by the named queries over its views (files
    in ``broken`` left out): governance records its decisions cite
    (``governance_cited_missing``) and events its accepted commands' answers name
    (``governance_answered_missing``), requests received :data:`ANSWER_GRACE` before it read
    the topics with no decision and no dead letter (``requests_unanswered``), asynchronous
    decisions as old that differ from their default with no correction
    (``corrections_missing``), and decisions as old whose request it lacks
    (``requests_missing``); with how many requests and decisions are newer than that, and so
    not checked, and how many request ids were answered more than once (not a problem of the
    export: what ``requests_decided_twice`` lists)."""
    from ledger.audit.sql import connect as with_views
    from ledger.audit.sql import run_named_typed

    def named(con: Any, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        result = run_named_typed(con, name, params)
        return [dict(zip(result.columns, row, strict=True)) for row in result.rows]

    con = with_views(directory, manifest=manifest, exclude=broken)
    recent = 0
    try:
        again = con.execute(
            "SELECT count(*) FROM (SELECT request_id FROM topic_decisions WHERE event_type IN "
            "('DecisionRecorded', 'BatchDecisionRecorded') GROUP BY request_id "
            "HAVING count(*) > 1)"
        ).fetchone()
        decided_again = int(again[0]) if again and again[0] is not None else 0
        problems = [_uncited(row) for row in named(con, "governance_cited_missing", {})]
        problems += [_unwritten(row) for row in named(con, "governance_answered_missing", {})]
        read = manifest.read_time()
        said = parse_instant(read) if read is not None else None  # the manifest checked its form
        newest = con.execute(
            'SELECT topic, partition, "offset", kafka_timestamp FROM evaluation_requests '
            f"WHERE kafka_timestamp <= '{_LAST}' ORDER BY kafka_timestamp DESC LIMIT 1"
        ).fetchone()
        # The manifest's word is not the only witness: the broker stamped each request as it
        # received it (LogAppendTime), all before the export read the topics. A read time moved
        # back, or made unreadable, must not excuse the newest requests from being answered.
        received: datetime | None = newest[3] if newest is not None else None
        if newest is not None and received is not None and said is not None:
            late = received > said + CLOCK_SLACK
            problems.extend([_read_too_early(newest, said)] if late else [])
        read_then = max((t for t in (said, received) if t is not None), default=None)
        if read_then is not None and read_then.year > 1:  # (year 1 less the grace overflows)
            before = read_then - ANSWER_GRACE
            problems.extend(
                _unanswered(row, before)
                for row in named(con, "requests_unanswered", {"before": before})
            )
            problems.extend(
                _uncorrected(row) for row in named(con, "corrections_missing", {"before": before})
            )
            problems.extend(
                _unrequested(row, before)
                for row in named(con, "requests_missing", {"before": before})
            )
            newer = con.execute(
                "SELECT (SELECT count(*) FROM evaluation_requests WHERE kafka_timestamp >= $at)"
                " + (SELECT count(*) FROM topic_decisions WHERE kafka_timestamp >= $at"
                " AND event_type IN ('DecisionRecorded', 'BatchDecisionRecorded'))",
                {"at": before},
            ).fetchone()
            recent = int(newer[0]) if newer and newer[0] is not None else 0
    finally:
        con.close()
    return problems, recent, decided_again


def _read_too_early(row: tuple[Any, ...], said: datetime) -> Problem:
    """A request the broker received after the manifest says the export read the topics."""
    topic, partition, offset, received = row
    return Problem(
        kind="altered",
        topic=topic,
        partition=partition,
        offset=offset,
        found=f"received by the broker at {format_timestamp(received)}, after the manifest's "
        f"read_at {format_timestamp(said)}",
        expected="every exported record received before the export read the topics (the "
        "manifest's read_at changed, or the exporting machine's clock more than "
        f"{int(CLOCK_SLACK.total_seconds() // 60)} minutes behind the broker's)",
        at=received,
        subject="request",
    )


def _uncited(row: Mapping[str, Any]) -> Problem:
    """A row of ``governance_cited_missing`` as the problem it is."""
    topic, _, partition = str(row["position"]).rpartition("/")
    held, lacks = row["highest_held"], int(row["first_missing"])
    holds = (
        "none of its records"
        if held is None
        else f"only up to offset {held}"
        if lacks > held
        else f"no record at offset {lacks} (it holds offsets up to {held})"
    )
    return Problem(
        kind="missing",
        topic=topic,
        partition=int(partition) if partition.isdigit() else None,
        offset=lacks,
        found=f"{row['decisions_beyond']} decision(s) cite {row['position']} up to offset "
        f"{row['highest_cited']} (the first: decision {row['first_decision_beyond']}), but "
        f"the export holds {holds}",
        expected="every governance record a decision applied, and those before it (one was "
        "deleted, or the newest with the manifest's offsets lowered to hide it; or a "
        "`--follow` export was a flush behind: export again, then verify)",
        subject="governance record",
    )


def _unwritten(row: Mapping[str, Any]) -> Problem:
    """A row of ``governance_answered_missing`` as the problem it is: named by the answer that
    vouches for the missing event (no offset of the governance log says where it was)."""
    missing = int(row["events_missing"])
    return _missing_by(
        row,
        offset="offset",
        named="first_missing_event",
        when="answered_at",
        subject="governance record",
        found=f"the accepted {row['command_type']} {clipped(str(row['command_id']), 120)} "
        f"({clipped(str(row['aggregate']), 120)}) names {missing} governance event(s) the "
        f"export does not hold, this one the first",
        expected="every policy or grant event an accepted command's answer names (the "
        "processor writes them before its answer: the newest deleted with the manifest's "
        "offsets lowered, which leaves no gap in the log, so every point-in-time answer after "
        "it is wrong; or a `--follow` export was a flush behind: export again, then verify)",
    )


def _missing_by(
    row: Mapping[str, Any],
    *,
    offset: str,
    named: str,
    when: str,
    subject: str,
    found: str,
    expected: str,
) -> Problem:
    """A row of a named query that finds what the export lacks, as the problem it is: at the
    row's ``topic``/``partition`` and its ``offset`` column, naming its ``named`` column's id,
    at its ``when`` column's time."""
    at = row[when]
    return Problem(
        kind="missing",
        topic=row["topic"],
        partition=row["partition"],
        offset=row[offset],
        decision_id=row[named],
        at=at if isinstance(at, datetime) else None,
        subject=subject,
        found=found,
        expected=expected,
    )


def _unrequested(row: Mapping[str, Any], before: datetime) -> Problem:
    """A row of ``requests_missing`` as the problem it is (an auditor's walkthrough: every
    request deleted from an export, manifest and all, verified intact)."""
    return _missing_by(
        row,
        offset="first_offset",
        named="first_decision",
        when="first_received",
        subject="decision",  # not a request unanswered: no outage leaves this
        found=f"{row['missing']} decision(s) of this partition received before "
        f"{format_timestamp(before)} answer requests the export does not hold, this one the "
        f"first (request {clipped(str(row['first_request']), 120)})",
        expected="the request each decision answers (requests deleted from the export; or by "
        "a retention on ledger.evaluation-requests shorter than the time between two exports)",
    )


def _uncorrected(row: Mapping[str, Any]) -> Problem:
    """A row of ``corrections_missing`` as the problem it is."""
    return _missing_by(
        row,
        offset="offset",
        named="decision_id",
        when="decided_at",
        subject="decision",
        found=f"an asynchronous decision, {row['determination']} where the agent went ahead on "
        f"its default {row['default']}, has no correction",
        expected="a correction for each asynchronous decision that differs from its default "
        "(the correction deleted from the export; or never written: an evaluator stopped "
        "between writing the decision and its correction, and the agent was never told)",
    )


def _unanswered(row: Mapping[str, Any], before: datetime) -> Problem:
    """A row of ``requests_unanswered`` as the problem it is."""
    return _missing_by(
        row,
        offset="first_offset",
        named="first_request",
        when="first_received",
        subject="request",
        found=f"{row['unanswered']} request(s) of this partition received before "
        f"{format_timestamp(before)} have no decision and no dead letter, this one the first",
        expected="a decision or a dead letter for each (decisions deleted from the export, or "
        "never made: an evaluator down, see `ledger ps`; or an earlier release's `ledger export` "
        "could not read them and left their rows empty: export again with this release into a "
        "new folder, and verify that)",
    )


_PARQUET_MAGIC: Final = b"PAR1"


def _broken_files(
    con: Any, directory: Any, manifest: Manifest, read: set[str]
) -> tuple[dict[str, Problem], list[Problem]]:
    """The manifest's files that are gone or not whole Parquet files (by their first and last
    bytes; those of the ``read`` topics also by DuckDB reading their footer), by path, each as
    the problem it is: a deleted file is rows missing, a truncated or overwritten one rows
    altered. A file or a folder that is a link stays an :class:`ExportError` (the export
    cannot be trusted to say what is in it). Second, the files whose footers lie about their
    data (:func:`footer_lie`): altered too, but their rows are still read and verified."""
    import duckdb
    from pyarrow import ArrowException

    found: dict[str, Problem] = {}
    lies: list[Problem] = []
    for entry in sorted(manifest.files, key=lambda e: str(e["path"])):
        relative = str(entry["path"])
        path = os.path.join(directory, relative)
        span = f"offsets {entry['first_offset']} to {entry['last_offset']}"
        if not os.path.lexists(path):
            found[relative] = _file_problem(
                entry,
                "missing",
                "is listed in the manifest but gone",
                f"its {entry['rows']} row(s), {span}",
            )
            continue
        listed_file(directory, relative)  # a link: ExportError
        try:
            # Without blocking and without following a link: a FIFO or a link swapped in after
            # the check above is refused here, never waited on.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as exc:
            raise ExportError(f"reading {path}: {exc.strerror or exc}") from exc
        lie = None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ExportError(f"{path} is not a regular file: the export cannot be read")
            head = f.read(4)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
        whole = size >= 12 and head == tail == _PARQUET_MAGIC
        if whole:
            try:
                lie = footer_lie(path, con)
            except (OSError, ValueError, ArrowException, duckdb.Error):
                whole = False
            except Exception as exc:  # a file built to break the check is evidence, not a crash
                lie = FooterProblem(
                    f"it cannot be checked: {type(exc).__name__}: {clipped(str(exc), 120)}",
                    readable=False,
                )
        if lie is not None:
            problem = _file_problem(
                entry,
                "altered",
                lie.finding(),
                f"the Parquet file of its {entry['rows']} row(s), {span}, as the exporter "
                "writes it",
            )
            if not lie.readable:  # its rows cannot be read with the others
                found[relative] = problem
                continue
            lies.append(problem)  # its rows are still verified: the data is what it is
        if whole and entry["topic"] in read:
            try:
                con.execute(f"SELECT count(*) FROM {READ_PARQUET}", [[path]]).fetchall()
            except duckdb.Error:
                whole = False
        if not whole:
            found[relative] = _file_problem(
                entry,
                "altered",
                f"is not a whole Parquet file ({size:,} bytes: truncated or overwritten)",
                f"the Parquet file of its {entry['rows']} row(s), {span}",
            )
    return found, lies


def _files_unlike_manifest(
    con: Any,
    directory: Any,
    manifest: Manifest,
    broken: Mapping[str, Problem],
    topics: Collection[str],
    *,
    partition_only: bool = False,
) -> dict[str, Problem]:
    """The listed files of ``topics`` whose rows are not what their manifest entries say: how
    many, of which partition, from which offset to which (a whole file swapped for another of
    the topic, or rows deleted or added, leaves a whole Parquet file the footer checks pass).
    For the topics without a chain or a gapless log, which say where a row went themselves;
    for those, ``partition_only``: a file holding rows of another partition than its entry
    names (a row deleted or added there is the chain's or the log's to tell, once)."""
    entries = [e for e in manifest.files if str(e["path"]) not in broken and e["topic"] in topics]
    if not entries:
        return {}
    paths = {str(listed_file(directory, str(e["path"]))): e for e in entries}
    query = (
        'SELECT ledger_file, count(*), min("partition"), max("partition"), min("offset"), '
        'max("offset") FROM read_parquet(?, hive_partitioning = false, union_by_name = true, '
        "filename = 'ledger_file') GROUP BY 1"
    )
    try:
        held = {str(f): tuple(rest) for f, *rest in con.execute(query, [list(paths)]).fetchall()}
    except Exception as exc:  # duckdb.Error: a damaged file, also reported as such
        raise ExportError(f"reading the export's files: {exc}") from exc
    problems = {}
    for path, entry in sorted(paths.items(), key=lambda p: str(p[1]["path"])):
        rows, low_p, high_p, first, last = held.get(path, (0, None, None, None, None))
        said = (
            int(entry["rows"]),
            int(entry["partition"]),
            int(entry["partition"]),
            int(entry["first_offset"]),
            int(entry["last_offset"]),
        )
        if int(entry["rows"]) == 0 and rows == 0:
            continue
        if (rows, low_p, high_p, first, last) == said:
            continue
        if partition_only and rows and low_p == high_p == int(entry["partition"]):
            continue
        where = f"partition {low_p}" if low_p == high_p else f"partitions {low_p} to {high_p}"
        problems[str(entry["path"])] = _file_problem(
            entry,
            "altered",
            f"holds {rows} row(s) of {where}, offsets {first} to {last}",
            f"its {entry['rows']} row(s) of partition {entry['partition']}, offsets "
            f"{entry['first_offset']} to {entry['last_offset']}, as the manifest lists "
            "(a file swapped for another, or rows deleted or added)",
        )
    return problems


def _holes_in_files(
    con: Any,
    directory: Any,
    manifest: Manifest,
    broken: Mapping[str, Problem],
    topic: str,
) -> dict[str, Problem]:
    """The listed files of ``topic`` (a topic without a chain) whose span of offsets holds an
    offset no file of the export has a row for. Retention between two export runs leaves gaps
    only between files (a run starts a new file where the log now starts), and a partition's
    rows of one date may sit in another date's file, so only an offset inside a file's span
    and in no file at all is a row deleted (an auditor's walkthrough: a request's row deleted
    and its file's ``rows`` lowered in the manifest read "intact")."""
    entries = [e for e in manifest.files if str(e["path"]) not in broken and e["topic"] == topic]
    if not entries:
        return {}
    import pyarrow as pa

    # Offsets a skipped file (damaged, or unlike its entry) lists are not taken for missing
    # beside it (a review: an intact neighbour of a damaged file was reported).
    skipped = [
        (int(e["partition"]), int(e["first_offset"]), int(e["last_offset"]))
        for e in manifest.files
        if str(e["path"]) in broken and e["topic"] == topic
    ]

    spans = pa.table(
        {
            "path": [str(e["path"]) for e in entries],
            "p": [int(e["partition"]) for e in entries],
            "lo": [int(e["first_offset"]) for e in entries],
            "hi": [int(e["last_offset"]) for e in entries],
        }
    )
    files = topic_files(directory, topic, manifest, exclude=broken)
    # The union's gaps first (few), then the spans they fall in: a join of every row with
    # every span of its partition would be rows times files.
    query = (
        'WITH held AS (SELECT DISTINCT "partition" AS p, "offset" AS o '
        f'FROM {READ_PARQUET} WHERE "offset" IS NOT NULL AND "partition" IS NOT NULL), '
        "steps AS (SELECT p, o, lead(o) OVER (PARTITION BY p ORDER BY o) AS nxt FROM held), "
        "gaps AS (SELECT p, o + 1 AS glo, coalesce(nxt - 1, 4611686018427387904) AS ghi FROM steps "
        "WHERE nxt IS NULL OR nxt > o + 1 "
        "UNION ALL SELECT p, -1, min(o) - 1 FROM held GROUP BY p) "
        "SELECT s.path, s.p, greatest(g.glo, s.lo), least(g.ghi, s.hi) "
        "FROM ledger_spans s JOIN gaps g ON g.p = s.p AND g.glo <= s.hi AND g.ghi >= s.lo "
        "ORDER BY s.path"
    )
    con.register("ledger_spans", spans)
    try:
        overlaps = con.execute(query, [files]).fetchall()
    except Exception as exc:  # duckdb.Error: a damaged file, also reported as such
        raise ExportError(f"reading {topic} from the export: {exc}") from exc
    finally:
        con.unregister("ledger_spans")
    lacking: dict[str, int] = {}
    for path, partition, low, high in overlaps:
        left = _less(int(low), int(high), [(a, b) for p, a, b in skipped if p == partition])
        if left:
            lacking[str(path)] = lacking.get(str(path), 0) + left
    holes = sorted(lacking.items())
    by_path = {str(e["path"]): e for e in entries}
    return {
        path: _file_problem(
            by_path[path],
            "missing",
            f"spans offsets {by_path[path]['first_offset']} to {by_path[path]['last_offset']}, "
            f"but {lacking} of them have no row in the export",
            "a row for every offset of a file's span (rows deleted, the manifest's entry "
            "edited to match; a producer of your own writing to the topic with transactions "
            "would leave such gaps too: the ledger's writers use none)"
            + (_MERGED_EARLIER if _merged(path) else ""),
        )
        for path, lacking in holes
    }


def _merged(path: str) -> bool:
    """Is the export's file at ``path`` a merge of others (``…+<first>~<last>.parquet``)?"""
    parts = path_parts(path)
    return parts is not None and parts[3] is not None


_MERGED_EARLIER: Final = (
    "; or, in an export an earlier release merged, offsets retention deleted between two "
    "export runs (releases before 2026-12-06 merged files across them): export into a new "
    "folder (`ledger export --out NEW`) and verify that, where only rows deleted are reported"
)


def _less(low: int, high: int, skipped: list[tuple[int, int]]) -> int:
    """How many offsets of ``low``..``high`` no range of ``skipped`` holds."""
    count = high - low + 1
    for a, b in span_union(skipped):
        count -= max(0, min(b, high) - max(a, low) + 1)
    return count


def _listed(manifest: Manifest) -> set[str]:
    """The data files ``manifest`` accounts for: those it lists, and those a merge retired."""
    return {str(f["path"]) for f in [*manifest.files, *manifest.retired]}


def _unlisted_files(directory: Any, manifest: Manifest) -> list[str]:
    """The data files in the export's topic folders that its manifest does not list (nor keep
    as retired by a merge), relative to the export. An export run writes a flush's files before
    the manifest that lists them, so while one runs (it holds the lock: the caller asks before
    it reads the manifest and again after) or once a newer manifest lists them, they are its
    own; any other is inserted (:func:`_inserted_file`)."""
    listed = _listed(manifest)
    found = []
    for topic_dir in sorted(os.listdir(directory)):
        top = os.path.join(directory, topic_dir)
        if not topic_dir.startswith("topic=") or not os.path.isdir(top):
            continue
        for date_dir in sorted(os.listdir(top)):
            inner = os.path.join(top, date_dir)
            if not os.path.isdir(inner):
                continue
            for name in sorted(os.listdir(inner)):
                relative = f"{topic_dir}/{date_dir}/{name}"
                if (
                    name.endswith(".parquet")
                    and not name.startswith(".")
                    and relative not in listed
                ):
                    found.append(relative)
    return found


def _in_flight(relative: str, manifest: Manifest) -> bool:
    """Whether a running export could be writing ``relative`` now, unlisted by ``manifest``: a
    flush's new file (from the partition's next offset on) or a merge's (of offsets the manifest
    already has). Any other unlisted file is inserted, writer or not: a review found that a
    forged file passed as "a flush in progress" for as long as a `--follow` ran (weeks)."""
    parts = path_parts(relative)
    if parts is None:
        return False
    topic, partition, first, last = parts
    following = manifest.next_offset(topic, partition)
    return first >= following if last is None else first <= last < following


def _inserted_file(relative: str) -> Problem:
    """A data file in the export's folders that no manifest lists and no export run is
    writing: the ledger's views never read it, but anything reading the folders by a glob
    (DuckDB's ``read_parquet('…/*.parquet')``, Trino, Athena) counts its rows."""
    return Problem(
        kind="inserted",
        topic=relative.partition("/")[0].removeprefix("topic="),
        partition=None,
        offset=None,
        found=f"{relative} is in the export's folders but not in its "
        "manifest: a reader globbing the folders counts its rows (left by an "
        "export stopped before its manifest, which the next `ledger export` "
        "removes, or put there by someone)",
        expected="only the files the manifest lists",
        subject="file",
    )


def _rows_unlike_records(
    con: Any, files: list[str], codec: Codec, fmt: TopicFormat
) -> Iterator[Problem]:
    """The rows of an unchained topic whose columns are not their own record decoded, as the
    exporter writes them (:meth:`ledger.audit.rows.Rows.event_row`): a record that does not
    decode has a row of NULLs, and a ledger event the topic does not carry (a governance
    command sent to the requests topic, which the evaluator dead-letters) its type and NULLs."""
    if not files:
        return
    for row in _rows_in_log_order(con, files):
        record = row.get("record")
        expected = "the columns of its record bytes (what replay and simulation read)"
        undecodable = ""
        try:
            event: Any = codec.decode(record) if isinstance(record, bytes) else None
        except CodecError as exc:
            event, undecodable = None, f" ({clipped(str(exc), 120)})"
        found: str | None
        bad_stamp = _bad_stamp(row)
        if bad_stamp is not None:
            found, expected = bad_stamp
        elif event is not None and type(event) not in fmt.types:
            named = type(event).__name__
            filled = [c.name for c in fmt.columns if row.get(c.name) is not None]
            if row.get("event_type") == named and not filled:
                continue
            found = (
                f"its record is a {named}, which {fmt.topic} does not carry, yet its columns "
                f"name {row.get('event_type')} and hold {', '.join(filled[:5]) or 'nothing'}"
            )
        elif event is not None:
            found = columns_disagree(event, row)
        elif row.get("event_type") is not None or row.get("event_id") is not None:
            found = f"its record bytes do not decode{undecodable}, yet its columns name an event"
            far = [(n, v) for n, v in row.items() if isinstance(v, Unreadable)]
            if far:  # what `ledger export` wrote for such a record until it refused the instant
                found += f": its {far[0][0]} holds {far[0][1]}"
                expected = (
                    "NULL columns, as the exporter writes a record that does not decode (an "
                    "older one filled them for an instant outside year 1 to 9999: export again "
                    "into a new folder)"
                )
        else:
            continue
        if found is None:
            continue
        yield Problem(
            kind="altered",
            topic=row.get("topic"),
            partition=row.get("partition"),
            offset=row.get("offset"),
            decision_id=row.get("event_id"),
            found=found,
            expected=expected,
            at=_stamp(row),
            subject=_SUBJECTS.get(str(row.get("event_type")), "record"),
        )


_SUBJECTS: Final = {
    "EvaluationRequested": "request",
    "BatchEvaluationRequested": "request",
    "DecisionCorrected": "correction",
    "DeadLetter": "dead letter",
}


def _file_problem(entry: Mapping[str, Any], kind: str, what: str, expected: str) -> Problem:
    return Problem(
        kind=kind,
        topic=str(entry["topic"]),
        partition=int(entry["partition"]),
        offset=int(entry["first_offset"]),
        found=f"{entry['path']} {what}",
        expected=expected,
        subject="file",
    )


def _count(con: Any, files: list[str]) -> int:
    if not files:
        return 0
    import duckdb

    try:
        (n,) = con.execute(f"SELECT count(*) FROM {READ_PARQUET}", [files]).fetchone()
    except duckdb.Error as exc:
        raise ExportError(f"reading the export: {exc}") from exc
    return int(n)


def _first_first(rows: _Rows) -> list[Problem]:
    """Problems in time order (ties: altered before the gap it leaves), without the gaps
    whose every record is there but altered (each already reported as such)."""
    kept = []
    for p, gap in rows.problems:
        if gap is not None and all(
            (p.chain_id, seq) in rows.covered for seq in range(gap[0], gap[1] + 1)
        ):
            continue
        kept.append(p)

    def key(p: Problem) -> tuple[Any, ...]:
        # A file's problem first (a file deleted or cut short is the cause of the gaps its
        # chains show), then in time order.
        at = p.at.timestamp() if p.at is not None else float("inf")
        first = p.subject != "file"
        return (first, at, _RANK.get(p.kind, 9), p.topic or "", p.partition or 0, p.offset or 0)

    return sorted(kept, key=key)
