"""A follower starting from its governance snapshot, on the real broker: it folds only the
records after the snapshot, into the state a full replay gives; and a snapshot the log does not
vouch for (another history at the same offsets, a log that ends before it, another topic) is not
used: the whole history is replayed. The evaluator and the command processor (whose snapshot
also holds which events each command appended) write theirs and start from them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from harness import ADMIN, policy_doc, wait_for

from benchmarks.replay import generate
from ledger.codec import default_codec
from ledger.core.history import HistoryEntry, state_at
from ledger.core.lifecycle import event_stream
from ledger.core.state import _NOT_LOADED, aggregate_of
from ledger.kafka.clients import make_rdkafka_producer
from ledger.kafka.governance import SNAPSHOT_AFTER, GovernanceFollower
from ledger.kafka.snapshots import (
    DIGEST_BYTES,
    Snapshot,
    read_snapshot,
    snapshot_file,
    snapshot_key,
)

pytestmark = pytest.mark.integration

HISTORY = generate(1_200, policies=4, principals=80, roles=6)


def _write(kafka: Any, topics: Any, entries: list[HistoryEntry]) -> None:
    """Write ``entries`` to the governance topics (``kafka``: the broker, or a stack on it)."""
    codec = default_codec()
    producer = make_rdkafka_producer(
        kafka.bootstrap, security=kafka.security("admin"), **{"linger.ms": 5}
    )
    for entry in entries:
        event = entry.event
        topic = topics.grant_events if event_stream(event) == "grant" else topics.policy_events
        while True:
            try:
                producer.produce(
                    topic, codec.encode(event), aggregate_of(event).encode(), partition=0
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
    assert producer.flush(60) == 0


def _follow(kafka: Any, topics: Any, snapshot: Path | None, **kw: Any) -> GovernanceFollower:
    follower = GovernanceFollower(
        bootstrap=kafka.bootstrap,
        topics=topics,
        security=kafka.security("evaluator"),
        compile_deployed=True,
        snapshot=snapshot,
        **kw,
    )

    async def run() -> None:
        task = asyncio.create_task(follower.run())
        try:
            await asyncio.wait_for(follower.ready.wait(), 60)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert follower.wait_for_snapshot(60)
    return follower


def _same_state(follower: GovernanceFollower, entries: list[HistoryEntry]) -> None:
    expected = state_at(entries)  # (its positions are the generator's, not this broker's)
    assert follower.state.policies == expected.policies
    assert follower.state.principals == expected.principals
    counts: dict[str, int] = {}
    for entry in entries:
        counts[event_stream(entry.event)] = counts.get(event_stream(entry.event), 0) + 1
    assert sorted(follower.state.position.values()) == sorted(n - 1 for n in counts.values())


def test_a_follower_starts_from_its_snapshot_and_folds_only_what_came_after(
    kafka: Any, ledger_topics: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ledger.governance")
    path = tmp_path / "evaluator" / "governance.snapshot"
    first, later = HISTORY[:1_000], HISTORY[1_000:]
    _write(kafka, ledger_topics, first)
    full = _follow(kafka, ledger_topics, path, snapshot_after=500)
    assert full.from_snapshot == 0 and full.applied == len(first)
    assert _read(path, kafka).events == len(first)
    assert (
        "no governance snapshot at" in caplog.text and "governance snapshot written" in caplog.text
    )
    _same_state(full, first)

    _write(kafka, ledger_topics, later)
    caplog.clear()
    resumed = _follow(kafka, ledger_topics, path, snapshot_after=500)
    assert "started from the governance snapshot" in caplog.text
    assert resumed.from_snapshot == len(first) and resumed.applied == len(later)
    _same_state(resumed, HISTORY)
    # Its deployed versions are compiled before it is ready, as after a full catch-up.
    record = next(r for r in resumed.state.policies.values() if r.active is not None)
    assert record.versions[record.active]._compiled is not _NOT_LOADED
    assert _read(path, kafka).events == len(first)  # 200 records since: not worth a new one

    caplog.clear()
    again = _follow(kafka, ledger_topics, path, snapshot_after=100)  # now worth it
    assert again.applied == len(later) and _read(path, kafka).events == len(HISTORY)
    nothing_new = _follow(kafka, ledger_topics, path)
    assert nothing_new.applied == 0 and nothing_new.from_snapshot == len(HISTORY)
    _same_state(nothing_new, HISTORY)


def _read(path: Path, kafka: Any, role: str = "evaluator", **kw: Any) -> Snapshot:
    """The snapshot at ``path``, unsealed with the key of ``role``'s credential, as its
    processor reads it."""
    return read_snapshot(path, key=snapshot_key(kafka.security(role)), **kw)


def _edit_tails(path: Path, edit: Any, key: bytes | None) -> None:
    """Change the tails a snapshot names, and seal it again (with the processor's own key):
    only the log can tell."""
    magic, header, rest = path.read_bytes().split(b"\n", 2)
    fields = json.loads(header)
    edit(fields["tails"])
    signed = json.dumps(fields).encode() + b"\n" + rest[:-DIGEST_BYTES]
    sealer = hmac.new(key, signed, "sha256") if key is not None else hashlib.sha256(signed)
    seal = sealer.hexdigest().encode()
    path.write_bytes(magic + b"\n" + signed + seal)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        # Another history at the same offsets (topics deleted and written again, say).
        (lambda tails: [t.__setitem__(1, "0" * 64) for t in tails.values()], "is not the one"),
        (lambda tails: [t.__setitem__(0, t[0] + 5_000) for t in tails.values()], "ends before"),
        (lambda tails: tails.update({"elsewhere.policy-events/0": [3, "0" * 64]}), "do not"),
        # The grant topic's tail checks out (and is sought past), the policy topic's does not.
        (
            lambda tails: [t.__setitem__(1, "0" * 64) for k, t in tails.items() if "policy" in k],
            "is not the one",
        ),
    ],
    ids=["other-record", "log-ends-before", "other-topic", "second-partition-only"],
)
def test_a_snapshot_the_log_does_not_vouch_for_is_not_used(
    kafka: Any,
    ledger_topics: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    edit: Any,
    reason: str,
) -> None:
    path = tmp_path / "governance.snapshot"
    _write(kafka, ledger_topics, HISTORY[:600])
    _follow(kafka, ledger_topics, path, snapshot_after=1)
    _edit_tails(path, edit, snapshot_key(kafka.security("evaluator")))
    caplog.set_level(logging.WARNING, logger="ledger.governance")
    follower = _follow(kafka, ledger_topics, path, snapshot_after=10**9)
    assert "not used" in caplog.text and reason in caplog.text, caplog.text
    assert follower.from_snapshot == 0 and follower.applied == 600
    _same_state(follower, HISTORY[:600])


def test_an_evaluator_writes_its_snapshot_and_its_next_start_uses_it(stack_factory: Any) -> None:
    # The processor's own wiring: a snapshot under its state directory, written when a start
    # folded SNAPSHOT_AFTER records, and read by the start after.
    from processors.common import state_dir
    from processors.evaluator import APP_ID

    stack = stack_factory(processors=())
    history = generate(SNAPSHOT_AFTER, policies=20, principals=2_000, roles=20)
    _write(stack, stack.topics, history)
    stack.start("evaluator")  # (ready: it writes the snapshot meanwhile)
    path = snapshot_file(state_dir(stack.settings, APP_ID))  # named by its code
    wait_for(path.exists, timeout=60, what="the evaluator's governance snapshot")
    assert _read(path, stack).events == len(history), stack.logs()
    stack.stop("evaluator")
    stack.start("evaluator")
    log = (stack.log_dir / "evaluator.log").read_text()
    assert "governance snapshot written to" in log
    assert f"started from the governance snapshot written {_read(path, stack).written_at}" in log


def test_a_command_processor_starts_from_its_snapshot_and_remembers_every_command(
    stack_factory: Any,
) -> None:
    # Its snapshot holds, with the state, which events each command appended: a command sent
    # again after a start from the snapshot (which folded none of them) is still answered with
    # its first answer.
    from ledger.core.events import ProposePolicyVersion
    from ledger.ids import new_id, utcnow
    from processors.command_handler import AppliedCommands
    from processors.command_processor import APP_ID
    from processors.common import state_dir

    stack = stack_factory(processors=("command-processor",))
    admin = stack.client(ADMIN)
    command = ProposePolicyVersion(
        event_id=new_id(), occurred_at=utcnow(), actor=ADMIN, document=policy_doc("refund")
    )
    first = admin.submit_command(command)
    # Written while it runs, once what it folded (the trust anchor) came back from the log; the
    # next after 50,000 more. Without it, a start replays everything and writes a snapshot of
    # all of it.
    path = snapshot_file(state_dir(stack.settings, APP_ID), AppliedCommands())
    wait_for(path.exists, timeout=60, what="the command processor's governance snapshot")
    assert stack.stop("command-processor")
    path.unlink()
    stack.start("command-processor")
    wait_for(path.exists, timeout=60, what="the snapshot of the whole history")
    memory = AppliedCommands()
    snapshot = _read(path, stack, "command-processor", memory=memory)
    memory.restore(snapshot.memory)
    assert memory.event_ids(command.event_id) == first.event_ids

    assert stack.stop("command-processor")
    stack.start("command-processor")
    log = (stack.log_dir / "command-processor.log").read_text()
    assert f"started from the governance snapshot written {snapshot.written_at}" in log
    assert f"({snapshot.events} events)" in log
    again = admin.submit_command(command, timeout=60)
    assert again.message == "already applied" and again.event_ids == first.event_ids
    assert (
        admin.submit_command(
            ProposePolicyVersion(
                event_id=new_id(),
                occurred_at=utcnow(),
                actor=ADMIN,
                document=policy_doc("refund", auto_below=200),
            )
        ).version
        == 2
    )
    events = stack.records(stack.topics.policy_events)
    assert [type(e).__name__ for e in events] == ["PolicyVersionProposed"] * 2
