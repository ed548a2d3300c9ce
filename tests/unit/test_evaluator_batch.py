"""RequestHandler.handle_batch: per-record semantics kept across a batch."""

from __future__ import annotations

from types import SimpleNamespace

from ledger.codec import default_codec
from ledger.core.events import DeadLetter, DecisionRecorded, EvaluationRequested
from ledger.core.state import EMPTY_STATE
from ledger.ids import new_id, utcnow
from ledger.settings import Settings
from processors.evaluator import RequestHandler
from processors.outputs import ProcessorStats


def _msg(offset: int, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(topic="requests", partition=0, offset=offset, key=b"k", value=value)


def test_a_batch_answers_each_request_once_and_dead_letters_garbage() -> None:
    codec = default_codec()
    settings = Settings.from_env()
    handler = RequestHandler(
        settings=settings, codec=codec, evaluator_id="test", stats=ProcessorStats()
    )
    request = EvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor="agent:a",
        action="refund.issue",
        principal="agent:a",
        resource="account:1",
        facts={},
    )
    raw = codec.encode(request)
    out = handler.handle_batch(EMPTY_STATE, [_msg(0, raw), _msg(1, b"garbage"), _msg(2, raw)])
    topics = settings.topics
    assert [topic for topic, _, _ in out] == [topics.decisions, topics.dead_letters]
    decision = codec.decode(out[0][2])
    assert isinstance(decision, DecisionRecorded) and decision.request_id == request.event_id
    assert isinstance(codec.decode(out[1][2]), DeadLetter)
    assert handler.stats.processed == 1 and handler.stats.duplicates == 1
    assert handler.stats.dead_lettered == 1
