"""What a processor's handlers produce and count, with no I/O and no Faust: the records to
write (:data:`Output`), the largest a processor may write (:class:`OutputLimit`) and the
counters it logs (:class:`ProcessorStats`, with the evaluator's :class:`DecisionCounts` and the
rule that says when its ``error`` decisions are too many to be quiet about: :func:`error_note`).
The handlers (:mod:`processors.command_handler`,
:mod:`processors.request_handler`, :mod:`processors.dead_letters`) import only this of the
processors' plumbing, so they can be imported and tested without Faust.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from ledger.core.limits import DEFAULT_LIMITS, Limits, record_fits

__all__ = [
    "Output",
    "OutputLimit",
    "ProcessorStats",
    "DecisionCounts",
    "DecisionWindow",
    "ErrorKey",
    "UNREADABLE_ADVICE",
    "unreadable_advice",
    "error_note",
    "ERRORS_LOGGED",
    "ERRORS_AT_LEAST",
    "RECENT_SECONDS",
]


Output = tuple[str, bytes, bytes]
"""One record to write: (topic, key, value)."""


@dataclass(frozen=True, slots=True)
class OutputLimit:
    """The largest record a processor may write, and the check against it.

    The smaller of the ledger's record limit and the producer's ``max_request_size`` (which the
    producer enforces by raising from ``send`` itself), against the core's bound on a record's
    size (:func:`~ledger.core.limits.record_fits`: key, value and at most
    :data:`~ledger.core.limits.RECORD_FRAMING` bytes of framing, up to that much stricter than
    the producer's own measure; the command processor's events are held to it too).
    """

    max_bytes: int

    @classmethod
    def for_app(cls, app: Any, limits: Limits = DEFAULT_LIMITS) -> OutputLimit:
        """For a Faust ``app``: the smaller of ``limits`` and its producer's request size."""
        return cls(min(limits.record_bytes, int(app.conf.producer_max_request_size)))

    def fits(self, key: bytes | None, value: bytes | None) -> bool:
        """The core's rule (:func:`~ledger.core.limits.record_fits`): the SDK's test double
        holds a decision to the same one."""
        return record_fits(key, value, self.max_bytes)


ErrorKey = tuple[str, str | None, int | None]
"""What an ``error`` decision is counted under: its reason code, and the policy and version
that decided it (``None``: none did, as for ``policy_unavailable``)."""

ERRORS_LOGGED = 0.1
"""The evaluator logs its ``error`` decisions at WARNING when they are at least this share of
the decisions since its last report (every 30 s)."""
ERRORS_AT_LEAST = 3
"""Fewer ``error`` decisions than this are never too many: one bad request is not an outage."""
RECENT_SECONDS = 60.0
"""The span an evaluator's heartbeat counts its recent decisions over."""


@dataclass(slots=True)
class DecisionCounts:
    """Decisions by determination, and ``error`` decisions by :data:`ErrorKey`.

    Counted on the request path (:meth:`count`: a dictionary increment per decision), read by
    the stats report and the heartbeat as differences of two copies (:meth:`since`).
    """

    determinations: dict[str, int] = field(default_factory=dict)
    errors: dict[ErrorKey, int] = field(default_factory=dict)

    def count(
        self, determination: str, reason_code: str | None, policy: str | None, version: int | None
    ) -> None:
        """One decision (or one item of a pre-evaluation)."""
        seen = self.determinations
        seen[determination] = seen.get(determination, 0) + 1
        if determination == "error":
            key = (reason_code or "unknown", policy, version)
            self.errors[key] = self.errors.get(key, 0) + 1

    @classmethod
    def sum(cls, counts: Iterable[DecisionCounts]) -> DecisionCounts:
        """Several workers' counts added up."""
        total = cls()
        for c in counts:
            for k, n in c.determinations.items():
                total.determinations[k] = total.determinations.get(k, 0) + n
            for e, n in c.errors.items():
                total.errors[e] = total.errors.get(e, 0) + n
        return total

    @property
    def total(self) -> int:
        return sum(self.determinations.values())

    def copy(self) -> DecisionCounts:
        # dict() of a dictionary another thread increments: atomic under the GIL (str/tuple keys).
        return DecisionCounts(dict(self.determinations), dict(self.errors))

    def since(self, earlier: DecisionCounts) -> DecisionCounts:
        """What was counted after ``earlier`` (a copy of these counts taken then)."""
        before_d, before_e = earlier.determinations, earlier.errors
        return DecisionCounts(
            {
                k: n - before_d.get(k, 0)
                for k, n in self.determinations.items()
                if n > before_d.get(k, 0)
            },
            {k: n - before_e.get(k, 0) for k, n in self.errors.items() if n > before_e.get(k, 0)},
        )

    def to_json(self) -> dict[str, Any]:
        """The heartbeat's and ``ledger ps --json``'s form: errors as a list, most first."""
        return {
            "determinations": dict(sorted(self.determinations.items())),
            "errors": [
                {"reason_code": code, "policy": policy, "policy_version": version, "count": n}
                for (code, policy, version), n in self._errors_most_first()
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> DecisionCounts:
        """The inverse of :meth:`to_json`; ``ValueError``/``TypeError``/``KeyError`` if it is
        not one."""
        if not isinstance(data, dict):
            raise TypeError("not an object")
        determinations = {str(k): int(n) for k, n in dict(data["determinations"]).items()}
        errors: dict[ErrorKey, int] = {}
        for e in list(data["errors"]):
            policy, version = e.get("policy"), e.get("policy_version")
            key = (
                str(e["reason_code"]),
                None if policy is None else str(policy),
                None if version is None else int(version),
            )
            errors[key] = int(e["count"])
        return cls(determinations, errors)

    def _errors_most_first(self) -> list[tuple[ErrorKey, int]]:
        return sorted(self.errors.items(), key=lambda kv: (-kv[1], str(kv[0])))

    def describe(self) -> str:
        """``12 allow, 40 error``: the determinations, in a fixed order."""
        order = ("allow", "allow_with_constraints", "deny", "error")
        known = [k for k in order if k in self.determinations]
        rest = sorted(k for k in self.determinations if k not in order)
        return ", ".join(f"{self.determinations[k]} {k}" for k in known + rest) or "none"

    def describe_errors(self, most: int = 3) -> str:
        """``condition_error from refunds v3: 40; invalid_facts: 2``: the commonest causes."""
        said = [
            f"{code}{'' if policy is None else f' from {policy} v{version}'}: {n}"
            for (code, policy, version), n in self._errors_most_first()[:most]
        ]
        more = len(self.errors) - most
        return "; ".join(said) + (f"; {more} more" if more > 0 else "")


UNREADABLE_ADVICE: Final = (
    "; governance_unreadable: this evaluator cannot read governance records a newer release "
    "wrote (`ledger ps` names whose): run that release's processors; a rollback is refused "
    "as well"
)
"""What the log and ``ps`` add when ``governance_unreadable`` answers are among the errors (a
review: they advised a rollback, which such a command processor refuses too)."""


def unreadable_advice(counts: DecisionCounts) -> str:
    """:data:`UNREADABLE_ADVICE` when ``counts`` holds ``governance_unreadable`` errors, else
    ``""``."""
    found = any(reason == "governance_unreadable" for reason, _, _ in counts.errors)
    return UNREADABLE_ADVICE if found else ""


def error_note(counts: DecisionCounts, *, share: float, policies_only: bool = False) -> str | None:
    """``40 of 52 decisions were `error` (condition_error from refunds v3: 40)`` when the
    ``error`` decisions in ``counts`` are at least ``share`` of them (and at least
    :data:`ERRORS_AT_LEAST`); ``None`` otherwise. The one rule for the log and ``ledger ps``.

    ``policies_only``: count only the errors a policy version decided (``condition_error``,
    ``invalid_facts`` …), not those of the request itself (``request_too_large``,
    ``invalid_request``, authority over budget), which any sender can cause at will (a review:
    three malformed requests on an idle ledger made ``ps`` exit 1 naming a failing policy)."""
    total = counts.total
    if policies_only:
        errors = sum(n for (_, policy, _), n in counts.errors.items() if policy is not None)
    else:
        errors = counts.determinations.get("error", 0)
    if errors < ERRORS_AT_LEAST or errors < share * total:
        return None
    return f"{errors} of {total} decisions were `error` ({counts.describe_errors()})"


class DecisionWindow:
    """The decisions counted over about the last ``seconds``, from copies of the running
    counts taken as time goes (the heartbeat's, every second). Time is a parameter
    (``time.monotonic()``: a clock step neither empties nor stretches the window)."""

    def __init__(self, seconds: float = RECENT_SECONDS) -> None:
        self.seconds = seconds
        self._marks: deque[tuple[float, DecisionCounts]] = deque()

    def recent(self, now: float, total: DecisionCounts) -> tuple[DecisionCounts, float]:
        """The decisions counted since the oldest copy within ``seconds`` of ``now``, and how
        many seconds that covers (less than ``seconds`` after the start)."""
        marks = self._marks
        # One copy, subtracted from: ``total`` is counted by the request thread meanwhile, and
        # iterating it live raised "dictionary changed size during iteration" in the heartbeat
        # task, which stops the worker (a review: 199 of 208 calls under a stress thread).
        copied = total.copy()
        marks.append((now, copied))
        while len(marks) > 1 and marks[1][0] <= now - self.seconds:
            marks.popleft()
        since, earlier = marks[0]
        return copied.since(earlier), now - since


@dataclass
class ProcessorStats:
    """Counters a processor logs periodically (and tests read)."""

    processed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    decisions: DecisionCounts = field(default_factory=DecisionCounts, repr=False)
    """An evaluator's decisions (the stats report says them apart)."""
