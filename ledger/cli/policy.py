"""``ledger policy``: offline policy work — validate, test, eval (DESIGN §13).

These commands need nothing running: they read policy files and call the pure core. Reading files
happens here, at the edge; the core only ever sees text.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from ledger.cli import lifecycle, simulate
from ledger.cli.common import facts_and_context, read_text_file, sendable_request
from ledger.cli.output import (
    HelpfulGroup,
    handle_errors,
    json_cell,
    json_option,
    plural,
    print_json,
    print_table,
    rule_label,
    to_jsonable,
)
from ledger.cli.policyfiles import (
    TEST_TIMEOUT,
    cases_for,
    is_tests_file,
    policy_beside,
    tests_files_option,
    tests_siblings,
    wrong_policy,
)
from ledger.core.events import Determination
from ledger.core.facts import parse_facts_json
from ledger.core.globs import is_pattern
from ledger.core.governing import overlapping_documents
from ledger.core.policy import (
    Policy,
    PolicyTestCase,
    check_policy,
    parse_policy,
    read_test_cases,
)
from ledger.core.policytests import (
    CaseResult,
    missing_rule_hint,
    misspelt_facts,
    offline_outcome,
    run_case,
    unreached_rules,
)
from ledger.errors import (
    LedgerTimeout,
    PolicyError,
    PolicyProblem,
    PolicyTestsFailed,
    UsageError,
)

__all__ = ["group"]


@click.group("policy", cls=HelpfulGroup, short_help="Write, test and govern policies.")
def group() -> None:
    """Write and check policies offline (validate, test, eval), try a draft on recorded
    requests (simulate), govern them on the ledger (propose, approve, promote, rollback,
    retire) and read them back (list, show, get, diff)."""


def _read(path: Path) -> str:
    return read_text_file(path, what="policy file")


def _load(path: Path) -> Policy:
    return parse_policy(_read(path), filename=str(path))


@group.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
@handle_errors
def validate(paths: tuple[Path, ...], as_json: bool) -> None:
    """Check policy documents, and their NAME.tests.yaml files, offline.

    PATH is a policy file, a tests file or a directory (searched recursively for both). Every
    problem is listed with its file, line, rule id and field; exit code 3 when any file is
    invalid, after checking the others. Valid files print their policy name and content hash
    (a tests file: its number of cases). A rule that can never match, because an earlier rule
    matches every request it would, is a warning (exit code 0): reorder the rules, or remove it.
    """
    problems: list[PolicyProblem] = []
    warnings: list[PolicyProblem] = []
    valid: list[dict[str, Any]] = []
    checked: list[tuple[Path, Policy]] = []  # valid policy files, for the overlaps between them
    bad = 0
    files = _yaml_files(paths, tests=True)
    for path in [*files]:  # a policy file named alone brings the tests file beside it
        if not path.is_dir() and not is_tests_file(path):
            files.extend(s for s in tests_siblings(path) if s.is_file() and s not in files)
    for path in files:
        try:
            if is_tests_file(path):
                named, cases, broken = read_test_cases(
                    read_text_file(path, what="policy tests file"), filename=str(path)
                )
                # Every problem in one round: the whole cases are checked against the policy
                # beside the file even when others are broken (a policy owner's walkthrough).
                mismatches = [*broken, *_against_policy(path, named, cases)]
                if mismatches:
                    problems.extend(sorted(mismatches, key=lambda p: p.line or 0))
                    bad += 1
                    continue
                valid.append({"file": str(path), "tests_of": named, "cases": len(cases)})
                continue
            policy, found = check_policy(_read(path), filename=str(path))
        except PolicyError as exc:
            problems.extend(exc.problems)
            bad += 1
            continue
        except UsageError as exc:  # unreadable: one of several is a problem of its own
            if len(files) == 1:
                raise
            problems.append(PolicyProblem(message=str(exc)))
            bad += 1
            continue
        valid.append(
            {
                "file": str(path),
                "policy": policy.name,
                "content_hash": policy.content_hash,
                "rules": len(policy.rules),
                "cases": len(policy.tests),  # its own tests: block (a .tests.yaml is listed apart)
            }
        )
        warnings.extend(found)
        checked.append((path, policy))
    overlaps = _overlaps(checked)
    if as_json:
        print_json(
            {"valid": valid, "problems": problems, "warnings": warnings, "overlaps": overlaps}
        )
    else:
        # The problems first (a policy owner's walkthrough: a policy's `ok` line above its tests
        # file's errors read, at a glance, as success); the summary line ends the output.
        for problem in problems:
            click.echo(f"error  {problem}", err=True)
        for item in valid:
            if "tests_of" in item:
                of = f" of policy {item['tests_of']}" if item["tests_of"] else ""
                click.echo(f"ok  {item['file']}: {item['cases']} test cases{of}")
            else:
                counted = f", {plural(item['cases'], 'test case')}" if item["cases"] else ""
                click.echo(
                    f"ok  {item['file']}: policy {item['policy']} "
                    f"({plural(item['rules'], 'rule')}{counted}, {item['content_hash']})"
                )
        for warning in warnings:
            click.echo(f"warning  {warning}", err=True)
        for overlap in overlaps:
            click.echo(
                f"note  {overlap['file']} ({overlap['policy']}) and {overlap['other_file']} "
                f"({overlap['other_policy']}) may both govern {overlap['governs']} ~ "
                f"{overlap['other_governs']}: where both are deployed an exact name decides "
                "before a glob, then the longest glob, then the lower policy name",
                err=True,
            )
    if problems:  # each problem is shown above
        raise PolicyError(
            problems, summary=f"{plural(len(problems), 'problem')} in {plural(bad, 'file')}"
        )
    if not files:
        raise UsageError(f"no .yaml or .yml files in {', '.join(map(str, paths))}; check the path")


def _against_policy(
    path: Path, named: str | None, cases: Iterable[PolicyTestCase]
) -> list[PolicyProblem]:
    """What `policy test` would refuse or could never pass, found without running a case: a
    tests file naming another policy than the one beside it, a case expecting a rule the policy
    does not have. Nothing when the policy beside it is missing or invalid (said on its own)."""
    beside = policy_beside(path)
    try:
        policy = _load(beside)
    except (PolicyError, UsageError):
        return []
    wrong = wrong_policy(path, named, beside, policy)
    if wrong is not None:
        return [PolicyProblem(message=wrong)]
    rules = {r.id for r in policy.rules}
    return [
        PolicyProblem(
            message=f"case {case.name!r} expects rule {case.expect_rule!r}, which {beside} does "
            f"not have ({missing_rule_hint(case.expect_rule, [r.id for r in policy.rules])})",
            file=case.file or str(path),
            line=case.line,
        )
        for case in cases
        if case.check_rule and case.expect_rule is not None and case.expect_rule not in rules
    ]


def _yaml_files(paths: Iterable[Path], *, tests: bool) -> list[Path]:
    """The files ``paths`` name, each once, a directory's YAML files (recursively, sorted) in its
    place. With ``tests``, tests files are kept; without, a tests file stands for the policy
    beside it (``refund.tests.yaml`` -> ``refund.yaml``) and a directory's are left out. A
    path that does not exist is kept: reading it says so, among the others' results."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                p
                for p in sorted(path.rglob("*.y*ml"))
                if p.suffix in (".yaml", ".yml") and (tests or not is_tests_file(p))
            )
        elif is_tests_file(path) and not tests:
            out.append(policy_beside(path))
        else:
            out.append(path)
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]  # set.add returns None: the idiom keeps the first of each in order


def _overlaps(checked: list[tuple[Path, Policy]]) -> list[dict[str, str]]:
    """Policies of other names among files validated together that may govern the same
    actions (:func:`~ledger.core.governing.overlapping_documents`): a note, as a proposal's is."""
    found = overlapping_documents([(policy.name, policy.governs) for _, policy in checked])
    return [
        {
            "file": str(checked[i][0]),
            "policy": checked[i][1].name,
            "governs": mine,
            "other_file": str(checked[j][0]),
            "other_policy": checked[j][1].name,
            "other_governs": theirs,
        }
        for i, mine, j, theirs in found
    ]


@group.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-v", "--verbose", is_flag=True, help="Print every case, not only failures.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=TEST_TIMEOUT,
    show_default=True,
    help="Stop once the cases have run this many seconds (exit 8): each case is bounded by the "
    "evaluation budget, but a file of thousands of costly cases is not.",
)
@tests_files_option(
    "Also run this tests file's cases against every policy given (repeatable): a new "
    "version's file, refund-v2.yaml, against refund.tests.yaml, or against the tests: block of "
    "a policy file, refund.yaml.",
)
@json_option
@handle_errors
def test(
    paths: tuple[Path, ...],
    verbose: bool,
    timeout: float,
    tests_files: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Run policy test cases offline: each case's facts against the policy, its answer
    against what the case expects.

    PATH is a policy file, a NAME.tests.yaml file (standing for NAME.yaml) or a directory
    (searched recursively). Cases come from a policy's `tests:` block, from NAME.tests.yaml
    beside it and from every --tests file. Principals are assumed authorized. Prints each
    failing case with what was expected and what came, each policy file's tally and a total;
    exits non-zero when a case fails, or when a policy file named on the command line has no
    cases.
    """
    spent = 0.0  # in cases: reading and parsing the files is bounded by their size
    stopped = False
    results: list[tuple[Path, CaseResult]] = []
    broken: list[PolicyProblem] = []  # of policies (or their tests) that could not be run
    untested: list[Path] = []  # policy files that had no case at all
    uncovered: dict[str, list[str]] = {}  # policy file -> its rules that decided no case
    named = {p for p in paths if not p.is_dir() and not is_tests_file(p)}
    files = _yaml_files(paths, tests=False)
    for path in files:
        if stopped:
            break
        try:
            policy = _load(path)
            cases = cases_for(path, policy, tests_files)
            if not cases:
                untested.append(path)
                hint = (
                    f"{path} (policy {policy.name}) has no test cases: add a tests: block, "
                    f"a file {path.name.rsplit('.', 1)[0]}.tests.yaml beside it, or pass "
                    "--tests FILE"
                )
                if path in named:
                    raise UsageError(hint)  # asked for by name: not tested is not passed
                if len(files) > 1 and not as_json:
                    click.echo(f"warning  {hint}", err=True)
                continue
        except (PolicyError, UsageError) as exc:
            if len(files) == 1:
                raise
            # One broken policy among many: say so, and test the others.
            found = (
                exc.problems if isinstance(exc, PolicyError) else (PolicyProblem(message=str(exc)),)
            )
            broken.extend(found)
            if not as_json:
                for problem in found:
                    click.echo(f"error  {problem}", err=True)
            continue
        mine: list[CaseResult] = []
        for case in cases:  # one at a time: a long run shows its progress
            if spent > timeout:
                stopped = True
                break
            started = time.monotonic()
            result = run_case(policy, case)
            spent += time.monotonic() - started
            results.append((path, result))
            mine.append(result)
            if not as_json:
                _print_case(path, result, verbose)
        unreached = () if stopped else unreached_rules(policy, mine)
        if unreached:
            uncovered[str(path)] = list(unreached)
            if not as_json:
                click.echo(
                    f"note  {path}: no case is decided by rule {', '.join(unreached[:10])}"
                    + (f" and {len(unreached) - 10} more" if len(unreached) > 10 else "")
                    + ": write a case that reaches each rule",
                    err=True,
                )
    passed = sum(1 for _, r in results if r.passed)
    failed = len(results) - passed
    if not as_json and len(files) > 1:  # which files these were: a version without cases shows
        for path in dict.fromkeys(p for p, _ in results):
            mine = [r for p, r in results if p == path]
            ok = sum(1 for r in mine if r.passed)
            click.echo(f"tested  {path}: {ok} passed, {len(mine) - ok} failed")
    if as_json:
        print_json(
            {
                "passed": passed,
                "failed": failed,
                "cases": [
                    {
                        "file": r.file or str(p),
                        "line": r.line,
                        "policy": r.policy,
                        "case": r.case,
                        "passed": r.passed,
                        "failures": r.failures,
                        "notes": r.notes,
                        "got": {
                            "determination": r.outcome.determination.value,
                            "rule": r.outcome.rule,
                            "reason_code": r.outcome.reason_code,
                            "constraints": to_jsonable(r.outcome.constraints),
                        },
                    }
                    for p, r in results
                ],
                "errors": [str(problem) for problem in broken],
                "untested": [str(path) for path in untested],
                "unreached_rules": uncovered,
                "stopped": stopped,
            }
        )
    else:
        click.echo(
            f"{passed} passed, {failed} failed" + (" (stopped: out of time)" if stopped else "")
        )
    if stopped:
        raise LedgerTimeout(
            f"policy test stopped after {timeout:g} s of cases, {len(results)} run ({passed} "
            "passed): raise --timeout, or look for costly cases (each may spend the evaluation "
            "budget, ~0.1-0.3 s)"
        )
    if broken:
        raise PolicyError(
            broken,
            summary=f"{plural(len(broken), 'problem')} kept policies from being tested "
            f"({passed} passed, {failed} failed)",
        )
    if not results:
        stem = files[0].name.rsplit(".", 1)[0] if files else "refund"
        raise UsageError(
            "no test cases found: add a tests: block to the policy, or a file beside it named "
            f"after it ({stem}.yaml -> {stem}.tests.yaml)"
        )
    if failed:
        raise PolicyTestsFailed(f"{failed} of {len(results)} policy test cases failed")


def _print_case(path: Path, r: CaseResult, verbose: bool) -> None:
    # A case from a tests file says which policy file it ran against (--tests runs one file's
    # cases against several versions).
    against = f"  (against {path})" if r.file and r.file != str(path) else ""
    file = r.file or str(path)
    where = f"{file}:{r.line}" if r.line else file  # PASS and FAIL lines alike
    if r.passed and verbose:
        click.echo(f"PASS  {where}::{r.case}{against}")
    elif not r.passed:
        click.echo(f"FAIL  {where}::{r.case}{against}")
        for line in r.failures + r.notes:
            click.echo(f"        {line}")


@group.command("eval")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--facts",
    "facts_json",
    required=True,
    help='Facts as a JSON object, e.g. \'{"amount": "120.50"}\', or @FILE to read them from a '
    "file (@- standard input).",
)
@click.option(
    "--context",
    "context_json",
    default="{}",
    show_default=True,
    help="Request context as a JSON object, or @FILE (@- standard input).",
)
@click.option(
    "--principal",
    default="agent:offline",
    show_default=True,
    help="Principal (treated as authorized offline).",
)
@click.option(
    "--action",
    default=None,
    help="Action; default: the first action the policy governs by name (not a pattern).",
)
@click.option("--resource", default="offline", show_default=True, help="Resource the action is on.")
@json_option
@handle_errors
def eval_(
    file: Path,
    facts_json: str,
    context_json: str,
    principal: str,
    action: str | None,
    resource: str,
    as_json: bool,
) -> None:
    """Evaluate one request against a policy file offline.

    No grants are consulted: the principal is treated as authorized. Prints the determination,
    the rule that decided (null when the default decided), constraints and reasons. Exit code 0
    whatever the determination; a bad file or bad facts JSON is an error.
    """
    policy = _load(file)
    if action is None:  # the first action it names outright; a pattern is no action
        action = next((a for a in policy.governs if not is_pattern(a)), None)
        if action is None:
            raise UsageError(
                f"{file} governs only patterns ({', '.join(policy.governs)}): pass --action, "
                "an action they match"
            )
    facts_text, context_text = facts_and_context(facts_json, context_json)
    facts = parse_facts_json(facts_text, what="--facts")
    context = parse_facts_json(context_text, what="--context")
    case = PolicyTestCase(
        name="eval",
        facts=facts,
        context=context,
        principal=principal,
        action=action,
        resource=resource,
        expect_determination=Determination.ALLOW,  # unused: eval reports, it does not assert
    )
    # A value Avro cannot carry (an integer beyond 64 bits, a lone surrogate) never leaves the
    # SDK: offline gives no answer the ledger would not. The sizes the evaluator checks first
    # are offline_outcome's own first step, as in `policy test`.
    sendable_request(principal, action, resource, facts, context)
    outcome = offline_outcome(policy, case)
    notes = misspelt_facts(policy, facts)
    result = {
        "policy": policy.name,
        "content_hash": policy.content_hash,
        "action": action,
        "principal": principal,
        "resource": resource,
        "determination": outcome.determination,
        "rule": outcome.rule,
        "reason_code": outcome.reason_code,
        "constraints": dict(outcome.constraints),
        "reasons": list(outcome.reasons),
        "notes": notes,
    }
    if as_json:
        print_json(result)
        return
    rows = [
        ("determination", outcome.determination.value),
        ("rule", rule_label(outcome.rule, outcome.reason_code)),
        ("reason_code", outcome.reason_code),
        ("constraints", json_cell(outcome.constraints)),
        ("reasons", "; ".join(outcome.reasons) if outcome.reasons else "-"),
        ("policy", f"{policy.name} {policy.content_hash[:19]}"),
    ]
    print_table(["field", "value"], rows)
    for note in notes:
        click.echo(f"note: {note}", err=True)


# The lifecycle verbs (propose … show) talk to the ledger; they live in their own module and
# join this group here, so the group is defined, and assembled, in one place.
for _command in (*lifecycle.COMMANDS, *simulate.COMMANDS):
    group.add_command(_command)
