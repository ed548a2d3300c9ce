"""The heartbeat a processor worker writes into its ready file: the contract between a running
processor and whatever supervises it (``ledger up``/``ledger ps`` in :mod:`ledger.local.stack`).

A running processor proves it works by rewriting its ready file every :attr:`Heartbeat.INTERVAL`
seconds with where it talks to Kafka and when its consumer last got an answer from the broker.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Heartbeat"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """What a processor writes into its ready file, every :attr:`INTERVAL` seconds.

    ``at`` is when it was written, ``fetched_at`` when the processor's consumer last received a
    fetch response from the broker (``None``: never yet); both are Unix times. ``bootstrap`` is the
    address the processor was started with: if the broker moved, the processor is dialling the
    wrong place however alive it looks.
    """

    INTERVAL = 1.0

    pid: int
    bootstrap: str
    at: float
    fetched_at: float | None

    def write(self, path: Path) -> None:
        """Replace ``path`` atomically: a reader never sees half a heartbeat."""
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(asdict(self)))
        partial.replace(path)

    @classmethod
    def read(cls, path: Path) -> Heartbeat | None:
        """The heartbeat in ``path``; ``None`` if there is none (not ready yet, or a ready file
        from a version of the processors that wrote no heartbeat)."""
        try:
            data = json.loads(path.read_text())
            fetched = data.get("fetched_at")
            return cls(
                pid=int(data["pid"]),
                bootstrap=str(data["bootstrap"]),
                at=float(data["at"]),
                fetched_at=None if fetched is None else float(fetched),
            )
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
