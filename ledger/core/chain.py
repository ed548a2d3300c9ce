"""Tamper evidence: the hash chain of decision records (DESIGN §9). Pure: no I/O, clock or random.

Every record an evaluator writes to the decisions topic (``DecisionRecorded`` and
``BatchDecisionRecorded``) is a link in the chain of its **writer instance**: ``chain_id``
names the chain (evaluator id plus a start-up nonce, so several workers, rebalances and
restarts each keep one unbroken chain — a chain per partition would not survive two workers
writing one partition), ``chain_seq`` numbers its records 1, 2, 3 … without gaps, and

- ``prev_hash`` is the ``hash`` of the record with ``chain_seq - 1`` (``None``, JSON ``null``,
  for a chain's first record: :data:`GENESIS`);
- ``hash`` is ``"sha256:"`` + the lowercase hex SHA-256 of the canonical JSON form
  (:func:`ledger.core.jsonform.canonical_json`) of **every field of the record except**
  ``hash`` itself — ``prev_hash``, ``chain_id`` and ``chain_seq`` included.

Because the hash covers the record's JSON form, which is also what an export's columns hold
(one column per top-level field), anyone can recompute it from the columns an analyst queries:
altering any of them breaks the link, and so does altering the raw record, unless the change
keeps its JSON form: a decimal, a timestamp or a non-finite double rewritten as the text it is
shown as (``"300.00"``, ``"NaN"``) hashes alike (a fuzzer's find; the README says so, and the
request's record, from which replay re-evaluates, holds what was sent). A :class:`ChainCheckpoint` (head
``chain_seq`` and ``hash``) published periodically on its own topic makes deleting a chain's
newest records detectable too. Verification lives in :mod:`ledger.audit.verify`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from ledger.core import events as _events
from ledger.core.builders import copier
from ledger.core.events import BatchDecisionRecorded, ChainCheckpoint, DecisionRecorded
from ledger.core.jsonform import format_timestamp, to_json_value

__all__ = [
    "GENESIS",
    "HASH_PREFIX",
    "CHAIN_FIELDS",
    "CHAINED_TYPES",
    "ChainHead",
    "LATE_FIELDS",
    "form_hash",
    "form_hashes",
    "form_text",
    "text_hash",
    "record_hash",
    "hashed_text",
    "canonical_text",
    "link",
    "checkpoint",
]

GENESIS: Final = None
"""``prev_hash`` of a chain's first record."""

HASH_PREFIX: Final = "sha256:"

CHAIN_FIELDS: Final = ("chain_id", "chain_seq", "prev_hash", "hash")
"""The fields the writer fills; everything but ``hash`` is covered by the hash."""

CHAINED_TYPES: Final[tuple[type, ...]] = (DecisionRecorded, BatchDecisionRecorded)
"""The record types of the decisions topic, each a link of its writer's chain."""
LATE_FIELDS: Final = ("requested_by", "stale_after")
"""Fields added to chained records after chains began: ``DecisionRecorded`` v2 (in
``schemas/history``) has the chain but not ``requested_by``, ``BatchDecisionRecorded`` v2 not
``stale_after``. A record its writer hashed before a
field existed reads back with that field null, so while it is null the record's hash may also
be that of its form without it (:func:`form_hashes`). A value that is not null is covered as
every field is: setting it to null breaks the link."""

Chained = TypeVar("Chained", DecisionRecorded, BatchDecisionRecorded)

# canonical_json's settings: the hash depends on every one of them.
_encoder = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
# The checkpoint id namespace (fixed forever: ids of published checkpoints depend on it).
_CHECKPOINT_NAMESPACE: Final = uuid.UUID("6c656467-6572-4368-a169-6e0000000001")


# --------------------------------------------------------------------------- canonical text, fast
# The writer hashes every record it writes, so the canonical JSON text of a chained record is
# produced by per-field writers chosen once per record type (as the codec chooses its
# converters), with the members already in sorted order, instead of building the JSON form with
# to_json_value and encoding it with key sorting. The text is the same, byte for byte:
# tests/unit/test_chain.py checks it against canonical_json on generated records.

_Text = Callable[[Any], str]
_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring


def _any_text(value: Any) -> str:
    return _encoder.encode(to_json_value(value))


def _str_text(value: str) -> str:
    return _encode_str(value) if type(value) is str else _any_text(value)


def _int_text(value: int) -> str:
    return int.__repr__(value) if type(value) is int else _any_text(value)


def _bool_text(value: bool) -> str:
    return "true" if value is True else "false" if value is False else _any_text(value)


def _time_text(value: datetime) -> str:
    # isoformat is cheaper than format_timestamp and gives the same text for an instant already
    # in UTC with a four-digit year (format_timestamp writes a year below 1000 unpadded).
    if value.tzinfo is UTC and value.year >= 1000:
        return '"' + value.isoformat(timespec="microseconds")[:-6] + 'Z"'
    return '"' + format_timestamp(value) + '"'


def _enum_text(value: enum.Enum) -> str:
    inner = value.value
    return _encode_str(inner) if type(inner) is str else _any_text(inner)


def _strings_text(values: Any) -> str:
    if not values:
        return "[]"
    return "[" + ",".join([_str_text(v) for v in values]) + "]"


_SCALAR_TEXT: Final[dict[type, Callable[[Any], str]]] = {
    str: _encode_str,
    int: int.__repr__,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
}


def _first(item: tuple[str, Any]) -> str:
    return item[0]


def _mapping_text(mapping: Mapping[str, Any]) -> str:
    if not mapping:
        return "{}"
    members = []
    for key, value in sorted([(str(k), v) for k, v in mapping.items()], key=_first):
        write = _SCALAR_TEXT.get(type(value), _any_text)
        members.append(_encode_str(key) + ":" + write(value))
    return "{" + ",".join(members) + "}"


def _records_text(values: Any) -> str:
    return "[]" if not values else _any_text(values)


def _writer(hint: Any) -> _Text:
    """The canonical JSON text of one field's non-null value, by the field's declared type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _writer(args[0]) if len(args) == 1 else _any_text
    if hint is str:
        return _str_text
    if hint is bool:
        return _bool_text
    if hint is int:
        return _int_text
    if hint is datetime:
        return _time_text
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_text
    if origin is tuple:
        return _strings_text if typing.get_args(hint)[0] is str else _records_text
    if origin is Mapping or origin is dict:
        return _mapping_text
    return _any_text


_text_writers: dict[tuple[type, tuple[str, ...]], Callable[[Any], str]] = {}


def _text_writer(cls: type, leave_out: tuple[str, ...]) -> Callable[[Any], str]:
    built = _text_writers.get((cls, leave_out))
    if built is None:
        built = _text_writers[(cls, leave_out)] = _build_text_writer(cls, leave_out)
    return built


# The common cases, inline in the generated code (a call per field costs as much as the work):
# ``{v}`` is the field's value, ``{w}`` the field's writer for every other case.
_INLINE: Final[dict[Callable[[Any], str], str]] = {
    # a str (or StrEnum member: its text is its value) as JSON text
    _str_text: "_e({v}) if isinstance({v}, str) else {w}({v})",
    _enum_text: "_e({v}) if isinstance({v}, str) else {w}({v})",
    _int_text: "int.__repr__({v}) if type({v}) is int else {w}({v})",
    _bool_text: "('true' if {v} else 'false') if type({v}) is bool else {w}({v})",
    _time_text: (
        "'\"' + {v}.isoformat(timespec='microseconds')[:-6] + 'Z\"' "
        "if {v}.tzinfo is _UTC and {v}.year >= 1000 else {w}({v})"
    ),
    _mapping_text: "'{{}}' if not {v} else {w}({v})",
    _strings_text: "'[]' if not {v} else {w}({v})",
    _records_text: "'[]' if not {v} else {w}({v})",
}


def _build_text_writer(cls: type, leave_out: tuple[str, ...] = ("hash",)) -> Callable[[Any], str]:
    """Straight-line code for one record type: one list display of the members' texts, in
    sorted key order, joined once — no per-field loop or dict at run time. Field names come
    from the dataclass, never from input."""
    hints = typing.get_type_hints(cls, vars(_events))
    names: dict[str, Any] = {"_e": _encode_str, "_UTC": UTC}
    items: list[str] = []
    fields = sorted(f.name for f in dataclasses.fields(cls) if f.name not in leave_out)
    for index, name in enumerate(fields):
        write = _writer(hints[name])
        names[f"_w{index}"] = write
        v = f"v{index}"
        inline = _INLINE.get(write, "{w}({v})").format(v=v, w=f"_w{index}")
        sep = "{" if index == 0 else ","
        key = json.dumps(sep + json.dumps(name) + ":")
        items.append(f"{key}, ('null' if ({v} := o.{name}) is None else ({inline}))")
    source = f"def text(o):\n    return ''.join([{', '.join(items)}, '}}'])\n"
    exec(source, names)
    writer: Callable[[Any], str] = names["text"]
    return writer


_native: types.ModuleType | None
try:  # the same text written in C, when installed (ledger/core/_canonical.pyx)
    import ledger.core._canonical as _native
except ImportError:  # pragma: no cover - installed without a C compiler
    _native = None


def canonical_text(record: Any) -> str:
    """The canonical JSON text of ``record`` without its ``hash``: exactly ``canonical_json``
    of its JSON form minus ``hash``, as text."""
    if _native is not None:
        try:
            text: str = _native.text(record, "hash")
            return text
        except _native.Unsupported:
            pass  # a value the writer in C leaves to this one
    return _text_writer(type(record), ("hash",))(record)


# --------------------------------------------------------------------------- hashing


def form_text(form: Mapping[str, Any]) -> str:
    """The canonical JSON text that is hashed, given a record's JSON form: every member but
    ``hash``. ``form`` is what :func:`~ledger.core.jsonform.to_json_value` gives for the
    record, or the same rebuilt from an export's columns."""
    return _encoder.encode({k: v for k, v in form.items() if k != "hash"})


def text_hash(text: str) -> str:
    """``"sha256:"`` + the hex SHA-256 of ``text`` in UTF-8."""
    return HASH_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


def form_hash(form: Mapping[str, Any]) -> str:
    """The hash of a record given its JSON form (see :func:`form_text`)."""
    return text_hash(form_text(form))


def form_hashes(form: Mapping[str, Any]) -> tuple[str, ...]:
    """Every hash a chained record with JSON form ``form`` may carry: :func:`form_hash` of it,
    then, while one of its :data:`LATE_FIELDS` is null, that of the form without them (the
    record was written before they existed)."""
    full = form_hash(form)
    late = [name for name in LATE_FIELDS if name in form and form[name] is None]
    if not late:
        return (full,)
    return full, form_hash({k: v for k, v in form.items() if k not in late})


_digest = text_hash


def hashed_text(record: Any) -> str:
    """The text a writer hashes for ``record``: :func:`canonical_text`, but without
    ``stale_after`` while it is null. Such a pre-evaluation's answer is written in the form
    before the field (``BatchDecisionRecorded`` v2) so that the release before reads it, and
    that release hashes what it reads: an upgrade drill found every such answer "altered"
    (exit 11) to the earlier release's `audit verify`. :func:`form_hashes` accepts both."""
    if type(record) is BatchDecisionRecorded and record.stale_after is None:
        if _native is not None:
            try:
                text: str = _native.text(record, _WITHOUT_STALE_AFTER)
                return text
            except _native.Unsupported:
                pass  # a value the writer in C leaves to this one
        return _text_writer(BatchDecisionRecorded, _WITHOUT_STALE_AFTER)(record)
    return canonical_text(record)


_WITHOUT_STALE_AFTER: Final = ("hash", "stale_after")


def record_hash(record: DecisionRecorded | BatchDecisionRecorded) -> str:
    """What ``record.hash`` must be, from the record's other fields."""
    return _digest(hashed_text(record))


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a chain stands: its id, the ``chain_seq`` and ``hash`` of its newest record.

    A new chain is ``ChainHead(chain_id)``: no record yet, the next is number 1.
    """

    chain_id: str
    seq: int = 0
    hash: str | None = GENESIS


def link(
    record: Chained, head: ChainHead, changes: Mapping[str, Any] | None = None
) -> tuple[Chained, ChainHead]:
    """``record`` (with ``changes``, e.g. the writer's ``latency_us``) stamped as the next link
    after ``head``, and the chain's new head.

    Pure: neither ``record`` nor ``head`` is changed, so a writer that ends up not writing this
    record (it did not fit, it became a dead letter) keeps its old head and the chain has no
    gap. ``changes`` are applied in the same copy as the chain fields: a writer that would
    otherwise copy the record to set a field of its own (the evaluator's ``latency_us``) pays
    for no second copy.
    """
    seq = head.seq + 1
    # A copy straight into the slots: dataclasses.replace walks the fields and calls __init__
    # with keywords, which for a decision trace costs about as much as hashing it.
    stamped = copier(type(record))(record)
    # Only the copy made just above is written to, before anyone else can see it.
    for name, value in (changes or {}).items():
        if name in CHAIN_FIELDS:
            raise ValueError(f"{name} is the chain's to set")
        object.__setattr__(stamped, name, value)
    object.__setattr__(stamped, "chain_id", head.chain_id)
    object.__setattr__(stamped, "chain_seq", seq)
    object.__setattr__(stamped, "prev_hash", head.hash)
    digest = _digest(hashed_text(stamped))
    object.__setattr__(stamped, "hash", digest)
    return stamped, ChainHead(head.chain_id, seq, digest)


def checkpoint(
    head: ChainHead,
    *,
    now: datetime,
    actor: str,
    evaluator_id: str = "",
    final: bool = False,
) -> ChainCheckpoint:
    """A checkpoint of ``head`` taken at ``now`` (``final`` at a clean shutdown).

    Its id is derived from the chain and sequence (and ``final``), so the same checkpoint
    published twice is recognisably the same.
    """
    if head.hash is None or head.seq < 1:
        raise ValueError("a chain without records has no head to checkpoint")
    name = f"{head.chain_id}\x00{head.seq}\x00{'final' if final else 'head'}"
    return ChainCheckpoint(
        event_id=str(uuid.uuid5(_CHECKPOINT_NAMESPACE, name)),
        occurred_at=now,
        actor=actor,
        chain_id=head.chain_id,
        chain_seq=head.seq,
        head_hash=head.hash,
        evaluator_id=evaluator_id,
        final=final,
    )
