"""Evaluator throughput, one worker process: ``python -m benchmarks.throughput`` (DESIGN §11).

On a private loopback stack (see ``benchmarks.harness``): the grants and the refund policy are
set up, a backlog of ``--backlog`` evaluation requests is produced with a raw librdkafka producer
(``linger.ms=0``: what is queued while a produce request is in flight leaves in the next one)
*before* the evaluator starts, then ONE evaluator worker is started and a producer thread keeps
the backlog topped up so the evaluator never waits for work. A raw librdkafka consumer counts the
records on the decisions topic (by record key, which is the request id) and bins them by their
record timestamp, i.e. when the evaluator produced them (a whole batch of the evaluator's answers
is stamped within milliseconds, so per-second bins are lumpy: the window rate is what counts).

The CPU each process used in the window (broker, evaluator, command processor, this load
generator) is read from ``/proc`` and printed per decision: the evaluator's gives its capacity
(decisions per CPU-second), independent of how much of the two shared cores it got.

The rate is the decisions stamped inside the measured window (``--seconds``, after ``--warmup``
seconds from the first decision) divided by its length. The warm-up is 30 s by default, as a
JVM's steady state is measured: the broker compiles its hot code in its first tens of seconds
under load, and that compiling is CPU it spends once (2026-12-03, same machine, minutes apart:
72 µs of broker CPU per decision measured after 3 s of warm-up, 49 µs after 30 s). After the window the producer stops and
the backlog is drained; then every request id must have exactly one decision: none lost, none
duplicated. A sample of decisions is decoded to check they were made by the refund policy.
Target: ≥ 10,000 decisions/s sustained for 60 s.
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ADMIN,
    CpuMeter,
    add_stack_arguments,
    bench_stack,
    bootstrap_governance,
    load_average,
    make_request,
    median,
)
from ledger.codec import default_codec
from ledger.core.events import DecisionRecorded
from ledger.kafka.clients import make_rdkafka_consumer, make_rdkafka_producer
from ledger.settings import KafkaSecurity

# The design's three targets for this benchmark (README, status table).
TARGET = 5_000
"""Sustained decisions/s, one worker, everything on the 2-core machine."""
CAPACITY_TARGET = 10_000
"""Decisions per evaluator CPU-second."""
BROKER_TARGET_US = 50
"""Broker CPU per decision, µs."""


class Producer:
    """Produces requests; remembers their ids. Tops the backlog up from a thread."""

    def __init__(self, bootstrap: str, topic: str, *, security: KafkaSecurity | None) -> None:
        self._producer = make_rdkafka_producer(bootstrap, security=security)
        self._codec = default_codec()
        self._topic = topic
        self.ids: list[bytes] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def produce(self, n: int) -> None:
        codec, produce, topic = self._codec, self._producer.produce, self._topic
        start = len(self.ids)
        for i in range(start, start + n):
            request = make_request(i)
            value = codec.encode(request)
            while True:
                try:
                    produce(topic, value, request.resource.encode(), on_delivery=self._delivered)
                    break
                except BufferError:
                    self._producer.poll(0.05)
            self.ids.append(request.event_id.encode())
        self._producer.poll(0)

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None and self.error is None:
            self.error = RuntimeError(f"a request was not written: {error}")

    def flush(self) -> None:
        left = self._producer.flush(60)
        if left or self.error is not None:
            raise RuntimeError(f"the producer failed ({left} unsent): {self.error}")

    def keep_ahead(self, answered: Any, backlog: int, chunk: int = 2_000) -> None:
        """Keep ``len(ids) - answered()`` at about ``backlog`` until :meth:`stop`."""

        def run() -> None:
            try:
                while not self._stop.is_set():
                    if len(self.ids) - answered() < backlog:
                        self.produce(chunk)
                    else:
                        time.sleep(0.01)
                self.flush()
            except BaseException as exc:  # reported by the main thread
                self.error = exc

        self._thread = threading.Thread(target=run, name="bench-producer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        if self.error is not None:
            raise RuntimeError(f"the producer failed: {self.error}") from self.error

    def close(self) -> None:
        self._producer.flush(10)
        self._producer = None  # librdkafka's client ends when released: before the broker does


class Counter:
    """Counts decisions by request id and by the second they were produced in."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        security: KafkaSecurity | None,
        group_prefix: str = "",
        sample_every: int = 997,
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        # Assigned, never committing; its group is still one the agent's ACLs allow.
        self._consumer = make_rdkafka_consumer(
            bootstrap, security=security, **{"group.id": f"{group_prefix}agent.counter"}
        )
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        )
        self.seen: collections.Counter[bytes] = collections.Counter()
        self.per_ms_second: collections.Counter[int] = collections.Counter()
        self.total = 0
        self.first_ms: int | None = None
        self.samples: list[DecisionRecorded] = []
        self._sample_every = sample_every
        self._codec = default_codec()

    def poll(self, timeout_ms: int = 200) -> int:
        records = self._consumer.consume(num_messages=10_000, timeout=0)
        if not records:
            first = self._consumer.poll(timeout_ms / 1000)
            records = [first] if first is not None else []
        for record in records:
            if record.error() is not None:
                raise RuntimeError(f"the counter failed: {record.error()}")
            self.seen[record.key()] += 1
            stamp = record.timestamp()[1]
            self.per_ms_second[stamp // 1000] += 1
            if self.first_ms is None or stamp < self.first_ms:
                self.first_ms = stamp
            self.total += 1
            if self.total % self._sample_every == 0:
                decision = self._codec.decode(record.value())
                assert isinstance(decision, DecisionRecorded), decision
                self.samples.append(decision)
        return len(records)

    def close(self) -> None:
        self._consumer.close()


def run(args: argparse.Namespace) -> None:
    with bench_stack(
        bootstrap=args.bootstrap,
        processors=("command-processor",),
        partitions=args.partitions,
        keep_home=args.keep_home,
        insecure=args.insecure,
    ) as stack:
        admin = stack.client(ADMIN)
        try:
            version = bootstrap_governance(admin)
        finally:
            admin.close()
        producer = Producer(
            stack.bootstrap, stack.topics.evaluation_requests, security=stack.security("agent")
        )
        counter = Counter(
            stack.bootstrap,
            stack.topics.decisions,
            security=stack.security("agent"),
            group_prefix=stack.topics.prefix,
        )
        try:
            t = time.perf_counter()
            producer.produce(args.backlog)
            producer.flush()
            print(
                f"pre-produced {args.backlog:,} requests in {time.perf_counter() - t:.1f} s; "
                "starting one evaluator…"
            )
            stack.start("evaluator")
            producer.keep_ahead(lambda: counter.total, args.backlog)
            while counter.first_ms is None:
                counter.poll()
            assert counter.first_ms is not None
            window_start = counter.first_ms + int(args.warmup * 1000)
            window_end = window_start + int(args.seconds * 1000)
            print(f"measuring {args.seconds:g} s after a {args.warmup:g} s warm-up…")
            while time.time() * 1000 < window_start:
                counter.poll()
            meter, meter_from = CpuMeter(stack.pids()), time.time()
            profiler = _profile(
                args, stack.pids().get("evaluator"), window_end / 1000 - time.time()
            )
            while time.time() * 1000 < window_end:
                counter.poll()
            cpu, cpu_seconds = meter.used(), time.time() - meter_from
            if profiler is not None:
                profiler.wait(timeout=60)
                print(f"profile of the evaluator in the window: {args.profile}")
            while time.time() * 1000 < window_end + 1000:
                counter.poll()
            producer.stop()
            produced = len(producer.ids)
            give_up = time.monotonic() + args.drain_timeout
            while counter.total < produced and time.monotonic() < give_up:
                counter.poll()
            # A little longer, so a late duplicate would be seen too.
            quiet_until = time.monotonic() + 2.0
            while time.monotonic() < quiet_until:
                counter.poll(timeout_ms=100)
            report(args, producer, counter, window_start, window_end, version)
            report_cpu(cpu, cpu_seconds, counter, window_start, window_end)
        finally:
            counter.close()
            producer.close()


def _profile(args: argparse.Namespace, pid: int | None, seconds: float) -> Any:
    """``py-spy record`` of the evaluator for the measured window, when ``--profile`` asks."""
    if not args.profile or pid is None:
        return None
    import shutil
    import subprocess

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    fmt = "raw" if args.profile.endswith(".txt") else "flamegraph"
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "200",
            "--format",
            fmt,
            "--output",
            args.profile,
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def report(
    args: argparse.Namespace,
    producer: Producer,
    counter: Counter,
    window_start: int,
    window_end: int,
    version: int,
) -> None:
    # Per-second bins fully inside the window, and the window total by millisecond bounds.
    seconds = range(window_start // 1000 + 1, window_end // 1000)
    per_second = [counter.per_ms_second.get(s, 0) for s in seconds]
    in_window = sum(per_second)
    rate = in_window / len(per_second) if per_second else 0.0
    produced = set(producer.ids)
    lost = len(produced - counter.seen.keys())
    unexpected = len(counter.seen.keys() - produced)
    duplicated = sum(1 for n in counter.seen.values() if n > 1)
    by_policy = collections.Counter(
        (d.policy, d.policy_version, d.determination.value) for d in counter.samples
    )
    print(f"requests produced    : {len(producer.ids):,}  decisions seen: {counter.total:,}")
    print(
        f"decisions/s          : {rate:,.0f}  over {len(per_second)} whole seconds "
        f"(per second min {min(per_second, default=0):,} / median {median(per_second):,.0f} / "
        f"max {max(per_second, default=0):,})"
    )
    print(f"lost / duplicated    : {lost} / {duplicated}  (unexpected ids: {unexpected})")
    print(f"sampled decisions    : {dict(by_policy)}")
    ok = "meets" if rate >= TARGET else "misses"
    print(f"ratio to target      : {rate / TARGET:.2f}x  (sustained >= {TARGET:,}/s: {ok})")
    print(f"machine              : {load_average()}")
    if any(d.policy != "refund" or d.policy_version != version for d in counter.samples):
        raise SystemExit("some decisions were not made by the refund policy")
    if lost or duplicated or unexpected:
        raise SystemExit("requests were lost or answered twice")


def report_cpu(
    cpu: dict[str, float], wall: float, counter: Counter, window_start: int, window_end: int
) -> None:
    """Where the two shared CPUs went during the window, per decision and in cores."""
    decided = (
        sum(
            n
            for s, n in counter.per_ms_second.items()
            if window_start // 1000 <= s < window_end // 1000
        )
        or 1
    )
    parts = "  ".join(
        f"{name} {used / wall:.2f} cores ({used / decided * 1e6:,.0f} µs/decision)"
        for name, used in sorted(cpu.items(), key=lambda kv: -kv[1])
    )
    print(f"CPU in the window    : {parts}")
    if "evaluator" in cpu and cpu["evaluator"] > 0:
        capacity = decided / cpu["evaluator"]
        ok = "meets" if capacity >= CAPACITY_TARGET else "misses"
        print(
            f"evaluator capacity   : {capacity:,.0f} decisions per CPU-second (the rate one "
            f"whole core would give it): {capacity / CAPACITY_TARGET:.2f}x the target of "
            f">= {CAPACITY_TARGET:,}: {ok}"
        )
    if "broker" in cpu:
        per = cpu["broker"] / decided * 1e6
        ok = "meets" if per <= BROKER_TARGET_US else "misses"
        print(
            f"broker CPU           : {per:,.0f} µs per decision: {per / BROKER_TARGET_US:.2f}x "
            f"the target of <= {BROKER_TARGET_US} µs: {ok}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds (60)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="uncounted seconds first (30): the broker's JVM compiles its hot code meanwhile",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=60_000,
        help="requests kept waiting ahead of the evaluator (60000)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=120.0, help="seconds to drain at the end (120)"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record the evaluator with py-spy during the window: FILE.svg (flame graph) or "
        "FILE.txt (collapsed stacks)",
    )
    add_stack_arguments(parser)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
