"""``ledger export`` against the real broker: every record once, incremental, repaired after a
SIGKILL mid-run, follow mode stopped cleanly, and replay from the export equal to replay from
Kafka. Records are produced straight to the topics (no processors needed): decisions spread over
the partitions, governance events decided by the core, and a record that does not decode."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ledger.audit.history import load_export_history
from ledger.codec import default_codec
from ledger.core.events import (
    ApprovePolicyVersion,
    DecisionRecorded,
    Determination,
    Event,
    PromotePolicyVersion,
    ProposePolicyVersion,
    Stage,
)
from ledger.core.history import state_at
from ledger.core.lifecycle import decide
from ledger.core.state import EMPTY_STATE, fold
from ledger.kafka.clients import make_producer
from ledger.kafka.governance import load_history
from ledger.settings import TopicNames

ROOT = Path(__file__).resolve().parents[2]
REFUND = (ROOT / "examples" / "policies" / "refund.yaml").read_text()
T0 = datetime(2026, 6, 30, 23, 59, 58, tzinfo=UTC)  # decisions cross midnight: two dates


def _decisions(start: int, count: int) -> list[DecisionRecorded]:
    return [
        DecisionRecorded(
            event_id=f"dec-{n:08d}",
            occurred_at=T0 + timedelta(milliseconds=n),
            actor="service:evaluator",
            request_id=f"req-{n:08d}",
            requested_at=T0,
            action="refund.issue",
            principal="agent:bot",
            resource=f"account:{n % 97}",
            determination=Determination.ALLOW if n % 3 else Determination.DENY,
            facts={"amount": "12.50", "n": n},
            policy="refund",
            policy_version=1,
            stage=Stage.ACTIVE,
        )
        for n in range(start, start + count)
    ]


def _governance() -> list[Event]:
    state, out = EMPTY_STATE, []
    ids = iter(range(1, 100))
    for command in (
        ProposePolicyVersion(
            event_id="c1", occurred_at=T0, actor="human:alice", policy="refund", document=REFUND
        ),
        ApprovePolicyVersion(
            event_id="c2", occurred_at=T0, actor="human:admin", policy="refund", version=1
        ),
        PromotePolicyVersion(
            event_id="c3",
            occurred_at=T0,
            actor="human:admin",
            policy="refund",
            version=1,
            stage=Stage.ACTIVE,
        ),
    ):
        events = decide(
            state,
            command,
            now=T0,
            new_id=lambda: f"g{next(ids)}",
            admins=frozenset({"human:alice", "human:admin"}),
        )
        assert isinstance(events, tuple)
        for event in events:
            state = fold(state, event)
            out.append(event)
    return out


def produce(
    kafka: Any,
    topics: TopicNames,
    *,
    decisions: list[DecisionRecorded],
    governance: list[Event] = (),
    garbage: int = 0,
) -> None:  # type: ignore[assignment]
    codec = default_codec()
    # The writers' credential: on the secured broker only the command processor and the
    # evaluator may write these topics.
    producer = make_producer(
        kafka.bootstrap, security=kafka.security("admin"), linger_ms=20, batch_size=512 * 1024
    )
    try:
        for event in governance:
            producer.send(topics.policy_events, codec.encode(event), key=b"refund")
        for d in decisions:
            producer.send(topics.decisions, codec.encode(d), key=d.request_id.encode())
        for n in range(garbage):
            producer.send(
                topics.decisions, b"\x00not a ledger record", key=b"\xff\xfe", partition=n % 3
            )
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


def ledger_export(
    kafka: Any, topics: TopicNames, out: Path, *extra: str, **popen: Any
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "LEDGER_BOOTSTRAP": kafka.bootstrap,
        "LEDGER_TOPIC_PREFIX": topics.prefix,
        "LEDGER_CREDENTIALS": str(kafka.settings.credentials),
    }
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ledger"),
            "export",
            "--out",
            str(out),
            "--json",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def run_export(kafka: Any, topics: TopicNames, out: Path, *extra: str) -> dict[str, Any]:
    process = ledger_export(kafka, topics, out, *extra)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    summary: dict[str, Any] = json.loads(stdout)
    return summary


def counted(out: Path, topic: str) -> tuple[int, int]:
    """(rows, distinct (partition, offset)) of ``topic`` over the files the manifest lists."""
    files = [
        str(out / f["path"])
        for f in json.loads((out / "_manifest.json").read_text())["files"]
        if f["topic"] == topic
    ]
    if not files:
        return 0, 0
    con = duckdb.connect()
    try:
        row = con.execute(
            'SELECT count(*), count(DISTINCT (partition, "offset")) FROM read_parquet(?)', [files]
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0]), int(row[1])


def test_export_is_complete_incremental_and_typed(
    kafka: Any, ledger_topics: TopicNames, tmp_path: Path
) -> None:
    produce(
        kafka,
        ledger_topics,
        decisions=_decisions(0, 3000),
        governance=_governance(),
        garbage=2,
    )
    out = tmp_path / "export"
    first = run_export(kafka, ledger_topics, out)
    assert first["records"][ledger_topics.decisions] == 3002
    assert first["records"][ledger_topics.policy_events] == 3
    assert counted(out, ledger_topics.decisions) == (3002, 3002)
    dates = {p.name for p in (out / f"topic={ledger_topics.decisions}").iterdir()}
    # Decisions by the UTC date of occurred_at; the undecodable records by their Kafka time's.
    assert {"date=2026-06-30", "date=2026-07-01"} <= dates and len(dates) <= 4

    before = json.loads((out / "_manifest.json").read_text())
    assert before["complete"] is True
    again = run_export(kafka, ledger_topics, out)
    assert again["total_records"] == 0 and again["files_written"] == 0
    # A run with nothing new still records when it read the topics (replay's notes, verify).
    assert json.loads((out / "_manifest.json").read_text())["read_at"] > before["read_at"]

    produce(kafka, ledger_topics, decisions=_decisions(3000, 500))
    third = run_export(kafka, ledger_topics, out)
    assert third["records"][ledger_topics.decisions] == 500
    assert counted(out, ledger_topics.decisions) == (3502, 3502)

    from ledger.audit.sql import connect

    con = connect(out)
    try:
        assert con.execute("SELECT count(*) FROM undecodable_records").fetchone() == (2,)
        assert con.execute(
            "SELECT typeof(decided_at), typeof(facts), facts->>'amount' FROM decisions WHERE decision_id = 'dec-00000007'"
        ).fetchone() == ("TIMESTAMP WITH TIME ZONE", "JSON", "12.50")
        assert con.execute(
            "SELECT version, stage FROM policy_timeline WHERE valid_to IS NULL"
        ).fetchall() == [(1, "active")]
    finally:
        con.close()

    # Replay from the export folds the very events replay from Kafka folds.
    from_export = load_export_history(out)
    from_kafka = load_history(kafka.bootstrap, ledger_topics, security=kafka.security("auditor"))
    assert from_export == from_kafka
    assert state_at(from_export) == state_at(from_kafka)


def test_an_export_killed_mid_run_is_repaired_by_the_next(
    kafka: Any, ledger_topics: TopicNames, tmp_path: Path
) -> None:
    total = 30_000
    produce(kafka, ledger_topics, decisions=_decisions(0, total))
    out = tmp_path / "export"
    for attempt in range(3):  # the kill must land mid-run: after a first flush, before the end
        process = ledger_export(kafka, ledger_topics, out, "--batch-records", "1000")
        deadline = time.monotonic() + 120
        while (
            not (out / "_manifest.json").exists()
            and process.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        if (
            process.returncode == -signal.SIGKILL
            and counted(out, ledger_topics.decisions)[0] < total
        ):
            break
        out = tmp_path / f"export{attempt}"
    else:  # a failure, not a skip: a skipped test would pass CI without testing the repair
        pytest.fail("the export finished before it could be killed, three times running")
    rows_before, _ = counted(out, ledger_topics.decisions)
    assert 0 < rows_before < total
    # Its manifest says so: readers note it, `audit verify` says "incomplete" (exit 9).
    assert json.loads((out / "_manifest.json").read_text())["complete"] is False
    summary = run_export(kafka, ledger_topics, out)
    assert summary["records"][ledger_topics.decisions] == total - rows_before
    assert counted(out, ledger_topics.decisions) == (total, total)
    assert json.loads((out / "_manifest.json").read_text())["complete"] is True
    # Nothing is left beside the listed files (and those merged into others minutes ago, kept
    # for readers that listed them): no temporary file, no unlisted data file.
    manifest = json.loads((out / "_manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"] + manifest["retired"]}
    on_disk = {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.name != "_manifest.json"
    }
    assert on_disk == listed


def test_follow_keeps_up_and_stops_cleanly_on_sigterm(
    kafka: Any, ledger_topics: TopicNames, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    process = ledger_export(kafka, ledger_topics, out, "--follow", "--interval", "0.5")
    try:
        produce(kafka, ledger_topics, decisions=_decisions(0, 200))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (out / "_manifest.json").exists() and counted(out, ledger_topics.decisions)[
                0
            ] == 200:
                break
            time.sleep(0.2)
        assert counted(out, ledger_topics.decisions) == (200, 200)
        produce(kafka, ledger_topics, decisions=_decisions(200, 50))
        time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["records"][ledger_topics.decisions] == counted(out, ledger_topics.decisions)[0]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] is True and manifest["read_at"] <= manifest["updated_at"]
    assert (
        run_export(kafka, ledger_topics, out)["total_records"]
        == 250 - summary["records"][ledger_topics.decisions]
    )
    assert counted(out, ledger_topics.decisions) == (250, 250)


def _exported(out: Path, topic: str) -> Any:
    """Every row of ``topic`` in the files the manifest lists, in (partition, offset) order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [
        out / f["path"]
        for f in json.loads((out / "_manifest.json").read_text())["files"]
        if f["topic"] == topic
    ]
    table = pa.concat_tables([pq.read_table(path) for path in files])
    return table.sort_by([("partition", "ascending"), ("offset", "ascending")])


def test_an_export_by_helpers_writes_exactly_what_one_process_writes(
    kafka: Any, ledger_topics: TopicNames, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Helpers export units of consecutive offsets (here cut small: many units per partition,
    each helper's consumer reassigned between them): the rows, the files' rows and the offsets
    are those of one process reading everything, and nothing unlisted is left on disk."""
    from ledger.audit import export as exporting
    from ledger.audit import pool

    total = exporting.POOL_THRESHOLD + 5_000
    produce(
        kafka,
        ledger_topics,
        decisions=_decisions(0, total),
        governance=_governance(),
        garbage=3,
    )
    units: list[Any] = []
    cut = pool._units

    def spy(ranges: Any, size: int) -> Any:
        made = cut(ranges, size)
        units.extend(made)
        return made

    monkeypatch.setattr(pool, "_units", spy)
    security = kafka.security("exporter")
    one = exporting.export(
        tmp_path / "one", kafka.bootstrap, ledger_topics, security=security, helpers=0
    )
    assert units == []
    two = exporting.export(
        tmp_path / "two",
        kafka.bootstrap,
        ledger_topics,
        security=security,
        helpers=2,
        batch_records=1_000,  # a unit is at most a flush: several units per partition
    )
    per_partition = collections.Counter((u.topic, u.partition) for u in units)
    assert max(per_partition.values()) > 2
    assert one.records == two.records
    assert one.records[ledger_topics.decisions] == total + 3
    for topic in (ledger_topics.decisions, ledger_topics.policy_events):
        assert _exported(tmp_path / "one", topic).equals(_exported(tmp_path / "two", topic))
    manifests = [json.loads((tmp_path / d / "_manifest.json").read_text()) for d in ("one", "two")]
    assert manifests[0]["offsets"] == manifests[1]["offsets"]
    listed = {f["path"] for f in manifests[1]["files"] + manifests[1]["retired"]}
    on_disk = {
        p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*.parquet")
    }
    assert on_disk == listed
    assert sum(f["rows"] for f in manifests[1]["files"]) == sum(two.records.values())


def test_an_export_ends_past_a_transaction_marker(
    kafka: Any, ledger_topics: TopicNames, tmp_path: Path
) -> None:
    """The last offset of the partition is a commit marker, not a record: the run must see
    that it reached the end offset it captured (not wait for a record that never comes)."""
    from confluent_kafka import Producer

    from ledger.kafka.clients import librdkafka_config

    codec = default_codec()
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap,
            **librdkafka_config(kafka.security("admin")),
            "transactional.id": f"{ledger_topics.prefix}export-test",
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for d in _decisions(0, 3):
        producer.produce(
            ledger_topics.decisions, codec.encode(d), key=d.request_id.encode(), partition=0
        )
    producer.commit_transaction(30)
    del producer  # closed now, not when the broker is gone
    out = tmp_path / "export"
    started = time.monotonic()
    first = run_export(kafka, ledger_topics, out)
    assert time.monotonic() - started < 25  # generous: the no-progress error comes at 30 s
    assert first["records"][ledger_topics.decisions] == 3
    offsets = json.loads((out / "_manifest.json").read_text())["offsets"]
    assert offsets[ledger_topics.decisions]["0"] == 4  # three records and the commit marker

    produce(kafka, ledger_topics, decisions=_decisions(3, 2))
    assert run_export(kafka, ledger_topics, out)["records"][ledger_topics.decisions] == 2
    assert counted(out, ledger_topics.decisions) == (5, 5)


def test_an_export_the_broker_refuses_is_one_ledger_error(
    kafka: Any, ledger_topics: TopicNames, tmp_path: Path
) -> None:
    """librdkafka reports a refused login or a topic the role may not read its own way: the
    export still ends, at once, in one ledger error naming what to check."""
    from dataclasses import replace

    from ledger.audit.export import export
    from ledger.errors import KafkaAccessDenied, TopicMissing

    exporter = kafka.security("exporter")
    agent = kafka.security("agent")
    if exporter is None or agent is None:  # pragma: no cover - a broker without authentication
        pytest.skip("the broker under test does not authenticate clients")
    for security, refused in (
        # An auditor's walkthrough: a wrong password was a transport failure after 7 s.
        (replace(exporter, password="guessed"), KafkaAccessDenied),
        (agent, (TopicMissing, KafkaAccessDenied)),  # the agent may not read commands
    ):
        started = time.monotonic()
        with pytest.raises(refused, match=r"credentials|refused|may not"):
            export(tmp_path / "export", kafka.bootstrap, ledger_topics, security=security)
        assert time.monotonic() - started < 30
    assert not (tmp_path / "export" / "_manifest.json").exists()


def test_an_export_ahead_of_kafka_is_refused_not_silently_skipped(
    kafka: Any, ledger_topics: TopicNames, tmp_path: Path
) -> None:
    """A manifest whose next offset is past the topic's end (the topic recreated, another
    ledger's export, or an edited manifest) made the run read nothing from that partition
    and exit 0; it now says so, exit 9."""
    out = tmp_path / "export"
    run_export(kafka, ledger_topics, out)
    manifest = json.loads((out / "_manifest.json").read_text())
    manifest["offsets"].setdefault(ledger_topics.decisions, {})["0"] = 10**12
    (out / "_manifest.json").write_text(json.dumps(manifest))
    process = ledger_export(kafka, ledger_topics, out)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 9, stderr
    assert f"{ledger_topics.decisions} partition 0 up to offset 1000000000000" in stderr
    assert "export into a fresh directory" in stderr


def test_an_export_can_remove_the_files_it_merged_away_before_it_is_handed_over(
    kafka: Any, ledger_topics: TopicNames, tmp_path: Path
) -> None:
    # An auditor's walkthrough: a glob read every row of the merged-away files a second time
    # (they stay ten minutes); readers that list folders (Spark, Trino, Athena) would too.
    out = tmp_path / "export"
    merged = 0
    for run in range(17):  # a run's files each time: the sixteenth small one in a row merges
        produce(kafka, ledger_topics, decisions=_decisions(run * 25, 25))
        summary = run_export(kafka, ledger_topics, out)
        assert summary["removed_retired_files"] == 0
        merged += summary["files_compacted"]
    assert merged > 0 and json.loads((out / "_manifest.json").read_text())["retired"]
    handed = run_export(kafka, ledger_topics, out, "--remove-retired")
    assert handed["removed_retired_files"] == merged
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["retired"] == []
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.parquet")}
    assert on_disk == {f["path"] for f in manifest["files"]}
    con = duckdb.connect()
    try:
        globbed = con.execute(
            "SELECT count(*) FROM read_parquet(?)",
            [str(out / f"topic={ledger_topics.decisions}" / "**" / "*.parquet")],
        ).fetchone()
    finally:
        con.close()
    assert globbed == (425,) and counted(out, ledger_topics.decisions) == (425, 425)
