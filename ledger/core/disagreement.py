"""When two answers to one request differ: the one rule impact simulation, ``ledger decisions
--disagreeing`` and the ``shadow_disagreements`` query (which mirrors it in SQL) all follow.

Two answers differ when their determinations do, or when the determination is the same and the
constraints are not the same values: a cap lowered from ``500.00`` to ``400.00`` under the same
``allow_with_constraints`` is an answer the agent honours differently. Values are compared as
values (``Decimal("500.0")`` is ``Decimal("500.00")``, ``500`` is ``500.0``), key order is
irrelevant, and a bool is never a number (``true`` is not ``1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from ledger.core.events import Determination, Value

__all__ = ["Difference", "difference", "same_constraints", "differing_constraints"]

Difference = Literal["determination", "constraints"]
"""How two answers differ (as the ``differs`` column of ``shadow_disagreements`` says)."""


def difference(
    determination: Determination,
    constraints: Mapping[str, Value],
    other_determination: Determination,
    other_constraints: Mapping[str, Value],
) -> Difference | None:
    """``"determination"`` when the determinations differ, else ``"constraints"`` when the
    constraints do (:func:`same_constraints`), else ``None``: the answers are the same."""
    if determination != other_determination:
        return "determination"
    if not same_constraints(constraints, other_constraints):
        return "constraints"
    return None


def same_constraints(a: Mapping[str, Value], b: Mapping[str, Value]) -> bool:
    """The same names with the same values (:func:`_same_value`), in whatever order."""
    return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)


def differing_constraints(
    a: Mapping[str, Value], b: Mapping[str, Value]
) -> tuple[tuple[str, Value | None, Value | None], ...]:
    """``(name, value in a, value in b)`` for each name whose values differ (``None``: absent,
    or null), by name."""
    return tuple(
        (name, a.get(name), b.get(name))
        for name in sorted(a.keys() | b.keys())
        if name not in a or name not in b or not _same_value(a[name], b[name])
    )


def _same_value(x: Value, y: Value) -> bool:
    """Equal as values: numbers by value (int, float, Decimal), a bool only to a bool, the rest
    (text, lists of text, instants, null) by equality."""
    if type(x) is bool or type(y) is bool:
        return type(x) is type(y) and x == y
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):  # as SQL reads them
        return len(x) == len(y) and all(map(_same_value, x, y))
    return x == y
