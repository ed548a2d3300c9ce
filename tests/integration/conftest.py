"""Fixtures of the integration tests: ledger stacks on the real broker (see ``harness``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import ADMIN, AGENT, LedgerStack  # beside this file

from ledger.client import LedgerClient
from ledger.files import write_private
from ledger.kafka.acls import ensure_acls
from ledger.kafka.clients import kafka_python_config
from ledger.kafka.topics import create_topics, topic_specs
from ledger.local.stack import ensure_admin_keys
from ledger.settings import ROLES, KafkaSecurity, Settings, TopicNames

StackFactory = Callable[..., LedgerStack]


def _maker(
    kafka: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[StackFactory, Callable[[], None]]:
    made: list[LedgerStack] = []

    def make(
        *,
        processors: tuple[str, ...] = ("command-processor", "evaluator"),
        evaluation_partitions: int = 3,
    ) -> LedgerStack:
        topics = TopicNames(prefix=f"it{uuid.uuid4().hex[:10]}.")
        settings = Settings(
            bootstrap=kafka.bootstrap, home=tmp_path_factory.mktemp("stack"), topics=topics
        )
        admin = kafka.security("admin")
        create_topics(
            kafka.bootstrap,
            topic_specs(settings, evaluation_partitions=evaluation_partitions),
            security=admin,
        )
        if kafka.secured:
            ensure_acls(kafka.bootstrap, topics, security=admin)
        for role in ROLES:
            security = kafka.security(role) or KafkaSecurity()
            write_private(
                settings.credentials / f"{role}.json", json.dumps(kafka_python_config(security))
            )
        ensure_admin_keys(settings)  # the command processor's trust anchor
        stack = LedgerStack(
            bootstrap=kafka.bootstrap, settings=settings, credentials=dict(kafka.credentials)
        )
        made.append(stack)
        for name in processors:
            stack.start(name)
        return stack

    def stop_all() -> None:
        for stack in made:
            stack.close_clients()
            for name in ("evaluator", "command-processor"):
                stack.stop(name)
            stack.stop("evaluator", instance=2)

    return make, stop_all


@pytest.fixture(scope="module")
def stack_factory(kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """Build ledger stacks of this module's own (for tests that stop, kill or restart processors);
    all are stopped, and their clients closed, after the module."""
    make, stop_all = _maker(kafka, tmp_path_factory)
    try:
        yield make
    finally:
        stop_all()


@pytest.fixture(scope="session")
def shared_stack(kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerStack]:
    """One stack for every test that leaves its processors alone, with alice and bob allowed
    every policy command and the agent allowed every action on every resource (tests of
    ``no_authority`` use another principal). Tests keep apart by owning a policy each."""
    make, stop_all = _maker(kafka, tmp_path_factory)
    try:
        stack = make()
        stack.grant_defaults()
        yield stack
    finally:
        stop_all()


@pytest.fixture
def admin(shared_stack: LedgerStack) -> Iterator[LedgerClient]:
    client = shared_stack.client(ADMIN)
    yield client
    shared_stack.release(client)


@pytest.fixture
def agent(shared_stack: LedgerStack) -> Iterator[LedgerClient]:
    client = shared_stack.client(AGENT)
    yield client
    shared_stack.release(client)


@pytest.fixture
def policy_name() -> str:
    """A policy name of this test's own (so tests sharing a stack never touch each other's)."""
    return f"p{uuid.uuid4().hex[:8]}"
