"""``ledger grant issue|revoke|list`` and ``ledger role assign|revoke``: authority on the ledger.

Commands publish a governance command and wait for its answer (a rejection exits 4 with its
stable code, a timeout 8); ``grant list`` reads the governance history and shows what the core's
rules make of it.
"""

from __future__ import annotations

from typing import Any

import click

from ledger.cli.common import (
    bootstrap_option,
    current_state,
    grant_row,
    in_force_text,
    ledger_options,
    membership_rows,
    parse_time,
    principal_arg,
    print_memberships,
    role_rows,
    submit,
)
from ledger.cli.output import HelpfulGroup, handle_errors, json_option, print_json, print_table
from ledger.core.authority import effective_grants
from ledger.core.events import AssignRole, IssueGrant, RevokeGrant, RevokeRole
from ledger.errors import UsageError
from ledger.ids import new_id, utcnow

__all__ = ["grant_group", "role_group"]


@click.group("grant", cls=HelpfulGroup, short_help="Authority: issue, revoke and list grants.")
def grant_group() -> None:
    """Authority: which principals or roles may attempt which actions, on what."""


@grant_group.command("issue")
@click.option(
    "--to",
    "principal",
    required=True,
    help="Principal or role, e.g. agent:refund-bot, role:billing_admin.",
)
@click.option("--actions", required=True, help="Comma-separated actions; globs allowed (refund.*).")
@click.option("--resource", required=True, help="Resource pattern, glob allowed (account:*).")
@click.option("--by", "by", required=True, help="Who grants, e.g. human:admin.")
@click.option(
    "--from",
    "valid_from",
    default=None,
    help="Valid from (ISO 8601 with its zone, e.g. 2026-12-01T09:00:00Z; default: from its issue).",
)
@click.option(
    "--until",
    "valid_until",
    default=None,
    help="Valid until (ISO 8601 with its zone, e.g. 2027-06-01T00:00:00+02:00; in the future; "
    "default: until revoked).",
)
@click.option(
    "--when", "condition", default=None, help="CEL condition over the request's facts/context."
)
@click.option(
    "--approved-by",
    default=None,
    help="Who approved the grant, if anyone: recorded as your claim (only --by signs).",
)
@click.option("--note", default=None, help="Why (kept in the ledger).")
@ledger_options
@handle_errors
def grant_issue(
    principal: str,
    actions: str,
    resource: str,
    by: str,
    valid_from: str | None,
    valid_until: str | None,
    condition: str | None,
    approved_by: str | None,
    note: str | None,
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Issue a grant; prints its id (needed to revoke it)."""
    action_list = tuple(a.strip() for a in actions.split(",") if a.strip())
    if not action_list:
        raise UsageError("--actions needs at least one action, e.g. refund.issue or refund.*")
    grant_id = new_id()
    command = IssueGrant(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal_arg(by, "--by"),
        grant_id=grant_id,
        principal=principal_arg(principal, "--to"),
        actions=action_list,
        resource=resource,
        condition=condition,
        valid_from=parse_time(valid_from, "--from", zoned=True),
        valid_until=parse_time(valid_until, "--until", zoned=True),
        approved_by=principal_arg(approved_by, "--approved-by") if approved_by else None,
        note=note,
    )
    submit(
        bootstrap,
        timeout,
        as_json,
        command,
        f"grant {grant_id} to {principal}",
        extra={"grant_id": grant_id},
    )


@grant_group.command("revoke")
@click.argument("grant_id")
@click.option("--by", "by", required=True, help="Who revokes.")
@click.option("--reason", default=None, help="Why (kept in the ledger).")
@ledger_options
@handle_errors
def grant_revoke(
    grant_id: str, by: str, reason: str | None, bootstrap: str | None, timeout: float, as_json: bool
) -> None:
    """Revoke a grant by id (see `ledger grant list`)."""
    command = RevokeGrant(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal_arg(by, "--by"),
        grant_id=grant_id,
        reason=reason,
    )
    submit(bootstrap, timeout, as_json, command, f"revoked grant {grant_id}")


@grant_group.command("list")
@click.option("--principal", default=None, help="Only this principal's (or role's) grants.")
@bootstrap_option
@json_option
@handle_errors
def grant_list(principal: str | None, bootstrap: str | None, as_json: bool) -> None:
    """Grants (not revoked) and role memberships, each grant saying whether it is in force now
    (one that ended or has not begun gives nothing); with --principal, also the grants it holds
    through its roles (marked "via role:…").

    Each membership says who assigned it: a grant to a role reaches a member a non-administrator
    assigned no further than that assigner's own grants. --json prints "grants", "roles" (each
    principal's roles) and "memberships" (principal, role, assigned_by)."""
    state, _ = current_state(bootstrap)
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for name in sorted(state.principals):
        rec = state.principals[name]
        if principal and name != principal:
            continue
        # With --principal: what it can use, its own grants and those of its roles (one rule:
        # the core's effective_grants); the full listing shows each grant once, at its holder.
        held = effective_grants(state, name) if principal else tuple(rec.grants.values())
        rows.extend({**grant_row(grant, name), "in_force": grant.in_force(now)} for grant in held)
    roles = role_rows(state, principal)
    memberships = membership_rows(state, principal)
    if as_json:
        print_json({"grants": rows, "roles": roles, "memberships": memberships})
        return
    print_table(
        ["grant id", "principal", "actions", "resource", "condition", "in force", "granted by"],
        [
            [
                r["grant_id"],
                r["principal"] + (f" (via {r['via']})" if r["via"] else ""),
                ", ".join(r["actions"]),
                r["resource"],
                r["condition"] or "-",
                in_force_text(r, now),
                r["granted_by"],
            ]
            for r in rows
        ],
    )
    print_memberships(memberships)


@click.group("role", cls=HelpfulGroup)
def role_group() -> None:
    """Role membership: principals hold the grants of their roles."""


def _role(value: str) -> str:
    return value if value.startswith("role:") else f"role:{value}"


@role_group.command("assign")
@click.argument("principal")
@click.argument("role")
@click.option("--by", "by", required=True, help="Who assigns.")
@ledger_options
@handle_errors
def role_assign(
    principal: str, role: str, by: str, bootstrap: str | None, timeout: float, as_json: bool
) -> None:
    """Make PRINCIPAL a member of ROLE (billing_admin or role:billing_admin)."""
    command = AssignRole(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal_arg(by, "--by"),
        principal=principal_arg(principal, "PRINCIPAL"),
        role=_role(role),
    )
    submit(bootstrap, timeout, as_json, command, f"{principal} ∈ {_role(role)}")


@role_group.command("revoke")
@click.argument("principal")
@click.argument("role")
@click.option("--by", "by", required=True, help="Who revokes.")
@ledger_options
@handle_errors
def role_revoke(
    principal: str, role: str, by: str, bootstrap: str | None, timeout: float, as_json: bool
) -> None:
    """Remove PRINCIPAL from ROLE."""
    command = RevokeRole(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal_arg(by, "--by"),
        principal=principal_arg(principal, "PRINCIPAL"),
        role=_role(role),
    )
    submit(bootstrap, timeout, as_json, command, f"{principal} ∉ {_role(role)}")
