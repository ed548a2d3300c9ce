"""A proposal is authorized on the policy name it carries before its document is read (issue 8).

An actor with no grants sent a 403-byte YAML alias bomb as a ``ProposePolicyVersion``; the command
processor parsed it before asking whether the actor may propose, and blocked on it for ever.
These tests pin the order: name → authority → size → parse → the document names the same policy,
and that nothing on the way to a rejection (nor the record key) parses the document.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ledger.codec import Codec
from ledger.core import (
    EMPTY_STATE,
    Rejection,
    command_aggregate,
    command_result,
    decide,
    fold,
)
from ledger.core.events import IssueGrant, ProposePolicyVersion
from ledger.core.lifecycle import commands, grant_rules, policy_rules
from ledger.core.limits import Limits

ROOT = Path(__file__).resolve().parents[2]
REFUND = (ROOT / "examples" / "policies" / "refund.yaml").read_text()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ADMINS = frozenset({"human:admin"})


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The report's document: each level a list of ``width`` aliases of the one before."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for n in range(1, levels):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def propose(actor: str, document: str, policy: str | None, n: int = 1) -> ProposePolicyVersion:
    return ProposePolicyVersion(
        event_id=f"c{n}", occurred_at=T0, actor=actor, document=document, policy=policy
    )


def ids() -> Any:
    return iter(f"e{i}" for i in range(1000))


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every document ``decide`` hands to the policy parser (which still parses it)."""
    seen: list[str] = []
    real = policy_rules.parse_policy

    def recording(document: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(document)
        return real(document, *args, **kwargs)

    for module in (commands, policy_rules):  # the modules of ledger.core.lifecycle that parse
        monkeypatch.setattr(module, "parse_policy", recording)
    return seen


def test_an_actor_without_a_grant_is_refused_without_parsing(parses: list[str]) -> None:
    bomb = alias_bomb()
    for policy in ("refund", "x" * 1_000_000):
        outcome = decide(
            EMPTY_STATE, propose("human:mallory", bomb, policy), now=T0, new_id=ids().__next__
        )
        assert isinstance(outcome, Rejection)
        assert outcome.code == "not_authorized"
        assert len(outcome.message) < 1000  # a huge name is not echoed back whole
    assert parses == []  # the bound: the document is never read (it was unbounded before)


def test_a_proposal_without_a_name_is_refused_without_parsing(parses: list[str]) -> None:
    for actor in ("human:mallory", "human:admin"):
        for policy in (None, "", "  "):
            outcome = decide(
                EMPTY_STATE,
                propose(actor, alias_bomb(), policy),
                now=T0,
                new_id=ids().__next__,
                admins=ADMINS,
            )
            assert isinstance(outcome, Rejection)
            assert outcome.code == "invalid_policy"
            assert "must name its policy" in outcome.message
    assert parses == []


def test_the_record_key_and_the_answer_never_parse_the_document(parses: list[str]) -> None:
    command = propose("human:mallory", alias_bomb(), "refund")
    assert command_aggregate(command) == "refund"
    assert command_aggregate(propose("human:mallory", alias_bomb(), None)) == ""
    rejected = command_result(
        command, Rejection(code="not_authorized", message="no"), event_id="r", now=T0
    )
    assert rejected.aggregate == "refund"
    assert parses == []


def test_a_grant_on_another_policy_authorizes_neither_that_name_nor_a_document_under_it(
    parses: list[str],
) -> None:
    grant = IssueGrant(
        event_id="g",
        occurred_at=T0,
        actor="human:admin",
        grant_id="g1",
        principal="human:carol",
        actions=("ledger.policy.propose",),
        resource="policy:billing",
    )
    (issued,) = decide(EMPTY_STATE, grant, now=T0, new_id=ids().__next__)  # type: ignore[misc]
    state = fold(EMPTY_STATE, issued)

    refused = decide(state, propose("human:carol", REFUND, "refund"), now=T0, new_id=ids().__next__)
    assert isinstance(refused, Rejection) and refused.code == "not_authorized"
    assert parses == []

    # Authorized on billing, so the document is read, and it is refund's: refused by name.
    smuggled = decide(
        state, propose("human:carol", REFUND, "billing"), now=T0, new_id=ids().__next__
    )
    assert isinstance(smuggled, Rejection) and smuggled.code == "invalid_policy"
    assert "'refund'" in smuggled.message and "'billing'" in smuggled.message
    assert len(parses) == 1


def test_size_is_checked_after_authority_and_before_parsing(parses: list[str]) -> None:
    limits = Limits(policy_document_bytes=len(REFUND.encode()) - 1)
    big = decide(
        EMPTY_STATE,
        propose("human:admin", REFUND, "refund"),
        now=T0,
        new_id=ids().__next__,
        limits=limits,
    )
    assert isinstance(big, Rejection) and big.code == "too_large"
    assert str(limits.policy_document_bytes) in big.message
    stranger = decide(
        EMPTY_STATE,
        propose("human:mallory", REFUND, "refund"),
        now=T0,
        new_id=ids().__next__,
        limits=limits,
    )
    assert isinstance(stranger, Rejection) and stranger.code == "not_authorized"
    assert parses == []


def test_an_authorized_proposal_naming_its_policy_is_accepted(parses: list[str]) -> None:
    outcome = decide(
        EMPTY_STATE, propose("human:admin", REFUND, "refund"), now=T0, new_id=ids().__next__
    )
    assert not isinstance(outcome, Rejection)
    (event,) = outcome
    assert (event.policy, getattr(event, "version", None)) == ("refund", 1)
    assert len(parses) == 1


def test_a_proposal_written_before_the_policy_field_decodes_and_is_refused() -> None:
    codec = Codec()
    old = json.loads((ROOT / "schemas" / "history" / "ProposePolicyVersion.v1.avsc").read_text())
    # As an old client wrote it: the v1 schema has no `policy` field.
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        fastavro.parse_schema(old, named_schemas={}),
        {
            "event_id": "c1",
            "occurred_at": T0,
            "actor": "human:admin",
            "document": REFUND,
            "note": None,
        },
    )
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(old), "CRC-64-AVRO"))
    command = codec.decode(b"\xc3\x01" + fp + body.getvalue())
    assert isinstance(command, ProposePolicyVersion) and command.policy is None
    outcome = decide(EMPTY_STATE, command, now=T0, new_id=ids().__next__, admins=ADMINS)
    assert isinstance(outcome, Rejection) and outcome.code == "invalid_policy"


# --------------------------------------------------------------------------- issuing a grant


def issue(actor: str, *, condition: str | None = None, **fields: Any) -> IssueGrant:
    values: dict[str, Any] = {"grant_id": "g1", "actions": ("refund.*",), "resource": "*"}
    values.update(fields)
    return IssueGrant(
        event_id="c1",
        occurred_at=T0,
        actor=actor,
        principal="agent:bot",
        condition=condition,
        **values,
    )


def test_a_grant_from_an_actor_without_authority_is_refused_before_its_condition_compiles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled: list[str] = []
    real = grant_rules.admit_grant_condition

    def recording(text: str) -> Any:
        compiled.append(text)
        return real(text)

    monkeypatch.setattr(grant_rules, "admit_grant_condition", recording)
    condition = " || ".join(["amount < 5"] * 300)  # costly to compile, under condition_chars
    refused = decide(
        EMPTY_STATE, issue("agent:nobody", condition=condition), now=T0, new_id=ids().__next__
    )
    assert isinstance(refused, Rejection) and refused.code == "not_authorized"
    assert compiled == []
    allowed = decide(
        EMPTY_STATE,
        issue("human:admin", condition="amount < 5"),
        now=T0,
        new_id=ids().__next__,
        admins=ADMINS,
    )
    assert not isinstance(allowed, Rejection) and compiled == ["amount < 5"]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"actions": tuple(f"a{i}.*" for i in range(257))}, "257 action patterns; at most 256"),
        ({"actions": ("a" * 1_025,)}, "longer than 1,024 characters"),
        ({"resource": "r" * 1_025}, "longer than 1,024 characters"),
    ],
)
def test_a_grant_over_its_limits_is_invalid(fields: dict[str, Any], fragment: str) -> None:
    refused = decide(
        EMPTY_STATE, issue("human:admin", **fields), now=T0, new_id=ids().__next__, admins=ADMINS
    )
    assert isinstance(refused, Rejection) and refused.code == "invalid_grant"
    assert fragment in refused.message
    at_limit = {"actions": tuple(f"a{i}.*" for i in range(256)), "resource": "r" * 1_024}
    accepted = decide(
        EMPTY_STATE, issue("human:admin", **at_limit), now=T0, new_id=ids().__next__, admins=ADMINS
    )
    assert not isinstance(accepted, Rejection)


def test_revoking_tells_only_an_authorized_actor_whether_a_grant_id_exists() -> None:
    from ledger.core.events import RevokeGrant

    issued = decide(EMPTY_STATE, issue("human:admin"), now=T0, new_id=ids().__next__, admins=ADMINS)
    assert not isinstance(issued, Rejection)
    state = EMPTY_STATE
    for event in issued:
        state = fold(state, event)

    def revoke(actor: str, grant_id: str) -> Any:
        command = RevokeGrant(event_id="c2", occurred_at=T0, actor=actor, grant_id=grant_id)
        return decide(state, command, now=T0, new_id=ids().__next__, admins=ADMINS)

    existing, unknown = revoke("agent:nobody", "g1"), revoke("agent:nobody", "g-none")
    assert isinstance(existing, Rejection) and isinstance(unknown, Rejection)
    assert existing.code == unknown.code == "not_authorized"
    admin_unknown = revoke("human:admin", "g-none")
    assert isinstance(admin_unknown, Rejection) and admin_unknown.code == "unknown_grant"
    assert not isinstance(revoke("human:admin", "g1"), Rejection)
