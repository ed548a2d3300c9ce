"""``ledger broker start|stop|status``: the local Apache Kafka broker."""

from __future__ import annotations

import click

from ledger.cli.common import load_settings
from ledger.cli.output import (
    HelpfulGroup,
    console,
    fail,
    handle_errors,
    json_option,
    print_json,
    print_table,
)
from ledger.local import broker, stack

__all__ = ["group"]


@click.group("broker", cls=HelpfulGroup, short_help="The local Kafka broker: start, stop, status.")
def group() -> None:
    """Run a local single-node Apache Kafka broker (KRaft) on 127.0.0.1.

    The first start fetches Kafka's jars from Maven Central with `mvn` into
    $XDG_CACHE_HOME/decision-ledger (needs Java 17+ and Maven); later starts take seconds.
    Broker data and logs live under $LEDGER_HOME (default $XDG_STATE_HOME/decision-ledger, else
    ~/.local/state/decision-ledger).
    """


def _progress(message: str) -> None:
    click.echo(message, err=True)


@group.command("start")
@click.option(
    "--insecure",
    is_flag=True,
    help="DEBUGGING ONLY: no authentication, no ACLs.",
)
@click.option(
    "--move-port",
    is_flag=True,
    help="Move to a new port when another user's process holds the last one (stop every agent "
    "first: running clients reconnect to the old port, to whoever holds it).",
)
@json_option
@handle_errors
def start_cmd(insecure: bool, move_port: bool, as_json: bool) -> None:
    """Start the broker (idempotent); returns when it accepts connections.

    It authenticates clients with SASL/SCRAM (credentials per role in
    $LEDGER_HOME/credentials) and enforces ACLs, unless --insecure. It listens on the port of
    its last run; one this user's other process holds is given up for a new one (restart SDK
    clients then), one another user's process holds is refused unless --move-port."""
    status = broker.start(
        load_settings(), progress=_progress, insecure=insecure, move_port=move_port
    )
    if as_json:
        print_json(status.as_dict())
    else:
        click.echo(status.bootstrap)


@group.command("stop")
@json_option
@handle_errors
def stop_cmd(as_json: bool) -> None:
    """Stop the broker cleanly (idempotent)."""
    settings = load_settings()
    stack.checked_home(settings)  # another user's home: not this user's to stop
    was_running = broker.stop(settings)
    if as_json:
        print_json({"stopped": was_running})
    else:
        console.print("stopped" if was_running else "not running")


@group.command("status")
@json_option
@handle_errors
def status_cmd(as_json: bool) -> None:
    """Show whether the broker runs, answers Kafka requests, and where. Exit code 1 when it is
    not running, runs without answering (hung: the message says what to do), or answers but
    refuses the admin credential this shell reads (a stale $LEDGER_CREDENTIALS, say)."""
    settings = load_settings()
    stack.checked_home(settings)  # another user's home: not this user's to judge
    status = broker.status(settings)
    answering, refusal = broker.answering(settings, status)
    if as_json:
        print_json({**status.as_dict(), "answering": answering, "admin_refused": refusal})
    else:
        print_table(
            ["running", "answering", "bootstrap", "pid", "kafka", "log"],
            [
                [
                    status.running,
                    answering,
                    status.bootstrap,
                    status.pid,
                    status.kafka_version,
                    status.log_file,
                ]
            ],
        )
    if status.running and not answering:
        fail(broker.not_answering(status.pid))
    if refusal is not None:
        fail(broker.admin_refused(settings, status, refusal))
    if not status.running:
        said = broker.not_running(status)
        if said != "the broker is not running":  # a review: only ps told killed from stopped
            fail(said)
        raise SystemExit(1)
