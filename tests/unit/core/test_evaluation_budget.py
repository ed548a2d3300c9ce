"""No single request can hold an evaluator (issue 8, item 2; STYLE §16).

``s.matches("(a+)+$")`` used Python's backtracking ``re``: 22 s at 28 characters, 1.8x per
character more. Conditions now use RE2 (linear time, CEL's specified dialect), and every
operation whose work grows with the request's data charges a per-request budget
(``Limits.evaluation_cost``); spending it is an ``error`` decision with its own reason code.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from bounded import run_bounded  # beside this file (pytest puts its dir on sys.path)

from ledger.core import EMPTY_STATE, REASON_CODES, decide, evaluate, evaluate_batch, fold
from ledger.core.authority import authorize, authorize_request
from ledger.core.cel import BudgetExceeded, ConditionFault, Meter, compile_condition
from ledger.core.evaluate import request_problem, unanswerable
from ledger.core.events import (
    BatchEvaluationRequested,
    BatchItem,
    Determination,
    EvaluationRequested,
    IssueGrant,
)
from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.core.policy import parse_policy
from ledger.errors import PolicyError

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def policy_with(when: str, facts: str = "s: string", **kw: object) -> str:
    return (
        f"policy: p\ngoverns: [p.act]\nowner: o\nfacts: {{{facts}}}\n"
        f"rules:\n  - id: r\n    when: '{when}'\n    effect: deny\ndefault: {{effect: allow}}\n"
    )


# ----------------------------------------------------------------------------- RE2


def test_catastrophic_pattern_runs_in_linear_time_with_re2_semantics() -> None:
    # In a child with a timeout: with Python's re this never finished (2^10000 paths).
    result = run_bounded(
        f"""
        from ledger.core.policy import parse_policy
        policy = parse_policy({policy_with('s.matches("(a+)+$")')!r})
        started = time.perf_counter()
        hostile, _ = policy.run({{"s": "a" * 10_000 + "!"}})
        seconds = time.perf_counter() - started
        matching, _ = policy.run({{"s": "a" * 10_000}})
        print(json.dumps({{"seconds": seconds, "hostile": hostile.determination.value,
                          "matching": matching.determination.value}}))
        """,
        timeout=30,
        memory=1 << 30,
    )
    assert result["hostile"] == "allow"  # no match: the default decides
    assert result["matching"] == "deny"
    assert result["seconds"] < 2  # a generous bound; it takes microseconds


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("abc", "xxabcxx", True),  # CEL matches is an unanchored search
        ("^abc$", "xxabcxx", False),
        ("^.$", "é", True),  # UTF-8: one character, not two bytes
        (r"\\d", "٣", False),  # RE2's \d is ASCII, unlike Python's
        ("(?i)ABC", "abc", True),
    ],
)
def test_matches_has_re2_semantics(pattern: str, text: str, expected: bool) -> None:
    condition = compile_condition(f's.matches("{pattern}")', facts={"s": "string"})
    assert condition.evaluate({"s": text}, {}) is expected


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        (r"(a)\\1", r"invalid escape sequence: \1"),  # backreference
        ("(?=a)b", "invalid perl operator: (?="),  # lookahead
        ("(?<!a)b", "invalid perl operator: (?<"),  # lookbehind
        (r"a\\Z", r"invalid escape sequence: \Z"),
    ],
)
def test_patterns_re2_cannot_compile_are_rejected_with_rule_and_position(
    pattern: str, detail: str
) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(policy_with(f's.size() > 1 && s.matches("{pattern}")'), filename="p.yaml")
    (problem,) = info.value.problems
    assert (problem.rule, problem.field, problem.line) == ("r", "when", 7)
    assert "invalid regular expression for RE2" in problem.message and detail in problem.message
    assert "(at column 27 of the condition)" in problem.message  # the pattern's position


def test_pattern_length_is_bounded() -> None:
    long = "a" * (DEFAULT_LIMITS.regex_chars + 1)
    with pytest.raises(PolicyError, match="at most 1,024 are accepted \\(limit regex_chars\\)"):
        compile_condition(f's.matches("{long}")', facts={"s": "string"})
    assert compile_condition(f's.matches("{long[:-1]}")', facts={"s": "string"}).metered


def test_condition_length_is_bounded() -> None:
    text = " || ".join(["s == 'x'"] * 500)
    with pytest.raises(PolicyError, match="limit condition_chars"):
        compile_condition(text, facts={"s": "string"})


def policy_of_conditions(rules: int, chars: int) -> str:
    """A policy of ``rules`` rules, each with a condition of about ``chars`` characters."""
    when = "s in [" + ", ".join(['"abcd"'] * ((chars - 6) // 8)) + "]"
    body = "".join(f"  - id: r{i}\n    when: '{when}'\n    effect: deny\n" for i in range(rules))
    return (
        "policy: p\ngoverns: [p.act]\nowner: o\nfacts: {s: string}\n"
        f"rules:\n{body}default: {{effect: allow}}\n"
    )


def test_a_policys_conditions_together_are_bounded_before_any_compiles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Five conditions of ~4,000 characters: each within condition_chars, 20,000 together. Each
    # compiles in ~0.1-0.25 s; without the limit, a 256 KiB document of them took seconds.
    import ledger.core.policy.validate as validate

    def must_not_compile(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a condition was compiled past policy_condition_chars")

    document = policy_of_conditions(5, 4_000)
    monkeypatch.setattr(validate, "compile_condition", must_not_compile)
    with pytest.raises(PolicyError) as info:
        parse_policy(document)
    (problem,) = info.value.problems
    assert "conditions total 19,985 characters; at most 16,384" in problem.message
    assert "limit policy_condition_chars" in problem.message and problem.line == 5
    monkeypatch.undo()
    assert len(parse_policy(policy_of_conditions(4, 4_000)).rules) == 4  # 15,988: accepted


def test_a_stored_version_over_a_later_limit_still_loads() -> None:
    # The limit is enforced where documents are proposed; a version the ledger accepted before
    # it existed must replay as the policy it was, not as an error.
    from ledger.core.state import load_document

    relaxed = replace(DEFAULT_LIMITS, policy_condition_chars=DEFAULT_LIMITS.policy_document_bytes)
    stored = parse_policy(policy_of_conditions(5, 4_000), limits=relaxed).canonical
    with pytest.raises(PolicyError, match="policy_condition_chars"):
        parse_policy(stored)
    loaded = load_document(stored)
    assert loaded is not None and len(loaded.rules) == 5


def test_a_proposal_over_the_policy_condition_limit_is_an_invalid_policy() -> None:
    from ledger.core import Rejection
    from ledger.core.events import ProposePolicyVersion

    command = ProposePolicyVersion(
        event_id="c1",
        occurred_at=T0,
        actor="human:admin",
        document=policy_of_conditions(5, 4_000),
        policy="p",
    )
    ids = iter(f"e{i}" for i in range(10))
    outcome = decide(EMPTY_STATE, command, now=T0, new_id=ids.__next__, admins={"human:admin"})
    assert isinstance(outcome, Rejection) and outcome.code == "invalid_policy"
    assert "limit policy_condition_chars" in outcome.message


def governing(n: int) -> str:
    globs = ", ".join(f"a{i}.*" for i in range(n))
    return f"policy: p\ngoverns: [{globs}]\nowner: o\ndefault: {{effect: allow}}\n"


def test_a_policys_governs_list_is_bounded_before_its_entries_are_checked() -> None:
    # 36,000 short globs (180 KB of YAML, 252 KB stored: within policy_document_bytes) took
    # 9.4 s to validate (a list scanned per entry), 19 s in the command processor, and each
    # governance change after it cost every evaluator ~1 s re-compiling the globs.
    with pytest.raises(PolicyError) as info:
        parse_policy(governing(25_000))
    # The one problem is the limit's: the entries were never checked one by one (no timing
    # here: under load, reading the YAML alone took longer than any fair bound).
    (problem,) = info.value.problems
    assert problem.message == (
        "governs lists 25,000 actions; at most 256 are accepted in one policy (limit "
        "policy_governs): use globs (refund.*), or govern some of the actions with a second "
        "policy"
    )
    assert len(parse_policy(governing(256)).governs) == 256
    # Repeats count towards the limit but are kept once.
    assert parse_policy(governing(1).replace("[a0.*]", "[a0.*, a0.*, b]")).governs == (
        "a0.*",
        "b",
    )
    # A version recorded before the limit existed still loads.
    from ledger.core.state import load_document

    relaxed = replace(DEFAULT_LIMITS, policy_governs=1_000)
    stored = parse_policy(governing(300), limits=relaxed).canonical
    loaded = load_document(stored)
    assert loaded is not None and len(loaded.governs) == 300


def test_a_governs_entry_is_no_longer_than_a_requests_action() -> None:
    # A review: 256 entries of ~900 characters (within policy_document_bytes) stalled a
    # promotion's notes for a minute; no request names an action over request_name_chars.
    long = "a" * 1_025
    with pytest.raises(PolicyError) as info:
        parse_policy(governing(1).replace("[a0.*]", f"[ok, {long}]"))
    (problem,) = info.value.problems
    assert problem.message == (
        "an action of 1,025 characters; at most 1,024 (limit request_name_chars, as a request's "
        "action)"
    )
    assert parse_policy(governing(1).replace("[a0.*]", f"[{long[1:]}]")).governs == (long[1:],)
    from ledger.core.state import load_document

    relaxed = replace(DEFAULT_LIMITS, request_name_chars=2_000)  # a version recorded before
    stored = parse_policy(governing(1).replace("[a0.*]", f"[{long}]"), limits=relaxed).canonical
    loaded = load_document(stored)
    assert loaded is not None and loaded.governs == (long,)


# ----------------------------------------------------------------------------- the budget


def test_nested_macros_over_two_large_lists_exceed_the_budget() -> None:
    policy = parse_policy(
        policy_with("a.exists(x, b.exists(y, x == y))", "a: list<string>, b: list<string>")
    )
    facts = {"a": [f"a{i}" for i in range(1000)], "b": [f"b{i}" for i in range(1000)]}
    started = time.perf_counter()
    outcome, _ = policy.run(facts)
    seconds = time.perf_counter() - started
    assert outcome.determination is Determination.ERROR  # never the default allow
    assert outcome.reason_code == "evaluation_budget_exceeded" and outcome.rule == "r"
    assert "evaluation budget of 1,000,000 work units" in outcome.reasons[0]
    assert seconds < 5  # generous: stopping takes a fraction of a second
    # Deterministic (counted, not timed): the same request gives the same answer.
    assert policy.run(facts)[0] == outcome
    # The same condition over ordinary lists is an ordinary decision.
    small = {"a": facts["a"][:100], "b": [*facts["b"][:100], "a7"]}
    assert policy.run(small)[0].determination is Determination.DENY
    assert policy.run({"a": ["x"], "b": ["y"]})[0].determination is Determination.ALLOW


def test_string_work_inside_a_macro_is_charged() -> None:
    policy = parse_policy(
        policy_with("tags.exists(t, note.contains(t))", "tags: list<string>, note: string")
    )
    note = "x" * 60_000
    outcome, _ = policy.run({"tags": [f"tag{i}" for i in range(1000)], "note": note})
    assert outcome.reason_code == "evaluation_budget_exceeded"
    ok, _ = policy.run({"tags": ["tag1", "x"], "note": note})
    assert ok.determination is Determination.DENY


def test_the_budget_comes_from_the_limits() -> None:
    tight = replace(DEFAULT_LIMITS, evaluation_cost=100)
    policy = parse_policy(policy_with('a.all(x, x != "z")', "a: list<string>"), limits=tight)
    assert policy.run({"a": ["y"] * 50})[0].determination is Determination.DENY
    assert policy.run({"a": ["y"] * 150})[0].reason_code == "evaluation_budget_exceeded"


def test_conditions_without_metered_operations_never_touch_the_meter() -> None:
    plain = compile_condition(
        "n > 1 && s == 'x' && s in ['x', 'y']", facts={"n": "int", "s": "string"}
    )
    assert not plain.metered
    assert plain.fn({"n": 2, "s": "x"}, {}, None) is True  # no meter needed at all
    for text in ("a.exists(x, x == 'q')", "s.contains('q')", "s.matches('q')", "s == t", "s in a"):
        assert compile_condition(
            text, facts={"a": "list<string>", "s": "string", "t": "string"}
        ).metered


def test_a_macro_is_charged_its_predicates_weight_per_element() -> None:
    # Comparisons with literals and || cost nothing by themselves, and a macro used to charge one
    # unit per element whatever its predicate did: this ran ~3.8 s within the budget (the
    # default decided: allow). Now each inner element weighs 389 (195 comparisons, 194 ||).
    literals = " || ".join(f'y == "q{i}"' for i in range(195))
    when = f"l.exists(x, l.exists(y, {literals}))"
    facts = {"l": [f"e{i}" for i in range(990)]}
    started = time.perf_counter()
    outcome, _ = parse_policy(policy_with(when, "l: list<string>")).run(facts)
    seconds = time.perf_counter() - started
    assert (outcome.determination, outcome.reason_code) == (
        Determination.ERROR,
        "evaluation_budget_exceeded",
    )
    assert seconds < 1  # generous: it stops after three inner lists, in milliseconds
    c = compile_condition(when, facts={"l": "list<string>"})
    with pytest.raises(BudgetExceeded):
        c.evaluate({"l": tuple(facts["l"])}, {})
    # Deterministic, from sizes and the predicate's shape: 1 + 10 elements x 3 units (two
    # comparisons, one ||) for the outer macro.
    meter = Meter(1_000)
    assert not compile_condition(
        'l.exists(x, x == "a" || x == "b")', facts={"l": "list<string>"}
    ).fn({"l": tuple("cdefghijkl")}, {}, meter)
    assert meter.left == 1_000 - (1 + 10 * 3)


def test_the_worst_predicates_stay_within_a_fraction_of_a_second() -> None:
    # Whatever the predicate does per element, a unit stays near 0.1 µs, so spending the default
    # budget takes a fraction of a second (each of these ran seconds to hours before): int
    # arithmetic on a 4,000-digit fact (now 64-bit, as in CEL), a decimal compared with it, and
    # the commutative form absorbing an absent fact on every element.
    cases = [  # (condition, declared facts, the request's facts)
        ("l.exists(x, l.exists(y, n * n * n * n < n))", "n: int, l: list<string>", "nl"),
        (
            "l.exists(x, l.exists(y, d < n || y == s))",
            "n: int, d: decimal, s: string, l: list<string>",
            "ndsl",
        ),
        (
            'l.exists(x, l.exists(y, o == y || context.q == y || y == "zz"))',
            "o: {type: string, optional: true}, l: list<string>",
            "l",
        ),
        ("l.exists(x, l.exists(y, d * d + d / 3 < 0))", "d: decimal, l: list<string>", "dl"),
        # Two decimals as long as a fact may be, with different exponents: the slowest compare.
        ("l.exists(x, l.exists(y, e < f))", "e: decimal, f: decimal, l: list<string>", "efl"),
        # Lists of long texts equal but the last (ran 3 s), a long text looked for in one, and
        # a decimal next to the smallest double (its exact decimal has ~750 digits).
        (
            "l.exists(x, l.exists(y, la == lb))",
            "la: list<string>, lb: list<string>, l: list<string>",
            "l la lb",
        ),
        (
            "l.exists(x, l.exists(y, t in lb))",
            "t: string, lb: list<string>, l: list<string>",
            "l t lb",
        ),
        ("l.exists(x, l.exists(y, d < g))", "d: decimal, g: float, l: list<string>", "l d g"),
        # A red team: two lists of 1,000 short texts, equal but the last (ran 2.3 s).
        (
            "l.exists(x, l.exists(y, sa == sb))",
            "sa: list<string>, sb: list<string>, l: list<string>",
            "l sa sb",
        ),
    ]
    documents = [(policy_with(when, declared), keys) for when, declared, keys in cases]
    result = run_bounded(
        f"""
        from ledger.core.policy import parse_policy
        long = "q" * 62_000
        values = {{"l": [f"e{{i}}" for i in range(1000)], "n": int("9" * 4000), "d": "1.5",
                   "s": "x", "e": "1" * 1000, "f": "1" * 999 + "E+1",
                   "la": [long + str(i) for i in range(8)],
                   "lb": [long + str(i) for i in range(7)] + [long + "X"],
                   "t": long + "Z", "g": 5e-324,
                   "sa": ["x"] * 999 + ["y"], "sb": ["x"] * 999 + ["z"]}}
        out = []
        for document, keys in {documents!r}:
            policy = parse_policy(document)
            started = time.perf_counter()
            names = keys.split() if " " in keys else list(keys)
            outcome, _ = policy.run({{k: values[k] for k in names}}, {{}})
            out.append([time.perf_counter() - started, outcome.reason_code])
        print(json.dumps({{"out": out}}))
        """,
        timeout=60,
        memory=1 << 30,
    )
    # Every element faults, is absent or is false and none decides: the budget runs out first.
    assert {code for _, code in result["out"]} == {"evaluation_budget_exceeded"}
    assert max(seconds for seconds, _ in result["out"]) < 1.5  # generous: ~0.1 s at most


def test_an_ordinary_condition_still_costs_nothing() -> None:
    # Arithmetic, optional facts, context, the commutative form: no macro, no data-sized work.
    facts = {"n": "int", "amount": "decimal", "reason_code": "string", "standing": "string"}
    text = (
        'reason_code == "fraud" || (n * 2 > 90 && amount / 3 < 500 && '
        'standing in ["good", "watch"]) || context.vip == true'
    )
    c = compile_condition(text, facts=facts, optional={"reason_code"})
    assert not c.metered
    request = {"n": 100, "amount": Decimal("120.50"), "standing": "good"}
    assert c.fn(request, {}, None) is True  # reason_code absent: the commutative form decides
    meter = Meter(10)
    assert c.evaluate(request, {"vip": False}, meter=meter) is True
    assert meter.left == 10


def test_compiled_condition_evaluate_raises_budget_exceeded_as_a_condition_fault() -> None:
    c = compile_condition("a.exists(x, a.exists(y, x == y + 'z'))", facts={"a": "list<string>"})
    with pytest.raises(BudgetExceeded) as info:
        c.evaluate({"a": [str(i) for i in range(1000)]}, {}, meter=Meter(10_000))
    assert isinstance(info.value, ConditionFault)
    assert c.evaluate({"a": ["1", "2"]}, {}) is False


def test_dynamic_arithmetic_cannot_repeat_or_format_text() -> None:
    # Grant conditions are dynamic: Python's "x" * n and "%999999999d" % 1 would build gigabytes.
    result = run_bounded(
        """
        from ledger.core.cel import ConditionFault, compile_condition
        out = {}
        for text, facts in [
            ("note * n == 'x'", {"note": "x", "n": 10**12}),
            ("items * n == items", {"items": ("a",), "n": 10**12}),
            ("fmt % n == 'x'", {"fmt": "%999999999d", "n": 1}),
        ]:
            try:
                out[text] = compile_condition(text, facts=None).evaluate(facts, {})
            except ConditionFault as exc:
                out[text] = "fault: " + str(exc)
        print(json.dumps(out))
        """,
        timeout=30,
        memory=1 << 30,
    )
    assert all(str(v).startswith("fault: ") and "no such overload" in v for v in result.values())


# ----------------------------------------------------------------------------- grant conditions


def _state_with_grant(condition: str):  # type: ignore[no-untyped-def]
    command = IssueGrant(
        event_id="c1",
        occurred_at=T0,
        actor="human:admin",
        grant_id="g1",
        principal="agent:a",
        actions=("p.act",),
        resource="*",
        condition=condition,
    )
    outcome = decide(EMPTY_STATE, command, now=T0, new_id=lambda: "e1")
    assert isinstance(outcome, tuple)
    state = EMPTY_STATE
    for event in outcome:
        state = fold(state, event)
    return state


def _asked(facts: dict[str, Any]) -> EvaluationRequested:
    """agent:a asks for p.act on x with ``facts`` (the grant of :func:`_state_with_grant`)."""
    return EvaluationRequested(
        event_id="r1",
        occurred_at=T0,
        actor="agent:a",
        action="p.act",
        principal="agent:a",
        resource="x",
        facts=facts,
    )


def test_grant_conditions_are_bounded_and_fail_closed() -> None:
    state = _state_with_grant("xs.exists(a, xs.exists(b, a == b + '!'))")
    facts = {"xs": tuple(str(i) for i in range(1000))}
    request = _asked(facts)
    decision = evaluate(state, request, now=T0, evaluator_id="t")
    assert decision.determination is Determination.ERROR
    assert decision.reason_code == "evaluation_budget_exceeded" and decision.grant_id is None
    # The governance path (lifecycle) asks authorize(): the grant simply does not apply.
    assert authorize(state, "agent:a", "p.act", "x", now=T0, facts=facts) is None
    found = authorize_request(state, "agent:a", "p.act", "x", now=T0, facts=facts)
    assert (found.grant, found.over_budget) == (None, True)
    assert isinstance(found.first, BudgetExceeded)
    # Small facts: the grant applies as before.
    ok = replace(request, facts={"xs": ("1", "2!", "2")})
    assert evaluate(state, ok, now=T0, evaluator_id="t").reason_code == "ungoverned_action"


def test_a_denial_runs_each_grant_condition_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Saying why it was denied ran the first grant's condition again with a budget of its own:
    # a denial could cost twice the evaluation budget.
    from ledger.core.authority import Grant

    state = _state_with_grant("size(xs) > 5")
    runs: list[object] = []
    original = Grant._condition

    def counted(self: Grant, *args: Any) -> Any:
        runs.append(self.grant_id)
        return original(self, *args)

    monkeypatch.setattr(Grant, "_condition", counted)
    decision = evaluate(state, _asked({"xs": ("a",)}), now=T0, evaluator_id="t")
    assert decision.reason_code == "no_authority" and len(runs) == 1
    assert "which is false for this request" in decision.reasons[0]


def test_long_decimals_are_refused_before_any_condition_compares_them() -> None:
    # The budget counts a comparison as one operation, but comparing two decimals costs time with
    # their digits: two 65,000-digit facts with different exponents take ~6 µs, so a grant
    # condition comparing them in nested macros ran ~6 s within the budget. Grant conditions see
    # the facts as sent, so the length is checked before them.
    state = _state_with_grant("xs.exists(a, xs.exists(b, d1 > d2))")
    xs = tuple(str(i) for i in range(1000))
    long = "1" * 5_000
    request = _asked({"xs": xs, "d1": Decimal(long), "d2": Decimal(long + ".0")})
    decision = evaluate(state, request, now=T0, evaluator_id="t")
    assert (decision.determination, decision.reason_code) == (
        Determination.ERROR,
        "invalid_facts",
    )
    assert decision.grant_id is None and decision.policy is None
    assert decision.reasons == (
        "d1: a decimal of 5,000 significant digits; at most 1,000 are accepted "
        "(limit fact_decimal_digits)",
        "d2: a decimal of 5,001 significant digits; at most 1,000 are accepted "
        "(limit fact_decimal_digits)",
    )
    # The context is held to the same bound.
    in_context = replace(request, facts={"xs": ("1",)}, context={"cap": Decimal(long)})
    decision = evaluate(state, in_context, now=T0, evaluator_id="t")
    assert decision.reason_code == "invalid_facts"
    assert decision.reasons[0].startswith("context.cap: a decimal of 5,000 significant digits")
    # At the limit the grant's condition runs (the slowest shape: the same leading digit's place,
    # different exponents): small lists decide, large ones spend the budget.
    bigger, smaller = Decimal("1" * 1_000), Decimal("1" * 999 + "E+1")
    small = replace(request, facts={"xs": ("1", "2"), "d1": bigger, "d2": smaller})
    assert evaluate(state, small, now=T0, evaluator_id="t").reason_code == "ungoverned_action"
    flipped = replace(small, facts=small.facts | {"d1": smaller, "d2": bigger})
    assert evaluate(state, flipped, now=T0, evaluator_id="t").reason_code == "no_authority"
    large = replace(request, facts={"xs": xs, "d1": smaller, "d2": bigger})
    assert evaluate(state, large, now=T0, evaluator_id="t").reason_code == (
        "evaluation_budget_exceeded"
    )


def test_a_pre_evaluation_with_a_long_decimal_is_refused_where_it_is() -> None:
    state = _state_with_grant("d > 0")
    long = Decimal("9" * 1_001)
    batch = BatchEvaluationRequested(
        event_id="b1",
        occurred_at=T0,
        actor="agent:a",
        principal="agent:a",
        items=(
            BatchItem(item_id="0", action="p.act", resource="r", facts={"d": Decimal(1)}),
            BatchItem(item_id="1", action="p.act", resource="r", facts={"d": long}),
        ),
    )
    answer = evaluate_batch(state, batch, now=T0, evaluator_id="t")
    assert [d.reason_code for d in answer.decisions] == ["ungoverned_action", "invalid_facts"]
    assert "d: a decimal of 1,001 significant digits" in answer.decisions[1].reasons[0]
    # In the shared context: every item.
    answer = evaluate_batch(state, replace(batch, context={"cap": long}), now=T0, evaluator_id="t")
    assert {(d.determination, d.reason_code) for d in answer.decisions} == {
        (Determination.ERROR, "invalid_facts")
    }


def test_the_reason_code_is_documented() -> None:
    assert "evaluation_budget_exceeded" in REASON_CODES


def test_arithmetic_on_long_decimals_costs_what_short_ones_do() -> None:
    # Unmetered multiplication of two 65,536-digit facts cost ~5 ms; a nested macro repeats it
    # up to the budget's million elements (hours). An operand must fit 34 significant digits.
    # (Such facts are refused as over fact_decimal_digits before any rule runs; this raises that
    # limit to reach the operand check, which literals of up to condition_chars digits meet.)
    document = policy_with(
        "tags.all(t, tags.all(u, amount * rate > 0))",
        "amount: decimal, rate: decimal, tags: list<string>",
    )
    result = run_bounded(
        f"""
        from dataclasses import replace
        from ledger.core.limits import DEFAULT_LIMITS
        from ledger.core.policy import parse_policy
        loose = replace(DEFAULT_LIMITS, fact_decimal_digits=100_000)
        policy = parse_policy({document!r}, limits=loose)
        facts = {{"amount": "9" * 65_536, "rate": "7" * 65_536,
                  "tags": [f"t{{i}}" for i in range(300)]}}
        started = time.perf_counter()
        outcome, _ = policy.run(facts)
        print(json.dumps({{"seconds": time.perf_counter() - started,
                          "determination": outcome.determination.value,
                          "reason_code": outcome.reason_code}}))
        """,
        timeout=60,
        memory=1 << 30,
    )
    # Each product of 65,536-digit operands faults at once; no element decides `all`, so the
    # budget runs out first: an error decision, fast.
    assert (result["determination"], result["reason_code"]) == (
        "error",
        "evaluation_budget_exceeded",
    )
    assert result["seconds"] < 20  # a generous bound; multiplied in full it took ~450 s


# ----------------------------------------------------------------------------- one request's bounds


def _batch(*items: tuple[str, str], **context: object) -> BatchEvaluationRequested:
    return BatchEvaluationRequested(
        event_id="b1",
        occurred_at=T0,
        actor="agent:a",
        principal="agent:a",
        items=tuple(
            BatchItem(item_id=str(n), action=action, resource="r", facts={"s": text})
            for n, (action, text) in enumerate(items)
        ),
        context=context,  # type: ignore[arg-type]
    )


def test_the_items_of_a_pre_evaluation_share_one_budget() -> None:
    # One item's work stays under the budget; a record of many such items must not cost as
    # much as that many requests (its context is sent once and read by every item).
    from ledger.testing import LocalLedger

    led = LocalLedger()
    led.deploy(policy_with("context.a.exists(x, context.b.exists(y, x == y))"))
    led.grant("agent:a", "p.*", "*")
    lists = {"a": [f"a{i}" for i in range(700)], "b": [f"b{i}" for i in range(700)]}
    alone = evaluate_batch(led.state, _batch(("p.act", "x"), **lists), now=T0, evaluator_id="t")
    assert [d.reason_code for d in alone.decisions] == ["default_applied"]
    many = evaluate_batch(
        led.state, _batch(*[("p.act", "x")] * 30, **lists), now=T0, evaluator_id="t"
    )
    codes = [d.reason_code for d in many.decisions]
    assert codes[0] == "default_applied" and len(codes) == 30
    assert set(codes[1:]) == {"evaluation_budget_exceeded"}
    assert {d.determination for d in many.decisions[1:]} == {Determination.ERROR}
    # An agent engineer's walkthrough: a later item was told its own conditions needed more
    # than the budget, with nothing to do about it. It says the earlier items spent it.
    [reason] = many.decisions[2].reasons
    assert reason == (
        "evaluation stopped in rule 'r': the conditions needed more than the evaluation budget "
        "of 1,000,000 work units (list macros, string and regular-expression work on these "
        "facts) (this pre-evaluation's items share that budget, and the items before this one "
        "spent 1,000,000 units of it: ask for this item alone or in a smaller pre-evaluation)"
    )
    from ledger.core.wordings import earlier_wording

    assert earlier_wording(reason, reason.split(" (this pre-evaluation's")[0]) is not None


def test_a_spent_shared_budget_is_blamed_only_on_items_that_needed_it() -> None:
    # Grant conditions: the first item spends the batch's budget; a later item under an
    # unconditional grant, or under none, gets its own answer, not a budget error.
    state = _state_with_grant("xs.exists(a, xs.exists(b, a == b + '!'))")
    extra = IssueGrant(
        event_id="c2",
        occurred_at=T0,
        actor="human:admin",
        grant_id="g2",
        principal="agent:a",
        actions=("q.act",),
        resource="*",
    )
    outcome = decide(state, extra, now=T0, new_id=lambda: "e2")
    assert isinstance(outcome, tuple)
    for event in outcome:
        state = fold(state, event)
    batch = _batch(("p.act", "x"), ("q.act", "x"), ("z.act", "x"), ("p.act", "x"))
    batch = replace(
        batch,
        items=tuple(
            replace(item, facts={"xs": tuple(str(i) for i in range(1000))}) for item in batch.items
        ),
    )
    codes = [
        d.reason_code for d in evaluate_batch(state, batch, now=T0, evaluator_id="t").decisions
    ]
    assert codes == [
        "evaluation_budget_exceeded",
        "ungoverned_action",  # granted by g2: no policy governs q.act
        "no_authority",
        "evaluation_budget_exceeded",
    ]


def test_a_pre_evaluation_over_the_item_limit_is_all_errors_and_evaluates_nothing() -> None:
    limits = Limits(batch_items=3)
    batch = _batch(*[("p.act", "x")] * 4)
    answer = evaluate_batch(EMPTY_STATE, batch, now=T0, evaluator_id="t", limits=limits)
    assert [d.item_id for d in answer.decisions] == ["0", "1", "2", "3"]
    assert {(d.determination, d.reason_code) for d in answer.decisions} == {
        (Determination.ERROR, "request_too_large")
    }
    assert (
        "4 items in one pre-evaluation, more than 3 (batch_items)" in answer.decisions[0].reasons[0]
    )
    assert unanswerable(batch, limits) == ("too_many_items", answer.decisions[0].reasons[0])
    assert request_problem(batch, limits) == answer.decisions[0].reasons[0]
    assert request_problem(_batch(*[("p.act", "x")] * 3), limits) is None


def test_names_over_their_limit_are_refused_before_any_look_up() -> None:
    # Actions key the state's memo of governing policies: a long one must never get there.
    from ledger.testing import LocalLedger

    led = LocalLedger()
    led.deploy(policy_with('s == "x"').replace("governs: [p.act]", "governs: ['p.*']"))
    led.grant("agent:a", "p.*", "*")
    longest = DEFAULT_LIMITS.request_name_chars
    request = EvaluationRequested(
        event_id="r1",
        occurred_at=T0,
        actor="agent:a",
        action="p." + "x" * (longest - 1),
        principal="agent:a",
        resource="x",
        facts={"s": "y"},
    )
    decision = evaluate(led.state, request, now=T0, evaluator_id="t")
    assert (decision.determination, decision.reason_code) == (
        Determination.ERROR,
        "request_too_large",
    )
    assert "action is longer than 1,024 characters" in decision.reasons[0]
    assert not [key for key in led.state.memo if isinstance(key, tuple) and key[0] == "action"]
    at_limit = replace(request, action="p." + "x" * (longest - 2))
    assert evaluate(led.state, at_limit, now=T0, evaluator_id="t").reason_code == "default_applied"
    for field, value in (
        ("principal", "agent:" + "a" * longest),
        ("resource", "r" * (longest + 1)),
    ):
        too_long = replace(request, action="p.act", **{field: value})
        assert request_problem(too_long) is not None
        assert evaluate(led.state, too_long, now=T0, evaluator_id="t").reason_code == (
            "request_too_large"
        )
    assert "request_too_large" in REASON_CODES


def test_names_over_their_limit_are_recorded_cut_with_their_length_never_whole() -> None:
    # A red team: a request's principal, action or resource of 900 KB was answered
    # request_too_large with the name copied whole into the decision (the decisions topic,
    # exports, the agent's answer); a pre-evaluation's principal and items' ids and names too.
    from ledger.testing import LocalLedger

    led = LocalLedger()
    led.grant("agent:a", "*", "*")
    longest = DEFAULT_LIMITS.request_name_chars
    huge = "p." + "\u202ex" * 450_000
    asked = EvaluationRequested(
        event_id="r1",
        occurred_at=T0,
        actor="agent:a",
        action="p.act",
        principal="agent:a",
        resource="x",
    )
    for field in ("principal", "action", "resource"):
        decision = evaluate(led.state, replace(asked, **{field: huge}), now=T0, evaluator_id="t")
        assert decision.reason_code == "request_too_large"
        recorded = getattr(decision, field)
        assert recorded == huge[:longest] + f"… ({len(huge)} characters)"
        others = {"principal", "action", "resource"} - {field}
        assert {name: getattr(decision, name) for name in others} == {
            name: getattr(asked, name) for name in others
        }
    # A smaller limit (LocalLedger(limits=...)) cuts at its own.
    small = Limits(request_name_chars=10)
    decision = evaluate(
        led.state, replace(asked, action="p." + "y" * 20), now=T0, evaluator_id="t", limits=small
    )
    assert decision.action == "p.yyyyyyyy… (22 characters)"
    batch = replace(
        _batch(("p.act", "x")),
        principal="agent:" + "a" * (longest + 1),
        items=(
            BatchItem(item_id="0", action="p.act", resource=None),
            BatchItem(item_id="i" * 1_000, action=huge, resource=huge),
        ),
    )
    answer = evaluate_batch(led.state, batch, now=T0, evaluator_id="t")
    assert {d.reason_code for d in answer.decisions} == {"request_too_large"}
    assert answer.principal.endswith(f"… ({longest + 7} characters)")
    first, second = answer.decisions
    assert (first.item_id, first.action, first.resource) == ("0", "p.act", None)
    assert second.item_id == "i" * DEFAULT_LIMITS.request_id_chars + "… (1000 characters)"
    assert second.action == second.resource == huge[:longest] + f"… ({len(huge)} characters)"


def test_who_asked_is_held_to_the_names_limit_and_never_copied_whole() -> None:
    # A red team: requested_by and actor took any text of any length ("human:admin\u202e\u0000"
    # repeated to 900 KB), copied into the decision trace.
    from ledger.testing import LocalLedger

    led = LocalLedger()
    led.deploy(policy_with('s == "x"'))
    led.grant("agent:a", "p.act", "*")
    longest = DEFAULT_LIMITS.request_name_chars
    asked = EvaluationRequested(
        event_id="r1",
        occurred_at=T0,
        actor="agent:a",
        action="p.act",
        principal="agent:a",
        resource="x",
        facts={"s": "x"},
        context={"c": "y"},
    )
    assert evaluate(led.state, asked, now=T0, evaluator_id="t").reason_code == "rule_matched"
    odd = "human:admin\u202e\u0000"
    for field, value in (
        ("requested_by", odd * (900_000 // len(odd))),
        ("requested_by", "agent:" + "b" * (longest - 5)),
        ("actor", "agent:" + "b" * (longest - 5)),
    ):
        too_long = replace(asked, **{field: value})
        said = f"the request's {field} is longer than 1,024 characters (request_name_chars)"
        assert request_problem(too_long) == said
        decision = evaluate(led.state, too_long, now=T0, evaluator_id="t")
        assert (decision.determination, decision.reason_code, decision.reasons) == (
            Determination.ERROR,
            "request_too_large",
            (said,),
        )
        assert decision.facts == {} and decision.context == {}
        recorded = decision.requested_by or ""
        assert len(recorded) < longest + 40 and recorded.endswith(f"({len(value)} characters)")
        assert recorded.startswith(value[:100])
    for field in ("requested_by", "actor"):  # at the limit: decided as ever
        at_limit = replace(asked, **{field: "agent:" + "b" * (longest - 6)})
        assert request_problem(at_limit) is None
        decision = evaluate(led.state, at_limit, now=T0, evaluator_id="t")
        assert decision.reason_code == "rule_matched"
    # A pre-evaluation names its actor once, for every item: each is answered with the reason.
    batch = replace(_batch(("p.act", "x"), ("p.act", "y")), actor="agent:" + "b" * longest)
    answer = evaluate_batch(led.state, batch, now=T0, evaluator_id="t")
    assert {(d.reason_code, d.reasons) for d in answer.decisions} == {
        (
            "request_too_large",
            ("the request's actor is longer than 1,024 characters (request_name_chars)",),
        )
    }
    assert request_problem(batch) == answer.decisions[0].reasons[0]


def test_a_requested_by_that_is_no_principal_is_answered_invalid_request() -> None:
    # The README: requested_by is the enforcement point's configured actor (the SDK's
    # ClientConfig.actor), which must be a kind:name principal. A record built by hand took any
    # text, and its decision credited it ("human:admin\u202e" reads as another name).
    from ledger.core.evaluate import asker_problem
    from ledger.testing import LocalLedger

    led = LocalLedger()
    led.deploy(policy_with('s == "x"'))
    led.grant("agent:a", "p.act", "*")
    asked = EvaluationRequested(
        event_id="r1",
        occurred_at=T0,
        actor="agent:a",
        action="p.act",
        principal="agent:a",
        resource="x",
        facts={"s": "x"},
        requested_by="service:checkout",
    )
    decision = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert (decision.reason_code, decision.requested_by) == ("rule_matched", "service:checkout")
    for hostile in ("human:admin\u202e", "refund bot", "", "agent:a\n", "HUMAN:admin", "x"):
        decision = evaluate(
            led.state, replace(asked, requested_by=hostile), now=T0, evaluator_id="t"
        )
        said = f"the request's requested_by {hostile!r} is not a principal: use kind:name"
        assert (decision.determination, decision.reason_code) == (
            Determination.ERROR,
            "invalid_request",
        )
        assert len(decision.reasons) == 1 and decision.reasons[0].startswith(said)
        assert decision.reasons[0] == asker_problem(hostile)
        assert decision.facts == {} and decision.grant_id is None
    # Older requests carry none: who asked is their actor, as ever (its form unchecked).
    older = replace(asked, requested_by=None, actor="refund bot")
    decision = evaluate(led.state, older, now=T0, evaluator_id="t")
    assert (decision.reason_code, decision.requested_by) == ("rule_matched", "refund bot")
    # Over its limit, it is request_too_large first (the name is not read further).
    long = replace(asked, requested_by=" " * (DEFAULT_LIMITS.request_name_chars + 1))
    assert evaluate(led.state, long, now=T0, evaluator_id="t").reason_code == "request_too_large"
    assert "invalid_request" in REASON_CODES


def test_an_empty_request_id_is_unanswerable_as_an_id_over_its_limit_is() -> None:
    asked = EvaluationRequested(
        event_id="",
        occurred_at=T0,
        actor="agent:a",
        action="p.act",
        principal="agent:a",
        resource="x",
    )
    assert unanswerable(asked) == ("id_empty", "the request id is empty")
    assert unanswerable(replace(_batch(("p.act", "x")), event_id="")) == (
        "id_empty",
        "the request id is empty",
    )
    assert request_problem(asked) == "the request id is empty"
    assert unanswerable(replace(asked, event_id=" \u3000")) == (
        "id_empty",
        "the request id is only whitespace",
    )
    assert unanswerable(replace(asked, event_id="r")) is None
    assert unanswerable(replace(asked, event_id=" r ")) is None


def test_an_item_whose_condition_spent_nothing_is_not_blamed_for_a_spent_budget() -> None:
    # The condition is metered, but for the second item it is false before any charge.
    state = _state_with_grant("n < 10 && xs.exists(a, xs.exists(b, a == b + '!'))")
    spender = {"n": 1, "xs": tuple(str(i) for i in range(1000))}
    innocent = {"n": 50, "xs": ("x",)}
    batch = _batch(("p.act", "x"), ("p.act", "x"))
    batch = replace(
        batch,
        items=(
            replace(batch.items[0], facts=spender),
            replace(batch.items[1], facts=innocent),
        ),
    )
    answer = evaluate_batch(state, batch, now=T0, evaluator_id="t")
    assert [(d.determination, d.reason_code) for d in answer.decisions] == [
        (Determination.ERROR, "evaluation_budget_exceeded"),
        (Determination.DENY, "no_authority"),
    ]


def test_a_pre_evaluations_context_is_checked_once_not_once_per_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    evaluate_module = sys.modules["ledger.core.evaluate"]  # the module: ledger.core.evaluate
    from ledger.core.facts import context_problems
    from ledger.core.policy import runner
    from ledger.testing import LocalLedger

    checks: list[str] = []

    def counted(where: str) -> Any:
        def check(context: Any, limits: Any = DEFAULT_LIMITS) -> tuple[str, ...]:
            checks.append(where)
            return context_problems(context, limits)

        return check

    monkeypatch.setattr(runner, "context_problems", counted("per run"))
    monkeypatch.setattr(evaluate_module, "context_problems", counted("once"))
    led = LocalLedger()
    led.deploy(policy_with('s == "x"'))
    led.grant("agent:a", "p.*", "*")
    answer = evaluate_batch(
        led.state, _batch(*[("p.act", "y")] * 50, note="n"), now=T0, evaluator_id="t"
    )
    assert {d.reason_code for d in answer.decisions} == {"default_applied"}
    assert checks == ["once"]
    too_long = "x" * (DEFAULT_LIMITS.fact_string_chars + 1)
    refused = evaluate_batch(
        led.state, _batch(*[("p.act", "y")] * 3, note=too_long), now=T0, evaluator_id="t"
    )
    assert {(d.determination, d.reason_code) for d in refused.decisions} == {
        (Determination.ERROR, "invalid_facts")
    }


def test_every_limit_is_a_row_of_the_readmes_table_with_its_value() -> None:
    # The README's table is what an operator reads: a limit added or changed in Limits without
    # it would bound inputs nobody was told about.
    import dataclasses
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| ([0-9,]+)", readme, flags=re.M))
    for limit in dataclasses.fields(Limits):
        value = getattr(DEFAULT_LIMITS, limit.name)
        assert rows.get(limit.name) == f"{value:,}", limit.name


def test_what_a_comparison_reads_is_charged_in_grant_conditions_too() -> None:
    c = compile_condition("a == b", facts=None)  # dynamic mode, as grant conditions are
    long = "q" * 62_000
    for a, b, units in [
        (Decimal("1.5"), 5e-324, 1 + 40),  # the double converted exactly
        ((long + "1", long + "2"), (long + "1", long + "3"), 1 + 124_004 // 2_048),
        (("x",), ("x", "y"), 1 + 1 // 8 + 2 // 8),  # lengths differ: kinds read, none compared
        # A red team: two lists of 1,000 short texts were charged 126 units for ~250 µs of
        # work (their texts' lengths summed in Python, their elements compared one by one):
        # kinds read and lengths summed in C, then one C comparison.
        (("x",) * 999 + ("y",), ("x",) * 999 + ("z",), 126 + 250 + 250),
        # A list holding bools is compared element by element (true is no 1): 3 units for
        # each element of either side, and 3 for each list.
        ((True,) * 1000, (True,) * 999 + (1,), 126 + 250 + 3 * (2 + 2000)),
        # A review: a list inside a list was charged one element for its 1,000.
        ((("x",) * 999 + ("y",),), (("x",) * 999 + ("z",),), 1 + 0 + 3 * (2 + 2 + 2000)),
    ]:
        meter = Meter(10_000)
        assert c.fn({"a": a, "b": b}, {}, meter) is False
        assert meter.left == 10_000 - units, (a, b)
    # A review: the walk that counts what a comparison reads ran to its end before the budget
    # was looked at (0.17 s for a condition of a thousand references to one list): it stops
    # once past what the budget pays for.
    from ledger.core.cel.runtime import _deep_items

    nested = tuple(tuple(f"t{i}" for i in range(1000)) for _ in range(1000))
    assert _deep_items(nested, 10**9) == 1000 + 1000 * 1000
    assert _deep_items(nested, 10) < 3000
    # A review: a list looked up in a list of lists was charged one unit for 1,000 elements
    # compared with each: now 3 units per element, per list it is compared with.
    looked_up = compile_condition("a in b", facts=None)
    meter = Meter(10_000)
    a, b = ("x",) * 999 + ("y",), (("x",) * 999 + ("z",),)
    assert looked_up.fn({"a": a, "b": b}, {}, meter) is False
    assert meter.left == 10_000 - (1 + 3 * 1 * (1 + 1000))


def test_a_list_looked_up_in_a_literal_list_is_charged_by_its_length() -> None:
    # Python keeps no hash of a tuple: `region in ["eu", "us"]` with a 200,000-item list as
    # `region`, inside a macro over 2,000 items, hashed 4*10^8 items for 8 units a time.
    state = _state_with_grant('items.exists(i, i == "gift" && region in ["eu", "us"])')
    facts = {"items": ("gift",) * 2_000, "region": ("",) * 200_000}
    decision = evaluate(state, _asked(facts), now=T0, evaluator_id="t")
    assert decision.reason_code == "evaluation_budget_exceeded"
    small = evaluate(state, _asked({"items": ("gift",), "region": "eu"}), now=T0, evaluator_id="t")
    assert small.grant_id is not None  # a text is still found as before


def test_a_search_is_charged_by_both_texts_lengths() -> None:
    # CPython compares up to len(text) x len(needle) characters for texts under ~30,000:
    # 0.8 ms for one search the text's length alone priced at 1,875 units (~0.4 us a unit).
    text, needle = "a" * 29_999, "a" * 96 + "baa"
    meter = Meter(1_000_000)
    condition = compile_condition("s.contains(t)", facts={"s": "string", "t": "string"})
    assert condition.fn({"s": text, "t": needle}, {}, meter) is False
    assert 1_000_000 - meter.left >= 11_000  # ~0.07 us a unit for what was measured
    small = Meter(1_000_000)
    assert condition.fn({"s": "a refund for fraud", "t": "fraud"}, {}, small) is True
    assert 1_000_000 - small.left <= 3  # everyday searches stay nearly free


def test_a_patterns_wildcards_and_a_class_globs_length_are_bounded_where_written() -> None:
    # A red team: a grant of 256 patterns `refund.*` + 470 `?` cost its holder's every request
    # 110 ms of evaluator time, and 256 patterns of 509 `*` 2.9 s to compile; a policy's
    # governs could do the same to every request of an action nobody asked before.
    from ledger.core.events import IssueGrant
    from ledger.errors import CommandRejectedError
    from ledger.testing import ADMIN, LocalLedger

    led = LocalLedger()

    def issue(*actions: str, resource: str = "account:*") -> str:
        try:
            led.submit_command(
                IssueGrant(
                    event_id=f"g{len(led.events)}-{actions[0][:8]}", occurred_at=led.clock(),
                    actor=ADMIN, grant_id=f"g{len(led.events)}", principal="agent:bot",
                    actions=actions, resource=resource,
                )
            )  # fmt: skip
        except CommandRejectedError as rejected:
            return f"{rejected.code}: {rejected}"
        return "accepted"

    assert issue("refund.*" + "?" * 70).startswith("invalid_grant: ")
    assert "at most 64 (glob_class_chars)" in issue("refund.?" + "a" * 70)
    assert "17 wildcards in one pattern; at most 16 (glob_wildcards)" in issue("x." + "*a" * 17)
    assert "glob_wildcards" in issue("refund.issue", resource="*" * 17)
    assert "at most 256 (glob_chars)" in issue("refund.*" + "a" * 900 + "b*")
    assert issue("refund.*" + "a" * 240 + "b*").startswith("accepted")
    assert issue("refund." + "a" * 1_000).startswith("accepted")  # a name: any length
    assert issue("db.table_??", "account:[0-9]*").startswith("accepted")
    with pytest.raises(PolicyError) as info:
        parse_policy(governing(1).replace("[a0.*]", "[ok, 'x." + "*a" * 17 + "']"))
    (problem,) = info.value.problems
    assert problem.message.startswith("17 wildcards in one pattern; at most 16 (glob_wildcards)")
    from ledger.core.state import load_document

    relaxed = replace(DEFAULT_LIMITS, glob_wildcards=100)  # a version recorded before
    stored = parse_policy(
        governing(1).replace("[a0.*]", "['x." + "*a" * 17 + "']"), limits=relaxed
    ).canonical
    assert load_document(stored) is not None


def test_matching_long_patterns_is_charged_to_the_requests_budget() -> None:
    # A red team: grants of 256 patterns of the longest kind allowed cost their holder's every
    # request ~20 ms each of evaluator time, ten of them ~170 ms, a 500-item pre-evaluation 8 s,
    # none of it counted. The characters matched now are (past what ordinary grants need):
    # the request stops with error / evaluation_budget_exceeded, never an allow.
    from ledger.core.events import EvaluationRequested
    from ledger.testing import LocalLedger

    # Holding them all, as a ledger recorded before principal_grant_units refused that.
    led = LocalLedger(limits=replace(DEFAULT_LIMITS, principal_grant_units=10**9))
    led.grant("agent:bot", "refund.*", "account:2")  # ordinary: matched for free
    action = "refund." + "a" * 1_000
    ordinary = EvaluationRequested(
        event_id="q-0", occurred_at=T0, actor="agent:bot", action=action,
        principal="agent:bot", resource="account:1",
    )  # fmt: skip
    long_ones = [f"x{i:02d}.*" + "a" * 240 + "*b" for i in range(256)]
    for n in range(10):
        led.grant("agent:bot", [p.replace("x", f"{n}x", 1) for p in long_ones], "account:*")
    decided, covered = _counting_matches(led.state, ordinary)
    assert decided.reason_code == "evaluation_budget_exceeded", decided.reasons
    assert covered < 8, covered  # of 11 grants: the budget stopped it
    short = replace(ordinary, event_id="q-1", action="refund.issue")
    assert evaluate(led.state, short, now=T0, evaluator_id="t").reason_code != (
        "evaluation_budget_exceeded"
    )


def test_a_denials_reason_does_not_match_the_grants_again() -> None:
    # The reason for a denial named the closest grant by matching every grant's patterns once
    # more, uncounted: a denial cost twice what its budget allowed. It now comes from what
    # authorization found.
    from ledger.core.events import EvaluationRequested
    from ledger.testing import LocalLedger

    led = LocalLedger()
    for n in range(5):
        led.grant("agent:bot", f"tool{n}.*", "account:*")
    led.grant("agent:bot", "refund.*", "account:9")
    asked = EvaluationRequested(
        event_id="q-0", occurred_at=T0, actor="agent:bot", action="refund.issue",
        principal="agent:bot", resource="account:1",
    )  # fmt: skip
    decided, covered = _counting_matches(led.state, asked)
    assert decided.reason_code == "no_authority"
    assert decided.reasons == ("agent:bot holds no grant for refund.issue on account:1",)
    assert covered == 6  # each grant once


def _counting_matches(state: Any, request: Any) -> tuple[Any, int]:
    """``request`` evaluated, and how many times a grant's patterns were matched on the way."""
    from ledger.core import authority

    covered = 0
    real = authority.Grant.covers

    def counted(self: Any, a: str, r: str) -> bool:
        nonlocal covered
        covered += 1
        return real(self, a, r)

    authority.Grant.covers = counted  # type: ignore[method-assign]
    try:
        return evaluate(state, request, now=T0, evaluator_id="t"), covered
    finally:
        authority.Grant.covers = real  # type: ignore[method-assign]
