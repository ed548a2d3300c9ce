"""Facts are bounded: as JSON text from the CLI, and as values a policy checks (issue 8, item 5).

20,000 nested ``[`` in ``--facts`` gave a 43-line ``RecursionError`` traceback; a key given twice
was silently last-wins. Facts over ``facts_keys``, ``fact_string_chars`` or ``fact_list_items``
were accepted whatever their size.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from ledger.cli.app import cli
from ledger.core.events import Determination
from ledger.core.facts import (
    FactSpec,
    context_problems,
    decimal_digits,
    parse_facts_json,
    validate_facts,
)
from ledger.core.policy import parse_policy
from ledger.errors import UsageError

REFUND = Path(__file__).resolve().parents[3] / "examples" / "policies" / "refund.yaml"
GOOD = {"tenure_days": 120, "amount": "120.50", "prior_refunds_12m": 0, "standing": "good"}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# ----------------------------------------------------------------------------- facts as JSON


def test_deep_nesting_is_one_line_not_a_recursion_error() -> None:
    with pytest.raises(UsageError) as info:
        parse_facts_json("[" * 20_000, what="--facts")
    assert str(info.value) == (
        "--facts nests arrays/objects more than 8 levels deep; at most 8 are accepted"
    )
    # Through the CLI: one line on stderr, usage exit code, no traceback.
    code, _, err = run("policy", "eval", str(REFUND), "--facts", "[" * 20_000)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "--facts nests arrays/objects more than 8 levels deep" in err
    # Brackets inside strings are text, not nesting.
    assert parse_facts_json(json.dumps({"note": "[" * 100}), what="--facts") == {"note": "[" * 100}


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(UsageError, match="has the key 'amount' more than once"):
        parse_facts_json('{"amount": "1", "amount": "900"}', what="--facts")
    code, _, err = run(
        "policy",
        "eval",
        str(REFUND),
        "--context",
        '{"a": {"b": 1, "b": 2}}',
        "--facts",
        json.dumps(GOOD),
    )
    assert code == 2 and "--context has the key 'b' more than once" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"x": NaN}', "--facts is not valid JSON: NaN is not a JSON number"),
        ("[1, 2]", "--facts must be a JSON object"),
        ("not json", "--facts is not valid JSON"),
        ('{"x": "' + "y" * 300_000 + '"}', "--facts is 300,009 bytes or more; at most 262,144"),
    ],
)
def test_other_refusals_are_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_facts_json(text, what="--facts")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_numbers_stay_exact_and_lists_become_tuples() -> None:
    facts = parse_facts_json('{"amount": 120.50, "n": 3, "tags": ["a", "b"]}', what="--facts")
    assert facts == {"amount": Decimal("120.50"), "n": 3, "tags": ("a", "b")}
    assert str(facts["amount"]) == "120.50"


# ----------------------------------------------------------------------------- facts as values


def test_too_many_facts_is_one_invalid_facts_reason() -> None:
    policy = parse_policy(REFUND.read_text())
    flood = GOOD | {f"extra{i}": 1 for i in range(300)}
    outcome, _ = policy.run(flood)
    assert outcome.determination is Determination.ERROR
    assert outcome.reason_code == "invalid_facts"
    assert outcome.reasons == ("304 facts; a request may carry at most 256 (limit facts_keys)",)


def test_too_long_text_and_too_long_lists_are_invalid_facts() -> None:
    specs = {
        "note": FactSpec(name="note", type="string"),
        "tags": FactSpec(name="tags", type="list<string>"),
        "amount": FactSpec(name="amount", type="decimal"),
        "at": FactSpec(name="at", type="timestamp"),
    }
    long = "x" * (64 * 1024 + 1)
    _, reasons = validate_facts(
        specs, {"note": long, "tags": ["t"] * 1001, "amount": "1" * 70_000, "at": long}
    )
    assert reasons == (  # by name, whatever the order declared (as a deployed version's)
        "amount: text of 70,000 characters; at most 65,536 are accepted (limit fact_string_chars)",
        "at: text of 65,537 characters; at most 65,536 are accepted (limit fact_string_chars)",
        "note: text of 65,537 characters; at most 65,536 are accepted (limit fact_string_chars)",
        "tags: list of 1,001 items; at most 1,000 are accepted (limit fact_list_items)",
    )
    _, reasons = validate_facts(
        specs, {"note": "x", "tags": ["ok", long], "amount": "1", "at": "2025-01-01T00:00:00Z"}
    )
    assert reasons == (
        "tags: text of 65,537 characters; at most 65,536 are accepted (limit fact_string_chars)",
    )
    # At the bounds: accepted.
    coerced, reasons = validate_facts(
        specs,
        {"note": long[:-1], "tags": ["t"] * 1000, "amount": "1", "at": "2025-01-01T00:00:00Z"},
    )
    assert reasons == () and len(coerced["tags"]) == 1000  # type: ignore[arg-type]


def test_decimals_are_held_to_their_significant_digits() -> None:
    # Comparing two long decimals costs time with their digits, which the evaluation budget does
    # not count: a decimal fact may have at most fact_decimal_digits significant digits, however
    # it is sent. Zeros before the first significant digit, and exponents, are not digits.
    specs = {"amount": FactSpec(name="amount", type="decimal")}
    over = "a decimal of 1,001 significant digits; at most 1,000 are accepted "
    for sent in ("9" * 1_001, Decimal("9" * 1_001), int("9" * 1_001), "0.00" + "1" * 1_001):
        _, reasons = validate_facts(specs, {"amount": sent})
        assert reasons == (f"amount: {over}(limit fact_decimal_digits)",), type(sent)
    for sent in ("9" * 1_000, "0." + "0" * 5_000 + "1" * 1_000, "1E+99999", "-" + "1" * 1_000):
        coerced, reasons = validate_facts(specs, {"amount": sent})
        assert reasons == () and coerced["amount"] == Decimal(sent)
    assert context_problems({"cap": Decimal("1" * 1_001), "ok": Decimal("1" * 1_000)}) == (
        f"context.cap: {over}(limit fact_decimal_digits)",
    )


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_significant_digits_are_those_of_the_coefficient(d: Decimal) -> None:
    assert decimal_digits(d) == len(d.as_tuple().digits)


def test_the_context_is_held_to_the_same_bounds() -> None:
    assert context_problems({"channel": "web", "ids": ("a", "b")}) == ()
    assert context_problems({"ids": ("a",) * 1001}) == (
        "context.ids: list of 1,001 items; at most 1,000 are accepted (limit fact_list_items)",
    )
    policy = parse_policy(REFUND.read_text())
    outcome, _ = policy.run(GOOD, {"note": "x" * 70_000})
    assert outcome.reason_code == "invalid_facts"
    assert outcome.reasons == (
        "context.note: text of 70,000 characters; at most 65,536 are accepted (limit fact_string_chars)",
    )


def test_oversized_facts_through_policy_eval_are_an_error_decision() -> None:
    code, out, _ = run(
        "policy",
        "eval",
        str(REFUND),
        "--json",
        "--facts",
        json.dumps(GOOD | {"standing": "g" * 70_000}),
    )
    doc = json.loads(out)
    assert code == 0 and (doc["determination"], doc["reason_code"]) == ("error", "invalid_facts")
    assert "limit fact_string_chars" in doc["reasons"][0]


def test_an_integer_too_long_to_convert_is_one_line_with_its_position() -> None:
    # It was "--facts is not valid JSON: Exceeds the limit (4300 digits) for integer string
    # conversion ... use sys.set_int_max_str_digits() to increase the limit".
    text = '{"amount": "1",\n "tenure_days": -' + "1" * 5_000 + "}"
    with pytest.raises(UsageError) as info:
        parse_facts_json(text, what="--facts")
    assert str(info.value) == (
        "--facts has an integer of 5,000 digits (-1111111111111111111…) at line 2, column 17; "
        "at most 4,300 digits are accepted in a number: shorten it"
    )
    assert parse_facts_json('{"n": ' + "9" * 4_300 + "}", what="--facts")["n"] == int("9" * 4_300)


def test_a_long_integer_through_policy_eval_is_one_line() -> None:
    facts = json.dumps(GOOD)[:-1] + ', "extra": ' + "1" * 5_000 + "}"
    code, stdout, stderr = run("policy", "eval", str(REFUND), "--facts", facts)
    assert code != 0 and not stdout
    assert stderr.startswith("error: --facts has an integer of 5,000 digits")
    assert len(stderr.strip().splitlines()) == 1 and "set_int_max_str_digits" not in stderr


@pytest.mark.parametrize(
    "items", ["[1, 2]", '["a", 1.5]', "[true]", '[["a"]]', '[{"a": "b"}]', "[null]"]
)
def test_a_list_of_other_values_than_text_is_refused_as_no_request_could_carry_it(
    items: str,
) -> None:
    # A red team: `policy eval --context '{"l": [1, 2]}'` answered what the ledger never can:
    # a request's lists hold text only (the SDK and Kafka's records refuse the others).
    from ledger.core.facts import parse_facts_json

    with pytest.raises(
        UsageError, match=r"--context: 'l' is a list holding other values than text"
    ):
        parse_facts_json(f'{{"l": {items}}}', what="--context")
    assert parse_facts_json('{"l": ["1", "2"]}', what="--context") == {"l": ("1", "2")}
