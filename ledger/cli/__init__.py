"""The ``ledger`` command line (DESIGN §13). Each group lives in its own module."""

from ledger.cli.app import main

__all__ = ["main"]
