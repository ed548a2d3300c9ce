"""`ledger up` / `ps` / `down` on the real broker: idempotent, self-healing, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

import ledger.kafka.snapshots as snapshots
from ledger.cli.app import cli
from ledger.kafka.snapshots import installed_fingerprint
from ledger.local.processes import alive

pytestmark = pytest.mark.integration


def _pids(runner: CliRunner) -> dict[str, int | None]:
    result = runner.invoke(cli, ["ps", "--json"])
    procs = json.loads(result.stdout)["processors"]
    # Exit 0 only when every processor is healthy (the broker here is external: not counted).
    assert result.exit_code == (0 if all(p["healthy"] for p in procs) else 1), result.output
    return {p["name"]: p["pid"] for p in procs}


def test_up_is_idempotent_restarts_what_died_and_down_leaves_nothing(
    kafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    home = tmp_path / "home"
    monkeypatch.setenv("LEDGER_HOME", str(home))
    monkeypatch.setenv("LEDGER_BOOTSTRAP", kafka.bootstrap)  # external broker: `down` leaves it
    # An operator's credentials for that broker, one file per role (the admin sets ACLs).
    monkeypatch.setenv("LEDGER_CREDENTIALS", str(kafka.settings.credentials))
    monkeypatch.setenv("LEDGER_TOPIC_PREFIX", f"up{uuid.uuid4().hex[:8]}.")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    try:
        first = runner.invoke(cli, ["up"])
        assert first.exit_code == 0, first.output
        assert f"ledger is up on {kafka.bootstrap}" in first.stdout
        pids = _pids(runner)
        assert set(pids) == {"command-processor", "evaluator"} and all(pids.values())

        again = runner.invoke(cli, ["up"])
        assert again.exit_code == 0, again.output
        assert "evaluator already running" in again.stderr and "starting" not in again.stderr
        assert _pids(runner) == pids  # no second worker of anything

        # Each runs the code installed (its heartbeat says which). An upgrade installed under
        # them (a file of the code changed on disk): `up` leaves them running, but does not say
        # the ledger is up, and `ps` says which run other code.
        shown = json.loads(runner.invoke(cli, ["ps", "--json"]).stdout)
        procs = shown["processors"]
        assert all(p["code"] == installed_fingerprint() and p["same_code"] for p in procs)
        assert shown["requests_waiting"] == 0  # asked of the broker: nothing sent, none waits
        fix = tmp_path / "request_handler.py"
        fix.write_text("a fix")
        files = snapshots.installed_files()
        try:
            with monkeypatch.context() as upgraded:
                upgraded.setattr(snapshots, "installed_files", lambda: [*files, fix])
                snapshots.installed_fingerprint.cache_clear()
                refused = runner.invoke(cli, ["up"])
                assert refused.exit_code == 1 and "[other_code]" in refused.stderr, refused.output
                assert "`ledger down --keep-broker && ledger up` restarts them" in refused.stderr
                assert "other (an upgrade?)" in runner.invoke(cli, ["ps"]).stdout
        finally:
            snapshots.installed_fingerprint.cache_clear()
        assert _pids(runner) == pids  # left running

        os.kill(pids["evaluator"], signal.SIGKILL)
        healed = runner.invoke(cli, ["up"])
        assert healed.exit_code == 0, healed.output
        assert "starting evaluator" in healed.stderr
        assert "command-processor already running" in healed.stderr
        after = _pids(runner)
        assert after["command-processor"] == pids["command-processor"]
        assert after["evaluator"] not in (None, pids["evaluator"])

        # A further worker that died is restarted by a plain `up` too (it was left down, and
        # `ps` kept failing, unless the operator remembered --evaluators N).
        scaled = runner.invoke(cli, ["up", "--evaluators", "2"])
        assert scaled.exit_code == 0 and "starting evaluator-2" in scaled.stderr, scaled.output
        second = _pids(runner)["evaluator-2"]
        assert second is not None
        os.kill(second, signal.SIGKILL)
        healed = runner.invoke(cli, ["up"])
        assert healed.exit_code == 0 and "starting evaluator-2" in healed.stderr, healed.output
        # A plain `up` asks for no number: nothing said of the workers it keeps (an operator's
        # walkthrough heard the note below at every `up`)...
        assert "of an earlier" not in healed.stderr
        after = _pids(runner)
        assert after["evaluator-2"] not in (None, second)
        # ... but `up --evaluators 1` beside more says they stay (it once said nothing).
        one = runner.invoke(cli, ["up", "--evaluators", "1"])
        assert one.exit_code == 0, one.output
        assert "evaluator-2 (of an earlier `up --evaluators N`) stays part of the stack: " in (
            one.stderr
        )
        assert _pids(runner) == after

        # Processor state and logs live under LEDGER_HOME, never in the working directory.
        assert (home / "logs" / "evaluator.log").exists() and (home / "faust").is_dir()
        # Each run's start is a line naming what runs (an operator's walkthrough: a restart left
        # no mark, and another checkout's code looked like an upgrade), and a worker's own name
        # starts each line (evaluator-2's were all "evaluator").
        import processors.evaluator

        log = (home / "logs" / "evaluator-2.log").read_text()
        started = [line for line in log.splitlines() if "ledger.processor: starting: pid " in line]
        assert len(started) == 2, log  # started, killed, started again
        assert all(line.split("] ", 1)[1].startswith("evaluator-2 INFO ") for line in started)
        assert f"from {processors.evaluator.__file__}, Kafka at {kafka.bootstrap}" in started[-1]
        assert f"code {installed_fingerprint()[:12]} " in started[-1]
        assert not list(tmp_path.glob("*-data"))
        # Once caught up, each worker froze what it held out of the collector's scans.
        for name in ("command-processor", "evaluator"):
            log = home / "logs" / f"{name}.log"
            deadline = time.monotonic() + 10
            while "frozen out of the collector's scans" not in log.read_text():
                assert time.monotonic() < deadline, f"{name} did not freeze its state"
                time.sleep(0.1)
    finally:
        down = runner.invoke(cli, ["down", "--json"])
    assert down.exit_code == 0, down.output
    assert set(json.loads(down.stdout)["stopped"]) == {
        "command-processor",
        "evaluator",
        "evaluator-2",
    }
    assert not any(alive(pid) for pid in after.values() if pid)
    for name in ("command-processor", "evaluator", "evaluator-2"):  # each said it stopped
        assert "ledger.processor: stopped: pid " in (home / "logs" / f"{name}.log").read_text()
    assert all(pid is None for pid in _pids(runner).values())
