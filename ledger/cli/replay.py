"""``ledger replay``: the governance state at an instant, rebuilt with the core's fold (DESIGN §9)."""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ledger.cli.common import (
    bootstrap_option,
    canary_cell,
    connection,
    from_option,
    grant_row,
    in_force_text,
    load_settings,
    membership_rows,
    note_incomplete,
    parse_time,
    policy_rows,
    print_memberships,
    read_history,
    role_rows,
)
from ledger.cli.output import handle_errors, json_option, print_json, print_table
from ledger.core.authority import capabilities
from ledger.core.history import HistoryEntry, state_at
from ledger.core.jsonform import format_timestamp
from ledger.errors import UsageError
from ledger.ids import utcnow
from ledger.kafka.governance import load_history

__all__ = ["replay_cmd"]


@click.command("replay", short_help="State at an instant; reproduce a decision.")
@click.option(
    "--at",
    "at",
    default=None,
    help="Instant (ISO 8601, UTC if no offset, or how long ago: 1h, 7d); default: now.",
)
@click.option("--policy", "policy", default=None, help="Only this policy.")
@click.option("--principal", default=None, help="Only this principal's grants and roles.")
@from_option(
    "Replay from this export directory (`ledger export --out DIR`) instead of Kafka.", "source"
)
@click.option(
    "--decision",
    "decision_id",
    default=None,
    metavar="ID",
    help="Reproduce this recorded decision (decision or request id) instead.",
)
@click.option(
    "--which",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="With --decision, when ID names several decisions (its request decided again under "
    "its id): reproduce the Nth, numbered as the refusal lists them, earliest first.",
)
@click.option(
    "--decisions",
    "many",
    is_flag=True,
    help="Reproduce many recorded decisions in one run: those decided in [--since, --until), "
    "or named in --ids FILE; --sample N of them.",
)
@click.option(
    "--since",
    default=None,
    help="With --decisions: decided at or after (ISO 8601, or how long ago: 1h, 7d).",
)
@click.option(
    "--until",
    default=None,
    help="With --decisions: decided before (ISO 8601, or how long ago: 1h, 7d).",
)
@click.option(
    "--ids",
    "ids_file",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default=None,
    metavar="FILE",
    help="With --decisions: the decisions named in FILE, one id a line (-: stdin).",
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="With --decisions: N of them, drawn at random (the summary gives the --seed).",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="With --sample: draw the same sample again.",
)
@bootstrap_option
@json_option
@handle_errors
def replay_cmd(
    at: str | None,
    policy: str | None,
    principal: str | None,
    source: Path | None,
    decision_id: str | None,
    which: int | None,
    many: bool,
    since: str | None,
    until: str | None,
    ids_file: Path | None,
    sample: int | None,
    seed: int | None,
    bootstrap: str | None,
    as_json: bool,
) -> None:
    """State at instant T, rebuilt from the ledger: versions in force and grants in force.

    Answers "which version of each policy was active at T" and "what could principal X do at T"
    (its grants, its roles' grants, and who assigned each role membership: --json prints
    "memberships" (principal, role, assigned_by) beside "roles").
    The history is read from Kafka, or with --from DIR from an export (the governance records'
    bytes it keeps); the same fold gives the same state either way.

    With --decision ID: reproduce one recorded decision exactly. Its request is re-evaluated
    with the core against the governance state at the decision's recorded governance
    position, at the decision's own time, and every field is compared with the record except
    those only its writer knows (latency_us, evaluator_id, chain_id, chain_seq, prev_hash,
    hash). Exit 0 when it reproduces; otherwise exit 12 (not_reproduced) with the fields that
    differ, recorded beside reproduced.

    With --decisions: reproduce every decision decided in [--since, --until) (or named in
    --ids FILE; --sample N of them at random), folding the governance history once, in the
    order of the decisions' governance positions. Progress shows on stderr; a summary says how
    many reproduce, differ and cannot be reproduced (and why); --json lists every decision.
    Exit 12 (not_reproduced) when any differs or cannot be reproduced.
    """
    # The audit readers (pyarrow), only when asked for (as `policy simulate`'s).
    from ledger.cli.reproduce import reproduce_decision, reproduce_decisions

    batch_only = {
        "--since": since,
        "--until": until,
        "--ids": ids_file,
        "--sample": sample,
        "--seed": seed,
    }
    if many:
        if decision_id is not None or at is not None or policy is not None or principal:
            raise UsageError(
                "--decisions reproduces many decisions: leave out --decision, --at, --policy "
                "and --principal"
            )
        if ids_file is not None and (since is not None or until is not None):
            raise UsageError("--ids names the decisions: leave out --since and --until")
        if seed is not None and sample is None:
            raise UsageError("--seed draws a --sample: give --sample N too")
        start, end = parse_time(since, "--since"), parse_time(until, "--until")
        if start is not None and end is not None and end <= start:
            raise UsageError("--until must be after --since")
        reproduce_decisions(
            from_dir=source,
            bootstrap=bootstrap,
            since=start,
            until=end,
            ids_file=ids_file,
            sample=sample,
            seed=seed,
            as_json=as_json,
        )
        return
    if which is not None and decision_id is None:
        raise UsageError("--which picks one of the decisions --decision ID names: give --decision")
    given = [flag for flag, value in batch_only.items() if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)} go with --decisions (reproduce many decisions)")
    if decision_id is not None:
        if at is not None or policy is not None or principal is not None:
            raise UsageError(
                "--decision reproduces one decision: leave out --at, --policy and --principal"
            )
        reproduce_decision(decision_id, source, bootstrap, as_json, which)
        return
    instant = parse_time(at, "--at") or utcnow()
    read_at: datetime | None = None  # when the export read the ledger
    if source is not None:
        from ledger.audit.history import load_export_history  # pyarrow: only when asked for
        from ledger.audit.manifest import read_manifest

        history = read_history(functools.partial(load_export_history, source))
        manifest = read_manifest(source)  # there: the history was read from it
        note_incomplete(source, manifest)
        read_at = manifest.read_instant() if manifest is not None else None
    else:
        settings = load_settings(bootstrap)
        address, security = connection(settings, "auditor")
        history = read_history(
            functools.partial(load_history, address, settings.topics, security=security)
        )
    state = state_at(history, instant)
    note = _outside(history, instant, source, read_at)
    if note is not None:
        click.echo(f"note: {note}", err=True)
    rows = [r for r in policy_rows(state) if policy is None or r["policy"] == policy]
    if policy is not None and not rows:
        raise UsageError(f"no policy named {policy!r} existed at {format_timestamp(instant)}")
    # What each principal could do then: its own grants and its roles' (the core's one rule);
    # without --principal, every holder's own grants once each.
    holders = [principal] if principal else sorted(state.principals)
    grants: list[dict[str, Any]] = []
    for name in holders:
        for g in capabilities(state, name, now=instant):
            if principal is None and g.principal != name:
                continue
            grants.append(grant_row(g, name))
    roles = role_rows(state, principal)
    memberships = membership_rows(state, principal)
    if as_json:
        print_json(
            {
                "at": instant,
                "position": dict(state.position),
                "policies": rows,
                "grants": grants,
                "roles": roles,
                "memberships": memberships,
            }
        )
        return
    print_table(
        ["policy", "active", "canary", "shadow"],
        [
            [
                r["policy"],
                r["active"] or "-",
                canary_cell(r),
                ",".join(map(str, r["shadow"])) or "-",
            ]
            for r in rows
        ],
        title=f"policies at {format_timestamp(instant)}",
    )
    if policy is None or principal is not None:
        print_table(
            ["grant id", "principal", "actions", "resource", "condition", "in force"],
            [
                [
                    g["grant_id"],
                    g["principal"] + (f" (via {g['via']})" if g["via"] else ""),
                    ",".join(g["actions"]),
                    g["resource"],
                    g["condition"] or "-",
                    in_force_text(g, instant),
                ]
                for g in grants
            ],
            title="grants in force",
        )
        print_memberships(memberships, title="role memberships")


def _outside(
    history: list[HistoryEntry],
    instant: datetime,
    source: Path | None,
    read_at: datetime | None = None,
) -> str | None:
    """What an answer at ``instant`` cannot know (an auditor's walkthrough: an instant before
    the first governance event read as "nothing was active", one after an export's reading of
    the ledger as the ledger's state then): ``None`` within the history. ``read_at``: when the
    export at ``source`` read the topics (its manifest says), else its last event's time is
    the bound (the walkthrough: that one noted a gap even for an export made after the
    instant, when nothing had changed in between)."""
    if not history:
        return "the history holds no governance event: nothing was active or granted"
    times = [entry.event.occurred_at for entry in history]
    first, last = min(times), max(times)
    if instant < first:
        return (
            f"{format_timestamp(instant)} is before the first governance event "
            f"({format_timestamp(first)}): nothing was active or granted yet"
        )
    if source is not None and read_at is not None:
        if instant > read_at:
            return (
                f"the export at {source} read the ledger at {format_timestamp(read_at)}: what "
                f"changed after that, up to {format_timestamp(instant)}, is not in it (export "
                "again for the ledger's state since)"
            )
    elif source is not None and instant > last:
        return (
            f"the export at {source} ends with a governance event of {format_timestamp(last)}: "
            f"what changed after it, up to {format_timestamp(instant)}, is not in it "
            "(export again for the ledger's state since)"
        )
    return None
