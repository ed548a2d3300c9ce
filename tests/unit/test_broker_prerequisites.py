"""The local broker's prerequisites: a missing or old tool, or a failed download, is one clear line.

Real ``java``/``mvn`` are replaced by tiny scripts on a private PATH: what is under test is how the
project reports them, not Kafka (the broker itself is exercised by the integration tests).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli.app import cli
from ledger.errors import BrokerError, PrerequisiteMissing
from ledger.local import broker
from ledger.settings import Settings


def _tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, Path]:
    """Settings with an empty cache and home, and a PATH holding only what the test puts there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return Settings(home=tmp_path / "home", cache=tmp_path / "cache"), bin_dir


def test_missing_maven_names_what_to_install(bare: tuple[Settings, Path]) -> None:
    settings, _ = bare
    with pytest.raises(PrerequisiteMissing, match=r"`mvn` not found on PATH: install Apache Maven"):
        broker.fetch(settings)


def test_missing_java_names_what_to_install(bare: tuple[Settings, Path]) -> None:
    settings, _ = bare
    with pytest.raises(PrerequisiteMissing, match=r"`java` not found on PATH: install Java 17"):
        broker.start(settings)


def test_an_old_java_is_refused_with_the_version_found(bare: tuple[Settings, Path]) -> None:
    settings, bin_dir = bare
    _tool(bin_dir, "java", """echo 'openjdk version "11.0.22" 2024-01-16' >&2""")
    with pytest.raises(PrerequisiteMissing, match=r"needs Java 17 or newer, found Java 11"):
        broker.start(settings)


def test_a_failed_download_reports_mavens_error_and_leaves_no_partial_cache(
    bare: tuple[Settings, Path],
) -> None:
    settings, bin_dir = bare
    _tool(bin_dir, "java", """echo 'openjdk version "17.0.9" 2023-10-17' >&2""")
    _tool(
        bin_dir,
        "mvn",
        "echo '[ERROR] Could not transfer artifact org.apache.kafka:kafka_2.13'; exit 1",
    )
    with pytest.raises(
        BrokerError, match=r"could not fetch Kafka .*Could not transfer artifact.*retry"
    ):
        broker.fetch(settings)
    assert not list(settings.cache.rglob(".complete")), "a failed fetch must not look complete"


def test_cli_broker_start_without_java_is_one_line_and_exit_6(
    bare: tuple[Settings, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _ = bare
    monkeypatch.setenv("LEDGER_HOME", str(settings.home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(settings.cache.parent))
    result = CliRunner().invoke(cli, ["broker", "start"])
    assert result.exit_code == 6
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: `java` not found on PATH"), result.output


@pytest.mark.parametrize(
    ("cores", "network", "io"), [(1, 1, 2), (2, 1, 2), (4, 2, 4), (8, 3, 8), (64, 3, 8)]
)
def test_the_local_broker_sizes_its_request_threads_to_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, network: int, io: int
) -> None:
    monkeypatch.setattr(broker.os, "cpu_count", lambda: cores)
    text = broker._server_properties(tmp_path / "data", 9092, 9093)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert (props["num.network.threads"], props["num.io.threads"]) == (str(network), str(io))


@pytest.mark.parametrize(
    ("status", "says"),
    [(143, "stopped during start-up (SIGTERM"), (1, "exited with code 1 during start-up")],
)
def test_a_broker_stopped_while_starting_is_told_from_one_that_failed(
    tmp_path: Path, status: int, says: str
) -> None:
    # An operator's walkthrough: `ledger down` during `ledger up` made `up` report "exited with
    # code 143: java.lang.NullPointerException …", which read like a broker bug.
    import shutil

    from ledger.local.processes import spawn_detached

    sh = shutil.which("sh")
    assert sh is not None
    pid = spawn_detached([sh, "-c", f"exit {status}"], env={}, log=tmp_path / "broker.out")
    with pytest.raises(BrokerError, match=re.escape(says)):
        broker._wait_ready(pid, "127.0.0.1:9", None, tmp_path, timeout=30)


def test_a_failed_start_quotes_what_this_start_wrote_not_an_earlier_run(tmp_path: Path) -> None:
    # An operator's walkthrough: a start that failed on a bad JVM option quoted the previous
    # run's clean shutdown lines from broker.log; the cause was only in broker.out, unnamed.
    import shutil

    from ledger.local.processes import spawn_detached

    (tmp_path / "broker.log").write_text(
        "[2026-12-05 15:42:33,424] ERROR an error of yesterday's run\n"
        "[2026-12-05 15:42:33,649] INFO shut down completely\n"
    )
    (tmp_path / "broker.out").write_text("an earlier run's output\n")
    before = broker._log_sizes(tmp_path)
    sh = shutil.which("sh")
    assert sh is not None
    pid = spawn_detached(
        [sh, "-c", "echo \"Error: Unrecognized VM option 'NoSuchOption'\"; exit 1"],
        env={},
        log=tmp_path / "broker.out",
    )
    with pytest.raises(BrokerError) as failed:
        broker._wait_ready(pid, "127.0.0.1:9", None, tmp_path, timeout=30, before=before)
    said = str(failed.value)
    assert "Unrecognized VM option 'NoSuchOption'" in said
    assert "yesterday" not in said and "earlier run" not in said
    assert str(tmp_path / "broker.out") in said


def test_a_broker_that_accepts_but_does_not_answer_is_told_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: a hung broker (SIGSTOP) was "running" to `broker status`
    # (exit 0), and `ledger up` said "already running", then failed telling them to run
    # `ledger up`. Its port accepts; its Kafka never answers.
    import socket

    from click.testing import CliRunner

    from ledger.cli.app import cli
    from ledger.settings import Settings

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    port = hung.getsockname()[1]
    running = broker.BrokerStatus(
        running=True, bootstrap=f"127.0.0.1:{port}", pid=4242, kafka_version="4.4.0",
        log_dir=str(tmp_path), log_file=str(tmp_path / "broker.log"), secured=False,
    )  # fmt: skip
    monkeypatch.setattr(broker, "status", lambda settings: running)
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path / "home"))
    try:
        with pytest.raises(BrokerError, match=r"does not answer Kafka requests.*broker stop"):
            broker.start(Settings(home=tmp_path / "home"), insecure=True)
        result = CliRunner().invoke(cli, ["broker", "status", "--json"])
        assert result.exit_code == 1
        assert json.loads(result.stdout)["answering"] is False
        assert "`ledger broker stop && ledger up` restarts it" in result.stderr
    finally:
        hung.close()


def test_a_readiness_probe_of_a_broker_not_listening_leaves_no_socket_open() -> None:
    """While a broker starts, ``_kafka_ready`` asks a port nothing listens on yet. kafka-python
    left open both its failed constructor's wake-up sockets and the socket of each refused
    connection, for a later garbage collection whose ResourceWarning then failed whichever test
    was running (a CI run's ``test_export``)."""
    import gc
    import socket

    def open_sockets() -> set[int]:
        gc.collect()
        found = (o for o in gc.get_objects() if isinstance(o, socket.socket))
        return {id(s) for s in found if s.fileno() != -1}

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a free port: connections to it are refused
    before = open_sockets()
    assert broker._kafka_ready(f"127.0.0.1:{port}") is False
    assert open_sockets() - before == set()


def test_the_broker_moves_off_its_port_only_for_sockets_of_this_user_seen_there() -> None:
    # A red team: another user took the port while the stack restarted, the broker moved, and
    # running agents reconnected to its relay. A review: bound without listening, a socket is
    # in no table, so the broker moved, and it listened after.
    import socket

    from ledger.errors import LedgerError
    from ledger.local.broker import _refuse_held_by_another, port_holders

    with socket.socket() as mine:
        mine.bind(("127.0.0.1", 0))
        port = mine.getsockname()[1]
        assert port_holders(port) == set()  # bound, not listening: no table shows it
        with pytest.raises(LedgerError, match="cannot be seen listening"):
            _refuse_held_by_another(port)
        mine.listen()
        assert port_holders(port) == {os.getuid()}
        _refuse_held_by_another(port)  # this user's own: the broker may move
        # A review: a client's connection given the old port as its own (an ephemeral port,
        # as the broker's are) is a socket of its user there too.
        with socket.create_connection(("127.0.0.1", port)) as client:
            ephemeral = client.getsockname()[1]
            assert port_holders(ephemeral) == {os.getuid()}
            _refuse_held_by_another(ephemeral)


def test_broker_status_says_a_broker_whose_log_ends_uncleanly_was_killed_or_crashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: only `ps` told a killed broker from a stopped one.
    log = tmp_path / "broker.log"
    log.write_text("".join(f"[…] INFO [Partition p-{n} broker=1] Log loaded\n" for n in range(30)))
    down = broker.BrokerStatus(
        running=False, bootstrap=None, pid=None, kafka_version="4.4.0",
        log_dir=str(tmp_path), log_file=str(log), secured=True,
    )  # fmt: skip
    monkeypatch.setattr(broker, "status", lambda settings: down)
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(cli, ["broker", "status"])
    assert result.exit_code == 1
    assert "does not end in a clean shutdown: it was killed" in result.stderr, result.stderr
