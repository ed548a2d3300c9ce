"""``ledger actor verify --from DIR``: an export's governance rows prove who did what, and an
export altered after it was written does not pass for one that was not.

A red-team review altered an export five ways and ``actor verify --from`` proved every copy:
a column changed beside untouched record bytes (``who_approved`` then named someone else), a
record that no longer decodes (skipped), a row deleted (the revoked grant back in force), a
revocation re-encoded for another principal, and a grant re-encoded with a forged approver.
Each is now found. The history is made with the core (signed commands through
``decide_signed``) and written with the exporter's own file half; no broker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from export_format import Exported, files_of, hide_in_footer, rewrite, write_export

from ledger.cli.app import cli
from ledger.codec import default_codec
from ledger.core.events import (
    GRANT_EVENT_TYPES,
    ApprovePolicyVersion,
    Command,
    GovernanceEvent,
    IssueGrant,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RevokeGrant,
    RollbackPolicy,
    Stage,
)
from ledger.core.lifecycle import Rejection, command_result, decide_signed, register_anchors
from ledger.core.state import EMPTY_STATE, aggregate_of, fold
from ledger.keys import public_bytes, sign
from ledger.settings import TopicNames

ROOT = Path(__file__).resolve().parents[2]
TOPICS = TopicNames(prefix="v.")
CODEC = default_codec()
T0 = datetime(2026, 3, 1, tzinfo=UTC)
ADMIN, BOB = "human:admin", "human:bob"
KEYS = {
    who: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(who.encode()).digest())
    for who in (ADMIN, BOB)
}


def _by(actor: str, n: int) -> dict[str, Any]:
    return {"event_id": f"c-{n}", "occurred_at": T0, "actor": actor}


def _grant(n: int, grant_id: str, actions: str) -> IssueGrant:
    return IssueGrant(
        **_by(ADMIN, n), grant_id=grant_id, principal="agent:bot", actions=(actions,), resource="*"
    )


def history(start: datetime = T0) -> list[GovernanceEvent]:
    """Anchors for both; three grants, the first revoked; a policy's v1 made active, v2 after
    it, then a rollback that names no version (the processor picks v1); from ``start``."""
    n = iter(range(10_000))

    def new_id() -> str:
        return f"e-{next(n)}"

    anchors = {who: public_bytes(key) for who, key in KEYS.items()}
    events: list[GovernanceEvent] = list(
        register_anchors(EMPTY_STATE, anchors, now=start, new_id=new_id)
    )
    state = EMPTY_STATE
    for event in events:
        state = fold(state, event)
    v1, v2 = (
        (ROOT / "examples" / "policies" / n).read_text() for n in ("refund.yaml", "refund-v2.yaml")
    )
    commands: list[tuple[str, Command]] = [
        (ADMIN, ProposePolicyVersion(**_by(ADMIN, 1), policy="refund", document=v1)),
        (BOB, ApprovePolicyVersion(**_by(BOB, 2), policy="refund", version=1)),
        (ADMIN, _grant(3, "g-1", "refund.*")),
        (ADMIN, _grant(4, "g-2", "email.*")),
        (ADMIN, RevokeGrant(**_by(ADMIN, 5), grant_id="g-1")),
        (ADMIN, _grant(6, "g-3", "ticket.*")),
        (
            ADMIN,
            PromotePolicyVersion(**_by(ADMIN, 7), policy="refund", version=1, stage=Stage.ACTIVE),
        ),
        (ADMIN, ProposePolicyVersion(**_by(ADMIN, 8), policy="refund", document=v2)),
        (BOB, ApprovePolicyVersion(**_by(BOB, 9), policy="refund", version=2)),
        (
            ADMIN,
            PromotePolicyVersion(**_by(ADMIN, 10), policy="refund", version=2, stage=Stage.ACTIVE),
        ),
        (ADMIN, RollbackPolicy(**_by(ADMIN, 11), policy="refund", reason="too strict")),  # to v1
    ]
    for k, (who, command) in enumerate(commands, start=1):
        at = start + timedelta(seconds=k)
        signed = sign(dataclasses.replace(command, occurred_at=at), KEYS[who])
        outcome = decide_signed(state, signed, now=at, new_id=new_id, admins=frozenset(KEYS))
        assert not isinstance(outcome, Rejection), outcome
        for event in outcome:
            events.append(event)
            state = fold(state, event)
    return events


def records(events: list[GovernanceEvent]) -> list[Exported]:
    out, offsets = [], {TOPICS.policy_events: 0, TOPICS.grant_events: 0}
    for event in events:
        topic = (
            TOPICS.grant_events if isinstance(event, GRANT_EVENT_TYPES) else TOPICS.policy_events
        )
        millis = int(event.occurred_at.timestamp() * 1000)
        key = aggregate_of(event).encode()
        out.append(Exported(topic, 0, offsets[topic], millis, key, CODEC.encode(event)))
        offsets[topic] += 1
    return out


def verify(out: Path) -> tuple[int, dict[str, Any], str]:
    done = CliRunner().invoke(cli, ["actor", "verify", "--from", str(out), "--json"])
    return done.exit_code, json.loads(done.stdout), done.stderr


def exported(tmp_path: Path, events: list[GovernanceEvent], name: str = "export") -> Path:
    out = tmp_path / name
    write_export(out, records(events), TOPICS)
    return out


def test_an_untouched_export_is_proven(tmp_path: Path) -> None:
    code, report, _ = verify(exported(tmp_path, history()))
    assert code == 0, report
    assert report["unproven"] == [] and report["damaged_rows"] == []
    # Counted as the summary line counts them (an auditor: JSON said 33 where it said 34).
    assert (report["events"], report["proven"], report["anchors"]) == (13, 13, 2)
    assert (report["signed"], report["witnessed"]) == (11, 0)
    # Their commands were past the topic's week when exported: no note says they are missing.
    assert not any("have no command" in note for note in report["notes"])


def test_recent_signed_events_whose_commands_are_not_in_the_export_are_noted(
    tmp_path: Path,
) -> None:
    # An auditor removed an export's commands file: verify passed, saying the commands were
    # "past the commands topic's week" of an export minutes old.
    recent = datetime.now(UTC) - timedelta(hours=2)
    code, report, _ = verify(exported(tmp_path, history(recent)))
    assert code == 0 and report["witnessed"] == 0
    (note,) = [n for n in report["notes"] if "have no command" in n]
    assert note.startswith("11 signed events of the week before ")
    assert "have no command in the export, though the commands topic keeps a week" in note
    done = CliRunner().invoke(cli, ["actor", "verify", "--from", str(tmp_path / "export")])
    assert "0 of the 11 signed held to when their command reached the broker, the others' " in (
        done.stdout
    )
    assert "commands not in the export (it keeps a week)" in done.stdout


def _grant_rows(out: Path, change: Any) -> None:
    for path in files_of(out, TOPICS.grant_events):
        rewrite(path, change)


def test_a_column_changed_beside_untouched_record_bytes_is_found(tmp_path: Path) -> None:
    out = exported(tmp_path, history())

    def approver(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in rows:
            if r["grant_id"] == "g-2" and r["event_type"] == "GrantIssued":
                r["approved_by"] = "human:ciso"  # what `who_approved` reads
        return rows

    _grant_rows(out, approver)
    code, report, _ = verify(out)
    assert code == 11
    [line] = report["damaged_rows"]
    assert "offset 3 (GrantIssued" in line and "disagree with its record bytes: approved_by" in line
    # The values, as `audit verify` shows them (an auditor's walkthrough: only the name).
    assert 'approved_by (columns "human:ciso", record ' in line
    assert "older than the record" not in line


def test_a_row_an_older_exporter_left_empty_still_fails_and_says_what_it_may_be(
    tmp_path: Path,
) -> None:
    # An operator's upgrade drill: the earlier release's `ledger export`, over records the newer
    # release wrote, left their columns empty; verify read it as tampering with no word of why.
    out = exported(tmp_path, history())

    def emptied(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in rows:
            if r["grant_id"] == "g-2" and r["event_type"] == "GrantIssued":
                for name in list(r):
                    if name not in ("topic", "partition", "offset", "kafka_timestamp", "key"):
                        r[name] = None if name != "record" else r[name]
        return rows

    _grant_rows(out, emptied)
    code, report, _ = verify(out)
    assert code == 11  # still a finding: a row with empty columns is one no view shows
    [line] = report["damaged_rows"]
    assert "as an export by a release older than the record leaves one it cannot decode" in line


def test_a_record_that_no_longer_decodes_is_found(tmp_path: Path) -> None:
    out = exported(tmp_path, history())

    def garble(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in rows:
            if r["event_type"] == "GrantRevoked":
                r["record"] = b"\x00garbage"
            elif r["event_type"] == "GrantIssued":  # as a newer ledger's event would look
                r["record"] = b"\xc3\x01" + bytes(8) + r["record"][10:]
        return rows

    _grant_rows(out, garble)
    code, report, _ = verify(out)
    assert code == 11
    damaged = report["damaged_rows"]
    assert any("offset 4: its record is not a governance event" in line for line in damaged)
    # A schema this ledger does not know may be honest (a newer ledger wrote it): said so.
    assert any(
        "schema is unknown to this ledger" in line and "upgrade this one" in line
        for line in damaged
    ), damaged


@pytest.mark.parametrize("which", ["GrantRevoked", "GrantIssued"])
def test_a_deleted_row_is_found_in_the_middle_and_at_the_end(tmp_path: Path, which: str) -> None:
    out = exported(tmp_path, history())
    last = which == "GrantIssued"  # g-3, the newest grant event

    def delete(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            r
            for r in rows
            if not (r["event_type"] == which and (not last or r["grant_id"] == "g-3"))
        ]

    _grant_rows(out, delete)
    code, report, _ = verify(out)
    assert code == 11
    expected = "offsets 5-5 are missing (the manifest says 6" if last else "offsets 4-4 are missing"
    assert any(expected in line for line in report["damaged_rows"]), report["damaged_rows"]


def test_the_newest_event_deleted_with_the_manifest_lowered_is_found_by_its_answer(
    tmp_path: Path,
) -> None:
    # An auditor's walkthrough: the newest grant event deleted, the manifest's rows and offsets
    # lowered by one, "all proven", exit 0; the command processor's answer still named it.
    events = history()
    newest = next(e for e in reversed(events) if isinstance(e, GRANT_EVENT_TYPES))  # g-3
    command = _grant(6, "g-3", "ticket.*")
    answer = command_result(command, (newest,), event_id="a-6", now=newest.occurred_at)
    millis = int(newest.occurred_at.timestamp() * 1000)
    out = tmp_path / "export"
    write_export(
        out,
        [
            *records(events),
            Exported(TOPICS.command_results, 0, 0, millis, b"c-6", CODEC.encode(answer)),
        ],
        TOPICS,
    )
    code, report, _ = verify(out)
    assert code == 0 and report["damaged_rows"] == []
    _grant_rows(out, lambda rows: [r for r in rows if r.get("grant_id") != "g-3"])
    manifest = out / "_manifest.json"
    document = json.loads(manifest.read_text())
    document["offsets"][TOPICS.grant_events]["0"] -= 1
    for entry in document["files"]:
        if entry["topic"] == TOPICS.grant_events:
            entry["last_offset"] -= 1
            entry["rows"] -= 1
    manifest.write_text(json.dumps(document))
    code, report, _ = verify(out)
    assert code == 11
    [line] = report["damaged_rows"]
    assert line.startswith(
        f"{TOPICS.command_results} partition 0 offset 0: the accepted IssueGrant c-6 names 1 "
        f"governance event(s) not in the export, the first {newest.event_id} ("
    )
    assert "keep this folder as evidence" in line
    # A review: the answer's event_ids cell edited too (emptied, or text) hid it, since the
    # check read the column, which actor verify does not hold to the record bytes.
    for cell in ("[]", '"e-late"', None):

        def edited(rows: list[dict[str, Any]], cell: Any = cell) -> list[dict[str, Any]]:
            for r in rows:
                r["event_ids"] = cell
            return rows

        for path in files_of(out, TOPICS.command_results):
            rewrite(path, edited)
        code, report, _ = verify(out)
        assert code == 11, (cell, report)
        assert any(f"the first {newest.event_id} (" in d for d in report["damaged_rows"]), cell


def _reencoded(events: list[GovernanceEvent], which: str, **changes: Any) -> list[GovernanceEvent]:
    return [dataclasses.replace(e, **changes) if e.event_id == which else e for e in events]


@pytest.mark.parametrize(
    ("event_type", "changes", "problem"),
    [
        # The revocation moved to another principal: the grant stays in force for agent:bot.
        # (It is not the next event of agent:other, nor was the one after it agent:bot's.)
        (
            "GrantRevoked",
            {"principal": "agent:other"},
            "it is event 3 of agent:other, but the last one before it is 0",
        ),
        # A forged approver on a grant whose signed command named none.
        ("GrantIssued", {"approved_by": "human:ciso"}, "approved_by is not the signed command's"),
        # A proposal's version, derived by the processor, altered.
        ("PolicyVersionProposed", {"version": 7}, "proposes version 7, but the next version was 1"),
        # A rollback whose target the processor chose, re-pointed.
        ("PolicyRolledBack", {"to_version": 2}, "rolls back to v2, but the version before was v1"),
        # An event re-dated long after its command was signed.
        (
            "PolicyVersionApproved",
            {"occurred_at": T0 + timedelta(days=3)},
            "not within the signed command's validity",
        ),
    ],
)
def test_a_record_re_encoded_with_other_fields_is_not_proven(
    tmp_path: Path, event_type: str, changes: dict[str, Any], problem: str
) -> None:
    events = history()
    target = next(e for e in events if type(e).__name__ == event_type)
    out = exported(tmp_path, _reencoded(events, target.event_id, **changes))
    code, report, _ = verify(out)
    assert code == 11 and report["damaged_rows"] == []  # columns and record agree
    assert any(
        v["event_id"] == target.event_id and problem in v["problem"] for v in report["unproven"]
    ), report["unproven"]


def test_a_footer_forged_to_hide_a_grant_from_sql_is_found(tmp_path: Path) -> None:
    """A red team's finding: with the footer's statistics rewritten, `grants_of` no longer saw a
    grant whose row and signed record were untouched, and `actor verify --from` proved all."""
    out = exported(tmp_path, history())
    [path] = files_of(out, TOPICS.grant_events)
    rows = pq.read_table(path).to_pylist()
    index = next(i for i, r in enumerate(rows) if r["event_type"] == "GrantIssued" and i > 0)
    hide_in_footer(path, index, ["principal"])
    code, report, _ = verify(out)
    assert code == 11, report
    [line] = report["damaged_rows"]
    assert line.startswith(str(path.relative_to(out)) + " has a footer its data does not bear out")
    assert report["unproven"] == []  # the events themselves are still proven


def test_a_dictionary_encoded_column_is_reported_not_a_crash(tmp_path: Path) -> None:
    # A reviewer's finding: actor verify --from exited 1 with ArrowNotImplementedError.
    out = exported(tmp_path, history())
    [path] = files_of(out, TOPICS.grant_events)
    table = pq.read_table(path)
    at = table.schema.get_field_index("principal")
    pq.write_table(table.set_column(at, "principal", table.column(at).dictionary_encode()), path)
    code, report, _ = verify(out)
    assert code == 11, report
    assert any("a type the exporter never writes" in line for line in report["damaged_rows"])


class _Accepting:
    """A history that commands are decided into, signed, as a processor of given
    administrators accepted them (``decided``: refused ones fail the test)."""

    def __init__(self, *, prefix: str) -> None:
        self.events = history()
        self.state = EMPTY_STATE
        for event in self.events:
            self.state = fold(self.state, event)
        self._ids = (f"{prefix}-{i}" for i in range(100))

    def decided(self, key: Ed25519PrivateKey, command: Command, admins: set[str]) -> None:
        at = T0 + timedelta(seconds=100 + len(self.events))
        signed = sign(dataclasses.replace(command, occurred_at=at), key)
        out = decide_signed(
            self.state, signed, now=at, new_id=lambda: next(self._ids), admins=frozenset(admins)
        )
        assert not isinstance(out, Rejection), out
        for event in out:
            self.events.append(event)
            self.state = fold(self.state, event)


def test_events_accepted_under_earlier_rules_are_listed_apart_when_the_auditor_says_when(
    tmp_path: Path,
) -> None:
    # An operator's upgrade: events an earlier release accepted (a delegate registering a
    # colleague's key, say) failed today's authority rules, and actor verify stayed red for
    # good, with nothing telling them from a processor that skipped a check.
    from ledger.core.events import RegisterActorKey
    from ledger.core.signing import key_id_of

    carol = Ed25519PrivateKey.generate()
    ledger = _Accepting(prefix="l")
    events, decided = ledger.events, ledger.decided

    decided(
        KEYS[ADMIN],
        RegisterActorKey(
            **_by(ADMIN, 20), principal="human:carol", actor_key_id=key_id_of(public_bytes(carol)),
            public_key=public_bytes(carol),
        ),
        set(KEYS),
    )  # fmt: skip
    # Accepted by a processor whose rules were other (here: taking carol for an administrator).
    grant = IssueGrant(
        **_by("human:carol", 21), grant_id="g-9", principal="agent:bot", actions=("*",),
        resource="*",
    )  # fmt: skip
    decided(carol, grant, {*KEYS, "human:carol"})
    out = exported(tmp_path, events)
    code, report, _ = verify(out)
    assert code == 11 and [v["authority"] for v in report["unproven"]] == [True]
    plain = CliRunner().invoke(cli, ["actor", "verify", "--from", str(out)])
    assert "note: 1 of the unproven events are signed by their actors and fail only" in (
        plain.stderr
    )
    after = (T0 + timedelta(hours=1)).isoformat()
    done = CliRunner().invoke(
        cli, ["actor", "verify", "--from", str(out), "--accepted-before", after]
    )
    assert done.exit_code == 0, done.stderr
    assert "EARLIER-RULES GrantIssued" in done.stderr and "human:carol held no grant" in done.stderr
    assert "; 1 accepted under earlier rules" in done.stdout
    before = T0.isoformat()  # the event is after it: still a failure
    done = CliRunner().invoke(
        cli, ["actor", "verify", "--from", str(out), "--accepted-before", before]
    )
    assert done.exit_code == 11


def test_a_grant_to_a_role_an_earlier_release_let_reach_a_delegates_member_is_listed_apart(
    tmp_path: Path,
) -> None:
    # A red team: a delegate assigned itself an empty role, and an administrator's later grant
    # to the role reached it. Accepted before the rule that refuses it now, it fails authority
    # only: listed EARLIER-RULES for an auditor who says when the ledger was upgraded.
    from ledger.core.events import AssignRole, RegisterActorKey
    from ledger.core.signing import key_id_of

    dave = Ed25519PrivateKey.generate()
    ledger = _Accepting(prefix="r")
    events, decided = ledger.events, ledger.decided

    decided(
        KEYS[ADMIN],
        RegisterActorKey(
            **_by(ADMIN, 30), principal="human:dave", actor_key_id=key_id_of(public_bytes(dave)),
            public_key=public_bytes(dave),
        ),
        {ADMIN},
    )  # fmt: skip
    dave_assigns = IssueGrant(
        **_by(ADMIN, 31), grant_id="g-31", principal="human:dave",
        actions=("ledger.role.assign",), resource="role:*",
    )  # fmt: skip
    decided(KEYS[ADMIN], dave_assigns, {ADMIN})
    mine = AssignRole(**_by("human:dave", 32), principal="human:dave", role="role:rm")
    decided(dave, mine, {ADMIN})
    to_role = IssueGrant(
        **_by(ADMIN, 33), grant_id="g-33", principal="role:rm",
        actions=("ledger.policy.promote",), resource="policy:*",
    )  # fmt: skip
    decided(KEYS[ADMIN], to_role, {ADMIN, "human:dave"})  # as an earlier release accepted it
    out = exported(tmp_path, events)
    code, report, _ = verify(out)
    assert code == 11 and [(v["event_type"], v["authority"]) for v in report["unproven"]] == [
        ("GrantIssued", True)
    ]
    after = (T0 + timedelta(hours=1)).isoformat()
    done = CliRunner().invoke(
        cli, ["actor", "verify", "--from", str(out), "--accepted-before", after]
    )
    assert done.exit_code == 0, done.stderr
    assert "EARLIER-RULES GrantIssued" in done.stderr
    assert "would reach human:dave, whom human:dave (not an administrator)" in done.stderr
