"""`ledger policy validate|test|eval` through click's CliRunner, on the example policies."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner

from ledger.cli.app import cli

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policies"
REFUND = EXAMPLES / "refund.yaml"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_on_every_command() -> None:
    for args in (
        ["policy", "--help"],
        ["policy", "validate", "--help"],
        ["policy", "test", "--help"],
        ["policy", "eval", "--help"],
    ):
        code, out, _ = run(*args)
        assert code == 0 and "Usage" in out


def test_validate_ok_and_invalid(tmp_path: Path) -> None:
    code, out, _ = run("policy", "validate", str(REFUND))
    assert code == 0 and "policy refund" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "policy: bad\ngoverns: [a]\nowner: o\nfacts: {n: int}\nrules:\n  - id: r1\n    when: n > 'x'\n    effect: allow\ndefault: {effect: deny}\n"
    )
    code, out, err = run("policy", "validate", str(bad), str(REFUND))
    assert code == 3
    assert f"{bad}:7, rule 'r1', when: cannot order int and string" in err
    assert "policy refund" in out


def test_validate_json(tmp_path: Path) -> None:
    code, out, _ = run("policy", "validate", "--json", str(REFUND))
    assert code == 0 and json.loads(out)["valid"][0]["policy"] == "refund"


def test_test_directory_and_file() -> None:
    code, out, err = run("policy", "test", str(EXAMPLES))
    assert code == 0 and "9 passed, 0 failed" in out
    # refund-v2.yaml has no cases of its own: said, not passed over in silence
    assert f"tested  {REFUND}: 9 passed, 0 failed" in out
    assert "refund-v2.yaml (policy refund) has no test cases" in err
    code, out, _ = run("policy", "test", str(EXAMPLES / "refund.tests.yaml"))
    assert code == 0 and "9 passed, 0 failed" in out


def test_test_failures_exit_non_zero(tmp_path: Path) -> None:
    (tmp_path / "refund.yaml").write_text(REFUND.read_text())
    (tmp_path / "refund.tests.yaml").write_text(
        "cases:\n  - name: wrong\n    facts: {tenure_days: 1, amount: '1', prior_refunds_12m: 0, standing: good}\n"
        "    expect: {determination: allow, rule: auto-refund}\n"
        "  - name: right\n    facts: {tenure_days: 1, amount: '1', prior_refunds_12m: 0, standing: good}\n"
        "    expect: {determination: allow_with_constraints, rule: credit-only}\n"
    )
    code, out, _ = run("policy", "test", str(tmp_path))
    assert code == 1
    assert (
        "1 passed, 1 failed" in out
        and "FAIL" in out
        and "expected allow, got allow_with_constraints" in out
    )
    # The failure points at the file and line the case is written in, not at the policy.
    assert f"FAIL  {tmp_path / 'refund.tests.yaml'}:2::wrong" in out
    code, out, _ = run("policy", "test", str(tmp_path), "--json")
    (wrong,) = [c for c in json.loads(out)["cases"] if not c["passed"]]
    assert (wrong["file"], wrong["line"]) == (str(tmp_path / "refund.tests.yaml"), 2)
    assert wrong["got"] == {
        "determination": "allow_with_constraints",
        "rule": "credit-only",
        "reason_code": "rule_matched",
        "constraints": {"refund_method": "credit"},
    }


def test_a_failing_case_that_expects_no_rule_still_says_which_rule_decided(tmp_path: Path) -> None:
    # A policy owner's walkthrough: `determination: expected deny, got allow` and nothing
    # about which rule allowed it, unless the case had named a rule.
    (tmp_path / "refund.yaml").write_text(REFUND.read_text())
    (tmp_path / "refund.tests.yaml").write_text(
        "cases:\n  - name: wrong\n    facts: {tenure_days: 1, amount: '1', prior_refunds_12m: 0, standing: good}\n"
        "    expect: {determination: deny}\n"
    )
    code, out, _ = run("policy", "test", str(tmp_path))
    assert code == 1
    assert "determination: expected deny, got allow_with_constraints" in out
    assert "        decided by: credit-only\n" in out
    # `--json` keeps what differed apart from what helps read it.
    code, out, _ = run("policy", "test", str(tmp_path), "--json")
    (case,) = json.loads(out)["cases"]
    assert case["failures"] == ["determination: expected deny, got allow_with_constraints"]
    assert case["notes"][0] == "decided by: credit-only"


def test_eval_table_and_json() -> None:
    facts = '{"tenure_days": 120, "amount": 120.50, "prior_refunds_12m": 0, "standing": "good"}'
    code, out, _ = run("policy", "eval", str(REFUND), "--facts", facts)
    assert code == 0 and "auto-refund" in out and "allow" in out
    code, out, _ = run(
        "policy", "eval", str(REFUND), "--facts", facts.replace("120.50", "900"), "--json"
    )
    doc = json.loads(out)
    assert (doc["determination"], doc["rule"], doc["reasons"]) == (
        "deny",
        None,
        ["Outside refund policy"],
    )
    code, out, _ = run("policy", "eval", str(REFUND), "--facts", '{"amount": "x"}', "--json")
    assert json.loads(out)["determination"] == "error"
    code, _, err = run("policy", "eval", str(REFUND), "--facts", "not json")
    assert code == 2 and "--facts is not valid JSON" in err


def test_eval_names_the_fact_a_misspelt_one_is_probably_meant_to_be() -> None:
    # Left from a policy owner's walkthrough: `policy test` hinted at a misspelt fact, eval
    # only said "unknown fact (not declared by the policy)".
    facts = '{"tenure_day": 120, "amount": 120.50, "prior_refunds_12m": 0, "standing": "good"}'
    code, out, err = run("policy", "eval", str(REFUND), "--facts", facts)
    assert code == 0 and "invalid_facts" in out
    assert "note: fact 'tenure_day' is not declared by refund: did you mean 'tenure_days'?" in err
    code, out, _ = run("policy", "eval", str(REFUND), "--facts", facts, "--json")
    assert json.loads(out)["notes"] == [
        "fact 'tenure_day' is not declared by refund: did you mean 'tenure_days'?"
    ]


def test_missing_file_is_one_line_error() -> None:
    code, _, err = run("policy", "validate", "/nonexistent.yaml")
    assert code == 2 and err.count("\n") == 1
    assert "no such policy file; check the path" in err


def test_every_problem_is_listed_once_then_counted(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        REFUND.read_text().replace("effect: deny", "effect: permit").replace("owner:", "ownr:")
    )
    code, _, err = run("policy", "validate", str(bad))
    lines = err.strip().splitlines()
    assert code == 3 and lines[-1].startswith("error: ") and "problems in 1 file [" in lines[-1]
    problems = lines[:-1]
    assert len(problems) >= 3 and len(set(problems)) == len(problems)
    assert any("unknown effect text 'permit'" in line for line in problems)  # YAML words, no Python
    # propose validates locally first: the same problems, before any Kafka is needed
    code, _, err = run(
        "policy", "propose", str(bad), "--by", "human:alice", "--bootstrap", "127.0.0.1:1"
    )
    assert code == 3 and f"problems in {bad} [policy_invalid]" in err.strip().splitlines()[-1]


def test_no_test_cases_says_how_to_name_the_tests_file(tmp_path: Path) -> None:
    policy = tmp_path / "travel.yaml"
    policy.write_text(REFUND.read_text().split("\ntests:")[0])
    (tmp_path / "travel.booking.tests.yaml").write_text("cases: []\n")
    code, _, err = run("policy", "test", str(policy))
    assert code == 2 and "a file travel.tests.yaml beside it" in err  # its own name, not an example


def test_one_unreadable_file_among_several_does_not_hide_the_others(tmp_path: Path) -> None:
    # It stopped the whole run: no `ok` for the good file, the bad file's problems unlisted.
    bad = tmp_path / "bad.yaml"
    bad.write_text(REFUND.read_text().replace("effect: deny", "effect: permit"))
    missing = tmp_path / "missing.yaml"
    code, out, err = run("policy", "validate", str(REFUND), str(bad), str(missing))
    assert code == 3 and "ok  " in out and "policy refund" in out
    assert "unknown effect text 'permit'" in err and f"{missing}: no such policy file" in err
    assert "problems in 2 files [" in err.strip().splitlines()[-1]
    code, out, _ = run("policy", "validate", "--json", str(REFUND), str(missing))
    shown = json.loads(out)
    assert code == 3 and [v.get("policy") for v in shown["valid"]] == ["refund", None]  # + tests
    assert any("no such policy file" in p["message"] for p in shown["problems"])


def test_one_broken_policy_in_a_directory_does_not_stop_the_others_tests(tmp_path: Path) -> None:
    (tmp_path / "refund.yaml").write_text(REFUND.read_text())
    (tmp_path / "refund.tests.yaml").write_text((EXAMPLES / "refund.tests.yaml").read_text())
    (tmp_path / "broken.yaml").write_text("policy: broken\nrules: [\n")  # invalid YAML
    code, out, err = run("policy", "test", str(tmp_path))
    assert code == 3 and "9 passed, 0 failed" in out  # refund's cases still ran
    assert "broken.yaml" in err and "kept policies from being tested" in err
    code, out, _ = run("policy", "test", "--json", str(tmp_path))
    shown = json.loads(out)
    assert code == 3 and shown["passed"] == 9 and any("broken.yaml" in e for e in shown["errors"])


def test_eval_gives_no_answer_the_ledger_would_not() -> None:
    facts = {"tenure_days": 120, "amount": "450", "prior_refunds_12m": 0, "standing": "good"}
    # A name over the input limits: the evaluator decides error / request_too_large.
    code, out, _ = run(
        "policy",
        "eval",
        str(REFUND),
        "--json",
        "--facts",
        json.dumps(facts),
        "--resource",
        "x" * 2000,
    )
    shown = json.loads(out)
    assert code == 0 and shown["determination"] == "error"
    assert shown["reason_code"] == "request_too_large"
    # A value Avro cannot carry never leaves the SDK: no offline answer either.
    for bad in ({"tenure_days": 10**30}, {"standing": "\ud800"}):
        code, _, err = run("policy", "eval", str(REFUND), "--facts", json.dumps({**facts, **bad}))
        assert code == 3 and "would refuse to send" in err and "[facts_invalid]" in err, err


def test_messages_name_what_the_author_wrote(tmp_path: Path) -> None:
    line = "tenure_days:       {type: int, min: 0}"
    for replacement, expected in (
        ("tenure_days: {type: blob}", "unknown fact type 'blob' (expected one of"),  # not "text"
        ("tenure_days: {type: decimal, min: .nan}", "must be a finite number, got nan"),
    ):
        path = tmp_path / "p.yaml"
        path.write_text(REFUND.read_text().replace(line, replacement))
        code, _, err = run("policy", "validate", str(path))
        assert code == 3 and expected in err, err
    # A tests file over the size limit is named as one (it said "the limit for a policy file").
    (tmp_path / "refund.yaml").write_text(REFUND.read_text())
    (tmp_path / "refund.tests.yaml").write_text("#" * 300_000)
    code, _, err = run("policy", "test", str(tmp_path / "refund.yaml"))
    assert code == 2 and "the limit for a policy tests file" in err, err


def test_validate_a_directory_checks_policies_and_their_tests_files(tmp_path: Path) -> None:
    # It took files only: a directory was "pass the policy file itself", and the glob a user
    # reaches for next (*.yaml) reported refund.tests.yaml as a policy missing `default`.
    code, out, err = run("policy", "validate", str(EXAMPLES))
    assert code == 0, err
    assert f"ok  {REFUND}: policy refund" in out
    assert f"ok  {EXAMPLES / 'refund.tests.yaml'}: 9 test cases of policy refund" in out
    code, out, err = run("policy", "validate", *map(str, sorted(EXAMPLES.glob("*.yaml"))))
    assert code == 0 and out.count("ok  ") == 3, err
    (tmp_path / "bad.tests.yaml").write_text("cases:\n  - name: x\n    expect: permit\n")
    code, out, err = run("policy", "validate", "--json", str(tmp_path))
    (problem,) = json.loads(out)["problems"]
    assert code == 3 and problem["file"].endswith("bad.tests.yaml"), problem
    code, _, err = run("policy", "validate", str(tmp_path / "nothing-here"))
    assert code == 2 and "no such policy file" in err


def test_test_goes_on_past_a_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    code, out, err = run("policy", "test", str(EXAMPLES), str(missing))
    assert code == 3 and "9 passed, 0 failed" in out  # the examples' cases ran
    assert f"{missing}: no such policy file" in err


def test_a_run_that_takes_too_long_stops_with_exit_8(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 258 KB tests file of 5,400 cases, each spending most of the evaluation budget, ran
    # 194 s; a directory of such files had no bound at all. The clock here moves 2 s a call:
    # each case takes 2 s. Only time in cases counts (parsing is bounded by the file's size).
    import ledger.cli.policy as policy_cli

    def ticking() -> Any:
        clock = iter(float(2 * n) for n in range(100))
        return lambda: next(clock)

    monkeypatch.setattr(policy_cli.time, "monotonic", ticking())
    code, out, err = run("policy", "test", "--timeout", "5", str(REFUND))
    assert code == 8, err
    last = err.strip().splitlines()[-1]
    assert "policy test stopped after 5 s of cases, 3 run (3 passed)" in last, last
    assert "[timeout]" in last and "3 passed, 0 failed (stopped: out of time)" in out
    monkeypatch.setattr(policy_cli.time, "monotonic", ticking())
    code, out, _ = run("policy", "test", "--timeout", "5", "--json", str(REFUND))
    shown = json.loads(out)  # what ran is reported, not thrown away
    assert code == 8 and shown["stopped"] is True and len(shown["cases"]) == 3
    monkeypatch.undo()
    code, out, _ = run("policy", "test", str(REFUND))
    assert code == 0 and "9 passed, 0 failed" in out


def test_a_tests_file_stands_for_the_policy_beside_it_whatever_its_extension(
    tmp_path: Path,
) -> None:
    (tmp_path / "refund.yml").write_text(REFUND.read_text())
    tests = tmp_path / "refund.tests.yml"
    tests.write_text((EXAMPLES / "refund.tests.yaml").read_text())
    code, out, err = run("policy", "test", str(tests))
    assert code == 0 and "9 passed, 0 failed" in out, err


def test_facts_come_from_a_file_or_standard_input(tmp_path: Path) -> None:
    # A shell passes at most 128 KiB in one argument, so facts up to the 256 KiB limit could
    # not be given at all.
    facts = {"tenure_days": 120, "amount": "120.50", "prior_refunds_12m": 0, "standing": "good"}
    text = json.dumps(facts, indent=100_000)  # 400 KB: over the shell's limit, and ours
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts) + " " * 200_000)  # 200 KB, within ours
    code, out, err = run("policy", "eval", str(REFUND), "--facts", f"@{path}", "--json")
    assert code == 0 and json.loads(out)["determination"] == "allow", err
    result = CliRunner().invoke(
        cli, ["policy", "eval", str(REFUND), "--facts", "@-", "--json"], input=json.dumps(facts)
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["determination"] == "allow"
    result = CliRunner().invoke(
        cli, ["policy", "eval", str(REFUND), "--facts", "@-", "--context", "@-"], input="{}"
    )
    assert result.exit_code == 2 and "cannot both come from standard input" in result.stderr
    code, _, err = run("policy", "eval", str(REFUND), "--facts", f"@{tmp_path / 'none.json'}")
    assert code == 2 and "no such --facts file" in err
    path.write_text(text)
    code, _, err = run("policy", "eval", str(REFUND), "--facts", f"@{path}")
    assert code == 2 and "larger than 262,144 bytes" in err


def test_evaluate_checks_its_flags_before_it_connects() -> None:
    # --async without --default was refused only after connecting: with Kafka down, exit 7.
    env = {"LEDGER_BOOTSTRAP": "127.0.0.1:1"}
    args = ["evaluate", "--action", "a.b", "--principal", "agent:x", "--resource", "r"]
    for extra, message in (
        (["--async"], "--async needs --default"),
        (["--default", "allow"], "--default applies only with --async"),
    ):
        result = CliRunner().invoke(cli, [*args, *extra], env=env)
        assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_messages_a_policy_owner_can_act_on(tmp_path: Path) -> None:
    text = REFUND.read_text()
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(text.replace("policy: refund", "policy: re fund", 1))
    code, _, err = run("policy", "validate", str(renamed))
    assert code == 3 and "'re fund' is not a valid policy name (ASCII letters, digits" in err
    # A macro outside the subset was reported as its variable: "undeclared fact 'x'".
    macro = tmp_path / "macro.yaml"
    macro.write_text(
        text.replace("when: amount < 750", 'when: amount < 750 && ["a"].exists_one(x, x == "a")', 1)
    )
    code, _, err = run("policy", "validate", str(macro))
    assert code == 3 and "the exists_one() macro is not supported" in err, err
    assert "undeclared fact 'x'" not in err
    # A whole number beyond 64 bits: what to send instead, in the policy owner's terms.
    code, _, err = run(
        "policy", "eval", str(REFUND), "--facts", '{"tenure_days": 1' + "0" * 20 + "}"
    )
    assert code == 3 and "send it as a JSON string" in err


def test_eval_of_a_policy_that_governs_only_patterns_asks_for_an_action(tmp_path: Path) -> None:
    # It evaluated the literal action "refund.*".
    globbed = tmp_path / "globbed.yaml"
    text = REFUND.read_text()
    assert "governs: [refund.issue]" in text
    globbed.write_text(text.replace("governs: [refund.issue]", "governs: [refund.*]"))
    facts = '{"tenure_days": 120, "amount": "120.50", "prior_refunds_12m": 0, "standing": "good"}'
    code, _, err = run("policy", "eval", str(globbed), "--facts", facts)
    assert code == 2 and "governs only patterns (refund.*): pass --action" in err
    code, out, _ = run(
        "policy", "eval", str(globbed), "--facts", facts, "--action", "refund.issue", "--json"
    )
    assert code == 0 and json.loads(out)["action"] == "refund.issue"


def test_a_version_named_on_the_command_line_without_cases_is_not_passed(tmp_path: Path) -> None:
    # `policy test refund-v2.yaml refund.tests.yaml` reported "8 passed" for refund.yaml, which it
    # was not asked about, and never tested v2.
    v2 = EXAMPLES / "refund-v2.yaml"
    code, _, err = run("policy", "test", str(v2), str(EXAMPLES / "refund.tests.yaml"))
    assert code == 3 and f"{v2} (policy refund) has no test cases" in err
    assert "pass --tests FILE" in err


def test_tests_runs_one_files_cases_against_another_version() -> None:
    v2 = EXAMPLES / "refund-v2.yaml"
    tests = EXAMPLES / "refund.tests.yaml"
    code, out, _ = run("policy", "test", str(v2), "--tests", str(tests))
    assert code == 1 and f"tested  {v2}:" not in out  # one file: no per-file tally needed
    failing = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert failing and all(line.endswith(f"(against {v2})") for line in failing)
    code, out, _ = run("policy", "test", "--json", str(REFUND), "--tests", str(tests))
    shown = json.loads(out)
    assert code == 0 and shown["passed"] == 9  # its own file once, not twice


def test_tests_for_another_policy_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "travel.tests.yaml"
    other.write_text("policy: travel\ncases: []\n")
    code, _, err = run("policy", "test", str(REFUND), "--tests", str(other))
    assert code == 2 and f"{other} tests policy 'travel' but {REFUND} is policy 'refund'" in err


def test_tests_takes_the_inline_cases_of_a_policy_file(tmp_path: Path) -> None:
    # A policy owner's walkthrough: `policy test payments-v2.yaml --tests payments.yaml`, whose
    # cases are inline, printed six "unknown key 'governs'" errors and no way forward.
    cases = (EXAMPLES / "refund.tests.yaml").read_text().split("cases:", 1)[1]
    inline = tmp_path / "refund.yaml"
    inline.write_text(REFUND.read_text() + "tests:" + cases)
    code, out, err = run("policy", "test", "--json", str(REFUND), "--tests", str(inline))
    assert code == 0, err
    assert json.loads(out)["passed"] == 18  # its own tests file's 9, and the inline 9
    bare = tmp_path / "bare.yaml"
    bare.write_text(REFUND.read_text())
    code, _, err = run("policy", "test", str(REFUND), "--tests", str(bare))
    assert code == 2 and f"{bare} is a policy file (refund) with no tests: block to run" in err
    # A policy file with a broken case is told what is wrong with it as a policy, not that a
    # tests file has no `governs` (a reviewer's find: six such lines hid the one typo).
    typo = tmp_path / "typo.yaml"
    typo.write_text(REFUND.read_text() + "tests:" + cases.replace("allow", "alow", 1))
    code, _, err = run("policy", "test", str(REFUND), "--tests", str(typo))
    assert code == 3 and "alow" in err and "unknown key 'governs'" not in err
    junk = tmp_path / "junk.yaml"
    junk.write_text("cases: [{name: a}]\nextra: 1\n")  # a tests file: its own complaint
    code, _, err = run("policy", "test", str(REFUND), "--tests", str(junk))
    assert code == 3 and "unknown key 'extra'" in err


def test_text_in_square_brackets_shows_as_written(tmp_path: Path) -> None:
    # Tables took "[finance]" and "[bold]" for markup and dropped them: the screen misstated
    # what the policy says.
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "policy: p\ngoverns: [p.do]\nowner: o\n"
        'default: {effect: deny, reason: "Needs [finance] review, see [bold]policy[/bold]"}\n'
    )
    code, out, _ = run("policy", "eval", str(policy), "--facts", "{}")
    assert code == 0 and "Needs [finance] review, see [bold]policy[/bold]" in out


def test_a_failing_case_is_said_in_the_authors_terms(tmp_path: Path) -> None:
    (tmp_path / "refund.yaml").write_text(REFUND.read_text())
    (tmp_path / "refund.tests.yaml").write_text(
        "policy: refund\ncases:\n"
        "  - name: wrong constraints\n"
        "    facts: {tenure_days: 10, amount: '600', prior_refunds_12m: 0, standing: good}\n"
        "    expect: {determination: allow_with_constraints, constraints: {refund_method: cash}}\n"
        "  - name: bad facts decide no rule\n"
        "    facts: {tenure_days: 10, amount: 'lots', prior_refunds_12m: 0, standing: good}\n"
        "    expect: {determination: allow, rule: credit-only}\n"
    )
    code, out, _ = run("policy", "test", str(tmp_path))
    assert code == 1
    assert 'constraints: expected {"refund_method": "cash"}, got {"refund_method": "credit"}' in out
    assert "rule: expected credit-only, got no rule (invalid_facts)" in out


@pytest.mark.parametrize(
    ("when", "said"),
    [
        ('standing = "good"', "use == to compare"),
        ("amount > 1 and tenure_days > 0", "CEL writes 'and' as &&"),
        ("standing == \u201cgood\u201d", "curly quotes"),
        ("tenure_dys > 90", "undeclared fact 'tenure_dys' (did you mean 'tenure_days'?)"),
        ('amount <= "100"', "write the number without quotes, 100 not '100'"),
        ('tenure_days == "3"', "write the number without quotes, 3 not '3'"),
        # A policy owner's walkthrough: told "use ==", or nothing at all.
        ("amount => 100", "=> is not an operator: did you mean >=?"),
        ("amount > 1 AND tenure_days > 0", "CEL writes 'AND' as &&"),
        ("(amount > 1 && tenure_days > 0", "1 ( but 0 ): a parenthesis is not closed"),
        ("standing == good", "'good' is a value of standing: write it as text"),
        # A policy owner's walkthrough: a time of day against an int, and "is a int".
        ('tenure_days < "06:00"', "compare the whole number, 6 not '06:00'"),
        ("1", "a condition must be a bool, this one is an int"),
    ],
)
def test_a_condition_mistake_says_what_was_meant(tmp_path: Path, when: str, said: str) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(REFUND.read_text().replace("when: amount < 750", f"when: '{when}'", 1))
    code, _, err = run("policy", "validate", str(policy))
    assert code == 3 and said in err, err


def test_no_hint_reads_inside_a_string_literal(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        REFUND.read_text().replace("when: amount < 750", "when: 'standing == \"a = b and c\"'", 1)
    )
    code, _, err = run("policy", "validate", str(policy))
    assert code == 3 and "use ==" not in err and "&&" not in err  # an enum problem, not syntax


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("    when: !has(reason_code)", "read as a YAML tag: quote the condition"),
        # A policy owner's walkthrough: this was "a value starting with & is read as an anchor".
        ("    when: !has(reason_code) && amount < 750", "read as a YAML tag: quote the condition"),
        ("    when: standing: good", "': ' inside a value starts a new mapping"),
        ("\twhen: amount < 750", "a tab: YAML indents with spaces only"),
        ("   when: amount < 750", "indentation does not line up"),
        # A policy owner's walkthrough: these two were given each other's hints, near enough.
        (
            "    when: amount < 750\n      effect: deny",
            "'effect' is indented further than the key above it: line it up with that key",
        ),
        (
            '    when: "good" == standing',
            "a value that starts with a quote ends at its closing quote: quote the whole value, "
            "when: '\"good\" == standing'",
        ),
        # A policy owner's walkthrough: this one was told its indentation was wrong.
        ('    when: !(standing != "good") || amount < 750', "read as a YAML tag: quote the"),
        # And this one was told to quote the whole of it again, into a CEL syntax error: the
        # outer quotes were meant as YAML's.
        (
            '    when: "!(standing != "good") && amount < 750"',
            "a value that starts with a quote ends at its closing quote: quote the condition "
            "with the other quote mark, when: '!(standing != \"good\") && amount < 750'",
        ),
    ],
)
def test_a_yaml_mistake_says_what_to_do(tmp_path: Path, line: str, said: str) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(REFUND.read_text().replace("    when: amount < 750", line, 1))
    code, _, err = run("policy", "validate", str(policy))
    assert code == 3 and said in err and "the YAML parser says" in err, err


def test_a_misspelt_key_is_said_once_with_what_was_meant(tmp_path: Path) -> None:
    # A policy owner's walkthrough: `govrns:` was two errors, "missing required key 'governs'"
    # with no line, and "unknown key 'govrns'" without a suggestion.
    policy = tmp_path / "p.yaml"
    text = REFUND.read_text().replace("governs:", "govrns:", 1)
    policy.write_text(text.replace("    reason: ", "    reasn: ", 1))
    code, _, err = run("policy", "validate", str(policy))
    assert code == 3, err
    assert "unknown key 'govrns' (did you mean 'governs'? allowed:" in err
    assert "missing required key 'governs'" not in err
    assert "unknown key 'reasn' (did you mean 'reason'? allowed:" in err


def test_a_misnamed_tests_file_is_said_to_be_one(tmp_path: Path) -> None:
    tests = tmp_path / "refund-tests.yaml"
    tests.write_text((EXAMPLES / "refund.tests.yaml").read_text())
    code, _, err = run("policy", "validate", str(tests))
    assert code == 3 and "this looks like a tests file" in err and "missing required" not in err
    assert "refund.yaml -> refund.tests.yaml" in err  # the tests file's own policy's name
    tests.write_text(tests.read_text().replace("policy: refund", "policy: expenses", 1))
    code, _, err = run("policy", "validate", str(tests))
    assert "expenses.yaml -> expenses.tests.yaml" in err, err


def test_policy_show_history_leaves_the_signature_proof_to_json() -> None:
    from datetime import UTC, datetime

    from ledger.cli.lifecycle import _details
    from ledger.core.events import PolicyVersionApproved

    approved = PolicyVersionApproved(
        event_id="e",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        actor="human:bob",
        command_id="c",
        policy="refund",
        sequence=2,
        version=1,
        command_key_id="k1",
        command_signature=b"\x01" * 64,
        signed_command='{"document": "policy: refund …"}',
    )
    assert _details(approved) == "version=1"


def test_validate_checks_the_tests_beside_a_policy_against_it(tmp_path: Path) -> None:
    # `validate refund.yaml` said ok while refund.tests.yaml beside it expected a rule the policy
    # does not have, or named another policy: `policy test` then failed or refused.
    (tmp_path / "refund.yaml").write_text(REFUND.read_text())
    tests = tmp_path / "refund.tests.yaml"
    good = (EXAMPLES / "refund.tests.yaml").read_text()
    tests.write_text(good.replace("rule: credit-only", "rule: credit-onyl", 1))
    code, out, err = run("policy", "validate", str(tmp_path / "refund.yaml"))
    assert code == 3 and "ok  " in out  # the policy itself is fine
    assert "expects rule 'credit-onyl', which" in err and f"{tests}:" in err
    # A policy owner's walkthrough: the `ok` line came first and read, at a glance, as success.
    said = CliRunner().invoke(cli, ["policy", "validate", str(tmp_path / "refund.yaml")]).output
    lines = said.splitlines()
    assert lines[0].startswith("error  ") and lines[1].startswith("ok  "), said
    assert lines[-1] == "error: 1 problem in 1 file [policy_invalid]", said
    tests.write_text(good.replace("policy: refund", "policy: refnd", 1))
    code, _, err = run("policy", "validate", str(tmp_path))
    assert code == 3 and "tests policy 'refnd' but" in err
    tests.write_text(good)
    code, out, _ = run("policy", "validate", str(tmp_path / "refund.yaml"))
    assert code == 0 and "9 test cases of policy refund" in out


def test_the_policy_cell_of_a_decision_table() -> None:
    from ledger.cli.output import policy_label
    from ledger.core.events import Stage

    assert policy_label("refund", 2, Stage.CANARY) == "refund v2 (canary)"
    assert policy_label("refund", 1) == "refund v1"
    assert policy_label("refund", None, None) == "refund (no version decided)"  # was vNone (None)
    assert policy_label(None, None) == "-"


def test_one_policy_file_without_cases_says_how_to_give_it_some() -> None:
    code, _, err = run("policy", "test", str(EXAMPLES / "refund-v2.yaml"))
    assert code == 2 and "refund-v2.yaml (policy refund) has no test cases" in err
    assert "pass --tests FILE" in err


def test_verbose_pass_lines_say_where_the_case_is_as_fail_lines_do() -> None:
    # A policy owner's walkthrough: with -v, PASS lines had no line number, FAIL lines did.
    code, out, _ = run("policy", "test", "-v", str(REFUND))
    passed = [line for line in out.splitlines() if line.startswith("PASS  ")]
    assert code == 0 and passed
    assert all(re.match(r"PASS  \S+\.yaml:\d+::", line) for line in passed), passed


def test_policy_show_says_a_rollback_ended_a_canary() -> None:
    # A policy owner's walkthrough: the row read `from_version=1, to_version=1`, a rollback that
    # seemed to do nothing, while the acceptance line had said the canary v2 (50%) ends.
    from ledger.cli.lifecycle import _history_rows
    from ledger.testing import LocalLedger

    local = LocalLedger()
    local.deploy(REFUND.read_text())
    local.deploy((EXAMPLES / "refund-v2.yaml").read_text(), stage="canary", percent=50)
    local.rollback("refund", reason="too strict")
    rows = _history_rows("refund", list(local.events))
    (rolled,) = [r for r in rows if r[1] == "PolicyRolledBack"]
    assert rolled[3].endswith("; the canary v2 (50%) ends"), rolled
    assert "from_version=1" in rolled[3] and "to_version=1" in rolled[3]
    assert not any("canary v2 (50%) ends" in r[3] for r in rows if r is not rolled)


def test_a_promotions_note_is_recorded_and_shown() -> None:
    # A policy owner's walkthrough: `promote --note` did not exist, so a promotion kept who
    # and when but never why, though propose, approve, rollback and retire all keep one.
    from ledger.cli.lifecycle import _history_rows
    from ledger.core.events import PromotePolicyVersion, Stage
    from ledger.testing import ADMIN, LocalLedger

    local = LocalLedger()
    version = local.deploy(REFUND.read_text(), stage="draft")  # proposed and approved
    local.submit_command(
        PromotePolicyVersion(
            event_id="c-promote",
            occurred_at=local.clock(),
            actor=ADMIN,
            policy="refund",
            version=version,
            stage=Stage.ACTIVE,
            note="a week in shadow, no differences",
        )
    )
    promoted = local.events[-1]
    assert (type(promoted).__name__, getattr(promoted, "note", None)) == (
        "PolicyVersionPromoted",
        "a week in shadow, no differences",
    )
    (row,) = [
        r for r in _history_rows("refund", list(local.events)) if r[1] == type(promoted).__name__
    ]
    assert "note=a week in shadow, no differences" in row[3]


@pytest.mark.parametrize(
    "args",
    [
        ["policy", "rollback", "refund", "--by", "human:bob", "--reason", " "],
        ["policy", "retire", "refund", "--by", "human:bob", "--reason", ""],
        ["actor", "revoke", "human:bob", "--by", "human:admin", "--reason", "\t"],
    ],
)
def test_a_blank_reason_is_a_usage_error_before_anything_is_sent(args: list[str]) -> None:
    # A policy owner's walkthrough: a missing --reason was exit 2, a blank one exit 4
    # (sent, then refused missing_reason by the command processor).
    code, _, err = run(*args, "--bootstrap", "127.0.0.1:1")
    assert code == 2 and "'--reason': is empty: say why" in err, err


def test_policy_test_answers_as_eval_and_the_ledger_do_for_inputs_over_the_limits(
    tmp_path: Path,
) -> None:
    # A review: a case whose resource was over the name limit passed `policy test`, while
    # `policy eval` and the evaluator answer error / request_too_large for the same input.
    from datetime import UTC, datetime
    from decimal import Decimal

    from ledger.core.evaluate import evaluate
    from ledger.core.events import EvaluationRequested
    from ledger.testing import LocalLedger

    (tmp_path / "refund.yaml").write_text(REFUND.read_text())
    long_resource, long_decimal = "x" * 2000, "1" * 1500
    (tmp_path / "refund.tests.yaml").write_text(
        "policy: refund\ncases:\n"
        "  - name: long resource\n"
        f"    resource: {long_resource}\n"
        "    facts: {tenure_days: 120, amount: '120.50', prior_refunds_12m: 0, standing: good}\n"
        "    expect: {determination: allow}\n"
        "  - name: long decimal\n"
        f"    facts: {{tenure_days: 120, amount: '0.{long_decimal}', prior_refunds_12m: 0, "
        "standing: good}\n"
        "    expect: {determination: allow}\n"
    )
    code, out, _ = run("policy", "test", "--json", str(tmp_path))
    results = {c["case"]: c for c in json.loads(out)["cases"]}
    assert code == 1, out
    got = {
        name: (c["got"]["determination"], c["got"]["reason_code"]) for name, c in results.items()
    }
    assert got == {
        "long resource": ("error", "request_too_large"),
        "long decimal": ("error", "invalid_facts"),
    }
    # The ledger's own evaluator says the same of the same requests.
    ledger = LocalLedger()
    ledger.deploy(REFUND.read_text())
    facts = {"tenure_days": 120, "amount": Decimal("120.50"), "prior_refunds_12m": 0}
    for resource, amount, expected in (
        (long_resource, "120.50", "request_too_large"),
        ("order:1", f"0.{long_decimal}", "invalid_facts"),
    ):
        decision = evaluate(
            ledger.state,
            EvaluationRequested(
                event_id=f"r-{expected}",
                occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                actor="agent:x",
                principal="agent:x",
                action="refund.issue",
                resource=resource,
                facts={**facts, "amount": Decimal(amount), "standing": "good"},
            ),
            now=datetime(2026, 1, 1, tzinfo=UTC),
            evaluator_id="test",
        )
        assert (decision.determination.value, decision.reason_code) == ("error", expected)


def test_validate_counts_a_policys_own_test_cases_and_says_one_rule(tmp_path: Path) -> None:
    # A policy owner's walkthrough: "(1 rules, …)", and a tests: block went uncounted while a
    # .tests.yaml file's cases were listed.
    policy = tmp_path / "one.yaml"
    policy.write_text(
        "policy: one\ngoverns: [one.do]\nowner: me\nfacts:\n  x: {type: int}\n"
        "rules:\n  - id: big\n    when: x > 5\n    effect: deny\ndefault: {effect: allow}\n"
        "tests:\n  - name: small\n    facts: {x: 1}\n    expect: {determination: allow}\n"
    )
    code, out, _ = run("policy", "validate", str(policy))
    assert code == 0 and "policy one (1 rule, 1 test case, sha256:" in out, out
    code, out, _ = run("policy", "validate", str(policy), "--json")
    assert json.loads(out)["valid"][0]["cases"] == 1


def _only_cases(tmp_path: Path, *cases: str) -> Path:
    """refund.yaml beside a refund.tests.yaml of just ``cases`` (YAML items)."""
    policy = tmp_path / "refund.yaml"
    policy.write_text(REFUND.read_text())
    (tmp_path / "refund.tests.yaml").write_text("policy: refund\ncases:\n" + "\n".join(cases))
    return policy


_SUSPENDED: Final = """  - name: suspended
    facts: {tenure_days: 1000, amount: "5", prior_refunds_12m: 0, standing: suspended}
    expect: {determination: deny, rule: suspended}
"""


def test_policy_test_names_the_rules_no_case_reaches(tmp_path: Path) -> None:
    # A policy owner's walkthrough: the README asks for a case reaching each rule, and nothing
    # said which rules no case reached.
    policy = _only_cases(tmp_path, _SUSPENDED)
    code, _, err = run("policy", "test", str(policy))
    assert code == 0, err
    assert "no case is decided by rule auto-refund, credit-only: write a case" in err
    code, out, _ = run("policy", "test", str(policy), "--json")
    assert json.loads(out)["unreached_rules"] == {str(policy): ["auto-refund", "credit-only"]}
    whole = tmp_path / "all"
    whole.mkdir()
    (whole / "refund.yaml").write_text(REFUND.read_text())
    (whole / "refund.tests.yaml").write_text((EXAMPLES / "refund.tests.yaml").read_text())
    code, out, err = run("policy", "test", str(whole / "refund.yaml"))
    assert code == 0 and "no case is decided" not in err


def test_a_case_expecting_a_rule_the_policy_lacks_says_which_it_has(tmp_path: Path) -> None:
    # A policy owner's walkthrough: `rule: auto_refund` only said "expected auto_refund, got
    # auto-refund".
    misspelt = _SUSPENDED.replace("rule: suspended", "rule: suspendd")
    code, out, _ = run("policy", "test", str(_only_cases(tmp_path, misspelt)))
    assert code != 0
    assert "rule: expected suspendd (refund has no rule suspendd: did you mean suspended?)" in out
    unknown = _SUSPENDED.replace("rule: suspended", "rule: zzz-nothing-like")
    code, out, _ = run("policy", "test", str(_only_cases(tmp_path, unknown)))
    assert (
        "(refund has no rule zzz-nothing-like; its rules: suspended, auto-refund, credit-only)"
        in out
    )
    # A policy owner's walkthrough: `rule: default` was "expected default …, got null".
    default = _SUSPENDED.replace("rule: suspended", "rule: default")
    code, out, _ = run("policy", "test", str(_only_cases(tmp_path, default)))
    assert "(refund has no rule default: to expect the default, write rule: null)" in out
    code, _, err = run("policy", "validate", str(tmp_path))
    assert "expects rule 'default', which" in err and "write rule: null" in err


def test_propose_runs_the_policys_own_cases_first(tmp_path: Path) -> None:
    # A policy owner's walkthrough: versions whose own cases failed (one let blocked accounts
    # be refunded) and one whose tests file was invalid were proposed without a word.
    policy = tmp_path / "refund.yaml"
    policy.write_text(REFUND.read_text())
    cases = (EXAMPLES / "refund.tests.yaml").read_text()
    tests = tmp_path / "refund.tests.yaml"
    propose = (
        "policy",
        "propose",
        str(policy),
        "--by",
        "human:alice",
        "--bootstrap",
        "127.0.0.1:1",
    )

    tests.write_text(cases)
    code, _, err = run(*propose)  # the cases pass: on to Kafka, which is not there
    assert f"tested  {policy}: " in err and "passed" in err
    assert code not in (0, 1) and "policy_tests_failed" not in err
    assert "no case is decided by rule" not in err  # every rule reached

    # An auditor's walkthrough: `policy test` named the rules no case reaches; propose did not.
    tests.write_text(
        "policy: refund\ncases:\n  - name: s\n"
        "    facts: {tenure_days: 1, amount: '1', prior_refunds_12m: 0, standing: suspended}\n"
        "    expect: {determination: deny, rule: suspended}\n"
    )
    code, _, err = run(*propose)
    assert (
        f"note  {policy}: no case is decided by rule auto-refund, credit-only: write a case "
        "that reaches each rule" in err
    ), err
    assert code not in (0, 1)

    tests.write_text(
        cases.replace("{determination: deny, rule: suspended}", "{determination: allow}")
    )
    code, _, err = run(*propose)
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: 1 of ")
    assert "'suspended accounts are never refunded': determination: expected allow" in err
    assert "--skip-tests" in err and "[policy_tests_failed]" in err

    code, _, err = run(*propose, "--skip-tests")  # sent anyway, said so
    assert f"warning  {policy}: its test cases were not run (--skip-tests)" in err
    assert "policy_tests_failed" not in err and code not in (0, 1)

    tests.write_text("policy: refund\ncases: [{name: x}]\n")  # no expect
    code, _, err = run(*propose)
    assert code == 2 and "its test cases cannot be read" in err and "--skip-tests" in err
    assert f"(`ledger policy test {policy}` reads them)" in err  # not validate, which does not

    elsewhere = tmp_path / "current.tests.yaml"
    tests.unlink()
    elsewhere.write_text(
        cases.replace("{determination: deny, rule: suspended}", "{determination: allow}")
    )
    code, _, err = run(*propose)
    assert f"warning  {policy}: it has no test cases: it is proposed untested" in err
    assert "--tests FILE" in err and "policy_tests_failed" not in err
    # A policy owner's walkthrough: `policy get`'s file has no cases; the current version's,
    # given with --tests, now run first, and stop the proposal when one fails.
    code, _, err = run(*propose, "--tests", str(elsewhere))
    assert code == 1 and "[policy_tests_failed]" in err
    assert f"`ledger policy test {policy} --tests {elsewhere}` shows them" in err


def test_a_case_about_an_ungoverned_action_must_say_so(tmp_path: Path) -> None:
    # A policy owner's walkthrough: `action: refund.isue` expecting deny passed, the typo unseen.
    policy = tmp_path / "refund.yaml"
    policy.write_text(REFUND.read_text())
    tests = tmp_path / "refund.tests.yaml"
    case = "  - name: typo\n    action: refund.isue\n    facts: {tenure_days: 1, amount: '1', prior_refunds_12m: 0, standing: good}\n"
    tests.write_text("policy: refund\ncases:\n" + case + "    expect: {determination: deny}\n")
    code, out, _ = run("policy", "test", str(policy))
    assert code == 1
    assert (
        "action: refund does not govern refund.isue (did you mean refund.issue?): its rules "
        "never decide it; if that is what this case tests, expect reason_code: ungoverned_action"
    ) in out
    meant = "    expect: {determination: deny, reason_code: ungoverned_action}\n"
    tests.write_text("policy: refund\ncases:\n" + case + meant)
    code, out, _ = run("policy", "test", str(policy))
    assert code == 0 and "1 passed, 0 failed" in out


def test_proposes_cases_are_bounded_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each case is bounded by the evaluation budget, a file of thousands of costly ones is not:
    # propose stops, as `policy test` does, rather than hang.
    from ledger.cli import lifecycle

    policy = tmp_path / "refund.yaml"
    policy.write_text(REFUND.read_text())
    (tmp_path / "refund.tests.yaml").write_text((EXAMPLES / "refund.tests.yaml").read_text())
    monkeypatch.setattr(lifecycle, "TEST_TIMEOUT", -1.0)
    code, _, err = run(
        "policy", "propose", str(policy), "--by", "human:alice", "--bootstrap", "127.0.0.1:1"
    )
    assert code == 8 and "own test cases ran over -1 s (0 of 9 run)" in err, (code, err)
    assert "--skip-tests" in err


def test_validate_notes_policies_of_other_names_that_may_govern_the_same_actions(
    tmp_path: Path,
) -> None:
    # A policy owner's walkthrough: two teams' files overlapping on refund.issue were said to
    # overlap only once one was proposed.
    (tmp_path / "refund.yaml").write_text(REFUND.read_text())
    fraud = REFUND.read_text().replace("policy: refund", "policy: refund-fraud", 1)
    (tmp_path / "fraud.yaml").write_text(
        fraud.replace("governs: [refund.issue]", "governs: ['refund.*']", 1)
    )
    (tmp_path / "refund-v2.yaml").write_text(REFUND.read_text().replace("750", "700", 1))
    code, _, err = run("policy", "validate", str(tmp_path))
    assert code == 0
    notes = [line for line in err.splitlines() if line.startswith("note  ")]
    assert len(notes) == 2, err  # refund-fraud beside each refund file; not refund with itself
    assert (
        f"{tmp_path / 'fraud.yaml'} (refund-fraud) and {tmp_path / 'refund.yaml'} (refund) "
        "may both govern refund.* ~ refund.issue"
    ) in err
    code, out, _ = run("policy", "validate", "--json", str(tmp_path))
    assert code == 0 and len(json.loads(out)["overlaps"]) == 2


def test_a_constraint_in_another_language_reads_as_written_in_the_table(tmp_path: Path) -> None:
    # A policy owner's walkthrough: `{"m\u00e9thode": "cr\u00e9dit magasin"}` for what they
    # wrote. A bidi override in a constraint, which a terminal would act on, is refused now
    # (a red team: what the tool receives must be what the approver reads).
    policy = tmp_path / "p.yaml"
    text = (
        "policy: p\ngoverns: [a]\nowner: t\nrules:\n  - id: r\n    when: 'true'\n"
        '    effect: allow\n    constraints: {méthode: "crédit magasin"}\n'
        "default: {effect: deny}\n"
    )
    policy.write_text(text, encoding="utf-8")
    code, out, err = run("policy", "eval", str(policy), "--facts", "{}")
    assert code == 0, err
    assert '{"méthode": "crédit magasin"}' in out, out
    policy.write_text(text.replace("crédit ", "crédit \u202e"), encoding="utf-8")
    code, out, err = run("policy", "eval", str(policy), "--facts", "{}")
    assert code == 3 and "(U+202E, right-to-left override)" in err, err


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (" tier: {type: string}", "its key starts 1 space(s) in, and the keys above it 0 or 2"),
        (' tier: "x"', "its key starts 1 space(s) in, and the keys above it 0 or 2"),
        ("   tier: {type: string}", "its key starts 3 space(s) in, and the keys above it 0 or 2"),
    ],
)
def test_a_misaligned_line_with_a_braced_value_is_told_its_indentation(
    tmp_path: Path, line: str, said: str
) -> None:
    # A policy owner's walkthrough: ` tier: {type: string}` (one space short) was told to
    # quote the value, and, quoted, to quote it again: the line's indentation was the mistake.
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"policy: p\ngoverns: [a]\nowner: t\nfacts:\n  amount: {{type: decimal}}\n{line}\n"
        "default: {effect: deny}\n"
    )
    code, _, err = run("policy", "validate", str(policy))
    assert code == 3 and "p.yaml:6:" in err and said in err, err
    assert "quote" not in err.split("(the YAML parser says")[0], err


def test_a_misaligned_line_after_a_folded_condition_is_told_where_the_keys_start(
    tmp_path: Path,
) -> None:
    # A review: the line above, a folded condition's text, was named as "the key above it";
    # lining up with it made the line part of the condition.
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "policy: p\ngoverns: [a]\nowner: t\nrules:\n  - id: r\n    when: >\n"
        "      true\n   effect: allow\ndefault: {effect: deny}\n"
    )
    code, _, err = run("policy", "validate", str(policy))
    assert code == 3 and "its key starts 3 space(s) in, and the keys above it 0 or 4" in err, err


def test_a_tests_files_problems_are_all_said_in_one_round(tmp_path: Path) -> None:
    # A policy owner's walkthrough: a case expecting a misspelt rule was reported only once
    # another case's missing `expect` was fixed.
    (tmp_path / "refund.yaml").write_text(REFUND.read_text())
    (tmp_path / "refund.tests.yaml").write_text(
        "policy: refund\ncases:\n"
        "  - name: a\n    facts: {standing: good}\n    expect: {determination: allow, rule: auto_refund}\n"
        "  - name: b\n    facts: {standing: good}\n"
    )
    code, _, err = run("policy", "validate", str(tmp_path))
    assert code == 3, err
    assert "case 'a' expects rule 'auto_refund', which" in err
    # Named by its name (a policy owner's walkthrough: `cases.1` counted from 0).
    assert "cases.1.expect: case 'b': missing required key 'expect'" in err
    assert "error: 2 problems in 1 file" in err


def test_offline_reasons_list_facts_in_the_order_a_deployed_version_does() -> None:
    # A fuzzer: `policy eval` listed missing facts as declared, the evaluator (its version
    # loaded from the canonical document, keys sorted) by name.
    from ledger.core.events import Determination
    from ledger.core.policy import Policy, parse_policy
    from ledger.core.policytests import PolicyTestCase, offline_outcome

    parsed = parse_policy(REFUND.read_text())
    deployed = Policy.from_canonical(parsed.canonical)
    case = PolicyTestCase(
        name="c", facts={}, action="refund.issue", expect_determination=Determination.ERROR
    )
    offline = offline_outcome(parsed, case).reasons
    assert offline == offline_outcome(deployed, case).reasons
    assert list(offline) == sorted(offline) and len(offline) == 4


def test_evaluate_async_says_where_its_decision_and_correction_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An agent engineer's walkthrough: `ledger evaluate --async --default allow` printed only
    # "submitted …; proceeding on allow", and the command ends before any correction comes.
    from contextlib import contextmanager
    from types import SimpleNamespace

    import ledger.cli.evaluate as evaluate

    class Client:
        def submit_async(self, **kwargs: Any) -> Any:
            return SimpleNamespace(event_id="req-1")

    @contextmanager
    def client(*args: Any) -> Any:
        yield Client()

    monkeypatch.setattr(evaluate, "ledger_client", client)
    args = ["evaluate", "--action", "refund.issue", "--principal", "agent:a"]
    args += ["--resource", "account:1", "--async", "--default", "allow"]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert done.stdout == "submitted req-1; proceeding on allow\n"
    assert "a correction if it differs from allow: `ledger decisions --request req-1`" in (
        done.stderr
    )


def _answered(monkeypatch: pytest.MonkeyPatch, ledger: Any, answer: Any) -> None:
    """`ledger evaluate` answered ``answer``, with ``ledger``'s state as the history read."""
    from contextlib import contextmanager

    import ledger.cli.evaluate as evaluate

    class Client:
        def evaluate(self, **kwargs: Any) -> Any:
            return answer

    @contextmanager
    def client(*args: Any) -> Any:
        yield Client()

    monkeypatch.setattr(evaluate, "ledger_client", client)
    monkeypatch.setattr(evaluate, "current_state", lambda bootstrap, **_: (ledger.state, []))


def test_evaluate_hints_at_what_governs_an_ungoverned_action(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An agent engineer's walkthrough: a policy left in shadow answered "no active policy
    # governs X", the same as a misspelt action.
    from ledger.client import ClientConfig, LedgerClient
    from ledger.testing import LocalLedger

    ledger = LocalLedger()
    ledger.deploy(REFUND.read_text(), stage="shadow")
    ledger.grant("agent:a", "refund.*", "account:*")
    answer = LedgerClient(ClientConfig(actor="agent:a"), transport=ledger).evaluate(
        action="refund.issue", principal="agent:a", resource="account:1"
    )
    assert answer.reason_code == "ungoverned_action"

    _answered(monkeypatch, ledger, answer)
    args = ["evaluate", "--action", "refund.issue", "--principal", "agent:a"]
    done = CliRunner().invoke(cli, [*args, "--resource", "account:1"])
    assert done.exit_code == 0, done.output
    assert "hint: refund v1 (shadow) governs refund.issue but decides nothing" in done.stderr


@pytest.mark.parametrize(
    ("action", "principal", "hint"),
    [
        ("refnd.issue", "agent:a", "hint: did you mean refund.issue? (an action a deployed"),
        ("refund.issue", "agent:nobody", None),  # governed: the denial is about authority
    ],
)
def test_evaluate_hints_at_a_misspelt_action_answered_no_authority(
    monkeypatch: pytest.MonkeyPatch, action: str, principal: str, hint: str | None
) -> None:
    # An agent engineer's walkthrough: `refnd.issue`, outside the grant's `refund.*`, was
    # answered no_authority with no word on the typo.
    from ledger.client import ClientConfig, LedgerClient
    from ledger.testing import LocalLedger

    ledger = LocalLedger()
    ledger.deploy(REFUND.read_text())
    ledger.grant("agent:a", "refund.*", "account:*")
    answer = LedgerClient(ClientConfig(actor="agent:a"), transport=ledger).evaluate(
        action=action, principal=principal, resource="account:1"
    )
    assert answer.reason_code == "no_authority"

    _answered(monkeypatch, ledger, answer)
    args = ["evaluate", "--action", action, "--principal", principal]
    done = CliRunner().invoke(cli, [*args, "--resource", "account:1"])
    assert done.exit_code == 0, done.output
    if hint is None:
        assert "hint:" not in done.stderr
    else:
        assert hint in done.stderr
