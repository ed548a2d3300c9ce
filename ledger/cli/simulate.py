"""``ledger policy simulate``: impact simulation over history (DESIGN §9).

Re-evaluates the recorded requests of a window (from an export or from Kafka) against a draft
policy file with :func:`ledger.core.simulate.simulate` and reports what would change. The
``policy`` group adds :data:`COMMANDS` (see :mod:`ledger.cli.policy`).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ledger.cli.common import (
    FROM_INSTEAD_OF_KAFKA,
    after_the_read,
    bootstrap_option,
    connection,
    from_option,
    load_settings,
    note_incomplete,
    read_history,
    read_text_file,
    time_window,
)
from ledger.cli.output import (
    handle_errors,
    json_cell,
    json_option,
    plural,
    policy_label,
    print_json,
    print_table,
    printable,
    to_jsonable,
)
from ledger.core.history import state_at
from ledger.core.jsonform import format_timestamp
from ledger.core.policy import parse_policy
from ledger.core.policy.model import decided_by
from ledger.core.simulate import Change, ImpactReport, simulate

__all__ = ["COMMANDS", "simulate_cmd"]


@click.command("simulate")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--since",
    default=None,
    help="Requests asked at or after T (ISO 8601, or how long ago: 1h, 7d).",
)
@click.option(
    "--until", default=None, help="Requests asked before T (ISO 8601, or how long ago: 1h, 7d)."
)
@from_option(FROM_INSTEAD_OF_KAFKA)
@click.option(
    "--sample",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    help="How many changed requests to show (and as many whose constraints alone change).",
)
@bootstrap_option
@json_option
@handle_errors
def simulate_cmd(
    file: Path,
    since: str | None,
    until: str | None,
    from_dir: Path | None,
    sample: int,
    bootstrap: str | None,
    as_json: bool,
) -> None:
    """Re-evaluate recorded requests against a draft policy FILE; report what would change.

    Every request of the window (with --from: from that export, else read from Kafka) whose
    action the draft governs is decided again by the draft, with the facts and context it was
    asked with, and compared with the recorded decision: requests replayed, determinations
    that would change (from → to), the same per rule, and a sample of changed requests with
    why the draft decides as it does; then the requests whose determination stays but whose
    constraints would differ (a cap lowered under the same allow_with_constraints), with a
    sample of recorded → draft constraints. Requests the policy decided for actions the draft no
    longer governs are counted apart. Authority and the input limits are not re-evaluated:
    requests decided before any policy ran (no_authority ...) are skipped. Nothing is written;
    nothing needs to be deployed.
    """
    # pyarrow and the audit readers, only when asked for: every `ledger` command imports this
    # module, and a rollback's start paid for them (a review: 2-4 s of CLI before the command).
    from ledger.audit.sources import ExportSource, KafkaSource, LedgerSource, single_pairs

    policy = parse_policy(read_text_file(file, what="policy file"), filename=str(file))
    start, end = time_window(since, until)
    settings = load_settings(bootstrap)
    source: LedgerSource
    if from_dir is not None:
        source = ExportSource(from_dir)
    else:
        address, security = connection(settings, "auditor")
        source = KafkaSource(address, settings.topics, security=security)
    report = simulate(
        policy,
        single_pairs(source.pairs(since=start, until=end)),
        governance=lambda: state_at(read_history(source.history), end),
    )
    if from_dir is not None:
        note_incomplete(from_dir)
        if (why := after_the_read(from_dir, start)) is not None:
            click.echo(f"warning: {why}", err=True)
    by_rule = _by_rule(report.changed)
    shown = report.changed[:sample]
    constrained = report.constraint_changes[:sample]
    if as_json:
        print_json(
            {
                "policy": report.policy,
                "content_hash": report.content_hash,
                "file": str(file),
                "source": source.where,
                "since": start,
                "until": end,
                "replayed": report.considered,
                "evaluated": report.evaluated,
                "skipped": report.skipped,
                "unchanged": report.unchanged,
                "changed": len(report.changed),
                "rule_changes": report.rule_changes,
                "transitions": report.transitions,
                "no_longer_governed": report.no_longer_governed,
                "decided_elsewhere": report.decided_elsewhere,
                "taken_over": report.taken_over,
                "by_rule": by_rule,
                "sample": [_change(c) for c in shown],
                "constraint_changes": len(report.constraint_changes),
                "constraint_sample": [_constraint_change(c) for c in constrained],
            }
        )
        return
    _print(report, by_rule, shown, source.where, start, end, _last(from_dir))
    _print_constraints(report, constrained)
    if report.considered == 0:  # a simulation of nothing is no evidence: say why it may be
        click.echo(
            "warning: no recorded request with a decision in this window: check --since/--until, "
            "and that the ledger (or the export) holds evaluation requests",
            err=True,
        )


def _by_rule(changes: tuple[Change, ...]) -> list[dict[str, Any]]:
    counts = Counter(
        (
            c.old_rule,
            c.old_reason_code,
            c.new_rule,
            c.new_reason_code,
            c.old_determination.value,
            c.new_determination.value,
        )
        for c in changes
    )
    return [
        {
            "recorded_rule": old,
            "recorded_reason_code": old_code,
            "draft_rule": new,
            "draft_reason_code": new_code,
            "from": a,
            "to": b,
            "count": n,
        }
        for (old, old_code, new, new_code, a, b), n in sorted(
            counts.items(), key=lambda item: (-item[1], str(item[0]))
        )
    ]


def _change(c: Change) -> dict[str, Any]:
    return {
        "request_id": c.request_id,
        "principal": c.principal,
        "action": c.action,
        "resource": c.resource,
        "from": c.old_determination.value,
        "to": c.new_determination.value,
        "recorded_rule": c.old_rule,
        "recorded_reason_code": c.old_reason_code,
        "recorded_version": c.old_version,
        "recorded_policy": c.old_policy,
        "draft_rule": c.new_rule,
        "draft_reason_code": c.new_reason_code,
        "draft_reasons": list(c.new_reasons),
    }


def _constraint_change(c: Change) -> dict[str, Any]:
    return {
        "request_id": c.request_id,
        "principal": c.principal,
        "action": c.action,
        "resource": c.resource,
        "determination": c.new_determination.value,
        "recorded_rule": c.old_rule,
        "recorded_version": c.old_version,
        "recorded_policy": c.old_policy,
        "draft_rule": c.new_rule,
        "recorded_constraints": to_jsonable(c.old_constraints),
        "draft_constraints": to_jsonable(c.new_constraints),
    }


def _why(reasons: tuple[str, ...], width: int = 80) -> str:
    text = "; ".join(reasons)
    if not text:  # a policy owner's walkthrough: an empty column read as a tool fault
        return "- (the rule gives no reason: add `reason:` to it)"
    return text if len(text) <= width else text[: width - 1] + "…"


def _last(from_dir: Path | None) -> str | None:
    """Where an open window ends: now for Kafka, the read of an export (an auditor's
    walkthrough: "to now" of an export that stopped an hour before)."""
    if from_dir is None:
        return None
    from ledger.audit.manifest import read_manifest  # as above: only when asked for

    manifest = read_manifest(from_dir)
    read = manifest.read_time() if manifest is not None else None
    return f"its read at {read}" if read else "its last read"


def _print(
    report: ImpactReport,
    by_rule: list[dict[str, Any]],
    shown: tuple[Change, ...],
    where: str,
    start: datetime | None,
    end: datetime | None,
    open_end: str | None,
) -> None:
    last = format_timestamp(end) if end else open_end or "now"
    window = f"{format_timestamp(start) if start else 'the beginning'} to {last}"
    click.echo(
        f"{report.policy} draft ({report.content_hash}) over the requests recorded from "
        f"{window} ({where}):"
    )
    click.echo(
        f"  {report.considered} requests replayed, {report.evaluated} re-decided by the draft, "
        f"{report.skipped} skipped (not governed by it, or decided before any policy ran)"
    )
    if report.no_longer_governed:
        dropped = ", ".join(f"{printable(a)}: {n}" for a, n in report.no_longer_governed.items())
        click.echo(
            f"  warning: {sum(report.no_longer_governed.values())} requests {report.policy} "
            f"decided are of actions the draft no longer governs ({dropped}): another policy "
            "that governs them would decide them, else they would be denied ungoverned_action"
        )
    if report.decided_elsewhere:
        click.echo(f"  note: {_elsewhere(report, end)}")
    click.echo(
        f"  {plural(len(report.changed), 'determination')} would change, {report.unchanged:,} "
        "would not "
        f"({report.rule_changes} of those by another rule, "
        f"{len(report.constraint_changes):,} with other constraints)"
    )
    if not report.changed:
        return
    print_table(
        ["from → to", "requests"],
        [[transition.replace(" -> ", " → "), n] for transition, n in report.transitions.items()],
        title="determinations that would change",
    )
    print_table(
        ["recorded rule", "draft rule", "from → to", "requests"],
        [
            [
                decided_by(r["recorded_rule"], r["recorded_reason_code"]),
                decided_by(r["draft_rule"], r["draft_reason_code"]),
                f"{r['from']} → {r['to']}",
                r["count"],
            ]
            for r in by_rule
        ],
        title="per rule (the rule that decided → the draft's rule)",
    )
    if shown:
        print_table(
            ["request id", "principal", "action", "resource", "recorded", "draft", "why (draft)"],
            [
                [
                    c.request_id,
                    c.principal,
                    c.action,
                    c.resource,
                    f"{c.old_determination.value} {decided_by(c.old_rule, c.old_reason_code)}"
                    + (
                        f" {policy_label(c.old_policy, c.old_version)}"
                        if c.old_policy is not None and c.old_policy != report.policy
                        else (f" v{c.old_version}" if c.old_version is not None else "")
                    ),
                    f"{c.new_determination.value} {decided_by(c.new_rule, c.new_reason_code)}",
                    _why(c.new_reasons),
                ]
                for c in shown
            ],
            title=f"changed requests (first {len(shown)} of {len(report.changed)})",
        )


def _print_constraints(report: ImpactReport, shown: tuple[Change, ...]) -> None:
    """The requests whose determination stays but whose constraints would not (a policy owner's
    walkthrough: a cap lowered from 500.00 to 400.00 simulated as "0 would change")."""
    if not shown:
        return
    print_table(
        [
            "request id",
            "principal",
            "action",
            "resource",
            "rule (recorded → draft)",
            "recorded",
            "draft",
        ],
        [
            [
                c.request_id,
                c.principal,
                c.action,
                c.resource,
                decided_by(c.old_rule, c.old_reason_code)
                if c.old_rule == c.new_rule
                else f"{decided_by(c.old_rule, c.old_reason_code)} → "
                f"{decided_by(c.new_rule, c.new_reason_code)}",
                json_cell(c.old_constraints),
                json_cell(c.new_constraints),
            ]
            for c in shown
        ],
        title=(
            f"same determination, other constraints (first {len(shown)} of "
            f"{len(report.constraint_changes)})"
        ),
    )


COMMANDS = (simulate_cmd,)


def _elsewhere(report: ImpactReport, end: datetime | None) -> str:
    """Which of the re-decided requests another policy decided, and which the draft would
    decide deployed (a policy owner's walkthrough: "only where it takes precedence" left the
    owner to work out that a glob takes nothing from an exact name)."""
    decided = report.decided_elsewhere
    others = ", ".join(f"{printable(p)}: {n}" for p, n in decided.items())
    said = (
        f"{sum(decided.values())} of the re-decided requests were decided by another policy "
        f"({others})"
    )
    rule = "(an exact governs before a glob, the longer glob, the lower policy name)"
    taken = report.taken_over
    if taken is None:
        return f"{said}; deployed, the draft decides them only where it takes precedence {rule}"
    when = f"as governance stood at {format_timestamp(end)}" if end else "as governance stands now"
    took = sum(taken.values())
    kept = {p: n - taken.get(p, 0) for p, n in decided.items() if n > taken.get(p, 0)}
    kept_said = ", ".join(f"{printable(p)}: {n}" for p, n in kept.items())
    if not kept:
        return f"{said}; deployed {when}, the draft would decide all of them"
    head = f"{said}; deployed {when}, the draft would decide {took:,} of them"
    return (
        f"{head}, and {sum(kept.values()):,} ({kept_said}) would stay with the policy that "
        f"takes precedence {rule}, so what is counted below for them would not change; see "
        "`ledger policy list`"
    )
