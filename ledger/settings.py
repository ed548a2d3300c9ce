"""Configuration: one frozen object, built once at an entry point and passed down.

Nothing below the entry points reads ``os.environ``: :func:`Settings.from_env` is the only place
that does (with :func:`audit_memory_from_env`, its part the CLI's root applies), and the CLI, the
processors and the test fixtures call it (or build ``Settings`` directly) and pass the result on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Final, Literal, get_args

from ledger.core.lifecycle import DEFAULT_ADMINS
from ledger.errors import UsageError

__all__ = [
    "Settings",
    "TopicNames",
    "KafkaSecurity",
    "Role",
    "ROLES",
    "SECURITY_ENV",
    "parse_bootstrap",
    "audit_memory_from_env",
]

Role = Literal[
    "agent", "governance", "command-processor", "evaluator", "exporter", "auditor", "admin"
]
"""Who a Kafka client is, for the broker's ACLs (see the README's security section):

- ``agent``: SDK evaluation (writes requests, reads decisions and corrections);
- ``governance``: CLI/SDK governance commands (writes commands, reads their results);
- ``command-processor``, ``evaluator``: the processors, the only writers of governance events
  and of decisions respectively;
- ``exporter``, ``auditor``: read-only (export; audit, replay, list and show);
- ``admin``: topics, ACLs and credentials (a super user of the broker)."""
ROLES: Final[tuple[Role, ...]] = get_args(Role)

Protocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
_PROTOCOLS: Final = get_args(Protocol)
_MECHANISMS: Final = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")

SECURITY_ENV: Final = {
    "protocol": "LEDGER_SECURITY_PROTOCOL",
    "sasl_mechanism": "LEDGER_SASL_MECHANISM",
    "username": "LEDGER_SASL_USERNAME",
    "password": "LEDGER_SASL_PASSWORD",
    "ssl_cafile": "LEDGER_SSL_CAFILE",
    "ssl_certfile": "LEDGER_SSL_CERTFILE",
    "ssl_keyfile": "LEDGER_SSL_KEYFILE",
}
"""The environment variables of :class:`KafkaSecurity`, by field."""

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)$")


def parse_bootstrap(value: str) -> tuple[tuple[str, int], ...]:
    """``HOST:PORT[,HOST:PORT…]`` as ``((host, port), …)``, or one :class:`UsageError` line.

    Checked before any Kafka client sees it: kafka-python would raise a bare ``ValueError`` deep
    in its connection code (a port that is not a number), or retry a malformed address for its
    whole bootstrap timeout.
    """
    servers: list[tuple[str, int]] = []
    for entry in value.split(","):
        entry = entry.strip()
        host, sep, port = entry.rpartition(":")
        problem = None
        if not entry:
            problem = "an empty entry"
        elif not sep:
            problem = f"{entry!r} has no port"
        elif not host:
            problem = f"{entry!r} has no host"
        elif not _HOST.fullmatch(host):
            problem = f"{host!r} is not a host name or IP address"
        elif not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
            problem = f"port {port!r} of {entry!r} is not an integer 1-65535"
        if problem:
            raise UsageError(
                f"bootstrap servers {value!r}: {problem}; expected HOST:PORT[,HOST:PORT…] "
                "(check --bootstrap or $LEDGER_BOOTSTRAP)"
            )
        servers.append((host.strip("[]"), int(port)))
    return tuple(servers)


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicNames:
    """The ledger's topic names (DESIGN §4), optionally under a deployment prefix."""

    prefix: str = ""

    def _name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def commands(self) -> str:
        return self._name("ledger.commands")

    @property
    def command_results(self) -> str:
        return self._name("ledger.command-results")

    @property
    def policy_events(self) -> str:
        return self._name("ledger.policy-events")

    @property
    def grant_events(self) -> str:
        return self._name("ledger.grant-events")

    @property
    def evaluation_requests(self) -> str:
        return self._name("ledger.evaluation-requests")

    @property
    def decisions(self) -> str:
        return self._name("ledger.decisions")

    @property
    def corrections(self) -> str:
        return self._name("ledger.corrections")

    @property
    def dead_letters(self) -> str:
        return self._name("ledger.dead-letters")

    @property
    def chain_checkpoints(self) -> str:
        """Heads of the evaluators' decision hash chains (``ChainCheckpoint``, DESIGN §9)."""
        return self._name("ledger.chain-checkpoints")

    def sender_timed(self) -> frozenset[str]:
        """The topics outsiders write (agents' requests, actors' commands): their events' own
        times are their senders' word, so the records take the broker's time
        (``LogAppendTime``) and an export files a row far from it by the broker's."""
        return frozenset({self.commands, self.evaluation_requests})

    def group(self, name: str) -> str:
        """The consumer group ``name`` of this ledger (under the same prefix as its topics:
        the ACLs grant groups by it)."""
        return self._name(name)

    def all(self) -> tuple[str, ...]:
        return (
            self.commands,
            self.command_results,
            self.policy_events,
            self.grant_events,
            self.evaluation_requests,
            self.decisions,
            self.corrections,
            self.dead_letters,
            self.chain_checkpoints,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSecurity:
    """How a Kafka client authenticates: the one description every client is configured from.

    ``protocol`` is Kafka's ``security.protocol``; SASL protocols need ``sasl_mechanism``,
    ``username`` and ``password``; TLS protocols may name a CA file and a client certificate and
    key (PEM). The Kafka wing maps it to each library's settings
    (:mod:`ledger.kafka.clients`); the password never appears in ``repr``.
    """

    protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        if self.protocol not in _PROTOCOLS:
            raise UsageError(
                f"security protocol {self.protocol!r} is not one of {', '.join(_PROTOCOLS)} "
                "(check $LEDGER_SECURITY_PROTOCOL)"
            )
        if self.sasl:
            if self.sasl_mechanism not in _MECHANISMS:
                raise UsageError(
                    f"SASL mechanism {self.sasl_mechanism!r} is not one of "
                    f"{', '.join(_MECHANISMS)} (check $LEDGER_SASL_MECHANISM)"
                )
            if not self.username or self.password is None:
                raise UsageError(
                    f"{self.protocol} needs a username and a password "
                    "(set $LEDGER_SASL_USERNAME and $LEDGER_SASL_PASSWORD)"
                )
        # A setting the protocol would ignore is a mistake that must not pass quietly: a CA file
        # with PLAINTEXT would connect unencrypted, a username with SSL unauthenticated.
        elif self.sasl_mechanism or self.username or self.password is not None:
            raise UsageError(
                f"{self.protocol} does not use SASL, but a SASL mechanism, username or password "
                "is set: use SASL_PLAINTEXT or SASL_SSL (check $LEDGER_SECURITY_PROTOCOL)"
            )
        if not self.tls and (self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile):
            raise UsageError(
                f"{self.protocol} does not use TLS, but a TLS CA file, certificate or key is "
                "set: use SSL or SASL_SSL (check $LEDGER_SECURITY_PROTOCOL)"
            )

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @property
    def enabled(self) -> bool:
        """False for a plain, unauthenticated connection (``PLAINTEXT``)."""
        return self.protocol != "PLAINTEXT"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity | None:
        """The security the ``LEDGER_SECURITY_*``/``LEDGER_SASL_*``/``LEDGER_SSL_*`` variables
        describe, or ``None`` when none is set (then the entry point discovers it)."""
        values = {name: env.get(var) or None for name, var in SECURITY_ENV.items()}
        if not any(values.values()):
            return None
        return cls.inferred(values)

    @classmethod
    def inferred(cls, values: Mapping[str, str | None]) -> KafkaSecurity:
        """The security these settings (keyed by field name; ``None``: not given) describe.
        Without a protocol, it follows from what is given: SASL for any SASL setting, TLS for
        any TLS one (never PLAINTEXT beside a setting it would ignore); SASL's mechanism
        defaults to SCRAM-SHA-512. The variables and a credential file both read this way."""
        sasl = any(values.get(k) for k in ("sasl_mechanism", "username", "password"))
        tls = any(values.get(k) for k in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"))
        protocol = values.get("protocol") or (
            ("SASL_SSL" if tls else "SASL_PLAINTEXT") if sasl else ("SSL" if tls else "PLAINTEXT")
        )
        mechanism = values.get("sasl_mechanism")
        if protocol.startswith("SASL_") and not mechanism:
            mechanism = "SCRAM-SHA-512"
        paths = {
            k: Path(v) if v else None
            for k in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
            for v in (values.get(k),)
        }
        return cls(
            protocol=protocol,  # type: ignore[arg-type]  # checked in __post_init__
            sasl_mechanism=mechanism,
            username=values.get("username"),
            password=values.get("password"),
            **paths,
        )

    def to_env(self) -> dict[str, str]:
        """The variables :meth:`from_env` reads back into these settings."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[SECURITY_ENV[f.name]] = str(value)
        return env


def audit_memory_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``$LEDGER_AUDIT_MEMORY``, blank as unset: :attr:`Settings.audit_memory` alone, for an
    entry point that applies it before any other setting is needed (the CLI's root, for every
    command: a bad security variable must not stop an offline command)."""
    env = os.environ if env is None else env
    return env.get("LEDGER_AUDIT_MEMORY") or None


def _absolute(path: Path) -> Path:
    """``path`` absolute and normalised (``home``, ``./home`` and ``a/../home`` spelled alike):
    the one spelling every process of a stack compares. A path through a symbolic link is left
    as written (made absolute): the home's safety check judges a link, and ``..`` after one,
    where the system goes (:func:`ledger.local.broker.private_home`), and resolving it here
    would hide a link it refuses."""
    path = path.expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    normal = Path(os.path.normpath(path))
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError):  # a link loop: the home's check says what is wrong there
        return path
    return normal if resolved == normal else path


def _default_cache() -> Path:
    return Path.home() / ".cache"


def _default_state() -> Path:
    return Path.home() / ".local" / "state"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything configurable, in one place.

    - ``bootstrap``: Kafka bootstrap servers; ``None`` means "the local broker's recorded address".
    - ``home``: state of the local stack (broker log dir, pid files, logs). ``$LEDGER_HOME``.
    - ``cache``: downloaded broker jars. ``$XDG_CACHE_HOME/decision-ledger``.
    - ``topics``: topic names (``$LEDGER_TOPIC_PREFIX``).
    - ``admins``: bootstrap administrators allowed every governance command (``$LEDGER_ADMINS``).
    - ``ready_file``: where a processor worker writes its heartbeat (``$LEDGER_READY_FILE``, set
      by ``ledger up`` for the workers it starts).
    - ``security``: how Kafka clients authenticate, when configured (``$LEDGER_SECURITY_PROTOCOL``,
      ``$LEDGER_SASL_*``, ``$LEDGER_SSL_*``); ``None`` means "discover it": the local broker's
      credential for the entry point's role (:func:`ledger.discovery.resolve_security`).
    - ``keys``: the actors' signing key store (``$LEDGER_KEYS``, default ``$LEDGER_HOME/keys``).
    - ``credentials``: where each role's credential file is (``$LEDGER_CREDENTIALS``, default
      ``$LEDGER_HOME/credentials``, written by ``ledger up``); set, it is used whatever the broker.
    - ``audit_memory``: what DuckDB may hold for one reader of an export
      (``$LEDGER_AUDIT_MEMORY``; ``None``: :data:`ledger.audit.sql.QUERY_MEMORY`).
    - ``governance_skip``: governance records (``TOPIC/PARTITION@OFFSET``) of a schema no
      release knows that the operator has judged no release's (``ledger actor verify`` calls
      them DAMAGED): the processors skip them instead of holding their policy or principal
      (``$LEDGER_GOVERNANCE_SKIP``, comma-separated).


    :meth:`to_env` is the inverse of :meth:`from_env`: the environment a child process (a
    processor worker) needs to build the same settings.
    """

    bootstrap: str | None = None
    home: Path = field(default_factory=lambda: _default_state() / "decision-ledger")
    cache: Path = field(default_factory=lambda: _default_cache() / "decision-ledger")
    topics: TopicNames = field(default_factory=TopicNames)
    admins: frozenset[str] = DEFAULT_ADMINS
    ready_file: Path | None = None
    security: KafkaSecurity | None = None
    key_store: Path | None = None
    credentials_dir: Path | None = None
    audit_memory: str | None = None
    governance_skip: frozenset[str] = frozenset()

    @property
    def credentials(self) -> Path:
        """Where the roles' credential files are: ``$LEDGER_CREDENTIALS``, else
        ``$LEDGER_HOME/credentials``."""
        return self.credentials_dir or self.home / "credentials"

    @property
    def export_dir(self) -> Path:
        """The export directory commands use when given none: ``$LEDGER_HOME/export``."""
        return self.home / "export"

    @property
    def keys(self) -> Path:
        """Where the actors' signing keys are: ``$LEDGER_KEYS``, else ``$LEDGER_HOME/keys``."""
        return self.key_store if self.key_store is not None else self.home / "keys"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from the environment (the only place that reads it)."""
        env = os.environ if env is None else env
        cache_root = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else _default_cache()
        state_root = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else _default_state()
        # One home, however it is written: a relative path or `..` in it named the running
        # stack's home in another spelling, and `ledger up` started a second command processor
        # beside the first (an operator's walkthrough).
        home = _absolute(
            Path(env["LEDGER_HOME"]) if env.get("LEDGER_HOME") else state_root / "decision-ledger"
        )
        # Blank is unset, as for every variable: an empty expansion must not silently leave the
        # ledger without administrators (name one without a key for that).
        admins = (
            frozenset(a.strip() for a in env.get("LEDGER_ADMINS", "").split(",") if a.strip())
            or DEFAULT_ADMINS
        )
        settings = cls(
            bootstrap=env.get("LEDGER_BOOTSTRAP") or None,
            home=home,
            cache=cache_root / "decision-ledger",
            topics=TopicNames(prefix=env.get("LEDGER_TOPIC_PREFIX", "")),
            admins=admins,
            ready_file=Path(env["LEDGER_READY_FILE"]) if env.get("LEDGER_READY_FILE") else None,
            security=KafkaSecurity.from_env(env),
            key_store=_absolute(Path(env["LEDGER_KEYS"])) if env.get("LEDGER_KEYS") else None,
            credentials_dir=(
                _absolute(Path(env["LEDGER_CREDENTIALS"]))
                if env.get("LEDGER_CREDENTIALS")
                else None
            ),
            audit_memory=audit_memory_from_env(env),
            governance_skip=frozenset(
                s.strip() for s in env.get("LEDGER_GOVERNANCE_SKIP", "").split(",") if s.strip()
            ),
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **clean) if clean else settings  # type: ignore[arg-type]  # clean holds only Settings fields, of their types, which a dict cannot say

    def to_env(self) -> dict[str, str]:
        """The ``LEDGER_*`` variables from which :meth:`from_env` rebuilds these settings (the
        cache is left to ``$XDG_CACHE_HOME``, which a child inherits)."""
        env = {
            "LEDGER_HOME": str(self.home),
            "LEDGER_TOPIC_PREFIX": self.topics.prefix,
            "LEDGER_ADMINS": ",".join(sorted(self.admins)),
        }
        if self.bootstrap:
            env["LEDGER_BOOTSTRAP"] = self.bootstrap
        if self.ready_file is not None:
            env["LEDGER_READY_FILE"] = str(self.ready_file)
        if self.security is not None:
            env.update(self.security.to_env())
        if self.key_store is not None:
            env["LEDGER_KEYS"] = str(self.key_store)
        if self.credentials_dir is not None:
            env["LEDGER_CREDENTIALS"] = str(self.credentials_dir)
        if self.audit_memory is not None:
            env["LEDGER_AUDIT_MEMORY"] = self.audit_memory
        if self.governance_skip:
            env["LEDGER_GOVERNANCE_SKIP"] = ",".join(sorted(self.governance_skip))
        return env
