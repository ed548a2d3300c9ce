"""Policy documents: parsing, validation, canonical form, and the compiled decision function.

A policy arrives as YAML text (:func:`parse_policy`) or as its canonical JSON text as stored in
``PolicyVersionProposed.document`` (:meth:`Policy.from_canonical`). Both go through the same
validation, which collects *every* problem (with file, rule id, field, line and column where the
input allows) and raises one :class:`~ledger.errors.PolicyError`. Nothing else escapes, whatever
the input.

Both are bounded before the expensive work (STYLE §16, :mod:`ledger.core.limits`): the text's
size first; YAML is composed once by a loader that counts nesting, aliases and the nodes the
aliases expand to, and stops at the first bound crossed, so a 400-byte alias bomb is refused
after a few hundred nodes instead of growing to billions; canonical JSON has its nesting measured
before it is parsed.

The canonical form is deterministic JSON (sorted keys, compact separators, no ``tests`` block);
``content_hash`` is ``sha256:<hex>`` of its UTF-8 bytes. Two documents that differ only in
layout, comments, key order or shorthand have the same canonical form and hash.

A loaded :class:`Policy` carries its conditions already compiled and its fact checker built, so
:meth:`Policy.run` is the whole per-request cost of a policy.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Final

import yaml

from ledger.core import boundedjson
from ledger.core.cel import (
    RESERVED_NAMES,
    BudgetExceeded,
    CompiledCondition,
    Meter,
    compile_condition,
)
from ledger.core.events import Determination, Value
from ledger.core.facts import (
    FACT_TYPES,
    FactsChecker,
    FactSpec,
    FactType,
    build_checker,
    cel_type,
    context_problems,
)
from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.errors import PolicyError, PolicyProblem

__all__ = [
    "Effect",
    "Rule",
    "DefaultDecision",
    "PolicyTestCase",
    "PolicyOutcome",
    "Policy",
    "parse_policy",
    "parse_test_cases",
    "load_yaml",
    "REASON_RULE_MATCHED",
    "REASON_DEFAULT",
    "REASON_INVALID_FACTS",
    "REASON_CONDITION_ERROR",
    "REASON_BUDGET_EXCEEDED",
]

REASON_RULE_MATCHED: Final = "rule_matched"
REASON_DEFAULT: Final = "default_applied"
REASON_INVALID_FACTS: Final = "invalid_facts"
REASON_CONDITION_ERROR: Final = "condition_error"
REASON_BUDGET_EXCEEDED: Final = "evaluation_budget_exceeded"

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_FACT_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ACTION_RE: Final = re.compile(r"^[A-Za-z0-9_.\-*?:/]+$")
_EMPTY: Final[Mapping[str, Value]] = MappingProxyType({})


class Effect(enum.StrEnum):
    """The closed set of rule effects."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One ordered rule; ``when=None`` matches every request."""

    id: str
    effect: Effect
    when: str | None = None
    constraints: Mapping[str, Value] = field(default_factory=lambda: _EMPTY)
    reason: str | None = None
    condition: CompiledCondition | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DefaultDecision:
    """What decides when no rule matches."""

    effect: Effect
    reason: str | None = None
    constraints: Mapping[str, Value] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyTestCase:
    """One offline test: facts in, expected determination (and rule/constraints) out.

    ``check_rule`` is false when the case does not say which rule decides; ``expect_rule=None``
    with ``check_rule`` means "the default decided".
    """

    name: str
    facts: Mapping[str, Value]
    expect_determination: Determination
    context: Mapping[str, Value] = field(default_factory=lambda: _EMPTY)
    principal: str | None = None
    action: str | None = None
    resource: str | None = None
    check_rule: bool = False
    expect_rule: str | None = None
    expect_constraints: Mapping[str, Value] | None = None
    expect_reason_code: str | None = None
    file: str | None = None  # where the case is written (the policy or its .tests.yaml)
    line: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyOutcome:
    """What one policy version says about one request's facts (no authority, no trace)."""

    determination: Determination
    reason_code: str
    rule: str | None = None
    constraints: Mapping[str, Value] = field(default_factory=lambda: _EMPTY)
    reasons: tuple[str, ...] = ()


_Runner = Callable[
    [Mapping[str, Any], Mapping[str, Any]], "tuple[PolicyOutcome, Mapping[str, Value]]"
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A validated policy document with its compiled rules.

    Equality compares the canonical form only (the compiled parts are derived from it).
    """

    name: str
    governs: tuple[str, ...]
    owner: str
    description: str | None
    facts: Mapping[str, FactSpec]
    rules: tuple[Rule, ...]
    default: DefaultDecision
    tests: tuple[PolicyTestCase, ...] = field(default=(), compare=False)
    canonical: str = ""
    content_hash: str = ""
    source_file: str | None = field(default=None, compare=False)
    _runner: _Runner | None = field(default=None, repr=False, compare=False)
    _governs_re: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_canonical(
        cls, document: str, *, filename: str | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> Policy:
        """Load the canonical JSON text (``PolicyVersionProposed.document``).

        Bounded like YAML input: ``policy_document_bytes``, and nesting ``yaml_depth`` (measured
        before parsing); duplicate keys are refused.
        """
        if not isinstance(document, str):
            raise PolicyError(
                [PolicyProblem(message="a policy document must be text", file=filename)]
            )
        try:
            data = boundedjson.loads(
                document,
                what="canonical policy JSON",
                max_bytes=limits.policy_document_bytes,
                max_depth=limits.yaml_depth,
            )
        except boundedjson.JSONBoundsError as exc:
            raise PolicyError([PolicyProblem(message=str(exc), file=filename)]) from None
        return _build(data, file=filename, marks=_Marks(), allow_tests=False, limits=limits)

    def governs_action(self, action: str) -> bool:
        """Does this policy govern ``action`` (exactly or by one of its globs)?"""
        assert self._governs_re is not None
        return self._governs_re.match(action) is not None

    def run(
        self, facts: Mapping[str, Any], context: Mapping[str, Any] = _EMPTY
    ) -> tuple[PolicyOutcome, Mapping[str, Value]]:
        """Validate ``facts`` and apply the rules: (outcome, facts as evaluated). Never raises."""
        assert self._runner is not None
        return self._runner(facts, context)


# ----------------------------------------------------------------------------------- YAML input


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 surprises: dates stay text, only true/false are booleans."""


_Loader.yaml_implicit_resolvers = {
    key: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _bool_constructor(loader: yaml.SafeLoader, node: yaml.Node) -> bool:
    return str(node.value).lower() == "true"


_Loader.add_constructor("tag:yaml.org,2002:bool", _bool_constructor)


class _Marks:
    """Line/column of every key and value in the YAML tree, by path."""

    def __init__(self) -> None:
        self.keys: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.values: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.duplicates: list[tuple[tuple[Any, ...], tuple[int, int]]] = []

    def at(self, path: tuple[Any, ...]) -> tuple[int | None, int | None]:
        while path:
            if path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return None, None

    def value_at(self, path: tuple[Any, ...]) -> tuple[int | None, int | None]:
        return self.values.get(path) or self.at(path)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _collect_marks(
    node: yaml.Node, path: tuple[Any, ...], marks: _Marks, visited: set[int]
) -> None:
    # Each node is walked once: a node reached again through an alias is marked where it was
    # written (its anchor) and not descended into, so aliases cannot multiply this walk. The
    # recursion is as deep as the document, which the loader bounded.
    marks.values[path] = _mark(node)
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            sub = (*path, key)
            if key in seen:
                marks.duplicates.append((sub, _mark(key_node)))
            seen.add(key)
            marks.keys[sub] = _mark(key_node)
            _collect_marks(value_node, sub, marks, visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_marks(item, (*path, i), marks, visited)


class _Refused(Exception):
    """A bound of :class:`Limits` crossed while composing (message says which and what to do)."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _BoundedLoader(_Loader):
    """Composes one document counting what an alias bomb multiplies, refusing at the first bound.

    ``expanded`` counts every node as if each alias were replaced by a copy of what it names:
    that is the size every later walk (marks, validation, canonical form) would see. An anchored
    node's expanded size is recorded when it is complete, so an alias adds it in one step.
    """

    def __init__(self, stream: str, limits: Limits) -> None:
        super().__init__(stream)
        self.limits = limits
        self.depth = 0
        self.aliases = 0
        self.expanded = 0
        self.anchored_sizes: dict[int, int] = {}

    def _grow(self, nodes: int, mark: Any) -> None:
        self.expanded += nodes
        limit = self.limits.yaml_nodes
        if self.expanded > limit:
            raise _Refused(
                f"the document expands to more than {limit:,} nodes once its aliases are "
                "expanded (limit yaml_nodes): write repeated parts out or use fewer nested "
                "aliases",
                mark,
            )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.limits.yaml_aliases:
                raise _Refused(
                    f"more than {self.limits.yaml_aliases:,} aliases (*name) in one document "
                    "(limit yaml_aliases): write repeated parts out",
                    event.start_mark,
                )
            node = super().compose_node(parent, index)  # the anchored node (or undefined alias)
            size = self.anchored_sizes.get(id(node))
            if size is None:
                raise _Refused(
                    f"alias *{event.anchor} refers to a node that contains it (a recursive "
                    "structure): remove the alias",
                    event.start_mark,
                )
            self._grow(size, event.start_mark)
            return node
        collection = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if collection:
            self.depth += 1
            if self.depth > self.limits.yaml_depth:
                raise _Refused(
                    f"mappings and lists nested more than {self.limits.yaml_depth} levels deep "
                    "(limit yaml_depth): flatten the document",
                    event.start_mark,
                )
        before = self.expanded
        self._grow(1, event.start_mark)
        node = super().compose_node(parent, index)
        if collection:
            self.depth -= 1
        if getattr(event, "anchor", None) is not None and node is not None:
            self.anchored_sizes[id(node)] = self.expanded - before
        return node


def _too_large(text: str, limit: int, *, what: str, filename: str | None) -> PolicyError | None:
    size = boundedjson.utf8_size_exceeds(text, limit)
    if size is None:
        return None
    return PolicyError(
        [
            PolicyProblem(
                message=f"{what} is {size:,} bytes or more; at most {limit:,} are accepted "
                "(limit policy_document_bytes): split it or shorten it",
                file=filename,
            )
        ]
    )


def load_yaml(
    text: str, *, filename: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[Any, _Marks]:
    """Parse one YAML document into plain data plus the position of every element.

    Bounded before the work: the text's size (``policy_document_bytes``), then, while composing,
    nesting (``yaml_depth``), aliases (``yaml_aliases``) and the node count with aliases
    expanded (``yaml_nodes``). The document is composed once; the data is constructed from that
    node tree.

    Raises :class:`PolicyError` for anything that is not one well-formed YAML document within
    those bounds.
    """
    oversized = _too_large(
        text, limits.policy_document_bytes, what="the document", filename=filename
    )
    if oversized is not None:
        raise oversized
    marks = _Marks()
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, limits)  # reads the text: may refuse a character already
        node = loader.get_single_node()
        if node is not None:
            _collect_marks(node, (), marks, set())
        data = loader.construct_document(node) if node is not None else None
    except _Refused as exc:
        line = exc.mark.line + 1 if exc.mark else None
        column = exc.mark.column + 1 if exc.mark else None
        raise PolicyError(
            [PolicyProblem(message=exc.message, file=filename, line=line, column=column)]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise PolicyError(
            [
                PolicyProblem(
                    message=f"YAML syntax error: {message}", file=filename, line=line, column=column
                )
            ]
        ) from None
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise PolicyError(
            [PolicyProblem(message=f"YAML error: {type(exc).__name__}: {exc}", file=filename)]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, marks


def parse_policy(
    text: str, *, filename: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> Policy:
    """Parse and validate a policy document written in YAML, within ``limits``.

    Raises :class:`~ledger.errors.PolicyError` listing every problem found; never anything else.
    """
    if not isinstance(text, str):
        raise PolicyError([PolicyProblem(message="a policy document must be text", file=filename)])
    data, marks = load_yaml(text, filename=filename, limits=limits)
    return _build(data, file=filename, marks=marks, allow_tests=True, limits=limits)


def parse_test_cases(
    text: str, *, filename: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[str | None, tuple[PolicyTestCase, ...]]:
    """Parse a ``NAME.tests.yaml`` file: ``(policy name or None, cases)``.

    The file is either a list of cases or a mapping with ``cases:`` (or ``tests:``) and an
    optional ``policy:`` naming the policy under test. Bounded as policy documents are.
    """
    if not isinstance(text, str):
        raise PolicyError([PolicyProblem(message="a tests file must be text", file=filename)])
    data, marks = load_yaml(text, filename=filename, limits=limits)
    v = _Validator(filename, marks, limits)
    policy_name: str | None = None
    path: tuple[Any, ...] = ()
    if isinstance(data, dict):
        v.keys(data, (), allowed={"policy", "cases", "tests"}, required=set())
        if "policy" in data:
            policy_name = v.string(data["policy"], ("policy",), field_name="policy")
        key = "cases" if "cases" in data else "tests"
        items = data.get(key)
        path = (key,)
    else:
        items = data
    cases = v.test_cases(items, path)
    v.raise_if_any()
    return policy_name, cases


# ----------------------------------------------------------------------------------- validation


class _Validator:
    def __init__(self, file: str | None, marks: _Marks, limits: Limits) -> None:
        self.file = file
        self.marks = marks
        self.limits = limits
        self.problems: list[PolicyProblem] = []

    def add(
        self,
        message: str,
        path: tuple[Any, ...],
        *,
        rule: str | None = None,
        field_name: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        if line is None:
            line, column = self.marks.at(path)
        self.problems.append(
            PolicyProblem(
                message=message,
                file=self.file,
                rule=rule,
                field=field_name or (".".join(str(p) for p in path) if path else None),
                line=line,
                column=column,
            )
        )

    def raise_if_any(self) -> None:
        if self.problems:
            # Reading order is what a person fixing the file wants.
            raise PolicyError(sorted(self.problems, key=lambda p: p.line or 0))

    def keys(
        self,
        data: dict[Any, Any],
        path: tuple[Any, ...],
        *,
        allowed: set[str],
        required: set[str],
        rule: str | None = None,
    ) -> None:
        for key in data:
            if key not in allowed:
                self.add(
                    f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})",
                    (*path, key),
                    rule=rule,
                )
        for key in sorted(required):
            if key not in data:
                self.add(
                    f"missing required key {key!r}",
                    path,
                    rule=rule,
                    field_name=".".join(map(str, (*path, key))),
                )

    def string(
        self,
        value: Any,
        path: tuple[Any, ...],
        *,
        field_name: str | None = None,
        rule: str | None = None,
        pattern: re.Pattern[str] | None = None,
        what: str = "text",
    ) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.add(
                f"expected non-empty {what}, got {_describe(value)}",
                path,
                rule=rule,
                field_name=field_name,
            )
            return None
        if pattern is not None and not pattern.match(value):
            self.add(f"{value!r} is not a valid {what}", path, rule=rule, field_name=field_name)
            return None
        return value

    def optional_string(
        self, data: dict[Any, Any], key: str, path: tuple[Any, ...], *, rule: str | None = None
    ) -> str | None:
        if key not in data or data[key] is None:
            return None
        return self.string(data[key], (*path, key), rule=rule)

    def effect(self, value: Any, path: tuple[Any, ...], *, rule: str | None) -> Effect | None:
        if isinstance(value, str) and value in ("allow", "deny"):
            return Effect(value)
        self.add(f"unknown effect {_describe(value)} (expected allow or deny)", path, rule=rule)
        return None

    def constraints(
        self, value: Any, path: tuple[Any, ...], *, rule: str | None
    ) -> Mapping[str, Value]:
        if value is None:
            return _EMPTY
        if not isinstance(value, dict):
            self.add(f"constraints must be a mapping, got {_describe(value)}", path, rule=rule)
            return _EMPTY
        out: dict[str, Value] = {}
        for key in sorted(value, key=str):
            item = value[key]
            sub = (*path, key)
            if not isinstance(key, str) or not key:
                self.add(f"constraint names must be text, got {_describe(key)}", sub, rule=rule)
                continue
            converted = _constraint_value(item)
            if converted is _INVALID:
                self.add(
                    f"constraint {key!r} must be text, a number, a bool, null or a list of text; got {_describe(item)}",
                    sub,
                    rule=rule,
                )
                continue
            out[key] = converted  # type: ignore[assignment]
        return MappingProxyType(out)

    def number(
        self, value: Any, path: tuple[Any, ...], fact_type: str
    ) -> int | Decimal | float | None:
        if isinstance(value, bool):
            self.add(f"must be a number, got {_describe(value)}", path)
            return None
        try:
            if fact_type == "int":
                if isinstance(value, int):
                    return value
                if isinstance(value, Decimal) and value == value.to_integral_value():
                    return int(value)
                self.add(f"must be an integer for an int fact, got {_describe(value)}", path)
                return None
            if fact_type == "decimal":
                if isinstance(value, float):
                    d = Decimal(repr(value))
                elif isinstance(value, (int, str, Decimal)):
                    d = Decimal(value)
                else:
                    raise InvalidOperation
                if not d.is_finite():
                    raise InvalidOperation
                return d
            if isinstance(value, (int, float, Decimal)):
                f = float(value)
                if math.isfinite(f):
                    return f
        except (InvalidOperation, ValueError, OverflowError):
            pass
        self.add(f"must be a number, got {_describe(value)}", path)
        return None

    def fact(self, name: Any, spec: Any, path: tuple[Any, ...]) -> FactSpec | None:
        ok = True
        if not isinstance(name, str) or not _FACT_RE.match(name):
            self.add(
                f"fact name {_describe(name)} must be an identifier (letters, digits, _)", path
            )
            return None
        if name in RESERVED_NAMES:
            self.add(f"fact name {name!r} is reserved", path)
            ok = False
        if isinstance(spec, str):
            spec = {"type": spec}  # shorthand: `amount: decimal`
        if not isinstance(spec, dict):
            self.add(
                f"fact {name!r} must be a mapping like {{type: int}}, got {_describe(spec)}", path
            )
            return None
        self.keys(
            spec,
            path,
            allowed={"type", "optional", "values", "min", "max", "description"},
            required={"type"},
        )
        fact_type = spec.get("type")
        if fact_type not in FACT_TYPES:
            if "type" in spec:
                self.add(
                    f"unknown fact type {_describe(fact_type)} (expected one of: {', '.join(FACT_TYPES)})",
                    (*path, "type"),
                )
            return None
        optional = spec.get("optional", False)
        if not isinstance(optional, bool):
            self.add(
                f"optional must be true or false, got {_describe(optional)}", (*path, "optional")
            )
            ok = False
        values: tuple[str, ...] | None = None
        if fact_type == "enum":
            raw = spec.get("values")
            if (
                not isinstance(raw, list)
                or not raw
                or not all(isinstance(x, str) and x for x in raw)
            ):
                self.add(
                    "an enum fact needs values: a non-empty list of text",
                    (*path, "values") if "values" in spec else path,
                )
                ok = False
            elif len(set(raw)) != len(raw):
                self.add("enum values must be unique", (*path, "values"))
                ok = False
            else:
                values = tuple(raw)
        elif "values" in spec:
            self.add("values is only allowed on enum facts", (*path, "values"))
            ok = False
        bounds: dict[str, int | Decimal | float | None] = {"min": None, "max": None}
        for key in ("min", "max"):
            if key in spec:
                if fact_type not in ("int", "decimal", "float"):
                    self.add(f"{key} is only allowed on int, decimal and float facts", (*path, key))
                    ok = False
                    continue
                bounds[key] = self.number(spec[key], (*path, key), fact_type)
                ok = ok and bounds[key] is not None
        lo, hi = bounds["min"], bounds["max"]
        if lo is not None and hi is not None and lo > hi:
            self.add(f"min {lo} is greater than max {hi}", (*path, "max"))
            ok = False
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            self.add("description must be text", (*path, "description"))
            ok = False
        if not ok:
            return None
        ft: FactType = fact_type
        return FactSpec(
            name=name,
            type=ft,
            optional=optional,
            values=values,
            minimum=lo,
            maximum=hi,
            description=description,
        )

    def condition(
        self,
        text: Any,
        path: tuple[Any, ...],
        *,
        rule: str | None,
        facts: Mapping[str, str] | None,
        enums: Mapping[str, tuple[str, ...]] | None = None,
    ) -> CompiledCondition | None:
        if not isinstance(text, str) or not text.strip():
            self.add(
                f"when must be a CEL expression (text), got {_describe(text)}", path, rule=rule
            )
            return None
        try:
            return compile_condition(text, facts=facts, enums=enums, limits=self.limits)
        except PolicyError as exc:
            line, column = self.marks.value_at(path)
            for p in exc.problems:
                where = ""
                if p.column is not None:
                    where = f" (at column {p.column} of the condition)"
                abs_line = line
                if line is not None and p.line is not None and p.line > 1:
                    abs_line = line + p.line - 1
                self.add(
                    p.message + where,
                    path,
                    rule=rule,
                    field_name="when",
                    line=abs_line,
                    column=column,
                )
            return None

    def test_cases(self, items: Any, path: tuple[Any, ...]) -> tuple[PolicyTestCase, ...]:
        if items is None:
            return ()
        if not isinstance(items, list):
            self.add(f"tests must be a list of cases, got {_describe(items)}", path)
            return ()
        cases: list[PolicyTestCase] = []
        names: set[str] = set()
        for i, item in enumerate(items):
            sub = (*path, i)
            if not isinstance(item, dict):
                self.add(f"a test case must be a mapping, got {_describe(item)}", sub)
                continue
            self.keys(
                item,
                sub,
                allowed={"name", "facts", "context", "principal", "action", "resource", "expect"},
                required={"name", "expect"},
            )
            name = (
                self.string(item.get("name"), (*sub, "name"), what="test name")
                if "name" in item
                else None
            )
            if name is not None:
                if name in names:
                    self.add(f"duplicate test name {name!r}", (*sub, "name"))
                names.add(name)
            facts = self.value_map(item.get("facts"), (*sub, "facts"))
            context = self.value_map(item.get("context"), (*sub, "context"))
            optional: dict[str, str | None] = {}
            for key in ("principal", "action", "resource"):
                optional[key] = (
                    self.string(item[key], (*sub, key)) if item.get(key) is not None else None
                )
            expect = item.get("expect")
            if not isinstance(expect, dict):
                if "expect" in item:
                    self.add(f"expect must be a mapping, got {_describe(expect)}", (*sub, "expect"))
                continue
            esub = (*sub, "expect")
            self.keys(
                expect,
                esub,
                allowed={"determination", "rule", "constraints", "reason_code"},
                required={"determination"},
            )
            det_raw = expect.get("determination")
            try:
                determination = Determination(str(det_raw))
            except ValueError:
                if "determination" in expect:
                    self.add(
                        f"unknown determination {_describe(det_raw)} (expected one of: {', '.join(d.value for d in Determination)})",
                        (*esub, "determination"),
                    )
                continue
            check_rule = "rule" in expect
            rule = expect.get("rule")
            if rule is not None and not isinstance(rule, str):
                self.add(
                    f"expect.rule must be a rule id or null, got {_describe(rule)}", (*esub, "rule")
                )
                continue
            constraints = None
            if "constraints" in expect:
                constraints = self.constraints(
                    expect["constraints"], (*esub, "constraints"), rule=None
                )
            reason_code = expect.get("reason_code")
            if reason_code is not None and not isinstance(reason_code, str):
                self.add("expect.reason_code must be text", (*esub, "reason_code"))
                continue
            if name is None or facts is None or context is None:
                continue
            cases.append(
                PolicyTestCase(
                    name=name,
                    facts=facts,
                    context=context,
                    principal=optional["principal"],
                    action=optional["action"],
                    resource=optional["resource"],
                    expect_determination=determination,
                    check_rule=check_rule,
                    expect_rule=rule,
                    expect_constraints=constraints,
                    expect_reason_code=reason_code,
                    file=self.file,
                    line=self.marks.at(sub)[0],
                )
            )
        return tuple(cases)

    def value_map(self, value: Any, path: tuple[Any, ...]) -> Mapping[str, Value] | None:
        if value is None:
            return _EMPTY
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            self.add(f"must be a mapping of names to values, got {_describe(value)}", path)
            return None
        out: dict[str, Value] = {}
        for k, v in value.items():
            converted = _constraint_value(v)
            if converted is _INVALID:
                self.add(f"{k!r}: unsupported value {_describe(v)}", (*path, k))
                return None
            out[k] = converted  # type: ignore[assignment]
        return MappingProxyType(out)


_INVALID: Final = object()


def _constraint_value(v: Any) -> object:
    if v is None or isinstance(v, (bool, int, str, Decimal)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else _INVALID
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return tuple(v)
    return _INVALID


_YAML_KINDS: Final = {
    bool: "boolean",
    int: "integer",
    float: "number",
    Decimal: "number",
    str: "text",
    list: "list",
    dict: "mapping",
    datetime: "timestamp",
    date: "date",
}


def _describe(v: Any) -> str:
    """A value as a policy author wrote it, with its YAML kind (never a Python class name)."""
    if v is None:
        return "nothing"
    kind = _YAML_KINDS.get(type(v), "value")
    if isinstance(v, str):
        text = repr(v)
    elif isinstance(v, Decimal):
        text = str(v)
    else:
        text = json.dumps(v, default=str)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


_TOP_KEYS: Final = {
    "policy",
    "governs",
    "owner",
    "description",
    "facts",
    "rules",
    "default",
    "tests",
}
_RULE_KEYS: Final = {"id", "when", "effect", "constraints", "reason", "description"}
_DEFAULT_KEYS: Final = {"effect", "reason", "constraints"}


def _build(
    data: Any, *, file: str | None, marks: _Marks, allow_tests: bool, limits: Limits
) -> Policy:
    v = _Validator(file, marks, limits)
    for path, (line, column) in marks.duplicates:
        v.add(f"duplicate key {path[-1]!r}", path, line=line, column=column)
    if not isinstance(data, dict):
        v.add(f"a policy document must be a mapping, got {_describe(data)}", ())
        v.raise_if_any()
        raise AssertionError("unreachable")
    allowed = set(_TOP_KEYS) if allow_tests else _TOP_KEYS - {"tests"}
    v.keys(data, (), allowed=allowed, required={"policy", "governs", "owner", "default"})

    name = (
        v.string(data["policy"], ("policy",), pattern=_NAME_RE, what="policy name")
        if "policy" in data
        else None
    )
    owner = v.string(data["owner"], ("owner",), what="owner") if "owner" in data else None
    description = v.optional_string(data, "description", ())

    governs: list[str] = []
    raw_governs = data.get("governs")
    if isinstance(raw_governs, str):
        raw_governs = [raw_governs]
    if "governs" in data:
        if not isinstance(raw_governs, list) or not raw_governs:
            v.add("governs must be a non-empty list of action names (globs allowed)", ("governs",))
        else:
            for i, action in enumerate(raw_governs):
                a = v.string(action, ("governs", i), pattern=_ACTION_RE, what="action name")
                if a is not None and a not in governs:
                    governs.append(a)

    facts: dict[str, FactSpec] = {}
    broken_facts: set[str] = set()
    raw_facts = data.get("facts")
    if raw_facts is not None and not isinstance(raw_facts, dict):
        v.add(
            f"facts must be a mapping of fact names to declarations, got {_describe(raw_facts)}",
            ("facts",),
        )
    for fname, fspec in (raw_facts or {}).items() if isinstance(raw_facts, dict) else ():
        spec = v.fact(fname, fspec, ("facts", fname))
        if spec is None:
            if isinstance(fname, str):
                broken_facts.add(fname)
        else:
            facts[spec.name] = spec
    # A fact whose declaration is broken is still declared: conditions may use it (as dyn)
    # without a second, misleading "undeclared fact" problem.
    cel_types = {n: cel_type(s.type) for n, s in facts.items()} | {n: "dyn" for n in broken_facts}
    enums = {n: s.values for n, s in facts.items() if s.values}

    rules: list[Rule] = []
    raw_rules = data.get("rules")
    if raw_rules is not None and not isinstance(raw_rules, list):
        v.add(f"rules must be a list, got {_describe(raw_rules)}", ("rules",))
        raw_rules = []
    seen_ids: set[str] = set()
    for i, raw in enumerate(raw_rules or ()):
        path = ("rules", i)
        if not isinstance(raw, dict):
            v.add(f"a rule must be a mapping, got {_describe(raw)}", path)
            continue
        rid = raw.get("id")
        rule_id = rid if isinstance(rid, str) and rid.strip() else None
        v.keys(raw, path, allowed=_RULE_KEYS, required={"id", "effect"}, rule=rule_id)
        if "id" in raw and rule_id is None:
            v.add(f"rule id must be non-empty text, got {_describe(rid)}", (*path, "id"))
        if rule_id is not None:
            if rule_id in seen_ids:
                v.add(f"duplicate rule id {rule_id!r}", (*path, "id"), rule=rule_id)
            seen_ids.add(rule_id)
        effect = (
            v.effect(raw["effect"], (*path, "effect"), rule=rule_id) if "effect" in raw else None
        )
        constraints = v.constraints(raw.get("constraints"), (*path, "constraints"), rule=rule_id)
        if effect is Effect.DENY and constraints:
            v.add("constraints only apply to allow rules", (*path, "constraints"), rule=rule_id)
        reason = v.optional_string(raw, "reason", path, rule=rule_id)
        v.optional_string(raw, "description", path, rule=rule_id)
        when = raw.get("when")
        condition = None
        if when is not None:
            condition = v.condition(
                when, (*path, "when"), rule=rule_id, facts=cel_types, enums=enums
            )
        if rule_id is not None and effect is not None:
            rules.append(
                Rule(
                    id=rule_id,
                    effect=effect,
                    when=when if isinstance(when, str) else None,
                    constraints=constraints,
                    reason=reason,
                    condition=condition,
                )
            )

    default: DefaultDecision | None = None
    raw_default = data.get("default")
    if "default" in data:
        if not isinstance(raw_default, dict):
            v.add(
                f"default must be a mapping like {{effect: deny}}, got {_describe(raw_default)}",
                ("default",),
            )
        else:
            v.keys(raw_default, ("default",), allowed=_DEFAULT_KEYS, required={"effect"})
            d_effect = (
                v.effect(raw_default["effect"], ("default", "effect"), rule=None)
                if "effect" in raw_default
                else None
            )
            d_constraints = v.constraints(
                raw_default.get("constraints"), ("default", "constraints"), rule=None
            )
            if d_effect is Effect.DENY and d_constraints:
                v.add("constraints only apply to an allow default", ("default", "constraints"))
            d_reason = v.optional_string(raw_default, "reason", ("default",))
            if d_effect is not None:
                default = DefaultDecision(
                    effect=d_effect, reason=d_reason, constraints=d_constraints
                )

    tests: tuple[PolicyTestCase, ...] = ()
    if allow_tests and "tests" in data:
        tests = v.test_cases(data["tests"], ("tests",))

    v.raise_if_any()
    assert name is not None and owner is not None and default is not None
    canonical = _canonical_text(name, tuple(governs), owner, description, facts, rules, default)
    digest = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    frozen_facts = MappingProxyType(dict(facts))
    rule_tuple = tuple(rules)
    return Policy(
        name=name,
        governs=tuple(governs),
        owner=owner,
        description=description,
        facts=frozen_facts,
        rules=rule_tuple,
        default=default,
        tests=tests,
        canonical=canonical,
        content_hash=digest,
        source_file=file,
        _runner=_make_runner(frozen_facts, rule_tuple, default, limits),
        _governs_re=_globs_regex(governs),
    )


def _globs_regex(patterns: Sequence[str]) -> re.Pattern[str]:
    import fnmatch

    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or r"(?!)")


# ----------------------------------------------------------------------------------- canonical form


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def _canonical_text(
    name: str,
    governs: tuple[str, ...],
    owner: str,
    description: str | None,
    facts: Mapping[str, FactSpec],
    rules: Sequence[Rule],
    default: DefaultDecision,
) -> str:
    doc: dict[str, Any] = {"policy": name, "governs": list(governs), "owner": owner}
    if description is not None:
        doc["description"] = description
    fact_docs: dict[str, Any] = {}
    for fname, spec in facts.items():
        fd: dict[str, Any] = {"type": spec.type}
        if spec.optional:
            fd["optional"] = True
        if spec.values is not None:
            fd["values"] = list(spec.values)
        if spec.minimum is not None:
            fd["min"] = _jsonable(spec.minimum)
        if spec.maximum is not None:
            fd["max"] = _jsonable(spec.maximum)
        if spec.description is not None:
            fd["description"] = spec.description
        fact_docs[fname] = fd
    doc["facts"] = fact_docs
    rule_docs = []
    for rule in rules:
        rd: dict[str, Any] = {"id": rule.id, "effect": rule.effect.value}
        if rule.when is not None:
            rd["when"] = rule.when
        if rule.constraints:
            rd["constraints"] = {k: _jsonable(x) for k, x in rule.constraints.items()}
        if rule.reason is not None:
            rd["reason"] = rule.reason
        rule_docs.append(rd)
    doc["rules"] = rule_docs
    dd: dict[str, Any] = {"effect": default.effect.value}
    if default.reason is not None:
        dd["reason"] = default.reason
    if default.constraints:
        dd["constraints"] = {k: _jsonable(x) for k, x in default.constraints.items()}
    doc["default"] = dd
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


# ----------------------------------------------------------------------------------- the decision


def _determination(effect: Effect, constraints: Mapping[str, Value]) -> Determination:
    if effect is Effect.DENY:
        return Determination.DENY
    return Determination.ALLOW_WITH_CONSTRAINTS if constraints else Determination.ALLOW


def _always(f: Mapping[str, Any], c: Mapping[str, Any], m: Meter | None) -> bool:
    return True


def _make_runner(
    facts: Mapping[str, FactSpec],
    rules: tuple[Rule, ...],
    default: DefaultDecision,
    limits: Limits,
) -> _Runner:
    check: FactsChecker = build_checker(facts, limits=limits)
    # One meter per run, and only for a policy with metered conditions: the others pay nothing.
    metered = any(rule.condition is not None and rule.condition.metered for rule in rules)
    budget = limits.evaluation_cost
    # Every rule's outcome is a constant: build it once, hand the same object out per request.
    plan = tuple(
        (
            rule.condition.fn if rule.condition is not None else _always,
            PolicyOutcome(
                determination=_determination(rule.effect, rule.constraints),
                reason_code=REASON_RULE_MATCHED,
                rule=rule.id,
                constraints=rule.constraints,
                reasons=(rule.reason,) if rule.reason else (),
            ),
        )
        for rule in rules
    )
    fallback = PolicyOutcome(
        determination=_determination(default.effect, default.constraints),
        reason_code=REASON_DEFAULT,
        rule=None,
        constraints=default.constraints,
        reasons=(default.reason,) if default.reason else (),
    )

    def run(
        raw: Mapping[str, Any], context: Mapping[str, Any]
    ) -> tuple[PolicyOutcome, Mapping[str, Value]]:
        coerced, bad = check(raw)
        if context and not bad:
            bad = context_problems(context, limits)
        if bad:
            return PolicyOutcome(
                determination=Determination.ERROR, reason_code=REASON_INVALID_FACTS, reasons=bad
            ), raw
        meter = Meter(budget) if metered else None
        for fn, outcome in plan:
            try:
                if fn(coerced, context, meter):
                    return outcome, coerced
            except KeyError:
                continue  # needs an absent fact: the rule does not match (see ledger.core.cel)
            except BudgetExceeded as exc:
                # Never an allow, never a later rule: the request asked for more work than any
                # one request may have.
                return (
                    PolicyOutcome(
                        determination=Determination.ERROR,
                        reason_code=REASON_BUDGET_EXCEEDED,
                        rule=outcome.rule,
                        reasons=(f"evaluation stopped in rule {outcome.rule!r}: {exc}",),
                    ),
                    coerced,
                )
            except (ArithmeticError, TypeError, ValueError, AttributeError) as exc:
                # A fault on present values: record an error rather than skip to a later rule,
                # which could allow what this rule would have denied.
                return (
                    PolicyOutcome(
                        determination=Determination.ERROR,
                        reason_code=REASON_CONDITION_ERROR,
                        rule=outcome.rule,
                        reasons=(f"condition of rule {outcome.rule!r} failed: {exc}",),
                    ),
                    coerced,
                )
        return fallback, coerced

    return run
