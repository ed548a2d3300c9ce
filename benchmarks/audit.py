"""Audit over exports: ``python -m benchmarks.audit`` (DESIGN §11, export and DuckDB rows).

Two parts:

1. **DuckDB over 10,000,000 decisions.** The decisions and a matching governance history are
   written *straight in the export format* (not through Kafka: exporting 10 M records through
   a broker would not fit the 2-core machine in reasonable time). The governance history is
   made by the core (``decide`` + ``fold``: ``--policies`` policies, each through versions,
   approvals, canaries, promotions and a rollback) and written by the exporter's own writer.
   The decisions are generated column by column (vectorised), each decided by the version of
   its policy that was active at its ``decided_at``, spread over 6 partitions and ten days;
   their ``record`` column holds one template record's bytes, not each row's own encoding (the
   queries never read it; a hash-chain check over these rows would report breaks). Generation
   time is printed. Then, over ``ledger.audit.connect`` (the views of ``queries/views.sql``):

   * a filtered aggregate (determinations of one action over three days) — target ≤ 1 s;
   * the decision-by-version join (each decision to its ``policy_timeline`` interval) — ≤ 5 s;
   * a decision by id — ≤ 100 ms;
   * ``active_policies_at`` (the named query) — ≤ 100 ms;
   * ``audit verify`` throughput (records/s) over a separate export of ``--verify-records``
     real chained decisions (each its own record bytes and chain links, as an evaluator writes
     them; the 10 M generated rows carry no chain).

   Each figure is the median of ``--repeat`` runs after one warm-up run.

2. **Export throughput from Kafka** (target ≥ 50,000 records/s): ``--export-records`` decision
   records produced to a private broker (``benchmarks.harness.bench_stack``, no processors),
   then exported by a real ``ledger export --json`` process; records/s from its summary. Beside
   it, the floor: a bare librdkafka read of the same records (values touched, nothing decoded)
   with the exporter's consumer settings, on the same broker in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.harness import add_stack_arguments, bench_stack
from ledger.audit.export import MANIFEST, ROW_GROUP_ROWS, Manifest, write_events
from ledger.audit.rows import topic_formats
from ledger.audit.sql import connect, run_named_typed
from ledger.codec import default_codec
from ledger.core.evaluate import decision_id
from ledger.core.events import (
    ApprovePolicyVersion,
    Command,
    DecisionRecorded,
    Determination,
    Event,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RollbackPolicy,
    ShadowResult,
    Stage,
)
from ledger.core.lifecycle import decide, event_stream
from ledger.core.state import EMPTY_STATE, LedgerState, fold
from ledger.kafka.clients import make_producer
from ledger.settings import TopicNames

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 10
PARTITIONS = 6
REFUND = (
    Path(__file__).resolve().parent.parent / "examples" / "policies" / "refund.yaml"
).read_text()
TOPICS = TopicNames()
ACTIONS = ("refund.issue", "email.send", "payout.create", "ticket.close")
ANSWERS = ("allow", "deny", "allow_with_constraints")
RULES = ("auto-refund", "suspended", "credit-only")
FACTS = tuple(
    json.dumps(
        {"amount": f"{a}.50", "prior_refunds_12m": p, "standing": s, "tenure_days": t},
        sort_keys=True,
        separators=(",", ":"),
    )
    for a, p, s, t in ((120, 0, "good", 400), (620, 1, "watch", 30), (80, 4, "good", 1200))
)


def ratio(value: float, target: float) -> str:
    return f"{value / target:.2f}"


# --------------------------------------------------------------------------- governance


def governance(policies: int) -> tuple[list[tuple[str, Event]], dict[str, list[tuple[int, int]]]]:
    """A history decided by the core, and per policy its active versions as (µs since T0, v)."""
    state: LedgerState = EMPTY_STATE
    written: list[tuple[str, Event]] = []
    ids = iter(range(1, 10**9))
    admins = frozenset({"human:alice", "human:bob"})
    span = DAYS * 86_400
    steps: list[tuple[int, Command]] = []
    for p in range(policies):
        name = f"policy{p:03d}"
        doc = REFUND.replace("policy: refund", f"policy: {name}", 1).replace(
            "governs: [refund.issue]", f"governs: [{ACTIONS[p % len(ACTIONS)]}.{p}]", 1
        )
        for v in range(1, 7):
            when = (span // 7) * (v - 1) + p
            version_doc = doc.replace("amount < 500", f"amount < {400 + 10 * v}", 1)
            steps.append(
                (when, _cmd(ProposePolicyVersion, "human:alice", policy=name, document=version_doc))
            )
            steps.append(
                (when + 1, _cmd(ApprovePolicyVersion, "human:bob", policy=name, version=v))
            )
            if v > 1:
                steps.append(
                    (
                        when + 2,
                        _cmd(
                            PromotePolicyVersion,
                            "human:bob",
                            policy=name,
                            version=v,
                            stage=Stage.CANARY,
                            percent=20,
                        ),
                    )
                )
            steps.append(
                (
                    when + 3600,
                    _cmd(
                        PromotePolicyVersion,
                        "human:bob",
                        policy=name,
                        version=v,
                        stage=Stage.ACTIVE,
                    ),
                )
            )
        steps.append(
            (span - 86_400 + p, _cmd(RollbackPolicy, "human:bob", policy=name, reason="regression"))
        )
    active: dict[str, list[tuple[int, int]]] = {}
    for seconds, command in sorted(steps, key=lambda s: s[0]):
        now = T0 + timedelta(seconds=seconds)
        command = _retime(command, now)
        outcome = decide(
            state, command, now=now, new_id=lambda: f"gov-{next(ids):08d}", admins=admins
        )
        if not isinstance(outcome, tuple):
            raise RuntimeError(f"{command}: {outcome}")
        for event in outcome:
            state = fold(state, event)
            topic = TOPICS.policy_events if event_stream(event) == "policy" else TOPICS.grant_events
            written.append((topic, event))
            record = state.policies[event.policy]  # type: ignore[union-attr]
            if record.active is not None:
                active.setdefault(event.policy, []).append((seconds * 1_000_000, record.active))  # type: ignore[union-attr]
    return written, active


def _cmd(cls: type, actor: str, **fields: Any) -> Any:
    return cls(event_id=f"cmd-{random.getrandbits(64):016x}", occurred_at=T0, actor=actor, **fields)


def _retime(command: Any, now: datetime) -> Any:

    return dataclasses.replace(command, occurred_at=now)


# --------------------------------------------------------------------------- decisions


def write_decisions(
    out: Path, total: int, active: dict[str, list[tuple[int, int]]], template: bytes
) -> Manifest:
    fmt = topic_formats(TOPICS)[TOPICS.decisions]
    schema = fmt.schema
    names = sorted(active)
    # Per policy: activation instants and versions, for searchsorted.
    starts = {p: np.array([t for t, _ in active[p]], dtype=np.int64) for p in names}
    versions = {p: np.array([v for _, v in active[p]], dtype=np.int64) for p in names}
    rng = np.random.default_rng(7)
    per_day = total // DAYS
    manifest = Manifest(prefix=TOPICS.prefix)
    offsets = [0] * PARTITIONS
    n0 = 0
    epoch_us = int((T0 - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)
    for day in range(DAYS):
        count = per_day if day < DAYS - 1 else total - per_day * (DAYS - 1)
        t = np.sort(rng.integers(day * 86_400_000_000, (day + 1) * 86_400_000_000, count)).astype(
            np.int64
        )
        t = np.maximum(t, 3_600_000_000 * 2)  # after every first version is active
        policy_idx = rng.integers(0, len(names), count)
        policy_col = np.array(names, dtype=object)[policy_idx]
        version_col = np.empty(count, dtype=np.int64)
        for i, p in enumerate(names):
            mask = policy_idx == i
            at = np.searchsorted(starts[p], t[mask], side="right") - 1
            version_col[mask] = versions[p][np.maximum(at, 0)]
        answers = rng.integers(0, 3, count)
        n = np.arange(n0, n0 + count)
        n0 += count
        ms = (epoch_us + t) // 1000
        # Request ids as the SDK makes them (UUIDv7 at the request's millisecond) and decision
        # ids as the evaluator derives them from the request id (ledger.core.evaluate).
        request_ids = [
            f"{m >> 16:08x}-{m & 0xFFFF:04x}-7{i & 0xFFF:03x}-8{(i >> 12) & 0xFFF:03x}-{i:012x}"
            for m, i in zip(ms.tolist(), n.tolist(), strict=True)
        ]
        ids = [decision_id(r) for r in request_ids]
        partition = n % PARTITIONS
        for p in range(PARTITIONS):
            mask = partition == p
            rows = int(mask.sum())
            offs = np.arange(offsets[p], offsets[p] + rows, dtype=np.int64)
            first = offsets[p]
            offsets[p] += rows
            pick = np.nonzero(mask)[0]
            columns: dict[str, Any] = {
                "topic": pa.array([TOPICS.decisions] * rows, pa.string()),
                "partition": pa.array(np.full(rows, p, dtype=np.int32)),
                "offset": pa.array(offs),
                "kafka_timestamp": pa.array(ms[pick], pa.timestamp("ms", tz="UTC")),
                "key": pa.array([request_ids[i] for i in pick], pa.string()),
                "event_type": pa.array(["DecisionRecorded"] * rows, pa.string()),
                "record": pa.array([template] * rows, pa.binary()),
                "event_id": pa.array([ids[i] for i in pick], pa.string()),
                "occurred_at": pa.array(epoch_us + t[pick], pa.timestamp("us", tz="UTC")),
                "actor": pa.array(["service:evaluator"] * rows, pa.string()),
                "request_id": pa.array([request_ids[i] for i in pick], pa.string()),
                "requested_at": pa.array(epoch_us + t[pick] - 800, pa.timestamp("us", tz="UTC")),
                "action": pa.array(
                    [ACTIONS[int(i) % len(ACTIONS)] for i in policy_idx[pick]], pa.string()
                ),
                "principal": pa.array(
                    [f"agent:bot-{i % 50}" for i in n[pick].tolist()], pa.string()
                ),
                "resource": pa.array(
                    [f"account:{i % 100_000}" for i in n[pick].tolist()], pa.string()
                ),
                "determination": pa.array(
                    [ANSWERS[a] for a in answers[pick].tolist()], pa.string()
                ),
                "constraints": pa.array(["{}"] * rows, pa.json_()),
                "reasons": pa.array(["[]"] * rows, pa.json_()),
                "reason_code": pa.array(["rule_matched"] * rows, pa.string()),
                "policy": pa.array(policy_col[pick], pa.string()),
                "policy_version": pa.array(version_col[pick]),
                "stage": pa.array(["active"] * rows, pa.string()),
                "rule": pa.array([RULES[a] for a in answers[pick].tolist()], pa.string()),
                "facts": pa.array([FACTS[a] for a in answers[pick].tolist()], pa.json_()),
                "context": pa.array(["{}"] * rows, pa.json_()),
                "shadow_results": pa.array(["[]"] * rows, pa.json_()),
                "mode": pa.array(["sync"] * rows, pa.string()),
                "latency_us": pa.array(np.full(rows, 310, dtype=np.int64)),
                "governance_position": pa.array(
                    ['{"ledger.policy-events/0":1}'] * rows, pa.json_()
                ),
            }
            arrays = [columns.get(f.name, pa.nulls(rows, f.type)) for f in schema]
            table = pa.Table.from_arrays(arrays, schema=schema)
            date = (T0 + timedelta(days=day)).strftime("%Y-%m-%d")
            relative = (
                f"topic={TOPICS.decisions}/date={date}/{TOPICS.decisions}+{p}+{first}.parquet"
            )
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out / relative, compression="zstd", row_group_size=ROW_GROUP_ROWS)
            manifest.files.append(
                {
                    "path": relative,
                    "topic": TOPICS.decisions,
                    "partition": p,
                    "date": date,
                    "first_offset": first,
                    "last_offset": offsets[p] - 1,
                    "rows": rows,
                }
            )
        print(f"  · day {day + 1}/{DAYS}: {n0:,} decisions", file=sys.stderr, flush=True)
    manifest.offsets[TOPICS.decisions] = dict(enumerate(offsets))
    return manifest


def generate(out: Path, total: int, policies: int) -> None:
    written, active = governance(policies)
    writer = write_events(out, TOPICS, written)  # governance through the exporter's writer
    template = default_codec().encode(_template_decision())
    manifest = write_decisions(out, total, active, template)
    # One manifest for both: the writer's (governance) plus the generated decision files.
    merged = writer.manifest
    merged.files.extend(manifest.files)
    merged.offsets.update(manifest.offsets)
    (out / MANIFEST).write_text(json.dumps(merged.to_json()))


def _template_decision() -> DecisionRecorded:
    return DecisionRecorded(
        event_id="0190a3b4-7000-8000-8000-000000000001",
        occurred_at=T0,
        actor="service:evaluator",
        request_id="req-000000000001",
        requested_at=T0,
        action="refund.issue",
        principal="agent:bot-1",
        resource="account:1",
        determination=Determination.ALLOW,
        reason_code="rule_matched",
        policy="policy000",
        policy_version=1,
        stage=Stage.ACTIVE,
        rule="auto-refund",
        facts={"amount": "120.50", "prior_refunds_12m": 0, "standing": "good", "tenure_days": 400},
        shadow_results=(
            ShadowResult(
                policy="policy000", version=2, stage=Stage.SHADOW, determination=Determination.DENY
            ),
        ),
        governance_position={"ledger.policy-events/0": 1},
    )


# --------------------------------------------------------------------------- timing


def timed(run: Callable[[], Any], repeat: int) -> float:
    run()  # warm-up: parquet metadata, the views' plans
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def queries(out: Path, total: int, repeat: int) -> None:
    con = connect(out)
    try:
        (count,) = con.execute("SELECT count(*) FROM decisions").fetchone() or (0,)
        print(f"decisions in the export: {count:,}")
        start, end = T0 + timedelta(days=3), T0 + timedelta(days=6)
        aggregate = timed(
            lambda: con.execute(
                "SELECT determination, count(*) FROM decisions WHERE action = 'refund.issue' "
                "AND decided_at >= ? AND decided_at < ? GROUP BY 1",
                [start, end],
            ).fetchall(),
            repeat,
        )
        join = timed(
            lambda: con.execute(
                "SELECT t.policy, t.version, count(*) FROM decisions d JOIN policy_timeline t "
                "ON t.policy = d.policy AND t.version = d.policy_version "
                "AND t.stage = d.policy_stage AND d.decided_at >= t.valid_from "
                "AND (t.valid_to IS NULL OR d.decided_at < t.valid_to) GROUP BY ALL"
            ).fetchall(),
            repeat,
        )
        matched = con.execute(
            "SELECT count(*) FROM decisions d JOIN policy_timeline t ON t.policy = d.policy "
            "AND t.version = d.policy_version AND t.stage = d.policy_stage "
            "AND d.decided_at >= t.valid_from AND (t.valid_to IS NULL OR d.decided_at < t.valid_to)"
        ).fetchone()
        (some_id,) = con.execute(
            f"SELECT decision_id FROM decisions LIMIT 1 OFFSET {count // 2}"
        ).fetchone() or ("",)
        by_id = timed(
            lambda: con.execute(
                "SELECT * FROM decisions WHERE decision_id = ?", [some_id]
            ).fetchall(),
            repeat,
        )
        mid = T0 + timedelta(days=DAYS / 2)
        at = timed(lambda: run_named_typed(con, "active_policies_at", {"at": mid}), repeat)
    finally:
        con.close()
    print(f"decisions matched to their version's interval: {matched[0] if matched else 0:,}")
    print(
        f"filtered aggregate (3 days, one action)  {aggregate * 1000:9.1f} ms  target ≤ 1000 ms  ratio {ratio(aggregate, 1.0)}"
    )
    print(
        f"decision-by-version join                 {join * 1000:9.1f} ms  target ≤ 5000 ms  ratio {ratio(join, 5.0)}"
    )
    print(
        f"decision by id                           {by_id * 1000:9.1f} ms  target ≤  100 ms  ratio {ratio(by_id, 0.1)}"
    )
    print(
        f"active_policies_at                       {at * 1000:9.1f} ms  target ≤  100 ms  ratio {ratio(at, 0.1)}"
    )


def verify_rate(records: int) -> None:
    """``audit verify`` over an export of ``records`` real chained decisions (each its own
    encoding, stamped by the core's ``link`` as an evaluator does, in two chains), written by
    the exporter's writer: the generated 10 M rows above share one template record and carry no
    chain, so verifying them would measure a path real exports never take."""
    from ledger.audit.export import ExportWriter
    from ledger.audit.verify import verify_export
    from ledger.core.chain import ChainHead, link

    out = Path(tempfile.mkdtemp(prefix="ledger-bench-verify-"))
    try:
        started = time.perf_counter()
        writer = ExportWriter(out, TOPICS)
        # The governance records the decisions cite (audit verify finds any it lacks).
        for offset, (topic, event) in enumerate(governance(1)[0][:2]):
            writer.add_event(topic, 0, offset, event)
        template = _template_decision()
        heads = [ChainHead(f"evaluator-{k}") for k in range(2)]
        offsets = [0] * PARTITIONS
        for i in range(records):
            at = T0 + timedelta(microseconds=i * 1_000)
            request_id = (
                f"{(i >> 16) & 0xFFFFFFFF:08x}-{i & 0xFFFF:04x}-7000-8000-{i:012x}"  # UUIDv7-shaped
            )
            k = i % 2
            decision, heads[k] = link(
                dataclasses.replace(
                    template,
                    event_id=decision_id(request_id),
                    request_id=request_id,
                    occurred_at=at,
                    requested_at=at,
                    resource=f"account:{i % 100_000}",
                ),
                heads[k],
            )
            p = i % PARTITIONS
            writer.add_event(TOPICS.decisions, p, offsets[p], decision, key=request_id.encode())
            offsets[p] += 1
            if writer.buffered >= 50_000:
                writer.flush()
        writer.flush()
        writer.close()
        made = time.perf_counter() - started
        report = verify_export(out, workers=None)
        if report.problem_count:
            raise SystemExit(f"verify found {report.problem_count} problem(s) in a clean export")
        rate = report.records / report.seconds
        print(
            f"audit verify throughput                  {rate:9,.0f} records/s over {report.records:,} "
            f"chained decisions in {len(report.chains)} chains (export written in {made:.1f} s; no target)"
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


def export_throughput(args: argparse.Namespace) -> None:
    records = args.export_records
    with bench_stack(
        bootstrap=args.bootstrap,
        processors=(),
        partitions=args.partitions,
        keep_home=args.keep_home,
        insecure=args.insecure,
    ) as stack:
        codec = default_codec()
        template = _template_decision()
        producer = make_producer(
            stack.bootstrap,
            security=stack.security("evaluator"),  # the decisions' one writer
            linger_ms=50,
            batch_size=1024 * 1024,
        )
        started = time.perf_counter()

        for i in range(records):
            decision = dataclasses.replace(
                template,
                event_id=f"dec-{i:012d}",
                request_id=f"req-{i:012d}",
                occurred_at=T0 + timedelta(microseconds=i),
            )
            producer.send(
                stack.topics.decisions, codec.encode(decision), key=decision.request_id.encode()
            )
        producer.flush(timeout=300)
        producer.close()
        print(
            f"produced {records:,} decision records in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        floor = bare_consume(stack, records)
        out = Path(tempfile.mkdtemp(prefix="ledger-bench-export-"))
        try:
            env = {
                **os.environ,
                "LEDGER_BOOTSTRAP": stack.bootstrap,
                "LEDGER_TOPIC_PREFIX": stack.topics.prefix,
                "LEDGER_CREDENTIALS": str(stack.settings.credentials),  # the exporter's
            }
            ledger = str(Path(sys.executable).parent / "ledger")
            done = subprocess.run(
                [ledger, "export", "--out", str(out), "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr)
            summary = json.loads(done.stdout)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    rate = summary["total_records"] / summary["duration_s"]
    print(
        f"export from Kafka: {summary['total_records']:,} records in {summary['duration_s']:.1f} s = {rate:,.0f} records/s  target ≥ 50,000  ratio {rate / 50_000:.2f}"
    )
    print(
        f"floor (bare librdkafka consume, no decoding, same broker and run): {floor:,.0f} records/s  "
        f"ratio to target {floor / 50_000:.2f}; export / floor {rate / floor:.2f}"
    )


def bare_consume(stack: Any, records: int) -> float:
    """Records/s of a bare librdkafka read of the decisions topic (every record's value touched,
    nothing decoded), with the exporter's consumer settings and credential: the floor under
    ``ledger export``, measured the way the export measures itself (consumer set-up included)."""
    from confluent_kafka import KafkaError, TopicPartition

    from ledger.audit.export import RDKAFKA_CONFIG
    from ledger.kafka.clients import make_rdkafka_consumer
    from ledger.kafka.reading import rdkafka_partitions

    topic = stack.topics.decisions
    started = time.perf_counter()
    consumer = make_rdkafka_consumer(
        stack.bootstrap,
        security=stack.security("exporter"),
        **RDKAFKA_CONFIG,
        **{"group.id": stack.topics.group("ledger-exporter.bench")},
    )
    try:
        parts = [
            TopicPartition(topic, p, 0)
            for p in rdkafka_partitions(consumer, topic, bootstrap=stack.bootstrap)
        ]
        left = {tp.partition for tp in parts}
        consumer.assign(parts)
        seen = size = 0
        while left:
            # librdkafka returns when it has as many messages as asked or the wait is over:
            # ask for no more than are left (the records and an end event per partition).
            want = max(1, min(10_000, records - seen + len(left)))
            for message in consumer.consume(num_messages=want, timeout=1.0):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        left.discard(message.partition())
                    continue
                size += len(message.value())  # the bytes reach Python, as for the export
                seen += 1
    finally:
        consumer.close()
    if seen != records:
        raise RuntimeError(f"the bare read saw {seen:,} records, not {records:,}")
    return records / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.audit", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--decisions",
        type=int,
        default=10_000_000,
        help="decisions in the generated export (default 10,000,000)",
    )
    parser.add_argument(
        "--policies", type=int, default=40, help="policies in the governance history (default 40)"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed runs per query (median; default 5)"
    )
    parser.add_argument(
        "--export-records",
        type=int,
        default=200_000,
        help="records produced for the export throughput run (default 200,000)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        help="write (or reuse, if it holds an export) the generated export here and keep it",
    )
    parser.add_argument(
        "--skip-queries", action="store_true", help="only the export throughput run"
    )
    parser.add_argument(
        "--verify-records",
        type=int,
        default=200_000,
        help="chained decisions in the export `audit verify` is timed over (default 200,000)",
    )
    parser.add_argument("--skip-export", action="store_true", help="only the DuckDB part")
    add_stack_arguments(parser)
    args = parser.parse_args(argv)
    if not args.skip_queries:
        out = args.dir or Path(tempfile.mkdtemp(prefix="ledger-bench-audit-"))
        try:
            if not (out / MANIFEST).exists():
                out.mkdir(parents=True, exist_ok=True)
                started, cpu = time.perf_counter(), time.process_time()
                generate(out, args.decisions, args.policies)
                size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
                print(
                    f"generated {args.decisions:,} decisions + governance in {time.perf_counter() - started:.1f} s "
                    f"(CPU {time.process_time() - cpu:.1f} s), {size / 1e6:,.0f} MB of Parquet, written straight in the export format"
                )
            queries(out, args.decisions, args.repeat)
            verify_rate(args.verify_records)
        finally:
            if args.dir is None:
                shutil.rmtree(out, ignore_errors=True)
    if not args.skip_export:
        export_throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
