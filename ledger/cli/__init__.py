"""The ``ledger`` command line (DESIGN §13). Each group lives in its own module."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """The ``ledger`` command. A Ctrl-C at any moment, the modules still loading included, is
    one line and exit 130 (an auditor's walkthrough: a traceback in the first seconds, then
    click's "Aborted!" with exit 1). What a command wrote is consistent at any point (an
    export lists only complete files), but a governance command interrupted while waiting for
    its answer may have been sent (a review: a bare rollback run again rolls back twice)."""
    try:
        from ledger.cli.app import main as run

        run()
    except KeyboardInterrupt:
        sys.stderr.write(
            "interrupted: nothing is half-written; an export or a query may be run again, but a "
            "governance command may have been sent: check (`ledger policy show`, `ledger grant "
            "list`) before sending it again\n"
        )
        sys.exit(130)
