"""Fast construction of the ledger's frozen, slotted dataclasses on hot paths.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` with its name
(the class's own ``__setattr__`` refuses), and keyword calls add their own cost: for a decision
trace of thirty-odd fields that is several microseconds per record, paid by every decode, every
grant a replay builds and every hash-chain stamp. :func:`builder` generates, once per class, a
function that takes every field positionally in field order and stores each through the slot's
own descriptor; :func:`copier` copies an instance the same way.

Only for classes whose ``__init__`` does nothing but store the fields: frozen, ``slots=True``,
no ``__post_init__``, no ``InitVar`` (checked when the builder is made). Every field is passed,
so defaults and default factories play no part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["builder", "copier", "field_names"]

T = TypeVar("T")


def field_names(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` in the order :func:`builder`'s function takes them."""
    return tuple(f.name for f in dataclasses.fields(cls))


def _check(cls: type) -> tuple[str, ...]:
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__ a builder would skip")
    names = field_names(cls)
    if any(not hasattr(cls.__dict__.get(n), "__set__") for n in names):
        raise TypeError(f"{cls.__name__} has a field without a slot")
    return names


def _source(cls: type, names: tuple[str, ...], head: str, values: list[str]) -> Callable[..., Any]:
    # Field names come from the class definition, never from input.
    lines = [head, "    o = _new(_cls)"]
    lines += [f"    _s{i}(o, {value})" for i, value in enumerate(values)]
    lines.append("    return o")
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    scope.update({f"_s{i}": cls.__dict__[name].__set__ for i, name in enumerate(names)})
    exec("\n".join(lines) + "\n", scope)
    built: Callable[..., Any] = scope["build"]
    return built


_builders: dict[type, Callable[..., Any]] = {}
_copiers: dict[type, Callable[[Any], Any]] = {}


def builder(cls: type[T], order: tuple[str, ...] | None = None) -> Callable[..., T]:
    """``build(*fields)``: an instance of ``cls`` from every field, positionally, in field order
    (:func:`field_names`), equal to ``cls(**dict(zip(field_names(cls), fields)))``.

    A caller that writes its arguments out by hand names the ``order`` it follows: if the
    class's fields are ever reordered, added or renamed, that is a ``TypeError`` at import,
    not values silently stored in the wrong fields."""
    if order is not None and order != field_names(cls):
        raise TypeError(
            f"{cls.__name__}'s fields are {field_names(cls)}, not {order}: update the caller"
        )
    built = _builders.get(cls)
    if built is None:
        names = _check(cls)
        args = [f"a{i}" for i in range(len(names))]
        built = _builders[cls] = _source(cls, names, f"def build({', '.join(args)}):", args)
    return built


def copier(cls: type[T]) -> Callable[[T], T]:
    """``copy(instance)``: a new instance with the same field values (a shallow copy)."""
    built = _copiers.get(cls)
    if built is None:
        names = _check(cls)
        values = [f"c.{name}" for name in names]
        built = _copiers[cls] = _source(cls, names, "def build(c):", values)
    return built
