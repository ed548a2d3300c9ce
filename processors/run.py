"""Running a processor as a worker process: settings from the environment, a Faust worker.

This is an entry point, so it is the one place here that reads the environment
(``Settings.from_env``). ``LEDGER_BOOTSTRAP`` (or the local broker) says where Kafka is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust

from ledger import broker
from ledger.errors import LedgerError
from ledger.settings import Settings

__all__ = ["run_worker"]


def run_worker(factory: Callable[..., faust.App], *, name: str) -> None:
    settings = Settings.from_env()
    try:
        bootstrap = broker.resolve_bootstrap(settings, explicit=None)
    except LedgerError as exc:
        print(f"error: {name}: {exc} [{exc.code}]", file=sys.stderr)
        sys.exit(exc.exit_code)
    app: Any = factory(settings, bootstrap=bootstrap)
    ready_file = os.environ.get("LEDGER_READY_FILE")
    if ready_file:
        # `ledger up` waits for this file: written once the governance state has caught up.
        @app.task
        async def announce_ready() -> None:
            await app.ledger_follower.ready.wait()
            if hasattr(app, "ledger_deduplicated"):
                await app.ledger_deduplicated.wait()
            Path(ready_file).write_text(str(os.getpid()))

    # Our own INFO lines (caught up, start-up de-duplication, stats) reach the log; the
    # libraries' chatter stays at WARNING.
    logging_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": f"[%(asctime)s] {name} %(levelname)s %(name)s: %(message)s"}
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {lib: {"level": "WARNING"} for lib in ("faust", "aiokafka", "mode", "kafka")},
    }
    worker = faust.Worker(app, loglevel="INFO", quiet=True, logging_config=logging_config)
    worker.execute_from_commandline()
