"""The governance history read back from an export: what ``ledger replay --from DIR`` folds.

The export keeps every governance record's bytes (the ``record`` column), so the history is
rebuilt by decoding exactly what the ledger held, in log order, with the same position keys and
offsets as a read from Kafka (:func:`ledger.kafka.governance.read_governance`): replay from an
export and replay from Kafka fold the same events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pyarrow.parquet as pq

from ledger.audit.columns import columns_disagree, python_rows
from ledger.audit.export import ExportPath, read_manifest
from ledger.audit.footer import FooterProblem, footer_lie
from ledger.audit.manifest import Manifest, listed_file, no_export
from ledger.codec import Codec, default_codec
from ledger.core.events import CommandAccepted, GovernanceEvent
from ledger.core.history import HistoryEntry, offset_gaps
from ledger.core.text import clipped
from ledger.errors import CodecError, ExportError
from ledger.kafka.governance import Lacking, decode_governance, not_governance
from ledger.kafka.reading import position_key
from ledger.settings import TopicNames

__all__ = ["load_export_history", "check_export_history", "governance_gap_note"]


def load_export_history(
    export_dir: ExportPath,
    *,
    codec: Codec | None = None,
    lacking: Lacking | None = None,
) -> list[HistoryEntry]:
    """Every governance event of the export at ``export_dir``, in log order.

    Raises :class:`~ledger.errors.ExportError` when the directory holds no export. Records that
    are not governance events are skipped, as a read from Kafka skips them
    (:func:`check_export_history` reports them) and noted in ``lacking``, as
    :func:`~ledger.kafka.governance.read_governance` notes them.
    """
    return _read(export_dir, codec, check=False, lacking=lacking)[0]


def check_export_history(
    export_dir: ExportPath, *, codec: Codec | None = None
) -> tuple[list[HistoryEntry], list[str]]:
    """The governance history of the export at ``export_dir`` (as :func:`load_export_history`),
    and what is wrong with its rows, one line each: a record that does not decode as a
    governance event, a row whose columns (what analysts query) disagree with its record bytes,
    offsets missing or repeated within a partition (the governance topics are written without
    transactions, so their offsets have no gaps), rows missing before the offset the
    manifest says comes next, events an accepted command's answer names that are not there
    (:func:`_answered_unwritten`), and a file whose footer lies about its data (:func:`footer_lie`). ``ledger actor verify --from`` reports these beside the events
    it cannot prove."""
    return _read(export_dir, codec, check=True)


def _read(
    export_dir: ExportPath,
    codec: Codec | None,
    *,
    check: bool,
    lacking: Lacking | None = None,
) -> tuple[list[HistoryEntry], list[str]]:
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise ExportError(f"{export_dir} is not an export directory (it does not exist)")
    manifest = read_manifest(export_dir)
    if manifest is None:
        raise no_export(export_dir)
    codec = codec or default_codec()
    topics = TopicNames(prefix=manifest.prefix)
    wanted = (topics.policy_events, topics.grant_events)
    found: list[tuple[str, int, int, GovernanceEvent]] = []
    problems: list[str] = []
    offsets: dict[tuple[str, int], list[int]] = {}
    for entry in manifest.files:
        if entry["topic"] not in wanted:
            continue
        path = listed_file(export_dir, str(entry["path"]))
        try:
            table = pq.read_table(path, columns=None if check else _LOG_COLUMNS)
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read {path}: {exc}") from exc
        lie: FooterProblem | str | None = None
        if check:
            try:
                lie = footer_lie(str(path))
            except Exception as exc:  # a file built to break the check is evidence, not a crash
                lie = f"{type(exc).__name__}: {clipped(str(exc), 120)}"
        if isinstance(lie, FooterProblem):
            problems.append(f"{entry['path']} {lie.finding()}")
        elif lie is not None:
            problems.append(f"{entry['path']} has a footer that cannot be checked ({lie})")
        for row in (r for batch in table.to_batches(4_096) for r in python_rows(batch)):
            # The file's topic, as the manifest lists it: a row's own topic column is data an
            # export's writer could change (and one naming no governance topic broke the sort).
            topic, partition, offset = str(entry["topic"]), row["partition"], row["offset"]
            where = f"{topic} partition {partition} offset {offset}"
            offsets.setdefault((topic, partition), []).append(offset)
            try:
                event = decode_governance(codec, row["record"])
            except CodecError as exc:
                if check:
                    problems.append(not_governance(where, exc))
                elif lacking is not None:
                    lacking.note(exc, topic, partition, offset, topics, row["key"])
                continue
            if check:
                disagree = columns_disagree(event, row)
                if disagree is not None:
                    problems.append(
                        f"{where} ({type(event).__name__} {event.event_id}): {disagree}"
                    )
            found.append((topic, partition, offset, event))
    if check:
        problems.extend(_log_gaps(wanted, offsets, manifest))
        held = {event.event_id for *_, event in found}
        problems.extend(_answers_unwritten(export_dir, manifest, codec, topics, held))
    order = {topic: index for index, topic in enumerate(wanted)}
    found.sort(key=lambda item: (order[item[0]], item[1], item[2]))
    return [HistoryEntry(position_key(t, p), o, e) for t, p, o, e in found], problems


_LOG_COLUMNS: Final = ["topic", "partition", "offset", "key", "record"]


def _answers_unwritten(
    export_dir: Path, manifest: Manifest, codec: Codec, topics: TopicNames, held: set[str]
) -> list[str]:
    """:func:`_answered_unwritten` for ``actor verify --from``, from the answers' record bytes
    rather than their columns, which it does not hold to the bytes (a review: an answer's
    ``event_ids`` cell emptied, or set to text, hid the deleted event from it): one line per
    accepted answer naming events not among ``held`` (the ids of the export's governance
    records), or whose record does not decode. Only in a complete export, as the query."""
    if not manifest.complete:
        return []
    problems: list[str] = []
    for entry in manifest.files:
        if entry["topic"] != topics.command_results:
            continue
        path = listed_file(export_dir, str(entry["path"]))
        try:
            table = pq.read_table(path, columns=["partition", "offset", "record"])
        except (OSError, ValueError) as exc:
            problems.append(f"cannot read {entry['path']}: {clipped(str(exc), 200)}")
            continue
        for row in (r for batch in table.to_batches(4_096) for r in python_rows(batch)):
            where = f"{entry['topic']} partition {row['partition']} offset {row['offset']}"
            try:
                answer = codec.decode(row["record"])
            except CodecError as exc:
                problems.append(f"{where}: its record does not decode ({clipped(str(exc), 200)})")
                continue
            if not isinstance(answer, CommandAccepted):
                continue
            missing = [i for i in answer.event_ids if i not in held]
            if missing:
                problems.append(
                    _unwritten(
                        where, answer.command_type, answer.command_id, len(missing), missing[0]
                    )
                )
    return problems


def _answered_unwritten(export_dir: Path, manifest: Manifest) -> list[str]:
    """One line per accepted command answer naming governance events the export lacks (the
    named query ``governance_answered_missing``, the rule ``ledger audit verify`` holds the
    export to): the newest events deleted, with the manifest's offsets lowered, leave no gap in
    the logs, and no decision may cite them yet (an auditor's walkthrough: a grant's revocation
    hidden so, both verifiers said intact). Only in a complete export: one stopped part-way may
    have read the answers further than the events. A file that cannot be read is left to
    ``ledger audit verify``, which reports it."""
    if not manifest.complete:
        return []
    from ledger.audit.sql import connect, run_named_typed  # DuckDB: only when asked for

    try:
        con = connect(export_dir, manifest=manifest)
        try:
            found = run_named_typed(con, "governance_answered_missing", {}).records()
        finally:
            con.close()
    except ExportError:
        return []
    return [
        _unwritten(
            f"{row['topic']} partition {row['partition']} offset {row['offset']}",
            str(row["command_type"]),
            str(row["command_id"]),
            int(row["events_missing"]),
            str(row["first_missing_event"]),
        )
        for row in found
    ]


def _unwritten(where: str, command_type: str, command_id: str, count: int, first: str) -> str:
    """The line both checks of an answer naming events the export lacks write."""
    return (
        f"{where}: the accepted {command_type} {clipped(command_id, 120)} names {count} "
        f"governance event(s) not in the export, the first {clipped(first, 120)} (the "
        "processor writes them before its answer: the newest deleted with the manifest's "
        "offsets lowered, so every point-in-time answer after it is wrong; or a `--follow` "
        "export a flush behind: export again, then verify; keep this folder as evidence)"
    )


def governance_gap_note(export_dir: ExportPath, manifest: Manifest) -> str | None:
    """One line for a reader to print when a governance log of the export lacks offsets: a
    policy or grant event deleted from it (with the manifest edited to match) leaves every
    point-in-time answer after it wrong (the fold stops at the gap), though the queries and
    ``replay --at`` would answer on without a word (an auditor's walkthrough: a canary
    deleted, ``active_policies_at`` named a superseded version ``shadow`` and ``rollbacks``
    found none, exit 0); or, when every log is whole, an accepted command's answer names an
    event the export lacks (:func:`_answered_unwritten`, the newest deleted). Only the offsets
    and the answers are read. ``None`` when neither; a file that cannot be read is left to
    ``ledger audit verify``, which reports it."""
    export_dir = Path(export_dir)
    topics = TopicNames(prefix=manifest.prefix)
    wanted = (topics.policy_events, topics.grant_events)
    offsets: dict[tuple[str, int], list[int]] = {}
    for entry in manifest.files:
        if entry["topic"] not in wanted:
            continue
        try:
            table = pq.read_table(
                listed_file(export_dir, str(entry["path"])), columns=["partition", "offset"]
            )
        except (OSError, ValueError, ExportError):
            return None  # a file that cannot be read: left to `ledger audit verify` (a review)
        parts, numbers = table.column("partition").to_pylist(), table.column("offset").to_pylist()
        for partition, offset in zip(parts, numbers, strict=True):
            if partition is not None and offset is not None:
                offsets.setdefault((str(entry["topic"]), int(partition)), []).append(int(offset))
    # The newest events deleted with the manifest's offsets lowered leave no gap: the answers
    # that name them still tell (an auditor's walkthrough: `grants_of` showed a revoked grant
    # in force, with no note).
    gaps = _log_gaps(wanted, offsets, manifest) or _answered_unwritten(export_dir, manifest)
    if not gaps:
        return None
    more = f" (and {len(gaps) - 1} more)" if len(gaps) > 1 else ""
    return (
        f"{export_dir} lacks governance records: {gaps[0]}{more}; what the ledger held after "
        "them is not what this export answers (a record deleted from the export, or the "
        "export damaged): run `ledger audit verify --from "
        f"{export_dir}` and `ledger actor verify --from {export_dir}`, and answer from an "
        "export that passes them"
    )


def _log_gaps(
    topics: tuple[str, ...], offsets: dict[tuple[str, int], list[int]], manifest: Manifest
) -> list[str]:
    """The gaps in the governance logs ``topics`` of an export, from the offsets its rows hold
    and the next offset its manifest gives each partition (:func:`offset_gaps`), one line each."""
    return [
        gap
        for topic in topics
        for partition, end in sorted(manifest.offsets.get(topic, {}).items())
        for gap in offset_gaps(
            topic,
            partition,
            offsets.get((topic, partition), []),
            end,
            f"the manifest says {end} comes next",
        )
    ]
