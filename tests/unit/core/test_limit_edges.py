"""Each limit at its edge: the value at the limit is accepted, one past it refused.

A maintainability review moved each of these refusals one step later (N+1 accepted, N+2
refused) and no test failed: they were tested at the limit and far beyond it only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.core.facts import FactSpec, build_checker, parse_facts_json
from ledger.core.lifecycle.rejections import REJECTION_CHARS, _reject
from ledger.core.limits import DEFAULT_LIMITS
from ledger.core.policy import parse_policy
from ledger.errors import PolicyError, UsageError

REFUND = (Path(__file__).resolve().parents[3] / "examples" / "policies" / "refund.yaml").read_text()


def _nested(depth: int) -> str:
    # Objects in objects (a list may hold text only, refused before its depth would matter).
    return '{"a": ' + '{"b": ' * (depth - 1) + "1" + "}" * (depth - 1) + "}"


def test_facts_json_nesting_at_its_limit_and_one_past_it() -> None:
    depth = DEFAULT_LIMITS.facts_json_depth
    assert parse_facts_json(_nested(depth), what="--facts")  # the object itself is a level
    with pytest.raises(UsageError, match=f"more than {depth} levels deep"):
        parse_facts_json(_nested(depth + 1), what="--facts")


def test_facts_keys_at_their_limit_and_one_past_it() -> None:
    most = DEFAULT_LIMITS.facts_keys
    check = build_checker(
        {f"f{i}": FactSpec(name=f"f{i}", type="int", optional=True) for i in range(most)}
    )
    _, reasons = check({f"f{i}": 1 for i in range(most)})
    assert reasons == ()
    _, reasons = check({f"f{i}": 1 for i in range(most + 1)})
    assert reasons and "limit facts_keys" in reasons[0]


def test_governs_entries_at_their_limit_and_one_past_it() -> None:
    most = DEFAULT_LIMITS.policy_governs

    def with_governs(n: int) -> str:
        entries = ", ".join(f"refund.a{i}" for i in range(n))
        return REFUND.replace("governs: [refund.issue]", f"governs: [{entries}]", 1)

    assert len(parse_policy(with_governs(most), filename="p.yaml").governs) == most
    with pytest.raises(PolicyError, match="limit policy_governs"):
        parse_policy(with_governs(most + 1), filename="p.yaml")


def test_a_rejections_message_is_cut_just_past_its_limit() -> None:
    assert _reject("too_large", "m" * REJECTION_CHARS).message == "m" * REJECTION_CHARS
    cut = _reject("too_large", "m" * (REJECTION_CHARS + 1)).message
    assert (
        cut.startswith("m" * REJECTION_CHARS + "…") and f"({REJECTION_CHARS + 1} characters)" in cut
    )
