"""The report's attack on the command processor (issue 8, item 1), against the real broker.

An actor with no grants wrote a 403-byte YAML alias bomb (9 levels of 9 aliases) as a
``ProposePolicyVersion`` straight to ``ledger.commands``: the processor parsed it before asking
whether the actor may propose, grew to 3.3 GB and blocked every governance command. Now the
proposal is refused on the name it carries, unread, and the next command goes through at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from harness import ADMIN, LedgerStack, wait_for

from ledger.codec import default_codec
from ledger.core.events import CommandRejected, IssueGrant, ProposePolicyVersion
from ledger.ids import new_id, utcnow
from ledger.keys import sign

pytestmark = pytest.mark.integration

CODEC = default_codec()
MALLORY = "human:mallory"


def alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def rss_bytes(stack: LedgerStack, name: str) -> int:
    pid = int((stack.settings.home / "run" / f"{name}.pid").read_text())
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_an_alias_bomb_from_an_actor_without_grants_is_refused_unread(stack_factory: Any) -> None:
    stack = stack_factory(processors=("command-processor",))
    bomb = alias_bomb()
    assert len(bomb.encode()) < 500
    # Mallory is a known actor (her key is registered: she signs what she sends) with no grant.
    stack.register_key(stack.client(ADMIN), MALLORY)
    attacks = [
        sign(
            ProposePolicyVersion(
                event_id=new_id(), occurred_at=utcnow(), actor=MALLORY, document=bomb, policy=policy
            ),
            stack.keys.private_key(MALLORY),
        )
        for policy in ("refund", None)
    ]
    # Unsigned, it is refused even earlier: before authorization.
    attacks.append(
        ProposePolicyVersion(
            event_id=new_id(), occurred_at=utcnow(), actor=MALLORY, document=bomb, policy="refund"
        )
    )
    producer = stack.producer("governance")  # a client allowed to send commands
    try:
        for attack in attacks:  # straight to the topic, as the attacker did
            producer.send(stack.topics.commands, key=b"refund", value=CODEC.encode(attack))
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)
    started = time.monotonic()
    admin = stack.client(ADMIN)
    # A normal command right behind the attack is accepted within a few seconds.
    accepted = admin.submit_command(
        IssueGrant(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=ADMIN,
            grant_id="g-after",
            principal="agent:bot",
            actions=("refund.issue",),
            resource="account:*",
        ),
        timeout=10,
    )
    assert accepted.aggregate == "agent:bot"
    assert time.monotonic() - started < 10

    wanted = {a.event_id for a in attacks}

    def refusals() -> dict[str, CommandRejected] | None:
        found = {
            r.command_id: r
            for r in stack.records(stack.topics.command_results)
            if isinstance(r, CommandRejected) and r.command_id in wanted
        }
        return found if set(found) == wanted else None

    found = wait_for(refusals, timeout=10, what="every attack to be refused")
    named, unnamed, unsigned = (found[a.event_id] for a in attacks)
    assert named.code == "not_authorized" and "policy:refund" in named.reason
    assert unnamed.code == "invalid_policy" and "must name its policy" in unnamed.reason
    assert unsigned.code == "unsigned_command"
    # It never expanded the bomb: the processor is the size of an idle Python process.
    assert rss_bytes(stack, "command-processor") < 1_000_000_000, stack.logs()


class _RawKey(str):
    """A header key kafka-python sends as these bytes, which are not UTF-8 (it encodes keys
    with ``str.encode``): how a red team wrote the record."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        return b"\xff\xfe\xc0"


def test_a_record_whose_header_key_is_not_utf8_does_not_stop_governance(
    stack_factory: Any,
) -> None:
    # A red team: one such record on ledger.commands, which every holder of the `governance`
    # credential may write, crashed the command processor (aiokafka decodes header keys while
    # fetching) at every start; no command after it was answered, rollbacks included.
    from ledger.core.events import DeadLetter
    from ledger.local import stack as local_stack

    stack = stack_factory(processors=("command-processor",))
    admin = stack.client(ADMIN)
    producer = stack.producer("governance")
    try:
        sent = producer.send(
            stack.topics.commands, key=b"k", value=b"x", headers=[(_RawKey("h"), b"v")]
        ).get(timeout=30)
    finally:
        producer.close(timeout=5)
    started = time.monotonic()
    accepted = admin.submit_command(
        IssueGrant(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=ADMIN,
            grant_id="g-after-the-header",
            principal="agent:bot",
            actions=("refund.issue",),
            resource="account:*",
        ),
        timeout=20,
    )
    assert accepted.aggregate == "agent:bot"
    assert time.monotonic() - started < 20
    (letter,) = wait_for(
        lambda: [
            d
            for d in stack.records(stack.topics.dead_letters)
            if isinstance(d, DeadLetter)
            and d.source_topic == stack.topics.commands
            and d.offset == sent.offset
        ],
        timeout=10,
        what="the record's dead letter",
    )
    assert letter.code == "codec_error" and letter.value == b"x"
    procs = {p.name: p for p in local_stack.processes(stack.settings)}
    assert procs["command-processor"].running, stack.logs()
