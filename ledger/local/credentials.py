"""Credentials of the local broker: one SCRAM-SHA-512 user per role, and the broker's own.

Generated once, at random, into ``$LEDGER_HOME/credentials/<name>.json`` (mode 0600, in a 0700
directory): kafka-python keyword arguments (``security_protocol``, ``sasl_mechanism``,
``sasl_plain_username``, ``sasl_plain_password``), which is also what
``ledger credentials show ROLE --json`` prints (with ``bootstrap_servers``). Runtime code reads
them through :func:`ledger.discovery.read_credentials`; only this module writes them.

The broker learns the users' SCRAM credentials when its log directory is formatted, or later
through the admin API (:func:`register`); ``$LEDGER_HOME/broker/scram.json`` remembers which
users the broker knows, and with which password (a SHA-256 of it), so a start adds only what
is missing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any, Final

from ledger.discovery import credentials_file, read_credentials
from ledger.errors import KafkaAccessDenied
from ledger.files import SMALL_FILE_BYTES, UnreadableFile, read_bounded, write_private
from ledger.kafka.clients import kafka_failure, kafka_python_config, make_admin
from ledger.settings import ROLES, KafkaSecurity, Role, Settings

__all__ = [
    "BROKER_USER",
    "MECHANISM",
    "USERS",
    "ensure",
    "credential",
    "registered",
    "remember_registered",
    "register",
]

BROKER_USER: Final = "broker"
"""The broker's own principal (``User:broker``): a super user, with ``admin``."""
MECHANISM: Final = "SCRAM-SHA-512"
USERS: Final[tuple[str, ...]] = (BROKER_USER, *ROLES)
"""Every SCRAM user of the local broker: the broker, then one per role (user name = role)."""


def _security(user: str, password: str) -> KafkaSecurity:
    return KafkaSecurity(
        protocol="SASL_PLAINTEXT", sasl_mechanism=MECHANISM, username=user, password=password
    )


def _file(settings: Settings, user: str) -> Path:
    return credentials_file(settings, user)  # type: ignore[arg-type]  # the broker is no role


def ensure(settings: Settings) -> dict[str, KafkaSecurity]:
    """Every user's credential, generating (once) the ones missing. Keyed by user name."""
    found: dict[str, KafkaSecurity] = {}
    for user in USERS:
        existing = read_credentials(settings, user)  # type: ignore[arg-type]  # USERS are the broker user and the roles: read_credentials takes any user name (typed as a role)
        if existing is None:
            existing = _security(user, secrets.token_urlsafe(32))
            write_private(
                _file(settings, user), json.dumps(kafka_python_config(existing), indent=2)
            )
        found[user] = existing
    return found


def credential(settings: Settings, role: Role) -> KafkaSecurity:
    """``role``'s credential (generating the set if this home has none yet)."""
    return ensure(settings)[role]


def _fingerprint(security: KafkaSecurity) -> str:
    return hashlib.sha256((security.password or "").encode()).hexdigest()


def _record(settings: Settings) -> Path:
    return settings.home / "broker" / "scram.json"


def _known(settings: Settings) -> dict[str, Any]:
    """The record of users the broker knows (``scram.json``): user -> password fingerprint."""
    try:
        known = json.loads(read_bounded(_record(settings), SMALL_FILE_BYTES))
    except (UnreadableFile, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def registered(settings: Settings, users: dict[str, KafkaSecurity]) -> set[str]:
    """The users the broker knows with their current password (per ``scram.json``)."""
    known = _known(settings)
    return {u for u, sec in users.items() if known.get(u) == _fingerprint(sec)}


def changed(settings: Settings, users: dict[str, KafkaSecurity]) -> set[str]:
    """The users the broker knew with another password than their current one (per
    ``scram.json``): a credential file written anew."""
    known = _known(settings)
    return {u for u, sec in users.items() if u in known and known[u] != _fingerprint(sec)}


def remember_registered(settings: Settings, users: dict[str, KafkaSecurity]) -> None:
    """Note that the broker now knows ``users`` with these passwords."""
    known = _known(settings)
    known.update({u: _fingerprint(sec) for u, sec in users.items()})
    write_private(_record(settings), json.dumps(known, indent=2, sort_keys=True))


def register(
    bootstrap: str, users: dict[str, KafkaSecurity], *, security: KafkaSecurity | None
) -> None:
    """Add or update ``users``' SCRAM credentials on the broker, as ``security`` (the admin;
    ``None`` on a broker still without authentication)."""
    from kafka.admin import UserScramCredentialUpsertion
    from kafka.errors import KafkaError

    admin = make_admin(bootstrap, security=security)
    try:
        failures = admin.alter_user_scram_credentials(
            [
                UserScramCredentialUpsertion(user, MECHANISM, str(sec.password))
                for user, sec in users.items()
            ]
        )
    except KafkaError as exc:
        raise kafka_failure(
            exc, security, bootstrap, f"adding SCRAM credentials on {bootstrap}"
        ) from exc
    finally:
        admin.close()
    bad = {user: error for user, error in (failures or {}).items() if error}
    if bad:
        raise KafkaAccessDenied(f"the broker refused SCRAM credentials for {bad}")
