"""The command processor: the single writer of governance events (DESIGN §7).

Agent body: decode → core ``decide`` → append the events → answer on ``ledger.command-results``.
``ledger.commands`` has one partition and this processor runs as one worker, so commands are
decided one at a time against the state that includes every earlier accepted command.

A command re-delivered after a crash (events written, offset not yet committed) is recognised
by its id — every governance event carries the ``command_id`` that caused it — and answered
again without appending anything twice.

Run it: ``python -m processors.command_processor``, or let ``ledger up`` do it.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import faust

from ledger.codec import default_codec
from ledger.core.events import (
    COMMAND_TYPES,
    Command,
    CommandAccepted,
    DeadLetter,
    GovernanceEvent,
    GrantIssued,
    GrantRevoked,
    RoleAssigned,
    RoleRevoked,
)
from ledger.core.lifecycle import Rejection, command_aggregate, command_result, decide
from ledger.core.state import aggregate_of
from ledger.errors import CodecError
from ledger.kafka_io import new_id, utcnow
from ledger.settings import Settings
from processors.common import GovernanceFollower, ProcessorStats, create_faust_app, send_or_die

__all__ = ["create_app", "main", "APP_ID"]

log = logging.getLogger("ledger.command-processor")
APP_ID = "ledger-command-processor"
_GRANT_EVENTS = (GrantIssued, GrantRevoked, RoleAssigned, RoleRevoked)


def create_app(settings: Settings, *, bootstrap: str) -> faust.App:
    app = create_faust_app(settings, app_id=APP_ID, bootstrap=bootstrap)
    codec = default_codec()
    stats = ProcessorStats()
    applied: dict[str, list[str]] = {}  # command id -> ids of the events it produced

    def remember(event: GovernanceEvent) -> None:
        ids = applied.setdefault(event.command_id, [])
        if event.event_id not in ids:
            ids.append(event.event_id)

    follower = GovernanceFollower(
        bootstrap=bootstrap, settings=settings, codec=codec, stats=stats, on_event=remember
    )
    t = settings.topics
    app.ledger_stats = stats  # type: ignore[attr-defined]
    app.ledger_follower = follower  # type: ignore[attr-defined]

    @app.task
    async def follow_governance() -> None:
        await follower.run()

    @app.agent(app.topic(t.commands))
    async def handle(stream: Any) -> None:
        async for event in stream.events():
            await follower.ready.wait()
            msg = event.message
            try:
                decoded = codec.decode(msg.value)
                if not isinstance(decoded, COMMAND_TYPES):
                    raise CodecError(f"{type(decoded).__name__} is not a command")
                command = cast(Command, decoded)
            except CodecError as exc:
                stats.dead_lettered += 1
                letter = DeadLetter(
                    event_id=new_id(), occurred_at=utcnow(), actor="service:command-processor",
                    source_topic=msg.topic, partition=msg.partition, offset=msg.offset,
                    key=msg.key, value=msg.value, code=exc.code, reason=str(exc),
                )  # fmt: skip
                await send_or_die(
                    app.producer, t.dead_letters, msg.key or b"", codec.encode(letter)
                )
                continue
            now = utcnow()
            if command.event_id in applied:  # re-delivery of an already applied command
                stats.duplicates += 1
                result: Any = CommandAccepted(
                    event_id=new_id(), occurred_at=now, actor="service:command-processor",
                    command_id=command.event_id, command_type=type(command).__name__,
                    aggregate=command_aggregate(command),
                    event_ids=tuple(applied[command.event_id]), message="already applied",
                )  # fmt: skip
            else:
                outcome = decide(
                    follower.state, command, now=now, new_id=new_id, admins=settings.admins
                )
                if not isinstance(outcome, Rejection):
                    for gov in outcome:
                        topic = (
                            t.grant_events if isinstance(gov, _GRANT_EVENTS) else t.policy_events
                        )
                        key, value = aggregate_of(gov).encode(), codec.encode(gov)
                        # Wait for the broker's ack: the answer must never precede the events.
                        await (await send_or_die(app.producer, topic, key, value))
                        follower.apply_local(gov)
                result = command_result(command, outcome, event_id=new_id(), now=now)
            stats.processed += 1
            await send_or_die(
                app.producer, t.command_results, command.event_id.encode(), codec.encode(result)
            )

    return app


def main() -> None:
    """Entry point of ``python -m processors.command_processor``."""
    from processors.run import run_worker

    run_worker(create_app, name="command-processor")


if __name__ == "__main__":
    main()
