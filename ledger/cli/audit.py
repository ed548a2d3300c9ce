"""``ledger audit``: audit the ledger's history (DESIGN §9, §13).

The group is defined here; commands live in their own modules and are added from their
``COMMANDS`` (``verify`` from :mod:`ledger.cli.verify`).
"""

from __future__ import annotations

import click

from ledger.cli import verify

__all__ = ["group"]


@click.group("audit")
def group() -> None:
    """Audit the ledger from an export: verify the decision hash chains."""


for _command in verify.COMMANDS:
    group.add_command(_command)
