"""The ``ledger`` command line (DESIGN §13). Each group lives in its own module."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """The ``ledger`` command. A Ctrl-C at any moment, the modules still loading included, is
    one line and exit 130 (an auditor's walkthrough: a traceback in the first seconds, then
    click's "Aborted!" with exit 1). What a command wrote is consistent at any point (an
    export lists only complete files): run it again to finish."""
    try:
        from ledger.cli.app import main as run

        run()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: run the command again to finish (nothing half-written)\n")
        sys.exit(130)
