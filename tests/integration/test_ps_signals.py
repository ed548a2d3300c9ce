"""What `ledger ps` tells an operator on call, from a real stack on a broker of its own: the
evaluator's recent decisions, and request partitions held by an evaluator started by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ledger.cli.app import cli
from ledger.local import broker
from ledger.settings import Settings

pytestmark = pytest.mark.integration


def _ps(runner: CliRunner) -> tuple[Result, dict[str, Any]]:
    result = runner.invoke(cli, ["ps", "--json"])
    return result, {p["name"]: p for p in json.loads(result.stdout)["processors"]}


def _asked(runner: CliRunner, principal: str) -> dict[str, Any]:
    """The decision `ledger evaluate` prints for ``principal`` doing x.y on r:1."""
    asked = runner.invoke(
        cli,
        [
            *("evaluate", "--action", "x.y", "--principal", principal, "--resource", "r:1"),
            *("--timeout", "20", "--json"),
        ],
    )
    decision: dict[str, Any] = json.loads(asked.stdout)
    return decision


def _unread_count(runner: CliRunner, count: int, what: str) -> None:
    """Wait until every processor's heartbeat counts ``count`` governance records unread."""
    _until(
        lambda: all(p["governance_newer"] == count for p in _ps(runner)[1].values()),
        60,
        what,
        runner,
    )


def _until(check: Any, seconds: float, what: str, runner: CliRunner) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {seconds:.0f} s: " + (
            runner.invoke(cli, ["ps", "--json"]).output
        )
        time.sleep(0.5)


def test_ps_shows_recent_decisions_and_a_hand_started_evaluators_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("LEDGER_HOME", str(home))
    monkeypatch.delenv("LEDGER_BOOTSTRAP", raising=False)  # the stack's own local broker
    monkeypatch.setenv("LEDGER_TOPIC_PREFIX", f"s{uuid.uuid4().hex[:8]}.")
    settings = Settings.from_env()
    runner = CliRunner()
    by_hand: subprocess.Popen[bytes] | None = None
    try:
        assert runner.invoke(cli, ["up"]).exit_code == 0
        asked = runner.invoke(
            cli,
            [
                *("evaluate", "--action", "x.y", "--principal", "agent:a", "--resource", "r:1"),
                *("--timeout", "20", "--json"),
            ],
        )
        assert json.loads(asked.stdout)["determination"] == "deny", asked.output

        def counted() -> dict[str, Any] | None:
            evaluator = _ps(runner)[1]["evaluator"]
            recent = evaluator["recent"] or {}
            return evaluator if recent.get("determinations") == {"deny": 1} else None

        evaluator = _until(counted, 20, "the evaluator's heartbeat counts its decision", runner)
        assert evaluator["client_id"] and evaluator["recent"]["errors"] == []

        # The README's way to scale: another evaluator, run by hand with no ready file.
        env = {k: v for k, v in os.environ.items() if k != "LEDGER_READY_FILE"}
        with (tmp_path / "by-hand.log").open("wb") as log:
            by_hand = subprocess.Popen(
                [sys.executable, "-m", "processors.evaluator"], env=env, stdout=log, stderr=log
            )

        def shared() -> Result | None:
            result, procs = _ps(runner)
            held = procs["evaluator"]["requests_held"]
            of = procs["evaluator"]["requests_of"]
            return result if held is not None and 0 < held < of else None

        result = _until(
            shared, 90, "the evaluator started by hand takes request partitions", runner
        )
        # The group may still settle for a moment: then it says so; once settled, exit 0.
        result = _until(
            lambda: (r := runner.invoke(cli, ["ps"])).exit_code == 0 and r,
            30,
            "ps is content with partitions held by an evaluator this home did not start",
            runner,
        )
        assert "held by an evaluator this home did not start" in result.stderr, result.output

        # An operator's upgrade drill: a processor skipping governance records a newer release
        # wrote (a schema it does not know) decided on an earlier state, `ps` green.
        from ledger.cli.common import connection
        from ledger.codec import MAGIC
        from ledger.kafka.clients import make_rdkafka_producer

        address, security = connection(settings, "command-processor")
        producer = make_rdkafka_producer(address, security=security)
        written: list[str] = []  # TOPIC/PARTITION@OFFSET, as the log and the skip name them

        def delivered(error: Any, message: Any) -> None:
            assert error is None, error
            written.append(f"{message.topic()}/{message.partition()}@{message.offset()}")

        unknown = MAGIC + b"\xee" * 8 + b"\x00"
        producer.produce(
            settings.topics.policy_events, unknown, b"refund", partition=0, on_delivery=delivered
        )
        producer.produce(settings.topics.grant_events, unknown, b"agent:a", on_delivery=delivered)
        assert producer.flush(30) == 0 and len(written) == 2
        said = "cannot read 2 governance record(s) a newer release wrote"
        behind = _until(
            lambda: (
                (r := runner.invoke(cli, ["ps"])).exit_code == 1
                and f"evaluator {said}" in r.stderr
                and f"command-processor {said}" in r.stderr
                and r
            ),
            30,
            "ps says both processors skip a record a newer release wrote",
            runner,
        )
        assert behind.exit_code == 1
        # Fail closed where those records could change the answer (their keys name them), as
        # decided before elsewhere; no command changes them on the earlier state.
        refused = _asked(runner, "agent:a")
        assert refused["reason_code"] == "governance_unreadable"
        assert _asked(runner, "agent:b")["reason_code"] == "no_authority"
        # It reproduces with this release's reader, which cannot read the record either (a
        # review: a position citing the record made every such decision "not reproduced").
        again = runner.invoke(cli, ["replay", "--decision", refused["event_id"]])
        assert again.exit_code == 0, again.output
        assert "reproduces: error (governance_unreadable)" in again.output, again.output
        # The CLI's own reading says what it shows lacks (a review: an earlier state, exit 0).
        listed = runner.invoke(cli, ["grant", "list"])
        assert listed.exit_code == 0, listed.output
        assert (
            "warning: 2 governance record(s) are of a schema this ledger does not know, a newer "
            f"release's ({settings.topics.policy_events}/0@"
        ) in listed.stderr
        assert "(policy 'refund')" in listed.stderr and "(principal 'agent:a')" in listed.stderr
        # So do `replay --at` and the commands that reproduce, from Kafka and from an export (a
        # red team: `replay --at` showed the earlier state, exit 0, with no word).
        exported = tmp_path / "export"
        done = runner.invoke(cli, ["export", "--out", str(exported)])
        assert done.exit_code == 0, done.output
        from_export = ["--from", str(exported)]
        for args in (["--at", "2100-01-01T00:00:00Z"], []):
            for source in ([], from_export):
                shown = runner.invoke(cli, ["replay", *args, *source])
                assert shown.exit_code == 0, shown.output
                assert "warning: 2 governance record(s) are of a schema" in shown.stderr, (
                    args,
                    source,
                    shown.output,
                )
                assert "(principal 'agent:a')" in shown.stderr, shown.output

        for command in (
            ["grant", "issue", "--to", "agent:a", "--actions", "x.*", "--resource", "*"],
            ["policy", "approve", "refund", "1"],
        ):
            refused = runner.invoke(cli, [*command, "--by", "human:admin"])
            assert refused.exit_code != 0 and "governance_unreadable" in refused.stderr, (
                refused.output
            )
        by_hand.terminate()
        by_hand.wait(timeout=30)
        by_hand = None
        # No snapshot hides it at a restart.
        assert runner.invoke(cli, ["down", "--keep-broker"]).exit_code == 0
        restarted = runner.invoke(cli, ["up"])
        assert restarted.exit_code == 0, restarted.output
        assert f"warning: evaluator {said}" in restarted.stderr, restarted.output  # `up` says it
        _unread_count(runner, 2, "the count again after a restart")
        assert _asked(runner, "agent:a")["reason_code"] == "governance_unreadable"
        # Records judged no release's are skipped when the operator lists them, at every start.
        assert runner.invoke(cli, ["down", "--keep-broker"]).exit_code == 0
        skip = {"LEDGER_GOVERNANCE_SKIP": ",".join(written)}
        assert runner.invoke(cli, ["up"], env=skip).exit_code == 0
        _unread_count(runner, 0, "nothing unread once skipped")
        assert _asked(runner, "agent:a")["reason_code"] == "no_authority"
        listed = runner.invoke(cli, ["grant", "list"], env=skip)
        assert listed.exit_code == 0 and "warning" not in listed.stderr, listed.output
        shown = runner.invoke(cli, ["replay", *from_export], env=skip)
        assert shown.exit_code == 0 and "warning" not in shown.stderr, shown.output
    finally:
        if by_hand is not None:
            by_hand.terminate()
            by_hand.wait(timeout=30)
        runner.invoke(cli, ["down"])
        broker.stop(settings)
