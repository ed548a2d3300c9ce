"""What a Parquet file declares, held to what the exporter writes before anything is
decompressed (:mod:`ledger.audit.sizes`), with small bounds injected."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ledger.audit.footer import footer_lie
from ledger.audit.sizes import oversized, value_bytes
from ledger.core.limits import Limits

LIMITS = Limits(record_bytes=1_250)  # a value of 20,000 bytes at most


def _varint(n: int) -> bytes:
    out = bytearray()
    n = (n << 1) ^ (n >> 63)  # zigzag, as Thrift's compact protocol writes an integer
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _write(path: Path, values: list[str], **kw: object) -> Path:
    pq.write_table(pa.table({"resource": values}), path, compression="zstd", **kw)  # type: ignore[arg-type]
    return path


def test_a_value_is_bounded_by_eight_records() -> None:
    assert value_bytes() == 16_000_000
    assert value_bytes(Limits(record_bytes=1_000)) == 16_000


def test_the_exporters_own_sizes_pass(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.parquet", [f"r{i}" * 100 for i in range(1_000)])
    assert oversized(str(path), pq.ParquetFile(path).metadata, limits=LIMITS) is None


def test_a_row_declaring_more_than_a_row_holds_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.parquet", ["r" * 300_000])
    found = oversized(str(path), pq.ParquetFile(path).metadata, limits=LIMITS)
    assert found is not None
    assert re.fullmatch(
        r"row group 0 declares 300,0\d\d bytes for 1 row\(s\), more than 26,596 a row", found
    )


def test_a_value_among_small_ones_is_found_by_its_page(tmp_path: Path) -> None:
    # A row group of many small rows declares little per row: the page of the large value
    # (here each value a page of its own) says what it holds.
    values = ["r"] * 30 + ["r" * 300_000]
    path = _write(tmp_path / "f.parquet", values, data_page_size=1, write_batch_size=1)
    meta = pq.ParquetFile(path).metadata
    assert meta.row_group(0).total_byte_size < 31 * 20_000  # the footer's sizes pass
    found = oversized(str(path), meta, limits=LIMITS)
    assert found is not None
    assert re.fullmatch(
        r"row group 0, column resource: a page declares 300,0\d\d bytes for [12] value\(s\), "
        r"more than 20,000 a value",
        found,
    )


def test_a_footer_lying_about_sizes_is_caught_by_the_page_headers(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.parquet", ["r" * 300_000])
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    (size,) = struct.unpack("<I", bytes(data[-8:-4]))
    start = len(data) - 8 - size
    for said in {
        meta.row_group(0).total_byte_size,
        meta.row_group(0).column(0).total_uncompressed_size,
    }:
        true, lie = _varint(said), _varint(10_000)
        assert len(true) == len(lie) and data.find(true, start) > 0
        data[start:] = bytes(data[start:]).replace(true, lie)
    path.write_bytes(bytes(data))
    meta = pq.ParquetFile(path).metadata
    assert meta.row_group(0).total_byte_size == 10_000  # the footer lies
    found = oversized(str(path), meta, limits=LIMITS)
    assert found is not None and re.search(r"a page declares 300,0\d\d bytes for 1 value", found)


def test_columns_declaring_more_than_their_records_make_are_named(tmp_path: Path) -> None:
    # A value within what one value may be, in a row group of small rows each within what a
    # row may be: but a row's columns are made from its record, and these records are small.
    records = [b"r" * 10] * 30
    resources = ["r"] * 29 + ["r" * 200_000]
    path = tmp_path / "f.parquet"
    table = pa.table({"record": records, "resource": resources})
    pq.write_table(table, path, compression="zstd", use_dictionary=False)  # one page of 30
    found = oversized(str(path), pq.ParquetFile(path).metadata, limits=LIMITS)
    assert found is not None
    assert re.fullmatch(
        r"row group 0 declares 200,\d{3} bytes of columns for \d{3} bytes of its 30 record\(s\), "
        r"more than 16 times as many \(the most a row's columns take of its record\)",
        found,
    )


def test_a_page_header_declaring_less_than_it_holds_cannot_be_read(tmp_path: Path) -> None:
    # Readers decompress into a buffer of the declared size: a page holding more fails there.
    path = _write(tmp_path / "f.parquet", ["r" * 300_000])
    data = bytearray(path.read_bytes())
    true = next(_varint(n) for n in range(300_000, 300_010) if 0 < data.find(_varint(n)) < 40)
    lie = _varint(20_000)
    assert len(true) == len(lie) and 0 < data.find(true) < 100
    at = data.find(true)
    data[at : at + len(true)] = lie
    path.write_bytes(bytes(data))
    assert (
        oversized(str(path), pq.ParquetFile(path).metadata, limits=Limits(record_bytes=1_000_000))
        is None
    )
    with pytest.raises(OSError, match="ZSTD decompression failed"):
        pq.read_table(path)


def test_page_headers_past_their_chunk_are_not_a_whole_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.parquet", ["r" * 1_000])
    data = bytearray(path.read_bytes())
    data[4:12] = b"\xff" * 8  # the first page header: an integer that never ends
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="page header"):
        oversized(str(path), pq.ParquetFile(path).metadata, limits=LIMITS)


def test_the_footer_check_refuses_an_oversized_file_before_reading_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.parquet", ["r" * 300_000])
    problem = footer_lie(str(path), limits=LIMITS)
    assert problem is not None and not problem.readable
    assert problem.finding().startswith(
        "is not a file the exporter writes (row group 0 declares 300,0"
    )
