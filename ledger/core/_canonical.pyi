"""Types of the canonical JSON text writer in C (``_canonical.pyx``)."""

from typing import Any

class Unsupported(TypeError): ...

def text(record: Any, skip: str | tuple[str, ...] | None = None) -> str: ...
