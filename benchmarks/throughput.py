"""Evaluator throughput, one worker process: ``python -m benchmarks.throughput`` (DESIGN §11).

On a private loopback stack (see ``benchmarks.harness``): the grants and the refund policy are
set up, a backlog of ``--backlog`` evaluation requests is produced with a raw, batching
kafka-python producer *before* the evaluator starts, then ONE evaluator worker is started and a
producer thread keeps the backlog topped up so the evaluator never waits for work. A raw consumer
counts the records on the decisions topic (by record key, which is the request id) and bins them
by their record timestamp, i.e. when the evaluator produced them.

The rate is the decisions stamped inside the measured window (``--seconds``, after ``--warmup``
seconds from the first decision) divided by its length. After the window the producer stops and
the backlog is drained; then every request id must have exactly one decision: none lost, none
duplicated. A sample of decisions is decoded to check they were made by the refund policy.
Target: ≥ 10,000 decisions/s sustained for 60 s.
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
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
from ledger.kafka.clients import make_consumer, make_producer
from ledger.settings import KafkaSecurity

TARGET = 10_000
BATCHING = {"linger_ms": 5, "batch_size": 256 * 1024}


class Producer:
    """Produces requests; remembers their ids. Tops the backlog up from a thread."""

    def __init__(self, bootstrap: str, topic: str, *, security: KafkaSecurity | None) -> None:
        self._producer = make_producer(bootstrap, security=security, **BATCHING)
        self._codec = default_codec()
        self._topic = topic
        self.ids: list[bytes] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def produce(self, n: int) -> None:
        codec, send, topic = self._codec, self._producer.send, self._topic
        start = len(self.ids)
        for i in range(start, start + n):
            request = make_request(i)
            send(topic, key=request.resource.encode(), value=codec.encode(request))
            self.ids.append(request.event_id.encode())

    def flush(self) -> None:
        self._producer.flush(timeout=60)

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
        self._producer.close(timeout=10)


class Counter:
    """Counts decisions by request id and by the second they were produced in."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        security: KafkaSecurity | None,
        sample_every: int = 997,
    ) -> None:
        from kafka import TopicPartition

        self._consumer = make_consumer(
            bootstrap, security=security, max_poll_records=10_000, fetch_max_wait_ms=100
        )
        parts = [
            TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic))
        ]
        self._consumer.assign(parts)
        self._consumer.seek_to_beginning(*parts)
        self.seen: collections.Counter[bytes] = collections.Counter()
        self.per_ms_second: collections.Counter[int] = collections.Counter()
        self.total = 0
        self.first_ms: int | None = None
        self.samples: list[DecisionRecorded] = []
        self._sample_every = sample_every
        self._codec = default_codec()

    def poll(self, timeout_ms: int = 200) -> int:
        got = 0
        for records in self._consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                self.seen[record.key] += 1
                self.per_ms_second[record.timestamp // 1000] += 1
                if self.first_ms is None or record.timestamp < self.first_ms:
                    self.first_ms = record.timestamp
                self.total += 1
                if self.total % self._sample_every == 0:
                    decision = self._codec.decode(record.value)
                    assert isinstance(decision, DecisionRecorded), decision
                    self.samples.append(decision)
            got += len(records)
        return got

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
        counter = Counter(stack.bootstrap, stack.topics.decisions, security=stack.security("agent"))
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
            while time.time() * 1000 < window_end:
                counter.poll()
            cpu, cpu_seconds = meter.used(), time.time() - meter_from
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
    print(f"ratio to target      : {rate / TARGET:.2f}x  (target >= {TARGET:,}/s: {ok})")
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
        print(
            f"evaluator capacity   : {decided / cpu['evaluator']:,.0f} decisions per CPU-second "
            "(the rate one whole core would give it)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds (60)")
    parser.add_argument("--warmup", type=float, default=3.0, help="uncounted seconds first (3)")
    parser.add_argument(
        "--backlog",
        type=int,
        default=60_000,
        help="requests kept waiting ahead of the evaluator (60000)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=120.0, help="seconds to drain at the end (120)"
    )
    add_stack_arguments(parser)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
