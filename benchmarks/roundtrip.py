"""Synchronous round trip through Kafka: ``python -m benchmarks.roundtrip`` (DESIGN §11, row 2).

SDK → request topic → evaluator → decisions topic → SDK, on a private loopback stack (see
``benchmarks.harness``). Open-loop load: one pacing thread publishes requests on an absolute
schedule (``--rate`` per second) with :meth:`LedgerClient.send_request`, so a slow reply never
lowers the offered rate; each reply's latency is taken when the SDK's listener completes its
future. The first ``--warmup`` seconds are not counted. A reply later than ``--timeout`` (or
none) is a timeout. Targets: p50 ≤ 3 ms, p99 ≤ 10 ms at 1,000 req/s offered.

It also splits each round trip in two legs by the wall clock of this one machine: *to decided*
(request built by the SDK → the evaluator's decision time, i.e. produce, broker, evaluator fetch
and decode) and *to received* (decision time → the SDK has it: evaluate, encode, produce,
broker, listener fetch and decode), to show where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from benchmarks.harness import (
    ADMIN,
    add_stack_arguments,
    bench_stack,
    bootstrap_governance,
    load_average,
    make_request,
    percentile,
    wait_for_version,
)
from ledger.client import LedgerClient
from ledger.core.events import DecisionRecorded

P50_TARGET_MS = 3.0
P99_TARGET_MS = 10.0


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)  # seconds
    to_decided: list[float] = field(default_factory=list)
    to_received: list[float] = field(default_factory=list)
    errors: int = 0


def _callback(samples: Samples, sent: float, counted: bool):  # type: ignore[no-untyped-def]
    def done(future: Future[DecisionRecorded]) -> None:
        now = time.perf_counter()
        wall = time.time()
        if not counted:
            return
        if future.exception() is not None:
            samples.errors += 1
            return
        decision = future.result()
        samples.latencies.append(now - sent)
        decided = decision.occurred_at.timestamp()
        samples.to_decided.append(decided - decision.requested_at.timestamp())
        samples.to_received.append(wall - decided)

    return done


def run_load(
    client: LedgerClient, *, rate: float, seconds: float, warmup: float, timeout: float
) -> tuple[Samples, int, int, float]:
    """Offer ``rate`` req/s for ``warmup + seconds``. Returns samples, sent, timeouts, rate."""
    samples = Samples()
    futures: list[tuple[float, Future[DecisionRecorded]]] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + seconds
    i = 0
    late = 0
    while True:
        due = start + i * interval
        if due >= end:
            break
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.001:
            late += 1
        request = make_request(i)
        sent = time.perf_counter()
        future = client.send_request(request)
        counted = due >= measure_from
        future.add_done_callback(_callback(samples, sent, counted))
        if counted:
            futures.append((sent, future))
        i += 1
    finished = time.perf_counter()
    offered = len(futures) / (finished - measure_from) if futures else 0.0
    # Wait for stragglers up to the timeout, then count what never came (or came too late).
    give_up = time.perf_counter() + timeout
    for _, future in futures:
        left = give_up - time.perf_counter()
        if left <= 0:
            break
        with contextlib.suppress(Exception):
            future.result(timeout=left)
    time.sleep(0.05)  # let the listener run the last callbacks
    missing = sum(1 for _, f in futures if not f.done())
    too_late = sum(1 for lat in samples.latencies if lat > timeout)
    if late:
        print(f"  (the pacing thread was > 1 ms late {late} times)")
    return samples, len(futures), missing + too_late, offered


def _ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def report(samples: Samples, sent: int, timeouts: int, offered: float, rate: float) -> None:
    lat = sorted(samples.latencies)
    print(f"offered              : {offered:,.0f} req/s (asked {rate:,.0f}), {sent:,} requests")
    print(f"answered             : {len(lat):,}  timeouts: {timeouts}  errors: {samples.errors}")
    if not lat:
        return
    p50, p90, p99, p999 = (_ms(lat, q) for q in (0.5, 0.9, 0.99, 0.999))
    print(
        f"round trip ms        : p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f}  "
        f"p99.9 {p999:.2f}  max {lat[-1] * 1000:.2f}  mean {sum(lat) / len(lat) * 1000:.2f}"
    )
    for name, values in (("to decided", samples.to_decided), ("to received", samples.to_received)):
        v = sorted(values)
        print(f"  leg {name:<15}: p50 {_ms(v, 0.5):.2f}  p99 {_ms(v, 0.99):.2f}  ms")
    ok50 = "meets" if p50 <= P50_TARGET_MS else "misses"
    ok99 = "meets" if p99 <= P99_TARGET_MS else "misses"
    print(
        f"ratio p50 / target   : {p50 / P50_TARGET_MS:.2f}x  (target <= {P50_TARGET_MS} ms: {ok50})"
    )
    print(
        f"ratio p99 / target   : {p99 / P99_TARGET_MS:.2f}x  (target <= {P99_TARGET_MS} ms: {ok99})"
    )
    print(f"machine              : {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s offered (1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="uncounted seconds first (3)")
    parser.add_argument("--timeout", type=float, default=5.0, help="a later reply is a timeout (5)")
    add_stack_arguments(parser)
    args = parser.parse_args()

    with bench_stack(
        bootstrap=args.bootstrap,
        partitions=args.partitions,
        keep_home=args.keep_home,
        insecure=args.insecure,
    ) as stack:
        admin = stack.client(ADMIN)
        client = stack.client(timeout=args.timeout)
        try:
            version = bootstrap_governance(admin)
            wait_for_version(client, version)
            print(
                f"round trip at {args.rate:,.0f} req/s for {args.seconds:g} s "
                f"(+{args.warmup:g} s warm-up), {args.partitions} partitions, one evaluator"
            )
            samples, sent, timeouts, offered = run_load(
                client,
                rate=args.rate,
                seconds=args.seconds,
                warmup=args.warmup,
                timeout=args.timeout,
            )
            report(samples, sent, timeouts, offered, args.rate)
        finally:
            client.close()
            admin.close()


if __name__ == "__main__":
    main()
