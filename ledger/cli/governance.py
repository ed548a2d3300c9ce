"""Governance over Kafka: policy lifecycle, grants, roles, evaluation, replay (DESIGN §13).

Every command here publishes a command (or request) and waits for its answer, printing it as a
table or, with ``--json``, as one JSON document. A rejected command exits 4 with its reason and
stable code; a timeout exits 8 — never a silent success.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from ledger.cli.common import (
    Seconds,
    bootstrap_option,
    load_settings,
    parse_time,
    read_text_file,
    resolve_bootstrap,
)
from ledger.cli.output import (
    handle_errors,
    json_cell,
    json_option,
    print_json,
    print_table,
    rule_label,
    to_jsonable,
)
from ledger.cli.policy import _parse_facts
from ledger.cli.policy import group as policy_group
from ledger.client import ClientConfig, LedgerClient
from ledger.core.authority import effective_grants
from ledger.core.events import (
    ApprovePolicyVersion,
    AssignRole,
    Command,
    CommandAccepted,
    Determination,
    IssueGrant,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RetirePolicy,
    RevokeGrant,
    RevokeRole,
    RollbackPolicy,
    Stage,
)
from ledger.core.policy import parse_policy
from ledger.core.state import LedgerState
from ledger.errors import UsageError
from ledger.kafka_io import new_id, utcnow
from ledger.replay import load_history, state_at

__all__ = ["grant_group", "role_group", "evaluate_cmd", "replay_cmd"]

F = TypeVar("F", bound=Callable[..., Any])


def _common(func: F) -> F:
    """--bootstrap, --timeout and --json, shared by every command that talks to the ledger."""
    func = click.option("--timeout", type=Seconds(0.1, 600), default=10.0, show_default=True,
                        help="Seconds to wait for the answer.")(func)  # fmt: skip
    return json_option(bootstrap_option(func))


@contextmanager
def _client(bootstrap: str | None, actor: str) -> Iterator[LedgerClient]:
    settings = load_settings(bootstrap)
    config = ClientConfig(
        bootstrap=resolve_bootstrap(settings), topics=settings.topics, actor=actor
    )
    with LedgerClient(config) as client:
        yield client


def _principal(value: str, flag: str) -> str:
    if ":" not in value or value.startswith(":") or value.endswith(":"):
        raise UsageError(f"{flag} {value!r} is not a principal: use kind:name, e.g. human:alice")
    return value


def _submit(
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
    command: Command,
    what: str,
    *,
    extra: dict[str, Any] | None = None,
    version_label: str = "version",
) -> CommandAccepted:
    """Submit, wait for the result, print it (``extra`` joins the JSON document)."""
    with _client(bootstrap, command.actor) as client:
        result = client.submit_command(command, timeout=timeout)
    if as_json:
        print_json({**(extra or {}), **to_jsonable(result)})
    else:
        version = f" {version_label} {result.version}" if result.version is not None else ""
        click.echo(f"accepted: {what}{version} ({result.message or 'no change'})")
    return result


# --------------------------------------------------------------------------- policy lifecycle


@policy_group.command("propose")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--by", "by", required=True, help="Author, e.g. human:alice.")
@click.option("--note", default=None, help="Why this version (kept in the ledger).")
@_common
@handle_errors
def propose(
    file: Path, by: str, note: str | None, bootstrap: str | None, timeout: float, as_json: bool
) -> None:
    """Submit a new version of a policy; prints the version number the ledger assigned.

    The document is validated by the command processor exactly as `ledger policy validate`
    does offline; an invalid one is rejected with the problems found.
    """
    document = read_text_file(file, what="policy file")
    # Validate here first: an invalid file fails fast with its problems, even with no ledger up.
    policy = parse_policy(document, filename=str(file))
    # The name travels beside the document: the processor authorizes on it before reading it.
    command = ProposePolicyVersion(event_id=new_id(), occurred_at=utcnow(), actor=_principal(by, "--by"),
                                   document=document, note=note, policy=policy.name)  # fmt: skip
    _submit(bootstrap, timeout, as_json, command, f"proposed {policy.name}")


@policy_group.command("approve")
@click.argument("name")
@click.argument("version", type=click.IntRange(1))
@click.option("--by", "by", required=True, help="Approver; must differ from the author.")
@click.option("--note", default=None, help="Approval note.")
@_common
@handle_errors
def approve(name: str, version: int, by: str, note: str | None, bootstrap: str | None, timeout: float,
            as_json: bool) -> None:  # fmt: skip
    """Approve a proposed version (the approver must not be its author)."""
    command = ApprovePolicyVersion(event_id=new_id(), occurred_at=utcnow(), actor=_principal(by, "--by"),
                                   policy=name, version=version, note=note)  # fmt: skip
    _submit(bootstrap, timeout, as_json, command, f"approved {name} v{version}")


@policy_group.command("promote")
@click.argument("name")
@click.argument("version", type=click.IntRange(1))
@click.option("--to", "stage", required=True, type=click.Choice(["shadow", "canary", "active"]),
              help="Target stage.")  # fmt: skip
@click.option("--percent", type=click.IntRange(1, 99), default=None,
              help="Canary only: share of requests (by stable hash bucket) the canary decides.")  # fmt: skip
@click.option("--by", "by", required=True, help="Who promotes, e.g. human:bob.")
@_common
@handle_errors
def promote(name: str, version: int, stage: str, percent: int | None, by: str, bootstrap: str | None,
            timeout: float, as_json: bool) -> None:  # fmt: skip
    """Promote a version to shadow (recorded, never enforced), canary (--percent) or active.

    Only an approved version may become canary or active.
    """
    if stage == "canary" and percent is None:
        raise UsageError("--to canary needs --percent N (1-99)")
    if stage != "canary" and percent is not None:
        raise UsageError("--percent applies only to --to canary")
    command = PromotePolicyVersion(event_id=new_id(), occurred_at=utcnow(), actor=_principal(by, "--by"),
                                   policy=name, version=version, stage=Stage(stage), percent=percent)  # fmt: skip
    _submit(bootstrap, timeout, as_json, command, f"{name} v{version} → {stage}")


@policy_group.command("rollback")
@click.argument("name")
@click.option("--to", "to_version", type=click.IntRange(1), default=None,
              help="Version to restore (default: the previously active one).")  # fmt: skip
@click.option("--by", "by", required=True, help="Who rolls back.")
@click.option("--reason", required=True, help="Why (kept in the ledger).")
@_common
@handle_errors
def rollback(name: str, to_version: int | None, by: str, reason: str, bootstrap: str | None, timeout: float,
             as_json: bool) -> None:  # fmt: skip
    """Restore the previous (or a named) version now. Needs a reason, not an approval."""
    command = RollbackPolicy(event_id=new_id(), occurred_at=utcnow(), actor=_principal(by, "--by"),
                             policy=name, reason=reason, to_version=to_version)  # fmt: skip
    _submit(bootstrap, timeout, as_json, command, f"rolled back {name}", version_label="to version")


@policy_group.command("retire")
@click.argument("name")
@click.option("--by", "by", required=True, help="Who retires the policy.")
@click.option("--reason", required=True, help="Why (kept in the ledger).")
@_common
@handle_errors
def retire(
    name: str, by: str, reason: str, bootstrap: str | None, timeout: float, as_json: bool
) -> None:
    """Retire a policy: its actions become ungoverned, and so denied."""
    command = RetirePolicy(event_id=new_id(), occurred_at=utcnow(), actor=_principal(by, "--by"),
                           policy=name, reason=reason)  # fmt: skip
    _submit(bootstrap, timeout, as_json, command, f"retired {name}")


def _current_state(bootstrap: str | None) -> tuple[LedgerState, list[Any]]:
    settings = load_settings(bootstrap)
    history = load_history(resolve_bootstrap(settings), settings.topics)
    return state_at(history), history


def _policy_rows(state: LedgerState) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(state.policies):
        rec = state.policies[name]
        latest = rec.versions.get(rec.latest)
        rows.append({
            "policy": name,
            "owner": latest.owner if latest else None,
            "governs": list(latest.governs) if latest else [],
            "active": rec.active,
            "canary": rec.canary,
            "canary_percent": rec.canary_percent,
            "shadow": list(rec.shadows),
            "latest": rec.latest,
            "retired": rec.retired,
        })  # fmt: skip
    return rows


@policy_group.command("list")
@bootstrap_option
@json_option
@handle_errors
def list_policies(bootstrap: str | None, as_json: bool) -> None:
    """Inventory: every policy with its owner and active / canary / shadow versions."""
    state, _ = _current_state(bootstrap)
    rows = _policy_rows(state)
    if as_json:
        print_json(rows)
        return
    print_table(
        ["policy", "owner", "active", "canary", "shadow", "latest", "governs"],
        [[r["policy"], r["owner"], r["active"] or "-",
          f"v{r['canary']} ({r['canary_percent']}%)" if r["canary"] else "-",
          ",".join(map(str, r["shadow"])) or "-", r["latest"],
          "retired" if r["retired"] else ", ".join(r["governs"])] for r in rows],
    )  # fmt: skip


@policy_group.command("show")
@click.argument("name")
@bootstrap_option
@json_option
@handle_errors
def show(name: str, bootstrap: str | None, as_json: bool) -> None:
    """Full history of one policy: every version and every lifecycle event, who and when."""
    state, history = _current_state(bootstrap)
    record = state.policies.get(name)
    if record is None:
        raise UsageError(f"no policy named {name!r}; `ledger policy list` shows the known ones")
    events = [e.event for e in history if getattr(e.event, "policy", None) == name]
    versions: list[dict[str, Any]] = [
        {"version": v.version, "stage": v.stage, "author": v.author, "proposed_at": v.proposed_at,
         "approved_by": v.approved_by, "content_hash": v.content_hash, "note": v.note}
        for v in sorted(record.versions.values(), key=lambda v: v.version)
    ]  # fmt: skip
    if as_json:
        print_json({"policy": next(r for r in _policy_rows(state) if r["policy"] == name),
                    "versions": versions,
                    "events": [{"type": type(e).__name__, **to_jsonable(e)} for e in events]})  # fmt: skip
        return
    print_table(["version", "stage", "author", "approved by", "content hash", "note"],
                [[v["version"], v["stage"], v["author"], v["approved_by"] or "-",
                  v["content_hash"][:19], v["note"] or ""] for v in versions], title=f"policy {name}")  # fmt: skip
    print_table(["when", "event", "by", "details"],
                [[e.occurred_at.isoformat(timespec="seconds"), type(e).__name__, e.actor, _details(e)]
                 for e in events], title="history")  # fmt: skip


def _details(event: Any) -> str:
    data = to_jsonable(event)
    skip = {"event_id", "occurred_at", "actor", "command_id", "policy", "sequence", "document",
            "content_hash", "governs", "owner"}  # fmt: skip
    return ", ".join(
        f"{k}={v}" for k, v in data.items() if k not in skip and v not in (None, [], "")
    )


# --------------------------------------------------------------------------- grants and roles


@click.group("grant")
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
@click.option("--from", "valid_from", default=None, help="Valid from (ISO 8601; default now).")
@click.option("--until", "valid_until", default=None, help="Valid until (ISO 8601).")
@click.option(
    "--when", "condition", default=None, help="CEL condition over the request's facts/context."
)
@click.option("--approved-by", default=None, help="Who approved the grant, if anyone.")
@click.option("--note", default=None, help="Why (kept in the ledger).")
@_common
@handle_errors
def grant_issue(principal: str, actions: str, resource: str, by: str, valid_from: str | None,
                valid_until: str | None, condition: str | None, approved_by: str | None, note: str | None,
                bootstrap: str | None, timeout: float, as_json: bool) -> None:  # fmt: skip
    """Issue a grant; prints its id (needed to revoke it)."""
    action_list = tuple(a.strip() for a in actions.split(",") if a.strip())
    if not action_list:
        raise UsageError("--actions needs at least one action, e.g. refund.issue or refund.*")
    grant_id = new_id()
    command = IssueGrant(
        event_id=new_id(), occurred_at=utcnow(), actor=_principal(by, "--by"), grant_id=grant_id,
        principal=_principal(principal, "--to"), actions=action_list, resource=resource,
        condition=condition, valid_from=parse_time(valid_from, "--from"),
        valid_until=parse_time(valid_until, "--until"),
        approved_by=_principal(approved_by, "--approved-by") if approved_by else None, note=note,
    )  # fmt: skip
    _submit(bootstrap, timeout, as_json, command, f"grant {grant_id} to {principal}",
            extra={"grant_id": grant_id})  # fmt: skip


@grant_group.command("revoke")
@click.argument("grant_id")
@click.option("--by", "by", required=True, help="Who revokes.")
@click.option("--reason", default=None, help="Why (kept in the ledger).")
@_common
@handle_errors
def grant_revoke(grant_id: str, by: str, reason: str | None, bootstrap: str | None, timeout: float,
                 as_json: bool) -> None:  # fmt: skip
    """Revoke a grant by id (see `ledger grant list`)."""
    command = RevokeGrant(event_id=new_id(), occurred_at=utcnow(), actor=_principal(by, "--by"),
                          grant_id=grant_id, reason=reason)  # fmt: skip
    _submit(bootstrap, timeout, as_json, command, f"revoked grant {grant_id}")


@grant_group.command("list")
@click.option("--principal", default=None, help="Only this principal's (or role's) grants.")
@bootstrap_option
@json_option
@handle_errors
def grant_list(principal: str | None, bootstrap: str | None, as_json: bool) -> None:
    """Grants (not revoked) and role memberships; with --principal, also the grants it holds
    through its roles (marked "via role:…")."""
    state, _ = _current_state(bootstrap)
    rows: list[dict[str, Any]] = []
    for name in sorted(state.principals):
        rec = state.principals[name]
        if principal and name != principal:
            continue
        # With --principal: what it can use, its own grants and those of its roles (one rule:
        # the core's effective_grants); the full listing shows each grant once, at its holder.
        held = effective_grants(state, name) if principal else tuple(rec.grants.values())
        for grant in held:
            via = grant.principal if grant.principal != name else None
            rows.append({"grant_id": grant.grant_id, "principal": name, "via": via,
                         "actions": list(grant.actions), "resource": grant.resource,
                         "condition": grant.condition, "issued_at": grant.issued_at,
                         "valid_from": grant.valid_from, "valid_until": grant.valid_until,
                         "granted_by": grant.granted_by, "approved_by": grant.approved_by})  # fmt: skip
    roles = {
        n: sorted(r.roles)
        for n, r in state.principals.items()
        if r.roles and (not principal or n == principal)
    }
    if as_json:
        print_json({"grants": rows, "roles": roles})
        return
    print_table(["grant id", "principal", "actions", "resource", "condition", "until", "granted by"],
                [[r["grant_id"], r["principal"] + (f" (via {r['via']})" if r["via"] else ""),
                  ",".join(r["actions"]), r["resource"], r["condition"] or "-",
                  r["valid_until"] or "-", r["granted_by"]] for r in rows])  # fmt: skip
    if roles:
        print_table(["principal", "roles"], [[p, ", ".join(rs)] for p, rs in sorted(roles.items())])


@click.group("role")
def role_group() -> None:
    """Role membership: principals hold the grants of their roles."""


def _role(value: str) -> str:
    return value if value.startswith("role:") else f"role:{value}"


@role_group.command("assign")
@click.argument("principal")
@click.argument("role")
@click.option("--by", "by", required=True, help="Who assigns.")
@_common
@handle_errors
def role_assign(
    principal: str, role: str, by: str, bootstrap: str | None, timeout: float, as_json: bool
) -> None:
    """Make PRINCIPAL a member of ROLE (billing_admin or role:billing_admin)."""
    command = AssignRole(event_id=new_id(), occurred_at=utcnow(), actor=_principal(by, "--by"),
                         principal=_principal(principal, "PRINCIPAL"), role=_role(role))  # fmt: skip
    _submit(bootstrap, timeout, as_json, command, f"{principal} ∈ {_role(role)}")


@role_group.command("revoke")
@click.argument("principal")
@click.argument("role")
@click.option("--by", "by", required=True, help="Who revokes.")
@_common
@handle_errors
def role_revoke(
    principal: str, role: str, by: str, bootstrap: str | None, timeout: float, as_json: bool
) -> None:
    """Remove PRINCIPAL from ROLE."""
    command = RevokeRole(event_id=new_id(), occurred_at=utcnow(), actor=_principal(by, "--by"),
                         principal=_principal(principal, "PRINCIPAL"), role=_role(role))  # fmt: skip
    _submit(bootstrap, timeout, as_json, command, f"{principal} ∉ {_role(role)}")


# --------------------------------------------------------------------------- evaluation


@click.command("evaluate")
@click.option("--action", required=True, help="Action, e.g. refund.issue.")
@click.option("--principal", required=True, help="Who attempts it, e.g. agent:refund-bot.")
@click.option("--resource", required=True, help="What it is on, e.g. account:42.")
@click.option("--facts", "facts_json", default="{}", help="Facts as a JSON object.")
@click.option("--context", "context_json", default="{}", help="Context as a JSON object.")
@click.option(
    "--async", "is_async", is_flag=True, help="Publish and return at once (asynchronous pattern)."
)
@click.option("--default", "default", type=click.Choice(["allow", "deny"]), default=None,
              help="With --async: the determination the caller proceeds on.")  # fmt: skip
@_common
@handle_errors
def evaluate_cmd(action: str, principal: str, resource: str, facts_json: str, context_json: str,
                 is_async: bool, default: str | None, bootstrap: str | None, timeout: float,
                 as_json: bool) -> None:  # fmt: skip
    """Ask the decision plane: publish a request and print its decision trace.

    With --async --default D, print the request id at once; a correction is published on
    ledger.corrections if the decision differs from D.
    """
    facts, context = _parse_facts(facts_json, "--facts"), _parse_facts(context_json, "--context")
    _principal(principal, "--principal")
    with _client(bootstrap, principal) as client:
        if is_async:
            if default is None:
                raise UsageError("--async needs --default allow|deny (what the caller proceeds on)")
            request = client.submit_async(action=action, principal=principal, resource=resource,
                                          default=Determination(default), facts=facts, context=context)  # fmt: skip
            if as_json:
                print_json({"request_id": request.event_id, "default": default})
            else:
                click.echo(f"submitted {request.event_id}; proceeding on {default}")
            return
        if default is not None:
            raise UsageError("--default applies only with --async")
        decision = client.evaluate(action=action, principal=principal, resource=resource, facts=facts,
                                   context=context, timeout=timeout)  # fmt: skip
    if as_json:
        print_json(decision)
        return
    print_table(["field", "value"], [
        ["determination", decision.determination.value],
        ["rule", rule_label(decision.rule, decision.reason_code)],
        ["reason_code", decision.reason_code],
        ["constraints", json_cell(decision.constraints)],
        ["reasons", "; ".join(decision.reasons) or "-"],
        ["policy", f"{decision.policy} v{decision.policy_version} ({decision.stage})" if decision.policy else "-"],
        ["grant", decision.grant_id or "-"],
        ["request id", decision.request_id],
        ["position", json_cell(decision.governance_position)],
    ])  # fmt: skip


# --------------------------------------------------------------------------- replay


@click.command("replay")
@click.option(
    "--at", "at", default=None, help="Instant (ISO 8601, UTC if no offset); default: now."
)
@click.option("--policy", "policy", default=None, help="Only this policy.")
@click.option("--principal", default=None, help="Only this principal's grants and roles.")
@bootstrap_option
@json_option
@handle_errors
def replay_cmd(at: str | None, policy: str | None, principal: str | None, bootstrap: str | None,
               as_json: bool) -> None:  # fmt: skip
    """State at instant T, rebuilt from the ledger: versions in force and grants in force.

    Answers "which version of each policy was active at T" and "what could principal X do at T".
    """
    instant = parse_time(at, "--at") or utcnow()
    settings = load_settings(bootstrap)
    state = state_at(load_history(resolve_bootstrap(settings), settings.topics), instant)
    rows = [r for r in _policy_rows(state) if policy is None or r["policy"] == policy]
    if policy is not None and not rows:
        raise UsageError(f"no policy named {policy!r} existed at {instant.isoformat()}")
    grants: list[dict[str, Any]] = []
    for name, rec in sorted(state.principals.items()):
        if principal and name != principal:
            continue
        for g in rec.grants.values():
            if g.in_force(instant):
                grants.append({"grant_id": g.grant_id, "principal": name, "actions": list(g.actions),
                               "resource": g.resource, "condition": g.condition})  # fmt: skip
    roles = {
        n: sorted(r.roles)
        for n, r in state.principals.items()
        if r.roles and (not principal or n == principal)
    }
    if as_json:
        print_json({"at": instant, "position": dict(state.position), "policies": rows,
                    "grants": grants, "roles": roles})  # fmt: skip
        return
    print_table(["policy", "active", "canary", "shadow"],
                [[r["policy"], r["active"] or "-", f"v{r['canary']} ({r['canary_percent']}%)" if r["canary"] else "-",
                  ",".join(map(str, r["shadow"])) or "-"] for r in rows],
                title=f"policies at {instant.isoformat(timespec='seconds')}")  # fmt: skip
    if policy is None or principal is not None:
        print_table(["grant id", "principal", "actions", "resource", "condition"],
                    [[g["grant_id"], g["principal"], ",".join(g["actions"]), g["resource"], g["condition"] or "-"]
                     for g in grants], title="grants in force")  # fmt: skip
