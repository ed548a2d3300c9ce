"""Exact reproduction of a recorded decision (DESIGN §9): rebuild the governance state at the
decision's recorded ``governance_position``, re-evaluate its request with the core at the
decision's own ``occurred_at``, and compare the result with the record field by field.

Fields that only the writer knows are not compared (:data:`WRITER_FIELDS`): how long it took,
which evaluator instance wrote it, and its place in that writer's hash chain. A decision whose
trace was reduced by the writer because it would not fit a Kafka record (``reason_code``
``trace_too_large``) is compared on what the reduced trace kept (:data:`REDUCED_FIELDS` are
left out) and the re-evaluated determination is reported beside it.

A decision recorded by an earlier release is compared as that release recorded it, with a
note saying so: reasons in an earlier wording (:func:`~ledger.core.wordings.earlier_wording`),
names over their limit recorded whole (until 2026-12-06), and a request whose
``requested_by`` is no principal decided as if it were (until 2026-12-06: it is
``invalid_request`` now), a request decided without charging the matching of its names
against its principal's grants and the policies' ``governs`` (until 2026-12-06: it may be
``evaluation_budget_exceeded`` now), and conditions run as before 2026-12-07 (two lists
compared and a list looked up in a list charged less, ``startsWith`` of a list of texts).

A decision an evaluator answered ``governance_unreadable`` (it could not read a governance
record a newer release wrote: ``LedgerState.unreadable``) is re-decided lacking what it names,
with a note saying what it is with every record of its position the history holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ledger.audit.sources import Decision, Request, answered
from ledger.core.answering import REDUCED_FIELDS, WRITER_FIELDS
from ledger.core.cel import rules_before
from ledger.core.evaluate import (
    INVALID_REQUEST,
    TRACE_TOO_LARGE,
    evaluate,
    evaluate_batch,
    unread_by,
)
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    DecisionRecorded,
    EvaluationRequested,
)
from ledger.core.history import HistoryEntry, OffsetGap, PositionFolder, log_gaps, state_at_position
from ledger.core.jsonform import format_timestamp, to_json_value
from ledger.core.limits import recorded_id, recorded_name
from ledger.core.state import POLICY, LedgerState, with_unreadable
from ledger.core.wordings import earlier_wording

__all__ = [
    "WRITER_FIELDS",
    "REDUCED_FIELDS",
    "Checked",
    "Difference",
    "Reproduction",
    "Reproductions",
    "reproduce",
    "reproduce_answered",
    "reproduce_many",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Difference:
    """One field whose recorded value the re-evaluation does not give (JSON forms)."""

    field: str
    recorded: Any
    reproduced: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Reproduction:
    """The recorded decision, what the core decides again, and what differs."""

    recorded: Decision
    request: Request
    reproduced: Decision
    differences: tuple[Difference, ...]
    ignored: tuple[str, ...]
    note: str | None = None

    @property
    def reproduces(self) -> bool:
        return not self.differences


def _reduced(decision: Decision) -> bool:
    if isinstance(decision, DecisionRecorded):
        return decision.reason_code == TRACE_TOO_LARGE
    return bool(decision.decisions) and all(
        d.reason_code == TRACE_TOO_LARGE for d in decision.decisions
    )


def reproduce(
    decision: Decision,
    request: Request,
    history: Iterable[HistoryEntry],
    *,
    state: LedgerState | None = None,
    held: HeldOffsets | None = None,
) -> Reproduction:
    """Re-decide ``request`` as the evaluator did for ``decision`` and compare.

    ``history`` is the ledger's governance history (from Kafka or an export); only the events
    at or before the decision's ``governance_position`` are folded. ``state``: that fold
    already done (a batch folds the history once for many decisions:
    :class:`~ledger.core.history.PositionFolder`), and ``held`` what the history holds
    (:meth:`HeldOffsets.of` it); ``history`` is then not read.
    """
    if state is None or held is None:
        entries = history if isinstance(history, (list, tuple)) else list(history)
        if state is None:
            state = state_at_position(entries, decision.governance_position)
        if held is None:
            held = HeldOffsets.of(entries)
    again: Decision
    notes = []
    asker_checked = True
    lacked = unread_by(decision)
    if lacked:  # its evaluator could not read records of these (a newer release's): as then
        read_all, state = state, with_unreadable(state, state.unreadable | lacked)
    if isinstance(decision, DecisionRecorded) and isinstance(request, EvaluationRequested):
        again = evaluate(
            state, request, now=decision.occurred_at, evaluator_id=decision.evaluator_id
        )
        if again.reason_code == INVALID_REQUEST != decision.reason_code:
            # Decided before requested_by was held to a principal's form: decided as then.
            again = evaluate(
                state,
                request,
                now=decision.occurred_at,
                evaluator_id=decision.evaluator_id,
                check_asker=False,
            )
            asker_checked = False
            notes.append(
                "it was decided as evaluators did before requested_by was held to a "
                "principal's form (a release of 2026-12-06): re-decided so; decided now, it is "
                f"error (invalid_request); it was decided at {format_timestamp(decision.occurred_at)}: "
                "one decided after your evaluators were upgraded did not follow their rules"
            )
    elif isinstance(decision, BatchDecisionRecorded) and isinstance(
        request, BatchEvaluationRequested
    ):
        again = evaluate_batch(
            state, request, now=decision.occurred_at, evaluator_id=decision.evaluator_id
        )
    else:
        raise TypeError(f"a {type(decision).__name__} does not answer a {type(request).__name__}")
    if not _same(decision, again):
        # Recorded by an earlier release, whose rules the core keeps for this (exactly: a
        # review found a no-budget re-run let a forged "within budget" answer through), newest
        # first: each release's conditions (rules_before), its names' matching charged
        # (2026-12-06 on) or not (before).
        for before, charged, model in _EARLIER_RELEASES:
            if charged and not asker_checked:
                continue  # no release left the asker unchecked and charged matching (a review)
            then = _earlier(
                decision, request, state, check_asker=asker_checked, before=before, charged=charged
            )
            if not _same(decision, then):
                continue
            notes.append(
                f"it was decided under {model}: re-decided so; decided now, it is "
                f"{_outcome(again)}; it was decided at "
                f"{format_timestamp(decision.occurred_at)}: one decided after your evaluators "
                "were upgraded did not follow their rules"
            )
            again = then
            break
    if lacked:
        notes.append(_unread_note(decision, request, read_all, lacked, asker_checked))
    ignored: tuple[str, ...] = WRITER_FIELDS + _not_recorded(decision)
    if _reduced(decision):
        ignored = WRITER_FIELDS + REDUCED_FIELDS
        notes.append(
            "the writer reduced this trace (it would not fit a Kafka record), so its "
            f"determination was recorded as error; re-evaluated: {_outcome(again)}"
        )
    lacking = held.lacking(decision.governance_position)
    if lacking:
        # Re-deciding without them is not the decision's state: say so, not only the diff.
        notes.append(
            "the decision applied governance records the history read does not hold: "
            f"{', '.join(lacking)}; they were deleted (from an export: `ledger audit verify` "
            "says where), or do not decode with this version"
        )
    recorded_form, again_form = to_json_value(decision), to_json_value(again)
    cut = _names_cut(recorded_form, request)
    if cut is not None:
        recorded_form = cut
        notes.append(
            "it records names over their limit whole, as evaluators did before a release of "
            "2026-12-06 (they are recorded cut to the limit now, with their length); it was "
            f"decided at {format_timestamp(decision.occurred_at)}: one decided after your "
            "evaluators were upgraded did not follow their rules"
        )
    note = "; ".join(notes) or None
    differences = tuple(
        Difference(field=name, recorded=recorded_form.get(name), reproduced=again_form.get(name))
        for name in recorded_form
        if name not in ignored and recorded_form.get(name) != again_form.get(name)
    )
    reworded = _reworded(differences)
    if reworded:
        differences = ()
        note = "; ".join(
            [*filter(None, [note]), f"its reasons are an earlier release's wording ({reworded})"]
        )
    return Reproduction(
        recorded=decision,
        request=request,
        reproduced=again,
        differences=differences,
        ignored=ignored,
        note=note,
    )


def _unread_note(
    decision: Decision,
    request: Request,
    read_all: LedgerState,
    lacked: frozenset[tuple[str, str]],
    asker_checked: bool,
) -> str:
    """What a reproduction of a ``governance_unreadable`` answer says: its evaluator lacked a
    record of ``lacked`` (a newer release's), and what ``read_all`` (the history as read, every
    record of the decision's position) decides."""
    if isinstance(decision, DecisionRecorded) and isinstance(request, EvaluationRequested):
        full: Decision = evaluate(
            read_all,
            request,
            now=decision.occurred_at,
            evaluator_id=decision.evaluator_id,
            check_asker=asker_checked,
        )
    else:
        assert isinstance(request, BatchEvaluationRequested)
        full = evaluate_batch(
            read_all, request, now=decision.occurred_at, evaluator_id=decision.evaluator_id
        )
    whose = ", ".join(  # a policy's: which one is not recorded (any may change the choice)
        sorted({"a policy" if kind == POLICY else f"{name}'s authority" for kind, name in lacked})
    )
    return (
        f"its evaluator could not read a governance record of {whose} (a newer release wrote "
        f"it; `ledger ps` says so of such an evaluator): re-decided so; with every record of "
        f"its position the history holds, it is {_outcome(full)}"
    )


def _over_budget(decision: Decision) -> bool:
    """Was the decision, or one of a pre-evaluation's items, ``evaluation_budget_exceeded``?"""
    if isinstance(decision, DecisionRecorded):
        return decision.reason_code == _OVER_BUDGET
    return any(d.reason_code == _OVER_BUDGET for d in decision.decisions)


_OVER_BUDGET: Final = "evaluation_budget_exceeded"


def _not_recorded(decision: Decision) -> tuple[str, ...]:
    """Fields added since ``decision`` was recorded, which it therefore lacks: a
    pre-evaluation's ``stale_after`` (2026-12-07), null on one written before."""
    if isinstance(decision, BatchDecisionRecorded) and decision.stale_after is None:
        return ("stale_after",)
    return ()


def _same(recorded: Decision, again: Decision) -> bool:
    """Does ``again`` give every field ``recorded`` holds but the writer's (and a reduced
    trace's), its reasons perhaps in an earlier release's wording (a review: a decision
    recorded in an older wording, for a principal now over budget, was not re-decided under
    the earlier cost model, and did not reproduce)?"""
    a, b = to_json_value(recorded), to_json_value(again)
    ignored = (
        WRITER_FIELDS + _not_recorded(recorded) + (REDUCED_FIELDS if _reduced(recorded) else ())
    )
    differences = tuple(
        Difference(field=k, recorded=a.get(k), reproduced=b.get(k))
        for k in a
        if k not in ignored and a.get(k) != b.get(k)
    )
    return not differences or _reworded(differences) is not None


_EARLIER_RELEASES: Final = (
    (
        "decimal_literals",
        True,
        "the rules before a later release of 2026-12-07, under which a decimal context value "
        "or grant condition fact in arithmetic with a number written with a fraction "
        "(context.x * 1.1) was a fault (no such overload: decimal * double)",
    ),
    (
        "list_costs",
        True,
        "the rules before a release of 2026-12-07, which charged comparing two lists and "
        "looking a list up in a list less, and let startsWith()/endsWith() take a list of "
        "texts (any of them)",
    ),
    (
        "list_costs",
        False,
        "the cost model before a release of 2026-12-06, which did not charge trying a "
        "principal's grants nor finding which policy governs the action",
    ),
)
"""The releases whose rules a recorded decision may have followed, newest first: the first
change to conditions it predates (:data:`~ledger.core.cel.RULE_CHANGES`), whether its names'
matching was charged, and what the reproduction's note says of it."""


def _earlier(
    decision: Decision,
    request: Request,
    state: LedgerState,
    *,
    check_asker: bool,
    before: str,
    charged: bool,
) -> Decision:
    """``request`` decided again as a release before the change ``before`` decided it
    (:func:`~ledger.core.cel.rules_before`), its names' matching ``charged`` (from 2026-12-06)
    or not (before)."""
    with rules_before(before):
        if isinstance(decision, DecisionRecorded) and isinstance(request, EvaluationRequested):
            return evaluate(
                state,
                request,
                now=decision.occurred_at,
                evaluator_id=decision.evaluator_id,
                check_asker=check_asker,
                charge_matching=charged,
            )
        assert isinstance(request, BatchEvaluationRequested)
        return evaluate_batch(
            state,
            request,
            now=decision.occurred_at,
            evaluator_id=decision.evaluator_id,
            charge_matching=charged,
        )


class HeldOffsets:
    """The governance records a history holds, per position key (``topic/partition``), as its
    gaps (:func:`~ledger.core.history.log_gaps`, found once): what a decision's position
    applied that the history lacks is then found without reading the history again (a batch
    asks it for every decision)."""

    __slots__ = ("_logs",)

    def __init__(self, logs: Mapping[str, tuple[list[OffsetGap], int]]) -> None:
        self._logs = logs  # key -> (gaps below its newest record, its newest offset)

    @classmethod
    def of(cls, entries: Iterable[HistoryEntry]) -> HeldOffsets:
        offsets: dict[str, list[int]] = {}
        for entry in entries:
            offsets.setdefault(entry.position_key, []).append(entry.offset)
        logs = {}
        for key, seen in offsets.items():
            newest = max(seen)
            gaps = [g for g in log_gaps(seen, newest + 1) if not g.repeated]
            logs[key] = (gaps, newest)
        return cls(logs)

    def lacking(self, position: Mapping[str, int]) -> list[str]:
        """The records ``position`` applied that the history does not hold, one text per key:
        every record of the key up to the cited offset must be there."""
        lacking = []
        for key, cited in sorted(position.items()):
            gaps, newest = self._logs.get(key, ([], -1))
            spans = [(g.first, min(g.last, cited)) for g in gaps if g.first <= cited]
            if not spans and newest >= cited:
                continue
            if not spans:  # the newest gone
                lacking.append(f"{key}@{cited} (it holds up to {newest})")
                continue
            if newest < cited:
                spans.append((newest + 1, cited))
            shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
            lacking.append(f"{key}@{cited} (it lacks offset(s) {shown} of them)")
        return lacking


def _names_cut(form: dict[str, Any], request: Request) -> dict[str, Any] | None:
    """``form`` (a recorded decision's JSON form) with each name it holds whole over its limit
    cut as the evaluator records it now (:func:`~ledger.core.limits.recorded_name`,
    :func:`~ledger.core.limits.recorded_id`), or ``None`` when it holds none: an evaluator
    until 2026-12-06 copied a request's over-long principal, action, resource (and a
    pre-evaluation's items' ids and names) whole into its ``request_too_large`` answer. Only a
    recorded value equal to the request's own is cut: anything else still differs."""
    cut = dict(form)
    if isinstance(request, EvaluationRequested):
        names = {
            "principal": request.principal,
            "action": request.action,
            "resource": request.resource,
            "requested_by": request.requested_by or request.actor,
        }
        _cut_into(cut, names, recorded_name)
    else:
        _cut_into(cut, {"principal": request.principal}, recorded_name)
        items = form.get("decisions")
        if isinstance(items, list) and len(items) == len(request.items):
            cut_items = []
            for answered_item, item in zip(items, request.items, strict=True):
                one = dict(answered_item) if isinstance(answered_item, dict) else answered_item
                if isinstance(one, dict):
                    _cut_into(one, {"item_id": item.item_id}, recorded_id)
                    _cut_into(
                        one, {"action": item.action, "resource": item.resource}, recorded_name
                    )
                cut_items.append(one)
            cut["decisions"] = cut_items
    return None if cut == form else cut


def _cut_into(
    form: dict[str, Any], whole: Mapping[str, str | None], cut: Callable[[str], str]
) -> None:
    for name, value in whole.items():
        if value is not None and form.get(name) == value:
            form[name] = cut(value)


def _reworded(differences: tuple[Difference, ...]) -> str | None:
    """What the recorded reasons are about, when a decision's reasons (a pre-evaluation's
    items' reasons) are its only difference and each recorded one is an earlier release's
    wording of the one given now (:func:`~ledger.core.wordings.earlier_wording`): the same
    decision, not another."""
    pairs = _reason_pairs(differences)
    if pairs is None:
        return None
    changed = []
    for recorded, again in pairs:
        if not isinstance(recorded, list) or not isinstance(again, list):
            return None
        if len(recorded) != len(again):
            return None
        for new, old in zip(again, recorded, strict=True):
            if new != old:
                changed.append(earlier_wording(str(new), str(old)))
    if not changed or None in changed:
        return None
    return ", ".join(dict.fromkeys(str(w) for w in changed))


def _reason_pairs(differences: tuple[Difference, ...]) -> list[tuple[Any, Any]] | None:
    """``(recorded, reproduced)`` reasons wherever they differ, when nothing else does: a
    decision's own, or each item's of a pre-evaluation (``decisions``); else ``None``."""
    fields = [d.field for d in differences]
    if fields == ["reasons"]:
        return [(differences[0].recorded, differences[0].reproduced)]
    if fields != ["decisions"]:
        return None
    recorded, again = differences[0].recorded, differences[0].reproduced
    if not isinstance(recorded, list) or not isinstance(again, list) or len(recorded) != len(again):
        return None
    pairs = []
    for old, new in zip(recorded, again, strict=True):
        if not isinstance(old, dict) or not isinstance(new, dict):
            return None
        if {k: v for k, v in old.items() if k != "reasons"} != {
            k: v for k, v in new.items() if k != "reasons"
        }:
            return None
        pairs.append((old.get("reasons"), new.get("reasons")))
    return pairs


def _outcome(decision: Decision) -> str:
    if isinstance(decision, DecisionRecorded):
        return f"{decision.determination.value} ({decision.reason_code or '-'})"
    return ", ".join(f"{d.item_id}: {d.determination.value}" for d in decision.decisions)


# --------------------------------------------------------------------------- many at once

NO_REQUEST: Final = "its request is not in the ledger"
OTHER_KIND: Final = (
    "its request is of another kind (a single request for a pre-evaluation or the reverse)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Checked:
    """One decision of :func:`reproduce_many`: reproduced (``reproduction``), or not
    reproducible (``why``, one of a few texts, counted by kind in a summary)."""

    decision: Decision
    reproduction: Reproduction | None = None
    copies: int = 0
    """How many requests carry the decision's request id (one re-evaluated: :func:`answered`)."""
    why: str | None = None

    @property
    def verdict(self) -> str:
        """``reproduces``, ``differs`` or ``not_reproducible``."""
        if self.reproduction is None:
            return "not_reproducible"
        return "reproduces" if self.reproduction.reproduces else "differs"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reproductions:
    """What :func:`reproduce_many` found, in the order the decisions were given."""

    checked: tuple[Checked, ...]
    full_folds: int
    """How many times the governance history was folded from its beginning (1 when the
    decisions' positions only grow)."""


def reproduce_answered(
    decision: Decision,
    copies: Sequence[Request],
    history: Iterable[HistoryEntry],
    *,
    state: LedgerState | None = None,
    held: HeldOffsets | None = None,
) -> Reproduction:
    """:func:`reproduce` ``decision`` against the copy of its request it answered
    (:func:`~ledger.audit.sources.answered`, ``copies`` not empty). A pre-evaluation records
    its items' names but not their facts, so copies of one under its id with other facts look
    alike to that choice: the copy it answered is then the one whose re-evaluation reproduces
    it (a red team: a copy's answer "reproduced" against the agent's own request would not,
    and the agent's against the copy's). ``state``/``held`` as for :func:`reproduce`."""
    entries = history if isinstance(history, (list, tuple)) else list(history)
    if state is None:
        state = state_at_position(entries, decision.governance_position)
    if held is None:
        held = HeldOffsets.of(entries)
    best = answered(decision, copies)
    first = reproduce(decision, best, (), state=state, held=held)
    if first.reproduces or not isinstance(decision, BatchDecisionRecorded):
        return first
    for other in copies:
        if other is not best and isinstance(other, BatchEvaluationRequested):
            again = reproduce(decision, other, (), state=state, held=held)
            if again.reproduces:
                return again
    return first


def reproduce_many(
    decisions: Sequence[Decision],
    requests: Mapping[str, Sequence[Request]],
    history: Iterable[HistoryEntry],
    *,
    progress: Callable[[int], None] | None = None,
) -> Reproductions:
    """:func:`reproduce` each of ``decisions`` (``requests``: every copy of each request id,
    :meth:`~ledger.audit.sources.LedgerSource.requests_for`), folding ``history`` once: the
    decisions are taken in the order of their governance positions
    (:class:`~ledger.core.history.PositionFolder`), each re-decided against the same state as
    alone. ``progress`` is called with how many are done after each."""
    entries = history if isinstance(history, (list, tuple)) else list(history)
    folder, held = PositionFolder(entries), HeldOffsets.of(entries)
    order = sorted(
        range(len(decisions)),
        key=lambda i: PositionFolder.order(decisions[i].governance_position),
    )
    found: dict[int, Checked] = {}
    for done, index in enumerate(order, 1):
        decision = decisions[index]
        copies = requests.get(decision.request_id, ())
        request = answered(decision, copies) if copies else None
        if request is None:
            found[index] = Checked(decision=decision, why=NO_REQUEST)
        elif isinstance(decision, DecisionRecorded) != isinstance(request, EvaluationRequested):
            found[index] = Checked(decision=decision, copies=len(copies), why=OTHER_KIND)
        else:
            state = folder.state_at(decision.governance_position)
            found[index] = Checked(
                decision=decision,
                reproduction=reproduce_answered(decision, copies, (), state=state, held=held),
                copies=len(copies),
            )
        if progress is not None:
            progress(done)
    return Reproductions(
        checked=tuple(found[i] for i in range(len(decisions))), full_folds=folder.full_folds
    )
