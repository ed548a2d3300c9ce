"""One JSON form per event: stable text that hashes, exports and --json output share."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ledger.core.events import DecisionRecorded, Determination, ShadowResult, Stage
from ledger.core.jsonform import canonical_json, format_timestamp, to_json_value

T = datetime(2026, 11, 26, 16, 48, 26, tzinfo=UTC)


def _decision(**changes: object) -> DecisionRecorded:
    fields: dict[str, object] = {
        "event_id": "d-1",
        "occurred_at": T,
        "actor": "service:evaluator",
        "request_id": "r-1",
        "requested_at": T,
        "action": "refund.issue",
        "principal": "agent:bot",
        "resource": "account:42",
        "determination": Determination.ALLOW,
        "facts": {"amount": Decimal("120.50"), "tags": ("a", "b"), "ok": True, "n": 3},
        "shadow_results": (
            ShadowResult(
                policy="refund", version=2, stage=Stage.SHADOW, determination=Determination.DENY
            ),
        ),
    }
    fields.update(changes)
    return DecisionRecorded(**fields)  # type: ignore[arg-type]


def test_values_have_one_documented_form() -> None:
    data = to_json_value(_decision())
    assert data["occurred_at"] == "2026-11-26T16:48:26.000000Z"
    assert data["determination"] == "allow"
    assert data["facts"] == {"amount": "120.50", "tags": ["a", "b"], "ok": True, "n": 3}
    assert data["shadow_results"][0]["stage"] == "shadow"
    assert data["prev_hash"] is None


def test_instants_are_rendered_in_utc_whatever_their_offset() -> None:
    paris = T.astimezone(timezone(timedelta(hours=1)))
    assert format_timestamp(paris) == format_timestamp(T) == "2026-11-26T16:48:26.000000Z"


def test_canonical_bytes_sort_keys_and_match_the_documented_python_recipe() -> None:
    d = _decision(facts={"é": "ü", "b": 1.5, "a": float("inf")})
    text = canonical_json(d)
    recipe = json.dumps(
        to_json_value(d), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert text == recipe
    assert b'"a":"Infinity","b":1.5' in text
    assert '"é":"ü"'.encode() in text


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(), st.booleans())))
def test_any_change_of_a_value_changes_the_bytes(facts: dict[str, object]) -> None:
    base = canonical_json(_decision(facts=facts))
    assert canonical_json(_decision(facts={**facts, "\0extra": 1})) != base
    assert canonical_json(_decision(facts=facts)) == base  # deterministic


class _PaddingYears(datetime):
    """A datetime whose strftime pads %Y to four digits, as macOS, Windows and CPython since
    gh-120713 do (glibc does not)."""

    def strftime(self, fmt: str) -> str:
        return super().strftime(fmt.replace("%Y", f"{self.year:04d}"))


def test_an_instant_has_one_text_on_every_platform() -> None:
    # A red team: a request dated year 1 hashed as `1-01-01T…` on Linux verified intact there,
    # and as tampered where strftime pads the year. The text no longer asks the platform.
    from ledger.core.chain import canonical_text

    for year, text in [(1, "1-01-01"), (999, "999-01-01"), (1000, "1000-01-01")]:
        plain = datetime(year, 1, 1, tzinfo=UTC)
        padding = _PaddingYears(year, 1, 1, tzinfo=UTC)
        assert format_timestamp(plain) == format_timestamp(padding) == f"{text}T00:00:00.000000Z"
        assert canonical_text(_decision(requested_at=padding)) == canonical_text(
            _decision(requested_at=plain)
        )
    assert format_timestamp(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == (
        "9999-12-31T23:59:59.999999Z"
    )


def test_a_quoted_text_counts_its_own_characters_not_its_quotes() -> None:
    # A README check: `decisions --request` of a 129-character id said "(131 characters)".
    from ledger.core.text import clipped, quoted

    long_id = "r" * 129
    assert quoted(long_id, 80) == f"'{'r' * 80}'… (129 characters)"
    assert clipped(repr(long_id), 80).endswith("(131 characters)")  # what it said before
    assert quoted("short", 80) == "'short'"
    assert quoted("a'b", 80) == repr("a'b")
    # Escapes count toward the limit: 80 control characters are not quoted as 320.
    nul, twenty_shown = "\x00", "'" + "\\x00" * 20 + "'"
    assert quoted(nul * 80, 80) == f"{twenty_shown}… (80 characters)"
    assert quoted(nul * 20, 80) == repr(nul * 20) == twenty_shown
    assert quoted(nul * 21, 80) == f"{twenty_shown}… (21 characters)"
