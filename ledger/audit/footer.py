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

from ledger.audit.sizes import oversized
from ledger.core.limits import DEFAULT_LIMITS, Limits
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


_BATCH: Final = 1_024
"""Rows of a row group read at a time to hold to its footer."""
_BUFFER: Final = 1 << 20
"""Bytes of a file read at a time (pyarrow reads a column chunk whole without one)."""

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
    columns: tuple[str, ...] = ()
    """The columns whose statistics a query may trust wrongly (SQL filtering on them can skip
    rows): the one a lie is about; for a file of ``writer``, those it wrote statistics for."""
    writer: str | None = None
    """The program that wrote the file, when it is not the exporter's writer (its statistics,
    then, are not checked: a reader might not read them as DuckDB does)."""

    def __str__(self) -> str:
        return self.what

    def finding(self) -> str:
        """What the file is, as the verifiers report it (after its path), naming the columns a
        query could be misled by."""
        if not self.readable:
            return f"is not a file the exporter writes ({self})"
        named = ", ".join(self.columns)
        if self.writer is not None:
            filtering = (
                f"SQL filtering on {named} (the columns it wrote statistics for) can skip rows"
                if named
                else "SQL filtering can skip rows"
            )
            return (
                f"was rewritten by another program ({self.writer}), not the exporter: its footer "
                f"is not checked, and {filtering}"
            )
        on = f"on {named}" if named else "on a column"
        return f"has a footer its data does not bear out ({self}): SQL filtering {on} can skip rows"


def footer_lie(
    path: str, con: Any = None, *, limits: Limits = DEFAULT_LIMITS
) -> FooterProblem | None:
    """What the Parquet file at ``path``'s footer claims that its data does not bear out, or
    ``None`` (``con``: a DuckDB connection to read the footer with, else one of its own).

    DuckDB skips a row group whose min/max statistics exclude a filter's value (and may answer
    an aggregate from them), so a footer whose statistics lie hides rows from SQL while every
    row and record stays genuine. Each row group is read and held to its footer: its row
    count, and per column its null count and min ≤ every value ≤ max (compared as Parquet
    stores them: bytes, integers, floats without NaN). The footer is read twice, by pyarrow
    (whose values are compared) and by DuckDB (what queries trust), and must say the same to
    both: no statistic with one side only, none pyarrow does not read, no two minimums or
    maximums that differ. The data is read twice too, and DuckDB's must bear the footer out
    as pyarrow's does; each column chunk's pages must lie where the exporter writes them (the
    dictionary page before the data pages, chunks in order, none overlapping), or the two
    readers could read different bytes. And the file must be the exporter's writer's, with the
    column types it writes, and carry nothing it never writes (bloom filters, page indexes,
    column chunks stored elsewhere), which readers trust without reading the data. (Rows deleted or added
    are the chains' and the offsets' to find: a footer true to its data says nothing of that.)
    First of all, before any page is decompressed, what its footer and page headers declare
    is held to what the exporter writes from records of ``limits.record_bytes``
    (:func:`ledger.audit.sizes.oversized`): a file declaring more is not the exporter's, and
    is not read.
    """
    import pyarrow.parquet as pq  # here: importing pyarrow costs every `ledger` command time

    # Read as a stream, a buffer at a time (not each column chunk whole), batch by batch.
    parquet = pq.ParquetFile(path, buffer_size=_BUFFER, pre_buffer=False)
    meta = parquet.metadata
    too_large = oversized(path, meta, limits=limits)
    if too_large is not None:
        return FooterProblem(too_large, readable=False)
    if not str(meta.created_by or "").startswith(_WRITER):
        writer = clipped(repr(meta.created_by), 60)
        return FooterProblem(
            f"written by {writer}, not the exporter's writer",
            columns=_with_statistics(path, con, parquet.schema_arrow.names),
            writer=writer,
        )
    unexpected = next((f for f in parquet.schema_arrow if not _written(f.type)), None)
    if unexpected is not None:
        return FooterProblem(
            f"column {unexpected.name} is {unexpected.type}, a type the exporter never writes",
            readable=False,
        )
    duck = _as_duckdb_reads(path, con)
    counted = 0
    end = 4  # where the first column chunk may start: after the leading magic bytes
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        held, data = _group_data(parquet, g)
        counted += held
        if held != group.num_rows:
            return FooterProblem(
                f"row group {g} says {group.num_rows} row(s) and holds {held}",
                readable=False,
            )
        for c in range(group.num_columns):
            chunk = group.column(c)
            name = str(chunk.path_in_schema)
            where = f"row group {g}, column {name}"
            for attribute, what in _NOT_WRITTEN:
                if getattr(chunk, attribute):
                    return FooterProblem(f"{where} has {what}", columns=(name,))
            misplaced, end = _layout(chunk, end)
            if misplaced is not None:
                return FooterProblem(f"{where}{misplaced}", columns=(name,))
            stats = chunk.statistics
            seen = duck.get((g, c))
            if seen is None:
                return FooterProblem(f"{where} is not in the footer DuckDB reads", columns=(name,))
            disagree = _disagreement(stats, seen, _text_or_bytes(parquet.schema_arrow[c].type))
            if disagree is not None:
                return FooterProblem(f"{where}: {disagree}", columns=(name,))
            if stats is None:
                continue
            nulls, low, high = data[c]
            if not stats.has_min_max:
                low = high = None
            unborne = _unborne(stats, nulls, low, high, "the data")
            if unborne is not None:
                return FooterProblem(f"{where}: {unborne}", columns=(name,))
    if counted != meta.num_rows:
        return FooterProblem(
            f"its row groups hold {counted} row(s), its footer says {meta.num_rows}",
            readable=False,
        )
    return _as_duckdb_reads_data(path, con, parquet, duck)


def _group_data(parquet: Any, g: int) -> tuple[int, list[tuple[int, Any, Any]]]:
    """Row group ``g``'s rows, and per column its nulls and least and greatest value
    (:func:`_min_max`), read :data:`_BATCH` rows at a time: a row group may hold 16,384 rows
    of up to a megabyte's record each, more than a reader should hold at once."""
    import pyarrow as pa

    rows = 0
    found: list[tuple[int, Any, Any]] = []
    for batch in parquet.iter_batches(batch_size=_BATCH, row_groups=[g], use_threads=False):
        rows += batch.num_rows
        for c in range(batch.num_columns):
            column = batch.column(c)
            low, high = _min_max(pa.chunked_array([column]))
            if c == len(found):
                found.append((0, None, None))
            nulls, least, greatest = found[c]
            found[c] = (
                nulls + column.null_count,
                low if least is None or (low is not None and low < least) else least,
                high if greatest is None or (high is not None and high > greatest) else greatest,
            )
    columns = len(parquet.schema_arrow)
    found.extend((0, None, None) for _ in range(columns - len(found)))
    return rows, found


def _as_duckdb_reads_data(
    path: str, con: Any, parquet: Any, duck: dict[tuple[int, int], tuple[Any, ...]] | None = None
) -> FooterProblem | None:
    """The statistics held to the data as DuckDB reads it, the reader queries trust: each row
    group's row count, and per column its null count and min ≤ every value ≤ max. Two readers
    may start a column chunk at different bytes (a red team pointed pyarrow at a forged chunk
    and DuckDB at the genuine one); whatever DuckDB reads must bear its footer out too."""
    from ledger.audit.sql import session

    meta, fields = parquet.metadata, list(parquet.schema_arrow)
    if meta.num_rows == 0:
        return None  # no data to read: its footer's row counts were held to it above
    ends, total = [], 0
    for g in range(meta.num_row_groups):
        total += meta.row_group(g).num_rows
        ends.append(total)
    if not ends:
        return None
    group = (
        "CASE "
        + " ".join(f"WHEN file_row_number < {end} THEN {g}" for g, end in enumerate(ends))
        + f" ELSE {len(ends)} END"
    )
    columns = ", ".join(
        f"count({q}), {_duck_min_max(q, f.type)}" for q, f in ((_quoted(f.name), f) for f in fields)
    )
    own = con is None
    con = session() if own else con
    try:
        rows = con.execute(
            f"SELECT __group, count(*), {columns} FROM (SELECT *, {group} AS __group FROM "
            "read_parquet(?, file_row_number = true, hive_partitioning = false)) "
            "GROUP BY __group ORDER BY __group",
            [path],
        ).fetchall()
    finally:
        if own:
            con.close()
            con = None  # closed: what reads more makes its own
    read = {int(r[0]): r[1:] for r in rows}
    for g in range(meta.num_row_groups):
        says = meta.row_group(g).num_rows
        found = read.get(g)
        if found is None and says == 0:
            continue  # an empty row group: no row to read
        if found is None or found[0] != says:
            held = found[0] if found is not None else 0
            return FooterProblem(f"row group {g} says {says} row(s), DuckDB reads {held}")
        for c, name in enumerate(f.name for f in fields):
            stats = meta.row_group(g).column(c).statistics
            count, low, high = found[1 + 3 * c : 4 + 3 * c]
            where = f"row group {g}, column {name}"
            # Before anything pyarrow reads: a side DuckDB trusts when pyarrow reads none.
            one_sided = _one_sided(duck.get((g, c)) if duck else None, stats, fields[c].type, con)
            if one_sided is not None:
                side, bound = one_sided
                within = high is None or (bound <= low if side == "minimum" else high <= bound)
                if not within:
                    return FooterProblem(
                        f"{where}: its statistics' {side} alone, {clipped(repr(bound), 40)}, "
                        f"the data as DuckDB reads it {clipped(repr(low), 40)} to "
                        f"{clipped(repr(high), 40)}",
                        columns=(name,),
                    )
            if stats is None:
                continue
            unborne = _unborne(stats, says - count, low, high, "the data as DuckDB reads it")
            if unborne is not None:
                return FooterProblem(f"{where}: {unborne}", columns=(name,))
    if set(read) - set(range(meta.num_row_groups)):
        return FooterProblem(f"DuckDB reads rows beyond the {meta.num_rows} its footer says")
    return None


def _unborne(stats: Any, nulls: int, low: Any, high: Any, data: str) -> str | None:
    """Where a column chunk's statistics (``stats``) say what its values do not: ``nulls``
    of them null, the least ``low`` and the greatest ``high`` (``None``: nothing to compare),
    as ``data`` (which reader) read them."""
    if stats.null_count is not None and stats.null_count != nulls:
        return f"its statistics count {stats.null_count} null(s), {data} {nulls}"
    if not stats.has_min_max or low is None or high is None:
        return None
    if stats.min_raw <= low and high <= stats.max_raw:
        return None
    return (
        f"its statistics say {clipped(repr(stats.min_raw), 40)} to "
        f"{clipped(repr(stats.max_raw), 40)}, {data} holds "
        f"{clipped(repr(low), 40)} to {clipped(repr(high), 40)}"
    )


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duck_min_max(column: str, kind: Any) -> str:
    """DuckDB's least and greatest value of ``column`` as Parquet's statistics store them, as
    :func:`_min_max` computes pyarrow's: text and JSON as UTF-8 bytes, times as integers of
    their unit, NaN left out."""
    import pyarrow as pa

    if isinstance(kind, pa.BaseExtensionType):
        kind = kind.storage_type
    value = column
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        value = f"encode(CAST({column} AS VARCHAR))"
    elif pa.types.is_timestamp(kind):
        value = {"s": "epoch", "ms": "epoch_ms", "us": "epoch_us", "ns": "epoch_ns"}[kind.unit]
        value = f"{value}({column})"
    known = f" FILTER (WHERE NOT isnan({column}))" if pa.types.is_floating(kind) else ""
    return f"min({value}){known}, max({value}){known}"


def _layout(chunk: Any, end: int) -> tuple[str | None, int]:
    """What is wrong with where a column chunk's pages are (``end``: where the chunk before it
    ended), and where this one ends. Readers start a chunk at different bytes: pyarrow at its
    dictionary page only when that comes before the data pages, DuckDB at any dictionary page
    offset (a red team pointed each at a chunk of its own). The exporter writes each chunk's
    dictionary page, then its data pages, chunk after chunk."""
    if chunk.num_values == 0:
        return None, end  # an empty chunk: no page to read
    start = chunk.data_page_offset
    if chunk.has_dictionary_page:
        if not 4 <= chunk.dictionary_page_offset < chunk.data_page_offset:
            return (
                f": its dictionary page ({chunk.dictionary_page_offset}) is not before its "
                f"data pages ({chunk.data_page_offset})",
                end,
            )
        start = chunk.dictionary_page_offset
    if start < end:
        return " overlaps the column chunk before it", end
    return None, start + chunk.total_compressed_size


def _with_statistics(path: str, con: Any, names: list[str]) -> tuple[str, ...]:
    """The columns of the file at ``path`` that have min/max statistics as DuckDB reads them
    (those a filter may skip row groups by), in the file's order; none if it cannot say."""
    try:
        seen = _as_duckdb_reads(path, con)
    except Exception:  # only to name columns: the file is reported anyway
        return ()
    having = {c for (_, c), sides in seen.items() if sides[0] is not None or sides[1] is not None}
    return tuple(name for c, name in enumerate(names) if c in having)


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


def _disagreement(stats: Any, seen: tuple[Any, ...], long_values: bool = False) -> str | None:
    """Where pyarrow's reading of a chunk's statistics (``stats``) and DuckDB's (``seen``)
    part: the statistics a query trusts must be the ones held to the data. One side only is
    what the exporter's writer leaves of a text or bytes column whose least or greatest value
    is over its 4 KiB statistics limit (``long_values``: such a column; the side is then held
    to the data as DuckDB reads it, :func:`_one_sided`); anywhere else it is a lie."""
    low, high, old_min, new_min, old_max, new_max, nulls, bloom, column_index, offsets = seen
    if any(v is not None for v in (bloom, column_index, offsets)):
        return "a bloom filter or page index (the exporter writes neither)"
    if (low is None) != (high is None):
        if not long_values or (stats is not None and stats.has_min_max):
            return "statistics with one side only (a minimum without a maximum, or the reverse)"
        low = high = None  # held to the data by _one_sided
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


def _text_or_bytes(kind: Any) -> bool:
    import pyarrow as pa

    if isinstance(kind, pa.BaseExtensionType):
        kind = kind.storage_type
    return bool(pa.types.is_string(kind) or pa.types.is_binary(kind))


def _one_sided(
    seen: tuple[Any, ...] | None, stats: Any, kind: Any, con: Any
) -> tuple[str, bytes] | None:
    """``("minimum" | "maximum", its bytes)`` when DuckDB reads one side only of a text or
    bytes chunk's statistics (and pyarrow none): the side DuckDB trusts, as the bytes the data
    is compared in. ``None`` for any other chunk."""
    if seen is None or (stats is not None and stats.has_min_max) or not _text_or_bytes(kind):
        return None
    low, high = seen[0], seen[1]
    if (low is None) == (high is None):
        return None
    side, text = ("minimum", low) if low is not None else ("maximum", high)
    import pyarrow as pa

    storage = kind.storage_type if isinstance(kind, pa.BaseExtensionType) else kind
    if pa.types.is_binary(storage):  # DuckDB shows bytes escaped: let it read them back
        from ledger.audit.sql import session

        own = con is None
        con = session() if own else con
        try:
            value = bytes(con.execute("SELECT CAST(? AS BLOB)", [str(text)]).fetchone()[0])
        finally:
            if own:
                con.close()
        return side, value
    return side, str(text).encode("utf-8")


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
