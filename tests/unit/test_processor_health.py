"""How `ledger ps`/`up`/`down` judge a processor: a live pid is not health (issue 8, item 4).

The processors here are stand-ins (``sleep`` started the way ``ledger up`` starts a worker, with
its ready file in the environment) whose heartbeats the tests write; the real thing, on the real
broker, is in ``tests/integration/test_stack_health.py``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.cli.app import cli
from ledger.errors import LedgerError, ProcessorError
from ledger.kafka.groups import static_instance_id
from ledger.kafka.snapshots import installed_fingerprint
from ledger.local import stack
from ledger.local.processes import alive, spawn_detached
from ledger.settings import KafkaSecurity, Settings
from processors.heartbeat import Heartbeat
from processors.outputs import DecisionCounts
from processors.run import RepeatFilter

KAFKA = "127.0.0.1:9"  # never dialled: health is judged from the heartbeat, not by probing
HERE = installed_fingerprint()  # the code these tests (and their `ledger` commands) run


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path))
    monkeypatch.setenv("LEDGER_BOOTSTRAP", KAFKA)
    return Settings(bootstrap=KAFKA, home=tmp_path)


def _fake_processor(settings: Settings, name: str, *, ignore_term: bool = False) -> int:
    """A process that passes for processor ``name`` of this home (what `ledger up` records)."""
    run = settings.home / "run"
    run.mkdir(parents=True, exist_ok=True)
    script = ("trap '' TERM; " if ignore_term else "") + "sleep 60"
    env = {**os.environ, "LEDGER_READY_FILE": str(run / f"{name}.ready")}
    sh = shutil.which("sh")
    assert sh is not None
    pid = spawn_detached([sh, "-c", script], env=env, log=settings.home / f"{name}.log")
    (run / f"{name}.pid").write_text(str(pid))
    deadline = time.monotonic() + 5
    while not alive(pid, marker=f"LEDGER_READY_FILE={run / f'{name}.ready'}") and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    return pid


@pytest.fixture
def evaluator(settings: Settings) -> Iterator[int]:
    pid = _fake_processor(settings, "evaluator")
    yield pid
    stack.stop_processor(settings, "evaluator", kill=True)


def _beat(
    settings: Settings,
    pid: int,
    *,
    age: float = 0.0,
    fetch_age: float | None = 0.0,
    bootstrap: str = KAFKA,
    name: str = "evaluator",
    credential: str | None = None,
    code: str | None = HERE,
    requests: tuple[int, int] | None = None,
    out_of_group: float | None = None,
    recent: DecisionCounts | None = None,
    at: float | None = None,
    client: str | None = None,
    newer: int | None = None,
    unread: list[str] | None = None,
    damaged: list[str] | None = None,
) -> None:
    now = time.time() if at is None else at
    Heartbeat(
        pid=pid,
        bootstrap=bootstrap,
        at=now - age,
        fetched_at=None if fetch_age is None else now - fetch_age,
        credential=credential,
        code=code,
        requests_held=None if requests is None else requests[0],
        requests_of=None if requests is None else requests[1],
        out_of_group_since=None if out_of_group is None else now - out_of_group,
        group_state=None if out_of_group is None else "up/wait-join",
        recent=recent,
        recent_seconds=None if recent is None else 60.0,
        client_id=client,
        governance_newer=newer,
        governance_unread=unread,
        governance_damaged=None if damaged is None else len(damaged) + 1,
        governance_damaged_at=damaged,
    ).write(settings.home / "run" / f"{name}.ready")


def _evaluator(settings: Settings) -> stack.ProcessStatus:
    return next(p for p in stack.processes(settings) if p.name == "evaluator")


def test_a_fresh_heartbeat_from_a_fetching_processor_is_healthy(
    settings: Settings, evaluator: int
) -> None:
    _beat(settings, evaluator, age=0.5, fetch_age=0.2)
    status = _evaluator(settings)
    assert status.running and status.healthy and status.problem is None
    assert status.pid == evaluator and status.bootstrap == KAFKA
    assert status.heartbeat_age is not None and 0.4 <= status.heartbeat_age < 3


def test_a_processor_stopped_by_a_signal_is_said_to_be(settings: Settings, evaluator: int) -> None:
    # An operator's walkthrough: a SIGSTOPped evaluator was "stuck, or its disk full?", and the
    # troubleshooting table pointed at `df` first.
    _beat(settings, evaluator, age=30, fetch_age=30)
    assert "event loop is stuck" in (_evaluator(settings).problem or "")
    os.kill(evaluator, signal.SIGSTOP)
    try:
        from processors.heartbeat import stopped_by_signal

        deadline = time.monotonic() + 10  # a signal is delivered after kill() returns
        while not stopped_by_signal(evaluator) and time.monotonic() < deadline:
            time.sleep(0.01)
        problem = _evaluator(settings).problem or ""
        assert "it is stopped by a signal (SIGSTOP" in problem
        assert f"`kill -CONT {evaluator}` resumes it" in problem
        # An operator's drill: its last answer from Kafka goes stale before its heartbeat,
        # and for those seconds `ps` blamed a healthy broker.
        _beat(settings, evaluator, age=1, fetch_age=30)
        problem = _evaluator(settings).problem or ""
        assert problem.startswith("no answer from Kafka for 30 s: it is stopped by a signal")
    finally:
        os.kill(evaluator, signal.SIGCONT)


def test_a_processor_stuck_in_the_kernel_is_said_to_be(
    settings: Settings, evaluator: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A chaos drill: an evaluator frozen in its cgroup (state D) read "its event loop is
    # stuck, or it cannot write its heartbeat file". State D cannot be made here unprivileged:
    # its letter from /proc is what is read.
    from processors import heartbeat

    _beat(settings, evaluator, age=30, fetch_age=30)
    monkeypatch.setattr(heartbeat, "process_state", lambda pid: "D")
    problem = _evaluator(settings).problem or ""
    assert "it is stuck in the kernel (state D, uninterruptible sleep" in problem, problem


def test_up_restarts_a_processor_stopped_by_a_signal_without_giving_it_time(
    settings: Settings, evaluator: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A chaos drill: `up` said the command processor was stopped by a signal, then gave it
    # 20 s to recover, which a stopped process cannot do by itself.
    from processors.heartbeat import stopped_by_signal

    _beat(settings, evaluator, age=30, fetch_age=30)
    os.kill(evaluator, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while not stopped_by_signal(evaluator) and time.monotonic() < deadline:
            time.sleep(0.01)
        said: list[str] = []
        calls: list[tuple[str, str]] = []
        monkeypatch.setattr(stack, "_writable", lambda folder: None)
        monkeypatch.setattr(
            stack, "stop_processor", lambda s, name, **k: calls.append(("stop", name)) or True
        )
        monkeypatch.setattr(
            stack, "start_processor", lambda s, name, **k: calls.append(("start", name))
        )
        assert stack._ensure(settings, "evaluator", bootstrap=KAFKA, progress=said.append)
        assert calls == [("stop", "evaluator"), ("start", "evaluator")]
        assert not any("to recover" in line for line in said), said
        assert any("stopped by a signal" in line for line in said), said
    finally:
        os.kill(evaluator, signal.SIGCONT)
        monkeypatch.undo()  # the fixture stops the fake processor with the real stop_processor


def test_a_running_processor_without_a_heartbeat_is_not_healthy(
    settings: Settings, evaluator: int
) -> None:
    status = _evaluator(settings)
    assert status.running and not status.healthy
    assert status.problem is not None and "no heartbeat yet" in status.problem


def test_ps_suggests_up_only_for_what_up_can_mend(
    settings: Settings, evaluator: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: every failing `ps` closed with "`ledger up` starts what is not
    # running…", a full disk too, which `up` cannot mend.
    processor = _fake_processor(settings, "command-processor")
    try:
        _beat(settings, evaluator, age=0.5, fetch_age=0.2, requests=(3, 3))
        _beat(settings, processor, name="command-processor", age=0.5, fetch_age=0.2)
        monkeypatch.setattr(stack, "low_disk", lambda _: "the filesystem is nearly full")
        full = CliRunner().invoke(cli, ["ps"])
        assert full.exit_code == 1, full.output
        assert "the filesystem is nearly full" in full.stderr
        assert "`ledger up` starts what is not running" not in full.stderr
    finally:
        os.kill(processor, signal.SIGKILL)


@pytest.mark.parametrize(
    ("beat", "problem"),
    [
        ({"age": 30.0}, "no heartbeat for 30 s"),
        ({"fetch_age": 30.0}, f"no answer from Kafka at {KAFKA} for 30 s"),
        ({"fetch_age": None}, f"no answer from Kafka at {KAFKA} ever"),
        (
            {"bootstrap": "127.0.0.1:4242"},
            # The address this test's settings give, as $LEDGER_BOOTSTRAP would: the operator's
            # word, which ps does not present as where Kafka is.
            f"started with Kafka at 127.0.0.1:4242, but $LEDGER_BOOTSTRAP names {KAFKA}",
        ),
        (
            {"out_of_group": 70.0, "requests": (0, 6)},
            "out of its consumer group for 70 s (librdkafka: up/wait-join): it holds no request "
            "partition and answers nothing (`ledger up` restarts it)",
        ),
    ],
    ids=["stuck", "broker-silent", "never-fetched", "bootstrap-differs", "out-of-group"],
)
def test_a_live_processor_that_is_not_working_is_reported_with_why(
    settings: Settings, evaluator: int, beat: dict[str, object], problem: str
) -> None:
    _beat(settings, evaluator, **beat)  # type: ignore[arg-type]
    status = _evaluator(settings)
    assert status.running and not status.healthy
    assert (status.problem or "").startswith(problem), status.problem


def test_ps_shows_health_and_says_why(settings: Settings, evaluator: int) -> None:
    _beat(settings, evaluator, fetch_age=30.0)
    runner = CliRunner()
    table = runner.invoke(cli, ["ps"])
    assert table.exit_code == 1, table.output  # not all is well: a script can tell
    assert "healthy" in table.stdout and "heartbeat" in table.stdout
    assert f"evaluator is not healthy: no answer from Kafka at {KAFKA} for 30 s" in table.stderr
    assert "command-processor is not running" in table.stderr
    assert "`ledger up` starts what is not running" in table.stderr
    as_json = runner.invoke(cli, ["ps", "--json"])
    assert as_json.exit_code == 1, as_json.output
    procs = {p["name"]: p for p in json.loads(as_json.stdout)["processors"]}
    assert procs["evaluator"]["running"] is True and procs["evaluator"]["healthy"] is False
    assert procs["evaluator"]["fetch_age"] >= 29 and procs["evaluator"]["bootstrap"] == KAFKA
    assert not procs["command-processor"]["running"]
    assert procs["command-processor"]["problem"] == "not running"


@pytest.fixture
def both(settings: Settings) -> Iterator[dict[str, int]]:
    """Both processors running, each with a fresh heartbeat of the code installed now."""
    pids = {name: _fake_processor(settings, name) for name in stack.PROCESSORS}
    for name, pid in pids.items():
        _beat(settings, pid, name=name)
    yield pids
    for name in pids:
        stack.stop_processor(settings, name, kill=True)


OTHER_CODE = (
    "evaluator runs other code than this `ledger` (an upgrade since it started?): "
    "`ledger down --keep-broker && ledger up` restarts it on this code (no decisions until the "
    "evaluators are up again)"
)


def test_the_way_out_of_other_code_keeps_as_many_evaluators() -> None:
    # An operator's walkthrough: the advice restarted two evaluators as one, silently.
    said = stack.other_code(
        ["evaluator", "evaluator-2"], ["command-processor", "evaluator", "evaluator-2"]
    )
    assert "`ledger down --keep-broker && ledger up --evaluators 2` restarts them" in said
    assert "--evaluators" not in stack.other_code(["evaluator"], ["evaluator", "command-processor"])


@pytest.mark.parametrize("code", ["0" * 64, None], ids=["other-build", "older-version"])
def test_ps_tells_which_processor_runs_other_code_than_the_cli(
    settings: Settings, both: dict[str, int], code: str | None
) -> None:
    # An operator's walkthrough: after an upgrade in place (new CLI, old processors running),
    # nothing told which code the processors ran; `ledger --version` was the same for both.
    runner = CliRunner()
    same = runner.invoke(cli, ["ps"])
    assert same.exit_code == 0, same.output
    assert "code" in same.stdout and "same" in same.stdout and "other" not in same.output
    _beat(settings, both["evaluator"], code=code)  # older versions write no fingerprint
    table = runner.invoke(cli, ["ps"])
    assert table.exit_code == 0, table.output  # it answers: a fact to act on, not a sickness
    assert "other (an upgrade?)" in table.stdout and table.stderr.strip() == OTHER_CODE
    as_json = runner.invoke(cli, ["ps", "--json"])
    shown = json.loads(as_json.stdout)
    procs = {p["name"]: p for p in shown["processors"]}
    assert shown["code"] == HERE
    assert (procs["evaluator"]["code"], procs["evaluator"]["same_code"]) == (code, False)
    assert (procs["command-processor"]["code"], procs["command-processor"]["same_code"]) == (
        HERE,
        True,
    )


UNHELD = (
    "the evaluators this home started hold 3 of 6 request partitions: requests to the others "
    "wait until the evaluators' group is rebalanced"
)


def test_ps_is_not_all_well_while_the_evaluators_do_not_hold_every_request_partition(
    settings: Settings, both: dict[str, int]
) -> None:
    # An agent engineer's walkthrough: after a broker restart with two evaluators, `ps` exited
    # 0 while no request was decided for 22 s: the group was still being rebalanced.
    _beat(settings, both["evaluator"], requests=(3, 6))
    runner = CliRunner()
    waiting = runner.invoke(cli, ["ps"])
    assert waiting.exit_code == 1 and UNHELD in waiting.stderr, waiting.output
    shown = json.loads(runner.invoke(cli, ["ps", "--json"]).stdout)
    procs = {p["name"]: p for p in shown["processors"]}
    assert (procs["evaluator"]["requests_held"], procs["evaluator"]["requests_of"]) == (3, 6)
    _beat(settings, both["evaluator"], requests=(6, 6))
    assert runner.invoke(cli, ["ps"]).exit_code == 0
    _beat(settings, both["evaluator"], requests=(0, 0))  # not known yet: nothing to say
    assert runner.invoke(cli, ["ps"]).exit_code == 0
    # A stopped evaluator (an operator's chaos run: SIGSTOP) said its last count, 6 of 6, beside
    # the partitions another now held: an unhealthy one's count is not what it holds.
    _beat(settings, both["evaluator"], requests=(6, 6), age=60)
    shown = json.loads(runner.invoke(cli, ["ps", "--json"]).stdout)
    procs = {p["name"]: p for p in shown["processors"]}
    assert not procs["evaluator"]["healthy"] and procs["evaluator"]["requests_held"] is None


def test_ps_says_a_processor_skips_governance_records_a_newer_release_wrote(
    settings: Settings, both: dict[str, int]
) -> None:
    # An operator's upgrade drill: an older evaluator beside newer ones skipped every promotion
    # they wrote (a schema it did not know) and decided under refund v1, `ps` green.
    _beat(settings, both["evaluator"], newer=0)
    runner = CliRunner()
    assert runner.invoke(cli, ["ps"]).exit_code == 0
    _beat(settings, both["evaluator"], newer=2)
    behind = runner.invoke(cli, ["ps"])
    assert behind.exit_code == 1, behind.output
    assert (
        "evaluator cannot read 2 governance record(s) a newer release wrote (a schema it does "
        "not know), of what its log names: it answers error to the requests those records "
        "could change (governance_unreadable)"
    ) in behind.stderr
    shown = json.loads(runner.invoke(cli, ["ps", "--json"]).stdout)
    assert {p["name"]: p for p in shown["processors"]}["evaluator"]["governance_newer"] == 2
    assert any("cannot read 2 governance record(s)" in p for p in shown["problems"])
    # Whose records (a review: the operator was not told which policies or principals), and
    # what each processor does about them.
    unread = ["policy 'refund'", "principal 'agent:a'"]
    _beat(settings, both["command-processor"], name="command-processor", newer=2, unread=unread)
    behind = runner.invoke(cli, ["ps"])
    assert (
        "command-processor cannot read 2 governance record(s) a newer release wrote (a schema "
        "it does not know), of policy 'refund', principal 'agent:a': it refuses every command "
        "(governance_unreadable)"
    ) in behind.stderr, behind.output
    shown = json.loads(runner.invoke(cli, ["ps", "--json"]).stdout)
    procs = {p["name"]: p for p in shown["processors"]}
    assert procs["command-processor"]["governance_unread"] == unread


def test_ps_says_a_processor_skipped_damaged_governance_records(
    settings: Settings, both: dict[str, int]
) -> None:
    # A red team: a genuine grant revocation cut short was skipped as undecodable, and the
    # processors decided without it, `ps` green.
    _beat(settings, both["evaluator"], damaged=[])  # 1 skipped, where not said
    runner = CliRunner()
    _beat(settings, both["command-processor"], name="command-processor")
    damaged = runner.invoke(cli, ["ps"])
    assert damaged.exit_code == 1, damaged.output
    assert "evaluator skipped 1 damaged governance record(s)" in damaged.stderr
    _beat(settings, both["evaluator"], damaged=["ledger.grant-events/0@6"])
    shown = json.loads(runner.invoke(cli, ["ps", "--json"]).stdout)
    said = [p for p in shown["problems"] if "damaged" in p]
    assert len(said) == 1 and "skipped 2 damaged governance record(s)" in said[0], said
    assert "at ledger.grant-events/0@6, …: it decides and governs without" in said[0], said
    assert "`ledger actor verify`" in said[0] and "LEDGER_GOVERNANCE_SKIP" in said[0]
    _beat(settings, both["evaluator"])  # judged and skipped: nothing to say
    assert runner.invoke(cli, ["ps"]).exit_code == 0


def test_up_waits_until_the_evaluators_hold_every_request_partition(
    settings: Settings, both: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.settings import KafkaSecurity

    monkeypatch.setattr(stack, "check_reachable", lambda bootstrap: None)
    monkeypatch.setattr(stack, "resolve_security", lambda *a, **k: KafkaSecurity())
    monkeypatch.setattr(stack, "create_topics", lambda *a, **k: [])
    _beat(settings, both["evaluator"], requests=(3, 6))
    said: list[str] = []
    with pytest.raises(LedgerError, match=r"hold 3 of 6 request partitions.*still after 1 s"):
        stack.up(settings, wait=1, progress=said.append)
    assert any(line.startswith(f"waiting: {UNHELD}") for line in said), said

    real = stack.processes
    calls = 0

    def rebalanced(settings: Settings, **kw: object) -> list[stack.ProcessStatus]:
        nonlocal calls
        calls += 1
        if calls == 3:  # the group is rebalanced while `up` waits
            _beat(settings, both["evaluator"], requests=(6, 6))
        return real(settings, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(stack, "processes", rebalanced)
    assert stack.up(settings, wait=30) == KAFKA


def test_up_does_not_say_the_ledger_is_up_while_a_processor_runs_other_code(
    settings: Settings, both: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same walkthrough: the new `ledger up` left the healthy old-release processors running
    # and said "ledger is up" (exit 0). It still leaves them running (a restart replays the
    # governance history first: a pause the operator chooses), but says so and fails.
    from ledger.settings import KafkaSecurity

    monkeypatch.setattr(stack, "check_reachable", lambda bootstrap: None)
    monkeypatch.setattr(stack, "resolve_security", lambda *a, **k: KafkaSecurity())
    monkeypatch.setattr(stack, "create_topics", lambda *a, **k: [])
    runner = CliRunner()
    fine = runner.invoke(cli, ["up"])
    assert fine.exit_code == 0 and f"ledger is up on {KAFKA}" in fine.stdout, fine.output
    _beat(settings, both["evaluator"], code="0" * 64)
    refused = runner.invoke(cli, ["up"])
    assert refused.exit_code == 1 and "ledger is up" not in refused.stdout, refused.output
    assert f"error: {OTHER_CODE} [other_code]" in refused.stderr
    assert (
        f"evaluator already running (pid {both['evaluator']}), healthy, on other code"
        in refused.stderr
    )
    assert "restarting" not in refused.stderr and all(alive(pid) for pid in both.values())
    _beat(settings, both["command-processor"], name="command-processor", code=None)
    with pytest.raises(LedgerError, match="command-processor, evaluator run other code") as err:
        stack.up(settings)
    assert err.value.code == "other_code" and "restarts them on this code" in str(err.value)


def test_version_tells_two_builds_of_one_version_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ledger
    import ledger.kafka.snapshots as snapshots

    runner = CliRunner()
    shown = runner.invoke(cli, ["--version"])
    assert shown.exit_code == 0
    assert shown.stdout == f"ledger, version {ledger.__version__} (code {HERE[:12]})\n"
    patched = tmp_path / "request_handler.py"
    patched.write_text("a fix")
    files = snapshots.installed_files()
    monkeypatch.setattr(snapshots, "installed_files", lambda: [*files, patched])
    snapshots.installed_fingerprint.cache_clear()
    try:
        other = runner.invoke(cli, ["--version"]).stdout
    finally:
        snapshots.installed_fingerprint.cache_clear()
    assert (
        other.startswith(f"ledger, version {ledger.__version__} (code ") and other != shown.stdout
    )


def test_down_does_not_wait_the_full_grace_for_a_processor_that_cannot_reach_kafka(
    settings: Settings,
) -> None:
    # Both ignore SIGTERM, as a Faust worker that cannot commit to a vanished broker hangs on.
    pids = [_fake_processor(settings, n, ignore_term=True) for n in stack.PROCESSORS]
    started = time.monotonic()
    stopped = stack.down(settings).stopped
    took = time.monotonic() - started
    assert sorted(stopped) == sorted(stack.PROCESSORS)
    assert not any(alive(pid) for pid in pids)
    assert took < stack.STOP_GRACE, f"down took {took:.1f} s"


def _ignores_term(pid: int) -> bool:
    """Does process ``pid`` ignore SIGTERM yet (its ``SigIgn`` mask in /proc)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(
        (line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), "0"
    )
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


def test_a_processor_that_had_to_be_killed_says_who_killed_it_in_its_log(
    settings: Settings,
) -> None:
    # A chaos drill: with the broker gone, `down` killed the processors after their 3 s, and
    # `ps` then sent the operator to `dmesg` for an out-of-memory kill that never happened.
    log = settings.home / "logs" / "evaluator.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for kill, when in ((False, "after its 0.2 s to stop cleanly"), (True, "at once")):
        pid = _fake_processor(settings, "evaluator", ignore_term=True)
        deadline = time.monotonic() + 10  # its shell ignores SIGTERM once it has run `trap`
        while not _ignores_term(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        log.write_text(f"[t] evaluator INFO ledger.processor: starting: pid {pid}, code c\n")
        assert stack.ended_unannounced(log) is not None  # as an outside kill -9 would leave it
        assert stack.stop_processor(settings, "evaluator", grace=0.2, kill=kill)
        assert stack.ended_unannounced(log) is None
        assert (
            log.read_text()
            .splitlines()[-1]
            .endswith(
                f" evaluator WARNING ledger.processor: stopped: pid {pid} by `ledger` (down, or up "
                f"restarting it): killed (SIGKILL) {when}; the lines above say where it was"
            )
        )
    # One that stopped by itself keeps its own last line.
    pid = _fake_processor(settings, "evaluator")
    log.write_text(f"[t] evaluator INFO ledger.processor: starting: pid {pid}, code c\n"
                   f"[t] evaluator INFO ledger.processor: stopped: pid {pid}\n")  # fmt: skip
    assert stack.stop_processor(settings, "evaluator", grace=5)
    assert (
        log.read_text().splitlines()[-1]
        == f"[t] evaluator INFO ledger.processor: stopped: pid {pid}"
    )


def test_down_names_a_processor_that_ended_by_itself_before_its_turn(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A chaos drill: an evaluator that died while `down` stopped the others was named nowhere.
    pids = {n: _fake_processor(settings, n) for n in stack.PROCESSORS}
    listed = stack.processes

    def listed_then_killed(home: Settings) -> list[stack.ProcessStatus]:
        procs = listed(home)
        os.killpg(pids["evaluator"], signal.SIGKILL)  # after `down` saw it running
        deadline = time.monotonic() + 30  # a loaded machine (tests on every core) is slow
        while alive(pids["evaluator"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not alive(pids["evaluator"]), "the evaluator outlived its SIGKILL for 30 s"
        return procs

    monkeypatch.setattr(stack, "processes", listed_then_killed)
    notes: list[str] = []
    done = stack.down(settings, keep_broker=True, progress=notes.append)
    assert done.stopped == ["command-processor"]
    assert done.ended == ["evaluator"]
    assert done.evaluators == 1
    assert notes == [
        "note: evaluator had ended by itself before it was stopped: its log "
        f"{settings.home / 'logs' / 'evaluator.log'} may say why"
    ]


def test_down_stops_the_rest_when_one_processor_will_not_stop_and_keeps_the_broker(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: the first processor stuck after SIGKILL ended `down` there: the other
    # processors and the broker were left running, and nothing said what had been stopped.
    procs = [
        stack.ProcessStatus(name="evaluator-0", running=True, healthy=False, pid=101, log="x"),
        stack.ProcessStatus(name="evaluator-1", running=True, healthy=True, pid=102, log="x"),
        stack.ProcessStatus(name="command-processor", running=True, healthy=True, pid=103, log="x"),
    ]
    asked: list[str] = []

    def stop_processor(home: Settings, name: str, **kwargs: Any) -> bool:
        asked.append(name)
        if name == "evaluator-0":
            raise LedgerError("pid 101 still runs 5 s after SIGKILL (stuck in the kernel)")
        return True

    monkeypatch.setattr(stack, "processes", lambda home: procs)
    monkeypatch.setattr(stack, "stop_processor", stop_processor)
    monkeypatch.setattr(stack.broker, "stop", lambda home: asked.append("broker") or True)
    with pytest.raises(ProcessorError) as refused:
        stack.down(settings)
    assert asked == ["evaluator-0", "evaluator-1", "command-processor"]  # the broker kept
    assert str(refused.value) == (
        "could not stop evaluator-0 (evaluator-0: pid 101 still runs 5 s after SIGKILL (stuck "
        "in the kernel)); stopped: evaluator-1, command-processor; the broker was left running: "
        "run `ledger down` again once they are gone"
    )


# --------------------------------------------------------------------------- the log in an outage


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_repeating_library_error_is_logged_once_per_window_with_a_count() -> None:
    throttle = RepeatFilter(every=0.3)
    template = "Unable connect to node with id %s: %s"
    passed = [throttle.filter(_record("aiokafka", template, 1, f"try {i}")) for i in range(500)]
    assert passed.count(True) == 1 and passed[0]
    time.sleep(0.35)
    later = _record("aiokafka", template, 1, "again")
    assert throttle.filter(later)
    assert "[and 499 more like this in the last" in later.getMessage()


def test_the_projects_own_lines_are_never_thinned() -> None:
    throttle = RepeatFilter(every=60)
    records = [_record("ledger.evaluator", "evaluator stats: %s", i) for i in range(50)]
    assert all(throttle.filter(r) for r in records)


def test_dead_letters_are_logged_once_per_window_per_code() -> None:
    # A red team: 300,000 garbage records of 10 bytes grew the logs by 69 MB, a line each; the
    # dead-letters topic holds each letter anyway.
    from ledger.kafka.logs import DEAD_LETTER_LOGGER

    throttle = RepeatFilter(every=60)
    template = "dead-lettering %s[%s]@%s (%s): %s"

    def letter(offset: int, code: str) -> logging.LogRecord:
        record = _record(DEAD_LETTER_LOGGER, template, "t", 0, offset, code, "why")
        record.ledger_facility = code
        return record

    garbage = [throttle.filter(letter(n, "codec_error")) for n in range(1000)]
    assert garbage.count(True) == 1 and garbage[0]
    assert throttle.filter(letter(1000, "id_too_long"))  # another code is told at once


def test_librdkafka_repeats_are_thinned_per_facility() -> None:
    # confluent-kafka logs every librdkafka line with one template: (facility, client, text).
    throttle = RepeatFilter(every=60)
    template = "%s [%s] %s"
    refused = [
        throttle.filter(
            _record(
                "ledger.kafka.librdkafka",
                template,
                "FAIL",
                "rdkafka#consumer-1",
                f"Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after {i}ms)",
            )
        )
        for i in range(200)
    ]
    assert refused.count(True) == 1 and refused[0]
    other = _record("ledger.kafka.librdkafka", template, "GETPID", "rdkafka#producer-1", "retry")
    assert throttle.filter(other)  # another facility is another kind of line


def test_an_sdk_process_gets_librdkafka_lines_thinned_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An operator's walkthrough: an agent printed 1,034 librdkafka lines in 40 s of a broker
    # outage; only the processors thinned them. Any process that builds a librdkafka client
    # gets its logger thinned, whatever handler shows it.
    from ledger.kafka.clients import RDKAFKA_LOGGER, rdkafka_config

    rdkafka_config("127.0.0.1:9", {})
    rdkafka_config("127.0.0.1:9", {})  # once is enough: no second filter
    logger = logging.getLogger(RDKAFKA_LOGGER)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.ERROR, logger=RDKAFKA_LOGGER):
        for i in range(100):
            logger.error("%s [%s] %s", "FAIL", "rdkafka#consumer-2", f"refused (after {i}ms)")
    assert len([r for r in caplog.records if r.name == RDKAFKA_LOGGER]) == 1


def test_librdkafka_callbacks_keep_their_names_among_the_overrides() -> None:
    # A callback passed as an override kept its underscore-for-dot rename: "stats.cb" is no
    # librdkafka property, and the consumer was refused ("No such configuration property").
    from ledger.kafka.clients import RDKAFKA_CONSUMER_CONFIG, rdkafka_config

    def stats(raw: str) -> None:
        pass

    config = rdkafka_config(
        "127.0.0.1:9", RDKAFKA_CONSUMER_CONFIG, stats_cb=stats, fetch_wait_max_ms=5
    )
    assert config["stats_cb"] is stats and config["fetch.wait.max.ms"] == 5
    assert "stats.cb" not in config


def test_up_gives_a_processor_still_catching_up_its_whole_wait(
    settings: Settings, evaluator: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No first heartbeat yet: it is catching up with a long governance history. `ledger up
    # --wait` gives it that long, not the few seconds a processor that had been healthy gets to
    # reconnect (which would restart it, and it would start catching up all over again).
    import threading

    monkeypatch.setattr(stack, "RECOVERY_WAIT", 0.2)
    caught_up = threading.Timer(1.0, lambda: _beat(settings, evaluator))
    caught_up.start()
    said: list[str] = []
    try:
        stack._ensure(settings, "evaluator", bootstrap=KAFKA, progress=said.append, wait=20)
    finally:
        caught_up.cancel()
    assert "giving it 20 s to recover" in said[0] and said[-1].startswith("evaluator recovered")
    assert _evaluator(settings).pid == evaluator and _evaluator(settings).healthy


def test_up_says_how_to_wait_longer_for_a_processor_that_is_not_ready_in_time(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A processor that is alive but not ready when the wait ends: the error says it may still
    # be catching up, where its log is, and how to wait longer. (A stand-in that never beats.)
    (settings.home / "sleepy_worker.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", str(settings.home))
    monkeypatch.setitem(stack.PROCESSORS, "evaluator", "sleepy_worker")  # alive, never ready
    monkeypatch.setattr(stack, "resolve_security", lambda *a, **k: None)
    try:
        with pytest.raises(LedgerError, match=r"did not become ready within 1 s: it may still"):
            stack.start_processor(settings, "evaluator", bootstrap=KAFKA, timeout=1)
        runner = CliRunner()
        done = runner.invoke(cli, ["up", "--help"])
        assert done.exit_code == 0 and "--wait SECONDS" in done.output
    finally:
        stack.stop_processor(settings, "evaluator", kill=True)


@pytest.mark.parametrize("damage", ["garbled", "removed"])
def test_a_processor_whose_pid_file_was_lost_is_still_seen_and_stopped(
    settings: Settings, evaluator: int, damage: str
) -> None:
    # An operator's walkthrough: with its pid file garbled or removed, a running evaluator
    # was "not running" to `ps`, `up` started a second one, and `down` left the first.
    pid_file = settings.home / "run" / "evaluator.pid"
    if damage == "garbled":
        pid_file.write_text("garbage")
    else:
        pid_file.unlink()
    _beat(settings, evaluator)
    assert (_evaluator(settings).running, _evaluator(settings).pid) == (True, evaluator)
    assert pid_file.read_text() == str(evaluator)  # written again
    pid_file.unlink()
    assert stack.start_processor(settings, "evaluator", bootstrap=KAFKA, timeout=1) == evaluator
    pid_file.write_text("garbage")
    assert stack.stop_processor(settings, "evaluator", kill=True) is True
    assert not alive(evaluator)


def test_a_processor_that_dies_starting_says_why_in_its_own_words(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: `up` quoted the log's last line, often an earlier run's (or an
    # object repr 25 lines after the real error), and never the exit status.
    (settings.home / "broken_worker.py").write_text(
        "import logging, sys\n"
        "logging.basicConfig(format='[%(levelname)s] %(message)s')\n"
        "logging.error('SaslAuthenticationFailed: invalid credentials')\n"
        "print('consumer: <AIOKafkaConsumer object at 0x7fa5>')\n"
        "sys.exit(3)\n"
    )
    log = settings.home / "logs" / "evaluator.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("[ERROR] a line from yesterday's run\n")
    monkeypatch.setenv("PYTHONPATH", str(settings.home))
    monkeypatch.setitem(stack.PROCESSORS, "evaluator", "broken_worker")
    monkeypatch.setattr(stack, "resolve_security", lambda *a, **k: None)
    with pytest.raises(LedgerError) as raised:
        stack.start_processor(settings, "evaluator", bootstrap=KAFKA, timeout=30)
    message = str(raised.value)
    assert "exited during start-up (exit code 3)" in message
    assert "SaslAuthenticationFailed: invalid credentials" in message
    assert "yesterday" not in message

    (settings.home / "silent_worker.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n"
    )
    monkeypatch.setitem(stack.PROCESSORS, "evaluator", "silent_worker")
    with pytest.raises(LedgerError, match=r"stopped by SIGTERM .*it wrote nothing to its log"):
        stack.start_processor(settings, "evaluator", bootstrap=KAFKA, timeout=30)


def test_up_does_not_stop_a_processor_it_could_not_restart(
    settings: Settings, evaluator: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: with the run folder unwritable (as on a full disk), heartbeats
    # stopped, `up` stopped the working processor, then could not write its pid file to start
    # another: nothing answered commands any more.
    _beat(settings, evaluator, age=60.0)  # a heartbeat gone stale
    monkeypatch.setattr(stack, "RECOVERY_WAIT", 0.2)
    real = Path.write_bytes

    def full_disk(self: Path, data: bytes) -> int:
        if self.name.startswith(".probe-"):
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(LedgerError, match=r"No space left on device.*nothing was restarted"):
        stack._ensure(settings, "evaluator", bootstrap=KAFKA, progress=lambda _: None, wait=1)
    assert alive(evaluator)
    assert "cannot write its heartbeat file" in (_evaluator(settings).problem or "")


def test_down_waits_for_an_up_at_work(settings: Settings, evaluator: int) -> None:
    # An operator's walkthrough: `down` while `up` started the broker made `up` report "exited
    # with code 143 … NullPointerException", and while it started a processor, a stale line.
    import fcntl
    import threading

    said: list[str] = []
    with (settings.home / "run" / "up.lock").open("w") as held:  # as `ledger up` holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        downing = threading.Thread(
            target=stack.down,
            args=(settings,),
            kwargs={"keep_broker": True, "progress": said.append},
        )
        downing.start()
        deadline = time.monotonic() + 10
        while not said and time.monotonic() < deadline:
            time.sleep(0.01)
        assert said and "waiting for a `ledger up`" in said[0]
        assert alive(evaluator)  # nothing stopped while `up` works
    downing.join(timeout=30)
    assert not downing.is_alive() and not alive(evaluator)


def test_a_further_worker_whose_pid_file_was_lost_is_still_listed_and_stopped(
    settings: Settings,
) -> None:
    # A review: `evaluator-2` is known by its pid file only, so without it `ps` did not list it
    # and `down` left it running.
    pid = _fake_processor(settings, "evaluator-2")
    try:
        _beat(settings, pid, name="evaluator-2")
        (settings.home / "run" / "evaluator-2.pid").unlink()
        listed = {p.name: p for p in stack.processes(settings)}
        assert listed["evaluator-2"].pid == pid
        assert "evaluator-2" in stack.down(settings, keep_broker=True).stopped
        assert not alive(pid)
    finally:
        stack.stop_processor(settings, "evaluator-2", kill=True)


def test_a_data_directory_another_process_holds_is_in_use(tmp_path: Path) -> None:
    # The guard against a second broker on live data: Kafka holds a POSIX lock on data/.lock.
    import subprocess
    import sys

    from ledger.local import broker

    data = tmp_path / "data"
    data.mkdir()
    assert not broker._data_in_use(data)  # never started: no lock file
    (data / ".lock").touch()
    assert not broker._data_in_use(data)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(data / '.lock')!r}, os.O_RDWR)\n"
            "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert broker._data_in_use(data)
        assert broker._data_in_use(data)  # the probe took no lock of its own that lingers
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert not broker._data_in_use(data)


# ------------------------------------------------------------------ a container's health check


@pytest.mark.parametrize(
    ("age", "fetch_age", "healthy", "says"),
    [
        (0.0, 0.0, True, "healthy (pid 4242): heartbeat 0."),
        (30.0, 0.0, False, "unhealthy (pid 4242): no heartbeat for 30 s: its event loop is stuck"),
        (0.0, 12.0, False, f"unhealthy (pid 4242): no answer from Kafka at {KAFKA} for 12 s"),
        (0.0, None, False, f"unhealthy (pid 4242): no answer from Kafka at {KAFKA} ever"),
    ],
)
def test_a_container_health_check_judges_the_heartbeat_as_ps_does(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    age: float,
    fetch_age: float | None,
    healthy: bool,
    says: str,
) -> None:
    from processors.heartbeat import main

    now = time.time()
    ready = tmp_path / "ready"
    Heartbeat(
        pid=4242,
        bootstrap=KAFKA,
        at=now - age,
        fetched_at=None if fetch_age is None else now - fetch_age,
    ).write(ready)
    assert main([str(ready)]) == (0 if healthy else 1)
    out = capsys.readouterr().out
    assert out.startswith(says) and out.count("\n") == 1
    # The same rule as `ledger ps`: one place says what unhealthy is.
    beat = Heartbeat.read(ready)
    assert beat is not None and (beat.problem(now) is None) is healthy
    # A longer allowance forgives a late beat or fetch, never a broker that never answered.
    assert main([str(ready), "--stale-after", "60"]) == (0 if fetch_age is not None else 1)


def test_a_container_health_check_without_a_heartbeat_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from processors.heartbeat import main

    assert main([str(tmp_path / "ready")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("unhealthy: no heartbeat in ") and "catching up" in out
    (tmp_path / "ready").write_text("{garbled")
    assert main([str(tmp_path / "ready")]) == 1


def test_a_processor_started_before_its_credential_was_written_anew_is_restarted_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: deleting a role's credential file to change its password (as
    # the README says), then `ledger up`, gave the broker the new password and left the running
    # evaluator "healthy" on the old one: it could not log in after the broker's next restart,
    # and `ps` blamed Kafka.
    from ledger.discovery import credentials_file

    monkeypatch.setenv("LEDGER_HOME", str(tmp_path))
    monkeypatch.delenv("LEDGER_BOOTSTRAP", raising=False)
    local = Settings(home=tmp_path)  # the local broker: credentials from files
    pid = _fake_processor(local, "evaluator")
    try:
        _beat(local, pid)
        credential = credentials_file(local, "evaluator")
        credential.parent.mkdir(parents=True, exist_ok=True)
        credential.write_text("{}")
        started = (tmp_path / "run" / "evaluator.pid").stat().st_mtime
        os.utime(credential, (started - 60, started - 60))  # written before it started
        assert stack._status(local, "evaluator", KAFKA, time.time()).healthy
        os.utime(credential, (started + 60, started + 60))  # written anew since
        status = stack._status(local, "evaluator", KAFKA, time.time())
        assert not status.healthy and status.stale_credential
        assert (status.problem or "").startswith(f"started before its credential {credential}")
        restarted: list[str] = []
        monkeypatch.setattr(stack, "start_processor", lambda *a, **k: restarted.append(a[1]))
        started_at = time.monotonic()
        assert stack._ensure(local, "evaluator", bootstrap=KAFKA, progress=lambda _: None)
        assert restarted == ["evaluator"] and time.monotonic() - started_at < 10  # no 20 s wait
    finally:
        stack.stop_processor(local, "evaluator", kill=True)


def test_a_stale_credential_is_told_by_its_password_not_the_files_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A red team: a credential file dated in the future (clock skew, a restore keeping file
    # times, a touch) made every `ledger up` restart the role's processors and then call them
    # unhealthy, blaming a password change that never happened. A processor's heartbeat now
    # carries a fingerprint of the password it logged in with.
    from ledger.discovery import credential_fingerprint, credentials_file
    from ledger.files import write_private
    from ledger.settings import KafkaSecurity

    monkeypatch.setenv("LEDGER_HOME", str(tmp_path))
    monkeypatch.delenv("LEDGER_BOOTSTRAP", raising=False)
    local = Settings(home=tmp_path)

    def credential(password: str) -> None:
        write_private(
            credentials_file(local, "evaluator"),
            json.dumps({"sasl_plain_username": "evaluator", "sasl_plain_password": password}),
        )

    def fingerprint(password: str) -> str | None:
        return credential_fingerprint(
            KafkaSecurity(
                protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-512",
                username="evaluator",
                password=password,
            )
        )

    pid = _fake_processor(local, "evaluator")
    try:
        credential("first")
        _beat(local, pid, credential=fingerprint("first"))
        future = time.time() + 7200
        os.utime(credentials_file(local, "evaluator"), (future, future))
        assert stack._status(local, "evaluator", KAFKA, time.time()).healthy
        credential("second")  # deleted and written anew by `ledger up`
        status = stack._status(local, "evaluator", KAFKA, time.time())
        assert not status.healthy and status.stale_credential
        _beat(local, pid, credential=fingerprint("second"))  # restarted on it
        assert stack._status(local, "evaluator", KAFKA, time.time()).healthy
    finally:
        stack.stop_processor(local, "evaluator", kill=True)


def _running_local_broker(
    home: Path, monkeypatch: pytest.MonkeyPatch, *, answering: tuple[bool, str | None]
) -> None:
    """``home``'s local broker as running (pid 4242 on KAFKA), answering as ``answering``."""
    from ledger.local import broker

    monkeypatch.setenv("LEDGER_HOME", str(home))
    monkeypatch.delenv("LEDGER_BOOTSTRAP", raising=False)
    running = broker.BrokerStatus(
        running=True, bootstrap=KAFKA, pid=4242, kafka_version="4", log_dir="d", log_file="l"
    )
    monkeypatch.setattr(broker, "status", lambda settings: running)
    monkeypatch.setattr(broker, "answering", lambda settings, current: answering)


def test_ps_says_a_hung_local_broker_is_not_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: a broker frozen with SIGSTOP showed `healthy True` in `ps`
    # (its pid was alive), while `broker status` and `up` said it does not answer.
    from ledger.local import broker

    _running_local_broker(tmp_path, monkeypatch, answering=(False, None))
    shown = CliRunner().invoke(cli, ["ps", "--json"])
    assert shown.exit_code == 1
    assert json.loads(shown.stdout)["broker"]["answering"] is False
    said = CliRunner().invoke(cli, ["ps"])
    assert said.exit_code == 1 and f"the broker (pid 4242) {broker.NOT_ANSWERING}" in said.stderr
    monkeypatch.setattr(broker, "answering", lambda settings, current: (True, None))
    assert "the broker" not in CliRunner().invoke(cli, ["ps"]).stderr
    # A README check: a stale admin credential is not a hung broker, to be restarted.
    refused = (True, "SaslAuthenticationFailedError: invalid credentials")
    monkeypatch.setattr(broker, "answering", lambda settings, current: refused)
    said = CliRunner().invoke(cli, ["ps"])
    assert said.exit_code == 1 and "the broker (pid 4242) answers, but refuses the admin" in (
        said.stderr
    )
    assert broker.NOT_ANSWERING not in said.stderr


def test_ps_counts_the_waiting_requests_while_no_evaluator_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A chaos drill, then the review of its fix: with every evaluator down, `ps` showed
    # requests_waiting null, the broker never asked, exactly while the backlog grew.
    from ledger.local import broker

    _running_local_broker(tmp_path, monkeypatch, answering=(True, None))
    down = stack.ProcessStatus(name="evaluator", running=False, healthy=False, pid=None, log="l")
    monkeypatch.setattr(stack, "processes", lambda settings: [down])
    monkeypatch.setattr(stack, "kafka_address", lambda settings: KAFKA)
    asked: list[list[stack.ProcessStatus]] = []

    def waiting(settings: Settings, bootstrap: str, procs: Any) -> tuple[int, None]:
        asked.append(procs)
        return 24, None

    monkeypatch.setattr(stack, "requests_waiting", waiting)
    shown = CliRunner().invoke(cli, ["ps", "--json"])
    assert json.loads(shown.stdout)["requests_waiting"] == 24 and asked == [[down]]
    said = CliRunner().invoke(cli, ["ps"])
    assert "24 requests wait for an evaluator's answer" in said.stderr
    monkeypatch.setattr(broker, "answering", lambda settings, current: (False, None))
    assert json.loads(CliRunner().invoke(cli, ["ps", "--json"]).stdout)["requests_waiting"] is None
    assert len(asked) == 2  # a broker that does not answer is not asked


def test_evaluators_of_two_releases_are_not_a_shortfall_of_request_partitions() -> None:
    # A review: after an upgrade in place, an old evaluator (its heartbeat holds no count) beside
    # a new one holding 3 of 6 made `ps` exit 1 and `up` wait out --wait and fail, without the
    # other-code advice that applies.
    old = stack.ProcessStatus(
        name="evaluator", running=True, healthy=True, pid=1, log="l", same_code=False
    )
    new = stack.ProcessStatus(
        name="evaluator-2", running=True, healthy=True, pid=2, log="l", requests_held=3,
        requests_of=6,
    )  # fmt: skip
    assert stack.unheld_requests([old, new]) is None
    alone = stack.unheld_requests([new])
    assert alone is not None and alone.startswith(
        "the evaluators this home started hold 3 of 6 request partitions"
    )


@pytest.mark.parametrize("out_of_group", [None, 20.0])
def test_an_evaluator_holding_no_request_partition_is_healthy_while_it_may_be(
    settings: Settings, evaluator: int, out_of_group: float | None
) -> None:
    # A settled member of its group holding none (7 evaluators on 6 partitions), or one out of
    # its group for less than a rebalance after a broker restart takes, is not sick.
    _beat(settings, evaluator, requests=(0, 6), out_of_group=out_of_group)
    status = _evaluator(settings)
    assert status.healthy and status.problem is None


def test_a_container_health_check_says_an_evaluator_out_of_its_group_is_not_healthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An operator's walkthrough: an evaluator out of its consumer group after two broker
    # restarts in a row, requests_held 0 and its group EMPTY, was healthy for minutes, to `ps`
    # and to this health check alike.
    from processors.heartbeat import OUT_OF_GROUP_AFTER, main

    now = time.time()
    ready = tmp_path / "ready"
    beat = Heartbeat(
        pid=4242,
        bootstrap=KAFKA,
        at=now,
        fetched_at=now,
        requests_held=0,
        requests_of=6,
        out_of_group_since=now - OUT_OF_GROUP_AFTER - 10,
        group_state="query-coord/init",
    )
    beat.write(ready)
    assert main([str(ready)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("unhealthy (pid 4242): out of its consumer group for 70 s (librdkafka: ")
    assert Heartbeat.read(ready) == beat


def test_up_restarts_an_evaluator_that_falls_out_of_its_group_while_it_waits(
    settings: Settings, both: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same walkthrough: `up` found the evaluator healthy (its group had just lost it), then
    # waited its full minute for request partitions that evaluator would never take, and
    # failed, leaving it running; `ledger down --keep-broker && ledger up` mended it.
    from ledger.settings import KafkaSecurity

    monkeypatch.setattr(stack, "check_reachable", lambda bootstrap: None)
    monkeypatch.setattr(stack, "resolve_security", lambda *a, **k: KafkaSecurity())
    monkeypatch.setattr(stack, "create_topics", lambda *a, **k: [])
    monkeypatch.setattr(stack, "RECOVERY_WAIT", 0.2)
    _beat(settings, both["evaluator"], requests=(0, 6), out_of_group=1.0)
    real = stack.processes
    calls = 0

    def falls_out(settings: Settings, **kw: object) -> list[stack.ProcessStatus]:
        nonlocal calls
        calls += 1
        if calls == 3:  # while `up` waits for the partitions: out of its group for long
            _beat(settings, both["evaluator"], requests=(0, 6), out_of_group=70.0)
        return real(settings, **kw)  # type: ignore[arg-type]

    started: list[str] = []

    def start(settings: Settings, name: str, **kw: object) -> int:
        started.append(name)
        pid = _fake_processor(settings, name)
        _beat(settings, pid, requests=(6, 6))  # the new process joins at once
        return pid

    monkeypatch.setattr(stack, "processes", falls_out)
    monkeypatch.setattr(stack, "start_processor", start)
    said: list[str] = []
    try:
        assert stack.up(settings, wait=5, progress=said.append) == KAFKA
    finally:
        stack.stop_processor(settings, "evaluator", kill=True)
    assert started == ["evaluator"], said
    assert any(
        "restarting evaluator" in line and "out of its consumer group" in line for line in said
    )


# ------------------------------------------------------------------ what an operator on call sees


def _counts(**by: int) -> DecisionCounts:
    counts = DecisionCounts()
    for determination, n in by.items():
        for _ in range(n):
            counts.count(determination, "condition_error", "refund", 3)
    return counts


ERRORING = (
    "40 of 40 decisions were `error` (condition_error from refund v3: 40) in the last 60 s: "
    "requests are answered, but not decided"
)


def test_ps_says_when_an_evaluators_decisions_are_mostly_errors(
    settings: Settings, both: dict[str, int]
) -> None:
    # An operator's walkthrough: a promoted policy that errs on every request (its first rule
    # divides by zero) left `ps` green and exit 0: `ledger ps || alert` never fired.
    runner = CliRunner()
    _beat(settings, both["evaluator"], recent=_counts(allow=30, error=10))
    fine = runner.invoke(cli, ["ps"])
    assert fine.exit_code == 0 and "30 allow, 10 error (60 s)" in fine.stdout, fine.output
    _beat(settings, both["evaluator"], recent=_counts(error=40))
    erring = runner.invoke(cli, ["ps"])
    assert erring.exit_code == 1 and ERRORING in erring.stderr, erring.output
    assert "`ledger policy rollback NAME --reason WHY --by ACTOR`" in erring.stderr
    shown = runner.invoke(cli, ["ps", "--json"])
    assert shown.exit_code == 1
    procs = {p["name"]: p for p in json.loads(shown.stdout)["processors"]}
    assert procs["evaluator"]["recent"] == {
        "determinations": {"error": 40},
        "errors": [
            {"reason_code": "condition_error", "policy": "refund", "policy_version": 3, "count": 40}
        ],
    }
    assert procs["evaluator"]["recent_seconds"] == 60.0
    assert procs["command-processor"]["recent"] is None
    assert procs["evaluator"]["healthy"] is True  # it answers: `up` would not mend a policy


def test_the_evaluators_errors_are_judged_together(
    settings: Settings, both: dict[str, int]
) -> None:
    second = _fake_processor(settings, "evaluator-2")
    try:
        _beat(settings, both["evaluator"], recent=_counts(error=20))
        _beat(settings, second, name="evaluator-2", recent=_counts(allow=30))
        assert CliRunner().invoke(cli, ["ps"]).exit_code == 0  # 20 of 50
        _beat(settings, second, name="evaluator-2", recent=_counts(allow=10, error=15))
        said = CliRunner().invoke(cli, ["ps"])
        assert said.exit_code == 1 and "35 of 45 decisions were `error`" in said.stderr
    finally:
        stack.stop_processor(settings, "evaluator-2", kill=True)


def test_a_heartbeat_from_the_future_is_not_fresh(settings: Settings, both: dict[str, int]) -> None:
    # An operator's walkthrough: after the clock stepped back an hour (`faketime -f -1h ledger
    # ps`), an evaluator SIGSTOPped before it showed healthy, "0.0 s ago", exit 0. A running one
    # rewrites its heartbeat within a second, so one that stays in the future is not running.
    _beat(settings, both["evaluator"], at=time.time() + 3600)
    status = _evaluator(settings)
    assert not status.healthy and (status.problem or "").startswith(
        "its heartbeat is 3600 s in the future: the clock stepped back"
    ), status.problem
    assert status.heartbeat_age is not None and status.heartbeat_age < -3500
    said = CliRunner().invoke(cli, ["ps"])
    assert said.exit_code == 1 and "3600 s in the future" in said.stdout + said.stderr
    _beat(settings, both["evaluator"], at=time.time() + 2)  # two clocks' moment: fresh
    status = _evaluator(settings)
    assert status.healthy and status.heartbeat_age == 0.0
    _beat(settings, both["evaluator"], age=-2, fetch_age=-600)  # a broker heard "later"
    assert (_evaluator(settings).problem or "").startswith(
        f"its last answer from Kafka at {KAFKA} is dated 600 s in the future"
    )


def test_a_container_health_check_is_not_fooled_by_a_clock_stepped_back(tmp_path: Path) -> None:
    from processors.heartbeat import main

    now = time.time()
    Heartbeat(pid=4242, bootstrap=KAFKA, at=now + 3600, fetched_at=now + 3600).write(
        tmp_path / "ready"
    )
    assert main([str(tmp_path / "ready")]) == 1


def test_ps_and_up_say_first_when_the_homes_disk_is_nearly_full(
    settings: Settings, both: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: on a full disk `ps` said only that the broker is not running
    # and that `ledger up` starts it (which failed the same way).
    mb = 2**20
    assert stack.low_disk(settings, usage=lambda p: (100_000 * mb, 0, 30_000 * mb)) is None
    small = stack.low_disk(settings, usage=lambda p: (100_000 * mb, 0, 150 * mb))
    assert small is not None and small.startswith(
        f"the filesystem of {settings.home} is nearly full: 150 MB free (0.1 %)"
    )
    assert "free space there before anything else" in small
    # 0.9 % of 100 TB is 900 GB: no emergency (a review); 0.9 % under 2 GB is.
    assert stack.low_disk(settings, usage=lambda p: (10**8 * mb, 0, 900_000 * mb)) is None
    big = stack.low_disk(settings, usage=lambda p: (200_000 * mb, 0, 1_800 * mb))  # 0.9 %
    assert big is not None and "1800 MB free (0.9 %)" in big
    monkeypatch.setattr(stack.shutil, "disk_usage", lambda p: (100_000 * mb, 0, 10 * mb))
    said = CliRunner().invoke(cli, ["ps"])
    assert said.exit_code == 1, said.output
    assert said.stderr.startswith(f"the filesystem of {settings.home} is nearly full: 10 MB free")
    monkeypatch.setattr(stack, "check_reachable", lambda bootstrap: None)
    monkeypatch.setattr(stack, "resolve_security", lambda *a, **k: KafkaSecurity())
    monkeypatch.setattr(stack, "create_topics", lambda *a, **k: [])
    progress: list[str] = []
    stack.up(settings, progress=progress.append)
    assert progress[0].startswith(f"warning: the filesystem of {settings.home} is nearly full")


def test_a_home_not_made_yet_is_judged_by_the_folder_it_would_be_made_in(tmp_path: Path) -> None:
    seen: list[Path] = []
    unmade = Settings(home=tmp_path / "not" / "yet")
    assert stack.low_disk(unmade, usage=lambda p: seen.append(p) or (1, 0, 1)) is not None
    assert seen == [tmp_path]  # the broker's data under it: the same filesystem, once


def test_partitions_held_by_an_evaluator_this_home_did_not_start_are_not_a_shortfall(
    settings: Settings, both: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: with an evaluator started by hand (`python -m
    # processors.evaluator`, the README's way to scale) holding 2 of 6 request partitions,
    # every request was answered and `ps` exited 1: "requests to the others wait".
    asked: list[tuple[str, str, str]] = []

    def group(bootstrap: str, group: str, topic: str, **kw: object) -> dict[str, int]:
        asked.append((bootstrap, group, topic))
        return {"ours": 4, "by-hand": 2}

    monkeypatch.setattr(stack, "partitions_by_client", group)
    _beat(settings, both["evaluator"], requests=(4, 6), client="ours")
    said = CliRunner().invoke(cli, ["ps"])
    assert said.exit_code == 0, said.output
    assert said.stderr.strip() == (
        "2 request partitions are held by an evaluator this home did not start (`python -m "
        "processors.evaluator`?): `ps` does not judge its health; its own log and "
        "LEDGER_READY_FILE do"
    )
    assert asked == [(KAFKA, "ledger-evaluator", settings.topics.evaluation_requests)]
    monkeypatch.setattr(stack, "partitions_by_client", lambda *a, **k: {"ours": 4, "b": 1})
    short = CliRunner().invoke(cli, ["ps"])
    assert short.exit_code == 1
    assert "the evaluators hold 4 (and 1 by evaluators this home did not start) of 6" in (
        short.stderr
    )
    # An evaluator of a release that wrote no client id: its partitions cannot be told apart.
    _beat(settings, both["evaluator"], requests=(4, 6))
    assert stack.held_elsewhere(settings, KAFKA, stack.processes(settings)) is None


def test_when_the_broker_cannot_say_who_holds_them_ps_names_a_worker_started_by_hand(
    settings: Settings, both: dict[str, int]
) -> None:
    _beat(settings, both["evaluator"], requests=(4, 6), client="ours")  # 127.0.0.1:9: no answer
    said = CliRunner().invoke(cli, ["ps"])
    assert said.exit_code == 1
    assert (
        "unless an evaluator this home did not start (`python -m processors.evaluator`) holds "
        "them, which `ps` could not ask the broker" in said.stderr
    )


def test_a_librdkafka_warning_it_retries_itself_while_a_broker_starts_is_said_at_info() -> None:
    # An agent engineer's walkthrough: a client made soon after a broker restart printed this
    # WARNING on stderr with no logging configured, though librdkafka retries and succeeds.
    throttle = RepeatFilter(every=60)
    line = logging.LogRecord(
        "ledger.kafka.librdkafka", logging.WARNING, __file__, 1, "%s [%s] %s",
        ("GETPID", "rdkafka#producer-1", "Failed to acquire idempotence PID from broker "
         "127.0.0.1:9/1: Broker: Coordinator load in progress: retrying"), None,
    )  # fmt: skip
    logging.getLogger("ledger.kafka.librdkafka").setLevel(logging.INFO)
    try:
        assert throttle.filter(line) and line.levelno == logging.INFO
    finally:
        logging.getLogger("ledger.kafka.librdkafka").setLevel(logging.NOTSET)
    other = _record("ledger.kafka.librdkafka", "%s [%s] %s", "FAIL", "c", "Connection refused")
    other.levelno = logging.WARNING
    assert throttle.filter(other) and other.levelno == logging.WARNING


def test_partitions_a_gone_evaluator_of_this_host_still_holds_are_unheld_and_json_says_why(
    settings: Settings, both: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: after a kill -9, the dead evaluator's member held 3 of 6
    # partitions until its session timed out; they counted as an evaluator started by hand's,
    # `up` said "ledger is up" while requests to them waited, and `ps --json` exited 1 with
    # nothing saying why.
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is no process now
    dead = f"evaluator-{socket.gethostname()}-{gone.pid}"
    monkeypatch.setattr(stack, "partitions_by_client", lambda *a, **k: {"ours": 3, dead: 3})
    _beat(settings, both["evaluator"], requests=(3, 6), client="ours")
    said = CliRunner().invoke(cli, ["ps", "--json"])
    assert said.exit_code == 1
    report = json.loads(said.stdout)
    (problem,) = report["problems"]
    assert problem.startswith("the evaluators hold 3 of 6 request partitions: requests to")
    assert report["notes"] == []
    alive = f"evaluator-{socket.gethostname()}-{os.getpid()}"  # a live process: started by hand
    monkeypatch.setattr(stack, "partitions_by_client", lambda *a, **k: {"ours": 3, alive: 3})
    said = CliRunner().invoke(cli, ["ps", "--json"])
    assert said.exit_code == 0 and json.loads(said.stdout)["problems"] == []
    assert "held by an evaluator this home did not start" in json.loads(said.stdout)["notes"][0]


def test_a_retention_the_broker_refuses_is_an_error_not_the_old_value_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A review: kafka-python answers a refused AlterConfigs as a value; the old retention was
    # printed as if it were set, exit 0.
    import ledger.kafka.topics as topics

    class Refusing:
        def describe_configs(self, resources: Any) -> Any:
            raise AssertionError("read through _describe")

        def alter_configs(self, resources: Any) -> Any:
            return {"topic": {"t": "InvalidConfigurationException: Invalid value"}}

        def close(self) -> None:
            pass

    monkeypatch.setattr(topics, "make_admin", lambda *a, **k: Refusing())
    monkeypatch.setattr(topics, "_describe", lambda admin, resource: {"retention.ms": "1"})
    with pytest.raises(LedgerError, match="the broker refused the retention of t: Invalid"):
        topics.set_requests_retention("127.0.0.1:9", "t", ms=3_600_000)


def test_ps_says_when_it_could_not_ask_kafka_how_many_requests_wait(
    settings: Settings, evaluator: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: with a wrong password `ps` showed requests_waiting null and
    # exited 0 with no word of why.
    from ledger.errors import KafkaAccessDenied

    def refused(*_: object, **__: object) -> int:
        raise KafkaAccessDenied("Kafka refused to authenticate user 'admin'")

    _beat(settings, evaluator, age=0.5, fetch_age=0.2, requests=(3, 3))
    settings = replace(settings, security=KafkaSecurity(protocol="PLAINTEXT"))
    monkeypatch.setattr(stack, "records_waiting", refused)
    waiting, unasked = stack.requests_waiting(settings, KAFKA, stack.processes(settings))
    assert waiting is None
    assert unasked is not None and unasked.startswith("could not ask Kafka how many requests wait")
    assert unasked.endswith("[kafka_access_denied]")


def _evaluator_2_killed_before_down(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two evaluator workers started, and the second killed before ``down`` runs."""
    monkeypatch.setenv("LEDGER_HOME", str(settings.home))
    pids = {n: _fake_processor(settings, n) for n in ("evaluator", "evaluator-2")}
    os.killpg(pids["evaluator-2"], signal.SIGKILL)
    deadline = time.monotonic() + 30  # a loaded machine (tests on every core) is slow
    while alive(pids["evaluator-2"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(pids["evaluator-2"]), "evaluator-2 outlived its SIGKILL for 30 s"


def test_down_says_how_many_evaluators_ran_so_up_can_start_as_many(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A chaos drill: `up --evaluators 2; down; up` quietly brought back one evaluator. And a
    # README check and a second drill: with evaluator-2 killed before `down`, `down` said
    # neither that nor the count, removed its files, and a plain `up` ran one.
    _evaluator_2_killed_before_down(settings, monkeypatch)
    said = CliRunner().invoke(cli, ["down", "--keep-broker"])
    assert said.exit_code == 0, said.output
    assert said.stdout == "stopped: evaluator\n"
    assert "note: evaluator-2 had ended by itself before `ledger down` ran: its log " in (
        said.stderr
    )
    assert "note: 2 evaluators ran: `ledger up --evaluators 2` starts as many again" in said.stderr
    _fake_processor(settings, "evaluator")
    said = CliRunner().invoke(cli, ["down", "--keep-broker"])
    assert "note:" not in said.stderr, said.stderr  # one: a plain `up` does; nothing else ran
    assert "note:" not in CliRunner().invoke(cli, ["down", "--keep-broker"]).stderr


def test_down_json_carries_the_workers_that_had_ended_and_the_count(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: `down --json` said only what it stopped; a script running `up --evaluators N`
    # after it had to parse stderr for the count and for the worker that had died.
    _evaluator_2_killed_before_down(settings, monkeypatch)
    said = CliRunner().invoke(cli, ["down", "--keep-broker", "--json"])
    assert said.exit_code == 0, said.output
    assert json.loads(said.stdout) == {
        "stopped": ["evaluator"],
        "ended": ["evaluator-2"],
        "evaluators": 2,
    }
    said = CliRunner().invoke(cli, ["down", "--keep-broker", "--json"])
    assert json.loads(said.stdout) == {"stopped": [], "ended": [], "evaluators": 0}


def test_up_says_why_a_processor_it_started_is_no_longer_running(tmp_path: Path) -> None:
    # An operator's walkthrough: an evaluator that died on its first request was "not
    # running (log: …)" in `up`'s error, where `ps` quoted the error its log holds.
    log = tmp_path / "evaluator.log"
    log.write_text(
        "[t] evaluator INFO ledger.processor: starting: pid 7, code c from f, Kafka at k\n"
        "[t] evaluator CRITICAL ledger.processors: the evaluator's request loop failed: "
        "PermissionError: [Errno 1] Operation not permitted: 'inflight/x'\n"
    )
    gone = stack.ProcessStatus(
        name="evaluator",
        pid=None,
        running=False,
        healthy=False,
        problem="not running",
        log=str(log),
    )
    said = str(stack._not_healthy([gone]))
    assert said.startswith(
        "not healthy: evaluator: not running: its last run (pid 7) ended on an error its log "
        "holds: [t] evaluator CRITICAL ledger.processors: the evaluator's request loop failed: "
        "PermissionError"
    ), said
    assert said.endswith(f"(log: {log})")


def test_a_processor_whose_last_run_was_killed_is_said_to_have_been(tmp_path: Path) -> None:
    # A chaos drill: after a kill -9 (or the OOM killer), `ps` said only "not running", and its
    # log, which the troubleshooting table points at, holds no error: it just stops.
    log = tmp_path / "evaluator.log"
    start = "[t] evaluator INFO ledger.processor: starting: pid {}, code c from f, Kafka at k\n"
    log.write_text(start.format(41) + "[t] evaluator INFO ledger.processor: stopped: pid 41\n")
    assert stack.ended_unannounced(log) is None  # a clean stop
    with log.open("a") as more:
        more.write(start.format(42) + "[t] evaluator INFO ledger.evaluator: evaluator stats: …\n")
    said = stack.ended_unannounced(log)
    assert said is not None and said.startswith(
        "its last run (pid 42) ended without `stopped:` in its log: it was killed"
    )
    assert stack.ended_unannounced(tmp_path / "none.log") is None  # no log: nothing to say
    # An operator's walkthrough: a start that failed before its run began (its folder not
    # writable) logged its error after the last run's `stopped:`; `ps` said only "not
    # running". Its CRITICAL record is quoted; a line a client's text could write is not (a
    # review: an exception's message holding "\nerror: …" passed for it).
    failed = tmp_path / "failed.log"
    failed.write_text(
        start.format(40)
        + "[t] evaluator INFO ledger.processor: stopped: pid 40\n"
        + "error: evaluator: forged in a traceback\n"
    )
    assert stack.ended_unannounced(failed) is None
    with failed.open("a") as more:
        more.write(
            "[t] evaluator CRITICAL ledger.processor: evaluator: cannot write in /h/faust "
            "(Operation not permitted): … [processor_error]\n"
        )
    assert stack.ended_unannounced(failed) == (
        "its last start failed: [t] evaluator CRITICAL ledger.processor: evaluator: cannot "
        "write in /h/faust (Operation not permitted): … [processor_error]"
    )
    with failed.open("a") as more:  # started again since: that run is what is said
        more.write(start.format(41) + "[t] evaluator INFO ledger.processor: stopped: pid 41\n")
    assert stack.ended_unannounced(failed) is None
    # The review: a processor that stops itself (`die`, no `stopped:` line) or crashes says why
    # in its log: that is named, not the OOM killer.
    with log.open("a") as more:
        more.write(start.format(43))
        more.write("[t] evaluator CRITICAL ledger.processors: Kafka refused an output\x1b[2J\n")
    said = stack.ended_unannounced(log)
    assert said == (
        "its last run (pid 43) ended on an error its log holds: [t] evaluator CRITICAL "
        "ledger.processors: Kafka refused an output?[2J"
    )
    with log.open("a") as more:
        more.write(start.format(44) + "Fatal Python error: Segmentation fault\n\nThread 0x1\n")
    said = stack.ended_unannounced(log)
    assert said is not None and said.endswith("holds: Fatal Python error: Segmentation fault")
    # A red team: Faust stopped on a crash logs CRITICAL, then `stopped:` as the process exits:
    # that run ended on the error, not cleanly.
    with log.open("a") as more:
        more.write(start.format(45))
        more.write("[t] evaluator CRITICAL faust.worker: We experienced a crash! Reraising\n")
        more.write("[t] evaluator INFO ledger.processor: stopped: pid 45\n")
    said = stack.ended_unannounced(log)
    assert said == (
        "its last run (pid 45) ended on an error its log holds: [t] evaluator CRITICAL "
        "faust.worker: We experienced a crash! Reraising"
    )
    # A red team: an idle evaluator's stats lines push its start out of the last 256 KiB
    # after about 9 hours; a kill then went unsaid.
    with log.open("a") as more:
        more.write(start.format(46))
        more.write("[t] evaluator INFO ledger.evaluator: evaluator stats: …\n" * 40_000)
    said = stack.ended_unannounced(log)
    assert said is not None and said.startswith("its last run (pid 46) ended without `stopped:`")
    # A review: the chunk's first line is cut in two, and its end may be a client's quoted
    # text that looks like a record (a forged `starting:` would hide the run's CRITICAL line).
    quoted = "[1] x INFO ledger.processor: starting: pid 1, forged\n"
    stop = "[t] evaluator INFO ledger.processor: stopped: pid 46\n"
    filler = "x" * (256 * 1024 - len(quoted) - len(stop) - 1) + "\n"
    with log.open("a") as more:
        more.write("[t] evaluator CRITICAL faust.worker: crashed\n")
        more.write("[t] evaluator WARNING ledger.evaluator: refused " + quoted)  # cut at its [
        more.write(filler + stop)
    said = stack.ended_unannounced(log)
    assert said is not None and "crashed" in said, said
    # The last run is read, its start further back than the last 256 KiB: a clean one.
    with log.open("a") as more:
        more.write(start.format(47) + "x" * 300_000 + "\n")
        more.write("[t] evaluator INFO ledger.processor: stopped: pid 47\n")
    assert stack.ended_unannounced(log) is None


def test_a_refused_admin_credential_is_told_what_to_do_by_where_it_was_read(
    tmp_path: Path,
) -> None:
    # The review: with $LEDGER_CREDENTIALS unset, the advice was to unset it.
    from ledger.local import broker

    running = broker.BrokerStatus(
        running=True, bootstrap=KAFKA, pid=7, kafka_version="4", log_dir="d", log_file="l"
    )
    own = broker.admin_refused(Settings(home=tmp_path), running, "refused")
    assert "unset" not in own and f"put those credential files in {tmp_path / 'credentials'}" in own
    other = Settings(home=tmp_path, credentials_dir=tmp_path / "elsewhere")
    said = broker.admin_refused(other, running, "refused")
    assert "point $LEDGER_CREDENTIALS at the credentials the broker was given" in said


def test_a_broker_stopped_by_a_signal_runs_and_is_said_to_be_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's drill: once its listen queue was full of reconnecting clients, a SIGSTOPped
    # broker accepted no connection, and `ps`/`broker status` said "not running", sending the
    # operator to `ledger up`, which said it was "starting or stopping: wait a few seconds".
    from ledger.local import broker

    monkeypatch.setenv("LEDGER_HOME", str(tmp_path))
    state = tmp_path / "broker" / "broker.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"pid": 4242, "port": 1}))
    monkeypatch.setattr(broker, "alive", lambda pid, marker=None: True)
    monkeypatch.setattr(broker, "accepts", lambda port: False)
    halted = {4242}
    monkeypatch.setattr(broker, "stopped_by_signal", lambda pid: pid in halted)
    settings = Settings.from_env()
    current = broker.status(settings)
    assert current.running and current.pid == 4242
    said = broker.not_answering(4242)
    assert said.startswith("the broker (pid 4242) is stopped by a signal (SIGSTOP")
    assert "`kill -CONT 4242` resumes it, or `ledger broker stop && ledger up`" in said
    monkeypatch.setattr(broker, "process_state", lambda pid: "t")
    assert "is stopped under a debugger (traced" in broker.not_answering(4242)
    monkeypatch.setattr(broker, "process_state", lambda pid: "T")
    halted.clear()  # a process that runs and does not accept: not running, as before
    assert not broker.status(settings).running
    assert broker.not_answering(4242) == f"the broker (pid 4242) {broker.NOT_ANSWERING}"


def test_an_agent_only_machine_is_not_told_to_run_up(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A red team: a developer's laptop pointed at its team's ledger ($LEDGER_BOOTSTRAP) with the
    # agent credential alone was told "`ledger up` starts what is not running"; `up` then said
    # "creating topics on <the team's broker>…" before it was refused.
    creds = tmp_path / "agent-only"
    creds.mkdir(mode=0o700)
    (creds / "agent.json").write_text(
        json.dumps({"sasl_plain_username": "agent", "sasl_plain_password": "pw"})
    )
    (creds / "agent.json").chmod(0o600)
    monkeypatch.setenv("LEDGER_CREDENTIALS", str(creds))
    runner = CliRunner()
    ps = runner.invoke(cli, ["ps"])
    assert ps.exit_code == 1, ps.output  # nothing of this home runs: still said
    assert "`ledger up` starts what is not running" not in ps.stderr
    assert f"`ledger up` cannot run from this machine; the ledger at {KAFKA}" in ps.stderr
    # Such a machine has usually no ledger home at all (a README check: the missing home's
    # line, which speaks of `ledger up` starting a ledger there, came instead).
    nowhere = runner.invoke(cli, ["ps"], env={"LEDGER_HOME": str(tmp_path / "never-made")})
    assert nowhere.exit_code == 1 and "`ledger up` cannot run from this machine" in nowhere.stderr
    assert "does not exist" not in nowhere.stderr, nowhere.stderr
    up = runner.invoke(cli, ["up"])
    assert up.exit_code == 2, up.output
    assert "no admin credential in $LEDGER_CREDENTIALS" in up.stderr
    assert "creating topics" not in up.stderr
    assert not (settings.home / "run").exists()  # nothing written for a ledger it cannot run
    # With the admin credential at hand, `ps` advises `up` again.
    (creds / "admin.json").write_text(
        json.dumps({"sasl_plain_username": "admin", "sasl_plain_password": "pw"})
    )
    (creds / "admin.json").chmod(0o600)
    again = runner.invoke(cli, ["ps"])
    assert "`ledger up` starts what is not running" in again.stderr, again.stderr


def test_a_command_processor_this_home_did_not_start_holding_the_commands_is_a_problem(
    settings: Settings, both: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's upgrade drill: an earlier release's command processor, started by hand
    # beside the upgraded one, took the commands partition and kept it; the new one sat idle
    # and healthy, `ps` green, while the earlier release's rules accepted what the new refuse.
    group = settings.topics.group("ledger-command-processor")
    ours = static_instance_id(settings, group)
    asked: list[tuple[str, str, str]] = []

    def members(holding: list[tuple[str, str | None, int]]) -> Any:
        def described(bootstrap: str, group: str, topic: str, **kw: object) -> Any:
            asked.append((bootstrap, group, topic))
            return holding

        return described

    monkeypatch.setattr(stack, "members_holding", members([(group, ours, 1)]))
    assert CliRunner().invoke(cli, ["ps"]).exit_code == 0
    assert asked == [(KAFKA, group, settings.topics.commands)]
    monkeypatch.setattr(
        stack, "members_holding", members([(group, ours, 0), ("ledger-command-processor", None, 1)])
    )
    said = CliRunner().invoke(cli, ["ps"])
    assert said.exit_code == 1
    assert (
        "the commands partition is held by a command processor this home did not start (client "
        "id ledger-command-processor, not a static member): it applies the commands, by its own "
        "release's rules, and this home's waits"
    ) in said.stderr, said.stderr
    monkeypatch.setattr(stack, "members_holding", members([(group, ours, 0), (group, None, 0)]))
    assert CliRunner().invoke(cli, ["ps"]).exit_code == 0  # nobody holds it: a rebalance


def test_the_static_instance_id_is_the_homes_through_a_link_too(tmp_path: Path) -> None:
    # A review: `ps` through a link to the home (which the README supports) took the home's
    # own command processor for another's, and exited 1.
    real = tmp_path / "home"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    group = "ledger-command-processor"
    ours = static_instance_id(Settings(home=real), group)
    assert static_instance_id(Settings(home=tmp_path / "link"), group) == ours


def test_a_broker_whose_log_does_not_end_in_a_clean_shutdown_was_killed_or_crashed(
    tmp_path: Path,
) -> None:
    # An operator's drill: a broker killed with SIGKILL read exactly as one stopped cleanly.
    from ledger.local.broker import BrokerStatus, not_running

    log = tmp_path / "broker.log"

    def said() -> str:
        return not_running(
            BrokerStatus(
                running=False,
                bootstrap=None,
                pid=None,
                kafka_version="4",
                log_dir="",
                log_file=str(log),
            )
        )

    assert said() == "the broker is not running"  # no log: never ran here
    log.write_text(
        "[…] INFO [data-plane Kafka Request Handler on Controller 1] shut down completely "
        "(kafka.server.KafkaRequestHandlerPool)\n"
    )
    assert said() == "the broker is not running"
    with log.open("a") as more:  # started again (many lines), then killed
        more.writelines(f"[…] INFO [Partition p-{n} broker=1] Log loaded\n" for n in range(25))
    assert said().startswith(
        f"the broker is not running, and its log ({log}) does not end in a clean shutdown: it "
        "was killed (SIGKILL, the OOM killer) or it crashed"
    )
