"""A tiny "agent" whose refund tool cannot run without an allowing decision.

Run it against a running ledger (`ledger up`): ``python examples/refund_agent.py``.
It shows the synchronous pattern through the enforcement-point decorator, the pre-evaluation
pattern, and the asynchronous pattern with a correction.
"""

from __future__ import annotations

import sys
from typing import Any

from ledger import broker
from ledger.client import ClientConfig, LedgerClient
from ledger.enforce import DecisionDenied, enforce
from ledger.settings import Settings

settings = Settings.from_env()
bootstrap = settings.bootstrap or broker.local_bootstrap(settings)
if not bootstrap:
    sys.exit("error: no ledger running: run `ledger up` first (or set LEDGER_BOOTSTRAP)")

client = LedgerClient(
    ClientConfig(bootstrap=bootstrap, topics=settings.topics, actor="agent:refund-bot")
)


@enforce(
    client,
    action="refund.issue",
    principal="agent:refund-bot",
    resource=lambda account, amount, customer: f"account:{account}",
    facts=lambda account, amount, customer: {"amount": amount, **customer},
)
def issue_refund(
    account: str, amount: str, customer: dict[str, Any], *, constraints: dict[str, Any]
) -> str:
    """The governed tool. It only ever runs after an allow; constraints shape what it does."""
    method = constraints.get("refund_method", "original payment method")
    return f"refunded {amount} to account {account} via {method}"


loyal = {"tenure_days": 400, "prior_refunds_12m": 0, "standing": "good"}
suspended = {"tenure_days": 400, "prior_refunds_12m": 0, "standing": "suspended"}

try:
    print("sync   :", issue_refund("1001", "120.50", loyal))
    print("sync   :", issue_refund("1002", "600.00", loyal))
    try:
        issue_refund("1003", "20.00", suspended)
    except DecisionDenied as denied:
        print(
            "sync   : refused —",
            denied,
            f"(policy v{denied.decision.policy_version}, rule {denied.decision.rule})",
        )

    batch = client.preevaluate(
        "agent:refund-bot",
        [
            {
                "action": "refund.issue",
                "resource": "account:2001",
                "facts": {"amount": "50", **loyal},
            },
            {
                "action": "refund.issue",
                "resource": "account:2002",
                "facts": {"amount": "900", **loyal},
            },
            {"action": "email.send", "resource": "customer:2002"},
        ],
    )
    for item in batch.decisions:
        print(
            f"batch  : {item.action} on {item.resource}: {item.determination.value} ({item.reason_code})"
        )
    print("batch  : decided at governance position", dict(batch.governance_position))

    request = client.submit_async(
        action="refund.issue", principal="agent:refund-bot", resource="account:3001",
        facts={"amount": "5000", **loyal}, default="allow",
    )  # fmt: skip
    print("async  : proceeded on allow for", request.event_id)
    for correction in client.corrections(timeout=5):
        if correction.request_id == request.event_id:
            print(
                f"async  : corrected to {correction.determination.value}: {'; '.join(correction.reasons)}"
            )
            break
finally:
    client.close()
