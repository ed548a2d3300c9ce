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
    spellings = ["home", "./home", f"{tmp_path}/tiny/../tiny/home", f"{tmp_path}/link/home"]
    for spelling in spellings:
        settings = Settings.from_env({"LEDGER_HOME": spelling})
        assert settings.home == home.resolve(), spelling
        assert settings.to_env()["LEDGER_HOME"] == str(home.resolve())
    keys = Settings.from_env({"LEDGER_HOME": "home", "LEDGER_KEYS": "../tiny/home/k"})
    assert keys.keys == home.resolve() / "k"
