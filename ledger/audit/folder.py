"""The export folder, touched safely (the export spec's hostile-directory rules).

An export folder may be shared, so whoever can write into it is an attacker here. The writer
opens the export's top folder once, and every folder below it without following a link, and
creates, renames, opens and removes files relative to those open folders (``dir_fd``): nothing
planted or swapped in makes it write, truncate or remove a file outside the export, or copy one
in. One writer at a time holds :data:`LOCK` (:class:`DirectoryLock`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from ledger.errors import ExportError

__all__ = [
    "LOCK",
    "DirectoryLock",
    "Writer",
    "writer_at",
    "atomic_write",
    "directory",
    "empty_tree",
    "exists",
    "shared",
    "install",
    "listed",
    "new_file",
]


# Whoever can write into a shared export directory can swap any folder of it for a symbolic
# link at any moment. So the writer never uses a path below the export directory twice: it
# opens each folder from the one before it without following a link, and creates, renames,
# opens and removes files relative to that descriptor (``dir_fd``), which stays on that folder
# whatever is renamed meanwhile.

NO_LINK: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def empty_tree(where: int) -> bool:
    """Remove the folders in the folder ``where`` (a descriptor) that hold nothing but empty
    folders, never following a link; whether ``where`` is empty now."""
    for entry in list(os.scandir(where)):
        if not entry.is_dir(follow_symlinks=False):
            return False  # a file (or a link): not an empty tree
        try:
            inner = os.open(entry.name, NO_LINK, dir_fd=where)
        except OSError:
            return False
        try:
            empty = empty_tree(inner)
        finally:
            os.close(inner)
        if not empty:
            return False
        try:
            os.rmdir(entry.name, dir_fd=where)
        except FileNotFoundError:
            continue
        except OSError:  # something arrived, or not ours to remove
            return False
    return True


LOCK: Final = ".export.lock"
"""The file whose ``flock`` a writer holds (it holds the holder's pid, for the message)."""


class DirectoryLock:
    """One writer per export directory: an exclusive ``flock`` on :data:`LOCK`, held until
    :meth:`release` (or the process dies: no stale lock survives a crash). The file is removed
    on release, so an export directory holds it only while a writer works in it."""

    def __init__(self, directory: Path, top: int) -> None:
        self.path = directory / LOCK  # for messages: the file is reached through ``top``
        self._top = top
        while True:
            try:  # never through a symbolic link: the writer truncates and writes this file
                fd = os.open(
                    LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=top
                )
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise ExportError(
                        f"{self.path} is a symbolic link, not an export's lock: remove it and "
                        "run again (and check who can write to the directory)"
                    ) from None
                raise ExportError(
                    f"cannot write in {directory} (creating its lock file {LOCK}: "
                    f"{exc.strerror or exc}): make it writable, or choose another --out"
                ) from exc
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
                os.close(fd)
                raise ExportError(
                    f"{self.path} is not an export's lock (not a plain file of its own): remove "
                    "it and run again (and check who can write to the directory)"
                )
            if not _exclusive(fd):
                holder = _pid(fd)
                os.close(fd)
                pid = f" (pid {holder})" if holder is not None else ""
                raise ExportError(
                    f"another export is writing to {directory}{pid}: wait for it to finish, or "
                    "stop it (`ledger export --follow` holds its directory until it stops)"
                ) from None
            if self._current(fd):
                break
            os.close(fd)  # locked a file its holder removed on release: take the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        # Readable where the export's files are (a group's auditor): `audit verify` asks it
        # whether a run writes (a review: another user could not open it, and took a flush's
        # files for inserted ones). Reading it lets one know a run's pid, no more.
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600 | (shared(top) & 0o044))
        self._fd = fd

    def _current(self, fd: int) -> bool:
        """Is ``fd`` still the file at :attr:`path`?"""
        try:
            here = os.stat(LOCK, dir_fd=self._top, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            if self._current(fd):
                os.unlink(LOCK, dir_fd=self._top)  # while still locked: an opener re-checks
        except OSError:
            pass
        finally:
            os.close(fd)

    def __del__(self) -> None:  # a writer dropped without close() still lets go
        if getattr(self, "_fd", -1) >= 0:
            with contextlib.suppress(Exception):  # at interpreter exit, the kernel lets go too
                self.release()


_LOCK_TRIES: Final = 25
_LOCK_PAUSE: Final = 0.02


def _exclusive(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting for a writer: tries over half
    of a second, since a reader asking whether a writer is there (:func:`writer_at`) holds a
    shared lock for an instant."""
    for attempt in range(_LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if attempt + 1 < _LOCK_TRIES:
                time.sleep(_LOCK_PAUSE)
    return False


def _pid(fd: int) -> int | None:
    holder = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
    return int(holder) if holder.isdigit() else None


@dataclass(frozen=True, slots=True)
class Writer:
    """An export run writing in a directory now (it holds :data:`LOCK`)."""

    pid: int | None
    """Its process id, as it wrote it in the lock file (``None`` when not readable)."""


def writer_at(directory: Path) -> Writer | None:
    """The export run writing in ``directory`` now, or ``None`` when none is (or when the lock
    file cannot be read: then no one can tell). A reader's question, asked without waiting and
    without keeping a writer out: a shared lock tried once and let go at once (a writer
    starting meanwhile tries again, :func:`_exclusive`). Never through a link, never waiting on
    a FIFO."""
    try:
        fd = os.open(directory / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: no writer (it is removed when its writer lets go)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return Writer(_pid(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # a lock file its writer left when it died: the kernel let the lock go
    finally:
        os.close(fd)


def shared(folder: int) -> int:
    """Who else the folder ``folder`` (a descriptor) lets read: its group's and others' read
    and search bits. What an export creates inside takes them, and nothing more: an export
    holds every request's facts, so a new folder is its owner's alone (0700, files 0600), and
    one its owner made readable to a group (0750) gets group-readable files (0640)."""
    return os.fstat(folder).st_mode & 0o055


@contextlib.contextmanager
def directory(top: int, out: Path, *parts: str, create: bool = False) -> Iterator[int]:
    """A descriptor of the export's folder ``parts…`` below its top folder ``top`` (a
    descriptor of the folder named ``out``, for messages), each part made when missing, with
    ``create``; no parts: the top folder itself. :class:`ExportError` when a part is a symbolic
    link or not a folder; ``FileNotFoundError`` when one is missing without ``create``."""
    fd = top
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700 | shared(fd), dir_fd=fd)
            try:
                inner = os.open(part, NO_LINK, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise ExportError(
                    f"{out.joinpath(*parts)} is not a folder of the export (a symbolic link "
                    "or a file): remove it and run again (and check who can write to the export)"
                ) from None
            if fd != top:
                os.close(fd)
            fd = inner
        yield fd
    finally:
        if fd != top:
            os.close(fd)


@contextlib.contextmanager
def new_file(where: int, name: str) -> Iterator[tuple[BinaryIO, str]]:
    """A new file in the folder ``where`` (a descriptor), under a temporary name made from
    ``name``, open for writing: created exclusively, so nothing planted there beforehand (a
    link to another file) is ever followed or overwritten. Flushed to disk when the block ends;
    removed if it fails. Give it its name with :func:`install`. The repair
    (:meth:`ledger.audit.writer.ExportWriter._repair`) removes one a killed writer left."""
    while True:
        tmp = f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                0o600 | (shared(where) & 0o044),
                dir_fd=where,
            )
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as out:
            yield out, tmp
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=where)
        raise


def install(where: int, tmp: str, name: str) -> None:
    """Rename the finished file ``tmp`` to ``name`` in the folder ``where``, durably."""
    os.replace(tmp, name, src_dir_fd=where, dst_dir_fd=where)
    with contextlib.suppress(OSError):  # not every file system syncs a folder
        os.fsync(where)


@contextlib.contextmanager
def listed(where: int, name: str) -> Iterator[BinaryIO]:
    """A data file the manifest lists, in the folder ``where``, open for reading: a regular
    file of the folder itself, never a link (which would have the writer copy into the export
    a file that whoever planted it could not read)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=where)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(f"{name} is a symbolic link, not a file of the export") from None
        raise
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{name} is not a regular file")
        yield file


def exists(where: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=where, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def atomic_write(top: int, name: str, data: bytes) -> None:
    """Replace the file ``name`` in the folder ``top`` with ``data``, atomically."""
    with new_file(top, name) as (file, tmp):
        file.write(data)
    install(top, tmp, name)
