"""Enforcement points: make a governed tool uncallable without an allowing decision.

::

    @enforce(client, action="refund.issue", principal="agent:refund-bot",
             resource=lambda account: f"account:{account}",
             facts=lambda amount, tenure_days: {"amount": amount, "tenure_days": tenure_days})
    def issue_refund(account: str, amount: Decimal, tenure_days: int, *, constraints: dict) -> str:
        method = constraints.get("refund_method", "cash")
        ...

Calling ``issue_refund(...)`` first asks the decision plane, and the tool body runs only when
the answer allows it *and* the tool can honour it:

- ``allow`` runs the body (with ``constraints={}`` when the function takes that parameter);
- ``allow_with_constraints`` runs it with the constraints as the ``constraints`` keyword argument,
  which the function must declare by that name. A function without a ``constraints`` parameter
  could not honour them, so it does not run: the call raises :class:`DecisionDenied`, whose
  message names the constraints and the function (``**kwargs`` does not count: constraints are
  never slipped into a catch-all);
- ``deny`` and ``error`` raise :class:`DecisionDenied`;
- with ``honours={"refund_method"}``, an allow carrying any other constraint key (a cap a later
  policy version added) raises :class:`DecisionDenied` naming it: the body would ignore it;
- with ``decision_param="NAME"``, the function's parameter NAME gets the allowing decision itself
  (its ``event_id``, the decision id; its policy version, rule, grant), to cite in what it
  records;
- no answer in time raises :class:`~ledger.errors.LedgerTimeout`.

An enforcement point fails closed: :class:`DecisionDenied` always carries the decision trace
(``.decision``), and the body has not run whenever anything is raised.

``async def`` tools are guarded the same way and never block the event loop: pass an
:class:`~ledger.client.AsyncLedgerClient` (a :class:`~ledger.client.LedgerClient` also works: its
answer is awaited on the loop as well, each call bounded by its own timeout).
"""

from __future__ import annotations

import enum
import functools
import inspect
import types
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import date
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any, Final, ParamSpec, TypeVar, cast

from ledger.client import AsyncLedgerClient, LedgerClient, checked_wait
from ledger.core.events import DecisionRecorded, Value
from ledger.errors import DecisionDenied, UsageError

__all__ = ["enforce", "DecisionDenied"]

P = ParamSpec("P")
R = TypeVar("R")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def enforce(
    client: LedgerClient | AsyncLedgerClient,
    *,
    action: str,
    principal: str | Callable[..., str],
    resource: str | Callable[..., str],
    facts: Mapping[str, Value] | Callable[..., Mapping[str, Value]] | None = None,
    context: Mapping[str, Value] | Callable[..., Mapping[str, Value]] | None = None,
    timeout: float | None = None,
    decision_param: str | None = None,
    honours: Iterable[str] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Wrap a tool function so every call is decided first (see module docstring).

    ``principal``, ``resource``, ``facts`` and ``context`` are values or functions of the tool's
    own arguments: each function is called with the call's arguments its parameters name, by
    name and in any order, defaults filled in (``constraints`` and ``decision_param`` are not
    among them); see :func:`_by_name`.

    The guarded tool's signature (``inspect.signature``, which agent frameworks read to build a
    tool's schema for the model) is the tool's without ``constraints`` and the parameter named
    by ``decision_param``: the decision supplies them, never the caller, and either argument
    passed anyway is replaced. Each must come after every other positional parameter (or be
    keyword-only), so that hiding it shifts nothing: a :class:`UsageError` says so otherwise.

    ``honours`` names the constraint keys the tool's body acts on: an allow carrying any other
    (a cap a later policy version added, say) does not run it but raises
    :class:`DecisionDenied` naming them, rather than run a body that would ignore them.
    Without it, every constraint is handed over and honouring them is the body's job.
    """
    if timeout is not None:
        checked_wait(timeout, "@enforce timeout")
    if isinstance(honours, str):
        raise UsageError(f"honours={honours!r} is one text: give the constraint keys as a set")
    try:
        given = () if honours is None else list(honours)
    except TypeError:
        raise UsageError(
            f"honours={honours!r} is not a set of constraint keys: give them as a set of texts"
        ) from None
    if not all(isinstance(key, str) for key in given):
        odd = next(key for key in given if not isinstance(key, str))
        raise UsageError(
            f"honours holds {odd!r}, a {type(odd).__name__}: give the constraint keys as texts "
            "(a policy's constraint names)"
        )
    understood = None if honours is None else frozenset(given)
    supplied = ("constraints",) if decision_param is None else ("constraints", decision_param)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if isinstance(func, classmethod):
            raise UsageError(
                f"@enforce is above @classmethod on {func.__func__.__qualname__}: put "
                "@classmethod on top (it must wrap the guarded function)"
            )
        # A tool object (a class with ``__call__``, as agent frameworks write tools) has none.
        name = getattr(func, "__qualname__", None) or type(func).__qualname__
        if inspect.isasyncgenfunction(func) or (
            callable(func)
            and not inspect.isroutine(func)
            and inspect.isasyncgenfunction(type(func).__call__)
        ):
            # Not a coroutine function: guarded as a plain one, its decision would block the
            # event loop. (A plain generator is decided when called, before it runs.)
            raise UsageError(
                f"{name} is an async generator, which cannot be guarded: guard the async "
                "function that does the work, or a plain async function that returns the "
                "generator"
            )
        signature = inspect.signature(func)
        params = list(signature.parameters.values())
        for i, param in enumerate(params):
            later = [p.name for p in params[i + 1 :] if p.kind in _POSITIONAL]
            if param.name in supplied and (
                param.kind is inspect.Parameter.POSITIONAL_ONLY
                or (param.kind in _POSITIONAL and later)
            ):
                # Hidden from the signature, it would shift the positions of those after it.
                raise UsageError(
                    f"{name}'s `{param.name}` comes before {', '.join(later) or 'others'}: the "
                    f"decision fills it in, so declare it keyword-only (after a `*`)"
                )
        if decision_param is not None and decision_param not in signature.parameters:
            raise UsageError(f"{name} has no parameter {decision_param!r} (decision_param)")
        takes_constraints = "constraints" in signature.parameters
        if understood and not takes_constraints:
            raise UsageError(
                f"{name} honours constraints ({', '.join(sorted(understood))}) but takes no "
                "`constraints` parameter to receive them: add one (keyword-only)"
            )
        public = signature.replace(
            parameters=[p for n, p in signature.parameters.items() if n not in supplied]
        )

        # Each function of the tool's arguments takes them by name, never by position: a
        # `lambda amount, account` on a tool `(account, amount)` must not swap them.
        asks = {
            what: _by_name(spec, what, name, public)
            for what, spec in (
                ("principal", principal),
                ("resource", resource),
                ("facts", facts),
                ("context", context),
            )
        }

        def request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            # The decision's to give, never the caller's: not even into a ``**kwargs`` catch-all.
            for given in supplied:
                kwargs.pop(given, None)
            bound = public.bind(*args, **kwargs)  # a wrong call fails as the tool's own would
            bound.apply_defaults()
            return {
                "action": action,
                "principal": asks["principal"](bound.arguments),
                "resource": asks["resource"](bound.arguments),
                "facts": asks["facts"](bound.arguments) or {},
                "context": asks["context"](bound.arguments) or {},
                "timeout": timeout,
            }

        def admit(decision: DecisionRecorded, kwargs: dict[str, Any]) -> None:
            if not decision.permitted:
                raise DecisionDenied(decision)
            if understood is not None and not understood.issuperset(decision.constraints):
                unknown = ", ".join(sorted(set(decision.constraints) - understood))
                raise DecisionDenied(
                    decision,
                    reason=f"allowed only with constraints {dict(decision.constraints)}, but "
                    f"{name} honours "
                    + (f"only {', '.join(sorted(understood))}" if understood else "none")
                    + f": {unknown} would be ignored",
                )
            if takes_constraints:
                kwargs["constraints"] = dict(decision.constraints)
            elif decision.constraints:
                # Running anyway would drop the obligations the allow depends on.
                raise DecisionDenied(
                    decision,
                    reason=f"allowed only with constraints {dict(decision.constraints)}, but "
                    f"{name} takes no `constraints` parameter to honour them",
                )
            if decision_param is not None:
                kwargs[decision_param] = decision

        if _is_async(func):
            # A LedgerClient's answer is awaited on the loop too: a worker thread per waiting
            # call would queue calls behind the default executor's few threads, each failing
            # long after its timeout, and starve whatever else uses that executor.
            async_client = (
                client
                if isinstance(client, AsyncLedgerClient)
                else AsyncLedgerClient.wrapping(client)
            )

            body = cast(Callable[..., Awaitable[Any]], func)

            @functools.wraps(func)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                admit(await async_client.evaluate(**request(args, kwargs)), kwargs)
                return await body(*args, **kwargs)

            guarded_async.__ledger_action__ = action  # type: ignore[attr-defined]  # a marker attribute on the wrapper, read by getattr
            guarded_async.__signature__ = public  # type: ignore[attr-defined]  # what inspect.signature reads, not declared on functions
            _carry_tool(guarded_async, func)
            return cast(Callable[P, R], guarded_async)

        if isinstance(client, AsyncLedgerClient):
            raise UsageError(
                f"{name} is not async: guard it with a LedgerClient, "
                "or make it `async def` to use the AsyncLedgerClient"
            )
        sync_client = client

        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            admit(sync_client.evaluate(**request(args, kwargs)), kwargs)
            return func(*args, **kwargs)

        guarded.__ledger_action__ = action  # type: ignore[attr-defined]  # a marker attribute on the wrapper, read by getattr
        guarded.__signature__ = public  # type: ignore[attr-defined]  # what inspect.signature reads, not declared on functions
        _carry_tool(guarded, func)
        return guarded

    return decorate


TOOL_ATTRIBUTES: Final = ("name", "description", "args_schema", "return_direct", "tags", "metadata")
"""What a guarded tool object's function carries of it: the names agent frameworks describe a
tool by (LangChain, LlamaIndex, CrewAI, MCP-style definitions), nothing else."""


def _carry_tool(guarded: Callable[..., Any], tool: Any) -> None:
    """A tool object's identity on its guarded function (an agent engineer's walkthrough:
    every guarded tool object was named ``guarded``, and frameworks that name a tool by its
    function's ``__name__`` offered the model several alike). Its ``name``, else its class's
    name, becomes ``__name__``, and the :data:`TOOL_ATTRIBUTES` it holds as plain values are
    copied; nothing else (reviews: a ``partial`` of the body, a dict of handlers, an object
    with a ``run`` method copied over ran the tool unguarded; reading every attribute ran
    descriptors, pydantic's deprecated ``model_fields`` among them). A function keeps what
    :func:`functools.wraps` gave it."""
    if inspect.isroutine(tool):
        return
    kind = type(tool)
    own = getattr(tool, "__dict__", {})
    for key in list(own):  # what functools.wraps copied of the instance: only what is named
        if key not in TOOL_ATTRIBUTES and key in vars(guarded):
            delattr(guarded, key)  # its `__dunder__` ones too (a red team: one ran the body)
    # The object itself, with its `run` and `_run` (a red team); inspect.signature reads
    # the `__signature__` set on the guarded function instead.
    if "__wrapped__" in vars(guarded):
        delattr(guarded, "__wrapped__")
    found: dict[str, Any] = {}
    for key in TOOL_ATTRIBUTES:
        value = _plain_value(tool, own, key)
        if value is not _NONE and not _holds_code(value):
            found[key] = value
            setattr(guarded, key, value)
        elif key in vars(guarded):
            delattr(guarded, key)
    label = found.get("name")
    guarded.__name__ = label if isinstance(label, str) and label else kind.__name__
    guarded.__qualname__ = kind.__qualname__


_NONE: Final = object()


def _holds_code(value: Any, depth: int = 8) -> bool:
    """Is ``value`` anything but plain data (text, numbers, booleans, None, enum members,
    decimals, dates, times, UUIDs, classes, and lists, tuples, sets and mappings of them within
    ``depth`` levels)? A red team: a bound method in
    `metadata` or `tags` ran the tool unguarded; any other object may hold one."""
    if isinstance(
        value,
        (
            str,
            bytes,
            int,
            float,
            bool,
            type(None),
            enum.Enum,
            Decimal,
            date,
            time_of_day,
            uuid.UUID,
        ),
    ):
        return False  # values (a review: an Enum or a date in a framework's metadata)
    if isinstance(value, type):
        return False
    if callable(value):
        return True
    if isinstance(value, Mapping):
        items: Iterable[Any] = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        return True  # an object: what it holds is reached through its attributes
    return depth <= 0 or any(_holds_code(item, depth - 1) for item in items)


def _plain_value(tool: Any, own: Mapping[str, Any], key: str) -> Any:
    """``tool``'s ``key`` as a plain value, without running code: from the instance's own
    ``__dict__`` (a pydantic field, an attribute set in ``__init__``), a slot's value, or the
    class's attribute when it is no descriptor; else ``_NONE``."""
    if key in own:
        return own[key]
    for klass in type(tool).__mro__[:-1]:  # not object's
        if key not in vars(klass):
            continue
        entry = vars(klass)[key]
        if isinstance(entry, types.MemberDescriptorType):  # a slot: its value, no code run
            try:
                return entry.__get__(tool, type(tool))
            except AttributeError:  # unset
                return _NONE
        if hasattr(type(entry), "__get__") and not isinstance(entry, type):
            return _NONE  # a property, a method or another descriptor: code
        return entry
    return _NONE


def _is_async(func: Any) -> bool:
    """An ``async def`` function, or a tool object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(func):
        return True
    if inspect.isfunction(func) or inspect.ismethod(func):
        return False
    return inspect.iscoroutinefunction(type(func).__call__) if callable(func) else False


def _by_name(
    spec: Any, what: str, tool: str, public: inspect.Signature
) -> Callable[[Mapping[str, Any]], Any]:
    """How to get the ``what`` value from a call's arguments (the tool's parameter names and
    their values, defaults filled in): ``spec`` itself, or ``spec`` called with those of the
    tool's arguments its parameters name, in any order; its ``**`` parameter, if any, gets the
    rest (the tool's own ``**`` arguments among them, one by one). Checked here, when the tool
    is decorated: a parameter the tool has not (and no ``**`` of the tool could give) is a
    :class:`UsageError` at once, not a request decided on the wrong values."""
    if not callable(spec):
        return lambda arguments: spec
    try:
        wanted = inspect.signature(spec).parameters.values()
    except (TypeError, ValueError):
        wanted = None
    tool_params = public.parameters
    listing = ", ".join(tool_params) or "none"
    hint = (
        f"its parameters are matched to {tool}'s ({listing}) by name, in any order, so name "
        "those it needs as the tool does (a ** parameter collects the others)"
    )
    if wanted is None:
        raise UsageError(f"the {what} of {tool}'s enforcement point has no signature: {hint}")
    spreads = next(
        (p.name for p in tool_params.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None
    )
    named: list[tuple[str, bool]] = []  # (name, has a default)
    rest = False
    for p in wanted:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            rest = True
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            # Nothing is given by position: `*args` would silently get nothing.
            raise UsageError(
                f"the {what} function of {tool}'s enforcement point takes *{p.name}: {hint}"
            )
        elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise UsageError(
                f"the {what} function of {tool}'s enforcement point takes {p.name!r} by position "
                f"only: {hint}"
            )
        elif p.name in tool_params or spreads is not None or p.default is not p.empty:
            named.append((p.name, p.default is not p.empty))
        else:
            raise UsageError(
                f"the {what} function of {tool}'s enforcement point takes {p.name!r}, which "
                f"{tool} has not: {hint}"
            )

    def call(arguments: Mapping[str, Any]) -> Any:
        spread = arguments.get(spreads, {}) if spreads is not None else {}
        given: dict[str, Any] = {}
        for n, optional in named:
            if n in arguments:  # the tool's parameter (its ``**`` one: the whole dict)
                given[n] = arguments[n]
            elif n in spread:
                given[n] = spread[n]
            elif not optional:
                raise UsageError(
                    f"the {what} function of {tool}'s enforcement point takes {n!r}, which this "
                    "call does not give"
                )
        if rest:
            for n, v in arguments.items():
                if n == spreads:
                    given.update((k, x) for k, x in v.items() if k not in given)
                elif n not in given:
                    given[n] = v
        return spec(**given)

    return call
