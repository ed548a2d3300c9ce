"""Core evaluation throughput: ``python -m benchmarks.core`` (DESIGN §11, first row).

Builds a ledger state by folding real governance events (the refund policy of DESIGN §5 proposed,
approved and active; agent:refund-bot granted ``refund.*`` on ``account:*``), then times the full
:func:`ledger.core.evaluate` — authority, policy, facts, rules and the DecisionRecorded trace — on
varied requests. In the same run it times ``cedarpy.is_authorized`` on an equivalent Cedar policy
(the same rules as permit/forbid over the request context; pre-parsed PolicySet and Entities so
Cedar pays no parsing per call) and prints the ratio. Cedar answers only allow/deny; the ledger
also distinguishes allow_with_constraints and records a full trace, so the comparison flatters
Cedar if anything. A cross-check asserts both agree on allow-vs-deny for every request.
"""

from __future__ import annotations

import argparse
import itertools
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from ledger.core import EMPTY_STATE, LedgerState, decide, evaluate, fold
from ledger.core.events import (
    ApprovePolicyVersion,
    Determination,
    EvaluationRequested,
    IssueGrant,
    PromotePolicyVersion,
    ProposePolicyVersion,
    Stage,
)
from ledger.core.lifecycle import Rejection

POLICY = (
    Path(__file__).resolve().parent.parent / "examples" / "policies" / "refund.yaml"
).read_text()
T0 = datetime(2025, 1, 1, tzinfo=UTC)

CEDAR_POLICY = """
permit (principal == Agent::"refund-bot", action == Action::"refund.issue", resource is Account)
when {
  context.standing != "suspended" &&
  ((context.tenure_days > 90 && context.amount.lessThan(decimal("500.0")) && context.prior_refunds_12m < 3)
   || context.amount.lessThan(decimal("750.0")))
};
"""


def build_state() -> LedgerState:
    ids = (f"evt-{i}" for i in itertools.count())
    state = EMPTY_STATE
    commands = [
        ProposePolicyVersion(
            event_id="c1", occurred_at=T0, actor="human:alice", document=POLICY, policy="refund"
        ),
        ApprovePolicyVersion(
            event_id="c2", occurred_at=T0, actor="human:bob", policy="refund", version=1
        ),
        PromotePolicyVersion(
            event_id="c3",
            occurred_at=T0,
            actor="human:bob",
            policy="refund",
            version=1,
            stage=Stage.ACTIVE,
        ),
        IssueGrant(
            event_id="c4",
            occurred_at=T0,
            actor="human:admin",
            grant_id="g-refund-bot",
            principal="agent:refund-bot",
            actions=("refund.*",),
            resource="account:*",
        ),
    ]
    for command in commands:
        outcome = decide(
            state,
            command,
            now=T0,
            new_id=lambda: next(ids),
            admins=frozenset({"human:admin", "human:alice", "human:bob"}),
        )
        assert not isinstance(outcome, Rejection), outcome
        for event in outcome:
            state = fold(state, event)
    return state


def requests(n: int) -> list[EvaluationRequested]:
    standings = ("good", "watch", "delinquent", "suspended", "good", "good")
    out = []
    for i in range(n):
        out.append(
            EvaluationRequested(
                event_id=f"req-{i}",
                occurred_at=T0,
                actor="agent:refund-bot",
                action="refund.issue",
                principal="agent:refund-bot",
                resource=f"account:{i % 5000}",
                facts={
                    "tenure_days": (i * 7) % 400,
                    "amount": Decimal((i * 37) % 100_000) / 100,
                    "prior_refunds_12m": i % 5,
                    "standing": standings[i % len(standings)],
                },
            )
        )
    return out


def cedar_requests(reqs: list[EvaluationRequested]) -> list[dict[str, object]]:
    out = []
    for r in reqs:
        f = r.facts
        out.append(
            {
                "principal": 'Agent::"refund-bot"',
                "action": 'Action::"refund.issue"',
                "resource": f'Account::"{r.resource.split(":", 1)[1]}"',
                "context": {
                    "tenure_days": f["tenure_days"],
                    "amount": {"__extn": {"fn": "decimal", "arg": f"{f['amount']:.2f}"}},
                    "prior_refunds_12m": f["prior_refunds_12m"],
                    "standing": f["standing"],
                },
            }
        )
    return out


def bench_ledger(
    state: LedgerState, reqs: list[EvaluationRequested], rounds: int
) -> tuple[float, list[Determination]]:
    best = float("inf")
    results: list[Determination] = []
    now = T0 + timedelta(seconds=1)
    for _ in range(rounds):
        start = time.perf_counter()
        results = [evaluate(state, r, now=now, evaluator_id="bench").determination for r in reqs]
        best = min(best, time.perf_counter() - start)
    return len(reqs) / best, results


def bench_cedar(reqs: list[dict[str, object]], rounds: int) -> tuple[float, list[bool]] | None:
    try:
        import cedarpy
    except ImportError:
        return None
    policies = cedarpy.PolicySet.from_str(CEDAR_POLICY)
    entities = cedarpy.Entities.from_json_str("[]")
    best = float("inf")
    allowed: list[bool] = []
    for _ in range(rounds):
        start = time.perf_counter()
        allowed = [cedarpy.is_authorized(r, policies, entities).allowed for r in reqs]
        best = min(best, time.perf_counter() - start)
    return len(reqs) / best, allowed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50_000, help="requests per round (default 50000)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds; the best is reported (default 3)"
    )
    args = parser.parse_args()

    state = build_state()
    reqs = requests(args.n)
    ledger_rate, determinations = bench_ledger(state, reqs, args.rounds)
    print(
        f"ledger.core.evaluate : {ledger_rate:>12,.0f} decisions/s  (authority + policy + trace, {args.n} requests)"
    )
    cedar = bench_cedar(cedar_requests(reqs), args.rounds)
    if cedar is None:
        print("cedarpy              : not installed (pip install '.[bench]')")
        return
    cedar_rate, allowed = cedar
    mismatches = sum(
        (d in (Determination.ALLOW, Determination.ALLOW_WITH_CONSTRAINTS)) != a
        for d, a in zip(determinations, allowed, strict=True)
    )
    print(f"cedarpy.is_authorized: {cedar_rate:>12,.0f} decisions/s  (allow/deny only)")
    print(
        f"ratio                : {ledger_rate / cedar_rate:>12.2f}x  (target >= 3x; target rate >= 100,000/s)"
    )
    print(
        f"agreement            : {len(reqs) - mismatches}/{len(reqs)} allow-vs-deny answers identical"
    )
    if mismatches:
        raise SystemExit("the ledger and Cedar disagree: the policies are not equivalent")


if __name__ == "__main__":
    main()
