"""Ids and the clock of the adapters. The core never reads either: they are passed to it.

- :func:`new_id` — a time-ordered UUIDv7 string, so ids sort by creation time (exports, lookups).
- :func:`id_made_at` — when such an id was made, read back from it.
- :func:`utcnow` — the current instant, aware UTC.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

__all__ = ["new_id", "id_made_at", "utcnow"]


def new_id() -> str:
    """A time-ordered UUIDv7 string, so ids sort by creation time (exports, lookups)."""
    ms = time.time_ns() // 1_000_000
    rand = uuid.uuid4().int
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 64) & 0xFFF) << 64
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def id_made_at(value: str) -> datetime | None:
    """When a UUIDv7 id (:func:`new_id`'s) was made, from its first 48 bits; ``None`` for
    any other id (an SDK caller may choose its own)."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    if parsed.version != 7:
        return None
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, UTC)


def utcnow() -> datetime:
    """The adapters' clock. The core never reads a clock: time is passed to it."""
    return datetime.now(UTC)
