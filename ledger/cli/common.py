"""Options and lookups shared by the command groups that talk to Kafka."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from ledger.broker import resolve_bootstrap  # the one lookup, shared with the SDK
from ledger.core.limits import DEFAULT_LIMITS
from ledger.errors import UsageError
from ledger.settings import Settings

__all__ = [
    "Seconds",
    "bootstrap_option",
    "load_settings",
    "parse_time",
    "read_text_file",
    "resolve_bootstrap",
]

F = TypeVar("F", bound=Callable[..., Any])


def bootstrap_option(func: F) -> F:
    return click.option(
        "--bootstrap",
        metavar="HOST:PORT[,…]",
        default=None,
        help="Kafka bootstrap servers (default: $LEDGER_BOOTSTRAP, else the local broker).",
    )(func)


def load_settings(bootstrap: str | None = None) -> Settings:
    """The one place the CLI builds its settings (flags over environment)."""
    return Settings.from_env(bootstrap=bootstrap)


def read_text_file(
    path: Path, *, what: str = "file", limit: int = DEFAULT_LIMITS.policy_document_bytes
) -> str:
    """A UTF-8 text file's content, or one :class:`UsageError` line saying what to fix.

    Only a regular file of at most ``limit`` bytes is read, and never more than that: a device
    (``/dev/zero``), a FIFO or an endless file would otherwise hang the command or fill memory.
    """
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to must not block; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}; check the path") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied; check the file's permissions") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UsageError(f"{path} is a directory; pass the {what} itself")
        if not stat.S_ISREG(mode):
            raise UsageError(
                f"{path} is not a regular file (a device, FIFO or socket); pass the {what} itself"
            )
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UsageError(f"{path} is larger than {limit:,} bytes, the limit for a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; save the {what} as UTF-8") from None


def parse_time(value: str | None, flag: str) -> datetime | None:
    """An ISO 8601 instant from a flag (UTC when it has no offset), or a UsageError naming it."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{flag} {value!r} is not an ISO 8601 time, e.g. 2026-11-26T12:00:00Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Seconds(click.FloatRange):
    """A number of seconds within bounds; ``nan`` and ``inf`` are not durations."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds
