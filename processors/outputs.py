"""What a processor's handlers produce and count, with no I/O and no Faust: the records to
write (:data:`Output`), the largest a processor may write (:class:`OutputLimit`) and the
counters it logs (:class:`ProcessorStats`). The handlers (:mod:`processors.command_handler`,
:mod:`processors.request_handler`, :mod:`processors.dead_letters`) import only this of the
processors' plumbing, so they can be imported and tested without Faust.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.core.limits import DEFAULT_LIMITS, Limits, record_fits

__all__ = ["Output", "OutputLimit", "ProcessorStats"]


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


@dataclass
class ProcessorStats:
    """Counters a processor logs periodically (and tests read)."""

    processed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    extra: dict[str, int] = field(default_factory=dict)
