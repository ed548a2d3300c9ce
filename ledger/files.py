"""Private files: what the ledger writes under ``$LEDGER_HOME`` (and the key store) is readable by
its owner only.

Directories are made 0700 and files 0600 explicitly, whatever the process's umask;
:func:`private_umask` sets the umask of the local stack's entry points (``ledger up``,
``ledger broker start``) so that everything else they and their children write (broker segments,
logs, Faust data) is private too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "private_umask", "private_dir", "write_private"]

PRIVATE_UMASK = 0o077
"""Group and others get nothing."""


def private_umask() -> None:
    """Make everything this process (and what it starts) creates from now on owner-only."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter (made if missing, tightened if not)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600 from the first byte), replacing it atomically."""
    private_dir(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
