"""Golden cases: engine behaviour pinned as YAML (input → expected decision or rejection)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from golden_runner import run_case  # beside this file (pytest puts its dir on sys.path)

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


def _cases() -> list[Any]:
    out = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text())["cases"]:
            out.append(pytest.param(case, id=f"{path.stem}::{case['name']}"))
    return out


@pytest.mark.parametrize("case", _cases())
def test_golden(case: dict[str, Any]) -> None:
    run_case(case)


def test_golden_cases_cover_every_reason_and_rejection_code() -> None:
    from ledger.core import REASON_CODES, REJECTION_CODES

    text = "\n".join(p.read_text() for p in GOLDEN.glob("*.yaml"))
    reasons = {code for code in REASON_CODES if f"reason_code: {code}" in text}
    rejections = {code for code in REJECTION_CODES if f"rejection: {code}" in text}
    # policy_unavailable needs a corrupt stored event (test_state.py covers it); trace_too_large
    # is the evaluator's, when a trace would not fit a record (test_processor_outcomes.py);
    # request_too_large needs names over 1,024 characters (test_evaluation_budget.py).
    assert set(REASON_CODES) - reasons <= {
        "policy_unavailable",
        "trace_too_large",
        "request_too_large",
    }
    # cut_short needs a command the processor stopped between its events
    # (test_command_repeats.py drives the handler through it).
    assert set(REJECTION_CODES) - rejections == {"cut_short"}
    for determination in ("allow", "deny", "allow_with_constraints", "error"):
        assert f"determination: {determination}" in text
