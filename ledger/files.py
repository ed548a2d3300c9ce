"""Private files: what the ledger writes under ``$LEDGER_HOME`` (and the key store) is readable by
its owner only, and written only where no one else can redirect it.

Directories are made 0700 and files 0600 explicitly, whatever the process's umask; a folder is
used only if it is this user's own, no symbolic link, and in no folder another user may swap it
out of (:func:`own_dir`), and a file is never written through a symbolic link (files are
replaced by a new one, or opened with ``O_NOFOLLOW``: :func:`open_private`);
:func:`private_umask` sets the umask of the local stack's entry points (``ledger up``,
``ledger broker start``) so that everything else they and their children write (broker segments,
logs, Faust data) is private too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

from ledger.errors import UsageError

__all__ = [
    "PRIVATE_UMASK",
    "SMALL_FILE_BYTES",
    "UnreadableFile",
    "read_bounded",
    "read_bounded_stat",
    "others_may_write",
    "written_by_others",
    "private_umask",
    "private_dir",
    "own_dir",
    "open_private",
    "private_log",
    "UNSAFE_FOLDER",
    "replacing_private",
    "held_exclusively",
    "write_private",
]

UNSAFE_FOLDER: Final = "unsafe_folder"
"""The code of the :class:`UsageError` refusing a folder or file another user could change."""

PRIVATE_UMASK = 0o077
"""Group and others get nothing."""


SMALL_FILE_BYTES = 64 * 1024
"""The most read of a key, a credential or a record the local stack keeps (each is a few
hundred bytes): a file planted in their place is refused, not read whole."""


class UnreadableFile(Exception):
    """Why a file cannot be read, in one line: missing, not a regular file, too large, refused.
    Each caller turns it into its own error (a usage error, an export error…)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def read_bounded(
    path: Path,
    limit: int,
    *,
    what: str = "file",
    dir_fd: int | None = None,
    shown: Path | None = None,
) -> bytes:
    """The bytes of the regular file at ``path`` (:func:`read_bounded_stat`)."""
    return read_bounded_stat(path, limit, what=what, dir_fd=dir_fd, shown=shown)[0]


def read_bounded_stat(
    path: Path,
    limit: int,
    *,
    what: str = "file",
    dir_fd: int | None = None,
    shown: Path | None = None,
) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file at ``path``, at most ``limit`` of them, never reading more,
    and the status of the file they were read from. With ``dir_fd``, ``path`` is relative to
    that folder and must not be a symbolic link (messages name it ``shown``).

    Anything else is :class:`UnreadableFile` with one line saying what to fix: a device
    (``/dev/zero``), a FIFO (opened without blocking, then refused) or an endless file would
    otherwise hang the reader or fill its memory; a file over ``limit`` is refused.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if dir_fd is not None:
        flags |= os.O_NOFOLLOW
    opened, path = path, shown or path
    try:
        fd = os.open(opened, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: no such {what}; check the path", missing=True) from None
    except PermissionError:
        raise UnreadableFile(f"{path}: permission denied; check the file's permissions") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableFile(
                f"{path} is a symbolic link; it must be the {what} itself"
            ) from None
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        status = os.fstat(fd)
        mode = status.st_mode
        if stat.S_ISDIR(mode):
            raise UnreadableFile(f"{path} is a directory; pass the {what} itself")
        if not stat.S_ISREG(mode):
            raise UnreadableFile(
                f"{path} is not a regular file (a device, FIFO or socket); pass the {what} itself"
            )
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise UnreadableFile(f"{path} is larger than {limit:,} bytes, the limit for a {what}")
    return b"".join(chunks), status


def private_umask() -> None:
    """Make everything this process (and what it starts) creates from now on owner-only."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user may enter: made (0700 from the start) if missing,
    tightened if not, and in either case checked first (:func:`own_dir`): a folder another user
    owns or could swap is refused, with one :class:`UsageError` line, before anything is written
    in it."""
    _refuse_unsafe_folders_above(path)  # before making any: checked again once made
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = _open_own_dir(path)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def own_dir(path: Path) -> None:
    """Refuse (one :class:`UsageError` line naming the folder, its owner and what to do) a
    folder the ledger keeps private files in that someone other than this user (its effective
    uid) could change: one that is a symbolic link (whoever owns the link re-points it), is
    not a directory, or is owned by another user; or that lies in a folder (any one up to
    ``/``, through links too) owned by another user than this one or root, or that everyone may
    write without the sticky bit (as ``/tmp`` has): whoever may write there can rename it away
    and put their own in its place, as ssh refuses for ``~/.ssh``."""
    os.close(_open_own_dir(path))


def _open_own_dir(path: Path) -> int:
    """A descriptor of the folder ``path``, checked as :func:`own_dir` says."""
    _refuse_unsafe_folders_above(path)
    status = path.lstat()
    if stat.S_ISLNK(status.st_mode):
        raise UsageError(
            f"{path} is a symbolic link (to {os.path.realpath(path)}): the ledger keeps private "
            "files only in a folder itself, not through a link its owner may re-point; use the "
            "folder it names, or remove the link",
            code=UNSAFE_FOLDER,
        )
    if not stat.S_ISDIR(status.st_mode):
        raise UsageError(
            f"{path} is not a folder: the ledger keeps private files there; move it away, or "
            "choose another folder",
            code=UNSAFE_FOLDER,
        )
    if status.st_uid != os.geteuid():
        raise UsageError(
            f"{path} is owned by another user (uid {status.st_uid}), who may replace what the "
            "ledger keeps there (credentials, keys, its broker's files); choose a folder of your "
            "own (another $LEDGER_HOME), or, if it is yours and holds nothing another user put "
            f"there, `chown -R {os.geteuid()} {path}`",
            code=UNSAFE_FOLDER,
        )
    # No one else may replace it now (the folders above are checked): a link, should this
    # user's own process have put one there meanwhile, is still not followed.
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _refuse_unsafe_folders_above(path: Path) -> None:
    absolute = Path(os.path.abspath(path))
    # The real folders from the path as written, not from ``abspath``'s: that drops ``link/..``
    # by its text, where the system goes up from the link's target (a review:
    # ``~/link/../home``, the link to a folder anyone may write, checked ``~`` instead).
    real = Path(os.path.realpath(Path(os.getcwd(), path).parent))
    for folder in dict.fromkeys((*absolute.parents, real, *real.parents)):
        try:
            status = folder.lstat()
        except FileNotFoundError:
            continue  # an ancestor named through a link; its real one is checked
        if status.st_uid not in (os.geteuid(), 0):
            raise UsageError(
                f"{path} lies in {folder}, owned by another user (uid {status.st_uid}), who "
                "may rename it away and put a folder of their own in its place; choose a "
                "folder elsewhere (another $LEDGER_HOME)",
                code=UNSAFE_FOLDER,
            )
        mode = status.st_mode
        if (
            stat.S_ISDIR(mode)
            and mode & 0o020
            and not mode & stat.S_ISVTX
            and _others_in_group(status.st_gid)
        ):
            raise UsageError(
                f"{path} lies in {folder}, which its group may write (mode "
                f"{mode & 0o7777:04o}, no sticky bit), and others are in that group: any of them "
                "may rename it away and put a folder of their own in its place; choose a folder "
                f"elsewhere (another $LEDGER_HOME), or `chmod g-w {folder}` (or `chmod +t`)",
                code=UNSAFE_FOLDER,
            )
        if stat.S_ISDIR(mode) and mode & 0o002 and not mode & stat.S_ISVTX:
            raise UsageError(
                f"{path} lies in {folder}, which everyone may write (mode {mode & 0o7777:04o}, "
                "no sticky bit): anyone may rename it away and put a folder of their own in its "
                f"place; choose a folder elsewhere (another $LEDGER_HOME), or `chmod o-w "
                f"{folder}` (or `chmod +t`)",
                code=UNSAFE_FOLDER,
            )


def _others_in_group(gid: int) -> bool:
    """Does group ``gid`` have a member other than this user (listed, or by primary group)? A
    group-writable folder of one's own private group (umask 002 systems) is no one else's to
    write; an unknown group is taken to have others (a review: ``/srv/projects`` of
    ``root:devs 2775`` let any developer swap a root's home)."""
    import grp
    import pwd

    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return True
    me = {entry.pw_name for entry in pwd.getpwall() if entry.pw_uid == os.geteuid()}
    members |= {entry.pw_name for entry in pwd.getpwall() if entry.pw_gid == gid}
    return bool(members - me)


def open_private(path: Path, flags: int) -> int:
    """``os.open(path, flags)`` for writing a file of the ledger's own (created 0600), never
    through a symbolic link at ``path`` (a planted link would have the ledger write wherever
    it points): a link, or anything but a regular file, is one :class:`UsageError` line."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"{path} is a symbolic link (to {os.path.realpath(path)}): the ledger writes "
                "its own files only, never through a link; remove the link",
                code=UNSAFE_FOLDER,
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(
            f"{path} is not a regular file (a FIFO, device or socket): the ledger writes its "
            "own file there; remove it",
            code=UNSAFE_FOLDER,
        )
    os.set_blocking(fd, True)
    return fd


def private_log(path: Path) -> Path:
    """``path`` as a file another process (a JVM, a processor's output) may then open for
    appending, knowing it is this user's regular file: created 0600 if missing; a symbolic link
    there is refused (:func:`open_private`), as the process would follow it."""
    os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600 from the first byte), replacing it atomically."""
    with replacing_private(path) as out:
        out.write(text.encode("utf-8"))


@contextlib.contextmanager
def replacing_private(path: Path) -> Iterator[BinaryIO]:
    """A new file (mode 0600 from the first byte) that replaces ``path`` atomically when the
    block ends, flushed to disk first; when the block fails, ``path`` is left as it was and the
    new file removed. Partial files that writers of ``path`` left when they died are removed
    first (one still being written by a live process is left alone)."""
    private_dir(path.parent)
    _remove_abandoned(path)
    # Named by the writer's pid (for _remove_abandoned) and a random part, so two writers
    # never share one, even with the same pid in two containers on one volume.
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".partial"
    )
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise


@contextlib.contextmanager
def held_exclusively(lock: Path) -> Iterator[bool]:
    """Hold an exclusive lock on the file ``lock`` (made private if missing) for the block, if
    no other process holds it: ``True`` when held, ``False`` (at once, no waiting) when another
    process does. The lock goes with the process, so a writer that dies releases it."""
    private_dir(lock.parent)
    fd = open_private(lock, os.O_WRONLY | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _remove_abandoned(path: Path) -> None:
    remove_abandoned(path.parent, path.name)


def remove_abandoned(folder: Path, names: str) -> list[Path]:
    """Remove the partial files (:func:`replacing_private`'s) of the files ``names`` (a glob) in
    ``folder`` whose writers are gone (killed mid-write), and return them: a writer removes its
    own when it fails, a killed one cannot."""
    removed = []
    for partial in folder.glob(f".{names}.*.partial"):
        pid = partial.name.split(".")[-3]  # .NAME.<pid>.<random>.partial
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
                removed.append(partial)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def others_may_write(path: Path, status: os.stat_result | None = None) -> str | None:
    """Why someone other than this process's user (or root) may have written ``path``, a file
    or folder the ledger trusts for where it lies (a credential, a trust anchor's key), or
    ``None``: owned by another user, or writable by group or others (a sticky folder too:
    others may still create what is missing there). A read-only file system (a Kubernetes
    secret's volume, whose folder is 1777 and whose files are root's) is written by no one.
    ``status``: the file's as it was read (:func:`read_bounded_stat`), so the verdict is on the
    bytes read, not on whatever the path names a moment later."""
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        return None
    status = status or path.stat()
    if status.st_uid not in (os.getuid(), 0):
        return f"is owned by another user (uid {status.st_uid})"
    mode = status.st_mode & 0o777
    if mode & 0o022:
        return f"may be written by others (mode {mode:04o})"
    return None


def written_by_others(path: Path, status: os.stat_result) -> tuple[Path, str] | None:
    """The first of a trusted file read from ``path`` (``status``: its own, as read), its
    folder, and the folder it really lies in when ``path`` is a symbolic link, that someone
    other than this user may have written (:func:`others_may_write`), with why; ``None``."""
    problem = others_may_write(path, status)
    if problem is not None:
        return path, problem
    for folder in dict.fromkeys((path.parent, Path(os.path.realpath(path)).parent)):
        problem = others_may_write(folder)
        if problem is not None:
            return folder, problem
    return None
