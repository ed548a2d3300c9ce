"""The heartbeat a processor worker writes into its ready file: the contract between a running
processor and whatever supervises it (``ledger up``/``ledger ps`` in :mod:`ledger.local.stack`).

A running processor proves it works by rewriting its ready file every :attr:`Heartbeat.INTERVAL`
seconds with where it talks to Kafka and when its consumer last got an answer from the broker.
:meth:`Heartbeat.problem` is the one rule that judges it.

A container's health check (no ``ledger ps`` there): ``python -m processors.heartbeat FILE``,
with the processor started with ``LEDGER_READY_FILE=FILE``, exits 0 while it is healthy and 1,
saying why in one line, while it is not (``compose/docker-compose.yml`` uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ledger.pids import process_state, stopped_by_signal
from processors.outputs import DecisionCounts, error_note, unreadable_advice

__all__ = [
    "Heartbeat",
    "STALE_AFTER",
    "OUT_OF_GROUP_AFTER",
    "AHEAD_AFTER",
    "ERRORS_DOMINATE",
    "DecisionCounts",
    "age",
    "errors_dominate",
    "stopped_by_signal",
    "unreadable_advice",
]

STALE_AFTER = 5.0
"""Seconds without a heartbeat, or without an answer from the broker, after which a running
processor is not healthy."""
OUT_OF_GROUP_AFTER = 60.0
"""Seconds an evaluator may hold no request partition while its consumer is not a settled
member of its group before it is not healthy. Longer than any rebalance it waits out: one after
a broker restart waits some 10-22 s for the group's old members to expire; right after a start
a join takes a few seconds. An evaluator that is a settled member holding none (more workers
than request partitions) is never out."""
AHEAD_AFTER = 5.0
"""Seconds a heartbeat (or its last answer from the broker) may be dated after the time it is
read at. A running processor rewrites its heartbeat every second, so after the machine's clock
steps back its heartbeat is in the future for a second at most; one that stays there was
written by a processor that has stopped writing (an operator's walkthrough: a SIGSTOPped
evaluator, `faketime -f -1h ledger ps`, showed healthy, 0.0 s ago).

Not the monotonic clock: it survives a step, but it counts from the machine's boot, and a ready
file outlives a reboot (a pid of the new boot may be the old one's), so a reader could not tell
an old count from a new one without a boot id as well; the wall clock with this bound is wrong
for a second at most after a step, either way."""

ERRORS_DOMINATE = 0.5
"""``ledger ps`` says so, and exits 1, when the evaluators' ``error`` decisions are at least
this share of their decisions over the last minute (:attr:`Heartbeat.recent`), and at least
:data:`~processors.outputs.ERRORS_AT_LEAST`: a policy that fails on every request answers every
request, and its evaluator is otherwise healthy (no restart mends it: not
:meth:`Heartbeat.problem`'s)."""


def errors_dominate(recent: DecisionCounts) -> str | None:
    """``40 of 40 decisions were `error` (…)`` when ``recent`` (the evaluators' recent
    decisions, added up) are :data:`ERRORS_DOMINATE` ``error``; ``None`` otherwise."""
    return error_note(recent, share=ERRORS_DOMINATE, policies_only=True)


def age(now: float, then: float) -> float:
    """Seconds from ``then`` to ``now``; 0 for a ``then`` less than :data:`AHEAD_AFTER` after
    ``now`` (a moment's difference between two clocks' reads), negative beyond."""
    seconds = now - then
    return seconds if seconds >= 0 or -seconds > AHEAD_AFTER else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """What a processor writes into its ready file, every :attr:`INTERVAL` seconds.

    ``at`` is when it was written, ``fetched_at`` when the processor's consumer last received a
    fetch response from the broker (``None``: never yet); both are Unix times. ``bootstrap`` is the
    address the processor was started with: if the broker moved, the processor is dialling the
    wrong place however alive it looks.
    """

    INTERVAL = 1.0

    pid: int
    bootstrap: str
    at: float
    fetched_at: float | None
    credential: str | None = None
    """A fingerprint of the password it logged in with
    (:func:`ledger.discovery.credential_fingerprint`), which ``ledger up`` compares with its
    role's credential file to tell a processor left on an old password."""
    code: str | None = None
    """The fingerprint of the code it runs, read when it started
    (:func:`ledger.kafka.snapshots.installed_fingerprint`), which ``ledger ps`` and ``up``
    compare with their own to tell a processor left on the code of before an upgrade (``None``:
    a processor of a version that wrote none, so other code too)."""
    requests_held: int | None = None
    """An evaluator's: how many request partitions the group gave it (``None``: not an
    evaluator, or one of a version that wrote none)."""
    requests_of: int | None = None
    """An evaluator's: how many request partitions there are (0: not known yet). ``ledger up``
    and ``ps`` add up the evaluators' ``requests_held`` against it: after a broker restart the
    group is rebalanced for some 10 s more, and requests of partitions no one holds wait."""
    out_of_group_since: float | None = None
    """An evaluator's: since when (Unix time) it has held no request partition while its
    consumer was not a settled member of the evaluators' group (``None``: it holds some, or is
    a member). Out for :data:`OUT_OF_GROUP_AFTER` seconds, it is not healthy: it answers
    nothing, and (the only evaluator) no one does."""
    group_state: str | None = None
    """With ``out_of_group_since``: where librdkafka's group membership stands (its group and
    join states, ``up/wait-join``), for the reason :meth:`problem` gives."""
    recent: DecisionCounts | None = None
    """An evaluator's: its decisions over the last ``recent_seconds``, by determination, and the
    ``error`` ones by reason code and deciding policy version (``None``: not an evaluator, or
    one of a version that wrote none). ``ledger ps`` shows them, and says when errors dominate
    (:func:`errors_dominate`): a policy that fails on every request is
    otherwise healthy."""
    recent_seconds: float | None = None
    """The span ``recent`` covers: :data:`~processors.outputs.RECENT_SECONDS`, less in the
    evaluator's first minute."""

    client_id: str | None = None
    """An evaluator's: the ``client.id`` its request consumer gives the broker, unique to the
    process (``None``: not an evaluator, or of a version that wrote none). ``ledger ps`` asks
    the broker who holds the request partitions its evaluators do not: a member with a client
    id none of them has is an evaluator this home did not start (``python -m
    processors.evaluator``)."""

    governance_newer: int | None = None
    """Governance records it skipped because a newer release wrote them (a schema it does not
    know; an operator's upgrade drill: an older evaluator beside newer ones decided under a
    policy's earlier version, `ps` green): nothing they could change is decided or changed.
    ``None``: of a version that wrote none."""

    governance_unread: list[str] | None = None
    """Whose records those are, in words (``policy 'refund'``, ``principal 'agent:a'``; ten at
    most, then how many more): nothing is decided or changed on them (``None``: of a version
    that wrote none)."""

    governance_damaged: int | None = None
    """Governance records it skipped that are no governance event of any schema it knows (cut
    short, empty, not Avro), but those ``LEDGER_GOVERNANCE_SKIP`` names: it decides and
    governs without whatever they held (``None``: of a version that wrote none)."""

    governance_damaged_at: list[str] | None = None
    """Where the first five of those are (``TOPIC/PARTITION@OFFSET``)."""

    def write(self, path: Path) -> None:
        """Replace ``path`` atomically: a reader never sees half a heartbeat."""
        partial = path.with_name(path.name + ".partial")
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["recent"] = None if self.recent is None else self.recent.to_json()
        # Never through a link planted there (an OSError, logged by the processor, instead).
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(partial, flags, 0o600), "w") as out:
            out.write(json.dumps(data))
        partial.replace(path)

    @classmethod
    def read(cls, path: Path) -> Heartbeat | None:
        """The heartbeat in ``path``; ``None`` if there is none (not ready yet, or a ready file
        from a version of the processors that wrote no heartbeat)."""
        try:
            data = json.loads(path.read_text())
            fetched, credential, code = (data.get(k) for k in ("fetched_at", "credential", "code"))
            held, of = data.get("requests_held"), data.get("requests_of")
            out, group = data.get("out_of_group_since"), data.get("group_state")
            recent, span = data.get("recent"), data.get("recent_seconds")
            client, newer = data.get("client_id"), data.get("governance_newer")
            unread = data.get("governance_unread")
            damaged, damaged_at = data.get("governance_damaged"), data.get("governance_damaged_at")
            return cls(
                pid=int(data["pid"]),
                bootstrap=str(data["bootstrap"]),
                at=float(data["at"]),
                fetched_at=None if fetched is None else float(fetched),
                credential=None if credential is None else str(credential),
                code=None if code is None else str(code),
                requests_held=None if held is None else int(held),
                requests_of=None if of is None else int(of),
                out_of_group_since=None if out is None else float(out),
                group_state=None if group is None else str(group),
                recent=None if recent is None else DecisionCounts.from_json(recent),
                recent_seconds=None if span is None else float(span),
                client_id=None if client is None else str(client),
                governance_newer=None if newer is None else int(newer),
                governance_unread=None if unread is None else [str(u) for u in unread][:11],
                governance_damaged=None if damaged is None else int(damaged),
                governance_damaged_at=(
                    None if damaged_at is None else [str(u) for u in damaged_at][:5]
                ),
            )
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def problem(self, now: float, stale_after: float = STALE_AFTER) -> str | None:
        """What is wrong with the processor that wrote this heartbeat, seen at ``now`` (Unix
        time); ``None`` when it is healthy: it wrote this within ``stale_after`` seconds, its
        consumer had an answer from the broker within as long, and (an evaluator) it has not
        been out of its consumer group for :data:`OUT_OF_GROUP_AFTER` seconds. A heartbeat, or
        an answer from the broker, dated more than :data:`AHEAD_AFTER` seconds after ``now`` is
        not fresh: a running processor would have written one since the clock stepped back."""
        beat_age = age(now, self.at)
        if beat_age < 0:
            return (
                f"its heartbeat is {-beat_age:.0f} s in the future: the clock stepped back, and "
                "it has written none since (a running processor writes one every second): it "
                "is stopped (SIGSTOP?) or its event loop is stuck"
            )
        if beat_age > stale_after:
            if stopped_by_signal(
                self.pid
            ):  # an operator's walkthrough: a SIGSTOP read as a full disk
                return self._stopped(f"no heartbeat for {beat_age:.0f} s")
            if _stuck_in_kernel(self.pid):  # a chaos drill: a frozen cgroup read as a stuck loop
                return (
                    f"no heartbeat for {beat_age:.0f} s: it is stuck in the kernel (state D, "
                    "uninterruptible sleep: a hung network filesystem, a frozen cgroup, a failing "
                    "disk); not even SIGKILL ends it until that is over"
                )
            return (
                f"no heartbeat for {beat_age:.0f} s: its event loop is stuck, or it cannot write "
                "its heartbeat file (disk full? its log says so)"
            )
        fetch_age = None if self.fetched_at is None else age(now, self.fetched_at)
        if fetch_age is not None and fetch_age < 0:
            return (
                f"its last answer from Kafka at {self.bootstrap} is dated {-fetch_age:.0f} s in "
                "the future: the clock stepped back, and it has heard nothing from the broker since"
            )
        if fetch_age is None or fetch_age > stale_after:
            silent = "ever" if fetch_age is None else f"for {fetch_age:.0f} s"
            if stopped_by_signal(self.pid):
                # An operator's drill: its last answer from Kafka goes stale a second or so
                # before its heartbeat does, and `ps` blamed a healthy broker meanwhile.
                return self._stopped(f"no answer from Kafka {silent}")
            return f"no answer from Kafka at {self.bootstrap} {silent}"
        out = None if self.out_of_group_since is None else age(now, self.out_of_group_since)
        if out is not None and out > OUT_OF_GROUP_AFTER:
            return (
                f"out of its consumer group for {out:.0f} s (librdkafka: {self.group_state}): it "
                "holds no request partition and answers nothing (`ledger up` restarts it)"
            )
        return None

    def _stopped(self, silent: str) -> str:
        return (
            f"{silent}: it is stopped by a signal (SIGSTOP, or Ctrl-Z in its terminal): `kill "
            f"-CONT {self.pid}` resumes it; `ledger up` (or your supervisor) replaces it"
        )


def _stuck_in_kernel(pid: int) -> bool:
    """Is ``pid`` in uninterruptible sleep (state ``D``) and still there a moment later? A
    process passes through D briefly (a page read from a busy disk: a test saw it)."""
    for _ in range(3):
        if process_state(pid) != "D":
            return False
        time.sleep(0.02)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m processors.heartbeat FILE``: a processor's health from its ready file."""
    parser = argparse.ArgumentParser(
        prog="python -m processors.heartbeat",
        description="Exit 0 if the processor that writes FILE (its LEDGER_READY_FILE) is "
        "healthy, 1 with the reason if not: a container health check.",
    )
    parser.add_argument("file", type=Path, help="the processor's ready file (LEDGER_READY_FILE)")
    parser.add_argument(
        "--stale-after",
        type=float,
        default=STALE_AFTER,
        help=f"seconds without a heartbeat or a broker's answer that count as unhealthy "
        f"(default {STALE_AFTER:g})",
    )
    args = parser.parse_args(argv)
    beat = Heartbeat.read(args.file)
    if beat is None:
        print(
            f"unhealthy: no heartbeat in {args.file} yet: the processor is catching up with the "
            "ledger, or is not running with LEDGER_READY_FILE set to it (see its log)"
        )
        return 1
    now = time.time()
    problem = beat.problem(now, args.stale_after)
    if problem is not None:
        print(f"unhealthy (pid {beat.pid}): {problem}")
        return 1
    print(
        f"healthy (pid {beat.pid}): heartbeat {max(0.0, now - beat.at):.1f} s ago, Kafka at {beat.bootstrap}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
