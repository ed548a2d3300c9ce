"""A processor whose output the broker finally refuses exits before any commit can follow."""

from __future__ import annotations

import asyncio

import pytest

from processors import common


class _Producer:
    def __init__(self, outcome: BaseException | None) -> None:
        self.outcome = outcome

    async def send(self, topic, key, value, partition, timestamp, headers):
        future = asyncio.get_running_loop().create_future()
        if self.outcome is None:
            future.set_result("metadata")
        else:
            future.set_exception(self.outcome)
        return future


def _run(outcome: BaseException | None, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    exits: list[int] = []
    monkeypatch.setattr(common.os, "_exit", exits.append)

    async def scenario() -> None:
        future = await common.send_or_die(_Producer(outcome), "t", b"k", b"v")
        await asyncio.sleep(0)  # let done-callbacks run
        if outcome is not None:
            future.exception()  # retrieved: no "exception never retrieved" warning

    asyncio.run(scenario())
    return exits


def test_failed_delivery_exits_with_its_code(monkeypatch):
    assert _run(RuntimeError("broker refused"), monkeypatch) == [common.DELIVERY_FAILED_EXIT]


def test_successful_delivery_does_not_exit(monkeypatch):
    assert _run(None, monkeypatch) == []
