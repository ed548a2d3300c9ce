"""Policy files and their test cases on disk: which tests file belongs to which policy file
(``refund.yaml`` and ``refund.tests.yaml``), and the cases a policy file brings with it. One
place for ``policy validate``, ``policy test`` and ``policy propose`` (which runs them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ledger.cli.common import read_text_file
from ledger.core.policy import Policy, PolicyTestCase, load_yaml, parse_policy, parse_test_cases
from ledger.errors import UsageError

__all__ = [
    "TESTS_SUFFIXES",
    "TEST_TIMEOUT",
    "cases_for",
    "is_tests_file",
    "policy_beside",
    "cases_of_file",
    "tests_siblings",
    "wrong_policy",
]

TEST_TIMEOUT = 300.0
"""Seconds a run of a policy's cases may take by default (``policy test``, and ``policy
propose`` before it sends; a suite usually takes well under one)."""

TESTS_SUFFIXES = (".tests.yaml", ".tests.yml")
"""How a policy file's own tests file is named: ``refund.yaml`` -> ``refund.tests.yaml``."""


def tests_siblings(path: Path) -> list[Path]:
    """Where the tests file of policy file ``path`` would be (whether or not it exists)."""
    return [path.with_name(path.name.rsplit(".", 1)[0] + s) for s in TESTS_SUFFIXES]


def wrong_policy(
    tests_file: Path, named: str | None, policy_file: Path, policy: Policy
) -> str | None:
    """The one rule tying a tests file to a policy: the ``policy:`` it names, if any, is the
    policy's own (``validate`` reports it, ``test`` refuses to run the cases)."""
    if named is None or named == policy.name:
        return None
    return f"{tests_file} tests policy {named!r} but {policy_file} is policy {policy.name!r}"


def is_tests_file(path: Path) -> bool:
    """Is ``path`` named as a policy's tests file (``*.tests.yaml``)?"""
    return path.name.endswith(TESTS_SUFFIXES)


def policy_beside(tests_file: Path) -> Path:
    """The policy file a tests file tests: ``refund.tests.yml`` -> ``refund.yml``, else
    ``refund.yaml`` (whichever exists; the first when neither does)."""
    stem, extension = tests_file.name.rsplit(".tests.", 1)
    candidates = [tests_file.with_name(f"{stem}.{e}") for e in (extension, "yaml", "yml")]
    return next((c for c in candidates if c.exists()), candidates[0])


def cases_for(path: Path, policy: Policy, extra: tuple[Path, ...] = ()) -> list[PolicyTestCase]:
    """The policy's own cases, its sibling tests file's, then each of ``extra`` (``--tests``),
    every file once; a tests file naming another policy is a usage error."""
    cases = list(policy.tests)
    files = [f for f in tests_siblings(path) if f.exists()] + list(extra)
    seen: set[Path] = set()
    for tests_file in files:
        key = tests_file.resolve()
        if key in seen:
            continue
        seen.add(key)
        text = read_text_file(tests_file, what="policy tests file")
        named, more = cases_of_file(text, tests_file)
        wrong = wrong_policy(tests_file, named, path, policy)
        if wrong is not None:
            raise UsageError(wrong)
        cases.extend(more)
    return cases


def cases_of_file(text: str, file: Path) -> tuple[str | None, tuple[PolicyTestCase, ...]]:
    """The cases of a tests file given with ``--tests``: a NAME.tests.yaml, or a policy file
    whose cases are inline (its ``tests:`` block, for the policy it names). A file with
    ``governs:`` or ``rules:`` is read as a policy, so its problems are a policy's, not a tests
    file's complaint about every policy key."""
    data, _ = load_yaml(text, filename=str(file))
    if not (isinstance(data, dict) and ("governs" in data or "rules" in data)):
        return parse_test_cases(text, filename=str(file))
    inline = parse_policy(text, filename=str(file))
    if not inline.tests:
        raise UsageError(f"{file} is a policy file ({inline.name}) with no tests: block to run")
    return inline.name, inline.tests


def tests_files_option(help_text: str) -> Callable[[Any], Any]:
    """``--tests FILE`` (repeatable, into ``tests_files``): another file's cases to run too,
    as :func:`cases_for` reads them (``policy test`` and ``policy propose``)."""
    return click.option(
        "--tests",
        "tests_files",
        multiple=True,
        type=click.Path(path_type=Path, dir_okay=False),
        help=help_text,
    )
