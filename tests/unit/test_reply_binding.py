"""The Kafka transport settles a waiting call only with a reply that answers what it asked,
without a broker: ``send`` is given a producer that writes nothing, and the listener's dispatch
is fed the records an attacker and an evaluator would write. The same against the real broker
and evaluator is in ``tests/integration/test_sdk_reply_binding.py``.

Red team (HIGH): a copy of a request, sent under its id with another resource and harmless
facts, was decided first, and ``evaluate`` (and through it ``@enforce``) returned the copy's
``allow``: "asked account:40 amount 100000 standing suspended, got allow on account:1 amount
1.00". Pre-evaluations went through the same dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import pytest

from ledger.client import AsyncLedgerClient, ClientConfig, LedgerClient, Outgoing
from ledger.codec import default_codec
from ledger.core.evaluate import evaluate, evaluate_batch
from ledger.core.events import (
    BatchEvaluationRequested,
    BatchItem,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
)
from ledger.core.state import EMPTY_STATE
from ledger.enforce import enforce
from ledger.errors import LedgerTimeout
from ledger.ids import new_id, utcnow
from ledger.kafka.transport import KafkaTransport, Sent
from ledger.settings import TopicNames
from ledger.testing import MockTransport

CODEC = default_codec()
TOPICS = TopicNames()
AGENT = "agent:refund-bot"


def _transport() -> Any:
    """A Kafka transport of the parts ``send`` and the listener's dispatch use."""
    transport = object.__new__(KafkaTransport)
    transport.__dict__.update(
        _lock=threading.Lock(),
        _closed=False,
        _failure=None,
        _pending={},
        _watching=OrderedDict(),
        _codec=CODEC,
        _topics=TOPICS,
    )
    transport._addressed = lambda message: message
    transport._produce = lambda topic, key, value, report: None
    return transport


def _request(**changes: Any) -> EvaluationRequested:
    request = EvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=AGENT,
        requested_by=AGENT,
        action="refund.issue",
        principal=AGENT,
        resource="account:40",
        facts={"amount": "100000", "standing": "suspended", "tags": ["a"]},
    )
    return replace(request, **changes)


def _decided(request: EvaluationRequested, **changes: Any) -> DecisionRecorded:
    """What an evaluator records for ``request`` (no grant: deny), changed."""
    decision = evaluate(EMPTY_STATE, request, now=utcnow(), evaluator_id="e")
    return replace(decision, **changes) if changes else decision


def _read(transport: Any, event: Any, topic: str = TOPICS.decisions) -> None:
    transport._dispatch(topic, event.request_id.encode(), CODEC.encode(event))


def test_a_decision_for_a_copy_under_the_id_is_ignored_and_the_call_keeps_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = _transport()
    request = _request()
    future = transport.send(request)
    copies = [
        _decided(
            replace(request, resource="account:1", facts={"amount": "1.00", "standing": "good"}),
            determination=Determination.ALLOW,
        ),
        _decided(replace(request, facts={"amount": "1.00"}), determination=Determination.ALLOW),
        _decided(replace(request, principal="agent:other"), determination=Determination.ALLOW),
    ]
    with caplog.at_level(logging.WARNING, logger="ledger.client"):
        for copy in copies:
            _read(transport, copy)
    assert not future.done() and future.others == 3
    assert transport._pending[request.event_id.encode()] is future
    warned = [r for r in caplog.records if "another request under the id" in r.getMessage()]
    assert len(warned) == 1 and request.event_id in warned[0].getMessage()  # once per id
    genuine = _decided(request)
    _read(transport, genuine)
    assert future.result(timeout=1).event_id == genuine.event_id
    assert transport._pending == {}


def test_the_sent_request_is_compared_as_its_evaluator_reads_it() -> None:
    # A list is read back as a tuple: the genuine decision records ("a",) for the ["a"] sent.
    transport = _transport()
    request = _request()
    future = transport.send(request)
    read = CODEC.decode(CODEC.encode(request))
    assert isinstance(read, EvaluationRequested)
    _read(transport, _decided(read))
    assert future.result(timeout=1).facts["tags"] == ("a",)


def test_a_pre_evaluation_takes_only_the_answer_to_its_items() -> None:
    transport = _transport()
    batch = BatchEvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=AGENT,
        principal=AGENT,
        items=(BatchItem(item_id="1", action="refund.issue", resource="account:40"),),
    )
    future = transport.send(batch)
    elsewhere = (BatchItem(item_id="1", action="refund.issue", resource="account:1"),)
    for copy in (replace(batch, items=elsewhere), replace(batch, principal="agent:other")):
        _read(transport, evaluate_batch(EMPTY_STATE, copy, now=utcnow(), evaluator_id="e"))
    # A single decision under a pre-evaluation's id is no answer to it either.
    _read(transport, _decided(_request(event_id=batch.event_id)))
    assert not future.done() and future.others == 3
    genuine = evaluate_batch(EMPTY_STATE, batch, now=utcnow(), evaluator_id="e")
    _read(transport, genuine)
    assert future.result(timeout=1) == genuine


class _Copied(MockTransport):
    """A transport under which a copy's decision came for every request, and nothing else."""

    def __init__(self) -> None:
        super().__init__(lambda message: None)

    def send(self, message: Outgoing) -> Any:
        future = Sent()
        future.written = True
        future.others = 1
        return future


def test_a_timeout_says_decisions_for_another_request_came_under_its_id() -> None:
    said = "1 decision|a decision for another request under its id was read and ignored"
    client = LedgerClient(ClientConfig(actor=AGENT), transport=_Copied())
    with pytest.raises(LedgerTimeout, match=said) as timed_out:
        client.evaluate(action="a.b", principal=AGENT, resource="r", timeout=0.05)
    assert "requests_decided_twice" in str(timed_out.value)
    face = AsyncLedgerClient.wrapping(client)
    for call in (
        face.evaluate(action="a.b", principal=AGENT, resource="r", timeout=0.05),
        face.preevaluate(AGENT, [{"action": "a.b", "resource": "r"}], timeout=0.05),
    ):
        with pytest.raises(LedgerTimeout, match=said):
            asyncio.run(call)
    ran: list[str] = []

    @enforce(client, action="a.b", principal=AGENT, resource="r", timeout=0.05)
    def tool() -> None:
        ran.append("ran")

    with pytest.raises(LedgerTimeout, match=said):
        tool()
    assert ran == []


def test_a_command_is_settled_by_a_result_only() -> None:
    # A review: on a client reading decisions and results both, a decision under a command's
    # id completed submit_command as if it were its result.
    from ledger.core.events import CommandAccepted, CommandRejected, DecisionRecorded
    from ledger.kafka.transport import _settles

    command = object.__new__(CommandAccepted)  # what a command is asked with does not matter
    assert not _settles(command, object.__new__(DecisionRecorded))
    assert _settles(command, object.__new__(CommandAccepted))
    assert _settles(command, object.__new__(CommandRejected))


def test_a_genuine_answer_costs_no_decode_of_the_request_sent() -> None:
    # The round trip at 1,000 req/s was ~0.1 ms slower with the request decoded on every send:
    # the message as sent is compared first, its record decoded only when that does not match.
    transport = _transport()
    decoded: list[type] = []

    class Counting:
        def encode(self, message: Any) -> bytes:
            return CODEC.encode(message)

        def decode(self, value: bytes) -> Any:
            event = CODEC.decode(value)
            decoded.append(type(event))
            return event

    transport._codec = Counting()
    request = _request(facts={"amount": "100000", "standing": "suspended"})
    future = transport.send(request)
    _read(transport, _decided(request))
    assert future.result(timeout=1).request_id == request.event_id
    assert decoded == [DecisionRecorded]  # the reply only
