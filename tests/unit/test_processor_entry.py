"""A processor started with no Kafka to find says so in one line and exits 7 (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("module", ["processors.evaluator", "processors.command_processor"])
def test_a_processor_without_kafka_exits_7_with_one_line(module: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_BOOTSTRAP"}
    env["LEDGER_HOME"] = str(tmp_path)  # no broker was ever started here
    done = subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 7, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no Kafka to talk to: set $LEDGER_BOOTSTRAP, or run `ledger broker start`" in lines[0]
