"""Background process control: a pid is only ours when its command line says so."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from ledger.local.processes import alive, exit_status, find, spawn_detached, terminate

SLEEP = shutil.which("sleep") or "/bin/sleep"


def _spawn_sleep(tmp_path: Path) -> int:
    pid = spawn_detached([SLEEP, "37"], env=dict(os.environ), log=tmp_path / "sleep.log")
    # Right after the spawn the child may still show our own command line for an instant.
    deadline = time.monotonic() + 5
    while not alive(pid, marker=SLEEP) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pid


def test_a_reused_pid_is_not_taken_for_ours_nor_killed(tmp_path: Path) -> None:
    pid = _spawn_sleep(tmp_path)
    try:
        assert alive(pid) and alive(pid, marker=SLEEP)
        # As if a stale pid file named this pid after a reboot: another program holds it now.
        assert not alive(pid, marker="kafka.Kafka")
        assert terminate(pid, grace=1, marker="kafka.Kafka") is False
        assert alive(pid), "an unrelated process was signalled"
    finally:
        stopped = terminate(pid, grace=5, marker="37")
    assert stopped and not alive(pid)
    assert exit_status(pid) == (True, None)  # already reaped by terminate


def test_terminate_of_a_gone_process_reports_it_was_not_running(tmp_path: Path) -> None:
    pid = _spawn_sleep(tmp_path)
    assert terminate(pid, grace=5) is True
    assert terminate(pid, grace=5) is False
    assert not alive(pid, marker=SLEEP)


def test_the_environment_identifies_a_process_whose_title_was_rewritten(tmp_path: Path) -> None:
    # Faust rewrites its process title when setproctitle is installed; the environment stays.
    sleep = shutil.which("sleep")
    assert sleep is not None
    env = {**os.environ, "LEDGER_READY_FILE": str(tmp_path / "evaluator.ready")}
    pid = spawn_detached([sleep, "38"], env=env, log=tmp_path / "sleep.log")
    try:
        deadline = time.monotonic() + 5
        while not alive(pid, marker=SLEEP) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert alive(pid, marker=f"LEDGER_READY_FILE={tmp_path / 'evaluator.ready'}")
        assert not alive(pid, marker=f"LEDGER_READY_FILE={tmp_path / 'other' / 'evaluator.ready'}")
    finally:
        terminate(pid, grace=5)


def _naming(config: str, env: dict[str, str], log: Path) -> int:
    """A process naming ``config`` on its command line, as a broker names its config (an
    argument the script ignores), started and seen running."""
    shell = shutil.which("sh")
    assert shell is not None
    pid = spawn_detached([shell, "-c", "sleep 39; exit 0", "39", config], env=env, log=log)
    deadline = time.monotonic() + 5
    while not alive(pid, marker=config) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pid


def test_a_process_started_through_the_real_home_is_found_through_a_link_to_it(
    tmp_path: Path,
) -> None:
    # A README check: through a symbolic link to a running home, `ps` and `broker status` said
    # nothing ran, and `down` removed the pid files of the processes it did not find.
    real = tmp_path / "home"
    (real / "run").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    ready = real / "run" / "evaluator.ready"
    env = {**os.environ, "LEDGER_READY_FILE": str(ready)}
    pid = _naming(str(real / "server.properties"), env, tmp_path / "x.log")
    try:
        through_link = f"LEDGER_READY_FILE={link / 'run' / 'evaluator.ready'}"
        assert alive(pid, marker=through_link)
        assert alive(pid, marker=str(link / "server.properties"))
        assert find(environ=through_link) == pid
        assert find(argv=("39", str(link / "server.properties"))) == pid
        other = tmp_path / "other"
        other.mkdir()
        assert not alive(pid, marker=f"LEDGER_READY_FILE={other / 'run' / 'evaluator.ready'}")
        assert find(argv=("39", str(other / "server.properties"))) is None
    finally:
        terminate(pid, grace=5)
    # The review: resolved, a link's target is matched as a whole argument, never inside
    # another home's longer path (/x/outer/…/home/server.properties holds …/home/server…).
    longer = str(tmp_path / "outer" / str(real).lstrip("/") / "server.properties")
    pid = _naming(longer, env, tmp_path / "y.log")
    try:
        assert alive(pid, marker=longer)
        assert not alive(pid, marker=str(link / "server.properties"))
    finally:
        terminate(pid, grace=5)


def test_a_marker_is_a_whole_argument_never_part_of_a_longer_one(tmp_path: Path) -> None:
    # A red team: `down` killed a process whose argument merely contained the broker's config
    # path (an editor's `server.properties.orig`, or another home whose path ends with this one).
    config = str(tmp_path / "home" / "broker" / "server.properties")
    for other in (config + ".orig", str(tmp_path / "x") + config):
        pid = _naming(other, dict(os.environ), tmp_path / "o.log")
        try:
            assert alive(pid, marker=other)
            assert not alive(pid, marker=config)
            assert terminate(pid, grace=1, marker=config) is False
            assert alive(pid), "an unrelated process was signalled"
            assert find(argv=("39", config)) is None
        finally:
            terminate(pid, grace=5)


def test_a_marker_of_several_arguments_needs_them_all(tmp_path: Path) -> None:
    # A review: a stale broker pid naming a `tail -f` of the config was taken for the broker
    # (the config path alone is its marker) and `broker stop` killed it.
    config = str(tmp_path / "broker" / "server.properties")
    tail = _naming(config, dict(os.environ), tmp_path / "t.log")
    shell = shutil.which("sh")
    assert shell is not None
    jvm = spawn_detached(
        [shell, "-c", "sleep 39", "kafka.Kafka", config],
        env=dict(os.environ),
        log=tmp_path / "j.log",
    )
    try:
        deadline = time.monotonic() + 5
        while not alive(jvm, marker=config) and time.monotonic() < deadline:
            time.sleep(0.01)
        pair = ("kafka.Kafka", config)
        assert alive(tail, marker=config) and not alive(tail, marker=pair)
        assert terminate(tail, grace=1, marker=pair) is False and alive(tail)
        assert alive(jvm, marker=pair)
    finally:
        terminate(tail, grace=5)
        terminate(jvm, grace=5)


def test_another_users_process_is_never_taken_for_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A red team: a process of user `nobody` holding a home's evaluator marker in its
    # environment was taken for the evaluator: `up` never started one, `down` said it stopped
    # it. Here our own process plays the other user's: we pretend to be another uid.
    ready = f"LEDGER_READY_FILE={tmp_path / 'run' / 'evaluator.ready'}"
    env = {**os.environ, "LEDGER_READY_FILE": str(tmp_path / "run" / "evaluator.ready")}
    pid = _naming(str(tmp_path / "server.properties"), env, tmp_path / "n.log")
    try:
        assert alive(pid, marker=ready) and find(environ=ready) == pid
        monkeypatch.setattr(os, "getuid", lambda: os.stat(f"/proc/{pid}").st_uid + 1)
        assert not alive(pid, marker=ready)
        assert find(environ=ready) is None
        assert find(argv=("39", str(tmp_path / "server.properties"))) is None
        assert terminate(pid, grace=1, marker=ready) is False and alive(pid)
    finally:
        monkeypatch.undo()
        terminate(pid, grace=5)


def test_terminate_never_reports_a_process_it_could_not_stop_as_stopped_or_not_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: False read as "not running" by every caller (pid files deleted, `down`'s
    # "ended by itself", `broker stop`'s "not running") for a process still running.
    import ledger.local.processes as processes
    from ledger.errors import LedgerError

    pid = _spawn_sleep(tmp_path)
    try:

        def refused(pgid: int, signum: int) -> None:
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(processes.os, "killpg", refused)
        with pytest.raises(LedgerError, match=f"pid {pid} may not be signalled"):
            terminate(pid, grace=1, marker=SLEEP)
        monkeypatch.undo()

        def ignored(pgid: int, signum: int) -> None:  # as a process stuck in the kernel
            pass

        monkeypatch.setattr(processes.os, "killpg", ignored)
        monkeypatch.setattr(processes, "KILL_WAIT", 0.2)
        with pytest.raises(LedgerError, match=f"pid {pid} still runs 0.2 s after SIGKILL"):
            terminate(pid, grace=0.2, marker=SLEEP)
        assert alive(pid)
    finally:
        monkeypatch.undo()
        terminate(pid, grace=5)


def test_terminate_stops_a_process_that_leads_no_group(tmp_path: Path) -> None:
    # A red team: `killpg` of a pid that leads no process group fails (ESRCH), which was taken
    # for "gone": the process ran on and `down` reported it stopped.
    import subprocess

    child = subprocess.Popen([SLEEP, "41"])  # in our process group: it leads none
    try:
        assert os.getpgid(child.pid) != child.pid
        assert terminate(child.pid, grace=5) is True
        assert child.wait(timeout=5) is not None
    finally:
        child.kill()
        child.wait()


def test_a_zombie_does_not_run_and_is_reaped_by_alive() -> None:
    from ledger.pids import running

    assert running(os.getpid())
    assert not running(0) and not running(-1)
    child = os.fork()
    if child == 0:
        os._exit(0)
    deadline = time.monotonic() + 5
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    # Exited, not reaped: a zombie, which the export's helpers take for a gone parent.
    assert not running(child)
    assert Path(f"/proc/{child}").exists(), "reaped before the check"
    assert not alive(child)  # and the local stack's check reaps its own zombie
    assert not Path(f"/proc/{child}").exists()


def test_a_log_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    # An operator's walkthrough: with the log unwritable, `ledger up` said
    # ".venv/bin/python: Operation not permitted": posix_spawn names the program.
    sleep = shutil.which("sleep")
    assert sleep is not None
    log = tmp_path / "evaluator.log"
    log.mkdir()  # a log that is a folder cannot be opened for writing, even by root
    with pytest.raises(OSError, match=f"cannot write the log {log}"):
        spawn_detached([sleep, "1"], env=dict(os.environ), log=log)
