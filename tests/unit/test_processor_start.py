"""How ``ledger up`` starts a processor worker: the installed code, whatever the working
directory holds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import processors
from ledger.local.stack import PROCESSORS, processor_argv
from ledger.settings import Settings


def test_a_worker_runs_the_installed_processors_not_the_working_directorys(
    tmp_path: Path,
) -> None:
    # An operator's walkthrough: `ledger up` run from another checkout ran that checkout's
    # processors; from a folder others can write, whatever `processors/` was planted there.
    planted = tmp_path / "processors"
    planted.mkdir()
    (planted / "__init__.py").write_text("")
    (planted / "command_processor.py").write_text("raise SystemExit(3)\n")
    argv = processor_argv(PROCESSORS["command-processor"])
    assert argv[-2:] == ["-m", "processors.command_processor"]
    # The same interpreter and flags, asked where `processors` comes from.
    probe = [*argv[:-2], "-c", "import processors; print(processors.__file__)"]
    found = subprocess.run(probe, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(found.stdout.strip()) == Path(processors.__file__)
    # Without the flag, the planted package is what Python finds (the test can fail).
    unflagged = [a for a in probe if a != "-P"]
    found = subprocess.run(unflagged, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(found.stdout.strip()) == planted / "__init__.py"


def test_one_home_however_it_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An operator's walkthrough: the running stack's home written relative (or through `..`)
    # was another home to `ledger up`, which started a second command processor beside the
    # first; through `..` it took the live broker for a stranger's.
    home = tmp_path / "tiny" / "home"
    home.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path / "tiny")
    spellings = ["home", "./home", f"{tmp_path}/tiny/../tiny/home", "../tiny/./home"]
    for spelling in spellings:
        settings = Settings.from_env({"LEDGER_HOME": spelling})
        assert settings.home == home.resolve(), spelling
        assert settings.to_env()["LEDGER_HOME"] == str(home.resolve())
    # Through a link it stays as written: the home's safety check refuses a link, and judges
    # `..` after one where the system goes.
    assert Settings.from_env({"LEDGER_HOME": f"{tmp_path}/link/home"}).home == (
        tmp_path / "link" / "home"
    )
    keys = Settings.from_env({"LEDGER_HOME": "home", "LEDGER_KEYS": "../tiny/home/k"})
    assert keys.keys == home.resolve() / "k"


def test_a_stopped_process_is_continued_to_handle_its_sigterm(tmp_path: Path) -> None:
    # An operator's walkthrough: `ledger broker stop` of a SIGSTOPped broker waited its whole
    # 30 s grace, then killed it: a stopped process handles SIGTERM only once continued.
    import os
    import shutil
    import signal
    import time

    from ledger.local.processes import alive, spawn_detached, terminate

    sh = shutil.which("sh")
    assert sh is not None
    handled = tmp_path / "handled"
    script = f"trap 'echo term > {handled}; exit 0' TERM; echo up > {tmp_path}/up; while :; do sleep 0.05; done"
    pid = spawn_detached([sh, "-c", script], env={}, log=tmp_path / "out.log")
    while not (tmp_path / "up").exists():
        time.sleep(0.01)
    os.killpg(pid, signal.SIGSTOP)
    assert terminate(pid, grace=5)
    assert handled.read_text() == "term\n"  # its own handler ran, not a SIGKILL after the grace
    assert not alive(pid)


def test_a_worker_started_by_compose_is_named_by_its_processor() -> None:
    # A review: Compose gives every worker LEDGER_READY_FILE=/state/ready, and every log line
    # was then labelled `ready`.
    from processors.run import worker_label

    assert worker_label("evaluator", Path("/h/run/evaluator-2.ready")) == "evaluator-2"
    assert worker_label("evaluator", Path("/h/run/evaluator.ready")) == "evaluator"
    assert worker_label("evaluator", Path("/state/ready")) == "evaluator"
    assert worker_label("command-processor", None) == "command-processor"


def test_a_home_through_a_link_loop_is_left_to_the_homes_check(tmp_path: Path) -> None:
    # A review: a symlink loop in $LEDGER_HOME was a RuntimeError traceback.
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    settings = Settings.from_env({"LEDGER_HOME": str(tmp_path / "a" / "home")})
    assert settings.home == tmp_path / "a" / "home"


def test_a_worker_inherits_no_working_directory_through_pythonpath() -> None:
    # A review: `PYTHONPATH=:/opt/x` (an empty entry: the working directory) ran a planted
    # `processors/` despite `-P`.
    from ledger.local.stack import worker_environment

    env = worker_environment(
        {"PYTHONPATH": ":/opt/x:rel:/opt/y", "LEDGER_SASL_PASSWORD": "p", "HOME": "/root"}
    )
    assert env == {"PYTHONPATH": "/opt/x:/opt/y", "HOME": "/root"}
