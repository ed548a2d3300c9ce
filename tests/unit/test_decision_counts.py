"""What the evaluator counts of its decisions, and when it says its `error` ones are too many.

An operator's walkthrough: a promoted policy whose first rule divides by zero (it validates)
answered every request `error`, and nothing said so: `ledger ps` green, exit 0, the evaluator's
log only `processed=…`. The evaluator now counts its decisions by determination, the `error`
ones by reason code and deciding policy version, logs a WARNING when they are many, and carries
the last minute's counts in its heartbeat (``ledger ps``: ``tests/unit/test_processor_health.py``).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ledger.codec import default_codec
from ledger.core import EMPTY_STATE, LedgerState, Rejection, decide, fold
from ledger.core.events import (
    ApprovePolicyVersion,
    BatchEvaluationRequested,
    BatchItem,
    Command,
    EvaluationRequested,
    GrantIssued,
    PromotePolicyVersion,
    ProposePolicyVersion,
    Stage,
)
from ledger.ids import new_id, utcnow
from ledger.settings import Settings
from processors.evaluator import errors_warning
from processors.heartbeat import Heartbeat
from processors.outputs import DecisionCounts, DecisionWindow, ProcessorStats, error_note
from processors.request_handler import RequestHandler

CODEC = default_codec()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
BOT = "agent:refund-bot"
REFUND = (Path(__file__).resolve().parents[2] / "examples" / "policies" / "refund.yaml").read_text()
# The walkthrough's policy: it validates, and fails on every request.
FAILING = REFUND.replace(
    'when: standing == "suspended"', "when: 100 / (prior_refunds_12m - prior_refunds_12m) > 1"
)
FACTS = {"tenure_days": 120, "amount": "120.50", "prior_refunds_12m": 0, "standing": "good"}
DIV0 = ("condition_error", "refund", 1)


def deployed(document: str) -> LedgerState:
    """``document`` active as refund v1, and the bot granted refunds."""
    ids = (f"e{i}" for i in itertools.count())
    commands: list[Command] = [
        ProposePolicyVersion(
            event_id="c1", occurred_at=T0, actor="human:alice", document=document, policy="refund"
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
    ]
    state = EMPTY_STATE
    admins = frozenset({"human:alice", "human:bob"})
    for command in commands:
        outcome = decide(state, command, now=T0, new_id=lambda: next(ids), admins=admins)
        assert not isinstance(outcome, Rejection), outcome
        for event in outcome:
            state = fold(state, event)
    return fold(
        state,
        GrantIssued(
            event_id="e-grant",
            occurred_at=T0,
            actor="human:admin",
            command_id="c-grant",
            principal=BOT,
            sequence=1,
            grant_id="g1",
            actions=("refund.issue",),
            resource="account:*",
        ),
    )


def _msg(offset: int, event: Any) -> Any:
    return SimpleNamespace(
        topic="requests", partition=0, offset=offset, key=b"k", value=CODEC.encode(event)
    )


def _request(**facts: Any) -> EvaluationRequested:
    return EvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=BOT,
        action="refund.issue",
        principal=BOT,
        resource="account:5",
        facts={**FACTS, **facts},
    )


def _handler(stats: ProcessorStats) -> RequestHandler:
    return RequestHandler(
        settings=Settings(home=Path("/nonexistent")), codec=CODEC, evaluator_id="t", stats=stats
    )


def test_the_evaluator_counts_each_decision_by_determination_and_errors_by_cause() -> None:
    stats = ProcessorStats()
    handler = _handler(stats)
    batch = BatchEvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=BOT,
        principal=BOT,
        items=tuple(
            BatchItem(item_id=str(i), action="refund.issue", resource="account:5", facts=FACTS)
            for i in range(3)
        ),
    )
    failing = [_msg(0, _request()), _msg(1, _request()), _msg(2, batch)]
    handler.handle_batch(deployed(FAILING), failing)
    assert stats.decisions.determinations == {"error": 5}  # each item of a batch counts
    assert stats.decisions.errors == {DIV0: 5}
    handler.handle_batch(deployed(REFUND), [_msg(3, _request()), _msg(4, _request(amount="600"))])
    handler.handle_batch(deployed(REFUND), [_msg(5, _request(standing="nonsense"))])
    assert stats.decisions.determinations == {"error": 6, "allow": 1, "allow_with_constraints": 1}
    assert stats.decisions.errors == {DIV0: 5, ("invalid_facts", "refund", 1): 1}
    assert stats.processed == 6


def test_a_window_holds_the_last_minutes_counts() -> None:
    total = DecisionCounts()
    window = DecisionWindow(60.0)
    assert window.recent(0.0, total) == (DecisionCounts(), 0.0)
    for t in range(1, 121):
        total.count("error" if t > 90 else "allow", "condition_error", "refund", 1)
        recent, span = window.recent(float(t), total)
    assert span == 60.0
    assert recent.determinations == {"allow": 30, "error": 30}
    assert recent.errors == {DIV0: 30}


def test_errors_are_too_many_from_a_share_and_never_for_one_or_two() -> None:
    counts = DecisionCounts()
    for _ in range(2):
        counts.count("error", "condition_error", "refund", 1)
    assert error_note(counts, share=0.5) is None  # one bad request is not an outage
    counts.count("error", "invalid_facts", "refund", 2)
    for _ in range(3):
        counts.count("allow", None, "refund", 1)
    assert error_note(counts, share=0.5) == (
        "3 of 6 decisions were `error` (condition_error from refund v1: 2; "
        "invalid_facts from refund v2: 1)"
    )
    counts.count("deny", None, None, None)
    assert error_note(counts, share=0.5) is None
    counts.count("error", "policy_unavailable", None, None)
    assert "policy_unavailable: 1" in (error_note(counts, share=0.5) or "")


def test_the_evaluator_logs_a_warning_naming_the_codes_and_versions() -> None:
    since = DecisionCounts()
    for _ in range(40):
        since.count("error", "condition_error", "refund", 3)
    for _ in range(60):
        since.count("allow", None, "refund", 3)
    said = errors_warning(since, 30.0)
    assert said is not None and said.startswith(
        "40 of 100 decisions were `error` (condition_error from refund v3: 40) in the last 30 s"
    )
    assert "`ledger policy rollback NAME --reason WHY --by ACTOR`" in said
    for _ in range(400):
        since.count("allow", None, "refund", 3)
    assert errors_warning(since, 30.0) is None  # under a tenth
    assert since.describe() == "460 allow, 40 error"
    assert "governance_unreadable" not in (said or "")


def test_the_warning_for_governance_unreadable_answers_names_the_newer_release() -> None:
    # A review: it advised only a rollback, which such a command processor refuses as well.
    since = DecisionCounts()
    for _ in range(5):
        since.count("error", "governance_unreadable", "refund", None)
    said = errors_warning(since, 30.0) or ""
    assert said.endswith(
        "; governance_unreadable: this evaluator cannot read governance records a newer "
        "release wrote (`ledger ps` names whose): run that release's processors; a rollback "
        "is refused as well"
    ), said


def test_a_heartbeat_carries_its_recent_decisions_and_one_without_them_still_reads(
    tmp_path: Path,
) -> None:
    counts = DecisionCounts()
    counts.count("error", "condition_error", "refund", 1)
    counts.count("allow", None, "refund", 1)
    beat = Heartbeat(
        pid=1,
        bootstrap="b",
        at=1.0,
        fetched_at=1.0,
        recent=counts,
        recent_seconds=60.0,
        governance_newer=3,
    )
    beat.write(tmp_path / "ready")
    assert Heartbeat.read(tmp_path / "ready") == beat
    older = Heartbeat(pid=1, bootstrap="b", at=1.0, fetched_at=1.0)  # of a release before
    older.write(tmp_path / "ready")
    text = (tmp_path / "ready").read_text().replace(', "recent": null, "recent_seconds": null', "")
    assert "recent" not in text
    (tmp_path / "ready").write_text(text)
    assert Heartbeat.read(tmp_path / "ready") == older


def test_the_window_never_iterates_the_counts_the_request_thread_is_adding_to() -> None:
    # A review: `recent` subtracted from the live counts, which the request thread grows
    # meanwhile: "dictionary changed size during iteration" in the heartbeat task stops the
    # worker. Counts being added to are stood for by dicts that cannot be iterated.
    class Live(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise RuntimeError("dictionary changed size during iteration")

    total = DecisionCounts(Live({"allow": 2}), Live())
    recent, _ = DecisionWindow(60.0).recent(1.0, total)
    assert recent.determinations == {}  # nothing since the first copy


def test_ps_counts_only_the_errors_a_policy_decided() -> None:
    # A review: three malformed requests on an idle ledger made `ps` exit 1 saying a policy
    # fails; any sender can send those. The evaluator's log still names every cause.
    from processors.heartbeat import errors_dominate

    counts = DecisionCounts()
    for code in ("request_too_large", "invalid_request", "evaluation_budget_exceeded"):
        counts.count("error", code, None, None)
    counts.count("allow", None, "refund", 1)
    assert errors_dominate(counts) is None
    assert error_note(counts, share=0.5) is not None  # the log's warning
    for _ in range(3):
        counts.count("error", "condition_error", "refund", 3)
    assert errors_dominate(counts) is None  # 3 a policy decided, of 7
    counts.count("error", "condition_error", "refund", 3)
    assert (errors_dominate(counts) or "").startswith("4 of 8 decisions were `error`")
