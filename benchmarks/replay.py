"""Replay to a point in time: ``python -m benchmarks.replay`` (DESIGN §11, replay row).

Generates a governance history in memory (no broker): ``--policies`` policies going through
proposals, approvals, shadow/canary/active promotions, rollbacks and the odd retirement, and
``--principals`` principals and roles receiving grants (some with CEL conditions and validity
windows), revocations, role assignments and role revocations; about 1 % of records are
re-deliveries (duplicates the fold must ignore). Each record carries a ``topic/partition`` and
offset like the real log, and ``occurred_at`` increases by one second per record. With
``--signed``, the same history's records each carry their command's proof, as a ledger of
signed commands has them (key id, 64-byte signature, the signed command's text: about 660
bytes a record instead of 150).

It then times, on the same history:

* ``state_at(history)``: the replay adapter to the end of the log (positions included);
* ``state_at(history, mid)``: to the instant half-way through the log;
* ``core.replay(events)``: the pure core alone, to the end;
* the same, then reading every principal's record and grants: a replay keeps rebuilt principals
  as drafts and issued grants as their events, built on first read (``HeldPrincipals``,
  ``HeldGrants``), so this shows what a question that reads all of them adds (most read one
  principal's).

* the floor: the least any fold of these events into per-aggregate state does, on the same
  events (:func:`_floor`: each event's aggregate looked up, an issued grant kept by its id, a
  revoked one dropped, any other event kept as its aggregate's latest), so a figure can be read
  against what the machine does that hour, as a ratio to it;

* a processor's start: its governance follower decoding each record's Avro and folding the
  records in chunks, as it does while catching up (:func:`_catch_up_timed`);

* with ``--kafka``, the same start through a real broker (:func:`_through_kafka`): the history
  written to the governance topics of a private broker (or ``--bootstrap``'s), then an
  evaluator's follower timed from its start to caught up, beside the floor of the same run:
  a bare librdkafka consumer reading the same records, nothing decoded; then an evaluator's first
  start again, timed to ready, its governance snapshot written after that (timed apart), and a
  start from that snapshot; then the same two starts of a command processor's follower, whose
  snapshot also holds which events each command appended
  (:class:`~processors.command_handler.AppliedCommands`);

and prints events/s and each figure's ratio to the 3 s target (< 1 meets it), with the CPU time
beside the wall time (on a shared machine the wall time includes waiting for a core). The figure counts
every record the replay walks, including those after ``mid`` that it filters out. Conditions come
from a small pool and documents from a pool of distinct texts (each compiled once per process,
as in a real replay that sees a text once per version). Each figure includes the cyclic
collector's first pass over the objects the replay built: the replay runs with the collector
paused, and that pass falls on whatever allocates next.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import tempfile
import time
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ledger.core.events import (
    GovernanceEvent,
    GrantIssued,
    GrantRevoked,
    PolicyRetired,
    PolicyRolledBack,
    PolicyVersionApproved,
    PolicyVersionPromoted,
    PolicyVersionProposed,
    RoleAssigned,
    RoleRevoked,
    Stage,
)
from ledger.core.history import HistoryEntry, state_at
from ledger.core.state import LedgerState, replay
from ledger.kafka.reading import position_key

TARGET_S = 3.0
T0 = datetime(2024, 1, 1, tzinfo=UTC)
REFUND = (
    Path(__file__).resolve().parent.parent / "examples" / "policies" / "refund.yaml"
).read_text()
CONDITIONS = (
    "amount < 500",
    "amount < 1000 && standing == 'good'",
    "tenure_days > 90",
    "region in ['eu', 'us']",
)
ACTIONS = (("refund.*",), ("ticket.*", "email.send"), ("payout.create",), ("report.read",))
PARTITIONS = 3


def _partition(aggregate: str) -> int:
    return int.from_bytes(hashlib.blake2b(aggregate.encode(), digest_size=2).digest()) % PARTITIONS


_PROOF_FIELDS = frozenset({"command_key_id", "command_signature", "signed_command", "sequence"})


def _with_proof(event: GovernanceEvent, rnd: random.Random) -> GovernanceEvent:
    """``event`` carrying its command's proof as the command processor records it: a key id, a
    64-byte signature and the signed command's canonical text (here the event's own fields as
    the command had them: the same size, not a signature that verifies)."""
    body = {f.name: getattr(event, f.name) for f in fields(event) if f.name not in _PROOF_FIELDS}
    text = json.dumps(
        {"command": body, "domain": "decision-ledger/command", "type": type(event).__name__},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return replace(
        event,  # type: ignore[type-var]
        command_key_id="ed25519:" + hashlib.sha256(event.actor.encode()).hexdigest()[:32],
        command_signature=rnd.randbytes(64),
        signed_command=text,
    )


def generate(
    n: int,
    *,
    policies: int = 300,
    principals: int = 50_000,
    roles: int = 200,
    seed: int = 7,
    signed: bool = False,
) -> list[HistoryEntry]:
    """A deterministic governance history of ``n`` records (see the module docstring); with
    ``signed``, every record carries its command's proof (:func:`_with_proof`), as every record
    the command processor appends for a signed command does."""
    rnd, proofs = random.Random(seed), random.Random(seed + 1)
    docs = [REFUND.replace("750", str(600 + k)) for k in range(64)]
    hashes = [hashlib.sha256(d.encode()).hexdigest() for d in docs]
    seq: dict[str, int] = {}
    pol_versions: dict[str, int] = {}
    pol_approved: dict[str, set[int]] = {}
    pol_active: dict[str, int | None] = {}
    held: dict[str, list[str]] = {}  # principal -> live grant ids
    role_of: dict[str, set[str]] = {}
    offsets: dict[str, int] = {}
    out: list[HistoryEntry] = []
    gid = 0
    role_names = [f"role:r{i}" for i in range(roles)]
    people = [
        f"{('agent', 'human', 'tool', 'service')[i % 4]}:p{i}" for i in range(principals)
    ] + role_names

    def emit(topic: str, aggregate: str, event: GovernanceEvent) -> None:
        if signed and aggregate != "dup":  # (signatures from their own generator: the
            event = _with_proof(event, proofs)  # history is the same, signed or not)
        key = position_key(topic, _partition(aggregate))  # shared, as the readers share them
        offsets[key] = offsets.get(key, -1) + 1
        out.append(HistoryEntry(key, offsets[key], event))

    def nxt(aggregate: str) -> int:
        seq[aggregate] = seq.get(aggregate, 0) + 1
        return seq[aggregate]

    while len(out) < n:
        i = len(out)
        at = T0 + timedelta(seconds=i)
        common = {"event_id": f"e{i}", "occurred_at": at, "command_id": f"c{i}"}
        if out and rnd.random() < 0.01:  # a re-delivery of a recent record
            old = out[rnd.randrange(max(0, i - 1000), i)]
            emit(old.position_key.rsplit("/", 1)[0], "dup", old.event)
            continue
        if rnd.random() < 0.15:
            name = f"policy-{rnd.randrange(policies)}"
            latest = pol_versions.get(name, 0)
            approved = pol_approved.setdefault(name, set())
            r = rnd.random()
            pev: GovernanceEvent
            if latest == 0 or r < 0.3:
                v = latest + 1
                k = rnd.randrange(len(docs))
                pev = PolicyVersionProposed(
                    **common,
                    actor="human:author",
                    policy=name,
                    sequence=nxt(name),
                    version=v,
                    document=docs[k],
                    content_hash=hashes[k],
                    owner="team:risk",
                    governs=(f"{name}.*",),
                )
                pol_versions[name] = v
            elif r < 0.55 and latest not in approved:
                pev = PolicyVersionApproved(
                    **common,
                    actor="human:approver",
                    policy=name,
                    sequence=nxt(name),
                    version=latest,
                )
                approved.add(latest)
            elif r < 0.9 and approved:
                v = max(approved)
                stage = rnd.choice((Stage.ACTIVE, Stage.ACTIVE, Stage.CANARY, Stage.SHADOW))
                pev = PolicyVersionPromoted(
                    **common,
                    actor="human:approver",
                    policy=name,
                    sequence=nxt(name),
                    version=v,
                    stage=stage,
                    percent=10 if stage is Stage.CANARY else None,
                    previous_version=pol_active.get(name),
                )
                if stage is Stage.ACTIVE:
                    pol_active[name] = v
            elif r < 0.99 and len(approved) > 1:
                to = rnd.choice(sorted(approved))
                pev = PolicyRolledBack(
                    **common,
                    actor="human:oncall",
                    policy=name,
                    sequence=nxt(name),
                    from_version=pol_active.get(name),
                    to_version=to,
                    reason="bad canary",
                )
                pol_active[name] = to
            else:
                pev = PolicyRetired(
                    **common,
                    actor="human:admin",
                    policy=name,
                    sequence=nxt(name),
                    reason="unused",
                )
                pol_active[name] = None
            emit("ledger.policy-events", name, pev)
            continue
        # A few busy principals (and the roles) get most of the traffic; the rest a little each.
        who = people[-rnd.randrange(roles) - 1] if rnd.random() < 0.2 else rnd.choice(people)
        live = held.setdefault(who, [])
        memberships = role_of.setdefault(who, set())
        r = rnd.random()
        gev: GovernanceEvent
        if r < 0.55 or not live:
            gid += 1
            conditional = rnd.random() < 0.05
            gev = GrantIssued(
                **common,
                actor="human:admin",
                principal=who,
                sequence=nxt(who),
                grant_id=f"g{gid:08d}",
                actions=rnd.choice(ACTIONS),
                resource=rnd.choice(("account:*", "*", "ticket:*")),
                condition=rnd.choice(CONDITIONS) if conditional else None,
                valid_until=at + timedelta(days=90) if rnd.random() < 0.2 else None,
            )
            live.append(gev.grant_id)
        elif r < 0.75:
            gev = GrantRevoked(
                **common,
                actor="human:admin",
                principal=who,
                sequence=nxt(who),
                grant_id=live.pop(rnd.randrange(len(live))),
            )
        elif r < 0.9 or not memberships or who.startswith("role:"):
            role = rnd.choice(role_names)
            gev = RoleAssigned(
                **common, actor="human:admin", principal=who, sequence=nxt(who), role=role
            )
            memberships.add(role)
        else:
            role = rnd.choice(sorted(memberships))
            gev = RoleRevoked(
                **common, actor="human:admin", principal=who, sequence=nxt(who), role=role
            )
            memberships.discard(role)
        emit("ledger.grant-events", who, gev)
    return out


def _timed(label: str, n: int, fn: object) -> float:
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    state = fn()  # type: ignore[operator]
    # The replay pauses the collector; its first pass over what the replay built (a few hundred
    # thousand young objects, 0.2-0.3 s here) falls on whatever allocates next: the replay's cost.
    gc.collect(0)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    grants = sum(len(r.grants) for r in state.principals.values())
    print(
        f"{label:<34} {elapsed:7.2f} s  {n / elapsed:>10,.0f} events/s  "
        f"ratio to {TARGET_S:.0f} s target: {elapsed / TARGET_S:.2f}  (cpu {cpu:.2f} s)  "
        f"({len(state.policies)} policies, {len(state.principals)} principals, {grants} grants)",
        flush=True,
    )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--policies", type=int, default=300)
    parser.add_argument("--principals", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1, help="Time each figure this many times.")
    parser.add_argument("--adapter-only", action="store_true", help="Skip the core-only figure.")
    parser.add_argument(
        "--signed",
        action="store_true",
        help="Every record carries its command's proof (key id, signature, signed text), as a "
        "ledger of signed commands has: records about four times larger.",
    )
    parser.add_argument(
        "--kafka",
        action="store_true",
        help="Also time a processor catching up through a real broker (starts a private one).",
    )
    parser.add_argument(
        "--bootstrap", help="With --kafka: use this running broker (topics get a unique prefix)."
    )
    args = parser.parse_args()
    if args.bootstrap and not args.kafka:
        parser.error("--bootstrap goes with --kafka")

    start = time.perf_counter()
    history = generate(
        args.events, policies=args.policies, principals=args.principals, signed=args.signed
    )
    events = [h.event for h in history]
    mid = history[len(history) // 2].event.occurred_at
    print(
        f"generated {len(history):,} governance records in {time.perf_counter() - start:.1f} s "
        f"({sum(isinstance(e, GrantIssued) for e in events):,} grants issued, "
        f"{sum(isinstance(e, PolicyVersionProposed) for e in events):,} versions proposed)",
        flush=True,
    )
    n = len(history)
    for _ in range(args.repeat):
        _timed("state_at(history) to the end", n, lambda: state_at(history))
        _timed("state_at(history, mid-point)", n, lambda: state_at(history, mid))
        if not args.adapter_only:
            core = _timed("core replay(events) to the end", n, lambda: replay(events))
            _read_everything(replay(events))
            floor = _floor_timed(events)
            print(f"  the core's fold to the end is {core / floor:.2f}x the floor", flush=True)
    if not args.adapter_only:
        _catch_up_timed(history)
    if args.kafka:
        _through_kafka(history, args.bootstrap)


def _catch_up_timed(history: list[HistoryEntry]) -> None:
    """Time a processor's start: its governance follower decoding every record and folding
    them as it does while catching up (decoded in chunks of ``CATCH_UP_CHUNK``, each fetched
    list under its partition's position key, and fed to one replay), from the records' Avro
    bytes, compiling deployed versions as an evaluator's does. Not counted: encoding them, and
    the broker (fetching). The collector is paused throughout, as the follower pauses it."""
    from confluent_kafka import Message

    from ledger.codec import default_codec
    from ledger.kafka.governance import CATCH_UP_CHUNK, GovernanceFollower
    from ledger.settings import TopicNames

    codec = default_codec()
    chunks: list[list[tuple[str, list[object]]]] = []
    for start in range(0, len(history), CATCH_UP_CHUNK):
        by_key: dict[str, list[object]] = {}
        for entry in history[start : start + CATCH_UP_CHUNK]:
            record = Message(
                topic=entry.position_key,
                partition=0,
                offset=entry.offset,
                value=codec.encode(entry.event),
            )
            by_key.setdefault(entry.position_key, []).append(record)
        chunks.append(list(by_key.items()))
    gc.collect()
    gc.freeze()  # the records stand for fetched ones, which a follower does not keep
    try:
        follower = GovernanceFollower(
            bootstrap="127.0.0.1:1", topics=TopicNames(), codec=codec, compile_deployed=True
        )
        start, cpu = time.perf_counter(), time.process_time()
        gc.disable()  # as the follower's run loop does until caught up
        try:
            for i, fetched in enumerate(chunks, 1):
                follower.apply_fetched(fetched, more=i < len(chunks))  # type: ignore[arg-type]
        finally:
            gc.enable()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        # Everything else is frozen already: a full collection now scans the follower's state,
        # as each one would in a process that did not freeze it (a processor's follower does).
        tracked = len(gc.get_objects())
        pause = _full_collection_s()
        gc.freeze()
        frozen_pause = _full_collection_s()
    finally:
        gc.unfreeze()
    print(
        f"{'a processor catching up (follower)':<34} {elapsed:7.2f} s  "
        f"{follower.applied / elapsed:>10,.0f} events/s  ratio to {TARGET_S:.0f} s target: "
        f"{elapsed / TARGET_S:.2f}  (cpu {cpu:.2f} s; decoding each record's Avro, "
        f"{CATCH_UP_CHUNK:,} at a time, folded in one pass)",
        flush=True,
    )
    print(
        f"  then a full garbage collection    {pause * 1000:7.1f} ms  over {tracked:,} objects "
        f"of its state (a pause of the request thread); with them frozen, as a processor "
        f"does once caught up: {frozen_pause * 1000:.1f} ms",
        flush=True,
    )


def _through_kafka(history: list[HistoryEntry], bootstrap: str | None) -> None:
    """Time a processor's start through a broker: the history is written to the governance
    topics (one partition each, as ``ledger topics create`` makes them), then an evaluator's
    follower (compiling deployed versions, freezing its state once caught up) is timed from its
    start to ``ready``. The floor, in the same run: a bare librdkafka consumer reading the same
    records to the end, nothing decoded."""
    import asyncio

    from benchmarks.harness import bench_stack, cpu_seconds
    from ledger.codec import default_codec
    from ledger.core.lifecycle import event_stream
    from ledger.core.state import aggregate_of
    from ledger.kafka.clients import make_rdkafka_producer
    from ledger.kafka.governance import GovernanceFollower
    from processors.command_handler import AppliedCommands

    codec = default_codec()
    with bench_stack(bootstrap=bootstrap, processors=()) as stack:
        topics = stack.topics
        producer = make_rdkafka_producer(
            stack.bootstrap,
            security=stack.security("admin"),
            **{"linger.ms": 20, "queue.buffering.max.messages": 1_000_000},
        )
        start = time.perf_counter()
        for entry in history:
            event = entry.event
            topic = topics.grant_events if event_stream(event) == "grant" else topics.policy_events
            value, key = codec.encode(event), aggregate_of(event).encode()
            while True:
                try:
                    producer.produce(topic, value, key, partition=0)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.05)
        if producer.flush(300):
            raise RuntimeError("the history could not be written to the broker")
        print(
            f"wrote the {len(history):,} records to {stack.bootstrap} in "
            f"{time.perf_counter() - start:.1f} s",
            flush=True,
        )
        security = stack.security("evaluator")
        broker = stack.pids().get("broker")

        def timed(run: object) -> tuple[float, float, float | None]:
            gc.collect()
            before = cpu_seconds(broker) if broker else None
            wall, cpu = time.perf_counter(), time.process_time()
            asyncio.run(run())  # type: ignore[operator]
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            return wall, cpu, (None if before is None else cpu_seconds(broker) - before)

        async def bare_read() -> None:
            from confluent_kafka import OFFSET_BEGINNING, TopicPartition

            from ledger.kafka.clients import make_rdkafka_consumer
            from ledger.kafka.reading import rdkafka_end_offset

            # As the follower reads: librdkafka, each fetch on a worker thread taking what has
            # arrived (consume() with a timeout waits for all it asks for), else one record.
            consumer = make_rdkafka_consumer(stack.bootstrap, security=security)
            try:
                parts = [(t, 0) for t in (topics.policy_events, topics.grant_events)]
                end = {tp: rdkafka_end_offset(consumer, TopicPartition(*tp)) for tp in parts}
                consumer.assign([TopicPartition(*tp, OFFSET_BEGINNING) for tp in parts])
                left = sum(end.values())
                while left > 0:
                    messages = await asyncio.to_thread(consumer.consume, 5000, 0)
                    if not messages:
                        messages = await asyncio.to_thread(consumer.consume, 1, 0.2)
                    left -= sum(1 for m in messages if m.error() is None)
            finally:
                consumer.close()

        folded: list[tuple[int, int]] = []  # (applied, from_snapshot) of each start
        phases: list[tuple[float, float]] = []  # each start's seconds to ready, then writing
        states: list[tuple[dict[str, int], int, int]] = []  # positions, policies, principals

        def catch_up(snapshot: Path | None = None, commands: bool = False) -> object:
            async def run() -> None:
                follower = GovernanceFollower(
                    bootstrap=stack.bootstrap,
                    topics=topics,
                    codec=codec,
                    security=security,
                    compile_deployed=not commands,  # (the command processor compiles nothing)
                    freeze_when_caught_up=True,
                    snapshot=snapshot,
                    snapshot_after=1,
                    memory=AppliedCommands() if commands else None,
                )
                began = time.perf_counter()
                task = asyncio.create_task(follower.run())
                try:
                    await follower.ready.wait()
                    ready_at = time.perf_counter()
                    # Written on a thread of its own once ready: timed to its end apart.
                    await asyncio.to_thread(follower.wait_for_snapshot)
                    phases.append((ready_at - began, time.perf_counter() - ready_at))
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                state = follower.state
                folded.append((follower.applied, follower.from_snapshot))
                states.append((dict(state.position), len(state.policies), len(state.principals)))

            return run

        def start(
            snapshot: Path | None = None, commands: bool = False
        ) -> tuple[float, float, float | None]:
            """Seconds to ready, CPU seconds and the broker's (the start's, writing included)."""
            try:
                _, cpu, on_broker = timed(catch_up(snapshot, commands))
                return phases[-1][0], cpu, on_broker
            finally:
                gc.unfreeze()  # what the follower froze, so this process can free it

        floor = timed(bare_read)
        follow = start()
        with tempfile.TemporaryDirectory(prefix="ledger-bench-") as scratch:
            # An evaluator's first start writes its snapshot; the next starts from it. The same
            # for a command processor, whose snapshot holds its memory of the commands too.
            path = Path(scratch) / "governance.snapshot"
            writing = start(path)
            written = phases[-1][1]
            resuming = start(path)
            size = path.stat().st_size
            path.unlink()
            cp_writing = start(path, commands=True)
            cp_written = phases[-1][1]
            cp_resuming = start(path, commands=True)
            cp_size = path.stat().st_size
        for label, (wall, cpu, on_broker) in (
            ("floor: librdkafka reading them all", floor),
            ("a processor catching up via Kafka", follow),
            ("  the same, snapshot written after", writing),
            ("a processor starting from it", resuming),
            ("a command processor, then one", cp_writing),
            ("a command processor from it", cp_resuming),
        ):
            extra = f", broker {on_broker:.2f} s" if on_broker is not None else ""
            print(
                f"{label:<34} {wall:7.2f} s  {len(history) / wall:>10,.0f} records/s  "
                f"ratio to {TARGET_S:.0f} s target: {wall / TARGET_S:.2f}  (cpu {cpu:.2f} s{extra})",
                flush=True,
            )
        n = len(history)
        if folded != [(n, 0), (n, 0), (0, n), (n, 0), (0, n)]:
            raise RuntimeError(
                f"the followers folded (records, from a snapshot) {folded}, not {n:,}"
            )
        if not states[0] == states[1] == states[2] == states[3] == states[4]:
            raise RuntimeError(f"the start from the snapshot has another state: {states}")
        print(f"  the catch-up is {follow[0] / floor[0]:.2f}x the floor", flush=True)
        print(
            f"  the snapshot: {size / 1e6:.1f} MB, written in {written:.2f} s after the start "
            f"was ready; a start from it is {resuming[0] / floor[0]:.2f}x the floor",
            flush=True,
        )
        print(
            f"  the command processor's: {cp_size / 1e6:.1f} MB, written in {cp_written:.2f} s "
            f"after; a start from it is {cp_resuming[0] / floor[0]:.2f}x the floor",
            flush=True,
        )


def _full_collection_s() -> float:
    start = time.perf_counter()
    gc.collect()
    return time.perf_counter() - start


def _floor(events: list[GovernanceEvent]) -> int:
    """The least a fold of ``events`` into per-aggregate state can do: look each event's
    aggregate up once and keep it (an issued grant by its id, dropped when revoked; any other
    event as its aggregate's latest). No sequence checks, no rules, nothing frozen."""
    held: dict[str, dict[str, GovernanceEvent]] = {}
    for event in events:
        kind = type(event)
        if kind is GrantIssued:
            grants = held.get(event.principal)  # type: ignore[attr-defined]
            if grants is None:
                grants = held[event.principal] = {}  # type: ignore[attr-defined]
            grants[event.grant_id] = event  # type: ignore[attr-defined]
        elif kind is GrantRevoked:
            grants = held.get(event.principal)  # type: ignore[attr-defined]
            if grants is not None:
                grants.pop(event.grant_id, None)  # type: ignore[attr-defined]
        else:
            aggregate = getattr(event, "principal", None) or event.policy  # type: ignore[attr-defined]
            latest = held.get(aggregate)
            if latest is None:
                latest = held[aggregate] = {}
            latest[""] = event
    return len(held)


def _floor_timed(events: list[GovernanceEvent]) -> float:
    gc.collect()
    start = time.perf_counter()
    gc.disable()  # as the replay runs
    try:
        kept = _floor(events)
    finally:
        gc.enable()
    gc.collect(0)
    elapsed = time.perf_counter() - start
    print(
        f"floor: the least fold (see _floor)   {elapsed:7.2f} s  {len(events) / elapsed:>10,.0f} "
        f"events/s  ({kept} aggregates)",
        flush=True,
    )
    return elapsed


def _read_everything(state: LedgerState) -> None:
    """Time reading every principal's record and grants once: the replay keeps each rebuilt
    principal as its draft and each issued grant as its event, and builds them when first read
    (``HeldPrincipals``, ``HeldGrants``), so this is what a question that reads all of them adds
    to the replay. Timed with the collector paused, as ``timeit`` times (and as the
    replay itself runs): its scans of this benchmark's million-event history in memory would
    otherwise dominate."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        grants = sum(1 for record in state.principals.values() for _ in record.grants.values())
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    print(
        f"  then reading everything once     {elapsed:7.2f} s  "
        f"({len(state.principals)} principals' records and {grants} grants built)",
        flush=True,
    )


if __name__ == "__main__":
    main()
