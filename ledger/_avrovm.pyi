"""Types of the Avro reading and writing in C (``_avrovm.pyx``)."""

from collections.abc import Iterable
from typing import Any

KINDS: dict[str, int]
INSTANTS: tuple[int, int]

class Malformed(ValueError): ...
class Truncated(EOFError): ...
class Unsupported(TypeError): ...

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

class Reader:
    def __init__(self, node: Node) -> None: ...
    def read(self, data: bytes, pos: int) -> tuple[Any, int]: ...

class Writer:
    def __init__(self, node: Node, header: bytes) -> None: ...
    def write(self, event: Any) -> bytes: ...

class Row:
    def __init__(self, name: str, fields: Iterable[Node], columns: Iterable[int]) -> None: ...
    def decode(self, data: bytes, pos: int, head: tuple[Any, ...]) -> tuple[Any, ...]: ...
