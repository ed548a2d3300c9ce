"""``ledger up`` / ``ledger down`` / ``ledger ps``: the local stack in the background."""

from __future__ import annotations

import click

from ledger import broker, stack
from ledger.cli.common import bootstrap_option, load_settings
from ledger.cli.output import handle_errors, json_option, print_json, print_table

__all__ = ["up_cmd", "down_cmd", "ps_cmd"]


@click.command("up")
@bootstrap_option
@click.option("--evaluators", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Evaluator worker processes (they share the request partitions).")  # fmt: skip
@json_option
@handle_errors
def up_cmd(bootstrap: str | None, evaluators: int, as_json: bool) -> None:
    """Start the local stack: broker (unless --bootstrap/$LEDGER_BOOTSTRAP), topics, processors.

    Returns once the command processor and the evaluator have caught up with the ledger.
    Logs: $LEDGER_HOME/logs/<processor>.log. Idempotent.
    """
    settings = load_settings(bootstrap)
    address = stack.up(settings, evaluators=evaluators, progress=lambda m: click.echo(m, err=True))
    if as_json:
        print_json({"bootstrap": address, "processors": stack.processes(settings)})
    else:
        click.echo(f"ledger is up on {address}")


@click.command("down")
@click.option(
    "--keep-broker", is_flag=True, help="Stop the processors but leave the broker running."
)
@json_option
@handle_errors
def down_cmd(keep_broker: bool, as_json: bool) -> None:
    """Stop the processors (cleanly, committing their progress), then the local broker."""
    stopped = stack.down(load_settings(), keep_broker=keep_broker)
    if as_json:
        print_json({"stopped": stopped})
    else:
        click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@click.command("ps")
@json_option
@handle_errors
def ps_cmd(as_json: bool) -> None:
    """What of the local stack is running, with pids and log files."""
    settings = load_settings()
    procs = stack.processes(settings)
    b = broker.status(settings)
    if as_json:
        print_json({"broker": b.as_dict(), "processors": procs})
        return
    rows = [["broker", b.running, b.pid, b.log_file]]
    rows += [[p.name, p.running, p.pid, p.log] for p in procs]
    print_table(["process", "running", "pid", "log"], rows)
