"""Python's cyclic garbage collector paused while a bulk fold builds records.

The one process-wide effect the core has, and one that changes no result, only how long a fold
takes: a replay makes millions of new, acyclic objects, each allocation counting towards the
collector's next scan of the whole growing state (a million governance events took seconds
longer with it running). Every pause is written here, once, so that the rule for nesting is one
rule: only whoever found the collector running starts it again (a pause inside another pause,
on any thread, leaves it paused; one around the collector an application paused itself leaves
it paused too).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused(pause: bool = True) -> Iterator[None]:
    """The cyclic collector paused for the block when ``pause`` and it is running now, and
    running again after it (also when the block raises)."""
    paused = pause and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
