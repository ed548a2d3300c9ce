"""The canonical form of a policy and its content hash.

Lives here: :func:`canonical_text`, the deterministic JSON of a validated policy (sorted keys,
compact separators, no ``tests`` block), and :func:`content_hash`, ``sha256:<hex>`` of its UTF-8
bytes. Two documents that differ only in layout, comments, key order or shorthand have the same
canonical form and hash; it is what ``PolicyVersionProposed.document`` stores.

May import: the stdlib, :mod:`ledger.core.facts` (fact declarations) and
:mod:`ledger.core.policy.model`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ledger.core.facts import FactSpec
from ledger.core.policy.model import DefaultDecision, Rule

__all__ = ["canonical_text", "content_hash"]


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
