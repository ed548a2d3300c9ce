"""Configuration: one frozen object, built once at an entry point and passed down.

Nothing below the entry points reads ``os.environ``: :func:`Settings.from_env` is the only place
that does, and the CLI, the processors and the test fixtures call it (or build ``Settings``
directly) and pass the result on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ledger.core.lifecycle import DEFAULT_ADMINS
from ledger.errors import UsageError

__all__ = ["Settings", "TopicNames", "parse_bootstrap"]

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
        elif not _HOST.match(host):
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

    :meth:`to_env` is the inverse of :meth:`from_env`: the environment a child process (a
    processor worker) needs to build the same settings.
    """

    bootstrap: str | None = None
    home: Path = field(default_factory=lambda: _default_state() / "decision-ledger")
    cache: Path = field(default_factory=lambda: _default_cache() / "decision-ledger")
    topics: TopicNames = field(default_factory=TopicNames)
    admins: frozenset[str] = DEFAULT_ADMINS
    ready_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from the environment (the only place that reads it)."""
        env = os.environ if env is None else env
        cache_root = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else _default_cache()
        state_root = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else _default_state()
        home = (
            Path(env["LEDGER_HOME"]) if env.get("LEDGER_HOME") else state_root / "decision-ledger"
        )
        raw_admins = env.get("LEDGER_ADMINS")
        admins = (
            frozenset(a.strip() for a in raw_admins.split(",") if a.strip())
            if raw_admins is not None
            else DEFAULT_ADMINS
        )
        settings = cls(
            bootstrap=env.get("LEDGER_BOOTSTRAP") or None,
            home=home,
            cache=cache_root / "decision-ledger",
            topics=TopicNames(prefix=env.get("LEDGER_TOPIC_PREFIX", "")),
            admins=admins,
            ready_file=Path(env["LEDGER_READY_FILE"]) if env.get("LEDGER_READY_FILE") else None,
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **clean) if clean else settings  # type: ignore[arg-type]

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
        return env
