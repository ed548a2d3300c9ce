"""Shared fixtures: a real Kafka broker for the session, and factories for topics and clients.

The broker comes from, in order:
1. ``$LEDGER_TEST_BOOTSTRAP`` (an existing cluster you point the suite at);
2. a testcontainers Kafka, when a Docker engine answers a ping;
3. the project's own local broker (``ledger.broker``), started in a fresh ``$LEDGER_HOME`` under
   pytest's temp dir and stopped at the end — the path CI takes on machines without Docker.
Jars are cached in the user's cache dir, so only the first run downloads them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.settings import Settings, TopicNames


@dataclass(frozen=True)
class KafkaUnderTest:
    bootstrap: str
    source: str  # "env" | "testcontainers" | "local"
    settings: Settings  # home/cache of the local broker when source == "local"


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
        yield KafkaUnderTest(env_bootstrap, "env", base)
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield KafkaUnderTest(container.get_bootstrap_server(), "testcontainers", base)
        return

    from ledger.local import broker

    home = tmp_path_factory.mktemp("ledger-home")
    settings = Settings(home=home, cache=base.cache)
    status = broker.start(settings, progress=print)
    assert status.bootstrap is not None
    try:
        yield KafkaUnderTest(status.bootstrap, "local", settings)
    finally:
        broker.stop(settings)


@pytest.fixture
def topic_names(request: pytest.FixtureRequest) -> TopicNames:
    """A unique topic prefix per test, so tests never see each other's records."""
    return TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")


@pytest.fixture
def ledger_topics(kafka: KafkaUnderTest, topic_names: TopicNames) -> TopicNames:
    """All ledger topics created under this test's prefix."""
    from ledger.kafka.topics import create_topics, topic_specs

    settings = Settings(topics=topic_names)
    create_topics(kafka.bootstrap, topic_specs(settings, evaluation_partitions=3))
    return topic_names


@pytest.fixture
def producer_factory(kafka: KafkaUnderTest) -> Iterator[Callable[..., object]]:
    from kafka import KafkaProducer

    made: list[KafkaProducer] = []

    def make(**config: object) -> KafkaProducer:
        producer = KafkaProducer(
            bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=0, **config
        )
        made.append(producer)
        return producer

    yield make
    for p in made:
        p.close(timeout=5)


@pytest.fixture
def consumer_factory(kafka: KafkaUnderTest) -> Iterator[Callable[..., object]]:
    from kafka import KafkaConsumer

    made: list[KafkaConsumer] = []

    def make(*topics: str, **config: object) -> KafkaConsumer:
        defaults: dict[str, object] = {
            "bootstrap_servers": kafka.bootstrap,
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
