"""Codec speed: ``python -m benchmarks.codec`` (DESIGN §11, codec row).

Encodes and decodes real decision traces: the refund policy of DESIGN §5 active, requests with
the four refund facts (a decimal among them), each evaluated by the core into the
``DecisionRecorded`` the evaluator would write (with a governance position, the evaluator id and
a shadow-free trace). It times ``Codec.encode`` over them, ``Codec.decode`` over the bytes, and the
round trip the target is about (encode + decode of one trace), and prints traces per CPU-second
(timed as ``timeit`` times, the cyclic garbage collector paused; the round trip is printed with
it running too)
with the ratio to the 100,000/s target, and beside it the generic path's (fastavro over dicts,
``Codec(compiled=False)``) measured in the same run, and the floor: fastavro's own writer and
reader alone over the same traces as plain dicts (the fastest Avro library, doing less). The evaluation request itself is timed too (the evaluator decodes one per
decision), and so is stamping a trace into the evaluator's hash chain (``ledger.core.chain.link``). CPU time is printed beside wall time: on a shared machine the wall time includes
waiting for a core.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import replace
from io import BytesIO
from typing import Any

import fastavro

from benchmarks.core import build_state
from benchmarks.harness import load_average, make_request
from ledger.codec import MAGIC, Codec
from ledger.contract import contract_dir
from ledger.core import evaluate
from ledger.core.chain import ChainHead, link
from ledger.core.events import DecisionRecorded

TARGET = 100_000


def traces(n: int) -> list[DecisionRecorded]:
    state = build_state()
    out = []
    for i in range(n):
        request = make_request(i)
        decision = evaluate(state, request, now=request.occurred_at, evaluator_id="evaluator-1")
        out.append(
            replace(
                decision,
                latency_us=12,
                governance_position={"ledger.policy-events/0": 2, "ledger.grant-events/0": 0},
            )
        )
    return out


def _best(
    label: str, n: int, fn: Callable[[], Any], repeat: int, *, collector: bool = False
) -> float:
    """Best of ``repeat`` runs, in items per CPU-second (and wall for reference). As ``timeit``
    does, the cyclic garbage collector is paused while ``fn`` runs (unless ``collector``): the
    runs that keep their 20,000 results alive would otherwise pay for it traversing them again
    and again, and the floor, which keeps none, would not."""
    best_cpu, best_wall = float("inf"), float("inf")
    for _ in range(repeat):
        gc.collect()
        if not collector:
            gc.disable()
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            best_cpu = min(best_cpu, time.process_time() - cpu)
            best_wall = min(best_wall, time.perf_counter() - wall)
        finally:
            gc.enable()
    rate = n / best_cpu
    print(
        f"{label:<28} {rate:>10,.0f}/s  ({best_cpu / n * 1e6:6.2f} µs CPU each; "
        f"wall {n / best_wall:,.0f}/s)",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=20_000, help="traces per run (20000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; best kept (5)")
    args = parser.parse_args()

    codec = Codec()
    items = traces(args.traces)
    requests = [make_request(i) for i in range(args.traces)]
    encoded = [codec.encode(d) for d in items]
    encoded_requests = [codec.encode(r) for r in requests]
    assert all(codec.decode(e) == d for e, d in zip(encoded, items, strict=True))
    n = len(items)
    size = sum(map(len, encoded)) / n
    print(f"{n:,} decision traces, {size:.0f} bytes each on average; {load_average()}")
    encode, decode = codec.encode, codec.decode
    _best("encode trace", n, lambda: [encode(d) for d in items], args.repeat)
    _best("decode trace", n, lambda: [decode(e) for e in encoded], args.repeat)
    rate = _best(
        "encode + decode trace", n, lambda: [decode(encode(d)) for d in items], args.repeat
    )
    collected = _best(
        "  the same, collector running",
        n,
        lambda: [decode(encode(d)) for d in items],
        args.repeat,
        collector=True,
    )
    generic = Codec(compiled=False)
    slow = _best(
        "generic path, encode + decode",
        n,
        lambda: [generic.decode(generic.encode(d)) for d in items],
        args.repeat,
    )
    # The floor: the fastest Avro library alone, fastavro's compiled writer and reader, over the
    # same traces as the plain dicts it takes (no dataclasses, no value conversions).
    schema = fastavro.schema.load_schema(contract_dir("schemas") / "DecisionRecorded.avsc")
    body = len(MAGIC) + 8  # the single-object header: marker and schema fingerprint
    dicts = [fastavro.schemaless_reader(BytesIO(e[body:]), schema, None) for e in encoded]

    def fastavro_round_trip() -> None:
        for record in dicts:
            out = BytesIO()
            fastavro.schemaless_writer(out, schema, record)
            out.seek(0)
            fastavro.schemaless_reader(out, schema, None)

    floor = _best("floor: fastavro over dicts", n, fastavro_round_trip, args.repeat)
    _best("decode request", n, lambda: [decode(e) for e in encoded_requests], args.repeat)
    _best("encode request", n, lambda: [encode(r) for r in requests], args.repeat)

    # The evaluator stamps every trace into its hash chain before encoding it (ledger.core.chain):
    # part of the hot path's cost per decision, beside the codec's.
    def stamp_all() -> None:
        head = ChainHead("evaluator-1/bench")
        for d in items:
            _, head = link(d, head, {"latency_us": 12})

    _best("chain stamp (link)", n, stamp_all, args.repeat)
    verdict = "meets" if rate >= TARGET else "misses"
    print(f"compiled / generic   : {rate / slow:.2f}x")
    print(f"compiled / floor     : {rate / floor:.2f}x  (fastavro alone, over dicts)")
    print(
        f"ratio to target      : {rate / TARGET:.2f}x  "
        f"(encode + decode >= {TARGET:,} traces per CPU-second: {verdict}; "
        f"{collected / TARGET:.2f}x with the collector traversing the 20,000 kept results)"
    )


if __name__ == "__main__":
    main()
