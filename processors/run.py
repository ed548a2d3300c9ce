"""Running a processor as a worker process: settings from the environment, a Faust worker.

This is an entry point, so it is the one place here that reads the environment
(``Settings.from_env``). ``LEDGER_BOOTSTRAP`` (or the local broker) says where Kafka is, and
``LEDGER_SECURITY_PROTOCOL``/``LEDGER_SASL_*``/``LEDGER_SSL_*`` (or the local broker's credential
for the processor's role, ``command-processor`` or ``evaluator``) how to authenticate.

With ``LEDGER_READY_FILE`` (set by ``ledger up``), the worker writes a
:class:`~processors.heartbeat.Heartbeat` there once its governance state has caught up, and again
every second: ``ledger up`` waits for the first, ``ledger ps``/``up`` judge health from the rest,
and tell from the code fingerprint it carries whether it runs the code installed now.

While the broker is away the Kafka libraries log the same connection error several times a
second; :class:`RepeatFilter` lets each through once per half-minute with a count, so a log
does not grow megabytes during an outage.
"""

from __future__ import annotations

import asyncio
import atexit
import faulthandler
import inspect
import logging
import logging.config
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import faust

from ledger.discovery import credential_fingerprint, resolve_bootstrap, resolve_security
from ledger.errors import LedgerError
from ledger.kafka.logs import LIBRARY_LOGGERS, RepeatFilter
from ledger.kafka.snapshots import installed_fingerprint
from ledger.settings import ROLES, Role, Settings
from processors.common import Processor
from processors.heartbeat import Heartbeat
from processors.outputs import DecisionWindow

__all__ = ["run_worker", "worker_label", "RepeatFilter"]

_LIBRARIES = LIBRARY_LOGGERS


_ESCAPED: Final = {
    c: ("\\n" if c == 10 else "\\r" if c == 13 else f"\\x{c:02x}" if c < 256 else f"\\u{c:04x}")
    for c in (*range(0, 9), *range(10, 32), *range(127, 160), 0x2028, 0x2029)
}
"""A message's line breaks and other control characters, as their escapes (tab kept)."""


class LineFormatter(logging.Formatter):
    """Each record on lines of its own that nobody else's text can imitate: its message's
    line breaks and control characters escaped (``\\n``), and a traceback's or stack's lines
    that could pass for a record (starting ``[`` or ``Fatal``) indented. ``ledger ps`` and
    ``down`` read a processor's log for its ``starting:``/``stopped:`` lines and its
    CRITICAL ones (:func:`ledger.local.stack.ended_unannounced`), and messages quote what
    clients sent (a review: a client's text holding ``\\n[…] evaluator INFO
    ledger.processor: stopped: pid 1`` could make a killed worker read as stopped)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_ESCAPED)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join(
        "  " + line if line.startswith(("[", "Fatal")) else line for line in text.split("\n")
    )


def _logging_config(name: str) -> dict[str, Any]:
    """Our own INFO lines (caught up, de-duplication reads, stats) reach the log; the
    libraries' chatter stays at WARNING, and their repeats are thinned out."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {
                "class": "processors.run.LineFormatter",
                "format": f"[%(asctime)s] {name} %(levelname)s %(name)s: %(message)s",
            }
        },
        "filters": {"repeats": {"()": RepeatFilter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["repeats"],
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {lib: {"level": "WARNING"} for lib in _LIBRARIES},
    }


def worker_label(name: str, ready_file: Path | None) -> str:
    """The worker's name at the start of its log lines: ``evaluator-2`` from the ready file
    `ledger up` gives it (``run/evaluator-2.ready``), else the processor's name (Compose's
    ``/state/ready`` names no worker: a review found every line labelled ``ready``)."""
    stem = ready_file.stem if ready_file is not None else ""
    return stem if stem == name or stem.removeprefix(f"{name}-").isdigit() else name


def run_worker(factory: Callable[..., Processor], *, name: str, role: Role | None = None) -> None:
    """Build the processor from the environment's settings and run it as a Faust worker.

    ``role`` (default: ``name``, which must then be a role) picks its Kafka credential."""
    # A fatal signal (SIGBUS from a memory-mapped marker file whose disk or mount went away,
    # SIGSEGV in a C extension) kills the process before any Python logging runs: this writes
    # its Python stack to stderr, which is the processor's log, so `not running` has a cause.
    faulthandler.enable()
    code = installed_fingerprint()  # the code it runs: read before an upgrade can replace it
    if role is None:
        if name not in ROLES:
            raise ValueError(f"{name!r} is not a role: pass role=")
        role = name  # narrowed by the membership test above
    settings = Settings.from_env()
    # Its own name in every line (evaluator-2, not evaluator: an operator's walkthrough could
    # not tell two evaluators apart in a combined view): the ready file `ledger up` gave it.
    label = worker_label(name, settings.ready_file)
    logged = False  # its lines go through logging: a failure is a CRITICAL record
    try:
        bootstrap = resolve_bootstrap(settings, explicit=None)
        security = resolve_security(settings, role, bootstrap=bootstrap)
        settings = replace(settings, security=security)
        # Its lines formatted as the rest, the factory's warnings too (a review: they came
        # unformatted before the start line, read as the last run's).
        logging.config.dictConfig(_logging_config(label))
        logged = True
        processor = factory(settings, bootstrap=bootstrap)  # an unsafe home: one line
        # Where a run starts in the log, and what it is (an operator's walkthrough: a restart
        # left no mark, and a worker running another checkout's code looked like an upgrade).
        logging.getLogger("ledger.processor").info(
            "starting: pid %s, code %s from %s, Kafka at %s as %s, heartbeat file %s",
            os.getpid(),
            code[:12],  # as `ledger ps --json` shows it
            inspect.getfile(factory),
            bootstrap,
            security.username if security is not None and security.username else "no user",
            settings.ready_file,
        )
        atexit.register(
            logging.getLogger("ledger.processor").info, "stopped: pid %s", os.getpid()
        )  # a run that ends without this line was killed (or lost its disk)
        if processor.prepare is not None:
            processor.prepare()
    except LedgerError as exc:
        if logged:  # a record of its own, which `ps` quotes (an operator's walkthrough: a start
            # that failed writing its folder was only "not running"); no client text forges one
            logging.getLogger("ledger.processor").critical("%s: %s [%s]", name, exc, exc.code)
        else:
            print(f"error: {name}: {exc} [{exc.code}]", file=sys.stderr)
        sys.exit(exc.exit_code)
    app, follower = processor.app, processor.follower
    ready_file = settings.ready_file
    credential = credential_fingerprint(settings.security)
    if ready_file is not None:
        path = ready_file

        @app.task
        async def heartbeat() -> None:
            await processor.ready()
            while follower.last_fetch is None:  # ready means: it has heard from the broker
                await asyncio.sleep(0.05)
            failing_since: float | None = None
            window = DecisionWindow()
            while True:
                held, of = processor.holding() if processor.holding else (None, None)
                out = processor.out_of_group() if processor.out_of_group else None
                recent, span = (
                    window.recent(time.monotonic(), processor.decisions())
                    if processor.decisions
                    else (None, None)
                )
                beat = Heartbeat(
                    pid=os.getpid(),
                    bootstrap=bootstrap,
                    at=time.time(),
                    fetched_at=follower.last_fetch,
                    credential=credential,
                    code=code,
                    requests_held=held,
                    requests_of=of,
                    out_of_group_since=None if out is None else out[0],
                    group_state=None if out is None else out[1],
                    recent=recent,
                    recent_seconds=None if span is None else round(span, 1),
                    client_id=processor.client_id,
                    governance_newer=follower.newer,
                    governance_unread=follower.unread_aggregates(),
                    governance_damaged=follower.damaged,
                    governance_damaged_at=follower.damaged_at,
                )
                if processor.alive():  # a stuck request thread shows as a missing beat
                    try:
                        beat.write(path)
                    except OSError as exc:  # a missing beat shows; a crash helps no one
                        if failing_since is None:  # said once per spell, not every second
                            failing_since = time.monotonic()
                            logging.getLogger("ledger.processor").error(
                                "cannot write the heartbeat file %s (%s): the processor goes "
                                "on, but `ledger ps` will report it unhealthy until the file "
                                "can be written again (is the disk full?)",
                                path,
                                exc.strerror or exc,
                            )
                    else:
                        if failing_since is not None:
                            logging.getLogger("ledger.processor").warning(
                                "the heartbeat file %s is written again", path
                            )
                        failing_since = None
                await asyncio.sleep(Heartbeat.INTERVAL)

    worker = faust.Worker(app, loglevel="INFO", quiet=True, logging_config=_logging_config(label))
    worker.execute_from_commandline()
