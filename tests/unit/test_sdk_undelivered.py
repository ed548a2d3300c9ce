"""An asynchronous request that never reaches Kafka is said at ERROR, and its watch ends (an
agent engineer's walkthrough: with Kafka away when the client closed, a request sent with
default allow vanished: the agent acted, the ledger had no record, and nothing said so)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import pytest

from ledger.codec import default_codec
from ledger.core.events import Determination, EvaluationRequested, Mode
from ledger.ids import new_id, utcnow
from ledger.kafka.transport import KafkaTransport
from ledger.settings import TopicNames


class Producer:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any = None) -> None:
        self.callbacks.append(on_delivery)


def transport() -> tuple[KafkaTransport, Producer]:
    t = object.__new__(KafkaTransport)
    producer = Producer()
    t._codec = default_codec()  # type: ignore[attr-defined]
    t._topics = TopicNames()  # type: ignore[attr-defined]
    t._lock = threading.Lock()  # type: ignore[attr-defined]
    t._pending = {}  # type: ignore[attr-defined]
    t._watching = OrderedDict()  # type: ignore[attr-defined]
    t._producer = producer  # type: ignore[attr-defined]
    t._closed = False  # type: ignore[attr-defined]
    t._failure = None  # type: ignore[attr-defined]
    t.reply_partition = 0  # type: ignore[misc]
    t._refuse_if_unavailable = lambda: None  # type: ignore[method-assign]
    t._route = lambda message: ("ledger.evaluation-requests", b"k")  # type: ignore[method-assign]
    return t, producer


def _asked(resource: str, default: Determination) -> EvaluationRequested:
    """An asynchronous request of agent:a on ``resource``, the agent acting on ``default``."""
    return EvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor="agent:a",
        principal="agent:a",
        action="refund.issue",
        resource=resource,
        mode=Mode.ASYNC,
        default=default,
    )


def test_an_async_request_never_delivered_is_said_at_error_and_unwatched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t, producer = transport()
    request = _asked("account:drop1", Determination.ALLOW)
    t.submit(request, lambda correction: None)
    [delivered] = producer.callbacks
    assert delivered is not None and request.event_id.encode() in t._watching  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="ledger.client"):
        delivered(None, None)  # delivered: nothing said, still watched
        assert not caplog.records and request.event_id.encode() in t._watching  # type: ignore[attr-defined]
        delivered("Local: Purged in queue", None)
    [record] = caplog.records
    text = record.getMessage()
    assert request.event_id in text and "was never delivered to Kafka" in text
    assert "account:drop1" in text and "default allow" in text and "Purged" in text
    assert request.event_id.encode() not in t._watching  # type: ignore[attr-defined]


class _Full(Producer):
    """librdkafka's queue, full: every produce refused until a poll makes room (it does not)."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any = None) -> None:
        raise BufferError("Local: Queue full")

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        return 0


def test_a_full_send_queue_is_a_ledger_error_and_leaves_nothing_watched() -> None:
    # An agent engineer's walkthrough: after minutes of Kafka away, submit_async and evaluate
    # raised librdkafka's BufferError, which an agent catching LedgerError (as the README
    # says) did not catch.
    from ledger.errors import KafkaUnavailable, LedgerError

    t, _ = transport()
    full = _Full()
    t._producer = full  # type: ignore[attr-defined]
    request = _asked("account:full", Determination.DENY)
    with pytest.raises(KafkaUnavailable, match="this client's queue for Kafka is full") as raised:
        t.submit(request, lambda correction: None)
    assert isinstance(raised.value, LedgerError) and full.polls == 1  # room waited for once
    assert request.event_id.encode() not in t._watching  # type: ignore[attr-defined]


class _FullThenRefused(_Full):
    """Full, and the retry refused by librdkafka (the topic unknown, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.tries = 0

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any = None) -> None:
        from confluent_kafka import KafkaError, KafkaException

        self.tries += 1
        if self.tries == 1:
            raise BufferError("Local: Queue full")
        raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))


def test_a_refusal_of_the_retry_after_a_full_queue_is_a_ledger_error_too() -> None:
    # A review: the retry's KafkaException escaped raw, past the handler beside it.
    from ledger.errors import LedgerError

    t, _ = transport()
    t._producer = _FullThenRefused()  # type: ignore[attr-defined]
    t._fatal = None  # type: ignore[attr-defined]
    t._security = None  # type: ignore[attr-defined]
    request = _asked("account:full", Determination.DENY)
    with pytest.raises(LedgerError):
        t.submit(request, lambda correction: None)
    assert request.event_id.encode() not in t._watching  # type: ignore[attr-defined]
