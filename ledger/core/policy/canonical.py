"""The canonical form of a policy and its content hash.

Lives here: :func:`canonical_text`, the deterministic JSON of a validated policy (sorted keys,
compact separators, no ``tests`` block), and :func:`content_hash`, ``sha256:<hex>`` of its UTF-8
bytes. Two documents that differ only in layout, comments, key order or shorthand have the same
canonical form and hash; it is what ``PolicyVersionProposed.document`` stores.

:func:`document_yaml` turns a recorded canonical form back into a policy file a person edits,
which validates to the same canonical form and hash. It is display only (``policy get`` and
``policy diff``): nothing stores, hashes or signs it, so its layout may change between releases.

May import: the stdlib, yaml, :mod:`ledger.core.facts` (fact declarations) and
:mod:`ledger.core.policy.model`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import yaml

from ledger.core.facts import FactSpec
from ledger.core.policy.model import DefaultDecision, Rule

__all__ = ["canonical_text", "content_hash", "document_yaml"]


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def canonical_text(
    name: str,
    governs: tuple[str, ...],
    owner: str,
    description: str | None,
    facts: Mapping[str, FactSpec],
    rules: Sequence[Rule],
    default: DefaultDecision,
) -> str:
    """The canonical JSON text of a validated policy's parts (``tests`` are not part of it)."""
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


def content_hash(canonical: str) -> str:
    """``sha256:<hex>`` of the canonical text's UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_KEYS: Final = ("policy", "governs", "owner", "description", "facts", "rules", "default")
_RULE_KEYS: Final = ("id", "when", "effect", "constraints", "reason")
_FACT_KEYS: Final = ("type", "optional", "values", "min", "max", "description")


def document_yaml(canonical: str) -> str:
    """The canonical JSON text of a recorded version as a YAML policy file, keys in the order
    people write them (``policy`` first, each rule's ``id``, ``when``, ``effect`` ...). Parsed
    again, it has the same canonical form and content hash: what ``ledger policy get`` prints,
    to start the next version from the one deployed."""
    doc = json.loads(canonical)

    def ordered(mapping: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        first = {k: mapping[k] for k in keys if k in mapping}
        return first | {k: v for k, v in mapping.items() if k not in first}

    out = ordered(doc, _KEYS)
    if isinstance(out.get("rules"), list):
        out["rules"] = [ordered(r, _RULE_KEYS) if isinstance(r, dict) else r for r in out["rules"]]
    if isinstance(out.get("facts"), dict):  # one line per fact, as the examples write them
        out["facts"] = {
            k: _Flow(_plain_bounds(ordered(v, _FACT_KEYS))) if isinstance(v, dict) else v
            for k, v in out["facts"].items()
        }
    if isinstance(out.get("default"), dict):
        out["default"] = _Flow(out["default"])
    text: str = yaml.dump(
        out,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )
    return text


def _plain_bounds(fact: dict[str, Any]) -> dict[str, Any]:
    """A decimal fact's bounds, held as text, written as the numbers they are (a policy
    owner's walkthrough: ``min: '0'``, quotes they never wrote); read again, the exact decimal
    of the same digits, so the same content hash."""
    if fact.get("type") != "decimal":
        return fact
    return {
        k: _Digits(v) if k in ("min", "max") and isinstance(v, str) and _reads_back(v) else v
        for k, v in fact.items()
    }


def _reads_back(text: str) -> bool:
    """Is ``text`` (a decimal bound's canonical text) what the same digits written unquoted
    read back as? Digits with a fraction are read as YAML's float where that float is the
    number written (``1.50`` then reads back ``1.5``), an integer as itself (``-0`` as ``0``);
    text that would not is left quoted."""
    if _DIGITS.fullmatch(text) is None:
        return False
    if "." not in text:
        return str(int(text)) == text
    # Read back as YAML's float by any reader, this one or another (a review: digits no float
    # holds read back the same here, exactly, but not by a reader of floats).
    return repr(float(Decimal(text))) == text


_DIGITS: Final = re.compile(r"-?[0-9]{1,40}(?:\.[0-9]{1,40})?")


class _Digits(str):
    """Text of a decimal's digits, written unquoted (:func:`_plain_bounds`)."""


class _Flow(dict[str, Any]):
    """A mapping written on one line (``{type: int, min: 0}``)."""


_FLOW_ITEMS: Final = 4
"""A list of scalars this long at most is written on one line; a longer one an item a line."""


class _Dumper(yaml.SafeDumper):
    """Short lists of scalars on one line (``governs: [refund.issue]``), :class:`_Flow`
    mappings too; the rules, and longer lists, one item below the other: one entry removed
    from a ``governs`` of 256 is then one line of ``policy diff``, where a wrapped list
    re-flowed every line after it (a policy owner's walkthrough: 126 changed lines). Inside
    a one-line mapping (a fact's ``values``) a list stays on its line, as YAML requires."""


def _sequence(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    flow = len(items) <= _FLOW_ITEMS and not any(isinstance(x, (dict, list)) for x in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_Dumper.add_representer(
    _Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(), flow_style=True)
)
_Dumper.add_representer(list, _sequence)
_Dumper.add_representer(
    _Digits,
    lambda d, v: d.represent_scalar(
        "tag:yaml.org,2002:float" if "." in v else "tag:yaml.org,2002:int", str(v)
    ),
)

NUMBER_LIKE_TEXT: Final = re.compile(
    r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+"
)
"""Text a YAML 1.2 reader takes for a number (``1e3``, ``1.e3``) and the policy loader keeps as
text: written unquoted in a constraint it is refused (``validate``), so it is written quoted
here."""
YAML11_BOOLEAN_WORDS: Final = frozenset({"y", "n", "yes", "no", "on", "off"})
"""Words (in any case) YAML 1.1 read as booleans and the policy loader, as YAML 1.2, reads as
text: refused unquoted in a constraint, so written quoted here (PyYAML quotes only some)."""


AMBIGUOUS_CHARS: Final = 64
"""Longer text is never read as a number or a boolean by any YAML reader worth the name, and
is not matched against :data:`NUMBER_LIKE_TEXT` (a review: 128,000 digits then an ``x`` held
the command processor 88 s in an earlier, backtracking form of it)."""


def ambiguous_text(value: str) -> bool:
    """Would ``value``, written without quotes, be read otherwise by some YAML reader?"""
    if len(value) > AMBIGUOUS_CHARS:
        return False
    return value.lower() in YAML11_BOOLEAN_WORDS or NUMBER_LIKE_TEXT.fullmatch(value) is not None


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "'" if ambiguous_text(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)
