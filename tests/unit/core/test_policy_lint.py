"""Rules an earlier rule shadows: found, located, and never a rule that can match."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.cli.app import cli
from ledger.core.cel import Meter, alternatives, compile_condition, unguarded_reads
from ledger.core.policy import REASON_DEFAULT, check_policy, parse_policy
from ledger.core.policy.lint import shadowed_rules

HEAD = """policy: p
governs: [p.act]
owner: team
facts:
  a: {type: int, optional: true}
  b: int
  s: {type: enum, values: [x, y]}
"""


def _policy(rules: list[dict[str, Any]]) -> str:
    return HEAD + yaml.safe_dump({"rules": rules, "default": {"effect": "deny"}}, sort_keys=False)


def _rules(*whens: str | None) -> list[dict[str, Any]]:
    return [
        {"id": f"r{n}", "effect": "allow"} | ({} if when is None else {"when": when})
        for n, when in enumerate(whens)
    ]


def _found(*whens: str | None) -> list[tuple[int | None, int | tuple[int, ...]]]:
    found = shadowed_rules(parse_policy(_policy(_rules(*whens))))
    return [(s.index, s.by[0] if len(s.by) == 1 else s.by) for s in found]


def test_terms_are_compared_as_written_layout_and_parentheses_aside() -> None:
    (one,) = alternatives("a>2 && (b < 5 && s == 'x')")
    assert alternatives("s == 'x' && a > 2 && b<5") == (one,) and len(one) == 3
    assert alternatives("a > 2 && true") == alternatives("(a > 2)")
    assert alternatives("true") == (frozenset(),) == alternatives("(true)")
    # An operator is part of the term: a > 2 is not a < 2, nor a >= 2.
    assert len({*alternatives("a > 2"), *alternatives("a < 2"), *alternatives("a >= 2")}) == 3
    # || at the top level (through parentheses) separates alternatives; inside a term it does not.
    assert alternatives("a > 2 || (b < 5 || s == 'x')") == tuple(
        alternatives(t)[0] for t in ("a > 2", "b < 5", "s == 'x'")
    )
    (both,) = alternatives("a > 2 && (b < 5 || s == 'x')")
    assert len(both) == 2
    assert len(alternatives("a > 2 ? true : false")) == 1


def test_a_rule_whose_condition_holds_an_earlier_ones_is_found() -> None:
    assert _found("b < 5", "b < 5 && s == 'x'") == [(1, 0)]
    assert _found("b < 5", "(b<5)") == [(1, 0)]  # the same condition
    assert _found("b < 5 && s == 'x'", "b < 5") == []  # narrow first: both can match
    assert _found("b < 5", "b <= 5", "!(b < 5)", "b < 5 && (a > 2 || s == 'x')") == [(3, 0)]
    # An earlier rule with || matches first whenever one of its alternatives holds.
    assert _found("s == 'x' || b < 5", "b < 5 && a > 2") == [(1, 0)]
    assert _found("s == 'x' && a > 2 || b < 5", "a > 2") == []
    # A later rule with || is shadowed when earlier rules cover each of its alternatives.
    assert _found("b < 5", "s == 'x'", "s == 'x' || b < 5 && a > 2") == [(2, (0, 1))]
    assert _found("b < 5", "s == 'x' || a > 2 || b < 5") == []


def test_a_rule_that_matches_everything_shadows_every_later_rule_and_the_default() -> None:
    assert _found("b < 5", None, "a > 2") == [(2, 1), (None, 1)]
    assert _found("true", "a > 2") == [(1, 0), (None, 0)]
    assert _found("b < 5", "a > 2") == []


def test_each_shadowed_rule_is_named_once_by_the_first_rule_that_shadows_it() -> None:
    assert _found("b < 5", "s == 'x'", "s == 'x' && b < 5") == [(2, 0)]


def test_validate_warns_with_the_line_and_exits_0(tmp_path: Any) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(_policy(_rules("b < 5", "s == 'x' && b < 5", None, "a > 2")))
    policy, warnings = check_policy(path.read_text(), filename=str(path))
    assert policy.content_hash == parse_policy(path.read_text()).content_hash
    lines = path.read_text().splitlines()
    assert [(w.rule, lines[w.line - 1].strip()) for w in warnings if w.line] == [
        ("r1", "when: s == 'x' && b < 5"),
        ("r3", "when: a > 2"),
        (None, "default:"),
    ]
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    one, three, default = (w.line for w in warnings)
    assert said == [
        f"warning  {path}:{one}, rule 'r1': never matches: rule 'r0' before it matches every "
        "request this one would; if it should decide those requests, put it before 'r0', else "
        "remove it",
        f"warning  {path}:{three}, rule 'r3': never matches: rule 'r2' before it matches every "
        "request; if it should decide those requests, put it before 'r2', else remove it",
        f"warning  {path}:{default}: the default never decides: rule 'r2' matches every request (it "
        "has no when, or one that is always true)",
    ]
    as_json = CliRunner().invoke(cli, ["policy", "validate", str(path), "--json"])
    assert as_json.exit_code == 0 and as_json.stderr == ""
    assert [w["rule"] for w in json.loads(as_json.stdout)["warnings"]] == ["r1", "r3", None]


def test_a_rule_shadowed_by_several_names_them_all(tmp_path: Any) -> None:
    text = _policy(_rules("b < 5", "s == 'x'", "s == 'x' || b < 5"))
    _, (warning,) = check_policy(text, filename="p.yaml")
    assert warning.rule == "r2" and warning.message == (
        "never matches: rules 'r0', 'r1' before it match every request this one would; if it "
        "should decide those requests, put it before 'r0', else remove it"
    )
    _, (same,) = check_policy(_policy(_rules("b < 5", "(b<5)")), filename="p.yaml")
    assert (
        same.message
        == "never matches: rule 'r0' before it has the same condition; keep one of the two"
    )


# Terms that can be false, absent (a is optional) or fault (10 / b when b is 0).
TERMS = ["a > 2", "b < 3", "s == 'x'", "10 / b > 2", "a > 2 || b == 0", "true"]
GRID = [
    ({} if a is None else {"a": a}) | {"b": b, "s": s}
    for a, b, s in itertools.product([None, 0, 3], [0, 1, 4], ["x", "y"])
]


ALTERNATIVE = st.lists(st.sampled_from(TERMS), min_size=1, max_size=3)


def _when(alts: list[list[str]] | None) -> str | None:
    return None if alts is None else " || ".join(f"({' && '.join(a)})" for a in alts)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.lists(ALTERNATIVE, min_size=1, max_size=2)),
        min_size=1,
        max_size=5,
    )
)
def test_a_rule_found_shadowed_never_matches_any_request(
    whens: list[list[list[str]] | None],
) -> None:
    policy = parse_policy(_policy(_rules(*map(_when, whens))))
    found = shadowed_rules(policy)
    never = {policy.rules[s.index].id for s in found if s.index is not None}
    default_never = any(s.index is None for s in found)
    for facts in GRID:
        outcome, _ = policy.run(facts, {})
        if outcome.reason_code == "rule_matched":
            assert outcome.rule not in never, (facts, outcome.rule)
        if outcome.reason_code == REASON_DEFAULT:
            assert not default_never, facts


def test_propose_says_the_warning_before_it_sends(tmp_path: Any) -> None:
    # Nothing listens at 127.0.0.1:1: the proposal fails afterwards (no key, or no Kafka), but
    # the owner has read the warning first, one line on stderr.
    path = tmp_path / "p.yaml"
    path.write_text(_policy(_rules(None, "b < 5")))
    result = CliRunner().invoke(
        cli,
        ["policy", "propose", str(path), "--by", "human:alice"],
        env={"LEDGER_BOOTSTRAP": "127.0.0.1:1", "LEDGER_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code != 0
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"warning  {path}:") and "rule 'r1': never matches: rule 'r0'" in first


def _shadowed_before(
    alts: list[tuple[frozenset[str], ...]],
) -> list[tuple[int | None, tuple[int, ...]]]:
    """``shadowed_rules`` before the red team's review (every pair of rules): the reference."""
    found: list[tuple[int | None, tuple[int, ...]]] = []
    for later, mine in enumerate(alts):
        covering: list[int] = []
        for alt in mine:
            by = next((i for i in range(later) if any(a <= alt for a in alts[i])), None)
            if by is None:
                break
            covering.append(by)
        else:
            found.append((later, tuple(sorted(set(covering)))))
    catch_all = next((i for i, a in enumerate(alts) if not all(a)), None)
    return found + ([(None, (catch_all,))] if catch_all is not None else [])


def _linted(monkeypatch: Any, alts: list[tuple[frozenset[str], ...]]) -> list[Any]:
    """``shadowed_rules`` of a policy whose rules have ``alts`` for their alternatives."""
    from types import SimpleNamespace

    from ledger.core.policy import lint

    rules = [SimpleNamespace(when=n) for n in range(len(alts))]
    monkeypatch.setattr(lint, "_alternatives", lambda rule: alts[rule.when])
    found = shadowed_rules(SimpleNamespace(rules=rules))  # type: ignore[arg-type]
    return [(s.index, s.by) for s in found]


def test_shadowed_rules_finds_what_comparing_every_pair_did(monkeypatch: Any) -> None:
    import random

    rng = random.Random(11)
    for _ in range(2_000):
        alts = [
            tuple(
                frozenset(rng.sample("abcde", rng.randrange(4))) for _ in range(rng.randint(1, 3))
            )
            for _ in range(rng.randint(1, 7))
        ]
        assert _linted(monkeypatch, alts) == _shadowed_before(alts), alts


def test_shadowed_rules_compares_about_once_a_rule(monkeypatch: Any) -> None:
    # A red team: 2,300 rules `n == K` took 3 s to lint (every earlier rule was compared with
    # each), more than parsing them. Earlier alternatives are filed by a term now.
    compared = 0

    class Counted(frozenset[str]):
        def __le__(self, other: object) -> bool:
            nonlocal compared
            compared += 1
            return super().__le__(other)  # type: ignore[operator]

    alts = [(Counted({f"n == {k}", "a > 1"}),) for k in range(600)]
    assert _linted(monkeypatch, alts) == []
    assert compared < 1_200, compared  # of ~180,000 pairs


# --------------------------------------------------------------------------- deny rules a request passes by leaving a field out

APPROVAL = """policy: approval
governs: [pay.send]
owner: finance
facts:
  amount: {type: decimal}
  manager_approved: {type: bool, optional: true}
rules:
  - id: needs-approval
    when: amount >= 5000 && manager_approved != true
    effect: deny
  - id: big
    when: amount < 100000
    effect: allow
default: {effect: deny}
"""


def _approval(when: str) -> str:
    """APPROVAL with the deny rule's condition ``when`` (quoted: it may start with !)."""
    return APPROVAL.replace("amount >= 5000 && manager_approved != true", json.dumps(when))


def test_a_deny_rule_reading_an_optional_fact_outside_has_is_a_warning(tmp_path: Any) -> None:
    path = tmp_path / "approval.yaml"
    path.write_text(APPROVAL)
    policy, (warning,) = check_policy(APPROVAL, filename=str(path))
    # What it warns of: without the fact, the rule does not match and the next one allows.
    assert policy.run({"amount": "6000"})[0].rule == "big"
    assert (warning.rule, warning.line) == ("needs-approval", 9)
    assert warning.message == (
        "reads optional fact manager_approved outside has(): a request without it does not "
        "match this deny rule and goes on to the next rule or the default (to deny it, write "
        "(!has(manager_approved) || …) where it is read; to let it go on, "
        "(has(manager_approved) && …))"
    )
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == 0, result.output  # still valid
    assert result.stderr.splitlines() == [
        f"warning  {path}:9, rule 'needs-approval': {warning.message}"
    ]
    fixed = _approval("amount >= 5000 && (!has(manager_approved) || manager_approved != true)")
    fixed_policy, warnings = check_policy(fixed)
    assert warnings == () and fixed_policy.run({"amount": "6000"})[0].rule == "needs-approval"


def test_propose_says_it_too(tmp_path: Any) -> None:
    path = tmp_path / "approval.yaml"
    path.write_text(APPROVAL)
    result = CliRunner().invoke(
        cli,
        ["policy", "propose", str(path), "--by", "human:alice"],
        env={"LEDGER_BOOTSTRAP": "127.0.0.1:1", "LEDGER_HOME": str(tmp_path / "home")},
    )
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"warning  {path}:9, rule 'needs-approval': reads optional fact")


def test_a_deny_rule_reading_a_context_field_outside_has_is_a_warning() -> None:
    text = _approval("context.risk >= 0.8")
    _, (warning,) = check_policy(text)
    assert warning.rule == "needs-approval" and warning.message.startswith(
        "reads context.risk outside has(): a request whose context has no risk does not match "
        "this deny rule"
    )
    assert warning.message.endswith(
        "(!has(context.risk) || …) where it is read; to let it go on, (has(context.risk) && …))"
    )


@pytest.mark.parametrize(
    "when",
    [
        "has(manager_approved) && manager_approved != true",
        "amount >= 5000 && (!has(manager_approved) || manager_approved != true)",
        "manager_approved != true && has(manager_approved)",
        "!has(manager_approved) || !manager_approved",
        "(has(manager_approved) && amount > 1) && !manager_approved",
        "!(has(manager_approved) && manager_approved)",
        "has(manager_approved) ? !manager_approved : amount > 1",
        "!has(manager_approved) ? true : !manager_approved",
        "has(context.risk) && context.risk >= 0.8",
        "!has(context.risk) || context.risk >= 0.8",
        "amount >= 5000",  # reads nothing that may be absent
        "has(manager_approved)",
        "[1, 2].exists(x, x > 1) && !has(manager_approved)",
    ],
)
def test_a_read_guarded_by_has_is_not_warned_about(when: str) -> None:
    text = _approval(when)
    assert check_policy(text)[1] == ()


@pytest.mark.parametrize(
    ("when", "fields"),
    [
        ("has(manager_approved) || manager_approved", ["manager_approved"]),
        ("has(manager_approved) ? true : manager_approved", ["manager_approved"]),
        ("has(context.other) && context.risk > 1", ["context.risk"]),
        (
            "context.roles.exists(r, r == 'admin') || manager_approved",
            ["context.roles", "manager_approved"],
        ),
    ],
)
def test_each_unguarded_field_is_named_once(when: str, fields: list[str]) -> None:
    text = _approval(when)
    warnings = check_policy(text)[1]
    assert [w.message.split(" outside")[0].split()[-1] for w in warnings] == fields


def test_an_allow_rule_reading_an_optional_fact_is_not_warned_about() -> None:
    # Skipped without the fact, it gives nothing: the request gets what later rules give.
    text = APPROVAL.replace("effect: deny\n  - id: big", "effect: allow\n  - id: big")
    assert check_policy(text)[1] == ()


def test_warnings_are_in_reading_order() -> None:
    text = _policy(
        [
            {"id": "r0", "when": "b < 5", "effect": "allow"},
            {"id": "r1", "when": "b < 5", "effect": "allow"},
            {"id": "r2", "when": "a > 2", "effect": "deny"},
        ]
    )
    # r2: after r0, which reads other facts (overtaken), and reading optional a unguarded.
    assert [w.rule for w in check_policy(text)[1]] == ["r1", "r2", "r2"]


CONDITION = st.recursive(
    st.sampled_from(["a > 2", "has(a)", "!has(a)", "b < 3", "s == 'x'", "a == b"]),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda t: f"({t[0]} && {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]} || {t[1]})"),
        inner.map(lambda t: f"!({t})"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(CONDITION)
def test_a_condition_not_warned_about_decides_every_request_without_the_fact(when: str) -> None:
    # No read of `a` outside a guard: whatever the other facts, a request without `a` makes the
    # condition true or false, never "depends on an absent fact" (which skips a deny rule).
    condition = compile_condition(
        when, facts={"a": "int", "b": "int", "s": "string"}, optional={"a"}
    )
    if unguarded_reads(when, {"a"}):
        return
    for b, s in itertools.product([0, 4], ["x", "y"]):
        assert condition.fn({"b": b, "s": s}, {}, Meter(10_000)) in (True, False), (b, s)


def test_a_rule_bounding_a_fact_by_numbers_no_value_meets_is_warned_of() -> None:
    # A policy owner's walkthrough: `amount < 10 && amount > 50` validated without a word.
    from ledger.core.policy.lint import impossible_rules

    policy = parse_policy(
        _policy(
            _rules(
                "b < 10 && b > 50",
                "5 > b && b >= 5",
                "(b < 1 && b > 2) || b == 3",  # one alternative can hold: not warned of
                "b == 3 && b == 4",
                "b >= 10 && b <= 10",  # exactly 10: it can hold
                "b > 2 && s == 'x'",
            )
        )
    )
    found = {policy.rules[i.index].id: i.message() for i in impossible_rules(policy)}
    assert found == {
        "r0": "never matches: no value is both b > 50 and b < 10; did you mean || (either "
        "one), or the other comparison?",
        "r1": "never matches: no value is both b >= 5 and b < 5; did you mean || (either one), "
        "or the other comparison?",
        "r3": "never matches: no value is both b == 4 and b == 3; did you mean || (either one), "
        "or the other comparison?",
    }
    _, warnings = check_policy(_policy(_rules("b < 10 && b > 50")), filename="p.yaml")
    assert [(w.rule, w.line) for w in warnings] == [("r0", 11)]  # the rule's when: line


_COMPARISON = st.builds(
    lambda op, n, flipped: f"{n} {op} b" if flipped else f"b {op} {n}",
    st.sampled_from(["<", "<=", ">", ">=", "=="]),
    st.integers(-3, 3),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_COMPARISON, min_size=1, max_size=3), min_size=1, max_size=2))
def test_a_rule_warned_impossible_holds_for_no_value(alts: list[list[str]]) -> None:
    from ledger.core.policy.lint import impossible_rules

    when = " || ".join("(" + " && ".join(terms) + ")" for terms in alts)
    policy = parse_policy(_policy(_rules(when)))
    if impossible_rules(policy):
        for b in range(-6, 7):
            outcome, _ = policy.run({"b": b}, {})
            assert outcome.rule != "r0", (when, b)


def test_a_rule_outside_its_facts_declared_bounds_is_warned_of() -> None:
    # An auditor's walkthrough: `sent_today < 0` of a fact declared `min: 0` validated without
    # a word, its deny rule dead (a request with -1 is invalid_facts before any rule is read).
    from ledger.core.policy.lint import impossible_rules

    head = (
        "policy: p\ngoverns: [p.act]\nowner: team\nfacts:\n"
        "  sent: {type: int, min: 0}\n  hour: {type: int, min: 0, max: 23}\n"
        "  rate: {type: float, max: 1.5}\n"
    )
    for when, warned in (
        ("sent < 0", "no value is both sent >= 0 (its declared min) and sent < 0"),
        ("hour >= 24", "no value is both hour >= 24 and hour <= 23 (its declared max)"),
        ("rate > 1.5", "no value is both rate > 1.5 and rate <= 1.5 (its declared max)"),
        ("hour < 9 || hour >= 25", None),  # one alternative can hold
        ("sent <= 0", None),  # exactly 0
        ("hour >= 23", None),
    ):
        policy = parse_policy(
            head + yaml.safe_dump({"rules": [{"id": "r", "effect": "deny", "when": when}],
                                   "default": {"effect": "allow"}}, sort_keys=False)
        )  # fmt: skip
        found = [i.message() for i in impossible_rules(policy)]
        if warned is None:
            assert found == [], when
        else:
            assert len(found) == 1 and warned in found[0], (when, found)
            assert "refused before any rule is read; check the number, or the fact's" in found[0]


def test_bounds_are_compared_as_the_runtime_compares_them_with_the_fact() -> None:
    # A review: a float fact (compared as binary floats) and an int fact against a fraction
    # were warned "never matches", and matched.
    from ledger.core.policy.lint import impossible_rules

    head = "policy: p\ngoverns: [p.act]\nowner: team\nfacts:\n  d: float\n  n: int\n"
    for when, warned in (
        ("d >= 0.10000000000000001 && d <= 0.1", False),  # both the float 0.1
        ("n >= 1.5 && n <= 1", False),  # an int against a fraction: not read
        ("d > 2.5 && d < 1.5", True),
        ("n > 1 && n < 1", True),
    ):
        policy = parse_policy(
            head + yaml.safe_dump({"rules": [{"id": "r", "effect": "allow", "when": when}],
                                   "default": {"effect": "deny"}}, sort_keys=False)
        )  # fmt: skip
        assert bool(impossible_rules(policy)) is warned, when
        if not warned:
            facts = {"d": 0.1, "n": 1} if "d" in when else {"d": 0.0, "n": 1}
            matched = policy.run(facts, {})[0].rule == "r"
            assert matched or "n >= 1.5" in when, when


def test_a_deny_rule_after_an_allow_rule_reading_other_facts_is_warned_of() -> None:
    # A policy owner's walkthrough: `small` (allow) put before `blocked-region` (deny) allowed
    # small refunds to the sanctioned region, and `validate` said `ok`.
    from ledger.core.policy.lint import overtaken_denials

    def warned(rules: list[dict[str, Any]]) -> dict[str, str]:
        policy = parse_policy(_policy(rules))
        return {policy.rules[o.index].id: o.message(policy) for o in overtaken_denials(policy)}

    small = {"id": "small", "effect": "allow", "when": "b <= 100"}
    region = {"id": "region", "effect": "deny", "when": 's == "x"'}
    assert warned([small, region]) == {
        "region": "a request that also meets allow rule 'small' before it (b <= 100) is allowed "
        'there, whatever this rule says (s == "x"): they read different facts, so such '
        "requests exist; if this rule must deny them, put it before 'small'"
    }
    assert warned([region, small]) == {}  # the deny first: as meant
    large = {"id": "large", "effect": "deny", "when": "b > 1000"}
    assert warned([small, large]) == {}  # a fact in common: not compared (no false alarm)
    # A deny rule the allow rule shadows entirely is said once, as never matching.
    same = {"id": "same", "effect": "deny", "when": 'b <= 100 && s == "x"'}
    assert warned([small, same]) == {}
    # An allow rule that never matches overtakes nothing (a review: "such requests exist").
    never = {"id": "never", "effect": "allow", "when": "b < 10 && b > 50"}
    assert warned([never, region]) == {}
    _, warnings = check_policy(_policy([small, region]))
    assert [(w.rule, w.message.split(":")[0]) for w in warnings] == [
        (
            "region",
            "a request that also meets allow rule 'small' before it (b <= 100) is allowed there, whatever this rule says (s == \"x\")",
        )
    ]
