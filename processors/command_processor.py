"""The command processor: the single writer of governance events (DESIGN §7).

Per command (:class:`processors.command_loop.CommandLoop`, which reads them with librdkafka):
decode → core ``decide`` → append the events → answer on ``ledger.command-results``.
``ledger.commands`` has one partition and this processor runs as one worker, so commands are
decided one at a time against the state that includes every earlier accepted command.

Every command record gets a written outcome before its offset is committed: an answer, or a dead
letter (:mod:`processors.dead_letters`) for a record that is not a command, that the processor
failed on, or that it died on every time it was handled (:mod:`processors.inflight`).

A command id is decided once (the core's ``decide_again``). A command re-delivered after a
crash (events written, offset not yet committed) is recognised by its id — every governance
event carries the ``command_id`` that caused it, and the signature — and answered again without
appending anything twice. A rejected command sent again gets its first rejection again, so a
captured rejected command cannot be replayed once the state would let it through: the processor
remembers the rejections of authenticated commands for as long as a command is valid, and at
start reads them back from ``ledger.command-results``
(:data:`processors.command_handler.REMEMBER_REJECTIONS`): the rules of one record are
:class:`processors.command_handler.CommandHandler`'s, the Kafka side
:mod:`processors.command_loop`'s, this module builds the Faust app around them.

Every command must be signed by its actor: the core's ``decide_signed`` rejects unsigned ones,
unknown or revoked keys and bad signatures before anything else, and records the proof on the
events it accepts. The trust anchors — the bootstrap administrators' public keys, read from the
key store (``$LEDGER_KEYS``, their ``.pub`` files) — are recorded in the ledger as
``ActorKeyRegistered`` by ``service:command-processor`` when it starts, before it answers any
command (once: a key the ledger knows is left alone).

Run it: ``python -m processors.command_processor``, or let ``ledger up`` do it.
"""

from __future__ import annotations

import asyncio
import logging

from ledger.codec import default_codec
from ledger.core.lifecycle import (
    register_anchors,
)
from ledger.core.state import aggregate_of
from ledger.errors import LedgerError
from ledger.ids import new_id, utcnow
from ledger.kafka.acls import PROCESSOR_GROUPS
from ledger.kafka.clients import make_rdkafka_producer
from ledger.kafka.governance import GovernanceFollower
from ledger.kafka.offsets import claim_commits_past_end
from ledger.kafka.reading import read_raw
from ledger.kafka.snapshots import snapshot_file
from ledger.keys import KeyStore, printable_text
from ledger.settings import Settings
from processors.command_handler import REMEMBER_REJECTIONS, CommandHandler
from processors.command_loop import CommandLoop, Outbox
from processors.common import (
    HANDLING_FAILED_EXIT,
    Processor,
    create_faust_app,
    die,
    state_dir,
)
from processors.inflight import InFlight
from processors.outputs import OutputLimit, ProcessorStats

__all__ = ["create_app", "main", "trust_anchors", "known_keys", "APP_ID"]

log = logging.getLogger("ledger.command-processor")
APP_ID = PROCESSOR_GROUPS["command-processor"]


def create_app(settings: Settings, *, bootstrap: str) -> Processor:
    # Faust is the runtime (worker, lifecycle, the governance follower's task); commands are
    # read and every record written with librdkafka (see processors.command_loop).
    app = create_faust_app(settings, app_id=APP_ID, bootstrap=bootstrap, kafka=False)
    codec = default_codec()
    stats = ProcessorStats()
    anchors = trust_anchors(settings)
    left_out: dict[str, str] = {}
    limit = OutputLimit.for_app(app)
    outbox = Outbox(
        lambda: make_rdkafka_producer(
            bootstrap, security=settings.security, **{"message.max.bytes": limit.max_bytes}
        )
    )
    handler = CommandHandler(
        settings=settings,
        codec=codec,
        stats=stats,
        limit=limit,
        inflight=InFlight(state_dir(settings, APP_ID) / "inflight"),
        anchors=anchors,
        known=known_keys(settings, left_out=left_out),
        left_out=left_out,
    )
    follower = GovernanceFollower(
        bootstrap=bootstrap,
        topics=settings.topics,
        codec=codec,
        memory=handler.applied,  # kept in the snapshot with the state
        freeze_when_caught_up=True,  # its long-lived state, out of the collector's scans
        security=settings.security,
        skip=settings.governance_skip,
        snapshot=snapshot_file(state_dir(settings, APP_ID), handler.applied),
    )
    anchored = asyncio.Event()
    recalled = asyncio.Event()

    def prepare() -> None:
        # A consumer skips what lies below the commit it read: one past the commands' end (a
        # restored copy of a running home) left the next commands unanswered, silently.
        claim_commits_past_end(
            bootstrap,
            settings.topics.commands,
            settings.topics.group(APP_ID),
            security=settings.security,
        )

    processor = Processor(
        app=app, follower=follower, stats=stats, gates=(anchored, recalled), prepare=prepare
    )

    @app.task
    async def follow_governance() -> None:
        await follower.run()

    @app.task
    async def record_trust_anchors() -> None:
        # Before any command is answered: the administrators' keys must be in the ledger for
        # their first command to be authenticated.
        await follower.ready.wait()
        for event in register_anchors(follower.state, anchors, now=utcnow(), new_id=new_id):
            held = follower.state.principals.get(event.principal)
            active = [k.key_id for k in held.keys if k.active] if held is not None else []
            outbox.send(
                settings.topics.grant_events, aggregate_of(event).encode(), codec.encode(event)
            )
            await outbox.acknowledged()
            follower.apply_local(event)
            if active:  # a rotation, or someone replaced the .pub: the operator must know
                log.warning(
                    "trust anchor recorded: %s key %s, beside its active key(s) %s: if no one "
                    "rotated this administrator's key, someone changed %s; revoke the key "
                    "not yours (`ledger actor revoke %s --key KEY_ID --by %s --reason ...`)",
                    event.principal,
                    event.actor_key_id,
                    ", ".join(active),
                    settings.keys,
                    event.principal,
                    event.principal,
                )
            else:
                log.info("trust anchor recorded: %s key %s", event.principal, event.actor_key_id)
        anchored.set()

    @app.task
    async def recall_rejections() -> None:
        # Before any command is answered: the rejections of the last minutes, so a command
        # rejected before a restart is not decided again (see decide_again).
        now = utcnow()
        since_ms = int((now - REMEMBER_REJECTIONS).timestamp() * 1000)
        try:
            answers = await asyncio.to_thread(
                lambda: list(
                    read_raw(
                        bootstrap,
                        [settings.topics.command_results],
                        security=settings.security,
                        since_ms=since_ms,
                    )
                )
            )
        except Exception:  # answering without them would reopen the replay window: stop
            die(
                HANDLING_FAILED_EXIT,
                "cannot read the recent answers on %s (is the ACL table applied? `ledger topics "
                "create --acls` as an admin): not answering commands without them",
                settings.topics.command_results,
            )
        unread = handler.recall(answers, now)
        log.info("start-up: %d recent rejections remembered", len(handler.rejected))
        if unread:
            log.warning(
                "start-up: %d recent answer(s) on %s are of a schema this release does not "
                "know (a newer release's): a command sent again with one of their ids is "
                "refused (governance_unreadable) until that release's command processor runs",
                unread,
                settings.topics.command_results,
            )
        recalled.set()

    commands = CommandLoop(
        bootstrap=bootstrap,
        settings=settings,
        group_id=app.conf.id,
        handler=handler,
        outbox=outbox,
        state=lambda: follower.state,
        apply=follower.apply_local,
    )

    @app.task
    async def answer_commands() -> None:
        # Nothing may escape this task unnoticed: a command loop that ended would leave the
        # processor healthy-looking and every command unanswered.
        try:
            await commands.run(processor.ready)
        except asyncio.CancelledError:
            raise
        except Exception:
            die(HANDLING_FAILED_EXIT, "the command processor's command loop stopped")

    return processor


def trust_anchors(settings: Settings) -> dict[str, bytes]:
    """The bootstrap administrators' public keys from the key store (those it has)."""
    store = KeyStore(settings.keys)
    anchors = {}
    for admin in sorted(settings.admins):
        public = store.public_key(admin)
        if public is None:
            log.warning(
                "no public key of bootstrap administrator %s in %s: it cannot sign commands "
                "until an administrator registers one (`ledger up` creates it locally)",
                admin,
                settings.keys,
            )
        else:
            anchors[admin] = public
    return anchors


def known_keys(
    settings: Settings, *, left_out: dict[str, str] | None = None
) -> dict[str, frozenset[bytes]]:
    """The retired public keys the key store holds, by actor (``retired/ACTOR/*.pub``): a
    rotated administrator's old key, or a departed administrator's, moved there. A trust
    anchor among them still roots the keys it registered. Not every actor's ``.pub``: an
    anchor planted with one not yet registered made its actor an administrator (a review).
    One that cannot be read, or that others may write, is left out, with a warning (and in
    ``left_out``, actor: why)."""
    store = KeyStore(settings.keys)
    known: dict[str, frozenset[bytes]] = {}
    for actor in store.retired_actors():
        try:
            found = store.retired_keys(actor)
        except LedgerError as exc:
            log.warning(
                "key store: a retired public key of %s left out: %s",
                printable_text(actor),
                printable_text(str(exc)),
            )
            if left_out is not None:
                left_out[actor] = str(exc)
            continue
        if found:
            known[actor] = frozenset(found)
    return known


def main() -> None:
    """Entry point of ``python -m processors.command_processor``."""
    from processors.run import run_worker

    run_worker(create_app, name="command-processor")


if __name__ == "__main__":
    main()
