"""Signed commands in the pure core: the bytes signed, key ids, trust anchors, keys folded as
governance state, and the offline proof of who did what."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.codec import default_codec
from ledger.core.events import IssueGrant, RegisterActorKey, RevokeActorKey
from ledger.core.lifecycle import Rejection, decide, decide_signed, register_anchors
from ledger.core.signing import (
    ANCHOR_ACTOR,
    DOMAIN,
    Witnesses,
    key_id_of,
    signed_bytes,
    verify_history,
    verify_signature,
)
from ledger.core.state import EMPTY_STATE, LedgerState, actor_key, fold, replay
from ledger.keys import public_bytes, sign

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ADMIN = "human:admin"
ADMIN_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"admin").digest())


def ids() -> object:
    n = iter(range(10_000))
    return lambda: f"e-{next(n)}"


def grant(n: int = 1, *, at: datetime = T0, actor: str = ADMIN) -> IssueGrant:
    return IssueGrant(
        event_id=f"c-{n}",
        occurred_at=at,
        actor=actor,
        grant_id=f"g-{n}",
        principal="agent:bot",
        actions=("refund.*",),
        resource="account:*",
    )


def anchored() -> tuple[LedgerState, list[object]]:
    events = register_anchors(EMPTY_STATE, {ADMIN: public_bytes(ADMIN_KEY)}, now=T0, new_id=ids())
    state = EMPTY_STATE
    for e in events:
        state = fold(state, e)
    return state, list(events)


def test_the_signed_bytes_are_canonical_json_of_domain_type_and_fields_but_the_signature():
    command = sign(grant(), ADMIN_KEY)
    document = json.loads(signed_bytes(command))
    assert document["domain"] == DOMAIN and document["type"] == "IssueGrant"
    assert "key_id" not in document["command"] and "signature" not in document["command"]
    assert document["command"]["occurred_at"] == "2026-01-01T00:00:00.000000Z"
    assert signed_bytes(command) == signed_bytes(grant())  # the signature is not signed
    # A reader decoding the record gets the very same bytes (what the processor verifies).
    codec = default_codec()
    assert signed_bytes(codec.decode(codec.encode(command))) == signed_bytes(command)


def test_key_ids_are_derived_from_the_key():
    public = public_bytes(ADMIN_KEY)
    assert key_id_of(public) == "ed25519:" + hashlib.sha256(public).hexdigest()[:32]
    assert sign(grant(), ADMIN_KEY).key_id == key_id_of(public)


def test_malformed_keys_and_signatures_simply_do_not_verify():
    message = b"m"
    good = ADMIN_KEY.sign(message)
    public = public_bytes(ADMIN_KEY)
    assert verify_signature(public, good, message)
    assert not verify_signature(public, good, b"n")
    assert not verify_signature(public[:31], good, message)
    assert not verify_signature(public, good[:63], message)
    assert not verify_signature(b"\x00" * 32, good, message)


def test_trust_anchors_are_recorded_once():
    state, events = anchored()
    (event,) = events
    assert (event.actor, event.principal, event.sequence) == (ANCHOR_ACTOR, ADMIN, 1)
    assert actor_key(state, ADMIN, event.actor_key_id) is not None
    again = register_anchors(state, {ADMIN: public_bytes(ADMIN_KEY)}, now=T0, new_id=ids())
    assert again == ()  # a restarted processor records nothing new


def test_keys_fold_and_replay_alike_and_revocation_is_for_good():
    state, events = anchored()
    carol = Ed25519PrivateKey.generate()
    register = sign(
        RegisterActorKey(
            event_id="c-2",
            occurred_at=T0,
            actor=ADMIN,
            principal="human:carol",
            actor_key_id=key_id_of(public_bytes(carol)),
            public_key=public_bytes(carol),
        ),
        ADMIN_KEY,
    )
    later = T0 + timedelta(minutes=1)
    revoke = sign(
        RevokeActorKey(
            event_id="c-3", occurred_at=later, actor=ADMIN, principal="human:carol", reason="left"
        ),
        ADMIN_KEY,
    )
    for command in (register, revoke):
        outcome = decide_signed(state, command, now=command.occurred_at, new_id=ids())
        assert not isinstance(outcome, Rejection), outcome
        events += outcome
        for e in outcome:
            state = fold(state, e)
    assert replay(events) == state
    key = actor_key(state, "human:carol", key_id_of(public_bytes(carol)))
    assert key is not None and not key.active and key.revoke_reason == "left"
    # Registering a revoked key again changes nothing, even as a replayed event.
    assert fold(state, events[1]) == state


def test_the_history_proves_who_did_what_and_names_what_it_cannot():
    state, events = anchored()
    command = sign(grant(), ADMIN_KEY)
    outcome = decide_signed(state, command, now=T0, new_id=ids())
    assert not isinstance(outcome, Rejection)
    events += outcome
    verdicts = verify_history(events)
    assert [v.ok for v in verdicts] == [True, True] and verdicts[0].anchor
    (issued,) = outcome

    def problem(event: object) -> str | None:
        (_, verdict) = verify_history([*events[:1], event])
        assert not verdict.ok
        return verdict.problem

    assert "principal" in str(problem(replace(issued, principal="agent:mallory")))
    assert "not the command" in str(problem(replace(issued, command_id="c-other")))
    assert "no command signature" in str(
        problem(replace(issued, command_key_id=None, command_signature=None, signed_command=None))
    )
    forged = sign(grant(2), Ed25519PrivateKey.generate())
    assert "not a registered key" in str(
        problem(
            replace(
                issued,
                command_key_id=forged.key_id,
                command_signature=forged.signature,
                signed_command=signed_bytes(forged).decode(),
                command_id="c-2",
                grant_id="g-2",
            )
        )
    )
    bad = bytes(64)
    assert "does not verify" in str(problem(replace(issued, command_signature=bad)))


def test_a_key_revoked_before_an_event_does_not_prove_it():
    state, events = anchored()
    revoke = sign(
        RevokeActorKey(event_id="c-9", occurred_at=T0, actor=ADMIN, principal=ADMIN, reason="lost"),
        ADMIN_KEY,
    )
    revoked = decide_signed(state, revoke, now=T0, new_id=ids())
    assert not isinstance(revoked, Rejection)
    later = T0 + timedelta(seconds=1)
    command = sign(grant(at=later), ADMIN_KEY)
    # Decided against the state before the revocation (as a forger replaying it would claim).
    (issued,) = decide_signed(state, command, now=later, new_id=ids())  # type: ignore[misc]
    verdicts = verify_history([*events, *revoked, issued])
    assert verdicts[1].ok  # the revocation itself, signed by the key it revokes
    assert not verdicts[2].ok and "revoked" in str(verdicts[2].problem)


def test_a_proposal_accepted_before_a_later_limit_is_still_proven():
    # policy_governs came after ledgers had recorded proposals: verifying who proposed one
    # reads its signed document as recorded documents are read, not as a new proposal.
    from ledger.core.events import ProposePolicyVersion
    from ledger.core.limits import DEFAULT_LIMITS

    state, events = anchored()
    globs = ", ".join(f"a{i}.*" for i in range(300))
    document = f"policy: wide\ngoverns: [{globs}]\nowner: o\ndefault: {{effect: allow}}\n"
    command = sign(
        ProposePolicyVersion(
            event_id="c-1", occurred_at=T0, actor=ADMIN, policy="wide", document=document
        ),
        ADMIN_KEY,
    )
    then = replace(DEFAULT_LIMITS, policy_governs=1_000)  # the limits of the day
    outcome = decide_signed(state, command, now=T0, new_id=ids(), limits=then)
    assert not isinstance(outcome, Rejection), outcome
    verdicts = verify_history([*events, *outcome])
    assert all(v.ok for v in verdicts), verdicts


def test_a_proposal_is_proven_whether_its_numbers_were_recorded_exactly_or_as_floats():
    # A number no float holds: recorded as the float YAML gave before numbers were read
    # exactly, as written since. The signed text is the same; both readings of it prove it.
    from ledger.core.events import PolicyVersionProposed, ProposePolicyVersion
    from ledger.core.policy import parse_policy

    state, events = anchored()
    document = (
        "policy: lim\ngoverns: [pay.send]\nowner: o\n"
        "facts:\n  amount: {type: decimal, max: 999.99999999999999999}\n"
        "default: {effect: allow}\n"
    )
    command = sign(
        ProposePolicyVersion(
            event_id="c-1", occurred_at=T0, actor=ADMIN, policy="lim", document=document
        ),
        ADMIN_KEY,
    )
    outcome = decide_signed(state, command, now=T0, new_id=ids())
    assert not isinstance(outcome, Rejection), outcome
    (proposed,) = outcome
    assert isinstance(proposed, PolicyVersionProposed) and "999.99999999999999999" in (
        proposed.document
    )
    assert all(v.ok for v in verify_history([*events, proposed]))
    before = parse_policy(document.replace("999.99999999999999999", '"1000.0"'))
    recorded_before = replace(proposed, document=before.canonical, content_hash=before.content_hash)
    assert all(v.ok for v in verify_history([*events, recorded_before]))
    other = parse_policy(document.replace("999.99999999999999999", '"999.5"'))
    forged = replace(proposed, document=other.canonical, content_hash=other.content_hash)
    assert not verify_history([*events, forged])[-1].ok


def test_an_empty_note_or_reason_is_recorded_and_proven_as_given():
    # The processor records a grant's note and a revocation's reason as sent, "" included; the
    # strict comparison of the signed command with the event took "" for none and called
    # both events unproven.
    from ledger.core.events import RevokeGrant

    state, events = anchored()
    issued = decide_signed(state, sign(replace(grant(), note=""), ADMIN_KEY), now=T0, new_id=ids())
    assert not isinstance(issued, Rejection), issued
    for event in issued:
        state = fold(state, event)
    revoke = RevokeGrant(event_id="c-9", occurred_at=T0, actor=ADMIN, grant_id="g-1", reason="")
    revoked = decide_signed(state, sign(revoke, ADMIN_KEY), now=T0, new_id=ids())
    assert not isinstance(revoked, Rejection), revoked
    verdicts = verify_history([*events, *issued, *revoked])
    assert all(v.ok for v in verdicts), [v for v in verdicts if not v.ok]


def test_a_promotions_note_is_signed_when_set_and_an_older_clients_command_still_verifies():
    """`note` came to PromotePolicyVersion after signing began: a command without one is signed
    as clients before it signed (no `note` key), so their signatures still verify; one with a
    note covers it, and an event whose note differs from its signed command is unproven."""
    from ledger.core.events import PolicyVersionPromoted, PromotePolicyVersion, Stage
    from ledger.core.jsonform import canonical_json
    from ledger.core.signing import verify_event

    plain = PromotePolicyVersion(
        event_id="c-1", occurred_at=T0, actor=ADMIN, policy="refund", version=1, stage=Stage.ACTIVE
    )
    older = json.loads((ROOT / "schemas" / "history" / "PromotePolicyVersion.v2.avsc").read_text())
    before = {
        f["name"]: getattr(plain, f["name"])
        for f in older["fields"]
        if f["name"] not in ("key_id", "signature")
    }
    assert signed_bytes(plain) == canonical_json(
        {"domain": DOMAIN, "type": "PromotePolicyVersion", "command": before}
    )
    noted = replace(plain, note="a week in shadow, no differences")
    assert json.loads(signed_bytes(noted))["command"]["note"] == noted.note

    state, _ = anchored()
    for command in (plain, noted):
        signed = sign(command, ADMIN_KEY)
        event = PolicyVersionPromoted(
            event_id="e-1",
            occurred_at=T0,
            actor=ADMIN,
            command_id="c-1",
            policy="refund",
            sequence=3,
            version=1,
            stage=Stage.ACTIVE,
            note=command.note,
            command_key_id=signed.key_id,
            command_signature=signed.signature,
            signed_command=signed_bytes(signed).decode(),
        )
        assert verify_event(state, event).ok
        forged = verify_event(state, replace(event, note="approved by the board"))
        assert not forged.ok and "note" in str(forged.problem)


def _the_version_seen(kind: str) -> tuple[Any, Any, str, int, int]:
    """A command without its version-seen field, the event it produced, the field, its value
    and a value the event could be forged to."""
    from ledger.core.events import (
        PolicyRolledBack,
        PolicyVersionPromoted,
        PromotePolicyVersion,
        RollbackPolicy,
        Stage,
    )

    stamp = {"event_id": "c-1", "occurred_at": T0, "actor": ADMIN, "policy": "refund"}
    made = {"event_id": "e-1", "occurred_at": T0, "actor": ADMIN, "command_id": "c-1"}
    if kind == "rollback":
        command: Any = RollbackPolicy(**stamp, reason="v3 is bad")
        event: Any = PolicyRolledBack(
            **made, policy="refund", sequence=4, from_version=3, to_version=2, reason="v3 is bad"
        )
        return command, event, "from_version", 3, 2
    command = PromotePolicyVersion(**stamp, version=3, stage=Stage.ACTIVE)
    event = PolicyVersionPromoted(
        **made, policy="refund", sequence=5, version=3, stage=Stage.ACTIVE, previous_version=2
    )
    return command, event, "previous_version", 2, 1


@pytest.mark.parametrize("kind", ["rollback", "promotion"])
def test_the_version_a_command_names_is_signed_when_set_and_proven_against_its_event(
    kind: str,
) -> None:
    """`from_version` (`policy rollback --from`) and `previous_version` (`policy promote
    --replacing`) came after signing began: a command without one is signed as before (no such
    key: its older schema's fields, for the rollback), and its event's value is the
    processor's to fill in; one with it covers it, and an event whose value differs from the
    signed command's is unproven."""
    from ledger.core.jsonform import canonical_json
    from ledger.core.signing import verify_event

    plain, event, name, value, forged_value = _the_version_seen(kind)
    assert name not in json.loads(signed_bytes(plain))["command"]
    if kind == "rollback":
        older = json.loads((ROOT / "schemas" / "history" / "RollbackPolicy.v2.avsc").read_text())
        before = {
            f["name"]: getattr(plain, f["name"])
            for f in older["fields"]
            if f["name"] not in ("key_id", "signature")
        }
        assert signed_bytes(plain) == canonical_json(
            {"domain": DOMAIN, "type": "RollbackPolicy", "command": before}
        )
    seen = replace(plain, **{name: value})
    assert json.loads(signed_bytes(seen))["command"][name] == value
    state, _ = anchored()
    for command in (plain, seen):
        signed = sign(command, ADMIN_KEY)
        proven = replace(
            event,
            command_key_id=signed.key_id,
            command_signature=signed.signature,
            signed_command=signed_bytes(signed).decode(),
        )
        assert verify_event(state, proven).ok
        if getattr(command, name) is not None:
            forged = verify_event(state, replace(proven, **{name: forged_value}))
            assert not forged.ok and name in str(forged.problem)


def test_a_signed_event_its_actor_had_no_authority_for_is_not_proven():
    # A red team rewrote the command processor's snapshot to give human:mallory (no grant in
    # the history) everything; her grants were accepted, and `actor verify` proved every event:
    # a signature shows who sent a command, not that they might. Each event's actor must have
    # held the grant for it in the history before it.
    from ledger.core.events import ApprovePolicyVersion, GrantIssued, ProposePolicyVersion

    _, events = anchored()
    mallory = Ed25519PrivateKey.generate()
    new_id = ids()

    def accepted(command: object, key: Ed25519PrivateKey, history: list[object]) -> list[object]:
        at = replay(history, EMPTY_STATE)  # type: ignore[arg-type]
        out = decide_signed(at, sign(command, key), now=T0, new_id=new_id)  # type: ignore[arg-type]
        assert not isinstance(out, Rejection), out
        return list(out)

    register = RegisterActorKey(
        event_id="c-key",
        occurred_at=T0,
        actor=ADMIN,
        principal="human:mallory",
        actor_key_id=key_id_of(public_bytes(mallory)),
        public_key=public_bytes(mallory),
    )
    events += accepted(register, ADMIN_KEY, events)
    # The processor's state as the forged snapshot made it: a grant no event issued.
    forged = GrantIssued(
        event_id="forged",
        occurred_at=T0,
        actor=ADMIN,
        command_id="forged",
        principal="human:mallory",
        sequence=2,
        grant_id="forged",
        actions=("*",),
        resource="*",
    )
    issued = accepted(grant(7, actor="human:mallory"), mallory, [*events, forged])
    verdicts = verify_history([*events, *issued])
    assert [v.ok for v in verdicts] == [True, True, False]
    assert str(verdicts[-1].problem).startswith(
        "human:mallory held no grant of ledger.grant.issue on principal:agent:bot at 2026-01-01"
    )
    # Granted by an administrator in the history, the same command is proven.
    real = IssueGrant(
        event_id="c-real",
        occurred_at=T0,
        actor=ADMIN,
        grant_id="real",
        principal="human:mallory",
        actions=("ledger.grant.issue", "ledger.policy.*", "refund.*"),
        resource="*",
    )
    history = [*events, *accepted(real, ADMIN_KEY, events)]
    history += accepted(grant(8, actor="human:mallory"), mallory, history)
    assert all(v.ok for v in verify_history(history))
    # Approving one's own version is not proven, whatever the grants: the approval below was
    # decided where an administrator had proposed version 1, then set after mallory's own.
    document = (ROOT / "examples" / "policies" / "refund.yaml").read_text()

    def propose(actor: str, key: Ed25519PrivateKey) -> list[object]:
        command = ProposePolicyVersion(
            event_id=f"c-p-{actor}", occurred_at=T0, actor=actor, document=document, policy="refund"
        )
        return accepted(command, key, history)

    elsewhere = [*history, *propose(ADMIN, ADMIN_KEY)]
    approve = ApprovePolicyVersion(
        event_id="c-a", occurred_at=T0, actor="human:mallory", policy="refund", version=1
    )
    approval = accepted(approve, mallory, elsewhere)
    assert all(v.ok for v in verify_history([*elsewhere, *approval]))
    # As the history is read (each topic in its log order: the policy topic's first), the
    # authority an approval needs comes later in the list than the approval: merged by time.
    from ledger.core.events import GRANT_EVENT_TYPES

    read = [*elsewhere, *approval]
    policy_first = [e for e in read if not isinstance(e, GRANT_EVENT_TYPES)] + [
        e for e in read if isinstance(e, GRANT_EVENT_TYPES)
    ]
    assert policy_first != read and all(v.ok for v in verify_history(policy_first))
    verdicts = verify_history([*history, *propose("human:mallory", mallory), *approval])
    assert not verdicts[-1].ok
    assert verdicts[-1].problem == "human:mallory approved its own version 1 of refund"


def test_what_an_event_was_authorized_as_is_what_its_command_was(
    monkeypatch: Any,
) -> None:
    # actor verify re-checks each event as event_action says; the command processor checked
    # its command as command_action says: the two must agree for every kind of command.
    import ledger.testing
    from ledger.core.events import (
        GRANT_EVENT_TYPES,
        RetirePolicy,
        RevokeRole,
        RollbackPolicy,
    )
    from ledger.core.lifecycle.commands import command_action
    from ledger.core.signing import event_action
    from ledger.ids import new_id

    seen: list[tuple[object, object]] = []
    real = ledger.testing.decide

    def recording(state: Any, command: Any, **kw: Any) -> Any:
        out = real(state, command, **kw)
        if not isinstance(out, Rejection):
            seen.extend((command, event) for event in out)
        return out

    monkeypatch.setattr(ledger.testing, "decide", recording)
    led = ledger.testing.LocalLedger()
    refund = (ROOT / "examples" / "policies" / "refund.yaml").read_text()
    led.deploy(refund)
    led.deploy(refund.replace("Outside refund policy", "Outside the refund policy"))
    gid = led.grant("agent:bot", "refund.*", "*")
    led.revoke_grant(gid)
    led.assign_role("human:bob", "role:approvers")
    key = Ed25519PrivateKey.generate()
    stamp = {"occurred_at": led.clock(), "actor": ADMIN}
    for command in (
        RevokeRole(event_id=new_id(), principal="human:bob", role="role:approvers", **stamp),
        RegisterActorKey(
            event_id=new_id(),
            principal="human:bob",
            actor_key_id=key_id_of(public_bytes(key)),
            public_key=public_bytes(key),
            **stamp,
        ),
        RevokeActorKey(event_id=new_id(), principal="human:bob", reason="left", **stamp),
        RollbackPolicy(event_id=new_id(), policy="refund", reason="bad", **stamp),
        RetirePolicy(event_id=new_id(), policy="refund", reason="gone", **stamp),
    ):
        led.submit_command(command)
    kinds = {type(event).__name__ for _, event in seen}
    assert len(kinds) == 11, kinds  # every kind of governance event
    for command, event in seen:
        principal = event.principal if isinstance(event, GRANT_EVENT_TYPES) else None  # type: ignore[attr-defined]
        assert event_action(event) == command_action(command, grant_principal=principal), event  # type: ignore[arg-type]


def test_administrators_are_those_configured_too_and_none_may_approve_their_own_version():
    # A review: an administrator of $LEDGER_ADMINS whose key another administrator registered
    # (no trust anchor) had every command UNPROVEN; an administrator approving their own
    # version was proven, though the processor refuses it.
    from ledger.core.events import ApprovePolicyVersion, ProposePolicyVersion

    _, events = anchored()
    root = Ed25519PrivateKey.generate()
    new_id = ids()

    def accepted(command: object, key: Ed25519PrivateKey, admins: frozenset[str]) -> list[object]:
        at = replay(events, EMPTY_STATE)  # type: ignore[arg-type]
        out = decide_signed(at, sign(command, key), now=T0, new_id=new_id, admins=admins)  # type: ignore[arg-type]
        assert not isinstance(out, Rejection), out
        return list(out)

    both = frozenset({ADMIN, "human:root"})
    events += accepted(
        RegisterActorKey(
            event_id="c-root",
            occurred_at=T0,
            actor=ADMIN,
            principal="human:root",
            actor_key_id=key_id_of(public_bytes(root)),
            public_key=public_bytes(root),
        ),
        ADMIN_KEY,
        both,
    )
    events += accepted(grant(9, actor="human:root"), root, both)
    assert not verify_history(events)[-1].ok  # not known as an administrator
    assert all(v.ok for v in verify_history(events, admins=both))
    document = (ROOT / "examples" / "policies" / "refund.yaml").read_text()

    def proposal(actor: str) -> ProposePolicyVersion:
        return ProposePolicyVersion(
            event_id=f"c-p-{actor}", occurred_at=T0, actor=actor, document=document, policy="refund"
        )

    before = list(events)
    events += accepted(proposal("human:root"), root, both)  # root proposes, the admin approves
    approval = accepted(
        ApprovePolicyVersion(
            event_id="c-a", occurred_at=T0, actor=ADMIN, policy="refund", version=1
        ),
        ADMIN_KEY,
        both,
    )
    assert verify_history([*events, *approval], admins=both)[-1].ok
    # The same approval after the admin's own proposal (a processor that skipped the check).
    events = before
    own = accepted(proposal(ADMIN), ADMIN_KEY, both)
    verdict = verify_history([*before, *own, *approval], admins=both)[-1]
    assert not verdict.ok and verdict.problem == "human:admin approved its own version 1 of refund"


def test_what_a_delegate_handed_on_beyond_its_own_grants_is_not_proven() -> None:
    # A red team: `actor verify` proved a grant of ledger.* by a delegate who held only
    # ledger.grant.issue on one bot, a key for human:admin registered by a delegate, and a
    # version made active with no approval, all of which the command processor refuses. Here
    # each is decided by a processor that skipped the check (the delegate taken for an
    # administrator, the approval it read forged), and verify must name it.
    from ledger.core.events import (
        AssignRole,
        PolicyVersionApproved,
        PromotePolicyVersion,
        ProposePolicyVersion,
        Stage,
    )

    _, events = anchored()
    alice = Ed25519PrivateKey.generate()
    new_id = ids()

    def decided(
        command: object,
        key: Ed25519PrivateKey,
        *,
        skipping: frozenset[str] = frozenset(),
        state: LedgerState | None = None,
    ) -> list[object]:
        at = state if state is not None else replay(events, EMPTY_STATE)  # type: ignore[arg-type]
        out = decide_signed(
            at,
            sign(command, key),
            now=T0,
            new_id=new_id,
            admins=frozenset({ADMIN}) | skipping,  # type: ignore[arg-type]
        )
        assert not isinstance(out, Rejection), out
        return list(out)

    def issue(n: int, to: str, actions: tuple[str, ...], resource: str, by: str) -> IssueGrant:
        return IssueGrant(
            event_id=f"c-{n}", occurred_at=T0, actor=by, grant_id=f"g-{n}", principal=to,
            actions=actions, resource=resource,
        )  # fmt: skip

    events += decided(
        RegisterActorKey(
            event_id="c-alice", occurred_at=T0, actor=ADMIN, principal="human:alice",
            actor_key_id=key_id_of(public_bytes(alice)), public_key=public_bytes(alice),
        ),
        ADMIN_KEY,
    )  # fmt: skip
    powers = ("ledger.grant.issue", "ledger.role.assign", "ledger.key.register")
    events += decided(issue(1, "human:alice", powers, "*", ADMIN), ADMIN_KEY)
    events += decided(issue(2, "role:ops", ("refund.*",), "*", ADMIN), ADMIN_KEY)
    events += decided(
        issue(3, "human:alice", ("ledger.policy.propose", "ledger.policy.promote"), "*", ADMIN),
        ADMIN_KEY,
    )
    assert all(v.ok for v in verify_history(events))
    skipped = frozenset({"human:alice"})
    amplified = decided(
        issue(4, "agent:bot", ("ledger.*",), "*", "human:alice"), alice, skipping=skipped
    )
    role = decided(
        AssignRole(
            event_id="c-role", occurred_at=T0, actor="human:alice", principal="agent:bot",
            role="role:ops",
        ),
        alice,
        skipping=skipped,
        state=replay([*events, *amplified], EMPTY_STATE),  # type: ignore[arg-type]
    )  # fmt: skip
    mine = Ed25519PrivateKey.generate()
    admin_key = decided(
        RegisterActorKey(
            event_id="c-admin", occurred_at=T0, actor="human:alice", principal=ADMIN,
            actor_key_id=key_id_of(public_bytes(mine)), public_key=public_bytes(mine),
        ),
        alice,
        skipping=skipped,
        state=replay([*events, *amplified, *role], EMPTY_STATE),  # type: ignore[arg-type]
    )  # fmt: skip
    verdicts = verify_history([*events, *amplified, *role, *admin_key])[len(events) :]
    assert [v.ok for v in verdicts] == [False, False, False]
    assert str(verdicts[0].problem).startswith(
        "human:alice handed on 'ledger.*' on '*', which its own grants in force at 2026-01-01"
    )
    assert "'refund.*' on '*' (through role:ops)" in str(verdicts[1].problem)
    assert str(verdicts[2].problem).startswith(
        "human:alice may not register a key for human:admin: only an administrator registers"
    )
    # The honest processor refuses each, with the same rules.
    for command in (
        issue(5, "agent:bot", ("ledger.*",), "*", "human:alice"),
        RegisterActorKey(
            event_id="c-admin2", occurred_at=T0, actor="human:alice", principal=ADMIN,
            actor_key_id=key_id_of(public_bytes(mine)), public_key=public_bytes(mine),
        ),
    ):  # fmt: skip
        refused = decide_signed(
            replay(events, EMPTY_STATE),  # type: ignore[arg-type]
            sign(command, alice),
            now=T0,
            new_id=new_id,  # type: ignore[arg-type]
            admins=frozenset({ADMIN}),
        )
        assert isinstance(refused, Rejection) and refused.code == "not_authorized", refused
    # A version made active without an approval: the processor read a forged approval.
    document = (ROOT / "examples" / "policies" / "refund.yaml").read_text()
    proposed = decided(
        ProposePolicyVersion(
            event_id="c-p", occurred_at=T0, actor="human:alice", document=document,
            policy="refund",
        ),
        alice,
    )  # fmt: skip
    events += proposed
    state = replay(events, EMPTY_STATE)  # type: ignore[arg-type]
    forged = fold(
        state,
        PolicyVersionApproved(
            event_id="forged", occurred_at=T0, actor="human:bob", command_id="forged",
            policy="refund", sequence=state.policies["refund"].sequence + 1, version=1,
        ),
    )  # fmt: skip
    promote = PromotePolicyVersion(
        event_id="c-promote", occurred_at=T0, actor="human:alice", policy="refund", version=1,
        stage=Stage.ACTIVE,
    )  # fmt: skip
    (promoted,) = decided(promote, alice, state=forged)
    promoted = replace(promoted, sequence=state.policies["refund"].sequence + 1)  # type: ignore[type-var]
    verdict = verify_history([*events, promoted])[-1]
    assert not verdict.ok
    assert verdict.problem == (
        "refund v1 was promoted to active without an approval (at 2026-01-01T00:00:00Z, in "
        "the history merged by time): the command processor should have refused it"
    )


def test_an_approval_with_a_key_the_author_registered_is_not_proven() -> None:
    # A review: a delegate registered a key for an approver whose grants its own covered, then
    # approved its own version with it. A delegate registers no key for another principal now;
    # such a key from before (here: a processor that took carol for an administrator) still
    # counts as the delegate's for the two-person rule, in the processor and in verify.
    from ledger.core.events import ApprovePolicyVersion, ProposePolicyVersion

    _, events = anchored()
    carol, dave = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    new_id = ids()

    decided = _deciding(events, new_id)

    real = frozenset({ADMIN})
    events += decided(
        _registration("c-carol", ADMIN, "human:carol", carol),
        ADMIN_KEY,
        real,
    )  # fmt: skip
    powers = ("ledger.key.register", "ledger.policy.propose", "ledger.policy.approve")
    events += decided(
        IssueGrant(
            event_id="c-g1", occurred_at=T0, actor=ADMIN, grant_id="g1", principal="human:carol",
            actions=powers, resource="*",
        ),
        ADMIN_KEY,
        real,
    )  # fmt: skip
    events += decided(
        IssueGrant(
            event_id="c-g2", occurred_at=T0, actor=ADMIN, grant_id="g2", principal="human:dave",
            actions=("ledger.key.register",), resource="principal:human:dave",
        ),
        ADMIN_KEY,
        real,
    )  # fmt: skip
    events += decided(  # an approver: authority is checked before the two-person rule
        IssueGrant(
            event_id="c-g3", occurred_at=T0, actor=ADMIN, grant_id="g3", principal="human:dave",
            actions=("ledger.policy.approve",), resource="policy:*",
        ),
        ADMIN_KEY,
        real,
    )  # fmt: skip
    events += decided(
        RegisterActorKey(
            event_id="c-dave", occurred_at=T0, actor="human:carol", principal="human:dave",
            actor_key_id=key_id_of(public_bytes(dave)), public_key=public_bytes(dave),
        ),
        carol,
        real | {"human:carol"},  # a registration from before delegates were refused it
    )  # fmt: skip
    document = (ROOT / "examples" / "policies" / "refund.yaml").read_text()
    events += decided(
        ProposePolicyVersion(
            event_id="c-p", occurred_at=T0, actor="human:carol", document=document,
            policy="refund",
        ),
        carol,
        real,
    )  # fmt: skip
    registration = verify_history(events)[-2]  # held to today's rule
    assert not registration.ok and "only an administrator registers" in str(registration.problem)
    approve = ApprovePolicyVersion(
        event_id="c-a", occurred_at=T0, actor="human:dave", policy="refund", version=1
    )
    refused = decide_signed(
        replay(events, EMPTY_STATE),  # type: ignore[arg-type]
        sign(approve, dave),
        now=T0,
        new_id=new_id,
        admins=real,
    )
    assert isinstance(refused, Rejection) and refused.code == "self_approval", refused
    # Nor does that key register a second one in dave's name, which would pass for his own.
    second = Ed25519PrivateKey.generate()
    again = decide_signed(
        replay(events, EMPTY_STATE),  # type: ignore[arg-type]
        sign(_registration("c-again", "human:dave", "human:dave", second), dave),
        now=T0,
        new_id=new_id,
        admins=real,
    )
    assert isinstance(again, Rejection) and "registers no further keys" in again.message, again
    assert "human:dave makes a new pair (`ledger actor keygen human:dave`)" in again.message
    # An operator's upgrade: registering that key again was "already a key of", no way on.
    same = decide_signed(
        replay(events, EMPTY_STATE),  # type: ignore[arg-type]
        sign(_registration("c-same", ADMIN, "human:dave", dave), ADMIN_KEY),
        now=T0,
        new_id=new_id,
        admins=real,
    )
    assert isinstance(same, Rejection) and same.code == "already_applied", same
    assert same.message.endswith(
        "registered by human:carol, whose limits it keeps: to replace it, human:dave makes a "
        "new pair (`ledger actor keygen human:dave`), an administrator registers it (`ledger "
        "actor add human:dave --public-key FILE --by ADMIN`) and revokes the old one (`ledger "
        "actor revoke human:dave --key ID --by ADMIN`)"
    ), same.message
    skipped = decided(approve, dave, real | {"human:carol", "human:dave"})
    verdict = verify_history([*events, *skipped])[-1]
    assert not verdict.ok
    assert verdict.problem == (
        "human:dave approved version 1 of refund with a key its author human:carol registered: "
        "the command processor should have refused it"
    )
    # A review: that second key, registered before this release (a processor that took dave
    # for an administrator), was dave's own and approved carol's version. A key a principal
    # registered is as good as the key that signed its registration: still carol's.
    events += decided(
        _registration("c-again", "human:dave", "human:dave", second),
        dave,
        real | {"human:carol", "human:dave"},
    )
    refused = decide_signed(
        replay(events, EMPTY_STATE),  # type: ignore[arg-type]
        sign(approve, second),
        now=T0,
        new_id=new_id,
        admins=real,
    )
    assert isinstance(refused, Rejection) and refused.code == "self_approval", refused
    skipped = decided(approve, second, real | {"human:carol", "human:dave"})
    verdict = verify_history([*events, *skipped])[-1]
    assert not verdict.ok and "its author human:carol registered" in str(verdict.problem)


def test_only_who_may_register_a_principals_keys_is_told_whose_a_key_is() -> None:
    # A review: registering a key already registered was answered "already_applied: … is
    # already a key of human:carol" (or "was registered to human:carol before") ahead of the
    # authorization check: anyone could learn whose a public key is.
    _, events = anchored()
    carol, eve = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    decided = _deciding(events, ids())
    real = frozenset({ADMIN})
    events += decided(_registration("c-carol", ADMIN, "human:carol", carol), ADMIN_KEY, real)
    events += decided(_registration("c-eve", ADMIN, "human:eve", eve), ADMIN_KEY, real)

    def register(by: str, key: Ed25519PrivateKey, principal: str) -> object:
        return decide_signed(
            replay(events, EMPTY_STATE),  # type: ignore[arg-type]
            sign(_registration("c-probe", by, principal, carol), key),
            now=T0,
            new_id=ids(),  # type: ignore[arg-type]
            admins=real,
        )

    for principal in ("human:carol", "human:eve"):
        probe = register("human:eve", eve, principal)
        assert isinstance(probe, Rejection) and probe.code == "not_authorized", probe
        assert "is already a key" not in probe.message and "registered to" not in probe.message
    assert "human:carol" not in register("human:eve", eve, "human:eve").message  # type: ignore[attr-defined]
    again = register(ADMIN, ADMIN_KEY, "human:carol")  # one who may: told, as before
    assert isinstance(again, Rejection) and again.code == "already_applied", again
    assert again.message.endswith("is already a key of human:carol")


def test_a_delegate_revoking_a_former_administrators_key_is_proven() -> None:
    # A review: verify took every trust anchor for an administrator whose keys only
    # administrators may revoke, while the processor protects those it is configured with: a
    # delegate revoking a former administrator's key was UNPROVEN.
    from ledger.core.events import RevokeActorKey

    _, events = anchored()
    carol = Ed25519PrivateKey.generate()
    new_id = ids()

    decided = _deciding(events, new_id)

    then = frozenset({ADMIN})
    events += decided(
        _registration("c-carol", ADMIN, "human:carol", carol),
        ADMIN_KEY,
        then,
    )  # fmt: skip
    events += decided(
        IssueGrant(
            event_id="c-g", occurred_at=T0, actor=ADMIN, grant_id="g", principal="human:carol",
            actions=("ledger.key.revoke",), resource="principal:human:*",
        ),
        ADMIN_KEY,
        then,
    )  # fmt: skip
    now = frozenset({"human:root"})  # human:admin is an administrator no more
    revoke = RevokeActorKey(
        event_id="c-r", occurred_at=T0, actor="human:carol", principal=ADMIN, reason="left"
    )
    events += decided(revoke, carol, now)
    assert all(v.ok for v in verify_history(events, admins=now)), [
        v.problem for v in verify_history(events, admins=now)
    ]
    # Still an administrator where verify runs: a delegate may not have revoked its key.
    assert not verify_history(events, admins=then)[-1].ok


def test_an_administrator_whose_key_a_delegate_registered_signs_nothing_now() -> None:
    # A review: an administrator whose key a delegate registered (before delegates were
    # refused it) could issue itself anything, but not register a new colleague's key, which
    # actor verify proved: administrators are exempt from a registrar's limits everywhere.
    _, events = anchored()
    carol, bob, newhire = (Ed25519PrivateKey.generate() for _ in range(3))
    new_id = ids()
    decided = _deciding(events, new_id)
    real = frozenset({ADMIN})
    events += decided(_registration("c-carol", ADMIN, "human:carol", carol), ADMIN_KEY, real)
    events += decided(
        IssueGrant(
            event_id="c-g1", occurred_at=T0, actor=ADMIN, grant_id="g1", principal="human:carol",
            actions=("ledger.key.register",), resource="principal:human:*",
        ),
        ADMIN_KEY,
        real,
    )  # fmt: skip
    events += decided(
        _registration("c-bob", "human:carol", "human:bob", bob), carol, real | {"human:carol"}
    )  # accepted before this release
    admins = real | {"human:bob"}  # bob is an administrator now
    # The key a delegate registered for bob does not sign for him as an administrator: whoever
    # registers a key may hold its private half (a review: an insider writing a delegate's
    # refused registration of its own key for human:admin).
    at = replay(events, EMPTY_STATE)  # type: ignore[arg-type]
    command = sign(_registration("c-new", "human:bob", "human:newhire", newhire), bob)
    refused = decide_signed(at, command, now=T0, new_id=new_id, admins=admins)  # type: ignore[arg-type]
    assert isinstance(refused, Rejection) and (
        "only an administrator registers a key of the administrator human:bob" in refused.message
    )
    # Registered before this release, it was proven by verify, which still does.
    (registered,) = decide(at, command, now=T0, new_id=new_id, admins=admins)  # type: ignore[misc]
    proof = {
        "command_key_id": command.key_id,
        "command_signature": command.signature,
        "signed_command": signed_bytes(command).decode(),
    }
    events.append(replace(registered, **proof))
    assert verify_history(events, admins=admins)[-1].ok


def _deciding(events: list[object], new_id: Any) -> Any:
    """``decided(command, key, admins)``: the events a signed ``command`` is accepted as after
    ``events`` (as they stand when it is called), by a processor configured with ``admins``."""

    def decided(command: object, key: Ed25519PrivateKey, admins: frozenset[str]) -> list[object]:
        at = replay(events, EMPTY_STATE)  # type: ignore[arg-type]
        out = decide_signed(at, sign(command, key), now=T0, new_id=new_id, admins=admins)  # type: ignore[arg-type]
        assert not isinstance(out, Rejection), out
        return list(out)

    return decided


def _registration(
    event_id: str, by: str, principal: str, key: Ed25519PrivateKey
) -> RegisterActorKey:
    return RegisterActorKey(
        event_id=event_id, occurred_at=T0, actor=by, principal=principal,
        actor_key_id=key_id_of(public_bytes(key)), public_key=public_bytes(key),
    )  # fmt: skip


def test_a_grant_to_a_role_that_reached_a_delegates_member_is_not_proven_by_authority() -> None:
    # A red team's sequence, accepted before the rule: a delegate assigned itself an empty
    # role, then an administrator's grant to the role reached it. actor verify proved it all;
    # now the grant fails authority only (signed by its actor: EARLIER-RULES with
    # --accepted-before), and the same grant after an administrator re-assigned is proven.
    from ledger.core.events import AssignRole, RevokeRole
    from ledger.core.signing import _unauthorized

    _, events = anchored()
    dave = Ed25519PrivateKey.generate()
    decided = _deciding(events, ids())
    admins = frozenset({ADMIN})
    events += decided(_registration("c-dave", ADMIN, "human:dave", dave), ADMIN_KEY, admins)
    events += decided(
        IssueGrant(
            event_id="c-g1", occurred_at=T0, actor=ADMIN, grant_id="g1", principal="human:dave",
            actions=("ledger.role.assign",), resource="role:*",
        ),
        ADMIN_KEY,
        admins,
    )  # fmt: skip
    events += decided(
        AssignRole(
            event_id="c-a", occurred_at=T0, actor="human:dave", principal="human:dave",
            role="role:rm",
        ),
        dave,
        admins,
    )  # fmt: skip

    def to_role(n: int) -> IssueGrant:
        return IssueGrant(
            event_id=f"c-rm{n}", occurred_at=T0, actor=ADMIN, grant_id=f"g-rm{n}",
            principal="role:rm", actions=("ledger.policy.approve",), resource="policy:*",
        )  # fmt: skip

    refused = decide_signed(
        replay(events, EMPTY_STATE),  # type: ignore[arg-type]
        sign(to_role(1), ADMIN_KEY),
        now=T0,
        new_id=ids(),  # type: ignore[arg-type]
        admins=admins,
    )
    assert isinstance(refused, Rejection) and refused.code == "not_authorized"
    # As an earlier release accepted it (here: a processor taking dave for an administrator).
    events += decided(to_role(1), ADMIN_KEY, admins | {"human:dave"})
    *earlier, last = verify_history(events, admins=admins)
    # verify keeps each role's members as it goes; asked of one state, they are looked up.
    before = replay(events[:-1], EMPTY_STATE)  # type: ignore[arg-type]
    assert _unauthorized(before, events[-1], admins) == last.problem  # type: ignore[arg-type]
    assert all(v.ok for v in earlier), [v.problem for v in earlier]
    assert not last.ok and last.authority and last.event_type == "GrantIssued"
    assert last.problem == (
        "grant 'g-rm1' to role:rm would reach human:dave, whom human:dave (not an "
        "administrator) assigned to it, and human:dave does not hold 'ledger.policy.approve' "
        "on 'policy:*' (2026-01-01T00:00:00Z): the command processor should have refused it"
    )
    # Re-assigned by an administrator: a later grant to the role is proven.
    for command in (
        RevokeRole(
            event_id="c-r", occurred_at=T0, actor=ADMIN, principal="human:dave", role="role:rm"
        ),
        AssignRole(
            event_id="c-a2", occurred_at=T0, actor=ADMIN, principal="human:dave", role="role:rm"
        ),
        to_role(2),
    ):
        events += decided(command, ADMIN_KEY, admins)
    assert verify_history(events, admins=admins)[-1].ok


def _fold_all(state: LedgerState, events: Any) -> LedgerState:
    for event in events:
        state = fold(state, event)
    return state


def test_a_proposal_whose_document_does_not_hash_to_its_content_hash_is_not_proven_nor_run():
    # A red team, with the command processor's credential: a permissive document recorded
    # under a strict one's content hash and signature decided requests, and every check here
    # proved the event (the signed document's hash was compared; the recorded one never was).
    from ledger.core.events import ProposePolicyVersion
    from ledger.core.policy import parse_policy

    state, events = anchored()
    strict = "policy: pay\ngoverns: [pay.send]\nowner: o\ndefault: {effect: deny}\n"
    command = sign(
        ProposePolicyVersion(
            event_id="c-1", occurred_at=T0, actor=ADMIN, policy="pay", document=strict
        ),
        ADMIN_KEY,
    )
    outcome = decide_signed(state, command, now=T0, new_id=ids())
    assert not isinstance(outcome, Rejection), outcome
    (proposed,) = outcome
    assert all(v.ok for v in verify_history([*events, proposed]))
    genuine = _fold_all(state, [proposed]).policies["pay"].versions[1]
    assert genuine.compiled is not None and genuine.compiled.default.effect.value == "deny"
    permissive = parse_policy(strict.replace("effect: deny", "effect: allow"))
    swapped = replace(proposed, document=permissive.canonical)
    verdict = verify_history([*events, swapped])[-1]
    assert not verdict.ok and "does not hash to its content_hash" in str(verdict.problem)
    version = _fold_all(state, [swapped]).policies["pay"].versions[1]
    assert version.compiled is None  # it decides nothing but an error


def test_a_signed_command_applied_again_is_not_proven():
    # A red team, with the command processor's credential: a genuine RoleAssigned written
    # again after the role was revoked (a new event id, the next sequence, a time within the
    # command's validity) gave the role back, and every check here proved the copy.
    from ledger.core.events import AssignRole, RevokeRole

    state, events = anchored()
    for command in (
        AssignRole(
            event_id="c-1",
            occurred_at=T0,
            actor=ADMIN,
            principal="human:carol",
            role="role:approvers",
        ),
        RevokeRole(
            event_id="c-2",
            occurred_at=T0,
            actor=ADMIN,
            principal="human:carol",
            role="role:approvers",
        ),
    ):
        outcome = decide_signed(state, sign(command, ADMIN_KEY), now=T0, new_id=ids())
        assert not isinstance(outcome, Rejection), outcome
        events += outcome
        state = _fold_all(state, outcome)
    assert all(v.ok for v in verify_history(events))
    assigned, revoked = events[-2], events[-1]
    copy = replace(assigned, event_id="e-copy", sequence=revoked.sequence + 1)
    verdict = verify_history([*events, copy])[-1]
    assert not verdict.ok and not verdict.authority
    assert f"its signed command c-1 already produced event {assigned.event_id}" in str(
        verdict.problem
    )


def test_revoking_every_key_of_an_actor_is_one_command_of_several_events_and_proven():
    state, events = anchored()
    for n, seed in enumerate((b"one", b"two"), start=1):
        key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
        command = RegisterActorKey(
            event_id=f"c-k{n}",
            occurred_at=T0,
            actor=ADMIN,
            principal="human:bob",
            actor_key_id=key_id_of(public_bytes(key)),
            public_key=public_bytes(key),
        )
        outcome = decide_signed(state, sign(command, ADMIN_KEY), now=T0, new_id=ids())
        assert not isinstance(outcome, Rejection), outcome
        events += outcome
        state = _fold_all(state, outcome)
    revoke = RevokeActorKey(
        event_id="c-all", occurred_at=T0, actor=ADMIN, principal="human:bob", reason="left"
    )
    outcome = decide_signed(state, sign(revoke, ADMIN_KEY), now=T0, new_id=ids())
    assert not isinstance(outcome, Rejection), outcome
    assert len(outcome) == 2  # one event per key, one command
    verdicts = verify_history([*events, *outcome])
    assert all(v.ok for v in verdicts), [v.problem for v in verdicts]


def test_a_command_signed_too_far_ahead_is_told_so_not_that_it_is_too_old():
    # A red team: signed 3 minutes in the future, it was told it was "outside the 10 minutes a
    # signed command is valid for".
    from ledger.core.lifecycle.admission import fresh

    ahead = fresh(sign(grant(at=T0 + timedelta(minutes=3)), ADMIN_KEY), T0)
    assert ahead is not None and ahead.code == "stale_command"
    assert "more than 2 minutes ahead of the command processor's clock" in ahead.message
    old = fresh(sign(grant(at=T0 - timedelta(minutes=11)), ADMIN_KEY), T0)
    assert old is not None and "outside the 10 minutes a signed command is valid for" in old.message
    assert fresh(sign(grant(at=T0 + timedelta(minutes=1)), ADMIN_KEY), T0) is None


def test_a_copy_of_a_revoke_all_event_naming_a_key_registered_after_it_is_not_proven():
    # A review: a copy of "revoke every key of bob" naming bob's next key (registered after
    # the revocation), under a new event id and the next sequence, was proven: the dedupe was
    # by (command, key), and a revoke-all names each key it revokes.
    state, events = anchored()

    def send(command: Any) -> list[Any]:
        nonlocal state
        outcome = decide_signed(state, sign(command, ADMIN_KEY), now=T0, new_id=ids())
        assert not isinstance(outcome, Rejection), outcome
        state = _fold_all(state, outcome)
        return list(outcome)

    def register(n: int) -> str:
        key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"k%d" % n).digest())
        key_id = key_id_of(public_bytes(key))
        events.extend(
            send(
                RegisterActorKey(
                    event_id=f"c-reg{n}", occurred_at=T0, actor=ADMIN, principal="human:bob",
                    actor_key_id=key_id, public_key=public_bytes(key),
                )
            )
        )  # fmt: skip
        return key_id

    register(1)
    (revoked,) = send(
        RevokeActorKey(
            event_id="c-all", occurred_at=T0, actor=ADMIN, principal="human:bob", reason="r"
        )
    )
    events.append(revoked)
    second = register(2)
    assert all(v.ok for v in verify_history(events))
    copy = replace(
        revoked, event_id="e-copy", actor_key_id=second, sequence=events[-1].sequence + 1
    )
    verdict = verify_history([*events, copy])[-1]
    assert not verdict.ok and "its signed command c-all already produced event" in str(
        verdict.problem
    )


def test_a_back_dated_copy_does_not_make_its_principals_later_genuine_acts_unauthorized():
    # A red team: a signed copy of dave's GrantIssued, the next sequence, dated a minute early.
    # Sorted by time alone, it came before dave's first event, the fold dropped it and then
    # every later grant of dave's as out of order: dave's genuine grant-issue was "held no grant".
    state, events = anchored()
    dave = "human:dave"
    dave_key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"dave").digest())

    def send(command: Any, key: Ed25519PrivateKey = ADMIN_KEY, at: datetime = T0) -> None:
        nonlocal state
        outcome = decide_signed(state, sign(command, key), now=at, new_id=ids())
        assert not isinstance(outcome, Rejection), outcome
        events.extend(outcome)
        state = _fold_all(state, outcome)

    send(
        RegisterActorKey(
            event_id="c-k", occurred_at=T0, actor=ADMIN, principal=dave,
            actor_key_id=key_id_of(public_bytes(dave_key)), public_key=public_bytes(dave_key),
        )
    )  # fmt: skip
    first = IssueGrant(
        event_id="c-g1", occurred_at=T0, actor=ADMIN, grant_id="g1", principal=dave,
        actions=("refund.read",), resource="*",
    )  # fmt: skip
    send(first)
    issued = events[-1]
    copy = replace(
        issued, event_id="e-copy", sequence=issued.sequence + 1,
        occurred_at=T0 - timedelta(minutes=1),
    )  # fmt: skip
    events.append(copy)
    state = fold(state, copy)  # the processor's follower applied it, as the log holds it
    later = T0 + timedelta(seconds=30)
    send(
        IssueGrant(
            event_id="c-g2", occurred_at=later, actor=ADMIN, grant_id="g2", principal=dave,
            actions=("ledger.grant.issue",), resource="principal:agent:*",
        ),
        at=later,
    )  # fmt: skip
    send(
        IssueGrant(
            event_id="c-g3", occurred_at=later, actor=dave, grant_id="g3", principal="agent:bot",
            actions=("refund.read",), resource="*",
        ),
        key=dave_key,
        at=later,
    )  # fmt: skip
    verdicts = verify_history(events)
    unproven = [(v.event_id, v.problem) for v in verdicts if not v.ok]
    assert unproven == [("e-copy", unproven[0][1])], unproven  # the copy alone


def test_actor_verify_lists_what_is_wrong_with_an_event_itself_before_authority_failures(
    monkeypatch: Any,
):
    # A red team: one unsigned GrantRevoked of bob's grant, dated before bob's approval, made
    # bob's genuine act "held no grant": the run's headline named bob's act, not the forgery.
    from click.testing import CliRunner

    import ledger.cli.actors as actors
    from ledger.core.events import GrantRevoked
    from ledger.core.history import HistoryEntry

    state, events = anchored()
    bob_key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"bob").digest())
    for command, key in (
        (
            RegisterActorKey(
                event_id="c-k", occurred_at=T0, actor=ADMIN, principal="human:bob",
                actor_key_id=key_id_of(public_bytes(bob_key)), public_key=public_bytes(bob_key),
            ),
            ADMIN_KEY,
        ),
        (
            IssueGrant(
                event_id="c-g1", occurred_at=T0, actor=ADMIN, grant_id="g1",
                principal="human:bob", actions=("ledger.grant.issue",),
                resource="principal:agent:*",
            ),
            ADMIN_KEY,
        ),
        (
            IssueGrant(
                event_id="c-g0", occurred_at=T0, actor=ADMIN, grant_id="g0",
                principal="human:bob", actions=("refund.read",), resource="*",
            ),
            ADMIN_KEY,
        ),
    ):  # fmt: skip
        outcome = decide_signed(state, sign(command, key), now=T0, new_id=ids())
        assert not isinstance(outcome, Rejection), outcome
        events.extend(outcome)
        state = _fold_all(state, outcome)
    later = T0 + timedelta(seconds=30)
    act = decide_signed(
        state,
        sign(
            IssueGrant(
                event_id="c-g2", occurred_at=later, actor="human:bob", grant_id="g2",
                principal="agent:bot", actions=("refund.read",), resource="*",
            ),
            bob_key,
        ),
        now=later,
        new_id=ids(),
    )  # fmt: skip
    assert not isinstance(act, Rejection), act
    forged = GrantRevoked(
        event_id="e-forged", occurred_at=later - timedelta(seconds=1), actor=ADMIN,
        command_id="c-none", principal="human:bob", sequence=events[-1].sequence + 1,
        grant_id="g1",
    )  # fmt: skip
    history = [*events, forged, *act]
    entries = [HistoryEntry("ledger.grant-events/0", n, e) for n, e in enumerate(history)]
    monkeypatch.setattr(actors, "check_governance_log", lambda *a, **k: (entries, []))
    monkeypatch.setattr(actors, "connection", lambda *a, **k: ("127.0.0.1:9", None))
    monkeypatch.setattr(actors, "command_witnesses", lambda *a, **k: Witnesses())
    said = CliRunner().invoke(actors.group, ["verify"])
    assert said.exit_code == 11, said.output
    unproven = [line for line in said.stderr.splitlines() if line.startswith("UNPROVEN")]
    # Where it was read, so a copy under the same id is told apart (a red team).
    n = len(events)
    assert unproven[0].startswith(f"UNPROVEN GrantRevoked e-forged at ledger.grant-events/0@{n}")
    assert "error: GrantRevoked e-forged by human:admin is not proven" in said.stderr
    assert "a forged grant or revocation there can be why" in said.stderr
    signed = sum(1 for e in history if e.command_signature is not None)
    assert f"(1 trust anchors; 0 of the {signed} signed held to when their command" in (
        said.stdout
    ), said.stdout


def test_an_event_dated_before_its_command_reached_the_broker_is_not_proven():
    # A red team, holding the command processor's credential: carol's approval, refused (her
    # grant revoked 22 s before she signed), written anyway and dated a second before the
    # revocation, was proven: its time is the writer's. The commands topic's broker time says
    # otherwise; a copy under the command's id that is not the signed command (anyone allowed
    # to send commands can send one), or a replay sent long after, says nothing (a review).
    from ledger.core.signing import witnesses_from

    state, events = anchored()
    command = sign(grant(), ADMIN_KEY)
    outcome = decide_signed(state, command, now=T0, new_id=ids())
    assert not isinstance(outcome, Rejection)
    history = [*events, *outcome]
    on_time = witnesses_from([(command, T0 - timedelta(milliseconds=3), True)])
    assert all(v.ok for v in verify_history(history, witnesses=on_time))
    late = witnesses_from([(command, T0 + timedelta(seconds=22), True)])
    verdict = verify_history(history, witnesses=late)[-1]
    assert not verdict.ok and "22.0 s before its command reached the ledger" in str(verdict.problem)
    unsigned = replace(command, signature=None, key_id=None)
    other = sign(replace(command, resource="x:*"), ADMIN_KEY)  # another under its id
    days_later = T0 + timedelta(days=5)
    noise = witnesses_from(
        [(unsigned, days_later, True), (other, days_later, True), (command, days_later, True)]
    )
    assert all(v.ok for v in verify_history(history, witnesses=noise))
    # A time its sender set (a commands topic from before it took the broker's): the sender's
    # clock may run two minutes ahead of the processor's.
    sender = witnesses_from([(command, T0 + timedelta(seconds=90), False)])
    assert all(v.ok for v in verify_history(history, witnesses=sender))


def test_an_event_signed_with_a_key_whose_registration_is_not_proven_is_not_proven():
    # A review: an ActorKeyRegistered for human:admin with a junk proof, written with the
    # command processor's credential, was itself unproven, but the grant signed with its key
    # was proven.
    from ledger.core.events import ActorKeyRegistered

    state, events = anchored()
    planted = Ed25519PrivateKey.generate()
    registration = ActorKeyRegistered(
        event_id="e-planted", occurred_at=T0, actor=ADMIN, command_id="c-junk",
        principal=ADMIN, sequence=2, actor_key_id=key_id_of(public_bytes(planted)),
        public_key=public_bytes(planted), command_key_id="ed25519:junk",
        command_signature=b"junk", signed_command="junk",
    )  # fmt: skip
    state = fold(state, registration)
    command = sign(grant(), planted)
    # The command processor no longer takes a key as logged: its registration must prove it.
    refused = decide_signed(state, command, now=T0, new_id=ids())
    assert isinstance(refused, Rejection) and refused.code == "unknown_actor_key"
    assert "e-planted is not proven" in refused.message
    # The insider writes the grant's event with the command's proof itself.
    (issued,) = decide(state, command, now=T0, new_id=ids())  # type: ignore[misc]
    outcome = [
        replace(
            issued,
            command_key_id=command.key_id,
            command_signature=command.signature,
            signed_command=signed_bytes(command).decode(),
        )
    ]
    verdicts = verify_history([*events, registration, *outcome])
    assert not verdicts[-2].ok  # the registration
    assert not verdicts[-1].ok and "whose registration (event e-planted) is not proven" in str(
        verdicts[-1].problem
    )


def _signed_in(state: LedgerState, command: object, key: Ed25519PrivateKey, **kw: Any) -> Any:
    """``state`` after the signed ``command`` (it must be accepted)."""
    out = decide_signed(state, sign(command, key), now=T0, new_id=ids(), **kw)  # type: ignore[arg-type]
    assert not isinstance(out, Rejection), out
    for event in out:
        state = fold(state, event)
    return state


def test_a_key_an_insider_wrote_into_the_log_signs_nothing() -> None:
    # A red team, holding the command processor's credential, wrote an ActorKeyRegistered of
    # its own key for human:admin: the processor folded it and accepted the grants it signed.
    from ledger.core.events import ActorKeyRegistered

    state, _ = anchored()
    planted = Ed25519PrivateKey.generate()
    unsigned = ActorKeyRegistered(
        event_id="e-planted", occurred_at=T0, actor=ADMIN, command_id="c-planted",
        principal=ADMIN, sequence=2, actor_key_id=key_id_of(public_bytes(planted)),
        public_key=public_bytes(planted),
    )  # fmt: skip
    refused = decide_signed(fold(state, unsigned), sign(grant(), planted), now=T0, new_id=ids())
    assert isinstance(refused, Rejection) and refused.code == "unknown_actor_key"
    assert "its registration e-planted by human:admin carries no proof" in refused.message
    assert "`ledger actor verify` lists it" in refused.message
    # A copy of a genuine registration's proof on another key: its fields are not what was signed.
    bob = Ed25519PrivateKey.generate()
    state = _signed_in(state, _registration("c-bob", ADMIN, "human:bob", bob), ADMIN_KEY)
    (genuine,) = [k for k in state.principals["human:bob"].keys]
    assert genuine.registration is not None
    copied = replace(
        genuine.registration, event_id="e-copy", principal=ADMIN, sequence=2,
        actor_key_id=key_id_of(public_bytes(planted)), public_key=public_bytes(planted),
    )  # fmt: skip
    refused = decide_signed(fold(state, copied), sign(grant(), planted), now=T0, new_id=ids())
    assert isinstance(refused, Rejection) and "e-copy is not proven" in refused.message
    # bob's own key, registered from his administrator's signed command, signs.
    admins = frozenset({ADMIN, "human:bob"})
    anchors = {ADMIN: public_bytes(ADMIN_KEY)}
    assert not isinstance(
        decide_signed(
            state, sign(grant(actor="human:bob"), bob), now=T0, new_id=ids(), admins=admins,
            anchors=anchors,
        ),
        Rejection,
    )  # fmt: skip


def test_a_key_signs_only_through_registrations_rooted_in_a_configured_trust_anchor() -> None:
    state, _ = anchored()
    anchors = {ADMIN: public_bytes(ADMIN_KEY)}
    admins = frozenset({ADMIN, "human:root", "human:alice", "human:mallory"})
    # A trust anchor the configuration does not hold (an insider wrote it, as the processor
    # writes anchors), and a key it registered for mallory.
    fake = Ed25519PrivateKey.generate()
    for event in register_anchors(state, {"human:root": public_bytes(fake)}, now=T0, new_id=ids()):
        state = fold(state, event)
    mallory = Ed25519PrivateKey.generate()
    state = _signed_in(
        state, _registration("c-m", "human:root", "human:mallory", mallory), fake, admins=admins
    )
    # A delegate chain from the configured anchor: admin -> alice -> bob.
    alice, bob = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    state = _signed_in(
        state, _registration("c-a", ADMIN, "human:alice", alice), ADMIN_KEY, admins=admins
    )
    state = _signed_in(
        state, _registration("c-b", "human:alice", "human:bob", bob), alice, admins=admins
    )

    def signs(actor: str, key: Ed25519PrivateKey, at: LedgerState = state) -> str | None:
        out = decide_signed(
            at, sign(grant(actor=actor), key), now=T0, new_id=ids(),
            admins=admins | {"human:bob"}, anchors=anchors,
        )  # fmt: skip
        return out.message if isinstance(out, Rejection) else None

    assert signs("human:bob", bob) is None
    assert signs("human:alice", alice) is None
    refused = signs("human:mallory", mallory)
    assert refused is not None and (
        "registered under a trust anchor of human:root" in refused
        and "configuration does not hold" in refused
    )
    # An anchor of an administrator who is one no more, its .pub kept in the processor's key
    # store: the keys it registered still sign.
    kept = {"human:root": public_bytes(fake)}
    assert not isinstance(
        decide_signed(
            state, sign(grant(actor="human:mallory"), mallory), now=T0, new_id=ids(),
            admins=admins, anchors=anchors, known=kept,
        ),
        Rejection,
    )  # fmt: skip
    # Without configured anchors (the core's tests, a processor given none): any anchor roots.
    assert not isinstance(
        decide_signed(state, sign(grant(actor="human:mallory"), mallory), now=T0, new_id=ids(), admins=admins),
        Rejection,
    )  # fmt: skip


def test_keys_registered_under_a_rotated_anchor_still_sign_but_not_under_a_later_fake_one() -> None:
    state, _ = anchored()
    admins = frozenset({ADMIN, "human:bob", "human:eve"})
    bob = Ed25519PrivateKey.generate()
    state = _signed_in(
        state, _registration("c-bob", ADMIN, "human:bob", bob), ADMIN_KEY, admins=admins
    )
    # The administrator rotates: a new anchor, the configured one from now on.
    rotated = Ed25519PrivateKey.generate()
    for event in register_anchors(state, {ADMIN: public_bytes(rotated)}, now=T0, new_id=ids()):
        state = fold(state, event)
    anchors = {ADMIN: public_bytes(rotated)}
    # The old .pub kept in the key store's retired/ folder: the keys it registered sign.
    retired = {ADMIN: frozenset({public_bytes(ADMIN_KEY)})}
    bobs = decide_signed(
        state, sign(grant(actor="human:bob"), bob), now=T0, new_id=ids(), admins=admins,
        anchors=anchors, known=retired,
    )  # fmt: skip
    assert not isinstance(bobs, Rejection), bobs
    # Not by the order of the log (a review: an anchor planted before a genuine rotation, or
    # "replaced" by a copy of the configured key, rooted the insider's keys): without the old
    # .pub, what the old anchor registered does not sign.
    bobs = decide_signed(
        state, sign(grant(actor="human:bob"), bob), now=T0, new_id=ids(), admins=admins,
        anchors=anchors,
    )  # fmt: skip
    assert isinstance(bobs, Rejection) and "configuration does not hold" in bobs.message
    # An anchor of the administrator written after the configured one replaced nothing.
    fake = Ed25519PrivateKey.generate()
    for event in register_anchors(state, {ADMIN: public_bytes(fake)}, now=T0, new_id=ids()):
        state = fold(state, event)
    eve = Ed25519PrivateKey.generate()
    state = _signed_in(state, _registration("c-eve", ADMIN, "human:eve", eve), fake, admins=admins)
    eves = decide_signed(
        state, sign(grant(actor="human:eve"), eve), now=T0, new_id=ids(), admins=admins,
        anchors=anchors, known=retired,
    )  # fmt: skip
    assert isinstance(eves, Rejection) and "configuration does not hold" in eves.message


def test_a_signed_registration_that_was_not_its_actors_to_make_proves_no_key() -> None:
    # A review: an insider with the processor's credential and any genuine key (agent:low's)
    # signed agent:low's registration of the insider's key for human:admin, which the
    # processor refused, and wrote its event: signed and proven link by link, the key then
    # signed as the administrator's.
    state, _ = anchored()
    anchors, admins = {ADMIN: public_bytes(ADMIN_KEY)}, frozenset({ADMIN})
    low = Ed25519PrivateKey.generate()
    state = _signed_in(state, _registration("c-low", ADMIN, "agent:low", low), ADMIN_KEY)
    mine = Ed25519PrivateKey.generate()
    ask = sign(_registration("c-x", "agent:low", ADMIN, mine), low)
    refused = decide_signed(state, ask, now=T0, new_id=ids(), admins=admins, anchors=anchors)
    assert isinstance(refused, Rejection) and refused.code == "not_authorized"
    (event,) = decide(state, ask, now=T0, new_id=ids(), admins=frozenset({"agent:low"}))  # type: ignore[misc]
    proof = {
        "command_key_id": ask.key_id,
        "command_signature": ask.signature,
        "signed_command": signed_bytes(ask).decode(),
    }
    state = fold(state, replace(event, **proof))
    out = decide_signed(
        state, sign(grant(n=9), mine), now=T0, new_id=ids(), admins=admins, anchors=anchors
    )
    assert isinstance(out, Rejection) and out.code == "unknown_actor_key"
    assert "was not agent:low's to make: only an administrator registers a key of the " in (
        out.message
    )
    # For another principal who is no administrator, such a key is bounded by its registrar's
    # grants (key_registrar): agent:low holds none, so the key does nothing agent:low may not.
    theirs = Ed25519PrivateKey.generate()
    other = sign(_registration("c-y", "agent:low", "agent:peer", theirs), low)
    (event,) = decide(state, other, now=T0, new_id=ids(), admins=frozenset({"agent:low"}))  # type: ignore[misc]
    proof = {
        "command_key_id": other.key_id,
        "command_signature": other.signature,
        "signed_command": signed_bytes(other).decode(),
    }
    state = fold(state, replace(event, **proof))
    out = decide_signed(
        state, sign(grant(n=10, actor="agent:peer"), theirs), now=T0, new_id=ids(),
        admins=admins, anchors=anchors,
    )  # fmt: skip
    assert isinstance(out, Rejection) and out.code == "not_authorized", out


def test_keys_an_administrator_registered_sign_after_it_rotated_and_left() -> None:
    # A review: carol registered bob's key, rotated (a new anchor), then left $LEDGER_ADMINS
    # with her new .pub kept in the key store: bob's key was refused.
    state, _ = anchored()
    carol_old, carol_new, bob = (Ed25519PrivateKey.generate() for _ in range(3))
    for e in register_anchors(
        state, {"human:carol": public_bytes(carol_old)}, now=T0, new_id=ids()
    ):
        state = fold(state, e)
    admins = frozenset({ADMIN, "human:carol"})
    state = _signed_in(
        state, _registration("c-bob", "human:carol", "human:bob", bob), carol_old, admins=admins
    )
    for e in register_anchors(
        state, {"human:carol": public_bytes(carol_new)}, now=T0, new_id=ids()
    ):
        state = fold(state, e)
    out = decide_signed(
        state, sign(grant(actor="human:bob"), bob), now=T0, new_id=ids(),
        admins=frozenset({ADMIN, "human:bob"}), anchors={ADMIN: public_bytes(ADMIN_KEY)},
        known={"human:carol": frozenset({public_bytes(carol_new), public_bytes(carol_old)})},
    )  # fmt: skip
    assert not isinstance(out, Rejection), out


def test_a_key_rotated_by_its_own_actor_many_times_still_signs_and_is_proven_once() -> None:
    # A review: each self-rotation adds a link; at 64 the actor was locked out, and every
    # command walked (and verified) the whole chain again.
    state, _ = anchored()
    anchors, admins = {ADMIN: public_bytes(ADMIN_KEY)}, frozenset({ADMIN})
    current = Ed25519PrivateKey.generate()
    state = _signed_in(state, _registration("c-0", ADMIN, "agent:bot", current), ADMIN_KEY)
    own = IssueGrant(
        event_id="c-g", occurred_at=T0, actor=ADMIN, grant_id="g-k", principal="agent:bot",
        actions=("ledger.key.register",), resource="principal:agent:bot",
    )  # fmt: skip
    state = _signed_in(state, own, ADMIN_KEY)
    for n in range(1, 81):
        new = Ed25519PrivateKey.generate()
        ask = _registration(f"c-r{n}", "agent:bot", "agent:bot", new)
        state = _signed_in(state, ask, current, admins=admins, anchors=anchors)
        current = new
    proven: set[str] = set()
    ask = sign(grant(n=99, actor="agent:bot"), current)
    assert (
        decide_signed(
            state, ask, now=T0, new_id=ids(), admins=admins, anchors=anchors, proven=proven
        ).code
        == "not_authorized"
    )  # type: ignore[union-attr]  (authenticated: its grant is not held)
    assert len(proven) == 81  # every key of the chain, proven once


def _an_issued_grant() -> tuple[list[Any], Any]:
    """The anchored history, and the grant an administrator's signed command issues after it."""
    state, events = anchored()
    outcome = decide_signed(state, sign(grant(), ADMIN_KEY), now=T0, new_id=ids())
    assert not isinstance(outcome, Rejection)
    (issued,) = outcome
    return list(events), issued


def test_a_signed_command_whose_time_has_no_zone_is_a_problem_not_a_traceback():
    # A maintainability review: a naive time in a recorded signed command was compared with
    # the event's aware one, a TypeError that ended `actor verify`.
    import json

    events, issued = _an_issued_grant()
    signed = json.loads(str(issued.signed_command))
    signed["command"]["occurred_at"] = T0.replace(tzinfo=None).isoformat()
    naive = replace(issued, signed_command=json.dumps(signed))
    (_, verdict) = verify_history([*events, naive])
    assert not verdict.ok and verdict.problem == "the signed command's time has no zone"


def test_an_event_dated_at_the_edge_of_time_is_a_problem_not_a_traceback():
    # A review: a signed event forged to year 1 raised OverflowError in the validity check.
    from datetime import UTC, datetime

    events, issued = _an_issued_grant()
    ancient = replace(issued, occurred_at=datetime(1, 1, 1, tzinfo=UTC))
    (_, verdict) = verify_history([*events, ancient])
    assert not verdict.ok and verdict.problem is not None


def test_a_command_record_dated_at_the_edge_of_time_witnesses_nothing():
    # A review: a command dated 0001-01-01, written by anyone holding the governance
    # credential, ended `actor verify` in an OverflowError for the commands topic's week.
    from datetime import UTC, datetime

    from ledger.core.signing import witnesses_from

    ancient = replace(sign(grant(), ADMIN_KEY), occurred_at=datetime(1, 1, 1, tzinfo=UTC))
    assert witnesses_from([(ancient, datetime(1, 1, 1, tzinfo=UTC), True)]).received == {}
    assert witnesses_from([(ancient, T0, True)]).received == {}
