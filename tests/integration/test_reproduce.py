"""A generated run on the real broker, audited: every decision reproduces (from Kafka and from an
export), the evaluator's hash chains verify, every kind of tampering with the export is caught
and named, and a draft simulated over the history finds the known flips.

The run: grants, a policy's v1 active, decisions (sync, async with a correction, a pre-evaluation
batch, a principal without authority), v2 as a 50 % canary, then active, then rolled back; a
grant issued mid-way; the evaluator stopped cleanly (its chain gets a final checkpoint) and
started again (a second chain, checkpointed by its timer). The export is written in the export
format by ``export_format.export_from_kafka`` (the exporter's own tests are its own).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from export_format import export_from_kafka, files_of, rewrite, rows_of
from harness import ADMIN, AGENT, GOOD_FACTS, LedgerStack, policy_doc, wait_for

from ledger.audit.reproduce import reproduce
from ledger.audit.sources import ExportSource, KafkaSource, LedgerSource
from ledger.audit.verify import VerifyReport, verify_export
from ledger.cli.app import cli
from ledger.codec import default_codec
from ledger.core.chain import ChainHead, link
from ledger.core.events import (
    ChainCheckpoint,
    DecisionRecorded,
    Determination,
    IssueGrant,
    RollbackPolicy,
    Stage,
)
from ledger.core.jsonform import format_timestamp
from ledger.ids import new_id, utcnow

pytestmark = pytest.mark.integration

CODEC = default_codec()
FLIPS = {**GOOD_FACTS, "amount": "300"}  # v1 (auto below 500): allow; v2 (below 200): credit
STAYS = {**GOOD_FACTS, "amount": "100"}  # allowed by both


@dataclass
class Run:
    stack: LedgerStack
    export: Path
    v1_until: datetime
    v1_flips: int
    too_early: int
    v2_file: Path
    decisions: list[Any]
    chains: list[str]

    @property
    def env(self) -> dict[str, str]:
        return self.stack.cli_env()

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=self.env, catch_exceptions=False)


def _all_answered(stack: LedgerStack) -> Callable[[], list[Any]]:
    def check() -> list[Any]:
        requests = {r.event_id for r in stack.records(stack.topics.evaluation_requests)}
        decisions = stack.records(stack.topics.decisions)
        return decisions if requests <= {d.request_id for d in decisions} else []

    return check


@pytest.fixture(scope="module")
def run(stack_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    stack: LedgerStack = stack_factory()
    stack.grant_defaults()
    admin, agent = stack.client(ADMIN), stack.client(AGENT)
    account = iter(range(10**6))

    def ask(facts: dict[str, Any], n: int = 1, principal: str = AGENT) -> None:
        for _ in range(n):
            agent.evaluate(
                action="refund.issue",
                principal=principal,
                resource=f"account:{next(account)}",
                facts=facts,
            )

    def settle() -> None:
        stack.evaluate_settled(
            agent, action="refund.issue", principal=AGENT, resource="account:s", facts=STAYS
        )

    stack.deploy(admin, policy_doc("refund"))
    settle()
    ask(FLIPS, 6)
    ask(STAYS, 3)
    ask(STAYS, 2, principal="agent:intruder")  # no authority
    agent.submit_async(
        action="refund.issue",
        principal=AGENT,
        resource="account:async",
        default=Determination.DENY,
        facts=FLIPS,
    )
    agent.preevaluate(
        AGENT,
        [
            {"action": "refund.issue", "resource": "account:b1", "facts": FLIPS},
            {"action": "refund.issue", "resource": "account:b2", "facts": STAYS},
        ],
    )
    v1_decisions = wait_for(_all_answered(stack), timeout=30, what="every v1 request answered")
    v1_until = utcnow()
    # Asked before the evaluator had caught up with v1 (settle() asks until it has): denied as
    # ungoverned, and the draft would allow them.
    too_early = sum(
        1 for d in v1_decisions if getattr(d, "reason_code", None) == "ungoverned_action"
    )

    stack.deploy(admin, policy_doc("refund", auto_below=200), stage=Stage.CANARY, percent=50)
    settle()
    ask(FLIPS, 6)
    stack.promote(admin, "refund", 2, Stage.ACTIVE)
    settle()
    ask(FLIPS, 2)
    admin.submit_command(
        IssueGrant(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=ADMIN,
            grant_id="g-helper",
            principal="agent:helper",
            actions=("refund.issue",),
            resource="account:*",
        )
    )
    admin.submit_command(
        RollbackPolicy(
            event_id=new_id(), occurred_at=utcnow(), actor=ADMIN, policy="refund", reason="strict"
        )
    )
    settle()
    ask(FLIPS, 2)
    ask(STAYS, 2, principal="agent:helper")
    wait_for(_all_answered(stack), timeout=30, what="every request answered")

    # A clean stop ends the first chain with a final checkpoint; a restart begins another.
    assert stack.stop("evaluator")
    stack.start("evaluator")
    settle()
    ask(STAYS, 3)
    decisions = wait_for(_all_answered(stack), timeout=30, what="every request answered")
    chains = list(dict.fromkeys(d.chain_id for d in decisions))
    last = {c: max(d.chain_seq for d in decisions if d.chain_id == c) for c in chains}

    def checkpointed() -> bool:
        marks = [m for m in stack.records(stack.topics.chain_checkpoints)]
        heads = {c: max((m.chain_seq for m in marks if m.chain_id == c), default=0) for c in chains}
        return heads == last and any(m.final for m in marks if m.chain_id == chains[0])

    wait_for(checkpointed, timeout=20, what="checkpoints of both chains' heads")

    export = tmp_path_factory.mktemp("audit") / "export"
    export_from_kafka(stack.bootstrap, stack.topics, export, security=stack.security("exporter"))
    v2_file = tmp_path_factory.mktemp("draft") / "refund-v2.yaml"
    v2_file.write_text(policy_doc("refund", auto_below=200))
    # v1's flips: the sync requests, the async one and the batch's first item.
    yield Run(stack, export, v1_until, 6 + 1 + 1, too_early, v2_file, decisions, chains)


# --------------------------------------------------------------------------- reproduction


def _reproduce_all(source: LedgerSource, expected: int) -> None:
    history = source.history()
    pairs = list(source.pairs())
    assert len(pairs) == expected
    for request, decision in pairs:
        result = reproduce(decision, request, history)
        assert result.reproduces, (decision.event_id, result.differences)


def test_every_decision_reproduces_from_kafka(run: Run) -> None:
    _reproduce_all(
        KafkaSource(run.stack.bootstrap, run.stack.topics, security=run.stack.security("auditor")),
        len(run.decisions),
    )
    canary = next(
        d for d in run.decisions if isinstance(d, DecisionRecorded) and d.stage is Stage.CANARY
    )
    result = run.cli("replay", "--decision", canary.event_id, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["reproduces"] is True


def _several_at_once(source: LedgerSource, decisions: list[Any]) -> None:
    # One read answers several ids (`replay --decision A#B#C` asks for every split at once),
    # each as a read of its own would: by decision id or request id, unknown ids left out.
    wanted = [decisions[0].event_id, decisions[1].request_id, decisions[-1].event_id, "nope"]
    found = source.decisions(wanted)
    assert set(found) == set(wanted) - {"nope"}
    assert all(found[w] == [source.decision(w)] for w in found)
    assert found[decisions[1].request_id] == [decisions[1]]


def test_several_decisions_are_found_in_one_read_from_kafka_and_an_export(run: Run) -> None:
    security = run.stack.security("auditor")
    _several_at_once(
        KafkaSource(run.stack.bootstrap, run.stack.topics, security=security), run.decisions
    )
    _several_at_once(ExportSource(run.export), run.decisions)


def test_every_decision_reproduces_from_an_export(run: Run) -> None:
    _reproduce_all(ExportSource(run.export), len(run.decisions))
    rolled_back = run.decisions[-6]
    result = run.cli("replay", "--decision", rolled_back.request_id, "--from", str(run.export))
    assert result.exit_code == 0 and "reproduces:" in result.stdout, result.stderr


def test_many_decisions_reproduce_in_one_run_from_kafka_and_an_export(run: Run) -> None:
    for where in ((), ("--from", str(run.export))):
        result = run.cli("replay", "--decisions", *where, "--json")
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["decisions"] == report["reproduces"] == len(run.decisions), where
        assert {r["decision_id"] for r in report["results"]} == {d.event_id for d in run.decisions}
    sample = run.cli("replay", "--decisions", "--sample", "3", "--seed", "1", "--json")
    assert sample.exit_code == 0, sample.stderr
    assert json.loads(sample.stdout)["decisions"] == 3


def test_an_unknown_decision_is_one_line(run: Run) -> None:
    result = run.cli("replay", "--decision", "no-such-decision")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: no decision 'no-such-decision'")


# --------------------------------------------------------------------------- simulation


def test_simulation_from_kafka_and_from_the_export_agree_on_the_known_flips(run: Run) -> None:
    args = ["policy", "simulate", str(run.v2_file), "--until", run.v1_until.isoformat(), "--json"]
    from_kafka = json.loads(run.cli(*args).stdout)
    from_export = json.loads(run.cli(*args, "--from", str(run.export)).stdout)
    for data in (from_kafka, from_export):
        expected = {"allow -> allow_with_constraints": run.v1_flips}
        if run.too_early:
            expected["deny -> allow"] = run.too_early
        assert data["transitions"] == expected, json.dumps(data, indent=1)
        assert data["changed"] == run.v1_flips + run.too_early
        assert data["skipped"] == 2  # the intruder: no authority
    drop = ("source", "sample")
    assert {k: v for k, v in from_kafka.items() if k not in drop} == {
        k: v for k, v in from_export.items() if k not in drop
    }


# --------------------------------------------------------------------------- tamper evidence


def test_the_chains_of_a_real_run_verify(run: Run) -> None:
    report = verify_export(run.export)
    assert report.intact, [str(p) for p in report.problems]
    assert report.records == len(run.decisions) and report.unchained == 0
    assert [c.chain_id for c in report.chains] == sorted(run.chains)
    first, second = ({c.chain_id: c for c in report.chains}[x] for x in run.chains)
    assert first.final and first.unconfirmed == 0
    assert not second.final and second.checkpoint_seq == second.last_seq  # by the timer
    result = run.cli("audit", "verify", "--from", str(run.export))
    assert result.exit_code == 0 and "intact" in result.stdout, result.stderr


def _chain(run: Run, which: int) -> list[Any]:
    chain = run.chains[which]
    return sorted((d for d in run.decisions if d.chain_id == chain), key=lambda d: d.chain_seq)


def _edit(
    export: Path,
    topic: str,
    edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    *,
    holding: str,
) -> None:
    for path in files_of(export, topic):
        if any(r["event_id"] == holding for r in rows_of(path)):
            rewrite(path, edit)
            return
    raise AssertionError(f"{holding} not in the export")


def _alter(name: str, value: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
    def edit(run: Run, export: Path) -> tuple[str, str]:
        victim = _chain(run, 0)[4]
        _edit(
            export,
            run.stack.topics.decisions,
            lambda rows: [
                {**r, name: value(r)} if r["event_id"] == victim.event_id else r for r in rows
            ],
            holding=victim.event_id,
        )
        return "altered", victim.event_id

    return edit


def _richer_facts(row: dict[str, Any]) -> str:
    facts = json.loads(row["facts"])
    facts["amount"] = "9999.00"
    return json.dumps(facts, sort_keys=True, separators=(",", ":"))


def _record_bytes(run: Run, export: Path) -> tuple[str, str]:
    victim = _chain(run, 0)[5]
    forged = CODEC.encode(dataclasses.replace(victim, resource="account:attacker"))
    _edit(
        export,
        run.stack.topics.decisions,
        lambda rows: [
            {**r, "record": forged} if r["event_id"] == victim.event_id else r for r in rows
        ],
        holding=victim.event_id,
    )
    return "altered", victim.event_id


def _delete(run: Run, export: Path) -> tuple[str, str]:
    chain = _chain(run, 0)
    gone = chain[6]
    _edit(
        export,
        run.stack.topics.decisions,
        lambda rows: [r for r in rows if r["event_id"] != gone.event_id],
        holding=gone.event_id,
    )
    return "missing", chain[7].event_id


def _insert(run: Run, export: Path) -> tuple[str, str]:
    genuine = _chain(run, 0)[3]
    forged, _ = link(
        dataclasses.replace(genuine, event_id="d-forged", request_id="r-forged"),
        ChainHead(genuine.chain_id, genuine.chain_seq - 1, genuine.prev_hash),
    )

    def add(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        template = next(r for r in rows if r["event_id"] == genuine.event_id)
        extra = {
            **template,
            "offset": max(r["offset"] for r in rows) + 1000,
            "key": "r-forged",
            "event_id": "d-forged",
            "request_id": "r-forged",
            "hash": forged.hash,
            "record": CODEC.encode(forged),
        }
        return [*rows, extra]

    _edit(export, run.stack.topics.decisions, add, holding=genuine.event_id)
    return "inserted", "d-forged"


def _swap(run: Run, export: Path) -> tuple[str, str]:
    # Two records of one chain, next to each other in one partition's file: swap their
    # contents, keep their coordinates.
    chain = {d.event_id: d for d in _chain(run, 0)}
    for path in files_of(export, run.stack.topics.decisions):
        rows = rows_of(path)
        mine = [i for i, r in enumerate(rows) if r["event_id"] in chain]
        if len(mine) >= 2:
            i, j = mine[0], mine[1]
            later = rows[j]["event_id"]

            def swap(rows: list[dict[str, Any]], i: int = i, j: int = j) -> list[dict[str, Any]]:
                keep = ("topic", "partition", "offset", "kafka_timestamp")
                a, b = rows[i], rows[j]
                rows[i] = {**b, **{k: a[k] for k in keep}}
                rows[j] = {**a, **{k: b[k] for k in keep}}
                return rows

            rewrite(path, swap)
            return "reordered", later
    raise AssertionError("no partition holds two records of the chain")


def _truncate(run: Run, export: Path) -> tuple[str, str]:
    chain = _chain(run, 0)
    for gone in chain[-2:]:
        _edit(
            export,
            run.stack.topics.decisions,
            lambda rows, gone=gone: [r for r in rows if r["event_id"] != gone.event_id],
            holding=gone.event_id,
        )
    return "missing", chain[-3].event_id


TAMPERING = {
    # Another answer than the recorded one (which decision is chain[4] depends on the order the
    # evaluator took the requests in).
    "determination column": _alter(
        "determination", lambda r: "allow" if r["determination"] == "deny" else "deny"
    ),
    "a fact inside facts": _alter("facts", _richer_facts),
    "record bytes": _record_bytes,
    "a deleted row": _delete,
    "a forged row": _insert,
    "two rows swapped": _swap,
    "newest rows deleted": _truncate,
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_tampering_with_the_export_is_caught_and_named(run: Run, how: str, tmp_path: Path) -> None:
    copy = tmp_path / f"export-{uuid.uuid4().hex[:6]}"
    shutil.copytree(run.export, copy)
    kind, decision_id = TAMPERING[how](run, copy)
    report: VerifyReport = verify_export(copy)
    assert not report.intact, f"{how} went unnoticed"
    first = report.problems[0]
    assert (first.kind, first.decision_id) == (kind, decision_id), [str(p) for p in report.problems]
    assert first.topic == run.stack.topics.decisions and first.offset is not None
    result = run.cli("audit", "verify", "--from", str(copy))
    assert result.exit_code == 11 and decision_id in result.stderr, result.stderr


def test_checkpoints_name_each_chain_head(run: Run) -> None:
    marks = [m for m in run.stack.records(run.stack.topics.chain_checkpoints)]
    assert all(isinstance(m, ChainCheckpoint) for m in marks)
    final = [m for m in marks if m.final]
    assert [m.chain_id for m in final] == [run.chains[0]]
    head = _chain(run, 0)[-1]
    assert (final[0].chain_seq, final[0].head_hash) == (head.chain_seq, head.hash)


# --------------------------------------------------------------------------- copied request ids


def test_a_copied_request_id_misleads_neither_replay_nor_simulate_from_kafka(run: Run) -> None:
    """Any agent can read request ids on ``ledger.decisions`` and write a copy of one, with
    other facts, to the request topic's first partition (read first); the evaluator decides it
    too (only a record sent again as it was is a repeat), under the same decision id. Replay
    names both rather than take one for the other (a red team: it reproduced the one Kafka's
    partition order gave first); simulation uses the copy each decision answered. (Last in
    this module: the copy stays in the broker's log.)"""
    from ledger.kafka.reading import read_topic

    topic = run.stack.topics.evaluation_requests
    security = run.stack.security("auditor")
    positioned = [
        p for p in read_topic(run.stack.bootstrap, [topic], idle_timeout=1.0, security=security)
    ]
    decided = {
        d.request_id: d
        for d in run.decisions
        if isinstance(d, DecisionRecorded) and d.occurred_at < run.v1_until
    }
    honest = next(
        p for p in positioned if p.event.event_id in decided and p.partition != 0
    )  # a request a later partition holds: the copy in partition 0 is read before it
    decision = decided[honest.event.event_id]
    copy = dataclasses.replace(honest.event, facts={**GOOD_FACTS, "amount": "900"})
    producer = run.stack.producer("agent")
    try:
        producer.send(topic, value=CODEC.encode(copy), key=copy.event_id.encode(), partition=0)
        producer.flush(timeout=10)
    finally:
        producer.close()
    wait_for(
        lambda: [
            d
            for d in run.stack.records(run.stack.topics.decisions)
            if isinstance(d, DecisionRecorded) and d.request_id == copy.event_id
        ][1:],
        timeout=60,
        what="the copy decided",
    )
    result = run.cli("replay", "--decision", decision.event_id, "--json")
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "names several decisions: its request was decided again" in result.stderr
    assert f"decided {format_timestamp(decision.occurred_at)}: " in result.stderr
    args = ["policy", "simulate", str(run.v2_file), "--until", run.v1_until.isoformat(), "--json"]
    simulated = json.loads(run.cli(*args).stdout)
    expected = {"allow -> allow_with_constraints": run.v1_flips}
    if run.too_early:
        expected["deny -> allow"] = run.too_early
    assert simulated["transitions"] == expected  # as without the copy
