"""What a hostile or careless user types gets one line on stderr, the documented exit code, and
never a traceback or a hang (issue 8, item 5).

No broker is needed: the addresses are malformed, refused, or a local socket that accepts TCP
but never answers Kafka (what a firewall or a wrong port looks like).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger.cli.app import cli
from ledger.errors import KafkaUnavailable, UsageError
from ledger.kafka.clients import check_reachable, make_consumer
from ledger.settings import parse_bootstrap

ROOT = Path(__file__).resolve().parents[2]
REFUND = ROOT / "examples" / "policies" / "refund.yaml"

# Kafka commands of every group, as a user would type them (an address comes from the env).
KAFKA_COMMANDS = [
    ["policy", "list"],
    ["policy", "propose", str(REFUND), "--by", "human:admin"],
    ["grant", "list"],
    ["topics", "create"],
    ["decisions"],
    ["evaluate", "--action", "a.b", "--principal", "agent:x", "--resource", "r:1"],
    ["replay", "--at", "2026-01-01T00:00:00Z"],
    ["up"],
]


def _one_line(result: Result, exit_code: int) -> str:
    """The one error line (progress lines such as `creating topics…` may come before it)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert errors == lines[-1:] and "Traceback" not in result.stderr, result.stderr
    return errors[0]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def mute_server() -> Iterator[str]:
    """A loopback port that accepts TCP connections and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def babbling_server() -> Iterator[str]:
    """A loopback port that answers every connection, but not in Kafka (an HTTP server on the
    wrong port): librdkafka logs a line for each reply it cannot read, several a second."""
    import threading

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        server.settimeout(0.2)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                with conn:
                    try:
                        conn.settimeout(2)
                        conn.recv(4096)
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    except OSError:
                        pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{server.getsockname()[1]}"
        finally:
            stop.set()
            thread.join(5)


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A loopback port whose SYNs go unanswered: a listener with a full backlog drops them, as a
    firewall or an unrouted address does."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        address = server.getsockname()
        filler = socket.create_connection(address, timeout=2)  # fills the backlog of one
        try:
            yield f"127.0.0.1:{address[1]}"
        finally:
            filler.close()


# --------------------------------------------------------------------------- bootstrap strings


@pytest.mark.parametrize("command", KAFKA_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_malformed_bootstrap_is_a_usage_error_not_a_traceback(
    command: list[str], home: Path
) -> None:
    result = CliRunner().invoke(cli, command, env={"LEDGER_BOOTSTRAP": "not-a-host:zz"})
    line = _one_line(result, 2)
    assert "port 'zz'" in line and "HOST:PORT" in line and "[usage]" in line


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not-a-host:zz", "port 'zz'"),
        ("broker1", "has no port"),
        (":9092", "has no host"),
        ("broker1:0", "port '0'"),
        ("broker1:65536", "port '65536'"),
        ("a:1,,b:2", "an empty entry"),
        ("bad host:9092", "not a host name"),
        ("broker1\n:9092", "not a host name"),  # `$` matched before the line break
    ],
)
def test_bootstrap_strings_are_checked_entry_by_entry(value: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        parse_bootstrap(value)


def test_good_bootstrap_strings_parse() -> None:
    assert parse_bootstrap("b1:9092, b2.example.com:19092,[::1]:9093") == (
        ("b1", 9092),
        ("b2.example.com", 19092),
        ("::1", 9093),
    )


def test_the_bootstrap_flag_is_checked_too(home: Path) -> None:
    result = CliRunner().invoke(cli, ["decisions", "--bootstrap", "localhost:http"])
    assert "port 'http'" in _one_line(result, 2)


def test_a_processor_with_a_malformed_bootstrap_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "LEDGER_HOME": str(tmp_path), "LEDGER_BOOTSTRAP": "not-a-host:zz"}
    done = subprocess.run(
        [sys.executable, "-m", "processors.evaluator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "port 'zz'" in done.stderr


# --------------------------------------------------------------------------- unreachable Kafka

# Generous: kafka-python alone waited its 30 s bootstrap timeout before saying anything.
PROMPTLY = 15.0


@pytest.mark.parametrize("command", KAFKA_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_refused_bootstrap_is_reported_at_once(command: list[str], home: Path) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(cli, command, env={"LEDGER_BOOTSTRAP": "127.0.0.1:1"})
    took = time.monotonic() - started
    line = _one_line(result, 7)
    assert "cannot reach Kafka at 127.0.0.1:1" in line and "connection refused" in line
    assert "[kafka_unavailable]" in line
    assert took < PROMPTLY, f"took {took:.1f} s"


@pytest.mark.parametrize(
    "command", [["policy", "list"], ["topics", "create"], ["up"]], ids=lambda c: " ".join(c[:2])
)
def test_a_server_that_never_answers_kafka_is_reported_within_seconds(
    command: list[str], home: Path, mute_server: str
) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(cli, command, env={"LEDGER_BOOTSTRAP": mute_server})
    took = time.monotonic() - started
    line = _one_line(result, 7)
    # kafka-python's clients cannot reach it; librdkafka's (the topic readers) cannot read its
    # metadata: one line either way.
    assert f"cannot reach Kafka at {mute_server}" in line or (
        f"cannot read Kafka's metadata at {mute_server}" in line
    )
    assert "[kafka_unavailable]" in line
    assert took < PROMPTLY, f"took {took:.1f} s"


@pytest.mark.parametrize(
    "command",
    [
        ["export", "--out", "{tmp}/export"],
        ["evaluate", "--action", "a.b", "--principal", "agent:x", "--resource", "r:1"],
    ],
    ids=lambda c: c[0],
)
def test_a_server_that_answers_but_not_in_kafka_is_one_line_within_seconds(
    command: list[str], tmp_path: Path, babbling_server: str
) -> None:
    # The commands that use librdkafka: its own lines (one per unreadable reply, several a
    # second) were all printed to stderr before the error line, by Python's last-resort handler.
    env = {**os.environ, "LEDGER_HOME": str(tmp_path / "home"), "LEDGER_BOOTSTRAP": babbling_server}
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ledger.cli.app import main; main()",
            *[part.format(tmp=tmp_path) for part in command],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 7, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error") and babbling_server in lines[0], lines
    assert took < PROMPTLY, f"took {took:.1f} s"


def test_an_address_that_drops_connections_is_reported_within_seconds(black_hole: str) -> None:
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=r"no answer within 2 s.*is it running"):
        make_consumer(black_hole)
    assert time.monotonic() - started < PROMPTLY


def test_reachability_names_each_server_and_why(black_hole: str) -> None:
    with pytest.raises(KafkaUnavailable) as caught:
        check_reachable(f"127.0.0.1:1,no-such-host.invalid:9092,{black_hole}", timeout=0.5)
    message = str(caught.value)
    assert "127.0.0.1:1: connection refused" in message
    assert "no-such-host.invalid: unknown host" in message
    assert f"{black_hole}: no answer within 0.5 s" in message


# --------------------------------------------------------------------------- files that are not


def _ledger(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real console script in a subprocess: a hang fails the test instead of the suite."""
    env = {**os.environ, "LEDGER_HOME": str(cwd / "home"), "LEDGER_BOOTSTRAP": "127.0.0.1:1"}
    return subprocess.run(
        [sys.executable, "-c", "from ledger.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["policy", "eval", "{}", "--facts", "{}", "--action", "a", "--principal", "p:x"],
        ["policy", "validate", "{}"],
        ["policy", "test", "{}"],
        ["policy", "propose", "{}", "--by", "human:admin"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_device_or_fifo_as_a_policy_file_is_refused_without_hanging(
    command: list[str], special: str, tmp_path: Path
) -> None:
    path = special
    if special == "fifo":
        path = str(tmp_path / "policy.yaml")
        os.mkfifo(path)
    done = _ledger(*[path if arg == "{}" else arg for arg in command], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a regular file" in lines[0], done.stderr


def test_a_policy_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 30_000)  # 300,000 bytes, over the 256 KiB limit
    result = CliRunner().invoke(cli, ["policy", "validate", str(big)])
    assert "is larger than 262,144 bytes" in _one_line(result, 2)


def test_a_directory_without_policies_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["policy", "validate", str(tmp_path)])
    assert f"no .yaml or .yml files in {tmp_path}" in _one_line(result, 2)


# --------------------------------------------------------------------------- an unusable home


@pytest.mark.parametrize(
    ("command", "exit_code"),
    [(["ps"], 1), (["down"], 0), (["broker", "status"], 1), (["up"], 2), (["policy", "list"], 7)],
    ids=lambda c: " ".join(c) if isinstance(c, list) else str(c),
)
def test_a_ledger_home_that_is_a_file_is_no_traceback(
    command: list[str], exit_code: int, tmp_path: Path
) -> None:
    home = tmp_path / "not-a-dir"
    home.write_text("")
    result = CliRunner().invoke(cli, command, env={"LEDGER_HOME": str(home)})
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    if exit_code == 1 and command not in (["broker", "status"], ["ps"]):  # those: "not running"
        assert "Not a directory" in _one_line(result, 1) and "[os_error]" in result.stderr
    if command == ["up"]:  # refused before anything is written there
        assert "not-a-dir is not a folder" in _one_line(result, 2)
        assert "[unsafe_folder]" in result.stderr


def test_ps_refuses_a_malformed_bootstrap_as_every_command_does(tmp_path: Path) -> None:
    # An operator's walkthrough: LEDGER_BOOTSTRAP=nohost:99999 ledger ps reported every
    # processor as "started with Kafka at …, but Kafka is at nohost:99999 now".
    result = CliRunner().invoke(
        cli, ["ps"], env={"LEDGER_HOME": str(tmp_path), "LEDGER_BOOTSTRAP": "nohost:99999"}
    )
    assert result.exit_code == 2, result.output
    assert "port '99999'" in _one_line(result, 2) and "1-65535" in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_a_timeout_that_is_not_a_duration_is_a_usage_error(value: str, home: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--action",
            "a",
            "--principal",
            "agent:x",
            "--resource",
            "r",
            "--timeout",
            value,
        ],
    )
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["grant", "issue", "--to", "svc:x", "--actions", "a", "--resource", "r", "--by", "human:a"],
        ["grant", "issue", "--to", "agent:b", "--actions", "a", "--resource", "r", "--by", "alice"],
        ["policy", "approve", "refund", "1", "--by", "human:al ice"],
        ["role", "assign", "agent:b", "role:ops", "--by", "human:-x"],
    ],
)
def test_a_principal_the_ledger_would_refuse_is_refused_before_connecting(
    command: list[str], home: Path
) -> None:
    # The core's rule, not a looser one: the processor would reject it (exit 4) after a round trip.
    result = CliRunner().invoke(cli, command, env={"LEDGER_BOOTSTRAP": "127.0.0.1:1"})
    line = _one_line(result, 2)
    assert "is not a principal" in line and "agent, tool, human, role, service" in line


@pytest.mark.parametrize(
    ("facts", "said"),
    [
        ('{"amount": 1' + "0" * 20 + "}", "does not fit a 64-bit long"),
        ('{"note": "\\udc80"}', "surrogates not allowed"),
    ],
    ids=["beyond-64-bits", "lone-surrogate"],
)
def test_facts_the_wire_cannot_carry_are_bad_input_before_connecting(
    facts: str, said: str, home: Path
) -> None:
    # `evaluate` said exit 5 (an undecodable record) where `policy eval` says exit 3; and it
    # connected first (exit 7 here, where nothing listens) before finding the facts unsendable.
    command = ["evaluate", "--action", "a.b", "--principal", "agent:x", "--resource", "r:1"]
    result = CliRunner().invoke(
        cli, [*command, "--facts", facts], env={"LEDGER_BOOTSTRAP": "127.0.0.1:1"}
    )
    line = _one_line(result, 3)
    assert "the ledger's SDK would refuse to send this request" in line and said in line


def test_a_flag_the_wire_cannot_carry_is_named(home: Path) -> None:
    # A lone surrogate reaches argv through surrogateescape; it was "facts_invalid" with a raw
    # UnicodeEncodeError that named no field.
    command = ["evaluate", "--action", "a.b", "--principal", "agent:x", "--resource", "r\udc80"]
    result = CliRunner().invoke(cli, command, env={"LEDGER_BOOTSTRAP": "127.0.0.1:1"})
    line = _one_line(result, 2)
    assert "--resource is not text the ledger can carry (a lone surrogate at character 2)" in line


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (
            ["policy", "promote", "refund", "1", "--to", "canary", "--percent", "0", "--by", "h:a"],
            "Invalid value for '--percent'",
        ),
        (["policy", "rollback", "refund", "--by", "human:a"], "Missing option '--reason'"),
        (["policy", "approvex"], "No such command 'approvex': did you mean 'cli policy approve'?"),
        # An operator's upgrade notes: `audit export` is the top level's `export`.
        (["audit", "export"], "No such command 'export': did you mean 'cli export'?"),
        (["polcy"], "No such command 'polcy': did you mean 'cli policy'?"),
        (["--bogus"], "No such option: --bogus"),
        (["policy", "approve", "refund", "vx", "--by", "human:a"], "'vx' is not a version"),
        # click says no context for this one: the help named is still the subcommand's
        (["policy", "approve", "x", "1", "--by"], "policy approve --help'"),
    ],
)
def test_a_usage_mistake_is_one_line_naming_the_help_to_read(
    command: list[str], said: str, home: Path
) -> None:
    result = CliRunner().invoke(cli, command, env={"LEDGER_BOOTSTRAP": "127.0.0.1:1"})
    line = _one_line(result, 2)
    assert said in line and line.endswith("--help') [usage]") and "Usage:" not in result.output


def test_a_version_is_taken_as_the_cli_prints_it(home: Path) -> None:
    # `v3` is how tables show versions; it gets as far as Kafka (refused here: exit 7), not exit 2.
    for version in ("v3", "3"):
        result = CliRunner().invoke(
            cli,
            ["policy", "approve", "refund", version, "--by", "human:a"],
            env={"LEDGER_BOOTSTRAP": "127.0.0.1:1"},
        )
        assert result.exit_code not in (0, 2), result.output


def test_a_group_without_a_command_still_shows_its_help() -> None:
    result = CliRunner().invoke(cli, ["policy"])
    assert "policy [OPTIONS] COMMAND" in result.output and "Commands:" in result.output


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["decisions", "--since", "2026-02-01", "--until", "2026-01-01"], "is not after --since"),
        (["audit", "sql", "SELECT 1", "--json", "--csv"], "choose one of --json and --csv"),
        (["audit", "run", "rollbacks", "--json", "--csv"], "choose one of --json and --csv"),
        (["export", "--follow", "--remove-retired"], "stop the --follow run"),
        (["replay", "--decisions", "--since", "2026-02-01", "--until", "2026-01-01"], "--until"),
    ],
)
def test_contradicting_flags_are_refused_before_any_work(
    command: list[str], said: str, home: Path
) -> None:
    # Before: `decisions` connected first (exit 7 with Kafka away), `audit` ran the query first.
    result = CliRunner().invoke(cli, command, env={"LEDGER_BOOTSTRAP": "127.0.0.1:1"})
    assert said in _one_line(result, 2)


def test_what_the_ledger_holds_cannot_drive_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A red team's find: an agent's resource "r:1 │ allow │\x1b[8m" drew a fake `allow` cell in
    # `ledger decisions`, and the conceal code hid the real determination after it. Text from the
    # ledger is the sender's: a terminal's control characters and bidi overrides show as escapes.
    from ledger.cli.output import fail, print_table

    print_table(["resource", "determination"], [["r:1 │ allow │\x1b[8m\u202e\x9b", "deny"]])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\x9b" not in out
    assert "\\x1b[8m\\u202e\\x9b" in out and "deny" in out
    # A red team: `account:42` and a zero-width space read as `account:42` (and so on).
    print_table(["resource"], [["account:42\u200b\u2060\ufeff\u00ad"]])
    assert "account:42\\u200b\\u2060\\ufeff\\xad" in capsys.readouterr().out
    # A review: a line separator broke a cell into a fake row, as a newline once did.
    print_table(["resource", "determination"], [["account:a\u2028determination │ allow", "deny"]])
    out = capsys.readouterr().out
    assert "\u2028" not in out and "account:a\\u2028determination" in out
    assert len([line for line in out.splitlines() if "│" in line]) == 1  # one row, whole
    print_table(["key"], [["k" * 50_000]])  # a cell is bounded too: --json shows it whole
    assert "(50,000 characters; --json shows all)" in capsys.readouterr().out
    # A newline started a line of its own: "account:a\ndetermination │ allow" read as a row.
    print_table(["resource", "determination"], [["account:a\ndetermination │ allow", "deny"]])
    out = capsys.readouterr().out
    assert "account:a\\ndetermination │ allow" in out
    assert not any(line.startswith("determination") for line in out.splitlines())
    from ledger.cli.output import Lines

    print_table(["parameters"], [[Lines(["a int: one", "b x\ny: two"])]])
    shown = capsys.readouterr().out
    assert "a int: one" in shown and "b x\\ny: two" in shown
    with pytest.raises(SystemExit):
        fail("tampered: \x1b]0;owned\x07")
    assert "\\x1b]0;owned\\x07" in capsys.readouterr().err


def test_a_piped_table_keeps_ids_whole_and_folds_only_long_cells(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `ledger decisions | grep ID` missed ids folded over two lines past 200 columns; then a
    # review: padding every row to its longest cell made 100 MB of 5,000 rows with long reasons.
    from ledger.cli.output import PIPED_COLUMN_CHARS, print_table

    ident = "01a246d8-a421-72dd-9c51-f844ea5547f5"
    columns = [f"column {n}" for n in range(10)]
    rows = [[ident, *("x" * 30 for _ in range(8)), "why " * 500] for _ in range(200)]
    print_table(columns, rows)
    lines = capsys.readouterr().out.splitlines()
    assert sum(ident in line for line in lines) == 200  # every id whole, on one line
    # The 2,000-character column folded at PIPED_COLUMN_CHARS, the others as wide as they are.
    assert max(len(line) for line in lines) == 36 + 8 * 30 + PIPED_COLUMN_CHARS + 3 * 10 + 1


def test_a_reader_that_stops_early_gets_no_error_from_the_ledger(tmp_path: Path) -> None:
    # Found in passing: `ledger policy test -v … | head -1` printed "error: Broken pipe (check
    # $LEDGER_HOME, $XDG_CACHE_HOME and permissions) [os_error]", blaming the machine. 1,500
    # cases print more than a pipe holds (64 KiB), so the pipe surely closes while the ledger writes.
    policy = tmp_path / "refund.yaml"
    policy.write_text(REFUND.read_text())
    case = (
        "  - name: case {n} of a long file\n"
        "    facts: {{tenure_days: 400, amount: '10', prior_refunds_12m: 0, standing: good}}\n"
        "    expect: {{determination: allow}}\n"
    )
    (tmp_path / "refund.tests.yaml").write_text(
        "cases:\n" + "".join(case.format(n=n) for n in range(1_500))
    )
    ledger = Path(sys.executable).with_name("ledger")
    done = subprocess.run(
        f"'{ledger}' policy test -v '{policy}' | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.stdout.startswith("PASS  ") and done.stderr == ""


def test_ps_with_a_home_that_does_not_exist_says_so_before_up_is_run_there(home: Path) -> None:
    # It said only "the broker is not running … `ledger up` starts what is not running": at
    # 3 a.m., with a mistyped $LEDGER_HOME, that starts a second, empty ledger.
    assert not home.exists()
    result = CliRunner().invoke(cli, ["ps"])
    assert result.exit_code == 1
    said = result.stderr.splitlines()
    assert said[0] == "the broker is not running"
    assert said[-1].startswith(f"{home} (LEDGER_HOME) does not exist: no ledger has run")
    assert not any("`ledger up` starts what is not running" in line for line in said)


def test_ps_with_a_home_that_is_a_file_says_so(home: Path) -> None:
    # An operator's check: it said "not running" and to run `ledger up`, which then failed.
    home.write_text("")
    result = CliRunner().invoke(cli, ["ps"])
    assert result.exit_code == 1
    said = result.stderr.splitlines()
    assert said[-1].startswith(f"{home} (LEDGER_HOME) is not a directory")
    assert not any("`ledger up` starts what is not running" in line for line in said)


def test_a_ctrl_c_is_one_line_and_exit_130_even_while_the_modules_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An auditor's walkthrough: Ctrl-C during `ledger export` printed a 12-23 line traceback in
    # its first seconds (the modules still loading) and click's "Aborted!" with exit 1 after.
    import click

    import ledger.cli
    import ledger.cli.app as app

    def loading() -> None:
        raise KeyboardInterrupt

    def aborted(*args: object, **kwargs: object) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise click.exceptions.Abort from None  # as click's main converts it

    for where, name, raiser in ((app, "main", loading), (app.cli, "main", aborted)):
        with monkeypatch.context() as patch:
            patch.setattr(where, name, raiser)
            with pytest.raises(SystemExit) as stopped:
                ledger.cli.main()
        assert stopped.value.code == 130
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("interrupted: nothing is half-written")


def test_a_name_holding_colons_is_printed_as_text_not_emoji(home: Path) -> None:
    # An operator's upgrade: `policy:email` followed by ": a key" printed as "policy✉", and
    # `agent:fire:bot` as "agent🔥bot" (rich's emoji codes, on by default).
    result = CliRunner().invoke(
        cli,
        [
            "grant",
            "issue",
            "--to",
            "agent:fire:bot",
            "--actions",
            "a",
            "--resource",
            "b",
            "--by",
            "human:a",
        ],
        env={"LEDGER_BOOTSTRAP": "127.0.0.1:1"},
    )
    assert "'agent:fire:bot'" in result.output, result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["export", "--out", "/tmp/ex"],
            "/tmp/ex is incomplete (each file it lists is whole); "
            "`ledger export --out /tmp/ex` again completes it",
        ),
        (["export", "--json", "--out=ex"], "ex is incomplete"),
        (["export"], "the export directory ($LEDGER_HOME/export) is incomplete"),
        (["policy", "rollback", "refund"], "a governance command may have been sent"),
    ],
)
def test_a_ctrl_c_says_what_the_interrupted_command_left(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    # An auditor's walkthrough: Ctrl-C on `ledger export` said "nothing is half-written … a
    # governance command may have been sent", not that the export was left incomplete.
    import ledger.cli
    import ledger.cli.app as app

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "main", interrupted)
    monkeypatch.setattr("sys.argv", ["ledger", *args])
    with pytest.raises(SystemExit) as stopped:
        ledger.cli.main()
    assert stopped.value.code == 130
    [line] = capsys.readouterr().err.strip().splitlines()
    assert says in line


def test_facts_from_a_pipe_are_pointed_at_standard_input(tmp_path: Path) -> None:
    # An agent engineer's walkthrough: `--facts @<(cmd)` (a pipe) was refused as "not a
    # regular file" with no word of `@-`, which works.
    path = tmp_path / "facts"
    os.mkfifo(path)
    (tmp_path / "p.yaml").write_text("policy: p\ngoverns: [a]\nowner: t\ndefault: {effect: deny}\n")
    done = _ledger(
        "policy", "eval", str(tmp_path / "p.yaml"), "--facts", f"@{path}", "--action", "a",
        "--principal", "p:x", cwd=tmp_path,
    )  # fmt: skip
    [line] = done.stderr.strip().splitlines()
    assert "is not a regular file" in line and "COMMAND | ledger … --facts @-" in line, line


@pytest.mark.parametrize("as_json", [False, True])
def test_a_reader_that_stops_reading_ends_the_command_with_141(as_json: bool) -> None:
    # An operator's check: `ledger decisions | true` exited 1 (Rich's own handling of the
    # closed pipe), where `--json` output exited 141 as the README says.
    script = (
        "from ledger.cli.output import handle_errors, print_json, print_table\n"
        "@handle_errors\n"
        "def main() -> None:\n"
        f"    if {as_json}:\n"
        "        for i in range(2_000): print_json({'n': i})\n"
        "    else:\n"
        "        print_table(['n'], [[i] for i in range(2_000)])\n"
        "main()\n"
    )
    # A pipe whose reader has gone (`| true`): every write to it fails.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], stdout=write_end, capture_output=False,
            stderr=subprocess.PIPE, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, b"")


def test_a_grant_window_without_a_zone_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A red team: `--until 2027-06-01T00:00:00` was taken for UTC, so an operator typing local
    # time issued a grant ending hours early or late.
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LEDGER_BOOTSTRAP", "127.0.0.1:9")  # never dialled: refused before
    base = ["grant", "issue", "--to", "agent:bot", "--actions", "refund.*"]
    base += ["--resource", "account:*", "--by", "human:admin"]
    for flag, value in (("--until", "2027-06-01T00:00:00"), ("--from", "2027-06-01")):
        done = CliRunner().invoke(cli, [*base, flag, value])
        assert done.exit_code == 2, done.output
        assert f"{flag} '{value}' has no zone: write it in UTC with Z" in done.stderr


def test_a_date_followed_by_an_offset_is_refused_not_misread() -> None:
    # A review: Python reads `2026-12-01+05:00` as 05:00 with no zone, ten hours from the
    # instant meant; and `2026-12-01` in a grant's window suggested `2026-12-01Z`, refused too.
    from ledger.cli.common import parse_time
    from ledger.core.jsonform import parse_instant
    from ledger.errors import UsageError

    for text in ("2026-12-01+05:00", "2026-12-01Z", "2026-12-01-05:00"):
        with pytest.raises(ValueError, match="a date with a zone needs its time"):
            parse_instant(text)
    assert parse_instant("2026-12-01T09:00:00z") == parse_instant("2026-12-01T09:00:00Z")
    with pytest.raises(UsageError, match=r"write it in UTC with Z \(2026-12-01T00:00:00Z\)"):
        parse_time("2026-12-01", "--until", zoned=True)
    assert parse_time("2026-12-01T00:00:00Z", "--until", zoned=True) == parse_instant("2026-12-01")
    assert parse_time("2026-12-01T09:00:00z", "--until", zoned=True) is not None


def test_a_read_window_takes_how_long_ago_and_a_grant_window_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An auditor's walkthrough: `policy simulate --since 1h` was refused as not ISO 8601.
    from datetime import UTC, datetime, timedelta

    from ledger.cli.common import parse_time, time_ago

    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert time_ago("90s", now) == now - timedelta(seconds=90)
    assert time_ago("30m", now) == now - timedelta(minutes=30)
    assert time_ago("1h", now) == now - timedelta(hours=1)
    assert time_ago("7d", now) == now - timedelta(days=7)
    assert time_ago("2w", now) == now - timedelta(weeks=2)
    for text in ("1M", "1H", "h", "-1h", "1.5h", "\u0661h", "1h ago", "2026-12-01"):
        assert time_ago(text, now) is None, text
    before = datetime.now(UTC)
    since = parse_time(" 1h ", "--since")
    assert since is not None
    assert before - timedelta(hours=1, seconds=5) < since <= datetime.now(UTC) - timedelta(hours=1)
    with pytest.raises(UsageError, match="999999999w ago lies before the year 1"):
        parse_time("999999999w", "--since")
    with pytest.raises(UsageError, match=r"or how long ago: 30m, 1h, 7d$"):
        parse_time("1M", "--since")
    # A grant's window must name its instant: `--until 1h` is not an hour from now, nor ago.
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LEDGER_BOOTSTRAP", "127.0.0.1:9")  # never dialled: refused before
    base = ["grant", "issue", "--to", "agent:bot", "--actions", "refund.*"]
    done = CliRunner().invoke(
        cli, [*base, "--resource", "account:*", "--by", "human:admin", "--until", "1h"]
    )
    assert done.exit_code == 2, done.output
    assert "--until '1h' is not an ISO 8601 time" in done.stderr
    assert "how long ago" not in done.stderr


def test_a_ctrl_c_while_a_command_waits_for_its_answer_names_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An operator's walkthrough: Ctrl-C on a rollback left only "check `policy show`"; the
    # command's id, which `ledger command status` reads, was nowhere.
    import ledger.cli
    import ledger.cli.app as app

    def interrupted() -> None:
        ledger.cli.SENDING.append("cmd-0193")  # as `submit` does before it sends
        raise KeyboardInterrupt

    monkeypatch.setattr(ledger.cli, "SENDING", [])
    monkeypatch.setattr(app, "main", interrupted)
    monkeypatch.setattr("sys.argv", ["ledger", "policy", "rollback", "refund"])
    with pytest.raises(SystemExit) as stopped:
        ledger.cli.main()
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip() == (
        "interrupted: command cmd-0193 may have been sent: before sending it again, see what "
        "became of it (`ledger command status cmd-0193 --wait 60`)"
    )
