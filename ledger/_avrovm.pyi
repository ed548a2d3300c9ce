"""Types of the export's row decoder in C (``_avrovm.pyx``)."""

from collections.abc import Callable, Iterable
from typing import Any

KINDS: dict[str, int]

class Malformed(ValueError): ...

class Node:
    kind: int
    def __init__(
        self,
        kind: int,
        kids: Iterable[Node] = ...,
        keys: Iterable[str] = ...,
        arg: Any = ...,
        empty: str | None = ...,
    ) -> None: ...

class Row:
    def __init__(self, name: str, fields: Iterable[Node], columns: Iterable[int]) -> None: ...
    decode: Callable[[bytes, int, tuple[Any, ...]], tuple[Any, ...]]
