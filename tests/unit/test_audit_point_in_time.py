"""DuckDB's point-in-time answers equal replay's (DESIGN §9): a property over generated histories.

Histories are made the way the ledger makes them: commands decided by the core against the
state (``decide``) and folded (``fold``), so they hold many policies and versions, approvals,
shadows, canaries (with percents), promotions, rollbacks (to the previous or a named version),
retirements and revivals, grants to principals and roles with validity windows and conditions,
revocations, role assignments and removals. Clock steps of zero put several events on one
instant. The events are written in the export format by the exporter's own writer (no Kafka),
and at many instants — every event's timestamp exactly, a microsecond either side, the grants'
window bounds — the named queries ``active_policies_at`` and ``grants_of`` must say what
``state_at`` (replay's fold) says.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.audit.export import write_events
from ledger.audit.sql import connect, run_named_typed
from ledger.core.authority import capabilities
from ledger.core.events import (
    ApprovePolicyVersion,
    AssignRole,
    Command,
    GovernanceEvent,
    IssueGrant,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RetirePolicy,
    RevokeGrant,
    RevokeRole,
    RollbackPolicy,
    Stage,
)
from ledger.core.history import HistoryEntry, state_at
from ledger.core.lifecycle import decide, event_stream
from ledger.core.state import EMPTY_STATE, LedgerState, fold
from ledger.settings import TopicNames

ROOT = Path(__file__).resolve().parents[2]
REFUND = (ROOT / "examples" / "policies" / "refund.yaml").read_text()
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
POLICIES = ("refund", "payout", "email")
PRINCIPALS = ("agent:a", "agent:b", "human:carol")
ROLES = ("role:ops", "role:audit")
AUTHOR, APPROVER, ADMIN = "human:alice", "human:bob", "human:admin"
ADMINS = frozenset({AUTHOR, APPROVER, ADMIN})
TOPICS = TopicNames(prefix="pit.")


def document(policy: str, threshold: int) -> str:
    doc = REFUND.replace("policy: refund", f"policy: {policy}", 1)
    doc = doc.replace("governs: [refund.issue]", f"governs: [{policy}.do]", 1)
    return doc.replace("amount < 500", f"amount < {threshold}", 1)


@st.composite
def command_plans(draw: st.DrawFn) -> list[tuple[int, str, dict[str, Any]]]:
    """(clock step in seconds, command kind, choices) — resolved against the state later."""
    plan = []
    for _ in range(draw(st.integers(min_value=5, max_value=45))):
        step = draw(st.sampled_from((0, 0, 1, 1, 2, 5)))
        kind = draw(
            st.sampled_from(
                (
                    "propose",
                    "propose",
                    "approve",
                    "approve",
                    "promote",
                    "promote",
                    "promote",
                    "promote",
                    "retire",
                    "rollback",
                    "rollback",
                    "issue",
                    "issue",
                    "revoke",
                    "assign",
                    "unassign",
                )
            )
        )
        choices = {
            "policy": draw(st.sampled_from(POLICIES)),
            "version": draw(st.integers(min_value=1, max_value=4)),
            "stage": draw(st.sampled_from((Stage.SHADOW, Stage.CANARY, Stage.ACTIVE))),
            "percent": draw(st.integers(min_value=1, max_value=99)),
            "to": draw(st.none() | st.integers(min_value=1, max_value=4)),
            "threshold": draw(st.integers(min_value=100, max_value=999)),
            "holder": draw(st.sampled_from(PRINCIPALS + ROLES)),
            "principal": draw(st.sampled_from(PRINCIPALS)),
            "role": draw(st.sampled_from(ROLES)),
            "from": draw(st.none() | st.integers(min_value=-3, max_value=40)),
            "length": draw(st.none() | st.integers(min_value=1, max_value=30)),
            "condition": draw(st.sampled_from((None, None, "amount < 100"))),
            "grant": draw(st.integers(min_value=0, max_value=7)),
        }
        plan.append((step, kind, choices))
    return plan


def _pick(options: list[int], index: int, fallback: int) -> int:
    return options[index % len(options)] if options else fallback


def _command(kind: str, c: dict[str, Any], now: datetime, n: int, state: LedgerState) -> Command:
    """The planned command, its version chosen among those that make sense now (so most
    commands are accepted and the histories reach canaries, rollbacks and revivals)."""
    common: dict[str, Any] = {"event_id": f"cmd-{n}", "occurred_at": now}
    policy = c["policy"]
    record = state.policies.get(policy)
    versions = sorted(record.versions) if record is not None else []
    approved = [v for v in versions if record and record.versions[v].approved_by is not None]
    unapproved = [v for v in versions if v not in approved]
    if kind == "propose":
        return ProposePolicyVersion(
            **common, actor=AUTHOR, policy=policy, document=document(policy, c["threshold"])
        )
    if kind == "approve":
        version = _pick(unapproved, c["version"], c["version"])
        return ApprovePolicyVersion(**common, actor=APPROVER, policy=policy, version=version)
    if kind == "promote":
        stage = c["stage"]
        pool = versions if stage is Stage.SHADOW else approved
        return PromotePolicyVersion(
            **common,
            actor=ADMIN,
            policy=policy,
            version=_pick(pool, c["version"], c["version"]),
            stage=stage,
            percent=c["percent"] if stage is Stage.CANARY else None,
        )
    if kind == "rollback":
        to = None if c["to"] is None else _pick(approved, c["to"], c["to"])
        return RollbackPolicy(**common, actor=ADMIN, policy=policy, reason="bad", to_version=to)
    if kind == "retire":
        return RetirePolicy(**common, actor=ADMIN, policy=policy, reason="gone")
    if kind == "issue":
        start = T0 + timedelta(seconds=c["from"]) if c["from"] is not None else None
        until = (start or T0) + timedelta(seconds=c["length"]) if c["length"] is not None else None
        return IssueGrant(
            **common,
            actor=ADMIN,
            grant_id=f"g{c['grant']}",
            principal=c["holder"],
            actions=(f"{policy}.*",),
            resource="*",
            condition=c["condition"],
            valid_from=start,
            valid_until=until,
        )
    if kind == "revoke":
        return RevokeGrant(**common, actor=ADMIN, grant_id=f"g{c['grant']}", reason="done")
    if kind == "assign":
        return AssignRole(**common, actor=ADMIN, principal=c["principal"], role=c["role"])
    return RevokeRole(**common, actor=ADMIN, principal=c["principal"], role=c["role"])


def build_history(plan: list[tuple[int, str, dict[str, Any]]]) -> list[GovernanceEvent]:
    state: LedgerState = EMPTY_STATE
    now = T0
    counter = iter(range(1, 10**9))
    new_id: Callable[[], str] = lambda: f"ev-{next(counter):06d}"  # noqa: E731
    events: list[GovernanceEvent] = []
    for n, (step, kind, choices) in enumerate(plan):
        now += timedelta(seconds=step)
        outcome = decide(
            state, _command(kind, choices, now, n, state), now=now, new_id=new_id, admins=ADMINS
        )
        if isinstance(outcome, tuple):
            for event in outcome:
                state = fold(state, event)
                events.append(event)
    return events


def instants(events: list[GovernanceEvent]) -> list[datetime]:
    tick = timedelta(microseconds=1)
    found = {T0 - timedelta(seconds=1)}
    for event in events:
        found.update((event.occurred_at, event.occurred_at - tick, event.occurred_at + tick))
        for bound in (getattr(event, "valid_from", None), getattr(event, "valid_until", None)):
            if bound is not None:
                found.update((bound, bound - tick))
    return sorted(found)


def replay_policies(state: LedgerState) -> set[tuple[str, int, str, int | None]]:
    out: set[tuple[str, int, str, int | None]] = set()
    for name, record in state.policies.items():
        if record.active is not None:
            out.add((name, record.active, "active", None))
        if record.canary is not None:
            out.add((name, record.canary, "canary", record.canary_percent))
        out.update((name, v, "shadow", None) for v in record.shadows)
    return out


def replay_grants(state: LedgerState, principal: str, at: datetime) -> set[tuple[str, str | None]]:
    return {
        (g.grant_id, g.principal if g.principal != principal else None)
        for g in capabilities(state, principal, now=at)
    }


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(command_plans(), st.randoms(use_true_random=False))
def test_duckdb_point_in_time_answers_equal_replay(
    plan: list[tuple[int, str, dict[str, Any]]], rnd: Any
) -> None:
    events = build_history(plan)
    history = [
        HistoryEntry(
            f"{TOPICS.policy_events if event_stream(e) == 'policy' else TOPICS.grant_events}/0",
            index,
            e,
        )
        for index, e in enumerate(events)
    ]
    # Offsets per topic, as the writer assigns them: the history keys only need to be stable.
    with tempfile.TemporaryDirectory() as tmp:
        write_events(
            Path(tmp),
            TOPICS,
            [
                (TOPICS.policy_events if event_stream(e) == "policy" else TOPICS.grant_events, e)
                for e in events
            ],
        )
        con = connect(tmp)
        try:
            every = instants(events)
            # Events' own instants and the instants around them and the grants' window bounds,
            # sampled (each query is a DuckDB run).
            exact = sorted({e.occurred_at for e in events})
            chosen = sorted(
                set(rnd.sample(exact, min(len(exact), 8)))
                | set(rnd.sample(every, min(len(every), 6)))
            )
            for at in chosen:
                state = state_at(history, at)
                answer = run_named_typed(con, "active_policies_at", {"at": at})
                duck = {(r[0], r[1], r[2], r[3]) for r in answer.rows}
                assert duck == replay_policies(state), f"active_policies_at({at})"
                for principal in (*PRINCIPALS, rnd.choice(ROLES)):
                    rows = run_named_typed(
                        con, "grants_of", {"principal": principal, "at": at}
                    ).records()
                    duck_grants = {(r["grant_id"], r["via"]) for r in rows}
                    assert duck_grants == replay_grants(state, principal, at), (
                        f"grants_of({principal}, {at})"
                    )
        finally:
            con.close()
