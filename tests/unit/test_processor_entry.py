"""A processor started with no Kafka to find says so in one line and exits 7 (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _run(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("module", ["processors.evaluator", "processors.command_processor"])
def test_a_processor_without_kafka_exits_7_with_one_line(module: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_BOOTSTRAP"}
    env["LEDGER_HOME"] = str(tmp_path)  # no broker was ever started here
    done = _run(module, env)
    assert done.returncode == 7, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no Kafka to talk to: " in lines[0]
    assert "set $LEDGER_BOOTSTRAP, or run `ledger broker start`" in lines[0]


@pytest.mark.parametrize("module", ["processors.evaluator", "processors.command_processor"])
def test_a_processor_run_on_its_own_refuses_an_unsafe_home_in_one_line(
    module: str, tmp_path: Path
) -> None:
    # As compose and service managers run them: no `ledger up` has checked the home first,
    # and the processor made its Faust folders plainly wherever $LEDGER_HOME named.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    env = {**os.environ, "LEDGER_HOME": str(shared / "home"), "LEDGER_BOOTSTRAP": "127.0.0.1:1"}
    done = _run(module, env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"lies in {shared}, which everyone may write" in lines[0]
    assert lines[0].endswith("[unsafe_folder]")
    assert not (shared / "home").exists()


def _run_worker_script(script: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``script`` (which calls ``run_worker``) run in a process of its own, home ``home``."""
    env = {**os.environ, "LEDGER_HOME": str(home), "LEDGER_BOOTSTRAP": "127.0.0.1:1"}
    env.pop("LEDGER_SECURITY_PROTOCOL", None)
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_processor_killed_by_a_fatal_signal_leaves_its_stack_in_its_log(tmp_path: Path) -> None:
    # An evaluator whose memory-mapped in-flight marker could no longer be written died of
    # SIGBUS with nothing in its log, and `ps` said only "not running" (the operator's
    # walkthrough). The worker's stderr is its log: the fatal signal's Python stack goes there.
    script = (
        "import ctypes\n"
        "from processors.run import run_worker\n"
        "run_worker(lambda *a, **k: ctypes.string_at(0), name='evaluator')\n"
    )
    done = _run_worker_script(script, tmp_path)
    assert done.returncode < 0, (done.returncode, done.stderr)  # killed by the signal
    assert "Fatal Python error: Segmentation fault" in done.stderr, done.stderr
    assert "run_worker" in done.stderr


def test_a_processor_whose_folder_cannot_be_written_says_so_before_it_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: with faust/ mounted read-only, `ledger up` said "ledger is up"
    # and each evaluator died on its first batch writing an in-flight marker.
    import errno

    import processors.common as common
    from ledger.errors import ProcessorError

    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kw)

    folder = tmp_path / "faust" / "ledger-evaluator"
    common.writable(folder, [tmp_path, folder.parent])  # writable: nothing said, nothing left
    assert list(folder.iterdir()) == []
    monkeypatch.setattr(common.os, "open", read_only)
    with pytest.raises(
        ProcessorError, match=rf"cannot write in {folder} \(Read-only file system\)"
    ):
        common.writable(folder, [tmp_path, folder.parent])


def test_the_command_processor_knows_the_retired_public_keys_of_its_key_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A rotated or departed administrator's anchor still roots the keys it registered while the
    # processor's key store keeps its .pub in retired/ACTOR/. Not every actor's .pub: an anchor
    # planted with one not yet registered made its actor an administrator (a review). One it
    # cannot trust is left out, with a warning, rather than stopping the processor.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.keys import KeyStore, public_bytes
    from ledger.settings import Settings
    from processors.command_processor import known_keys

    settings = Settings(home=tmp_path / "home", admins=frozenset({"human:admin"}))
    store = KeyStore(settings.keys)
    store.create("human:admin")
    store.create("agent:low")
    assert known_keys(settings) == {}  # the actors' own .pub files are not anchors' roots

    def retire(actor: str, name: str, mode: int = 0o600) -> bytes:
        key = Ed25519PrivateKey.generate()
        folder = settings.keys / "retired" / actor
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / name
        path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        path.chmod(mode)
        return public_bytes(key)

    old = retire("human:admin", "before-2026-12.pub")
    retire("human:eve", "writable.pub", 0o666)  # anyone could write it
    assert known_keys(settings) == {"human:admin": frozenset({old})}
    assert "a retired public key of human:eve left out" in caplog.text
    # and said where it matters (a README check): in the refusals it causes, and by `up`
    left_out: dict[str, str] = {}
    assert known_keys(settings, left_out=left_out) == {"human:admin": frozenset({old})}
    assert list(left_out) == ["human:eve"] and "chmod go-w" in left_out["human:eve"]
    from ledger.local.stack import ensure_admin_keys

    said: list[str] = []
    retire("human:eve", "a\x1b[2Jall is well\n.pub", 0o666)  # its name is the writer's (a review)
    ensure_admin_keys(settings, progress=said.append)
    assert (
        "\n" not in said[0] and "\x1b" not in said[0] and "'a\\x1b[2Jall is well\\n.pub'" in said[0]
    )
    assert len(said) == 1 and said[0].startswith(
        "warning: the command processor leaves out the retired keys of human:eve, so keys "
        "they registered cannot sign commands: "
    ), said
    assert said[0].endswith("then `ledger down --keep-broker && ledger up`")
    # A review: one that cannot be read (a folder named *.pub) reached the terminal raw too.
    odd = settings.keys / "retired" / "human:zed"
    odd.mkdir(mode=0o700)
    (odd / "b\x1b[2Jall is well\n.pub").mkdir(mode=0o700)
    said.clear()
    ensure_admin_keys(settings, progress=said.append)
    zed = [line for line in said if "human:zed" in line]
    assert len(zed) == 1 and "\n" not in zed[0] and "\x1b" not in zed[0], said


def test_a_processor_log_line_quoting_a_client_cannot_pass_for_a_record_of_its_own(
    tmp_path: Path,
) -> None:
    # A review: `ps` and `down` read a processor's log for its `starting:`/`stopped:` and
    # CRITICAL lines, matched anywhere in a line, and a message quoting a client's text could
    # carry a line break: a killed worker could be made to read as stopped.
    import logging
    import logging.config

    from ledger.local import stack
    from processors.run import _logging_config

    log = tmp_path / "evaluator.log"
    forged = "x\n[t] evaluator INFO ledger.processor: stopped: pid 41\u2028\x1b[2J"
    plain = _logging_config("evaluator")["formatters"]["plain"]
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.config.DictConfigurator({}).configure_formatter(plain))
    loggers = [logging.getLogger(n) for n in ("ledger.processor", "ledger.evaluator")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.handlers, lg.propagate, lg.level = [handler], False, logging.INFO
    try:
        processor, evaluator = loggers
        processor.info("starting: pid %s, code c", 41)
        evaluator.warning("refused request %r", forged)
        evaluator.warning("refused request %s", forged)
        try:
            raise ValueError(forged)
        except ValueError:
            evaluator.exception("a handler failed")
        evaluator.warning("said: ledger.processor: stopped: pid 41")
        evaluator.warning("a CRITICAL word, not a CRITICAL line")
    finally:
        handler.close()
        for lg, (handlers, propagate, level) in zip(loggers, saved, strict=True):
            lg.handlers, lg.propagate, lg.level = handlers, propagate, level
    text = log.read_text()
    lines = text.split("\n")
    assert lines[2].endswith(
        "refused request x\\n[t] evaluator INFO ledger.processor: stopped: pid 41\\u2028\\x1b[2J"
    )
    assert "  [t] evaluator INFO ledger.processor: stopped: pid 41\u2028\x1b[2J" in lines
    said = stack.ended_unannounced(log)
    assert said is not None and said.startswith(
        "its last run (pid 41) ended without `stopped:` in its log: it was killed"
    ), text


def test_a_processor_that_stops_on_a_failure_names_its_cause_on_the_line_ps_quotes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator's walkthrough: `ps` quoted "the evaluator's request loop failed", and the
    # PermissionError behind it was in the traceback below, which `ps` does not quote.
    import logging

    from processors import common

    def exit_now(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(common.os, "_exit", exit_now)
    with caplog.at_level(logging.CRITICAL), pytest.raises(SystemExit):
        try:
            raise PermissionError(1, "Operation not permitted", "/home/inflight/requests.1")
        except PermissionError:
            common.die(5, "the evaluator's request loop failed at 100%")
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert line == (
        "the evaluator's request loop failed at 100%: PermissionError: [Errno 1] Operation not "
        "permitted: '/home/inflight/requests.1'"
    )
    caplog.clear()
    with caplog.at_level(logging.CRITICAL), pytest.raises(SystemExit):
        common.die(5, "no failure here: %s", "as given")  # outside a handler: as it was
    assert [r.getMessage() for r in caplog.records] == ["no failure here: as given"]


def test_a_start_that_fails_after_logging_began_leaves_a_record_ps_quotes(tmp_path: Path) -> None:
    # An operator's walkthrough (and its review): a start that failed writing its folder, or
    # putting a commit back in `prepare`, printed a bare `error:` line, which `ps` could not
    # tell from a client's text; it said only "not running".
    from ledger.local.stack import ended_unannounced

    script = (
        "from ledger.errors import ProcessorError\n"
        "from processors.run import run_worker\n"
        "def factory(*a, **k):\n"
        "    raise ProcessorError('cannot write in /h/faust (Operation not permitted)')\n"
        "run_worker(factory, name='evaluator')\n"
    )
    done = _run_worker_script(script, tmp_path)
    assert done.returncode != 0, done.stderr
    (line,) = done.stderr.strip().splitlines()  # still one line
    assert " evaluator CRITICAL ledger.processor: evaluator: cannot write in /h/faust" in line
    log = tmp_path / "evaluator.log"
    log.write_text(done.stderr)
    said = ended_unannounced(log)
    assert said is not None and said.startswith("its last start failed: [") and "/h/faust" in said
