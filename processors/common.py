"""What the Faust processors share: the app factory, the built :class:`Processor` and
:func:`die`, which stops a processor before any offset can pass a lost output (what the handlers
produce, with no Faust, is :mod:`processors.outputs`; how it reaches Kafka,
:mod:`processors.request_loop` and :mod:`processors.command_loop`).

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

from ledger.core.text import clipped
from ledger.errors import ProcessorError
from ledger.files import private_dir
from ledger.kafka.clients import ssl_context
from ledger.kafka.governance import GovernanceFollower
from ledger.settings import KafkaSecurity, Settings
from processors.outputs import DecisionCounts, ProcessorStats

__all__ = [
    "create_faust_app",
    "faust_credentials",
    "Processor",
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

    At-least-once (not exactly-once: transactions only make output visible at commit, which
    would break the synchronous budget); idempotence comes from request and command ids instead,
    and an input offset is committed only after the outputs it caused are acknowledged.

    ``kafka=False`` starts neither Faust's consumer nor its producer: for an app whose Kafka
    traffic is all its own, with Faust as the runtime around it. Both processors are such apps
    (the evaluator's request loop, the command processor's command loop, and both governance
    followers: librdkafka).

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

    A hard exit, not an exception: nothing after it runs, no commit, no clean-up that could
    write. Whatever input had no written outcome is re-delivered on restart; request and
    command ids make that idempotent.
    """
    failure = sys.exc_info()[1]
    if failure is not None:
        # The cause on the line itself: `ps` and `up` quote this line (an operator's
        # walkthrough: "the request loop failed", the PermissionError a traceback below).
        if not args:
            message = message.replace("%", "%%")
        message, args = (
            message + ": %s",
            (*args, clipped(f"{type(failure).__name__}: {failure}", 300)),
        )
    log.critical(message, *args, exc_info=failure is not None)
    os._exit(exit_code)


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
