"""Where Kafka is, found the same way by every entry point (CLI, SDK, processors).

In order: an explicit address (a ``--bootstrap`` flag, the SDK's ``bootstrap=``, or
``$LEDGER_BOOTSTRAP``, all carried by :class:`~ledger.settings.Settings`), else the address the
local development broker recorded when it started (``$LEDGER_HOME/broker/broker.json``) if a
server accepts connections there. Runtime code reads that record here; only the local launcher
(:mod:`ledger.local.broker`) writes it, so the SDK and the processors never import the launcher.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from ledger.errors import KafkaUnavailable
from ledger.settings import Settings, parse_bootstrap

__all__ = [
    "broker_record_file",
    "read_broker_record",
    "recorded_int",
    "accepts",
    "local_bootstrap",
    "resolve_bootstrap",
]


def broker_record_file(settings: Settings) -> Path:
    """The local broker's record: its pid and ports, written by ``ledger broker start``."""
    return settings.home / "broker" / "broker.json"


def read_broker_record(settings: Settings) -> dict[str, object] | None:
    """The local broker's record, or ``None`` (none, unreadable, or garbled)."""
    try:
        data = json.loads(broker_record_file(settings).read_text())
    except (OSError, ValueError):  # none, unreadable (a $LEDGER_HOME that is a file), or garbled
        return None
    return data if isinstance(data, dict) else None


def recorded_int(record: dict[str, object], key: str) -> int:
    """An integer of the record (0 when missing or not an integer: a hand-edited file)."""
    try:
        return int(str(record.get(key, 0)))
    except ValueError:
        return 0


def accepts(port: int, timeout: float = 0.5) -> bool:
    """Does a server on 127.0.0.1:``port`` accept a TCP connection?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def local_bootstrap(settings: Settings) -> str | None:
    """The local broker's recorded address, if a server accepts connections on it."""
    record = read_broker_record(settings) or {}
    port = recorded_int(record, "port")
    if port and recorded_int(record, "pid") and accepts(port):
        return f"127.0.0.1:{port}"
    return None


def resolve_bootstrap(
    settings: Settings,
    *,
    explicit: str | None = "pass --bootstrap",
    start: str = "ledger broker start",
) -> str:
    """Where Kafka is: ``settings.bootstrap`` (a flag or ``$LEDGER_BOOTSTRAP``), else the
    recorded address of the running local broker.

    Neither: :class:`KafkaUnavailable`, one line saying what to do. ``explicit`` is how the
    caller names an address of its own (the CLI's ``--bootstrap``, the SDK's ``bootstrap=``) and
    ``start`` the command that starts what the caller needs (a bare broker, or the whole ledger).
    """
    if settings.bootstrap:
        parse_bootstrap(settings.bootstrap)  # a malformed address is a UsageError, here
        return settings.bootstrap
    local = local_bootstrap(settings)
    if local:
        return local
    ways = [*([explicit] if explicit else []), "set $LEDGER_BOOTSTRAP", f"or run `{start}`"]
    raise KafkaUnavailable("no Kafka to talk to: " + ", ".join(ways))
