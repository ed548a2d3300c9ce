"""Policy documents are bounded before the expensive work (issue 8, item 1; STYLE §16).

The alias bomb of issue 8 — nine anchored lists of nine aliases each, about 400 bytes — made
``ledger policy validate`` grow to gigabytes: the loader parsed the text twice and walked every
aliased subtree once per reference. Each bound of :mod:`ledger.core.limits` that guards YAML and
canonical JSON is exercised here, with its own message.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from bounded import run_bounded  # beside this file (pytest puts its dir on sys.path)
from click.testing import CliRunner

from ledger.cli.app import cli
from ledger.core.limits import DEFAULT_LIMITS
from ledger.core.policy import Policy, load_yaml, parse_policy, parse_test_cases
from ledger.errors import PolicyError

HEADER = "policy: lol\ngoverns: [x]\nowner: o\ndefault: {effect: deny}\n"


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The document of issue 8: each level is a list of ``width`` aliases of the one before."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lines = ["description:", "  - &a [" + ",".join(['"x"'] * width) + "]"]
    for before, name in itertools.pairwise(names):
        lines.append(f"  - &{name} [" + ",".join([f"*{before}"] * width) + "]")
    return HEADER + "\n".join(lines) + "\n"


def problems(text: str, **kw: object) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, filename="p.yaml", **kw)  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems]


def test_the_alias_bomb_is_refused_quickly_in_bounded_memory() -> None:
    bomb = alias_bomb()
    assert len(bomb.encode()) < 420  # the ~400-byte document of the issue
    # In a child with 1 GiB of address space: before the fix it took GBs and never finished.
    result = run_bounded(
        f"""
        from ledger.core.policy import parse_policy
        from ledger.errors import PolicyError
        started = time.perf_counter()
        try:
            parse_policy({bomb!r}, filename="bomb.yaml")
            problems = []
        except PolicyError as exc:
            problems = [str(p) for p in exc.problems]
        print(json.dumps({{"seconds": time.perf_counter() - started, "problems": problems}}))
        """,
        timeout=60,
        memory=1 << 30,
    )
    assert len(result["problems"]) == 1
    assert "more than 50,000 nodes" in result["problems"][0]
    assert "limit yaml_nodes" in result["problems"][0]
    assert result["problems"][0].startswith("bomb.yaml:")  # located at the alias that crossed it
    assert result["seconds"] < 5  # a generous bound: it takes milliseconds


def test_the_alias_bomb_through_policy_validate(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    result = run_bounded(
        f"""
        from click.testing import CliRunner
        from ledger.cli.app import cli
        done = CliRunner().invoke(cli, ["policy", "validate", {str(path)!r}])
        print(json.dumps({{"code": done.exit_code, "err": done.stderr, "out": done.stdout}}))
        """,
        timeout=60,
        memory=1 << 30,
    )
    assert result["code"] == 3
    lines = result["err"].splitlines()
    # One line per problem, then the one-line summary; no traceback.
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"error  {path}:") and "limit yaml_nodes" in lines[0]
    assert "Traceback" not in result["err"]


def test_too_many_aliases_is_refused_with_its_own_message() -> None:
    many = HEADER + "description:\n  - &a x\n" + "".join("  - *a\n" for _ in range(101))
    (message,) = problems(many)
    assert "more than 100 aliases" in message and "limit yaml_aliases" in message
    # 100 are fine (the document is then only invalid for other reasons, or not at all).
    assert parse_policy(HEADER + "tests:\n") is not None
    fine = HEADER + "x: &a 1\n" + "".join(f"y{i}: *a\n" for i in range(99))
    assert all("yaml_aliases" not in p for p in problems(fine))


def test_deep_nesting_is_refused_with_its_own_message() -> None:
    deep = HEADER + "description: " + "[" * 65 + "]" * 65 + "\n"
    (message,) = problems(deep)
    assert "nested more than 64 levels deep" in message and "limit yaml_depth" in message
    # Block style nests the same way.
    block = HEADER + "description:\n" + "".join("  " * i + "- \n" for i in range(1, 70))
    assert any("limit yaml_depth" in p for p in problems(block))
    # Far deeper than Python's recursion limit: still one problem, no RecursionError.
    (message,) = problems("[" * 100_000)
    assert "limit yaml_depth" in message


def test_an_oversized_document_is_refused_before_parsing() -> None:
    big = HEADER + "description: " + "x" * (256 * 1024) + "\n"
    (message,) = problems(big)
    assert "at most 262,144 are accepted" in message and "limit policy_document_bytes" in message
    # Counted in UTF-8 bytes, not characters.
    limits = replace(DEFAULT_LIMITS, policy_document_bytes=len(HEADER) + 10)
    (message,) = problems(HEADER + "# ééééé\n", limits=limits)
    assert "limit policy_document_bytes" in message


def test_a_document_whose_aliases_store_past_the_limit_is_refused() -> None:
    # A red team: a 100 KB description repeated by alias as four rules' reasons validated,
    # proposed, approved and promoted, and was stored as 500 KB of canonical JSON, which the
    # evaluators load under this limit: every request of its actions then ended `error`.
    long = "x" * 100_000
    rules = "".join(
        f"  - {{id: r{i}, when: 'a == {i}', effect: deny, reason: *d}}\n" for i in range(4)
    )
    text = (
        f'policy: ab\ngoverns: [x.ab]\nowner: o\ndescription: &d "{long}"\n'
        f"facts: {{a: int}}\nrules:\n{rules}default: {{effect: deny}}\n"
    )
    assert len(text.encode()) < DEFAULT_LIMITS.policy_document_bytes
    # Each reason is over policy_reason_chars too (a limit that came later): the stored size
    # is what this test is about, checked with that limit out of the way.
    relaxed = replace(DEFAULT_LIMITS, policy_reason_chars=DEFAULT_LIMITS.policy_document_bytes)
    (found,) = problems(text, limits=relaxed)
    assert "the policy as the ledger stores it (canonical JSON, aliases expanded) is" in found
    assert "(limit policy_document_bytes)" in found
    # Within the limit stored, the same document is accepted, and loads back as stored.
    small = parse_policy(text.replace(long, "x" * 1_000))
    assert Policy.from_canonical(small.canonical) == small


def test_a_lone_surrogate_is_refused_where_it_is_written() -> None:
    # "\ud800" in a double-quoted YAML scalar decodes to half a UTF-16 pair, which the
    # canonical form and its hash cannot encode: refused with its line, not a traceback.
    with pytest.raises(PolicyError) as info:
        load_yaml(HEADER + 'description: "ok \\ud800"\n')
    (problem,) = info.value.problems
    assert "lone surrogate" in problem.message and problem.line == HEADER.count("\n") + 1
    assert load_yaml(HEADER + 'description: "ok \\u00e9"\n')[0]["description"] == "ok é"


def test_a_recursive_alias_is_refused() -> None:
    (message,) = problems(HEADER + "description: &a [*a]\n")
    assert "alias *a refers to a node that contains it" in message


def test_duplicate_keys_are_still_refused_and_aliases_still_work() -> None:
    (message,) = problems(HEADER + "owner: again\n")
    assert "duplicate key 'owner'" in message
    shared = (
        "policy: p\ngoverns: [a]\nowner: o\n"
        "facts: {n: int}\n"
        "rules:\n"
        "  - {id: r1, when: &cond n > 1, effect: allow, constraints: &c {k: v}}\n"
        "  - {id: r2, when: *cond, effect: allow, constraints: *c}\n"
        "default: {effect: deny}\n"
    )
    policy = parse_policy(shared)
    assert [r.when for r in policy.rules] == ["n > 1", "n > 1"]
    assert dict(policy.rules[1].constraints) == {"k": "v"}
    # A problem inside an aliased node is located where the node is written (line 6).
    bad = shared.replace("n > 1", "n > 'x'")
    found = problems(bad)
    assert found and all(p.startswith("p.yaml:6") for p in found), found


def test_the_document_is_composed_once() -> None:
    # Marks and data come from one composition: positions still point at the right lines.
    data, marks = load_yaml("a: 1\nb:\n  - x\n  - {c: 2}\n")
    assert data == {"a": 1, "b": ["x", {"c": 2}]}
    assert marks.at(("b", 1, "c")) == (4, 6)


def test_test_case_files_go_through_the_same_bounds() -> None:
    result = run_bounded(
        f"""
        from ledger.core.policy import parse_test_cases
        from ledger.errors import PolicyError
        try:
            parse_test_cases({alias_bomb().replace(HEADER, "")!r}, filename="t.tests.yaml")
            message = ""
        except PolicyError as exc:
            message = str(exc)
        print(json.dumps({{"message": message}}))
        """,
        timeout=60,
        memory=1 << 30,
    )
    assert "limit yaml_nodes" in result["message"]
    with pytest.raises(PolicyError, match="limit yaml_depth"):
        parse_test_cases("[" * 100, filename="t.tests.yaml")


def test_canonical_json_is_bounded_too() -> None:
    policy = parse_policy(HEADER)
    assert Policy.from_canonical(policy.canonical) == policy
    with pytest.raises(PolicyError, match="more than 64 levels deep"):
        Policy.from_canonical("[" * 20_000 + "]" * 20_000)
    with pytest.raises(PolicyError, match="at most 262,144 are accepted"):
        Policy.from_canonical(json.dumps({"policy": "x" * 300_000}))
    with pytest.raises(PolicyError, match="key 'owner' more than once"):
        Policy.from_canonical(policy.canonical[:-1] + ',"owner":"mallory"}')


def test_cli_validate_lists_each_bound_problem_on_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text(HEADER + "description: " + "[" * 5000 + "\n")
    done = CliRunner().invoke(cli, ["policy", "validate", str(deep)])
    assert done.exit_code == 3
    assert "limit yaml_depth" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 2


@pytest.mark.parametrize(
    ("number", "digits"),
    [("1" * 5_000, "5,000"), ("-" + "7" * 4_301, "4,301"), ("0x" + "f" * 5_000, "more than 4,300")],
)
def test_an_integer_too_long_to_convert_is_one_line_with_its_line(number: str, digits: str) -> None:
    # It was "YAML error: ValueError: Exceeds the limit (4300 digits) for integer string
    # conversion ... use sys.set_int_max_str_digits()", with no line; a hex one crashed later,
    # writing the canonical form.
    text = HEADER + f"facts:\n  n: {{type: int, min: {number}}}\n"
    (problem,) = problems(text)
    preview = number.lstrip("-")[:20]
    assert problem == (
        f"p.yaml:6: the integer {preview}… has {digits} digits; at most 4,300 are accepted in a "
        "number: shorten it"
    )
    assert "sys.set_int_max_str_digits" not in problem
    # 4,300 digits convert; beyond 64 bits, only a recorded version holds such a bound.
    at_limit = text.replace(number, "9" * 4_300)
    assert parse_policy(at_limit, new_document=False).facts["n"].minimum == int("9" * 4_300)
    (beyond,) = problems(at_limit)
    assert beyond == (
        "p.yaml:6, facts.n.min: 99999999999999999999… (4,300 digits) is outside the 64-bit "
        "range of an int fact (-9223372036854775808 to 9223372036854775807): write a bound "
        "within it, or leave it out"
    )


def test_a_long_integer_in_a_policy_is_one_line_through_policy_validate(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(HEADER + f"facts:\n  n: {{type: int, min: {'1' * 5_000}}}\n")
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code != 0
    assert f"{path}:6: the integer 11111111111111111111… has 5,000 digits" in result.output
    assert "Traceback" not in result.output and "set_int_max_str_digits" not in result.output
