"""Drives the golden YAML cases of tests/golden: commands in, events or rejection out; requests in,
decisions out. One small vocabulary, so a case reads like the lifecycle it pins down.

Signatures: ``signed_with: NAME`` on a command signs it with the Ed25519 key derived from NAME
(``tamper: true`` alters it after signing, ``tamper: {FIELD: VALUE}`` those fields); a ``when`` command that is signed, or says
``authenticate: true``, is decided as the command processor decides it (``decide_signed``:
authentication first). ``register_key: {by, for, key: NAME}`` registers NAME's public key.

Repeats: ``decided_before: {signed_with: NAME}`` says the ``when`` command's id was applied
before, by that command signed with NAME (``none``: before signatures were recorded;
``carried``: with the signature the ``when`` command carries), and
``decided_before: {rejected: CODE}`` that it was rejected; the case is then decided with
``decide_again``, and ``expect: {answer: already_applied}`` means it answers with the first
events.

Records not read: ``unreadable: [[kind, name], …]`` marks those aggregates (``policy`` or
``principal``) as having a record a newer release wrote (``LedgerState.unreadable``)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.core import EMPTY_STATE, LedgerState, Rejection, decide, evaluate, fold
from ledger.core.cel import parse_timestamp
from ledger.core.events import (
    ApprovePolicyVersion,
    AssignRole,
    Command,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    IssueGrant,
    Mode,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RegisterActorKey,
    RetirePolicy,
    RevokeActorKey,
    RevokeGrant,
    RevokeRole,
    RollbackPolicy,
    Stage,
)
from ledger.core.lifecycle import FirstAnswer, decide_again, decide_signed, register_anchors
from ledger.core.signing import key_id_of
from ledger.core.state import with_unreadable
from ledger.keys import public_bytes, sign

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ADMINS = frozenset({"human:admin", "human:alice", "human:bob"})
DOCUMENTS = {"refund": (ROOT / "examples" / "policies" / "refund.yaml").read_text()}


def _time(value: Any) -> datetime:
    return T0 if value is None else parse_timestamp(str(value))


def _refund_v2() -> str:
    return DOCUMENTS["refund"].replace("amount < 750", "amount < 1000")


def _document(ref: str) -> str:
    if ref == "refund-v2":
        return _refund_v2()
    if ref == "refund-v3":
        return DOCUMENTS["refund"].replace("amount < 750", "amount < 900")
    if ref == "refund-v4":
        return DOCUMENTS["refund"].replace("amount < 750", "amount < 800")
    return DOCUMENTS.get(ref, ref)


def key(name: str) -> Ed25519PrivateKey:
    """A deterministic Ed25519 key named ``name`` (its seed: the SHA-256 of the name)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())


def build_command(spec: dict[str, Any], n: int) -> Command:
    ((kind, args),) = spec.items()
    command = _build(kind, args, n)
    if "signed_with" in args:
        command = sign(command, key(args["signed_with"]))
    tamper = args.get("tamper")
    if isinstance(tamper, dict):  # these fields altered after signing, the signature kept
        command = dataclasses.replace(command, **tamper)
    elif tamper:  # altered after signing: the note a reader would trust
        command = dataclasses.replace(command, event_id=f"{command.event_id}-altered")
    return command


def authenticated(spec: dict[str, Any]) -> bool:
    ((_, args),) = spec.items()
    return bool("signed_with" in args or args.get("authenticate"))


def _build(kind: str, args: dict[str, Any], n: int) -> Command:
    common = {"event_id": f"cmd-{n}", "occurred_at": _time(args.get("at")), "actor": args["by"]}
    match kind:
        case "propose":
            document = _document(args["document"])
            if "pad_to" in args:  # a valid document grown past a size with a trailing comment
                document += "#" * max(0, args["pad_to"] - len(document.encode())) + "\n"
            # The name a proposal carries: the document's own unless the case says otherwise
            # (`policy: null` for none), as the CLI and the SDK fill it in.
            found = re.search(r"^policy:\s*(\S+)", document, re.MULTILINE)
            policy = args["policy"] if "policy" in args else found and found.group(1)
            return ProposePolicyVersion(
                **common, document=document, note=args.get("note"), policy=policy
            )
        case "approve":
            return ApprovePolicyVersion(**common, policy=args["policy"], version=args["version"])
        case "promote":
            return PromotePolicyVersion(
                **common,
                policy=args["policy"],
                version=args["version"],
                stage=Stage(args["to"]),
                percent=args.get("percent"),
                previous_version=args.get("replacing"),
            )
        case "rollback":
            return RollbackPolicy(
                **common,
                policy=args["policy"],
                to_version=args.get("to"),
                from_version=args.get("from"),
                reason=args.get("reason", ""),
            )
        case "retire":
            return RetirePolicy(**common, policy=args["policy"], reason=args.get("reason", ""))
        case "grant":
            return IssueGrant(
                **common,
                grant_id=args["id"],
                principal=args["to"],
                actions=tuple(args["actions"]),
                resource=args["resource"],
                condition=args.get("when"),
                valid_from=_time(args["from"]) if "from" in args else None,
                valid_until=_time(args["until"]) if "until" in args else None,
            )
        case "revoke_grant":
            return RevokeGrant(**common, grant_id=args["id"])
        case "assign":
            return AssignRole(**common, principal=args["principal"], role=args["role"])
        case "revoke_role":
            return RevokeRole(**common, principal=args["principal"], role=args["role"])
        case "register_key":
            public = public_bytes(key(args["key"]))
            return RegisterActorKey(
                **common,
                principal=args["for"],
                actor_key_id=args.get("key_id", key_id_of(public)),
                public_key=public,
            )
        case "revoke_key":
            named = args.get("key")
            return RevokeActorKey(
                **common,
                principal=args["of"],
                reason=args.get("reason", ""),
                actor_key_id=key_id_of(public_bytes(key(named))) if named else None,
            )
    raise ValueError(f"unknown command {kind!r}")


def _register(state: LedgerState, command: RegisterActorKey, ids: Any) -> tuple[LedgerState, Any]:
    """A given key registration as the command processor records it, with its proof: an
    actor's own first key is a trust anchor; another's key is signed by the registering actor's
    key named after it (``human:admin``: ``admin``), made its anchor first if it has none."""
    by = command.actor
    if command.principal == by and actor_keys(state, by) == []:
        anchor = {by: bytes(command.public_key)}
        (event,) = register_anchors(
            state, anchor, now=command.occurred_at, new_id=lambda: next(ids)
        )
        return state, (event,)
    signer = key(by.split(":", 1)[1])
    if key_id_of(public_bytes(signer)) not in actor_keys(state, by):
        anchor = {by: public_bytes(signer)}
        for event in register_anchors(
            state, anchor, now=command.occurred_at, new_id=lambda: next(ids)
        ):
            state = fold(state, event)
    outcome = decide_signed(
        state, sign(command, signer), now=command.occurred_at, new_id=lambda: next(ids),
        admins=ADMINS,
    )  # fmt: skip
    return state, outcome


def actor_keys(state: LedgerState, actor: str) -> list[str]:
    record = state.principals.get(actor)
    return [] if record is None else [k.key_id for k in record.keys if k.active]


def expand(given: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``deploy: refund`` is shorthand for propose (alice) + approve (bob) + promote active (bob)."""
    out: list[dict[str, Any]] = []
    for step in given:
        if "deploy" in step:
            name = step["deploy"]
            out.append({"propose": {"by": "human:alice", "document": name}})
            version = step.get("version", 1)
            policy = "refund" if name.startswith("refund") else name
            out.append({"approve": {"by": "human:bob", "policy": policy, "version": version}})
            out.append(
                {
                    "promote": {
                        "by": "human:bob",
                        "policy": policy,
                        "version": version,
                        "to": "active",
                    }
                }
            )
        else:
            out.append(step)
    return out


def apply(state: LedgerState, commands: list[dict[str, Any]], ids: Any) -> LedgerState:
    for n, spec in enumerate(expand(commands)):
        command = build_command(spec, n)
        if isinstance(command, RegisterActorKey):  # a key comes into the ledger proven
            state, outcome = _register(state, command, ids)
        else:
            outcome = decide(
                state, command, now=command.occurred_at, new_id=lambda: next(ids), admins=ADMINS
            )
        assert not isinstance(outcome, Rejection), f"given step {spec} was rejected: {outcome}"
        for event in outcome:
            state = fold(state, event)
    return state


def _facts(raw: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (raw or {}).items():
        out[k] = (
            tuple(v) if isinstance(v, list) else Decimal(repr(v)) if isinstance(v, float) else v
        )
    return out


def first_answer(before: dict[str, Any], command: Any) -> FirstAnswer:
    if "rejected" in before:
        return FirstAnswer(rejection=Rejection(code=before["rejected"], message="the first"))
    name = before["signed_with"]
    if name == "carried":  # the signature the ``when`` command carries (made before any tamper)
        return FirstAnswer(event_ids=("evt-first",), signature=command.signature)
    first = None if name == "none" else sign(command, key(name)).signature
    return FirstAnswer(event_ids=("evt-first",), signature=first)


def run_case(case: dict[str, Any]) -> None:
    ids = (f"evt-{i}" for i in itertools.count())
    state = apply(EMPTY_STATE, case.get("given", []), ids)
    # ``unreadable: [[kind, name], …]``: aggregates with a record a newer release wrote, which
    # the processor could not read (LedgerState.unreadable).
    state = with_unreadable(state, frozenset(tuple(a) for a in case.get("unreadable", [])))
    expect = case["expect"]
    if "when" in case:
        command = build_command(case["when"], 999)
        decider = decide_signed if authenticated(case["when"]) else decide
        # ``decided_after_minutes``: the processor's clock that many minutes after the signing.
        now = command.occurred_at + timedelta(minutes=case.get("decided_after_minutes", 0))
        if "decided_before" in case:
            outcome = decide_again(state, command, first_answer(case["decided_before"], command))
            if expect.get("answer") == "already_applied":
                assert outcome == ("evt-first",), outcome
                return
        else:
            outcome = decider(state, command, now=now, new_id=lambda: next(ids), admins=ADMINS)
        if "rejection" in expect:
            assert isinstance(outcome, Rejection), (
                f"expected rejection {expect['rejection']}, got {outcome}"
            )
            assert outcome.code == expect["rejection"], outcome
            assert expect.get("says", "") in outcome.message, outcome.message
            return
        assert not isinstance(outcome, Rejection), f"expected acceptance, got {outcome}"
        if "events" in expect:
            assert [type(e).__name__ for e in outcome] == expect["events"]
        if expect.get("signed"):  # every event records the command's proof
            assert all(
                e.command_key_id == command.key_id
                and e.command_signature == command.signature
                and e.signed_command is not None
                for e in outcome
            ), outcome
        for event in outcome:
            state = fold(state, event)
        if "version" in expect:
            assert getattr(outcome[0], "version", None) == expect["version"]
    if "request" in case:
        r = case["request"]
        request = EvaluationRequested(
            event_id=r.get("id", "req-1"),
            occurred_at=_time(r.get("at")),
            actor=r.get("principal", "agent:refund-bot"),
            action=r.get("action", "refund.issue"),
            principal=r.get("principal", "agent:refund-bot"),
            resource=r.get("resource", "account:5"),
            facts=_facts(r.get("facts")),
            context=_facts(r.get("context")),
            mode=Mode(r.get("mode", "sync")),
            requested_by=r.get("requested_by"),
        )
        decision = evaluate(state, request, now=_time(r.get("at")), evaluator_id="golden")
        check_decision(decision, expect.get("decision", {}))
    if "state" in expect:
        for name, exp in expect["state"].items():
            record = state.policies[name]
            for key, value in exp.items():
                assert getattr(record, key) == (
                    tuple(value) if isinstance(value, list) else value
                ), (key, getattr(record, key))


def check_decision(d: DecisionRecorded, exp: dict[str, Any]) -> None:
    for key, value in exp.items():
        if key == "determination":
            assert d.determination == Determination(value), (d.determination, d.reasons)
        elif key == "stage":
            assert d.stage == (Stage(value) if value is not None else None)
        elif key == "version":
            assert d.policy_version == value
        elif key == "constraints":
            assert dict(d.constraints) == value
        elif key == "reasons_contain":
            joined = " | ".join(d.reasons)
            for fragment in value:
                assert fragment in joined, (fragment, joined)
        elif key == "shadow":
            got = [
                {
                    "version": s.version,
                    "stage": s.stage.value,
                    "determination": s.determination.value,
                }
                for s in d.shadow_results
            ]
            assert got == value, got
        else:
            assert getattr(d, key) == value, (key, getattr(d, key), d)
