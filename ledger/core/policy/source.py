"""Where a policy comes from: YAML text or canonical JSON text, each loaded within bounds.

Lives here: :func:`load_yaml` (one YAML document composed once by a loader that counts nesting,
aliases and the nodes the aliases expand to, and stops at the first bound crossed, with the line
and column of every element recorded), the entry points :func:`parse_policy` and
:func:`parse_test_cases` for YAML, and :func:`parse_canonical` (behind
:meth:`Policy.from_canonical`) for the canonical JSON, its nesting measured by
:mod:`ledger.core.boundedjson` before it is parsed. Everything is bounded before the expensive
work (STYLE §16, :mod:`ledger.core.limits`): the text's size first. A number with a fraction
is read as the exact Decimal of its digits, as JSON facts are; the validator gives back YAML's
float wherever that float is the number written (:func:`~.validate._yaml_number`).

May import: the stdlib, ``yaml``, :mod:`ledger.core.boundedjson`, :mod:`ledger.core.limits`,
:mod:`ledger.errors` and, of this package, :mod:`.model`, :mod:`.lint` and :mod:`.validate`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import yaml

from ledger.core import boundedjson
from ledger.core.cel.syntax import parses
from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.core.policy.lint import (
    impossible_rules,
    overtaken_denials,
    shadowed_rules,
    unguarded_denials,
)
from ledger.core.policy.model import Policy, PolicyTestCase
from ledger.core.policy.validate import Marks, Validator, build
from ledger.core.text import clipped
from ledger.errors import PolicyError, PolicyProblem

__all__ = ["load_yaml", "parse_policy", "check_policy", "parse_test_cases", "parse_canonical"]


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


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _comment_follows(node: yaml.ScalarNode) -> bool:
    """Does a YAML comment follow a plain scalar on its last line? A ``#`` after a space ends
    the value there: ``when: a && (b #1)`` is the condition ``a && (b`` to YAML."""
    end = node.end_mark
    buffer = getattr(end, "buffer", None)
    if not isinstance(buffer, str):
        return False
    # Only what follows it closely: a scan to the line's end, per scalar, was quadratic in a
    # one-line document of many scalars.
    return buffer[end.pointer : end.pointer + 64].lstrip(" \t").startswith("#")


_NUMBER_TAGS: Final = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
_INT_TAG: Final = "tag:yaml.org,2002:int"
_FLOAT_TAG: Final = "tag:yaml.org,2002:float"
_OLDER_NUMBER: Final = re.compile(r"[-+]?(?:0[0-9_]|0[xXbB]|[0-9]*_)")
"""An integer YAML 1.1 (PyYAML) reads otherwise than YAML 1.2, JSON and CEL: a leading zero
(``0100``: octal 64), a ``_`` between digits (``1_000``), ``0x``/``0b`` notation; and a float
with a ``_`` (``1_000.50``), which YAML 1.2 and JSON read as text and a condition refuses."""


def _folded_lines(node: yaml.ScalarNode) -> list[tuple[int, int]]:
    """The lines a folded block scalar (``>``) was written on, after its indicator's line: each
    as (line number, length without its indentation), blank ones left out."""
    start, end = node.start_mark, node.end_mark
    buffer = getattr(start, "buffer", None)
    if not isinstance(buffer, str):
        return []
    text = buffer[start.pointer : end.pointer]
    lines = []
    for i, written in enumerate(text.split("\n")[1:], start=start.line + 2):
        # As YAML folds it: a line's indentation goes, its trailing white space stays (a
        # review: trailing spaces, tabs and a Windows line end threw the column, then the line).
        content = written.removesuffix("\r").lstrip(" ")
        if content.strip(" \t"):
            lines.append((i, len(content)))
    return lines


def _collect_marks(node: yaml.Node, path: tuple[Any, ...], marks: Marks, visited: set[int]) -> None:
    # Each node is walked once: a node reached again through an alias is marked where it was
    # written (its anchor) and not descended into, so aliases cannot multiply this walk. The
    # recursion is as deep as the document, which the loader bounded.
    marks.values[path] = _mark(node)
    if isinstance(node, yaml.ScalarNode) and node.style == "|":
        # A literal block's text starts on the line after its `|`: a problem on the block's
        # third line was said one line early (a semantics review).
        line, _ = _mark(node)
        marks.values[path] = (line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.ScalarNode) and node.style == ">":
        # Once per node: an alias of it (a path more) reuses its lines, never reads them again.
        folded = marks.folded_nodes.get(id(node))
        if folded is None:
            folded = marks.folded_nodes[id(node)] = _folded_lines(node)
        if folded:
            marks.values[path] = (folded[0][0], node.start_mark.column + 1)
            if "\n" not in node.value.rstrip("\n"):  # one line of text: mapped back exactly
                marks.folded[path] = folded
    if isinstance(node, yaml.ScalarNode) and not node.style:  # written without quotes
        marks.plain.add(path)
        if _comment_follows(node):
            marks.cut_by_comment.add(path)
        if node.tag in _NUMBER_TAGS and ":" in node.value:
            marks.base60[path] = str(node.value)[:40]  # `12:30`: YAML 1.1's 750
        elif (node.tag == _INT_TAG and _OLDER_NUMBER.match(node.value)) or (
            node.tag == _FLOAT_TAG and "_" in node.value
        ):
            marks.older_numbers[path] = str(node.value)[:40]  # `0100`: YAML 1.1's 64
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


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class _Refused(Exception):
    """A bound of :class:`Limits` crossed while composing (message says which and what to do)."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _int_constructor(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """YAML's int, refused (with its position) when it is longer than JSON and the canonical
    form can carry: Python converts integers to and from text only up to a number of digits."""
    text = str(node.value).replace("_", "").lstrip("+-")
    limit = boundedjson.MAX_INT_DIGITS
    size = f"{len(text):,}" if text.isdigit() else f"more than {limit:,}"  # else 0x…, 1:30…
    refused = _Refused(
        f"the integer {boundedjson.preview_number(text)} has {size} digits; at most "
        f"{limit:,} are accepted in a number: shorten it",
        node.start_mark,
    )
    if len(text) > limit:
        raise refused
    try:
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:  # the process allows fewer digits than the default
        raise refused from None
    if not isinstance(value, int) or boundedjson.int_too_long(value):
        raise refused  # 0x…, 0b…, 1:2:… notations: short text, long number
    return value


_DECIMAL_NOTATION: Final = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
"""A YAML float written in decimal notation (underscores removed); not .inf, .nan or 1:30.5."""


def _float_constructor(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal | float:
    """YAML's float as the exact :class:`~decimal.Decimal` of its written digits, as JSON facts
    are read (``parse_float=Decimal``): ``499.99999999999999999`` is not 500.0. Where the
    document needs a binary float (a float fact's bounds, a constraint), the validator converts
    it, to the float YAML read before. ``.inf``, ``.nan`` and base 60 stay YAML's floats."""
    text = str(node.value).replace("_", "")
    if _DECIMAL_NOTATION.fullmatch(text) is None:
        value: float = yaml.SafeLoader.construct_yaml_float(loader, node)
        return value
    limit = boundedjson.MAX_INT_DIGITS
    if len(text) > limit:
        raise _Refused(
            f"the number {boundedjson.preview_number(text)} has {len(text):,} characters; at "
            f"most {limit:,} are accepted in a number: shorten it",
            node.start_mark,
        )
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent past any exact decimal: 1.0e+99999999999999999999
        raise _Refused(
            f"the number {boundedjson.preview_number(text)} has an exponent no exact decimal "
            "can hold: write it as text if you mean it, or check it",
            node.start_mark,
        ) from None


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
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stubs leave peek_event untyped
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
        if isinstance(node, yaml.ScalarNode) and _SURROGATE.search(node.value):
            # An escape such as "\ud800" decodes to half of a UTF-16 pair: not Unicode text, and
            # nothing downstream (canonical form, content hash, Avro) can encode it.
            raise _Refused(
                "a text holds a lone surrogate (an escape such as \\ud800, half of a UTF-16 "
                "pair), which is not Unicode text: write the character itself",
                event.start_mark,
            )
        if collection:
            self.depth -= 1
        if getattr(event, "anchor", None) is not None and node is not None:
            self.anchored_sizes[id(node)] = self.expanded - before
        return node


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _int_constructor)


class _ExactLoader(_BoundedLoader):
    """:class:`_BoundedLoader` reading a number with a fraction as the exact Decimal of its
    digits (:func:`_float_constructor`). The other reads it as YAML's float, as every document
    was read before (``load_yaml(exact_numbers=False)``): for a proposal recorded then."""


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _float_constructor)


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
    text: str,
    *,
    filename: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    exact_numbers: bool = True,
) -> tuple[Any, Marks]:
    """Parse one YAML document into plain data plus the position of every element.

    Bounded before the work: the text's size (``policy_document_bytes``), then, while composing,
    nesting (``yaml_depth``), aliases (``yaml_aliases``) and the node count with aliases
    expanded (``yaml_nodes``). The document is composed once; the data is constructed from that
    node tree. A number with a fraction is the exact Decimal of its digits; with
    ``exact_numbers`` false, YAML's float, as documents recorded before were read.

    Raises :class:`PolicyError` for anything that is not one well-formed YAML document within
    those bounds.
    """
    oversized = _too_large(
        text, limits.policy_document_bytes, what="the document", filename=filename
    )
    if oversized is not None:
        raise oversized
    marks = Marks()
    loader: _BoundedLoader | None = None
    try:
        kind = _ExactLoader if exact_numbers else _BoundedLoader
        loader = kind(text, limits)  # reads the text: may refuse a character already
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
        hint = _line_hint(message, text, exc.problem_mark) or _yaml_hint(message)
        if hint:
            message = f"{hint} (the YAML parser says: {message})"
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


_YAML_HINTS: Final = (
    ("'\\t'", "a tab: YAML indents with spaces only"),
    (
        "for the tag '!",
        'a value starting with ! is read as a YAML tag: quote the condition, when: "!has(x)"',
    ),
    ("scanning a tag", 'a value starting with ! is read as a YAML tag: quote it, "!…"'),
    ("scanning an anchor", 'a value starting with & is read as a YAML anchor: quote it, "&…"'),
    ("scanning an alias", 'a value starting with * is read as a YAML alias: quote it, "*…"'),
    ("undefined alias", 'a value starting with * is read as a YAML alias: quote it, "*…"'),
    (
        "mapping values are not allowed here",
        "': ' inside a value starts a new mapping: quote the whole value",
    ),
    ("expected <block end>", "this line's indentation does not line up with the lines above it"),
    ("could not find expected ':'", "a key without ':' or a line indented too far"),
    ("expected ',' or ']'", "a [list] is not closed, or an item in it needs quotes"),
    ("expected ',' or '}'", "a {mapping} is not closed, or a value in it needs quotes"),
)
"""Parser messages, by a fragment, and what a policy author should do about them."""


def _yaml_hint(message: str) -> str | None:
    return next((hint for fragment, hint in _YAML_HINTS if fragment in message), None)


_KEY_ONLY: Final = re.compile(r"\s+[A-Za-z_][\w-]*")
_TAG_START: Final = re.compile(r"\s*(?:-\s+)?[\w-]+:\s+!")
_QUOTED_START: Final = re.compile(r"""\s*(?:-\s+)?[\w-]+:\s+(["'])""")
_LEAD: Final = re.compile(r"[ ]*(?:-[ ]+)*")
_FLOW_START: Final = re.compile(r"\s*(?:-\s+)?[\w-]+:\s+[\[{]")


def _misaligned(lines: list[str], at: int, indent: int) -> str:
    """The indentation hint for line ``at``: where the keys of the lines above it start (a
    review: the nearest line alone was named, a list item's or a folded condition's text
    among them, and lining up with it swallowed the line into the condition)."""
    starts: set[int] = set()
    for above in lines[max(0, at - 200) : at]:
        key = _KEY_LINE.match(above)
        if key is not None:
            starts.add(len(key.group(1)))
    near = sorted(starts, key=lambda n: (abs(n - indent), n))[:3]
    if not near:
        return "this line's indentation does not line up with the lines above it"
    ordered = [str(n) for n in sorted(near)]
    shown = ordered[0] if len(ordered) == 1 else f"{', '.join(ordered[:-1])} or {ordered[-1]}"
    return (
        f"this line's indentation does not line up with the lines above it: its key starts "
        f"{indent} space(s) in, and the keys above it {shown}; line up the keys of one "
        "mapping exactly, and indent a key inside another by 2 more"
    )


# A line holding a key (after any '- '), its indentation to the key in group 1.
_KEY_LINE: Final = re.compile(rf"({_LEAD.pattern})[A-Za-z_][\w.-]*[ ]*:(?:[ ]|$)")


def _line_hint(message: str, text: str, mark: Any) -> str | None:
    """A hint from the line the parser stopped on, where the parser's words mislead: a key
    indented under the line above reads as ': ' inside a value; a value that opens with a
    quote and goes on after it reads as a misaligned line."""
    if mark is None:
        return None
    lines = text.splitlines()
    if not 0 <= mark.line < len(lines):
        return None
    line = lines[mark.line][:500]
    if _TAG_START.match(line) and "'\\t'" not in message:
        # `when: !has(x) && y`: the tag is read, then `&&` as an anchor (a policy owner was
        # told the value starts with &); `when: !(a != b) || c`, then the rest as a misaligned
        # line (one was told the indentation was wrong).
        return 'a value starting with ! is read as a YAML tag: quote the condition, when: "!has(x) && …"'
    if "mapping values are not allowed here" in message:
        key = line[: mark.column]
        if _KEY_ONLY.fullmatch(key):
            return (
                f"{key.strip()!r} is indented further than the key above it: line it up with "
                "that key (with a '- ' item, under the first key after the dash)"
            )
    if "expected <block end>" in message:
        lead = _LEAD.match(line)
        indent = lead.end() if lead else 0  # where its key starts: after a '- ', if any
        if mark.column <= indent:
            # The parser stopped at the line's start, not in its value: the line itself is out
            # of line (a policy owner's walkthrough: ` tier: {type: string}` was told to quote
            # its value, then told to quote it again).
            return _misaligned(lines, mark.line, indent)
        flow = _FLOW_START.match(line)
        if flow:
            # `when: ['eu', 'us'].exists(…)`: the list is read as YAML's, then the rest as a
            # misaligned line (a policy owner was told the indentation was wrong).
            value = line[flow.end() - 1 :].split(" #", 1)[0].rstrip()  # not its comment
            whole = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return (
                "a value that starts with [ or { is read as a YAML list or mapping: quote the "
                f"whole value, {line[: flow.end() - 1].strip()} {clipped(whole, 120)}"
            )
        quoted = _QUOTED_START.match(line)
        if quoted:
            start = quoted.end() - 1
            value = line[start:].rstrip()
            mark_ = quoted.group(1)
            inner = value[1:-1] if len(value) > 1 and value.endswith(mark_) else None
            if inner is not None and parses(inner) and not parses(value):
                # The quotes were meant as YAML's around a condition that holds quotes of the
                # same kind: quoting the whole of it again keeps them in the condition (a
                # policy owner followed that advice into a CEL syntax error).
                value, advice = inner, "quote the condition with the other quote mark"
            else:
                advice = "quote the whole value"
            if mark_ == '"':  # wrap in single quotes, which YAML escapes by doubling
                whole = "'" + value.replace("'", "''") + "'"
            else:
                whole = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return (
                "a value that starts with a quote ends at its closing quote: "
                f"{advice}, {line[:start].strip()} {clipped(whole, 120)}"
            )
    return None


def parse_policy(
    text: str,
    *,
    filename: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    new_document: bool = True,
    numbers_as_floats: bool = False,
) -> Policy:
    """Parse and validate a policy document written in YAML, within ``limits``.

    ``new_document`` false reads a recorded one (the YAML a signed proposal carried): the
    checks that came later are left out, as for the canonical form (:func:`parse_canonical`).
    ``numbers_as_floats`` reads a number with a fraction as YAML's float, as every document was
    read before they were read exactly (2026-12-06): a proposal recorded then has the content
    hash of that reading. Raises :class:`~ledger.errors.PolicyError` listing every problem
    found; never anything else.
    """
    return _built(text, filename, limits, new_document, exact_numbers=not numbers_as_floats)[0]


def _built(
    text: str,
    filename: str | None,
    limits: Limits,
    new_document: bool,
    *,
    exact_numbers: bool = True,
) -> tuple[Policy, Marks]:
    """The policy a YAML document makes, and where each of its parts was written."""
    if not isinstance(text, str):
        raise PolicyError([PolicyProblem(message="a policy document must be text", file=filename)])
    data, marks = load_yaml(text, filename=filename, limits=limits, exact_numbers=exact_numbers)
    policy = build(
        data,
        file=filename,
        marks=marks,
        allow_tests=True,
        limits=limits,
        new_document=new_document,
    )
    if new_document:
        # The ledger stores the canonical JSON, which evaluators load under this same limit
        # (:func:`parse_canonical`); aliases can make it far larger than the YAML (a red team's
        # 100 KB file was 500 KB stored: approved and promoted, then every request `error`).
        stored = _too_large(
            policy.canonical,
            limits.policy_document_bytes,
            what="the policy as the ledger stores it (canonical JSON, aliases expanded)",
            filename=filename,
        )
        if stored is not None:
            raise stored
    return policy, marks


def check_policy(
    text: str, *, filename: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[Policy, tuple[PolicyProblem, ...]]:
    """:func:`parse_policy` for a policy owner: the policy, and its warnings located in the text,
    in reading order (rules an earlier rule shadows, deny rules a request passes by leaving out
    a field they read: :mod:`.lint`). A warning does not make it invalid."""
    policy, marks = _built(text, filename, limits, new_document=True)
    warnings = []
    for found in shadowed_rules(policy):
        where = ("default",) if found.index is None else ("rules", found.index, "when")
        line, _ = marks.at(where)
        rule = None if found.index is None else policy.rules[found.index].id
        warnings.append(
            PolicyProblem(message=found.message(policy), file=filename, rule=rule, line=line)
        )
    for impossible in impossible_rules(policy):
        line, _ = marks.at(("rules", impossible.index, "when"))
        rule = policy.rules[impossible.index].id
        warnings.append(
            PolicyProblem(message=impossible.message(), file=filename, rule=rule, line=line)
        )
    for overtaken in overtaken_denials(policy):
        line, _ = marks.at(("rules", overtaken.index, "when"))
        rule = policy.rules[overtaken.index].id
        warnings.append(
            PolicyProblem(message=overtaken.message(policy), file=filename, rule=rule, line=line)
        )
    for unguarded in unguarded_denials(policy):
        line, _ = marks.at(("rules", unguarded.index, "when"))
        rule = policy.rules[unguarded.index].id
        warnings.append(
            PolicyProblem(message=unguarded.message(), file=filename, rule=rule, line=line)
        )
    warnings.sort(key=lambda w: w.line or 0)  # stable: a line's shadowing first
    return policy, tuple(warnings)


def parse_test_cases(
    text: str, *, filename: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[str | None, tuple[PolicyTestCase, ...]]:
    """Parse a ``NAME.tests.yaml`` file: ``(policy name or None, cases)``.

    The file is either a list of cases or a mapping with ``cases:`` (or ``tests:``) and an
    optional ``policy:`` naming the policy under test. Bounded as policy documents are.
    """
    named, cases, problems = read_test_cases(text, filename=filename, limits=limits)
    if problems:
        raise PolicyError(problems)
    return named, cases


def read_test_cases(
    text: str, *, filename: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[str | None, tuple[PolicyTestCase, ...], tuple[PolicyProblem, ...]]:
    """:func:`parse_test_cases`, its problems returned beside the cases that are whole, so a
    check of those against the policy is said in the same round (a policy owner's
    walkthrough: a misspelt rule showed only once a missing ``expect`` was fixed). A file that
    is not YAML, or crosses a bound, still raises :class:`PolicyError`."""
    if not isinstance(text, str):
        raise PolicyError([PolicyProblem(message="a tests file must be text", file=filename)])
    data, marks = load_yaml(text, filename=filename, limits=limits)
    v = Validator(filename, marks, limits)
    v.base60()  # in a tests file too (a review: `minutes: 12:30` was a case about 750)
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
    try:
        v.raise_if_any()
    except PolicyError as exc:
        return policy_name, cases, exc.problems
    return policy_name, cases, ()


def parse_canonical(
    document: str, *, filename: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> Policy:
    """Load canonical JSON text (``PolicyVersionProposed.document``); :meth:`Policy.from_canonical`.

    Bounded like YAML input: ``policy_document_bytes``, and nesting ``yaml_depth`` (measured
    before parsing); duplicate keys are refused. A recorded version: the checks that came
    later are left out (see :func:`~ledger.core.cel.compile_condition`).
    """
    if not isinstance(document, str):
        raise PolicyError([PolicyProblem(message="a policy document must be text", file=filename)])
    try:
        data = boundedjson.loads(
            document,
            what="canonical policy JSON",
            max_bytes=limits.policy_document_bytes,
            max_depth=limits.yaml_depth,
        )
    except boundedjson.JSONBoundsError as exc:
        raise PolicyError([PolicyProblem(message=str(exc), file=filename)]) from None
    if ("\\u" in document or _SURROGATE.search(document)) and _holds_surrogate(data):
        # A fuzzer: a recorded document holding the escape "\ud800" (six ASCII characters, so
        # it passes the codec) made evaluate() raise where its canonical form is hashed; it is
        # a version that does not load, as the YAML path refuses it.
        raise PolicyError(
            [
                PolicyProblem(
                    message="a text holds a lone surrogate (an escape such as \\ud800, half of "
                    "a UTF-16 pair), which is not Unicode text",
                    file=filename,
                )
            ]
        )
    return build(
        data, file=filename, marks=Marks(), allow_tests=False, limits=limits, new_document=False
    )


def _holds_surrogate(data: Any) -> bool:
    """Whether a text anywhere in ``data`` (a key or a value) holds a lone surrogate."""
    if isinstance(data, str):
        return _SURROGATE.search(data) is not None
    if isinstance(data, dict):
        return any(_holds_surrogate(k) or _holds_surrogate(v) for k, v in data.items())
    if isinstance(data, list):
        return any(_holds_surrogate(v) for v in data)
    return False
