"""Root of the ``ledger`` command. Groups register themselves here, one module each."""

from __future__ import annotations

import click

from ledger import __version__

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ledger")
def cli() -> None:
    """Decision Ledger: policies, authority and audit for AI agents, as events on Kafka.

    Offline policy work (validate, test, eval) needs nothing running. Everything else talks to
    Kafka at --bootstrap (default $LEDGER_BOOTSTRAP, else the local broker of `ledger broker start`).
    """


def _register() -> None:
    # Imported here so each group stays in its own module and `ledger --help` stays fast.
    import importlib

    for name in ("broker", "topics", "policy"):
        try:
            module = importlib.import_module(f"ledger.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ledger.cli.{name}":
                continue  # group not built yet
            raise
        cli.add_command(module.group)


_register()


def main() -> None:
    cli(prog_name="ledger")
