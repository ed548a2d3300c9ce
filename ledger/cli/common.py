"""Options and lookups shared by the command groups that talk to Kafka."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from ledger.broker import resolve_bootstrap  # the one lookup, shared with the SDK
from ledger.errors import UsageError
from ledger.settings import Settings

__all__ = [
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


def read_text_file(path: Path, *, what: str = "file") -> str:
    """A UTF-8 text file's content, or one :class:`UsageError` line saying what to fix."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}; check the path") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory; pass the {what} itself") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied; check the file's permissions") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; save the {what} as UTF-8") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


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
