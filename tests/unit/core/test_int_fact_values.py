"""An ``int`` fact's value is one rule in the core (:func:`~ledger.core.facts.int_value`).

A red team: ``policy eval --facts '{"tenure_days": 1e18}'`` was refused "expected an int, got
Decimal Decimal('1E+18')": the CLI reads JSON numbers written with an exponent exactly, as a
Decimal. A whole number written without a fraction, within 64 bits, is the int it is, whether
it comes from the CLI, the SDK (a ``Decimal``) or a record the evaluator decodes; the answer
records the int, and a client takes that answer as its request's.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from click.testing import CliRunner

from ledger.cli.app import cli
from ledger.core.facts import FactSpec, facts_recorded_as, validate_facts

REFUND = Path(__file__).resolve().parents[3] / "examples" / "policies" / "refund.yaml"


def test_a_whole_decimal_within_64_bits_is_an_int_facts_value() -> None:
    spec = {"n": FactSpec(name="n", type="int", minimum=0)}
    for sent, taken in [
        (Decimal("1E+18"), 10**18),
        (Decimal("15E+2"), 1_500),
        (Decimal("9223372036854775807"), 2**63 - 1),
        (7, 7),
    ]:
        assert validate_facts(spec, {"n": sent}) == ({"n": taken}, ()), sent
        assert type(validate_facts(spec, {"n": sent})[0]["n"]) is int
    for refused in (
        Decimal("100.0"),  # written with a fraction
        Decimal("1.5"),
        Decimal("1E+19"),  # beyond 64 bits
        Decimal("1e+10000000"),  # refused before int() (which would run for minutes)
        1e18,  # a float's digits are not what was written
        True,
    ):
        _, reasons = validate_facts(spec, {"n": refused})
        beyond = refused == Decimal("1E+19")  # a whole number: its range is said
        said = "outside the 64-bit range" if beyond else "expected an int"
        assert reasons and said in reasons[0], refused
    # Bounds hold for the converted value as for an int.
    assert validate_facts(spec, {"n": Decimal("-1E+3")})[1] == ("n: -1000 is below the minimum 0",)
    lowest = validate_facts(
        {"n": FactSpec(name="n", type="int")}, {"n": Decimal("-9223372036854775808")}
    )
    assert lowest == ({"n": -(2**63)}, ())


def test_the_cli_takes_1e18_for_an_int_fact() -> None:
    facts = '{"tenure_days": 1e18, "amount": "10", "prior_refunds_12m": 0, "standing": "good"}'
    result = CliRunner().invoke(cli, ["policy", "eval", str(REFUND), "--facts", facts, "--json"])
    assert result.exit_code == 0, result.stderr
    assert '"determination": "allow"' in result.stdout and "expected an int" not in result.stdout


def test_a_decision_recording_the_int_answers_the_request_that_sent_the_decimal() -> None:
    assert facts_recorded_as({"n": Decimal("1E+18")}, {"n": 10**18})
    assert not facts_recorded_as({"n": Decimal("1E+18")}, {"n": 10**18 + 1})
    assert not facts_recorded_as({"n": 1e18}, {"n": 10**18})  # never taken as that int
    assert not facts_recorded_as({"n": Decimal("100.0")}, {"n": 100})


def test_the_sdk_sending_the_decimal_gets_the_decision_on_the_int() -> None:
    from ledger.client import ClientConfig, LedgerClient
    from ledger.core.events import Determination
    from ledger.testing import LocalLedger

    ledger = LocalLedger()
    ledger.deploy_file(REFUND)
    ledger.grant("agent:bot", "refund.*", "account:*")
    client = LedgerClient(ClientConfig(actor="agent:bot"), transport=ledger)
    facts = {
        "tenure_days": Decimal("1E+18"),
        "amount": Decimal("10"),
        "prior_refunds_12m": 0,
        "standing": "good",
    }
    made = client.evaluate(
        action="refund.issue", principal="agent:bot", resource="account:1", facts=facts
    )
    assert made.determination is Determination.ALLOW, made.reasons
    assert made.facts["tenure_days"] == 10**18
