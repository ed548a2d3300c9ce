"""`benchmarks.replay --kafka` on the real broker: a processor's catch-up timed through Kafka,
and its start from the governance snapshot it wrote, an evaluator's and a command processor's
(the benchmark fails unless each start from a snapshot folded nothing, took the whole history
from it, and holds the same positions and as many policies and principals as a full replay)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_replay_benchmark_times_a_catch_up_through_the_broker(kafka, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LEDGER_HOME": str(tmp_path / "home"),
        "LEDGER_CREDENTIALS": str(kafka.settings.credentials),
        "PYTHONPATH": str(ROOT),
    }
    small = ["--events", "3000", "--policies", "5", "--principals", "200", "--adapter-only"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.replay",
            *small,
            "--kafka",
            "--bootstrap",
            kafka.bootstrap,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "wrote the 3,000 records to" in out, out
    (floor,) = [line for line in out.splitlines() if line.startswith("floor: librdkafka")]
    (catch_up,) = [line for line in out.splitlines() if "catching up via Kafka" in line]
    (writing,) = [line for line in out.splitlines() if "snapshot written after" in line]
    (resuming,) = [line for line in out.splitlines() if "starting from it" in line]
    (commands,) = [line for line in out.splitlines() if "a command processor, then one" in line]
    (commands_resuming,) = [line for line in out.splitlines() if "command processor from" in line]
    for line in (floor, catch_up, writing, resuming, commands, commands_resuming):
        assert "records/s  ratio to 3 s target" in line and "(cpu " in line
    assert "the catch-up is" in out and "x the floor" in out
    assert "the snapshot:" in out and "a start from it is" in out
    assert "the command processor's:" in out
