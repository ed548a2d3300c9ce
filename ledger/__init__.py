"""Decision Ledger: an event-sourced decision plane for AI agents."""

__all__ = ["__version__"]

__version__ = "2026.12.8"
