"""Is a Parquet file's footer true to its data? (:func:`footer_lie`)

Readers trust a footer: DuckDB skips a row group whose min/max statistics exclude a filter's
value, and may answer an aggregate from them. A footer rewritten to lie hides rows from SQL
while every row, and every record's bytes, stay genuine, so the chains and signatures that
prove the rows cannot see it. ``ledger audit verify`` and ``ledger actor verify --from`` hold
every listed file's footer to its data with this check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ledger.core.lifecycle import clipped

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["footer_lie"]

_NOT_WRITTEN: Final = (
    ("bloom_filter_offset", "a bloom filter"),
    ("has_column_index", "a page index"),
    ("has_offset_index", "a page index"),
    ("file_path", "a column chunk in another file"),
)
"""What the exporter never writes and a reader would trust without reading the data."""


def footer_lie(file: Any) -> str | None:
    """What the Parquet ``file``'s footer claims that its data does not bear out, or ``None``.

    DuckDB skips a row group whose min/max statistics exclude a filter's value (and may answer
    an aggregate from them), so a footer whose statistics lie hides rows from SQL while every
    row and record stays genuine. Each row group is read and held to its footer: its row
    count, and per column its null count and min ≤ every value ≤ max (compared as Parquet
    stores them: bytes, integers, floats without NaN); and the file must carry nothing the
    exporter never writes (bloom filters, page indexes, column chunks stored elsewhere), which
    readers trust without reading the data. (Rows deleted or added are the chains' and the
    offsets' to find: a file's footer that agrees with its data says nothing about that.)
    """
    import pyarrow.parquet as pq  # here: importing pyarrow costs every `ledger` command time

    parquet = pq.ParquetFile(file)
    meta = parquet.metadata
    counted = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        table = parquet.read_row_group(g)
        counted += table.num_rows
        if table.num_rows != group.num_rows:
            return f"row group {g} says {group.num_rows} row(s) and holds {table.num_rows}"
        for c in range(group.num_columns):
            chunk = group.column(c)
            where = f"row group {g}, column {chunk.path_in_schema}"
            for attribute, what in _NOT_WRITTEN:
                if getattr(chunk, attribute):
                    return f"{where} has {what}"
            stats = chunk.statistics
            if stats is None:
                continue
            column = table.column(c)
            if stats.null_count is not None and stats.null_count != column.null_count:
                return (
                    f"{where}: its statistics count {stats.null_count} null(s), "
                    f"the data {column.null_count}"
                )
            if not stats.has_min_max:
                continue
            low, high = _min_max(column)
            if low is None or high is None:
                continue
            if not stats.min_raw <= low or not high <= stats.max_raw:
                return (
                    f"{where}: its statistics say {clipped(repr(stats.min_raw), 40)} to "
                    f"{clipped(repr(stats.max_raw), 40)}, the data holds "
                    f"{clipped(repr(low), 40)} to {clipped(repr(high), 40)}"
                )
    if counted != meta.num_rows:
        return f"its row groups hold {counted} row(s), its footer says {meta.num_rows}"
    return None


def _min_max(column: pa.ChunkedArray) -> tuple[Any, Any]:
    """The least and greatest value of ``column`` as Parquet's statistics store them (text and
    JSON as bytes, times as the integers of their unit), NaN and nulls left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks = [c.storage if isinstance(c, pa.ExtensionArray) else c for c in column.chunks]
    kind = chunks[0].type if chunks else column.type
    values = pa.chunked_array(chunks, type=kind)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = values.cast(pa.binary())
    elif pa.types.is_timestamp(kind):
        values = values.cast(pa.int64())
    found = pc.min_max(values)
    return found["min"].as_py(), found["max"].as_py()
