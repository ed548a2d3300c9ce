"""The ledger's contract files, found the same way in a checkout and in an installed wheel.

``schemas/`` (one Avro schema per event type, the contract of the ledger) and ``queries/``
(DuckDB views and named audit queries) live at the top of the repository, where reviewers and
other languages' tooling find them. A wheel ships them as package data of ``ledger.schemas`` and
``ledger.queries`` (``pyproject.toml`` maps those packages onto the two directories); a checkout
or editable install reads the directories themselves.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Literal

__all__ = ["contract_dir"]

_CHECKOUT = Path(__file__).resolve().parent.parent


def contract_dir(name: Literal["schemas", "queries"]) -> Path:
    """The directory holding the ``name`` contract files (installed copy first, else checkout)."""
    # ledger.schemas / ledger.queries hold data only (no __init__.py): namespace packages, whose
    # spec lists the directories they live in.
    try:
        spec = find_spec(f"ledger.{name}")
    except ModuleNotFoundError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location)
        if path.is_dir():
            return path
    return _CHECKOUT / name
