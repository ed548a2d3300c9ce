"""Text for messages: :func:`clipped`, the one way a message cuts what a sender wrote."""

from __future__ import annotations

__all__ = ["clipped", "quoted"]


def clipped(text: str, limit: int = 200) -> str:
    """``text`` for a message, shortened when a sender made it huge (the one way a rejection,
    a processor's answer, or a reader's report cuts what the sender wrote)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def quoted(text: str, limit: int = 200) -> str:
    """``text`` quoted (``repr``) and clipped as :func:`clipped` does, the count being of the
    text's own characters, not of its quotes (a README check: a 129-character id was said to
    be 131). Between the quotes it shows at most ``limit`` characters, escapes included: a
    run of control characters, each written as four, is cut sooner (a review's find: 80 of them
    were quoted as 320)."""
    cut = min(len(text), limit)
    if len(repr(text[:cut])) > limit + 2:  # escapes: the longest prefix that fits, by halving
        low, high = 0, cut  # repr(text[:low]) fits; repr(text[:high]) does not
        while high - low > 1:
            middle = (low + high) // 2
            if len(repr(text[:middle])) <= limit + 2:
                low = middle
            else:
                high = middle
        cut = low
    shown = repr(text[:cut])
    return shown if cut == len(text) else f"{shown}… ({len(text)} characters)"
