"""The walk of one decision hash chain, and the findings it and ``ledger audit verify`` report.

:class:`ChainWalk` follows one chain's records in ``chain_seq`` order (each record holding the
hash of the one before it, and the evaluators' checkpoints vouching for its head) and reports
what breaks it: a record altered, missing, inserted or reordered, a chain going on after its
final checkpoint, records no checkpoint vouches for in time. It reads nothing itself:
:mod:`ledger.audit.verify` reads the export, checks each row against its record, and feeds the
walk. Pure, so the chain's rules can be read (and tested) apart from the files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ledger.core.jsonform import format_timestamp

__all__ = ["Problem", "ChainSummary", "ChainNode", "ChainCheckpoint", "ChainWalk"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One finding. The coordinates name the row found (for a missing record, the record
    after the gap, or the chain's last record when its newest records are missing)."""

    kind: str
    chain_id: str | None = None
    chain_seq: int | None = None
    topic: str | None
    partition: int | None
    offset: int | None
    decision_id: str | None = None
    """The id of the :attr:`subject` (a request's for a ``request``: the name stays, for those
    who read it in ``--json``)."""
    found: str
    expected: str
    at: datetime | None = None
    subject: str = "decision"
    """What was found wrong: a ``decision``, a ``checkpoint`` or a ``file`` of the export."""
    file: str | None = None
    """The export's file holding the row (relative to the export), for a row found altered."""

    def __str__(self) -> str:
        if self.subject == "file":  # a whole file: its finding starts with its path
            return f"{self.kind}: file {self.found}; expected {self.expected}"
        where = f"{self.topic}[{self.partition}]@{self.offset}" if self.topic is not None else "-"
        chain = f"chain {self.chain_id} #{self.chain_seq}" if self.chain_id else "no chain"
        what = f"{self.subject} {self.decision_id}" if self.decision_id else self.subject
        return f"{self.kind}: {what} at {where} ({chain}): {self.found}; expected {self.expected}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSummary:
    chain_id: str
    evaluator_id: str | None
    records: int
    last_seq: int
    checkpoint_seq: int | None
    final: bool
    unconfirmed: int
    """Records after the chain's last checkpoint."""


@dataclass(frozen=True, slots=True)
class ChainNode:
    seq: int
    prev_hash: str | None
    hash: str | None
    topic: str
    partition: int
    offset: int
    decision_id: str | None
    at: datetime | None
    evaluator_id: str | None
    decided: datetime | None = None
    """The record's own time (``occurred_at``, covered by its hash)."""


@dataclass(frozen=True, slots=True)
class ChainCheckpoint:
    seq: int
    head_hash: str
    final: bool
    topic: str
    partition: int
    offset: int
    evaluator_id: str


def _problem(kind: str, chain: str, node: ChainNode, found: str, expected: str) -> Problem:
    return Problem(
        kind=kind,
        chain_id=chain,
        chain_seq=node.seq,
        topic=node.topic,
        partition=node.partition,
        offset=node.offset,
        decision_id=node.decision_id,
        found=found,
        expected=expected,
        at=node.at,
    )


def _coords(node: ChainNode) -> str:
    return f"{node.decision_id} ({node.topic}[{node.partition}]@{node.offset})"


@dataclass
class ChainWalk:
    """Follows one chain's records in ``chain_seq`` order and reports what breaks it."""

    chain_id: str
    checkpoints: list[ChainCheckpoint]
    report: Callable[..., None]
    slack: timedelta | None = None
    """Report a chain decided longer than this after its last checkpoint (None: do not)."""
    last: ChainNode | None = None
    before_hash: str | None = None  # hash of the record before ``last``
    twins: list[ChainNode] = field(default_factory=list)  # other records with last's seq
    records: int = 0
    evaluator_id: str | None = None
    max_offset: dict[tuple[str, int], tuple[int, ChainNode]] = field(default_factory=dict)
    hash_at: dict[int, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._watch = {cp.seq for cp in self.checkpoints}
        finals = [cp.seq for cp in self.checkpoints if cp.final]
        self._final = min(finals) if finals else None
        self._after_final_reported = False
        self._confirmed = max(self._watch, default=0)
        self._unconfirmed: ChainNode | None = None  # the first record after the last checkpoint

    def add(self, node: ChainNode) -> None:
        self.records += 1
        self.evaluator_id = self.evaluator_id or node.evaluator_id
        self._check_order(node)
        if self._final is not None and node.seq > self._final and not self._after_final_reported:
            self._after_final_reported = True
            self.report(
                _problem(
                    "inserted",
                    self.chain_id,
                    node,
                    f"a record after the chain's final checkpoint (chain_seq {self._final})",
                    "no record after a chain's final checkpoint: its writer had stopped",
                )
            )
        last = self.last
        if last is None:
            if node.seq > 1:
                self.report(
                    _problem(
                        "missing",
                        self.chain_id,
                        node,
                        f"the chain's first record here is chain_seq {node.seq}",
                        f"chain_seq 1 to {node.seq - 1} before it (they are not in the export)",
                    ),
                    (1, node.seq - 1),
                )
            elif node.prev_hash is not None:
                self.report(
                    _problem(
                        "altered",
                        self.chain_id,
                        node,
                        f"the chain's first record has prev_hash {node.prev_hash}",
                        "prev_hash null (a chain's first record follows nothing)",
                    )
                )
            self._advance(node)
            return
        if node.seq == last.seq:
            self.twins.append(node)
            return
        self._settle_twins(node.prev_hash)
        last = self.last
        assert last is not None
        if node.seq > last.seq + 1:
            gap = node.seq - last.seq - 1
            self.report(
                _problem(
                    "missing",
                    self.chain_id,
                    node,
                    f"chain_seq {node.seq} follows chain_seq {last.seq} (decision {_coords(last)})",
                    (
                        f"chain_seq {last.seq + 1} with hash {node.prev_hash}"
                        if gap == 1
                        else f"{gap} records, chain_seq {last.seq + 1} to {node.seq - 1}, the "
                        f"last of them with hash {node.prev_hash}"
                    ),
                ),
                (last.seq + 1, node.seq - 1),
            )
        elif node.prev_hash != last.hash:
            self.report(
                _problem(
                    "altered",
                    self.chain_id,
                    last,
                    f"this record's hash is {last.hash}, but its successor {_coords(node)} "
                    f"vouches for {node.prev_hash}",
                    f"the record with hash {node.prev_hash} (this one was replaced or rewritten)",
                )
            )
        self._advance(node)

    def _advance(self, node: ChainNode) -> None:
        if self._unconfirmed is None and node.seq > self._confirmed:
            self._unconfirmed = node
        self.before_hash = self.last.hash if self.last is not None else None
        self.last = node
        if node.seq in self._watch:
            self.hash_at[node.seq] = node.hash

    def _check_order(self, node: ChainNode) -> None:
        where = (node.topic, node.partition)
        seen = self.max_offset.get(where)
        if seen is not None and node.offset < seen[0]:
            other = seen[1]
            self.report(
                _problem(
                    "reordered",
                    self.chain_id,
                    node,
                    f"chain_seq {node.seq} is at offset {node.offset}, before chain_seq "
                    f"{other.seq} at offset {other.offset} of the same partition",
                    "a chain's records in chain_seq order within each partition (the writer "
                    "wrote them in order)",
                )
            )
        if seen is None or node.offset > seen[0]:
            self.max_offset[where] = (node.offset, node)

    def _settle_twins(self, successor_vouches: str | None) -> None:
        """Several records claim one ``chain_seq``: keep the one the chain vouches for."""
        if not self.twins:
            return
        assert self.last is not None
        candidates = [self.last, *self.twins]
        keep = next((c for c in candidates if c.hash == successor_vouches), None)
        if keep is None:
            keep = next((c for c in candidates if c.prev_hash == self.before_hash), candidates[0])
        for other in candidates:
            if other is keep:
                continue
            self.report(
                _problem(
                    "inserted",
                    self.chain_id,
                    other,
                    f"a second record with chain_seq {other.seq}"
                    + (" (an identical copy)" if other.hash == keep.hash else ""),
                    f"one record per chain_seq: the chain continues through {_coords(keep)}",
                )
            )
        self.last, self.twins = keep, []
        if keep.seq in self._watch:
            self.hash_at[keep.seq] = keep.hash

    def finish(self) -> ChainSummary:
        vouched = next(
            (cp.head_hash for cp in self.checkpoints if self.last and cp.seq == self.last.seq),
            None,
        )
        self._settle_twins(vouched)
        last = self.last
        for cp in sorted(self.checkpoints, key=lambda c: c.seq):
            if last is None:
                continue  # reported by the caller: the whole chain is missing
            if cp.seq > last.seq:
                self.report(
                    _problem(
                        "missing",
                        self.chain_id,
                        last,
                        f"the chain ends at chain_seq {last.seq} (decision {_coords(last)})",
                        f"records up to chain_seq {cp.seq} with hash {cp.head_hash}, as the "
                        f"checkpoint at {cp.topic}[{cp.partition}]@{cp.offset} vouches "
                        "(its newest records were deleted)",
                    )
                )
                break
            have = self.hash_at.get(cp.seq, cp.head_hash)
            if have != cp.head_hash:
                self.report(
                    Problem(
                        kind="altered",
                        chain_id=self.chain_id,
                        chain_seq=cp.seq,
                        topic=cp.topic,
                        partition=cp.partition,
                        offset=cp.offset,
                        found=f"the chain's record chain_seq {cp.seq} has hash {have}",
                        expected=f"hash {cp.head_hash}, as this checkpoint vouches (the chain "
                        "up to it was rewritten)",
                        at=last.at,
                    )
                )
        confirmed = max((cp.seq for cp in self.checkpoints), default=None)
        last_seq = last.seq if last is not None else 0
        if last is not None and self._final is None:
            self._check_checkpointed(last, confirmed)
        return ChainSummary(
            chain_id=self.chain_id,
            evaluator_id=self.evaluator_id,
            records=self.records,
            last_seq=last_seq,
            checkpoint_seq=confirmed,
            final=self._final is not None,
            unconfirmed=max(0, last_seq - (confirmed or 0)),
        )

    def _check_checkpointed(self, last: ChainNode, confirmed: int | None) -> None:
        """A chain whose writer went on deciding longer than :attr:`slack` after a record no
        checkpoint in the export vouches for: its checkpoints are missing."""
        first = self._unconfirmed
        if self.slack is None or first is None or first.decided is None or last.decided is None:
            return
        if last.decided - first.decided <= self.slack:
            return
        after = f"chain_seq {confirmed}" if confirmed else "none in the export"
        minutes = int((last.decided - first.decided).total_seconds() // 60)
        self.report(
            Problem(
                kind="missing",
                chain_id=self.chain_id,
                chain_seq=first.seq,
                topic=first.topic,
                partition=first.partition,
                offset=first.offset,
                found=f"checkpoints missing: {last.seq - first.seq + 1} record(s) after the "
                f"chain's last checkpoint ({after}), decided over {minutes} minute(s), from "
                f"{format_timestamp(first.decided)} (decision {first.decision_id}) to "
                f"{format_timestamp(last.decided)}",
                expected="a checkpoint of the chain within seconds of each decision while its "
                "writer runs (deleted with their manifest entries: verify a new export, "
                "`ledger export --out NEW`, and compare its chain-checkpoints)",
                at=first.at,
                subject="checkpoint",
            )
        )
