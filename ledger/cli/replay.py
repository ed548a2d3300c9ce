"""``ledger replay``: the governance state at an instant, rebuilt with the core's fold (DESIGN §9)."""

from __future__ import annotations

from typing import Any

import click

from ledger.cli.common import (
    bootstrap_option,
    connection,
    load_settings,
    parse_time,
    policy_rows,
)
from ledger.cli.output import handle_errors, json_option, print_json, print_table
from ledger.core.authority import capabilities
from ledger.core.history import state_at
from ledger.errors import UsageError
from ledger.ids import utcnow
from ledger.kafka.governance import load_history

__all__ = ["replay_cmd"]


@click.command("replay")
@click.option(
    "--at", "at", default=None, help="Instant (ISO 8601, UTC if no offset); default: now."
)
@click.option("--policy", "policy", default=None, help="Only this policy.")
@click.option("--principal", default=None, help="Only this principal's grants and roles.")
@bootstrap_option
@json_option
@handle_errors
def replay_cmd(
    at: str | None, policy: str | None, principal: str | None, bootstrap: str | None, as_json: bool
) -> None:
    """State at instant T, rebuilt from the ledger: versions in force and grants in force.

    Answers "which version of each policy was active at T" and "what could principal X do at T".
    """
    instant = parse_time(at, "--at") or utcnow()
    settings = load_settings(bootstrap)
    address, security = connection(settings, "auditor")
    state = state_at(load_history(address, settings.topics, security=security), instant)
    rows = [r for r in policy_rows(state) if policy is None or r["policy"] == policy]
    if policy is not None and not rows:
        raise UsageError(f"no policy named {policy!r} existed at {instant.isoformat()}")
    # What each principal could do then: its own grants and its roles' (the core's one rule);
    # without --principal, every holder's own grants once each.
    holders = [principal] if principal else sorted(state.principals)
    grants: list[dict[str, Any]] = []
    for name in holders:
        for g in capabilities(state, name, now=instant):
            if principal is None and g.principal != name:
                continue
            grants.append(
                {
                    "grant_id": g.grant_id,
                    "principal": name,
                    "via": g.principal if g.principal != name else None,
                    "actions": list(g.actions),
                    "resource": g.resource,
                    "condition": g.condition,
                }
            )
    roles = {
        n: sorted(r.roles)
        for n, r in state.principals.items()
        if r.roles and (not principal or n == principal)
    }
    if as_json:
        print_json(
            {
                "at": instant,
                "position": dict(state.position),
                "policies": rows,
                "grants": grants,
                "roles": roles,
            }
        )
        return
    print_table(
        ["policy", "active", "canary", "shadow"],
        [
            [
                r["policy"],
                r["active"] or "-",
                f"v{r['canary']} ({r['canary_percent']}%)" if r["canary"] else "-",
                ",".join(map(str, r["shadow"])) or "-",
            ]
            for r in rows
        ],
        title=f"policies at {instant.isoformat(timespec='seconds')}",
    )
    if policy is None or principal is not None:
        print_table(
            ["grant id", "principal", "actions", "resource", "condition"],
            [
                [
                    g["grant_id"],
                    g["principal"] + (f" (via {g['via']})" if g["via"] else ""),
                    ",".join(g["actions"]),
                    g["resource"],
                    g["condition"] or "-",
                ]
                for g in grants
            ],
            title="grants in force",
        )
