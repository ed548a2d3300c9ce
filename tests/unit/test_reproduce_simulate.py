"""Reproduction (``replay --decision``) and impact simulation (``policy simulate``) over a
history generated with the core — policy versions, a canary, a rollback, grants, a batch —
written in the export format, and read back as the CLI reads an export. No broker: the same
over Kafka is tests/integration/test_reproduce.py."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from export_format import Exported, files_of, rewrite, write_export

from ledger.audit.history import load_export_history
from ledger.audit.reproduce import WRITER_FIELDS, reproduce
from ledger.audit.sources import ExportSource, answered, single_pairs
from ledger.cli.app import cli
from ledger.codec import default_codec
from ledger.core.chain import ChainHead, checkpoint, link
from ledger.core.evaluate import evaluate, evaluate_batch
from ledger.core.events import (
    ApprovePolicyVersion,
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    BatchItem,
    Command,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    IssueGrant,
    PolicyRolledBack,
    PolicyVersionApproved,
    PolicyVersionPromoted,
    PolicyVersionProposed,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RollbackPolicy,
    Stage,
)
from ledger.core.history import state_at_position
from ledger.core.jsonform import format_timestamp
from ledger.core.lifecycle import Rejection, decide
from ledger.core.limits import DEFAULT_LIMITS
from ledger.core.policy import parse_policy
from ledger.core.simulate import simulate
from ledger.core.state import EMPTY_STATE, fold, with_position, with_unreadable
from ledger.kafka.reading import position_key
from ledger.settings import TopicNames

ROOT = Path(__file__).resolve().parents[2]
V1 = (ROOT / "examples" / "policies" / "refund.yaml").read_text()
V2_PATH = ROOT / "examples" / "policies" / "refund-v2.yaml"
V2 = V2_PATH.read_text()
CODEC = default_codec()
TOPICS = TopicNames(prefix="s.")
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
ADMINS = frozenset({"human:admin", "human:alice", "human:bob"})
AGENT = "agent:refund-bot"
_POLICY_EVENTS = (
    PolicyVersionProposed,
    PolicyVersionApproved,
    PolicyVersionPromoted,
    PolicyRolledBack,
)

# Facts whose determination under v1 and under v2 is known (see examples/policies).
FLIP_TO_CREDIT = {
    "tenure_days": 400,
    "amount": Decimal("300.00"),
    "prior_refunds_12m": 0,
    "standing": "good",
}
FLIP_TO_DENY = {
    "tenure_days": 400,
    "amount": Decimal("600.00"),
    "prior_refunds_12m": 0,
    "standing": "good",
}
SAME_ALLOW = {
    "tenure_days": 400,
    "amount": Decimal("100.00"),
    "prior_refunds_12m": 0,
    "standing": "good",
}
SAME_DENY = {
    "tenure_days": 400,
    "amount": Decimal("100.00"),
    "prior_refunds_12m": 0,
    "standing": "suspended",
}


class History:
    """A ledger generated with the core, recorded as Kafka records would be."""

    def __init__(self) -> None:
        self.state = EMPTY_STATE
        self.now = T0
        self.records: list[Exported] = []
        self.offsets: dict[tuple[str, int], int] = {}
        self.head = ChainHead("evaluator-s/n1")
        self.decisions: list[DecisionRecorded | BatchDecisionRecorded] = []
        self.ids = (f"e-{i}" for i in itertools.count())
        self.marks: dict[str, datetime] = {}

    def tick(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def record(self, topic: str, partition: int, key: str, event: Any) -> int:
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        self.records.append(
            Exported(
                topic,
                partition,
                offset,
                int(event.occurred_at.timestamp() * 1000),
                key.encode(),
                CODEC.encode(event),
            )
        )
        return offset

    def command(self, make: Callable[..., Command], **fields: Any) -> None:
        command = make(event_id=next(self.ids), occurred_at=self.tick(), **fields)
        outcome = decide(
            self.state, command, now=self.now, new_id=lambda: next(self.ids), admins=ADMINS
        )
        assert not isinstance(outcome, Rejection), outcome
        for event in outcome:
            topic = (
                TOPICS.policy_events if isinstance(event, _POLICY_EVENTS) else TOPICS.grant_events
            )
            offset = self.record(topic, 0, "k", event)
            self.state = with_position(fold(self.state, event), position_key(topic, 0), offset)

    def ask(self, facts: dict[str, Any], *, principal: str = AGENT, n: int = 1) -> None:
        for _ in range(n):
            rid = next(self.ids)
            request = EvaluationRequested(
                event_id=rid,
                occurred_at=self.tick(0.01),
                actor=principal,
                action="refund.issue",
                principal=principal,
                resource=f"account:{rid}",
                facts=facts,
            )
            partition = zlib.crc32(rid.encode()) % 3
            self.record(TOPICS.evaluation_requests, partition, rid, request)
            decided = evaluate(
                self.state, request, now=self.tick(0.001), evaluator_id="evaluator-s"
            )
            self._decided(decided, partition)

    def ask_batch(self) -> None:
        rid = next(self.ids)
        request = BatchEvaluationRequested(
            event_id=rid,
            occurred_at=self.tick(0.01),
            actor=AGENT,
            principal=AGENT,
            items=(
                BatchItem(
                    item_id="a", action="refund.issue", resource="account:b1", facts=FLIP_TO_CREDIT
                ),
                BatchItem(
                    item_id="b", action="refund.issue", resource="account:b2", facts=SAME_ALLOW
                ),
            ),
        )
        self.record(TOPICS.evaluation_requests, 0, rid, request)
        self._decided(
            evaluate_batch(self.state, request, now=self.tick(0.001), evaluator_id="evaluator-s"), 0
        )

    def _decided(self, decided: Any, partition: int) -> None:
        changes = {"latency_us": 7} if isinstance(decided, DecisionRecorded) else None
        stamped, self.head = link(decided, self.head, changes)
        self.decisions.append(stamped)
        self.record(TOPICS.decisions, partition, stamped.request_id, stamped)

    def close(self) -> None:
        mark = checkpoint(self.head, now=self.tick(), actor="service:evaluator", final=True)
        self.record(TOPICS.chain_checkpoints, 0, mark.chain_id, mark)


def generate() -> History:
    h = History()
    h.command(
        IssueGrant,
        actor="human:admin",
        grant_id="g-agent",
        principal=AGENT,
        actions=("refund.*",),
        resource="account:*",
    )
    h.command(ProposePolicyVersion, actor="human:alice", document=V1, policy="refund")
    h.command(ApprovePolicyVersion, actor="human:bob", policy="refund", version=1)
    h.command(
        PromotePolicyVersion, actor="human:admin", policy="refund", version=1, stage=Stage.ACTIVE
    )
    h.ask(FLIP_TO_CREDIT, n=10)
    h.ask(FLIP_TO_DENY, n=4)
    h.ask(SAME_ALLOW, n=5)
    h.ask(SAME_DENY, n=3)
    h.ask(SAME_ALLOW, principal="agent:intruder", n=2)  # no_authority: skipped by simulation
    h.ask_batch()
    h.marks["v1 only until"] = h.tick()
    h.command(ProposePolicyVersion, actor="human:alice", document=V2, policy="refund")
    h.command(ApprovePolicyVersion, actor="human:bob", policy="refund", version=2)
    h.command(
        PromotePolicyVersion,
        actor="human:admin",
        policy="refund",
        version=2,
        stage=Stage.CANARY,
        percent=50,
    )
    h.ask(FLIP_TO_CREDIT, n=6)  # some decided by the canary, all with shadow results
    h.command(
        PromotePolicyVersion, actor="human:admin", policy="refund", version=2, stage=Stage.ACTIVE
    )
    h.ask(FLIP_TO_DENY, n=2)
    h.command(RollbackPolicy, actor="human:admin", policy="refund", reason="too strict")
    h.ask(FLIP_TO_CREDIT, n=2)
    h.close()
    return h


@pytest.fixture(scope="module")
def history() -> History:
    return generate()


@pytest.fixture(scope="module")
def export(history: History, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "export"
    write_export(out, history.records, TOPICS)
    return out


def test_histories_share_one_position_key_object_per_partition(export: Path) -> None:
    # A million-entry history holds a handful of key strings, not a million copies.
    assert position_key("ledger.grant-events", 0) == "ledger.grant-events/0"
    assert position_key("ledger.grant-events", 0) is position_key("ledger.grant-events", 0)
    for entries in (load_export_history(export), ExportSource(export).history()):
        keys = [entry.position_key for entry in entries]
        assert len(keys) > len(set(keys)) >= 2
        assert len({id(key) for key in keys}) == len(set(keys))


# --------------------------------------------------------------------------- reproduction


def test_every_decision_of_the_history_reproduces_from_the_export(
    history: History, export: Path
) -> None:
    source = ExportSource(export)  # the prefix is found in the export
    entries = source.history()
    assert len(entries) == sum(
        1 for r in history.records if "policy" in r.topic or "grant" in r.topic
    )
    stages = set()
    for recorded in history.decisions:
        found = source.decision(recorded.event_id)
        assert found == recorded
        [request] = source.requests(recorded.request_id)
        result = reproduce(found, request, entries)
        assert result.reproduces, (recorded.event_id, result.differences)
        if isinstance(recorded, DecisionRecorded):
            stages.add((recorded.stage, recorded.reason_code, bool(recorded.shadow_results)))
    # The history exercised what reproduction must get right: canary with shadows, rollback,
    # no_authority, versions.
    assert (Stage.CANARY, "rule_matched", True) in stages
    assert any(reason == "no_authority" for _, reason, _ in stages)
    assert {d.policy_version for d in history.decisions if isinstance(d, DecisionRecorded)} >= {
        1,
        2,
    }


def test_a_decision_that_does_not_match_its_position_is_reported_field_by_field(
    history: History, export: Path
) -> None:
    source = ExportSource(export)
    recorded = next(
        d for d in history.decisions if isinstance(d, DecisionRecorded) and d.policy_version == 1
    )
    [request] = source.requests(recorded.request_id)
    forged = dataclasses.replace(
        recorded, determination=Determination.DENY, rule="suspended", latency_us=1
    )
    result = reproduce(forged, request, source.history())
    assert not result.reproduces
    assert [d.field for d in result.differences] == ["determination", "rule"]
    assert result.differences[0].recorded == "deny" and result.differences[0].reproduced == "allow"
    assert set(WRITER_FIELDS) <= set(result.ignored)


def test_a_decision_whose_governance_records_are_gone_says_so(
    history: History, export: Path
) -> None:
    # replay --decision rebuilt the state without them and printed only a diff (the auditor's
    # walkthrough: the newest policy event deleted from the export with its offsets).
    source = ExportSource(export)
    entries = source.history()
    recorded = next(
        d
        for d in reversed(history.decisions)
        if isinstance(d, DecisionRecorded) and d.governance_position
    )
    key, cited = max(recorded.governance_position.items(), key=lambda kv: kv[1])
    [request] = source.requests(recorded.request_id)
    kept = [e for e in entries if not (e.position_key == key and e.offset == cited)]
    result = reproduce(recorded, request, kept)
    assert result.note is not None
    assert f"{key}@{cited} (it holds up to {cited - 1})" in result.note
    assert reproduce(recorded, request, entries).note is None  # all there: nothing to say


def test_a_decision_whose_history_lacks_a_record_before_its_position_says_so(
    history: History, export: Path
) -> None:
    # A governance event deleted from the middle of the log (not the newest) went unremarked:
    # only the highest offset of each position was compared.
    source = ExportSource(export)
    entries = source.history()
    recorded = next(
        d
        for d in reversed(history.decisions)
        if isinstance(d, DecisionRecorded) and max(d.governance_position.values(), default=0) > 1
    )
    key, cited = max(recorded.governance_position.items(), key=lambda kv: kv[1])
    [request] = source.requests(recorded.request_id)
    kept = [e for e in entries if not (e.position_key == key and e.offset == 1)]
    result = reproduce(recorded, request, iter(kept))
    assert result.note is not None
    assert f"{key}@{cited} (it lacks offset(s) 1 of them)" in result.note


@pytest.mark.parametrize(
    ("lacking", "whose"),
    [
        ((("policy", "refund"),), "a policy"),
        ((("policy", "another"),), "a policy"),  # any policy's: which governs may change
        ((("principal", AGENT),), f"{AGENT}'s authority"),
    ],
)
def test_a_decision_its_evaluator_gave_lacking_a_newer_releases_record_reproduces_with_a_note(
    history: History, export: Path, lacking: tuple[tuple[str, str], ...], whose: str
) -> None:
    # An evaluator of an earlier release that skipped a record a newer one wrote answers error
    # (governance_unreadable) for what that record could change; the export (a newer CLI's)
    # holds the record: re-decided as that evaluator decided, and what it is with the record.
    source = ExportSource(export)
    entries = source.history()
    for recorded in history.decisions:
        if isinstance(recorded, DecisionRecorded) and recorded.reason_code == "rule_matched":
            break
    [request] = source.requests(recorded.request_id)
    state = with_unreadable(
        state_at_position(entries, recorded.governance_position), frozenset(lacking)
    )
    decided = evaluate(state, request, now=recorded.occurred_at, evaluator_id="evaluator-s")
    assert decided.reason_code == "governance_unreadable"
    result = reproduce(decided, request, entries)
    assert result.reproduces, result.differences
    assert result.note == (
        f"its evaluator could not read a governance record of {whose} (a newer release wrote "
        "it; `ledger ps` says so of such an evaluator): re-decided so; with every record of "
        f"its position the history holds, it is {recorded.determination.value} (rule_matched)"
    )
    # A forged one is not taken for it.
    forged = dataclasses.replace(decided, determination=Determination.DENY)
    assert [d.field for d in reproduce(forged, request, entries).differences] == ["determination"]


def test_a_pre_evaluation_its_evaluator_gave_lacking_a_record_reproduces_with_a_note(
    history: History, export: Path
) -> None:
    source = ExportSource(export)
    entries = source.history()
    recorded = next(d for d in history.decisions if isinstance(d, BatchDecisionRecorded))
    [request] = source.requests(recorded.request_id)
    assert isinstance(request, BatchEvaluationRequested)
    state = with_unreadable(
        state_at_position(entries, recorded.governance_position), frozenset({("policy", "refund")})
    )
    decided = evaluate_batch(state, request, now=recorded.occurred_at, evaluator_id="evaluator-s")
    assert {d.reason_code for d in decided.decisions} == {"governance_unreadable"}
    result = reproduce(decided, request, entries)
    assert result.reproduces, result.differences
    assert result.note is not None and result.note.endswith(
        "with every record of its position the history holds, it is "
        + ", ".join(f"{d.item_id}: {d.determination.value}" for d in recorded.decisions)
    )


# --------------------------------------------------------------------------- simulation


def test_simulating_v2_over_the_v1_window_finds_the_known_flips(
    history: History, export: Path
) -> None:
    source = ExportSource(export)
    window = list(single_pairs(source.pairs(until=history.marks["v1 only until"])))
    report = simulate(parse_policy(V2), window)
    assert report.considered == 10 + 4 + 5 + 3 + 2 + 2  # the batch counts item by item
    assert report.skipped == 2  # no_authority
    assert report.transitions == {
        "allow -> allow_with_constraints": 11,
        "allow_with_constraints -> deny": 4,
    }
    assert len(report.changed) == 15


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_error_line(result: Result, exit_code: int) -> str:
    assert result.exit_code == exit_code, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr
    return lines[0]


def test_policy_simulate_from_an_export(history: History, export: Path) -> None:
    until = history.marks["v1 only until"].isoformat()
    result = run(
        "policy", "simulate", str(V2_PATH), "--from", str(export), "--until", until, "--json"
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["replayed"], data["changed"], data["skipped"]) == (26, 15, 2)
    assert data["transitions"] == {
        "allow -> allow_with_constraints": 11,
        "allow_with_constraints -> deny": 4,
    }
    by_rule = {(r["recorded_rule"], r["draft_rule"]): r["count"] for r in data["by_rule"]}
    assert by_rule == {("auto-refund", "credit-only"): 11, ("credit-only", None): 4}
    assert len(data["sample"]) == 10
    table = run("policy", "simulate", str(V2_PATH), "--from", str(export), "--until", until)
    assert table.exit_code == 0 and "15 determinations would change" in table.stdout
    since = run(
        "policy", "simulate", str(V2_PATH), "--from", str(export), "--since", until, "--json"
    )
    assert json.loads(since.stdout)["replayed"] == 10  # the rest of the history
    # An empty window is said to be one, not reported as "0 would change" alone.
    empty = run("policy", "simulate", str(V2_PATH), "--from", str(export), "--since", "2099-01-01")
    assert empty.exit_code == 0 and "0 requests replayed" in empty.stdout
    # An auditor's walkthrough: an open window over an export was said to end "now".
    assert "to its read at 20" in empty.stdout and "to now" not in empty.stdout, empty.stdout
    # A review: `--since 1h` counts back from now; over an older export it holds nothing.
    assert "is after " in empty.stderr and "the export holds nothing of that window" in (
        empty.stderr
    )
    assert "is after " not in since.stderr
    assert "warning: no recorded request with a decision in this window" in empty.stderr


def test_simulate_says_what_a_draft_stops_governing_and_why_it_decides_as_it_does(
    history: History, export: Path, tmp_path: Path
) -> None:
    # A policy owner's walkthrough: a draft narrowing `governs` simulated as "0 would change"
    # though it left the action ungoverned once active; and a draft adding a required fact
    # showed every change as "error (default)", with no reason anywhere.
    until = history.marks["v1 only until"].isoformat()
    narrow = tmp_path / "refund.yaml"
    narrow.write_text(V1.replace("governs: [refund.issue]", "governs: [refund.issue.partial]"))
    args = ("policy", "simulate", str(narrow), "--from", str(export), "--until", until)
    data = json.loads(run(*args, "--json").stdout)
    assert data["changed"] == 0 and data["no_longer_governed"] == {"refund.issue": 24}
    table = run(*args)
    assert table.exit_code == 0
    assert "warning: 24 requests refund decided are of actions the draft no longer governs " in (
        " ".join(table.stdout.split())
    )
    needs = tmp_path / "needs.yaml"
    needs.write_text(
        V1.replace("  reason_code:", "  channel:           {type: string}\n  reason_code:")
    )
    args = ("policy", "simulate", str(needs), "--from", str(export), "--until", until)
    data = json.loads(run(*args, "--json").stdout)
    assert data["changed"] == 24 and data["no_longer_governed"] == {}
    change = data["sample"][0]
    assert (change["to"], change["draft_rule"], change["draft_reason_code"]) == (
        "error",
        None,
        "invalid_facts",
    )
    assert any("channel" in reason for reason in change["draft_reasons"])
    assert change["principal"] == AGENT  # who would be affected (a policy owner's walkthrough)
    table = run(*args).stdout
    assert "(invalid_facts)" in table and "(default)" not in table and AGENT in table


def test_simulate_says_which_requests_another_policy_keeps(
    history: History, export: Path, tmp_path: Path
) -> None:
    # A policy owner's finding: a draft of another policy governing the same action was told
    # "the draft decides them only where it takes precedence", and had to work out which side
    # wins; its changes counted requests the other policy would go on deciding.
    until = history.marks["v1 only until"].isoformat()

    def simulated(name: str, governs: str) -> tuple[dict[str, Any], str]:
        draft = tmp_path / f"{name}.yaml"
        draft.write_text(
            V1.replace("policy: refund", f"policy: {name}", 1).replace(
                "governs: [refund.issue]", f"governs: [{governs}]"
            )
        )
        args = ("policy", "simulate", str(draft), "--from", str(export), "--until", until)
        return json.loads(run(*args, "--json").stdout), " ".join(run(*args).stdout.split())

    # An exact name against refund's exact name: the lower policy name decides.
    data, text = simulated("a-refund", "refund.issue")
    assert data["decided_elsewhere"] == {"refund": 24} and data["taken_over"] == {"refund": 24}
    assert "the draft would decide all of them" in text
    data, text = simulated("z-refund", "refund.issue")
    assert data["taken_over"] == {"refund": 0}
    assert "the draft would decide 0 of them, and 24 (refund: 24) would stay with" in text
    # A glob never takes an action from an exact name, whatever the policy names.
    data, text = simulated("a-refund", "refund.*")
    assert data["decided_elsewhere"] == {"refund": 24} and data["taken_over"] == {"refund": 0}
    assert f"as governance stood at {until[:19]}" in text


def test_replay_decision_from_an_export(history: History, export: Path) -> None:
    canary = next(
        d for d in history.decisions if isinstance(d, DecisionRecorded) and d.stage is Stage.CANARY
    )
    result = run("replay", "--decision", canary.event_id, "--from", str(export))
    assert result.exit_code == 0, result.stderr
    assert "reproduces:" in result.stdout and "latency_us" in result.stdout
    by_request = run("replay", "--decision", canary.request_id, "--from", str(export), "--json")
    data = json.loads(by_request.stdout)
    assert data["reproduces"] is True and data["decision_id"] == canary.event_id
    # What it decided, recorded and again, not only that they agree.
    assert (
        data["recorded"]
        == data["reproduced"]
        == {
            "determination": canary.determination.value,
            "rule": canary.rule,
            "reason_code": canary.reason_code,
            "policy": canary.policy,
            "policy_version": canary.policy_version,
        }
    )


def _early_agent_decision(
    history: History, also: Callable[[DecisionRecorded], bool]
) -> DecisionRecorded:
    """The first of the agent's single decisions made while v1 alone decided, meeting ``also``."""
    return next(
        d
        for d in history.decisions
        if isinstance(d, DecisionRecorded)
        and d.principal == AGENT
        and d.occurred_at < history.marks["v1 only until"]
        and also(d)
    )


def _request_of(
    history: History, decision: DecisionRecorded
) -> tuple[Exported, EvaluationRequested]:
    """The exported record of ``decision``'s request, and the request."""
    [original] = [
        r
        for r in history.records
        if r.topic == TOPICS.evaluation_requests and r.key == decision.request_id.encode()
    ]
    request = CODEC.decode(original.value)
    assert isinstance(request, EvaluationRequested)
    return original, request


def _with_copy(
    history: History, honest: DecisionRecorded, out: Path, **changes: Any
) -> tuple[EvaluationRequested, EvaluationRequested]:
    """Write the history and a copy of ``honest``'s request (with ``changes``) on partition 0,
    where it is read first, to an export at ``out``; returns (the request, the copy)."""
    original, request = _request_of(history, honest)
    copy = dataclasses.replace(request, **changes)
    forged = Exported(
        TOPICS.evaluation_requests,
        0,
        10_000,
        original.timestamp_ms,
        original.key,
        CODEC.encode(copy),
    )
    write_export(out, [*history.records, forged], TOPICS)
    return request, copy


def test_a_copy_of_a_request_id_with_other_facts_misleads_neither_replay_nor_simulate(
    history: History, tmp_path: Path
) -> None:
    # Request ids are on ledger.decisions for any agent to read. A copy of one, with other
    # facts, written where it is read first (partition 0), is ignored by the evaluator as a
    # repeat, but replay took it for the request ("does not reproduce: facts differ", exit
    # 12) and simulate counted the id twice, once with the copy's facts.
    honest = _early_agent_decision(history, lambda d: zlib.crc32(d.request_id.encode()) % 3 != 0)
    out = tmp_path / "export"
    request, copy = _with_copy(history, honest, out, facts=SAME_DENY)  # same id and time
    source = ExportSource(out)
    assert source.requests(honest.request_id) == [copy, request]  # the copy is read first
    result = run("replay", "--decision", honest.event_id, "--from", str(out), "--json")
    assert result.exit_code == 0, result.stdout
    data = json.loads(result.stdout)
    assert data["reproduces"] is True and data["request_copies"] == 2
    until = history.marks["v1 only until"].isoformat()
    simulated = run(
        "policy", "simulate", str(V2_PATH), "--from", str(out), "--until", until, "--json"
    )
    assert (json.loads(simulated.stdout)["replayed"], json.loads(simulated.stdout)["changed"]) == (
        26,
        15,
    )  # as without the copy


def test_replay_decision_that_was_altered_exits_12(
    history: History, export: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    write_export(copy, history.records, TOPICS)
    target = next(
        d for d in history.decisions if isinstance(d, DecisionRecorded) and d.policy_version == 1
    )
    forged = CODEC.encode(dataclasses.replace(target, determination=Determination.DENY))
    # Record and columns altered alike (what `audit verify` finds from the chain's hashes).
    for path in files_of(copy, TOPICS.decisions):
        rewrite(
            path,
            lambda rows: [
                {**r, "record": forged, "determination": "deny"}
                if r["event_id"] == target.event_id
                else r
                for r in rows
            ],
        )
    result = run("replay", "--decision", target.event_id, "--from", str(copy), "--json")
    line = one_error_line(result, 12)
    assert "determination" in line and "not_reproduced" in line
    assert json.loads(result.stdout)["differences"][0]["field"] == "determination"


def test_replay_says_a_request_rewritten_in_the_export_was_altered(
    history: History, tmp_path: Path
) -> None:
    # An auditor's walkthrough: a request rewritten in the export (record and columns alike)
    # passed `audit verify` and `actor verify`; replay said "facts differ" and nothing more.
    # The decision's own copy of the facts is hash-chained, so the request is what changed.
    honest = _early_agent_decision(history, lambda d: d.facts != SAME_DENY)
    original, request = _request_of(history, honest)
    altered = dataclasses.replace(
        original, value=CODEC.encode(dataclasses.replace(request, facts=SAME_DENY))
    )
    out = tmp_path / "export"
    write_export(out, [altered if r is original else r for r in history.records], TOPICS)
    result = run("replay", "--decision", honest.event_id, "--from", str(out))
    line = one_error_line(result, 12)
    assert "facts differ; its request record differs from what the decision recorded" in line
    assert "note: the request at " in result.stdout
    assert "differs from what its decision recorded of it (facts); the decision's fields " in (
        result.stdout
    )
    as_json = run("replay", "--decision", honest.event_id, "--from", str(out), "--json")
    assert "was altered or replaced" in json.loads(as_json.stdout)["request_altered"]
    # An honest export says nothing of the kind.
    honest_out = tmp_path / "honest"
    write_export(honest_out, history.records, TOPICS)
    fine = run("replay", "--decision", honest.event_id, "--from", str(honest_out), "--json")
    assert fine.exit_code == 0 and json.loads(fine.stdout)["request_altered"] is None
    # A review: a decision recorded before requested_by existed holds none of it; that is no
    # sign of an altered request.
    [recorded] = [
        r
        for r in history.records
        if r.topic == TOPICS.decisions and CODEC.decode(r.value).event_id == honest.event_id
    ]
    older = dataclasses.replace(
        recorded,
        value=CODEC.encode(dataclasses.replace(CODEC.decode(recorded.value), requested_by=None)),
    )
    older_out = tmp_path / "older"
    write_export(older_out, [older if r is recorded else r for r in history.records], TOPICS)
    old = run("replay", "--decision", honest.event_id, "--from", str(older_out), "--json")
    assert old.exit_code == 12 and json.loads(old.stdout)["request_altered"] is None, old.stdout


def test_replay_decision_whose_row_disagrees_with_its_record_exits_11(
    history: History, tmp_path: Path
) -> None:
    # An auditor's walkthrough: a determination changed in the export's columns only. SQL
    # showed allow while `replay --decision` reproduced the untouched record, "reproduces:
    # deny", exit 0.
    copy = tmp_path / "copy"
    write_export(copy, history.records, TOPICS)
    target = next(
        d
        for d in history.decisions
        if isinstance(d, DecisionRecorded) and d.determination is Determination.DENY
    )
    for path in files_of(copy, TOPICS.decisions):
        rewrite(
            path,
            lambda rows: [
                {**r, "determination": "allow"} if r["event_id"] == target.event_id else r
                for r in rows
            ],
        )
    result = run("replay", "--decision", target.request_id, "--from", str(copy))
    line = one_error_line(result, 11)
    assert f"row of decision {target.event_id}" in line and "does not match its record" in line
    assert "determination" in line and "ledger audit verify --from" in line


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_with_its_exit_code(export: Path, tmp_path: Path) -> None:
    assert "no decision 'nope'" in one_error_line(
        run("replay", "--decision", "nope", "--from", str(export)), 2
    )
    assert "does not exist" in one_error_line(
        run("replay", "--decision", "x", "--from", str(tmp_path / "no")), 9
    )
    assert "--since" in one_error_line(
        run("policy", "simulate", str(V2_PATH), "--from", str(export), "--since", "yesterday"), 2
    )
    assert "holds no export" in one_error_line(
        run("policy", "simulate", str(V2_PATH), "--from", str(tmp_path)), 9
    )
    # A red team: a time with an offset that puts it past 9999 in UTC was a traceback.
    late = "9999-12-31T23:59:59-05:00"
    for args in (
        ("policy", "simulate", str(V2_PATH), "--from", str(export), "--since", late),
        ("replay", "--at", late, "--from", str(export)),
    ):
        assert f"{late} lies outside the years 1-9999 in UTC" in one_error_line(run(*args), 2)
    assert "--decision" in one_error_line(run("replay", "--decision", "x", "--at", "2026-01-01"), 2)
    assert "does not exist" in one_error_line(
        run("audit", "verify", "--from", str(tmp_path / "no")), 9
    )


def test_audit_verify_cli(history: History, export: Path, tmp_path: Path) -> None:
    ok = run("audit", "verify", "--from", str(export))
    assert ok.exit_code == 0, ok.stderr
    assert "intact" in ok.stdout
    # What "intact" covers is said beside it (an auditor read it as covering governance rows).
    assert f"ledger actor verify --from {export}" in ok.stdout
    data = json.loads(run("audit", "verify", "--from", str(export), "--json").stdout)
    assert data["intact"] is True and data["records"] == len(history.decisions)
    assert data["chains"][0]["final"] is True and data["unconfirmed"] == 0

    copy = tmp_path / "copy"
    write_export(copy, history.records, TOPICS)
    victim = history.decisions[5]
    for path in files_of(copy, TOPICS.decisions):
        rewrite(
            path,
            lambda rows: [
                {**r, "rule": "forged"} if r["event_id"] == victim.event_id else r for r in rows
            ],
        )
    bad = run("audit", "verify", "--from", str(copy), "--json")
    line = one_error_line(bad, 11)
    assert "tamper_detected" in line and victim.event_id in line and "altered" in line
    assert json.loads(bad.stdout)["problems"][0]["decision_id"] == victim.event_id


def test_the_answered_copy_is_found_when_the_policy_converted_its_facts(
    history: History,
) -> None:
    # The decision records facts as the policy read them (decimals from numbers or text). A
    # copy that sent those converted values, with other facts and another asker, outscored
    # the request that was answered (its number and int facts counted as differences).
    sent = {"tenure_days": 400, "amount": 300.0, "prior_refunds_12m": 0, "standing": "good"}
    honest = EvaluationRequested(
        event_id="r-x",
        occurred_at=history.now,
        actor=AGENT,
        action="refund.issue",
        principal=AGENT,
        resource="account:x",
        facts=sent,
    )
    decision = evaluate(history.state, honest, now=history.now, evaluator_id="evaluator-s")
    assert decision.facts["amount"] == Decimal("300.0")
    forged = dataclasses.replace(
        honest,
        facts=dict(decision.facts) | {"standing": "suspended"},
        requested_by="agent:mallory",
    )
    assert answered(decision, [forged, honest]) is honest
    assert answered(decision, [honest, forged]) is honest


def test_the_answered_copy_is_found_by_its_names_as_the_decision_records_them(
    history: History,
) -> None:
    # A decision records a name over its limit cut (with its length): the copy it answered
    # agrees with that, as it does with a decision recorded with the name whole.
    honest = EvaluationRequested(
        event_id="r-y",
        occurred_at=history.now,
        actor=AGENT,
        action="refund." + "a" * 1_100,
        principal=AGENT,
        resource="account:" + "x" * 1_100,
    )
    decision = evaluate(history.state, honest, now=history.now, evaluator_id="evaluator-s")
    assert decision.reason_code == "request_too_large" and decision.action != honest.action
    other = dataclasses.replace(
        honest, action="refund." + "b" * 1_100, resource="account:" + "y" * 1_100
    )
    for recorded in (
        decision,
        dataclasses.replace(decision, action=honest.action, resource=honest.resource),
    ):
        assert answered(recorded, [other, honest]) is honest
        assert answered(recorded, [honest, other]) is honest


def test_a_window_takes_the_copy_the_decision_answered_not_a_copy_dated_inside_it(
    history: History, tmp_path: Path
) -> None:
    honest = next(
        d for d in history.decisions if isinstance(d, DecisionRecorded) and d.principal == AGENT
    )
    since = honest.requested_at + timedelta(seconds=30)  # the honest request is before it
    out = tmp_path / "export"
    _with_copy(history, honest, out, occurred_at=since, facts=SAME_DENY)
    ids = {q.event_id for q, _ in ExportSource(out).pairs(since=since)}
    assert honest.request_id not in ids


def test_a_decision_id_its_request_copy_was_decided_under_too_is_not_reproduced_as_one(
    history: History, tmp_path: Path
) -> None:
    # A red team: a copy of an agent's request under its id, with other facts, is decided
    # under the same decision id; `replay --decision` took whichever Kafka's partition order
    # gave first (the requester picks the partition), the copy's allow for the agent's deny,
    # "reproduces", exit 0. Now both are named; the request decided again is still one (a
    # review: one re-decided after a restart, past another governance event, was refused as
    # "a copy someone wrote").
    honest = next(
        d for d in history.decisions if isinstance(d, DecisionRecorded) and d.principal == AGENT
    )
    [record] = [
        r
        for r in history.records
        if r.topic == TOPICS.decisions and CODEC.decode(r.value) == honest
    ]
    later = honest.occurred_at + timedelta(milliseconds=120)
    moved = {k: v + 1 for k, v in honest.governance_position.items()}
    again = dataclasses.replace(
        honest, occurred_at=later, latency_us=7, evaluator_id="other", governance_position=moved
    )
    other = (
        Determination.DENY
        if honest.determination is not Determination.DENY
        else Determination.ALLOW
    )
    facts = {**honest.facts, "amount": "1.00"}
    copy = dataclasses.replace(honest, occurred_at=later, determination=other, facts=facts)
    answered_again = dataclasses.replace(again, determination=other)  # the state moved on
    for extra, named in ((again, [honest]), (answered_again, [honest]), (copy, [honest, copy])):
        out = tmp_path / f"with-{extra.determination.value}-{len(named)}"
        forged = Exported(
            TOPICS.decisions, 0, 10_000, record.timestamp_ms, record.key, CODEC.encode(extra)
        )
        write_export(out, [*history.records, forged], TOPICS)
        source = ExportSource(out)
        assert source.decisions([honest.event_id]) == {honest.event_id: named}
        assert source.decision(honest.event_id) == honest  # the earliest
    refused = one_error_line(run("replay", "--decision", honest.event_id, "--from", str(out)), 2)
    assert "names several decisions: its request was decided again" in refused, refused
    assert f"decided {format_timestamp(later)}: {other.value}" in refused, refused
    assert "requests_decided_twice" in refused
    assert "1) decision" in refused and "; 2) decision" in refused, refused
    # --which picks one, numbered as listed: the agent's own reproduces; the copy, whose
    # request is not in the ledger (only its decision was written), is not reproduced.
    first = run("replay", "--decision", honest.event_id, "--which", "1", "--from", str(out))
    assert first.exit_code == 0, first.output
    assert "reproduces" in first.stdout and "reproducing 1) of 2" in first.stderr
    second = run("replay", "--decision", honest.event_id, "--which", "2", "--from", str(out))
    assert second.exit_code == 12, second.output
    assert f"reproducing 2) of 2: decision {honest.event_id}" in second.stderr
    too_far = run("replay", "--decision", honest.event_id, "--which", "3", "--from", str(out))
    assert "names 2 decisions (--which 1 to 2)" in one_error_line(too_far, 2)
    alone = run("replay", "--which", "1", "--from", str(out))
    assert "give --decision" in one_error_line(alone, 2)


def test_a_pre_evaluation_copied_under_its_id_with_other_facts_is_named_not_taken_for_it(
    history: History, export: Path, tmp_path: Path
) -> None:
    # A red team: a copy of an agent's pre-evaluation under its id, with other facts, turned
    # every item to deny; a batch records no facts, so the copy's answer passed for the request
    # decided again: `replay --decision` reproduced one and said nothing of the other.
    recorded = next(d for d in history.decisions if isinstance(d, BatchDecisionRecorded))
    source = ExportSource(export)
    [request] = source.requests(recorded.request_id)
    assert isinstance(request, BatchEvaluationRequested)
    copy = dataclasses.replace(
        request,
        occurred_at=request.occurred_at + timedelta(milliseconds=50),
        items=tuple(dataclasses.replace(i, facts=SAME_DENY) for i in request.items),
    )
    state = state_at_position(source.history(), recorded.governance_position)
    later = recorded.occurred_at + timedelta(milliseconds=60)
    answered_copy = evaluate_batch(state, copy, now=later, evaluator_id="evaluator-s")
    assert answered_copy.event_id == recorded.event_id  # the id comes from the request's
    assert {d.determination for d in answered_copy.decisions} == {Determination.DENY}
    key = recorded.request_id.encode()
    stamp = int(later.timestamp() * 1000)
    out = tmp_path / "with-copy"
    forged = [
        Exported(TOPICS.evaluation_requests, 0, 10_000, stamp, key, CODEC.encode(copy)),
        Exported(TOPICS.decisions, 0, 10_000, stamp, key, CODEC.encode(answered_copy)),
    ]
    write_export(out, [*history.records, *forged], TOPICS)
    found = ExportSource(out).decisions([recorded.event_id])[recorded.event_id]
    assert [d.occurred_at for d in found] == [recorded.occurred_at, later]
    refused = one_error_line(run("replay", "--decision", recorded.event_id, "--from", str(out)), 2)
    assert "names several decisions: its request was decided again" in refused, refused
    # Each reproduces, against the request it answered (found by re-evaluating each copy).
    for which in ("1", "2"):
        chosen = run(
            "replay", "--decision", recorded.event_id, "--which", which, "--from", str(out)
        )
        assert chosen.exit_code == 0, chosen.output
        assert "reproduces: 2 batch items" in chosen.stdout


def test_request_rows_whose_id_columns_were_swapped_are_read_by_their_records(
    history: History, tmp_path: Path
) -> None:
    # The rows were found by their event_id column and taken at their word: with two request
    # rows' ids swapped, requests(a) returned b's record, and replay re-evaluated b's facts.
    first, second = [
        d for d in history.decisions if isinstance(d, DecisionRecorded) and d.principal == AGENT
    ][:2]
    out = tmp_path / "swapped"
    write_export(out, history.records, TOPICS)
    swap = {first.request_id: second.request_id, second.request_id: first.request_id}

    def swapped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            row["event_id"] = swap.get(row["event_id"], row["event_id"])
        return rows

    for path in files_of(out, TOPICS.evaluation_requests):
        rewrite(path, swapped)
    source = ExportSource(out)
    assert [r.event_id for r in source.requests(first.request_id)] == []  # found by record only
    assert source.decision(first.event_id) == first
    pairs = list(source.pairs())
    assert all(decision.request_id == request.event_id for request, decision in pairs)


def test_replay_decision_takes_a_batch_item_as_ledger_decisions_prints_it(
    history: History, export: Path
) -> None:
    # An auditor's walkthrough: `ledger decisions` prints a pre-evaluation's items as
    # REQUEST#ITEM, and `replay --decision` refused that very id.
    batch = next(d for d in history.decisions if isinstance(d, BatchDecisionRecorded))
    item = batch.decisions[-1].item_id
    result = run("replay", "--decision", f"{batch.request_id}#{item}", "--from", str(export))
    assert result.exit_code == 0, result.stderr
    assert "reproduces:" in result.stdout
    assert f"is item {item} of pre-evaluation {batch.request_id}" in result.stderr
    missing = run("replay", "--decision", f"{batch.request_id}#no-such-item", "--from", str(export))
    assert missing.exit_code == 2 and "no decision" in missing.stderr


def test_replay_decision_from_an_export_older_than_a_column(
    history: History, export: Path, tmp_path: Path
) -> None:
    # A review: an export written before a field existed (`requested_by`, say) has no such
    # column in any file; `audit verify` read it as NULL, `replay --decision` took it for
    # tampering (exit 11). A field the decision leaves null stands in for it here.
    import pyarrow.parquet as pq

    target = next(
        d for d in history.decisions if isinstance(d, DecisionRecorded) and d.grant_id is None
    )
    old = tmp_path / "old"
    shutil.copytree(export, old)
    for path in files_of(old, TOPICS.decisions):  # as if no file had the column
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["grant_id"]), path)
    result = run("replay", "--decision", target.event_id, "--from", str(old))
    assert result.exit_code == 0, result.stderr
    assert "reproduces:" in result.stdout


def test_a_request_id_that_reads_as_another_batchs_item_is_refused_as_ambiguous(
    history: History,
) -> None:
    # A red team: an agent sent a request whose own id was another agent's batch id + "#big";
    # `replay --decision BATCH#big` then reproduced the decoy's allow and never named the
    # denied item. A text naming two decisions is refused, naming both.
    from dataclasses import replace

    from ledger.cli.reproduce import _find
    from ledger.errors import UsageError

    batch = next(d for d in history.decisions if isinstance(d, BatchDecisionRecorded))
    single = next(d for d in history.decisions if isinstance(d, DecisionRecorded))
    ref = f"{batch.request_id}#{batch.decisions[0].item_id}"
    decoy = replace(single, request_id=ref)

    class Source:
        where = "test"

        def __init__(self, *recorded: Any) -> None:
            self.recorded, self.reads = recorded, 0

        def decisions(self, ids: Any) -> dict[str, list[Any]]:
            self.reads += 1
            found: dict[str, list[Any]] = {}
            for d in self.recorded:
                for named in {d.event_id, d.request_id} & set(ids):
                    found.setdefault(named, []).append(d)
            return found

    assert _find(Source(batch), ref) is batch  # the item alone: its batch
    source = Source(batch)
    with pytest.raises(UsageError, match="no decision"):
        _find(source, f"{ref}#and#more")  # however many '#' the text holds, one read
    assert source.reads == 1
    assert _find(Source(decoy), ref) is decoy  # the request alone
    with pytest.raises(
        UsageError, match=r"names 2 decisions \(1\) decision .* of request .*; 2\) item "
    ):
        _find(Source(batch, decoy), ref)
    with pytest.raises(UsageError, match="no decision"):
        _find(Source(batch), f"{batch.request_id}#no-such-item")


def test_ledger_decisions_says_when_one_request_text_names_several_decisions(
    history: History,
) -> None:
    # The same red team: `ledger decisions --request BATCH#big` printed the denied item and the
    # decoy's allow as two rows alike; a hand-built batch repeating an item id did the same.
    from dataclasses import replace

    from ledger.cli.decisions import _several
    from ledger.core.events import item_ref

    batch = next(d for d in history.decisions if isinstance(d, BatchDecisionRecorded))
    single = next(d for d in history.decisions if isinstance(d, DecisionRecorded))
    ref = item_ref(batch.request_id, batch.decisions[0].item_id)
    decoy = replace(single, request_id=ref)
    item_rows = [[None, item_ref(batch.request_id, i.item_id)] for i in batch.decisions]
    assert _several(ref, [(batch, item_rows)]) is None  # one item: nothing to say
    assert _several(batch.request_id, [(batch, item_rows)]) is None  # the batch's own id
    said = _several(ref, [(batch, item_rows), (decoy, [[None, ref]])])
    assert said is not None and said.startswith(f"{ref!r} names 2 decisions (")
    assert f"1 item(s) of pre-evaluation {batch.request_id}; a request of that id" in said
    repeated = _several(ref, [(batch, [[None, ref], [None, ref]])])
    assert repeated is not None and "names 2 decisions (2 item(s) of pre-evaluation" in repeated


def test_an_exports_history_is_read_by_its_files_topics_not_a_column(
    history: History, export: Path, tmp_path: Path
) -> None:
    # A review found two readers of an export's governance history (replay --from, and
    # reproduction / simulation); there is one now. It took each row's topic from its column:
    # one rewritten to name no governance topic broke its sort (a KeyError).
    expected = load_export_history(export)
    assert ExportSource(export).history() == expected
    out = tmp_path / "retopiced"
    write_export(out, history.records, TOPICS)

    def retopic(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**row, "topic": "elsewhere"} for row in rows]

    for path in files_of(out, TOPICS.policy_events):
        rewrite(path, retopic)
    assert load_export_history(out) == expected


def test_audit_verify_holds_request_rows_to_their_records_and_finds_unlisted_files(
    history: History, export: Path, tmp_path: Path
) -> None:
    # An auditor's walkthrough: one request's facts column changed (its record left alone) and
    # written back as the exporter writes it; audit verify said intact, replay reproduced from
    # the record, and SQL showed the false facts. And a data file planted in the folders (not in
    # the manifest) was "intact" while any glob reader counted its rows; the next export
    # removed it without a word.
    from ledger.audit.verify import verify_export

    assert verify_export(export).intact
    out = tmp_path / "edited"
    shutil.copytree(export, out)
    victim = next(
        d for d in history.decisions if isinstance(d, DecisionRecorded) and d.facts
    ).request_id
    path = next(
        p
        for p in files_of(out, TOPICS.evaluation_requests)
        if victim in {r["event_id"] for r in pq_rows(p)}
    )

    def edited(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if row["event_id"] == victim:
                facts = json.loads(row["facts"])
                facts[next(iter(facts))] = "forged"
                row["facts"] = json.dumps(facts)
        return rows

    rewrite(path, edited)
    planted = path.with_name(path.name.replace(".parquet", "") + "+planted.parquet")
    shutil.copyfile(files_of(export, TOPICS.decisions)[0], planted)
    report = verify_export(out)
    assert not report.intact
    first, *rest = report.problems
    assert first.subject == "file" and first.kind == "inserted"  # a file's problem first
    assert planted.name in first.found and "not in its manifest" in first.found
    [request] = [p for p in rest if p.subject == "request"]
    assert (request.kind, request.decision_id) == ("altered", victim)
    assert "facts" in request.found
    result = CliRunner().invoke(cli, ["audit", "verify", "--from", str(out)])
    assert result.exit_code == 11 and planted.name in result.stderr


def pq_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["event_id"]).to_pylist()


def test_replay_at_an_instant_outside_the_history_says_so(export: Path) -> None:
    # An auditor's walkthrough: --at before the first governance event answered with empty
    # tables ("nothing was active or granted"), and after an export's last event with the
    # export's last state, both without a word.
    runner = CliRunner()
    before = runner.invoke(cli, ["replay", "--at", "2000-01-01T00:00:00Z", "--from", str(export)])
    assert before.exit_code == 0 and "is before the first governance event" in before.stderr
    after = runner.invoke(cli, ["replay", "--at", "2100-01-01T00:00:00Z", "--from", str(export)])
    assert after.exit_code == 0 and "is not in it (export again" in after.stderr
    events = load_export_history(export)
    inside = min(e.event.occurred_at for e in events) + timedelta(microseconds=1)
    within = runner.invoke(cli, ["replay", "--at", inside.isoformat(), "--from", str(export)])
    assert within.exit_code == 0 and "note:" not in within.stderr


def test_replay_after_the_last_event_but_before_the_export_read_the_ledger_is_no_gap(
    export: Path,
) -> None:
    # An auditor's walkthrough: an instant after the export's last governance event was noted
    # as "not in it" even for an export made after that instant (nothing had changed since).
    manifest = json.loads((export / "_manifest.json").read_text())
    events = load_export_history(export)
    last = max(e.event.occurred_at for e in events)
    read = last + timedelta(days=1)
    manifest["read_at"] = read.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    (export / "_manifest.json").write_text(json.dumps(manifest))
    runner = CliRunner()
    between = (last + timedelta(hours=1)).isoformat()
    done = runner.invoke(cli, ["replay", "--at", between, "--from", str(export)])
    assert done.exit_code == 0 and "note:" not in done.stderr
    later = (read + timedelta(seconds=1)).isoformat()
    done = runner.invoke(cli, ["replay", "--at", later, "--from", str(export)])
    assert done.exit_code == 0
    assert f"read the ledger at {manifest['read_at']}: what changed after that" in done.stderr


def test_every_unchained_topics_rows_of_a_genuine_export_match_their_records(
    export: Path, tmp_path: Path
) -> None:
    # CI of this very change on a real export: every dead letter was "altered" ("column key
    # holds str, not bytes"), its key, partition and offset being written to event_* columns
    # the check did not read. A genuine row of each unchained topic must verify.
    from export_format import rejected

    from ledger.audit.verify import verify_export
    from ledger.core.events import DeadLetter, IssueGrant

    out = tmp_path / "every-topic"
    shutil.copytree(export, out)
    at = datetime(2026, 1, 2, tzinfo=UTC)
    letter = DeadLetter(
        event_id="dl-1",
        occurred_at=at,
        actor="service:evaluator",
        source_topic=TOPICS.evaluation_requests,
        partition=3,
        offset=17,
        key=b"account:\xff",
        value=b"\x00garbage",
        code="codec_error",
        reason="not a ledger record",
    )
    command = IssueGrant(
        event_id="c-1",
        occurred_at=at,
        actor="human:admin",
        grant_id="g-x",
        principal="agent:x",
        actions=("refund.*",),
        resource="account:*",
    )
    codec = default_codec()
    ms = int(at.timestamp() * 1000)
    write_export(
        out,
        [
            Exported(TOPICS.dead_letters, 0, 0, ms, b"account:\xff", codec.encode(letter)),
            Exported(TOPICS.commands, 0, 0, ms, b"agent:x", codec.encode(command)),
            Exported(TOPICS.command_results, 0, 0, ms, b"agent:x", codec.encode(rejected(1, at))),
            # An operator's walkthrough: a ledger event sent to a topic that does not carry it
            # (the processors dead-letter it), written by the exporter as its type and NULLs,
            # was "altered", so any agent could turn audit verify red for good.
            Exported(TOPICS.commands, 0, 1, ms, b"x", codec.encode(_request_event(at))),
            Exported(TOPICS.dead_letters, 0, 1, ms, b"x", codec.encode(command)),
            Exported(
                TOPICS.dead_letters, 0, 2, ms, b"account:42",
                codec.encode(dataclasses.replace(letter, event_id="dl-2", key=b"account:42")),
            ),
        ],
        TOPICS,
    )  # fmt: skip
    report = verify_export(out)
    assert report.intact, [str(p) for p in report.problems]
    # An operator finds the misbehaving client by the key, as text (NULL when it is not UTF-8).
    keys = CliRunner().invoke(
        cli,
        ["audit", "sql", "SELECT letter_id, source_key_text FROM dead_letters ORDER BY 1",
         "--from", str(out), "--json"],
    )  # fmt: skip
    assert keys.exit_code == 0, keys.stderr
    assert [(r["letter_id"], r["source_key_text"]) for r in json.loads(keys.stdout)] == [
        ("dl-1", None),
        ("dl-2", "account:42"),
    ]


def test_simulate_says_when_the_drafts_rule_gives_no_reason() -> None:
    # A policy owner's walkthrough: the "why (draft)" column was empty for every row of a draft
    # whose rules have no `reason`, which read as the tool failing.
    from ledger.cli.simulate import _why

    assert _why(()) == "- (the rule gives no reason: add `reason:` to it)"
    assert _why(("tenure under 30 days",)) == "tenure under 30 days"


def test_a_decision_no_version_made_is_summarised_without_a_version_none() -> None:
    # A red team: an action only another team's shadow governs is decided with that policy
    # named and no version, and `replay --decision` printed "other vNone".
    from types import SimpleNamespace

    from ledger.cli.reproduce import _summary
    from ledger.core.events import Determination

    decided = SimpleNamespace(
        determination=Determination.DENY, rule=None, reason_code="no_active_policy",
        policy="other", policy_version=None,
    )  # fmt: skip
    assert _summary(decided) == "deny (no_active_policy, other (no version decided))"
    decided.policy_version = 2
    assert _summary(decided) == "deny (no_active_policy, other v2)"


def _request_event(at: datetime) -> Any:
    from ledger.core.events import EvaluationRequested

    return EvaluationRequested(
        event_id="r-wrong-topic", occurred_at=at, actor="agent:x", action="refund.issue",
        principal="agent:x", resource="account:1",
    )  # fmt: skip


def test_ledger_decisions_finds_the_asked_policy_past_ten_thousand_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A review: the names kept for the did-you-mean hint were capped at 10,000, and the asked
    # policy with them, so on a big ledger `--policy refund` said no decision named it.
    from types import SimpleNamespace

    from click.testing import CliRunner

    import ledger.cli.decisions as decisions
    from ledger.core.events import Determination

    def made(i: int, policy: str, version: int = 1) -> SimpleNamespace:
        return SimpleNamespace(
            event=DecisionRecorded(
                event_id=f"d{i}", occurred_at=T0, actor="service:evaluator", request_id=f"r{i}",
                requested_at=T0, action="a.b", principal="agent:a", resource="x",
                determination=Determination.ALLOW, policy=policy, policy_version=version,
            ),
            timestamp_ms=0,
        )  # fmt: skip

    records = [made(i, f"team-{i:05d}") for i in range(10_000)]
    records += [made(10_001, "refund", 1), made(10_002, "refund", 2)]
    monkeypatch.setattr(decisions, "read_topic", lambda *a, **k: iter(records))
    monkeypatch.setattr(decisions, "connection", lambda *a, **k: ("127.0.0.1:9092", None))
    said = CliRunner().invoke(decisions.decisions_cmd, ["--policy", "refund", "--disagreeing"])
    assert "no decision in the ledger names" not in said.output, said.output
    said = CliRunner().invoke(decisions.decisions_cmd, ["--policy", "refund", "--version", "3"])
    assert "no decision was made by refund v3 (versions that decided: v1, v2)" in said.output
    # An auditor's walkthrough: a mistyped principal printed "0 decision(s)" and nothing else.
    said = CliRunner().invoke(decisions.decisions_cmd, ["--principal", "agent:b"])
    assert "note: no decision in the ledger is about 'agent:b' (did you mean 'agent:a'?)" in (
        said.output
    )
    said = CliRunner().invoke(decisions.decisions_cmd, ["--principal", "agent:a", "--action", "x"])
    assert "note" not in said.output  # it is there: the other filters found nothing


def test_a_reason_an_earlier_release_worded_otherwise_still_reproduces_and_says_so() -> None:
    # An operator's upgrade: a narrowing canary's ungoverned decision recorded by the release
    # before ("no active policy governs ops.wipe") no longer reproduced (exit 12): the reason
    # names the canary now. The same decision, worded otherwise, reproduces with a note; any
    # other change of reason is still a difference.
    import itertools

    from ledger.audit.reproduce import reproduce
    from ledger.core.state import bucket
    from ledger.testing import LocalLedger

    def doc(*governs: str) -> str:
        return (
            f"policy: ops\ngoverns: [{', '.join(governs)}]\nowner: t\n"
            "rules: [{id: ok, effect: allow}]\ndefault: {effect: deny}\n"
        )

    led = LocalLedger()
    led.grant("agent:a", "*", "*")
    led.deploy(doc("ops.restart", "ops.wipe"))
    led.deploy(doc("ops.restart"), stage="canary", percent=50)
    resource = next(f"r{i}" for i in itertools.count() if bucket(f"r{i}") < 50)
    request = EvaluationRequested(
        event_id="q-1", occurred_at=T0, actor="agent:a", action="ops.wipe",
        principal="agent:a", resource=resource,
    )  # fmt: skip
    made = evaluate(led.state, request, now=T0, evaluator_id="t")
    assert made.reasons == (
        "ops v2 (canary, 50% of requests) decides this request's share and does not govern "
        "ops.wipe",
    )
    history = _history_of(led)
    older = dataclasses.replace(made, reasons=("no active policy governs ops.wipe",))
    again = reproduce(older, request, history)
    assert again.reproduces and again.note is not None
    assert "its reasons are an earlier release's wording (an ungoverned action in a canary's" in (
        again.note
    )
    other = dataclasses.replace(made, reasons=("no active policy governs ops.restart",))
    assert [d.field for d in reproduce(other, request, history).differences] == ["reasons"]
    # A reviewer: the release before this one (c3896f6) worded the active version's share
    # beside a canary "ops v1 (active) decides this request's share …", which this one words
    # as the releases before it did; those decisions reproduce too.
    outside = next(f"r{i}" for i in itertools.count() if bucket(f"r{i}") >= 50)
    asked = dataclasses.replace(request, event_id="q-2", action="ops.other", resource=outside)
    now = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert now.reasons == ("no active policy governs ops.other",)
    then = dataclasses.replace(
        now,
        reasons=("ops v1 (active) decides this request's share and does not govern ops.other",),
    )
    again = reproduce(then, asked, history)
    assert again.reproduces and "the wording of the release of 2026-12-05" in str(again.note)


def test_a_pre_evaluation_refused_for_one_items_names_says_which_and_older_ones_reproduce() -> None:
    # An agent engineer's walkthrough: one item with a resource over 1,024 characters made every
    # item request_too_large with "the request's resource is longer …", naming no item. The
    # reason names it now; a decision recorded in the earlier wording still reproduces.
    from ledger.core.evaluate import evaluate_batch
    from ledger.core.events import BatchEvaluationRequested, BatchItem
    from ledger.testing import LocalLedger

    led = LocalLedger()
    led.grant("agent:a", "*", "*")
    asked = BatchEvaluationRequested(
        event_id="b-1", occurred_at=T0, actor="agent:a", principal="agent:a",
        items=(
            BatchItem(item_id="0", action="a.b", resource="r:1"),
            BatchItem(item_id="long", action="a.b", resource="r:" + "y" * 1_100),
        ),
    )  # fmt: skip
    made = evaluate_batch(led.state, asked, now=T0, evaluator_id="t")
    said = (
        "item 'long': the request's resource is longer than 1,024 characters "
        "(request_name_chars); no item was evaluated"
    )
    assert [(d.reason_code, d.reasons) for d in made.decisions] == [
        ("request_too_large", (said,))
    ] * 2
    history = _history_of(led)
    older = dataclasses.replace(
        made,
        decisions=tuple(
            dataclasses.replace(d, reasons=(said.split(": ", 1)[1].split("; no item")[0],))
            for d in made.decisions
        ),
    )
    again = reproduce(older, asked, history)
    assert again.reproduces and again.note is not None
    assert again.note == (
        "its reasons are an earlier release's wording (a pre-evaluation's names over their "
        "limit, worded before the item was named)"
    )
    other = dataclasses.replace(
        made, decisions=tuple(dataclasses.replace(d, reasons=("x",)) for d in made.decisions)
    )
    assert not reproduce(other, asked, history).reproduces


def test_a_decision_recording_a_name_over_its_limit_whole_reproduces_as_recorded_then() -> None:
    # Names over request_name_chars are recorded cut now (with their length); an evaluator
    # until 2026-12-06 copied them whole into its request_too_large answer, and such a
    # decision still reproduces, saying so; one whose name is not the request's still differs.
    from ledger.core.events import BatchEvaluationRequested, BatchItem
    from ledger.testing import LocalLedger

    led = LocalLedger()
    led.grant("agent:a", "*", "*")
    history = _history_of(led)
    long = "a." + "y" * 1_100
    asked = EvaluationRequested(
        event_id="q-1", occurred_at=T0, actor="agent:a", action=long,
        principal="agent:a", resource="r:" + "z" * 2_000, requested_by="agent:" + "b" * 1_100,
    )  # fmt: skip
    made = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert made.reason_code == "request_too_large" and made.action != long
    assert reproduce(made, asked, history).reproduces
    then = dataclasses.replace(
        made, action=long, resource=asked.resource, requested_by=asked.requested_by
    )
    again = reproduce(then, asked, history)
    assert again.reproduces and "records names over their limit whole" in str(again.note)
    forged = dataclasses.replace(then, action=long + "!")
    assert [d.field for d in reproduce(forged, asked, history).differences] == ["action"]
    batch = BatchEvaluationRequested(
        event_id="b-1", occurred_at=T0, actor="agent:a", principal="agent:a",
        items=(
            BatchItem(item_id="0", action="a.b", resource=None),
            BatchItem(item_id="i" * 200, action=long, resource="r:1"),
        ),
    )  # fmt: skip
    answer = evaluate_batch(led.state, batch, now=T0, evaluator_id="t")
    assert answer.decisions[1].action != long and reproduce(answer, batch, history).reproduces
    whole = dataclasses.replace(
        answer,
        decisions=(
            answer.decisions[0],
            dataclasses.replace(answer.decisions[1], item_id="i" * 200, action=long),
        ),
    )
    again = reproduce(whole, batch, history)
    assert again.reproduces and "records names over their limit whole" in str(again.note)
    swapped = dataclasses.replace(
        whole, decisions=(whole.decisions[0], dataclasses.replace(whole.decisions[1], item_id="x"))
    )
    assert [d.field for d in reproduce(swapped, batch, history).differences] == ["decisions"]


def test_a_decision_for_a_requested_by_no_principal_recorded_before_the_check_reproduces() -> None:
    # Until 2026-12-06 the evaluator decided a request whatever its requested_by (the SDK
    # refused an actor that is no principal only from 2026-12-05): such a decision is
    # re-decided as then, saying so; one that the check answered reproduces as ever.
    from ledger.testing import LocalLedger

    led = LocalLedger()
    led.grant("agent:a", "*", "*")
    history = _history_of(led)
    asked = EvaluationRequested(
        event_id="q-1", occurred_at=T0, actor="refund bot", action="a.b",
        principal="agent:a", resource="r:1", requested_by="refund bot",
    )  # fmt: skip
    now = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert now.reason_code == "invalid_request"
    assert reproduce(now, asked, history).reproduces
    then = evaluate(led.state, asked, now=T0, evaluator_id="t", check_asker=False)
    assert (then.reason_code, then.requested_by) == ("ungoverned_action", "refund bot")
    again = reproduce(then, asked, history)
    assert again.reproduces, again.differences
    assert "decided as evaluators did before requested_by was held to a principal's form" in str(
        again.note
    ) and "one decided after your evaluators were upgraded did not follow" in str(again.note)
    forged = dataclasses.replace(then, determination=Determination.ALLOW)
    assert [d.field for d in reproduce(forged, asked, history).differences] == ["determination"]


def _history_of(led: Any) -> list[Any]:
    """A LocalLedger's governance events as the history a replay reads (offsets per stream)."""
    from ledger.core.history import HistoryEntry
    from ledger.core.lifecycle import event_stream

    counters: dict[str, itertools.count[int]] = {}
    history = []
    for event in led.events:
        key = led._streams[event_stream(event)]
        offset = next(counters.setdefault(key, itertools.count()))
        history.append(HistoryEntry(position_key=key, offset=offset, event=event))
    return history


def _ms(event: Any) -> int:
    """A decision's record time as Kafka's timestamp (milliseconds)."""
    return int(event.occurred_at.timestamp() * 1000)


def test_ledger_decisions_points_a_shadows_version_to_disagreeing_and_says_why_it_denies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A policy owner's walkthrough: `--version 4` of a shadow said only "no decision was made
    # by payments v4", and the "would have said" column a bare `deny` where no rule decided.
    from types import SimpleNamespace

    import ledger.cli.decisions as decisions
    from ledger.core.events import Determination, ShadowResult, Stage

    narrowed = ShadowResult(
        policy="refund", version=4, stage=Stage.SHADOW, determination=Determination.DENY,
        reasons=("version 4 does not govern refund.void", "a second reason"),
    )  # fmt: skip
    record = DecisionRecorded(
        event_id="d1", occurred_at=T0, actor="service:evaluator", request_id="r1",
        requested_at=T0, action="refund.void", principal="agent:a", resource="x",
        determination=Determination.ALLOW, policy="refund", policy_version=1,
        shadow_results=(narrowed,),
    )  # fmt: skip
    monkeypatch.setattr(
        decisions,
        "read_topic",
        lambda *a, **k: iter([SimpleNamespace(event=record, timestamp_ms=_ms(record))]),
    )
    monkeypatch.setattr(decisions, "connection", lambda *a, **k: ("127.0.0.1:9092", None))
    said = CliRunner().invoke(decisions.decisions_cmd, ["--policy", "refund", "--version", "4"])
    assert "no decision was made by refund v4 here: it is a shadow" in said.output, said.output
    assert "`ledger decisions --policy refund --disagreeing` (no --version)" in said.output
    said = CliRunner().invoke(decisions.decisions_cmd, ["--policy", "refund", "--version", "3"])
    assert "shadow" not in said.output  # a version never seen is not called one
    assert decisions._disagreements(record) == (
        "refund v4 (shadow): deny (version 4 does not govern refund.void)"
    )
    # An auditor's walkthrough: a version that decided as a canary, then went back to shadow,
    # got no word for a window of its shadow days.
    earlier = dataclasses.replace(
        record, event_id="d0", request_id="r0", occurred_at=T0 - timedelta(days=1),
        policy_version=4, shadow_results=(),
    )  # fmt: skip
    monkeypatch.setattr(
        decisions,
        "read_topic",
        lambda *a, **k: iter(  # read in the other order: time decides, not the order read
            [
                SimpleNamespace(event=record, timestamp_ms=_ms(record)),
                SimpleNamespace(event=earlier, timestamp_ms=_ms(earlier)),
            ]
        ),
    )
    since = (T0 - timedelta(hours=1)).isoformat()
    said = CliRunner().invoke(
        decisions.decisions_cmd, ["--policy", "refund", "--version", "4", "--since", since]
    )
    assert "no decision was made by refund v4 here: it is a shadow" in said.output, said.output
    assert "(it decided in another stage before: widen --since, or drop it" in said.output


# --------------------------------------------------------------------------- many at once


def test_replay_decisions_reproduces_every_decision_folding_the_history_once(
    history: History, export: Path
) -> None:
    # An auditor's walkthrough: 30 decisions took 48 s with `replay --decision` in a shell
    # loop, each folding the history again.
    result = run("replay", "--decisions", "--from", str(export), "--json")
    assert result.exit_code == 0, (result.output, result.stderr)
    report = json.loads(result.stdout)
    assert (report["decisions"], report["reproduces"], report["differs"]) == (
        len(history.decisions),
        len(history.decisions),
        0,
    )
    assert report["not_reproducible"] == 0 and report["full_folds"] == 1
    assert {r["decision_id"] for r in report["results"]} == {d.event_id for d in history.decisions}
    assert {r["verdict"] for r in report["results"]} == {"reproduces"}
    text = run("replay", "--decisions", "--from", str(export))
    assert text.exit_code == 0
    assert (
        f"{len(history.decisions)} decisions: {len(history.decisions)} reproduce, 0 differ, "
        "0 not reproducible"
    ) in text.stdout


def test_replay_decisions_in_a_window_and_a_sample_drawn_again_with_its_seed(
    history: History, export: Path
) -> None:
    decided = sorted(d.occurred_at for d in history.decisions)
    since, until = decided[2], decided[-3]
    inside = {d.event_id for d in history.decisions if since <= d.occurred_at < until}
    window = ("--since", since.isoformat(), "--until", until.isoformat())
    report = json.loads(
        run("replay", "--decisions", *window, "--from", str(export), "--json").stdout
    )
    assert {r["decision_id"] for r in report["results"]} == inside
    drawn = [
        json.loads(
            run(
                "replay",
                "--decisions",
                *window,
                "--sample",
                "3",
                "--seed",
                "7",
                "--from",
                str(export),
                "--json",
            ).stdout
        )
        for _ in range(2)
    ]
    assert drawn[0]["results"] == drawn[1]["results"] and len(drawn[0]["results"]) == 3
    assert {r["decision_id"] for r in drawn[0]["results"]} <= inside
    assert (drawn[0]["selected"], drawn[0]["seed"]) == (len(inside), 7)
    unseeded = run("replay", "--decisions", "--sample", "2", "--from", str(export))
    assert unseeded.exit_code == 0 and "(--seed " in unseeded.stdout
    # An auditor's walkthrough: `--since 1h` over yesterday's export said only "no decision".
    later = run("replay", "--decisions", "--since", "2099-01-01", "--from", str(export))
    error = one_error_line(later, 2)
    assert "no decision decided in [2099-01-01" in error, error
    assert "is after " in error and "the export holds nothing of that window" in error, error
    before = run("replay", "--decisions", "--until", "2000-01-01", "--from", str(export))
    assert "is after " not in one_error_line(before, 2)


def test_an_exports_sample_reads_only_the_decisions_it_draws(
    history: History, export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An auditor's walkthrough: 30 sampled of 307,505 took 61-93 s, every decision decoded
    # before the draw. The export draws by place and decodes what it drew: the same draw as
    # over every decision in decided_between's order.
    from ledger.audit.sources import ExportSource, draw

    source = ExportSource(export)
    every = source.decided_between()
    decoded: list[bytes] = []
    real = ExportSource._decode

    def counting(self: ExportSource, record: bytes | None) -> Any:
        decoded.append(record or b"")
        return real(self, record)

    monkeypatch.setattr(ExportSource, "_decode", counting)
    for seed in (1, 7, 99):
        count, drawn = source.sampled_between(None, None, 3, seed)
        chosen = draw(len(every), 3, seed)
        assert count == len(every)
        assert [d.event_id for d in drawn] == [
            d.event_id for i, d in enumerate(every) if i in chosen
        ]
    assert len(decoded) == 9
    count, drawn = source.sampled_between(None, None, len(every) + 5, 1)
    assert (count, [d.event_id for d in drawn]) == (len(every), [d.event_id for d in every])


def test_replay_decisions_names_what_differs_and_what_cannot_be_reproduced_and_exits_12(
    history: History, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    write_export(copy, history.records, TOPICS)
    singles = [d for d in history.decisions if isinstance(d, DecisionRecorded)]
    altered = next(d for d in singles if d.policy_version == 1)
    orphan = next(d for d in singles if d is not altered)
    forged = CODEC.encode(dataclasses.replace(altered, determination=Determination.DENY))
    for path in files_of(copy, TOPICS.decisions):
        rewrite(
            path,
            lambda rows: [
                {**r, "record": forged, "determination": "deny"}
                if r["event_id"] == altered.event_id
                else r
                for r in rows
            ],
        )
    for path in files_of(copy, TOPICS.evaluation_requests):
        rewrite(path, lambda rows: [r for r in rows if r["event_id"] != orphan.request_id])
    ids = tmp_path / "ids.txt"
    fine = next(d for d in singles if d not in (altered, orphan))
    ids.write_text(
        f"# the auditor's sample\n{altered.event_id}\n{orphan.request_id}\n\nno-such-id\n"
        f"{fine.event_id}\n"
    )
    result = run("replay", "--decisions", "--ids", str(ids), "--from", str(copy), "--json")
    line = one_error_line(result, 12)
    assert "4 decisions: 1 reproduce, 1 differ, 2 not reproducible" in line
    report = json.loads(result.stdout)
    verdicts = {r["decision_id"]: (r["verdict"], r["why"]) for r in report["results"]}
    assert verdicts == {
        altered.event_id: ("differs", None),
        orphan.event_id: ("not_reproducible", "its request is not in the ledger"),
        "no-such-id": ("not_reproducible", "no such decision"),
        fine.event_id: ("reproduces", None),
    }
    differing = next(r for r in report["results"] if r["verdict"] == "differs")
    assert [d["field"] for d in differing["differences"]] == ["determination"]
    assert report["not_reproducible_why"] == {
        "its request is not in the ledger": 1,
        "no such decision": 1,
    }
    text = run("replay", "--decisions", "--ids", str(ids), "--from", str(copy))
    assert text.exit_code == 12
    assert "decisions that differ" in text.stdout and altered.event_id in text.stdout
    assert "not reproducible" in text.stdout and "no-such-id" in text.stdout


def test_replay_decisions_bad_input_is_one_line(export: Path, tmp_path: Path) -> None:
    assert "go with --decisions" in one_error_line(
        run("replay", "--since", "2026-01-01", "--from", str(export)), 2
    )
    assert "leave out --since" in one_error_line(
        run("replay", "--decisions", "--ids", "-", "--since", "2026-01-01", "--from", str(export)),
        2,
    )
    assert "--sample" in one_error_line(
        run("replay", "--decisions", "--seed", "3", "--from", str(export)), 2
    )
    assert "leave out --decision" in one_error_line(
        run("replay", "--decisions", "--decision", "x", "--from", str(export)), 2
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert "names no decision" in one_error_line(
        run("replay", "--decisions", "--ids", str(empty), "--from", str(export)), 2
    )
    assert "no decision decided in" in one_error_line(
        run("replay", "--decisions", "--since", "2099-01-01", "--from", str(export)), 2
    )


# --------------------------------------------------------------------------- instants past year 9999


def _far_request_export(history: History, out: Path) -> None:
    """The history's export with one more request, an agent's with occurred_at 2**63-1 µs that
    the evaluator dead-lettered, its row as `ledger export` wrote it before it refused such
    instants (columns filled, occurred_at past year 9999)."""
    from export_format import exported_as_before

    from ledger.core.events import DeadLetter

    offset = 1 + max(
        r.offset
        for r in history.records
        if (r.topic, r.partition) == (TOPICS.evaluation_requests, 0)
    )
    at = history.now + timedelta(seconds=1)
    stamp = int(at.timestamp() * 1000)
    asked = EvaluationRequested(
        event_id="far",
        occurred_at=at,
        actor=AGENT,
        action="refund.issue",
        principal=AGENT,
        resource="account:far",
        facts=SAME_ALLOW,
    )
    letter = DeadLetter(
        event_id="dl-far",
        occurred_at=at,
        actor="service:evaluator",
        source_topic=TOPICS.evaluation_requests,
        partition=0,
        offset=offset,
        key=b"far",
        value=None,
        code="codec_error",
        reason="malformed EvaluationRequested body: OverflowError: date value out of range",
    )
    records = [
        *history.records,
        Exported(TOPICS.evaluation_requests, 0, offset, stamp, b"far", CODEC.encode(asked)),
        Exported(TOPICS.dead_letters, 0, 0, stamp, b"dl-far", CODEC.encode(letter)),
    ]
    write_export(out, records, TOPICS)
    [path] = [
        p
        for p in files_of(out, TOPICS.evaluation_requests)
        if "far" in {r["event_id"] for r in pq_rows(p)}
    ]
    exported_as_before(path, "far", 2**63 - 1)


def test_an_export_holding_a_request_past_year_9999_is_verified_replayed_and_simulated(
    history: History, tmp_path: Path
) -> None:
    """A red team: one request sent with occurred_at 2**63-1 µs, in an export written before
    the exporter refused such instants, made `ledger audit verify` stop on an OverflowError
    traceback before checking any chain, on every export after it."""
    copy = tmp_path / "copy"
    _far_request_export(history, copy)
    verified = run("audit", "verify", "--from", str(copy))
    line = one_error_line(verified, 11)
    assert "altered: request far at " in line and "(and " not in line  # one problem
    assert "occurred_at holds 9223372036854775807 µs after the epoch" in line
    assert f"{len(history.decisions)} decision(s) in 1 chain(s)" in verified.stdout
    decision = history.decisions[-1]
    replayed = run("replay", "--decision", decision.event_id, "--from", str(copy))
    assert replayed.exit_code == 0 and "reproduces:" in replayed.stdout, replayed.stderr
    simulated = run("policy", "simulate", str(V2_PATH), "--from", str(copy), "--json")
    assert simulated.exit_code == 0, simulated.stderr
    assert json.loads(simulated.stdout)["replayed"] == 36  # the request that did not decode: none
    at = run("replay", "--at", history.now.isoformat(), "--from", str(copy))
    assert at.exit_code == 0, at.stderr
    for args in (
        ("audit", "sql", "SELECT * FROM evaluation_requests ORDER BY requested_at DESC"),
        ("audit", "sql", "SELECT * FROM evaluation_requests", "--json"),
        ("audit", "run", "requests_unanswered", "--param", "before=2100-01-01T00:00:00Z"),
    ):
        done = CliRunner().invoke(cli, [*args, "--from", str(copy)])
        assert done.exit_code == 0 and done.exception is None, (args, done.output)


def test_a_decision_row_set_past_year_9999_is_one_line_from_replay(
    history: History, tmp_path: Path
) -> None:
    from export_format import set_raw

    copy = tmp_path / "copy"
    write_export(copy, history.records, TOPICS)
    target = history.decisions[3]
    for path in files_of(copy, TOPICS.decisions):
        set_raw(path, lambda row: row["event_id"] == target.event_id, "occurred_at", 2**63 - 1)
    line = one_error_line(run("replay", "--decision", target.event_id, "--from", str(copy)), 11)
    assert f"row of decision {target.event_id}" in line and "does not match its record" in line
    assert "occurred_at holds 9223372036854775807 µs after the epoch" in line


def test_a_governance_row_set_past_year_9999_is_a_problem_of_its_history(
    history: History, tmp_path: Path
) -> None:
    from export_format import set_raw

    from ledger.audit.history import check_export_history

    copy = tmp_path / "copy"
    write_export(copy, history.records, TOPICS)
    [path] = files_of(copy, TOPICS.policy_events)
    set_raw(path, lambda row: row["offset"] == 1, "occurred_at", -(2**63))
    entries, problems = check_export_history(copy)
    assert len(entries) == len(load_export_history(copy))  # read from the records, as always
    [problem] = problems
    assert f"{TOPICS.policy_events} partition 0 offset 1" in problem
    assert f"occurred_at holds {-(2**63)} µs after the epoch" in problem


def test_ledger_decisions_finds_a_request_that_does_not_decode_by_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ledger decisions --request ID` of a request sent past year 9999 said "no request ID
    … either: check the id": it does not decode, so only its key names it."""
    from ledger.cli import decisions
    from ledger.core.events import DeadLetter
    from ledger.kafka.reading import Positioned
    from ledger.settings import Settings

    settings = Settings()
    requests = settings.topics.evaluation_requests
    letter = DeadLetter(
        event_id="dl",
        occurred_at=T0,
        actor="service:evaluator",
        source_topic=requests,
        partition=2,
        offset=7,
        key=b"far-request",
        value=b"\xc3\x01",
        code="codec_error",
        reason="malformed EvaluationRequested body: OverflowError: date value out of range",
    )
    found = [Positioned(settings.topics.dead_letters, 0, 0, 0, letter)]
    monkeypatch.setattr(decisions, "read_topic", lambda *a, **k: iter(found))
    said = decisions._undecided("x:9092", None, settings, "far-request")
    assert said.startswith(
        f"no request 'far-request' decodes, but a record keyed by that id ({requests} "
        "partition 2, offset 7) was dead-lettered (codec_error: malformed EvaluationRequested "
        "body: OverflowError: date value out of range) and will never be decided"
    )
    assert decisions._undecided("x:9092", None, settings, "other").startswith("no request 'other'")


_BEFORE_GRANT_LIMIT = dataclasses.replace(DEFAULT_LIMITS, principal_grant_units=10**9)
"""A ledger whose history was written before ``principal_grant_units`` refused a principal
holding this much (the fold and replay take such a history as it is)."""


def test_a_decision_made_before_matching_was_charged_reproduces_with_a_note() -> None:
    # Until 2026-12-06 trying a principal's grants was charged only for a grant whose own
    # patterns' search passed a threshold, and finding the governing policy not at all: a
    # pre-evaluation of a principal holding 100 grants of 128 small patterns was answered item
    # by item. Such a decision is re-decided as then, saying so; decided now, its later items
    # are evaluation_budget_exceeded.
    from ledger.testing import LocalLedger

    led = LocalLedger(limits=_BEFORE_GRANT_LIMIT)  # holding what a history then could
    for i in range(100):
        led.grant("agent:a", [f"*k{i}q{j}*" for j in range(128)], "*", grant_id=f"g{i:03}")
    history = _history_of(led)
    batch = BatchEvaluationRequested(
        event_id="b-1", occurred_at=T0, actor="agent:a", principal="agent:a",
        items=tuple(BatchItem(item_id=str(n), action="p.act", resource="x") for n in range(30)),
    )  # fmt: skip
    then = evaluate_batch(led.state, batch, now=T0, evaluator_id="t", charge_matching=False)
    assert {d.reason_code for d in then.decisions} == {"no_authority"}
    now = evaluate_batch(led.state, batch, now=T0, evaluator_id="t")
    assert now.decisions[-1].reason_code == "evaluation_budget_exceeded"
    assert reproduce(now, batch, history).reproduces
    again = reproduce(then, batch, history)
    assert again.reproduces, again.differences
    assert "decided under the cost model before a release of 2026-12-06" in str(again.note)
    assert "29: error" in str(again.note)  # what it is decided now
    forged = dataclasses.replace(
        then,
        decisions=(dataclasses.replace(then.decisions[0], grant_id="g000"), *then.decisions[1:]),
    )
    assert [d.field for d in reproduce(forged, batch, history).differences] == ["decisions"]


def test_a_decision_before_matching_was_charged_in_an_earlier_wording_still_reproduces() -> None:
    # A review: the earlier cost model was tried only when the decision matched it word for
    # word, so one recorded in an earlier release's wording (of the 2026-12-05 release: "…
    # decides this request's share and does not govern …"), for a principal now over budget,
    # did not reproduce.
    from ledger.testing import LocalLedger

    led = LocalLedger(limits=_BEFORE_GRANT_LIMIT)  # holding what a history then could
    led.grant("agent:a", ["p.act"], "*", grant_id="g-a")  # its own: the one that applies
    for i in range(1_100):  # enough that trying them all is over the budget now
        led.grant("agent:a", [f"*k{i}q{j}*" for j in range(256)], "*", grant_id=f"g{i:04}")
    history = _history_of(led)
    asked = EvaluationRequested(
        event_id="r-1", occurred_at=T0, actor="agent:a", principal="agent:a", action="p.act",
        resource="x",
    )  # fmt: skip
    then = evaluate(led.state, asked, now=T0, evaluator_id="t", charge_matching=False)
    now = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert now.reason_code == "evaluation_budget_exceeded"
    assert then.reason_code == "ungoverned_action" and then.reasons == (
        "no active policy governs p.act",
    )
    older = dataclasses.replace(
        then, reasons=("refund v1 (active) decides this request's share and does not govern p.act",)
    )
    again = reproduce(older, asked, history)
    assert again.reproduces, again.differences
    assert "decided under the cost model before a release of 2026-12-06" in str(again.note)
    assert "an earlier release's wording" in str(again.note)


def _asked_of_one_policy(
    documents: list[tuple[str, str]], request_id: str, action: str, **fields: Any
) -> tuple[Any, list[Any], EvaluationRequested]:
    """A LocalLedger holding ``documents`` (each with its stage), agent:a granted everything,
    its history, and agent:a's request ``request_id`` for ``action`` (``fields``: facts,
    context)."""
    from ledger.testing import LocalLedger

    led = LocalLedger()
    led.grant("agent:a", "*", "*")
    for document, stage in documents:
        led.deploy(document, stage=stage)
    asked = EvaluationRequested(
        event_id=request_id, occurred_at=T0, actor="agent:a", principal="agent:a",
        action=action, resource="x", **fields,
    )  # fmt: skip
    return led, _history_of(led), asked


def test_a_decision_made_under_the_rules_before_2026_12_07_reproduces_with_a_note() -> None:
    # A red team: comparing two lists was charged a tenth of its cost until 2026-12-07, and a
    # fuzzer: startsWith() of a list took Python's rule (any of them). A decision recorded then
    # is re-decided under those rules, exactly (a review: a re-run with no budget let a forged
    # "within budget" allow through for a request always over budget).
    from ledger.core.cel import rules_before

    facts = "facts: {l: {type: 'list<string>'}, sa: {type: 'list<string>'}, sb: {type: 'list<string>'}}\n"
    rule = "rules: [{id: same, when: 'l.exists(x, l.exists(y, sa == sb))', effect: %s}]\n"
    head = "policy: lists\ngoverns: [lists.cmp]\nowner: t\n" + facts
    led, history, asked = _asked_of_one_policy(
        [
            (head + rule % "allow" + "default: {effect: deny}\n", "active"),
            # A shadow that compares lists, beside an active version that does too (a review:
            # only the deciding version's budget was looked at).
            (head + rule % "deny" + "default: {effect: allow}\n", "shadow"),
        ],
        "r-lists",
        "lists.cmp",
        facts={"l": tuple(f"e{i}" for i in range(60)), "sa": ("x",) * 999 + ("y",),
               "sb": ("x",) * 999 + ("z",)},
    )  # fmt: skip
    now = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert now.reason_code == "evaluation_budget_exceeded"
    with rules_before("list_costs"):  # what an evaluator then decided
        then = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert (then.determination, then.reason_code) == (Determination.DENY, "default_applied")
    assert [r.determination for r in then.shadow_results] == [Determination.ALLOW]
    assert reproduce(now, asked, history).reproduces
    again = reproduce(then, asked, history)
    assert again.reproduces, again.differences
    assert "decided under the rules before a release of 2026-12-07" in str(again.note)
    assert "decided now, it is error (evaluation_budget_exceeded)" in str(again.note)
    forged = dataclasses.replace(then, determination=Determination.ALLOW, rule="same")
    assert not reproduce(forged, asked, history).reproduces


def test_a_forged_within_budget_answer_to_a_request_always_over_budget_does_not_reproduce() -> None:
    # A review: what a run with no budget answers passed for a decision made "within its
    # budget under an earlier cost model", though no release ever decided it so.
    led, history, asked = _asked_of_one_policy(
        [
            (
                "policy: texts\ngoverns: [texts.cat]\nowner: t\nfacts: {l: {type: 'list<string>'}}\n"
                "rules: [{id: never, when: 'l.exists(x, l.exists(y, x + y == \"nope\"))', "
                "effect: deny}]\ndefault: {effect: allow}\n",
                "active",
            )
        ],
        "r-texts",
        "texts.cat",
        facts={"l": tuple(f"e{i}" for i in range(1000))},
    )
    recorded = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert recorded.reason_code == "evaluation_budget_exceeded"
    forged = dataclasses.replace(
        recorded, determination=Determination.ALLOW, reason_code="default_applied", reasons=()
    )
    assert not reproduce(forged, asked, history).reproduces


def test_a_startswith_of_a_list_recorded_before_2026_12_07_reproduces() -> None:
    # A review: `s.startsWith(context.prefixes)` matched any of a list of texts (Python's
    # str.startswith) until 2026-12-07; now a condition_error, as CEL has it.
    from ledger.core.cel import rules_before

    led, history, asked = _asked_of_one_policy(
        [
            (
                "policy: paths\ngoverns: [paths.read]\nowner: t\n"
                "rules: [{id: prefixed, when: 'context.path.startsWith(context.prefixes)', "
                "effect: deny}]\ndefault: {effect: allow}\n",
                "active",
            )
        ],
        "r-paths",
        "paths.read",
        context={"path": "secret/x", "prefixes": ("public/", "secret/")},
    )
    now = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert now.reason_code == "condition_error"
    assert "startsWith() is for text, not list" in now.reasons[0]
    with rules_before("list_costs"):
        then = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert (then.determination, then.rule) == (Determination.DENY, "prefixed")
    again = reproduce(then, asked, history)
    assert again.reproduces, again.differences
    assert "2026-12-07" in str(again.note)


def test_a_decimal_with_a_written_number_recorded_as_a_fault_reproduces() -> None:
    # A README check: `context.x * 2.0` was `no such overload: decimal * double` for a decimal
    # context value until a later release of 2026-12-07; it now takes the number's digits.
    from decimal import Decimal

    from ledger.core.cel import rules_before

    led, history, asked = _asked_of_one_policy(
        [
            (
                "policy: risk\ngoverns: [risk.check]\nowner: t\n"
                "rules: [{id: doubled, when: 'context.x * 2.0 > 1.0', effect: deny}]\n"
                "default: {effect: allow}\n",
                "active",
            )
        ],
        "r-risk",
        "risk.check",
        context={"x": Decimal("0.75")},
    )
    now = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert (now.determination, now.rule) == (Determination.DENY, "doubled")
    with rules_before("decimal_literals"):
        then = evaluate(led.state, asked, now=T0, evaluator_id="t")
    assert then.reason_code == "condition_error"
    assert "no such overload: decimal * double" in then.reasons[0]
    assert reproduce(now, asked, history).reproduces
    again = reproduce(then, asked, history)
    assert again.reproduces, again.differences
    assert "before a later release of 2026-12-07" in str(again.note)
    assert "decided now, it is deny (rule_matched" in str(again.note)
    forged = dataclasses.replace(
        then, determination=Determination.ALLOW, reason_code="default_applied"
    )
    assert not reproduce(forged, asked, history).reproduces


def test_simulate_lists_the_requests_whose_constraints_alone_would_change(
    history: History, export: Path, tmp_path: Path
) -> None:
    # A policy owner's walkthrough: a draft lowering a cap under the same
    # allow_with_constraints simulated as "0 determinations would change" and nothing else.
    until = history.marks["v1 only until"].isoformat()
    draft = tmp_path / "voucher.yaml"
    draft.write_text(V1.replace("{refund_method: credit}", "{refund_method: voucher}", 1))
    args = ("policy", "simulate", str(draft), "--from", str(export), "--until", until)
    data = json.loads(run(*args, "--json", "--sample", "2").stdout)
    assert (data["changed"], data["rule_changes"], data["constraint_changes"]) == (0, 0, 4)
    assert data["sample"] == [] and len(data["constraint_sample"]) == 2
    first = data["constraint_sample"][0]
    assert (first["determination"], first["recorded_rule"], first["draft_rule"]) == (
        "allow_with_constraints",
        "credit-only",
        "credit-only",
    )
    assert first["recorded_constraints"] == {"refund_method": "credit"}
    assert first["draft_constraints"] == {"refund_method": "voucher"}
    table = " ".join(run(*args).stdout.split())
    assert "0 determinations would change, 24 would not (0 of those by another rule, 4 with " in (
        table
    )
    assert "same determination, other constraints (first 4 of 4)" in table
    assert '{"refund_method": "credit"} │ {"refund_method": "voucher"}' in table


def test_ledger_decisions_disagreeing_lists_a_shadow_that_changes_only_constraints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A policy owner's walkthrough: v2 in shadow lowered max_refund from 500.00 to 400.00 under
    # the same allow_with_constraints; `--disagreeing` listed none of the decisions it caps.
    from types import SimpleNamespace

    import ledger.cli.decisions as decisions
    from ledger.core.events import Determination, ShadowResult, Stage

    awc = Determination.ALLOW_WITH_CONSTRAINTS

    def decided(n: int, cap: Any, shadow_cap: Any) -> SimpleNamespace:
        said = ShadowResult(
            policy="refunds", version=2, stage=Stage.SHADOW, determination=awc,
            rule="credit-capped", constraints={"method": "credit", "max_refund": shadow_cap},
        )  # fmt: skip
        return SimpleNamespace(
            event=DecisionRecorded(
                event_id=f"d{n}", occurred_at=T0, actor="service:evaluator",
                request_id=f"req-{n}", requested_at=T0, action="refund.issue",
                principal="agent:a", resource="x", determination=awc, rule="credit-capped",
                constraints={"max_refund": cap, "method": "credit"}, policy="refunds",
                policy_version=1, shadow_results=(said,),
            ),
            timestamp_ms=0,
        )  # fmt: skip

    records = [
        decided(1, "500.00", "400.00"),  # a lower cap: listed
        decided(2, "500.00", "500.00"),  # the same answer: not
        decided(3, Decimal("500.0"), Decimal("500.00")),  # the same value: not
    ]
    monkeypatch.setattr(decisions, "read_topic", lambda *a, **k: iter(records))
    monkeypatch.setattr(decisions, "connection", lambda *a, **k: ("127.0.0.1:9092", None))
    said = CliRunner().invoke(
        decisions.decisions_cmd, ["--policy", "refunds", "--disagreeing", "--json"]
    )
    assert [d["request_id"] for d in json.loads(said.stdout)] == ["req-1"], said.output
    assert decisions._disagreements(records[0].event) == (
        "refunds v2 (shadow): allow_with_constraints by rule credit-capped, "
        "max_refund 400.00 (decided 500.00)"
    )
    # A review: a constraint absent on one side and null on the other both read "-".
    nulled = dataclasses.replace(
        records[1].event,
        constraints={"max_refund": "500.00", "method": "credit", "note": None},
    )
    assert decisions._disagreements(nulled).endswith("note absent (decided -)")
    # An auditor's walkthrough: a text "500" beside the number 500 read alike.
    typed = decided(4, 500, "500").event
    assert decisions._disagreements(typed).endswith('max_refund "500" (decided 500)')


def test_ledger_decisions_finds_a_decision_by_its_own_id_and_prints_its_reasons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An agent engineer's walkthrough: the decision id agents are told to log, given as
    # --request, scanned the ledger to "0 decision(s)"; and a decision's reasons showed only
    # with --json.
    from types import SimpleNamespace

    import ledger.cli.decisions as decisions
    from ledger.core.events import Determination

    def decided(n: int) -> SimpleNamespace:
        return SimpleNamespace(
            event=DecisionRecorded(
                event_id=f"dec-{n}", occurred_at=T0, actor="service:evaluator",
                request_id=f"req-{n}", requested_at=T0, action="pay.send",
                principal="agent:a", resource="x", determination=Determination.DENY,
                rule="sanctioned", reasons=(f"Sanctioned country {n}",), policy="payments",
                policy_version=1, facts={"country": "RU\x1b[2J", "amount": Decimal("12.50")},
            )
        )  # fmt: skip

    records = [decided(1), decided(2)]
    monkeypatch.setattr(decisions, "read_topic", lambda *a, **k: iter(records))
    monkeypatch.setattr(decisions, "connection", lambda *a, **k: ("127.0.0.1:9092", None))
    monkeypatch.setattr(decisions, "_why_none", lambda *a: "not decided yet")
    shown = CliRunner().invoke(decisions.decisions_cmd, ["--decision", "dec-2"])
    assert shown.exit_code == 0 and "req-2" in shown.stdout and "req-1" not in shown.stdout
    assert "reason: Sanctioned country 2" in shown.stdout
    # A policy owner's walkthrough: the facts the rule read showed only with --json.
    assert 'facts: {"country": "RU\\u001b[2J", "amount": "12.50"}' in shown.stdout, shown.stdout
    mistaken = CliRunner().invoke(decisions.decisions_cmd, ["--request", "dec-2"])
    assert "dec-2 is a decision's id, not a request's: `ledger decisions --decision dec-2`" in (
        mistaken.stderr
    )
    nothing = CliRunner().invoke(decisions.decisions_cmd, ["--decision", "req-2"])
    assert "no decision has id 'req-2' (a request id? --request takes it)" in nothing.stderr
    # An auditor's walkthrough: `--json` gave the newest 50 of a window without a word.
    limited = CliRunner().invoke(decisions.decisions_cmd, ["--limit", "1", "--json"])
    assert len(json.loads(limited.stdout)) == 1
    assert "note: 1 decision(s) shown, and 1 older: raise --limit" in limited.stderr
    nothing = CliRunner().invoke(decisions.decisions_cmd, ["--decision", "req-2", "--json"])
    assert "no decision has id 'req-2'" in nothing.stderr
    # A red team: an empty value (an unset $ID) matched every decision.
    empty = CliRunner().invoke(decisions.decisions_cmd, ["--decision", ""])
    assert (
        empty.exit_code == 2
        and "--decision is empty: give a value, or leave --decision out" in (empty.output)
    )
    # An auditor's walkthrough: with another filter that left it out, it was "no decision".
    filtered = CliRunner().invoke(decisions.decisions_cmd, ["--decision", "dec-2", "--policy", "x"])
    assert "decision 'dec-2' is in the ledger, but not as the other filters ask: drop them" in (
        filtered.stderr
    )


def test_a_decisions_reasons_are_printed_escaped_and_only_for_the_items_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A review: a reason holds the sender's text (a resource in "holds no grant for … on …"):
    # printed raw, an agent's resource forged a second reason line and set the terminal's
    # title; and --request REQ#1 printed every item's reasons.
    from types import SimpleNamespace

    import ledger.cli.decisions as decisions
    from ledger.core.events import BatchDecisionRecorded, BatchItemDecision, Determination

    hostile = "acct:1\x1b]0;pwned\x07\nreason: approved by compliance"
    items = tuple(
        BatchItemDecision(
            item_id=str(i), action="pay.send", resource=hostile if i == 1 else "acct:2",
            determination=Determination.DENY, reason_code="no_authority",
            reasons=(f"agent:a holds no grant for pay.send on {hostile if i == 1 else i}",),
        )
        for i in range(3)
    )  # fmt: skip
    batch = BatchDecisionRecorded(
        event_id="dec-b", occurred_at=T0, actor="service:evaluator", request_id="req-b",
        principal="agent:a", decisions=items,
    )  # fmt: skip
    monkeypatch.setattr(
        decisions,
        "read_topic",
        lambda *a, **k: iter([SimpleNamespace(event=batch, timestamp_ms=_ms(batch))]),
    )
    monkeypatch.setattr(decisions, "connection", lambda *a, **k: ("127.0.0.1:9092", None))
    shown = CliRunner().invoke(decisions.decisions_cmd, ["--request", "req-b#1"])
    assert shown.exit_code == 0, shown.output
    reasons = [line for line in shown.stdout.splitlines() if line.startswith("reason")]
    assert len(reasons) == 1 and reasons[0].startswith("reason (req-b#1): agent:a holds no grant")
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert "\\nreason: approved by compliance" in reasons[0]  # one line, the newline shown
    # An operator's drill: a pre-evaluation's items printed a row each, counted as one.
    every = CliRunner().invoke(decisions.decisions_cmd, [])
    assert "1 decision(s), 3 rows: a pre-evaluation's items a row each" in every.stderr


def test_a_pre_evaluation_is_taken_item_by_item_in_order() -> None:
    # A maintainability review: items were paired with their answers by item id, so two
    # items under one id both took the last answer, the other lost.
    from ledger.core.events import (
        BatchDecisionRecorded,
        BatchEvaluationRequested,
        BatchItem,
        BatchItemDecision,
    )

    request = BatchEvaluationRequested(
        event_id="b1",
        occurred_at=T0,
        actor="agent:bot",
        principal="agent:bot",
        items=(
            BatchItem(item_id="x", action="refund.issue", resource="account:1"),
            BatchItem(item_id="x", action="refund.view", resource="account:1"),
        ),
    )

    def answer(action: str, determination: Determination) -> BatchItemDecision:
        return BatchItemDecision(
            item_id="x", action=action, resource="account:1", determination=determination
        )

    decided = BatchDecisionRecorded(
        event_id="d1",
        occurred_at=T0,
        actor="service:evaluator",
        request_id="b1",
        principal="agent:bot",
        decisions=(
            answer("refund.issue", Determination.DENY),
            answer("refund.view", Determination.ALLOW),
        ),
    )
    pairs = list(single_pairs([(request, decided)]))
    assert [(r.action, d.action, d.determination) for r, d in pairs] == [
        ("refund.issue", "refund.issue", Determination.DENY),
        ("refund.view", "refund.view", Determination.ALLOW),
    ]
    # Each decided as the evaluator did (its canary key `b1/x`), named as readers name an
    # item (a README check: simulate showed `b1/x`, which `decisions` and `replay` do not take).
    assert [(r.event_id, d.request_id) for r, d in pairs] == [("b1/x", "b1#x")] * 2
    # An answer that is not this request's (another copy under its id) pairs nothing.
    other = dataclasses.replace(decided, decisions=decided.decisions[:1])
    assert list(single_pairs([(request, other)])) == []


def test_audit_shell_without_the_duckdb_cli_is_a_sql_prompt(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An auditor's walkthrough: without `duckdb` on the PATH the shell was a Python prompt,
    # which answered SQL with SyntaxError: a dead end for an auditor who knows SQL only.
    monkeypatch.setenv("PATH", str(tmp_path))  # no duckdb CLI there
    typed = (
        ".tables\n"
        "SELECT count(*) AS n\n  FROM decisions;\n"
        "SELECT nope FROM decisions;\n"
        "DROP VIEW decisions;\n"
        "SELECT content FROM read_text('/etc/hostname');\n"  # a review: no file outside it
        "SELECT count(*) AS still FROM decisions;\n"
    )
    done = CliRunner().invoke(cli, ["audit", "shell", "--from", str(export)], input=typed)
    assert done.exit_code == 0, done.output
    assert "decisions" in done.stdout and "grant_history" in done.stdout  # .tables
    assert "┃ n " in done.stdout and "┃ still " in done.stdout  # the statement after errors
    assert "error: SQL does not fit the views:" in done.stderr
    assert "error: audit sql is read-only: DROP statements are refused" in done.stderr
    assert "content" not in done.stdout and done.stderr.count("error: ") == 3


def test_audit_shell_runs_duckdb_with_the_views_and_removes_its_init_file(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A red team: every `audit shell` left a /tmp/tmpXXXX.sql naming the export's files.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen.sql"
    fake = bin_dir / "duckdb"
    fake.write_text(
        f'#!/bin/sh\n[ "$1" = "-init" ] && cp "$2" {seen} && echo "$2" > {seen}.name\nexit 3\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    done = CliRunner().invoke(cli, ["audit", "shell", "--from", str(export)])
    assert done.exit_code == 3, done.output  # the shell's own status
    assert "CREATE" in seen.read_text() and "decisions" in seen.read_text()  # the views
    assert not Path((tmp_path / "seen.sql.name").read_text().strip()).exists()
    # A review: Ctrl-C (the terminal's SIGINT, to both) ended `ledger` and the shell with it;
    # it is the shell's, to cancel a query. A shell ended by signal N exits 128 + N.
    fake.write_text("#!/bin/sh\nkill -INT $PPID\nkill -QUIT $PPID\nsleep 0.3\nkill -TERM $$\n")
    done = CliRunner().invoke(cli, ["audit", "shell", "--from", str(export)])
    assert done.exit_code == 128 + 15, done.output
    # A review: a closed terminal (SIGHUP to `ledger`) left the init file; it is passed on.
    fake.write_text(f'#!/bin/sh\necho "$2" > {seen}.name\nkill -HUP $PPID\nsleep 3\nexit 0\n')
    done = CliRunner().invoke(cli, ["audit", "shell", "--from", str(export)])
    assert done.exit_code == 128 + 1, done.output
    assert not Path((tmp_path / "seen.sql.name").read_text().strip()).exists()


def test_a_pre_evaluation_recorded_before_stale_after_reproduces_and_one_after_is_compared(
    history: History, export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # stale_after (2026-12-07) is null on a pre-evaluation recorded before it existed: not held
    # against the reproduction; a recorded one is compared as every other field is.
    import importlib

    evaluating = importlib.import_module("ledger.core.evaluate")  # the module, not its function
    edge = datetime(2031, 1, 1, tzinfo=UTC)
    monkeypatch.setattr(evaluating, "next_window_edge", lambda state, principal, now: edge)
    source = ExportSource(export)
    entries = source.history()
    recorded = next(d for d in history.decisions if isinstance(d, BatchDecisionRecorded))
    [request] = source.requests(recorded.request_id)
    assert recorded.stale_after is None
    assert reproduce(recorded, request, entries).reproduces  # recorded before the field
    same = dataclasses.replace(recorded, stale_after=edge)
    assert reproduce(same, request, entries).reproduces
    other = dataclasses.replace(recorded, stale_after=edge + timedelta(seconds=1))
    result = reproduce(other, request, entries)
    assert [d.field for d in result.differences] == ["stale_after"]
