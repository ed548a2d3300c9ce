"""The local stack behind ``ledger up`` / ``ledger down``: broker, topics and processors.

Processors run as detached worker processes (``python -m processors.<name>``) with their logs
in ``$LEDGER_HOME/logs`` and pid files in ``$LEDGER_HOME/run``. ``up`` returns once each has
caught up with the governance state (it writes a ready file); ``down`` stops them with SIGTERM
(Faust commits and leaves its group cleanly), then SIGKILL after a grace period.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ledger import broker
from ledger.errors import LedgerError
from ledger.kafka_io import check_reachable
from ledger.processes import alive, spawn_detached, terminate
from ledger.settings import Settings
from ledger.topics import create_topics, topic_specs

__all__ = [
    "PROCESSORS",
    "ProcessStatus",
    "up",
    "down",
    "processes",
    "start_processor",
    "stop_processor",
]

PROCESSORS: dict[str, str] = {
    "command-processor": "processors.command_processor",
    "evaluator": "processors.evaluator",
}

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessStatus:
    name: str
    running: bool
    pid: int | None
    log: str


def _run_dir(settings: Settings) -> Path:
    return settings.home / "run"


def _log_dir(settings: Settings) -> Path:
    return settings.home / "logs"


def _pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _proc_id(name: str, instance: int | None) -> str:
    if name not in PROCESSORS:
        raise LedgerError(f"unknown processor {name!r}: one of {', '.join(PROCESSORS)}")
    return name if not instance else f"{name}-{instance}"


def _known(settings: Settings) -> list[str]:
    """Every processor this home has started (instances included), base names first."""
    found = (
        {p.stem for p in _run_dir(settings).glob("*.pid")} if _run_dir(settings).is_dir() else set()
    )
    return sorted(found | set(PROCESSORS), key=lambda n: (n.split("-")[-1].isdigit(), n))


def _marker(settings: Settings, proc_id: str) -> str:
    """What only this home's ``proc_id`` carries: the ready file it was started with (in its
    environment, which survives a rewritten process title)."""
    return f"LEDGER_READY_FILE={_run_dir(settings) / f'{proc_id}.ready'}"


def processes(settings: Settings) -> list[ProcessStatus]:
    out = []
    for name in _known(settings):
        pid = _pid(_run_dir(settings) / f"{name}.pid")
        running = alive(pid, marker=_marker(settings, name))
        out.append(ProcessStatus(name=name, running=running, pid=pid if running else None,
                                 log=str(_log_dir(settings) / f"{name}.log")))  # fmt: skip
    return out


def start_processor(
    settings: Settings,
    name: str,
    *,
    bootstrap: str,
    timeout: float = 60.0,
    instance: int | None = None,
    progress: Progress = lambda _: None,
) -> int:
    """Start one processor in the background and wait until it is ready. Returns its pid.

    ``instance`` (2, 3, …) starts a further worker of the same processor: it joins the same
    consumer group and shares the partitions (evaluators scale this way).
    """
    module = PROCESSORS.get(name)
    name = _proc_id(name, instance)
    run, logs = _run_dir(settings), _log_dir(settings)
    run.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    pid_file, ready = run / f"{name}.pid", run / f"{name}.ready"
    existing = _pid(pid_file)
    if alive(existing, marker=_marker(settings, name)):
        progress(f"{name} already running (pid {existing})")
        return existing
    progress(f"starting {name}…")
    ready.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update({
        "LEDGER_BOOTSTRAP": bootstrap,
        "LEDGER_HOME": str(settings.home),
        "LEDGER_TOPIC_PREFIX": settings.topics.prefix,
        "LEDGER_ADMINS": ",".join(sorted(settings.admins)),
        "LEDGER_READY_FILE": str(ready),
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    log = logs / f"{name}.log"
    pid = spawn_detached([sys.executable, "-m", str(module)], env=env, log=log)
    pid_file.write_text(str(pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            return pid
        if not alive(pid):
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise LedgerError(f"{name} exited during start-up: {' '.join(tail)} (log: {log})")
        time.sleep(0.1)
    raise LedgerError(f"{name} did not become ready within {timeout:.0f} s (log: {log})")


def stop_processor(
    settings: Settings,
    name: str,
    *,
    grace: float = 15.0,
    kill: bool = False,
    instance: int | None = None,
) -> bool:
    """Stop one processor (SIGTERM, or SIGKILL at once with ``kill``). False if not running."""
    name = _proc_id(name, instance) if name in PROCESSORS else name
    pid_file = _run_dir(settings) / f"{name}.pid"
    stopped = terminate(_pid(pid_file), grace=grace, kill=kill, marker=_marker(settings, name))
    pid_file.unlink(missing_ok=True)
    (_run_dir(settings) / f"{name}.ready").unlink(missing_ok=True)
    return stopped


def up(settings: Settings, *, evaluators: int = 1, progress: Progress = lambda _: None) -> str:
    """Broker (unless an external one is configured), topics, processors. Returns the bootstrap.

    ``evaluators`` workers of the evaluator share the request partitions. Two ``up`` at once
    on one home take turns (a lock file), so neither starts a second copy of a processor.
    """
    run = _run_dir(settings)
    run.mkdir(parents=True, exist_ok=True)
    with (run / "up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _up(settings, evaluators=evaluators, progress=progress)


def _up(settings: Settings, *, evaluators: int, progress: Progress) -> str:
    bootstrap = settings.bootstrap
    if bootstrap:
        check_reachable(bootstrap)
    else:
        status = broker.start(settings, progress=progress)
        assert status.bootstrap is not None
        bootstrap = status.bootstrap
    progress(f"creating topics on {bootstrap}…")
    create_topics(bootstrap, topic_specs(settings))
    wanted: list[tuple[str, int | None]] = [(name, None) for name in PROCESSORS]
    wanted += [("evaluator", instance) for instance in range(2, evaluators + 1)]
    for name, instance in wanted:
        start_processor(settings, name, bootstrap=bootstrap, instance=instance, progress=progress)
    return bootstrap


def down(settings: Settings, *, keep_broker: bool = False) -> list[str]:
    """Stop the processors, then the local broker. Returns what was stopped."""
    # Evaluator workers first, the command processor last: nothing half-answered is left behind.
    names = sorted(_known(settings), key=lambda n: n.startswith("command-processor"))
    stopped = [name for name in names if stop_processor(settings, name)]
    if not keep_broker and not settings.bootstrap and broker.stop(settings):
        stopped.append("broker")
    return stopped
