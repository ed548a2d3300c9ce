"""The local stack behind ``ledger up`` / ``ledger down``: broker, topics and processors.

Processors run as detached worker processes (``python -m processors.<name>``) with their logs
in ``$LEDGER_HOME/logs`` and pid and ready files in ``$LEDGER_HOME/run``. Once a processor has
caught up with the governance state it writes a :class:`~processors.heartbeat.Heartbeat` into its
ready file, and again every second: ``up`` returns once each has written one.

A processor is *healthy* when it runs, its heartbeat is fresh, its consumer heard from the broker
within the last few seconds, the address it was started with is where Kafka is now (a pid
alone proves none of that: a processor dialling a stopped or moved broker looks alive), and
(an evaluator) it has not been out of its consumer group for a minute (the rule is
:meth:`Heartbeat.problem`). ``up``
restarts what is not healthy, after giving it a moment to reconnect by itself. A heartbeat also
says which code its processor runs: after an upgrade in place, a healthy processor runs the
code of before until it is restarted, which ``ps`` shows and ``up`` refuses to call done
(:func:`other_code`). The evaluators' heartbeats also say how many request partitions each holds:
until they hold them all (some 10 s after a broker restart, while the group rebalances), ``up``
waits and ``ps`` says so (:func:`unheld_requests`). ``down`` stops processors with SIGTERM (Faust commits and leaves its group cleanly), then SIGKILL after a grace
period, a short one when the processor cannot reach its broker anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Final

from ledger.discovery import (
    credential_fingerprint,
    credentials_file,
    local_bootstrap,
    read_credentials,
    resolve_security,
)
from ledger.errors import KafkaAccessDenied, LedgerError, ProcessorError, UsageError
from ledger.files import open_private, private_dir, private_umask, write_private
from ledger.kafka.acls import PROCESSOR_GROUPS, ensure_acls
from ledger.kafka.clients import check_reachable
from ledger.kafka.groups import (
    members_holding,
    partitions_by_client,
    records_waiting,
    static_instance_id,
)
from ledger.kafka.snapshots import installed_fingerprint
from ledger.kafka.topics import create_topics, topic_specs
from ledger.keys import KeyStore, printable_text
from ledger.local import broker
from ledger.local.processes import alive, exit_status, find, spawn_detached, terminate
from ledger.settings import SECURITY_ENV, KafkaSecurity, Role, Settings
from processors.heartbeat import (
    DecisionCounts,
    Heartbeat,
    age,
    errors_dominate,
    stopped_by_signal,
    unreadable_advice,
)

__all__ = [
    "PROCESSORS",
    "processor_argv",
    "worker_environment",
    "ProcessStatus",
    "up",
    "down",
    "processes",
    "start_processor",
    "stop_processor",
    "ensure_admin_keys",
    "other_code",
    "unheld_requests",
    "erroring",
    "low_disk",
    "held_elsewhere",
    "commands_held_elsewhere",
    "requests_waiting",
    "request_holders",
]

PROCESSORS: dict[str, str] = {
    "command-processor": "processors.command_processor",
    "evaluator": "processors.evaluator",
}

Progress = Callable[[str], None]


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a worker inherits of ``up``'s environment: no Kafka credential (only the one ``up``
    chooses for it), and of ``PYTHONPATH`` only absolute folders (an empty or relative entry is
    the working directory, which ``-P`` keeps off the path: a review put one there)."""
    env = {k: v for k, v in environ.items() if k not in SECURITY_ENV.values()}
    if "PYTHONPATH" in env:
        kept = [p for p in env["PYTHONPATH"].split(os.pathsep) if os.path.isabs(p)]
        env["PYTHONPATH"] = os.pathsep.join(kept)
    return env


def processor_argv(module: str) -> list[str]:
    """How a processor worker is started: this Python, running ``module`` as installed. ``-P``
    keeps the working directory off the module path (an operator's walkthrough: `ledger up`
    run from another checkout ran that checkout's processors, and from a folder others can
    write, whatever `processors/` someone put there, with the processors' credentials)."""
    return [sys.executable, "-P", "-m", module]


RECOVERY_WAIT = 20.0
"""Seconds ``up`` gives an unhealthy processor (of the right address) to reconnect by itself."""
SETTLE = 1.0
"""Seconds ``up`` watches the processors it (re)started after they became ready, before it says
all is well: one that dies on its first request is then reported, not left for ``ps``."""
START_WAIT = 60.0
"""Seconds ``up`` gives a processor to become ready (``ledger up --wait``): it first catches up
with the governance history, about 8 s per million events on a 2-core machine (11.5 s when the
commands were signed)."""
STOP_GRACE = 15.0
"""Seconds a healthy processor has to commit and leave its group on SIGTERM."""
UNREACHABLE_GRACE = 3.0
"""The same for a processor that cannot reach its broker: it cannot commit, so do not wait."""
LOW_DISK_BYTES = 200 * 1024 * 1024
"""Free bytes under which the filesystem of the home (or of the broker's data) is nearly full."""
LOW_DISK_SHARE = 0.01
"""The share of the filesystem free under which it is nearly full, when that is also under
:data:`LOW_DISK_SHARE_BYTES` (a review: 90 GB free of 10 TB is 0.9 %, and no emergency)."""
LOW_DISK_SHARE_BYTES = 2 * 1024**3


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessStatus:
    """One processor as ``ledger ps`` shows it.

    ``bootstrap`` is the Kafka address it was started with, ``heartbeat_age`` the seconds since it
    last wrote its heartbeat and ``fetch_age`` since its consumer last heard from the broker
    (``None``: no heartbeat yet; negative: dated that far in the future, the clock stepped
    back, see :data:`~processors.heartbeat.AHEAD_AFTER`). ``problem`` says why it is not
    healthy.
    """

    name: str
    running: bool
    healthy: bool
    pid: int | None
    log: str
    bootstrap: str | None = None
    heartbeat_age: float | None = None
    fetch_age: float | None = None
    problem: str | None = None
    stale_credential: bool = False
    """Started before its role's credential file was written anew: it holds the old password,
    which the broker no longer has (waiting cannot mend it; a restart does)."""
    code: str | None = None
    """The fingerprint of the code it runs, from its heartbeat (``None``: no heartbeat yet, or
    one from a version that wrote none)."""
    same_code: bool | None = None
    """Whether it runs the code installed now, which this command runs
    (:func:`~ledger.kafka.snapshots.installed_fingerprint`); ``None`` without a heartbeat. A
    processor that writes no fingerprint is of an older version: other code."""
    requests_held: int | None = None
    """An evaluator's request partitions, from its heartbeat (``None``: not an evaluator, or
    not healthy: a stopped one's last heartbeat does not say what it holds now)."""
    requests_of: int | None = None
    """How many request partitions there are, from an evaluator's heartbeat (0: unknown)."""
    client_id: str | None = None
    """The ``client.id`` an evaluator's request consumer gives the broker, from its heartbeat
    (``None``: not an evaluator, of a version that wrote none, or not healthy)."""
    recent: DecisionCounts | None = None
    """An evaluator's decisions over the last ``recent_seconds``, from its heartbeat: by
    determination, and the ``error`` ones by reason code and deciding policy version (``None``:
    not an evaluator, one of a version that counted none, or not healthy)."""
    recent_seconds: float | None = None
    """The span ``recent`` covers (60 s, less in an evaluator's first minute)."""
    governance_newer: int | None = None
    """Governance records it skipped because a newer release wrote them, from its heartbeat."""
    governance_unread: list[str] | None = None
    """Whose records those are, in words (ten at most), from its heartbeat."""
    governance_damaged: int | None = None
    """Damaged governance records it skipped (no governance event), from its heartbeat."""
    governance_damaged_at: list[str] | None = None
    """Where the first five of those are, from its heartbeat."""


def _run_dir(settings: Settings) -> Path:
    return settings.home / "run"


def _log_dir(settings: Settings) -> Path:
    return settings.home / "logs"


def _pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):  # none, or unreadable: nothing of ours runs under it
        return 0


def _proc_id(name: str, instance: int | None) -> str:
    if name not in PROCESSORS:
        raise ProcessorError(f"unknown processor {name!r}: one of {', '.join(PROCESSORS)}")
    return name if not instance else f"{name}-{instance}"


def _split(proc_id: str) -> tuple[str, int | None]:
    """``evaluator-2`` → ``("evaluator", 2)``: the inverse of :func:`_proc_id`."""
    for name in PROCESSORS:
        rest = proc_id.removeprefix(name + "-")
        if proc_id == name:
            return name, None
        if rest != proc_id and rest.isdigit():
            return name, int(rest)
    raise ProcessorError(f"unknown processor {proc_id!r}: one of {', '.join(PROCESSORS)}")


def _known(settings: Settings) -> list[str]:
    """Every processor this home has started (instances included), base names first: by its
    pid file, or its ready file should the pid file be lost."""
    run = _run_dir(settings)
    found = (
        {p.stem for p in run.glob("*.pid")} | {p.stem for p in run.glob("*.ready")}
        if run.is_dir()
        else set()
    )
    return sorted(found | set(PROCESSORS), key=lambda n: (n.split("-")[-1].isdigit(), n))


def _marker(settings: Settings, proc_id: str) -> str:
    """What only this home's ``proc_id`` carries: the ready file it was started with (in its
    environment, which survives a rewritten process title)."""
    return f"LEDGER_READY_FILE={_run_dir(settings) / f'{proc_id}.ready'}"


def kafka_address(settings: Settings) -> str | None:
    """Where the processors should be talking to Kafka now: the configured bootstrap, else the
    running local broker's address (``None`` when it is not running)."""
    return settings.bootstrap or local_bootstrap(settings)


def _running_pid(settings: Settings, name: str) -> int:
    """The pid of this home's processor ``name`` if it runs, else 0: from its pid file, or,
    when that is missing, garbled or stale, found by the ready file in its environment (and
    the pid file written again), so that a processor whose pid file was lost is neither
    invisible to ``ps`` and ``down`` nor started a second time by ``up``."""
    pid_file = _run_dir(settings) / f"{name}.pid"
    pid = _pid(pid_file)
    if alive(pid, marker=_marker(settings, name)):
        return pid
    found = find(environ=_marker(settings, name))
    if found is None:
        return 0
    with contextlib.suppress(OSError, UsageError):  # a home now refused: `down` still stops
        write_private(pid_file, str(found))
    return found


def _status(settings: Settings, name: str, expected: str | None, now: float) -> ProcessStatus:
    pid = _running_pid(settings, name)
    log = str(_log_dir(settings) / f"{name}.log")
    if not pid:
        return ProcessStatus(
            name=name, running=False, healthy=False, pid=None, log=log, problem="not running"
        )
    beat = Heartbeat.read(_run_dir(settings) / f"{name}.ready")
    if beat is None or beat.pid != pid:
        return ProcessStatus(
            name=name,
            running=True,
            healthy=False,
            pid=pid,
            log=log,
            problem="no heartbeat yet: catching up with the ledger, or stuck "
            "before it could (see its log)",
        )
    beat_age = age(now, beat.at)  # negative: in the future (the clock stepped back)
    fetch_age = None if beat.fetched_at is None else age(now, beat.fetched_at)
    stale = _credential_rewritten(settings, name, beat.credential)
    if expected is None:
        problem: str | None = "the local broker is not running (`ledger up` starts it)"
    elif beat.bootstrap != expected:
        problem = f"started with Kafka at {beat.bootstrap}, but " + (
            f"$LEDGER_BOOTSTRAP names {expected}"  # the operator's word, not a fact
            if settings.bootstrap
            else f"Kafka is at {expected} now"
        )
    elif stale is not None:
        problem = (
            f"started before its credential {stale} was written anew: it logs in with the old "
            "password, which the broker no longer accepts (`ledger up` restarts it)"
        )
    else:
        problem = beat.problem(now)
    return ProcessStatus(
        stale_credential=stale is not None,
        name=name,
        running=True,
        healthy=problem is None,
        pid=pid,
        log=log,
        bootstrap=beat.bootstrap,
        heartbeat_age=round(beat_age, 1),
        fetch_age=None if fetch_age is None else round(fetch_age, 1),
        problem=problem,
        code=beat.code,
        same_code=beat.code == installed_fingerprint(),
        # A stopped evaluator's last count is not what it holds (an operator's chaos run: a
        # SIGSTOPped one still said 3 of 6 beside the other's 6 of 6): only a healthy one says.
        requests_held=beat.requests_held if problem is None else None,
        requests_of=beat.requests_of,
        recent=beat.recent if problem is None else None,
        client_id=beat.client_id if problem is None else None,
        recent_seconds=beat.recent_seconds if problem is None else None,
        governance_newer=beat.governance_newer,
        governance_unread=beat.governance_unread,
        governance_damaged=beat.governance_damaged,
        governance_damaged_at=beat.governance_damaged_at,
    )


def unheld_requests(procs: list[ProcessStatus], *, elsewhere: int | None = None) -> str | None:
    """Why requests may wait although every processor is healthy: request partitions that no
    healthy evaluator of ``procs`` holds (the group is rebalancing). ``None`` when they hold
    them all, or when one does not say (an evaluator of a release that wrote no count, beside
    others after an upgrade in place: their shares would not add up; a review), or when with
    the ``elsewhere`` partitions that members of the group this home did not start hold
    (:func:`held_elsewhere`; ``None``: not known) every one is held.

    After a broker restart with several evaluators, ``up`` said "ledger is up" and ``ps``
    exited 0 while no request was decided for 9 to 22 s more (an agent engineer's
    walkthrough): an evaluator that lost the broker for longer than its session timeout
    rejoins as a new member, and the broker waits out its old one before assigning anything.
    Only this home's evaluators are counted."""
    evaluators = [p for p in procs if p.healthy and _split(p.name)[0] == "evaluator"]
    if any(p.requests_of is None for p in evaluators):
        return None
    told = [p for p in evaluators if p.requests_of]
    if not told:
        return None
    of = max(p.requests_of or 0 for p in told)
    held = sum(p.requests_held or 0 for p in told)
    if held >= of or (elsewhere is not None and held + elsewhere >= of):
        return None
    if elsewhere is None:  # an evaluator started by hand (the README's way to scale) may
        return (
            f"the evaluators this home started hold {held} of {of} request partitions: "
            "requests to the others wait until the evaluators' group is rebalanced (about 10 s "
            "after an evaluator died or the broker restarted; their logs say `assigned request partitions`), unless an "
            "evaluator this home did not start (`python -m processors.evaluator`) holds them, "
            "which `ps` could not ask the broker"
        )
    also = f" (and {elsewhere} by evaluators this home did not start)" if elsewhere else ""
    return (
        f"the evaluators hold {held}{also} of {of} request partitions: requests to the others "
        "wait until the evaluators' group is rebalanced (about 10 s after an evaluator died or the "
        "broker restarted; their logs say `assigned request partitions`)"
    )


def held_elsewhere(settings: Settings, bootstrap: str, procs: list[ProcessStatus]) -> int | None:
    """How many request partitions members of the evaluators' group hold that are none of the
    healthy evaluators of ``procs`` (by the client id in their heartbeats), as the broker says:
    evaluators this home did not start (``python -m processors.evaluator``, the README's way to
    scale). ``None`` when it cannot tell: an evaluator holding some says no client id (of an
    older release), or the broker was not asked (not reachable, no admin credential).

    An operator's walkthrough: an evaluator started by hand held 2 of 6 request partitions,
    every request was answered, and `ps` exited 1 saying requests to them wait. Another: the
    partitions a killed evaluator of this host still held until the broker dropped its
    session (about 10 s) were counted as an evaluator started by hand's, and `up` said "ledger
    is up" while requests to them waited; a member whose client id names an evaluator process
    of this host that is gone, or that ``procs`` says is unhealthy, holds nothing here."""
    ours = [p for p in procs if p.healthy and _split(p.name)[0] == "evaluator"]
    if any(p.client_id is None and p.requests_held for p in ours):
        return None
    clients = {p.client_id for p in ours}
    stuck = {p.pid for p in procs if not p.healthy and p.pid is not None}
    group = settings.topics.group(PROCESSOR_GROUPS["evaluator"])
    try:
        admin = resolve_security(settings, "admin", bootstrap=bootstrap)
        held = partitions_by_client(
            bootstrap, group, settings.topics.evaluation_requests, security=admin
        )
    except LedgerError:
        return None
    return sum(
        n for client, n in held.items() if client not in clients and not _gone(client, stuck)
    )


def _gone(client: str | None, stuck: set[int]) -> bool:
    """Is ``client`` the client id of an evaluator of this host (``evaluator-HOST-PID``) whose
    process is gone, or one of ``stuck`` (this home's, unhealthy): a member the broker keeps
    until its session times out, holding partitions nobody answers."""
    prefix = f"evaluator-{socket.gethostname()}-"
    if client is None or not client.startswith(prefix) or not client[len(prefix) :].isdigit():
        return False
    pid = int(client[len(prefix) :])
    if pid in stuck:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # someone else's process: alive
        return False
    return False


_STARTING: Final = b"ledger.processor: starting: pid "
_STOPPED: Final = b"ledger.processor: stopped: pid "
_LOG_SCAN: Final = 64 * 1024 * 1024
"""Bytes of a processor's log read back at most for its last run's start (months of an idle
evaluator's stats lines)."""
_LOG_TAIL: Final = 256 * 1024
"""Bytes of a processor's log read for how its last run ended (its last lines, whatever its size)."""


def _logged(line: bytes) -> tuple[bytes, bytes] | None:
    """A processor's log line as its level and ``logger: message``, when it is a record's first
    line, ``[time] worker LEVEL logger: message`` (:class:`processors.run.LineFormatter`
    keeps any text a client chose, and a traceback, from starting one): the rest is ``None``,
    so that a ``starting:`` or CRITICAL quoted inside a message is not read as one (a review:
    the markers were matched anywhere in a line)."""
    if not line.startswith(b"["):
        return None
    _, bracket, rest = line.partition(b"] ")
    parts = rest.split(b" ", 2)
    return (parts[1], parts[2]) if bracket and len(parts) == 3 else None


def _last_run(log: str | Path) -> list[bytes]:
    """The lines at the end of ``log`` that hold its last run's ``starting:`` line: its last
    :data:`_LOG_TAIL` bytes, and more, a chunk at a time, while they hold none, up to
    :data:`_LOG_SCAN` (a red team: an idle evaluator logs its stats every 30 s, and after
    about 9 hours its start had left the tail: a kill went unsaid)."""
    with open(log, "rb") as file:
        end = file.seek(0, os.SEEK_END)
        begin, chunk, tail = end, _LOG_TAIL, b""
        while begin > 0 and end - begin < _LOG_SCAN:
            step = min(chunk, begin, _LOG_SCAN - (end - begin))
            begin -= step
            file.seek(begin)
            tail = file.read(step) + tail
            lines = tail.split(b"\n")
            if begin > 0:  # a line cut in two by the chunk: its end may be a client's text
                lines = lines[1:]
            if any(
                (record := _logged(line)) is not None and record[1].startswith(_STARTING)
                for line in lines
            ):
                return lines
            chunk *= 4
        lines = tail.split(b"\n")
        return lines[1:] if begin > 0 else lines


def _is_critical(line: bytes) -> bool:
    said = _logged(line)
    return said is not None and said[0] == b"CRITICAL"


def ended_unannounced(log: str | Path) -> str | None:
    """When a processor's log shows its last run starting and never saying ``stopped:``, what
    ``ps`` adds to "not running": it was killed (a chaos drill: after a SIGKILL, or the OOM
    killer's, `ps` said only "not running" and the log holds no error to look for). ``None``
    when it stopped cleanly, or the log cannot tell."""
    try:
        lines = _last_run(log)
    except OSError:
        return None
    started = stopped = -1
    for at, line in enumerate(lines):
        record = _logged(line)
        if record is not None and record[1].startswith(_STARTING):
            started = at
        elif record is not None and record[1].startswith(_STOPPED):
            stopped = at
    # A start that failed before its run began (its CRITICAL record after the last run's
    # `stopped:`, and no `starting:`): an operator's walkthrough saw only "not running". A
    # record, not any line: a client's text in a traceback cannot pass for one (a review).
    if stopped >= started:  # no run began after the last one ended (or none ever)
        failed = [at for at, line in enumerate(lines) if at > stopped and _is_critical(line)]
        if failed:
            return f"its last start failed: {_said(lines[failed[-1]])}"
    if started < 0:
        return None
    given = lines[started].partition(_STARTING)[2].split(b",", 1)[0][:12]
    pid = given.decode() if given.isdigit() else "?"
    # A processor that stops itself on a fatal error (`die`, which skips the `stopped:` line)
    # or crashes (faulthandler's dump) says why in its log: that, not `dmesg` (the review).
    # So does one Faust stopped on a crash, though it then writes `stopped:` as it exits (a
    # red team: `ps` said only "not running", as of a clean stop).
    run = lines[started : stopped if stopped > started else len(lines)]
    fatal = [
        raw.rstrip(b"\r")
        for raw in run
        if raw.startswith(b"Fatal Python error") or _is_critical(raw)
    ]
    if stopped > started and not fatal:
        return None
    if fatal:
        return f"its last run (pid {pid}) ended on an error its log holds: {_said(fatal[-1])}"
    return (
        f"its last run (pid {pid}) ended without `stopped:` in its log: it was killed (SIGKILL, "
        "or the kernel's out-of-memory killer: `dmesg` says)"
    )


def _said(line: bytes) -> str:
    """A log line as ``ps`` quotes it: printable (for a terminal), at most 240 characters."""
    last = line.rstrip(b"\r").decode("utf-8", "replace").strip()
    said = "".join(c if c.isprintable() else "?" for c in last[:1000])
    return said if len(said) <= 240 else said[:240] + "…"


def requests_waiting(
    settings: Settings, bootstrap: str, procs: list[ProcessStatus]
) -> tuple[int | None, str | None]:
    """How many agents' requests the evaluators have not answered and committed yet
    (:func:`~ledger.kafka.groups.records_waiting`; a batch in hand counts until committed),
    and why not when that is ``None``: the broker could not be asked (the reason: an operator's
    walkthrough with a wrong password saw ``requests_waiting: null`` and no word of why). With
    no evaluator running to say how many request partitions there are, the broker is asked
    that too (a chaos drill: the backlog went unreported exactly while nothing answered)."""
    of = max((p.requests_of or 0 for p in procs if _split(p.name)[0] == "evaluator"), default=0)
    group = settings.topics.group(PROCESSOR_GROUPS["evaluator"])
    try:
        admin = resolve_security(settings, "admin", bootstrap=bootstrap)
        return (
            records_waiting(
                bootstrap, group, settings.topics.evaluation_requests, of or None, security=admin
            ),
            None,
        )
    except KafkaAccessDenied as exc:  # this command's own credential, not the processors'
        return None, f"could not ask Kafka how many requests wait: {exc} [{exc.code}]"
    except LedgerError:  # Kafka away: the processors' health says so
        return None, None


def request_holders(
    settings: Settings, procs: list[ProcessStatus], *, bootstrap: str | None
) -> tuple[str | None, str | None]:
    """What ``ps`` and ``up`` say of who holds the request partitions: the problem
    (:func:`unheld_requests`, ``None``: all are held) and a note naming those held by
    evaluators this home did not start (``None``: none, or not known). The broker is asked
    (:func:`held_elsewhere`) only when this home's evaluators hold fewer than all."""
    problem = unheld_requests(procs)
    if problem is None or bootstrap is None:
        return problem, None
    elsewhere = held_elsewhere(settings, bootstrap, procs)
    note = (
        f"{elsewhere} request partition{'s are' if elsewhere != 1 else ' is'} held by an "
        "evaluator this home did not start (`python -m processors.evaluator`?): `ps` does not "
        "judge its health; its own log and LEDGER_READY_FILE do"
        if elsewhere
        else None
    )
    return unheld_requests(procs, elsewhere=elsewhere), note


def commands_held_elsewhere(
    settings: Settings, procs: list[ProcessStatus], *, bootstrap: str | None
) -> str | None:
    """A problem when this home's command processor is healthy but the broker has given the
    commands partition to another member of its group: a command processor this home did not
    start applies the commands, and this one waits. An operator's upgrade drill: an earlier
    release's, started by hand beside the upgraded one, took the partition and kept it; the new
    one sat idle and healthy, `ps` green, while the earlier release's rules decided (a document
    the new rules refuse was accepted). ``None``: ours holds it, nobody does (a rebalance), or
    the broker was not asked (not reachable, no admin credential)."""
    if bootstrap is None or not any(p.healthy and p.name == "command-processor" for p in procs):
        return None
    group = settings.topics.group(PROCESSOR_GROUPS["command-processor"])
    ours = static_instance_id(settings, group)
    try:
        admin = resolve_security(settings, "admin", bootstrap=bootstrap)
        members = members_holding(bootstrap, group, settings.topics.commands, security=admin)
    except LedgerError:
        return None
    others = [(client, instance) for client, instance, held in members if held and instance != ours]
    if not others:
        return None
    client, instance = others[0]
    who = f"instance {instance}" if instance else f"client id {client or '?'}, not a static member"
    return (
        f"the commands partition is held by a command processor this home did not start "
        f"({who[:120]}): it applies the commands, by its own release's rules, and this "
        "home's waits; stop that one (never run command processors of two releases side by "
        "side), and this one takes the partition at once"
    )


def behind_a_newer_release(procs: list[ProcessStatus]) -> list[str]:
    """A problem for each running processor that skipped governance records a newer release
    wrote (an operator's upgrade drill: an older evaluator beside newer ones decided under
    refund v1 while they decided under v3, `ps` green). Of this release on, such a processor
    answers ``error`` / ``governance_unreadable`` where those records could change the answer,
    and refuses every command (``LedgerState.unreadable``); one of an earlier release decides
    on."""
    return [
        f"{p.name} cannot read {p.governance_newer} governance record(s) a newer release wrote "
        f"(a schema it does not know), of {', '.join(p.governance_unread or ['what its log names'])}: "
        + (
            "it refuses every command"
            if p.name == "command-processor"
            else "it answers error to the requests those records could change"
        )
        + " (governance_unreadable). Run the newer release's processors (`ledger down "
        "--keep-broker && ledger up` with it); a record no release wrote (forged with the "
        "command processor's credential, or a bug's) reads so too: `ledger actor verify` "
        "names it DAMAGED (README: Rolling back)"
        for p in procs
        if p.running and p.governance_newer
    ]


def damaged_governance(procs: list[ProcessStatus]) -> list[str]:
    """A problem for each running processor that skipped governance records that are no
    governance event (a red team: a genuine grant revocation cut short was dropped, and the
    processors decided without it, `ps` green)."""
    return [
        f"{p.name} skipped {p.governance_damaged} damaged governance record(s) (no governance "
        f"event: cut short, empty or not Avro), at {', '.join(p.governance_damaged_at or [])}"
        f"{', …' if p.governance_damaged > len(p.governance_damaged_at or []) else ''}: it "
        "decides and governs without what they held. `ledger actor verify` says what each is "
        "(DAMAGED); if one was a genuine event, the governance log has lost it: restore the "
        "ledger from a backup (README: Backing up and restoring); once judged, list them in LEDGER_GOVERNANCE_SKIP "
        "for every processor (README: Rolling back)"
        for p in procs
        if p.running and p.governance_damaged
    ]


def erroring(procs: list[ProcessStatus]) -> str | None:
    """Why requests are answered but not decided: the healthy evaluators' ``error`` decisions
    are at least :data:`~processors.heartbeat.ERRORS_DOMINATE` of their decisions over the
    last minute (:func:`~processors.heartbeat.errors_dominate`). ``None`` otherwise, and when
    none counts.

    A promoted policy that fails on every request (a condition that divides by zero validates)
    left every processor healthy, ``ps`` exit 0, and nothing in the logs but request counts (an
    operator's walkthrough): the evaluator answers every request, with ``error``."""
    counted = [p for p in procs if p.healthy and p.recent is not None]
    if not counted:
        return None
    total = DecisionCounts.sum(p.recent for p in counted if p.recent is not None)
    note = errors_dominate(total)
    if note is None:
        return None
    span = max(p.recent_seconds or 0.0 for p in counted)
    return (
        f"{note} in the last {span:.0f} s: requests are answered, but not decided; a policy "
        "that fails on its requests is rolled back with `ledger policy rollback NAME --reason "
        "WHY --by ACTOR` (an actor holding ledger.policy.rollback on it, or an administrator; "
        "the evaluators' logs say more)" + unreadable_advice(total)
    )


def low_disk(
    settings: Settings, *, usage: Callable[[Path], tuple[int, int, int]] | None = None
) -> str | None:
    """What ``ps`` and ``up`` say first when the filesystem holding ``$LEDGER_HOME``, or the
    local broker's data under it, is nearly full: under :data:`LOW_DISK_BYTES`, or under
    :data:`LOW_DISK_SHARE` and :data:`LOW_DISK_SHARE_BYTES`, free (to its owner: what ``df``
    calls available). ``None`` otherwise,
    and for a home not made yet (its nearest folder that is made is judged then).

    On a full disk the broker stops, and ``ps`` said only that it is not running and that
    ``ledger up`` starts it, which failed the same way (an operator's walkthrough)."""
    usage = usage or shutil.disk_usage
    seen: set[int] = set()
    said: list[str] = []
    for place in (settings.home, broker.data_dir(settings)):
        while not place.exists() and place != place.parent:
            place = place.parent
        try:
            device = place.stat().st_dev
            if device in seen:
                continue
            seen.add(device)
            total, _, free = usage(place)
        except OSError:
            continue
        if free < LOW_DISK_BYTES or (free < LOW_DISK_SHARE * total and free < LOW_DISK_SHARE_BYTES):
            said.append(
                f"the filesystem of {place} is nearly full: {free / 2**20:.0f} MB free "
                f"({100 * free / max(total, 1):.1f} %)"
            )
    if not said:
        return None
    return (
        "; ".join(said) + ": Kafka and the processors stop when they cannot write (the broker "
        "first); free space there before anything else, then run `ledger up`"
    )


def processes(settings: Settings, *, bootstrap: str | None = None) -> list[ProcessStatus]:
    """Every processor this home knows, running or not, with its health judged against
    ``bootstrap`` (default: :func:`kafka_address`)."""
    expected = bootstrap or kafka_address(settings)
    now = time.time()
    return [_status(settings, name, expected, now) for name in _known(settings)]


def start_processor(
    settings: Settings,
    name: str,
    *,
    bootstrap: str,
    timeout: float = START_WAIT,
    instance: int | None = None,
    progress: Progress = lambda _: None,
    security: KafkaSecurity | None = None,
) -> int:
    """Start one processor in the background and wait until it is ready. Returns its pid.

    ``instance`` (2, 3, …) starts a further worker of the same processor: it joins the same
    consumer group and shares the partitions (evaluators scale this way). ``security`` is the
    processor's Kafka credential (default: its role's, found as every entry point finds it); it
    reaches the worker in its environment, never on its command line.
    """
    module = PROCESSORS.get(name)
    name = _proc_id(name, instance)
    run, logs = _run_dir(settings), _log_dir(settings)
    private_dir(run)
    private_dir(logs)
    pid_file, ready = run / f"{name}.pid", run / f"{name}.ready"
    existing = _running_pid(settings, name)
    if existing:
        progress(f"{name} already running (pid {existing})")
        return existing
    progress(f"starting {name}…")
    ready.unlink(missing_ok=True)
    if security is None:
        security = resolve_security(settings, _role(name), bootstrap=bootstrap)
    # Only the credential chosen here: none inherited from whoever runs `ledger up`.
    env = worker_environment(os.environ)
    child = replace(settings, bootstrap=bootstrap, ready_file=ready, security=security)
    env.update(child.to_env())
    env["PYTHONUNBUFFERED"] = "1"
    log = logs / f"{name}.log"
    before = log.stat().st_size if log.exists() else 0  # earlier runs' lines are not this one's
    pid = spawn_detached(processor_argv(str(module)), env=env, log=log)
    write_private(pid_file, str(pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            return pid
        exited, code = exit_status(pid)
        if exited:
            raise ProcessorError(
                f"{name} exited during start-up ({_how(code)}): {_why(log, before)} (log: {log})"
            )
        time.sleep(0.1)
    raise ProcessorError(
        f"{name} did not become ready within {timeout:.0f} s: it may still be catching up with a "
        f"long governance history (about 8 s per million events; see {log}); it goes on, and "
        "`ledger up --wait SECONDS` waits longer for it"
    )


def _how(code: int | None) -> str:
    """How a process ended, from its exit code (negative: the signal that ended it)."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"stopped by {name}" + (" (`ledger down`, or someone else)" if -code == 15 else "")
    return f"exit code {code}"


def _why(log: Path, start: int) -> str:
    """The line of ``log`` after byte ``start`` that best says why its process stopped: the
    last error or critical line (a traceback's last line), else the last line."""
    try:
        with log.open("rb") as file:
            file.seek(start)
            lines = file.read(1 << 20).decode(errors="replace").strip().splitlines()
    except OSError:
        return "its log cannot be read"
    if not lines:
        return "it wrote nothing to its log"
    errors = [
        line
        for line in lines
        if any(word in line for word in ("ERROR", "CRITICAL", "Error:", "Exception:"))
    ]
    return (errors or lines)[-1].strip()


def _credential_rewritten(
    settings: Settings, proc_id: str, started_with: str | None
) -> Path | None:
    """The local credential file of ``proc_id``'s role, when it holds another password than
    the one the process started with (``started_with``, the fingerprint in its heartbeat):
    deleted to change the password, or lost, and written anew by ``ledger up``, which gave the
    broker the new password. ``None`` otherwise, and for a processor whose credential comes
    from the environment (a cluster of your own). A processor of an older version, with no
    fingerprint, is judged by the file's time against its pid file's."""
    if settings.bootstrap or settings.security is not None:
        return None
    role = _role(proc_id)
    path = credentials_file(settings, role)
    if started_with is not None:
        try:
            now = credential_fingerprint(read_credentials(settings, role))
        except LedgerError:  # unreadable: `ledger up` says so where it reads it
            return None
        return path if now is not None and now != started_with else None
    try:
        written = path.stat().st_mtime
        started = (_run_dir(settings) / f"{proc_id}.pid").stat().st_mtime
    except OSError:
        return None
    return path if written > started else None


def _role(proc_id: str) -> Role:
    """A processor's Kafka role: its base name (``evaluator-2`` is an ``evaluator``)."""
    name, _ = _split(proc_id)
    return "command-processor" if name == "command-processor" else "evaluator"


def stop_processor(
    settings: Settings,
    name: str,
    *,
    grace: float = STOP_GRACE,
    kill: bool = False,
    instance: int | None = None,
) -> bool:
    """Stop one processor (SIGTERM, or SIGKILL at once with ``kill``). False if not running.
    One killed (at once, or after ``grace``) gets a ``stopped:`` line in its log saying so: a
    chaos drill found `ps` sending the operator to `dmesg` for an out-of-memory kill after
    `down` had killed processors that could not reach a dead broker in their 3 s."""
    name = _proc_id(name, instance) if name in PROCESSORS else name
    pid = _running_pid(settings, name)
    forced: list[str] = ["at once"] if kill else []
    stopped = terminate(
        pid,
        grace=grace,
        kill=kill,
        marker=_marker(settings, name),
        killed=lambda: forced.append(f"after its {grace:g} s to stop cleanly"),
    )
    if stopped and forced:
        _log_killed(_log_dir(settings) / f"{name}.log", name, pid, forced[0])
    for leftover in (f"{name}.pid", f"{name}.ready", f"{name}.ready.partial"):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (_run_dir(settings) / leftover).unlink()
    return stopped


def _log_killed(log: Path, name: str, pid: int, when: str) -> None:
    """Close a killed processor's last run in its log, as its own ``stopped:`` line would
    (:func:`ended_unannounced` then reads it as stopped), saying who killed it and when."""
    if ended_unannounced(log) is None:
        return  # it said `stopped:` itself before the SIGKILL landed, or has no log
    at = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    line = (
        f"[{at}] {name} WARNING {_STOPPED.decode()}{pid} by `ledger` (down, or up restarting "
        f"it): killed (SIGKILL) {when}; the lines above say where it was\n"
    )
    with contextlib.suppress(OSError), open(log, "a", encoding="utf-8") as file:
        file.write(line)


def no_admin(settings: Settings) -> str | None:
    """Why `ledger up` cannot run here, when it is for want of the admin credential: another
    Kafka named and $LEDGER_CREDENTIALS without admin.json, a developer's machine that talks to
    its team's ledger with the agent credential alone (a damaged admin.json is named by
    :func:`~ledger.discovery.read_credentials` itself). ``None`` otherwise."""
    if settings.bootstrap is None or settings.security is not None:
        return None
    if settings.credentials_dir is None or credentials_file(settings, "admin").exists():
        return None
    return (
        f"no admin credential in $LEDGER_CREDENTIALS ({settings.credentials_dir}): `ledger up` "
        f"cannot run from this machine; the ledger at {settings.bootstrap} is run by its "
        "operator, whose `ledger ps` says its health (an agent needs no `ledger up`: the SDK "
        "and `ledger evaluate` talk to that ledger)"
    )


def up(
    settings: Settings,
    *,
    evaluators: int | None = None,
    progress: Progress = lambda _: None,
    insecure: bool = False,
    wait: float = START_WAIT,
) -> str:
    """Broker (unless an external one is configured), topics, ACLs, processors. Returns the
    bootstrap.

    ``evaluators`` workers of the evaluator share the request partitions (``None``: one, or as
    many as an earlier call left, without a word of them). Processors already
    running are kept if healthy, given :data:`RECOVERY_WAIT` seconds to recover if not, then
    restarted; one started with another Kafka address is restarted at once. A processor is given
    ``wait`` seconds to become ready: one it starts, and one already running that has not
    written its first heartbeat (still catching up). Raises
    :class:`LedgerError` unless every processor is healthy at the end, and
    :class:`ProcessorError` (``other_code``) when a healthy one it left alone runs other code
    than this process (an upgrade installed since it started: see :func:`other_code`). Two ``up`` at once on one
    home take turns (a lock file), so neither starts a second copy of a processor.

    The local broker runs with authentication and ACLs (each processor with its role's
    credential) unless ``insecure``. Everything written under ``$LEDGER_HOME`` is private to
    its owner (0700 directories, 0600 files).
    """
    # Before a word of creating anything: a developer's machine holding only the agent
    # credential was told "creating topics on …" of its team's ledger, then refused (a red team).
    cannot = no_admin(settings)
    if cannot is not None:
        raise UsageError(cannot)
    low = low_disk(settings)
    if low is not None:  # first: a broker that cannot write fails with its own words later
        progress(f"warning: {low}")
    private_umask()
    broker.private_home(settings)  # before anything is written or started with this home
    run = private_dir(_run_dir(settings))
    lock = open_private(run / "up.lock", os.O_WRONLY | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _up(settings, evaluators=evaluators, progress=progress, insecure=insecure, wait=wait)
    finally:
        os.close(lock)


def _up(
    settings: Settings, *, evaluators: int | None, progress: Progress, insecure: bool, wait: float
) -> str:
    bootstrap = settings.bootstrap
    if bootstrap:
        check_reachable(bootstrap)
    else:
        status = broker.start(settings, progress=progress, insecure=insecure)
        assert status.bootstrap is not None
        bootstrap = status.bootstrap
    admin = resolve_security(settings, "admin", bootstrap=bootstrap)
    progress(f"creating topics on {bootstrap}…")
    for report in create_topics(bootstrap, topic_specs(settings), security=admin):
        note = report.kept_note()
        if note is not None:
            progress(note)
    if admin.enabled:
        progress("setting the ledger's ACLs…")
        ensure_acls(bootstrap, settings.topics, security=admin)
    ensure_admin_keys(settings, progress=progress)
    asked = evaluators  # None: no number asked for
    wanted = [_proc_id(name, None) for name in PROCESSORS]
    wanted += [_proc_id("evaluator", instance) for instance in range(2, (asked or 1) + 1)]
    # Further workers an earlier `up --evaluators N` started are looked after too, running or
    # dead: each keeps its pid file until `ledger down` stops it.
    more = [p.name for p in processes(settings, bootstrap=bootstrap) if p.name not in wanted]
    if more and asked is not None:
        # An operator's walkthrough: `up --evaluators 1` beside 3 said nothing of them; a plain
        # `up` asks for no number, so it hears nothing of them (a later one said this each time).
        progress(
            f"{', '.join(more)} (of an earlier `up --evaluators N`) "
            f"{'stays' if len(more) == 1 else 'stay'} part of the stack: --evaluators starts "
            "workers, it does not stop them; `ledger down --keep-broker && ledger up "
            f"--evaluators {asked}` runs exactly {asked}"
        )
    wanted += more
    if _run_dir(settings).is_dir():
        # Checked first: processors that cannot write their heartbeats there look unhealthy,
        # and waiting for them to recover would only delay the same refusal by 20 s.
        _writable(_run_dir(settings))
    started = [
        proc_id
        for proc_id in wanted
        if _ensure(settings, proc_id, bootstrap=bootstrap, progress=progress, wait=wait)
    ]
    if started:
        # One that dies on its first request (an unwritable Faust folder) was ready a moment
        # before: watch the (re)started ones a little longer before saying all is well.
        time.sleep(SETTLE)
    procs = [p for p in processes(settings, bootstrap=bootstrap) if p.name in wanted]
    sick = [p for p in procs if not p.healthy]
    if sick:
        raise _not_healthy(sick)
    procs = _await_requests_held(settings, bootstrap, wanted, wait=wait, progress=progress)
    # An operator who runs `up` after an upgrade expects the new code to answer: "ledger is up"
    # would let them go on (upgrade the SDK clients, whose records an older evaluator
    # dead-letters) while the old code answers. Left running: a restart replays the governance
    # history first, a pause of answers the operator chooses and times (`up --wait`).
    other = [p.name for p in procs if p.same_code is False]
    if other:
        raise ProcessorError(other_code(other, [p.name for p in procs]), code="other_code")
    return bootstrap


def _await_requests_held(
    settings: Settings, bootstrap: str, wanted: list[str], *, wait: float, progress: Progress
) -> list[ProcessStatus]:
    """The ``wanted`` processors once the evaluators hold every request partition (at most
    ``wait`` seconds): "ledger is up" means requests are answered. One that turns unhealthy
    meanwhile is treated as ``up`` treats it (:func:`_ensure`), and the wait starts again: an
    evaluator out of its consumer group was left running, healthy a moment before, while `up`
    waited its full minute for partitions that evaluator would never take (an operator's
    walkthrough, after two broker restarts in a row). Once each: one unhealthy again after
    that is reported."""
    deadline = time.monotonic() + wait
    said = False
    treated: set[str] = set()
    while True:
        procs = [p for p in processes(settings, bootstrap=bootstrap) if p.name in wanted]
        sick = [p for p in procs if not p.healthy]
        if any(p.name in treated for p in sick):
            raise _not_healthy(sick)
        if sick:
            for p in sick:
                _ensure(settings, p.name, bootstrap=bootstrap, progress=progress, wait=wait)
                treated.add(p.name)
            deadline = time.monotonic() + wait
            continue
        problem, _ = request_holders(settings, procs, bootstrap=bootstrap)
        if problem is None:
            return procs
        if time.monotonic() >= deadline:
            raise ProcessorError(
                f"{problem}, still after {wait:g} s: see the evaluators' logs", code="unhealthy"
            )
        if not said:
            progress(f"waiting: {problem}…")
            said = True
        time.sleep(0.5)


def _not_healthy(sick: list[ProcessStatus]) -> ProcessorError:
    """What ``up`` says of processors unhealthy after it (re)started them: for one no longer
    running, what its log says ended it, as ``ps`` says (an operator's walkthrough: an
    evaluator that died on its first request was only "not running")."""

    def why(p: ProcessStatus) -> str:
        ended = None if p.running else ended_unannounced(p.log)
        return f"{p.name}: {p.problem}{f': {ended}' if ended else ''} (log: {p.log})"

    return ProcessorError("not healthy: " + "; ".join(why(p) for p in sick), code="unhealthy")


def other_code(names: list[str], running: list[str] | None = None) -> str:
    """The one line ``ps`` and ``up`` say of processors ``names`` that run other code than this
    command (an upgrade installed since they started), with the way out; given the names of
    all the processors ``running``, the way out keeps as many evaluators (an operator's
    walkthrough: the advice restarted two as one, silently)."""
    many = len(names) > 1
    evaluators = sum(_split(n)[0] == "evaluator" for n in running or names)
    scale = f" --evaluators {evaluators}" if evaluators > 1 else ""
    return (
        f"{', '.join(names)} {'run' if many else 'runs'} other code than this `ledger` (an "
        f"upgrade since {'they' if many else 'it'} started?): `ledger down --keep-broker && "
        f"ledger up{scale}` restarts {'them' if many else 'it'} on this code (no decisions "
        "until the evaluators are up again)"
    )


def ensure_admin_keys(settings: Settings, *, progress: Progress = lambda _: None) -> None:
    """Create the bootstrap administrators' signing keys in the key store, if missing: the
    command processor's trust anchors (it records them in the ledger when it starts)."""
    store = KeyStore(settings.keys)
    for admin in sorted(settings.admins):
        if store.public_key(admin) is None:
            store.create(admin)
            progress(f"created the signing key of {admin} in {store.private_path(admin)}")
    for actor in store.retired_actors():
        try:
            store.retired_keys(actor)
        except LedgerError as exc:
            # A README check: a folder made under umask 002 left a rotated administrator's
            # key out, and every key it registered stopped signing, said only in a log.
            progress(
                f"warning: the command processor leaves out the retired keys of "
                f"{printable_text(actor)}, so "
                f"keys they registered cannot sign commands: {printable_text(str(exc))}; then "
                "`ledger down --keep-broker && ledger up`"
            )


def _ensure(
    settings: Settings,
    proc_id: str,
    *,
    bootstrap: str,
    progress: Progress,
    wait: float = START_WAIT,
) -> bool:
    """Leave a healthy processor alone; start a stopped one; restart an unhealthy one. True
    when it was (re)started."""
    name, instance = _split(proc_id)
    current = _status(settings, proc_id, bootstrap, time.time())
    if current.running and current.healthy:
        other = "" if current.same_code else ", on other code than this `ledger` (an upgrade?)"
        progress(f"{proc_id} already running (pid {current.pid}), healthy{other}")
        return False
    halted = current.running and current.pid is not None and stopped_by_signal(current.pid)
    if (
        current.running
        and current.bootstrap in (None, bootstrap)
        and not current.stale_credential
        and not halted  # a chaos drill: 20 s given to what cannot recover by itself
    ):
        # The broker may just have come back (same address), or it is still catching up: one
        # without a first heartbeat gets as long as a processor being started.
        patience = wait if current.heartbeat_age is None else RECOVERY_WAIT
        progress(
            f"{proc_id} (pid {current.pid}) is not healthy: {current.problem}; "
            f"giving it {patience:.0f} s to recover…"
        )
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline and current.running and not current.healthy:
            time.sleep(0.5)
            current = _status(settings, proc_id, bootstrap, time.time())
        if current.healthy:
            progress(f"{proc_id} recovered (pid {current.pid})")
            return False
    if current.running:
        # Never stop a processor that may be working when its replacement could not start: a
        # run folder that cannot be written (a full disk) also stops heartbeats.
        _writable(_run_dir(settings))
        progress(f"restarting {proc_id} (pid {current.pid}): {current.problem}")
        stop_processor(settings, proc_id, grace=UNREACHABLE_GRACE)
    start_processor(
        settings, name, bootstrap=bootstrap, instance=instance, progress=progress, timeout=wait
    )
    return True


def _writable(folder: Path) -> None:
    """:class:`ProcessorError` unless a file can be created in ``folder`` (tried, not assumed:
    a full disk or an immutable folder refuses even root)."""
    probe = folder / f".probe-{os.getpid()}"
    try:
        probe.unlink(missing_ok=True)  # a link left there is removed, never written through
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ProcessorError(
            f"cannot write in {folder} ({exc.strerror or exc}): a processor's pid and heartbeat "
            "files go there, so nothing was restarted; free disk space (or fix the folder), "
            "then run `ledger up` again"
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stopped:
    """What ``ledger down`` did: what it stopped (the broker last), which processors had ended
    by themselves (before ``down`` ran or before their turn), and how many evaluator workers
    ran, counting those, since a plain ``up`` afterwards starts one (a review: ``--json``
    carried only ``stopped``; the rest went to stderr)."""

    stopped: list[str]
    ended: list[str]
    evaluators: int


def down(
    settings: Settings, *, keep_broker: bool = False, progress: Progress = lambda _: None
) -> Stopped:
    """Stop the processors, then the local broker, and say what was stopped.

    A processor that is not healthy (typically: it cannot reach its broker, so it could not
    commit anyway) gets :data:`UNREACHABLE_GRACE` seconds after SIGTERM instead of
    :data:`STOP_GRACE`, and all such are stopped at once. A ``ledger up`` at work on this home
    is waited for (its lock), so that ``down`` does not stop what ``up`` is starting, and
    ``up`` does not report that as a failure.
    """
    checked_home(settings)
    run = _run_dir(settings)
    if not run.is_dir():
        return _down(settings, keep_broker=keep_broker, progress=progress)
    lock = open_private(run / "up.lock", os.O_WRONLY | os.O_CREAT)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            progress(
                "waiting for a `ledger up` at work on this home to finish (Ctrl-C stops waiting)…"
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _down(settings, keep_broker=keep_broker, progress=progress)
    finally:
        os.close(lock)


def checked_home(settings: Settings) -> None:
    """Refuse a home that exists but another user owns (a review: root's `down` on another
    user's home said "nothing was running", deleted its pid files and left a lock file its
    owner could not open; `ps` said "not running"): what runs there is not this user's to
    judge or stop. Only ownership: a home an upgrade's stricter checks refuse must still be
    stoppable by its owner (`up` refuses the rest)."""
    try:
        owner = os.stat(settings.home).st_uid
    except (FileNotFoundError, NotADirectoryError):
        return  # no home: nothing runs there
    except OSError as exc:  # not this user's to read (a review: taken for "no home")
        raise UsageError(
            f"{settings.home} cannot be read by this user ({exc.strerror}): `ledger ps`, `down` "
            "and `broker status|stop` judge and stop only your own stack; run them as its owner",
            code="unsafe_folder",
        ) from None
    if owner != os.getuid():
        raise UsageError(
            f"{settings.home} is owned by another user (uid {owner}): `ledger ps`, `down` and "
            "`broker status|stop` judge and stop only your own stack; run them as that user",
            code="unsafe_folder",
        )


def _down(settings: Settings, *, keep_broker: bool, progress: Progress) -> Stopped:
    procs = processes(settings)
    run = _run_dir(settings)
    # Started, and ended before `down` came (a README check and a chaos drill: an evaluator
    # killed before `down` went unsaid, its files were removed, and a plain `up` ran fewer).
    ended = {
        p.name
        for p in procs
        if not p.running and any((run / f"{p.name}{s}").exists() for s in (".pid", ".ready"))
    }
    stuck: dict[str, str] = {}  # name -> why it could not be stopped

    def stop(name: str, grace: float) -> bool:
        # One that will not stop does not keep the others running (a review: the first
        # process stuck after SIGKILL ended `down` there, the broker and the rest left up).
        try:
            return stop_processor(settings, name, grace=grace)
        except LedgerError as exc:
            stuck[name] = str(exc)
            return False

    with ThreadPoolExecutor() as pool:
        sick = [p.name for p in procs if p.running and not p.healthy]
        done = pool.map(lambda n: stop(n, UNREACHABLE_GRACE), sick)
        stopped = [name for name, was in zip(sick, list(done), strict=True) if was]
    # Healthy ones one by one, evaluator workers first and the command processor last: nothing
    # half-answered is left behind.
    for p in sorted(procs, key=lambda p: p.name.startswith("command-processor")):
        if p.name not in sick and stop(p.name, STOP_GRACE):
            stopped.append(p.name)
    by_itself: list[str] = []
    for p in procs:  # gone when its turn came (a chaos drill: unnamed), or before it
        if (p.running or p.name in ended) and p.name not in stopped and p.name not in stuck:
            by_itself.append(p.name)
            how = ended_unannounced(p.log) or f"its log {p.log} may say why"
            when = "before it was stopped" if p.running else "before `ledger down` ran"
            progress(f"note: {p.name} had ended by itself {when}: {how}")
    evaluators = sum(
        1
        for p in procs
        if p.name.partition("-")[0] == "evaluator" and (p.running or p.name in ended)
    )
    if evaluators > 1:  # a chaos drill: a plain `up` after `down` quietly brought back one
        progress(
            f"note: {evaluators} evaluators ran: `ledger up --evaluators {evaluators}` starts as "
            "many again (a plain `ledger up` starts one)"
        )
    if stuck:  # the broker is left to them: stopping it under a live processor loses its work
        said = "; ".join(f"{name}: {why}" for name, why in sorted(stuck.items()))
        raise ProcessorError(
            f"could not stop {', '.join(sorted(stuck))} ({said}); stopped: "
            f"{', '.join(stopped) or 'nothing'}; the broker was left running: run `ledger down` "
            "again once they are gone"
        )
    if not keep_broker and not settings.bootstrap and broker.stop(settings):
        stopped.append("broker")
    return Stopped(stopped=stopped, ended=by_itself, evaluators=evaluators)
