"""A ``$LEDGER_HOME`` another local user owns or prepared is refused before anything is written or
started, and nothing the ledger writes there goes through a symbolic link planted in it.

A red team (HIGH where the home lies in a shared folder such as /tmp): another user's folder was
taken as the home (only its mode was tightened), root's credentials were written into it, and a
link planted at ``broker/log4j2.yaml`` or ``broker/broker.log`` had root's broker overwrite or
append to the file it named.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.cli.app import cli
from ledger.errors import BrokerError, UsageError
from ledger.files import held_exclusively, private_dir, write_private
from ledger.local import broker, stack
from ledger.local.processes import spawn_detached
from ledger.settings import Settings
from processors.heartbeat import Heartbeat
from processors.inflight import InFlight

OTHER = 65534  # nobody
as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root can give a folder to another user (CI runs as root)"
)
SECRET = "root's own file\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    """``ledger up`` and ``broker start`` set the process's umask: it is put back after each test."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing past the checks runs: without them, no broker is fetched or started."""

    def missing() -> str:
        raise BrokerError("the test got past the checks")

    monkeypatch.setattr(broker, "_java", missing)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A file of this user's elsewhere, that a planted link names."""
    path = tmp_path / "elsewhere" / "target"
    write_private(path, SECRET)
    return path


def _planted(link: Path, target: Path) -> Path:
    link.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


# --------------------------------------------------------------------------- the home


@as_root
@pytest.mark.usefixtures("no_broker")
def test_a_home_another_user_owns_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    home = tmp_path / "evil"
    home.mkdir()
    home.chmod(0o755)
    os.chown(home, OTHER, OTHER)
    settings = Settings(home=home, cache=tmp_path / "cache")
    for start in (broker.start, stack.up):
        with pytest.raises(UsageError, match=rf"{home} is owned by another user \(uid {OTHER}\)"):
            start(settings)  # type: ignore[operator]
        assert list(home.iterdir()) == []  # no credentials, no broker folder, no lock
    assert mode(home) == 0o755  # not adopted either
    # A folder another user made inside a home of this user's (the home given back by `chown`
    # after the above): refused too, before the credentials are written into it.
    os.chown(home, 0, 0)
    (home / "credentials").mkdir(mode=0o700)
    os.chown(home / "credentials", OTHER, OTHER)
    with pytest.raises(UsageError, match=rf"{home / 'credentials'} is owned by another user"):
        broker.start(settings)
    assert list((home / "credentials").iterdir()) == []
    assert not (home / "broker").exists()


@as_root
@pytest.mark.usefixtures("no_broker")
def test_the_cli_says_so_in_one_line_with_the_usage_exit_code(tmp_path: Path) -> None:
    home = tmp_path / "evil"
    home.mkdir(mode=0o700)
    os.chown(home, OTHER, OTHER)
    env = {"LEDGER_HOME": str(home), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for command in (["up"], ["broker", "start"]):
        result = CliRunner().invoke(cli, command, env=env)
        assert result.exit_code == 2, result.output
        line = result.stderr.strip().splitlines()[-1]
        assert f"{home} is owned by another user (uid {OTHER})" in line and "chown" in line
        assert "[unsafe_folder]" in line or "unsafe_folder" in result.stderr
        assert "Traceback" not in result.stderr


@as_root
@pytest.mark.usefixtures("no_broker")
def test_ps_and_down_refuse_another_users_home_and_touch_nothing(tmp_path: Path) -> None:
    # A review: root's `ps` on another user's home said "not running", and `down` "nothing was
    # running", deleted the pid file of that user's evaluator and left a root-owned up.lock.
    home = tmp_path / "theirs"
    (home / "run").mkdir(parents=True, mode=0o700)
    (home / "run" / "evaluator.pid").write_text("4242")
    for path in (home, home / "run", home / "run" / "evaluator.pid"):
        os.chown(path, OTHER, OTHER)
    env = {"LEDGER_HOME": str(home), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for command in (["ps"], ["down"], ["broker", "status"], ["broker", "stop"]):
        result = CliRunner().invoke(cli, command, env=env)
        assert result.exit_code == 2, result.output
        assert f"{home} is owned by another user (uid {OTHER})" in result.stderr
        assert "[unsafe_folder]" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in (home / "run").iterdir()) == ["evaluator.pid"]


def test_a_home_this_user_cannot_read_is_refused_not_taken_for_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: another user's home under their 0700 folder could not be stat'ed, which was
    # taken for "no home": `ps` said "not running" of a stack that may run.
    def refused(path: object) -> os.stat_result:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(stack.os, "stat", refused)
    with pytest.raises(UsageError, match="cannot be read by this user \\(Permission denied\\)"):
        stack.checked_home(Settings(home=tmp_path / "theirs" / "home"))
    monkeypatch.undo()
    stack.checked_home(Settings(home=tmp_path / "none"))  # no home at all: nothing to refuse


def test_a_home_that_is_a_link_or_in_a_folder_anyone_may_swap_it_out_of_is_refused(
    tmp_path: Path,
) -> None:
    real = private_dir(tmp_path / "real")
    link = tmp_path / "home"
    link.symlink_to(real)
    with pytest.raises(UsageError, match=rf"{link} is a symbolic link \(to {real}\)"):
        broker.private_home(Settings(home=link))
    # Everyone may write its folder, which has no sticky bit: the home may be renamed away.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    home = shared / "home"
    with pytest.raises(UsageError, match=rf"{home} lies in {shared}, which everyone may write"):
        broker.private_home(Settings(home=home))
    with pytest.raises(UsageError, match=rf"lies in {shared}, which everyone may write"):
        broker.private_home(Settings(home=home / "deeper"))  # any folder above
    assert not home.exists()
    shared.chmod(0o1777)  # as /tmp is: no one may rename what is not theirs
    broker.private_home(Settings(home=home))
    assert mode(home) == 0o700


@as_root
@pytest.mark.usefixtures("no_broker")
def test_a_home_named_through_a_link_and_dotdot_is_checked_where_the_system_goes(
    tmp_path: Path,
) -> None:
    # ``mine/link/../home`` is ``shared/home`` to the system (``..`` of the link's target), not
    # ``mine/home`` as its text reads: the folder anyone may write is the one checked.
    shared = tmp_path / "shared"
    (shared / "deep").mkdir(parents=True)
    shared.chmod(0o777)
    mine = private_dir(tmp_path / "mine")
    (mine / "link").symlink_to(shared / "deep")
    home = mine / "link" / ".." / "home"
    with pytest.raises(UsageError, match=rf"lies in {shared}, which everyone may write"):
        broker.private_home(Settings(home=home))
    assert not (shared / "home").exists() and not (mine / "home").exists()


@as_root
def test_a_home_in_a_folder_another_user_owns_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, OTHER, OTHER)
    home = theirs / "home"
    home.mkdir(mode=0o700)  # this user's, but its owner may rename it away
    with pytest.raises(UsageError, match=rf"lies in {theirs}, owned by another user \(uid"):
        broker.private_home(Settings(home=home))


def test_a_new_home_is_made_private_and_an_own_one_is_kept(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        home = tmp_path / "a" / "home"
        broker.private_home(Settings(home=home))
        assert mode(home) == 0o700
        for name in broker.HOME_FOLDERS:  # the operator's own folders are fine
            (home / name).mkdir(parents=True, exist_ok=True)
        (home / "export").chmod(0o750)  # an export shared with a group stays so
        broker.private_home(Settings(home=home))
        assert mode(home / "export") == 0o750
    finally:
        os.umask(old)


def test_a_folder_of_the_home_that_is_a_link_is_refused(tmp_path: Path, target: Path) -> None:
    home = private_dir(tmp_path / "home")
    elsewhere = private_dir(tmp_path / "elsewhere" / "broker")
    (home / "broker").symlink_to(elsewhere)
    with pytest.raises(UsageError, match=rf"{home / 'broker'} is a symbolic link"):
        broker.private_home(Settings(home=home))
    with pytest.raises(UsageError, match=r"is a symbolic link"):
        write_private(home / "broker" / "broker.json", "{}")
    assert list(elsewhere.iterdir()) == []
    (home / "broker").unlink()
    # A processor's folder (its snapshots and in-flight markers; Faust writes there too).
    private_dir(home / "faust" / "ledger-evaluator")
    (home / "faust" / "ledger-command-processor").symlink_to(elsewhere)
    with pytest.raises(UsageError, match=r"faust/ledger-command-processor is a symbolic link"):
        broker.private_home(Settings(home=home))


# --------------------------------------------------------------------------- files in it


def test_the_broker_writes_its_log_configuration_and_log_through_no_link(
    tmp_path: Path, target: Path
) -> None:
    bdir = private_dir(tmp_path / "home" / "broker")
    _planted(bdir / "log4j2.yaml", target)
    jvm = broker._jvm("java", tmp_path / "lib", bdir)
    assert target.read_text() == SECRET  # the link was replaced, not written through
    assert not (bdir / "log4j2.yaml").is_symlink()
    assert f"-Dlog4j2.configurationFile={bdir / 'log4j2.yaml'}" in jvm
    assert mode(bdir / "broker.log") == 0o600  # made before the JVM opens it
    (bdir / "broker.log").unlink()
    _planted(bdir / "broker.log", target)  # the JVM would append to what it names
    with pytest.raises(UsageError, match=rf"{bdir / 'broker.log'} is a symbolic link"):
        broker._jvm("java", tmp_path / "lib", bdir)
    assert target.read_text() == SECRET


def test_a_process_log_is_never_written_through_a_link(tmp_path: Path, target: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    log = _planted(tmp_path / "logs" / "evaluator.log", target)
    with pytest.raises(UsageError, match=rf"{log} is a symbolic link"):
        spawn_detached([sleep, "0"], env=dict(os.environ), log=log)
    assert target.read_text() == SECRET


def test_the_up_lock_is_never_opened_through_a_link(
    tmp_path: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "_up", lambda *args, **kwargs: "up")
    monkeypatch.setattr(stack, "_down", lambda *args, **kwargs: [])
    settings = Settings(home=tmp_path / "home")
    assert stack.up(settings) == "up"
    (settings.home / "run" / "up.lock").unlink()
    _planted(settings.home / "run" / "up.lock", target)
    with pytest.raises(UsageError, match=r"up.lock is a symbolic link"):
        stack.up(settings)  # it truncated the file it named
    with pytest.raises(UsageError, match=r"up.lock is a symbolic link"):
        stack.down(settings)
    assert target.read_text() == SECRET


def test_locks_heartbeats_and_markers_are_never_written_through_a_link(
    tmp_path: Path, target: Path
) -> None:
    folder = private_dir(tmp_path / "home" / "faust")
    lock = _planted(folder / ".governance.snapshot.lock", target)
    with pytest.raises(UsageError, match=rf"{lock} is a symbolic link"), held_exclusively(lock):
        pass
    ready = folder / "evaluator.ready"
    _planted(folder / "evaluator.ready.partial", target)
    with pytest.raises(OSError, match="symbolic link"):  # logged by the processor, which goes on
        Heartbeat(pid=1, bootstrap="127.0.0.1:9092", at=0.0, fetched_at=None).write(ready)
    assert not ready.exists()
    markers = InFlight(folder / "inflight")
    _planted(folder / "inflight" / "requests.0", target)
    with pytest.raises(OSError, match="symbolic link"):
        markers.begin("requests", 0, 7)
    assert target.read_text() == SECRET


def test_export_to_the_home_refuses_a_linked_export_folder(tmp_path: Path) -> None:
    # `ledger export` without --out writes into $LEDGER_HOME/export: a link planted there would
    # have every request's facts written where it points.
    home = private_dir(tmp_path / "home")
    elsewhere = private_dir(tmp_path / "elsewhere")
    (home / "export").symlink_to(elsewhere)
    env = {"LEDGER_HOME": str(home), "LEDGER_BOOTSTRAP": "127.0.0.1:1"}
    result = CliRunner().invoke(cli, ["export"], env=env)
    assert result.exit_code == 2, result.output
    assert f"{home / 'export'} is a symbolic link" in result.stderr.strip().splitlines()[-1]
    assert list(elsewhere.iterdir()) == []


def test_a_home_in_a_folder_its_group_may_write_is_refused_when_others_are_in_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: /srv/projects of root:devs 2775 let any developer rename a root's home away and
    # plant links the broker's JVM would write through.
    import ledger.files as files

    assert files._others_in_group(2**31 - 7)  # a group no one knows: taken to have others
    shared = tmp_path / "projects"
    shared.mkdir()
    shared.chmod(0o2775)
    home = shared / "home"
    monkeypatch.setattr(files, "_others_in_group", lambda gid: True)
    with pytest.raises(UsageError, match=rf"lies in {shared}, which its group may write"):
        broker.private_home(Settings(home=home))
    assert not home.exists()
    monkeypatch.setattr(files, "_others_in_group", lambda gid: False)  # one's private group
    broker.private_home(Settings(home=home))
    assert mode(home) & 0o777 == 0o700  # (setgid from its folder)


def test_a_stray_file_in_faust_does_not_refuse_the_home(tmp_path: Path) -> None:
    # A review: macOS Finder's .DS_Store in faust/ made `ledger up` "… is not a folder".
    home = private_dir(tmp_path / "home")
    private_dir(home / "faust")
    (home / "faust" / ".DS_Store").write_bytes(b"")
    broker.private_home(Settings(home=home))


def test_stopping_the_broker_of_a_home_now_refused_still_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: in a home an upgrade now refuses, `ledger down` stopped the broker, then failed
    # writing its record (unsafe_folder) before saying what it had stopped.
    stopped: list[int] = []

    def refused(*args: object, **kwargs: object) -> None:
        raise UsageError("unsafe", code="unsafe_folder")

    monkeypatch.setattr(broker, "read_broker_record", lambda settings: {"pid": 4242})
    monkeypatch.setattr(broker, "alive", lambda pid, marker=None: True)
    monkeypatch.setattr(broker, "terminate", lambda pid, **kw: stopped.append(pid) or True)
    monkeypatch.setattr(broker, "write_private", refused)
    assert broker.stop(Settings(home=tmp_path / "home")) is True and stopped == [4242]


def test_a_processor_found_by_its_marker_in_a_home_now_refused_is_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: rewriting the lost pid file raised unsafe_folder out of `ps` and `down`, which
    # then stopped nothing.
    def refused(*args: object, **kwargs: object) -> None:
        raise UsageError("unsafe", code="unsafe_folder")

    monkeypatch.setattr(stack, "alive", lambda pid, marker=None: False)
    monkeypatch.setattr(stack, "find", lambda environ: 4343)
    monkeypatch.setattr(stack, "write_private", refused)
    assert stack._running_pid(Settings(home=tmp_path / "home"), "evaluator") == 4343


@as_root
def test_a_jar_cache_another_user_owns_is_refused_before_the_broker_runs_its_jars(
    tmp_path: Path,
) -> None:
    # A review: root's broker started with $XDG_CACHE_HOME in a user's ~/.cache would have run
    # whatever jars that user put there.
    cache = tmp_path / "cache"
    lib = cache / "kafka_2.13-x" / "lib"
    lib.mkdir(parents=True)
    (lib / ".complete").write_text("x\n")
    for folder in (cache, lib.parent, lib):
        os.chown(folder, OTHER, OTHER)
    settings = Settings(home=tmp_path / "home", cache=cache)
    with pytest.raises(UsageError, match=rf"{cache} is owned by another user \(uid {OTHER}\)"):
        broker.fetch(settings)


def test_the_jar_cache_is_made_private_and_its_files_are_not_written_through_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    settings = Settings(home=tmp_path / "home", cache=cache)
    lib = broker._lib_dir(settings)
    target = tmp_path / "target"
    target.write_text(SECRET)
    lib.parent.mkdir(parents=True)
    (lib.parent / "pom.xml").symlink_to(target)

    def maven(cmd: list[str], **kw: object) -> Any:
        staging = Path(next(a for a in cmd if a.startswith("-DoutputDirectory=")).split("=", 1)[1])
        staging.mkdir(parents=True)
        (staging / f"kafka_2.13-{broker.KAFKA_VERSION}.jar").write_bytes(b"jar")
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(broker, "_require", lambda tool, hint: tool)
    monkeypatch.setattr(broker, "_java", lambda: "java")
    monkeypatch.setattr(broker.subprocess, "run", maven)
    assert broker.fetch(settings) == lib
    assert target.read_text() == SECRET  # the planted link was replaced, not written through
    assert mode(cache) == 0o700 and mode(lib.parent) == 0o700
    assert (lib / ".complete").read_text().strip() == broker.KAFKA_VERSION
