"""What the export's fork server loads before it forks helpers (see ``Helpers`` in
:mod:`ledger.audit.pool`): the exporter's modules, and the default codec, built here once so
that every helper forked from the server starts with it instead of building its own.

First of all, Ctrl-C is ignored: the server hands its helpers the SIGINT handling it had before
it started serving, and a Ctrl-C reaches every process of the terminal's group. Helpers
interrupted while starting printed tracebacks (an auditor's walkthrough); the export's own
process stops them instead (:meth:`ledger.audit.pool.Helpers.close`)."""

from __future__ import annotations

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)

from ledger.audit import export  # noqa: E402, F401  # imported for the helpers to inherit
from ledger.codec import default_codec  # noqa: E402

default_codec()
