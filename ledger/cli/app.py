"""Root of the ``ledger`` command. Each group lives in its own module and is added here."""

from __future__ import annotations

import logging
import sys

import click

from ledger import __version__
from ledger.audit import use_query_memory
from ledger.cli import (
    actors,
    audit,
    broker,
    commandstatus,
    credentials,
    decisions,
    evaluate,
    export,
    grants,
    policy,
    replay,
    stack,
    topics,
    verify,
)
from ledger.cli.output import HelpfulGroup
from ledger.kafka.clients import RDKAFKA_LOGGER
from ledger.kafka.snapshots import installed_fingerprint
from ledger.settings import audit_memory_from_env

__all__ = ["cli", "main"]


def _print_version(ctx: click.Context, _: click.Parameter, asked: bool) -> None:
    """``--version``: the package's version, and the fingerprint of the code installed, which
    tells two builds of one version apart (a processor started before an upgrade runs other
    code: ``ledger ps`` compares the fingerprint in its heartbeat with this one)."""
    if asked and not ctx.resilient_parsing:
        click.echo(f"ledger, version {__version__} (code {installed_fingerprint()[:12]})")
        ctx.exit()


@click.group(
    cls=HelpfulGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and the fingerprint of the code installed, and exit.",
)
def cli() -> None:
    """Decision Ledger: policies, authority and audit for AI agents, as events on Kafka.

    Offline policy work (policy validate/test/eval) needs nothing running. Everything else talks
    to Kafka at each command's --bootstrap (default $LEDGER_BOOTSTRAP, else the local broker of
    `ledger broker start` / `ledger up`).
    """
    use_query_memory(audit_memory_from_env())


cli.add_command(broker.group)
cli.add_command(topics.group)
cli.add_command(stack.up_cmd)
cli.add_command(stack.down_cmd)
cli.add_command(stack.ps_cmd)
cli.add_command(policy.group)
cli.add_command(grants.grant_group)
cli.add_command(grants.role_group)
cli.add_command(evaluate.evaluate_cmd)
cli.add_command(replay.replay_cmd)
cli.add_command(decisions.decisions_cmd)
cli.add_command(credentials.group)
cli.add_command(actors.group)
cli.add_command(commandstatus.group)
cli.add_command(export.export_cmd)
audit.add_commands(*verify.COMMANDS)
cli.add_command(audit.group)


def main() -> None:
    # librdkafka's own lines (a refused connection, a reply that is not Kafka, retried several
    # times a second) are for a long-running process's log. A command says what failed, and
    # what to do, in its one error line: without this, Python's last-resort handler printed
    # them all to stderr before it.
    rdkafka = logging.getLogger(RDKAFKA_LOGGER)
    rdkafka.addHandler(logging.NullHandler())
    rdkafka.propagate = False
    try:
        code = cli.main(prog_name="ledger", standalone_mode=False)
    except click.exceptions.Abort as exc:  # click's form of a Ctrl-C, or of an end of input
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        click.echo("Aborted!", err=True)  # an end of input at a prompt: as click says it
        sys.exit(1)
    except click.ClickException as exc:  # a usage error, as click's own main shows it
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
