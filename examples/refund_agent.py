"""A tiny "agent" whose refund tool cannot run without an allowing decision.

It shows the synchronous pattern through the enforcement-point decorator, the pre-evaluation
pattern, and the asynchronous pattern with a correction, one output line each (``sync``,
``batch``, ``async``).

What it expects: a running ledger, the refund policy active, and a grant letting
``agent:refund-bot`` refund. From nothing, that is (on a fresh ledger, where the policy's first
version is 1; ``make demo`` does the same with a role for bob)::

    ledger up
    ledger actor add human:alice --by human:admin    # signing keys: every command is signed
    ledger actor add human:bob --by human:admin
    ledger grant issue --to agent:refund-bot --actions 'refund.*' --resource 'account:*' --by human:admin
    ledger grant issue --to human:alice --actions 'ledger.policy.propose' --resource 'policy:*' --by human:admin
    ledger grant issue --to human:bob --actions 'ledger.policy.approve,ledger.policy.promote' --resource 'policy:*' --by human:admin
    ledger policy propose examples/policies/refund.yaml --by human:alice
    ledger policy approve refund 1 --by human:bob
    ledger policy promote refund 1 --to active --by human:bob
    python examples/refund_agent.py

It finds the ledger as every ``ledger`` command does: ``$LEDGER_BOOTSTRAP``, else the local
broker of ``ledger up``, with topics under ``$LEDGER_TOPIC_PREFIX``. Outside that state it still
runs to the end: a refusal (no grant: ``no_authority``; no active policy: ``ungoverned_action``)
or a missing answer (processors down: a timeout) is printed on its line, never a traceback. With
no ledger to talk to at all it exits with one line saying what to do.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from ledger.client import ClientConfig, LedgerClient
from ledger.core.events import DecisionRecorded, Value
from ledger.enforce import DecisionDenied, enforce
from ledger.errors import LedgerError, LedgerTimeout

AGENT = "agent:refund-bot"
LOYAL: dict[str, Value] = {"tenure_days": 400, "prior_refunds_12m": 0, "standing": "good"}
SUSPENDED: dict[str, Value] = {"tenure_days": 400, "prior_refunds_12m": 0, "standing": "suspended"}
CORRECTION_WAIT = 5.0


def refund_facts(account: str, amount: Decimal, customer: Mapping[str, Value]) -> dict[str, Value]:
    """The facts, named one by one: the amount the ledger decides on is the argument the body
    refunds. Never spread a mapping the caller fills over them (``{"amount": amount,
    **customer}``): a ``customer`` carrying its own ``"amount"`` had the ledger decide, and
    record, an amount of 1 while the body refunded 5,000 (a red team)."""
    return {
        "amount": amount,
        "tenure_days": customer["tenure_days"],
        "prior_refunds_12m": customer["prior_refunds_12m"],
        "standing": customer["standing"],
    }


def refund_tool(client: LedgerClient) -> Callable[..., str]:
    """The governed tool, guarded by ``client``."""

    @enforce(
        client,
        action="refund.issue",
        principal=AGENT,
        resource=lambda account, amount, customer: f"account:{account}",
        facts=refund_facts,
        honours={"refund_method"},  # any other constraint: DecisionDenied, never ignored
    )
    def issue_refund(
        account: str, amount: Decimal, customer: dict[str, Any], *, constraints: dict[str, Any]
    ) -> str:
        """It only ever runs after an allow; constraints shape what it does."""
        method = constraints.get("refund_method", "original payment method")
        return f"refunded {amount} to account {account} via {method}"

    return issue_refund


def explain(decision: DecisionRecorded) -> str:
    """Where a decision came from: the policy version and rule, else its reason code."""
    if decision.policy_version is not None:
        rule = decision.rule or "none: the policy's default"
        return f"policy {decision.policy} v{decision.policy_version}, rule {rule}"
    return decision.reason_code or decision.determination.value


def sync_pattern(client: LedgerClient) -> None:
    issue_refund = refund_tool(client)
    for account, amount, customer in (
        ("1001", Decimal("120.50"), LOYAL),
        ("1002", Decimal("600.00"), LOYAL),
        ("1003", Decimal("20.00"), SUSPENDED),
    ):
        try:
            print("sync   :", issue_refund(account, amount, customer))
        except DecisionDenied as denied:
            print(f"sync   : refused — {denied} ({explain(denied.decision)})")
        except LedgerTimeout as timeout:
            print(f"sync   : not refunded, no decision — {timeout}")


def batch_pattern(client: LedgerClient) -> None:
    try:
        batch = client.preevaluate(
            AGENT,
            [
                {
                    "action": "refund.issue",
                    "resource": "account:2001",
                    "facts": {"amount": Decimal("50"), **LOYAL},
                },
                {
                    "action": "refund.issue",
                    "resource": "account:2002",
                    "facts": {"amount": Decimal("900"), **LOYAL},
                },
                {"action": "email.send", "resource": "customer:2002"},
            ],
        )
    except LedgerTimeout as timeout:
        print(f"batch  : no answer — {timeout}")
        return
    for item in batch.decisions:
        print(
            f"batch  : {item.action} on {item.resource}: "
            f"{item.determination.value} ({item.reason_code})"
        )
    print("batch  : decided at governance position", dict(batch.governance_position))


def async_pattern(client: LedgerClient) -> None:
    request = client.submit_async(
        action="refund.issue",
        principal=AGENT,
        resource="account:3001",
        facts={"amount": Decimal("5000"), **LOYAL},
        default="allow",
    )
    print("async  : proceeded on allow for", request.event_id)
    for correction in client.corrections(timeout=CORRECTION_WAIT):
        if correction.request_id == request.event_id:
            print(
                f"async  : corrected to {correction.determination.value}: "
                f"{'; '.join(correction.reasons) or '(no reason given)'}"
            )
            if correction.constraints:  # what the action already taken should have honoured
                print(f"async  : constraints to honour now: {dict(correction.constraints)}")
            return
    print(
        f"async  : no correction within {CORRECTION_WAIT:g} s: the decision agreed with "
        "the default, or none was made (is the evaluator running?)"
    )


def main() -> int:
    try:
        client = LedgerClient(ClientConfig.from_env(actor=AGENT))
    except LedgerError as exc:  # no Kafka to talk to, or no ledger topics on it
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    with client:
        sync_pattern(client)
        batch_pattern(client)
        async_pattern(client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
