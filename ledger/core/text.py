"""Text for messages: :func:`clipped`, the one way a message cuts what a sender wrote."""

from __future__ import annotations

__all__ = ["clipped"]


def clipped(text: str, limit: int = 200) -> str:
    """``text`` for a message, shortened when a sender made it huge (the one way a rejection,
    a processor's answer, or a reader's report cuts what the sender wrote)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
