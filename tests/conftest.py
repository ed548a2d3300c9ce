"""Shared fixtures: a real Kafka broker for the session, and factories for topics and clients.

The broker comes from, in order:
1. ``$LEDGER_TEST_BOOTSTRAP`` (an existing cluster you point the suite at; every role then uses
   the credential of ``$LEDGER_SECURITY_PROTOCOL``/``$LEDGER_SASL_*``/``$LEDGER_SSL_*``);
2. a testcontainers Kafka, when a Docker engine answers a ping (without authentication), unless
   ``$LEDGER_TEST_BROKER`` is ``local`` — ``make test`` sets it, so CI always runs the secured
   tests (ACLs, SCRAM, the trust boundary) that a container without authentication skips;
3. the project's own local broker (``ledger.broker``), started **secured** (SASL/SCRAM, ACLs) in a
   fresh ``$LEDGER_HOME`` under pytest's temp dir and stopped at the end — the path CI takes on
   machines without Docker. Each role gets its own credential (``kafka.security(role)``).
Jars are cached in the user's cache dir, so only the first run downloads them.

Every raw client a test makes comes from ``producer_factory`` / ``consumer_factory`` (with the
``role`` whose credential it uses, ``admin`` by default); topics of a test get the ledger's ACLs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ledger.kafka.clients import kafka_python_config
from ledger.settings import ROLES, KafkaSecurity, Role, Settings, TopicNames


@dataclass(frozen=True)
class KafkaUnderTest:
    bootstrap: str
    source: str  # "env" | "testcontainers" | "local"
    settings: Settings  # home/cache of the local broker when source == "local"
    credentials: Mapping[str, KafkaSecurity] = field(default_factory=dict)

    @property
    def secured(self) -> bool:
        """Does this broker authenticate clients and enforce the ledger's ACLs (the local one)?"""
        return self.source == "local"

    def security(self, role: Role) -> KafkaSecurity | None:
        """The credential of ``role`` on this broker (``None``: a plain connection)."""
        return self.credentials.get(role)

    def client_config(self, role: Role) -> dict[str, object]:
        """kafka-python keyword arguments for a client of ``role``."""
        return {"bootstrap_servers": self.bootstrap, **kafka_python_config(self.security(role))}


def _docker_engine_answers() -> bool:
    """True when a Docker engine answers a ping (the client binary alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the docker SDK's own deprecations are not ours
        try:
            import docker

            client = docker.from_env(timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent / "integration"
    for item in items:
        if root in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaUnderTest]:
    """A real Kafka broker for the whole session."""
    base = Settings.from_env()
    env_bootstrap = os.environ.get("LEDGER_TEST_BOOTSTRAP")
    if env_bootstrap:
        given = {role: base.security for role in ROLES if base.security is not None}
        yield KafkaUnderTest(env_bootstrap, "env", base, given)
        return
    if os.environ.get("LEDGER_TEST_BROKER") != "local" and _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield KafkaUnderTest(container.get_bootstrap_server(), "testcontainers", base)
        return

    from ledger.local import broker, credentials

    home = tmp_path_factory.mktemp("ledger-home")
    settings = Settings(home=home, cache=base.cache)
    status = broker.start(settings, progress=print)
    assert status.bootstrap is not None and status.secured
    try:
        yield KafkaUnderTest(status.bootstrap, "local", settings, credentials.ensure(settings))
    finally:
        broker.stop(settings)


@pytest.fixture
def topic_names(request: pytest.FixtureRequest) -> TopicNames:
    """A unique topic prefix per test, so tests never see each other's records."""
    return TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")


@pytest.fixture
def ledger_topics(kafka: KafkaUnderTest, topic_names: TopicNames) -> TopicNames:
    """All ledger topics created under this test's prefix."""
    from ledger.kafka.acls import ensure_acls
    from ledger.kafka.topics import create_topics, topic_specs

    settings = Settings(topics=topic_names)
    admin = kafka.security("admin")
    create_topics(kafka.bootstrap, topic_specs(settings, evaluation_partitions=3), security=admin)
    if kafka.secured:
        ensure_acls(kafka.bootstrap, topic_names, security=admin)
    return topic_names


@pytest.fixture
def producer_factory(kafka: KafkaUnderTest) -> Iterator[Callable[..., object]]:
    from kafka import KafkaProducer

    made: list[KafkaProducer] = []

    def make(*, role: Role = "admin", **config: object) -> KafkaProducer:
        producer = KafkaProducer(**kafka.client_config(role), acks="all", linger_ms=0, **config)
        made.append(producer)
        return producer

    yield make
    for p in made:
        p.close(timeout=5)


@pytest.fixture
def consumer_factory(kafka: KafkaUnderTest) -> Iterator[Callable[..., object]]:
    from kafka import KafkaConsumer

    made: list[KafkaConsumer] = []

    def make(*topics: str, role: Role = "admin", **config: object) -> KafkaConsumer:
        defaults: dict[str, object] = {
            **kafka.client_config(role),
            "auto_offset_reset": "earliest",
            "enable_auto_commit": False,
            "fetch_max_wait_ms": 50,
            "consumer_timeout_ms": 10000,
        }
        consumer = KafkaConsumer(*topics, **{**defaults, **config})
        made.append(consumer)
        return consumer

    yield make
    for c in made:
        c.close()
