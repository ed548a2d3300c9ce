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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from ledger.audit.export import MANIFEST, ExportPath, Manifest, read_manifest
from ledger.codec import Codec, default_codec
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    DecisionRecorded,
    EvaluationRequested,
)
from ledger.core.history import HistoryEntry
from ledger.errors import CodecError, ExportError, UsageError
from ledger.kafka.governance import GOVERNANCE_TYPES, load_history
from ledger.kafka.reading import position_key, read_topic
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

    def request(self, request_id: str) -> Request | None:
        """The evaluation request with this id, if it is in the ledger."""
        ...

    def history(self) -> list[HistoryEntry]:
        """Every governance event in log order, with where it was read."""
        ...

    def pairs(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[tuple[Request, Decision]]:
        """Each request asked in ``[since, until)`` with the decision recorded for it (the
        first, if a crash-restart recorded two), oldest request first."""
        ...


def _not_found(decision_id: str, where: str) -> UsageError:
    return UsageError(
        f"no decision {decision_id!r} in the ledger at {where} (give a decision id or request "
        "id; `ledger decisions` lists them)"
    )


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
        found: Decision | None = None
        for positioned in read_topic(
            self.bootstrap, [self.topics.decisions], codec=self.codec, security=self.security
        ):
            event = positioned.event
            if isinstance(event, (DecisionRecorded, BatchDecisionRecorded)) and (
                event.event_id == decision_id or event.request_id == decision_id
            ):
                found = found or event  # the first recorded, as pairs() takes it
        if found is None:
            raise _not_found(decision_id, self.where)
        return found

    def request(self, request_id: str) -> Request | None:
        topic = [self.topics.evaluation_requests]
        for positioned in read_topic(
            self.bootstrap, topic, codec=self.codec, security=self.security
        ):
            event = positioned.event
            if isinstance(event, (EvaluationRequested, BatchEvaluationRequested)) and (
                event.event_id == request_id
            ):
                return event
        return None

    def history(self) -> list[HistoryEntry]:
        return load_history(self.bootstrap, self.topics, codec=self.codec, security=self.security)

    def pairs(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[tuple[Request, Decision]]:
        requests: dict[str, Request] = {}
        topic = [self.topics.evaluation_requests]
        for positioned in read_topic(
            self.bootstrap, topic, codec=self.codec, security=self.security
        ):
            event = positioned.event
            if isinstance(event, (EvaluationRequested, BatchEvaluationRequested)) and _within(
                event.occurred_at, since, until
            ):
                requests.setdefault(event.event_id, event)
        found: dict[str, Decision] = {}
        for positioned in read_topic(
            self.bootstrap, [self.topics.decisions], codec=self.codec, security=self.security
        ):
            event = positioned.event
            if not isinstance(event, (DecisionRecorded, BatchDecisionRecorded)):
                continue
            if event.request_id in requests:
                found.setdefault(event.request_id, event)
        ordered = sorted(requests.values(), key=lambda r: r.occurred_at)
        for request in ordered:
            decision = found.get(request.event_id)
            if decision is not None:
                yield request, decision


def _within(at: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or at >= since) and (until is None or at < until)


# --------------------------------------------------------------------------- export


def _read(path: Path) -> Manifest:
    manifest = read_manifest(path)
    if manifest is None:
        raise ExportError(
            f"{path} is not a ledger export (no {MANIFEST}): run `ledger export --out {path}` first"
        )
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


def resolve_topics(path: ExportPath, topics: TopicNames) -> TopicNames:
    """The topic names the export at ``path`` holds: the prefix its manifest records (an export
    is read where it lies, whatever ``$LEDGER_TOPIC_PREFIX`` says). ``topics`` is unused but
    kept for callers that pass their own."""
    del topics
    return TopicNames(prefix=_read(Path(path)).prefix)


def topic_files(path: ExportPath, topic: str) -> list[str]:
    """The Parquet files of ``topic`` in the export at ``path``: exactly those its manifest
    lists (a file beyond the manifest is what a killed export left; the next export removes
    it), as ``ledger audit`` reads them. A listed file that is gone is one error line."""
    path = Path(path)
    files = sorted(path / str(f["path"]) for f in _read(path).files if f.get("topic") == topic)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise ExportError(
            f"{path} is damaged: {missing[0].relative_to(path)} is listed in its manifest but "
            f"missing; run `ledger export --out {path}` again into a fresh directory"
        )
    return [str(f) for f in files]


def connect() -> Any:
    """An in-memory DuckDB connection for reading export files (no progress bar: verify,
    reproduce and simulate print their own output, `--json` must stay one document)."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    return con


READ_PARQUET = "read_parquet(?, hive_partitioning = true, union_by_name = true)"
"""How the export's files of one topic are read: the file list is bound as a parameter, never
interpolated into the SQL; columns are matched by name across files."""


@dataclass(init=False)
class ExportSource:
    """History read from an export directory with DuckDB (``path``: a str or any path-like;
    one :class:`ExportError` line when it holds no export)."""

    path: Path
    topics: TopicNames
    codec: Codec | None = None

    def __init__(self, path: ExportPath, topics: TopicNames, codec: Codec | None = None) -> None:
        self.path = export_dir(path)
        self.topics = resolve_topics(self.path, topics)
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

    def _query(self, topic: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        files = topic_files(self.path, topic)
        if not files:
            return []
        if self._con is None:
            self._con = connect()
        import duckdb

        try:
            rows: list[Any] = self._con.execute(
                sql.replace("{files}", READ_PARQUET), [files, *params]
            ).fetchall()
        except duckdb.Error as exc:
            raise ExportError(f"reading {topic} from the export at {self.path}: {exc}") from exc
        return rows

    def _decode(self, record: bytes | None) -> Any:
        if record is None:
            return None
        try:
            return self._codec.decode(record)
        except CodecError:
            return None

    def decision(self, decision_id: str) -> Decision:
        rows = self._query(
            self.topics.decisions,
            "SELECT record FROM {files} WHERE event_id = ? OR request_id = ? "
            'ORDER BY occurred_at, "partition", "offset" LIMIT 1',
            [decision_id, decision_id],
        )
        event = self._decode(rows[0][0]) if rows else None
        if not isinstance(event, (DecisionRecorded, BatchDecisionRecorded)):
            raise _not_found(decision_id, self.where)
        return event

    def request(self, request_id: str) -> Request | None:
        rows = self._query(
            self.topics.evaluation_requests,
            "SELECT record FROM {files} WHERE event_id = ? LIMIT 1",
            [request_id],
        )
        event = self._decode(rows[0][0]) if rows else None
        return event if isinstance(event, (EvaluationRequested, BatchEvaluationRequested)) else None

    def history(self) -> list[HistoryEntry]:
        entries: list[HistoryEntry] = []
        for topic in (self.topics.policy_events, self.topics.grant_events):
            rows = self._query(
                topic, 'SELECT "partition", "offset", record FROM {files} ORDER BY 1, 2'
            )
            for partition, offset, record in rows:
                event = self._decode(record)
                if isinstance(event, GOVERNANCE_TYPES):
                    entries.append(
                        HistoryEntry(position_key(topic, partition), offset, event)  # type: ignore[arg-type]
                    )
        return entries

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
        try:
            cursor = self._con.execute(sql, [requests, decisions, since, since, until, until])
            while batch := cursor.fetchmany(2000):
                for raw_request, raw_decision in batch:
                    request, decision = self._decode(raw_request), self._decode(raw_decision)
                    if isinstance(
                        request, (EvaluationRequested, BatchEvaluationRequested)
                    ) and isinstance(decision, (DecisionRecorded, BatchDecisionRecorded)):
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
        answers = {d.item_id: d for d in decision.decisions}
        for item in request.items:
            answer = answers.get(item.item_id)
            if answer is None:
                continue
            rid = f"{request.event_id}/{item.item_id}"
            yield (
                EvaluationRequested(
                    event_id=rid,
                    occurred_at=request.occurred_at,
                    actor=request.actor,
                    action=item.action,
                    principal=request.principal,
                    resource=item.resource,
                    facts=item.facts,
                    context=request.context,
                ),
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
