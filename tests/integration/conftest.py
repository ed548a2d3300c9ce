"""Fixtures of the integration tests: ledger stacks on the real broker (see ``harness``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import ADMIN, AGENT, ALICE, BOB, LedgerStack  # beside this file

from ledger.client import LedgerClient
from ledger.settings import Settings, TopicNames
from ledger.topics import create_topics, topic_specs

StackFactory = Callable[..., LedgerStack]


@pytest.fixture(scope="module")
def stack_factory(kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """Build ledger stacks for this module; all are stopped (and their clients closed) after it."""
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
        create_topics(
            kafka.bootstrap, topic_specs(settings, evaluation_partitions=evaluation_partitions)
        )
        stack = LedgerStack(bootstrap=kafka.bootstrap, settings=settings)
        made.append(stack)
        for name in processors:
            stack.start(name)
        return stack

    yield make
    for stack in made:
        stack.close_clients()
        for name in ("evaluator", "command-processor"):
            stack.stop(name)


@pytest.fixture(scope="module")
def shared_stack(stack_factory: StackFactory) -> LedgerStack:
    """One stack for the module, with alice and bob allowed every policy command and the agent
    allowed every action on every resource (tests of ``no_authority`` use another principal)."""
    stack = stack_factory()
    admin = stack.client(ADMIN)
    for person in (ALICE, BOB):
        stack.grant(admin, person, ("ledger.policy.*",), "policy:*")
    stack.grant(admin, AGENT, ("*",), "*")
    return stack


@pytest.fixture
def admin(shared_stack: LedgerStack) -> LedgerClient:
    return shared_stack.client(ADMIN)


@pytest.fixture
def agent(shared_stack: LedgerStack) -> LedgerClient:
    return shared_stack.client(AGENT)


@pytest.fixture
def policy_name(request: pytest.FixtureRequest) -> str:
    """A policy name of this test's own (so tests sharing a stack never touch each other's)."""
    return f"p{uuid.uuid4().hex[:8]}"
