"""Does a Parquet file declare more data than the exporter ever writes? (:func:`oversized`)

A compressed file is small on disk and large in memory: a red team's 17 KB file (zstd) held a
100 MB ``resource`` in one row, and ``ledger audit verify`` took 1.8 GB to find the row altered.
Every size a reader allocates for is declared before it is read: each column chunk's
``total_uncompressed_size`` in the footer, each page's ``uncompressed_page_size`` in its header
(a reader decompresses into a buffer of that size, and refuses a page whose data does not fill
it exactly). So those are held, before anything is decompressed, to what a file the exporter
writes can hold: a row's columns are made from its record (at most ``record_bytes``), at most
:data:`EXPANSION` times its bytes, so no value is over :func:`value_bytes`, and a row group's
columns declare at most that many times its records' bytes (as its ``record`` pages declare
them: a page is held to what it declares when it is decompressed). A file that declares more
is not one the exporter wrote.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Final

from ledger.core.limits import DEFAULT_LIMITS, Limits

__all__ = ["EXPANSION", "value_bytes", "oversized"]

EXPANSION: Final = 16
"""How many times its record's bytes a row's columns (all but ``record`` and ``key``) may
declare. A field's column takes at most about eight times its bytes in the record: an integer
or a time of one byte of Avro is eight bytes of Parquet; a boolean, a null or a control
character of one byte is ``false``, ``null`` or ``\\u0001`` in a JSON column; a time of a few
bytes in a map of facts is its ISO text. Sixteen leaves room for what no event holds yet."""

_ROW_SLACK: Final = 4 * 1024
"""Bytes a row may declare besides its record's columns: its topic, coordinates and event type,
and Parquet's framing (lengths, levels) of its fifty or so columns."""

_PAGE_SLACK: Final = 64 * 1024
"""Bytes a page may declare beyond its values (levels, lengths) whatever their number."""

_DEPTH: Final = 16
"""Deepest nesting of a page header's Thrift structures read (the format's is 3)."""

_OWN: Final = ("record", "key")
"""The columns a row holds as it was read from Kafka (each at most ``record_bytes``), not
made from its record."""


def value_bytes(limits: Limits = DEFAULT_LIMITS) -> int:
    """The most one value of a file the exporter writes can take, uncompressed: a field's
    column made from a record of ``record_bytes``."""
    return EXPANSION * limits.record_bytes


def oversized(path: str, meta: Any, *, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """What the Parquet file at ``path`` (``meta``: its footer, as pyarrow reads it) declares
    beyond what the exporter writes from records of ``limits.record_bytes``, or ``None``.
    First the footer, per row group and column chunk by their rows; then the page headers
    (what a reader decompresses into, and holds each page's data to), read without
    decompressing a page: each page by its values, and each row group's columns by its
    records' bytes (a row's columns are made from its record). :class:`ValueError` for page
    headers that cannot be read (the file is not a whole Parquet file)."""
    most = value_bytes(limits)
    row = most + 2 * limits.record_bytes + _ROW_SLACK  # its columns, its record and its key
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        rows = max(group.num_rows, 1)
        if group.total_byte_size > rows * row:
            return (
                f"row group {g} declares {group.total_byte_size:,} bytes for {group.num_rows} "
                f"row(s), more than {row:,} a row"
            )
        for c in range(group.num_columns):
            chunk = group.column(c)
            declared = chunk.total_uncompressed_size
            if declared > rows * most + _PAGE_SLACK:
                return (
                    f"row group {g}, column {chunk.path_in_schema} declares {declared:,} bytes "
                    f"for {group.num_rows} row(s), more than {most:,} a value"
                )
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            view = memoryview(data)
            try:
                return _pages_oversized(view, meta, most)
            finally:
                view.release()


def _pages_oversized(data: memoryview, meta: Any, most: int) -> str | None:
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        own = made = 0
        records: int | None = None
        for c in range(group.num_columns):
            chunk = group.column(c)
            name = str(chunk.path_in_schema)
            declared = 0
            if chunk.num_values == 0:
                continue
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
                start = chunk.dictionary_page_offset
            end = start + chunk.total_compressed_size
            if not 0 <= start <= end <= len(data):
                raise ValueError(f"row group {g}, column {c}: its pages lie outside the file")
            at = start
            while at < end:
                uncompressed, compressed, values, length = _page_header(data, at, end)
                if uncompressed > max(values, 1) * most + _PAGE_SLACK:
                    return (
                        f"row group {g}, column {name}: a page declares {uncompressed:,} bytes "
                        f"for {values} value(s), more than {most:,} a value"
                    )
                declared += uncompressed
                at += length + compressed
            if name in _OWN:
                own += declared
                if name == "record":
                    records = declared
            else:
                made += declared
        if records is None:
            continue  # not an export's row group: its columns are held to its rows above
        if made > EXPANSION * records + group.num_rows * _ROW_SLACK:
            return (
                f"row group {g} declares {made:,} bytes of columns for {records:,} bytes of "
                f"its {group.num_rows} record(s), more than {EXPANSION} times as many (the "
                "most a row's columns take of its record)"
            )
    return None


class _Reader:
    """Thrift's compact protocol over ``data[at:end]``, enough to read a page header."""

    def __init__(self, data: memoryview, at: int, end: int) -> None:
        self.data, self.at, self.end = data, at, end

    def byte(self) -> int:
        if self.at >= self.end:
            raise ValueError("a page header runs past its column chunk")
        value = self.data[self.at]
        self.at += 1
        return int(value)

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("a page header holds an integer of too many bytes")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, kind: int, depth: int) -> None:
        if depth > _DEPTH:
            raise ValueError("a page header nested too deeply")
        if kind in (1, 2):  # true, false: in the field header
            return
        if kind == 3:
            self.byte()
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:
            self.advance(8)
        elif kind == 8:
            self.advance(self.varint())
        elif kind in (9, 10):
            head = self.byte()
            count = head >> 4 if head >> 4 != 15 else self.varint()
            element = head & 0x0F
            for _ in range(count):
                if element in (1, 2):
                    self.byte()  # a boolean in a list is a byte of its own
                else:
                    self.skip(element, depth + 1)
        elif kind == 11:
            count = self.varint()
            if count:
                types = self.byte()
                for _ in range(count):
                    self.skip(types >> 4, depth + 1)
                    self.skip(types & 0x0F, depth + 1)
        elif kind == 12:
            self.struct(depth + 1, {})
        else:
            raise ValueError(f"a page header holds a field of unknown type {kind}")

    def advance(self, n: int) -> None:
        if n < 0 or self.at + n > self.end:
            raise ValueError("a page header runs past its column chunk")
        self.at += n

    def struct(self, depth: int, wanted: dict[int, Any]) -> dict[int, Any]:
        """The fields of a struct whose ids are in ``wanted`` (an integer: read it; a dict:
        read that struct's fields), the rest skipped."""
        found: dict[int, Any] = {}
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return found
            kind, delta = head & 0x0F, head >> 4
            field = last + delta if delta else self.zigzag()
            last = field
            want = wanted.get(field)
            if want is int and kind == 5:
                found[field] = self.zigzag()
            elif isinstance(want, dict) and kind == 12:
                if depth > _DEPTH:
                    raise ValueError("a page header nested too deeply")
                found[field] = self.struct(depth + 1, want)
            else:
                self.skip(kind, depth)


_VALUES: Final = {1: int}
_HEADER: Final = {2: int, 3: int, 5: _VALUES, 7: _VALUES, 8: _VALUES}
"""PageHeader: uncompressed_page_size (2), compressed_page_size (3), and num_values (1) of its
data page (5), dictionary page (7) or data page v2 (8) header."""


def _page_header(data: memoryview, at: int, end: int) -> tuple[int, int, int, int]:
    """``(uncompressed size, compressed size, values, header length)`` of the page at ``at``."""
    reader = _Reader(data, at, end)
    fields = reader.struct(0, _HEADER)
    uncompressed, compressed = fields.get(2), fields.get(3)
    if not isinstance(uncompressed, int) or not isinstance(compressed, int):
        raise ValueError("a page header without its sizes")
    if uncompressed < 0 or compressed < 0:
        raise ValueError("a page header declares a negative size")
    values = next((f[1] for k in (5, 7, 8) if isinstance(f := fields.get(k), dict) and 1 in f), 0)
    return uncompressed, compressed, max(int(values), 0), reader.at - at
