"""A command id is decided once (the core's ``decide_again``, through the command processor's
handler): the same command again gets its first answer; a forged copy of an applied command is
not told "already applied"; a rejected command cannot be replayed once the state would let it
through, across a restart too (the handler is seeded from recent answers)."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.codec import default_codec
from ledger.core.events import (
    ActorKeyRegistered,
    ActorKeyRevoked,
    CommandAccepted,
    CommandRejected,
    GovernanceEvent,
    IssueGrant,
    RegisterActorKey,
    RevokeActorKey,
    RevokeGrant,
    RoleAssigned,
)
from ledger.core.lifecycle import REJECTION_CODES, KeyTrust, register_anchors
from ledger.core.signing import key_id_of, verify_history
from ledger.core.state import EMPTY_STATE, LedgerState, fold, with_positions, with_unreadable
from ledger.ids import new_id, utcnow
from ledger.kafka.reading import RawRecord
from ledger.kafka.snapshots import SnapshotUnusable, read_snapshot, write_snapshot
from ledger.keys import public_bytes, sign
from ledger.settings import Settings
from processors.command_handler import (
    REMEMBER_REJECTIONS,
    SIGNATURE_BYTES,
    AppliedCommands,
    CommandHandler,
)
from processors.outputs import ProcessorStats

CODEC = default_codec()
SETTINGS = Settings(home=Path("/nonexistent"), admins=frozenset({"human:admin"}))
ADMIN_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
_offsets = itertools.count()


class Ledger:
    """A command processor's handler with the state it folds, as the processor keeps them."""

    def __init__(self) -> None:
        self.handler = CommandHandler(settings=SETTINGS, codec=CODEC, stats=ProcessorStats())
        self.state: LedgerState = EMPTY_STATE
        self.log: list[GovernanceEvent] = []
        for anchor in register_anchors(
            EMPTY_STATE, {"human:admin": public_bytes(ADMIN_KEY)}, now=utcnow(), new_id=new_id
        ):
            self.apply(anchor)

    def apply(self, event: GovernanceEvent) -> None:
        self.state = fold(self.state, event)
        self.handler.applied.remember(event)
        self.log.append(event)

    def send(self, command: Any) -> tuple[Any, list[GovernanceEvent]]:
        message = SimpleNamespace(
            topic="commands",
            partition=0,
            offset=next(_offsets),
            key=b"k",
            value=CODEC.encode(command),
        )
        step = self.handler.handle(self.state, message)
        for event, _ in step.events:
            self.apply(event)
        ((_, _, value),) = step.outputs
        return CODEC.decode(value), [event for event, _ in step.events]


def grants(state: LedgerState) -> set[str]:
    """Ids of the live grants of agent:bot."""
    record = state.principals.get("agent:bot")
    return set() if record is None else set(record.grants)


def issue(grant_id: str = "g-1") -> IssueGrant:
    return IssueGrant(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor="human:admin",
        grant_id=grant_id,
        principal="agent:bot",
        actions=("refund.issue",),
        resource="*",
    )


def revoke(grant_id: str = "g-1") -> RevokeGrant:
    return RevokeGrant(
        event_id=new_id(), occurred_at=utcnow(), actor="human:admin", grant_id=grant_id
    )


def test_the_same_command_again_is_answered_already_applied_and_appends_nothing() -> None:
    ledger = Ledger()
    command = sign(issue(), ADMIN_KEY)
    first, events = ledger.send(command)
    assert isinstance(first, CommandAccepted) and len(events) == 1
    again, more = ledger.send(command)
    assert isinstance(again, CommandAccepted) and again.message == "already applied"
    assert again.event_ids == first.event_ids and more == []


def test_a_handler_restored_from_a_snapshot_remembers_every_command_applied_before_it(
    tmp_path: Path,
) -> None:
    # The command processor starts from its governance snapshot: the commands applied before
    # it are still answered "already applied" (with their events), their ids are not reused,
    # and a forged copy is still told it is not the signed command.
    ledger = Ledger()
    command = sign(issue(), ADMIN_KEY)
    first, _ = ledger.send(command)
    state = with_positions(ledger.state, {"ledger.grant-events/0": 9})
    path = tmp_path / "governance.snapshot"
    tails = {"ledger.grant-events/0": (9, "0" * 64)}
    write_snapshot(path, state, tails, events=9, memory=ledger.handler.applied)

    restarted = Ledger.__new__(Ledger)
    restarted.handler = CommandHandler(settings=SETTINGS, codec=CODEC, stats=ProcessorStats())
    snapshot = read_snapshot(path, memory=restarted.handler.applied)
    restarted.handler.applied.restore(snapshot.memory)
    restarted.state = snapshot.state
    again, more = restarted.send(command)
    assert isinstance(again, CommandAccepted) and again.message == "already applied"
    assert again.event_ids == first.event_ids and more == []
    other = dataclasses.replace(issue("g-2"), event_id=command.event_id)
    answer, _ = restarted.send(sign(other, ADMIN_KEY))
    assert isinstance(answer, CommandRejected) and answer.code == "duplicate_command_id"
    forged, _ = restarted.send(dataclasses.replace(command, key_id=None, signature=None))
    assert isinstance(forged, CommandRejected) and forged.code == "unsigned_command"
    with pytest.raises(SnapshotUnusable, match="where this processor keeps none"):
        read_snapshot(path)  # an evaluator's follower does not take it

    # What is not its own is refused, and the memory left as it was.
    remembered = restarted.handler.applied.saved()
    wrong: list[object] = [
        None,
        ({}, {}, {}),  # this memory's older form
        [{}, {}, (), b"", {}],
        ({}, {"c": []}, (), b"", {}),  # events of a command it does not have
        ({}, {}, (), b"", {"c": b""}),
        ({"c": "e"}, {}, ("c",), b"short", {}),  # signatures that are not where their ids say
    ]
    for saved in wrong:
        with pytest.raises(ValueError, match="not the command ids"):
            restarted.handler.applied.restore(saved)
    assert restarted.handler.applied.saved() == remembered


def event(event_id: str, command_id: str, signature: bytes | None) -> RoleAssigned:
    """An event ``command_id`` appended, carrying ``signature``."""
    return RoleAssigned(
        event_id=event_id,
        occurred_at=utcnow(),
        actor="human:admin",
        command_id=command_id,
        principal="agent:bot",
        role="reader",
        sequence=1,
        command_signature=signature,
    )


def test_a_command_is_remembered_with_every_event_it_appended_and_its_first_signature() -> None:
    applied = AppliedCommands()
    for e in (
        event("e1", "c1", b"first"),
        event("e2", "c1", b"second"),
        event("e3", "c1", None),
        event("e2", "c1", b"second"),  # read back after it was applied: nothing new
        event("e4", "c2", None),
        event("e5", "c2", b"late"),
    ):
        applied.remember(e)
    assert applied.event_ids("c1") == ("e1", "e2", "e3") and applied.signature("c1") == b"first"
    assert applied.event_ids("c2") == ("e4", "e5") and applied.signature("c2") is None
    assert applied.event_ids("c3") == () and len(applied) == 2
    # What it saves is a copy: the snapshot is written while it remembers more.
    saved = applied.saved()
    applied.remember(event("e6", "c1", None))
    applied.remember(event("e7", "c3", b"third"))
    assert saved == (
        {"c1": "e1", "c2": "e4"},
        {"c1": ["e2", "e3"], "c2": ["e5"]},
        (),
        b"",
        {"c1": b"first"},  # (not the size of a signature: kept apart)
    )
    assert applied.saved()[4] == {"c1": b"first", "c3": b"third"}


def test_signatures_are_kept_end_to_end_and_found_again_after_a_restore() -> None:
    # A million separate signatures cost a start half a second: they are saved as one string
    # of bytes beside their commands' ids, and looked at only when one is asked for.
    usual = {f"c{i}": bytes([i]) * SIGNATURE_BYTES for i in range(5)}
    applied = AppliedCommands()
    for i, (command, signature) in enumerate(usual.items()):
        applied.remember(event(f"e{i}", command, signature))
    applied.remember(event("e-odd", "c-odd", b"an unusual size"))
    applied.remember(event("e-none", "c-none", None))
    saved = applied.saved()
    assert saved[2] == tuple(usual) and saved[3] == b"".join(usual.values())
    assert saved[4] == {"c-odd": b"an unusual size"}

    restored = AppliedCommands()
    restored.restore(saved)
    restored.remember(event("e-later", "c-later", b"L" * SIGNATURE_BYTES))
    assert restored.saved()[2] == (*usual, "c-later")  # saved again without unpacking
    for command, signature in usual.items():
        assert restored.signature(command) == signature
    assert restored.signature("c-odd") == b"an unusual size"
    assert restored.signature("c-none") is None and restored.event_ids("c-none") == ("e-none",)
    assert restored.signature("c-later") == b"L" * SIGNATURE_BYTES
    assert restored.saved()[2:] == (
        (*usual, "c-later"),
        b"".join(usual.values()) + b"L" * SIGNATURE_BYTES,
        {"c-odd": b"an unusual size"},
    )


def test_a_forged_copy_of_an_applied_command_is_authenticated_not_called_applied() -> None:
    ledger = Ledger()
    command = sign(issue(), ADMIN_KEY)
    ledger.send(command)

    unsigned = dataclasses.replace(command, key_id=None, signature=None)
    answer, events = ledger.send(unsigned)
    assert isinstance(answer, CommandRejected) and answer.code == "unsigned_command"
    assert events == []

    wrong_key = sign(command, OTHER_KEY)  # not a key of human:admin
    answer, _ = ledger.send(wrong_key)
    assert isinstance(answer, CommandRejected) and answer.code == "unknown_actor_key"


def test_another_genuine_command_under_a_used_id_is_a_duplicate_id() -> None:
    ledger = Ledger()
    command = sign(issue("g-1"), ADMIN_KEY)
    ledger.send(command)
    other = sign(dataclasses.replace(issue("g-2"), event_id=command.event_id), ADMIN_KEY)
    answer, events = ledger.send(other)
    assert isinstance(answer, CommandRejected) and answer.code == "duplicate_command_id"
    assert "duplicate_command_id" in REJECTION_CODES
    assert events == [] and "g-2" not in grants(ledger.state)


def test_a_rejected_command_replayed_once_the_state_allows_it_is_rejected_again() -> None:
    ledger = Ledger()
    captured = sign(revoke("g-1"), ADMIN_KEY)
    first, _ = ledger.send(captured)
    assert isinstance(first, CommandRejected) and first.code == "unknown_grant"

    ledger.send(sign(issue("g-1"), ADMIN_KEY))  # now the captured revoke would go through
    again, events = ledger.send(captured)
    assert isinstance(again, CommandRejected) and again.code == "unknown_grant"
    assert events == [] and "g-1" in grants(ledger.state)


def test_after_a_restart_recent_rejections_are_remembered_from_the_answers() -> None:
    before = Ledger()
    captured = sign(revoke("g-1"), ADMIN_KEY)
    first, _ = before.send(captured)

    after = Ledger()  # a restarted processor: the start-up read hands it the recent answers
    assert after.handler.recall([answer_record(first)], utcnow()) == 0
    after.send(sign(issue("g-1"), ADMIN_KEY))
    again, events = after.send(captured)
    assert isinstance(again, CommandRejected) and again.code == "unknown_grant"
    assert events == []


def test_a_refusal_for_records_not_read_is_not_remembered_a_copy_is_decided_afresh() -> None:
    # A review: the newer release, run as told, answered a copy of a command refused
    # governance_unreadable by the older one with that refusal, naming itself as the release
    # to run. Such a refusal decided nothing.
    before = Ledger()
    before.state = with_unreadable(before.state, frozenset({("principal", "agent:other")}))
    captured = sign(issue("g-1"), ADMIN_KEY)
    first, _ = before.send(captured)
    assert isinstance(first, CommandRejected) and first.code == "governance_unreadable"
    assert first.command_id not in before.handler.rejected

    after = Ledger()  # the newer release: the start-up read hands it the recent answers
    after.handler.recall([answer_record(first)], utcnow())
    again, events = after.send(captured)
    assert isinstance(again, CommandAccepted) and len(events) == 1, again


def test_a_command_a_newer_release_answered_is_refused_not_decided_again_after_a_rollback() -> None:
    # A rejection written in a schema this release does not know (a newer release's) cannot be
    # recalled: decided again, the command the newer release rejected would be accepted.
    captured = sign(revoke("g-1"), ADMIN_KEY)
    now = utcnow()
    newer = answer_record(None, key=captured.event_id, at=now - timedelta(minutes=1))
    stale = answer_record(None, key="c-long-ago", at=now - REMEMBER_REJECTIONS * 2)
    ahead = answer_record(None, key="c-ahead", at=now + timedelta(days=1))
    unkeyed = answer_record(None, key="", at=now)
    rolled_back = Ledger()
    assert rolled_back.handler.recall([newer, stale, unkeyed, ahead], now) == 2
    assert rolled_back.handler.rejected["c-ahead"][0] == now  # a clock ahead: as of now
    rolled_back.send(sign(issue("g-1"), ADMIN_KEY))  # the revoke would go through now
    again, events = rolled_back.send(captured)
    assert isinstance(again, CommandRejected) and again.code == "governance_unreadable"
    assert "newer release answered this command id" in again.reason
    assert events == [] and "g-1" in grants(rolled_back.state)
    assert list(rolled_back.handler.rejected) == [captured.event_id, "c-ahead"]  # not the stale

    other, _ = rolled_back.send(sign(revoke("g-1"), ADMIN_KEY))  # any other id: decided
    assert isinstance(other, CommandAccepted)


def answer_record(answer: Any, *, key: str = "", at: Any = None) -> RawRecord:
    """``answer`` as the start-up read hands it over; ``None``: an answer of a schema this
    release does not know (a newer release's), keyed by ``key`` and written at ``at``."""
    if answer is None:
        value = b"\xc3\x01" + bytes(range(1, 9)) + b"a newer release's answer"
    else:
        value, key, at = CODEC.encode(answer), answer.command_id, answer.occurred_at
    return RawRecord(
        "ledger.command-results", 0, 0, int(at.timestamp() * 1000), value, key=key.encode()
    )


def test_an_unauthenticated_rejection_does_not_block_the_genuine_command_with_that_id() -> None:
    ledger = Ledger()
    genuine = sign(issue(), ADMIN_KEY)
    forged_first = dataclasses.replace(genuine, key_id=None, signature=None)
    answer, _ = ledger.send(forged_first)
    assert isinstance(answer, CommandRejected) and answer.code == "unsigned_command"
    accepted, events = ledger.send(genuine)
    assert isinstance(accepted, CommandAccepted) and len(events) == 1


def test_rejections_are_forgotten_once_no_command_could_still_be_valid() -> None:
    ledger = Ledger()
    first, _ = ledger.send(sign(revoke("g-1"), ADMIN_KEY))
    assert first.command_id in ledger.handler.rejected
    later = utcnow() + REMEMBER_REJECTIONS + timedelta(seconds=1)
    ledger.handler.remember_answer(first, later)  # pruned as it is offered again: too old
    assert ledger.handler.rejected == {}


def test_an_altered_copy_of_a_rejected_command_is_authenticated_not_given_its_rejection() -> None:
    # A red team's find: a rejected IssueGrant re-sent with its principal changed (signature kept),
    # or its signature's bytes flipped, drew the first command's `invalid_grant` again, so the log
    # attributed forged copies to the genuine command's id as repeated rejections.
    ledger = Ledger()
    captured = sign(revoke("g-1"), ADMIN_KEY)
    first, _ = ledger.send(captured)
    assert isinstance(first, CommandRejected) and first.code == "unknown_grant"
    altered = dataclasses.replace(captured, grant_id="g-2")
    flipped = dataclasses.replace(
        captured, signature=bytes(b ^ 0xFF for b in captured.signature or b"")
    )
    for copy in (altered, flipped):
        answer, events = ledger.send(copy)
        assert isinstance(answer, CommandRejected) and answer.code == "bad_signature", answer
        assert events == []
    again, _ = ledger.send(captured)  # the genuine copy still gets its own first answer
    assert isinstance(again, CommandRejected) and again.code == "unknown_grant"


def test_a_trust_anchor_written_into_the_log_by_anyone_but_the_configuration_signs_nothing() -> (
    None
):
    # A red team, holding the command processor's credential, wrote an anchor of its own key
    # for human:admin into the grant events; its commands were then accepted as the
    # administrator's (a grant of everything to agent:intruder).
    ledger = Ledger()
    ledger.handler.trust = KeyTrust(
        anchors={"human:admin": public_bytes(ADMIN_KEY)}
    )  # as configured
    for planted in register_anchors(
        ledger.state, {"human:admin": public_bytes(OTHER_KEY)}, now=utcnow(), new_id=new_id
    ):
        ledger.apply(planted)
    answer, events = ledger.send(sign(issue("g-planted"), OTHER_KEY))
    assert isinstance(answer, CommandRejected) and answer.code == "unknown_actor_key", answer
    assert "is a trust anchor of human:admin in the log that the command processor's" in (
        answer.reason
    )
    assert events == []
    answer, _ = ledger.send(sign(issue("g-genuine"), ADMIN_KEY))  # the configured one signs
    assert isinstance(answer, CommandAccepted), answer
    # The same key, retired by a rotation as the README says (its .pub in retired/), is told
    # so: a review of concurrent governance read "else someone wrote it into the log".
    ledger.handler.trust = KeyTrust(
        anchors={"human:admin": public_bytes(ADMIN_KEY)},
        known={"human:admin": frozenset({public_bytes(OTHER_KEY)})},
    )
    answer, events = ledger.send(sign(issue("g-retired"), OTHER_KEY))
    assert isinstance(answer, CommandRejected) and answer.code == "unknown_actor_key", answer
    assert "is a retired trust anchor of human:admin" in answer.reason, answer.reason
    assert "sign with its current key" in answer.reason and events == []


def test_a_trust_anchor_is_not_written_for_a_principal_with_a_record_the_processor_cannot_read() -> (
    None
):
    # Its event would be numbered after the sequence this processor knows, which the record a
    # newer release wrote may already hold: the newer release would drop it. Nor for another
    # (a review): the unread record may have registered its key to someone else.
    anchors = {"human:admin": public_bytes(ADMIN_KEY), "human:bob": public_bytes(OTHER_KEY)}
    for marked in ("human:admin", "human:carol"):
        lacking = with_unreadable(EMPTY_STATE, frozenset({("principal", marked)}))
        assert register_anchors(lacking, anchors, now=utcnow(), new_id=new_id) == ()
    policy_only = with_unreadable(EMPTY_STATE, frozenset({("policy", "refund")}))
    written = register_anchors(policy_only, anchors, now=utcnow(), new_id=new_id)
    assert [e.principal for e in written] == ["human:admin", "human:bob"]
    assert [
        e.principal for e in register_anchors(EMPTY_STATE, anchors, now=utcnow(), new_id=new_id)
    ] == [
        "human:admin",
        "human:bob",
    ]


def _register_keys(ledger: Ledger, count: int) -> list[str]:
    """Register ``count`` signing keys of human:bob; their ids."""
    ids = []
    for _ in range(count):
        public = public_bytes(Ed25519PrivateKey.generate())
        command = RegisterActorKey(
            event_id=new_id(), occurred_at=utcnow(), actor="human:admin", principal="human:bob",
            actor_key_id=key_id_of(public), public_key=public,
        )  # fmt: skip
        answer, _ = ledger.send(sign(command, ADMIN_KEY))
        assert isinstance(answer, CommandAccepted), answer
        ids.append(key_id_of(public))
    return ids


def _cut_short(ledger: Ledger, command: RevokeActorKey, written: int) -> None:
    """Handle ``command`` as a processor stopped after appending ``written`` of its events
    (before its answer): those are in the log, the rest are not, its offset is not committed."""
    message = SimpleNamespace(
        topic="commands", partition=0, offset=next(_offsets), key=b"k",
        value=CODEC.encode(command),
    )  # fmt: skip
    step = ledger.handler.handle(ledger.state, message)
    assert len(step.events) > written
    for event, _ in step.events[:written]:
        ledger.apply(event)


def _active_keys(ledger: Ledger) -> set[str]:
    record = ledger.state.principals["human:bob"]
    return {key.key_id for key in record.keys if key.active}


def _revoke_all() -> RevokeActorKey:
    return sign(
        RevokeActorKey(
            event_id=new_id(), occurred_at=utcnow(), actor="human:admin", principal="human:bob",
            reason="left the company",
        ),
        ADMIN_KEY,
    )  # fmt: skip


def test_a_revocation_of_every_key_cut_short_is_finished_when_its_command_comes_again() -> None:
    # A review: the command processor appends a revoke-all's events one by one; stopped after
    # the first, the command came again and was answered "already applied" from that event,
    # and the actor's other keys stayed active for good.
    ledger = Ledger()
    keys = _register_keys(ledger, 3)
    command = _revoke_all()
    _cut_short(ledger, command, written=1)
    assert _active_keys(ledger) == set(keys[1:])
    answer, written = ledger.send(command)
    assert isinstance(answer, CommandAccepted), answer
    assert "cut short: its last 2 events were written now" in str(answer.message)
    assert [e.actor_key_id for e in written if isinstance(e, ActorKeyRevoked)] == keys[1:]
    assert _active_keys(ledger) == set()
    assert len(answer.event_ids) == 3 and answer.event_ids[1:] == tuple(e.event_id for e in written)
    # ... and `actor verify` proves the finished revocation as one command's events.
    verdicts = verify_history(ledger.log, admins=SETTINGS.admins)
    assert all(v.ok for v in verdicts), [v.problem for v in verdicts if not v.ok]
    # Delivered once more, it has nothing left to write.
    again, more = ledger.send(command)
    assert again.message == "already applied" and more == []


def test_a_copy_of_a_finished_revocation_of_every_key_leaves_keys_registered_since() -> None:
    ledger = Ledger()
    _register_keys(ledger, 2)
    command = _revoke_all()
    first, _ = ledger.send(command)
    assert isinstance(first, CommandAccepted) and len(first.event_ids) == 2
    (later,) = _register_keys(ledger, 1)
    again, more = ledger.send(command)  # a copy, within its validity
    assert again.message == "already applied" and more == []
    assert _active_keys(ledger) == {later}


def test_a_revocation_cut_short_and_gone_stale_names_the_keys_still_active(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = Ledger()
    keys = _register_keys(ledger, 2)
    command = _revoke_all()
    _cut_short(ledger, command, written=1)
    later = utcnow() + timedelta(minutes=15)  # the processor was down for longer than that
    monkeypatch.setattr("processors.command_handler.utcnow", lambda: later)
    answer, written = ledger.send(command)
    assert isinstance(answer, CommandRejected) and answer.code == "cut_short"
    assert written == [] and _active_keys(ledger) == {keys[1]}
    assert f"human:bob still holds {keys[1]}; revoke them again" in answer.reason


def _revoke(reason: str, key: str | None = None, at: Any = None) -> RevokeActorKey:
    return sign(
        RevokeActorKey(
            event_id=new_id(), occurred_at=at or utcnow(), actor="human:admin",
            principal="human:bob", reason=reason, actor_key_id=key,
        ),
        ADMIN_KEY,
    )  # fmt: skip


def test_a_copy_of_a_finished_revocation_leaves_keys_registered_since_whatever_their_reason() -> (
    None
):
    # A review: which keys the command had revoked was read from its actor and reason, which
    # are reused ("rotated"): a copy then revoked a key registered after it, and verify called
    # that event a copy.
    ledger = Ledger()
    _register_keys(ledger, 2)
    command = _revoke("rotated")
    ledger.send(command)
    new_a, new_b = _register_keys(ledger, 2)
    ledger.send(_revoke("rotated", key=new_b))
    again, more = ledger.send(command)
    assert again.message == "already applied" and more == []
    assert _active_keys(ledger) == {new_a}
    assert all(v.ok for v in verify_history(ledger.log, admins=SETTINGS.admins))


def test_which_keys_a_cut_short_revocation_left_is_read_from_the_history_not_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A review: keys registered while the clock ran 90 s fast, then stepped back, looked
    # registered after the revocation began, and were left active.
    ledger = Ledger()
    base = utcnow()
    monkeypatch.setattr("processors.command_handler.utcnow", lambda: base + timedelta(seconds=90))
    _register_keys(ledger, 2)
    monkeypatch.setattr("processors.command_handler.utcnow", lambda: base)
    command = _revoke("left", at=base - timedelta(seconds=1))
    _cut_short(ledger, command, written=1)
    answer, written = ledger.send(command)
    assert isinstance(answer, CommandAccepted) and len(written) == 1
    assert _active_keys(ledger) == set()
    # ... and a key registered after a revocation applied in full, the clock stepped back
    # before it, is not the revocation's to revoke.
    later = _register_keys(ledger, 1)
    again, more = ledger.send(command)
    assert again.message == "already applied" and more == []
    assert _active_keys(ledger) == set(later)


def test_a_cut_short_revocation_is_not_finished_once_its_actors_history_moved_on() -> None:
    ledger = Ledger()
    keys = _register_keys(ledger, 3)
    command = _revoke("left")
    _cut_short(ledger, command, written=1)
    (extra,) = _register_keys(ledger, 1)  # written after it (an ordering it never meets itself)
    answer, written = ledger.send(command)
    assert isinstance(answer, CommandRejected) and answer.code == "cut_short"
    assert written == [] and _active_keys(ledger) == {*keys[1:], extra}
    assert f"still holds {keys[1]}, {keys[2]}; revoke them again" in answer.reason


def test_another_command_under_an_applied_commands_id_finishes_nothing() -> None:
    # A review: a trust anchor's event is remembered under its own id as a command with no
    # signature, which decide_again answers "already applied" for any authenticated command;
    # a delegate whose grant was revoked sent a revoke-all under that id, and the finishing
    # revoked all of bob's keys.
    ledger = Ledger()
    (anchor,) = [e for e in ledger.log if isinstance(e, ActorKeyRegistered)]
    bob = _register_keys(ledger, 3)
    ops = Ed25519PrivateKey.generate()
    register = RegisterActorKey(
        event_id=new_id(), occurred_at=utcnow(), actor="human:admin", principal="human:ops",
        actor_key_id=key_id_of(public_bytes(ops)), public_key=public_bytes(ops),
    )  # fmt: skip
    ledger.send(sign(register, ADMIN_KEY))
    grant = IssueGrant(
        event_id=new_id(), occurred_at=utcnow(), actor="human:admin", grant_id="g-ops",
        principal="human:ops", actions=("ledger.key.revoke",), resource="principal:human:bob",
    )  # fmt: skip
    ledger.send(sign(grant, ADMIN_KEY))
    one = RevokeActorKey(
        event_id=new_id(), occurred_at=utcnow(), actor="human:ops", principal="human:bob",
        reason="rotated", actor_key_id=bob[0],
    )  # fmt: skip
    ledger.send(sign(one, ops))
    ledger.send(sign(revoke("g-ops"), ADMIN_KEY))
    sneaky = RevokeActorKey(
        event_id=anchor.command_id, occurred_at=utcnow(), actor="human:ops",
        principal="human:bob", reason="rotated",
    )  # fmt: skip
    answer, written = ledger.send(sign(sneaky, ops))
    assert not isinstance(answer, CommandAccepted) or "cut short" not in str(answer.message)
    assert written == [] and _active_keys(ledger) == set(bob[1:])
