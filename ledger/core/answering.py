"""The evaluator's answer to one request as the record it writes: evaluated, linked into the
worker's hash chain, and reduced when no record can hold it (DESIGN §12).

One function for the evaluator's request handler and the SDK's test double
(:class:`ledger.testing.LocalLedger`), so what an agent's test sees is what the agent gets (an
architecture review: the two had written this path twice, and had drifted apart before). The
codec is a parameter (``encode``): the core encodes nothing itself, it only decides what to do
when a record is too large or cannot be encoded at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from ledger.core.chain import ChainHead, link
from ledger.core.evaluate import (
    batch_surely_too_large,
    batch_without_trace,
    evaluate,
    evaluate_batch,
    without_trace,
)
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    DecisionRecorded,
    EvaluationRequested,
)
from ledger.core.limits import DEFAULT_LIMITS, Limits, record_fits
from ledger.core.state import LedgerState
from ledger.errors import CodecError

__all__ = ["Answered", "answer_record"]


class Answered(NamedTuple):
    """A request's answer as linked (``record``), the chain's head after it, and its bytes."""

    record: DecisionRecorded | BatchDecisionRecorded
    head: ChainHead
    encoded: bytes


def answer_record(
    state: LedgerState,
    request: EvaluationRequested | BatchEvaluationRequested,
    *,
    now: datetime,
    evaluator_id: str,
    chain: ChainHead,
    encode: Callable[[Any], bytes],
    max_bytes: int,
    sent: bytes | None,
    limits: Limits = DEFAULT_LIMITS,
    latency: Callable[[], Mapping[str, Any]] | None = None,
) -> Answered:
    """The record answering ``request`` against ``state``, as the link after ``chain``.

    A decision whose record, keyed by the request id, would be over ``max_bytes``
    (:func:`~ledger.core.limits.record_fits`), or whose trace holds a value the codec refuses,
    is answered ``error`` / ``trace_too_large`` without its bulky parts, naming the request's
    record (``sent``) by size and digest; a pre-evaluation's items are then each such an error
    (:func:`~ledger.core.evaluate.batch_without_trace`), found without encoding it where its
    reasons alone are too large. ``latency`` gives a single decision's writer fields
    (``latency_us``), read once it is evaluated. The caller keeps ``chain`` until the record
    is written: a record not written is not in the chain.
    """
    key = request.event_id.encode()
    if isinstance(request, EvaluationRequested):
        decision = evaluate(state, request, now=now, evaluator_id=evaluator_id, limits=limits)
        changes = latency() if latency is not None else None
        stamped, head = link(decision, chain, changes)
        encoded, unrecordable = _encoded(encode, stamped)
        if unrecordable is not None or not record_fits(key, encoded, max_bytes):
            reduced = without_trace(decision, sent, max_bytes, unrecordable)
            stamped, head = link(reduced, chain, changes)
            encoded = encode(stamped)
        return Answered(stamped, head, encoded)
    answer = evaluate_batch(state, request, now=now, evaluator_id=evaluator_id, limits=limits)
    if batch_surely_too_large(answer, max_bytes):  # not hashed, not encoded
        answer = batch_without_trace(answer)
    batch, head = link(answer, chain)
    encoded, unrecordable = _encoded(encode, batch)
    if unrecordable is not None or not record_fits(key, encoded, max_bytes):
        batch, head = link(batch_without_trace(answer, unrecordable), chain)
        encoded = encode(batch)
    return Answered(batch, head, encoded)


def _encoded(encode: Callable[[Any], bytes], answer: Any) -> tuple[bytes, str | None]:
    """``answer``'s record, or why it cannot be one: a value of its trace no record holds (a
    red team: a shadow version's integer constraint beyond 64 bits dead-lettered every request
    it decided, unanswered, the active version's answer with them)."""
    try:
        return encode(answer), None
    except CodecError as exc:
        return b"", str(exc)
