"""Which record a processor is handling, kept where its successor will find it.

A record that crashes or hangs a processor (and so gets it killed, or killed for memory) is
re-delivered when the processor restarts, because its offset was never committed: without a
memory of it, the processor would die on it again, for ever. So before handling a record, a
processor writes its coordinates to a small file, one per source partition; it clears the file
once the record's outcome has been decided. A marker found at start-up (or when a partition
arrives from another worker) names the record that was in flight when its holder died.

A death while handling is not proof that the record caused it (``kill -9`` of a busy worker, an
out-of-memory kill caused by something else), so a record is given up on only after it was in
flight at ``strikes`` deaths (default 2): the first time it is simply handled again. The caller
dead-letters a given-up record instead of handling it.

Markers live on the worker's disk (``$LEDGER_HOME/faust/<app>/inflight``); each file is mapped
into memory and a marker is one store into the shared mapping (no system call per record), without
``fsync``: the page cache keeps it when the process dies, and markers must survive the process,
not the machine.
Workers sharing a home share the markers, so a partition taken over by another worker on the
same machine is covered too.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Final

__all__ = ["InFlight", "DEFAULT_STRIKES"]

DEFAULT_STRIKES: Final = 2

_WIDTH = 26  # "<offset:20> <attempt:4>\n"
_CLEAR = -1


def _encode(offset: int, attempt: int) -> bytes:
    return f"{offset:>20} {attempt:>4}\n".encode("ascii")


def _decode(raw: bytes) -> tuple[int, int] | None:
    try:
        offset, attempt = (int(part) for part in raw.decode("ascii").split())
    except ValueError:
        return None
    return (offset, attempt) if offset >= 0 and attempt > 0 else None


class InFlight:
    """In-flight markers of one processor's input partitions (see the module docstring)."""

    def __init__(self, directory: Path, *, strikes: int = DEFAULT_STRIKES) -> None:
        if strikes < 1:
            raise ValueError("strikes must be at least 1")
        self._dir = directory
        self._strikes = strikes
        self._fds: dict[tuple[str, int], int] = {}
        self._maps: dict[tuple[str, int], mmap.mmap] = {}
        self._expected: dict[tuple[str, int], int] = {}  # next offset this process expects
        self._suspects: dict[tuple[str, int], tuple[int, int]] = {}  # (offset, deaths)
        self._marked: set[tuple[str, int]] = set()

    def begin(self, topic: str, partition: int, offset: int) -> int:
        """Mark ``topic[partition]@offset`` in flight; 0 to handle it, else the deaths it caused.

        A non-zero answer (the record was in flight at that many deaths, at least ``strikes``)
        means: do not handle it, dead-letter it. :meth:`clear` must follow once the outcomes of
        the marked records are decided.
        """
        where = (topic, partition)
        if self._expected.get(where) != offset:
            # First record of this partition here, or a jump (a rebalance, a restart, another
            # worker in between): whoever handled the partition last may have left a marker.
            left = self._read(where)
            if left is None:
                self._suspects.pop(where, None)
            else:
                self._suspects[where] = left
        self._expected[where] = offset + 1
        attempt = 1
        suspect = self._suspects.get(where)
        if suspect is not None:
            at, deaths = suspect
            if offset >= at:
                del self._suspects[where]
            if offset == at:
                if deaths >= self._strikes:
                    self._marked.add(where)  # cleared with the rest: its outcome is the letter
                    return deaths
                attempt = deaths + 1
        self._write(where, offset, attempt)
        self._marked.add(where)
        return 0

    def clear(self) -> None:
        """Nothing is in flight any more (the marked records' outcomes are decided)."""
        for where in self._marked:
            self._write(where, _CLEAR, 0)
        self._marked.clear()

    def close(self) -> None:
        for mapped in self._maps.values():
            mapped.close()
        self._maps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    # ------------------------------------------------------------------ files

    def _path(self, where: tuple[str, int]) -> Path:
        topic, partition = where
        return self._dir / f"{topic}.{partition}"

    def _fd(self, where: tuple[str, int]) -> int:
        fd = self._fds.get(where)
        if fd is None:
            self._dir.mkdir(parents=True, exist_ok=True)
            # Never through a link: a planted one would have the markers written where it points.
            fd = os.open(self._path(where), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            self._fds[where] = fd
        return fd

    def _map(self, where: tuple[str, int]) -> mmap.mmap:
        mapped = self._maps.get(where)
        if mapped is None:
            fd = self._fd(where)
            if os.fstat(fd).st_size < _WIDTH:  # new (or emptied): holds no marker yet
                os.pwrite(fd, _encode(_CLEAR, 0), 0)
            mapped = self._maps[where] = mmap.mmap(fd, _WIDTH)
        return mapped

    def _read(self, where: tuple[str, int]) -> tuple[int, int] | None:
        if where not in self._fds and not self._path(where).exists():
            return None
        return _decode(os.pread(self._fd(where), _WIDTH, 0))

    def _write(self, where: tuple[str, int], offset: int, attempt: int) -> None:
        # Fixed width at offset 0: one store replaces the whole marker, no truncation needed.
        self._map(where)[0:_WIDTH] = _encode(offset, attempt)
