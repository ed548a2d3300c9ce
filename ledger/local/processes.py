"""Background processes of the local stack (the broker's JVM, the processors): spawn, check, stop.

Processes are spawned detached (own session, stdin from /dev/null, output appended to a log
file) with ``posix_spawn`` rather than ``Popen``: they outlive the command that started them by
design, and a ``Popen`` object would warn about a child still running when it is collected.

A running processor proves it works with a heartbeat in its ready file
(:class:`processors.heartbeat.Heartbeat`); ``ledger ps`` and ``ledger up`` judge health from it
(:mod:`ledger.local.stack`): a pid alone only says the process exists.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from ledger.errors import LedgerError
from ledger.files import private_dir, private_log
from ledger.pids import running

__all__ = ["spawn_detached", "alive", "find", "exit_status", "terminate"]


def spawn_detached(argv: Sequence[str], *, env: Mapping[str, str], log: Path) -> int:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log`` (this user's
    own file, in a folder of theirs: :func:`ledger.files.private_log`); its pid. A log that
    cannot be opened is an ``OSError`` naming the log (``posix_spawn`` would name the program
    instead)."""
    private_dir(log.parent)
    try:
        private_log(log)  # a link planted there is refused: the child would write through it
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the log {log}: {exc.strerror}") from None
    return os.posix_spawn(
        argv[0],
        list(argv),
        dict(env),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


Marker = str | tuple[str, ...]
"""What only one process carries: an argument or environment entry, or several, all of them
(a broker: ``kafka.Kafka`` and its config's path, since a ``tail -f`` of the config is not it)."""


def _runs(pid: int, marker: Marker) -> bool:
    """Is ``pid`` this user's, with ``marker`` one whole argument of its command line or entry
    of its environment? (True where there is no /proc to tell.) The environment counts because
    a process may rewrite its command line (Faust does when ``setproctitle`` is installed) but
    keeps the environment it was started with.

    Only this user's processes count (a red team: another local user's process holding a
    home's marker in its environment was taken for its evaluator, which `up` then never
    started), and only a whole entry (the red team again: `down` killed a process whose
    argument merely contained the broker's config path, ``…/server.properties.orig``)."""
    try:
        if not _ours(pid):
            return False
        seen = Path(f"/proc/{pid}/cmdline").read_bytes()
        with contextlib.suppress(OSError):
            seen += b"\0" + Path(f"/proc/{pid}/environ").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust the pid
    except OSError:
        return False  # not ours to read: not ours
    # Resolved through its links too (a README check: a stack started through a link).
    whole = b"\0" + seen.rstrip(b"\0") + b"\0"
    markers = (marker,) if isinstance(marker, str) else marker
    return all(
        any(b"\0" + spelling + b"\0" in whole for spelling in _spellings(one)) for one in markers
    )


def _ours(pid: int) -> bool:
    """Whether ``pid`` runs as this user (the owner of its /proc entry). Raises
    ``FileNotFoundError`` when there is no such entry."""
    return os.stat(f"/proc/{pid}").st_uid == os.getuid()


def _spellings(marker: str) -> set[bytes]:
    """``marker`` (a path, or ``NAME=path``) as given and with its path's symbolic links
    resolved: a stack started through a home's real path is still found through a link to it
    (a README check: through a linked $LEDGER_HOME, `ps` and `down` said a running stack was
    not running, and `down` removed its pid files)."""
    name, sep, path = marker.partition("=") if "=" in marker else ("", "", marker)
    found = {marker.encode()}
    if path.startswith("/"):
        found.add(f"{name}{sep}{os.path.realpath(path)}".encode())
    return found


def find(*, environ: str | None = None, argv: tuple[str, ...] = ()) -> int | None:
    """The pid of a running process of this user (not this one) whose environment holds
    exactly the entry ``environ`` (``NAME=value``) and whose command line has every one of
    ``argv`` as an argument; the lowest should there be several. ``None`` when none does, or
    where there is no ``/proc`` to tell. Finds a processor (by its ready file) or a broker (by
    its config) whose pid file was lost; another user's process is never taken for it (a red
    team: one holding the evaluator's marker kept `up` from starting the evaluator)."""
    try:
        names = sorted((n for n in os.listdir("/proc") if n.isdigit()), key=int)
    except OSError:
        return None
    entries = () if environ is None else tuple(b"\0" + e + b"\0" for e in _spellings(environ))
    wanted = [_spellings(a) for a in argv]  # each argument, in any of its spellings
    me = os.getpid()
    for name in names:
        pid = int(name)
        if pid == me:
            continue
        try:
            if not _ours(pid):
                continue
            if wanted:
                args = set(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
                if not all(args & spellings for spellings in wanted):
                    continue
            if entries:
                env = b"\0" + Path(f"/proc/{pid}/environ").read_bytes() + b"\0"
                if not any(entry in env for entry in entries):
                    continue
        except OSError:
            continue  # gone, or not ours to read
        if running(pid):
            return pid
    return None


def alive(pid: int, *, marker: Marker | None = None) -> bool:
    """Is ``pid`` a running process? (A zombie — exited, not yet reaped — is not.)

    With ``marker``, only if its command line or environment contains it: a pid file that outlived a reboot
    must not make an unrelated process that reused the pid look like ours (or get killed).
    """
    if pid <= 0:
        return False
    if marker is not None and not _runs(pid, marker):
        return False
    if running(pid):
        return True
    _reap(pid)  # a zombie of ours: gone for good once reaped
    return False


def exit_status(pid: int) -> tuple[bool, int | None]:
    """Whether a child we spawned has exited (reaping it), and its exit code if known."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return (not alive(pid), None)
    if done == 0:
        return (False, None)
    return (True, os.waitstatus_to_exitcode(status))


def terminate(
    pid: int,
    *,
    grace: float,
    kill: bool = False,
    marker: Marker | None = None,
    killed: Callable[[], None] | None = None,
) -> bool:
    """Stop the process group of ``pid``: SIGTERM (or SIGKILL at once with ``kill``), then
    SIGKILL after ``grace`` seconds. Returns False when it was not running (or, with
    ``marker``, when ``pid`` is some other program's: see :func:`alive`), True once it is
    gone. Raises :class:`~ledger.errors.LedgerError` when it runs on :data:`KILL_WAIT`
    seconds after SIGKILL (stuck in the kernel) or may not be signalled: a caller never takes
    such a process for stopped, nor for one that was not running (a red team: `down` said
    "stopped" of a process it could not signal; a review: False read as "not running").
    ``killed`` is called when SIGKILL follows SIGTERM at the end of the grace."""
    if not alive(pid, marker=marker):
        return False
    if not _signal(pid, signal.SIGKILL if kill else signal.SIGTERM):
        raise LedgerError(f"pid {pid} may not be signalled by this user: it was not stopped")
    if not kill:  # a stopped process (SIGSTOP, Ctrl-Z) handles its SIGTERM only once
        _signal(pid, signal.SIGCONT)  # continued (an operator's walkthrough: 31 s)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if alive(pid):
        _signal(pid, signal.SIGKILL)
        if killed is not None:
            killed()
        deadline = time.monotonic() + KILL_WAIT
        while alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
    _reap(pid)
    if alive(pid):
        raise LedgerError(
            f"pid {pid} still runs {KILL_WAIT:g} s after SIGKILL (stuck in the kernel: `ps -o "
            f"stat -p {pid}` shows D): it was not stopped; try again once it is gone"
        )
    return True


KILL_WAIT: Final = 5.0
"""Seconds a process is given to vanish after SIGKILL (a large JVM takes a moment)."""


def _signal(pid: int, signum: int) -> bool:
    """Send ``signum`` to ``pid``'s process group (a process spawned here leads its own), or to
    ``pid`` alone when it leads none; False when it may not be signalled (another user's)."""
    try:
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:  # no group of that id: it leads none
            os.kill(pid, signum)
    except ProcessLookupError:  # gone meanwhile
        pass
    except PermissionError:
        return False
    return True
