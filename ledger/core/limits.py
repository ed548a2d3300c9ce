"""Bounds on every input the ledger accepts (STYLE §16): one table, checked before the work.

Anyone who can reach a topic or run the CLI can send a policy document, a command or facts, so
each is bounded in size, nesting and cost *before* the expensive step (YAML composition, CEL
compilation, evaluation) and, for commands, before anything an unauthorized sender supplied is
parsed. The values are product decisions documented in the README's limit table. The core's
functions take a :class:`Limits` (``evaluate``, ``decide``, ``parse_policy`` ...), and so does
the SDK's test double (``LocalLedger(limits=...)``); the processors and the CLI run with
:data:`DEFAULT_LIMITS`: there is no setting to change them in a deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ledger.core.text import clipped

__all__ = [
    "Limits",
    "DEFAULT_LIMITS",
    "RECORD_FRAMING",
    "record_fits",
    "id_problem",
    "id_refusal",
    "name_problem",
    "recorded_name",
    "recorded_id",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Every input bound in one frozen object (sizes in bytes of UTF-8 text unless noted)."""

    # Policy documents (YAML as written, or canonical JSON as stored).
    policy_document_bytes: int = 256 * 1024
    yaml_depth: int = 64
    """Deepest nesting of mappings/sequences."""
    yaml_aliases: int = 100
    """Alias references (``*name``) in one document."""
    yaml_nodes: int = 50_000
    """Nodes of the document with every alias expanded: what an alias bomb multiplies."""

    # Conditions.
    condition_chars: int = 4_096
    policy_condition_chars: int = 16_384
    """Every ``when`` of one policy document together, checked before any is compiled.
    Compiling costs ~25-90 µs per character (the CEL grammar's parser, per token), so this holds
    one proposal to ~0.4 s of compiling for ordinary text and ~1.5 s at worst (a list of one-digit
    numbers), in the command processor and in each evaluator that loads the version. Enforced on
    proposals: a version recorded before this limit existed still loads
    (:func:`ledger.core.state.load_document`)."""
    regex_chars: int = 1_024
    regex_program: int = 32_768
    """RE2 instructions the ``matches`` patterns of one new policy document (or of one grant
    condition being admitted) may compile to together; each new pattern at most ~16,000 (RE2's
    memory for it held to 256 KiB). RE2 builds a large class's program at ~0.3 µs per
    instruction: a red team's proposals of 101 ``\\pL{1000}`` patterns held the command processor
    ~7 s each, and a valid ``\\pL{400}`` took 150-220 ms to compile in every processor. A version
    recorded before this limit still loads."""

    policy_governs: int = 256
    """Entries of one policy's ``governs`` list. Each is a pattern that every evaluator matches
    actions against, re-indexed at each governance change: 36,000 short globs (in a document
    within ``policy_document_bytes``) took 9 s to validate and stalled evaluators ~1 s per
    change. Enforced on proposals: a version recorded before this limit existed still loads."""

    policy_id_chars: int = 128
    """A policy's name and each of its rules' ids: copied into every decision the policy makes
    (and into every item of a pre-evaluation). Enforced on proposals: a version recorded before
    this limit existed still loads."""
    policy_reason_chars: int = 1_024
    """A rule's or the default's ``reason``: copied into every decision it makes, and into every
    item of a pre-evaluation (500 items of a 261,000-character reason were 130 MB of answer,
    built before it was refused ``trace_too_large``). Enforced on proposals: a version recorded
    before this limit existed still loads."""
    command_text_chars: int = 4_096
    """A governance command's ``note`` or ``reason``: kept in the state every processor holds
    (a grant's note for as long as the grant) and in every governance read. A red team's 600
    grants with 480,000-character notes took an evaluator from 141 to 705 MB. Enforced on
    commands: an event recorded before this limit existed still loads."""
    policy_constraints_chars: int = 1_024
    """A rule's or the default's ``constraints``, all together: the characters of their names and
    of their values as written (each text of a list counted). Copied, as the reason is, into
    every decision and pre-evaluation item. Enforced on proposals: a version recorded before
    this limit existed still loads."""

    # Facts and context of one request.
    facts_bytes: int = 256 * 1024
    """Facts (and context) text as sent from the CLI, or as the encoded request record."""
    facts_keys: int = 256
    fact_string_chars: int = 64 * 1024
    fact_list_items: int = 1_000
    fact_decimal_digits: int = 1_000
    """Significant digits of one decimal fact or context value. Arithmetic works at decimal128's
    34 digits; comparisons are exact at any length, but comparing two long decimals costs time
    with their digits (~6 µs for 65,000 digits with different exponents) while the cost model
    counts it as one operation, so the length is bounded where the value arrives."""
    facts_json_depth: int = 8
    """JSON nesting accepted from the CLI (fact values are scalars or lists of text)."""

    # Evaluation.
    evaluation_cost: int = 1_000_000
    """Work units one request may spend in the conditions of its grants, and again in each policy
    version it runs: per list element a macro visits, its predicate's weight (the operations in
    it, counted when the condition is compiled); one per 8 list elements compared or
    copied, per 16 characters scanned or copied, per 16 bytes a regular expression reads (times
    the pattern's weight), and at least one per metered call (``ledger.core.cel`` has the model).
    A unit costs at most ~0.1 µs of evaluator time, so the default stops a request within
    ~0.1-0.3 s (with decimals held to ``fact_decimal_digits``)."""

    # Requests (and commands): checked before anything is looked up, cached or remembered.
    request_id_chars: int = 128
    """A request's or command's id, and a pre-evaluation item's id (the SDK's are 36)."""
    request_name_chars: int = 1_024
    """A request's principal, action and resource, and a pre-evaluation item's action and
    resource: names key the evaluator's caches. A request's ``actor`` and ``requested_by`` (who
    asked: copied into its decision, so a sender could otherwise make a decision as large as
    its request). Each entry of a policy's ``governs`` too (no request names a longer action;
    each is a pattern evaluators compile)."""
    grant_actions: int = 256
    """Action patterns of one grant (each, like its resource pattern, at most
    ``request_name_chars``): every request of its holder tries them."""
    glob_wildcards: int = 16
    """Wildcards (``*``, ``?``, ``[``) in one pattern of a grant (actions, resource) or of a
    policy's ``governs``."""
    glob_chars: int = 256
    """Length of such a pattern holding any wildcard: a glob's parts are searched for in the
    name, work that grows with the name times the pattern (CPython's string search is linear
    only for long texts)."""
    glob_class_chars: int = 64
    """Length of such a pattern holding ``?`` or ``[…]``: those are matched by a backtracking
    regular expression, whose work grows with the pattern times the name (~0.1 ms at this
    length against a 1,024-character name); ``*`` and text alone are matched in linear time
    (:mod:`ledger.core.globs`)."""
    principal_grant_units: int = 100_000
    """What trying one principal's grants (its own and those of every role it holds, ended ones
    included until revoked) may charge one request whose action and resource are as long as
    ``request_name_chars``, in units of ``evaluation_cost``
    (:func:`~ledger.core.authority.grants_units`): a grant issued (to the principal, or to a
    role it holds) or a role assigned that would take any principal past it is refused, else
    whoever may add grants to a principal could push its every request over the budget. A
    tenth of ``evaluation_cost``, so the grants' conditions keep the rest; trying grants at the
    limit took at most ~3.5 ms (22 grants of 128 small patterns). An ordinary grant of two short
    patterns counts ~70-110 units, so a principal may hold ~900-1,400 of them (40 count ~4,000,
    and ~200 on ordinary names, under ``MATCH_FREE``). Enforced on new commands: grants and
    roles recorded before this limit existed still hold."""
    batch_items: int = 500
    """Items of one pre-evaluation request. Its items share one evaluation budget
    (``evaluation_cost``), so one record costs at most what one request may."""
    # Records.
    record_bytes: int = 1_000_000
    """Largest record a processor writes (Kafka's default limit is 1 MiB with headers)."""


DEFAULT_LIMITS: Final = Limits()
"""The limits every entry point uses unless configured otherwise."""


def id_problem(event_id: str, what: str, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """``the command id is longer than 128 characters`` for an id over ``request_id_chars``
    (``what``: request, command), else ``None``. The processors dead-letter such a record
    unanswered (``id_too_long``), since the ids they answer are remembered and must be
    bounded; the SDK and the test double refuse it before it is sent."""
    longest = limits.request_id_chars
    if len(event_id) <= longest:
        return None
    return f"the {what} id is longer than {longest:,} characters"


def id_refusal(event_id: str, what: str, limits: Limits = DEFAULT_LIMITS) -> tuple[str, str] | None:
    """``(dead-letter code, reason)`` for an id no answer may be keyed by (``what``: request,
    command), else ``None``: one over ``request_id_chars`` (``id_too_long``: answered ids are
    remembered, so they must be bounded), or one that is empty or only whitespace
    (``id_empty``: ``"the command id is empty"``; its answer would be keyed by nothing a sender
    can tell from another's, and the first answer remembered for it would be given to the
    next). The processors dead-letter such a record unanswered and unremembered, before
    anything else is read; the SDK and the test double refuse it before it is sent."""
    long_id = id_problem(event_id, what, limits)
    if long_id is not None:
        return "id_too_long", long_id
    if not event_id:
        return "id_empty", f"the {what} id is empty"
    if event_id.isspace():
        return "id_empty", f"the {what} id is only whitespace"
    return None


def name_problem(name: str, value: str | None, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """``the request's action is longer than 1,024 characters (request_name_chars)`` for a name
    of a request (``name``: principal, action, resource, actor, requested_by) over
    ``request_name_chars``, else ``None``. The evaluator answers such a request ``error`` /
    ``request_too_large``; the SDK refuses to send an ``actor`` or ``requested_by`` over it."""
    longest = limits.request_name_chars
    if value is None or len(value) <= longest:
        return None
    return f"the request's {name} is longer than {longest:,} characters (request_name_chars)"


def recorded_name(value: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """What an answer records of a request's name (principal, action, resource, who asked, a
    pre-evaluation's items' actions and resources): the name itself, or, over
    ``request_name_chars`` (a request answered ``request_too_large``), its first
    ``request_name_chars`` characters, ``…`` and its length (``"p.xxx… (5000 characters)"``),
    so no sender makes a decision, an export row or an agent's answer as large as its request.
    A cut name is longer than the limit, so it is never taken for a name within it. Decisions
    recorded until 2026-12-06 hold such names whole: replay accepts that form."""
    return clipped(value, limits.request_name_chars)


def recorded_id(value: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """What an answer records of a pre-evaluation item's id: the id itself, or, over
    ``request_id_chars`` (every item answered ``request_too_large``), cut as
    :func:`recorded_name` cuts a name."""
    return clipped(value, limits.request_id_chars)


RECORD_FRAMING: Final = 128
"""Bytes a Kafka record adds to its key and value, at most, written alone in its batch: the
batch header (61 bytes) and the record's framing (varint lengths, attributes, deltas, ~32)."""


def record_fits(key: bytes | None, value: bytes | None, max_bytes: int) -> bool:
    """Does a record of ``key`` and ``value`` fit ``max_bytes`` as Kafka counts it (framing
    included)? The one rule the processors and the SDK's test double hold a record to, so a
    request the test double answers in full is answered in full by the evaluator too."""
    size = (len(key) if key else 0) + (len(value) if value else 0)
    return size + RECORD_FRAMING <= max_bytes
