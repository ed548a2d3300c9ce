"""The ``ledger`` command line (DESIGN §13). Each group lives in its own module."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main", "SENDING"]

SENDING: list[str] = []
"""The id of the governance command this process is sending (``submit`` notes it before it
sends): an interruption while it waits for its answer names it, for `ledger command status`."""


def main() -> None:
    """The ``ledger`` command. A Ctrl-C at any moment, the modules still loading included, is
    one line and exit 130 (an auditor's walkthrough: a traceback in the first seconds, then
    click's "Aborted!" with exit 1), saying what the command left (:func:`_interrupted`)."""
    try:
        from ledger.cli.app import main as run

        run()
    except KeyboardInterrupt:
        sys.stderr.write(_interrupted(sys.argv[1:]) + "\n")
        sys.exit(130)


def _interrupted(args: Sequence[str]) -> str:
    """What an interrupted command left. An export lists only complete files, but its topics
    end at different points until a run finishes (readers and `audit verify` say so). Anything
    else written is consistent at any point, but a governance command interrupted while waiting
    for its answer may have been sent (a review: a bare rollback run again rolls back twice)."""
    command = next((arg for arg in args if not arg.startswith("-")), None)
    if command == "export":
        out = _option(args, "--out")
        where = out if out is not None else "the export directory ($LEDGER_HOME/export)"
        again = f"`ledger export --out {out}`" if out is not None else "`ledger export`"
        return (
            f"interrupted: {where} is incomplete (each file it lists is whole); {again} again "
            "completes it"
        )
    if SENDING:
        return (
            f"interrupted: command {SENDING[-1]} may have been sent: before sending it again, "
            f"see what became of it (`ledger command status {SENDING[-1]} --wait 60`)"
        )
    return (
        "interrupted: nothing is half-written; a query may be run again, but a governance "
        "command may have been sent: check (`ledger policy show`, `ledger grant list`) before "
        "sending it again"
    )


def _option(args: Sequence[str], name: str) -> str | None:
    """The value given to option ``name`` (``--out DIR`` or ``--out=DIR``), the last one."""
    found = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(f"{name}="):
            found = arg.removeprefix(f"{name}=")
    return found
