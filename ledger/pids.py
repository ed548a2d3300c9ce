"""Whether a process runs, by its pid: one answer for the local stack (its pid files,
:mod:`ledger.local.processes`) and the export (helper processes watching the run that started
them, :mod:`ledger.audit.pool`).

A zombie — a process that has exited but that its parent has not reaped yet — does not run: a
killed export stays one until its own parent reaps it, and a parent waiting for the export's
output to end reaps it only after that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["running", "process_state", "stopped_by_signal"]

_PROC: Final = Path("/proc/self/stat").exists()


def running(pid: int) -> bool:
    """Is process ``pid`` running (not gone, not a zombie)? Where there is no ``/proc`` (macOS),
    a zombie counts as running: nothing cheap tells it apart."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    if not _PROC:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False  # gone since
    except OSError:
        return True
    # The state follows the command name, which may itself hold ")" and spaces.
    return stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")


def process_state(pid: int) -> str | None:
    """Process ``pid``'s state letter in ``/proc/PID/stat`` (``R``, ``S``, ``D``, ``T`` …), or
    ``None`` where that cannot be read (gone, not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    after = stat.rpartition(")")[2].split()  # the command name, in parentheses, may hold anything
    return after[0] if after else None


def stopped_by_signal(pid: int) -> bool:
    """Is process ``pid`` stopped by a signal (state ``T``/``t`` in ``/proc/PID/stat``)? False
    where that cannot be read (gone, not Linux)."""
    return process_state(pid) in ("T", "t")
