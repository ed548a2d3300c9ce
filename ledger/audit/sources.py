"""Recorded history for reproduction and simulation: decisions, their requests and the
governance history, read from Kafka or from an export directory.

Two sources with one interface (:class:`LedgerSource`):

- :class:`KafkaSource` reads the topics from the beginning to their current end (no consumer
  group, nothing committed) — fine for a development or moderate ledger;
- :class:`ExportSource` queries an export (the layout of ``ledger export``:
  ``DIR/topic=<topic>/date=…/<topic>+<partition>+<offset>.parquet``) with DuckDB, and decodes the
  rows' ``record`` bytes, the authoritative record (``ledger audit verify`` checks that the
  queryable columns agree with them).

Either way the events are the codec's decoding of the recorded bytes, so reproduction and
simulation run on exactly what was written.

A request id may appear more than once on the request topic: any sender that can see ids (they
are on ``ledger.decisions``) can write a copy with other facts, which the evaluator ignores as a
repeat. Reproduction and simulation use the copy the decision answered (:func:`answered`), never
simply the first one read.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeAlias, cast

from ledger.audit.columns import columns_disagree, python_rows
from ledger.audit.export import ExportPath, Manifest, read_manifest
from ledger.audit.history import load_export_history
from ledger.audit.manifest import listed_file, no_export
from ledger.codec import Codec, default_codec
from ledger.core.answering import answers_batch, same_question
from ledger.core.evaluate import item_request
from ledger.core.events import (
    COMMAND_TYPES,
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    Command,
    DecisionRecorded,
    EvaluationRequested,
    item_ref,
)
from ledger.core.history import HistoryEntry
from ledger.core.jsonform import to_json_value
from ledger.core.limits import recorded_name
from ledger.core.signing import Witnesses, witnesses_from
from ledger.errors import CodecError, ExportError, TamperDetected, UsageError
from ledger.kafka.governance import Lacking, load_history
from ledger.kafka.reading import read_topic
from ledger.settings import KafkaSecurity, TopicNames

__all__ = [
    "Decision",
    "Request",
    "LedgerSource",
    "KafkaSource",
    "ExportSource",
    "export_dir",
    "resolve_topics",
    "topic_files",
    "connect",
    "READ_PARQUET",
    "single_pairs",
    "read_export_manifest",
    "answered",
    "no_decision",
]

Decision: TypeAlias = DecisionRecorded | BatchDecisionRecorded
Request: TypeAlias = EvaluationRequested | BatchEvaluationRequested


class LedgerSource(Protocol):
    """Where recorded history is read from."""

    @property
    def where(self) -> str:
        """Human-readable: the bootstrap servers or the export directory."""
        ...

    def decision(self, decision_id: str) -> Decision:
        """The decision with this decision id (or of this request id); UsageError if none."""
        ...

    def decisions(self, ids: Collection[str]) -> dict[str, list[Decision]]:
        """For each of ``ids``, the decisions recorded with it as their decision id or request
        id, in one read, earliest decided first, each request once (a request decided again
        is its first decision: :func:`~ledger.core.answering.same_question`; a copy of it with
        other facts is another); ids that name none are left out."""
        ...

    def requests(self, request_id: str) -> list[Request]:
        """Every evaluation request with this id, in log order (usually one; see
        :func:`answered` for which one a decision answered)."""
        ...

    def history(self, *, lacking: Lacking | None = None) -> list[HistoryEntry]:
        """Every governance event in log order, with where it was read (``lacking``: as
        :func:`~ledger.kafka.governance.read_governance`'s)."""
        ...

    def decided_between(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[Decision]:
        """Every decision recorded (its ``occurred_at``) in ``[since, until)``, oldest first."""
        ...

    def sampled_between(
        self, since: datetime | None, until: datetime | None, sample: int, seed: int
    ) -> tuple[int, list[Decision]]:
        """How many decisions were recorded in ``[since, until)``, and ``sample`` of them drawn
        with ``seed`` (:func:`draw`, over :meth:`decided_between`'s order), oldest first."""
        ...

    def requests_for(self, request_ids: Collection[str]) -> dict[str, list[Request]]:
        """:meth:`requests` of each of ``request_ids``, in one read (ids with none left out)."""
        ...

    def pairs(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[tuple[Request, Decision]]:
        """Each request asked in ``[since, until)`` with the decision recorded for it (the
        first, if a crash-restart recorded two), oldest request first."""
        ...


def draw(count: int, sample: int, seed: int) -> set[int]:
    """The indices of ``sample`` of ``count`` decisions, drawn with ``seed`` (all of them when
    ``sample`` is not smaller)."""
    if sample >= count:
        return set(range(count))
    return set(random.Random(seed).sample(range(count), sample))


def no_decision(decision_id: str, where: str) -> UsageError:
    """The one line for an id that names no decision in the ledger at ``where``."""
    return UsageError(
        f"no decision {decision_id!r} in the ledger at {where} (give a decision id or request "
        "id; `ledger decisions` lists them)"
    )


def _first(source: LedgerSource, decision_id: str) -> Decision:
    """The earliest decision ``decision_id`` names in ``source``; UsageError if none."""
    found = source.decisions([decision_id]).get(decision_id)
    if not found:
        raise no_decision(decision_id, source.where)
    return found[0]


def _distinct(decisions: list[Decision]) -> list[Decision]:
    """``decisions`` (earliest first) without those that answered the same request as an
    earlier one (:func:`~ledger.core.answering.same_question`): a request decided again
    counts once, as its first decision."""
    kept: list[Decision] = []
    for decision in decisions:
        if not any(same_question(decision, d) for d in kept):
            kept.append(decision)
    return kept


def answered(decision: Decision, copies: Sequence[Request]) -> Request:
    """The copy of a request id that ``decision`` answered: the one whose time, names, asker,
    mode, context and facts agree most with what the decision recorded (the evaluator records
    the request's time as ``requested_at``, its facts as the policy read them: a number sent
    as ``120.5`` or ``"120.50"`` is the same decimal, a time in any zone the same instant); the
    earliest read on a tie. A copy identical in all of these is the same request for
    reproduction and simulation."""
    if len(copies) == 1:
        return copies[0]
    recorded = to_json_value(decision)
    asked = decision.requested_at if isinstance(decision, DecisionRecorded) else None

    def agreement(request: Request) -> int:
        form = to_json_value(request)
        if isinstance(request, EvaluationRequested):  # who asked, as the evaluator records it
            form["requested_by"] = request.requested_by or request.actor
        score = 8 if request.occurred_at == asked else 0
        for name in (
            "principal",
            "action",
            "resource",
            "context",
            "requested_by",
            "mode",
            "default",
        ):
            if name in form and name in recorded:
                score += 2 if _same_name(form[name], recorded[name]) else -2
        facts, kept = form.get("facts") or {}, recorded.get("facts") or {}
        if isinstance(facts, dict) and isinstance(kept, dict):
            score += sum(1 if _same_fact(v, kept.get(k)) else -1 for k, v in facts.items())
        return score

    return max(copies, key=agreement)  # the first of the best: the earliest read


def _same_name(sent: Any, kept: Any) -> bool:
    """Is ``kept`` what a decision records of ``sent``: the same, or a name over its limit cut
    (:func:`~ledger.core.limits.recorded_name`; whole in decisions recorded until
    2026-12-06)?"""
    return sent == kept or (isinstance(sent, str) and recorded_name(sent) == kept)


def _same_fact(sent: Any, kept: Any) -> bool:
    """Is ``kept`` (a fact as the policy read it, in its JSON form) what was ``sent``?"""
    if sent == kept:
        return True
    if isinstance(sent, (int, float, str)) and isinstance(kept, str) and not isinstance(sent, bool):
        try:
            return Decimal(str(sent)) == Decimal(kept)  # a decimal fact, sent as a number or text
        except (InvalidOperation, ValueError):
            pass
        try:
            return datetime.fromisoformat(str(sent)) == datetime.fromisoformat(kept)
        except ValueError:
            return False
    return False


# --------------------------------------------------------------------------- Kafka


@dataclass(frozen=True, slots=True)
class KafkaSource:
    """History read from the ledger's topics."""

    bootstrap: str
    topics: TopicNames
    codec: Codec | None = None
    security: KafkaSecurity | None = None

    @property
    def where(self) -> str:
        return self.bootstrap

    def decision(self, decision_id: str) -> Decision:
        return _first(self, decision_id)

    def decisions(self, ids: Collection[str]) -> dict[str, list[Decision]]:
        wanted, found = set(ids), dict[str, list[Decision]]()
        for positioned in read_topic(
            self.bootstrap, [self.topics.decisions], codec=self.codec, security=self.security
        ):
            event = positioned.event
            if isinstance(event, (DecisionRecorded, BatchDecisionRecorded)):
                for named in {event.event_id, event.request_id} & wanted:
                    found.setdefault(named, []).append(event)
        # Earliest decided first (read order on a tie), as an export orders them: a reader's
        # partition order is the requester's choice (`reply_partition`).
        return {k: _distinct(sorted(v, key=lambda d: d.occurred_at)) for k, v in found.items()}

    def requests(self, request_id: str) -> list[Request]:
        topic = [self.topics.evaluation_requests]
        return [
            positioned.event
            for positioned in read_topic(
                self.bootstrap, topic, codec=self.codec, security=self.security
            )
            if isinstance(positioned.event, (EvaluationRequested, BatchEvaluationRequested))
            and positioned.event.event_id == request_id
        ]

    def history(self, *, lacking: Lacking | None = None) -> list[HistoryEntry]:
        return load_history(
            self.bootstrap,
            self.topics,
            codec=self.codec,
            security=self.security,
            lacking=lacking,
        )

    def decided_between(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[Decision]:
        found = [
            positioned.event
            for positioned in read_topic(
                self.bootstrap, [self.topics.decisions], codec=self.codec, security=self.security
            )
            if isinstance(positioned.event, (DecisionRecorded, BatchDecisionRecorded))
            and _within(positioned.event.occurred_at, since, until)
        ]
        return sorted(found, key=lambda d: d.occurred_at)

    def sampled_between(
        self, since: datetime | None, until: datetime | None, sample: int, seed: int
    ) -> tuple[int, list[Decision]]:
        every = self.decided_between(since, until)  # the topic is read whole either way
        chosen = draw(len(every), sample, seed)
        return len(every), [d for i, d in enumerate(every) if i in chosen]

    def requests_for(self, request_ids: Collection[str]) -> dict[str, list[Request]]:
        wanted, found = set(request_ids), dict[str, list[Request]]()
        topic = [self.topics.evaluation_requests]
        for positioned in read_topic(
            self.bootstrap, topic, codec=self.codec, security=self.security
        ):
            event = positioned.event
            if (
                isinstance(event, (EvaluationRequested, BatchEvaluationRequested))
                and event.event_id in wanted
            ):
                found.setdefault(event.event_id, []).append(event)
        return found

    def pairs(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[tuple[Request, Decision]]:
        copies: dict[str, list[Request]] = {}
        topic = [self.topics.evaluation_requests]
        for positioned in read_topic(
            self.bootstrap, topic, codec=self.codec, security=self.security
        ):
            event = positioned.event
            if isinstance(event, (EvaluationRequested, BatchEvaluationRequested)):
                copies.setdefault(event.event_id, []).append(event)  # windowed once chosen
        found: dict[str, Decision] = {}
        for positioned in read_topic(
            self.bootstrap, [self.topics.decisions], codec=self.codec, security=self.security
        ):
            event = positioned.event
            if not isinstance(event, (DecisionRecorded, BatchDecisionRecorded)):
                continue
            if event.request_id in copies:
                found.setdefault(event.request_id, event)
        chosen = [answered(found[rid], these) for rid, these in copies.items() if rid in found]
        chosen = [r for r in chosen if _within(r.occurred_at, since, until)]
        for request in sorted(chosen, key=lambda r: r.occurred_at):
            yield request, found[request.event_id]


def _within(at: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or at >= since) and (until is None or at < until)


# --------------------------------------------------------------------------- export


def _read(path: Path) -> Manifest:
    manifest = read_manifest(path)
    if manifest is None:
        raise no_export(path)
    return manifest


def export_dir(path: ExportPath) -> Path:
    """``path`` (as a :class:`~pathlib.Path`) if it is an export directory (its manifest is
    there: ``ledger export`` writes it last), else one :class:`ExportError` line."""
    path = Path(path)
    if not path.exists():
        raise ExportError(
            f"export directory {path} does not exist: run `ledger export` first, or pass the "
            "directory it wrote with --from"
        )
    if not path.is_dir():
        raise ExportError(f"{path} is not a directory: pass the export directory with --from")
    _read(path)
    return path


def resolve_topics(path: ExportPath) -> TopicNames:
    """The topic names the export at ``path`` holds: the prefix its manifest records (an export
    is read where it lies, whatever ``$LEDGER_TOPIC_PREFIX`` says)."""
    return TopicNames(prefix=_read(Path(path)).prefix)


def read_export_manifest(path: ExportPath) -> Manifest:
    """The manifest of the export at ``path``; one :class:`ExportError` line when there is
    none. A reader that needs several things from it (files, next offsets) reads it once: a
    ``--follow`` export may rewrite it at any moment."""
    return _read(Path(path))


def topic_files(
    path: ExportPath,
    topic: str,
    manifest: Manifest | None = None,
    *,
    exclude: Collection[str] = (),
) -> list[str]:
    """The Parquet files of ``topic`` in the export at ``path``: exactly those its manifest
    (``manifest``, or the one there now) lists (a file beyond the manifest is what a killed
    export left; the next export removes it), as ``ledger audit`` reads them, but those whose
    manifest path is in ``exclude``. A listed file that is gone is one error line."""
    path = Path(path)
    manifest = manifest if manifest is not None else _read(path)
    listed = sorted(
        str(f["path"]) for f in manifest.files if f["topic"] == topic and f["path"] not in exclude
    )
    return [str(listed_file(path, relative)) for relative in listed]


def connect() -> Any:
    """An in-memory DuckDB connection for reading export files: the session every reader of
    an export uses (:func:`ledger.audit.sql.session`), loaded when first needed."""
    from ledger.audit.sql import session

    return session()


READ_PARQUET = "read_parquet(?, hive_partitioning = false, union_by_name = true)"
"""How the export's files of one topic are read: the file list is bound as a parameter, never
interpolated into the SQL; columns are matched by name across files, and only the files' own
columns are read (no ``key=value`` folder name, in the export or above it, becomes one)."""


@dataclass(init=False)
class ExportSource:
    """History read from an export directory with DuckDB (``path``: a str or any path-like;
    one :class:`ExportError` line when it holds no export)."""

    path: Path
    topics: TopicNames
    codec: Codec | None = None

    def __init__(self, path: ExportPath, *, codec: Codec | None = None) -> None:
        self.path = export_dir(path)
        self.topics = resolve_topics(self.path)  # the export's own prefix, from its manifest
        self.codec = codec
        self._con: Any = None

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def _codec(self) -> Codec:
        if self.codec is None:
            self.codec = default_codec()
        return self.codec

    def _query(
        self, topic: str, sql: str, params: Sequence[Any] = (), *, as_dicts: bool = False
    ) -> list[Any]:
        """Rows of ``sql`` over ``topic``'s files: tuples, or with ``as_dicts`` dicts by column
        name, values as :func:`ledger.audit.columns.columns_disagree` reads them (Arrow's)."""
        files = topic_files(self.path, topic)
        if not files:
            return []
        if self._con is None:
            self._con = connect()
        import duckdb

        try:
            query, bound = sql.replace("{files}", READ_PARQUET), [files, *params]
            rows: list[Any] = (
                python_rows(self._con.sql(query, params=bound).to_arrow_table())
                if as_dicts
                else self._con.execute(query, bound).fetchall()
            )
        except duckdb.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(
                f"reading {topic} from the export at {self.path}: {first} (damaged or altered "
                f"since the export? run `ledger audit verify --from {self.path}`)"
            ) from exc
        return rows

    def _decode(self, record: bytes | None) -> Any:
        if record is None:
            return None
        try:
            return self._codec.decode(record)
        except CodecError:
            return None

    def decision(self, decision_id: str) -> Decision:
        return _first(self, decision_id)

    def decisions(self, ids: Collection[str]) -> dict[str, list[Decision]]:
        wanted = sorted(set(ids))
        rows = self._query(
            self.topics.decisions,
            "SELECT * FROM {files} WHERE list_contains(?, event_id) "
            'OR list_contains(?, request_id) ORDER BY occurred_at, "partition", "offset"',
            [wanted, wanted],
            as_dicts=True,
        )
        found: dict[str, list[Decision]] = {}
        # The columns found the rows; the records say what they are (a row whose id columns
        # were altered beside its record is not taken for another decision).
        for row in rows:
            event = self._decode(row["record"])
            if not isinstance(event, (DecisionRecorded, BatchDecisionRecorded)):
                continue
            named = {event.event_id, event.request_id}.intersection(wanted)
            if named:
                self._check_row(event, row)
            for name in named:
                found.setdefault(name, []).append(event)
        return {k: _distinct(v) for k, v in found.items()}

    def _check_row(self, event: Decision, row: dict[str, Any]) -> None:
        """What analysts query must be what is reproduced: a row whose columns were changed
        beside its record would reproduce the record while SQL shows something else."""
        disagree = columns_disagree(event, row)
        if disagree is not None:
            raise TamperDetected(
                f"the export's row of decision {event.event_id} ({row['topic']} "
                f"partition {row['partition']} offset {row['offset']}) does not match "
                f"its record: {disagree}; the SQL views show the row, a reproduction "
                f"uses the record: run `ledger audit verify --from {self.path}`"
            )

    _WINDOW: ClassVar[str] = (
        "(CAST(? AS TIMESTAMPTZ) IS NULL OR occurred_at >= ?) "
        "AND (CAST(? AS TIMESTAMPTZ) IS NULL OR occurred_at < ?) "
    )
    _OLDEST_FIRST: ClassVar[str] = 'ORDER BY occurred_at, "partition", "offset"'

    def decided_between(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[Decision]:
        rows = self._query(
            self.topics.decisions,
            f"SELECT * FROM {{files}} WHERE {self._WINDOW}{self._OLDEST_FIRST}",
            [since, since, until, until],
            as_dicts=True,
        )
        return self._decided(rows)

    def sampled_between(
        self, since: datetime | None, until: datetime | None, sample: int, seed: int
    ) -> tuple[int, list[Decision]]:
        # Only the chosen rows are read and decoded (an auditor's walkthrough: 30 of 307,505
        # took 61-93 s, every decision decoded before the draw). Rows of the decisions topic
        # are decisions; the draw is over the same order as decided_between's.
        where = [since, since, until, until]
        places = self._query(
            self.topics.decisions,
            f'SELECT "partition", "offset" FROM {{files}} WHERE {self._WINDOW}{self._OLDEST_FIRST}',
            where,
        )
        chosen = [f"{places[i][0]}:{places[i][1]}" for i in sorted(draw(len(places), sample, seed))]
        rows = self._query(
            self.topics.decisions,
            f"SELECT * FROM {{files}} WHERE {self._WINDOW}"
            f"""AND list_contains(?, "partition" || ':' || "offset") {self._OLDEST_FIRST}""",
            [*where, chosen],
            as_dicts=True,
        )
        return len(places), self._decided(rows)

    def _decided(self, rows: list[dict[str, Any]]) -> list[Decision]:
        found: list[Decision] = []
        for row in rows:
            event = self._decode(row["record"])
            if isinstance(event, (DecisionRecorded, BatchDecisionRecorded)):
                self._check_row(event, row)
                found.append(event)
        return found

    def requests_for(self, request_ids: Collection[str]) -> dict[str, list[Request]]:
        wanted = sorted(set(request_ids))
        rows = self._query(
            self.topics.evaluation_requests,
            'SELECT record FROM {files} WHERE list_contains(?, event_id) ORDER BY "partition", '
            '"offset"',
            [wanted],
        )
        found: dict[str, list[Request]] = {}
        named = set(wanted)
        for (record,) in rows:
            event = self._decode(record)
            # as its record says, whatever its columns say
            if (
                isinstance(event, (EvaluationRequested, BatchEvaluationRequested))
                and event.event_id in named
            ):
                found.setdefault(event.event_id, []).append(event)
        return found

    def requests(self, request_id: str) -> list[Request]:
        rows = self._query(
            self.topics.evaluation_requests,
            'SELECT record FROM {files} WHERE event_id = ? ORDER BY "partition", "offset"',
            [request_id],
        )
        events = (self._decode(record) for (record,) in rows)
        return [
            e
            for e in events
            if isinstance(e, (EvaluationRequested, BatchEvaluationRequested))
            and e.event_id == request_id  # as its record says, whatever its columns say
        ]

    def history(self, *, lacking: Lacking | None = None) -> list[HistoryEntry]:
        # the one reader of it
        return load_export_history(self.path, codec=self._codec, lacking=lacking)

    def witnesses(self) -> Witnesses:
        """When the broker received each exported signed command (its record's time; whether
        that was the broker's or the sender's, an export does not say):
        ``ledger actor verify --from`` holds the governance events to them, as over Kafka."""
        commands = []
        for record, at in self._query(
            self.topics.commands, "SELECT record, kafka_timestamp FROM {files}"
        ):
            command = self._decode(record)
            if isinstance(command, COMMAND_TYPES) and at is not None:
                when = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
                commands.append((cast(Command, command), when, False))
        return witnesses_from(commands)

    def pairs(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[tuple[Request, Decision]]:
        requests = topic_files(self.path, self.topics.evaluation_requests)
        decisions = topic_files(self.path, self.topics.decisions)
        if not requests or not decisions:
            return
        if self._con is None:
            self._con = connect()
        import duckdb

        # The first decision recorded for each request of the window, oldest request first.
        sql = (
            f"SELECT q.record, d.record FROM {READ_PARQUET} AS q "
            "JOIN (SELECT request_id, record, row_number() OVER (PARTITION BY request_id "
            '      ORDER BY occurred_at, "partition", "offset") AS n '
            f"      FROM {READ_PARQUET}) AS d "
            "  ON d.request_id = q.event_id AND d.n = 1 "
            "WHERE (CAST(? AS TIMESTAMPTZ) IS NULL OR q.occurred_at >= ?) "
            "  AND (CAST(? AS TIMESTAMPTZ) IS NULL OR q.occurred_at < ?) "
            'ORDER BY q.occurred_at, q."partition", q."offset"'
        )
        # Ids sent more than once (see the module doc): each is yielded once, as the copy its
        # decision answered, where its first copy comes in the order.
        repeated = (
            f"SELECT record FROM {READ_PARQUET} WHERE event_id IN "
            f"(SELECT event_id FROM {READ_PARQUET} GROUP BY event_id HAVING count(*) > 1) "
            'ORDER BY "partition", "offset"'
        )
        try:
            several: dict[str, list[Request]] = {}
            for (record,) in self._con.execute(repeated, [requests, requests]).fetchall():
                copy = self._decode(record)
                if isinstance(copy, (EvaluationRequested, BatchEvaluationRequested)):
                    several.setdefault(copy.event_id, []).append(copy)
            done: set[str] = set()
            cursor = self._con.execute(sql, [requests, decisions, since, since, until, until])
            while batch := cursor.fetchmany(2000):
                for raw_request, raw_decision in batch:
                    request, decision = self._decode(raw_request), self._decode(raw_decision)
                    if not (
                        isinstance(request, (EvaluationRequested, BatchEvaluationRequested))
                        and isinstance(decision, (DecisionRecorded, BatchDecisionRecorded))
                        and decision.request_id == request.event_id  # records, not columns
                    ):
                        continue
                    if request.event_id in several:
                        if request.event_id in done:
                            continue
                        done.add(request.event_id)
                        request = answered(decision, several[request.event_id])
                        if not _within(request.occurred_at, since, until):
                            continue  # the copy the decision answered is outside the window
                    yield request, decision
        except duckdb.Error as exc:
            raise ExportError(f"reading the export at {self.path}: {exc}") from exc

    def close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(Exception):
                self._con.close()
            self._con = None


def single_pairs(
    pairs: Iterable[tuple[Request, Decision]],
) -> Iterator[tuple[EvaluationRequested, DecisionRecorded]]:
    """Pairs of one request and its decision, a pre-evaluation batch taken item by item (each
    item as the single request :func:`ledger.core.evaluate.evaluate_batch` decided it as:
    request id ``<batch request id>/<item id>``, the batch's principal and context)."""
    for request, decision in pairs:
        if isinstance(request, EvaluationRequested) and isinstance(decision, DecisionRecorded):
            yield request, decision
            continue
        if not (
            isinstance(request, BatchEvaluationRequested)
            and isinstance(decision, BatchDecisionRecorded)
        ):
            continue
        if not answers_batch(request, decision):
            continue  # not this request's answer: a copy sent under its id
        # By position, as the evaluator answers: by item id, two items under one id took the
        # last one's answer, and an id recorded cut lost its item (a maintainability review).
        for item, answer in zip(request.items, decision.decisions, strict=True):
            single = item_request(request, item)  # as the evaluator decided it
            # Named as every reader names an item (a README check: simulate showed the
            # evaluator's REQUEST/ITEM, which `decisions`, `replay` and the queries do not take).
            rid = item_ref(request.event_id, item.item_id)
            yield (
                single,
                DecisionRecorded(
                    event_id=f"{decision.event_id}/{item.item_id}",
                    occurred_at=decision.occurred_at,
                    actor=decision.actor,
                    request_id=rid,
                    requested_at=request.occurred_at,
                    action=answer.action,
                    principal=request.principal,
                    resource=answer.resource,
                    determination=answer.determination,
                    constraints=answer.constraints,
                    reasons=answer.reasons,
                    reason_code=answer.reason_code,
                    policy=answer.policy,
                    policy_version=answer.policy_version,
                    rule=answer.rule,
                    grant_id=answer.grant_id,
                    governance_position=decision.governance_position,
                    evaluator_id=decision.evaluator_id,
                ),
            )
