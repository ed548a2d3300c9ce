"""Fact validation and coercion at the boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from ledger.core.facts import FactSpec, validate_facts


def check(spec: FactSpec, value: object) -> tuple[dict[str, object], tuple[str, ...]]:
    return validate_facts({spec.name: spec}, {spec.name: value})


INT = FactSpec(name="n", type="int", minimum=0, maximum=10)
DEC = FactSpec(name="d", type="decimal", minimum=Decimal("0.01"), maximum=Decimal("999.99"))


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0, True), (10, True), (-1, False), (11, False), (True, False), (1.0, False), ("1", False)],
)
def test_int_bounds_and_bool_is_not_int(value: object, ok: bool) -> None:
    _, reasons = check(INT, value)
    assert (not reasons) is ok, reasons


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120.50", Decimal("120.50")),
        (5, Decimal(5)),
        (120.5, Decimal("120.5")),
        (Decimal("0.01"), Decimal("0.01")),
        (" 7.10 ", Decimal("7.10")),
    ],
)
def test_decimal_coercion_is_exact(value: object, expected: Decimal) -> None:
    coerced, reasons = check(DEC, value)
    assert not reasons
    assert coerced["d"] == expected and type(coerced["d"]) is Decimal
    assert str(coerced["d"]) == str(expected)


@pytest.mark.parametrize("value", ["0.00", "1000", "abc", "NaN", "Infinity", True, None, [1]])
def test_decimal_rejections(value: object) -> None:
    _, reasons = check(DEC, value)
    assert reasons and reasons[0].startswith("d: ")


@pytest.mark.parametrize(
    "text",
    ["١٢٣", "1_0", "1__0", "\x1c5", "\u00a05", "\u20075", "\uff15", "0x10", "1.2.3", "+-1", "."],
)
def test_a_decimal_is_refused_in_any_notation_but_ascii_decimal(text: str) -> None:
    # Python's Decimal read "١٢٣" as 123 and "1_0" as 10: the decision held them numbers while an
    # auditor's TRY_CAST of the recorded text gives NULL, or (for "1_0") no reason to trust it.
    _, reasons = check(DEC, text)
    assert reasons == (f"d: expected a decimal (digits 0-9, sign, point, exponent), got {text!r}",)


def test_decimal_texts_in_each_accepted_notation_are_the_numbers_duckdb_reads() -> None:
    import duckdb

    texts = [" 7.10 ", "+5", ".5", "5.", "1e2", "1.5E-1", "\t3\n", "-0", "0.01", "999.99"]
    wide = FactSpec(name="d", type="decimal")
    with duckdb.connect() as db:
        for text in texts:
            coerced, reasons = check(wide, text)
            assert not reasons, (text, reasons)
            (read,) = db.execute("SELECT TRY_CAST(? AS DECIMAL(38, 10))", [text]).fetchone()  # type: ignore[misc]
            assert read == coerced["d"], text


def test_a_long_decimal_text_is_refused_in_linear_time() -> None:
    # The notation check must not backtrack: 65,535 digits and a stray letter (the most text a
    # fact may have) is one pass. The pattern's first form, [0-9]+\.?[0-9]* and so on,
    # backtracked quadratically on this text: 161 s.
    import time

    started = time.perf_counter()
    for _ in range(20):
        _, reasons = check(FactSpec(name="d", type="decimal"), "1" * 65_535 + "x")
        assert reasons
    assert time.perf_counter() - started < 2.0  # quadratic backtracking took minutes


def test_decimal_edges_inclusive() -> None:
    assert not check(DEC, "0.01")[1]
    assert not check(DEC, "999.99")[1]
    assert "above the maximum" in check(DEC, "999.991")[1][0]


def test_enum_membership() -> None:
    spec = FactSpec(name="s", type="enum", values=("good", "bad"))
    assert not check(spec, "good")[1]
    assert "'Good' is not one of: good, bad" in check(spec, "Good")[1][0]
    assert check(spec, 1)[1]


def test_bool_only_bool() -> None:
    spec = FactSpec(name="b", type="bool")
    assert not check(spec, False)[1]
    assert check(spec, 0)[1] and check(spec, "true")[1]


def test_float_accepts_numbers_not_bools() -> None:
    spec = FactSpec(name="f", type="float", maximum=1.0)
    assert check(spec, 1)[0] == {"f": 1.0}
    assert check(spec, True)[1]
    assert check(spec, float("nan"))[1]
    assert "above the maximum" in check(spec, 1.5)[1][0]


def test_timestamp_normalised_to_utc() -> None:
    spec = FactSpec(name="t", type="timestamp")
    coerced, reasons = check(spec, "2025-01-01T02:00:00+02:00")
    assert (
        not reasons
        and coerced["t"] == datetime(2025, 1, 1, tzinfo=UTC)
        and coerced["t"].tzinfo is UTC
    )
    assert (
        check(spec, datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=1))))[0]["t"].tzinfo is UTC
    )
    assert "no time zone" in check(spec, "2025-01-01T00:00:00")[1][0]
    assert check(spec, "yesterday")[1]


def test_a_date_and_an_offset_is_told_its_time_is_missing_not_its_zone() -> None:
    # A README check: '2025-06-01+05:00' (Python reads 05:00, no zone) was told to add an
    # offset it had. Still refused; a decision recorded with the old words still reproduces.
    from ledger.core.wordings import earlier_wording

    spec = FactSpec(name="at", type="timestamp")
    for given in ("2025-06-01+05:00", "2025-06-01-03:30"):
        (reason,) = check(spec, given)[1]
        fixed = given[:10] + "T00:00:00" + given[10:]
        assert reason == (
            f"at: timestamp {given!r} is a date and an offset with no time: write {fixed!r}"
        )
        assert not check(spec, fixed)[1]  # what it says to write is taken
        before = f"at: timestamp {given!r} has no time zone (add Z or an offset)"
        assert earlier_wording(reason, before) is not None
        assert earlier_wording(reason, before.replace("at:", "on:")) is None
    # The review: a date alone was told to add Z, then `2026-12-01Z` was no timestamp at all;
    # a time after a `-` is no offset, and keeps its words.
    (alone,) = check(spec, "2026-12-01")[1]
    assert alone == (
        "at: timestamp '2026-12-01' is a date with no time: write '2026-12-01T00:00:00Z' (or "
        "another time and zone)"
    )
    assert not check(spec, "2026-12-01T00:00:00Z")[1]
    before = "at: timestamp '2026-12-01' has no time zone (add Z or an offset)"
    assert earlier_wording(alone, before) is not None
    (timed,) = check(spec, "2025-06-01-12:30:15.25")[1]
    assert timed.endswith("has no time zone (add Z or an offset)")


def test_list_of_strings() -> None:
    spec = FactSpec(name="l", type="list<string>")
    assert check(spec, ["a", "b"])[0] == {"l": ("a", "b")}
    assert check(spec, ["a", 1])[1]
    assert check(spec, "ab")[1]


def test_missing_unknown_and_optional() -> None:
    specs = {
        "a": FactSpec(name="a", type="int"),
        "b": FactSpec(name="b", type="string", optional=True),
    }
    coerced, reasons = validate_facts(specs, {"a": 1})
    assert coerced == {"a": 1} and not reasons
    _, reasons = validate_facts(specs, {"z": 1})
    assert reasons == ("a: missing required fact", "z: unknown fact (not declared by the policy)")


def test_unknown_facts_cost_one_bounded_reason_whatever_the_sender_sent() -> None:
    # A red team's find: 256 one-letter unknown facts (a 1.4 KB request) made a 14 KB decision
    # and a 12 KB correction, one reason each, written to a partition the sender chose.
    specs = {"a": FactSpec(name="a", type="int")}
    flood = {"a": 1, **{f"f{i:03d}": 1 for i in range(255)}}  # facts_keys: 256 in all
    _, reasons = validate_facts(specs, flood)
    assert reasons == (
        "255 unknown facts (not declared by the policy): f000, f001, f002 and 252 more",
    )
    _, reasons = validate_facts(specs, {"a": 1, "x" * 5_000: 1})
    assert reasons == ("x" * 63 + "…: unknown fact (not declared by the policy)",)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), Decimal("NaN")])
def test_a_context_number_that_compares_false_with_everything_is_refused(value: object) -> None:
    # `context.risk >= 0.8` -> deny let a NaN risk through to an allow: the context is not
    # declared, but a number in it must be finite, as a declared float or decimal fact must.
    from ledger.core.facts import context_problems

    (reason,) = context_problems({"risk": value, "fine": 0.5})
    assert reason.startswith("context.risk: expected a finite ")


def test_a_number_no_exact_decimal_can_hold_is_one_usage_line() -> None:
    # A red team's find: `--facts '{"amount": 1e99999999999999999999999}'` was a 46-line
    # traceback ending in decimal.InvalidOperation.
    from ledger.core.facts import parse_facts_json
    from ledger.errors import UsageError

    with pytest.raises(UsageError, match="--facts holds a number whose exponent"):
        parse_facts_json('{"amount": 1e99999999999999999999999}', what="--facts")


def test_a_list_sent_for_another_type_is_named_a_list_as_sent() -> None:
    # The record carries lists as tuples: "expected a string, got tuple ('a',)" puzzled senders.
    for sent in (["a"], ("a",)):
        _, reasons = check(FactSpec(name="s", type="string"), sent)
        assert reasons == ("s: expected a string, got a list ['a']",)


def test_a_value_of_the_wrong_kind_is_named_in_jsons_words_and_old_wordings_still_reproduce() -> (
    None
):
    # A policy owner's walkthrough: "tenure_days: expected an int, got str '10'" (Python's
    # words). Decisions recorded in the earlier wording are taken for today's by replay.
    from ledger.core.wordings import earlier_wording

    said: dict[object, str] = {
        "10": "n: expected an int, got text '10'",
        None: "n: expected an int, got null",
        True: "n: expected an int, got the boolean true",
        1.5: "n: expected an int, got the number 1.5",
        ("a",): "n: expected an int, got a list ['a']",
    }
    for sent, reason in said.items():
        _, reasons = check(FactSpec(name="n", type="int"), sent)
        assert reasons == (reason,)
    for now, then in (
        (said["10"], "n: expected an int, got str '10'"),
        (said[None], "n: expected an int, got NoneType None"),
        (said[True], "n: expected an int, got bool True"),
    ):
        assert earlier_wording(now, then) is not None, then
    assert earlier_wording(said[True], "n: expected an int, got bool False") is None
    assert earlier_wording(said["10"], "n: expected an int, got str '11'") is None
    # A review: no wording a release never wrote is taken for an earlier one.
    assert earlier_wording(said[True], "n: expected an int, got bool true") is None
    assert earlier_wording(said[None], "n: expected an int, got nothing None") is None
    # A JSON number with a fraction arrives as a Decimal: its digits, then and now.
    _, reasons = check(FactSpec(name="n", type="int"), Decimal("1.5"))
    assert reasons == ("n: expected an int, got the number 1.5",)
    assert earlier_wording(reasons[0], "n: expected an int, got Decimal Decimal('1.5')")
    assert earlier_wording(reasons[0], "n: expected an int, got float Decimal('1.5')") is None
    # An enum's reason says `; got` (a review: those did not reproduce).
    _, reasons = check(FactSpec(name="t", type="enum", values=("gold",)), 5)
    assert reasons == ("t: expected one of: gold; got the whole number 5",)
    assert earlier_wording(reasons[0], "t: expected one of: gold; got int 5")


def test_a_timestamp_fact_finer_than_a_microsecond_is_invalid_not_cut() -> None:
    # A semantics review: `…00.000000999Z` was decided and recorded as `…00.000000Z`.
    spec = FactSpec(name="at", type="timestamp")
    (finer,) = check(spec, "2025-01-01T00:00:00.000000999Z")[1]
    assert "is more precise than a microsecond" in finer
    assert not check(spec, "2025-01-01T00:00:00.000001000Z")[1]
    assert not check(spec, "2025-01-01T00:00:00.123456Z")[1]


def test_a_whole_number_beyond_64_bits_is_said_to_be_so_not_no_int() -> None:
    # A semantics review: Decimal("9223372036854775808") was "expected an int, got the number
    # 9223372036854775808": a whole number, refused for its range, which the reason did not say.
    from ledger.core.wordings import earlier_wording

    spec = FactSpec(name="i", type="int")
    (beyond,) = check(spec, Decimal("9223372036854775808"))[1]
    assert beyond == (
        "i: 9223372036854775808 is outside the 64-bit range of an int fact "
        "(-9223372036854775808 to 9223372036854775807): send a decimal fact for larger numbers"
    )
    assert check(spec, Decimal("9223372036854775807"))[0] == {"i": 2**63 - 1}
    (fraction,) = check(spec, Decimal("1.5"))[1]
    assert fraction == "i: expected an int, got the number 1.5"
    before = "i: expected an int, got the number 9223372036854775808"
    assert earlier_wording(beyond, before) is not None  # recorded decisions still reproduce
    assert earlier_wording(beyond, "i: expected an int, got the number 1") is None
