"""Kafka clients: the one place every kafka-python client of the ledger is configured and made.

Client settings are tuned for the synchronous decision path (DESIGN §11): producers send at
once (``linger_ms=0``) with ``acks=all`` and idempotence; consumers answer a fetch as soon as one
byte is there (``fetch_min_bytes=1``) and never park idle for long (small ``fetch_max_wait_ms``).

Every client is made by a factory here that first checks the bootstrap string and that some
server on it accepts a TCP connection, so a typo or a stopped broker is one
:class:`~ledger.errors.UsageError` / :class:`~ledger.errors.KafkaUnavailable` line within
seconds, not a ``ValueError`` or kafka-python's 30 s bootstrap timeout.
"""

from __future__ import annotations

import socket
from typing import Any

from ledger.errors import KafkaUnavailable
from ledger.settings import parse_bootstrap

__all__ = [
    "PRODUCER_CONFIG",
    "CONSUMER_CONFIG",
    "ADMIN_CONFIG",
    "CONNECT_TIMEOUT",
    "check_reachable",
    "make_producer",
    "make_consumer",
    "make_admin",
]

CONNECT_TIMEOUT = 2.0
"""Seconds a bootstrap server has to accept a TCP connection before it counts as unreachable."""
_BOOTSTRAP_TIMEOUT_MS = 5000
"""How long kafka-python may take to get metadata from a server that did accept the connection
(its default, 30 s, is how long an unreachable ledger took to report)."""

PRODUCER_CONFIG: dict[str, Any] = {
    "bootstrap_timeout_ms": _BOOTSTRAP_TIMEOUT_MS,
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 0,
    "retries": 5,
    "max_in_flight_requests_per_connection": 5,
}
CONSUMER_CONFIG: dict[str, Any] = {
    "bootstrap_timeout_ms": _BOOTSTRAP_TIMEOUT_MS,
    "enable_auto_commit": False,
    "fetch_min_bytes": 1,
    "fetch_max_wait_ms": 20,
    "auto_offset_reset": "earliest",
}
ADMIN_CONFIG: dict[str, Any] = {
    "bootstrap_timeout_ms": _BOOTSTRAP_TIMEOUT_MS,
    "request_timeout_ms": 15000,
}


_WHAT_TO_DO = "is it running (`ledger ps`, `ledger up`)? else check --bootstrap / $LEDGER_BOOTSTRAP"


def check_reachable(bootstrap: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
    """Return once some server of ``bootstrap`` accepts a TCP connection, else raise.

    A malformed string is a :class:`~ledger.errors.UsageError`; no server answering within
    ``timeout`` seconds each (refused, unknown host, filtered) a
    :class:`~ledger.errors.KafkaUnavailable` naming why, for each server.
    """
    reasons = []
    for host, port in parse_bootstrap(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except socket.gaierror:
            reasons.append(f"{host}: unknown host")
        except TimeoutError:
            reasons.append(f"{host}:{port}: no answer within {timeout:g} s")
        except OSError as exc:
            reasons.append(f"{host}:{port}: {(exc.strerror or str(exc)).lower()}")
    raise KafkaUnavailable(
        f"cannot reach Kafka at {bootstrap} ({'; '.join(reasons)}): {_WHAT_TO_DO}"
    )


def _client(kind: Any, bootstrap: str, config: dict[str, Any]) -> Any:
    from kafka.errors import KafkaError

    check_reachable(bootstrap)
    try:
        return kind(bootstrap_servers=bootstrap, **config)
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}: {_WHAT_TO_DO}") from exc


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    from kafka import KafkaProducer

    return _client(KafkaProducer, bootstrap, {**PRODUCER_CONFIG, **overrides})


def make_consumer(bootstrap: str, **overrides: Any) -> Any:
    from kafka import KafkaConsumer

    return _client(KafkaConsumer, bootstrap, {**CONSUMER_CONFIG, **overrides})


def make_admin(bootstrap: str, **overrides: Any) -> Any:
    from kafka import KafkaAdminClient

    return _client(KafkaAdminClient, bootstrap, {**ADMIN_CONFIG, **overrides})
