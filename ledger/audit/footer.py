"""Is a Parquet file's footer true to its data? (:func:`footer_lie`)

Readers trust a footer: DuckDB skips a row group whose min/max statistics exclude a filter's
value, and may answer an aggregate from them. A footer rewritten to lie hides rows from SQL
while every row, and every record's bytes, stay genuine, so the chains and signatures that
prove the rows cannot see it. ``ledger audit verify`` and ``ledger actor verify --from`` hold
every listed file's footer to its data with this check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ledger.core.text import clipped

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FooterProblem", "footer_lie"]

_NOT_WRITTEN: Final = (
    ("bloom_filter_offset", "a bloom filter"),
    ("has_column_index", "a page index"),
    ("has_offset_index", "a page index"),
    ("file_path", "a column chunk in another file"),
)
"""What the exporter never writes and a reader would trust without reading the data."""


_WRITER: Final = "parquet-cpp-arrow version "
"""How the exporter's writer names itself in a file's ``created_by``. pyarrow withholds the
text statistics of files some older writers made, which DuckDB still trusts: a file naming
another writer could hide its statistics from this check."""

_DUCKDB_SIDES: Final = (
    "SELECT row_group_id, column_id, coalesce(stats_min_value, stats_min), "
    "coalesce(stats_max_value, stats_max), stats_min, stats_min_value, stats_max, "
    "stats_max_value, stats_null_count, bloom_filter_offset, column_index_offset, "
    "offset_index_offset FROM parquet_metadata(?)"
)


@dataclass(frozen=True, slots=True)
class FooterProblem:
    """What is wrong with a file's footer; ``readable``: its rows can still be read and checked
    as the export's (only what the footer says of them lies), else the file is not one the
    exporter wrote (a column of another type) and its rows cannot be read with the others."""

    what: str
    readable: bool = True

    def __str__(self) -> str:
        return self.what


def footer_lie(path: str, con: Any = None) -> FooterProblem | None:
    """What the Parquet file at ``path``'s footer claims that its data does not bear out, or
    ``None`` (``con``: a DuckDB connection to read the footer with, else one of its own).

    DuckDB skips a row group whose min/max statistics exclude a filter's value (and may answer
    an aggregate from them), so a footer whose statistics lie hides rows from SQL while every
    row and record stays genuine. Each row group is read and held to its footer: its row
    count, and per column its null count and min ≤ every value ≤ max (compared as Parquet
    stores them: bytes, integers, floats without NaN). The footer is read twice, by pyarrow
    (whose values are compared) and by DuckDB (what queries trust), and must say the same to
    both: no statistic with one side only, none pyarrow does not read, no two minimums or
    maximums that differ. And the file must be the exporter's writer's, with the column types
    it writes, and carry nothing it never writes (bloom filters, page indexes, column chunks
    stored elsewhere), which readers trust without reading the data. (Rows deleted or added
    are the chains' and the offsets' to find: a footer true to its data says nothing of that.)
    """
    import pyarrow.parquet as pq  # here: importing pyarrow costs every `ledger` command time

    parquet = pq.ParquetFile(path)
    meta = parquet.metadata
    if not str(meta.created_by or "").startswith(_WRITER):
        return FooterProblem(
            f"written by {clipped(repr(meta.created_by), 60)}, not the exporter's writer"
        )
    unexpected = next((f for f in parquet.schema_arrow if not _written(f.type)), None)
    if unexpected is not None:
        return FooterProblem(
            f"column {unexpected.name} is {unexpected.type}, a type the exporter never writes",
            readable=False,
        )
    duck = _as_duckdb_reads(path, con)
    counted = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        table = parquet.read_row_group(g)
        counted += table.num_rows
        if table.num_rows != group.num_rows:
            return FooterProblem(
                f"row group {g} says {group.num_rows} row(s) and holds {table.num_rows}",
                readable=False,
            )
        for c in range(group.num_columns):
            chunk = group.column(c)
            where = f"row group {g}, column {chunk.path_in_schema}"
            for attribute, what in _NOT_WRITTEN:
                if getattr(chunk, attribute):
                    return FooterProblem(f"{where} has {what}")
            stats = chunk.statistics
            seen = duck.get((g, c))
            if seen is None:
                return FooterProblem(f"{where} is not in the footer DuckDB reads")
            disagree = _disagreement(stats, seen)
            if disagree is not None:
                return FooterProblem(f"{where}: {disagree}")
            if stats is None:
                continue
            column = table.column(c)
            if stats.null_count is not None and stats.null_count != column.null_count:
                return FooterProblem(
                    f"{where}: its statistics count {stats.null_count} null(s), "
                    f"the data {column.null_count}"
                )
            if not stats.has_min_max:
                continue
            low, high = _min_max(column)
            if low is None or high is None:
                continue
            if not stats.min_raw <= low or not high <= stats.max_raw:
                return FooterProblem(
                    f"{where}: its statistics say {clipped(repr(stats.min_raw), 40)} to "
                    f"{clipped(repr(stats.max_raw), 40)}, the data holds "
                    f"{clipped(repr(low), 40)} to {clipped(repr(high), 40)}"
                )
    if counted != meta.num_rows:
        return FooterProblem(
            f"its row groups hold {counted} row(s), its footer says {meta.num_rows}",
            readable=False,
        )
    return None


def _as_duckdb_reads(path: str, con: Any) -> dict[tuple[int, int], tuple[Any, ...]]:
    """Each column chunk's statistics as DuckDB reads them, by (row group, column)."""
    from ledger.audit.sql import session

    own = con is None
    con = session() if own else con
    try:
        rows = con.execute(_DUCKDB_SIDES, [path]).fetchall()
    finally:
        if own:
            con.close()
    return {(int(r[0]), int(r[1])): r[2:] for r in rows}


def _disagreement(stats: Any, seen: tuple[Any, ...]) -> str | None:
    """Where pyarrow's reading of a chunk's statistics (``stats``) and DuckDB's (``seen``)
    part: the statistics a query trusts must be the ones held to the data."""
    low, high, old_min, new_min, old_max, new_max, nulls, bloom, column_index, offsets = seen
    if any(v is not None for v in (bloom, column_index, offsets)):
        return "a bloom filter or page index (the exporter writes neither)"
    if (low is None) != (high is None):
        return "statistics with one side only (a minimum without a maximum, or the reverse)"
    for first, second in ((old_min, new_min), (old_max, new_max)):
        if first is not None and second is not None and first != second:
            return "two different minimums or maximums (the old and the new fields)"
    readable = stats is not None and stats.has_min_max
    if low is not None and not readable:
        return "statistics DuckDB reads and pyarrow does not, so they cannot be checked"
    pyarrow_nulls = stats.null_count if stats is not None else None
    if (nulls is None) != (pyarrow_nulls is None) or (
        nulls is not None and int(nulls) != pyarrow_nulls
    ):
        return "a null count DuckDB and pyarrow read differently"
    return None


def _written(kind: Any) -> bool:
    """Is ``kind`` an Arrow type the exporter writes (text, bytes, 32/64-bit ints, bools,
    doubles, UTC times, JSON)?"""
    import pyarrow as pa

    if isinstance(kind, pa.BaseExtensionType):
        kind = kind.storage_type
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_int32(kind)
        or pa.types.is_int64(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_float64(kind)
        or pa.types.is_timestamp(kind)
    )


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
