"""What the export's fork server loads before it forks helpers (see ``Helpers`` in
:mod:`ledger.audit.pool`): the exporter's modules, and the default codec, built here once so
that every helper forked from the server starts with it instead of building its own."""

from __future__ import annotations

from ledger.audit import export  # noqa: F401  # imported for the helpers to inherit
from ledger.codec import default_codec

default_codec()
