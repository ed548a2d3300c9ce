"""``verify_export`` over an export written in the export format: an intact ledger passes, and
every way of tampering is caught and named — a queryable column, a fact inside ``facts``, the
raw record, a deleted row, a forged row, two rows swapped, the newest rows deleted after a
checkpoint, a record rewritten with its hash recomputed, a decision outside every chain."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from export_format import Exported, files_of, hide_in_footer, rewrite, rows_of, write_export

from ledger.audit.manifest import path_parts
from ledger.audit.verify import Problem, VerifyReport, verify_export
from ledger.codec import default_codec
from ledger.core.chain import ChainHead, checkpoint, form_hash, link, record_hash
from ledger.core.events import (
    ApprovePolicyVersion,
    Command,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    IssueGrant,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RevokeGrant,
    Stage,
)
from ledger.core.jsonform import to_json_value
from ledger.core.lifecycle import already_applied, command_result, decide
from ledger.core.state import EMPTY_STATE, fold
from ledger.errors import ExportError
from ledger.settings import TopicNames

CODEC = default_codec()
TOPICS = TopicNames(prefix="v.")
T0 = datetime(2026, 3, 1, 23, 59, 50, tzinfo=UTC)  # the run crosses midnight: two date folders
PARTITIONS = 3


def decision(
    n: int, writer: str, at: datetime, requested_by: str | None = None
) -> DecisionRecorded:
    allow = n % 3 != 0
    return DecisionRecorded(
        requested_by=requested_by,
        event_id=f"d-{n:03d}",
        occurred_at=at,
        actor="service:evaluator",
        request_id=f"r-{n:03d}",
        requested_at=at - timedelta(milliseconds=2),
        action="refund.issue",
        principal="agent:bot",
        resource=f"account:{n}",
        determination=Determination.ALLOW if allow else Determination.DENY,
        reason_code="rule_matched",
        policy="refund",
        policy_version=1,
        rule="auto-refund" if allow else "suspended",
        facts={"amount": Decimal(f"{100 + n}.50"), "tenure_days": n, "standing": "good"},
        governance_position={"v.ledger.policy-events/0": 2, "v.ledger.grant-events/0": 1},
        evaluator_id=writer,
        latency_us=100 + n,
    )


ROOT = Path(__file__).resolve().parents[2]


def governance() -> list[Exported]:
    """The governance records the decisions cite: refund v1 proposed, approved and made active
    (policy events 0 to 2); a grant issued to the bot, then revoked (grant events 0 and 1)."""
    document = (ROOT / "examples" / "policies" / "refund.yaml").read_text()
    admin = "human:admin"
    commands: list[tuple[str, Command]] = [
        (
            TOPICS.policy_events,
            ProposePolicyVersion(
                event_id="c1",
                occurred_at=T0,
                actor="human:alice",
                policy="refund",
                document=document,
            ),
        ),
        (
            TOPICS.policy_events,
            ApprovePolicyVersion(
                event_id="c2", occurred_at=T0, actor=admin, policy="refund", version=1
            ),
        ),
        (
            TOPICS.policy_events,
            PromotePolicyVersion(
                event_id="c3",
                occurred_at=T0,
                actor=admin,
                policy="refund",
                version=1,
                stage=Stage.ACTIVE,
            ),
        ),
        (
            TOPICS.grant_events,
            IssueGrant(
                event_id="c4",
                occurred_at=T0,
                actor=admin,
                grant_id="g-bot",
                principal="agent:bot",
                actions=("refund.issue",),
                resource="*",
            ),
        ),
        (
            TOPICS.grant_events,
            RevokeGrant(event_id="c5", occurred_at=T0, actor=admin, grant_id="g-bot"),
        ),
    ]
    state, records, offsets = EMPTY_STATE, [], {TOPICS.policy_events: 0, TOPICS.grant_events: 0}
    ids = (f"e{n}" for n in itertools.count())
    for topic, command in commands:
        events = decide(
            state,
            command,
            now=T0,
            new_id=lambda: next(ids),
            admins=frozenset({admin, "human:alice"}),
        )
        assert isinstance(events, tuple), events
        for event in events:
            state = fold(state, event)
            stamp = int(T0.timestamp() * 1000)
            records.append(Exported(topic, 0, offsets[topic], stamp, None, CODEC.encode(event)))
            offsets[topic] += 1
    return records


def request(n: int, at: datetime) -> EvaluationRequested:
    return EvaluationRequested(
        event_id=f"r-{n:03d}",
        occurred_at=at - timedelta(milliseconds=2),
        actor="agent:bot",
        action="refund.issue",
        principal="agent:bot",
        resource=f"account:{n}",
        facts={"amount": Decimal(f"{100 + n}.50"), "tenure_days": n, "standing": "good"},
    )


@dataclasses.dataclass
class Ledger:
    """A synthetic decisions topic: two writers' interleaved chains, with checkpoints."""

    records: list[Exported]
    decisions: list[DecisionRecorded]

    def export(self, out: Path) -> Path:
        write_export(out, self.records, TOPICS)
        return out


Linker = Callable[[DecisionRecorded, ChainHead], tuple[DecisionRecorded, ChainHead]]


def build(
    n: int = 40,
    *,
    unchained: int = 0,
    linker: Linker = link,
    requested_by: str | None = None,
    requests: bool = True,
    every: timedelta = timedelta(seconds=0.5),
) -> Ledger:
    """The ledger's decisions (and with ``requests`` the requests they answer, one partition),
    their checkpoints, and the governance records they cite."""
    heads = {"a": ChainHead("evaluator-a/n1"), "b": ChainHead("evaluator-b/n2")}
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    records: list[Exported] = []
    decisions: list[DecisionRecorded] = []
    checkpoints: list[Exported] = []

    def mark(writer: str, at: datetime, *, final: bool = False) -> None:
        cp = checkpoint(heads[writer], now=at, actor="service:evaluator", final=final)
        checkpoints.append(
            Exported(
                TOPICS.chain_checkpoints,
                0,
                len(checkpoints),
                int(at.timestamp() * 1000),
                cp.chain_id.encode(),
                CODEC.encode(cp),
            )
        )

    for i in range(n):
        writer = "a" if i % 3 else "b"
        at = T0 + i * every
        stamped, heads[writer] = linker(
            decision(i, f"evaluator-{writer}", at, requested_by), heads[writer]
        )
        if i < unchained:
            stamped = dataclasses.replace(
                stamped, chain_id=None, chain_seq=None, prev_hash=None, hash=None
            )
            heads[writer] = ChainHead(heads[writer].chain_id)
        decisions.append(stamped)
        partition = zlib.crc32(stamped.request_id.encode()) % PARTITIONS
        records.append(
            Exported(
                TOPICS.decisions,
                partition,
                offsets[partition],
                int(at.timestamp() * 1000),
                stamped.request_id.encode(),
                CODEC.encode(stamped),
            )
        )
        offsets[partition] += 1
        if requests:
            asked = CODEC.encode(request(i, at))
            stamp = int(at.timestamp() * 1000) - 1
            records.append(Exported(TOPICS.evaluation_requests, 0, i, stamp, None, asked))
        if heads[writer].seq and heads[writer].seq % 10 == 0:
            mark(writer, at)
    last = T0 + n * every
    mark("a", last, final=True)  # a stopped cleanly; b is still running
    return Ledger(records + checkpoints + governance(), decisions)


@pytest.fixture
def ledger() -> Ledger:
    return build()


@pytest.fixture
def export(ledger: Ledger, tmp_path: Path) -> Path:
    return ledger.export(tmp_path / "export")


def verify(path: Path, **kw: Any) -> VerifyReport:
    return verify_export(path, **kw)


def tamper(export: Path, decision_id: str, change: Callable[[dict[str, Any]], Any]) -> None:
    """Apply ``change`` to the exported row of ``decision_id`` (return ``None`` to delete it)."""
    for path in files_of(export, TOPICS.decisions):
        rows = rows_of(path)
        if any(r["event_id"] == decision_id for r in rows):

            def edit(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
                out = []
                for row in rows:
                    if row["event_id"] == decision_id:
                        row = change(dict(row))
                        if row is None:
                            continue
                    out.append(row)
                return out

            rewrite(path, edit)
            return
    raise AssertionError(f"{decision_id} not exported")


def first(report: VerifyReport) -> Problem:
    assert not report.intact, "tampering went unnoticed"
    return decided(report)[0]


def decided(report: VerifyReport) -> list[Problem]:
    """The problems of the decisions and their chains: not the requests left unanswered that
    deleting decisions leaves too (the synthetic ledger holds the requests they answer)."""
    return [p for p in report.problems if p.subject != "request"] or report.problems


def chain_row(ledger: Ledger, writer: str, seq: int) -> DecisionRecorded:
    (found,) = [
        d
        for d in ledger.decisions
        if d.chain_id and d.chain_id.startswith(f"evaluator-{writer}/") and d.chain_seq == seq
    ]
    return found


# --------------------------------------------------------------------------- intact


def test_an_intact_export_verifies(ledger: Ledger, export: Path) -> None:
    assert len({p.parent.name for p in files_of(export, TOPICS.decisions)}) == 2  # two dates
    report = verify(export)
    assert report.intact, [str(p) for p in report.problems]
    assert report.records == 40 and report.unchained == 0
    chains = {c.chain_id: c for c in report.chains}
    a, b = chains["evaluator-a/n1"], chains["evaluator-b/n2"]
    assert (a.records, a.last_seq, a.checkpoint_seq, a.final, a.unconfirmed) == (
        26,
        26,
        26,
        True,
        0,
    )
    assert (b.records, b.checkpoint_seq, b.final, b.unconfirmed) == (14, 10, False, 4)
    assert report.checkpoints == 4 and report.unconfirmed == 4
    # As `ledger audit verify` runs it (worker processes from 50,000 decisions), whatever it finds.
    whole = verify_export(export, allow_unchained=True, workers=None)
    assert whole.records > 0 and whole.seconds > 0


def _link_before_requested_by(
    record: DecisionRecorded, head: ChainHead
) -> tuple[DecisionRecorded, ChainHead]:
    """A link as an evaluator from before requested_by existed (DecisionRecorded v2) wrote it:
    its hash covers every field but that one."""
    seq = head.seq + 1
    stamped = dataclasses.replace(
        record, chain_id=head.chain_id, chain_seq=seq, prev_hash=head.hash
    )
    form = to_json_value(stamped)
    del form["requested_by"]
    digest = form_hash(form)
    return dataclasses.replace(stamped, hash=digest), ChainHead(head.chain_id, seq, digest)


def test_decisions_hashed_before_requested_by_existed_verify(tmp_path: Path) -> None:
    # Read back with requested_by null, they hash differently from what their writer hashed:
    # a null late field (LATE_FIELDS) may be left out of the hashed form.
    old = build(linker=_link_before_requested_by)
    assert old.decisions[5].hash != record_hash(old.decisions[5])
    report = verify(old.export(tmp_path / "old"))
    assert report.intact, [str(p) for p in report.problems]
    assert report.records == 40 and report.unchained == 0


def test_a_requested_by_nulled_after_hashing_is_altered(tmp_path: Path) -> None:
    # Only a null that was hashed as null (or before the field existed) passes: setting a
    # recorded requested_by to null, in the columns and in the record bytes, breaks the link.
    asked = build(requested_by="agent:gateway")
    export = asked.export(tmp_path / "asked")
    target = chain_row(asked, "a", 5)
    nulled = CODEC.encode(dataclasses.replace(target, requested_by=None))
    tamper(export, target.event_id, lambda r: {**r, "requested_by": None, "record": nulled})
    p = first(verify(export))
    assert (p.kind, p.decision_id, p.chain_seq) == ("altered", target.event_id, 5)


def test_an_export_of_another_prefix_is_found_where_it_lies(export: Path) -> None:
    assert verify_export(export).records == 40


def test_the_export_may_be_named_by_a_str_or_any_path_like(export: Path) -> None:
    # The README shows verify_export(path) beside connect("export"), which takes a str.
    class Where:
        def __fspath__(self) -> str:
            return str(export)

    for given in (str(export), Where()):
        report = verify_export(given)
        assert (report.intact, report.records, report.export_dir) == (True, 40, str(export))


def test_a_missing_or_foreign_directory_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        verify(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="holds no export"):
        verify(tmp_path / "empty")


def test_files_a_killed_first_export_left_without_a_manifest_are_not_read(
    export: Path, tmp_path: Path
) -> None:
    # A first export killed before its manifest: its files are not an export yet (the next run
    # removes them), so verify reads nothing from them, as `ledger audit` does not.
    killed = tmp_path / "killed"
    shutil.copytree(export, killed)
    (killed / "_manifest.json").unlink()
    with pytest.raises(ExportError, match="holds no export"):
        verify(killed)


# --------------------------------------------------------------------------- altered


def test_an_altered_queryable_column_is_named(ledger: Ledger, export: Path) -> None:
    target = chain_row(ledger, "a", 5)
    tamper(export, target.event_id, lambda r: {**r, "determination": "deny"})
    p = first(verify(export))
    assert (p.kind, p.decision_id, p.chain_seq) == ("altered", target.event_id, 5)
    assert (p.topic, p.partition) == (TOPICS.decisions, ledger_partition(target))
    assert 'determination="deny"' in p.found and 'determination="allow"' in p.expected
    assert "record bytes" in p.expected
    assert len(verify(export).problems) == 1  # its place in the chain is not reported twice
    # An auditor's walkthrough: the file holding it had to be found through the manifest.
    assert p.file is not None and p.file.startswith(f"topic={TOPICS.decisions}/")
    assert (export / p.file).is_file()


def test_an_altered_fact_inside_the_facts_column_is_named(ledger: Ledger, export: Path) -> None:
    target = chain_row(ledger, "b", 3)

    def richer(row: dict[str, Any]) -> dict[str, Any]:
        facts = json.loads(row["facts"])
        facts["amount"] = "99999.00"
        return {**row, "facts": json.dumps(facts, sort_keys=True, separators=(",", ":"))}

    tamper(export, target.event_id, richer)
    p = first(verify(export))
    assert (p.kind, p.decision_id) == ("altered", target.event_id)
    assert "99999.00" in p.found and "facts=" in p.found


def test_a_json_column_nested_past_the_parser_is_named_not_a_crash(
    ledger: Ledger, export: Path
) -> None:
    target = chain_row(ledger, "a", 4)
    tamper(export, target.event_id, lambda r: {**r, "facts": "[" * 5_000 + "]" * 5_000})
    p = first(verify(export))
    assert (p.kind, p.decision_id) == ("altered", target.event_id)
    assert "column facts is JSON nested too deeply" in p.found


def test_a_megabyte_long_column_is_named_in_a_line_not_quoted_whole(
    ledger: Ledger, export: Path
) -> None:
    # A red team's find: a 4 MB key in one row (a 17 KB file, zstd) was quoted whole in the
    # problem, and rendering it held `audit verify` for minutes at gigabytes of memory.
    target = chain_row(ledger, "a", 5)
    tamper(export, target.event_id, lambda r: {**r, "key": "k" * 4_000_000})
    p = first(verify(export))
    assert (p.kind, p.decision_id) == ("altered", target.event_id)
    assert p.found.startswith('key "kkk') and len(p.found) < 200


def test_a_text_column_rewritten_as_bytes_is_named_not_a_traceback(
    ledger: Ledger, export: Path
) -> None:
    # A reviewer's find: with the key column rewritten as binary in one file, the problem's
    # text (json.dumps of the value) raised TypeError out of `audit verify`.
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files_of(export, TOPICS.decisions):  # every file: DuckDB reads them as BLOB
        table = pq.read_table(path)
        keys = [None if k is None else k.encode() + b"!" for k in table.column("key").to_pylist()]
        index = table.schema.get_field_index("key")
        pq.write_table(table.set_column(index, "key", pa.array(keys, pa.binary())), path)
    p = first(verify(export))
    assert p.kind == "altered" and p.found.startswith('key "'), p.found


def test_altered_record_bytes_are_named(ledger: Ledger, export: Path) -> None:
    target = chain_row(ledger, "a", 7)
    forged = CODEC.encode(dataclasses.replace(target, resource="account:attacker"))
    tamper(export, target.event_id, lambda r: {**r, "record": forged})
    p = first(verify(export))
    assert (p.kind, p.decision_id) == ("altered", target.event_id)
    assert "record bytes hold" in p.found and "account:attacker" in p.found
    assert "match the chain's hash" in p.expected


def test_a_record_rewritten_with_its_hash_recomputed_breaks_the_chain(
    ledger: Ledger, export: Path
) -> None:
    target = chain_row(ledger, "a", 8)
    rewritten, _ = link(
        dataclasses.replace(target, determination=Determination.DENY),
        ChainHead(target.chain_id or "", 7, target.prev_hash),
    )
    assert rewritten.hash != target.hash

    def consistent(row: dict[str, Any]) -> dict[str, Any]:
        return {
            **row,
            "determination": "deny",
            "hash": rewritten.hash,
            "record": CODEC.encode(rewritten),
        }

    tamper(export, target.event_id, consistent)
    p = first(verify(export))
    assert (p.kind, p.decision_id, p.chain_seq) == ("altered", target.event_id, 8)
    assert chain_row(ledger, "a", 9).event_id in p.found  # the successor vouches otherwise
    assert str(target.hash) in p.expected


def test_a_chain_rewritten_to_its_end_is_caught_by_its_checkpoints(
    ledger: Ledger, export: Path
) -> None:
    # Every link consistent from chain_seq 15 to the end: only the checkpoints (at 20 and the
    # final one at 26) still vouch for the original hashes.
    head = ChainHead(chain_row(ledger, "a", 14).chain_id or "", 14, chain_row(ledger, "a", 14).hash)
    for seq in range(15, 27):
        original = chain_row(ledger, "a", seq)
        rewritten, head = link(
            dataclasses.replace(original, determination=Determination.DENY), head
        )

        def consistent(row: dict[str, Any], new: DecisionRecorded = rewritten) -> dict[str, Any]:
            return {
                **row,
                "determination": "deny",
                "prev_hash": new.prev_hash,
                "hash": new.hash,
                "record": CODEC.encode(new),
            }

        tamper(export, original.event_id, consistent)
    report = verify(export)
    assert not report.intact
    named = [p for p in report.problems if p.topic == TOPICS.chain_checkpoints]
    assert [(p.kind, p.chain_seq) for p in named] == [("altered", 20), ("altered", 26)]
    assert str(chain_row(ledger, "a", 20).hash) in named[0].expected
    assert "was rewritten" in named[0].expected


def test_a_chains_first_record_must_follow_nothing(ledger: Ledger, export: Path) -> None:
    first_a = chain_row(ledger, "a", 1)
    rewritten, _ = link(first_a, ChainHead(first_a.chain_id or "", 0, "0" * 64))
    assert rewritten.prev_hash == "0" * 64

    def consistent(row: dict[str, Any]) -> dict[str, Any]:
        return {
            **row,
            "prev_hash": rewritten.prev_hash,
            "hash": rewritten.hash,
            "record": CODEC.encode(rewritten),
        }

    tamper(export, first_a.event_id, consistent)
    problems = [p for p in verify(export).problems if p.decision_id == first_a.event_id]
    assert problems and problems[0].kind == "altered"
    assert "prev_hash null" in problems[0].expected


def test_a_tampered_checkpoint_column_is_named(ledger: Ledger, export: Path) -> None:
    path = files_of(export, TOPICS.chain_checkpoints)[0]
    rewrite(path, lambda rows: [{**rows[0], "chain_seq": 11}, *rows[1:]])
    p = first(verify(export))
    assert p.kind == "altered" and p.topic == TOPICS.chain_checkpoints
    assert str(p).startswith(f"altered: checkpoint {p.decision_id} at ")  # not "decision"


# --------------------------------------------------------------------------- missing


def test_a_deleted_row_is_named_by_the_record_after_the_gap(ledger: Ledger, export: Path) -> None:
    gone, after = chain_row(ledger, "a", 12), chain_row(ledger, "a", 13)
    tamper(export, gone.event_id, lambda r: None)
    p = first(verify(export))
    assert (p.kind, p.decision_id, p.chain_seq) == ("missing", after.event_id, 13)
    assert "chain_seq 12" in p.expected and str(gone.hash) in p.expected


def test_deleting_the_newest_rows_after_a_checkpoint_is_caught(
    ledger: Ledger, export: Path
) -> None:
    # Chain a's final checkpoint vouches for its 26th record: delete the last three.
    for seq in (24, 25, 26):
        tamper(export, chain_row(ledger, "a", seq).event_id, lambda r: None)
    p = first(verify(export))
    assert p.kind == "missing" and p.decision_id == chain_row(ledger, "a", 23).event_id
    assert "up to chain_seq 26" in p.expected and "deleted" in p.expected


def test_deleting_a_whole_chain_leaves_its_checkpoints_unanswered(
    ledger: Ledger, export: Path
) -> None:
    for d in ledger.decisions:
        if d.chain_id and d.chain_id.startswith("evaluator-b/"):
            tamper(export, d.event_id, lambda r: None)
    p = first(verify(export))
    assert p.kind == "missing" and p.chain_id == "evaluator-b/n2" and p.decision_id is None


# --------------------------------------------------------------------------- inserted, reordered


def test_a_forged_row_is_named(ledger: Ledger, export: Path) -> None:
    genuine = chain_row(ledger, "a", 4)
    # The forger knows the scheme: a well-formed link claiming seq 4 after the real seq 3.
    forged, _ = link(
        dataclasses.replace(
            genuine, event_id="d-forged", request_id="r-forged", resource="account:attacker"
        ),
        ChainHead(genuine.chain_id or "", 3, genuine.prev_hash),
    )

    def add(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        template = next(r for r in rows if r["event_id"] == genuine.event_id)
        row = {
            **template,
            "offset": max(r["offset"] for r in rows) + 100,
            "key": "r-forged",
            "event_id": "d-forged",
            "request_id": "r-forged",
            "resource": "account:attacker",
            "hash": forged.hash,
            "record": CODEC.encode(forged),
        }
        return [*rows, row]

    path = next(
        p for p in files_of(export, TOPICS.decisions) if genuine.event_id in str(rows_of(p))
    )
    rewrite(path, add)
    p = first(verify(export))
    assert (p.kind, p.decision_id, p.chain_seq) == ("inserted", "d-forged", 4)
    assert genuine.event_id in p.expected


def test_a_row_after_a_final_checkpoint_is_inserted(ledger: Ledger, export: Path) -> None:
    last = chain_row(ledger, "a", 26)
    forged, _ = link(
        dataclasses.replace(last, event_id="d-late", request_id="r-late"),
        ChainHead(last.chain_id or "", 26, last.hash),
    )
    path = next(p for p in files_of(export, TOPICS.decisions) if last.event_id in str(rows_of(p)))

    def add(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        template = next(r for r in rows if r["event_id"] == last.event_id)
        extra = {
            **template,
            "offset": max(r["offset"] for r in rows) + 1,
            "key": "r-late",
            "event_id": "d-late",
            "request_id": "r-late",
            "chain_seq": 27,
            "prev_hash": last.hash,
            "hash": forged.hash,
            "record": CODEC.encode(forged),
        }
        return [*rows, extra]

    rewrite(path, add)
    p = first(verify(export))
    assert (p.kind, p.decision_id) == ("inserted", "d-late")
    assert "final checkpoint" in p.found


def test_two_rows_swapped_within_a_partition_are_reordered(ledger: Ledger, export: Path) -> None:
    # Two records of one chain in one partition: swap their contents, keep the coordinates.
    by_partition: dict[int, list[DecisionRecorded]] = {}
    for d in ledger.decisions:
        if d.chain_id and d.chain_id.startswith("evaluator-a/"):
            by_partition.setdefault(ledger_partition(d), []).append(d)
    pair = next(ds[:2] for ds in by_partition.values() if len(ds) >= 2)
    ids = {d.event_id for d in pair}
    path = next(
        p for p in files_of(export, TOPICS.decisions) if pair[0].event_id in str(rows_of(p))
    )
    coordinates = ("topic", "partition", "offset", "kafka_timestamp")

    def swap(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        i, j = [k for k, r in enumerate(rows) if r["event_id"] in ids]
        a, b = rows[i], rows[j]
        rows[i] = {**b, **{c: a[c] for c in coordinates}}
        rows[j] = {**a, **{c: b[c] for c in coordinates}}
        return rows

    rewrite(path, swap)
    p = first(verify(export))
    assert (p.kind, p.decision_id) == ("reordered", pair[1].event_id)
    assert f"chain_seq {pair[0].chain_seq}" in p.found


# --------------------------------------------------------------------------- unchained


def test_decisions_outside_every_chain(tmp_path: Path) -> None:
    ledger = build(unchained=1)
    export = ledger.export(tmp_path / "x")
    p = first(verify(export))
    assert (p.kind, p.decision_id) == ("unchained", "d-000")
    report = verify(export, allow_unchained=True)
    assert report.intact and report.unchained == 1


def ledger_partition(d: DecisionRecorded) -> int:
    return zlib.crc32(d.request_id.encode()) % PARTITIONS


def test_worker_processes_split_the_chains_and_find_the_same(ledger: Ledger, export: Path) -> None:
    tamper(export, chain_row(ledger, "a", 12).event_id, lambda r: None)
    tamper(export, chain_row(ledger, "b", 3).event_id, lambda r: {**r, "rule": "forged"})
    # chain_id altered: the row lands in another worker's share; its gap is not reported twice.
    tamper(
        export, chain_row(ledger, "a", 20).event_id, lambda r: {**r, "chain_id": "evaluator-b/n2"}
    )
    alone, split = verify(export, workers=1), verify(export, workers=2)
    assert split.problems == alone.problems and split.chains == alone.chains
    assert [(p.kind, p.chain_seq) for p in decided(alone)] == [
        ("altered", 3),
        ("missing", 13),
        ("altered", 20),
    ]


def test_a_row_without_its_record_bytes_is_altered(ledger: Ledger, export: Path) -> None:
    target = chain_row(ledger, "b", 2)
    tamper(export, target.event_id, lambda r: {**r, "record": None})
    p = first(verify(export))
    assert (p.kind, p.decision_id) == ("altered", target.event_id)
    assert "record bytes do not decode" in p.found


def test_deleting_the_newest_decision_that_no_checkpoint_covers_is_caught(
    ledger: Ledger, export: Path
) -> None:
    # An auditor's walkthrough: chain b is still running, its newest records are after its
    # last checkpoint; deleting the newest left the chain consistent ("intact"), though the
    # export's manifest still said the partition's offsets ran past it.
    newest = max(
        (d for d in ledger.decisions if d.chain_id and d.chain_id.startswith("evaluator-b/")),
        key=lambda d: d.chain_seq or 0,
    )
    assert intact_before(export)
    tamper(export, newest.event_id, lambda r: None)
    report = verify(export)
    assert not report.intact
    (p,) = decided(report)
    assert (p.kind, p.topic, p.partition) == ("missing", TOPICS.decisions, ledger_partition(newest))


def test_deleting_the_last_checkpoint_is_caught(ledger: Ledger, export: Path) -> None:
    # Without its final checkpoint, chain a's last records look merely unconfirmed; the
    # checkpoints topic's offsets show the row is gone.
    files = files_of(export, TOPICS.chain_checkpoints)
    last = max(r["offset"] for path in files for r in rows_of(path))
    for path in files:
        rewrite(path, lambda rows: [r for r in rows if r["offset"] != last])
    report = verify(export)
    (p,) = report.problems
    assert (p.kind, p.topic, p.offset) == ("missing", TOPICS.chain_checkpoints, last)
    assert "manifest says" in p.expected


def intact_before(export: Path) -> bool:
    return verify(export).intact


def test_an_export_flushed_while_it_is_verified_is_still_intact(
    ledger: Ledger, export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review of the offsets check: `ledger export --follow` rewrites the manifest every few
    # seconds; the files of one version checked against the next offsets of a later one looked
    # like deleted rows ("missing"), on an honest export.
    import ledger.audit.verify as verifying
    from ledger.audit.export import write_events

    first_checkpoint = next(r for r in ledger.records if r.topic == TOPICS.chain_checkpoints)
    again = CODEC.decode(first_checkpoint.value)
    loading = verifying._load_checkpoints

    def flushed_meanwhile(*args: Any) -> Any:
        found = loading(*args)
        write_events(export, TOPICS, [(TOPICS.chain_checkpoints, again)])  # a follow flush
        return found

    monkeypatch.setattr(verifying, "_load_checkpoints", flushed_meanwhile)
    assert verify(export).intact


def test_a_repeated_offset_and_an_unchained_rows_gap_are_found(tmp_path: Path) -> None:
    # The offsets check's other two findings (a review found them untested).
    ledger = build(unchained=12)
    export = ledger.export(tmp_path / "x")
    offsets = {
        r.key.decode(): r.offset for r in ledger.records if r.topic == TOPICS.decisions and r.key
    }
    # Unchained (no chain reports its deletion), and neither first nor last of its partition.
    gone = next(d for d in ledger.decisions[:12] if offsets[d.request_id] > 0)
    tamper(export, gone.event_id, lambda r: None)
    report = verify(export, allow_unchained=True)
    (p,) = decided(report)
    assert (p.kind, p.topic, p.partition) == ("missing", TOPICS.decisions, ledger_partition(gone))
    # The offset is named (an auditor's walkthrough: only the partition was).
    assert p.found.endswith(f"without a row, the first {offsets[gone.request_id]}")
    assert p.offset == offsets[gone.request_id]

    export = ledger.export(tmp_path / "y")
    (path, *_) = files_of(export, TOPICS.chain_checkpoints)
    rewrite(path, lambda rows: [*rows, rows[0]])  # one checkpoint row twice
    (p,) = verify(export, allow_unchained=True).problems
    assert (p.kind, p.topic) == ("inserted", TOPICS.chain_checkpoints)
    first = min(r["offset"] for r in pq.read_table(path).to_pylist())
    assert p.found.endswith(f"the first at offset {first}") and p.offset == first


# --------------------------------------------------------------------------- files


def test_a_deleted_file_is_missing_rows_and_the_rest_is_still_verified(export: Path) -> None:
    # It was exit 9 (export_error) with advice to export again: the evidence replaced.
    gone = files_of(export, TOPICS.decisions)[0]
    gone.unlink()
    report = verify(export)
    said = [p for p in report.problems if p.found.endswith("is listed in the manifest but gone")]
    assert [p.kind for p in said] == ["missing"], [str(p) for p in report.problems]
    assert said[0].found.startswith(str(gone.relative_to(export)))
    assert "row(s), offsets" in said[0].expected
    assert str(said[0]).startswith(f"missing: file {gone.relative_to(export).as_posix()} is ")
    assert 0 < report.records < 40  # the other files were verified


@pytest.mark.parametrize("topic", [TOPICS.decisions, TOPICS.chain_checkpoints])
def test_a_truncated_file_is_altered_rows(export: Path, topic: str) -> None:
    damaged = files_of(export, topic)[0]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    report = verify(export)
    said = [p for p in report.problems if "is not a whole Parquet file" in p.found]
    assert [(p.kind, p.topic) for p in said] == [("altered", topic)]
    assert said[0].found.startswith(str(damaged.relative_to(export)))


def test_audit_verify_says_a_deleted_file_with_exit_11_and_json(export: Path) -> None:
    from click.testing import CliRunner

    from ledger.cli.app import cli

    files_of(export, TOPICS.decisions)[-1].unlink()
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export), "--json"])
    assert done.exit_code == 11, done.output
    found = [p["found"] for p in json.loads(done.stdout)["problems"]]
    assert any(f.endswith("is listed in the manifest but gone") for f in found), found


def _sql_count(export: Path, where: str) -> int:
    from ledger.audit.sql import connect, run_sql

    con = connect(export)
    try:
        return int(run_sql(con, f"SELECT count(*) FROM decisions WHERE {where}").rows[0][0])
    finally:
        con.close()


def test_a_footer_forged_to_hide_a_row_from_sql_is_altered(export: Path) -> None:
    """A red team's finding: footer statistics rewritten so that DuckDB skips a row group hid
    a decision from every filtered query, while its row and record stayed genuine and both
    verifiers passed. The file is now altered, and its rows are still verified."""
    path = files_of(export, TOPICS.decisions)[0]
    hidden = hide_in_footer(path, 1, ["event_id", "resource"])
    assert _sql_count(export, f"decision_id = '{hidden['event_id']}'") == 0  # the forgery works
    assert _sql_count(export, f"resource = '{hidden['resource']}'") == 0
    report = verify(export)
    [problem] = report.problems
    assert (problem.kind, problem.subject, problem.topic) == ("altered", "file", TOPICS.decisions)
    assert problem.found.startswith(str(path.relative_to(export)))
    assert "has a footer its data does not bear out (row group 1, column " in problem.found
    assert "SQL filtering on record can skip rows" in problem.found  # the column it is about
    assert report.records == 40  # every row still read and proven


def test_a_page_index_the_exporter_never_writes_is_altered(export: Path) -> None:
    path = files_of(export, TOPICS.chain_checkpoints)[0]
    pq.write_table(pq.read_table(path), path, write_page_index=True)
    [problem] = verify(export).problems
    assert problem.kind == "altered" and "has a page index" in problem.found


def test_a_file_declaring_more_than_the_exporter_writes_is_altered_unread(
    ledger: Ledger, export: Path
) -> None:
    """A red team's finding: one row's resource of 100 MB of ``r`` (17 KB on disk, zstd) had
    `audit verify` take 1.8 GB and 8.5 s to name the row. What the file declares is now held to
    what the exporter writes (a row's columns at most 16 times its record's bytes) before a page is decompressed: the file
    is altered and its rows are not read."""
    target = chain_row(ledger, "a", 5)
    tamper(export, target.event_id, lambda r: {**r, "resource": "r" * 9_000_000})
    report = verify(export)
    files = [p for p in report.problems if p.subject == "file"]
    assert len(files) == 1, [str(p) for p in report.problems]
    assert (files[0].kind, files[0].topic) == ("altered", TOPICS.decisions)
    assert "is not a file the exporter writes (row group 0 declares 9,0" in files[0].found
    assert "bytes of columns for" in files[0].found and "more than 16 times" in files[0].found
    assert all(p.decision_id != target.event_id or p.subject == "file" for p in report.problems)


def test_a_row_group_is_held_to_its_footer_a_batch_at_a_time(
    export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row group may hold 16,384 rows of a megabyte's record each: the footer check read it
    whole (``read_row_group``). It reads it a few rows at a time, and finds the same."""
    from ledger.audit import footer

    def whole(*_: Any, **__: Any) -> Any:
        raise AssertionError("a row group read whole")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", whole)
    monkeypatch.setattr(footer, "_BATCH", 2)
    assert verify(export).intact
    path = files_of(export, TOPICS.decisions)[0]
    hide_in_footer(path, 1, ["event_id", "resource"])
    [problem] = verify(export).problems
    assert "has a footer its data does not bear out (row group 1, column " in problem.found


def test_an_honest_rewrite_of_a_file_keeps_its_footer_true(export: Path) -> None:
    for path in files_of(export, TOPICS.decisions):
        rewrite(path, lambda rows: rows)  # pyarrow's own statistics, other row groups
    assert verify(export).intact


def _footer_bytes(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Rewrite the Thrift footer of the Parquet file at ``path`` with ``change`` (same length)."""
    data = bytearray(path.read_bytes())
    (size,) = struct.unpack("<I", bytes(data[-8:-4]))
    start = len(data) - 8 - size
    footer = change(bytes(data[start:-8]))
    assert len(footer) == size
    data[start:-8] = footer
    path.write_bytes(bytes(data))


def test_a_footer_naming_another_writer_to_hide_its_statistics_is_altered(export: Path) -> None:
    """A reviewer's finding: pyarrow withholds the text statistics of files an old parquet-mr
    wrote, DuckDB does not: renamed so, a forged footer passed the check."""
    path = files_of(export, TOPICS.decisions)[0]
    hidden = hide_in_footer(path, 1, ["event_id", "resource"])

    def old_writer(footer: bytes) -> bytes:
        at = footer.index(b"parquet-cpp-arrow version ")
        end = footer.index(b")", at) + 1 if b")" in footer[at : at + 80] else at + 32
        name = footer[at:end]
        return footer.replace(name, b"parquet-mr version 1.7.0".ljust(len(name), b" ")[: len(name)])

    _footer_bytes(path, old_writer)
    assert _sql_count(export, f"decision_id = '{hidden['event_id']}'") == 0
    [problem] = verify(export).problems
    assert problem.kind == "altered"
    assert " was rewritten by another program ('parquet-mr version 1.7.0" in problem.found
    assert "SQL filtering on topic, partition, offset," in problem.found  # its columns, named


def test_a_column_of_a_type_the_exporter_never_writes_is_altered_not_a_crash(export: Path) -> None:
    # A reviewer's finding: a column rewritten as date32 raised TypeError out of audit verify.
    import pyarrow as pa

    path = files_of(export, TOPICS.decisions)[0]
    table = pq.read_table(path)
    at = table.schema.get_field_index("partition")
    pq.write_table(table.set_column(at, "partition", table.column(at).cast(pa.date32())), path)
    problems = verify(export).problems
    assert any(p.kind == "altered" and "column partition is date32" in p.found for p in problems), [
        str(p) for p in problems
    ]


def test_statistics_the_two_readers_read_differently_are_a_lie() -> None:
    # One side only (a maximum with its minimum's field renumbered away: pyarrow then reads
    # neither, DuckDB the maximum), or statistics only DuckDB reads: not checkable, so refused.
    from ledger.audit.footer import _disagreement

    class Stats:
        has_min_max = False
        null_count = 0

    seen = (None, "150", None, None, "150", "150", "0", None, None, None)
    assert "one side only" in str(_disagreement(Stats(), seen))
    both = ("1", "150", "1", "1", "150", "150", "0", None, None, None)
    assert "DuckDB reads and pyarrow does not" in str(_disagreement(Stats(), both))
    assert "bloom filter" in str(_disagreement(Stats(), (*both[:7], 4, None, None)))
    differ = ("1", "150", "1", "9", "150", "150", "0", None, None, None)
    assert "two different minimums" in str(_disagreement(Stats(), differ))


def test_column_chunks_where_two_readers_would_read_different_bytes_are_a_lie() -> None:
    # A red team's forgery: data_page_offset at a forged chunk (what pyarrow reads and the
    # statistics describe), dictionary_page_offset after it at the genuine one (what DuckDB
    # reads): filtered queries skipped genuine rows and both verifiers passed.
    from types import SimpleNamespace

    from ledger.audit.footer import _layout

    def chunk(dictionary: int | None, data: int, size: int) -> Any:
        return SimpleNamespace(
            num_values=3,
            has_dictionary_page=dictionary is not None,
            dictionary_page_offset=dictionary,
            data_page_offset=data,
            total_compressed_size=size,
        )

    assert _layout(chunk(4, 40, 100), 4) == (None, 104)  # as the exporter writes it
    assert _layout(chunk(None, 104, 50), 104) == (None, 154)
    forged, _ = _layout(chunk(4421, 4, 200), 4)
    assert forged == ": its dictionary page (4421) is not before its data pages (4)"
    assert _layout(chunk(2, 40, 100), 4)[0] is not None  # inside the magic bytes
    assert _layout(chunk(None, 50, 10), 104)[0] == " overlaps the column chunk before it"
    empty = SimpleNamespace(num_values=0, has_dictionary_page=True, data_page_offset=0)
    assert _layout(empty, 104) == (None, 104)  # an empty chunk has no page to place


def test_the_data_as_duckdb_reads_it_is_held_to_the_footer_too(export: Path) -> None:
    # Defence in depth for the forgery above: whatever bytes DuckDB reads, the reader queries
    # trust, must bear the statistics out as pyarrow's reading does.
    from ledger.audit.footer import _as_duckdb_reads_data

    for path in [*files_of(export, TOPICS.decisions), *files_of(export, TOPICS.chain_checkpoints)]:
        assert _as_duckdb_reads_data(str(path), None, pq.ParquetFile(path)) is None, path
    path = files_of(export, TOPICS.decisions)[0]
    hide_in_footer(path, 1, ["event_id"])
    found = _as_duckdb_reads_data(str(path), None, pq.ParquetFile(path))
    assert found is not None and str(found).startswith("row group 1, column "), found
    assert "the data as DuckDB reads it holds" in str(found)


def _long_records_file(path: Path) -> Any:
    """A dead-letters file as the exporter writes it, whose first row group's greatest record
    is over the writer's 4 KiB statistics limit: its statistics keep the minimum alone."""
    import datetime as dt

    import pyarrow as pa

    from ledger.audit.rows import topic_formats

    schema = topic_formats(TOPICS)[TOPICS.dead_letters].schema

    def column(field: Any) -> list[Any]:
        if field.name == "record":
            return [bytes([200 + k]) * (5000 if k == 1 else 10) for k in range(4)]
        if pa.types.is_timestamp(field.type):
            return [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * 4
        if pa.types.is_string(field.type):
            return [f"s{k}" for k in range(4)]
        if pa.types.is_integer(field.type):
            return list(range(4))
        return [None] * 4

    table = pa.Table.from_arrays([pa.array(column(f), f.type) for f in schema], schema=schema)
    pq.write_table(table, path, compression="zstd", write_statistics=True, row_group_size=2)
    return pq.ParquetFile(path).metadata.row_group(0).column(schema.get_field_index("record"))


def test_a_long_value_the_writer_keeps_one_side_of_is_true_to_its_data(tmp_path: Path) -> None:
    # A review: the writer leaves out a statistic over 4 KiB (a 1 MB request's facts, a long
    # record), keeping the other side, which DuckDB trusts; the check called every such
    # genuine file altered. The side kept is now held to the data as DuckDB reads it.
    from ledger.audit.footer import footer_lie

    path = tmp_path / "long.parquet"
    record = _long_records_file(path)
    assert not record.statistics.has_min_max  # pyarrow reads neither side
    assert footer_lie(str(path)) is None

    def raised_minimum(footer: bytes) -> bytes:  # claims more than the least record holds
        assert footer.count(bytes([200]) * 10) == 1
        return footer.replace(bytes([200]) * 10, bytes([201]) * 10)

    _footer_bytes(path, raised_minimum)
    lie = footer_lie(str(path))
    assert lie is not None and "row group 0, column record: its statistics' minimum alone" in str(
        lie
    ), lie


def test_an_empty_file_has_a_true_footer(tmp_path: Path) -> None:
    # The same review: a file of no rows (no row group, or one empty) read as altered, or broke
    # the DuckDB check's SQL.
    from ledger.audit.footer import footer_lie
    from ledger.audit.rows import topic_formats

    schema = topic_formats(TOPICS)[TOPICS.dead_letters].schema
    empty = tmp_path / "empty.parquet"
    pq.write_table(schema.empty_table(), empty, compression="zstd", write_statistics=True)
    assert footer_lie(str(empty)) is None
    groupless = tmp_path / "groupless.parquet"
    pq.ParquetWriter(groupless, schema).close()
    assert footer_lie(str(groupless)) is None


def _mark_incomplete(export: Path) -> None:
    """The manifest as a run killed after a flush mid-run leaves it."""
    manifest = export / "_manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "complete": False}))


def test_an_export_stopped_part_way_is_incomplete_exit_9_not_intact(export: Path) -> None:
    """An auditor's walkthrough: an export killed part-way (requests, no decisions yet) was
    "0 decision(s) …: intact", exit 0. It is not tampering: export again, then verify."""
    from click.testing import CliRunner

    from ledger.cli.app import cli

    _mark_incomplete(export)
    report = verify(export)
    assert report.intact and not report.complete
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
    assert done.exit_code == 9, done.output
    assert "incomplete (the export stopped part-way)" in done.stdout
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: incomplete: ") and line.endswith("[export_error]")
    assert f"`ledger export --out {export}` again" in line
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export), "--json"])
    assert done.exit_code == 9 and json.loads(done.stdout)["complete"] is False


# --------------------------------------------------------------------------- what the export lacks


def _edit_manifest(export: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = export / "_manifest.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _gut(export: Path, *topics: str) -> None:
    """A red team's deletion: ``topics``' folders gone, and every trace of them in the manifest."""

    def drop(document: dict[str, Any]) -> None:
        document["files"] = [f for f in document["files"] if f["topic"] not in topics]
        for topic in topics:
            document["offsets"].pop(topic, None)

    for topic in topics:
        shutil.rmtree(export / f"topic={topic}")
    _edit_manifest(export, drop)


def test_an_export_gutted_of_its_decisions_has_its_requests_missing(tmp_path: Path) -> None:
    """An auditor's walkthrough: with the decisions and checkpoints folders deleted and their
    manifest entries removed, `audit verify` said "0 decision(s) …: intact" (exit 0)."""
    from click.testing import CliRunner

    from ledger.cli.app import cli

    export = build(requests=True).export(tmp_path / "export")
    assert verify(export).intact  # every request is answered
    _gut(export, TOPICS.decisions, TOPICS.chain_checkpoints)
    report = verify(export)
    assert (report.records, report.checkpoints) == (0, 0)
    [problem] = report.problems
    assert (problem.kind, problem.subject, problem.decision_id) == ("missing", "request", "r-000")
    assert (problem.topic, problem.partition, problem.offset) == (TOPICS.evaluation_requests, 0, 0)
    assert problem.found.startswith("40 request(s) of this partition received before ")
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
    assert done.exit_code == 11, done.output
    assert "NOT intact" in done.stdout and "missing: request r-000" in done.stderr
    # Only unanswered requests: an evaluator's outage leaves the same, and the advice says so
    # (an auditor's walkthrough: an outage read as tampering, in tampering's words).
    assert "an evaluator that was down when they were sent leaves exactly this" in done.stdout
    assert "decisions_answered_late" in done.stdout and "as evidence" not in done.stdout


def _asked(n: int, at: datetime, offset: int) -> Exported:
    stamp = int(at.timestamp() * 1000)
    return Exported(
        TOPICS.evaluation_requests, 0, offset, stamp, None, CODEC.encode(request(n, at))
    )


def test_the_newest_requests_and_dead_lettered_ones_need_no_decision(tmp_path: Path) -> None:
    # A healthy export of a live ledger passes: the newest requests' decisions may have been
    # written after the export read the decisions; a request dead-lettered has its answer.
    from ledger.core.events import DeadLetter

    ledger = build(requests=True)
    late = T0 + timedelta(minutes=5)
    letter = DeadLetter(
        event_id="l-1",
        occurred_at=T0,
        actor="service:evaluator",
        source_topic=TOPICS.evaluation_requests,
        partition=0,
        offset=40,
        key=None,
        value=b"",
        code="id_too_long",
        reason="too long",
    )
    records = [
        *ledger.records,
        _asked(900, T0 + timedelta(seconds=30), 40),  # dead-lettered
        _asked(901, late, 41),  # not yet answered
        Exported(TOPICS.dead_letters, 0, 0, int(T0.timestamp() * 1000), None, CODEC.encode(letter)),
    ]
    export = tmp_path / "export"
    write_export(export, records, TOPICS)

    def read_at(when: datetime) -> None:
        _edit_manifest(export, lambda d: d.update(read_at=when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))

    read_at(late + timedelta(seconds=59))
    assert verify(export).intact, [str(p) for p in verify(export).problems]
    # ... and said to be unchecked (an auditor's walkthrough: "intact" said nothing of them).
    assert verify(export).recent == 1
    from click.testing import CliRunner

    from ledger.cli.app import cli

    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
    assert done.exit_code == 0, done.output
    assert "(1 request(s) and decision(s) the broker received in the minute before" in (done.stdout)
    read_at(late + timedelta(seconds=61))  # a minute on, it should have been answered
    [problem] = verify(export).problems
    assert (problem.kind, problem.decision_id, problem.offset) == ("missing", "r-901", 41)
    assert problem.found.startswith("1 request(s)")


def test_a_read_time_moved_back_does_not_excuse_requests_the_broker_stamped_later(
    tmp_path: Path,
) -> None:
    # A red team: with a request's decision deleted, `read_at` moved back before the request
    # (or made null, `updated_at` text) turned the "every request answered" check off: intact.
    # The broker stamped every exported request before the export read the topics.
    from click.testing import CliRunner

    from ledger.cli.app import cli

    ledger = build(requests=True)
    late = T0 + timedelta(minutes=5)
    records = [
        *ledger.records,
        _asked(901, late - timedelta(minutes=3), 40),  # its decision "deleted"
        _asked(902, late, 41),  # the newest request, within the minute of grace
    ]
    export = tmp_path / "export"
    write_export(export, records, TOPICS)

    def manifest(read_at: str | None, updated_at: str) -> None:
        _edit_manifest(export, lambda d: d.update(read_at=read_at, updated_at=updated_at))

    def stamp(when: datetime) -> str:
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    manifest(stamp(late - timedelta(minutes=4)), stamp(late))  # before r-901, within the slack
    [problem] = verify(export).problems
    assert (problem.kind, problem.decision_id) == ("missing", "r-901")
    manifest(stamp(late - timedelta(minutes=6)), stamp(late))  # the broker's stamps contradict it
    missing, altered = verify(export).problems  # in time order
    assert (altered.kind, altered.subject, altered.offset) == ("altered", "request", 41)
    assert altered.found.startswith("received by the broker at ")
    assert "after the manifest's read_at" in altered.found
    assert missing.decision_id == "r-901"
    manifest(None, stamp(late - timedelta(minutes=6)))  # an older manifest's updated_at: the same
    assert [p.kind for p in verify(export).problems] == ["missing", "altered"]
    manifest(None, "soon")
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
    assert done.exit_code != 0 and "updated_at 'soon' is not a time" in done.stderr, done.output


def test_a_deleted_file_is_tampering_even_when_the_manifest_says_incomplete(
    export: Path,
) -> None:
    # A red team: `"complete": false` turned a listed file deleted (exit 11) into "incomplete:
    # export again" (exit 9), into the directory holding the evidence. A stopped export leaves
    # topics ending at different points, never a listed file gone.
    from click.testing import CliRunner

    from ledger.cli.app import cli

    files_of(export, TOPICS.chain_checkpoints)[0].unlink()
    _mark_incomplete(export)
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
    assert done.exit_code == 11, done.output
    assert "[tamper_detected]" in done.stderr and "incomplete:" not in done.stderr


def test_a_deleted_grant_revocation_the_decisions_cite_is_missing(export: Path) -> None:
    """An auditor's walkthrough: the newest GrantRevoked row removed from the grant-events
    Parquet (rewritten with pyarrow) and the manifest's offsets lowered passed both verifiers.
    The decisions, hash-chained, cite the grant events they were decided at."""
    [path] = files_of(export, TOPICS.grant_events)
    rewrite(path, lambda rows: [r for r in rows if r["event_type"] != "GrantRevoked"])

    def lower(document: dict[str, Any]) -> None:
        document["offsets"][TOPICS.grant_events]["0"] = 1
        for entry in document["files"]:
            if entry["topic"] == TOPICS.grant_events:
                entry["last_offset"], entry["rows"] = 0, 1

    _edit_manifest(export, lower)
    [problem] = verify(export).problems
    assert (problem.kind, problem.subject) == ("missing", "governance record")
    assert (problem.topic, problem.partition, problem.offset) == (TOPICS.grant_events, 0, 1)
    assert problem.found.startswith(
        f"40 decision(s) cite {TOPICS.grant_events}/0 up to offset 1 (the first: decision d-"
    )
    assert problem.found.endswith("but the export holds only up to offset 0")


def _answered_grant(ledger: Ledger, out: Path) -> Path:
    """``ledger``'s export with one grant more, issued after every decision (grant event 2, no
    decision cites it), and the command processor's answers naming it: accepted, then the
    same command's answer again (``already_applied``, delivered twice across a crash)."""
    command = IssueGrant(
        event_id="c-late",
        occurred_at=T0,
        actor="human:admin",
        grant_id="g-late",
        principal="agent:other",
        actions=("refund.issue",),
        resource="*",
    )
    later = T0 + timedelta(seconds=5)  # the same date folder as the other grant events
    events = decide(
        EMPTY_STATE, command, now=later, new_id=lambda: "e-late", admins={"human:admin"}
    )
    assert isinstance(events, tuple)
    answers = [
        command_result(command, events, event_id="a-1", now=later),
        already_applied(command, ("e-late",), event_id="a-2", now=later + timedelta(seconds=1)),
    ]
    stamp = int(later.timestamp() * 1000)
    extra = [Exported(TOPICS.grant_events, 0, 2, stamp, None, CODEC.encode(events[0]))]
    extra += [
        Exported(TOPICS.command_results, 0, n, stamp, b"c-late", CODEC.encode(answer))
        for n, answer in enumerate(answers)
    ]
    write_export(out, ledger.records + extra, TOPICS)
    return out


def test_a_deleted_grant_event_no_decision_cites_is_missing_by_its_answer(
    ledger: Ledger, tmp_path: Path
) -> None:
    """An auditor's walkthrough: the newest GrantRevoked removed, with the manifest's rows and
    offsets lowered, before any decision cited it: both verifiers said intact, and `grants_of`
    showed the grant in force. The accepted command's answer still named the event."""
    export = _answered_grant(ledger, tmp_path / "export")
    assert verify(export).intact  # every event the answers name is there, a repeat's too
    [path] = files_of(export, TOPICS.grant_events)
    rewrite(path, lambda rows: [r for r in rows if r["offset"] != 2])

    def lower(document: dict[str, Any]) -> None:
        document["offsets"][TOPICS.grant_events]["0"] = 2
        for entry in document["files"]:
            if entry["topic"] == TOPICS.grant_events:
                entry["last_offset"], entry["rows"] = 1, 2

    _edit_manifest(export, lower)
    first, second = verify(export).problems
    for problem in (first, second):
        assert (problem.kind, problem.subject) == ("missing", "governance record")
        assert problem.decision_id == "e-late"
    assert (first.topic, first.partition, first.offset) == (TOPICS.command_results, 0, 0)
    assert first.found == (
        "the accepted IssueGrant c-late (agent:other) names 1 governance event(s) the export "
        "does not hold, this one the first"
    )
    assert "the newest deleted with the manifest's offsets lowered" in first.expected
    # The readers that answer from the export say so too (the walkthrough: `grants_of`,
    # `decisions_under_ended_grants` and `replay --at` answered as if it had not been revoked).
    from click.testing import CliRunner

    from ledger.cli.app import cli

    lacks = (
        f"note: {export} lacks governance records: {TOPICS.command_results} partition 0 "
        "offset 0: the accepted IssueGrant c-late names 1 governance event(s) not in the "
        "export, the first e-late ("
    )
    for args in (
        ["audit", "run", "grants_of", "--param", "principal=agent:other", "--param", f"at={T0}"],
        ["audit", "run", "decisions_under_ended_grants"],
        ["replay", "--at", str(T0)],
    ):
        answered = CliRunner().invoke(cli, [*args, "--from", str(export)])
        assert answered.exit_code == 0, (args, answered.output)
        assert lacks in answered.stderr, args
    # A review: an event_ids cell set to text made the check's CAST fail, and verify stopped
    # with query_failed, reporting nothing; the cell is now altered, beside the rest.
    import shutil

    celled = shutil.copytree(export, tmp_path / "celled")
    [answers] = files_of(celled, TOPICS.command_results)

    def text_cell(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in rows:
            r["event_ids"] = '"e-late"'
        return rows

    rewrite(answers, text_cell)
    kinds = {problem.kind for problem in verify(celled).problems}
    assert "altered" in kinds, kinds
    # An export stopped part-way may have read the answers further than the events.
    _mark_incomplete(export)
    report = verify(export)
    assert not report.complete and report.problems == ()


def test_a_file_rewritten_by_duckdb_is_named_as_such_with_its_columns(export: Path) -> None:
    """An auditor's walkthrough: a file rewritten with DuckDB's COPY was headlined "has a footer
    its data does not bear out (written by 'DuckDB …' …): SQL filtering on that column can skip
    rows", no column named; and whole-file problems printed as `file at …[None]@None`."""
    import duckdb

    path = files_of(export, TOPICS.chain_checkpoints)[0]
    copy = path.with_name("copy.parquet")
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{path}', hive_partitioning = false)) "
            f"TO '{copy}' (FORMAT parquet)"
        )
    finally:
        con.close()
    copy.replace(path)
    [problem] = verify(export).problems
    relative = path.relative_to(export).as_posix()
    assert problem.found.startswith(f"{relative} was rewritten by another program ('DuckDB")
    assert "not the exporter: its footer is not checked, and SQL filtering on " in problem.found
    assert "chain_id, chain_seq" in problem.found
    assert str(problem).startswith(f"altered: file {relative} was rewritten by another program")
    assert "None" not in str(problem)


def test_an_unlisted_file_names_itself_not_none_coordinates(export: Path) -> None:
    planted = files_of(export, TOPICS.decisions)[0].with_name("v.ledger.decisions+0+999.parquet")
    shutil.copy(files_of(export, TOPICS.decisions)[0], planted)
    [problem] = verify(export).problems
    relative = planted.relative_to(export).as_posix()
    assert str(problem).startswith(f"inserted: file {relative} is in the export's folders but ")
    assert "[None]@None" not in str(problem)


def test_a_flush_killed_before_its_manifest_is_incomplete_not_tampering(export: Path) -> None:
    # A review: a run killed between writing a flush's files and its manifest leaves a file the
    # manifest does not list; with "complete": false written by its earlier flush, that is an
    # interrupted export (exit 9), not tampering.
    from click.testing import CliRunner

    from ledger.cli.app import cli

    _mark_incomplete(export)
    listed = files_of(export, TOPICS.decisions)[0]
    shutil.copy(listed, listed.with_name(listed.name.replace(".parquet", "-next.parquet")))
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
    assert done.exit_code == 9, done.output


def _export_in_flushes(ledger: Ledger, out: Path, *cuts: int) -> Path:
    """``ledger`` exported by runs ending at decision offsets ``cuts``: several files per
    partition and date, as a long or `--follow` export leaves them."""
    ends = [*cuts, None]
    starts = [0, *cuts]
    for start, end in zip(starts, ends, strict=True):
        write_export(
            out,
            [
                r
                for r in ledger.records
                if (r.topic != TOPICS.decisions and start == 0)
                or (
                    r.topic == TOPICS.decisions
                    and r.offset >= start
                    and (end is None or r.offset < end)
                )
            ],
            TOPICS,
        )
    return out


def test_a_file_deleted_between_listed_ones_is_tampering_even_when_marked_incomplete(
    ledger: Ledger, tmp_path: Path
) -> None:
    # An auditor's walkthrough: a decisions file from the middle of a partition deleted, its
    # manifest entry dropped and "complete": false set gave exit 9 ("incomplete: … may come
    # from that: run ledger export again"). A stopped export leaves a partition's newest
    # records unlisted, never a gap with later offsets listed after it.
    from click.testing import CliRunner

    from ledger.cli.app import cli

    export = _export_in_flushes(ledger, tmp_path / "export", 4, 8)
    [middle] = [f for f in files_of(export, TOPICS.decisions) if f.name.endswith("+0+4.parquet")]
    relative = middle.relative_to(export).as_posix()
    middle.unlink()

    def drop(document: dict[str, Any]) -> None:
        document["files"] = [f for f in document["files"] if f["path"] != relative]
        document["complete"] = False

    _edit_manifest(export, drop)
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
    assert done.exit_code == 11, done.output
    assert "[tamper_detected]" in done.stderr and "incomplete:" not in done.stderr
    report = verify(export)
    assert not report.complete and report.beyond_interruption
    assert first(report).kind == "missing"


def test_the_newest_rows_of_a_partition_unlisted_stay_incomplete(
    ledger: Ledger, tmp_path: Path
) -> None:
    # What a stopped export does leave: a partition's newest records not yet exported (here
    # partition 0's last run), its chains then missing their newest records.
    export = _export_in_flushes(ledger, tmp_path / "export", 4, 8)
    [last] = [f for f in files_of(export, TOPICS.decisions) if f.name.endswith("+0+8.parquet")]
    relative = last.relative_to(export).as_posix()
    last.unlink()

    def drop(document: dict[str, Any]) -> None:
        document["files"] = [f for f in document["files"] if f["path"] != relative]
        document["offsets"][TOPICS.decisions]["0"] = 8
        document["complete"] = False

    _edit_manifest(export, drop)
    report = verify(export)
    assert not report.intact and not report.beyond_interruption


def test_a_governance_event_deleted_from_the_middle_of_its_log_is_missing(
    export: Path,
) -> None:
    """An auditor's walkthrough: a policy event deleted from the middle of the policy log (its
    Parquet file rewritten, the manifest's rows too) passed `audit verify`, and every
    point-in-time answer after it was wrong; only `ledger actor verify` saw the gap."""
    from click.testing import CliRunner

    from ledger.cli.app import cli

    [path] = files_of(export, TOPICS.policy_events)
    rewrite(path, lambda rows: [r for r in rows if r["offset"] != 1])  # the approval
    _edit_manifest(
        export,
        lambda d: [
            e.update(rows=e["rows"] - 1) for e in d["files"] if e["topic"] == TOPICS.policy_events
        ],
    )
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
    assert done.exit_code == 11, done.output
    report = verify(export)
    gap, cited = report.problems
    assert (gap.kind, gap.subject, gap.topic, gap.partition, gap.offset) == (
        "missing",
        "governance record",
        TOPICS.policy_events,
        0,
        1,
    )
    assert gap.found == "no rows for offset 1, though the log goes on after it"
    assert (cited.kind, cited.offset) == ("missing", 1)
    assert cited.found.endswith(
        "but the export holds no record at offset 1 (it holds offsets up to 2)"
    )
    # The readers that answer from the export say so too (an auditor's walkthrough: with a
    # canary deleted, `active_policies_at` and `replay --at` answered on, exit 0, wrongly).
    lacks = f"note: {export} lacks governance records: {TOPICS.policy_events} partition 0: "
    for args in (
        ["audit", "sql", "SELECT count(*) AS n FROM decisions"],
        ["audit", "run", "rollbacks"],
        ["replay"],
    ):
        answered = CliRunner().invoke(cli, [*args, "--from", str(export)])
        assert answered.exit_code == 0, (args, answered.output)
        assert lacks + "offsets 1-1 are missing; what the ledger held after them" in (
            answered.stderr
        ), args
        assert "run `ledger audit verify --from" in answered.stderr
    _mark_incomplete(export)  # no stopped export leaves a gap with records after it
    assert verify(export).beyond_interruption


def test_the_newest_governance_rows_gone_below_the_manifests_offset_are_missing(
    export: Path,
) -> None:
    [path] = files_of(export, TOPICS.grant_events)
    rewrite(path, lambda rows: rows[:-1])
    problems = verify(export).problems
    assert [(p.kind, p.subject, p.offset) for p in problems] == [
        ("missing", "governance record", 1),
        ("missing", "governance record", 1),
    ]
    assert "the export's manifest says 2 comes next" in problems[0].expected
    from click.testing import CliRunner

    from ledger.cli.app import cli

    answered = CliRunner().invoke(cli, ["audit", "run", "rollbacks", "--from", str(export)])
    assert answered.exit_code == 0, answered.output
    assert f"{TOPICS.grant_events} partition 0: offsets 1-1 are missing (the manifest says 2 " in (
        answered.stderr
    )


def test_files_a_running_export_has_not_listed_yet_are_not_inserted(export: Path) -> None:
    """An auditor's walkthrough: `audit verify` while `ledger export --follow` wrote the export
    said "inserted: file … is in the export's folders but not in its manifest" (exit 11): a
    flush writes its files before the manifest that lists them."""
    import os

    from click.testing import CliRunner

    from ledger.audit.folder import DirectoryLock
    from ledger.cli.app import cli

    listed = files_of(export, TOPICS.decisions)[0]
    flushing = listed.with_name("v.ledger.decisions+0+900.parquet")
    shutil.copy(listed, flushing)  # a flush's file, its manifest not yet written
    top = os.open(export, os.O_RDONLY | os.O_DIRECTORY)
    lock = DirectoryLock(export, top)  # the running export's
    try:
        done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
        assert done.exit_code == 0, done.output
        assert done.stderr.strip() == (
            f"note: 1 file(s) a running export (pid {os.getpid()}) wrote after the manifest "
            "this verification read were not verified (a flush in progress): verify again "
            "once it has stopped"
        )
        report = verify(export)
        assert report.intact and report.writer_running
        assert (report.unverified_files, report.writer_pid) == (1, os.getpid())
        # A review: any unlisted file passed as the running export's, for as long as a
        # `--follow` ran. One of offsets the manifest already has, not a merge's, is planted.
        planted = listed.with_name("v.ledger.decisions+0+1.parquet")
        shutil.copy(listed, planted)
        report = verify(export)
        assert report.unverified_files == 1 and not report.intact
        assert [(p.kind, p.subject) for p in report.problems] == [("inserted", "file")]
        planted.unlink()
    finally:
        lock.release()
        os.close(top)
    # No export running: a file no manifest lists is inserted.
    [problem] = verify(export).problems
    assert (problem.kind, problem.subject) == ("inserted", "file")
    (export / ".export.lock").write_text("4242\n")  # left by a writer that died: not held
    assert not verify(export).intact


def test_files_a_newer_manifest_lists_are_not_inserted(
    export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The export run flushed (files, then manifest) and stopped while this verification ran:
    # its files are not in the manifest verified, but the one there now lists them.
    from click.testing import CliRunner
    from export_format import rejected

    import ledger.audit.verify as verifying
    from ledger.audit.export import write_events
    from ledger.audit.sources import read_export_manifest
    from ledger.cli.app import cli

    read_first = read_export_manifest(export)
    write_events(export, TOPICS, [(TOPICS.command_results, rejected(0, T0))])  # the flush
    reads = iter([read_first])
    monkeypatch.setattr(
        verifying,
        "read_export_manifest",
        lambda path: next(reads, None) or read_export_manifest(path),
    )
    report = verify(export)
    assert report.intact and report.unverified_files == 1 and not report.writer_running
    reads = iter([read_first])
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
    assert done.exit_code == 0, done.output
    assert done.stderr.strip() == (
        "note: 1 file(s) an export run wrote after the manifest this verification read were "
        "not verified (it flushed meanwhile): verify again"
    )


def test_a_chain_decided_for_long_without_a_checkpoint_has_its_checkpoints_missing(
    tmp_path: Path,
) -> None:
    """An auditor's walkthrough: every `ledger.chain-checkpoints` file deleted, with its manifest
    entries and offsets, verified "27807 decision(s) in 1 chain(s), 0 checkpoint(s): intact;
    27807 after their chain's last checkpoint". A running evaluator checkpoints its chain
    within seconds of each decision; one that could not write a checkpoint stops."""
    from click.testing import CliRunner

    from ledger.cli.app import cli

    ledger = build(every=timedelta(seconds=20))  # 13 minutes of decisions
    export = ledger.export(tmp_path / "export")
    assert verify(export).intact  # its unconfirmed tails are within the slack
    _gut(export, TOPICS.chain_checkpoints)
    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(export)])
    assert done.exit_code == 11, done.output
    assert "error: missing: checkpoint " in done.stderr and "checkpoints missing: " in done.stderr
    report = verify(export)
    found = {p.chain_id: p for p in report.problems}
    assert set(found) == {"evaluator-a/n1", "evaluator-b/n2"}
    assert verify(export, workers=2).problems == report.problems  # each worker its chains
    a = found["evaluator-a/n1"]
    assert (a.kind, a.subject, a.chain_seq) == ("missing", "checkpoint", 1)
    assert f"(decision {chain_row(ledger, 'a', 1).event_id}) to " in a.found
    assert str(a).startswith(f"missing: checkpoint at {TOPICS.decisions}[")
    assert a.found.startswith(
        "checkpoints missing: 26 record(s) after the chain's last checkpoint (none in the "
        "export), decided over 12 minute(s), from "
    )
    _mark_incomplete(export)  # one stopped part-way may have read the checkpoints less far
    assert verify(export).intact


def test_a_chain_whose_newest_records_follow_its_last_checkpoint_by_seconds_is_intact(
    tmp_path: Path,
) -> None:
    # The honest tail: decisions made after the last checkpoint the export read (by less than
    # a checkpoint interval, or read between the checkpoints' end offset and the decisions').
    ledger = build(every=timedelta(seconds=20))
    final = max(r.offset for r in ledger.records if r.topic == TOPICS.chain_checkpoints)
    kept = [r for r in ledger.records if (r.topic, r.offset) != (TOPICS.chain_checkpoints, final)]
    # Chain a's final checkpoint not exported: its tail after chain_seq 20 is 6 records over 3
    # minutes, as if the export had read the checkpoints that long before the decisions.
    write_export(tmp_path / "export", kept, TOPICS)
    report = verify(tmp_path / "export")
    assert report.intact, [str(p) for p in report.problems]
    assert {c.chain_id: c.unconfirmed for c in report.chains}["evaluator-a/n1"] > 0
    # An auditor's walkthrough: what such a tail means is said, where only its count was.
    from click.testing import CliRunner

    from ledger.cli.app import cli

    done = CliRunner().invoke(cli, ["audit", "verify", "--from", str(tmp_path / "export")])
    assert done.exit_code == 0, done.output
    assert "(2 chain(s) not closed by a final checkpoint, with records after their last one: " in (
        done.stdout
    )


# --------------------------------------------------------------------------- instants past year 9999

_FAR = (2**63 - 1, -(2**63), 253402300800000000)  # µs: no datetime holds them (year ≥ 10000 ...)


def _file_of(export: Path, topic: str, event_id: str) -> Path:
    return next(p for p in files_of(export, topic) if event_id in {r for r in _ids(p)})


def _ids(path: Path) -> list[str | None]:
    return [r["event_id"] for r in pq.read_table(path, columns=["event_id"]).to_pylist()]


@pytest.mark.parametrize("micros", _FAR)
def test_a_request_exported_with_an_instant_past_year_9999_is_one_problem_not_a_traceback(
    tmp_path: Path, micros: int
) -> None:
    """A red team: one request an agent sent with occurred_at 2**63-1 µs, which the evaluator
    dead-letters, was exported (before the export refused it) with its columns filled; verify
    then stopped on an OverflowError before checking any chain, on every export after it."""
    from export_format import exported_as_before

    export = build(requests=True).export(tmp_path / "export")
    exported_as_before(_file_of(export, TOPICS.evaluation_requests, "r-005"), "r-005", micros)
    report = verify(export)
    assert report.records == 40 and len(report.chains) == 2  # the chains are still verified
    [problem] = report.problems
    assert (problem.kind, problem.subject, problem.decision_id) == ("altered", "request", "r-005")
    assert (problem.topic, problem.offset) == (TOPICS.evaluation_requests, 5)
    assert "its record bytes do not decode" in problem.found and "out of range" in problem.found
    assert f"occurred_at holds {micros} µs after the epoch" in problem.found
    assert "export again" in problem.expected


def test_a_decision_column_set_past_year_9999_is_altered_and_the_chains_go_on(
    ledger: Ledger, export: Path
) -> None:
    from export_format import set_raw

    victim = chain_row(ledger, "a", 4)
    path = _file_of(export, TOPICS.decisions, victim.event_id)
    set_raw(path, lambda row: row["event_id"] == victim.event_id, "occurred_at", 2**63 - 1)
    report = verify(export)
    [problem] = report.problems  # and no gap at its chain position
    assert (problem.kind, problem.decision_id) == ("altered", victim.event_id)
    assert (problem.chain_id, problem.chain_seq) == (victim.chain_id, 4)
    assert f"occurred_at holds {2**63 - 1} µs after the epoch" in problem.found
    assert report.records == 40 and len(report.chains) == 2


def test_a_checkpoint_column_set_past_year_9999_is_altered(export: Path) -> None:
    from export_format import set_raw

    path = files_of(export, TOPICS.chain_checkpoints)[0]
    first_offset = min(r["offset"] for r in pq.read_table(path, columns=["offset"]).to_pylist())
    set_raw(path, lambda row: row["offset"] == first_offset, "occurred_at", -(2**63))
    report = verify(export)
    [problem] = [p for p in report.problems if p.subject == "checkpoint"]
    assert (problem.kind, problem.offset) == ("altered", first_offset)
    assert f"occurred_at holds {-(2**63)} µs after the epoch" in problem.found


@pytest.mark.parametrize("topic", [TOPICS.decisions, TOPICS.evaluation_requests])
def test_a_kafka_timestamp_set_past_year_9999_is_altered(tmp_path: Path, topic: str) -> None:
    from export_format import set_raw

    export = build(requests=True).export(tmp_path / "export")
    event_id = "d-007" if topic == TOPICS.decisions else "r-007"
    path = _file_of(export, topic, event_id)
    set_raw(path, lambda row: row["event_id"] == event_id, "kafka_timestamp", 253402300800000)
    report = verify(export)
    [problem] = [p for p in report.problems if p.decision_id == event_id]
    assert problem.kind == "altered" and problem.at is None
    # Read through DuckDB, which holds Kafka's milliseconds as microseconds.
    assert "kafka_timestamp holds 253402300800000000 µs after the epoch" in problem.found
    assert report.records == 40


def test_a_decision_time_past_year_9999_that_arrow_prints_as_the_true_one_is_altered(
    ledger: Ledger, export: Path
) -> None:
    """Arrow's strftime (the fast path's text of a timestamp column) writes the year of an
    instant past 9999 modulo 2**18: 262,144 years (95,746,130 days) after its true time, a
    decision's occurred_at printed as the true one, while SQL shows year 264170."""
    from export_format import set_raw

    victim = chain_row(ledger, "b", 2)
    far = (victim.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    far += 95_746_130 * 86_400_000_000
    path = _file_of(export, TOPICS.decisions, victim.event_id)
    set_raw(path, lambda row: row["event_id"] == victim.event_id, "occurred_at", far)
    [problem] = verify(export).problems
    assert (problem.kind, problem.decision_id) == ("altered", victim.event_id)
    assert f"occurred_at holds {far} µs after the epoch" in problem.found


def test_a_governance_rows_column_edited_beside_its_record_is_altered(export: Path) -> None:
    # An auditor's walkthrough: an approval's actor edited in its column (human:bob to
    # human:alice, as if a self-approval) verified "intact"; only `actor verify` saw it.
    [path] = files_of(export, TOPICS.policy_events)
    edited = {"done": False}

    def relabel(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            if row["event_type"] == "PolicyVersionApproved" and not edited["done"]:
                row["actor"], edited["done"] = "human:mallory", True
        return rows

    rewrite(path, relabel)
    assert edited["done"]
    [problem] = verify(export).problems
    assert (problem.kind, problem.topic) == ("altered", TOPICS.policy_events)
    assert "human:mallory" in problem.found


def test_a_requests_file_swapped_or_cut_is_altered_though_the_topic_has_no_chain(
    tmp_path: Path,
) -> None:
    # An auditor's walkthrough: one requests file copied over another, or a row deleted from
    # one (its manifest entry left alone), verified "intact": simulation then replayed one
    # request fewer, and 714 decisions had no request.
    cut = build(requests=True).export(tmp_path / "cut")
    path, other = files_of(cut, TOPICS.evaluation_requests)[:2]
    offsets = sorted(r["offset"] for r in pq.read_table(path).to_pylist())
    low, high, n = offsets[0], offsets[-1], len(offsets)
    rewrite(path, lambda rows: [r for r in rows if r["offset"] != offsets[1]])
    said = [p for p in verify(cut).problems if p.topic == TOPICS.evaluation_requests]
    assert [p.kind for p in said] == ["altered"], [str(p) for p in said]
    assert said[0].found.endswith(f"holds {n - 1} row(s) of partition 0, offsets {low} to {high}")
    assert said[0].expected.startswith(f"its {n} row(s) of partition 0, offsets {low} to {high}")
    shutil.copyfile(other, path)  # another file of the topic in its place
    said = [p for p in verify(cut).problems if p.topic == TOPICS.evaluation_requests]
    assert [p.kind for p in said] == ["altered"], [str(p) for p in said]
    assert f"offsets {low} to {high}, as the manifest lists" in said[0].expected
    assert f"offsets {low} to {high}" not in said[0].found


def test_two_decisions_files_swapped_between_partitions_are_altered(tmp_path: Path) -> None:
    # An auditor's walkthrough: the decisions files of partitions 0 and 1 swapped read
    # "intact" (each row keeps its own coordinates and chain), where two requests files
    # swapped did not: a file must hold the partition its manifest entry names.
    export = build().export(tmp_path / "swapped")
    assert not verify(export).problems
    by_partition: dict[int, Path] = {}
    for path in files_of(export, TOPICS.decisions):
        (partition,) = {r["partition"] for r in pq.read_table(path).to_pylist()}
        by_partition.setdefault(partition, path)
    first, second = by_partition[0], by_partition[1]
    held = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(held)
    said = [p for p in verify(export).problems if p.topic == TOPICS.decisions]
    assert sorted(p.kind for p in said) == ["altered", "altered"], [str(p) for p in said]
    assert any("of partition 1" in p.found for p in said)
    assert all("as the manifest lists" in p.expected for p in said)


def test_a_request_deleted_with_its_manifest_entry_edited_to_match_is_missing(
    tmp_path: Path,
) -> None:
    # An auditor's walkthrough (round four): a request's row deleted and its file's `rows`
    # lowered in the manifest read "intact"; only `replay --decisions` saw its request gone.
    cut = build(requests=True).export(tmp_path / "cut")
    path = files_of(cut, TOPICS.evaluation_requests)[0]
    offsets = sorted(r["offset"] for r in pq.read_table(path).to_pylist())
    rewrite(path, lambda rows: [r for r in rows if r["offset"] != offsets[1]])
    relative = path.relative_to(cut).as_posix()
    _edit_manifest(
        cut, lambda d: [e.update(rows=e["rows"] - 1) for e in d["files"] if e["path"] == relative]
    )
    said = [p for p in verify(cut).problems if p.topic == TOPICS.evaluation_requests]
    assert [(p.kind, p.subject) for p in said] == [("missing", "file")], [str(p) for p in said]
    assert said[0].found == (
        f"{relative} spans offsets {offsets[0]} to {offsets[-1]}, but 1 of them have no row in "
        "the export"
    )


def test_a_row_deleted_from_a_merged_file_is_missing_too(tmp_path: Path) -> None:
    # A review: taking such a hole for an earlier release's merge across retention's gaps let
    # the documented deletion through every merged file ("intact", exit 0). It is missing;
    # the message says what an earlier release's merge may also leave, and what to do.
    export = build(requests=True).export(tmp_path / "merged")
    path = files_of(export, TOPICS.evaluation_requests)[0]
    offsets = sorted(r["offset"] for r in pq.read_table(path).to_pylist())
    relative = path.relative_to(export).as_posix()
    rewrite(path, lambda rows: [r for r in rows if r["offset"] != offsets[1]])
    _, _, first, _ = path_parts(relative) or ("", 0, 0, None)
    merged_name = relative.replace(f"+{first}.parquet", f"+{first}~{offsets[-1]}.parquet")
    path.rename(export / merged_name)

    def as_merged(document: dict[str, Any]) -> None:
        [entry] = [e for e in document["files"] if e["path"] == relative]
        entry.update(path=merged_name, rows=entry["rows"] - 1)

    _edit_manifest(export, as_merged)
    said = [p for p in verify(export).problems if p.topic == TOPICS.evaluation_requests]
    assert [(p.kind, p.subject) for p in said] == [("missing", "file")], [str(p) for p in said]
    assert said[0].found.startswith(
        f"{merged_name} spans offsets {offsets[0]} to {offsets[-1]}, but 1"
    )
    assert "releases before 2026-12-06 merged files across them" in said[0].expected


def test_offsets_a_damaged_file_lists_are_not_missing_beside_it() -> None:
    # A review: offsets a damaged file lists were reported missing from its intact neighbour,
    # whose span they fall in (rows of one partition interleave across dates).
    from ledger.audit.verify import _less

    assert _less(0, 18, []) == 19
    assert _less(0, 18, [(1, 17)]) == 2
    assert _less(0, 18, [(1, 5), (4, 9), (30, 40)]) == 10
    assert _less(5, 9, [(0, 100)]) == 0


def test_offsets_in_no_files_span_are_no_problem(tmp_path: Path) -> None:
    # What retention between two export runs leaves: offsets no file spans (a run's first file
    # starts where the log then started). Here a file's newest rows are gone and its entry
    # spans only what is left.
    export = build(requests=True).export(tmp_path / "gap")
    path = files_of(export, TOPICS.evaluation_requests)[0]
    offsets = sorted(r["offset"] for r in pq.read_table(path).to_pylist())
    assert len(offsets) >= 2
    relative = path.relative_to(export).as_posix()
    rewrite(path, lambda rows: [r for r in rows if r["offset"] == offsets[0]])

    def cut(document: dict[str, Any]) -> None:
        [entry] = [e for e in document["files"] if e["path"] == relative]
        entry.update(rows=1, last_offset=offsets[0])

    _edit_manifest(export, cut)
    assert [p for p in verify(export).problems if p.topic == TOPICS.evaluation_requests] == []


def test_two_long_values_that_differ_late_are_shown_where_they_differ() -> None:
    # An auditor's walkthrough: a changed pre-evaluation item was shown as the same
    # 138-character start on both sides, so which item changed could not be seen.
    from ledger.audit.columns import shown_apart

    items = [{"item_id": f"i{n}", "determination": "deny"} for n in range(20)]
    changed = [dict(i) for i in items]
    changed[17]["determination"] = "allow"
    columns, record = shown_apart(changed, items)
    assert columns != record
    assert columns.startswith("…") and '"allow"' in columns and '"deny"' in record
    assert "i17" in columns and len(columns) <= 125
    assert shown_apart("short", "other") == ('"short"', '"other"')
    longer, shorter = shown_apart("x" * 300 + "tail", "x" * 300)
    assert "tail" in longer and longer != shorter


def test_a_spawned_verify_worker_holds_duckdb_to_the_callers_memory(tmp_path: Path) -> None:
    # A review: workers spawned afresh held DuckDB to its 4 GiB default, whatever
    # $LEDGER_AUDIT_MEMORY said; each worker is now handed the caller's amount.
    import concurrent.futures
    import multiprocessing

    from ledger.audit import query_memory, use_query_memory

    export = build().export(tmp_path / "x")
    files = [str(f) for f in files_of(export, TOPICS.decisions)]
    before = query_memory()
    use_query_memory("300MB")
    try:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            seen = pool.submit(_memory_in_a_worker, files, query_memory()).result()
        assert seen == "286.1 MiB"  # DuckDB's own words for 300MB
    finally:
        use_query_memory(before)


def _memory_in_a_worker(files: list[str], memory: str | None) -> str:
    from ledger.audit.sources import connect
    from ledger.audit.verify import _verify_part

    _verify_part(files, {}, True, 0, 1, None, None, memory)
    con = connect()
    try:
        (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchone() or ("",)
        return str(limit)
    finally:
        con.close()


def test_an_async_decision_that_differs_from_its_default_needs_its_correction(
    tmp_path: Path,
) -> None:
    """An auditor's walkthrough: the corrections file deleted with its manifest entry verified
    intact, though the export holds what says it must be there: an asynchronous decision that
    differs from the default its agent went ahead on is always written with a correction."""
    from ledger.core.evaluate import correction_for
    from ledger.core.events import Mode

    def async_link(d: DecisionRecorded, head: ChainHead) -> tuple[DecisionRecorded, ChainHead]:
        # Every decision asynchronous with the default allow: a deny owes its agent a correction.
        return link(dataclasses.replace(d, mode=Mode.ASYNC, default=Determination.ALLOW), head)

    ledger = build(linker=async_link)
    owed = [c for d in ledger.decisions if (c := correction_for(d)) is not None]
    assert len(owed) == 14  # the denials; an allow agrees with its default
    corrections = [
        Exported(
            TOPICS.corrections, 0, n, int(c.occurred_at.timestamp() * 1000), None, CODEC.encode(c)
        )
        for n, c in enumerate(owed)
    ]
    export = tmp_path / "export"
    write_export(export, ledger.records + corrections, TOPICS)
    assert verify(export).intact, [str(p) for p in verify(export).problems]
    # A red team: a copy sent under a request's id, decided otherwise, has a correction under
    # the same ids; it stood for the genuine one a crash had left unwritten.
    copies = tmp_path / "copies"
    write_export(
        copies,
        ledger.records
        + [
            Exported(
                TOPICS.corrections,
                0,
                n,
                int(c.occurred_at.timestamp() * 1000),
                None,
                CODEC.encode(dataclasses.replace(c, reasons=("the copy's",))),
            )
            for n, c in enumerate(owed)
        ],
        TOPICS,
    )
    assert len(verify(copies).problems) == 14, [str(p) for p in verify(copies).problems]
    _gut(export, TOPICS.corrections)
    report = verify(export)
    assert len(report.problems) == 14, [str(p) for p in report.problems]
    problem = report.problems[0]
    assert (problem.kind, problem.subject, problem.decision_id) == ("missing", "decision", "d-000")
    assert problem.found == (
        "an asynchronous decision, deny where the agent went ahead on its default allow, has no "
        "correction"
    )
    # The newest decisions' corrections may be written after the export read that topic.
    oldest = min(d.occurred_at for d in ledger.decisions)
    _edit_manifest(
        export,
        lambda d: d.update(
            read_at=(oldest + timedelta(seconds=59)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        ),
    )
    assert verify(export).intact, [str(p) for p in verify(export).problems]


def test_unchained_rows_are_read_a_file_at_a_time_in_log_order(export: Path) -> None:
    # A red team, round eight: the check of each row against its record bytes sorted a whole
    # topic's rows, bytes and all; 1,000 dead letters of 1 MB held verify past 4 GiB.
    from ledger.audit.sql import session
    from ledger.audit.verify import _log_order, _rows_in_log_order

    files = [str(p) for p in files_of(export, TOPICS.decisions)]
    assert len(files) > 2
    con = session()
    try:
        seen = [(r["partition"], r["offset"]) for r in _rows_in_log_order(con, files[::-1])]
    finally:
        con.close()
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 40
    assert _log_order("/e/topic=t/date=d/v.t+3+120~400.parquet")[:2] == (3, 120)
    assert _log_order("/e/topic=t/date=d/v.t+10+5.parquet")[:2] == (10, 5)
    assert _log_order("/e/odd.parquet")[0] > 2**62  # another name: last


def test_a_query_out_of_memory_is_one_line_saying_what_to_set() -> None:
    # A red team, round eight: DuckDB's list of "Possible solutions" came out as literal \n's.
    import duckdb

    from ledger.audit.verify import _rows

    class Full:
        def sql(self, *args: Any, **kwargs: Any) -> Any:
            raise duckdb.OutOfMemoryException(
                "Out of Memory Error: could not allocate block of size 1.8 MiB\n\nPossible "
                "solutions: * Reducing the number of threads"
            )

    with pytest.raises(ExportError) as raised:
        list(_rows(Full(), ["f.parquet"], ""))
    said = str(raised.value)
    assert "\n" not in said and "Possible solutions" not in said
    assert said.endswith("block of size 1.8 MiB (set $LEDGER_AUDIT_MEMORY higher: 8GiB)")


def test_an_export_gutted_of_its_requests_has_its_decisions_missing_them(tmp_path: Path) -> None:
    """An auditor's walkthrough: every request deleted from an export, files, manifest entries
    and offsets alike, verified intact (exit 0), though replay then reproduced none."""
    export = build(requests=True).export(tmp_path / "export")
    assert verify(export).intact
    _gut(export, TOPICS.evaluation_requests)
    report = verify(export)
    assert report.problems, "tampering went unnoticed"
    assert all(p.kind == "missing" and p.subject == "decision" for p in report.problems)
    assert sum(int(p.found.split(" ", 1)[0]) for p in report.problems) == 40
    first = min(report.problems, key=lambda p: (p.partition or 0, p.offset or 0))
    assert "answer requests the export does not hold, this one the first (request r-" in (
        first.found
    )


def test_requests_a_retention_deleted_before_the_first_export_are_not_missing(
    tmp_path: Path,
) -> None:
    # A retention the operator set on the requests deleted the oldest before the export read
    # them: their decisions, older than the export's oldest request, are not counted.
    ledger = build(requests=True, every=timedelta(minutes=1))
    kept = [
        r
        for r in ledger.records
        if r.topic != TOPICS.evaluation_requests or r.offset >= 20  # the first 20 deleted
    ]
    export = tmp_path / "export"
    write_export(export, kept, TOPICS)
    assert verify(export).intact, [str(p) for p in verify(export).problems]


def test_an_older_evaluators_corrections_without_constraints_are_their_decisions(
    tmp_path: Path,
) -> None:
    """A review: a correction written before corrections carried the decision's constraints
    (2026-12-04, ``DecisionCorrected.v1``) reads back with none, and every correction of an
    ``allow_with_constraints`` decision counted as missing: an honest ledger was tampered."""
    import json
    from io import BytesIO

    from fastavro import parse_schema, schemaless_writer

    from ledger.codec import MAGIC, _load_schema
    from ledger.contract import contract_dir
    from ledger.core.evaluate import correction_for
    from ledger.core.events import Mode

    v1 = contract_dir("schemas") / "history" / "DecisionCorrected.v1.avsc"
    schema, fingerprint = parse_schema(json.loads(v1.read_text())), _load_schema(v1)[1]

    def in_v1(correction: Any) -> bytes:
        record = CODEC._current[type(correction)].to_avro(correction)
        record.pop("constraints")
        out = BytesIO(MAGIC + fingerprint)
        out.seek(0, 2)
        schemaless_writer(out, schema, record)
        return out.getvalue()

    def constrained(d: DecisionRecorded, head: ChainHead) -> tuple[DecisionRecorded, ChainHead]:
        return link(
            dataclasses.replace(
                d,
                mode=Mode.ASYNC,
                default=Determination.DENY,
                determination=Determination.ALLOW_WITH_CONSTRAINTS,
                constraints={"cap": Decimal("50.00")},
            ),
            head,
        )

    ledger = build(linker=constrained)
    owed = [c for d in ledger.decisions if (c := correction_for(d)) is not None]
    assert owed and CODEC.decode(in_v1(owed[0])).constraints == {}
    export = tmp_path / "export"
    write_export(
        export,
        ledger.records
        + [
            Exported(
                TOPICS.corrections, 0, n, int(c.occurred_at.timestamp() * 1000), None, in_v1(c)
            )
            for n, c in enumerate(owed)
        ],
        TOPICS,
    )
    report = verify(export)
    assert report.intact, [str(p) for p in report.problems][:3]
