"""A governance record whose header key is not UTF-8 stops nothing (a red team, High).

The processors follow the governance topics from the beginning at every start. Their consumer
was aiokafka's, which decodes every header key as UTF-8 while parsing a fetch and raised on one
record written with the command processor's credential: every processor down, at every start,
for good (Kafka cannot delete one record in the middle of a partition). They read with
librdkafka now, which leaves headers alone: the record is one the follower cannot decode,
counted and passed like any other.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from harness import ADMIN, AGENT, ALICE, BOB, GOOD_FACTS, policy_doc, wait_for

from ledger.cli.app import cli
from ledger.core.events import Determination
from ledger.local.stack import damaged_governance, processes
from processors.heartbeat import Heartbeat

pytestmark = pytest.mark.integration


class _RawKey(str):
    """A header key kafka-python writes as these bytes (it encodes keys with ``str.encode``)."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        return b"\xff\xfe\xc0"


def test_a_grant_record_with_a_non_utf8_header_key_stops_no_processor(stack_factory: Any) -> None:
    stack = stack_factory()
    admin = stack.client(ADMIN)
    for person in (ALICE, BOB):
        stack.grant(admin, person, ("ledger.policy.*",), "policy:*")
    stack.deploy(admin, policy_doc("refund", action="refund.issue"))

    topic = stack.topics.grant_events
    producer = stack.producer("command-processor")  # who may write the governance topics
    try:
        sent = producer.send(topic, key=b"k", value=b"x", headers=[(_RawKey("h"), b"v")])
        offset = sent.get(timeout=30).offset
    finally:
        producer.close(timeout=5)

    # Read live by the running processors, then from the beginning by restarted ones (the
    # starts wait until each is ready: caught up past the record).
    for name in ("command-processor", "evaluator"):
        stack.stop(name)
        stack.start(name)

    stack.grant(admin, AGENT, ("refund.issue",), "account:*")  # issued after the record
    agent = stack.client(AGENT)
    decision = stack.evaluate_settled(
        agent, action="refund.issue", principal=AGENT, resource="account:1", facts=GOOD_FACTS
    )
    assert decision.determination is Determination.ALLOW, decision
    for name in ("command-processor", "evaluator"):  # each counted it and went on
        log = (stack.log_dir / f"{name}.log").read_text(errors="replace")
        assert f"undecodable governance record {topic}/0@{offset}" in log, stack.logs()
        assert "governance consumer:" not in log, stack.logs()  # no error of its consumer

    def healthy() -> bool:  # as `ledger ps` judges them
        shown = processes(stack.settings, bootstrap=stack.bootstrap)
        return len(shown) == 2 and all(p.healthy for p in shown)

    wait_for(healthy, timeout=30, what="both processors healthy in `ledger ps`")
    # Healthy, but `ps` says what they skipped (a red team: a genuine event cut short was
    # dropped, `ps` green), and where.
    said = damaged_governance(processes(stack.settings, bootstrap=stack.bootstrap))
    assert len(said) == 2 and all(f"at {topic}/0@{offset}:" in s for s in said), said
    # And the commands that read the same history say what it lacks (the review).
    listed = CliRunner().invoke(cli, ["grant", "list"], env=stack.cli_env())
    assert listed.exit_code == 0, listed.output
    assert (
        f"1 governance record(s) are damaged, no governance event (cut short, empty or not Avro: {topic}/0@{offset})"
        in listed.stderr
    )

    # What `ps` judges by, the broker's last answer, keeps moving: heard all along, not only
    # at the start.
    def heard(name: str) -> float:
        beat = Heartbeat.read(stack.settings.home / "run" / f"{name}.ready")
        assert beat is not None and beat.fetched_at is not None
        return beat.fetched_at

    firsts = {name: heard(name) for name in ("command-processor", "evaluator")}
    wait_for(
        lambda: all(heard(name) >= first + 3 for name, first in firsts.items()),
        timeout=30,
        what="both processors to hear from the broker again",
    )
