"""Where Kafka is, and with which credentials, found the same way by every entry point (CLI,
SDK, processors).

Where: an explicit address (a ``--bootstrap`` flag, the SDK's ``bootstrap=``, or
``$LEDGER_BOOTSTRAP``, all carried by :class:`~ledger.settings.Settings`), else the address the
local development broker recorded when it started (``$LEDGER_HOME/broker/broker.json``) if a
server accepts connections there. Runtime code reads that record here; only the local launcher
(:mod:`ledger.local.broker`) writes it, so the SDK and the processors never import the launcher.

Credentials (:func:`resolve_security`): the ones configured (``$LEDGER_SECURITY_PROTOCOL``,
``$LEDGER_SASL_*``, ``$LEDGER_SSL_*``, carried by ``Settings.security``), else, for the local
broker, the entry point's role's credential file that ``ledger up`` wrote
(``$LEDGER_HOME/credentials/<role>.json``, written only by :mod:`ledger.local.credentials`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Final

from ledger.errors import KafkaUnavailable, UsageError
from ledger.files import (
    SMALL_FILE_BYTES,
    UnreadableFile,
    read_bounded,
    read_bounded_stat,
    written_by_others,
)
from ledger.settings import KafkaSecurity, Role, Settings, parse_bootstrap

log = logging.getLogger(__name__)

__all__ = [
    "credentials_file",
    "credential_fingerprint",
    "read_credentials",
    "resolve_security",
    "broker_record_file",
    "read_broker_record",
    "recorded_int",
    "accepts",
    "local_bootstrap",
    "local_is_secured",
    "resolve_bootstrap",
]


def broker_record_file(settings: Settings) -> Path:
    """The local broker's record: its pid and ports, written by ``ledger broker start``."""
    return settings.home / "broker" / "broker.json"


def read_broker_record(settings: Settings) -> dict[str, object] | None:
    """The local broker's record, or ``None`` (none, unreadable, or garbled)."""
    try:
        data = json.loads(read_bounded(broker_record_file(settings), SMALL_FILE_BYTES))
    except (UnreadableFile, ValueError):  # none, unreadable, not a file, too large, or garbled
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
    record = read_broker_record(settings) or {}
    port = recorded_int(record, "port")
    if port:  # an agent engineer's walkthrough: a stopped local broker read as none at all
        raise KafkaUnavailable(
            f"the local broker of {settings.home} (127.0.0.1:{port}) is not running: run "
            f"`{start}`, or " + ", ".join(ways[:-1])
        )
    # An agent engineer's walkthrough: an agent whose $LEDGER_HOME differed from the shell that
    # ran `ledger up` was told to run it, which would start a second ledger.
    raise KafkaUnavailable(
        f"no Kafka to talk to: {settings.home} holds no running local broker (is $LEDGER_HOME "
        "the home `ledger up` ran with?): " + ", ".join(ways)
    )


def credentials_file(settings: Settings, role: Role) -> Path:
    """A role's credential for the local broker (kafka-python settings, JSON, mode 0600)."""
    return settings.credentials / f"{role}.json"


def credential_fingerprint(security: KafkaSecurity | None) -> str | None:
    """A short fingerprint of ``security``'s password (``None`` without one): what a processor
    puts in its heartbeat, so that ``ledger up`` can tell it started on a password its role's
    credential file no longer holds. It reveals nothing usable of a random password."""
    if security is None or not security.password:
        return None
    return hashlib.sha256(b"ledger credential\0" + security.password.encode()).hexdigest()[:16]


_WARNED: set[Path] = set()  # credential files already warned of, once per process


def _warn_if_readable(path: Path, status: os.stat_result, role: Role) -> None:
    """Warn, once per process, of a credential others may read: it holds the role's Kafka
    password. Not refused: a secret mount (Kubernetes, Docker) may need to be readable."""
    mode = status.st_mode & 0o777
    if mode & 0o044 and path not in _WARNED:
        _WARNED.add(path)
        log.warning(
            "%s may be read by others (mode %04o): anyone who can read it can use the %s "
            "role's Kafka password; run `chmod 600 %s` unless a secret mount needs it",
            path, mode, role, path,
        )  # fmt: skip


def read_credentials(settings: Settings, role: Role) -> KafkaSecurity | None:
    """The local broker's credential for ``role``; ``None`` when there is none.

    A file that exists but does not hold a credential is one :class:`UsageError` line (a
    half-written or hand-edited file must not turn into an anonymous connection)."""
    path = credentials_file(settings, role)
    try:
        raw, status = read_bounded_stat(path, SMALL_FILE_BYTES, what="credential file")
        _warn_if_readable(path, status, role)
        found = written_by_others(path, status)  # `ledger up` gives the broker its password
        if found is not None:
            where, problem = found
            raise UsageError(
                f"the {role} credential: {where} {problem}: whoever can write it chooses "
                f"the {role} role's password; run `chmod go-w {where}` (and check who owns "
                f"it), then delete {path.name} and run `ledger up` to rotate the password "
                "(it may be known)"
            )
        data = json.loads(raw)
    except UnreadableFile as exc:
        if exc.missing:
            return None
        raise UsageError(
            f"the {role} credential: {exc}; for the local broker, delete it and run `ledger up`, "
            "which writes a new one and gives the broker its password"
        ) from None
    except ValueError as exc:
        raise UsageError(
            f"cannot read the {role} credential {path}: {exc}; for the local broker, delete it "
            "and run `ledger up`, which writes a new one and gives the broker its password"
        ) from None
    unknown = (
        sorted(str(k) for k in data if k not in _CREDENTIAL_KEYS) if isinstance(data, dict) else []
    )
    if unknown:
        # Refused, as a variable the protocol would not use is (a README check: a misspelt
        # key was ignored, and the connection went without it).
        raise UsageError(
            f"the {role} credential {path}: unknown key {unknown[0][:80]!r}; a "
            f"credential file holds {', '.join(sorted(_CREDENTIAL_KEYS))} (`ledger credentials "
            f"show {role} --json` prints one)"
        )
    try:
        # Read as the variables are: without a protocol, it follows from the settings given.
        return KafkaSecurity.inferred(
            {
                "protocol": data.get("security_protocol"),
                "sasl_mechanism": data.get("sasl_mechanism"),
                "username": data.get("sasl_plain_username"),
                "password": data.get("sasl_plain_password"),
                "ssl_cafile": data.get("ssl_cafile"),
                "ssl_certfile": data.get("ssl_certfile"),
                "ssl_keyfile": data.get("ssl_keyfile"),
            }
        )
    except (AttributeError, TypeError) as exc:
        raise UsageError(f"the {role} credential {path} is not an object: {exc}") from None
    except UsageError as exc:
        said = str(exc)
        for variable, key in _FILE_KEYS.items():  # the file's own keys, not the variables
            said = said.replace(variable, key)
        raise UsageError(f"the {role} credential {path}: {said}") from None


_CREDENTIAL_KEYS: Final = frozenset(
    {
        "bootstrap_servers",  # `ledger credentials show ROLE --json` writes it; not read here
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
    }
)
_FILE_KEYS: Final = {
    "$LEDGER_SECURITY_PROTOCOL": "security_protocol",
    "$LEDGER_SASL_MECHANISM": "sasl_mechanism",
    "$LEDGER_SASL_USERNAME": "sasl_plain_username",
    "$LEDGER_SASL_PASSWORD": "sasl_plain_password",
}
"""What a credential file's problem says in place of the variables' names."""


def local_is_secured(settings: Settings) -> bool:
    """Was the local broker last started with authentication (not ``--insecure``)?"""
    record = read_broker_record(settings) or {}
    return record.get("security_protocol", "PLAINTEXT") != "PLAINTEXT"


def resolve_security(
    settings: Settings, role: Role, *, bootstrap: str | None = None
) -> KafkaSecurity:
    """How a client of ``role`` authenticates to Kafka at ``bootstrap``.

    The configured security (``settings.security``) if any; else the role's file in a
    configured credentials directory (``$LEDGER_CREDENTIALS``); else, when the target is the
    local broker (no other address configured, or the local broker's own) and it runs secured,
    the role's local credential (``ledger up`` writes one per role); else a plain connection,
    which a secured broker refuses.
    """
    if settings.security is not None:
        return settings.security
    if settings.credentials_dir is not None:
        given = read_credentials(settings, role)
        if given is None:
            raise UsageError(
                f"no {role} credential in $LEDGER_CREDENTIALS ({settings.credentials_dir}): "
                f"put {role}.json there (`ledger credentials show {role} --json` prints one)"
            )
        return given
    record = read_broker_record(settings) or {}
    port = recorded_int(record, "port")
    target = bootstrap or settings.bootstrap
    local = target is None or (port > 0 and target in (f"127.0.0.1:{port}", f"localhost:{port}"))
    if local and local_is_secured(settings):
        found = read_credentials(settings, role)
        if found is None:
            raise UsageError(
                f"no {role} credential in {credentials_file(settings, role).parent}: run "
                "`ledger up` (it writes one per role), or set $LEDGER_SASL_USERNAME / "
                "$LEDGER_SASL_PASSWORD"
            )
        return found
    return KafkaSecurity()
