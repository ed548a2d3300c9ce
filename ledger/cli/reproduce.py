"""``ledger replay --decision ID``: reproduce one recorded decision exactly (DESIGN §9);
``ledger replay --decisions``: many in one run, the governance history folded once.

The option belongs to ``ledger replay`` (:mod:`ledger.cli.replay`); finding the decision, its
request and the governance history is :mod:`ledger.audit.sources`'s, re-deciding and comparing
:mod:`ledger.audit.reproduce`'s. This module prints.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import click

from ledger.audit.reproduce import Checked, Reproduction, reproduce_answered, reproduce_many
from ledger.audit.sources import (
    Decision,
    ExportSource,
    KafkaSource,
    LedgerSource,
    answered,
    draw,
    no_decision,
)
from ledger.cli.common import (
    after_the_read,
    connection,
    load_settings,
    note_incomplete,
    read_history,
)
from ledger.cli.output import json_cell, policy_label, print_json, print_table, printable
from ledger.core.events import BatchDecisionRecorded, item_ref_splits
from ledger.core.jsonform import format_timestamp
from ledger.core.text import quoted
from ledger.errors import NotReproduced, UsageError

__all__ = ["reproduce_decision", "reproduce_decisions"]


def _named(named: Mapping[str, Sequence[Decision]], decision_id: str) -> list[tuple[Decision, str]]:
    """The decisions ``decision_id`` names among ``named`` (read for it and its
    :func:`item_ref_splits`), each with what it is: its decision, or one item of a
    pre-evaluation as `ledger decisions` prints it (``REQUEST#ITEM``: its batch). Several
    under one id (its request decided again with another request: a copy someone wrote under
    its id) are each named with when they were decided and what."""
    found: list[tuple[Decision, str]] = []
    own = named.get(decision_id, ())
    for decision in own:
        when = (
            f", decided {format_timestamp(decision.occurred_at)}: {_summary(decision)}"
            if len(own) > 1
            else ""
        )
        found.append(
            (decision, f"decision {decision.event_id} of request {decision.request_id}{when}")
        )
    for batch_id, item in item_ref_splits(decision_id):
        for batch in named.get(batch_id, ()):
            if isinstance(batch, BatchDecisionRecorded) and any(
                i.item_id == item for i in batch.decisions
            ):
                found.append((batch, f"item {item} of pre-evaluation {batch_id}"))
    return found


def _looked_up(ids: Sequence[str]) -> list[str]:
    """What to read for ``ids``: each, and the batch id of each ``REQUEST#ITEM`` reading."""
    return [*ids, *(batch_id for i in ids for batch_id, _ in item_ref_splits(i))]


def _find(source: LedgerSource, decision_id: str, which: int | None = None) -> Decision:
    """The decision ``decision_id`` names: a decision or request id, or one item of a
    pre-evaluation as `ledger decisions` prints it (``REQUEST#ITEM``: its batch is reproduced,
    every item with it). Ids are free text, so a text that names more than one (a request whose
    own id reads as another's item, or a request decided again) is refused, naming each in
    order, never one taken for the other, unless ``which`` picks one (1: the first named)."""
    found = _named(source.decisions(_looked_up([decision_id])), decision_id)  # one read
    if not found:
        raise no_decision(decision_id, source.where)
    if which is not None and which > len(found):
        raise UsageError(
            f"--which {which}: {quoted(decision_id, 80)} names "
            + (f"{len(found)} decisions (--which 1 to {len(found)})" if len(found) > 1 else "one "
               "decision: leave out --which")
        )  # fmt: skip
    if len(found) > 1 and which is None:
        listed = "; ".join(f"{n}) {what}" for n, (_, what) in enumerate(found, 1))
        if len({d.event_id for d, _ in found}) == 1:
            raise UsageError(_decided_again(decision_id, found[0][0].request_id, listed))
        raise UsageError(
            f"{quoted(decision_id, 80)} names {len(found)} decisions ({listed}): ids are "
            "free text; pass the decision id (`ledger decisions --request` lists them with "
            "--json), or --which N for the Nth named here"
        )
    decision, what = found[(which or 1) - 1]
    if len(found) > 1:
        click.echo(f"reproducing {which}) of {len(found)}: {what}", err=True)
    if decision.request_id != decision_id and decision.event_id != decision_id:
        click.echo(f"{decision_id} is {what}: reproducing the batch", err=True)
    return decision


def _decided_again(decision_id: str, request_id: str, listed: str) -> str:
    """Why a decision id that names several decisions is not reproduced as one: which one is
    meant only the auditor can say (a red team: one was taken silently, the copy's allow for
    the agent's deny, by the order Kafka's partitions were read)."""
    return (
        f"{quoted(decision_id, 80)} names several decisions: its request was decided again "
        f"with another request under its id (a copy someone holding the agent credential "
        f"wrote, or the request sent again with other facts): {listed}. `ledger decisions "
        f"--request {quoted(request_id, 80)} --json` shows each with its facts; --which N "
        "reproduces the Nth listed here; `ledger audit run requests_decided_twice` lists "
        "every such request"
    )


def _source(from_dir: Path | None, bootstrap: str | None) -> LedgerSource:
    """The export at ``from_dir`` (saying first what its manifest says is wrong with it), else
    the ledger's topics read as the auditor."""
    if from_dir is not None:
        source = ExportSource(from_dir)
        note_incomplete(from_dir)
        return source
    settings = load_settings(bootstrap)
    address, security = connection(settings, "auditor")
    return KafkaSource(address, settings.topics, security=security)


_FROM_REQUEST: Final = ("action", "principal", "resource", "facts", "context", "requested_by")
"""A decision's fields copied from its request: the decision's are hash-chained."""


def _request_altered(differences: list[dict[str, Any]], copies: int, where: str) -> str | None:
    """What to say when the request re-evaluated differs from what its decision recorded of it
    (an auditor's walkthrough: a request rewritten in an export, record bytes and columns, passed
    `audit verify` and `actor verify`, and `replay` sent them back to `audit verify`)."""
    # A field the decision holds None for is left out: a decision written before the field
    # existed (requested_by, before 2026-12-05) records none of it (a review: such a decision
    # was called proof of an altered request).
    fields = [
        d["field"] for d in differences if d["field"] in _FROM_REQUEST and d["recorded"] is not None
    ]
    if not fields or copies > 1:
        return None
    return (
        f"the request at {where} differs from what its decision recorded of it "
        f"({', '.join(fields)}); the decision's fields are hash-chained, so if `ledger audit "
        "verify` finds the decision intact (it checks decisions, not requests), the request "
        "record was altered or replaced after it was decided"
    )


def _differences(result: Reproduction) -> list[dict[str, Any]]:
    return [
        {"field": d.field, "recorded": d.recorded, "reproduced": d.reproduced}
        for d in result.differences
    ]


def reproduce_decision(
    decision_id: str,
    from_dir: Path | None,
    bootstrap: str | None,
    as_json: bool,
    which: int | None = None,
) -> None:
    """``replay --decision``: find the decision and its request, re-decide, compare, print
    (``which``: the Nth of several decisions the id names, as its refusal lists them)."""
    source = _source(from_dir, bootstrap)
    decision = _find(source, decision_id, which)
    copies = source.requests(decision.request_id)
    request = answered(decision, copies) if copies else None
    if request is None:
        raise NotReproduced(
            f"decision {decision.event_id}: its request {decision.request_id} is not in the "
            f"ledger at {source.where}, so it cannot be re-evaluated"
        )
    result = reproduce_answered(decision, copies, read_history(source.history))
    copies_note = (
        f"{len(copies)} requests carry the id {decision.request_id} (a repeat, or a copy "
        "someone else wrote); re-evaluated the one the decision answered"
        if len(copies) > 1
        else None
    )
    differences = _differences(result)
    altered = _request_altered(differences, len(copies), source.where)
    if as_json:
        print_json(
            {
                "decision_id": decision.event_id,
                "request_id": decision.request_id,
                "decided_at": decision.occurred_at,
                "governance_position": dict(decision.governance_position),
                "reproduces": result.reproduces,
                "recorded": _outcome_json(result.recorded),
                "reproduced": _outcome_json(result.reproduced),
                "differences": differences,
                "not_compared": list(result.ignored),
                "note": result.note,
                "request_altered": altered,
                "request_copies": len(copies),
                "source": source.where,
            }
        )
    else:
        # Not a table cell: escaped here (a review: json_cell writes non-ASCII as it is, and
        # an export's record may hold what a terminal acts on).
        header = (
            f"decision {decision.event_id} (request {decision.request_id}), decided "
            f"{format_timestamp(decision.occurred_at)} at governance position "
            f"{json_cell(decision.governance_position)}, re-evaluated from {source.where}:"
        )
        click.echo(printable(header, None, one_line=True))
        for note in (result.note, copies_note, altered):
            if note:
                click.echo(f"  note: {printable(note, None, one_line=True)}")
        if differences:
            print_table(
                ["field", "recorded", "reproduced"],
                [
                    [d["field"], json_cell(d["recorded"]), json_cell(d["reproduced"])]
                    for d in differences
                ],
                title="fields that differ",
            )
        click.echo(f"  not compared (the writer's own): {', '.join(result.ignored)}")
    if not result.reproduces:
        names = ", ".join(d.field for d in result.differences)
        why = (
            "; its request record differs from what the decision recorded (see the note)"
            if altered
            else ""
        )
        raise NotReproduced(f"decision {decision.event_id} does not reproduce: {names} differ{why}")
    if not as_json:
        click.echo(f"  reproduces: {_summary(result.recorded)}")


def _outcome_json(decision: Any) -> dict[str, Any]:
    """What a decision (or each item of a batch) decided, for ``--json``."""
    if hasattr(decision, "determination"):
        return {
            "determination": decision.determination,
            "rule": decision.rule,
            "reason_code": decision.reason_code,
            "policy": decision.policy,
            "policy_version": decision.policy_version,
        }
    return {
        "items": [_outcome_json(item) | {"item_id": item.item_id} for item in decision.decisions]
    }


def _summary(decision: Any) -> str:
    if hasattr(decision, "determination"):
        where = (
            f", {policy_label(decision.policy, decision.policy_version)}" if decision.policy else ""
        )
        rule = decision.rule or decision.reason_code or "-"
        return f"{decision.determination.value} ({rule}{where})"
    return f"{len(decision.decisions)} batch items, identical"


# --------------------------------------------------------------------------- many at once

NO_SUCH = "no such decision"
SEVERAL = "the id names several decisions (pass the decision id)"
DECIDED_AGAIN = (
    "the decision id names several decisions: its request was decided again with another "
    "request under its id (`ledger decisions --request ID --json` shows each)"
)
_SHOWN = 20  # rows of each table in the text output; --json lists every decision
_PROGRESS_EVERY_S = 2.0
_SAY_START = 1_000  # decisions: a run this long says on stderr what it is reading


def _from_ids(source: LedgerSource, ids: Sequence[str]) -> tuple[list[Decision], dict[str, str]]:
    """The decisions ``ids`` name (each as ``--decision`` takes it, each decision once), and
    why each id that names none or several cannot be reproduced (which to take is the
    auditor's choice, as ``--decision`` refuses it)."""
    named = source.decisions(_looked_up(ids))  # one read
    decisions: dict[str, Decision] = {}
    unresolved: dict[str, str] = {}
    for decision_id in dict.fromkeys(ids):
        found = _named(named, decision_id)
        if len(found) == 1:
            decisions.setdefault(found[0][0].event_id, found[0][0])
        elif not found:
            unresolved[decision_id] = NO_SUCH
        else:
            one_id = len({d.event_id for d, _ in found}) == 1
            unresolved[decision_id] = DECIDED_AGAIN if one_id else SEVERAL
    return list(decisions.values()), unresolved


def read_ids(path: Path) -> list[str]:
    """The decision ids of an ``--ids`` file (``-``: stdin): one per line; blank lines and
    lines starting with ``#`` skipped."""
    try:
        text = click.get_text_stream("stdin").read() if str(path) == "-" else path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--ids {path}: cannot read it ({exc}); one decision id a line") from None
    ids = [line.strip() for line in text.splitlines()]
    ids = [i for i in ids if i and not i.startswith("#")]
    if not ids:
        raise UsageError(f"--ids {path} names no decision: one decision id a line")
    return ids


class _Progress:
    """A line on stderr every couple of seconds while a long run works."""

    def __init__(self, total: int) -> None:
        self.total, self.started, self.shown = total, time.monotonic(), time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.shown >= _PROGRESS_EVERY_S and done < self.total:
            self.shown = now
            click.echo(
                f"reproduced {done:,} of {self.total:,} decisions ({now - self.started:.0f} s)",
                err=True,
            )


def reproduce_decisions(
    *,
    from_dir: Path | None,
    bootstrap: str | None,
    since: datetime | None,
    until: datetime | None,
    ids_file: Path | None,
    sample: int | None,
    seed: int | None,
    as_json: bool,
) -> None:
    """``replay --decisions``: reproduce every decision of a window (or named in a file), or a
    random sample of them, folding the governance history once; a summary, and exit 12 when
    any differs or cannot be reproduced."""
    started = time.monotonic()
    source = _source(from_dir, bootstrap)
    unresolved: dict[str, str] = {}
    if sample is not None:
        seed = seed if seed is not None else random.SystemRandom().randrange(1_000_000)
    if ids_file is not None:
        decisions, unresolved = _from_ids(source, read_ids(ids_file))
        selected = len(decisions)
        if sample is not None and seed is not None:
            chosen = draw(selected, sample, seed)
            decisions = [d for i, d in enumerate(decisions) if i in chosen]
    elif sample is not None and seed is not None:
        selected, decisions = source.sampled_between(since, until, sample, seed)
    else:
        decisions = source.decided_between(since, until)
        selected = len(decisions)
    if sample is None or sample >= selected:
        seed = None  # nothing drawn: every one of them
    if not decisions and not unresolved:
        window = f"decided in [{_when(since)}, {_when(until)})"
        why = after_the_read(from_dir, since)
        raise UsageError(
            f"no decision {window} in the ledger at {source.where}" + (f": {why}" if why else "")
        )
    if len(decisions) >= _SAY_START:
        click.echo(
            f"reading the requests of {len(decisions):,} decisions and the history", err=True
        )
    requests = source.requests_for({d.request_id for d in decisions})
    history = read_history(source.history)
    found = reproduce_many(
        decisions, requests, history, progress=_Progress(len(decisions)) if decisions else None
    )
    rows = [_result(checked) for checked in found.checked] + [
        {"decision_id": i, "verdict": "not_reproducible", "why": why}
        for i, why in unresolved.items()
    ]
    counts = {
        v: sum(r["verdict"] == v for r in rows)
        for v in ("reproduces", "differs", "not_reproducible")
    }
    whys: dict[str, int] = {}
    for r in rows:
        if r["verdict"] == "not_reproducible":
            whys[r["why"]] = whys.get(r["why"], 0) + 1
    seconds = time.monotonic() - started
    summary = _summary_line(len(rows), counts, whys)
    if as_json:
        print_json(
            {
                "source": source.where,
                "since": since,
                "until": until,
                "ids_file": None if ids_file is None else str(ids_file),
                "selected": selected + len(unresolved),
                "sample": sample,
                "seed": seed,
                "decisions": len(rows),
                "reproduces": counts["reproduces"],
                "differs": counts["differs"],
                "not_reproducible": counts["not_reproducible"],
                "not_reproducible_why": whys,
                "full_folds": found.full_folds,
                "seconds": round(seconds, 3),
                "results": rows,
            }
        )
    else:
        drawn = f", a sample of {len(decisions):,} (--seed {seed})" if seed is not None else ""
        click.echo(
            f"{selected + len(unresolved):,} decisions {_what(ids_file, since, until)}{drawn}, "
            f"re-evaluated from {source.where}:"
        )
        _table(
            "decisions that differ (`ledger replay --decision ID` shows each field)",
            ["decision", "request", "decided at", "fields that differ"],
            [
                [
                    r["decision_id"],
                    r["request_id"],
                    format_timestamp(r["decided_at"]),
                    ", ".join(d["field"] for d in r["differences"]),
                ]
                for r in rows
                if r["verdict"] == "differs"
            ],
        )
        _table(
            "not reproducible",
            ["decision", "why"],
            [[r["decision_id"], r["why"]] for r in rows if r["verdict"] == "not_reproducible"],
        )
        _table(
            "notes",
            ["decision", "note"],
            [[r["decision_id"], r["note"]] for r in rows if r.get("note")],
        )
        click.echo(f"  {summary} ({seconds:.1f} s)")
    if counts["differs"] or counts["not_reproducible"]:
        raise NotReproduced(f"{summary}: not every decision reproduces")


def _when(at: datetime | None) -> str:
    return "-" if at is None else format_timestamp(at)


def _what(ids_file: Path | None, since: datetime | None, until: datetime | None) -> str:
    if ids_file is not None:
        return f"named in {ids_file}"
    if since is None and until is None:
        return "(all)"
    return f"decided in [{_when(since)}, {_when(until)})"


def _summary_line(total: int, counts: Mapping[str, int], whys: Mapping[str, int]) -> str:
    why = "; ".join(f"{reason}: {n}" for reason, n in whys.items())
    return (
        f"{total:,} decisions: {counts['reproduces']:,} reproduce, {counts['differs']:,} "
        f"differ, {counts['not_reproducible']:,} not reproducible" + (f" ({why})" if why else "")
    )


def _result(checked: Checked) -> dict[str, Any]:
    """One decision of a batch as ``--json`` lists it."""
    decision, result = checked.decision, checked.reproduction
    return {
        "decision_id": decision.event_id,
        "request_id": decision.request_id,
        "decided_at": decision.occurred_at,
        "verdict": checked.verdict,
        "recorded": _outcome_json(decision),
        "reproduced": None if result is None else _outcome_json(result.reproduced),
        "differences": [] if result is None else _differences(result),
        "note": None if result is None else result.note,
        "request_copies": checked.copies,
        "why": checked.why,
    }


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    if not rows:
        return
    shown = rows[:_SHOWN]
    print_table(
        columns,
        [[json_cell(c) if not isinstance(c, str) else c for c in r] for r in shown],
        title=title,
    )
    if len(rows) > len(shown):
        click.echo(f"  … and {len(rows) - len(shown):,} more (--json lists every decision)")
