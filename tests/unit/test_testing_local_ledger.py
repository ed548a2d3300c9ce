"""``ledger.testing.LocalLedger``: an agent's guarded tools unit-tested without a broker, decided
by the pure core from the example policy ``examples/policies/refund.yaml``.

Covers ``@enforce`` (sync and async tools, both clients) allowed, denied, constrained, refused
for an error decision and for want of authority, and failing closed on a timeout (with a
``MockTransport`` that never answers); governance through the client; corrections; staleness;
the injectable clock; and the README's snippet, run as written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ledger.client import AsyncLedgerClient, ClientConfig, LedgerClient
from ledger.core.events import (
    ApprovePolicyVersion,
    BatchDecisionRecorded,
    DecisionCorrected,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    GrantIssued,
    PolicyVersionPromoted,
    ProposePolicyVersion,
    Stage,
)
from ledger.enforce import DecisionDenied, enforce
from ledger.errors import CommandRejectedError, LedgerTimeout, PolicyError, UsageError
from ledger.ids import new_id, utcnow
from ledger.testing import ADMIN, REVIEWER, LocalLedger, MockTransport, decision

ROOT = Path(__file__).resolve().parents[2]
REFUND = ROOT / "examples" / "policies" / "refund.yaml"
AGENT = "agent:refund-bot"

LOYAL: dict[str, Any] = {"tenure_days": 400, "prior_refunds_12m": 0, "standing": "good"}
SUSPENDED = {**LOYAL, "standing": "suspended"}


@pytest.fixture
def ledger() -> LocalLedger:
    """The refund policy active, and the agent allowed to refund any account."""
    ledger = LocalLedger()
    assert ledger.deploy_file(REFUND) == 1
    ledger.grant(AGENT, "refund.*", "account:*")
    return ledger


@pytest.fixture
def client(ledger: LocalLedger) -> LedgerClient:
    return LedgerClient(ClientConfig(actor=AGENT), transport=ledger)


def refund_tool(
    client: LedgerClient | AsyncLedgerClient, ran: list[Any], *, principal: str = AGENT
) -> Callable[..., str]:
    @enforce(
        client,
        action="refund.issue",
        principal=principal,
        resource=lambda account, amount, customer: f"account:{account}",
        facts=lambda account, amount, customer: {"amount": amount, **customer},
    )
    def issue_refund(
        account: str, amount: str, customer: dict[str, Any], *, constraints: dict[str, Any]
    ) -> str:
        ran.append((account, constraints))
        return f"refunded {amount} via {constraints.get('refund_method', 'cash')}"

    return issue_refund


# --------------------------------------------------------------------------- @enforce


def test_an_allowed_call_runs_the_tool(ledger: LocalLedger, client: LedgerClient) -> None:
    ran: list[Any] = []
    assert refund_tool(client, ran)("1", "120.50", LOYAL) == "refunded 120.50 via cash"
    assert ran == [("1", {})]
    (made,) = ledger.decisions
    assert isinstance(made, DecisionRecorded)
    assert (made.determination, made.rule, made.policy, made.policy_version) == (
        Determination.ALLOW,
        "auto-refund",
        "refund",
        1,
    )
    assert made.stage is Stage.ACTIVE and made.grant_id is not None
    assert made.actor == "service:evaluator" and made.evaluator_id == "local-ledger"


def test_a_constrained_allow_hands_the_tool_its_constraints(client: LedgerClient) -> None:
    ran: list[Any] = []
    assert refund_tool(client, ran)("2", "600", LOYAL) == "refunded 600 via credit"
    assert ran == [("2", {"refund_method": "credit"})]


def test_a_guarded_tool_shows_frameworks_its_own_parameters_not_constraints(
    client: LedgerClient,
) -> None:
    # Frameworks build a tool's schema from inspect.signature: with functools.wraps alone it
    # showed `constraints`, so a model would be asked to supply its own obligations.
    import inspect

    ran: list[Any] = []
    tool = refund_tool(client, ran)
    assert list(inspect.signature(tool).parameters) == ["account", "amount", "customer"]
    # Passed anyway, constraints are replaced by the decision's, and resolvers never see them.
    assert tool("2", "600", LOYAL, constraints={}) == "refunded 600 via credit"
    assert ran == [("2", {"refund_method": "credit"})]


def test_a_catch_all_tool_never_gets_constraints_from_its_caller() -> None:
    # An integrator's walkthrough: a tool taking **kwargs received the caller's own
    # `constraints` on a plain allow, as if the ledger had set them.
    client = LedgerClient(
        ClientConfig(actor=AGENT), transport=MockTransport(lambda message: "allow")
    )

    @enforce(client, action="refund.issue", principal=AGENT, resource="account:1")
    def anything(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    assert anything(amount=1, constraints={"refund_method": "cash"}) == {"amount": 1}
    # Only the decision's own parameters are taken: `decision` is the caller's unless asked for.
    assert anything(amount=1, decision="approve") == {"amount": 1, "decision": "approve"}


def test_a_tool_that_asks_for_it_gets_the_decision_that_allowed_it(
    ledger: LocalLedger, client: LedgerClient
) -> None:
    # To cite it in what the tool records (a refund that names the decision that allowed it).
    import inspect

    got: list[DecisionRecorded] = []

    @enforce(
        client,
        action="refund.issue",
        principal=AGENT,
        resource=lambda account, amount: f"account:{account}",
        facts=lambda account, amount: {"amount": amount, **LOYAL},
        decision_param="decision",
    )
    def issue_refund(
        account: str,
        amount: str,
        *,
        constraints: dict[str, Any] | None = None,
        decision: DecisionRecorded | None = None,
    ) -> str:
        assert decision is not None
        got.append(decision)
        return decision.event_id

    assert list(inspect.signature(issue_refund).parameters) == ["account", "amount"]
    first = issue_refund("1", "120.50", decision="the caller's")  # passed anyway: replaced
    (made,) = ledger.decisions
    assert first == made.event_id and got == [made]
    assert (got[0].rule, got[0].policy_version) == ("auto-refund", 1)

    async def async_call() -> str:
        @enforce(
            AsyncLedgerClient(ClientConfig(actor=AGENT), transport=ledger),
            action="refund.issue",
            principal=AGENT,
            resource="account:2",
            facts={"amount": "10", **LOYAL},
            decision_param="decision",
        )
        async def tool(*, decision: DecisionRecorded | None = None) -> str:
            assert decision is not None
            return decision.event_id

        return await tool()

    assert asyncio.run(async_call()) == ledger.decisions[-1].event_id != first


def test_a_parameter_the_decision_fills_must_not_shift_the_others(client: LedgerClient) -> None:
    # A reviewer's find: hidden from the signature, a `constraints` (or decision) parameter in
    # the middle made `refund("o1", 5)` bind 5 to it: refused when the tool is guarded.
    def constrained(order_id: str, constraints: dict[str, Any], amount: int) -> None: ...

    with pytest.raises(UsageError, match=r"`constraints` comes before amount: .* keyword-only"):
        enforce(client, action="refund.issue", principal=AGENT, resource="r")(constrained)

    def reviewed(loan_id: str, decision: str, note: str = "") -> str:
        return decision

    with pytest.raises(UsageError, match="`decision` comes before note"):
        enforce(
            client, action="refund.issue", principal=AGENT, resource="r", decision_param="decision"
        )(reviewed)
    with pytest.raises(UsageError, match="has no parameter 'verdict'"):
        enforce(
            client, action="refund.issue", principal=AGENT, resource="r", decision_param="verdict"
        )(reviewed)
    # Not asked for, a tool's own `decision` is the caller's, as it always was.
    import inspect

    guarded = enforce(client, action="refund.issue", principal=AGENT, resource="account:1")(
        reviewed
    )
    assert list(inspect.signature(guarded).parameters) == ["loan_id", "decision", "note"]


def test_an_async_generator_is_refused_when_guarded() -> None:
    # An integrator's walkthrough: taken for a plain function, its decision blocked the event
    # loop (with a LedgerClient), or it was "not async" (with an AsyncLedgerClient).
    client = LedgerClient(
        ClientConfig(actor=AGENT), transport=MockTransport(lambda message: "allow")
    )

    async def stream(account: str) -> Any:
        yield account

    with pytest.raises(UsageError, match="is an async generator, which cannot be guarded"):
        enforce(client, action="refund.issue", principal=AGENT, resource="account:1")(stream)


def test_an_async_default_that_is_no_determination_is_a_usage_error() -> None:
    # Not a ValueError: agents catch LedgerError, as the README says.
    client = LedgerClient(
        ClientConfig(actor=AGENT), transport=MockTransport(lambda message: "allow")
    )
    for bad in ("maybe", None, "error"):
        with pytest.raises(UsageError, match="an async default must be allow or deny"):
            client.submit_async(
                action="refund.issue",
                principal=AGENT,
                resource="r",
                default=bad,  # type: ignore[arg-type]
            )


def test_a_mock_reply_built_for_another_request_is_refused() -> None:
    # An integrator's walkthrough: a handler that cached its first reply answered a delete with
    # a read's allow, and the test double took it.
    first: dict[str, Any] = {}

    def cached(message: Any) -> Any:
        first.setdefault("reply", decision(message, "allow"))
        return first["reply"]

    client = LedgerClient(ClientConfig(actor=AGENT, timeout=1), transport=MockTransport(cached))
    assert client.evaluate(action="read.file", principal=AGENT, resource="r1").determination == (
        Determination.ALLOW
    )
    with pytest.raises(UsageError, match="with the reply to"):
        client.evaluate(action="account.delete", principal=AGENT, resource="account:1")
    maybe = LedgerClient(
        ClientConfig(actor=AGENT, timeout=1), transport=MockTransport(lambda m: "maybe")
    )
    with pytest.raises(UsageError, match="'maybe' is not a determination"):
        maybe.evaluate(action="read.file", principal=AGENT, resource="r1")


def test_what_a_record_cannot_carry_fails_in_the_test_double_too(ledger: LocalLedger) -> None:
    # An integrator's walkthrough: 2 MB of facts were allowed by LocalLedger, while the real
    # producer refused them (MSG_SIZE_TOO_LARGE, read as an outage).
    client = LedgerClient(ClientConfig(actor=AGENT), transport=ledger)
    huge = {"tags": ["a" * 2000] * 1000, **LOYAL}
    with pytest.raises(UsageError, match=r"over what a ledger record of 1,000,000 bytes holds"):
        client.evaluate(action="refund.issue", principal=AGENT, resource="account:1", facts=huge)
    with pytest.raises(UsageError, match="what a ledger record of 1,000,000 bytes holds"):
        client.submit_async(
            action="refund.issue", principal=AGENT, resource="account:1", facts=huge, default="deny"
        )
    # A request that fits, whose decision would not: reduced, as the evaluator reduces it.
    seen = set()
    for size in range(998_000, 1_000_000, 100):
        context = {f"k{i}": "x" * 60_000 for i in range(size // 60_000)}
        context["rest"] = "y" * (size % 60_000)
        try:
            answer = client.evaluate(
                action="refund.issue",
                principal=AGENT,
                resource="account:1",
                facts={**LOYAL, "amount": "10"},
                context=context,
            )
        except UsageError:
            break
        seen.add(answer.reason_code)
    assert {"rule_matched", "trace_too_large"} <= seen
    # A pre-evaluation's answer too, item by item (a small record limit makes it not fit).
    from dataclasses import replace

    from ledger.core.limits import DEFAULT_LIMITS

    small = LocalLedger(limits=replace(DEFAULT_LIMITS, record_bytes=1_000))
    items = [
        {"item_id": str(i), "action": "refund.issue", "resource": f"account:{i}"} for i in range(10)
    ]
    answer = LedgerClient(ClientConfig(actor=AGENT), transport=small).preevaluate(AGENT, items)
    assert {d.reason_code for d in answer.decisions} == {"trace_too_large"}


def _evaluator_handler(codec: Any) -> Any:
    """The evaluator's request handler, as a worker builds it (its record limit 1,000,000)."""
    from ledger.settings import Settings
    from processors.evaluator import RequestHandler
    from processors.outputs import OutputLimit, ProcessorStats

    return RequestHandler(
        settings=Settings(home=Path("/nonexistent")),
        codec=codec,
        evaluator_id="local-ledger",
        stats=ProcessorStats(),
        limit=OutputLimit(1_000_000),
    )


def test_a_request_the_evaluator_dead_letters_is_refused_by_the_double_not_answered() -> None:
    # An architecture review: the double answered a pre-evaluation of more than batch_items
    # items with an error per item, while the evaluator dead-letters it unanswered (an agent
    # times out). Both now answer through one core function, and the double refuses what the
    # evaluator would not answer, saying so.
    from dataclasses import replace

    from ledger.codec import default_codec
    from ledger.core.events import BatchEvaluationRequested, BatchItem
    from ledger.core.limits import DEFAULT_LIMITS
    from ledger.core.state import EMPTY_STATE

    def batch(count: int) -> BatchEvaluationRequested:
        return BatchEvaluationRequested(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=AGENT,
            principal=AGENT,
            items=tuple(
                BatchItem(item_id=f"i{n}", action="refund.issue", resource="account:1", facts={})
                for n in range(count)
            ),
            context={},
        )

    codec = default_codec()
    real = _evaluator_handler(codec)
    over = batch(DEFAULT_LIMITS.batch_items + 1)
    (letter,) = real.handle(
        EMPTY_STATE, topic="r", partition=0, offset=0, key=b"k", value=codec.encode(over)
    )
    assert letter[0] == "ledger.dead-letters" and codec.decode(letter[2]).code == "too_many_items"
    with pytest.raises(UsageError, match=r"dead-letters such a request unanswered \(too_many"):
        LocalLedger().send(over)
    # The double's own limits hold it as the evaluator's hold the evaluator.
    small = LocalLedger(limits=replace(DEFAULT_LIMITS, batch_items=3))
    with pytest.raises(UsageError, match=r"4 items in one pre-evaluation, more than 3"):
        small.send(batch(4))
    answered = small.send(batch(3)).result()
    assert [d.item_id for d in answered.decisions] == ["i0", "i1", "i2"]
    with pytest.raises(UsageError, match=r"\(id_empty\)"):
        small.send(replace(batch(1), event_id=" "))


def test_near_the_record_limit_the_double_answers_as_the_evaluator_does(
    ledger: LocalLedger,
) -> None:
    # A reviewer's find: the double measured the decision before the evaluator's chain fields
    # and without the key and Kafka's framing, so a context of ~999,200 characters was `allow`
    # here and `error / trace_too_large` on the real evaluator. Both now link the decision into
    # a chain and hold it to the core's record_fits.

    from ledger.codec import default_codec

    codec = default_codec()
    real = _evaluator_handler(codec)
    bulk = {f"k{i:02d}": "x" * 60_000 for i in range(16)}  # each text within its limit

    def request(pad: int) -> EvaluationRequested:
        return EvaluationRequested(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=AGENT,
            action="refund.issue",
            principal=AGENT,
            resource="account:1",
            facts={**LOYAL, "amount": "10"},
            context={**bulk, "pad": "x" * pad},
        )

    def ours(pad: int) -> str | None:
        return ledger._evaluate(request(pad)).reason_code

    def theirs(pad: int) -> str | None:
        value = codec.encode(request(pad))
        out = real.handle(ledger.state, topic="r", partition=0, offset=0, key=b"k", value=value)
        return codec.decode(out[0][2]).reason_code

    def edge(answer: Callable[[int], str | None]) -> int:
        """The smallest pad whose decision no longer fits whole."""
        low, high = 30_000, 45_000
        assert answer(low) == "rule_matched" and answer(high) == "trace_too_large"
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if answer(middle) == "trace_too_large" else (middle, high)
        return high

    # The same edge, to the few bytes a decision's measured latency takes (0 here).
    assert abs(edge(ours) - edge(theirs)) <= 4


def test_corrections_can_come_later_as_on_a_real_ledger() -> None:
    # An integrator's walkthrough: an agent that read take_correction() right after
    # submit_async passed with LocalLedger, whose corrections came before it returned, and
    # would never see one against a real ledger.
    ledger = LocalLedger(deferred_corrections=True)
    assert ledger.deploy_file(REFUND) == 1
    ledger.grant(AGENT, "refund.*", "account:*")
    client = LedgerClient(ClientConfig(actor=AGENT), transport=ledger)
    hooked: list[Any] = []
    client.on_correction(hooked.append)
    sent = client.submit_async(
        action="refund.issue",
        principal=AGENT,
        resource="account:1",
        facts={**LOYAL, "amount": "5000"},  # denied by default: a correction of "allow"
        default="allow",
    )
    assert client.take_correction() is None and hooked == []
    assert ledger.deliver_corrections() == 1
    arrived = client.take_correction()
    assert arrived is not None and arrived.request_id == sent.event_id
    assert arrived.determination is Determination.DENY and hooked == [arrived]
    assert ledger.deliver_corrections() == 0


def test_resolvers_get_the_tools_defaults_and_a_mismatch_names_the_tool(
    client: LedgerClient,
) -> None:
    @enforce(
        client,
        action="refund.issue",
        principal=AGENT,
        resource=lambda account, amount: f"account:{account}",  # amount has a default
        facts=lambda account, amount: {"amount": amount, **LOYAL},
    )
    def issue(account: str, amount: str = "120.50", *, constraints: dict[str, Any]) -> str:
        return f"{account}: {amount}"

    assert issue("7") == "7: 120.50"  # the lambdas were given the default amount

    def misfit(account: str, *, constraints: dict[str, Any]) -> str:
        return account

    # A parameter the tool has not is refused when the tool is decorated, not at its first call.
    guard = enforce(client, action="refund.issue", principal=AGENT, resource=lambda acct: acct)
    with pytest.raises(
        UsageError,
        match=r"the resource function of .*misfit's enforcement point takes 'acct', which "
        r".*misfit has not: its parameters are matched to .*misfit's \(account\) by name",
    ):
        guard(misfit)
    # One that takes nothing is a constant: fine.
    constant = enforce(
        client,
        action="refund.issue",
        principal=AGENT,
        resource=lambda: "account:7",
        facts=lambda: {"amount": "1", **LOYAL},
    )
    assert constant(misfit)("9") == "9"


def test_resolvers_take_the_tools_arguments_by_name_in_any_order(
    ledger: LocalLedger, client: LedgerClient
) -> None:
    # They were given the arguments by position: `lambda amount, account` on a tool
    # `(account, amount)` asked about account 9000 with amount 100 (allowed), and the tool
    # refunded 9000 to account 100. Named as the tool names them, order does not matter.
    ran: list[tuple[str, str]] = []

    @enforce(
        client,
        action="refund.issue",
        principal=AGENT,
        resource=lambda amount, account: f"account:{account}",
        facts=lambda amount, account: {"amount": amount, **LOYAL},
    )
    def issue_refund(account: str, amount: str, *, constraints: dict[str, Any]) -> str:
        ran.append((account, amount))
        return "refunded"

    for call in (
        lambda: issue_refund("100", "9000"),
        lambda: issue_refund(amount="9000", account="100"),
    ):
        with pytest.raises(DecisionDenied) as denied:
            call()
        assert denied.value.decision.resource == "account:100"
        assert str(denied.value.decision.facts["amount"]) == "9000"
    assert ran == []
    assert issue_refund("100", "90") == "refunded" and ran == [("100", "90")]

    # `*args` would get nothing (it got the arguments when they were given by position).
    with pytest.raises(UsageError, match=r"takes \*rest: its parameters are matched"):
        enforce(client, action="refund.issue", principal=AGENT, resource=lambda *rest: rest[0])(
            issue_refund
        )
    # A positional-only parameter cannot be matched by name.
    with pytest.raises(UsageError, match="takes 'account' by position only"):
        enforce(
            client, action="refund.issue", principal=AGENT, resource=lambda account, /: account
        )(issue_refund)


def test_resolvers_find_names_among_a_tools_keyword_arguments(
    ledger: LocalLedger, client: LedgerClient
) -> None:
    @enforce(
        client,
        action="refund.issue",
        principal=AGENT,
        resource=lambda account, **_: f"account:{account}",
        facts=lambda amount, options: {"amount": amount, **LOYAL},
    )
    def issue(account: str, **options: Any) -> str:
        return f"{account} {sorted(options)}"

    assert issue("5", amount="20", note="x") == "5 ['amount', 'note']"
    (made,) = ledger.decisions
    assert made.resource == "account:5" and str(made.facts["amount"]) == "20"
    # A name the call does not give (and with no default) is one usage line, before any request.
    with pytest.raises(UsageError, match="takes 'amount', which this call does not give"):
        issue("5", note="x")
    assert len(ledger.decisions) == 1


def test_an_exception_in_a_resolver_is_the_callers_own_and_the_tool_does_not_run(
    client: LedgerClient,
) -> None:
    ran: list[str] = []

    @enforce(
        client,
        action="refund.issue",
        principal=AGENT,
        resource=lambda customer: f"account:{customer['id']}",
    )
    def issue(customer: dict[str, str]) -> str:
        ran.append("ran")
        return "refunded"

    with pytest.raises(KeyError):
        issue({})
    assert ran == []


def test_a_denied_call_never_runs_the_tool(client: LedgerClient) -> None:
    ran: list[Any] = []
    with pytest.raises(DecisionDenied) as denied:
        refund_tool(client, ran)("3", "20", SUSPENDED)
    assert ran == []
    decision = denied.value.decision
    assert decision.determination is Determination.DENY
    assert (decision.rule, decision.reason_code) == ("suspended", "rule_matched")
    assert "Suspended accounts are not refunded" in str(denied.value)

    with pytest.raises(DecisionDenied) as outside:
        refund_tool(client, ran)("3", "900", LOYAL)
    assert outside.value.decision.reason_code == "default_applied"
    assert ran == []


def test_a_denial_without_a_reason_names_the_rule_or_default_that_decided() -> None:
    # An agent engineer's walkthrough: a rule without `reason:` reached the model as
    # `deny (rule_matched)`, which tells it nothing; the rule's id and policy now say it.
    ledger = LocalLedger()
    ledger.deploy(
        "policy: bulk\ngoverns: [bulk.delete]\nowner: data\nfacts: {rows: {type: int}}\n"
        "rules:\n  - {id: too-many, when: rows > 5, effect: deny}\n"
        "  - {id: few, when: rows > 2, effect: allow}\ndefault: {effect: deny}\n"
    )
    ledger.grant(AGENT, "bulk.*", "*")
    client = LedgerClient(ClientConfig(actor=AGENT), transport=ledger)

    @enforce(
        client, action="bulk.delete", principal=AGENT, resource="t:1", facts=lambda n: {"rows": n}
    )
    def delete(n: int) -> None:
        raise AssertionError("never runs")

    with pytest.raises(DecisionDenied) as rule:
        delete(9)
    assert str(rule.value).endswith(": deny (rule too-many of bulk v1, rule_matched)"), rule.value
    with pytest.raises(DecisionDenied) as default:
        delete(1)
    assert str(default.value).endswith(": deny (the default of bulk v1, default_applied)")


def test_permitted_is_true_for_allow_and_constrained_allow_only(client: LedgerClient) -> None:
    # An agent engineer's walkthrough: with no such helper, code testing `!= DENY` acted on an
    # `error` answer.
    asked = {"action": "refund.issue", "principal": AGENT, "resource": "account:1"}
    allow = client.evaluate(**asked, facts={**LOYAL, "amount": Decimal("20")})
    constrained = client.evaluate(**asked, facts={**LOYAL, "amount": Decimal("600")})
    deny = client.evaluate(**asked, facts={**SUSPENDED, "amount": Decimal("20")})
    error = client.evaluate(**asked, facts={**LOYAL, "amount": "lots"})
    assert [d.determination for d in (allow, constrained, deny, error)] == list(
        map(Determination, ["allow", "allow_with_constraints", "deny", "error"])
    )
    assert [d.permitted for d in (allow, constrained, deny, error)] == [True, True, False, False]
    batch = client.preevaluate(AGENT, [{"action": "refund.issue", "resource": "account:1",
                                        "facts": {**LOYAL, "amount": Decimal("20")}}])  # fmt: skip
    assert batch.decisions[0].permitted


def test_error_decisions_and_missing_authority_are_refusals_too(client: LedgerClient) -> None:
    ran: list[Any] = []
    with pytest.raises(DecisionDenied) as invalid:
        refund_tool(client, ran)("4", "lots", {**LOYAL, "standing": "royal"})
    assert invalid.value.decision.determination is Determination.ERROR
    assert invalid.value.decision.reason_code == "invalid_facts"
    with pytest.raises(DecisionDenied) as stranger:
        refund_tool(client, ran, principal="agent:stranger")("4", "10", LOYAL)
    assert stranger.value.decision.reason_code == "no_authority"
    assert ran == []


def test_an_ungoverned_action_is_refused_with_the_command_that_says_why(
    client: LedgerClient,
) -> None:
    # An agent engineer's walkthrough: a misspelt action and a policy left in shadow read
    # alike; the refusal names the CLI command that tells them apart.
    ran: list[Any] = []

    @enforce(client, action="refund.isue", principal=AGENT, resource="account:7", facts={})
    def misspelt() -> None:
        ran.append("ran")

    with pytest.raises(DecisionDenied) as ungoverned:
        misspelt()
    assert ungoverned.value.decision.reason_code == "ungoverned_action"
    message = str(ungoverned.value)
    assert message.startswith(f"refund.isue on account:7 by {AGENT}: deny ("), message
    assert (
        f"`ledger evaluate --action refund.isue --principal {AGENT} --resource account:7` "
        "says which)" in message
    ), message
    assert ran == []
    # A review: the resource an LLM chose may hold quotes and `$(…)`: the command is quoted.
    hostile = dataclasses.replace(ungoverned.value.decision, resource="account:Bob's $(id)")
    assert "--resource 'account:Bob'\"'\"'s $(id)'` says which" in str(DecisionDenied(hostile))


def test_a_call_without_an_answer_times_out_and_the_tool_never_runs() -> None:
    silent = MockTransport(lambda message: None)
    client = LedgerClient(ClientConfig(actor=AGENT, timeout=0.05), transport=silent)
    ran: list[Any] = []
    with pytest.raises(LedgerTimeout) as raised:
        refund_tool(client, ran)("5", "10", LOYAL)
    assert ran == []
    assert raised.value.code == "timeout"
    assert len(silent.sent) == 1  # the request went out; no answer is not an allow


def test_async_tools_with_either_client(ledger: LocalLedger) -> None:
    ran: list[Any] = []

    async def run() -> list[Any]:
        async with AsyncLedgerClient(ClientConfig(actor=AGENT), transport=ledger) as client:
            sync_client = LedgerClient(ClientConfig(actor=AGENT), transport=ledger)

            def guard(c: LedgerClient | AsyncLedgerClient) -> Any:
                @enforce(
                    c,
                    action="refund.issue",
                    principal=AGENT,
                    resource=lambda account, facts: f"account:{account}",
                    facts=lambda account, facts: facts,
                )
                async def refund(account: str, facts: dict[str, Any], *, constraints: Any) -> str:
                    ran.append((account, constraints))
                    return account

                return refund

            answers = [
                await guard(client)("6", {**LOYAL, "amount": "10"}),
                await guard(sync_client)("7", {**LOYAL, "amount": "600"}),
            ]
            with pytest.raises(DecisionDenied):
                await guard(client)("8", {**SUSPENDED, "amount": "10"})
            silent = AsyncLedgerClient(
                ClientConfig(actor=AGENT, timeout=0.05), transport=MockTransport(lambda m: None)
            )
            with pytest.raises(LedgerTimeout):
                await guard(silent)("9", {**LOYAL, "amount": "10"})
            return answers

    assert asyncio.run(run()) == ["6", "7"]
    assert ran == [("6", {}), ("7", {"refund_method": "credit"})]


# --------------------------------------------------------------------------- patterns


def test_corrections_of_async_requests(ledger: LocalLedger, client: LedgerClient) -> None:
    hooked: list[tuple[str, str]] = []
    client.on_correction(lambda c: hooked.append((c.request_id, threading.current_thread().name)))
    agreeing = client.submit_async(
        action="refund.issue",
        principal=AGENT,
        resource="account:10",
        facts={**LOYAL, "amount": "10"},
        default="allow",
    )
    differing = client.submit_async(
        action="refund.issue",
        principal=AGENT,
        resource="account:11",
        facts={**SUSPENDED, "amount": "10"},
        default="allow",
    )
    received = list(client.corrections(timeout=0.05))
    assert [c.request_id for c in received] == [differing.event_id]
    (correction,) = received
    assert isinstance(correction, DecisionCorrected)
    assert (correction.default, correction.determination) == (
        Determination.ALLOW,
        Determination.DENY,
    )
    assert correction.reasons == ("Suspended accounts are not refunded",)
    assert hooked == [(differing.event_id, threading.current_thread().name)]
    assert ledger.corrections == [correction]
    assert agreeing.event_id not in {c.request_id for c in ledger.corrections}
    assert client.take_correction() is None


def test_asyncio_client_receives_corrections(ledger: LocalLedger) -> None:
    async def run() -> DecisionCorrected | None:
        async with AsyncLedgerClient(ClientConfig(actor=AGENT), transport=ledger) as client:
            await client.submit_async(
                action="refund.issue",
                principal=AGENT,
                resource="account:12",
                facts={**LOYAL, "amount": "10"},
                default="deny",
            )
            return await client.next_correction(timeout=1)

    correction = asyncio.run(run())
    assert correction is not None
    assert (correction.default, correction.determination) == (
        Determination.DENY,
        Determination.ALLOW,
    )


def test_preevaluation_goes_stale_when_governance_moves(
    ledger: LocalLedger, client: LedgerClient
) -> None:
    answer = client.preevaluate(
        AGENT,
        [
            {
                "item_id": "small",
                "action": "refund.issue",
                "resource": "account:1",
                "facts": {**LOYAL, "amount": "10"},
            },
            {"item_id": "email", "action": "email.send", "resource": "customer:1"},
        ],
    )
    assert isinstance(answer, BatchDecisionRecorded)
    assert [(d.item_id, d.determination) for d in answer.decisions] == [
        ("small", Determination.ALLOW),
        ("email", Determination.DENY),
    ]
    assert answer.decisions[1].reason_code == "no_authority"  # the grant is for refund.*
    position = client.governance_position()
    # Proposal, approval, promotion on the policy stream; one grant on the grant stream.
    assert position == {"ledger.policy-events/0": 2, "ledger.grant-events/0": 0}
    assert dict(answer.governance_position) == position
    assert not client.is_stale(answer, position)

    document = REFUND.read_text().replace("amount < 500", "amount < 100")
    assert ledger.deploy(document) == 2
    assert client.is_stale(answer, client.governance_position())
    again = client.preevaluate(AGENT, [answer_item("account:1", "200")])
    assert again.decisions[0].determination is Determination.ALLOW_WITH_CONSTRAINTS
    assert again.decisions[0].policy_version == 2

    assert ledger.rollback("refund", reason="too strict") == 1
    back = client.preevaluate(AGENT, [answer_item("account:1", "200")])
    assert back.decisions[0].determination is Determination.ALLOW
    assert back.decisions[0].policy_version == 1


def answer_item(resource: str, amount: str) -> dict[str, Any]:
    return {
        "action": "refund.issue",
        "resource": resource,
        "facts": {**LOYAL, "amount": amount},
    }


# --------------------------------------------------------------------------- governance


def test_governance_commands_go_through_the_core_rules() -> None:
    ledger = LocalLedger()
    alice = LedgerClient(ClientConfig(actor="human:alice"), transport=ledger)
    document = REFUND.read_text()

    def propose(by: str) -> Any:
        return alice.submit_command(
            ProposePolicyVersion(
                event_id=new_id(), occurred_at=utcnow(), actor=by, document=document
            )
        )

    with pytest.raises(CommandRejectedError) as refused:
        propose("human:alice")  # no grant, not an administrator
    assert refused.value.code == "not_authorized"

    ledger.grant("human:alice", "ledger.policy.*", "policy:*")
    proposed = propose("human:alice")
    assert (proposed.aggregate, proposed.version) == ("refund", 1)
    with pytest.raises(CommandRejectedError) as self_approval:
        alice.submit_command(
            ApprovePolicyVersion(
                event_id=new_id(),
                occurred_at=utcnow(),
                actor="human:alice",
                policy="refund",
                version=1,
            )
        )
    assert self_approval.value.code == "self_approval"
    with pytest.raises(CommandRejectedError) as again:
        propose("human:alice")
    assert again.value.code == "already_applied"

    kinds = [type(e).__name__ for e in ledger.events]
    assert kinds == ["GrantIssued", "PolicyVersionProposed"]
    assert ledger.state.policies["refund"].versions[1].author == "human:alice"


def test_deploy_stages_and_refusals() -> None:
    ledger = LocalLedger()
    assert ledger.deploy_file(REFUND, stage="shadow") == 1
    record = ledger.state.policies["refund"]
    assert record.active is None and record.shadows == (1,)
    assert ledger.deploy_file(str(REFUND).replace("refund.yaml", "refund-v2.yaml")) == 2
    with pytest.raises(CommandRejectedError) as canary:
        ledger.deploy(REFUND.read_text().replace("amount < 500", "amount < 50"), stage="canary")
    assert canary.value.code == "invalid_percent"
    assert (
        ledger.deploy(
            REFUND.read_text().replace("amount < 500", "amount < 60"), stage="canary", percent=10
        )
        == 4
    )
    assert ledger.state.policies["refund"].canary == 4
    with pytest.raises(PolicyError):
        ledger.deploy("policy: broken\n")
    promoted = [e for e in ledger.events if isinstance(e, PolicyVersionPromoted)]
    assert {e.actor for e in promoted} == {ADMIN}
    approvers = {e.actor for e in ledger.events if type(e).__name__ == "PolicyVersionApproved"}
    assert approvers == {REVIEWER}

    strict = LocalLedger(admins=["human:root"])
    with pytest.raises(CommandRejectedError, match="may not") as denied:
        strict.deploy_file(REFUND)
    assert denied.value.code == "not_authorized"


def test_roles_grants_and_revocation(ledger: LocalLedger, client: LedgerClient) -> None:
    ask = lambda who: client.evaluate(  # noqa: E731
        action="refund.issue", principal=who, resource="account:1", facts={**LOYAL, "amount": "1"}
    )
    assert ask("agent:helper").reason_code == "no_authority"
    ledger.grant("role:refunders", ["refund.issue"], "account:*", grant_id="g-role")
    ledger.assign_role("agent:helper", "role:refunders")
    helped = ask("agent:helper")
    assert helped.determination is Determination.ALLOW and helped.grant_id == "g-role"
    ledger.revoke_grant("g-role")
    assert ask("agent:helper").reason_code == "no_authority"
    with pytest.raises(CommandRejectedError) as unknown:
        ledger.revoke_grant("g-role")
    assert unknown.value.code == "unknown_grant"


def test_the_clock_is_injectable() -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    ledger = LocalLedger(clock=lambda: now[0])
    ledger.deploy_file(REFUND)
    ledger.grant(AGENT, "refund.*", "account:*", valid_until=now[0] + timedelta(days=1))
    client = LedgerClient(ClientConfig(actor=AGENT), transport=ledger)

    def ask() -> DecisionRecorded:
        return client.evaluate(
            action="refund.issue",
            principal=AGENT,
            resource="account:1",
            facts={**LOYAL, "amount": "10"},
        )

    first = ask()
    assert first.determination is Determination.ALLOW
    assert first.occurred_at == now[0]
    (grant,) = [e for e in ledger.events if isinstance(e, GrantIssued)]
    assert grant.occurred_at == now[0]
    now[0] += timedelta(days=2)  # the grant has expired
    assert ask().reason_code == "no_authority"


def test_a_grant_condition_is_evaluated_on_the_facts(ledger: LocalLedger) -> None:
    ledger.grant("agent:capped", "refund.issue", "account:*", when="prior_refunds_12m < 2")
    client = LedgerClient(ClientConfig(actor="agent:capped"), transport=ledger)

    def ask(prior: int) -> DecisionRecorded:
        return client.evaluate(
            action="refund.issue",
            principal="agent:capped",
            resource="account:1",
            facts={**LOYAL, "amount": "10", "prior_refunds_12m": prior},
        )

    assert ask(1).determination is Determination.ALLOW
    assert ask(2).reason_code == "no_authority"


# --------------------------------------------------------------------------- the README


def _readme_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Testing your agent without a broker", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README section has no python snippet"
    return match.group(1)


def test_the_readme_snippet_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # it names the example policy by its path in the repository
    namespace: dict[str, Any] = {}
    exec(compile(_readme_snippet(), "README.md", "exec"), namespace)
    tests = [name for name in namespace if name.startswith("test_")]
    assert len(tests) == 2
    for name in tests:
        namespace[name]()


def test_the_testing_module_loads_neither_kafka_nor_the_local_launcher() -> None:
    code = (
        "import sys, ledger.testing, ledger.enforce\n"
        "loaded = [m for m in sys.modules if m == 'kafka' or m.startswith(('kafka.', "
        "'ledger.local', 'aiokafka', 'faust'))]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_test_double_refuses_a_command_id_the_processor_would_dead_letter() -> None:
    # A review: LocalLedger applied a command with a 200-character id, which the command
    # processor dead-letters unanswered (id_too_long), so a test passed that production fails.
    from dataclasses import replace

    from ledger.core.events import ProposePolicyVersion

    ledger = LocalLedger()
    proposal = ProposePolicyVersion(
        event_id="c" * 200, occurred_at=utcnow(), actor=ADMIN, document=REFUND.read_text()
    )
    with pytest.raises(UsageError, match=r"command id is longer than 128 .*\(id_too_long\)"):
        ledger.submit_command(proposal)
    for blank, said in (("", "is empty"), ("  ", "is only whitespace")):
        with pytest.raises(UsageError, match=rf"the command id {said}: .*\(id_empty\)"):
            ledger.submit_command(replace(proposal, event_id=blank))
    assert ledger.events == []
    accepted = ledger.submit_command(replace(proposal, event_id="c" * 128))
    assert accepted.version == 1


def test_closing_a_client_on_the_mock_fails_its_waiting_calls_at_once_as_on_kafka() -> None:
    # An agent engineer's walkthrough: on Kafka, waiting calls got ClientClosed when the client
    # closed; on MockTransport they waited out their whole timeout, so a shutdown test differed.
    from ledger.errors import ClientClosed

    client = LedgerClient(
        ClientConfig(actor=AGENT, timeout=30), transport=MockTransport(lambda r: None)
    )
    failures: list[BaseException] = []

    def ask() -> None:
        try:
            client.evaluate(action="refund.issue", principal=AGENT, resource="account:1")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    client.close()
    for thread in threads:
        thread.join(timeout=20)  # far short of the calls' own 30 s: woken by the close
    assert not any(thread.is_alive() for thread in threads)
    assert len(failures) == 3 and all(isinstance(f, ClientClosed) for f in failures), failures


def test_a_tool_that_names_what_it_honours_refuses_an_allow_with_more(
    ledger: LocalLedger, client: LedgerClient
) -> None:
    # An agent engineer's walkthrough: a tool written as the README showed honoured
    # refund_method and silently ignored a max_refund cap a later policy version added.
    ran: list[Any] = []

    def guarded(honours: set[str]) -> Callable[..., str]:
        @enforce(
            client,
            action="refund.issue",
            principal=AGENT,
            resource=lambda account: f"account:{account}",
            facts=lambda amount, customer: {"amount": amount, **customer},
            honours=honours,
        )
        def issue_refund(
            account: str, amount: str, customer: dict[str, Any], *, constraints: dict[str, Any]
        ) -> str:
            ran.append(constraints)
            return "refunded"

        return issue_refund

    assert guarded({"refund_method"})("2", "600", LOYAL) == "refunded"  # what it knows
    assert guarded({"refund_method"})("1", "120.50", LOYAL) == "refunded"  # no constraints
    with pytest.raises(DecisionDenied, match="honours only max_refund: refund_method would be"):
        guarded({"max_refund"})("2", "600", LOYAL)
    with pytest.raises(DecisionDenied, match="honours none: refund_method would be ignored"):
        guarded(set())("2", "600", LOYAL)  # a README check: it read "honours only none"
    assert ran == [{"refund_method": "credit"}, {}]
    with pytest.raises(UsageError, match="takes no `constraints` parameter"):
        enforce(client, action="a.b", principal=AGENT, resource="r", honours={"x"})(lambda: None)
    with pytest.raises(UsageError, match="is one text"):
        enforce(client, action="a.b", principal=AGENT, resource="r", honours="refund_method")
    # Not only at the first constrained allow, months later, as a bare TypeError (an agent
    # engineer's walkthrough): when the tool is decorated.
    for odd in ([1], [["refund_method"]], 5):
        with pytest.raises(UsageError, match=r"give (the constraint keys|them) as .*texts"):
            enforce(client, action="a.b", principal=AGENT, resource="r", honours=odd)  # type: ignore[arg-type]


def test_a_tool_object_is_guarded_like_a_function(
    ledger: LocalLedger, client: LedgerClient
) -> None:
    # An agent engineer's walkthrough: a tool written as a class with __call__ (as agent
    # frameworks write tools) crashed with AttributeError, not DecisionDenied, on an allow with
    # constraints; with an async __call__ it could not be guarded at all.
    class Refund:
        def __call__(self, account: str, amount: str) -> str:
            return "refunded"

    class AsyncRefund:
        async def __call__(self, account: str, amount: str) -> str:
            return "refunded"

    def guard(tool: Any, c: LedgerClient | AsyncLedgerClient) -> Any:
        return enforce(
            c,
            action="refund.issue",
            principal=AGENT,
            resource=lambda account: f"account:{account}",
            facts=lambda amount: {"amount": amount, **LOYAL},
        )(tool)

    assert guard(Refund(), client)("1", "120.50") == "refunded"
    with pytest.raises(DecisionDenied, match="Refund takes no `constraints` parameter"):
        guard(Refund(), client)("2", "600")

    async def run() -> None:
        async with AsyncLedgerClient(ClientConfig(actor=AGENT), transport=ledger) as async_client:
            guarded = guard(AsyncRefund(), async_client)
            assert await guarded("3", "120.50") == "refunded"
            with pytest.raises(DecisionDenied, match="AsyncRefund takes no `constraints`"):
                await guarded("4", "600")

    asyncio.run(run())
    with pytest.raises(UsageError, match="Refund is not async: guard it with a LedgerClient"):
        guard(Refund(), AsyncLedgerClient(ClientConfig(actor=AGENT), transport=ledger))


def test_a_guarded_tool_object_keeps_its_name_and_description_not_its_methods(
    client: LedgerClient,
) -> None:
    # An agent engineer's walkthrough: every guarded tool object was a function named `guarded`
    # (or `guarded_async`), its `name` and `description` gone: frameworks that name a tool by
    # its function's __name__ offered the model several tools alike.
    class Schema:
        pass

    class Tool:
        kind = "email"

    class SendEmail(Tool):
        """Send an email to a customer."""

        name = "send_email"
        description = "Send an email to a customer"
        args_schema = Schema

        def __init__(self) -> None:
            self.sent = 0

        def run(self, to: str) -> str:  # would run it unguarded: not carried
            return "sent"

        @property
        def expensive(self) -> str:  # not run to be copied
            raise AssertionError("a property was read")

        def __call__(self, to: str) -> str:
            return self.run(to)

    class Unnamed:
        async def __call__(self, to: str) -> str:
            return "sent"

    def guard(tool: Any) -> Any:
        return enforce(client, action="mail.send", principal=AGENT, resource=lambda to: to)(tool)

    guarded = guard(SendEmail())
    assert (guarded.__name__, guarded.__qualname__) == ("send_email", SendEmail.__qualname__)
    assert guarded.description == "Send an email to a customer"
    assert guarded.args_schema is Schema
    # Only what frameworks describe a tool by (reviews: a dict of handlers, an object with a
    # run method, copied over, ran the tool unguarded).
    assert not hasattr(guarded, "kind") and not hasattr(guarded, "sent")
    assert guarded.__doc__ == "Send an email to a customer."
    assert not hasattr(guarded, "run") and not hasattr(guarded, "expensive")
    assert list(inspect.signature(guarded).parameters) == ["to"]
    unnamed = guard(Unnamed())
    assert unnamed.__name__ == "Unnamed" and inspect.iscoroutinefunction(unnamed)

    def plain(to: str) -> str:
        return "sent"

    assert guard(plain).__name__ == "plain"  # a function keeps its own

    # A review: a slotted tool gave its slots' descriptors, and a callable attribute (a
    # partial of the body) ran the tool unguarded through the guarded function.
    import dataclasses
    import functools

    def body(to: str) -> str:
        raise AssertionError("ran unguarded")

    @dataclasses.dataclass(slots=True)
    class Slotted:
        name: str = "refund_tool"
        description: str = "Refund"
        func: Any = dataclasses.field(default_factory=lambda: functools.partial(body))

        def __call__(self, to: str) -> str:
            return "sent"

    slotted = guard(Slotted())
    assert (slotted.__name__, slotted.description) == ("refund_tool", "Refund")
    assert not hasattr(slotted, "func")

    class Holding:
        def __init__(self) -> None:
            self.func = functools.partial(body)  # an instance's, which functools.wraps copies
            self.limit = 3

        def __call__(self, to: str) -> str:
            return "sent"

    holding = guard(Holding())
    assert not hasattr(holding, "func") and not hasattr(holding, "limit")

    # A review: a name set on the instance (in __init__, a pydantic field: every LangChain
    # tool) was missed, and the tool named after its class again; reading every attribute
    # ran pydantic's deprecated ones (an error under -W error).
    class Named:
        def __init__(self) -> None:
            self.name = "refund_tool"
            self.description = "Refund an order"

        def __call__(self, to: str) -> str:
            return "sent"

    named = guard(Named())
    assert (named.__name__, named.description) == ("refund_tool", "Refund an order")
    import pydantic

    class Lookup(pydantic.BaseModel):
        name: str = "lookup"
        description: str = "Look an order up"

        def __call__(self, to: str) -> str:
            return "found"

    looked = guard(Lookup())  # warnings are errors in this suite
    assert (looked.__name__, looked.description) == ("lookup", "Look an order up")
    assert not hasattr(looked, "model_fields") and not hasattr(looked, "model_config")

    # A red team: the body ran unguarded through `__wrapped__` (the object itself), an
    # instance's `__dunder__` attribute, and callables held in `metadata` or `tags`.
    class Leaky:
        def __init__(self) -> None:
            self.name = "leaky"
            self.__dunder_run__ = self.__call__
            self.metadata = {"fn": self.__call__, "team": "support"}
            self.tags = [self.__call__]
            self.description = object()  # no plain text: an object may hold anything

        def __call__(self, to: str) -> str:
            raise AssertionError("ran unguarded")

    leaky = guard(Leaky())
    assert leaky.__name__ == "leaky"
    for reach in ("__wrapped__", "__dunder_run__", "metadata", "tags", "description"):
        assert not hasattr(leaky, reach), reach
    assert list(inspect.signature(leaky).parameters) == ["to"]  # from __signature__

    class Plain:
        name = "plain_tool"
        metadata: ClassVar[dict[str, Any]] = {
            "team": "support",
            "limits": [1, 2, {"x": None}],
            "schema": Schema,
        }
        tags = ("refunds", "eu")

        def __call__(self, to: str) -> str:
            return "sent"

    kept = guard(Plain())  # plain data is carried
    assert kept.metadata == Plain.metadata and kept.tags == ("refunds", "eu")
    import enum
    from datetime import date
    from decimal import Decimal

    class Tier(enum.Enum):
        GOLD = "gold"

    class Valued:  # a review: an Enum, a date or a Decimal dropped a framework's metadata
        name = "valued"
        metadata: ClassVar[dict[str, Any]] = {
            "tier": Tier.GOLD,
            "since": date(2026, 1, 1),
            "cap": Decimal("50.00"),
        }

        def __call__(self, to: str) -> str:
            return "sent"

    assert guard(Valued()).metadata == Valued.metadata


def test_an_async_client_connects_without_stopping_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An agent engineer's walkthrough: AsyncLedgerClient(...) inside a running loop froze every
    # other task while it connected (5 s when Kafka could not be reached).
    import ledger.client
    from ledger.errors import KafkaUnavailable

    def slow_to_fail(*args: Any, **kwargs: Any) -> LedgerClient:
        time.sleep(0.3)  # connecting, as a LedgerClient does
        raise KafkaUnavailable("cannot reach Kafka")

    monkeypatch.setattr(ledger.client, "LedgerClient", slow_to_fail)

    async def run() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        with pytest.raises(KafkaUnavailable):
            await AsyncLedgerClient.connect(ClientConfig(bootstrap="127.0.0.1:1", actor=AGENT))
        ticker.cancel()
        return ticks

    assert asyncio.run(run()) >= 5  # the loop kept running while it connected


def test_a_grant_of_the_clis_comma_form_is_refused_not_stored_as_one_pattern(
    ledger: LocalLedger,
) -> None:
    # An agent engineer's walkthrough: grant("agent:x", "payment.*,email.send", "*") was
    # accepted as one pattern that no action matches, and every decision was no_authority.
    with pytest.raises(CommandRejectedError, match="holds a comma") as refused:
        ledger.grant(AGENT, "refund.issue,refund.void", "*")
    assert refused.value.code == "invalid_grant"
    ledger.grant(AGENT, ["refund.issue", "refund.void"], "*")


def test_decision_answers_only_an_evaluation_request_and_requests_lists_them() -> None:
    # An agent engineer's walkthrough: decision() was typed for an EvaluationRequested while a
    # handler receives any outgoing message, so the README's test failed mypy --strict.
    def answer(message: Any) -> Any:
        if isinstance(message, EvaluationRequested):
            return decision(message, "allow")
        return decision(message, "allow")  # a pre-evaluation: told what to use instead

    client = LedgerClient(ClientConfig(actor=AGENT), transport=(mock := MockTransport(answer)))
    client.evaluate(action="a.b", principal=AGENT, resource="r", facts={"n": 1})
    with pytest.raises(UsageError, match="not a BatchEvaluationRequested: answer a pre-eval"):
        client.preevaluate(AGENT, [{"action": "a.b", "resource": "r"}])
    assert [r.facts for r in mock.requests] == [{"n": 1}]
    assert len(mock.sent) == 2


def test_a_tool_object_whose_call_is_an_async_generator_is_refused(client: LedgerClient) -> None:
    # A review: refused as a function, an async generator was taken as a tool object's __call__.
    class Stream:
        async def __call__(self, account: str) -> Any:
            yield account

    with pytest.raises(UsageError, match="Stream is an async generator, which cannot be guarded"):
        enforce(client, action="a.b", principal=AGENT, resource="r")(Stream())


def test_a_connect_cancelled_while_it_connects_closes_the_client_it_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A review: asyncio.wait_for(AsyncLedgerClient.connect(...), 1) timing out left the client
    # the worker thread went on making open, with its Kafka threads.
    import ledger.client

    made = threading.Event()
    closed = threading.Event()

    class Slow:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            time.sleep(0.3)
            made.set()

        def close(self) -> None:
            closed.set()

    monkeypatch.setattr(ledger.client, "LedgerClient", Slow)

    async def run() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(AsyncLedgerClient.connect(ClientConfig(actor=AGENT)), 0.05)
        await asyncio.sleep(0.6)  # the worker thread finishes; its client is closed

    asyncio.run(run())
    assert made.is_set() and closed.is_set()


def test_the_test_double_answers_a_batch_whose_reasons_cannot_fit_without_encoding_it_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As the evaluator does: the items' reasons alone over the record limit (30 items of a
    # 1,000-character reason in a 20,000-byte record here; 500 of a 261,000-character one, from
    # a version recorded before policy_reason_chars) say the answer cannot fit: it is never
    # hashed whole.
    from dataclasses import replace

    import ledger.core.answering as answering
    from ledger.core.evaluate import TRACE_TOO_LARGE
    from ledger.core.limits import DEFAULT_LIMITS

    ledger = LocalLedger(limits=replace(DEFAULT_LIMITS, record_bytes=20_000))
    ledger.deploy(
        f"policy: p\ngoverns: [p.act]\nowner: o\ndefault: {{effect: deny, reason: {'x' * 1_000}}}\n"
    )
    ledger.grant(AGENT, "p.*", "*")
    linked: list[Any] = []
    real_link = answering.link
    monkeypatch.setattr(
        answering,
        "link",
        lambda record, head, *a: linked.append(record) or real_link(record, head, *a),
    )
    client = LedgerClient(ClientConfig(actor=AGENT), transport=ledger)
    answer = client.preevaluate(
        principal=AGENT, items=[{"action": "p.act", "resource": f"r:{i}"} for i in range(30)]
    )
    assert {d.reason_code for d in answer.decisions} == {TRACE_TOO_LARGE}
    assert all(
        {d.reason_code for d in r.decisions} == {TRACE_TOO_LARGE}
        for r in linked
        if hasattr(r, "decisions")
    )


def test_a_decision_no_record_can_hold_is_answered_as_the_evaluator_answers_it() -> None:
    # A maintainability review: the evaluator answers a trace its codec refuses as an error
    # saying why (trace_too_large); this test double raised the codec's error instead.
    from ledger.codec import default_codec
    from ledger.core.events import DecisionRecorded
    from ledger.errors import CodecError

    real = default_codec()

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def encode(self, event: Any) -> bytes:
            if isinstance(event, DecisionRecorded) and event.determination is Determination.ALLOW:
                raise CodecError("a value no record holds")
            return real.encode(event)

    ledger = LocalLedger(codec=Refusing())  # type: ignore[arg-type]
    assert ledger.deploy_file(REFUND) == 1
    ledger.grant(AGENT, "refund.*", "account:*")
    client = LedgerClient(ClientConfig(actor=AGENT), transport=ledger)
    answer = client.evaluate(
        action="refund.issue",
        principal=AGENT,
        resource="account:1",
        facts={**LOYAL, "amount": "10"},
    )
    assert answer.determination is Determination.ERROR
    assert answer.reason_code == "trace_too_large"
    assert any("a value no record holds" in reason for reason in answer.reasons), answer.reasons


def test_a_request_sent_again_as_it_was_is_not_answered_again_as_on_kafka(
    ledger: LocalLedger,
) -> None:
    # A README check: re-sending a stored request after its answer waits forever on Kafka (the
    # evaluators drop a record they answered), and the client refuses a second send while
    # the first waits; LocalLedger answered it again, so retry code passed its tests.
    from decimal import Decimal

    client = LedgerClient(ClientConfig(actor=AGENT, timeout=0.2), transport=ledger)
    facts = {"tenure_days": 120, "amount": Decimal("12"), "prior_refunds_12m": 0,
             "standing": "good"}  # fmt: skip
    req = client.request(action="refund.issue", principal=AGENT, resource="account:9", facts=facts)
    assert client.send_request(req).result(1).determination is Determination.ALLOW
    again = client.send_request(req)
    with pytest.raises(TimeoutError):
        again.result(0.1)
    with pytest.raises(UsageError, match="is already waiting for its answer"):
        client.send_request(req)
    assert len(ledger.decisions) == 1
    client.abandon(req.event_id)
    with pytest.raises(TimeoutError):  # still answered once
        client.send_request(req).result(0.1)
    # Another request under the answered id is decided, as an evaluator decides it.
    client.abandon(req.event_id)
    other = client.request(
        action="refund.issue", principal=AGENT, resource="account:8", facts=facts
    )
    other = dataclasses.replace(other, event_id=req.event_id)
    assert client.send_request(other).result(1).request_id == req.event_id
    assert len(ledger.decisions) == 2
    # submit_async of a request answered is dropped: no decision, no correction
    client.submit_async(action="refund.issue", principal=AGENT, resource="a", default="deny")
    assert len(ledger.decisions) == 3
    # Closing the client fails the call still waiting, as on Kafka.
    waiting = client.send_request(req)
    client.close()
    with pytest.raises(Exception, match="closed while waiting"):
        waiting.result(1)


def test_a_mock_transport_refuses_a_message_sent_again_while_its_first_waits() -> None:
    mock = MockTransport(lambda message: None)
    client = LedgerClient(ClientConfig(actor=AGENT, timeout=0.2), transport=mock)
    req = client.request(action="refund.issue", principal=AGENT, resource="account:9")
    first = client.send_request(req)
    with pytest.raises(UsageError, match="is already waiting for its answer"):
        client.send_request(req)
    assert len(mock.sent) == 1
    client.abandon(req.event_id)
    client.send_request(req)  # once abandoned, it may be sent again
    assert len(mock.sent) == 2 and not first.done()


def test_two_threads_sending_one_id_at_once_are_not_both_let_through() -> None:
    # A review: the doubles checked and registered a waiting id in two steps; two threads
    # sending one id were both accepted, and close() then failed only one of them.
    inside, go = threading.Event(), threading.Event()

    def handler(message: Any) -> None:
        inside.set()
        go.wait(10)
        return None

    mock = MockTransport(handler)
    client = LedgerClient(ClientConfig(actor=AGENT, timeout=0.2), transport=mock)
    req = client.request(action="refund.issue", principal=AGENT, resource="account:9")
    outcome: list[Any] = []
    first = threading.Thread(target=lambda: outcome.append(client.send_request(req)))
    first.start()
    assert inside.wait(10)  # the first is in the handler, its id already waiting
    with pytest.raises(UsageError, match="is already waiting for its answer"):
        client.send_request(req)
    go.set()
    first.join(10)
    assert len(mock.sent) == 1 and not outcome[0].done()
    client.close()
    with pytest.raises(Exception, match="closed while waiting"):
        outcome[0].result(1)


def test_a_handler_that_fails_the_test_or_answers_after_close_leaves_nothing_taken() -> None:
    # A review: a BaseException in a handler (pytest.fail) left the id taken, every later
    # send refused; an answer after close() raised InvalidStateError at the caller.
    def failing(message: Any) -> None:
        raise KeyboardInterrupt  # a BaseException, as pytest.fail raises

    mock = MockTransport(failing)
    client = LedgerClient(ClientConfig(actor=AGENT, timeout=0.2), transport=mock)
    req = client.request(action="refund.issue", principal=AGENT, resource="account:9")
    with pytest.raises(KeyboardInterrupt):
        client.send_request(req)
    mock.handler = lambda message: Determination.DENY
    assert client.send_request(req).result(1).determination is Determination.DENY

    def closing(message: Any) -> Determination:
        mock.close()  # the client closed while the handler works
        return Determination.ALLOW

    mock.handler = closing
    other = client.request(action="refund.issue", principal=AGENT, resource="account:8")
    with pytest.raises(Exception, match="closed while waiting"):
        client.send_request(other).result(1)


def test_a_local_ledger_remembers_as_many_answered_requests_as_an_evaluator_worker(
    ledger: LocalLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: the answered requests only grew; an evaluator keeps the last million.
    import ledger.testing as testing

    monkeypatch.setattr(testing, "ANSWERED_KEPT", 2)
    client = LedgerClient(ClientConfig(actor=AGENT, timeout=0.2), transport=ledger)
    asked = [client.request(action="refund.issue", principal=AGENT, resource=f"account:{i}")
             for i in range(3)]  # fmt: skip
    for req in asked:
        client.send_request(req).result(1)
    assert len(ledger._answered) == 2
    assert client.send_request(asked[0]).result(1).request_id == asked[0].event_id  # forgotten
    with pytest.raises(TimeoutError):
        client.send_request(asked[2]).result(0.1)  # remembered: dropped


def test_the_shipped_refund_tool_decides_on_the_amount_it_refunds(
    ledger: LocalLedger, client: LedgerClient
) -> None:
    # A red team: examples/refund_agent.py (and the README's first @enforce sample) spread the
    # caller's `customer` over the facts, so a customer carrying "amount": "1" had the ledger
    # decide, and record, a refund of 1 while the body refunded 5,000.
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "refund_agent.py"
    spec = importlib.util.spec_from_file_location("refund_agent_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    issue_refund = example.refund_tool(client)
    with pytest.raises(DecisionDenied):
        issue_refund("42", Decimal("5000"), {**example.LOYAL, "amount": "1"})
    assert ledger.decisions[-1].facts["amount"] == Decimal("5000")
    assert issue_refund("42", Decimal("120.50"), example.LOYAL).startswith("refunded 120.50")


def test_a_pre_evaluation_is_stale_when_a_grant_window_opens_or_closes() -> None:
    # A red team: an answer allowed under a grant that had since ended still read as fresh
    # (expiry writes no governance event); the answer now says when time changes it.
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    ledger = LocalLedger(clock=lambda: now[0])
    ledger.deploy_file(REFUND)
    ends = now[0] + timedelta(seconds=30)
    later = now[0] + timedelta(hours=1)
    ledger.grant(AGENT, "refund.*", "account:*", valid_until=ends)
    ledger.grant(AGENT, "email.*", "customer:*", valid_from=later)
    ledger.grant("agent:other", "refund.*", "account:*", valid_until=now[0] + timedelta(seconds=1))
    client = LedgerClient(ClientConfig(actor=AGENT), transport=ledger)
    items = [
        {"action": "refund.issue", "resource": "account:1", "facts": {**LOYAL, "amount": "10"}}
    ]
    answer = client.preevaluate(AGENT, items)
    assert answer.decisions[0].determination is Determination.ALLOW
    assert answer.stale_after == ends  # its own grants' first edge, not another principal's
    position = client.governance_position()
    assert not client.is_stale(answer, position, now=ends - timedelta(microseconds=1))
    assert client.is_stale(answer, position, now=ends)
    now[0] = ends
    assert client.preevaluate(AGENT, items).decisions[0].reason_code == "no_authority"
    after = client.preevaluate(AGENT, items)
    assert after.stale_after == later  # the next edge: the email grant's start
    now[0] = later + timedelta(seconds=1)
    assert client.preevaluate(AGENT, items).stale_after is None  # no edge ahead
