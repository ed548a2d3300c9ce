"""``python -m benchmarks`` is a command like any other: --help prints help and runs nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_benchmarks_and_runs_none() -> None:
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    assert "usage: python -m benchmarks" in done.stdout
    for name in ("core", "replay", "roundtrip", "throughput", "rollback"):
        assert name in done.stdout
    assert "== benchmarks." not in done.stdout  # nothing was run


def test_unknown_benchmark_is_a_usage_error() -> None:
    done = _run("nonsense")
    assert done.returncode == 2
    assert "unknown benchmark nonsense" in done.stderr
    assert "== benchmarks." not in done.stdout
