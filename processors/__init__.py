"""The Faust stream processors: ``command_processor`` (the single writer of governance events)
and ``evaluator`` (answers evaluation requests). Each module builds its app with ``create_app``
and runs as ``python -m processors.<name>``; ``common`` holds what they share, ``dead_letters``
the one dead-letter envelope and code table, ``inflight`` the markers that keep a poison record
from crash-looping a processor.

Nothing is imported here: a worker loads only its own module (no global Faust app).
"""

__all__: list[str] = []
