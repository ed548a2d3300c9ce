"""``ledger evaluate``: ask the decision plane from a shell, as an agent would (DESIGN §8)."""

from __future__ import annotations

import click

from ledger.cli.common import (
    current_state,
    facts_and_context,
    ledger_client,
    ledger_options,
    principal_arg,
    sendable_request,
)
from ledger.cli.output import (
    handle_errors,
    json_cell,
    policy_label,
    print_json,
    print_table,
    printable,
    rule_label,
)
from ledger.core.events import Determination
from ledger.core.facts import parse_facts_json
from ledger.core.governing import governing_policy, why_ungoverned
from ledger.errors import LedgerError, UsageError

__all__ = ["evaluate_cmd"]


@click.command("evaluate", short_help="Ask for a decision, as an agent would.")
@click.option("--action", required=True, help="Action, e.g. refund.issue.")
@click.option("--principal", required=True, help="Who attempts it, e.g. agent:refund-bot.")
@click.option("--resource", required=True, help="What it is on, e.g. account:42.")
@click.option(
    "--facts",
    "facts_json",
    default="{}",
    help="Facts as a JSON object, or @FILE to read them from a file (@- standard input).",
)
@click.option(
    "--context",
    "context_json",
    default="{}",
    help="Context as a JSON object, or @FILE (@- standard input).",
)
@click.option(
    "--async", "is_async", is_flag=True, help="Publish and return at once (asynchronous pattern)."
)
@click.option(
    "--default",
    "default",
    type=click.Choice(["allow", "deny"]),
    default=None,
    help="With --async: the determination the caller proceeds on.",
)
@ledger_options
@handle_errors
def evaluate_cmd(
    action: str,
    principal: str,
    resource: str,
    facts_json: str,
    context_json: str,
    is_async: bool,
    default: str | None,
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Ask the decision plane: publish a request and print its decision trace.

    With --async --default D, print the request id at once; a correction is published on
    ledger.corrections if the decision differs from D.
    """
    # Flags first, before anything is read or connected to.
    proceed = Determination(default) if default is not None else None
    if is_async and proceed is None:
        raise UsageError("--async needs --default allow|deny (what the caller proceeds on)")
    if proceed is not None and not is_async:
        raise UsageError("--default applies only with --async")
    facts_text, context_text = facts_and_context(facts_json, context_json)
    facts, context = (
        parse_facts_json(facts_text, what="--facts"),
        parse_facts_json(context_text, what="--context"),
    )
    principal_arg(principal, "--principal")
    sendable_request(principal, action, resource, facts, context)
    with ledger_client(bootstrap, principal) as client:
        if proceed is not None:
            request = client.submit_async(
                action=action,
                principal=principal,
                resource=resource,
                default=proceed,
                facts=facts,
                context=context,
            )
            if as_json:
                print_json({"request_id": request.event_id, "default": default})
            else:
                click.echo(f"submitted {request.event_id}; proceeding on {default}")
                # The command ends here, so it never receives the correction (an agent
                # engineer's walkthrough): where the decision, and whether it agreed, are read.
                click.echo(
                    f"its decision, and a correction if it differs from {default}: `ledger "
                    f"decisions --request {request.event_id}`",
                    err=True,
                )
            return
        decision = client.evaluate(
            action=action,
            principal=principal,
            resource=resource,
            facts=facts,
            context=context,
            timeout=timeout,
        )
    if as_json:
        print_json(decision)
        return
    print_table(
        ["field", "value"],
        [
            ["determination", decision.determination.value],
            ["rule", rule_label(decision.rule, decision.reason_code)],
            ["reason_code", decision.reason_code],
            ["constraints", json_cell(decision.constraints)],
            ["reasons", "; ".join(decision.reasons) or "-"],
            ["policy", policy_label(decision.policy, decision.policy_version, decision.stage)],
            ["grant", decision.grant_id or "-"],
            ["request id", decision.request_id],
            ["position", json_cell(decision.governance_position)],
        ],
    )
    if decision.reason_code in ("ungoverned_action", "no_authority"):
        _hint_ungoverned(bootstrap, action, resource, decision.reason_code == "no_authority")


def _hint_ungoverned(bootstrap: str | None, action: str, resource: str, denied: bool) -> None:
    """Say on stderr which versions govern ``action`` without deciding, or what was probably
    meant (the core's :func:`~ledger.core.governing.why_ungoverned`); nothing when the
    governance history cannot be read. ``denied`` (``no_authority``, answered before any policy
    is looked up): only for an action no deployed policy governs (an agent engineer's
    walkthrough: `refnd.issue`, outside the grant's `refund.*`, got no word on the typo)."""
    try:
        state, _ = current_state(bootstrap, warn=False)  # a hint: no warning beside it
    except LedgerError:
        return
    if denied and governing_policy(state, action, resource) is not None:
        return
    hint = why_ungoverned(state, action)
    if hint is not None:
        click.echo(f"hint: {printable(hint, one_line=True)}", err=True)
