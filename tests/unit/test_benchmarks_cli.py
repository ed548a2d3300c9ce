"""``python -m benchmarks`` is a command like any other: --help prints help and runs nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, module: str = "benchmarks") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
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


def test_the_handler_benchmark_prints_every_stage_warm_and_cold() -> None:
    done = _run("--requests", "20", "--evict-mb", "1", module="benchmarks.handler")
    assert done.returncode == 0, done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        parts = line.rsplit(maxsplit=3)
        if len(parts) == 4 and parts[3].endswith("x"):
            rows[parts[0].strip()] = (float(parts[1]), float(parts[2]))
    expected = {
        "decode request",
        "evaluate",
        "chain link",
        "encode trace",
        "sum of the stages",
        "handle_batch of one record",
    }
    assert set(rows) == expected, done.stdout
    assert all(warm > 0 and cold > 0 for warm, cold in rows.values())


def test_the_handler_benchmark_refuses_an_empty_run() -> None:
    done = _run("--requests", "0", module="benchmarks.handler")
    assert done.returncode == 2
    assert "--requests and --evict-mb must be at least 1" in done.stderr


def test_throughput_reports_each_figure_against_its_own_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Sustained rate vs 5,000/s, capacity vs 10,000 per CPU-second, broker vs 50 µs: the
    # design's three targets, each named with its own ratio.
    from types import SimpleNamespace

    from benchmarks.throughput import report_cpu

    counter = SimpleNamespace(per_ms_second={s: 8_000 for s in range(10)})  # 80,000 decisions
    report_cpu({"evaluator": 6.4, "broker": 4.8}, 10.0, counter, 0, 10_000)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert (
        "12,500 decisions per CPU-second" in out and "1.25x the target of >= 10,000: meets" in out
    )
    assert "60 µs per decision: 1.20x the target of <= 50 µs: misses" in out


def test_the_replay_benchmark_prints_every_figure_with_a_processors_catch_up() -> None:
    done = _run(
        "--events", "3000", "--policies", "5", "--principals", "200", module="benchmarks.replay"
    )
    assert done.returncode == 0, done.stderr
    figures = [
        "state_at(history) to the end",
        "state_at(history, mid-point)",
        "core replay(events) to the end",
        "floor: the least fold",
        "a processor catching up (follower)",
    ]
    for figure in figures:
        assert figure in done.stdout, done.stdout
    (catch_up,) = [line for line in done.stdout.splitlines() if "catching up" in line]
    assert "ratio to 3 s target" in catch_up and "100,000 at a time, folded in one pass" in catch_up
    assert int(catch_up.split(" events/s")[0].split()[-1].replace(",", "")) > 0  # it folded
    (pause,) = [line for line in done.stdout.splitlines() if "full garbage collection" in line]
    assert "ms  over" in pause and "with them frozen, as a processor does once caught up" in pause


def test_a_signed_history_is_the_same_history_with_each_commands_proof() -> None:
    from dataclasses import replace

    from benchmarks.replay import generate
    from ledger.codec import default_codec

    plain, signed = generate(2_000, principals=100), generate(2_000, principals=100, signed=True)
    codec = default_codec()
    for a, b in zip(plain, signed, strict=True):
        assert (a.position_key, a.offset) == (b.position_key, b.offset)
        assert b.event.command_key_id.startswith("ed25519:")  # type: ignore[union-attr]
        assert len(b.event.command_signature) == 64  # type: ignore[union-attr]
        assert f'"event_id":"{b.event.event_id}"' in b.event.signed_command  # type: ignore[union-attr]
        unsigned = replace(
            b.event, command_key_id=None, command_signature=None, signed_command=None
        )  # type: ignore[type-var]
        assert unsigned == a.event
        assert codec.decode(codec.encode(b.event)) == b.event
    done = _run("--events", "2000", "--principals", "100", "--signed", module="benchmarks.replay")
    assert done.returncode == 0 and "state_at(history) to the end" in done.stdout, done.stderr


def test_the_round_trip_keeps_stepping_up_while_each_step_stays_within_the_bound() -> None:
    # The highest rate with p99 <= 50 ms and no timeouts: every x1.5 step above the highest
    # level is measured for as long as the last one passed (a run once stopped after the first).
    from benchmarks.roundtrip import Samples, highest_rate

    def at(p99_ms: float, timeouts: int = 0) -> Samples:
        return Samples(latencies=[p99_ms / 1000] * 100, timeouts=timeouts)

    limit = 3000.0  # the machine's: what is measured above it misses
    measured: list[float] = []

    def measure(rate: float) -> Samples:
        measured.append(rate)
        return at(20 if rate <= limit else 80)

    assert highest_rate({100.0: at(5), 1000.0: at(30)}, measure, 20_000) == 2250
    assert measured == [1500, 2250, 3375]
    measured.clear()
    assert highest_rate({100.0: at(5), 1000.0: at(30)}, measure, 2000) == 1500  # the cap
    assert measured == [1500]
    measured.clear()
    assert highest_rate({100.0: at(5), 1000.0: at(70)}, measure, 20_000) == 100  # no steps
    assert highest_rate({100.0: at(5), 1000.0: at(30, timeouts=1)}, measure, 20_000) == 100
    assert highest_rate({100.0: at(60), 1000.0: at(70)}, measure, 20_000) is None
    assert highest_rate({100.0: at(5), 1000.0: at(30)}, measure, 0) == 1000  # --max-rate 0
    assert measured == []
