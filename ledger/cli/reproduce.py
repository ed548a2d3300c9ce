"""``ledger replay --decision ID``: reproduce one recorded decision exactly (DESIGN §9).

The option belongs to ``ledger replay`` (:mod:`ledger.cli.replay`); finding the decision, its
request and the governance history is :mod:`ledger.audit.sources`'s, re-deciding and comparing
:mod:`ledger.audit.reproduce`'s. This module prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ledger.audit.reproduce import reproduce
from ledger.audit.sources import (
    Decision,
    ExportSource,
    KafkaSource,
    LedgerSource,
    answered,
    no_decision,
)
from ledger.cli.common import connection, load_settings
from ledger.cli.output import json_cell, policy_label, print_json, print_table
from ledger.core.events import BatchDecisionRecorded, item_ref_splits
from ledger.core.jsonform import format_timestamp
from ledger.core.text import clipped
from ledger.errors import NotReproduced, UsageError

__all__ = ["reproduce_decision"]


def _find(source: LedgerSource, decision_id: str) -> Decision:
    """The decision ``decision_id`` names: a decision or request id, or one item of a
    pre-evaluation as `ledger decisions` prints it (``REQUEST#ITEM``: its batch is reproduced,
    every item with it). Ids are free text, so a text that names more than one (a request whose
    own id reads as another's item) is refused, naming each, never one taken for the other."""
    splits = item_ref_splits(decision_id)
    named = source.decisions([decision_id, *(batch_id for batch_id, _ in splits)])  # one read
    found: list[tuple[Decision, str]] = []
    if (own := named.get(decision_id)) is not None:
        found.append((own, f"decision {own.event_id} of request {own.request_id}"))
    for batch_id, item in splits:
        batch = named.get(batch_id)
        if isinstance(batch, BatchDecisionRecorded) and any(
            i.item_id == item for i in batch.decisions
        ):
            found.append((batch, f"item {item} of pre-evaluation {batch_id}"))
    if not found:
        raise no_decision(decision_id, source.where)
    if len(found) > 1:
        listed = "; ".join(what for _, what in found)
        raise UsageError(
            f"{clipped(repr(decision_id), 80)} names {len(found)} decisions ({listed}): ids are "
            "free text; pass the decision id (`ledger decisions --request` lists them with --json)"
        )
    ((decision, what),) = found
    if decision.request_id != decision_id and decision.event_id != decision_id:
        click.echo(f"{decision_id} is {what}: reproducing the batch", err=True)
    return decision


def reproduce_decision(
    decision_id: str, from_dir: Path | None, bootstrap: str | None, as_json: bool
) -> None:
    """``replay --decision``: find the decision and its request, re-decide, compare, print."""
    settings = load_settings(bootstrap)
    source: LedgerSource
    if from_dir is not None:
        source = ExportSource(from_dir)
    else:
        address, security = connection(settings, "auditor")
        source = KafkaSource(address, settings.topics, security=security)
    decision = _find(source, decision_id)
    copies = source.requests(decision.request_id)
    request = answered(decision, copies) if copies else None
    if request is None:
        raise NotReproduced(
            f"decision {decision.event_id}: its request {decision.request_id} is not in the "
            f"ledger at {source.where}, so it cannot be re-evaluated"
        )
    result = reproduce(decision, request, source.history())
    copies_note = (
        f"{len(copies)} requests carry the id {decision.request_id} (a repeat, or a copy "
        "someone else wrote); re-evaluated the one the decision answered"
        if len(copies) > 1
        else None
    )
    differences = [
        {"field": d.field, "recorded": d.recorded, "reproduced": d.reproduced}
        for d in result.differences
    ]
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
                "request_copies": len(copies),
                "source": source.where,
            }
        )
    else:
        click.echo(
            f"decision {decision.event_id} (request {decision.request_id}), decided "
            f"{format_timestamp(decision.occurred_at)} at governance position "
            f"{json_cell(decision.governance_position)}, re-evaluated from {source.where}:"
        )
        for note in (result.note, copies_note):
            if note:
                click.echo(f"  note: {note}")
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
        raise NotReproduced(f"decision {decision.event_id} does not reproduce: {names} differ")
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
