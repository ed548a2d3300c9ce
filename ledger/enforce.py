"""Enforcement points: make a governed tool uncallable without an allowing decision.

::

    @enforce(client, action="refund.issue", principal="agent:refund-bot",
             resource=lambda account, amount, **_: f"account:{account}",
             facts=lambda account, amount, **kw: {"amount": amount, **kw["facts"]})
    def issue_refund(account: str, amount: str, *, facts: dict, constraints: dict) -> str:
        method = constraints.get("refund_method", "cash")
        ...

Calling ``issue_refund(...)`` first asks the decision plane. ``deny`` and ``error`` raise
:class:`DecisionDenied` (carrying the decision trace) and the tool body never runs; ``allow`` and
``allow_with_constraints`` run it, handing the constraints over as the ``constraints`` keyword
argument when the function accepts one. A timeout raises :class:`~ledger.errors.LedgerTimeout`:
an enforcement point fails closed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from ledger.client import LedgerClient
from ledger.core.events import DecisionRecorded, Determination, Value
from ledger.errors import LedgerError

__all__ = ["enforce", "DecisionDenied"]

P = ParamSpec("P")
R = TypeVar("R")

_ALLOWING = (Determination.ALLOW, Determination.ALLOW_WITH_CONSTRAINTS)


class DecisionDenied(LedgerError):
    """The decision plane did not allow the call; ``decision`` is the full trace."""

    code = "denied"
    exit_code = 10

    def __init__(self, decision: DecisionRecorded) -> None:
        self.decision = decision
        why = "; ".join(decision.reasons) or decision.reason_code or decision.determination.value
        super().__init__(f"{decision.action} on {decision.resource} by {decision.principal}: "
                         f"{decision.determination.value} ({why})")  # fmt: skip


def enforce(
    client: LedgerClient,
    *,
    action: str,
    principal: str | Callable[..., str],
    resource: str | Callable[..., str],
    facts: Mapping[str, Value] | Callable[..., Mapping[str, Value]] | None = None,
    context: Mapping[str, Value] | Callable[..., Mapping[str, Value]] | None = None,
    timeout: float | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Wrap a tool function so every call is decided first (see module docstring).

    ``principal``, ``resource``, ``facts`` and ``context`` are values or functions of the tool's
    own arguments.
    """

    def resolve(spec: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return spec(*args, **kwargs) if callable(spec) else spec

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        takes_constraints = "constraints" in inspect.signature(func).parameters

        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            decision = client.evaluate(
                action=action,
                principal=resolve(principal, args, kwargs),
                resource=resolve(resource, args, kwargs),
                facts=resolve(facts, args, kwargs) or {},
                context=resolve(context, args, kwargs) or {},
                timeout=timeout,
            )
            if decision.determination not in _ALLOWING:
                raise DecisionDenied(decision)
            if takes_constraints:
                kwargs["constraints"] = dict(decision.constraints)
            return func(*args, **kwargs)

        guarded.__ledger_action__ = action  # type: ignore[attr-defined]
        return guarded

    return decorate
