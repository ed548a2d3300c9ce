"""The evaluator's answer to one request as the record it writes: evaluated, linked into the
worker's hash chain, and reduced when no record can hold it (DESIGN §12).

One function for the evaluator's request handler and the SDK's test double
(:class:`ledger.testing.LocalLedger`), so what an agent's test sees is what the agent gets (an
architecture review: the two had written this path twice, and had drifted apart before). The
codec is a parameter (``encode``): the core encodes nothing itself, it only decides what to do
when a record is too large or cannot be encoded at all.

Also the other side of an answer: whether a recorded decision answers a request
(:func:`answers_request`, :func:`answers_batch`: what a client acts on, and what an audit pairs),
and the reduced form of one no record can hold (:func:`without_trace`,
:func:`batch_without_trace`, whose :data:`REDUCED_FIELDS` a reproduction does not compare).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Final, NamedTuple

from ledger.core.chain import ChainHead, link
from ledger.core.evaluate import (
    TRACE_TOO_LARGE,
    asker_of,
    evaluate,
    evaluate_batch,
    items_refused,
)
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
)
from ledger.core.facts import facts_recorded_as, same_values
from ledger.core.jsonform import to_json_value
from ledger.core.limits import DEFAULT_LIMITS, Limits, record_fits
from ledger.core.state import LedgerState
from ledger.errors import CodecError

__all__ = [
    "Answered",
    "answer_record",
    "answers_request",
    "answers_batch",
    "REDUCED_FIELDS",
    "WRITER_FIELDS",
    "same_question",
    "without_trace",
    "batch_without_trace",
    "batch_surely_too_large",
]

_ERROR: Final = Determination.ERROR

WRITER_FIELDS: Final = ("latency_us", "evaluator_id", "chain_id", "chain_seq", "prev_hash", "hash")
"""Written by the evaluator instance, not decided: never compared."""


_ASKED: Final = (
    "request_id",
    "requested_at",
    "requested_by",
    "principal",
    "action",
    "resource",
    "facts",
    "context",
    "mode",
    "default",
)
"""What a decision records of the request it answered (a pre-evaluation's items: their ids,
actions and resources)."""
_ITEM_ASKED: Final = ("item_id", "action", "resource")


def same_question(
    one: DecisionRecorded | BatchDecisionRecorded, other: DecisionRecorded | BatchDecisionRecorded
) -> bool:
    """Whether two decisions under one decision id answered the same request: one request
    decided again (re-sent after a restart, or by another worker), which counts once, whatever
    the governance position or answer of each. A copy of the request under its id with other
    facts (anyone holding the agent credential can send one) is decided under the same
    decision id too: that answered another question, and a reader must not take it for the
    first (a red team: `replay --decision` of a deny reproduced the copy's allow). A field one
    record lacks (``None``: an older release's, ``requested_by``) is not held against it.

    A pre-evaluation records its items' names, not their facts: two of its answers at one
    governance position that answer an item otherwise were asked other facts (the same
    request is decided the same way on the same state), and are not the same question (a red
    team: a copy that turned every item from allow to deny passed for the request decided
    again). At different positions a difference may be the governance's, and is not held
    against them."""
    if type(one) is not type(other):
        return False
    mine, theirs = to_json_value(one), to_json_value(other)
    if isinstance(one, BatchDecisionRecorded):
        items = [
            [{k: i.get(k) for k in _ITEM_ASKED} for i in d["decisions"]] for d in (mine, theirs)
        ]
        if mine.get("principal") != theirs.get("principal") or items[0] != items[1]:
            return False
        if mine.get("governance_position") != theirs.get("governance_position"):
            return True
        first, later = sorted((one, other), key=lambda d: d.occurred_at)
        assert isinstance(first, BatchDecisionRecorded)
        if first.stale_after is not None and later.occurred_at >= first.stale_after:
            return True  # a grant's window opened or closed between them (a review)
        return all(
            {k: v for k, v in i.items() if k not in _ITEM_ASKED}
            == {k: v for k, v in j.items() if k not in _ITEM_ASKED}
            for i, j in zip(mine["decisions"], theirs["decisions"], strict=True)
        )
    return all(
        mine.get(k) is None or theirs.get(k) is None or mine.get(k) == theirs.get(k) for k in _ASKED
    )


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
    (:func:`batch_without_trace`), found without encoding it where its
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


def answers_request(request: EvaluationRequested, decision: DecisionRecorded) -> bool:
    """Whether ``decision`` answers ``request``, not another request sent under its id.

    Ids are chosen by senders: anyone holding the agent credential can send a copy of a request
    (learned from the decisions every agent reads, or, with a credential that reads new
    requests, before the genuine one) under its id, asking something else, and an evaluator
    decides each (only a record delivered again as sent is a repeat to it). A client acts
    only on a decision whose request id and time (``requested_at``), principal, action,
    resource, mode, default, who asked (``requested_by``; none recorded by an evaluator older
    than the field) and context are the request's, and whose facts are what the request's facts
    became
    (:func:`~ledger.core.facts.facts_recorded_as`). ``request`` is as the evaluator decodes it
    (the client decodes the record it encoded).

    An answer given without the facts and context (``request_too_large``, ``trace_too_large``)
    is taken on the rest only when it is an ``error``: a forged error denies a call, which the
    sender of a copy can do anyway; nothing without them is ever taken as a permission.
    """
    error = decision.determination is _ERROR
    if (
        decision.request_id != request.event_id
        or decision.requested_at != request.occurred_at
        or not _same_name(decision.principal, request.principal, error)
        or not _same_name(decision.action, request.action, error)
        or not _same_name(decision.resource, request.resource, error)
        or decision.mode != request.mode
        or decision.default != request.default
        or (
            decision.requested_by is not None
            and not _same_name(decision.requested_by, asker_of(request), error)
        )
    ):
        return False
    if decision.determination is _ERROR and not decision.facts and not decision.context:
        return True
    return same_values(request.context, decision.context) and facts_recorded_as(
        request.facts, decision.facts
    )


def answers_batch(request: BatchEvaluationRequested, answer: BatchDecisionRecorded) -> bool:
    """Whether ``answer`` answers the pre-evaluation ``request``, not another sent under its id:
    its request id and principal are the request's, and it answers the request's items in
    order (each item's id, action and resource). A batch answer records no facts or context,
    so a copy that differs only in those is not told apart here."""
    errors = all(d.determination is _ERROR for d in answer.decisions)
    if (
        answer.request_id != request.event_id
        or not _same_name(answer.principal, request.principal, errors)
        or len(answer.decisions) != len(request.items)
    ):
        return False
    return all(
        _same_name(d.item_id, item.item_id, errors)
        and _same_name(d.action, item.action, errors)
        and _same_name(d.resource, item.resource, errors)
        for d, item in zip(answer.decisions, request.items, strict=True)
    )


def _same_name(recorded: str | None, sent: str | None, error: bool) -> bool:
    """A name a decision records is the one sent, or, in an ``error`` answer (a request over
    its limits: ``request_too_large``), the one sent cut as :func:`~ledger.core.limits.
    recorded_name` cuts it (``refund.xxx… (5000 characters)``), whatever the limit was."""
    if recorded == sent:
        return True
    if not error or recorded is None or sent is None:
        return False
    suffix = f"… ({len(sent)} characters)"
    return recorded.endswith(suffix) and sent.startswith(recorded[: -len(suffix)])


REDUCED_FIELDS: Final = (
    "determination",
    "constraints",
    "reasons",
    "reason_code",
    "rule",
    "facts",
    "context",
    "shadow_results",
    "decisions",
)
"""What :func:`without_trace` and :func:`batch_without_trace` leave out or replace (so a
reproduction does not compare them for such a record)."""


def without_trace(
    decision: DecisionRecorded,
    request: bytes | None,
    limit: int,
    unrecordable: str | None = None,
) -> DecisionRecorded:
    """An ``error`` / ``trace_too_large`` decision that fits a ``limit``-byte record: the
    trace's bulky parts (:data:`REDUCED_FIELDS`) left out, the request's record named by size
    and SHA-256 (the evaluator's answer when the full trace would not fit, or, ``unrecordable``,
    holds a value no record can: a constraint's integer beyond 64 bits, in a version stored
    before proposals were refused it)."""
    size, digest = (len(request), hashlib.sha256(request).hexdigest()) if request else (0, "")
    why = (
        f"could not be recorded ({unrecordable[:300]})"
        if unrecordable is not None
        else f"would be over the {limit}-byte record limit"
    )
    reason = (
        f"the full decision trace {why}: its facts, context, constraints and shadow results are "
        f"left out (request record: {size} bytes, sha256 {digest}); treat this as error"
    )
    return replace(
        decision,
        determination=Determination.ERROR,
        constraints={},
        reasons=(reason,),
        reason_code=TRACE_TOO_LARGE,
        rule=None,
        facts={},
        context={},
        shadow_results=(),
    )


def batch_surely_too_large(answer: BatchDecisionRecorded, limit: int) -> bool:
    """Whether ``answer``'s items' reasons alone are over ``limit`` bytes, so its full record
    could not fit: a writer then answers :func:`batch_without_trace` without first hashing and
    encoding the full answer to find that out. Each item holds its rule's reason (one text,
    shared in memory, but written once per item): 500 items of a 261,000-character reason, from
    a version recorded before ``policy_reason_chars``, were 130 MB to hash and 130 MB to encode
    (+250 MB of evaluator memory per request). A text's UTF-8 bytes are never fewer than its
    characters, so this never refuses an answer that would have fit."""
    total = 0
    for item in answer.decisions:
        for reason in item.reasons:
            total += len(reason)
        if total > limit:
            return True
    return False


def batch_without_trace(
    answer: BatchDecisionRecorded, unrecordable: str | None = None
) -> BatchDecisionRecorded:
    """Every item an ``error`` that says why, and nothing else that could be large (or that a
    record could not hold: ``unrecordable``, why, is each item's reason, cut to 200 characters)."""
    reasons = (
        (f"the answer could not be recorded ({unrecordable[:200]}); treat this as error",)
        if unrecordable is not None
        else ()
    )
    return replace(answer, decisions=items_refused(answer.decisions, TRACE_TOO_LARGE, reasons))
