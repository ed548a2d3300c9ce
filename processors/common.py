"""What the Faust processors share: the app factory, the built :class:`Processor` and the
sends that never let an offset pass a lost output (what the handlers produce, with no Faust, is
:mod:`processors.outputs`).

The governance state each worker follows lives in the Kafka wing
(:class:`ledger.kafka.governance.GovernanceFollower`): a worker answers nothing until its
follower has caught up with the end offsets seen at start, never from partial state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import faust

from ledger.errors import ProcessorError
from ledger.files import private_dir
from ledger.kafka.clients import ssl_context
from ledger.kafka.governance import GovernanceFollower
from ledger.settings import KafkaSecurity, Settings
from processors.outputs import DecisionCounts, Output, ProcessorStats

__all__ = [
    "create_faust_app",
    "faust_credentials",
    "Processor",
    "send_or_die",
    "send_all",
    "die",
    "state_dir",
    "DELIVERY_FAILED_EXIT",
    "HANDLING_FAILED_EXIT",
]

log = logging.getLogger("ledger.processors")


def create_faust_app(
    settings: Settings, *, app_id: str, bootstrap: str, kafka: bool = True, **overrides: Any
) -> faust.App:
    """A Faust app tuned for the decision path (DESIGN §11).

    At-least-once (not exactly-once: Faust's transactions only make output visible at commit,
    every few seconds, which would break the synchronous budget); idempotence comes from request
    and command ids instead. Faust flushes its producer before committing offsets, so an input
    offset is committed only after the output it caused is durably written.

    ``kafka=False`` starts neither Faust's consumer nor its producer: for an app whose Kafka
    traffic is all its own (the evaluator's request loop), with Faust as the runtime around it.

    The app's Kafka clients authenticate with ``settings.security`` (the processor's role).
    """
    name = settings.topics.group(app_id)  # the app's id is its consumer group
    datadir = state_dir(settings, app_id)
    # Each level checked and private (Faust creates only the last itself): a processor run on
    # its own (compose, a service manager) has had no `ledger up` check its home.
    writable(datadir, [settings.home, datadir.parent])
    conf: dict[str, Any] = {
        "broker": f"kafka://{bootstrap}",
        # Faust's default data dir is "<app>-data" in the working directory: keep it with the
        # rest of the stack's state instead of littering wherever the worker was started.
        "datadir": str(datadir),
        "value_serializer": "raw",
        "key_serializer": "raw",
        "producer_linger_ms": 0,
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        "topic_allow_declare": False,  # topics are created by `ledger topics create`
        "topic_disable_leader": True,
        "web_enabled": False,
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_interval": 0.5,
        # A worker that dies without leaving its group (SIGKILL, OOM, power loss) holds its
        # partitions until the broker stops hearing from it; Faust's default of 60 s leaves
        # those requests unanswered for a minute after a crash-restart. 10 s (heartbeat 1 s)
        # bounds that outage while tolerating ordinary GC/scheduling pauses.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "store": "memory://",
        "table_standby_replicas": 0,
    }
    credentials = faust_credentials(settings.security)
    if credentials is not None:
        conf["broker_credentials"] = credentials
    conf.update(overrides)
    app = faust.App(name, **conf)
    if not kafka:
        from faust.app.base import BootStrategy

        app.boot_strategy = BootStrategy(app, enable_kafka=False)
    return app


def writable(folder: Path, above: list[Path]) -> None:
    """Make ``folder`` (and the folders ``above`` it) private (:func:`private_dir`), and check
    that a file can be written in it, before the processor answers anything: its in-flight
    markers and governance snapshot live there. An operator's walkthrough: with `faust/`
    mounted read-only, `ledger up` said "ledger is up", and each evaluator died on its first
    batch, the second on taking over the first's partitions."""
    probe = folder / f".writable-{os.getpid()}"
    try:
        for each in (*above, folder):
            private_dir(each)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ProcessorError(
            f"cannot write in {folder} ({exc.strerror or exc}): the processor keeps its "
            "in-flight markers and governance snapshot there; make it writable (a read-only "
            "mount? a full disk?) and start it again"
        ) from None


def faust_credentials(security: KafkaSecurity | None) -> Any:
    """Faust's ``broker_credentials`` for ``security`` (``None``: a plain connection)."""
    if security is None or not security.enabled:
        return None
    context = ssl_context(security) if security.tls else None
    if security.sasl:
        return faust.SASLCredentials(
            username=security.username,
            password=security.password,
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def state_dir(settings: Settings, app_id: str) -> Path:
    """The app's own directory under ``$LEDGER_HOME/faust`` (Faust data, in-flight markers)."""
    return settings.home / "faust" / settings.topics.group(app_id)  # named as its app


DELIVERY_FAILED_EXIT = 70
"""A processor's exit status when Kafka refused an output it must not lose."""
HANDLING_FAILED_EXIT = 71
"""A processor's exit status when its handling failed outside any one record: outputs
unsent, a command's events part-written, the evaluator's request loop stopped."""


def die(exit_code: int, message: str, *args: Any) -> NoReturn:
    """Stop the process at once, before any offset can be committed.

    A hard exit, not a Faust crash: when Faust sees an agent raise, it acknowledges the events
    it was handling and commits past them. Whatever input had no written outcome is re-delivered
    on restart; request and command ids make that idempotent.
    """
    log.critical(message, *args, exc_info=sys.exc_info()[0] is not None)
    os._exit(exit_code)


def _die_on_failure(future: asyncio.Future[Any]) -> None:
    if future.cancelled() or future.exception() is None:
        return
    die(
        DELIVERY_FAILED_EXIT,
        "output could not be written, stopping before any offset is committed: %r",
        future.exception(),
    )


async def send_or_die(producer: Any, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
    """Send through the app's producer; if the record is refused, now or later, exit at once.

    Faust flushes the producer before committing input offsets but does not raise when a send
    failed, so without this an input could be committed while its output was lost. A refusal can
    also come from ``send`` itself (a record over ``max_request_size`` raises there, before any
    future exists): that exits too, instead of propagating into the agent, where Faust would
    acknowledge the input and commit past it.
    """
    try:
        future: asyncio.Future[Any] = await producer.send(topic, key, value, None, None, None)
    except Exception as exc:  # every refusal is fatal here, whatever its type
        die(
            DELIVERY_FAILED_EXIT,
            "output to %s was refused, stopping before any offset is committed: %r",
            topic,
            exc,
        )
    future.add_done_callback(_die_on_failure)
    return future


async def send_all(producer: Any, outputs: list[Output]) -> None:
    """Send ``outputs`` in order with :func:`send_or_die`; never leave some of them unsent.

    Stopping the worker cancels its agent, possibly between two sends of one input's outputs;
    Faust would then acknowledge the input and commit past it with the rest unwritten. So a
    cancellation before every output is queued stops the process instead (the input is
    re-delivered on restart, and ids make that idempotent).
    """
    queued = 0
    try:
        for topic, key, value in outputs:
            await send_or_die(producer, topic, key, value)
            queued += 1
    except asyncio.CancelledError:
        if queued < len(outputs):
            die(
                HANDLING_FAILED_EXIT,
                "stopped with %d of %d outputs unsent, stopping before any offset is committed",
                len(outputs) - queued,
                len(outputs),
            )
        raise


@dataclass(frozen=True, slots=True)
class Processor:
    """A built processor: its Faust app and what its entry point (and tests) observe.

    ``gates`` are events that must all be set, besides the follower having caught up, before
    it answers anything (for the command processor: its trust anchors are recorded and its
    recent answers read back).
    ``alive()`` is false while work the event loop does not see is stuck (the evaluator's
    request thread on one batch for too long): the heartbeat pauses meanwhile. ``holding()``
    and ``out_of_group()`` (evaluators only) go into the heartbeat.
    """

    app: faust.App
    follower: GovernanceFollower
    stats: ProcessorStats
    gates: tuple[asyncio.Event, ...] = ()
    alive: Callable[[], bool] = field(default=lambda: True)
    holding: Callable[[], tuple[int, int]] | None = None
    """The evaluator's request partitions held, of how many (see :class:`Heartbeat`)."""
    out_of_group: Callable[[], tuple[float, str] | None] | None = None
    """Since when the evaluator has been out of its consumer group, and librdkafka's word on
    it (see :meth:`processors.request_loop.RequestLoop.out_of_group`)."""
    prepare: Callable[[], None] | None = None
    """Run by the entry point before the worker starts, logging set up (the command processor:
    its group's commit put back to the commands' end where it lay past it)."""
    decisions: Callable[[], DecisionCounts] | None = None
    client_id: str | None = None
    """The ``client.id`` the evaluator's request consumer gives the broker, which lists each
    member of the evaluators' group with it (see :class:`Heartbeat`)."""
    """The evaluator's running count of its decisions: its heartbeat carries the recent ones."""

    async def ready(self) -> None:
        """Return once the processor answers from complete state."""
        await self.follower.ready.wait()
        for gate in self.gates:
            await gate.wait()
