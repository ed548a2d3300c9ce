"""Rollback reaction time: ``python -m benchmarks.rollback`` (DESIGN §11, rollback row).

On a private loopback stack (see ``benchmarks.harness``): refund v1 active, then v2 proposed,
approved and promoted. A pacing thread sends a steady stream of requests (one every
``--interval-ms``) through the SDK. Each round, with v2 deciding, a ``RollbackPolicy`` to v1 is
submitted; the time is measured from the moment its ``CommandAccepted`` reaches the SDK to the
moment the SDK receives the first decision made by v1 (the restored version). Then v2 is
re-promoted and the next round waits until v2 decides again. Target: p99 ≤ 500 ms.

A first v1 decision can reach the SDK before the ``CommandAccepted`` does (both travel
separately from the same governance event); such a round counts as 0 ms.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import Future

from benchmarks.harness import (
    ADMIN,
    POLICIES,
    add_stack_arguments,
    bench_stack,
    bootstrap_governance,
    deploy,
    load_average,
    make_request,
    percentile,
    promote,
    wait_for_version,
)
from ledger.client import LedgerClient
from ledger.core.events import DecisionRecorded, RollbackPolicy
from ledger.ids import new_id, utcnow

TARGET_MS = 500.0


class Stream:
    """Requests every ``interval`` seconds; remembers when each policy version first answered."""

    def __init__(self, client: LedgerClient, interval: float) -> None:
        self._client = client
        self._interval = interval
        self._lock = threading.Lock()
        self._watch: int | None = None
        self._first_seen: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-stream", daemon=True)
        self.sent = 0
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def watch(self, version: int) -> None:
        """From now on, record when the first decision by ``version`` arrives."""
        with self._lock:
            self._watch, self._first_seen = version, None

    def first_seen(self) -> float | None:
        with self._lock:
            return self._first_seen

    def _on_decision(self, future: Future[DecisionRecorded]) -> None:
        now = time.perf_counter()
        if future.exception() is not None:
            self.errors += 1
            return
        decision = future.result()
        with self._lock:
            if self._first_seen is None and decision.policy_version == self._watch:
                self._first_seen = now

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            due = start + self.sent * self._interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            future = self._client.send_request(make_request(self.sent))
            future.add_done_callback(self._on_decision)
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def measure(args: argparse.Namespace) -> list[float]:
    with bench_stack(
        bootstrap=args.bootstrap,
        partitions=args.partitions,
        keep_home=args.keep_home,
        insecure=args.insecure,
    ) as stack:
        admin = stack.client(ADMIN)
        agent = stack.client(timeout=10)
        stream: Stream | None = None
        try:
            v1 = bootstrap_governance(admin)
            v2 = deploy(admin, (POLICIES / "refund-v2.yaml").read_text())
            wait_for_version(agent, v2)
            stream = Stream(agent, args.interval_ms / 1000)
            stream.start()
            times: list[float] = []
            for round_no in range(1, args.rounds + 1):
                stream.watch(v1)
                command = RollbackPolicy(
                    event_id=new_id(),
                    occurred_at=utcnow(),
                    actor=ADMIN,
                    policy="refund",
                    reason=f"benchmark round {round_no}",
                    to_version=v1,
                )
                admin.submit_command(command)
                accepted = time.perf_counter()
                give_up = accepted + args.round_timeout
                while (seen := stream.first_seen()) is None and time.perf_counter() < give_up:
                    time.sleep(0.0005)
                if seen is None:
                    raise SystemExit(
                        f"round {round_no}: no decision by v{v1} within {args.round_timeout} s"
                    )
                elapsed = max(0.0, seen - accepted) * 1000
                times.append(elapsed)
                print(f"  round {round_no:>3}: {elapsed:7.1f} ms", flush=True)
                # Back to v2 for the next round, and wait until it decides again.
                stream.watch(v2)
                promote(admin, "refund", v2)
                give_up = time.perf_counter() + args.round_timeout
                while stream.first_seen() is None and time.perf_counter() < give_up:
                    time.sleep(0.005)
                if stream.first_seen() is None:
                    raise SystemExit(f"round {round_no}: v{v2} did not decide again")
                time.sleep(args.pause)
            print(f"stream               : {stream.sent:,} requests sent, {stream.errors} errors")
            return times
        finally:
            if stream is not None:
                stream.stop()
            agent.close()
            admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20, help="rollbacks measured (20)")
    parser.add_argument(
        "--interval-ms", type=float, default=2.0, help="one request every this many ms (2)"
    )
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between rounds (0.2)")
    parser.add_argument(
        "--round-timeout", type=float, default=10.0, help="give up on a round after this (10 s)"
    )
    add_stack_arguments(parser)
    args = parser.parse_args()
    times = sorted(measure(args))
    p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
    print(
        f"accepted -> first decision by the restored version, ms: p50 {p50:.1f}  p99 {p99:.1f}  "
        f"min {times[0]:.1f}  max {times[-1]:.1f}  ({len(times)} rounds)"
    )
    ok = "meets" if p99 <= TARGET_MS else "misses"
    print(f"ratio p99 / target   : {p99 / TARGET_MS:.2f}x  (target <= {TARGET_MS:.0f} ms: {ok})")
    print(f"machine              : {load_average()}")


if __name__ == "__main__":
    main()
