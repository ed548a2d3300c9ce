"""The evaluator's work per request, stage by stage, with warm and with evicted caches:
``python -m benchmarks.handler`` (no Kafka).

At 1,000 req/s the evaluator answers requests one at a time, about a millisecond apart, while
the broker and the load generator run on the same two cores: between two requests their work
evicts the evaluator's code and data from the core's caches. ``benchmarks.throughput``
(thousands of requests per batch) measures the evaluator with warm caches; this measures what
the same work costs each request when the caches were evicted just before it.

For each request it times decoding the request record, the core's evaluation, the hash-chain
stamp (:func:`ledger.core.chain.link`) and encoding the trace, then, separately, the whole
:meth:`processors.request_handler.RequestHandler.handle_batch` of that one record (in-flight markers,
de-duplication, size limit, correction check included). Warm: requests back to back. Cold:
``--evict-mb`` of memory written before each request (more than a core's L2 cache; the timer
starts after it). Figures are medians in microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.core import build_state
from benchmarks.harness import load_average, make_request
from ledger.codec import default_codec
from ledger.core.chain import ChainHead, link
from ledger.core.evaluate import evaluate
from ledger.core.events import EvaluationRequested
from ledger.ids import utcnow
from ledger.settings import Settings
from processors.inflight import InFlight
from processors.outputs import ProcessorStats
from processors.request_handler import RequestHandler
from processors.request_loop import Record

STAGES = ("decode request", "evaluate", "chain link", "encode trace")


def _stages(encoded: list[bytes], evict: Callable[[], None] | None) -> dict[str, list[float]]:
    """Per-stage microseconds of each request (``evict`` runs before each, untimed)."""
    codec = default_codec()
    state = build_state()
    head = ChainHead("bench/stages")
    times: dict[str, list[float]] = {name: [] for name in STAGES}
    clock = time.perf_counter_ns
    for value in encoded:
        if evict is not None:
            evict()
        t0 = clock()
        request = codec.decode(value)
        t1 = clock()
        assert isinstance(request, EvaluationRequested)
        decision = evaluate(state, request, now=utcnow(), evaluator_id="bench")
        t2 = clock()
        stamped, head = link(decision, head, {"latency_us": 1})
        t3 = clock()
        codec.encode(stamped)
        t4 = clock()
        for name, start, end in zip(STAGES, (t0, t1, t2, t3), (t1, t2, t3, t4), strict=True):
            times[name].append((end - start) / 1000)
    return times


def _whole(encoded: list[bytes], evict: Callable[[], None] | None, markers: Path) -> list[float]:
    """Microseconds of ``handle_batch`` for each request as a batch of one."""
    codec = default_codec()
    state = build_state()
    handler = RequestHandler(
        settings=Settings(home=markers),
        codec=codec,
        evaluator_id="bench",
        stats=ProcessorStats(),
        inflight=InFlight(markers / "inflight"),
    )
    out: list[float] = []
    clock = time.perf_counter_ns
    for offset, value in enumerate(encoded):
        record = Record("bench.requests", 0, offset, None, value)
        if evict is not None:
            evict()
        start = clock()
        handler.handle_batch(state, [record])
        out.append((clock() - start) / 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.handler", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per figure (2000)")
    parser.add_argument(
        "--evict-mb",
        type=int,
        default=8,
        help="MiB written before each request in the cold runs (8: more than a core's L2)",
    )
    args = parser.parse_args()
    if args.requests < 1 or args.evict_mb < 1:
        parser.error("--requests and --evict-mb must be at least 1")

    buffer = bytearray(args.evict_mb * 1024 * 1024)
    ones = b"\x01" * (len(buffer) // 64)

    def evict() -> None:
        buffer[::64] = ones  # one write per 64-byte cache line

    codec = default_codec()
    # Distinct requests for each run, so no run reads records another left in the cache.
    batches = [
        [codec.encode(make_request(k * args.requests + i)) for i in range(args.requests)]
        for k in range(4)
    ]
    print(
        f"{args.requests:,} requests per figure, one at a time; cold: {args.evict_mb} MiB "
        f"written before each; {load_average()}"
    )
    _stages(batches[0][: min(200, args.requests)], None)  # imports, first compiles: uncounted
    warm = _stages(batches[0], None)
    cold = _stages(batches[1], evict)
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as home:
        whole_warm = _whole(batches[2], None, Path(home) / "warm")
        whole_cold = _whole(batches[3], evict, Path(home) / "cold")
    print(f"{'stage (median µs)':<28}{'warm':>8}{'cold':>8}{'cold/warm':>11}")
    rows = [(name, warm[name], cold[name]) for name in STAGES]
    rows.append(
        (
            "  sum of the stages",
            [sum(v) for v in zip(*warm.values(), strict=True)],
            [sum(v) for v in zip(*cold.values(), strict=True)],
        )
    )
    rows.append(("handle_batch of one record", whole_warm, whole_cold))
    for name, hot, evicted in rows:
        w, c = statistics.median(hot), statistics.median(evicted)
        print(f"{name:<28}{w:8.1f}{c:8.1f}{c / w:10.1f}x")


if __name__ == "__main__":
    main()
