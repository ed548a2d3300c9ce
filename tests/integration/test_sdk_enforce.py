"""The SDK's guarantees at the edge of the agent, against the real broker and evaluator:

- enforcement points (``ledger.enforce``): the tool body runs only on an allowing decision and
  gets its constraints; on ``deny`` or ``error`` it never runs and ``DecisionDenied`` carries the
  decision trace; nor does it run when the decision carries constraints the tool has no
  ``constraints`` parameter to take;
- timeouts: with the topics there but nothing answering, every waiting call raises
  ``LedgerTimeout`` within its bound — it never turns into an allow — and an enforcement point
  fails closed;
- corrections of the asynchronous pattern through the ``on_correction`` hook and through
  ``AsyncLedgerClient`` (``next_correction``, ``corrections()``, ``on_correction``);
  ``test_patterns`` covers ``LedgerClient.corrections()``;
- finding the ledger: ``ClientConfig.from_env`` reaches the running local broker, and
  ``examples/refund_agent.py`` runs to the end, printing refusals rather than tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import ADMIN, AGENT, GOOD_FACTS, REFUND, ROOT, LedgerStack, policy_doc, wait_for

from ledger.client import AsyncLedgerClient, ClientConfig, LedgerClient
from ledger.core.events import (
    DecisionCorrected,
    Determination,
    EvaluationRequested,
    ProposePolicyVersion,
)
from ledger.enforce import DecisionDenied, enforce
from ledger.errors import KafkaUnavailable, LedgerError, LedgerTimeout, UsageError
from ledger.ids import new_id, utcnow

pytestmark = pytest.mark.integration

SUSPENDED = {**GOOD_FACTS, "standing": "suspended"}
LARGE = {**GOOD_FACTS, "amount": "600"}  # over auto-refund, under credit-only: store credit
BAD_FACTS = {"tenure_days": -3, "amount": "lots", "standing": "royal"}

# A call that times out must give up after about its timeout: well before the default of the
# client (20 s in the harness), and never much later than asked.
SHORT = 0.5
SLACK = 3.0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def governed(shared_stack: LedgerStack, admin: LedgerClient, agent: LedgerClient, policy_name):
    """This test's own refund policy, active and known to the evaluator; returns its action."""
    action = f"{policy_name}.issue"
    shared_stack.deploy(admin, policy_doc(policy_name))
    shared_stack.evaluate_settled(agent, action=action, principal=AGENT, resource="account:0")
    return action


@pytest.fixture
def refund_tool(agent: LedgerClient, governed: str) -> tuple[Callable[..., Any], list[Any]]:
    """An enforced refund tool and the list its body appends every run to (its side effect)."""
    ran: list[Any] = []

    @enforce(
        agent,
        action=governed,
        principal=lambda account, amount, customer, **_: customer.get("as", AGENT),
        resource=lambda account, amount, customer, **_: f"account:{account}",
        facts=lambda account, amount, customer, **_: {
            "amount": amount,
            **{k: v for k, v in customer.items() if k != "as"},
        },
    )
    def issue_refund(account: str, amount: str, customer: dict[str, Any], *, constraints):
        ran.append((account, amount, constraints))
        return f"refunded {amount} to account {account}"

    return issue_refund, ran


@pytest.fixture(scope="module")
def silent_stack(stack_factory) -> LedgerStack:
    """Every ledger topic, and nothing running to answer: no evaluator, no command processor."""
    return stack_factory(processors=())


class _Heartbeat:
    """Counts event-loop turns while an await is pending: zero means the loop was blocked
    (``every=0``: each turn of the loop; else a beat per ``every`` seconds)."""

    def __init__(self, *, every: float) -> None:
        self.ticks = 0
        self._task = asyncio.get_running_loop().create_task(self._beat(every))

    async def _beat(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.ticks += 1

    def stop(self) -> int:
        self._task.cancel()
        return self.ticks


def _customer(facts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in facts.items() if k != "amount"}


# --------------------------------------------------------------------------- @enforce


def test_enforced_tool_runs_on_allow_with_no_constraints(refund_tool):
    issue_refund, ran = refund_tool
    assert issue_refund("42", "120.50", _customer(GOOD_FACTS)) == "refunded 120.50 to account 42"
    assert ran == [("42", "120.50", {})]


def test_enforced_tool_runs_on_allow_with_constraints_and_receives_them(refund_tool):
    issue_refund, ran = refund_tool
    assert issue_refund("43", "600", _customer(LARGE)) == "refunded 600 to account 43"
    assert ran == [("43", "600", {"refund_method": "credit"})]


def test_enforced_tool_never_runs_on_deny(refund_tool, governed):
    issue_refund, ran = refund_tool
    with pytest.raises(DecisionDenied) as denied:
        issue_refund("44", "120.50", _customer(SUSPENDED))
    assert ran == []
    decision = denied.value.decision
    assert decision.determination is Determination.DENY
    assert (decision.action, decision.resource, decision.principal) == (
        governed,
        "account:44",
        AGENT,
    )
    assert decision.rule == "suspended" and decision.reason_code == "rule_matched"
    assert decision.policy_version == 1
    assert "Suspended accounts are not refunded" in str(denied.value)
    assert isinstance(denied.value, LedgerError) and denied.value.code == "denied"


def test_enforced_tool_never_runs_without_authority(refund_tool):
    issue_refund, ran = refund_tool
    with pytest.raises(DecisionDenied) as denied:
        issue_refund("45", "120.50", {**_customer(GOOD_FACTS), "as": "agent:stranger"})
    assert ran == []
    assert denied.value.decision.determination is Determination.DENY
    assert denied.value.decision.reason_code == "no_authority"


def test_enforced_tool_never_runs_on_an_error_decision(refund_tool, policy_name):
    issue_refund, ran = refund_tool
    with pytest.raises(DecisionDenied) as denied:
        issue_refund("46", "lots", {k: v for k, v in BAD_FACTS.items() if k != "amount"})
    assert ran == []
    decision = denied.value.decision
    assert decision.determination is Determination.ERROR
    assert decision.reason_code == "invalid_facts"
    assert (decision.policy, decision.policy_version) == (policy_name, 1)
    fields = {reason.split(":", 1)[0] for reason in decision.reasons}
    assert fields == {"tenure_days", "amount", "standing", "prior_refunds_12m"}


def test_enforce_takes_fixed_values_and_refuses_constraints_the_tool_cannot_accept(
    agent: LedgerClient, governed: str
):
    ran: list[str] = []

    # A plain allow carries no constraints: a tool without the parameter runs.
    @enforce(agent, action=governed, principal=AGENT, resource="account:47", facts=GOOD_FACTS)
    def notify() -> str:
        ran.append("notified")
        return "ok"

    assert notify() == "ok"
    assert ran == ["notified"]
    assert notify.__name__ == "notify"  # a wrapped tool keeps its identity for agent frameworks

    # LARGE is allowed only with store credit: a tool that cannot be told so must not run.
    @enforce(agent, action=governed, principal=AGENT, resource="account:47", facts=LARGE)
    def notify_large() -> str:
        ran.append("large")
        return "ok"

    with pytest.raises(DecisionDenied) as refused:
        notify_large()
    assert ran == ["notified"]
    decision = refused.value.decision
    assert decision.determination is Determination.ALLOW_WITH_CONSTRAINTS
    assert dict(decision.constraints) == {"refund_method": "credit"}
    assert refused.value.code == "denied"
    assert str(refused.value) == (
        f"{governed} on account:47 by {AGENT}: allowed only with constraints "
        f"{{'refund_method': 'credit'}}, but {notify_large.__qualname__} takes no "
        "`constraints` parameter to honour them"
    )

    # The same for an async tool, and a catch-all **kwargs is not a `constraints` parameter.
    @enforce(agent, action=governed, principal=AGENT, resource="account:47", facts=LARGE)
    async def notify_large_async(**kwargs: Any) -> str:
        ran.append(f"large async {kwargs}")
        return "ok"

    with pytest.raises(DecisionDenied, match="allowed only with constraints") as refused_async:
        asyncio.run(notify_large_async())
    assert ran == ["notified"]
    assert refused_async.value.decision.determination is Determination.ALLOW_WITH_CONSTRAINTS

    @enforce(agent, action=governed, principal=AGENT, resource="account:47", facts=SUSPENDED)
    def notify_suspended() -> str:
        ran.append("suspended")
        return "ok"

    with pytest.raises(DecisionDenied):
        notify_suspended()
    assert ran == ["notified"]


def test_async_tools_are_enforced_without_blocking_the_event_loop(
    shared_stack: LedgerStack, agent: LedgerClient, governed: str
):
    ran: list[Any] = []

    async def run() -> tuple[list[str], Determination, int]:
        config = shared_stack.config(AGENT, timeout=20)
        async with AsyncLedgerClient(config) as client:

            @enforce(
                client,
                action=governed,
                principal=AGENT,
                resource=lambda account, facts: f"account:{account}",
                facts=lambda account, facts: facts,
            )
            async def refund(account: str, facts: dict[str, Any], *, constraints) -> str:
                ran.append((account, constraints))
                return f"refunded {account}"

            # The same tool guarded by the synchronous client: its wait runs in a thread.
            @enforce(agent, action=governed, principal=AGENT, resource="account:52", facts=LARGE)
            async def refund_via_sync_client(*, constraints) -> str:
                ran.append(("52", constraints))
                return "refunded 52"

            # Every turn of the loop, counted during each await: a decision can come back in
            # about a millisecond, faster than any timed beat (a 5 ms one saw none at times).
            beat = _Heartbeat(every=0)
            answers, turns = [], []
            for call in (lambda: refund("50", GOOD_FACTS), refund_via_sync_client):
                before = beat.ticks
                answers.append(await call())
                turns.append(beat.ticks - before)
            before = beat.ticks
            with pytest.raises(DecisionDenied) as denied:
                await refund("51", SUSPENDED)
            turns.append(beat.ticks - before)
            beat.stop()
            return answers, denied.value.decision.determination, turns

    answers, determination, turns = asyncio.run(run())
    assert answers == ["refunded 50", "refunded 52"]
    assert ran == [("50", {}), ("52", {"refund_method": "credit"})]  # never ("51", …)
    assert determination is Determination.DENY
    assert all(n > 0 for n in turns), f"the event loop was blocked while awaiting: {turns}"


def test_a_sync_tool_cannot_be_guarded_by_the_asyncio_client(shared_stack: LedgerStack):
    async def build() -> None:
        config = shared_stack.config(AGENT, timeout=5.0)
        async with AsyncLedgerClient(config) as client:
            with pytest.raises(LedgerError, match="is not async"):

                @enforce(client, action="refund.issue", principal=AGENT, resource="account:1")
                def blocking() -> None:  # pragma: no cover - never decorated
                    raise AssertionError("unreachable")

    asyncio.run(build())


# --------------------------------------------------------------------------- corrections


def test_on_correction_hook_receives_the_correction_of_a_differing_async_decision(
    shared_stack: LedgerStack, agent: LedgerClient, governed: str
):
    received: list[tuple[DecisionCorrected, str]] = []
    arrived = threading.Event()

    def hook(correction: DecisionCorrected) -> None:
        received.append((correction, threading.current_thread().name))
        arrived.set()

    agent.on_correction(hook)
    request = agent.submit_async(
        action=governed, principal=AGENT, resource="account:48", facts=SUSPENDED, default="allow"
    )
    assert arrived.wait(15), shared_stack.logs()
    ((correction, thread),) = received
    assert correction.request_id == request.event_id
    assert (correction.default, correction.determination) == (
        Determination.ALLOW,
        Determination.DENY,
    )
    assert thread == "ledger-corrections"  # never the listener's: see the slow hook's test
    # The hook is in addition to the queue, not instead of it.
    queued = next(agent.corrections(timeout=5), None)
    assert queued is not None and queued.event_id == correction.event_id


def test_a_slow_or_reentrant_on_correction_hook_delays_no_call_of_the_client(
    shared_stack: LedgerStack, governed: str
):
    # An agent engineer's walkthrough: a hook taking 8 s to reverse a refund (run on the
    # listener thread) made the next calls time out, blaming Kafka, though each was decided
    # at once; a hook that asked the ledger again waited on itself for its whole timeout.
    config = shared_stack.config(AGENT, timeout=5)
    with LedgerClient(config) as client:
        asked_inside: list[str] = []
        release = threading.Event()

        def hook(correction: DecisionCorrected) -> None:
            again = client.evaluate(
                action=governed, principal=AGENT, resource="account:62", facts=GOOD_FACTS
            )
            asked_inside.append(again.determination.value)
            release.wait(20)  # a refund reversal that takes its time

        client.on_correction(hook)
        client.submit_async(
            action=governed, principal=AGENT, resource="account:63", facts=SUSPENDED,
            default="allow",
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not asked_inside and time.monotonic() < deadline:
            time.sleep(0.05)
        assert asked_inside == ["allow"], shared_stack.logs()
        # The hook is still busy: calls are answered all the same.
        for n in range(3):
            answered = client.evaluate(
                action=governed, principal=AGENT, resource=f"account:{64 + n}", facts=GOOD_FACTS
            )
            assert answered.determination is Determination.ALLOW
        release.set()


def test_an_async_on_correction_hook_runs_on_the_event_loop_and_the_sync_client_refuses_one(
    shared_stack: LedgerStack, agent: LedgerClient, governed: str
):
    # An agent engineer's walkthrough: `async def` hooks were accepted and never awaited.
    async def undo(correction: DecisionCorrected) -> None:  # pragma: no cover - refused
        raise AssertionError("never run")

    with pytest.raises(UsageError, match=r"use AsyncLedgerClient\.on_correction"):
        agent.on_correction(undo)

    async def run() -> tuple[str, bool]:
        config = shared_stack.config(AGENT, timeout=20)
        seen: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def on_loop(correction: DecisionCorrected) -> None:
            await asyncio.sleep(0)
            running = asyncio.get_running_loop() is loop
            await seen.put((correction.request_id, running))

        async with AsyncLedgerClient(config) as client:
            client.on_correction(on_loop)
            (request,) = await _submit_each(client, governed, "account:67", "allow", SUSPENDED)
            request_id, on_its_loop = await asyncio.wait_for(seen.get(), 15)
            assert request_id == request.event_id
            return request_id, on_its_loop

    _, on_its_loop = asyncio.run(run())
    assert on_its_loop


async def _submit_each(
    client: AsyncLedgerClient, action: str, resource: str, default: str, *facts: dict[str, Any]
) -> list[EvaluationRequested]:
    """One asynchronous request per set of facts, in order, all on ``resource`` (one partition,
    so they are decided in this order too)."""
    return [
        await client.submit_async(
            action=action, principal=AGENT, resource=resource, facts=each, default=default
        )
        for each in facts
    ]


def test_asyncio_client_receives_corrections_of_its_async_requests(
    shared_stack: LedgerStack, governed: str
):
    async def run() -> tuple[list[Any], DecisionCorrected | None, DecisionCorrected | None]:
        config = shared_stack.config(AGENT, timeout=20)
        async with AsyncLedgerClient(config) as client:
            requests = await _submit_each(
                client, governed, "account:49", "deny", SUSPENDED, GOOD_FACTS
            )
            first = await client.next_correction(timeout=15)
            straggler = await client.next_correction(timeout=1)
            return requests, first, straggler

    (agreeing, differing), correction, straggler = asyncio.run(run())
    assert isinstance(agreeing, EvaluationRequested)
    assert correction is not None, shared_stack.logs()
    assert correction.request_id == differing.event_id
    assert (correction.default, correction.determination) == (
        Determination.DENY,
        Determination.ALLOW,
    )
    assert straggler is None  # the suspended request was denied, as its default said


def test_asyncio_client_iterates_corrections_and_calls_its_hook(
    shared_stack: LedgerStack, governed: str
):
    async def run() -> tuple[list[EvaluationRequested], list[Any], list[Any], list[Any]]:
        config = shared_stack.config(AGENT, timeout=20)
        hooked: list[tuple[str, str]] = []
        async with AsyncLedgerClient(config) as client:
            client.on_correction(
                lambda c: hooked.append((c.request_id, threading.current_thread().name))
            )
            requests = await _submit_each(
                client, governed, "account:55", "allow", SUSPENDED, GOOD_FACTS, SUSPENDED
            )
            received = []
            async for correction in client.corrections(timeout=15):
                received.append(correction)
                if len(received) == 2:
                    break
            # The iterator ends once nothing has come for `timeout` seconds.
            late = [c async for c in client.corrections(timeout=1)]
        return requests, received, late, hooked

    (first, agreeing, third), received, late, hooked = asyncio.run(run())
    assert len(received) == 2, shared_stack.logs()
    # Corrections are keyed by request id over several partitions: their order is not defined.
    assert {c.request_id for c in received} == {first.event_id, third.event_id}
    assert all(isinstance(c, DecisionCorrected) for c in received)
    assert all(c.determination is Determination.DENY for c in received)
    assert late == []  # never a correction for the request whose decision agreed
    assert agreeing.event_id not in {request_id for request_id, _ in hooked}
    assert sorted(hooked) == sorted(
        [
            (first.event_id, "ledger-corrections"),
            (third.event_id, "ledger-corrections"),
        ]
    )


def test_asyncio_client_wait_for_a_correction_is_cancelled_promptly(shared_stack: LedgerStack):
    """A cancelled wait leaves no worker thread blocked: the event loop shuts down at once."""

    async def run() -> None:
        config = shared_stack.config(AGENT, timeout=5.0)
        async with AsyncLedgerClient(config) as client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.next_correction(), 0.3)  # no timeout of its own
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(aiter(client.corrections())), 0.3)

    done: list[float] = []
    started = time.monotonic()
    runner = threading.Thread(
        target=lambda: (asyncio.run(run()), done.append(time.monotonic() - started)),
        daemon=True,
    )
    runner.start()
    runner.join(timeout=15)
    assert done, "asyncio.run did not return: a worker thread still waits for a correction"
    assert done[0] < 10


def test_a_cancelled_wait_loses_no_correction_and_a_failing_hook_silences_nothing(
    shared_stack: LedgerStack, governed: str
):
    async def run() -> tuple[EvaluationRequested, DecisionCorrected | None, str]:
        config = shared_stack.config(AGENT, timeout=20)
        async with AsyncLedgerClient(config) as client:

            def broken_hook(correction: DecisionCorrected) -> None:
                raise RuntimeError("the agent's hook is broken")

            client.on_correction(broken_hook)
            # Waits that are given up on, again and again, while the correction is on its way.
            (request,) = await _submit_each(client, governed, "account:60", "allow", SUSPENDED)
            correction = None
            for _ in range(5):
                with contextlib.suppress(TimeoutError):
                    correction = await asyncio.wait_for(client.next_correction(), 0.05)
                    break  # it arrived within one of the short waits: fine too
            correction = correction or await client.next_correction(timeout=15)
            # The listener survived the hook: a synchronous decision still arrives.
            after = await client.evaluate(
                action=governed, principal=AGENT, resource="account:61", facts=GOOD_FACTS
            )
            return request, correction, after.determination.value

    request, correction, after = asyncio.run(run())
    assert correction is not None and correction.request_id == request.event_id, shared_stack.logs()
    assert after == "allow"


# --------------------------------------------------------------------------- finding the ledger


def test_client_config_from_env_reaches_the_running_local_ledger(
    kafka: Any, shared_stack: LedgerStack, governed: str
):
    if kafka.source != "local":
        pytest.skip(f"the session's broker is not the project's local broker ({kafka.source})")
    env = {
        "LEDGER_HOME": str(kafka.settings.home),
        "LEDGER_TOPIC_PREFIX": shared_stack.topics.prefix,
    }
    config = ClientConfig.from_env(actor=AGENT, env=env, timeout=20)
    assert config.bootstrap == kafka.bootstrap
    assert config.topics == shared_stack.topics
    with LedgerClient(config) as client:
        decision = client.evaluate(
            action=governed, principal=AGENT, resource="account:56", facts=GOOD_FACTS
        )
    assert decision.determination is Determination.ALLOW
    assert decision.actor == "service:evaluator"


def _run_example(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "refund_agent.py")],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_refund_agent_example_runs_as_the_demo_shows_and_prints_refusals_without_tracebacks(
    stack_factory,
):
    stack = stack_factory()
    stack.grant_defaults()  # the agent may refund; no refund policy yet
    env = stack.cli_env()

    def lines(done: subprocess.CompletedProcess[str], kind: str) -> list[str]:
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        return [line for line in done.stdout.splitlines() if line.startswith(f"{kind:<7}: ")]

    # Ungoverned: every refund is refused, one printed line each, and the run goes on.
    ungoverned = _run_example(env)
    sync = lines(ungoverned, "sync")
    assert len(sync) == 3, ungoverned.stdout
    assert all(line.startswith("sync   : refused — refund.issue on account:") for line in sync)
    assert all(line.endswith("(ungoverned_action)") for line in sync), sync
    assert len(lines(ungoverned, "batch")) == 4
    assert lines(ungoverned, "async")[-1].startswith("async  : corrected to deny")

    # The state the demo runs it in: the refund policy active.
    admin, agent = stack.client(ADMIN), stack.client(AGENT)
    stack.deploy(admin, REFUND)
    stack.evaluate_settled(agent, action="refund.issue", principal=AGENT, resource="account:0")
    governed = _run_example(env)
    assert lines(governed, "sync") == [
        "sync   : refunded 120.50 to account 1001 via original payment method",
        "sync   : refunded 600.00 to account 1002 via credit",
        "sync   : refused — refund.issue on account:1003 by agent:refund-bot: deny (Suspended "
        "accounts are not refunded) (policy refund v1, rule suspended)",
    ]
    assert lines(governed, "batch")[:3] == [
        "batch  : refund.issue on account:2001: allow (rule_matched)",
        "batch  : refund.issue on account:2002: deny (default_applied)",
        "batch  : email.send on customer:2002: deny (ungoverned_action)",
    ]
    assert lines(governed, "async")[-1] == "async  : corrected to deny: Outside refund policy"


def test_refund_agent_example_without_a_ledger_says_what_to_do(tmp_path):
    done = _run_example({"LEDGER_HOME": str(tmp_path)})
    assert done.returncode == KafkaUnavailable.exit_code
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: no Kafka to talk to:"), done.stderr
    assert "$LEDGER_BOOTSTRAP" in done.stderr and "`ledger up`" in done.stderr


# --------------------------------------------------------------------------- timeouts


@pytest.fixture
def silent_client(silent_stack: LedgerStack) -> Iterator[LedgerClient]:
    client = silent_stack.client(AGENT, timeout=20)
    yield client
    silent_stack.release(client)


def _elapsed(call: Callable[[], Any]) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(LedgerTimeout) as raised:
        call()
    return raised.value, time.monotonic() - started


def test_evaluate_times_out_when_no_evaluator_answers(
    silent_stack: LedgerStack, silent_client: LedgerClient
):
    error, took = _elapsed(
        lambda: silent_client.evaluate(
            action="refund.issue",
            principal=AGENT,
            resource="account:50",
            facts=GOOD_FACTS,
            timeout=SHORT,
        )
    )
    assert SHORT <= took < SHORT + SLACK
    assert isinstance(error, LedgerTimeout) and (error.code, error.exit_code) == ("timeout", 8)
    # The request did go out: what is missing is the answer, and that is not an allow.
    published = wait_for(
        lambda: [
            r
            for r in silent_stack.records(silent_stack.topics.evaluation_requests)
            if r.resource == "account:50"
        ],
        timeout=10,
        what="the request on the evaluation topic",
    )
    assert len(published) == 1
    assert silent_stack.records(silent_stack.topics.decisions) == []


def test_client_default_timeout_applies_to_every_waiting_call(silent_stack: LedgerStack):
    # One client for requests and commands: the admin credential may do both.
    client = LedgerClient(silent_stack.config(AGENT, role="admin", timeout=SHORT))
    try:
        _, took = _elapsed(
            lambda: client.evaluate(action="refund.issue", principal=AGENT, resource="account:51")
        )
        assert took < SHORT + SLACK
        _, took = _elapsed(
            lambda: client.preevaluate(
                AGENT, [{"action": "refund.issue", "resource": "account:51"}]
            )
        )
        assert took < SHORT + SLACK
        # No command processor either: a governance command is not silently taken as accepted.
        command = ProposePolicyVersion(
            event_id=new_id(), occurred_at=utcnow(), actor="human:admin", document=policy_doc()
        )
        _, took = _elapsed(lambda: client.submit_command(command))
        assert took < SHORT + SLACK
    finally:
        client.close()


def test_enforcement_point_fails_closed_on_timeout(silent_client: LedgerClient):
    ran: list[str] = []

    @enforce(
        silent_client,
        action="refund.issue",
        principal=AGENT,
        resource="account:52",
        facts=GOOD_FACTS,
        timeout=SHORT,
    )
    def issue_refund(*, constraints: dict[str, Any]) -> None:
        ran.append("refunded")

    _, took = _elapsed(issue_refund)
    assert took < SHORT + SLACK
    assert ran == []


def test_asyncio_client_times_out_without_blocking_the_event_loop(silent_stack: LedgerStack):
    async def run() -> tuple[BaseException | Any, float, int]:
        config = silent_stack.config(AGENT, timeout=20)
        async with AsyncLedgerClient(config) as client:
            beat = _Heartbeat(every=0.02)
            started = time.monotonic()
            try:
                outcome: BaseException | Any = await client.evaluate(
                    action="refund.issue",
                    principal=AGENT,
                    resource="account:53",
                    facts=GOOD_FACTS,
                    timeout=SHORT,
                )
            except LedgerTimeout as exc:
                outcome = exc
            took = time.monotonic() - started
            return outcome, took, beat.stop()

    outcome, took, ticks = asyncio.run(run())
    assert isinstance(outcome, LedgerTimeout), f"expected a timeout, got {outcome!r}"
    assert SHORT <= took < SHORT + SLACK
    assert ticks >= 5  # the loop kept running other tasks while the call waited


def test_asyncio_client_preevaluate_times_out(silent_stack: LedgerStack):
    async def run() -> float:
        config = silent_stack.config(AGENT, timeout=20)
        async with AsyncLedgerClient(config) as client:
            started = time.monotonic()
            with pytest.raises(LedgerTimeout):
                await client.preevaluate(
                    AGENT, [{"action": "refund.issue", "resource": "account:54"}], timeout=SHORT
                )
            return time.monotonic() - started

    assert asyncio.run(run()) < SHORT + SLACK
